package processor

import "github.com/pulsebase/pulsebase"

// dayFieldCategories says which consent category each field of a day object belongs to.
// A field missing here is shown to nobody who reads only some categories (a coach):
// deny by default, so that a metric added later is not shared until it is listed.
var dayFieldCategories = map[string]pulsebase.Category{
	"steps": pulsebase.CategoryActivity, "active_minutes": pulsebase.CategoryActivity,
	"sedentary_bouts": pulsebase.CategoryActivity, "sedentary_minutes": pulsebase.CategoryActivity,
	"active_energy": pulsebase.CategoryActivity, "distance": pulsebase.CategoryActivity,
	"resting_heart_rate": pulsebase.CategoryHeart, "resting_heart_rate_source": pulsebase.CategoryHeart,
	"hrv_rmssd": pulsebase.CategoryHeart, "hrv_source": pulsebase.CategoryHeart,
	"sleep_minutes": pulsebase.CategorySleep, "sleep_efficiency": pulsebase.CategorySleep,
	"sleep_midpoint": pulsebase.CategorySleep, "sleep_stages": pulsebase.CategorySleep,
	"water": pulsebase.CategoryNutrition, "weight": pulsebase.CategoryBody, "mood": pulsebase.CategoryMind,
}

// ScopeDay returns the part of day a reader allowed only the categories may reads: the
// date, the metrics of those categories and their baselines. It does not change day.
func ScopeDay(day DayObject, may func(pulsebase.Category) bool) DayObject {
	out := DayObject{}
	for k, v := range day {
		switch k {
		case "date":
			out[k] = v
		case "baselines":
			bs, _ := v.(map[string]any)
			kept := map[string]any{}
			for m, b := range bs {
				if c, ok := dayFieldCategories[m]; ok && may(c) {
					kept[m] = b
				}
			}
			out[k] = kept
		default:
			if c, ok := dayFieldCategories[k]; ok && may(c) {
				out[k] = v
			}
		}
	}
	return out
}
