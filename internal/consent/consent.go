// Package consent decides what Pulsebase may collect from a user and what it may use their
// data for. Answers are kept as an append-only history of receipts (who changed what, when,
// from which device and token), encrypted under the user's key in the store. Decisions are
// served from memory; every process learns of a change through a JetStream key-value
// bucket within milliseconds, so a revocation takes effect everywhere well inside a second.
//
// Allowed is the one decision point every reader of personal data for a purpose calls;
// Subscribe tells a long-lived reader (a sync gateway's connection) that it must ask again.
// Every change also goes out on the user's change feed (kind "consent"), so that their
// devices learn of it.
//
// Imported by cmd/pulsebase (wiring), httpapi (the consent routes), ingest and the sync
// gateway.
package consent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/changefeed"
	"github.com/pulsebase/pulsebase/internal/processor"
	"github.com/pulsebase/pulsebase/internal/vault"
)

// Bucket is the JetStream key-value bucket holding each user's latest consent version.
// It carries no answers, only version numbers, so that every process can invalidate its
// cached decisions.
const Bucket = "CONSENT_VERSIONS"

// kindConsent is the record kind consent receipts are sealed as.
const kindConsent = "consent"

// decision is the compact cached form of a user's consent: bit i of collect is
// Categories()[i], bit i of purposes is Purposes()[i]. A decision with loaded false is a
// placeholder recording that version is the newest one known, so that a slower load of an
// older version cannot be cached over it.
type decision struct {
	version  int
	collect  uint16
	purposes uint16
	loaded   bool
}

const shards = 64

type shard struct {
	mu sync.RWMutex
	m  map[string]decision
}

// Service records consent and answers consent decisions.
//
// Locks: a shard's mu and subsMu are never held together, and neither while a subscriber
// runs.
type Service struct {
	store  pulsebase.ConsentStore
	vault  *vault.Vault
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	log    *slog.Logger
	now    func() time.Time
	seed   maphash.Seed
	shards [shards]shard

	subsMu  sync.RWMutex
	subs    map[uint64]func(user string) // by subscription id
	nextSub uint64
}

// New returns a consent service over store, with its version bucket in js (created if
// missing, with replicas copies). Changes go out on the users' change feeds in js's
// CHANGES stream.
func New(ctx context.Context, store pulsebase.ConsentStore, v *vault.Vault, js jetstream.JetStream, replicas int, log *slog.Logger) (*Service, error) {
	if replicas < 1 {
		replicas = 1
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "latest consent version per user, for cache invalidation",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("consent bucket: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Service{store: store, vault: v, js: js, kv: kv, log: log, now: time.Now, seed: maphash.MakeSeed(),
		subs: make(map[uint64]func(string))}
	for i := range s.shards {
		s.shards[i].m = make(map[string]decision)
	}
	return s, nil
}

// Run applies version changes made by any process to the cache, and tells subscribers of
// those new to this process, until ctx is done. Start it before serving: decisions are
// only as fresh as the watch.
func (s *Service) Run(ctx context.Context) error {
	w, err := s.kv.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("watch consent versions: %w", err)
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("consent version watch stopped")
			}
			if e == nil {
				continue
			}
			v, err := strconv.Atoi(string(e.Value()))
			if err != nil {
				s.log.Warn("bad consent version in bucket", "err", err)
				continue
			}
			if s.observe(e.Key(), v) {
				s.notify(e.Key())
			}
		}
	}
}

func (s *Service) shard(user string) *shard {
	return &s.shards[maphash.String(s.seed, user)%shards]
}

// observe records that version v of user's consent exists, dropping any older cached one,
// and reports whether v is newer than every version this process knew of.
func (s *Service) observe(user string, v int) bool {
	sh := s.shard(user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if d, ok := sh.m[user]; ok && d.version >= v {
		return false
	}
	sh.m[user] = decision{version: v}
	return true
}

// fill caches d unless a newer version is already known, and reports whether d's version
// is newer than every version this process knew of.
func (s *Service) fill(user string, d decision) bool {
	sh := s.shard(user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	cur, ok := sh.m[user]
	if !ok || cur.version < d.version || (cur.version == d.version && !cur.loaded) {
		sh.m[user] = d
	}
	return !ok || cur.version < d.version
}

// Subscribe calls fn with the user whenever this process learns that a user's consent
// changed: at once for a Set in this process, within milliseconds for one made elsewhere
// (through Run's watch). Calls are coalesced, never repeated: a burst of changes may be
// reported once, and a version already loaded (by a caller asking after an earlier call)
// is not reported again, so asking Allowed after a call answers from the newest version
// this process knows of. fn runs on the goroutine that learned of the change (a Set, the
// watch) and must not block: it should only note the user and let its own goroutine ask
// again. cancel stops the calls; it is safe to call more than once.
func (s *Service) Subscribe(fn func(user string)) (cancel func()) {
	s.subsMu.Lock()
	id := s.nextSub
	s.nextSub++
	s.subs[id] = fn
	s.subsMu.Unlock()
	return func() {
		s.subsMu.Lock()
		delete(s.subs, id)
		s.subsMu.Unlock()
	}
}

// notify tells every subscriber that user's consent changed. The calls are made without
// the lock, so a subscriber may cancel from inside its fn.
func (s *Service) notify(user string) {
	s.subsMu.RLock()
	fns := make([]func(string), 0, len(s.subs))
	for _, fn := range s.subs {
		fns = append(fns, fn)
	}
	s.subsMu.RUnlock()
	for _, fn := range fns {
		fn(user)
	}
}

// decision returns the user's cached decision, loading it on a miss.
func (s *Service) decision(ctx context.Context, user string) (decision, error) {
	sh := s.shard(user)
	sh.mu.RLock()
	d, ok := sh.m[user]
	sh.mu.RUnlock()
	if ok && d.loaded {
		return d, nil
	}
	c, err := s.Get(ctx, user)
	if err != nil {
		return decision{}, err
	}
	d = compact(c)
	s.fill(user, d)
	return d, nil
}

func compact(c pulsebase.Consent) decision {
	d := decision{version: c.Version, loaded: true}
	for i, cat := range pulsebase.Categories() {
		if c.Collect[cat] {
			d.collect |= 1 << i
		}
	}
	for i, p := range pulsebase.Purposes() {
		if c.Purposes[p] {
			d.purposes |= 1 << i
		}
	}
	return d
}

func bit(cat pulsebase.Category) (uint16, bool) {
	for i, c := range pulsebase.Categories() {
		if c == cat {
			return 1 << i, true
		}
	}
	return 0, false
}

func purposeBit(p pulsebase.Purpose) (uint16, bool) {
	for i, q := range pulsebase.Purposes() {
		if q == p {
			return 1 << i, true
		}
	}
	return 0, false
}

// MayCollect reports whether user consented to Pulsebase collecting data of category c.
func (s *Service) MayCollect(ctx context.Context, user string, c pulsebase.Category) (bool, error) {
	d, err := s.decision(ctx, user)
	if err != nil {
		return false, err
	}
	b, ok := bit(c)
	return ok && d.collect&b != 0, nil
}

// Allowed reports whether user's data of category c may be used for purpose p: the user
// must have consented both to collecting c and to p. It is the one decision point for
// every use of personal data; an unknown category or purpose is never allowed.
func (s *Service) Allowed(ctx context.Context, user string, c pulsebase.Category, p pulsebase.Purpose) (bool, error) {
	d, err := s.decision(ctx, user)
	if err != nil {
		return false, err
	}
	cb, ok1 := bit(c)
	pb, ok2 := purposeBit(p)
	return ok1 && ok2 && d.collect&cb != 0 && d.purposes&pb != 0, nil
}

// Get returns the user's current consent; a user who never answered has version 0 and
// consented to nothing. An erased user's consent reads as an *Error with code EERASED.
func (s *Service) Get(ctx context.Context, user string) (pulsebase.Consent, error) {
	rec, err := s.store.LatestConsent(ctx, user)
	if pulsebase.ErrorCode(err) == pulsebase.ENOTFOUND {
		return empty(), nil
	}
	if err != nil {
		return pulsebase.Consent{}, fmt.Errorf("load consent: %w", err)
	}
	r, err := s.open(ctx, rec)
	if err != nil {
		return pulsebase.Consent{}, err
	}
	return r.Consent, nil
}

// empty is the consent of a user who never answered.
func empty() pulsebase.Consent {
	return normalize(pulsebase.Consent{})
}

// normalize lists every known category and purpose, absent ones as false, so a client
// sees the whole question.
func normalize(c pulsebase.Consent) pulsebase.Consent {
	out := pulsebase.Consent{
		Collect:  make(map[pulsebase.Category]bool, len(pulsebase.Categories())),
		Purposes: make(map[pulsebase.Purpose]bool, len(pulsebase.Purposes())),
		Version:  c.Version,
		Updated:  c.Updated,
	}
	for _, cat := range pulsebase.Categories() {
		out.Collect[cat] = c.Collect[cat]
	}
	for _, p := range pulsebase.Purposes() {
		out.Purposes[p] = c.Purposes[p]
	}
	return out
}

// Set replaces the user's consent with c (absent categories and purposes are false) as
// actor, and returns the new version. The change is visible to this process (and its
// subscribers) at once, to every other process within milliseconds, and goes out on the
// user's change feed as a change of kind "consent" (key "consent", data the new consent
// as Get returns it, message id <user>-consent-<version>). It returns an *Error with code
// EINVALID for an unknown category or purpose; EUNAVAILABLE when the change is stored but
// the change feed did not take it. After any error the caller sets the same consent again:
// a retry appends an identical next version, announced and published in turn.
func (s *Service) Set(ctx context.Context, user string, c pulsebase.Consent, actor pulsebase.Actor) (pulsebase.Consent, error) {
	for cat := range c.Collect {
		if _, ok := bit(cat); !ok {
			return pulsebase.Consent{}, pulsebase.Errorf(pulsebase.EINVALID, "unknown category %.32q", cat)
		}
	}
	for p := range c.Purposes {
		if _, ok := purposeBit(p); !ok {
			return pulsebase.Consent{}, pulsebase.Errorf(pulsebase.EINVALID, "unknown purpose %.32q", p)
		}
	}
	keys, err := s.vault.UserKeys(ctx, user)
	if err != nil {
		return pulsebase.Consent{}, err
	}
	var next pulsebase.Consent
	// A PUT replaces the whole record, so losing a race to another change only means
	// appending after it: read the new latest version and try again.
	for attempt := 0; ; attempt++ {
		cur, err := s.Get(ctx, user)
		if err != nil {
			return pulsebase.Consent{}, err
		}
		next = normalize(c)
		next.Version = cur.Version + 1
		next.Updated = s.now().UTC().Truncate(time.Microsecond)
		pt, err := json.Marshal(pulsebase.ConsentReceipt{Consent: next, Actor: actor})
		if err != nil {
			return pulsebase.Consent{}, err
		}
		ct, err := keys.Seal(kindConsent, strconv.Itoa(next.Version), pt)
		if err != nil {
			return pulsebase.Consent{}, err
		}
		err = s.store.AppendConsent(ctx, pulsebase.ConsentRecord{User: user, Version: next.Version, Created: next.Updated, Ciphertext: ct})
		if err == nil {
			break
		}
		if pulsebase.ErrorCode(err) != pulsebase.ECONFLICT || attempt == 4 {
			return pulsebase.Consent{}, err
		}
	}
	// This process sees the change at once; the others through the bucket. If the put
	// fails, the others would keep an old decision: report the failure so the caller
	// retries (the receipt is stored; a retry appends an identical next version).
	if s.fill(user, compact(next)) {
		s.notify(user)
	}
	if _, err := s.kv.Put(ctx, user, []byte(strconv.Itoa(next.Version))); err != nil {
		return pulsebase.Consent{}, fmt.Errorf("announce consent change: %w", err)
	}
	if err := s.publish(ctx, keys, user, next); err != nil {
		s.log.Warn("publish consent change", "user", user, "version", next.Version, "err", err)
		return pulsebase.Consent{}, fmt.Errorf("consent version %d of %s: %w: %w", next.Version, user,
			pulsebase.Errorf(pulsebase.EUNAVAILABLE, "the consent is stored but could not reach the change feed; set it again"), err)
	}
	return next, nil
}

// publish puts c on the user's change feed. Each change carries the whole consent with its
// version, so a device that sees two out of order (two processes setting at once) keeps
// the higher version.
func (s *Service) publish(ctx context.Context, keys *vault.Keys, user string, c pulsebase.Consent) error {
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("encode consent change: %w", err)
	}
	var data map[string]any
	if err := json.Unmarshal(b, &data); err != nil {
		return fmt.Errorf("encode consent change: %w", err)
	}
	msgID := user + "-consent-" + strconv.Itoa(c.Version)
	_, err = changefeed.Publish(ctx, s.js, keys, user, msgID, []processor.Change{{Kind: "consent", Key: "consent", Data: data}})
	return err
}

// History returns the user's consent receipts, oldest first.
func (s *Service) History(ctx context.Context, user string) ([]pulsebase.ConsentReceipt, error) {
	recs, err := s.store.ConsentHistory(ctx, user)
	if err != nil {
		return nil, fmt.Errorf("load consent history: %w", err)
	}
	out := make([]pulsebase.ConsentReceipt, 0, len(recs))
	for _, rec := range recs {
		r, err := s.open(ctx, rec)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func (s *Service) open(ctx context.Context, rec pulsebase.ConsentRecord) (pulsebase.ConsentReceipt, error) {
	var r pulsebase.ConsentReceipt
	keys, err := s.vault.UserKeys(ctx, rec.User)
	if err != nil {
		return r, err
	}
	pt, err := keys.Open(kindConsent, strconv.Itoa(rec.Version), rec.Ciphertext)
	if err != nil {
		return r, fmt.Errorf("open consent %d: %w", rec.Version, err)
	}
	if err := json.Unmarshal(pt, &r); err != nil {
		return r, fmt.Errorf("decode consent %d: %w", rec.Version, err)
	}
	r.Consent = normalize(r.Consent)
	return r, nil
}
