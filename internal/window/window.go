// Package window holds one user's live series buckets in memory for the stream processor
// (issue [3]): for each sample type, 1-minute, 1-hour and local-day buckets within a live
// horizon, plus the identities of the samples already applied, so that samples applied one
// at a time, in any order, duplicated or redelivered, end with exactly the points
// agg.Buckets computes over the distinct samples.
//
// The bucket rules are agg's (see its package documentation); this package only makes them
// incremental. Count, Min, Max, Minutes and Last are exact whatever the arrival order (Last
// keeps the start and end of the sample it came from, so the agg tie-break — latest start,
// then latest end, then larger part — is applied whatever came first); Sum and Mean differ
// from agg's canonical-order sums in the last bits only.
//
// A State is not safe for concurrent use: the processor owns one per user on one
// partition. Only the stream processor and its tests should import this package; it
// imports the domain package, internal/agg, internal/binread and the standard library.
//
// # What the caller does around a State
//
//   - Apply every sample of the user in stream order with its keyed identity (client id, or
//     the DOMAIN.md hash), and as now the delivery's own timestamp (the broker's), not the
//     wall clock, so that a replay decides the same. Persist every returned Change: a full
//     Change replaces the stored bucket, a Delta Change is merged into it with Merge. Guard
//     both with the stream position: a bucket ignores writes at or before the last
//     position it took. Without the guard a replay after a crash re-sends a full Change
//     that overwrites Deltas merged after it (the property test catches exactly that).
//   - On ErrBackfill the sample touches only buckets that left memory: dedupe it against the
//     store and merge Deltas(sample) into the stored buckets.
//   - Call Expire periodically; the buckets it drops were already persisted through their
//     Changes. Checkpoint with Encode together with the stream position, and on restart
//     Decode and redeliver from that position.
package window

import (
	"errors"
	"hash/fnv"
	"slices"
	"sync"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/agg"
)

// DefaultHorizon is the live horizon of NewState(0).
const DefaultHorizon = 7 * 24 * time.Hour

// Errors of Apply.
var (
	// ErrBackfill reports a sample all of whose buckets are older than the live horizon:
	// it was not applied nor remembered, and belongs to the backfill path (see Deltas).
	ErrBackfill = errors.New("window: sample older than the live horizon")
	// ErrUnknownType reports a sample of a type pulsebase.LookupType does not know.
	ErrUnknownType = errors.New("window: unknown sample type")
)

var resolutions = [3]agg.Resolution{agg.Minute, agg.Hour, agg.Day}

// Change is one bucket a sample changed, for the change feed and the store.
type Change struct {
	Type string
	Res  agg.Resolution
	// Start is Point.Start. Minute and hour buckets are identified by its instant; a day
	// bucket by Date, because its Start moves to an earlier midnight when a sample of the
	// same local date arrives from a zone further east.
	Start time.Time
	// Date is the local date ("2006-01-02") of a day bucket; "" otherwise.
	Date  string
	Point agg.Point
	// LastStart and LastEnd are the start and end of the sample whose part is Point.Last:
	// the store keeps them so that Merge can apply agg's tie-break.
	LastStart, LastEnd time.Time
	// Delta reports that Point is only this sample's contribution to a bucket that is not
	// (any longer) in memory: merge it into the stored bucket instead of replacing it.
	Delta bool
}

// Option configures a State.
type Option func(*State)

// WithMinuteHorizon keeps minute buckets in memory only for d (hour and day buckets and
// sample ids stay for the whole horizon); contributions to older minute buckets come back
// as Delta Changes. A week of minute buckets for five types is ~34,000 buckets, megabytes
// per user: 2 h is the proposed production value. d ≥ horizon means no split (the default).
func WithMinuteHorizon(d time.Duration) Option { return func(s *State) { s.minuteHorizon = d } }

// State is one user's in-memory windows: for each sample type, 1-minute, 1-hour and
// local-day buckets within the live horizon, plus the set of sample ids already applied
// (for exactly-once counting).
type State struct {
	horizon       time.Duration
	minuteHorizon time.Duration
	watermark     int64 // the latest now seen, unix nanoseconds; cutoffs derive from it

	// ids maps the 64-bit FNV-1a fingerprint of each applied id to the end of the last
	// bucket its sample touched (unix ns): once that is past the horizon every redelivery
	// is ErrBackfill, so the id can go.
	ids    map[uint64]int64
	series map[string]*series
	// noIDs reports that the caller deduplicates (ForgetIDs): Apply neither checks nor
	// keeps ids.
	noIDs bool
}

type series struct {
	typ     *pulsebase.SampleType
	buckets [3]map[int64]*acc // by resolution; key: start (unix ns), or the civil day number
}

// acc is one bucket. Times are unix nanoseconds.
type acc struct {
	start, end          int64
	off                 int32 // offset of Start, seconds east of UTC
	levels              uint8 // categorical: bit i set when level i touched the bucket
	count               int64
	sum, min, max, last float64
	lastStart, lastEnd  int64
	minutes             []float64 // categorical: minutes per level index
}

// NewState returns an empty State with the given live horizon; 0 means DefaultHorizon.
func NewState(horizon time.Duration, opts ...Option) *State {
	if horizon <= 0 {
		horizon = DefaultHorizon
	}
	s := &State{horizon: horizon, minuteHorizon: horizon, ids: make(map[uint64]int64), series: make(map[string]*series)}
	for _, o := range opts {
		o(s)
	}
	if s.minuteHorizon <= 0 || s.minuteHorizon > horizon {
		s.minuteHorizon = horizon
	}
	return s
}

// Fingerprint is the 64-bit identity State keeps of an id (FNV-1a). With n ids in memory a
// new distinct id is wrongly taken for a duplicate with probability n/2⁶⁴ (≈ 1e-15 for the
// 20,000 ids of a week of minute data).
func Fingerprint(id string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(id))
	return h.Sum64()
}

func (s *State) advance(now time.Time) {
	if n := now.UnixNano(); n > s.watermark {
		s.watermark = n
	}
}

// cutoff is the end at or before which a bucket of res is out of memory.
func (s *State) cutoff(res agg.Resolution) int64 {
	if res == agg.Minute {
		return s.watermark - int64(s.minuteHorizon)
	}
	return s.watermark - int64(s.horizon)
}

// Apply adds a sample, already validated and normalized; id is its keyed identity (client
// id or DOMAIN.md hash). It returns applied=false, with no error, when id was already
// applied (a re-send or redelivery), and ErrBackfill when every bucket of the sample is
// older than the horizon. Otherwise it returns the buckets the sample changed, at every
// resolution, in time order per resolution. now is the processor's clock; the horizon
// never moves back.
func (s *State) Apply(smp pulsebase.Sample, id string, now time.Time) (changes []Change, applied bool, err error) {
	t, ok := pulsebase.LookupType(smp.Type)
	if !ok {
		return nil, false, ErrUnknownType
	}
	s.advance(now)
	fp := Fingerprint(id)
	if _, dup := s.ids[fp]; dup && !s.noIDs {
		return nil, false, nil
	}
	loc := agg.Location(smp)
	last := agg.LastInstant(&smp)
	_, hourEnd := agg.Bucket(last, loc, agg.Hour)
	_, dayEnd := agg.Bucket(last, loc, agg.Day)
	keep := max(hourEnd.UnixNano(), dayEnd.UnixNano())
	if keep <= s.cutoff(agg.Day) {
		return nil, false, ErrBackfill
	}
	if !s.noIDs {
		s.ids[fp] = keep
	}
	sr := s.series[t.Name]
	if sr == nil {
		sr = &series{typ: t}
		for i := range sr.buckets {
			sr.buckets[i] = make(map[int64]*acc)
		}
		s.series[t.Name] = sr
	}
	for i, res := range resolutions {
		cut := s.cutoff(res)
		visit(t, &smp, loc, res, func(bs, be time.Time, v float64, overlap time.Duration, level int) {
			k := key(bs, res)
			a := sr.buckets[i][k]
			delta := false
			if a == nil {
				a = newAcc(bs, be, t)
				if memoryEnd(res, bs, be) <= cut {
					delta = true
				} else {
					sr.buckets[i][k] = a
				}
			} else {
				a.widen(bs, be, res)
			}
			a.add(t, &smp, v, overlap, level)
			c := a.change(t, res)
			c.Delta = delta
			changes = append(changes, c)
		})
	}
	return changes, true, nil
}

// Deltas returns the contributions of smp to its buckets at every resolution, as Delta
// Changes: what the backfill path merges into the stored buckets.
func Deltas(smp pulsebase.Sample) []Change {
	t, ok := pulsebase.LookupType(smp.Type)
	if !ok {
		return nil
	}
	loc := agg.Location(smp)
	var out []Change
	for _, res := range resolutions {
		visit(t, &smp, loc, res, func(bs, be time.Time, v float64, overlap time.Duration, level int) {
			a := newAcc(bs, be, t)
			a.add(t, &smp, v, overlap, level)
			c := a.change(t, res)
			c.Delta = true
			out = append(out, c)
		})
	}
	return out
}

// Merge merges the Delta d into dst, the stored state of the same bucket (same Type, Res
// and Start instant, or Date for days); a zero dst takes d. The result is what agg computes
// over the samples of both.
func Merge(dst *Change, d Change) {
	if dst.Point.Count == 0 {
		*dst = d
		dst.Point.Minutes = maps(d.Point.Minutes)
		dst.Delta = false
		return
	}
	p, q := &dst.Point, &d.Point
	if dst.Res == agg.Day {
		if q.Start.Before(p.Start) {
			p.Start, dst.Start = q.Start, q.Start
		}
	} else {
		_, qo := q.Start.Zone()
		if _, po := p.Start.Zone(); qo > po {
			p.Start, dst.Start = q.Start, q.Start
		}
	}
	if q.Minutes != nil || p.Minutes != nil {
		if p.Minutes == nil {
			p.Minutes = make(map[string]float64)
		}
		for l, m := range q.Minutes {
			p.Minutes[l] += m
		}
		p.Count += q.Count
		return
	}
	p.Min, p.Max = min(p.Min, q.Min), max(p.Max, q.Max)
	if later(d.LastStart.UnixNano(), d.LastEnd.UnixNano(), q.Last, dst.LastStart.UnixNano(), dst.LastEnd.UnixNano(), p.Last) {
		p.Last, dst.LastStart, dst.LastEnd = q.Last, d.LastStart, d.LastEnd
	}
	p.Count += q.Count
	p.Sum += q.Sum
	p.Mean = p.Sum / float64(p.Count)
}

func maps(m map[string]float64) map[string]float64 {
	if m == nil {
		return nil
	}
	out := make(map[string]float64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Point returns the bucket of typ at res that starts at start (for a day: any instant of
// the local date start shows), if it is in memory.
func (s *State) Point(typ string, res agg.Resolution, start time.Time) (agg.Point, bool) {
	sr := s.series[typ]
	if sr == nil || res < agg.Minute || res > agg.Day {
		return agg.Point{}, false
	}
	a := sr.buckets[res-1][key(start, res)]
	if a == nil {
		return agg.Point{}, false
	}
	return a.point(sr.typ), true
}

// Points returns the in-memory buckets of typ at res whose Start is in [from, to), sorted
// like agg.Buckets.
func (s *State) Points(typ string, res agg.Resolution, from, to time.Time) []agg.Point {
	sr := s.series[typ]
	if sr == nil || res < agg.Minute || res > agg.Day {
		return nil
	}
	f, e := from.UnixNano(), to.UnixNano()
	type kp struct {
		k int64
		a *acc
	}
	var list []kp
	for k, a := range sr.buckets[res-1] {
		if a.start >= f && a.start < e {
			list = append(list, kp{k, a})
		}
	}
	slices.SortFunc(list, func(x, y kp) int {
		if x.a.start != y.a.start {
			return compare(x.a.start, y.a.start)
		}
		return compare(x.k, y.k)
	})
	out := make([]agg.Point, len(list))
	for i, x := range list {
		out[i] = x.a.point(sr.typ)
	}
	return out
}

func compare(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Expire drops the buckets that ended before the horizon (minute buckets: the minute
// horizon) and the ids whose samples can no longer touch a bucket in memory. The caller
// has persisted them through their Changes already.
func (s *State) Expire(now time.Time) {
	s.advance(now)
	for fp, keep := range s.ids {
		if keep <= s.cutoff(agg.Day) {
			delete(s.ids, fp)
		}
	}
	for name, sr := range s.series {
		n := 0
		for i, res := range resolutions {
			cut := s.cutoff(res)
			for k, a := range sr.buckets[i] {
				if a.end <= cut {
					delete(sr.buckets[i], k)
				}
			}
			n += len(sr.buckets[i])
		}
		if n == 0 {
			delete(s.series, name)
		}
	}
}

// ForgetIDs drops the ids the State keeps and stops keeping them: the caller then
// guarantees that Apply sees each id once (the stream processor checks its per-day
// fingerprint sets first). A week of a watch's data is ~30,000 ids, 95 % of the encoded
// State; without them the State is its buckets.
func (s *State) ForgetIDs() {
	s.noIDs = true
	s.ids = map[uint64]int64{} // a new map: clear would keep the old one's memory
}

// Len returns the number of buckets and of ids in memory.
func (s *State) Len() (buckets, ids int) {
	for _, sr := range s.series {
		for _, m := range sr.buckets {
			buckets += len(m)
		}
	}
	return buckets, len(s.ids)
}

// earliestZone is the zone in which a date ends first.
var earliestZone = time.FixedZone("UTC+14", 14*3600)

// memoryEnd is the end that decides whether a new bucket is kept in memory or its
// contribution merged into the stored bucket. A day bucket is one local date whatever the
// zone of its samples (agg keys days by date), so it goes to memory only while the date
// has not ended anywhere yet: its end at UTC+14. Then all of a date's samples near the
// horizon go the same way, and a bucket never starts empty in memory, to be written over
// a stored one that holds samples of another zone on the same date.
func memoryEnd(res agg.Resolution, bs, be time.Time) int64 {
	if res != agg.Day {
		return be.UnixNano()
	}
	y, m, d := bs.Date()
	return time.Date(y, m, d+1, 0, 0, 0, 0, earliestZone).UnixNano()
}

// key identifies a bucket: its start instant, or for a day the civil day number of its
// local date (agg keys day buckets by date).
func key(bs time.Time, res agg.Resolution) int64 {
	if res == agg.Day {
		y, m, d := bs.Date()
		return time.Date(y, m, d, 0, 0, 0, 0, time.UTC).Unix() / 86400
	}
	return bs.UnixNano()
}

func newAcc(bs, be time.Time, t *pulsebase.SampleType) *acc {
	_, off := bs.Zone()
	a := &acc{start: bs.UnixNano(), end: be.UnixNano(), off: int32(off)}
	if t.Shape == pulsebase.ShapeCategorical {
		a.minutes = make([]float64, len(t.Levels))
	}
	return a
}

// widen records that a sample saw the bucket as starting at bs: a day bucket starts at
// the earliest midnight of its date, a minute or hour bucket shows the largest offset.
func (a *acc) widen(bs, be time.Time, res agg.Resolution) {
	_, off := bs.Zone()
	if res == agg.Day {
		if n := bs.UnixNano(); n < a.start {
			a.start, a.off = n, int32(off)
		}
		a.end = max(a.end, be.UnixNano())
	} else if int32(off) > a.off {
		a.off = int32(off)
	}
}

// add adds the part v (or, for a categorical type, overlap minutes of level) of smp.
func (a *acc) add(t *pulsebase.SampleType, smp *pulsebase.Sample, v float64, overlap time.Duration, level int) {
	if t.Shape == pulsebase.ShapeCategorical {
		a.count++
		a.levels |= 1 << level
		a.minutes[level] += overlap.Minutes()
		return
	}
	ss, se := smp.Start.UnixNano(), smp.End.UnixNano()
	if a.count == 0 || v < a.min {
		a.min = v
	}
	if a.count == 0 || v > a.max {
		a.max = v
	}
	if a.count == 0 || later(ss, se, v, a.lastStart, a.lastEnd, a.last) {
		a.last, a.lastStart, a.lastEnd = v, ss, se
	}
	a.count++
	a.sum += v
}

func later(start, end int64, v float64, start2, end2 int64, v2 float64) bool {
	if start != start2 {
		return start > start2
	}
	if end != end2 {
		return end > end2
	}
	return v > v2
}

func (a *acc) point(t *pulsebase.SampleType) agg.Point {
	p := agg.Point{Start: time.Unix(0, a.start).In(fixedZone(int(a.off))), Count: a.count}
	if a.minutes != nil {
		p.Minutes = make(map[string]float64, 2)
		for i, m := range a.minutes {
			if a.levels&(1<<i) != 0 {
				p.Minutes[t.Levels[i]] = m
			}
		}
		return p
	}
	p.Sum, p.Min, p.Max, p.Last = a.sum, a.min, a.max, a.last
	if a.count > 0 {
		p.Mean = a.sum / float64(a.count)
	}
	return p
}

func (a *acc) change(t *pulsebase.SampleType, res agg.Resolution) Change {
	p := a.point(t)
	c := Change{Type: t.Name, Res: res, Start: p.Start, Point: p}
	if res == agg.Day {
		c.Date = p.Start.Format(agg.DateLayout)
	}
	if a.minutes == nil {
		c.LastStart, c.LastEnd = time.Unix(0, a.lastStart), time.Unix(0, a.lastEnd)
	}
	return c
}

// visit calls f for each bucket of res that smp touches, with the bucket's bounds, the
// part of the value that falls in it, the overlap and (categorical) the level index —
// exactly agg.Buckets' placement and arithmetic.
func visit(t *pulsebase.SampleType, smp *pulsebase.Sample, loc *time.Location, res agg.Resolution,
	f func(bs, be time.Time, v float64, overlap time.Duration, level int)) {
	switch t.Shape {
	case pulsebase.ShapeCategorical:
		level, ok := agg.LevelIndex(t, smp)
		if !ok {
			return
		}
		agg.Spread(smp.Start, smp.End, loc, res, func(bs, be time.Time, overlap time.Duration) {
			f(bs, be, 0, overlap, level)
		})
	case pulsebase.ShapeInterval:
		total := smp.End.Sub(smp.Start)
		agg.Spread(smp.Start, smp.End, loc, res, func(bs, be time.Time, overlap time.Duration) {
			f(bs, be, agg.Part(smp.Value, overlap, total), overlap, 0)
		})
	case pulsebase.ShapeDaily:
		bs, be := agg.Bucket(agg.LastInstant(smp), loc, res)
		f(bs, be, smp.Value, 0, 0)
	default:
		bs, be := agg.Bucket(smp.Start, loc, res)
		f(bs, be, smp.Value, 0, 0)
	}
}

var fixedZones sync.Map // int → *time.Location

func fixedZone(offset int) *time.Location {
	if loc, ok := fixedZones.Load(offset); ok {
		return loc.(*time.Location)
	}
	loc, _ := fixedZones.LoadOrStore(offset, time.FixedZone("", offset))
	return loc.(*time.Location)
}
