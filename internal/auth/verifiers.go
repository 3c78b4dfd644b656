package auth

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"

	"github.com/pulsebase/pulsebase"
)

// Verifiers verifies tokens of several issuers: the built-in one and any number of
// external OpenID providers. A token goes to the verifier of the issuer it names (its
// unverified "iss"), which then checks everything, the issuer included; a token naming
// no configured issuer is refused without any signature check.
type Verifiers struct {
	byIssuer map[string]Verifier
}

// NewVerifiers returns verifiers for the built-in issuer (nil: none) and the external
// ones.
func NewVerifiers(builtin *Issuer, external ...*OIDC) *Verifiers {
	v := &Verifiers{byIssuer: map[string]Verifier{}}
	if builtin != nil {
		v.byIssuer[builtin.issuer] = builtin
	}
	for _, o := range external {
		v.byIssuer[o.Issuer()] = o
	}
	return v
}

// Verify implements Verifier.
func (v *Verifiers) Verify(token string) (pulsebase.Principal, error) {
	iss, err := peekIssuer(token)
	if err != nil {
		return pulsebase.Principal{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	ver, ok := v.byIssuer[iss]
	if !ok {
		return pulsebase.Principal{}, fmt.Errorf("%w: unknown issuer", ErrInvalidToken)
	}
	return ver.Verify(token)
}

// peekIssuer reads the "iss" claim of a compact JWS without verifying anything.
func peekIssuer(token string) (string, error) {
	_, rest, ok := strings.Cut(token, ".")
	payload, _, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 || len(payload) > 16<<10 {
		return "", fmt.Errorf("not a compact JWS")
	}
	b, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return "", fmt.Errorf("payload is not base64url")
	}
	var c struct {
		Iss string `json:"iss"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return "", fmt.Errorf("payload is not a JSON object")
	}
	return c.Iss, nil
}

// VerifiedCache remembers tokens that verified, so that a client sending the same token
// with every request pays for the signature check once a minute instead of every time
// (an Ed25519 or ECDSA verification costs tens of microseconds; a lookup well under
// one). Only successes are kept, each until the token expires or ttl has passed,
// whichever is first; a revoked token is still refused, since revocation is checked
// after verification on every request. A key removed from a provider's JWKS stops
// verifying once the provider's set is fetched again (OIDC.Run, at its max-age) and the
// tokens it signed have left this cache (ttl).
type VerifiedCache struct {
	inner Verifier
	lru   *expirable.LRU[string, pulsebase.Principal]
	now   func() time.Time
}

// NewVerifiedCache wraps inner with a cache of at most size tokens kept at most ttl.
func NewVerifiedCache(inner Verifier, size int, ttl time.Duration) *VerifiedCache {
	return &VerifiedCache{inner: inner, lru: expirable.NewLRU[string, pulsebase.Principal](size, nil, ttl), now: time.Now}
}

// Verify implements Verifier.
func (c *VerifiedCache) Verify(token string) (pulsebase.Principal, error) {
	if p, ok := c.lru.Get(token); ok {
		if p.Expires.IsZero() || c.now().Before(p.Expires.Add(Leeway)) {
			return p, nil
		}
		c.lru.Remove(token)
	}
	p, err := c.inner.Verify(token)
	if err != nil {
		return pulsebase.Principal{}, err
	}
	c.lru.Add(token, p)
	return p, nil
}
