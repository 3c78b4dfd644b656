package sim

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/pulsebase/pulsebase"
)

// A person's life is cut into person-days: day d runs from their wake-up on day d (a date
// of the home calendar, counted from 1970-01-01) to their wake-up on day d+1, and holds the
// night after it. Everything of a person-day — its plan, its night, its minutes — comes
// from random streams keyed by d, so any day can be made alone, in any order.

// dayInfo is what is decided once for person-day d.
type dayInfo struct {
	d       int
	loc     *time.Location
	zone    string
	workday bool
	travel  bool
	// rawWake and rawBed are the planned wake-up and bedtime, before the night between
	// two days is made to fit (after a flight, say).
	rawWake, rawBed time.Time
	// rhr and hrv are the day's true resting heart rate (bpm) and the night's rMSSD (ms).
	rhr, hrv float64
	ill      float64 // illness intensity, 0–1
	over     bool    // in an overtraining block: twice the training
	poor     bool    // in a poor-sleep week
}

// homeDay is the day number of t's date in the home zone.
func (p *Person) homeDay(t time.Time) int {
	y, m, d := t.In(p.home).Date()
	return int(time.Date(y, m, d, 0, 0, 0, 0, time.UTC).Unix() / 86400)
}

// dayStart is the home-zone midnight starting day d.
func (p *Person) dayStart(d int) time.Time { return at(d, p.home, 0) }

// at is minute (after midnight; it may pass 1440) of day d's date in loc.
func at(d int, loc *time.Location, minute int) time.Time {
	y, m, dd := time.Unix(int64(d)*86400, 0).UTC().Date()
	return time.Date(y, m, dd, 0, minute, 0, 0, loc)
}

// day returns person-day d's plan.
func (p *Person) day(d int) *dayInfo {
	p.mu.Lock()
	di := p.days[d]
	p.mu.Unlock()
	if di != nil {
		return di
	}
	di = p.makeDay(d)
	p.mu.Lock()
	if len(p.days) > 512 {
		clear(p.days) // plans are cheap to make again
	}
	p.days[d] = di
	p.mu.Unlock()
	return di
}

// lateNight reports whether the person stays up very late in the night after day d (and
// sleeps in the next morning), the k-th night of a poor-sleep week (k < 0: not in one):
// every other night, and one in five of the others. r is day d's stream: this is its
// first draw, so that day d+1 can know it.
func lateNight(r *rand.Rand, k int) bool {
	u := r.Float64()
	return k >= 0 && (k%2 == 1 || u < 0.2)
}

func (p *Person) makeDay(d int) *dayInfo {
	di := &dayInfo{d: d, loc: p.home, zone: p.Home}
	eps := p.episodesIn(d-2, d+1)
	poorK, prevPoorK := -1, -1 // the day's and the day before's night in a poor-sleep week
	tripStart, tripEnd := 0, 0 // the trip's first day and the day after it, when on one or just back
	for _, e := range eps {
		k := d - e.first
		if e.Kind == PoorSleep && k-1 >= 0 && k-1 < e.Days {
			prevPoorK = k - 1
		}
		if e.Kind == Travel && k >= 0 && k < e.Days+2 {
			tripStart, tripEnd = e.first, e.first+e.Days
		}
		if k < 0 || k >= e.Days {
			continue
		}
		switch e.Kind {
		case Illness:
			ill := 1.0
			switch {
			case k == 0:
				ill = 0.6
			case k == e.Days-1 && e.Days > 2:
				ill = 0.5
			}
			di.ill = max(di.ill, ill)
			di.rhr += e.RHRShift * ill
			di.hrv += math.Log(1 - (1-e.HRVFactor)*ill)
		case Overtraining:
			progress := float64(k+1) / float64(e.Days)
			di.over = k < (3*e.Days+3)/4
			di.rhr += e.RHRShift * progress
			di.hrv += math.Log(1 - (1-e.HRVFactor)*progress)
		case PoorSleep:
			di.poor, poorK = true, k
		case Travel:
			di.travel = true
			di.zone, di.loc = e.Zone, mustZone(e.Zone)
		}
	}
	r := newRand(p.key, streamDay, int64(d))
	late := lateNight(r, poorK)
	prevLate := lateNight(newRand(p.key, streamDay, int64(d-1)), prevPoorK)
	local := at(d, di.loc, 12*60)
	wd := local.Weekday()
	di.workday = wd != time.Saturday && wd != time.Sunday && !di.travel

	// Wake-up: the alarm on workdays, later at weekends, after a late night, when ill.
	wake := float64(p.Wake) + 12*r.NormFloat64()
	if !di.workday {
		wake += 30 + 60*r.Float64()
	}
	if prevLate {
		wake += 180 + 120*r.Float64()
	}
	if di.ill > 0 {
		wake += 30 + 45*r.Float64()
	}
	di.rawWake = at(d, di.loc, int(math.Round(wake)))

	// Bedtime: later on Friday and Saturday nights, scattered in a poor-sleep week.
	bed := float64(p.Bedtime) + p.BedtimeSD*r.NormFloat64()
	if wd == time.Friday || wd == time.Saturday {
		bed += 30 + 45*r.Float64()
	}
	if di.poor {
		if late {
			bed += 300 + 120*r.Float64()
		} else {
			bed += 150 * r.Float64()
		}
	}
	if di.ill > 0 {
		bed -= 30 + 30*r.Float64()
	}
	di.rawBed = at(d, di.loc, int(math.Round(bed)))

	// Resting heart rate and HRV: the person's usual, a slow drift, the day's noise, and
	// what the episodes add (accumulated above as shifts and log factors).
	phase := float64(p.key%1000) / 1000 * 2 * math.Pi
	shift, logHRV := di.rhr, di.hrv
	di.rhr = p.RestingHR + 1.2*math.Sin(2*math.Pi*float64(d)/47+phase) + 0.8*r.NormFloat64() + shift
	di.hrv = p.HRV * math.Exp(0.09*r.NormFloat64()+logHRV)
	if di.poor {
		di.rhr += 1.5
		di.hrv *= 0.9
	}
	if tripEnd > 0 && (d-tripStart < 2 || d >= tripEnd) {
		di.rhr += 2 // jet lag, the first days away and the days back
		di.hrv *= 0.9
	}
	di.hrv = clamp(di.hrv, 5, 250)
	return di
}

// nightBounds returns when night d starts (bed) and ends (the wake-up of day d+1). A night
// is 4 to 12 hours in bed: after a flight east the person sleeps in, after one west they
// stay up.
func (p *Person) nightBounds(d int) (bed, wake time.Time) {
	bed, wake = p.day(d).rawBed, p.day(d+1).rawWake
	switch l := wake.Sub(bed); {
	case l < 4*time.Hour:
		wake = bed.Add(4 * time.Hour)
	case l > 12*time.Hour:
		bed = wake.Add(-10 * time.Hour)
	}
	return bed, wake
}

// wake is when person-day d starts.
func (p *Person) wake(d int) time.Time {
	_, w := p.nightBounds(d - 1)
	return w
}

// dayAt returns the person-day holding t.
func (p *Person) dayAt(t time.Time) int {
	d0 := p.homeDay(t)
	for d := d0 - 2; d <= d0+2; d++ {
		if !t.Before(p.wake(d)) && t.Before(p.wake(d+1)) {
			return d
		}
	}
	return d0 // unreachable: person-days tile time (TestPersonDaysTileTime)
}

// Sleep stages (the levels of sleep_stage) and activity intensities.
const (
	inBed = iota
	awake
	light
	deep
	rem
)

// segment is a stretch of one sleep stage.
type segment struct {
	start, end time.Time
	stage      int
}

// night returns the sleep stages of night d, contiguous from bedtime to the wake-up:
// falling asleep in bed, then cycles of about 90 minutes (light, deep, light, REM, now and
// then a brief awakening) with less deep and more REM sleep as the night goes on, and a
// few awake minutes before getting up.
func (p *Person) night(d int) []segment {
	bed, wakeUp := p.nightBounds(d)
	di := p.day(d)
	r := newRand(p.key, streamNight, int64(d))
	total := int(wakeUp.Sub(bed) / time.Minute)
	var segs []segment
	t := 0
	add := func(stage, n int) {
		n = min(n, total-t)
		if n <= 0 {
			return
		}
		s := bed.Add(time.Duration(t) * time.Minute)
		e := s.Add(time.Duration(n) * time.Minute)
		if k := len(segs) - 1; k >= 0 && segs[k].stage == stage {
			segs[k].end = e
		} else {
			segs = append(segs, segment{s, e, stage})
		}
		t += n
	}
	latency := 4 + r.IntN(18)
	wakeP := 0.3
	if di.ill > 0 {
		latency += 10
		wakeP = 0.55
	}
	if di.poor {
		latency += 8
		wakeP = 0.45
	}
	add(inBed, latency)
	asleepUntil := total - (2 + r.IntN(8))
	for cycle := 0; t < asleepUntil; cycle++ {
		length := 80 + r.IntN(31)
		deepShare := max(0.03, 0.34-0.09*float64(cycle)+0.05*r.NormFloat64())
		if di.ill > 0 {
			deepShare *= 1.15
		}
		remShare := clamp(0.1+0.07*float64(cycle)+0.04*r.NormFloat64(), 0.05, 0.4)
		lightShare := 1 - deepShare - remShare
		n1 := int(math.Round(float64(length) * lightShare * 0.55))
		nd := int(math.Round(float64(length) * deepShare))
		n2 := int(math.Round(float64(length) * lightShare * 0.45))
		for _, s := range [...][2]int{{light, n1}, {deep, nd}, {light, n2}, {rem, length - n1 - nd - n2}} {
			add(s[0], min(s[1], asleepUntil-t))
		}
		if t < asleepUntil && r.Float64() < wakeP {
			add(awake, min(1+r.IntN(5), asleepUntil-t))
		}
	}
	add(awake, total-t)
	return segs
}

// Kinds of activity bout.
const (
	walk = iota
	run
	workout // cycling, a gym session: hard work, few steps
)

// bout is a stretch of exercise.
type bout struct {
	start, end time.Time
	kind       int
	cadence    float64 // steps/min
	lift       float64 // how far it raises heart rate at steady state (bpm)
	met        float64 // metabolic equivalent
	phone      bool    // the phone was carried and counted steps too
}

// bouts plans person-day d's exercise between wake and bed: commutes and lunch walks on
// workdays, longer walks at weekends and sightseeing on trips, workouts as often as the
// person's fitness (twice as much in an overtraining block), nearly nothing when ill.
func (p *Person) bouts(d int, wake, bed time.Time, di *dayInfo) []bout {
	r := newRand(p.key, streamActivity, int64(d))
	var out []bout
	clock := func(minute int) time.Time { return at(d, di.loc, minute) }
	add := func(kind int, start time.Time, minutes int) {
		b := bout{start: start.Truncate(time.Minute), kind: kind}
		b.end = b.start.Add(time.Duration(minutes) * time.Minute)
		effort := 1.1 - 0.3*p.Fitness
		switch kind {
		case walk:
			b.cadence = clamp(p.Cadence+5*r.NormFloat64()-float64(minutes)/20, 82, 128)
			b.lift = (b.cadence - 60) * 0.55 * effort
			b.met = 2 + (b.cadence-80)*0.06
			b.phone = r.Float64() < 0.75
		case run:
			b.cadence = 150 + 25*r.Float64()
			b.lift = (65 + 25*r.Float64()) * effort
			b.met = 8 + 3*r.Float64()
			b.phone = r.Float64() < 0.3
		case workout:
			b.lift = 35 + 25*r.Float64()
			b.met = 5 + 3*r.Float64()
		}
		out = append(out, b)
	}
	if di.ill > 0 {
		if r.Float64() < 0.4 {
			add(walk, clock(600+r.IntN(420)), 5+r.IntN(11))
		}
	} else {
		if di.workday && p.Commuter {
			add(walk, wake.Add(time.Duration(40+r.IntN(40))*time.Minute), 10+r.IntN(16))
			add(walk, clock(1020+r.IntN(90)), 10+r.IntN(16))
		}
		switch {
		case di.travel:
			for range 2 + r.IntN(3) {
				add(walk, clock(600+r.IntN(540)), 20+r.IntN(41))
			}
		case di.workday && r.Float64() < 0.35:
			add(walk, clock(720+r.IntN(90)), 10+r.IntN(21))
		case !di.workday && r.Float64() < 0.5:
			add(walk, clock(600+r.IntN(360)), 30+r.IntN(61))
		}
		workouts := 0
		if r.Float64() < 0.12+0.5*p.Fitness || di.over {
			workouts = 1
			if di.over && r.Float64() < 0.5 {
				workouts = 2
			}
		}
		morning := r.IntN(2) == 0
		for range workouts {
			kind := workout
			if r.Float64() < 0.3+0.5*p.Fitness {
				kind = run
			}
			minutes := 20 + r.IntN(41)
			if di.over {
				minutes = min(120, minutes*8/5)
			}
			start := clock(1050 + r.IntN(150))
			if morning {
				start = wake.Add(time.Duration(30+r.IntN(60)) * time.Minute)
			}
			add(kind, start, minutes)
			morning = !morning
		}
		for range r.IntN(4) {
			add(walk, wake.Add(time.Duration(60+r.IntN(max(60, int(bed.Sub(wake)/time.Minute)-120)))*time.Minute), 3+r.IntN(8))
		}
	}
	// Keep the bouts inside the waking hours and apart, earliest first.
	slices.SortStableFunc(out, func(a, b bout) int { return a.start.Compare(b.start) })
	lo, hi := wake.Add(10*time.Minute), bed.Add(-15*time.Minute)
	kept := out[:0]
	for _, b := range out {
		if b.start.Before(lo) || b.end.After(hi) {
			continue
		}
		if k := len(kept) - 1; k >= 0 && b.start.Before(kept[k].end.Add(5*time.Minute)) {
			continue
		}
		kept = append(kept, b)
	}
	return kept
}

// What a person-day's samples are, compactly: a chunk holds tens of thousands of them.

// kind is a sample type with the unit and the id code a device uses for it.
type kind struct {
	typ, unit, code string
	levels          []string // categorical: the value is the level index
	decimals        int
}

// The kinds of sample the simulator makes.
const (
	kHeartRate uint8 = iota
	kSteps
	kDistance
	kEnergy
	kIntensity
	kSleep
	kSpO2
	kResp
	kSkinC
	kSkinF
	kWeightKg
	kWeightLb
	kWaterML
	kWaterOz
	kMood
	kMindful
	kRestingHR
	kHRV
)

var kinds = [...]kind{
	kHeartRate: {typ: "heart_rate", unit: "bpm", code: "hr"},
	kSteps:     {typ: "steps", unit: "count", code: "st"},
	kDistance:  {typ: "distance", unit: "m", code: "ds", decimals: 1},
	kEnergy:    {typ: "active_energy", unit: "kcal", code: "ae", decimals: 2},
	kIntensity: {typ: "activity_intensity", code: "ai", levels: []string{"sedentary", "light", "moderate", "vigorous"}},
	kSleep:     {typ: "sleep_stage", code: "sl", levels: []string{"in_bed", "awake", "light", "deep", "rem"}},
	kSpO2:      {typ: "spo2", unit: "%", code: "o2"},
	kResp:      {typ: "respiratory_rate", unit: "breaths/min", code: "rr", decimals: 1},
	kSkinC:     {typ: "skin_temperature", unit: "Cel", code: "tp", decimals: 2},
	kSkinF:     {typ: "skin_temperature", unit: "[degF]", code: "tp", decimals: 1},
	kWeightKg:  {typ: "body_weight", unit: "kg", code: "wt", decimals: 1},
	kWeightLb:  {typ: "body_weight", unit: "lb", code: "wt", decimals: 1},
	kWaterML:   {typ: "water", unit: "mL", code: "wa"},
	kWaterOz:   {typ: "water", unit: "[foz_us]", code: "wa"},
	kMood:      {typ: "mood", unit: "{score}", code: "md"},
	kMindful:   {typ: "mindful_session", unit: "min", code: "mf"},
	kRestingHR: {typ: "resting_heart_rate", unit: "bpm", code: "rh"},
	kHRV:       {typ: "hrv_rmssd", unit: "ms", code: "hv", decimals: 1},
}

// gen is one sample as measured (true times, no clock skew), in 16 bytes: a person keeps a
// few days of them at hand.
type gen struct {
	off   uint32 // start, in seconds after the chunk's base
	dur   uint32 // seconds; 0 for an instant reading
	value float32
	kind  uint8
	dev   uint8 // index in Person.Devices
}

// chunk is person-day d's samples in order of availability (their end: when the device
// has them).
type chunk struct {
	day  *dayInfo
	base int64 // Unix seconds: the wake-up starting the day, before every sample of it
	gens []gen
}

func (c *chunk) start(g *gen) int64 { return c.base + int64(g.off) }

func (c *chunk) avail(g *gen) int64 { return c.base + int64(g.off) + int64(g.dur) }

// input renders g as device dev sends it, its clock skew off.
func (c *chunk) input(g *gen, dev *Device, skew time.Duration) pulsebase.SampleInput {
	k := &kinds[g.kind]
	st := c.start(g)
	start := time.Unix(st, 0)
	in := pulsebase.SampleInput{
		ID:     dev.ID + "-" + k.code + "-" + strconv.FormatInt(st, 36),
		Type:   k.typ,
		Unit:   k.unit,
		Start:  start.Add(skew).In(c.day.loc).Format(time.RFC3339),
		Source: dev.ID,
		Zone:   c.day.zone,
	}
	if g.dur > 0 {
		in.End = start.Add(time.Duration(g.dur)*time.Second + skew).In(c.day.loc).Format(time.RFC3339)
	}
	if k.levels != nil {
		in.Value = text(k.levels[int(g.value)])
	} else {
		in.Value = number(roundTo(float64(g.value), k.decimals))
	}
	return in
}

// roundTo rounds x to dec decimals (and so undoes float32's approximation of a value that
// had them).
func roundTo(x float64, dec int) float64 {
	s := math.Pow(10, float64(dec))
	return math.Round(x*s) / s
}

// chunkCache is how many person-days a Person keeps made (some 70 kB each): a backfill or
// a live run walks forward, so a few suffice.
const chunkCache = 3

// chunk returns person-day d's samples, made once and kept for a while.
func (p *Person) chunk(d int) *chunk {
	p.mu.Lock()
	c, ok := p.chunks[d]
	p.mu.Unlock()
	if ok {
		return c
	}
	c = p.makeChunk(d)
	p.mu.Lock()
	if _, ok := p.chunks[d]; !ok {
		p.chunks[d] = c
		p.order = append(p.order, d)
		if len(p.order) > chunkCache {
			delete(p.chunks, p.order[0])
			p.order = p.order[1:]
		}
	}
	p.mu.Unlock()
	return c
}

// Device roles: which device measures what.
func (p *Person) phone() uint8 { return uint8(min(1, len(p.Devices)-1)) }

func (p *Person) scale() uint8 {
	if len(p.Devices) > 2 {
		return 2
	}
	return p.phone()
}

// makeChunk makes person-day d: every minute from the wake-up to the next one (heart rate,
// and while awake intensity, steps, distance and energy), the night's stages and oxygen
// saturation, the morning's summary of the night before, and the day's logs.
func (p *Person) makeChunk(d int) *chunk {
	di := p.day(d)
	wakeUp := p.wake(d)
	base := wakeUp.Unix()
	bed, nextWake := p.nightBounds(d)
	segs := p.night(d)
	bouts := p.bouts(d, wakeUp, bed, di)
	var out []gen
	emit := func(t time.Time, dur time.Duration, k, dev uint8, v float64) {
		out = append(out, gen{off: uint32(t.Unix() - base), dur: uint32(dur / time.Second), kind: k, dev: dev, value: float32(v)})
	}

	r := newRand(p.key, streamMinutes, int64(d))
	hrMax := 208 - 0.7*float64(p.Age)
	var exertion, noise float64
	si, bi := 0, 0
	bands := len(p.Devices) - 3
	for m := wakeUp; m.Before(nextWake); m = m.Add(time.Minute) {
		local := m.In(di.loc)
		hour := float64(local.Hour()) + float64(local.Minute())/60
		var base, target, met, steps float64
		level := -1 // intensity level; -1 while asleep
		var b *bout
		if m.Before(bed) {
			for bi < len(bouts) && !m.Before(bouts[bi].end) {
				bi++
			}
			if bi < len(bouts) && !m.Before(bouts[bi].start) {
				b = &bouts[bi]
			}
			// Awake: above resting, highest in the afternoon.
			base = di.rhr + 10 + 4*math.Sin(2*math.Pi*(hour-9)/24)
			switch {
			case b != nil && b.kind == walk:
				steps = math.Round(clamp(b.cadence+4*r.NormFloat64(), 80, 130))
				target, met, level = b.lift, b.met, 2
				if steps < 100 {
					level = 1
				}
			case b != nil && b.kind == run:
				elapsed := m.Sub(b.start).Minutes()
				steps = math.Round(clamp(b.cadence+4*r.NormFloat64(), 145, 185))
				target, met, level = b.lift+0.2*elapsed, b.met, 3 // cardiac drift
			case b != nil:
				steps = float64(r.IntN(8))
				target, met, level = b.lift+4*r.NormFloat64(), b.met, 2
				if r.Float64() < 0.4 {
					level = 3
				}
			default:
				// Moving about: rare at a desk, common at home.
				moveP := 0.25 * p.Movement
				if di.workday && (hour >= 9 && hour < 12 || hour >= 13.5 && hour < 17) {
					moveP = 0.06
				}
				if di.ill > 0 {
					moveP *= 0.4
				}
				level = 0
				if r.Float64() < moveP {
					steps = float64(5 + r.IntN(50))
					target, met = steps*0.25, 1.2+steps/60
					if steps >= 20 {
						level = 1
					}
				}
			}
		} else {
			for si < len(segs)-1 && !m.Before(segs[si].end) {
				si++
			}
			stage := segs[si].stage
			// Asleep: below resting, lowest in deep sleep, a little higher early in the
			// night and in REM.
			base = di.rhr - 1 + 3*math.Exp(-m.Sub(bed).Hours()/1.5) + [...]float64{inBed: 3, awake: 5, light: -1, deep: -3, rem: 2}[stage]
			if stage == awake && r.Float64() < 0.12 {
				steps = float64(8 + r.IntN(25)) // up for a glass of water
				target = steps * 0.3
			}
			if m.Sub(bed)%(30*time.Minute) == 0 && m.After(bed) && stage >= light {
				emit(m, 0, kSpO2, 0, clamp(math.Round(96.5+r.NormFloat64()-1.5*di.ill), 88, 100))
			}
		}
		// Heart rate follows effort with a lag: faster up than down.
		tau := 2.8
		if target > exertion {
			tau = 1.3
		}
		exertion += (target - exertion) * (1 - math.Exp(-1/tau))
		noise = 0.75*noise + 1.4*r.NormFloat64()
		hr := clamp(math.Round(base+exertion+noise), 38, hrMax)
		emit(m, 0, kHeartRate, 0, hr)
		if level >= 0 {
			emit(m, time.Minute, kIntensity, 0, float64(level))
		}
		if steps > 0 {
			emit(m, time.Minute, kSteps, 0, steps)
			stride := p.Stride * 0.9
			if b != nil {
				stride = p.Stride
				if b.kind == run {
					stride *= 1.45
				}
			}
			emit(m, time.Minute, kDistance, 0, steps*stride)
			if b != nil && b.phone && len(p.Devices) > 1 {
				emit(m, time.Minute, kSteps, 1, math.Round(steps*(0.85+0.15*r.Float64())))
			}
		}
		if met > 1 {
			if kcal := (met - 1) * 3.5 * p.Weight / 200; kcal >= 0.05 {
				emit(m, time.Minute, kEnergy, 0, kcal)
			}
		}
		if bands > 0 && m.Unix()%300 == 0 {
			for k := range bands {
				emit(m, 0, kHeartRate, uint8(3+k), clamp(math.Round(hr+1.5*r.NormFloat64()), 38, hrMax))
			}
		}
	}
	for _, s := range segs {
		emit(s.start, s.end.Sub(s.start), kSleep, 0, float64(s.stage))
	}

	// The morning: the watch's summary of the night before, a weighing now and then.
	e := newRand(p.key, streamEvents, int64(d))
	prev := p.day(d - 1)
	summary := wakeUp.Add(time.Duration(1+e.IntN(5)) * time.Minute)
	emit(summary, 0, kRestingHR, 0, math.Round(prev.rhr+0.5*e.NormFloat64()))
	emit(summary, 0, kHRV, 0, prev.hrv)
	emit(summary, 0, kResp, 0, 14+(p.RestingHR-60)*0.05+2*prev.ill+0.4*e.NormFloat64())
	skin := 33.7 + 0.8*prev.ill + 0.12*e.NormFloat64()
	if p.Imperial {
		emit(summary, 0, kSkinF, 0, skin*9/5+32)
	} else {
		emit(summary, 0, kSkinC, 0, skin)
	}
	if e.Float64() < 0.45 {
		kg := p.Weight + 0.8*math.Sin(2*math.Pi*float64(d)/90) + 0.25*e.NormFloat64() - 0.4*di.ill
		t := wakeUp.Add(time.Duration(8*60+e.IntN(17*60)) * time.Second)
		if p.Imperial {
			emit(t, 0, kWeightLb, p.scale(), kg/0.45359237)
		} else {
			emit(t, 0, kWeightKg, p.scale(), kg)
		}
	}
	// The day: water, now and then meditation, and mood in the evening, logged in the app.
	awakeSecs := int(bed.Sub(wakeUp)/time.Second) - 90*60
	if awakeSecs > 0 {
		n := 3 + e.IntN(6)
		times := make([]int, n)
		for i := range times {
			times[i] = 30*60 + e.IntN(awakeSecs)
		}
		slices.Sort(times)
		for i, s := range times {
			t := wakeUp.Add(time.Duration(s+i) * time.Second) // i: two logs never share a second
			if p.Imperial {
				emit(t, 0, kWaterOz, p.phone(), float64(8+4*e.IntN(4)))
			} else {
				emit(t, 0, kWaterML, p.phone(), float64(150+50*e.IntN(8)))
			}
		}
	}
	if p.Mindful && e.Float64() < 0.6 {
		minutes := 5 + e.IntN(16)
		t := bed.Add(-time.Duration(40+e.IntN(60)) * time.Minute)
		emit(t, time.Duration(minutes)*time.Minute, kMindful, p.phone(), float64(minutes))
	}
	if e.Float64() < 0.5 {
		mood := 3.6 + 0.8*e.NormFloat64() - 1.2*di.ill
		if di.poor {
			mood -= 0.7
		}
		if di.over {
			mood -= 0.4
		}
		t := bed.Add(-time.Duration(20*60+e.IntN(60*60)) * time.Second)
		emit(t, 0, kMood, p.phone(), clamp(math.Round(mood), 1, 5))
	}
	c := &chunk{day: di, base: base, gens: out}
	slices.SortStableFunc(out, func(a, b gen) int { return cmp.Compare(c.avail(&a), c.avail(&b)) })
	return c
}

// Samples returns what the person's devices measured that became available in [from, to)
// (a sample's end, or start for an instant reading, falls in it), in order of
// availability, with true times: no clock skew, no re-sends, nothing malformed. It is a
// pure function of the population, the person's index, from and to; and samples of
// adjacent ranges add up to those of their union.
func (p *Person) Samples(from, to time.Time) []pulsebase.SampleInput {
	var out []pulsebase.SampleInput
	p.each(from, to, -1, func(c *chunk, g *gen) {
		out = append(out, c.input(g, &p.Devices[g.dev], 0))
	})
	return out
}

// each calls fn with every sample of device dev (every device when dev < 0) available in
// [from, to), in order of availability.
func (p *Person) each(from, to time.Time, dev int, fn func(*chunk, *gen)) {
	if !from.Before(to) {
		return
	}
	// Samples have whole-second times: [lo, hi) in seconds is [from, to).
	lo, hi := from.Unix(), to.Unix()
	if from.Nanosecond() != 0 {
		lo++
	}
	if to.Nanosecond() != 0 {
		hi++
	}
	// Person-day d holds availabilities in (wake(d), wake(d+1)].
	for d := p.dayAt(from.Add(-time.Nanosecond)); d <= p.dayAt(to.Add(-time.Nanosecond)); d++ {
		c := p.chunk(d)
		i, _ := slices.BinarySearchFunc(c.gens, lo, func(g gen, t int64) int { return cmp.Compare(c.avail(&g), t) })
		for ; i < len(c.gens) && c.avail(&c.gens[i]) < hi; i++ {
			if dev < 0 || int(c.gens[i].dev) == dev {
				fn(c, &c.gens[i])
			}
		}
	}
}
