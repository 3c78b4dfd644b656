package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"text/tabwriter"
	"time"
)

// Criteria decide whether a run at a rate was sustained.
type Criteria struct {
	// MaxP99 bounds the ack → delivery p99 of a run with subscribers, or the ingest p99
	// of one without, in milliseconds.
	MaxP99 float64 `json:"max_p99_ms"`
	// MinAccepted is the least share of the offered samples that must be accepted (0.95
	// when zero): below it the server did not keep up with the schedule.
	MinAccepted float64 `json:"min_accepted_ratio"`
	// MaxMissing is the largest share of deliveries that may not arrive by the end of the
	// wait after the run (0.01 when zero).
	MaxMissing float64 `json:"max_missing_ratio"`
}

// NewCriteria returns the criteria for a p99 bound, with the default shares.
func NewCriteria(maxP99 time.Duration) Criteria {
	return Criteria{MaxP99: float64(maxP99) / float64(time.Millisecond), MinAccepted: 0.95, MaxMissing: 0.01}
}

// Judge says whether r was sustained, and if not, why.
func (c Criteria) Judge(r *Report) (bool, string) {
	minAccepted, maxMissing := c.MinAccepted, c.MaxMissing
	if minAccepted == 0 {
		minAccepted = 0.95
	}
	if maxMissing == 0 {
		maxMissing = 0.01
	}
	if r.Samples.Offered == 0 {
		return false, "nothing offered"
	}
	if share := float64(r.Samples.Accepted) / float64(r.Samples.Offered); share < minAccepted {
		return false, fmt.Sprintf("accepted %.1f%% of the offered samples", 100*share)
	}
	if p := r.Pipeline; p != nil && !p.LagBounded {
		return false, fmt.Sprintf("processor lag grew by %s messages over the second half", thousands(p.LagGrowth))
	}
	if y := r.Sync; y != nil {
		switch {
		case y.Deliveries == 0:
			return false, "no marker reached a subscriber"
		case float64(y.Missing) > maxMissing*float64(y.Deliveries+y.Missing):
			return false, fmt.Sprintf("%d of %d deliveries missing", y.Missing, y.Deliveries+y.Missing)
		case y.AckToDelivery.P99 > c.MaxP99:
			return false, fmt.Sprintf("ack→delivery p99 %.1f ms > %g ms", y.AckToDelivery.P99, c.MaxP99)
		}
		return true, fmt.Sprintf("ack→delivery p99 %.1f ms ≤ %g ms, lag bounded", y.AckToDelivery.P99, c.MaxP99)
	}
	if r.Latency.P99 > c.MaxP99 {
		return false, fmt.Sprintf("ingest p99 %.1f ms > %g ms", r.Latency.P99, c.MaxP99)
	}
	return true, fmt.Sprintf("ingest p99 %.1f ms ≤ %g ms, lag bounded", r.Latency.P99, c.MaxP99)
}

// FindMax is the result of a search for the highest sustained rate.
type FindMax struct {
	Criteria Criteria `json:"criteria"`
	// Steps are the runs in the order they were made; Steps[i] is Summary.Runs[i].
	Steps []Step `json:"steps"`
	// MaxRate is the highest offered rate that passed, in samples/s; 0 when none did.
	// Best is the index of its step, or -1.
	MaxRate float64 `json:"max_rate"`
	Best    int     `json:"best"`
	// Stopped says why the search ended.
	Stopped string `json:"stopped"`
}

// Step is one run of a search.
type Step struct {
	Rate           float64 `json:"rate"`
	Pass           bool    `json:"pass"`
	Reason         string  `json:"reason"`
	AcceptedPerSec float64 `json:"accepted_per_sec"`
	// ProcessedPerSec, LagMax and LagGrowth are from the server's metrics (0 without).
	ProcessedPerSec float64 `json:"processed_per_sec"`
	LagMax          int64   `json:"lag_max"`
	LagGrowth       float64 `json:"lag_growth"`
	IngestP99       float64 `json:"ingest_p99_ms"`
	// DeliveryP99 is the ack → delivery p99, 0 without subscribers.
	DeliveryP99 float64 `json:"delivery_p99_ms"`
}

// Search shapes a search.
type Search struct {
	// Start is the first rate tried, in samples/s.
	Start float64
	// MaxSteps bounds the runs.
	MaxSteps int
	// Precision ends the search when the lowest failing rate is within this share above
	// the highest passing one (0.1 when zero).
	Precision float64
	// MinRate and MaxRate bound the rates tried: the search stops rather than go below
	// or above them (MaxRate 0: no bound).
	MinRate, MaxRate float64
}

// SearchMax looks for the highest rate that c passes: it doubles the rate from s.Start
// while runs pass (halves it while they fail), then bisects between the highest pass
// and the lowest failure, one run per step. run makes the run at a rate; each, if not
// nil, hears of every step as it ends. It returns the search and the steps' reports.
func SearchMax(ctx context.Context, s Search, c Criteria, run func(ctx context.Context, rate float64) (*Report, error), each func(Step)) (*FindMax, []*Report, error) {
	if s.Start <= 0 || s.MaxSteps < 1 {
		return nil, nil, errors.New("loadgen: a search needs a positive start rate and at least one step")
	}
	precision := s.Precision
	if precision <= 0 {
		precision = 0.1
	}
	fm := &FindMax{Criteria: c, Best: -1}
	var reports []*Report
	lo, hi := 0.0, math.Inf(1) // highest pass, lowest failure
	rate := s.Start
	for {
		if len(fm.Steps) == s.MaxSteps {
			fm.Stopped = fmt.Sprintf("after %d steps", s.MaxSteps)
			break
		}
		r, err := run(ctx, rate)
		if err != nil {
			return fm, reports, fmt.Errorf("step at %s samples/s: %w", thousands(rate), err)
		}
		pass, why := c.Judge(r)
		st := Step{Rate: rate, Pass: pass, Reason: why, AcceptedPerSec: r.AcceptedPerSec, IngestP99: r.Latency.P99}
		if p := r.Pipeline; p != nil {
			st.ProcessedPerSec, st.LagMax, st.LagGrowth = p.ProcessedPerSec, p.LagMax, p.LagGrowth
		}
		if r.Sync != nil {
			st.DeliveryP99 = r.Sync.AckToDelivery.P99
		}
		fm.Steps = append(fm.Steps, st)
		reports = append(reports, r)
		if each != nil {
			each(st)
		}
		if pass && rate > lo {
			lo, fm.MaxRate, fm.Best = rate, rate, len(fm.Steps)-1
		}
		if !pass {
			hi = min(hi, rate)
		}
		next, why := nextRate(lo, hi, precision)
		if why == "" && next < s.MinRate {
			why = "below the lowest rate tried, " + thousands(s.MinRate) + " samples/s"
		}
		if why == "" && s.MaxRate > 0 && next > s.MaxRate {
			why = "above the highest rate this configuration can offer, " + thousands(s.MaxRate) + " samples/s"
		}
		if why != "" {
			fm.Stopped = why
			break
		}
		rate = next
	}
	return fm, reports, nil
}

// nextRate is the rate after a step, given the highest pass lo (0: none yet) and the
// lowest failure hi (+Inf: none yet), or why the search is over.
func nextRate(lo, hi, precision float64) (float64, string) {
	switch {
	case math.IsInf(hi, 1):
		return 2 * lo, ""
	case lo == 0:
		return roundRate(hi / 2), ""
	case hi <= lo*(1+precision):
		return 0, fmt.Sprintf("bracketed within %.0f%%", 100*precision)
	}
	for digits := 2; digits <= 6; digits++ {
		if r := roundSig((lo+hi)/2, digits); r > lo && r < hi {
			return r, ""
		}
	}
	return 0, "bracketed as closely as rates go"
}

// roundRate rounds a rate to three significant digits, at least 1.
func roundRate(r float64) float64 { return max(1, roundSig(r, 3)) }

// roundSig rounds v to the given significant digits.
func roundSig(v float64, digits int) float64 {
	if v <= 0 {
		return 0
	}
	p := math.Pow(10, float64(digits)-math.Ceil(math.Log10(v)))
	return math.Round(v*p) / p
}

// WriteFindMax writes the steps of a search and its result as a table.
func (s *Summary) WriteFindMax(w io.Writer) error {
	fm := s.FindMax
	if fm == nil {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "step\toffered/s\taccepted/s\tprocessed/s\tlag max\tlag growth\tingest p99 ms\tdelivery p99 ms\t  result")
	ms := func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }
	for i, st := range fm.Steps {
		verdict := "fail"
		if st.Pass {
			verdict = "pass"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t  %s: %s\n", i+1, thousands(st.Rate), thousands(st.AcceptedPerSec),
			thousands(st.ProcessedPerSec), thousands(float64(st.LagMax)), thousands(st.LagGrowth), ms(st.IngestP99), ms(st.DeliveryP99), verdict, st.Reason)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var err error
	if fm.Best < 0 {
		_, err = fmt.Fprintf(w, "find-max: no rate tried met the criteria (p99 ≤ %g ms, lag bounded); stopped %s\n", fm.Criteria.MaxP99, fm.Stopped)
	} else {
		_, err = fmt.Fprintf(w, "find-max: highest sustained rate %s samples/s (p99 ≤ %g ms, lag bounded); stopped %s\n",
			thousands(fm.MaxRate), fm.Criteria.MaxP99, fm.Stopped)
	}
	return err
}
