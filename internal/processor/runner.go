package processor

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/agg"
	"github.com/pulsebase/pulsebase/internal/broker"
	"github.com/pulsebase/pulsebase/internal/ingest"
	"github.com/pulsebase/pulsebase/internal/recommend"
	"github.com/pulsebase/pulsebase/internal/telemetry"
	"github.com/pulsebase/pulsebase/internal/vault"
	"github.com/pulsebase/pulsebase/internal/window"
)

// Consent is the consent decision point the runner asks before using a sample.
type Consent interface {
	Allowed(ctx context.Context, user string, c pulsebase.Category, p pulsebase.Purpose) (bool, error)
}

// DefaultDailyEvery is how often at most a user's daily metrics are recomputed by default.
// Series buckets (day totals included) follow every commit; the derived day — sleep
// sessions, resting heart rate, baselines — follows within seconds, which is what a
// wellness app needs of it, at a cost a stream of samples per user can bear (a
// recomputation reads the days around the sample).
const DefaultDailyEvery = 5 * time.Second

// RunnerConfig tunes a Runner.
type RunnerConfig struct {
	// Horizon is the live horizon of the in-memory windows; zero means window.DefaultHorizon.
	Horizon time.Duration
	// MinuteHorizon is how long minute buckets stay in memory; zero means 2 hours.
	MinuteHorizon time.Duration
	// Flush is the longest time between two commits (and change-feed publications); zero
	// means 250 ms.
	Flush time.Duration
	// Batch is the most messages fetched at once; zero means 2,000.
	Batch int
	// MaxPending is the most messages applied between two commits, a bound on memory when
	// a partition has a backlog; zero means 50,000. Commits are otherwise every Flush, so
	// the change feed carries a bucket at most once per Flush.
	MaxPending int
	// Partitions is the SAMPLES stream's partition count; zero means 64.
	Partitions int
	// DailyEvery is how long after a user's first sample since their last recomputation
	// their daily metrics and baselines are recomputed at the earliest; zero means
	// DefaultDailyEvery. A user whose recomputation takes long (a large journal) waits
	// dailyCostFactor times its last duration instead, and while the partition catches up
	// on a backlog recomputations wait dailyBacklogDelay, so that they never take more
	// than a small share of the partition's time.
	DailyEvery time.Duration
	// Rules, if not nil, is the recommendation rule library (recommend.go): a user's rules
	// run after each commit that changes their state and at the library's local times.
	Rules *recommend.Rules
	// Profiles reads the profiles rules read; nil means every user has an empty one.
	Profiles ProfileReader
	// DailyCap is the most recommendations delivered to a user a day; zero means
	// recommend.DefaultDailyCap.
	DailyCap int
	Log      *slog.Logger
	// Metrics, if not nil, receives the processor's metrics.
	Metrics *telemetry.Metrics
}

// Runner is the Handler that processes a partition: it applies the partition's samples,
// in stream order, to per-user windows, and commits the changed buckets, the users' state
// and the checkpoint in one fenced transaction, then publishes the changes on each user's
// change feed.
type Runner struct {
	js      jetstream.JetStream
	store   pulsebase.Store
	vault   *vault.Vault
	consent Consent
	cfg     RunnerConfig
	reqs    requests
	pool    recPool
}

// NewRunner returns a Runner.
func NewRunner(js jetstream.JetStream, store pulsebase.Store, v *vault.Vault, c Consent, cfg RunnerConfig) *Runner {
	if cfg.Horizon <= 0 {
		cfg.Horizon = window.DefaultHorizon
	}
	if cfg.MinuteHorizon <= 0 {
		cfg.MinuteHorizon = 2 * time.Hour
	}
	if cfg.Flush <= 0 {
		cfg.Flush = 250 * time.Millisecond
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 2000
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 50_000
	}
	if cfg.Partitions <= 0 {
		cfg.Partitions = 64
	}
	if cfg.DailyEvery <= 0 {
		cfg.DailyEvery = DefaultDailyEvery
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Runner{js: js, store: store, vault: v, consent: c, cfg: cfg}
}

// partition is the state of one partition while this process owns it.
type partition struct {
	r       *Runner
	p       int
	epoch   uint64
	seq     uint64 // last applied stream sequence
	applied int    // messages applied since the last commit
	users   map[string]*userRun
	dead    []deadLetter
	label   string // p as a metric label
	// pending is the users with dates awaiting recomputation, as stored in the partition's
	// pending record; pendingDirty reports that the record must be rewritten. dueAt is
	// when the earliest of them is due.
	pending      map[string]bool
	pendingDirty bool
	dueAt        time.Time
	// rb is the rebuild in progress (see reprocess.go), lastRebuild the latest request
	// taken, and resets the users whose derived data the next commit deletes.
	rb          *rebuild
	lastRebuild string
	resets      []string
	cur         uint64 // the sequence of the message being applied
	// backlog reports that the last fetch was full: the partition is catching up.
	backlog bool
	// commits counts this owner's commits (for change ids); outboxFull reports that the
	// stored outbox holds messages, to be emptied by the next commit.
	commits    uint64
	outboxFull bool
	// storedAt holds the broker timestamps (Unix ns) of the messages applied since the
	// last commit, for the change latency metric.
	storedAt []int64
	// recover lists pending users not loaded yet (see loadPending).
	recover []string
	// sched holds when users' scheduled rule runs are due; schedDirty reports that the
	// partition's scheduled record must be rewritten. rng draws the bandit's samples.
	sched      map[string]time.Time
	schedDirty bool
	rng        *rand.Rand
}

// userRun is a user's state within a partition, and what changed since the last commit.
type userRun struct {
	id      string
	keys    *vault.Keys
	erased  bool
	state   *window.State
	dirty   bool
	pending map[string]window.Change // bucket key → new value
	idsets  map[string]map[uint64]bool
	idDirty map[string]bool
	// rejections of sealed samples, for the change feed
	rejections []Change
	// stored holds buckets read from the store since the last commit, and loaded the
	// ranges they were read for
	stored   map[string]window.Change
	loaded   map[string]bool
	lastUsed time.Time // when a message of this user was last applied
	// journal holds the samples for daily metrics applied since the last commit, by local
	// date; days the dates awaiting recomputation, since daysSince (see daily.go).
	journal   map[string][]pulsebase.Sample
	days      map[string]bool
	daysSince time.Time
	dailyCost time.Duration // how long the last recomputation took
	// chunks holds the minute-bucket records the last commit wrote, by record key: the
	// next commit adds to them without reading them back.
	chunks map[string]map[string]window.Change
	// rec is the user's checkpointed recommendation state, ru the rest of it in memory.
	rec *recState
	ru  recUser
}

// idleUser is how long a user's state stays in memory after their last message; it is
// committed already, and reloaded from the store if they come back.
const idleUser = 5 * time.Minute

type deadLetter struct {
	seq    uint64
	reason string
}

// Acquired processes partition p until ctx is done.
func (r *Runner) Acquired(ctx context.Context, p int, epoch uint64) error {
	cp, err := r.store.Checkpoint(ctx, p)
	if err != nil {
		return err
	}
	if cp.Epoch > epoch {
		return nil // a newer owner committed already; the coordinator will sort it out
	}
	pr := &partition{r: r, p: p, epoch: epoch, seq: cp.Seq, users: map[string]*userRun{}, label: strconv.Itoa(p), pending: map[string]bool{},
		sched: map[string]time.Time{}, rng: newRand()}
	if err := pr.loadPending(ctx); err != nil {
		return err
	}
	if err := pr.loadScheduled(ctx); err != nil {
		return err
	}
	if err := pr.republish(ctx); err != nil {
		return err
	}
	rb, err := loadRebuild(ctx, r.store, p)
	if err != nil {
		return err
	}
	pr.lastRebuild = rb.Last
	if rb.Last != "" && !rb.Complete {
		pr.rb = &rb // a former owner stopped in the middle of a replay: resume it
	}
	if m := r.cfg.Metrics; m != nil {
		m.OwnedPartitions.Inc()
		defer m.OwnedPartitions.Dec()
	}
	var cons jetstream.Consumer
	lastCommit := time.Now()
	var lastLook, lastLag time.Time
	for ctx.Err() == nil {
		if pr.rb == nil && time.Since(lastLook) >= time.Second {
			lastLook = time.Now()
			if req, ok := pr.nextRebuild(ctx); ok {
				if err := pr.startRebuild(ctx, req); err != nil {
					return r.stopped(ctx, err)
				}
			}
		}
		if len(pr.recover) > 0 {
			if err := pr.recoverPending(ctx); err != nil {
				return err
			}
		}
		if pr.rb != nil {
			if err := pr.replay(ctx); err != nil {
				if errors.Is(err, context.Canceled) || pulsebase.ErrorCode(err) == pulsebase.EFENCED || ctx.Err() != nil {
					return nil
				}
				r.retry(ctx, p, "replay", err)
				continue
			}
			lastCommit = time.Now()
		}
		if cons == nil {
			// (Re)start after the last applied message: after an error the stream
			// position is ours, not the consumer's.
			cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{broker.PartitionFilter(p)}, MaxResetAttempts: 2}
			if pr.seq > 0 {
				cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
				cfg.OptStartSeq = pr.seq + 1
			}
			if cons, err = r.js.OrderedConsumer(ctx, broker.StreamSamples, cfg); err != nil {
				cons = nil
				r.retry(ctx, p, "consumer", err)
				continue
			}
		}
		wait := r.cfg.Flush // nothing to commit: wait for messages (or a due recomputation)
		if pr.applied > 0 {
			wait = max(r.cfg.Flush-time.Since(lastCommit), 5*time.Millisecond)
		}
		if !pr.dueAt.IsZero() {
			wait = max(min(wait, time.Until(pr.dueAt)), 5*time.Millisecond)
		}
		batch, err := cons.Fetch(r.cfg.Batch, jetstream.FetchMaxWait(wait))
		if err != nil {
			cons = nil
			r.retry(ctx, p, "fetch", err)
			continue
		}
		fetched := 0
		for m := range batch.Messages() {
			fetched++
			if err := pr.apply(ctx, m); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			// A batch of cold users (after a takeover) can take seconds to apply: commit
			// on time within it too.
			if time.Since(lastCommit) >= 4*r.cfg.Flush {
				lastCommit = time.Now()
				if err := pr.commit(ctx); err != nil {
					return r.stopped(ctx, err)
				}
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && ctx.Err() == nil {
			r.cfg.Log.Warn("fetch", "partition", p, "err", err)
		}
		if m := r.cfg.Metrics; m != nil && time.Since(lastLag) >= 2*time.Second {
			lastLag = time.Now()
			pr.reportLag(ctx, m)
		}
		if backlog := fetched >= r.cfg.Batch; backlog != pr.backlog {
			pr.backlog = backlog
			pr.refreshDue()
		}
		now := time.Now()
		flush := pr.applied > 0 && (now.Sub(lastCommit) >= r.cfg.Flush || pr.applied >= r.cfg.MaxPending)
		if flush || !pr.dueAt.IsZero() && !now.Before(pr.dueAt) {
			lastCommit = now
			if err := pr.commit(ctx); err != nil {
				return r.stopped(ctx, err)
			}
		}
	}
	return nil
}

// reportLag sets the partition's lag: the stream sequence of its last message minus the
// last applied sequence.
func (pr *partition) reportLag(ctx context.Context, m *telemetry.Metrics) {
	st, err := pr.r.js.Stream(ctx, broker.StreamSamples)
	if err != nil {
		return
	}
	last, err := st.GetLastMsgForSubject(ctx, broker.PartitionFilter(pr.p))
	if err != nil {
		return // an empty partition, or the broker is busy: the next report will do
	}
	m.Lag.WithLabelValues(pr.label).Set(float64(max(last.Sequence, pr.seq) - pr.seq))
}

// stopped is what Acquired returns after a failed commit: nothing when the partition moved
// on (fenced) or ctx is done, else the error.
func (r *Runner) stopped(ctx context.Context, err error) error {
	if pulsebase.ErrorCode(err) == pulsebase.EFENCED || ctx.Err() != nil {
		return nil // the partition moved on; stop without writing
	}
	return err
}

// retry logs a broker error and waits a second (or until ctx is done) before the caller
// tries again: a broker that is restarting or unreachable must not end the partition.
func (r *Runner) retry(ctx context.Context, p int, what string, err error) {
	if ctx.Err() != nil {
		return
	}
	r.cfg.Log.Warn("partition "+what+" failed; retrying", "partition", p, "err", err)
	select {
	case <-ctx.Done():
	case <-time.After(time.Second):
	}
}

// apply applies one message.
func (pr *partition) apply(ctx context.Context, m jetstream.Msg) error {
	meta, err := m.Metadata()
	if err != nil {
		return fmt.Errorf("message metadata: %w", err)
	}
	pr.cur = meta.Sequence.Stream
	if pr.rb != nil {
		pr.rb.Done = pr.cur
	} else {
		pr.seq = pr.cur
		if pr.r.cfg.Metrics != nil {
			pr.storedAt = append(pr.storedAt, meta.Timestamp.UnixNano())
		}
	}
	pr.applied++
	_, user, ok := broker.ParseSampleSubject(m.Subject())
	if !ok {
		pr.deadLetter("bad subject")
		return nil
	}
	u, err := pr.user(ctx, user)
	if err != nil {
		return err
	}
	if u.erased {
		return nil // shredded: nothing of this user can be read or counted any more
	}
	id := m.Headers().Get(jetstream.MsgIDHeader)
	now := meta.Timestamp
	if m.Headers().Get(ingest.KindHeader) == ingest.KindSealed {
		return pr.applySealed(ctx, u, id, m.Data(), now)
	}
	smp, err := ingest.OpenSample(u.keys, id, m.Data())
	if err != nil {
		pr.deadLetter("sample does not open or decode")
		return nil
	}
	return pr.applySample(ctx, u, smp, id, now)
}

// applySealed opens a sealed batch with the processing tier's key, validates its samples
// as ingest would, and applies the valid ones.
func (pr *partition) applySealed(ctx context.Context, u *userRun, id string, data []byte, now time.Time) error {
	rec, err := ingest.OpenSealedRecord(u.keys, id, data)
	if err != nil {
		pr.deadLetter("sealed record does not open")
		return nil
	}
	pt, err := pr.r.vault.OpenBatch(ctx, rec.KeyID, u.id, rec.Sealed)
	if err != nil {
		pr.deadLetter("sealed batch does not open")
		return nil
	}
	in, err := ingest.DecodeBatch(ingest.MediaJSON, pt, 0)
	if err != nil {
		pr.deadLetter("sealed batch does not decode")
		return nil
	}
	for i := range in {
		smp, problems := pulsebase.Normalize(in[i], rec.Received)
		if len(problems) > 0 {
			// The device learns of it on its change feed: the batch, the sample's index
			// and the first problem's code.
			u.rejections = append(u.rejections, Change{Kind: "rejection", Key: id + "/" + strconv.Itoa(i), Data: map[string]any{
				"batch": id, "index": i, "code": problems[0].Code, "detail": problems[0].Detail,
			}})
			u.dirty = true
			continue
		}
		smp.Device, smp.Subject, smp.Received = rec.Device, rec.Subject, rec.Received
		sid, err := u.keys.Identity(smp.Identity())
		if err != nil {
			return err
		}
		if err := pr.applySample(ctx, u, smp, sid, now); err != nil {
			return err
		}
	}
	return nil
}

// applySample counts one sample in the user's windows, exactly once.
func (pr *partition) applySample(ctx context.Context, u *userRun, smp pulsebase.Sample, id string, now time.Time) error {
	t, ok := pulsebase.LookupType(smp.Type)
	if !ok {
		pr.deadLetter("unknown sample type")
		return nil
	}
	if ok, err := pr.r.consent.Allowed(ctx, u.id, t.Category, pulsebase.PurposePersonalization); err != nil || !ok {
		pr.count(smp.Type, "no_consent")
		return nil // not consented for personalization (or erased meanwhile): not used
	}
	// A sample's identity is looked up in the set of its local day (a sample always falls
	// on the same day), which is stored with the derived data: that is the dedupe horizon,
	// whatever the sample's age. The window state keeps no ids of its own (ForgetIDs).
	day := agg.LocalDay(smp)
	set, err := pr.idset(ctx, u, day)
	if err != nil {
		return err
	}
	fp := window.Fingerprint(id)
	if set[fp] {
		pr.count(smp.Type, "duplicate")
		return nil // a re-send or a redelivery: counted already
	}
	changes, applied, err := u.state.Apply(smp, id, now)
	outcome := "applied"
	switch {
	case errors.Is(err, window.ErrBackfill):
		// Older than the live horizon: its contributions merge into the stored buckets.
		changes, outcome = window.Deltas(smp), "backfill"
	case err != nil:
		pr.deadLetter(err.Error())
		return nil
	case !applied:
		pr.count(smp.Type, "duplicate")
		return nil
	}
	pr.count(smp.Type, outcome)
	u.noteRec(&smp)
	set[fp] = true
	u.idDirty[day] = true
	u.dirty = true
	pr.noteDaily(u, smp)
	for _, c := range changes {
		if err := pr.stage(ctx, u, c); err != nil {
			return err
		}
	}
	return nil
}

// stage records a bucket change for the next commit: a full value replaces, a delta merges
// into the pending or stored value.
func (pr *partition) stage(ctx context.Context, u *userRun, c window.Change) error {
	key := bucketKey(c)
	if !c.Delta {
		u.pending[key] = c
		return nil
	}
	cur, ok := u.pending[key]
	if !ok {
		if err := pr.loadDay(ctx, u, c); err != nil {
			return err
		}
		cur = u.stored[key]
	}
	window.Merge(&cur, c)
	u.pending[key] = cur
	return nil
}

// loadDay reads the stored buckets of c's type and resolution on c's UTC day into
// u.stored, with one query: an import of old data touches every minute of a day, and one
// query a bucket would make it crawl. A bucket of that day not in u.stored afterwards is
// not stored yet.
func (pr *partition) loadDay(ctx context.Context, u *userRun, c window.Change) error {
	var lo, hi string
	if c.Res == agg.Day {
		lo, hi = bucketKey(c), bucketKey(c)
	} else {
		day := c.Start.UTC().Truncate(24 * time.Hour)
		lo, hi = BucketKey(c.Type, c.Res, day, ""), BucketKey(c.Type, c.Res, day.Add(24*time.Hour-time.Second), "")
	}
	if u.loaded[lo] {
		return nil
	}
	if err := pr.readBuckets(ctx, u, lo, hi, u.stored); err != nil {
		return err
	}
	u.loaded[lo] = true
	return nil
}

// readBuckets adds u's stored buckets of the records with keys in [lo, hi] to into, by
// bucket key.
func (pr *partition) readBuckets(ctx context.Context, u *userRun, lo, hi string, into map[string]window.Change) error {
	recs, err := pr.r.store.DerivedRecords(ctx, u.id, KindBucket, lo, hi)
	if err != nil {
		return err
	}
	for _, rec := range recs {
		bs, err := OpenBuckets(u.keys, rec.Key, rec.Ciphertext)
		if err != nil {
			return err
		}
		for _, b := range bs {
			into[bucketKey(b)] = b
		}
	}
	return nil
}

func (pr *partition) idset(ctx context.Context, u *userRun, day string) (map[uint64]bool, error) {
	if set, ok := u.idsets[day]; ok {
		return set, nil
	}
	set := map[uint64]bool{}
	recs, err := pr.r.store.DerivedRecords(ctx, u.id, KindIDs, day, day)
	if err != nil {
		return nil, err
	}
	if len(recs) == 1 {
		pt, err := u.keys.Open(KindIDs, day, recs[0].Ciphertext)
		if err != nil {
			return nil, err
		}
		for len(pt) >= 8 {
			set[binary.BigEndian.Uint64(pt)] = true
			pt = pt[8:]
		}
	}
	u.idsets[day] = set
	return set, nil
}

// user returns the user's run state, loading their keys and committed window state.
func (pr *partition) user(ctx context.Context, id string) (*userRun, error) {
	if u, ok := pr.users[id]; ok {
		u.lastUsed = time.Now()
		return u, nil
	}
	u := &userRun{id: id, lastUsed: time.Now(), loaded: map[string]bool{}, stored: map[string]window.Change{}, pending: map[string]window.Change{},
		idsets: map[string]map[uint64]bool{}, idDirty: map[string]bool{}, journal: map[string][]pulsebase.Sample{}, days: map[string]bool{}}
	pr.users[id] = u
	keys, err := pr.r.vault.UserKeys(ctx, id)
	if pulsebase.ErrorCode(err) == pulsebase.EERASED {
		u.erased = true
		return u, nil
	}
	if err != nil {
		return nil, err
	}
	u.keys = keys
	recs, err := pr.r.store.DerivedRecords(ctx, id, KindState, "", "")
	if err != nil {
		return nil, err
	}
	if len(recs) == 1 {
		pt, err := keys.Open(KindState, "", recs[0].Ciphertext)
		if err != nil {
			return nil, err
		}
		var rec []byte
		if pt, u.days, rec, err = decodeState(pt); err != nil {
			return nil, fmt.Errorf("decode state of %s: %w", id, err)
		}
		if u.rec, err = decodeRecState(rec); err != nil {
			return nil, fmt.Errorf("decode state of %s: %w", id, err)
		}
		if _, ok := pr.sched[id]; !ok && u.rec.Next > 0 {
			pr.setScheduled(id, time.Unix(u.rec.Next, 0))
		}
		if u.state, err = window.Decode(pt); err != nil {
			return nil, fmt.Errorf("decode state of %s: %w", id, err)
		}
		u.state.ForgetIDs() // a state checkpointed before the per-day sets decided may hold some
	} else {
		u.state = pr.r.freshState()
		u.rec = &recState{}
	}
	return u, nil
}

func (pr *partition) deadLetter(reason string) {
	pr.dead = append(pr.dead, deadLetter{seq: pr.cur, reason: reason})
	if m := pr.r.cfg.Metrics; m != nil {
		m.DeadLetters.WithLabelValues(reason).Inc()
	}
}

func (pr *partition) count(typ, outcome string) {
	if m := pr.r.cfg.Metrics; m != nil {
		m.Processed.WithLabelValues(typ, outcome).Inc()
	}
}

// maxChangesPerMessage bounds a change message (a series change is ~200 bytes of JSON).
const maxChangesPerMessage = 1000

// feed is a user's change batch of a commit.
type feed struct {
	user string
	keys *vault.Keys
	cb   ChangeBatch
}

// Change is one change to what a user can see: kind "series" (key: the bucket's store
// key, data: the series point), "daily" (key: the date, data: the day object's changed
// fields, null for a removed one) or "rejection" (key: batch/index, data: the batch, the
// sample's index, code and detail).
type Change struct {
	Kind string         `json:"kind"`
	Key  string         `json:"key"`
	Data map[string]any `json:"data"`
}

// ChangeBatch is one message of a user's change feed: the changes of one commit, in order,
// sealed under the user's key with associated data ("change", the message's Nats-Msg-Id).
// A commit publishes at most one per user, so a bucket updated by a burst of samples goes
// out once per commit with its final value.
type ChangeBatch struct {
	Changes []Change `json:"changes"`
}

// OpenChanges decrypts and decodes a CHANGES message of the user whose keys are given.
func OpenChanges(keys *vault.Keys, msgID string, data []byte) (ChangeBatch, error) {
	var cb ChangeBatch
	err := openChanges(keys, msgID, data, &cb)
	return cb, err
}

// RawChange is a Change whose data is left encoded, for relaying it as it is.
type RawChange struct {
	Kind string          `json:"kind"`
	Key  string          `json:"key"`
	Data json.RawMessage `json:"data"`
}

// OpenRawChanges is OpenChanges leaving each change's data encoded.
func OpenRawChanges(keys *vault.Keys, msgID string, data []byte) ([]RawChange, error) {
	var cb struct {
		Changes []RawChange `json:"changes"`
	}
	err := openChanges(keys, msgID, data, &cb)
	return cb.Changes, err
}

func openChanges(keys *vault.Keys, msgID string, data []byte, out any) error {
	pt, err := keys.Open("change", msgID, data)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(pt, out); err != nil {
		return fmt.Errorf("decode change batch: %w", err)
	}
	return nil
}

// commit writes everything staged and the checkpoint in one fenced transaction, then
// publishes the changes and dead letters.
func (pr *partition) commit(ctx context.Context) error {
	now := time.Now().UTC()
	var recs []pulsebase.DerivedRecord
	var feeds []*feed
	recomputes := 0
	for _, u := range pr.resets {
		recs = append(recs, pulsebase.DerivedRecord{User: u, Delete: true})
	}
	if err := pr.dueScheduled(ctx, now); err != nil {
		return err
	}
	for _, u := range pr.users {
		due := len(u.days) > 0 && !now.Before(pr.dailyDue(u)) && recomputes < maxRecomputes
		if u.erased || !u.dirty && !due && !u.ru.schedRun {
			continue
		}
		f := &feed{user: u.id, keys: u.keys}
		brecs, err := pr.bucketRecords(ctx, u, f, now)
		if err != nil {
			return err
		}
		recs = append(recs, brecs...)
		f.cb.Changes = append(f.cb.Changes, u.rejections...)
		for day := range u.idDirty {
			b := make([]byte, 0, 8*len(u.idsets[day]))
			for fp := range u.idsets[day] {
				b = binary.BigEndian.AppendUint64(b, fp)
			}
			ct, err := u.keys.Seal(KindIDs, day, b)
			if err != nil {
				return err
			}
			recs = append(recs, pulsebase.DerivedRecord{User: u.id, Kind: KindIDs, Key: day, Ciphertext: ct, Updated: now})
		}
		if due {
			recomputes++
			began := time.Now()
			drecs, dchanges, err := pr.recomputeDaily(ctx, u, now)
			if err != nil {
				return err
			}
			u.dailyCost = time.Since(began)
			recs = append(recs, drecs...)
			f.cb.Changes = append(f.cb.Changes, dchanges...)
			for _, c := range dchanges {
				u.noteDailyChange(c)
			}
		} else {
			jrecs, err := pr.journalRecords(u, now)
			if err != nil {
				return err
			}
			recs = append(recs, jrecs...)
		}
		rrecs, err := pr.recommend(ctx, u, f, now)
		if err != nil {
			return err
		}
		recs = append(recs, rrecs...)
		if len(f.cb.Changes) > 0 {
			feeds = append(feeds, f)
		}
		rec, err := json.Marshal(u.rec)
		if err != nil {
			return err
		}
		ct, err := u.keys.Seal(KindState, "", encodeState(u.state.Encode(), u.days, rec))
		if err != nil {
			return err
		}
		recs = append(recs, pulsebase.DerivedRecord{User: u.id, Kind: KindState, Key: "", Ciphertext: ct, Updated: now})
		if waiting := len(u.days) > 0; waiting != pr.pending[u.id] {
			pr.setPending(u.id, waiting)
		}
	}
	for id := range pr.pending {
		if u := pr.users[id]; u != nil && u.erased {
			pr.setPending(id, false)
		}
	}
	if pr.pendingDirty {
		b, err := json.Marshal(slices.Sorted(maps.Keys(pr.pending)))
		if err != nil {
			return err
		}
		recs = append(recs, pulsebase.DerivedRecord{User: PendingOwner(pr.p), Kind: KindPending, Key: "", Ciphertext: b, Updated: now})
	}
	if pr.schedDirty {
		b, err := json.Marshal(slices.Sorted(maps.Keys(pr.sched)))
		if err != nil {
			return err
		}
		recs = append(recs, pulsebase.DerivedRecord{User: PendingOwner(pr.p), Kind: KindScheduled, Key: "", Ciphertext: b, Updated: now})
	}
	if pr.rb != nil {
		b, err := json.Marshal(pr.rb)
		if err != nil {
			return err
		}
		recs = append(recs, pulsebase.DerivedRecord{User: PendingOwner(pr.p), Kind: KindRebuild, Key: "", Ciphertext: b, Updated: now})
	}
	// The change feed and dead letters go into the partition's outbox record in the same
	// transaction, and are published after it: a crash in between re-publishes the outbox
	// on the next start, and JetStream drops what had gone out already (same ids).
	pr.commits++
	var out []outboxMsg
	for _, f := range feeds {
		// An import changes thousands of buckets at once: a batch of at most
		// maxChangesPerMessage changes a message keeps each well under the broker's limit.
		for i, part := 0, 0; i < len(f.cb.Changes); i, part = i+maxChangesPerMessage, part+1 {
			b, err := json.Marshal(ChangeBatch{Changes: f.cb.Changes[i:min(i+maxChangesPerMessage, len(f.cb.Changes))]})
			if err != nil {
				return err
			}
			msgID := f.user + "-" + pr.position()
			if part > 0 {
				msgID += "-" + strconv.Itoa(part)
			}
			ct, err := f.keys.Seal("change", msgID, b)
			if err != nil {
				return err
			}
			out = append(out, outboxMsg{Subject: broker.ChangeSubject(f.user), Data: ct, Header: map[string][]string{jetstream.MsgIDHeader: {msgID}}})
		}
	}
	for _, d := range pr.dead {
		pr.r.cfg.Log.Warn("dead letter", "partition", pr.p, "seq", d.seq, "reason", d.reason)
		out = append(out, outboxMsg{Subject: fmt.Sprintf("deadletter.%d", pr.p), Header: map[string][]string{
			"Pulsebase-Reason": {d.reason}, "Pulsebase-Seq": {strconv.FormatUint(d.seq, 10)},
			jetstream.MsgIDHeader: {fmt.Sprintf("dl-%d-%d", pr.p, d.seq)}}})
	}
	if len(out) > 0 || pr.outboxFull {
		b, err := json.Marshal(out)
		if err != nil {
			return err
		}
		recs = append(recs, pulsebase.DerivedRecord{User: PendingOwner(pr.p), Kind: KindOutbox, Key: "", Ciphertext: b, Updated: now})
	}
	if err := pr.r.store.CommitPartition(ctx, pulsebase.Checkpoint{Partition: pr.p, Epoch: pr.epoch, Seq: pr.seq, Updated: now}, recs); err != nil {
		return err
	}
	pr.outboxFull = len(out) > 0
	pr.pendingDirty = false
	pr.schedDirty = false
	pr.resets = pr.resets[:0]
	if m := pr.r.cfg.Metrics; m != nil {
		m.CheckpointTime.WithLabelValues(pr.label).Set(float64(now.UnixNano()) / 1e9)
	}
	// The outbox keeps them until they are out: retry rather than move on (the next commit
	// replaces the outbox) or give the partition up.
	for {
		err := publishAll(ctx, pr.r.js, out)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		pr.r.retry(ctx, pr.p, "publish changes", err)
	}
	if m := pr.r.cfg.Metrics; m != nil {
		at := time.Now().UnixNano()
		for _, t := range pr.storedAt {
			m.ChangeLatency.Observe(float64(at-t) / 1e9)
		}
	}
	pr.storedAt = pr.storedAt[:0]
	pr.dead = pr.dead[:0]
	for id, u := range pr.users {
		if !u.dirty && len(u.days) == 0 && now.Sub(u.lastUsed) > idleUser {
			delete(pr.users, id) // idle: everything of theirs is committed
			continue
		}
		if u.dirty && u.state != nil {
			u.state.Expire(now)
		}
		u.dirty = false
		clear(u.pending)
		clear(u.loaded)
		clear(u.stored)
		clear(u.idDirty)
		clear(u.journal)
		u.rejections = u.rejections[:0]
		// Keep the id sets of the two latest days in memory; older ones are reloaded if a
		// late sample needs them.
		if len(u.idsets) > 2 {
			days := slices.Sorted(maps.Keys(u.idsets))
			for _, d := range days[:len(days)-2] {
				delete(u.idsets, d)
			}
		}
	}
	pr.refreshDue()
	pr.applied = 0
	return nil
}

// KindOutbox is a partition's outbox record (user PendingOwner(p), key ""): the messages
// of its last commit, for re-publishing after a crash.
const KindOutbox = "outbox"

// outboxMsg is a message of the outbox.
type outboxMsg struct {
	Subject string              `json:"subject"`
	Header  map[string][]string `json:"header"`
	Data    []byte              `json:"data,omitempty"`
}

// republish publishes the partition's outbox again: the former owner may have stopped
// between a commit and its publication.
func (pr *partition) republish(ctx context.Context) error {
	var out []outboxMsg
	if err := readPartitionRecord(ctx, pr.r.store, pr.p, KindOutbox, &out); err != nil {
		return err
	}
	pr.outboxFull = len(out) > 0
	return publishAll(ctx, pr.r.js, out)
}

// publishAll publishes msgs pipelined, a chunk at a time, and waits for every ack: one
// round trip per chunk instead of one per message.
func publishAll(ctx context.Context, js jetstream.JetStream, msgs []outboxMsg) error {
	const chunk = 512
	futs := make([]jetstream.PubAckFuture, 0, chunk)
	for start := 0; start < len(msgs); start += chunk {
		futs = futs[:0]
		for _, m := range msgs[start:min(start+chunk, len(msgs))] {
			f, err := js.PublishMsgAsync(&nats.Msg{Subject: m.Subject, Header: m.Header, Data: m.Data})
			if err != nil {
				return err
			}
			futs = append(futs, f)
		}
		for _, f := range futs {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				return err
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return nil
}

// bucketRecords returns the records of u's changed buckets, and adds the changes to f:
// a record per hour or day bucket, and per chunk of minute buckets (see ChunkKey), whose
// other minutes come from the chunks this user's last commit wrote or from the store.
func (pr *partition) bucketRecords(ctx context.Context, u *userRun, f *feed, now time.Time) ([]pulsebase.DerivedRecord, error) {
	groups := map[string][]string{} // record key → bucket keys
	for _, key := range slices.Sorted(maps.Keys(u.pending)) {
		c := u.pending[key]
		f.cb.Changes = append(f.cb.Changes, Change{Kind: "series", Key: key, Data: SeriesPoint(c)})
		ck := chunkKey(c)
		groups[ck] = append(groups[ck], key)
	}
	chunks := make(map[string]map[string]window.Change)
	var recs []pulsebase.DerivedRecord
	for _, ck := range slices.Sorted(maps.Keys(groups)) {
		keys := groups[ck]
		cs := []window.Change{u.pending[keys[0]]}
		if cs[0].Res == agg.Minute {
			chunk, err := pr.chunk(ctx, u, ck)
			if err != nil {
				return nil, err
			}
			for _, k := range keys {
				chunk[k] = u.pending[k]
			}
			chunks[ck] = chunk
			cs = cs[:0]
			for _, k := range slices.Sorted(maps.Keys(chunk)) { // keys sort by start
				cs = append(cs, chunk[k])
			}
		}
		ct, err := sealBuckets(u.keys, ck, cs)
		if err != nil {
			return nil, err
		}
		recs = append(recs, pulsebase.DerivedRecord{User: u.id, Kind: KindBucket, Key: ck, Ciphertext: ct, Updated: now})
	}
	u.chunks = chunks
	return recs, nil
}

// chunk returns the minute buckets of the record ck by bucket key.
func (pr *partition) chunk(ctx context.Context, u *userRun, ck string) (map[string]window.Change, error) {
	if c, ok := u.chunks[ck]; ok {
		return c, nil
	}
	out := map[string]window.Change{}
	return out, pr.readBuckets(ctx, u, ck, ck, out)
}

// refreshDue sets pr.dueAt to the earliest time a user's recomputation or scheduled rule
// run is due.
func (pr *partition) refreshDue() {
	pr.dueAt = time.Time{}
	for _, at := range pr.sched {
		if pr.dueAt.IsZero() || at.Before(pr.dueAt) {
			pr.dueAt = at
		}
	}
	for _, u := range pr.users {
		if len(u.days) > 0 {
			if at := pr.dailyDue(u); pr.dueAt.IsZero() || at.Before(pr.dueAt) {
				pr.dueAt = at
			}
		}
	}
}

// noteDaily journals an applied sample for u's daily metrics.
func (pr *partition) noteDaily(u *userRun, smp pulsebase.Sample) {
	u.noteDaily(smp, time.Now())
	if len(u.days) > 0 {
		if at := pr.dailyDue(u); pr.dueAt.IsZero() || at.Before(pr.dueAt) {
			pr.dueAt = at
		}
	}
}

// How recomputations of daily metrics are spaced (see RunnerConfig.DailyEvery), and how
// many one commit takes at most (a takeover of many users with pending work, or a burst
// of users all due at once, is spread over commits).
const (
	maxRecomputes     = 128
	dailyCostFactor   = 10
	dailyBacklogDelay = 10 * time.Second
)

// dailyDue is when u's marked dates are due for recomputation.
func (pr *partition) dailyDue(u *userRun) time.Time {
	delay := max(pr.r.cfg.DailyEvery, dailyCostFactor*u.dailyCost)
	if pr.backlog {
		delay = max(delay, dailyBacklogDelay)
	}
	return u.daysSince.Add(delay)
}

func (pr *partition) setPending(user string, waiting bool) {
	if waiting {
		pr.pending[user] = true
	} else {
		delete(pr.pending, user)
	}
	pr.pendingDirty = true
}

// loadPending reads the partition's pending record: users whose marked dates a former
// owner did not recompute before it stopped. They are loaded a few at a time between
// batches (recoverPending), so that taking over a partition of many users is quick.
func (pr *partition) loadPending(ctx context.Context) error {
	var users []string
	if err := readPartitionRecord(ctx, pr.r.store, pr.p, KindPending, &users); err != nil {
		return err
	}
	for _, id := range users {
		pr.pending[id] = true
	}
	pr.recover = users
	return nil
}

// recoverBatch is how many pending users recoverPending loads at a time.
const recoverBatch = 64

// recoverPending loads some of the users loadPending found, so that their marked dates
// are recomputed.
func (pr *partition) recoverPending(ctx context.Context) error {
	n := min(recoverBatch, len(pr.recover))
	for _, id := range pr.recover[:n] {
		u, err := pr.user(ctx, id)
		if err != nil {
			return err
		}
		if len(u.days) == 0 {
			if pr.pending[id] {
				pr.setPending(id, false)
			}
			continue
		}
		// Due at once (a commit takes at most maxRecomputes of them): postponing them by
		// the usual delay would postpone them for ever on a partition that keeps moving.
		u.daysSince = time.Time{}
		pr.dueAt = time.Unix(0, 0)
	}
	pr.recover = pr.recover[n:]
	return nil
}

// SeriesPoint is a bucket in the shape of the API's series points.
func SeriesPoint(c window.Change) map[string]any {
	p := c.Point
	if p.Minutes != nil {
		return map[string]any{"start": p.Start.Format(time.RFC3339), "minutes": p.Minutes}
	}
	return map[string]any{"start": p.Start.Format(time.RFC3339), "count": p.Count, "sum": p.Sum,
		"min": p.Min, "max": p.Max, "mean": p.Mean, "last": p.Last}
}
