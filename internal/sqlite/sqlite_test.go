package sqlite

import (
	"database/sql"
	"path/filepath"
	"sync"
	"testing"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/storetest"
)

// openTemp opens a store on a new file in t's temp dir; reopen opens the same file again.
func openTemp(t *testing.T) (pulsebase.Store, func(t *testing.T) pulsebase.Store) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pulsebase.db")
	open := func(t *testing.T) pulsebase.Store {
		t.Helper()
		s, err := Open(t.Context(), path)
		if err != nil {
			t.Fatalf("Open(%s): %v", path, err)
		}
		return s
	}
	return open(t), open
}

func TestStore(t *testing.T) {
	storetest.Run(t, openTemp)
}

// TestPragmas checks the settings Open promises, on the connections the store really uses
// and, for WAL, in the file itself (journal_mode=WAL persists across connections).
func TestPragmas(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "pulsebase.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()

	pragma := func(db *sql.DB, name string) string {
		t.Helper()
		var v string
		if err := db.QueryRowContext(ctx, "PRAGMA "+name).Scan(&v); err != nil {
			t.Fatalf("PRAGMA %s: %v", name, err)
		}
		return v
	}
	for _, c := range []struct {
		pool       string
		db         *sql.DB
		name, want string
	}{
		{"write", s.write, "journal_mode", "wal"},
		{"write", s.write, "synchronous", "2"}, // FULL
		{"write", s.write, "foreign_keys", "1"},
		{"write", s.write, "busy_timeout", "10000"},
		{"write", s.write, "query_only", "0"},
		{"read", s.read, "journal_mode", "wal"},
		{"read", s.read, "synchronous", "2"},
		{"read", s.read, "foreign_keys", "1"},
		{"read", s.read, "busy_timeout", "10000"},
		{"read", s.read, "query_only", "1"},
	} {
		if got := pragma(c.db, c.name); got != c.want {
			t.Errorf("%s pool: PRAGMA %s: got %q, want %q", c.pool, c.name, got, c.want)
		}
	}
	if got := s.write.Stats().MaxOpenConnections; got != 1 {
		t.Errorf("write pool: got MaxOpenConnections %d, want 1", got)
	}

	// A connection that sets nothing must still find the file in WAL mode.
	plain, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatalf("sql.Open: %v", err)
	}
	defer plain.Close()
	if got := pragma(plain, "journal_mode"); got != "wal" {
		t.Errorf("plain connection: PRAGMA journal_mode: got %q, want %q", got, "wal")
	}
}

// TestReadPoolRejectsWrites guards the split: a write routed to the read pool would bypass
// the single writer and could meet SQLITE_BUSY, so it must fail loudly instead.
func TestReadPoolRejectsWrites(t *testing.T) {
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "pulsebase.db"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	_, err = s.read.ExecContext(t.Context(), `DELETE FROM users`)
	if err == nil {
		t.Fatal("DELETE on the read pool: got nil error, want query_only to refuse it")
	}
}

func TestOpenRejectsMemory(t *testing.T) {
	for _, path := range []string{"", ":memory:"} {
		if s, err := Open(t.Context(), path); err == nil {
			s.Close()
			t.Errorf("Open(%q): got nil error, want one", path)
		}
	}
}

// TestOpenConcurrent opens one new file from several goroutines at once, as two processes
// starting together would (each Open has its own connections, so to SQLite they are
// separate processes). Without Open's retries some fail with SQLITE_BUSY (switching to WAL)
// or "table already exists" (racing migrations). The race is timing-dependent, so a
// regression shows up often, not always.
func TestOpenConcurrent(t *testing.T) {
	for range 3 {
		path := filepath.Join(t.TempDir(), "pulsebase.db")
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Go(func() {
				s, err := Open(t.Context(), path)
				if err != nil {
					t.Errorf("Open %d: %v", i, err)
					return
				}
				if err := s.Ping(t.Context()); err != nil {
					t.Errorf("Ping %d: %v", i, err)
				}
				s.Close()
			})
		}
		wg.Wait()
	}
}
