package agg

import (
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
)

// clocks are the offsets and zones random samples are sent with: whole and half hours,
// both sides of UTC, and zones that change to daylight saving time in the span generated.
var clocks = []struct {
	offset int // seconds east of UTC
	zone   string
}{
	{-6 * 3600, ""}, {-5 * 3600, ""}, {0, ""}, {3600, ""}, {5*3600 + 1800, ""}, {9 * 3600, ""},
	{0, "America/Chicago"}, {0, "Asia/Kolkata"}, {0, "Europe/Paris"},
}

// randomSamples returns n valid samples of one user, of every type, from 2026-03-06 to
// 2026-03-10 (across the start of daylight saving time in Chicago), from three sources.
func randomSamples(r *rand.Rand, n int) []pulsebase.Sample {
	base := time.Date(2026, 3, 6, 0, 0, 0, 0, time.UTC)
	types := pulsebase.SampleTypes()
	out := make([]pulsebase.Sample, 0, n)
	for range n {
		t := types[r.IntN(len(types))]
		c := clocks[r.IntN(len(clocks))]
		// Mostly whole minutes, sometimes any second, so that both exact and partial
		// overlaps occur.
		start := base.Add(time.Duration(r.IntN(4*24*60)) * time.Minute)
		if r.IntN(4) == 0 {
			start = start.Add(time.Duration(r.IntN(60)) * time.Second)
		}
		s := pulsebase.Sample{Type: t.Name, Unit: t.Unit, Source: string(rune('a' + r.IntN(3))), Zone: c.zone}
		s.Start = start.In(fixedZone(c.offset))
		s.End = s.Start
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
			i := r.IntN(len(t.Levels))
			s.Value, s.Level = float64(i), t.Levels[i]
		case t.MaxPerSecond > 0:
			s.Value = math.Floor(r.Float64() * math.Min(t.Max, t.MaxPerSecond*length.Seconds()))
		case t.Name == "mindful_session":
			s.Value = math.Round(length.Minutes()*r.Float64()*100) / 100
		default:
			s.Value = t.Min + math.Round(r.Float64()*(t.Max-t.Min)*10)/10
		}
		out = append(out, s)
	}
	return out
}

var resolutions = []Resolution{Minute, Hour, Day}

// TestPermutationInvariance: the output never depends on the order of the input, bit for
// bit, floating-point sums included.
func TestPermutationInvariance(t *testing.T) {
	for seed := range uint64(20) {
		r := rand.New(rand.NewPCG(seed, 2))
		ss := randomSamples(r, 400)
		daily := DailyMetrics(ss)
		sessions := Sessions(ss)
		series := map[string][]Point{}
		for _, typ := range pulsebase.SampleTypes() {
			for _, res := range resolutions {
				series[typ.Name+res.String()] = Buckets(ss, typ.Name, res)
			}
		}
		for perm := range 3 {
			shuffled := append([]pulsebase.Sample(nil), ss...)
			r.Shuffle(len(shuffled), reflect.Swapper(shuffled))
			if got := DailyMetrics(shuffled); !reflect.DeepEqual(got, daily) {
				t.Fatalf("seed %d permutation %d: DailyMetrics differs:\n got %v\nwant %v", seed, perm, got, daily)
			}
			if got := Sessions(shuffled); !reflect.DeepEqual(got, sessions) {
				t.Fatalf("seed %d permutation %d: Sessions differs", seed, perm)
			}
			for _, typ := range pulsebase.SampleTypes() {
				for _, res := range resolutions {
					if got := Buckets(shuffled, typ.Name, res); !reflect.DeepEqual(got, series[typ.Name+res.String()]) {
						t.Fatalf("seed %d permutation %d: Buckets(%s, %s) differs:\n got %v\nwant %v",
							seed, perm, typ.Name, res, toPts(got), toPts(series[typ.Name+res.String()]))
					}
				}
			}
		}
	}
}

// TestTotalsAgree: every resolution holds the same total: the sum of the values for
// numeric types (spreading loses nothing), the number of readings for instant types, the
// minutes covered for categorical types.
func TestTotalsAgree(t *testing.T) {
	for seed := range uint64(30) {
		ss := randomSamples(rand.New(rand.NewPCG(seed, 3)), 500)
		for _, typ := range pulsebase.SampleTypes() {
			var want, wantCount float64
			for _, s := range ss {
				if s.Type != typ.Name {
					continue
				}
				wantCount++
				if typ.Levels != nil {
					want += s.End.Sub(s.Start).Minutes()
				} else {
					want += s.Value
				}
			}
			for _, res := range resolutions {
				var sum, count float64
				for _, p := range Buckets(ss, typ.Name, res) {
					sum += p.Sum
					count += float64(p.Count)
					for _, m := range p.Minutes {
						sum += m
					}
					if p.Minutes == nil && (p.Min > p.Max || p.Mean < p.Min-1e-9 || p.Mean > p.Max+1e-9 || p.Last < p.Min || p.Last > p.Max) {
						t.Errorf("seed %d %s %s: inconsistent point %v", seed, typ.Name, res, toPts([]Point{p}))
					}
				}
				if !near(sum, want) {
					t.Errorf("seed %d %s at %s: total %v, want %v", seed, typ.Name, res, sum, want)
				}
				// A sample counts once in each bucket it touches: exactly once per
				// sample for instants, at least once for intervals.
				if typ.Shape == pulsebase.ShapeInstant || typ.Shape == pulsebase.ShapeDaily {
					if count != wantCount {
						t.Errorf("seed %d %s at %s: count %v, want %v", seed, typ.Name, res, count, wantCount)
					}
				} else if count < wantCount {
					t.Errorf("seed %d %s at %s: count %v, want ≥ %v", seed, typ.Name, res, count, wantCount)
				}
			}
		}
	}
}

// TestDailyMatchesSeries: the daily sums, last and mean are the day series, exactly (both
// add in the same canonical order); daily steps never exceed the series' steps of all
// sources, and equal them when there is one source.
func TestDailyMatchesSeries(t *testing.T) {
	for seed := range uint64(30) {
		ss := randomSamples(rand.New(rand.NewPCG(seed, 4)), 500)
		days := DailyMetrics(ss)
		byDate := func(typ string) map[string]Point {
			m := map[string]Point{}
			for _, p := range Buckets(ss, typ, Day) {
				m[p.Start.Format(DateLayout)] = p
			}
			return m
		}
		check := func(name string, series map[string]Point, got func(Daily) *float64, want func(Point) float64) {
			for _, d := range days {
				p, ok := series[d.Date]
				g := got(d)
				switch {
				case ok != (g != nil):
					t.Errorf("seed %d %s on %s: got %s, series has a point: %v", seed, name, d.Date, str(g), ok)
				case ok && *g != want(p):
					t.Errorf("seed %d %s on %s: got %v, want %v", seed, name, d.Date, *g, want(p))
				}
			}
			for date := range series {
				if dayOf(days, date).Date == "" || got(dayOf(days, date)) == nil {
					t.Errorf("seed %d %s on %s: absent from the daily metrics", seed, name, date)
				}
			}
		}
		sum := func(p Point) float64 { return p.Sum }
		check("ActiveEnergy", byDate("active_energy"), func(d Daily) *float64 { return d.ActiveEnergy }, sum)
		check("Distance", byDate("distance"), func(d Daily) *float64 { return d.Distance }, sum)
		check("Water", byDate("water"), func(d Daily) *float64 { return d.Water }, sum)
		check("Weight", byDate("body_weight"), func(d Daily) *float64 { return d.Weight }, func(p Point) float64 { return p.Last })
		check("Mood", byDate("mood"), func(d Daily) *float64 { return d.Mood }, func(p Point) float64 { return p.Mean })

		steps := byDate("steps")
		for _, d := range days {
			if d.Steps != nil && *d.Steps > steps[d.Date].Sum*(1+1e-9) {
				t.Errorf("seed %d on %s: Steps %v exceed the steps of all sources %v", seed, d.Date, *d.Steps, steps[d.Date].Sum)
			}
			if d.SedentaryMinutes != nil && *d.SedentaryMinutes < SedentaryBoutMinutes**d.SedentaryBouts {
				t.Errorf("seed %d on %s: %d bouts in %d minutes", seed, d.Date, *d.SedentaryBouts, *d.SedentaryMinutes)
			}
		}
		var one []pulsebase.Sample
		for _, s := range ss {
			if s.Type == "steps" && s.Source == "a" {
				one = append(one, s)
			}
		}
		single := byDateOf(one, "steps")
		for _, d := range DailyMetrics(one) {
			if d.Steps == nil || !near(*d.Steps, single[d.Date].Sum) {
				t.Errorf("seed %d one source on %s: Steps %s, want %v", seed, d.Date, str(d.Steps), single[d.Date].Sum)
			}
		}

		// Sleep: the day's minutes are the rounded sum of its sessions', which never overlap.
		asleep := map[string]time.Duration{}
		sessions := Sessions(ss)
		for i, s := range sessions {
			asleep[s.Date] += s.Asleep
			if i > 0 && s.Start.Before(sessions[i-1].End) {
				t.Errorf("seed %d: sessions %d and %d overlap", seed, i-1, i)
			}
		}
		for date, a := range asleep {
			checkInt(t, fmt.Sprintf("seed %d SleepMinutes on %s", seed, date), dayOf(days, date).SleepMinutes, roundMinutes(a))
		}
	}
}

func byDateOf(ss []pulsebase.Sample, typ string) map[string]Point {
	m := map[string]Point{}
	for _, p := range Buckets(ss, typ, Day) {
		m[p.Start.Format(DateLayout)] = p
	}
	return m
}
