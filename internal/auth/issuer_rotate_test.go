package auth

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
)

// jwksKids returns the key ids of an issuer's JWKS, in order, checking that each key is
// the Ed25519 key its kid names.
func jwksKids(t testing.TB, i *Issuer) []string {
	t.Helper()
	var set struct {
		Keys []map[string]string `json:"keys"`
	}
	if err := json.Unmarshal(i.JWKS(), &set); err != nil {
		t.Fatal(err)
	}
	var kids []string
	for _, k := range set.Keys {
		x, err := base64.RawURLEncoding.DecodeString(k["x"])
		if err != nil || len(x) != ed25519.PublicKeySize || thumbprint(x) != k["kid"] ||
			k["kty"] != "OKP" || k["crv"] != "Ed25519" || k["alg"] != "EdDSA" || k["use"] != "sig" {
			t.Errorf("JWK %v is not the Ed25519 key its kid names", k)
		}
		kids = append(kids, k["kid"])
	}
	return kids
}

func mintUser(t testing.TB, i *Issuer, now time.Time) string {
	t.Helper()
	tok, err := i.Mint(TokenRequest{Subject: "alice", Role: pulsebase.RoleUser, TTL: time.Hour}, now)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestRotateKeepsOldKeyVerifying(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token.key")
	i, err := OpenIssuer(path, DefaultIssuer, DefaultAudience)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	k0 := i.KeyID()
	tok0 := mintUser(t, i, now)

	rot, err := i.Rotate(now)
	if err != nil {
		t.Fatal(err)
	}
	k1 := i.KeyID()
	if k1 == k0 || rot.KeyID != k1 || rot.Retired != k0 {
		t.Errorf("rotation %+v: current %s, before %s", rot, k1, k0)
	}
	if want := now.Add(MaxTTL + Leeway + retireMargin).UTC().Truncate(time.Second); !rot.RetireAfter.Equal(want) {
		t.Errorf("retired until %v, want %v", rot.RetireAfter, want)
	}
	tok1 := mintUser(t, i, now)
	if kidOf(t, tok1) != k1 || kidOf(t, tok0) != k0 {
		t.Errorf("token kids: new %s (want %s), old %s (want %s)", kidOf(t, tok1), k1, kidOf(t, tok0), k0)
	}
	for name, tok := range map[string]string{"old key's": tok0, "new key's": tok1} {
		if p, err := i.Verify(tok); err != nil || p.Subject != "alice" {
			t.Errorf("%s token: %+v %v", name, p, err)
		}
	}
	if got := jwksKids(t, i); !slices.Equal(got, []string{k1, k0}) {
		t.Errorf("JWKS kids %v, want current %s then retired %s", got, k1, k0)
	}

	// On disk: the new key at path, the old one under path.old with its retire time,
	// both private.
	if key, err := readKey(path); err != nil || thumbprint(key.Public().(ed25519.PublicKey)) != k1 {
		t.Errorf("the key file holds %v (%v), want the new key", key, err)
	}
	old := filepath.Join(path+".old", k0+".pem")
	b, err := os.ReadFile(old)
	if err != nil {
		t.Fatal(err)
	}
	if blk, _ := pem.Decode(b); blk == nil || blk.Headers[retiredHeader] != rot.RetireAfter.Format(time.RFC3339) {
		t.Errorf("the retired key file's header: %v", blk)
	}
	if fi, err := os.Stat(old); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("retired key file mode: %v %v", fi.Mode(), err)
	}

	// A second rotation: three keys, the newest retired before the older.
	rot2, err := i.Rotate(now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	k2 := i.KeyID()
	if rot2.Retired != k1 {
		t.Errorf("second rotation retired %s, want %s", rot2.Retired, k1)
	}
	if got := jwksKids(t, i); !slices.Equal(got, []string{k2, k1, k0}) {
		t.Errorf("JWKS kids after two rotations %v, want %v", got, []string{k2, k1, k0})
	}
	for _, tok := range []string{tok0, tok1, mintUser(t, i, now)} {
		if _, err := i.Verify(tok); err != nil {
			t.Errorf("after two rotations, a token of %s: %v", kidOf(t, tok), err)
		}
	}
	// Reopened (a restart), the ring is the same.
	j, err := OpenIssuer(path, DefaultIssuer, DefaultAudience)
	if err != nil {
		t.Fatal(err)
	}
	if got := jwksKids(t, j); j.KeyID() != k2 || !slices.Equal(got, []string{k2, k1, k0}) {
		t.Errorf("reopened: current %s, JWKS %v", j.KeyID(), got)
	}
}

func TestRotationReachesAnotherProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token.key")
	a, err := OpenIssuer(path, DefaultIssuer, DefaultAudience)
	if err != nil {
		t.Fatal(err)
	}
	b, err := OpenIssuer(path, DefaultIssuer, DefaultAudience)
	if err != nil {
		t.Fatal(err)
	}
	k0 := a.KeyID()
	if b.KeyID() != k0 {
		t.Fatal("two issuers on one key file have different keys")
	}
	if _, err := a.Rotate(time.Now()); err != nil {
		t.Fatal(err)
	}
	k1 := a.KeyID()
	tok := mintUser(t, a, time.Now())
	if got := jwksKids(t, b); !slices.Equal(got, []string{k0}) {
		t.Errorf("the other process's JWKS before it met the new key: %v", got)
	}
	// The other process meets a token of the new key: it reloads and verifies it.
	if p, err := b.Verify(tok); err != nil || p.Subject != "alice" {
		t.Fatalf("the other process verifying a token of the new key: %+v %v", p, err)
	}
	if got := jwksKids(t, b); !slices.Equal(got, []string{k1, k0}) {
		t.Errorf("the other process's JWKS after the reload: %v, want %v", got, []string{k1, k0})
	}
	if b.KeyID() != k1 {
		t.Errorf("the other process still signs with %s, want %s", b.KeyID(), k1)
	}
	if _, err := a.Verify(mintUser(t, b, time.Now())); err != nil {
		t.Errorf("the rotating process verifying the other's new token: %v", err)
	}

	// Rotating in b now starts from what is on disk (a's rotation), so that no key is
	// lost; a meets b's key within the reload bound.
	if _, err := b.Rotate(time.Now()); err != nil {
		t.Fatal(err)
	}
	k2 := b.KeyID()
	tok2 := mintUser(t, b, time.Now())
	a.mu.Lock()
	a.lastReload = time.Now() // a reloaded just now (its Watch, say)
	a.mu.Unlock()
	if _, err := a.Verify(tok2); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("within a second of its last reload, a token of an unknown key: got %v, want ErrInvalidToken", err)
	}
	a.mu.Lock()
	a.lastReload = time.Now().Add(-reloadEvery)
	a.mu.Unlock()
	if _, err := a.Verify(tok2); err != nil {
		t.Errorf("a second after its last reload: %v", err)
	}
	// Both rotations ran within a second or so, so the retired keys may share a retire
	// time and come in either order: only the current key's place is fixed.
	if got := jwksKids(t, a); len(got) != 3 || got[0] != k2 || !slices.Contains(got, k1) || !slices.Contains(got, k0) {
		t.Errorf("a's JWKS: %v, want %s first, then %s and %s", got, k2, k1, k0)
	}
	// Reload picks a rotation up without any token.
	if _, err := a.Rotate(time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := b.Reload(); err != nil {
		t.Fatal(err)
	}
	if b.KeyID() != a.KeyID() {
		t.Errorf("after Reload b signs with %s, a with %s", b.KeyID(), a.KeyID())
	}
}

func TestRetiredKeyExpires(t *testing.T) {
	t.Run("rotated long ago", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "token.key")
		i, err := OpenIssuer(path, DefaultIssuer, DefaultAudience)
		if err != nil {
			t.Fatal(err)
		}
		k0 := i.KeyID()
		tok0 := mintUser(t, i, time.Now())
		// A rotation so long ago that the old key's tokens have all expired since.
		rot, err := i.Rotate(time.Now().Add(-MaxTTL - time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if !rot.RetireAfter.Before(time.Now()) {
			t.Fatalf("retired until %v, want the past", rot.RetireAfter)
		}
		if _, err := i.Verify(tok0); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("a token of a key past its retire time: got %v, want ErrInvalidToken", err)
		}
		if got := jwksKids(t, i); !slices.Equal(got, []string{i.KeyID()}) {
			t.Errorf("JWKS lists %v, want only the current key", got)
		}
		// Another process (or a restart) does not load it.
		j, err := OpenIssuer(path, DefaultIssuer, DefaultAudience)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := j.ring.Load().verify[k0]; ok {
			t.Error("a reopened issuer loaded a key past its retire time")
		}
		if _, err := j.Verify(tok0); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("reopened: got %v, want ErrInvalidToken", err)
		}
		// The next rotation drops it from the ring and deletes its file.
		if _, err := i.Rotate(time.Now()); err != nil {
			t.Fatal(err)
		}
		if _, ok := i.ring.Load().verify[k0]; ok {
			t.Error("the ring still holds the expired key after the next rotation")
		}
		if _, err := os.Stat(filepath.Join(path+".old", k0+".pem")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the expired key's file survives the next rotation: %v", err)
		}
	})
	t.Run("written by hand", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "token.key")
		if _, err := OpenIssuer(path, DefaultIssuer, DefaultAudience); err != nil {
			t.Fatal(err)
		}
		_, gone, _ := ed25519.GenerateKey(rand.Reader)
		_, kept, _ := ed25519.GenerateKey(rand.Reader)
		goneKid, keptKid := thumbprint(gone.Public().(ed25519.PublicKey)), thumbprint(kept.Public().(ed25519.PublicKey))
		now := time.Now()
		if err := writeRetired(path+".old", goneKid, gone.Public().(ed25519.PublicKey), now.Add(-time.Second).Truncate(time.Second)); err != nil {
			t.Fatal(err)
		}
		if err := writeRetired(path+".old", keptKid, kept.Public().(ed25519.PublicKey), now.Add(time.Hour).Truncate(time.Second)); err != nil {
			t.Fatal(err)
		}
		i, err := OpenIssuer(path, DefaultIssuer, DefaultAudience)
		if err != nil {
			t.Fatal(err)
		}
		if got := jwksKids(t, i); !slices.Equal(got, []string{i.KeyID(), keptKid}) {
			t.Errorf("JWKS %v, want current then %s (and not %s)", got, keptKid, goneKid)
		}
		claims := func() map[string]any {
			return map[string]any{"iss": DefaultIssuer, "sub": "alice", "aud": []string{DefaultAudience}, "role": "user",
				"exp": now.Add(time.Hour).Unix(), "iat": now.Unix(), "nbf": now.Unix()}
		}
		signed := func(k ed25519.PrivateKey, kid string) string {
			return sign(t, map[string]any{"alg": "EdDSA", "typ": "JWT", "kid": kid}, claims(), func(s string) []byte { return ed25519.Sign(k, []byte(s)) })
		}
		if _, err := i.Verify(signed(kept, keptKid)); err != nil {
			t.Errorf("a token of a retired key still kept: %v", err)
		}
		if _, err := i.Verify(signed(gone, goneKid)); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("a token of a key past its retire time: got %v, want ErrInvalidToken", err)
		}
		// A retired key that expires while the process runs stops verifying at once.
		r := i.ring.Load()
		verify := map[string]ringKey{}
		for kid, k := range r.verify {
			verify[kid] = k
		}
		verify[keptKid] = ringKey{pub: verify[keptKid].pub, retireAfter: time.Now().Add(-time.Nanosecond)}
		i.ring.Store(&keyRing{key: r.key, kid: r.kid, verify: verify})
		if _, err := i.Verify(signed(kept, keptKid)); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("a token of a key whose retire time just passed: got %v, want ErrInvalidToken", err)
		}
		if got := jwksKids(t, i); !slices.Equal(got, []string{i.KeyID()}) {
			t.Errorf("JWKS after the retire time: %v", got)
		}
	})
}

// TestUnknownKidFloodReloadsOncePerSecond: tokens with made-up key ids, arriving as fast
// as four goroutines can send them, make the issuer read its key files at most once a
// second; counted by the distinct reload times every caller sees after its Verify
// (reloads at least a second apart cannot hide between two of them).
func TestUnknownKidFloodReloadsOncePerSecond(t *testing.T) {
	i := testIssuer(t)
	now := time.Now()
	_, forger, _ := ed25519.GenerateKey(rand.Reader)
	claims := map[string]any{"iss": DefaultIssuer, "sub": "mallory", "aud": []string{DefaultAudience}, "role": "user",
		"exp": now.Add(time.Hour).Unix(), "iat": now.Unix(), "nbf": now.Unix()}
	forged := make([]string, 64)
	for n := range forged {
		forged[n] = sign(t, map[string]any{"alg": "EdDSA", "typ": "JWT", "kid": fmt.Sprintf("made-up-%d", n)}, claims,
			func(s string) []byte { return ed25519.Sign(forger, []byte(s)) })
	}
	good := mintUser(t, i, now)
	lastReload := func() time.Time {
		i.mu.Lock()
		defer i.mu.Unlock()
		return i.lastReload
	}

	const flood = 2500 * time.Millisecond
	var (
		mu      sync.Mutex
		reloads = map[time.Time]bool{}
		calls   atomic.Int64
		wg      sync.WaitGroup
		start   = time.Now()
	)
	for w := range 4 {
		wg.Go(func() {
			seen := map[time.Time]bool{}
			for n := w; time.Since(start) < flood; n++ {
				if _, err := i.Verify(forged[n%len(forged)]); !errors.Is(err, ErrInvalidToken) {
					t.Errorf("a made-up kid: got %v, want ErrInvalidToken", err)
					return
				}
				calls.Add(1)
				if at := lastReload(); !at.IsZero() {
					seen[at] = true
				}
				if n%50 == 0 { // the real tokens keep verifying meanwhile
					if _, err := i.Verify(good); err != nil {
						t.Errorf("a good token during the flood: %v", err)
						return
					}
				}
			}
			mu.Lock()
			for at := range seen {
				reloads[at] = true
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	reloads[lastReload()] = true
	maxReloads := int(elapsed/reloadEvery) + 1
	t.Logf("%d made-up tokens in %v: %d reloads", calls.Load(), elapsed.Round(time.Millisecond), len(reloads))
	if calls.Load() < 100 {
		t.Fatalf("only %d tokens in the flood", calls.Load())
	}
	if len(reloads) > maxReloads || len(reloads) < 2 {
		t.Errorf("%d reloads in %v, want 2 to %d", len(reloads), elapsed, maxReloads)
	}
	var times []time.Time
	for at := range reloads {
		times = append(times, at)
	}
	for a := range times {
		for b := range times {
			if a != b && times[a].Before(times[b]) && times[b].Sub(times[a]) < reloadEvery {
				t.Errorf("two reloads %v apart", times[b].Sub(times[a]))
			}
		}
	}

	// A token without a kid, or with a kid that is not a string, reloads nothing.
	i.mu.Lock()
	i.lastReload = time.Time{}
	i.mu.Unlock()
	for _, kid := range []any{nil, 42, ""} {
		hdr := map[string]any{"alg": "EdDSA", "typ": "JWT"}
		if kid != nil {
			hdr["kid"] = kid
		}
		tok := sign(t, hdr, claims, func(s string) []byte { return ed25519.Sign(forger, []byte(s)) })
		if _, err := i.Verify(tok); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("kid %v: got %v, want ErrInvalidToken", kid, err)
		}
	}
	if at := lastReload(); !at.IsZero() {
		t.Errorf("a token without a usable kid made the issuer reload at %v", at)
	}
	// An issuer without key files never reloads.
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	mem := NewIssuer(key, DefaultIssuer, DefaultAudience)
	if _, err := mem.Verify(forged[0]); !errors.Is(err, ErrInvalidToken) || !mem.lastReload.IsZero() {
		t.Errorf("an issuer without files: %v, reloaded at %v", err, mem.lastReload)
	}
}

// selfSignedDER returns a self-signed client certificate, as a device presents one.
func selfSignedDER(tb testing.TB) *x509.Certificate {
	tb.Helper()
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "watch-1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// BenchmarkVerifyBuiltin measures verifying a token of the built-in issuer (EdDSA): by
// the issuer itself, through Verifiers (dispatch by iss), and through the Authenticator
// with 3,000 revocations loaded, for a user's bearer token and for a device's
// certificate-bound token over its TLS connection. The target is at most 50 µs.
func BenchmarkVerifyBuiltin(b *testing.B) {
	i, err := OpenIssuer(filepath.Join(b.TempDir(), "token.key"), DefaultIssuer, DefaultAudience)
	if err != nil {
		b.Fatal(err)
	}
	// A retired key in the ring too, as after a rotation.
	if _, err := i.Rotate(time.Now()); err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	user := mintUser(b, i, now)
	cert := selfSignedDER(b)
	device, err := i.Mint(TokenRequest{Subject: "alice", Role: pulsebase.RoleDevice, Device: "watch-1", TTL: time.Hour,
		Confirmation: Thumbprint(cert.Raw), Family: "fam"}, now)
	if err != nil {
		b.Fatal(err)
	}

	ctx := context.Background()
	rev, err := NewRevocations(ctx, testJS(b), 1, nil)
	if err != nil {
		b.Fatal(err)
	}
	for n := range 1000 {
		s := fmt.Sprint(n)
		if err := rev.RevokeDevice(ctx, "subject-"+s, "device-"+s); err != nil {
			b.Fatal(err)
		}
		if err := rev.RevokeToken(ctx, pulsebase.Principal{TokenID: "jti-" + s, Expires: now.Add(time.Hour)}); err != nil {
			b.Fatal(err)
		}
		if err := rev.RevokeCertificate(ctx, "x5t-"+s, now.Add(time.Hour)); err != nil {
			b.Fatal(err)
		}
	}
	vs := NewVerifiers(i)
	au := &Authenticator{Tokens: vs, Revocations: rev}
	peer := &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}}

	// The signature check alone, for reference: everything else is what the layers add.
	signed, sig := user[:strings.LastIndexByte(user, '.')], user[strings.LastIndexByte(user, '.')+1:]
	rawSig, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		b.Fatal(err)
	}
	pub := i.ring.Load().key.Public().(ed25519.PublicKey)
	for _, bc := range []struct {
		name string
		fn   func() (pulsebase.Principal, error)
	}{
		{"ed25519-only", func() (pulsebase.Principal, error) {
			if !ed25519.Verify(pub, []byte(signed), rawSig) {
				return pulsebase.Principal{}, errors.New("bad signature")
			}
			return pulsebase.Principal{}, nil
		}},
		{"Issuer", func() (pulsebase.Principal, error) { return i.Verify(user) }},
		{"Verifiers", func() (pulsebase.Principal, error) { return vs.Verify(user) }},
		{"Authenticator", func() (pulsebase.Principal, error) { return au.Authenticate(user, nil) }},
		{"Authenticator-device-mTLS", func() (pulsebase.Principal, error) { return au.Authenticate(device, peer) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			if _, err := bc.fn(); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bc.fn(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
