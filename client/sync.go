package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/crdt"
)

// Subprotocol is the WebSocket subprotocol of sync (API.md).
const Subprotocol = "pulsebase.sync.v1"

// Close codes the server ends a sync connection with (API.md).
const (
	CloseUnauthenticated = 4001
	CloseForbidden       = 4003
	CloseTooSlow         = 4008
	CloseRevoked         = 4009
)

// SyncOptions configure a sync session.
type SyncOptions struct {
	// Device is this device's id: 1 to 64 printable ASCII characters without spaces or
	// ':'. With a device token it must be the token's device.
	Device string
	// StateDir keeps the session across restarts of the process: the cursor, the profile
	// replica and the offline queue of samples and ops. Empty keeps them in memory only.
	StateDir string
	// Cursor is where to start when StateDir holds no cursor yet; empty asks for a
	// snapshot.
	Cursor string
	// TokenSource gives the token of each connection, so that an expired one is replaced;
	// nil uses the Client's token.
	TokenSource func(ctx context.Context) (string, error)
	// Handlers are called with the changes of their kind ("series", "daily", "profile",
	// "consent", "rejection", "recommendation"), in the feed's order, on the session's
	// goroutine; the cursor moves past a change once its handlers returned. Profile
	// changes are applied to the replica before.
	Handlers map[string]func(Change)
	// OnChange is called with every change, after its kind's handler.
	OnChange func(Change)
	// OnSnapshot is called when the server answered with a snapshot (the session had no
	// usable cursor), before the changes that follow it.
	OnSnapshot func(Snapshot)
	// OnAck is called when the server acknowledged an entry of the offline queue.
	OnAck func(Ack)
	// OnError is called with what the session recovers from: a lost connection, a refused
	// op or batch.
	OnError func(error)
	// MinBackoff and MaxBackoff bound the random wait before reconnecting, which doubles
	// with each failed attempt (250 ms and 30 s by default).
	MinBackoff, MaxBackoff time.Duration
	// SaveEvery bounds how often the cursor and the replica are written to StateDir
	// (200 ms). After a crash, the changes since the last write are delivered again.
	SaveEvery time.Duration
}

// Change is one change of the user's feed.
type Change struct {
	Cursor string          `json:"cursor"`
	Kind   string          `json:"kind"`
	Key    string          `json:"key"`
	Data   json.RawMessage `json:"data"`
}

// Snapshot is the user's state when the server could not resume from a cursor.
type Snapshot struct {
	Taken           time.Time         `json:"taken"`
	Daily           []map[string]any  `json:"daily"`
	Series          []SnapshotBucket  `json:"series"`
	Recommendations []Recommendation  `json:"recommendations"`
	Profile         SnapshotProfile   `json:"profile"`
	Consents        pulsebase.Consent `json:"consents"`
}

// SnapshotBucket is a bucket of a snapshot, keyed as series changes are.
type SnapshotBucket struct {
	Key  string         `json:"key"`
	Data map[string]any `json:"data"`
}

// SnapshotProfile is the profile in a snapshot: its view, version and CRDT state.
type SnapshotProfile struct {
	Version int64          `json:"version"`
	Doc     map[string]any `json:"doc"`
	State   []byte         `json:"state"`
}

// Ack is the server's answer to an entry of the offline queue.
type Ack struct {
	// Seq is the entry's sequence in the queue; Kind "samples" or "ops".
	Seq  uint64
	Kind string
	// Accepted, Duplicates and Rejected answer a samples entry.
	Accepted   int                   `json:"accepted"`
	Duplicates int                   `json:"duplicates"`
	Rejected   []pulsebase.Rejection `json:"rejected"`
	// Results, Version and Cursor answer an ops entry: each op's outcome, the profile's
	// version, and the position of the change carrying the ops (not a resume cursor).
	Results []struct {
		ID      string `json:"id"`
		Applied bool   `json:"applied"`
		Code    string `json:"code,omitempty"`
		Detail  string `json:"detail,omitempty"`
	} `json:"results"`
	Version int64  `json:"version"`
	Cursor  string `json:"cursor"`
}

// SyncError is an error frame of the server, or the reason it closed the connection.
type SyncError struct {
	Code   string `json:"code"`
	Detail string `json:"detail"`
	Ref    string `json:"ref,omitempty"`
	// Status is the close code, when the server closed the connection.
	Status int `json:"-"`
}

func (e *SyncError) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("pulsebase sync: closed %d %s: %s", e.Status, e.Code, e.Detail)
	}
	return fmt.Sprintf("pulsebase sync: %s: %s", e.Code, e.Detail)
}

// retryable reports whether an error frame about a queued entry means "send it again".
func (e *SyncError) retryable() bool {
	switch e.Code {
	case pulsebase.EUNAVAILABLE, pulsebase.ECONFLICT, pulsebase.ERATELIMITED, pulsebase.EINTERNAL:
		return true
	}
	return false
}

// Session is a sync session of one device: Run keeps it connected, the edit methods and
// SendSamples queue what goes to the server, and Profile reads the local replica. Its
// methods are safe for concurrent use.
type Session struct {
	c    *Client
	opts SyncOptions

	queue outbox
	kick  chan struct{} // something was queued

	mu      sync.Mutex
	cursor  string
	doc     *crdt.Document
	clock   *crdt.HLC
	nextSeq uint64
	dirty   bool // cursor or replica changed since the last save
	saved   time.Time
}

// outbox is the offline queue: a file (Queue) or, without a StateDir, memory.
type outbox interface {
	Append(kind string, data []byte) (uint64, error)
	Pending() []QueueEntry
	Len() int
	Ack(seq uint64) error
	Close() error
}

// savedState is what StateDir/state.json holds.
type savedState struct {
	Cursor  string `json:"cursor"`
	NextSeq uint64 `json:"next_seq"`
	Profile []byte `json:"profile"`
}

// Sync opens a sync session; Run connects it.
func (c *Client) Sync(opts SyncOptions) (*Session, error) {
	if !validDevice(opts.Device) {
		return nil, errors.New("pulsebase: SyncOptions.Device must be 1 to 64 printable ASCII characters without spaces or ':'")
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 250 * time.Millisecond
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(30*time.Second, opts.MinBackoff)
	}
	if opts.SaveEvery <= 0 {
		opts.SaveEvery = 200 * time.Millisecond
	}
	s := &Session{c: c, opts: opts, kick: make(chan struct{}, 1), doc: crdt.New(),
		clock: crdt.NewHLC(opts.Device, 0), cursor: opts.Cursor, nextSeq: 1}
	if opts.StateDir == "" {
		s.queue = &memQueue{}
		return s, nil
	}
	q, err := OpenQueue(filepath.Join(opts.StateDir, "queue"))
	if err != nil {
		return nil, err
	}
	s.queue = q
	b, err := os.ReadFile(filepath.Join(opts.StateDir, "state.json"))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		q.Close()
		return nil, fmt.Errorf("pulsebase: read sync state: %w", err)
	default:
		var st savedState
		if err := json.Unmarshal(b, &st); err != nil {
			q.Close()
			return nil, fmt.Errorf("pulsebase: decode sync state: %w", err)
		}
		doc := crdt.New()
		if len(st.Profile) > 0 {
			if err := doc.UnmarshalBinary(st.Profile); err != nil {
				q.Close()
				return nil, fmt.Errorf("pulsebase: decode profile replica: %w", err)
			}
		}
		s.cursor, s.doc, s.nextSeq = st.Cursor, doc, max(st.NextSeq, 1)
	}
	// Edits queued after the last save are in the queue, not yet in the saved replica.
	s.reapplyPending()
	return s, nil
}

// validDevice reports whether s can be a device id (and so the node of an op id).
func validDevice(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c > '~' || c == ':' {
			return false
		}
	}
	return true
}

// reapplyPending applies the queued ops to the replica (those it holds are duplicates)
// and moves nextSeq past every queued op. s.mu is held or s is not shared yet.
func (s *Session) reapplyPending() {
	for _, e := range s.queue.Pending() {
		if e.Kind != "ops" {
			continue
		}
		for _, op := range decodeOps(e.Data) {
			s.doc.Apply(op)
			if _, seq, ok := strings.Cut(op.ID, ":"); ok {
				if n, err := strconv.ParseUint(seq, 10, 64); err == nil && n >= s.nextSeq {
					s.nextSeq = n + 1
				}
			}
		}
	}
	if seen := s.doc.Seen(s.opts.Device); seen >= s.nextSeq {
		s.nextSeq = seen + 1
	}
}

// decodeOps decodes the ops of a queued ops frame.
func decodeOps(data []byte) []crdt.Op {
	var f struct {
		Ops []crdt.Op `json:"ops"`
	}
	_ = json.Unmarshal(data, &f)
	return f.Ops
}

// Cursor returns the position after the last change handled.
func (s *Session) Cursor() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cursor
}

// Profile returns the local replica of the profile document: the server's as of the
// cursor, with this device's queued edits.
func (s *Session) Profile() map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.doc.View()
}

// Pending returns how many samples batches and op edits wait for the server's ack.
func (s *Session) Pending() int { return s.queue.Len() }

// SendSamples queues samples for the server (durably, with a StateDir); they go out in
// batches of at most 5,000 while connected. Re-sent samples are counted once: the server
// recognises them by id or content.
func (s *Session) SendSamples(samples []pulsebase.SampleInput) error {
	for len(samples) > 0 {
		n := min(len(samples), 5000)
		b, err := json.Marshal(map[string]any{"type": "samples", "samples": samples[:n]})
		if err != nil {
			return err
		}
		if _, err := s.queue.Append("samples", b); err != nil {
			return err
		}
		samples = samples[n:]
	}
	s.poke()
	return nil
}

// Set sets a register of the profile ("goals.steps", "units", "quiet_hours", …; see
// internal/crdt for the paths); a nil value clears it.
func (s *Session) Set(path string, value any) error { return s.edit(crdt.KindSet, path, value) }

// Add adds elem to a set of the profile ("enabled_nudges", "favourite_activities").
func (s *Session) Add(path, elem string) error { return s.edit(crdt.KindAdd, path, elem) }

// Remove removes elem from a set of the profile: the adds this replica has seen.
func (s *Session) Remove(path, elem string) error { return s.edit(crdt.KindRemove, path, elem) }

// Incr adds n (−20..20, not 0) to a counter of the profile ("water_glasses.2026-11-29").
func (s *Session) Incr(path string, n int) error { return s.edit(crdt.KindIncr, path, n) }

// edit makes an op, applies it to the replica and queues it for the server.
func (s *Session) edit(kind crdt.Kind, path string, value any) error {
	v, err := json.Marshal(value)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	op := crdt.Op{ID: s.opts.Device + ":" + strconv.FormatUint(s.nextSeq, 10), TS: s.clock.Now(time.Now()),
		Kind: kind, Path: path, Value: v}
	if kind == crdt.KindRemove {
		var elem string
		if json.Unmarshal(v, &elem) == nil {
			op.Observed = s.doc.Observed(path, elem)
		}
	}
	if err := op.Validate(); err != nil {
		return err
	}
	if err := s.doc.CheckIncoming(op); err != nil {
		return err
	}
	b, err := json.Marshal(map[string]any{"type": "ops", "doc": "profile", "ops": []crdt.Op{op}})
	if err != nil {
		return err
	}
	// Queued first: an op the queue did not take is not in the replica either, and its
	// id is used by the next edit.
	if _, err := s.queue.Append("ops", b); err != nil {
		return err
	}
	s.nextSeq++
	if _, err := s.doc.Apply(op); err != nil {
		return err // cannot happen after CheckIncoming; the queued op still goes out
	}
	s.dirty = true
	s.poke()
	return nil
}

func (s *Session) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Run keeps the session connected until ctx is done, reconnecting after a lost
// connection with exponential backoff and jitter, resuming from the cursor. It returns
// ctx's error, or a *SyncError when the server refuses the session for good (forbidden,
// revoked, or unauthenticated without a TokenSource to get a new token).
func (s *Session) Run(ctx context.Context) error {
	defer s.save(true)
	backoff := s.opts.MinBackoff
	for {
		welcomed, err := s.connect(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var se *SyncError
		if errors.As(err, &se) && permanent(se, s.opts.TokenSource != nil) {
			return se
		}
		if err != nil && s.opts.OnError != nil {
			s.opts.OnError(err)
		}
		if welcomed {
			backoff = s.opts.MinBackoff
		}
		wait := time.Duration(rand.Int64N(int64(backoff))) + s.opts.MinBackoff/2
		backoff = min(2*backoff, s.opts.MaxBackoff)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// permanent reports whether the server's close means "do not come back".
func permanent(e *SyncError, canRefresh bool) bool {
	switch e.Status {
	case CloseForbidden, CloseRevoked:
		return true
	case CloseUnauthenticated:
		return !canRefresh
	}
	return false
}

// frame is any frame the server sends; Type says which members matter.
type inFrame struct {
	Type      string          `json:"type"`
	Cursor    string          `json:"cursor"`
	Recovered bool            `json:"recovered"`
	Snapshot  *Snapshot       `json:"snapshot"`
	Kind      string          `json:"kind"`
	Key       string          `json:"key"`
	Data      json.RawMessage `json:"data"`
	Ref       string          `json:"ref"`
	Code      string          `json:"code"`
	Detail    string          `json:"detail"`
}

// connect runs one connection until it ends; welcomed says whether it got that far.
func (s *Session) connect(ctx context.Context) (welcomed bool, err error) {
	token := s.c.token
	if s.opts.TokenSource != nil {
		if token, err = s.opts.TokenSource(ctx); err != nil {
			return false, fmt.Errorf("pulsebase sync: token: %w", err)
		}
	}
	url := "ws" + strings.TrimPrefix(s.c.base, "http") + "/v1/sync"
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	ws, _, err := websocket.Dial(dctx, url, &websocket.DialOptions{
		Subprotocols: []string{Subprotocol}, HTTPClient: dialClient(s.c.http),
	})
	cancel()
	if err != nil {
		return false, fmt.Errorf("pulsebase sync: dial: %w", err)
	}
	defer ws.CloseNow()
	ws.SetReadLimit(256 << 20) // a snapshot can be large
	cctx, stop := context.WithCancel(ctx)
	defer stop()

	hello := map[string]any{"type": "hello", "token": token, "device": s.opts.Device, "cursor": nil}
	if cur := s.Cursor(); cur != "" {
		hello["cursor"] = cur
	}
	if err := writeJSON(cctx, ws, hello); err != nil {
		return false, fmt.Errorf("pulsebase sync: hello: %w", err)
	}
	answers := make(chan answer, 16) // acks and errors with a ref, for the sender
	var lastErr *SyncError
	var raw []byte
	read := func() (inFrame, error) {
		_, b, err := ws.Read(cctx)
		if err != nil {
			if st := websocket.CloseStatus(err); st != -1 {
				if lastErr == nil {
					lastErr = &SyncError{Code: "closed", Detail: err.Error()}
				}
				lastErr.Status = int(st)
				return inFrame{}, lastErr
			}
			return inFrame{}, err
		}
		var f inFrame
		if err := json.Unmarshal(b, &f); err != nil {
			return inFrame{}, fmt.Errorf("pulsebase sync: bad frame: %w", err)
		}
		raw = b
		return f, nil
	}
	f, err := read()
	if err != nil {
		return false, err
	}
	if f.Type == "error" {
		lastErr = &SyncError{Code: f.Code, Detail: f.Detail}
		_, err := read() // the close that follows
		if err == nil {
			err = lastErr
		}
		return false, err
	}
	if f.Type != "welcome" {
		return false, fmt.Errorf("pulsebase sync: expected a welcome, got %q", f.Type)
	}
	if err := s.welcome(f); err != nil {
		return true, err
	}
	done := make(chan struct{})
	defer func() { <-done }()
	defer stop()
	go func() {
		defer close(done)
		s.send(cctx, ws, answers)
	}()
	for {
		f, err := read()
		if err != nil {
			return true, err
		}
		switch f.Type {
		case "change":
			s.change(Change{Cursor: f.Cursor, Kind: f.Kind, Key: f.Key, Data: f.Data})
		case "ack", "error":
			if f.Type == "error" && f.Ref == "" {
				lastErr = &SyncError{Code: f.Code, Detail: f.Detail} // the server closes after it
				continue
			}
			select {
			case answers <- answer{f, raw}:
			case <-cctx.Done():
			}
		}
	}
}

// dialClient is the HTTP client of the WebSocket handshake: the Client's transport, with
// no overall timeout (it would cut the connection).
func dialClient(h *http.Client) *http.Client {
	c := *h
	c.Timeout = 0
	return &c
}

func writeJSON(ctx context.Context, ws *websocket.Conn, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return ws.Write(ctx, websocket.MessageText, b)
}

// welcome takes the server's welcome: a snapshot replaces the replica (keeping this
// device's queued edits) and moves the cursor.
func (s *Session) welcome(f inFrame) error {
	if !f.Recovered {
		if f.Snapshot == nil {
			return errors.New("pulsebase sync: a welcome without recovery and without a snapshot")
		}
		doc := crdt.New()
		if len(f.Snapshot.Profile.State) > 0 {
			if err := doc.UnmarshalBinary(f.Snapshot.Profile.State); err != nil {
				return fmt.Errorf("pulsebase sync: snapshot profile: %w", err)
			}
		}
		s.mu.Lock()
		// What this replica holds and the server's document lacks is this device's own
		// queued edits (everything else came from the server): merge keeps them.
		if err := doc.Merge(s.doc); err != nil {
			s.mu.Unlock()
			return fmt.Errorf("pulsebase sync: merge snapshot profile: %w", err)
		}
		s.doc = doc
		s.reapplyPending()
		s.mu.Unlock()
		if s.opts.OnSnapshot != nil {
			s.opts.OnSnapshot(*f.Snapshot)
		}
	}
	s.mu.Lock()
	s.cursor, s.dirty = f.Cursor, true
	s.mu.Unlock()
	s.save(false)
	return nil
}

// change handles one change: profile ops go into the replica, then OnChange, then the
// cursor moves past it.
func (s *Session) change(c Change) {
	if c.Kind == "profile" {
		var d struct {
			Ops []crdt.Op `json:"ops"`
		}
		if err := json.Unmarshal(c.Data, &d); err == nil {
			s.mu.Lock()
			for _, op := range d.Ops {
				s.clock.Observe(op.TS, time.Now())
				s.doc.Apply(op)
			}
			s.mu.Unlock()
		}
	}
	if h := s.opts.Handlers[c.Kind]; h != nil {
		h(c)
	}
	if s.opts.OnChange != nil {
		s.opts.OnChange(c)
	}
	s.mu.Lock()
	s.cursor, s.dirty = c.Cursor, true
	s.mu.Unlock()
	s.save(false)
}

// save writes the cursor and the replica to StateDir, at most every SaveEvery unless
// force.
func (s *Session) save(force bool) {
	if s.opts.StateDir == "" {
		return
	}
	s.mu.Lock()
	if !s.dirty || (!force && time.Since(s.saved) < s.opts.SaveEvery) {
		s.mu.Unlock()
		return
	}
	doc, err := s.doc.MarshalBinary()
	st := savedState{Cursor: s.cursor, NextSeq: s.nextSeq, Profile: doc}
	s.dirty, s.saved = false, time.Now()
	s.mu.Unlock()
	if err == nil {
		err = writeFileAtomic(filepath.Join(s.opts.StateDir, "state.json"), st)
	}
	if err != nil {
		s.mu.Lock()
		s.dirty = true
		s.mu.Unlock()
		if s.opts.OnError != nil {
			s.opts.OnError(fmt.Errorf("pulsebase sync: save state: %w", err))
		}
	}
}

// writeFileAtomic writes v as JSON to path through a synced temporary file and a rename,
// so that a crash leaves the old file or the new one.
func writeFileAtomic(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// answer is an ack or an error frame about a queued entry.
type answer struct {
	f   inFrame
	raw []byte
}

// send sends the offline queue's entries one at a time, in order, each after the
// previous one's ack, until ctx is done. One at a time keeps a device's ops in the order
// the server requires.
func (s *Session) send(ctx context.Context, ws *websocket.Conn, answers <-chan answer) {
	retry := s.opts.MinBackoff
	for {
		pending := s.queue.Pending()
		if len(pending) == 0 {
			select {
			case <-ctx.Done():
				return
			case <-s.kick:
				continue
			}
		}
		e := pending[0]
		ref := "q" + strconv.FormatUint(e.Seq, 10)
		var frame map[string]json.RawMessage
		if err := json.Unmarshal(e.Data, &frame); err != nil {
			s.queue.Ack(e.Seq) // cannot be sent; never happens with entries this package made
			continue
		}
		frame["ref"], _ = json.Marshal(ref)
		b, _ := json.Marshal(frame)
		if err := ws.Write(ctx, websocket.MessageText, b); err != nil {
			return
		}
		a, ok := s.answer(ctx, answers, ref, e.Kind)
		if !ok {
			return
		}
		if a.f.Type == "error" {
			// Unavailable, conflict and the like: send the entry again after a while. Any
			// other refusal is for good: sending it again would not help.
			select {
			case <-ctx.Done():
				return
			case <-time.After(retry):
			}
			retry = min(2*retry, s.opts.MaxBackoff)
			continue
		}
		retry = s.opts.MinBackoff
		ack := Ack{}
		if err := json.Unmarshal(a.raw, &ack); err != nil {
			ack = Ack{}
		}
		ack.Seq, ack.Kind = e.Seq, e.Kind
		if err := s.queue.Ack(e.Seq); err != nil && s.opts.OnError != nil {
			s.opts.OnError(fmt.Errorf("pulsebase sync: ack queue entry: %w", err))
		}
		if s.opts.OnAck != nil {
			s.opts.OnAck(ack)
		}
	}
}

// answer waits for the answer to the entry sent as ref: its ack, or a retryable error
// frame. Refusals for good are reported to OnError; for samples the entry is then done
// (an ack without counts is returned), for ops the ack with each op's outcome follows.
func (s *Session) answer(ctx context.Context, answers <-chan answer, ref, kind string) (answer, bool) {
	for {
		var a answer
		select {
		case <-ctx.Done():
			return answer{}, false
		case a = <-answers:
		}
		if a.f.Ref != ref {
			continue // an answer to an entry of an earlier connection
		}
		if a.f.Type != "error" {
			return a, true
		}
		se := &SyncError{Code: a.f.Code, Detail: a.f.Detail, Ref: a.f.Ref}
		if s.opts.OnError != nil {
			s.opts.OnError(se)
		}
		if se.retryable() {
			return a, true
		}
		if kind == "samples" {
			return answer{f: inFrame{Type: "ack", Ref: ref}, raw: []byte("{}")}, true
		}
	}
}

// Close saves the session's state and closes its queue; Run must have returned.
func (s *Session) Close() error {
	s.save(true)
	return s.queue.Close()
}

// memQueue is the outbox of a session without a StateDir.
type memQueue struct {
	mu      sync.Mutex
	next    uint64
	entries []QueueEntry
}

func (q *memQueue) Append(kind string, data []byte) (uint64, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.next++
	q.entries = append(q.entries, QueueEntry{Seq: q.next, Kind: kind, Data: append([]byte(nil), data...)})
	return q.next, nil
}

func (q *memQueue) Pending() []QueueEntry {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]QueueEntry(nil), q.entries...)
}

func (q *memQueue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.entries)
}

func (q *memQueue) Ack(seq uint64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i, e := range q.entries {
		if e.Seq == seq {
			q.entries = append(q.entries[:i], q.entries[i+1:]...)
			break
		}
	}
	return nil
}

func (q *memQueue) Close() error { return nil }
