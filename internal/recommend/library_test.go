package recommend

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/pulsebase/pulsebase"
)

// ruleYAML returns a valid rule of kind as a YAML list item, with each field of over
// (a field name → its YAML text after "name:", "" to leave the field out) in place of
// the default.
func ruleYAML(kind string, over map[string]string) string {
	fields := []struct{ name, value string }{
		{"kind", kind},
		{"category", "activity"},
		{"triggers", "{metrics: [steps], at: [\"12:00\"]}"},
		{"when", `"'steps' in today && today.steps < 100.0"`},
		{"evidence", "\n      steps: today.steps"},
		{"priority", "10"},
		{"title", "Move"},
		{"body", "A short walk now."},
		{"why", "\"{{num .steps}} steps today.\""},
		{"expires", "1h"},
		{"cooldown", "2h"},
	}
	var b strings.Builder
	for i, f := range fields {
		v := f.value
		if o, ok := over[f.name]; ok {
			v = o
		}
		if _, ok := over[f.name]; ok && v == "" {
			continue
		}
		if i == 0 {
			b.WriteString("  - ")
		} else {
			b.WriteString("    ")
		}
		fmt.Fprintf(&b, "%s: %s\n", f.name, v)
	}
	return b.String()
}

// file returns a rule file of version "1" with the rules.
func file(rules ...string) string { return "version: \"1\"\nrules:\n" + strings.Join(rules, "") }

// position returns the 1-based line and column of the first occurrence of needle in src.
func position(src, needle string) (int, int) {
	i := strings.Index(src, needle)
	if i < 0 {
		panic("no " + needle)
	}
	line := strings.Count(src[:i], "\n") + 1
	col := len([]rune(src[strings.LastIndex(src[:i], "\n")+1 : i]))
	return line, col + 1
}

// problems loads src and returns its problems, failing t if it loads.
func problems(t *testing.T, name, src string) Problems {
	t.Helper()
	lib, err := Load(name, []byte(src))
	if err == nil {
		t.Fatalf("Load succeeded with %d rules; want problems", len(lib.Rules))
	}
	var ps Problems
	if !errors.As(err, &ps) || len(ps) == 0 {
		t.Fatalf("error %T %v, want Problems", err, err)
	}
	return ps
}

func TestLoadValid(t *testing.T) {
	t.Parallel()
	src := file(ruleYAML("a", nil), ruleYAML("b", map[string]string{"expires": "2d", "cooldown": "", "priority": "100",
		"category": "[heart, activity]", "triggers": "{at: [\"07:30\", \"21:05\"]}", "evidence": "", "why": "Always."}),
		ruleYAML("c", map[string]string{"priority": "1", "cooldown": "36h"}))
	lib, err := Load("ok.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if lib.Name != "ok.yaml" || lib.Version != "1" || len(lib.Rules) != 3 {
		t.Fatalf("got %q %q with %d rules", lib.Name, lib.Version, len(lib.Rules))
	}
	a, b := lib.Rule("a"), lib.Rule("b")
	if a == nil || b == nil || lib.Rule("nope") != nil {
		t.Fatal("Rule by kind")
	}
	if b.Expires != 48*time.Hour || b.Cooldown != 0 || b.Priority != 100 || lib.Rule("c").Cooldown != 36*time.Hour {
		t.Errorf("b: expires %v cooldown %v priority %d", b.Expires, b.Cooldown, b.Priority)
	}
	if !slices.Equal(b.Categories, []pulsebase.Category{pulsebase.CategoryHeart, pulsebase.CategoryActivity}) {
		t.Errorf("b categories %v", b.Categories)
	}
	if !slices.Equal(b.At, []int{7*60 + 30, 21*60 + 5}) || len(b.Metrics) != 0 {
		t.Errorf("b triggers: at %v metrics %v", b.At, b.Metrics)
	}
	if got := lib.Slots(); !slices.Equal(got, []int{7*60 + 30, 12 * 60, 21*60 + 5}) {
		t.Errorf("slots %v", got)
	}
	c, fired, err := a.Fires(BuildState(Inputs{Now: clock(12, 0), Days: days{"2026-11-29": {"steps": 42.0}}}))
	if err != nil || !fired || c.Why != "42 steps today." {
		t.Errorf("a: fired %v, error %v, why %q", fired, err, c.Why)
	}
}

func TestLoadStarter(t *testing.T) {
	t.Parallel()
	lib, err := Load(StarterName, Starter)
	if err != nil {
		t.Fatalf("starter library: %v", err)
	}
	want := []string{"recovery_day", "move_break", "step_pacing", "sleep_debt", "bedtime_consistency", "elevated_rhr",
		"breathing", "hydration", "streak", "training_load"}
	var got []string
	for _, r := range lib.Rules {
		got = append(got, r.Kind)
	}
	if !slices.Equal(got, want) {
		t.Errorf("kinds %v, want %v", got, want)
	}
	if lib.Version == "" {
		t.Error("no version")
	}
	if got := lib.Slots(); !slices.Equal(got, []int{12 * 60, 15 * 60, 18 * 60, 20 * 60}) {
		t.Errorf("slots %v", got)
	}
}

func TestLoadProblems(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		src   string
		rule  string
		field string
		msg   string
		// at is the text the problem must point at (line and column); "" for no check.
		at string
		// line, when not 0, is the problem's line without a column check.
		line int
	}{
		{name: "unknown variable", src: file(ruleYAML("a", map[string]string{"when": "today.steps > 1.0 && tody.steps < 2.0"})),
			rule: "a", field: "when", msg: "undeclared reference to 'tody'", at: "tody"},
		{name: "unknown variable, quoted", src: file(ruleYAML("a", map[string]string{"when": `"today.steps > 1.0 && tody.steps < 2.0"`})),
			rule: "a", field: "when", msg: "undeclared reference to 'tody'", at: "tody"},
		{name: "unknown variable, folded", src: file(ruleYAML("a", map[string]string{"when": ">-\n      'steps' in today &&\n" +
			"      today.steps > 1.0 &&\n        !profile.in_quiet_hours &&\n      tody.steps < 2.0"})),
			rule: "a", field: "when", msg: "undeclared reference to 'tody'", at: "tody"},
		{name: "unknown variable, literal", src: file(ruleYAML("a", map[string]string{"when": "|\n      today.steps > 1.0 &&\n\n      tody.steps < 2.0"})),
			rule: "a", field: "when", msg: "undeclared reference to 'tody'", at: "tody"},
		{name: "unknown variable, plain over lines", src: file(ruleYAML("a", map[string]string{"when": "today.steps > 1.0 &&\n      tody.steps < 2.0"})),
			rule: "a", field: "when", msg: "undeclared reference to 'tody'", at: "tody"},
		{name: "unknown variable after a non-ASCII string", src: file(ruleYAML("a", map[string]string{"when": "size('±é') > 0 && tody.steps < 2.0"})),
			rule: "a", field: "when", msg: "undeclared reference to 'tody'", at: "tody"},
		{name: "unknown variable after a non-ASCII string, quoted", src: file(ruleYAML("a", map[string]string{"when": `"size('±é') > 0 && tody.steps < 2.0"`})),
			rule: "a", field: "when", msg: "undeclared reference to 'tody'", at: "tody"},
		{name: "unknown field", src: file(ruleYAML("a", map[string]string{"when": "profile.quiet > 1"})),
			rule: "a", field: "when", msg: "undefined field 'quiet'", at: ".quiet"},
		{name: "unknown variable in evidence", src: file(ruleYAML("a", map[string]string{"evidence": "\n      steps: todya.steps"})),
			rule: "a", field: "evidence.steps", msg: "undeclared reference to 'todya'", at: "todya"},
		{name: "syntax error in when", src: file(ruleYAML("a", map[string]string{"when": ">-\n      'steps' in today &&\n      today.steps >> 1.0"})),
			rule: "a", field: "when", msg: "Syntax error", at: "> 1.0"},
		{name: "when not bool", src: file(ruleYAML("a", map[string]string{"when": "today.steps"})),
			rule: "a", field: "when", msg: "want bool", at: "today.steps"},
		{name: "when missing", src: file(ruleYAML("a", map[string]string{"when": ""})), rule: "a", field: "when", msg: "missing expression"},
		{name: "when a list", src: file(ruleYAML("a", map[string]string{"when": "[true]"})), rule: "a", field: "when", msg: "missing expression"},
		{name: "template names an undefined key", src: file(ruleYAML("a", map[string]string{"why": "\"{{num .step}} steps\""})),
			rule: "a", field: "why", msg: "names step, which the rule's evidence does not define", at: "\"{{num .step}}"},
		{name: "template in title names an undefined key", src: file(ruleYAML("a", map[string]string{"title": "\"{{.goal}}\""})),
			rule: "a", field: "title", msg: "goal"},
		{name: "template syntax", src: file(ruleYAML("a", map[string]string{"body": "\"{{num .steps\""})), rule: "a", field: "body", msg: "unclosed action"},
		{name: "template misuses a function", src: file(ruleYAML("a", map[string]string{"body": "\"{{clock}}\""})), rule: "a", field: "body", msg: "clock"},
		{name: "missing title", src: file(ruleYAML("a", map[string]string{"title": ""})), rule: "a", field: "title", msg: "missing text"},
		{name: "unknown category", src: file(ruleYAML("a", map[string]string{"category": "finance"})),
			rule: "a", field: "category", msg: `unknown category "finance"`, at: "finance"},
		{name: "unknown category in a list", src: file(ruleYAML("a", map[string]string{"category": "[heart, fun]"})),
			rule: "a", field: "category", msg: `unknown category "fun"`},
		{name: "no category", src: file(ruleYAML("a", map[string]string{"category": ""})), rule: "a", field: "category", msg: "missing"},
		{name: "unknown trigger metric", src: file(ruleYAML("a", map[string]string{"triggers": "{metrics: [steps, step_count]}"})),
			rule: "a", field: "triggers.metrics", msg: `unknown metric "step_count"`, at: "  - kind: a"},
		{name: "bad at-time 25:00", src: file(ruleYAML("a", map[string]string{"triggers": "{metrics: [steps], at: [\"25:00\"]}"})),
			rule: "a", field: "triggers.at", msg: `"25:00" is not a local time HH:MM`},
		{name: "bad at-time 12:60", src: file(ruleYAML("a", map[string]string{"triggers": "{at: [\"12:00\", \"12:60\"]}"})),
			rule: "a", field: "triggers.at", msg: `"12:60"`},
		{name: "bad at-time noon", src: file(ruleYAML("a", map[string]string{"triggers": "{at: [noon, \"12:00\"]}"})),
			rule: "a", field: "triggers.at", msg: `"noon"`},
		{name: "no trigger", src: file(ruleYAML("a", map[string]string{"triggers": "{}"})), rule: "a", field: "triggers", msg: "no trigger"},
		{name: "duplicate kind", src: file(ruleYAML("a", nil), ruleYAML("b", nil), ruleYAML("a", map[string]string{"priority": "20"})),
			rule: "a", field: "kind", msg: "defined twice", line: 27},
		{name: "bad kind", src: file(ruleYAML("Move-Break", nil)), rule: "Move-Break", field: "kind", msg: "is not a kind"},
		{name: "missing version", src: strings.Replace(file(ruleYAML("a", nil)), "version: \"1\"\n", "", 1), field: "version", msg: "missing"},
		{name: "no rules", src: "version: \"1\"\nrules: []\n", field: "rules", msg: "no rules"},
		{name: "priority 0", src: file(ruleYAML("a", map[string]string{"priority": "0"})), rule: "a", field: "priority", msg: "0 is not from 1 to 100"},
		{name: "priority 101", src: file(ruleYAML("a", map[string]string{"priority": "101"})), rule: "a", field: "priority", msg: "101"},
		{name: "no priority", src: file(ruleYAML("a", map[string]string{"priority": ""})), rule: "a", field: "priority", msg: "0 is not"},
		{name: "expires 2x", src: file(ruleYAML("a", map[string]string{"expires": "2x"})), rule: "a", field: "expires", msg: `"2x"`},
		{name: "expires 1.5d", src: file(ruleYAML("a", map[string]string{"expires": "1.5d"})), rule: "a", field: "expires", msg: `"1.5d"`},
		{name: "expires d", src: file(ruleYAML("a", map[string]string{"expires": "d"})), rule: "a", field: "expires", msg: `"d"`},
		{name: "expires 0", src: file(ruleYAML("a", map[string]string{"expires": "0s"})), rule: "a", field: "expires", msg: "positive"},
		{name: "no expiry", src: file(ruleYAML("a", map[string]string{"expires": ""})), rule: "a", field: "expires", msg: "positive"},
		{name: "cooldown -1h", src: file(ruleYAML("a", map[string]string{"cooldown": "-1h"})), rule: "a", field: "cooldown", msg: `"-1h"`},
		{name: "cooldown -2d", src: file(ruleYAML("a", map[string]string{"cooldown": "-2d"})), rule: "a", field: "cooldown", msg: `"-2d"`},
		{name: "bad evidence name", src: file(ruleYAML("a", map[string]string{"evidence": "\n      Steps: today.steps", "why": "x"})),
			rule: "a", field: "evidence", msg: "not an evidence name", at: "Steps"},
		{name: "evidence not a mapping", src: file(ruleYAML("a", map[string]string{"evidence": "[today.steps]", "why": "x"})),
			rule: "a", field: "evidence", msg: "not a mapping"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ps := problems(t, "rules.yaml", tc.src)
			var p *Problem
			for i := range ps {
				if ps[i].Field == tc.field && ps[i].Rule == tc.rule {
					p = &ps[i]
					break
				}
			}
			if p == nil {
				t.Fatalf("no problem of rule %q field %q in:\n%v", tc.rule, tc.field, ps)
			}
			if len(ps) != 1 {
				t.Errorf("%d problems, want 1:\n%v", len(ps), ps)
			}
			if p.File != "rules.yaml" || !strings.Contains(p.Msg, tc.msg) {
				t.Errorf("got %v, want file rules.yaml and a message with %q", p, tc.msg)
			}
			if tc.at != "" {
				line, col := position(tc.src, tc.at)
				if p.Line != line || p.Column != col {
					t.Errorf("got %d:%d, want %d:%d (%q): %v", p.Line, p.Column, line, col, tc.at, p)
				}
			}
			if tc.line != 0 && p.Line != tc.line {
				t.Errorf("got line %d, want %d: %v", p.Line, tc.line, p)
			}
			if !strings.HasPrefix(p.String(), "rules.yaml") {
				t.Errorf("String() = %q", p.String())
			}
		})
	}
}

// TestLoadProblemLine pins the line of an error inside a folded expression to a number,
// so that a position helper that agreed with a wrong Load cannot hide it.
func TestLoadProblemLine(t *testing.T) {
	t.Parallel()
	src := `version: "1"
rules:
  - kind: recovery
    category: heart
    triggers:
      metrics: [resting_heart_rate]
    when: >-
      'resting_heart_rate' in baseline &&
      baseline.resting_heart_rate.established &&
      baseline.resting_heart_rate.mean_7d >= baseline.resting_heart_rate.mean
        + math.greatest(3.0, baseline.resting_heart_rate.sd) &&
      baseline.resting_heart_rate.z_score > 2.0
    priority: 80
    title: Rest
    body: Rest.
    why: Rest.
    expires: 24h
`
	ps := problems(t, "mine.yaml", src)
	if len(ps) != 1 {
		t.Fatalf("got %d problems, want 1:\n%v", len(ps), ps)
	}
	p := ps[0]
	if p.File != "mine.yaml" || p.Rule != "recovery" || p.Field != "when" || p.Line != 12 || p.Column != 34 {
		t.Errorf("got %s, want mine.yaml:12:34: rule \"recovery\" when: …", p)
	}
	if !strings.HasPrefix(p.String(), `mine.yaml:12:34: rule "recovery" when: `) || !strings.Contains(p.Msg, "z_score") {
		t.Errorf("String() = %q", p.String())
	}
}

func TestLoadSyntaxError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, src, msg string
	}{
		{"bad indentation", "version: \"1\"\nrules:\n  - kind: a\n   category: heart\n", "yaml: line 2"},
		{"unclosed flow", "version: \"1\"\nrules: [\n", "line"},
		{"rules not a list", "version: \"1\"\nrules: 3\n", "cannot unmarshal"},
		{"tab indentation", "version: \"1\"\nrules:\n\t- kind: a\n", "line 3"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ps := problems(t, "bad.yaml", tc.src)
			if len(ps) != 1 || ps[0].File != "bad.yaml" || !strings.Contains(ps[0].Msg, tc.msg) {
				t.Errorf("got %v, want one problem of bad.yaml mentioning %q", ps, tc.msg)
			}
		})
	}
}

// TestLoadReportsEveryProblem checks that a file's problems come together, in file order,
// not just the first.
func TestLoadReportsEveryProblem(t *testing.T) {
	t.Parallel()
	src := strings.Replace(file(
		ruleYAML("a", map[string]string{"when": "tody.steps > 1.0", "priority": "0"}),
		ruleYAML("b", nil),
		ruleYAML("c", map[string]string{"category": "finance", "expires": "soon", "why": "\"{{.nope}}\""}),
		ruleYAML("b", nil),
	), "version: \"1\"\n", "", 1)
	ps := problems(t, "many.yaml", src)
	type key struct{ rule, field string }
	var got []key
	for _, p := range ps {
		got = append(got, key{p.Rule, p.Field})
	}
	want := []key{{"", "version"}, {"a", "priority"}, {"a", "when"}, {"c", "category"}, {"c", "expires"}, {"c", "why"}, {"b", "kind"}}
	if !slices.Equal(got, want) {
		t.Errorf("got problems %v, want %v:\n%v", got, want, ps)
	}
	lines := strings.Split(ps.Error(), "\n")
	if len(lines) != len(ps) {
		t.Fatalf("Error() has %d lines for %d problems:\n%s", len(lines), len(ps), ps.Error())
	}
	for i, l := range lines {
		if l != ps[i].String() || !strings.HasPrefix(l, "many.yaml") {
			t.Errorf("line %d %q, want %q", i, l, ps[i].String())
		}
	}
}

func TestParseDuration(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, true},
		{"2d", 48 * time.Hour, true},
		{"0d", 0, true},
		{"45m", 45 * time.Minute, true},
		{"1h30m", 90 * time.Minute, true},
		{"02d", 0, false},
		{"1.5d", 0, false},
		{"d", 0, false},
		{"2 d", 0, false},
		{"2", 0, false},
	}
	for _, tc := range tests {
		got, err := parseDuration(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestTemplateFuncs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		tmpl string
		v    any
		want string
	}{
		{"{{num .}}", 61.0, "61"},
		{"{{num .}}", 61.04, "61"},
		{"{{num .}}", 61.06, "61.1"},
		{"{{num .}}", int64(7), "7"},
		{"{{num .}}", "x", "x"},
		{"{{duration .}}", 45.0, "45 min"},
		{"{{duration .}}", 425.0, "7 h 05 min"},
		{"{{duration .}}", -90.0, "-1 h 30 min"},
		{"{{clock .}}", 1350.0, "22:30"},
		{"{{clock .}}", 1440.0 + 65, "01:05"},
		{"{{clock .}}", -30.0, "23:30"},
		{"{{pct .}}", 0.456, "46%"},
	}
	for _, tc := range tests {
		tm, err := template.New("t").Funcs(funcs).Parse(tc.tmpl)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		if err := tm.Execute(&b, tc.v); err != nil || b.String() != tc.want {
			t.Errorf("%s of %v = %q, %v; want %q", tc.tmpl, tc.v, b.String(), err, tc.want)
		}
	}
}
