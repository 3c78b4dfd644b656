package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase/internal/pbtest"
)

// replayExportDir is the public Fitbit export (see its README).
const replayExportDir = "../../../shared/data/fitbit"

// replayCSV reads a file of the export into rows keyed by Id and ISO date (the first two
// columns), skipping the test when the export is not there.
func replayCSV(t *testing.T, name string) map[[2]string][]string {
	t.Helper()
	f, err := os.Open(filepath.Join(replayExportDir, name))
	if os.IsNotExist(err) {
		t.Skipf("the Fitbit export is not at %s", replayExportDir)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	out := map[[2]string][]string{}
	for _, row := range rows[1:] {
		d, err := time.Parse("1/2/2006", strings.Fields(row[1])[0])
		if err != nil {
			t.Fatal(err)
		}
		out[[2]string{row[0], d.Format(time.DateOnly)}] = row
	}
	return out
}

// replayReport runs `pulsebase replay` with args and returns its JSON report.
func replayReport(t *testing.T, args ...string) map[string]any {
	t.Helper()
	file := filepath.Join(t.TempDir(), "replay.json")
	var out, errb bytes.Buffer
	if err := run(context.Background(), append(append([]string{"replay"}, args...), "--json", file), noEnv, nil, &out, &errb); err != nil {
		t.Fatalf("replay: %v\n%s%s", err, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "steps") || !strings.Contains(out.String(), "samples/s") {
		t.Errorf("got report %q, want a table with steps and samples/s", out.String())
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var rep map[string]any
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	return rep
}

// TestReplayFitbitEndToEnd replays three days of two users of the real export into a
// server started through run(), as fast as possible, and compares the server's daily
// metrics with Fitbit's own: steps with dailyActivity's TotalSteps, active minutes with its
// very + fairly active minutes, minutes asleep with sleepDay's. The days are ones with all
// 24 hours of minutes, where the export agrees with itself. A second replay finds every
// sample a duplicate and changes nothing.
func TestReplayFitbitEndToEnd(t *testing.T) {
	daily := replayCSV(t, "dailyActivity_merged.csv")
	sleep := replayCSV(t, "sleepDay_merged.csv")
	users := []string{"6962181067", "8378563200"}
	days := []string{"2016-04-13", "2016-04-14", "2016-04-15"}

	dir := t.TempDir()
	srv := startServer(t, dir, "--daily-interval", "200ms")
	args := []string{"--format", "fitbit", replayExportDir, "--server", srv.url, "--data-dir", dir,
		"--zone", "America/Chicago", "--users", strings.Join(users, ","), "--from", days[0], "--to", days[len(days)-1],
		"--as-fast-as-possible"}
	rep := replayReport(t, args...)
	total := rep["total"].(map[string]any)
	sent := total["sent"].(float64)
	if rep["users"] != 2.0 || sent < 2*3*1440 || total["accepted"] != sent || total["duplicates"] != 0.0 || total["rejected"] != 0.0 {
		t.Fatalf("first replay: got %v, want 2 users and every sample accepted", rep)
	}
	types := rep["types"].(map[string]any)
	for typ, want := range map[string]float64{"activity_intensity": 2 * 3 * 1440, "sleep_stage": 2 * 2 * 3} {
		if got := types[typ].(map[string]any)["sent"]; got != want {
			t.Errorf("got %v %s samples, want %v", got, typ, want)
		}
	}
	t.Logf("first replay: %v samples at %v samples/s", sent, rep["samples_per_second"])

	// What the server must show: Fitbit's own daily summaries.
	want := map[string][]string{}
	for _, id := range users {
		for _, d := range days {
			a, s := daily[[2]string{id, d}], sleep[[2]string{id, d}]
			if a == nil || s == nil {
				t.Fatalf("user %s has no summary of %s in the export", id, d)
			}
			very, _ := strconv.Atoi(a[10])
			fairly, _ := strconv.Atoi(a[11])
			want[id] = append(want[id], fmt.Sprintf("%s steps %s active %d asleep %s", d, a[2], very+fairly, s[3]))
		}
	}
	got := map[string][]string{}
	check := func() bool {
		for _, id := range users {
			tok := mintToken(t, dir, "--user", "fitbit-"+id)
			r := pbtest.Do(t, "GET", srv.url+"/v1/users/me/daily?from="+days[0]+"&to="+days[len(days)-1], tok, "", nil)
			var body struct {
				Days []struct {
					Date          string   `json:"date"`
					Steps         *float64 `json:"steps"`
					ActiveMinutes *float64 `json:"active_minutes"`
					SleepMinutes  *float64 `json:"sleep_minutes"`
				} `json:"days"`
			}
			r.JSON(t, &body)
			got[id] = nil
			for _, d := range body.Days {
				got[id] = append(got[id], fmt.Sprintf("%s steps %s active %s asleep %s", d.Date, num(d.Steps), num(d.ActiveMinutes), num(d.SleepMinutes)))
			}
			if !slices.Equal(got[id], want[id]) {
				return false
			}
		}
		return true
	}
	pbtest.WaitFor(t, 30*time.Second, "the server's daily metrics to equal Fitbit's", check,
		func() string { return fmt.Sprintf("got %q\nwant %q", got, want) })

	again := replayReport(t, args...)
	total = again["total"].(map[string]any)
	if total["sent"] != sent || total["duplicates"] != sent || total["accepted"] != 0.0 || total["rejected"] != 0.0 {
		t.Errorf("second replay: got %v, want all %v samples duplicates", total, sent)
	}
	if !check() {
		t.Errorf("after the second replay: got %q, want %q", got, want)
	}
}

// num prints an optional daily metric as the export would.
func num(p *float64) string {
	if p == nil {
		return "absent"
	}
	return strconv.FormatFloat(*p, 'f', -1, 64)
}

// TestReplayUsage checks that mistakes in calling replay are usage errors (exit 2), that
// --help is not, and that a flag's environment twin counts.
func TestReplayUsage(t *testing.T) {
	base := []string{"replay", "--format", "fitbit", "DIR", "--zone", "America/Chicago"}
	for _, tt := range []struct {
		name string
		args []string
	}{
		{"no directory", []string{"replay", "--format", "fitbit", "--zone", "America/Chicago", "--as-fast-as-possible"}},
		{"two directories", append(slices.Clone(base), "OTHER", "--as-fast-as-possible")},
		{"no format", []string{"replay", "DIR", "--zone", "America/Chicago", "--as-fast-as-possible"}},
		{"unknown format", []string{"replay", "--format", "garmin", "DIR", "--zone", "America/Chicago", "--as-fast-as-possible"}},
		{"no zone", []string{"replay", "--format", "fitbit", "DIR", "--as-fast-as-possible"}},
		{"unknown zone", []string{"replay", "--format", "fitbit", "DIR", "--zone", "Mars/Olympus", "--as-fast-as-possible"}},
		{"neither speed nor fast", base},
		{"both speed and fast", append(slices.Clone(base), "--speed", "60", "--as-fast-as-possible")},
		{"negative speed", append(slices.Clone(base), "--speed", "-1")},
		{"batch 0", append(slices.Clone(base), "--as-fast-as-possible", "--batch", "0")},
		{"batch 5001", append(slices.Clone(base), "--as-fast-as-possible", "--batch", "5001")},
		{"bad user", append(slices.Clone(base), "--as-fast-as-possible", "--users", "123,4 5")},
		{"bad date", append(slices.Clone(base), "--as-fast-as-possible", "--from", "4/12/2016")},
		{"from after to", append(slices.Clone(base), "--as-fast-as-possible", "--from", "2016-05-02", "--to", "2016-05-01")},
		{"bad server", append(slices.Clone(base), "--as-fast-as-possible", "--server", "ftp://host")},
		{"unknown flag", append(slices.Clone(base), "--as-fast-as-possible", "--bogus")},
	} {
		var out, errb bytes.Buffer
		err := run(context.Background(), tt.args, noEnv, nil, &out, &errb)
		var ue *usageError
		if !errors.As(err, &ue) {
			t.Errorf("%s: got %v, want a usage error", tt.name, err)
		}
	}

	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"replay", "--help"}, noEnv, nil, &out, &errb); err != nil || !strings.Contains(errb.String(), "--as-fast-as-possible") {
		t.Errorf("--help: got %v and %q, want the flags", err, errb.String())
	}

	// PULSEBASE_ZONE stands for --zone: the call gets past the checks and fails on the
	// missing token key, a runtime error rather than a usage error.
	env := func(k string) string {
		if k == "PULSEBASE_ZONE" {
			return "America/Chicago"
		}
		return ""
	}
	err := run(context.Background(), []string{"replay", "--format=fitbit", "--data-dir", t.TempDir(), replayExportDir, "--as-fast-as-possible"}, env, nil, &out, &errb)
	var ue *usageError
	if err == nil || errors.As(err, &ue) || !strings.Contains(err.Error(), "no token key") {
		t.Errorf("zone from the environment: got %v, want the missing token key", err)
	}
}

// TestReplaySplitArgs separates flags from the directory wherever it stands.
func TestReplaySplitArgs(t *testing.T) {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	var cfg replayConfig
	cfg.flags(fs)
	for _, tt := range []struct {
		args        []string
		flags, rest string
	}{
		{[]string{"--format", "fitbit", "DIR", "--zone", "UTC"}, "--format fitbit --zone UTC", "DIR"},
		{[]string{"DIR", "--as-fast-as-possible", "--speed=3"}, "--as-fast-as-possible --speed=3", "DIR"},
		{[]string{"--as-fast-as-possible", "DIR", "-batch", "10"}, "--as-fast-as-possible -batch 10", "DIR"},
		{[]string{"--unknown", "DIR"}, "--unknown", "DIR"},
		{[]string{"--zone", "UTC", "--", "--odd-dir"}, "--zone UTC", "--odd-dir"},
		{[]string{"A", "B"}, "", "A B"},
	} {
		flags, rest := splitArgs(fs, tt.args)
		if strings.Join(flags, " ") != tt.flags || strings.Join(rest, " ") != tt.rest {
			t.Errorf("%q: got flags %q and rest %q, want %q and %q", tt.args, flags, rest, tt.flags, tt.rest)
		}
	}
}
