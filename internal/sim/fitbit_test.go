package sim

import (
	"cmp"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/agg"
	"github.com/pulsebase/pulsebase/internal/auth"
	"github.com/pulsebase/pulsebase/internal/pbtest"
)

// fitbitExportDir is the public Fitbit export (see its README).
const fitbitExportDir = "../../../shared/data/fitbit"

func fitbitZone(t *testing.T) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation("America/Chicago")
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// fitbitNeedExport skips the test when the export is not there.
func fitbitNeedExport(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(fitbitExportDir, "minuteStepsWide_merged.csv")); os.IsNotExist(err) {
		t.Skipf("the Fitbit export is not at %s", fitbitExportDir)
	}
}

// fitbitCSV reads a file of the export, without its header.
func fitbitCSV(t *testing.T, name string) [][]string {
	t.Helper()
	f, err := os.Open(filepath.Join(fitbitExportDir, name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	return rows[1:]
}

// fitbitISODate turns the export's "4/13/2016…" into "2016-04-13".
func fitbitISODate(t *testing.T, s string) string {
	t.Helper()
	d, err := time.Parse("1/2/2006", strings.Fields(s)[0])
	if err != nil {
		t.Fatal(err)
	}
	return d.Format(time.DateOnly)
}

func fitbitAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestFitbitStepsMatchDailyActivity loads every user and sums the steps samples per user
// and local day (the date the sample's start carries, which is local since it has the
// offset): each user-day of the CSV has steps samples (0 steps too) summing to its raw
// minutes, and on the user-days with all 24 hours of minutes the sum equals Fitbit's own
// dailyActivity TotalSteps on exactly the 744 user-days the README counts. Every steps
// sample is at -05:00, CDT, and names America/Chicago.
func TestFitbitStepsMatchDailyActivity(t *testing.T) {
	fitbitNeedExport(t)
	x, err := LoadFitbit(fitbitExportDir, FitbitOptions{Zone: fitbitZone(t)})
	if err != nil {
		t.Fatal(err)
	}
	if len(x.Users) != 33 {
		t.Errorf("got %d users, want 33", len(x.Users))
	}
	got := map[[2]string]int{}
	for _, u := range x.Users {
		for _, r := range u.records {
			if r.kind != fitbitSteps {
				continue // the other types are checked with fewer users below
			}
			s := x.sample(u, r)
			if !strings.HasSuffix(s.Start, "-05:00") || !strings.HasSuffix(s.End, "-05:00") || s.Zone != "America/Chicago" || s.Type != "steps" {
				t.Fatalf("got %s %s..%s zone %q, want steps at -05:00 (CDT) in America/Chicago", s.Type, s.Start, s.End, s.Zone)
			}
			got[[2]string{u.ID, s.Start[:10]}] += fitbitAtoi(t, string(s.Value))
		}
	}

	hours, raw := map[[2]string]int{}, map[[2]string]int{}
	for _, row := range fitbitCSV(t, "minuteStepsWide_merged.csv") {
		k := [2]string{row[0], fitbitISODate(t, row[1])}
		hours[k]++
		for _, v := range row[2:] {
			raw[k] += fitbitAtoi(t, v)
		}
	}
	total := map[[2]string]int{}
	for _, row := range fitbitCSV(t, "dailyActivity_merged.csv") {
		total[[2]string{row[0], fitbitISODate(t, row[1])}] = fitbitAtoi(t, row[2])
	}
	full, match := 0, 0
	for k, h := range hours {
		if _, ok := got[k]; !ok {
			t.Errorf("user %s %s: no steps sample, want the CSV's %d steps", k[0], k[1], raw[k])
		}
		if got[k] != raw[k] {
			t.Errorf("user %s %s: got %d steps, want the CSV's %d", k[0], k[1], got[k], raw[k])
		}
		if h != 24 {
			continue
		}
		full++
		if n, ok := total[k]; ok && n == got[k] {
			match++
		}
	}
	if full != 888 || match != 744 {
		t.Errorf("got %d user-days with 24 hours, %d equal to TotalSteps; want 888 and 744", full, match)
	}
}

// TestFitbitDailyMetrics validates every sample of three users as the server would, checks
// the ids are unique and every time is at -05:00 (CDT), and computes the daily metrics
// the server would (agg.DailyMetrics): steps equal to TotalSteps on the full days where
// the export agrees with itself, active minutes equal to the minutes of intensity 2 or 3
// ("fairly" and "very" active), and a night on each SleepDay with its minutes asleep and
// in bed, waking between 05:00 and 11:00.
func TestFitbitDailyMetrics(t *testing.T) {
	fitbitNeedExport(t)
	ids := []string{"1503960366", "6962181067", "8877689391"}
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	loc := fitbitZone(t)
	x, err := LoadFitbit(fitbitExportDir, FitbitOptions{Zone: loc, Users: ids})
	if err != nil {
		t.Fatal(err)
	}
	if len(x.Users) != 3 || x.Repeated != 0 {
		t.Fatalf("got %d users, %d repeated rows; want 3 and 0", len(x.Users), x.Repeated)
	}

	type key = [2]string
	hours, raw, active := map[key]int{}, map[key]int{}, map[key]int{}
	for _, row := range fitbitCSV(t, "minuteStepsWide_merged.csv") {
		if want[row[0]] {
			k := key{row[0], fitbitISODate(t, row[1])}
			hours[k]++
			for _, v := range row[2:] {
				raw[k] += fitbitAtoi(t, v)
			}
		}
	}
	for _, row := range fitbitCSV(t, "minuteIntensitiesWide_merged.csv") {
		if want[row[0]] {
			for _, v := range row[2:] {
				if fitbitAtoi(t, v) >= 2 {
					active[key{row[0], fitbitISODate(t, row[1])}]++
				}
			}
		}
	}
	total := map[key]int{}
	for _, row := range fitbitCSV(t, "dailyActivity_merged.csv") {
		total[key{row[0], fitbitISODate(t, row[1])}] = fitbitAtoi(t, row[2])
	}
	type night struct{ asleep, inBed int }
	nights := map[key]night{}
	for _, row := range fitbitCSV(t, "sleepDay_merged.csv") {
		if want[row[0]] {
			nights[key{row[0], fitbitISODate(t, row[1])}] = night{fitbitAtoi(t, row[3]), fitbitAtoi(t, row[4])}
		}
	}

	now := time.Now()
	checkedSteps, checkedNights := 0, 0
	for _, u := range x.Users {
		seen := map[string]bool{}
		var samples []pulsebase.Sample
		for _, in := range x.Samples(u) {
			if seen[in.ID] {
				t.Fatalf("id %s twice", in.ID)
			}
			// April–May 2016 is daylight saving time in Chicago: CDT, -05:00.
			if !strings.HasSuffix(in.Start, "-05:00") || in.End != "" && !strings.HasSuffix(in.End, "-05:00") || in.Zone != "America/Chicago" {
				t.Fatalf("got %s %s..%s zone %q, want -05:00 (CDT) in America/Chicago", in.Type, in.Start, in.End, in.Zone)
			}
			seen[in.ID] = true
			s, probs := pulsebase.Normalize(in, now)
			if len(probs) > 0 {
				t.Fatalf("sample %+v: %+v", in, probs)
			}
			samples = append(samples, s)
		}
		days := map[string]agg.Daily{}
		for _, d := range agg.DailyMetrics(samples) {
			days[d.Date] = d
		}
		for k, h := range hours {
			if k[0] != u.ID {
				continue
			}
			d := days[k[1]]
			if d.ActiveMinutes == nil || *d.ActiveMinutes != active[k] {
				t.Errorf("user %s %s: got active minutes %v, want %d", k[0], k[1], fitbitDeref(d.ActiveMinutes), active[k])
			}
			if h == 24 && total[k] == raw[k] {
				checkedSteps++
				if d.Steps == nil || *d.Steps != float64(total[k]) {
					t.Errorf("user %s %s: got %v steps, want TotalSteps %d", k[0], k[1], fitbitDeref(d.Steps), total[k])
				}
			}
		}
		for _, sess := range agg.Sessions(samples) {
			n, ok := nights[key{u.ID, sess.Date}]
			if !ok {
				t.Errorf("user %s: a night ending %s, which has no SleepDay", u.ID, sess.Date)
				continue
			}
			checkedNights++
			if sess.Asleep != time.Duration(n.asleep)*time.Minute || sess.InBed != time.Duration(n.inBed)*time.Minute {
				t.Errorf("user %s %s: got %s asleep %s in bed, want %d and %d minutes", u.ID, sess.Date, sess.Asleep, sess.InBed, n.asleep, n.inBed)
			}
			wake := sess.End.In(loc)
			if wake.Hour() < 5 || wake.Hour() > 11 || wake.Hour() == 11 && wake.Minute() > 0 {
				t.Errorf("user %s %s: wakes at %s, want 05:00..11:00", u.ID, sess.Date, wake.Format(time.Kitchen))
			}
			if d := days[sess.Date]; d.SleepMinutes == nil || *d.SleepMinutes != n.asleep {
				t.Errorf("user %s %s: got %v sleep minutes, want %d", u.ID, sess.Date, fitbitDeref(d.SleepMinutes), n.asleep)
			}
		}
	}
	// 1503960366 has 25 nights and 6962181067 31; 8877689391 none.
	if checkedNights != 56 || checkedSteps < 40 {
		t.Errorf("checked %d nights and %d days of steps, want 56 and at least 40", checkedNights, checkedSteps)
	}
}

func fitbitDeref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

// TestFitbitActiveEnergy checks the hourly Calories mapping: an hour's active energy is its
// Calories minus the user's lowest hour, and hours at that floor send nothing.
func TestFitbitActiveEnergy(t *testing.T) {
	fitbitNeedExport(t)
	const id = "1503960366"
	x, err := LoadFitbit(fitbitExportDir, FitbitOptions{Zone: fitbitZone(t), Users: []string{id}})
	if err != nil {
		t.Fatal(err)
	}
	floor, want, hours := math.MaxInt, map[string]int{}, 0
	rows := fitbitCSV(t, "hourlyCalories_merged.csv")
	for _, row := range rows {
		if row[0] == id {
			floor = min(floor, fitbitAtoi(t, row[2]))
		}
	}
	for _, row := range rows {
		if row[0] == id && fitbitAtoi(t, row[2]) > floor {
			hour, err := ParseFitbitTime(row[1], fitbitZone(t))
			if err != nil {
				t.Fatal(err)
			}
			want[hour.Format(time.RFC3339)] = fitbitAtoi(t, row[2]) - floor
			hours++
		}
	}
	got := 0
	for _, s := range x.Samples(x.Users[0]) {
		if s.Type != "active_energy" {
			continue
		}
		got++
		if w, ok := want[s.Start]; !ok || string(s.Value) != strconv.Itoa(w) || s.Unit != "kcal" {
			t.Errorf("got %s %s %s at %s, want %d kcal", s.Type, s.Value, s.Unit, s.Start, w)
		}
	}
	if floor != 47 || got != hours {
		t.Errorf("got floor %d and %d hours, want 47 and %d", floor, got, hours)
	}
}

// TestFitbitLocalTime reads the export's naive times in a zone with daylight saving time.
func TestFitbitLocalTime(t *testing.T) {
	loc := fitbitZone(t)
	tests := []struct {
		in, want string // want "" means an error
	}{
		{"4/13/2016 12:00:00 AM", "2016-04-13T00:00:00-05:00"},
		{"5/12/2016 11:59:59 PM", "2016-05-12T23:59:59-05:00"},
		{"5/1/2016 12:30:00 PM", "2016-05-01T12:30:00-05:00"},
		{"1/15/2016 1:00:00 PM", "2016-01-15T13:00:00-06:00"}, // CST
		{"3/13/2016 1:59:59 AM", "2016-03-13T01:59:59-06:00"},
		{"3/13/2016 3:00:00 AM", "2016-03-13T03:00:00-05:00"},
		{"3/13/2016 2:30:00 AM", ""}, // skipped when clocks went forward
		{"11/6/2016 1:30:00 AM", "2016-11-06T01:30:00-05:00"},
		{"2016-04-13 00:00:00", ""},
		{"4/13/2016", ""},
		{"13/1/2016 1:00:00 AM", ""},
		{"1/1/1999 1:00:00 AM", ""},
	}
	for _, tt := range tests {
		got, err := ParseFitbitTime(tt.in, loc)
		switch {
		case tt.want == "" && err == nil:
			t.Errorf("%q: got %s, want an error", tt.in, got.Format(time.RFC3339))
		case tt.want != "" && err != nil:
			t.Errorf("%q: got %v, want %s", tt.in, err, tt.want)
		case tt.want != "" && got.Format(time.RFC3339) != tt.want:
			t.Errorf("%q: got %s, want %s", tt.in, got.Format(time.RFC3339), tt.want)
		}
	}
}

// FuzzFitbitLocalTime: any string either fails or reads as a time whose wall clock in the
// zone prints back as the string did.
func FuzzFitbitLocalTime(f *testing.F) {
	for _, s := range []string{"4/13/2016 12:00:00 AM", "3/13/2016 2:30:00 AM", "12/31/2099 11:59:59 PM", "1/1/2000 1:00:00 PM", ""} {
		f.Add(s)
	}
	loc, err := time.LoadLocation("America/Chicago")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseFitbitTime(s, loc)
		if err != nil {
			return
		}
		w, err := time.Parse(fitbitTimeLayout, s)
		if err != nil {
			t.Fatalf("%q read as %s but does not parse", s, got)
		}
		if got.Format(fitbitTimeLayout) != w.Format(fitbitTimeLayout) || got.Location() != loc {
			t.Fatalf("%q read as %s", s, got)
		}
	})
}

// TestFitbitOptions checks the choice of users and dates, and the mistakes LoadFitbit
// refuses.
func TestFitbitOptions(t *testing.T) {
	fitbitNeedExport(t)
	loc := fitbitZone(t)
	const id = "6962181067"
	all, err := LoadFitbit(fitbitExportDir, FitbitOptions{Zone: loc, Users: []string{id}})
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]pulsebase.SampleInput{}
	for _, s := range all.Samples(all.Users[0]) {
		byID[s.ID] = s
	}
	some, err := LoadFitbit(fitbitExportDir, FitbitOptions{Zone: loc, Users: []string{id}, From: "2016-04-20", To: "2016-04-21"})
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]int{}
	for _, s := range some.Samples(some.Users[0]) {
		types[s.Type]++
		if w := byID[s.ID]; !reflect.DeepEqual(s, w) {
			t.Errorf("got %+v for some days, want %+v as for all", s, w)
		}
		day := s.Start[:10]
		if s.Type == "sleep_stage" {
			day = s.End[:10] // a night counts on the day it ends
		}
		if day != "2016-04-20" && day != "2016-04-21" {
			t.Errorf("got %s %s..%s, want 20–21 April", s.Type, s.Start, s.End)
		}
	}
	// Two nights of two samples, two days of minutes, 48 hours of energy (some at the
	// floor), a weight each day.
	if types["sleep_stage"] != 4 || types["activity_intensity"] != 2*1440 || types["body_weight"] != 2 || types["steps"] == 0 || types["active_energy"] == 0 {
		t.Errorf("got %v", types)
	}

	for _, tt := range []struct {
		name string
		dir  string
		o    FitbitOptions
		want string
	}{
		{"no zone", fitbitExportDir, FitbitOptions{}, "time zone is required"},
		{"bad id", fitbitExportDir, FitbitOptions{Zone: loc, Users: []string{"12 34"}}, "want a Fitbit Id"},
		{"unknown user", fitbitExportDir, FitbitOptions{Zone: loc, Users: []string{"42"}}, "not in the export"},
		{"bad date", fitbitExportDir, FitbitOptions{Zone: loc, From: "4/12/2016"}, "want YYYY-MM-DD"},
		{"from after to", fitbitExportDir, FitbitOptions{Zone: loc, From: "2016-05-02", To: "2016-05-01"}, "is after"},
		{"no data in range", fitbitExportDir, FitbitOptions{Zone: loc, From: "2020-01-01"}, "no sample"},
		{"no export", t.TempDir(), FitbitOptions{Zone: loc}, "no file of the export"},
	} {
		_, err := LoadFitbit(tt.dir, tt.o)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want an error with %q", tt.name, err, tt.want)
		}
	}
}

// TestFitbitMalformedRow reports a bad row with its file and line.
func TestFitbitMalformedRow(t *testing.T) {
	dir := t.TempDir()
	body := "Id,Time,Value\n1,4/13/2016 1:00:00 AM,60\n1,4/13/2016 1:00:05 AM,sixty\n"
	if err := os.WriteFile(filepath.Join(dir, "heartrate_seconds_merged.csv"), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadFitbit(dir, FitbitOptions{Zone: fitbitZone(t)})
	if err == nil || !strings.Contains(err.Error(), "heartrate_seconds_merged.csv line 3") {
		t.Errorf("got %v, want an error naming line 3", err)
	}
}

// TestFitbitReplay replays one user's day with heart rate into a real server as fast as
// possible, then again: the first replay accepts every sample and sets the user's time
// zone, the second finds every sample a duplicate.
func TestFitbitReplay(t *testing.T) {
	fitbitNeedExport(t)
	srv := pbtest.MustOpenServer(t)
	x, err := LoadFitbit(fitbitExportDir, FitbitOptions{Zone: fitbitZone(t), Users: []string{"8877689391"}, From: "2016-05-11", To: "2016-05-11"})
	if err != nil {
		t.Fatal(err)
	}
	token := func(subject string) (string, error) {
		return srv.Issuer.Mint(auth.TokenRequest{Subject: subject, Role: pulsebase.RoleUser, TTL: time.Hour}, time.Now())
	}
	ctx := context.Background()
	rep, err := ReplayFitbit(ctx, srv.URL, x, ReplayOptions{Token: token, Batch: 1000})
	if err != nil {
		t.Fatal(err)
	}
	tot := rep.Total()
	if tot.Sent != x.Len() || tot.Accepted != tot.Sent || tot.Rejected != 0 || rep.Users != 1 || rep.Retries != 0 {
		t.Fatalf("first: got %+v for %d users with %d retries, want all %d accepted", tot, rep.Users, rep.Retries, x.Len())
	}
	// Batches of one type, at most 1,000 samples: 8 of heart rate, 2 of intensities, one
	// each of steps, energy and weight.
	if rep.Types["heart_rate"].Sent != 7913 || rep.Requests != 13 {
		t.Errorf("first: got %d heart-rate samples in %d requests, want 7913 in 13", rep.Types["heart_rate"].Sent, rep.Requests)
	}
	t.Logf("first: %d samples at %.0f samples/s", tot.Sent, rep.SamplesPerSecond())

	rep, err = ReplayFitbit(ctx, srv.URL, x, ReplayOptions{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	if tot := rep.Total(); tot.Sent != x.Len() || tot.Duplicates != tot.Sent {
		t.Errorf("again: got %+v, want all %d duplicates", tot, x.Len())
	}

	tok, _ := token("fitbit-8877689391")
	var profile struct {
		TimeZone string `json:"time_zone"`
	}
	pbtest.Do(t, "GET", srv.URL+"/v1/users/me/profile", tok, "", nil).JSON(t, &profile)
	if profile.TimeZone != "America/Chicago" {
		t.Errorf("got time zone %q, want America/Chicago", profile.TimeZone)
	}
}

// TestFitbitReplayPaced replays two users' day at 86,400× real time against a scripted
// HTTP peer, which a real server cannot be made to be: it answers the first batch 429 and
// the second 401, and records when each batch arrives. No sample may arrive before it is
// due (its time in the data, divided by the speed, after the replay began), each user's
// samples of each type arrive in time order, the 429 is retried and the 401 answered with a new token.
func TestFitbitReplayPaced(t *testing.T) {
	fitbitNeedExport(t)
	x, err := LoadFitbit(fitbitExportDir, FitbitOptions{Zone: fitbitZone(t), Users: []string{"8877689391", "6962181067"}, From: "2016-05-11", To: "2016-05-11"})
	if err != nil {
		t.Fatal(err)
	}
	type arrival struct {
		at       time.Time
		series   string    // the user's id and the type
		min, max time.Time // of the samples' due times
	}
	var (
		mu       sync.Mutex
		arrivals []arrival
		posts    int
		tokens   atomic.Int32
	)
	peer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		at := time.Now()
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == "PUT" && r.URL.Path == "/v1/users/me/consents":
			io.WriteString(w, `{"version":1}`)
			return
		case r.Method == "POST" && r.URL.Path == "/v1/users/me/profile/ops":
			io.WriteString(w, `{"results":[{"id":"fitbit-replay:1","applied":true}]}`)
			return
		case r.Method != "POST" || r.URL.Path != "/v1/samples":
			http.NotFound(w, r)
			return
		}
		var body struct{ Samples []pulsebase.SampleInput }
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		posts++
		switch posts {
		case 1:
			w.WriteHeader(http.StatusTooManyRequests)
			io.WriteString(w, `{"status":429,"code":"rate_limited","detail":"slow down"}`)
			return
		case 2:
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"status":401,"code":"unauthorized","detail":"token expired"}`)
			return
		}
		series := func(s pulsebase.SampleInput) string { return strings.Split(s.ID, "-")[1] + " " + s.Type }
		a := arrival{at: at, series: series(body.Samples[0])}
		for _, s := range body.Samples {
			d, err := time.Parse(time.RFC3339, cmp.Or(s.End, s.Start))
			if err != nil || series(s) != a.series {
				t.Errorf("got %s %s in a batch of %s: %v", series(s), s.Start, a.series, err)
			}
			if a.min.IsZero() || d.Before(a.min) {
				a.min = d
			}
			if d.After(a.max) {
				a.max = d
			}
		}
		arrivals = append(arrivals, a)
		fmt.Fprintf(w, `{"accepted":%d,"duplicates":0,"rejected":[]}`, len(body.Samples))
	}))
	defer peer.Close()

	const speed = 86400
	first, last := x.Span()
	t0 := last
	for _, u := range x.Users {
		for _, s := range x.Samples(u)[:1] { // the user's first to fall due
			if at, _ := time.Parse(time.RFC3339, cmp.Or(s.End, s.Start)); at.Before(t0) {
				t0 = at
			}
		}
	}
	start := time.Now()
	rep, err := ReplayFitbit(context.Background(), peer.URL, x, ReplayOptions{Speed: speed, Concurrency: 2,
		Token: func(string) (string, error) { return fmt.Sprint("token-", tokens.Add(1)), nil }})
	if err != nil {
		t.Fatal(err)
	}
	if tot := rep.Total(); tot.Sent != x.Len() || tot.Accepted != tot.Sent || rep.Retries != 2 || tokens.Load() != 3 {
		t.Errorf("got %+v, %d retries, %d tokens; want all %d accepted, 2 retries and 3 tokens (2 users + 1 renewed)",
			tot, rep.Retries, tokens.Load(), x.Len())
	}
	if min := last.Sub(first).Seconds() / speed; rep.Elapsed < min {
		t.Errorf("took %.2f s, want at least %.2f s", rep.Elapsed, min)
	}
	lastOf := map[string]time.Time{}
	for _, a := range arrivals {
		if due := start.Add(time.Duration(float64(a.max.Sub(t0)) / speed)); a.at.Before(due) {
			t.Errorf("%s due up to %s arrived %s early", a.series, a.max.Format(time.RFC3339), due.Sub(a.at))
		}
		if a.min.Before(lastOf[a.series]) {
			t.Errorf("%s from %s arrived after %s", a.series, a.min.Format(time.RFC3339), lastOf[a.series].Format(time.RFC3339))
		}
		lastOf[a.series] = a.max
	}
	t.Logf("%d samples in %d batches over %.2f s", rep.Total().Sent, len(arrivals), rep.Elapsed)
}
