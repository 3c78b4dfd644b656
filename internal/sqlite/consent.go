package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/pulsebase/pulsebase"
)

// AppendConsent implements pulsebase.ConsentStore. It also returns an *Error with code
// EINVALID when r has no user or a version below 1.
func (s *Store) AppendConsent(ctx context.Context, r pulsebase.ConsentRecord) error {
	if r.User == "" || r.Version < 1 {
		return pulsebase.Errorf(pulsebase.EINVALID, "consent record needs a user and a version of at least 1")
	}
	if r.Ciphertext == nil {
		r.Ciphertext = []byte{}
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var latest int
		if err := tx.QueryRowContext(ctx,
			`SELECT COALESCE(MAX(version), 0) FROM consent_records WHERE user_id = ?`,
			r.User).Scan(&latest); err != nil {
			return err
		}
		if latest != r.Version-1 {
			return pulsebase.Errorf(pulsebase.ECONFLICT, "consent was changed concurrently")
		}
		_, err := tx.ExecContext(ctx,
			`INSERT INTO consent_records (user_id, version, created, ciphertext) VALUES (?, ?, ?, ?)`,
			r.User, r.Version, normTime(r.Created).Format(timeFormat), r.Ciphertext)
		return err
	})
	if err != nil {
		return wrapErr("append consent", err)
	}
	return nil
}

// LatestConsent implements pulsebase.ConsentStore.
func (s *Store) LatestConsent(ctx context.Context, user string) (pulsebase.ConsentRecord, error) {
	r, err := scanConsent(s.read.QueryRowContext(ctx,
		`SELECT user_id, version, created, ciphertext FROM consent_records
		 WHERE user_id = ? ORDER BY version DESC LIMIT 1`, user))
	if errors.Is(err, sql.ErrNoRows) {
		return pulsebase.ConsentRecord{}, pulsebase.Errorf(pulsebase.ENOTFOUND, "no consent recorded")
	}
	if err != nil {
		return pulsebase.ConsentRecord{}, fmt.Errorf("latest consent: %w", err)
	}
	return r, nil
}

// ConsentHistory implements pulsebase.ConsentStore.
func (s *Store) ConsentHistory(ctx context.Context, user string) ([]pulsebase.ConsentRecord, error) {
	rows, err := s.read.QueryContext(ctx,
		`SELECT user_id, version, created, ciphertext FROM consent_records
		 WHERE user_id = ? ORDER BY version`, user)
	if err != nil {
		return nil, fmt.Errorf("consent history: %w", err)
	}
	defer rows.Close()
	var history []pulsebase.ConsentRecord
	for rows.Next() {
		r, err := scanConsent(rows)
		if err != nil {
			return nil, fmt.Errorf("consent history: %w", err)
		}
		history = append(history, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("consent history: %w", err)
	}
	return history, nil
}

func scanConsent(row scanner) (pulsebase.ConsentRecord, error) {
	var (
		r       pulsebase.ConsentRecord
		created string
		err     error
	)
	if err := row.Scan(&r.User, &r.Version, &created, &r.Ciphertext); err != nil {
		return pulsebase.ConsentRecord{}, err
	}
	if r.Created, err = parseTime(created); err != nil {
		return pulsebase.ConsentRecord{}, err
	}
	return r, nil
}
