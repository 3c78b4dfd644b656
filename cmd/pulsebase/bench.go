package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/mattn/go-isatty"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/auth"
	"github.com/pulsebase/pulsebase/internal/loadgen"
)

// Baselines of `pulsebase bench --baseline`.
const (
	baselineNone   = "none"   // the Pulsebase run only
	baselineBroker = "broker" // the broker baseline only
	baselineBoth   = "both"   // the broker baseline, then the Pulsebase run, and their ratio
)

// Transports of `pulsebase bench --transport`.
const (
	transportHTTP = "http" // POST /v1/samples
	transportWS   = "ws"   // samples frames over sync WebSocket connections
)

// maxBenchUsers bounds --users: every user costs a token and, on the server, a key.
const maxBenchUsers = 100_000

// benchConfig is every setting of `pulsebase bench`.
type benchConfig struct {
	Server      string // "" means a server in this process
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
	Transport   string
	Subscribers int
	// DeliveryTimeout is how long after the last answer a run waits for its markers to
	// reach the subscribers.
	DeliveryTimeout time.Duration
	FindMax         bool
	MaxP99          time.Duration
	MaxSteps        int
}

func (c *benchConfig) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.Server, "server", "", "base `URL` of the server under test; empty: start one in this process, on a temporary data directory")
	fs.StringVar(&c.DataDir, "data-dir", defaultDataDir, "with --server: the server's data directory `DIR`, whose issuer key signs the users' tokens")
	fs.DurationVar(&c.Duration, "duration", 20*time.Second, "how long each run sends requests (with --find-max: each step)")
	fs.Float64Var(&c.Rate, "rate", 0, "offered samples per second `R` (open loop, latency from each request's due time);\n0 means closed loop: --concurrency workers send as fast as answers come.\nWith --find-max: the first rate tried (default 5000)")
	fs.IntVar(&c.Users, "users", 100, "users the requests are spread over (tokens for bench-user-000000…)")
	fs.IntVar(&c.Batch, "batch", 500, "samples per request (1..5000)")
	fs.IntVar(&c.Concurrency, "concurrency", 8, "closed loop: concurrent workers; open loop: most requests in flight at once")
	fs.DurationVar(&c.Timeout, "timeout", 30*time.Second, "how long one request may take")
	fs.StringVar(&c.Transport, "transport", transportHTTP, "how samples are sent (`KIND`): http (POST /v1/samples) or ws (samples frames over sync WebSocket\nconnections, one or more per user, each frame awaiting its ack)")
	fs.IntVar(&c.Subscribers, "subscribers", 0, "sync subscribers `K`: WebSocket connections as devices of the first users (subscriber k is user\nk mod --users) that time each sample's ack → its change at the device")
	fs.DurationVar(&c.DeliveryTimeout, "delivery-timeout", loadgen.DefaultDeliveryTimeout, "how long after a run's last answer to wait for changes still on their way to subscribers")
	fs.IntVar(&c.ServerPID, "server-pid", 0, "process id `PID` of the server on this machine: report its memory and CPU time from /proc\n(default with no --server: this process)")
	fs.StringVar(&c.Baseline, "baseline", baselineNone, "what to run (`KIND`): none (Pulsebase only), broker (publish the same load straight to JetStream)\nor both (broker, then Pulsebase, and their ratio)")
	fs.StringVar(&c.NATSURL, "nats-url", "", "with --server: nats:// `URL` of the server's broker for --baseline (serve with --nats-listen)")
	fs.BoolVar(&c.Sealed, "sealed", false, "seal every batch to the server's processing key (application/pulsebase-sealed+json), as privacy-minded\ndevices do (http transport)")
	fs.BoolVar(&c.FindMax, "find-max", false, "search for the highest rate the server sustains: runs of --duration, doubling the rate from --rate\nwhile they pass, then bisecting; a run passes when the processor's lag stays bounded over its\nsecond half, 95% of the offered samples are accepted and the p99 (ack → delivery with\n--subscribers, else ingest) is at most --max-p99")
	fs.DurationVar(&c.MaxP99, "max-p99", 50*time.Millisecond, "--find-max: the p99 latency a sustained rate must stay under. The processor commits\nevery 250 ms, so an ack → delivery p99 takes a bound above that to pass at any rate")
	fs.IntVar(&c.MaxSteps, "max-steps", 12, "--find-max: the most runs the search makes")
	fs.StringVar(&c.JSON, "json", "", "also write the report, with every figure, as JSON to `FILE`")
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
	case c.Subscribers < 0:
		return fmt.Errorf("--subscribers %d: want 0 or more", c.Subscribers)
	case c.DeliveryTimeout <= 0:
		return fmt.Errorf("--delivery-timeout %s: want more than 0", c.DeliveryTimeout)
	}
	switch c.Baseline {
	case baselineNone, baselineBroker, baselineBoth:
	default:
		return fmt.Errorf("--baseline %q: want none, broker or both", c.Baseline)
	}
	switch c.Transport {
	case transportHTTP, transportWS:
	default:
		return fmt.Errorf("--transport %q: want http or ws", c.Transport)
	}
	if c.Sealed && c.Transport == transportWS {
		return errors.New("--sealed goes with --transport http: samples frames carry plain samples")
	}
	// Senders and subscribers share the gateway's connections per user.
	senders := 0
	if c.Transport == transportWS {
		senders = 1
	}
	if per := (c.Subscribers + c.Users - 1) / c.Users; per+senders > loadgen.MaxSyncConnsPerUser {
		return fmt.Errorf("--subscribers %d over --users %d is %d per user: the gateway takes %d sync connections per user", c.Subscribers, c.Users, per, loadgen.MaxSyncConnsPerUser)
	}
	if c.Subscribers > 0 && c.Baseline == baselineBroker {
		return errors.New("--subscribers needs a Pulsebase run: --baseline none or both")
	}
	if c.FindMax {
		switch {
		case c.Baseline != baselineNone:
			return errors.New("--find-max searches Pulsebase's rate alone: drop --baseline")
		case c.MaxP99 <= 0:
			return fmt.Errorf("--max-p99 %s: want more than 0", c.MaxP99)
		case c.MaxSteps < 1 || c.MaxSteps > 50:
			return fmt.Errorf("--max-steps %d: want 1..50", c.MaxSteps)
		}
	}
	if c.Server == "" {
		if c.NATSURL != "" {
			return errors.New("--nats-url goes with --server: a server in this process exposes its own broker")
		}
		return nil
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
			return fmt.Errorf("--baseline %s with --server needs --nats-url nats://HOST:PORT", c.Baseline)
		}
	}
	return nil
}

const benchSynopsis = `Usage: pulsebase bench [--server URL --data-dir DIR] [--duration 20s] [--rate R]
                       [--users N] [--batch B] [--concurrency C] [--transport http|ws]
                       [--subscribers K] [--server-pid PID] [--json FILE]
                       [--baseline none|broker|both [--nats-url nats://…]]
                       [--find-max [--max-p99 50ms] [--max-steps 12]]
       pulsebase bench chart --out FILE.svg REPORT.json…

Sends batches of realistic samples to a Pulsebase server and reports samples/s offered,
accepted and processed, requests by status, ingest latency percentiles, the processor's
lag over the run, sync connections, and the server's memory and CPU time. Every sample is
new, so nothing is dropped as a duplicate. Tokens are minted from the data directory's
issuer key, as 'pulsebase token' does.

Without --server, a whole server (embedded broker, SQLite, defaults, no rate limits)
starts in this process on a temporary data directory and is removed afterwards; its
memory and CPU time are this process's, the generator's included. With --server, the
server's /metrics must be reachable at the same URL.

--transport http posts each batch to POST /v1/samples; --transport ws sends it as a
samples frame over sync WebSocket connections (one per user, more when the rate needs
them: the gateway takes 20 frames a second per connection) and waits for its ack.

--subscribers K opens K sync connections as devices of the first users. Each request of
those users carries a marker sample, and the time from its ack to the marker's series
change at the device is the ack → delivery latency (p50/p95/p99/max).

With --rate R the load is open loop: requests of --batch samples are due every batch/R
seconds whatever the server does, latency counts from the due time, and requests that had
to wait for one of the --concurrency in-flight slots are counted as late. With --rate 0
(the default) --concurrency workers send back to back: the maximum throughput.

--baseline broker publishes the same load, one message per sample of the size the server
stores, straight to the server's JetStream (with --server: serve with --nats-listen
HOST:PORT): the ceiling for the API on that machine. Use a throwaway data directory: the
baseline's messages are not real samples.

--find-max searches for the highest rate the server sustains (see the flag) and reports
every step. 'pulsebase bench chart' draws accepted samples/s against p99 latency from
--json reports (a --find-max report's steps make a curve).

A progress bar runs on stderr when it is a terminal (else a line every 5 s); the table
goes to stdout.`

func runBench(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "chart" {
		return runBenchChart(args[1:], getenv, stdout, stderr)
	}
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
	if cfg.Server == "" {
		fmt.Fprintln(stderr, "bench: starting a server in this process")
		srv, err := startLocalServer(ctx, cfg.Baseline != baselineNone)
		if err != nil {
			return err
		}
		defer func() {
			if err := srv.stop(); err != nil {
				fmt.Fprintln(stderr, "bench: stop the server:", err)
			}
		}()
		cfg.Server, cfg.DataDir, cfg.NATSURL = srv.url, srv.dataDir, srv.natsURL
		if cfg.ServerPID == 0 {
			cfg.ServerPID = os.Getpid()
		}
		fmt.Fprintf(stderr, "bench: server on %s, data in %s\n", srv.url, srv.dataDir)
	}
	b := &bencher{cfg: cfg, stderr: stderr, minutes: &loadgen.MarkerMinutes{}}
	if cfg.Baseline != baselineBroker {
		if err := b.mintTokens(); err != nil {
			return err
		}
		b.metrics = loadgen.NewMetrics(cfg.Server)
		if _, err := b.metrics.Scrape(ctx); err != nil {
			// A server behind a proxy that hides /metrics can still be measured, without
			// the processor's figures.
			fmt.Fprintf(stderr, "bench: no server metrics (%v): samples processed, lag and sync connections will be missing\n", err)
			b.metrics = nil
		}
	}
	var sum *loadgen.Summary
	if cfg.FindMax {
		var err error
		if sum, err = b.findMax(ctx); err != nil {
			return err
		}
		if err := sum.WriteFindMax(stdout); err != nil {
			return err
		}
		if best := sum.FindMax.Best; best >= 0 {
			fmt.Fprintf(stdout, "\nthe highest sustained step (%s samples/s offered):\n", thousandsInt(sum.FindMax.MaxRate))
			if err := loadgen.NewSummary(sum.Runs[best]).WriteTable(stdout); err != nil {
				return err
			}
		}
	} else {
		var runs []*loadgen.Report
		if cfg.Baseline == baselineBroker || cfg.Baseline == baselineBoth {
			r, err := b.broker(ctx)
			if err != nil {
				return err
			}
			runs = append(runs, r)
		}
		if cfg.Baseline != baselineBroker {
			r, err := b.pulsebase(ctx, cfg.Rate)
			if err != nil {
				return err
			}
			runs = append(runs, r)
		}
		sum = loadgen.NewSummary(runs...)
		if err := sum.WriteTable(stdout); err != nil {
			return err
		}
	}
	if cfg.JSON != "" {
		if err := writeJSONFile(cfg.JSON, sum); err != nil {
			return err
		}
	}
	if cfg.FindMax {
		return nil
	}
	for _, r := range sum.Runs {
		if r.Samples.Accepted == 0 {
			return fmt.Errorf("%s run: no sample was accepted", r.Target)
		}
	}
	return nil
}

// bencher makes the runs of one bench invocation.
type bencher struct {
	cfg    benchConfig
	stderr io.Writer
	tokens []string
	// metrics is the server's /metrics; nil when it cannot be read.
	metrics *loadgen.Metrics
	// minutes keeps the runs' marker minutes apart.
	minutes *loadgen.MarkerMinutes
}

// mintTokens mints a user token for every bench user from the data directory's issuer.
func (b *bencher) mintTokens() error {
	iss, err := auth.OpenIssuer(filepath.Join(b.cfg.DataDir, issuerKeyFile), auth.DefaultIssuer, auth.DefaultAudience)
	if err != nil {
		return fmt.Errorf("open token key: %w", err)
	}
	w, err := loadgen.NewWorkload(1, b.cfg.Users, time.Now()) // for the subjects
	if err != nil {
		return err
	}
	// Tokens outlive every run of this invocation, with room for a slow warm-up.
	runs := time.Duration(1)
	if b.cfg.FindMax {
		runs = time.Duration(b.cfg.MaxSteps)
	}
	ttl := min(runs*2*(b.cfg.Duration+b.cfg.DeliveryTimeout)+time.Hour, auth.MaxTTL)
	b.tokens = make([]string, b.cfg.Users)
	for u := range b.tokens {
		b.tokens[u], err = iss.Mint(auth.TokenRequest{Subject: w.Subject(u), Role: pulsebase.RoleUser, TTL: ttl}, time.Now())
		if err != nil {
			return fmt.Errorf("mint token: %w", err)
		}
	}
	return nil
}

func (b *bencher) options(rate float64) loadgen.Options {
	return loadgen.Options{
		Duration:        b.cfg.Duration,
		Rate:            rate,
		Concurrency:     b.cfg.Concurrency,
		ServerPID:       b.cfg.ServerPID,
		DeliveryTimeout: b.cfg.DeliveryTimeout,
	}
}

func (b *bencher) broker(ctx context.Context) (*loadgen.Report, error) {
	w, err := loadgen.NewWorkload(b.cfg.Batch, b.cfg.Users, time.Now())
	if err != nil {
		return nil, err
	}
	t, err := loadgen.NewBrokerTarget(ctx, b.cfg.NATSURL, w)
	if err != nil {
		return nil, fmt.Errorf("broker baseline: %w", err)
	}
	defer t.Close()
	fmt.Fprintf(b.stderr, "bench: broker baseline for %s (%s)\n", b.cfg.Duration, describeLoad(b.cfg, b.cfg.Rate))
	o := b.options(b.cfg.Rate)
	p := newProgressBar(b.stderr, "broker")
	o.Progress, o.ProgressEvery = p.update, p.every
	defer p.done()
	return loadgen.Run(ctx, t, w, o)
}

// target is a Pulsebase target: HTTP or WebSocket.
type target interface {
	loadgen.Target
	WarmUp(ctx context.Context, concurrency int) error
	Close()
}

// pulsebase makes one run against the Pulsebase API at rate samples/s: it waits for the
// processor to finish with earlier runs' samples, prepares the users and subscribers,
// and runs with the server's metrics read along.
func (b *bencher) pulsebase(ctx context.Context, rate float64) (*loadgen.Report, error) {
	cfg := b.cfg
	w, err := loadgen.NewWorkload(cfg.Batch, cfg.Users, time.Now())
	if err != nil {
		return nil, err
	}
	if b.metrics != nil {
		if _, err := b.metrics.WaitIdle(ctx, time.Minute); err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			// The run's processed count then includes the rest of that backlog.
			fmt.Fprintf(b.stderr, "bench: %v; going on\n", err)
		}
	}
	var t target
	conns := 0
	switch cfg.Transport {
	case transportWS:
		wt, err := loadgen.NewWSTarget(cfg.Server, b.tokens, w, loadgen.WSOptions{
			Rate: rate, Reserved: (cfg.Subscribers + cfg.Users - 1) / cfg.Users, Timeout: cfg.Timeout})
		if err != nil {
			return nil, err
		}
		t, conns = wt, wt.Connections()
	default:
		ht, err := loadgen.NewHTTPTarget(cfg.Server, b.tokens, w, cfg.Concurrency, cfg.Timeout)
		if err != nil {
			return nil, err
		}
		if cfg.Sealed {
			ht.Seal()
		}
		t = ht
	}
	defer t.Close()
	fmt.Fprintf(b.stderr, "bench: preparing %d users on %s\n", w.Users(), cfg.Server)
	if err := t.WarmUp(ctx, min(cfg.Concurrency, 16)); err != nil {
		return nil, fmt.Errorf("warm up (is the server up, on this data directory?): %w", err)
	}
	o := b.options(rate)
	o.Metrics = b.metrics
	if cfg.Subscribers > 0 {
		subs, err := loadgen.NewSubscribers(ctx, w, loadgen.SubscriberOptions{
			BaseURL: cfg.Server, Tokens: b.tokens, Count: cfg.Subscribers, Timeout: cfg.Timeout, Minutes: b.minutes})
		if err != nil {
			return nil, fmt.Errorf("subscribers: %w", err)
		}
		defer subs.Close()
		o.Subscribers = subs
	}
	what := "POST /v1/samples"
	if cfg.Transport == transportWS {
		what = fmt.Sprintf("samples frames over %d sync connections", conns)
	}
	if cfg.Subscribers > 0 {
		what += fmt.Sprintf(", %d subscribers", cfg.Subscribers)
	}
	fmt.Fprintf(b.stderr, "bench: %s for %s (%s)\n", what, cfg.Duration, describeLoad(cfg, rate))
	p := newProgressBar(b.stderr, t.Name())
	o.Progress, o.ProgressEvery = p.update, p.every
	r, err := loadgen.Run(ctx, t, w, o)
	p.done()
	if err != nil {
		return nil, err
	}
	r.Connections = conns
	return r, nil
}

// findMax searches for the highest sustained rate, one run per step.
func (b *bencher) findMax(ctx context.Context) (*loadgen.Summary, error) {
	cfg := b.cfg
	start := cfg.Rate
	if start == 0 {
		start = 5000
	}
	s := loadgen.Search{Start: start, MaxSteps: cfg.MaxSteps, MinRate: float64(cfg.Batch)}
	if cfg.Transport == transportWS {
		// Beyond this the users would need more connections than the gateway allows.
		per := loadgen.MaxSyncConnsPerUser - (cfg.Subscribers+cfg.Users-1)/cfg.Users
		s.MaxRate = float64(per*15*cfg.Users*cfg.Batch) * 0.99
	}
	crit := loadgen.NewCriteria(cfg.MaxP99)
	n := 0
	fm, runs, err := loadgen.SearchMax(ctx, s, crit, func(ctx context.Context, rate float64) (*loadgen.Report, error) {
		n++
		fmt.Fprintf(b.stderr, "bench: find-max step %d at %s samples/s\n", n, thousandsInt(rate))
		return b.pulsebase(ctx, rate)
	}, func(st loadgen.Step) {
		verdict := "fail"
		if st.Pass {
			verdict = "pass"
		}
		fmt.Fprintf(b.stderr, "bench: step %d at %s samples/s: %s: %s\n", n, thousandsInt(st.Rate), verdict, st.Reason)
	})
	if err != nil {
		return nil, err
	}
	return &loadgen.Summary{Runs: runs, FindMax: fm}, nil
}

func describeLoad(cfg benchConfig, rate float64) string {
	if rate > 0 {
		return fmt.Sprintf("open loop at %g samples/s, at most %d in flight, %d samples per request", rate, cfg.Concurrency, cfg.Batch)
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

// thousandsInt formats v rounded to an integer with thousands separators.
func thousandsInt(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 && s[i-1] != '-' {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

// progressBar shows a run's progress on stderr: a bar redrawn in place on a terminal,
// else a line every few seconds.
type progressBar struct {
	w     io.Writer
	name  string
	tty   bool
	every time.Duration
	mu    sync.Mutex
	drawn bool
}

func newProgressBar(w io.Writer, name string) *progressBar {
	p := &progressBar{w: w, name: name, every: 5 * time.Second}
	if f, ok := w.(*os.File); ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd())) {
		p.tty, p.every = true, 250*time.Millisecond
	}
	return p
}

func (p *progressBar) update(pr loadgen.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	rate := 0.0
	if s := pr.Elapsed.Seconds(); s > 0 {
		rate = float64(pr.Accepted) / s
	}
	facts := fmt.Sprintf("%s accepted/s, %s answered", thousandsInt(rate), thousandsInt(float64(pr.Answered)))
	if pr.Failed > 0 {
		facts += fmt.Sprintf(", %s failed", thousandsInt(float64(pr.Failed)))
	}
	if pr.Lag >= 0 {
		facts += ", lag " + thousandsInt(float64(pr.Lag))
	}
	if pr.Deliveries > 0 {
		facts += ", " + thousandsInt(float64(pr.Deliveries)) + " delivered"
	}
	elapsed := min(pr.Elapsed, pr.Duration).Truncate(time.Second)
	if !p.tty {
		fmt.Fprintf(p.w, "bench: %s %s/%s: %s\n", p.name, elapsed, pr.Duration, facts)
		return
	}
	const width = 24
	done := int(float64(width) * min(1, pr.Elapsed.Seconds()/pr.Duration.Seconds()))
	bar := strings.Repeat("█", done) + strings.Repeat("░", width-done)
	fmt.Fprintf(p.w, "\r\033[K%s %s %s/%s  %s", p.name, bar, elapsed, pr.Duration, facts)
	p.drawn = true
}

// done clears the bar.
func (p *progressBar) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
		p.drawn = false
	}
}

// The lines `pulsebase serve` prints once it listens.
var (
	serveListening     = regexp.MustCompile(`(?m)^listening on (https?://\S+)`)
	serveNATSListening = regexp.MustCompile(`(?m)^nats listening on (nats://\S+)`)
)

// localServer is a `pulsebase serve` running in this process for a bench.
type localServer struct {
	url, natsURL, dataDir string
	cancel                context.CancelFunc
	done                  chan error
	logs                  *tailBuffer
}

// startLocalServer starts a server with the default settings but rate limits, on a
// temporary data directory and a free loopback port, and waits until it is ready.
// withNATS also exposes its broker, for the broker baseline.
func startLocalServer(ctx context.Context, withNATS bool) (*localServer, error) {
	dir, err := os.MkdirTemp("", "pulsebase-bench-")
	if err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	sctx, cancel := context.WithCancel(ctx)
	s := &localServer{dataDir: dir, cancel: cancel, done: make(chan error, 1), logs: &tailBuffer{max: 16 << 10}}
	args := []string{"--data-dir", dir, "--http-addr", "127.0.0.1:0", "--rate-per-address", "0", "--rate-per-principal", "0",
		"--log-format", "json", "--log-level", "warn"}
	if withNATS {
		args = append(args, "--nats-listen", "127.0.0.1:0")
	}
	out := &tailBuffer{max: 64 << 10}
	// The server reads no PULSEBASE_* variable: those on the bench's command line are
	// the bench's.
	go func() { s.done <- runServe(sctx, args, func(string) string { return "" }, out, s.logs) }()
	fail := func(err error) (*localServer, error) {
		s.stop()
		return nil, fmt.Errorf("start the server: %w\n%s", err, s.logs.String())
	}
	deadline := time.Now().Add(time.Minute)
	for {
		select {
		case err := <-s.done:
			s.done <- err // for stop
			return fail(fmt.Errorf("serve ended: %v", err))
		case <-ctx.Done():
			return fail(context.Cause(ctx))
		case <-time.After(20 * time.Millisecond):
		}
		printed := out.String()
		if m := serveListening.FindStringSubmatch(printed); m != nil {
			s.url = m[1]
			if m := serveNATSListening.FindStringSubmatch(printed); m != nil {
				s.natsURL = m[1]
			}
			if !withNATS || s.natsURL != "" {
				break
			}
		}
		if time.Now().After(deadline) {
			return fail(errors.New("it did not listen within a minute"))
		}
	}
	hc := &http.Client{Timeout: 5 * time.Second}
	for {
		if resp, err := hc.Get(s.url + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		if time.Now().After(deadline) {
			return fail(errors.New("it was not ready within a minute"))
		}
		select {
		case <-ctx.Done():
			return fail(context.Cause(ctx))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop stops the server and removes its data directory.
func (s *localServer) stop() error {
	s.cancel()
	defer os.RemoveAll(s.dataDir)
	select {
	case err := <-s.done:
		if err != nil && !errors.Is(err, context.Canceled) {
			return fmt.Errorf("serve: %w", err)
		}
		return nil
	case <-time.After(30 * time.Second):
		return errors.New("the server did not stop within 30s")
	}
}

// tailBuffer keeps the last max bytes written to it; it is safe for concurrent use.
type tailBuffer struct {
	max int
	mu  sync.Mutex
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
