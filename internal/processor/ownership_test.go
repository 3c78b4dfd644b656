package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pulsebase/pulsebase/internal/broker"
)

const (
	testParts = 64
	testTTL   = 2 * time.Second
	// failoverBound is the documented bound (issue [3]): partitions of a
	// stopped or dead processor run elsewhere within 10 s.
	failoverBound = 10 * time.Second
)

func TestAssignBalanced(t *testing.T) {
	for _, n := range []int{1, 7, 64, 1000} {
		for m := 1; m <= 12; m++ {
			members := ids(m)
			got := assign(members, n)
			load := map[string]int{}
			for p, o := range got {
				if o == "" {
					t.Fatalf("n=%d m=%d: partition %d unassigned", n, m, p)
				}
				load[o]++
			}
			lo, hi := n/m, n/m
			if n%m != 0 {
				hi++
			}
			for _, id := range members {
				if l := load[id]; l < lo || l > hi {
					t.Errorf("n=%d m=%d: %s has %d partitions, want %d..%d", n, m, id, l, lo, hi)
				}
			}
			if again := assign(slices.Clone(members), n); !slices.Equal(got, again) {
				t.Errorf("n=%d m=%d: assignment not deterministic", n, m)
			}
		}
	}
}

// TestAssignMovesLittle checks that a membership change moves few
// partitions besides the ones it must: those of the member that left, or
// the share of the one that joined.
func TestAssignMovesLittle(t *testing.T) {
	for m := 2; m <= 8; m++ {
		members := ids(m)
		before := assign(members, testParts)
		// One leaves.
		after := assign(members[1:], testParts)
		forced, moved := 0, 0
		for p := range before {
			switch {
			case before[p] == members[0]:
				forced++
			case before[p] != after[p]:
				moved++
			}
		}
		// Bounded load can push a few partitions on; a plain modulo scheme
		// would move most of them.
		if moved > forced/2+2 {
			t.Errorf("m=%d leave: %d partitions moved between survivors (the leaver had %d)", m, moved, forced)
		}
		// One joins.
		joined := assign(append(slices.Clone(members), "zz-new"), testParts)
		share, moved := 0, 0
		for p := range before {
			switch {
			case joined[p] == "zz-new":
				share++
			case before[p] != joined[p]:
				moved++
			}
		}
		if moved > share/2+2 {
			t.Errorf("m=%d join: %d partitions moved between old members (the joiner took %d)", m, moved, share)
		}
	}
}

func ids(m int) []string {
	var s []string
	for i := range m {
		s = append(s, fmt.Sprintf("proc-%02d", i))
	}
	return s
}

func TestOneOwnsAll(t *testing.T) {
	env := newEnv(t)
	m := env.start("solo")
	env.waitFor("solo owns all partitions", func() bool { return len(m.c.Owned()) == testParts })
	env.checkBalanced(m)
	env.stopAll()
	env.rec.check(t)
}

// TestShareStopRestart: three processors share the partitions evenly; one
// stops cleanly and its partitions move to the others with higher epochs;
// it comes back and the partitions rebalance evenly. No partition is ever
// run by two processors at once.
func TestShareStopRestart(t *testing.T) {
	env := newEnv(t)
	a, b, c := env.start("a"), env.start("b"), env.start("c")
	env.waitFor("three share evenly", func() bool { return env.balanced(a, b, c) })
	env.checkBalanced(a, b, c)

	was := c.c.Owned()
	epochs := env.rec.epochs()
	c.stop(t)
	if got := c.c.Owned(); len(got) != 0 {
		t.Fatalf("stopped processor still owns %v", got)
	}
	stopped := time.Now()
	env.waitFor("two own everything", func() bool { return env.balanced(a, b) })
	t.Logf("clean handover of %d partitions took %v", len(was), time.Since(stopped))
	now := env.rec.epochs()
	for _, p := range was {
		if now[p] <= epochs[p] {
			t.Errorf("partition %d: epoch after move %d, want > %d", p, now[p], epochs[p])
		}
	}

	c = env.start("c") // a restart under the same id
	env.waitFor("three share evenly again", func() bool { return env.balanced(a, b, c) })
	env.checkBalanced(a, b, c)
	env.stopAll()
	env.rec.check(t)
}

// TestCrashFailoverAndFence: a processor loses its broker connection
// without releasing anything (as if killed). Its partitions move within the
// failover bound, and its stale epochs are refused by the fence.
func TestCrashFailoverAndFence(t *testing.T) {
	env := newEnv(t)
	a, b, dead := env.start("a"), env.start("b"), env.start("dead")
	env.waitFor("three share evenly", func() bool { return env.balanced(a, b, dead) })

	was := dead.c.Owned()
	epochs := env.rec.epochs()
	dead.nc.Close() // no heartbeats, no release: only expiry frees its leases
	crashed := time.Now()
	env.waitFor("survivors own everything", func() bool { return env.balanced(a, b) })
	t.Logf("crash failover of %d partitions took %v", len(was), time.Since(crashed))
	if got := dead.c.Owned(); len(got) != 0 {
		t.Errorf("dead processor still believes it owns %v", got)
	}

	now := env.rec.epochs()
	for _, p := range was {
		if now[p] <= epochs[p] {
			t.Errorf("partition %d: epoch after failover %d, want > %d", p, now[p], epochs[p])
		}
		// The zombie wakes up and tries to write with its old epoch.
		err := env.fence.CheckAndRaise(t.Context(), p, epochs[p])
		if !errors.Is(err, ErrFenced) {
			t.Errorf("partition %d: zombie write with epoch %d: got %v, want ErrFenced", p, epochs[p], err)
		}
		// The current owner still writes.
		if err := env.fence.CheckAndRaise(t.Context(), p, now[p]); err != nil {
			t.Errorf("partition %d: owner write with epoch %d: %v", p, now[p], err)
		}
	}
	env.stopAll()
	env.rec.check(t)
}

func TestFence(t *testing.T) {
	env := newEnv(t)
	ctx := t.Context()
	f := env.fence
	for _, tc := range []struct {
		epoch uint64
		want  error
	}{
		{5, nil},
		{5, nil}, // the owner writes again
		{4, ErrFenced},
		{9, nil}, // a new owner
		{5, ErrFenced},
		{8, ErrFenced},
		{9, nil},
	} {
		if err := f.CheckAndRaise(ctx, 3, tc.epoch); !errors.Is(err, tc.want) {
			t.Errorf("CheckAndRaise(3, %d): got %v, want %v", tc.epoch, err, tc.want)
		}
	}
	if err := f.CheckAndRaise(ctx, 4, 1); err != nil {
		t.Errorf("partitions are independent: CheckAndRaise(4, 1): %v", err)
	}

	// Concurrent writers: every refusal is of an epoch below one admitted
	// earlier, and the highest epoch always wins.
	var wg sync.WaitGroup
	var mu sync.Mutex
	admitted := map[uint64]bool{}
	for e := uint64(10); e < 30; e++ {
		wg.Go(func() {
			err := f.CheckAndRaise(ctx, 7, e)
			if err != nil && !errors.Is(err, ErrFenced) {
				t.Errorf("CheckAndRaise(7, %d): %v", e, err)
			}
			mu.Lock()
			admitted[e] = err == nil
			mu.Unlock()
		})
	}
	wg.Wait()
	if !admitted[29] {
		t.Error("the highest epoch 29 was refused")
	}
	if err := f.CheckAndRaise(ctx, 7, 28); !errors.Is(err, ErrFenced) {
		t.Errorf("after 29, CheckAndRaise(7, 28): got %v, want ErrFenced", err)
	}
}

// env is one embedded broker with a network listener, so each processor
// gets its own connection and can lose it alone.
type env struct {
	t       *testing.T
	brk     *broker.Broker
	fence   *Fence
	rec     *recorder
	members []*member
}

type member struct {
	c      *Coordinator
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan error
}

func newEnv(t *testing.T) *env {
	t.Helper()
	brk, err := broker.Open(t.Context(), broker.Config{
		DataDir:    t.TempDir(),
		ListenAddr: "127.0.0.1:0",
		Partitions: testParts,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, brk: brk}
	t.Cleanup(func() {
		e.stopAll()
		brk.Close()
	})
	e.fence, err = NewFence(t.Context(), brk.JetStream(), 1)
	if err != nil {
		t.Fatal(err)
	}
	e.rec = &recorder{fence: e.fence, owner: map[int]string{}, last: map[int]uint64{}}
	return e
}

func (e *env) start(id string) *member {
	t := e.t
	t.Helper()
	nc, err := nats.Connect(e.brk.ClientURL(), nats.MaxReconnects(0))
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := NewCoordinator(t.Context(), js, CoordinatorConfig{
		ID: id, Partitions: testParts, LeaseTTL: testTTL, Log: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &member{c: c, nc: nc, cancel: cancel, done: make(chan error, 1)}
	go func() { m.done <- c.Run(ctx, e.rec.handler(id)) }()
	e.members = append(e.members, m)
	return m
}

// stop cancels the member's Run and waits for it to return.
func (m *member) stop(t *testing.T) {
	t.Helper()
	if m.cancel == nil {
		return
	}
	m.cancel()
	m.cancel = nil
	select {
	case err := <-m.done:
		if err != nil {
			t.Errorf("%s: Run: %v", m.c.ID(), err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: Run did not return after cancel", m.c.ID())
	}
	m.nc.Close()
}

func (e *env) stopAll() {
	for _, m := range e.members {
		m.stop(e.t)
	}
}

// balanced reports whether ms together own every partition exactly once,
// each ⌊P/n⌋ or ⌈P/n⌉ of them.
func (e *env) balanced(ms ...*member) bool {
	return e.balanceErr(ms...) == nil
}

func (e *env) checkBalanced(ms ...*member) {
	e.t.Helper()
	if err := e.balanceErr(ms...); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) balanceErr(ms ...*member) error {
	seen := map[int]string{}
	lo := testParts / len(ms)
	hi := (testParts + len(ms) - 1) / len(ms)
	for _, m := range ms {
		owned := m.c.Owned()
		if len(owned) < lo || len(owned) > hi {
			return fmt.Errorf("%s owns %d partitions, want %d..%d", m.c.ID(), len(owned), lo, hi)
		}
		for _, p := range owned {
			if o, dup := seen[p]; dup {
				return fmt.Errorf("partition %d owned by %s and %s", p, o, m.c.ID())
			}
			seen[p] = m.c.ID()
		}
	}
	if len(seen) != testParts {
		return fmt.Errorf("%d of %d partitions owned", len(seen), testParts)
	}
	return nil
}

// waitFor polls cond until it holds or the failover bound has passed.
func (e *env) waitFor(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(failoverBound)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("not within %v: %s", failoverBound, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// recorder is the test Handler: it runs partitions like a processor would
// (admitting itself at the fence first) and records every violation of
// exclusive, epoch-ordered ownership.
type recorder struct {
	fence *Fence

	mu         sync.Mutex
	owner      map[int]string // partition → processor running it now
	last       map[int]uint64 // partition → latest epoch handed out
	violations []string
}

func (r *recorder) handler(id string) Handler {
	return HandlerFunc(func(ctx context.Context, p int, epoch uint64) error {
		r.mu.Lock()
		if o := r.owner[p]; o != "" {
			r.violations = append(r.violations, fmt.Sprintf("partition %d acquired by %s while %s runs it", p, id, o))
		}
		if epoch <= r.last[p] {
			r.violations = append(r.violations, fmt.Sprintf("partition %d: epoch %d after %d", p, epoch, r.last[p]))
		}
		r.owner[p], r.last[p] = id, epoch
		r.mu.Unlock()

		// Like a checkpoint write: a rightful owner is always admitted.
		if err := r.fence.CheckAndRaise(ctx, p, epoch); err != nil && ctx.Err() == nil {
			r.mu.Lock()
			r.violations = append(r.violations, fmt.Sprintf("partition %d: owner %s with epoch %d: %v", p, id, epoch, err))
			r.mu.Unlock()
		}
		<-ctx.Done()

		r.mu.Lock()
		if r.owner[p] == id {
			delete(r.owner, p)
		}
		r.mu.Unlock()
		return nil
	})
}

func (r *recorder) epochs() map[int]uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[int]uint64, len(r.last))
	for p, e := range r.last {
		out[p] = e
	}
	return out
}

func (r *recorder) check(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, v := range r.violations {
		t.Error(v)
	}
	if len(r.owner) != 0 {
		t.Errorf("partitions still running after every Run returned: %v", r.owner)
	}
}

// TestHandlerFailureStopsRun: a handler error before its lease ends stops
// Run, which returns it after releasing everything.
func TestHandlerFailureStopsRun(t *testing.T) {
	env := newEnv(t)
	c, err := NewCoordinator(t.Context(), env.brk.JetStream(), CoordinatorConfig{
		ID: "failing", Partitions: testParts, LeaseTTL: testTTL,
	})
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	err = c.Run(t.Context(), HandlerFunc(func(ctx context.Context, p int, _ uint64) error {
		if p == 5 {
			return boom
		}
		<-ctx.Done()
		return nil
	}))
	if !errors.Is(err, boom) {
		t.Fatalf("Run: got %v, want boom", err)
	}
	if got := c.Owned(); len(got) != 0 {
		t.Errorf("after Run returned, owns %v", got)
	}
	// Everything was released: another processor takes all at once.
	m := env.start("next")
	env.waitFor("next owns all partitions", func() bool { return len(m.c.Owned()) == testParts })
}
