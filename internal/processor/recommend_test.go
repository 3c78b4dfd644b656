package processor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/broker"
	"github.com/pulsebase/pulsebase/internal/pbtest"
	"github.com/pulsebase/pulsebase/internal/processor"
	"github.com/pulsebase/pulsebase/internal/recommend"
	"github.com/pulsebase/pulsebase/internal/vault"
)

func (pl *pipeline) recommendations(t *testing.T, user string) []*recommend.Recommendation {
	return openRecords(t, pl, user, recommend.KindRecommendation, recommend.OpenRecommendation)
}

func (pl *pipeline) decisions(t *testing.T, user string) []*recommend.DecisionRecord {
	return openRecords(t, pl, user, recommend.KindDecision, recommend.OpenDecision)
}

// openRecords reads and opens every derived record of kind of user.
func openRecords[T any](t *testing.T, pl *pipeline, user, kind string, open func(*vault.Keys, string, []byte) (T, error)) []T {
	t.Helper()
	ctx := context.Background()
	keys, err := pl.vault.UserKeys(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := pl.store.DerivedRecords(ctx, user, kind, "", "")
	if err != nil {
		t.Fatal(err)
	}
	var out []T
	for _, r := range recs {
		x, err := open(keys, r.Key, r.Ciphertext)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, x)
	}
	return out
}

// postSteps ingests the user's steps of the minute before now, on the clock of loc: what
// tells the processor their zone and runs their steps rules.
func (pl *pipeline) postSteps(t *testing.T, user string, now time.Time, loc *time.Location) {
	t.Helper()
	in := []pulsebase.SampleInput{{Type: "steps", Value: json.RawMessage("30"), Start: now.Add(-time.Minute).In(loc).Format(time.RFC3339),
		End: now.In(loc).Format(time.RFC3339), Source: "phone"}}
	if _, err := pl.ingest.Ingest(context.Background(), user, pulsebase.Principal{Subject: "u", Role: pulsebase.RoleUser}, in); err != nil {
		t.Fatal(err)
	}
}

// starterRules returns a holder of the built-in library.
func starterRules(t *testing.T) *recommend.Rules {
	t.Helper()
	rules, err := recommend.NewRules("", nil)
	if err != nil {
		t.Fatal(err)
	}
	return rules
}

func ofKind(recs []*recommend.Recommendation, kind string) []*recommend.Recommendation {
	var out []*recommend.Recommendation
	for _, r := range recs {
		if r.Kind == kind {
			out = append(out, r)
		}
	}
	return out
}

// TestRecoveryDayInStream: a week of raised resting heart rate and lowered HRV after three
// normal weeks makes exactly one recovery_day recommendation, with a why that quotes the
// numbers, a decision record behind it, and a change on the user's feed; more samples
// after it do not make a second one.
func TestRecoveryDayInStream(t *testing.T) {
	pl := newPipeline(t)
	ctx := context.Background()
	const user = "urecovery"
	grantAll(t, pl, user)
	stop := pl.runWith(t, processor.RunnerConfig{Flush: 50 * time.Millisecond, DailyEvery: 100 * time.Millisecond, Rules: starterRules(t)})
	defer stop()
	now := time.Now()
	loc := pbtest.MiddayZone(now)
	in := pbtest.RecoverySamples(now, loc)
	if res, err := pl.ingest.Ingest(ctx, user, pulsebase.Principal{Subject: "u", Role: pulsebase.RoleUser}, in); err != nil || len(res.Rejected) > 0 {
		t.Fatalf("ingest: %+v %v", res, err)
	}
	var got []*recommend.Recommendation
	deadline := time.Now().Add(60 * time.Second)
	for len(got) == 0 && time.Now().Before(deadline) {
		pl.waitDaily(t, user)
		got = ofKind(pl.recommendations(t, user), "recovery_day")
		time.Sleep(50 * time.Millisecond)
	}
	if len(got) != 1 {
		t.Fatalf("got %d recovery_day recommendations, want 1", len(got))
	}
	r := got[0]
	for _, want := range []string{"Resting heart rate 61 vs your usual", "HRV 38 ms"} {
		if !strings.Contains(r.Why, want) {
			t.Errorf("why %q does not quote %q", r.Why, want)
		}
	}
	if r.State != recommend.StateActive || !r.Expires.After(r.Created) || r.Library == "" {
		t.Errorf("recommendation %+v", r)
	}
	if v, ok := r.Evidence["resting_heart_rate_7d"].(float64); !ok || v != 61 {
		t.Errorf("evidence %v", r.Evidence)
	}
	// The decision behind it names the features, the draws and the reason.
	var dec *recommend.DecisionRecord
	for _, d := range pl.decisions(t, user) {
		if d.Recommendation == r.ID {
			dec = d
		}
	}
	if dec == nil || dec.ID != r.Decision || dec.Delivered < 0 || dec.Candidates[dec.Delivered].Reason != recommend.ReasonDelivered ||
		dec.Candidates[dec.Delivered].Sample <= 0 || dec.Features["daypart"] == nil {
		t.Fatalf("decision %+v", dec)
	}
	// On the feed.
	feed := readFeedChanges(t, pl, user)
	n := 0
	for _, c := range feed {
		if c.Kind == "recommendation" && c.Key == r.ID && c.Data["why"] == r.Why {
			n++
		}
	}
	if n != 1 {
		t.Errorf("the recommendation is on the feed %d times, want 1", n)
	}

	// Another day's sample later recomputes the same days: still one.
	local := now.In(loc)
	extra := []pulsebase.SampleInput{{Type: "hrv_rmssd", Value: json.RawMessage("37"), Source: "ring",
		Start: time.Date(local.Year(), local.Month(), local.Day(), 0, 0, 0, 0, loc).AddDate(0, 0, -1).Add(8 * time.Hour).Format(time.RFC3339)}}
	if _, err := pl.ingest.Ingest(ctx, user, pulsebase.Principal{Subject: "u", Role: pulsebase.RoleUser}, extra); err != nil {
		t.Fatal(err)
	}
	pl.waitDaily(t, user)
	time.Sleep(300 * time.Millisecond)
	if got := ofKind(pl.recommendations(t, user), "recovery_day"); len(got) != 1 {
		t.Errorf("after more samples: %d recovery_day recommendations, want 1", len(got))
	}
}

// TestNoConsentNoRecommendation: the same data from a user who allowed collection but not
// personalization makes nothing — the samples are not even applied.
func TestNoConsentNoRecommendation(t *testing.T) {
	pl := newPipeline(t)
	ctx := context.Background()
	const user = "unoconsent"
	c := pulsebase.Consent{Collect: map[pulsebase.Category]bool{pulsebase.CategoryHeart: true}, Purposes: map[pulsebase.Purpose]bool{pulsebase.PurposeResearch: true}}
	if _, err := pl.consent.Set(ctx, user, c, pulsebase.Actor{Role: pulsebase.RoleUser}); err != nil {
		t.Fatal(err)
	}
	stop := pl.runWith(t, processor.RunnerConfig{Flush: 50 * time.Millisecond, DailyEvery: 100 * time.Millisecond, Rules: starterRules(t)})
	defer stop()
	now := time.Now()
	if _, err := pl.ingest.Ingest(ctx, user, pulsebase.Principal{Subject: "u", Role: pulsebase.RoleUser}, pbtest.RecoverySamples(now, pbtest.MiddayZone(now))); err != nil {
		t.Fatal(err)
	}
	pl.waitDaily(t, user)
	time.Sleep(300 * time.Millisecond)
	if got := pl.recommendations(t, user); len(got) != 0 {
		t.Errorf("got %d recommendations without personalization consent", len(got))
	}
	if got := pl.decisions(t, user); len(got) != 0 {
		t.Errorf("got %d decisions without personalization consent", len(got))
	}
}

// TestScheduledRuleFiresOnceAcrossRestartsAndProcessors: a rule scheduled at a local time
// fires once for the user although the processors that owned their partition stopped
// before that time and two new ones, racing for the partitions, started after it.
func TestScheduledRuleFiresOnceAcrossRestartsAndProcessors(t *testing.T) {
	pl := newPipeline(t)
	const user = "uscheduled"
	grantAll(t, pl, user)
	now := time.Now()
	// The slot: the first whole minute at least 15 s from now (time enough to schedule the
	// user before it), 15:00 in the user's zone.
	slotAt := now.Truncate(time.Minute).Add(time.Minute)
	if slotAt.Sub(now) < 15*time.Second {
		slotAt = slotAt.Add(time.Minute)
	}
	loc := time.FixedZone("", (15*60-(slotAt.UTC().Hour()*60+slotAt.UTC().Minute()))*60)
	slot := slotAt.In(loc).Format("15:04")
	file := filepath.Join(t.TempDir(), "rules.yaml")
	lib := fmt.Sprintf(`version: "test"
rules:
  - kind: afternoon_check
    category: activity
    triggers: {at: ["%s"]}
    when: trigger == 'at %s'
    evidence: {hour: double(local.hour)}
    priority: 50
    title: Afternoon check
    body: How is your afternoon going?
    why: "It is {{num .hour}} o'clock."
    expires: 1h
    cooldown: 0s
`, slot, slot)
	if err := os.WriteFile(file, []byte(lib), 0o600); err != nil {
		t.Fatal(err)
	}
	rules, err := recommend.NewRules(file, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := processor.RunnerConfig{Flush: 50 * time.Millisecond, DailyEvery: 100 * time.Millisecond, Rules: rules}
	stop := pl.runWith(t, cfg)
	// A sample tells the processor the user's zone and schedules them.
	pl.postSteps(t, user, now, loc)
	pl.waitApplied(t, user)
	time.Sleep(200 * time.Millisecond)
	stop()
	if got := pl.recommendations(t, user); len(got) != 0 {
		t.Fatalf("fired before its time: %+v", got[0])
	}
	time.Sleep(time.Until(slotAt.Add(2 * time.Second)))
	stopA := pl.runWith(t, cfg)
	stopB := pl.runWith(t, cfg)
	defer stopA()
	defer stopB()
	deadline := time.Now().Add(30 * time.Second)
	for len(pl.recommendations(t, user)) == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second)
	got := pl.recommendations(t, user)
	if len(got) != 1 || got[0].Kind != "afternoon_check" {
		t.Fatalf("got %d recommendations, want 1 afternoon_check", len(got))
	}
	if !strings.Contains(got[0].Why, "It is") {
		t.Errorf("why %q", got[0].Why)
	}
}

// readFeedChanges returns every change on the user's feed.
func readFeedChanges(t *testing.T, pl *pipeline, user string) []processor.Change {
	t.Helper()
	var out []processor.Change
	for _, b := range pl.feed(t, user) {
		out = append(out, b.Changes...)
	}
	return out
}

// TestIgnoredAtExpiry: a recommendation that expires without feedback is recorded as
// ignored — once, with its change on the feed — and teaches the pooled prior a failure
// when the user allowed model training.
func TestIgnoredAtExpiry(t *testing.T) {
	pl := newPipeline(t)
	ctx := context.Background()
	const user = "uignored"
	c := pulsebase.Consent{Collect: map[pulsebase.Category]bool{pulsebase.CategoryActivity: true},
		Purposes: map[pulsebase.Purpose]bool{pulsebase.PurposePersonalization: true, pulsebase.PurposeModelTraining: true}}
	if _, err := pl.consent.Set(ctx, user, c, pulsebase.Actor{Role: pulsebase.RoleUser}); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(file, []byte(`version: "test"
rules:
  - kind: nudge
    category: activity
    triggers: {metrics: [steps]}
    when: "true"
    priority: 50
    title: A nudge
    body: Hello.
    why: Because.
    expires: 2s
    cooldown: 1h
`), 0o600); err != nil {
		t.Fatal(err)
	}
	rules, err := recommend.NewRules(file, nil)
	if err != nil {
		t.Fatal(err)
	}
	stop := pl.runWith(t, processor.RunnerConfig{Flush: 50 * time.Millisecond, DailyEvery: 100 * time.Millisecond, Rules: rules})
	defer stop()
	now := time.Now()
	loc := pbtest.MiddayZone(now)
	pl.postSteps(t, user, now, loc)
	var recs []*recommend.Recommendation
	pbtest.WaitFor(t, 30*time.Second, "the recommendation", func() bool { recs = pl.recommendations(t, user); return len(recs) == 1 })
	var fbs []pulsebase.StoredFeedback
	pbtest.WaitFor(t, 30*time.Second, "ignored inferred at expiry", func() bool {
		fbs, err = pl.store.FeedbackOn(ctx, user, recs[0].ID)
		return err == nil && len(fbs) > 0
	})
	if len(fbs) != 1 || fbs[0].Action != pulsebase.ActionIgnored || fbs[0].At.Before(recs[0].Expires.Add(-time.Second)) {
		t.Fatalf("feedback %+v", fbs)
	}
	keys, err := pl.vault.UserKeys(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := recommend.OpenFeedback(keys, fbs[0]); err != nil || p.Kind != "nudge" || p.Reward == nil || *p.Reward != 0 {
		t.Errorf("payload %+v, %v", p, err)
	}
	pool, err := pl.store.Pool(ctx)
	if err != nil || pool["nudge"].N != 1 || pool["nudge"].Failure != 1 || pool["nudge"].Success != 0 {
		t.Errorf("pool %+v, %v", pool, err)
	}
	time.Sleep(500 * time.Millisecond)
	n := 0
	for _, c := range readFeedChanges(t, pl, user) {
		if c.Kind == "recommendation" && c.Key == recs[0].ID && c.Data["state"] == recommend.StateIgnored {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d ignored changes on the feed, want 1", n)
	}
}

// scheduledUsers reads the partition's list of users with a scheduled rule run.
func (pl *pipeline) scheduledUsers(t *testing.T, user string) []string {
	t.Helper()
	recs, err := pl.store.DerivedRecords(context.Background(), processor.PendingOwner(broker.Partition(user, 64)), processor.KindScheduled, "", "")
	if err != nil {
		t.Fatal(err)
	}
	var users []string
	if len(recs) == 1 {
		if err := json.Unmarshal(recs[0].Ciphertext, &users); err != nil {
			t.Fatal(err)
		}
	}
	return users
}

// TestScheduleWithoutRules: a user scheduled by a processor with a rule library is
// dropped from the schedule by one without (instead of being due at every commit).
func TestScheduleWithoutRules(t *testing.T) {
	pl := newPipeline(t)
	const user = "unorules"
	grantAll(t, pl, user)
	stop := pl.runWith(t, processor.RunnerConfig{Flush: 50 * time.Millisecond, Rules: starterRules(t)})
	now := time.Now()
	pl.postSteps(t, user, now, time.Local)
	pbtest.WaitFor(t, 30*time.Second, "the user scheduled", func() bool { return slices.Contains(pl.scheduledUsers(t, user), user) })
	stop()
	stop = pl.runWith(t, processor.RunnerConfig{Flush: 50 * time.Millisecond})
	defer stop()
	pbtest.WaitFor(t, 30*time.Second, "the user dropped from the schedule", func() bool { return !slices.Contains(pl.scheduledUsers(t, user), user) })
}

// TestOldDecisionsArePruned: decisions older than DecisionRetention are deleted when the
// user's rules next run (once a day), recent ones and the recommendations kept.
func TestOldDecisionsArePruned(t *testing.T) {
	pl := newPipeline(t)
	ctx := context.Background()
	const user = "upruned"
	grantAll(t, pl, user)
	keys, err := pl.vault.UserKeys(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	var seeded []pulsebase.DerivedRecord
	ids := map[string]string{}
	for name, at := range map[string]time.Time{"old": now.Add(-processor.DecisionRetention - time.Hour), "recent": now.Add(-processor.DecisionRetention + time.Hour)} {
		d := &recommend.DecisionRecord{ID: recommend.NewID(at), Library: "test", Decision: recommend.Decision{At: at, Delivered: -1}}
		ct, err := recommend.SealDecision(keys, d)
		if err != nil {
			t.Fatal(err)
		}
		ids[name] = d.ID
		seeded = append(seeded, pulsebase.DerivedRecord{User: user, Kind: recommend.KindDecision, Key: d.ID, Ciphertext: ct, Updated: now})
	}
	// Seeded as the processor would have written them (on a partition nobody owns).
	if err := pl.store.CommitPartition(ctx, pulsebase.Checkpoint{Partition: 1 << 20, Epoch: 1, Seq: 1}, seeded); err != nil {
		t.Fatal(err)
	}
	stop := pl.runWith(t, processor.RunnerConfig{Flush: 50 * time.Millisecond, Rules: starterRules(t)})
	defer stop()
	pl.postSteps(t, user, now, time.Local)
	pbtest.WaitFor(t, 30*time.Second, "the old decision deleted", func() bool { return len(pl.decisions(t, user)) == 1 })
	if got := pl.decisions(t, user); got[0].ID != ids["recent"] {
		t.Errorf("kept %s, want the recent %s", got[0].ID, ids["recent"])
	}
}
