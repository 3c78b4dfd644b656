package recommend

import (
	"math/rand/v2"
	"testing"

	"github.com/pulsebase/pulsebase"
)

// benchInputs returns a realistic user at 15:20: today and the 28 days before with every
// daily metric the starter library reads, baselines computed as the processor does, a
// pacing curve, live minute features and a profile.
func benchInputs() Inputs {
	now := clock(15, 20)
	rng := rand.New(rand.NewPCG(7, 7))
	ds := series(now, HistoryDays+1, func(back int) map[string]float64 {
		m := map[string]float64{
			"steps":              float64(6000 + rng.IntN(7000)),
			"active_minutes":     float64(15 + rng.IntN(40)),
			"sedentary_minutes":  float64(400 + rng.IntN(200)),
			"resting_heart_rate": 54 + rng.Float64()*4,
			"hrv_rmssd":          45 + rng.Float64()*20,
			"sleep_minutes":      float64(380 + rng.IntN(100)),
			"sleep_efficiency":   0.85 + rng.Float64()*0.1,
			"sleep_midpoint":     float64(150 + rng.IntN(120)),
			"water":              float64(rng.IntN(2500)),
		}
		if back == 0 {
			m["steps"], m["water"] = 3100, 600
			delete(m, "active_minutes")
		}
		return m
	}).withBaselines()
	return Inputs{Now: now, Days: ds, Pacing: pacing(now, 14),
		Hour:    map[string]float64{"steps": 120, "sedentary_minutes": 18, "active_minutes": 2, "minutes": 21},
		Recent:  map[string]float64{"steps": 0, "heart_rate_minutes": 10, "heart_rate_min": 84},
		Profile: map[string]any{"goals": map[string]any{"steps": int64(9000)}, "enabled_nudges": []string{}},
	}
}

func BenchmarkEvaluate(b *testing.B) {
	lib := starter()
	s := BuildState(benchInputs())
	trigger := Trigger{Metrics: []string{"steps", "heart_rate", "resting_heart_rate", "hrv_rmssd", "sleep_minutes",
		"active_minutes", "activity_intensity"}}
	all := func(pulsebase.Category) bool { return true }
	ran := 0
	for _, r := range lib.Rules {
		if r.Runs(trigger) {
			ran++
		}
	}
	var cs []Candidate
	b.ReportAllocs()
	for b.Loop() {
		var errs []RuleError
		cs, errs = lib.Evaluate(s, trigger, all)
		if len(errs) > 0 {
			b.Fatal(errs)
		}
	}
	b.ReportMetric(float64(ran), "rules/op")
	b.ReportMetric(float64(len(cs)), "candidates/op")
}

func BenchmarkBuildState(b *testing.B) {
	in := benchInputs()
	b.ReportAllocs()
	for b.Loop() {
		BuildState(in)
	}
}

// BenchmarkUserUpdate is what one user update costs the processor in rules, as it runs
// them: "live" is a commit of steps and heart rate (move_break, breathing, streak run)
// with the day part of the state built at an earlier commit; "daily" one that recomputed
// the user's days, so the day part is built again and eight rules run.
func BenchmarkUserUpdate(b *testing.B) {
	lib := starter()
	in := benchInputs()
	all := func(pulsebase.Category) bool { return true }
	live := Trigger{Metrics: []string{"steps", "heart_rate", "activity_intensity"}}
	daily := Trigger{Metrics: []string{"steps", "heart_rate", "resting_heart_rate", "hrv_rmssd", "sleep_minutes", "active_minutes", "activity_intensity"}}
	b.Run("live", func(b *testing.B) {
		dp := NewDayPart(in)
		b.ReportAllocs()
		for b.Loop() {
			if _, errs := lib.Evaluate(dp.State(in), live, all); len(errs) > 0 {
				b.Fatal(errs)
			}
		}
	})
	b.Run("daily", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, errs := lib.Evaluate(NewDayPart(in).State(in), daily, all); len(errs) > 0 {
				b.Fatal(errs)
			}
		}
	})
}
