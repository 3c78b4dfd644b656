package agg

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
)

// pt is an expected Point: its start as RFC 3339 (so the offset is checked too).
type pt struct {
	start                     string
	count                     int64
	sum, min, max, mean, last float64
	minutes                   map[string]float64
}

func (p pt) String() string {
	if p.minutes != nil {
		return fmt.Sprintf("{%s n=%d %v}", p.start, p.count, p.minutes)
	}
	return fmt.Sprintf("{%s n=%d sum=%g min=%g max=%g mean=%g last=%g}", p.start, p.count, p.sum, p.min, p.max, p.mean, p.last)
}

func toPts(ps []Point) []pt {
	out := make([]pt, len(ps))
	for i, p := range ps {
		out[i] = pt{p.Start.Format(time.RFC3339), p.Count, p.Sum, p.Min, p.Max, p.Mean, p.Last, p.Minutes}
	}
	return out
}

func samePts(got, want []pt) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.start != w.start || g.count != w.count || !near(g.sum, w.sum) || !near(g.min, w.min) ||
			!near(g.max, w.max) || !near(g.mean, w.mean) || !near(g.last, w.last) ||
			len(g.minutes) != len(w.minutes) {
			return false
		}
		for k, v := range w.minutes {
			if gv, ok := g.minutes[k]; !ok || !near(gv, v) {
				return false
			}
		}
	}
	return true
}

// one is the expected point of a single part v.
func one(start string, v float64) pt { return pt{start, 1, v, v, v, v, v, nil} }

func TestBuckets(t *testing.T) {
	tests := []struct {
		name    string
		samples []pulsebase.Sample
		typ     string
		res     Resolution
		want    []pt
	}{{
		name:    "steps 10:50-11:10 split evenly between two hours",
		samples: []pulsebase.Sample{interval("steps", 120, "2026-11-29T10:50:00-06:00", "2026-11-29T11:10:00-06:00")},
		typ:     "steps", res: Hour,
		want: []pt{one("2026-11-29T10:00:00-06:00", 60), one("2026-11-29T11:00:00-06:00", 60)},
	}, {
		name:    "steps 10:40-11:10 split 2:1",
		samples: []pulsebase.Sample{interval("steps", 90, "2026-11-29T10:40:00-06:00", "2026-11-29T11:10:00-06:00")},
		typ:     "steps", res: Hour,
		want: []pt{one("2026-11-29T10:00:00-06:00", 60), one("2026-11-29T11:00:00-06:00", 30)},
	}, {
		name:    "steps over three minutes, one minute each",
		samples: []pulsebase.Sample{interval("steps", 90, "2026-11-29T10:00:30-06:00", "2026-11-29T10:02:00-06:00")},
		typ:     "steps", res: Minute,
		want: []pt{one("2026-11-29T10:00:00-06:00", 30), one("2026-11-29T10:01:00-06:00", 60)},
	}, {
		name:    "the same sample in one day bucket",
		samples: []pulsebase.Sample{interval("steps", 120, "2026-11-29T10:50:00-06:00", "2026-11-29T11:10:00-06:00")},
		typ:     "steps", res: Day,
		want: []pt{one("2026-11-29T00:00:00-06:00", 120)},
	}, {
		name:    "distance across local midnight",
		samples: []pulsebase.Sample{interval("distance", 1000, "2026-11-28T23:30:00-06:00", "2026-11-29T00:30:00-06:00")},
		typ:     "distance", res: Day,
		want: []pt{one("2026-11-28T00:00:00-06:00", 500), one("2026-11-29T00:00:00-06:00", 500)},
	}, {
		name: "two steps samples in an hour: count, sum, min, max, mean, last",
		samples: []pulsebase.Sample{
			interval("steps", 50, "2026-11-29T10:30:00-06:00", "2026-11-29T10:31:00-06:00"),
			interval("steps", 30, "2026-11-29T10:00:00-06:00", "2026-11-29T10:01:00-06:00"),
			interval("steps", 10, "2026-11-29T10:59:00-06:00", "2026-11-29T11:01:00-06:00"),
		},
		typ: "steps", res: Hour,
		want: []pt{{"2026-11-29T10:00:00-06:00", 3, 85, 5, 50, 85.0 / 3, 5, nil}, one("2026-11-29T11:00:00-06:00", 5)},
	}, {
		name:    "mindful session spread in minutes of its own unit",
		samples: []pulsebase.Sample{interval("mindful_session", 20, "2026-11-29T07:50:00-06:00", "2026-11-29T08:10:00-06:00")},
		typ:     "mindful_session", res: Hour,
		want: []pt{one("2026-11-29T07:00:00-06:00", 10), one("2026-11-29T08:00:00-06:00", 10)},
	}, {
		name: "heart rate: instant readings in the bucket of their start",
		samples: []pulsebase.Sample{
			instant("heart_rate", 60, "2026-11-29T08:00:00-06:00"),
			instant("heart_rate", 70, "2026-11-29T08:59:59.999-06:00"),
			instant("heart_rate", 50, "2026-11-29T08:30:00-06:00"),
			instant("heart_rate", 80, "2026-11-29T09:00:00-06:00"),
		},
		typ: "heart_rate", res: Hour,
		want: []pt{{"2026-11-29T08:00:00-06:00", 3, 180, 50, 70, 60, 70, nil}, one("2026-11-29T09:00:00-06:00", 80)},
	}, {
		name:    "+05:30: an hour bucket starts at local hh:00, 04:30Z",
		samples: []pulsebase.Sample{instant("heart_rate", 64, "2026-11-29T10:15:00+05:30")},
		typ:     "heart_rate", res: Hour,
		want: []pt{one("2026-11-29T10:00:00+05:30", 64)},
	}, {
		name:    "+05:30: steps spread on local hours, not UTC ones",
		samples: []pulsebase.Sample{interval("steps", 100, "2026-11-29T10:45:00+05:30", "2026-11-29T11:15:00+05:30")},
		typ:     "steps", res: Hour,
		want: []pt{one("2026-11-29T10:00:00+05:30", 50), one("2026-11-29T11:00:00+05:30", 50)},
	}, {
		name:    "+05:30: a day bucket starts at local midnight",
		samples: []pulsebase.Sample{instant("heart_rate", 64, "2026-11-29T02:00:00+05:30")},
		typ:     "heart_rate", res: Day,
		want: []pt{one("2026-11-29T00:00:00+05:30", 64)},
	}, {
		name: "the zone decides, not the offset the client sent",
		samples: []pulsebase.Sample{func() pulsebase.Sample {
			s := instant("heart_rate", 64, "2026-11-29T03:00:00Z")
			s.Zone = "America/Chicago"
			return s
		}()},
		typ: "heart_rate", res: Day,
		want: []pt{one("2026-11-28T00:00:00-06:00", 64)},
	}, {
		name: "sleep stages: minutes per level and hour",
		samples: []pulsebase.Sample{
			stage("light", "2026-11-28T23:00:00-06:00", "2026-11-28T23:45:00-06:00"),
			stage("deep", "2026-11-28T23:45:00-06:00", "2026-11-29T00:30:00-06:00"),
			stage("rem", "2026-11-29T00:30:00-06:00", "2026-11-29T01:00:00-06:00"),
		},
		typ: "sleep_stage", res: Hour,
		want: []pt{
			{start: "2026-11-28T23:00:00-06:00", count: 2, minutes: map[string]float64{"light": 45, "deep": 15}},
			{start: "2026-11-29T00:00:00-06:00", count: 2, minutes: map[string]float64{"deep": 30, "rem": 30}},
		},
	}, {
		name: "intensity: fractions of a minute",
		samples: []pulsebase.Sample{
			level("activity_intensity", "vigorous", "2026-11-29T10:00:30-06:00", "2026-11-29T10:01:15-06:00"),
			level("activity_intensity", "sedentary", "2026-11-29T10:01:15-06:00", "2026-11-29T10:02:00-06:00"),
		},
		typ: "activity_intensity", res: Minute,
		want: []pt{
			{start: "2026-11-29T10:00:00-06:00", count: 1, minutes: map[string]float64{"vigorous": 0.5}},
			{start: "2026-11-29T10:01:00-06:00", count: 2, minutes: map[string]float64{"vigorous": 0.25, "sedentary": 0.75}},
		},
	}, {
		name: "resting heart rate of a day: on that day",
		samples: []pulsebase.Sample{
			interval("resting_heart_rate", 55, "2026-11-28T00:00:00-06:00", "2026-11-29T00:00:00-06:00"),
		},
		typ: "resting_heart_rate", res: Day,
		want: []pt{one("2026-11-28T00:00:00-06:00", 55)},
	}, {
		name: "nightly rMSSD: on the day the night ends",
		samples: []pulsebase.Sample{
			interval("hrv_rmssd", 48, "2026-11-28T23:00:00-06:00", "2026-11-29T07:00:00-06:00"),
			instant("hrv_rmssd", 52, "2026-11-27T07:00:00-06:00"),
		},
		typ: "hrv_rmssd", res: Day,
		want: []pt{one("2026-11-27T00:00:00-06:00", 52), one("2026-11-29T00:00:00-06:00", 48)},
	}, {
		name: "spring forward in Chicago: a 23-hour day and an hour that skips 02:00",
		samples: func() []pulsebase.Sample {
			s := interval("steps", 60, "2026-03-08T01:30:00-06:00", "2026-03-08T03:30:00-05:00")
			s.Zone = "America/Chicago"
			d := interval("steps", 2300, "2026-03-08T00:00:00-06:00", "2026-03-09T00:00:00-05:00")
			d.Zone = "America/Chicago"
			d.Source = "other"
			return []pulsebase.Sample{s, d}
		}(),
		typ: "steps", res: Hour,
		want: func() []pt {
			var w []pt
			for h := 0; h < 24; h++ {
				if h == 2 {
					continue
				}
				off := "-05:00"
				if h < 2 {
					off = "-06:00"
				}
				p := one(fmt.Sprintf("2026-03-08T%02d:00:00%s", h, off), 100)
				if h == 1 || h == 3 {
					p = pt{p.start, 2, 130, 30, 100, 65, 30, nil}
				}
				w = append(w, p)
			}
			return w
		}(),
	}, {
		name: "fall back in Chicago: two 01:00 hours",
		samples: func() []pulsebase.Sample {
			a := instant("heart_rate", 60, "2026-11-01T06:30:00Z")
			b := instant("heart_rate", 62, "2026-11-01T07:30:00Z")
			a.Zone, b.Zone = "America/Chicago", "America/Chicago"
			return []pulsebase.Sample{a, b}
		}(),
		typ: "heart_rate", res: Hour,
		want: []pt{one("2026-11-01T01:00:00-05:00", 60), one("2026-11-01T01:00:00-06:00", 62)},
	}, {
		name: "fall back in Chicago: a 25-hour day holds a whole 25-hour sample",
		samples: func() []pulsebase.Sample {
			d := interval("steps", 2500, "2026-11-01T00:00:00-05:00", "2026-11-02T00:00:00-06:00")
			d.Zone = "America/Chicago"
			return []pulsebase.Sample{d}
		}(),
		typ: "steps", res: Day,
		want: []pt{one("2026-11-01T00:00:00-05:00", 2500)},
	}, {
		name:    "an interval of zero length counts in the bucket of its start",
		samples: []pulsebase.Sample{interval("mindful_session", 0, "2026-11-29T10:00:00-06:00", "2026-11-29T10:00:00-06:00")},
		typ:     "mindful_session", res: Hour,
		want: []pt{one("2026-11-29T10:00:00-06:00", 0)},
	}, {
		name:    "other types are ignored",
		samples: []pulsebase.Sample{instant("heart_rate", 60, "2026-11-29T08:00:00-06:00")},
		typ:     "steps", res: Hour,
		want: []pt{},
	}, {
		name:    "an unknown type has no series",
		samples: []pulsebase.Sample{instant("heart_rate", 60, "2026-11-29T08:00:00-06:00")},
		typ:     "pulse", res: Hour,
		want: []pt{},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := toPts(Buckets(tt.samples, tt.typ, tt.res))
			if !samePts(got, tt.want) {
				t.Errorf("Buckets(%s, %s):\n got %v\nwant %v", tt.typ, tt.res, got, tt.want)
			}
		})
	}
}

func TestBucketsLast(t *testing.T) {
	tests := []struct {
		name    string
		samples []pulsebase.Sample
		want    float64
	}{{
		name: "latest start wins over a larger value",
		samples: []pulsebase.Sample{
			interval("steps", 10, "2026-11-29T10:20:00-06:00", "2026-11-29T10:21:00-06:00"),
			interval("steps", 50, "2026-11-29T10:10:00-06:00", "2026-11-29T10:21:00-06:00"),
		},
		want: 10,
	}, {
		name: "same start: latest end wins",
		samples: []pulsebase.Sample{
			interval("steps", 10, "2026-11-29T10:00:00-06:00", "2026-11-29T10:30:00-06:00"),
			sample("steps", 50, "2026-11-29T10:00:00-06:00", "2026-11-29T10:20:00-06:00", "b"),
		},
		want: 10,
	}, {
		name: "same start and end: larger value wins",
		samples: []pulsebase.Sample{
			sample("steps", 50, "2026-11-29T10:00:00-06:00", "2026-11-29T10:20:00-06:00", "b"),
			sample("steps", 10, "2026-11-29T10:00:00-06:00", "2026-11-29T10:20:00-06:00", "a"),
		},
		want: 50,
	}, {
		name: "a sample ending in the next hour: its part in this one",
		samples: []pulsebase.Sample{
			interval("steps", 10, "2026-11-29T10:00:00-06:00", "2026-11-29T10:01:00-06:00"),
			interval("steps", 60, "2026-11-29T10:30:00-06:00", "2026-11-29T11:30:00-06:00"),
		},
		want: 30,
	}, {
		name: "instants at the same time from two sources: larger value",
		samples: []pulsebase.Sample{
			sample("steps", 72, "2026-11-29T10:00:00-06:00", "2026-11-29T10:00:00-06:00", "watch"),
			sample("steps", 71, "2026-11-29T16:00:00Z", "2026-11-29T16:00:00Z", "strap"),
			sample("steps", 73, "2026-11-29T10:00:00-06:00", "2026-11-29T10:00:00-06:00", "ring"),
		},
		want: 73,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i := range 10 {
				ss := append([]pulsebase.Sample(nil), tt.samples...)
				rand.New(rand.NewPCG(uint64(i), 1)).Shuffle(len(ss), reflect.Swapper(ss))
				ps := Buckets(ss, "steps", Hour)
				if len(ps) == 0 || ps[0].Last != tt.want {
					t.Fatalf("permutation %d: got Last %v, want %v", i, ps, tt.want)
				}
			}
		})
	}
}

// TestBucketsMixedClocks: samples with different clocks share an hour bucket when it is
// the same hour, and a day bucket when it is the same local date.
func TestBucketsMixedClocks(t *testing.T) {
	ss := []pulsebase.Sample{
		instant("heart_rate", 60, "2026-01-07T10:15:00-05:00"), // 15:15Z
		instant("heart_rate", 70, "2026-01-07T16:45:00+01:00"), // 15:45Z, same hour
		instant("heart_rate", 80, "2026-01-07T20:50:00+05:30"), // 15:20Z, hour from 14:30Z
	}
	got := toPts(Buckets(ss, "heart_rate", Hour))
	want := []pt{one("2026-01-07T20:00:00+05:30", 80), {"2026-01-07T16:00:00+01:00", 2, 130, 60, 70, 65, 70, nil}}
	if !samePts(got, want) {
		t.Errorf("hours: got %v, want %v", got, want)
	}
	got = toPts(Buckets(ss, "heart_rate", Day))
	want = []pt{{"2026-01-07T00:00:00+05:30", 3, 210, 60, 80, 70, 70, nil}}
	if !samePts(got, want) {
		t.Errorf("days: got %v, want %v", got, want)
	}
}

func TestLocalDay(t *testing.T) {
	tests := []struct {
		start, zone, want string
	}{
		{"2026-11-29T23:30:00-06:00", "", "2026-11-29"},
		{"2026-11-30T05:30:00Z", "", "2026-11-30"},
		{"2026-11-30T05:30:00Z", "America/Chicago", "2026-11-29"},
		{"2026-11-29T23:30:00-06:00", "Asia/Kolkata", "2026-11-30"},
		{"2026-11-29T23:30:00-06:00", "Not/AZone", "2026-11-29"}, // never valid: fall back to the offset
		{"2026-11-29T18:29:59+05:30", "", "2026-11-29"},
	}
	for _, tt := range tests {
		s := instant("heart_rate", 60, tt.start)
		s.Zone = tt.zone
		if got := LocalDay(s); got != tt.want {
			t.Errorf("LocalDay(%s, zone %q): got %s, want %s", tt.start, tt.zone, got, tt.want)
		}
	}
}

func TestBucket(t *testing.T) {
	kolkata, _ := pulsebase.LoadZone("Asia/Kolkata")
	tests := []struct {
		t        string
		loc      *time.Location
		res      Resolution
		from, to string
	}{
		{"2026-11-29T04:29:59Z", kolkata, Hour, "2026-11-29T09:00:00+05:30", "2026-11-29T10:00:00+05:30"},
		{"2026-11-29T04:30:00Z", kolkata, Hour, "2026-11-29T10:00:00+05:30", "2026-11-29T11:00:00+05:30"},
		{"2026-11-29T18:29:59Z", kolkata, Day, "2026-11-29T00:00:00+05:30", "2026-11-30T00:00:00+05:30"},
		{"2026-11-29T18:30:00Z", kolkata, Day, "2026-11-30T00:00:00+05:30", "2026-12-01T00:00:00+05:30"},
		{"2026-11-29T10:00:59.5Z", fixedZone(0), Minute, "2026-11-29T10:00:00Z", "2026-11-29T10:01:00Z"},
	}
	for _, tt := range tests {
		from, to := Bucket(at(tt.t), tt.loc, tt.res)
		if f, g := from.Format(time.RFC3339), to.Format(time.RFC3339); f != tt.from || g != tt.to {
			t.Errorf("Bucket(%s, %s, %s): got [%s, %s), want [%s, %s)", tt.t, tt.loc, tt.res, f, g, tt.from, tt.to)
		}
	}
	for _, s := range []string{"1m", "1h", "1d"} {
		if r, ok := ParseResolution(s); !ok || r.String() != s {
			t.Errorf("ParseResolution(%q): got %v %v", s, r, ok)
		}
	}
	if _, ok := ParseResolution("1w"); ok {
		t.Error(`ParseResolution("1w") succeeded`)
	}
}

// TestDuplicatesCountTwice pins down the contract: deduplication happens before this
// package, so a sample passed twice counts twice.
func TestDuplicatesCountTwice(t *testing.T) {
	s := interval("steps", 100, "2026-11-29T10:00:00-06:00", "2026-11-29T10:01:00-06:00")
	ps := Buckets([]pulsebase.Sample{s, s}, "steps", Day)
	if len(ps) != 1 || ps[0].Sum != 200 || ps[0].Count != 2 {
		t.Errorf("got %v, want one day with sum 200 and count 2", toPts(ps))
	}
}
