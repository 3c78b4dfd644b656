package processor

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pulsebase/pulsebase/internal/broker"
)

// KV buckets of the ownership protocol. They are shared by every processor
// of a deployment and must never be deleted while data exists: the fencing
// epochs are revisions of PARTITION_LEASES, and a recreated bucket would
// start them again at 1, below the epochs the stores have already seen.
const (
	BucketMembers = "PROCESSORS"       // key: processor id; value: memberInfo; TTL: lease TTL
	BucketLeases  = "PARTITION_LEASES" // key: partition; value: leaseInfo; TTL: lease TTL
	BucketFence   = "PARTITION_FENCE"  // key: partition; value: highest epoch admitted (decimal)
)

// DefaultLeaseTTL is CoordinatorConfig.LeaseTTL when zero. With it a dead
// processor's partitions are running elsewhere after at most about 8 s
// (TTL + one heartbeat), inside the 10 s failover bound.
const DefaultLeaseTTL = 6 * time.Second

// ErrFenced is returned by Fence.CheckAndRaise when a newer owner of the
// partition has already been admitted: the caller is a former owner and must
// stop working on the partition without writing.
var ErrFenced = errors.New("partition fenced: a newer owner holds it")

// Handler runs the partitions a Coordinator acquires.
type Handler interface {
	// Acquired is called, on its own goroutine, when this processor becomes
	// the owner of partition p with fencing epoch epoch, strictly greater
	// than every earlier epoch of p. It runs the partition until ctx is
	// cancelled (lease lost or released) and must return promptly then:
	// until it returns the partition is not handed to anyone else (on a
	// clean release), or the lease may already have expired (on a loss), in
	// which case only the fence stops its writes.
	//
	// Returning before ctx is done releases the partition; it is acquired
	// again later, by this or another processor, with a new epoch. A non-nil
	// error returned before ctx is done also stops Run, which returns it.
	Acquired(ctx context.Context, p int, epoch uint64) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, p int, epoch uint64) error

// Acquired calls f(ctx, p, epoch).
func (f HandlerFunc) Acquired(ctx context.Context, p int, epoch uint64) error {
	return f(ctx, p, epoch)
}

// CoordinatorConfig configures a Coordinator. Every processor of a
// deployment must use the same Partitions and LeaseTTL.
type CoordinatorConfig struct {
	// ID is this processor's unique id: letters, digits, '-', '_' and '='.
	// Empty means a random one. Reusing the id of a live processor breaks
	// the protocol; reusing a dead one's id after a restart is fine.
	ID string

	// Partitions is the SAMPLES partition count; zero means
	// broker.DefaultPartitions. It must match the stream's.
	Partitions int

	// LeaseTTL is how long a lease and a membership entry live without a
	// heartbeat; zero means DefaultLeaseTTL. Heartbeats are sent every
	// LeaseTTL/3. A dead processor's partitions are taken over after about
	// LeaseTTL + LeaseTTL/3. If the buckets already exist with another TTL,
	// theirs is used (and a warning logged): the server's expiry is what
	// safety depends on.
	LeaseTTL time.Duration

	// Replicas is the replication factor of the buckets when this
	// coordinator creates them; zero means 1. Use 3 on a cluster.
	Replicas int

	// Log receives membership and ownership changes; nil discards them.
	Log *slog.Logger
}

var validID = regexp.MustCompile(`^[A-Za-z0-9_=-]{1,64}$`)

// Coordinator takes part in the ownership protocol for one processor: it
// announces the processor, computes the partition assignment from the live
// processors, acquires, renews and releases leases, and runs a Handler for
// each partition it holds. See docs/processor.md, "Partition ownership".
type Coordinator struct {
	id        string
	parts     int
	ttl       time.Duration
	heartbeat time.Duration // ttl/3
	margin    time.Duration // a lease counts as held until last renew + ttl - margin
	log       *slog.Logger

	members jetstream.KeyValue
	leases  jetstream.KeyValue

	// kick wakes the loop early: a member joined or left, a lease was
	// released, or a handler returned.
	kick chan struct{}

	running sync.Mutex // held by Run; Run is not reentrant

	mu   sync.Mutex
	held map[int]*lease // owned by Run's goroutine; guarded by mu for Owned

	// Assignment cache: recomputed only when the member set changes.
	assignKey string
	assigned  []string // partition → member id

	// retryAfter holds partitions whose handler returned on its own: they
	// are not acquired again before this time, so a handler that keeps
	// returning at once does not spin. Owned by Run's goroutine.
	retryAfter map[int]time.Time
}

// lease is one partition held (or being given up) by this coordinator.
type lease struct {
	p      int
	epoch  uint64 // revision at acquisition; the fencing token
	rev    uint64 // revision of the last successful write (CAS base)
	ctx    context.Context
	cancel context.CancelFunc
	expire *time.Timer   // cancels ctx when the lease's local validity ends
	done   chan struct{} // closed when Acquired has returned
	err    error         // Acquired's result; read after done

	releasing bool // ctx cancelled by us on purpose: delete the key once done
	lost      bool // the key is no longer ours: never write it again
}

type memberInfo struct {
	Partitions int       `json:"partitions"`
	Started    time.Time `json:"started"`
}

type leaseInfo struct {
	Owner string `json:"owner"`
	Epoch uint64 `json:"epoch,omitempty"` // zero in the creating write: the epoch is its revision
}

// NewCoordinator creates or opens the membership and lease buckets. It does
// not announce the processor; Run does.
func NewCoordinator(ctx context.Context, js jetstream.JetStream, cfg CoordinatorConfig) (*Coordinator, error) {
	if cfg.Partitions == 0 {
		cfg.Partitions = broker.DefaultPartitions
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.ID == "" {
		var b [8]byte
		_, _ = rand.Read(b[:]) // never fails
		cfg.ID = hex.EncodeToString(b[:])
	}
	switch {
	case !validID.MatchString(cfg.ID):
		return nil, fmt.Errorf("processor id %q: want 1-64 of [A-Za-z0-9_=-]", cfg.ID)
	case cfg.Partitions < 1 || cfg.Partitions > 4096:
		return nil, fmt.Errorf("partitions %d out of range 1..4096", cfg.Partitions)
	case cfg.LeaseTTL < 300*time.Millisecond:
		// Below this, heartbeats every TTL/3 compete with ordinary latency.
		return nil, fmt.Errorf("lease ttl %v below 300ms", cfg.LeaseTTL)
	}

	c := &Coordinator{
		id:    cfg.ID,
		parts: cfg.Partitions,
		log:   cfg.Log.With("processor", cfg.ID),
		kick:  make(chan struct{}, 1),
		held:  make(map[int]*lease),

		retryAfter: make(map[int]time.Time),
	}
	var err error
	var ttls [2]time.Duration
	for i, b := range []struct {
		name string
		kv   *jetstream.KeyValue
	}{{BucketMembers, &c.members}, {BucketLeases, &c.leases}} {
		*b.kv, ttls[i], err = openTTLBucket(ctx, js, b.name, cfg.LeaseTTL, cfg.Replicas)
		if err != nil {
			return nil, err
		}
	}
	c.ttl = min(ttls[0], ttls[1]) // they differ only if someone edited one by hand
	if c.ttl != cfg.LeaseTTL {
		c.log.Warn("lease ttl differs from the buckets'; using the buckets'", "configured", cfg.LeaseTTL, "ttl", c.ttl)
	}
	c.heartbeat = c.ttl / 3
	// The margin absorbs clock-rate differences between this process and
	// the server, and the time a cancelled handler needs to return.
	c.margin = c.ttl / 6
	return c, nil
}

// openTTLBucket creates bucket with the given TTL, or opens it as it is and
// returns its actual TTL.
func openTTLBucket(ctx context.Context, js jetstream.JetStream, name string, ttl time.Duration, replicas int) (jetstream.KeyValue, time.Duration, error) {
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:   name,
		TTL:      ttl,
		History:  1,
		Storage:  jetstream.FileStorage,
		Replicas: replicas,
	})
	if errors.Is(err, jetstream.ErrBucketExists) {
		kv, err = js.KeyValue(ctx, name) // same name, other settings
	}
	if err != nil {
		return nil, 0, fmt.Errorf("open bucket %s: %w", name, err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("bucket %s status: %w", name, err)
	}
	if st.TTL() <= 0 {
		return nil, 0, fmt.Errorf("bucket %s has no TTL: leases would never expire", name)
	}
	return kv, st.TTL(), nil
}

// ID returns this processor's id.
func (c *Coordinator) ID() string { return c.id }

// Owned returns, in increasing order, the partitions this processor holds a
// valid lease on and is running.
func (c *Coordinator) Owned() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ps []int
	for p, l := range c.held {
		if !l.releasing && !l.lost && l.ctx.Err() == nil {
			ps = append(ps, p)
		}
	}
	slices.Sort(ps)
	return ps
}

// Run takes part in the protocol until ctx is done, calling h.Acquired for
// every partition it acquires. On return it has stopped every handler and
// released every lease it still held, so the other processors take its
// partitions over at once. It returns nil after ctx is done, or the error of
// a handler that failed.
func (c *Coordinator) Run(ctx context.Context, h Handler) error {
	if !c.running.TryLock() {
		return errors.New("coordinator already running")
	}
	defer c.running.Unlock()

	// KV calls outlive ctx: a stopping coordinator still renews and then
	// deletes its leases. Each call has its own timeout.
	opCtx := context.WithoutCancel(ctx)
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	c.watch(watchCtx)

	started := time.Now()
	c.announce(opCtx, started)
	c.log.Info("processor joined", "partitions", c.parts, "lease_ttl", c.ttl)

	tick := time.NewTicker(c.heartbeat)
	defer tick.Stop()
	var (
		stopping, withdrawn bool
		failure             error
		renew               bool
	)
	for {
		if err := c.reap(opCtx); err != nil && failure == nil {
			failure = err
		}
		if ctx.Err() != nil || failure != nil {
			stopping = true
		}
		if stopping {
			c.stop(opCtx, !withdrawn)
			withdrawn = true
		}
		if renew {
			if !stopping {
				c.announce(opCtx, started)
			}
			c.renew(opCtx)
		}
		if !stopping {
			c.rebalance(opCtx, h)
		}
		if stopping && c.heldCount() == 0 {
			c.log.Info("processor left")
			return failure
		}

		renew = false
		var done <-chan struct{}
		if !stopping {
			done = ctx.Done()
		}
		select {
		case <-done:
		case <-tick.C:
			renew = true
		case <-c.kick:
		}
	}
}

// announce writes this processor's membership entry (a heartbeat).
func (c *Coordinator) announce(ctx context.Context, started time.Time) {
	v, _ := json.Marshal(memberInfo{Partitions: c.parts, Started: started.UTC()})
	ctx, cancel := context.WithTimeout(ctx, c.heartbeat)
	defer cancel()
	if _, err := c.members.Put(ctx, c.id, v); err != nil {
		c.log.Warn("membership heartbeat failed", "err", err)
	}
}

// stop cancels every handler and, if withdraw is set, deletes the
// membership entry, so the others compute an assignment without this
// processor right away. The leases are deleted by reap as the handlers
// return.
func (c *Coordinator) stop(ctx context.Context, withdraw bool) {
	c.mu.Lock()
	n := 0
	for _, l := range c.held {
		if !l.releasing && !l.lost {
			l.releasing = true
			l.cancel()
			n++
		}
	}
	c.mu.Unlock()
	if !withdraw {
		return
	}
	c.assigned, c.assignKey = nil, ""
	ctx, cancel := context.WithTimeout(ctx, c.heartbeat)
	defer cancel()
	if err := c.members.Delete(ctx, c.id); err != nil {
		c.log.Warn("withdraw membership failed", "err", err)
	}
	c.log.Info("processor stopping", "releasing", n)
}

// renew extends every lease still ours, including those whose handler is
// winding down, so no one else starts the partition before it has returned.
func (c *Coordinator) renew(ctx context.Context) {
	var failed int
	var firstErr error
	for _, l := range c.snapshot() {
		if l.lost {
			continue
		}
		sent := time.Now()
		v, _ := json.Marshal(leaseInfo{Owner: c.id, Epoch: l.epoch})
		rctx, cancel := context.WithTimeout(ctx, c.heartbeat)
		rev, err := c.leases.Update(rctx, leaseKey(l.p), v, l.rev)
		cancel()
		c.mu.Lock()
		switch {
		case err == nil:
			l.rev = rev
			// Stop fails if the validity already ran out: the renewal came
			// too late to count, the handler has been told to stop.
			if l.expire.Stop() {
				l.expire.Reset(c.validFor(sent))
			} else if !l.releasing {
				l.releasing = true // we still hold the key: delete it when done
				c.log.Warn("lease expired locally before renewal", "partition", l.p, "epoch", l.epoch)
			}
		case errors.Is(err, jetstream.ErrKeyRevisionMismatch), errors.Is(err, jetstream.ErrKeyNotFound):
			// Expired on the server or taken over: not ours any more.
			l.lost = true
			l.cancel()
			c.log.Warn("lease lost", "partition", l.p, "epoch", l.epoch, "err", err)
		default:
			// Unknown outcome: keep trying; the expiry timer stops the
			// handler if no renewal gets through in time.
			if failed++; firstErr == nil {
				firstErr = err
			}
		}
		c.mu.Unlock()
	}
	if failed > 0 {
		c.log.Warn("lease renewals failed", "leases", failed, "err", firstErr)
	}
}

// validFor is how long from now a lease written at sent stays valid here:
// the server expires it no earlier than sent + ttl.
func (c *Coordinator) validFor(sent time.Time) time.Duration {
	return time.Until(sent.Add(c.ttl - c.margin))
}

// rebalance computes the assignment from the live members, gives up the
// partitions no longer assigned here and tries to acquire the assigned ones
// not yet held.
func (c *Coordinator) rebalance(ctx context.Context, h Handler) {
	members, err := c.liveMembers(ctx)
	if err != nil {
		c.log.Warn("list processors failed", "err", err)
		return
	}
	key := strings.Join(members, ",")
	if key != c.assignKey {
		c.assigned = assign(members, c.parts)
		c.assignKey = key
		c.log.Info("assignment changed", "processors", len(members), "mine", count(c.assigned, c.id))
	}

	c.mu.Lock()
	for p, l := range c.held {
		if c.assigned[p] != c.id && !l.releasing && !l.lost {
			l.releasing = true
			l.cancel()
			c.log.Info("releasing partition", "partition", p, "epoch", l.epoch, "to", c.assigned[p])
		}
	}
	c.mu.Unlock()

	for p, owner := range c.assigned {
		if owner != c.id {
			continue
		}
		if t, ok := c.retryAfter[p]; ok {
			if time.Now().Before(t) {
				continue
			}
			delete(c.retryAfter, p)
		}
		c.mu.Lock()
		_, busy := c.held[p]
		c.mu.Unlock()
		if !busy {
			c.acquire(ctx, h, p)
		}
	}
}

// liveMembers returns the sorted ids in the membership bucket, always
// including this processor.
func (c *Coordinator) liveMembers(ctx context.Context) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.heartbeat)
	defer cancel()
	lister, err := c.members.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	defer lister.Stop()
	members := []string{c.id}
	for k := range lister.Keys() {
		if k != c.id {
			members = append(members, k)
		}
	}
	if ctx.Err() != nil {
		return nil, ctx.Err() // the listing may be cut short
	}
	slices.Sort(members)
	return members, nil
}

// acquire tries to create partition p's lease and, if that succeeds, starts
// its handler.
func (c *Coordinator) acquire(ctx context.Context, h Handler, p int) {
	v, _ := json.Marshal(leaseInfo{Owner: c.id})
	sent := time.Now()
	actx, cancel := context.WithTimeout(ctx, c.heartbeat)
	rev, err := c.leases.Create(actx, leaseKey(p), v)
	cancel()
	if errors.Is(err, jetstream.ErrKeyExists) {
		return // still held by its former owner; retried on the next pass
	}
	if err != nil {
		c.log.Warn("acquire failed", "partition", p, "err", err)
		return
	}
	valid := c.validFor(sent)
	if valid <= 0 {
		// The create took so long that the lease is nearly expired already.
		// Let it expire: deleting or renewing it would be just as slow.
		c.log.Warn("lease acquired too late to use", "partition", p)
		return
	}

	// ctx is not cancelled with Run's: a stopping Run cancels each handler
	// itself, like on any release.
	hctx, hcancel := context.WithCancel(ctx)
	l := &lease{p: p, epoch: rev, rev: rev, ctx: hctx, cancel: hcancel, done: make(chan struct{})}
	l.expire = time.AfterFunc(valid, hcancel)
	c.mu.Lock()
	c.held[p] = l
	c.mu.Unlock()
	c.log.Info("acquired partition", "partition", p, "epoch", rev)

	go func() {
		err := h.Acquired(hctx, p, rev)
		c.mu.Lock()
		l.err = err
		c.mu.Unlock()
		close(l.done)
		c.wake()
	}()
}

// reap finishes the leases whose handler has returned: a lease still ours
// is deleted (with its revision, so a successor's lease is never touched)
// and the partition forgotten. It returns the error of a handler that
// failed while it was still meant to run.
func (c *Coordinator) reap(ctx context.Context) error {
	var failure error
	for _, l := range c.snapshot() {
		select {
		case <-l.done:
		default:
			continue
		}
		c.mu.Lock()
		early := !l.releasing && !l.lost && l.ctx.Err() == nil
		lost, rev, herr := l.lost, l.rev, l.err
		l.expire.Stop()
		l.cancel()
		c.mu.Unlock()
		if early {
			c.retryAfter[l.p] = time.Now().Add(c.heartbeat)
		}
		if early && herr != nil {
			failure = fmt.Errorf("partition %d: %w", l.p, herr)
			c.log.Error("partition handler failed", "partition", l.p, "epoch", l.epoch, "err", herr)
		}
		if !lost {
			dctx, cancel := context.WithTimeout(ctx, c.heartbeat)
			err := c.leases.Delete(dctx, leaseKey(l.p), jetstream.LastRevision(rev))
			cancel()
			if err != nil {
				// It expires on its own after the TTL.
				c.log.Warn("release lease failed", "partition", l.p, "epoch", l.epoch, "err", err)
			}
		}
		c.mu.Lock()
		delete(c.held, l.p)
		c.mu.Unlock()
		c.log.Info("partition released", "partition", l.p, "epoch", l.epoch, "lost", lost)
	}
	return failure
}

func (c *Coordinator) snapshot() []*lease {
	c.mu.Lock()
	defer c.mu.Unlock()
	ls := make([]*lease, 0, len(c.held))
	for _, l := range c.held {
		ls = append(ls, l)
	}
	slices.SortFunc(ls, func(a, b *lease) int { return cmp.Compare(a.p, b.p) })
	return ls
}

func (c *Coordinator) heldCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.held)
}

func (c *Coordinator) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// watch wakes the loop when a processor joins or leaves and when a lease is
// released, so clean handovers do not wait for the next heartbeat. Expiries
// produce no event; the heartbeat pass notices them. If a watch cannot be
// set up the protocol still works, only at heartbeat pace.
func (c *Coordinator) watch(ctx context.Context) {
	mw, err := c.members.WatchAll(ctx)
	if err != nil {
		c.log.Warn("watch processors failed", "err", err)
	} else {
		go func() {
			seen := map[string]bool{}
			for e := range mw.Updates() {
				if e == nil {
					continue // end of the initial values
				}
				switch e.Operation() {
				case jetstream.KeyValuePut:
					if seen[e.Key()] {
						continue // a heartbeat
					}
					seen[e.Key()] = true
				default:
					delete(seen, e.Key())
				}
				c.wake()
			}
		}()
	}
	lw, err := c.leases.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		c.log.Warn("watch leases failed", "err", err)
		return
	}
	go func() {
		for e := range lw.Updates() {
			if e != nil && e.Operation() != jetstream.KeyValuePut {
				c.wake()
			}
		}
	}()
}

func leaseKey(p int) string { return strconv.Itoa(p) }

// assign maps each of n partitions to one of the members (sorted ids): the
// partition → member table every processor computes identically from the
// same member set. It is rendezvous (highest-random-weight) hashing with
// bounded load: (partition, member) pairs are taken in decreasing score
// order, and a member takes partitions up to ⌊n/m⌋, or one more for the
// first n mod m members that reach that. So loads differ by at most one
// (64 over 3 is 21/21/22), and a change of membership moves few partitions
// besides those of the member that came or went.
func assign(members []string, n int) []string {
	out := make([]string, n)
	m := len(members)
	if m == 0 {
		return out
	}
	type pair struct {
		score uint64
		p, m  int
	}
	pairs := make([]pair, 0, n*m)
	for i, id := range members {
		for p := range n {
			pairs = append(pairs, pair{score(id, p), p, i})
		}
	}
	slices.SortFunc(pairs, func(a, b pair) int {
		if c := cmp.Compare(b.score, a.score); c != 0 {
			return c
		}
		// Ties (vanishingly rare) broken by position for determinism.
		if c := cmp.Compare(a.p, b.p); c != 0 {
			return c
		}
		return cmp.Compare(a.m, b.m)
	})
	quota, extra := n/m, n%m
	load := make([]int, m)
	left := n
	for _, pr := range pairs {
		if left == 0 {
			break
		}
		if out[pr.p] != "" {
			continue
		}
		switch {
		case load[pr.m] < quota:
		case load[pr.m] == quota && extra > 0:
			extra--
		default:
			continue
		}
		load[pr.m]++
		out[pr.p] = members[pr.m]
		left--
	}
	return out
}

// score is the rendezvous weight of member id for partition p: FNV-1a of
// both, finished with the splitmix64 mixer so nearby inputs spread out.
func score(id string, p int) uint64 {
	h := fnv.New64a()
	h.Write([]byte(id))
	var b [9]byte
	b[0] = 0 // separator: ids cannot contain NUL
	binary.BigEndian.PutUint64(b[1:], uint64(p))
	h.Write(b[:])
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

func count(owners []string, id string) int {
	n := 0
	for _, o := range owners {
		if o == id {
			n++
		}
	}
	return n
}

// Fence is a reference fenced store: for each partition it keeps the
// highest epoch admitted, in the KV bucket PARTITION_FENCE, and refuses
// older ones. The SQL checkpoint does the same in the write itself
// ("UPDATE … WHERE partition = ? AND epoch <= ?"), which is what makes a
// fence airtight: the check and the write must be one atomic step, or a
// zombie could pass the check just before its successor raises the epoch.
// Fence is safe for concurrent use.
type Fence struct {
	kv jetstream.KeyValue
}

// NewFence creates or opens the PARTITION_FENCE bucket. replicas is its
// replication factor when created; zero means 1.
func NewFence(ctx context.Context, js jetstream.JetStream, replicas int) (*Fence, error) {
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:   BucketFence,
		History:  1,
		Storage:  jetstream.FileStorage,
		Replicas: max(replicas, 1),
	})
	if errors.Is(err, jetstream.ErrBucketExists) {
		kv, err = js.KeyValue(ctx, BucketFence)
	}
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", BucketFence, err)
	}
	return &Fence{kv: kv}, nil
}

// CheckAndRaise admits a writer of partition p holding epoch: if epoch is
// at least the highest epoch admitted for p, that becomes epoch and
// CheckAndRaise returns nil; otherwise it returns ErrFenced. Concurrent
// calls are linearized by compare-and-set on the key's revision.
func (f *Fence) CheckAndRaise(ctx context.Context, p int, epoch uint64) error {
	key := leaseKey(p)
	val := []byte(strconv.FormatUint(epoch, 10))
	for {
		e, err := f.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			_, err = f.kv.Create(ctx, key, val)
			if errors.Is(err, jetstream.ErrKeyExists) {
				continue // someone else was first; compare with theirs
			}
			if err != nil {
				return fmt.Errorf("fence partition %d: %w", p, err)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("fence partition %d: %w", p, err)
		}
		cur, err := strconv.ParseUint(string(e.Value()), 10, 64)
		if err != nil {
			return fmt.Errorf("fence partition %d: bad stored epoch %q", p, e.Value())
		}
		switch {
		case epoch < cur:
			return fmt.Errorf("partition %d epoch %d < %d: %w", p, epoch, cur, ErrFenced)
		case epoch == cur:
			return nil
		}
		_, err = f.kv.Update(ctx, key, val, e.Revision())
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue // raced with another writer; look again
		}
		if err != nil {
			return fmt.Errorf("fence partition %d: %w", p, err)
		}
		return nil
	}
}
