package profile_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/broker"
	"github.com/pulsebase/pulsebase/internal/crdt"
	"github.com/pulsebase/pulsebase/internal/pbtest"
	"github.com/pulsebase/pulsebase/internal/profile"
)

// env is a store, a vault and an embedded broker with a listener, in a temp dir.
type env struct{ *pbtest.Parts }

func newEnv(t *testing.T) *env {
	t.Helper()
	return &env{pbtest.OpenParts(t, broker.Config{ListenAddr: "127.0.0.1:0"})}
}

// closedJetStream returns a JetStream on a connection to the broker that is already
// closed: every publish through it fails, as it would while the broker is unreachable.
func (e *env) closedJetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(e.Broker.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
	return js
}

// feed returns the user's change feed, in order.
func (e *env) feed(t *testing.T, user string) []pbtest.FeedMessage {
	t.Helper()
	return pbtest.ReadFeed(t, e.Broker.JetStream(), e.Vault, user)
}

// feedOps returns the ids of the profile ops on the feed, in feed order, and the ids of
// the messages carrying them.
func feedOps(t *testing.T, msgs []pbtest.FeedMessage) (ops, ids []string) {
	t.Helper()
	for _, m := range msgs {
		ids = append(ids, m.ID)
		for _, c := range m.Batch.Changes {
			if c.Kind != "profile" || c.Key != "profile" {
				t.Errorf("message %s: a %s/%s change, want profile/profile", m.ID, c.Kind, c.Key)
				continue
			}
			b, err := json.Marshal(c.Data["ops"])
			if err != nil {
				t.Fatal(err)
			}
			var list []crdt.Op
			if err := json.Unmarshal(b, &list); err != nil {
				t.Fatal(err)
			}
			for _, op := range list {
				ops = append(ops, op.ID)
			}
		}
	}
	return ops, ids
}

// incr is an op of device adding n glasses of water today.
func incr(device string, seq int, n int) crdt.Op {
	return crdt.Op{ID: fmt.Sprintf("%s:%d", device, seq), TS: crdt.Timestamp{Wall: time.Now().UnixMilli(), Node: device},
		Kind: "incr", Path: "water_glasses." + time.Now().UTC().Format("2006-01-02"), Value: json.RawMessage(fmt.Sprint(n))}
}

func (e *env) published(t *testing.T, user string) (version, published int64) {
	t.Helper()
	sp, err := e.Store.Profile(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	return sp.Version, sp.Published
}

// TestPublishFailureIsRetried stores ops while the broker is unreachable: Apply answers
// unavailable with the ops stored, the device's retry (duplicates now) puts them on the
// feed, a republication after a crash is dropped as a duplicate, and in the end the feed
// holds every applied op exactly once, in version order, in messages whose sequences
// Apply reported.
func TestPublishFailureIsRetried(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	const user = "uoutbox"
	up := profile.New(e.Store, e.Vault, e.Broker.JetStream(), nil)
	down := profile.New(e.Store, e.Vault, e.closedJetStream(t), nil)

	first, err := up.Apply(ctx, user, []crdt.Op{incr("watch", 1, 1)})
	if err != nil || first.Version != 1 || first.Seq == 0 {
		t.Fatalf("first apply: %+v, %v; want version 1 and a sequence", first, err)
	}

	// The broker is down: the ops are stored, the caller is told to retry.
	batch := []crdt.Op{incr("watch", 2, 2), incr("phone", 1, 3)}
	if _, err := down.Apply(ctx, user, batch); pulsebase.ErrorCode(err) != pulsebase.EUNAVAILABLE {
		t.Fatalf("apply with the broker down: got %v, want code %s", err, pulsebase.EUNAVAILABLE)
	}
	if v, p := e.published(t, user); v != 2 || p != 1 {
		t.Fatalf("after the failed publish: version %d published %d, want 2 and 1", v, p)
	}
	// Nothing more is applied while the broker stays down: version 2 must go out first.
	if _, err := down.Apply(ctx, user, []crdt.Op{incr("phone", 2, 4)}); pulsebase.ErrorCode(err) != pulsebase.EUNAVAILABLE {
		t.Fatalf("apply with version 2 pending: got %v, want code %s", err, pulsebase.EUNAVAILABLE)
	}
	if v, _ := e.published(t, user); v != 2 {
		t.Fatalf("got version %d, want 2: nothing may be written over an unpublished version", v)
	}

	// The device retries the same ops: duplicates, and version 2 goes out.
	retry, err := up.Apply(ctx, user, batch)
	if err != nil || retry.Version != 2 || retry.Seq != 0 || retry.Results[0].Applied || retry.Results[0].Code != "" {
		t.Fatalf("retry: %+v, %v; want duplicates at version 2 and no sequence", retry, err)
	}
	if v, p := e.published(t, user); p != v {
		t.Fatalf("after the retry: version %d published %d", v, p)
	}

	// A process that crashed between publishing version 3 and marking it published: the
	// marker is behind, so the next flush publishes again, and the broker drops it.
	third, err := up.Apply(ctx, user, []crdt.Op{incr("phone", 2, 4)})
	if err != nil || third.Version != 3 || third.Seq == 0 {
		t.Fatalf("third apply: %+v, %v", third, err)
	}
	setPublished(t, e, user, 2)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if err := profile.New(e.Store, e.Vault, e.Broker.JetStream(), nil).Flush(ctx, user); err != nil {
				t.Errorf("flush: %v", err)
			}
		})
	}
	wg.Wait()
	if v, p := e.published(t, user); v != 3 || p != 3 {
		t.Fatalf("after the flushes: version %d published %d, want 3 and 3", v, p)
	}

	msgs := e.feed(t, user)
	ops, ids := feedOps(t, msgs)
	if want := []string{"watch:1", "watch:2", "phone:1", "phone:2"}; !slices.Equal(ops, want) {
		t.Errorf("the feed holds ops %v, want %v, each once", ops, want)
	}
	if want := []string{user + "-profile-1", user + "-profile-2", user + "-profile-3"}; !slices.Equal(ids, want) {
		t.Errorf("the feed holds messages %v, want %v", ids, want)
	}
	for _, c := range []struct {
		name string
		seq  uint64
		id   string
	}{{"first", first.Seq, user + "-profile-1"}, {"third", third.Seq, user + "-profile-3"}} {
		i := slices.IndexFunc(msgs, func(m pbtest.FeedMessage) bool { return m.Seq == c.seq })
		if i < 0 || msgs[i].ID != c.id {
			t.Errorf("%s apply: sequence %d is not message %s on the feed", c.name, c.seq, c.id)
		}
	}
	doc, _, err := up.Get(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(doc.View()["water_glasses"]); !strings.HasSuffix(got, ":10]") {
		t.Errorf("got glasses %s, want 10", got)
	}
}

// setPublished lowers the user's published marker behind the store's back, as a process
// that died between publishing and marking leaves it.
func setPublished(t *testing.T, e *env, user string, v int64) {
	t.Helper()
	db, err := sql.Open("sqlite", e.StorePath+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE profiles SET published = ? WHERE user_id = ?`, v, user); err != nil {
		t.Fatal(err)
	}
}

// TestFlushPublishesPending leaves a version unpublished and flushes it, as a sync gateway
// does before a snapshot; a flush with nothing pending publishes nothing, and so does one
// while the broker is down, which says so.
func TestFlushPublishesPending(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	const user = "uflush"
	up := profile.New(e.Store, e.Vault, e.Broker.JetStream(), nil)
	down := profile.New(e.Store, e.Vault, e.closedJetStream(t), nil)
	if err := up.Flush(ctx, user); err != nil {
		t.Fatalf("flush without a profile: %v", err)
	}
	if _, err := down.Apply(ctx, user, []crdt.Op{incr("watch", 1, 1)}); pulsebase.ErrorCode(err) != pulsebase.EUNAVAILABLE {
		t.Fatalf("got %v, want code %s", err, pulsebase.EUNAVAILABLE)
	}
	if err := down.Flush(ctx, user); pulsebase.ErrorCode(err) != pulsebase.EUNAVAILABLE {
		t.Fatalf("flush with the broker down: got %v, want code %s", err, pulsebase.EUNAVAILABLE)
	}
	if len(e.feed(t, user)) != 0 {
		t.Fatal("a change on the feed before any publish succeeded")
	}
	for range 2 {
		if err := up.Flush(ctx, user); err != nil {
			t.Fatal(err)
		}
	}
	ops, ids := feedOps(t, e.feed(t, user))
	if !slices.Equal(ops, []string{"watch:1"}) || !slices.Equal(ids, []string{user + "-profile-1"}) {
		t.Errorf("got ops %v in messages %v, want watch:1 in %s-profile-1", ops, ids, user)
	}
}

// TestDocumentBeforeOutboxOpens stores a document as the service did before the outbox
// (the bare crdt encoding, sealed) and reads and extends it: it opens, its ops (published
// when it was written) are not published again, and the new version's are.
func TestDocumentBeforeOutboxOpens(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	const user = "uold"
	old := crdt.New()
	if ok, err := old.Apply(incr("watch", 1, 2)); err != nil || !ok {
		t.Fatalf("apply to the old document: %v, %v", ok, err)
	}
	b, err := old.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	keys, err := e.Vault.UserKeys(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := keys.Seal("profile", "", b)
	if err != nil {
		t.Fatal(err)
	}
	// Written by an older process: the store has it as version 1, never marked published.
	if err := e.Store.PutProfile(ctx, pulsebase.StoredProfile{User: user, Version: 1, Ciphertext: ct, Updated: time.Now()}); err != nil {
		t.Fatal(err)
	}
	svc := profile.New(e.Store, e.Vault, e.Broker.JetStream(), nil)
	doc, version, err := svc.Get(ctx, user)
	if err != nil || version != 1 || !strings.HasSuffix(fmt.Sprint(doc.View()["water_glasses"]), ":2]") {
		t.Fatalf("got %v at version %d, %v; want 2 glasses at version 1", doc, version, err)
	}
	out, err := svc.Apply(ctx, user, []crdt.Op{incr("watch", 2, 1)})
	if err != nil || out.Version != 2 || !out.Results[0].Applied {
		t.Fatalf("apply: %+v, %v", out, err)
	}
	if got := fmt.Sprint(out.View["water_glasses"]); !strings.HasSuffix(got, ":3]") {
		t.Errorf("got glasses %s, want 3", got)
	}
	ops, ids := feedOps(t, e.feed(t, user))
	if !slices.Equal(ops, []string{"watch:2"}) || !slices.Equal(ids, []string{user + "-profile-2"}) {
		t.Errorf("got ops %v in messages %v, want only watch:2 in %s-profile-2", ops, ids, user)
	}
	if v, p := e.published(t, user); v != 2 || p != 2 {
		t.Errorf("got version %d published %d, want 2 and 2", v, p)
	}
}

// TestOpsSplitAcrossMessages applies more ops than one change message may carry (three
// with the broker down, then five more): each version goes out in several messages, in
// order, each once also when republished, and Outcome.Seq names the last.
func TestOpsSplitAcrossMessages(t *testing.T) {
	ctx := context.Background()
	profile.SetMaxOpsBytes(t, 300) // an incr op is about 125 bytes of JSON: two per message
	e := newEnv(t)
	const user = "usplit"
	var batch []crdt.Op
	for i := 1; i <= 8; i++ {
		batch = append(batch, incr("watch", i, 1))
	}
	down := profile.New(e.Store, e.Vault, e.closedJetStream(t), nil)
	if _, err := down.Apply(ctx, user, batch[:3]); pulsebase.ErrorCode(err) != pulsebase.EUNAVAILABLE {
		t.Fatalf("got %v, want code %s", err, pulsebase.EUNAVAILABLE)
	}
	up := profile.New(e.Store, e.Vault, e.Broker.JetStream(), nil)
	out, err := up.Apply(ctx, user, batch)
	if err != nil || out.Version != 2 || out.Seq == 0 {
		t.Fatalf("apply: %+v, %v", out, err)
	}
	setPublished(t, e, user, 1) // version 2's parts go out again, and are dropped
	if err := up.Flush(ctx, user); err != nil {
		t.Fatal(err)
	}
	msgs := e.feed(t, user)
	ops, ids := feedOps(t, msgs)
	if want := []string{"watch:1", "watch:2", "watch:3", "watch:4", "watch:5", "watch:6", "watch:7", "watch:8"}; !slices.Equal(ops, want) {
		t.Errorf("the feed holds ops %v, want %v", ops, want)
	}
	want := []string{user + "-profile-1", user + "-profile-1-1", user + "-profile-2", user + "-profile-2-1", user + "-profile-2-2"}
	if !slices.Equal(ids, want) {
		t.Errorf("the feed holds messages %v, want %v", ids, want)
	}
	if last := msgs[len(msgs)-1]; last.Seq != out.Seq {
		t.Errorf("got Seq %d, want %d, the sequence of %s", out.Seq, last.Seq, last.ID)
	}
	for _, m := range msgs {
		if v := m.Batch.Changes[0].Data["version"]; v != 1.0 && v != 2.0 {
			t.Errorf("message %s carries version %v", m.ID, v)
		}
	}
}
