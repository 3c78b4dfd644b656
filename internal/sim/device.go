package sim

import (
	"encoding/json"
	"math"
	"slices"
	"time"

	"github.com/pulsebase/pulsebase"
)

// Upload is what one device sends at once.
type Upload struct {
	// Device is the index of the device in Person.Devices.
	Device int
	// At is when the device uploads (simulated time).
	At      time.Time
	Samples []pulsebase.SampleInput
	// Resent counts the samples of Samples that the previous upload carried already (its
	// acknowledgement was lost); the server reports them as duplicates.
	Resent int
	// Malformed counts the corrupted copies in Samples; the server rejects them.
	Malformed int
	// CatchUp marks the first upload after the device was offline.
	CatchUp bool
}

// Uploads returns the uploads of the person's devices at times in [from, to), ordered by
// time, then device. Each device uploads every Device.Every (at fixed slots of absolute
// time) what became available since its previous upload, unless it is offline; the first
// upload after an offline period catches up. A sample's times carry the device's clock
// skew; an upload may repeat the previous one (Population.ResendRate), carry corrupted
// copies of samples (Population.MalformedRate), and arrive out of order: shuffled, or
// newest first when catching up. Nothing available before since is sent.
//
// Uploads is a pure function of the population, the person's index, since, from and to,
// and the uploads of adjacent ranges add up to those of their union.
func (p *Person) Uploads(since, from, to time.Time) []Upload {
	var out []Upload
	skews := map[[2]int]time.Duration{}
	for k := range p.Devices {
		dev := &p.Devices[k]
		for n := p.slotAtOrAfter(k, maxTime(from, since)); ; n++ {
			at := p.slotTime(k, n)
			if !at.Before(to) {
				break
			}
			if p.offline(k, at) {
				continue
			}
			prevN, prev, catchUp := p.previousUpload(k, n, since)
			u := Upload{Device: k, At: at, CatchUp: catchUp}
			r := newRand(p.key, streamUpload, int64(k)<<40^n)
			mal := newRand(p.key, streamMalformed, int64(k)<<40^n)
			render := func(c *chunk, g *gen) pulsebase.SampleInput {
				sk, ok := skews[[2]int{k, c.day.d}]
				if !ok {
					sk = p.skew(k, c.day.d)
					skews[[2]int{k, c.day.d}] = sk
				}
				return c.input(g, dev, sk)
			}
			if r.Float64() < p.pop.resendRate() && prevN >= 0 {
				// The acknowledgement of the previous upload was lost: it goes again, first.
				_, before, _ := p.previousUpload(k, prevN, since)
				p.each(before, prev, k, func(c *chunk, g *gen) {
					u.Samples = append(u.Samples, render(c, g))
					u.Resent++
				})
			}
			p.each(prev, at, k, func(c *chunk, g *gen) {
				in := render(c, g)
				u.Samples = append(u.Samples, in)
				if p.pop.MalformedRate > 0 && mal.Float64() < p.pop.MalformedRate {
					u.Samples = append(u.Samples, corrupt(in, mal.Float64()))
					u.Malformed++
				}
			})
			if len(u.Samples) == 0 {
				continue
			}
			switch {
			case catchUp && r.Float64() < 0.5:
				slices.Reverse(u.Samples) // newest first
			case r.Float64() < 0.2:
				r.Shuffle(len(u.Samples), func(i, j int) { u.Samples[i], u.Samples[j] = u.Samples[j], u.Samples[i] })
			}
			out = append(out, u)
		}
	}
	slices.SortStableFunc(out, func(a, b Upload) int { return a.At.Compare(b.At) })
	return out
}

// slotTime is device k's n-th upload slot: a device-specific phase plus n × Every.
func (p *Person) slotTime(k int, n int64) time.Time {
	every := p.Devices[k].Every
	phase := time.Duration(mix(p.key^uint64(k)<<8) % uint64(every/time.Second) * uint64(time.Second))
	return time.Unix(0, 0).Add(phase + time.Duration(n)*every)
}

// slotAtOrAfter is the first slot of device k at or after t.
func (p *Person) slotAtOrAfter(k int, t time.Time) int64 {
	every := p.Devices[k].Every
	n := int64(math.Floor(float64(t.Sub(p.slotTime(k, 0))) / float64(every)))
	for p.slotTime(k, n).Before(t) {
		n++
	}
	for n > math.MinInt64 && !p.slotTime(k, n-1).Before(t) {
		n--
	}
	return n
}

// previousUpload returns device k's last upload slot before slot n and its time, or -1
// and since when there is none since since; catchUp reports that slots were missed
// (the device was offline).
func (p *Person) previousUpload(k int, n int64, since time.Time) (int64, time.Time, bool) {
	for m := n - 1; ; m-- {
		t := p.slotTime(k, m)
		if t.Before(since) {
			return -1, since, m != n-1
		}
		if !p.offline(k, t) {
			return m, t, m != n-1
		}
	}
}

// offline reports whether device k is offline at t. Each day (of the home calendar) it
// may go offline once, at a random time, for up to Device.MaxOffline.
func (p *Person) offline(k int, t time.Time) bool {
	dev := &p.Devices[k]
	if dev.OfflineRate <= 0 {
		return false
	}
	d := p.homeDay(t)
	back := int(dev.MaxOffline/(24*time.Hour)) + 1
	for day := d - back; day <= d; day++ {
		r := newRand(p.key, streamOffline, int64(k)<<40^int64(day))
		if r.Float64() >= dev.OfflineRate {
			continue
		}
		start := p.dayStart(day).Add(time.Duration(r.Float64() * float64(24*time.Hour)))
		length := time.Hour + time.Duration(r.Float64()*float64(dev.MaxOffline-time.Hour))
		if !t.Before(start) && t.Before(start.Add(length)) {
			return true
		}
	}
	return false
}

// skew is device k's clock error on person-day d: its usual skew plus a daily drift.
func (p *Person) skew(k, d int) time.Duration {
	r := newRand(p.key, streamSkew, int64(k)<<40^int64(d))
	return p.Devices[k].Skew + time.Duration(r.NormFloat64()*3*float64(time.Second)).Round(time.Second)
}

// Malformations, and the code the server rejects each with.
var malformations = []struct {
	share float64
	code  string
}{
	{0.4, pulsebase.CodeOutOfRange},
	{0.25, pulsebase.CodeBadUnit},
	{0.25, pulsebase.CodeMissingField}, // an interval without its end (bad_time for an instant with one before its start)
	{0.1, pulsebase.CodeUnknownType},
}

// corrupt returns a broken copy of in, as a buggy device or app sends one; u in [0, 1)
// picks how it is broken. The copy has an id of its own, so that the good sample is kept.
func corrupt(in pulsebase.SampleInput, u float64) pulsebase.SampleInput {
	out := in
	out.ID = in.ID + "-x"
	code := ""
	for _, m := range malformations {
		if u < m.share {
			code = m.code
			break
		}
		u -= m.share
	}
	t, _ := pulsebase.LookupType(in.Type)
	switch code {
	case pulsebase.CodeOutOfRange:
		if t.Levels != nil {
			out.Value = json.RawMessage("17")
		} else {
			// Way out of range in any unit the type accepts: an overflowing counter.
			out.Value = number(math.Round(t.Max*10 + 1000))
		}
	case pulsebase.CodeBadUnit:
		out.Unit = "furlongs"
	case pulsebase.CodeMissingField:
		if t.Shape == pulsebase.ShapeInterval || t.Shape == pulsebase.ShapeCategorical {
			out.End = ""
		} else {
			st, _ := time.Parse(time.RFC3339, in.Start)
			out.End = st.Add(-time.Minute).Format(time.RFC3339) // bad_time: ends before it starts
		}
	default:
		out.Type = in.Type + "_v2"
	}
	return out
}

// MalformedCode returns the rejection code the server gives a sample corrupted by the
// simulator, or "" for a sample it did not corrupt.
func MalformedCode(in pulsebase.SampleInput) string {
	if len(in.ID) < 2 || in.ID[len(in.ID)-2:] != "-x" {
		return ""
	}
	t, ok := pulsebase.LookupType(in.Type)
	switch {
	case !ok:
		return pulsebase.CodeUnknownType
	case in.Unit == "furlongs":
		return pulsebase.CodeBadUnit
	case in.End == "" && (t.Shape == pulsebase.ShapeInterval || t.Shape == pulsebase.ShapeCategorical):
		return pulsebase.CodeMissingField
	case in.End != "" && in.End < in.Start && t.Shape != pulsebase.ShapeInterval && t.Shape != pulsebase.ShapeCategorical:
		return pulsebase.CodeBadTime
	}
	return pulsebase.CodeOutOfRange
}
