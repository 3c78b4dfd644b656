package loadgen

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/auth"
	"github.com/pulsebase/pulsebase/internal/pbtest"
)

// TestWorkloadMarker checks that a marked user's requests carry a valid marker sample in
// the marker minute as their last sample, under the id of the sample it replaces, and
// that other users' requests are untouched.
func TestWorkloadMarker(t *testing.T) {
	now := time.Now()
	for _, batch := range []int{1, 7} {
		t.Run(fmt.Sprintf("batch %d", batch), func(t *testing.T) {
			w, err := NewWorkload(batch, 2, now)
			if err != nil {
				t.Fatal(err)
			}
			plain := w.Body(1) // user 1, before any mark
			minute := now.Add(-5 * time.Minute).Truncate(time.Minute)
			w.Mark(0, minute)
			if got, want := w.MarkerKey(0), fmt.Sprintf("heart_rate/1m/%020d", minute.Unix()); got != want {
				t.Errorf("got marker key %q, want %q", got, want)
			}
			if w.MarkerKey(1) != "" {
				t.Errorf("got marker key %q for an unmarked user, want none", w.MarkerKey(1))
			}
			if got := string(w.Body(1)); got != string(plain) {
				t.Errorf("marking user 0 changed user 1's body")
			}
			for n := range int64(2 * templates) {
				var body struct{ Samples []pulsebase.SampleInput }
				if err := json.Unmarshal(w.Body(n), &body); err != nil {
					t.Fatalf("request %d: body is not JSON: %v", n, err)
				}
				if len(body.Samples) != batch {
					t.Fatalf("request %d: got %d samples, want %d", n, len(body.Samples), batch)
				}
				last := body.Samples[batch-1]
				if want := w.MsgID(n, batch-1); last.ID != want {
					t.Errorf("request %d: got last id %q, want %q", n, last.ID, want)
				}
				if _, problems := pulsebase.Normalize(last, now); len(problems) > 0 {
					t.Fatalf("request %d: marker %+v: %v", n, last, problems)
				}
				marked := last.Type == MarkerType && last.Source == "bench-marker"
				if marked != (w.User(n) == 0) {
					t.Fatalf("request %d of user %d: got marker %v, want one only for user 0", n, w.User(n), marked)
				}
				if marked {
					start, err := time.Parse(time.RFC3339, last.Start)
					if err != nil || !start.Truncate(time.Minute).Equal(minute) {
						t.Errorf("request %d: marker starts at %s, want within %s", n, last.Start, minute)
					}
				}
			}
		})
	}
}

func TestParseMetrics(t *testing.T) {
	text := `# HELP pulsebase_processor_samples_total Samples handled.
# TYPE pulsebase_processor_samples_total counter
pulsebase_processor_samples_total{outcome="applied",type="heart_rate"} 1200
pulsebase_processor_samples_total{outcome="backfill",type="steps"} 300.5
pulsebase_processor_samples_total_extra 99
pulsebase_processor_lag_messages{partition="p00"} 12
pulsebase_processor_lag_messages{partition="odd } \" label"} 40 1700000000000
pulsebase_processor_lag_messages{partition="p02"} 3
pulsebase_sync_connections 7
malformed{ 3
`
	s, err := parseMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if s.Processed != 1500.5 || s.Lag != 40 || s.SyncConnections != 7 {
		t.Errorf("got processed %v, lag %v, sync connections %v; want 1500.5, 40 (the largest partition), 7", s.Processed, s.Lag, s.SyncConnections)
	}
}

func TestLagBounded(t *testing.T) {
	line := func(slope, base float64) []LagPoint {
		var l []LagPoint
		for i := 1; i <= 10; i++ {
			l = append(l, LagPoint{T: float64(i), Messages: int64(base + slope*float64(i))})
		}
		return l
	}
	for _, c := range []struct {
		name    string
		lag     []LagPoint
		rate    float64
		bounded bool
	}{
		{"flat", line(0, 500), 10_000, true},
		{"draining", line(-300, 5000), 10_000, true},
		{"growing faster than a second of load", line(5_000, 0), 10_000, false},
		{"growing slowly", line(100, 0), 10_000, true},
		{"sawtooth", []LagPoint{{6, 0}, {7, 4000}, {8, 0}, {9, 4000}, {10, 0}}, 10_000, true},
		{"one point in the second half", []LagPoint{{1, 0}, {9, 1e6}}, 10_000, true},
		{"growing at a low rate: at least 1,000", line(150, 0), 100, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			growth, bounded := lagBounded(c.lag, 10, c.rate)
			if bounded != c.bounded {
				t.Errorf("got growth %v, bounded %v; want bounded %v", growth, bounded, c.bounded)
			}
		})
	}
	if g, _ := lagBounded(line(5_000, 0), 10, 10_000); math.Abs(g-25_000) > 1 {
		t.Errorf("got growth %v over the second half of 10 s at 5,000/s, want 25,000", g)
	}
}

// newTestSubscribers is Subscribers for users 0 and 1 with one subscriber each and no
// connection: what arrive and Acked pair does not depend on one.
func newTestSubscribers() (*Subscribers, []*subConn) {
	s := &Subscribers{count: 2, marked: map[int]*markedUser{}, hist: hdrhistogram.New(histMin, histMax, 3)}
	var subs []*subConn
	for u := range 2 {
		c := &subConn{user: u}
		s.marked[u] = &markedUser{key: "k", subs: []*subConn{c}}
		s.conns = append(s.conns, c)
		subs = append(subs, c)
	}
	return s, subs
}

func TestSubscribersPairAcksWithDeliveries(t *testing.T) {
	s, subs := newTestSubscribers()
	t0 := time.Now()
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	s.Acked(0, ms(0))
	s.Acked(0, ms(10))
	s.Acked(5, ms(10)) // an unmarked user: ignored
	if got := s.missing(); got != 2 {
		t.Fatalf("got %d missing after two acks, want 2", got)
	}
	// One change says the first two markers are applied.
	s.arrive(subs[0], s.marked[0], 2, ms(300))
	// User 1's change comes before its ack (the processor was quicker than the answer).
	s.arrive(subs[1], s.marked[1], 1, ms(100))
	if got := s.Deliveries(); got != 2 {
		t.Errorf("got %d deliveries, want 2 (user 1's waits for its ack)", got)
	}
	s.Acked(1, ms(120))
	// A repeated change of the same count counts nothing again.
	s.arrive(subs[0], s.marked[0], 2, ms(400))
	r := s.Report()
	if r.Deliveries != 3 || r.Missing != 0 || r.Markers != 3 || r.MarkedUsers != 2 {
		t.Errorf("got %+v, want 3 markers, 3 deliveries, none missing, 2 users", r)
	}
	l := r.AckToDelivery
	// 300 ms, 290 ms, and user 1's delivery before its ack counts as the least time.
	if l.Count != 3 || l.Max < 299 || l.Max > 301 || l.P50 < 289 || l.P50 > 291 || l.P50 > l.P99 {
		t.Errorf("got latency %+v, want 3 of which max 300 ms and median 290 ms", l)
	}
	if r.Held != 2 {
		t.Errorf("got %d held, want 2", r.Held)
	}
}

func TestSearchMax(t *testing.T) {
	crit := NewCriteria(100 * time.Millisecond)
	// A server that holds up to capacity samples/s: the p99 goes over the bound above it.
	server := func(capacity float64, steps *[]float64) func(context.Context, float64) (*Report, error) {
		return func(_ context.Context, rate float64) (*Report, error) {
			*steps = append(*steps, rate)
			p99 := 20.0
			if rate > capacity {
				p99 = 900
			}
			return &Report{Samples: SampleCounts{Offered: 1000, Accepted: 1000}, AcceptedPerSec: rate, Latency: Latency{P99: p99},
				Pipeline: &Pipeline{LagBounded: true}}, nil
		}
	}
	t.Run("doubling then bisection", func(t *testing.T) {
		var steps []float64
		var heard int
		fm, reports, err := SearchMax(context.Background(), Search{Start: 1000, MaxSteps: 20}, crit, server(23_000, &steps), func(Step) { heard++ })
		if err != nil {
			t.Fatal(err)
		}
		if want := []float64{1000, 2000, 4000, 8000, 16_000, 32_000}; len(steps) < len(want) || fmt.Sprint(steps[:len(want)]) != fmt.Sprint(want) {
			t.Errorf("got rates %v, want doubling %v first", steps, want)
		}
		if fm.MaxRate > 23_000 || fm.MaxRate < 23_000/1.1 {
			t.Errorf("got max rate %v, want within 10%% below 23,000 (steps %v)", fm.MaxRate, steps)
		}
		if len(reports) != len(fm.Steps) || heard != len(fm.Steps) || fm.Steps[fm.Best].Rate != fm.MaxRate || !fm.Steps[fm.Best].Pass {
			t.Errorf("got %d reports, %d heard, best %d for %d steps; want them to agree", len(reports), heard, fm.Best, len(fm.Steps))
		}
		if !strings.Contains(fm.Stopped, "bracketed") {
			t.Errorf("got stopped %q, want bracketed", fm.Stopped)
		}
		var out strings.Builder
		if err := (&Summary{Runs: reports, FindMax: fm}).WriteFindMax(&out); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), "highest sustained rate "+thousands(fm.MaxRate)) || !strings.Contains(out.String(), "fail: ingest p99 900.0 ms > 100 ms") {
			t.Errorf("got table:\n%s", out.String())
		}
	})
	t.Run("halving from a failing start", func(t *testing.T) {
		var steps []float64
		fm, _, err := SearchMax(context.Background(), Search{Start: 10_000, MaxSteps: 20}, crit, server(3000, &steps), nil)
		if err != nil {
			t.Fatal(err)
		}
		if steps[1] != 5000 || steps[2] != 2500 || fm.MaxRate < 3000/1.1 || fm.MaxRate > 3000 {
			t.Errorf("got rates %v and max %v, want 10,000, 5,000, 2,500, … and a max within 10%% below 3,000", steps, fm.MaxRate)
		}
	})
	t.Run("nothing passes", func(t *testing.T) {
		var steps []float64
		fm, _, err := SearchMax(context.Background(), Search{Start: 1000, MaxSteps: 20, MinRate: 200}, crit, server(0, &steps), nil)
		if err != nil {
			t.Fatal(err)
		}
		if fm.Best != -1 || fm.MaxRate != 0 || fmt.Sprint(steps) != "[1000 500 250]" || !strings.Contains(fm.Stopped, "lowest") {
			t.Errorf("got best %d, max %v, rates %v, stopped %q; want none after 1000, 500, 250", fm.Best, fm.MaxRate, steps, fm.Stopped)
		}
	})
	t.Run("step bound", func(t *testing.T) {
		var steps []float64
		fm, _, err := SearchMax(context.Background(), Search{Start: 1000, MaxSteps: 3}, crit, server(1e9, &steps), nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(steps) != 3 || fm.MaxRate != 4000 || fm.Stopped != "after 3 steps" {
			t.Errorf("got rates %v, max %v, stopped %q; want 3 steps to 4,000", steps, fm.MaxRate, fm.Stopped)
		}
	})
	t.Run("rate bound", func(t *testing.T) {
		var steps []float64
		fm, _, err := SearchMax(context.Background(), Search{Start: 1000, MaxSteps: 10, MaxRate: 5000}, crit, server(1e9, &steps), nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(steps) != 3 || !strings.Contains(fm.Stopped, "highest rate") {
			t.Errorf("got rates %v, stopped %q; want 1,000, 2,000, 4,000 then the bound", steps, fm.Stopped)
		}
	})
}

func TestCriteriaJudge(t *testing.T) {
	crit := NewCriteria(50 * time.Millisecond)
	good := func() *Report {
		return &Report{Samples: SampleCounts{Offered: 1000, Accepted: 1000}, Latency: Latency{P99: 10},
			Pipeline: &Pipeline{LagBounded: true},
			Sync:     &SyncReport{Deliveries: 100, AckToDelivery: Latency{P99: 40}}}
	}
	for _, c := range []struct {
		name   string
		change func(r *Report)
		pass   bool
		reason string
	}{
		{"all good", func(*Report) {}, true, "ack→delivery p99 40.0 ms"},
		{"too few accepted", func(r *Report) { r.Samples.Accepted = 900 }, false, "accepted 90.0%"},
		{"lag growing", func(r *Report) { r.Pipeline.LagBounded, r.Pipeline.LagGrowth = false, 50_000 }, false, "lag grew by 50,000"},
		{"no delivery", func(r *Report) { r.Sync.Deliveries = 0 }, false, "no marker"},
		{"deliveries missing", func(r *Report) { r.Sync.Missing = 5 }, false, "5 of 105 deliveries missing"},
		{"delivery p99 over", func(r *Report) { r.Sync.AckToDelivery.P99 = 60 }, false, "ack→delivery p99 60.0 ms > 50 ms"},
		{"no subscribers: ingest p99", func(r *Report) { r.Sync, r.Latency.P99 = nil, 70 }, false, "ingest p99 70.0 ms > 50 ms"},
		{"nothing offered", func(r *Report) { r.Samples = SampleCounts{} }, false, "nothing offered"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := good()
			c.change(r)
			pass, why := crit.Judge(r)
			if pass != c.pass || !strings.Contains(why, c.reason) {
				t.Errorf("got %v %q, want %v and %q", pass, why, c.pass, c.reason)
			}
		})
	}
}

func TestNextRate(t *testing.T) {
	inf := math.Inf(1)
	for _, c := range []struct {
		lo, hi, want float64
		over         bool
	}{
		{1000, inf, 2000, false},
		{0, 1000, 500, false},
		{0, 333, 167, false},
		{16_000, 32_000, 24_000, false},
		{20_000, 22_000, 0, true},
		{24_000, 28_000, 26_000, false},
		{10, 12, 11, false},
	} {
		got, why := nextRate(c.lo, c.hi, 0.1)
		if got != c.want || (why != "") != c.over {
			t.Errorf("nextRate(%v, %v): got %v %q, want %v (over: %v)", c.lo, c.hi, got, why, c.want, c.over)
		}
	}
}

func TestWSConnsPerUser(t *testing.T) {
	for _, c := range []struct {
		rate         float64
		batch, users int
		want         int
	}{
		{0, 500, 10, 1},        // closed loop
		{2000, 50, 3, 1},       // 13.3 frames/s each
		{10_000, 50, 3, 5},     // 66.7 frames/s each
		{100_000, 500, 100, 1}, // 2 frames/s each
	} {
		if got := WSConnsPerUser(c.rate, c.batch, c.users); got != c.want {
			t.Errorf("WSConnsPerUser(%v, %d, %d): got %d, want %d", c.rate, c.batch, c.users, got, c.want)
		}
	}
	w, err := NewWorkload(10, 1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewWSTarget("http://127.0.0.1:1", []string{"t"}, w, WSOptions{Rate: 10 * 15 * 30, Timeout: time.Second}); err == nil {
		t.Error("NewWSTarget: got no error for 30 connections for one user, over the gateway's 20")
	}
}

// TestWSTargetSubscribersAndMetrics runs a short open loop over sync WebSocket
// connections to a whole server in this process, with two subscribers and the server's
// metrics, and checks every figure is there and consistent; then that a sending
// connection the server lost is opened again by the next request.
func TestWSTargetSubscribersAndMetrics(t *testing.T) {
	srv := pbtest.MustOpenServer(t)
	const users, batch = 2, 20
	w, err := NewWorkload(batch, users, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tokens := make([]string, users)
	for u := range tokens {
		tokens[u], err = srv.Issuer.Mint(auth.TokenRequest{Subject: w.Subject(u), Role: pulsebase.RoleUser, TTL: time.Hour}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	tg, err := NewWSTarget(srv.URL, tokens, w, WSOptions{Rate: 400, Reserved: 1, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	if err := tg.WarmUp(ctx, 4); err != nil {
		t.Fatal(err)
	}
	subs, err := NewSubscribers(ctx, w, SubscriberOptions{BaseURL: srv.URL, Tokens: tokens, Count: 2, Timeout: 20 * time.Second, Minutes: &MarkerMinutes{}})
	if err != nil {
		t.Fatal(err)
	}
	defer subs.Close()
	var progress int
	// 400 samples/s in batches of 20 is 40 requests in 2 s.
	r, err := Run(ctx, tg, w, Options{Duration: 2 * time.Second, Rate: 400, Concurrency: 16, Metrics: NewMetrics(srv.URL),
		MetricsEvery: 250 * time.Millisecond, Subscribers: subs, DeliveryTimeout: 20 * time.Second,
		Progress: func(p Progress) { progress++ }, ProgressEvery: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	acks := r.Requests.ByStatus["ack"]
	if r.Target != "ws" || r.Requests.Offered != 40 || acks == 0 || acks != r.Requests.Sent || r.Samples.Accepted != acks*batch {
		t.Errorf("got %s run, requests %+v, %d accepted; want ws, 40 offered, every one sent acked with its %d samples; errors %q",
			r.Target, r.Requests, r.Samples.Accepted, batch, r.Errors)
	}
	if p := r.Pipeline; p == nil || len(p.Lag) < 4 || p.Processed > r.Samples.Accepted || p.SyncConnections < 4 {
		t.Errorf("got pipeline %+v, want lag readings, processed ≤ accepted and 4 sync connections (2 sending, 2 subscribing)", p)
	}
	y := r.Sync
	if y == nil || y.Held != 2 || y.Markers != acks || y.Deliveries != acks || y.Missing != 0 {
		t.Fatalf("got sync %+v, want 2 held and each of the %d markers delivered once", y, acks)
	}
	if l := y.AckToDelivery; !(0 < l.P50 && l.P50 <= l.P95 && l.P95 <= l.P99 && l.P99 <= l.Max) {
		t.Errorf("got ack→delivery %+v, want ordered percentiles", l)
	}
	if progress == 0 {
		t.Error("got no progress report")
	}
	// The server closes a sending connection (here: the connection is dropped under
	// it); the next request opens it again.
	tg.conns[0][0].close()
	if o := tg.Send(ctx, 1_000_000); o.Status != "ack" || o.Accepted != batch {
		t.Errorf("after the connection was lost: got %+v, want an ack of %d samples", o, batch)
	}
}
