package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/client"
)

// MaxBatch is the most samples one request carries (API.md's limit).
const MaxBatch = 5000

// Config is a simulation run: who, against which server, over which simulated time.
type Config struct {
	// Server is the base URL of the server, e.g. "http://127.0.0.1:8080".
	Server     string
	Population Population
	// Subjects are the people's external subjects, the subjects of their tokens; nil means
	// Subject(seed, i) for person i.
	Subjects []string
	// History is the simulated time backfilled before the live phase, as fast as the
	// server takes it. With a day or more, each person's history starts at their first
	// wake-up in it, so that their first day is whole.
	History time.Duration
	// Duration is how long the live phase runs, in real time; 0 runs until ctx is done.
	Duration time.Duration
	// Speed is how many simulated seconds the live phase covers per real second; 0 means
	// 1. The simulated clock never runs ahead of the real one: samples are never dated
	// in the future.
	Speed float64
	// Start is the simulated time at which the history ends and the live phase starts.
	// Zero means now − (Speed − 1) × Duration: the live phase reaches the present as it
	// ends (just now at Speed 1, or with Duration 0).
	Start time.Time
	// Concurrency bounds the HTTP requests in flight; 0 means 4.
	Concurrency int
	// NewestFirst backfills the most recent day first and goes back from there, so that
	// today's charts fill at once; by default the history goes oldest first, as a device
	// catching up would send it.
	NewestFirst bool
	// LiveDuringBackfill starts the live phase at once, with the backfill beside it.
	LiveDuringBackfill bool
	// Tick is how often, in real time, the live phase uploads what is due; 0 means 1 s.
	Tick time.Duration
	// Progress is how often progress is logged; 0 means every 10 s, negative never.
	Progress time.Duration
	// Drain bounds how long, after the live phase, the run waits for what is queued to
	// be acknowledged; 0 means 30 s.
	Drain time.Duration
}

// Validate reports the first problem of c, if any.
func (c *Config) Validate() error {
	u, err := url.Parse(c.Server)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return fmt.Errorf("server %q: want http(s)://HOST:PORT", c.Server)
	case c.Population.Users < 1:
		return fmt.Errorf("users %d: want at least 1", c.Population.Users)
	case c.Population.DevicesPerUser < 0 || c.Population.DevicesPerUser > MaxDevicesPerUser:
		return fmt.Errorf("devices per user %d: want 1..%d", c.Population.DevicesPerUser, MaxDevicesPerUser)
	case !(c.Population.MalformedRate >= 0 && c.Population.MalformedRate <= 1):
		return fmt.Errorf("malformed rate %g: want 0..1", c.Population.MalformedRate)
	case c.Population.ResendRate > 1 || math.IsNaN(c.Population.ResendRate):
		return fmt.Errorf("resend rate %g: want at most 1", c.Population.ResendRate)
	case c.Subjects != nil && len(c.Subjects) != c.Population.Users:
		return fmt.Errorf("%d subjects for %d users", len(c.Subjects), c.Population.Users)
	case c.History < 0:
		return fmt.Errorf("history %s: want 0 or more", c.History)
	case c.Duration < 0:
		return fmt.Errorf("duration %s: want 0 (until interrupted) or more", c.Duration)
	case c.Speed < 0 || math.IsNaN(c.Speed) || math.IsInf(c.Speed, 0):
		return fmt.Errorf("speed %g: want more than 0", c.Speed)
	case c.Start.After(time.Now()):
		return fmt.Errorf("start %s is in the future", c.Start.Format(time.RFC3339))
	case c.Concurrency < 0:
		return fmt.Errorf("concurrency %d: want 1 or more", c.Concurrency)
	}
	return nil
}

// Report is what a run did.
type Report struct {
	Seed    uint64 `json:"seed"`
	Users   int    `json:"users"`
	Devices int    `json:"devices"`
	// From is where the history starts, Live where the live phase started and To where
	// the simulated clock stopped.
	From  time.Time `json:"from"`
	Live  time.Time `json:"live"`
	To    time.Time `json:"to"`
	Speed float64   `json:"speed"`
	// Generated counts the samples the devices sent or queued, re-sends and corrupted
	// copies included: Resent and Malformed of them.
	Generated int `json:"generated"`
	Resent    int `json:"resent"`
	Malformed int `json:"malformed"`
	// Injected counts the corrupted copies by the code the server should reject them with:
	// with every category consented, Rejected should equal it.
	Injected map[string]int `json:"injected"`
	// Accepted, Duplicates and Rejected (by code) are the server's answers.
	Accepted   int            `json:"accepted"`
	Duplicates int            `json:"duplicates"`
	Rejected   map[string]int `json:"rejected"`
	// Failed counts samples of requests the server refused for good (not 422: each of
	// those samples is in Rejected). Generated − Answered − Failed were still in flight or
	// queued when the run stopped.
	Failed int `json:"failed"`
	// Requests counts answered HTTP requests and Retries the ones sent again; SyncBatches
	// the batches acknowledged over sync sessions and Changes the changes those sessions
	// received from the server.
	Requests    int           `json:"requests"`
	Retries     int           `json:"retries"`
	SyncBatches int           `json:"sync_batches"`
	Changes     int           `json:"changes"`
	Elapsed     time.Duration `json:"elapsed_ns"`
	// Interrupted is set when the run stopped because its context was done.
	Interrupted bool `json:"interrupted"`
}

// RejectedTotal is the number of samples rejected, whatever the code.
func (r *Report) RejectedTotal() int {
	n := 0
	for _, v := range r.Rejected {
		n += v
	}
	return n
}

// Answered is the number of samples the server answered for.
func (r *Report) Answered() int { return r.Accepted + r.Duplicates + r.RejectedTotal() }

// WriteText writes the report for people.
func (r *Report) WriteText(w io.Writer) error {
	codes := make([]string, 0, len(r.Rejected))
	for c := range r.Rejected {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	var byCode []string
	for _, c := range codes {
		byCode = append(byCode, fmt.Sprintf("%s %d", c, r.Rejected[c]))
	}
	rej := ""
	if len(byCode) > 0 {
		rej = " (" + strings.Join(byCode, ", ") + ")"
	}
	state := "done"
	if r.Interrupted {
		state = "interrupted"
	}
	const day = "2006-01-02 15:04 MST"
	_, err := fmt.Fprintf(w, `simulate %s: seed %d, %d users, %d devices
simulated:  %s → %s (history %s, live from %s at %g×)
samples:    generated %d (re-sent %d, malformed %d)
answered:   accepted %d, duplicates %d, rejected %d%s
unanswered: %d (failed %d)
requests:   HTTP %d (retries %d), sync batches %d, sync changes received %d
elapsed:    %s
`, state, r.Seed, r.Users, r.Devices,
		r.From.UTC().Format(day), r.To.UTC().Format(day), r.Live.Sub(r.From), r.Live.UTC().Format(day), r.Speed,
		r.Generated, r.Resent, r.Malformed,
		r.Accepted, r.Duplicates, r.RejectedTotal(), rej,
		r.Generated-r.Answered(), r.Failed,
		r.Requests, r.Retries, r.SyncBatches, r.Changes,
		r.Elapsed.Round(time.Millisecond))
	return err
}

// stats is the report of a run in progress.
type stats struct {
	mu sync.Mutex
	r  Report
}

func (s *stats) update(f func(r *Report)) {
	s.mu.Lock()
	f(&s.r)
	s.mu.Unlock()
}

func (s *stats) snapshot() Report {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.r
	r.Rejected, r.Injected = maps.Clone(s.r.Rejected), maps.Clone(s.r.Injected)
	return r
}

func (s *stats) answered(accepted, duplicates int, rejected []pulsebase.Rejection) {
	s.update(func(r *Report) {
		r.Accepted += accepted
		r.Duplicates += duplicates
		for _, x := range rejected {
			r.Rejected[x.Code]++
		}
	})
}

func (s *stats) generated(u Upload) {
	s.update(func(r *Report) {
		r.Generated += len(u.Samples)
		r.Resent += u.Resent
		r.Malformed += u.Malformed
		for i := 0; i < len(u.Samples) && u.Malformed > 0; i++ {
			if c := MalformedCode(u.Samples[i]); c != "" {
				r.Injected[c]++
			}
		}
	})
}

// runner runs one Config.
type runner struct {
	cfg    Config
	tokens func(subject string) (string, error)
	hc     *http.Client
	log    *slog.Logger
	st     *stats
	sem    chan struct{} // a slot per request in flight

	begin      time.Time // real time the run began
	since      time.Time // simulated start of the history
	liveStart  time.Time // simulated start of the live phase
	members    []*member
	simulating sync.Mutex // guards clockNow
	clockNow   time.Time  // the live phase's simulated clock, for the report
}

// member is one person of the population with their connection to the server.
type member struct {
	p       *Person
	subject string
	// since is where the person's history starts: the run's, or with a day or more of
	// history their first wake-up in it, so that their first day is whole (a partial
	// first day, without its night, gives the server a lopsided resting heart rate).
	since time.Time

	mu   sync.Mutex
	c    *client.Client // replaced when the token is refreshed
	sess *client.Session
	done chan struct{} // closed when the session's Run returned
}

func (m *member) client() *client.Client {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.c
}

// Run feeds the population of cfg to the server: each person's app records their consent
// (every category, for personalization), their watch opens a sync session, then the
// history is backfilled through POST /v1/samples in batches of at most MaxBatch, as fast
// as the server takes them, and the live phase sends each device's uploads when they are
// due at cfg.Speed — the watch's through its sync session, the others' over HTTP. tokens
// gives a token for a subject, and is asked again when one expires.
//
// Run returns when the live phase ended and what was queued was acknowledged (or
// cfg.Drain passed), or when ctx is done; either way with the report, which it also writes
// to out. Failed requests are retried with backoff; the error is for what retrying cannot
// mend: a bad configuration, a token that cannot be minted, or a server that refuses the
// tokens.
func Run(ctx context.Context, cfg Config, tokens func(subject string) (string, error), hc *http.Client, out io.Writer, log *slog.Logger) (Report, error) {
	if err := cfg.Validate(); err != nil {
		return Report{}, err
	}
	if cfg.Speed == 0 {
		cfg.Speed = 1
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = 4
	}
	if cfg.Tick <= 0 {
		cfg.Tick = time.Second
	}
	if cfg.Progress == 0 {
		cfg.Progress = 10 * time.Second
	}
	if cfg.Drain <= 0 {
		cfg.Drain = 30 * time.Second
	}
	if hc == nil {
		hc = &http.Client{Timeout: 60 * time.Second}
	}
	r := &runner{cfg: cfg, tokens: tokens, hc: hc, log: log, st: &stats{}, sem: make(chan struct{}, cfg.Concurrency), begin: time.Now()}
	r.liveStart = cfg.Start
	if r.liveStart.IsZero() {
		r.liveStart = r.begin.Add(-time.Duration((cfg.Speed - 1) * float64(cfg.Duration)))
		if cfg.Speed < 1 {
			r.liveStart = r.begin
		}
	}
	r.liveStart = r.liveStart.Truncate(time.Second)
	r.since = r.liveStart.Add(-cfg.History)
	r.clockNow = r.liveStart
	r.st.r = Report{Seed: cfg.Population.Seed, Users: cfg.Population.Users, From: r.since, Live: r.liveStart,
		Speed: cfg.Speed, Rejected: map[string]int{}, Injected: map[string]int{}}

	rep, err := r.run(ctx)
	if err != nil {
		return rep, err
	}
	return rep, rep.WriteText(out)
}

func (r *runner) run(ctx context.Context) (Report, error) {
	sessions, stopSessions := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSessions()
	defer r.closeSessions(stopSessions)
	if err := r.setup(ctx, sessions); err != nil {
		if ctx.Err() != nil {
			return r.finish(ctx), nil
		}
		return Report{}, err
	}
	stopProgress := r.progress(ctx)
	defer stopProgress()

	var wg sync.WaitGroup
	if r.cfg.LiveDuringBackfill {
		wg.Go(func() { r.backfill(ctx) })
	} else {
		r.backfill(ctx)
	}
	if ctx.Err() == nil {
		r.log.Info("simulate: live", "speed", r.cfg.Speed, "duration", r.cfg.Duration)
		r.live(ctx)
	}
	wg.Wait()
	if ctx.Err() == nil {
		r.drain(ctx)
	}
	return r.finish(ctx), nil
}

// finish completes the report.
func (r *runner) finish(ctx context.Context) Report {
	rep := r.st.snapshot()
	r.simulating.Lock()
	rep.To = r.clockNow
	r.simulating.Unlock()
	rep.Elapsed = time.Since(r.begin)
	rep.Interrupted = ctx.Err() != nil
	return rep
}

// setup makes each member's client, records their consent and opens their watch's sync
// session (run under sessions).
func (r *runner) setup(ctx context.Context, sessions context.Context) error {
	pop := &r.cfg.Population
	r.members = make([]*member, pop.Users)
	for i := range r.members {
		subject := Subject(pop.Seed, i)
		if r.cfg.Subjects != nil {
			subject = r.cfg.Subjects[i]
		}
		m := &member{p: pop.User(i), subject: subject, since: r.since}
		if r.cfg.History >= 24*time.Hour {
			if d := m.p.dayAt(r.since); !m.p.wake(d).Equal(r.since) {
				m.since = m.p.wake(d + 1)
			}
		}
		r.members[i] = m
	}
	devices := 0
	for _, m := range r.members {
		devices += len(m.p.Devices)
	}
	r.st.update(func(rep *Report) { rep.Devices = devices })

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(r.members))
	var wg sync.WaitGroup
	for _, m := range r.members {
		if !r.acquire(sctx) {
			break
		}
		wg.Go(func() {
			defer r.release()
			if err := r.connect(sctx, sessions, m); err != nil {
				errs <- err
				cancel()
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	return ctx.Err()
}

// connect sets m up: a token, the consent, a sync session for the devices that sync.
func (r *runner) connect(ctx, sessions context.Context, m *member) error {
	tok, err := r.tokens(m.subject)
	if err != nil {
		return fmt.Errorf("token for %s: %w", m.subject, err)
	}
	m.c = client.New(r.cfg.Server, tok, client.WithHTTPClient(r.hc))
	collect := map[pulsebase.Category]bool{}
	for _, c := range pulsebase.Categories() {
		collect[c] = true
	}
	purposes := map[pulsebase.Purpose]bool{pulsebase.PurposePersonalization: true,
		pulsebase.PurposeResearch: m.p.Research, pulsebase.PurposeModelTraining: m.p.ModelTraining}
	err = r.retry(ctx, m, "consent", func() error {
		_, err := m.client().SetConsent(ctx, collect, purposes)
		return err
	})
	if err != nil {
		return fmt.Errorf("consent for %s: %w", m.subject, err)
	}
	for _, d := range m.p.Devices {
		if !d.Sync {
			continue
		}
		sess, err := m.c.Sync(client.SyncOptions{
			Device:      d.ID,
			TokenSource: func(context.Context) (string, error) { return r.tokens(m.subject) },
			OnAck: func(a client.Ack) {
				if a.Kind == "samples" {
					r.st.answered(a.Accepted, a.Duplicates, a.Rejected)
					r.st.update(func(rep *Report) { rep.SyncBatches++ })
				}
			},
			OnChange: func(client.Change) { r.st.update(func(rep *Report) { rep.Changes++ }) },
			OnError:  func(err error) { r.log.Debug("simulate: sync", "device", d.ID, "err", err) },
		})
		if err != nil {
			return fmt.Errorf("sync session of %s: %w", d.ID, err)
		}
		m.sess, m.done = sess, make(chan struct{})
		go func() {
			defer close(m.done)
			if err := sess.Run(sessions); sessions.Err() == nil {
				r.log.Warn("simulate: sync session stopped", "device", d.ID, "err", err)
			}
		}()
		break // one session per person: a user has one watch
	}
	return nil
}

// closeSessions stops the sync sessions and waits for them.
func (r *runner) closeSessions(stop context.CancelFunc) {
	stop()
	for _, m := range r.members {
		if m != nil && m.sess != nil {
			<-m.done
			m.sess.Close()
		}
	}
}

// backfill sends the history, person by person (cfg.Concurrency at once), day by day.
func (r *runner) backfill(ctx context.Context) {
	if !r.since.Before(r.liveStart) {
		return
	}
	r.log.Info("simulate: backfilling", "users", len(r.members), "from", r.since, "to", r.liveStart)
	var days [][2]time.Time
	for a := r.since; a.Before(r.liveStart); a = a.Add(24 * time.Hour) {
		days = append(days, [2]time.Time{a, minTime(a.Add(24*time.Hour), r.liveStart)})
	}
	if r.cfg.NewestFirst {
		slices.Reverse(days)
	}
	var wg sync.WaitGroup
	work := make(chan *member)
	for range min(r.cfg.Concurrency, len(r.members)) {
		wg.Go(func() {
			for m := range work {
				for _, d := range days {
					if ctx.Err() != nil {
						return
					}
					r.sendHTTP(ctx, m, m.p.Uploads(m.since, maxTime(d[0], m.since), d[1]))
				}
			}
		})
	}
	for _, m := range r.members {
		select {
		case work <- m:
		case <-ctx.Done():
		}
	}
	close(work)
	wg.Wait()
	if ctx.Err() == nil {
		rep := r.st.snapshot()
		r.log.Info("simulate: backfill done", "generated", rep.Generated, "accepted", rep.Accepted, "duplicates", rep.Duplicates,
			"rejected", rep.RejectedTotal(), "elapsed", time.Since(r.begin).Round(time.Millisecond))
	}
}

// simNow is the live phase's simulated clock: cfg.Speed times as fast as the real one
// from the run's beginning, never ahead of it.
func (r *runner) simNow() time.Time {
	now := time.Now()
	t := r.liveStart.Add(time.Duration(r.cfg.Speed * float64(now.Sub(r.begin))))
	if t.After(now) {
		t = now
	}
	return t.Truncate(time.Second)
}

// live sends each member's uploads as they fall due until cfg.Duration has passed or ctx
// is done.
func (r *runner) live(ctx context.Context) {
	lctx, cancel := ctx, context.CancelFunc(func() {})
	if r.cfg.Duration > 0 {
		lctx, cancel = context.WithTimeout(ctx, r.cfg.Duration)
	}
	defer cancel()
	var wg sync.WaitGroup
	for _, m := range r.members {
		wg.Go(func() {
			last := r.liveStart
			t := time.NewTicker(r.cfg.Tick)
			defer t.Stop()
			for {
				select {
				case <-lctx.Done():
					return
				case <-t.C:
				}
				now := r.simNow()
				if !now.After(last) {
					continue
				}
				var viaHTTP []Upload
				var viaSync []pulsebase.SampleInput
				for _, u := range m.p.Uploads(m.since, last, now) {
					if m.p.Devices[u.Device].Sync && m.sess != nil {
						r.st.generated(u)
						viaSync = append(viaSync, u.Samples...)
						continue
					}
					viaHTTP = append(viaHTTP, u)
				}
				// The tick's uploads of the watch go as one entry of its session's queue
				// (split at MaxBatch): at high speeds, fewer round trips.
				if len(viaSync) > 0 {
					if err := m.sess.SendSamples(viaSync); err != nil {
						r.log.Warn("simulate: queue samples", "subject", m.subject, "err", err)
					}
				}
				last = now
				r.simulating.Lock()
				r.clockNow = maxTime(r.clockNow, now)
				r.simulating.Unlock()
				// A slow server slows this person's uploads down, not the others'; the next
				// tick catches up. A batch under way when the phase ends is finished.
				r.sendHTTP(ctx, m, viaHTTP)
			}
		})
	}
	wg.Wait()
}

// drain waits until the sync sessions have no samples queued, for at most cfg.Drain.
func (r *runner) drain(ctx context.Context) {
	deadline := time.Now().Add(r.cfg.Drain)
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for time.Now().Before(deadline) {
		pending := 0
		for _, m := range r.members {
			if m.sess != nil {
				pending += m.sess.Pending()
			}
		}
		if pending == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
	r.log.Warn("simulate: samples still queued in sync sessions after the drain period", "drain", r.cfg.Drain)
}

// sendHTTP posts uploads, packed into requests of at most MaxBatch samples.
func (r *runner) sendHTTP(ctx context.Context, m *member, uploads []Upload) {
	var batch []pulsebase.SampleInput
	for _, u := range uploads {
		r.st.generated(u)
		for s := u.Samples; len(s) > 0; {
			n := min(len(s), MaxBatch-len(batch))
			batch = append(batch, s[:n]...)
			s = s[n:]
			if len(batch) == MaxBatch {
				r.post(ctx, m, batch)
				batch = nil
			}
		}
	}
	if len(batch) > 0 {
		r.post(ctx, m, batch)
	}
}

// post sends one batch, retrying what may succeed later, and counts the answer.
func (r *runner) post(ctx context.Context, m *member, batch []pulsebase.SampleInput) {
	if !r.acquire(ctx) {
		return
	}
	defer r.release()
	err := r.retry(ctx, m, "samples", func() error {
		res, err := m.client().PostSamples(ctx, batch)
		var ce *client.Error
		switch {
		case err == nil:
			r.st.answered(res.Accepted, res.Duplicates, res.Rejected)
		case errors.As(err, &ce) && ce.Status == http.StatusUnprocessableEntity && len(ce.Rejected) > 0:
			r.st.answered(0, 0, ce.Rejected) // every sample rejected
		default:
			return err
		}
		r.st.update(func(rep *Report) { rep.Requests++ })
		return nil
	})
	if err != nil && ctx.Err() == nil {
		r.st.update(func(rep *Report) { rep.Failed += len(batch) })
		r.log.Warn("simulate: batch refused", "subject", m.subject, "samples", len(batch), "err", err)
	}
}

// retry calls f until it succeeds, fails for good, or ctx is done: network errors, 429
// and 5xx are retried with exponential backoff; a 401 once, with a new token.
func (r *runner) retry(ctx context.Context, m *member, what string, f func() error) error {
	backoff := 250 * time.Millisecond
	refreshed := false
	for attempt := 1; ; attempt++ {
		err := f()
		if err == nil || ctx.Err() != nil {
			return err
		}
		var ce *client.Error
		if errors.As(err, &ce) {
			switch {
			case ce.Status == http.StatusUnauthorized && !refreshed:
				refreshed = true
				tok, terr := r.tokens(m.subject)
				if terr != nil {
					return fmt.Errorf("new token: %w", terr)
				}
				m.mu.Lock()
				m.c = client.New(r.cfg.Server, tok, client.WithHTTPClient(r.hc))
				m.mu.Unlock()
				continue
			case ce.Status == http.StatusUnauthorized:
				return fmt.Errorf("%w (does the server trust the tokens? with the built-in issuer, use the server's data directory)", err)
			case ce.Status != http.StatusTooManyRequests && ce.Status < 500:
				return err
			}
		}
		level := slog.LevelDebug
		if attempt%10 == 5 {
			level = slog.LevelWarn
		}
		r.log.Log(ctx, level, "simulate: retrying", "what", what, "subject", m.subject, "attempt", attempt, "err", err)
		r.st.update(func(rep *Report) { rep.Retries++ })
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

func (r *runner) acquire(ctx context.Context) bool {
	select {
	case r.sem <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (r *runner) release() { <-r.sem }

// progress logs the counts every cfg.Progress until the returned function is called.
func (r *runner) progress(ctx context.Context) func() {
	if r.cfg.Progress < 0 {
		return func() {}
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(r.cfg.Progress)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-stop:
				return
			case <-t.C:
			}
			rep := r.st.snapshot()
			r.simulating.Lock()
			clock := r.clockNow
			r.simulating.Unlock()
			r.log.Info("simulate: progress", "clock", clock.Format(time.RFC3339), "generated", rep.Generated,
				"accepted", rep.Accepted, "duplicates", rep.Duplicates, "rejected", rep.RejectedTotal(), "retries", rep.Retries)
		}
	}()
	return func() { close(stop); <-done }
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
