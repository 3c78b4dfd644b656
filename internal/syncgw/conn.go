package syncgw

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/auth"
	"github.com/pulsebase/pulsebase/internal/crdt"
	"github.com/pulsebase/pulsebase/internal/ingest"
	"github.com/pulsebase/pulsebase/internal/processor"
	"github.com/pulsebase/pulsebase/internal/profile"
)

// maxSamples bounds the samples of one frame, as of one HTTP batch (API.md).
const maxSamples = 5000

// Ready reports whether the gateway accepts connections (Run has started reading the
// feed).
func (g *Gateway) Ready() bool {
	select {
	case <-g.ready:
		return true
	default:
		return false
	}
}

// ServeHTTP upgrades a GET /v1/sync request and serves the connection until it ends. The
// HTTP layer answers requests that are not WebSocket upgrades, and those that arrive
// before Ready.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !g.Ready() {
		http.Error(w, errNotReady.Error(), http.StatusServiceUnavailable)
		return
	}
	// The HTTP server's read and write timeouts would otherwise stay on the hijacked
	// connection and cut it after a minute.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
	// Any origin may connect: the credential is the token of the first frame, never an
	// ambient cookie, so a page of another origin gains nothing by opening a socket.
	sb := &smallBuffers{ResponseWriter: w}
	ws, err := websocket.Accept(sb, r, &websocket.AcceptOptions{Subprotocols: []string{Subprotocol}, InsecureSkipVerify: true})
	if err != nil {
		return // Accept answered the request
	}
	if ws.Subprotocol() != Subprotocol {
		ws.Close(websocket.StatusProtocolError, "offer the subprotocol "+Subprotocol)
		return
	}
	ws.SetReadLimit(-1) // readFrame enforces MaxFrameBytes, answering with an error frame
	ctx, cancel := context.WithCancel(g.ctx)
	c := &conn{g: g, ws: ws, cork: sb.cork, ctx: ctx, cancel: cancel, done: make(chan struct{}), tls: r.TLS,
		limiter: rate.NewLimiter(rate.Limit(g.cfg.FramesPerSecond), g.cfg.FrameBurst)}
	c.cond = sync.NewCond(&c.mu)
	// The connection gets a goroutine of its own, and this one returns: the HTTP
	// server's request, response and connection state, and the stack that parsed them,
	// are not kept for the life of the socket.
	go c.serve()
}

// Buffer sizes of a sync connection. Frames larger than a buffer bypass it, and every
// frame is flushed on its own, so small buffers cost no extra system calls for the
// frames the gateway writes (a change is a few hundred bytes); the HTTP server's are
// 4 KiB each, which would double an idle connection's memory.
const (
	readBufferSize  = 1 << 10
	writeBufferSize = 1 << 10
)

// smallBuffers gives the WebSocket library buffers of readBufferSize and writeBufferSize
// instead of the HTTP server's when it takes over the connection, and a corkConn to write
// through.
type smallBuffers struct {
	http.ResponseWriter
	cork *corkConn // set by Hijack
}

func (s *smallBuffers) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Hijack takes the connection over, keeping what the client sent after its request.
func (s *smallBuffers) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	raw, brw, err := http.NewResponseController(s.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	conn := &corkConn{Conn: raw}
	s.cork = conn
	// What the client sent after its request must be in the new reader's buffer: the
	// library takes the buffered bytes from there and reads the rest from conn.
	n := brw.Reader.Buffered()
	early, _ := brw.Reader.Peek(n)
	br := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(early)), conn), max(readBufferSize, n))
	if n > 0 {
		if _, err := br.Peek(n); err != nil {
			conn.Close()
			return nil, nil, err
		}
	}
	return conn, bufio.NewReadWriter(br, bufio.NewWriterSize(conn, writeBufferSize)), nil
}

// corkConn lets the writer of a run of frames send them with one system call: the
// library flushes every frame, and while corked those writes gather here until flush.
// Writes when not corked (pongs, the close frame) go straight through, in order.
type corkConn struct {
	net.Conn
	mu     sync.Mutex
	corked bool
	buf    []byte
}

// maxCork bounds what gathers before it is written anyway.
const maxCork = 64 << 10

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.corked {
		return c.Conn.Write(p)
	}
	c.buf = append(c.buf, p...)
	if len(c.buf) >= maxCork {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// cork starts gathering writes.
func (c *corkConn) cork() {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

// uncork writes what gathered, within timeout, and stops gathering.
func (c *corkConn) uncork(timeout time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	if len(c.buf) == 0 {
		return nil
	}
	c.Conn.SetWriteDeadline(time.Now().Add(timeout))
	err := c.flushLocked()
	c.Conn.SetWriteDeadline(time.Time{})
	if cap(c.buf) > 16<<10 {
		c.buf = nil // an idle connection keeps no large buffer
	}
	return err
}

func (c *corkConn) flushLocked() error {
	_, err := c.Conn.Write(c.buf)
	c.buf = c.buf[:0]
	return err
}

// conn is one sync connection.
type conn struct {
	g       *Gateway
	ws      *websocket.Conn
	cork    *corkConn
	ctx     context.Context // ends when the connection does
	cancel  context.CancelFunc
	limiter *rate.Limiter

	// tls is the connection's TLS state (nil over plain HTTP): a certificate-bound token is
	// valid only with its certificate.
	tls *tls.ConnectionState

	// Set by the hello, then fixed. user is the owner of the data synced; self the
	// caller's own internal id (user for the user and their devices, "" for a role
	// without an account); access what the policy allowed, whose Categories are nil
	// unless the caller may read some categories only (a coach).
	principal pulsebase.Principal
	user      string
	self      string
	device    string
	access    auth.Decision

	mu        sync.Mutex
	cond      *sync.Cond // signalled when the queue shrinks or the connection closes
	queue     []frame
	spare     []frame
	queued    int  // bytes in queue and being written
	writing   bool // a writer goroutine runs
	replaying bool // history is being read: live messages are held
	held      []heldMsg
	heldBytes int
	lastSeq   uint64 // the stream sequence of the last message queued
	closed    bool
	authed    bool
	timers    [3]*time.Timer // hello, ping and expiry, stopped when the connection closes
	done      chan struct{}  // closed when the close handshake is over
}

// Timers of a connection.
const (
	timerHello = iota
	timerPing
	timerExpiry
)

// heldMsg is a live message held back while history is read.
type heldMsg struct {
	seq    uint64
	frames []frame
}

// frameError is a problem with a client's frame: answered with an error frame, then the
// connection is closed with status.
type frameError struct {
	code, detail string
	status       websocket.StatusCode
}

func (e *frameError) Error() string { return e.code + ": " + e.detail }

// serve runs the connection: hello, welcome, then client frames until it ends.
func (c *conn) serve() {
	defer func() {
		c.close(websocket.StatusNormalClosure, "", nil)
		<-c.done
		c.g.unregister(c)
		c.cancel()
	}()
	c.after(timerHello, c.g.cfg.HelloTimeout, func() {
		c.mu.Lock()
		authed := c.authed
		c.mu.Unlock()
		if !authed {
			c.fail(pulsebase.EUNAUTHORIZED, "send a hello frame with a token first", CloseUnauthenticated)
		}
	})
	f, err := c.readFrame()
	if err != nil {
		c.failWith(err)
		return
	}
	if err := c.hello(f); err != nil {
		c.failWith(err)
		return
	}
	c.after(timerPing, c.g.cfg.PingInterval, c.ping)
	for {
		f, err := c.readFrame()
		if err != nil {
			c.failWith(err)
			return
		}
		if !c.limiter.Allow() {
			c.fail(pulsebase.ERATELIMITED, fmt.Sprintf("more than %g frames a second", c.g.cfg.FramesPerSecond), websocket.StatusPolicyViolation)
			return
		}
		switch f.Type {
		case "samples":
			err = c.samples(f)
		case "ops":
			err = c.ops(f)
		case "hello":
			err = &frameError{pulsebase.EINVALID, "hello is the first frame only", websocket.StatusPolicyViolation}
		default:
			err = &frameError{pulsebase.EINVALID, fmt.Sprintf("unknown frame type %.32q: send samples or ops", f.Type), websocket.StatusPolicyViolation}
		}
		if err != nil {
			c.failWith(err)
			return
		}
	}
}

// readFrame reads one frame of the client.
func (c *conn) readFrame() (inFrame, error) {
	typ, r, err := c.ws.Reader(c.ctx)
	if err != nil {
		return inFrame{}, err
	}
	if typ != websocket.MessageText {
		return inFrame{}, &frameError{pulsebase.EINVALID, "frames are JSON text", websocket.StatusUnsupportedData}
	}
	max := c.g.cfg.MaxFrameBytes
	b, err := io.ReadAll(io.LimitReader(r, int64(max)+1))
	if err != nil {
		return inFrame{}, err
	}
	if len(b) > max {
		return inFrame{}, &frameError{pulsebase.ETOOLARGE, fmt.Sprintf("a frame is at most %d bytes", max), websocket.StatusMessageTooBig}
	}
	var f inFrame
	if err := json.Unmarshal(b, &f); err != nil {
		return inFrame{}, &frameError{pulsebase.EINVALID, "a frame is a JSON object with a type", websocket.StatusInvalidFramePayloadData}
	}
	return f, nil
}

// hello authenticates the connection, registers it and starts its feed: history from the
// cursor, or a snapshot.
func (c *conn) hello(f inFrame) error {
	deny := func(code, detail string, status websocket.StatusCode) error {
		c.g.deps.Metrics.AuthFailures.WithLabelValues("sync_" + code).Inc()
		return &frameError{code, detail, status}
	}
	if f.Type != "hello" || f.Token == "" {
		return deny(pulsebase.EUNAUTHORIZED, "the first frame is a hello with a token", CloseUnauthenticated)
	}
	p, err := c.g.deps.Authenticate(f.Token, c.tls)
	switch {
	case errors.Is(err, auth.ErrRevoked):
		return deny(EREVOKED, "the token was revoked", CloseRevoked)
	case err != nil:
		return deny(pulsebase.EUNAUTHORIZED, "the token is invalid or expired", CloseUnauthenticated)
	}
	device := f.Device
	if p.Role == pulsebase.RoleDevice {
		if device != "" && device != p.Device {
			return deny(pulsebase.EFORBIDDEN, "the token was minted for another device", CloseForbidden)
		}
		device = p.Device
	}
	// The policy decides whose data the caller may sync, and which of it, as it does for
	// the HTTP API; roles without an account (admin, analyst, service) have no self and
	// are refused by it.
	self := ""
	switch p.Role {
	case pulsebase.RoleUser, pulsebase.RoleDevice, pulsebase.RoleCoach:
		usr, err := c.g.deps.Resolve(c.ctx, p.Subject)
		if err != nil {
			return c.unavailable("resolve user", err)
		}
		self = usr.ID
	}
	owner := f.User
	if owner == "" || owner == "me" {
		owner = self
	}
	access := c.g.deps.Policy.Decide(auth.Request{Principal: p, Self: self, Action: auth.ActSync, Owner: owner})
	if !access.Allowed() {
		// Whether the user exists or the caller lacks a grant, the answer is the same,
		// so that a hello cannot probe for user ids.
		detail := "role " + string(p.Role) + " may not sync this user's data"
		if p.Role == pulsebase.RoleCoach {
			detail = "no grant of this user's data to this coach is in force"
		}
		return deny(pulsebase.EFORBIDDEN, detail, CloseForbidden)
	}
	if !validDevice(device) {
		return &frameError{pulsebase.EINVALID, "device must be 1 to 64 printable ASCII characters without spaces", websocket.StatusPolicyViolation}
	}
	c.principal, c.device, c.self, c.access = p, device, self, access
	if exp := p.Expires; !exp.IsZero() {
		c.after(timerExpiry, time.Until(exp), func() {
			c.fail(pulsebase.EUNAUTHORIZED, "the token expired; reconnect with a new one", CloseUnauthenticated)
		})
	}
	f2, err := processor.OpenFeed(c.ctx, c.g.deps.JetStream, owner)
	if err != nil {
		return c.unavailable("open feed", err)
	}
	pos, recovered, reason := f2.Oldest(), false, "no cursor"
	if f.Cursor != nil && *f.Cursor != "" {
		if c, err := f2.Resume(*f.Cursor); err == nil {
			pos, recovered, reason = c, true, ""
		} else {
			reason = pulsebase.ErrorMessage(err)
		}
	}
	// Register before reading the feed (see the package documentation), with every live
	// message held until the history or the snapshot is out.
	c.mu.Lock()
	c.user, c.authed, c.replaying, c.lastSeq = owner, true, true, pos.Seq
	c.mu.Unlock()
	if err := c.g.register(c); err != nil {
		return &frameError{pulsebase.ErrorCode(err), pulsebase.ErrorMessage(err), websocket.StatusPolicyViolation}
	}
	// A grant deleted between the decision and the registration changed nothing the
	// gateway watched for this connection yet: decide again now that it is watched.
	if c.scoped() && !c.g.grantHolds(c) {
		return deny(pulsebase.EFORBIDDEN, "the grant was revoked or changed; reconnect", CloseForbidden)
	}
	if recovered {
		c.reply(welcome{Type: "welcome", Cursor: *f.Cursor, Recovered: true, User: owner, Device: device})
		go c.replay(f2, pos)
		return nil
	}
	// Without a usable cursor, the client starts from the state as it is now: the head
	// of the stream read after registering, then the state read after that.
	head, err := processor.OpenFeed(c.ctx, c.g.deps.JetStream, owner)
	if err != nil {
		return c.unavailable("open feed", err)
	}
	snap, err := c.g.snapshot(c.ctx, owner, c.access)
	if err != nil {
		return c.unavailable("snapshot", err)
	}
	c.g.deps.Metrics.SyncSnapshots.Inc()
	c.reply(welcome{Type: "welcome", Cursor: head.Head().Encode(owner), Recovered: false, Snapshot: snap,
		User: owner, Device: device, Reason: reason})
	c.goLive(head.Head().Seq)
	return nil
}

// unavailable logs err and gives the client a retryable error.
func (c *conn) unavailable(what string, err error) error {
	if c.ctx.Err() == nil {
		c.g.deps.Log.LogAttrs(c.ctx, slog.LevelError, "sync: "+what, slog.Any("err", err))
	}
	return &frameError{pulsebase.EUNAVAILABLE, "the server cannot serve this connection now; reconnect", websocket.StatusTryAgainLater}
}

// validDevice reports whether s is a device id: 1 to 64 bytes of printable ASCII without
// spaces.
func validDevice(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// replay sends the user's history in f after pos, no faster than the client reads it,
// then switches to live.
func (c *conn) replay(f *processor.Feed, pos processor.Cursor) {
	next, last := pos.Seq, pos.Seq
	for {
		if !c.waitRoom() {
			return
		}
		m, err := f.Next(c.ctx, next)
		if err != nil {
			c.failWith(c.unavailable("read feed", err))
			return
		}
		if m == nil {
			break
		}
		frames, err := c.g.frames(c.ctx, c.user, f.Epoch(), m.Sequence, m.Header.Get(jetstream.MsgIDHeader), m.Data, pos)
		if err != nil {
			c.failWith(c.unavailable("open change message "+strconv.FormatUint(m.Sequence, 10), err))
			return
		}
		frames = c.scopeFrames(frames)
		c.mu.Lock()
		c.push(frames, true)
		c.mu.Unlock()
		last, next = m.Sequence, m.Sequence+1
	}
	c.goLive(last)
}

// waitRoom waits until the queue is at most half full; false when the connection closed.
func (c *conn) waitRoom() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for !c.closed && c.queued > c.g.cfg.MaxQueueBytes/2 {
		c.cond.Wait()
	}
	return !c.closed
}

// goLive sends the live messages held after sequence last and lets the next ones through.
func (c *conn) goLive(last uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.replaying = false
	c.lastSeq = max(c.lastSeq, last)
	for _, h := range c.held {
		if h.seq > c.lastSeq {
			c.lastSeq = h.seq
			c.push(h.frames, false)
		}
	}
	c.held, c.heldBytes = nil, 0
}

// deliver takes a live message of the user's feed. frames are shared by every connection
// of the user: a scoped connection takes its own reduced copy.
func (c *conn) deliver(seq uint64, frames []frame) {
	frames = c.scopeFrames(frames)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || seq <= c.lastSeq {
		return
	}
	if c.replaying {
		c.held = append(c.held, heldMsg{seq, frames})
		for _, f := range frames {
			c.heldBytes += len(f.b)
		}
		if c.heldBytes > c.g.cfg.MaxHeldBytes {
			c.overflowLocked()
		}
		return
	}
	c.lastSeq = seq
	c.push(frames, false)
}

// reply queues a frame answering the client.
func (c *conn) reply(v any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.push([]frame{encode(v)}, false)
}

// push queues frames and starts a writer if none runs; over the queue's bound it closes
// the connection with 4008 unless force (history, which waitRoom paces). c.mu is held.
func (c *conn) push(frames []frame, force bool) {
	if c.closed || len(frames) == 0 {
		return
	}
	for _, f := range frames {
		c.queue = append(c.queue, f)
		c.queued += len(f.b)
	}
	if !force && c.queued > c.g.cfg.MaxQueueBytes {
		c.overflowLocked()
		return
	}
	if !c.writing {
		c.writing = true
		go c.write()
	}
}

// overflowLocked closes a connection that does not keep up. c.mu is held.
func (c *conn) overflowLocked() {
	c.g.deps.Metrics.SyncOverflows.Inc()
	c.closeLocked(CloseTooSlow, "too slow: the send queue overflowed; resume from your cursor", nil)
}

// write writes the queue until it is empty.
func (c *conn) write() {
	for {
		c.mu.Lock()
		if c.closed || len(c.queue) == 0 {
			c.writing = false
			c.mu.Unlock()
			return
		}
		batch := c.queue
		c.queue, c.spare = c.spare[:0], nil
		c.mu.Unlock()
		ctx, cancel := context.WithTimeout(c.ctx, c.g.cfg.WriteTimeout)
		n, changes := 0, 0
		var err error
		// The frames go out together, in as few system calls as the cork allows.
		c.cork.cork()
		written := 0
		for _, f := range batch {
			if err = c.ws.Write(ctx, websocket.MessageText, f.b); err != nil {
				break
			}
			written++
			n += len(f.b)
			if f.change {
				changes++
			}
		}
		if uerr := c.cork.uncork(c.g.cfg.WriteTimeout); err == nil {
			err = uerr
		}
		cancel()
		if err == nil {
			now := time.Now()
			for _, f := range batch[:written] {
				if !f.stored.IsZero() {
					c.g.deps.Metrics.SyncDeliveryLatency.Observe(now.Sub(f.stored).Seconds())
				}
			}
		}
		c.g.deps.Metrics.SyncChangesSent.Add(float64(changes))
		if err != nil {
			c.mu.Lock()
			c.writing = false
			c.mu.Unlock()
			c.close(websocket.StatusGoingAway, "write failed", nil)
			return
		}
		clear(batch)
		c.mu.Lock()
		c.queued -= n
		c.spare = batch[:0]
		c.cond.Broadcast()
		c.mu.Unlock()
	}
}

// filter drops queued and held series changes of categories not allowed.
func (c *conn) filter(allowed []bool) {
	keep := func(f frame) bool { return f.cat < 0 || int(f.cat) >= len(allowed) || allowed[f.cat] }
	c.mu.Lock()
	defer c.mu.Unlock()
	// Frames being written are out of the queue already; the rest can still be dropped.
	q := c.queue[:0]
	for _, f := range c.queue {
		if keep(f) {
			q = append(q, f)
		} else {
			c.queued -= len(f.b)
		}
	}
	clear(c.queue[len(q):])
	c.queue = q
	for i, h := range c.held {
		var fs []frame
		for _, f := range h.frames {
			if keep(f) {
				fs = append(fs, f)
			}
		}
		c.held[i].frames = fs
	}
}

// ping checks that the peer is alive; one that does not answer within the interval is
// closed.
func (c *conn) ping() {
	ctx, cancel := context.WithTimeout(c.ctx, c.g.cfg.PingInterval)
	err := c.ws.Ping(ctx)
	cancel()
	if err != nil {
		if c.ctx.Err() == nil {
			c.g.deps.Metrics.SyncCloses.WithLabelValues("dead_peer").Inc()
			c.ws.CloseNow()
		}
		return
	}
	c.after(timerPing, c.g.cfg.PingInterval, c.ping)
}

// after runs fn after d unless the connection closed by then; it replaces the timer i.
func (c *conn) after(i int, d time.Duration, fn func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	if t := c.timers[i]; t != nil {
		t.Stop()
	}
	c.timers[i] = time.AfterFunc(d, fn)
}

// failWith ends the connection for err: a frameError with its error frame and status,
// anything else (the peer went away) quietly.
func (c *conn) failWith(err error) {
	var fe *frameError
	if errors.As(err, &fe) {
		c.fail(fe.code, fe.detail, fe.status)
		return
	}
	c.close(websocket.StatusNormalClosure, "", nil)
}

// fail sends an error frame and closes the connection with status.
func (c *conn) fail(code, detail string, status websocket.StatusCode) {
	ef := encode(errorFrame{Type: "error", Code: code, Detail: detail})
	c.close(status, detail, &ef)
}

// close ends the connection with status: nothing more is queued or written but ef (an
// error frame, if any), then the close handshake runs.
func (c *conn) close(status websocket.StatusCode, reason string, ef *frame) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeLocked(status, reason, ef)
}

func (c *conn) closeLocked(status websocket.StatusCode, reason string, ef *frame) {
	if c.closed {
		return
	}
	c.closed = true
	clear(c.queue)
	c.queue, c.held, c.queued = nil, nil, 0
	for _, t := range c.timers {
		if t != nil {
			t.Stop()
		}
	}
	c.cond.Broadcast()
	if status != websocket.StatusNormalClosure {
		c.g.deps.Metrics.SyncCloses.WithLabelValues(strconv.Itoa(int(status))).Inc()
	}
	if len(reason) > 120 { // a close frame's reason is at most 123 bytes
		reason = reason[:120]
	}
	go func() {
		defer close(c.done)
		if ef != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = c.ws.Write(ctx, websocket.MessageText, ef.b)
			cancel()
		}
		_ = c.ws.Close(status, reason)
	}()
}

// samples stores a samples frame like POST /v1/samples and acknowledges it.
func (c *conn) samples(f inFrame) error {
	if f.Ref == "" || len(f.Ref) > 64 {
		return &frameError{pulsebase.EINVALID, "a samples frame needs a ref of 1 to 64 bytes", websocket.StatusPolicyViolation}
	}
	if !c.may(auth.ActSamplesWrite) {
		c.reply(errorFrame{Type: "error", Ref: f.Ref, Code: pulsebase.EFORBIDDEN, Detail: "this connection may not write samples for this user"})
		return nil
	}
	body := make([]byte, 0, len(f.Samples)+12)
	body = append(append(append(body, `{"samples":`...), f.Samples...), '}')
	in, err := ingest.DecodeBatch("application/json", body, maxSamples)
	if err != nil {
		c.reply(errorFrame{Type: "error", Ref: f.Ref, Code: pulsebase.ErrorCode(err), Detail: pulsebase.ErrorMessage(err)})
		return nil
	}
	res, err := c.g.deps.Ingest.Ingest(c.ctx, c.user, c.principal, in)
	switch {
	case err == nil:
	case pulsebase.ErrorCode(err) == pulsebase.EERASED:
		return &frameError{pulsebase.EERASED, "this user's data was erased", CloseForbidden}
	case c.ctx.Err() != nil:
		return nil
	default:
		c.g.deps.Log.LogAttrs(c.ctx, slog.LevelError, "sync: ingest failed", slog.Any("err", err))
		c.reply(errorFrame{Type: "error", Ref: f.Ref, Code: pulsebase.EUNAVAILABLE, Detail: "the samples could not be stored; send the frame again"})
		return nil
	}
	rej := res.Rejected
	if rej == nil {
		rej = []pulsebase.Rejection{}
	}
	c.reply(samplesAck{Type: "ack", Ref: f.Ref, Accepted: res.Accepted, Duplicates: res.Duplicates, Rejected: rej})
	return nil
}

// ops applies an ops frame to the user's profile and acknowledges it with each op's
// outcome. An op that cannot be decoded is refused alone, like one the document refuses;
// either way an error frame with the ref says so before the ack.
func (c *conn) ops(f inFrame) error {
	if f.Ref == "" || len(f.Ref) > 64 {
		return &frameError{pulsebase.EINVALID, "an ops frame needs a ref of 1 to 64 bytes", websocket.StatusPolicyViolation}
	}
	if !c.may(auth.ActProfileWrite) {
		c.reply(errorFrame{Type: "error", Ref: f.Ref, Code: pulsebase.EFORBIDDEN, Detail: "this connection may not edit this user's profile"})
		return nil
	}
	bad := func(code, detail string) error {
		c.reply(errorFrame{Type: "error", Ref: f.Ref, Code: code, Detail: detail})
		return nil
	}
	switch {
	case f.Doc != "profile":
		return bad(pulsebase.EINVALID, `doc must be "profile"`)
	case len(f.Ops) == 0:
		return bad(pulsebase.EINVALID, "ops must hold at least one op")
	case len(f.Ops) > c.g.cfg.MaxOps:
		return bad(pulsebase.ETOOLARGE, fmt.Sprintf("at most %d ops a frame", c.g.cfg.MaxOps))
	}
	results := make([]profile.Result, len(f.Ops))
	var ops []crdt.Op
	var at []int // index in results of each op of ops
	for i, raw := range f.Ops {
		op, err := crdt.DecodeOp(raw)
		if err != nil {
			results[i] = profile.Result{ID: op.ID, Code: codeOf(err), Detail: err.Error()}
			continue
		}
		ops = append(ops, op)
		at = append(at, i)
	}
	out := profile.Outcome{}
	if len(ops) > 0 {
		var err error
		out, err = c.g.deps.Profiles.Apply(c.ctx, c.user, ops)
		if err != nil {
			if c.ctx.Err() != nil {
				return nil
			}
			code := pulsebase.ErrorCode(err)
			if code != pulsebase.ECONFLICT && code != pulsebase.EUNAVAILABLE {
				c.g.deps.Log.LogAttrs(c.ctx, slog.LevelError, "sync: apply ops", slog.Any("err", err))
				code = pulsebase.EUNAVAILABLE
			}
			return bad(code, "the ops could not be applied; send the frame again")
		}
		for j, r := range out.Results {
			results[at[j]] = r
		}
	}
	var first *profile.Result // the first refused op
	refused := 0
	for i, r := range results {
		if r.Code != "" {
			if refused == 0 {
				first = &results[i]
			}
			refused++
		}
	}
	if first != nil {
		c.reply(errorFrame{Type: "error", Ref: f.Ref, Code: first.Code,
			Detail: fmt.Sprintf("%d of %d ops were refused and not applied; the first, %q: %s", refused, len(results), first.ID, first.Detail)})
	}
	cursor, err := c.opsCursor(out.Seq)
	if err != nil {
		return c.unavailable("ops cursor", err)
	}
	c.reply(opsAck{Type: "ack", Ref: f.Ref, Cursor: cursor, Version: out.Version, Results: results})
	return nil
}

// may reports whether the policy lets the connection's principal do a to its user's data.
// A connection that may sync may not therefore write: a coach reads only. The refusal is
// answered like any frame the gateway cannot take, and the connection stays open.
func (c *conn) may(a auth.Action) bool {
	return c.g.deps.Policy.Decide(auth.Request{Principal: c.principal, Self: c.self, Action: a, Owner: c.user}).Allowed()
}

// opsCursor is the cursor of an ops ack: just after the message carrying the applied ops,
// or, when none applied, the head of the feed (every earlier op is before it).
func (c *conn) opsCursor(seq uint64) (string, error) {
	if seq > 0 {
		return processor.AfterMessage(c.g.epoch, seq).Encode(c.user), nil
	}
	f, err := processor.OpenFeed(c.ctx, c.g.deps.JetStream, c.user)
	if err != nil {
		return "", err
	}
	return f.Head().Encode(c.user), nil
}

// codeOf is the stable code of err, invalid_request when it has none.
func codeOf(err error) string {
	if code := pulsebase.ErrorCode(err); code != "" && code != pulsebase.EINTERNAL {
		return code
	}
	return pulsebase.EINVALID
}
