package main

import (
	"bytes"
	"context"
	"encoding/json"
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
		if want := sum.Runs[1].AcceptedPerSec / sum.Runs[0].AcceptedPerSec; sum.HTTPOverBroker != want {
			t.Errorf("got http/broker %v, want %v", sum.HTTPOverBroker, want)
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
	for _, c := range []struct {
		name string
		args []string
		env  map[string]string
		code int
		want string
	}{
		{"help", []string{"bench", "--help"}, nil, 0, "PULSEBASE_RATE"},
		{"top usage", []string{"help"}, nil, 0, "bench"},
		{"bad baseline", []string{"bench", "--baseline", "kafka"}, nil, 2, "--baseline"},
		{"baseline needs nats url", []string{"bench", "--baseline", "broker"}, nil, 2, "--nats-url"},
		{"batch too large", []string{"bench", "--batch", "5001"}, nil, 2, "--batch 5001"},
		{"negative rate", []string{"bench", "--rate", "-5"}, nil, 2, "--rate"},
		{"bad server url", []string{"bench", "--server", "localhost:8080"}, nil, 2, "--server"},
		{"users from env", []string{"bench"}, map[string]string{"PULSEBASE_USERS": "0"}, 2, "--users 0"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			err := run(context.Background(), c.args, func(k string) string { return c.env[k] }, nil, &out, &errb)
			if got := exitCode(err); got != c.code {
				t.Errorf("got exit code %d (%v), want %d", got, err, c.code)
			}
			if all := out.String() + errb.String(); !strings.Contains(all, c.want) {
				t.Errorf("got output %q, want it to mention %q", all, c.want)
			}
		})
	}
}
