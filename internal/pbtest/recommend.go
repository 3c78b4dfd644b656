package pbtest

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/pulsebase/pulsebase"
)

// MiddayZone returns a fixed zone in which it is about noon at now, so that tests of
// recommendation delivery do not depend on the hour they run at (quiet hours default to
// 22:00–07:00).
func MiddayZone(now time.Time) *time.Location {
	return time.FixedZone("", (12-now.UTC().Hour())*3600)
}

// RecoverySamples returns 28 days of a watch's resting heart rate and nightly HRV ending
// the day before now in loc: three weeks around 55 /min and 52 ms, then a week at 61 /min
// and 38 ms — what the starter library's recovery_day rule is for.
func RecoverySamples(now time.Time, loc *time.Location) []pulsebase.SampleInput {
	var out []pulsebase.SampleInput
	local := now.In(loc)
	today := time.Date(local.Year(), local.Month(), local.Day(), 0, 0, 0, 0, loc)
	for i := 28; i >= 1; i-- {
		day := today.AddDate(0, 0, -i)
		rhr, hrv := 55.0+float64(i%3)-1, 52.0+float64(i%5)-2
		if i <= 7 {
			rhr, hrv = 61, 38
		}
		at := day.Add(7 * time.Hour).Format(time.RFC3339)
		out = append(out,
			pulsebase.SampleInput{Type: "resting_heart_rate", Value: json.RawMessage(fmt.Sprint(rhr)), Start: at, Source: "watch"},
			pulsebase.SampleInput{Type: "hrv_rmssd", Value: json.RawMessage(fmt.Sprint(hrv)), Start: at, Source: "watch"})
	}
	return out
}
