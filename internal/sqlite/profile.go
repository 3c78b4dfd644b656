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
	err := s.read.QueryRowContext(ctx, `SELECT version, published, ciphertext, updated FROM profiles WHERE user_id = ?`, user).
		Scan(&p.Version, &p.Published, &p.Ciphertext, &updated)
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
		// published is left out of the update: only MarkProfilePublished moves it.
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

// MarkProfilePublished implements pulsebase.ProfileStore.
func (s *Store) MarkProfilePublished(ctx context.Context, user string, version int64) error {
	if version < 1 {
		return pulsebase.Errorf(pulsebase.EINVALID, "a published version is at least 1")
	}
	res, err := s.write.ExecContext(ctx, `UPDATE profiles SET published = MAX(published, ?) WHERE user_id = ? AND version >= ?`,
		version, user, version)
	if err != nil {
		return wrapErr("mark profile published", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return wrapErr("mark profile published", err)
	} else if n == 1 {
		return nil
	}
	// Nothing matched: say why.
	p, err := s.Profile(ctx, user)
	if err != nil {
		return err
	}
	return pulsebase.Errorf(pulsebase.EINVALID, "profile version %d is not stored (the latest is %d)", version, p.Version)
}
