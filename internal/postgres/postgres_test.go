package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/storetest"
)

// serverURL returns the URL of the PostgreSQL server to test against, from
// PULSEBASE_TEST_DATABASE_URL. Without it the tests skip locally, but fail in CI: a CI run
// that silently skipped the only check of the scale-out store would be green for nothing.
func serverURL(t *testing.T) string {
	t.Helper()
	u := os.Getenv("PULSEBASE_TEST_DATABASE_URL")
	if u == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("PULSEBASE_TEST_DATABASE_URL is not set; CI must run the PostgreSQL tests (see scripts/pg-test.sh)")
		}
		t.Skip("PULSEBASE_TEST_DATABASE_URL is not set; run `make test` (it starts a throwaway server with scripts/pg-test.sh)")
	}
	return u
}

// freshDatabase creates a database with a random name on the server at serverURL, drops it
// when t ends, and returns its URL. Each test gets its own, so runs (and parallel tests)
// never see each other's rows.
func freshDatabase(t *testing.T, serverURL string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := "pulsebase_test_" + hex.EncodeToString(randomBytes(t, 8))

	admin, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		t.Fatalf("connect to test server: %v", err)
	}
	defer admin.Close(ctx)
	// template0, not the default template1: CREATE DATABASE fails while anyone is connected
	// to its template, and template1 is where stray sessions tend to be.
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name+" TEMPLATE template0"); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		admin, err := pgx.Connect(ctx, serverURL)
		if err != nil {
			t.Errorf("connect to drop test database %s: %v", name, err)
			return
		}
		defer admin.Close(ctx)
		// FORCE ends sessions a failed test may have leaked, so the drop cannot hang.
		if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop test database %s: %v", name, err)
		}
	})

	u, err := url.Parse(serverURL)
	if err != nil || u.Scheme == "" {
		t.Fatalf("PULSEBASE_TEST_DATABASE_URL must be a postgres:// URL (got a parse error or no scheme: %v)", err)
	}
	u.Path = "/" + name
	return u.String()
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestStore(t *testing.T) {
	server := serverURL(t)
	storetest.Run(t, func(t *testing.T) (pulsebase.Store, func(t *testing.T) pulsebase.Store) {
		t.Helper()
		dbURL := freshDatabase(t, server)
		open := func(t *testing.T) pulsebase.Store {
			t.Helper()
			s, err := Open(t.Context(), dbURL)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			return s
		}
		return open(t), open
	})
}

// TestOpenConcurrent starts several stores on one empty database at once, as the processes
// of a scale-out deployment do: the advisory lock must let exactly one migrate and the rest
// find the schema in place, with no "relation already exists" failures.
func TestOpenConcurrent(t *testing.T) {
	dbURL := freshDatabase(t, serverURL(t))
	const n = 5
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			s, err := Open(t.Context(), dbURL)
			if err == nil {
				err = s.Ping(t.Context())
				s.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Open %d: %v", i, err)
		}
	}
}

func TestOpenBadURL(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	// Port 1 on localhost: nothing listens, so Open must fail rather than return a store
	// that fails later.
	s, err := Open(ctx, "postgres://nobody:s3cr3t-pw@127.0.0.1:1/none?sslmode=disable&connect_timeout=2")
	if err == nil {
		s.Close()
		t.Fatal("Open of an unreachable server: got nil error")
	}
	// Errors get logged; the password in the URL must not end up in them.
	if strings.Contains(err.Error(), "s3cr3t-pw") {
		t.Errorf("Open error reveals the password: %v", err)
	}
}
