package agg

import (
	"math"
	"time"
)

// The windows of a personal baseline (DOMAIN.md "Personal baselines").
const (
	// ShortDays is the recent window: today and the 6 days before.
	ShortDays = 7
	// LongDays is the normal range: the 60 days before today, today excluded.
	LongDays = 60
	// EstablishedDays is how many days of the long window need a value before the
	// baseline is established.
	EstablishedDays = 14
)

// BaselineStat compares a metric's recent days with the user's normal range.
type BaselineStat struct {
	// Today is the value on the day scored (its logarithm for LogBaseline); HasToday
	// reports whether there is one.
	Today    float64
	HasToday bool
	// Mean7 is the mean over the days of [today−6, today] that have a value, Days7 their
	// number; 0 when there are none.
	Mean7 float64
	Days7 int
	// Mean60 and SD60 are the mean and the sample standard deviation (n − 1: the days are a
	// sample of the user's normal) over the days of [today−60, today−1] that have a value;
	// Days is their number. Today is excluded so that an unusual day is scored against
	// what was normal before it rather than diluting it. SD60 is 0 with fewer than 2 days.
	Mean60, SD60 float64
	Days         int
	// Z is (Today − Mean60) / SD60, the z-score of today; 0 when there is no value today or
	// SD60 is 0. Read it only when Established.
	Z float64
	// Established reports Days ≥ EstablishedDays.
	Established bool
}

// Baseline scores the day today ("YYYY-MM-DD") of a metric given as local date → value.
// Dates that do not parse and values that are NaN or infinite are ignored; an invalid
// today gives the zero BaselineStat.
func Baseline(values map[string]float64, today string) BaselineStat {
	return baseline(values, today, func(v float64) (float64, bool) {
		return v, !math.IsNaN(v) && !math.IsInf(v, 0)
	})
}

// LogBaseline is Baseline on the natural logarithm of the values, as HRV wants (rMSSD is
// skewed; Plews et al. 2013 work on ln rMSSD): every field but Days, Days7, HasToday and
// Established is in ln units. Values ≤ 0 are ignored.
func LogBaseline(values map[string]float64, today string) BaselineStat {
	return baseline(values, today, func(v float64) (float64, bool) {
		if !(v > 0) || math.IsInf(v, 0) {
			return 0, false
		}
		return math.Log(v), true
	})
}

func baseline(values map[string]float64, today string, f func(float64) (float64, bool)) BaselineStat {
	t, err := time.Parse(DateLayout, today)
	if err != nil {
		return BaselineStat{}
	}
	// Days are walked in date order, not map order, so that sums are reproducible.
	at := func(back int) (float64, bool) {
		v, ok := values[t.AddDate(0, 0, -back).Format(DateLayout)]
		if !ok {
			return 0, false
		}
		return f(v)
	}
	var b BaselineStat
	b.Today, b.HasToday = at(0)
	var sum7 float64
	for back := 0; back < ShortDays; back++ {
		if v, ok := at(back); ok {
			sum7 += v
			b.Days7++
		}
	}
	if b.Days7 > 0 {
		b.Mean7 = sum7 / float64(b.Days7)
	}
	long := make([]float64, 0, LongDays)
	for back := LongDays; back >= 1; back-- {
		if v, ok := at(back); ok {
			long = append(long, v)
		}
	}
	b.Days = len(long)
	b.Established = b.Days >= EstablishedDays
	if b.Days == 0 {
		return b
	}
	var sum float64
	for _, v := range long {
		sum += v
	}
	b.Mean60 = sum / float64(b.Days)
	if b.Days >= 2 {
		var ss float64
		for _, v := range long {
			ss += (v - b.Mean60) * (v - b.Mean60)
		}
		b.SD60 = math.Sqrt(ss / float64(b.Days-1))
	}
	if b.HasToday && b.SD60 > 0 {
		b.Z = (b.Today - b.Mean60) / b.SD60
	}
	return b
}
