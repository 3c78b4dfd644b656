package main

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"regexp"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pulsebase/pulsebase/internal/pbtest"
)

// idp is a minimal OpenID provider for the serve test: discovery and a JWKS over HTTP,
// and RS256 tokens. (internal/auth tests the verifier against a full provider built with
// zitadel/oidc; this checks that serve wires --oidc-issuer in.)
type idp struct {
	*httptest.Server
	key *rsa.PrivateKey
}

func newIDP(t *testing.T) *idp {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p := &idp{key: key}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"issuer": p.URL, "jwks_uri": p.URL + "/keys"})
	})
	mux.HandleFunc("/keys", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]string{{
			"kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256",
			"n": base64.RawURLEncoding.EncodeToString(key.N.Bytes()),
			"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(key.E)).Bytes()),
		}}})
	})
	p.Server = httptest.NewServer(mux)
	t.Cleanup(p.Close)
	return p
}

func (p *idp) token(t *testing.T, sub, aud string, extra map[string]any) string {
	t.Helper()
	now := time.Now()
	c := jwt.MapClaims{"iss": p.URL, "sub": sub, "aud": aud, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	for k, v := range extra {
		c[k] = v
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, c)
	tok.Header["kid"] = "k1"
	s, err := tok.SignedString(p.key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var deviceListening = regexp.MustCompile(`devices \(mutual TLS\) on (https://\S+)`)

// TestServeExternalIdentityAndDeviceListener: serve accepts tokens of an external OpenID
// provider next to its own, maps their subjects to pseudonymous users, and serves enrolled
// devices on the mutual-TLS listener.
func TestServeExternalIdentityAndDeviceListener(t *testing.T) {
	dir := t.TempDir()
	p := newIDP(t)
	srv := startServer(t, dir, "--oidc-issuer", p.URL, "--oidc-audience", "pulsebase-api", "--device-mtls-addr", "127.0.0.1:0")

	ext := p.token(t, "user-42", "pulsebase-api", nil)
	var a, b struct{ ID string }
	if r := pbtest.Do(t, "GET", srv.url+"/v1/users/me", ext, "", nil); r.Status != 200 {
		t.Fatalf("external token: %d %s", r.Status, r.Body)
	} else {
		r.JSON(t, &a)
	}
	pbtest.Do(t, "GET", srv.url+"/v1/users/me", p.token(t, "user-42", "pulsebase-api", nil), "", nil).JSON(t, &b)
	if a.ID == "" || a.ID != b.ID {
		t.Errorf("one external subject gave users %q and %q", a.ID, b.ID)
	}
	// The built-in user of the same name is someone else: subjects are per issuer.
	var builtin struct{ ID string }
	pbtest.Do(t, "GET", srv.url+"/v1/users/me", mintToken(t, dir, "--user", "user-42"), "", nil).JSON(t, &builtin)
	if builtin.ID == "" || builtin.ID == a.ID {
		t.Errorf("built-in user-42 %q, external user-42 %q: want two users", builtin.ID, a.ID)
	}
	for name, tok := range map[string]string{
		"wrong audience":   p.token(t, "user-42", "another-api", nil),
		"service role":     p.token(t, "user-42", "pulsebase-api", map[string]any{"pulsebase_role": "service"}),
		"unknown issuer":   (&idp{Server: &httptest.Server{URL: "https://other.example"}, key: p.key}).token(t, "x", "pulsebase-api", nil),
		"expired long ago": p.token(t, "user-42", "pulsebase-api", map[string]any{"exp": time.Now().Add(-time.Hour).Unix()}),
	} {
		if r := pbtest.Do(t, "GET", srv.url+"/v1/users/me", tok, "", nil); r.Status != 401 {
			t.Errorf("%s: %d %s, want 401", name, r.Status, r.Body)
		}
	}
	// An external coach token carries its role.
	coach := p.token(t, "coach-1", "pulsebase-api", map[string]any{"pulsebase_role": "coach"})
	if r := pbtest.Do(t, "GET", srv.url+"/v1/users/"+a.ID+"/series/steps", coach, "", nil); r.Status != 404 {
		t.Errorf("an external coach without a grant: %d, want 404", r.Status)
	}

	// The device listener.
	m := deviceListening.FindStringSubmatch(srv.stdout.String())
	if m == nil {
		t.Fatalf("no device listener in %q", srv.stdout.String())
	}
	pbtest.Grant(t, srv.url, ext, pbtest.AllConsent)
	s := &pbtest.Server{URL: srv.url, DeviceURL: m[1], Logs: srv.stdout}
	watch := s.EnrollDevice(t, ext, "watch-1")
	if watch.Creds.DeviceURL != m[1] {
		t.Errorf("enrollment names device_url %q, the listener is %s", watch.Creds.DeviceURL, m[1])
	}
	body := []byte(`{"samples":[{"type":"heart_rate","value":61,"start":"` + time.Now().Add(-time.Minute).UTC().Format(time.RFC3339) + `","source":"watch-1"}]}`)
	if r := pbtest.DoWith(t, watch.Client, "POST", watch.URL+"/v1/samples", watch.Creds.AccessToken, "application/json", body); r.Status != 202 {
		t.Errorf("enrolled device ingesting over mutual TLS: %d %s", r.Status, r.Body)
	}
	if r := pbtest.Do(t, "POST", srv.url+"/v1/samples", watch.Creds.AccessToken, "application/json", body); r.Status != 401 {
		t.Errorf("the device's bound token on the plain listener: %d, want 401", r.Status)
	}
	if err := srv.stop(); err != nil {
		t.Fatal(err)
	}
}
