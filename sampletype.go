package pulsebase

import (
	"math"
	"math/big"
	"math/bits"
	"strconv"
)

// Shape says how a sample type spans time, which decides what its End may be.
type Shape int

// The shapes of DOMAIN.md.
const (
	// ShapeInstant is a reading at one moment: End is absent or equals Start.
	ShapeInstant Shape = iota + 1
	// ShapeInterval is an amount over [Start, End]: End is required, at most 24 h after Start.
	ShapeInterval
	// ShapeDaily is a summary a device computed (a day's resting heart rate, a night's
	// rMSSD): End is optional and, when given, at most 24 h after Start.
	ShapeDaily
	// ShapeCategorical is an interval whose value is one of the type's Levels.
	ShapeCategorical
)

func (s Shape) String() string {
	switch s {
	case ShapeInstant:
		return "instant"
	case ShapeInterval:
		return "interval"
	case ShapeDaily:
		return "daily"
	case ShapeCategorical:
		return "categorical"
	}
	return "Shape(" + strconv.Itoa(int(s)) + ")"
}

// SampleType describes one type of the DOMAIN.md table. The values returned by LookupType
// and SampleTypes are shared: callers must not modify them.
type SampleType struct {
	Name  string
	Shape Shape
	// Unit is the canonical UCUM unit every value is converted to ("level" and "stage" for
	// the categorical types, whose values are level indexes).
	Unit string
	// Aliases are the other units accepted on input, in the order of DOMAIN.md.
	Aliases  []string
	Category Category
	// LOINC is the LOINC code of the type, or "" when it has none.
	LOINC string
	// Levels are the names of the levels of a categorical type; the value is the index.
	Levels []string
	// Min and Max bound the value in the canonical unit, inclusive.
	Min, Max float64
	// MaxPerSecond, when positive, further bounds the value of an interval type to
	// MaxPerSecond × the interval's length in seconds (5 steps/s, 15 m/s, 0.5 kcal/s).
	MaxPerSecond float64

	convs []conv // canonical unit first, then the aliases
}

// conv converts a value x in unit to the canonical unit as (x×num + off) / den. Keeping the
// factors as integers lets Normalize convert the decimal text a client sent exactly, so
// 0.57 "fraction" is 57 %, not 56.99999999999999.
type conv struct {
	unit          string
	num, off, den int64
}

var identity = conv{num: 1, den: 1}

func scale(unit string, num, den int64) conv { return conv{unit: unit, num: num, den: den} }

// sampleTypes is the registry, in the order of DOMAIN.md.
var sampleTypes = []*SampleType{
	{Name: "heart_rate", Shape: ShapeInstant, Unit: "/min", Category: CategoryHeart, LOINC: "8867-4",
		Min: 20, Max: 250, convs: []conv{scale("bpm", 1, 1), scale("beats/min", 1, 1), scale("count/min", 1, 1)}},
	{Name: "resting_heart_rate", Shape: ShapeDaily, Unit: "/min", Category: CategoryHeart, LOINC: "40443-4",
		Min: 25, Max: 150, convs: []conv{scale("bpm", 1, 1), scale("beats/min", 1, 1), scale("count/min", 1, 1)}},
	{Name: "rr_interval", Shape: ShapeInstant, Unit: "ms", Category: CategoryHeart,
		Min: 200, Max: 2500, convs: []conv{scale("s", 1000, 1)}},
	{Name: "hrv_rmssd", Shape: ShapeDaily, Unit: "ms", Category: CategoryHeart,
		Min: 1, Max: 300},
	{Name: "steps", Shape: ShapeInterval, Unit: "{steps}", Category: CategoryActivity, LOINC: "55423-8",
		Min: 0, Max: 100_000, MaxPerSecond: 5, convs: []conv{scale("count", 1, 1), scale("steps", 1, 1)}},
	{Name: "distance", Shape: ShapeInterval, Unit: "m", Category: CategoryActivity, LOINC: "41953-1",
		Min: 0, Max: 15 * 86400, MaxPerSecond: 15,
		convs: []conv{scale("km", 1000, 1), scale("mi", 201168, 125), scale("ft", 381, 1250)}}, // 1609.344, 0.3048
	{Name: "active_energy", Shape: ShapeInterval, Unit: "kcal", Category: CategoryActivity, LOINC: "41981-2",
		Min: 0, Max: 0.5 * 86400, MaxPerSecond: 0.5,
		convs: []conv{scale("kJ", 125, 523), scale("Cal", 1, 1)}}, // ÷ 4.184
	{Name: "activity_intensity", Shape: ShapeCategorical, Unit: "level", Category: CategoryActivity,
		Levels: []string{"sedentary", "light", "moderate", "vigorous"}},
	{Name: "sleep_stage", Shape: ShapeCategorical, Unit: "stage", Category: CategorySleep, LOINC: "93832-4",
		Levels: []string{"in_bed", "awake", "light", "deep", "rem"}},
	{Name: "spo2", Shape: ShapeInstant, Unit: "%", Category: CategoryHeart, LOINC: "59408-5",
		Min: 50, Max: 100, convs: []conv{scale("fraction", 100, 1)}},
	{Name: "respiratory_rate", Shape: ShapeInstant, Unit: "/min", Category: CategoryHeart, LOINC: "9279-1",
		Min: 4, Max: 60, convs: []conv{scale("breaths/min", 1, 1)}},
	{Name: "skin_temperature", Shape: ShapeInstant, Unit: "Cel", Category: CategoryBody,
		Min: 25, Max: 45, convs: []conv{degF("degF"), degF("[degF]")}},
	{Name: "body_weight", Shape: ShapeInstant, Unit: "kg", Category: CategoryBody, LOINC: "29463-7",
		Min: 2, Max: 650, convs: []conv{scale("lb", 45359237, 100_000_000), scale("[lb_av]", 45359237, 100_000_000)}},
	{Name: "mood", Shape: ShapeInstant, Unit: "{score}", Category: CategoryMind,
		Min: 1, Max: 5},
	{Name: "mindful_session", Shape: ShapeInterval, Unit: "min", Category: CategoryMind,
		Min: 0, Max: 24 * 60, convs: []conv{scale("s", 1, 60)}},
	{Name: "water", Shape: ShapeInstant, Unit: "mL", Category: CategoryNutrition,
		Min: 0, Max: 5000, convs: []conv{scale("L", 1000, 1), scale("[foz_us]", 473176473, 16_000_000)}}, // 29.5735295625
}

// degF converts Fahrenheit to Celsius: (F − 32) × 5/9 = (5F − 160) / 9.
func degF(unit string) conv { return conv{unit: unit, num: 5, off: -160, den: 9} }

// typesByLen indexes the registry by the length of the name: a lookup compares one to
// three strings, several times faster than a map on the hot path of every sample.
var typesByLen = func() (idx [32][]*SampleType) {
	for _, t := range sampleTypes {
		canon := identity
		canon.unit = t.Unit
		for _, c := range t.convs {
			t.Aliases = append(t.Aliases, c.unit)
		}
		t.convs = append([]conv{canon}, t.convs...)
		if t.Levels != nil {
			t.Max = float64(len(t.Levels) - 1)
		}
		idx[len(t.Name)] = append(idx[len(t.Name)], t)
	}
	return idx
}()

// LookupType returns the sample type called name.
func LookupType(name string) (*SampleType, bool) {
	if len(name) < len(typesByLen) {
		for _, t := range typesByLen[len(name)] {
			if t.Name == name {
				return t, true
			}
		}
	}
	return nil, false
}

// SampleTypes returns every sample type, always in the same order (that of DOMAIN.md).
func SampleTypes() []*SampleType { return append([]*SampleType(nil), sampleTypes...) }

// conv returns the conversion from unit; an empty unit means the canonical one.
func (t *SampleType) conv(unit string) (conv, bool) {
	if unit == "" {
		return t.convs[0], true
	}
	for _, c := range t.convs {
		if c.unit == unit {
			return c, true
		}
	}
	return conv{}, false
}

// Accepts reports whether unit is accepted for t: its canonical unit, an alias or "".
func (t *SampleType) Accepts(unit string) bool {
	_, ok := t.conv(unit)
	return ok
}

// Convert converts value from unit to t's canonical unit; an empty unit means the canonical
// one. It reports false when t does not accept unit. The value is converted as the decimal
// it prints as (strconv 'g', -1), exactly like Normalize converts the text a client sent, so
// Convert(0.57, "fraction") is 57. Categorical values are level indexes and pass unchanged.
func (t *SampleType) Convert(value float64, unit string) (float64, bool) {
	c, ok := t.conv(unit)
	if !ok {
		return 0, false
	}
	if c.num == c.den && c.off == 0 || math.IsNaN(value) || math.IsInf(value, 0) {
		return c.float(value), true
	}
	var buf [32]byte
	return c.apply(strconv.AppendFloat(buf[:0], value, 'g', -1, 64), value), true
}

func (c conv) float(x float64) float64 {
	if c.num == c.den && c.off == 0 {
		return x
	}
	return (x*float64(c.num) + float64(c.off)) / float64(c.den)
}

// apply converts the JSON number text whose float64 value is x. The result is the float64
// nearest to the exact rational result whenever the text is short enough to do so cheaply
// (any number a device sends); otherwise it falls back to float arithmetic.
func (c conv) apply(text []byte, x float64) float64 {
	if c.num == c.den && c.off == 0 {
		return x
	}
	if neg, m, e, ok := parseDecimal(text); ok {
		if v, ok := c.exact(neg, m, e); ok {
			return v
		}
	}
	// Rare: many digits or a large exponent. big.Rat is exact but must not be handed
	// 1e-999999999, whose denominator would take gigabytes.
	if len(text) <= 64 && x != 0 && math.Abs(math.Log10(math.Abs(x))) < 330 {
		if r, ok := new(big.Rat).SetString(string(text)); ok {
			r.Mul(r, big.NewRat(c.num, 1))
			r.Add(r, big.NewRat(c.off, 1))
			r.Quo(r, big.NewRat(c.den, 1))
			v, _ := r.Float64()
			return v
		}
	}
	return c.float(x)
}

const exactLimit = 1 << 53 // integers up to this convert to float64 exactly

var pow10 = [...]uint64{1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16}

// exact computes (±m×10^e × num + off) / den as p/q with integers p, q ≤ 2^53, so that one
// IEEE division gives the correctly rounded result.
func (c conv) exact(neg bool, m uint64, e int) (float64, bool) {
	if e < -16 || e > 16 {
		return 0, false
	}
	var p, q uint64
	var ok bool
	if e >= 0 {
		if p, ok = mul(m, pow10[e]); !ok {
			return 0, false
		}
		if p, ok = mul(p, uint64(c.num)); !ok {
			return 0, false
		}
		q = uint64(c.den)
	} else {
		if p, ok = mul(m, uint64(c.num)); !ok {
			return 0, false
		}
		if q, ok = mul(uint64(c.den), pow10[-e]); !ok {
			return 0, false
		}
	}
	if p > exactLimit || q > exactLimit {
		g := gcd(p, q)
		p, q = p/g, q/g
		if p > exactLimit || q > exactLimit {
			return 0, false
		}
	}
	sp := int64(p)
	if neg {
		sp = -sp
	}
	if c.off != 0 {
		// p/q + off/den·(den/den): off joins the numerator, scaled like q.
		abs := c.off
		if abs < 0 {
			abs = -abs
		}
		o, ok := mul(uint64(abs), q/uint64(c.den))
		if !ok || q%uint64(c.den) != 0 || o > exactLimit {
			return 0, false
		}
		if c.off < 0 {
			sp -= int64(o)
		} else {
			sp += int64(o)
		}
		if sp > exactLimit || sp < -exactLimit {
			return 0, false
		}
	}
	return float64(sp) / float64(q), true
}

func mul(a, b uint64) (uint64, bool) {
	hi, lo := bits.Mul64(a, b)
	return lo, hi == 0
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	if a == 0 {
		return 1
	}
	return a
}

// parseDecimal reads JSON number text as ±m×10^e. It reports false for text that is not a
// JSON number or has more than 19 significant digits.
func parseDecimal(b []byte) (neg bool, m uint64, e int, ok bool) {
	i := 0
	if i < len(b) && b[i] == '-' {
		neg = true
		i++
	}
	digits := 0
	start := i
	for ; i < len(b) && '0' <= b[i] && b[i] <= '9'; i++ {
		if m == 0 && b[i] == '0' {
			continue
		}
		if digits == 19 {
			return false, 0, 0, false
		}
		m = m*10 + uint64(b[i]-'0')
		digits++
	}
	if i == start || b[start] == '0' && i-start > 1 {
		return false, 0, 0, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		fstart := i
		for ; i < len(b) && '0' <= b[i] && b[i] <= '9'; i++ {
			if m == 0 && b[i] == '0' {
				e--
				continue
			}
			if digits == 19 {
				return false, 0, 0, false
			}
			m = m*10 + uint64(b[i]-'0')
			digits++
			e--
		}
		if i == fstart {
			return false, 0, 0, false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		eneg := false
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			eneg = b[i] == '-'
			i++
		}
		estart := i
		x := 0
		for ; i < len(b) && '0' <= b[i] && b[i] <= '9'; i++ {
			if x < 100_000 {
				x = x*10 + int(b[i]-'0')
			}
		}
		if i == estart {
			return false, 0, 0, false
		}
		if eneg {
			x = -x
		}
		e += x
	}
	if i != len(b) {
		return false, 0, 0, false
	}
	return neg, m, e, true
}
