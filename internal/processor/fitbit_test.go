package processor_test

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/agg"
)

// fitbitDir is the public Fitbit export of ../shared/data/fitbit (see its README).
const fitbitDir = "../../../shared/data/fitbit"

func readFitbit(t *testing.T, name string) [][]string {
	t.Helper()
	f, err := os.Open(filepath.Join(fitbitDir, name))
	if err != nil {
		if os.IsNotExist(err) && os.Getenv("CI") != "true" {
			t.Skipf("the Fitbit export is not at %s", fitbitDir)
		}
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	return rows[1:]
}

// TestFitbitStepsThroughThePipeline replays the export's minute steps for five users
// (local times at -05:00, America/Chicago in April–May 2016) through ingest and the
// processor — all of it older than the live horizon, so through the backfill path — and
// checks the day buckets against the export: equal to the minute sums on every user-day
// with all 24 hours of minutes, and to Fitbit's own TotalSteps wherever the export itself
// agrees with its minutes.
func TestFitbitStepsThroughThePipeline(t *testing.T) {
	steps := readFitbit(t, "minuteStepsWide_merged.csv")
	daily := readFitbit(t, "dailyActivity_merged.csv")
	chicago := time.FixedZone("", -5*3600)
	users := map[string]bool{}
	var order []string
	for _, row := range steps {
		if !users[row[0]] && len(order) < 5 {
			users[row[0]] = true
			order = append(order, row[0])
		}
	}
	const days = 10 // the first ten days of each user keep the test quick
	type day struct {
		hours, sum int
	}
	perDay := map[[2]string]*day{}
	inputs := map[string][]pulsebase.SampleInput{}
	first := map[string]time.Time{}
	for _, row := range steps {
		if !users[row[0]] {
			continue
		}
		hour, err := time.ParseInLocation("1/2/2006 3:04:05 PM", row[1], chicago)
		if err != nil {
			t.Fatal(err)
		}
		if f, ok := first[row[0]]; !ok || hour.Before(f) {
			first[row[0]] = hour
		}
		if hour.Sub(first[row[0]]) >= days*24*time.Hour {
			continue
		}
		key := [2]string{row[0], hour.Format("2006-01-02")}
		d := perDay[key]
		if d == nil {
			d = &day{}
			perDay[key] = d
		}
		d.hours++
		for m := 0; m < 60; m++ {
			n, err := strconv.Atoi(row[2+m])
			if err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				continue // a minute without steps adds nothing to a sum
			}
			d.sum += n
			start := hour.Add(time.Duration(m) * time.Minute)
			inputs[row[0]] = append(inputs[row[0]], pulsebase.SampleInput{
				Type: "steps", Value: json.RawMessage(strconv.Itoa(n)), Source: "fitbit",
				Start: start.Format(time.RFC3339), End: start.Add(time.Minute).Format(time.RFC3339),
			})
		}
	}
	total := map[[2]string]int{}
	for _, row := range daily {
		d, err := time.Parse("1/2/2006", row[1])
		if err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.Atoi(row[2])
		total[[2]string{row[0], d.Format("2006-01-02")}] = n
	}

	pl := newPipeline(t)
	pl.run(t)
	ctx := context.Background()
	for _, id := range order {
		user := "ufitbit" + id
		if _, err := pl.consent.Set(ctx, user, pulsebase.Consent{
			Collect:  map[pulsebase.Category]bool{pulsebase.CategoryActivity: true},
			Purposes: map[pulsebase.Purpose]bool{pulsebase.PurposePersonalization: true},
		}, pulsebase.Actor{Role: pulsebase.RoleUser}); err != nil {
			t.Fatal(err)
		}
		for in := range slices.Chunk(inputs[id], 5000) {
			res, err := pl.ingest.Ingest(ctx, user, pulsebase.Principal{Subject: id, Role: pulsebase.RoleDevice, Device: "fitbit"}, in)
			if err != nil || len(res.Rejected) > 0 {
				t.Fatalf("ingest %s: %+v %v", id, res.Rejected, err)
			}
		}
	}
	full, agreeing := 0, 0
	for _, id := range order {
		user := "ufitbit" + id
		pl.waitApplied(t, user)
		got := map[string]float64{}
		for date, p := range pl.dayBuckets(t, user, "steps") {
			got[date] = p.Sum
		}
		for key, d := range perDay {
			if key[0] != id || d.hours != 24 {
				continue
			}
			full++
			if got[key[1]] != float64(d.sum) {
				t.Errorf("user %s %s: got %v steps, want the minute sum %d", id, key[1], got[key[1]], d.sum)
			}
			if d.sum == total[key] {
				agreeing++
				if got[key[1]] != float64(total[key]) {
					t.Errorf("user %s %s: got %v steps, want TotalSteps %d", id, key[1], got[key[1]], total[key])
				}
			}
		}
	}
	if full < 20 {
		t.Fatalf("only %d full user-days were checked", full)
	}
	t.Logf("%d full user-days checked; %d of them agree with Fitbit's TotalSteps in the export itself", full, agreeing)
}

// TestFitbitRestingHeartRateThroughThePipeline replays user 8877689391's heart rate (every
// ~5 s, 10–12 May 2016) with the user's minute steps and intensities of those days through
// ingest and the processor, and checks the stored daily resting heart rate against
// agg.DailyMetrics over the same samples. agg's TestFitbitRestingHeartRate checks that
// computation against a brute force over the raw rows, so the chain ends at the export.
func TestFitbitRestingHeartRateThroughThePipeline(t *testing.T) {
	const id = "8877689391"
	chicago := time.FixedZone("", -5*3600)
	const layout = "1/2/2006 3:04:05 PM"
	from := time.Date(2016, 5, 9, 0, 0, 0, 0, chicago)
	var in []pulsebase.SampleInput
	for _, file := range []struct{ name, typ string }{{"minuteStepsWide_merged.csv", "steps"}, {"minuteIntensitiesWide_merged.csv", "activity_intensity"}} {
		for _, row := range readFitbit(t, file.name) {
			if row[0] != id {
				continue
			}
			hour, err := time.ParseInLocation(layout, row[1], chicago)
			if err != nil {
				t.Fatal(err)
			}
			if hour.Before(from) {
				continue
			}
			for m := 0; m < 60; m++ {
				start := hour.Add(time.Duration(m) * time.Minute)
				v := row[2+m]
				if file.typ == "activity_intensity" {
					v = []string{`"sedentary"`, `"light"`, `"moderate"`, `"vigorous"`}[atoi(t, v)]
				}
				in = append(in, pulsebase.SampleInput{Type: file.typ, Value: json.RawMessage(v), Source: "fitbit",
					Start: start.Format(time.RFC3339), End: start.Add(time.Minute).Format(time.RFC3339)})
			}
		}
	}
	for _, row := range readFitbit(t, "heartrate_seconds_"+id+".csv") {
		at, err := time.ParseInLocation(layout, row[1], chicago)
		if err != nil {
			t.Fatal(err)
		}
		in = append(in, pulsebase.SampleInput{Type: "heart_rate", Value: json.RawMessage(row[2]), Source: "fitbit", Start: at.Format(time.RFC3339)})
	}
	var samples []pulsebase.Sample
	for _, s := range in {
		smp, problems := pulsebase.Normalize(s, time.Now())
		if len(problems) > 0 {
			t.Fatalf("%+v: %v", s, problems)
		}
		samples = append(samples, smp)
	}
	want := map[string]agg.Daily{}
	for _, d := range agg.DailyMetrics(samples) {
		if d.RestingHeartRate != nil {
			want[d.Date] = d
		}
	}
	if len(want) != 3 {
		t.Fatalf("agg found resting heart rates on %d days, want 3 (10–12 May)", len(want))
	}

	pl := newPipeline(t)
	pl.run(t)
	ctx := context.Background()
	const user = "ufitbitrhr"
	grantAll(t, pl, user)
	for chunk := range slices.Chunk(in, 5000) {
		res, err := pl.ingest.Ingest(ctx, user, pulsebase.Principal{Subject: id, Role: pulsebase.RoleDevice, Device: "fitbit"}, chunk)
		if err != nil || len(res.Rejected) > 0 {
			t.Fatalf("ingest: %+v %v", res.Rejected, err)
		}
	}
	pl.waitDaily(t, user)
	got := pl.storedDays(t, user)
	for date, d := range want {
		g := got[date]
		if v, ok := g["resting_heart_rate"].(float64); !ok || !near6(v, *d.RestingHeartRate) || g["resting_heart_rate_source"] != agg.FromSedentary {
			t.Errorf("%s: resting heart rate %v from %v, want %v from the sedentary rule", date, g["resting_heart_rate"], g["resting_heart_rate_source"], *d.RestingHeartRate)
			continue
		}
		t.Logf("%s: resting heart rate %.1f /min", date, *d.RestingHeartRate)
	}
	if n := checkDaily(t, got, samples); n < 30 {
		t.Errorf("compared only %d daily values", n)
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
