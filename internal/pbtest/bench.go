package pbtest

import (
	"os"
	"strconv"

	dto "github.com/prometheus/client_model/go"
)

// BenchEnv returns the positive integer in the environment variable name, or def when it
// holds none: benchmarks take their sizes from it, so that `go test -bench` runs quickly
// by default.
func BenchEnv(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// HistogramSince returns what a Prometheus histogram observed between two snapshots of
// it, before and after (each written by its Write): after's sample count, sum and
// cumulative bucket counts less before's. Neither snapshot is changed.
func HistogramSince(before, after *dto.Metric) *dto.Histogram {
	b, a := before.GetHistogram(), after.GetHistogram()
	count := a.GetSampleCount() - b.GetSampleCount()
	sum := a.GetSampleSum() - b.GetSampleSum()
	h := &dto.Histogram{SampleCount: &count, SampleSum: &sum}
	for i, bk := range a.GetBucket() {
		cum, bound := bk.GetCumulativeCount(), bk.GetUpperBound()
		if i < len(b.GetBucket()) {
			cum -= b.GetBucket()[i].GetCumulativeCount()
		}
		h.Bucket = append(h.Bucket, &dto.Bucket{CumulativeCount: &cum, UpperBound: &bound})
	}
	return h
}

// Quantile interpolates the q quantile (0 to 1) of a Prometheus histogram linearly within
// the bucket it falls in, the first bucket starting at 0. Past the last bucket it returns
// the last bound.
func Quantile(h *dto.Histogram, q float64) float64 {
	rank := q * float64(h.GetSampleCount())
	var prevCount uint64
	prevBound := 0.0
	for _, bk := range h.GetBucket() {
		if float64(bk.GetCumulativeCount()) >= rank {
			in := float64(bk.GetCumulativeCount() - prevCount)
			if in == 0 {
				return bk.GetUpperBound()
			}
			return prevBound + (bk.GetUpperBound()-prevBound)*(rank-float64(prevCount))/in
		}
		prevCount, prevBound = bk.GetCumulativeCount(), bk.GetUpperBound()
	}
	return prevBound
}
