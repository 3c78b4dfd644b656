package agg

import (
	"encoding/csv"
	"errors"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
)

// fitbitDir is the public Fitbit Fitness Tracker export (see its README), relative to this
// package.
const fitbitDir = "../../../shared/data/fitbit"

// fitbitLayout is the naive local wall clock of the export: "4/13/2016 12:00:00 AM".
const fitbitLayout = "1/2/2006 3:04:05 PM"

// chicago is the clock the replay attaches: America/Chicago was at −05:00 (CDT) for the
// whole export, 2016-04-12 to 2016-05-13.
var chicago = fixedZone(-5 * 3600)

// fitbitHour is one row of the wide minute files: a user's hour.
type fitbitHour struct {
	start     time.Time // on chicago
	steps     [60]int
	intensity [60]int
}

func readCSV(t *testing.T, name string) [][]string {
	t.Helper()
	f, err := os.Open(filepath.Join(fitbitDir, name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.ReuseRecord = false
	if _, err := r.Read(); err != nil { // header
		t.Fatal(err)
	}
	var rows [][]string
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return rows
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		rows = append(rows, rec)
	}
}

// atoi parses a count of the export; a malformed one fails the test that reads it.
// (No t.Helper here: it is called 2.6 million times.)
func atoi(t *testing.T, s string) int {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		t.Fatalf("not a count in the export: %v", err)
	}
	return n
}

var fitbitHours struct {
	sync.Mutex
	users map[string]map[time.Time]*fitbitHour
}

// readHours reads minuteStepsWide and minuteIntensitiesWide into each user's hours, by user
// id and hour start, once for all tests.
func readHours(t *testing.T) map[string]map[time.Time]*fitbitHour {
	fitbitHours.Lock()
	defer fitbitHours.Unlock()
	if fitbitHours.users != nil {
		return fitbitHours.users
	}
	users := map[string]map[time.Time]*fitbitHour{}
	for _, file := range []string{"minuteStepsWide_merged.csv", "minuteIntensitiesWide_merged.csv"} {
		for _, rec := range readCSV(t, file) {
			start, err := time.ParseInLocation(fitbitLayout, rec[1], chicago)
			if err != nil {
				t.Fatal(err)
			}
			if users[rec[0]] == nil {
				users[rec[0]] = map[time.Time]*fitbitHour{}
			}
			h := users[rec[0]][start]
			if h == nil {
				h = &fitbitHour{start: start}
				for i := range h.intensity {
					h.intensity[i] = -1
				}
				users[rec[0]][start] = h
			}
			for i := range 60 {
				if strings.HasPrefix(file, "minuteSteps") {
					h.steps[i] = atoi(t, rec[2+i])
				} else {
					h.intensity[i] = atoi(t, rec[2+i])
				}
			}
		}
	}
	fitbitHours.users = users
	return users
}

// replay turns a user's hours into one-minute steps and activity_intensity samples with a
// −05:00 offset, as a Fitbit sync would send them, in time order (the order does not
// matter to the results, TestPermutationInvariance checks that; sorted input is just
// cheaper to sort).
func replay(hours map[time.Time]*fitbitHour) []pulsebase.Sample {
	steps, _ := pulsebase.LookupType("steps")
	intensity, _ := pulsebase.LookupType("activity_intensity")
	out := make([]pulsebase.Sample, 0, 120*len(hours))
	for _, start := range slices.SortedFunc(maps.Keys(hours), time.Time.Compare) {
		h := hours[start]
		for i := range 60 {
			start := h.start.Add(time.Duration(i) * time.Minute)
			end := start.Add(time.Minute)
			if l := h.intensity[i]; l >= 0 {
				out = append(out, pulsebase.Sample{Type: "activity_intensity", Value: float64(l),
					Level: intensity.Levels[l], Unit: intensity.Unit, Start: start, End: end, Source: "fitbit"})
			}
			out = append(out, pulsebase.Sample{Type: "steps", Value: float64(h.steps[i]), Unit: steps.Unit,
				Start: start, End: end, Source: "fitbit"})
		}
	}
	return out
}

type fitbitDay struct {
	totalSteps, veryActive, fairlyActive int
}

func readDailyActivity(t *testing.T) map[[2]string]fitbitDay {
	days := map[[2]string]fitbitDay{}
	for _, rec := range readCSV(t, "dailyActivity_merged.csv") {
		date, err := time.Parse("1/2/2006", rec[1])
		if err != nil {
			t.Fatal(err)
		}
		days[[2]string{rec[0], date.Format(DateLayout)}] = fitbitDay{
			totalSteps: atoi(t, rec[2]), veryActive: atoi(t, rec[10]), fairlyActive: atoi(t, rec[11]),
		}
	}
	return days
}

func skipWithoutFitbit(t *testing.T) {
	if _, err := os.Stat(filepath.Join(fitbitDir, "minuteStepsWide_merged.csv")); err != nil {
		t.Skipf("the Fitbit export is not at %s (%v); these checks replay real data and need it", fitbitDir, err)
	}
}

// TestFitbitDailySteps replays every user's minute steps and intensities and checks the
// daily metrics against the raw minutes and against Fitbit's own daily summary.
//
// What the export can confirm: per-day step sums and intensity-minute counts on local days
// (TotalSteps, VeryActive and FairlyActive minutes). What it cannot: it has no resting
// heart rate, no RR intervals or rMSSD, no sleep stages (only nightly totals), one user's
// heart rate for two days, and no zone: it checks our arithmetic and day boundaries on one
// fixed offset, not zone changes or Fitbit's own resting-heart-rate or HRV algorithms.
func TestFitbitDailySteps(t *testing.T) {
	skipWithoutFitbit(t)
	users := readHours(t)
	summary := readDailyActivity(t)
	if len(users) < 5 {
		t.Fatalf("got %d users, want the export's 33", len(users))
	}
	var full, equalTotal, noSummary, activeExact, activeWithin2, compared, activeAbsDiff, lastDay int
	var stepDiffs []int // TotalSteps − our Steps where they differ
	for id, hours := range users {
		// The independent expectation: sums and counts straight from the rows.
		rawSteps, rawActive, nHours := map[string]int{}, map[string]int{}, map[string]int{}
		for _, h := range hours {
			date := h.start.Format(DateLayout)
			nHours[date]++
			for i := range 60 {
				rawSteps[date] += h.steps[i]
				if h.intensity[i] >= 2 {
					rawActive[date]++
				}
			}
		}
		days := DailyMetrics(replay(hours))
		if len(days) != len(nHours) {
			t.Errorf("user %s: got %d days, want %d", id, len(days), len(nHours))
		}
		for _, d := range days {
			// Exact on every day, full or not: one source, whole minutes, integer steps.
			if d.Steps == nil || *d.Steps != float64(rawSteps[d.Date]) {
				t.Errorf("user %s %s: Steps %s, want the minute sum %d", id, d.Date, str(d.Steps), rawSteps[d.Date])
			}
			if d.ActiveMinutes == nil || *d.ActiveMinutes != rawActive[d.Date] {
				t.Errorf("user %s %s: ActiveMinutes %s, want %d minutes of intensity ≥ 2", id, d.Date, str(d.ActiveMinutes), rawActive[d.Date])
			}
			if nHours[d.Date] != 24 {
				continue
			}
			full++
			s, ok := summary[[2]string{id, d.Date}]
			if !ok {
				noSummary++
				continue
			}
			if int(*d.Steps) == s.totalSteps {
				equalTotal++
			} else {
				stepDiffs = append(stepDiffs, s.totalSteps-int(*d.Steps))
				if d.Date == "2016-05-12" {
					lastDay++
				}
			}
			compared++
			diff := *d.ActiveMinutes - (s.veryActive + s.fairlyActive)
			activeAbsDiff += max(diff, -diff)
			if diff == 0 {
				activeExact++
			}
			if diff >= -2 && diff <= 2 {
				activeWithin2++
			}
		}
	}
	t.Logf("%d users; %d user-days with 24 hours of minutes, %d without a daily summary", len(users), full, noSummary)
	slices.Sort(stepDiffs)
	within100, lower := 0, 0
	for _, d := range stepDiffs {
		if d >= -100 && d <= 100 {
			within100++
		}
		if d < 0 {
			lower++
		}
	}
	t.Logf("Steps = TotalSteps on %d of them; on the %d others TotalSteps − Steps has median %d, is within ±100 on %d, "+
		"negative on %d, ranges %d..%d; %d of them are 2016-05-12, the export's last (partial) summary day",
		equalTotal, len(stepDiffs), stepDiffs[len(stepDiffs)/2], within100, lower, stepDiffs[0], stepDiffs[len(stepDiffs)-1], lastDay)
	t.Logf("ActiveMinutes = VeryActive+FairlyActive on %d of %d, within 2 on %d, mean |difference| %.2f",
		activeExact, compared, activeWithin2, float64(activeAbsDiff)/float64(compared))
	// The README: for 744 user-days with all 24 hours of minute data the minute steps sum
	// exactly to TotalSteps. 888 user-days have 24 hours: on the other 143 Fitbit's summary
	// and its minute file disagree by themselves (the log above), which no replay can fix,
	// so only the README's count is asserted.
	if equalTotal != 744 {
		t.Errorf("Steps = TotalSteps on %d full user-days, want the README's 744", equalTotal)
	}
}

// TestFitbitRestingHeartRate replays user 8877689391's heart rate (every ~5 s) with the
// user's minute steps and intensities, and checks the resting heart rate against a brute
// force over the raw rows. The export has no sleep stages, so this exercises the sedentary
// rule only, and it has no Fitbit resting heart rate to compare with.
func TestFitbitRestingHeartRate(t *testing.T) {
	skipWithoutFitbit(t)
	const id = "8877689391"
	hours := readHours(t)[id]
	ss := replay(hours)
	hr := readCSV(t, "heartrate_seconds_"+id+".csv")
	for _, rec := range hr {
		ts, err := time.ParseInLocation(fitbitLayout, rec[1], chicago)
		if err != nil {
			t.Fatal(err)
		}
		ss = append(ss, pulsebase.Sample{Type: "heart_rate", Value: float64(atoi(t, rec[2])), Unit: "/min",
			Start: ts, End: ts, Source: "fitbit"})
	}

	// Independently: naive wall-clock minutes (the CSV strings read as UTC), minute means
	// of heart rate, and a brute force over every minute.
	type acc struct{ sum, n float64 }
	naive := func(s string) time.Time {
		ts, err := time.Parse(fitbitLayout, s)
		if err != nil {
			t.Fatal(err)
		}
		return ts.Truncate(time.Minute)
	}
	means := map[time.Time]*acc{}
	for _, rec := range hr {
		m := naive(rec[1])
		if means[m] == nil {
			means[m] = &acc{}
		}
		means[m].sum += float64(atoi(t, rec[2]))
		means[m].n++
	}
	intensity, steps := map[time.Time]int{}, map[time.Time]int{}
	for _, h := range hours {
		hourStart := naive(h.start.Format(fitbitLayout))
		for i := range 60 {
			m := hourStart.Add(time.Duration(i) * time.Minute)
			intensity[m] = h.intensity[i] + 1 // 0: no data
			steps[m] = h.steps[i]
		}
	}
	restful := func(m time.Time) bool {
		if intensity[m] != 1 { // sedentary, with data
			return false
		}
		for k := 0; k <= 10; k++ {
			if steps[m.Add(-time.Duration(k)*time.Minute)] > 0 {
				return false
			}
		}
		return true
	}
	want := map[string]float64{}
	for m := range means {
		var sum float64
		ok := true
		for k := 0; k < 5 && ok; k++ {
			x := m.Add(time.Duration(k) * time.Minute)
			a := means[x]
			ok = a != nil && restful(x)
			if ok {
				sum += a.sum / a.n
			}
		}
		if !ok {
			continue
		}
		date := m.Add(4 * time.Minute).Format(DateLayout)
		if v, seen := want[date]; !seen || sum/5 < v {
			want[date] = sum / 5
		}
	}
	if len(want) != 3 {
		t.Fatalf("brute force found resting heart rates on %v, want 3 days (2016-05-10 to 05-12)", want)
	}
	days := DailyMetrics(ss)
	for _, date := range slices.Sorted(maps.Keys(want)) {
		d := dayOf(days, date)
		if d.RestingHeartRate == nil || math.Abs(*d.RestingHeartRate-want[date]) > 1e-9 || d.RestingHeartRateFrom != FromSedentary {
			t.Errorf("%s: RestingHeartRate %s from %q, want %v from the brute force (sedentary)", date,
				str(d.RestingHeartRate), d.RestingHeartRateFrom, want[date])
			continue
		}
		t.Logf("%s: resting heart rate %.1f /min", date, *d.RestingHeartRate)
	}
	for _, d := range days {
		if _, ok := want[d.Date]; !ok && d.RestingHeartRate != nil {
			t.Errorf("%s: RestingHeartRate %v, the brute force found none", d.Date, *d.RestingHeartRate)
		}
	}
}
