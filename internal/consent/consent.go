// Package consent decides what Pulsebase may collect from a user and what it may use their
// data for. Answers are kept as an append-only history of receipts (who changed what, when,
// from which device and token), encrypted under the user's key in the store. Decisions are
// served from memory; every process learns of a change through a JetStream key-value
// bucket within milliseconds, so a revocation takes effect everywhere well inside a second.
//
// Allowed is the one decision point every reader of personal data for a purpose calls.
// Imported by cmd/pulsebase (wiring), httpapi (the consent routes) and ingest.
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
type Service struct {
	store  pulsebase.ConsentStore
	vault  *vault.Vault
	kv     jetstream.KeyValue
	log    *slog.Logger
	now    func() time.Time
	seed   maphash.Seed
	shards [shards]shard
}

// New returns a consent service over store, with its version bucket in js (created if
// missing, with replicas copies).
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
	s := &Service{store: store, vault: v, kv: kv, log: log, now: time.Now, seed: maphash.MakeSeed()}
	for i := range s.shards {
		s.shards[i].m = make(map[string]decision)
	}
	return s, nil
}

// Run applies version changes made by any process to the cache until ctx is done. Start
// it before serving: decisions are only as fresh as the watch.
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
			s.observe(e.Key(), v)
		}
	}
}

func (s *Service) shard(user string) *shard {
	return &s.shards[maphash.String(s.seed, user)%shards]
}

// observe records that version v of user's consent exists, dropping any older cached one.
func (s *Service) observe(user string, v int) {
	sh := s.shard(user)
	sh.mu.Lock()
	if d, ok := sh.m[user]; !ok || d.version < v {
		sh.m[user] = decision{version: v}
	}
	sh.mu.Unlock()
}

// fill caches d unless a newer version is already known.
func (s *Service) fill(user string, d decision) {
	sh := s.shard(user)
	sh.mu.Lock()
	if cur, ok := sh.m[user]; !ok || cur.version < d.version || (cur.version == d.version && !cur.loaded) {
		sh.m[user] = d
	}
	sh.mu.Unlock()
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
// actor, and returns the new version. The change is visible to this process at once and
// to every other process within milliseconds. It returns an *Error with code EINVALID for
// an unknown category or purpose.
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
	s.fill(user, compact(next))
	if _, err := s.kv.Put(ctx, user, []byte(strconv.Itoa(next.Version))); err != nil {
		return pulsebase.Consent{}, fmt.Errorf("announce consent change: %w", err)
	}
	return next, nil
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
