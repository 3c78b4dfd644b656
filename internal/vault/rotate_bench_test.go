package vault_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pulsebase/pulsebase/internal/postgres"
	"github.com/pulsebase/pulsebase/internal/sqlite"
	"github.com/pulsebase/pulsebase/internal/vault"
)

// rotateBenchUsers is how many users BenchmarkRotateKEK100k rotates: 100,000 by default,
// each with a data and an identity key. PULSEBASE_BENCH_ROTATE_USERS overrides it, for a
// quicker run on a slow disk (the keys/s figure barely depends on the count).
func rotateBenchUsers(b *testing.B) int {
	if s := os.Getenv("PULSEBASE_BENCH_ROTATE_USERS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("PULSEBASE_BENCH_ROTATE_USERS=%q: want a positive number", s)
		}
		return n
	}
	return 100_000
}

// BenchmarkRotateKEK100k measures how fast `pulsebase keys rotate-kek` re-wraps keys: a
// store holding the keys of 100,000 users (200,000 user keys and the 2 system keys) is
// moved to a new KEK, on SQLite and, when PULSEBASE_TEST_DATABASE_URL names a server, on
// PostgreSQL. The system's keys include the processing tier's raw secrets. Only RotateKEK
// is timed; creating the keys (one store insert each, the only
// way the store API offers) is not, and its duration is logged. Run it with -benchtime 1x:
// each iteration builds a fresh store.
func BenchmarkRotateKEK100k(b *testing.B) {
	users := rotateBenchUsers(b)
	b.Run("store=sqlite", func(b *testing.B) {
		benchRotateKEK(b, users, func(b *testing.B) vault.Store {
			s, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "db"))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			return s
		})
	})
	b.Run("store=postgres", func(b *testing.B) {
		server := os.Getenv("PULSEBASE_TEST_DATABASE_URL")
		if server == "" {
			b.Skip("PULSEBASE_TEST_DATABASE_URL is not set; see scripts/pg-test.sh")
		}
		benchRotateKEK(b, users, func(b *testing.B) vault.Store {
			s, err := postgres.Open(context.Background(), freshPostgres(b, server))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			return s
		})
	})
}

func benchRotateKEK(b *testing.B, users int, openStore func(*testing.B) vault.Store) {
	ctx := context.Background()
	var rewrapped int
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		dir := b.TempDir()
		store := openStore(b)
		cfg := vault.Config{DataDir: dir, CacheSize: 1, RegistryRefresh: time.Millisecond}
		v, err := vault.Open(ctx, store, cfg)
		if err != nil {
			b.Fatal(err)
		}
		// The system's keys include the processing tier's raw secrets, as on a server
		// with the process role.
		if err := v.EnsureProcessingKey(ctx); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		makeUsers(b, v, users)
		counts, err := store.CountWrappedKeys(ctx)
		if err != nil {
			b.Fatal(err)
		}
		keys := 0
		for _, n := range counts {
			keys += n
		}
		b.Logf("setup: %d users' keys created in %s (%d keys in all)", users, time.Since(start).Round(time.Millisecond), keys)

		// A fresh vault, as the `keys rotate-kek` process opens one.
		rv, err := vault.Open(ctx, store, cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		res, err := rv.RotateKEK(ctx, "local://keys/kek-2.json", "bench", nil)
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		if res.Rewrapped != keys || keys < 2*users+4 {
			b.Fatalf("got %d keys re-wrapped, want all %d (2 per user and the system's)", res.Rewrapped, keys)
		}
		rewrapped += res.Rewrapped
	}
	b.ReportMetric(float64(rewrapped)/b.Elapsed().Seconds(), "keys/s")
}

// makeUsers creates the data and identity keys of n users. Key generation and wrapping
// run on every core; the store serializes the inserts.
func makeUsers(b *testing.B, v *vault.Vault, n int) {
	ctx := context.Background()
	var wg sync.WaitGroup
	workers := 2 * runtime.GOMAXPROCS(0)
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for u := w; u < n; u += workers {
				user := fmt.Sprintf("u%07d", u)
				if _, err := v.UserKeys(ctx, user); err != nil {
					errs <- err
					return
				}
				v.Forget(user)
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
}

// freshPostgres creates a database with a random name on the server at serverURL, drops it
// when b ends, and returns its URL (as the tests of internal/postgres do).
func freshPostgres(b *testing.B, serverURL string) string {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var r [8]byte
	rand.Read(r[:])
	name := "pulsebase_bench_" + hex.EncodeToString(r[:])
	admin, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		b.Fatalf("connect to test server: %v", err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name+" TEMPLATE template0"); err != nil {
		b.Fatalf("create bench database: %v", err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		admin, err := pgx.Connect(ctx, serverURL)
		if err != nil {
			b.Errorf("connect to drop bench database %s: %v", name, err)
			return
		}
		defer admin.Close(ctx)
		if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			b.Errorf("drop bench database %s: %v", name, err)
		}
	})
	u, err := url.Parse(serverURL)
	if err != nil || u.Scheme == "" {
		b.Fatalf("PULSEBASE_TEST_DATABASE_URL must be a postgres:// URL (got a parse error or no scheme: %v)", err)
	}
	u.Path = "/" + name
	return u.String()
}
