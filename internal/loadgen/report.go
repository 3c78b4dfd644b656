package loadgen

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is the result of one run. Its JSON form is what `pulsebase bench --json` writes.
type Report struct {
	Target      string    `json:"target"` // "http", "http-sealed", "ws" or "broker"
	Mode        string    `json:"mode"`   // "open" (Rate > 0) or "closed"
	Rate        float64   `json:"rate"`   // offered samples per second in open loop; 0 in closed
	Batch       int       `json:"batch"`  // samples per request
	Users       int       `json:"users"`
	Concurrency int       `json:"concurrency"`
	Started     time.Time `json:"started"`
	// Window is the time load was offered over, in seconds: the scheduled duration in
	// open loop, Elapsed in closed loop. Elapsed runs until the last answer.
	Window  float64 `json:"window_seconds"`
	Elapsed float64 `json:"elapsed_seconds"`

	// BodyBytes is the mean size of a request body; StoredBytes the mean size of one
	// stored (encrypted) sample, which is also the broker baseline's message size.
	BodyBytes   float64 `json:"body_bytes"`
	StoredBytes float64 `json:"stored_bytes"`

	Requests RequestCounts `json:"requests"`
	Samples  SampleCounts  `json:"samples"`
	// OfferedPerSec is Samples.Offered / Window; AcceptedPerSec is Samples.Accepted /
	// Elapsed, the throughput the target sustained.
	OfferedPerSec  float64 `json:"offered_per_sec"`
	AcceptedPerSec float64 `json:"accepted_per_sec"`
	// Latency is per request: from its due time in open loop, from its sending in closed
	// loop, to the answer.
	Latency Latency `json:"latency_ms"`

	// Connections is the number of sync connections a ws run sent over.
	Connections int `json:"connections,omitempty"`
	// Pipeline is what the server's /metrics said of the run, when they were read.
	Pipeline *Pipeline `json:"pipeline,omitempty"`
	// Sync is what the run's subscribers measured, when it had some.
	Sync *SyncReport `json:"sync,omitempty"`

	// Server is the server process's usage (with a server pid); Bench the generator's own.
	// When the server runs in the generator's process, the two are the same process.
	Server *ProcUsage `json:"server,omitempty"`
	Bench  *ProcUsage `json:"bench,omitempty"`
	// Errors are a few distinct failure messages, for a first look.
	Errors []string `json:"errors,omitempty"`
}

// Pipeline is the server's side of a run, from the differences and samples of its
// /metrics between the start of the run and its last answer.
type Pipeline struct {
	// Processed is the samples the stream processor handled during the run (the change
	// of pulsebase_processor_samples_total); ProcessedPerSec is that over Elapsed.
	Processed       int64   `json:"processed"`
	ProcessedPerSec float64 `json:"processed_per_sec"`
	// Lag is the processor's lag read every second: the largest
	// pulsebase_processor_lag_messages over partitions, in messages (MetricsSample.Lag).
	Lag     []LagPoint `json:"lag"`
	LagMin  int64      `json:"lag_min"`
	LagMax  int64      `json:"lag_max"`
	LagLast int64      `json:"lag_last"`
	// LagGrowth is how much the lag grew over the second half of the run (a least-squares
	// line through its readings); LagBounded says it grew by less than a second's worth
	// of the offered load: the processor kept up.
	LagGrowth  float64 `json:"lag_growth"`
	LagBounded bool    `json:"lag_bounded"`
	// SyncConnections is the most pulsebase_sync_connections read during the run.
	SyncConnections int64 `json:"sync_connections"`
	// ScrapeErrors counts readings that failed; ScrapeError is the last failure.
	ScrapeErrors int    `json:"scrape_errors,omitempty"`
	ScrapeError  string `json:"scrape_error,omitempty"`
}

// LagPoint is one reading of the lag, T seconds after the run started.
type LagPoint struct {
	T        float64 `json:"t"`
	Messages int64   `json:"messages"`
}

// SyncReport is what a run's subscribers measured (see Subscribers).
type SyncReport struct {
	// Subscribers is the number asked for; Held those still connected at the end.
	Subscribers int `json:"subscribers"`
	Held        int `json:"held"`
	// MarkedUsers is the number of users whose requests carried markers; Markers the
	// marked requests acknowledged.
	MarkedUsers int   `json:"marked_users"`
	Markers     int64 `json:"markers"`
	// Deliveries is the (marker, subscriber) pairs whose delivery was measured; Missing
	// those acknowledged but not delivered by the end of the wait after the run.
	Deliveries int64 `json:"deliveries"`
	Missing    int64 `json:"missing"`
	// AckToDelivery is the time from a marked request's ack to its marker's change at a
	// subscriber.
	AckToDelivery Latency `json:"ack_to_delivery_ms"`
	// Errors are why subscribers' connections ended early.
	Errors []string `json:"errors,omitempty"`
}

// RequestCounts count requests. Offered = Sent + NotSent.
type RequestCounts struct {
	Offered int64 `json:"offered"`
	Sent    int64 `json:"sent"`
	// Late requests (open loop) started more than the late slack after their due time
	// because the in-flight bound was reached: the target was not keeping up.
	Late int64 `json:"late"`
	// NotSent requests (open loop) were due before the end but could not start at all.
	NotSent  int64            `json:"not_sent"`
	ByStatus map[string]int64 `json:"by_status"`
}

// SampleCounts count samples: every offered sample of a sent request is accepted, a
// duplicate, rejected, or lost with a failed request.
type SampleCounts struct {
	Offered    int64 `json:"offered"`
	Accepted   int64 `json:"accepted"`
	Duplicates int64 `json:"duplicates"`
	Rejected   int64 `json:"rejected"`
}

// Latency summarizes the latency histogram, in milliseconds.
type Latency struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P95   float64 `json:"p95"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p999"`
	Max   float64 `json:"max"`
}

// Summary is every run of one bench invocation.
type Summary struct {
	Runs []*Report `json:"runs"`
	// PulsebaseOverBroker is the accepted samples/s of the Pulsebase run (http,
	// http-sealed or ws) divided by the broker baseline's, when both ran: how much of the
	// broker's capacity the API delivers.
	PulsebaseOverBroker float64 `json:"pulsebase_over_broker,omitempty"`
	// FindMax is the search of a --find-max invocation, whose steps' runs are Runs.
	FindMax *FindMax `json:"find_max,omitempty"`
}

// NewSummary gathers runs and computes the Pulsebase/broker ratio when both are there.
func NewSummary(runs ...*Report) *Summary {
	s := &Summary{Runs: runs}
	var apiRate, brokerRate float64
	for _, r := range runs {
		if r.Target == "broker" {
			brokerRate = r.AcceptedPerSec
		} else {
			apiRate = r.AcceptedPerSec
		}
	}
	if apiRate > 0 && brokerRate > 0 {
		s.PulsebaseOverBroker = apiRate / brokerRate
	}
	return s
}

// WriteJSON writes s as indented JSON.
func (s *Summary) WriteJSON(w io.Writer) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// WriteTable writes s as a table with one column per run.
func (s *Summary) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	row := func(name string, f func(r *Report) string) {
		fmt.Fprint(tw, name, "\t")
		for _, r := range s.Runs {
			fmt.Fprint(tw, f(r), "\t")
		}
		fmt.Fprintln(tw)
	}
	ms := func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }
	row("", func(r *Report) string { return r.Target })
	row("mode", func(r *Report) string {
		if r.Mode == "open" {
			return "open " + thousands(r.Rate) + "/s ≤" + strconv.Itoa(r.Concurrency)
		}
		return "closed ×" + strconv.Itoa(r.Concurrency)
	})
	row("batch × users", func(r *Report) string { return strconv.Itoa(r.Batch) + " × " + strconv.Itoa(r.Users) })
	row("elapsed s", func(r *Report) string { return strconv.FormatFloat(r.Elapsed, 'f', 1, 64) })
	row("samples/s offered", func(r *Report) string { return thousands(r.OfferedPerSec) })
	row("samples/s accepted", func(r *Report) string { return thousands(r.AcceptedPerSec) })
	row("samples accepted", func(r *Report) string { return thousands(float64(r.Samples.Accepted)) })
	row("duplicates, rejected", func(r *Report) string {
		return thousands(float64(r.Samples.Duplicates)) + ", " + thousands(float64(r.Samples.Rejected))
	})
	row("requests by status", func(r *Report) string { return statuses(r.Requests.ByStatus) })
	if slices.ContainsFunc(s.Runs, func(r *Report) bool { return r.Mode == "open" }) {
		row("late, not sent", func(r *Report) string {
			return thousands(float64(r.Requests.Late)) + ", " + thousands(float64(r.Requests.NotSent))
		})
	}
	pipeline := slices.ContainsFunc(s.Runs, func(r *Report) bool { return r.Pipeline != nil })
	if pipeline {
		row("samples/s processed", func(r *Report) string {
			if r.Pipeline == nil {
				return "-"
			}
			return thousands(r.Pipeline.ProcessedPerSec)
		})
	}
	row("ingest p50 ms", func(r *Report) string { return ms(r.Latency.P50) })
	row("ingest p95 ms", func(r *Report) string { return ms(r.Latency.P95) })
	row("ingest p99 ms", func(r *Report) string { return ms(r.Latency.P99) })
	row("ingest max ms", func(r *Report) string { return ms(r.Latency.Max) })
	if slices.ContainsFunc(s.Runs, func(r *Report) bool { return r.Sync != nil }) {
		sync := func(f func(y *SyncReport) string) func(r *Report) string {
			return func(r *Report) string {
				if r.Sync == nil {
					return "-"
				}
				return f(r.Sync)
			}
		}
		row("ack→delivery p50 ms", sync(func(y *SyncReport) string { return ms(y.AckToDelivery.P50) }))
		row("ack→delivery p95 ms", sync(func(y *SyncReport) string { return ms(y.AckToDelivery.P95) }))
		row("ack→delivery p99 ms", sync(func(y *SyncReport) string { return ms(y.AckToDelivery.P99) }))
		row("ack→delivery max ms", sync(func(y *SyncReport) string { return ms(y.AckToDelivery.Max) }))
		row("deliveries, missing", sync(func(y *SyncReport) string {
			return thousands(float64(y.Deliveries)) + ", " + thousands(float64(y.Missing))
		}))
		row("subscribers held", sync(func(y *SyncReport) string {
			return strconv.Itoa(y.Held) + "/" + strconv.Itoa(y.Subscribers)
		}))
	}
	if pipeline {
		pl := func(f func(p *Pipeline) string) func(r *Report) string {
			return func(r *Report) string {
				if r.Pipeline == nil {
					return "-"
				}
				return f(r.Pipeline)
			}
		}
		row("lag min/max/last msgs", pl(func(p *Pipeline) string {
			return thousands(float64(p.LagMin)) + "/" + thousands(float64(p.LagMax)) + "/" + thousands(float64(p.LagLast))
		}))
		row("lag 2nd half growth", pl(func(p *Pipeline) string {
			g := thousands(p.LagGrowth)
			if !p.LagBounded {
				g += " (growing)"
			}
			return g
		}))
		row("sync connections", func(r *Report) string {
			if r.Pipeline == nil {
				return "-"
			}
			c := thousands(float64(r.Pipeline.SyncConnections))
			if r.Connections > 0 {
				c += " (" + strconv.Itoa(r.Connections) + " sending)"
			}
			return c
		})
	}
	if slices.ContainsFunc(s.Runs, func(r *Report) bool { return r.Server != nil }) {
		row("server RSS MiB end/peak", func(r *Report) string {
			if r.Server == nil {
				return "-"
			}
			return mib(r.Server.RSSBytes) + "/" + mib(r.Server.PeakRSSBytes)
		})
		row("server CPU s (cores)", func(r *Report) string {
			if r.Server == nil {
				return "-"
			}
			return cpu(r.Server)
		})
	}
	row("bench CPU s (cores)", func(r *Report) string {
		if r.Bench == nil {
			if r.Server != nil {
				return "in server's" // one process
			}
			return "-"
		}
		return cpu(r.Bench)
	})
	row("body / stored sample B", func(r *Report) string {
		return thousands(r.BodyBytes) + " / " + strconv.FormatFloat(r.StoredBytes, 'f', 0, 64)
	})
	if err := tw.Flush(); err != nil {
		return err
	}
	if s.PulsebaseOverBroker > 0 {
		target := ""
		for _, r := range s.Runs {
			if r.Target != "broker" {
				target = r.Target
			}
		}
		if _, err := fmt.Fprintf(w, "Pulsebase (%s) / broker accepted samples/s: %.2f\n", target, s.PulsebaseOverBroker); err != nil {
			return err
		}
	}
	for _, r := range s.Runs {
		errs := r.Errors
		if r.Sync != nil {
			errs = append(slices.Clip(errs), r.Sync.Errors...)
		}
		if r.Pipeline != nil && r.Pipeline.ScrapeError != "" {
			errs = append(slices.Clip(errs), "metrics: "+r.Pipeline.ScrapeError)
		}
		for _, e := range errs {
			if _, err := fmt.Fprintf(w, "%s error: %s\n", r.Target, e); err != nil {
				return err
			}
		}
	}
	return nil
}

func statuses(m map[string]int64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+":"+strconv.FormatInt(m[k], 10))
	}
	if parts == nil {
		return "-"
	}
	return strings.Join(parts, " ")
}

func cpu(u *ProcUsage) string {
	return strconv.FormatFloat(u.CPUSeconds, 'f', 1, 64) + " (" + strconv.FormatFloat(u.CPUCores, 'f', 2, 64) + ")"
}

func mib(b int64) string { return strconv.FormatInt(b>>20, 10) }

// thousands formats v rounded to an integer with thin separators: 12,345.
func thousands(v float64) string {
	s := strconv.FormatFloat(v, 'f', 0, 64)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
