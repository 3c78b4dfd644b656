package httpapi_test

import (
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"strconv"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/httpapi"
	"github.com/pulsebase/pulsebase/internal/pbtest"
)

// limitedAPI serves the API on s's parts with the given rate limits.
func limitedAPI(t *testing.T, s *pbtest.Server, limits httpapi.RateLimits) string {
	t.Helper()
	api := httpapi.New(httpapi.Deps{
		Issuer: s.Issuer, Users: s.Users, Ingest: s.Ingest, Consent: s.Consent, Vault: s.Vault, Store: s.Store,
		Metrics: s.Metrics, JetStream: s.Broker.JetStream(), Partitions: s.Broker.Partitions(), Revocations: s.Revocations,
		Ready: s.Broker.Ready, Log: slog.New(slog.DiscardHandler), Version: "test", RateLimits: limits,
	})
	hs := httptest.NewServer(api.Handler())
	t.Cleanup(hs.Close)
	return hs.URL
}

// wantTooMany checks r is a 429 problem+json with code rate_limited and a Retry-After of
// at least a second.
func wantTooMany(t *testing.T, what string, r pbtest.Response) {
	t.Helper()
	var p httpapi.Problem
	retry, err := strconv.Atoi(r.Header.Get("Retry-After"))
	if r.Status != 429 || r.Header.Get("Content-Type") != "application/problem+json" || json.Unmarshal(r.Body, &p) != nil ||
		p.Code != pulsebase.ERATELIMITED || err != nil || retry < 1 {
		t.Errorf("%s: got %d %q (Retry-After %q), want 429 problem+json rate_limited with Retry-After ≥ 1", what, r.Status, r.Body, r.Header.Get("Retry-After"))
	}
}

func rateLimited(t *testing.T, s *pbtest.Server, scope string) float64 {
	t.Helper()
	var m dto.Metric
	if err := s.Metrics.RateLimited.WithLabelValues(scope).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestRateLimitPerAddress: an address gets its burst, then 429 with Retry-After — before
// its token is even looked at — while health and metrics stay reachable.
func TestRateLimitPerAddress(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	url := limitedAPI(t, s, httpapi.RateLimits{PerAddress: httpapi.Rate{PerSecond: 0.01, Burst: 3}})
	tok := s.UserToken(t, "ada") // through s's own API, which has no limits
	for i := range 3 {
		if r := pbtest.Do(t, "GET", url+"/v1/users/me", tok, "", nil); r.Status != 200 {
			t.Fatalf("request %d of the burst: %d %s", i, r.Status, r.Body)
		}
	}
	wantTooMany(t, "after the burst", pbtest.Do(t, "GET", url+"/v1/users/me", tok, "", nil))
	wantTooMany(t, "a bad token after the burst", pbtest.Do(t, "GET", url+"/v1/users/me", "not-a-token", "", nil))
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if r := pbtest.Do(t, "GET", url+path, "", "", nil); r.Status != 200 {
			t.Errorf("%s under the limit: %d", path, r.Status)
		}
	}
	if n := rateLimited(t, s, "address"); n != 2 {
		t.Errorf("pulsebase_http_rate_limited_total{scope=address} = %v, want 2", n)
	}
}

// TestRateLimitPerPrincipal: each token subject has its own bucket; a refused request
// does not spend a token.
func TestRateLimitPerPrincipal(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	url := limitedAPI(t, s, httpapi.RateLimits{PerPrincipal: httpapi.Rate{PerSecond: 0.01, Burst: 2}})
	ada, bo := s.UserToken(t, "ada"), s.UserToken(t, "bo")
	for i := range 2 {
		if r := pbtest.Do(t, "GET", url+"/v1/users/me", ada, "", nil); r.Status != 200 {
			t.Fatalf("ada's request %d: %d %s", i, r.Status, r.Body)
		}
	}
	wantTooMany(t, "ada after her burst", pbtest.Do(t, "GET", url+"/v1/users/me", ada, "", nil))
	wantTooMany(t, "ada again", pbtest.Do(t, "GET", url+"/v1/users/me", ada, "", nil))
	for i := range 2 {
		if r := pbtest.Do(t, "GET", url+"/v1/users/me", bo, "", nil); r.Status != 200 {
			t.Errorf("bo's request %d while ada is limited: %d", i, r.Status)
		}
	}
	// A device of ada's is a principal of its own.
	dev := s.Token(t, "ada", pulsebase.RoleDevice, "watch-1")
	if r := pbtest.Do(t, "GET", url+"/v1/users/me", dev, "", nil); r.Status != 200 {
		t.Errorf("ada's watch while ada is limited: %d %s", r.Status, r.Body)
	}
	// Unauthenticated requests are not counted against anyone's principal bucket.
	if r := pbtest.Do(t, "GET", url+"/v1/users/me", "", "", nil); r.Status != 401 {
		t.Errorf("without a token: %d", r.Status)
	}
	if n := rateLimited(t, s, "principal"); n != 2 {
		t.Errorf("pulsebase_http_rate_limited_total{scope=principal} = %v, want 2", n)
	}
}
