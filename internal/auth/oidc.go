package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/sync/singleflight"

	"github.com/pulsebase/pulsebase"
)

// Defaults of an external OpenID Connect issuer.
const (
	// DefaultRoleClaim is the claim an external token names its Pulsebase role in.
	DefaultRoleClaim = "pulsebase_role"
	// DefaultMinRefreshInterval bounds how often an unknown kid may make us refetch the
	// JWKS, so a flood of tokens with made-up kids cannot turn into a flood of requests
	// to the identity provider.
	DefaultMinRefreshInterval = 10 * time.Second

	oidcHTTPTimeout = 10 * time.Second
	// oidcMaxBody bounds a discovery document or JWKS: real ones are a few KiB, and an
	// unbounded read would let a misbehaving provider exhaust our memory.
	oidcMaxBody = 1 << 20

	// Bounds and default of the background refresh (Run): often enough to pick up a
	// rotation the provider announced, rarely enough not to hammer it.
	jwksMinMaxAge     = time.Minute
	jwksMaxMaxAge     = time.Hour
	jwksDefaultMaxAge = 15 * time.Minute
	// jwksRetry is how soon Run tries again after a failed fetch.
	jwksRetry = time.Minute
	// minRSABits refuses RSA keys too short to be trusted today (RFC 7518 §3.3).
	minRSABits = 2048
)

// oidcAlgs are the only algorithms an external token may be signed with: all
// asymmetric. "none" and HS* are never accepted: with HS*, a published public key
// would serve as the shared secret and anyone could mint tokens.
var oidcAlgs = []string{
	"RS256", "RS384", "RS512",
	"PS256", "PS384", "PS512",
	"ES256", "ES384", "ES512",
	"EdDSA",
}

// OIDCConfig configures one external issuer.
type OIDCConfig struct {
	// Issuer is the issuer URL, e.g. https://idp.example/realms/x. Its discovery document
	// is read from Issuer+"/.well-known/openid-configuration" and must name exactly this
	// issuer; tokens must carry it as "iss".
	Issuer string
	// Audience is the "aud" the tokens must carry (one of their audiences).
	Audience string
	// Client fetches discovery and JWKS; nil means a client with a 10 s timeout.
	Client *http.Client
	// Leeway absorbs clock differences for exp, nbf and iat; 0 means auth.Leeway.
	Leeway time.Duration
	// MinRefreshInterval bounds refetches on an unknown kid: at most one per interval,
	// and concurrent misses share one fetch; 0 means 10 s.
	MinRefreshInterval time.Duration
	// RoleClaim names the claim holding the Pulsebase role; "" means "pulsebase_role".
	RoleClaim string
}

// OIDC verifies tokens of one external issuer against the keys it publishes.
//
// Verify on a cached key takes no lock: the key set is replaced whole through an atomic
// pointer. A token whose kid is unknown makes it refetch the JWKS at most once per
// MinRefreshInterval, since that is how a provider's key rotation first shows.
// Create it with NewOIDC; its methods are safe for concurrent use.
type OIDC struct {
	issuer     string
	jwksURI    string
	client     *http.Client
	minRefresh time.Duration
	roleClaim  string
	parser     *jwt.Parser

	keys    atomic.Pointer[jwkSet]
	group   singleflight.Group
	fetches atomic.Int64

	// clock and epoch time the refetch bound. lastFetch is clock()-epoch when the last
	// fetch ended, failed or not, so a provider that is down is not asked again on every
	// token either. Durations since epoch keep the monotonic clock: a wall clock step
	// cannot stall refreshes.
	clock     func() time.Time
	epoch     time.Time
	lastFetch atomic.Int64
}

// jwkSet is one fetched JWKS, reduced to the keys that may verify a signature.
type jwkSet struct {
	byKID map[string][]*jose.JSONWebKey
	// sole holds the only signing key, when there is exactly one: a token without kid is
	// accepted only then, as there is no guessing which key it meant.
	sole []*jose.JSONWebKey
	// maxAge is how long the provider said the set may be cached (clamped).
	maxAge time.Duration
}

// NewOIDC reads the issuer's discovery document and fetches its JWKS once. It fails if
// either cannot be had, or the document names another issuer than cfg.Issuer.
func NewOIDC(ctx context.Context, cfg OIDCConfig) (*OIDC, error) {
	if err := checkHTTPURL(cfg.Issuer); err != nil {
		return nil, fmt.Errorf("oidc issuer: %w", err)
	}
	if cfg.Audience == "" {
		return nil, fmt.Errorf("oidc %s: audience is required", cfg.Issuer)
	}
	o := &OIDC{
		issuer:     cfg.Issuer,
		client:     cfg.Client,
		minRefresh: cfg.MinRefreshInterval,
		roleClaim:  cfg.RoleClaim,
		clock:      time.Now,
	}
	o.epoch = o.clock()
	if o.client == nil {
		o.client = &http.Client{Timeout: oidcHTTPTimeout}
	}
	if o.minRefresh <= 0 {
		o.minRefresh = DefaultMinRefreshInterval
	}
	if o.roleClaim == "" {
		o.roleClaim = DefaultRoleClaim
	}
	leeway := cfg.Leeway
	if leeway <= 0 {
		leeway = Leeway
	}
	o.parser = jwt.NewParser(
		jwt.WithValidMethods(oidcAlgs),
		jwt.WithIssuer(cfg.Issuer),
		jwt.WithAudience(cfg.Audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(leeway),
	)

	// A trailing slash is not part of the well-known path (OpenID Connect Discovery §4).
	var disc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	discURL := strings.TrimSuffix(cfg.Issuer, "/") + "/.well-known/openid-configuration"
	if _, err := o.getJSON(ctx, discURL, &disc); err != nil {
		return nil, fmt.Errorf("oidc %s: discovery: %w", cfg.Issuer, err)
	}
	// An exact match, as the spec demands: otherwise one provider could speak for another.
	if disc.Issuer != cfg.Issuer {
		return nil, fmt.Errorf("oidc %s: discovery names issuer %q", cfg.Issuer, disc.Issuer)
	}
	if err := checkHTTPURL(disc.JWKSURI); err != nil {
		return nil, fmt.Errorf("oidc %s: jwks_uri: %w", cfg.Issuer, err)
	}
	if strings.HasPrefix(cfg.Issuer, "https://") && !strings.HasPrefix(disc.JWKSURI, "https://") {
		// Keys fetched in plain text could be swapped on the way: an issuer served over
		// HTTPS must publish its keys over HTTPS too.
		return nil, fmt.Errorf("oidc %s: jwks_uri %q is not https", cfg.Issuer, disc.JWKSURI)
	}
	o.jwksURI = disc.JWKSURI
	if _, err := o.fetchKeys(ctx); err != nil {
		return nil, fmt.Errorf("oidc %s: %w", cfg.Issuer, err)
	}
	return o, nil
}

// Issuer returns the issuer URL the verifier accepts tokens of.
func (o *OIDC) Issuer() string { return o.issuer }

// Fetches reports how many times the JWKS was requested, successfully or not, including
// the fetch in NewOIDC. Tests use it to see that refetching stays bounded.
func (o *OIDC) Fetches() int64 { return o.fetches.Load() }

// ExternalSubject is the subject an external identity is known by inside Pulsebase: the
// issuer and its subject, so equal subjects of two identity providers never collide.
func ExternalSubject(issuer, sub string) string { return issuer + "#" + sub }

// oidcClaims are the claims read from an external token.
type oidcClaims struct {
	jwt.RegisteredClaims
	// Role is the role claim. Its tag is DefaultRoleClaim, so with the default name one
	// decoding pass reads everything; another name costs a second pass.
	Role      json.RawMessage `json:"pulsebase_role"`
	roleClaim string
}

// UnmarshalJSON reads the registered claims and the configured role claim.
func (c *oidcClaims) UnmarshalJSON(b []byte) error {
	// plain has the fields but not this method, so json.Unmarshal does not recurse.
	type plain oidcClaims
	if err := json.Unmarshal(b, (*plain)(c)); err != nil {
		return err
	}
	if c.roleClaim == DefaultRoleClaim {
		return nil
	}
	// The role claim's name is only known at run time: keep every claim as raw bytes
	// and look at the role alone. A "pulsebase_role" claim is then not ours to read.
	var all map[string]json.RawMessage
	if err := json.Unmarshal(b, &all); err != nil {
		return err
	}
	c.Role = all[c.roleClaim]
	return nil
}

// Reasons a token is refused. They are fixed strings: a reason never repeats anything
// from the token, which is attacker-controlled and ends up in logs.
var (
	errAlgNotAllowed  = errors.New("algorithm not allowed")
	errNoKID          = errors.New("no kid, and the issuer has more than one signing key")
	errUnknownKID     = errors.New("unknown key id")
	errKeyMismatch    = errors.New("key does not fit the token's algorithm")
	errNoSubject      = errors.New("no subject")
	errRoleNotAllowed = errors.New("role not allowed")
)

// Verify checks a token of the external issuer and returns the principal it speaks for.
// Every failure wraps ErrInvalidToken.
func (o *OIDC) Verify(token string) (pulsebase.Principal, error) {
	c := oidcClaims{roleClaim: o.roleClaim}
	if t, err := o.parser.ParseWithClaims(token, &c, o.keyFor); err != nil {
		return pulsebase.Principal{}, fmt.Errorf("%w: %w", ErrInvalidToken, reason(t, err))
	}
	if c.Subject == "" {
		return pulsebase.Principal{}, fmt.Errorf("%w: %w", ErrInvalidToken, errNoSubject)
	}
	role, err := externalRole(c.Role)
	if err != nil {
		return pulsebase.Principal{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	p := pulsebase.Principal{
		Subject: ExternalSubject(c.Issuer, c.Subject),
		Role:    role,
		TokenID: c.ID,
	}
	if c.IssuedAt != nil {
		p.Issued = c.IssuedAt.Time
	}
	if c.ExpiresAt != nil {
		p.Expires = c.ExpiresAt.Time
	}
	return p, nil
}

// externalRole maps the role claim to a role. No claim means a plain user. Device and
// service principals are ours to mint, never an external issuer's, so naming them (or
// anything unknown) refuses the token rather than silently downgrading it.
func externalRole(raw json.RawMessage) (pulsebase.Role, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return pulsebase.RoleUser, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", errRoleNotAllowed
	}
	switch r := pulsebase.Role(s); r {
	case pulsebase.RoleUser, pulsebase.RoleCoach, pulsebase.RoleAnalyst, pulsebase.RoleAdmin:
		return r, nil
	}
	return "", errRoleNotAllowed
}

// reason reduces a parse error to a fixed reason. golang-jwt puts the header's alg into
// some messages; ours and its sentinels say what failed without quoting the token.
func reason(t *jwt.Token, err error) error {
	if errors.Is(err, jwt.ErrTokenMalformed) {
		return jwt.ErrTokenMalformed
	}
	// golang-jwt reports a refused or unknown alg as a bad signature or an unverifiable
	// token; the parsed header tells these apart, and "algorithm not allowed" is what
	// someone reading the logs for an alg-confusion attempt needs to see.
	if t != nil && (t.Method == nil || !slices.Contains(oidcAlgs, t.Method.Alg())) {
		return errAlgNotAllowed
	}
	for _, e := range []error{errNoKID, errUnknownKID, errKeyMismatch} {
		if errors.Is(err, e) {
			return e
		}
	}
	for _, e := range []error{
		jwt.ErrTokenSignatureInvalid,
		jwt.ErrTokenExpired,
		jwt.ErrTokenNotValidYet,
		jwt.ErrTokenUsedBeforeIssued,
		jwt.ErrTokenInvalidIssuer,
		jwt.ErrTokenInvalidAudience,
		jwt.ErrTokenRequiredClaimMissing,
		jwt.ErrTokenUnverifiable,
		jwt.ErrTokenInvalidClaims,
	} {
		if errors.Is(err, e) {
			return e
		}
	}
	return errors.New("token refused")
}

// keyFor is the jwt.Keyfunc: it finds the published key the token names and checks that
// the key may verify the token's algorithm. golang-jwt has already refused any
// algorithm outside oidcAlgs before this runs.
func (o *OIDC) keyFor(t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	kid, isString := t.Header["kid"].(string)
	if _, has := t.Header["kid"]; has && !isString {
		return nil, errUnknownKID
	}
	ks := o.keys.Load()
	if kid == "" {
		if ks.sole == nil {
			return nil, errNoKID
		}
		return fitKey(ks.sole, alg)
	}
	if cands, ok := ks.byKID[kid]; ok {
		return fitKey(cands, alg)
	}
	// An unknown kid is how a provider's key rotation first shows: look again, bounded.
	ks, err := o.refetch()
	if err != nil {
		return nil, errUnknownKID
	}
	cands, ok := ks.byKID[kid]
	if !ok {
		return nil, errUnknownKID
	}
	return fitKey(cands, alg)
}

// fitKey returns the first of cands that may verify alg: a key of the algorithm's family
// (and curve), whose own "alg", if it has one, is alg. Without this, a key published for
// one algorithm could be abused with another.
func fitKey(cands []*jose.JSONWebKey, alg string) (any, error) {
	for _, k := range cands {
		if k.Algorithm != "" && k.Algorithm != alg {
			continue
		}
		if keyFits(k.Key, alg) {
			return k.Key, nil
		}
	}
	return nil, errKeyMismatch
}

// keyFits reports whether key is of the kind alg verifies with.
func keyFits(key any, alg string) bool {
	switch alg {
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
		_, ok := key.(*rsa.PublicKey)
		return ok
	case "ES256":
		return ecCurve(key) == elliptic.P256()
	case "ES384":
		return ecCurve(key) == elliptic.P384()
	case "ES512":
		return ecCurve(key) == elliptic.P521()
	case "EdDSA":
		_, ok := key.(ed25519.PublicKey)
		return ok
	}
	return false
}

// ecCurve is key's curve, or nil if it is no ECDSA key.
func ecCurve(key any) elliptic.Curve {
	if k, ok := key.(*ecdsa.PublicKey); ok {
		return k.Curve
	}
	return nil
}

// refetch returns the key set to look an unknown kid up in again: a freshly fetched one
// if the last fetch is older than the refresh interval (concurrent callers share the
// fetch), else the current one, which another caller's fetch may have replaced since
// this caller first looked.
func (o *OIDC) refetch() (*jwkSet, error) {
	if !o.refreshDue() {
		return o.keys.Load(), nil
	}
	v, err, _ := o.group.Do("jwks", func() (any, error) {
		// A flight that ended just before this one began has already looked again.
		if !o.refreshDue() {
			return o.keys.Load(), nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), oidcHTTPTimeout)
		defer cancel()
		return o.fetchKeys(ctx)
	})
	if err != nil {
		return nil, err
	}
	return v.(*jwkSet), nil
}

// refreshDue reports whether the last fetch ended at least MinRefreshInterval ago.
func (o *OIDC) refreshDue() bool {
	since := o.clock().Sub(o.epoch) - time.Duration(o.lastFetch.Load())
	return since >= o.minRefresh
}

// Run refreshes the JWKS in the background until ctx is done, as often as the provider's
// Cache-Control max-age says (at least every hour, at most every minute, every 15
// minutes without one), so a rotation is usually known before the first token of the
// new key arrives. A failed fetch keeps the keys there are and is retried after a minute.
func (o *OIDC) Run(ctx context.Context) {
	wait := o.keys.Load().maxAge
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		ch := o.group.DoChan("jwks", func() (any, error) {
			fctx, cancel := context.WithTimeout(context.Background(), oidcHTTPTimeout)
			defer cancel()
			return o.fetchKeys(fctx)
		})
		select {
		case <-ctx.Done():
			return
		case r := <-ch:
			if r.Err != nil {
				wait = jwksRetry
			} else {
				wait = r.Val.(*jwkSet).maxAge
			}
		}
	}
}

// fetchKeys fetches and parses the JWKS and, if that worked, makes it the current set.
func (o *OIDC) fetchKeys(ctx context.Context) (*jwkSet, error) {
	o.fetches.Add(1)
	// Stamped when the fetch ends, not when it starts: until then refreshDue stays true,
	// so a token arriving meanwhile joins this fetch and gets its keys instead of being
	// refused for a kid the fetch is about to learn.
	defer func() { o.lastFetch.Store(int64(o.clock().Sub(o.epoch))) }()
	var raw struct {
		Keys []json.RawMessage `json:"keys"`
	}
	h, err := o.getJSON(ctx, o.jwksURI, &raw)
	if err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	ks := &jwkSet{byKID: make(map[string][]*jose.JSONWebKey), maxAge: maxAge(h.Get("Cache-Control"))}
	n := 0
	for _, r := range raw.Keys {
		// Each key is parsed alone: one key go-jose cannot read (a new curve, an "oct"
		// key) must not take the issuer's usable keys down with it.
		k := new(jose.JSONWebKey)
		if err := k.UnmarshalJSON(r); err != nil || !usableKey(k) {
			continue
		}
		n++
		ks.sole = []*jose.JSONWebKey{k}
		if k.KeyID != "" {
			ks.byKID[k.KeyID] = append(ks.byKID[k.KeyID], k)
		}
	}
	if n == 0 {
		return nil, errors.New("jwks: no usable signing key")
	}
	if n != 1 {
		ks.sole = nil
	}
	o.keys.Store(ks)
	return ks, nil
}

// usableKey reports whether k may verify signatures: a valid public key of a kind we
// accept, meant for signing.
func usableKey(k *jose.JSONWebKey) bool {
	if k.Use != "" && k.Use != "sig" || !k.Valid() || !k.IsPublic() {
		return false
	}
	switch pk := k.Key.(type) {
	case *rsa.PublicKey:
		return pk.N.BitLen() >= minRSABits
	case *ecdsa.PublicKey, ed25519.PublicKey:
		return true
	}
	return false
}

// maxAge reads max-age from a Cache-Control header, clamped to [1 min, 1 h]; 15 min
// if there is none.
func maxAge(cc string) time.Duration {
	for _, d := range strings.Split(cc, ",") {
		name, val, ok := strings.Cut(strings.TrimSpace(d), "=")
		if !ok || !strings.EqualFold(name, "max-age") {
			continue
		}
		s, err := strconv.ParseInt(strings.Trim(val, `"`), 10, 64)
		if err != nil || s < 0 {
			break
		}
		// Compared in seconds first: a huge max-age must not overflow a Duration.
		if s >= int64(jwksMaxMaxAge/time.Second) {
			return jwksMaxMaxAge
		}
		return max(time.Duration(s)*time.Second, jwksMinMaxAge)
	}
	return jwksDefaultMaxAge
}

// getJSON GETs u and decodes its JSON body into v. It returns the response header.
func (o *OIDC) getJSON(ctx context.Context, u string, v any) (http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := o.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: status %s", u, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, oidcMaxBody+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	if len(b) > oidcMaxBody {
		return nil, fmt.Errorf("GET %s: body larger than %d bytes", u, oidcMaxBody)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	return resp.Header, nil
}

// checkHTTPURL accepts only absolute http(s) URLs: anything else (file:, a relative
// path) has no business as an issuer or key location.
func checkHTTPURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if u.Scheme != "https" && u.Scheme != "http" || u.Host == "" {
		return fmt.Errorf("%q is not an http(s) URL", s)
	}
	return nil
}
