package auth

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
)

// countingVerifier counts the verifications that reach it.
type countingVerifier struct {
	inner Verifier
	calls int
}

func (c *countingVerifier) Verify(tok string) (pulsebase.Principal, error) {
	c.calls++
	return c.inner.Verify(tok)
}

func TestVerifiedCache(t *testing.T) {
	iss, err := OpenIssuer(filepath.Join(t.TempDir(), "token.key"), DefaultIssuer, DefaultAudience)
	if err != nil {
		t.Fatal(err)
	}
	cv := &countingVerifier{inner: iss}
	c := NewVerifiedCache(cv, 10, time.Minute)
	now := time.Now()
	c.now = func() time.Time { return now }
	tok, _ := iss.Mint(TokenRequest{Subject: "alice", Role: pulsebase.RoleUser, TTL: time.Hour}, now)
	for i := 0; i < 3; i++ {
		p, err := c.Verify(tok)
		if err != nil || p.Subject != "alice" {
			t.Fatalf("verify %d: %+v %v", i, p, err)
		}
	}
	if cv.calls != 1 {
		t.Errorf("three verifications of one token reached the issuer %d times, want 1", cv.calls)
	}
	// Failures are not remembered: each is checked again.
	for i := 0; i < 2; i++ {
		if _, err := c.Verify(tok + "x"); !errors.Is(err, ErrInvalidToken) {
			t.Fatalf("tampered token: %v", err)
		}
	}
	if cv.calls != 3 {
		t.Errorf("two failures made %d calls in all, want 3", cv.calls)
	}
	// Past the token's expiry (and leeway) the cache does not vouch for it any more: the
	// token goes to the issuer again (which, on the real clock, still accepts it).
	now = now.Add(time.Hour + Leeway + time.Second)
	if _, err := c.Verify(tok); err != nil || cv.calls != 4 {
		t.Errorf("a cached token past its expiry: %v after %d calls, want a fresh verification (4)", err, cv.calls)
	}
}

func BenchmarkVerifiedCacheHit(b *testing.B) {
	iss, err := OpenIssuer(filepath.Join(b.TempDir(), "token.key"), DefaultIssuer, DefaultAudience)
	if err != nil {
		b.Fatal(err)
	}
	c := NewVerifiedCache(NewVerifiers(iss), 50_000, time.Minute)
	tok, _ := iss.Mint(TokenRequest{Subject: "alice", Role: pulsebase.RoleUser, TTL: time.Hour}, time.Now())
	if _, err := c.Verify(tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}
