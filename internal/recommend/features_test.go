package recommend

import (
	"math"
	"slices"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/agg"
)

func TestPacingFold(t *testing.T) {
	t.Parallel()
	// morning: every step before noon; evening: every step from 18:00.
	var morning, evening, few [24]float64
	for h := 6; h < 12; h++ {
		morning[h] = 1000
	}
	for h := 18; h < 24; h++ {
		evening[h] = 1000
	}
	few[10] = 999
	var p Pacing
	if !p.Fold("2026-11-01", morning) {
		t.Fatal("first day not folded")
	}
	// The first day is the curve: 1/6 by the end of 06:00, all by noon.
	for h, want := range map[int]float64{5: 0, 6: 1.0 / 6, 8: 0.5, 11: 1, 23: 1} {
		if !near(p.Share[h], want) {
			t.Errorf("day 1: share by the end of hour %d = %v, want %v", h, p.Share[h], want)
		}
	}
	// The second day weighs half.
	if !p.Fold("2026-11-02", evening) {
		t.Fatal("second day not folded")
	}
	for h, want := range map[int]float64{6: 1.0 / 12, 11: 0.5, 18: 0.5 + 0.5/6, 23: 1} {
		if !near(p.Share[h], want) {
			t.Errorf("day 2: share by the end of hour %d = %v, want %v", h, p.Share[h], want)
		}
	}
	before := p
	for _, tc := range []struct {
		name   string
		date   string
		hourly [24]float64
	}{
		{"same date", "2026-11-02", morning},
		{"earlier date", "2026-10-30", morning},
		{"fewer than 1000 steps", "2026-11-03", few},
	} {
		if p.Fold(tc.date, tc.hourly) {
			t.Errorf("%s: folded", tc.name)
		}
		if p != before {
			t.Errorf("%s: curve changed to %+v", tc.name, p)
		}
	}
	if p.Days != 2 || p.Last != "2026-11-02" {
		t.Errorf("days %d, last %q; want 2, 2026-11-02", p.Days, p.Last)
	}
}

func TestPacingFoldBecomesEWMA(t *testing.T) {
	t.Parallel()
	var morning, evening [24]float64
	for h := 6; h < 12; h++ {
		morning[h] = 1000
	}
	for h := 18; h < 24; h++ {
		evening[h] = 1000
	}
	var p Pacing
	start := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	for i := range 20 {
		p.Fold(start.AddDate(0, 0, i).Format(time.DateOnly), morning)
	}
	p.Fold(start.AddDate(0, 0, 20).Format(time.DateOnly), evening)
	// After 20 days the weight is 2/15 (an EWMA over about two weeks), not 1/21.
	if want := 1 - 2.0/15; !near(p.Share[11], want) {
		t.Errorf("share by noon = %v, want %v", p.Share[11], want)
	}
}

func TestPacingExpected(t *testing.T) {
	t.Parallel()
	var p Pacing
	p.Share[0] = 0.02
	p.Share[13] = 0.4
	p.Share[14] = 0.6
	tests := []struct {
		hh, mm int
		want   float64
	}{
		{0, 0, 0},
		{0, 30, 0.01},
		{14, 0, 0.4},
		{14, 30, 0.5},
		{14, 45, 0.55},
	}
	for _, tc := range tests {
		if got := p.Expected(clock(tc.hh, tc.mm)); !near(got, tc.want) {
			t.Errorf("Expected(%02d:%02d) = %v, want %v", tc.hh, tc.mm, got, tc.want)
		}
	}
}

func TestSleepDebtWeights(t *testing.T) {
	t.Parallel()
	now := clock(20, 0)
	// nights gives back → minutes slept on the night ending that day.
	debt := func(nights map[int]float64) (float64, float64, bool) {
		f := BuildState(Inputs{Now: now, Days: series(now, 20, func(back int) map[string]float64 {
			if v, ok := nights[back]; ok {
				return map[string]float64{"sleep_minutes": v}
			}
			return nil
		})}).Features
		d, ok := f["sleep_debt_minutes"]
		return d, f["sleep_nights_14d"], ok
	}
	tests := []struct {
		name   string
		nights map[int]float64
		debt   float64
		n      float64
	}{
		// The night ending today weighs 2·14/15, the 14th night 2/15.
		{"last night 1 h short", map[int]float64{0: 420}, 60 * 28.0 / 15, 1},
		{"14th night 1 h short", map[int]float64{13: 420}, 60 * 2.0 / 15, 1},
		{"last night 1 h long", map[int]float64{0: 540}, -60 * 28.0 / 15, 1},
		{"two nights", map[int]float64{1: 480 - 30, 2: 480 - 90}, 30*26.0/15 + 90*24.0/15, 2},
		{"15th night does not count", map[int]float64{14: 0, 3: 480}, 0, 1},
		{"14 nights 1 h short", func() map[int]float64 {
			m := map[int]float64{}
			for i := range 14 {
				m[i] = 420
			}
			return m
		}(), 14 * 60, 14},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d, n, ok := debt(tc.nights)
			if !ok || !near(d, tc.debt) || n != tc.n {
				t.Errorf("debt %v over %v nights (present %v), want %v over %v", d, n, ok, tc.debt, tc.n)
			}
		})
	}
	if _, n, ok := debt(nil); ok || n != 0 {
		t.Errorf("no nights: debt present %v over %v nights, want absent over 0", ok, n)
	}
}

func TestSleepMidpoint(t *testing.T) {
	t.Parallel()
	now := clock(9, 0)
	feats := func(mids ...float64) map[string]float64 {
		return BuildState(Inputs{Now: now, Days: series(now, 10, func(back int) map[string]float64 {
			if back < len(mids) {
				return map[string]float64{"sleep_midpoint": mids[back]}
			}
			return nil
		})}).Features
	}
	tests := []struct {
		name       string
		mids       []float64
		mean, sd   float64
		hasSD      bool
		bedtime    float64
		nightCount float64
	}{
		// Sample SD (n − 1). Bedtime: mean − need/2 − 30 min.
		{"04:00 ± 1 h", []float64{180, 300, 180, 300, 240}, 240, math.Sqrt(4 * 3600.0 / 4), true, 240 - 240 - 30 + 1440, 5},
		{"one night", []float64{200}, 200, 0, false, 200 - 270 + 1440, 1},
		// Minutes after midnight, negative before it.
		{"around midnight", []float64{-10, 10, -20, 20}, 0, math.Sqrt((100 + 100 + 400 + 400) / 3.0), true, 1440 - 270, 4},
		{"before midnight", []float64{-30, -20}, -25, math.Sqrt(50), true, 1440 - 295, 2},
		// 20:25 after a sleep that ended before midnight, 20:50 after one that ended after.
		{"either side of the day's end", []float64{1225, -190}, 1237.5, math.Sqrt(312.5), true, 1237.5 - 270, 2},
		{"written as clock times", []float64{1430, 10, 1420, 20}, 1440, math.Sqrt((100 + 100 + 400 + 400) / 3.0), true, 1440 - 270, 4},
		{"around noon (a night worker)", []float64{700, 740}, 720, math.Sqrt(800), true, 450, 2},
		// Only the last 7 nights count.
		{"8 nights", []float64{240, 240, 240, 240, 240, 240, 240, 900}, 240, 0, true, 1410, 7},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := feats(tc.mids...)
			if f["sleep_midpoint_nights"] != tc.nightCount {
				t.Errorf("nights %v, want %v", f["sleep_midpoint_nights"], tc.nightCount)
			}
			if !near(f["sleep_midpoint_mean"], tc.mean) {
				t.Errorf("mean %v, want %v", f["sleep_midpoint_mean"], tc.mean)
			}
			sd, ok := f["sleep_midpoint_sd"]
			if ok != tc.hasSD || !near(sd, tc.sd) {
				t.Errorf("sd %v (present %v), want %v (present %v)", sd, ok, tc.sd, tc.hasSD)
			}
			if !sameClock(f["suggested_bedtime"], tc.bedtime) {
				t.Errorf("bedtime %v, want %v", f["suggested_bedtime"], tc.bedtime)
			}
		})
	}
	// No mid-points: bed 8 h 30 min before 07:00.
	if f := feats(); f["suggested_bedtime"] != 22*60+30 {
		t.Errorf("no nights: bedtime %v, want 22:30", f["suggested_bedtime"])
	}
}

// sameClock reports whether minutes of the day a and b are the same time (1440 is 0).
func sameClock(a, b float64) bool { return math.Abs(math.Remainder(a-b, 1440)) < 1e-9 }

func TestAcuteChronicLoad(t *testing.T) {
	t.Parallel()
	now := clock(9, 0)
	// loads gives back → active minutes (back ≥ 1: completed days).
	feats := func(loads map[int]float64) map[string]float64 {
		return BuildState(Inputs{Now: now, Days: series(now, 30, func(back int) map[string]float64 {
			if v, ok := loads[back]; ok {
				return map[string]float64{"active_minutes": v}
			}
			return nil
		})}).Features
	}
	// 30 on the oldest day then 60: acute 30 + 30·2/8, chronic 30 + 30·2/29.
	two := feats(map[int]float64{5: 30, 2: 60, 0: 500})
	if two["load_days"] != 2 || !near(two["load_acute"], 37.5) || !near(two["load_chronic"], 30+60.0/29) ||
		!near(two["acute_chronic_load"], 37.5/(30+60.0/29)) {
		t.Errorf("two days: got %v", two)
	}
	// The oldest day seeds both; three days fold in order, oldest first.
	three := feats(map[int]float64{28: 10, 27: 40, 1: 0})
	a := 10 + 0.25*(40-10.0)
	a += 0.25 * (0 - a)
	c := 10 + 2.0/29*(40-10)
	c += 2.0 / 29 * (0 - c)
	if three["load_days"] != 3 || !near(three["load_acute"], a) || !near(three["load_chronic"], c) {
		t.Errorf("three days: got acute %v chronic %v days %v, want %v %v 3", three["load_acute"], three["load_chronic"], three["load_days"], a, c)
	}
	// Day 29 back is outside the 28 days.
	if f := feats(map[int]float64{29: 100}); f["load_days"] != 0 {
		t.Errorf("29 days back: load days %v, want 0", f["load_days"])
	}
	if f := feats(map[int]float64{3: 0, 2: 0}); f["load_days"] != 2 {
		t.Errorf("zero load: got %v", f)
	} else if _, ok := f["acute_chronic_load"]; ok {
		t.Errorf("zero chronic load: ratio %v, want absent", f["acute_chronic_load"])
	}
}

func TestStepStreak(t *testing.T) {
	t.Parallel()
	now := clock(12, 0)
	tests := []struct {
		name  string
		steps map[int]float64 // back → steps
		goal  int64           // 0: default
		want  float64
	}{
		{"none", nil, 0, 0},
		{"today only", map[int]float64{0: 10000}, 0, 1},
		{"today below, 3 before", map[int]float64{0: 200, 1: 10000, 2: 10001, 3: 12000, 4: 9999}, 0, 3},
		{"today and 2 before", map[int]float64{0: 10000, 1: 10000, 2: 10000}, 0, 3},
		{"yesterday missing", map[int]float64{0: 10000, 2: 10000, 3: 10000}, 0, 1},
		{"yesterday and today missing", map[int]float64{2: 10000, 3: 10000}, 0, 0},
		{"goal 5000", map[int]float64{1: 5000, 2: 5000, 3: 4999}, 5000, 2},
		{"29 days", func() map[int]float64 {
			m := map[int]float64{}
			for i := range 40 {
				m[i] = 20000
			}
			return m
		}(), 0, 29},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			in := Inputs{Now: now, Days: series(now, 40, func(back int) map[string]float64 {
				if v, ok := tc.steps[back]; ok {
					return map[string]float64{"steps": v}
				}
				return nil
			})}
			if tc.goal > 0 {
				in.Profile = map[string]any{"goals": map[string]any{"steps": tc.goal}}
			}
			if got := BuildState(in).Features["step_streak_days"]; got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestProfileOf(t *testing.T) {
	t.Parallel()
	hours := func(a, b string) map[string]any { return map[string]any{"start": a, "end": b} }
	tests := []struct {
		name          string
		view          map[string]any
		hh, mm        int
		quiet, active bool
		check         func(Profile) string
	}{
		{name: "defaults at 21:59", hh: 21, mm: 59, quiet: false, active: false, check: func(p Profile) string {
			if p.QuietStart != 22*60 || p.QuietEnd != 7*60 || p.ActiveStart != 9*60 || p.ActiveEnd != 18*60 {
				return "default spans"
			}
			if p.NudgesSet || !p.NudgeEnabled("bedtime") || len(p.Goals) != 0 {
				return "default nudges and goals"
			}
			return ""
		}},
		{name: "defaults at 22:00", hh: 22, quiet: true},
		{name: "defaults at 03:00", hh: 3, quiet: true},
		{name: "defaults at 06:59", hh: 6, mm: 59, quiet: true},
		{name: "defaults at 07:00", hh: 7},
		{name: "defaults at 09:00", hh: 9, active: true},
		{name: "defaults at 17:59", hh: 17, mm: 59, active: true},
		{name: "defaults at 18:00", hh: 18},
		{name: "quiet 23:30–06:15 at 23:29", view: map[string]any{"quiet_hours": hours("23:30", "06:15")}, hh: 23, mm: 29},
		{name: "quiet 23:30–06:15 at 23:30", view: map[string]any{"quiet_hours": hours("23:30", "06:15")}, hh: 23, mm: 30, quiet: true},
		{name: "quiet 23:30–06:15 at 06:14", view: map[string]any{"quiet_hours": hours("23:30", "06:15")}, hh: 6, mm: 14, quiet: true},
		{name: "quiet 23:30–06:15 at 06:15", view: map[string]any{"quiet_hours": hours("23:30", "06:15")}, hh: 6, mm: 15},
		{name: "quiet in the day", view: map[string]any{"quiet_hours": hours("13:00", "14:00")}, hh: 13, mm: 30, quiet: true, active: true},
		{name: "active 20:00–02:00 at 01:00", view: map[string]any{"active_hours": hours("20:00", "02:00")}, hh: 1, quiet: true, active: true},
		{name: "active 20:00–02:00 at 12:00", view: map[string]any{"active_hours": hours("20:00", "02:00")}, hh: 12},
		{name: "map[string]string hours", view: map[string]any{"quiet_hours": map[string]string{"start": "12:00", "end": "13:00"}},
			hh: 12, quiet: true, active: true},
		{name: "bad hours keep the default", view: map[string]any{"quiet_hours": hours("25:00", "06:00"), "active_hours": "all day"},
			hh: 23, quiet: true},
		{name: "goals", view: map[string]any{"goals": map[string]any{"steps": int64(8000), "water_ml": 1500.0, "bad": "x"}}, hh: 12,
			active: true, check: func(p Profile) string {
				if p.Goals["steps"] != 8000 || p.Goals["water_ml"] != 1500 || len(p.Goals) != 2 {
					return "goals"
				}
				return ""
			}},
		{name: "nudges as []string", view: map[string]any{"enabled_nudges": []string{"bedtime", "hydration"}}, hh: 12, active: true,
			check: func(p Profile) string {
				if !p.NudgesSet || !p.NudgeEnabled("bedtime") || p.NudgeEnabled("move_break") || !p.NudgeEnabled("") {
					return "nudges"
				}
				return ""
			}},
		{name: "nudges as []any", view: map[string]any{"enabled_nudges": []any{"celebrate", 3}}, hh: 12, active: true,
			check: func(p Profile) string {
				if !slices.Equal(p.Nudges, []string{"celebrate"}) || p.NudgeEnabled("bedtime") {
					return "nudges"
				}
				return ""
			}},
		{name: "no nudges chosen", view: map[string]any{"enabled_nudges": []string{}}, hh: 12, active: true,
			check: func(p Profile) string {
				if p.NudgesSet || !p.NudgeEnabled("move_break") {
					return "nudges"
				}
				return ""
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := profileOf(tc.view, clock(tc.hh, tc.mm))
			if p.InQuietHours != tc.quiet || p.InActiveHours != tc.active {
				t.Errorf("quiet %v active %v, want %v %v (%+v)", p.InQuietHours, p.InActiveHours, tc.quiet, tc.active, p)
			}
			if tc.check != nil {
				if what := tc.check(p); what != "" {
					t.Errorf("%s wrong: %+v", what, p)
				}
			}
		})
	}
}

// minuteSamples returns one sample of typ per minute from hh:mm for n minutes, with value
// v(i) (or level l(i) for a categorical type).
func minuteSamples(typ string, from time.Time, n int, value func(i int) float64, lvl func(i int) string) []pulsebase.Sample {
	st, _ := pulsebase.LookupType(typ)
	var out []pulsebase.Sample
	for i := range n {
		s := pulsebase.Sample{Type: typ, Unit: st.Unit, Start: from.Add(time.Duration(i) * time.Minute), Source: "watch"}
		s.End = s.Start.Add(time.Minute)
		if lvl != nil {
			s.Level = lvl(i)
			s.Value = float64(slices.Index(st.Levels, s.Level))
		} else {
			s.Value = value(i)
		}
		if st.Shape == pulsebase.ShapeInstant {
			s.End = s.Start
		}
		out = append(out, s)
	}
	return out
}

// points serves agg's minute buckets of samples to Live: the points of typ starting in
// [from, to).
func points(samples []pulsebase.Sample) func(typ string, from, to time.Time) []agg.Point {
	return func(typ string, from, to time.Time) []agg.Point {
		var out []agg.Point
		for _, p := range agg.Buckets(samples, typ, agg.Minute) {
			if !p.Start.Before(from) && p.Start.Before(to) {
				out = append(out, p)
			}
		}
		return out
	}
}

func TestLive(t *testing.T) {
	t.Parallel()
	at := func(hh, mm int) time.Time { return clock(hh, mm) }
	var ss []pulsebase.Sample
	add := func(s []pulsebase.Sample) { ss = append(ss, s...) }
	// 13:40–14:09 asleep (a nap: light sleep, sedentary, no steps): not sedentary.
	add(minuteSamples("sleep_stage", at(13, 40), 30, nil, func(int) string { return "light" }))
	add(minuteSamples("activity_intensity", at(13, 40), 30, nil, func(int) string { return "sedentary" }))
	add(minuteSamples("steps", at(13, 40), 30, func(int) float64 { return 0 }, nil))
	// 14:10–14:29 awake and sedentary: 20 sedentary minutes.
	add(minuteSamples("sleep_stage", at(14, 10), 2, nil, func(int) string { return "awake" }))
	add(minuteSamples("activity_intensity", at(14, 10), 20, nil, func(int) string { return "sedentary" }))
	add(minuteSamples("steps", at(14, 10), 20, func(int) float64 { return 0 }, nil))
	// 14:30–14:32 a brisk walk: moderate, 110 steps a minute.
	add(minuteSamples("activity_intensity", at(14, 30), 3, nil, func(int) string { return "moderate" }))
	add(minuteSamples("steps", at(14, 30), 3, func(int) float64 { return 110 }, nil))
	// 14:33–14:34 steps without intensity: 120 (active), then 5 (neither).
	add(minuteSamples("steps", at(14, 33), 2, func(i int) float64 { return []float64{120, 5}[i] }, nil))
	// 14:35–14:37 steps without intensity, none taken: sedentary (14:37 is the current
	// minute, and counts in the hour).
	add(minuteSamples("steps", at(14, 35), 3, func(int) float64 { return 0 }, nil))
	// Heart rate every minute from 14:20 to 14:37; the lowest of 14:27–14:36 is 81 at
	// 14:31. 14:26 (70) and 14:37 (60, not complete) are outside the last 10 minutes.
	add(minuteSamples("heart_rate", at(14, 20), 18, func(i int) float64 {
		switch i {
		case 6:
			return 70
		case 11:
			return 81
		case 17:
			return 60
		}
		return 90
	}, nil))

	now := at(14, 37).Add(25 * time.Second)
	hour, recent := Live(now, points(ss))
	wantHour := map[string]float64{"minutes": 38, "steps": 3*110 + 120 + 5, "sedentary_minutes": 20 + 3, "active_minutes": 3 + 1}
	for k, want := range wantHour {
		if hour[k] != want {
			t.Errorf("hour %s = %v, want %v", k, hour[k], want)
		}
	}
	// The last 10 complete minutes, 14:27–14:36: steps 110·3 + 120 + 5.
	wantRecent := map[string]float64{"heart_rate_minutes": 10, "heart_rate_min": 81, "steps": 455}
	for k, want := range wantRecent {
		if recent[k] != want {
			t.Errorf("recent %s = %v, want %v", k, recent[k], want)
		}
	}

	// Early in an hour the last 10 minutes reach into the hour before; the hour does not.
	hour, recent = Live(at(14, 5), points(ss))
	if hour["minutes"] != 6 || hour["sedentary_minutes"] != 0 || hour["steps"] != 0 {
		t.Errorf("14:05 (asleep): hour %v, want 6 minutes, none sedentary", hour)
	}
	if _, ok := recent["heart_rate_min"]; ok || recent["heart_rate_minutes"] != 0 {
		t.Errorf("14:05: recent %v, want no heart rate", recent)
	}

	// No data: zero counts, no heart rate minimum.
	hour, recent = Live(now, points(nil))
	if hour["minutes"] != 0 || hour["sedentary_minutes"] != 0 || recent["heart_rate_minutes"] != 0 || recent["steps"] != 0 {
		t.Errorf("no data: hour %v recent %v", hour, recent)
	}
	if _, ok := recent["heart_rate_min"]; ok {
		t.Errorf("no data: heart_rate_min present")
	}
}

// TestLiveDrivesMoveBreak checks that a real sedentary hour, through Live and BuildState,
// fires move_break while the same hour asleep does not.
func TestLiveDrivesMoveBreak(t *testing.T) {
	t.Parallel()
	now := clock(15, 52)
	still := minuteSamples("activity_intensity", clock(15, 0), 53, nil, func(int) string { return "sedentary" })
	tests := []struct {
		name    string
		samples []pulsebase.Sample
		fire    bool
	}{
		{"sitting", still, true},
		{"sitting, 45 minutes", still[8:], false},
		{"napping", append(slices.Clone(still), minuteSamples("sleep_stage", clock(15, 0), 53, nil, func(int) string { return "deep" })...), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			hour, recent := Live(now, points(tc.samples))
			_, fired, err := starterRule(t, "move_break").Fires(BuildState(Inputs{Now: now, Hour: hour, Recent: recent}))
			if err != nil || fired != tc.fire {
				t.Errorf("fired %v (error %v), want %v; hour %v", fired, err, tc.fire, hour)
			}
		})
	}
}

func TestDateOnly(t *testing.T) {
	for _, tm := range []time.Time{time.Date(2026, 11, 29, 23, 0, 0, 0, time.UTC), time.Date(999, 1, 2, 0, 0, 0, 0, time.UTC),
		time.Date(2028, 2, 29, 12, 0, 0, 0, time.FixedZone("", -11*3600))} {
		if got, want := dateOnly(tm), tm.Format(time.DateOnly); got != want {
			t.Errorf("dateOnly(%v) = %q, want %q", tm, got, want)
		}
	}
}
