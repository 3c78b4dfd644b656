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

// WrappedKey implements pulsebase.KeyStore.
func (s *Store) WrappedKey(ctx context.Context, owner, name string) (pulsebase.WrappedKey, error) {
	k, err := s.wrappedKey(ctx, owner, name)
	if errors.Is(err, pgx.ErrNoRows) {
		return pulsebase.WrappedKey{}, pulsebase.Errorf(pulsebase.ENOTFOUND, "no such key")
	}
	if err != nil {
		return pulsebase.WrappedKey{}, fmt.Errorf("get wrapped key: %w", err)
	}
	return k, nil
}

func (s *Store) wrappedKey(ctx context.Context, owner, name string) (pulsebase.WrappedKey, error) {
	k := pulsebase.WrappedKey{Owner: owner, Name: name}
	err := s.pool.QueryRow(ctx,
		`SELECT kek_id, ciphertext, created, updated FROM wrapped_keys WHERE owner = $1 AND name = $2`,
		owner, name).Scan(&k.KEKID, &k.Ciphertext, &k.Created, &k.Updated)
	if err != nil {
		return pulsebase.WrappedKey{}, err
	}
	k.Created, k.Updated = k.Created.UTC(), k.Updated.UTC()
	return k, nil
}

// CreateWrappedKey implements pulsebase.KeyStore. Like EnsureUser, it inserts unless present
// and otherwise returns the row that won.
func (s *Store) CreateWrappedKey(ctx context.Context, k pulsebase.WrappedKey) (pulsebase.WrappedKey, error) {
	k.Created, k.Updated = normTime(k.Created), normTime(k.Updated)
	if k.Ciphertext == nil {
		k.Ciphertext = []byte{} // NOT NULL; an empty key is odd but not this layer's call
	}
	tag, err := s.pool.Exec(ctx,
		`INSERT INTO wrapped_keys (owner, name, kek_id, ciphertext, created, updated)
		 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (owner, name) DO NOTHING`,
		k.Owner, k.Name, k.KEKID, k.Ciphertext, k.Created, k.Updated)
	if err != nil {
		return pulsebase.WrappedKey{}, fmt.Errorf("create wrapped key: %w", err)
	}
	if tag.RowsAffected() == 1 {
		return k, nil
	}
	first, err := s.wrappedKey(ctx, k.Owner, k.Name)
	if err != nil {
		return pulsebase.WrappedKey{}, fmt.Errorf("create wrapped key: %w", err)
	}
	return first, nil
}

// UpdateWrappedKey implements pulsebase.KeyStore. The compare is in the UPDATE's WHERE
// clause, so it is atomic; only when nothing matched does a second query tell conflict
// from absence.
func (s *Store) UpdateWrappedKey(ctx context.Context, k pulsebase.WrappedKey, expectKEKID string) error {
	if k.Ciphertext == nil {
		k.Ciphertext = []byte{}
	}
	tag, err := s.pool.Exec(ctx,
		`UPDATE wrapped_keys SET kek_id = $1, ciphertext = $2, updated = $3
		 WHERE owner = $4 AND name = $5 AND kek_id = $6`,
		k.KEKID, k.Ciphertext, normTime(k.Updated), k.Owner, k.Name, expectKEKID)
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
	case !exists:
		return pulsebase.Errorf(pulsebase.ENOTFOUND, "no such key")
	default:
		return pulsebase.Errorf(pulsebase.ECONFLICT, "key was re-wrapped concurrently")
	}
}

// DeleteWrappedKeys implements pulsebase.KeyStore.
func (s *Store) DeleteWrappedKeys(ctx context.Context, owner string) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM wrapped_keys WHERE owner = $1`, owner); err != nil {
		return fmt.Errorf("delete wrapped keys: %w", err)
	}
	return nil
}

// normTime returns t as it will come back from the database: UTC and whole microseconds
// (TIMESTAMPTZ's precision; truncating here, rather than letting the server round, makes
// the value returned by a create equal to the value read back later).
func normTime(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

func isUniqueViolation(err error) bool {
	var e *pgconn.PgError
	return errors.As(err, &e) && e.Code == "23505"
}
