package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"
)

// Limits of the sync gateway (internal/syncgw) the WebSocket transport stays within; if
// a server runs with other limits, these still fit under the defaults.
const (
	// syncSubprotocol is the protocol a sync connection must offer.
	syncSubprotocol = "pulsebase.sync.v1"
	// wsFramesPerConn is the frames a second the transport plans per connection; the
	// gateway closes a connection that sends more than 20 a second (bursts of 60).
	wsFramesPerConn = 15
	// wsLimit and wsBurst pace each connection's frames on the client side, so that a
	// closed loop, or an open loop catching up, never trips the gateway's limit.
	wsLimit = 18
	wsBurst = 20
	// wsInflight bounds the frames awaiting their ack on one connection: the gateway
	// handles a connection's frames one after the other, and frames it has not read yet
	// must not arrive in a burst larger than its limiter allows.
	wsInflight = 40
	// MaxSyncConnsPerUser is the gateway's default --sync-conns-per-user: the most sync
	// connections, senders and subscribers together, one user may hold.
	MaxSyncConnsPerUser = 20
	// syncReadLimit bounds a frame read from the server; a welcome's snapshot is the
	// largest.
	syncReadLimit = 64 << 20
)

// WSTarget sends a Workload's requests as samples frames over sync WebSocket
// connections (GET /v1/sync, docs/sync.md), as an app's SDK session does, and takes the
// ack frame as the answer: the ack, like POST /v1/samples's 202, means durably stored.
// Each user has its own connections (devices "bench-send-0", …): one, or more when the
// offered rate would send a connection more frames a second than the gateway allows.
// A connection the server closes is opened again by the next request that needs it.
type WSTarget struct {
	base    string
	tokens  []string
	w       *Workload
	timeout time.Duration
	// conns[u] are user u's connections; request n goes to conns[u][(n/users) mod len].
	conns [][]*wsConn
	// users creates the users and records their consent before the connections open.
	users *HTTPTarget
}

// WSOptions shape a WSTarget.
type WSOptions struct {
	// Rate is the run's offered samples per second (0: closed loop), from which the
	// connections per user follow.
	Rate float64
	// Reserved is the most sync connections any one user holds besides the target's
	// (its subscribers), which the per-user limit must leave room for.
	Reserved int
	// Timeout bounds a request: writing its frame and waiting for its ack.
	Timeout time.Duration
}

// NewWSTarget returns a target for the server at baseURL (http://host:port). tokens[u]
// is the bearer token of w.Subject(u).
func NewWSTarget(baseURL string, tokens []string, w *Workload, o WSOptions) (*WSTarget, error) {
	if len(tokens) != w.Users() {
		return nil, fmt.Errorf("got %d tokens for %d users", len(tokens), w.Users())
	}
	if o.Timeout <= 0 {
		return nil, errors.New("ws target: timeout must be positive")
	}
	per := WSConnsPerUser(o.Rate, w.Batch(), w.Users())
	if per+o.Reserved > MaxSyncConnsPerUser {
		return nil, fmt.Errorf("%g samples/s in frames of %d over %d users is %.1f frames/s per user: %d connections each at %d frames/s, "+
			"which with %d subscribers exceeds the gateway's %d connections per user; raise --batch or --users",
			o.Rate, w.Batch(), w.Users(), o.Rate/float64(w.Batch())/float64(w.Users()), per, wsFramesPerConn, o.Reserved, MaxSyncConnsPerUser)
	}
	users, err := NewHTTPTarget(baseURL, tokens, w, 8, o.Timeout)
	if err != nil {
		return nil, err
	}
	t := &WSTarget{base: strings.TrimSuffix(baseURL, "/"), tokens: tokens, w: w, timeout: o.Timeout, users: users}
	for u := range w.Users() {
		var cs []*wsConn
		for i := range per {
			cs = append(cs, &wsConn{url: syncURL(t.base), token: tokens[u], device: "bench-send-" + strconv.Itoa(i),
				limiter: rate.NewLimiter(wsLimit, wsBurst), slots: make(chan struct{}, wsInflight)})
		}
		t.conns = append(t.conns, cs)
	}
	return t, nil
}

// WSConnsPerUser is how many connections each user sends over at rate samples/s in
// frames of batch samples: enough for each to stay under the gateway's frame rate.
func WSConnsPerUser(rate float64, batch, users int) int {
	perUser := rate / float64(batch) / float64(users)
	return max(1, int(math.Ceil(perUser/wsFramesPerConn)))
}

// Name is "ws".
func (t *WSTarget) Name() string { return "ws" }

// Connections is the number of sync connections the target sends over.
func (t *WSTarget) Connections() int { return len(t.conns) * len(t.conns[0]) }

// WarmUp creates the users, records their consent (over HTTP, as an app would before
// syncing) and opens every connection, so that none of it happens on the clock.
func (t *WSTarget) WarmUp(ctx context.Context, concurrency int) error {
	if err := t.users.WarmUp(ctx, concurrency); err != nil {
		return err
	}
	var all []*wsConn
	for _, cs := range t.conns {
		all = append(all, cs...)
	}
	return forEach(ctx, len(all), concurrency, func(ctx context.Context, i int) error {
		ctx, cancel := context.WithTimeout(ctx, t.timeout)
		defer cancel()
		_, err := all[i].live(ctx)
		return err
	})
}

// Close closes every connection.
func (t *WSTarget) Close() {
	t.users.Close()
	var wg sync.WaitGroup
	for _, cs := range t.conns {
		for _, c := range cs {
			wg.Go(c.close)
		}
	}
	wg.Wait()
}

// Send sends request n as a samples frame and waits for its ack.
func (t *WSTarget) Send(ctx context.Context, n int64) Outcome {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	u := t.w.User(n)
	cs := t.conns[u]
	c := cs[int(n/int64(t.w.Users()))%len(cs)]
	ref := "r" + strconv.FormatInt(n, 10)
	body := t.w.Body(n) // {"samples":[…]}
	frame := make([]byte, 0, len(body)+32)
	frame = append(append(append(frame, `{"type":"samples","ref":"`...), ref...), `",`...)
	frame = append(frame, body[1:]...)
	a, err := c.call(ctx, ref, frame)
	if err != nil {
		return Outcome{Status: "error", Err: err}
	}
	if a.Type != "ack" {
		return Outcome{Status: a.Code, Err: fmt.Errorf("%s: %s", a.Code, a.Detail)}
	}
	return Outcome{Status: "ack", Accepted: a.Accepted, Duplicates: a.Duplicates, Rejected: len(a.Rejected)}
}

// wsAnswer is the part of an ack or error frame the report needs.
type wsAnswer struct {
	Type       string            `json:"type"`
	Ref        string            `json:"ref"`
	Accepted   int               `json:"accepted"`
	Duplicates int               `json:"duplicates"`
	Rejected   []json.RawMessage `json:"rejected"`
	Code       string            `json:"code"`
	Detail     string            `json:"detail"`
}

// wsConn is one sending device's connection, opened on first use and again after the
// server closed it. Requests on it are matched to their answers by ref.
type wsConn struct {
	url, token, device string
	limiter            *rate.Limiter
	slots              chan struct{} // wsInflight units, one per frame awaiting its answer

	mu      sync.Mutex
	ws      *websocket.Conn
	stop    context.CancelFunc // ends the reader of ws
	done    chan struct{}      // closed when the reader of ws has ended
	pending map[string]chan result
	lastErr string // the last error frame without a ref: why the server is closing
}

// result is an answer, or why none will come.
type result struct {
	a   wsAnswer
	err error
}

// call sends frame, whose ref is ref, and waits for its answer.
func (c *wsConn) call(ctx context.Context, ref string, frame []byte) (wsAnswer, error) {
	select {
	case c.slots <- struct{}{}:
	case <-ctx.Done():
		return wsAnswer{}, fmt.Errorf("waiting for an in-flight slot: %w", context.Cause(ctx))
	}
	defer func() { <-c.slots }()
	if err := c.limiter.Wait(ctx); err != nil {
		return wsAnswer{}, err
	}
	ch := make(chan result, 1)
	ws, err := c.register(ctx, ref, ch)
	if err != nil {
		return wsAnswer{}, err
	}
	defer c.unregister(ref)
	if err := ws.Write(ctx, websocket.MessageText, frame); err != nil {
		return wsAnswer{}, fmt.Errorf("write frame: %w", err)
	}
	select {
	case r := <-ch:
		return r.a, r.err
	case <-ctx.Done():
		return wsAnswer{}, fmt.Errorf("no ack: %w", context.Cause(ctx))
	}
}

// live returns the open connection, opening it if need be.
func (c *wsConn) live(ctx context.Context) (*websocket.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.liveLocked(ctx)
}

func (c *wsConn) liveLocked(ctx context.Context) (*websocket.Conn, error) {
	if c.ws != nil {
		return c.ws, nil
	}
	ws, _, err := dialSync(ctx, c.url, c.token, c.device)
	if err != nil {
		return nil, err
	}
	rctx, stop := context.WithCancel(context.Background())
	c.ws, c.stop, c.done, c.pending = ws, stop, make(chan struct{}), map[string]chan result{}
	go c.read(rctx, stop, ws, c.pending, c.done)
	return ws, nil
}

// register opens the connection if need be and routes the answer to ref to ch.
func (c *wsConn) register(ctx context.Context, ref string, ch chan result) (*websocket.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ws, err := c.liveLocked(ctx)
	if err != nil {
		return nil, err
	}
	c.pending[ref] = ch
	return ws, nil
}

func (c *wsConn) unregister(ref string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.pending, ref)
}

// read reads ws's frames until it ends, answering requests by ref. Change frames (a
// sending device gets its user's changes too) are read and dropped unparsed, so that
// the server's queue for the connection never fills.
// pending is the connection's own map of requests awaiting an answer: those still in it
// when the connection ends are told so.
func (c *wsConn) read(ctx context.Context, stop context.CancelFunc, ws *websocket.Conn, pending map[string]chan result, done chan struct{}) {
	defer close(done)
	defer stop()
	var buf bytes.Buffer
	for {
		_, r, err := ws.Reader(ctx)
		if err == nil {
			buf.Reset()
			_, err = buf.ReadFrom(r)
		}
		if err != nil {
			c.mu.Lock()
			if c.lastErr != "" {
				err = fmt.Errorf("%s (connection closed: %w)", c.lastErr, err)
			}
			for ref, ch := range pending {
				delete(pending, ref)
				ch <- result{err: err}
			}
			if c.ws == ws {
				c.ws = nil
			}
			c.mu.Unlock()
			ws.CloseNow()
			return
		}
		b := buf.Bytes()
		if bytes.HasPrefix(b, []byte(`{"type":"change"`)) {
			continue
		}
		var a wsAnswer
		if json.Unmarshal(b, &a) != nil || (a.Type != "ack" && a.Type != "error") {
			continue // a welcome, or a frame this transport has no use for
		}
		c.mu.Lock()
		if a.Ref == "" {
			c.lastErr = a.Code + ": " + a.Detail
		} else if ch, ok := pending[a.Ref]; ok {
			delete(pending, a.Ref)
			ch <- result{a: a}
		}
		c.mu.Unlock()
	}
}

// close closes the connection, if open, and waits for its reader.
func (c *wsConn) close() {
	c.mu.Lock()
	ws, stop, done := c.ws, c.stop, c.done
	c.ws = nil
	c.mu.Unlock()
	if ws == nil {
		return
	}
	ws.Close(websocket.StatusNormalClosure, "")
	stop()
	<-done
}

// syncURL is the sync endpoint of the server at base (http[s]://host:port).
func syncURL(base string) string {
	return "ws" + strings.TrimPrefix(strings.TrimSuffix(base, "/"), "http") + "/v1/sync"
}

// welcomeFrame is the part of the welcome the generator needs.
type welcomeFrame struct {
	Type   string `json:"type"`
	User   string `json:"user"`
	Device string `json:"device"`
	Code   string `json:"code"`
	Detail string `json:"detail"`
}

// dialSync opens a sync connection as device with token, says hello without a cursor
// and returns the connection once welcomed.
func dialSync(ctx context.Context, url, token, device string) (*websocket.Conn, welcomeFrame, error) {
	ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{
		Subprotocols: []string{syncSubprotocol},
		HTTPClient:   &http.Client{Transport: &http.Transport{Proxy: nil}},
	})
	if err != nil {
		return nil, welcomeFrame{}, fmt.Errorf("dial %s: %w", url, err)
	}
	ws.SetReadLimit(syncReadLimit)
	hello, _ := json.Marshal(map[string]any{"type": "hello", "token": token, "device": device, "cursor": nil})
	if err := ws.Write(ctx, websocket.MessageText, hello); err != nil {
		ws.CloseNow()
		return nil, welcomeFrame{}, fmt.Errorf("hello: %w", err)
	}
	_, r, err := ws.Reader(ctx)
	var w welcomeFrame
	if err == nil {
		// The welcome's snapshot is decoded past, not kept.
		err = json.NewDecoder(r).Decode(&w)
		io.Copy(io.Discard, r)
	}
	if err != nil {
		ws.CloseNow()
		return nil, w, fmt.Errorf("read welcome: %w", err)
	}
	if w.Type != "welcome" {
		ws.CloseNow()
		return nil, w, fmt.Errorf("hello as %s: got %s %s: %s", device, w.Type, w.Code, w.Detail)
	}
	return ws, w, nil
}

// forEach calls f for 0..n-1, at most concurrency at a time, and joins up to three of
// their errors.
func forEach(ctx context.Context, n, concurrency int, f func(ctx context.Context, i int) error) error {
	errc := make(chan error, n)
	sem := make(chan struct{}, max(1, concurrency))
	for i := range n {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			errc <- f(ctx, i)
		}()
	}
	var errs []error
	for range n {
		if err := <-errc; err != nil && len(errs) < 3 {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
