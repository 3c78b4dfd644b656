package vault_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase/internal/sqlite"
	"github.com/pulsebase/pulsebase/internal/vault"
)

type env struct {
	dir   string
	store *sqlite.Store
	v     *vault.Vault
}

func open(t *testing.T, dir string) *env {
	t.Helper()
	ctx := context.Background()
	store, err := sqlite.Open(ctx, filepath.Join(dir, "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	v, err := vault.Open(ctx, store, vault.Config{DataDir: dir, CacheSize: 2, RegistryRefresh: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return &env{dir: dir, store: store, v: v}
}

func TestSealOpenBindsUserKindAndRecord(t *testing.T) {
	e := open(t, t.TempDir())
	ctx := context.Background()
	alice, err := e.v.UserKeys(ctx, "ualice")
	if err != nil {
		t.Fatal(err)
	}
	bob, err := e.v.UserKeys(ctx, "ubob")
	if err != nil {
		t.Fatal(err)
	}
	pt := []byte("resting heart rate 55")
	ct, err := alice.Seal("sample", "r1", pt)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(ct, pt) {
		t.Fatal("ciphertext contains the plaintext")
	}
	got, err := alice.Open("sample", "r1", ct)
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("got %q, %v; want the plaintext back", got, err)
	}
	for name, open := range map[string]func() ([]byte, error){
		"another user":   func() ([]byte, error) { return bob.Open("sample", "r1", ct) },
		"another kind":   func() ([]byte, error) { return alice.Open("daily", "r1", ct) },
		"another record": func() ([]byte, error) { return alice.Open("sample", "r2", ct) },
		"tampered": func() ([]byte, error) {
			c := bytes.Clone(ct)
			c[len(c)-1] ^= 1
			return alice.Open("sample", "r1", c)
		},
	} {
		if _, err := open(); !errors.Is(err, vault.ErrOpen) {
			t.Errorf("%s: got %v, want ErrOpen", name, err)
		}
	}
}

func TestKeysSurviveReopenAndCacheEviction(t *testing.T) {
	dir := t.TempDir()
	e := open(t, dir)
	ctx := context.Background()
	k, err := e.v.UserKeys(ctx, "ualice")
	if err != nil {
		t.Fatal(err)
	}
	ct, _ := k.Seal("sample", "r1", []byte("x"))
	id1, _ := k.Identity([]byte("material"))
	// Push alice out of the two-entry cache, then load her keys from the store again.
	for _, u := range []string{"u1", "u2", "u3"} {
		if _, err := e.v.UserKeys(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	k2, err := e.v.UserKeys(ctx, "ualice")
	if err != nil {
		t.Fatal(err)
	}
	if k2 == k {
		t.Fatal("alice's keys were not evicted from a cache of two")
	}
	if _, err := k2.Open("sample", "r1", ct); err != nil {
		t.Errorf("reloaded keys do not open old ciphertext: %v", err)
	}
	if id2, _ := k2.Identity([]byte("material")); id2 != id1 {
		t.Errorf("got identity %q after reload, want %q", id2, id1)
	}
	e.store.Close()

	e2 := open(t, dir)
	k3, err := e2.v.UserKeys(ctx, "ualice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k3.Open("sample", "r1", ct); err != nil {
		t.Errorf("keys after reopening the vault do not open old ciphertext: %v", err)
	}
}

func TestIdentityIsPerUser(t *testing.T) {
	e := open(t, t.TempDir())
	ctx := context.Background()
	a, _ := e.v.UserKeys(ctx, "ua")
	b, _ := e.v.UserKeys(ctx, "ub")
	ia, _ := a.Identity([]byte("same"))
	ib, _ := b.Identity([]byte("same"))
	ia2, _ := a.Identity([]byte("other"))
	if ia == ib || ia == ia2 || len(ia) != 22 {
		t.Errorf("got %q %q %q, want distinct 22-character ids", ia, ib, ia2)
	}
}

func TestConcurrentFirstUseCreatesOneKey(t *testing.T) {
	e := open(t, t.TempDir())
	ctx := context.Background()
	// A second vault over the same store races the first, as two ingest processes would.
	v2, err := vault.Open(ctx, e.store, vault.Config{DataDir: e.dir})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	cts := make([][]byte, 16)
	for i := range cts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v := e.v
			if i%2 == 1 {
				v = v2
			}
			k, err := v.UserKeys(ctx, "unew")
			if err != nil {
				t.Error(err)
				return
			}
			cts[i], _ = k.Seal("sample", "r", []byte("x"))
		}()
	}
	wg.Wait()
	k, err := e.v.UserKeys(ctx, "unew")
	if err != nil {
		t.Fatal(err)
	}
	for i, ct := range cts {
		if _, err := k.Open("sample", "r", ct); err != nil {
			t.Errorf("ciphertext %d was sealed under a key that lost the race", i)
		}
	}
}

func TestWrappedKeyBoundToOwner(t *testing.T) {
	e := open(t, t.TempDir())
	ctx := context.Background()
	if _, err := e.v.UserKeys(ctx, "ua"); err != nil {
		t.Fatal(err)
	}
	wk, err := e.store.WrappedKey(ctx, "ua", "data")
	if err != nil {
		t.Fatal(err)
	}
	// Plant alice's wrapped key as mallory's: it must not unwrap for mallory.
	wk.Owner = "umallory"
	if _, err := e.store.CreateWrappedKey(ctx, wk); err != nil {
		t.Fatal(err)
	}
	if _, err := e.v.UserKeys(ctx, "umallory"); err == nil {
		t.Error("a wrapped key copied to another owner unwrapped")
	}
}

func TestLocalKEKFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keys", "kek.json")
	k1, err := vault.OpenLocalKEK(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("got mode %#o, want 0600", fi.Mode().Perm())
	}
	k2, err := vault.OpenLocalKEK(path)
	if err != nil {
		t.Fatal(err)
	}
	if k1.ID() != k2.ID() {
		t.Errorf("got KEK ids %q and %q for one file", k1.ID(), k2.ID())
	}
	ct, _ := k1.Encrypt([]byte("k"), nil)
	if _, err := k2.Decrypt(ct, nil); err != nil {
		t.Errorf("reopened KEK cannot decrypt: %v", err)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := vault.OpenLocalKEK(path); err == nil {
		t.Error("a group-readable KEK file was accepted")
	}
}
