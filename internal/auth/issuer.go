// Package auth issues and verifies Pulsebase bearer tokens. The built-in issuer signs with an
// Ed25519 key kept in the data directory; the server accepts its tokens after checking
// signature, algorithm, issuer, audience, expiry and not-before, and publishes its public
// key as a JWKS so other services can verify them too.
//
// Revocations (revoke.go) lists revoked devices and tokens in a JetStream key-value bucket
// that every server process follows, so a revocation takes effect everywhere at once.
//
// It is imported by cmd/pulsebase (to mint tokens) and by httpapi (to verify them).
package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/vault"
)

// Defaults of the built-in issuer.
const (
	DefaultIssuer   = "pulsebase"
	DefaultAudience = "pulsebase-api"
	// Leeway absorbs small clock differences between token minter and server.
	Leeway = 30 * time.Second
	// MaxTTL bounds the lifetime of a minted token.
	MaxTTL = 90 * 24 * time.Hour
)

// Issuer signs and verifies tokens with one Ed25519 key.
type Issuer struct {
	issuer   string
	audience string
	key      ed25519.PrivateKey
	kid      string
	parser   *jwt.Parser
}

// Claims are the claims of a Pulsebase token.
type Claims struct {
	jwt.RegisteredClaims
	Role   pulsebase.Role `json:"role"`
	Device string         `json:"dev,omitempty"`
}

// OpenIssuer loads the signing key at keyPath, creating it (mode 0600) on first start.
func OpenIssuer(keyPath, issuer, audience string) (*Issuer, error) {
	key, err := readKey(keyPath)
	if errors.Is(err, fs.ErrNotExist) {
		key, err = createKey(keyPath)
		if errors.Is(err, fs.ErrExist) {
			key, err = readKey(keyPath)
		}
	}
	if err != nil {
		return nil, err
	}
	return NewIssuer(key, issuer, audience), nil
}

// NewIssuer returns an issuer signing with key.
func NewIssuer(key ed25519.PrivateKey, issuer, audience string) *Issuer {
	pub := key.Public().(ed25519.PublicKey)
	return &Issuer{
		issuer:   issuer,
		audience: audience,
		key:      key,
		kid:      thumbprint(pub),
		parser: jwt.NewParser(
			// Only EdDSA: "none", HS* (with the public key as a secret) and anything else
			// are refused before the signature is looked at.
			jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
			jwt.WithIssuer(issuer),
			jwt.WithAudience(audience),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithLeeway(Leeway),
		),
	}
}

func readKey(path string) (ed25519.PrivateKey, error) {
	if err := vault.CheckPrivateFile(path); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("token key %s: not a PEM private key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("token key %s: %w", path, err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("token key %s: not an Ed25519 key", path)
	}
	return ek, nil
}

func createKey(path string) (ed25519.PrivateKey, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := vault.WritePrivateFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})); err != nil {
		return nil, err
	}
	return key, nil
}

// thumbprint is the RFC 7638 JWK thumbprint of an Ed25519 public key, used as its kid.
func thumbprint(pub ed25519.PublicKey) string {
	// Members in lexicographic order, no whitespace, as RFC 7638 requires.
	j := `{"crv":"Ed25519","kty":"OKP","x":"` + base64.RawURLEncoding.EncodeToString(pub) + `"}`
	sum := sha256.Sum256([]byte(j))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// TokenRequest says what a minted token stands for.
type TokenRequest struct {
	Subject string
	Role    pulsebase.Role
	Device  string
	TTL     time.Duration
}

// Mint returns a signed token for r.
func (i *Issuer) Mint(r TokenRequest, now time.Time) (string, error) {
	switch {
	case r.Subject == "":
		return "", errors.New("token: subject is required")
	case !r.Role.Valid():
		return "", fmt.Errorf("token: unknown role %q", r.Role)
	case r.Role == pulsebase.RoleDevice && r.Device == "":
		return "", errors.New("token: a device token needs a device id")
	case r.TTL <= 0 || r.TTL > MaxTTL:
		return "", fmt.Errorf("token: ttl %s outside (0, %s]", r.TTL, MaxTTL)
	}
	var jti [16]byte
	rand.Read(jti[:])
	c := Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    i.issuer,
			Subject:   r.Subject,
			Audience:  jwt.ClaimStrings{i.audience},
			ExpiresAt: jwt.NewNumericDate(now.Add(r.TTL)),
			NotBefore: jwt.NewNumericDate(now),
			IssuedAt:  jwt.NewNumericDate(now),
			ID:        base64.RawURLEncoding.EncodeToString(jti[:]),
		},
		Role:   r.Role,
		Device: r.Device,
	}
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c)
	t.Header["kid"] = i.kid
	return t.SignedString(i.key)
}

// ErrInvalidToken is wrapped by every verification failure. The reason is kept for logs
// and metrics; callers answer 401 without it.
var ErrInvalidToken = errors.New("invalid token")

// Verify checks a token and returns the principal it speaks for.
func (i *Issuer) Verify(token string) (pulsebase.Principal, error) {
	var c Claims
	_, err := i.parser.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		if kid, _ := t.Header["kid"].(string); kid != i.kid {
			return nil, fmt.Errorf("unknown key id")
		}
		return i.key.Public(), nil
	})
	if err != nil {
		return pulsebase.Principal{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	switch {
	case c.Subject == "":
		return pulsebase.Principal{}, fmt.Errorf("%w: no subject", ErrInvalidToken)
	case !c.Role.Valid():
		return pulsebase.Principal{}, fmt.Errorf("%w: unknown role", ErrInvalidToken)
	case c.Role == pulsebase.RoleDevice && c.Device == "":
		return pulsebase.Principal{}, fmt.Errorf("%w: device token without device", ErrInvalidToken)
	}
	p := pulsebase.Principal{Subject: c.Subject, Role: c.Role, Device: c.Device, TokenID: c.ID}
	if c.IssuedAt != nil {
		p.Issued = c.IssuedAt.Time
	}
	if c.ExpiresAt != nil {
		p.Expires = c.ExpiresAt.Time
	}
	return p, nil
}

// JWKS returns the issuer's public keys as a JSON Web Key Set (RFC 7517).
func (i *Issuer) JWKS() []byte {
	pub := i.key.Public().(ed25519.PublicKey)
	b, _ := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "OKP", "crv": "Ed25519", "x": base64.RawURLEncoding.EncodeToString(pub),
		"kid": i.kid, "alg": "EdDSA", "use": "sig",
	}}})
	return b
}
