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
	"context"
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
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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

// Issuer signs tokens with its current Ed25519 key and verifies them with any key of its
// ring: the current one and those rotated out whose tokens may still be valid.
//
// On disk (OpenIssuer) the current key is the file at keyPath; Rotate moves it to the
// directory keyPath+".old" (as <kid>.pem, with a Retire-After PEM header) and writes a
// new one. Processes sharing the data directory pick a rotation up when they meet a
// token of an unknown key id (at most once every reloadEvery) or at Reload.
type Issuer struct {
	issuer   string
	audience string
	path     string // "" for an issuer without a key file (NewIssuer)
	parser   *jwt.Parser

	ring atomic.Pointer[keyRing]
	// mu serializes rotations and reloads; lastReload is guarded by it.
	mu         sync.Mutex
	lastReload time.Time
}

// keyRing is an immutable set of keys: the current signing key and every key tokens may
// still be verified with.
type keyRing struct {
	key    ed25519.PrivateKey
	kid    string
	verify map[string]ringKey
}

// ringKey is a verification key and until when it is kept (zero: the current key).
type ringKey struct {
	pub         ed25519.PublicKey
	retireAfter time.Time
}

// retireMargin keeps a rotated-out key past the lifetime of the tokens it signed, for
// those a process that had not yet seen the rotation signed with it.
const retireMargin = 5 * time.Minute

// reloadEvery bounds how often a token with an unknown key id makes the issuer read its
// key files again: a flood of made-up key ids costs one read a second.
const reloadEvery = time.Second

func newRing(key ed25519.PrivateKey, old map[string]ringKey) *keyRing {
	pub := key.Public().(ed25519.PublicKey)
	r := &keyRing{key: key, kid: thumbprint(pub), verify: map[string]ringKey{}}
	for kid, k := range old {
		r.verify[kid] = k
	}
	r.verify[r.kid] = ringKey{pub: pub}
	return r
}

// Claims are the claims of a Pulsebase token.
type Claims struct {
	jwt.RegisteredClaims
	Role   pulsebase.Role `json:"role"`
	Device string         `json:"dev,omitempty"`
	// Cnf binds the token to a client certificate (RFC 8705).
	Cnf *Confirmation `json:"cnf,omitempty"`
	// Family is the refresh-token family of a device enrollment.
	Family string `json:"fam,omitempty"`
}

// Confirmation is a token's cnf claim: the thumbprint of the certificate it is bound to.
type Confirmation struct {
	X5tS256 string `json:"x5t#S256"`
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
	i := NewIssuer(key, issuer, audience)
	i.path = keyPath
	old, err := readRetired(keyPath+".old", time.Now())
	if err != nil {
		return nil, err
	}
	i.ring.Store(newRing(key, old))
	return i, nil
}

// NewIssuer returns an issuer signing with key.
func NewIssuer(key ed25519.PrivateKey, issuer, audience string) *Issuer {
	i := &Issuer{
		issuer:   issuer,
		audience: audience,
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
	i.ring.Store(newRing(key, nil))
	return i
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
	// Confirmation binds the token to the client certificate with this thumbprint
	// (base64url SHA-256 of its DER); Family names its refresh-token family.
	Confirmation string
	Family       string
}

// Mint returns a signed token for r.
func (i *Issuer) Mint(r TokenRequest, now time.Time) (string, error) {
	switch {
	case r.Subject == "":
		return "", errors.New("token: subject is required")
	case strings.Contains(r.Subject, "://") && !enrolledDevice(r.Role, r.Confirmation, r.Family):
		// External identities are issuer#sub with the issuer's URL (ExternalSubject): a
		// built-in token speaks for one only as the certificate-bound token of a device
		// that person enrolled, never as a user (or anything `pulsebase token` mints).
		return "", errors.New("token: a subject with :// would look like an external identity")
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
		Family: r.Family,
	}
	if r.Confirmation != "" {
		c.Cnf = &Confirmation{X5tS256: r.Confirmation}
	}
	ring := i.ring.Load()
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c)
	t.Header["kid"] = ring.kid
	return t.SignedString(ring.key)
}

// enrolledDevice reports whether a token is an enrolled device's: certificate-bound and of
// a refresh family, as only Devices mints them.
func enrolledDevice(role pulsebase.Role, cnf, family string) bool {
	return role == pulsebase.RoleDevice && cnf != "" && family != ""
}

func confirmation(c *Confirmation) string {
	if c == nil {
		return ""
	}
	return c.X5tS256
}

// ErrInvalidToken is wrapped by every verification failure. The reason is kept for logs
// and metrics; callers answer 401 without it.
var ErrInvalidToken = errors.New("invalid token")

// Verify checks a token and returns the principal it speaks for.
func (i *Issuer) Verify(token string) (pulsebase.Principal, error) {
	var c Claims
	_, err := i.parser.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		k, ok := i.ring.Load().verify[kid]
		if !ok && kid != "" && i.reloadForUnknownKey() {
			k, ok = i.ring.Load().verify[kid]
		}
		if !ok || (!k.retireAfter.IsZero() && time.Now().After(k.retireAfter)) {
			return nil, fmt.Errorf("unknown key id")
		}
		return k.pub, nil
	})
	if err != nil {
		return pulsebase.Principal{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	switch {
	case c.Subject == "":
		return pulsebase.Principal{}, fmt.Errorf("%w: no subject", ErrInvalidToken)
	case strings.Contains(c.Subject, "://") && !enrolledDevice(c.Role, confirmation(c.Cnf), c.Family):
		return pulsebase.Principal{}, fmt.Errorf("%w: subject in the external form", ErrInvalidToken)
	case !c.Role.Valid():
		return pulsebase.Principal{}, fmt.Errorf("%w: unknown role", ErrInvalidToken)
	case c.Role == pulsebase.RoleDevice && c.Device == "":
		return pulsebase.Principal{}, fmt.Errorf("%w: device token without device", ErrInvalidToken)
	}
	p := pulsebase.Principal{Subject: c.Subject, Role: c.Role, Device: c.Device, TokenID: c.ID, Family: c.Family}
	if c.Cnf != nil {
		if c.Cnf.X5tS256 == "" {
			return pulsebase.Principal{}, fmt.Errorf("%w: empty cnf", ErrInvalidToken)
		}
		p.Confirmation = c.Cnf.X5tS256
	}
	if c.IssuedAt != nil {
		p.Issued = c.IssuedAt.Time
	}
	if c.ExpiresAt != nil {
		p.Expires = c.ExpiresAt.Time
	}
	return p, nil
}

// JWKS returns the issuer's public keys as a JSON Web Key Set (RFC 7517): the current
// key first, then the rotated-out keys whose tokens may still be valid.
func (i *Issuer) JWKS() []byte {
	ring := i.ring.Load()
	now := time.Now()
	keys := []map[string]string{}
	kids := make([]string, 0, len(ring.verify))
	for kid, k := range ring.verify {
		if kid != ring.kid && now.After(k.retireAfter) {
			continue
		}
		kids = append(kids, kid)
	}
	slices.SortFunc(kids, func(a, b string) int {
		switch {
		case a == ring.kid:
			return -1
		case b == ring.kid:
			return 1
		}
		return ring.verify[b].retireAfter.Compare(ring.verify[a].retireAfter)
	})
	for _, kid := range kids {
		keys = append(keys, map[string]string{
			"kty": "OKP", "crv": "Ed25519", "x": base64.RawURLEncoding.EncodeToString(ring.verify[kid].pub),
			"kid": kid, "alg": "EdDSA", "use": "sig",
		})
	}
	b, _ := json.Marshal(map[string]any{"keys": keys})
	return b
}

// KeyID returns the id of the current signing key.
func (i *Issuer) KeyID() string { return i.ring.Load().kid }

// Rotation says what Rotate did.
type Rotation struct {
	KeyID       string    `json:"kid"`
	Retired     string    `json:"retired_kid"`
	RetireAfter time.Time `json:"retired_until"`
}

// Rotate replaces the signing key by a new one. The old key keeps verifying (and stays
// in the JWKS) until every token it signed has expired: MaxTTL plus the leeway after
// now. Keys retired before that are dropped.
func (i *Issuer) Rotate(now time.Time) (Rotation, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.path != "" {
		// Another process sharing the directory may have rotated since we last read it:
		// rotate from what is on disk, or its key would be lost.
		if err := i.reloadLocked(); err != nil {
			return Rotation{}, err
		}
	}
	old := i.ring.Load()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return Rotation{}, err
	}
	// Processes sharing the key file may sign with the old key until they reload (a
	// minute at most, see Watch): keep it a little past MaxTTL for their tokens too.
	until := now.Add(MaxTTL + Leeway + retireMargin).UTC().Truncate(time.Second)
	retired := map[string]ringKey{}
	for kid, k := range old.verify {
		if kid != old.kid && now.Before(k.retireAfter) {
			retired[kid] = k
		}
	}
	retired[old.kid] = ringKey{pub: old.key.Public().(ed25519.PublicKey), retireAfter: until}
	if i.path != "" {
		if err := writeRetired(i.path+".old", old.kid, old.key.Public().(ed25519.PublicKey), until); err != nil {
			return Rotation{}, err
		}
		if err := replaceKey(i.path, key); err != nil {
			return Rotation{}, err
		}
		pruneRetired(i.path+".old", now)
	}
	next := newRing(key, retired)
	i.ring.Store(next)
	return Rotation{KeyID: next.kid, Retired: old.kid, RetireAfter: until}, nil
}

// Reload reads the key files again, picking up a rotation made by another process
// sharing the data directory.
func (i *Issuer) Reload() error {
	if i.path == "" {
		return nil
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.reloadLocked()
}

func (i *Issuer) reloadLocked() error {
	i.lastReload = time.Now()
	key, err := readKey(i.path)
	if err != nil {
		return err
	}
	old, err := readRetired(i.path+".old", time.Now())
	if err != nil {
		return err
	}
	i.ring.Store(newRing(key, old))
	return nil
}

// reloadForUnknownKey reloads the key files if the last reload is older than
// reloadEvery, and reports whether it did.
func (i *Issuer) reloadForUnknownKey() bool {
	if i.path == "" {
		return false
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	if time.Since(i.lastReload) < reloadEvery {
		return false
	}
	return i.reloadLocked() == nil
}

// Watch reloads the key files every interval until ctx is done, so that the JWKS of
// every process sharing the data directory lists a new key soon after a rotation.
func (i *Issuer) Watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = i.Reload()
		}
	}
}

// retiredHeader is the PEM header of a retired key saying until when it verifies.
const retiredHeader = "Retire-After"

// readRetired reads the retired keys in dir that are still to be kept at now.
func readRetired(dir string, now time.Time) (map[string]ringKey, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("retired token keys: %w", err)
	}
	out := map[string]ringKey{}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".pem") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("retired token key: %w", err)
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("retired token key %s: not PEM", path)
		}
		until, err := time.Parse(time.RFC3339, blk.Headers[retiredHeader])
		if err != nil {
			return nil, fmt.Errorf("retired token key %s: no %s header", path, retiredHeader)
		}
		if !now.Before(until) {
			continue
		}
		k, err := x509.ParsePKIXPublicKey(blk.Bytes)
		pub, ok := k.(ed25519.PublicKey)
		if err != nil || !ok || blk.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf("retired token key %s: not an Ed25519 public key", path)
		}
		out[thumbprint(pub)] = ringKey{pub: pub, retireAfter: until}
	}
	return out, nil
}

// writeRetired keeps the public half of a rotated-out key in dir as <kid>.pem until
// until: verifying needs nothing more, and a retired key must never sign again.
func writeRetired(dir, kid string, pub ed25519.PublicKey, until time.Time) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return err
	}
	blk := &pem.Block{Type: "PUBLIC KEY", Headers: map[string]string{retiredHeader: until.Format(time.RFC3339)}, Bytes: der}
	return vault.WritePrivateFile(filepath.Join(dir, kid+".pem"), pem.EncodeToMemory(blk))
}

// replaceKey writes key to path atomically (a new file renamed over the old one).
func replaceKey(path string, key ed25519.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	tmp := path + ".new"
	os.Remove(tmp)
	if err := vault.WritePrivateFile(tmp, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// pruneRetired deletes retired keys that no token can need any more.
func pruneRetired(dir string, now time.Time) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		path := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		if blk, _ := pem.Decode(b); blk != nil {
			if until, err := time.Parse(time.RFC3339, blk.Headers[retiredHeader]); err == nil && !now.Before(until) {
				os.Remove(path)
			}
		}
	}
}
