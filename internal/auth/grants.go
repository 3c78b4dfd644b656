package auth

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pulsebase/pulsebase"
)

// GrantBucket is the JetStream key-value bucket of access grants.
const GrantBucket = "GRANTS"

// MaxGrantDuration bounds how far ahead a grant may run.
const MaxGrantDuration = 366 * 24 * time.Hour

// Grant lets one principal (a coach) read some categories of one user's data until a
// time. Owner and grantee are internal pseudonymous ids; the grantee's external subject,
// which names a person, is kept only sealed under the owner's data key (To), so that the
// owner's erasure makes it unreadable.
type Grant struct {
	ID         string               `json:"id"`
	Owner      string               `json:"owner"`
	Grantee    string               `json:"grantee"`
	Categories []pulsebase.Category `json:"categories"`
	Until      time.Time            `json:"until"`
	Created    time.Time            `json:"created"`
	// To is the grantee's external subject, sealed by the caller (opaque here).
	To []byte `json:"to,omitempty"`
}

// Grants keeps every grant in the GRANTS bucket and an index of them in memory, followed
// from every process like Revocations, so that a decision costs a map lookup and a grant
// deleted anywhere stops working everywhere within milliseconds.
//
// Keys are g.<owner>.<id>; owner ids and grant ids are base32 and need no escaping.
type Grants struct {
	kv     jetstream.KeyValue
	log    *slog.Logger
	loaded uint64

	mu sync.RWMutex
	// byOwner maps an owner to their grants by id.
	byOwner map[string]map[string]Grant
	// byPair maps owner+"|"+grantee to that pair's grants (usually one).
	byPair map[string][]Grant
	// revs is the revision of the latest entry applied per key (a put still in force),
	// so that the watch does not apply again an entry this process has moved past: a
	// grant deleted here would otherwise be back until the deletion came round too.
	revs map[string]uint64
	subs subscribers[string]
}

// NewGrants opens the GRANTS bucket in js (created if missing, with replicas copies) and
// loads every grant. Call Run to follow later changes.
func NewGrants(ctx context.Context, js jetstream.JetStream, replicas int, log *slog.Logger) (*Grants, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      GrantBucket,
		Description: "users' grants of read access to coaches",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("grant bucket: %w", err)
	}
	g := &Grants{kv: kv, log: log, byOwner: map[string]map[string]Grant{}, byPair: map[string][]Grant{},
		revs: map[string]uint64{}}
	if g.loaded, err = loadBucket(ctx, kv, g.apply); err != nil {
		return nil, err
	}
	return g, nil
}

// Run follows grants made and deleted by any process until ctx is done, calling the
// Subscribe callbacks after each change, and once an hour deletes grants expired for a
// day.
func (g *Grants) Run(ctx context.Context) error {
	return followBucket(ctx, g.kv, g.loaded, g.apply, func(e jetstream.KeyValueEntry) {
		g.notify(ownerOfKey(e.Key()))
	}, time.Hour, func() { g.pruneExpired(ctx, time.Now().Add(-24*time.Hour)) })
}

func grantKey(owner, id string) string { return "g." + owner + "." + id }

func ownerOfKey(key string) string {
	parts := strings.Split(key, ".")
	if len(parts) != 3 {
		return ""
	}
	return parts[1]
}

// apply records e in memory.
func (g *Grants) apply(e jetstream.KeyValueEntry) bool {
	key := e.Key()
	owner := ownerOfKey(key)
	if owner == "" {
		g.log.Warn("unknown key in grant bucket", "key", key)
		return false
	}
	id := key[strings.LastIndexByte(key, '.')+1:]
	g.mu.Lock()
	defer g.mu.Unlock()
	if e.Revision() <= g.revs[key] {
		// Applied here already (this process made the change): nothing to redo, but
		// subscribers hear of it as of any change.
		return true
	}
	if old, ok := g.byOwner[owner][id]; ok {
		g.unindex(old)
	}
	if e.Operation() != jetstream.KeyValuePut {
		delete(g.revs, key)
		return true
	}
	g.revs[key] = e.Revision()
	var gr Grant
	if err := json.Unmarshal(e.Value(), &gr); err != nil || gr.Owner != owner || gr.ID != id {
		g.log.Warn("bad grant in bucket", "key", key)
		return false
	}
	g.index(gr)
	return true
}

// index and unindex keep both maps in step; g.mu is held.
func (g *Grants) index(gr Grant) {
	m := g.byOwner[gr.Owner]
	if m == nil {
		m = map[string]Grant{}
		g.byOwner[gr.Owner] = m
	}
	m[gr.ID] = gr
	pair := gr.Owner + "|" + gr.Grantee
	g.byPair[pair] = append(slices.DeleteFunc(g.byPair[pair], func(x Grant) bool { return x.ID == gr.ID }), gr)
}

func (g *Grants) unindex(gr Grant) {
	if m := g.byOwner[gr.Owner]; m != nil {
		delete(m, gr.ID)
		if len(m) == 0 {
			delete(g.byOwner, gr.Owner)
		}
	}
	pair := gr.Owner + "|" + gr.Grantee
	rest := slices.DeleteFunc(g.byPair[pair], func(x Grant) bool { return x.ID == gr.ID })
	if len(rest) == 0 {
		delete(g.byPair, pair)
	} else {
		g.byPair[pair] = rest
	}
}

// Granted returns the categories of owner's data grantee may read at now: the union of
// their grants that have not expired (nil when none).
func (g *Grants) Granted(owner, grantee string, now time.Time) []pulsebase.Category {
	g.mu.RLock()
	defer g.mu.RUnlock()
	var out []pulsebase.Category
	for _, gr := range g.byPair[owner+"|"+grantee] {
		if !now.Before(gr.Until) {
			continue
		}
		for _, c := range gr.Categories {
			if !slices.Contains(out, c) {
				out = append(out, c)
			}
		}
	}
	return out
}

// List returns owner's grants (expired ones included until they are pruned), newest
// first.
func (g *Grants) List(owner string) []Grant {
	g.mu.RLock()
	out := make([]Grant, 0, len(g.byOwner[owner]))
	for _, gr := range g.byOwner[owner] {
		out = append(out, gr)
	}
	g.mu.RUnlock()
	slices.SortFunc(out, func(a, b Grant) int { return b.Created.Compare(a.Created) })
	return out
}

// ErrBadGrant wraps every reason a grant is refused.
var ErrBadGrant = errors.New("bad grant")

// Create stores a new grant with a fresh id and returns it. It takes effect in this
// process at once and in every other within milliseconds.
func (g *Grants) Create(ctx context.Context, gr Grant, now time.Time) (Grant, error) {
	switch {
	case gr.Owner == "" || gr.Grantee == "":
		return Grant{}, fmt.Errorf("%w: owner and grantee are required", ErrBadGrant)
	case gr.Owner == gr.Grantee:
		return Grant{}, fmt.Errorf("%w: a user cannot grant access to themselves", ErrBadGrant)
	case len(gr.Categories) == 0:
		return Grant{}, fmt.Errorf("%w: at least one category is required", ErrBadGrant)
	case !gr.Until.After(now):
		return Grant{}, fmt.Errorf("%w: until must be in the future", ErrBadGrant)
	case gr.Until.After(now.Add(MaxGrantDuration)):
		return Grant{}, fmt.Errorf("%w: until is at most %d days ahead", ErrBadGrant, int(MaxGrantDuration.Hours()/24))
	}
	for _, c := range gr.Categories {
		if !slices.Contains(pulsebase.Categories(), c) {
			return Grant{}, fmt.Errorf("%w: unknown category %q", ErrBadGrant, c)
		}
	}
	if gr.ID == "" {
		gr.ID = NewGrantID()
	}
	gr.Created = now.UTC()
	gr.Until = gr.Until.UTC()
	b, err := json.Marshal(gr)
	if err != nil {
		return Grant{}, err
	}
	rev, err := g.kv.Create(ctx, grantKey(gr.Owner, gr.ID), b)
	if err != nil {
		return Grant{}, fmt.Errorf("store grant: %w", err)
	}
	g.mu.Lock()
	g.revs[grantKey(gr.Owner, gr.ID)] = max(g.revs[grantKey(gr.Owner, gr.ID)], rev)
	g.index(gr)
	g.mu.Unlock()
	return gr, nil
}

// Delete deletes owner's grant id and reports whether it existed. Access it gave ends in
// this process at once and in every other within milliseconds (the Subscribe callbacks
// run there, so that open connections are checked again).
func (g *Grants) Delete(ctx context.Context, owner, id string) (bool, error) {
	g.mu.RLock()
	gr, ok := g.byOwner[owner][id]
	g.mu.RUnlock()
	if !ok {
		return false, nil
	}
	if err := g.kv.Delete(ctx, grantKey(owner, id)); err != nil {
		return false, fmt.Errorf("delete grant: %w", err)
	}
	g.mu.Lock()
	g.unindex(gr)
	g.mu.Unlock()
	g.notify(owner)
	return true, nil
}

// DeleteUser deletes every grant user gave or was given (erasure).
func (g *Grants) DeleteUser(ctx context.Context, user string) error {
	g.mu.RLock()
	var doomed []Grant
	for _, m := range g.byOwner {
		for _, gr := range m {
			if gr.Owner == user || gr.Grantee == user {
				doomed = append(doomed, gr)
			}
		}
	}
	g.mu.RUnlock()
	for _, gr := range doomed {
		if _, err := g.Delete(ctx, gr.Owner, gr.ID); err != nil {
			return err
		}
	}
	return nil
}

// pruneExpired deletes grants that expired before cutoff. Several processes may do it at
// once; deleting twice changes nothing.
func (g *Grants) pruneExpired(ctx context.Context, cutoff time.Time) {
	g.mu.RLock()
	var doomed []Grant
	for _, m := range g.byOwner {
		for _, gr := range m {
			if gr.Until.Before(cutoff) {
				doomed = append(doomed, gr)
			}
		}
	}
	g.mu.RUnlock()
	for _, gr := range doomed {
		if _, err := g.Delete(ctx, gr.Owner, gr.ID); err != nil {
			g.log.Warn("prune expired grant", "err", err)
			return
		}
	}
}

// Subscribe registers fn to be called with the owner of every grant change, by any
// process, after it is applied. fn runs on the watch goroutine and must return quickly.
func (g *Grants) Subscribe(fn func(owner string)) (cancel func()) { return g.subs.add(fn) }

func (g *Grants) notify(owner string) { g.subs.notify(owner) }

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// NewGrantID returns a random grant id: "g" and 26 base32 characters.
func NewGrantID() string {
	var b [16]byte
	rand.Read(b[:])
	return "g" + idEncoding.EncodeToString(b[:])
}
