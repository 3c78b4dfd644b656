package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/httpapi"
	"github.com/pulsebase/pulsebase/internal/pbtest"
	"github.com/pulsebase/pulsebase/internal/recommend"
)

// seedPartition is the partition seeded records are committed under: far beyond the
// broker's partitions, so that no processor's checkpoint is touched.
const seedPartition = 1 << 20

// recEnv is a test server that seeds recommendations and decisions as the processor
// stores them, with a second API on the same parts but without a rule library.
type recEnv struct {
	*pbtest.Server
	// API is the server's URL; NoRules the URL of an API without the rule library, which
	// the feedback route needs.
	API, NoRules string
	seq          uint64
}

func openRecEnv(t *testing.T) *recEnv {
	t.Helper()
	s := pbtest.MustOpenServer(t)
	api := httpapi.New(httpapi.Deps{
		Issuer: s.Issuer, Users: s.Users, Ingest: s.Ingest, Consent: s.Consent, Vault: s.Vault, Store: s.Store,
		Metrics: s.Metrics, JetStream: s.Broker.JetStream(), Partitions: s.Broker.Partitions(),
		Sync: s.Gateway, Revocations: s.Revocations, Ready: s.Broker.Ready, Log: slog.New(slog.DiscardHandler), Version: "test",
	})
	hs := httptest.NewServer(api.Handler())
	// Cleanups run last-registered first: this one before MustOpenServer's stops the parts.
	t.Cleanup(hs.Close)
	return &recEnv{Server: s, API: s.URL, NoRules: hs.URL}
}

// userID returns the internal id of the owner of token.
func (e *recEnv) userID(t *testing.T, token string) string {
	t.Helper()
	var u struct{ ID string }
	pbtest.Do(t, "GET", e.API+"/v1/users/me", token, "", nil).JSON(t, &u)
	if u.ID == "" {
		t.Fatal("no user id")
	}
	return u.ID
}

// commit stores records as the processor would.
func (e *recEnv) commit(t *testing.T, records ...pulsebase.DerivedRecord) {
	t.Helper()
	e.seq++
	if err := e.Store.CommitPartition(context.Background(), pulsebase.Checkpoint{Partition: seedPartition, Epoch: 1, Seq: e.seq}, records); err != nil {
		t.Fatal(err)
	}
}

// seedRec stores a delivered recommendation of kind made at created, expiring at expires,
// and the decision that delivered it (made at the same time).
func (e *recEnv) seedRec(t *testing.T, user, kind string, created, expires time.Time) *recommend.Recommendation {
	t.Helper()
	keys, err := e.Vault.UserKeys(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	d := &recommend.DecisionRecord{ID: recommend.NewID(created), Library: "test", Decision: recommend.Decision{
		At: created.UTC(), Trigger: "metrics", Features: map[string]any{"hour": 8.0, "daypart": "morning"},
		Candidates: []recommend.Scored{{Kind: kind, Priority: 80, Alpha: 2, Beta: 1, Sample: 0.7, Score: 0.63, Reason: recommend.ReasonDelivered}},
	}}
	rec := &recommend.Recommendation{ID: recommend.NewID(created), Kind: kind, Title: "Take it easy", Body: "An easy day.",
		Why: "Resting heart rate 61 vs your usual 55 ± 2.", Evidence: map[string]any{"resting_heart_rate_7d": 61.0},
		Created: created.UTC(), Expires: expires.UTC(), State: recommend.StateActive, Priority: 80, Decision: d.ID, Library: "test"}
	d.Recommendation = rec.ID
	rct, err := recommend.SealRecommendation(keys, rec)
	if err != nil {
		t.Fatal(err)
	}
	dct, err := recommend.SealDecision(keys, d)
	if err != nil {
		t.Fatal(err)
	}
	e.commit(t, pulsebase.DerivedRecord{User: user, Kind: recommend.KindRecommendation, Key: rec.ID, Ciphertext: rct, Updated: created},
		pulsebase.DerivedRecord{User: user, Kind: recommend.KindDecision, Key: d.ID, Ciphertext: dct, Updated: created})
	return rec
}

// seedDecision stores a decision made at at that delivered nothing.
func (e *recEnv) seedDecision(t *testing.T, user string, at time.Time) string {
	t.Helper()
	keys, err := e.Vault.UserKeys(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	d := &recommend.DecisionRecord{ID: recommend.NewID(at), Library: "test", Decision: recommend.Decision{
		At: at.UTC(), Trigger: "at 15:00", Delivered: -1, Features: map[string]any{"quiet_hours": true},
		Candidates: []recommend.Scored{{Kind: "move_break", Priority: 50, Alpha: 1, Beta: 1, Reason: recommend.ReasonQuietHours}},
	}}
	ct, err := recommend.SealDecision(keys, d)
	if err != nil {
		t.Fatal(err)
	}
	e.commit(t, pulsebase.DerivedRecord{User: user, Kind: recommend.KindDecision, Key: d.ID, Ciphertext: ct, Updated: at})
	return d.ID
}

// feedback posts an action (and rating, when not 0) and returns the answer.
func (e *recEnv) feedback(t *testing.T, token, id, action string, rating int) pbtest.Response {
	t.Helper()
	body := fmt.Sprintf(`{"action":%q}`, action)
	if rating != 0 {
		body = fmt.Sprintf(`{"action":%q,"rating":%d}`, action, rating)
	}
	return pbtest.Do(t, "POST", e.API+"/v1/users/me/recommendations/"+id+"/feedback", token, jsonCT, []byte(body))
}

// mustFeedback posts an action and fails the test unless it is answered 204.
func (e *recEnv) mustFeedback(t *testing.T, token, id, action string, rating int) {
	t.Helper()
	if r := e.feedback(t, token, id, action, rating); r.Status != 204 {
		t.Fatalf("feedback %s on %s: got %d %s, want 204", action, id, r.Status, r.Body)
	}
}

// list returns the recommendations listed with query q.
func (e *recEnv) list(t *testing.T, token, q string) []recommend.Recommendation {
	t.Helper()
	r := pbtest.Do(t, "GET", e.API+"/v1/users/me/recommendations"+q, token, "", nil)
	if r.Status != 200 {
		t.Fatalf("GET recommendations%s: got %d %s", q, r.Status, r.Body)
	}
	var out struct{ Recommendations []recommend.Recommendation }
	r.JSON(t, &out)
	return out.Recommendations
}

// states renders a list as "id-suffix:state" in order, for comparisons.
func states(recs []recommend.Recommendation, names map[string]string) string {
	var out []string
	for _, r := range recs {
		out = append(out, names[r.ID]+":"+r.State)
	}
	return strings.Join(out, " ")
}

func (e *recEnv) pool(t *testing.T, kind string) pulsebase.PoolStat {
	t.Helper()
	p, err := e.Store.Pool(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return p[kind]
}

// TestRecommendationStates lists a user's recommendations active and all, with states
// derived from feedback and expiry, from a user and from a device token.
func TestRecommendationStates(t *testing.T) {
	e := openRecEnv(t)
	tok := e.UserToken(t, "pat")
	user := e.userID(t, tok)
	now := time.Now()
	fresh := e.seedRec(t, user, "recovery_day", now.Add(-2*time.Hour), now.Add(22*time.Hour))
	accepted := e.seedRec(t, user, "move_break", now.Add(-3*time.Hour), now.Add(21*time.Hour))
	dismissed := e.seedRec(t, user, "sleep_debt", now.Add(-4*time.Hour), now.Add(20*time.Hour))
	acceptedLate := e.seedRec(t, user, "hydration", now.Add(-26*time.Hour), now.Add(-2*time.Hour))
	expired := e.seedRec(t, user, "streak", now.Add(-30*time.Hour), now.Add(-6*time.Hour))
	old := e.seedRec(t, user, "breathing", now.Add(-100*24*time.Hour), now.Add(-99*24*time.Hour))
	names := map[string]string{fresh.ID: "fresh", accepted.ID: "accepted", dismissed.ID: "dismissed",
		acceptedLate.ID: "acceptedLate", expired.ID: "expired", old.ID: "old"}
	e.mustFeedback(t, tok, accepted.ID, "accepted", 0)
	e.mustFeedback(t, tok, dismissed.ID, "dismissed", 2)
	// Feedback on an expired recommendation is recorded.
	e.mustFeedback(t, tok, acceptedLate.ID, "accepted", 0)

	for _, q := range []string{"", "?state=active"} {
		if got, want := states(e.list(t, tok, q), names), "fresh:active accepted:accepted"; got != want {
			t.Errorf("GET recommendations%s: got %s, want %s", q, got, want)
		}
	}
	all := e.list(t, tok, "?state=all")
	if got, want := states(all, names), "fresh:active accepted:accepted dismissed:dismissed acceptedLate:accepted expired:expired"; got != want {
		t.Errorf("state=all: got %s, want %s (newest first, the last 90 days)", got, want)
	}
	if got := states(e.list(t, tok, "?state=all&limit=2"), names); got != "fresh:active accepted:accepted" {
		t.Errorf("state=all&limit=2: got %s", got)
	}
	// Each lists its feedback, with its rating, and the stored fields.
	d := all[2]
	if len(d.Feedback) != 1 || d.Feedback[0].Action != "dismissed" || d.Feedback[0].Rating != 2 || d.Feedback[0].At.IsZero() {
		t.Errorf("the dismissed one's feedback: %+v", d.Feedback)
	}
	if f := all[0]; f.Kind != "recovery_day" || f.Why == "" || f.Evidence["resting_heart_rate_7d"] != 61.0 || f.Decision == "" ||
		!f.Expires.Equal(fresh.Expires) || len(f.Feedback) != 0 {
		t.Errorf("the fresh one: %+v", f)
	}
	// A device of the user reads them too, by internal id as well as "me".
	watch := e.Token(t, "pat", pulsebase.RoleDevice, "watch-1")
	r := pbtest.Do(t, "GET", e.API+"/v1/users/"+user+"/recommendations", watch, "", nil)
	if r.Status != 200 || !strings.Contains(string(r.Body), fresh.ID) {
		t.Errorf("a device by internal id: got %d %s", r.Status, r.Body)
	}
	// Completing the accepted one closes it; a later "accepted" does not reopen it.
	e.mustFeedback(t, tok, accepted.ID, "completed", 0)
	if got, want := states(e.list(t, tok, ""), names), "fresh:active"; got != want {
		t.Errorf("after completing: got %s, want %s", got, want)
	}
}

// TestFeedbackIsIdempotentAndRewardsOnce: the same action twice is one row counted once;
// a recommendation teaches the pooled prior once, through its first rewarded action; the
// change reaches the user's feed.
func TestFeedbackIsIdempotentAndRewardsOnce(t *testing.T) {
	e := openRecEnv(t)
	tok := e.UserToken(t, "pat") // every consent, model training included
	user := e.userID(t, tok)
	now := time.Now()
	rec := e.seedRec(t, user, "recovery_day", now.Add(-time.Hour), now.Add(23*time.Hour))

	e.mustFeedback(t, tok, rec.ID, "accepted", 0)
	e.mustFeedback(t, tok, rec.ID, "accepted", 0)
	rows, err := e.Store.FeedbackOn(context.Background(), user, rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 {
		t.Fatalf("accepted twice: got %d stored rows, want 1", len(rows))
	}
	if p := e.pool(t, "recovery_day"); p.N != 1 || p.Success != 1 || p.Failure != 0 {
		t.Errorf("accepted twice: pool %+v, want N 1, success 1", p)
	}
	if n := testutil.ToFloat64(e.Metrics.RecFeedback.WithLabelValues("recovery_day", "accepted")); n != 1 {
		t.Errorf("feedback metric: got %v, want 1", n)
	}
	// Completing it later is stored but rewards nothing more.
	e.mustFeedback(t, tok, rec.ID, "completed", 5)
	if p := e.pool(t, "recovery_day"); p.N != 1 {
		t.Errorf("accepted then completed: pool N %d, want 1", p.N)
	}
	keys, err := e.Vault.UserKeys(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	rows, _ = e.Store.FeedbackOn(context.Background(), user, rec.ID)
	var rewards []string
	for _, fb := range rows {
		p, err := recommend.OpenFeedback(keys, fb)
		if err != nil {
			t.Fatal(err)
		}
		if p.Kind != "recovery_day" {
			t.Errorf("%s: payload kind %q", fb.Action, p.Kind)
		}
		rewards = append(rewards, fmt.Sprintf("%s:%v", fb.Action, p.Reward != nil))
	}
	slices.Sort(rewards)
	if got := strings.Join(rewards, " "); got != "accepted:true completed:false" {
		t.Errorf("rewards: got %s, want only the first action rewarded", got)
	}

	// A rating replaces the action's reward: dismissed with 4 of 5 teaches 0.75.
	rated := e.seedRec(t, user, "sleep_debt", now.Add(-time.Hour), now.Add(time.Hour))
	e.mustFeedback(t, tok, rated.ID, "dismissed", 4)
	if p := e.pool(t, "sleep_debt"); p.N != 1 || p.Success != 0.75 || p.Failure != 0.25 {
		t.Errorf("dismissed rated 4: pool %+v, want success 0.75, failure 0.25", p)
	}
	// A snooze teaches nothing, and leaves the reward to the next action.
	snoozed := e.seedRec(t, user, "hydration", now.Add(-time.Hour), now.Add(time.Hour))
	e.mustFeedback(t, tok, snoozed.ID, "snoozed", 0)
	if p := e.pool(t, "hydration"); p.N != 0 {
		t.Errorf("snoozed: pool N %d, want 0", p.N)
	}
	e.mustFeedback(t, tok, snoozed.ID, "completed", 0)
	if p := e.pool(t, "hydration"); p.N != 1 || p.Success != 1 {
		t.Errorf("snoozed then completed: pool %+v, want N 1, success 1", p)
	}

	// Every device of the user sees each new state once on the feed.
	var seen []string
	for _, m := range pbtest.ReadFeed(t, e.Broker.JetStream(), e.Vault, user) {
		for _, c := range m.Batch.Changes {
			if c.Kind != "recommendation" || c.Key != rec.ID {
				continue
			}
			fb, _ := c.Data["feedback"].([]any)
			seen = append(seen, fmt.Sprintf("%v/%v/%d", c.Data["id"] == rec.ID, c.Data["state"], len(fb)))
		}
	}
	if got, want := strings.Join(seen, " "), "true/accepted/1 true/completed/2"; got != want {
		t.Errorf("recommendation changes on the feed: got %q, want %q", got, want)
	}
	// And over HTTP, as a device without a socket reads it.
	r := pbtest.Do(t, "GET", e.API+"/v1/users/me/changes?limit=1000", tok, "", nil)
	if !strings.Contains(string(r.Body), `"kind":"recommendation","key":"`+rec.ID+`"`) {
		t.Errorf("GET changes lacks the recommendation change: %s", r.Body)
	}
}

// TestFeedbackPoolsOnlyWithModelTraining: without consent to model training, feedback
// teaches the user's own ranking (its reward is stored) but not the pooled prior.
func TestFeedbackPoolsOnlyWithModelTraining(t *testing.T) {
	e := openRecEnv(t)
	tok := e.Token(t, "quinn", pulsebase.RoleUser, "")
	pbtest.Grant(t, e.URL, tok, `{"collect":{"heart":true},"purposes":{"personalization":true}}`)
	user := e.userID(t, tok)
	now := time.Now()
	rec := e.seedRec(t, user, "recovery_day", now.Add(-time.Hour), now.Add(time.Hour))
	e.mustFeedback(t, tok, rec.ID, "accepted", 0)
	if p := e.pool(t, "recovery_day"); p.N != 0 {
		t.Errorf("without model training: pool N %d, want 0", p.N)
	}
	keys, err := e.Vault.UserKeys(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := e.Store.FeedbackOn(context.Background(), user, rec.ID)
	if err != nil || len(rows) != 1 {
		t.Fatalf("got %d rows (%v), want 1", len(rows), err)
	}
	if p, err := recommend.OpenFeedback(keys, rows[0]); err != nil || p.Reward == nil || *p.Reward != 1 {
		t.Errorf("the stored reward: %+v %v, want 1 for the user's own ranking", p, err)
	}
	// Allowing model training on heart (what recovery_day reads) lets the next one pool.
	pbtest.Grant(t, e.URL, tok, `{"collect":{"heart":true},"purposes":{"personalization":true,"model_training":true}}`)
	next := e.seedRec(t, user, "recovery_day", now.Add(-time.Minute), now.Add(time.Hour))
	e.mustFeedback(t, tok, next.ID, "accepted", 0)
	if p := e.pool(t, "recovery_day"); p.N != 1 {
		t.Errorf("with model training: pool N %d, want 1", p.N)
	}
}

// TestRecommendationErrors: bad input is 400 with a stable code, unknown and other users'
// recommendations are 404, and a server without the rule library says 503.
func TestRecommendationErrors(t *testing.T) {
	e := openRecEnv(t)
	tok := e.UserToken(t, "pat")
	user := e.userID(t, tok)
	otherTok := e.UserToken(t, "quinn")
	other := e.userID(t, otherTok)
	now := time.Now()
	rec := e.seedRec(t, user, "recovery_day", now.Add(-time.Hour), now.Add(time.Hour))
	theirs := e.seedRec(t, other, "recovery_day", now.Add(-time.Hour), now.Add(time.Hour))
	fbURL := e.API + "/v1/users/me/recommendations/" + rec.ID + "/feedback"
	cases := []struct {
		name, method, url, ct, body string
		status                      int
		code                        string
	}{
		{"unknown action", "POST", fbURL, jsonCT, `{"action":"loved"}`, 400, pulsebase.EINVALID},
		{"ignored is the server's", "POST", fbURL, jsonCT, `{"action":"ignored"}`, 400, pulsebase.EINVALID},
		{"no action", "POST", fbURL, jsonCT, `{"rating":3}`, 400, pulsebase.EINVALID},
		{"rating 0", "POST", fbURL, jsonCT, `{"action":"accepted","rating":0}`, 400, pulsebase.EINVALID},
		{"rating 6", "POST", fbURL, jsonCT, `{"action":"accepted","rating":6}`, 400, pulsebase.EINVALID},
		{"rating not an integer", "POST", fbURL, jsonCT, `{"action":"accepted","rating":2.5}`, 400, pulsebase.EINVALID},
		{"bad JSON", "POST", fbURL, jsonCT, `{"action":`, 400, pulsebase.EINVALID},
		{"unknown field", "POST", fbURL, jsonCT, `{"action":"accepted","stars":5}`, 400, pulsebase.EINVALID},
		{"not JSON", "POST", fbURL, "text/plain", `accepted`, 415, pulsebase.EUNSUPPORTED},
		{"unknown id", "POST", e.API + "/v1/users/me/recommendations/" + recommend.NewID(now) + "/feedback", jsonCT, `{"action":"accepted"}`, 404, pulsebase.ENOTFOUND},
		{"not an id", "POST", e.API + "/v1/users/me/recommendations/nope/feedback", jsonCT, `{"action":"accepted"}`, 404, pulsebase.ENOTFOUND},
		{"another user's id", "POST", e.API + "/v1/users/me/recommendations/" + theirs.ID + "/feedback", jsonCT, `{"action":"accepted"}`, 404, pulsebase.ENOTFOUND},
		{"another user's path", "POST", e.API + "/v1/users/" + other + "/recommendations/" + theirs.ID + "/feedback", jsonCT, `{"action":"accepted"}`, 404, pulsebase.ENOTFOUND},
		{"unknown state", "GET", e.API + "/v1/users/me/recommendations?state=done", "", "", 400, pulsebase.EINVALID},
		{"limit 0", "GET", e.API + "/v1/users/me/recommendations?state=all&limit=0", "", "", 400, pulsebase.EINVALID},
		{"limit too large", "GET", e.API + "/v1/users/me/recommendations?limit=501", "", "", 400, pulsebase.EINVALID},
		{"another user's list", "GET", e.API + "/v1/users/" + other + "/recommendations", "", "", 404, pulsebase.ENOTFOUND},
		{"another user's decision", "GET", e.API + "/v1/users/me/recommendations/" + theirs.ID + "/decision", "", "", 404, pulsebase.ENOTFOUND},
		{"bad since", "GET", e.API + "/v1/users/me/decisions?since=yesterday", "", "", 400, pulsebase.EINVALID},
		{"decisions limit", "GET", e.API + "/v1/users/me/decisions?limit=501", "", "", 400, pulsebase.EINVALID},
		// Without a rule library, feedback is not served.
		{"no rule library", "POST", e.NoRules + "/v1/users/me/recommendations/" + rec.ID + "/feedback", jsonCT, `{"action":"accepted"}`, 503, pulsebase.EUNAVAILABLE},
	}
	for _, c := range cases {
		r := pbtest.Do(t, c.method, c.url, tok, c.ct, []byte(c.body))
		var p httpapi.Problem
		if r.Status != c.status || r.Header.Get("Content-Type") != "application/problem+json" || json.Unmarshal(r.Body, &p) != nil || p.Code != c.code {
			t.Errorf("%s: got %d %s, want %d problem+json %s", c.name, r.Status, r.Body, c.status, c.code)
		}
	}
	// Nothing of the refused requests was stored, for either user.
	for _, u := range []string{user, other} {
		if fbs, err := e.Store.Feedback(context.Background(), u, time.Time{}); err != nil || len(fbs) != 0 {
			t.Errorf("feedback of %s after refusals: %d rows (%v), want none", u, len(fbs), err)
		}
	}
	// Without a token: 401.
	if r := pbtest.Do(t, "POST", fbURL, "", jsonCT, []byte(`{"action":"accepted"}`)); r.Status != 401 {
		t.Errorf("without a token: got %d", r.Status)
	}
}

// TestDecisions: the decision behind a recommendation and the list of decisions, newest
// first, bounded by since and limit.
func TestDecisions(t *testing.T) {
	e := openRecEnv(t)
	tok := e.UserToken(t, "pat")
	user := e.userID(t, tok)
	now := time.Now()
	rec := e.seedRec(t, user, "recovery_day", now.Add(-2*time.Hour), now.Add(time.Hour))
	held := e.seedDecision(t, user, now.Add(-time.Hour))
	old := e.seedDecision(t, user, now.Add(-40*24*time.Hour))
	older := e.seedDecision(t, user, now.Add(-400*24*time.Hour))

	var d recommend.DecisionRecord
	r := pbtest.Do(t, "GET", e.API+"/v1/users/me/recommendations/"+rec.ID+"/decision", tok, "", nil)
	r.JSON(t, &d)
	if r.Status != 200 || d.ID != rec.Decision || d.Recommendation != rec.ID || d.Delivered != 0 || len(d.Candidates) != 1 ||
		d.Candidates[0].Reason != recommend.ReasonDelivered || d.Candidates[0].Sample != 0.7 || d.Features["daypart"] != "morning" {
		t.Errorf("the decision: %d %s", r.Status, r.Body)
	}
	ids := func(q string) string {
		t.Helper()
		r := pbtest.Do(t, "GET", e.API+"/v1/users/me/decisions"+q, tok, "", nil)
		if r.Status != 200 {
			t.Fatalf("GET decisions%s: %d %s", q, r.Status, r.Body)
		}
		var out struct{ Decisions []recommend.DecisionRecord }
		r.JSON(t, &out)
		var got []string
		for _, d := range out.Decisions {
			got = append(got, map[string]string{rec.Decision: "delivered", held: "held", old: "old", older: "older"}[d.ID])
		}
		return strings.Join(got, " ")
	}
	for q, want := range map[string]string{
		"":         "held delivered",
		"?limit=1": "held",
		"?since=" + now.Add(-50*24*time.Hour).UTC().Format(time.RFC3339):                 "held delivered old",
		"?since=" + now.Add(-5*365*24*time.Hour).UTC().Format(time.RFC3339) + "&limit=3": "held delivered old",
		"?since=" + now.Add(-5*365*24*time.Hour).UTC().Format(time.RFC3339):              "held delivered old older",
		"?since=0001-01-01T00:00:00Z":                                                    "held delivered old older",
		"?since=" + now.Add(-90*time.Minute).UTC().Format(time.RFC3339):                  "held",
	} {
		if got := ids(q); got != want {
			t.Errorf("GET decisions%s: got %q, want %q", q, got, want)
		}
	}
	// Another user has none of them.
	other := e.UserToken(t, "quinn")
	r = pbtest.Do(t, "GET", e.API+"/v1/users/me/decisions", other, "", nil)
	if r.Status != 200 || strings.TrimSpace(string(r.Body)) != `{"decisions":[]}` {
		t.Errorf("another user's decisions: %d %s", r.Status, r.Body)
	}
	if r := pbtest.Do(t, "GET", e.API+"/v1/users/me/recommendations/"+recommend.NewID(now)+"/decision", tok, "", nil); r.Status != 404 {
		t.Errorf("the decision of an unknown recommendation: got %d", r.Status)
	}
}

// TestOpenAPIDescribesRecommendations: the recommendation routes and their shapes are in
// the document.
func TestOpenAPIDescribesRecommendations(t *testing.T) {
	e := openRecEnv(t)
	var doc struct {
		Paths      map[string]map[string]json.RawMessage `json:"paths"`
		Components struct {
			Schemas map[string]json.RawMessage `json:"schemas"`
		} `json:"components"`
	}
	pbtest.Do(t, "GET", e.API+"/openapi.json", "", "", nil).JSON(t, &doc)
	for path, method := range map[string]string{
		"/v1/users/{user}/recommendations":               "get",
		"/v1/users/{user}/recommendations/{id}/feedback": "post",
		"/v1/users/{user}/recommendations/{id}/decision": "get",
		"/v1/users/{user}/decisions":                     "get",
	} {
		if _, ok := doc.Paths[path][method]; !ok {
			t.Errorf("%s %s is not documented", method, path)
		}
	}
	for _, name := range []string{"Recommendation", "Recommendations", "FeedbackInput", "FeedbackView", "Decision", "Decisions"} {
		if _, ok := doc.Components.Schemas[name]; !ok {
			t.Errorf("schema %s is missing", name)
		}
	}
	if !strings.Contains(string(doc.Components.Schemas["FeedbackInput"]), `"snoozed"`) ||
		strings.Contains(string(doc.Components.Schemas["FeedbackInput"]), `"ignored"`) {
		t.Errorf("FeedbackInput's actions: %s", doc.Components.Schemas["FeedbackInput"])
	}
}
