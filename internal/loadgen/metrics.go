package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Metric families of the server's /metrics the generator reads (internal/telemetry).
const (
	metricProcessed = "pulsebase_processor_samples_total"
	metricLag       = "pulsebase_processor_lag_messages"
	metricSyncConns = "pulsebase_sync_connections"
)

// Metrics reads a Pulsebase server's /metrics (Prometheus text format), which the API
// serves without a token.
type Metrics struct {
	url    string
	client *http.Client
}

// NewMetrics returns a reader of the /metrics of the server at baseURL.
func NewMetrics(baseURL string) *Metrics {
	return &Metrics{
		url:    strings.TrimSuffix(baseURL, "/") + "/metrics",
		client: &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 5 * time.Second},
	}
}

// MetricsSample is one reading of the figures the report needs.
type MetricsSample struct {
	At time.Time
	// Processed is pulsebase_processor_samples_total summed over types and outcomes:
	// samples the stream processor has handled since the server started.
	Processed float64
	// Lag is the largest pulsebase_processor_lag_messages over partitions: the SAMPLES
	// stream messages stored since the furthest-behind partition's last applied one. (The
	// gauge counts stream sequences, which all partitions share, so its sum over
	// partitions would count the same messages once per partition.) A server refreshes
	// it about every 2 s per partition.
	Lag float64
	// SyncConnections is pulsebase_sync_connections.
	SyncConnections float64
}

// Scrape reads the metrics once.
func (m *Metrics) Scrape(ctx context.Context) (MetricsSample, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.url, nil)
	if err != nil {
		return MetricsSample{}, err
	}
	resp, err := m.client.Do(req)
	if err != nil {
		return MetricsSample{}, fmt.Errorf("GET /metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return MetricsSample{}, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	s, err := parseMetrics(resp.Body)
	s.At = time.Now()
	return s, err
}

// parseMetrics reads the families the report needs from Prometheus text exposition.
func parseMetrics(r io.Reader) (MetricsSample, error) {
	var s MetricsSample
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		name, value, ok := metricLine(line)
		if !ok {
			continue
		}
		switch name {
		case metricProcessed:
			s.Processed += value
		case metricLag:
			s.Lag = math.Max(s.Lag, value)
		case metricSyncConns:
			s.SyncConnections = value
		}
	}
	if err := sc.Err(); err != nil {
		return s, fmt.Errorf("read /metrics: %w", err)
	}
	return s, nil
}

// metricLine splits `name{labels} value [timestamp]` into the name and the value.
// Label values may hold spaces and braces inside quotes; the value follows the closing
// brace.
func metricLine(line []byte) (string, float64, bool) {
	i := bytes.IndexAny(line, "{ ")
	if i <= 0 {
		return "", 0, false
	}
	name, rest := string(line[:i]), line[i:]
	if rest[0] == '{' {
		end := labelsEnd(rest)
		if end < 0 {
			return "", 0, false
		}
		rest = rest[end+1:]
	}
	f := strings.Fields(string(rest))
	if len(f) < 1 {
		return "", 0, false
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return "", 0, false
	}
	return name, v, true
}

// labelsEnd returns the index of the '}' closing the label set b opens, or -1.
func labelsEnd(b []byte) int {
	quoted := false
	for i := 1; i < len(b); i++ {
		switch c := b[i]; {
		case quoted && c == '\\':
			i++ // an escaped character inside a label value
		case c == '"':
			quoted = !quoted
		case !quoted && c == '}':
			return i
		}
	}
	return -1
}

// WaitIdle waits up to timeout for the processor to have caught up: every partition's
// lag 0 and the processed count unchanged over a whole second (the lag gauge is refreshed
// only every few seconds, so a 0 alone may be stale). It returns the last reading, and
// an error if the server did not settle.
func (m *Metrics) WaitIdle(ctx context.Context, timeout time.Duration) (MetricsSample, error) {
	deadline := time.Now().Add(timeout)
	prev, err := m.Scrape(ctx)
	if err != nil {
		return prev, err
	}
	for {
		select {
		case <-ctx.Done():
			return prev, context.Cause(ctx)
		case <-time.After(time.Second):
		}
		cur, err := m.Scrape(ctx)
		if err != nil {
			return prev, err
		}
		if cur.Lag == 0 && cur.Processed == prev.Processed {
			return cur, nil
		}
		if time.Now().After(deadline) {
			return cur, fmt.Errorf("the processor did not catch up within %s (lag %.0f messages)", timeout, cur.Lag)
		}
		prev = cur
	}
}

// monitor samples the metrics while a run goes on.
type monitor struct {
	m     *Metrics
	start time.Time
	first MetricsSample
	stopc chan struct{}
	done  chan struct{}

	mu       sync.Mutex
	lag      []LagPoint
	maxConns float64
	last     MetricsSample
	errs     int
	lastErr  error
}

// startMonitor reads the metrics now, then every each until stop.
func startMonitor(ctx context.Context, m *Metrics, each time.Duration, start time.Time) (*monitor, error) {
	first, err := m.Scrape(ctx)
	if err != nil {
		return nil, err
	}
	mo := &monitor{m: m, start: start, first: first, last: first, maxConns: first.SyncConnections,
		stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(mo.done)
		t := time.NewTicker(each)
		defer t.Stop()
		for {
			select {
			case <-mo.stopc:
				return
			case <-t.C:
				mo.sample(ctx)
			}
		}
	}()
	return mo, nil
}

func (mo *monitor) sample(ctx context.Context) {
	s, err := mo.m.Scrape(ctx)
	mo.mu.Lock()
	defer mo.mu.Unlock()
	if err != nil {
		mo.errs++
		mo.lastErr = err
		return
	}
	mo.last = s
	mo.maxConns = max(mo.maxConns, s.SyncConnections)
	mo.lag = append(mo.lag, LagPoint{T: round3(s.At.Sub(mo.start).Seconds()), Messages: int64(s.Lag)})
}

// lastLag is the lag last read, or -1 before any reading.
func (mo *monitor) lastLag() int64 {
	mo.mu.Lock()
	defer mo.mu.Unlock()
	if len(mo.lag) == 0 {
		return -1
	}
	return mo.lag[len(mo.lag)-1].Messages
}

// stop ends sampling, reads the metrics a last time and returns the pipeline figures of
// a run that offered load over window and ended after elapsed, at rate samples/s.
func (mo *monitor) stop(ctx context.Context, window, elapsed time.Duration, rate float64) *Pipeline {
	close(mo.stopc)
	<-mo.done
	mo.sample(ctx)
	mo.mu.Lock()
	defer mo.mu.Unlock()
	p := &Pipeline{
		Processed:       int64(mo.last.Processed - mo.first.Processed),
		Lag:             mo.lag,
		SyncConnections: int64(mo.maxConns),
		ScrapeErrors:    mo.errs,
	}
	if mo.lastErr != nil {
		p.ScrapeError = mo.lastErr.Error()
	}
	if elapsed > 0 {
		p.ProcessedPerSec = float64(p.Processed) / elapsed.Seconds()
	}
	if p.Lag == nil {
		p.Lag = []LagPoint{}
	}
	for i, l := range p.Lag {
		if i == 0 || l.Messages < p.LagMin {
			p.LagMin = l.Messages
		}
		p.LagMax = max(p.LagMax, l.Messages)
		p.LagLast = l.Messages
	}
	p.LagGrowth, p.LagBounded = lagBounded(p.Lag, window.Seconds(), rate)
	return p
}

// lagBounded fits a line, by least squares, to the lag readings of the second half of a
// run of window seconds and returns how much the lag grew over that half. The lag is
// bounded when it grew by less than a second's worth of the offered load (rate samples/s,
// one message each; at least 1,000 messages): the processor commits every 250 ms and
// the gauge moves in steps of seconds, so smaller rises are its sawtooth, not a backlog.
// With fewer than two readings in the second half it cannot tell and says bounded.
func lagBounded(lag []LagPoint, window, rate float64) (growth float64, bounded bool) {
	var xs, ys []float64
	for _, l := range lag {
		if l.T >= window/2 && l.T <= window+1 {
			xs = append(xs, l.T)
			ys = append(ys, float64(l.Messages))
		}
	}
	if len(xs) < 2 {
		return 0, true
	}
	n := float64(len(xs))
	var sx, sy, sxx, sxy float64
	for i := range xs {
		sx += xs[i]
		sy += ys[i]
		sxx += xs[i] * xs[i]
		sxy += xs[i] * ys[i]
	}
	den := n*sxx - sx*sx
	if den == 0 {
		return 0, true
	}
	slope := (n*sxy - sx*sy) / den
	growth = round3(slope * window / 2)
	return growth, growth <= math.Max(rate, 1000)
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }
