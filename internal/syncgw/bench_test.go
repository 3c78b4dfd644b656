package syncgw_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/agg"
	"github.com/pulsebase/pulsebase/internal/pbtest"
	"github.com/pulsebase/pulsebase/internal/processor"
)

// The benchmarks of issue [4] (docs/benchmarks.md): connections held idle and the
// server's memory per connection, latency from a sample's ack to its change at a
// connected client, and the rate at which the gateway fans changes out. Sizes come from
// the environment so that `go test -bench` runs quickly by default:
//
//	PULSEBASE_BENCH_CONNS  idle connections (2,000; the issue asks about 15,000)
//	PULSEBASE_BENCH_USERS  connected users of the latency and fan-out runs (1,000)
//	PULSEBASE_BENCH_RATE   samples/s offered in the latency run (5,000)
//	PULSEBASE_BENCH_HEAPPROFILE  a file for a heap profile taken while the idle connections are open

// benchConn is a raw client connection that says hello and returns the welcome.
func benchConn(b testing.TB, url, token, device string) (*websocket.Conn, map[string]any) {
	ws, w, err := dialHello(url, token, device)
	if err != nil {
		b.Fatal(err)
	}
	return ws, w
}

// dialHello opens a sync connection, says hello and returns the welcome.
func dialHello(url, token, device string) (*websocket.Conn, map[string]any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{"pulsebase.sync.v1"}})
	if err != nil {
		return nil, nil, err
	}
	ws.SetReadLimit(64 << 20)
	hello, _ := json.Marshal(map[string]any{"type": "hello", "token": token, "device": device, "cursor": nil})
	if err := ws.Write(ctx, websocket.MessageText, hello); err != nil {
		ws.CloseNow()
		return nil, nil, err
	}
	_, m, err := ws.Read(ctx)
	if err != nil {
		ws.CloseNow()
		return nil, nil, err
	}
	var w map[string]any
	if err := json.Unmarshal(m, &w); err != nil || w["type"] != "welcome" {
		ws.CloseNow()
		return nil, nil, fmt.Errorf("no welcome: %s", m)
	}
	return ws, w, nil
}

func syncURL(s *pbtest.Server) string { return "ws" + strings.TrimPrefix(s.URL, "http") + "/v1/sync" }

// arrivals pairs the ack of what a benchmark sent with the arrival of what it caused at a
// device, in whichever order the two happen, and records the time between them.
type arrivals struct {
	mu      sync.Mutex
	acked   map[string]time.Time // key → ack, still waiting for its arrival
	arrived map[string]time.Time // key → arrival, when before the ack
	hist    *hdrhistogram.Histogram
}

func newArrivals() *arrivals {
	return &arrivals{acked: map[string]time.Time{}, arrived: map[string]time.Time{}, hist: hdrhistogram.New(1, 60_000_000, 3)}
}

func (a *arrivals) record(d time.Duration) { a.hist.RecordValue(max(int64(d/time.Microsecond), 1)) }

// ack notes that k was acked at t.
func (a *arrivals) ack(k string, t time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if got, ok := a.arrived[k]; ok {
		a.record(got.Sub(t))
		delete(a.arrived, k)
	} else {
		a.acked[k] = t
	}
}

// arrive notes that what k caused arrived at t.
func (a *arrivals) arrive(k string, t time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if at, ok := a.acked[k]; ok {
		a.record(t.Sub(at))
		delete(a.acked, k)
	} else {
		a.arrived[k] = t
	}
}

// wait waits up to timeout for every acked key to arrive and returns how many did not.
func (a *arrivals) wait(timeout time.Duration) int {
	for deadline := time.Now().Add(timeout); ; time.Sleep(50 * time.Millisecond) {
		a.mu.Lock()
		n := len(a.acked)
		a.mu.Unlock()
		if n == 0 || time.Now().After(deadline) {
			return n
		}
	}
}

// report reports the latency percentiles with the given prefix.
func (a *arrivals) report(b *testing.B, prefix string) {
	b.ReportMetric(float64(a.hist.ValueAtQuantile(50))/1000, prefix+"-p50-ms")
	b.ReportMetric(float64(a.hist.ValueAtQuantile(90))/1000, prefix+"-p90-ms")
	b.ReportMetric(float64(a.hist.ValueAtQuantile(99))/1000, prefix+"-p99-ms")
}

// BenchmarkSyncLatency offers samples at PULSEBASE_BENCH_RATE for 10 s to users who each
// have a connected device, and reports the time from each sample's ack (ingest durably
// stored it) to the change of its minute bucket arriving at the device: e2e-p50-ms and
// e2e-p99-ms. gw-p50-ms and gw-p99-ms are the gateway's part: from the change's storage
// in CHANGES to its frame written to the socket. The processor commits every 250 ms, as
// in production.
func BenchmarkSyncLatency(b *testing.B) {
	rate := pbtest.BenchEnv("PULSEBASE_BENCH_RATE", 5000)
	users := pbtest.BenchEnv("PULSEBASE_BENCH_USERS", 1000)
	for range b.N {
		b.StopTimer()
		s := pbtest.MustOpenServerOpts(b, pbtest.Options{Flush: 250 * time.Millisecond})
		ids := make([]string, users)
		lat := newArrivals() // keyed by user + bucket key
		ctx, cancel := context.WithCancel(context.Background())
		var readers sync.WaitGroup
		for u := range users {
			ws, w := benchConn(b, syncURL(s), s.UserToken(b, fmt.Sprintf("lat-%05d", u)), "phone")
			ids[u] = w["user"].(string)
			user := ids[u]
			readers.Go(func() {
				defer ws.CloseNow()
				for {
					_, m, err := ws.Read(ctx)
					if err != nil {
						return
					}
					now := time.Now()
					var f struct{ Kind, Key string }
					if json.Unmarshal(m, &f) != nil || f.Kind != "series" || !strings.Contains(f.Key, "/1m/") {
						continue
					}
					lat.arrive(user+f.Key, now)
				}
			})
		}
		var before dto.Metric
		s.Metrics.SyncDeliveryLatency.Write(&before)
		b.StartTimer()
		const duration = 10 * time.Second
		const perTick = 50
		tick := time.NewTicker(time.Second * perTick / time.Duration(rate))
		var wg sync.WaitGroup
		next := 0
		base := time.Now().Add(-time.Minute).Truncate(time.Minute)
		for deadline := time.Now().Add(duration); time.Now().Before(deadline); {
			<-tick.C
			for range perTick {
				u := next % users
				at := base.Add(-time.Duration(next/users) * time.Minute)
				next++
				wg.Go(func() {
					v, _ := json.Marshal(60 + u%40)
					in := []pulsebase.SampleInput{{Type: "heart_rate", Value: v, Start: at.Format(time.RFC3339), Source: "bench"}}
					if _, err := s.Ingest.Ingest(ctx, ids[u], pulsebase.Principal{Subject: ids[u], Role: pulsebase.RoleUser}, in); err != nil {
						b.Error(err)
						return
					}
					lat.ack(ids[u]+processor.BucketKey("heart_rate", agg.Minute, at, ""), time.Now())
				})
			}
		}
		tick.Stop()
		wg.Wait()
		missing := lat.wait(30 * time.Second) // the last changes
		b.StopTimer()
		cancel()
		readers.Wait()
		var after dto.Metric
		s.Metrics.SyncDeliveryLatency.Write(&after)
		h := pbtest.HistogramSince(&before, &after)
		b.ReportMetric(float64(next)/duration.Seconds(), "offered/s")
		lat.report(b, "e2e")
		b.ReportMetric(pbtest.Quantile(h, 0.5)*1000, "gw-p50-ms")
		b.ReportMetric(pbtest.Quantile(h, 0.99)*1000, "gw-p99-ms")
		b.ReportMetric(float64(missing), "never-arrived")
	}
}

// BenchmarkFanout measures how fast the gateway delivers changes: PULSEBASE_BENCH_USERS
// users with three connected devices each (a watch, a phone and a web dashboard);
// messages of 100 changes, sealed beforehand, are published on their feeds (as the
// processor's commits are) as fast as the broker takes them. delivered/s counts the
// change frames the devices received per second, from the first publish to the last
// frame; the devices' reading runs in this process too, on the same two cores.
func BenchmarkFanout(b *testing.B) {
	users := pbtest.BenchEnv("PULSEBASE_BENCH_USERS", 1000)
	const devices, perMsg, rounds = 3, 100, 5
	for range b.N {
		b.StopTimer()
		s := pbtest.MustOpenServer(b)
		ids := make([]string, users)
		var received atomic.Int64
		var lost atomic.Value // why a device's connection ended early
		want := int64(users * devices * perMsg * rounds)
		done := make(chan struct{})
		ctx, cancel := context.WithCancel(context.Background())
		var readers sync.WaitGroup
		for u := range users {
			tok := s.UserToken(b, fmt.Sprintf("fan-%05d", u)) // consenting: series changes of a category without consent are not sent
			for d := range devices {
				ws, w := benchConn(b, syncURL(s), tok, fmt.Sprintf("dev-%d", d))
				ids[u] = w["user"].(string)
				readers.Go(func() {
					defer ws.CloseNow()
					for {
						_, r, err := ws.Reader(ctx)
						if err != nil {
							if ctx.Err() == nil {
								lost.Store(err.Error())
							}
							return
						}
						io.Copy(io.Discard, r)
						if received.Add(1) == want {
							close(done)
						}
					}
				})
			}
		}
		changes := make([]processor.Change, perMsg)
		for i := range changes {
			changes[i] = processor.Change{Kind: "series", Key: fmt.Sprintf("steps/1m/%020d", 1795939200+60*i),
				Data: map[string]any{"start": "2026-11-29T08:00:00Z", "count": 3, "sum": 250, "min": 50, "max": 120, "mean": 83.3, "last": 80}}
		}
		body, err := json.Marshal(processor.ChangeBatch{Changes: changes})
		if err != nil {
			b.Fatal(err)
		}
		var msgs []*nats.Msg
		for r := range rounds {
			for u := range users {
				keys, err := s.Vault.UserKeys(ctx, ids[u])
				if err != nil {
					b.Fatal(err)
				}
				id := fmt.Sprintf("%s-fan-%d", ids[u], r)
				ct, err := keys.Seal("change", id, body)
				if err != nil {
					b.Fatal(err)
				}
				msgs = append(msgs, &nats.Msg{Subject: "changes." + ids[u], Data: ct, Header: nats.Header{jetstream.MsgIDHeader: []string{id}}})
			}
		}
		js := s.Broker.JetStream()
		runtime.GC()
		b.StartTimer()
		start := time.Now()
		for _, m := range msgs {
			if _, err := js.PublishMsgAsync(m); err != nil {
				b.Fatal(err)
			}
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-time.After(120 * time.Second):
			b.Fatal("the broker did not take the messages")
		}
		published := time.Since(start)
		select {
		case <-done:
		case <-time.After(120 * time.Second):
			b.Fatalf("only %d of %d changes arrived (a connection ended: %v); the server logged:\n%s", received.Load(), want, lost.Load(), s.Logs.String())
		}
		elapsed := time.Since(start)
		b.StopTimer()
		cancel()
		readers.Wait()
		b.ReportMetric(float64(want)/elapsed.Seconds(), "delivered/s")
		b.ReportMetric(float64(users*perMsg*rounds)/published.Seconds(), "published/s")
		b.ReportMetric(float64(users*devices), "connections")
	}
}

// Environment of the load-generating children of BenchmarkIdleConnections.
const (
	idleChildTokens = "PULSEBASE_IDLE_TOKENS" // a file of tokens, one a line
	idleChildURL    = "PULSEBASE_IDLE_URL"
	idleChildFrom   = "PULSEBASE_IDLE_FROM" // the child's lines of the file: [from, to)
	idleChildTo     = "PULSEBASE_IDLE_TO"
)

// TestIdleConnectionsChild is the load generator of BenchmarkIdleConnections when run as
// its child: it opens a connection for each of its tokens, prints "ready", and keeps them
// open (answering pings) until killed. Otherwise it does nothing.
func TestIdleConnectionsChild(t *testing.T) {
	path := os.Getenv(idleChildTokens)
	if path == "" {
		t.Skip("the load generator of BenchmarkIdleConnections")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	from, _ := strconv.Atoi(os.Getenv(idleChildFrom))
	to, _ := strconv.Atoi(os.Getenv(idleChildTo))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	var failed atomic.Value
	for _, tok := range lines[from:to] {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			ws, _, err := dialHello(os.Getenv(idleChildURL), tok, "phone")
			if err != nil {
				failed.Store(err.Error())
				return
			}
			go func() {
				for {
					if _, _, err := ws.Read(context.Background()); err != nil {
						return
					}
				}
			}()
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		fmt.Println("failed:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	select {}
}

// BenchmarkIdleConnections holds PULSEBASE_BENCH_CONNS idle sync connections, one per
// user, opened by child processes of at most 5,000 connections each (a process may hold
// few open files here), and reports the server's memory per connection: rss-B/conn from
// the process's resident set, heap+stack-B/conn from the Go runtime. Every user connects
// once before, so that what users cost (their keys, the caches) is not counted.
func BenchmarkIdleConnections(b *testing.B) {
	conns := pbtest.BenchEnv("PULSEBASE_BENCH_CONNS", 2000)
	const perChild = 5000
	for range b.N {
		b.StopTimer()
		s := pbtest.MustOpenServer(b)
		var toks strings.Builder
		for u := range conns {
			toks.WriteString(s.Token(b, fmt.Sprintf("idle-%06d", u), pulsebase.RoleUser, "") + "\n")
		}
		path := b.TempDir() + "/tokens"
		if err := os.WriteFile(path, []byte(toks.String()), 0o600); err != nil {
			b.Fatal(err)
		}
		connect := func() (stop func()) {
			var procs []*exec.Cmd
			for from := 0; from < conns; from += perChild {
				cmd := exec.Command(os.Args[0], "-test.run=^TestIdleConnectionsChild$", "-test.count=1")
				cmd.Env = append(os.Environ(), idleChildTokens+"="+path, idleChildURL+"="+syncURL(s),
					idleChildFrom+"="+strconv.Itoa(from), idleChildTo+"="+strconv.Itoa(min(from+perChild, conns)))
				out, err := cmd.StdoutPipe()
				if err != nil {
					b.Fatal(err)
				}
				cmd.Stderr = os.Stderr
				if err := cmd.Start(); err != nil {
					b.Fatal(err)
				}
				procs = append(procs, cmd)
				sc := bufio.NewScanner(out)
				if !sc.Scan() || sc.Text() != "ready" {
					b.Fatalf("a load generator failed: %s", sc.Text())
				}
				go io.Copy(io.Discard, out)
			}
			var once sync.Once
			kill := func() {
				once.Do(func() {
					for _, p := range procs {
						p.Process.Kill()
						p.Wait()
					}
				})
			}
			b.Cleanup(kill)
			return kill
		}
		settle := func(open int) {
			pbtest.WaitFor(b, 120*time.Second, fmt.Sprintf("%d connections", open), func() bool {
				return int(gauge(s)) == open
			}, func() string { return fmt.Sprintf("%v connections", gauge(s)) })
		}
		stop := connect() // every user once: users, keys and caches exist from now on
		settle(conns)
		stop()
		settle(0)
		rss0, mem0, g0 := memory()
		b.StartTimer()
		stop = connect()
		settle(conns)
		b.StopTimer()
		rss1, mem1, g1 := memory()
		if path := os.Getenv("PULSEBASE_BENCH_HEAPPROFILE"); path != "" {
			f, err := os.Create(path)
			if err != nil {
				b.Fatal(err)
			}
			pprof.Lookup("heap").WriteTo(f, 0)
			f.Close()
		}
		stop()
		b.ReportMetric(float64(conns), "connections")
		b.ReportMetric(float64(rss1-rss0)/float64(conns), "rss-B/conn")
		b.ReportMetric(float64(mem1-mem0)/float64(conns), "heap+stack-B/conn")
		b.ReportMetric(float64(g1-g0)/float64(conns), "goroutines/conn")
	}
}

// gauge returns how many sync connections s serves.
func gauge(s *pbtest.Server) float64 {
	var m dto.Metric
	s.Metrics.SyncConnections.Write(&m)
	return m.GetGauge().GetValue()
}

// memory returns this process's resident set and the Go heap and stacks in use, after a
// collection that returns what it can to the system, and the number of goroutines.
func memory() (rss, heapStack uint64, goroutines int) {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			rss = kb << 10
		}
	}
	return rss, ms.HeapInuse + ms.StackInuse, runtime.NumGoroutine()
}
