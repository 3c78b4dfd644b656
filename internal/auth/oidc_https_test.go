package auth

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestOIDCRefusesPlainJWKSForHTTPSIssuer: keys fetched in plain text could be swapped on
// the way, so an issuer served over HTTPS must publish its JWKS over HTTPS.
func TestOIDCRefusesPlainJWKSForHTTPSIssuer(t *testing.T) {
	var srv *httptest.Server
	srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"issuer": srv.URL,
			"jwks_uri": "http://" + strings.TrimPrefix(srv.URL, "https://") + "/keys"})
	}))
	defer srv.Close()
	_, err := NewOIDC(t.Context(), OIDCConfig{Issuer: srv.URL, Audience: "api", Client: srv.Client()})
	if err == nil || !strings.Contains(err.Error(), "not https") {
		t.Errorf("an https issuer with an http jwks_uri: %v, want refused", err)
	}
}
