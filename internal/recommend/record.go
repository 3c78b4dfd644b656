package recommend

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/vault"
)

// Kinds of the derived records of recommendations (pulsebase.KeptKinds: a rebuild keeps
// them).
const (
	// KindRecommendation is a delivered recommendation, key its id.
	KindRecommendation = "recommendation"
	// KindDecision is a ranking decision, key its id.
	KindDecision = "decision"
)

// Recommendation states (API.md "Recommendations"): active until feedback or expiry.
const (
	StateActive    = "active"
	StateAccepted  = "accepted"
	StateCompleted = "completed"
	StateDismissed = "dismissed"
	StateSnoozed   = "snoozed"
	StateIgnored   = "ignored"
	StateExpired   = "expired"
)

// NewID returns a new id for a recommendation or decision made at t: the milliseconds of t
// in hex (so that ids, which are record keys, sort by time) and 8 random hex digits.
func NewID(t time.Time) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%011x-%s", t.UnixMilli(), hex.EncodeToString(b[:]))
}

// IDTime returns the time an id was made at (to the millisecond); false for a string
// that is not an id.
func IDTime(id string) (time.Time, bool) {
	var ms int64
	var rest string
	if len(id) != 20 || id[11] != '-' {
		return time.Time{}, false
	}
	if _, err := fmt.Sscanf(id, "%011x-%s", &ms, &rest); err != nil || len(rest) != 8 {
		return time.Time{}, false
	}
	if _, err := hex.DecodeString(rest); err != nil {
		return time.Time{}, false
	}
	return time.UnixMilli(ms).UTC(), true
}

// Recommendation is a delivered recommendation as stored (sealed) and as the API shows
// it; State is the stored "active" and filled from feedback and expiry when read.
type Recommendation struct {
	ID       string         `json:"id"`
	Kind     string         `json:"kind"`
	Title    string         `json:"title"`
	Body     string         `json:"body"`
	Why      string         `json:"why"`
	Evidence map[string]any `json:"evidence"`
	Created  time.Time      `json:"created"`
	Expires  time.Time      `json:"expires"`
	State    string         `json:"state"`
	Priority int            `json:"priority"`
	// Decision is the id of the decision that delivered it; Library the rule library's
	// version.
	Decision string `json:"decision"`
	Library  string `json:"library"`
	// Feedback lists the user's actions on it, oldest first (filled when read).
	Feedback []FeedbackView `json:"feedback,omitempty"`
}

// FeedbackView is one action in a recommendation's feedback.
type FeedbackView struct {
	Action string    `json:"action"`
	Rating int       `json:"rating,omitempty"`
	At     time.Time `json:"at"`
}

// SealRecommendation seals r under the user's keys.
func SealRecommendation(keys *vault.Keys, r *Recommendation) ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	return keys.Seal(KindRecommendation, r.ID, b)
}

// OpenRecommendation opens a stored recommendation.
func OpenRecommendation(keys *vault.Keys, id string, ct []byte) (*Recommendation, error) {
	pt, err := keys.Open(KindRecommendation, id, ct)
	if err != nil {
		return nil, err
	}
	var r Recommendation
	if err := json.Unmarshal(pt, &r); err != nil {
		return nil, fmt.Errorf("decode recommendation %s: %w", id, err)
	}
	return &r, nil
}

// DecisionRecord is a decision as stored: the decision, the rule library's version and
// the recommendation it delivered, if any.
type DecisionRecord struct {
	ID             string `json:"id"`
	Library        string `json:"library"`
	Recommendation string `json:"recommendation,omitempty"`
	Decision
}

// SealDecision seals d under the user's keys.
func SealDecision(keys *vault.Keys, d *DecisionRecord) ([]byte, error) {
	b, err := json.Marshal(d)
	if err != nil {
		return nil, err
	}
	return keys.Seal(KindDecision, d.ID, b)
}

// OpenDecision opens a stored decision.
func OpenDecision(keys *vault.Keys, id string, ct []byte) (*DecisionRecord, error) {
	pt, err := keys.Open(KindDecision, id, ct)
	if err != nil {
		return nil, err
	}
	var d DecisionRecord
	if err := json.Unmarshal(pt, &d); err != nil {
		return nil, fmt.Errorf("decode decision %s: %w", id, err)
	}
	return &d, nil
}

// FeedbackPayload is the sealed part of a stored feedback: what it says about the user.
// Reward is set on the first action of a recommendation that teaches the bandit (see
// Reward); later ones (completed after accepted) carry none, so that one recommendation
// counts once.
type FeedbackPayload struct {
	Kind   string   `json:"kind"`
	Rating int      `json:"rating,omitempty"`
	Reward *float64 `json:"reward,omitempty"`
}

// feedbackRecord is the associated data of a feedback's seal: the recommendation and
// the action.
func feedbackRecord(rec, action string) string { return rec + "/" + action }

// SealFeedback returns the stored feedback of an action.
func SealFeedback(keys *vault.Keys, user, rec, action string, at time.Time, p FeedbackPayload) (pulsebase.StoredFeedback, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return pulsebase.StoredFeedback{}, err
	}
	ct, err := keys.Seal("feedback", feedbackRecord(rec, action), b)
	if err != nil {
		return pulsebase.StoredFeedback{}, err
	}
	return pulsebase.StoredFeedback{User: user, Recommendation: rec, Action: action, At: at, Ciphertext: ct}, nil
}

// OpenFeedback opens a stored feedback's payload.
func OpenFeedback(keys *vault.Keys, fb pulsebase.StoredFeedback) (FeedbackPayload, error) {
	var p FeedbackPayload
	pt, err := keys.Open("feedback", feedbackRecord(fb.Recommendation, fb.Action), fb.Ciphertext)
	if err != nil {
		return p, err
	}
	if err := json.Unmarshal(pt, &p); err != nil {
		return p, fmt.Errorf("decode feedback: %w", err)
	}
	return p, nil
}

// StateOf returns a recommendation's state at now given its feedback (oldest first): the
// latest action's, except that a later "accepted" does not undo "completed"; with none,
// active until it expires, then expired.
func StateOf(r *Recommendation, feedback []pulsebase.StoredFeedback, now time.Time) string {
	state := ""
	for _, f := range feedback {
		if state == StateCompleted && f.Action == pulsebase.ActionAccepted {
			continue
		}
		state = f.Action
	}
	switch {
	case state != "":
		return state
	case now.Before(r.Expires):
		return StateActive
	}
	return StateExpired
}

// Closed reports whether feedback ends a recommendation's active life: anything but
// "accepted" (an accepted recommendation stays on screen until completed or expired).
func Closed(feedback []pulsebase.StoredFeedback) bool {
	return slices.ContainsFunc(feedback, func(f pulsebase.StoredFeedback) bool { return f.Action != pulsebase.ActionAccepted })
}
