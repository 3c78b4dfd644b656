package processor

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/agg"
	"github.com/pulsebase/pulsebase/internal/crdt"
	"github.com/pulsebase/pulsebase/internal/recommend"
)

// Recommendations in the stream (docs/recommendations.md): after a commit's changes to a
// user — the sample types applied, the daily metrics recomputed — the user's rules that
// those changes trigger run once (the commit is the debounce), and at the local times of
// the library's scheduled rules the partition's owner runs those. Candidates are ranked
// and filtered by the delivery policy; a delivered recommendation and the decision behind
// it are derived records written in the same fenced transaction as the state that caused
// them, and go out on the change feed through the partition's outbox — so a recommendation
// is made once, whatever crashes or handovers happen, and a scheduled time fires once
// across processors (only the partition's owner runs it, and its run is checkpointed).
//
// A user's schedule (next run, the last run) lives in their sealed state; the partition's
// scheduled record lists the users that have one, so that a new owner knows whom to load.

// ProfileReader reads users' profiles (internal/profile.Service).
type ProfileReader interface {
	Get(ctx context.Context, user string) (*crdt.Document, int64, error)
}

// KindScheduled is a partition's list of users with a scheduled rule run (user
// PendingOwner(p), key "").
const KindScheduled = "scheduled"

// slotGrace is how late a scheduled time may still fire (a processor down at 15:00 that
// is back by 15:59 still sends the 15:00 nudge; later it is skipped).
const slotGrace = time.Hour

// profileTTL is how long a user's profile is reused between evaluations.
const profileTTL = time.Minute

// poolTTL is how long the pooled prior is reused.
const poolTTL = 30 * time.Second

// noteEvery is how often at most a suppressed candidate of the same kind and reason is
// recorded as a decision (a rule that stays true fires at every commit).
const noteEvery = time.Hour

// recState is a user's recommendation state, checkpointed with their window state.
type recState struct {
	// Zone is the IANA zone of the user's latest sample (Offset, in seconds east of UTC,
	// when it had none), ZoneAt that sample's start (Unix seconds).
	Zone   string `json:"zone,omitempty"`
	Offset int    `json:"offset,omitempty"`
	ZoneAt int64  `json:"zone_at,omitempty"`
	// Pacing is the user's step pacing curve.
	Pacing recommend.Pacing `json:"pacing"`
	// Next is when the user's next scheduled run is due and Ran when the last one ran
	// (Unix seconds; scheduled times up to Ran are done).
	Next int64 `json:"next,omitempty"`
	Ran  int64 `json:"ran,omitempty"`
	// Recent lists the deliveries of the last HistoryDays days.
	Recent []delivered `json:"recent,omitempty"`
	// Noted is, by kind, the latest suppression recorded.
	Noted map[string]noted `json:"noted,omitempty"`
	// Delivered reports that the user was ever delivered a recommendation: without, they
	// have no feedback to read.
	Delivered bool `json:"delivered,omitempty"`
	// Pruned is the local date the user's old decisions and recommendations were last
	// deleted.
	Pruned string `json:"pruned,omitempty"`
}

type delivered struct {
	ID      string `json:"id"`
	Kind    string `json:"kind"`
	At      int64  `json:"at"`
	Expires int64  `json:"expires"`
	// Closed reports feedback that ended it, Action the latest action, Settled that its
	// expiry was handled (ignored inferred when it had no feedback).
	Closed  bool   `json:"closed,omitempty"`
	Action  string `json:"action,omitempty"`
	Settled bool   `json:"settled,omitempty"`
}

type noted struct {
	Reason string `json:"reason"`
	At     int64  `json:"at"`
}

func decodeRecState(b []byte) (*recState, error) {
	st := &recState{}
	if len(b) == 0 {
		return st, nil
	}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("recommendation state: %w", err)
	}
	return st, nil
}

// recUser is a user's recommendation run state in memory (besides recState).
type recUser struct {
	changed   map[string]bool // metric names changed since the last commit
	days      map[string]DayObject
	daysDate  string // the local date days was read for
	profile   map[string]any
	profileAt time.Time
	schedRun  bool // a scheduled run is due at this commit
	// dayPart is the part of the rules' state built from days and profile, until either
	// changes.
	dayPart *recommend.DayPart
	// stats is the bandit's evidence from the user's feedback, read at statsAt.
	stats   recommend.Stats
	statsAt time.Time
}

// noteSample records what a sample changes for the rules: its type, and the user's zone.
func (u *userRun) noteRec(smp *pulsebase.Sample) {
	if u.ru.changed == nil {
		u.ru.changed = map[string]bool{}
	}
	u.ru.changed[smp.Type] = true
	if at := smp.Start.Unix(); at >= u.rec.ZoneAt {
		u.rec.ZoneAt = at
		_, u.rec.Offset = smp.Start.Zone()
		u.rec.Zone = smp.Zone
	}
}

// noteDailyChange records the metrics a recomputed day changed for the rules.
func (u *userRun) noteDailyChange(c Change) {
	if u.ru.changed == nil {
		u.ru.changed = map[string]bool{}
	}
	for k, v := range c.Data {
		switch k {
		case "date", "deleted":
		case "baselines":
			if bs, ok := v.(map[string]any); ok {
				for m := range bs {
					u.ru.changed[m] = true
				}
			}
		default:
			u.ru.changed[k] = true
		}
	}
}

// location returns the user's local zone: the profile's time_zone, else their latest
// sample's; nil when unknown.
func (u *userRun) location() *time.Location {
	if z, ok := u.ru.profile["time_zone"].(string); ok && z != "" {
		if loc, err := pulsebase.LoadZone(z); err == nil {
			return loc
		}
	}
	if u.rec.Zone != "" {
		if loc, err := pulsebase.LoadZone(u.rec.Zone); err == nil {
			return loc
		}
	}
	if u.rec.ZoneAt != 0 {
		return time.FixedZone("", u.rec.Offset)
	}
	return nil
}

// patchDays brings the cached day objects up to date after a recomputation: days holds
// every day the recomputation read or made, from the first marked date on.
func (u *userRun) patchDays(days map[string]DayObject, marked []string) {
	u.ru.dayPart = nil
	if u.ru.days == nil {
		return
	}
	for d, o := range days {
		if d >= marked[0] {
			u.ru.days[d] = o
		}
	}
	for _, d := range marked {
		if _, ok := days[d]; !ok {
			delete(u.ru.days, d)
		}
	}
}

// recPool caches the pooled prior for a runner's partitions.
type recPool struct {
	mu   sync.Mutex
	at   time.Time
	pool map[string]pulsebase.PoolStat
}

func (r *Runner) pooled(ctx context.Context) (map[string]pulsebase.PoolStat, error) {
	r.pool.mu.Lock()
	defer r.pool.mu.Unlock()
	if r.pool.pool != nil && time.Since(r.pool.at) < poolTTL {
		return r.pool.pool, nil
	}
	p, err := r.store.Pool(ctx)
	if err != nil {
		return nil, err
	}
	r.pool.pool, r.pool.at = p, time.Now()
	if m := r.cfg.Metrics; m != nil {
		for k, s := range p {
			if s.Success+s.Failure > 0 {
				m.RecAcceptance.WithLabelValues(k).Set(s.Success / (s.Success + s.Failure))
			}
		}
	}
	return p, nil
}

// recommend runs u's rules for this commit: those the changes since the last commit
// trigger, and the scheduled ones now due; it settles expired recommendations, and
// returns the records to commit (changes go to f).
func (pr *partition) recommend(ctx context.Context, u *userRun, f *feed, now time.Time) ([]pulsebase.DerivedRecord, error) {
	changed := u.ru.changed
	u.ru.changed = nil
	sched := u.ru.schedRun
	u.ru.schedRun = false
	rules := pr.r.cfg.Rules
	switch {
	case u.erased || len(changed) == 0 && !sched:
		return nil, nil
	case rules == nil:
		pr.setScheduled(u.id, time.Time{}) // scheduled by a process that had rules
		return nil, nil
	case pr.rb != nil:
		if sched {
			pr.setScheduled(u.id, now.Add(time.Minute)) // after the rebuild
		}
		return nil, nil
	}
	if u.ru.profileAt.IsZero() { // its time_zone is the user's clock
		if err := pr.readProfile(ctx, u); err != nil {
			return nil, err
		}
	}
	loc := u.location()
	if loc == nil {
		pr.setScheduled(u.id, time.Time{})
		return nil, nil // no local clock yet: nothing can be timed
	}
	local := now.In(loc)
	lib := rules.Library()

	var triggers []recommend.Trigger
	if len(changed) > 0 {
		triggers = append(triggers, recommend.Trigger{Metrics: slices.Sorted(maps.Keys(changed))})
	}
	var recs []pulsebase.DerivedRecord
	if sched || u.rec.Ran == 0 {
		// Scheduled times since the last run, not older than slotGrace.
		if u.rec.Ran != 0 {
			for _, at := range slotsBetween(lib.Slots(), time.Unix(u.rec.Ran, 0).In(loc), local) {
				triggers = append(triggers, recommend.Trigger{At: at, Scheduled: true})
			}
		}
		u.rec.Ran = now.Unix()
		if err := pr.settle(ctx, u, f, now); err != nil {
			return nil, err
		}
		if d := local.Format(time.DateOnly); u.rec.Pruned != d {
			old, err := pr.prune(ctx, u, now)
			if err != nil {
				return nil, err
			}
			recs, u.rec.Pruned = old, d
		}
	}
	defer pr.reschedule(u, lib, local)

	consented := map[pulsebase.Category]bool{}
	for _, c := range pulsebase.Categories() {
		ok, err := pr.r.consent.Allowed(ctx, u.id, c, pulsebase.PurposePersonalization)
		if err != nil {
			return nil, err
		}
		consented[c] = ok
	}
	allowed := func(c pulsebase.Category) bool { return consented[c] }
	runs := slices.ContainsFunc(lib.Rules, func(r *recommend.Rule) bool {
		return r.Allowed(allowed) && slices.ContainsFunc(triggers, r.Runs)
	})
	if !runs {
		return recs, nil
	}

	if time.Since(u.ru.profileAt) > profileTTL { // only when rules run: not on every commit
		if err := pr.readProfile(ctx, u); err != nil {
			return nil, err
		}
		if l := u.location(); l != nil {
			local = now.In(l) // the profile's time zone may have changed
		}
	}
	began := time.Now()
	in, err := pr.recInputs(ctx, u, local)
	if err != nil {
		return nil, err
	}
	if u.ru.dayPart == nil || u.ru.dayPart.Date() != local.Format(time.DateOnly) {
		u.ru.dayPart = recommend.NewDayPart(in)
	}
	state := u.ru.dayPart.State(in)
	var cands []recommend.Candidate
	var trig []string
	for _, t := range triggers {
		cs, errs := lib.Evaluate(state, t, allowed)
		for _, e := range errs {
			pr.r.cfg.Log.Warn("rule failed", "kind", e.Kind, "err", e.Err)
			if m := pr.r.cfg.Metrics; m != nil {
				m.RuleErrors.WithLabelValues(e.Kind).Inc()
			}
		}
		for _, c := range cs {
			if !slices.ContainsFunc(cands, func(x recommend.Candidate) bool { return x.Kind == c.Kind }) {
				cands = append(cands, c)
			}
		}
		if len(cs) > 0 && t.Scheduled {
			trig = append(trig, t.String())
		} else if len(cs) > 0 {
			trig = append(trig, "metrics: "+strings.Join(t.Metrics, ", "))
		}
	}
	if m := pr.r.cfg.Metrics; m != nil {
		m.RuleEvaluation.Observe(time.Since(began).Seconds())
		for _, c := range cands {
			m.RecCandidates.WithLabelValues(c.Kind).Inc()
		}
	}
	if len(cands) == 0 {
		return recs, nil
	}
	drecs, err := pr.decide(ctx, u, f, lib, state, cands, trig, now)
	return append(recs, drecs...), err
}

// Retention of a user's decisions and recommendations (docs/recommendations.md).
const (
	DecisionRetention       = 90 * 24 * time.Hour
	RecommendationRetention = 365 * 24 * time.Hour
)

// prune returns the deletions of u's decisions and recommendations older than their
// retention (ids sort by the time they were made).
func (pr *partition) prune(ctx context.Context, u *userRun, now time.Time) ([]pulsebase.DerivedRecord, error) {
	var del []pulsebase.DerivedRecord
	for kind, keep := range map[string]time.Duration{recommend.KindDecision: DecisionRetention, recommend.KindRecommendation: RecommendationRetention} {
		old, err := pr.r.store.DerivedRecords(ctx, u.id, kind, "", recommend.IDKey(now.Add(-keep)))
		if err != nil {
			return nil, err
		}
		for _, r := range old {
			del = append(del, pulsebase.DerivedRecord{User: u.id, Kind: kind, Key: r.Key, Delete: true})
		}
	}
	return del, nil
}

// readProfile reads u's profile for the rules (none without a ProfileReader).
func (pr *partition) readProfile(ctx context.Context, u *userRun) error {
	u.ru.profileAt, u.ru.dayPart = time.Now(), nil
	if pr.r.cfg.Profiles == nil {
		return nil
	}
	doc, _, err := pr.r.cfg.Profiles.Get(ctx, u.id)
	if err != nil {
		return err
	}
	u.ru.profile = doc.View()
	return nil
}

// slotsBetween returns the scheduled times (minutes of the day) that fall in (from, to]
// on the local clock and not before to − slotGrace.
func slotsBetween(slots []int, from, to time.Time) []int {
	var out []int
	lo := from
	if g := to.Add(-slotGrace); g.After(lo) {
		lo = g
	}
	for d := lo.AddDate(0, 0, -1); !d.After(to); d = d.AddDate(0, 0, 1) {
		for _, s := range slots {
			t := time.Date(d.Year(), d.Month(), d.Day(), s/60, s%60, 0, 0, to.Location())
			if t.After(from) && !t.After(to) && !t.Before(lo) && !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	return out
}

// reschedule sets u's next scheduled run: the next scheduled time of the library, or the
// expiry of a delivered recommendation, whichever comes first.
func (pr *partition) reschedule(u *userRun, lib *recommend.Library, local time.Time) {
	var next time.Time
	consider := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	for d := 0; d <= 1; d++ {
		day := local.AddDate(0, 0, d)
		for _, s := range lib.Slots() {
			t := time.Date(day.Year(), day.Month(), day.Day(), s/60, s%60, 0, 0, local.Location())
			if t.After(local) {
				consider(t)
			}
		}
	}
	for _, d := range u.rec.Recent {
		if !d.Settled {
			consider(time.Unix(d.Expires, 0))
		}
	}
	if next.IsZero() {
		u.rec.Next = 0
		pr.setScheduled(u.id, time.Time{})
		return
	}
	u.rec.Next = next.Unix()
	pr.setScheduled(u.id, time.Unix(u.rec.Next, 0))
}

// setScheduled records u's next run in the partition's schedule (zero: none).
func (pr *partition) setScheduled(user string, at time.Time) {
	_, had := pr.sched[user]
	if at.IsZero() {
		delete(pr.sched, user)
	} else {
		pr.sched[user] = at
	}
	if _, has := pr.sched[user]; has != had {
		pr.schedDirty = true
	}
	if !at.IsZero() && (pr.dueAt.IsZero() || at.Before(pr.dueAt)) {
		pr.dueAt = at
	}
}

// recInputs gathers what u's rules read.
func (pr *partition) recInputs(ctx context.Context, u *userRun, local time.Time) (recommend.Inputs, error) {
	today := local.Format(time.DateOnly)
	if u.ru.days == nil || u.ru.daysDate != today {
		days, err := readDays(ctx, pr.r.store, u.keys, u.id, addDays(today, -recommend.HistoryDays), addDays(today, 1))
		if err != nil {
			return recommend.Inputs{}, err
		}
		u.ru.days, u.ru.daysDate, u.ru.dayPart = days, today, nil
	}
	minutes := func(typ string, from, to time.Time) []agg.Point { return u.state.Points(typ, agg.Minute, from, to) }
	hour, recent := recommend.Live(local, minutes)
	// Fold yesterday into the pacing curve, from the hour buckets still in memory.
	yesterday := addDays(today, -1)
	if u.rec.Pacing.Last < yesterday {
		start := time.Date(local.Year(), local.Month(), local.Day()-1, 0, 0, 0, 0, local.Location())
		var hourly [24]float64
		for _, p := range u.state.Points("steps", agg.Hour, start, start.AddDate(0, 0, 1)) {
			if h := p.Start.In(local.Location()).Hour(); p.Start.In(local.Location()).Format(time.DateOnly) == yesterday {
				hourly[h] += p.Sum
			}
		}
		u.rec.Pacing.Fold(yesterday, hourly)
	}
	history := map[string]recommend.Seen{}
	for _, d := range u.rec.Recent {
		s := history[d.Kind]
		s.Delivered++
		s.HoursSince = local.Sub(time.Unix(d.At, 0)).Hours()
		s.Active = !d.Closed && local.Before(time.Unix(d.Expires, 0))
		s.LastAction = d.Action
		history[d.Kind] = s
	}
	return recommend.Inputs{Now: local, Days: u.ru.days, Hour: hour, Recent: recent, Profile: u.ru.profile,
		History: history, Pacing: &u.rec.Pacing}, nil
}

// feedbackTTL is how long a user's feedback, once read, is reused: a rule that stays true
// fires at every commit, and each of its (suppressed) decisions would read it again.
// Feedback given meanwhile reaches the policy that much later.
const feedbackTTL = time.Minute

// feedbackState reads u's feedback of the last HistoryDays·6 days (at most every
// feedbackTTL): the bandit's evidence, and the state of the recent deliveries.
func (pr *partition) feedbackState(ctx context.Context, u *userRun, now time.Time) (recommend.Stats, error) {
	if u.ru.stats != nil && time.Since(u.ru.statsAt) < feedbackTTL {
		return u.ru.stats, nil
	}
	if !u.rec.Delivered {
		return recommend.Stats{}, nil
	}
	rows, err := pr.r.store.Feedback(ctx, u.id, now.AddDate(0, 0, -recommend.HistoryDays*6))
	if err != nil {
		return nil, err
	}
	stats := recommend.Stats{}
	byRec := map[string][]pulsebase.StoredFeedback{}
	for _, fb := range rows {
		p, err := recommend.OpenFeedback(u.keys, fb)
		if err != nil {
			return nil, err
		}
		if p.Reward != nil {
			a := stats[p.Kind]
			a.Add(*p.Reward)
			stats[p.Kind] = a
		}
		byRec[fb.Recommendation] = append(byRec[fb.Recommendation], fb)
	}
	for i := range u.rec.Recent {
		d := &u.rec.Recent[i]
		if fbs := byRec[d.ID]; len(fbs) > 0 {
			d.Closed = recommend.Closed(fbs)
			d.Action = fbs[len(fbs)-1].Action
		}
	}
	u.ru.stats, u.ru.statsAt = stats, time.Now()
	return stats, nil
}

// decide ranks cands, records the decision and delivers the winner, if any.
func (pr *partition) decide(ctx context.Context, u *userRun, f *feed, lib *recommend.Library, state *recommend.State,
	cands []recommend.Candidate, trig []string, now time.Time) ([]pulsebase.DerivedRecord, error) {
	stats, err := pr.feedbackState(ctx, u, now)
	if err != nil {
		return nil, err
	}
	pool, err := pr.r.pooled(ctx)
	if err != nil {
		return nil, err
	}
	recent := make([]recommend.Delivered, len(u.rec.Recent))
	for i, d := range u.rec.Recent {
		recent[i] = recommend.Delivered{ID: d.ID, Kind: d.Kind, At: time.Unix(d.At, 0), Expires: time.Unix(d.Expires, 0), Closed: d.Closed}
	}
	local := state.Now
	dec := recommend.Policy{DailyCap: pr.r.cfg.DailyCap}.Decide(local, strings.Join(trig, "; "), cands, state.Profile, recent, stats, pool, pr.rng)
	// Only the delivered candidate's texts are needed.
	var chosen *recommend.Candidate
	if dec.Delivered >= 0 {
		chosen = &cands[slices.IndexFunc(cands, func(x recommend.Candidate) bool { return x.Kind == dec.Candidates[dec.Delivered].Kind })]
		if err := chosen.Render(); err != nil {
			// Load checked the texts with zeroes; one that still fails is the rule's
			// fault: nothing is delivered, and the decision says why.
			pr.r.cfg.Log.Warn("rule text failed", "kind", chosen.Kind, "err", err)
			if m := pr.r.cfg.Metrics; m != nil {
				m.RuleErrors.WithLabelValues(chosen.Kind).Inc()
			}
			dec.Candidates[dec.Delivered].Reason = recommend.ReasonTextFailed
			dec.Delivered, chosen = -1, nil
		}
	}
	if m := pr.r.cfg.Metrics; m != nil {
		for _, c := range dec.Candidates {
			m.RecDecisions.WithLabelValues(c.Kind, c.Reason).Inc()
		}
	}
	if dec.Delivered < 0 {
		// Recorded when something new is to be said: a kind suppressed for another reason,
		// or an hour after the last note.
		news := false
		for _, c := range dec.Candidates {
			n, ok := u.rec.Noted[c.Kind]
			if !ok || n.Reason != c.Reason || now.Sub(time.Unix(n.At, 0)) >= noteEvery {
				news = true
			}
		}
		if !news {
			return nil, nil
		}
	}
	if u.rec.Noted == nil {
		u.rec.Noted = map[string]noted{}
	}
	for _, c := range dec.Candidates {
		u.rec.Noted[c.Kind] = noted{Reason: c.Reason, At: now.Unix()}
	}
	dr := &recommend.DecisionRecord{ID: recommend.NewID(now), Library: lib.Version, Decision: dec}
	dr.At = now.UTC()
	var recs []pulsebase.DerivedRecord
	if chosen != nil {
		c := chosen
		rec := &recommend.Recommendation{ID: recommend.NewID(now), Kind: c.Kind, Title: c.Title, Body: c.Body, Why: c.Why,
			Evidence: c.Evidence, Created: now.UTC(), Expires: now.Add(c.Expires).UTC(), State: recommend.StateActive,
			Priority: c.Priority, Decision: dr.ID, Library: lib.Version}
		dr.Recommendation = rec.ID
		ct, err := recommend.SealRecommendation(u.keys, rec)
		if err != nil {
			return nil, err
		}
		recs = append(recs, pulsebase.DerivedRecord{User: u.id, Kind: recommend.KindRecommendation, Key: rec.ID, Ciphertext: ct, Updated: now})
		data, err := toMap(rec)
		if err != nil {
			return nil, err
		}
		f.cb.Changes = append(f.cb.Changes, Change{Kind: "recommendation", Key: rec.ID, Data: data})
		u.rec.Recent = append(u.rec.Recent, delivered{ID: rec.ID, Kind: rec.Kind, At: now.Unix(), Expires: rec.Expires.Unix()})
		u.rec.Delivered = true
	}
	ct, err := recommend.SealDecision(u.keys, dr)
	if err != nil {
		return nil, err
	}
	return append(recs, pulsebase.DerivedRecord{User: u.id, Kind: recommend.KindDecision, Key: dr.ID, Ciphertext: ct, Updated: now}), nil
}

func toMap(v any) (map[string]any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	return m, json.Unmarshal(b, &m)
}

// settle handles u's recommendations that expired: one without any feedback is recorded
// as ignored (a failure for the bandit) and its new state goes on the feed. Deliveries
// older than HistoryDays are forgotten.
func (pr *partition) settle(ctx context.Context, u *userRun, f *feed, now time.Time) error {
	keep := u.rec.Recent[:0]
	for _, d := range u.rec.Recent {
		if !d.Settled && !now.Before(time.Unix(d.Expires, 0)) {
			if err := pr.ignore(ctx, u, f, &d, now); err != nil {
				return err
			}
		}
		if now.Sub(time.Unix(d.At, 0)) < recommend.HistoryDays*24*time.Hour {
			keep = append(keep, d)
		}
	}
	u.rec.Recent = keep
	return nil
}

// ignore infers "ignored" for an expired delivery without feedback.
func (pr *partition) ignore(ctx context.Context, u *userRun, f *feed, d *delivered, now time.Time) error {
	fbs, err := pr.r.store.FeedbackOn(ctx, u.id, d.ID)
	if err != nil {
		return err
	}
	d.Settled = true
	if len(fbs) > 0 {
		d.Closed = recommend.Closed(fbs)
		d.Action = fbs[len(fbs)-1].Action
		if len(fbs) == 1 && d.Action == pulsebase.ActionIgnored {
			// Stored by an earlier attempt whose commit did not happen: its change did
			// not go out either. (A repeated change is harmless: it sets the same state.)
			f.cb.Changes = append(f.cb.Changes, Change{Kind: "recommendation", Key: d.ID,
				Data: map[string]any{"id": d.ID, "state": recommend.StateIgnored}})
		}
		return nil
	}
	zero := 0.0
	fb, err := recommend.SealFeedback(u.keys, u.id, d.ID, pulsebase.ActionIgnored, now.UTC(), recommend.FeedbackPayload{Kind: d.Kind, Reward: &zero})
	if err != nil {
		return err
	}
	var delta *pulsebase.PoolDelta
	if ok, err := pr.r.cfg.Rules.Library().Pooled(ctx, pr.r.consent, u.id, d.Kind); err != nil {
		return err
	} else if ok {
		delta = &pulsebase.PoolDelta{Kind: d.Kind, Failure: 1}
	}
	added, err := pr.r.store.AddFeedback(ctx, fb, delta)
	if err != nil {
		return err
	}
	d.Closed, d.Action = true, pulsebase.ActionIgnored
	u.ru.stats = nil // the bandit learns of it at the next decision
	if added {
		if m := pr.r.cfg.Metrics; m != nil {
			m.RecFeedback.WithLabelValues(d.Kind, pulsebase.ActionIgnored).Inc()
		}
		f.cb.Changes = append(f.cb.Changes, Change{Kind: "recommendation", Key: d.ID,
			Data: map[string]any{"id": d.ID, "state": recommend.StateIgnored}})
	}
	return nil
}

// loadScheduled reads the partition's scheduled record: its users are due at once, and
// loading them tells when they are really due.
func (pr *partition) loadScheduled(ctx context.Context) error {
	var users []string
	if err := readPartitionRecord(ctx, pr.r.store, pr.p, KindScheduled, &users); err != nil {
		return err
	}
	for _, id := range users {
		pr.sched[id] = time.Unix(0, 0)
	}
	if len(users) > 0 {
		pr.dueAt = time.Unix(0, 0)
	}
	return nil
}

// maxScheduledRuns is how many users' scheduled runs one commit takes at most.
const maxScheduledRuns = 256

// dueScheduled loads the users whose scheduled run is due and marks it for this commit.
func (pr *partition) dueScheduled(ctx context.Context, now time.Time) error {
	var due []string
	for id, at := range pr.sched {
		if !at.After(now) {
			due = append(due, id)
		}
	}
	slices.Sort(due)
	for _, id := range due[:min(len(due), maxScheduledRuns)] {
		u, err := pr.user(ctx, id)
		if err != nil {
			return err
		}
		if u.erased {
			pr.setScheduled(id, time.Time{})
			continue
		}
		u.ru.schedRun = true
	}
	return nil
}

// newRand returns a partition's random source for the bandit.
func newRand() *rand.Rand { return rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())) }
