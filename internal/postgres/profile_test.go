package postgres

import (
	"io/fs"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
)

// TestProfileOutboxMigration migrates a database holding a profile written before the
// outbox: its ops went out (or were lost) when it was written, so it starts as published
// and nothing republishes them.
func TestProfileOutboxMigration(t *testing.T) {
	ctx := t.Context()
	dbURL := freshDatabase(t, serverURL(t))
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	db := stdlib.OpenDBFromPool(pool)
	dir, err := fs.Sub(migrations, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, dir, goose.WithDisableGlobalRegistry(true))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 4); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO profiles (user_id, version, ciphertext, updated) VALUES ('uold', 3, '\x00', $1)`,
		time.Now()); err != nil {
		t.Fatal(err)
	}
	db.Close()
	pool.Close()
	s, err := Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Profile(ctx, "uold")
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != 3 || got.Published != 3 {
		t.Errorf("got version %d published %d, want 3 and 3", got.Version, got.Published)
	}
}
