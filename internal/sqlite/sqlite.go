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
	"sync"
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

	// commits feeds the committer goroutine (group commit of partitions); stop ends it
	// and stopped reports that it has.
	commits       chan *commitReq
	stop, stopped chan struct{}
	closeOnce     sync.Once
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
	s := &Store{write: write, read: read, commits: make(chan *commitReq), stop: make(chan struct{}), stopped: make(chan struct{})}
	go s.committer()
	return s, nil
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
	s.closeOnce.Do(func() {
		close(s.stop)
		<-s.stopped
	})
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
	k, err := scanKey(s.read.QueryRowContext(ctx,
		`SELECT owner, name, kek_id, ciphertext, created, updated FROM wrapped_keys
		 WHERE owner = ? AND name = ?`, owner, name))
	if errors.Is(err, sql.ErrNoRows) {
		// Erasing deletes the keys and writes the tombstone in one transaction, so an owner
		// with a key is never erased and only a miss needs the second look.
		err = absentKey(ctx, s.read, owner)
	}
	if err != nil {
		return pulsebase.WrappedKey{}, wrapErr("get wrapped key", err)
	}
	return k, nil
}

// absentKey returns the error for a key of owner that is not there: EERASED if owner was
// erased, else ENOTFOUND.
func absentKey(ctx context.Context, q queryer, owner string) error {
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

func isErased(ctx context.Context, q queryer, owner string) (bool, error) {
	var erased bool
	err := q.QueryRowContext(ctx,
		`SELECT EXISTS (SELECT 1 FROM erased_owners WHERE owner = ?)`, owner).Scan(&erased)
	return erased, err
}

func errErased() error {
	return pulsebase.Errorf(pulsebase.EERASED, "the keys of this owner were erased")
}

// CreateWrappedKey implements pulsebase.KeyStore. Like EnsureUser, it inserts unless present
// and otherwise returns the row that won. The tombstone check, the insert and the read of
// the winner share one transaction, so a concurrent EraseKeys either comes first (and the
// create fails with EERASED) or after (and deletes the new key).
func (s *Store) CreateWrappedKey(ctx context.Context, k pulsebase.WrappedKey) (pulsebase.WrappedKey, error) {
	k.Created, k.Updated = normTime(k.Created), normTime(k.Updated)
	if k.Ciphertext == nil {
		k.Ciphertext = []byte{} // NOT NULL; an empty key is odd but not this layer's call
	}
	stored := k
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if erased, err := isErased(ctx, tx, k.Owner); err != nil {
			return err
		} else if erased {
			return errErased()
		}
		res, err := tx.ExecContext(ctx,
			`INSERT INTO wrapped_keys (owner, name, kek_id, ciphertext, created, updated)
			 VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (owner, name) DO NOTHING`,
			k.Owner, k.Name, k.KEKID, k.Ciphertext, k.Created.Format(timeFormat), k.Updated.Format(timeFormat))
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 1 {
			return err
		}
		stored, err = scanKey(tx.QueryRowContext(ctx,
			`SELECT owner, name, kek_id, ciphertext, created, updated FROM wrapped_keys
			 WHERE owner = ? AND name = ?`, k.Owner, k.Name))
		return err
	})
	if err != nil {
		return pulsebase.WrappedKey{}, wrapErr("create wrapped key", err)
	}
	return stored, nil
}

// UpdateWrappedKey implements pulsebase.KeyStore. The compare is in the UPDATE's WHERE
// clause, so it is atomic; only when nothing matched does a second query tell conflict
// from absence and absence from erasure. The key is k's owner and name; of expect only the
// KEK id and ciphertext are compared.
func (s *Store) UpdateWrappedKey(ctx context.Context, k, expect pulsebase.WrappedKey) error {
	if k.Ciphertext == nil {
		k.Ciphertext = []byte{}
	}
	if expect.Ciphertext == nil {
		expect.Ciphertext = []byte{} // as stored; NULL would compare unknown
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx,
			`UPDATE wrapped_keys SET kek_id = ?, ciphertext = ?, updated = ?
			 WHERE owner = ? AND name = ? AND kek_id = ? AND ciphertext = ?`,
			k.KEKID, k.Ciphertext, normTime(k.Updated).Format(timeFormat),
			k.Owner, k.Name, expect.KEKID, expect.Ciphertext)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 1 {
			return err
		}
		var exists bool
		if err := tx.QueryRowContext(ctx,
			`SELECT EXISTS (SELECT 1 FROM wrapped_keys WHERE owner = ? AND name = ?)`,
			k.Owner, k.Name).Scan(&exists); err != nil {
			return err
		}
		if exists {
			return pulsebase.Errorf(pulsebase.ECONFLICT, "key was changed concurrently")
		}
		return absentKey(ctx, tx, k.Owner)
	})
	if err != nil {
		return wrapErr("update wrapped key", err)
	}
	return nil
}

// EraseKeys implements pulsebase.KeyStore. A second erase keeps the time of the first.
func (s *Store) EraseKeys(ctx context.Context, owner string, at time.Time) error {
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO erased_owners (owner, erased) VALUES (?, ?) ON CONFLICT (owner) DO NOTHING`,
			owner, normTime(at).Format(timeFormat)); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM wrapped_keys WHERE owner = ?`, owner)
		return err
	})
	if err != nil {
		return fmt.Errorf("erase keys: %w", err)
	}
	return nil
}

// WrappedKeysByKEK implements pulsebase.KeyStore. Keys sort in byte order (SQLite's BINARY
// collation), as in the PostgreSQL store. It returns an *Error with code EINVALID when limit
// is not positive: a page of nothing would look like the end of the keys.
func (s *Store) WrappedKeysByKEK(ctx context.Context, kekID, afterOwner, afterName string, limit int) ([]pulsebase.WrappedKey, error) {
	if limit <= 0 {
		return nil, pulsebase.Errorf(pulsebase.EINVALID, "limit must be positive")
	}
	rows, err := s.read.QueryContext(ctx,
		`SELECT owner, name, kek_id, ciphertext, created, updated FROM wrapped_keys
		 WHERE kek_id = ? AND (owner, name) > (?, ?)
		 ORDER BY owner, name LIMIT ?`,
		kekID, afterOwner, afterName, limit)
	if err != nil {
		return nil, fmt.Errorf("wrapped keys by kek: %w", err)
	}
	defer rows.Close()
	var keys []pulsebase.WrappedKey
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, fmt.Errorf("wrapped keys by kek: %w", err)
		}
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("wrapped keys by kek: %w", err)
	}
	return keys, nil
}

// CountWrappedKeys implements pulsebase.KeyStore.
func (s *Store) CountWrappedKeys(ctx context.Context) (map[string]int, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT kek_id, COUNT(*) FROM wrapped_keys GROUP BY kek_id`)
	if err != nil {
		return nil, fmt.Errorf("count wrapped keys: %w", err)
	}
	defer rows.Close()
	counts := make(map[string]int)
	for rows.Next() {
		var (
			kek string
			n   int
		)
		if err := rows.Scan(&kek, &n); err != nil {
			return nil, fmt.Errorf("count wrapped keys: %w", err)
		}
		counts[kek] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count wrapped keys: %w", err)
	}
	return counts, nil
}

// scanKey scans the columns owner, name, kek_id, ciphertext, created, updated.
func scanKey(row scanner) (pulsebase.WrappedKey, error) {
	var (
		k                pulsebase.WrappedKey
		created, updated string
		err              error
	)
	if err := row.Scan(&k.Owner, &k.Name, &k.KEKID, &k.Ciphertext, &created, &updated); err != nil {
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

// queryer is a *sql.DB or a *sql.Tx.
type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// scanner is a *sql.Row or *sql.Rows.
type scanner interface{ Scan(dest ...any) error }

// inTx runs f in a transaction on the writer, committing if f returns nil. The writer
// begins transactions IMMEDIATE, so f holds the write lock throughout: what it reads
// cannot change before it writes.
func (s *Store) inTx(ctx context.Context, f func(tx *sql.Tx) error) error {
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := f(tx); err != nil {
		if rerr := rollback(tx); rerr != nil {
			return errors.Join(err, rerr)
		}
		return err
	}
	return tx.Commit()
}

// rollback rolls tx back; a transaction that is already over is not an error.
func rollback(tx *sql.Tx) error {
	if err := tx.Rollback(); err != nil && !errors.Is(err, sql.ErrTxDone) {
		return fmt.Errorf("rollback: %w", err)
	}
	return nil
}

// wrapErr adds context to err unless it is a *pulsebase.Error, whose message is meant for
// callers as it is.
func wrapErr(what string, err error) error {
	if _, ok := err.(*pulsebase.Error); ok {
		return err
	}
	return fmt.Errorf("%s: %w", what, err)
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
