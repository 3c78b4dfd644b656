package agg

import (
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
)

// monthOfMinutes is 30 days of one user's minute data as a watch sends it: steps,
// intensity and heart rate every minute, and a night of 30-minute sleep stages from 23:00
// to 07:00. About 130,000 samples.
func monthOfMinutes() []pulsebase.Sample {
	loc := fixedZone(-6 * 3600)
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, loc)
	stages := []string{"light", "deep", "light", "rem"}
	var ss []pulsebase.Sample
	for m := range 30 * 24 * 60 {
		t := start.Add(time.Duration(m) * time.Minute)
		hour := t.Hour()
		awake := hour >= 7 && hour < 23
		steps, lvl := 0.0, 0
		if awake && m%7 == 0 {
			steps, lvl = float64(60+m%80), 1+m%3
		}
		ss = append(ss,
			pulsebase.Sample{Type: "steps", Value: steps, Unit: "{steps}", Start: t, End: t.Add(time.Minute), Source: "watch"},
			pulsebase.Sample{Type: "activity_intensity", Value: float64(lvl), Unit: "level", Start: t, End: t.Add(time.Minute), Source: "watch"},
			pulsebase.Sample{Type: "heart_rate", Value: float64(55 + m%13), Unit: "/min", Start: t, End: t, Source: "watch"},
		)
		if !awake && t.Minute()%30 == 0 {
			st, _ := pulsebase.LookupType("sleep_stage")
			name := stages[(m/30)%len(stages)]
			v := 0.0
			for i, l := range st.Levels {
				if l == name {
					v = float64(i)
				}
			}
			ss = append(ss, pulsebase.Sample{Type: "sleep_stage", Value: v, Level: name, Unit: "stage",
				Start: t, End: t.Add(30 * time.Minute), Source: "watch"})
		}
	}
	return ss
}

func BenchmarkDailyMetrics30Days(b *testing.B) {
	ss := monthOfMinutes()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if days := DailyMetrics(ss); len(days) != 30 {
			b.Fatalf("got %d days, want 30", len(days))
		}
	}
	b.ReportMetric(float64(len(ss)), "samples/op")
}

func BenchmarkBucketsHour30Days(b *testing.B) {
	ss := monthOfMinutes()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		Buckets(ss, "heart_rate", Hour)
	}
}
