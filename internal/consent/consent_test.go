package consent_test

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/broker"
	"github.com/pulsebase/pulsebase/internal/consent"
	"github.com/pulsebase/pulsebase/internal/pbtest"
)

// env is a store, a vault and an embedded broker in a temp dir, shared by the consent
// services of a test as processes share them.
type env struct{ *pbtest.Parts }

func newEnv(t *testing.T) *env {
	t.Helper()
	return &env{pbtest.OpenParts(t, broker.Config{})}
}

// service starts a consent service (one process's) with its watch running until the test
// ends.
func (e *env) service(t *testing.T) *consent.Service {
	t.Helper()
	s, err := consent.New(context.Background(), e.Store, e.Vault, e.Broker.JetStream(), 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	return s
}

// feed returns the user's change feed, in order.
func (e *env) feed(t *testing.T, user string) []pbtest.FeedMessage {
	t.Helper()
	return pbtest.ReadFeed(t, e.Broker.JetStream(), e.Vault, user)
}

// actor is the user changing their own consent.
var actor = pulsebase.Actor{Role: pulsebase.RoleUser}

// sameJSON reports whether a and b encode to the same JSON, once decoded.
func sameJSON(t *testing.T, a, b any) bool {
	t.Helper()
	var x, y any
	for _, p := range []struct {
		in  any
		out *any
	}{{a, &x}, {b, &y}} {
		raw, err := json.Marshal(p.in)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(raw, p.out); err != nil {
			t.Fatal(err)
		}
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return string(xb) == string(yb)
}

// TestSetPutsConsentOnFeed sets a user's consent twice: each version goes out on their
// change feed as a consent change holding what Get answers, and no one else's.
func TestSetPutsConsentOnFeed(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	s := e.service(t)
	const u = "ufeed"
	if _, err := s.Set(ctx, u, pulsebase.Consent{Collect: map[pulsebase.Category]bool{"heart": true},
		Purposes: map[pulsebase.Purpose]bool{"personalization": true}}, actor); err != nil {
		t.Fatal(err)
	}
	second, err := s.Set(ctx, u, pulsebase.Consent{Collect: map[pulsebase.Category]bool{"sleep": true}}, actor)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	if !sameJSON(t, got, second) {
		t.Fatalf("Get %+v, Set returned %+v", got, second)
	}
	msgs := e.feed(t, u)
	var ids []string
	for _, m := range msgs {
		ids = append(ids, m.ID)
	}
	if !slices.Equal(ids, []string{u + "-consent-1", u + "-consent-2"}) {
		t.Fatalf("got messages %v, want %s-consent-1 and -2", ids, u)
	}
	last := msgs[1].Batch.Changes
	if len(last) != 1 || last[0].Kind != "consent" || last[0].Key != "consent" || !sameJSON(t, last[0].Data, got) {
		t.Errorf("got changes %+v, want one consent change holding %+v", last, got)
	}
	if msgs := e.feed(t, "usomeoneelse"); len(msgs) != 0 {
		t.Errorf("another user's feed holds %d messages", len(msgs))
	}
}

// TestSetPublishFailure sets consent while the change feed's stream is missing: Set fails
// with the receipt stored, and setting it again stores and publishes the next version.
func TestSetPublishFailure(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	s := e.service(t)
	js := e.Broker.JetStream()
	st, err := js.Stream(ctx, broker.StreamChanges)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	if err := js.DeleteStream(ctx, broker.StreamChanges); err != nil {
		t.Fatal(err)
	}
	const u = "ufail"
	c := pulsebase.Consent{Collect: map[pulsebase.Category]bool{"heart": true}}
	if _, err := s.Set(ctx, u, c, actor); pulsebase.ErrorCode(err) != pulsebase.EUNAVAILABLE {
		t.Fatalf("set without the change feed: got %v, want code %s", err, pulsebase.EUNAVAILABLE)
	}
	if got, err := s.Get(ctx, u); err != nil || got.Version != 1 {
		t.Fatalf("got %+v, %v; want version 1 stored", got, err)
	}
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	again, err := s.Set(ctx, u, c, actor)
	if err != nil || again.Version != 2 {
		t.Fatalf("retry: %+v, %v; want version 2", again, err)
	}
	msgs := e.feed(t, u)
	if len(msgs) != 1 || msgs[0].ID != u+"-consent-2" || !sameJSON(t, msgs[0].Batch.Changes[0].Data, again) {
		t.Errorf("got %+v, want version 2 alone on the feed", msgs)
	}
}

// calls records the users a subscriber was called with.
type calls struct {
	mu    sync.Mutex
	users []string
}

func (c *calls) add(user string) {
	c.mu.Lock()
	c.users = append(c.users, user)
	c.mu.Unlock()
}

func (c *calls) count(user string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, u := range c.users {
		if u == user {
			n++
		}
	}
	return n
}

// TestSubscribe checks that a subscriber hears of a change made in its own process at
// once and of one made in another process through the watch, of each version once, and of
// nothing after cancelling.
func TestSubscribe(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	a, b := e.service(t), e.service(t)
	var heard calls
	cancel := a.Subscribe(heard.add)
	var heardB calls
	defer b.Subscribe(heardB.add)()
	revoke := pulsebase.Consent{Collect: map[pulsebase.Category]bool{"sleep": true}}

	if _, err := a.Set(ctx, "ulocal", revoke, actor); err != nil {
		t.Fatal(err)
	}
	if n := heard.count("ulocal"); n != 1 {
		t.Fatalf("a Set in this process: the subscriber was called %d times when Set returned, want 1", n)
	}
	if _, err := b.Set(ctx, "uremote", revoke, actor); err != nil {
		t.Fatal(err)
	}
	pbtest.WaitFor(t, 10*time.Second, "a change made by another process", func() bool { return heard.count("uremote") == 1 })
	pbtest.WaitFor(t, 10*time.Second, "the other process's subscriber", func() bool { return heardB.count("ulocal") == 1 })
	// The watch delivers in order, so a's own change came back through it before
	// uremote's: that echo was not reported again.
	if n := heard.count("ulocal"); n != 1 {
		t.Errorf("a's own change was reported %d times, want once", n)
	}
	if n := heardB.count("uremote"); n != 1 {
		t.Errorf("b's own change was reported %d times to b, want once", n)
	}

	cancel()
	cancel()
	var after calls
	defer a.Subscribe(after.add)()
	if _, err := b.Set(ctx, "ulater", revoke, actor); err != nil {
		t.Fatal(err)
	}
	pbtest.WaitFor(t, 10*time.Second, "the change after cancelling", func() bool { return after.count("ulater") == 1 })
	if n := heard.count("ulater"); n != 0 {
		t.Errorf("a cancelled subscriber was called %d times", n)
	}
}
