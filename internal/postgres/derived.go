package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/pulsebase/pulsebase"
)

// CommitPartition implements pulsebase.DerivedStore. The checkpoint row is locked (FOR
// UPDATE, or created first) before the fencing check, so two owners of one partition are
// serialized and the older epoch loses.
func (s *Store) CommitPartition(ctx context.Context, cp pulsebase.Checkpoint, records []pulsebase.DerivedRecord) error {
	if cp.Partition < 0 {
		return pulsebase.Errorf(pulsebase.EINVALID, "negative partition")
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO partition_checkpoints (partition, epoch, seq, updated)
			VALUES ($1, 0, 0, $2) ON CONFLICT (partition) DO NOTHING`, cp.Partition, normTime(cp.Updated)); err != nil {
			return err
		}
		var epoch, seq int64
		if err := tx.QueryRow(ctx, `SELECT epoch, seq FROM partition_checkpoints WHERE partition = $1 FOR UPDATE`,
			cp.Partition).Scan(&epoch, &seq); err != nil {
			return err
		}
		switch {
		case int64(cp.Epoch) < epoch:
			return pulsebase.Errorf(pulsebase.EFENCED, "partition %d is owned by a newer epoch", cp.Partition)
		case int64(cp.Epoch) == epoch && int64(cp.Seq) < seq:
			return pulsebase.Errorf(pulsebase.EINVALID, "checkpoint of partition %d would go back from %d to %d", cp.Partition, seq, cp.Seq)
		}
		var b pgx.Batch
		for _, r := range records {
			if r.User != "" && r.Kind == "" && r.Delete {
				b.Queue(`DELETE FROM derived WHERE user_id = $1 AND kind <> ALL($2)`, r.User, pulsebase.KeptKinds)
				continue
			}
			if r.User == "" || r.Kind == "" {
				return pulsebase.Errorf(pulsebase.EINVALID, "derived record needs a user and a kind")
			}
			if r.Delete {
				b.Queue(`DELETE FROM derived WHERE user_id = $1 AND kind = $2 AND key = $3`, r.User, r.Kind, r.Key)
				continue
			}
			if r.Ciphertext == nil {
				r.Ciphertext = []byte{}
			}
			b.Queue(`INSERT INTO derived (user_id, kind, key, ciphertext, updated) VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (user_id, kind, key) DO UPDATE SET ciphertext = excluded.ciphertext, updated = excluded.updated`,
				r.User, r.Kind, r.Key, r.Ciphertext, normTime(r.Updated))
		}
		b.Queue(`UPDATE partition_checkpoints SET epoch = $2, seq = $3, updated = $4 WHERE partition = $1`,
			cp.Partition, int64(cp.Epoch), int64(cp.Seq), normTime(cp.Updated))
		return tx.SendBatch(ctx, &b).Close()
	})
	if err != nil {
		return wrapErr("commit partition", err)
	}
	return nil
}

// Checkpoint implements pulsebase.DerivedStore.
func (s *Store) Checkpoint(ctx context.Context, p int) (pulsebase.Checkpoint, error) {
	cp := pulsebase.Checkpoint{Partition: p}
	var epoch, seq int64
	err := s.pool.QueryRow(ctx, `SELECT epoch, seq, updated FROM partition_checkpoints WHERE partition = $1`, p).
		Scan(&epoch, &seq, &cp.Updated)
	if errors.Is(err, pgx.ErrNoRows) {
		return cp, nil
	}
	if err != nil {
		return cp, fmt.Errorf("checkpoint: %w", err)
	}
	cp.Epoch, cp.Seq, cp.Updated = uint64(epoch), uint64(seq), cp.Updated.UTC()
	return cp, nil
}

// DerivedRecords implements pulsebase.DerivedStore.
func (s *Store) DerivedRecords(ctx context.Context, user, kind, fromKey, toKey string) ([]pulsebase.DerivedRecord, error) {
	q := `SELECT key, ciphertext, updated FROM derived WHERE user_id = $1 AND kind = $2 AND key >= $3`
	args := []any{user, kind, fromKey}
	if toKey != "" {
		q += ` AND key <= $4`
		args = append(args, toKey)
	}
	rows, err := s.pool.Query(ctx, q+` ORDER BY key`, args...)
	if err != nil {
		return nil, fmt.Errorf("derived records: %w", err)
	}
	defer rows.Close()
	var out []pulsebase.DerivedRecord
	for rows.Next() {
		r := pulsebase.DerivedRecord{User: user, Kind: kind}
		if err := rows.Scan(&r.Key, &r.Ciphertext, &r.Updated); err != nil {
			return nil, fmt.Errorf("derived records: %w", err)
		}
		r.Updated = r.Updated.UTC()
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("derived records: %w", err)
	}
	return out, nil
}

// DeleteDerived implements pulsebase.DerivedStore.
func (s *Store) DeleteDerived(ctx context.Context, user string) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM derived WHERE user_id = $1`, user); err != nil {
		return fmt.Errorf("delete derived: %w", err)
	}
	return nil
}
