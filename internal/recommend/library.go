package recommend

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
	"text/template"
	"text/template/parse"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/pulsebase/pulsebase"
	"go.yaml.in/yaml/v3"
)

// Starter is the rule library built into the binary: DOMAIN.md's starter library.
//
//go:embed starter.yaml
var Starter []byte

// StarterName is the file name the starter library's problems are reported under.
const StarterName = "starter.yaml"

// A Rule is one compiled recommendation rule.
type Rule struct {
	Kind string
	// Categories are the consent categories the rule reads: it runs only for a user who
	// consented to every one of them for personalization.
	Categories []pulsebase.Category
	// Nudge is the profile's enabled_nudges entry that turns the rule off, or "".
	Nudge string
	// Metrics are the metric names whose change runs the rule; At the local times
	// ("HH:MM", as minutes of the day) at which it runs.
	Metrics []string
	At      []int
	// Priority, from 1 to 100, weighs the rule's candidates in the ranking.
	Priority int
	Expires  time.Duration
	Cooldown time.Duration

	when     cel.Program
	evidence []evidenceExpr
	title    *template.Template
	body     *template.Template
	why      *template.Template
}

type evidenceExpr struct {
	name string
	prog cel.Program
}

// A Library is a checked set of rules.
type Library struct {
	// Name is the file the library came from; Version its declared version.
	Name    string
	Version string
	Rules   []*Rule
	byKind  map[string]*Rule
}

// Rule returns the library's rule of kind, or nil.
func (l *Library) Rule(kind string) *Rule { return l.byKind[kind] }

// Slots returns every local time (minutes of the day) at which some rule runs, sorted.
func (l *Library) Slots() []int {
	var out []int
	for _, r := range l.Rules {
		out = append(out, r.At...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// A Problem is one error of a rule file: where it is and what is wrong.
type Problem struct {
	File   string
	Rule   string // "" for a problem of the file itself
	Field  string // e.g. "when", "evidence.rhr_7d", "why"
	Line   int    // 1-based; 0 when unknown
	Column int
	Msg    string
}

func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	switch {
	case p.Line > 0 && p.Column > 0:
		fmt.Fprintf(&b, ":%d:%d", p.Line, p.Column)
	case p.Line > 0:
		fmt.Fprintf(&b, ":%d", p.Line)
	}
	if p.Rule != "" {
		fmt.Fprintf(&b, ": rule %q", p.Rule)
	}
	if p.Field != "" {
		fmt.Fprintf(&b, " %s", p.Field)
	}
	b.WriteString(": ")
	b.WriteString(p.Msg)
	return b.String()
}

// Problems is every problem Load found; a library with any is not used.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// The file format (docs/recommendations.md).
type fileDoc struct {
	Version string     `yaml:"version"`
	Rules   []ruleNode `yaml:"rules"`
}

type ruleNode struct {
	Kind     string    `yaml:"kind"`
	Category yaml.Node `yaml:"category"`
	Nudge    string    `yaml:"nudge"`
	Triggers struct {
		Metrics []string `yaml:"metrics"`
		At      []string `yaml:"at"`
	} `yaml:"triggers"`
	When     yaml.Node `yaml:"when"`
	Evidence yaml.Node `yaml:"evidence"`
	Priority int       `yaml:"priority"`
	Title    yaml.Node `yaml:"title"`
	Body     yaml.Node `yaml:"body"`
	Why      yaml.Node `yaml:"why"`
	Expires  string    `yaml:"expires"`
	Cooldown string    `yaml:"cooldown"`
	line     int
}

var kindPattern = regexp.MustCompile(`^[a-z][a-z0-9_]{0,39}$`)

// Metric names a trigger may list: sample types and the derived daily metrics.
func knownMetric(name string) bool {
	if _, ok := pulsebase.LookupType(name); ok {
		return true
	}
	switch name {
	case "active_minutes", "sedentary_bouts", "sedentary_minutes", "sleep_minutes", "sleep_efficiency",
		"sleep_midpoint", "water", "weight":
		return true
	}
	return false
}

// Load parses and checks a rule file. Every problem is reported, each with the file, the
// rule, the field and the position in the file (for a CEL error, of the error inside the
// expression); a file with any problem yields no library.
func Load(name string, data []byte) (*Library, error) {
	env, err := sharedEnv()
	if err != nil {
		return nil, err
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, Problems{{File: name, Line: yamlLine(err), Msg: err.Error()}}
	}
	var doc fileDoc
	if err := root.Decode(&doc); err != nil {
		return nil, Problems{{File: name, Msg: err.Error()}}
	}
	var ps Problems
	if doc.Version == "" {
		ps = append(ps, Problem{File: name, Field: "version", Msg: "missing (the library's version, e.g. \"2026-11-29\")"})
	}
	if len(doc.Rules) == 0 {
		ps = append(ps, Problem{File: name, Field: "rules", Msg: "no rules"})
	}
	// Rule positions, for problems outside an expression.
	ruleLines := ruleLines(&root)
	// The file's lines, to place an error inside a folded or multi-line expression.
	lines := strings.Split(string(data), "\n")
	lib := &Library{Name: name, Version: doc.Version, byKind: map[string]*Rule{}}
	for i := range doc.Rules {
		n := &doc.Rules[i]
		if i < len(ruleLines) {
			n.line = ruleLines[i]
		}
		r, rps := compileRule(env, name, lines, n)
		ps = append(ps, rps...)
		if r == nil {
			continue
		}
		if lib.byKind[r.Kind] != nil {
			ps = append(ps, Problem{File: name, Rule: r.Kind, Field: "kind", Line: n.line, Column: 1, Msg: "defined twice"})
			continue
		}
		lib.byKind[r.Kind] = r
		lib.Rules = append(lib.Rules, r)
	}
	if len(ps) > 0 {
		return nil, ps
	}
	return lib, nil
}

// yamlLine returns the line a YAML syntax error names ("yaml: line 4: …"), 0 when none.
func yamlLine(err error) int {
	var n int
	if _, e := fmt.Sscanf(err.Error(), "yaml: line %d:", &n); e != nil {
		return 0
	}
	return n
}

func ruleLines(root *yaml.Node) []int {
	if len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		return nil
	}
	m := root.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == "rules" && m.Content[i+1].Kind == yaml.SequenceNode {
			var out []int
			for _, r := range m.Content[i+1].Content {
				out = append(out, r.Line)
			}
			return out
		}
	}
	return nil
}

func compileRule(env *cel.Env, file string, lines []string, n *ruleNode) (*Rule, Problems) {
	var ps Problems
	bad := func(field string, line, col int, format string, args ...any) {
		if line == 0 {
			line, col = n.line, 1
		}
		ps = append(ps, Problem{File: file, Rule: n.Kind, Field: field, Line: line, Column: col, Msg: fmt.Sprintf(format, args...)})
	}
	r := &Rule{Kind: n.Kind, Nudge: n.Nudge, Metrics: n.Triggers.Metrics, Priority: n.Priority}
	if !kindPattern.MatchString(n.Kind) {
		bad("kind", 0, 0, "%q is not a kind (lower-case letters, digits and _, at most 40)", n.Kind)
	}
	// category: one name or a list.
	var cats []string
	switch n.Category.Kind {
	case yaml.ScalarNode:
		cats = []string{n.Category.Value}
	case yaml.SequenceNode:
		for _, c := range n.Category.Content {
			cats = append(cats, c.Value)
		}
	}
	if len(cats) == 0 {
		bad("category", n.Category.Line, n.Category.Column, "missing: the consent categories the rule reads")
	}
	for _, c := range cats {
		if !slices.Contains(pulsebase.Categories(), pulsebase.Category(c)) {
			bad("category", n.Category.Line, n.Category.Column, "unknown category %q", c)
			continue
		}
		r.Categories = append(r.Categories, pulsebase.Category(c))
	}
	for _, m := range n.Triggers.Metrics {
		if !knownMetric(m) {
			bad("triggers.metrics", 0, 0, "unknown metric %q", m)
		}
	}
	for _, at := range n.Triggers.At {
		t, err := time.Parse("15:04", at)
		if err != nil || len(at) != 5 {
			bad("triggers.at", 0, 0, "%q is not a local time HH:MM", at)
			continue
		}
		r.At = append(r.At, t.Hour()*60+t.Minute())
	}
	if len(r.Metrics) == 0 && len(r.At) == 0 {
		bad("triggers", 0, 0, "no trigger: list metrics whose change runs the rule, local times (at), or both")
	}
	if r.Priority < 1 || r.Priority > 100 {
		bad("priority", 0, 0, "%d is not from 1 to 100", r.Priority)
	}
	var err error
	if r.Expires, err = parseDuration(n.Expires); err != nil || r.Expires <= 0 {
		bad("expires", 0, 0, "%q is not a positive duration such as 4h or 2d", n.Expires)
	}
	if r.Cooldown, err = parseDuration(n.Cooldown); err != nil || r.Cooldown < 0 {
		bad("cooldown", 0, 0, "%q is not a duration such as 4h or 2d", n.Cooldown)
	}

	r.when = compileExpr(env, file, lines, n.Kind, "when", &n.When, cel.BoolType, &ps)
	names := map[string]bool{}
	if n.Evidence.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Evidence.Content); i += 2 {
			k, v := n.Evidence.Content[i], n.Evidence.Content[i+1]
			if !kindPattern.MatchString(k.Value) {
				bad("evidence", k.Line, k.Column, "%q is not an evidence name (lower-case letters, digits and _)", k.Value)
				continue
			}
			p := compileExpr(env, file, lines, n.Kind, "evidence."+k.Value, v, nil, &ps)
			r.evidence = append(r.evidence, evidenceExpr{name: k.Value, prog: p})
			names[k.Value] = true
		}
	} else if n.Evidence.Kind != 0 {
		bad("evidence", n.Evidence.Line, n.Evidence.Column, "not a mapping of names to expressions")
	}
	r.title = compileTemplate(file, n.Kind, "title", &n.Title, names, &ps)
	r.body = compileTemplate(file, n.Kind, "body", &n.Body, names, &ps)
	r.why = compileTemplate(file, n.Kind, "why", &n.Why, names, &ps)
	if len(ps) > 0 {
		return nil, ps
	}
	return r, nil
}

// compileExpr compiles the CEL expression of node; want, if not nil, is the type it must
// have. A problem's position is that of the error inside the expression, translated to
// the file's lines (see exprPosition).
func compileExpr(env *cel.Env, file string, lines []string, rule, field string, node *yaml.Node, want *cel.Type, ps *Problems) cel.Program {
	if node.Kind != yaml.ScalarNode || strings.TrimSpace(node.Value) == "" {
		line := node.Line
		*ps = append(*ps, Problem{File: file, Rule: rule, Field: field, Line: line, Column: node.Column, Msg: "missing expression"})
		return nil
	}
	ast, iss := env.Compile(node.Value)
	if iss.Err() != nil {
		for _, e := range iss.Errors() {
			line, col := exprPosition(lines, node, e.Location.Line(), e.Location.Column())
			*ps = append(*ps, Problem{File: file, Rule: rule, Field: field, Line: line, Column: col, Msg: e.Message})
		}
		return nil
	}
	if want != nil && !ast.OutputType().IsExactType(want) {
		*ps = append(*ps, Problem{File: file, Rule: rule, Field: field, Line: node.Line, Column: node.Column,
			Msg: fmt.Sprintf("is of type %s, want %s", ast.OutputType(), want)})
		return nil
	}
	prog, err := env.Program(ast, cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		*ps = append(*ps, Problem{File: file, Rule: rule, Field: field, Line: node.Line, Column: node.Column, Msg: err.Error()})
		return nil
	}
	return prog
}

// exprPosition maps a position inside a scalar's value (line 1-based, column 0-based, in
// characters, as CEL reports it) to the file. Folding (">", and plain scalars over several
// lines) joins lines with spaces and drops indentation, so the value's lines are not the
// file's: for plain and block scalars the file's lines from the scalar's first are matched
// in turn against the value, and the position is placed on the line whose text holds it.
// A quoted scalar is placed exactly on its first line, by line after it.
func exprPosition(lines []string, node *yaml.Node, line, col int) (int, int) {
	val := []rune(node.Value)
	// off is the position's offset in the value.
	off := 0
	for l := 1; l < line && off < len(val); off++ {
		if val[off] == '\n' {
			l++
		}
	}
	off += col
	first, firstCol := node.Line, node.Column-1 // 1-based line, 0-based column of the text
	block := node.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0
	switch {
	case node.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0:
		if line == 1 {
			return node.Line, node.Column + 1 + col
		}
		return node.Line + line - 1, 0
	case block:
		first, firstCol = node.Line+1, 0 // the text starts on the line after the indicator
	}
	blank := func(r rune) bool { return r == ' ' || r == '\t' || r == '\n' }
	pos := 0
	for n := first; n <= len(lines) && pos < len(val); n++ {
		text := []rune(strings.TrimRight(lines[n-1], " \t\r"))
		c := 0
		if n == first {
			c = min(firstCol, len(text))
		}
		for c < len(text) && blank(text[c]) {
			c++
		}
		if c == len(text) {
			continue // a blank line: a line break of the value, or nothing
		}
		// What the previous line break became in the value.
		for pos < len(val) && blank(val[pos]) {
			pos++
		}
		k := 0
		for c+k < len(text) && pos+k < len(val) && text[c+k] == val[pos+k] {
			k++
		}
		if k == 0 {
			break // not the scalar's text: give up
		}
		if off < pos+k || pos+k == len(val) {
			return n, c + max(off-pos, 0) + 1
		}
		pos += k
	}
	// The file does not match the value (escapes, comments inside): by line.
	if !block && line == 1 {
		return node.Line, node.Column + col
	}
	return first + line - 1, 0
}

var funcs = template.FuncMap{
	// num prints a number with at most one decimal, none when it is whole.
	"num": func(v any) string {
		f, ok := toFloat(v)
		if !ok {
			return fmt.Sprint(v)
		}
		if math.Abs(f-math.Round(f)) < 0.05 {
			return fmt.Sprintf("%.0f", f)
		}
		return fmt.Sprintf("%.1f", f)
	},
	// duration prints minutes as "7 h 05 min" / "45 min".
	"duration": func(v any) string {
		f, _ := toFloat(v)
		m := int(math.Round(f))
		if m < 0 {
			return "-" + fmtMinutes(-m)
		}
		return fmtMinutes(m)
	},
	// clock prints minutes of the day (any integer, wrapped) as HH:MM.
	"clock": func(v any) string {
		f, _ := toFloat(v)
		m := ((int(math.Round(f)) % 1440) + 1440) % 1440
		return fmt.Sprintf("%02d:%02d", m/60, m%60)
	},
	// whole prints a number rounded to a whole one, with thousands separated: 5,714.
	"whole": func(v any) string {
		f, _ := toFloat(v)
		n := int64(math.Round(math.Abs(f)))
		s := fmt.Sprint(n)
		for i := len(s) - 3; i > 0; i -= 3 {
			s = s[:i] + "," + s[i:]
		}
		if f < 0 && n != 0 {
			s = "-" + s
		}
		return s
	},
	// pct prints a fraction as a whole percentage.
	"pct": func(v any) string {
		f, _ := toFloat(v)
		return fmt.Sprintf("%.0f%%", f*100)
	},
}

func fmtMinutes(m int) string {
	if m < 60 {
		return fmt.Sprintf("%d min", m)
	}
	return fmt.Sprintf("%d h %02d min", m/60, m%60)
}

func toFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case int64:
		return float64(x), true
	case int:
		return float64(x), true
	case uint64:
		return float64(x), true
	}
	return 0, false
}

// compileTemplate parses a text template whose fields may name only the rule's evidence.
func compileTemplate(file, rule, field string, node *yaml.Node, names map[string]bool, ps *Problems) *template.Template {
	if node.Kind != yaml.ScalarNode || strings.TrimSpace(node.Value) == "" {
		*ps = append(*ps, Problem{File: file, Rule: rule, Field: field, Line: node.Line, Column: node.Column, Msg: "missing text"})
		return nil
	}
	// Runs of white space (the line breaks of a literal YAML text) become one space.
	src := strings.Join(strings.Fields(node.Value), " ")
	t, err := template.New(field).Funcs(funcs).Option("missingkey=error").Parse(src)
	if err != nil {
		*ps = append(*ps, Problem{File: file, Rule: rule, Field: field, Line: node.Line, Column: node.Column, Msg: err.Error()})
		return nil
	}
	var unknown []string
	walkFields(t.Tree.Root, func(name string) {
		if !names[name] {
			unknown = append(unknown, name)
		}
	})
	if len(unknown) > 0 {
		*ps = append(*ps, Problem{File: file, Rule: rule, Field: field, Line: node.Line, Column: node.Column,
			Msg: fmt.Sprintf("names %s, which the rule's evidence does not define", strings.Join(unknown, ", "))})
		return nil
	}
	// Execute with zeroes: a function used wrongly fails now, not at the first delivery.
	zero := map[string]any{}
	for n := range names {
		zero[n] = 0.0
	}
	if err := t.Execute(&bytes.Buffer{}, zero); err != nil {
		*ps = append(*ps, Problem{File: file, Rule: rule, Field: field, Line: node.Line, Column: node.Column, Msg: err.Error()})
		return nil
	}
	return t
}

// walkFields calls fn with the first name of every field reference (.name) in the tree.
func walkFields(n parse.Node, fn func(string)) {
	switch x := n.(type) {
	case *parse.ListNode:
		if x == nil {
			return
		}
		for _, c := range x.Nodes {
			walkFields(c, fn)
		}
	case *parse.ActionNode:
		walkFields(x.Pipe, fn)
	case *parse.PipeNode:
		if x == nil {
			return
		}
		for _, c := range x.Cmds {
			walkFields(c, fn)
		}
	case *parse.CommandNode:
		for _, a := range x.Args {
			walkFields(a, fn)
		}
	case *parse.FieldNode:
		fn(x.Ident[0])
	case *parse.ChainNode:
		walkFields(x.Node, fn)
	case *parse.IfNode:
		walkFields(x.Pipe, fn)
		walkFields(x.List, fn)
		walkFields(x.ElseList, fn)
	case *parse.RangeNode:
		walkFields(x.Pipe, fn)
		walkFields(x.List, fn)
		walkFields(x.ElseList, fn)
	case *parse.WithNode:
		walkFields(x.Pipe, fn)
		walkFields(x.List, fn)
		walkFields(x.ElseList, fn)
	}
}

// parseDuration parses a Go duration, or whole days as "2d"; "" is 0.
func parseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	if d, ok := strings.CutSuffix(s, "d"); ok {
		var n int
		if _, err := fmt.Sscanf(d, "%d", &n); err != nil || fmt.Sprint(n) != d {
			return 0, errors.New("bad days")
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	return time.ParseDuration(s)
}

// evalValue converts a CEL result to a Go value for evidence.
func evalValue(v any) any {
	switch x := v.(type) {
	case types.Double:
		return float64(x)
	case types.Int:
		return int64(x)
	case types.Bool:
		return bool(x)
	case types.String:
		return string(x)
	}
	return v
}
