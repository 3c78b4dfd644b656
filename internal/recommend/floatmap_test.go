package recommend

import (
	"strings"
	"testing"
	"time"

	"github.com/google/cel-go/common/types"
)

// TestFloatMap checks the lazy map(string, double) behaves as a CEL map in every way a
// rule can use one.
func TestFloatMap(t *testing.T) {
	env, err := sharedEnv()
	if err != nil {
		t.Fatal(err)
	}
	s := &State{Now: time.Now(), Today: map[string]float64{"steps": 42, "water": 1}}
	for expr, want := range map[string]bool{
		"'steps' in today":                            true,
		"'mood' in today":                             false,
		"today.steps == 42.0":                         true,
		"today['water'] == 1.0":                       true,
		"has(today.steps) && !has(today.mood)":        true,
		"size(today) == 2":                            true,
		"today.all(k, k in ['steps', 'water'])":       true,
		"today.exists(k, today[k] > 40.0)":            true,
		"today == {'steps': 42.0, 'water': 1.0}":      true,
		"today == {'steps': 42.0}":                    false,
		"today != {'steps': 42.0, 'water': 2.0}":      true,
		"size(yesterday) == 0 && !('x' in yesterday)": true,
	} {
		ast, iss := env.Compile(expr)
		if iss.Err() != nil {
			t.Fatalf("%s: %v", expr, iss.Err())
		}
		prg, err := env.Program(ast)
		if err != nil {
			t.Fatal(err)
		}
		v, _, err := prg.Eval(newActivation(s))
		if err != nil || v != types.Bool(want) {
			t.Errorf("%s = %v (%v), want %v", expr, v, err, want)
		}
	}
	// Reading an absent metric is an error, as with any CEL map: rules check `in` first.
	ast, _ := env.Compile("today.mood > 1.0")
	prg, _ := env.Program(ast)
	if _, _, err := prg.Eval(newActivation(s)); err == nil || !strings.Contains(err.Error(), "no such key") {
		t.Errorf("absent key: %v, want no such key", err)
	}
}
