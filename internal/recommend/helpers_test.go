package recommend

import (
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase/internal/agg"
)

// chicago is the users' clock in these tests: a fixed −06:00 so that local days do not
// depend on the machine's time zone database.
var chicago = time.FixedZone("CST", -6*3600)

// clock returns 2026-11-29 (a Sunday) at hh:mm on the users' clock.
func clock(hh, mm int) time.Time { return time.Date(2026, 11, 29, hh, mm, 0, 0, chicago) }

// dateBack returns the local date back days before now.
func dateBack(now time.Time, back int) string { return now.AddDate(0, 0, -back).Format(time.DateOnly) }

// starter returns the starter library, loaded once.
var starter = sync.OnceValue(func() *Library {
	lib, err := Load(StarterName, Starter)
	if err != nil {
		panic(err)
	}
	return lib
})

// starterRule returns the starter rule of kind, failing t if there is none.
func starterRule(t testing.TB, kind string) *Rule {
	t.Helper()
	r := starter().Rule(kind)
	if r == nil {
		t.Fatalf("starter library has no rule %q", kind)
	}
	return r
}

// days is a user's day objects by date, as the processor stores them.
type days map[string]DayObject

// series returns day objects for the n days up to now (back 0 is today): f gives the
// metrics of each day (nil for a day without data). Values are float64, as in a stored
// day object decoded from JSON.
func series(now time.Time, n int, f func(back int) map[string]float64) days {
	out := days{}
	for back := range n {
		m := f(back)
		if m == nil {
			continue
		}
		o := DayObject{"date": dateBack(now, back)}
		for k, v := range m {
			o[k] = v
		}
		out[dateBack(now, back)] = o
	}
	return out
}

// withBaselines adds "baselines" to every day object of ds, computed the way the
// processor does (processor.Baselines): per metric, agg.Baseline over the 60 days before
// the day and the day itself (agg.LogBaseline for hrv_rmssd), z only when the day has a
// value and sd > 0.
func (ds days) withBaselines() days {
	metrics := map[string]bool{}
	for _, o := range ds {
		for k, v := range o {
			if _, ok := v.(float64); ok {
				metrics[k] = true
			}
		}
	}
	for date, o := range ds {
		bs := map[string]any{}
		for m := range metrics {
			values := map[string]float64{}
			for d, o := range ds {
				if v, ok := o[m].(float64); ok {
					values[d] = v
				}
			}
			var b agg.BaselineStat
			if m == "hrv_rmssd" {
				b = agg.LogBaseline(values, date)
			} else {
				b = agg.Baseline(values, date)
			}
			if b.Days == 0 && b.Days7 == 0 {
				continue
			}
			x := map[string]any{"mean": b.Mean60, "sd": b.SD60, "mean_7d": b.Mean7, "days": float64(b.Days),
				"days_7d": float64(b.Days7), "established": b.Established}
			if b.HasToday && b.SD60 > 0 {
				x["z"] = b.Z
			}
			if m == "hrv_rmssd" {
				x["scale"] = "ln"
			}
			bs[m] = x
		}
		o["baselines"] = bs
	}
	return ds
}

// bl is a baseline entry of a day object, written directly for near-threshold cases.
type bl struct {
	mean, sd, mean7 float64
	days, days7     int
	established     bool
	z               *float64
	ln              bool
}

func (b bl) object() map[string]any {
	x := map[string]any{"mean": b.mean, "sd": b.sd, "mean_7d": b.mean7, "days": float64(b.days),
		"days_7d": float64(b.days7), "established": b.established}
	if b.z != nil {
		x["z"] = *b.z
	}
	if b.ln {
		x["scale"] = "ln"
	}
	return x
}

func ptr[T any](v T) *T { return &v }

// dayWith returns a day object of date with metrics and the given baselines.
func dayWith(date string, metrics map[string]float64, bs map[string]bl) DayObject {
	o := DayObject{"date": date}
	for k, v := range metrics {
		o[k] = v
	}
	if bs != nil {
		x := map[string]any{}
		for k, b := range bs {
			x[k] = b.object()
		}
		o["baselines"] = x
	}
	return o
}

// near reports whether a and b agree to within 1e-9 relative.
func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

// diagnosticWords must not appear in any text a starter rule shows: the library gives
// wellness guidance, never a diagnosis.
var diagnosticWords = []string{"diagnos", "disease", "infection", "illness", "sick", "covid", "symptom", "disorder",
	"fever", "condition", "arrhythmi", "patholog"}

// diagnostic returns the first diagnostic word s contains, or "".
func diagnostic(s string) string {
	l := strings.ToLower(s)
	for _, w := range diagnosticWords {
		if strings.Contains(l, w) {
			return w
		}
	}
	return ""
}
