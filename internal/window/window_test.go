package window

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/agg"
)

// clocks are the offsets and zones random samples carry: whole and half hours both sides
// of UTC, and zones that enter daylight saving time inside the generated span.
var clocks = []struct {
	offset int
	zone   string
}{
	{-6 * 3600, ""}, {-5 * 3600, ""}, {0, ""}, {3600, ""}, {5*3600 + 1800, ""}, {9 * 3600, ""},
	{0, "America/Chicago"}, {0, "Asia/Kolkata"}, {0, "Europe/Paris"},
}

var base = time.Date(2026, 3, 6, 0, 0, 0, 0, time.UTC)

// randomSamples returns n valid samples of every type over 4 days from 2026-03-06 (across
// the start of daylight saving time in Chicago), from three sources, each with an id.
func randomSamples(r *rand.Rand, n int) []pulsebase.Sample {
	types := pulsebase.SampleTypes()
	out := make([]pulsebase.Sample, 0, n)
	for i := range n {
		t := types[r.IntN(len(types))]
		c := clocks[r.IntN(len(clocks))]
		start := base.Add(time.Duration(r.IntN(4*24*60)) * time.Minute)
		if r.IntN(4) == 0 {
			start = start.Add(time.Duration(r.IntN(60)) * time.Second)
		}
		s := pulsebase.Sample{ID: "s" + strconv.Itoa(i), Type: t.Name, Unit: t.Unit, Source: string(rune('a' + r.IntN(3))), Zone: c.zone}
		s.Start = start.In(time.FixedZone("", c.offset))
		var length time.Duration
		switch t.Shape {
		case pulsebase.ShapeInterval:
			length = time.Duration(r.IntN(180)) * time.Minute
			if r.IntN(4) == 0 {
				length = time.Duration(r.IntN(3*3600)) * time.Second
			}
		case pulsebase.ShapeCategorical:
			length = time.Duration(1+r.IntN(90)) * time.Minute
		case pulsebase.ShapeDaily:
			if r.IntN(2) == 0 {
				length = 8 * time.Hour
			}
		}
		s.End = s.Start.Add(length)
		switch {
		case t.Levels != nil:
			l := r.IntN(len(t.Levels))
			s.Value, s.Level = float64(l), t.Levels[l]
		case t.MaxPerSecond > 0:
			s.Value = math.Floor(r.Float64() * math.Min(t.Max, t.MaxPerSecond*length.Seconds()))
		default:
			s.Value = t.Min + math.Round(r.Float64()*(t.Max-t.Min)*10)/10
		}
		out = append(out, s)
	}
	return out
}

// store is what the processor persists. Every write carries the stream position of the
// delivery that caused it, and a bucket ignores writes at or before the last position it
// took: a replay after a crash then changes nothing until it passes the crash point. Full
// Changes replace the bucket, Deltas merge into it; the backfill path dedupes against every
// id counted (the ingest record of sample identities).
type store struct {
	buckets map[string]*Change
	seq     map[string]int
	counted map[string]bool
}

func newStore() *store {
	return &store{buckets: map[string]*Change{}, seq: map[string]int{}, counted: map[string]bool{}}
}

func bucketKey(c Change) string {
	if c.Res == agg.Day {
		return fmt.Sprint(c.Type, c.Res, c.Date)
	}
	return fmt.Sprint(c.Type, c.Res, c.Start.UnixNano())
}

func (st *store) persist(seq int, id string, cs []Change) {
	for _, c := range cs {
		k := bucketKey(c)
		if last, ok := st.seq[k]; ok && seq <= last {
			continue
		}
		st.seq[k] = seq
		if !c.Delta {
			cc := c
			st.buckets[k] = &cc
			continue
		}
		if st.buckets[k] == nil {
			st.buckets[k] = &Change{}
		}
		Merge(st.buckets[k], c)
	}
	st.counted[id] = true
}

func (st *store) backfill(seq int, s pulsebase.Sample, id string) {
	if st.counted[id] {
		return
	}
	st.persist(seq, id, Deltas(s))
}

func (st *store) points(typ string, res agg.Resolution) []agg.Point {
	var cs []*Change
	for _, c := range st.buckets {
		if c.Type == typ && c.Res == res {
			cs = append(cs, c)
		}
	}
	slices.SortFunc(cs, func(a, b *Change) int {
		if c := a.Start.Compare(b.Start); c != 0 {
			return c
		}
		return compareStr(a.Date, b.Date)
	})
	out := make([]agg.Point, len(cs))
	for i, c := range cs {
		out[i] = c.Point
	}
	return out
}

func compareStr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func near(a, b float64) bool {
	return a == b || math.Abs(a-b) <= 1e-9*math.Max(math.Abs(a), math.Abs(b))
}

// samePoints reports where got and want differ: starts (instant and offset) and counts
// exactly, sums with relative tolerance 1e-9, Min, Max, Last exactly (they pick a part,
// computed by the same arithmetic), minutes with the tolerance (fractional minutes are
// summed in another order).
func samePoints(got, want []agg.Point) error {
	if len(got) != len(want) {
		return fmt.Errorf("got %d points, want %d", len(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Start.Format(time.RFC3339Nano) != w.Start.Format(time.RFC3339Nano) || !g.Start.Equal(w.Start) ||
			g.Count != w.Count || !near(g.Sum, w.Sum) || g.Min != w.Min || g.Max != w.Max ||
			!near(g.Mean, w.Mean) || g.Last != w.Last || len(g.Minutes) != len(w.Minutes) || (g.Minutes == nil) != (w.Minutes == nil) {
			return fmt.Errorf("point %d: got %+v, want %+v", i, g, w)
		}
		for l, m := range w.Minutes {
			if gm, ok := g.Minutes[l]; !ok || !near(gm, m) {
				return fmt.Errorf("point %d minutes: got %v, want %v", i, g.Minutes, w.Minutes)
			}
		}
	}
	return nil
}

var everything = [2]time.Time{time.Date(1990, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)}

// deliveries is a stream of the samples: each sent one to three times, shuffled.
func deliveries(r *rand.Rand, ss []pulsebase.Sample) []pulsebase.Sample {
	var out []pulsebase.Sample
	for _, s := range ss {
		for range 1 + r.IntN(3) {
			out = append(out, s)
		}
	}
	r.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// TestPropertyInMemory: with everything inside the horizon, any duplication, any order,
// and a crash (restore from a checkpoint, redeliver from there) end with agg.Buckets over
// the distinct samples, read from the State and from the persisted Changes alike.
func TestPropertyInMemory(t *testing.T) {
	for seed := range uint64(30) {
		r := rand.New(rand.NewPCG(seed, 7))
		ss := randomSamples(r, 300)
		stream := deliveries(r, ss)
		now := base.Add(5 * 24 * time.Hour)
		st, db := NewState(30*24*time.Hour), newStore()
		checkpointAt, crashAt := r.IntN(len(stream)), 0
		crashAt = checkpointAt + r.IntN(len(stream)-checkpointAt)
		var checkpoint []byte
		for i := 0; i < len(stream); i++ {
			if i == checkpointAt && checkpoint == nil {
				checkpoint = st.Encode()
			}
			if i == crashAt && checkpoint != nil && crashAt > 0 {
				var err error
				if st, err = Decode(checkpoint); err != nil {
					t.Fatal(err)
				}
				i, crashAt = checkpointAt, -1 // redeliver from the checkpoint, once
			}
			s := stream[i]
			cs, applied, err := st.Apply(s, s.ID, now)
			if err != nil {
				t.Fatalf("seed %d: Apply: %v", seed, err)
			}
			if applied {
				db.persist(i, s.ID, cs)
			} else if cs != nil {
				t.Fatalf("seed %d: a duplicate returned %d changes", seed, len(cs))
			}
		}
		for _, typ := range pulsebase.SampleTypes() {
			for _, res := range []agg.Resolution{agg.Minute, agg.Hour, agg.Day} {
				want := agg.Buckets(ss, typ.Name, res)
				if err := samePoints(st.Points(typ.Name, res, everything[0], everything[1]), want); err != nil {
					t.Fatalf("seed %d %s %v state: %v", seed, typ.Name, res, err)
				}
				if err := samePoints(db.points(typ.Name, res), want); err != nil {
					t.Fatalf("seed %d %s %v store: %v", seed, typ.Name, res, err)
				}
				for _, p := range want {
					if got, ok := st.Point(typ.Name, res, p.Start); !ok || samePoints([]agg.Point{got}, []agg.Point{p}) != nil {
						t.Fatalf("seed %d %s %v Point(%v): got %+v %v, want %+v", seed, typ.Name, res, p.Start, got, ok, p)
					}
				}
			}
		}
		// A checkpoint of the final state reads back identical.
		b := st.Encode()
		st2, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(st2.Encode(), b) {
			t.Fatalf("seed %d: Encode(Decode(b)) != b", seed)
		}
	}
}

// TestPropertyHorizon: samples arrive roughly in time order with up to 6 h of lateness,
// duplicated, with stragglers days late and a crash; the clock advances, Expire runs,
// minute buckets older than 2 h leave memory. What the processor persisted — full
// Changes, merged Deltas, and the backfill path for ErrBackfill — equals agg.Buckets over
// the distinct samples.
func TestPropertyHorizon(t *testing.T) {
	for seed := range uint64(30) {
		r := rand.New(rand.NewPCG(seed, 11))
		ss := randomSamples(r, 400)
		stream := deliveries(r, ss)
		// Arrival time: the sample's start plus a lateness; a few arrive days late.
		arrival := func(s pulsebase.Sample, k int) time.Time {
			h := uint64(k)*2654435761 + uint64(len(s.ID))
			late := time.Duration(h%360) * time.Minute
			if h%17 == 0 {
				late = time.Duration(1+h%3) * 24 * time.Hour
			}
			return s.End.Add(late)
		}
		arr := make([]time.Time, len(stream))
		for k, s := range stream {
			arr[k] = arrival(s, k)
		}
		idx := make([]int, len(stream))
		for k := range idx {
			idx[k] = k
		}
		slices.SortStableFunc(idx, func(a, b int) int { return arr[a].Compare(arr[b]) })

		st, db := NewState(24*time.Hour, WithMinuteHorizon(2*time.Hour)), newStore()
		checkpointAt := r.IntN(len(idx))
		crashAt := checkpointAt + r.IntN(len(idx)-checkpointAt)
		var checkpoint []byte
		backfills, deltas := 0, 0
		for i := 0; i < len(idx); i++ {
			if i == checkpointAt && checkpoint == nil {
				checkpoint = st.Encode()
			}
			if i == crashAt && checkpoint != nil {
				var err error
				if st, err = Decode(checkpoint); err != nil {
					t.Fatal(err)
				}
				i, crashAt = checkpointAt, -1
			}
			s, now := stream[idx[i]], arr[idx[i]]
			if i%40 == 0 {
				st.Expire(now)
			}
			cs, applied, err := st.Apply(s, s.ID, now)
			switch {
			case errors.Is(err, ErrBackfill):
				backfills++
				db.backfill(i, s, s.ID)
			case err != nil:
				t.Fatal(err)
			case applied:
				for _, c := range cs {
					if c.Delta {
						deltas++
					}
				}
				db.persist(i, s.ID, cs)
			}
		}
		if seed == 0 && (backfills == 0 || deltas == 0) {
			t.Errorf("seed 0: %d backfills, %d deltas: the test does not exercise them", backfills, deltas)
		}
		for _, typ := range pulsebase.SampleTypes() {
			for _, res := range []agg.Resolution{agg.Minute, agg.Hour, agg.Day} {
				if err := samePoints(db.points(typ.Name, res), agg.Buckets(ss, typ.Name, res)); err != nil {
					t.Fatalf("seed %d %s %v: %v", seed, typ.Name, res, err)
				}
			}
		}
	}
}

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func permutations(n int) [][]int {
	if n == 1 {
		return [][]int{{0}}
	}
	var out [][]int
	for _, p := range permutations(n - 1) {
		for i := 0; i <= len(p); i++ {
			q := append(append(append([]int{}, p[:i]...), n-1), p[i:]...)
			out = append(out, q)
		}
	}
	return out
}

// applyAll applies ss in the order perm and returns the state.
func applyAll(t *testing.T, ss []pulsebase.Sample, perm []int, now time.Time) *State {
	t.Helper()
	st := NewState(0)
	for _, i := range perm {
		if _, applied, err := st.Apply(ss[i], ss[i].ID, now); err != nil || !applied {
			t.Fatalf("Apply %s: applied %v, err %v", ss[i].ID, applied, err)
		}
	}
	return st
}

func TestLastTieBreaks(t *testing.T) {
	hr := func(id, start string, v float64) pulsebase.Sample {
		return pulsebase.Sample{ID: id, Type: "heart_rate", Value: v, Start: at(start), End: at(start), Source: "w"}
	}
	steps := func(id, start, end string, v float64) pulsebase.Sample {
		return pulsebase.Sample{ID: id, Type: "steps", Value: v, Start: at(start), End: at(end), Source: "w"}
	}
	now := at("2026-03-02T00:00:00Z")
	tests := []struct {
		name     string
		ss       []pulsebase.Sample
		res      agg.Resolution
		wantLast float64
	}{
		{"latest start wins", []pulsebase.Sample{hr("a", "2026-03-01T10:00:10Z", 90), hr("b", "2026-03-01T10:00:20Z", 60), hr("c", "2026-03-01T10:00:00Z", 120)}, agg.Minute, 60},
		{"same start: larger value", []pulsebase.Sample{hr("a", "2026-03-01T10:00:10Z", 90), hr("b", "2026-03-01T10:00:10Z", 60), hr("c", "2026-03-01T10:00:10Z", 75)}, agg.Minute, 90},
		{"same start: latest end before larger value", []pulsebase.Sample{
			steps("a", "2026-03-01T10:00:00Z", "2026-03-01T10:10:00Z", 900),
			steps("b", "2026-03-01T10:00:00Z", "2026-03-01T10:30:00Z", 30),
			steps("c", "2026-03-01T09:59:00Z", "2026-03-01T10:00:00Z", 300)}, agg.Hour, 30},
		{"a part, not the whole value", []pulsebase.Sample{
			steps("a", "2026-03-01T10:30:00Z", "2026-03-01T11:30:00Z", 600),
			steps("b", "2026-03-01T10:00:00Z", "2026-03-01T10:05:00Z", 50)}, agg.Hour, 300},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := agg.Buckets(tt.ss, tt.ss[0].Type, tt.res)
			if want[len(want)-1].Last != tt.wantLast {
				t.Fatalf("agg Last %g, want %g: the table is wrong", want[len(want)-1].Last, tt.wantLast)
			}
			for _, perm := range permutations(len(tt.ss)) {
				st := applyAll(t, tt.ss, perm, now)
				got := st.Points(tt.ss[0].Type, tt.res, everything[0], everything[1])
				if err := samePoints(got, want); err != nil {
					t.Errorf("order %v: %v", perm, err)
				}
			}
		})
	}
}

func TestZones(t *testing.T) {
	kolkata, _ := pulsebase.LoadZone("Asia/Kolkata")
	chicago, _ := pulsebase.LoadZone("America/Chicago")
	hr := func(id string, start time.Time, zone string) pulsebase.Sample {
		return pulsebase.Sample{ID: id, Type: "heart_rate", Value: 60, Start: start, End: start, Source: "w", Zone: zone}
	}
	now := at("2026-03-10T00:00:00Z")
	tests := []struct {
		name      string
		ss        []pulsebase.Sample
		res       agg.Resolution
		wantStart []string
	}{
		{"+05:30 hours start at 04:30Z", []pulsebase.Sample{hr("a", at("2026-03-05T05:10:00Z").In(kolkata), "Asia/Kolkata")}, agg.Hour,
			[]string{"2026-03-05T10:00:00+05:30"}},
		{"a flight from -05:00 to +01:00: each keeps its own day", []pulsebase.Sample{
			hr("a", at("2026-03-05T22:00:00-05:00"), ""), // 03:00Z on the 6th, the 5th in -05:00
			hr("b", at("2026-03-06T04:00:00+01:00"), ""), // 03:00Z too, the 6th in +01:00
		}, agg.Day, []string{"2026-03-05T00:00:00-05:00", "2026-03-06T00:00:00+01:00"}},
		{"one date on two clocks: the earlier midnight", []pulsebase.Sample{
			hr("a", at("2026-03-06T20:00:00-06:00"), ""),
			hr("b", at("2026-03-06T09:00:00+09:00"), ""),
		}, agg.Day, []string{"2026-03-06T00:00:00+09:00"}},
		{"one minute on two clocks: the larger offset", []pulsebase.Sample{
			hr("a", at("2026-03-06T10:00:05Z"), ""),
			hr("b", at("2026-03-06T11:00:30+01:00"), ""),
		}, agg.Minute, []string{"2026-03-06T11:00:00+01:00"}},
		{"Chicago enters DST: a 23-hour day", []pulsebase.Sample{
			hr("a", time.Date(2026, 3, 8, 0, 30, 0, 0, chicago), "America/Chicago"),
			hr("b", time.Date(2026, 3, 8, 23, 30, 0, 0, chicago), "America/Chicago"),
		}, agg.Day, []string{"2026-03-08T00:00:00-06:00"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := agg.Buckets(tt.ss, "heart_rate", tt.res)
			for _, perm := range permutations(len(tt.ss)) {
				got := applyAll(t, tt.ss, perm, now).Points("heart_rate", tt.res, everything[0], everything[1])
				if err := samePoints(got, want); err != nil {
					t.Fatalf("order %v: %v", perm, err)
				}
				var starts []string
				for _, p := range got {
					starts = append(starts, p.Start.Format(time.RFC3339))
				}
				if !slices.Equal(starts, tt.wantStart) {
					t.Errorf("order %v: got starts %v, want %v", perm, starts, tt.wantStart)
				}
			}
		})
	}
}

func TestHorizon(t *testing.T) {
	hr := func(id, start string) pulsebase.Sample {
		return pulsebase.Sample{ID: id, Type: "heart_rate", Value: 60, Start: at(start), End: at(start), Source: "w"}
	}
	st := NewState(24 * time.Hour)
	now := at("2026-03-05T12:00:00Z")

	// Inside the horizon: applied once, then a duplicate.
	a := hr("a", "2026-03-05T01:00:00Z")
	if cs, applied, err := st.Apply(a, "a", now); err != nil || !applied || len(cs) != 3 {
		t.Fatalf("first Apply: got %d changes, applied %v, err %v; want 3, true, nil", len(cs), applied, err)
	}
	if cs, applied, err := st.Apply(a, "a", now); err != nil || applied || cs != nil {
		t.Fatalf("re-send: got %v, applied %v, err %v; want nil, false, nil", cs, applied, err)
	}

	// The day of 2026-03-03 ended 36 h before now: backfill, nothing kept.
	old := hr("old", "2026-03-03T10:00:00Z")
	if cs, applied, err := st.Apply(old, "old", now); !errors.Is(err, ErrBackfill) || applied || cs != nil {
		t.Fatalf("old sample: got %v, applied %v, err %v; want nil, false, ErrBackfill", cs, applied, err)
	}
	if b, ids := st.Len(); b != 3 || ids != 1 {
		t.Fatalf("after backfill: got %d buckets %d ids, want 3 and 1", b, ids)
	}
	// A sample whose day is still live (UTC day 2026-03-04 ends 12 h before... not yet
	// past the 24 h horizon) is applied although it is 20 h old.
	if _, applied, err := st.Apply(hr("y", "2026-03-04T16:00:00Z"), "y", now); err != nil || !applied {
		t.Fatalf("20 h old sample in a live day: applied %v, err %v", applied, err)
	}

	// Two days later everything is past the horizon: Expire drops buckets and ids, and a
	// redelivery of "a" goes to the backfill path instead of counting twice in memory.
	later := now.Add(48 * time.Hour)
	st.Expire(later)
	if b, ids := st.Len(); b != 0 || ids != 0 {
		t.Fatalf("after Expire: got %d buckets %d ids, want 0 and 0", b, ids)
	}
	if _, ok := st.Point("heart_rate", agg.Minute, at("2026-03-05T01:00:00Z")); ok {
		t.Errorf("Point after Expire: found, want gone")
	}
	if _, applied, err := st.Apply(a, "a", later); !errors.Is(err, ErrBackfill) || applied {
		t.Errorf("redelivery after expiry: applied %v, err %v; want false, ErrBackfill", applied, err)
	}
	// The clock never goes back: an earlier now does not revive the horizon.
	if _, _, err := st.Apply(hr("b", "2026-03-05T02:00:00Z"), "b", now); !errors.Is(err, ErrBackfill) {
		t.Errorf("earlier now: err %v, want ErrBackfill", err)
	}
	if _, _, err := st.Apply(pulsebase.Sample{Type: "nope"}, "x", later); !errors.Is(err, ErrUnknownType) {
		t.Errorf("unknown type: err %v, want ErrUnknownType", err)
	}
}

func TestMinuteHorizon(t *testing.T) {
	st := NewState(7*24*time.Hour, WithMinuteHorizon(2*time.Hour))
	now := at("2026-03-05T12:00:00Z")
	s := pulsebase.Sample{ID: "a", Type: "steps", Value: 100, Start: at("2026-03-05T09:00:00Z"), End: at("2026-03-05T09:02:00Z"), Source: "w"}
	cs, applied, err := st.Apply(s, "a", now)
	if err != nil || !applied {
		t.Fatal(applied, err)
	}
	var got []string
	for _, c := range cs {
		got = append(got, fmt.Sprintf("%v %s %v %g", c.Res, c.Start.Format("15:04"), c.Delta, c.Point.Sum))
	}
	want := []string{"1m 09:00 true 50", "1m 09:01 true 50", "1h 09:00 false 100", "1d 00:00 false 100"}
	if !slices.Equal(got, want) {
		t.Errorf("got changes %q, want %q", got, want)
	}
	if b, _ := st.Len(); b != 2 {
		t.Errorf("got %d buckets in memory, want 2 (hour and day)", b)
	}
}

func TestDecodeCorrupt(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	st := NewState(0)
	for _, s := range randomSamples(r, 50) {
		st.Apply(s, s.ID, base.Add(5*24*time.Hour))
	}
	b := st.Encode()
	// Every short prefix, then a few hundred at random: each must fail, none may panic.
	cuts := []int{}
	for n := range min(len(b), 64) {
		cuts = append(cuts, n)
	}
	for range 300 {
		cuts = append(cuts, r.IntN(len(b)))
	}
	for _, n := range cuts {
		if _, err := Decode(b[:n]); err == nil {
			t.Fatalf("Decode of %d of %d bytes: no error", n, len(b))
		}
	}
	if _, err := Decode(append(b, 0)); err == nil {
		t.Errorf("Decode with a trailing byte: no error")
	}
	bad := slices.Clone(b)
	bad[0] = 9
	if _, err := Decode(bad); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Decode of version 9: err %v, want ErrCorrupt", err)
	}
}

func FuzzDecode(f *testing.F) {
	r := rand.New(rand.NewPCG(3, 4))
	st := NewState(0)
	for _, s := range randomSamples(r, 20) {
		st.Apply(s, s.ID, base.Add(5*24*time.Hour))
	}
	f.Add(st.Encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := Decode(b)
		if err != nil {
			return
		}
		if _, err := Decode(st.Encode()); err != nil {
			t.Fatalf("re-encoded state does not decode: %v", err)
		}
	})
}

func TestForgetIDsLeavesDedupeToTheCaller(t *testing.T) {
	at := time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC)
	s := pulsebase.Sample{Type: "heart_rate", Value: 60, Unit: "/min", Start: at, End: at, Source: "w"}
	st := NewState(0)
	if _, applied, _ := st.Apply(s, "x", at); !applied {
		t.Fatal("first apply")
	}
	if _, applied, _ := st.Apply(s, "x", at); applied {
		t.Fatal("a State with ids applied an id twice")
	}
	st.ForgetIDs()
	if _, ids := st.Len(); ids != 0 {
		t.Errorf("ForgetIDs kept %d ids", ids)
	}
	if _, applied, _ := st.Apply(s, "x", at); !applied {
		t.Error("after ForgetIDs the State still deduplicates")
	}
	if p, _ := st.Point("heart_rate", agg.Minute, at); p.Count != 2 {
		t.Errorf("count %d, want 2 (dedupe is the caller's)", p.Count)
	}
	if _, ids := st.Len(); ids != 0 {
		t.Errorf("Apply after ForgetIDs kept %d ids", ids)
	}
}

// TestDayAtTheHorizonAcrossZones: a day bucket is a local date whatever the zone, so when
// the horizon falls inside a date — ended in one zone, not yet in another — every sample
// of that date near the horizon merges into the stored bucket (a Delta). A bucket made in
// memory from the later zone's sample alone would be written over the stored one, which
// holds the earlier zone's sample, and lose it.
func TestDayAtTheHorizonAcrossZones(t *testing.T) {
	st := NewState(7 * 24 * time.Hour)
	now := at("2026-11-29T20:00:00Z") // the horizon: 2026-11-22T20:00Z
	india := pulsebase.Sample{ID: "in", Type: "steps", Value: 255, Start: at("2026-11-22T12:00:00Z"), End: at("2026-11-22T12:05:00Z"),
		Source: "phone", Zone: "Asia/Kolkata"} // 2026-11-22 ends at 18:30Z there, before the horizon
	if _, _, err := st.Apply(india, india.ID, now); !errors.Is(err, ErrBackfill) {
		t.Fatalf("the sample whose date ended: %v, want ErrBackfill", err)
	}
	utc := pulsebase.Sample{ID: "utc", Type: "steps", Value: 80, Start: at("2026-11-22T21:00:00Z"), End: at("2026-11-22T21:05:00Z"),
		Source: "phone", Zone: "UTC"} // 2026-11-22 ends at midnight UTC, after the horizon
	changes, applied, err := st.Apply(utc, utc.ID, now)
	if err != nil || !applied {
		t.Fatalf("the sample whose date goes on: applied %v, %v", applied, err)
	}
	days := 0
	for _, c := range changes {
		if c.Res == agg.Day {
			days++
			if !c.Delta {
				t.Errorf("the day bucket of %s is kept in memory; it must merge into the stored one", c.Date)
			}
		} else if c.Res == agg.Hour && c.Delta {
			t.Errorf("the hour bucket %v ends after the horizon and belongs in memory", c.Start)
		}
	}
	if days != 1 {
		t.Fatalf("%d day changes, want 1", days)
	}
}
