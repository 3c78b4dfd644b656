package pulsebase

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// Time sanity limits of DOMAIN.md.
const (
	// MaxClockSkew is how far in the future a sample may start (or end).
	MaxClockSkew = 10 * time.Minute
	// MaxInterval is the longest span of one sample.
	MaxInterval = 24 * time.Hour
)

// epoch is the earliest start accepted: 2000-01-01T00:00:00Z.
var epoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// Normalize validates in against the sample-type registry and converts it to its canonical
// form, as of now (which decides what "in the future" means and becomes Received). It
// returns every problem of the sample, not just the first, in a stable order (type, value,
// unit, start, end, zone, source); the Sample is meaningful only when there are none.
//
// Start and End keep the offset the client sent. OrigValue aliases in.Value. Details never
// carry the source or id strings; a range problem states the value in the canonical unit,
// e.g. "heart_rate 400 /min outside 20..250". Device and Subject are left to the caller.
func Normalize(in SampleInput, now time.Time) (Sample, []Problem) {
	var probs []Problem
	s := Sample{
		ID:        in.ID,
		OrigValue: in.Value,
		OrigUnit:  in.Unit,
		Zone:      in.Zone,
		Source:    in.Source,
		Received:  now,
	}

	t, typeOK := LookupType(in.Type)
	switch {
	case in.Type == "":
		probs = append(probs, Problem{CodeMissingField, "type", "type is required"})
	case !typeOK:
		probs = append(probs, Problem{CodeUnknownType, "type", "unknown sample type " + clip(in.Type)})
	default:
		s.Type = t.Name // the registry's copy, not one that keeps a request body alive
		s.Unit = t.Unit
	}

	// Value and unit. The range check waits until the times are known.
	raw := trimSpace(in.Value)
	valueOK := false
	c, unitOK := conv{}, false
	if typeOK {
		c, unitOK = t.conv(in.Unit)
	}
	switch {
	case len(raw) == 0 || string(raw) == "null":
		probs = append(probs, Problem{CodeMissingField, "value", "value is required"})
	case !typeOK:
		// Nothing to check a value against.
	case t.Levels != nil:
		var p *Problem
		s.Value, s.Level, p = level(t, raw)
		if p != nil {
			probs = append(probs, *p)
		} else {
			valueOK = true
		}
	case raw[0] != '-' && (raw[0] < '0' || raw[0] > '9'):
		probs = append(probs, Problem{CodeBadValue, "value", t.Name + " value must be a number"})
	default:
		x, err := strconv.ParseFloat(string(raw), 64)
		switch {
		case !isJSONNumber(raw) || err != nil && !errors.Is(err, strconv.ErrRange):
			probs = append(probs, Problem{CodeBadValue, "value", t.Name + " value is not a valid number"})
		case math.IsInf(x, 0):
			probs = append(probs, Problem{CodeOutOfRange, "value", t.Name + " value is beyond any valid range"})
		case unitOK:
			s.Value = c.apply(raw, x)
			if math.IsInf(s.Value, 0) || math.IsNaN(s.Value) {
				probs = append(probs, Problem{CodeOutOfRange, "value", t.Name + " value is beyond any valid range"})
			} else {
				s.Value += 0 // -0 → 0, so that equal samples have equal identities
				valueOK = true
			}
		}
	}
	if typeOK && !unitOK {
		probs = append(probs, Problem{CodeBadUnit, "unit", "unit " + clip(in.Unit) + " not accepted for " + t.Name + " (use " + t.Unit + unitList(t) + ")"})
	}

	// Times.
	latest := now.Add(MaxClockSkew)
	startOK, endOK := false, false
	if in.Start == "" {
		probs = append(probs, Problem{CodeMissingField, "start", "start is required"})
	} else if st, err := time.Parse(time.RFC3339, in.Start); err != nil {
		probs = append(probs, Problem{CodeBadTime, "start", "start is not an RFC 3339 time"})
	} else {
		s.Start, startOK = st, true
		if st.Before(epoch) {
			probs = append(probs, Problem{CodeBadTime, "start", "start is before 2000-01-01"})
			startOK = false
		} else if st.After(latest) {
			probs = append(probs, Problem{CodeFutureTime, "start", "start is more than 10 minutes in the future"})
			startOK = false
		}
	}
	interval := typeOK && (t.Shape == ShapeInterval || t.Shape == ShapeCategorical)
	if in.End == "" {
		if interval {
			probs = append(probs, Problem{CodeMissingField, "end", "end is required for " + t.Name})
		} else {
			s.End, endOK = s.Start, startOK
		}
	} else if en, err := time.Parse(time.RFC3339, in.End); err != nil {
		probs = append(probs, Problem{CodeBadTime, "end", "end is not an RFC 3339 time"})
	} else {
		s.End, endOK = en, true
		if startOK {
			d := en.Sub(s.Start)
			switch {
			case d < 0:
				probs = append(probs, Problem{CodeBadTime, "end", "end is before start"})
				endOK = false
			case typeOK && t.Shape == ShapeInstant && d != 0:
				probs = append(probs, Problem{CodeBadTime, "end", t.Name + " is an instant reading: end must equal start"})
				endOK = false
			case d > MaxInterval:
				probs = append(probs, Problem{CodeBadTime, "end", "interval is longer than 24 h"})
				endOK = false
			case en.After(latest):
				// A measurement cannot have ended in the future either.
				probs = append(probs, Problem{CodeFutureTime, "end", "end is more than 10 minutes in the future"})
				endOK = false
			}
		}
	}
	if in.Zone != "" {
		if _, err := LoadZone(in.Zone); err != nil {
			probs = append(probs, Problem{CodeBadTime, "zone", "zone is not an IANA time zone name"})
		}
	}
	if in.Source == "" {
		probs = append(probs, Problem{CodeMissingField, "source", "source is required"})
	}

	if valueOK && unitOK {
		lo, hi := t.Min, t.Max
		if t.MaxPerSecond > 0 && startOK && endOK {
			hi = math.Min(hi, t.MaxPerSecond*s.End.Sub(s.Start).Seconds())
		}
		if s.Value < lo || s.Value > hi {
			probs = append(probs, Problem{CodeOutOfRange, "value", t.Name + " " + formatFloat(s.Value) + " " + t.Unit +
				" outside " + formatFloat(lo) + ".." + formatFloat(hi)})
		}
	}
	return s, probs
}

// level reads the value of a categorical type: a level name or its index.
func level(t *SampleType, raw []byte) (float64, string, *Problem) {
	bad := func(code, detail string) (float64, string, *Problem) {
		return 0, "", &Problem{code, "value", detail}
	}
	switch {
	case raw[0] == '"':
		name, ok := jsonString(raw)
		if ok {
			for i, l := range t.Levels {
				if name == l {
					return float64(i), l, nil
				}
			}
		}
		return bad(CodeBadValue, t.Name+" value must be one of "+join(t.Levels))
	case raw[0] == '-' || '0' <= raw[0] && raw[0] <= '9':
		x, err := strconv.ParseFloat(string(raw), 64)
		if !isJSONNumber(raw) || err != nil && !errors.Is(err, strconv.ErrRange) {
			return bad(CodeBadValue, t.Name+" value is not a valid number")
		}
		if x != math.Trunc(x) || math.IsInf(x, 0) {
			return bad(CodeBadValue, t.Name+" value must be a level index or name")
		}
		if x < 0 || x >= float64(len(t.Levels)) {
			return bad(CodeOutOfRange, t.Name+" "+formatFloat(x)+" outside 0.."+strconv.Itoa(len(t.Levels)-1))
		}
		return x + 0, t.Levels[int(x)], nil
	}
	return bad(CodeBadValue, t.Name+" value must be one of "+join(t.Levels))
}

// jsonString returns the string a JSON string literal denotes; the common case, without
// escapes, does not allocate.
func jsonString(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[len(raw)-1] != '"' {
		return "", false
	}
	inner := raw[1 : len(raw)-1]
	for _, b := range inner {
		if b == '\\' || b == '"' || b < 0x20 {
			var s string
			err := json.Unmarshal(raw, &s)
			return s, err == nil
		}
	}
	if !utf8.Valid(inner) {
		return "", false
	}
	return string(inner), true
}

// isJSONNumber reports whether b is a number in JSON syntax. strconv.ParseFloat also takes
// "Inf", "NaN", "0x1p4" and "1_0", none of which a client may send.
func isJSONNumber(b []byte) bool {
	i := 0
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
	default:
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		d := i
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
		if i == d {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		d := i
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
		if i == d {
			return false
		}
	}
	return i == len(b)
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && isSpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func formatFloat(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }

func join(names []string) string {
	s := ""
	for i, n := range names {
		if i > 0 {
			s += ", "
		}
		s += n
	}
	return s
}

func unitList(t *SampleType) string {
	if len(t.Aliases) == 0 {
		return ""
	}
	return ", " + join(t.Aliases)
}

// clip quotes a client string for a detail, cut to a few bytes: enough to recognise a typo,
// never a way to reflect arbitrary content back.
func clip(s string) string {
	const max = 32
	if len(s) > max {
		i := max
		for i > 0 && !utf8.RuneStart(s[i]) {
			i--
		}
		return strconv.Quote(s[:i]) + "…"
	}
	return strconv.Quote(s)
}

// zones caches LoadLocation, which reads the zone database on every call. Only valid names
// are cached, so the map is bounded by the database.
var zones sync.Map // string → *time.Location

// LoadZone returns the IANA time zone called name, like time.LoadLocation but cached and
// refusing "", "Local" (the server's zone means nothing to a client) and names that cannot
// be zone names.
func LoadZone(name string) (*time.Location, error) {
	if loc, ok := zones.Load(name); ok {
		return loc.(*time.Location), nil
	}
	if !zoneName(name) {
		return nil, errors.New("not an IANA time zone name")
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, err
	}
	zones.Store(name, loc)
	return loc, nil
}

// zoneName reports whether name is shaped like a tz database name ("America/Chicago",
// "Etc/GMT+6", "UTC"), so junk never reaches the file system.
func zoneName(name string) bool {
	if name == "" || name == "Local" || len(name) > 64 || name[0] == '/' {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '/' || c == '_' || c == '-' || c == '+') {
			return false
		}
	}
	return true
}

// Identity returns the material of s's dedupe identity (DOMAIN.md): its client id when it
// has one, else its type, start, end, source and canonical value. The caller keys it per
// user (with a PRF), so Identity only has to be unambiguous: fields are length-prefixed and
// times are instants, so the same sample sent with two offsets has one identity.
func (s Sample) Identity() []byte { return s.AppendIdentity(nil) }

// AppendIdentity appends the identity material of s to b (see Identity).
func (s Sample) AppendIdentity(b []byte) []byte {
	if s.ID != "" {
		b = append(b, 'i')
		return appendField(b, s.ID)
	}
	b = append(b, 'v')
	b = appendField(b, s.Type)
	b = appendTime(b, s.Start)
	b = appendTime(b, s.End)
	b = appendField(b, s.Source)
	return binary.BigEndian.AppendUint64(b, math.Float64bits(s.Value+0))
}

func appendField(b []byte, f string) []byte {
	b = binary.AppendUvarint(b, uint64(len(f)))
	return append(b, f...)
}

// appendTime appends seconds and nanoseconds apart: UnixNano overflows outside 1678..2262.
func appendTime(b []byte, t time.Time) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(t.Unix()))
	return binary.BigEndian.AppendUint32(b, uint32(t.Nanosecond()))
}
