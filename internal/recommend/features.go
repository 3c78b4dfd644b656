package recommend

import (
	"maps"
	"math"
	"slices"
	"time"

	"github.com/pulsebase/pulsebase/internal/agg"
)

// DayObject is a stored day object (the API's day of GET …/daily).
type DayObject = map[string]any

// Inputs is what the processor knows of a user when their rules run.
type Inputs struct {
	// Now is the user's local clock.
	Now time.Time
	// Days holds the user's day objects by date: today and the HistoryDays before it,
	// those that exist.
	Days map[string]DayObject
	// Hour and Recent are the live minute features (see Live).
	Hour, Recent map[string]float64
	// Profile is the user's profile view (crdt.Document.View); nil when they have none.
	Profile map[string]any
	History map[string]Seen
	Pacing  *Pacing
}

// Default goals, when the profile sets none.
const (
	DefaultStepGoal   = 10_000
	DefaultSleepNeed  = 480 // minutes
	DefaultWaterGoal  = 2000
	DefaultActiveGoal = 30
)

// BuildState returns the rule environment's values for in.
func BuildState(in Inputs) *State { return NewDayPart(in).State(in) }

// A DayPart is the part of a user's rule state that changes only when their day objects,
// their profile or the local date change — the metrics, baselines and features — built
// once and reused by the evaluations in between (most commits bring live data only).
type DayPart struct {
	s State
}

// NewDayPart builds the day part of in (its Hour, Recent, History and Pacing are not
// read).
func NewDayPart(in Inputs) *DayPart {
	s := State{Now: in.Now}
	// objs[i] is the day object of i days before today (nil: none).
	y, m, d := in.Now.Date()
	s.objs = make([]DayObject, HistoryDays+1)
	s.dates = make([]string, HistoryDays+1)
	for i := range s.objs {
		s.dates[i] = dateOnly(time.Date(y, m, d-i, 12, 0, 0, 0, time.UTC))
		s.objs[i] = in.Days[s.dates[i]]
	}
	s.Today = metrics(s.objs[0])
	s.Yesterday = metrics(s.objs[1])
	latest := s.objs[0]
	if latest == nil || latest["baselines"] == nil {
		latest = s.objs[1]
	}
	s.Baseline = baselines(latest)
	s.Profile = profileOf(in.Profile, in.Now)
	s.Features = features(&s, in)
	return &DayPart{s: s}
}

// Date is the local date dp was built for: it serves evaluations on that date only.
func (dp *DayPart) Date() string { return dp.s.dates[0] }

// State returns the state at in.Now, a time on dp's date: dp with the clock, the live
// minute features, the history and the pacing of in.
func (dp *DayPart) State(in Inputs) *State {
	s := dp.s
	s.Now, s.Hour, s.Recent, s.History, s.Days = in.Now, in.Hour, in.Recent, in.History, nil
	s.Profile = s.Profile.at(in.Now)
	if p := in.Pacing; p != nil && p.Days > 0 {
		s.Features = maps.Clone(s.Features)
		s.Features["step_share_days"] = float64(p.Days)
		s.Features["step_share_expected"] = p.Expected(in.Now)
	}
	return &s
}

// dateOnly is t.Format(time.DateOnly) for years 0–9999, without the layout's parsing.
func dateOnly(t time.Time) string {
	y, m, d := t.Date()
	b := [10]byte{byte('0' + y/1000), byte('0' + y/100%10), byte('0' + y/10%10), byte('0' + y%10), '-',
		byte('0' + m/10), byte('0' + m%10), '-', byte('0' + d/10), byte('0' + d%10)}
	return string(b[:])
}

// DaysList returns s.Days, building it from the day objects the first time (most rules
// never read it).
func (s *State) DaysList() []map[string]float64 {
	if s.Days == nil && s.objs != nil {
		s.Days = make([]map[string]float64, HistoryDays)
		for i := range s.Days {
			s.Days[i] = metrics(s.objs[i+1])
		}
	}
	return s.Days
}

// num returns metric k of day object o.
func num(o DayObject, k string) (float64, bool) {
	v, ok := o[k].(float64)
	return v, ok
}

// metrics returns the numeric fields of a day object (sources, stages and baselines left
// out); nil for no day.
func metrics(o DayObject) map[string]float64 {
	if o == nil {
		return map[string]float64{}
	}
	m := make(map[string]float64, len(o))
	for k, v := range o {
		if f, ok := v.(float64); ok {
			m[k] = f
		}
	}
	return m
}

func baselines(o DayObject) map[string]Baseline {
	bs, _ := o["baselines"].(map[string]any)
	out := make(map[string]Baseline, len(bs))
	for k, v := range bs {
		if x, ok := v.(map[string]any); ok {
			out[k] = baselineFrom(x)
		}
	}
	return out
}

// baselineOf returns metric k's baseline in day object o (the zero Baseline: none).
func baselineOf(o DayObject, k string) Baseline {
	bs, _ := o["baselines"].(map[string]any)
	x, _ := bs[k].(map[string]any)
	return baselineFrom(x)
}

func baselineFrom(x map[string]any) Baseline {
	f := func(n string) float64 { v, _ := x[n].(float64); return v }
	z, hasZ := x["z"].(float64)
	est, _ := x["established"].(bool)
	return Baseline{Mean: f("mean"), SD: f("sd"), Mean7: f("mean_7d"), Days: int64(f("days")), Days7: int64(f("days_7d")),
		Established: est, Z: z, HasZ: hasZ && x != nil, Log: x["scale"] == "ln"}
}

// Default spans, minutes of the day.
const (
	defaultQuietStart  = 22 * 60
	defaultQuietEnd    = 7 * 60
	defaultActiveStart = 9 * 60
	defaultActiveEnd   = 18 * 60
)

func profileOf(view map[string]any, now time.Time) Profile {
	p := Profile{Goals: map[string]float64{}, Nudges: []string{}, QuietStart: defaultQuietStart, QuietEnd: defaultQuietEnd,
		ActiveStart: defaultActiveStart, ActiveEnd: defaultActiveEnd}
	if goals, ok := view["goals"].(map[string]any); ok {
		for k, v := range goals {
			if f, ok := toFloat(v); ok {
				p.Goals[k] = f
			}
		}
	}
	switch ns := view["enabled_nudges"].(type) {
	case []string:
		p.Nudges = ns
	case []any:
		for _, n := range ns {
			if s, ok := n.(string); ok {
				p.Nudges = append(p.Nudges, s)
			}
		}
	}
	p.NudgesSet = len(p.Nudges) > 0
	if a, b, ok := span(view["quiet_hours"]); ok {
		p.QuietStart, p.QuietEnd = a, b
	}
	if a, b, ok := span(view["active_hours"]); ok {
		p.ActiveStart, p.ActiveEnd = a, b
	}
	return p.at(now)
}

// at returns p with the spans evaluated at the local clock now.
func (p Profile) at(now time.Time) Profile {
	m := int64(now.Hour()*60 + now.Minute())
	p.InQuietHours = within(m, p.QuietStart, p.QuietEnd)
	p.InActiveHours = within(m, p.ActiveStart, p.ActiveEnd)
	return p
}

// span reads a profile hours value {"start": "HH:MM", "end": "HH:MM"}.
func span(v any) (int64, int64, bool) {
	var start, end string
	switch x := v.(type) {
	case map[string]any:
		start, _ = x["start"].(string)
		end, _ = x["end"].(string)
	case map[string]string:
		start, end = x["start"], x["end"]
	default:
		return 0, 0, false
	}
	a, err1 := time.Parse("15:04", start)
	b, err2 := time.Parse("15:04", end)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return int64(a.Hour()*60 + a.Minute()), int64(b.Hour()*60 + b.Minute()), true
}

// within reports whether minute m of the day lies in [start, end), a span that crosses
// midnight when end < start; an empty span (start == end) holds nothing.
func within(m, start, end int64) bool {
	if start <= end {
		return m >= start && m < end
	}
	return m >= start || m < end
}

// NudgeEnabled reports whether the profile lets rules of nudge n deliver.
func (p Profile) NudgeEnabled(n string) bool {
	return n == "" || !p.NudgesSet || slices.Contains(p.Nudges, n)
}

func goal(p Profile, name string, def float64) float64 {
	if v, ok := p.Goals[name]; ok && v > 0 {
		return v
	}
	return def
}

// Feature computations (the `features` variable; docs/recommendations.md).
const (
	sleepNights    = 14 // sleep debt window
	midpointNights = 7  // sleep regularity window
	acuteDays      = 7  // training load EWMA spans
	chronicDays    = 28
)

func features(s *State, in Inputs) map[string]float64 {
	f := make(map[string]float64, 32)
	stepGoal := goal(s.Profile, "steps", DefaultStepGoal)
	need := goal(s.Profile, "sleep_minutes", DefaultSleepNeed)
	f["step_goal"] = stepGoal
	f["water_goal"] = goal(s.Profile, "water_ml", DefaultWaterGoal)
	f["active_goal"] = goal(s.Profile, "active_minutes", DefaultActiveGoal)
	f["sleep_need_minutes"] = need

	// night(i) is the day object of i days before today (its sleep is the night that
	// ended on it).
	night := func(i int) DayObject { return s.objs[i] }

	// Step streak: consecutive days at or above the goal, ending today if today is, else
	// yesterday.
	streak := 0
	for i := 0; i <= HistoryDays; i++ {
		v, ok := num(night(i), "steps")
		if ok && v >= stepGoal {
			streak++
			continue
		}
		if i == 0 {
			continue
		}
		break
	}
	f["step_streak_days"] = float64(streak)

	// Water: today's logged water and glasses (the profile's counter, 250 mL each), and
	// how many of the last 14 days had any — a user who never logs water is not nudged.
	glasses := waterGlasses(in.Profile)
	waterOn := func(i int) float64 {
		v, _ := num(night(i), "water")
		return v + GlassML*glasses[s.dates[i]]
	}
	f["water_today"] = waterOn(0)
	waterDays := 0
	for i := range sleepNights {
		if waterOn(i) > 0 {
			waterDays++
		}
	}
	f["water_days_14d"] = float64(waterDays)

	// Sleep debt: weighted sum over the last 14 nights of need − sleep; the latest night
	// weighs most, linearly down to the 14th (the weights average 1).
	var debt float64
	nights := 0
	for i := range sleepNights {
		if v, ok := num(night(i), "sleep_minutes"); ok {
			w := 2 * float64(sleepNights-i) / float64(sleepNights+1)
			debt += w * (need - v)
			nights++
		}
	}
	f["sleep_nights_14d"] = float64(nights)
	if nights > 0 {
		f["sleep_debt_minutes"] = debt
	}

	// Sleep regularity: the mid-points of the last 7 nights' main sleep (minutes after
	// local midnight, negative before it), unwrapped first: 20:25 written as 1225 (a
	// sleep that ended before midnight) and 20:50 as −190 (one that ended after it) are
	// 25 minutes apart, not 23 h 35.
	var mids []float64
	for i := range midpointNights {
		if v, ok := num(night(i), "sleep_midpoint"); ok {
			mids = append(mids, v)
		}
	}
	f["sleep_midpoint_nights"] = float64(len(mids))
	if len(mids) > 0 {
		mean, sd := meanSD(unwrapMinutes(mids))
		f["sleep_midpoint_mean"] = mean
		if len(mids) > 1 {
			f["sleep_midpoint_sd"] = sd
		}
		// Bed at the usual mid-point less half the need, 30 minutes early.
		f["suggested_bedtime"] = math.Mod(mean-need/2-30+2*1440, 1440)
	} else {
		f["suggested_bedtime"] = math.Mod(7*60-need-30+2*1440, 1440)
	}

	// Resting heart rate: the latest value, and how many days in a row up to it it was at
	// least 3 SD above that day's baseline.
	rhrDays := 0
	for i := 0; i <= HistoryDays; i++ {
		d := s.objs[i]
		v, ok := num(d, "resting_heart_rate")
		if !ok {
			if i == 0 {
				continue // today may have no value yet
			}
			break
		}
		if _, seen := f["rhr_latest"]; !seen {
			f["rhr_latest"] = v
			f["resting_heart_rate"] = v
		}
		b := baselineOf(d, "resting_heart_rate")
		if !b.Established || !b.HasZ || b.Z < 3 {
			break
		}
		rhrDays++
	}
	f["rhr_high_days"] = float64(rhrDays)
	if _, ok := f["resting_heart_rate"]; !ok {
		if b, ok := s.Baseline["resting_heart_rate"]; ok && b.Established {
			f["resting_heart_rate"] = b.Mean
		}
	}

	// Training load: EWMAs of daily active minutes (completed days, oldest first).
	var acute, chronic float64
	loadDays := 0
	for i := HistoryDays - 1; i >= 0; i-- {
		v, ok := num(s.objs[i+1], "active_minutes")
		if !ok {
			continue
		}
		if loadDays == 0 {
			acute, chronic = v, v
		} else {
			acute += 2 / float64(acuteDays+1) * (v - acute)
			chronic += 2 / float64(chronicDays+1) * (v - chronic)
		}
		loadDays++
	}
	f["load_days"] = float64(loadDays)
	if loadDays > 0 {
		f["load_acute"], f["load_chronic"] = acute, chronic
		if chronic > 0 {
			f["acute_chronic_load"] = acute / chronic
		}
	}

	// Step pacing depends on the clock: State adds it.
	return f
}

// unwrapMinutes returns the clock times ms (minutes after midnight) moved by whole days
// to lie within 12 hours of their circular mean, itself taken on the day of ms[0]; times
// that already do, the usual case, keep their values (up to rounding).
func unwrapMinutes(ms []float64) []float64 {
	var sin, cos float64
	for _, m := range ms {
		a := 2 * math.Pi * m / 1440
		sin += math.Sin(a)
		cos += math.Cos(a)
	}
	ref := math.Atan2(sin, cos) * 1440 / (2 * math.Pi)
	ref = ms[0] + math.Remainder(ref-ms[0], 1440)
	out := make([]float64, len(ms))
	for i, m := range ms {
		out[i] = ref + math.Remainder(m-ref, 1440)
	}
	return out
}

// GlassML is the water of one glass of the profile's water_glasses counter, in mL.
const GlassML = 250

// waterGlasses returns the profile's water_glasses counter by date.
func waterGlasses(view map[string]any) map[string]float64 {
	out := map[string]float64{}
	switch w := view["water_glasses"].(type) {
	case map[string]int64:
		for d, n := range w {
			out[d] = float64(n)
		}
	case map[string]any:
		for d, n := range w {
			if f, ok := toFloat(n); ok {
				out[d] = f
			}
		}
	}
	return out
}

func meanSD(xs []float64) (float64, float64) {
	var sum float64
	for _, x := range xs {
		sum += x
	}
	mean := sum / float64(len(xs))
	if len(xs) < 2 {
		return mean, 0
	}
	var ss float64
	for _, x := range xs {
		ss += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(ss / float64(len(xs)-1))
}

// Pacing is a user's usual share of a day's steps by each local hour: Share[h] is the
// share taken by the end of hour h, averaged over the days folded in (an EWMA over about
// two weeks once there are more).
type Pacing struct {
	Share [24]float64 `json:"share"`
	Days  int         `json:"days"`
	Last  string      `json:"last"` // the latest date folded in
}

// pacingMinSteps is the fewest steps a day needs to teach the pacing curve (a day the
// tracker was not worn teaches nothing).
const pacingMinSteps = 1000

// Fold adds a completed day's steps by local hour; a day not after the latest folded one
// is ignored.
func (p *Pacing) Fold(date string, hourly [24]float64) bool {
	if date <= p.Last {
		return false
	}
	var total float64
	for _, v := range hourly {
		total += v
	}
	if total < pacingMinSteps {
		return false
	}
	w := max(1/float64(p.Days+1), 2.0/15)
	var cum float64
	for h, v := range hourly {
		cum += v
		p.Share[h] += w * (cum/total - p.Share[h])
	}
	p.Days++
	p.Last = date
	return true
}

// Expected returns the share of the day's steps usually taken by now.
func (p *Pacing) Expected(now time.Time) float64 {
	h := now.Hour()
	prev := 0.0
	if h > 0 {
		prev = p.Share[h-1]
	}
	return prev + (p.Share[h]-prev)*float64(now.Minute())/60
}

// Live returns the minute features of the current local hour and of the last 10 complete
// minutes (see State), from the user's in-memory minute buckets.
func Live(now time.Time, points func(typ string, from, to time.Time) []agg.Point) (hour, recent map[string]float64) {
	hourStart := time.Date(now.Year(), now.Month(), now.Day(), now.Hour(), 0, 0, 0, now.Location())
	minuteEnd := time.Date(now.Year(), now.Month(), now.Day(), now.Hour(), now.Minute(), 0, 0, now.Location())
	type minute struct {
		hasSteps, asleep bool
		level            string
		stepsN           float64
	}
	from := hourStart
	if t := minuteEnd.Add(-10 * time.Minute); t.Before(from) {
		from = t
	}
	mins := map[int64]*minute{}
	at := func(t time.Time) *minute {
		k := t.Unix() / 60
		if mins[k] == nil {
			mins[k] = &minute{}
		}
		return mins[k]
	}
	for _, p := range points("steps", from, minuteEnd.Add(time.Minute)) {
		m := at(p.Start)
		m.hasSteps, m.stepsN = true, p.Sum
	}
	for _, p := range points("activity_intensity", from, minuteEnd.Add(time.Minute)) {
		best, bestV := "", 0.0
		for l, v := range p.Minutes {
			if v > bestV || v == bestV && l > best {
				best, bestV = l, v
			}
		}
		at(p.Start).level = best
	}
	for _, p := range points("sleep_stage", from, minuteEnd.Add(time.Minute)) {
		for l, v := range p.Minutes {
			if l != "awake" && v > 0 {
				at(p.Start).asleep = true
			}
		}
	}
	hour = map[string]float64{"steps": 0, "sedentary_minutes": 0, "active_minutes": 0, "minutes": 0}
	recent = map[string]float64{"steps": 0, "heart_rate_minutes": 0}
	for k, m := range mins {
		t := time.Unix(k*60, 0)
		if t.Before(hourStart) || !t.Before(minuteEnd.Add(time.Minute)) {
			continue
		}
		hour["minutes"]++
		hour["steps"] += m.stepsN
		switch {
		case m.asleep:
		case m.level == "sedentary", m.level == "" && m.hasSteps && m.stepsN == 0:
			hour["sedentary_minutes"]++
		case m.level == "moderate", m.level == "vigorous", m.level == "" && m.stepsN >= agg.ActiveStepsPerMinute:
			hour["active_minutes"]++
		}
	}
	// The last 10 complete minutes.
	tenFrom := minuteEnd.Add(-10 * time.Minute)
	hrMin := math.Inf(1)
	for _, p := range points("heart_rate", tenFrom, minuteEnd) {
		recent["heart_rate_minutes"]++
		hrMin = min(hrMin, p.Mean)
	}
	if recent["heart_rate_minutes"] > 0 {
		recent["heart_rate_min"] = hrMin
	}
	for _, p := range points("steps", tenFrom, minuteEnd) {
		recent["steps"] += p.Sum
	}
	return hour, recent
}
