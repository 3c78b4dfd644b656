package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/pulsebase/pulsebase"
)

// KEKs implements pulsebase.KEKStore. KEKs registered at the same time come in id order.
func (s *Store) KEKs(ctx context.Context) ([]pulsebase.KEKInfo, error) {
	rows, err := s.pool.Query(ctx,
		`SELECT id, uri, is_primary, created FROM keks ORDER BY created, id COLLATE "C"`)
	if err != nil {
		return nil, fmt.Errorf("list keks: %w", err)
	}
	keks, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (pulsebase.KEKInfo, error) {
		var k pulsebase.KEKInfo
		err := row.Scan(&k.ID, &k.URI, &k.Primary, &k.Created)
		k.Created = k.Created.UTC()
		return k, err
	})
	if err != nil {
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
	if _, err := s.pool.Exec(ctx,
		`INSERT INTO keks (id, uri, is_primary, created) VALUES ($1, $2, false, $3)
		 ON CONFLICT (id) DO NOTHING`,
		k.ID, k.URI, normTime(k.Created)); err != nil {
		return fmt.Errorf("register kek: %w", err)
	}
	return nil
}

// SetPrimaryKEK implements pulsebase.KEKStore.
//
// Under READ COMMITTED, two concurrent calls would each clear the primary flags their
// snapshot shows and then set their own, leaving two primaries (or, with the unique index,
// failing one). The EXCLUSIVE table lock (plain reads still run) makes each call see the
// last one's result, and keeps RemoveKEK from deleting the KEK between check and update.
// The old primary is cleared before the new one is set, so the unique index on the flag
// never sees two.
func (s *Store) SetPrimaryKEK(ctx context.Context, id string) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `LOCK TABLE keks IN EXCLUSIVE MODE`); err != nil {
			return err
		}
		var exists bool
		if err := tx.QueryRow(ctx,
			`SELECT EXISTS (SELECT 1 FROM keks WHERE id = $1)`, id).Scan(&exists); err != nil {
			return err
		}
		if !exists {
			return pulsebase.Errorf(pulsebase.ENOTFOUND, "no such kek")
		}
		if _, err := tx.Exec(ctx,
			`UPDATE keks SET is_primary = false WHERE is_primary AND id <> $1`, id); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE keks SET is_primary = true WHERE id = $1 AND NOT is_primary`, id)
		return err
	})
	if err != nil {
		return wrapErr("set primary kek", err)
	}
	return nil
}

// RemoveKEK implements pulsebase.KEKStore. It returns an *Error with code ENOTFOUND for an
// unknown id. The KEK's row stays locked from the check to the delete (FOR UPDATE conflicts
// with SetPrimaryKEK's table lock), so it cannot become primary in between.
func (s *Store) RemoveKEK(ctx context.Context, id string) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var primary bool
		err := tx.QueryRow(ctx, `SELECT is_primary FROM keks WHERE id = $1 FOR UPDATE`, id).Scan(&primary)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return pulsebase.Errorf(pulsebase.ENOTFOUND, "no such kek")
		case err != nil:
			return err
		case primary:
			return pulsebase.Errorf(pulsebase.ECONFLICT, "kek is primary")
		}
		var inUse bool
		if err := tx.QueryRow(ctx,
			`SELECT EXISTS (SELECT 1 FROM wrapped_keys WHERE kek_id = $1)`, id).Scan(&inUse); err != nil {
			return err
		}
		if inUse {
			return pulsebase.Errorf(pulsebase.ECONFLICT, "kek still wraps keys")
		}
		_, err = tx.Exec(ctx, `DELETE FROM keks WHERE id = $1`, id)
		return err
	})
	if err != nil {
		return wrapErr("remove kek", err)
	}
	return nil
}

// AppendKeyEvent implements pulsebase.KeyEventStore. e.Seq is ignored.
func (s *Store) AppendKeyEvent(ctx context.Context, e pulsebase.KeyEvent) error {
	if _, err := s.pool.Exec(ctx,
		`INSERT INTO key_events (at, actor, action, detail) VALUES ($1, $2, $3, $4)`,
		normTime(e.At), e.Actor, e.Action, e.Detail); err != nil {
		return fmt.Errorf("append key event: %w", err)
	}
	return nil
}

// KeyEvents implements pulsebase.KeyEventStore.
func (s *Store) KeyEvents(ctx context.Context) ([]pulsebase.KeyEvent, error) {
	rows, err := s.pool.Query(ctx, `SELECT seq, at, actor, action, detail FROM key_events ORDER BY seq`)
	if err != nil {
		return nil, fmt.Errorf("list key events: %w", err)
	}
	events, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (pulsebase.KeyEvent, error) {
		var e pulsebase.KeyEvent
		err := row.Scan(&e.Seq, &e.At, &e.Actor, &e.Action, &e.Detail)
		e.At = e.At.UTC()
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("list key events: %w", err)
	}
	return events, nil
}
