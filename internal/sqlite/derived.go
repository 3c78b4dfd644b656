package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/pulsebase/pulsebase"
)

// CommitPartition implements pulsebase.DerivedStore. Commits of different partitions are
// grouped into one SQLite transaction (group commit, see committer), each inside its own
// savepoint so that one refused commit leaves the others whole: with one writer and an
// fsync per transaction, 64 partitions committing 4 times a second each would otherwise
// queue behind each other.
func (s *Store) CommitPartition(ctx context.Context, cp pulsebase.Checkpoint, records []pulsebase.DerivedRecord) error {
	if cp.Partition < 0 {
		return pulsebase.Errorf(pulsebase.EINVALID, "negative partition")
	}
	req := &commitReq{cp: cp, records: records, done: make(chan error, 1)}
	select {
	case s.commits <- req:
	case <-s.stop:
		return errors.New("commit partition: the store is closed")
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		return ctx.Err() // the commit may still land; the caller stops either way
	}
}

// commitReq is a CommitPartition call waiting for the committer.
type commitReq struct {
	cp      pulsebase.Checkpoint
	records []pulsebase.DerivedRecord
	done    chan error
}

// maxGroup bounds the commits of one transaction.
const maxGroup = 128

// committer runs the group commits until the store closes.
func (s *Store) committer() {
	defer close(s.stopped)
	for {
		var batch []*commitReq
		select {
		case r := <-s.commits:
			batch = append(batch, r)
		case <-s.stop:
			return
		}
	more:
		for len(batch) < maxGroup {
			select {
			case r := <-s.commits:
				batch = append(batch, r)
			default:
				break more
			}
		}
		s.commitGroup(batch)
	}
}

func (s *Store) commitGroup(batch []*commitReq) {
	ctx := context.Background()
	results := make([]error, len(batch))
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		for i, r := range batch {
			if _, err := tx.ExecContext(ctx, `SAVEPOINT commit_partition`); err != nil {
				return err
			}
			if err := commitOne(ctx, tx, r.cp, r.records); err != nil {
				results[i] = err
				if _, err := tx.ExecContext(ctx, `ROLLBACK TO commit_partition`); err != nil {
					return err
				}
			}
			if _, err := tx.ExecContext(ctx, `RELEASE commit_partition`); err != nil {
				return err
			}
		}
		return nil
	})
	for i, r := range batch {
		if results[i] == nil {
			results[i] = err
		}
		if results[i] != nil {
			results[i] = wrapErr("commit partition", results[i])
		}
		r.done <- results[i]
	}
}

// commitOne writes one partition's records and checkpoint inside tx, if it is not fenced.
func commitOne(ctx context.Context, tx *sql.Tx, cp pulsebase.Checkpoint, records []pulsebase.DerivedRecord) error {
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
			if _, err := tx.ExecContext(ctx, `DELETE FROM derived WHERE user_id = ? AND kind NOT IN (?, ?)`, r.User, pulsebase.KeptKinds[0], pulsebase.KeptKinds[1]); err != nil {
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
