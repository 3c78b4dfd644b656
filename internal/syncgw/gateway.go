package syncgw

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/auth"
	"github.com/pulsebase/pulsebase/internal/broker"
	"github.com/pulsebase/pulsebase/internal/ingest"
	"github.com/pulsebase/pulsebase/internal/processor"
	"github.com/pulsebase/pulsebase/internal/profile"
	"github.com/pulsebase/pulsebase/internal/telemetry"
	"github.com/pulsebase/pulsebase/internal/vault"
)

// Subprotocol is the WebSocket subprotocol a client must offer.
const Subprotocol = "pulsebase.sync.v1"

// Close codes of API.md, and those of RFC 6455 the gateway uses.
const (
	CloseUnauthenticated websocket.StatusCode = 4001 // no, invalid or expired token
	CloseForbidden       websocket.StatusCode = 4003 // the token may not sync
	CloseTooSlow         websocket.StatusCode = 4008 // the send queue overflowed: resume from the cursor
	CloseRevoked         websocket.StatusCode = 4009 // the credential was revoked
)

// Codes of error frames that are not HTTP problem codes too.
const (
	// ETOOMANYCONNECTIONS: the user or device has as many connections as allowed.
	ETOOMANYCONNECTIONS = "too_many_connections"
	// EREVOKED: the token was revoked.
	EREVOKED = "revoked"
)

// Config are the limits of a gateway; zero fields take the defaults.
type Config struct {
	// MaxQueueBytes bounds the frames waiting to be written to one connection (1 MiB).
	MaxQueueBytes int
	// MaxHeldBytes bounds the live frames held back while a connection reads its
	// history (8 MiB).
	MaxHeldBytes int
	// MaxFrameBytes bounds a frame from a client (4 MiB and 64 KiB: a samples frame as
	// large as the largest HTTP batch).
	MaxFrameBytes int
	// FramesPerSecond and FrameBurst bound the frames a client sends (20/s, bursts of 60).
	FramesPerSecond float64
	FrameBurst      int
	// MaxConnsPerUser and MaxConnsPerDevice bound the connections of a user (20) and of
	// one of their devices (3) on this gateway. A coach's connections to a user's data
	// count as the coach's, not the user's, so that a coach cannot use up the user's.
	MaxConnsPerUser   int
	MaxConnsPerDevice int
	// PingInterval is how often the gateway pings (15 s); a peer that has not answered
	// within another interval is closed, so a dead peer is noticed within 30 s.
	PingInterval time.Duration
	// HelloTimeout is how long a client has to send its hello (10 s).
	HelloTimeout time.Duration
	// WriteTimeout bounds one write to a client (10 s).
	WriteTimeout time.Duration
	// SnapshotDays is how many days of daily summaries a snapshot holds (14).
	SnapshotDays int
	// MaxOps bounds the ops of one ops frame (500).
	MaxOps int
}

func (c *Config) defaults() {
	set := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	set(&c.MaxQueueBytes, 1<<20)
	set(&c.MaxHeldBytes, 8<<20)
	set(&c.MaxFrameBytes, 4<<20+64<<10)
	set(&c.FrameBurst, 60)
	set(&c.MaxConnsPerUser, 20)
	set(&c.MaxConnsPerDevice, 3)
	set(&c.SnapshotDays, 14)
	set(&c.MaxOps, 500)
	if c.FramesPerSecond <= 0 {
		c.FramesPerSecond = 20
	}
	for _, d := range []struct {
		p *time.Duration
		v time.Duration
	}{{&c.PingInterval, 15 * time.Second}, {&c.HelloTimeout, 10 * time.Second}, {&c.WriteTimeout, 10 * time.Second}} {
		if *d.p <= 0 {
			*d.p = d.v
		}
	}
}

// Revoker tells whether a credential was revoked, and calls back when any is
// (internal/auth.Revocations).
type Revoker interface {
	Revoked(p pulsebase.Principal) bool
	Subscribe(fn func()) (cancel func())
}

// GrantWatcher calls back after any grant change with the owner's id
// (internal/auth.Grants).
type GrantWatcher interface {
	Subscribe(fn func(owner string)) (cancel func())
}

// Consents is what the gateway needs of the consent service: the decisions, the current
// consent for snapshots, and a call back when a user's consent changes.
type Consents interface {
	MayCollect(ctx context.Context, user string, c pulsebase.Category) (bool, error)
	Get(ctx context.Context, user string) (pulsebase.Consent, error)
	Subscribe(fn func(user string)) (cancel func())
}

// Deps are what a gateway works with.
type Deps struct {
	JetStream jetstream.JetStream
	Vault     *vault.Vault
	// Store serves the derived data of snapshots, and the feedback that gives their
	// recommendations a state.
	Store    Store
	Ingest   *ingest.Service
	Profiles *profile.Service
	Consent  Consents
	// Revocations may be nil: then no token is revoked before it expires.
	Revocations Revoker
	// Authenticate checks a token presented over a connection with TLS state peer (nil
	// over plain HTTP); an error wrapping auth.ErrRevoked closes with 4009, any other with
	// 4001. Resolve maps a subject to the internal user.
	Authenticate func(token string, peer *tls.ConnectionState) (pulsebase.Principal, error)
	Resolve      func(ctx context.Context, subject string) (pulsebase.User, error)
	// Policy decides who may sync whose data (a coach, the categories a user granted);
	// nil is auth.NewPolicy(nil): users and devices their own data only.
	Policy *auth.Policy
	// Grants calls back with the owner whenever a grant changes anywhere, so that
	// coaches' connections are decided again; nil when there are no grants.
	Grants  GrantWatcher
	Metrics *telemetry.Metrics
	Log     *slog.Logger
}

// Gateway serves sync connections. Run must be running for it to accept any.
type Gateway struct {
	cfg  Config
	deps Deps

	mu    sync.RWMutex
	users map[string][]*conn // copied on write: the hub reads a user's slice without the lock
	// scopedConns are the connections that read some categories only (coaches'): the
	// ones whose grants may expire, checked every second.
	scopedConns map[*conn]struct{}
	ctx         context.Context // Run's: connections end with it
	epoch       int64           // the CHANGES stream's creation time, for cursors of live changes
	ready       chan struct{}   // closed once the hub reads the stream
}

// New returns a gateway.
func New(cfg Config, d Deps) *Gateway {
	cfg.defaults()
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	if d.Metrics == nil {
		d.Metrics = telemetry.NewMetrics()
	}
	if d.Policy == nil {
		d.Policy = auth.NewPolicy(nil)
	}
	return &Gateway{cfg: cfg, deps: d, users: make(map[string][]*conn), scopedConns: make(map[*conn]struct{}),
		ready: make(chan struct{})}
}

// Run reads the change feed for the connections of this gateway until ctx is done, then
// closes them all with 1001 (going away), and returns. It also closes, within a second,
// the coaches' connections whose grant was revoked, changed or expired.
func (g *Gateway) Run(ctx context.Context) error {
	js := g.deps.JetStream
	st, err := js.Stream(ctx, broker.StreamChanges)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting
		}
		return fmt.Errorf("sync: change stream: %w", err)
	}
	cons, err := js.OrderedConsumer(ctx, broker.StreamChanges, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{broker.ChangeSubject(">")},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting
		}
		return fmt.Errorf("sync: change consumer: %w", err)
	}
	cc, err := cons.Consume(g.dispatch, jetstream.PullMaxMessages(2000))
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting
		}
		return fmt.Errorf("sync: consume changes: %w", err)
	}
	defer cc.Stop()
	var stops []func()
	if r := g.deps.Revocations; r != nil {
		stops = append(stops, r.Subscribe(g.recheckCredentials))
	}
	if c := g.deps.Consent; c != nil {
		stops = append(stops, c.Subscribe(g.consentChanged))
	}
	if gr := g.deps.Grants; gr != nil {
		stops = append(stops, gr.Subscribe(g.grantsChanged))
	}
	defer func() {
		for _, stop := range stops {
			stop()
		}
	}()
	g.mu.Lock()
	g.ctx = ctx
	g.epoch = st.CachedInfo().Created.Unix()
	g.mu.Unlock()
	close(g.ready)
	// A grant ends by expiring as well as by being deleted, and nothing announces an
	// expiry: the coaches' connections are decided again every second.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-tick.C:
			g.expireGrants()
		}
	}
	for _, c := range g.all() {
		c.close(websocket.StatusGoingAway, "the server is shutting down; reconnect", nil)
	}
	return nil
}

// all returns every connection.
func (g *Gateway) all() []*conn {
	g.mu.RLock()
	defer g.mu.RUnlock()
	var out []*conn
	for _, cs := range g.users {
		out = append(out, cs...)
	}
	return out
}

// of returns the connections of user.
func (g *Gateway) of(user string) []*conn {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.users[user]
}

// register adds c unless its caller or device is at its limit. The limits count the
// connections of the same caller (c.self) to the same user's data: a user's own devices
// and a coach of theirs each have their own, so that neither can lock the other out.
func (g *Gateway) register(c *conn) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	cs := g.users[c.user]
	mine, same := 0, 0
	for _, o := range cs {
		if o.self != c.self {
			continue
		}
		mine++
		if o.device == c.device {
			same++
		}
	}
	if mine >= g.cfg.MaxConnsPerUser {
		return pulsebase.Errorf(ETOOMANYCONNECTIONS, "this user has %d sync connections open, the most allowed", mine)
	}
	if same >= g.cfg.MaxConnsPerDevice {
		return pulsebase.Errorf(ETOOMANYCONNECTIONS, "device %.64q has %d sync connections open, the most allowed", c.device, same)
	}
	g.users[c.user] = append(slices.Clip(cs), c)
	if c.scoped() {
		g.scopedConns[c] = struct{}{}
	}
	g.deps.Metrics.SyncConnections.Inc()
	return nil
}

// unregister removes c.
func (g *Gateway) unregister(c *conn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	cs := g.users[c.user]
	i := slices.Index(cs, c)
	if i < 0 {
		return
	}
	if len(cs) == 1 {
		delete(g.users, c.user)
	} else {
		g.users[c.user] = slices.Delete(slices.Clone(cs), i, i+1)
	}
	delete(g.scopedConns, c)
	g.deps.Metrics.SyncConnections.Dec()
}

// dispatch hands one message of the feed to its user's connections here.
func (g *Gateway) dispatch(m jetstream.Msg) {
	user, ok := strings.CutPrefix(m.Subject(), "changes.")
	if !ok {
		return
	}
	cs := g.of(user)
	if len(cs) == 0 {
		return
	}
	meta, err := m.Metadata()
	if err != nil {
		g.deps.Log.Warn("sync: change without metadata", "err", err)
		return
	}
	frames, err := g.frames(g.ctx, user, g.epoch, meta.Sequence.Stream, m.Headers().Get(jetstream.MsgIDHeader), m.Data(), processor.Cursor{})
	if err != nil {
		g.deps.Log.Warn("sync: open change message", "seq", meta.Sequence.Stream, "err", err)
		return
	}
	for i := range frames {
		frames[i].stored = meta.Timestamp
	}
	for _, c := range cs {
		c.deliver(meta.Sequence.Stream, frames)
	}
}

// recheckCredentials closes the connections whose credential was revoked.
func (g *Gateway) recheckCredentials() {
	for _, c := range g.all() {
		if g.deps.Revocations.Revoked(c.principal) {
			c.fail(EREVOKED, "the credential of this connection was revoked", CloseRevoked)
		}
	}
}

// consentChanged drops the frames queued for user's connections that its consent no
// longer allows.
func (g *Gateway) consentChanged(user string) {
	cs := g.of(user)
	if len(cs) == 0 {
		return
	}
	allowed := g.allowedCategories(g.ctx, user)
	for _, c := range cs {
		c.filter(allowed)
	}
}

// allowedCategories returns, by index in pulsebase.Categories(), whether user consents
// to collecting it; on an error it allows none.
func (g *Gateway) allowedCategories(ctx context.Context, user string) []bool {
	cats := pulsebase.Categories()
	out := make([]bool, len(cats))
	for i, cat := range cats {
		ok, err := g.deps.Consent.MayCollect(ctx, user, cat)
		out[i] = ok && err == nil
	}
	return out
}

// errNotReady is the error of a connection that arrives before Run started.
var errNotReady = errors.New("the sync gateway is starting")
