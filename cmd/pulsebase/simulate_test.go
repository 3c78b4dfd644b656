package main

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase/internal/pbtest"
)

func TestSimulateCLIUsage(t *testing.T) {
	future := time.Now().Add(time.Hour).Format(time.RFC3339)
	checkUsage(t, []usageCase{
		{"help", []string{"simulate", "--help"}, nil, 0, "PULSEBASE_MALFORMED_RATE"},
		{"help lists the episodes", []string{"simulate", "--help"}, nil, 0, "illness"},
		{"no users", []string{"simulate", "--users", "0"}, nil, 2, "--users 0"},
		{"too many devices", []string{"simulate", "--devices-per-user", "9"}, nil, 2, "--devices-per-user 9"},
		{"zero speed", []string{"simulate", "--speed", "0"}, nil, 2, "--speed 0"},
		{"malformed rate above 1", []string{"simulate", "--malformed-rate", "1.5"}, nil, 2, "--malformed-rate 1.5"},
		{"negative history", []string{"simulate", "--history", "-1h"}, nil, 2, "--history -1h"},
		{"not a server URL", []string{"simulate", "--server", "ftp://example.com"}, nil, 2, "--server"},
		{"start not a time", []string{"simulate", "--start", "yesterday"}, nil, 2, "--start \"yesterday\""},
		{"start in the future", []string{"simulate", "--start", future}, nil, 2, "in the future"},
		{"an argument", []string{"simulate", "now"}, nil, 2, "unexpected argument"},
		{"users from env", []string{"simulate"}, map[string]string{"PULSEBASE_USERS": "many"}, 2, "PULSEBASE_USERS"},
		{"seed from env", []string{"simulate", "--users", "0"}, map[string]string{"PULSEBASE_SEED": "-3"}, 2, "PULSEBASE_SEED"},
		{"listed in the commands", []string{"help"}, nil, 0, "simulate"},
	})
}

var reportLine = regexp.MustCompile(`answered:\s+accepted (\d+), duplicates (\d+), rejected (\d+)`)

// TestSimulateAgainstServe runs `pulsebase simulate` through run() against `serve` started
// through run(), with tokens from the server's data directory: first until interrupted
// (the report is printed, exit 0), then for a fixed live phase with malformed samples
// injected, which the server rejects while it stays ready.
func TestSimulateAgainstServe(t *testing.T) {
	dir := t.TempDir()
	srv := startServer(t, dir)
	tok := mintToken(t, dir, "--user", "sim-9-0000")
	heartRate := func(from, to time.Time) (points int, count float64) {
		q := url.Values{"from": {from.Format(time.RFC3339)}, "to": {to.Format(time.RFC3339)}, "resolution": {"1h"}}
		var s struct{ Points []struct{ Count float64 } }
		r := pbtest.Do(t, "GET", srv.url+"/v1/users/me/series/heart_rate?"+q.Encode(), tok, "", nil)
		if r.Status != 200 {
			return 0, 0
		}
		r.JSON(t, &s)
		for _, p := range s.Points {
			count += p.Count
		}
		return len(s.Points), count
	}

	t.Run("until interrupted", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		out, errb := &pbtest.SyncBuffer{}, &pbtest.SyncBuffer{}
		done := make(chan error, 1)
		go func() {
			done <- run(ctx, []string{"simulate", "--server", srv.url, "--data-dir", dir, "--users", "2", "--seed", "9",
				"--history", "2h", "--malformed-rate", "0"}, noEnv, nil, out, errb)
		}()
		pbtest.WaitFor(t, 30*time.Second, "the backfilled heart rate", func() bool {
			n, _ := heartRate(time.Now().Add(-3*time.Hour), time.Now())
			return n >= 2
		})
		cancel() // what SIGINT does through main's signal.NotifyContext
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("got %v, want exit 0 after an interrupt\n%s", err, errb)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("simulate did not stop within 30s of the interrupt")
		}
		if !strings.Contains(out.String(), "simulate interrupted") || !reportLine.MatchString(out.String()) {
			t.Errorf("got output %q, want the report of an interrupted run", out.String())
		}
	})

	t.Run("fixed duration", func(t *testing.T) {
		var out, errb bytes.Buffer
		start := time.Now()
		err := run(context.Background(), []string{"simulate", "--server", srv.url, "--data-dir", dir, "--users", "3", "--seed", "9",
			"--devices-per-user", "3", "--history", "4h", "--duration", "2s", "--speed", "900", "--malformed-rate", "0.004"},
			noEnv, nil, &out, &errb)
		if err != nil {
			t.Fatalf("simulate: %v\n%s", err, errb.String())
		}
		t.Logf("report:\n%s", out.String())
		m := reportLine.FindStringSubmatch(out.String())
		if m == nil || !strings.Contains(out.String(), "simulate done") {
			t.Fatalf("got output %q, want a report", out.String())
		}
		accepted, _ := strconv.Atoi(m[1])
		duplicates, _ := strconv.Atoi(m[2])
		rejected, _ := strconv.Atoi(m[3])
		// The same seed again: what the interrupted run sent is recognised as duplicates.
		if accepted == 0 || duplicates == 0 || rejected == 0 {
			t.Errorf("got %d accepted, %d duplicates, %d rejected: want some of each", accepted, duplicates, rejected)
		}
		if !regexp.MustCompile(`rejected \d+ \((\w+ \d+(, )?)+\)`).MatchString(out.String()) {
			t.Errorf("got output %q, want the rejections by code", out.String())
		}
		if r := pbtest.Do(t, "GET", srv.url+"/readyz", "", "", nil); r.Status != 200 {
			t.Errorf("readyz after the run: got %d, want 200", r.Status)
		}
		// Four hours of history and the live half hour (900× for 2 s) reach the series.
		pbtest.WaitFor(t, 30*time.Second, "the series of the simulated hours", func() bool {
			n, count := heartRate(start.Add(-5*time.Hour), time.Now())
			return n >= 4 && count >= 200
		}, func() string {
			n, count := heartRate(start.Add(-5*time.Hour), time.Now())
			return fmt.Sprintf("%d hourly points, %v readings", n, count)
		})
	})
}
