package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"time"

	"github.com/pulsebase/pulsebase"
)

// AddFeedback implements pulsebase.FeedbackStore. It also returns an *Error with code
// EINVALID when pool has no kind, or an amount that is negative or not finite (one NaN
// would spoil the kind's prior for good). A kind's Updated is the latest At of the
// feedback counted in it.
//
// The insert does nothing when the user already gave the action, and the pool is counted
// only when it inserted. Both are one transaction on the single writer, begun IMMEDIATE, so
// of racing retries exactly one inserts and counts.
func (s *Store) AddFeedback(ctx context.Context, fb pulsebase.StoredFeedback, pool *pulsebase.PoolDelta) (bool, error) {
	if err := checkFeedback(fb, pool); err != nil {
		return false, err
	}
	if fb.Ciphertext == nil {
		fb.Ciphertext = []byte{}
	}
	at := normTime(fb.At).Format(timeFormat)
	var added bool
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx,
			`INSERT INTO recommendation_feedback (user_id, recommendation, action, at, ciphertext)
			 VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_id, recommendation, action) DO NOTHING`,
			fb.User, fb.Recommendation, fb.Action, at, fb.Ciphertext)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return err
		}
		added = true
		if pool == nil {
			return nil
		}
		// Unqualified columns in DO UPDATE are the stored row's; times are fixed-width text, so
		// MAX is the later one.
		_, err = tx.ExecContext(ctx,
			`INSERT INTO recommendation_pool (kind, success, failure, n, updated) VALUES (?, ?, ?, 1, ?)
			 ON CONFLICT (kind) DO UPDATE SET success = success + excluded.success,
			 failure = failure + excluded.failure, n = n + 1, updated = MAX(updated, excluded.updated)`,
			pool.Kind, pool.Success, pool.Failure, at)
		return err
	})
	if err != nil {
		return false, wrapErr("add feedback", err)
	}
	return added, nil
}

// checkFeedback returns the *Error with code EINVALID that AddFeedback returns for fb and
// pool, or nil.
func checkFeedback(fb pulsebase.StoredFeedback, pool *pulsebase.PoolDelta) error {
	if fb.User == "" || fb.Recommendation == "" || fb.Action == "" {
		return pulsebase.Errorf(pulsebase.EINVALID, "feedback needs a user, a recommendation and an action")
	}
	if pool == nil {
		return nil
	}
	if pool.Kind == "" {
		return pulsebase.Errorf(pulsebase.EINVALID, "a pool delta needs a kind")
	}
	for _, v := range []float64{pool.Success, pool.Failure} {
		if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			return pulsebase.Errorf(pulsebase.EINVALID, "pool amounts must be finite and not negative")
		}
	}
	return nil
}

// feedbackColumns are the columns queryFeedback scans, in its order.
const feedbackColumns = `user_id, recommendation, action, at, ciphertext`

// Feedback implements pulsebase.FeedbackStore. since is compared as stored, to the
// microsecond, so a feedback given at since is returned even when since has nanoseconds.
func (s *Store) Feedback(ctx context.Context, user string, since time.Time) ([]pulsebase.StoredFeedback, error) {
	feedback, err := s.queryFeedback(ctx,
		`SELECT `+feedbackColumns+` FROM recommendation_feedback
		 WHERE user_id = ? AND at >= ? ORDER BY at, recommendation, action`,
		user, normTime(since).Format(timeFormat))
	if err != nil {
		return nil, fmt.Errorf("feedback: %w", err)
	}
	return feedback, nil
}

// FeedbackOn implements pulsebase.FeedbackStore.
func (s *Store) FeedbackOn(ctx context.Context, user, recommendation string) ([]pulsebase.StoredFeedback, error) {
	feedback, err := s.queryFeedback(ctx,
		`SELECT `+feedbackColumns+` FROM recommendation_feedback
		 WHERE user_id = ? AND recommendation = ? ORDER BY at, action`,
		user, recommendation)
	if err != nil {
		return nil, fmt.Errorf("feedback on recommendation: %w", err)
	}
	return feedback, nil
}

// queryFeedback runs a query of the feedbackColumns. None is an empty, not a nil, list, as
// in the PostgreSQL store (an API encodes it as [], not null).
func (s *Store) queryFeedback(ctx context.Context, query string, args ...any) ([]pulsebase.StoredFeedback, error) {
	rows, err := s.read.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	feedback := []pulsebase.StoredFeedback{}
	for rows.Next() {
		var (
			fb pulsebase.StoredFeedback
			at string
		)
		if err := rows.Scan(&fb.User, &fb.Recommendation, &fb.Action, &at, &fb.Ciphertext); err != nil {
			return nil, err
		}
		if fb.At, err = parseTime(at); err != nil {
			return nil, err
		}
		feedback = append(feedback, fb)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return feedback, nil
}

// Pool implements pulsebase.FeedbackStore.
func (s *Store) Pool(ctx context.Context) (map[string]pulsebase.PoolStat, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT kind, success, failure, n, updated FROM recommendation_pool`)
	if err != nil {
		return nil, fmt.Errorf("pool: %w", err)
	}
	defer rows.Close()
	pool := make(map[string]pulsebase.PoolStat)
	for rows.Next() {
		var (
			kind, updated string
			st            pulsebase.PoolStat
		)
		if err := rows.Scan(&kind, &st.Success, &st.Failure, &st.N, &updated); err != nil {
			return nil, fmt.Errorf("pool: %w", err)
		}
		if st.Updated, err = parseTime(updated); err != nil {
			return nil, err
		}
		pool[kind] = st
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pool: %w", err)
	}
	return pool, nil
}
