// Package postgres implements the pulsebase store interfaces on PostgreSQL, the database of
// the scale-out deployment, where many Pulsebase processes share one database. Queries use
// pgx/v5's pgxpool directly; database/sql (through pgx's stdlib adapter) is used only
// because goose, which applies the embedded migrations, needs it.
//
// Only cmd/pulsebase (wiring) and tests should import it; everything else depends on the
// interfaces in the root package. internal/storetest holds the conformance suite this store
// shares with internal/sqlite.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/pulsebase/pulsebase"
)

var _ pulsebase.Store = (*Store)(nil)

// migrations is the schema, applied in order by goose at Open.
//
//go:embed migrations/*.sql
var migrations embed.FS

// Store is a pulsebase.Store on a PostgreSQL database. It is safe for concurrent use, and
// any number of Stores (in any number of processes) may share one database.
type Store struct {
	pool *pgxpool.Pool
}

// Open connects to the database at url (a postgres:// URL or a key=value DSN, as pgx
// accepts) and brings its schema up to date.
func Open(ctx context.Context, url string) (*Store, error) {
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		// pgx redacts the password from its parse errors.
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	if err := migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	return &Store{pool: pool}, nil
}

// migrate applies the embedded migrations that the database lacks. Processes of a
// scale-out deployment start together, so goose holds a PostgreSQL advisory lock (session
// locker) while migrating: one process migrates, the others wait and then find nothing to
// do. A goose Provider, not goose's package-level state, keeps this independent of any
// other user of goose in the process.
func migrate(ctx context.Context, pool *pgxpool.Pool) error {
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	db := stdlib.OpenDBFromPool(pool) // borrows pool connections; closing it leaves the pool open
	defer db.Close()
	dir, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, dir,
		goose.WithDisableGlobalRegistry(true),
		goose.WithSessionLocker(locker))
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

// Close closes the pool, waiting for connections in use to be returned.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// Ping reports whether the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("ping postgres: %w", err)
	}
	return nil
}

// EnsureUser implements pulsebase.UserStore. Under READ COMMITTED an INSERT that meets an
// uncommitted row with the same hash waits for that transaction, so when it does nothing
// the winner's row is committed and the following SELECT (a new snapshot) sees it.
func (s *Store) EnsureUser(ctx context.Context, subjectHash []byte, newID string, now time.Time) (pulsebase.User, bool, error) {
	if len(subjectHash) == 0 || newID == "" {
		return pulsebase.User{}, false, pulsebase.Errorf(pulsebase.EINVALID, "user needs a subject hash and an id")
	}
	now = normTime(now)
	tag, err := s.pool.Exec(ctx,
		`INSERT INTO users (id, subject_hash, created) VALUES ($1, $2, $3)
		 ON CONFLICT (subject_hash) DO NOTHING`,
		newID, subjectHash, now)
	if isUniqueViolation(err) {
		// The hash is new but the id is taken: ids are random, so this is a caller bug or an
		// astronomically unlikely collision; either way the caller must pick another id.
		return pulsebase.User{}, false, pulsebase.Errorf(pulsebase.ECONFLICT, "user id already in use")
	}
	if err != nil {
		return pulsebase.User{}, false, fmt.Errorf("ensure user: %w", err)
	}
	if tag.RowsAffected() == 1 {
		return pulsebase.User{ID: newID, Created: now}, true, nil
	}
	var u pulsebase.User
	err = s.pool.QueryRow(ctx, `SELECT id, created FROM users WHERE subject_hash = $1`, subjectHash).
		Scan(&u.ID, &u.Created)
	if err != nil {
		return pulsebase.User{}, false, fmt.Errorf("ensure user: %w", err)
	}
	u.Created = u.Created.UTC()
	return u, false, nil
}

// User implements pulsebase.UserStore.
func (s *Store) User(ctx context.Context, id string) (pulsebase.User, error) {
	var u pulsebase.User
	err := s.pool.QueryRow(ctx, `SELECT id, created FROM users WHERE id = $1`, id).Scan(&u.ID, &u.Created)
	if errors.Is(err, pgx.ErrNoRows) {
		return pulsebase.User{}, pulsebase.Errorf(pulsebase.ENOTFOUND, "no such user")
	}
	if err != nil {
		return pulsebase.User{}, fmt.Errorf("get user: %w", err)
	}
	u.Created = u.Created.UTC() // pgx returns TIMESTAMPTZ in the local zone
	return u, nil
}

// keyColumns are the columns scanKey scans, in its order.
const keyColumns = `owner, name, kek_id, ciphertext, created, updated`

// WrappedKey implements pulsebase.KeyStore.
func (s *Store) WrappedKey(ctx context.Context, owner, name string) (pulsebase.WrappedKey, error) {
	k, err := scanKey(s.pool.QueryRow(ctx,
		`SELECT `+keyColumns+` FROM wrapped_keys WHERE owner = $1 AND name = $2`, owner, name))
	if errors.Is(err, pgx.ErrNoRows) {
		// Erasing deletes the keys and writes the tombstone in one transaction, so an owner
		// with a key is never erased and only a miss needs the second look.
		err = absentKey(ctx, s.pool, owner)
	}
	if err != nil {
		return pulsebase.WrappedKey{}, wrapErr("get wrapped key", err)
	}
	return k, nil
}

// absentKey returns the error for a key of owner that is not there: EERASED if owner was
// erased, else ENOTFOUND.
func absentKey(ctx context.Context, q querier, owner string) error {
	erased, err := isErased(ctx, q, owner)
	switch {
	case err != nil:
		return err
	case erased:
		return errErased()
	default:
		return pulsebase.Errorf(pulsebase.ENOTFOUND, "no such key")
	}
}

func isErased(ctx context.Context, q querier, owner string) (bool, error) {
	var erased bool
	err := q.QueryRow(ctx,
		`SELECT EXISTS (SELECT 1 FROM erased_owners WHERE owner = $1)`, owner).Scan(&erased)
	return erased, err
}

func errErased() error {
	return pulsebase.Errorf(pulsebase.EERASED, "the keys of this owner were erased")
}

// lockKeyOwner takes a transaction-scoped advisory lock on owner's keys. Under READ
// COMMITTED one transaction alone does not keep EraseKeys and CreateWrappedKey apart: the
// create could check for the tombstone before the erase commits it, and the erase's DELETE
// does not see the create's uncommitted row, so the new key would outlive the erase. Both
// take this lock first, so one runs wholly before the other.
//
// The two-int form of the key is a key space of its own (goose's migration lock uses the
// one-bigint form); keyOwnerLock names this use, and a hashtext collision between two
// owners only makes them wait for each other.
func lockKeyOwner(ctx context.Context, tx pgx.Tx, owner string) error {
	_, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, hashtext($2))`, keyOwnerLock, owner)
	return err
}

// keyOwnerLock is the first half of the advisory lock keys that lockKeyOwner takes.
const keyOwnerLock int32 = 0x70624b4f // "pbKO"

// CreateWrappedKey implements pulsebase.KeyStore. Like EnsureUser, it inserts unless present
// and otherwise returns the row that won. The tombstone check, the insert and the read of
// the winner share one transaction, under the owner's lock (see lockKeyOwner).
func (s *Store) CreateWrappedKey(ctx context.Context, k pulsebase.WrappedKey) (pulsebase.WrappedKey, error) {
	k.Created, k.Updated = normTime(k.Created), normTime(k.Updated)
	if k.Ciphertext == nil {
		k.Ciphertext = []byte{} // NOT NULL; an empty key is odd but not this layer's call
	}
	stored := k
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lockKeyOwner(ctx, tx, k.Owner); err != nil {
			return err
		}
		if erased, err := isErased(ctx, tx, k.Owner); err != nil {
			return err
		} else if erased {
			return errErased()
		}
		tag, err := tx.Exec(ctx,
			`INSERT INTO wrapped_keys (owner, name, kek_id, ciphertext, created, updated)
			 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (owner, name) DO NOTHING`,
			k.Owner, k.Name, k.KEKID, k.Ciphertext, k.Created, k.Updated)
		if err != nil || tag.RowsAffected() == 1 {
			return err
		}
		// The row that won was committed before the lock was granted, so this statement's
		// snapshot holds it.
		stored, err = scanKey(tx.QueryRow(ctx,
			`SELECT `+keyColumns+` FROM wrapped_keys WHERE owner = $1 AND name = $2`, k.Owner, k.Name))
		return err
	})
	if err != nil {
		return pulsebase.WrappedKey{}, wrapErr("create wrapped key", err)
	}
	return stored, nil
}

// UpdateWrappedKey implements pulsebase.KeyStore. The compare is in the UPDATE's WHERE
// clause, so it is atomic; only when nothing matched do further queries tell conflict from
// absence and absence from erasure. An update cannot bring back an erased key, so it needs
// no owner lock: an UPDATE that waited for an erase finds the row gone, and the queries
// after it, each with a new snapshot, see the tombstone. The key is k's owner and name; of
// expect only the KEK id and ciphertext are compared.
func (s *Store) UpdateWrappedKey(ctx context.Context, k, expect pulsebase.WrappedKey) error {
	if k.Ciphertext == nil {
		k.Ciphertext = []byte{}
	}
	if expect.Ciphertext == nil {
		expect.Ciphertext = []byte{} // as stored; NULL would compare unknown
	}
	tag, err := s.pool.Exec(ctx,
		`UPDATE wrapped_keys SET kek_id = $1, ciphertext = $2, updated = $3
		 WHERE owner = $4 AND name = $5 AND kek_id = $6 AND ciphertext = $7`,
		k.KEKID, k.Ciphertext, normTime(k.Updated), k.Owner, k.Name, expect.KEKID, expect.Ciphertext)
	if err != nil {
		return fmt.Errorf("update wrapped key: %w", err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	var exists bool
	err = s.pool.QueryRow(ctx,
		`SELECT EXISTS (SELECT 1 FROM wrapped_keys WHERE owner = $1 AND name = $2)`,
		k.Owner, k.Name).Scan(&exists)
	switch {
	case err != nil:
		return fmt.Errorf("update wrapped key: %w", err)
	case exists:
		return pulsebase.Errorf(pulsebase.ECONFLICT, "key was changed concurrently")
	}
	return wrapErr("update wrapped key", absentKey(ctx, s.pool, k.Owner))
}

// EraseKeys implements pulsebase.KeyStore, under the owner's lock (see lockKeyOwner). A
// second erase keeps the time of the first.
func (s *Store) EraseKeys(ctx context.Context, owner string, at time.Time) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lockKeyOwner(ctx, tx, owner); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx,
			`INSERT INTO erased_owners (owner, erased) VALUES ($1, $2) ON CONFLICT (owner) DO NOTHING`,
			owner, normTime(at)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM wrapped_keys WHERE owner = $1`, owner)
		return err
	})
	if err != nil {
		return fmt.Errorf("erase keys: %w", err)
	}
	return nil
}

// WrappedKeysByKEK implements pulsebase.KeyStore. Keys sort in byte order (the "C"
// collation), as in the SQLite store, whatever the database's default collation. It
// returns an *Error with code EINVALID when limit is not positive: a page of nothing would
// look like the end of the keys.
func (s *Store) WrappedKeysByKEK(ctx context.Context, kekID, afterOwner, afterName string, limit int) ([]pulsebase.WrappedKey, error) {
	if limit <= 0 {
		return nil, pulsebase.Errorf(pulsebase.EINVALID, "limit must be positive")
	}
	rows, err := s.pool.Query(ctx,
		`SELECT `+keyColumns+` FROM wrapped_keys
		 WHERE kek_id = $1 AND (owner COLLATE "C", name COLLATE "C") > ($2, $3)
		 ORDER BY owner COLLATE "C", name COLLATE "C" LIMIT $4`,
		kekID, afterOwner, afterName, limit)
	if err != nil {
		return nil, fmt.Errorf("wrapped keys by kek: %w", err)
	}
	keys, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (pulsebase.WrappedKey, error) {
		return scanKey(row)
	})
	if err != nil {
		return nil, fmt.Errorf("wrapped keys by kek: %w", err)
	}
	return keys, nil
}

// CountWrappedKeys implements pulsebase.KeyStore.
func (s *Store) CountWrappedKeys(ctx context.Context) (map[string]int, error) {
	rows, err := s.pool.Query(ctx, `SELECT kek_id, COUNT(*) FROM wrapped_keys GROUP BY kek_id`)
	if err != nil {
		return nil, fmt.Errorf("count wrapped keys: %w", err)
	}
	defer rows.Close()
	counts := make(map[string]int)
	for rows.Next() {
		var (
			kek string
			n   int64
		)
		if err := rows.Scan(&kek, &n); err != nil {
			return nil, fmt.Errorf("count wrapped keys: %w", err)
		}
		counts[kek] = int(n)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count wrapped keys: %w", err)
	}
	return counts, nil
}

// scanKey scans the keyColumns.
func scanKey(row pgx.Row) (pulsebase.WrappedKey, error) {
	var k pulsebase.WrappedKey
	if err := row.Scan(&k.Owner, &k.Name, &k.KEKID, &k.Ciphertext, &k.Created, &k.Updated); err != nil {
		return pulsebase.WrappedKey{}, err
	}
	k.Created, k.Updated = k.Created.UTC(), k.Updated.UTC() // pgx returns the local zone
	return k, nil
}

// querier is a *pgxpool.Pool or a pgx.Tx.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// wrapErr adds context to err unless it is a *pulsebase.Error, whose message is meant for
// callers as it is.
func wrapErr(what string, err error) error {
	if _, ok := err.(*pulsebase.Error); ok {
		return err
	}
	return fmt.Errorf("%s: %w", what, err)
}

// normTime returns t as it will come back from the database: UTC and whole microseconds
// (TIMESTAMPTZ's precision; truncating here, rather than letting the server round, makes
// the value returned by a create equal to the value read back later).
func normTime(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

func isUniqueViolation(err error) bool {
	var e *pgconn.PgError
	return errors.As(err, &e) && e.Code == "23505"
}
