package sim

import (
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
)

var t0 = time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)

func TestGenerateIsDeterministic(t *testing.T) {
	from, to := t0, t0.Add(3*24*time.Hour)
	a, b := Generate(7, 2, from, to), Generate(7, 2, from, to)
	if len(a) < 1000 {
		t.Fatalf("got %d samples for three days, want thousands", len(a))
	}
	if !reflect.DeepEqual(a, b) {
		t.Error("Generate gave different samples for the same seed, user and range")
	}
	if c := Generate(8, 2, from, to); reflect.DeepEqual(a, c) {
		t.Error("Generate gave the same samples for seeds 7 and 8")
	}
	if c := Generate(7, 3, from, to); reflect.DeepEqual(a, c) {
		t.Error("Generate gave the same samples for users 2 and 3")
	}
	// A person made anew, and one whose caches hold other days, give the same samples.
	pop := &Population{Seed: 7, Users: 4}
	p := pop.User(2)
	p.Samples(to, to.Add(5*24*time.Hour))
	if c := p.Samples(from, to); !reflect.DeepEqual(a, c) {
		t.Error("Samples depends on what was asked before")
	}
}

// TestSamplesOfAdjacentRangesAddUp: a range cut anywhere gives the same samples, so that a
// live run ticking at any rate sends what a backfill would.
func TestSamplesOfAdjacentRangesAddUp(t *testing.T) {
	pop := &Population{Seed: 11, Users: 2, DevicesPerUser: 4, MalformedRate: 0.01}
	for _, cut := range []time.Duration{time.Second, 7*time.Hour + 13*time.Minute + 5*time.Second, 30*time.Hour + 500*time.Millisecond} {
		from, mid, to := t0, t0.Add(cut), t0.Add(48*time.Hour)
		whole := pop.User(1).Samples(from, to)
		parts := append(pop.User(1).Samples(from, mid), pop.User(1).Samples(mid, to)...)
		if !reflect.DeepEqual(whole, parts) {
			t.Errorf("cut at %s: got %d samples in two parts, want the %d of the whole", cut, len(parts), len(whole))
		}
		since := t0.Add(-time.Hour)
		uw := pop.User(1).Uploads(since, from, to)
		up := append(pop.User(1).Uploads(since, from, mid), pop.User(1).Uploads(since, mid, to)...)
		slices.SortStableFunc(up, func(a, b Upload) int { return a.At.Compare(b.At) })
		if !reflect.DeepEqual(uw, up) {
			t.Errorf("cut at %s: got %d uploads in two parts, want the %d of the whole", cut, len(up), len(uw))
		}
	}
}

// TestPersonDaysTileTime checks the day plans of many people over half a year, trips and
// poor-sleep weeks included: days follow one another, each with hours awake and a night of
// 4 to 12 hours.
func TestPersonDaysTileTime(t *testing.T) {
	pop := &Population{Seed: 5, Users: 30}
	trips := 0
	for i := range pop.Users {
		p := pop.User(i)
		d0 := p.homeDay(t0)
		for d := d0; d < d0+180; d++ {
			w, b, next := p.wake(d), p.day(d).rawBed, p.wake(d+1)
			bed, _ := p.nightBounds(d)
			if p.day(d).travel {
				trips++
			}
			if bed.Sub(w) < 4*time.Hour || next.Sub(bed) < 4*time.Hour || next.Sub(bed) > 12*time.Hour {
				t.Fatalf("user %d day %d: wake %s, bed %s (planned %s), next wake %s: want ≥ 4 h awake and a 4–12 h night", i, d, w, bed, b, next)
			}
			for _, at := range []time.Time{w, bed, next.Add(-time.Second)} {
				if got := p.dayAt(at); got != d {
					t.Fatalf("user %d: dayAt(%s) = %d, want %d", i, at, got, d)
				}
			}
		}
	}
	if trips == 0 {
		t.Error("nobody travelled in half a year: the check above did not see a trip")
	}
}

// TestPhysiologyIsPlausible checks two weeks of several people against DOMAIN.md and common
// sense: every sample is valid, heart rate dips at night, steps are taken awake, sleep
// stages tile each night in order, days and nights have believable totals.
func TestPhysiologyIsPlausible(t *testing.T) {
	pop := &Population{Seed: 99, Users: 6, DevicesPerUser: 4}
	from, to := t0, t0.Add(14*24*time.Hour)
	now := to.Add(time.Hour)
	for i := range pop.Users {
		p := pop.User(i)
		samples := p.Samples(from, to)
		var nights [][2]time.Time
		for d := p.dayAt(from); d <= p.dayAt(to); d++ {
			b, w := p.nightBounds(d)
			nights = append(nights, [2]time.Time{b, w})
		}
		asleep := func(t time.Time) bool {
			for _, n := range nights {
				if !t.Before(n[0]) && t.Before(n[1]) {
					return true
				}
			}
			return false
		}
		var hrSleep, hrAwake, nSleep, nAwake, stepsAwake, stepsAsleep float64
		steps := map[string]float64{} // local date → watch steps
		var stages []pulsebase.Sample
		types := map[string]bool{}
		for _, in := range samples {
			s, probs := pulsebase.Normalize(in, now)
			if len(probs) > 0 {
				t.Fatalf("user %d: sample %+v: %v", i, in, probs)
			}
			types[s.Type] = true
			if s.Zone == "" || s.Start.Location() == time.UTC && s.Zone != "Europe/London" {
				t.Errorf("user %d: sample %+v carries no local offset or zone", i, in)
			}
			switch {
			case s.Type == "heart_rate" && s.Source == p.Devices[0].ID:
				if asleep(s.Start) {
					hrSleep += s.Value
					nSleep++
				} else {
					hrAwake += s.Value
					nAwake++
				}
			case s.Type == "steps" && s.Source == p.Devices[0].ID:
				if asleep(s.Start) {
					stepsAsleep += s.Value
				} else {
					stepsAwake += s.Value
					steps[s.Start.Format(time.DateOnly)] += s.Value
				}
			case s.Type == "sleep_stage":
				stages = append(stages, s)
			}
		}
		for _, typ := range []string{"heart_rate", "steps", "distance", "active_energy", "activity_intensity", "sleep_stage",
			"spo2", "respiratory_rate", "skin_temperature", "body_weight", "mood", "water", "resting_heart_rate", "hrv_rmssd"} {
			if !types[typ] {
				t.Errorf("user %d: no %s in two weeks", i, typ)
			}
		}
		if dip := hrAwake/nAwake - hrSleep/nSleep; dip < 8 {
			t.Errorf("user %d: heart rate %.1f awake, %.1f asleep: want a dip of at least 8 bpm at night", i, hrAwake/nAwake, hrSleep/nSleep)
		}
		if stepsAsleep > 0.02*stepsAwake {
			t.Errorf("user %d: %.0f steps asleep, %.0f awake: want steps mostly in waking hours", i, stepsAsleep, stepsAwake)
		}
		for day, n := range steps {
			if day > from.Format(time.DateOnly) && day < to.Add(-24*time.Hour).Format(time.DateOnly) && (n < 500 || n > 40000) {
				t.Errorf("user %d: %.0f steps on %s, want 500–40,000", i, n, day)
			}
		}
		checkNights(t, i, stages)
	}
}

// checkNights checks that the sleep stages of each night follow one another without gap or
// overlap, from in_bed to a last awake, in 4 to 12 hours with 3 to 11 hours asleep.
func checkNights(t *testing.T, user int, stages []pulsebase.Sample) {
	t.Helper()
	slices.SortFunc(stages, func(a, b pulsebase.Sample) int { return a.Start.Compare(b.Start) })
	var night []pulsebase.Sample
	flush := func(complete bool) {
		if len(night) == 0 {
			return
		}
		first, last := night[0], night[len(night)-1]
		asleep := 0.0
		for _, s := range night {
			if s.Level == "light" || s.Level == "deep" || s.Level == "rem" {
				asleep += s.End.Sub(s.Start).Hours()
			}
		}
		span := last.End.Sub(first.Start).Hours()
		if complete && (first.Level != "in_bed" || last.Level != "awake" || span < 4 || span > 12 || asleep < 3 || asleep > 11) {
			t.Errorf("user %d: night %s–%s: first %s, last %s, %.1f h in bed, %.1f h asleep", user, first.Start, last.End, first.Level, last.Level, span, asleep)
		}
		night = night[:0]
	}
	for i, s := range stages {
		if i > 0 && !s.Start.Equal(stages[i-1].End) {
			if s.Start.Before(stages[i-1].End) {
				t.Errorf("user %d: stage %s at %s overlaps the one before", user, s.Level, s.Start)
			}
			flush(len(night) > 0 && night[0].Start != stages[0].Start)
		}
		if i > 0 && s.Start.Equal(stages[i-1].End) && s.Level == stages[i-1].Level {
			t.Errorf("user %d: two %s stages in a row at %s", user, s.Level, s.Start)
		}
		night = append(night, s)
	}
	flush(false) // the last night may be cut by the range
}

// dailyValues returns a person's device-reported daily values of typ by local date.
func dailyValues(p *Person, typ string, from, to time.Time) map[string]float64 {
	out := map[string]float64{}
	for _, in := range p.Samples(from, to) {
		if in.Type == typ {
			v, _ := strconv.ParseFloat(string(in.Value), 64)
			out[in.Start[:10]] = v
		}
	}
	return out
}

// TestIllnessRaisesRHRAndLowersHRV finds illnesses in a population's episode schedules and
// checks the daily values the watches report during them against the week before.
func TestIllnessRaisesRHRAndLowersHRV(t *testing.T) {
	pop := &Population{Seed: 2024, Users: 40}
	checked := 0
	for i := 0; i < pop.Users && checked < 4; i++ {
		p := pop.User(i)
		for _, e := range p.Episodes(t0, t0.Add(120*24*time.Hour)) {
			if e.Kind != Illness || e.Days < 4 {
				continue
			}
			// A clean week before: no other episode in the two weeks around it.
			clean := true
			for _, o := range p.Episodes(e.Start.Add(-10*24*time.Hour), e.Start.Add(time.Duration(e.Days+1)*24*time.Hour)) {
				if o != e {
					clean = false
				}
			}
			if !clean {
				continue
			}
			from, to := e.Start.Add(-8*24*time.Hour), e.Start.Add(time.Duration(e.Days+1)*24*time.Hour)
			rhr, hrv := dailyValues(p, "resting_heart_rate", from, to), dailyValues(p, "hrv_rmssd", from, to)
			var before, during [2][]float64
			for d := -7; d <= e.Days; d++ {
				// The watch reports a night's values the next morning.
				date := e.Start.AddDate(0, 0, d).Format(time.DateOnly)
				switch {
				case d < 0:
					before[0], before[1] = append(before[0], rhr[date]), append(before[1], hrv[date])
				case d >= 2 && d < e.Days:
					during[0], during[1] = append(during[0], rhr[date]), append(during[1], hrv[date])
				}
			}
			dRHR := mean(during[0]) - mean(before[0])
			rHRV := mean(during[1]) / mean(before[1])
			t.Logf("user %d, illness of %d days from %s (+%.1f bpm, ×%.2f): resting HR %+.1f bpm, HRV ×%.2f", i, e.Days, e.Start.Format(time.DateOnly), e.RHRShift, e.HRVFactor, dRHR, rHRV)
			if dRHR < 3.5 || rHRV > 0.85 {
				t.Errorf("user %d: during an illness resting HR moved %+.1f bpm and HRV ×%.2f, want ≥ +3.5 bpm and ≤ ×0.85", i, dRHR, rHRV)
			}
			checked++
		}
	}
	if checked < 2 {
		t.Fatalf("found %d clean illnesses in 40 people over 4 months, want a few to check", checked)
	}
}

func mean(xs []float64) float64 {
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

// TestScriptedEpisodes: the demo's way of making someone ill now, or take a trip.
func TestScriptedEpisodes(t *testing.T) {
	start := t0.Add(20 * 24 * time.Hour)
	pop := &Population{Seed: 1, Users: 1, ScriptedOnly: true, Scripted: map[int][]Episode{0: {
		{Kind: Illness, Start: start, Days: 5, RHRShift: 8, HRVFactor: 0.6},
		{Kind: Travel, Start: start.Add(10 * 24 * time.Hour), Days: 4},
	}}}
	p := pop.User(0)
	eps := p.Episodes(t0, start.Add(30*24*time.Hour))
	if len(eps) != 2 || eps[0].Kind != Illness || eps[1].Kind != Travel || eps[1].Zone == "" || eps[1].Zone == p.Home {
		t.Fatalf("got episodes %+v, want the scripted illness and a trip away", eps)
	}
	rhr := dailyValues(p, "resting_heart_rate", t0, start.Add(8*24*time.Hour))
	peak := start.In(p.home).AddDate(0, 0, 3).Format(time.DateOnly)
	base := start.In(p.home).AddDate(0, 0, -3).Format(time.DateOnly)
	if rhr[peak]-rhr[base] < 5 {
		t.Errorf("resting HR %v on %s vs %v on %s: want the illness to raise it", rhr[peak], peak, rhr[base], base)
	}
	// Away, the samples carry the trip's zone and its offset.
	trip := start.Add(12 * 24 * time.Hour)
	loc, _ := time.LoadLocation(eps[1].Zone)
	_, wantOff := trip.In(loc).Zone()
	for _, in := range p.Samples(trip, trip.Add(time.Hour)) {
		st, _ := time.Parse(time.RFC3339, in.Start)
		if _, off := st.Zone(); in.Zone != eps[1].Zone || off != wantOff {
			t.Fatalf("got sample %+v on a trip to %s, want its zone and offset", in, eps[1].Zone)
		}
	}
}

// TestPoorSleepWeek: a week of poor sleep makes nights shorter and bedtimes scattered.
func TestPoorSleepWeek(t *testing.T) {
	start := t0.Add(40 * 24 * time.Hour)
	pop := &Population{Seed: 3, Users: 1, ScriptedOnly: true, Scripted: map[int][]Episode{0: {{Kind: PoorSleep, Start: start, Days: 7}}}}
	p := pop.User(0)
	d0 := p.homeDay(start)
	stats := func(from int) (hours, midSD float64) {
		var mids []float64
		for d := from; d < from+7; d++ {
			b, w := p.nightBounds(d)
			hours += w.Sub(b).Hours() / 7
			mid := b.Add(w.Sub(b) / 2).In(p.home)
			m := float64(mid.Hour()*60 + mid.Minute())
			if m > 720 {
				m -= 1440
			}
			mids = append(mids, m)
		}
		mu := mean(mids)
		for _, m := range mids {
			midSD += (m - mu) * (m - mu) / 6
		}
		return hours, math.Sqrt(midSD)
	}
	goodH, goodSD := stats(d0 - 14)
	poorH, poorSD := stats(d0)
	t.Logf("in bed %.1f h a night (mid-point SD %.0f min), then %.1f h (SD %.0f min)", goodH, goodSD, poorH, poorSD)
	if poorH > goodH-0.75 || poorSD < goodSD+30 {
		t.Errorf("got %.1f h in bed, mid-point SD %.0f min in the poor week vs %.1f h, %.0f min: want shorter, scattered nights", poorH, poorSD, goodH, goodSD)
	}
}

// TestUploadsBehaveLikeDevices checks the device layer over two weeks: every sample
// measured is uploaded, with the device's skew, once or (re-sent) twice; corrupted copies
// are rejected with the code MalformedCode names and nothing else is; some uploads catch up
// after an offline period and some arrive out of order.
func TestUploadsBehaveLikeDevices(t *testing.T) {
	pop := &Population{Seed: 17, Users: 3, DevicesPerUser: 4, MalformedRate: 0.005}
	since, to := t0, t0.Add(10*24*time.Hour)
	now := to.Add(time.Hour)
	var resent, malformed, catchUps, shuffled, skewed int
	codes := map[string]int{}
	for i := range pop.Users {
		p := pop.User(i)
		truth := map[string]pulsebase.SampleInput{}
		for _, in := range p.Samples(since, to) {
			truth[in.ID] = in
		}
		seen := map[string]int{}
		last := map[string]time.Time{} // device → its last upload
		for _, u := range p.Uploads(since, since, to) {
			dev := p.Devices[u.Device]
			if u.At.Sub(last[dev.ID]) < dev.Every && !last[dev.ID].IsZero() {
				t.Fatalf("device %s uploaded at %s and %s, want at most every %s", dev.ID, last[dev.ID], u.At, dev.Every)
			}
			last[dev.ID] = u.At
			if len(u.Samples) > MaxBatch*3 {
				t.Errorf("an upload of %d samples", len(u.Samples))
			}
			resent += u.Resent
			malformed += u.Malformed
			if u.CatchUp {
				catchUps++
			}
			if !slices.IsSortedFunc(u.Samples, func(a, b pulsebase.SampleInput) int { return compareTimes(a.Start, b.Start) }) {
				shuffled++
			}
			for _, in := range u.Samples {
				_, probs := pulsebase.Normalize(in, now)
				if code := MalformedCode(in); code != "" {
					codes[code]++
					if len(probs) == 0 || probs[0].Code != code {
						t.Errorf("corrupted sample %+v: got problems %v, want %s", in, probs, code)
					}
					continue
				}
				if len(probs) > 0 {
					t.Fatalf("uploaded sample %+v: %v", in, probs)
				}
				orig, ok := truth[in.ID]
				if !ok {
					t.Fatalf("uploaded sample %+v was never measured", in)
				}
				if in.Source != dev.ID {
					t.Fatalf("device %s uploaded %s's sample", dev.ID, in.Source)
				}
				got, _ := time.Parse(time.RFC3339, in.Start)
				want, _ := time.Parse(time.RFC3339, orig.Start)
				if off := got.Sub(want) - dev.Skew; off < -20*time.Second || off > 20*time.Second {
					t.Errorf("sample %s starts %s late on a device %s off: want its skew, give or take a drift", in.ID, got.Sub(want), dev.Skew)
				}
				if got != want {
					skewed++
				}
				seen[in.ID]++
			}
		}
		// Everything measured before a device's last upload went up.
		for id, in := range truth {
			avail := in.End
			if avail == "" {
				avail = in.Start
			}
			at, _ := time.Parse(time.RFC3339, avail)
			if seen[id] == 0 && at.Before(last[in.Source].Add(-time.Minute)) {
				t.Fatalf("user %d: sample %s (available %s) was never uploaded (its device's last upload: %s)", i, id, avail, last[in.Source])
			}
			if seen[id] > 2 {
				t.Errorf("sample %s uploaded %d times", id, seen[id])
			}
		}
	}
	t.Logf("re-sent %d, malformed %d %v, catch-ups %d, out of order %d, skewed %d", resent, malformed, codes, catchUps, shuffled, skewed)
	if resent == 0 || malformed == 0 || catchUps == 0 || shuffled == 0 || skewed == 0 {
		t.Error("want re-sends, malformed samples, catch-ups, out-of-order uploads and skewed clocks in ten days of three people")
	}
	if len(codes) < 4 {
		t.Errorf("got malformations %v, want every kind", codes)
	}
}

func compareTimes(a, b string) int {
	ta, _ := time.Parse(time.RFC3339, a)
	tb, _ := time.Parse(time.RFC3339, b)
	return ta.Compare(tb)
}

func TestSubject(t *testing.T) {
	if got := Subject(7, 12); got != "sim-7-0012" {
		t.Errorf("got %q, want sim-7-0012", got)
	}
	if got := fmt.Sprint(len((&Population{Seed: 1, Users: 1, DevicesPerUser: 9}).User(0).Devices)); got != "8" {
		t.Errorf("got %s devices for 9 asked, want the maximum 8", got)
	}
}

// TestDemoConfigScriptsTheRecommendations: in the demo's data, bob's resting heart rate is
// at least 3 SD above his previous 14 days yesterday and today (elevated_rhr), and carol's
// sleep mid-point scatters by more than 90 minutes over the last week (bedtime_consistency).
func TestDemoConfigScriptsTheRecommendations(t *testing.T) {
	probe := DemoConfig("http://127.0.0.1:8080", t0)
	home := probe.Population.User(1).Home
	loc, _ := time.LoadLocation(home)
	var nows []time.Time
	for d := range 12 {
		// After bob's wake-up: before it, today's value is not there yet, and the rule
		// fires when it comes.
		nows = append(nows, time.Date(2025, 3, 9+31*d, 11+d%10, 30, 0, 0, loc))
	}
	for _, now := range nows {
		cfg := DemoConfig("http://127.0.0.1:8080", now)
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		bob := cfg.Population.User(1)
		rhr := dailyValues(bob, "resting_heart_rate", now.Add(-cfg.History), now)
		day := func(back int) string { return now.AddDate(0, 0, -back).Format(time.DateOnly) }
		for back := 0; back <= 1; back++ {
			var prev []float64
			for b := back + 1; b <= back+14; b++ {
				v, ok := rhr[day(b)]
				if !ok {
					t.Fatalf("%s: bob has no resting heart rate on %s: the history must give 14 days before %s", now, day(b), day(back))
				}
				prev = append(prev, v)
			}
			mu, sd := mean(prev), 0.0
			for _, v := range prev {
				sd += (v - mu) * (v - mu) / 13
			}
			if z := (rhr[day(back)] - mu) / math.Sqrt(sd); z < 3 {
				t.Errorf("%s: bob's resting heart rate %v on %s is %.1f SD above %.1f, want ≥ 3", now, rhr[day(back)], day(back), z, mu)
			}
		}
		carol := cfg.Population.User(2)
		var mids []float64
		for d := carol.dayAt(now) - 7; d < carol.dayAt(now); d++ {
			b, w := carol.nightBounds(d)
			mid := b.Add(w.Sub(b) / 2).In(carol.home)
			m := float64(mid.Hour()*60 + mid.Minute())
			if m > 720 {
				m -= 1440
			}
			mids = append(mids, m)
		}
		mu, sd := mean(mids), 0.0
		for _, m := range mids {
			sd += (m - mu) * (m - mu) / 6
		}
		if math.Sqrt(sd) <= 90 {
			t.Errorf("%s: carol's sleep mid-point varies by %.0f min over the last week, want > 90", now, math.Sqrt(sd))
		}
	}
}
