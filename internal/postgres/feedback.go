package postgres

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pulsebase/pulsebase"
)

// AddFeedback implements pulsebase.FeedbackStore. It also returns an *Error with code
// EINVALID when pool has no kind, or an amount that is negative or not finite (one NaN
// would spoil the kind's prior for good). A kind's Updated is the latest At of the
// feedback counted in it.
//
// The insert does nothing when the user already gave the action, and the pool is counted
// only when it inserted, in the same transaction. Under READ COMMITTED an insert that meets
// an uncommitted row with the same key waits for its transaction and then does nothing, so
// of racing retries exactly one inserts and counts; the pool's upsert adds to the row as
// it is after the writers before it, which hold its lock until they commit.
func (s *Store) AddFeedback(ctx context.Context, fb pulsebase.StoredFeedback, pool *pulsebase.PoolDelta) (bool, error) {
	if err := checkFeedback(fb, pool); err != nil {
		return false, err
	}
	if fb.Ciphertext == nil {
		fb.Ciphertext = []byte{}
	}
	at := normTime(fb.At)
	var added bool
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx,
			`INSERT INTO recommendation_feedback (user_id, recommendation, action, at, ciphertext)
			 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, recommendation, action) DO NOTHING`,
			fb.User, fb.Recommendation, fb.Action, at, fb.Ciphertext)
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		added = true
		if pool == nil {
			return nil
		}
		_, err = tx.Exec(ctx,
			`INSERT INTO recommendation_pool AS p (kind, success, failure, n, updated) VALUES ($1, $2, $3, 1, $4)
			 ON CONFLICT (kind) DO UPDATE SET success = p.success + excluded.success,
			 failure = p.failure + excluded.failure, n = p.n + 1, updated = GREATEST(p.updated, excluded.updated)`,
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

// feedbackColumns are the columns scanFeedback scans, in its order.
const feedbackColumns = `user_id, recommendation, action, at, ciphertext`

// Feedback implements pulsebase.FeedbackStore. since is compared as stored, to the
// microsecond, so a feedback given at since is returned even when since has nanoseconds.
// Recommendations and actions order bytewise (their columns are COLLATE "C"), as on SQLite.
func (s *Store) Feedback(ctx context.Context, user string, since time.Time) ([]pulsebase.StoredFeedback, error) {
	rows, err := s.pool.Query(ctx,
		`SELECT `+feedbackColumns+` FROM recommendation_feedback
		 WHERE user_id = $1 AND at >= $2 ORDER BY at, recommendation, action`,
		user, normTime(since))
	if err != nil {
		return nil, fmt.Errorf("feedback: %w", err)
	}
	feedback, err := pgx.CollectRows(rows, scanFeedback)
	if err != nil {
		return nil, fmt.Errorf("feedback: %w", err)
	}
	return feedback, nil
}

// FeedbackOn implements pulsebase.FeedbackStore.
func (s *Store) FeedbackOn(ctx context.Context, user, recommendation string) ([]pulsebase.StoredFeedback, error) {
	rows, err := s.pool.Query(ctx,
		`SELECT `+feedbackColumns+` FROM recommendation_feedback
		 WHERE user_id = $1 AND recommendation = $2 ORDER BY at, action`,
		user, recommendation)
	if err != nil {
		return nil, fmt.Errorf("feedback on recommendation: %w", err)
	}
	feedback, err := pgx.CollectRows(rows, scanFeedback)
	if err != nil {
		return nil, fmt.Errorf("feedback on recommendation: %w", err)
	}
	return feedback, nil
}

// scanFeedback scans the feedbackColumns.
func scanFeedback(row pgx.CollectableRow) (pulsebase.StoredFeedback, error) {
	var fb pulsebase.StoredFeedback
	if err := row.Scan(&fb.User, &fb.Recommendation, &fb.Action, &fb.At, &fb.Ciphertext); err != nil {
		return pulsebase.StoredFeedback{}, err
	}
	fb.At = fb.At.UTC() // pgx returns TIMESTAMPTZ in the local zone
	return fb, nil
}

// Pool implements pulsebase.FeedbackStore.
func (s *Store) Pool(ctx context.Context) (map[string]pulsebase.PoolStat, error) {
	rows, err := s.pool.Query(ctx, `SELECT kind, success, failure, n, updated FROM recommendation_pool`)
	if err != nil {
		return nil, fmt.Errorf("pool: %w", err)
	}
	defer rows.Close()
	pool := make(map[string]pulsebase.PoolStat)
	for rows.Next() {
		var (
			kind string
			st   pulsebase.PoolStat
		)
		if err := rows.Scan(&kind, &st.Success, &st.Failure, &st.N, &st.Updated); err != nil {
			return nil, fmt.Errorf("pool: %w", err)
		}
		st.Updated = st.Updated.UTC()
		pool[kind] = st
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pool: %w", err)
	}
	return pool, nil
}
