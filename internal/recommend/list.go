package recommend

import (
	"context"
	"fmt"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/vault"
)

// Store is what lists recommendations: derived records, and the feedback that gives them
// their state. pulsebase.Store is one.
type Store interface {
	pulsebase.DerivedStore
	pulsebase.FeedbackStore
}

// ActiveWindow is how long after it was made a recommendation may still be active: the
// processor forgets deliveries after HistoryDays (and infers "ignored" only for
// those it remembers), so an older one is history whatever its expiry says.
const ActiveWindow = HistoryDays * 24 * time.Hour

// feedbackSkew is how much earlier than a recommendation's creation its feedback may be
// stamped: the two times come from the clocks of different processes.
const feedbackSkew = time.Hour

// Query selects the recommendations Recommendations returns.
type Query struct {
	// Now is the time states are computed at.
	Now time.Time
	// Since is the oldest creation time listed; with Active, it is at least
	// Now − ActiveWindow.
	Since time.Time
	// Active keeps only those still active at Now: state active, or accepted and not
	// expired.
	Active bool
	// Limit is the most returned (the newest); zero means no limit.
	Limit int
}

// List returns the user's recommendations selected by q, newest first, each
// with its state at q.Now (StateOf) and its feedback filled: the list of
// GET /v1/users/{user}/recommendations and of snapshots, in one place so that both say the
// same. The processor's daily cap keeps a user's recommendations few (a handful a day),
// so the range is read at once.
func List(ctx context.Context, st Store, keys *vault.Keys, user string, q Query) ([]Recommendation, error) {
	if q.Active && q.Since.Before(q.Now.Add(-ActiveWindow)) {
		q.Since = q.Now.Add(-ActiveWindow)
	}
	recs, err := st.DerivedRecords(ctx, user, KindRecommendation, IDKey(q.Since), "")
	if err != nil {
		return nil, fmt.Errorf("read recommendations: %w", err)
	}
	out := []Recommendation{}
	if len(recs) == 0 {
		return out, nil
	}
	fbs, err := st.Feedback(ctx, user, q.Since.Add(-feedbackSkew))
	if err != nil {
		return nil, fmt.Errorf("read feedback: %w", err)
	}
	byRec := map[string][]pulsebase.StoredFeedback{}
	for _, fb := range fbs {
		byRec[fb.Recommendation] = append(byRec[fb.Recommendation], fb)
	}
	for i := len(recs) - 1; i >= 0 && (q.Limit <= 0 || len(out) < q.Limit); i-- {
		r, err := OpenRecommendation(keys, recs[i].Key, recs[i].Ciphertext)
		if err != nil {
			return nil, err
		}
		if err := FillRecommendation(keys, r, byRec[r.ID], q.Now); err != nil {
			return nil, err
		}
		if q.Active && !StillActive(r, q.Now) {
			continue
		}
		out = append(out, *r)
	}
	return out, nil
}

// FillRecommendation sets r's State at now from its feedback (oldest first, as the store
// returns it) and lists that feedback in r.Feedback, with the ratings opened.
func FillRecommendation(keys *vault.Keys, r *Recommendation, feedback []pulsebase.StoredFeedback, now time.Time) error {
	r.State = StateOf(r, feedback, now)
	r.Feedback = make([]FeedbackView, 0, len(feedback))
	for _, fb := range feedback {
		p, err := OpenFeedback(keys, fb)
		if err != nil {
			return fmt.Errorf("open feedback on %s: %w", r.ID, err)
		}
		r.Feedback = append(r.Feedback, FeedbackView{Action: fb.Action, Rating: p.Rating, At: fb.At})
	}
	return nil
}

// StillActive reports whether a recommendation whose State was filled at now is still on
// the user's screen: active, or accepted (which stays until completed) and not expired.
func StillActive(r *Recommendation, now time.Time) bool {
	return r.State == StateActive || r.State == StateAccepted && now.Before(r.Expires)
}

// IDKey is the smallest record key of the ids (NewID) made at t or later:
// their time prefix, which sorts before every id that starts with it.
func IDKey(t time.Time) string {
	ms := t.UnixMilli()
	if ms < 0 {
		ms = 0
	}
	return fmt.Sprintf("%011x", ms)
}
