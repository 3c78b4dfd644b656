package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/pulsebase/pulsebase"
)

// consentColumns are the columns scanConsent scans, in its order.
const consentColumns = `user_id, version, created, ciphertext`

// AppendConsent implements pulsebase.ConsentStore. It also returns an *Error with code
// EINVALID when r has no user or a version below 1.
//
// The compare and the insert are one statement. Two writers of the same version can both
// pass the compare, but the primary key (user_id, version) lets only one insert; and a
// version can only pass once its predecessor is committed, so the history has no gaps.
func (s *Store) AppendConsent(ctx context.Context, r pulsebase.ConsentRecord) error {
	if r.User == "" || r.Version < 1 {
		return pulsebase.Errorf(pulsebase.EINVALID, "consent record needs a user and a version of at least 1")
	}
	if r.Ciphertext == nil {
		r.Ciphertext = []byte{}
	}
	tag, err := s.pool.Exec(ctx,
		`INSERT INTO consent_records (user_id, version, created, ciphertext)
		 SELECT $1, $2, $3, $4
		 WHERE (SELECT COALESCE(MAX(version), 0) FROM consent_records WHERE user_id = $1) = $2 - 1`,
		r.User, r.Version, normTime(r.Created), r.Ciphertext)
	if isUniqueViolation(err) || err == nil && tag.RowsAffected() == 0 {
		return pulsebase.Errorf(pulsebase.ECONFLICT, "consent was changed concurrently")
	}
	if err != nil {
		return fmt.Errorf("append consent: %w", err)
	}
	return nil
}

// LatestConsent implements pulsebase.ConsentStore.
func (s *Store) LatestConsent(ctx context.Context, user string) (pulsebase.ConsentRecord, error) {
	r, err := scanConsent(s.pool.QueryRow(ctx,
		`SELECT `+consentColumns+` FROM consent_records
		 WHERE user_id = $1 ORDER BY version DESC LIMIT 1`, user))
	if errors.Is(err, pgx.ErrNoRows) {
		return pulsebase.ConsentRecord{}, pulsebase.Errorf(pulsebase.ENOTFOUND, "no consent recorded")
	}
	if err != nil {
		return pulsebase.ConsentRecord{}, fmt.Errorf("latest consent: %w", err)
	}
	return r, nil
}

// ConsentHistory implements pulsebase.ConsentStore.
func (s *Store) ConsentHistory(ctx context.Context, user string) ([]pulsebase.ConsentRecord, error) {
	rows, err := s.pool.Query(ctx,
		`SELECT `+consentColumns+` FROM consent_records WHERE user_id = $1 ORDER BY version`, user)
	if err != nil {
		return nil, fmt.Errorf("consent history: %w", err)
	}
	history, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (pulsebase.ConsentRecord, error) {
		return scanConsent(row)
	})
	if err != nil {
		return nil, fmt.Errorf("consent history: %w", err)
	}
	return history, nil
}

// scanConsent scans the consentColumns.
func scanConsent(row pgx.Row) (pulsebase.ConsentRecord, error) {
	var r pulsebase.ConsentRecord
	if err := row.Scan(&r.User, &r.Version, &r.Created, &r.Ciphertext); err != nil {
		return pulsebase.ConsentRecord{}, err
	}
	r.Created = r.Created.UTC() // pgx returns TIMESTAMPTZ in the local zone
	return r, nil
}
