package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/client"
	"github.com/pulsebase/pulsebase/internal/auth"
	"github.com/pulsebase/pulsebase/internal/pbtest"
)

// proxy forwards TCP connections to a server and can cut them all at once, as a tunnel
// or a lost signal would.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.cut() })
	return p
}

func (p *proxy) url() string { return "http://" + p.ln.Addr().String() }

func (p *proxy) serve() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, in, out)
		p.mu.Unlock()
		go func() { io.Copy(out, in); out.Close() }()
		go func() { io.Copy(in, out); in.Close() }()
	}
}

// cut closes every connection through the proxy, and reports whether there was any.
func (p *proxy) cut() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	n := len(p.conns)
	p.conns = nil
	return n > 0
}

// feed reads the user's whole change feed over HTTP.
func feed(t *testing.T, s *pbtest.Server, token string) []client.Change {
	t.Helper()
	var all []client.Change
	after := ""
	for {
		var p struct {
			Changes []client.Change
			Cursor  string
			HasMore bool `json:"has_more"`
		}
		r := pbtest.Do(t, "GET", s.URL+"/v1/users/me/changes?limit=1000&after="+after, token, "", nil)
		if r.Status != 200 {
			t.Fatalf("changes: %d %s", r.Status, r.Body)
		}
		r.JSON(t, &p)
		all = append(all, p.Changes...)
		after = p.Cursor
		if !p.HasMore {
			return all
		}
	}
}

// sameJSON reports whether a and b encode the same JSON value.
func sameJSON(a, b []byte) bool {
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && reflect.DeepEqual(x, y)
}

// recorder collects the changes a session handles.
type recorder struct {
	mu      sync.Mutex
	changes []client.Change
}

func (r *recorder) add(c client.Change) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changes = append(r.changes, c)
}

func (r *recorder) get() []client.Change {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]client.Change(nil), r.changes...)
}

// TestResumeAtRandomDisconnects cuts a device's connection at 100 random moments while
// the server streams changes to it; the device ends with exactly the server's sequence of
// changes, none lost, none twice, in order.
func TestResumeAtRandomDisconnects(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	tok := s.UserToken(t, "ida")
	start := feed(t, s, tok)
	addr := s.URL[len("http://"):]
	px := newProxy(t, addr)
	var rec recorder
	lost := 0
	var wmu sync.Mutex
	sess, err := client.New(px.url(), tok).Sync(client.SyncOptions{
		Device: "phone", Cursor: start[len(start)-1].Cursor, MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
		OnChange: rec.add,
		OnSnapshot: func(client.Snapshot) {
			t.Error("the device was sent a snapshot; it always had a usable cursor")
		},
		OnError: func(error) { wmu.Lock(); lost++; wmu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sess.Run(ctx) }()

	// The stream: batches of samples in new minutes, each a commit or so of changes.
	rng, prng := rand.New(rand.NewPCG(7, 11)), rand.New(rand.NewPCG(13, 17))
	hc := client.New(s.URL, tok)
	stop := make(chan struct{})
	producing := make(chan struct{})
	go func() {
		defer close(producing)
		at := time.Now().Add(-2 * time.Hour).Truncate(time.Minute)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			var batch []pulsebase.SampleInput
			for j := range 1 + prng.IntN(4) {
				v, _ := json.Marshal(55 + (i+j)%40)
				batch = append(batch, pulsebase.SampleInput{Type: "heart_rate", Value: v, Source: "test",
					Start: at.Add(-time.Duration(i*5+j) * time.Minute).Format(time.RFC3339)})
			}
			if _, err := hc.PostSamples(context.Background(), batch); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(time.Duration(5+prng.IntN(20)) * time.Millisecond)
		}
	}()
	for cuts := 0; cuts < 100; {
		time.Sleep(time.Duration(rng.IntN(60)) * time.Millisecond)
		if px.cut() {
			cuts++
		}
	}
	close(stop)
	<-producing
	// Once the processor is done (daily summaries come a few seconds after the samples),
	// the device holds the server's feed: as many changes, ending with the same one. A
	// change handled twice would keep the device ahead for good.
	var want, got []client.Change
	pbtest.WaitFor(t, 120*time.Second, "the device to hold the server's feed", func() bool {
		want, got = feed(t, s, tok)[len(start):], rec.get()
		return len(got) == len(want) && len(want) > 0 && got[len(got)-1].Cursor == want[len(want)-1].Cursor
	}, func() string {
		out := fmt.Sprintf("the device handled %d changes, the server's feed holds %d", len(got), len(want))
		seen := map[string]int{}
		for i, c := range got {
			if j, ok := seen[c.Cursor]; ok {
				out += fmt.Sprintf("\nchange %d repeats change %d: %s %s", i, j, c.Kind, c.Key)
			}
			seen[c.Cursor] = i
		}
		return out
	})
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	for i := range want {
		if got[i].Cursor != want[i].Cursor || got[i].Kind != want[i].Kind || got[i].Key != want[i].Key || !sameJSON(got[i].Data, want[i].Data) {
			t.Fatalf("change %d: got %s %s %s, want %s %s %s", i, got[i].Kind, got[i].Key, got[i].Data, want[i].Kind, want[i].Key, want[i].Data)
		}
	}
	wmu.Lock()
	defer wmu.Unlock()
	if lost < 100 {
		t.Errorf("only %d connections were lost; the test cut 100", lost)
	}
	t.Logf("%d changes over %d lost connections", len(got), lost)
}

// TestProfileConvergesAfterOfflineEdits: a phone and a watch both edit goals and bump the
// water counter while offline, then reconnect one after the other, in either order; both
// replicas and the server's document agree.
func TestProfileConvergesAfterOfflineEdits(t *testing.T) {
	for _, order := range [][2]string{{"phone", "watch"}, {"watch", "phone"}} {
		t.Run(order[0]+" first", func(t *testing.T) {
			s := pbtest.MustOpenServer(t)
			tok := s.UserToken(t, "jo")
			sessions := map[string]*client.Session{}
			for _, dev := range []string{"phone", "watch"} {
				sess, err := client.New(s.URL, tok).Sync(client.SyncOptions{Device: dev, StateDir: t.TempDir(), MinBackoff: 10 * time.Millisecond})
				if err != nil {
					t.Fatal(err)
				}
				sessions[dev] = sess
			}
			day := "water_glasses.2026-11-29"
			phone, watch := sessions["phone"], sessions["watch"]
			must := func(err error) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
			}
			// Offline: nothing is running.
			must(phone.Set("goals.steps", 9000))
			must(watch.Set("goals.steps", 12000))
			must(phone.Incr(day, 2))
			must(watch.Incr(day, 1))
			must(watch.Incr(day, 1))
			must(phone.Add("enabled_nudges", "hydration"))
			must(watch.Add("enabled_nudges", "bedtime"))
			must(watch.Set("units", "imperial"))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var wg sync.WaitGroup
			for _, dev := range order {
				sess := sessions[dev]
				wg.Add(1)
				go func() { defer wg.Done(); sess.Run(ctx) }()
				pbtest.WaitFor(t, 30*time.Second, dev+"'s edits acknowledged", func() bool { return sess.Pending() == 0 })
			}
			var server map[string]any
			pbtest.WaitFor(t, 30*time.Second, "the replicas and the server to agree", func() bool {
				server = nil
				pbtest.Do(t, "GET", s.URL+"/v1/users/me/profile", tok, "", nil).JSON(t, &server)
				p, _ := json.Marshal(phone.Profile())
				w, _ := json.Marshal(watch.Profile())
				b, _ := json.Marshal(server)
				return sameJSON(p, b) && sameJSON(w, b)
			}, func() string {
				return fmt.Sprintf("phone %v\nwatch %v\nserver %v", phone.Profile(), watch.Profile(), server)
			})
			cancel()
			wg.Wait()
			b, _ := json.Marshal(server)
			for _, want := range []string{`"2026-11-29":4`, `"hydration"`, `"bedtime"`, `"units":"imperial"`} {
				if !bytes.Contains(b, []byte(want)) {
					t.Errorf("the merged profile %s lacks %s", b, want)
				}
			}
			for _, sess := range sessions {
				sess.Close()
			}
		})
	}
}

// TestSessionKeepsStateAcrossRestarts: a session reopened on its StateDir resumes from its
// cursor (no snapshot) with its replica.
func TestSessionKeepsStateAcrossRestarts(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	tok := s.UserToken(t, "kim")
	dir := t.TempDir()
	var snapshots atomic.Int32
	open := func() *client.Session {
		sess, err := client.New(s.URL, tok).Sync(client.SyncOptions{Device: "phone", StateDir: dir,
			OnSnapshot: func(client.Snapshot) { snapshots.Add(1) }})
		if err != nil {
			t.Fatal(err)
		}
		return sess
	}
	sess := open()
	if err := sess.Set("goals.sleep_minutes", 480); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sess.Run(ctx) }()
	pbtest.WaitFor(t, 30*time.Second, "the edit acknowledged and echoed", func() bool {
		return sess.Pending() == 0 && sess.Cursor() == feed(t, s, tok)[len(feed(t, s, tok))-1].Cursor
	})
	cancel()
	<-done
	cursor := sess.Cursor()
	if err := sess.Close(); err != nil {
		t.Fatal(err)
	}
	sess = open()
	defer sess.Close()
	if sess.Cursor() != cursor || fmt.Sprint(sess.Profile()["goals"]) != "map[sleep_minutes:480]" {
		t.Fatalf("reopened: cursor %q (want %q), profile %v", sess.Cursor(), cursor, sess.Profile())
	}
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	go sess.Run(ctx)
	pbtest.Do(t, "POST", s.URL+"/v1/users/me/profile/ops", tok, "application/json",
		[]byte(`{"ops":[{"id":"web:1","ts":{"wall":`+fmt.Sprint(time.Now().UnixMilli())+`,"logical":0,"node":"web"},"kind":"set","path":"units","value":"metric"}]}`))
	pbtest.WaitFor(t, 30*time.Second, "the web's edit on the phone", func() bool { return sess.Profile()["units"] == "metric" })
	if n := snapshots.Load(); n != 1 {
		t.Errorf("%d snapshots; only the first connection should have had one", n)
	}
}

// TestTokenSourceRenewsAnExpiredToken: the server closes a connection when its token
// expires (4001); a session with a TokenSource reconnects with a fresh token and resumes
// from its cursor, without a second snapshot.
func TestTokenSourceRenewsAnExpiredToken(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	tok := s.UserToken(t, "lou")
	var snapshots, tokens atomic.Int32
	var rec recorder
	sess, err := client.New(s.URL, "").Sync(client.SyncOptions{Device: "phone", MinBackoff: 10 * time.Millisecond,
		TokenSource: func(context.Context) (string, error) {
			tokens.Add(1)
			return s.Issuer.Mint(auth.TokenRequest{Subject: "lou", Role: pulsebase.RoleUser, TTL: 2 * time.Second}, time.Now())
		},
		OnSnapshot: func(client.Snapshot) { snapshots.Add(1) },
		OnChange:   rec.add,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- sess.Run(ctx) }()
	pbtest.WaitFor(t, 30*time.Second, "a second token", func() bool { return tokens.Load() >= 2 })
	// Still connected and current: a profile edit from elsewhere arrives.
	pbtest.Do(t, "POST", s.URL+"/v1/users/me/profile/ops", tok, "application/json",
		[]byte(`{"ops":[{"id":"web:1","ts":{"wall":`+fmt.Sprint(time.Now().UnixMilli())+`,"logical":0,"node":"web"},"kind":"set","path":"units","value":"metric"}]}`))
	pbtest.WaitFor(t, 30*time.Second, "the edit", func() bool { return sess.Profile()["units"] == "metric" })
	cancel()
	<-done
	if n := snapshots.Load(); n != 1 {
		t.Errorf("%d snapshots, want 1: a renewed token resumes from the cursor", n)
	}
}
