package agg

import (
	"cmp"
	"slices"
	"time"

	"github.com/pulsebase/pulsebase"
)

// Point is one bucket of a series (API.md "Reading derived data").
type Point struct {
	// Start is the start of the bucket on the local clock, with its UTC offset: local
	// hh:mm:00, hh:00:00 or midnight. When samples with different clocks share a minute or
	// hour bucket, Start shows the largest of their offsets; a day bucket is the local
	// date of its samples and starts at the earliest of their midnights.
	Start time.Time
	// Count is the number of samples that touch the bucket; a sample spread over several
	// buckets counts once in each.
	Count int64
	// Sum, Min, Max, Mean and Last are over the parts of the samples that fall in the
	// bucket, in the type's canonical unit; Mean is Sum/Count. Last is the part of the
	// sample with the latest start (ties: latest end, then larger part). All are zero for
	// categorical types.
	Sum, Min, Max, Mean, Last float64
	// Minutes is, for a categorical type, the minutes each level covers in the bucket
	// (fractional when a sample covers part of a minute); nil for numeric types.
	Minutes map[string]float64
}

type pointAcc struct {
	p                  Point
	date               string    // day buckets: the local date
	offset             int       // minute and hour buckets: the largest offset seen
	lastStart, lastEnd time.Time // of the sample whose part is Last
}

// Buckets returns the series of type typ at resolution res: one Point per bucket that at
// least one sample of type typ touches, sorted by Start. Samples of other types are
// ignored, as is an unknown typ (nil). The package documentation states the rules; in
// short, instant samples count in the bucket of their start, interval samples are spread
// in proportion to their overlap with each bucket, categorical samples add minutes per
// level, and buckets are aligned on each sample's own local clock.
func Buckets(samples []pulsebase.Sample, typ string, res Resolution) []Point {
	t, ok := pulsebase.LookupType(typ)
	if !ok || res < Minute || res > Day {
		return nil
	}
	ss := sorted(samples, func(s *pulsebase.Sample) bool { return s.Type == typ })
	type key struct {
		at   int64 // minute and hour buckets: unix nanoseconds of the start
		date string
	}
	accs := make(map[key]*pointAcc)
	get := func(bs time.Time, loc *time.Location) *pointAcc {
		var k key
		if res == Day {
			k.date = bs.Format(DateLayout)
		} else {
			k.at = bs.UnixNano()
		}
		_, off := bs.Zone()
		a := accs[k]
		if a == nil {
			a = &pointAcc{date: k.date, offset: off}
			a.p.Start = bs.In(fixedZone(off))
			accs[k] = a
			return a
		}
		if res == Day {
			// Same date on two clocks: the bucket starts at the earlier midnight. Equal
			// instants of the same wall-clock time have the same offset.
			if bs.Before(a.p.Start) {
				a.p.Start = bs.In(fixedZone(off))
			}
		} else if off > a.offset {
			a.offset = off
			a.p.Start = a.p.Start.In(fixedZone(off))
		}
		return a
	}
	for _, s := range ss {
		loc := location(s)
		switch t.Shape {
		case pulsebase.ShapeCategorical:
			level, ok := levelName(t, s)
			if !ok {
				continue
			}
			Spread(s.Start, s.End, loc, res, func(bs, _ time.Time, overlap time.Duration) {
				a := get(bs, loc)
				if a.p.Minutes == nil {
					a.p.Minutes = make(map[string]float64)
				}
				a.p.Count++
				a.p.Minutes[level] += overlap.Minutes()
			})
		case pulsebase.ShapeInterval:
			total := s.End.Sub(s.Start)
			Spread(s.Start, s.End, loc, res, func(bs, _ time.Time, overlap time.Duration) {
				get(bs, loc).add(Part(s.Value, overlap, total), s)
			})
		case pulsebase.ShapeDaily:
			bs, _ := Bucket(LastInstant(s), loc, res)
			get(bs, loc).add(s.Value, s)
		default: // instant
			bs, _ := Bucket(s.Start, loc, res)
			get(bs, loc).add(s.Value, s)
		}
	}
	out := make([]Point, 0, len(accs))
	list := make([]*pointAcc, 0, len(accs))
	for _, a := range accs {
		list = append(list, a)
	}
	slices.SortFunc(list, func(a, b *pointAcc) int {
		if c := a.p.Start.Compare(b.p.Start); c != 0 {
			return c
		}
		return cmp.Compare(a.date, b.date)
	})
	for _, a := range list {
		if a.p.Minutes == nil && a.p.Count > 0 {
			a.p.Mean = a.p.Sum / float64(a.p.Count)
		}
		out = append(out, a.p)
	}
	return out
}

// add adds the part v of sample s to the bucket.
func (a *pointAcc) add(v float64, s *pulsebase.Sample) {
	p := &a.p
	if p.Count == 0 || v < p.Min {
		p.Min = v
	}
	if p.Count == 0 || v > p.Max {
		p.Max = v
	}
	if p.Count == 0 || later(s.Start, s.End, v, a.lastStart, a.lastEnd, p.Last) {
		p.Last, a.lastStart, a.lastEnd = v, s.Start, s.End
	}
	p.Count++
	p.Sum += v
}
