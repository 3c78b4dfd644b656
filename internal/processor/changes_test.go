package processor_test

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/broker"
	"github.com/pulsebase/pulsebase/internal/pbtest"
	"github.com/pulsebase/pulsebase/internal/processor"
)

// feed returns the user's change batches in feed order.
func (pl *pipeline) feed(t *testing.T, user string) []processor.ChangeBatch {
	t.Helper()
	var out []processor.ChangeBatch
	for _, m := range pbtest.ReadFeed(t, pl.brk.JetStream(), pl.vault, user) {
		out = append(out, m.Batch)
	}
	return out
}

// TestChangeFeedEndsWithTheStoredValues ingests bursts for one user and checks that the
// change feed, read in order, ends with every stored bucket's and day's final value.
func TestChangeFeedEndsWithTheStoredValues(t *testing.T) {
	pl := newPipeline(t)
	ctx := context.Background()
	const user = "ufeed"
	grantAll(t, pl, user)
	pl.run(t)
	rng := rand.New(rand.NewPCG(11, 12))
	now := time.Now()
	inputs := randomSamples(rng, 400, now)
	for i := 0; i < len(inputs); i += 40 {
		if _, err := pl.ingest.Ingest(ctx, user, pulsebase.Principal{Subject: user, Role: pulsebase.RoleUser}, inputs[i:i+40]); err != nil {
			t.Fatal(err)
		}
	}
	pl.waitDaily(t, user)
	keys, err := pl.vault.UserKeys(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	last := map[string]map[string]any{} // kind/key → data, the latest wins
	for _, cb := range pl.feed(t, user) {
		if len(cb.Changes) == 0 {
			t.Errorf("an empty change batch")
		}
		for _, c := range cb.Changes {
			k := c.Kind + "/" + c.Key
			if c.Kind == "daily" && last[k] != nil {
				for f, v := range c.Data { // daily changes carry the changed fields
					last[k][f] = v
				}
				continue
			}
			last[k] = c.Data
		}
	}
	recs, err := pl.store.DerivedRecords(ctx, user, processor.KindBucket, "", "")
	if err != nil {
		t.Fatal(err)
	}
	buckets := 0
	for _, r := range recs {
		cs, err := processor.OpenBuckets(keys, r.Key, r.Ciphertext)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			buckets++
			key := processor.BucketKey(c.Type, c.Res, c.Start, c.Date)
			if !jsonSame(last["series/"+key], processor.SeriesPoint(c)) {
				t.Errorf("bucket %s: the feed ends with %v, the store has %v", key, last["series/"+key], processor.SeriesPoint(c))
			}
		}
	}
	days := pl.storedDays(t, user)
	for date, day := range days {
		got := last["daily/"+date]
		for f, v := range day {
			if !jsonSame(got[f], v) {
				t.Errorf("day %s %s: the feed ends with %v, the store has %v", date, f, got[f], v)
			}
		}
	}
	if buckets < 100 || len(days) < 5 {
		t.Errorf("only %d buckets and %d days", buckets, len(days))
	}
}

// TestOutboxIsRepublished leaves a message in a partition's outbox, as an owner that died
// between a commit and its publication would, and checks the next owner publishes it.
func TestOutboxIsRepublished(t *testing.T) {
	pl := newPipeline(t)
	ctx := context.Background()
	const user = "uoutbox"
	p := broker.Partition(user, 64)
	keys, err := pl.vault.UserKeys(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	const id = "left-behind"
	b, _ := json.Marshal(processor.ChangeBatch{Changes: []processor.Change{{Kind: "daily", Key: "2026-11-28", Data: map[string]any{"steps": 1.0}}}})
	ct, err := keys.Seal("change", id, b)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal([]map[string]any{{"subject": broker.ChangeSubject(user), "header": map[string][]string{jetstream.MsgIDHeader: {id}}, "data": ct}})
	if err := pl.store.CommitPartition(ctx, pulsebase.Checkpoint{Partition: p, Epoch: 1}, []pulsebase.DerivedRecord{
		{User: processor.PendingOwner(p), Kind: processor.KindOutbox, Ciphertext: out},
	}); err != nil {
		t.Fatal(err)
	}
	pl.run(t)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if f := pl.feed(t, user); len(f) == 1 && f[0].Changes[0].Key == "2026-11-28" {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("the outbox was not published: feed %v", f)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func jsonSame(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// TestRevokedConsentStopsProcessing stores samples while the user consents, revokes heart
// before the processor gets to them, and checks that only the still-consented category
// reaches the derived data.
func TestRevokedConsentStopsProcessing(t *testing.T) {
	pl := newPipeline(t)
	ctx := context.Background()
	const user = "urevoke"
	grantAll(t, pl, user)
	at := time.Now().Add(-time.Hour).Truncate(time.Minute).UTC()
	in := []pulsebase.SampleInput{
		{Type: "heart_rate", Value: json.RawMessage("61"), Start: at.Format(time.RFC3339), Source: "w"},
		{Type: "steps", Value: json.RawMessage("40"), Start: at.Format(time.RFC3339), End: at.Add(time.Minute).Format(time.RFC3339), Source: "w"},
	}
	if res, err := pl.ingest.Ingest(ctx, user, pulsebase.Principal{Subject: user, Role: pulsebase.RoleUser}, in); err != nil || res.Accepted != 2 {
		t.Fatalf("ingest: %+v %v", res, err)
	}
	c, err := pl.consent.Get(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	c.Collect[pulsebase.CategoryHeart] = false
	if _, err := pl.consent.Set(ctx, user, c, pulsebase.Actor{Role: pulsebase.RoleUser}); err != nil {
		t.Fatal(err)
	}
	pl.run(t)
	pl.waitDaily(t, user)
	count := func(typ string) int {
		recs, err := pl.store.DerivedRecords(ctx, user, processor.KindBucket, typ+"/", typ+"/~")
		if err != nil {
			t.Fatal(err)
		}
		return len(recs)
	}
	if n := count("heart_rate"); n != 0 {
		t.Errorf("%d heart rate bucket records after the revocation, want none", n)
	}
	if n := count("steps"); n != 3 {
		t.Errorf("%d steps bucket records, want 3 (minute chunk, hour, day)", n)
	}
}
