// Package sim makes wellness data that looks like the real thing: a small demo population
// whose watches sync with the server through the Go SDK (client), so a newcomer running
// `make run` sees the server work.
//
// It is imported by cmd/pulsebase. It talks to the server only through the public API,
// like an app.
package sim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/client"
)

// DemoUsers are the external subjects of the demo population.
var DemoUsers = []string{"demo-alice", "demo-bob", "demo-carol"}

// demoTick is how often each demo user's devices upload.
const demoTick = 10 * time.Second

// RunDemo feeds the demo users until ctx is done: first the last two hours of minute data,
// then live data every few seconds, each user's watch a sync session of the SDK over hc
// (nil: a default client) that queues the samples and delivers them when connected. It
// prints a token of the first demo user on stdout so that the README's tour can use it.
// Failures are logged and retried; the demo never stops the server.
func RunDemo(ctx context.Context, baseURL string, hc *http.Client, token func(user string) (string, error), stdout io.Writer, log *slog.Logger) error {
	toks := make(map[string]string, len(DemoUsers))
	for _, u := range DemoUsers {
		t, err := token(u)
		if err != nil {
			return fmt.Errorf("demo token: %w", err)
		}
		toks[u] = t
	}
	fmt.Fprintf(stdout, "demo: token for %s (valid 24h):\n%s\n", DemoUsers[0], toks[DemoUsers[0]])
	rng := rand.New(rand.NewPCG(1, 2))
	var opts []client.Option
	if hc != nil {
		opts = append(opts, client.WithHTTPClient(hc))
	}
	watches := make([]*client.Session, len(DemoUsers))
	for i, u := range DemoUsers {
		c := client.New(baseURL, toks[u], opts...)
		// Like an app, ask each user first: they consent to heart and activity data being
		// collected and used to personalize their experience.
		if _, err := c.SetConsent(ctx, map[pulsebase.Category]bool{pulsebase.CategoryHeart: true, pulsebase.CategoryActivity: true},
			map[pulsebase.Purpose]bool{pulsebase.PurposePersonalization: true}); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("demo consent: %w", err)
		}
		device := "demo-watch-" + strconv.Itoa(i)
		sess, err := c.Sync(client.SyncOptions{Device: device,
			OnError: func(err error) { log.Debug("demo sync", "device", device, "err", err) }})
		if err != nil {
			return fmt.Errorf("demo sync: %w", err)
		}
		watches[i] = sess
		go func() {
			if err := sess.Run(ctx); ctx.Err() == nil {
				log.Warn("demo sync stopped", "device", device, "err", err)
			}
		}()
	}
	last := time.Now().Add(-2 * time.Hour).Truncate(time.Minute)
	t := time.NewTicker(demoTick)
	defer t.Stop()
	for {
		if now := time.Now().Truncate(time.Minute); now.After(last) {
			for i, w := range watches {
				if err := w.SendSamples(demoMinutes(rng, i, last, now)); err != nil {
					log.Warn("demo queue", "err", err)
				}
			}
			last = now
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// demoMinutes makes heart rate and steps for each minute in [from, to) with a daily rhythm:
// lower heart rate at night, walks now and then by day.
func demoMinutes(rng *rand.Rand, who int, from, to time.Time) []pulsebase.SampleInput {
	var out []pulsebase.SampleInput
	for m := from; m.Before(to); m = m.Add(time.Minute) {
		h := float64(m.Hour()) + float64(m.Minute())/60
		rest := 58 + 4*float64(who)
		circ := 6 * math.Sin((h-9)/24*2*math.Pi)
		steps := 0.0
		if h > 7 && h < 22 && rng.Float64() < 0.3 {
			steps = math.Round(40 + rng.Float64()*80)
		}
		hr := math.Round(rest + circ + steps*0.25 + rng.NormFloat64()*2)
		start := m.Format(time.RFC3339)
		src := fmt.Sprintf("demo-watch-%d", who)
		out = append(out,
			pulsebase.SampleInput{ID: fmt.Sprintf("%s-hr-%d", src, m.Unix()), Type: "heart_rate", Value: number(hr), Unit: "bpm", Start: start, Source: src},
			pulsebase.SampleInput{ID: fmt.Sprintf("%s-st-%d", src, m.Unix()), Type: "steps", Value: number(steps), Unit: "count", Start: start,
				End: m.Add(time.Minute).Format(time.RFC3339), Source: src},
		)
	}
	return out
}

// number encodes v as a JSON number.
func number(v float64) json.RawMessage {
	return strconv.AppendFloat(nil, v, 'f', -1, 64)
}
