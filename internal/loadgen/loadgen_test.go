package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
)

// TestWorkloadBodiesAreValidAndUnique decodes bodies as the server would and checks that
// every sample is valid and that no id repeats within or across requests.
func TestWorkloadBodiesAreValidAndUnique(t *testing.T) {
	now := time.Now()
	w, err := NewWorkload(50, 3, now)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]int64{}
	types := map[string]int{}
	for n := range int64(2*templates + 5) {
		var body struct{ Samples []pulsebase.SampleInput }
		if err := json.Unmarshal(w.Body(n), &body); err != nil {
			t.Fatalf("request %d: body is not JSON: %v", n, err)
		}
		if len(body.Samples) != 50 {
			t.Fatalf("request %d: got %d samples, want 50", n, len(body.Samples))
		}
		for j, in := range body.Samples {
			if _, problems := pulsebase.Normalize(in, now); len(problems) > 0 {
				t.Fatalf("request %d sample %d (%s): %v", n, j, in.Type, problems)
			}
			if prev, dup := ids[in.ID]; dup {
				t.Fatalf("id %q of request %d repeats one of request %d", in.ID, n, prev)
			}
			ids[in.ID] = n
			types[in.Type]++
		}
		if got := len(w.StoredSizes(n)); got != 50 {
			t.Fatalf("request %d: got %d stored sizes, want 50", n, got)
		}
	}
	for _, typ := range []string{"heart_rate", "steps", "active_energy"} {
		if types[typ] == 0 {
			t.Errorf("got no %s samples in %v", typ, types)
		}
	}
	// A second workload (another bench run) must not repeat the first one's ids.
	w2, err := NewWorkload(50, 3, now)
	if err != nil {
		t.Fatal(err)
	}
	if w2.runID == w.runID {
		t.Errorf("two workloads share the run id %q", w.runID)
	}
}

func TestWorkloadMsgIDs(t *testing.T) {
	w, err := NewWorkload(3, 1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for n := range int64(100) {
		for j := range 3 {
			id := w.MsgID(n, j)
			if len(id) != 22 {
				t.Fatalf("got id %q of length %d, want 22 like the server's", id, len(id))
			}
			if seen[id] {
				t.Fatalf("id %q repeats", id)
			}
			seen[id] = true
		}
	}
}

func TestWorkloadStoredSize(t *testing.T) {
	w, err := NewWorkload(200, 1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// A normalized sample's JSON has a dozen fields with times and provenance: a few
	// hundred bytes, never less than the overhead plus the field names.
	if m := w.MeanStoredBytes(); m < 150 || m > 1000 {
		t.Errorf("got mean stored size %.0f bytes, want a few hundred", m)
	}
	if b := w.MeanBodyBytes(); b < 200*50 {
		t.Errorf("got mean body size %.0f bytes for 200 samples, want more", b)
	}
}

func TestNewWorkloadRejectsBadSizes(t *testing.T) {
	for _, c := range []struct{ batch, users int }{{0, 1}, {MaxBatch + 1, 1}, {10, 0}} {
		if _, err := NewWorkload(c.batch, c.users, time.Now()); err == nil {
			t.Errorf("NewWorkload(%d, %d): got no error", c.batch, c.users)
		}
	}
}

func TestStatCPU(t *testing.T) {
	// The command name may contain spaces and parentheses.
	stat := "4242 (my (odd) cmd) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 130 0 0 20 0 12 0 100 1000000 300"
	got, err := statCPU([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	if want := 3800 * time.Millisecond; got != want {
		t.Errorf("got %v, want %v (380 ticks)", got, want)
	}
	if _, err := statCPU([]byte("4242 (x) S 1 2")); err == nil {
		t.Error("got no error for a short stat line")
	}
}

func TestStatusKB(t *testing.T) {
	status := "Name:\tpulsebase\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t12\n"
	for _, c := range []struct {
		name string
		want int64
	}{{"VmRSS:", 100 << 20}, {"VmHWM:", 200 << 20}} {
		got, err := statusKB([]byte(status), c.name)
		if err != nil || got != c.want {
			t.Errorf("%s: got %d, %v, want %d", c.name, got, err, c.want)
		}
	}
	if _, err := statusKB([]byte(status), "VmSwap:"); err == nil {
		t.Error("got no error for a missing line")
	}
}

func TestReadProcSelf(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc is Linux's")
	}
	s, err := ReadProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.RSS <= 0 || s.HWM < s.RSS {
		t.Errorf("got RSS %d and peak %d, want 0 < RSS ≤ peak", s.RSS, s.HWM)
	}
}

// fakeTarget is a Target whose answers a test chooses.
type fakeTarget struct {
	send func(ctx context.Context, n int64) Outcome

	mu   sync.Mutex
	seen map[int64]bool
}

func (f *fakeTarget) Name() string { return "fake" }

func (f *fakeTarget) Send(ctx context.Context, n int64) Outcome {
	f.mu.Lock()
	if f.seen == nil {
		f.seen = map[int64]bool{}
	}
	dup := f.seen[n]
	f.seen[n] = true
	f.mu.Unlock()
	if dup {
		return Outcome{Status: "repeated", Err: errors.New("request number sent twice")}
	}
	return f.send(ctx, n)
}

func TestClosedLoopCounts(t *testing.T) {
	w, err := NewWorkload(10, 2, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ft := &fakeTarget{send: func(_ context.Context, n int64) Outcome {
		if n%5 == 4 {
			return Outcome{Status: "503", Err: errors.New("unavailable")}
		}
		return Outcome{Status: "202", Accepted: 9, Rejected: 1}
	}}
	r, err := Run(context.Background(), ft, w, Options{Duration: time.Hour, Concurrency: 3, Requests: 100})
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests.Sent != 100 || r.Requests.ByStatus["202"] != 80 || r.Requests.ByStatus["503"] != 20 {
		t.Errorf("got %d sent, by status %v; want 100: 80×202, 20×503", r.Requests.Sent, r.Requests.ByStatus)
	}
	if r.Samples.Offered != 1000 || r.Samples.Accepted != 720 || r.Samples.Rejected != 80 {
		t.Errorf("got samples %+v, want 1000 offered, 720 accepted, 80 rejected", r.Samples)
	}
	if r.Latency.Count != 100 {
		t.Errorf("got %d latencies, want 100", r.Latency.Count)
	}
	if len(r.Errors) != 1 || !strings.Contains(r.Errors[0], "unavailable") {
		t.Errorf("got errors %q, want the one distinct 503", r.Errors)
	}
	if r.Mode != "closed" || r.Users != 2 || r.Batch != 10 {
		t.Errorf("got mode %q, users %d, batch %d; want closed, 2, 10", r.Mode, r.Users, r.Batch)
	}
}

// TestOpenLoopCountsLateAndUnsent runs an open loop against a target far slower than the
// schedule: with one request in flight at a time, most requests start late or never.
func TestOpenLoopCountsLateAndUnsent(t *testing.T) {
	w, err := NewWorkload(10, 1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	const service = 50 * time.Millisecond
	ft := &fakeTarget{send: func(ctx context.Context, n int64) Outcome {
		time.Sleep(service)
		return Outcome{Status: "202", Accepted: 10}
	}}
	// 1,000 samples/s in batches of 10 is a request due every 10 ms: 20 in 200 ms.
	r, err := Run(context.Background(), ft, w, Options{Duration: 200 * time.Millisecond, Rate: 1000, Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	rq := r.Requests
	if rq.Offered != 20 || rq.Sent+rq.NotSent != rq.Offered {
		t.Errorf("got %+v, want 20 offered = sent + not sent", rq)
	}
	// One at a time, each taking 50 ms, at most 5 can start within 200 ms.
	if rq.Sent > 5 || rq.NotSent < 15 {
		t.Errorf("got %d sent and %d not sent, want at most 5 and at least 15", rq.Sent, rq.NotSent)
	}
	if rq.Sent > 1 && rq.Late == 0 {
		t.Errorf("got no late requests of %d sent one at a time, each outlasting the interval", rq.Sent)
	}
	if r.Samples.Offered != 200 || r.OfferedPerSec < 999 || r.OfferedPerSec > 1001 {
		t.Errorf("got %d samples offered at %.0f/s, want 200 at 1000/s", r.Samples.Offered, r.OfferedPerSec)
	}
	if r.Latency.Max < float64(service/time.Millisecond) {
		t.Errorf("got max latency %.1f ms, want at least the target's %v", r.Latency.Max, service)
	}
}

func TestRunRejectsBadOptions(t *testing.T) {
	w, err := NewWorkload(1, 1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ft := &fakeTarget{send: func(context.Context, int64) Outcome { return Outcome{Status: "202"} }}
	for _, o := range []Options{{Concurrency: 1}, {Duration: time.Second}, {Duration: time.Second, Concurrency: 1, Rate: -1}} {
		if _, err := Run(context.Background(), ft, w, o); err == nil {
			t.Errorf("Run with %+v: got no error", o)
		}
	}
}

func TestSummaryRatioAndTable(t *testing.T) {
	b := &Report{Target: "broker", Mode: "closed", AcceptedPerSec: 80_000, Requests: RequestCounts{ByStatus: map[string]int64{"ok": 3}}}
	h := &Report{Target: "http", Mode: "closed", AcceptedPerSec: 20_000, Requests: RequestCounts{ByStatus: map[string]int64{"202": 3}}}
	s := NewSummary(b, h)
	if s.PulsebaseOverBroker != 0.25 {
		t.Errorf("got ratio %v, want 0.25", s.PulsebaseOverBroker)
	}
	var out strings.Builder
	if err := s.WriteTable(&out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"80,000", "20,000", "202:3", "Pulsebase (http) / broker accepted samples/s: 0.25"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	if NewSummary(h).PulsebaseOverBroker != 0 {
		t.Error("got a ratio without a broker run")
	}
}

func TestThousands(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 1234567.4: "1,234,567", -12345: "-12,345"} {
		if got := thousands(in); got != want {
			t.Errorf("thousands(%v): got %q, want %q", in, got, want)
		}
	}
}
