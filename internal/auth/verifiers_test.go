package auth

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pulsebase/pulsebase"
)

// issCountingVerifier answers every token as its name and counts the calls.
type issCountingVerifier struct {
	name  string
	calls atomic.Int32
}

func (c *issCountingVerifier) Verify(string) (pulsebase.Principal, error) {
	c.calls.Add(1)
	return pulsebase.Principal{Subject: c.name, Role: pulsebase.RoleUser}, nil
}

// unsigned is a compact JWS whose payload is exactly payload (not verified by anyone).
func unsigned(payload string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"EdDSA","typ":"JWT"}`)) + "." + enc([]byte(payload)) + "." + enc([]byte("sig"))
}

func TestVerifiersDispatchByIssuer(t *testing.T) {
	a, b := &issCountingVerifier{name: "a"}, &issCountingVerifier{name: "b"}
	v := &Verifiers{byIssuer: map[string]Verifier{"https://a.example": a, "https://b.example": b}}
	for _, c := range []struct {
		iss        string
		want       string
		wantA, wnB int32
	}{
		{"https://a.example", "a", 1, 0},
		{"https://b.example", "b", 1, 1},
		{"https://a.example", "a", 2, 1},
	} {
		p, err := v.Verify(unsigned(`{"iss":"` + c.iss + `","sub":"x"}`))
		if err != nil || p.Subject != c.want {
			t.Errorf("iss %s: %+v %v, want verifier %s", c.iss, p, err, c.want)
		}
		if a.calls.Load() != c.wantA || b.calls.Load() != c.wnB {
			t.Errorf("iss %s: calls a=%d b=%d, want %d %d", c.iss, a.calls.Load(), b.calls.Load(), c.wantA, c.wnB)
		}
	}
}

func TestVerifiersBuiltinAndOIDC(t *testing.T) {
	k := oidcTestKeys(t)
	srv := startJWKS(t, standardJWKS(t)...)
	o := newTestOIDC(t, srv, nil)
	i := testIssuer(t)
	v := NewVerifiers(i, o)

	builtin := mintUser(t, i, time.Now())
	if p, err := v.Verify(builtin); err != nil || p.Subject != "alice" {
		t.Errorf("a built-in token: %+v %v", p, err)
	}
	external := signTok(t, jwt.SigningMethodRS256, k.rsa, "rsa", oidcTokenClaims(srv.URL))
	if p, err := v.Verify(external); err != nil || p.Subject != ExternalSubject(srv.URL, "alice") {
		t.Errorf("an OIDC token: %+v %v", p, err)
	}

	// A token goes to the verifier its iss names, which checks everything: the provider's
	// key does not sign for the built-in issuer, nor the built-in key for the provider.
	claims := oidcTokenClaims(srv.URL)
	claims["iss"] = DefaultIssuer
	claims["role"] = "admin"
	claims["aud"] = []string{DefaultAudience}
	for name, tok := range map[string]string{
		"provider's EdDSA key naming the built-in issuer": signTok(t, jwt.SigningMethodEdDSA, k.ed, "ed", claims),
		"provider's RSA key naming the built-in issuer":   signTok(t, jwt.SigningMethodRS256, k.rsa, "rsa", claims),
		"built-in key naming the provider": func() string {
			c := oidcTokenClaims(srv.URL)
			return signTok(t, jwt.SigningMethodEdDSA, i.ring.Load().key, i.KeyID(), c)
		}(),
	} {
		if p, err := v.Verify(tok); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%s: got %+v %v, want ErrInvalidToken", name, p, err)
		}
	}
	// Without a built-in issuer, its tokens name no configured issuer.
	if _, err := NewVerifiers(nil, o).Verify(builtin); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("a built-in token with only OIDC configured: %v", err)
	}
}

func TestVerifiersRefuseUnknownIssuerUntouched(t *testing.T) {
	srv := startJWKS(t, standardJWKS(t)...)
	o := newTestOIDC(t, srv, nil)
	i := testIssuer(t)
	a := &issCountingVerifier{name: "a"}
	v := NewVerifiers(i, o)
	v.byIssuer["https://a.example"] = a
	fetches := o.Fetches()
	_, forger, _ := ed25519.GenerateKey(nil)
	now := time.Now()
	signed := func(iss any) string {
		c := map[string]any{"sub": "alice", "aud": []string{DefaultAudience}, "role": "admin",
			"exp": now.Add(time.Hour).Unix(), "iat": now.Unix()}
		if iss != nil {
			c["iss"] = iss
		}
		// A made-up kid: had the built-in issuer been asked, it would have reloaded.
		return sign(t, map[string]any{"alg": "EdDSA", "typ": "JWT", "kid": "made-up"}, c,
			func(s string) []byte { return ed25519.Sign(forger, []byte(s)) })
	}
	for name, tok := range map[string]string{
		"unknown issuer":            signed("https://evil.example"),
		"issuer with a slash":       signed(srv.URL + "/"),
		"issuer differing in case":  signed(strings.ToUpper(DefaultIssuer)),
		"no issuer":                 signed(nil),
		"empty issuer":              signed(""),
		"issuer not a string":       signed(42),
		"issuer a list":             signed([]string{DefaultIssuer}),
		"unsigned, unknown issuer":  unsigned(`{"iss":"https://evil.example"}`),
		"unsigned, null issuer":     unsigned(`{"iss":null}`),
		"issuer in the header only": sign(t, map[string]any{"alg": "EdDSA", "iss": DefaultIssuer}, map[string]any{"sub": "x"}, nil),
	} {
		if p, err := v.Verify(tok); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%s: got %+v %v, want ErrInvalidToken", name, p, err)
		}
	}
	i.mu.Lock()
	reloaded := i.lastReload
	i.mu.Unlock()
	if a.calls.Load() != 0 || o.Fetches() != fetches || srv.hits.Load() != 1 || !reloaded.IsZero() {
		t.Errorf("a verifier was consulted: calls %d, OIDC fetches %d→%d (JWKS hits %d), built-in reloaded at %v",
			a.calls.Load(), fetches, o.Fetches(), srv.hits.Load(), reloaded)
	}
}

func TestVerifiersRefuseGarbage(t *testing.T) {
	a := &issCountingVerifier{name: "a"}
	builtin := &issCountingVerifier{name: "builtin"}
	v := &Verifiers{byIssuer: map[string]Verifier{"https://a.example": a, DefaultIssuer: builtin}}
	enc := base64.RawURLEncoding.EncodeToString
	hdr := enc([]byte(`{"alg":"EdDSA"}`))
	known := `{"iss":"` + DefaultIssuer + `","pad":"`
	big := known + strings.Repeat("x", 20<<10) + `"}` // 20 KB, naming a known issuer
	for name, tok := range map[string]string{
		"empty":                       "",
		"no dots":                     "eyJhbGciOiJFZERTQSJ9",
		"one dot":                     hdr + "." + enc([]byte(`{"iss":"`+DefaultIssuer+`"}`)),
		"dots only":                   "..",
		"bad base64":                  hdr + ".!!!not-base64!!!.sig",
		"standard base64 with pad":    hdr + "." + base64.StdEncoding.EncodeToString([]byte(`{"iss":"`+DefaultIssuer+`"}`)) + "=.sig",
		"non-JSON payload":            hdr + "." + enc([]byte("iss=pulsebase")) + ".sig",
		"JSON array payload":          hdr + "." + enc([]byte(`["`+DefaultIssuer+`"]`)) + ".sig",
		"JSON string payload":         hdr + "." + enc([]byte(`"`+DefaultIssuer+`"`)) + ".sig",
		"truncated JSON":              hdr + "." + enc([]byte(`{"iss":"`+DefaultIssuer)) + ".sig",
		"20 KB payload":               hdr + "." + enc([]byte(big)) + ".sig",
		"20 KB payload, no signature": hdr + "." + enc([]byte(big)),
		"bearer prefix":               "Bearer x.y.z",
		"whitespace":                  " \t\n",
	} {
		if p, err := v.Verify(tok); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%s: got %+v %v, want ErrInvalidToken", name, p, err)
		}
	}
	if a.calls.Load() != 0 || builtin.calls.Load() != 0 {
		t.Errorf("garbage reached a verifier: a %d, built-in %d", a.calls.Load(), builtin.calls.Load())
	}
	// Just under the bound, a payload naming a known issuer is dispatched.
	fits := known + strings.Repeat("x", (16<<10)*3/4-len(known)-8) + `"}`
	if tok := unsigned(fits); len(strings.Split(tok, ".")[1]) > 16<<10 {
		t.Fatalf("the payload is %d bytes, meant to fit", len(strings.Split(tok, ".")[1]))
	} else if _, err := v.Verify(tok); err != nil || builtin.calls.Load() != 1 {
		t.Errorf("a 12 KB payload: %v, built-in called %d times", err, builtin.calls.Load())
	}
}
