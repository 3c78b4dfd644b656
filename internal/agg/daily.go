package agg

import (
	"cmp"
	"math"
	"slices"
	"time"

	"github.com/pulsebase/pulsebase"
)

// The thresholds of the daily metrics of DOMAIN.md.
const (
	// ActiveIntensity is the activity_intensity level (moderate) from which a minute is
	// active.
	ActiveIntensity = 2
	// ActiveStepsPerMinute makes a minute without intensity data active.
	ActiveStepsPerMinute = 100
	// SedentaryBoutMinutes is the shortest run of sedentary minutes that is a bout.
	SedentaryBoutMinutes = 30
	// RestingWindowMinutes is the length of the rolling mean resting heart rate minimizes.
	RestingWindowMinutes = 5
	// RestingStillMinutes is how many minutes before a sedentary minute must be free of
	// steps for its heart rate to count as resting.
	RestingStillMinutes = 10
	// RRMaxChange drops a pair of successive RR intervals whose second differs from the
	// first by more than this fraction of the first: an artifact (a missed or extra beat).
	RRMaxChange = 0.20
	// RRMaxGap is the longest time between the starts of two RR intervals that are still
	// successive beats; a longer gap is a hole in the recording.
	RRMaxGap = 3 * time.Second
	// MinRRPairs is the fewest successive pairs from which rMSSD is computed.
	MinRRPairs = 30
)

// How a Daily metric was obtained.
const (
	FromDevice    = "device"    // a resting_heart_rate or hrv_rmssd sample
	FromSleep     = "sleep"     // heart rate inside the day's sleep sessions
	FromSedentary = "sedentary" // heart rate in still, sedentary minutes
	FromRR        = "rr"        // rr_interval samples inside the day's sleep sessions
)

// Daily is the derived metrics of one local day. A nil field (or an empty map) means no
// data that day, which the API shows as an absent metric, not zero.
type Daily struct {
	// Date is the local date, "YYYY-MM-DD", on the clock of the samples (Location).
	Date string
	// Steps is the sum, over the local hours of the day, of the steps of the hour's
	// preferred source: the source whose samples overlap the hour longest in total, then
	// the one with more samples in it, then more steps, then the lexically smallest id.
	// Samples are spread over minutes (and so hours and days) in proportion to overlap.
	Steps *float64
	// ActiveMinutes counts the local minutes whose intensity is ≥ ActiveIntensity or,
	// where no activity_intensity sample covers the minute, whose steps are ≥
	// ActiveStepsPerMinute. A minute's intensity is the level covering most of it (ties:
	// the higher level); its steps are those of its hour's preferred source. Present on
	// every day with intensity or steps data.
	ActiveMinutes *int
	// SedentaryBouts counts the runs of ≥ SedentaryBoutMinutes consecutive sedentary
	// minutes that end on the day, and SedentaryMinutes is the minutes in them that lie on
	// the day or the day before (a run of several days — a watch left on a desk — counts
	// at most two days of minutes, so a day depends only on the days around it). A minute
	// is sedentary when no kept sleep session contains its start and its intensity is 0,
	// or it has no intensity and 0 steps; a minute with neither intensity nor steps is
	// unknown and ends a run. Present when ActiveMinutes is.
	SedentaryBouts   *int
	SedentaryMinutes *int
	// RestingHeartRate in /min: the device's resting_heart_rate (the Last of the day's
	// samples, a sample counting on the day of its last instant); else the lowest mean of
	// RestingWindowMinutes consecutive minute means of heart rate whose minutes all lie in
	// one sleep session ending on the day; else the lowest such mean over consecutive
	// minutes that are sedentary with no steps in them or the RestingStillMinutes before
	// them (a minute without step data counts as no steps), counting on the day of the
	// window's last minute. A minute mean is the mean of the heart_rate samples starting
	// in the minute; a window needs every minute to have one. RestingHeartRateFrom says
	// which rule gave the value (FromDevice, FromSleep, FromSedentary).
	RestingHeartRate     *float64
	RestingHeartRateFrom string
	// HRVRMSSD in ms: √(mean of squared successive differences) of the rr_interval samples
	// starting inside the sleep sessions that end on the day, when at least MinRRPairs
	// pairs remain: a pair is two consecutive samples of one source and one session less
	// than RRMaxGap apart, dropped when the change exceeds RRMaxChange of the first. Else
	// the mean of the day's hrv_rmssd samples (each on the day of its last instant).
	// HRVFrom is FromRR or FromDevice.
	HRVRMSSD *float64
	HRVFrom  string
	// SleepMinutes is the Asleep time, SleepEfficiency Asleep/InBed (a fraction) and
	// SleepStages the minutes of each stage (in_bed, awake, light, deep, rem) of the sleep
	// sessions that end on the day (see SleepSession), naps included, each rounded to the
	// nearest minute after summing.
	SleepMinutes    *int
	SleepEfficiency *float64
	SleepStages     map[string]int
	// SleepMidpoint is the middle of the day's main sleep session (the one with the most
	// Asleep time) in minutes after the day's local midnight, on the clock of the session's
	// end: negative before midnight (−30 is 23:30 the evening before), whole minutes.
	SleepMidpoint *float64
	// ActiveEnergy (kcal) and Distance (m) are sums of samples spread over local days in
	// proportion to overlap; Water (mL) is the sum of the readings of the day.
	ActiveEnergy, Distance, Water *float64
	// Weight is the day's last body_weight reading in kg (latest start; ties: larger).
	Weight *float64
	// Mood is the mean of the day's mood scores.
	Mood *float64
}

// minuteKey identifies a local minute: its start and the local date it is on. Samples
// whose clocks disagree about the date of the same instant (a watch still on the old zone,
// a phone on the new one) do not share minutes.
type minuteKey struct {
	at   int64 // unix nanoseconds of the start
	date string
}

type minute struct {
	minuteKey
	levels   [4]time.Duration // overlap of activity_intensity samples by level
	steps    float64          // steps of the hour's preferred source
	hasSteps bool
	hrSum    float64
	hrN      int

	session   int // index of the kept sleep session containing the start, or −1
	sedentary bool
}

// level returns the intensity of the minute: the level covering most of it, ties to the
// higher level.
func (m *minute) level() (int, bool) {
	best, ok := 0, false
	for l := len(m.levels) - 1; l >= 0; l-- {
		if m.levels[l] > 0 && (!ok || m.levels[l] > m.levels[best]) {
			best, ok = l, true
		}
	}
	return best, ok
}

// sourceHour is what one source recorded of steps in one local hour.
type sourceHour struct {
	source     string
	covered    time.Duration
	samples    int
	steps      float64
	lastSample int
	parts      []stepPart
}

type stepPart struct {
	m     *minute
	steps float64
}

// more reports whether a has more data than b by the rule of Daily.Steps.
func (a *sourceHour) more(b *sourceHour) bool {
	if a.covered != b.covered {
		return a.covered > b.covered
	}
	if a.samples != b.samples {
		return a.samples > b.samples
	}
	if a.steps != b.steps {
		return a.steps > b.steps
	}
	return a.source < b.source
}

// dates formats local dates, remembering the last one: consecutive samples are nearly
// always on the same day.
type dates struct {
	y    int
	m    time.Month
	d    int
	last string
}

func (c *dates) of(t time.Time) string {
	y, m, d := t.Date()
	if y != c.y || m != c.m || d != c.d || c.last == "" {
		c.y, c.m, c.d, c.last = y, m, d, t.Format(DateLayout)
	}
	return c.last
}

type reading struct {
	v          float64
	start, end time.Time
}

type meanAcc struct {
	sum float64
	n   int
}

// DailyMetrics returns the metrics of every local day that has at least one, sorted by
// date. The rules are documented on Daily's fields and in the package documentation.
func DailyMetrics(samples []pulsebase.Sample) []Daily {
	ss := sorted(samples, nil)
	sess := sessions(ss)
	var dc dates

	grid := make(map[minuteKey]*minute)
	cell := func(bs time.Time) *minute {
		k := minuteKey{bs.UnixNano(), dc.of(bs)}
		m := grid[k]
		if m == nil {
			m = &minute{minuteKey: k, session: -1}
			grid[k] = m
		}
		return m
	}

	steps := make(map[string]float64)
	hours := make(map[minuteKey]map[string]*sourceHour)
	energy := make(map[string]float64)
	distance := make(map[string]float64)
	water := make(map[string]float64)
	weight := make(map[string]reading)
	mood := make(map[string]meanAcc)
	deviceRHR := make(map[string]reading)
	deviceHRV := make(map[string]meanAcc)
	var rr []*pulsebase.Sample
	intensity, _ := pulsebase.LookupType("activity_intensity")

	var clocks clockCache
	var sh *sourceHour // the last one used: consecutive minutes share it
	var shKey minuteKey
	for i, s := range ss {
		loc := clocks.of(s)
		switch s.Type {
		case "steps":
			total := s.End.Sub(s.Start)
			Spread(s.Start, s.End, loc, Minute, func(bs, _ time.Time, overlap time.Duration) {
				m := cell(bs)
				hs, _ := Bucket(bs, loc, Hour)
				hk := minuteKey{hs.UnixNano(), m.date}
				if sh == nil || hk != shKey || sh.source != s.Source {
					bySource := hours[hk]
					if bySource == nil {
						bySource = make(map[string]*sourceHour)
						hours[hk] = bySource
					}
					sh, shKey = bySource[s.Source], hk
					if sh == nil {
						sh = &sourceHour{source: s.Source, lastSample: -1}
						bySource[s.Source] = sh
					}
				}
				if sh.lastSample != i {
					sh.samples++
					sh.lastSample = i
				}
				v := Part(s.Value, overlap, total)
				sh.covered += overlap
				sh.steps += v
				sh.parts = append(sh.parts, stepPart{m, v})
			})
		case "activity_intensity":
			l, ok := LevelIndex(intensity, s)
			if !ok {
				continue
			}
			Spread(s.Start, s.End, loc, Minute, func(bs, _ time.Time, overlap time.Duration) {
				if overlap > 0 {
					cell(bs).levels[l] += overlap
				}
			})
		case "heart_rate":
			bs, _ := Bucket(s.Start, loc, Minute)
			m := cell(bs)
			m.hrSum += s.Value
			m.hrN++
		case "rr_interval":
			rr = append(rr, s)
		case "resting_heart_rate":
			d := dc.of(LastInstant(s).In(loc))
			if r, ok := deviceRHR[d]; !ok || later(s.Start, s.End, s.Value, r.start, r.end, r.v) {
				deviceRHR[d] = reading{s.Value, s.Start, s.End}
			}
		case "hrv_rmssd":
			d := dc.of(LastInstant(s).In(loc))
			a := deviceHRV[d]
			deviceHRV[d] = meanAcc{a.sum + s.Value, a.n + 1}
		case "active_energy", "distance":
			acc := energy
			if s.Type == "distance" {
				acc = distance
			}
			total := s.End.Sub(s.Start)
			Spread(s.Start, s.End, loc, Day, func(bs, _ time.Time, overlap time.Duration) {
				acc[dc.of(bs)] += Part(s.Value, overlap, total)
			})
		case "water":
			water[dc.of(s.Start.In(loc))] += s.Value
		case "body_weight":
			d := dc.of(s.Start.In(loc))
			if r, ok := weight[d]; !ok || later(s.Start, s.End, s.Value, r.start, r.end, r.v) {
				weight[d] = reading{s.Value, s.Start, s.End}
			}
		case "mood":
			d := dc.of(s.Start.In(loc))
			a := mood[d]
			mood[d] = meanAcc{a.sum + s.Value, a.n + 1}
		}
	}

	// Steps: one source per local hour.
	hourKeys := sortedKeys(hours)
	for _, hk := range hourKeys {
		var best *sourceHour
		for _, sh := range hours[hk] {
			if best == nil || sh.more(best) {
				best = sh
			}
		}
		steps[hk.date] += best.steps
		for _, p := range best.parts {
			p.m.steps += p.steps
			p.m.hasSteps = true
		}
	}

	// Minutes in time order: activity, bouts, resting heart rate.
	minutes := make([]*minute, 0, len(grid))
	moving := make(map[int64]bool) // minutes (by start) with steps
	for _, m := range grid {
		minutes = append(minutes, m)
		if m.hasSteps && m.steps > 0 {
			moving[m.at] = true
		}
	}
	slices.SortFunc(minutes, func(a, b *minute) int { return compareKeys(a.minuteKey, b.minuteKey) })

	active := make(map[string]int)
	bouts := make(map[string]int)
	boutMinutes := make(map[string]int)
	sleepRHR := make(map[string]float64)
	sedRHR := make(map[string]float64)
	run := 0
	endRun := func(i int) {
		if run >= SedentaryBoutMinutes {
			last := minutes[i]
			bouts[last.date]++
			boutMinutes[last.date] += boutLength(minutes[i-run+1:i+1], last.date)
		}
		run = 0
	}
	still := make([]bool, len(minutes))
	for i, m := range minutes {
		m.session = sessionIndex(sess, time.Unix(0, m.at))
		l, hasLevel := m.level()
		if hasLevel || m.hasSteps {
			active[m.date] += 0 // the day has activity data
		}
		if hasLevel && l >= ActiveIntensity || !hasLevel && m.hasSteps && m.steps >= ActiveStepsPerMinute {
			active[m.date]++
		}
		m.sedentary = m.session < 0 && (hasLevel && l == 0 || !hasLevel && m.hasSteps && m.steps == 0)

		consecutive := i > 0 && minutes[i-1].at+int64(time.Minute) == m.at
		if run > 0 && (!m.sedentary || !consecutive) {
			endRun(i - 1)
		}
		if m.sedentary {
			run++
		}

		still[i] = m.sedentary
		for k := int64(0); still[i] && k <= RestingStillMinutes; k++ {
			still[i] = !moving[m.at-k*int64(time.Minute)]
		}

		// The window of RestingWindowMinutes minutes ending with m.
		w := RestingWindowMinutes
		if i+1 < w {
			continue
		}
		inSleep, inStill := m.session >= 0, true
		var sum float64
		for j := i - w + 1; j <= i; j++ {
			x := minutes[j]
			if x.hrN == 0 || j > i-w+1 && x.at != minutes[j-1].at+int64(time.Minute) {
				inSleep, inStill = false, false
				break
			}
			inSleep = inSleep && x.session == m.session
			inStill = inStill && still[j]
			sum += x.hrSum / float64(x.hrN)
		}
		mean := sum / float64(w)
		if inSleep {
			d := sess[m.session].Date
			if v, ok := sleepRHR[d]; !ok || mean < v {
				sleepRHR[d] = mean
			}
		}
		if inStill {
			if v, ok := sedRHR[m.date]; !ok || mean < v {
				sedRHR[m.date] = mean
			}
		}
	}
	if run > 0 {
		endRun(len(minutes) - 1)
	}

	// HRV from the RR intervals of the nights.
	rrSq := make(map[string]meanAcc)
	type rrKey struct {
		session int
		source  string
	}
	prev := make(map[rrKey]*pulsebase.Sample)
	for _, s := range rr {
		si := sessionIndex(sess, s.Start)
		if si < 0 {
			continue
		}
		k := rrKey{si, s.Source}
		if p := prev[k]; p != nil {
			gap := s.Start.Sub(p.Start)
			d := s.Value - p.Value
			if gap > 0 && gap <= RRMaxGap && math.Abs(d) <= RRMaxChange*p.Value {
				a := rrSq[sess[si].Date]
				rrSq[sess[si].Date] = meanAcc{a.sum + d*d, a.n + 1}
			}
		}
		prev[k] = s
	}

	// Sleep per day of waking.
	type sleepAcc struct {
		asleep, inBed time.Duration
		stages        map[string]time.Duration
		main          *SleepSession // the session with the most sleep
	}
	sleep := make(map[string]*sleepAcc)
	for i, s := range sess {
		a := sleep[s.Date]
		if a == nil {
			a = &sleepAcc{stages: make(map[string]time.Duration)}
			sleep[s.Date] = a
		}
		if a.main == nil || s.Asleep > a.main.Asleep {
			a.main = &sess[i]
		}
		a.asleep += s.Asleep
		a.inBed += s.InBed
		for l, d := range s.Stages {
			a.stages[l] += d
		}
	}

	days := make(map[string]*Daily)
	day := func(d string) *Daily {
		x := days[d]
		if x == nil {
			x = &Daily{Date: d}
			days[d] = x
		}
		return x
	}
	for d, v := range steps {
		day(d).Steps = ptr(v)
	}
	for d, v := range active {
		x := day(d)
		x.ActiveMinutes = ptr(v)
		x.SedentaryBouts = ptr(bouts[d])
		x.SedentaryMinutes = ptr(boutMinutes[d])
	}
	for d, r := range deviceRHR {
		day(d).RestingHeartRate, day(d).RestingHeartRateFrom = ptr(r.v), FromDevice
	}
	for d, v := range sleepRHR {
		if x := day(d); x.RestingHeartRate == nil {
			x.RestingHeartRate, x.RestingHeartRateFrom = ptr(v), FromSleep
		}
	}
	for d, v := range sedRHR {
		if x := day(d); x.RestingHeartRate == nil {
			x.RestingHeartRate, x.RestingHeartRateFrom = ptr(v), FromSedentary
		}
	}
	for d, a := range rrSq {
		if a.n >= MinRRPairs {
			day(d).HRVRMSSD, day(d).HRVFrom = ptr(math.Sqrt(a.sum/float64(a.n))), FromRR
		}
	}
	for d, a := range deviceHRV {
		if x := day(d); x.HRVRMSSD == nil {
			x.HRVRMSSD, x.HRVFrom = ptr(a.sum/float64(a.n)), FromDevice
		}
	}
	for d, a := range sleep {
		x := day(d)
		x.SleepMinutes = ptr(roundMinutes(a.asleep))
		if a.inBed > 0 {
			x.SleepEfficiency = ptr(float64(a.asleep) / float64(a.inBed))
		}
		if a.main != nil {
			x.SleepMidpoint = ptr(midpoint(a.main))
		}
		x.SleepStages = make(map[string]int, len(a.stages))
		for l, v := range a.stages {
			x.SleepStages[l] = roundMinutes(v)
		}
	}
	for d, v := range energy {
		day(d).ActiveEnergy = ptr(v)
	}
	for d, v := range distance {
		day(d).Distance = ptr(v)
	}
	for d, v := range water {
		day(d).Water = ptr(v)
	}
	for d, r := range weight {
		day(d).Weight = ptr(r.v)
	}
	for d, a := range mood {
		day(d).Mood = ptr(a.sum / float64(a.n))
	}

	out := make([]Daily, 0, len(days))
	for _, x := range days {
		out = append(out, *x)
	}
	slices.SortFunc(out, func(a, b Daily) int { return cmp.Compare(a.Date, b.Date) })
	return out
}

// boutLength is how many minutes of a bout that ends on date count: those on that date and
// the day before. A watch left on a desk reports days of sedentary minutes; counting them
// all on the day the run finally ends would say nothing about that day, and would make the
// day depend on samples of any age (the stream processor recomputes a day from the days
// around it).
func boutLength(run []*minute, date string) int {
	end, err := time.Parse(DateLayout, date)
	if err != nil {
		return len(run)
	}
	from := end.AddDate(0, 0, -1).Format(DateLayout)
	n := 0
	for _, m := range run {
		if m.date >= from {
			n++
		}
	}
	return n
}

func ptr[T any](v T) *T { return &v }

func roundMinutes(d time.Duration) int { return int(math.Round(d.Minutes())) }

func compareKeys(a, b minuteKey) int {
	if c := cmp.Compare(a.at, b.at); c != 0 {
		return c
	}
	return cmp.Compare(a.date, b.date)
}

func sortedKeys[V any](m map[minuteKey]V) []minuteKey {
	keys := make([]minuteKey, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compareKeys)
	return keys
}

// midpoint returns the middle of s in whole minutes after the local midnight of s.Date.
func midpoint(s *SleepSession) float64 {
	mid := s.Start.Add(s.End.Sub(s.Start) / 2).In(s.End.Location())
	y, m, d := s.End.Date()
	midnight := time.Date(y, m, d, 0, 0, 0, 0, s.End.Location())
	return math.Round(mid.Sub(midnight).Minutes())
}
