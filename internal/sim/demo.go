package sim

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"
)

// DemoUsers are the external subjects of the demo population.
var DemoUsers = []string{"demo-alice", "demo-bob", "demo-carol"}

// demoHistory is how much history the demo backfills: two weeks and two days, so that
// yesterday already has 14 whole days before it and the personal baselines are
// established for yesterday and today (elevated_rhr looks at two days running).
const demoHistory = 16 * 24 * time.Hour

// DemoConfig is the demo's run against baseURL as of now: three people with a watch and a
// phone, two weeks of history (demoHistory) backfilled newest day first beside the live
// phase, so that today's data is there at once, and live in real time. Their episodes are
// scripted so that the recommendations have something to say: alice came back from a
// trip last week, bob has been ill since the day before yesterday (resting heart rate up,
// HRV down), carol has had a week of short, irregular nights.
func DemoConfig(baseURL string, now time.Time) Config {
	day := 24 * time.Hour
	return Config{
		Server: baseURL,
		Population: Population{Seed: 1, Users: len(DemoUsers), DevicesPerUser: 2, ScriptedOnly: true,
			Scripted: map[int][]Episode{
				0: {{Kind: Travel, Start: now.Add(-9 * day), Days: 4}},
				1: {{Kind: Illness, Start: now.Add(-2 * day), Days: 6, RHRShift: 12, HRVFactor: 0.65}},
				2: {{Kind: PoorSleep, Start: now.Add(-7 * day), Days: 9}},
			}},
		Subjects:           DemoUsers,
		History:            demoHistory,
		Speed:              1,
		Start:              now,
		Concurrency:        len(DemoUsers),
		NewestFirst:        true,
		LiveDuringBackfill: true,
		Progress:           -1,
	}
}

// RunDemo feeds the demo users (DemoConfig) until ctx is done, over hc (nil: a default
// client), each user's watch through a sync session of the SDK. It prints a token of the
// first demo user on stdout so that the README's tour can use it. Failed requests are
// retried; the demo stops the server only when a token cannot be minted or the server
// refuses them.
func RunDemo(ctx context.Context, baseURL string, hc *http.Client, token func(user string) (string, error), stdout io.Writer, log *slog.Logger) error {
	tok, err := token(DemoUsers[0])
	if err != nil {
		return fmt.Errorf("demo token: %w", err)
	}
	fmt.Fprintf(stdout, "demo: token for %s (valid 24h):\n%s\n", DemoUsers[0], tok)
	if hc == nil {
		hc = &http.Client{Timeout: time.Minute}
	}
	cfg := DemoConfig(baseURL, time.Now())
	log.Info("demo: backfilling two weeks of history in the background, then live", "users", len(DemoUsers))
	if _, err := Run(ctx, cfg, token, hc, io.Discard, log); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	return nil
}
