// Package sim makes wellness data that looks like the real thing: a seeded synthetic
// population whose people have believable physiology (a circadian heart rate with a sleep
// dip, activity bouts, sleep cycles, nightly HRV and resting heart rate, illness,
// overtraining, poor-sleep weeks and trips across time zones) and whose devices behave like
// real ones (batching, offline periods, re-sends, clock skew, out-of-order delivery, rare
// malformed samples). Run feeds such a population to a server through the Go SDK (client),
// over HTTP and sync sessions, first a backfill of history as fast as the server takes it
// and then live; RunDemo is the small population of `serve --demo`.
//
// Everything is deterministic: a person's samples are a pure function of the population's
// seed, the person's index and the simulated time, and so are their devices' uploads.
// docs/simulator.md describes the model.
//
// It is imported by cmd/pulsebase. It talks to the server only through the public API,
// like an app.
package sim

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"
	_ "time/tzdata" // the same zones, and so the same samples, on every machine

	"github.com/pulsebase/pulsebase"
)

// Population is a seeded synthetic population. The zero value of every field but Seed
// and Users is usable.
type Population struct {
	// Seed decides everything: the same seed gives the same people, the same samples and
	// the same uploads.
	Seed uint64
	// Users is the number of people; User(i) is defined for any i ≥ 0 all the same.
	Users int
	// DevicesPerUser is how many devices each person has (1–8; 0 means 2): a watch, then a
	// phone, a scale and extra wrist bands.
	DevicesPerUser int
	// MalformedRate is the share of samples a device also sends in a corrupted copy (out of
	// range, bad unit, missing end, …); 0 sends none.
	MalformedRate float64
	// ResendRate is the chance that an upload carries the previous upload again, as a device
	// does when an acknowledgement was lost; 0 means DefaultResendRate, negative none.
	ResendRate float64
	// Scripted adds episodes to person i's (Scripted[i]): the demo uses them to have
	// someone ill right now. ScriptedOnly drops the random episodes.
	Scripted     map[int][]Episode
	ScriptedOnly bool
}

// DefaultResendRate is the chance that an upload repeats the previous one.
const DefaultResendRate = 0.03

// MaxDevicesPerUser bounds Population.DevicesPerUser.
const MaxDevicesPerUser = 8

func (p *Population) devices() int {
	if p.DevicesPerUser <= 0 {
		return 2
	}
	return min(p.DevicesPerUser, MaxDevicesPerUser)
}

func (p *Population) resendRate() float64 {
	switch {
	case p.ResendRate < 0:
		return 0
	case p.ResendRate == 0:
		return DefaultResendRate
	}
	return p.ResendRate
}

// Generate returns what person user of the population seeded with seed measured (with two
// devices, a watch and a phone) that became available in [from, to): the samples' ends, or
// starts for instant readings, fall in it. It is a pure function of its arguments.
func Generate(seed uint64, user int, from, to time.Time) []pulsebase.SampleInput {
	pop := &Population{Seed: seed, Users: user + 1}
	return pop.User(user).Samples(from, to)
}

// EpisodeKind is a kind of episode in someone's life.
type EpisodeKind string

// The episodes a person goes through.
const (
	// Illness raises resting heart rate by 5–8 bpm and lowers HRV by 25–35 % for 3–6 days,
	// with less activity, more sleep, a warmer skin and a faster breath.
	Illness EpisodeKind = "illness"
	// Overtraining doubles the training for 8–11 days while resting heart rate creeps up
	// 3–5 bpm and HRV down 15–25 %.
	Overtraining EpisodeKind = "overtraining"
	// PoorSleep is a week of late, irregular bedtimes and short nights.
	PoorSleep EpisodeKind = "poor_sleep"
	// Travel takes the person to another time zone for 3–8 days: their samples carry the
	// local offset of where they are.
	Travel EpisodeKind = "travel"
)

// Episode is a stretch of days unlike the others.
type Episode struct {
	Kind EpisodeKind
	// Start is in the first day (a date of the person's home zone); the episode lasts Days
	// days.
	Start time.Time
	Days  int
	// Zone is where a trip goes (IANA name); empty in a scripted trip picks one.
	Zone string
	// RHRShift (bpm) and HRVFactor are the effect on resting heart rate and HRV at the
	// height of an illness or at the end of overtraining; zero picks typical ones.
	RHRShift, HRVFactor float64
}

// DeviceKind is the kind of a device.
type DeviceKind string

// The kinds of device a person has, in the order DevicesPerUser adds them.
const (
	Watch DeviceKind = "watch" // heart rate, activity, sleep, nightly summaries; syncs
	Phone DeviceKind = "phone" // steps when carried, and the app's logs: water, mood, mindfulness
	Scale DeviceKind = "scale" // body weight
	Band  DeviceKind = "band"  // a second wrist band: heart rate every five minutes
)

// Device is one of a person's devices.
type Device struct {
	// ID is the device's id: the source of its samples and its sync device id.
	ID   string
	Kind DeviceKind
	// Every is how often it uploads what it measured since its last upload.
	Every time.Duration
	// Skew is how far its clock is off (positive: ahead); it drifts a few seconds a day.
	Skew time.Duration
	// OfflineRate is the chance, each day, that it goes offline for hours (left at home,
	// no network) and then catches up in one upload.
	OfflineRate float64
	// MaxOffline bounds one offline period.
	MaxOffline time.Duration
	// Sync says the device sends through a sync session (WebSocket) when live.
	Sync bool
}

// Person is one member of a Population: a profile, an episode schedule and devices. Its
// methods are safe for concurrent use.
type Person struct {
	Index int
	// Home is the IANA time zone the person lives in.
	Home string
	Age  int
	// RestingHR is their usual resting heart rate (bpm) and HRV their usual nightly rMSSD
	// (ms); both move day to day and with episodes.
	RestingHR, HRV float64
	// Fitness (0–1) makes workouts more frequent and harder, and heart rate lower.
	Fitness float64
	// Weight is their usual body weight (kg); Stride their walking step (m); Cadence their
	// walking pace (steps/min).
	Weight, Stride, Cadence float64
	// Wake is when they get up on workdays and Bedtime when they go to bed, in minutes after
	// local midnight (Bedtime may pass 1440: 1470 is 00:30); BedtimeSD is how much bedtime
	// varies (minutes).
	Wake, Bedtime int
	BedtimeSD     float64
	// Movement (0–1) is how much they move outside of exercise.
	Movement float64
	// Commuter people walk to and from work on workdays; Mindful ones log meditation.
	Commuter, Mindful bool
	// Imperial people log weight in lb, water in US fl oz, skin temperature in °F.
	Imperial bool
	// Research and ModelTraining are their answers to those consent purposes.
	Research, ModelTraining bool
	Devices                 []Device

	pop  *Population
	key  uint64
	home *time.Location

	mu     sync.Mutex
	days   map[int]*dayInfo
	chunks map[int]*chunk // person-days, the most recent few
	order  []int          // keys of chunks, oldest first
}

// homeZones are where people live; tripZones where they travel to. Every pair of them is
// at most 9 hours apart in winter or summer, so that a trip's first night stays a night.
var (
	homeZones = []string{"America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles",
		"Europe/London", "Europe/Berlin", "Europe/Madrid", "Europe/Helsinki", "America/Sao_Paulo", "Africa/Nairobi"}
	tripZones = []string{"America/New_York", "America/Chicago", "America/Los_Angeles", "America/Mexico_City",
		"Europe/London", "Europe/Paris", "Europe/Lisbon", "Europe/Athens", "Asia/Dubai", "America/Sao_Paulo"}
)

// User returns person i. It is cheap: samples are made when asked for.
func (p *Population) User(i int) *Person {
	key := mix(p.Seed ^ mix(uint64(i)+0x5eed))
	r := newRand(key, streamProfile, 0)
	per := &Person{Index: i, pop: p, key: key, days: map[int]*dayInfo{}, chunks: map[int]*chunk{}}
	per.Home = homeZones[r.IntN(len(homeZones))]
	per.home = mustZone(per.Home)
	per.Age = 22 + r.IntN(44)
	per.Fitness = (r.Float64() + r.Float64()) / 2
	per.RestingHR = round1(50 + 25*(0.65*(1-per.Fitness)+0.35*r.Float64()))
	hrv := (85 - 0.9*float64(per.Age-20) + 20*r.NormFloat64()) * (1 + 0.4*(per.Fitness-0.5))
	per.HRV = round1(clamp(hrv, 18, 140))
	per.Weight = round1(52 + 50*r.Float64())
	per.Stride = 0.62 + 0.2*r.Float64()
	per.Cadence = 96 + 22*r.Float64()
	per.Wake = 360 + r.IntN(120)
	inBed := 420 + r.IntN(90) // 7 h to 8.5 h in bed
	per.Bedtime = per.Wake + 1440 - inBed
	per.BedtimeSD = 10 + 30*r.Float64()
	per.Movement = 0.3 + 0.7*r.Float64()
	per.Commuter = r.Float64() < 0.7
	per.Mindful = r.Float64() < 0.3
	per.Imperial = per.Home[:8] == "America/" && per.Home != "America/Sao_Paulo" && r.Float64() < 0.9
	per.Research = r.Float64() < 0.5
	per.ModelTraining = r.Float64() < 0.7
	for k := range p.devices() {
		per.Devices = append(per.Devices, newDevice(key, k))
	}
	return per
}

// newDevice makes device k of the person whose key is key.
func newDevice(key uint64, k int) Device {
	r := newRand(key, streamDevice, int64(k))
	kind := Band
	switch k {
	case 0:
		kind = Watch
	case 1:
		kind = Phone
	case 2:
		kind = Scale
	}
	d := Device{Kind: kind, ID: fmt.Sprintf("%s-%06x", kind, mix(key^uint64(k))&0xffffff)}
	switch kind {
	case Watch:
		d.Every = []time.Duration{5, 10, 15}[r.IntN(3)] * time.Minute
		d.Skew = time.Duration(r.NormFloat64() * 15 * float64(time.Second))
		d.OfflineRate, d.MaxOffline, d.Sync = 0.12, 12*time.Hour, true
	case Phone:
		d.Every = []time.Duration{15, 20, 30}[r.IntN(3)] * time.Minute
		d.Skew = time.Duration(r.NormFloat64() * 2 * float64(time.Second))
		d.OfflineRate, d.MaxOffline = 0.05, 6*time.Hour
	case Scale:
		d.Every = time.Minute // right after each weighing
		d.OfflineRate, d.MaxOffline = 0.05, 36*time.Hour
	case Band:
		d.Every = 10 * time.Minute
		d.Skew = time.Duration(r.NormFloat64() * 20 * float64(time.Second))
		d.OfflineRate, d.MaxOffline = 0.2, 16*time.Hour
	}
	if kind != Phone && r.Float64() < 0.15 {
		// A cheap or long-unsynced clock: minutes off.
		d.Skew = time.Duration((60 + 180*r.Float64()) * float64(time.Second))
		if r.IntN(2) == 0 {
			d.Skew = -d.Skew
		}
	}
	d.Skew = d.Skew.Round(time.Second)
	return d
}

// Subject is the default external subject of person i of a population seeded with seed.
func Subject(seed uint64, i int) string { return fmt.Sprintf("sim-%d-%04d", seed, i) }

// Episodes returns the person's episodes that overlap [from, to), in order of start.
func (p *Person) Episodes(from, to time.Time) []Episode {
	var out []Episode
	d0, d1 := p.homeDay(from)-1, p.homeDay(to)+1
	for _, e := range p.episodesIn(d0, d1) {
		first := e.first
		if first > d1 || first+e.Days <= d0 {
			continue
		}
		start, end := p.dayStart(first), p.dayStart(first+e.Days)
		if start.Before(to) && end.After(from) {
			out = append(out, e.Episode)
		}
	}
	return out
}

// episode is an Episode with its first day as a day number.
type episode struct {
	Episode
	first int
}

// episodeBlock is the length in days of the blocks of the random episode schedule: a block
// has at most one episode of each kind, which ends inside it.
const episodeBlock = 28

// episodesIn returns the episodes of the blocks covering days [d0, d1] and the scripted
// ones, ordered by first day.
func (p *Person) episodesIn(d0, d1 int) []episode {
	var out []episode
	if !p.pop.ScriptedOnly {
		for b := floorDiv(d0, episodeBlock); b <= floorDiv(d1, episodeBlock); b++ {
			out = append(out, p.blockEpisodes(b)...)
		}
	}
	for i, e := range p.pop.Scripted[p.Index] {
		e = p.fill(e, newRand(p.key, streamScripted, int64(i)))
		out = append(out, episode{e, p.homeDay(e.Start)})
	}
	slices.SortStableFunc(out, func(a, b episode) int { return a.first - b.first })
	return out
}

// blockEpisodes draws the random episodes of block b.
func (p *Person) blockEpisodes(b int) []episode {
	r := newRand(p.key, streamEpisodes, int64(b))
	base := b * episodeBlock
	var out []episode
	add := func(k EpisodeKind, first, days int) {
		e := p.fill(Episode{Kind: k, Start: p.dayStart(first), Days: days}, r)
		out = append(out, episode{e, first})
	}
	if r.Float64() < 0.35 {
		add(Illness, base+r.IntN(22), 3+r.IntN(4))
	}
	if r.Float64() < 0.08+0.25*p.Fitness {
		add(Overtraining, base+r.IntN(17), 8+r.IntN(4))
	}
	if r.Float64() < 0.3 {
		add(PoorSleep, base+r.IntN(21), 7)
	}
	if r.Float64() < 0.25 {
		add(Travel, base+r.IntN(20), 3+r.IntN(6))
	}
	return out
}

// fill gives e the effects it left at zero.
func (p *Person) fill(e Episode, r *rand.Rand) Episode {
	if e.Days <= 0 {
		e.Days = 5
	}
	switch e.Kind {
	case Illness:
		if e.RHRShift == 0 {
			e.RHRShift = round1(5 + 3*r.Float64())
		}
		if e.HRVFactor == 0 {
			e.HRVFactor = 0.65 + 0.1*r.Float64()
		}
	case Overtraining:
		if e.RHRShift == 0 {
			e.RHRShift = round1(3 + 2*r.Float64())
		}
		if e.HRVFactor == 0 {
			e.HRVFactor = 0.75 + 0.1*r.Float64()
		}
	case Travel:
		if e.Zone == "" || e.Zone == p.Home {
			e.Zone = p.tripZone(e.Start, r)
		}
	}
	return e
}

// tripZone picks where a trip starting at t goes: another zone at most 9 hours away, so
// that the first night away is still a night.
func (p *Person) tripZone(t time.Time, r *rand.Rand) string {
	_, home := t.In(p.home).Zone()
	var near []string
	for _, z := range tripZones {
		_, off := t.In(mustZone(z)).Zone()
		if z != p.Home && off != home && math.Abs(float64(off-home)) <= 9*3600 {
			near = append(near, z)
		}
	}
	if len(near) == 0 {
		return p.Home // cannot happen with the zones above
	}
	return near[r.IntN(len(near))]
}

// Randomness: every decision draws from a PCG stream keyed by the person, a stream and an
// integer (a day, a device, an upload slot), so that any part can be made on its own.
const (
	streamProfile = iota + 1
	streamDevice
	streamEpisodes
	streamScripted
	streamDay
	streamNight
	streamActivity
	streamMinutes
	streamEvents
	streamOffline
	streamUpload
	streamMalformed
	streamSkew
)

// mix is SplitMix64's finalizer: a good 64-bit hash.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

func newRand(key uint64, stream int, k int64) *rand.Rand {
	return rand.New(rand.NewPCG(key, mix(uint64(stream)<<56^uint64(k))))
}

func mustZone(name string) *time.Location {
	loc, err := pulsebase.LoadZone(name)
	if err != nil {
		panic("sim: zone " + name + ": " + err.Error()) // the zones are ours, and tzdata is embedded
	}
	return loc
}

func floorDiv(a, b int) int {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

func clamp(x, lo, hi float64) float64 { return math.Max(lo, math.Min(hi, x)) }

func round1(x float64) float64 { return math.Round(x*10) / 10 }

// number encodes v as a JSON number.
func number(v float64) json.RawMessage {
	return strconv.AppendFloat(nil, v, 'f', -1, 64)
}

// text encodes s as a JSON string.
func text(s string) json.RawMessage {
	b, _ := json.Marshal(s)
	return b
}
