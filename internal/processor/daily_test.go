package processor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/agg"
	"github.com/pulsebase/pulsebase/internal/broker"
	"github.com/pulsebase/pulsebase/internal/processor"
)

// waitDaily waits until user's partition is checkpointed past the stream's end and no
// recomputation of the user's days is pending.
func (pl *pipeline) waitDaily(t *testing.T, user string) {
	t.Helper()
	pl.waitApplied(t, user)
	ctx := context.Background()
	owner := processor.PendingOwner(broker.Partition(user, 64))
	deadline := time.Now().Add(90 * time.Second)
	for {
		recs, err := pl.store.DerivedRecords(ctx, owner, processor.KindPending, "", "")
		if err != nil {
			t.Fatal(err)
		}
		var users []string
		if len(recs) == 1 {
			if err := json.Unmarshal(recs[0].Ciphertext, &users); err != nil {
				t.Fatal(err)
			}
		}
		// The commit of the last sample lists the user as pending, in the same transaction
		// as the checkpoint, unless it recomputed their days.
		if !slices.Contains(users, user) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("daily metrics of %s still pending", user)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// storedDays returns the user's stored day objects by date.
func (pl *pipeline) storedDays(t *testing.T, user string) map[string]processor.DayObject {
	t.Helper()
	ctx := context.Background()
	keys, err := pl.vault.UserKeys(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := pl.store.DerivedRecords(ctx, user, processor.KindDaily, "", "")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]processor.DayObject{}
	for _, r := range recs {
		o, err := processor.OpenDay(keys, r.Key, r.Ciphertext)
		if err != nil {
			t.Fatal(err)
		}
		out[r.Key] = o
	}
	return out
}

// checkDaily compares the stored day objects of user with agg.DailyMetrics and agg's
// baselines over the distinct samples; it returns how many metric values it compared.
func checkDaily(t *testing.T, got map[string]processor.DayObject, distinct []pulsebase.Sample) int {
	t.Helper()
	want := agg.DailyMetrics(distinct)
	values := map[string]map[string]float64{} // metric → date → value
	for _, d := range want {
		for k, v := range dayValues(d) {
			if values[k] == nil {
				values[k] = map[string]float64{}
			}
			values[k][d.Date] = v
		}
	}
	if len(got) != len(want) {
		t.Errorf("got %d days (%v), want %d", len(got), slices.Sorted(maps.Keys(got)), len(want))
	}
	compared := 0
	for _, d := range want {
		g, ok := got[d.Date]
		if !ok {
			t.Errorf("no day %s", d.Date)
			continue
		}
		wv := dayValues(d)
		for k, v := range wv {
			gv, ok := g[k].(float64)
			if !ok || !near6(gv, v) {
				t.Errorf("%s %s: got %v, want %v", d.Date, k, g[k], v)
			}
			compared++
		}
		for k := range g {
			if _, ok := wv[k]; !ok && k != "date" && k != "baselines" && k != "sleep_stages" && k != "resting_heart_rate_source" && k != "hrv_source" {
				t.Errorf("%s: %s = %v, want absent", d.Date, k, g[k])
			}
		}
		if d.RestingHeartRate != nil && g["resting_heart_rate_source"] != d.RestingHeartRateFrom {
			t.Errorf("%s: resting heart rate from %v, want %s", d.Date, g["resting_heart_rate_source"], d.RestingHeartRateFrom)
		}
		for stage, m := range d.SleepStages {
			st, _ := g["sleep_stages"].(map[string]any)
			if st[stage] != float64(m) {
				t.Errorf("%s: %s minutes %v, want %d", d.Date, stage, st[stage], m)
			}
		}
		// Baselines, against agg.Baseline over the same metric's days.
		bl, _ := g["baselines"].(map[string]any)
		for metric, byDate := range values {
			b := agg.Baseline(byDate, d.Date)
			if metric == "hrv_rmssd" {
				b = agg.LogBaseline(byDate, d.Date)
			}
			x, ok := bl[metric].(map[string]any)
			if b.Days == 0 && b.Days7 == 0 {
				if ok {
					t.Errorf("%s: baseline of %s %v, want none", d.Date, metric, x)
				}
				continue
			}
			if !ok {
				t.Errorf("%s: no baseline of %s", d.Date, metric)
				continue
			}
			if !near6(x["mean"].(float64), b.Mean60) || !near6(x["sd"].(float64), b.SD60) || !near6(x["mean_7d"].(float64), b.Mean7) ||
				x["days"] != float64(b.Days) || x["established"] != b.Established {
				t.Errorf("%s: baseline of %s %v, want %+v", d.Date, metric, x, b)
			}
			compared++
		}
	}
	return compared
}

// near6 compares to the six decimals the day object keeps.
func near6(a, b float64) bool { return math.Abs(a-b) <= 1e-6 }

// dayValues returns the numeric metrics of d by API name.
func dayValues(d agg.Daily) map[string]float64 {
	out := map[string]float64{}
	f := func(k string, v *float64) {
		if v != nil {
			out[k] = *v
		}
	}
	i := func(k string, v *int) {
		if v != nil {
			out[k] = float64(*v)
		}
	}
	f("steps", d.Steps)
	i("active_minutes", d.ActiveMinutes)
	i("sedentary_bouts", d.SedentaryBouts)
	i("sedentary_minutes", d.SedentaryMinutes)
	f("resting_heart_rate", d.RestingHeartRate)
	f("hrv_rmssd", d.HRVRMSSD)
	i("sleep_minutes", d.SleepMinutes)
	f("sleep_efficiency", d.SleepEfficiency)
	f("sleep_midpoint", d.SleepMidpoint)
	f("active_energy", d.ActiveEnergy)
	f("distance", d.Distance)
	f("water", d.Water)
	f("weight", d.Weight)
	f("mood", d.Mood)
	return out
}

func TestDailyObjectShape(t *testing.T) {
	// A fixed day, to pin the field names of the API's day object.
	in := []pulsebase.SampleInput{
		{Type: "steps", Value: json.RawMessage("4200"), Start: "2026-11-28T10:00:00-06:00", End: "2026-11-28T11:00:00-06:00", Source: "phone"},
		{Type: "resting_heart_rate", Value: json.RawMessage("55"), Start: "2026-11-28T07:00:00-06:00", Source: "watch"},
		{Type: "sleep_stage", Value: json.RawMessage(`"deep"`), Start: "2026-11-28T01:00:00-06:00", End: "2026-11-28T02:30:00-06:00", Source: "ring"},
	}
	pl := newPipeline(t)
	ctx := context.Background()
	const user = "ushape"
	grantAll(t, pl, user)
	if _, err := pl.ingest.Ingest(ctx, user, pulsebase.Principal{Subject: "shape", Role: pulsebase.RoleUser}, in); err != nil {
		t.Fatal(err)
	}
	pl.run(t)
	pl.waitDaily(t, user)
	day := pl.storedDays(t, user)["2026-11-28"]
	b, _ := json.Marshal(day)
	for _, want := range []string{`"date":"2026-11-28"`, `"steps":4200`, `"resting_heart_rate":55`, `"resting_heart_rate_source":"device"`,
		`"sleep_minutes":90`, `"sleep_stages":{"deep":90}`, `"sleep_efficiency":1`, `"baselines":{`, `"established":false`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("day object %s lacks %s", b, want)
		}
	}
}

func grantAll(t *testing.T, pl *pipeline, user string) {
	t.Helper()
	c := pulsebase.Consent{Collect: map[pulsebase.Category]bool{}, Purposes: map[pulsebase.Purpose]bool{pulsebase.PurposePersonalization: true}}
	for _, cat := range []pulsebase.Category{pulsebase.CategoryHeart, pulsebase.CategoryActivity, pulsebase.CategorySleep, pulsebase.CategoryBody, pulsebase.CategoryMind, pulsebase.CategoryNutrition} {
		c.Collect[cat] = true
	}
	if _, err := pl.consent.Set(context.Background(), user, c, pulsebase.Actor{Role: pulsebase.RoleUser}); err != nil {
		t.Fatal(fmt.Errorf("consent: %w", err))
	}
}

// TestPendingDaysSurviveARestart stops a processor whose users' days await recomputation
// and checks that the next one recomputes them without any new sample.
func TestPendingDaysSurviveARestart(t *testing.T) {
	pl := newPipeline(t)
	// A lease lost under load would hand the partitions over within the first run, and
	// a takeover recomputes pending users at once: with a long lease the first processor
	// keeps them until it stops (a clean stop releases its leases at once).
	pl.leaseTTL = time.Minute
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(5, 6))
	now := time.Now()
	users := []string{"upend0", "upend1", "upend2"}
	distinct := map[string][]pulsebase.Sample{}
	stop := pl.runWith(t, processor.RunnerConfig{Flush: 50 * time.Millisecond, DailyEvery: time.Hour})
	for _, u := range users {
		grantAll(t, pl, u)
		in := randomSamples(rng, 150, now)
		if _, err := pl.ingest.Ingest(ctx, u, pulsebase.Principal{Subject: u, Role: pulsebase.RoleUser}, in); err != nil {
			t.Fatal(err)
		}
		distinct[u] = distinctOf(t, in, now)
	}
	pending := func(u string) bool {
		recs, err := pl.store.DerivedRecords(ctx, processor.PendingOwner(broker.Partition(u, 64)), processor.KindPending, "", "")
		return err == nil && len(recs) == 1 && strings.Contains(string(recs[0].Ciphertext), u)
	}
	for _, u := range users {
		pl.waitApplied(t, u)
		// The checkpoint can pass a user's last sample before the commit that marks
		// their dates (backfilled samples are applied after the live ones), so wait for
		// the mark rather than assume it.
		for deadline := time.Now().Add(30 * time.Second); !pending(u); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s's dates were not marked pending within 30 s of their samples' checkpoint", u)
			}
		}
	}
	stop()
	for _, u := range users {
		if !pending(u) {
			t.Fatalf("%s is not pending after the first processor stopped", u)
		}
		if days := pl.storedDays(t, u); len(days) != 0 {
			t.Fatalf("%s has %d days before any recomputation", u, len(days))
		}
	}
	pl.run(t)
	for _, u := range users {
		pl.waitDaily(t, u)
		if n := checkDaily(t, pl.storedDays(t, u), distinct[u]); n < 50 {
			t.Errorf("%s: compared only %d values", u, n)
		}
	}
}
