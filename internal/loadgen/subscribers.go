package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/coder/websocket"
)

// Subscribers are sync connections, devices of the run's users, that measure how long a
// sample takes from its ack to its change at a device: the ack → delivery latency.
//
// Subscriber k is device "bench-sub-k" of user k mod Users, so the first min(K, Users)
// users have subscribers. Every request of those users carries a marker sample in a
// minute of the last hour that held no data (Workload.Mark), one marker minute per user
// and run. The processor's series change for that minute's bucket carries the bucket's
// count: a subscriber that sees count c knows the user's first c markers are applied and
// delivered. The i-th marker delivered is paired with the i-th ack of the user's marked
// requests, in whichever order the two come, as internal/syncgw's BenchmarkSyncLatency
// pairs them, and delivery − ack goes into an HDR histogram. With several requests of one
// user in flight, the stream's order and the order of their acks may differ by those
// requests' overlap; the pairing is then off by as much.
type Subscribers struct {
	w     *Workload
	count int
	conns []*subConn
	// marked[u] is the state of user u's markers, for the users with subscribers.
	marked map[int]*markedUser
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu         sync.Mutex
	hist       *hdrhistogram.Histogram // microseconds
	deliveries int64
	markers    int64
	errors     []string
}

// markedUser is one user's markers: the acks so far, and its subscribers.
type markedUser struct {
	key   string // the marker bucket's series key
	match []byte // `"key":"<key>"`, to find the change among a user's many
	acks  []time.Time
	subs  []*subConn
}

// subConn is one subscriber's connection.
type subConn struct {
	user  int
	ws    *websocket.Conn
	ended atomic.Bool
	// arrivals[i] is when marker i of the user reached this subscriber; guarded by
	// Subscribers.mu.
	arrivals []time.Time
}

// SubscriberOptions shape NewSubscribers.
type SubscriberOptions struct {
	// BaseURL is the server's http://host:port; Tokens[u] user u's bearer token.
	BaseURL string
	Tokens  []string
	// Count is the number of subscribers, K.
	Count int
	// Timeout bounds opening one connection and reading one series.
	Timeout time.Duration
	// Minutes are the marker minutes earlier runs of this process used, which this one
	// must not reuse; nil means none.
	Minutes *MarkerMinutes
}

// MarkerMinutes remembers the marker minutes of a process's runs, so that a run never
// counts the markers of an earlier one whose changes had not all come yet. It is safe
// for concurrent use.
type MarkerMinutes struct {
	mu   sync.Mutex
	used map[string]bool // subject + " " + Unix minute
}

func (m *MarkerMinutes) take(subject string, minute time.Time) bool {
	if m == nil {
		return true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	k := subject + " " + strconv.FormatInt(minute.Unix(), 10)
	if m.used[k] {
		return false
	}
	if m.used == nil {
		m.used = map[string]bool{}
	}
	m.used[k] = true
	return true
}

// Marker minutes are chosen from the last hour, leaving the last two minutes out (a
// marker must not start in the future on a server whose clock lags a little) and the
// oldest few (the run must end before its minute leaves the hour, and the processor's
// live horizon, by far).
const (
	markerNewest = 2 * time.Minute
	markerOldest = 50 * time.Minute
)

// NewSubscribers marks the requests of the users with subscribers in w, then connects
// the subscribers. The users must exist and consent (a target's WarmUp) first; call it
// before the run, and Close after it.
func NewSubscribers(ctx context.Context, w *Workload, o SubscriberOptions) (*Subscribers, error) {
	if len(o.Tokens) != w.Users() {
		return nil, fmt.Errorf("got %d tokens for %d users", len(o.Tokens), w.Users())
	}
	if o.Count < 1 {
		return nil, fmt.Errorf("subscribers %d: want at least 1", o.Count)
	}
	base := strings.TrimSuffix(o.BaseURL, "/")
	hc := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: o.Timeout}
	s := &Subscribers{w: w, count: o.Count, marked: map[int]*markedUser{}, hist: hdrhistogram.New(histMin, histMax, 3)}
	now := time.Now()
	for u := range min(o.Count, w.Users()) {
		minute, err := freeMinute(ctx, hc, base, o.Tokens[u], w.Subject(u), now, o.Minutes)
		if err != nil {
			return nil, err
		}
		w.Mark(u, minute)
		key := w.MarkerKey(u)
		s.marked[u] = &markedUser{key: key, match: []byte(`"key":"` + key + `"`)}
	}
	s.conns = make([]*subConn, o.Count)
	err := forEach(ctx, o.Count, 16, func(ctx context.Context, k int) error {
		ctx, cancel := context.WithTimeout(ctx, o.Timeout)
		defer cancel()
		ws, _, err := dialSync(ctx, syncURL(base), o.Tokens[k%w.Users()], "bench-sub-"+strconv.Itoa(k))
		if err != nil {
			return fmt.Errorf("subscriber %d: %w", k, err)
		}
		s.conns[k] = &subConn{user: k % w.Users(), ws: ws}
		return nil
	})
	if err != nil {
		for _, c := range s.conns {
			if c != nil {
				c.ws.CloseNow()
			}
		}
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	for _, c := range s.conns {
		m := s.marked[c.user]
		m.subs = append(m.subs, c)
		s.wg.Go(func() { s.read(rctx, c, m) })
	}
	return s, nil
}

// freeMinute returns the newest minute of the last hour in which the user has no heart
// rate and that no earlier run of this process used.
func freeMinute(ctx context.Context, hc *http.Client, base, tok, subject string, now time.Time, used *MarkerMinutes) (time.Time, error) {
	newest := now.Add(-markerNewest).Truncate(time.Minute)
	oldest := now.Add(-markerOldest).Truncate(time.Minute)
	q := url.Values{"resolution": {"1m"}, "from": {oldest.Format(time.RFC3339)}, "to": {newest.Add(time.Minute).Format(time.RFC3339)}}
	var series struct {
		Points []struct {
			Start time.Time `json:"start"`
		} `json:"points"`
	}
	if err := getJSON(ctx, hc, base+"/v1/users/me/series/"+MarkerType+"?"+q.Encode(), tok, &series); err != nil {
		return time.Time{}, fmt.Errorf("marker minute of %s: %w", subject, err)
	}
	taken := map[int64]bool{}
	for _, p := range series.Points {
		taken[p.Start.Truncate(time.Minute).Unix()] = true
	}
	for m := newest; !m.Before(oldest); m = m.Add(-time.Minute) {
		if !taken[m.Unix()] && used.take(subject, m) {
			return m, nil
		}
	}
	return time.Time{}, fmt.Errorf("marker minute of %s: every minute from %s to %s holds heart rate already (an earlier bench's markers); wait a few minutes",
		subject, oldest.Format("15:04"), newest.Format("15:04"))
}

// read reads c's frames until it ends, noting each change of the marker bucket.
func (s *Subscribers) read(ctx context.Context, c *subConn, m *markedUser) {
	defer c.ended.Store(true)
	defer c.ws.CloseNow()
	var buf bytes.Buffer
	for {
		_, r, err := c.ws.Reader(ctx)
		if err == nil {
			buf.Reset()
			_, err = buf.ReadFrom(r)
		}
		if err != nil {
			if ctx.Err() == nil {
				s.fail(fmt.Sprintf("subscriber of user %d: %v", c.user, err))
			}
			return
		}
		now := time.Now()
		b := buf.Bytes()
		if !bytes.HasPrefix(b, []byte(`{"type":"change"`)) || !bytes.Contains(b, m.match) {
			continue
		}
		var ch struct {
			Kind string `json:"kind"`
			Key  string `json:"key"`
			Data struct {
				Count int64 `json:"count"`
			} `json:"data"`
		}
		if json.Unmarshal(b, &ch) != nil || ch.Kind != "series" || ch.Key != m.key {
			continue
		}
		s.arrive(c, m, ch.Data.Count, now)
	}
}

// maxEarly bounds the arrivals a subscriber keeps beyond the acks so far: a count far
// above them is not this run's markers.
const maxEarly = 100_000

// arrive notes that the bucket of c's user reached count at c at time at.
func (s *Subscribers) arrive(c *subConn, m *markedUser, count int64, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(c.arrivals); int64(i) < count && i < len(m.acks)+maxEarly; i++ {
		c.arrivals = append(c.arrivals, at)
		if i < len(m.acks) {
			s.record(at.Sub(m.acks[i]))
		}
	}
}

// Acked notes that a request of user u was acknowledged at t. The run calls it for every
// request with accepted samples.
func (s *Subscribers) Acked(u int, t time.Time) {
	m := s.marked[u] // read-only after NewSubscribers
	if m == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	i := len(m.acks)
	m.acks = append(m.acks, t)
	s.markers++
	for _, c := range m.subs {
		if i < len(c.arrivals) {
			// The change came first: the processor applied the marker before the ack
			// reached the generator.
			s.record(c.arrivals[i].Sub(t))
		}
	}
}

func (s *Subscribers) record(d time.Duration) {
	us := max(int64(d/time.Microsecond), histMin)
	s.hist.RecordValue(min(us, histMax))
	s.deliveries++
}

func (s *Subscribers) fail(msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.errors) < maxErrorSamples {
		s.errors = append(s.errors, msg)
	}
}

// Deliveries is the number of (marker, subscriber) deliveries measured so far.
func (s *Subscribers) Deliveries() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.deliveries
}

// missing is the number of (marker, subscriber) pairs acknowledged but not delivered.
func (s *Subscribers) missing() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for _, m := range s.marked {
		for _, c := range m.subs {
			n += int64(max(0, len(m.acks)-len(c.arrivals)))
		}
	}
	return n
}

// held is the number of subscribers whose connection is still open.
func (s *Subscribers) held() int {
	n := 0
	for _, c := range s.conns {
		if !c.ended.Load() {
			n++
		}
	}
	return n
}

// Wait waits up to timeout for every acknowledged marker to reach its subscribers and
// returns how many (marker, subscriber) pairs did not.
func (s *Subscribers) Wait(ctx context.Context, timeout time.Duration) int64 {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	deadline := time.Now().Add(timeout)
	for {
		n := s.missing()
		if n == 0 || time.Now().After(deadline) || s.held() == 0 {
			return n
		}
		select {
		case <-ctx.Done():
			return n
		case <-t.C:
		}
	}
}

// Report summarizes the subscribers' figures; call it after Wait.
func (s *Subscribers) Report() *SyncReport {
	missing := s.missing()
	held := s.held()
	s.mu.Lock()
	defer s.mu.Unlock()
	return &SyncReport{
		Subscribers:   s.count,
		Held:          held,
		MarkedUsers:   len(s.marked),
		Markers:       s.markers,
		Deliveries:    s.deliveries,
		Missing:       missing,
		AckToDelivery: latencyOf(s.hist),
		Errors:        s.errors,
	}
}

// Close closes the connections and waits for their readers.
func (s *Subscribers) Close() {
	s.cancel()
	for _, c := range s.conns {
		c.ws.Close(websocket.StatusNormalClosure, "")
	}
	s.wg.Wait()
}
