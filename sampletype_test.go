package pulsebase

import (
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"reflect"
	"strconv"
	"testing"
)

func TestSampleTypesRegistry(t *testing.T) {
	// The table of DOMAIN.md.
	want := []struct {
		name     string
		shape    Shape
		unit     string
		aliases  []string
		category Category
		loinc    string
	}{
		{"heart_rate", ShapeInstant, "/min", []string{"bpm", "beats/min", "count/min"}, CategoryHeart, "8867-4"},
		{"resting_heart_rate", ShapeDaily, "/min", []string{"bpm", "beats/min", "count/min"}, CategoryHeart, "40443-4"},
		{"rr_interval", ShapeInstant, "ms", []string{"s"}, CategoryHeart, ""},
		{"hrv_rmssd", ShapeDaily, "ms", nil, CategoryHeart, ""},
		{"steps", ShapeInterval, "{steps}", []string{"count", "steps"}, CategoryActivity, "55423-8"},
		{"distance", ShapeInterval, "m", []string{"km", "mi", "ft"}, CategoryActivity, "41953-1"},
		{"active_energy", ShapeInterval, "kcal", []string{"kJ", "Cal"}, CategoryActivity, "41981-2"},
		{"activity_intensity", ShapeCategorical, "level", nil, CategoryActivity, ""},
		{"sleep_stage", ShapeCategorical, "stage", nil, CategorySleep, "93832-4"},
		{"spo2", ShapeInstant, "%", []string{"fraction"}, CategoryHeart, "59408-5"},
		{"respiratory_rate", ShapeInstant, "/min", []string{"breaths/min"}, CategoryHeart, "9279-1"},
		{"skin_temperature", ShapeInstant, "Cel", []string{"degF", "[degF]"}, CategoryBody, ""},
		{"body_weight", ShapeInstant, "kg", []string{"lb", "[lb_av]"}, CategoryBody, "29463-7"},
		{"mood", ShapeInstant, "{score}", nil, CategoryMind, ""},
		{"mindful_session", ShapeInterval, "min", []string{"s"}, CategoryMind, ""},
		{"water", ShapeInstant, "mL", []string{"L", "[foz_us]"}, CategoryNutrition, ""},
	}
	got := SampleTypes()
	if len(got) != len(want) {
		t.Fatalf("SampleTypes: got %d types, want %d", len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.Name != w.name || g.Shape != w.shape || g.Unit != w.unit || g.Category != w.category || g.LOINC != w.loinc ||
			!reflect.DeepEqual(g.Aliases, w.aliases) {
			t.Errorf("SampleTypes()[%d]: got %s %s %s %v %s %s, want %s %s %s %v %s %s", i,
				g.Name, g.Shape, g.Unit, g.Aliases, g.Category, g.LOINC,
				w.name, w.shape, w.unit, w.aliases, w.category, w.loinc)
		}
		if lt, ok := LookupType(w.name); !ok || lt != g {
			t.Errorf("LookupType(%q): got %v %v, want the registry's entry", w.name, lt, ok)
		}
		for _, u := range append([]string{"", w.unit}, w.aliases...) {
			if !g.Accepts(u) {
				t.Errorf("%s.Accepts(%q): got false, want true", w.name, u)
			}
		}
		if g.Accepts("furlong") {
			t.Errorf("%s.Accepts(\"furlong\"): got true, want false", w.name)
		}
	}
	for _, name := range []string{"", "Heart_Rate", "heart_rate ", "calories", "stepsx"} {
		if _, ok := LookupType(name); ok {
			t.Errorf("LookupType(%q): got ok, want unknown", name)
		}
	}
	levels := map[string][]string{
		"sleep_stage":        {"in_bed", "awake", "light", "deep", "rem"},
		"activity_intensity": {"sedentary", "light", "moderate", "vigorous"},
	}
	for name, want := range levels {
		st, _ := LookupType(name)
		if !reflect.DeepEqual(st.Levels, want) {
			t.Errorf("%s levels: got %v, want %v", name, st.Levels, want)
		}
	}
	// The order is stable and the result is the caller's to change.
	a := SampleTypes()
	a[0] = nil
	if SampleTypes()[0] == nil {
		t.Error("SampleTypes: changing the returned slice changed the registry")
	}
}

func TestConvert(t *testing.T) {
	for _, tc := range []struct {
		typ, unit string
		in, want  float64
	}{
		{"heart_rate", "", 72, 72},
		{"heart_rate", "/min", 72, 72},
		{"heart_rate", "bpm", 72, 72},
		{"rr_interval", "s", 0.801, 801},
		{"distance", "km", 1.1, 1100},
		{"distance", "mi", 1, 1609.344},
		{"distance", "mi", 0.25, 402.336},
		{"distance", "ft", 1, 0.3048},
		{"distance", "ft", 3, 0.9144},
		{"active_energy", "kJ", 4.184, 1},
		{"active_energy", "kJ", 41.84, 10},
		{"active_energy", "Cal", 250, 250},
		{"spo2", "fraction", 0.57, 57},
		{"spo2", "fraction", 0.97, 97},
		{"skin_temperature", "degF", 98.6, 37},
		{"skin_temperature", "[degF]", 212, 100},
		{"skin_temperature", "degF", -40, -40},
		{"skin_temperature", "degF", 91.4, 33},
		{"body_weight", "lb", 1, 0.45359237},
		{"body_weight", "[lb_av]", 150, 68.0388555},
		{"mindful_session", "s", 90, 1.5},
		{"mindful_session", "s", 1200, 20},
		{"water", "L", 0.3, 300},
		{"water", "[foz_us]", 1, 29.5735295625},
		{"water", "[foz_us]", 8, 236.5882365},
		{"steps", "count", 120, 120},
		{"sleep_stage", "", 3, 3},
	} {
		st, _ := LookupType(tc.typ)
		got, ok := st.Convert(tc.in, tc.unit)
		if !ok || got != tc.want {
			t.Errorf("%s.Convert(%v, %q): got %v %v, want %v true", tc.typ, tc.in, tc.unit, got, ok, tc.want)
		}
	}
	st, _ := LookupType("heart_rate")
	if _, ok := st.Convert(72, "km"); ok {
		t.Error(`heart_rate.Convert(72, "km"): got ok, want false`)
	}
	if got, ok := st.Convert(math.Inf(1), "bpm"); !ok || !math.IsInf(got, 1) {
		t.Errorf(`heart_rate.Convert(+Inf, "bpm"): got %v %v, want +Inf true`, got, ok)
	}
}

// TestConvertExact checks the decimal conversion against exact rational arithmetic: the
// result must be the float64 nearest to the exact value, for numbers of every size.
func TestConvertExact(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, st := range SampleTypes() {
		for _, c := range st.convs[1:] {
			for range 2000 {
				text := randomDecimal(r)
				x, err := strconv.ParseFloat(text, 64)
				if err != nil {
					continue
				}
				got := c.apply([]byte(text), x)
				q, _ := new(big.Rat).SetString(text)
				q.Mul(q, big.NewRat(c.num, 1))
				q.Add(q, big.NewRat(c.off, 1))
				q.Quo(q, big.NewRat(c.den, 1))
				want, _ := q.Float64()
				if got != want {
					t.Fatalf("%s %s→%s of %s: got %v, want %v", st.Name, c.unit, st.Unit, text, got, want)
				}
			}
		}
	}
}

func randomDecimal(r *rand.Rand) string {
	s := ""
	if r.IntN(4) == 0 {
		s = "-"
	}
	s += strconv.FormatUint(r.Uint64N(1<<r.IntN(64)+1), 10)
	if r.IntN(2) == 0 {
		s += "." + fmt.Sprintf("%0*d", 1+r.IntN(12), r.Uint64N(1_000_000_000_000))
	}
	if r.IntN(4) == 0 {
		s += "e" + strconv.Itoa(r.IntN(60)-30)
	}
	return s
}

func TestParseDecimal(t *testing.T) {
	for _, tc := range []struct {
		in   string
		neg  bool
		m    uint64
		e    int
		isOK bool
	}{
		{"0", false, 0, 0, true},
		{"-0.50", true, 50, -2, true},
		{"120", false, 120, 0, true},
		{"0.001e3", false, 1, 0, true},
		{"1.5E+2", false, 15, 1, true},
		{"1e-5", false, 1, -5, true},
		{"12345678901234567890", false, 0, 0, false},
		{"01", false, 0, 0, false},
		{"1.", false, 0, 0, false},
		{".5", false, 0, 0, false},
		{"1e", false, 0, 0, false},
		{"Inf", false, 0, 0, false},
		{"0x10", false, 0, 0, false},
		{"", false, 0, 0, false},
	} {
		neg, m, e, ok := parseDecimal([]byte(tc.in))
		if ok != tc.isOK || ok && (neg != tc.neg || m != tc.m || e != tc.e) {
			t.Errorf("parseDecimal(%q): got %v %d %d %v, want %v %d %d %v", tc.in, neg, m, e, ok, tc.neg, tc.m, tc.e, tc.isOK)
		}
	}
}
