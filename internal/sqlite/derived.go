package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/pulsebase/pulsebase"
)

// CommitPartition implements pulsebase.DerivedStore.
func (s *Store) CommitPartition(ctx context.Context, cp pulsebase.Checkpoint, records []pulsebase.DerivedRecord) error {
	if cp.Partition < 0 {
		return pulsebase.Errorf(pulsebase.EINVALID, "negative partition")
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var epoch, seq uint64
		err := tx.QueryRowContext(ctx, `SELECT epoch, seq FROM partition_checkpoints WHERE partition = ?`, cp.Partition).Scan(&epoch, &seq)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return err
		case cp.Epoch < epoch:
			return pulsebase.Errorf(pulsebase.EFENCED, "partition %d is owned by a newer epoch", cp.Partition)
		case cp.Epoch == epoch && cp.Seq < seq:
			return pulsebase.Errorf(pulsebase.EINVALID, "checkpoint of partition %d would go back from %d to %d", cp.Partition, seq, cp.Seq)
		}
		stmt, err := tx.PrepareContext(ctx, `INSERT INTO derived (user_id, kind, key, ciphertext, updated) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (user_id, kind, key) DO UPDATE SET ciphertext = excluded.ciphertext, updated = excluded.updated`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, r := range records {
			if r.User != "" && r.Kind == "" && r.Delete {
				if _, err := tx.ExecContext(ctx, `DELETE FROM derived WHERE user_id = ?`, r.User); err != nil {
					return err
				}
				continue
			}
			if r.User == "" || r.Kind == "" {
				return pulsebase.Errorf(pulsebase.EINVALID, "derived record needs a user and a kind")
			}
			if r.Delete {
				if _, err := tx.ExecContext(ctx, `DELETE FROM derived WHERE user_id = ? AND kind = ? AND key = ?`, r.User, r.Kind, r.Key); err != nil {
					return err
				}
				continue
			}
			if r.Ciphertext == nil {
				r.Ciphertext = []byte{}
			}
			if _, err := stmt.ExecContext(ctx, r.User, r.Kind, r.Key, r.Ciphertext, normTime(r.Updated).Format(timeFormat)); err != nil {
				return err
			}
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO partition_checkpoints (partition, epoch, seq, updated) VALUES (?, ?, ?, ?)
			ON CONFLICT (partition) DO UPDATE SET epoch = excluded.epoch, seq = excluded.seq, updated = excluded.updated`,
			cp.Partition, cp.Epoch, cp.Seq, normTime(cp.Updated).Format(timeFormat))
		return err
	})
	if err != nil {
		return wrapErr("commit partition", err)
	}
	return nil
}

// Checkpoint implements pulsebase.DerivedStore.
func (s *Store) Checkpoint(ctx context.Context, p int) (pulsebase.Checkpoint, error) {
	cp := pulsebase.Checkpoint{Partition: p}
	var updated string
	err := s.read.QueryRowContext(ctx, `SELECT epoch, seq, updated FROM partition_checkpoints WHERE partition = ?`, p).
		Scan(&cp.Epoch, &cp.Seq, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return cp, nil
	}
	if err != nil {
		return cp, fmt.Errorf("checkpoint: %w", err)
	}
	if cp.Updated, err = parseTime(updated); err != nil {
		return cp, err
	}
	return cp, nil
}

// DerivedRecords implements pulsebase.DerivedStore.
func (s *Store) DerivedRecords(ctx context.Context, user, kind, fromKey, toKey string) ([]pulsebase.DerivedRecord, error) {
	q := `SELECT key, ciphertext, updated FROM derived WHERE user_id = ? AND kind = ? AND key >= ?`
	args := []any{user, kind, fromKey}
	if toKey != "" {
		q += ` AND key <= ?`
		args = append(args, toKey)
	}
	rows, err := s.read.QueryContext(ctx, q+` ORDER BY key`, args...)
	if err != nil {
		return nil, fmt.Errorf("derived records: %w", err)
	}
	defer rows.Close()
	var out []pulsebase.DerivedRecord
	for rows.Next() {
		r := pulsebase.DerivedRecord{User: user, Kind: kind}
		var updated string
		if err := rows.Scan(&r.Key, &r.Ciphertext, &updated); err != nil {
			return nil, fmt.Errorf("derived records: %w", err)
		}
		if r.Updated, err = parseTime(updated); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("derived records: %w", err)
	}
	return out, nil
}

// DeleteDerived implements pulsebase.DerivedStore.
func (s *Store) DeleteDerived(ctx context.Context, user string) error {
	if _, err := s.write.ExecContext(ctx, `DELETE FROM derived WHERE user_id = ?`, user); err != nil {
		return fmt.Errorf("delete derived: %w", err)
	}
	return nil
}
