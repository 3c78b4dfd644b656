package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/pulsebase/pulsebase/internal/loadgen"
)

var natsListening = regexp.MustCompile(`nats listening on (nats://\S+)`)

// TestBench runs `pulsebase bench` through run() against a server started the same way,
// once closed loop with the broker baseline and once open loop, and checks that the JSON
// reports add up. It asserts nothing about speed.
func TestBench(t *testing.T) {
	dir := t.TempDir()
	srv := startServer(t, dir, "--nats-listen", "127.0.0.1:0")
	m := natsListening.FindStringSubmatch(srv.stdout.String())
	if m == nil {
		t.Fatalf("serve with --nats-listen printed no nats URL:\n%s", srv.stdout)
	}
	natsURL := m[1]
	pid := strconv.Itoa(os.Getpid()) // the server runs in this process

	bench := func(t *testing.T, args ...string) *loadgen.Summary {
		t.Helper()
		file := filepath.Join(t.TempDir(), "report.json")
		args = append([]string{"bench", "--server", srv.url, "--data-dir", dir, "--users", "3",
			"--batch", "40", "--concurrency", "2", "--server-pid", pid, "--json", file}, args...)
		var out, errb bytes.Buffer
		if err := run(context.Background(), args, noEnv, nil, &out, &errb); err != nil {
			t.Fatalf("bench: %v\n%s%s", err, out.String(), errb.String())
		}
		if !strings.Contains(out.String(), "samples/s accepted") {
			t.Errorf("got table %q, want a samples/s accepted row", out.String())
		}
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var sum loadgen.Summary
		if err := json.Unmarshal(b, &sum); err != nil {
			t.Fatalf("JSON report: %v\n%s", err, b)
		}
		for _, r := range sum.Runs {
			checkReport(t, r)
			if r.Target != "broker" {
				checkPipeline(t, r)
			}
		}
		return &sum
	}

	t.Run("closed loop with broker baseline", func(t *testing.T) {
		sum := bench(t, "--duration", "1s", "--baseline", "both", "--nats-url", natsURL)
		if len(sum.Runs) != 2 || sum.Runs[0].Target != "broker" || sum.Runs[1].Target != "http" {
			t.Fatalf("got %d runs, want the broker baseline, then http", len(sum.Runs))
		}
		for _, r := range sum.Runs {
			if r.Mode != "closed" || r.Concurrency != 2 || r.Batch != 40 || r.Users != 3 {
				t.Errorf("%s: got mode %s, concurrency %d, batch %d, users %d; want closed, 2, 40, 3",
					r.Target, r.Mode, r.Concurrency, r.Batch, r.Users)
			}
			if r.Requests.NotSent != 0 || r.Requests.Late != 0 {
				t.Errorf("%s: got %d not sent and %d late in closed loop, want 0", r.Target, r.Requests.NotSent, r.Requests.Late)
			}
		}
		if got, want := sum.Runs[0].StoredBytes, sum.Runs[1].StoredBytes; got != want {
			t.Errorf("broker messages average %.0f bytes, http samples %.0f: want the same sizes", got, want)
		}
		if want := sum.Runs[1].AcceptedPerSec / sum.Runs[0].AcceptedPerSec; sum.PulsebaseOverBroker != want {
			t.Errorf("got Pulsebase/broker %v, want %v", sum.PulsebaseOverBroker, want)
		}
	})

	t.Run("sealed batches", func(t *testing.T) {
		sum := bench(t, "--duration", "1s", "--sealed")
		if len(sum.Runs) != 1 || sum.Runs[0].Target != "http-sealed" {
			t.Fatalf("got %d runs, want one http-sealed run", len(sum.Runs))
		}
	})

	// Open loop: 2,000 samples/s in batches of 40 is a request due every 20 ms, 50 in 1 s,
	// whatever the server does. The users are those of the run above: a second run with
	// the same users must still send nothing the server has seen.
	t.Run("open loop", func(t *testing.T) {
		sum := bench(t, "--duration", "1s", "--rate", "2000")
		if len(sum.Runs) != 1 {
			t.Fatalf("got %d runs, want 1", len(sum.Runs))
		}
		r := sum.Runs[0]
		if r.Mode != "open" || r.Rate != 2000 {
			t.Errorf("got mode %s at %v/s, want open at 2000/s", r.Mode, r.Rate)
		}
		if r.Requests.Offered != 50 || r.Samples.Offered != 2000 {
			t.Errorf("got %d requests and %d samples offered, want 50 and 2000", r.Requests.Offered, r.Samples.Offered)
		}
	})
}

// checkReport checks what must hold for every run that worked: every sample new and
// valid, counts that add up, ordered percentiles and the server's usage.
func checkReport(t *testing.T, r *loadgen.Report) {
	t.Helper()
	s, rq, l := r.Samples, r.Requests, r.Latency
	if s.Accepted <= 0 || s.Accepted > s.Offered {
		t.Errorf("%s: got %d accepted of %d offered, want 0 < accepted ≤ offered", r.Target, s.Accepted, s.Offered)
	}
	if s.Duplicates != 0 || s.Rejected != 0 {
		t.Errorf("%s: got %d duplicates and %d rejected, want none: the workload is all new, valid samples",
			r.Target, s.Duplicates, s.Rejected)
	}
	if s.Offered != rq.Offered*int64(r.Batch) || rq.Offered != rq.Sent+rq.NotSent {
		t.Errorf("%s: got samples %+v and requests %+v, which do not add up", r.Target, s, rq)
	}
	var byStatus int64
	for _, n := range rq.ByStatus {
		byStatus += n
	}
	if byStatus != rq.Sent || l.Count != rq.Sent {
		t.Errorf("%s: got %d sent, %d by status, %d latencies; want them equal", r.Target, rq.Sent, byStatus, l.Count)
	}
	if !(0 < l.P50 && l.P50 <= l.P95 && l.P95 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max) {
		t.Errorf("%s: got latency %+v, want 0 < p50 ≤ p95 ≤ p99 ≤ p99.9 ≤ max", r.Target, l)
	}
	if r.AcceptedPerSec <= 0 || r.OfferedPerSec <= 0 {
		t.Errorf("%s: got %.0f/s offered and %.0f/s accepted, want both positive", r.Target, r.OfferedPerSec, r.AcceptedPerSec)
	}
	if r.Server == nil || r.Server.PID != os.Getpid() || r.Server.RSSBytes <= 0 || r.Server.PeakRSSBytes < r.Server.RSSBytes || r.Server.CPUSeconds < 0 {
		t.Errorf("%s: got server usage %+v, want this process's memory and CPU time", r.Target, r.Server)
	}
	if len(r.Errors) > 0 {
		t.Errorf("%s: got errors %q", r.Target, r.Errors)
	}
}

func TestBenchUsage(t *testing.T) {
	checkUsage(t, []usageCase{
		{"help", []string{"bench", "--help"}, nil, 0, "PULSEBASE_RATE"},
		{"top usage", []string{"help"}, nil, 0, "bench"},
		{"bad baseline", []string{"bench", "--baseline", "kafka"}, nil, 2, "--baseline"},
		{"baseline needs nats url", []string{"bench", "--server", "http://127.0.0.1:1", "--baseline", "broker"}, nil, 2, "--nats-url"},
		{"nats url needs a server", []string{"bench", "--nats-url", "nats://127.0.0.1:4222"}, nil, 2, "--nats-url goes with --server"},
		{"bad transport", []string{"bench", "--transport", "grpc"}, nil, 2, "--transport"},
		{"sealed frames", []string{"bench", "--transport", "ws", "--sealed"}, nil, 2, "--sealed"},
		{"too many subscribers", []string{"bench", "--users", "2", "--subscribers", "41"}, nil, 2, "--subscribers 41"},
		{"subscribers without a Pulsebase run", []string{"bench", "--subscribers", "1", "--baseline", "broker"}, nil, 2, "--subscribers"},
		{"find-max with a baseline", []string{"bench", "--find-max", "--baseline", "both"}, nil, 2, "--find-max"},
		{"find-max without a bound", []string{"bench", "--find-max", "--max-p99", "0s"}, nil, 2, "--max-p99"},
		{"chart help", []string{"bench", "chart", "--help"}, nil, 0, "--out"},
		{"chart without out", []string{"bench", "chart", "r.json"}, nil, 2, "--out FILE is required"},
		{"chart without reports", []string{"bench", "chart", "--out", "c.svg"}, nil, 2, "at least one report"},
		{"chart of another format", []string{"bench", "chart", "--out", "c.gif", "r.json"}, nil, 2, ".svg, .png or .pdf"},
		{"batch too large", []string{"bench", "--batch", "5001"}, nil, 2, "--batch 5001"},
		{"negative rate", []string{"bench", "--rate", "-5"}, nil, 2, "--rate"},
		{"bad server url", []string{"bench", "--server", "localhost:8080"}, nil, 2, "--server"},
		{"users from env", []string{"bench"}, map[string]string{"PULSEBASE_USERS": "0"}, 2, "--users 0"},
	})
}

// runBenchJSON runs `pulsebase bench args… --json FILE` through run() and returns the
// report's path, the report, and what was printed on stdout.
func runBenchJSON(t *testing.T, args ...string) (string, *loadgen.Summary, string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "report.json")
	var out, errb bytes.Buffer
	if err := run(context.Background(), append(append([]string{"bench"}, args...), "--json", file), noEnv, nil, &out, &errb); err != nil {
		t.Fatalf("bench: %v\n%s%s", err, out.String(), errb.String())
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var sum loadgen.Summary
	if err := json.Unmarshal(b, &sum); err != nil {
		t.Fatalf("JSON report: %v\n%s", err, b)
	}
	return file, &sum, out.String()
}

func TestBenchInProcessHTTP(t *testing.T) { testBenchInProcess(t, "http") }

func TestBenchInProcessWS(t *testing.T) { testBenchInProcess(t, "ws") }

// testBenchInProcess runs `pulsebase bench` with no --server, so with a server started
// in this process, over transport for a few seconds with three subscribers, and checks
// that the report's figures are there and consistent, then charts it. It asserts
// nothing about speed.
func testBenchInProcess(t *testing.T, transport string) {
	// 600 samples/s in batches of 30 is 20 requests a second: 60 in 3 s.
	file, sum, out := runBenchJSON(t, "--transport", transport, "--duration", "3s", "--rate", "600", "--batch", "30",
		"--users", "3", "--subscribers", "3", "--concurrency", "16", "--delivery-timeout", "20s")
	if len(sum.Runs) != 1 {
		t.Fatalf("got %d runs, want 1", len(sum.Runs))
	}
	r := sum.Runs[0]
	if r.Target != transport || r.Mode != "open" || r.Requests.Offered != 60 {
		t.Errorf("got %s run, mode %s, %d requests offered; want %s, open, 60", r.Target, r.Mode, r.Requests.Offered, transport)
	}
	checkReport(t, r)
	checkPipeline(t, r)
	checkSync(t, r, 3)
	if transport == "ws" {
		if r.Connections != 3 || r.Requests.ByStatus["ack"] != r.Requests.Sent {
			t.Errorf("got %d connections and requests by status %v; want 3 (one per user) and every request acked", r.Connections, r.Requests.ByStatus)
		}
		if r.Pipeline.SyncConnections < 6 {
			t.Errorf("got %d sync connections on the server, want the 3 senders and 3 subscribers", r.Pipeline.SyncConnections)
		}
	}
	for _, row := range []string{"samples/s offered", "samples/s accepted", "samples/s processed", "ingest p99 ms", "ack→delivery p99 ms",
		"subscribers held", "lag min/max/last msgs", "sync connections", "server RSS MiB end/peak"} {
		if !strings.Contains(out, row) {
			t.Errorf("the table lacks the %q row:\n%s", row, out)
		}
	}
	checkChart(t, file)
}

// checkPipeline checks the figures read from the server's metrics.
func checkPipeline(t *testing.T, r *loadgen.Report) {
	t.Helper()
	p := r.Pipeline
	if p == nil {
		t.Fatalf("%s: got no pipeline figures", r.Target)
	}
	// The processor starts idle (the bench waits for it), so it processes nothing but
	// what the run sent, some of which may still be waiting when the run ends.
	if p.Processed < 0 || p.Processed > r.Samples.Accepted || p.ProcessedPerSec < 0 {
		t.Errorf("%s: got %d processed (%.0f/s) of %d accepted, want 0 ≤ processed ≤ accepted", r.Target, p.Processed, p.ProcessedPerSec, r.Samples.Accepted)
	}
	// A reading every second, and one at the end.
	if len(p.Lag) < max(1, int(r.Elapsed)) {
		t.Errorf("%s: got %d lag readings in a run of %.1f s, want one a second", r.Target, len(p.Lag), r.Elapsed)
	}
	for i, l := range p.Lag {
		if l.Messages < 0 || (i > 0 && l.T <= p.Lag[i-1].T) {
			t.Errorf("%s: got lag readings %+v, want increasing times and no negative lag", r.Target, p.Lag)
			break
		}
	}
	if len(p.Lag) > 0 && (p.LagMin > p.LagMax || p.LagLast != p.Lag[len(p.Lag)-1].Messages || p.LagLast < p.LagMin || p.LagLast > p.LagMax) {
		t.Errorf("%s: got lag min %d, max %d, last %d for %+v", r.Target, p.LagMin, p.LagMax, p.LagLast, p.Lag)
	}
	if p.ScrapeErrors != 0 {
		t.Errorf("%s: got %d failed metrics readings: %s", r.Target, p.ScrapeErrors, p.ScrapeError)
	}
}

// checkSync checks what the run's k subscribers measured.
func checkSync(t *testing.T, r *loadgen.Report, k int) {
	t.Helper()
	y := r.Sync
	if y == nil {
		t.Fatalf("%s: got no subscriber figures", r.Target)
	}
	if y.Subscribers != k || y.Held != k || y.MarkedUsers != min(k, r.Users) {
		t.Errorf("%s: got %d subscribers, %d held, %d users marked; want %d, all held", r.Target, y.Subscribers, y.Held, y.MarkedUsers, k)
	}
	// Every request of a marked user that was acked carries a marker; each reaches each
	// of the user's subscribers once.
	if y.Markers <= 0 || y.Markers > r.Requests.Sent || y.Deliveries <= 0 || y.Deliveries+y.Missing != y.Markers*int64(k/y.MarkedUsers) {
		t.Errorf("%s: got %d markers, %d deliveries, %d missing of %d requests sent", r.Target, y.Markers, y.Deliveries, y.Missing, r.Requests.Sent)
	}
	if l := y.AckToDelivery; l.Count != y.Deliveries || !(0 < l.P50 && l.P50 <= l.P95 && l.P95 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max) {
		t.Errorf("%s: got ack→delivery %+v for %d deliveries, want 0 < p50 ≤ p95 ≤ p99 ≤ p99.9 ≤ max", r.Target, l, y.Deliveries)
	}
	if len(y.Errors) > 0 {
		t.Errorf("%s: got subscriber errors %q", r.Target, y.Errors)
	}
}

// checkChart charts the reports with `pulsebase bench chart` and checks the SVG.
func checkChart(t *testing.T, reports ...string) {
	t.Helper()
	svg := filepath.Join(t.TempDir(), "chart.svg")
	var out, errb bytes.Buffer
	if err := run(context.Background(), append([]string{"bench", "chart", "--out", svg}, reports...), noEnv, nil, &out, &errb); err != nil {
		t.Fatalf("bench chart: %v\n%s", err, errb.String())
	}
	b, err := os.ReadFile(svg)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if !strings.HasPrefix(s, "<?xml") && !strings.HasPrefix(s, "<svg") {
		t.Errorf("the chart starts with %.40q, want an SVG document", s)
	}
	for _, want := range []string{"<svg", "</svg>", "accepted samples/s", "p99 latency", "ingest p99", "ack→delivery p99"} {
		if !strings.Contains(s, want) {
			t.Errorf("the chart lacks %q", want)
		}
	}
}

// TestBenchFindMax runs a search of three short steps in this process and checks that
// the steps follow the search's rule and the report holds them all. Which steps pass
// depends on the machine, so it asserts the rule, not the outcome.
func TestBenchFindMax(t *testing.T) {
	file, sum, out := runBenchJSON(t, "--find-max", "--duration", "2s", "--rate", "400", "--batch", "20", "--users", "2",
		"--concurrency", "16", "--max-steps", "3", "--max-p99", "5s")
	fm := sum.FindMax
	if fm == nil {
		t.Fatalf("got no find_max in the report:\n%s", out)
	}
	if len(fm.Steps) == 0 || len(fm.Steps) > 3 || len(sum.Runs) != len(fm.Steps) || fm.Steps[0].Rate != 400 {
		t.Fatalf("got %d steps and %d runs, first at %v; want 1 to 3 of each, from 400", len(fm.Steps), len(sum.Runs), fm.Steps[0].Rate)
	}
	lo, hi := 0.0, 1e18
	for i, st := range fm.Steps {
		r := sum.Runs[i]
		if r.Rate != st.Rate || r.AcceptedPerSec != st.AcceptedPerSec || r.Latency.P99 != st.IngestP99 {
			t.Errorf("step %d: got %+v for run at %v/s (%v/s accepted, p99 %v), want the run's figures", i, st, r.Rate, r.AcceptedPerSec, r.Latency.P99)
		}
		checkReport(t, r)
		checkPipeline(t, r)
		if pass, _ := fm.Criteria.Judge(r); pass != st.Pass || st.Reason == "" {
			t.Errorf("step %d: got pass %v (%q), want the criteria's verdict %v", i, st.Pass, st.Reason, pass)
		}
		if i > 0 {
			// Doubling while every step passed, else halving or bisecting.
			if want := 2 * fm.Steps[i-1].Rate; hi == 1e18 && st.Rate != want {
				t.Errorf("step %d: got %v/s after passes only, want %v", i, st.Rate, want)
			}
			if st.Rate <= lo || st.Rate >= hi {
				t.Errorf("step %d: got %v/s, want between the highest pass %v and the lowest failure %v", i, st.Rate, lo, hi)
			}
		}
		if st.Pass {
			lo = max(lo, st.Rate)
		} else {
			hi = min(hi, st.Rate)
		}
	}
	if fm.MaxRate != lo || (fm.Best >= 0) != (lo > 0) || (fm.Best >= 0 && fm.Steps[fm.Best].Rate != lo) {
		t.Errorf("got max rate %v at step %d, want the highest pass %v", fm.MaxRate, fm.Best, lo)
	}
	if fm.Criteria.MaxP99 != 5000 || !strings.Contains(out, "find-max: ") {
		t.Errorf("got criteria %+v and output:\n%s", fm.Criteria, out)
	}
	svg := filepath.Join(t.TempDir(), "chart.svg")
	var cout, cerr bytes.Buffer
	if err := run(context.Background(), []string{"bench", "chart", "--out", svg, file}, noEnv, nil, &cout, &cerr); err != nil {
		t.Fatalf("bench chart: %v\n%s", err, cerr.String())
	}
	if want := fmt.Sprintf("%d points", len(fm.Steps)); !strings.Contains(cout.String(), want) {
		t.Errorf("got %q, want %s: one per step", cout.String(), want)
	}
}
