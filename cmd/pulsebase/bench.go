package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/auth"
	"github.com/pulsebase/pulsebase/internal/loadgen"
)

// Baselines of `pulsebase bench --baseline`.
const (
	baselineNone   = "none"   // the HTTP run only
	baselineBroker = "broker" // the broker baseline only
	baselineBoth   = "both"   // the broker baseline, then the HTTP run, and their ratio
)

// maxBenchUsers bounds --users: every user costs a token and, on the server, a key.
const maxBenchUsers = 100_000

// benchConfig is every setting of `pulsebase bench`.
type benchConfig struct {
	Server      string
	DataDir     string
	Duration    time.Duration
	Rate        float64 // samples/s; 0 means closed loop
	Users       int
	Batch       int
	Concurrency int
	Timeout     time.Duration
	ServerPID   int
	Baseline    string
	NATSURL     string
	JSON        string // file for the JSON report; "" means none
	Sealed      bool   // seal every batch to the processing key
}

func (c *benchConfig) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.Server, "server", "http://127.0.0.1:8080", "base `URL` of the server under test")
	fs.StringVar(&c.DataDir, "data-dir", defaultDataDir, "the server's data directory `DIR`, whose issuer key signs the users' tokens")
	fs.DurationVar(&c.Duration, "duration", 20*time.Second, "how long each run sends requests")
	fs.Float64Var(&c.Rate, "rate", 0, "offered samples per second `R` (open loop, latency from each request's due time);\n0 means closed loop: --concurrency workers send as fast as answers come")
	fs.IntVar(&c.Users, "users", 100, "users the requests are spread over (tokens for bench-user-000000…)")
	fs.IntVar(&c.Batch, "batch", 500, "samples per request (1..5000)")
	fs.IntVar(&c.Concurrency, "concurrency", 8, "closed loop: concurrent workers; open loop: most requests in flight at once")
	fs.DurationVar(&c.Timeout, "timeout", 30*time.Second, "how long one request may take")
	fs.IntVar(&c.ServerPID, "server-pid", 0, "process id `PID` of the server on this machine: report its memory and CPU time from /proc")
	fs.StringVar(&c.Baseline, "baseline", baselineNone, "what to run (`KIND`): none (HTTP only), broker (publish the same load straight to JetStream) or both (broker, then HTTP, and their ratio)")
	fs.StringVar(&c.NATSURL, "nats-url", "", "nats:// `URL` of the server's broker for --baseline (serve with --nats-listen)")
	fs.BoolVar(&c.Sealed, "sealed", false, "seal every batch to the server's processing key (application/pulsebase-sealed+json), as privacy-minded devices do")
	fs.StringVar(&c.JSON, "json", "", "also write the report as JSON to `FILE`")
}

func (c *benchConfig) validate() error {
	switch {
	case c.Duration <= 0:
		return fmt.Errorf("--duration %s: want more than 0", c.Duration)
	case c.Rate < 0:
		return fmt.Errorf("--rate %g: want 0 (closed loop) or more", c.Rate)
	case c.Users < 1 || c.Users > maxBenchUsers:
		return fmt.Errorf("--users %d: want 1..%d", c.Users, maxBenchUsers)
	case c.Batch < 1 || c.Batch > loadgen.MaxBatch:
		return fmt.Errorf("--batch %d: want 1..%d", c.Batch, loadgen.MaxBatch)
	case c.Concurrency < 1 || c.Concurrency > 10_000:
		return fmt.Errorf("--concurrency %d: want 1..10000", c.Concurrency)
	case c.Timeout <= 0:
		return fmt.Errorf("--timeout %s: want more than 0", c.Timeout)
	case c.ServerPID < 0:
		return fmt.Errorf("--server-pid %d: want a process id", c.ServerPID)
	}
	switch c.Baseline {
	case baselineNone, baselineBroker, baselineBoth:
	default:
		return fmt.Errorf("--baseline %q: want none, broker or both", c.Baseline)
	}
	if c.Baseline != baselineBroker {
		u, err := url.Parse(c.Server)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("--server %q: want http://HOST:PORT", c.Server)
		}
		if c.DataDir == "" {
			return errors.New("--data-dir must not be empty")
		}
	}
	if c.Baseline != baselineNone {
		u, err := url.Parse(c.NATSURL)
		if c.NATSURL == "" || err != nil || (u.Scheme != "nats" && u.Scheme != "tls") {
			return fmt.Errorf("--baseline %s needs --nats-url nats://HOST:PORT", c.Baseline)
		}
	}
	return nil
}

const benchSynopsis = `Usage: pulsebase bench [--server URL --data-dir DIR] [--duration 20s] [--rate R]
                       [--users N] [--batch B] [--concurrency C] [--server-pid PID]
                       [--baseline none|broker|both --nats-url nats://…] [--json FILE]

Sends batches of realistic samples to POST /v1/samples and reports samples/s offered and
accepted, requests by status, latency percentiles and, with --server-pid, the server's
memory and CPU time. Every sample is new, so nothing is dropped as a duplicate. Tokens are
minted from the data directory's issuer key, as 'pulsebase token' does.

With --rate R the load is open loop: requests of --batch samples are due every batch/R
seconds whatever the server does, latency counts from the due time, and requests that had
to wait for one of the --concurrency in-flight slots are counted as late. With --rate 0
(the default) --concurrency workers send back to back: the maximum throughput.

--baseline broker publishes the same load, one message per sample of the size the server
stores, straight to the server's JetStream (serve with --nats-listen HOST:PORT): the
ceiling for the API on that machine. Use a throwaway data directory: the baseline's
messages are not real samples.`

func runBench(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var cfg benchConfig
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	cfg.flags(fs)
	fs.Usage = usageFunc(fs, benchSynopsis)
	if err := parseFlags(fs, args, getenv, stderr); err != nil {
		return err
	}
	if err := cfg.validate(); err != nil {
		return usageErr(fs, err.Error())
	}
	return bench(ctx, cfg, stdout, stderr)
}

// bench runs what cfg asks for and reports it on stdout (and in cfg.JSON).
func bench(ctx context.Context, cfg benchConfig, stdout, stderr io.Writer) error {
	w, err := loadgen.NewWorkload(cfg.Batch, cfg.Users, time.Now())
	if err != nil {
		return err
	}
	opts := loadgen.Options{
		Duration:    cfg.Duration,
		Rate:        cfg.Rate,
		Concurrency: cfg.Concurrency,
		ServerPID:   cfg.ServerPID,
	}
	var runs []*loadgen.Report
	if cfg.Baseline == baselineBroker || cfg.Baseline == baselineBoth {
		r, err := benchBroker(ctx, cfg, w, opts, stderr)
		if err != nil {
			return err
		}
		runs = append(runs, r)
	}
	if cfg.Baseline != baselineBroker {
		r, err := benchHTTP(ctx, cfg, w, opts, stderr)
		if err != nil {
			return err
		}
		runs = append(runs, r)
	}

	sum := loadgen.NewSummary(runs...)
	if err := sum.WriteTable(stdout); err != nil {
		return err
	}
	if cfg.JSON != "" {
		if err := writeJSONFile(cfg.JSON, sum); err != nil {
			return err
		}
	}
	for _, r := range runs {
		if r.Samples.Accepted == 0 {
			return fmt.Errorf("%s run: no sample was accepted", r.Target)
		}
	}
	return nil
}

func benchBroker(ctx context.Context, cfg benchConfig, w *loadgen.Workload, opts loadgen.Options, stderr io.Writer) (*loadgen.Report, error) {
	t, err := loadgen.NewBrokerTarget(ctx, cfg.NATSURL, w)
	if err != nil {
		return nil, fmt.Errorf("broker baseline: %w", err)
	}
	defer t.Close()
	fmt.Fprintf(stderr, "bench: broker baseline for %s (%s)\n", cfg.Duration, describeLoad(cfg))
	return loadgen.Run(ctx, t, w, opts)
}

func benchHTTP(ctx context.Context, cfg benchConfig, w *loadgen.Workload, opts loadgen.Options, stderr io.Writer) (*loadgen.Report, error) {
	iss, err := auth.OpenIssuer(filepath.Join(cfg.DataDir, issuerKeyFile), auth.DefaultIssuer, auth.DefaultAudience)
	if err != nil {
		return nil, fmt.Errorf("open token key: %w", err)
	}
	// Tokens outlive every run of this invocation, with room for a slow warm-up.
	ttl := min(2*cfg.Duration+time.Hour, auth.MaxTTL)
	tokens := make([]string, w.Users())
	for u := range tokens {
		tokens[u], err = iss.Mint(auth.TokenRequest{Subject: w.Subject(u), Role: pulsebase.RoleUser, TTL: ttl}, time.Now())
		if err != nil {
			return nil, fmt.Errorf("mint token: %w", err)
		}
	}
	t, err := loadgen.NewHTTPTarget(cfg.Server, tokens, w, cfg.Concurrency, cfg.Timeout)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	if cfg.Sealed {
		t.Seal()
	}
	fmt.Fprintf(stderr, "bench: creating %d users on %s\n", w.Users(), cfg.Server)
	if err := t.WarmUp(ctx, cfg.Concurrency); err != nil {
		return nil, fmt.Errorf("warm up (is the server up, on this data directory?): %w", err)
	}
	fmt.Fprintf(stderr, "bench: POST /v1/samples for %s (%s)\n", cfg.Duration, describeLoad(cfg))
	return loadgen.Run(ctx, t, w, opts)
}

func describeLoad(cfg benchConfig) string {
	if cfg.Rate > 0 {
		return fmt.Sprintf("open loop at %g samples/s, at most %d in flight, %d samples per request", cfg.Rate, cfg.Concurrency, cfg.Batch)
	}
	return fmt.Sprintf("closed loop, %d workers, %d samples per request", cfg.Concurrency, cfg.Batch)
}

func writeJSONFile(path string, sum *loadgen.Summary) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("json report: %w", err)
	}
	if err := sum.WriteJSON(f); err != nil {
		f.Close()
		return fmt.Errorf("json report: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("json report: %w", err)
	}
	return nil
}
