package window

import (
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
)

// week is a typical user's live horizon as a watch sends it, in -06:00: heart rate, steps
// and activity intensity every minute, sleep stages in 30-minute blocks from 23:00 to
// 07:00, and a nightly hrv_rmssd — five types, about 31,000 samples.
func week() []pulsebase.Sample {
	loc := time.FixedZone("", -6*3600)
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, loc)
	var ss []pulsebase.Sample
	for m := range 7 * 24 * 60 {
		t := start.Add(time.Duration(m) * time.Minute)
		awake := t.Hour() >= 7 && t.Hour() < 23
		steps, lvl := 0.0, 0
		if awake && m%7 == 0 {
			steps, lvl = float64(60+m%80), 1+m%3
		}
		ss = append(ss,
			pulsebase.Sample{Type: "heart_rate", Value: float64(55 + m%13), Unit: "/min", Start: t, End: t, Source: "watch"},
			pulsebase.Sample{Type: "steps", Value: steps, Unit: "{steps}", Start: t, End: t.Add(time.Minute), Source: "watch"},
			pulsebase.Sample{Type: "activity_intensity", Value: float64(lvl), Unit: "level", Start: t, End: t.Add(time.Minute), Source: "watch"})
		if !awake && t.Minute()%30 == 0 {
			ss = append(ss, pulsebase.Sample{Type: "sleep_stage", Value: float64(2 + (m/30)%3), Unit: "stage",
				Start: t, End: t.Add(30 * time.Minute), Source: "watch"})
		}
		if t.Hour() == 7 && t.Minute() == 0 {
			ss = append(ss, pulsebase.Sample{Type: "hrv_rmssd", Value: 48, Unit: "ms",
				Start: t.Add(-8 * time.Hour), End: t, Source: "watch"})
		}
	}
	for i := range ss {
		ss[i].ID = "watch-" + strconv.Itoa(i)
	}
	return ss
}

// fill applies a week and expires as the processor would at its end.
func fill(ss []pulsebase.Sample, opts ...Option) *State {
	st := NewState(0, opts...)
	now := ss[len(ss)-1].End.Add(time.Minute)
	for _, s := range ss {
		st.Apply(s, s.ID, s.End.Add(time.Minute))
	}
	st.Expire(now)
	return st
}

func BenchmarkApply(b *testing.B) {
	ss := week()
	b.ReportAllocs()
	st := NewState(0)
	i := 0
	for b.Loop() {
		if i == len(ss) {
			st, i = NewState(0), 0
		}
		s := ss[i]
		st.Apply(s, s.ID, s.End)
		i++
	}
}

// BenchmarkBytesPerUser reports the heap and checkpoint size of one user's State after a
// week of the data above, without and with the 2-hour minute horizon, and without ids.
func BenchmarkBytesPerUser(b *testing.B) {
	ss := week()
	for _, c := range []struct {
		name   string
		opts   []Option
		forget bool
	}{{"all-minutes", nil, false}, {"minutes-2h", []Option{WithMinuteHorizon(2 * time.Hour)}, false},
		// As the processor runs it: ids live in per-day sets, not in the State.
		{"minutes-2h-no-ids", []Option{WithMinuteHorizon(2 * time.Hour)}, true}} {
		b.Run(c.name, func(b *testing.B) {
			var heap, enc float64
			var buckets, ids int
			for b.Loop() {
				var m0, m1 runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&m0)
				st := fill(ss, c.opts...)
				if c.forget {
					st.ForgetIDs()
				}
				runtime.GC()
				runtime.ReadMemStats(&m1)
				heap = float64(m1.HeapAlloc) - float64(m0.HeapAlloc)
				enc = float64(len(st.Encode()))
				buckets, ids = st.Len()
				runtime.KeepAlive(st)
			}
			b.ReportMetric(heap, "heap-B/user")
			b.ReportMetric(enc, "checkpoint-B/user")
			b.ReportMetric(float64(buckets), "buckets")
			b.ReportMetric(float64(ids), "ids")
		})
	}
}
