package recommend

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/agg"
	"go.yaml.in/yaml/v3"
)

// A ruleCase is one state a starter rule is evaluated on.
type ruleCase struct {
	name string
	in   Inputs
	fire bool
	// why lists what the candidate's Why must quote when the rule fires.
	why []string
}

// checkRule evaluates the starter rule kind on every case: it must fire exactly when the
// case says, never fail (a rule that errors on missing data is a defect of the library),
// and quote the evidence in plain, non-diagnostic words.
func checkRule(t *testing.T, kind string, cases []ruleCase) {
	t.Helper()
	r := starterRule(t, kind)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, fired, err := r.Fires(BuildState(tc.in))
			if err != nil {
				t.Fatalf("Fires: %v (a rule must not fail on missing data)", err)
			}
			if fired != tc.fire {
				t.Fatalf("fired = %v, want %v (candidate %+v)", fired, tc.fire, c)
			}
			if !fired {
				return
			}
			if c.Kind != kind || c.Priority != r.Priority || c.Expires != r.Expires || c.Cooldown != r.Cooldown {
				t.Errorf("candidate %+v does not carry the rule's kind, priority, expiry and cooldown", c)
			}
			for _, w := range tc.why {
				if !strings.Contains(c.Why, w) {
					t.Errorf("why %q does not contain %q", c.Why, w)
				}
			}
			for _, s := range []string{c.Title, c.Body, c.Why} {
				if s == "" {
					t.Errorf("empty text in %+v", c)
				}
				if w := diagnostic(s); w != "" {
					t.Errorf("%q contains the diagnostic word %q", s, w)
				}
			}
		})
	}
}

func TestRecoveryDay(t *testing.T) {
	t.Parallel()
	now := clock(7, 30)
	today := dateBack(now, 0)
	// rhr and hrv are a clear case: 7-day resting HR 6 bpm over the usual 55 ± 2, 7-day
	// ln rMSSD 0.75 SD under the usual ln 60.
	rhr := bl{mean: 55, sd: 2, mean7: 61, days: 40, days7: 7, established: true}
	hrv := bl{mean: math.Log(60), sd: 0.2, mean7: math.Log(60) - 0.15, days: 40, days7: 7, established: true, ln: true}
	direct := func(f func(rhr, hrv *bl)) Inputs {
		r, h := rhr, hrv
		if f != nil {
			f(&r, &h)
		}
		return Inputs{Now: now, Days: days{today: dayWith(today, map[string]float64{"resting_heart_rate": 62, "hrv_rmssd": 50},
			map[string]bl{"resting_heart_rate": r, "hrv_rmssd": h})}}
	}
	// realistic: n days of resting HR 54/56 and rMSSD 58/62, the last 7 at rhr7 and hrv7,
	// with baselines computed as the processor does.
	realistic := func(n int, rhr7, hrv7 float64) Inputs {
		return Inputs{Now: now, Days: series(now, n, func(back int) map[string]float64 {
			if back < 7 {
				return map[string]float64{"resting_heart_rate": rhr7, "hrv_rmssd": hrv7}
			}
			return map[string]float64{"resting_heart_rate": 55 + float64(back%2*2-1), "hrv_rmssd": 60 + float64(back%2*4-2)}
		}).withBaselines()}
	}
	checkRule(t, "recovery_day", []ruleCase{
		{name: "clear", in: direct(nil), fire: true,
			why: []string{"Resting heart rate 61 vs your usual 55 ± 2", "HRV 51.6 ms vs your usual 60 ms"}},
		{name: "rhr exactly mean+3", in: direct(func(r, _ *bl) { r.mean7 = 58 }), fire: true},
		{name: "rhr just under mean+3", in: direct(func(r, _ *bl) { r.mean7 = 57.9 })},
		// With sd 4 the margin is one SD, not 3 bpm.
		{name: "sd 4 rhr at mean+3.5", in: direct(func(r, _ *bl) { r.sd, r.mean7 = 4, 58.5 })},
		{name: "sd 4 rhr at mean+4", in: direct(func(r, _ *bl) { r.sd, r.mean7 = 4, 59 }), fire: true},
		{name: "hrv 0.55 sd under", in: direct(func(_, h *bl) { h.mean7 = h.mean - 0.11 }), fire: true},
		{name: "hrv 0.45 sd under", in: direct(func(_, h *bl) { h.mean7 = h.mean - 0.09 })},
		{name: "hrv above usual", in: direct(func(_, h *bl) { h.mean7 = h.mean + 0.1 })},
		{name: "rhr baseline not established", in: direct(func(r, _ *bl) { r.days, r.established = 13, false })},
		{name: "hrv baseline not established", in: direct(func(_, h *bl) { h.days, h.established = 13, false })},
		{name: "2 recent rhr days", in: direct(func(r, _ *bl) { r.days7 = 2 })},
		{name: "2 recent hrv days", in: direct(func(_, h *bl) { h.days7 = 2 })},
		{name: "no hrv baseline", in: Inputs{Now: now, Days: days{today: dayWith(today, map[string]float64{"resting_heart_rate": 62},
			map[string]bl{"resting_heart_rate": rhr})}}},
		{name: "no baselines", in: Inputs{Now: now, Days: days{today: dayWith(today, map[string]float64{"steps": 300}, nil)}}},
		{name: "no days", in: Inputs{Now: now}},
		// Today has no day object yet: the baselines are yesterday's.
		{name: "baselines of yesterday", in: Inputs{Now: now, Days: days{dateBack(now, 1): dayWith(dateBack(now, 1), nil,
			map[string]bl{"resting_heart_rate": rhr, "hrv_rmssd": hrv})}}, fire: true},
		{name: "realistic hard week", in: realistic(50, 62, 45), fire: true,
			why: []string{"Resting heart rate 62 vs your usual 55.9 ± 2.5", "HRV 45 ms vs your usual 57.9 ms"}},
		{name: "realistic usual week", in: realistic(50, 55, 60)},
		// 12 days: the same hard week, but no baseline is established yet.
		{name: "realistic hard week, 12 days of data", in: realistic(12, 62, 45)},
	})
}

func TestMoveBreak(t *testing.T) {
	t.Parallel()
	at := func(hh, mm int, sedentary float64, profile map[string]any) Inputs {
		return Inputs{Now: clock(hh, mm), Profile: profile,
			Hour: map[string]float64{"steps": 40, "sedentary_minutes": sedentary, "active_minutes": 0, "minutes": float64(mm + 1)}}
	}
	evening := map[string]any{"active_hours": map[string]any{"start": "20:00", "end": "02:00"}}
	checkRule(t, "move_break", []ruleCase{
		{name: "50 still minutes at 14:55", in: at(14, 55, 50, nil), fire: true, why: []string{"still for 50 minutes since 14:00"}},
		{name: "49 still minutes", in: at(14, 55, 49, nil)},
		{name: "outside active hours", in: at(19, 58, 58, nil)},
		{name: "before active hours", in: at(8, 59, 59, nil)},
		{name: "first minute of active hours", in: at(9, 0, 50, nil), fire: true, why: []string{"since 09:00"}},
		{name: "active hours crossing midnight", in: at(23, 55, 55, evening), fire: true, why: []string{"still for 55 minutes since 23:00"}},
		{name: "after active hours crossing midnight", in: at(2, 55, 55, evening)},
		{name: "no live data", in: Inputs{Now: clock(14, 55)}},
	})
}

// pacing returns a pacing curve folded from n days of 500 steps an hour from 07:00 to
// 21:00 (7,000 a day): 4/7 of the day's steps by 15:00.
func pacing(now time.Time, n int) *Pacing {
	var hourly [24]float64
	for h := 7; h < 21; h++ {
		hourly[h] = 500
	}
	p := &Pacing{}
	for back := n; back >= 1; back-- {
		p.Fold(dateBack(now, back), hourly)
	}
	return p
}

func TestStepPacing(t *testing.T) {
	t.Parallel()
	now := clock(15, 0)
	today := dateBack(now, 0)
	// The usual share by 15:00 is 4/7: of a 10,000 goal, 5,714 steps; the rule fires
	// under 70 % of that, 4,000.
	with := func(steps float64, p *Pacing, profile map[string]any) Inputs {
		in := Inputs{Now: now, Pacing: p, Profile: profile}
		if steps >= 0 {
			in.Days = days{today: dayWith(today, map[string]float64{"steps": steps}, nil)}
		}
		return in
	}
	checkRule(t, "step_pacing", []ruleCase{
		{name: "3990 steps", in: with(3990, pacing(now, 10), nil), fire: true,
			why: []string{"3,990 steps so far", "about 5,714", "of your 10,000 goal"}},
		{name: "4010 steps", in: with(4010, pacing(now, 10), nil)},
		{name: "far ahead", in: with(9000, pacing(now, 10), nil)},
		{name: "goal 8000, 3150 steps", in: with(3150, pacing(now, 10), map[string]any{"goals": map[string]any{"steps": int64(8000)}}),
			fire: true, why: []string{"of your 8,000 goal"}},
		{name: "goal 8000, 3250 steps", in: with(3250, pacing(now, 10), map[string]any{"goals": map[string]any{"steps": int64(8000)}})},
		{name: "7 days of pacing", in: with(1000, pacing(now, 7), nil), fire: true},
		{name: "6 days of pacing", in: with(1000, pacing(now, 6), nil)},
		{name: "no pacing curve", in: with(1000, nil, nil)},
		// No day object with steps yet (the tracker has not synced): no news, not "0 steps".
		{name: "no steps today", in: with(-1, pacing(now, 10), nil)},
	})
}

func TestSleepDebt(t *testing.T) {
	t.Parallel()
	now := clock(20, 0)
	// nightsOf returns n nights (the latest ending today) of sleep minutes each.
	nightsOf := func(n int, minutes float64, profile map[string]any) Inputs {
		return Inputs{Now: now, Profile: profile, Days: series(now, 30, func(back int) map[string]float64 {
			if back < n {
				return map[string]float64{"sleep_minutes": minutes}
			}
			return map[string]float64{"steps": 8000}
		})}
	}
	// The weights average 1: 14 nights each x short owe 14x.
	checkRule(t, "sleep_debt", []ruleCase{
		{name: "14 nights 30 min short", in: nightsOf(14, 450, nil), fire: true,
			why: []string{"about 7 h 00 min less than your 8 h 00 min a night", "bed around 22:30"}},
		{name: "14 nights 22 min short", in: nightsOf(14, 458, nil), fire: true},
		{name: "14 nights 21 min short", in: nightsOf(14, 459, nil)},
		{name: "10 nights 40 min short", in: nightsOf(10, 440, nil), fire: true},
		{name: "9 nights 3 h short", in: nightsOf(9, 300, nil)},
		{name: "need of 7 h", in: nightsOf(14, 450, map[string]any{"goals": map[string]any{"sleep_minutes": int64(420)}})},
		{name: "need of 9 h", in: nightsOf(14, 510, map[string]any{"goals": map[string]any{"sleep_minutes": int64(540)}}), fire: true,
			why: []string{"your 9 h 00 min a night"}},
		{name: "no sleep data", in: nightsOf(0, 0, nil)},
	})
}

func TestBedtimeConsistency(t *testing.T) {
	t.Parallel()
	now := clock(8, 0)
	mids := func(ms ...float64) Inputs {
		return Inputs{Now: now, Days: series(now, 20, func(back int) map[string]float64 {
			if back < len(ms) {
				return map[string]float64{"sleep_midpoint": ms[back], "sleep_minutes": 450}
			}
			return map[string]float64{"steps": 7000}
		})}
	}
	// m ± d alternating around 04:00 and once at 04:00: sample SD d.
	spread := func(d float64) Inputs { return mids(240-d, 240+d, 240-d, 240+d, 240) }
	checkRule(t, "bedtime_consistency", []ruleCase{
		{name: "sd 120", in: spread(120), fire: true, why: []string{"about 2 h 00 min", "usually around 04:00"}},
		{name: "sd 91", in: spread(91), fire: true},
		{name: "sd 89", in: spread(89)},
		{name: "steady", in: mids(235, 245, 240, 250, 230, 240, 242)},
		{name: "4 nights", in: mids(100, 380, 100, 380)},
		// Mid-points are minutes after midnight, negative before it.
		{name: "steady around midnight", in: mids(-10, 10, -5, 5, 0, -15, 15)},
		{name: "around midnight, sd 2 h", in: mids(-120, 120, -120, 120, 0), fire: true,
			why: []string{"about 2 h 00 min", "usually around 00:00"}},
		// A sleep ending just before midnight and one just after: minutes apart, not a day.
		{name: "steady either side of the day's end", in: mids(1225, -190, 1230, -200, 1220, -195)},
		{name: "steady, written as clock times", in: mids(1430, 10, 1435, 5, 0, 1425, 15)},
		{name: "no sleep data", in: mids()},
	})
}

func TestElevatedRHR(t *testing.T) {
	t.Parallel()
	now := clock(7, 0)
	usual := func(z float64, established bool) bl {
		b := bl{mean: 55, sd: 2, mean7: 57, days: 40, days7: 7, established: established, z: &z}
		if !established {
			b.days = 10
		}
		return b
	}
	// byDay builds day objects from back → (resting HR, its baseline).
	type rhrDay struct {
		rhr float64
		b   bl
	}
	byDay := func(ds map[int]rhrDay) Inputs {
		in := Inputs{Now: now, Days: days{}}
		for back, d := range ds {
			in.Days[dateBack(now, back)] = dayWith(dateBack(now, back), map[string]float64{"resting_heart_rate": d.rhr},
				map[string]bl{"resting_heart_rate": d.b})
		}
		return in
	}
	realistic := func(n int) Inputs {
		return Inputs{Now: now, Days: series(now, n, func(back int) map[string]float64 {
			if back < 2 {
				return map[string]float64{"resting_heart_rate": 68}
			}
			return map[string]float64{"resting_heart_rate": 55 + float64(back%2)}
		}).withBaselines()}
	}
	checkRule(t, "elevated_rhr", []ruleCase{
		{name: "two days at z 3.5", in: byDay(map[int]rhrDay{0: {63, usual(3.5, true)}, 1: {62, usual(3.5, true)}}), fire: true,
			why: []string{"Resting heart rate 63 for 2 days in a row", "your usual 55 ± 2"}},
		{name: "two days at z 3", in: byDay(map[int]rhrDay{0: {61, usual(3, true)}, 1: {61, usual(3, true)}}), fire: true},
		{name: "yesterday at z 2.9", in: byDay(map[int]rhrDay{0: {63, usual(3.5, true)}, 1: {60.8, usual(2.9, true)}})},
		{name: "today only", in: byDay(map[int]rhrDay{0: {63, usual(3.5, true)}, 2: {63, usual(3.5, true)}})},
		{name: "three days", in: byDay(map[int]rhrDay{0: {64, usual(4.5, true)}, 1: {63, usual(4, true)}, 2: {62, usual(3.5, true)}}),
			fire: true, why: []string{"Resting heart rate 64 for 3 days in a row"}},
		// Today's value is not in yet: yesterday and the day before count.
		{name: "not measured today", in: byDay(map[int]rhrDay{1: {63, usual(4, true)}, 2: {62, usual(3.5, true)}}), fire: true,
			why: []string{"Resting heart rate 63 for 2 days"}},
		{name: "baseline not established", in: byDay(map[int]rhrDay{0: {70, usual(6, false)}, 1: {70, usual(6, false)}})},
		{name: "realistic", in: realistic(40), fire: true, why: []string{"Resting heart rate 68 for 2 days in a row"}},
		{name: "realistic, 12 days of data", in: realistic(12)},
		{name: "no resting heart rate", in: Inputs{Now: now, Days: series(now, 30, func(int) map[string]float64 {
			return map[string]float64{"steps": 5000}
		}).withBaselines()}},
		{name: "no days", in: Inputs{Now: now}},
	})
}

func TestElevatedRHRAdvisesAProfessional(t *testing.T) {
	t.Parallel()
	now := clock(7, 0)
	z := 4.0
	b := bl{mean: 55, sd: 2, mean7: 60, days: 40, days7: 7, established: true, z: &z}
	in := Inputs{Now: now, Days: days{
		dateBack(now, 0): dayWith(dateBack(now, 0), map[string]float64{"resting_heart_rate": 64}, map[string]bl{"resting_heart_rate": b}),
		dateBack(now, 1): dayWith(dateBack(now, 1), map[string]float64{"resting_heart_rate": 63}, map[string]bl{"resting_heart_rate": b}),
	}}
	c, fired, err := starterRule(t, "elevated_rhr").Fires(BuildState(in))
	if err != nil || !fired {
		t.Fatalf("Fires: got %v, %v; want a candidate", fired, err)
	}
	if !strings.Contains(strings.ToLower(c.Body), "health professional") {
		t.Errorf("body %q does not advise checking in with a health professional", c.Body)
	}
}

func TestBreathing(t *testing.T) {
	t.Parallel()
	// Resting HR 60 today: the rule wants ≥ 78 for 10 still minutes.
	withRHR := func(now time.Time, recent map[string]float64) Inputs {
		return Inputs{Now: now, Recent: recent, Days: days{dateBack(now, 0): dayWith(dateBack(now, 0),
			map[string]float64{"resting_heart_rate": 60, "steps": 3000}, nil)}}
	}
	live := func(minutes, steps, hrMin float64) map[string]float64 {
		m := map[string]float64{"heart_rate_minutes": minutes, "steps": steps}
		if minutes > 0 {
			m["heart_rate_min"] = hrMin
		}
		return m
	}
	now := clock(15, 20)
	// No resting HR in the last days, only yesterday's established baseline of 58.
	fromBaseline := Inputs{Now: now, Recent: live(10, 0, 76), Days: days{dateBack(now, 1): dayWith(dateBack(now, 1),
		map[string]float64{"steps": 9000}, map[string]bl{"resting_heart_rate": {mean: 58, sd: 2, mean7: 58, days: 30, days7: 5, established: true}})}}
	checkRule(t, "breathing", []ruleCase{
		{name: "78.5 still for 10 minutes", in: withRHR(now, live(10, 0, 78.5)), fire: true,
			why: []string{"stayed at 78.5 or more for 10 minutes", "resting rate is about 60"}},
		{name: "77.5", in: withRHR(now, live(10, 0, 77.5))},
		{name: "9 minutes of heart rate", in: withRHR(now, live(9, 0, 95))},
		{name: "walking", in: withRHR(now, live(10, 12, 95))},
		{name: "quiet hours", in: withRHR(clock(23, 10), live(10, 0, 95))},
		{name: "resting rate from the baseline", in: fromBaseline, fire: true, why: []string{"resting rate is about 58"}},
		{name: "no heart rate minutes", in: withRHR(now, live(0, 0, 0))},
		{name: "no live data", in: withRHR(now, nil)},
		{name: "no resting heart rate", in: Inputs{Now: now, Recent: live(10, 0, 120)}},
	})
}

func TestHydration(t *testing.T) {
	t.Parallel()
	now := clock(15, 0)
	// water gives today's logged water (−1: none) for a user who logged water on the
	// given number of the 13 days before.
	water := func(ml float64, profile map[string]any, loggedDays int) Inputs {
		in := Inputs{Now: now, Profile: profile, Days: days{dateBack(now, 0): dayWith(dateBack(now, 0), map[string]float64{"steps": 4000}, nil)}}
		if ml >= 0 {
			in.Days[dateBack(now, 0)]["water"] = ml
		}
		for b := 1; b <= loggedDays; b++ {
			in.Days[dateBack(now, b)] = dayWith(dateBack(now, b), map[string]float64{"water": 1800}, nil)
		}
		return in
	}
	goal := map[string]any{"goals": map[string]any{"water_ml": int64(1500)}}
	glasses := map[string]any{"water_glasses": map[string]int64{dateBack(now, 0): 2, dateBack(now, 1): 6, dateBack(now, 2): 7}}
	checkRule(t, "hydration", []ruleCase{
		{name: "999.9 ml", in: water(999.9, nil, 5), fire: true,
			why: []string{"1,000 ml logged so far today, less than half of your 2,000 ml goal"}},
		{name: "1000 ml", in: water(1000, nil, 5)},
		{name: "1800 ml", in: water(1800, nil, 5)},
		{name: "nothing logged by a water logger", in: water(-1, nil, 5), fire: true, why: []string{"0 ml logged"}},
		{name: "nothing logged by one who never logs water", in: water(-1, nil, 0)},
		{name: "logged on 2 of 14 days", in: water(-1, nil, 1)},
		{name: "goal 1500, 700 ml", in: water(700, goal, 5), fire: true, why: []string{"your 1,500 ml goal"}},
		{name: "goal 1500, 800 ml", in: water(800, goal, 5)},
		// Glasses counted on the profile (250 mL each) count as water and as logging.
		{name: "2 glasses and 400 ml", in: water(400, glasses, 0), fire: true, why: []string{"900 ml logged"}},
		{name: "2 glasses and 600 ml", in: water(600, glasses, 0)},
	})
}

func TestStreak(t *testing.T) {
	t.Parallel()
	now := clock(18, 0)
	// steps gives the steps of each day back (absent: no data).
	steps := func(profile map[string]any, byBack map[int]float64) Inputs {
		return Inputs{Now: now, Profile: profile, Days: series(now, 30, func(back int) map[string]float64 {
			if v, ok := byBack[back]; ok {
				return map[string]float64{"steps": v}
			}
			return nil
		})}
	}
	run := func(from, to int, v float64, extra map[int]float64) map[int]float64 {
		m := map[int]float64{}
		for b := from; b <= to; b++ {
			m[b] = v
		}
		for k, x := range extra {
			if x < 0 {
				delete(m, k) // no data that day
				continue
			}
			m[k] = x
		}
		return m
	}
	checkRule(t, "streak", []ruleCase{
		{name: "5 days to yesterday", in: steps(nil, run(1, 5, 10000, map[int]float64{0: 2000, 6: 4000})), fire: true,
			why: []string{"5 days in a row at or above your 10000-step goal"}},
		{name: "4 days to yesterday", in: steps(nil, run(1, 4, 12000, map[int]float64{0: 2000, 5: 9999}))},
		{name: "4 days and today", in: steps(nil, run(0, 4, 10000, map[int]float64{5: 3000})), fire: true},
		{name: "a day without data breaks it", in: steps(nil, run(1, 8, 11000, map[int]float64{3: -1}))},
		{name: "9 days", in: steps(nil, run(0, 8, 15000, nil)), fire: true, why: []string{"9 days in a row"}},
		{name: "goal 8000", in: steps(map[string]any{"goals": map[string]any{"steps": int64(8000)}}, run(1, 5, 8000, nil)),
			fire: true, why: []string{"your 8000-step goal"}},
		{name: "no step data", in: steps(nil, nil)},
	})
}

func TestTrainingLoad(t *testing.T) {
	t.Parallel()
	now := clock(9, 0)
	// load returns n completed days of 20 active minutes, yesterday v, and today.
	load := func(n int, v, today float64) Inputs {
		return Inputs{Now: now, Days: series(now, n+1, func(back int) map[string]float64 {
			switch back {
			case 0:
				if today < 0 {
					return nil
				}
				return map[string]float64{"active_minutes": today}
			case 1:
				return map[string]float64{"active_minutes": v}
			}
			return map[string]float64{"active_minutes": 20}
		})}
	}
	// After a flat 20, yesterday's v gives acute 20 + (v−20)·2/8 and chronic
	// 20 + (v−20)·2/29: over 1.5 from v = 88.24.
	checkRule(t, "training_load", []ruleCase{
		{name: "yesterday 89", in: load(27, 89, -1), fire: true,
			why: []string{"average 37.2 a day against 24.8 over the last four weeks", "a ratio of 1.50"}},
		{name: "yesterday 88", in: load(27, 88, -1)},
		{name: "flat", in: load(27, 20, -1)},
		{name: "21 days", in: load(21, 150, -1), fire: true},
		{name: "20 days", in: load(20, 150, -1)},
		{name: "today does not count", in: load(27, 20, 300)},
		{name: "all zero", in: load(27, 0, -1)},
		{name: "no data", in: Inputs{Now: now}},
	})
}

// allFire returns inputs on which every starter rule fires, at 15:00 (an "at" slot of
// step_pacing and hydration, inside the default active hours).
func allFire() Inputs {
	now := clock(15, 0)
	ds := series(now, 30, func(back int) map[string]float64 {
		m := map[string]float64{"active_minutes": 20, "steps": 6000}
		switch {
		case back == 0:
			m["steps"], m["water"] = 1000, 200
			delete(m, "active_minutes")
		case back == 1:
			m["active_minutes"] = 89
		}
		if back >= 1 && back <= 3 {
			m["water"] = 1500 // a user who logs water
		}
		if back >= 1 && back <= 5 {
			m["steps"] = 11000 // a streak of 5 up to yesterday
		}
		if back < 14 {
			m["sleep_minutes"] = 400
		}
		if back < 7 {
			m["sleep_midpoint"] = float64(120 + back%2*240)
		}
		return m
	})
	z := 4.0
	rhr := bl{mean: 55, sd: 2, mean7: 61, days: 40, days7: 7, established: true, z: &z}
	hrv := bl{mean: math.Log(60), sd: 0.2, mean7: math.Log(50), days: 40, days7: 7, established: true, ln: true}
	for back := range 2 {
		o := ds[dateBack(now, back)]
		o["resting_heart_rate"] = 64.0
		o["baselines"] = map[string]any{"resting_heart_rate": rhr.object(), "hrv_rmssd": hrv.object()}
	}
	return Inputs{Now: now, Days: ds, Pacing: pacing(now, 10),
		Hour:   map[string]float64{"steps": 30, "sedentary_minutes": 55, "active_minutes": 0, "minutes": 60},
		Recent: map[string]float64{"steps": 0, "heart_rate_minutes": 10, "heart_rate_min": 100}}
}

func TestAllFire(t *testing.T) {
	t.Parallel()
	s := BuildState(allFire())
	for _, r := range starter().Rules {
		if _, fired, err := r.Fires(s); !fired || err != nil {
			t.Errorf("%s: fired %v, error %v; want it to fire on allFire", r.Kind, fired, err)
		}
	}
}

func kinds(cs []Candidate) []string {
	out := []string{}
	for _, c := range cs {
		out = append(out, c.Kind)
	}
	return out
}

func TestEvaluateTriggersAndCategories(t *testing.T) {
	t.Parallel()
	everything := []string{"steps", "activity_intensity", "heart_rate", "resting_heart_rate", "hrv_rmssd", "sleep_minutes", "active_minutes"}
	all := func(pulsebase.Category) bool { return true }
	none := func(pulsebase.Category) bool { return false }
	only := func(cs ...pulsebase.Category) func(pulsebase.Category) bool {
		return func(c pulsebase.Category) bool { return slices.Contains(cs, c) }
	}
	at := func(hh, mm int) Trigger { return Trigger{At: hh*60 + mm, Scheduled: true} }
	tests := []struct {
		name    string
		trigger Trigger
		allowed func(pulsebase.Category) bool
		want    []string
	}{
		{"every metric", Trigger{Metrics: everything}, all,
			[]string{"recovery_day", "move_break", "sleep_debt", "bedtime_consistency", "elevated_rhr", "breathing", "streak", "training_load"}},
		{"steps", Trigger{Metrics: []string{"steps"}}, all, []string{"move_break", "streak"}},
		{"resting heart rate", Trigger{Metrics: []string{"resting_heart_rate"}}, all, []string{"recovery_day", "elevated_rhr"}},
		{"a metric no rule reads", Trigger{Metrics: []string{"weight"}}, all, []string{}},
		{"at 15:00", at(15, 0), all, []string{"step_pacing", "hydration"}},
		{"at 12:00", at(12, 0), all, []string{"step_pacing"}},
		{"at 20:00", at(20, 0), all, []string{"sleep_debt"}},
		{"at 13:00", at(13, 0), all, []string{}},
		{"no trigger", Trigger{}, all, []string{}},
		{"no category, every metric", Trigger{Metrics: everything}, none, []string{}},
		{"no category, at 15:00", at(15, 0), none, []string{}},
		{"activity only", Trigger{Metrics: everything}, only(pulsebase.CategoryActivity),
			[]string{"move_break", "streak", "training_load"}},
		{"heart only", Trigger{Metrics: everything}, only(pulsebase.CategoryHeart), []string{"recovery_day", "elevated_rhr"}},
		{"heart and activity", Trigger{Metrics: everything}, only(pulsebase.CategoryHeart, pulsebase.CategoryActivity),
			[]string{"recovery_day", "move_break", "elevated_rhr", "breathing", "streak", "training_load"}},
		{"sleep, every metric", Trigger{Metrics: everything}, only(pulsebase.CategorySleep), []string{"sleep_debt", "bedtime_consistency"}},
		{"nutrition at 15:00", at(15, 0), only(pulsebase.CategoryNutrition), []string{"hydration"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := BuildState(allFire())
			cs, errs := starter().Evaluate(s, tc.trigger, tc.allowed)
			if len(errs) > 0 {
				t.Fatalf("errors: %v", errs)
			}
			if got := kinds(cs); !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
			if s.Trigger != tc.trigger.String() {
				t.Errorf("state trigger %q, want %q", s.Trigger, tc.trigger.String())
			}
		})
	}
}

// TestEvaluateReportsRuleErrors checks that a rule failing at run time is reported and
// does not stop the others.
func TestEvaluateReportsRuleErrors(t *testing.T) {
	t.Parallel()
	src := `version: "1"
rules:
  - kind: careless
    category: activity
    triggers: {metrics: [steps]}
    when: today.steps > 10.0
    priority: 10
    title: t
    body: b
    why: w
    expires: 1h
  - kind: careful
    category: activity
    triggers: {metrics: [steps]}
    when: "!('steps' in today)"
    priority: 10
    title: t
    body: b
    why: w
    expires: 1h
`
	lib, err := Load("t.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	cs, errs := lib.Evaluate(BuildState(Inputs{Now: clock(10, 0)}), Trigger{Metrics: []string{"steps"}},
		func(pulsebase.Category) bool { return true })
	if got := kinds(cs); !slices.Equal(got, []string{"careful"}) {
		t.Errorf("candidates %v, want [careful]", got)
	}
	if len(errs) != 1 || errs[0].Kind != "careless" || !strings.Contains(errs[0].Error(), "rule careless") {
		t.Errorf("errors %v, want one of rule careless", errs)
	}
}

// TestStarterWording checks every text of the starter library, as written, for
// diagnostic words.
func TestStarterWording(t *testing.T) {
	t.Parallel()
	var doc struct {
		Rules []struct {
			Kind             string
			Title, Body, Why string
		}
	}
	if err := yaml.Unmarshal(Starter, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Rules) != 10 {
		t.Fatalf("got %d rules, want 10", len(doc.Rules))
	}
	for _, r := range doc.Rules {
		for field, s := range map[string]string{"title": r.Title, "body": r.Body, "why": r.Why} {
			if s == "" {
				t.Errorf("%s: empty %s", r.Kind, field)
			}
			if w := diagnostic(s); w != "" {
				t.Errorf("%s %s %q contains the diagnostic word %q", r.Kind, field, s, w)
			}
		}
	}
}

// TestStarterOnNoData runs every starter rule on users with no data at all, or with live
// features that saw no minutes: none may fail, and none fires (hydration needs a user who
// logs water; nothing logged by one who never does is no news).
func TestStarterOnNoData(t *testing.T) {
	t.Parallel()
	empty := func(typ string, from, to time.Time) []agg.Point { return nil }
	for _, hh := range []int{3, 9, 12, 15, 20, 23} {
		now := clock(hh, 0)
		hour, recent := Live(now, empty)
		for name, in := range map[string]Inputs{
			"nothing":          {Now: now},
			"empty live":       {Now: now, Hour: hour, Recent: recent},
			"empty maps":       {Now: now, Days: days{}, Hour: map[string]float64{}, Recent: map[string]float64{}, Profile: map[string]any{}, Pacing: &Pacing{}},
			"an empty today":   {Now: now, Days: days{dateBack(now, 0): {"date": dateBack(now, 0), "baselines": map[string]any{}}}},
			"an empty profile": {Now: now, Profile: map[string]any{"goals": map[string]any{}, "enabled_nudges": []string{}}},
		} {
			s := BuildState(in)
			var fired []string
			for _, r := range starter().Rules {
				_, ok, err := r.Fires(s)
				if err != nil {
					t.Errorf("%02d:00 %s: %s: %v", hh, name, r.Kind, err)
				}
				if ok {
					fired = append(fired, r.Kind)
				}
			}
			if len(fired) > 0 {
				t.Errorf("%02d:00 %s: fired %v, want none", hh, name, fired)
			}
		}
	}
}
