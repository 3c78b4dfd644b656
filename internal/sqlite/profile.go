package sqlite

import (
	"context"
	"database/sql"
	"errors"

	"github.com/pulsebase/pulsebase"
)

// Profile implements pulsebase.ProfileStore.
func (s *Store) Profile(ctx context.Context, user string) (pulsebase.StoredProfile, error) {
	p := pulsebase.StoredProfile{User: user}
	var updated string
	err := s.read.QueryRowContext(ctx, `SELECT version, ciphertext, updated FROM profiles WHERE user_id = ?`, user).
		Scan(&p.Version, &p.Ciphertext, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return p, pulsebase.Errorf(pulsebase.ENOTFOUND, "no profile")
	}
	if err != nil {
		return p, wrapErr("profile", err)
	}
	if p.Updated, err = parseTime(updated); err != nil {
		return p, err
	}
	return p, nil
}

// PutProfile implements pulsebase.ProfileStore.
func (s *Store) PutProfile(ctx context.Context, p pulsebase.StoredProfile) error {
	if p.User == "" || p.Version < 1 {
		return pulsebase.Errorf(pulsebase.EINVALID, "a profile needs a user and a version of at least 1")
	}
	if p.Ciphertext == nil {
		p.Ciphertext = []byte{}
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var stored int64
		err := tx.QueryRowContext(ctx, `SELECT version FROM profiles WHERE user_id = ?`, p.User).Scan(&stored)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if stored != p.Version-1 {
			return pulsebase.Errorf(pulsebase.ECONFLICT, "the profile was changed concurrently")
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO profiles (user_id, version, ciphertext, updated) VALUES (?, ?, ?, ?)
			ON CONFLICT (user_id) DO UPDATE SET version = excluded.version, ciphertext = excluded.ciphertext, updated = excluded.updated`,
			p.User, p.Version, p.Ciphertext, normTime(p.Updated).Format(timeFormat))
		return err
	})
	if err != nil {
		return wrapErr("put profile", err)
	}
	return nil
}
