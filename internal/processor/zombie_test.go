package processor_test

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/broker"
	"github.com/pulsebase/pulsebase/internal/processor"
)

// pausedStore is the real store with a pause hook on CommitPartition: while armed, a
// commit announces itself on paused and waits for release before it reaches the store.
// Everything else goes straight to the embedded Store.
type pausedStore struct {
	pulsebase.Store
	paused  chan struct{} // closed when the first armed commit is waiting
	release chan struct{} // closed by the test to let armed commits through

	mu     sync.Mutex
	armed  bool
	cp     pulsebase.Checkpoint // of the first armed commit
	nrecs  int                  // records of the first armed commit
	err    error                // what the store returned for the first armed commit
	calls  int                  // armed commits seen
	result chan struct{}        // closed when the first armed commit has returned
}

func newPausedStore(s pulsebase.Store) *pausedStore {
	return &pausedStore{Store: s, paused: make(chan struct{}), release: make(chan struct{}), result: make(chan struct{})}
}

func (s *pausedStore) CommitPartition(ctx context.Context, cp pulsebase.Checkpoint, records []pulsebase.DerivedRecord) error {
	s.mu.Lock()
	if !s.armed {
		s.mu.Unlock()
		return s.Store.CommitPartition(ctx, cp, records)
	}
	s.calls++
	first := s.calls == 1
	if first {
		s.cp, s.nrecs = cp, len(records)
		close(s.paused)
	}
	s.mu.Unlock()
	select {
	case <-s.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	err := s.Store.CommitPartition(ctx, cp, records)
	if first {
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
		close(s.result)
	}
	return err
}

// wait waits for ch to be closed, failing the test after a minute.
func wait(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(60 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// TestZombieOwnerIsFenced pauses runner A (epoch 1) inside its first commit, lets runner
// B (epoch 2) take the partition over and process everything, then lets A's commit
// through: the store must refuse it with EFENCED, A must stop, and the checkpoint and
// buckets must be B's, equal to the batch computation over the distinct samples.
func TestZombieOwnerIsFenced(t *testing.T) {
	pl := newPipeline(t)
	ctx := context.Background()
	const user = "uzombie"
	p := broker.Partition(user, broker.DefaultPartitions)
	if _, err := pl.consent.Set(ctx, user, pulsebase.Consent{
		Collect:  map[pulsebase.Category]bool{pulsebase.CategoryHeart: true, pulsebase.CategoryActivity: true, pulsebase.CategorySleep: true},
		Purposes: map[pulsebase.Purpose]bool{pulsebase.PurposePersonalization: true},
	}, pulsebase.Actor{Role: pulsebase.RoleUser}); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 8))
	now := time.Now()
	inputs := randomSamples(rng, 150, now)
	post := func(in []pulsebase.SampleInput) {
		t.Helper()
		res, err := pl.ingest.Ingest(ctx, user, pulsebase.Principal{Subject: "zombie", Role: pulsebase.RoleUser}, in)
		if err != nil || len(res.Rejected) > 0 {
			t.Fatalf("ingest: %+v, %v", res, err)
		}
	}
	post(inputs)

	// A, the owner about to become a zombie: it applies the samples, then hangs in its
	// first commit, as a process paused by GC or a stalled VM would.
	ps := newPausedStore(pl.store)
	ps.armed = true
	cfg := processor.RunnerConfig{Flush: 50 * time.Millisecond}
	runnerA := processor.NewRunner(pl.brk.JetStream(), ps, pl.vault, pl.consent, cfg)
	ctxA, cancelA := context.WithCancel(ctx)
	doneA := make(chan error, 1)
	go func() { doneA <- runnerA.Acquired(ctxA, p, 1) }()
	var releaseOnce sync.Once
	releaseA := func() { releaseOnce.Do(func() { close(ps.release) }) }
	t.Cleanup(func() { releaseA(); cancelA(); <-doneA })
	wait(t, ps.paused, "runner A to commit")
	ps.mu.Lock()
	pausedCP, pausedRecs := ps.cp, ps.nrecs
	ps.mu.Unlock()
	if pausedCP.Partition != p || pausedCP.Epoch != 1 || pausedCP.Seq == 0 || pausedRecs == 0 {
		t.Fatalf("runner A's paused commit: checkpoint %+v with %d records, want partition %d epoch 1 past seq 0 with records", pausedCP, pausedRecs, p)
	}

	// B, the new owner, on the real store, processes the partition from the start and
	// then samples that arrive while A is still paused.
	runnerB := processor.NewRunner(pl.brk.JetStream(), pl.store, pl.vault, pl.consent, cfg)
	ctxB, cancelB := context.WithCancel(ctx)
	doneB := make(chan error, 1)
	go func() { doneB <- runnerB.Acquired(ctxB, p, 2) }()
	t.Cleanup(func() { cancelB(); <-doneB })
	pl.waitApplied(t, user)
	more := randomSamples(rng, 30, now)
	post(more)
	pl.waitApplied(t, user)
	cancelB()
	select {
	case err := <-doneB:
		doneB <- err // for the cleanup
		if err != nil {
			t.Fatalf("runner B: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("runner B did not stop")
	}
	cpB, err := pl.store.Checkpoint(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if cpB.Epoch != 2 || cpB.Seq <= pausedCP.Seq {
		t.Fatalf("checkpoint after runner B: %+v, want epoch 2 past A's seq %d", cpB, pausedCP.Seq)
	}

	// A wakes up: its commit must be refused, and A must stop without writing.
	releaseA()
	wait(t, ps.result, "runner A's commit to return")
	ps.mu.Lock()
	commitErr := ps.err
	ps.mu.Unlock()
	if code := pulsebase.ErrorCode(commitErr); code != pulsebase.EFENCED {
		t.Errorf("runner A's late commit: got error %v (code %q), want code %q", commitErr, code, pulsebase.EFENCED)
	}
	select {
	case err := <-doneA:
		doneA <- err // for the cleanup
		if err != nil {
			t.Errorf("runner A: got %v, want nil after being fenced", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("runner A did not stop after being fenced")
	}
	cp, err := pl.store.Checkpoint(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if cp.Epoch != cpB.Epoch || cp.Seq != cpB.Seq {
		t.Errorf("checkpoint after runner A: got epoch %d seq %d, want B's epoch %d seq %d", cp.Epoch, cp.Seq, cpB.Epoch, cpB.Seq)
	}
	if checked := pl.checkBuckets(t, user, distinctOf(t, append(inputs, more...), now), "heart_rate", "steps", "sleep_stage"); checked < 50 {
		t.Errorf("checked only %d buckets", checked)
	}
}

// distinctOf normalizes inputs and keeps one sample per identity, as the processor counts
// them.
func distinctOf(t *testing.T, inputs []pulsebase.SampleInput, now time.Time) []pulsebase.Sample {
	t.Helper()
	var distinct []pulsebase.Sample
	seen := map[string]bool{}
	for _, in := range inputs {
		s, problems := pulsebase.Normalize(in, now)
		if len(problems) > 0 {
			t.Fatalf("bad generated sample: %v", problems)
		}
		if id := string(s.Identity()); !seen[id] {
			seen[id] = true
			distinct = append(distinct, s)
		}
	}
	return distinct
}
