// Package sim makes wellness data that looks like the real thing: a small demo population
// fed through the public HTTP API, so a newcomer running `make run` sees the server work.
//
// It is imported by cmd/pulsebase. It talks to the server only over HTTP, like an app.
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
	"strings"
	"time"
)

// DemoUsers are the external subjects of the demo population.
var DemoUsers = []string{"demo-alice", "demo-bob", "demo-carol"}

// demoTick is how often each demo user's devices upload.
const demoTick = 10 * time.Second

type demoSample struct {
	ID     string  `json:"id"`
	Type   string  `json:"type"`
	Value  float64 `json:"value"`
	Unit   string  `json:"unit"`
	Start  string  `json:"start"`
	End    string  `json:"end,omitempty"`
	Source string  `json:"source"`
}

// RunDemo feeds the demo users until ctx is done: first the last two hours of minute data,
// then live data every few seconds, through client (nil: a default client). It prints a token of the first demo user on stdout so
// that the README's tour can use it. Upload failures are logged and retried next tick; the
// demo never stops the server.
func RunDemo(ctx context.Context, baseURL string, client *http.Client, token func(user string) (string, error), stdout io.Writer, log *slog.Logger) error {
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
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	// Like an app, ask each user first: they consent to heart and activity data being
	// collected and used to personalize their experience.
	for _, u := range DemoUsers {
		if err := send(ctx, client, "PUT", baseURL+"/v1/users/me/consents", toks[u], demoConsent); err != nil {
			return fmt.Errorf("demo consent: %w", err)
		}
	}
	last := time.Now().Add(-2 * time.Hour).Truncate(time.Minute)
	t := time.NewTicker(demoTick)
	defer t.Stop()
	for {
		now := time.Now().Truncate(time.Minute)
		if now.After(last) {
			ok := true
			for i, u := range DemoUsers {
				batch := demoMinutes(rng, i, last, now)
				if err := post(ctx, client, baseURL, toks[u], batch); err != nil {
					if ctx.Err() != nil {
						return nil
					}
					log.Warn("demo upload failed", "err", err)
					ok = false
				}
			}
			if ok {
				last = now
			}
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
func demoMinutes(rng *rand.Rand, who int, from, to time.Time) []demoSample {
	var out []demoSample
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
			demoSample{ID: fmt.Sprintf("%s-hr-%d", src, m.Unix()), Type: "heart_rate", Value: hr, Unit: "bpm", Start: start, Source: src},
			demoSample{ID: fmt.Sprintf("%s-st-%d", src, m.Unix()), Type: "steps", Value: steps, Unit: "count", Start: start,
				End: m.Add(time.Minute).Format(time.RFC3339), Source: src},
		)
	}
	return out
}

const demoConsent = `{"collect":{"heart":true,"activity":true},"purposes":{"personalization":true}}`

func post(ctx context.Context, c *http.Client, baseURL, token string, batch []demoSample) error {
	for len(batch) > 0 {
		n := min(len(batch), 2000)
		body, err := json.Marshal(map[string]any{"samples": batch[:n]})
		if err != nil {
			return err
		}
		if err := send(ctx, c, "POST", baseURL+"/v1/samples", token, string(body)); err != nil {
			return err
		}
		batch = batch[n:]
	}
	return nil
}

// send makes one JSON request and fails unless it gets a 2xx answer.
func send(ctx context.Context, c *http.Client, method, url, token, body string) error {
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s", method, url, resp.Status)
	}
	return nil
}
