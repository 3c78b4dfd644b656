package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pulsebase/pulsebase/internal/loadgen"
)

// writeReport writes sum as a bench JSON report in dir and returns its path.
func writeReport(t *testing.T, dir, name string, sum *loadgen.Summary) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := writeJSONFile(path, sum); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestBenchChart charts two reports made up here: a find-max search over http with
// subscribers and a single ws run, next to a broker baseline that is left out.
func TestBenchChart(t *testing.T) {
	dir := t.TempDir()
	step := func(target string, accepted, ingest, delivery float64) *loadgen.Report {
		r := &loadgen.Report{Target: target, AcceptedPerSec: accepted, Latency: loadgen.Latency{Count: 10, P99: ingest}}
		if delivery > 0 {
			r.Sync = &loadgen.SyncReport{Deliveries: 10, AckToDelivery: loadgen.Latency{Count: 10, P99: delivery}}
		}
		return r
	}
	search := writeReport(t, dir, "find-max.json", &loadgen.Summary{
		Runs: []*loadgen.Report{step("http", 4000, 12, 300), step("http", 8000, 20, 420), step("http", 16000, 0, 2600)},
		FindMax: &loadgen.FindMax{Criteria: loadgen.NewCriteria(1e9), Best: 1, MaxRate: 8000,
			Steps: []loadgen.Step{{Rate: 4000, Pass: true}, {Rate: 8000, Pass: true}, {Rate: 16000}}},
	})
	single := writeReport(t, dir, "ws.json", loadgen.NewSummary(step("broker", 50000, 30, 0), step("ws", 6000, 40, 0)))
	svg := filepath.Join(dir, "chart.svg")
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"bench", "chart", "--out", svg, "--title", "two reports", search, single}, noEnv, nil, &out, &errb); err != nil {
		t.Fatalf("bench chart: %v\n%s", err, errb.String())
	}
	// 3 ingest and 3 delivery points of the search, 1 ingest point of ws; not the broker.
	if want := "7 points from 2 reports"; !strings.Contains(out.String(), want) {
		t.Errorf("got %q, want %q", out.String(), want)
	}
	b, err := os.ReadFile(svg)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, want := range []string{"<?xml", "</svg>", "two reports", "accepted samples/s", "p99 latency", "http ingest p99", "http ack→delivery p99",
		"ws ingest p99", "--max-p99 1000 ms", "10,000"} {
		if !strings.Contains(s, want) {
			t.Errorf("the chart lacks %q", want)
		}
	}
	if strings.Contains(s, "broker") || strings.Contains(s, "ws ack→delivery") {
		t.Error("the chart shows a series it has no point for")
	}

	// PNG by the extension; a report of the broker alone has nothing to draw.
	png := filepath.Join(dir, "chart.png")
	if err := run(context.Background(), []string{"bench", "chart", "--out", png, search}, noEnv, nil, &out, &errb); err != nil {
		t.Fatalf("bench chart png: %v", err)
	}
	if b, err := os.ReadFile(png); err != nil || !bytes.HasPrefix(b, []byte("\x89PNG")) {
		t.Errorf("got %.8q, %v; want a PNG", b, err)
	}
	brokerOnly := writeReport(t, dir, "broker.json", loadgen.NewSummary(step("broker", 50000, 30, 0)))
	if err := run(context.Background(), []string{"bench", "chart", "--out", svg, brokerOnly}, noEnv, nil, &out, &errb); err == nil || !strings.Contains(err.Error(), "no Pulsebase run") {
		t.Errorf("charting a broker baseline alone: got %v, want no Pulsebase run to draw", err)
	}
	notJSON := filepath.Join(dir, "notes.txt")
	os.WriteFile(notJSON, []byte("hello"), 0o600)
	if err := run(context.Background(), []string{"bench", "chart", "--out", svg, notJSON}, noEnv, nil, &out, &errb); err == nil || !strings.Contains(err.Error(), "not a bench report") {
		t.Errorf("charting a text file: got %v, want not a bench report", err)
	}
}

func TestLogTicks(t *testing.T) {
	var labels []string
	for _, tk := range (logTicks{}).Ticks(3, 2500) {
		if tk.Value < 3 || tk.Value > 2500 {
			t.Errorf("got a tick at %v outside 3..2500", tk.Value)
		}
		if tk.Label != "" {
			labels = append(labels, tk.Label)
		}
	}
	if got, want := strings.Join(labels, " "), "5 10 20 50 100 200 500 1,000 2,000"; got != want {
		t.Errorf("got labels %q, want %q", got, want)
	}
}
