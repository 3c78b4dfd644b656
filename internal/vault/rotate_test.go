package vault_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/vault"
)

// sealFor creates user's keys and returns a ciphertext sealed under them.
func sealFor(t *testing.T, v *vault.Vault, user string) []byte {
	t.Helper()
	k, err := v.UserKeys(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := k.Seal("sample", "r-"+user, []byte("payload of "+user))
	if err != nil {
		t.Fatal(err)
	}
	return ct
}

// mustOpen checks that a fresh vault over the same store opens ct for user.
func mustOpen(t *testing.T, v *vault.Vault, user string, ct []byte) {
	t.Helper()
	k, err := v.UserKeys(context.Background(), user)
	if err != nil {
		t.Fatalf("keys of %s: %v", user, err)
	}
	p, err := k.Open("sample", "r-"+user, ct)
	if err != nil || string(p) != "payload of "+user {
		t.Fatalf("open %s's ciphertext: got %q, %v", user, p, err)
	}
}

func kekCounts(t *testing.T, s pulsebase.KeyStore) map[string]int {
	t.Helper()
	c, err := s.CountWrappedKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRotateKEK(t *testing.T) {
	e := open(t, t.TempDir())
	ctx := context.Background()
	cts := map[string][]byte{}
	for i := 0; i < 30; i++ {
		u := fmt.Sprintf("u%02d", i)
		cts[u] = sealFor(t, e.v, u)
	}
	oldID := onlyKEK(t, kekCounts(t, e.store))

	res, err := e.v.RotateKEK(ctx, "local://keys/kek-2.json", "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Rewrapped != 62 || len(res.From) != 1 || res.From[0] != oldID {
		t.Errorf("got %+v, want 62 keys (30 users × 2 + 2 system) moved off %s", res, oldID)
	}
	if got := onlyKEK(t, kekCounts(t, e.store)); got != res.To {
		t.Errorf("keys are wrapped by %s, want the new KEK %s", got, res.To)
	}
	// A new process that only knows the new KEK reads everything; the old key file can go.
	if err := os.Remove(filepath.Join(e.dir, "keys", "kek.json")); err != nil {
		t.Fatal(err)
	}
	fresh, err := vault.Open(ctx, e.store, vault.Config{DataDir: e.dir, KEKURI: "local://keys/kek-2.json"})
	if err != nil {
		t.Fatal(err)
	}
	for u, ct := range cts {
		mustOpen(t, fresh, u, ct)
	}
	// A process still configured with the old default KEK uses the registry's primary: it
	// neither recreates the deleted file nor registers anything.
	dflt, err := vault.Open(ctx, e.store, vault.Config{DataDir: e.dir})
	if err != nil {
		t.Fatal(err)
	}
	mustOpen(t, dflt, "u00", cts["u00"])
	if _, err := os.Stat(filepath.Join(e.dir, "keys", "kek.json")); err == nil {
		t.Error("opening with the retired default KEK recreated its file")
	}
	if infos, _ := e.store.KEKs(ctx); len(infos) != 1 || infos[0].ID != res.To {
		t.Errorf("got registry %+v, want only the new KEK", infos)
	}
	events, err := e.store.KeyEvents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, ev := range events {
		actions = append(actions, ev.Action)
		if strings.Contains(ev.Detail, "payload") {
			t.Errorf("key event %q holds data", ev.Detail)
		}
	}
	if strings.Join(actions, ",") != "kek.rotate.start,kek.rotate.done" {
		t.Errorf("got key events %v, want rotate start and done", actions)
	}
}

func onlyKEK(t *testing.T, counts map[string]int) string {
	t.Helper()
	if len(counts) != 1 {
		t.Fatalf("got keys under %d KEKs (%v), want 1", len(counts), counts)
	}
	for id := range counts {
		return id
	}
	return ""
}

// TestRotateKEKResumesAfterInterruption stops a rotation partway (its context is cancelled
// from the progress callback, as a crash would stop it between two pages) and checks that
// every key opens meanwhile and that a second run finishes the job. The crash of a real
// `pulsebase keys rotate-kek` process is covered in cmd/pulsebase.
func TestRotateKEKResumesAfterInterruption(t *testing.T) {
	e := open(t, t.TempDir())
	ctx := context.Background()
	cts := map[string][]byte{}
	for i := 0; i < 600; i++ { // more than one page of 500
		u := fmt.Sprintf("u%03d", i)
		cts[u] = sealFor(t, e.v, u)
	}
	cctx, cancel := context.WithCancel(ctx)
	_, err := e.v.RotateKEK(cctx, "local://keys/kek-2.json", "test", func(done int) {
		if done >= 500 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want the rotation to stop on cancel", err)
	}
	if c := kekCounts(t, e.store); len(c) != 2 {
		t.Fatalf("got counts %v, want keys under both KEKs halfway", c)
	}
	mid, err := vault.Open(ctx, e.store, vault.Config{DataDir: e.dir})
	if err != nil {
		t.Fatal(err)
	}
	for u, ct := range cts {
		mustOpen(t, mid, u, ct)
	}
	res, err := mid.RotateKEK(ctx, "local://keys/kek-2.json", "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Rewrapped+500 < 1202 || onlyKEK(t, kekCounts(t, e.store)) != res.To {
		t.Errorf("resumed rotation: got %+v and counts %v, want the rest moved", res, kekCounts(t, e.store))
	}
}

func TestRotateUserKeepsOldDataReadable(t *testing.T) {
	e := open(t, t.TempDir())
	ctx := context.Background()
	old := sealFor(t, e.v, "ualice")
	other, err := vault.Open(ctx, e.store, vault.Config{DataDir: e.dir})
	if err != nil {
		t.Fatal(err)
	}
	stale, err := other.UserKeys(ctx, "ualice") // cached before the rotation
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.v.RotateUser(ctx, "ualice", "test"); err != nil {
		t.Fatal(err)
	}
	k, err := e.v.UserKeys(ctx, "ualice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Open("sample", "r-ualice", old); err != nil {
		t.Errorf("data sealed before the rotation does not open: %v", err)
	}
	fresh, err := k.Seal("sample", "r2", []byte("new"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(fresh[:5], old[:5]) {
		t.Error("new data is sealed with the old key version (same Tink key id prefix)")
	}
	// A process holding the pre-rotation keys still opens data sealed with the new version.
	if p, err := stale.Open("sample", "r2", fresh); err != nil || string(p) != "new" {
		t.Errorf("stale process: got %q, %v; want it to reload and open", p, err)
	}
}

func TestDestroyUserKey(t *testing.T) {
	e := open(t, t.TempDir())
	ctx := context.Background()
	sealFor(t, e.v, "ualice")
	bob := sealFor(t, e.v, "ubob")
	if err := e.v.DestroyUserKey(ctx, "ualice", "test"); err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]*vault.Vault{"same process": e.v, "fresh process": mustVault(t, e)} {
		if _, err := v.UserKeys(ctx, "ualice"); pulsebase.ErrorCode(err) != pulsebase.EERASED {
			t.Errorf("%s: alice's keys: got %v, want erased", name, err)
		}
		mustOpen(t, v, "ubob", bob)
	}
	if err := e.v.DestroyUserKey(ctx, "ualice", "test"); err != nil {
		t.Errorf("destroying twice: %v", err)
	}
	if err := e.v.DestroyUserKey(ctx, vault.SystemOwner, "test"); err == nil {
		t.Error("the system keys could be destroyed")
	}
}

func mustVault(t *testing.T, e *env) *vault.Vault {
	t.Helper()
	v, err := vault.Open(context.Background(), e.store, vault.Config{DataDir: e.dir})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestPseudonyms(t *testing.T) {
	e := open(t, t.TempDir())
	a1, _ := e.v.Pseudonym("research", "ualice")
	a2, _ := e.v.Pseudonym("research", "ualice")
	b1, _ := e.v.Pseudonym("research", "ubob")
	a3, _ := e.v.Pseudonym("analytics", "ualice")
	if a1 != a2 || a1 == b1 || a1 == a3 || strings.Contains(a1, "alice") {
		t.Errorf("got %q %q %q %q, want stable per purpose, distinct across users and purposes", a1, a2, b1, a3)
	}
	again, _ := mustVault(t, e).Pseudonym("research", "ualice")
	if again != a1 {
		t.Errorf("got %q from another process, want %q", again, a1)
	}
	if _, err := e.v.Pseudonym("", "ualice"); err == nil {
		t.Error("a pseudonym without a purpose was made")
	}
}

// softHSM makes a SoftHSM2 token in a temp dir and returns a pkcs11:// KEK URI for it.
func softHSM(t *testing.T) string {
	t.Helper()
	const module = "/usr/lib/softhsm/libsofthsm2.so"
	if _, err := os.Stat(module); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("SoftHSM2 is not installed (%v); make test installs it", err)
		}
		t.Skip("SoftHSM2 is not installed; run make test")
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "softhsm2.conf")
	if err := os.MkdirAll(filepath.Join(dir, "tokens"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte("directories.tokendir = "+filepath.Join(dir, "tokens")+"\nobjectstore.backend = file\nlog.level = ERROR\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", conf)
	t.Setenv("PULSEBASE_TEST_HSM_PIN", "4321")
	out, err := exec.Command("softhsm2-util", "--init-token", "--free", "--label", "pulsebase", "--pin", "4321", "--so-pin", "8765").CombinedOutput()
	if err != nil {
		t.Fatalf("softhsm2-util: %v: %s", err, out)
	}
	return "pkcs11://pulsebase/kek?module=" + module + "&pin-env=PULSEBASE_TEST_HSM_PIN"
}

func TestPKCS11KEKWithSoftHSM(t *testing.T) {
	uri := softHSM(t)
	e := open(t, t.TempDir())
	ctx := context.Background()
	alice := sealFor(t, e.v, "ualice")

	// Rotate from the local file into the HSM: afterwards only the HSM can unwrap.
	res, err := e.v.RotateKEK(ctx, uri, "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(res.To, "pkcs11:pulsebase/kek") {
		t.Errorf("got KEK id %q, want a pkcs11 id", res.To)
	}
	if err := os.Remove(filepath.Join(e.dir, "keys", "kek.json")); err != nil {
		t.Fatal(err)
	}
	hsmVault, err := vault.Open(ctx, e.store, vault.Config{DataDir: e.dir, KEKURI: uri})
	if err != nil {
		t.Fatal(err)
	}
	mustOpen(t, hsmVault, "ualice", alice)
	bob := sealFor(t, hsmVault, "ubob") // a new key wrapped inside the HSM
	mustOpen(t, mustVaultURI(t, e, uri), "ubob", bob)

	// No PIN, no key. (A wrong PIN cannot be tested in this process: PKCS #11 logins are
	// per application, and this one is logged in already.)
	t.Setenv("PULSEBASE_TEST_HSM_PIN", "")
	if _, err := vault.OpenKEK(ctx, uri, e.dir); err == nil {
		t.Error("the HSM key opened without a PIN")
	}
	if _, err := vault.OpenKEK(ctx, "pkcs11://pulsebase/kek?module=/x.so&pin-value=4321", e.dir); err == nil || !strings.Contains(err.Error(), "never in the URI") {
		t.Errorf("got %v, want a PIN in the URI refused", err)
	}
}

func mustVaultURI(t *testing.T, e *env, uri string) *vault.Vault {
	t.Helper()
	v, err := vault.Open(context.Background(), e.store, vault.Config{DataDir: e.dir, KEKURI: uri})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestOpenKEKRefusesUnknownSchemes(t *testing.T) {
	for _, uri := range []string{"file:///etc/passwd", "kek.json", "aws-kms://arn"} {
		if _, err := vault.OpenKEK(context.Background(), uri, t.TempDir()); err == nil {
			t.Errorf("%s: got a KEK, want an error", uri)
		}
	}
}

// TestRotateKEKMovesProcessingSecrets: the processing tier's HPKE secrets are raw secrets,
// not Tink keysets, and move to the new KEK like every other key.
func TestRotateKEKMovesProcessingSecrets(t *testing.T) {
	e := open(t, t.TempDir())
	ctx := context.Background()
	if err := e.v.EnsureProcessingKey(ctx); err != nil {
		t.Fatal(err)
	}
	keys, err := e.v.ProcessingKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := pulsebase.SealBatch(keys[0], "ualice", []byte("batch"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.v.RotateKEK(ctx, "local://keys/kek-2.json", "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	if onlyKEK(t, kekCounts(t, e.store)) != res.To {
		t.Fatal("keys are left under the old KEK")
	}
	if err := os.Remove(filepath.Join(e.dir, "keys", "kek.json")); err != nil {
		t.Fatal(err)
	}
	pt, err := mustVault(t, e).OpenBatch(ctx, sealed.KeyID, "ualice", sealed.Sealed)
	if err != nil || string(pt) != "batch" {
		t.Errorf("after the rotation: got %q, %v; want the sealed batch to open", pt, err)
	}
}
