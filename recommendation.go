package pulsebase

import (
	"context"
	"time"
)

// Recommendation feedback actions (API.md "Recommendations"); ActionIgnored is inferred by
// the server when a recommendation expires without any.
const (
	ActionAccepted  = "accepted"
	ActionDismissed = "dismissed"
	ActionCompleted = "completed"
	ActionSnoozed   = "snoozed"
	ActionIgnored   = "ignored"
)

// StoredFeedback is one action of a user on one of their recommendations. The action and
// time are in the clear (they are what makes a retried request idempotent and what the
// expiry of "ignored" needs); what it says about the user — the recommendation's kind, the
// rating, the reward the bandit learned — is sealed under the user's key.
type StoredFeedback struct {
	User           string
	Recommendation string
	Action         string
	At             time.Time
	Ciphertext     []byte
}

// PoolDelta is what one feedback adds to the pooled prior of its kind.
type PoolDelta struct {
	Kind             string
	Success, Failure float64
}

// PoolStat is the pooled prior of a recommendation kind: the successes and failures
// summed over the feedback of every user who allowed it, and how many feedbacks that was.
// It is an aggregate, never a single user's data.
type PoolStat struct {
	Success, Failure float64
	N                int64
	Updated          time.Time
}

// FeedbackStore keeps users' feedback on recommendations and the pooled prior the bandit
// starts new users from.
type FeedbackStore interface {
	// AddFeedback stores fb unless the user already gave fb.Action on fb.Recommendation,
	// and reports whether fb was new. When it is new and pool is not nil, pool's amounts are
	// added to the pooled counts of pool.Kind (N grows by one) in the same transaction, so a
	// retried request never counts twice. It returns an *Error with code EINVALID without
	// a user, recommendation or action.
	AddFeedback(ctx context.Context, fb StoredFeedback, pool *PoolDelta) (added bool, err error)

	// Feedback returns the user's feedback given at or after since, oldest first (then by
	// recommendation, then action).
	Feedback(ctx context.Context, user string, since time.Time) ([]StoredFeedback, error)

	// FeedbackOn returns the user's feedback on one recommendation, oldest first (then by
	// action); none is an empty list, not an error.
	FeedbackOn(ctx context.Context, user, recommendation string) ([]StoredFeedback, error)

	// Pool returns the pooled prior of every kind that has one.
	Pool(ctx context.Context) (map[string]PoolStat, error)
}
