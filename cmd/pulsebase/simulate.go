package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/auth"
	"github.com/pulsebase/pulsebase/internal/sim"
)

// maxSimulateUsers bounds --users: every person holds a sync connection, a token and a few
// days of samples in memory (about 0.25 MB).
const maxSimulateUsers = 10_000

// simulateConfig is every setting of `pulsebase simulate`.
type simulateConfig struct {
	Server      string
	DataDir     string
	Users       int
	Devices     int
	Seed        uint64
	Speed       float64
	History     time.Duration
	Duration    time.Duration
	Start       string // RFC 3339; "" means computed
	Malformed   float64
	Resend      float64
	Concurrency int
	NewestFirst bool
	Timeout     time.Duration
}

func (c *simulateConfig) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.Server, "server", "http://127.0.0.1:8080", "base `URL` of the server")
	fs.StringVar(&c.DataDir, "data-dir", defaultDataDir, "the server's data directory `DIR`, whose issuer key signs the users' tokens")
	fs.IntVar(&c.Users, "users", 10, "people in the population (subjects sim-SEED-0000, sim-SEED-0001, …)")
	fs.IntVar(&c.Devices, "devices-per-user", 2, "devices per person `D` (1–8): a watch, then a phone, a scale, extra bands")
	fs.Uint64Var(&c.Seed, "seed", 1, "seed `S` of the population: the same seed gives the same people, samples and uploads")
	fs.Float64Var(&c.Speed, "speed", 1, "simulated seconds per real second `X` in the live phase; the simulated clock never passes the real one")
	fs.DurationVar(&c.History, "history", 14*24*time.Hour, "simulated history backfilled first, as fast as the server takes it")
	fs.DurationVar(&c.Duration, "duration", 0, "how long the live phase runs (real time); 0 runs until interrupted")
	fs.StringVar(&c.Start, "start", "", "simulated `TIME` (RFC 3339) where the history ends and the live phase begins;\ndefault: now − (speed − 1) × duration, so that the live phase ends at the present")
	fs.Float64Var(&c.Malformed, "malformed-rate", 0.001, "share `R` of samples a device also sends in a corrupted copy (out of range, bad unit, missing end, …)")
	fs.Float64Var(&c.Resend, "resend-rate", sim.DefaultResendRate, "chance `R` that an upload repeats the previous one (a lost acknowledgement); 0 for none")
	fs.IntVar(&c.Concurrency, "concurrency", 4, "HTTP requests in flight at most")
	fs.BoolVar(&c.NewestFirst, "newest-first", false, "backfill the most recent day first (default: oldest first, as a device catching up)")
	fs.DurationVar(&c.Timeout, "timeout", time.Minute, "how long one request may take")
}

// config turns the flags into a run of the simulator.
func (c *simulateConfig) config() (sim.Config, error) {
	cfg := sim.Config{
		Server: c.Server,
		Population: sim.Population{Seed: c.Seed, Users: c.Users, DevicesPerUser: c.Devices,
			MalformedRate: c.Malformed, ResendRate: c.Resend},
		History:     c.History,
		Duration:    c.Duration,
		Speed:       c.Speed,
		Concurrency: c.Concurrency,
		NewestFirst: c.NewestFirst,
	}
	if c.Resend == 0 {
		cfg.Population.ResendRate = -1 // none: the Population's zero means the default
	}
	switch {
	case c.Users < 1 || c.Users > maxSimulateUsers:
		return cfg, fmt.Errorf("--users %d: want 1..%d", c.Users, maxSimulateUsers)
	case c.Devices < 1 || c.Devices > sim.MaxDevicesPerUser:
		return cfg, fmt.Errorf("--devices-per-user %d: want 1..%d", c.Devices, sim.MaxDevicesPerUser)
	case !(c.Speed > 0):
		return cfg, fmt.Errorf("--speed %g: want more than 0", c.Speed)
	case !(c.Malformed >= 0 && c.Malformed <= 1):
		return cfg, fmt.Errorf("--malformed-rate %g: want 0..1", c.Malformed)
	case !(c.Resend >= 0 && c.Resend <= 1):
		return cfg, fmt.Errorf("--resend-rate %g: want 0..1", c.Resend)
	case c.History < 0:
		return cfg, fmt.Errorf("--history %s: want 0 or more", c.History)
	case c.Duration < 0:
		return cfg, fmt.Errorf("--duration %s: want 0 (until interrupted) or more", c.Duration)
	case c.Concurrency < 1 || c.Concurrency > 1000:
		return cfg, fmt.Errorf("--concurrency %d: want 1..1000", c.Concurrency)
	case c.Timeout <= 0:
		return cfg, fmt.Errorf("--timeout %s: want more than 0", c.Timeout)
	case c.DataDir == "":
		return cfg, errors.New("--data-dir must not be empty")
	}
	if c.Start != "" {
		t, err := time.Parse(time.RFC3339, c.Start)
		if err != nil {
			return cfg, fmt.Errorf("--start %q: want an RFC 3339 time", c.Start)
		}
		cfg.Start = t
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("--%s", err)
	}
	return cfg, nil
}

const simulateSynopsis = `Usage: pulsebase simulate [--server URL --data-dir DIR] [--users N] [--devices-per-user D]
                          [--seed S] [--history 336h] [--speed X] [--duration D] [--start TIME]
                          [--malformed-rate 0.001] [--resend-rate 0.03]

Feeds the server a seeded synthetic population through the Go SDK, as their apps and
devices would: each person's app records their consent (every category), their watch
keeps a sync session (WebSocket), their other devices post over HTTP. First --history of
data is backfilled in batches of at most 5,000 samples as fast as the server takes them;
then the live phase uploads what each device measured when it is due, at --speed
simulated seconds per real second, for --duration (0: until interrupted). At the end, or
on SIGINT, it prints what was generated and sent, accepted, duplicates and rejections by
code.

People have a circadian heart rate that dips at night, activity bouts with coupled steps,
heart rate, energy and intensity, sleep cycles, nightly HRV and resting heart rate, water,
weight and mood logs, and episodes (illness, overtraining, poor-sleep weeks, trips across
time zones). Devices batch, go offline and catch up, re-send, have skewed clocks, deliver
out of order and now and then send a malformed sample. Everything is a pure function of
--seed, the person and the simulated time: a second run with the same seed sends the same
samples (the server counts them as duplicates). Tokens are minted from the data
directory's issuer key, as 'pulsebase token' does. See docs/simulator.md.`

func runSimulate(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var c simulateConfig
	fs := flag.NewFlagSet("simulate", flag.ContinueOnError)
	c.flags(fs)
	fs.Usage = usageFunc(fs, simulateSynopsis)
	if err := parseFlags(fs, args, getenv, stderr); err != nil {
		return err
	}
	cfg, err := c.config()
	if err != nil {
		return usageErr(fs, err.Error())
	}
	iss, err := auth.OpenIssuer(filepath.Join(c.DataDir, issuerKeyFile), auth.DefaultIssuer, auth.DefaultAudience)
	if err != nil {
		return fmt.Errorf("open token key: %w", err)
	}
	tokens := func(subject string) (string, error) {
		return iss.Mint(auth.TokenRequest{Subject: subject, Role: pulsebase.RoleUser, TTL: 24 * time.Hour}, time.Now())
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	hc := &http.Client{Timeout: c.Timeout, Transport: &http.Transport{Proxy: http.ProxyFromEnvironment,
		MaxIdleConnsPerHost: c.Concurrency, IdleConnTimeout: 90 * time.Second}}
	rep, err := sim.Run(ctx, cfg, tokens, hc, stdout, log)
	if err != nil {
		return err
	}
	if !rep.Interrupted && rep.Accepted+rep.Duplicates == 0 && rep.Generated > 0 {
		return errors.New("simulate: the server accepted no sample")
	}
	return nil
}
