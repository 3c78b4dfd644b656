package processor_test

import (
	"context"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/broker"
	"github.com/pulsebase/pulsebase/internal/processor"
)

// TestReprocessRebuildsFromTheStream damages one user's derived data (a bucket and a day
// deleted, a bucket that no sample made), asks for a rebuild of that user while their
// samples keep arriving, and checks that their buckets and days equal the batch computation
// over every distinct sample again, and that another user of the same partition is left
// exactly as they were.
func TestReprocessRebuildsFromTheStream(t *testing.T) {
	pl := newPipeline(t)
	ctx := context.Background()
	const user = "urebuild"
	other := ""
	for i := 0; other == ""; i++ {
		if c := "uneighbour" + strconv.Itoa(i); broker.Partition(c, 64) == broker.Partition(user, 64) {
			other = c
		}
	}
	grantAll(t, pl, user)
	grantAll(t, pl, other)
	rng := rand.New(rand.NewPCG(7, 8))
	now := time.Now()
	inputs := randomSamples(rng, 300, now)
	neighbour := randomSamples(rng, 100, now)
	post := func(u string, in []pulsebase.SampleInput) {
		t.Helper()
		res, err := pl.ingest.Ingest(ctx, u, pulsebase.Principal{Subject: u, Role: pulsebase.RoleUser}, in)
		if err != nil || len(res.Rejected) > 0 {
			t.Fatalf("ingest: %+v, %v", res, err)
		}
	}
	pl.run(t)
	post(user, inputs[:200])
	post(other, neighbour)
	pl.waitDaily(t, user)
	pl.waitDaily(t, other)
	before := recordCount(t, pl, other)

	// The damage, committed at the partition's own checkpoint.
	p := broker.Partition(user, 64)
	cp, err := pl.store.Checkpoint(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := pl.vault.UserKeys(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	buckets, err := pl.store.DerivedRecords(ctx, user, processor.KindBucket, "heart_rate/1h/", "heart_rate/1h/~")
	if err != nil || len(buckets) < 2 {
		t.Fatalf("buckets: %d, %v", len(buckets), err)
	}
	days, err := pl.store.DerivedRecords(ctx, user, processor.KindDaily, "", "")
	if err != nil || len(days) == 0 {
		t.Fatalf("days: %d, %v", len(days), err)
	}
	pt, err := keys.Open(processor.KindBucket, buckets[0].Key, buckets[0].Ciphertext)
	if err != nil {
		t.Fatal(err)
	}
	const bogus = "heart_rate/1h/00000000000000003600"
	ct, err := keys.Seal(processor.KindBucket, bogus, pt)
	if err != nil {
		t.Fatal(err)
	}
	if err := pl.store.CommitPartition(ctx, cp, []pulsebase.DerivedRecord{
		{User: user, Kind: processor.KindBucket, Key: buckets[1].Key, Delete: true},
		{User: user, Kind: processor.KindDaily, Key: days[0].Key, Delete: true},
		{User: user, Kind: processor.KindBucket, Key: bogus, Ciphertext: ct},
	}); err != nil {
		t.Fatal(err)
	}

	req, err := processor.RequestReprocess(ctx, pl.brk.JetStream(), user, false, "test")
	if err != nil {
		t.Fatal(err)
	}
	post(user, inputs[200:]) // arriving while the partition replays
	deadline := time.Now().Add(90 * time.Second)
	for {
		st, err := processor.GetReprocess(ctx, pl.brk.JetStream(), pl.store, req.ID, 64)
		if err != nil {
			t.Fatal(err)
		}
		if st.Partitions != 1 {
			t.Fatalf("the request concerns %d partitions, want 1", st.Partitions)
		}
		if st.Complete {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reprocess not complete: %+v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	post(user, inputs[:50]) // re-sends after the rebuild still count once
	pl.waitDaily(t, user)

	var distinct []pulsebase.Sample
	for _, in := range inputs {
		s, _ := pulsebase.Normalize(in, now)
		distinct = append(distinct, s)
	}
	if n := pl.checkBuckets(t, user, distinct, "heart_rate", "steps", "sleep_stage"); n < 100 {
		t.Errorf("compared only %d buckets", n)
	}
	if n := checkDaily(t, pl.storedDays(t, user), distinct); n < 50 {
		t.Errorf("compared only %d daily values", n)
	}
	if got, _ := pl.store.DerivedRecords(ctx, user, processor.KindBucket, bogus, bogus); len(got) != 0 {
		t.Errorf("the bogus bucket survived the rebuild")
	}
	var theirs []pulsebase.Sample
	for _, in := range neighbour {
		s, _ := pulsebase.Normalize(in, now)
		theirs = append(theirs, s)
	}
	pl.checkBuckets(t, other, theirs, "heart_rate", "steps", "sleep_stage")
	if after := recordCount(t, pl, other); after != before {
		t.Errorf("the neighbour's records went from %d to %d", before, after)
	}
	// A second look at the same request finds it done; an unknown one is not found.
	if _, err := processor.GetReprocess(ctx, pl.brk.JetStream(), pl.store, "00000000000000000001", 64); pulsebase.ErrorCode(err) != pulsebase.ENOTFOUND {
		t.Errorf("unknown request: got %v, want not found", err)
	}
}

func recordCount(t *testing.T, pl *pipeline, user string) int {
	t.Helper()
	n := 0
	for _, kind := range []string{processor.KindBucket, processor.KindDaily, processor.KindIDs, processor.KindJournal, processor.KindState} {
		recs, err := pl.store.DerivedRecords(context.Background(), user, kind, "", "")
		if err != nil {
			t.Fatal(err)
		}
		n += len(recs)
	}
	return n
}
