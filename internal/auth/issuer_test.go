package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pulsebase/pulsebase"
)

func testIssuer(t *testing.T) *Issuer {
	t.Helper()
	i, err := OpenIssuer(filepath.Join(t.TempDir(), "token.key"), DefaultIssuer, DefaultAudience)
	if err != nil {
		t.Fatal(err)
	}
	return i
}

func TestMintVerifyRoundTrip(t *testing.T) {
	i := testIssuer(t)
	tok, err := i.Mint(TokenRequest{Subject: "alice", Role: pulsebase.RoleDevice, Device: "watch-1", TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	p, err := i.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	if p.Subject != "alice" || p.Role != pulsebase.RoleDevice || p.Device != "watch-1" || p.TokenID == "" {
		t.Errorf("got principal %+v, want alice/device/watch-1 with a token id", p)
	}
}

func TestKeyFilePersistsAndIsPrivate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token.key")
	a, err := OpenIssuer(path, DefaultIssuer, DefaultAudience)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("got key mode %#o, want 0600", perm)
	}
	b, err := OpenIssuer(path, DefaultIssuer, DefaultAudience)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := a.Mint(TokenRequest{Subject: "bob", Role: pulsebase.RoleUser, TTL: time.Hour}, time.Now())
	if _, err := b.Verify(tok); err != nil {
		t.Errorf("token of the first open does not verify after reopening: %v", err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenIssuer(path, DefaultIssuer, DefaultAudience); err == nil {
		t.Error("a world-readable key file was accepted")
	}
}

// sign makes a token with arbitrary header and claims, signed by signer (nil: no signature).
func sign(t *testing.T, header, claims map[string]any, signer func(string) []byte) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	s := enc(header) + "." + enc(claims)
	var sig []byte
	if signer != nil {
		sig = signer(s)
	}
	return s + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func TestVerifyRejects(t *testing.T) {
	i := testIssuer(t)
	now := time.Now()
	good := func() map[string]any {
		return map[string]any{
			"iss": DefaultIssuer, "sub": "alice", "aud": []string{DefaultAudience}, "role": "user",
			"exp": now.Add(time.Hour).Unix(), "iat": now.Unix(), "nbf": now.Unix(),
		}
	}
	edSigner := func(k ed25519.PrivateKey) func(string) []byte {
		return func(s string) []byte { return ed25519.Sign(k, []byte(s)) }
	}
	hdr := map[string]any{"alg": "EdDSA", "typ": "JWT", "kid": i.KeyID()}
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	pub := i.ring.Load().key.Public().(ed25519.PublicKey)

	with := func(k string, v any) map[string]any { c := good(); c[k] = v; return c }
	without := func(k string) map[string]any { c := good(); delete(c, k); return c }

	tampered := sign(t, hdr, good(), edSigner(i.ring.Load().key))
	parts := strings.Split(tampered, ".")
	c := good()
	c["sub"] = "mallory"
	cb, _ := json.Marshal(c)
	parts[1] = base64.RawURLEncoding.EncodeToString(cb)
	tampered = strings.Join(parts, ".")

	hsWithPublicKey, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims(good())).SignedString([]byte(pub))
	if err != nil {
		t.Fatal(err)
	}

	cases := map[string]string{
		"sanity: a good token":      "",
		"expired":                   sign(t, hdr, with("exp", now.Add(-time.Hour).Unix()), edSigner(i.ring.Load().key)),
		"no expiry":                 sign(t, hdr, without("exp"), edSigner(i.ring.Load().key)),
		"not yet valid":             sign(t, hdr, with("nbf", now.Add(time.Hour).Unix()), edSigner(i.ring.Load().key)),
		"other audience":            sign(t, hdr, with("aud", []string{"someone-else"}), edSigner(i.ring.Load().key)),
		"other issuer":              sign(t, hdr, with("iss", "https://evil.example"), edSigner(i.ring.Load().key)),
		"unknown role":              sign(t, hdr, with("role", "root"), edSigner(i.ring.Load().key)),
		"no subject":                sign(t, hdr, without("sub"), edSigner(i.ring.Load().key)),
		"device without device id":  sign(t, hdr, with("role", "device"), edSigner(i.ring.Load().key)),
		"signed by another key":     sign(t, hdr, good(), edSigner(otherKey)),
		"unknown kid":               sign(t, map[string]any{"alg": "EdDSA", "kid": "nope"}, good(), edSigner(i.ring.Load().key)),
		"tampered claims":           tampered,
		"alg none":                  sign(t, map[string]any{"alg": "none", "kid": i.KeyID()}, good(), nil),
		"HS256 with the public key": hsWithPublicKey,
		"garbage":                   "not.a.token",
		"empty":                     "",
	}
	for name, tok := range cases {
		t.Run(name, func(t *testing.T) {
			if name == "sanity: a good token" {
				if _, err := i.Verify(sign(t, hdr, good(), edSigner(i.ring.Load().key))); err != nil {
					t.Fatalf("got %v, want a good hand-made token to verify", err)
				}
				return
			}
			_, err := i.Verify(tok)
			if !errors.Is(err, ErrInvalidToken) {
				t.Errorf("got %v, want ErrInvalidToken", err)
			}
		})
	}
}

func TestMintRefusesBadRequests(t *testing.T) {
	i := testIssuer(t)
	for name, r := range map[string]TokenRequest{
		"no subject":        {Role: pulsebase.RoleUser, TTL: time.Hour},
		"unknown role":      {Subject: "a", Role: "root", TTL: time.Hour},
		"device without id": {Subject: "a", Role: pulsebase.RoleDevice, TTL: time.Hour},
		"zero ttl":          {Subject: "a", Role: pulsebase.RoleUser},
		"ttl too long":      {Subject: "a", Role: pulsebase.RoleUser, TTL: MaxTTL + time.Hour},
	} {
		if _, err := i.Mint(r, time.Now()); err == nil {
			t.Errorf("%s: got a token, want an error", name)
		}
	}
}

func TestJWKS(t *testing.T) {
	i := testIssuer(t)
	var set struct {
		Keys []map[string]string `json:"keys"`
	}
	if err := json.Unmarshal(i.JWKS(), &set); err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 1 {
		t.Fatalf("got %d keys, want 1", len(set.Keys))
	}
	k := set.Keys[0]
	x, err := base64.RawURLEncoding.DecodeString(k["x"])
	if err != nil || !ed25519.PublicKey(x).Equal(i.ring.Load().key.Public()) {
		t.Errorf("JWKS x does not match the signing key")
	}
	if k["kid"] != i.KeyID() || k["alg"] != "EdDSA" || k["kty"] != "OKP" {
		t.Errorf("got JWK %v, want OKP/EdDSA with kid %s", k, i.KeyID())
	}
}

func TestVerifyGivesIssueAndExpiryTimes(t *testing.T) {
	i := testIssuer(t)
	now := time.Now()
	tok, err := i.Mint(TokenRequest{Subject: "alice", Role: pulsebase.RoleUser, TTL: time.Hour}, now)
	if err != nil {
		t.Fatal(err)
	}
	p, err := i.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	// The claims carry whole seconds.
	if want := now.Truncate(time.Second); !p.Issued.Equal(want) {
		t.Errorf("got issued %s, want %s", p.Issued, want)
	}
	if want := now.Add(time.Hour).Truncate(time.Second); !p.Expires.Equal(want) {
		t.Errorf("got expires %s, want %s", p.Expires, want)
	}
}

// TestRetiredKeyFileHoldsNoPrivateKey: a key rotated out can only verify; its private half
// is gone from disk.
func TestRetiredKeyFileHoldsNoPrivateKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token.key")
	i, err := OpenIssuer(path, DefaultIssuer, DefaultAudience)
	if err != nil {
		t.Fatal(err)
	}
	rot, err := i.Rotate(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(path+".old", rot.Retired+".pem"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "BEGIN PUBLIC KEY") || strings.Contains(string(b), "PRIVATE") {
		t.Errorf("retired key file:\n%s\nwant a public key only", b)
	}
}

// TestBuiltinSubjectsCannotPoseAsExternal: a built-in token cannot name an external
// identity (issuer URL#sub), which would map to that person's user.
func TestBuiltinSubjectsCannotPoseAsExternal(t *testing.T) {
	i := testIssuer(t)
	ext := ExternalSubject("https://kc.example/realms/x", "42")
	if _, err := i.Mint(TokenRequest{Subject: ext, Role: pulsebase.RoleUser, TTL: time.Hour}, time.Now()); err == nil {
		t.Error("minted a built-in token for an external identity")
	}
	now := time.Now()
	tok := sign(t, map[string]any{"alg": "EdDSA", "typ": "JWT", "kid": i.KeyID()}, map[string]any{
		"iss": DefaultIssuer, "aud": DefaultAudience, "sub": ext, "role": "user",
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}, func(in string) []byte {
		return ed25519.Sign(i.ring.Load().key, []byte(in))
	})
	if _, err := i.Verify(tok); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("a built-in token naming an external identity verified: %v", err)
	}
}

// TestEnrolledDeviceOfExternalUser: an enrolled device's certificate-bound token speaks for
// its owner's external identity; nothing else minted here may.
func TestEnrolledDeviceOfExternalUser(t *testing.T) {
	i := testIssuer(t)
	ext := ExternalSubject("https://kc.example/realms/x", "42")
	tok, err := i.Mint(TokenRequest{Subject: ext, Role: pulsebase.RoleDevice, Device: "watch-1", TTL: time.Hour,
		Confirmation: "thumb", Family: "fam"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if p, err := i.Verify(tok); err != nil || p.Subject != ext {
		t.Errorf("an enrolled device's token of an external user: %+v %v", p, err)
	}
	for _, r := range []TokenRequest{
		{Subject: ext, Role: pulsebase.RoleDevice, Device: "watch-1", TTL: time.Hour},
		{Subject: ext, Role: pulsebase.RoleDevice, Device: "watch-1", TTL: time.Hour, Confirmation: "thumb"},
		{Subject: ext, Role: pulsebase.RoleUser, TTL: time.Hour, Confirmation: "thumb", Family: "fam"},
	} {
		if _, err := i.Mint(r, time.Now()); err == nil {
			t.Errorf("minted %+v", r)
		}
	}
}
