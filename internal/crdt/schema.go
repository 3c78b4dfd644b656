package crdt

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// The profile's schema. The position of a field in scalars and sets is its number in the
// binary encoding: append new fields, never reorder or remove one.

// valueKind is the type of a scalar's value.
type valueKind uint8

const (
	intValue   valueKind = iota // a JSON integer in [min, max]
	enumValue                   // a JSON string from enum
	zoneValue                   // a JSON string naming an IANA time zone
	hoursValue                  // {"start": "HH:MM", "end": "HH:MM"}
)

// A scalarField is a path holding a last-writer-wins register.
type scalarField struct {
	path     string
	kind     valueKind
	min, max int64    // intValue
	enum     []string // enumValue
}

var scalars = [...]scalarField{
	{path: "goals.steps", kind: intValue, max: 100_000},
	{path: "goals.sleep_minutes", kind: intValue, max: 1440},
	{path: "goals.active_minutes", kind: intValue, max: 1440},
	{path: "goals.water_ml", kind: intValue, max: 10_000},
	{path: "units", kind: enumValue, enum: []string{"metric", "imperial"}},
	{path: "time_zone", kind: zoneValue},
	{path: "quiet_hours", kind: hoursValue},
	{path: "active_hours", kind: hoursValue},
}

// A setField is a path holding an add-wins observed-remove set of strings.
type setField struct {
	path    string
	allowed []string // the only elements allowed; nil for free text
}

var sets = [...]setField{
	{path: "enabled_nudges", allowed: []string{"recovery_day", "move_break", "step_pacing", "bedtime", "hydration", "mindful_break", "celebrate"}},
	{path: "favourite_activities"},
}

// counterPrefix starts the path of a per-day counter; the day follows as YYYY-MM-DD.
const counterPrefix = "water_glasses."

// Limits of values.
const (
	// MaxFavourites is the most favourite_activities a profile holds.
	MaxFavourites = 50
	// MaxActivityLen is the longest favourite activity, in characters (runes).
	MaxActivityLen = 64
	// MaxIncr is the largest step of one incr, up or down.
	MaxIncr = 20
	// maxZoneLen is the longest time zone name accepted (the longest IANA name has 32).
	maxZoneLen = 64
)

// nullJSON is the value of a cleared register.
var nullJSON = []byte("null")

// canonical checks raw as a value of f and returns its canonical encoding, which is what
// a register stores and compares. null (clearing the field) is valid for every scalar.
// The error is a message naming what the path takes; it never repeats the value.
func (f *scalarField) canonical(raw []byte) ([]byte, error) {
	var v any
	if err := decodeStrict(raw, &v); err != nil {
		return nil, f.want()
	}
	if v == nil {
		return nullJSON, nil
	}
	switch f.kind {
	case intValue:
		n, ok := v.(json.Number)
		if !ok {
			return nil, f.want()
		}
		i, err := strconv.ParseInt(string(n), 10, 64) // refuses 1.0 and 1e3: integers only
		if err != nil || i < f.min || i > f.max {
			return nil, f.want()
		}
		return strconv.AppendInt(nil, i, 10), nil
	case enumValue:
		s, ok := v.(string)
		if !ok || !slices.Contains(f.enum, s) {
			return nil, f.want()
		}
		return json.Marshal(s)
	case zoneValue:
		s, ok := v.(string)
		if !ok || !validZone(s) {
			return nil, f.want()
		}
		return json.Marshal(s)
	default: // hoursValue
		var h struct {
			Start *string `json:"start"`
			End   *string `json:"end"`
		}
		if err := decodeStrict(raw, &h); err != nil || h.Start == nil || h.End == nil ||
			!validClock(*h.Start) || !validClock(*h.End) || *h.Start == *h.End {
			return nil, f.want()
		}
		return json.Marshal(hours{Start: *h.Start, End: *h.End})
	}
}

// hours is the canonical shape of quiet_hours and active_hours.
type hours struct {
	Start string `json:"start"`
	End   string `json:"end"`
}

// want describes what f takes, as the message of an invalid_value error.
func (f *scalarField) want() error {
	switch f.kind {
	case intValue:
		return errors.New(f.path + " takes an integer " + strconv.FormatInt(f.min, 10) + ".." + strconv.FormatInt(f.max, 10) + " or null")
	case enumValue:
		return errors.New(f.path + " takes one of " + strings.Join(f.enum, ", ") + " or null")
	case zoneValue:
		return errors.New(f.path + " takes an IANA time zone name such as \"America/Chicago\" or null")
	default:
		return errors.New(f.path + ` takes {"start": "HH:MM", "end": "HH:MM"} with start ≠ end, or null`)
	}
}

// view returns a canonical value as View shows it: int64, string or map[string]any.
func (f *scalarField) view(canon []byte) any {
	switch f.kind {
	case intValue:
		i, _ := strconv.ParseInt(string(canon), 10, 64)
		return i
	case hoursValue:
		var h hours
		_ = json.Unmarshal(canon, &h)
		return map[string]any{"start": h.Start, "end": h.End}
	default:
		var s string
		_ = json.Unmarshal(canon, &s)
		return s
	}
}

// validZone reports whether s names a time zone this server's tz database knows. "Local"
// and "" (which LoadLocation takes for the machine's zone and UTC) are refused: the name is
// for other machines too.
func validZone(s string) bool {
	if s == "" || s == "Local" || len(s) > maxZoneLen {
		return false
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("/_+-", c) >= 0) {
			return false
		}
	}
	if _, ok := zones.Load(s); ok {
		return true
	}
	if _, err := time.LoadLocation(s); err != nil {
		return false
	}
	zones.Store(s, true)
	return true
}

// zones caches the names validZone found, sparing a read of the tz database per value
// checked; it holds at most the few hundred names the database has.
var zones sync.Map

// validClock reports whether s is a time of day "HH:MM", 00:00 to 23:59.
func validClock(s string) bool {
	if len(s) != 5 || s[2] != ':' {
		return false
	}
	for _, i := range []int{0, 1, 3, 4} {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s[:2] <= "23" && s[3:] <= "59"
}

// element checks raw as an element of f and returns it.
func (f *setField) element(raw []byte) (string, error) {
	var s *string
	if err := decodeStrict(raw, &s); err != nil || s == nil {
		return "", f.want()
	}
	if err := f.check(*s); err != nil {
		return "", err
	}
	return *s, nil
}

// check reports whether s may be an element of f.
func (f *setField) check(s string) error {
	if f.allowed != nil {
		if !slices.Contains(f.allowed, s) {
			return f.want()
		}
		return nil
	}
	if s == "" || !utf8.ValidString(s) || utf8.RuneCountInString(s) > MaxActivityLen {
		return f.want()
	}
	for i, r := range s {
		if unicode.IsControl(r) || r == utf8.RuneError {
			return f.want()
		}
		// "Yoga" and "Yoga " would otherwise be two favourites that look like one.
		if unicode.IsSpace(r) && (i == 0 || i+utf8.RuneLen(r) == len(s)) {
			return f.want()
		}
	}
	return nil
}

func (f *setField) want() error {
	if f.allowed != nil {
		return errors.New(f.path + " takes one of " + strings.Join(f.allowed, ", "))
	}
	return errors.New(f.path + " takes a string of 1.." + strconv.Itoa(MaxActivityLen) +
		" characters, no control characters, no leading or trailing space")
}

// incrValue checks the value of an incr: an integer -MaxIncr..MaxIncr other than 0.
func incrValue(raw []byte) (int64, error) {
	var v any
	err := decodeStrict(raw, &v)
	if n, ok := v.(json.Number); err == nil && ok {
		if i, err := strconv.ParseInt(string(n), 10, 64); err == nil && i != 0 && -MaxIncr <= i && i <= MaxIncr {
			return i, nil
		}
	}
	return 0, errors.New("incr takes a non-zero integer -" + strconv.Itoa(MaxIncr) + ".." + strconv.Itoa(MaxIncr))
}

// A day is a calendar date as the number of days since 1970-01-01.
type day int32

// parseDay parses "YYYY-MM-DD".
func parseDay(s string) (day, bool) {
	t, err := time.Parse(time.DateOnly, s)
	if err != nil || t.Format(time.DateOnly) != s {
		return 0, false
	}
	return day(t.Unix() / 86400), true
}

func (d day) String() string {
	return time.Unix(int64(d)*86400, 0).UTC().Format(time.DateOnly)
}

// dayOf returns the UTC date of a Unix time in milliseconds (non-negative).
func dayOf(ms int64) day { return day(ms / 86_400_000) }

// decodeStrict decodes exactly one JSON value from raw into v: unknown object members,
// trailing data and numbers outside v's type are errors; numbers decode as json.Number.
func decodeStrict(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON value")
	}
	return nil
}
