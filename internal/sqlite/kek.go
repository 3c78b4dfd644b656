package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/pulsebase/pulsebase"
)

// KEKs implements pulsebase.KEKStore. KEKs registered at the same time come in id order.
func (s *Store) KEKs(ctx context.Context) ([]pulsebase.KEKInfo, error) {
	rows, err := s.read.QueryContext(ctx,
		`SELECT id, uri, is_primary, created FROM keks ORDER BY created, id`)
	if err != nil {
		return nil, fmt.Errorf("list keks: %w", err)
	}
	defer rows.Close()
	var keks []pulsebase.KEKInfo
	for rows.Next() {
		var (
			k       pulsebase.KEKInfo
			created string
		)
		if err := rows.Scan(&k.ID, &k.URI, &k.Primary, &created); err != nil {
			return nil, fmt.Errorf("list keks: %w", err)
		}
		if k.Created, err = parseTime(created); err != nil {
			return nil, fmt.Errorf("list keks: %w", err)
		}
		keks = append(keks, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list keks: %w", err)
	}
	return keks, nil
}

// RegisterKEK implements pulsebase.KEKStore. k.Primary is ignored: only SetPrimaryKEK makes
// a KEK primary. It returns an *Error with code EINVALID when k has no id.
func (s *Store) RegisterKEK(ctx context.Context, k pulsebase.KEKInfo) error {
	if k.ID == "" {
		return pulsebase.Errorf(pulsebase.EINVALID, "kek needs an id")
	}
	if _, err := s.write.ExecContext(ctx,
		`INSERT INTO keks (id, uri, is_primary, created) VALUES (?, ?, 0, ?)
		 ON CONFLICT (id) DO NOTHING`,
		k.ID, k.URI, normTime(k.Created).Format(timeFormat)); err != nil {
		return fmt.Errorf("register kek: %w", err)
	}
	return nil
}

// SetPrimaryKEK implements pulsebase.KEKStore. The old primary is cleared before the new
// one is set, so the unique index on the primary flag never sees two.
func (s *Store) SetPrimaryKEK(ctx context.Context, id string) error {
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var one int
		err := tx.QueryRowContext(ctx, `SELECT 1 FROM keks WHERE id = ?`, id).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return pulsebase.Errorf(pulsebase.ENOTFOUND, "no such kek")
		}
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx,
			`UPDATE keks SET is_primary = 0 WHERE is_primary = 1 AND id <> ?`, id); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE keks SET is_primary = 1 WHERE id = ?`, id)
		return err
	})
	if err != nil {
		return wrapErr("set primary kek", err)
	}
	return nil
}

// RemoveKEK implements pulsebase.KEKStore. It returns an *Error with code ENOTFOUND for an
// unknown id. The checks and the delete share one write transaction, so no key can be
// wrapped by the KEK, or the KEK made primary, in between.
func (s *Store) RemoveKEK(ctx context.Context, id string) error {
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var primary, inUse bool
		err := tx.QueryRowContext(ctx,
			`SELECT is_primary, EXISTS (SELECT 1 FROM wrapped_keys WHERE kek_id = ?1)
			 FROM keks WHERE id = ?1`, id).Scan(&primary, &inUse)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return pulsebase.Errorf(pulsebase.ENOTFOUND, "no such kek")
		case err != nil:
			return err
		case primary:
			return pulsebase.Errorf(pulsebase.ECONFLICT, "kek is primary")
		case inUse:
			return pulsebase.Errorf(pulsebase.ECONFLICT, "kek still wraps keys")
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM keks WHERE id = ?`, id)
		return err
	})
	if err != nil {
		return wrapErr("remove kek", err)
	}
	return nil
}

// AppendKeyEvent implements pulsebase.KeyEventStore. e.Seq is ignored.
func (s *Store) AppendKeyEvent(ctx context.Context, e pulsebase.KeyEvent) error {
	if _, err := s.write.ExecContext(ctx,
		`INSERT INTO key_events (at, actor, action, detail) VALUES (?, ?, ?, ?)`,
		normTime(e.At).Format(timeFormat), e.Actor, e.Action, e.Detail); err != nil {
		return fmt.Errorf("append key event: %w", err)
	}
	return nil
}

// KeyEvents implements pulsebase.KeyEventStore.
func (s *Store) KeyEvents(ctx context.Context) ([]pulsebase.KeyEvent, error) {
	rows, err := s.read.QueryContext(ctx,
		`SELECT seq, at, actor, action, detail FROM key_events ORDER BY seq`)
	if err != nil {
		return nil, fmt.Errorf("list key events: %w", err)
	}
	defer rows.Close()
	var events []pulsebase.KeyEvent
	for rows.Next() {
		var (
			e  pulsebase.KeyEvent
			at string
		)
		if err := rows.Scan(&e.Seq, &at, &e.Actor, &e.Action, &e.Detail); err != nil {
			return nil, fmt.Errorf("list key events: %w", err)
		}
		if e.At, err = parseTime(at); err != nil {
			return nil, fmt.Errorf("list key events: %w", err)
		}
		events = append(events, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list key events: %w", err)
	}
	return events, nil
}
