package recommend

import (
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/pulsebase/pulsebase"
	"gonum.org/v1/gonum/stat/distuv"
)

// Ranking and delivery (docs/recommendations.md "Ranking"): candidates that pass the
// policy's constraints are ranked by a Thompson-sampling bandit over kinds — per user, a
// Beta posterior per kind whose prior is the population's pooled success rate — and the
// best one is delivered. Every decision records each candidate's features, sampled score
// and the reason it was or was not delivered.

// Reasons a candidate was or was not delivered.
const (
	ReasonDelivered     = "delivered"
	ReasonNudgeDisabled = "nudge_disabled"
	ReasonActive        = "already_active"
	ReasonCooldown      = "cooldown"
	ReasonQuietHours    = "quiet_hours"
	ReasonDailyCap      = "daily_cap"
	ReasonOutranked     = "outranked"
	// ReasonTextFailed is a delivery given up because the rule's texts did not render.
	ReasonTextFailed = "text_failed"
)

// Reasons lists every reason, for metrics.
var Reasons = []string{ReasonDelivered, ReasonNudgeDisabled, ReasonActive, ReasonCooldown, ReasonQuietHours, ReasonDailyCap, ReasonOutranked, ReasonTextFailed}

// DefaultDailyCap is how many recommendations a user gets a day at most by default (the
// JITAI literature's dose: about 1.5–3 a day).
const DefaultDailyCap = 3

// Reward returns what a feedback action teaches the bandit, from 0 (unwanted) to 1
// (wanted): accepted and completed 1, dismissed and ignored 0, a rating from 1 to 5 as
// (rating−1)/4 in place of the action's. A snooze teaches nothing (ok false).
func Reward(action string, rating int) (r float64, ok bool) {
	switch action {
	case pulsebase.ActionAccepted, pulsebase.ActionCompleted:
		r = 1
	case pulsebase.ActionDismissed, pulsebase.ActionIgnored:
		r = 0
	default:
		return 0, false
	}
	if rating >= 1 && rating <= 5 {
		r = float64(rating-1) / 4
	}
	return r, true
}

// Arm is a Beta posterior's evidence: successes and failures (fractional rewards add
// r and 1−r).
type Arm struct {
	Success float64 `json:"success"`
	Failure float64 `json:"failure"`
}

// Add adds a reward.
func (a *Arm) Add(r float64) { a.Success += r; a.Failure += 1 - r }

// Stats is a user's bandit evidence by kind.
type Stats map[string]Arm

// PriorStrength is how many of a user's own feedbacks the pooled prior is worth at most:
// a new user starts at the population's rate, and their own feedback outweighs it after
// a few.
const PriorStrength = 4.0

// Prior returns the Beta(α, β) prior of kind from the pooled statistics: the pooled mean
// (with a uniform prior under it) at a strength of min(N, PriorStrength), over Beta(1, 1).
func Prior(pool map[string]pulsebase.PoolStat, kind string) (alpha, beta float64) {
	p := pool[kind]
	mean := (p.Success + 1) / (p.Success + p.Failure + 2)
	k := math.Min(float64(p.N), PriorStrength)
	return 1 + mean*k, 1 + (1-mean)*k
}

// Delivered is a recommendation delivered to the user, as the policy needs it.
type Delivered struct {
	ID      string
	Kind    string
	At      time.Time
	Expires time.Time
	// Closed reports feedback that ends it (dismissed, completed, snoozed or ignored).
	Closed bool
}

// Active reports whether d is still active at now.
func (d Delivered) Active(now time.Time) bool { return !d.Closed && now.Before(d.Expires) }

// Policy is the delivery policy.
type Policy struct {
	// DailyCap is the most recommendations delivered per local day; 0 means
	// DefaultDailyCap.
	DailyCap int
}

// Scored is a candidate in a decision.
type Scored struct {
	Kind     string  `json:"kind"`
	Priority int     `json:"priority"`
	Alpha    float64 `json:"alpha"`
	Beta     float64 `json:"beta"`
	// Sample is the draw from Beta(Alpha, Beta) and Score the sample weighed by priority
	// (×0.5 at priority 0 to ×1 at 100); both only for candidates that passed the
	// constraints.
	Sample float64 `json:"sample,omitempty"`
	Score  float64 `json:"score,omitempty"`
	Reason string  `json:"reason"`
}

// Decision is the record of one ranking: what was known, what was drawn, what was done.
type Decision struct {
	At       time.Time      `json:"at"`
	Trigger  string         `json:"trigger"`
	Features map[string]any `json:"features"`
	// Candidates in the order the rules fired; Delivered is the index of the delivered
	// one, −1 for none.
	Candidates []Scored `json:"candidates"`
	Delivered  int      `json:"delivered"`
}

// daypart names the part of the day of a local hour, a context feature.
func daypart(h int) string {
	switch {
	case h < 6:
		return "night"
	case h < 12:
		return "morning"
	case h < 18:
		return "afternoon"
	}
	return "evening"
}

// Decide ranks cands for a user at their local clock now and picks at most one to
// deliver. recent lists the user's deliveries of the last days (for the cap, cooldowns
// and active recommendations), stats their bandit evidence, pool the pooled prior.
func (pol Policy) Decide(now time.Time, trigger string, cands []Candidate, prof Profile, recent []Delivered,
	stats Stats, pool map[string]pulsebase.PoolStat, rng *rand.Rand) Decision {
	capN := pol.DailyCap
	if capN <= 0 {
		capN = DefaultDailyCap
	}
	today := now.Format(time.DateOnly)
	deliveredToday := 0
	for _, d := range recent {
		if d.At.In(now.Location()).Format(time.DateOnly) == today {
			deliveredToday++
		}
	}
	dec := Decision{At: now, Trigger: trigger, Delivered: -1, Features: map[string]any{
		"hour": now.Hour(), "weekday": int(now.Weekday()), "daypart": daypart(now.Hour()),
		"delivered_today": deliveredToday, "daily_cap": capN, "quiet_hours": prof.InQuietHours,
	}}
	best := -1
	for _, c := range cands {
		a, b := Prior(pool, c.Kind)
		arm := stats[c.Kind]
		s := Scored{Kind: c.Kind, Priority: c.Priority, Alpha: a + arm.Success, Beta: b + arm.Failure}
		switch {
		case !prof.NudgeEnabled(c.Nudge):
			s.Reason = ReasonNudgeDisabled
		case slices.ContainsFunc(recent, func(d Delivered) bool { return d.Kind == c.Kind && d.Active(now) }):
			s.Reason = ReasonActive
		case slices.ContainsFunc(recent, func(d Delivered) bool { return d.Kind == c.Kind && now.Sub(d.At) < c.Cooldown }):
			s.Reason = ReasonCooldown
		case prof.InQuietHours:
			s.Reason = ReasonQuietHours
		case deliveredToday >= capN:
			s.Reason = ReasonDailyCap
		default:
			s.Sample = betaSample(rng, s.Alpha, s.Beta)
			s.Score = s.Sample * (0.5 + float64(c.Priority)/200)
			s.Reason = ReasonOutranked
			if best < 0 || s.Score > dec.Candidates[best].Score {
				best = len(dec.Candidates)
			}
		}
		dec.Candidates = append(dec.Candidates, s)
	}
	if best >= 0 {
		dec.Candidates[best].Reason = ReasonDelivered
		dec.Delivered = best
	}
	return dec
}

// betaSample draws from Beta(a, b).
func betaSample(rng *rand.Rand, a, b float64) float64 {
	return distuv.Beta{Alpha: a, Beta: b, Src: rng}.Rand()
}
