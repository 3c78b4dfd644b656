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

// activation binds s's fields to the environment's variables.
type activation struct {
	s     *State
	local Local
}

func newActivation(s *State) *activation { return &activation{s: s, local: NewLocal(s.Now)} }

func (a *activation) ResolveName(name string) (any, bool) {
	s := a.s
	switch name {
	case "local":
		return a.local, true
	case "trigger":
		return s.Trigger, true
	case "today":
		return orEmpty(s.Today), true
	case "yesterday":
		return orEmpty(s.Yesterday), true
	case "days":
		if s.Days == nil {
			return []map[string]float64{}, true
		}
		return s.Days, true
	case "baseline":
		if s.Baseline == nil {
			return map[string]Baseline{}, true
		}
		return s.Baseline, true
	case "hour":
		return orEmpty(s.Hour), true
	case "recent":
		return orEmpty(s.Recent), true
	case "features":
		return orEmpty(s.Features), true
	case "profile":
		return s.Profile, true
	case "history":
		if s.History == nil {
			return map[string]Seen{}, true
		}
		return s.History, true
	}
	return nil, false
}

func (a *activation) Parent() interpreter.Activation { return nil }

func orEmpty(m map[string]float64) map[string]float64 {
	if m == nil {
		return map[string]float64{}
	}
	return m
}
