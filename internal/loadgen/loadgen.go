// Package loadgen is the load generator behind `pulsebase bench`: it sends batches of
// realistic, never-duplicate samples to a Pulsebase server, as POST /v1/samples requests
// (HTTPTarget) or as samples frames over sync WebSocket connections (WSTarget), or, as a
// baseline, publishes messages of the same sizes straight to the server's JetStream
// (BrokerTarget). It reports throughput, latency from an HDR histogram and the server
// process's memory and CPU time; with the server's /metrics (Metrics), the samples the
// processor handled and its lag over time; with sync subscribers (Subscribers), the time
// from a sample's ack to its change at a device. SearchMax looks for the highest rate
// the server sustains.
//
// A run is either open loop (Options.Rate > 0: requests are due at fixed intervals and
// latency counts from the due time, so a slow server cannot hide its queueing by slowing
// the generator down, the coordinated-omission mistake) or closed loop (Rate 0: a fixed
// number of workers send back to back, which finds the maximum throughput).
//
// Only cmd/pulsebase imports it. It depends on the domain package for sample validation,
// on the NATS and WebSocket clients and on the sample record's encoding (to size the
// broker baseline's messages), never on the server's services, so that what it measures
// is what any client would see.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Target is what a run sends its requests to. Send must be safe for concurrent use.
type Target interface {
	// Name identifies the target in reports: "http" or "broker".
	Name() string
	// Send sends request n of the run, a batch of Workload.Batch samples, and waits for
	// the answer. It does not return an error: a failure is an Outcome like any other.
	Send(ctx context.Context, n int64) Outcome
}

// Outcome is the answer to one request.
type Outcome struct {
	// Status classifies the answer for the report: the HTTP status code ("202"), "ok"
	// for a batch the broker acknowledged, or "error" when there was no answer.
	Status string
	// Accepted, Duplicates and Rejected count the request's samples by fate.
	Accepted, Duplicates, Rejected int
	// Err, if not nil, says why a request failed; the report keeps a few.
	Err error
}

// Options shape a run.
type Options struct {
	// Duration is how long requests are started for; in-flight ones are then awaited.
	Duration time.Duration
	// Rate is the offered load in samples per second. Zero means closed loop.
	Rate float64
	// Concurrency is the number of workers in closed loop, and the most requests in
	// flight at once in open loop.
	Concurrency int
	// Requests, if positive, ends a closed-loop run after that many requests even if
	// Duration has not passed (benchmarks use it).
	Requests int64
	// LateSlack is how long after its due time an open-loop request may start and still
	// count as on time; zero means DefaultLateSlack.
	LateSlack time.Duration
	// ServerPID, if positive, is the server's process id on this machine: the report
	// then gives its memory and CPU time during the run, read from /proc.
	ServerPID int

	// Metrics, if not nil, is the server's /metrics, read when the run starts, every
	// MetricsEvery (zero: every second) and when it ends: the report then gives the
	// samples processed, the processor's lag over time and the sync connections.
	Metrics      *Metrics
	MetricsEvery time.Duration
	// Subscribers, if not nil, are told of every acknowledged request; after the last
	// answer the run waits up to DeliveryTimeout (zero: 10 s) for the markers still on
	// their way, and the report gives the ack → delivery latency.
	Subscribers     *Subscribers
	DeliveryTimeout time.Duration
	// Progress, if not nil, is called every ProgressEvery (zero: every second) while
	// requests are being sent, from a goroutine of its own.
	Progress      func(Progress)
	ProgressEvery time.Duration
}

// Progress is a run so far.
type Progress struct {
	Elapsed, Duration time.Duration
	// Answered is the requests answered; Accepted the samples accepted; Failed the
	// requests that failed.
	Answered, Accepted, Failed int64
	// Lag is the processor's lag last read from the metrics, in messages; -1 without.
	Lag int64
	// Deliveries is the markers delivered to subscribers.
	Deliveries int64
}

// Defaults of Options.
const (
	DefaultLateSlack       = 5 * time.Millisecond
	DefaultMetricsEvery    = time.Second
	DefaultDeliveryTimeout = 10 * time.Second
	DefaultProgressEvery   = time.Second
)

// Latency bounds of the histogram: 1 µs to 10 minutes at 3 significant digits.
const (
	histMin = 1
	histMax = int64(10 * time.Minute / time.Microsecond)
)

// maxErrorSamples is how many distinct error messages a report keeps.
const maxErrorSamples = 5

// Run sends w's requests to t according to o and returns the report. It returns an error
// only for bad options or when ctx ends first; failed requests are in the report.
func Run(ctx context.Context, t Target, w *Workload, o Options) (*Report, error) {
	switch {
	case o.Duration <= 0:
		return nil, errors.New("loadgen: duration must be positive")
	case o.Rate < 0:
		return nil, errors.New("loadgen: rate must not be negative")
	case o.Concurrency < 1:
		return nil, errors.New("loadgen: concurrency must be at least 1")
	}
	if o.LateSlack == 0 {
		o.LateSlack = DefaultLateSlack
	}
	if o.MetricsEvery <= 0 {
		o.MetricsEvery = DefaultMetricsEvery
	}
	if o.DeliveryTimeout <= 0 {
		o.DeliveryTimeout = DefaultDeliveryTimeout
	}
	if o.ProgressEvery <= 0 {
		o.ProgressEvery = DefaultProgressEvery
	}
	rec := newRecorder()
	r := &Report{
		Target:      t.Name(),
		Mode:        "closed",
		Rate:        o.Rate,
		Batch:       w.Batch(),
		Users:       w.Users(),
		Concurrency: o.Concurrency,
		Started:     time.Now().UTC(),
		BodyBytes:   w.MeanBodyBytes(),
		StoredBytes: w.MeanStoredBytes(),
	}
	if o.Rate > 0 {
		r.Mode = "open"
	}
	var server, self *procWatch
	if o.ServerPID > 0 {
		var err error
		if server, err = watchProc(o.ServerPID); err != nil {
			return nil, fmt.Errorf("loadgen: server process %d: %w", o.ServerPID, err)
		}
	}
	// The generator's own CPU time matters when it shares the machine with the server,
	// unless the server runs in the generator's process: then the server's figures are
	// the process's.
	if o.ServerPID != os.Getpid() {
		self, _ = watchProc(os.Getpid())
	}

	start := time.Now()
	var mon *monitor
	if o.Metrics != nil {
		var err error
		if mon, err = startMonitor(ctx, o.Metrics, o.MetricsEvery, start); err != nil {
			if server != nil {
				server.stop()
			}
			if self != nil {
				self.stop()
			}
			return nil, fmt.Errorf("loadgen: server metrics: %w", err)
		}
	}
	stopProgress := progress(o, rec, mon, start)
	answered := func(n int64, out Outcome, latency time.Duration, late bool) {
		at := time.Now()
		rec.record(out, latency, late)
		if o.Subscribers != nil && out.Accepted > 0 {
			o.Subscribers.Acked(w.User(n), at)
		}
	}
	var window time.Duration
	if o.Rate > 0 {
		window = openLoop(ctx, t, w, o, rec, start, answered)
	} else {
		closedLoop(ctx, t, o, start, answered)
	}
	elapsed := time.Since(start)
	stopProgress()
	if o.Rate == 0 {
		window = elapsed
	}
	rec.fill(r, w.Batch(), window, elapsed)
	if mon != nil {
		rate := o.Rate
		if rate == 0 {
			rate = r.AcceptedPerSec
		}
		r.Pipeline = mon.stop(ctx, window, elapsed, rate)
	}
	if o.Subscribers != nil && ctx.Err() == nil {
		o.Subscribers.Wait(ctx, o.DeliveryTimeout)
		r.Sync = o.Subscribers.Report()
	}
	var serverErr error
	if server != nil {
		r.Server, serverErr = server.stop()
	}
	if self != nil {
		r.Bench, _ = self.stop()
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("loadgen: run interrupted: %w", context.Cause(ctx))
	}
	if serverErr != nil {
		return nil, fmt.Errorf("loadgen: server process %d: %w", o.ServerPID, serverErr)
	}
	return r, nil
}

// progress calls o.Progress every o.ProgressEvery until the returned function is called.
func progress(o Options, rec *recorder, mon *monitor, start time.Time) (stop func()) {
	if o.Progress == nil {
		return func() {}
	}
	stopc, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(o.ProgressEvery)
		defer t.Stop()
		for {
			select {
			case <-stopc:
				return
			case <-t.C:
			}
			p := Progress{Elapsed: time.Since(start), Duration: o.Duration, Lag: -1}
			p.Answered, p.Accepted, p.Failed = rec.counts()
			if mon != nil {
				p.Lag = mon.lastLag()
			}
			if o.Subscribers != nil {
				p.Deliveries = o.Subscribers.Deliveries()
			}
			o.Progress(p)
		}
	}()
	return func() {
		close(stopc)
		<-done
	}
}

// closedLoop runs o.Concurrency workers that each send a request as soon as their
// previous one is answered. Latency is each request's own round trip.
func closedLoop(ctx context.Context, t Target, o Options, start time.Time, answered answerFunc) {
	end := start.Add(o.Duration)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range o.Concurrency {
		wg.Go(func() {
			for ctx.Err() == nil && time.Now().Before(end) {
				n := next.Add(1) - 1
				if o.Requests > 0 && n >= o.Requests {
					return
				}
				sent := time.Now()
				out := t.Send(ctx, n)
				answered(n, out, time.Since(sent), false)
			}
		})
	}
	wg.Wait()
}

// openLoop starts request n at start + n×interval, where interval = batch / rate, with
// at most o.Concurrency in flight. A request that cannot start within LateSlack of its
// due time, because the in-flight bound is reached, counts as late, and its latency still
// counts from the due time. Requests due before the end that could not start at all
// count as not sent. It returns the scheduling window, the run's nominal duration.
func openLoop(ctx context.Context, t Target, w *Workload, o Options, rec *recorder, start time.Time, answered answerFunc) time.Duration {
	interval := time.Duration(float64(w.Batch()) / o.Rate * float64(time.Second))
	if interval <= 0 {
		interval = 1
	}
	total := int64((o.Duration + interval - 1) / interval)
	end := start.Add(o.Duration)
	slots := make(chan struct{}, o.Concurrency)
	timer := time.NewTimer(0)
	defer timer.Stop()
	var wg sync.WaitGroup
	n := int64(0)
schedule:
	for ; n < total; n++ {
		due := start.Add(time.Duration(n) * interval)
		if d := time.Until(due); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				break schedule
			}
		}
		select {
		case slots <- struct{}{}:
		default:
			// Every slot is taken: wait for one, but not past the end of the run.
			timer.Reset(time.Until(end))
			select {
			case slots <- struct{}{}:
			case <-timer.C:
				break schedule
			case <-ctx.Done():
				break schedule
			}
		}
		late := time.Since(due) > o.LateSlack
		req := n // n outlives the loop, to count what was not sent
		wg.Go(func() {
			defer func() { <-slots }()
			out := t.Send(ctx, req)
			answered(req, out, time.Since(due), late)
		})
	}
	rec.notSent.Add(total - n)
	wg.Wait()
	return time.Duration(total) * interval
}

// answerFunc takes the outcome of request n, its latency and whether it started late.
type answerFunc func(n int64, out Outcome, latency time.Duration, late bool)

// recorder collects outcomes from concurrent requests.
type recorder struct {
	notSent atomic.Int64

	mu         sync.Mutex
	hist       *hdrhistogram.Histogram // microseconds
	sent       int64
	late       int64
	failed     int64
	byStatus   map[string]int64
	accepted   int64
	duplicates int64
	rejected   int64
	errors     []string
}

func newRecorder() *recorder {
	return &recorder{hist: hdrhistogram.New(histMin, histMax, 3), byStatus: map[string]int64{}}
}

func (r *recorder) record(o Outcome, latency time.Duration, late bool) {
	us := max(int64(latency/time.Microsecond), histMin)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hist.RecordValue(min(us, histMax))
	r.sent++
	if late {
		r.late++
	}
	r.byStatus[o.Status]++
	if o.Err != nil {
		r.failed++
	}
	r.accepted += int64(o.Accepted)
	r.duplicates += int64(o.Duplicates)
	r.rejected += int64(o.Rejected)
	if o.Err != nil && len(r.errors) < maxErrorSamples {
		msg := o.Status + ": " + o.Err.Error()
		for _, e := range r.errors {
			if e == msg {
				return
			}
		}
		r.errors = append(r.errors, msg)
	}
}

// counts returns the requests answered, samples accepted and requests failed so far.
func (r *recorder) counts() (answered, accepted, failed int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sent, r.accepted, r.failed
}

// fill completes r once every request has finished. window is the time over which the
// load was offered, elapsed the time until the last answer.
func (r *recorder) fill(rep *Report, batch int, window, elapsed time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	notSent := r.notSent.Load()
	rep.Window = window.Seconds()
	rep.Elapsed = elapsed.Seconds()
	rep.Requests = RequestCounts{
		Offered:  r.sent + notSent,
		Sent:     r.sent,
		Late:     r.late,
		NotSent:  notSent,
		ByStatus: r.byStatus,
	}
	rep.Samples = SampleCounts{
		Offered:    (r.sent + notSent) * int64(batch),
		Accepted:   r.accepted,
		Duplicates: r.duplicates,
		Rejected:   r.rejected,
	}
	if window > 0 {
		rep.OfferedPerSec = float64(rep.Samples.Offered) / window.Seconds()
	}
	if elapsed > 0 {
		rep.AcceptedPerSec = float64(rep.Samples.Accepted) / elapsed.Seconds()
	}
	rep.Errors = r.errors
	rep.Latency = latencyOf(r.hist)
}

// latencyOf summarizes a histogram of microseconds in milliseconds.
func latencyOf(h *hdrhistogram.Histogram) Latency {
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return Latency{
		Count: h.TotalCount(),
		Mean:  h.Mean() / 1000,
		P50:   ms(h.ValueAtQuantile(50)),
		P95:   ms(h.ValueAtQuantile(95)),
		P99:   ms(h.ValueAtQuantile(99)),
		P999:  ms(h.ValueAtQuantile(99.9)),
		Max:   ms(h.Max()),
	}
}
