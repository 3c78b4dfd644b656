package auth_test

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/auth"
	"github.com/pulsebase/pulsebase/internal/broker"
	"github.com/pulsebase/pulsebase/internal/pbtest"
)

// openBroker starts an embedded JetStream broker in a temp dir, closed at test cleanup.
func openBroker(t *testing.T) jetstream.JetStream {
	t.Helper()
	brk, err := broker.Open(t.Context(), broker.Config{DataDir: t.TempDir(), Partitions: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { brk.Close() })
	return brk.JetStream()
}

// newRevocations opens revocations on js as one server process would, running its watch
// until test cleanup.
func newRevocations(t *testing.T, js jetstream.JetStream, clock func() time.Time) *auth.Revocations {
	t.Helper()
	r, err := auth.NewRevocations(t.Context(), js, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if clock != nil {
		auth.SetClock(r, clock)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return r
}

func device(subject, dev string, issued time.Time) pulsebase.Principal {
	return pulsebase.Principal{Subject: subject, Role: pulsebase.RoleDevice, Device: dev, TokenID: "id-" + issued.String(), Issued: issued, Expires: issued.Add(time.Hour)}
}

func TestRevocationReachesAnotherProcess(t *testing.T) {
	js := openBroker(t)
	a := newRevocations(t, js, nil)
	b := newRevocations(t, js, nil)
	old := device("alice", "watch-1", time.Now().Add(-time.Minute))

	if a.Revoked(old) || b.Revoked(old) {
		t.Fatal("a token is revoked before any revocation")
	}
	if err := a.RevokeDevice(t.Context(), "alice", "watch-1"); err != nil {
		t.Fatal(err)
	}
	if !a.Revoked(old) {
		t.Error("the revoking process still accepts the device's token")
	}
	pbtest.WaitFor(t, 5*time.Second, "the other process to see the device revocation", func() bool { return b.Revoked(old) })

	tok := pulsebase.Principal{Subject: "bob", Role: pulsebase.RoleUser, TokenID: "t-1", Issued: time.Now(), Expires: time.Now().Add(time.Hour)}
	if err := b.RevokeToken(t.Context(), tok); err != nil {
		t.Fatal(err)
	}
	pbtest.WaitFor(t, 5*time.Second, "the other process to see the token revocation", func() bool { return a.Revoked(tok) })
}

func TestDeviceRevocationRefusesOnlyTokensIssuedUntilThen(t *testing.T) {
	js := openBroker(t)
	// The revocation happens 300 ms into a second, so that tokens minted earlier and later
	// in that same second can be told apart from the next second's.
	at := time.Now().Truncate(time.Second).Add(300 * time.Millisecond)
	r := newRevocations(t, js, func() time.Time { return at })
	if err := r.RevokeDevice(t.Context(), "alice", "watch-1"); err != nil {
		t.Fatal(err)
	}
	iss, err := auth.OpenIssuer(filepath.Join(t.TempDir(), "token.key"), auth.DefaultIssuer, auth.DefaultAudience)
	if err != nil {
		t.Fatal(err)
	}
	mint := func(sub string, role pulsebase.Role, dev string, now time.Time) pulsebase.Principal {
		t.Helper()
		tok, err := iss.Mint(auth.TokenRequest{Subject: sub, Role: role, Device: dev, TTL: 2 * time.Hour}, now)
		if err != nil {
			t.Fatal(err)
		}
		p, err := iss.Verify(tok)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, c := range []struct {
		name string
		p    pulsebase.Principal
		want bool
	}{
		{"an hour before", mint("alice", pulsebase.RoleDevice, "watch-1", at.Add(-time.Hour)), true},
		{"earlier in the same second", mint("alice", pulsebase.RoleDevice, "watch-1", at.Add(-200*time.Millisecond)), true},
		{"later in the same second", mint("alice", pulsebase.RoleDevice, "watch-1", at.Add(500*time.Millisecond)), true},
		{"the next second", mint("alice", pulsebase.RoleDevice, "watch-1", at.Truncate(time.Second).Add(time.Second)), false},
		{"another device", mint("alice", pulsebase.RoleDevice, "ring", at.Add(-time.Hour)), false},
		{"another subject's device of that name", mint("bob", pulsebase.RoleDevice, "watch-1", at.Add(-time.Hour)), false},
		{"the user's own token", mint("alice", pulsebase.RoleUser, "", at.Add(-time.Hour)), false},
		{"no issue time", pulsebase.Principal{Subject: "alice", Role: pulsebase.RoleDevice, Device: "watch-1", TokenID: "x"}, true},
	} {
		if got := r.Revoked(c.p); got != c.want {
			t.Errorf("%s: got revoked %v, want %v", c.name, got, c.want)
		}
	}
}

func TestTokenRevocationRefusesOneToken(t *testing.T) {
	js := openBroker(t)
	r := newRevocations(t, js, nil)
	now := time.Now()
	one, two := device("alice", "watch-1", now), device("alice", "watch-1", now)
	one.TokenID, two.TokenID = "jti/with spaces and.dots", "jti-2"
	if err := r.RevokeToken(t.Context(), one); err != nil {
		t.Fatal(err)
	}
	if !r.Revoked(one) {
		t.Error("the revoked token is accepted")
	}
	if r.Revoked(two) {
		t.Error("another token of the same device is refused")
	}
	if err := r.RevokeToken(t.Context(), pulsebase.Principal{Subject: "alice", Role: pulsebase.RoleUser}); err == nil {
		t.Error("a token without an id was revoked")
	}
}

func TestRevocationsAreLoadedAtStartup(t *testing.T) {
	js := openBroker(t)
	first := newRevocations(t, js, nil)
	old := device("alice", "watch-1", time.Now().Add(-time.Minute))
	tok := device("bob", "phone", time.Now())
	if err := first.RevokeDevice(t.Context(), "alice", "watch-1"); err != nil {
		t.Fatal(err)
	}
	if err := first.RevokeToken(t.Context(), tok); err != nil {
		t.Fatal(err)
	}
	// A process started later knows both as soon as it is constructed, before its Run.
	later, err := auth.NewRevocations(t.Context(), js, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !later.Revoked(old) || !later.Revoked(tok) {
		t.Errorf("a new instance: got revoked %v %v, want true true", later.Revoked(old), later.Revoked(tok))
	}
	kv, err := js.KeyValue(t.Context(), auth.RevocationBucket)
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.TTL() < auth.MaxTTL || st.History() != 1 {
		t.Errorf("bucket: got ttl %s and history %d, want ttl ≥ %s and history 1", st.TTL(), st.History(), auth.MaxTTL)
	}
}

func TestSubscribeIsCalledAfterRevocations(t *testing.T) {
	js := openBroker(t)
	a := newRevocations(t, js, nil)
	b := newRevocations(t, js, nil)
	var calls atomic.Int32
	var sawRevoked atomic.Bool
	watch := device("alice", "watch-1", time.Now().Add(-time.Minute))
	cancel := b.Subscribe(func() {
		// The callback may check tokens: the revocation is applied before it runs.
		sawRevoked.Store(b.Revoked(watch))
		calls.Add(1)
	})
	if err := a.RevokeDevice(t.Context(), "alice", "watch-1"); err != nil {
		t.Fatal(err)
	}
	pbtest.WaitFor(t, 5*time.Second, "the subscriber to be called", func() bool { return calls.Load() > 0 })
	if !sawRevoked.Load() {
		t.Error("the subscriber ran before the revocation was applied")
	}

	cancel()
	n := calls.Load()
	ring := device("alice", "ring", time.Now().Add(-time.Minute))
	if err := a.RevokeDevice(t.Context(), "alice", "ring"); err != nil {
		t.Fatal(err)
	}
	pbtest.WaitFor(t, 5*time.Second, "the second revocation to arrive", func() bool { return b.Revoked(ring) })
	if got := calls.Load(); got != n {
		t.Errorf("got %d calls after cancel, want %d", got, n)
	}
}

func TestPruneKeepsOnlyRevocationsThatMatter(t *testing.T) {
	js := openBroker(t)
	now := time.Now()
	longAgo := now.Add(-auth.MaxTTL - time.Hour)
	clock := longAgo
	r := newRevocations(t, js, func() time.Time { return clock })
	ancient := device("alice", "watch-1", longAgo.Add(-time.Hour))
	expired := device("alice", "ring", now.Add(-2*time.Hour))
	if err := r.RevokeDevice(t.Context(), "alice", "watch-1"); err != nil {
		t.Fatal(err)
	}
	if err := r.RevokeToken(t.Context(), expired); err != nil {
		t.Fatal(err)
	}
	live := device("carol", "phone", now)
	if err := r.RevokeToken(t.Context(), live); err != nil {
		t.Fatal(err)
	}
	if !r.Revoked(ancient) || !r.Revoked(expired) {
		t.Fatal("revocations are not in effect before pruning")
	}
	auth.Prune(r, now)
	if r.Revoked(ancient) || r.Revoked(expired) {
		t.Error("revocations of tokens that can no longer be valid were kept")
	}
	if !r.Revoked(live) {
		t.Error("the revocation of a live token was pruned")
	}
}
