package httpapi_test

import (
	"context"
	"errors"
	"testing"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/broker"
	"github.com/pulsebase/pulsebase/internal/ingest"
	"github.com/pulsebase/pulsebase/internal/pbtest"
	"github.com/pulsebase/pulsebase/internal/vault"
)

// TestDestroyUserKeyShredsOnlyThatUser crypto-shreds alice and checks that none of her
// ciphertext in the stream or the store opens any more — in this process or a fresh one —
// while bob's data is untouched.
func TestDestroyUserKeyShredsOnlyThatUser(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	ctx := context.Background()
	aliceTok, bobTok := s.UserToken(t, "alice"), s.UserToken(t, "bob")
	for _, tok := range []string{aliceTok, bobTok} {
		if r := pbtest.Do(t, "POST", s.URL+"/v1/samples", tok, jsonCT, batch(hr(3, "61"), hr(2, "62"), hr(1, "63"))); r.Status != 202 {
			t.Fatalf("got %d, want 202", r.Status)
		}
	}
	alice, _ := s.Users.Resolve(ctx, "alice")
	bob, _ := s.Users.Resolve(ctx, "bob")

	if err := s.Vault.DestroyUserKey(ctx, alice.ID, "test"); err != nil {
		t.Fatal(err)
	}

	fresh, err := vault.Open(ctx, s.Store, vault.Config{DataDir: s.DataDir})
	if err != nil {
		t.Fatal(err)
	}
	bobKeys, err := fresh.UserKeys(ctx, bob.ID)
	if err != nil {
		t.Fatal(err)
	}
	// Stream: every message of alice is unreadable, every message of bob opens.
	st, err := s.Broker.JetStream().Stream(ctx, broker.StreamSamples)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := st.Info(ctx)
	var aliceMsgs, bobMsgs int
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		_, user, _ := broker.ParseSampleSubject(m.Subject)
		id := m.Header.Get("Nats-Msg-Id")
		switch user {
		case alice.ID:
			aliceMsgs++
			for name, v := range map[string]*vault.Vault{"server": s.Vault, "fresh process": fresh} {
				if _, err := v.UserKeys(ctx, alice.ID); pulsebase.ErrorCode(err) != pulsebase.EERASED {
					t.Errorf("%s: alice's keys: got %v, want erased", name, err)
				}
			}
			if _, err := ingest.OpenSample(bobKeys, id, m.Data); !errors.Is(err, vault.ErrOpen) {
				t.Errorf("alice's sample opened under bob's keys: %v", err)
			}
		case bob.ID:
			bobMsgs++
			if _, err := ingest.OpenSample(bobKeys, id, m.Data); err != nil {
				t.Errorf("bob's sample no longer opens: %v", err)
			}
		}
	}
	if aliceMsgs != 3 || bobMsgs != 3 {
		t.Fatalf("got %d and %d messages, want 3 each", aliceMsgs, bobMsgs)
	}
	// Store: alice's consent receipts are unreadable through the API; bob's are fine.
	if r := pbtest.Do(t, "GET", s.URL+"/v1/users/me/consents/history", aliceTok, "", nil); r.Status != 410 {
		t.Errorf("alice's consent history: got %d %s, want 410 erased", r.Status, r.Body)
	}
	if r := pbtest.Do(t, "POST", s.URL+"/v1/samples", aliceTok, jsonCT, batch(hr(1, "64"))); r.Status != 410 {
		t.Errorf("alice posting after erasure: got %d %s, want 410 erased", r.Status, r.Body)
	}
	if r := pbtest.Do(t, "GET", s.URL+"/v1/users/me/consents/history", bobTok, "", nil); r.Status != 200 {
		t.Errorf("bob's consent history: got %d, want 200", r.Status)
	}
	recs, err := s.Store.ConsentHistory(ctx, alice.ID)
	if err != nil || len(recs) == 0 {
		t.Fatalf("got %d records, %v; want alice's ciphertext still stored (shredded, not deleted)", len(recs), err)
	}
	if _, err := s.Consent.History(ctx, alice.ID); pulsebase.ErrorCode(err) != pulsebase.EERASED {
		t.Errorf("alice's consent records: got %v, want erased", err)
	}
}
