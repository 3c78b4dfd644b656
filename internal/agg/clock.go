package agg

import (
	"cmp"
	"slices"
	"sync"
	"time"

	"github.com/pulsebase/pulsebase"
)

// DateLayout is the layout of a local date: "2006-01-02".
const DateLayout = "2006-01-02"

// Resolution is the width of a series bucket.
type Resolution int

// The resolutions of the series API.
const (
	Minute Resolution = iota + 1
	Hour
	Day
)

// String returns the resolution as the API spells it: "1m", "1h" or "1d".
func (r Resolution) String() string {
	switch r {
	case Minute:
		return "1m"
	case Hour:
		return "1h"
	case Day:
		return "1d"
	}
	return "Resolution(?)"
}

// ParseResolution parses "1m", "1h" or "1d".
func ParseResolution(s string) (Resolution, bool) {
	switch s {
	case "1m":
		return Minute, true
	case "1h":
		return Hour, true
	case "1d":
		return Day, true
	}
	return 0, false
}

// fixedZones caches one *time.Location per UTC offset, so that times this package returns
// with the same offset share a location and compare equal with ==.
var fixedZones sync.Map // int (seconds east of UTC) → *time.Location

func fixedZone(offset int) *time.Location {
	if loc, ok := fixedZones.Load(offset); ok {
		return loc.(*time.Location)
	}
	loc, _ := fixedZones.LoadOrStore(offset, time.FixedZone("", offset))
	return loc.(*time.Location)
}

// Location returns the local clock of s: its IANA Zone when it has a valid one, else the
// fixed UTC offset its Start carries. Each sample carries its own clock, so a user who
// changes zone keeps correct local days.
func Location(s pulsebase.Sample) *time.Location { return location(&s) }

func location(s *pulsebase.Sample) *time.Location {
	if s.Zone != "" {
		if loc, err := pulsebase.LoadZone(s.Zone); err == nil {
			return loc
		}
		// Normalize rejects an unknown zone, so this is a sample built by hand: fall back
		// to the offset, which is always there.
	}
	_, off := s.Start.Zone()
	return fixedZone(off)
}

// clockCache is location for a run of samples, remembering the last fixed offset:
// consecutive samples nearly always share it.
type clockCache struct {
	offset int
	loc    *time.Location
}

func (c *clockCache) of(s *pulsebase.Sample) *time.Location {
	if s.Zone != "" {
		return location(s)
	}
	_, off := s.Start.Zone()
	if c.loc == nil || off != c.offset {
		c.offset, c.loc = off, fixedZone(off)
	}
	return c.loc
}

// LocalDay returns the local date ("YYYY-MM-DD") of the start of s on its own clock.
// Interval samples that cross midnight are spread over both days by Buckets and
// DailyMetrics; LocalDay names only the day they start on.
func LocalDay(s pulsebase.Sample) string {
	return s.Start.In(location(&s)).Format(DateLayout)
}

// Bucket returns the bucket of resolution res that contains t on the clock loc: start ≤ t <
// end, start at a whole local minute, local hh:00 or local midnight, and start and end
// expressed in loc. Minute and hour buckets are a fixed 1 min and 1 h wide and aligned with
// the offset in force at t (so +05:30 hours start at 04:30Z); a day bucket runs from local
// midnight to the next, 23 or 25 hours on the days daylight saving time starts or ends.
func Bucket(t time.Time, loc *time.Location, res Resolution) (start, end time.Time) {
	lt := t.In(loc)
	if res == Day {
		y, m, d := lt.Date()
		start = time.Date(y, m, d, 0, 0, 0, 0, loc)
		end = time.Date(y, m, d+1, 0, 0, 0, 0, loc)
		// A zone whose clocks jump at midnight has no 00:00 on that day; time.Date then
		// picks an instant of its choosing. Keep the invariant start ≤ t < end.
		if start.After(t) {
			start = lt
		}
		if !end.After(t) {
			end = lt.Add(time.Nanosecond)
		}
		return start, end
	}
	width := time.Minute
	if res == Hour {
		width = time.Hour
	}
	_, off := lt.Zone()
	r := (t.UnixNano() + int64(off)*int64(time.Second)) % int64(width)
	if r < 0 {
		r += int64(width)
	}
	start = lt.Add(-time.Duration(r))
	return start, start.Add(width)
}

// Spread calls f for each bucket of res that [start, end) overlaps, in time order, with
// the bucket's bounds (on loc) and the length of the overlap. When end ≤ start it calls f
// once, for the bucket of start, with a zero overlap.
func Spread(start, end time.Time, loc *time.Location, res Resolution, f func(bs, be time.Time, overlap time.Duration)) {
	if !end.After(start) {
		bs, be := Bucket(start, loc, res)
		f(bs, be, 0)
		return
	}
	for cur := start; cur.Before(end); {
		bs, be := Bucket(cur, loc, res)
		e := be
		if end.Before(e) {
			e = end
		}
		f(bs, be, e.Sub(cur))
		cur = e
	}
}

// Part returns the share of value v that falls in an overlap of a sample of length total.
func Part(v float64, overlap, total time.Duration) float64 {
	if overlap >= total {
		return v // the whole sample, exactly
	}
	return v * float64(overlap) / float64(total)
}

// LastInstant is where a daily-shape sample (a device's summary of a day or a night) is
// placed: its last instant, so that a night from 23:00 to 07:00 counts on the day it ends
// and a day summary from 00:00 to 24:00 on that day.
func LastInstant(s *pulsebase.Sample) time.Time {
	if s.End.After(s.Start) {
		return s.End.Add(-time.Nanosecond)
	}
	return s.Start
}

// compareSamples is the canonical order every function sorts its input into, so that
// results, floating-point sums included, do not depend on the order of the input. Samples
// equal in every compared field are interchangeable for this package.
func compareSamples(a, b *pulsebase.Sample) int {
	if c := a.Start.Compare(b.Start); c != 0 {
		return c
	}
	if c := a.End.Compare(b.End); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Type, b.Type); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Source, b.Source); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Value, b.Value); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Level, b.Level); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Zone, b.Zone); c != 0 {
		return c
	}
	_, ao := a.Start.Zone()
	_, bo := b.Start.Zone()
	if c := cmp.Compare(ao, bo); c != 0 {
		return c
	}
	return cmp.Compare(a.ID, b.ID)
}

// sorted returns pointers to the samples for which keep is true (all when keep is nil), in
// canonical order. The input is not modified.
func sorted(samples []pulsebase.Sample, keep func(*pulsebase.Sample) bool) []*pulsebase.Sample {
	out := make([]*pulsebase.Sample, 0, len(samples))
	for i := range samples {
		if keep == nil || keep(&samples[i]) {
			out = append(out, &samples[i])
		}
	}
	slices.SortFunc(out, compareSamples)
	return out
}

// levelName returns the name of the level of a categorical sample: the level whose index
// is Value (the canonical form), else Level when Value is no valid index.
func levelName(t *pulsebase.SampleType, s *pulsebase.Sample) (string, bool) {
	if i, ok := LevelIndex(t, s); ok {
		return t.Levels[i], true
	}
	return "", false
}

// LevelIndex is the level index of a categorical sample: its value when that is a valid
// index, else the index of its level name; false when neither names a level of t.
func LevelIndex(t *pulsebase.SampleType, s *pulsebase.Sample) (int, bool) {
	i := int(s.Value)
	if float64(i) == s.Value && i >= 0 && i < len(t.Levels) {
		return i, true
	}
	if s.Level != "" {
		if i := slices.Index(t.Levels, s.Level); i >= 0 {
			return i, true
		}
	}
	return 0, false
}

// later reports whether a reading (start, end, v) is later than (start2, end2, v2) in the
// order that picks Last: later start, then later end, then larger value.
func later(start, end time.Time, v float64, start2, end2 time.Time, v2 float64) bool {
	if c := start.Compare(start2); c != 0 {
		return c > 0
	}
	if c := end.Compare(end2); c != 0 {
		return c > 0
	}
	return v > v2
}
