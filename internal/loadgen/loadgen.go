// Package loadgen is the load generator behind `pulsebase bench`: it sends batches of
// realistic, never-duplicate samples to a Pulsebase server (HTTPTarget) or, as a
// baseline, publishes messages of the same sizes straight to the server's JetStream
// (BrokerTarget), and reports throughput, latency from an HDR histogram and the server
// process's memory and CPU time.
//
// A run is either open loop (Options.Rate > 0: requests are due at fixed intervals and
// latency counts from the due time, so a slow server cannot hide its queueing by slowing
// the generator down, the coordinated-omission mistake) or closed loop (Rate 0: a fixed
// number of workers send back to back, which finds the maximum throughput).
//
// Only cmd/pulsebase imports it. It depends on the domain package for sample validation
// and on the NATS client, never on the server's internals, so that what it measures is
// what any client would see.
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
}

// DefaultLateSlack is the default Options.LateSlack.
const DefaultLateSlack = 5 * time.Millisecond

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
	// The generator's own CPU time matters when it shares the machine with the server.
	self, _ = watchProc(os.Getpid())

	start := time.Now()
	var window time.Duration
	if o.Rate > 0 {
		window = openLoop(ctx, t, w, o, rec, start)
	} else {
		closedLoop(ctx, t, o, rec, start)
	}
	elapsed := time.Since(start)
	if o.Rate == 0 {
		window = elapsed
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
	rec.fill(r, w.Batch(), window, elapsed)
	return r, nil
}

// closedLoop runs o.Concurrency workers that each send a request as soon as their
// previous one is answered. Latency is each request's own round trip.
func closedLoop(ctx context.Context, t Target, o Options, rec *recorder, start time.Time) {
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
				rec.record(out, time.Since(sent), false)
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
func openLoop(ctx context.Context, t Target, w *Workload, o Options, rec *recorder, start time.Time) time.Duration {
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
			rec.record(out, time.Since(due), late)
		})
	}
	rec.notSent.Add(total - n)
	wg.Wait()
	return time.Duration(total) * interval
}

// recorder collects outcomes from concurrent requests.
type recorder struct {
	notSent atomic.Int64

	mu         sync.Mutex
	hist       *hdrhistogram.Histogram // microseconds
	sent       int64
	late       int64
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
	ms := func(us int64) float64 { return float64(us) / 1000 }
	rep.Latency = Latency{
		Count: r.hist.TotalCount(),
		Mean:  r.hist.Mean() / 1000,
		P50:   ms(r.hist.ValueAtQuantile(50)),
		P95:   ms(r.hist.ValueAtQuantile(95)),
		P99:   ms(r.hist.ValueAtQuantile(99)),
		P999:  ms(r.hist.ValueAtQuantile(99.9)),
		Max:   ms(r.hist.Max()),
	}
}
