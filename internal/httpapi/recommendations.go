package httpapi

import (
	"context"
	"encoding/json"
	"hash/fnv"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/changefeed"
	"github.com/pulsebase/pulsebase/internal/processor"
	"github.com/pulsebase/pulsebase/internal/recommend"
	"github.com/pulsebase/pulsebase/internal/vault"
)

// Limits and windows of the recommendation routes.
const (
	// recommendationsAllWindow is how far back ?state=all lists: older recommendations
	// are history nobody scrolls to (and the bandit has forgotten them).
	recommendationsAllWindow = 90 * 24 * time.Hour
	defaultRecommendations   = 100
	maxRecommendations       = 500
	// defaultDecisionsWindow is how far back GET …/decisions looks without since.
	defaultDecisionsWindow = 30 * 24 * time.Hour
	defaultDecisions       = 50
	maxDecisions           = 500
	maxFeedbackBodyBytes   = 4 << 10
)

// feedbackActions are the actions a client may post; "ignored" is only ever inferred by
// the server at expiry.
var feedbackActions = []string{pulsebase.ActionAccepted, pulsebase.ActionDismissed, pulsebase.ActionCompleted, pulsebase.ActionSnoozed}

// recommendationsResponse is the body of GET …/recommendations.
type recommendationsResponse struct {
	Recommendations []recommend.Recommendation `json:"recommendations"`
}

func (s *Server) handleRecommendations(w http.ResponseWriter, r *http.Request) {
	usr := owner(r)
	q := r.URL.Query()
	now := time.Now().UTC()
	rq := recommend.Query{Now: now, Active: true}
	switch q.Get("state") {
	case "", "active":
	case "all":
		rq.Active, rq.Since = false, now.Add(-recommendationsAllWindow)
	default:
		writeProblem(w, pulsebase.EINVALID, "state must be active or all")
		return
	}
	var ok bool
	if rq.Limit, ok = limitParam(w, q.Get("limit"), defaultRecommendations, maxRecommendations); !ok {
		return
	}
	keys, err := s.deps.Vault.UserKeys(r.Context(), usr.ID)
	if err != nil {
		s.serviceError(w, r, "recommendation keys", err)
		return
	}
	list, err := recommend.List(r.Context(), s.deps.Store, keys, usr.ID, rq)
	if err != nil {
		s.serviceError(w, r, "list recommendations", err)
		return
	}
	list = slices.DeleteFunc(list, func(rec recommend.Recommendation) bool { return !s.mayReadKind(r, rec.Kind) })
	writeJSON(w, http.StatusOK, recommendationsResponse{Recommendations: list})
}

// mayReadKind reports whether the caller may read recommendations of kind: a reader of
// some categories only (a coach) sees those whose rule reads nothing else; a kind no rule
// of the library in use names is shown to them not at all.
func (s *Server) mayReadKind(r *http.Request, kind string) bool {
	d := accessOf(r).decision
	if d.Categories == nil {
		return d.Allowed()
	}
	if s.deps.Rules == nil {
		return false
	}
	rule := s.deps.Rules.Library().Rule(kind)
	if rule == nil {
		return false
	}
	for _, c := range rule.Categories {
		if !d.MayRead(c) {
			return false
		}
	}
	return true
}

// limitParam parses a limit query parameter from 1 to max (def when absent), answering
// 400 itself when it is not one.
func limitParam(w http.ResponseWriter, v string, def, max int) (int, bool) {
	if v == "" {
		return def, true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > max {
		writeProblem(w, pulsebase.EINVALID, "limit must be an integer from 1 to "+strconv.Itoa(max))
		return 0, false
	}
	return n, true
}

// feedbackBody is the body of POST …/recommendations/{id}/feedback.
type feedbackBody struct {
	Action string `json:"action"`
	Rating *int   `json:"rating"`
}

// feedbackChange is the data of the change a new feedback puts on the user's feed: the
// recommendation's new state and all its feedback, so that every device shows the same.
type feedbackChange struct {
	ID       string                   `json:"id"`
	State    string                   `json:"state"`
	Feedback []recommend.FeedbackView `json:"feedback"`
}

// handleFeedback records a user's action on one of their recommendations. It is
// idempotent per action: the same action posted again stores nothing and counts nothing
// (and publishes its change again under the same message id, so that a retry after a
// failed publish still reaches the feed — the broker drops it within its duplicate
// window). Feedback on an expired recommendation is recorded too: a late "completed" is
// still worth knowing; it never takes a reward already taken by an earlier action, such
// as the "ignored" inferred at expiry.
func (s *Server) handleFeedback(w http.ResponseWriter, r *http.Request) {
	if s.deps.Rules == nil || s.deps.JetStream == nil {
		writeProblem(w, pulsebase.EUNAVAILABLE, "recommendation feedback is not served here")
		return
	}
	usr := owner(r)
	var body feedbackBody
	if !decodeJSONBody(w, r, &body, maxFeedbackBodyBytes) {
		return
	}
	if !slices.Contains(feedbackActions, body.Action) {
		writeProblem(w, pulsebase.EINVALID, "action must be accepted, dismissed, completed or snoozed")
		return
	}
	rating := 0
	if body.Rating != nil {
		if rating = *body.Rating; rating < 1 || rating > 5 {
			writeProblem(w, pulsebase.EINVALID, "rating must be an integer from 1 to 5")
			return
		}
	}
	ctx := r.Context()
	keys, rec, ok := s.recommendation(w, r, usr.ID)
	if !ok {
		return
	}
	// Within this process, feedback on one recommendation is taken one at a time, so that
	// two actions posted at once cannot both carry the reward. (Across processes they
	// could, rarely: the bandit then counts that recommendation twice.)
	mu := &s.feedbackLocks[lockIndex(usr.ID, rec.ID, len(s.feedbackLocks))]
	mu.Lock()
	defer mu.Unlock()
	earlier, err := s.deps.Store.FeedbackOn(ctx, usr.ID, rec.ID)
	if err != nil {
		s.internalError(w, r, "read feedback", err)
		return
	}
	rewarded := false
	for _, fb := range earlier {
		p, err := recommend.OpenFeedback(keys, fb)
		if err != nil {
			s.serviceError(w, r, "open feedback", err)
			return
		}
		rewarded = rewarded || p.Reward != nil
	}
	payload := recommend.FeedbackPayload{Kind: rec.Kind, Rating: rating}
	var pool *pulsebase.PoolDelta
	if reward, ok := recommend.Reward(body.Action, rating); ok && !rewarded {
		payload.Reward = &reward
		// The pooled prior learns only from users who allowed model training on what the
		// kind's rule reads (ARCHITECTURE.md invariant 3).
		pooled, err := s.deps.Rules.Library().Pooled(ctx, s.deps.Consent, usr.ID, rec.Kind)
		if err != nil {
			s.serviceError(w, r, "pooling consent", err)
			return
		}
		if pooled {
			pool = &pulsebase.PoolDelta{Kind: rec.Kind, Success: reward, Failure: 1 - reward}
		}
	}
	fb, err := recommend.SealFeedback(keys, usr.ID, rec.ID, body.Action, time.Now().UTC(), payload)
	if err != nil {
		s.serviceError(w, r, "seal feedback", err)
		return
	}
	added, err := s.deps.Store.AddFeedback(ctx, fb, pool)
	if err != nil {
		s.serviceError(w, r, "add feedback", err)
		return
	}
	if added {
		s.deps.Metrics.RecFeedback.WithLabelValues(rec.Kind, body.Action).Inc()
	}
	if err := s.publishFeedback(ctx, keys, usr.ID, rec, body.Action); err != nil {
		s.deps.Log.Warn("publish feedback change", "user", usr.ID, "recommendation", rec.ID, "err", err)
		writeProblem(w, pulsebase.EUNAVAILABLE, "the feedback is stored but could not reach the change feed; send it again")
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// publishFeedback puts the recommendation's state after action on the user's change feed,
// with a message id unique to (user, recommendation, action).
func (s *Server) publishFeedback(ctx context.Context, keys *vault.Keys, user string, rec *recommend.Recommendation, action string) error {
	all, err := s.deps.Store.FeedbackOn(ctx, user, rec.ID)
	if err != nil {
		return err
	}
	if err := recommend.FillRecommendation(keys, rec, all, time.Now().UTC()); err != nil {
		return err
	}
	b, err := json.Marshal(feedbackChange{ID: rec.ID, State: rec.State, Feedback: rec.Feedback})
	if err != nil {
		return err
	}
	var data map[string]any
	if err := json.Unmarshal(b, &data); err != nil {
		return err
	}
	msgID := user + "-feedback-" + rec.ID + "-" + action
	_, err = changefeed.Publish(ctx, s.deps.JetStream, keys, user, msgID,
		[]processor.Change{{Kind: recommend.KindRecommendation, Key: rec.ID, Data: data}})
	return err
}

// recommendation reads the recommendation {id} of user, answering 404 itself when user has
// none with that id (another user's id included: the caller cannot tell them apart).
func (s *Server) recommendation(w http.ResponseWriter, r *http.Request, user string) (*vault.Keys, *recommend.Recommendation, bool) {
	id := r.PathValue("id")
	if _, ok := recommend.IDTime(id); !ok {
		writeProblem(w, pulsebase.ENOTFOUND, "no such recommendation")
		return nil, nil, false
	}
	recs, err := s.deps.Store.DerivedRecords(r.Context(), user, recommend.KindRecommendation, id, id)
	if err != nil {
		s.internalError(w, r, "read recommendation", err)
		return nil, nil, false
	}
	if len(recs) == 0 {
		writeProblem(w, pulsebase.ENOTFOUND, "no such recommendation")
		return nil, nil, false
	}
	keys, err := s.deps.Vault.UserKeys(r.Context(), user)
	if err != nil {
		s.serviceError(w, r, "recommendation keys", err)
		return nil, nil, false
	}
	rec, err := recommend.OpenRecommendation(keys, id, recs[0].Ciphertext)
	if err != nil {
		s.serviceError(w, r, "open recommendation", err)
		return nil, nil, false
	}
	return keys, rec, true
}

func (s *Server) handleRecommendationDecision(w http.ResponseWriter, r *http.Request) {
	usr := owner(r)
	keys, rec, ok := s.recommendation(w, r, usr.ID)
	if !ok {
		return
	}
	if rec.Decision == "" {
		writeProblem(w, pulsebase.ENOTFOUND, "no decision is recorded for this recommendation")
		return
	}
	recs, err := s.deps.Store.DerivedRecords(r.Context(), usr.ID, recommend.KindDecision, rec.Decision, rec.Decision)
	if err != nil {
		s.internalError(w, r, "read decision", err)
		return
	}
	if len(recs) == 0 {
		writeProblem(w, pulsebase.ENOTFOUND, "no decision is recorded for this recommendation")
		return
	}
	d, err := recommend.OpenDecision(keys, rec.Decision, recs[0].Ciphertext)
	if err != nil {
		s.serviceError(w, r, "open decision", err)
		return
	}
	writeJSON(w, http.StatusOK, d)
}

// decisionsResponse is the body of GET …/decisions.
type decisionsResponse struct {
	Decisions []*recommend.DecisionRecord `json:"decisions"`
}

func (s *Server) handleDecisions(w http.ResponseWriter, r *http.Request) {
	usr := owner(r)
	q := r.URL.Query()
	since := time.Now().Add(-defaultDecisionsWindow)
	if v := q.Get("since"); v != "" {
		var err error
		if since, err = time.Parse(time.RFC3339, v); err != nil {
			writeProblem(w, pulsebase.EINVALID, "since must be an RFC 3339 time")
			return
		}
	}
	limit, ok := limitParam(w, q.Get("limit"), defaultDecisions, maxDecisions)
	if !ok {
		return
	}
	keys, err := s.deps.Vault.UserKeys(r.Context(), usr.ID)
	if err != nil {
		s.serviceError(w, r, "decision keys", err)
		return
	}
	recs, err := newestRecords(r.Context(), s.deps.Store, usr.ID, recommend.KindDecision, since, limit)
	if err != nil {
		s.internalError(w, r, "read decisions", err)
		return
	}
	out := decisionsResponse{Decisions: make([]*recommend.DecisionRecord, 0, len(recs))}
	for _, rec := range recs {
		d, err := recommend.OpenDecision(keys, rec.Key, rec.Ciphertext)
		if err != nil {
			s.serviceError(w, r, "open decision", err)
			return
		}
		out.Decisions = append(out.Decisions, d)
	}
	writeJSON(w, http.StatusOK, out)
}

// newestRecords returns up to limit of user's records of kind whose keys are ids
// (recommend.NewID) made at since or later, newest first. It reads backwards from now in
// spans that double (a day, two, four, …), so that the newest few of a long history cost
// a read of about as many, and a sparse history going back years a handful of reads.
func newestRecords(ctx context.Context, st pulsebase.DerivedStore, user, kind string, since time.Time, limit int) ([]pulsebase.DerivedRecord, error) {
	if epoch := time.UnixMilli(0); since.Before(epoch) {
		since = epoch // ids count milliseconds from 1970
	}
	var out []pulsebase.DerivedRecord
	hiKey := "" // the first span has no upper bound: ids of a clock a little ahead count
	hi := time.Now()
	for span := 24 * time.Hour; len(out) < limit; span = min(2*span, maxSpan) {
		lo := hi.Add(-span)
		if lo.Before(since) {
			lo = since
		}
		// [lo, hi): an id made at hi's millisecond sorts after the bare prefix of hi.
		recs, err := st.DerivedRecords(ctx, user, kind, recommend.IDKey(lo), hiKey)
		if err != nil {
			return nil, err
		}
		for i := len(recs) - 1; i >= 0 && len(out) < limit; i-- {
			out = append(out, recs[i])
		}
		if !lo.After(since) {
			break
		}
		hi, hiKey = lo, recommend.IDKey(lo)
	}
	return out, nil
}

// maxSpan bounds the spans of newestRecords, far below time.Duration's 292 years.
const maxSpan = 64 * 365 * 24 * time.Hour

// lockIndex spreads (user, recommendation) pairs over n locks.
func lockIndex(user, rec string, n int) int {
	h := fnv.New32a()
	h.Write([]byte(user))
	h.Write([]byte{0})
	h.Write([]byte(rec))
	return int(h.Sum32() % uint32(n))
}
