package recommend

import (
	"math"
	"reflect"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/ext"
	"github.com/google/cel-go/interpreter"
)

// The environment a rule's condition and evidence are written against (docs/recommendations.md
// lists every variable with its meaning). It is typed: a condition that compares a string
// with a number, or reads a field a type does not have, fails the check at load time.
//
//	local      Local                     the user's local clock now
//	trigger    string                    "metrics" or "at HH:MM" — why the rules run
//	today      map(string, double)       today's metrics so far (absent: no data)
//	yesterday  map(string, double)       yesterday's metrics
//	days       list(map(string,double))  the HistoryDays days before today, newest first
//	                                     (days[0] is yesterday; a day without data is {})
//	baseline   map(string, Baseline)     baselines of the latest day with data (today or
//	                                     yesterday); hrv_rmssd's on ln(rMSSD)
//	hour       map(string, double)       the current local hour: steps, sedentary_minutes,
//	                                     active_minutes, minutes (with data)
//	recent     map(string, double)       the last 10 complete minutes: steps,
//	                                     heart_rate_min (lowest minute mean),
//	                                     heart_rate_minutes (minutes with heart rate)
//	features   map(string, double)       metrics computed over days (see features.go)
//	profile    Profile                   goals, quiet and active hours, enabled nudges
//	history    map(string, Seen)         per kind: the latest recommendation and feedback

// Local is the user's local clock.
type Local struct {
	Date        string `cel:"date"` // YYYY-MM-DD
	Hour        int64  `cel:"hour"`
	Minute      int64  `cel:"minute"`
	MinuteOfDay int64  `cel:"minute_of_day"`
	Weekday     int64  `cel:"weekday"` // 0 = Sunday
	Zone        string `cel:"zone"`
}

// NewLocal returns the local clock of t (already in the user's location).
func NewLocal(t time.Time) Local {
	return Local{Date: t.Format(time.DateOnly), Hour: int64(t.Hour()), Minute: int64(t.Minute()),
		MinuteOfDay: int64(t.Hour()*60 + t.Minute()), Weekday: int64(t.Weekday()), Zone: t.Location().String()}
}

// Baseline is a metric's personal baseline (DOMAIN.md "Personal baselines").
type Baseline struct {
	Mean        float64 `cel:"mean"`    // 60-day mean
	SD          float64 `cel:"sd"`      // 60-day standard deviation
	Mean7       float64 `cel:"mean_7d"` // 7-day mean
	Days        int64   `cel:"days"`
	Days7       int64   `cel:"days_7d"`
	Established bool    `cel:"established"`
	Z           float64 `cel:"z"`     // today's z-score, when HasZ
	HasZ        bool    `cel:"has_z"` // the latest day has a value and sd > 0
	Log         bool    `cel:"log"`   // on ln scale (hrv_rmssd)
}

// Profile is what rules read of the user's profile.
type Profile struct {
	Goals map[string]float64 `cel:"goals"`
	// Nudges lists the enabled nudges; NudgesSet reports that the user chose them (an
	// empty, never-chosen list means every nudge is on).
	Nudges    []string `cel:"nudges"`
	NudgesSet bool     `cel:"nudges_set"`
	// QuietStart/QuietEnd and ActiveStart/ActiveEnd are minutes of the day; a span whose
	// end is before its start crosses midnight. Defaults: quiet 22:00–07:00, active
	// 09:00–18:00.
	QuietStart  int64 `cel:"quiet_start"`
	QuietEnd    int64 `cel:"quiet_end"`
	ActiveStart int64 `cel:"active_start"`
	ActiveEnd   int64 `cel:"active_end"`
	// InQuietHours and InActiveHours are the spans evaluated at the local clock.
	InQuietHours  bool `cel:"in_quiet_hours"`
	InActiveHours bool `cel:"in_active_hours"`
}

// Seen is what happened to the latest recommendation of a kind.
type Seen struct {
	HoursSince float64 `cel:"hours_since"` // since it was delivered
	Active     bool    `cel:"active"`
	LastAction string  `cel:"last_action"` // "" without feedback
	Delivered  int64   `cel:"delivered"`   // delivered in the last HistoryDays days
}

// HistoryDays is how many days before today `days` holds.
const HistoryDays = 28

// State is everything a rule can read about a user at one evaluation.
type State struct {
	Now       time.Time // in the user's location
	Trigger   string
	Today     map[string]float64
	Yesterday map[string]float64
	Days      []map[string]float64
	Baseline  map[string]Baseline
	Hour      map[string]float64
	Recent    map[string]float64
	Features  map[string]float64
	Profile   Profile
	History   map[string]Seen
	// objs and dates are the day objects and dates of today (0) and the HistoryDays
	// before, for the features and for building Days when a rule reads it.
	objs  []DayObject
	dates []string
}

var (
	doubleMap = cel.MapType(cel.StringType, cel.DoubleType)
	localT    = cel.ObjectType("recommend.Local")
	baseT     = cel.ObjectType("recommend.Baseline")
	profileT  = cel.ObjectType("recommend.Profile")
	seenT     = cel.ObjectType("recommend.Seen")
)

// newEnv returns the CEL environment of rule expressions.
func newEnv() (*cel.Env, error) {
	return cel.NewEnv(
		ext.NativeTypes(reflect.TypeFor[Local](), reflect.TypeFor[Baseline](), reflect.TypeFor[Profile](),
			reflect.TypeFor[Seen](), ext.ParseStructTags(true)),
		ext.Math(),
		ext.Lists(),
		ext.Strings(),
		// exp undoes the ln scale of hrv_rmssd's baseline.
		cel.Function("exp", cel.Overload("exp_double", []*cel.Type{cel.DoubleType}, cel.DoubleType,
			cel.UnaryBinding(func(v ref.Val) ref.Val { return types.Double(math.Exp(float64(v.(types.Double)))) }))),
		cel.Variable("local", localT),
		cel.Variable("trigger", cel.StringType),
		cel.Variable("today", doubleMap),
		cel.Variable("yesterday", doubleMap),
		cel.Variable("days", cel.ListType(doubleMap)),
		cel.Variable("baseline", cel.MapType(cel.StringType, baseT)),
		cel.Variable("hour", doubleMap),
		cel.Variable("recent", doubleMap),
		cel.Variable("features", doubleMap),
		cel.Variable("profile", profileT),
		cel.Variable("history", cel.MapType(cel.StringType, seenT)),
	)
}

// activation binds s's fields to the environment's variables. Each is converted to a CEL
// value once, when an expression first reads it, and kept for the other rules of the
// evaluation: a map of native structs read through reflection at every field access
// would cost that many conversions.
type activation struct {
	s       *State
	adapter types.Adapter
	vals    [len(varNames)]ref.Val
}

// varNames are the environment's variables, in the order of activation.vals.
var varNames = [...]string{"local", "trigger", "today", "yesterday", "days", "baseline", "hour", "recent", "features", "profile", "history"}

func newActivation(s *State) *activation {
	env, _ := sharedEnv()
	return &activation{s: s, adapter: env.CELTypeAdapter()}
}

func (a *activation) ResolveName(name string) (any, bool) {
	i := 0
	for i < len(varNames) && varNames[i] != name {
		i++
	}
	if i == len(varNames) {
		return nil, false
	}
	if a.vals[i] == nil {
		a.vals[i] = a.convert(name)
	}
	return a.vals[i], true
}

func (a *activation) convert(name string) ref.Val {
	s := a.s
	switch name {
	case "local":
		return a.adapter.NativeToValue(NewLocal(s.Now))
	case "trigger":
		return types.String(s.Trigger)
	case "today":
		return a.doubles(s.Today)
	case "yesterday":
		return a.doubles(s.Yesterday)
	case "days":
		days := s.DaysList()
		l := make([]ref.Val, len(days))
		for i, d := range days {
			l[i] = a.doubles(d)
		}
		return types.NewRefValList(a.adapter, l)
	case "baseline":
		return structMap(a.adapter, s.Baseline)
	case "hour":
		return a.doubles(s.Hour)
	case "recent":
		return a.doubles(s.Recent)
	case "features":
		return a.doubles(s.Features)
	case "profile":
		return a.adapter.NativeToValue(s.Profile)
	case "history":
		return structMap(a.adapter, s.History)
	}
	return types.NewErr("no variable %s", name)
}

// structMap converts a map of native structs, each converted once.
func structMap[T any](adapter types.Adapter, src map[string]T) ref.Val {
	m := make(map[ref.Val]ref.Val, len(src))
	for k, v := range src {
		m[types.String(k)] = adapter.NativeToValue(v)
	}
	return types.NewRefValMap(adapter, m)
}

// doubles converts a map of metrics (nil: none).
func (a *activation) doubles(src map[string]float64) ref.Val {
	if src == nil {
		return floatMap{}
	}
	return floatMap(src)
}

func (a *activation) Parent() interpreter.Activation { return nil }
