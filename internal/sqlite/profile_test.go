package sqlite

import (
	"database/sql"
	"io/fs"
	"path/filepath"
	"testing"
	"time"

	"github.com/pressly/goose/v3"
)

// TestProfileOutboxMigration migrates a database holding a profile written before the
// outbox: its ops went out (or were lost) when it was written, so it starts as published
// and nothing republishes them.
func TestProfileOutboxMigration(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "pulsebase.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := fs.Sub(migrations, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	p, err := goose.NewProvider(goose.DialectSQLite3, db, dir, goose.WithDisableGlobalRegistry(true))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 4); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO profiles (user_id, version, ciphertext, updated) VALUES ('uold', 3, x'00', ?)`,
		normTime(time.Now()).Format(timeFormat)); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(ctx, path)
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
