package syncgw_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/auth"
	"github.com/pulsebase/pulsebase/internal/changefeed"
	"github.com/pulsebase/pulsebase/internal/pbtest"
	"github.com/pulsebase/pulsebase/internal/processor"
	"github.com/pulsebase/pulsebase/internal/syncgw"
)

// wsConn is a raw sync connection of a test: frames as maps.
type wsConn struct {
	t  *testing.T
	ws *websocket.Conn
}

// dial opens a sync connection to s without saying hello.
func dial(t *testing.T, s *pbtest.Server) *wsConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(s.URL, "http")+"/v1/sync",
		&websocket.DialOptions{Subprotocols: []string{syncgw.Subprotocol}})
	if err != nil {
		t.Fatal(err)
	}
	ws.SetReadLimit(64 << 20)
	t.Cleanup(func() { ws.CloseNow() })
	return &wsConn{t: t, ws: ws}
}

// hello dials and says hello with token, device and cursor (nil: none), and returns the
// welcome.
func hello(t *testing.T, s *pbtest.Server, token, device string, cursor any) (*wsConn, map[string]any) {
	t.Helper()
	c := dial(t, s)
	c.send(map[string]any{"type": "hello", "token": token, "device": device, "cursor": cursor})
	w := c.recv()
	if w["type"] != "welcome" {
		t.Fatalf("expected a welcome, got %v", w)
	}
	return c, w
}

func (c *wsConn) send(v any) {
	c.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageText, b); err != nil {
		c.t.Fatal(err)
	}
}

// recv reads the next frame, failing the test after 60 s.
func (c *wsConn) recv() map[string]any {
	c.t.Helper()
	m, err := c.read(60 * time.Second)
	if err != nil {
		c.t.Fatal(err)
	}
	return m
}

func (c *wsConn) read(timeout time.Duration) (map[string]any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, b, err := c.ws.Read(ctx)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("frame %s: %w", b, err)
	}
	return m, nil
}

// closed reads until the server closes and returns the close status and the error frame
// before it, if any.
func (c *wsConn) closed() (websocket.StatusCode, map[string]any) {
	c.t.Helper()
	var last map[string]any
	for {
		m, err := c.read(60 * time.Second)
		if err != nil {
			st := websocket.CloseStatus(err)
			if st == -1 {
				c.t.Fatalf("the connection ended without a close frame: %v", err)
			}
			return st, last
		}
		if m["type"] == "error" {
			last = m
		}
	}
}

// until reads frames until one satisfies ok, and returns it.
func (c *wsConn) until(what string, ok func(map[string]any) bool) map[string]any {
	c.t.Helper()
	for {
		m, err := c.read(60 * time.Second)
		if err != nil {
			c.t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok(m) {
			return m
		}
	}
}

func sample(typ string, value float64, at time.Time) map[string]any {
	return map[string]any{"type": typ, "value": value, "start": at.UTC().Format(time.RFC3339), "source": "test"}
}

// TestWelcomeSnapshotThenLive: without a cursor a device gets a snapshot, then sees the
// samples it sends over the socket come back as changes; acks count accepted samples and
// duplicates.
func TestWelcomeSnapshotThenLive(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	tok := s.UserToken(t, "ada")
	c, w := hello(t, s, tok, "phone", nil)
	if w["recovered"] != false || w["snapshot"] == nil || w["cursor"] == "" || w["device"] != "phone" {
		t.Fatalf("welcome without a cursor: %v", w)
	}
	snap := w["snapshot"].(map[string]any)
	for _, k := range []string{"daily", "series", "recommendations", "profile", "consents"} {
		if _, ok := snap[k]; !ok {
			t.Errorf("the snapshot lacks %s: %v", k, snap)
		}
	}
	if cons := snap["consents"].(map[string]any); cons["collect"].(map[string]any)["heart"] != true {
		t.Errorf("the snapshot's consents: %v", cons)
	}
	at := time.Now().Add(-time.Hour).Truncate(time.Minute)
	c.send(map[string]any{"type": "samples", "ref": "r1", "samples": []any{sample("heart_rate", 61, at), sample("heart_rate", 500, at)}})
	ack := c.until("the ack", func(m map[string]any) bool { return m["type"] == "ack" })
	if ack["ref"] != "r1" || ack["accepted"] != 1.0 || len(ack["rejected"].([]any)) != 1 {
		t.Fatalf("ack: %v", ack)
	}
	c.send(map[string]any{"type": "samples", "ref": "r2", "samples": []any{sample("heart_rate", 61, at)}})
	if ack := c.until("the second ack", func(m map[string]any) bool { return m["type"] == "ack" }); ack["duplicates"] != 1.0 || ack["accepted"] != 0.0 {
		t.Fatalf("re-sent sample: %v", ack)
	}
	c.until("the bucket's change", func(m map[string]any) bool {
		d, _ := m["data"].(map[string]any)
		return m["type"] == "change" && m["kind"] == "series" && strings.HasPrefix(m["key"].(string), "heart_rate/1m/") && d["last"] == 61.0
	})
	// A bad samples frame gets an error with its ref, and the connection stays.
	c.send(map[string]any{"type": "samples", "ref": "r3", "samples": "nope"})
	if e := c.until("the error", func(m map[string]any) bool { return m["type"] == "error" }); e["ref"] != "r3" || e["code"] == "" {
		t.Fatalf("bad samples frame: %v", e)
	}
	c.send(map[string]any{"type": "samples", "ref": "r4", "samples": []any{sample("steps", 10, at)}})
	if ack := c.until("the ack after the error", func(m map[string]any) bool { return m["type"] == "ack" }); ack["ref"] != "r4" {
		t.Fatalf("after an error: %v", ack)
	}
}

// TestHelloRefusals: the first frame authenticates; each refusal has its error code and
// close code, and a connection without the subprotocol is closed as a protocol error.
func TestHelloRefusals(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	user := s.UserToken(t, "bo")
	watch := s.Token(t, "bo", pulsebase.RoleDevice, "watch-1")
	coach := s.Token(t, "coach-1", pulsebase.RoleCoach, "")
	for _, c := range []struct {
		name  string
		hello map[string]any
		code  string
		close websocket.StatusCode
	}{
		{"not a hello", map[string]any{"type": "samples", "ref": "x"}, pulsebase.EUNAUTHORIZED, syncgw.CloseUnauthenticated},
		{"no token", map[string]any{"type": "hello", "device": "p"}, pulsebase.EUNAUTHORIZED, syncgw.CloseUnauthenticated},
		{"a bad token", map[string]any{"type": "hello", "token": user + "x", "device": "p"}, pulsebase.EUNAUTHORIZED, syncgw.CloseUnauthenticated},
		{"a coach", map[string]any{"type": "hello", "token": coach, "device": "p"}, pulsebase.EFORBIDDEN, syncgw.CloseForbidden},
		{"another device's token", map[string]any{"type": "hello", "token": watch, "device": "phone"}, pulsebase.EFORBIDDEN, syncgw.CloseForbidden},
		{"no device", map[string]any{"type": "hello", "token": user}, pulsebase.EINVALID, websocket.StatusPolicyViolation},
		{"a device with a space", map[string]any{"type": "hello", "token": user, "device": "my phone"}, pulsebase.EINVALID, websocket.StatusPolicyViolation},
	} {
		c2 := dial(t, s)
		c2.send(c.hello)
		st, e := c2.closed()
		if st != c.close || e == nil || e["code"] != c.code {
			t.Errorf("%s: closed %d after %v; want %d after an error %s", c.name, st, e, c.close, c.code)
		}
	}
	// Not JSON at all.
	c := dial(t, s)
	if err := c.ws.Write(context.Background(), websocket.MessageText, []byte("hello?")); err != nil {
		t.Fatal(err)
	}
	if st, e := c.closed(); st != websocket.StatusInvalidFramePayloadData || e["code"] != pulsebase.EINVALID {
		t.Errorf("not JSON: closed %d after %v", st, e)
	}
	// Without the subprotocol.
	ws, _, err := websocket.Dial(context.Background(), "ws"+strings.TrimPrefix(s.URL, "http")+"/v1/sync", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = ws.Read(context.Background())
	if st := websocket.CloseStatus(err); st != websocket.StatusProtocolError {
		t.Errorf("without the subprotocol: %v", err)
	}
	// A device token may name its own device, or none.
	if _, w := hello(t, s, watch, "", nil); w["device"] != "watch-1" {
		t.Errorf("device token without a device: %v", w)
	}
	// Plain HTTP gets a problem.
	r := pbtest.Do(t, "GET", s.URL+"/v1/sync", "", "", nil)
	if r.Status != 400 || !strings.Contains(r.Header.Get("Content-Type"), "problem") {
		t.Errorf("GET /v1/sync without an upgrade: %d %s", r.Status, r.Body)
	}
	// The server stayed healthy through all of it.
	if r := pbtest.Do(t, "GET", s.URL+"/readyz", "", "", nil); r.Status != 200 {
		t.Errorf("readyz: %d", r.Status)
	}
}

// feedPage is an answer of GET …/changes.
type feedPage struct {
	Changes []struct {
		Cursor, Kind, Key string
		Data              map[string]any
	}
	Cursor  string
	HasMore bool `json:"has_more"`
}

// fullFeed reads the user's whole feed over HTTP.
func fullFeed(t *testing.T, s *pbtest.Server, token string) feedPage {
	t.Helper()
	var all feedPage
	after := ""
	for {
		var p feedPage
		r := pbtest.Do(t, "GET", s.URL+"/v1/users/me/changes?limit=1000&after="+after, token, "", nil)
		if r.Status != 200 {
			t.Fatalf("changes: %d %s", r.Status, r.Body)
		}
		r.JSON(t, &p)
		all.Changes = append(all.Changes, p.Changes...)
		all.Cursor, after = p.Cursor, p.Cursor
		if !p.HasMore {
			return all
		}
	}
}

// postSamples posts samples over HTTP.
func postSamples(t *testing.T, s *pbtest.Server, token string, samples ...map[string]any) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"samples": samples})
	if r := pbtest.Do(t, "POST", s.URL+"/v1/samples", token, "application/json", b); r.Status != 202 {
		t.Fatalf("samples: %d %s", r.Status, r.Body)
	}
}

// minutes returns n heart rate samples in n distinct minutes ending an hour ago.
func minutes(n int, value float64) []map[string]any {
	at := time.Now().Add(-time.Hour).Truncate(time.Minute)
	out := make([]map[string]any, n)
	for i := range out {
		out[i] = sample("heart_rate", value, at.Add(-time.Duration(i)*time.Minute))
	}
	return out
}

// TestResumeFromEveryCursor: a device resuming from the cursor of any change gets
// recovered true and exactly the changes after it, in order, then live changes with no
// gap or duplicate at the seam.
func TestResumeFromEveryCursor(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	tok := s.UserToken(t, "cy")
	for i := range 3 {
		postSamples(t, s, tok, minutes(5, 60+float64(i))...)
		pbtest.WaitFor(t, 60*time.Second, "the batch's changes", func() bool {
			for _, c := range fullFeed(t, s, tok).Changes {
				if c.Kind == "series" && c.Data["last"] == 60+float64(i) {
					return true
				}
			}
			return false
		})
	}
	all := fullFeed(t, s, tok)
	if len(all.Changes) < 10 {
		t.Fatalf("only %d changes", len(all.Changes))
	}
	for i := 0; i < len(all.Changes); i += max(1, len(all.Changes)/7) {
		c, w := hello(t, s, tok, fmt.Sprintf("d%d", i), all.Changes[i].Cursor)
		if w["recovered"] != true || w["snapshot"] != nil || w["cursor"] != all.Changes[i].Cursor {
			t.Fatalf("resume from change %d: %v", i, w)
		}
		for j := i + 1; j < len(all.Changes); j++ {
			m := c.recv()
			if m["type"] != "change" || m["cursor"] != all.Changes[j].Cursor || m["key"] != all.Changes[j].Key {
				t.Fatalf("resumed from %d: frame %v, want change %d %s %s", i, m, j, all.Changes[j].Kind, all.Changes[j].Key)
			}
		}
		// Live from here: the next change continues the feed exactly.
		postSamples(t, s, tok, minutes(1, 100+float64(i))...)
		m := c.recv()
		after := fullFeed(t, s, tok)
		if len(after.Changes) <= len(all.Changes) || m["cursor"] != after.Changes[len(all.Changes)].Cursor {
			t.Fatalf("the first live change after resuming from %d: %v, want %+v", i, m, after.Changes[len(all.Changes):])
		}
		c.ws.Close(websocket.StatusNormalClosure, "")
		all = after
	}
}

// TestUnusableCursorsGetASnapshot: a cursor of a recreated stream, garbage, or another
// user's cursor gets recovered false and a snapshot, and a device of one user never
// receives a change of another, whatever cursor it sends.
func TestUnusableCursorsGetASnapshot(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	ann, ben := s.UserToken(t, "ann"), s.UserToken(t, "ben")
	postSamples(t, s, ben, minutes(3, 90)...)
	pbtest.WaitFor(t, 60*time.Second, "ben's changes", func() bool { return len(fullFeed(t, s, ben).Changes) > 3 })
	bens := fullFeed(t, s, ben)
	var annID struct{ ID string }
	pbtest.Do(t, "GET", s.URL+"/v1/users/me", ann, "", nil).JSON(t, &annID)
	for k, cur := range []string{bens.Changes[0].Cursor, bens.Cursor, "c1.garbage", "nonsense",
		processorCursor(1, 1, annID.ID)} {
		c, w := hello(t, s, ann, "phone", cur)
		if w["recovered"] != false || w["snapshot"] == nil || w["reason"] == "" {
			t.Errorf("cursor %s: %v", cur, w)
		}
		// Both users get new data; ann's connection sees hers only.
		mine := 70 + float64(k)
		postSamples(t, s, ben, minutes(2, 91+float64(k))...)
		postSamples(t, s, ann, minutes(1, mine)...)
		c.until("ann's own change", func(m map[string]any) bool {
			if m["type"] != "change" {
				return false
			}
			d, _ := m["data"].(map[string]any)
			if last, ok := d["last"].(float64); ok && last >= 90 {
				t.Fatalf("ann received ben's change %v", m)
			}
			return d["last"] == mine
		})
		c.ws.Close(websocket.StatusNormalClosure, "")
	}
}

// TestSlowConsumerResumesWithoutLoss: a message larger than the send queue's bound closes
// the connection with 4008; reconnecting with the last cursor received gets the rest, and
// the two connections together received the feed exactly.
func TestSlowConsumerResumesWithoutLoss(t *testing.T) {
	s := pbtest.MustOpenServerWith(t, syncgw.Config{MaxQueueBytes: 8 << 10})
	tok := s.UserToken(t, "dee")
	start := fullFeed(t, s, tok)
	c, _ := hello(t, s, tok, "phone", start.Cursor)
	postSamples(t, s, tok, minutes(600, 65)...)
	var got []string
	cursor := start.Cursor
	for {
		m, err := c.read(60 * time.Second)
		if err != nil {
			if st := websocket.CloseStatus(err); st != syncgw.CloseTooSlow {
				t.Fatalf("closed with %v, want 4008", err)
			}
			break
		}
		if m["type"] == "change" {
			got = append(got, m["cursor"].(string))
			cursor = m["cursor"].(string)
		}
	}
	pbtest.WaitFor(t, 60*time.Second, "every bucket on the feed", func() bool {
		n := 0
		for _, ch := range fullFeed(t, s, tok).Changes {
			if ch.Kind == "series" && strings.HasPrefix(ch.Key, "heart_rate/1m/") {
				n++
			}
		}
		return n == 600
	})
	all := fullFeed(t, s, tok)
	all.Changes = all.Changes[len(start.Changes):] // what the device had before it connected
	c2, w := hello(t, s, tok, "phone", cursor)
	if w["recovered"] != true {
		t.Fatalf("resume after 4008: %v", w)
	}
	first := len(got)
	for len(got) < len(all.Changes) {
		m, err := c2.read(20 * time.Second)
		if err != nil {
			t.Fatalf("after resuming with change %d: %d of %d changes: %v", first, len(got), len(all.Changes), err)
		}
		if m["type"] == "change" {
			got = append(got, m["cursor"].(string))
		}
	}
	for i, ch := range all.Changes {
		if got[i] != ch.Cursor {
			t.Fatalf("change %d: got cursor %s, want %s", i, got[i], ch.Cursor)
		}
	}
	if v := testutil.ToFloat64(s.Metrics.SyncOverflows); v < 1 {
		t.Errorf("overflows counted: %v", v)
	}
}

// TestRevocationClosesOpenConnections: revoking a device closes its open sync connection
// with 4009, and not the user's other connections; revoking consent to a category stops
// its samples and is itself a change.
func TestRevocationClosesOpenConnections(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	user := s.UserToken(t, "eve")
	watch := s.Token(t, "eve", pulsebase.RoleDevice, "watch-1")
	cw, _ := hello(t, s, watch, "watch-1", nil)
	cp, _ := hello(t, s, user, "phone", nil)
	if r := pbtest.Do(t, "DELETE", s.URL+"/v1/users/me/devices/watch-1", user, "", nil); r.Status != 204 {
		t.Fatalf("revoke: %d %s", r.Status, r.Body)
	}
	if st, e := cw.closed(); st != syncgw.CloseRevoked || e["code"] != syncgw.EREVOKED {
		t.Fatalf("revoked device: closed %d after %v", st, e)
	}
	// The revoked token cannot come back.
	c := dial(t, s)
	c.send(map[string]any{"type": "hello", "token": watch})
	if st, _ := c.closed(); st != syncgw.CloseRevoked {
		t.Fatalf("revoked token's hello: closed %d", st)
	}
	// The phone is still connected: consent to heart data is withdrawn, and that is a
	// change it receives; heart samples are refused from then on.
	pbtest.Grant(t, s.URL, user, `{"collect":{"activity":true},"purposes":{"personalization":true}}`)
	cp.until("the consent change", func(m map[string]any) bool {
		d, _ := m["data"].(map[string]any)
		col, _ := d["collect"].(map[string]any)
		return m["kind"] == "consent" && col["heart"] != true && col["activity"] == true
	})
	cp.send(map[string]any{"type": "samples", "ref": "h", "samples": []any{sample("heart_rate", 70, time.Now().Add(-time.Minute))}})
	ack := cp.until("the ack", func(m map[string]any) bool { return m["type"] == "ack" })
	if rej := ack["rejected"].([]any); ack["accepted"] != 0.0 || len(rej) != 1 || rej[0].(map[string]any)["code"] != pulsebase.CodeNoConsent {
		t.Fatalf("heart sample without consent: %v", ack)
	}
}

// TestConnectionLimits: frames over the size limit, over the rate, and connections over
// the per-device limit get their error and close.
func TestConnectionLimits(t *testing.T) {
	s := pbtest.MustOpenServerWith(t, syncgw.Config{MaxFrameBytes: 2048, FramesPerSecond: 0.001, FrameBurst: 3, MaxConnsPerDevice: 1})
	tok := s.UserToken(t, "fay")
	c, _ := hello(t, s, tok, "phone", nil)
	// A second connection of the same device is refused; another device is welcome.
	c2 := dial(t, s)
	c2.send(map[string]any{"type": "hello", "token": tok, "device": "phone"})
	if st, e := c2.closed(); st != websocket.StatusPolicyViolation || e["code"] != syncgw.ETOOMANYCONNECTIONS {
		t.Errorf("second connection of a device: closed %d after %v", st, e)
	}
	hello(t, s, tok, "watch", nil)
	// Too large.
	c.send(map[string]any{"type": "samples", "ref": "big", "samples": []any{strings.Repeat("x", 4096)}})
	if st, e := c.closed(); st != websocket.StatusMessageTooBig || e["code"] != pulsebase.ETOOLARGE {
		t.Errorf("large frame: closed %d after %v", st, e)
	}
	// Too many.
	c3, _ := hello(t, s, tok, "tablet", nil)
	for i := range 4 {
		c3.send(map[string]any{"type": "ops", "ref": fmt.Sprint(i), "doc": "nope", "ops": []any{}})
	}
	if st, e := c3.closed(); st != websocket.StatusPolicyViolation || e["code"] != pulsebase.ERATELIMITED {
		t.Errorf("frames over the rate: closed %d after %v", st, e)
	}
}

// TestDeadPeerIsClosed: a peer that stops answering pings is closed and forgotten.
func TestDeadPeerIsClosed(t *testing.T) {
	s := pbtest.MustOpenServerWith(t, syncgw.Config{PingInterval: 100 * time.Millisecond})
	tok := s.UserToken(t, "gus")
	hello(t, s, tok, "phone", nil) // and never read again: pongs are sent while reading
	pbtest.WaitFor(t, 30*time.Second, "the dead peer closed", func() bool {
		return testutil.ToFloat64(s.Metrics.SyncCloses.WithLabelValues("dead_peer")) == 1 &&
			testutil.ToFloat64(s.Metrics.SyncConnections) == 0
	})
}

// TestOpsFrames: ops apply to the profile and go to the user's other devices; a malformed
// op is refused alone with an error frame naming the ref, and the stored document keeps
// only the good ops.
func TestOpsFrames(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	tok := s.UserToken(t, "hal")
	phone, _ := hello(t, s, tok, "phone", nil)
	watch, _ := hello(t, s, tok, "watch", nil)
	ts := map[string]any{"wall": time.Now().UnixMilli(), "logical": 0, "node": "phone"}
	phone.send(map[string]any{"type": "ops", "ref": "o1", "doc": "profile", "ops": []any{
		map[string]any{"id": "phone:1", "ts": ts, "kind": "set", "path": "goals.steps", "value": 9000},
		map[string]any{"id": "phone:2", "ts": ts, "kind": "set", "path": "goals.steps", "value": "lots"},
		map[string]any{"id": "phone:3", "ts": ts, "kind": "incr", "path": "water_glasses.2026-11-29", "value": 2},
	}})
	e := phone.until("the error", func(m map[string]any) bool { return m["type"] == "error" })
	if e["ref"] != "o1" || e["code"] == "" {
		t.Fatalf("error: %v", e)
	}
	ack := phone.until("the ack", func(m map[string]any) bool { return m["type"] == "ack" })
	res := ack["results"].([]any)
	if ack["ref"] != "o1" || ack["cursor"] == "" || len(res) != 3 || res[0].(map[string]any)["applied"] != true ||
		res[1].(map[string]any)["code"] == nil || res[2].(map[string]any)["applied"] != true {
		t.Fatalf("ack: %v", ack)
	}
	// The ack's cursor is just after the change carrying the ops: the feed after it does
	// not hold them.
	var after feedPage
	if r := pbtest.Do(t, "GET", s.URL+"/v1/users/me/changes?after="+ack["cursor"].(string), tok, "", nil); r.Status != 200 {
		t.Fatalf("changes after the ack's cursor: %d %s", r.Status, r.Body)
	} else {
		r.JSON(t, &after)
	}
	for _, c := range after.Changes {
		if c.Kind == "profile" {
			t.Errorf("a profile change after the ack's cursor: %v", c)
		}
	}
	if n := len(fullFeed(t, s, tok).Changes); n == len(after.Changes) {
		t.Errorf("the ack's cursor is at the start of the feed")
	}
	ch := watch.until("the profile change", func(m map[string]any) bool { return m["kind"] == "profile" })
	if ops := ch["data"].(map[string]any)["ops"].([]any); len(ops) != 2 {
		t.Fatalf("the watch got %v", ch)
	}
	var prof map[string]any
	pbtest.Do(t, "GET", s.URL+"/v1/users/me/profile", tok, "", nil).JSON(t, &prof)
	b, _ := json.Marshal(prof)
	if !strings.Contains(string(b), `"steps":9000`) || !strings.Contains(string(b), `"2026-11-29":2`) {
		t.Fatalf("profile: %s", b)
	}
	// Sending the same ops again changes nothing and acks them as duplicates.
	phone.send(map[string]any{"type": "ops", "ref": "o2", "doc": "profile", "ops": []any{
		map[string]any{"id": "phone:1", "ts": ts, "kind": "set", "path": "goals.steps", "value": 9000}}})
	ack = phone.until("the second ack", func(m map[string]any) bool { return m["type"] == "ack" })
	if r := ack["results"].([]any)[0].(map[string]any); r["applied"] != false || r["code"] != nil {
		t.Fatalf("duplicate op: %v", ack)
	}
	// Frames the gateway cannot use get an error with their ref and leave the connection
	// open.
	phone.send(map[string]any{"type": "ops", "ref": "o3", "doc": "settings", "ops": []any{map[string]any{}}})
	if e := phone.until("the error", func(m map[string]any) bool { return m["type"] == "error" }); e["ref"] != "o3" {
		t.Fatalf("unknown doc: %v", e)
	}
	phone.send(map[string]any{"type": "wat"})
	if st, e := phone.closed(); st != websocket.StatusPolicyViolation || e["code"] != pulsebase.EINVALID {
		t.Fatalf("unknown frame type: closed %d after %v", st, e)
	}
}

// TestHelloSentWithTheUpgrade: a client that sends its hello in the same packet as its
// upgrade request (without waiting for the 101) is understood: the bytes the HTTP server
// read past the request reach the WebSocket reader.
func TestHelloSentWithTheUpgrade(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	tok := s.UserToken(t, "ivy")
	hello, _ := json.Marshal(map[string]any{"type": "hello", "token": tok, "device": "phone", "cursor": nil})
	// A masked text frame, as clients send.
	frame := []byte{0x81, 0x80 | 126, byte(len(hello) >> 8), byte(len(hello))}
	mask := [4]byte{1, 2, 3, 4}
	frame = append(frame, mask[:]...)
	for i, b := range hello {
		frame = append(frame, b^mask[i%4])
	}
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := "GET /v1/sync HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: " + syncgw.Subprotocol + "\r\n\r\n"
	if _, err := conn.Write(append([]byte(req), frame...)); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	// The server's first frame: unmasked text, a 16-bit or 64-bit length.
	head := make([]byte, 2)
	if _, err := io.ReadFull(br, head); err != nil {
		t.Fatal(err)
	}
	n := int(head[1] & 0x7f)
	switch n {
	case 126:
		ext := make([]byte, 2)
		io.ReadFull(br, ext)
		n = int(binary.BigEndian.Uint16(ext))
	case 127:
		ext := make([]byte, 8)
		io.ReadFull(br, ext)
		n = int(binary.BigEndian.Uint64(ext))
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(br, payload); err != nil {
		t.Fatal(err)
	}
	if head[0] != 0x81 || !strings.Contains(string(payload), `"type":"welcome"`) {
		t.Fatalf("first frame %x: %s", head, payload)
	}
}

// TestExpiredTokenClosesTheConnection: a connection lasts no longer than its token: at
// the token's expiry it is closed with 4001, and the device reconnects with a new one.
func TestExpiredTokenClosesTheConnection(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	s.UserToken(t, "jan") // consent, so the user exists as a real one would
	tok, err := s.Issuer.Mint(auth.TokenRequest{Subject: "jan", Role: pulsebase.RoleUser, TTL: 2 * time.Second}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c, _ := hello(t, s, tok, "phone", nil)
	if st, e := c.closed(); st != syncgw.CloseUnauthenticated || e["code"] != pulsebase.EUNAUTHORIZED {
		t.Fatalf("at expiry: closed %d after %v", st, e)
	}
}

// TestWithdrawnCategoryIsNotSent: once a user withdraws consent to a category, series
// changes of it are not sent to their devices, even those already on the feed; other
// categories still are.
func TestWithdrawnCategoryIsNotSent(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	tok := s.UserToken(t, "kay")
	c, w := hello(t, s, tok, "phone", nil)
	user := w["user"].(string)
	pbtest.Grant(t, s.URL, tok, `{"collect":{"activity":true},"purposes":{"personalization":true}}`)
	c.until("the consent change", func(m map[string]any) bool { return m["kind"] == "consent" })
	// Changes made before the withdrawal (a processor's commit in flight) reach the feed
	// after it: heart rate first, then steps.
	keys, err := s.Vault.UserKeys(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	for i, key := range []string{"heart_rate/1m/00000000001795939200", "steps/1m/00000000001795939200"} {
		if _, err := changefeed.Publish(context.Background(), s.Broker.JetStream(), keys, user, fmt.Sprintf("%s-late-%d", user, i),
			[]processor.Change{{Kind: "series", Key: key, Data: map[string]any{"last": 1}}}); err != nil {
			t.Fatal(err)
		}
	}
	m := c.until("a series change", func(m map[string]any) bool { return m["kind"] == "series" })
	if !strings.HasPrefix(m["key"].(string), "steps/") {
		t.Fatalf("after the withdrawal the device got %v", m)
	}
}
