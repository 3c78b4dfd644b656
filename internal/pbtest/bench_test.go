package pbtest_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/pulsebase/pulsebase/internal/pbtest"
)

// TestHistogramSince observes into a histogram before and after a snapshot: the histogram
// since holds only what came after, its quantiles are interpolated within its buckets,
// and the snapshots are left as they were.
func TestHistogramSince(t *testing.T) {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "latency_seconds", Buckets: []float64{1, 2, 4}})
	for range 10 {
		h.Observe(0.5)
	}
	var before, after dto.Metric
	if err := h.Write(&before); err != nil {
		t.Fatal(err)
	}
	for _, v := range []float64{1.5, 1.5, 3, 3, 10} {
		h.Observe(v)
	}
	if err := h.Write(&after); err != nil {
		t.Fatal(err)
	}
	since := pbtest.HistogramSince(&before, &after)
	var cums []uint64
	for _, bk := range since.GetBucket() {
		cums = append(cums, bk.GetCumulativeCount())
	}
	if since.GetSampleCount() != 5 || since.GetSampleSum() != 19 || len(cums) != 3 || cums[0] != 0 || cums[1] != 2 || cums[2] != 4 {
		t.Errorf("got count %d sum %g buckets %v, want 5, 19 and [0 2 4]", since.GetSampleCount(), since.GetSampleSum(), cums)
	}
	if n := before.GetHistogram().GetSampleCount(); n != 10 {
		t.Errorf("the before snapshot counts %d samples now, want 10", n)
	}
	if n := after.GetHistogram().GetBucket()[0].GetCumulativeCount(); n != 10 {
		t.Errorf("the after snapshot's first bucket counts %d now, want 10", n)
	}
	for _, c := range []struct{ q, want float64 }{
		{0.2, 1.5}, // rank 1 of 2 in (1, 2]
		{0.4, 2},   // rank 2, the top of (1, 2]
		{0.6, 3},   // rank 3, halfway through (2, 4]
		{1, 4},     // rank 5 is past the last bucket: its bound
	} {
		if got := pbtest.Quantile(since, c.q); got != c.want {
			t.Errorf("Quantile(%g): got %g, want %g", c.q, got, c.want)
		}
	}
}

// TestBenchEnv reads sizes from the environment: a positive integer is taken, anything
// else gives the default.
func TestBenchEnv(t *testing.T) {
	const name = "PULSEBASE_TEST_BENCH_ENV"
	for _, c := range []struct {
		value string
		want  int
	}{{"15000", 15000}, {"", 7}, {"0", 7}, {"-3", 7}, {"2k", 7}} {
		t.Setenv(name, c.value)
		if got := pbtest.BenchEnv(name, 7); got != c.want {
			t.Errorf("%s=%q: got %d, want %d", name, c.value, got, c.want)
		}
	}
}
