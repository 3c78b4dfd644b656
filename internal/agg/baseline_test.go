package agg

import (
	"math"
	"testing"
	"time"
)

// daysBefore returns the date n days before 2026-03-01 (a span that crosses February).
func daysBefore(n int) string {
	return time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, -n).Format(DateLayout)
}

func TestBaseline(t *testing.T) {
	const today = "2026-03-01"
	// 14 days before today alternating 50 (odd) and 60 (even): mean 55, squares 14 × 25.
	alternating := func() map[string]float64 {
		v := map[string]float64{}
		for k := 1; k <= 14; k++ {
			v[daysBefore(k)] = 50
			if k%2 == 0 {
				v[daysBefore(k)] = 60
			}
		}
		return v
	}
	tests := []struct {
		name   string
		values map[string]float64
		today  string
		want   BaselineStat
	}{{
		name:   "established after 14 days",
		values: with(alternating(), today, 65),
		today:  today,
		want: BaselineStat{Today: 65, HasToday: true, Mean7: (65 + 50 + 60 + 50 + 60 + 50 + 60) / 7.0, Days7: 7,
			Mean60: 55, SD60: math.Sqrt(350.0 / 13), Days: 14, Z: 10 / math.Sqrt(350.0/13), Established: true},
	}, {
		name:   "13 days: not established",
		values: without(with(alternating(), today, 65), daysBefore(14)),
		today:  today,
		want: BaselineStat{Today: 65, HasToday: true, Mean7: (65 + 50 + 60 + 50 + 60 + 50 + 60) / 7.0, Days7: 7,
			Mean60: 710.0 / 13, SD60: sd(without(alternating(), daysBefore(14))), Days: 13, // day 14 was a 60
			Z: (65 - 710.0/13) / sd(without(alternating(), daysBefore(14)))},
	}, {
		name:   "the 60th day before counts, the 61st does not",
		values: with(with(with(alternating(), today, 65), daysBefore(60), 55), daysBefore(61), 1000),
		today:  today,
		want: BaselineStat{Today: 65, HasToday: true, Mean7: (65 + 50 + 60 + 50 + 60 + 50 + 60) / 7.0, Days7: 7,
			Mean60: 55, SD60: 5, Days: 15, Z: 2, Established: true},
	}, {
		name:   "no value today: no z",
		values: alternating(),
		today:  today,
		want: BaselineStat{Mean7: (50 + 60 + 50 + 60 + 50 + 60) / 6.0, Days7: 6,
			Mean60: 55, SD60: math.Sqrt(350.0 / 13), Days: 14, Established: true},
	}, {
		name:   "one day: no spread",
		values: map[string]float64{daysBefore(3): 60, today: 70, "garbage": 1, daysBefore(2): math.NaN()},
		today:  today,
		want:   BaselineStat{Today: 70, HasToday: true, Mean7: 65, Days7: 2, Mean60: 60, Days: 1},
	}, {
		name:   "today is not a date",
		values: alternating(),
		today:  "yesterday",
		want:   BaselineStat{},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Baseline(tt.values, tt.today); !sameStat(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestLogBaseline(t *testing.T) {
	values := map[string]float64{
		daysBefore(1): math.Exp(1), daysBefore(2): math.Exp(2), daysBefore(3): math.Exp(3),
		daysBefore(4): 0, daysBefore(5): -3, // no logarithm: ignored
		"2026-03-01": math.Exp(4),
	}
	want := BaselineStat{Today: 4, HasToday: true, Mean7: 2.5, Days7: 4, Mean60: 2, SD60: 1, Z: 2, Days: 3}
	if got := LogBaseline(values, "2026-03-01"); !sameStat(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func with(m map[string]float64, date string, v float64) map[string]float64 {
	m[date] = v
	return m
}

func without(m map[string]float64, date string) map[string]float64 {
	delete(m, date)
	return m
}

// sd is the sample standard deviation, computed the textbook way.
func sd(m map[string]float64) float64 {
	var sum, sq float64
	for _, v := range m {
		sum += v
		sq += v * v
	}
	n := float64(len(m))
	return math.Sqrt((sq - sum*sum/n) / (n - 1))
}

func sameStat(a, b BaselineStat) bool {
	return near(a.Today, b.Today) && a.HasToday == b.HasToday && near(a.Mean7, b.Mean7) && a.Days7 == b.Days7 &&
		near(a.Mean60, b.Mean60) && near(a.SD60, b.SD60) && a.Days == b.Days && near(a.Z, b.Z) &&
		a.Established == b.Established
}
