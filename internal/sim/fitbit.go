package sim

import (
	"bytes"
	"cmp"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/client"
)

// This file replays the public Fitbit Fitness Tracker export (Fitabase, 33 users, April–May
// 2016) into a server as its users' apps would: LoadFitbit reads the CSV files into
// samples, ReplayFitbit sends them. docs/replay.md explains the mapping of each file.

// FitbitSource is the source (device id) of every sample made from the export.
const FitbitSource = "fitbit"

// MaxReplayBatch is the most samples one request of a replay may carry, the API's limit.
const MaxReplayBatch = 5000

// fitbitTimeLayout is the export's naive local wall-clock time: "4/13/2016 12:00:00 AM".
const fitbitTimeLayout = "1/2/2006 3:04:05 PM"

// The export's files that LoadFitbit reads. The heart-rate files are every
// heartrate_seconds*.csv: the original export's heartrate_seconds_merged.csv or per-user
// extracts such as heartrate_seconds_8877689391.csv.
const (
	fitbitStepsFile       = "minuteStepsWide_merged.csv"
	fitbitIntensitiesFile = "minuteIntensitiesWide_merged.csv"
	fitbitCaloriesFile    = "hourlyCalories_merged.csv"
	fitbitSleepFile       = "sleepDay_merged.csv"
	fitbitWeightFile      = "weightLogInfo_merged.csv"
	fitbitHeartRateGlob   = "heartrate_seconds*.csv"
)

// Sleep placement: the export has only each night's totals, so LoadFitbit puts the night
// where the user's minute steps are lowest among wake-up times from 05:00 to 11:00 local
// on the sleep's date, every 15 minutes, preferring the one nearest 07:00.
const (
	fitbitWakeEarliest  = 5 // 05:00 local
	fitbitWakeStep      = 15 * time.Minute
	fitbitWakeChoices   = 25 // 05:00, 05:15, …, 11:00
	fitbitWakePreferred = 8  // 07:00
)

// fitbitKind is what a record is; each maps to one sample type.
type fitbitKind uint8

const (
	fitbitSteps fitbitKind = iota
	fitbitIntensity
	fitbitActiveEnergy
	fitbitHeartRate
	fitbitInBed
	fitbitAsleep
	fitbitWeight
	fitbitNumKinds
)

// fitbitKinds gives each kind its sample type, the unit its values are sent in and the
// part of the sample id that names it.
var fitbitKinds = [fitbitNumKinds]struct{ typ, unit, id string }{
	fitbitSteps:        {"steps", "count", "steps"},
	fitbitIntensity:    {"activity_intensity", "", "activity_intensity"},
	fitbitActiveEnergy: {"active_energy", "kcal", "active_energy"},
	fitbitHeartRate:    {"heart_rate", "bpm", "heart_rate"},
	fitbitInBed:        {"sleep_stage", "", "sleep_stage-in_bed"},
	fitbitAsleep:       {"sleep_stage", "", "sleep_stage-light"},
	fitbitWeight:       {"body_weight", "kg", "body_weight"},
}

// FitbitTypes are the sample types a replay sends, in the order reports list them.
var FitbitTypes = []string{"steps", "activity_intensity", "active_energy", "heart_rate", "sleep_stage", "body_weight"}

// fitbitIntensityLevels are the activity_intensity levels of the export's Intensity values 0..3
// (sedentary, lightly, fairly and very active), as JSON strings.
var fitbitIntensityLevels = [...]json.RawMessage{
	json.RawMessage(`"sedentary"`), json.RawMessage(`"light"`), json.RawMessage(`"moderate"`), json.RawMessage(`"vigorous"`),
}

// fitbitRecord is one sample of the export, compactly: a replay of the whole export holds
// about 1.5 million of them.
type fitbitRecord struct {
	start int64 // Unix seconds
	dur   int32 // seconds; 0 for an instant reading
	kind  fitbitKind
	value float64 // in the unit of kind; the level (0..3) for fitbitIntensity
}

// due is when a device would know the record: the end of an interval, the moment of an
// instant reading. Replays send records in order of due.
func (r fitbitRecord) due() int64 { return r.start + int64(r.dur) }

// order is the key records are sorted by: due, then kind, then start, packed in one
// integer. It holds for times from 2000 (ParseFitbitTime refuses earlier ones) to the
// year 3000.
func (r fitbitRecord) order() uint64 {
	const since2000 = 946684800
	return uint64(r.due()-since2000)<<20 | uint64(r.kind)<<17 | uint64(fitbitMaxDur-r.dur)
}

// fitbitMaxDur is the longest record, in seconds: a day (a night in bed is at most that).
const fitbitMaxDur = 86400

// FitbitOptions choose what LoadFitbit reads.
type FitbitOptions struct {
	// Zone is the time zone in which the export's naive wall-clock times are read
	// (required): the export has none. America/Chicago gives -05:00 in April–May 2016.
	// When it is a tz database zone (time.LoadLocation), every sample also names it.
	Zone *time.Location
	// Users are the Fitbit Ids to load; empty means every user of the export.
	Users []string
	// From and To bound the local dates loaded, inclusive, as YYYY-MM-DD; empty means
	// unbounded. A sample belongs to the local date it counts on: that of its start, or
	// for a night's sleep the date it ends (the export's SleepDay).
	From, To string
}

// FitbitExport is the export read into samples, per user.
type FitbitExport struct {
	// Users are the users with at least one sample, sorted by Id.
	Users []*FitbitUser
	// Repeated counts rows the export holds twice (the same user and time, or for sleep
	// the same user and night); only the first is kept.
	Repeated int
	// Missing lists the files of the export that were not found (and so add nothing).
	Missing []string

	zone     *time.Location
	zoneName string // the IANA name samples carry in "zone"; "" when Zone has none
}

// FitbitUser is one user of the export and their samples.
type FitbitUser struct {
	// ID is the Fitbit Id, e.g. "1503960366".
	ID string

	records []fitbitRecord // sorted by due, then kind, then start
}

// Subject is the external subject the user's tokens carry: "fitbit-<Id>".
func (u *FitbitUser) Subject() string { return "fitbit-" + u.ID }

// Len returns how many samples the user has.
func (u *FitbitUser) Len() int { return len(u.records) }

// Samples returns the user's samples in the order a replay sends them as the data's time
// passes (each when a device would know it: an interval at its end).
func (x *FitbitExport) Samples(u *FitbitUser) []pulsebase.SampleInput {
	out := make([]pulsebase.SampleInput, len(u.records))
	for i, r := range u.records {
		out[i] = x.sample(u, r)
	}
	return out
}

// Len returns how many samples the export holds over all users.
func (x *FitbitExport) Len() int {
	n := 0
	for _, u := range x.Users {
		n += len(u.records)
	}
	return n
}

// Span returns the start of the earliest sample and the end of the latest one, in the
// export's zone; zero times when there is none.
func (x *FitbitExport) Span() (first, last time.Time) {
	var lo, hi int64 = math.MaxInt64, math.MinInt64
	for _, u := range x.Users {
		for _, r := range u.records {
			lo, hi = min(lo, r.start), max(hi, r.due())
		}
	}
	if lo > hi {
		return time.Time{}, time.Time{}
	}
	return time.Unix(lo, 0).In(x.zone), time.Unix(hi, 0).In(x.zone)
}

// sample turns r into what the API takes. The id is stable — "fitbit-<Id>-<type>-<Unix
// start>", with the stage for sleep — so that a second replay is all duplicates.
func (x *FitbitExport) sample(u *FitbitUser, r fitbitRecord) pulsebase.SampleInput {
	k := &fitbitKinds[r.kind]
	start := time.Unix(r.start, 0).In(x.zone)
	in := pulsebase.SampleInput{
		ID:     "fitbit-" + u.ID + "-" + k.id + "-" + strconv.FormatInt(r.start, 10),
		Type:   k.typ,
		Unit:   k.unit,
		Start:  start.Format(time.RFC3339),
		Source: FitbitSource,
		Zone:   x.zoneName,
	}
	if r.dur > 0 {
		in.End = start.Add(time.Duration(r.dur) * time.Second).Format(time.RFC3339)
	}
	switch r.kind {
	case fitbitIntensity:
		in.Value = fitbitIntensityLevels[int(r.value)]
	case fitbitInBed:
		in.Value = json.RawMessage(`"in_bed"`)
	case fitbitAsleep:
		in.Value = json.RawMessage(`"light"`)
	default:
		in.Value = strconv.AppendFloat(nil, r.value, 'f', -1, 64)
	}
	return in
}

// fitbitLoader is the state of one LoadFitbit.
type fitbitLoader struct {
	dir   string
	zone  *time.Location
	want  map[string]bool // nil: every user
	users map[string]*fitbitUserBuild

	repeated int
	missing  []string
}

// fitbitUserBuild gathers one user's records while the files are read.
type fitbitUserBuild struct {
	byKind   [fitbitNumKinds][]fitbitRecord // each in the order of its file
	seen     map[string]map[int64]bool      // per file, the row times already read
	calories []fitbitRecord                 // hourly total energy, before the basal part is taken off
	sleep    []fitbitNight
}

func (b *fitbitUserBuild) add(r fitbitRecord) { b.byKind[r.kind] = append(b.byKind[r.kind], r) }

// fitbitNight is one row of sleepDay: the night that ends on the local date day.
type fitbitNight struct {
	day           time.Time // local midnight of the SleepDay
	asleep, inBed int       // minutes
}

// LoadFitbit reads the export in dir (see docs/replay.md for what each file becomes).
// Every file is optional, but at least one must be there; an Id of o.Users that no file
// has is an error, and so is a malformed row (reported with its file and line).
func LoadFitbit(dir string, o FitbitOptions) (*FitbitExport, error) {
	if o.Zone == nil {
		return nil, errors.New("fitbit: a time zone is required: the export's times have none")
	}
	from, to, err := fitbitDateBounds(o.From, o.To, o.Zone)
	if err != nil {
		return nil, err
	}
	l := &fitbitLoader{dir: dir, zone: o.Zone, users: map[string]*fitbitUserBuild{}}
	if len(o.Users) > 0 {
		l.want = map[string]bool{}
		for _, id := range o.Users {
			if !validFitbitID(id) {
				return nil, fmt.Errorf("fitbit: user %q: want a Fitbit Id (letters and digits)", id)
			}
			l.want[id] = true
		}
	}

	hrFiles, err := filepath.Glob(filepath.Join(dir, fitbitHeartRateGlob))
	if err != nil {
		return nil, err
	}
	slices.Sort(hrFiles)
	found := 0
	read := func(name string, cols []string, row func(rec []string, col []int) error) error {
		ok, err := l.readCSV(name, cols, row)
		if ok {
			found++
		}
		return err
	}
	if err := read(fitbitStepsFile, fitbitWideColumns("Steps"), l.wideRow(fitbitStepsFile, fitbitSteps)); err != nil {
		return nil, err
	}
	if err := read(fitbitIntensitiesFile, fitbitWideColumns("Intensity"), l.wideRow(fitbitIntensitiesFile, fitbitIntensity)); err != nil {
		return nil, err
	}
	if err := read(fitbitCaloriesFile, []string{"Id", "ActivityHour", "Calories"}, l.caloriesRow); err != nil {
		return nil, err
	}
	if err := read(fitbitSleepFile, []string{"Id", "SleepDay", "TotalMinutesAsleep", "TotalTimeInBed"}, l.sleepRow); err != nil {
		return nil, err
	}
	if err := read(fitbitWeightFile, []string{"Id", "Date", "WeightKg", "WeightPounds"}, l.weightRow); err != nil {
		return nil, err
	}
	for _, path := range hrFiles {
		if err := read(filepath.Base(path), []string{"Id", "Time", "Value"}, l.heartRateRow(filepath.Base(path))); err != nil {
			return nil, err
		}
	}
	if found == 0 {
		return nil, fmt.Errorf("fitbit: no file of the export in %s (want %s, …)", dir, fitbitStepsFile)
	}
	for id := range l.want {
		if l.users[id] == nil {
			return nil, fmt.Errorf("fitbit: user %s is not in the export", id)
		}
	}

	x := &FitbitExport{Repeated: l.repeated, Missing: l.missing, zone: o.Zone}
	if _, err := pulsebase.LoadZone(o.Zone.String()); err == nil {
		x.zoneName = o.Zone.String()
	}
	ids := make([]string, 0, len(l.users))
	for id := range l.users {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		b := l.users[id]
		b.finish(o.Zone)
		// The date bounds apply last, so that a night's placement and the basal energy
		// do not depend on them: a replay of some days sends the very samples (and ids) a
		// replay of all days would send for those days.
		for k := range b.byKind {
			b.byKind[k] = slices.DeleteFunc(b.byKind[k], func(r fitbitRecord) bool {
				at := r.start
				if r.kind == fitbitInBed || r.kind == fitbitAsleep {
					at = r.due() - 1 // a night counts on the day it ends
				}
				return at < from || at >= to
			})
		}
		recs := mergeFitbitRecords(b.byKind[:])
		if len(recs) == 0 {
			continue
		}
		x.Users = append(x.Users, &FitbitUser{ID: id, records: recs})
	}
	if len(x.Users) == 0 {
		return nil, errors.New("fitbit: no sample for the chosen users and dates")
	}
	return x, nil
}

// mergeFitbitRecords returns the records of every group in order. Each group is sorted
// first, which costs little: the export's files are in time order already, so the groups
// are too, and merging a few sorted groups is much cheaper than sorting the lot.
func mergeFitbitRecords(groups [][]fitbitRecord) []fitbitRecord {
	n := 0
	for _, g := range groups {
		slices.SortFunc(g, func(a, b fitbitRecord) int { return cmp.Compare(a.order(), b.order()) })
		n += len(g)
	}
	out := make([]fitbitRecord, 0, n)
	next := make([]int, len(groups))
	for len(out) < n {
		best := -1
		for g := range groups {
			if next[g] < len(groups[g]) && (best < 0 || groups[g][next[g]].order() < groups[best][next[best]].order()) {
				best = g
			}
		}
		out = append(out, groups[best][next[best]])
		next[best]++
	}
	return out
}

// fitbitDateBounds turns the inclusive local dates from and to into Unix seconds [lo, hi).
func fitbitDateBounds(from, to string, zone *time.Location) (lo, hi int64, err error) {
	lo, hi = math.MinInt64, math.MaxInt64
	if from != "" {
		d, err := time.ParseInLocation(time.DateOnly, from, zone)
		if err != nil {
			return 0, 0, fmt.Errorf("fitbit: from %q: want YYYY-MM-DD", from)
		}
		lo = d.Unix()
	}
	if to != "" {
		d, err := time.ParseInLocation(time.DateOnly, to, zone)
		if err != nil {
			return 0, 0, fmt.Errorf("fitbit: to %q: want YYYY-MM-DD", to)
		}
		hi = time.Date(d.Year(), d.Month(), d.Day()+1, 0, 0, 0, 0, zone).Unix()
	}
	if lo >= hi {
		return 0, 0, fmt.Errorf("fitbit: from %s is after to %s", from, to)
	}
	return lo, hi, nil
}

// validFitbitID reports whether id can be a Fitbit Id: 1 to 64 ASCII letters and digits.
// The export's are ten digits.
func validFitbitID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

// ParseFitbitTime reads one of the export's naive wall-clock times ("4/13/2016 1:05:00
// PM") as a local time in zone, with the offset in force then (daylight saving time
// included). A time that does not exist there — inside the hour skipped when clocks go
// forward — is an error; one that exists twice, when clocks go back, is read as the first.
func ParseFitbitTime(s string, zone *time.Location) (time.Time, error) {
	return parseFitbitLocal(s, fitbitTimeLayout, zone)
}

func parseFitbitLocal(s, layout string, zone *time.Location) (time.Time, error) {
	w, err := time.Parse(layout, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("time %q: want M/D/YYYY h:mm:ss AM", s)
	}
	t := time.Date(w.Year(), w.Month(), w.Day(), w.Hour(), w.Minute(), w.Second(), 0, zone)
	if t.Hour() != w.Hour() || t.Minute() != w.Minute() || t.Day() != w.Day() {
		return time.Time{}, fmt.Errorf("time %q does not exist in %s (clocks went forward)", s, zone)
	}
	if t.Year() < 2000 {
		return time.Time{}, fmt.Errorf("time %q is before 2000", s)
	}
	return t, nil
}

// fitbitWideColumns are the columns of a wide minute file: Id, ActivityHour, <prefix>00..59.
func fitbitWideColumns(prefix string) []string {
	cols := []string{"Id", "ActivityHour"}
	for m := range 60 {
		cols = append(cols, fmt.Sprintf("%s%02d", prefix, m))
	}
	return cols
}

// readCSV calls row for each record of the file name whose Id is wanted, with col[i] the
// index of cols[i]. It reports false when the file does not exist.
func (l *fitbitLoader) readCSV(name string, cols []string, row func(rec []string, col []int) error) (bool, error) {
	f, err := os.Open(filepath.Join(l.dir, name))
	if errors.Is(err, os.ErrNotExist) {
		l.missing = append(l.missing, name)
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("fitbit: %w", err)
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.ReuseRecord = true
	header, err := r.Read()
	if err != nil {
		return true, fmt.Errorf("fitbit: %s: header: %w", name, err)
	}
	col := make([]int, len(cols))
	for i, c := range cols {
		col[i] = slices.Index(header, c)
		if i == 0 && col[i] < 0 && len(header) > 0 {
			col[i] = slices.Index(header, "\ufeff"+c) // a byte-order mark
		}
		if col[i] < 0 {
			return true, fmt.Errorf("fitbit: %s: no column %s", name, c)
		}
	}
	for {
		rec, err := r.Read()
		if err == io.EOF {
			return true, nil
		}
		if err != nil {
			return true, fmt.Errorf("fitbit: %s: %w", name, err)
		}
		id := rec[col[0]]
		if l.want != nil && !l.want[id] {
			continue
		}
		if !validFitbitID(id) {
			err = fmt.Errorf("id %q: want letters and digits", id)
		} else {
			err = row(rec, col)
		}
		if err != nil {
			line, _ := r.FieldPos(0)
			return true, fmt.Errorf("fitbit: %s line %d: %w", name, line, err)
		}
	}
}

// user returns the build of id, and whether the row of file at time t is new for it.
func (l *fitbitLoader) user(id, file string, t int64) (*fitbitUserBuild, bool) {
	b := l.users[id]
	if b == nil {
		b = &fitbitUserBuild{seen: map[string]map[int64]bool{}}
		l.users[id] = b
	}
	seen := b.seen[file]
	if seen == nil {
		seen = map[int64]bool{}
		b.seen[file] = seen
	}
	if seen[t] {
		l.repeated++
		return b, false
	}
	seen[t] = true
	return b, true
}

// wideRow reads a row of a wide minute file: one record per minute of the hour.
// Intensities keep every minute, sedentary ones included, since a sedentary minute is
// data and a missing one is not. Steps skip minutes without steps, which add nothing to
// any sum; an hour without any becomes one sample of 0 steps over the hour, so that a day
// the tracker counted nothing has 0 steps, as Fitbit's summary says, rather than none.
func (l *fitbitLoader) wideRow(file string, kind fitbitKind) func(rec []string, col []int) error {
	return func(rec []string, col []int) error {
		hour, err := ParseFitbitTime(rec[col[1]], l.zone)
		if err != nil {
			return err
		}
		b, fresh := l.user(rec[col[0]], file, hour.Unix())
		if !fresh {
			return nil
		}
		n := len(b.byKind[kind])
		for m := range 60 {
			v, err := strconv.Atoi(rec[col[2+m]])
			switch {
			case err != nil:
				return fmt.Errorf("minute %d: %q is not a whole number", m, rec[col[2+m]])
			case v < 0 || kind == fitbitIntensity && v >= len(fitbitIntensityLevels):
				return fmt.Errorf("minute %d: %d out of range", m, v)
			case v == 0 && kind == fitbitSteps:
				continue
			}
			b.add(fitbitRecord{start: hour.Unix() + int64(60*m), dur: 60, kind: kind, value: float64(v)})
		}
		if kind == fitbitSteps && len(b.byKind[kind]) == n {
			b.add(fitbitRecord{start: hour.Unix(), dur: 3600, kind: fitbitSteps})
		}
		return nil
	}
}

func (l *fitbitLoader) caloriesRow(rec []string, col []int) error {
	hour, err := ParseFitbitTime(rec[col[1]], l.zone)
	if err != nil {
		return err
	}
	v, err := strconv.ParseFloat(rec[col[2]], 64)
	if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) {
		return fmt.Errorf("calories %q: want a number ≥ 0", rec[col[2]])
	}
	if b, fresh := l.user(rec[col[0]], fitbitCaloriesFile, hour.Unix()); fresh {
		b.calories = append(b.calories, fitbitRecord{start: hour.Unix(), dur: 3600, kind: fitbitActiveEnergy, value: v})
	}
	return nil
}

func (l *fitbitLoader) sleepRow(rec []string, col []int) error {
	day, err := ParseFitbitTime(rec[col[1]], l.zone)
	if err != nil {
		return err
	}
	asleep, err1 := strconv.Atoi(rec[col[2]])
	inBed, err2 := strconv.Atoi(rec[col[3]])
	if err1 != nil || err2 != nil || asleep < 0 || inBed <= 0 || inBed > 24*60 {
		return fmt.Errorf("sleep %q asleep, %q in bed: want minutes, in bed 1..1440", rec[col[2]], rec[col[3]])
	}
	if b, fresh := l.user(rec[col[0]], fitbitSleepFile, day.Unix()); fresh {
		b.sleep = append(b.sleep, fitbitNight{day: day, asleep: min(asleep, inBed), inBed: inBed})
	}
	return nil
}

func (l *fitbitLoader) weightRow(rec []string, col []int) error {
	at, err := ParseFitbitTime(rec[col[1]], l.zone)
	if err != nil {
		return err
	}
	kg, err := strconv.ParseFloat(rec[col[2]], 64)
	if rec[col[2]] == "" {
		// Only pounds: convert as the server would (1 lb = 0.45359237 kg).
		var lb float64
		if lb, err = strconv.ParseFloat(rec[col[3]], 64); err == nil {
			kg = lb * 0.45359237
		}
	}
	if err != nil || kg <= 0 || math.IsInf(kg, 0) {
		return fmt.Errorf("weight %q kg, %q lb: want a number", rec[col[2]], rec[col[3]])
	}
	if b, fresh := l.user(rec[col[0]], fitbitWeightFile, at.Unix()); fresh {
		b.add(fitbitRecord{start: at.Unix(), kind: fitbitWeight, value: kg})
	}
	return nil
}

func (l *fitbitLoader) heartRateRow(file string) func(rec []string, col []int) error {
	return func(rec []string, col []int) error {
		at, err := ParseFitbitTime(rec[col[1]], l.zone)
		if err != nil {
			return err
		}
		v, err := strconv.ParseFloat(rec[col[2]], 64)
		if err != nil || math.IsInf(v, 0) || math.IsNaN(v) {
			return fmt.Errorf("heart rate %q: want a number", rec[col[2]])
		}
		if b, fresh := l.user(rec[col[0]], file, at.Unix()); fresh {
			b.add(fitbitRecord{start: at.Unix(), kind: fitbitHeartRate, value: v})
		}
		return nil
	}
}

// finish adds the records that need the whole of the user's data: active energy, whose
// basal part is the user's lowest hour, and the nights, placed by the minute steps.
func (b *fitbitUserBuild) finish(zone *time.Location) {
	b.seen = nil
	if len(b.calories) > 0 {
		// Fitbit's hourly Calories are total energy: the basal metabolic rate plus activity.
		// When the tracker is not worn Fitbit fills in the basal rate alone, so a user's
		// lowest hour — the same value hundreds of times in the export — is their basal
		// rate, and an hour's active energy is what it holds above that.
		basal := math.Inf(1)
		for _, c := range b.calories {
			basal = min(basal, c.value)
		}
		for _, c := range b.calories {
			if c.value > basal {
				c.value -= basal
				b.add(c)
			}
		}
		b.calories = nil
	}
	if len(b.sleep) > 0 {
		var at []int64 // minute starts with steps, sorted
		var cum []int64
		stepRecs := slices.Clone(b.byKind[fitbitSteps])
		slices.SortFunc(stepRecs, func(a, b fitbitRecord) int { return cmp.Compare(a.start, b.start) })
		cum = append(cum, 0)
		for _, r := range stepRecs {
			at = append(at, r.start)
			cum = append(cum, cum[len(cum)-1]+int64(r.value))
		}
		stepsIn := func(lo, hi int64) int64 { // steps of minutes starting in [lo, hi)
			i, _ := slices.BinarySearch(at, lo)
			j, _ := slices.BinarySearch(at, hi)
			return cum[j] - cum[i]
		}
		for _, n := range b.sleep {
			bed, wake := placeFitbitNight(n, zone, stepsIn)
			b.add(fitbitRecord{start: bed, dur: int32(wake - bed), kind: fitbitInBed})
			if n.asleep > 0 {
				// The time awake in bed is split evenly before and after the sleep.
				lat := int64((n.inBed - n.asleep) / 2 * 60)
				b.add(fitbitRecord{start: bed + lat, dur: int32(n.asleep * 60), kind: fitbitAsleep})
			}
		}
		b.sleep = nil
	}
}

// placeFitbitNight chooses when the night n was: the in-bed time ending at the wake-up
// time, from 05:00 to 11:00 local on its day every 15 minutes, whose minutes hold the
// fewest steps; among equals the one nearest 07:00, then the earlier. It returns Unix
// seconds.
func placeFitbitNight(n fitbitNight, zone *time.Location, stepsIn func(lo, hi int64) int64) (bed, wake int64) {
	y, m, d := n.day.Date()
	first := time.Date(y, m, d, fitbitWakeEarliest, 0, 0, 0, zone)
	inBed := int64(n.inBed * 60)
	distance := func(k int) int { return max(k-fitbitWakePreferred, fitbitWakePreferred-k) }
	bestK, bestSteps := -1, int64(0)
	for k := range fitbitWakeChoices {
		w := first.Add(time.Duration(k) * fitbitWakeStep).Unix()
		s := stepsIn(w-inBed, w)
		if bestK < 0 || s < bestSteps || s == bestSteps && distance(k) < distance(bestK) {
			bestK, bestSteps = k, s
		}
	}
	wake = first.Add(time.Duration(bestK) * fitbitWakeStep).Unix()
	return wake - inBed, wake
}

// ReplayOptions configure ReplayFitbit.
type ReplayOptions struct {
	// Token returns a bearer token of the user with the external subject (a user token,
	// since it records the user's consent). It is asked once per user, and again when the
	// server answers 401 (an expired token).
	Token func(subject string) (string, error)
	// HTTPClient sends the requests; nil means the SDK's default.
	HTTPClient *http.Client
	// Speed replays the data's time Speed times faster than real time: a sample is sent
	// when a device would have known it (an interval at its end), in the order of the
	// data, sleeping between batches. Zero means as fast as the server accepts.
	Speed float64
	// Batch is the most samples per request, 1..MaxReplayBatch; zero means MaxReplayBatch.
	Batch int
	// Concurrency is how many users send at once; zero means 4.
	Concurrency int
	// Log receives progress; nil means none.
	Log *slog.Logger
}

// ReplayCounts are what happened to the samples of one type.
type ReplayCounts struct {
	Sent       int `json:"sent"`
	Accepted   int `json:"accepted"`
	Duplicates int `json:"duplicates"`
	Rejected   int `json:"rejected"`
	// Codes counts the rejections by code (out_of_range, no_consent, …).
	Codes map[string]int `json:"rejected_codes,omitempty"`
}

func (c *ReplayCounts) add(d ReplayCounts) {
	c.Sent += d.Sent
	c.Accepted += d.Accepted
	c.Duplicates += d.Duplicates
	c.Rejected += d.Rejected
	for code, n := range d.Codes {
		if c.Codes == nil {
			c.Codes = map[string]int{}
		}
		c.Codes[code] += n
	}
}

// ReplayReport is the outcome of a replay.
type ReplayReport struct {
	Users int `json:"users"`
	// First and Last are the data's time span: the earliest start and the latest end.
	First time.Time `json:"first"`
	Last  time.Time `json:"last"`
	// Speed is the replay's speed; 0 means as fast as possible.
	Speed float64 `json:"speed"`
	// Elapsed is the wall time of the replay, users' consent included, in seconds.
	Elapsed float64 `json:"elapsed_seconds"`
	// Requests counts POST /v1/samples requests, Retries those that were sent again
	// (after a 429, a 5xx, a network error or an expired token).
	Requests int `json:"requests"`
	Retries  int `json:"retries"`
	// Repeated counts rows the export holds twice, sent once.
	Repeated int                      `json:"repeated_rows"`
	Types    map[string]*ReplayCounts `json:"types"`

	mu sync.Mutex
}

// Total returns the counts over every type.
func (r *ReplayReport) Total() ReplayCounts {
	var t ReplayCounts
	for _, c := range r.Types {
		t.add(*c)
	}
	return t
}

// SamplesPerSecond is the rate samples were sent at, over the whole replay.
func (r *ReplayReport) SamplesPerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Total().Sent) / r.Elapsed
}

// MarshalJSON adds the totals and the rate to the fields.
func (r *ReplayReport) MarshalJSON() ([]byte, error) {
	type plain ReplayReport
	return json.Marshal(struct {
		*plain
		Total            ReplayCounts `json:"total"`
		SamplesPerSecond float64      `json:"samples_per_second"`
	}{(*plain)(r), r.Total(), math.Round(r.SamplesPerSecond())})
}

// WriteTable prints the report for people.
func (r *ReplayReport) WriteTable(w io.Writer) error {
	speed := "as fast as possible"
	if r.Speed > 0 {
		speed = "at " + strconv.FormatFloat(r.Speed, 'g', -1, 64) + "× real time"
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "replayed %d users, data from %s to %s, %s\n", r.Users,
		r.First.Format(time.RFC3339), r.Last.Format(time.RFC3339), speed)
	fmt.Fprintln(tw, "type\tsent\taccepted\tduplicates\trejected\t")
	row := func(name string, c ReplayCounts) {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t\n", name, c.Sent, c.Accepted, c.Duplicates, c.Rejected)
	}
	var codes []string
	for _, typ := range FitbitTypes {
		c, ok := r.Types[typ]
		if !ok {
			continue
		}
		row(typ, *c)
		for code, n := range c.Codes {
			codes = append(codes, fmt.Sprintf("%s %s %d", typ, code, n))
		}
	}
	row("total", r.Total())
	if err := tw.Flush(); err != nil {
		return err
	}
	slices.Sort(codes)
	for _, c := range codes {
		fmt.Fprintf(w, "rejected: %s\n", c)
	}
	if r.Repeated > 0 {
		fmt.Fprintf(w, "%d rows repeated in the export were sent once\n", r.Repeated)
	}
	_, err := fmt.Fprintf(w, "%.0f samples/s over %.1f s (%d requests, %d retries)\n", r.SamplesPerSecond(), r.Elapsed, r.Requests, r.Retries)
	return err
}

// record counts the outcome of one request of n samples of typ.
func (r *ReplayReport) record(typ string, n, accepted, duplicates int, rejected []pulsebase.Rejection) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Requests++
	d := ReplayCounts{Sent: n, Accepted: accepted, Duplicates: duplicates, Rejected: len(rejected)}
	for _, rej := range rejected {
		if d.Codes == nil {
			d.Codes = map[string]int{}
		}
		d.Codes[rej.Code]++
	}
	r.Types[typ].add(d)
}

func (r *ReplayReport) retried() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Requests++
	r.Retries++
}

// fitbitReplayUser is a user being replayed; one goroutine at a time uses it.
type fitbitReplayUser struct {
	u     *FitbitUser
	token string
	cl    *client.Client
	next  int // index of the first record not sent yet
}

// fitbitReplayer is the state of one ReplayFitbit.
type fitbitReplayer struct {
	base  string
	x     *FitbitExport
	o     ReplayOptions
	log   *slog.Logger
	users []*fitbitReplayUser
	rep   *ReplayReport
}

// Retries of a request that failed for a reason that may pass.
const (
	replayMaxAttempts  = 6
	replayFirstBackoff = 250 * time.Millisecond
	replayMaxBackoff   = 8 * time.Second
)

// ReplayFitbit replays x into the server at baseURL as its users' apps would: for each
// user it records consent (collection of activity, heart, sleep and body data, for
// personalization) and the profile's time zone, then posts the user's samples in batches
// of one type, so the report can say what happened to each type. The report is returned
// with the error too, counting what was done before it. Samples carry stable ids: a
// replay repeated within the server's duplicate window is all duplicates, and a later one
// is counted once by the processor.
func ReplayFitbit(ctx context.Context, baseURL string, x *FitbitExport, o ReplayOptions) (*ReplayReport, error) {
	switch {
	case o.Token == nil:
		return nil, errors.New("replay: no token source")
	case o.Speed < 0 || math.IsNaN(o.Speed) || math.IsInf(o.Speed, 0):
		return nil, fmt.Errorf("replay: speed %g: want 0 (as fast as possible) or more", o.Speed)
	case o.Batch < 0 || o.Batch > MaxReplayBatch:
		return nil, fmt.Errorf("replay: batch %d: want 1..%d", o.Batch, MaxReplayBatch)
	case o.Concurrency < 0:
		return nil, fmt.Errorf("replay: concurrency %d: want 1 or more", o.Concurrency)
	}
	if o.Batch == 0 {
		o.Batch = MaxReplayBatch
	}
	if o.Concurrency == 0 {
		o.Concurrency = 4
	}
	r := &fitbitReplayer{base: baseURL, x: x, o: o, log: o.Log}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	first, last := x.Span()
	r.rep = &ReplayReport{Users: len(x.Users), First: first, Last: last, Speed: o.Speed, Repeated: x.Repeated,
		Types: map[string]*ReplayCounts{}}
	for _, typ := range FitbitTypes {
		r.rep.Types[typ] = &ReplayCounts{}
	}
	for _, u := range x.Users {
		r.users = append(r.users, &fitbitReplayUser{u: u})
	}
	start := time.Now()
	err := r.each(ctx, len(r.users), func(ctx context.Context, i int) error { return r.setUp(ctx, r.users[i]) })
	if err == nil {
		if o.Speed == 0 {
			err = r.asFastAsPossible(ctx)
		} else {
			err = r.paced(ctx)
		}
	}
	r.rep.Elapsed = time.Since(start).Seconds()
	for typ, c := range r.rep.Types {
		if c.Sent == 0 {
			delete(r.rep.Types, typ)
		}
	}
	return r.rep, err
}

// each runs f for 0..n-1, Concurrency at once, stopping at the first error.
func (r *fitbitReplayer) each(ctx context.Context, n int, f func(ctx context.Context, i int) error) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(r.o.Concurrency)
	for i := range n {
		g.Go(func() error { return f(ctx, i) })
	}
	return g.Wait()
}

// connect gives ru a client with a fresh token.
func (r *fitbitReplayer) connect(ru *fitbitReplayUser) error {
	tok, err := r.o.Token(ru.u.Subject())
	if err != nil {
		return fmt.Errorf("replay: token of %s: %w", ru.u.Subject(), err)
	}
	var opts []client.Option
	if r.o.HTTPClient != nil {
		opts = append(opts, client.WithHTTPClient(r.o.HTTPClient))
	}
	ru.token, ru.cl = tok, client.New(r.base, tok, opts...)
	return nil
}

// setUp does what the user's app does before it syncs: ask for consent and record the
// user's time zone in their profile.
func (r *fitbitReplayer) setUp(ctx context.Context, ru *fitbitReplayUser) error {
	if err := r.connect(ru); err != nil {
		return err
	}
	_, err := ru.cl.SetConsent(ctx, map[pulsebase.Category]bool{
		pulsebase.CategoryActivity: true, pulsebase.CategoryHeart: true,
		pulsebase.CategorySleep: true, pulsebase.CategoryBody: true,
	}, map[pulsebase.Purpose]bool{pulsebase.PurposePersonalization: true})
	if err != nil {
		return fmt.Errorf("replay: consent of %s: %w", ru.u.Subject(), err)
	}
	if r.x.zoneName != "" {
		if err := r.setTimeZone(ctx, ru); err != nil {
			return fmt.Errorf("replay: time zone of %s: %w", ru.u.Subject(), err)
		}
	}
	return nil
}

// fitbitReplayDevice is the device id of the profile ops a replay makes.
const fitbitReplayDevice = "fitbit-replay"

// setTimeZone sets the profile's time_zone, as the user's phone would when it learns the
// zone, through POST /v1/users/me/profile/ops (the SDK edits profiles only over a sync
// session). The op is always the replay device's first, so a second replay's is a
// duplicate and changes nothing: the zone is the first replay's. (Local days do not
// depend on it: each sample carries its own offset and zone.)
func (r *fitbitReplayer) setTimeZone(ctx context.Context, ru *fitbitReplayUser) error {
	op := map[string]any{
		"id":   fitbitReplayDevice + ":1",
		"ts":   map[string]any{"wall": time.Now().UnixMilli(), "logical": 0, "node": fitbitReplayDevice},
		"kind": "set", "path": "time_zone", "value": r.x.zoneName,
	}
	body, err := json.Marshal(map[string]any{"ops": []any{op}})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, "POST", strings.TrimRight(r.base, "/")+"/v1/users/me/profile/ops", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+ru.token)
	hc := r.o.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var out struct {
		Results []struct {
			Code   string `json:"code"`
			Detail string `json:"detail"`
		} `json:"results"`
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return err
	}
	for _, res := range out.Results {
		if res.Code != "" {
			return fmt.Errorf("refused: %s %s", res.Code, res.Detail)
		}
	}
	return nil
}

// asFastAsPossible sends each user's samples back to back, Concurrency users at once.
func (r *fitbitReplayer) asFastAsPossible(ctx context.Context) error {
	return r.each(ctx, len(r.users), func(ctx context.Context, i int) error {
		ru := r.users[i]
		if err := r.send(ctx, ru, ru.u.records); err != nil {
			return err
		}
		r.log.Info("replay: user done", "user", ru.u.Subject(), "samples", len(ru.u.records))
		return nil
	})
}

// fitbitMinTick is the shortest sleep of a paced replay: at high speeds each step sends
// what fell due over at least this long, rather than a request per sample, which would
// also run into the server's per-user rate limit.
const fitbitMinTick = 100 * time.Millisecond

// paced sends the samples in the data's time order, Speed times faster than real time:
// at each step every user's samples that are due by then, then a sleep until the next
// sample is due (fitbitMinTick at least).
func (r *fitbitReplayer) paced(ctx context.Context) error {
	var t0 int64 = math.MaxInt64
	for _, ru := range r.users {
		t0 = min(t0, ru.u.records[0].due())
	}
	start := time.Now()
	day := ""
	for {
		now := t0 + int64(float64(time.Since(start))*r.o.Speed/float64(time.Second))
		var due []*fitbitReplayUser
		var upto []int
		next := int64(math.MaxInt64)
		for _, ru := range r.users {
			recs := ru.u.records
			j := ru.next
			for j < len(recs) && recs[j].due() <= now {
				j++
			}
			if j > ru.next {
				due, upto = append(due, ru), append(upto, j)
			}
			if j < len(recs) {
				next = min(next, recs[j].due())
			}
		}
		err := r.each(ctx, len(due), func(ctx context.Context, i int) error {
			ru := due[i]
			if err := r.send(ctx, ru, ru.u.records[ru.next:upto[i]]); err != nil {
				return err
			}
			ru.next = upto[i]
			return nil
		})
		if err != nil {
			return err
		}
		if d := time.Unix(now, 0).In(r.x.zone).Format(time.DateOnly); d != day {
			day = d
			r.log.Info("replay: simulated day", "date", d, "samples", r.rep.Total().Sent)
		}
		if next == math.MaxInt64 {
			return nil
		}
		at := start.Add(time.Duration(float64(time.Duration(next-t0)*time.Second) / r.o.Speed))
		wait := max(time.Until(at), fitbitMinTick)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// send posts recs of ru, one type at a time in batches of at most Batch, each type's in
// time order.
func (r *fitbitReplayer) send(ctx context.Context, ru *fitbitReplayUser, recs []fitbitRecord) error {
	for _, typ := range FitbitTypes {
		batch := make([]pulsebase.SampleInput, 0, min(r.o.Batch, len(recs)))
		for _, rec := range recs {
			if fitbitKinds[rec.kind].typ != typ {
				continue
			}
			batch = append(batch, r.x.sample(ru.u, rec))
			if len(batch) == r.o.Batch {
				if err := r.post(ctx, ru, typ, batch); err != nil {
					return err
				}
				batch = batch[:0]
			}
		}
		if len(batch) > 0 {
			if err := r.post(ctx, ru, typ, batch); err != nil {
				return err
			}
		}
	}
	return nil
}

// post sends one batch of samples of typ, retrying what may pass: a 429 or 5xx answer, a
// network error (the ids make a re-send harmless), and once an expired token.
func (r *fitbitReplayer) post(ctx context.Context, ru *fitbitReplayUser, typ string, batch []pulsebase.SampleInput) error {
	backoff := replayFirstBackoff
	reconnected := false
	for attempt := 1; ; attempt++ {
		res, err := ru.cl.PostSamples(ctx, batch)
		var ce *client.Error
		switch {
		case err == nil:
			r.rep.record(typ, len(batch), res.Accepted, res.Duplicates, res.Rejected)
			return nil
		case errors.As(err, &ce) && ce.Status == http.StatusUnprocessableEntity && len(ce.Rejected) > 0:
			r.rep.record(typ, len(batch), 0, 0, ce.Rejected) // every sample was rejected
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.As(err, &ce) && ce.Status == http.StatusUnauthorized && !reconnected:
			reconnected = true
			if err := r.connect(ru); err != nil {
				return err
			}
			r.rep.retried()
			continue
		case attempt >= replayMaxAttempts || !replayRetryable(err):
			return fmt.Errorf("replay: %s samples of %s: %w", typ, ru.u.Subject(), err)
		}
		r.rep.retried()
		r.log.Warn("replay: retrying", "user", ru.u.Subject(), "type", typ, "err", err, "in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, replayMaxBackoff)
	}
}

// replayRetryable reports whether a failed request may succeed if sent again.
func replayRetryable(err error) bool {
	var ce *client.Error
	if !errors.As(err, &ce) {
		return true // the network; the ids make a second copy a duplicate
	}
	return ce.Status == http.StatusTooManyRequests || ce.Status >= 500
}
