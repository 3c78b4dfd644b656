package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/agg"
	"github.com/pulsebase/pulsebase/internal/pbtest"
)

// child is a `pulsebase serve` in a child process.
type child struct {
	cmd *exec.Cmd
	url string
}

var childListening = regexp.MustCompile(`listening on (http://\S+)`)

func startChild(t *testing.T, dir string) *child {
	t.Helper()
	// The load comes from one device as fast as it can: no rate limit, this test is about
	// durability.
	cmd := pulsebaseCmd(t, "serve", "--data-dir", dir, "--http-addr", "127.0.0.1:0", "--log-level", "error",
		"--rate-per-address", "0", "--rate-per-principal", "0")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := childListening.FindStringSubmatch(sc.Text()); m != nil {
				urls <- m[1]
			}
		}
	}()
	select {
	case u := <-urls:
		return &child{cmd: cmd, url: u}
	case <-time.After(60 * time.Second):
		t.Fatal("the child server did not start")
		return nil
	}
}

func (c *child) kill() {
	c.cmd.Process.Signal(syscall.SIGKILL)
	c.cmd.Wait()
}

// TestCrashKeepsCountsExact is issue [3]'s crash test: a real `pulsebase serve` child
// process under ingest load is killed with SIGKILL at random moments, five times; batches
// that got no answer are re-sent after the restart, as a device would; after the final
// restart the hourly buckets equal the batch computation over every acknowledged sample —
// nothing lost, nothing doubled.
func TestCrashKeepsCountsExact(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills server processes")
	}
	dir := t.TempDir()
	srv := startChild(t, dir)
	userTok := mintToken(t, dir, "--user", "crash-user")
	pbtest.Grant(t, srv.url, userTok, pbtest.AllConsent)
	dev := mintToken(t, dir, "--user", "crash-user", "--role", "device", "--device", "watch")

	rng := rand.New(rand.NewPCG(42, 7))
	now := time.Now().UTC()
	var (
		mu      sync.Mutex
		batches [][]pulsebase.SampleInput // every batch ever sent
		acked   = map[int]bool{}
	)
	// rng is shared by the load goroutines and the test: mu guards it too.
	newBatch := func() int {
		mu.Lock()
		defer mu.Unlock()
		var in []pulsebase.SampleInput
		for i := 0; i < 50; i++ {
			start := now.Add(-time.Duration(rng.Int64N(int64(6*time.Hour))) - time.Hour).Truncate(time.Second)
			if rng.IntN(2) == 0 {
				in = append(in, pulsebase.SampleInput{Type: "heart_rate", Value: json.RawMessage(fmt.Sprint(50 + rng.IntN(80))),
					Start: start.Format(time.RFC3339), Source: "watch"})
			} else {
				in = append(in, pulsebase.SampleInput{Type: "steps", Value: json.RawMessage(fmt.Sprint(rng.IntN(200))),
					Start: start.Format(time.RFC3339), End: start.Add(time.Minute).Format(time.RFC3339), Source: "watch"})
			}
		}
		batches = append(batches, in)
		return len(batches) - 1
	}
	client := &http.Client{Timeout: 5 * time.Second}
	send := func(url string, i int) bool {
		mu.Lock()
		body, _ := json.Marshal(map[string]any{"samples": batches[i]})
		mu.Unlock()
		req, _ := http.NewRequest("POST", url+"/v1/samples", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+dev)
		resp, err := client.Do(req)
		if err != nil {
			return false
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			return false
		}
		mu.Lock()
		acked[i] = true
		mu.Unlock()
		return true
	}

	for round := 0; round < 5; round++ {
		// Load from two clients until the kill; a re-send of an earlier batch now and then.
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := 0; w < 2; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					i := newBatch()
					if !send(srv.url, i) {
						return // the server is gone
					}
				}
			}()
		}
		mu.Lock()
		pause := time.Duration(300+rng.IntN(1200)) * time.Millisecond
		mu.Unlock()
		time.Sleep(pause)
		srv.kill()
		close(stop)
		wg.Wait()
		srv = startChild(t, dir)
		// Re-send what got no answer, as a device retries; and some answered ones too.
		mu.Lock()
		n := len(batches)
		mu.Unlock()
		for i := 0; i < n; i++ {
			mu.Lock()
			again := !acked[i] || rng.IntN(10) == 0
			mu.Unlock()
			if again {
				if !send(srv.url, i) {
					t.Fatalf("round %d: re-sending batch %d to the restarted server failed", round, i)
				}
			}
		}
	}

	var distinct []pulsebase.Sample
	seen := map[string]bool{}
	for _, b := range batches {
		for _, in := range b {
			s, problems := pulsebase.Normalize(in, now)
			if len(problems) > 0 {
				t.Fatalf("bad generated sample: %v", problems)
			}
			k := string(s.Identity())
			if !seen[k] {
				seen[k] = true
				distinct = append(distinct, s)
			}
		}
	}
	if len(acked) != len(batches) || len(batches) < 10 {
		t.Fatalf("%d of %d batches acknowledged; want all, and at least 10", len(acked), len(batches))
	}
	from, to := now.Add(-9*time.Hour).Truncate(time.Hour), now.Add(time.Hour)
	for _, typ := range []string{"heart_rate", "steps"} {
		want := agg.Buckets(distinct, typ, agg.Hour)
		url := fmt.Sprintf("%s/v1/users/me/series/%s?resolution=1h&from=%s&to=%s", srv.url, typ, from.Format(time.RFC3339), to.Format(time.RFC3339))
		var got seriesBody
		ok := waitUntil(180*time.Second, func() bool {
			r := pbtest.Do(t, "GET", url, userTok, "", nil)
			got = seriesBody{}
			r.JSON(t, &got)
			return sameSeries(got, want) == ""
		})
		if !ok {
			t.Errorf("%s after %d kills: %s", typ, 5, sameSeries(got, want))
		}
	}
}

type seriesBody struct {
	Points []struct {
		Start string  `json:"start"`
		Count int64   `json:"count"`
		Sum   float64 `json:"sum"`
	} `json:"points"`
}

// sameSeries says how got differs from want, or "" when it does not.
func sameSeries(got seriesBody, want []agg.Point) string {
	if len(got.Points) != len(want) {
		return fmt.Sprintf("got %d buckets, want %d", len(got.Points), len(want))
	}
	var diffs []string
	for i, w := range want {
		g := got.Points[i]
		if g.Count != w.Count || g.Sum-w.Sum > 1e-6 || w.Sum-g.Sum > 1e-6 {
			diffs = append(diffs, fmt.Sprintf("%s: got count %d sum %v, want %d %v", w.Start.Format(time.RFC3339), g.Count, g.Sum, w.Count, w.Sum))
		}
	}
	return strings.Join(diffs, "; ")
}

// waitUntil polls cond every 50 ms until it holds or timeout passes.
func waitUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}
