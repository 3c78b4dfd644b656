package recommend

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/google/cel-go/common/types"
	"github.com/pulsebase/pulsebase"
)

var sharedEnv = sync.OnceValues(newEnv)

// A Candidate is a rule that fired: the recommendation it would make, before ranking.
type Candidate struct {
	Kind     string
	Priority int
	Title    string
	Body     string
	Why      string
	Evidence map[string]any
	Expires  time.Duration
	Cooldown time.Duration
	Nudge    string
	rule     *Rule
}

// A RuleError is a rule whose condition or evidence failed to evaluate (for example, it
// read a metric the user has no value of without checking `in` first). The rule does
// not fire; the error is reported so that the library can be fixed.
type RuleError struct {
	Kind string
	Err  error
}

func (e RuleError) Error() string { return fmt.Sprintf("rule %s: %v", e.Kind, e.Err) }

// Trigger says why rules run: Metrics the changed metric names, or At a scheduled local
// time (minutes of the day, Scheduled true).
type Trigger struct {
	Metrics   []string
	At        int
	Scheduled bool
}

func (t Trigger) String() string {
	if t.Scheduled {
		return fmt.Sprintf("at %02d:%02d", t.At/60, t.At%60)
	}
	return "metrics"
}

// Runs reports whether r runs on t.
func (r *Rule) Runs(t Trigger) bool {
	if t.Scheduled {
		return slices.Contains(r.At, t.At)
	}
	for _, m := range t.Metrics {
		if slices.Contains(r.Metrics, m) {
			return true
		}
	}
	return false
}

// Allowed reports whether the rule may read a user's data given the categories they
// consented to for personalization.
func (r *Rule) Allowed(allowed func(pulsebase.Category) bool) bool {
	for _, c := range r.Categories {
		if !allowed(c) {
			return false
		}
	}
	return true
}

// Evaluate runs the library's rules that t runs and allowed permits over s, and returns
// the candidates of those that fired, in library order (their texts not rendered yet:
// see Render), and the errors of those that failed.
func (l *Library) Evaluate(s *State, t Trigger, allowed func(pulsebase.Category) bool) ([]Candidate, []RuleError) {
	s.Trigger = t.String()
	act := newActivation(s)
	var out []Candidate
	var errs []RuleError
	for _, r := range l.Rules {
		if !r.Runs(t) || !r.Allowed(allowed) {
			continue
		}
		c, fired, err := r.eval(act)
		if err != nil {
			errs = append(errs, RuleError{Kind: r.Kind, Err: err})
			continue
		}
		if fired {
			out = append(out, c)
		}
	}
	return out, errs
}

// Fires evaluates one rule over s, whatever its triggers and categories, and renders its
// texts when it fires (for tests and tools).
func (r *Rule) Fires(s *State) (Candidate, bool, error) {
	c, fired, err := r.eval(newActivation(s))
	if err == nil && fired {
		err = c.Render()
	}
	return c, fired, err
}

func (r *Rule) eval(act *activation) (Candidate, bool, error) {
	v, _, err := r.when.Eval(act)
	if err != nil {
		return Candidate{}, false, err
	}
	if b, ok := v.(types.Bool); !ok || !bool(b) {
		return Candidate{}, false, nil
	}
	ev := make(map[string]any, len(r.evidence))
	for _, e := range r.evidence {
		x, _, err := e.prog.Eval(act)
		if err != nil {
			return Candidate{}, false, fmt.Errorf("evidence %s: %w", e.name, err)
		}
		ev[e.name] = evalValue(x.Value())
	}
	return Candidate{Kind: r.Kind, Priority: r.Priority, Evidence: ev, Expires: r.Expires, Cooldown: r.Cooldown, Nudge: r.Nudge, rule: r}, true, nil
}

// Render fills the candidate's Title, Body and Why from its evidence. Evaluate leaves
// them empty — only the delivered candidate needs its texts — and Fires renders.
func (c *Candidate) Render() error {
	if c.rule == nil || c.Why != "" {
		return nil
	}
	var err1, err2, err3 error
	c.Title, err1 = execute(c.rule.title, c.Evidence)
	c.Body, err2 = execute(c.rule.body, c.Evidence)
	c.Why, err3 = execute(c.rule.why, c.Evidence)
	if err := errors.Join(err1, err2, err3); err != nil {
		return fmt.Errorf("rule %s: %w", c.Kind, err)
	}
	return nil
}

// execute fills a template (whose white space Load made single spaces).
func execute(t *template.Template, ev map[string]any) (string, error) {
	var b strings.Builder
	err := t.Execute(&b, ev)
	return b.String(), err
}

// ConsentChecker is the consent decision point.
type ConsentChecker interface {
	Allowed(ctx context.Context, user string, c pulsebase.Category, p pulsebase.Purpose) (bool, error)
}

// Pooled reports whether a user's feedback on kind may teach the pooled prior: only when
// they allowed model training on every category its rule reads (a kind no longer in the
// library pools nothing).
func (l *Library) Pooled(ctx context.Context, c ConsentChecker, user, kind string) (bool, error) {
	r := l.Rule(kind)
	if r == nil {
		return false, nil
	}
	for _, cat := range r.Categories {
		ok, err := c.Allowed(ctx, user, cat, pulsebase.PurposeModelTraining)
		if err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}
