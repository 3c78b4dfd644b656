package httpapi_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/consent"
	"github.com/pulsebase/pulsebase/internal/pbtest"
)

type consentDoc struct {
	Collect  map[string]bool `json:"collect"`
	Purposes map[string]bool `json:"purposes"`
	Version  int             `json:"version"`
}

func TestNewUserConsentedToNothing(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	tok := s.Token(t, "alice", pulsebase.RoleUser, "")
	var c consentDoc
	r := pbtest.Do(t, "GET", s.URL+"/v1/users/me/consents", tok, "", nil)
	r.JSON(t, &c)
	if r.Status != 200 || c.Version != 0 || len(c.Collect) != 6 || len(c.Purposes) != 3 {
		t.Fatalf("got %d %+v, want version 0 listing 6 categories and 3 purposes", r.Status, c)
	}
	for k, v := range c.Collect {
		if v {
			t.Errorf("a new user consented to collecting %s", k)
		}
	}
	// And ingest refuses everything, storing nothing.
	r = pbtest.Do(t, "POST", s.URL+"/v1/samples", tok, jsonCT, batch(hr(1, "60")))
	var p struct {
		Code     string
		Rejected []pulsebase.Rejection
	}
	r.JSON(t, &p)
	if r.Status != 422 || p.Code != pulsebase.CodeNoConsent || len(p.Rejected) != 1 {
		t.Errorf("got %d %s, want 422 no_consent", r.Status, r.Body)
	}
	if n := streamMsgs(t, s); n != 0 {
		t.Errorf("got %d stored samples without consent, want 0", n)
	}
}

func TestConsentGatesCategoriesAndKeepsReceipts(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	tok := s.Token(t, "alice", pulsebase.RoleUser, "")
	pbtest.Grant(t, s.URL, tok, `{"collect":{"heart":true},"purposes":{"personalization":true}}`)

	steps := `{"type":"steps","value":10,"start":"` + time.Now().Add(-2*time.Minute).UTC().Format(time.RFC3339) +
		`","end":"` + time.Now().Add(-time.Minute).UTC().Format(time.RFC3339) + `","source":"phone"}`
	r := pbtest.Do(t, "POST", s.URL+"/v1/samples", tok, jsonCT, batch(hr(2, "61"), steps))
	var res struct {
		Accepted int
		Rejected []pulsebase.Rejection
	}
	r.JSON(t, &res)
	if r.Status != 202 || res.Accepted != 1 || len(res.Rejected) != 1 || res.Rejected[0].Index != 1 || res.Rejected[0].Code != "no_consent" {
		t.Fatalf("got %d %s, want heart accepted and steps rejected with no_consent", r.Status, r.Body)
	}

	// Revoke heart: the very next sample is refused.
	dev := s.Token(t, "alice", pulsebase.RoleUser, "")
	pbtest.Grant(t, s.URL, dev, `{"collect":{"activity":true},"purposes":{}}`)
	r = pbtest.Do(t, "POST", s.URL+"/v1/samples", tok, jsonCT, batch(hr(1, "62")))
	if r.Status != 422 {
		t.Errorf("heart after revocation: got %d %s, want 422 no_consent", r.Status, r.Body)
	}

	var h struct {
		History []struct {
			consentDoc
			Actor pulsebase.Actor `json:"actor"`
		} `json:"history"`
	}
	pbtest.Do(t, "GET", s.URL+"/v1/users/me/consents/history", tok, "", nil).JSON(t, &h)
	if len(h.History) != 2 {
		t.Fatalf("got %d receipts, want 2", len(h.History))
	}
	first, second := h.History[0], h.History[1]
	if first.Version != 1 || !first.Collect["heart"] || second.Version != 2 || second.Collect["heart"] || !second.Collect["activity"] {
		t.Errorf("got history %+v, want v1 heart then v2 activity only", h.History)
	}
	if first.Actor.TokenID == "" || first.Actor.TokenID == second.Actor.TokenID || second.Actor.Role != pulsebase.RoleUser {
		t.Errorf("got actors %+v and %+v, want two different token ids of role user", first.Actor, second.Actor)
	}
}

func TestConsentAPIRefusesOthersAndBadBodies(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	alice := s.Token(t, "alice", pulsebase.RoleUser, "")
	bob, err := s.Users.Resolve(context.Background(), "bob")
	if err != nil {
		t.Fatal(err)
	}
	device := s.Token(t, "alice", pulsebase.RoleDevice, "watch")
	for _, c := range []struct {
		name, method, path, token, body string
		status                          int
	}{
		{"another user's consents", "GET", "/v1/users/" + bob.ID + "/consents", alice, "", 404},
		{"another user's history", "GET", "/v1/users/" + bob.ID + "/consents/history", alice, "", 404},
		{"setting another user's consents", "PUT", "/v1/users/" + bob.ID + "/consents", alice, pbtest.AllConsent, 404},
		{"a device cannot decide consent", "PUT", "/v1/users/me/consents", device, pbtest.AllConsent, 403},
		{"unknown category", "PUT", "/v1/users/me/consents", alice, `{"collect":{"genome":true}}`, 400},
		{"unknown purpose", "PUT", "/v1/users/me/consents", alice, `{"purposes":{"advertising":true}}`, 400},
		{"unknown member", "PUT", "/v1/users/me/consents", alice, `{"colect":{"heart":true}}`, 400},
		{"not JSON", "PUT", "/v1/users/me/consents", alice, `{"collect":`, 400},
		{"no token", "GET", "/v1/users/me/consents", "", "", 401},
	} {
		t.Run(c.name, func(t *testing.T) {
			ct := ""
			if c.body != "" {
				ct = jsonCT
			}
			r := pbtest.Do(t, c.method, s.URL+c.path, c.token, ct, []byte(c.body))
			if r.Status != c.status {
				t.Errorf("got %d %s, want %d", r.Status, r.Body, c.status)
			}
		})
	}
	var c consentDoc
	pbtest.Do(t, "GET", s.URL+"/v1/users/me/consents", alice, "", nil).JSON(t, &c)
	if c.Version != 0 {
		t.Errorf("rejected PUTs changed the consent: got version %d, want 0", c.Version)
	}
}

// TestRevocationReachesOtherProcesses runs a second consent service on the same store and
// broker, as a second server process would, and checks that a revocation made through the
// first is seen by the second within a second.
func TestRevocationReachesOtherProcesses(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	ctx := context.Background()
	other, err := consent.New(ctx, s.Store, s.Vault, s.Broker.JetStream(), 1, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go other.Run(runCtx)

	tok := s.UserToken(t, "alice")
	alice, _ := s.Users.Resolve(ctx, "alice")
	pbtest.WaitFor(t, time.Second, "the other process to see the grant", func() bool {
		ok, err := other.MayCollect(ctx, alice.ID, pulsebase.CategoryHeart)
		return err == nil && ok
	})
	pbtest.Grant(t, s.URL, tok, `{"collect":{"sleep":true},"purposes":{"research":true}}`)
	pbtest.WaitFor(t, time.Second, "the other process to see the revocation", func() bool {
		ok, err := other.MayCollect(ctx, alice.ID, pulsebase.CategoryHeart)
		return err == nil && !ok
	})
	for _, c := range []struct {
		cat     pulsebase.Category
		purpose pulsebase.Purpose
		want    bool
	}{
		{pulsebase.CategorySleep, pulsebase.PurposeResearch, true},
		{pulsebase.CategorySleep, pulsebase.PurposePersonalization, false},
		{pulsebase.CategoryHeart, pulsebase.PurposeResearch, false},
		{"genome", pulsebase.PurposeResearch, false},
		{pulsebase.CategorySleep, "advertising", false},
	} {
		got, err := other.Allowed(ctx, alice.ID, c.cat, c.purpose)
		if err != nil || got != c.want {
			t.Errorf("Allowed(%s, %s): got %v %v, want %v", c.cat, c.purpose, got, err, c.want)
		}
	}
}

// BenchmarkConsentDecision measures a cached consent decision (issue [2] targets ≤ 200 ns).
func BenchmarkConsentDecision(b *testing.B) {
	s := pbtest.MustOpenServer(b)
	s.UserToken(b, "alice")
	ctx := context.Background()
	alice, _ := s.Users.Resolve(ctx, "alice")
	if ok, err := s.Consent.Allowed(ctx, alice.ID, pulsebase.CategoryHeart, pulsebase.PurposePersonalization); !ok || err != nil {
		b.Fatalf("got %v %v, want allowed", ok, err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s.Consent.Allowed(ctx, alice.ID, pulsebase.CategoryHeart, pulsebase.PurposePersonalization)
		}
	})
}
