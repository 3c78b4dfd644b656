package processor

import (
	"testing"

	"github.com/pulsebase/pulsebase"
)

func TestScopeDayKeepsOnlyAllowedCategories(t *testing.T) {
	day := DayObject{"date": "2026-11-29", "steps": 9000.0, "resting_heart_rate": 58.0,
		"resting_heart_rate_source": "sleep", "sleep_minutes": 420.0, "future_metric": 1.0,
		"baselines": map[string]any{"steps": map[string]any{"mean": 8000.0}, "resting_heart_rate": map[string]any{"mean": 60.0}}}
	got := ScopeDay(day, func(c pulsebase.Category) bool { return c == pulsebase.CategoryActivity })
	if got["date"] != "2026-11-29" || got["steps"] != 9000.0 {
		t.Fatalf("allowed fields missing: %v", got)
	}
	for _, k := range []string{"resting_heart_rate", "resting_heart_rate_source", "sleep_minutes", "future_metric"} {
		if _, ok := got[k]; ok {
			t.Errorf("%s shown to an activity-only reader", k)
		}
	}
	bs := got["baselines"].(map[string]any)
	if _, ok := bs["steps"]; !ok || len(bs) != 1 {
		t.Errorf("baselines = %v, want steps only", bs)
	}
	if _, ok := day["resting_heart_rate"]; !ok {
		t.Error("ScopeDay changed its input")
	}
	// Every numeric metric of a day object has a category: a metric added to dailyMetrics
	// without one would silently be hidden from coaches.
	for _, m := range dailyMetrics {
		if _, ok := dayFieldCategories[m]; !ok {
			t.Errorf("daily metric %s has no category", m)
		}
	}
}
