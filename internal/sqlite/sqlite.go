// Package sqlite implements the pulsebase store interfaces on an SQLite file, the database of
// the embedded (single-machine) deployment. It uses the pure-Go driver modernc.org/sqlite so
// the binary needs no cgo.
//
// Only cmd/pulsebase (wiring) and tests should import it; everything else depends on the
// interfaces in the root package. internal/storetest holds the conformance suite this store
// shares with internal/postgres.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"runtime"
	"time"

	"github.com/pressly/goose/v3"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/pulsebase/pulsebase"
)

var _ pulsebase.Store = (*Store)(nil)

// migrations is the schema, applied in order by goose at Open.
//
//go:embed migrations/*.sql
var migrations embed.FS

// timeFormat is how times are stored: UTC, fixed width (so text order is time order) and
// microseconds, the finest precision PostgreSQL keeps, so both stores return the same time.
const timeFormat = "2006-01-02T15:04:05.000000Z"

// Store is a pulsebase.Store on one SQLite file. It is safe for concurrent use.
//
// SQLite allows one writer at a time. Rather than letting many connections race for the
// write lock and fail with SQLITE_BUSY, all writes go through a pool of exactly one
// connection, so writers queue in Go; reads use a separate pool of read-only connections,
// which WAL mode lets run beside the writer.
type Store struct {
	write *sql.DB // one connection; every statement that modifies the database
	read  *sql.DB // query_only connections; everything else
}

// Open opens (creating if needed) the SQLite database file at path and brings its schema up
// to date. path must name a file: an in-memory database cannot be shared by the two pools.
//
// Every connection uses WAL (readers do not block the writer), a busy timeout (another
// process, e.g. a backup, may hold a lock briefly), foreign keys, and synchronous=FULL:
// with NORMAL a power loss can lose the last commits, and a lost wrapped key is lost data.
func Open(ctx context.Context, path string) (*Store, error) {
	if path == "" || path == ":memory:" {
		return nil, fmt.Errorf("open sqlite: path %q does not name a file", path)
	}
	name := "file:" + (&url.URL{Path: path}).EscapedPath()
	common := url.Values{}
	common.Add("_pragma", "busy_timeout(10000)")
	common.Add("_pragma", "foreign_keys(1)")
	common.Add("_pragma", "synchronous(FULL)")

	// The writer sets WAL (persistent in the file) and begins every transaction IMMEDIATE,
	// taking the write lock up front instead of upgrading a read lock later, which is the
	// one case busy_timeout cannot resolve.
	wq := cloneValues(common)
	wq.Add("_pragma", "journal_mode(WAL)")
	wq.Set("_txlock", "immediate")
	write, err := sql.Open("sqlite", name+"?"+wq.Encode())
	if err != nil {
		return nil, fmt.Errorf("open sqlite: %w", err)
	}
	write.SetMaxOpenConns(1)
	write.SetMaxIdleConns(1)
	write.SetConnMaxLifetime(0)
	write.SetConnMaxIdleTime(0)
	// Connect the writer first so the file is in WAL mode before any reader opens it.
	// Switching a new file to WAL takes an exclusive lock, and SQLite reports SQLITE_BUSY
	// for that at once instead of waiting, so when two processes create the file at the same
	// moment one must retry.
	if err := retry(ctx, isBusy, func() error { return write.PingContext(ctx) }); err != nil {
		write.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	// SQLite has no advisory lock for goose to hold, so two processes may migrate a new file
	// at once; the loser's migration transaction fails ("table already exists") and rolls
	// back whole, and running Up again finds the work done. A real error repeats and is
	// returned.
	anyErr := func(error) bool { return true }
	if err := retry(ctx, anyErr, func() error { return migrate(ctx, write) }); err != nil {
		write.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}

	rq := cloneValues(common)
	rq.Add("_pragma", "query_only(1)") // a write on the read pool is a bug; make it fail
	read, err := sql.Open("sqlite", name+"?"+rq.Encode())
	if err != nil {
		write.Close()
		return nil, fmt.Errorf("open sqlite: %w", err)
	}
	n := max(4, runtime.NumCPU())
	read.SetMaxOpenConns(n)
	read.SetMaxIdleConns(n)
	if err := read.PingContext(ctx); err != nil {
		read.Close()
		write.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	return &Store{write: write, read: read}, nil
}

// migrate applies the embedded migrations that db lacks. It uses a goose Provider rather
// than goose's package-level functions so nothing global (dialect, registered Go
// migrations) is shared with other stores in the process.
func migrate(ctx context.Context, db *sql.DB) error {
	dir, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectSQLite3, db, dir,
		goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

// retry calls f until it succeeds, fails with an error again does not accept, or has
// failed five times, waiting a little longer after each failure.
func retry(ctx context.Context, again func(error) bool, f func() error) error {
	wait := 20 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := f()
		if err == nil || attempt == 5 || !again(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(wait):
		}
		wait *= 2
	}
}

func isBusy(err error) bool {
	var e *sqlite.Error
	return errors.As(err, &e) && e.Code()&0xff == sqlite3.SQLITE_BUSY
}

func cloneValues(v url.Values) url.Values {
	c := make(url.Values, len(v))
	for k, vs := range v {
		c[k] = append([]string(nil), vs...)
	}
	return c
}

// Close closes both pools. The Store must not be used afterwards.
func (s *Store) Close() error {
	return errors.Join(s.read.Close(), s.write.Close())
}

// Ping reports whether both pools can reach the database file.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.write.PingContext(ctx); err != nil {
		return fmt.Errorf("ping sqlite: %w", err)
	}
	if err := s.read.PingContext(ctx); err != nil {
		return fmt.Errorf("ping sqlite: %w", err)
	}
	return nil
}

// EnsureUser implements pulsebase.UserStore. The insert does nothing when the hash exists,
// so of racing callers exactly one creates the user; the others read the winner's row,
// which is committed by then because all writes are serialized on the one writer.
func (s *Store) EnsureUser(ctx context.Context, subjectHash []byte, newID string, now time.Time) (pulsebase.User, bool, error) {
	if len(subjectHash) == 0 || newID == "" {
		return pulsebase.User{}, false, pulsebase.Errorf(pulsebase.EINVALID, "user needs a subject hash and an id")
	}
	now = normTime(now)
	res, err := s.write.ExecContext(ctx,
		`INSERT INTO users (id, subject_hash, created) VALUES (?, ?, ?)
		 ON CONFLICT (subject_hash) DO NOTHING`,
		newID, subjectHash, now.Format(timeFormat))
	if isConstraint(err) {
		// The hash is new but the id is taken: ids are random, so this is a caller bug or an
		// astronomically unlikely collision; either way the caller must pick another id.
		return pulsebase.User{}, false, pulsebase.Errorf(pulsebase.ECONFLICT, "user id already in use")
	}
	if err != nil {
		return pulsebase.User{}, false, fmt.Errorf("ensure user: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return pulsebase.User{}, false, fmt.Errorf("ensure user: %w", err)
	} else if n == 1 {
		return pulsebase.User{ID: newID, Created: now}, true, nil
	}
	u, err := scanUser(s.read.QueryRowContext(ctx,
		`SELECT id, created FROM users WHERE subject_hash = ?`, subjectHash))
	if err != nil {
		return pulsebase.User{}, false, fmt.Errorf("ensure user: %w", err)
	}
	return u, false, nil
}

// User implements pulsebase.UserStore.
func (s *Store) User(ctx context.Context, id string) (pulsebase.User, error) {
	u, err := scanUser(s.read.QueryRowContext(ctx, `SELECT id, created FROM users WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return pulsebase.User{}, pulsebase.Errorf(pulsebase.ENOTFOUND, "no such user")
	}
	if err != nil {
		return pulsebase.User{}, fmt.Errorf("get user: %w", err)
	}
	return u, nil
}

func scanUser(row *sql.Row) (pulsebase.User, error) {
	var (
		u       pulsebase.User
		created string
		err     error
	)
	if err := row.Scan(&u.ID, &created); err != nil {
		return pulsebase.User{}, err
	}
	if u.Created, err = parseTime(created); err != nil {
		return pulsebase.User{}, err
	}
	return u, nil
}

// WrappedKey implements pulsebase.KeyStore.
func (s *Store) WrappedKey(ctx context.Context, owner, name string) (pulsebase.WrappedKey, error) {
	k, err := s.wrappedKey(ctx, s.read, owner, name)
	if errors.Is(err, sql.ErrNoRows) {
		return pulsebase.WrappedKey{}, pulsebase.Errorf(pulsebase.ENOTFOUND, "no such key")
	}
	if err != nil {
		return pulsebase.WrappedKey{}, fmt.Errorf("get wrapped key: %w", err)
	}
	return k, nil
}

func (s *Store) wrappedKey(ctx context.Context, db *sql.DB, owner, name string) (pulsebase.WrappedKey, error) {
	k := pulsebase.WrappedKey{Owner: owner, Name: name}
	var created, updated string
	err := db.QueryRowContext(ctx,
		`SELECT kek_id, ciphertext, created, updated FROM wrapped_keys WHERE owner = ? AND name = ?`,
		owner, name).Scan(&k.KEKID, &k.Ciphertext, &created, &updated)
	if err != nil {
		return pulsebase.WrappedKey{}, err
	}
	if k.Created, err = parseTime(created); err != nil {
		return pulsebase.WrappedKey{}, err
	}
	if k.Updated, err = parseTime(updated); err != nil {
		return pulsebase.WrappedKey{}, err
	}
	return k, nil
}

// CreateWrappedKey implements pulsebase.KeyStore. Like EnsureUser, it inserts unless present
// and otherwise returns the row that won.
func (s *Store) CreateWrappedKey(ctx context.Context, k pulsebase.WrappedKey) (pulsebase.WrappedKey, error) {
	k.Created, k.Updated = normTime(k.Created), normTime(k.Updated)
	if k.Ciphertext == nil {
		k.Ciphertext = []byte{} // NOT NULL; an empty key is odd but not this layer's call
	}
	res, err := s.write.ExecContext(ctx,
		`INSERT INTO wrapped_keys (owner, name, kek_id, ciphertext, created, updated)
		 VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (owner, name) DO NOTHING`,
		k.Owner, k.Name, k.KEKID, k.Ciphertext, k.Created.Format(timeFormat), k.Updated.Format(timeFormat))
	if err != nil {
		return pulsebase.WrappedKey{}, fmt.Errorf("create wrapped key: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return pulsebase.WrappedKey{}, fmt.Errorf("create wrapped key: %w", err)
	} else if n == 1 {
		return k, nil
	}
	first, err := s.wrappedKey(ctx, s.read, k.Owner, k.Name)
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
	res, err := s.write.ExecContext(ctx,
		`UPDATE wrapped_keys SET kek_id = ?, ciphertext = ?, updated = ?
		 WHERE owner = ? AND name = ? AND kek_id = ?`,
		k.KEKID, k.Ciphertext, normTime(k.Updated).Format(timeFormat), k.Owner, k.Name, expectKEKID)
	if err != nil {
		return fmt.Errorf("update wrapped key: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("update wrapped key: %w", err)
	}
	if n == 1 {
		return nil
	}
	var one int
	err = s.write.QueryRowContext(ctx,
		`SELECT 1 FROM wrapped_keys WHERE owner = ? AND name = ?`, k.Owner, k.Name).Scan(&one)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return pulsebase.Errorf(pulsebase.ENOTFOUND, "no such key")
	case err != nil:
		return fmt.Errorf("update wrapped key: %w", err)
	default:
		return pulsebase.Errorf(pulsebase.ECONFLICT, "key was re-wrapped concurrently")
	}
}

// DeleteWrappedKeys implements pulsebase.KeyStore.
func (s *Store) DeleteWrappedKeys(ctx context.Context, owner string) error {
	if _, err := s.write.ExecContext(ctx, `DELETE FROM wrapped_keys WHERE owner = ?`, owner); err != nil {
		return fmt.Errorf("delete wrapped keys: %w", err)
	}
	return nil
}

// normTime returns t as it will come back from the database: UTC, whole microseconds, and
// without a monotonic clock reading.
func normTime(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(timeFormat, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("parse stored time: %w", err)
	}
	return t.UTC(), nil
}

func isConstraint(err error) bool {
	var e *sqlite.Error
	if !errors.As(err, &e) {
		return false
	}
	return e.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY || e.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE
}
