package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/pulsebase/pulsebase"
)

const testAudience = "pulsebase-api"

// oidcFakeClock drives OIDC's refetch bound, so tests step over MinRefreshInterval instead
// of sleeping through it. Token lifetimes are still checked against the real clock.
type oidcFakeClock struct {
	base time.Time
	off  atomic.Int64
}

func newOIDCFakeClock() *oidcFakeClock { return &oidcFakeClock{base: time.Now()} }

func (c *oidcFakeClock) Now() time.Time { return c.base.Add(time.Duration(c.off.Load())) }

func (c *oidcFakeClock) Advance(d time.Duration) { c.off.Add(int64(d)) }

// ---------------------------------------------------------------------------------------
// A real OpenID provider: zitadel's op package over the example storage, with signing
// keys that the test can rotate.

// opKey is one RSA signing key of the provider.
type opKey struct {
	id   string
	priv *rsa.PrivateKey
}

func newOPKey(t testing.TB) *opKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	var id [8]byte
	rand.Read(id[:])
	return &opKey{id: base64.RawURLEncoding.EncodeToString(id[:]), priv: k}
}

// opSigningKey is opKey as op.SigningKey.
type opSigningKey struct{ k *opKey }

func (s opSigningKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (s opSigningKey) Key() any                                    { return s.k.priv }
func (s opSigningKey) ID() string                                  { return s.k.id }

// opPublicKey is opKey as op.Key, as the provider publishes it in its JWKS.
type opPublicKey struct{ k *opKey }

func (p opPublicKey) ID() string                         { return p.k.id }
func (p opPublicKey) Algorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (p opPublicKey) Use() string                        { return "sig" }
func (p opPublicKey) Key() any                           { return &p.k.priv.PublicKey }

// opStorage is the example storage with switchable signing keys, JWT access
// tokens for its client_credentials service user, our audience and a role claim.
type opStorage struct {
	*storage.Storage

	mu        sync.Mutex
	signing   *opKey
	published []*opKey
}

func (s *opStorage) SigningKey(context.Context) (op.SigningKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return opSigningKey{s.signing}, nil
}

func (s *opStorage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.RS256}, nil
}

func (s *opStorage) KeySet(context.Context) ([]op.Key, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]op.Key, 0, len(s.published))
	for _, k := range s.published {
		keys = append(keys, opPublicKey{k})
	}
	return keys, nil
}

// setKeys makes signing the signing key and publishes exactly published.
func (s *opStorage) setKeys(signing *opKey, published ...*opKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.signing, s.published = signing, published
}

// opJWTClient makes the example's service user get JWT access tokens (it has opaque ones).
type opJWTClient struct{ op.Client }

func (opJWTClient) AccessTokenType() op.AccessTokenType { return op.AccessTokenTypeJWT }

func (s *opStorage) ClientCredentials(ctx context.Context, id, secret string) (op.Client, error) {
	c, err := s.Storage.ClientCredentials(ctx, id, secret)
	if err != nil {
		return nil, err
	}
	return opJWTClient{c}, nil
}

// ClientCredentialsTokenRequest is the example's, but for our audience rather than the
// client's own id.
func (s *opStorage) ClientCredentialsTokenRequest(ctx context.Context, clientID string, scopes []string) (op.TokenRequest, error) {
	if _, err := s.Storage.ClientCredentialsTokenRequest(ctx, clientID, scopes); err != nil {
		return nil, err
	}
	return &oidc.JWTTokenRequest{Subject: clientID, Audience: []string{testAudience}, Scopes: scopes}, nil
}

// GetPrivateClaimsFromScopes puts the Pulsebase role into the JWT access token.
func (s *opStorage) GetPrivateClaimsFromScopes(context.Context, string, string, []string) (map[string]any, error) {
	return map[string]any{DefaultRoleClaim: "coach"}, nil
}

// startOP runs a zitadel OpenID provider on a loopback port; its issuer is its URL.
func startOP(t *testing.T, key *opKey) (issuer string, st *opStorage) {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	issuer = "http://" + srv.Listener.Addr().String()
	st = &opStorage{Storage: storage.NewStorage(storage.NewUserStore(issuer))}
	st.setKeys(key, key)
	provider, err := op.NewProvider(
		&op.Config{CryptoKey: sha256.Sum256([]byte("pulsebase test"))},
		st,
		op.StaticIssuer(issuer),
		op.WithAllowInsecure(), // the test server speaks plain http
	)
	if err != nil {
		t.Fatal(err)
	}
	srv.Config.Handler = provider
	srv.Start()
	t.Cleanup(srv.Close)
	return issuer, st
}

// opToken gets a JWT access token from the provider with the client_credentials grant
// of the example storage's service user, found through the provider's discovery.
func opToken(t *testing.T, issuer string) string {
	t.Helper()
	var disc struct {
		TokenEndpoint string `json:"token_endpoint"`
	}
	opGetJSON(t, http.DefaultClient, issuer+"/.well-known/openid-configuration", &disc)
	req, err := http.NewRequest(http.MethodPost, disc.TokenEndpoint,
		strings.NewReader(url.Values{"grant_type": {"client_credentials"}}.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("sid1", "verysecret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("token endpoint: %s: %s", resp.Status, body)
	}
	var tr struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
	}
	if err := json.Unmarshal(body, &tr); err != nil {
		t.Fatal(err)
	}
	if strings.Count(tr.AccessToken, ".") != 2 {
		t.Fatalf("access token is not a JWT: %q", tr.AccessToken)
	}
	return tr.AccessToken
}

func opGetJSON(t *testing.T, c *http.Client, u string, v any) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", u, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
}

// kidOf returns the kid in a token's header.
func kidOf(t *testing.T, token string) string {
	t.Helper()
	tok, _, err := jwt.NewParser().ParseUnverified(token, jwt.MapClaims{})
	if err != nil {
		t.Fatal(err)
	}
	kid, _ := tok.Header["kid"].(string)
	return kid
}

func TestOIDCVerifiesTokenOfRealProvider(t *testing.T) {
	issuer, _ := startOP(t, newOPKey(t))
	o, err := NewOIDC(t.Context(), OIDCConfig{Issuer: issuer, Audience: testAudience})
	if err != nil {
		t.Fatal(err)
	}
	if o.Issuer() != issuer || o.Fetches() != 1 {
		t.Fatalf("Issuer() = %q, Fetches() = %d; want %q, 1", o.Issuer(), o.Fetches(), issuer)
	}
	before := time.Now().Add(-time.Second)
	p, err := o.Verify(opToken(t, issuer))
	if err != nil {
		t.Fatal(err)
	}
	if want := ExternalSubject(issuer, "sid1"); p.Subject != want {
		t.Errorf("Subject = %q, want %q", p.Subject, want)
	}
	if p.Role != pulsebase.RoleCoach || p.TokenID == "" || p.Device != "" {
		t.Errorf("principal %+v: want role coach, a token id, no device", p)
	}
	if p.Issued.Before(before.Truncate(time.Second)) || !p.Expires.After(time.Now()) {
		t.Errorf("Issued %v, Expires %v: want iat about now and exp ahead", p.Issued, p.Expires)
	}
	if o.Fetches() != 1 {
		t.Errorf("a cached key made %d fetches, want 1", o.Fetches())
	}
}

func TestOIDCKeyRotationAtProvider(t *testing.T) {
	const interval = time.Minute
	oldKey, newKey := newOPKey(t), newOPKey(t)
	issuer, st := startOP(t, oldKey)
	o, err := NewOIDC(t.Context(), OIDCConfig{Issuer: issuer, Audience: testAudience, MinRefreshInterval: interval})
	if err != nil {
		t.Fatal(err)
	}
	clk := newOIDCFakeClock()
	o.clock, o.epoch = clk.Now, clk.Now()
	o.lastFetch.Store(0)

	oldTok := opToken(t, issuer)
	if _, err := o.Verify(oldTok); err != nil {
		t.Fatal(err)
	}

	// The provider rotates: it signs with the new key and still publishes the old one.
	st.setKeys(newKey, oldKey, newKey)
	newTok := opToken(t, issuer)
	if kidOf(t, newTok) != newKey.id {
		t.Fatal("the provider did not sign with the new key")
	}
	// Within the interval an unknown kid is refused without asking the provider.
	if _, err := o.Verify(newTok); !errors.Is(err, ErrInvalidToken) || !errors.Is(err, errUnknownKID) {
		t.Fatalf("new-key token within the interval: err = %v, want unknown kid", err)
	}
	if o.Fetches() != 1 {
		t.Fatalf("Fetches() = %d within the interval, want 1", o.Fetches())
	}
	// After the interval, 100 requests with the new key at once share one refetch and
	// are all accepted: none is refused while the fetch is under way.
	clk.Advance(interval)
	if n := concurrentVerify(o, newTok, 100); n != 100 {
		t.Fatalf("%d of 100 concurrent new-key tokens accepted after the interval, want all", n)
	}
	if o.Fetches() != 2 {
		t.Fatalf("Fetches() = %d after one bounded refetch, want 2", o.Fetches())
	}
	if _, err := o.Verify(oldTok); err != nil {
		t.Fatalf("old key still published, old token: %v", err)
	}

	// A burst of made-up kids within the interval asks the provider nothing.
	if n := unknownKIDBurst(t, o, issuer); n != 0 {
		t.Errorf("burst within the interval made %d fetches, want 0", n)
	}

	// The provider drops the old key. Once the interval is over, the next burst of
	// unknown kids makes exactly one fetch, shared by all, which learns of the removal.
	st.setKeys(newKey, newKey)
	clk.Advance(interval)
	if n := unknownKIDBurst(t, o, issuer); n != 1 {
		t.Errorf("burst after the interval made %d fetches, want 1", n)
	}
	if _, err := o.Verify(oldTok); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("old-key token after the key was removed: err = %v, want ErrInvalidToken", err)
	}
	if _, err := o.Verify(newTok); err != nil {
		t.Errorf("new-key token: %v", err)
	}
	if o.Fetches() != 3 {
		t.Errorf("Fetches() = %d at the end, want 3", o.Fetches())
	}
}

// concurrentVerify verifies tok n times at once and returns how often it was accepted.
func concurrentVerify(o *OIDC, tok string, n int) int {
	var wg sync.WaitGroup
	var ok atomic.Int32
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-start
			if _, err := o.Verify(tok); err == nil {
				ok.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	return int(ok.Load())
}

// unknownKIDBurst verifies 100 tokens with random kids at once and returns how many
// JWKS fetches they caused. Every one must be refused.
func unknownKIDBurst(t *testing.T, o *OIDC, issuer string) int64 {
	t.Helper()
	key := newOPKey(t)
	toks := make([]string, 100)
	for i := range toks {
		var kid [12]byte
		rand.Read(kid[:])
		toks[i] = signTok(t, jwt.SigningMethodRS256, key.priv, base64.RawURLEncoding.EncodeToString(kid[:]), oidcTokenClaims(issuer))
	}
	before := o.Fetches()
	var wg sync.WaitGroup
	var accepted atomic.Int32
	start := make(chan struct{})
	for _, tok := range toks {
		wg.Go(func() {
			<-start
			if _, err := o.Verify(tok); !errors.Is(err, ErrInvalidToken) {
				accepted.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	if accepted.Load() != 0 {
		t.Errorf("%d tokens with unknown kids were not refused", accepted.Load())
	}
	return o.Fetches() - before
}

// ---------------------------------------------------------------------------------------
// Tokens the test crafts itself, against a small discovery + JWKS server.

type oidcKeys struct {
	rsa *rsa.PrivateKey
	ec  *ecdsa.PrivateKey
	ed  ed25519.PrivateKey
}

// oidcTestKeys returns keys shared by the tests: RSA generation is slow enough to do once.
var oidcTestKeys = func() func(testing.TB) oidcKeys {
	var (
		once sync.Once
		k    oidcKeys
		err  error
	)
	return func(t testing.TB) oidcKeys {
		t.Helper()
		once.Do(func() {
			if k.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
				return
			}
			if k.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
				return
			}
			_, k.ed, err = ed25519.GenerateKey(rand.Reader)
		})
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
}()

// jwksServer serves a discovery document naming issuerPath's issuer (its URL plus
// issuerPath, or docIssuer if set) and a JWKS of jwks. It counts JWKS requests.
type jwksServer struct {
	*httptest.Server
	docIssuer atomic.Pointer[string] // nil: the server's own URL
	jwks      []jose.JSONWebKey
	hits      atomic.Int32
}

func startJWKS(t testing.TB, jwks ...jose.JSONWebKey) *jwksServer {
	t.Helper()
	s := &jwksServer{jwks: jwks}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Built from the request: the server's URL is not known when the handler is made.
		base := "http://" + r.Host
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			iss := base
			if p := s.docIssuer.Load(); p != nil {
				iss = *p
			}
			json.NewEncoder(w).Encode(map[string]string{"issuer": iss, "jwks_uri": base + "/jwks"})
		case "/jwks":
			s.hits.Add(1)
			w.Header().Set("Cache-Control", "public, max-age=300")
			json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: s.jwks})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func pubJWK(key crypto.PublicKey, kid, alg string) jose.JSONWebKey {
	return jose.JSONWebKey{Key: key, KeyID: kid, Algorithm: alg, Use: "sig"}
}

// standardJWKS publishes the test keys: RSA (kid rsa, no alg so RS* and PS* fit), EC
// P-256 (kid ec with alg ES256, and again as ec-noalg without), Ed25519 (kid ed), and
// an encryption key that must be ignored.
func standardJWKS(t testing.TB) []jose.JSONWebKey {
	k := oidcTestKeys(t)
	enc := pubJWK(&k.rsa.PublicKey, "enc", "")
	enc.Use = "enc"
	return []jose.JSONWebKey{
		pubJWK(&k.rsa.PublicKey, "rsa", ""),
		pubJWK(&k.ec.PublicKey, "ec", "ES256"),
		pubJWK(&k.ec.PublicKey, "ec-noalg", ""),
		pubJWK(k.ed.Public(), "ed", "EdDSA"),
		enc,
	}
}

func oidcTokenClaims(issuer string) jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{
		"iss": issuer,
		"sub": "alice",
		"aud": []string{"other-service", testAudience},
		"exp": now.Add(5 * time.Minute).Unix(),
		"nbf": now.Unix(),
		"iat": now.Unix(),
		"jti": "jti-1",
	}
}

func signTok(t testing.TB, m jwt.SigningMethod, key any, kid string, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newTestOIDC(t testing.TB, srv *jwksServer, mod func(*OIDCConfig)) *OIDC {
	t.Helper()
	cfg := OIDCConfig{Issuer: srv.URL, Audience: testAudience}
	if mod != nil {
		mod(&cfg)
	}
	o, err := NewOIDC(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func TestOIDCAccepts(t *testing.T) {
	k := oidcTestKeys(t)
	srv := startJWKS(t, standardJWKS(t)...)
	o := newTestOIDC(t, srv, nil)
	with := func(mod func(jwt.MapClaims)) jwt.MapClaims {
		c := oidcTokenClaims(srv.URL)
		mod(c)
		return c
	}
	now := time.Now()
	tests := []struct {
		name  string
		token string
		role  pulsebase.Role
	}{
		{"RS256", signTok(t, jwt.SigningMethodRS256, k.rsa, "rsa", oidcTokenClaims(srv.URL)), pulsebase.RoleUser},
		{"RS512", signTok(t, jwt.SigningMethodRS512, k.rsa, "rsa", oidcTokenClaims(srv.URL)), pulsebase.RoleUser},
		{"PS256", signTok(t, jwt.SigningMethodPS256, k.rsa, "rsa", oidcTokenClaims(srv.URL)), pulsebase.RoleUser},
		{"ES256", signTok(t, jwt.SigningMethodES256, k.ec, "ec", oidcTokenClaims(srv.URL)), pulsebase.RoleUser},
		{"EdDSA", signTok(t, jwt.SigningMethodEdDSA, k.ed, "ed", oidcTokenClaims(srv.URL)), pulsebase.RoleUser},
		{"expired within leeway", signTok(t, jwt.SigningMethodRS256, k.rsa, "rsa", with(func(c jwt.MapClaims) {
			c["exp"] = now.Add(-10 * time.Second).Unix()
		})), pulsebase.RoleUser},
		{"nbf and iat within leeway", signTok(t, jwt.SigningMethodRS256, k.rsa, "rsa", with(func(c jwt.MapClaims) {
			c["nbf"], c["iat"] = now.Add(10*time.Second).Unix(), now.Add(10*time.Second).Unix()
		})), pulsebase.RoleUser},
		{"single audience string", signTok(t, jwt.SigningMethodRS256, k.rsa, "rsa", with(func(c jwt.MapClaims) {
			c["aud"] = testAudience
		})), pulsebase.RoleUser},
		{"no iat, no nbf", signTok(t, jwt.SigningMethodRS256, k.rsa, "rsa", with(func(c jwt.MapClaims) {
			delete(c, "iat")
			delete(c, "nbf")
		})), pulsebase.RoleUser},
		{"role null", signTok(t, jwt.SigningMethodRS256, k.rsa, "rsa", with(func(c jwt.MapClaims) { c[DefaultRoleClaim] = nil })), pulsebase.RoleUser},
		{"role admin", signTok(t, jwt.SigningMethodRS256, k.rsa, "rsa", with(func(c jwt.MapClaims) { c[DefaultRoleClaim] = "admin" })), pulsebase.RoleAdmin},
		{"role analyst", signTok(t, jwt.SigningMethodES256, k.ec, "ec", with(func(c jwt.MapClaims) { c[DefaultRoleClaim] = "analyst" })), pulsebase.RoleAnalyst},
		{"role coach", signTok(t, jwt.SigningMethodEdDSA, k.ed, "ed", with(func(c jwt.MapClaims) { c[DefaultRoleClaim] = "coach" })), pulsebase.RoleCoach},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := o.Verify(tt.token)
			if err != nil {
				t.Fatal(err)
			}
			if p.Subject != ExternalSubject(srv.URL, "alice") || p.Role != tt.role || p.TokenID != "jti-1" {
				t.Errorf("principal %+v, want subject %q, role %s, jti-1", p, ExternalSubject(srv.URL, "alice"), tt.role)
			}
		})
	}
	if o.Fetches() != 1 || srv.hits.Load() != 1 {
		t.Errorf("Fetches() = %d, JWKS requests %d; want 1, 1", o.Fetches(), srv.hits.Load())
	}
}

func TestOIDCRejects(t *testing.T) {
	k := oidcTestKeys(t)
	srv := startJWKS(t, standardJWKS(t)...)
	o := newTestOIDC(t, srv, nil)
	valid := signTok(t, jwt.SigningMethodRS256, k.rsa, "rsa", oidcTokenClaims(srv.URL))
	with := func(mod func(jwt.MapClaims)) jwt.MapClaims {
		c := oidcTokenClaims(srv.URL)
		mod(c)
		return c
	}
	now := time.Now()

	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// A valid RS256 token whose header claims an algorithm nobody knows.
	unknownAlg := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS999","kid":"rsa","typ":"JWT"}`)) +
		valid[strings.Index(valid, "."):]
	numTok := jwt.NewWithClaims(jwt.SigningMethodRS256, oidcTokenClaims(srv.URL))
	numTok.Header["kid"] = 7
	numericKID, err := numTok.SignedString(k.rsa)
	if err != nil {
		t.Fatal(err)
	}
	none := signTok(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "rsa", oidcTokenClaims(srv.URL))
	der, err := x509.MarshalPKIXPublicKey(&k.rsa.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pemPub := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	// The payload of a valid token swapped for one claiming admin, signature kept.
	parts := strings.Split(valid, ".")
	forged, _ := json.Marshal(with(func(c jwt.MapClaims) { c[DefaultRoleClaim] = "admin" }))
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString(forged) + "." + parts[2]

	tests := []struct {
		name  string
		token string
		why   error // a more precise reason than ErrInvalidToken, if any
	}{
		{"expired beyond leeway", signTok(t, jwt.SigningMethodRS256, k.rsa, "rsa", with(func(c jwt.MapClaims) {
			c["exp"] = now.Add(-time.Minute).Unix()
		})), jwt.ErrTokenExpired},
		{"no exp", signTok(t, jwt.SigningMethodRS256, k.rsa, "rsa", with(func(c jwt.MapClaims) { delete(c, "exp") })), jwt.ErrTokenRequiredClaimMissing},
		{"nbf in the future", signTok(t, jwt.SigningMethodRS256, k.rsa, "rsa", with(func(c jwt.MapClaims) {
			c["nbf"] = now.Add(time.Minute).Unix()
		})), jwt.ErrTokenNotValidYet},
		{"iat in the future", signTok(t, jwt.SigningMethodRS256, k.rsa, "rsa", with(func(c jwt.MapClaims) {
			c["iat"] = now.Add(time.Minute).Unix()
		})), jwt.ErrTokenUsedBeforeIssued},
		{"wrong issuer", signTok(t, jwt.SigningMethodRS256, k.rsa, "rsa", with(func(c jwt.MapClaims) {
			c["iss"] = srv.URL + "/"
		})), jwt.ErrTokenInvalidIssuer},
		{"wrong audience", signTok(t, jwt.SigningMethodRS256, k.rsa, "rsa", with(func(c jwt.MapClaims) {
			c["aud"] = []string{"other-service"}
		})), jwt.ErrTokenInvalidAudience},
		{"alg none", none, errAlgNotAllowed},
		{"HS256 with the RSA public key as secret", signTok(t, jwt.SigningMethodHS256, pemPub, "rsa", oidcTokenClaims(srv.URL)), errAlgNotAllowed},
		{"HS256 with the RSA modulus as secret", signTok(t, jwt.SigningMethodHS256, k.rsa.N.Bytes(), "rsa", oidcTokenClaims(srv.URL)), errAlgNotAllowed},
		{"alg unknown", unknownAlg, errAlgNotAllowed},
		{"unknown kid", signTok(t, jwt.SigningMethodRS256, k.rsa, "nope", oidcTokenClaims(srv.URL)), errUnknownKID},
		{"kid of an encryption key", signTok(t, jwt.SigningMethodRS256, k.rsa, "enc", oidcTokenClaims(srv.URL)), errUnknownKID},
		{"kid not a string", numericKID, errUnknownKID},
		{"no kid with several keys", signTok(t, jwt.SigningMethodRS256, k.rsa, "", oidcTokenClaims(srv.URL)), errNoKID},
		{"tampered payload", tampered, jwt.ErrTokenSignatureInvalid},
		{"RS256 header naming the EC key", signTok(t, jwt.SigningMethodRS256, k.rsa, "ec-noalg", oidcTokenClaims(srv.URL)), errKeyMismatch},
		{"RS256 header naming the EC key with alg ES256", signTok(t, jwt.SigningMethodRS256, k.rsa, "ec", oidcTokenClaims(srv.URL)), errKeyMismatch},
		{"EdDSA header naming the RSA key", signTok(t, jwt.SigningMethodEdDSA, k.ed, "rsa", oidcTokenClaims(srv.URL)), errKeyMismatch},
		{"ES256 header naming the RSA key", signTok(t, jwt.SigningMethodES256, k.ec, "rsa", oidcTokenClaims(srv.URL)), errKeyMismatch},
		{"ES384 header naming a P-256 key", signTok(t, jwt.SigningMethodES384, p384, "ec-noalg", oidcTokenClaims(srv.URL)), errKeyMismatch},
		{"signed by another key", signTok(t, jwt.SigningMethodES256, newECKey(t), "ec", oidcTokenClaims(srv.URL)), jwt.ErrTokenSignatureInvalid},
		{"missing sub", signTok(t, jwt.SigningMethodRS256, k.rsa, "rsa", with(func(c jwt.MapClaims) { delete(c, "sub") })), errNoSubject},
		{"role service", signTok(t, jwt.SigningMethodRS256, k.rsa, "rsa", with(func(c jwt.MapClaims) { c[DefaultRoleClaim] = "service" })), errRoleNotAllowed},
		{"role device", signTok(t, jwt.SigningMethodRS256, k.rsa, "rsa", with(func(c jwt.MapClaims) { c[DefaultRoleClaim] = "device" })), errRoleNotAllowed},
		{"role unknown", signTok(t, jwt.SigningMethodRS256, k.rsa, "rsa", with(func(c jwt.MapClaims) { c[DefaultRoleClaim] = "root" })), errRoleNotAllowed},
		{"role not a string", signTok(t, jwt.SigningMethodRS256, k.rsa, "rsa", with(func(c jwt.MapClaims) { c[DefaultRoleClaim] = []string{"admin"} })), errRoleNotAllowed},
		{"not a JWT", "not-a-token", jwt.ErrTokenMalformed},
		{"empty", "", jwt.ErrTokenMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := o.Verify(tt.token)
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("err = %v (principal %+v), want ErrInvalidToken", err, p)
			}
			t.Logf("refused: %v", err)
			if tt.why != nil && !errors.Is(err, tt.why) {
				t.Errorf("err = %v, want it to wrap %v", err, tt.why)
			}
			if p != (pulsebase.Principal{}) {
				t.Errorf("refused token gave principal %+v", p)
			}
			// The reason must not quote the token: it goes to logs.
			if tt.token != "" && strings.Contains(err.Error(), tt.token) || strings.Contains(err.Error(), "none") {
				t.Errorf("error %q repeats the token", err)
			}
		})
	}
	if o.Fetches() != 1 {
		t.Errorf("Fetches() = %d, want 1: unknown kids within MinRefreshInterval must not refetch", o.Fetches())
	}
}

func newECKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestOIDCNoKIDWithSingleKey(t *testing.T) {
	k := oidcTestKeys(t)
	srv := startJWKS(t, pubJWK(&k.ec.PublicKey, "", ""))
	o := newTestOIDC(t, srv, nil)
	if _, err := o.Verify(signTok(t, jwt.SigningMethodES256, k.ec, "", oidcTokenClaims(srv.URL))); err != nil {
		t.Errorf("no kid, one key: %v", err)
	}
	if _, err := o.Verify(signTok(t, jwt.SigningMethodES256, k.ec, "ec", oidcTokenClaims(srv.URL))); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("a kid the JWKS lacks: err = %v, want ErrInvalidToken", err)
	}
}

func TestOIDCCustomRoleClaim(t *testing.T) {
	k := oidcTestKeys(t)
	srv := startJWKS(t, standardJWKS(t)...)
	o := newTestOIDC(t, srv, func(c *OIDCConfig) { c.RoleClaim = "https://pulsebase.example/role" })
	c := oidcTokenClaims(srv.URL)
	c["https://pulsebase.example/role"] = "analyst"
	c[DefaultRoleClaim] = "service" // not the configured claim: ignored
	p, err := o.Verify(signTok(t, jwt.SigningMethodRS256, k.rsa, "rsa", c))
	if err != nil {
		t.Fatal(err)
	}
	if p.Role != pulsebase.RoleAnalyst {
		t.Errorf("Role = %s, want analyst", p.Role)
	}
}

func TestOIDCLeewayConfig(t *testing.T) {
	k := oidcTestKeys(t)
	srv := startJWKS(t, standardJWKS(t)...)
	o := newTestOIDC(t, srv, func(c *OIDCConfig) { c.Leeway = 2 * time.Minute })
	c := oidcTokenClaims(srv.URL)
	c["exp"] = time.Now().Add(-time.Minute).Unix()
	if _, err := o.Verify(signTok(t, jwt.SigningMethodRS256, k.rsa, "rsa", c)); err != nil {
		t.Errorf("expired a minute ago with 2 min leeway: %v", err)
	}
}

func TestOIDCDiscoveryIssuerMismatch(t *testing.T) {
	srv := startJWKS(t, standardJWKS(t)...)
	for _, iss := range []string{"https://idp.example", "http://" + srv.Listener.Addr().String() + "/", "HTTP://" + srv.Listener.Addr().String()} {
		srv.docIssuer.Store(&iss)
		if _, err := NewOIDC(t.Context(), OIDCConfig{Issuer: srv.URL, Audience: testAudience}); err == nil {
			t.Errorf("discovery naming %q accepted for %q", iss, srv.URL)
		}
	}
	if srv.hits.Load() != 0 {
		t.Errorf("JWKS fetched %d times for a mismatching issuer", srv.hits.Load())
	}
}

func TestOIDCNewErrors(t *testing.T) {
	big := strings.Repeat(" ", oidcMaxBody) + "{}"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		base := "http://" + r.Host
		doc := func(jwks string) {
			fmt.Fprintf(w, `{"issuer":%q,"jwks_uri":%q}`, base+"/"+strings.Split(r.URL.Path, "/")[1], jwks)
		}
		switch r.URL.Path {
		case "/jwks500/.well-known/openid-configuration":
			doc(base + "/err")
		case "/jwksbig/.well-known/openid-configuration":
			doc(base + "/big")
		case "/jwksfile/.well-known/openid-configuration":
			doc("file:///etc/passwd")
		case "/nokeys/.well-known/openid-configuration":
			doc(base + "/empty")
		case "/bigdoc/.well-known/openid-configuration":
			io.WriteString(w, big)
		case "/big":
			io.WriteString(w, big)
		case "/empty":
			io.WriteString(w, `{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"hs"}]}`)
		default:
			http.Error(w, "nope", http.StatusInternalServerError)
		}
	}))
	defer srv.Close()
	for _, tt := range []struct{ name, issuer, want string }{
		{"discovery status", srv.URL + "/down", "status"},
		{"JWKS status", srv.URL + "/jwks500", "status"},
		{"JWKS too big", srv.URL + "/jwksbig", "larger"},
		{"discovery too big", srv.URL + "/bigdoc", "larger"},
		{"jwks_uri not http", srv.URL + "/jwksfile", "http(s)"},
		{"no signing keys", srv.URL + "/nokeys", "no usable signing key"},
		{"issuer not http", "file:///etc", "http(s)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewOIDC(t.Context(), OIDCConfig{Issuer: tt.issuer, Audience: testAudience})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one saying %q", err, tt.want)
			}
		})
	}
	if _, err := NewOIDC(t.Context(), OIDCConfig{Issuer: srv.URL}); err == nil {
		t.Error("no audience accepted")
	}
}

// TestOIDCSkipsBadKeys: a key go-jose cannot read, a short RSA key, a private key and an
// encryption key are left out, and the rest of the set still works.
func TestOIDCSkipsBadKeys(t *testing.T) {
	k := oidcTestKeys(t)
	short, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	good, _ := json.Marshal(pubJWK(&k.ec.PublicKey, "ec", "ES256"))
	weak, _ := json.Marshal(pubJWK(&short.PublicKey, "weak", "RS256"))
	private, _ := json.Marshal(pubJWK(k.ed, "priv", "EdDSA"))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		base := "http://" + r.Host
		if r.URL.Path == "/jwks" {
			fmt.Fprintf(w, `{"keys":[{"kty":"XYZ","kid":"odd"},%s,%s,%s]}`, weak, private, good)
			return
		}
		fmt.Fprintf(w, `{"issuer":%q,"jwks_uri":%q}`, base, base+"/jwks")
	}))
	defer srv.Close()
	o, err := NewOIDC(t.Context(), OIDCConfig{Issuer: srv.URL, Audience: testAudience})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.Verify(signTok(t, jwt.SigningMethodES256, k.ec, "ec", oidcTokenClaims(srv.URL))); err != nil {
		t.Errorf("good key: %v", err)
	}
	if _, err := o.Verify(signTok(t, jwt.SigningMethodRS256, short, "weak", oidcTokenClaims(srv.URL))); !errors.Is(err, errUnknownKID) {
		t.Errorf("1024-bit RSA key: err = %v, want unknown kid", err)
	}
	if _, err := o.Verify(signTok(t, jwt.SigningMethodEdDSA, k.ed, "priv", oidcTokenClaims(srv.URL))); !errors.Is(err, errUnknownKID) {
		t.Errorf("published private key: err = %v, want unknown kid", err)
	}
	// One usable key, so a token without kid may use it.
	if _, err := o.Verify(signTok(t, jwt.SigningMethodES256, k.ec, "", oidcTokenClaims(srv.URL))); err != nil {
		t.Errorf("no kid, one usable key: %v", err)
	}
}

func TestOIDCMaxAge(t *testing.T) {
	for _, tt := range []struct {
		cc   string
		want time.Duration
	}{
		{"", 15 * time.Minute},
		{"no-store", 15 * time.Minute},
		{"public, max-age=300", 5 * time.Minute},
		{"MAX-AGE=600, must-revalidate", 10 * time.Minute},
		{"max-age=5", time.Minute},
		{"max-age=0", time.Minute},
		{"max-age=86400", time.Hour},
		{"max-age=99999999999999999", time.Hour},
		{"max-age=-3", 15 * time.Minute},
		{"max-age=abc", 15 * time.Minute},
	} {
		if got := maxAge(tt.cc); got != tt.want {
			t.Errorf("maxAge(%q) = %s, want %s", tt.cc, got, tt.want)
		}
	}
}

func TestOIDCRunStops(t *testing.T) {
	srv := startJWKS(t, standardJWKS(t)...)
	o := newTestOIDC(t, srv, nil)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { o.Run(ctx); close(done) }()
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context was done")
	}
}

func TestExternalSubject(t *testing.T) {
	a, b := ExternalSubject("https://a.example", "42"), ExternalSubject("https://b.example", "42")
	if a == b || a != "https://a.example#42" {
		t.Errorf("ExternalSubject: %q, %q", a, b)
	}
}

func BenchmarkOIDCVerify(b *testing.B) {
	k := oidcTestKeys(b)
	srv := startJWKS(b, standardJWKS(b)...)
	o := newTestOIDC(b, srv, nil)
	for _, bc := range []struct {
		name string
		tok  string
	}{
		{"RS256-2048", signTok(b, jwt.SigningMethodRS256, k.rsa, "rsa", oidcTokenClaims(srv.URL))},
		{"ES256", signTok(b, jwt.SigningMethodES256, k.ec, "ec", oidcTokenClaims(srv.URL))},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := o.Verify(bc.tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
