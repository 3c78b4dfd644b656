package httpapi_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/auth"
	"github.com/pulsebase/pulsebase/internal/httpapi"
	"github.com/pulsebase/pulsebase/internal/pbtest"
)

// revokingServer serves the API of s once more, with its own revocation checks, as another
// server process on the same store and broker would; it returns the new server's URL.
func revokingServer(t *testing.T, s *pbtest.Server) string {
	t.Helper()
	log := slog.New(slog.NewJSONHandler(s.Logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	rev, err := auth.NewRevocations(t.Context(), s.Broker.JetStream(), 1, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rev.Run(ctx) }()
	api := httpapi.New(httpapi.Deps{
		Issuer: s.Issuer, Users: s.Users, Consent: s.Consent, Vault: s.Vault, Store: s.Store,
		Metrics: s.Metrics, Revocations: rev, Ready: s.Broker.Ready, Log: log, Version: "test",
	})
	hs := httptest.NewServer(api.Handler())
	// Cleanups run last-registered first: this one before MustOpenServer's closes the broker.
	t.Cleanup(func() {
		hs.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("revocations: %v", err)
		}
	})
	return hs.URL
}

func TestRevokedDeviceIsRefusedByEveryServer(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	a, b := revokingServer(t, s), revokingServer(t, s)
	user := s.Token(t, "alice", pulsebase.RoleUser, "")
	watch := s.Token(t, "alice", pulsebase.RoleDevice, "watch-1")
	ring := s.Token(t, "alice", pulsebase.RoleDevice, "ring")
	bobsWatch := s.Token(t, "bob", pulsebase.RoleDevice, "watch-1")
	for _, url := range []string{a, b} {
		if r := pbtest.Do(t, "GET", url+"/v1/users/me", watch, "", nil); r.Status != 200 {
			t.Fatalf("the device before revocation: got %d %s, want 200", r.Status, r.Body)
		}
	}

	if r := pbtest.Do(t, "DELETE", a+"/v1/users/me/devices/watch-1", user, "", nil); r.Status != 204 || len(r.Body) != 0 {
		t.Fatalf("DELETE device: got %d %s, want 204 without a body", r.Status, r.Body)
	}
	// At once on the server that revoked, within a second or so on the other.
	r := pbtest.Do(t, "GET", a+"/v1/users/me", watch, "", nil)
	var p httpapi.Problem
	r.JSON(t, &p)
	if r.Status != 401 || p.Code != pulsebase.EUNAUTHORIZED || p.Detail != "the bearer token was revoked" {
		t.Errorf("the revoked device on the revoking server: got %d %s, want 401 revoked", r.Status, r.Body)
	}
	pbtest.WaitFor(t, 5*time.Second, "the other server to refuse the revoked device", func() bool {
		return pbtest.Do(t, "GET", b+"/v1/users/me", watch, "", nil).Status == 401
	})
	for _, c := range []struct{ name, token string }{{"the user", user}, {"another device", ring}, {"bob's device of that name", bobsWatch}} {
		for _, url := range []string{a, b} {
			if r := pbtest.Do(t, "GET", url+"/v1/users/me", c.token, "", nil); r.Status != 200 {
				t.Errorf("%s after the revocation: got %d %s, want 200", c.name, r.Status, r.Body)
			}
		}
	}
	// A token minted for the device in a later second is let in again.
	later, err := s.Issuer.Mint(auth.TokenRequest{Subject: "alice", Role: pulsebase.RoleDevice, Device: "watch-1", TTL: time.Hour},
		time.Now().Truncate(time.Second).Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if r := pbtest.Do(t, "GET", b+"/v1/users/me", later, "", nil); r.Status != 200 {
		t.Errorf("a token minted after the revocation: got %d %s, want 200", r.Status, r.Body)
	}
	m := pbtest.Do(t, "GET", a+"/metrics", "", "", nil)
	if !bytes.Contains(m.Body, []byte(`pulsebase_auth_failures_total{reason="revoked"}`)) {
		t.Error(`metrics lack pulsebase_auth_failures_total{reason="revoked"}`)
	}
}

func TestRevokeDeviceRefusals(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	url := revokingServer(t, s)
	user := s.Token(t, "alice", pulsebase.RoleUser, "")
	watch := s.Token(t, "alice", pulsebase.RoleDevice, "watch-1")
	for _, c := range []struct {
		name, token, id string
		want            int
	}{
		{"a device revoking itself", watch, "watch-1", 403},
		{"a device revoking another", watch, "ring", 403},
		{"no token", "", "watch-1", 401},
		{"a space", user, "watch%201", 400},
		{"a control character", user, "watch%09", 400},
		{"not ASCII", user, "montre-%C3%A9", 400},
		{"65 bytes", user, strings.Repeat("w", 65), 400},
		{"64 bytes", user, strings.Repeat("w", 64), 204},
		{"punctuation", user, "Watch_1.(a)~!", 204},
	} {
		r := pbtest.Do(t, "DELETE", url+"/v1/users/me/devices/"+c.id, c.token, "", nil)
		if r.Status != c.want {
			t.Errorf("%s: got %d %s, want %d", c.name, r.Status, r.Body, c.want)
		}
	}
	// The device was not revoked by its own refused attempts.
	if r := pbtest.Do(t, "GET", url+"/v1/users/me", watch, "", nil); r.Status != 200 {
		t.Errorf("the device after refused revocations: got %d %s, want 200", r.Status, r.Body)
	}
	// A server without revocation says so rather than pretending.
	plain := httptest.NewServer(httpapi.New(httpapi.Deps{
		Issuer: s.Issuer, Users: s.Users, Consent: s.Consent, Vault: s.Vault, Store: s.Store,
		Metrics: s.Metrics, Ready: s.Broker.Ready, Log: slog.New(slog.DiscardHandler), Version: "test",
	}).Handler())
	defer plain.Close()
	if r := pbtest.Do(t, "DELETE", plain.URL+"/v1/users/me/devices/watch-1", user, "", nil); r.Status != 503 {
		t.Errorf("without revocations: got %d %s, want 503", r.Status, r.Body)
	}
}
