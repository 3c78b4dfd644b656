package vault_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/pulsebase/pulsebase/internal/vault"
)

// newSecret returns a create function for SystemSecret that makes a random secret
// and counts its calls in n.
func newSecret(n *atomic.Int32) func() ([]byte, error) {
	return func() ([]byte, error) {
		n.Add(1)
		return []byte(rand.Text()), nil
	}
}

func TestSystemSecretCreatedOnceAndSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	e := open(t, dir)
	ctx := context.Background()
	var calls atomic.Int32
	first, err := e.v.SystemSecret(ctx, "device-ca", newSecret(&calls))
	if err != nil {
		t.Fatal(err)
	}
	if len(first) == 0 {
		t.Fatal("empty secret")
	}
	again, err := e.v.SystemSecret(ctx, "device-ca", newSecret(&calls))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, first) {
		t.Errorf("second call got %q, want the first secret %q", again, first)
	}
	other, err := e.v.SystemSecret(ctx, "other", newSecret(&calls))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(other, first) {
		t.Error("two names share one secret")
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("create ran %d times for two names, want 2", n)
	}
	e.store.Close()

	e2 := open(t, dir)
	reopened, err := e2.v.SystemSecret(ctx, "device-ca", func() ([]byte, error) {
		t.Error("create ran after reopening")
		return []byte("new"), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(reopened, first) {
		t.Errorf("after reopening got %q, want %q", reopened, first)
	}
}

// TestSystemSecretConcurrentFirstUse has two processes (two stores and vaults over one
// database) create the same secret at once. Each create waits for the other's, so both
// have seen "no secret yet" before either inserts: the race is certain, not likely.
func TestSystemSecretConcurrentFirstUse(t *testing.T) {
	dir := t.TempDir()
	a, b := open(t, dir), open(t, dir)
	ctx := context.Background()
	var both sync.WaitGroup
	both.Add(2)
	create := func() ([]byte, error) {
		both.Done()
		both.Wait()
		return []byte(rand.Text()), nil
	}
	var got [2][]byte
	var errs [2]error
	var wg sync.WaitGroup
	for i, v := range []*vault.Vault{a.v, b.v} {
		wg.Go(func() { got[i], errs[i] = v.SystemSecret(ctx, "device-ca", create) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("caller %d: %v", i, err)
		}
	}
	if !bytes.Equal(got[0], got[1]) {
		t.Fatalf("racing callers got different secrets %q and %q", got[0], got[1])
	}
	// A third reader sees the same one: the winner's secret is the stored one.
	c, err := a.v.SystemSecret(ctx, "device-ca", func() ([]byte, error) { return nil, errors.New("must not run") })
	if err != nil || !bytes.Equal(c, got[0]) {
		t.Errorf("later read got %q, %v; want %q", c, err, got[0])
	}
}

func TestSystemSecretSurvivesKEKRotation(t *testing.T) {
	e := open(t, t.TempDir())
	ctx := context.Background()
	var calls atomic.Int32
	s, err := e.v.SystemSecret(ctx, "device-ca", newSecret(&calls))
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.v.RotateKEK(ctx, "local://keys/kek-2.json", "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := onlyKEK(t, kekCounts(t, e.store)); got != res.To {
		t.Errorf("keys are wrapped by %s after rotation, want %s", got, res.To)
	}
	// A process that only has the new KEK still reads the secret.
	if err := os.Remove(filepath.Join(e.dir, "keys", "kek.json")); err != nil {
		t.Fatal(err)
	}
	fresh, err := vault.Open(ctx, e.store, vault.Config{DataDir: e.dir, KEKURI: "local://keys/kek-2.json"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := fresh.SystemSecret(ctx, "device-ca", newSecret(&calls))
	if err != nil || !bytes.Equal(got, s) {
		t.Errorf("after rotation got %q, %v; want %q", got, err, s)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("create ran %d times, want 1", n)
	}
}

func TestSystemSecretRefusals(t *testing.T) {
	e := open(t, t.TempDir())
	ctx := context.Background()
	var calls atomic.Int32
	for _, name := range []string{"", "processing-public", "processing-private/pk-x", "a\x00b"} {
		if _, err := e.v.SystemSecret(ctx, name, newSecret(&calls)); err == nil {
			t.Errorf("name %q was accepted", name)
		}
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("create ran %d times for refused names", n)
	}
	boom := errors.New("no entropy")
	if _, err := e.v.SystemSecret(ctx, "s", func() ([]byte, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Errorf("got %v, want the create error", err)
	}
	if _, err := e.v.SystemSecret(ctx, "s", func() ([]byte, error) { return nil, nil }); err == nil {
		t.Error("an empty secret was stored")
	}
	// Neither failure left a secret behind.
	s, err := e.v.SystemSecret(ctx, "s", func() ([]byte, error) { return []byte("real"), nil })
	if err != nil || string(s) != "real" {
		t.Errorf("got %q, %v; want the secret created now", s, err)
	}
}
