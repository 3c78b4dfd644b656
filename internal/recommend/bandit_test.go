package recommend

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
)

func TestReward(t *testing.T) {
	t.Parallel()
	tests := []struct {
		action string
		rating int
		want   float64
		ok     bool
	}{
		{pulsebase.ActionAccepted, 0, 1, true},
		{pulsebase.ActionCompleted, 0, 1, true},
		{pulsebase.ActionDismissed, 0, 0, true},
		{pulsebase.ActionIgnored, 0, 0, true},
		{pulsebase.ActionSnoozed, 0, 0, false},
		{pulsebase.ActionSnoozed, 5, 0, false},
		{"", 0, 0, false},
		{"liked", 4, 0, false},
		// A rating replaces the action's reward.
		{pulsebase.ActionCompleted, 1, 0, true},
		{pulsebase.ActionCompleted, 3, 0.5, true},
		{pulsebase.ActionDismissed, 5, 1, true},
		{pulsebase.ActionAccepted, 4, 0.75, true},
		// Out of range ratings are not ratings.
		{pulsebase.ActionDismissed, 6, 0, true},
		{pulsebase.ActionAccepted, -1, 1, true},
	}
	for _, tc := range tests {
		got, ok := Reward(tc.action, tc.rating)
		if got != tc.want || ok != tc.ok {
			t.Errorf("Reward(%q, %d) = %v, %v; want %v, %v", tc.action, tc.rating, got, ok, tc.want, tc.ok)
		}
	}
}

func TestArmAdd(t *testing.T) {
	t.Parallel()
	var a Arm
	for _, r := range []float64{1, 0, 0.25} {
		a.Add(r)
	}
	if a.Success != 1.25 || a.Failure != 1.75 {
		t.Errorf("got %+v, want success 1.25, failure 1.75", a)
	}
}

func TestPrior(t *testing.T) {
	t.Parallel()
	pool := map[string]pulsebase.PoolStat{
		"liked":  {Success: 8, Failure: 2, N: 10},
		"few":    {Success: 2, Failure: 0, N: 2},
		"frac":   {Success: 0.5, Failure: 0.5, N: 1},
		"hated":  {Success: 0, Failure: 998, N: 998},
		"no n":   {Success: 5, Failure: 5},
		"mostly": {Success: 300, Failure: 100, N: 400},
	}
	tests := []struct {
		kind        string
		alpha, beta float64
	}{
		{"unknown", 1, 1},
		// mean (8+1)/(10+2) = 0.75 at strength 4.
		{"liked", 1 + 0.75*4, 1 + 0.25*4},
		// mean 3/4 at strength N = 2.
		{"few", 1 + 0.75*2, 1 + 0.25*2},
		{"frac", 1.5, 1.5},
		{"hated", 1 + 4.0/1000, 1 + 4*999.0/1000},
		{"no n", 1, 1},
		{"mostly", 1 + 4*301.0/402, 1 + 4*101.0/402},
	}
	for _, tc := range tests {
		a, b := Prior(pool, tc.kind)
		if !near(a, tc.alpha) || !near(b, tc.beta) {
			t.Errorf("Prior(%q) = %v, %v; want %v, %v", tc.kind, a, b, tc.alpha, tc.beta)
		}
		// The pool is worth at most PriorStrength feedbacks.
		if a+b > 2+PriorStrength+1e-9 {
			t.Errorf("Prior(%q) has strength %v, over %v", tc.kind, a+b-2, PriorStrength)
		}
	}
	if a, b := Prior(nil, "x"); a != 1 || b != 1 {
		t.Errorf("Prior of no pool = %v, %v; want 1, 1", a, b)
	}
}

func cand(kind string, priority int, cooldown time.Duration, nudge string) Candidate {
	return Candidate{Kind: kind, Priority: priority, Expires: time.Hour, Cooldown: cooldown, Nudge: nudge}
}

func TestDecideConstraints(t *testing.T) {
	t.Parallel()
	noon := clock(12, 0)
	prof := profileOf(nil, noon)
	quiet := profileOf(nil, clock(23, 0))
	onlyBedtime := profileOf(map[string]any{"enabled_nudges": []string{"bedtime"}}, noon)
	ago := func(d time.Duration) time.Time { return noon.Add(-d) }
	x, y := cand("x", 50, 3*time.Hour, "hydration"), cand("y", 50, 0, "")
	tests := []struct {
		name      string
		now       time.Time
		prof      Profile
		cands     []Candidate
		recent    []Delivered
		cap       int
		reasons   []string
		delivered string
	}{
		{name: "free", now: noon, prof: prof, cands: []Candidate{x}, reasons: []string{ReasonDelivered}, delivered: "x"},
		{name: "none", now: noon, prof: prof},
		{name: "quiet hours", now: clock(23, 0), prof: quiet, cands: []Candidate{x, y}, reasons: []string{ReasonQuietHours, ReasonQuietHours}},
		{name: "x in cooldown", now: noon, prof: prof, cands: []Candidate{x, y},
			recent:  []Delivered{{Kind: "x", At: ago(2*time.Hour + 59*time.Minute), Expires: ago(time.Hour), Closed: true}},
			reasons: []string{ReasonCooldown, ReasonDelivered}, delivered: "y"},
		{name: "x cooldown over", now: noon, prof: prof, cands: []Candidate{x},
			recent:  []Delivered{{Kind: "x", At: ago(3 * time.Hour), Expires: ago(2 * time.Hour)}},
			reasons: []string{ReasonDelivered}, delivered: "x"},
		{name: "y active", now: noon, prof: prof, cands: []Candidate{y},
			recent:  []Delivered{{Kind: "y", At: ago(30 * time.Minute), Expires: noon.Add(time.Minute)}},
			reasons: []string{ReasonActive}},
		{name: "y closed", now: noon, prof: prof, cands: []Candidate{y},
			recent:  []Delivered{{Kind: "y", At: ago(30 * time.Minute), Expires: noon.Add(time.Minute), Closed: true}},
			reasons: []string{ReasonDelivered}, delivered: "y"},
		{name: "y expired", now: noon, prof: prof, cands: []Candidate{y},
			recent:  []Delivered{{Kind: "y", At: ago(time.Hour), Expires: noon}},
			reasons: []string{ReasonDelivered}, delivered: "y"},
		{name: "nudge off", now: noon, prof: onlyBedtime, cands: []Candidate{x, y},
			reasons: []string{ReasonNudgeDisabled, ReasonDelivered}, delivered: "y"},
		{name: "cap of 3 reached", now: noon, prof: prof, cands: []Candidate{y}, recent: []Delivered{
			{Kind: "a", At: ago(5 * time.Hour)}, {Kind: "b", At: ago(4 * time.Hour)}, {Kind: "c", At: ago(3 * time.Hour)}},
			reasons: []string{ReasonDailyCap}},
		// 23:30 yesterday on the user's clock is today in UTC: it does not count today.
		{name: "cap counts local days", now: noon, prof: prof, cands: []Candidate{y}, recent: []Delivered{
			{Kind: "a", At: clock(0, 0).Add(-30 * time.Minute).UTC()}, {Kind: "b", At: ago(4 * time.Hour)}, {Kind: "c", At: ago(3 * time.Hour)}},
			reasons: []string{ReasonDelivered}, delivered: "y"},
		{name: "cap of 4", now: noon, prof: prof, cap: 4, cands: []Candidate{y}, recent: []Delivered{
			{Kind: "a", At: ago(5 * time.Hour)}, {Kind: "b", At: ago(4 * time.Hour)}, {Kind: "c", At: ago(3 * time.Hour)}},
			reasons: []string{ReasonDelivered}, delivered: "y"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(1, 2))
			dec := Policy{DailyCap: tc.cap}.Decide(tc.now, "metrics", tc.cands, tc.prof, tc.recent, nil, nil, rng)
			var reasons []string
			for _, c := range dec.Candidates {
				reasons = append(reasons, c.Reason)
			}
			if !slices.Equal(reasons, tc.reasons) {
				t.Errorf("reasons %v, want %v", reasons, tc.reasons)
			}
			got := ""
			if dec.Delivered >= 0 {
				got = dec.Candidates[dec.Delivered].Kind
			}
			if got != tc.delivered {
				t.Errorf("delivered %q, want %q", got, tc.delivered)
			}
			for _, c := range dec.Candidates {
				if (c.Reason == ReasonDelivered || c.Reason == ReasonOutranked) != (c.Sample > 0) {
					t.Errorf("%s: reason %s with sample %v", c.Kind, c.Reason, c.Sample)
				}
			}
			if dec.Features["quiet_hours"] != tc.prof.InQuietHours || dec.Trigger != "metrics" || !dec.At.Equal(tc.now) {
				t.Errorf("decision record %+v", dec)
			}
		})
	}
}

func TestDecideRecordsPosteriorAndPriority(t *testing.T) {
	t.Parallel()
	now := clock(12, 0)
	pool := map[string]pulsebase.PoolStat{"x": {Success: 8, Failure: 2, N: 10}}
	stats := Stats{"x": {Success: 3, Failure: 1}}
	// Equal evidence, priority 100 against 1: the score is the sample ×1 against ×0.505.
	hi, lo := cand("hi", 100, 0, ""), cand("lo", 1, 0, "")
	rng := rand.New(rand.NewPCG(3, 4))
	wins := 0
	for range 2000 {
		dec := Policy{}.Decide(now, "at 12:00", []Candidate{hi, lo, cand("x", 50, 0, "")}, profileOf(nil, now), nil, stats, pool, rng)
		for _, c := range dec.Candidates {
			want := 0.5 + float64(c.Priority)/200
			if !near(c.Score, c.Sample*want) {
				t.Fatalf("%s: score %v for sample %v at priority %d", c.Kind, c.Score, c.Sample, c.Priority)
			}
		}
		if x := dec.Candidates[2]; x.Alpha != 4+3 || x.Beta != 2+1 {
			t.Fatalf("x posterior Beta(%v, %v), want Beta(7, 3)", x.Alpha, x.Beta)
		}
		if dec.Candidates[0].Score > dec.Candidates[1].Score {
			wins++
		}
		if dec.Features["daily_cap"] != DefaultDailyCap || dec.Features["daypart"] != "afternoon" {
			t.Fatalf("features %v", dec.Features)
		}
	}
	// Uniform samples: P(u > 0.505 v) = 1 − 0.505/2 ≈ 0.75.
	if share := float64(wins) / 2000; share < 0.7 || share > 0.8 {
		t.Errorf("priority 100 outscored priority 1 in %.2f of draws, want about 0.75", share)
	}
}

// TestPooledPrior checks that a user with no feedback of their own starts from the
// population's rates, and that their own feedback then outweighs the pool.
func TestPooledPrior(t *testing.T) {
	t.Parallel()
	now := clock(12, 0)
	prof := profileOf(nil, now)
	a, b := cand("a", 50, 0, ""), cand("b", 50, 0, "")
	share := func(pool map[string]pulsebase.PoolStat, stats Stats, seed uint64) float64 {
		rng := rand.New(rand.NewPCG(seed, seed))
		n := 0
		for range 4000 {
			dec := Policy{}.Decide(now, "metrics", []Candidate{a, b}, prof, nil, stats, pool, rng)
			if dec.Delivered >= 0 && dec.Candidates[dec.Delivered].Kind == "a" {
				n++
			}
		}
		return float64(n) / 4000
	}
	strong := map[string]pulsebase.PoolStat{"a": {Success: 900, Failure: 100, N: 1000}, "b": {Success: 100, Failure: 900, N: 1000}}
	weak := map[string]pulsebase.PoolStat{"a": {Success: 1, N: 1}, "b": {Failure: 1, N: 1}}
	none := share(nil, nil, 1)
	if none < 0.45 || none > 0.55 {
		t.Errorf("no pool: a chosen %.3f of the time, want about 0.5", none)
	}
	s := share(strong, nil, 2)
	if s < 0.9 {
		t.Errorf("pool favouring a: a chosen %.3f of the time, want ≥ 0.9", s)
	}
	w := share(weak, nil, 3)
	if w <= none+0.05 || w >= s {
		t.Errorf("one feedback each: a chosen %.3f of the time, want between %.3f and %.3f", w, none, s)
	}
	// 20 of the user's own feedbacks against a: b now wins despite the pool.
	own := Stats{"a": {Failure: 20}, "b": {Success: 15, Failure: 5}}
	if got := share(strong, own, 4); got > 0.1 {
		t.Errorf("own feedback against a: a chosen %.3f of the time, want ≤ 0.1", got)
	}
}

// The population of TestBanditLearnsPreferences.
const (
	simUsers    = 30
	simFeedback = 200 // feedback events of each user before measuring
	simMeasure  = 100 // deliveries measured after that
	simCooldown = 3 * time.Hour
	simExpires  = time.Hour
)

var simKinds = []string{"walk", "breathe", "water", "stretch", "bedtime"}

// simUser is one simulated user.
type simUser struct {
	pref  string
	quiet [2]int64       // quiet hours, minutes of the day
	view  map[string]any // profile view
	stats Stats
	log   []Delivered // every delivery, oldest first
	// pending are ignored recommendations, learned at their expiry as the server does.
	pending  []int // indexes into log
	feedback int
	// Measured deliveries after the learning phase, and those of the preferred kind.
	measured, preferred int
	// Measured deliveries at which the preferred kind could have been delivered, and
	// those of them that delivered it.
	couldPrefer, didPrefer int
}

// TestBanditLearnsPreferences is the learning test: in a simulated population
// where users prefer different kinds, after 200 feedback events per user the bandit
// delivers each user's preferred kind at least 80 % of the time, while caps, cooldowns
// and quiet hours are never violated (checked on every decision).
func TestBanditLearnsPreferences(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(2026, 2026))
	quiets := [][2]string{{"22:00", "07:00"}, {"23:30", "06:30"}, {"21:00", "08:00"}}
	users := make([]*simUser, simUsers)
	for i := range users {
		q := quiets[i%len(quiets)]
		u := &simUser{pref: simKinds[i%len(simKinds)], stats: Stats{}}
		if i%len(quiets) != 0 { // the others keep the default 22:00–07:00
			u.view = map[string]any{"quiet_hours": map[string]any{"start": q[0], "end": q[1]}}
		}
		a, _ := time.Parse("15:04", q[0])
		b, _ := time.Parse("15:04", q[1])
		u.quiet = [2]int64{int64(a.Hour()*60 + a.Minute()), int64(b.Hour()*60 + b.Minute())}
		users[i] = u
	}
	cands := make([]Candidate, len(simKinds))
	for i, k := range simKinds {
		cands[i] = cand(k, 50, simCooldown, "")
	}
	pool := map[string]pulsebase.PoolStat{}
	learn := func(u *simUser, kind, action string, at time.Time) {
		r, ok := Reward(action, 0)
		if !ok {
			t.Fatalf("no reward for %s", action)
		}
		arm := u.stats[kind]
		arm.Add(r)
		u.stats[kind] = arm
		p := pool[kind]
		p.Success += r
		p.Failure += 1 - r
		p.N++
		p.Updated = at
		pool[kind] = p
		u.feedback++
	}
	reasons := map[string]int{}
	decisions := 0
	pol := Policy{}
	day0 := time.Date(2026, 1, 5, 0, 0, 0, 0, chicago)
	done := func() bool {
		for _, u := range users {
			if u.measured < simMeasure {
				return false
			}
		}
		return true
	}
	for day := 0; !done(); day++ {
		if day > 400 {
			t.Fatal("the population did not finish in 400 days")
		}
		midnight := day0.AddDate(0, 0, day)
		for _, u := range users {
			// Decision points: one in each 4-hour block of the day, night included, at a
			// random time in its first 90 minutes; after some, another soon after (a
			// burst of metric changes), which meets the active and cooldown rules.
			var points []time.Time
			for block := range 6 {
				at := midnight.Add(time.Duration(block)*4*time.Hour + time.Duration(rng.IntN(90))*time.Minute)
				points = append(points, at)
				if rng.Float64() < 0.05 {
					points = append(points, at.Add(time.Duration(10+rng.IntN(50))*time.Minute))
				}
			}
			for _, now := range points {
				// Ignored recommendations teach at their expiry.
				u.pending = slices.DeleteFunc(u.pending, func(i int) bool {
					d := u.log[i]
					if !now.Before(d.Expires) {
						learn(u, d.Kind, pulsebase.ActionIgnored, d.Expires)
						return true
					}
					return false
				})
				var recent []Delivered
				for _, d := range u.log {
					if now.Sub(d.At) < 48*time.Hour {
						recent = append(recent, d)
					}
				}
				prof := profileOf(u.view, now)
				dec := pol.Decide(now, "metrics", cands, prof, recent, u.stats, pool, rng)
				decisions++
				for _, c := range dec.Candidates {
					reasons[c.Reason]++
				}
				checkDecision(t, u, now, dec)
				if t.Failed() {
					t.FailNow()
				}
				if dec.Delivered < 0 {
					continue
				}
				kind := dec.Candidates[dec.Delivered].Kind
				if u.feedback >= simFeedback && u.measured < simMeasure {
					u.measured++
					if kind == u.pref {
						u.preferred++
					}
					if i := slices.IndexFunc(dec.Candidates, func(c Scored) bool { return c.Kind == u.pref }); i >= 0 &&
						(dec.Candidates[i].Reason == ReasonDelivered || dec.Candidates[i].Reason == ReasonOutranked) {
						u.couldPrefer++
						if kind == u.pref {
							u.didPrefer++
						}
					}
				}
				// The user answers at once, or ignores it.
				d := Delivered{ID: fmt.Sprint(len(u.log)), Kind: kind, At: now, Expires: now.Add(simExpires)}
				p := 0.15
				if kind == u.pref {
					p = 0.8
				}
				switch x := rng.Float64(); {
				case x < p:
					d.Closed = true
					learn(u, kind, pulsebase.ActionAccepted, now)
				case x < p+(1-p)/2:
					d.Closed = true
					learn(u, kind, pulsebase.ActionDismissed, now)
				default:
					u.pending = append(u.pending, len(u.log))
				}
				u.log = append(u.log, d)
			}
		}
	}
	// Every constraint was met at least once: the checks above had something to check.
	for _, r := range []string{ReasonQuietHours, ReasonDailyCap, ReasonCooldown, ReasonActive, ReasonOutranked, ReasonDelivered} {
		if reasons[r] == 0 {
			t.Errorf("no candidate was %s in %d decisions: the simulation does not exercise it", r, decisions)
		}
	}
	for i, u := range users {
		share := float64(u.preferred) / float64(u.measured)
		when := float64(u.didPrefer) / float64(u.couldPrefer)
		if share < 0.8 {
			t.Errorf("user %d (prefers %s): preferred kind %.2f of %d deliveries, want ≥ 0.8", i, u.pref, share, u.measured)
		}
		if when < 0.9 {
			t.Errorf("user %d (prefers %s): preferred kind %.2f of the %d deliveries where it was allowed, want ≥ 0.9",
				i, u.pref, when, u.couldPrefer)
		}
		if testing.Verbose() {
			t.Logf("user %2d prefers %-8s: %.2f of deliveries, %.2f where allowed; %d deliveries in all", i, u.pref, share, when, len(u.log))
		}
	}
	t.Logf("%d decisions; reasons %v", decisions, reasons)
}

// checkDecision checks one decision of the simulation against the constraints, computed
// from the user's own settings and delivery log, not from the policy's view of them.
func checkDecision(t *testing.T, u *simUser, now time.Time, dec Decision) {
	t.Helper()
	m := int64(now.Hour()*60 + now.Minute())
	quiet := m >= u.quiet[0] || m < u.quiet[1] // every simulated span crosses midnight
	today := 0
	for _, d := range u.log {
		if d.At.In(now.Location()).Format(time.DateOnly) == now.Format(time.DateOnly) {
			today++
		}
	}
	allowed := func(kind string) bool {
		for _, d := range u.log {
			if d.Kind == kind && (now.Sub(d.At) < simCooldown || (!d.Closed && now.Before(d.Expires))) {
				return false
			}
		}
		return true
	}
	if dec.Delivered < 0 {
		// Nothing delivered: only because nothing could be.
		if !quiet && today < DefaultDailyCap && slices.ContainsFunc(simKinds, allowed) {
			t.Errorf("%s: nothing delivered though %d today and a kind is allowed: %+v", now, today, dec.Candidates)
		}
		return
	}
	kind := dec.Candidates[dec.Delivered].Kind
	switch {
	case quiet:
		t.Errorf("%s: delivered %s in quiet hours %v", now, kind, u.quiet)
	case today >= DefaultDailyCap:
		t.Errorf("%s: delivered %s after %d today", now, kind, today)
	case !allowed(kind):
		t.Errorf("%s: delivered %s within its cooldown or while one is active", now, kind)
	}
	if n := slices.IndexFunc(dec.Candidates, func(c Scored) bool { return c.Reason == ReasonDelivered }); n != dec.Delivered {
		t.Errorf("%s: delivered index %d, reason delivered at %d", now, dec.Delivered, n)
	}
}
