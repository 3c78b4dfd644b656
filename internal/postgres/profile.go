package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/pulsebase/pulsebase"
)

// Profile implements pulsebase.ProfileStore.
func (s *Store) Profile(ctx context.Context, user string) (pulsebase.StoredProfile, error) {
	p := pulsebase.StoredProfile{User: user}
	err := s.pool.QueryRow(ctx, `SELECT version, published, ciphertext, updated FROM profiles WHERE user_id = $1`, user).
		Scan(&p.Version, &p.Published, &p.Ciphertext, &p.Updated)
	if errors.Is(err, pgx.ErrNoRows) {
		return p, pulsebase.Errorf(pulsebase.ENOTFOUND, "no profile")
	}
	if err != nil {
		return p, fmt.Errorf("profile: %w", err)
	}
	p.Updated = p.Updated.UTC()
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
	var tag interface{ RowsAffected() int64 }
	var err error
	// published is left out of both: only MarkProfilePublished moves it.
	if p.Version == 1 {
		tag, err = s.pool.Exec(ctx, `INSERT INTO profiles (user_id, version, ciphertext, updated) VALUES ($1, 1, $2, $3)
			ON CONFLICT (user_id) DO NOTHING`, p.User, p.Ciphertext, normTime(p.Updated))
	} else {
		tag, err = s.pool.Exec(ctx, `UPDATE profiles SET version = $2, ciphertext = $3, updated = $4
			WHERE user_id = $1 AND version = $2 - 1`, p.User, p.Version, p.Ciphertext, normTime(p.Updated))
	}
	if err != nil {
		return fmt.Errorf("put profile: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return pulsebase.Errorf(pulsebase.ECONFLICT, "the profile was changed concurrently")
	}
	return nil
}

// MarkProfilePublished implements pulsebase.ProfileStore.
func (s *Store) MarkProfilePublished(ctx context.Context, user string, version int64) error {
	if version < 1 {
		return pulsebase.Errorf(pulsebase.EINVALID, "a published version is at least 1")
	}
	tag, err := s.pool.Exec(ctx, `UPDATE profiles SET published = GREATEST(published, $2) WHERE user_id = $1 AND version >= $2`,
		user, version)
	if err != nil {
		return fmt.Errorf("mark profile published: %w", err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	// Nothing matched: say why.
	p, err := s.Profile(ctx, user)
	if err != nil {
		return err
	}
	return pulsebase.Errorf(pulsebase.EINVALID, "profile version %d is not stored (the latest is %d)", version, p.Version)
}
