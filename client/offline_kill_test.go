//go:build unix

package client_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/client"
	"github.com/pulsebase/pulsebase/internal/pbtest"
)

// Environment of the child process of TestOfflineQueueSurvivesKill.
const (
	offlineChildMode  = "PULSEBASE_OFFLINE_CHILD" // "queue" or "flush"; set only in the child
	offlineChildState = "PULSEBASE_OFFLINE_STATE" // the session's StateDir
	offlineChildURL   = "PULSEBASE_OFFLINE_URL"   // the server
	offlineChildToken = "PULSEBASE_OFFLINE_TOKEN" // the user's token
	offlineChildBase  = "PULSEBASE_OFFLINE_BASE"  // Unix seconds of the first sample's minute
)

// offlineBatch is the child's batch i: three heart rate samples, each in a minute of its
// own, so that the server counting a sample twice shows as a minute with a count of 2.
func offlineBatch(base time.Time, i int) []pulsebase.SampleInput {
	out := make([]pulsebase.SampleInput, 3)
	for j := range out {
		v, _ := json.Marshal(50 + (i*3+j)%60)
		out[j] = pulsebase.SampleInput{Type: "heart_rate", Value: v, Source: "offline-test",
			Start: base.Add(-time.Duration(i*3+j) * time.Minute).Format(time.RFC3339)}
	}
	return out
}

// TestOfflineQueueSurvivesKill: a device queues samples and water-counter bumps while
// offline and is killed (SIGKILL) in the middle of it; restarted online, it is killed
// again part way through flushing; a third start flushes the rest. The server ends with
// every queued sample counted exactly once and the counter bumped exactly as often as
// bumps were queued.
func TestOfflineQueueSurvivesKill(t *testing.T) {
	if mode := os.Getenv(offlineChildMode); mode != "" {
		offlineChild(t, mode)
		return
	}
	s := pbtest.MustOpenServer(t)
	tok := s.UserToken(t, "lea")
	dir := t.TempDir()
	base := time.Now().UTC().Add(-3 * time.Hour).Truncate(time.Minute)
	run := func(mode, url string, killAfter string, lines int) []string {
		t.Helper()
		cmd := exec.Command(os.Args[0], "-test.run=^TestOfflineQueueSurvivesKill$", "-test.count=1")
		cmd.Env = append(os.Environ(), offlineChildMode+"="+mode, offlineChildState+"="+dir, offlineChildURL+"="+url,
			offlineChildToken+"="+tok, offlineChildBase+"="+strconv.FormatInt(base.Unix(), 10))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var seen []string
		n := 0
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			seen = append(seen, sc.Text())
			if strings.HasPrefix(sc.Text(), killAfter) {
				if n++; n == lines {
					cmd.Process.Kill()
				}
			}
		}
		cmd.Wait()
		if n < lines {
			t.Fatalf("the %s child ended before it was killed: %q", mode, seen)
		}
		return seen
	}
	// Offline: the server's address is a closed port. Killed after 25 entries queued.
	run("queue", "http://127.0.0.1:1", "queued", 25)
	q, err := client.OpenQueue(filepath.Join(dir, "queue"))
	if err != nil {
		t.Fatal(err)
	}
	samples, bumps := 0, 0
	for _, e := range q.Pending() {
		var f struct {
			Samples []json.RawMessage
			Ops     []json.RawMessage
		}
		if err := json.Unmarshal(e.Data, &f); err != nil {
			t.Fatal(err)
		}
		samples += len(f.Samples)
		bumps += len(f.Ops)
	}
	q.Close()
	if samples < 25 || bumps < 10 {
		t.Fatalf("the queue kept %d samples and %d bumps of the 25 entries reported queued", samples, bumps)
	}
	// Online: killed after 5 acks, part way through the flush.
	run("flush", s.URL, "ack", 5)
	// Online again, until the queue is empty.
	run("flush", s.URL, "empty", 1)

	var points []map[string]any
	pbtest.WaitFor(t, 60*time.Second, "every queued sample in the minute buckets", func() bool {
		var series struct{ Points []map[string]any }
		pbtest.Do(t, "GET", fmt.Sprintf("%s/v1/users/me/series/heart_rate?resolution=1m&from=%s&to=%s", s.URL,
			base.Add(-24*time.Hour).Format(time.RFC3339), base.Add(time.Minute).Format(time.RFC3339)), tok, "", nil).JSON(t, &series)
		points = series.Points
		return len(points) >= samples
	})
	for _, p := range points {
		if p["count"] != 1.0 {
			t.Fatalf("minute %v counted %v samples, want 1", p["start"], p["count"])
		}
	}
	if len(points) != samples {
		t.Fatalf("%d minutes hold samples, %d samples were queued", len(points), samples)
	}
	var prof map[string]any
	pbtest.Do(t, "GET", s.URL+"/v1/users/me/profile", tok, "", nil).JSON(t, &prof)
	if got := prof["water_glasses"].(map[string]any)[base.Format("2006-01-02")]; got != float64(bumps) {
		t.Fatalf("water glasses %v, want %d bumps", got, bumps)
	}
}

// offlineChild is the device process of TestOfflineQueueSurvivesKill.
func offlineChild(t *testing.T, mode string) {
	base, _ := strconv.ParseInt(os.Getenv(offlineChildBase), 10, 64)
	at := time.Unix(base, 0).UTC()
	acks := make(chan struct{}, 1000)
	sess, err := client.New(os.Getenv(offlineChildURL), os.Getenv(offlineChildToken)).Sync(client.SyncOptions{
		Device: "band", StateDir: os.Getenv(offlineChildState), MinBackoff: 10 * time.Millisecond,
		OnAck: func(a client.Ack) {
			fmt.Printf("ack %d\n", a.Seq)
			acks <- struct{}{}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	switch mode {
	case "queue":
		day := "water_glasses." + at.Format("2006-01-02")
		for i := 0; ; i++ {
			if err := sess.SendSamples(offlineBatch(at, i)); err != nil {
				t.Fatal(err)
			}
			if i%2 == 0 {
				if err := sess.Incr(day, 1); err != nil {
					t.Fatal(err)
				}
			}
			fmt.Printf("queued %d\n", i)
		}
	case "flush":
		ctx, cancel := context.WithCancel(context.Background())
		go sess.Run(ctx)
		for sess.Pending() > 0 {
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
		fmt.Println("empty")
		time.Sleep(time.Hour) // the parent kills the child
	}
}
