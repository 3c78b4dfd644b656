package processor

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/broker"
	"github.com/pulsebase/pulsebase/internal/window"
)

// Reprocessing rebuilds users' derived data from the retained SAMPLES stream after an
// algorithm change (docs/processor-dataflow.md, "Reprocess"). A request goes into the
// REPROCESS key-value bucket; the owner of each partition it concerns takes the requests
// in order between two batches of live messages: it notes the stream position it had
// reached (Until) and replays the partition from its first message up to Until, applying
// the samples of the users concerned only. The first time the replay meets such a user,
// every derived record of theirs is deleted and their in-memory state starts empty; from
// then on their samples are counted again through the same exactly-once rules. Live
// messages after Until wait in the stream and are applied when the replay is done, so
// nothing is lost and nothing counted twice. The replay's progress (the last replayed
// sequence and the users reset so far) is committed with every batch, in the partition's
// rebuild record, so a crash or a handover resumes it where it stopped.
//
// A user with no retained samples keeps what was derived for them; the replay applies
// today's consent decisions, so a category whose consent was revoked is not rebuilt.

// BucketReprocess is the key-value bucket of reprocessing requests.
const BucketReprocess = "REPROCESS"

// KindRebuild is a partition's rebuild record (user PendingOwner(p), key "").
const KindRebuild = "rebuild"

// ReprocessRequest asks for a rebuild of one user's derived data, or everyone's.
type ReprocessRequest struct {
	// ID orders requests: a zero-padded Unix time in nanoseconds.
	ID        string    `json:"id"`
	User      string    `json:"user,omitempty"` // internal id; "" with All
	All       bool      `json:"all,omitempty"`
	Requested time.Time `json:"requested"`
	By        string    `json:"by,omitempty"` // who asked, for the record
}

// rebuild is a partition's rebuild record.
type rebuild struct {
	// Last is the ID of the latest request this partition has taken; Complete reports
	// that its replay is finished.
	Last     string `json:"last"`
	Complete bool   `json:"complete"`
	User     string `json:"user,omitempty"`
	All      bool   `json:"all,omitempty"`
	// Until is the last sequence the replay covers, Done the last one replayed.
	Until uint64 `json:"until"`
	Done  uint64 `json:"done"`
	// Reset lists the users whose derived data the replay has deleted and rebuilds.
	Reset []string `json:"reset,omitempty"`
}

func openReprocessBucket(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: BucketReprocess, Description: "Pulsebase reprocessing requests", History: 1,
		TTL: 30 * 24 * time.Hour, Storage: jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("open %s bucket: %w", BucketReprocess, err)
	}
	return kv, nil
}

// RequestReprocess records a request to rebuild user's derived data (all: everyone's) and
// returns it. The owners of the partitions concerned take it within seconds.
func RequestReprocess(ctx context.Context, js jetstream.JetStream, user string, all bool, by string) (ReprocessRequest, error) {
	if (user == "") == !all {
		return ReprocessRequest{}, pulsebase.Errorf(pulsebase.EINVALID, "reprocess one user or all, not both nor neither")
	}
	kv, err := openReprocessBucket(ctx, js)
	if err != nil {
		return ReprocessRequest{}, err
	}
	now := time.Now().UTC()
	req := ReprocessRequest{ID: fmt.Sprintf("%020d", now.UnixNano()), User: user, All: all, Requested: now, By: by}
	b, err := json.Marshal(req)
	if err != nil {
		return ReprocessRequest{}, err
	}
	if _, err := kv.Create(ctx, req.ID, b); err != nil {
		return ReprocessRequest{}, fmt.Errorf("record reprocess request: %w", err)
	}
	return req, nil
}

// ReprocessStatus is how far a request has come.
type ReprocessStatus struct {
	Request ReprocessRequest `json:"request"`
	// Partitions is how many partitions the request concerns, Done how many have
	// finished it.
	Partitions int  `json:"partitions"`
	Done       int  `json:"done"`
	Complete   bool `json:"complete"`
}

// GetReprocess returns the request id and its progress, read from the partitions' rebuild
// records; partitions is the SAMPLES stream's partition count.
func GetReprocess(ctx context.Context, js jetstream.JetStream, store pulsebase.DerivedStore, id string, partitions int) (ReprocessStatus, error) {
	kv, err := openReprocessBucket(ctx, js)
	if err != nil {
		return ReprocessStatus{}, err
	}
	e, err := kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrInvalidKey) {
		return ReprocessStatus{}, pulsebase.Errorf(pulsebase.ENOTFOUND, "no such reprocess request")
	}
	if err != nil {
		return ReprocessStatus{}, err
	}
	var st ReprocessStatus
	if err := json.Unmarshal(e.Value(), &st.Request); err != nil {
		return ReprocessStatus{}, err
	}
	ps := make([]int, 0, partitions)
	if st.Request.All {
		for p := range partitions {
			ps = append(ps, p)
		}
	} else {
		ps = append(ps, broker.Partition(st.Request.User, partitions))
	}
	st.Partitions = len(ps)
	for _, p := range ps {
		rb, err := loadRebuild(ctx, store, p)
		if err != nil {
			return ReprocessStatus{}, err
		}
		if rb.Last > id || rb.Last == id && rb.Complete {
			st.Done++
		}
	}
	st.Complete = st.Done == st.Partitions
	return st, nil
}

func loadRebuild(ctx context.Context, store pulsebase.DerivedStore, p int) (rebuild, error) {
	var rb rebuild
	err := readPartitionRecord(ctx, store, p, KindRebuild, &rb)
	return rb, err
}

// readPartitionRecord decodes partition p's record of kind (JSON, user PendingOwner(p), key
// "") into v, and leaves v alone when there is none.
func readPartitionRecord(ctx context.Context, store pulsebase.DerivedStore, p int, kind string, v any) error {
	recs, err := store.DerivedRecords(ctx, PendingOwner(p), kind, "", "")
	if err != nil || len(recs) == 0 {
		return err
	}
	if err := json.Unmarshal(recs[0].Ciphertext, v); err != nil {
		return fmt.Errorf("%s record of partition %d: %w", kind, p, err)
	}
	return nil
}

// requests is the Runner's view of the REPROCESS bucket, refreshed at most every second.
type requests struct {
	mu      sync.Mutex
	kv      jetstream.KeyValue
	read    time.Time
	pending []ReprocessRequest
}

func (q *requests) list(ctx context.Context, js jetstream.JetStream) ([]ReprocessRequest, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if time.Since(q.read) < time.Second {
		return q.pending, nil
	}
	if q.kv == nil {
		kv, err := openReprocessBucket(ctx, js)
		if err != nil {
			return nil, err
		}
		q.kv = kv
	}
	lister, err := q.kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var out []ReprocessRequest
	for key := range lister.Keys() {
		e, err := q.kv.Get(ctx, key)
		if err != nil {
			continue // expired or deleted meanwhile
		}
		var r ReprocessRequest
		if json.Unmarshal(e.Value(), &r) == nil && r.ID == key {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b ReprocessRequest) int { return cmp.Compare(a.ID, b.ID) })
	q.pending, q.read = out, time.Now()
	return out, nil
}

// nextRebuild returns the oldest request for this partition newer than the last one it
// took, if any.
func (pr *partition) nextRebuild(ctx context.Context) (ReprocessRequest, bool) {
	list, err := pr.r.reqs.list(ctx, pr.r.js)
	if err != nil {
		pr.r.cfg.Log.Warn("read reprocess requests", "err", err)
		return ReprocessRequest{}, false
	}
	for _, req := range list {
		if req.ID <= pr.lastRebuild {
			continue
		}
		if req.All || broker.Partition(req.User, pr.r.cfg.Partitions) == pr.p {
			return req, true
		}
		pr.lastRebuild = req.ID // not ours; nothing to wait for
	}
	return ReprocessRequest{}, false
}

// startRebuild commits what is pending, then the start of the replay of req.
func (pr *partition) startRebuild(ctx context.Context, req ReprocessRequest) error {
	if err := pr.commit(ctx); err != nil {
		return err
	}
	pr.rb = &rebuild{Last: req.ID, User: req.User, All: req.All, Until: pr.seq}
	pr.lastRebuild = req.ID
	pr.r.cfg.Log.Info("reprocess: replaying partition", "partition", pr.p, "request", req.ID, "until", pr.seq, "all", req.All)
	return pr.commit(ctx)
}

// replay runs the rebuild of pr.rb to its end.
func (pr *partition) replay(ctx context.Context) error {
	rb := pr.rb
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{broker.PartitionFilter(pr.p)}, MaxResetAttempts: 2}
	if !rb.All {
		cfg.FilterSubjects = []string{broker.SampleSubject(pr.p, rb.User)}
	}
	if rb.Done > 0 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = rb.Done + 1
	}
	reset := map[string]bool{}
	for _, u := range rb.Reset {
		reset[u] = true
	}
	finish := func() error {
		rb.Complete, rb.Done = true, rb.Until
		if err := pr.commit(ctx); err != nil {
			return err
		}
		pr.rb = nil
		pr.r.cfg.Log.Info("reprocess: partition rebuilt", "partition", pr.p, "request", rb.Last, "users", len(rb.Reset))
		return nil
	}
	if rb.Done >= rb.Until {
		return finish()
	}
	cons, err := pr.r.js.OrderedConsumer(ctx, broker.StreamSamples, cfg)
	if err != nil {
		return err
	}
	last := time.Now()
	for ctx.Err() == nil {
		batch, err := cons.Fetch(pr.r.cfg.Batch, jetstream.FetchMaxWait(pr.r.cfg.Flush))
		if err != nil {
			return err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			meta, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("message metadata: %w", err)
			}
			if meta.Sequence.Stream > rb.Until {
				return finish()
			}
			if _, user, ok := broker.ParseSampleSubject(m.Subject()); ok && !reset[user] {
				// First meeting: commit what is pending, then delete the user's derived
				// data and start their state from nothing, before any of it is read.
				if err := pr.commit(ctx); err != nil {
					return err
				}
				reset[user] = true
				rb.Reset = append(rb.Reset, user)
				pr.resets = append(pr.resets, user)
				pr.dropUser(user)
				if err := pr.commit(ctx); err != nil {
					return err
				}
			}
			if err := pr.apply(ctx, m); err != nil {
				return err
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return err
		}
		if n == 0 {
			// Nothing more of these subjects (had there been a message after Until, it
			// would have ended the replay).
			info, err := cons.Info(ctx)
			if err != nil {
				return err
			}
			if info.NumPending == 0 {
				return finish()
			}
		}
		if pr.applied >= pr.r.cfg.MaxPending || time.Since(last) >= pr.r.cfg.Flush {
			last = time.Now()
			if err := pr.commit(ctx); err != nil {
				return err
			}
		}
	}
	return ctx.Err()
}

// dropUser forgets user's in-memory state (and their pending recomputation): the next
// message loads it afresh from the store, where the commit just deleted everything.
func (pr *partition) dropUser(user string) {
	delete(pr.users, user)
	if pr.pending[user] {
		pr.setPending(user, false)
	}
}

// position names a commit for the ids of its change messages: the owner's epoch (each
// owner has its own) and its commit count, unique however commits fall.
func (pr *partition) position() string {
	return strconv.Itoa(pr.p) + "-" + strconv.FormatUint(pr.epoch, 10) + "-" + strconv.FormatUint(pr.commits, 10)
}

// freshState is the empty window state of a user.
func (r *Runner) freshState() *window.State {
	s := window.NewState(r.cfg.Horizon, window.WithMinuteHorizon(r.cfg.MinuteHorizon))
	s.ForgetIDs()
	return s
}
