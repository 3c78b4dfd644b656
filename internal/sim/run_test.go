package sim_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/auth"
	"github.com/pulsebase/pulsebase/internal/pbtest"
	"github.com/pulsebase/pulsebase/internal/sim"
)

// TestRunSimulatesAgainstServer runs a small population against a real server: a few
// simulated hours backfilled, then an hour live at 1800×, with malformed samples injected.
// The server rejects exactly the corrupted copies, with the codes they were made for,
// counts the re-sends as duplicates, stays ready, and the people's series show data.
func TestRunSimulatesAgainstServer(t *testing.T) {
	srv := pbtest.MustOpenServer(t)
	tokens := func(subject string) (string, error) {
		return srv.Issuer.Mint(auth.TokenRequest{Subject: subject, Role: pulsebase.RoleUser, TTL: time.Hour}, time.Now())
	}
	cfg := sim.Config{
		Server:     srv.URL,
		Population: sim.Population{Seed: 42, Users: 3, DevicesPerUser: 3, MalformedRate: 0.003, ResendRate: 0.05},
		History:    6 * time.Hour,
		Duration:   2 * time.Second,
		Speed:      1800,
		Tick:       200 * time.Millisecond,
	}
	var out bytes.Buffer
	rep, err := sim.Run(context.Background(), cfg, tokens, nil, &out, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("report:\n%s", out.String())

	if rep.Interrupted || rep.Failed != 0 {
		t.Errorf("got interrupted %v, failed %d; want a complete run", rep.Interrupted, rep.Failed)
	}
	if rep.Generated == 0 || rep.Answered() != rep.Generated {
		t.Errorf("got %d samples generated and %d answered, want every one answered", rep.Generated, rep.Answered())
	}
	if rep.Malformed == 0 || rep.RejectedTotal() != rep.Malformed || !maps.Equal(rep.Rejected, rep.Injected) {
		t.Errorf("got rejections %v for injected %v (%d malformed), want exactly the injected ones", rep.Rejected, rep.Injected, rep.Malformed)
	}
	if rep.Resent == 0 || rep.Duplicates < rep.Resent || (rep.Retries == 0 && rep.Duplicates != rep.Resent) {
		t.Errorf("got %d duplicates for %d re-sent samples (%d retries), want the re-sends counted as duplicates", rep.Duplicates, rep.Resent, rep.Retries)
	}
	if rep.SyncBatches == 0 || rep.Changes == 0 {
		t.Errorf("got %d sync batches and %d changes, want the watches to sync", rep.SyncBatches, rep.Changes)
	}
	if !rep.To.After(rep.Live) || rep.Live.Sub(rep.From) != cfg.History {
		t.Errorf("got simulated time %s, live %s, to %s: want the history, then the live phase", rep.From, rep.Live, rep.To)
	}
	for _, want := range []string{"simulate done", "rejected", "duplicates"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the report does not mention %q", want)
		}
	}
	if r := pbtest.Do(t, "GET", srv.URL+"/readyz", "", "", nil); r.Status != 200 {
		t.Errorf("readyz: got %d, want 200", r.Status)
	}
	// Every person's heart rate reaches their series, over the history and the live hour.
	for i := range cfg.Population.Users {
		tok, err := tokens(sim.Subject(cfg.Population.Seed, i))
		if err != nil {
			t.Fatal(err)
		}
		q := url.Values{"from": {rep.From.Format(time.RFC3339)}, "to": {rep.To.Format(time.RFC3339)}, "resolution": {"1h"}}
		pbtest.WaitFor(t, 20*time.Second, fmt.Sprintf("user %d's heart rate series", i), func() bool {
			var s struct{ Points []struct{ Count float64 } }
			r := pbtest.Do(t, "GET", srv.URL+"/v1/users/me/series/heart_rate?"+q.Encode(), tok, "", nil)
			if r.Status != 200 {
				return false
			}
			r.JSON(t, &s)
			n := 0.0
			for _, p := range s.Points {
				n += p.Count
			}
			return len(s.Points) >= 6 && n >= 300
		})
	}
}

// TestRunStopsWhenInterrupted: a run until interrupted returns its report when its
// context is done.
func TestRunStopsWhenInterrupted(t *testing.T) {
	srv := pbtest.MustOpenServer(t)
	tokens := func(subject string) (string, error) {
		return srv.Issuer.Mint(auth.TokenRequest{Subject: subject, Role: pulsebase.RoleUser, TTL: time.Hour}, time.Now())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan sim.Report, 1)
	var out pbtest.SyncBuffer
	go func() {
		rep, err := sim.Run(ctx, sim.Config{Server: srv.URL, Population: sim.Population{Seed: 3, Users: 2}, History: time.Hour,
			Tick: 100 * time.Millisecond}, tokens, nil, &out, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Error(err)
		}
		done <- rep
	}()
	tok, _ := tokens(sim.Subject(3, 0))
	pbtest.WaitFor(t, 20*time.Second, "the backfilled heart rate", func() bool {
		var s struct{ Points []any }
		r := pbtest.Do(t, "GET", srv.URL+"/v1/users/me/series/heart_rate?resolution=1m", tok, "", nil)
		if r.Status == 200 {
			r.JSON(t, &s)
		}
		return len(s.Points) >= 30
	})
	cancel()
	select {
	case rep := <-done:
		if !rep.Interrupted || rep.Accepted == 0 {
			t.Errorf("got interrupted %v with %d accepted, want an interrupted run that sent data", rep.Interrupted, rep.Accepted)
		}
		if !strings.Contains(out.String(), "simulate interrupted") {
			t.Errorf("got report %q, want it to say it was interrupted", out.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return within 20s of its context being cancelled")
	}
}
