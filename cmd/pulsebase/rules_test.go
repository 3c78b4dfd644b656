package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase/internal/pbtest"
	"github.com/pulsebase/pulsebase/internal/recommend"
)

// rulesFile returns a rule library of version with two rules, walk and rest.
func rulesFile(version string) string {
	return `version: "` + version + `"
rules:
  - kind: walk
    category: activity
    triggers: {metrics: [steps]}
    when: "'steps' in today && today.steps < 100.0"
    priority: 10
    title: Walk
    body: A short walk now.
    why: Few steps so far today.
    expires: 1h
  - kind: rest
    category: sleep
    triggers: {at: ["21:00"]}
    when: "true"
    priority: 20
    title: Rest
    body: Time to wind down.
    why: It is late.
    expires: 2h
    cooldown: 1d
`
}

// brokenRules has three problems: an undeclared variable at line 6 column 32 (on "tody"),
// an unknown category at 13:15 and a priority out of range, reported at its rule (12:1).
const brokenRules = `version: "broken"
rules:
  - kind: walk
    category: activity
    triggers: {metrics: [steps]}
    when: today.steps > 1.0 && tody.steps < 2.0
    priority: 10
    title: Walk
    body: A short walk now.
    why: Few steps so far today.
    expires: 1h
  - kind: rest
    category: finance
    triggers: {at: ["21:00"]}
    when: "true"
    priority: 101
    title: Rest
    body: Rest.
    why: Late.
    expires: 1h
`

// brokenProblems are the lines `rules check` prints for brokenRules in file.
func brokenProblems(file string) []string {
	return []string{
		file + `:6:32: rule "walk" when: undeclared reference to 'tody' (in container '')`,
		file + `:13:15: rule "rest" category: unknown category "finance"`,
		file + `:12:1: rule "rest" priority: 101 is not from 1 to 100`,
	}
}

// replaceFile replaces path's content at once (as an editor or a deployment does), with
// modification time mtime unless it is zero, so that the server never reads half a file.
func replaceFile(t *testing.T, path, src string, mtime time.Time) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if !mtime.IsZero() {
		if err := os.Chtimes(tmp, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func runRulesCmd(args ...string) (stdout, stderr string, err error) {
	var out, errb bytes.Buffer
	err = run(context.Background(), append([]string{"rules"}, args...), noEnv, nil, &out, &errb)
	return out.String(), errb.String(), err
}

func TestRulesCheck(t *testing.T) {
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good.yaml"), filepath.Join(dir, "bad.yaml")
	missing := filepath.Join(dir, "missing.yaml")
	for path, src := range map[string]string{good: rulesFile("2026-12-01"), bad: brokenRules} {
		if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	goodLine := good + ": ok, 2 rules (version 2026-12-01)"
	lib, err := recommend.Load(recommend.StarterName, recommend.Starter)
	if err != nil {
		t.Fatal(err)
	}
	starterPath := filepath.Join("..", "..", "internal", "recommend", "starter.yaml")
	for _, tc := range []struct {
		name  string
		files []string
		code  int
		want  []string // stdout's lines
	}{
		{"good", []string{good}, 0, []string{goodLine}},
		{"the starter library's file", []string{starterPath}, 0,
			[]string{fmt.Sprintf("%s: ok, %d rules (version %s)", starterPath, len(lib.Rules), lib.Version)}},
		{"broken", []string{bad}, 1, brokenProblems(bad)},
		{"missing", []string{missing}, 1, []string{"open " + missing + ": no such file or directory"}},
		{"every file is checked", []string{bad, good, missing}, 1,
			append(append(brokenProblems(bad), goodLine), "open "+missing+": no such file or directory")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, err := runRulesCmd(append([]string{"check"}, tc.files...)...)
			if got := exitCode(err); got != tc.code {
				t.Errorf("got exit code %d (%v), want %d", got, err, tc.code)
			}
			if got := strings.Split(strings.TrimSuffix(out, "\n"), "\n"); !slices.Equal(got, tc.want) {
				t.Errorf("got output\n%s\nwant\n%s", out, strings.Join(tc.want, "\n"))
			}
			if errOut != "" {
				t.Errorf("got %q on stderr, want nothing (the report is on stdout)", errOut)
			}
		})
	}
	if lib.Version == "" || len(lib.Rules) != 10 {
		t.Errorf("starter library: version %q, %d rules; want a version and 10 rules", lib.Version, len(lib.Rules))
	}
}

func TestRulesUsage(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string // on stderr
	}{
		{"check without a file", []string{"check"}, 2, "rules check needs a FILE"},
		{"no subcommand", nil, 2, "give a subcommand"},
		{"unknown subcommand", []string{"lint", "x.yaml"}, 2, `unknown subcommand "lint"`},
		{"unknown flag", []string{"check", "--strict", "x.yaml"}, 2, "-strict"},
		{"help", []string{"--help"}, 0, "pulsebase rules check FILE..."},
		{"help after a subcommand", []string{"check", "-h"}, 0, "pulsebase rules print [FILE]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, err := runRulesCmd(tc.args...)
			if got := exitCode(err); got != tc.code {
				t.Errorf("got exit code %d (%v), want %d", got, err, tc.code)
			}
			if tc.code == 0 && err != nil {
				t.Errorf("run returned %v, want nil", err)
			}
			if !strings.Contains(errOut, tc.want) {
				t.Errorf("got stderr %q, want it to mention %q", errOut, tc.want)
			}
			if out != "" {
				t.Errorf("got stdout %q, want nothing", out)
			}
		})
	}
}

func TestRulesPrint(t *testing.T) {
	lib, err := recommend.Load(recommend.StarterName, recommend.Starter)
	if err != nil {
		t.Fatal(err)
	}
	kinds := []string{"recovery_day", "move_break", "step_pacing", "sleep_debt", "bedtime_consistency", "elevated_rhr",
		"breathing", "hydration", "streak", "training_load"}
	file := filepath.Join(t.TempDir(), "mine.yaml")
	if err := os.WriteFile(file, []byte(rulesFile("v9")), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, title string
		args        []string
		kinds       []string
		// row is one whole row of the table, by its columns.
		row []string
	}{
		{"starter", "starter.yaml (version " + lib.Version + ")", nil, kinds,
			[]string{"step_pacing", "activity", "at 12:00,at 15:00,at 18:00", "40", "3h", "3h"}},
		{"file", file + " (version v9)", []string{file}, []string{"walk", "rest"},
			[]string{"rest", "sleep", "at 21:00", "20", "2h", "1d"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := runRulesCmd(append([]string{"print"}, tc.args...)...)
			if err != nil {
				t.Fatalf("rules print: %v", err)
			}
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if len(lines) != 2+len(tc.kinds) {
				t.Fatalf("got %d lines, want a title, a header and %d rules:\n%s", len(lines), len(tc.kinds), out)
			}
			if lines[0] != tc.title || !slices.Equal(strings.Fields(lines[1]), []string{"KIND", "CATEGORIES", "TRIGGERS", "PRIO", "EXPIRES", "COOLDOWN"}) {
				t.Errorf("got title %q and header %q", lines[0], lines[1])
			}
			var got []string
			for _, l := range lines[2:] {
				got = append(got, strings.Fields(l)[0])
			}
			if !slices.Equal(got, tc.kinds) {
				t.Errorf("got kinds %v, want %v", got, tc.kinds)
			}
			cols := make([]string, len(tc.row))
			for i, c := range tc.row {
				cols[i] = regexp.QuoteMeta(c)
			}
			if row := regexp.MustCompile(`(?m)^` + strings.Join(cols, ` +`) + `$`); !row.MatchString(out) {
				t.Errorf("no row %q in:\n%s", tc.row, out)
			}
		})
	}
	if _, _, err := runRulesCmd("print", filepath.Join(t.TempDir(), "missing.yaml")); exitCode(err) != 1 {
		t.Errorf("print of a missing file: got %v, want exit code 1", err)
	}
}

// metricLine is one sample of the text exposition format: name{labels} value.
var metricLine = regexp.MustCompile(`^(\w+)(?:\{(.*)\})? (\S+)$`)
var metricLabel = regexp.MustCompile(`(\w+)="((?:[^"\\]|\\.)*)"`)

// metricSample is one sample of a metric.
type metricSample struct {
	labels map[string]string
	value  float64
}

// scrape returns the samples of name on the server's /metrics.
func scrape(t *testing.T, url, name string) []metricSample {
	t.Helper()
	r := pbtest.Do(t, "GET", url+"/metrics", "", "", nil)
	if r.Status != 200 {
		t.Fatalf("GET /metrics: %d", r.Status)
	}
	var out []metricSample
	for _, l := range strings.Split(string(r.Body), "\n") {
		m := metricLine.FindStringSubmatch(l)
		if m == nil || m[1] != name {
			continue
		}
		s := metricSample{labels: map[string]string{}}
		for _, lm := range metricLabel.FindAllStringSubmatch(m[2], -1) {
			v, err := strconv.Unquote(`"` + lm[2] + `"`)
			if err != nil {
				t.Fatalf("label %s in %q: %v", lm[1], l, err)
			}
			s.labels[lm[1]] = v
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			t.Fatalf("value in %q: %v", l, err)
		}
		s.value = v
		out = append(out, s)
	}
	return out
}

// ruleState is what /metrics says of the rule library: the libraries with a non-zero
// gauge ("file@version") and the reloads by outcome.
type ruleState struct {
	inUse     []string
	ok, error float64
}

func (s ruleState) String() string {
	return fmt.Sprintf("in use %q, reloads ok %v error %v", s.inUse, s.ok, s.error)
}

func rulesMetrics(t *testing.T, url string) ruleState {
	t.Helper()
	var s ruleState
	for _, m := range scrape(t, url, "pulsebase_recommend_rule_library") {
		if m.value != 0 {
			s.inUse = append(s.inUse, fmt.Sprintf("%s@%s=%v", m.labels["file"], m.labels["version"], m.value))
		}
	}
	for _, m := range scrape(t, url, "pulsebase_recommend_rule_reloads_total") {
		switch m.labels["outcome"] {
		case "ok":
			s.ok = m.value
		case "error":
			s.error = m.value
		}
	}
	return s
}

// ruleLogs returns the server's JSON log records about the rule file path.
func ruleLogs(t *testing.T, srv *server, path string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(srv.stderr.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(l), &rec) == nil && rec["file"] == path {
			out = append(out, rec)
		}
	}
	return out
}

// TestServeRulesReload runs `serve --rules FILE` through a broken file at startup, a
// good one, a broken one again and a reload on SIGHUP: the server serves throughout,
// logs every problem with its position, and /metrics names the library in use.
func TestServeRulesReload(t *testing.T) {
	lib, err := recommend.Load(recommend.StarterName, recommend.Starter)
	if err != nil {
		t.Fatal(err)
	}
	starterInUse := recommend.StarterName + "@" + lib.Version + "=1"
	path := filepath.Join(t.TempDir(), "rules.yaml")
	replaceFile(t, path, brokenRules, time.Time{})
	srv := startServer(t, t.TempDir(), "--rules", path)
	state := func() string { return rulesMetrics(t, srv.url).String() }
	healthy := func(when string) {
		t.Helper()
		for _, p := range []string{"/healthz", "/readyz"} {
			if r := pbtest.Do(t, "GET", srv.url+p, "", "", nil); r.Status != 200 {
				t.Fatalf("%s: GET %s = %d %s, want 200", when, p, r.Status, r.Body)
			}
		}
	}
	// errorLogged checks that the n-th log record about the file is an error reporting
	// every problem of brokenRules, with in_use the library kept.
	errorLogged := func(n int, inUse, version string) {
		t.Helper()
		recs := ruleLogs(t, srv, path)
		if len(recs) != n {
			t.Fatalf("got %d log records about %s, want %d:\n%s", len(recs), path, n, srv.stderr)
		}
		rec := recs[n-1]
		problems, _ := rec["problems"].(string)
		if rec["level"] != "ERROR" || rec["in_use"] != inUse || rec["version"] != version ||
			problems != strings.Join(brokenProblems(path), "\n") {
			t.Errorf("got log record %v, want an error with in_use %s version %s and the problems\n%s",
				rec, inUse, version, strings.Join(brokenProblems(path), "\n"))
		}
	}

	// A broken file at startup: the server runs on the starter library and says why.
	healthy("broken file at startup")
	errorLogged(1, recommend.StarterName, lib.Version)
	if s := rulesMetrics(t, srv.url); !slices.Equal(s.inUse, []string{starterInUse}) || s.error != 1 || s.ok != 0 {
		t.Fatalf("got %v, want %s in use and one error", s, starterInUse)
	}

	// A good file: in use within a few watch intervals (2 s).
	replaceFile(t, path, rulesFile("v2"), time.Time{})
	v2 := path + "@v2=1"
	pbtest.WaitFor(t, 10*time.Second, "the v2 library in use", func() bool {
		s := rulesMetrics(t, srv.url)
		return slices.Equal(s.inUse, []string{v2}) && s.ok == 1 && s.error == 1
	}, state)
	healthy("v2 loaded")
	if recs := ruleLogs(t, srv, path); len(recs) != 2 || recs[1]["level"] != "INFO" || recs[1]["version"] != "v2" {
		t.Errorf("got log records %v, want the error and then v2 loaded", recs)
	}

	// A broken file again: reported, and v2 stays in use. (The comment makes it longer
	// than v3 below.)
	replaceFile(t, path, brokenRules+"# "+strings.Repeat("-", 100)+"\n", time.Time{})
	pbtest.WaitFor(t, 10*time.Second, "the broken file reported with v2 kept", func() bool {
		s := rulesMetrics(t, srv.url)
		return s.error == 2 && s.ok == 1 && slices.Equal(s.inUse, []string{v2})
	}, state)
	healthy("broken file on reload")
	errorLogged(3, path, "v2")

	// SIGHUP reloads a file the watch cannot see change: v3 has the broken file's size
	// and modification time.
	if runtime.GOOS == "windows" {
		return
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	v3 := rulesFile("v3")
	if pad := int(fi.Size()) - len(v3) - 2; pad >= 0 {
		v3 += "#" + strings.Repeat("-", pad) + "\n"
	} else {
		t.Fatalf("v3 (%d bytes) is longer than the broken file (%d)", len(v3), fi.Size())
	}
	replaceFile(t, path, v3, fi.ModTime())
	if fi2, err := os.Stat(path); err != nil || fi2.Size() != fi.Size() || !fi2.ModTime().Equal(fi.ModTime()) {
		t.Fatalf("v3 file: %v, %v; want size %d and time %v", fi2, err, fi.Size(), fi.ModTime())
	}
	// Should the server not listen for SIGHUP, this keeps it from ending the test binary:
	// the step then fails by its deadline.
	guard := make(chan os.Signal, 1)
	signal.Notify(guard, syscall.SIGHUP)
	defer signal.Stop(guard)
	self, err := os.FindProcess(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if err := self.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	pbtest.WaitFor(t, 10*time.Second, "the v3 library in use after SIGHUP", func() bool {
		s := rulesMetrics(t, srv.url)
		return slices.Equal(s.inUse, []string{path + "@v3=1"}) && s.ok == 2 && s.error == 2
	}, state)
	healthy("v3 loaded")
	if err := srv.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
}
