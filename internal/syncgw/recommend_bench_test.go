package syncgw_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/pbtest"
	"github.com/pulsebase/pulsebase/internal/recommend"
)

// benchRules is a library with one rule that fires on every mood sample, in the commit
// that applies it (a rule reading today's day object would wait for the day's
// recomputation, --daily-interval): the latency benchmark's trigger. Heart rate, the
// background load, triggers nothing.
const benchRules = `version: "bench"
rules:
  - kind: check_in
    category: mind
    triggers: {metrics: [mood]}
    when: "true"
    evidence: {hour: double(local.hour)}
    priority: 50
    title: Thanks for checking in
    body: Noted.
    why: "You logged a mood at {{num .hour}} o'clock."
    expires: 1h
    cooldown: 0s
`

// BenchmarkRecommendationLatency (issue [5]): PULSEBASE_BENCH_USERS users with a connected
// device; heart rate samples are offered at PULSEBASE_BENCH_RATE for 10 s as background
// load, and every 10 ms one user (each once) logs a mood, which a rule turns into a
// recommendation. It reports the time from the mood sample's ack to the recommendation
// arriving at the user's device (rec-p50-ms, rec-p99-ms). The processor commits every
// 250 ms, as in production (PULSEBASE_BENCH_FLUSH_MS to try others); rules run in its
// commit.
func BenchmarkRecommendationLatency(b *testing.B) {
	rate := pbtest.BenchEnv("PULSEBASE_BENCH_RATE", 5000)
	users := pbtest.BenchEnv("PULSEBASE_BENCH_USERS", 1000)
	file := filepath.Join(b.TempDir(), "rules.yaml")
	if err := os.WriteFile(file, []byte(benchRules), 0o600); err != nil {
		b.Fatal(err)
	}
	for range b.N {
		b.StopTimer()
		rules, err := recommend.NewRules(file, nil)
		if err != nil {
			b.Fatal(err)
		}
		flush := time.Duration(pbtest.BenchEnv("PULSEBASE_BENCH_FLUSH_MS", 250)) * time.Millisecond
		s := pbtest.MustOpenServerOpts(b, pbtest.Options{Flush: flush, Rules: rules})
		ids := make([]string, users)
		lat := newArrivals() // keyed by user: each logs one mood
		ctx, cancel := context.WithCancel(context.Background())
		var readers sync.WaitGroup
		for u := range users {
			ws, w := benchConn(b, syncURL(s), s.UserToken(b, fmt.Sprintf("rec-%05d", u)), "phone")
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
					var f struct{ Kind string }
					if json.Unmarshal(m, &f) != nil || f.Kind != "recommendation" {
						continue
					}
					lat.arrive(user, now)
				}
			})
		}
		post := func(u int, in []pulsebase.SampleInput) bool {
			if _, err := s.Ingest.Ingest(ctx, ids[u], pulsebase.Principal{Subject: ids[u], Role: pulsebase.RoleUser}, in); err != nil {
				b.Error(err)
				return false
			}
			return true
		}
		b.StartTimer()
		const duration = 10 * time.Second
		const perTick = 50
		tick := time.NewTicker(time.Second * perTick / time.Duration(rate))
		moods := time.NewTicker(duration / time.Duration(users))
		var wg sync.WaitGroup
		next, mood := 0, 0
		base := time.Now().Add(-time.Minute).Truncate(time.Minute)
		zone := pbtest.MiddayZone(time.Now())
		for deadline := time.Now().Add(duration); time.Now().Before(deadline); {
			select {
			case <-moods.C:
				if mood == users {
					continue
				}
				u := mood
				mood++
				wg.Go(func() {
					in := []pulsebase.SampleInput{{Type: "mood", Value: json.RawMessage("4"), Start: time.Now().In(zone).Format(time.RFC3339), Source: "app"}}
					if !post(u, in) {
						return
					}
					lat.ack(ids[u], time.Now())
				})
			case <-tick.C:
				for range perTick {
					u := next % users
					at := base.Add(-time.Duration(next/users) * time.Minute)
					next++
					wg.Go(func() {
						v, _ := json.Marshal(60 + u%40)
						post(u, []pulsebase.SampleInput{{Type: "heart_rate", Value: v, Start: at.In(zone).Format(time.RFC3339), Source: "bench"}})
					})
				}
			}
		}
		tick.Stop()
		moods.Stop()
		wg.Wait()
		missing := lat.wait(30 * time.Second)
		b.StopTimer()
		cancel()
		readers.Wait()
		b.ReportMetric(float64(next)/duration.Seconds(), "offered/s")
		b.ReportMetric(float64(lat.hist.TotalCount()), "recommendations")
		lat.report(b, "rec")
		b.ReportMetric(float64(lat.hist.Max())/1000, "rec-max-ms")
		b.ReportMetric(float64(missing), "never-arrived")
	}
}
