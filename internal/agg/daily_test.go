package agg

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
)

// everyMinute returns n one-minute samples of typ from start, each of value v(i).
func everyMinute(typ, start string, n int, v func(i int) float64) []pulsebase.Sample {
	return minutes(start, n, func(i int, from, to string) pulsebase.Sample {
		return interval(typ, v(i), from, to)
	})
}

// intensities returns one-minute activity_intensity samples from start at the given levels.
func intensities(start string, levels ...int) []pulsebase.Sample {
	t, _ := pulsebase.LookupType("activity_intensity")
	return minutes(start, len(levels), func(i int, from, to string) pulsebase.Sample {
		return level("activity_intensity", t.Levels[levels[i]], from, to)
	})
}

func sedentary(start string, n int) []pulsebase.Sample {
	return intensities(start, make([]int, n)...)
}

func constant(v float64) func(int) float64 { return func(int) float64 { return v } }

// heartRates returns one heart_rate reading at the start of each minute from start.
func heartRates(start string, bpm ...float64) []pulsebase.Sample {
	return minutes(start, len(bpm), func(i int, from, _ string) pulsebase.Sample {
		return instant("heart_rate", bpm[i], from)
	})
}

func TestDailySteps(t *testing.T) {
	ss := cat(
		// 10:00: same coverage, the watch has more samples.
		[]pulsebase.Sample{sample("steps", 1000, "2026-11-29T10:00:00-06:00", "2026-11-29T11:00:00-06:00", "phone")},
		withSource(everyMinute("steps", "2026-11-29T10:00:00-06:00", 60, constant(10)), "watch"),
		// 11:00: the phone alone.
		[]pulsebase.Sample{sample("steps", 500, "2026-11-29T11:00:00-06:00", "2026-11-29T12:00:00-06:00", "phone")},
		// 12:00: the phone covers the whole hour, the watch half of it.
		withSource(everyMinute("steps", "2026-11-29T12:00:00-06:00", 30, constant(10)), "watch"),
		[]pulsebase.Sample{sample("steps", 200, "2026-11-29T12:00:00-06:00", "2026-11-29T13:00:00-06:00", "phone")},
		// 13:00: same coverage and count; the watch counted more.
		[]pulsebase.Sample{
			sample("steps", 400, "2026-11-29T13:00:00-06:00", "2026-11-29T14:00:00-06:00", "phone"),
			sample("steps", 450, "2026-11-29T13:00:00-06:00", "2026-11-29T14:00:00-06:00", "watch"),
		},
		// 14:30-15:30: spread over two hours.
		[]pulsebase.Sample{sample("steps", 120, "2026-11-29T14:30:00-06:00", "2026-11-29T15:30:00-06:00", "phone")},
		[]pulsebase.Sample{instant("mood", 3, "2026-11-30T12:00:00-06:00")},
	)
	days := DailyMetrics(ss)
	checkFloat(t, "Steps", dayOf(days, "2026-11-29").Steps, 600+500+200+450+120)
	if d := dayOf(days, "2026-11-30"); d.Steps != nil || d.ActiveMinutes != nil {
		t.Errorf("a day without steps: got Steps %s ActiveMinutes %s, want both absent", str(d.Steps), str(d.ActiveMinutes))
	}
}

func TestSourcePreference(t *testing.T) {
	tests := []struct {
		name string
		a, b sourceHour
	}{
		{"longer coverage", sourceHour{source: "z", covered: 61, samples: 1, steps: 1}, sourceHour{source: "a", covered: 60, samples: 60, steps: 9000}},
		{"more samples", sourceHour{source: "z", covered: 60, samples: 2, steps: 1}, sourceHour{source: "a", covered: 60, samples: 1, steps: 9000}},
		{"more steps", sourceHour{source: "z", covered: 60, samples: 2, steps: 101}, sourceHour{source: "a", covered: 60, samples: 2, steps: 100}},
		{"smaller source id", sourceHour{source: "a", covered: 60, samples: 2, steps: 100}, sourceHour{source: "b", covered: 60, samples: 2, steps: 100}},
	}
	for _, tt := range tests {
		if !tt.a.more(&tt.b) || tt.b.more(&tt.a) {
			t.Errorf("%s: got %+v not preferred to %+v", tt.name, tt.a, tt.b)
		}
	}
}

func TestDailyActiveMinutes(t *testing.T) {
	ss := cat(
		intensities("2026-11-29T08:00:00-06:00", 0, 1, 2, 3, 2), // 3 active
		// No intensity: steps decide, from 100 a minute.
		[]pulsebase.Sample{
			interval("steps", 99, "2026-11-29T09:00:00-06:00", "2026-11-29T09:01:00-06:00"),
			interval("steps", 100, "2026-11-29T09:01:00-06:00", "2026-11-29T09:02:00-06:00"),
			interval("steps", 150, "2026-11-29T09:02:00-06:00", "2026-11-29T09:03:00-06:00"),
			// 6,000 steps spread over an hour are 100 a minute: 60 active minutes.
			interval("steps", 6000, "2026-11-29T11:00:00-06:00", "2026-11-29T12:00:00-06:00"),
		},
		// Intensity, when present, decides: light with 200 steps is not active.
		intensities("2026-11-29T10:00:00-06:00", 1),
		[]pulsebase.Sample{interval("steps", 200, "2026-11-29T10:00:00-06:00", "2026-11-29T10:01:00-06:00")},
		// Half vigorous, half sedentary: the tie goes to the higher level.
		[]pulsebase.Sample{
			level("activity_intensity", "vigorous", "2026-11-29T10:10:00-06:00", "2026-11-29T10:10:30-06:00"),
			level("activity_intensity", "sedentary", "2026-11-29T10:10:30-06:00", "2026-11-29T10:11:00-06:00"),
		},
		// Mostly sedentary: not active.
		[]pulsebase.Sample{
			level("activity_intensity", "sedentary", "2026-11-29T10:20:00-06:00", "2026-11-29T10:20:40-06:00"),
			level("activity_intensity", "vigorous", "2026-11-29T10:20:40-06:00", "2026-11-29T10:21:00-06:00"),
		},
	)
	checkInt(t, "ActiveMinutes", dayOf(DailyMetrics(ss), "2026-11-29").ActiveMinutes, 3+2+60+0+1+0)
}

func TestDailySedentaryBouts(t *testing.T) {
	ss := cat(
		// 29 sedentary minutes, a light one, 30 sedentary: one bout of 30.
		sedentary("2026-11-29T08:00:00-06:00", 29),
		intensities("2026-11-29T08:29:00-06:00", 1),
		sedentary("2026-11-29T08:30:00-06:00", 30),
		// 40 sedentary minutes with a nap from 10:10 to 10:20 inside: 10 + 20, no bout.
		sedentary("2026-11-29T10:00:00-06:00", 40),
		[]pulsebase.Sample{stage("light", "2026-11-29T10:10:00-06:00", "2026-11-29T10:20:00-06:00")},
		// 35 minutes with no data at 12:17: 17 + 17, no bout.
		sedentary("2026-11-29T12:00:00-06:00", 17),
		sedentary("2026-11-29T12:18:00-06:00", 17),
		// No intensity, 0 steps for 31 minutes: a bout of 31.
		everyMinute("steps", "2026-11-29T14:00:00-06:00", 31, constant(0)),
		// 23:45 to 00:20: a bout of 35 on the day it ends.
		sedentary("2026-11-29T23:45:00-06:00", 35),
	)
	days := DailyMetrics(ss)
	d := dayOf(days, "2026-11-29")
	checkInt(t, "bouts on the 29th", d.SedentaryBouts, 2)
	checkInt(t, "bout minutes on the 29th", d.SedentaryMinutes, 30+31)
	checkInt(t, "active minutes on the 29th", d.ActiveMinutes, 0)
	d = dayOf(days, "2026-11-30")
	checkInt(t, "bouts on the 30th", d.SedentaryBouts, 1)
	checkInt(t, "bout minutes on the 30th", d.SedentaryMinutes, 35)
}

func TestDailySedentaryRunOfDays(t *testing.T) {
	// A watch on a desk from the 27th 12:00 to the 30th 06:00: one bout, on the 30th, with
	// the minutes of the 29th and the 30th only.
	days := DailyMetrics(sedentary("2026-11-27T12:00:00-06:00", 12*60+2*24*60+6*60))
	for _, date := range []string{"2026-11-27", "2026-11-28", "2026-11-29"} {
		checkInt(t, "bouts on "+date, dayOf(days, date).SedentaryBouts, 0)
	}
	d := dayOf(days, "2026-11-30")
	checkInt(t, "bouts on the 30th", d.SedentaryBouts, 1)
	checkInt(t, "bout minutes on the 30th", d.SedentaryMinutes, 24*60+6*60)
}

func TestDailyRestingHeartRate(t *testing.T) {
	night := []pulsebase.Sample{
		stage("light", "2026-11-29T01:00:00-06:00", "2026-11-29T07:00:00-06:00"),
		stage("deep", "2026-11-29T22:00:00-06:00", "2026-11-30T06:00:00-06:00"),
	}
	asleep := cat(
		// Minute means 60, 58, 56, 55, 54, 53, 55, 57, 59, 60 from 02:00. 02:02 averages 56
		// over two readings and 02:03 55 over three: the lowest window is the one from
		// 02:02, (56+55+54+53+55)/5 = 54.6 (the mean of its eight readings would be 54.875).
		heartRates("2026-11-29T02:00:00-06:00", 60, 58),
		[]pulsebase.Sample{
			instant("heart_rate", 52, "2026-11-29T02:02:00-06:00"),
			instant("heart_rate", 60, "2026-11-29T02:02:30-06:00"),
			instant("heart_rate", 55, "2026-11-29T02:03:00-06:00"),
			instant("heart_rate", 55, "2026-11-29T02:03:20-06:00"),
			instant("heart_rate", 55, "2026-11-29T02:03:40-06:00"),
		},
		heartRates("2026-11-29T02:04:00-06:00", 54, 53, 55, 57, 59, 60),
		// Five minutes at 40 but 03:03 is missing: no window.
		heartRates("2026-11-29T03:00:00-06:00", 40, 40, 40),
		heartRates("2026-11-29T03:04:00-06:00", 40, 40),
		// Awake and sedentary at 50 after waking: sleep comes first.
		sedentary("2026-11-29T08:00:00-06:00", 10),
		heartRates("2026-11-29T08:00:00-06:00", 50, 50, 50, 50, 50, 50, 50, 50, 50, 50),
		// The next night ends on the 30th and counts there.
		heartRates("2026-11-29T23:00:00-06:00", 48, 48, 48, 48, 48),
	)

	t.Run("device value first", func(t *testing.T) {
		ss := cat(night, asleep, []pulsebase.Sample{
			interval("resting_heart_rate", 55, "2026-11-29T00:00:00-06:00", "2026-11-30T00:00:00-06:00"),
			instant("resting_heart_rate", 54, "2026-11-29T08:00:00-06:00"),
		})
		d := dayOf(DailyMetrics(ss), "2026-11-29")
		checkFloat(t, "RestingHeartRate", d.RestingHeartRate, 54)
		if d.RestingHeartRateFrom != FromDevice {
			t.Errorf("got from %q, want %q", d.RestingHeartRateFrom, FromDevice)
		}
	})
	t.Run("sleep", func(t *testing.T) {
		days := DailyMetrics(cat(night, asleep))
		d := dayOf(days, "2026-11-29")
		checkFloat(t, "RestingHeartRate on the 29th", d.RestingHeartRate, 54.6)
		if d.RestingHeartRateFrom != FromSleep {
			t.Errorf("got from %q, want %q", d.RestingHeartRateFrom, FromSleep)
		}
		checkFloat(t, "RestingHeartRate on the 30th", dayOf(days, "2026-11-30").RestingHeartRate, 48)
	})
	t.Run("sedentary and still", func(t *testing.T) {
		// Steps at 09:05 make 09:05 to 09:15 not still: the 40s never count, and of the 50s
		// from 09:15 only those from 09:16 do. The lowest window is 09:16 to 09:20,
		// (4×50 + 70)/5 = 54.
		hr := make([]float64, 60)
		for i := range hr {
			switch {
			case i >= 10 && i < 15:
				hr[i] = 40
			case i >= 15 && i < 20:
				hr[i] = 50
			default:
				hr[i] = 70
			}
		}
		levels := make([]int, 60)
		levels[5] = 1
		ss := cat(
			intensities("2026-11-29T09:00:00-06:00", levels...),
			[]pulsebase.Sample{interval("steps", 200, "2026-11-29T09:05:00-06:00", "2026-11-29T09:06:00-06:00")},
			heartRates("2026-11-29T09:00:00-06:00", hr...),
			// Heart rate without activity data is not known to be sedentary.
			heartRates("2026-11-29T20:00:00-06:00", 45, 45, 45, 45, 45),
		)
		d := dayOf(DailyMetrics(ss), "2026-11-29")
		checkFloat(t, "RestingHeartRate", d.RestingHeartRate, 54)
		if d.RestingHeartRateFrom != FromSedentary {
			t.Errorf("got from %q, want %q", d.RestingHeartRateFrom, FromSedentary)
		}
	})
	t.Run("no heart rate", func(t *testing.T) {
		d := dayOf(DailyMetrics(sedentary("2026-11-29T09:00:00-06:00", 60)), "2026-11-29")
		if d.RestingHeartRate != nil {
			t.Errorf("got %v, want absent", *d.RestingHeartRate)
		}
	})
}

// rrSeries returns RR interval samples of source starting at start, each beat starting
// when the previous one ends plus the extra pause given for its index.
func rrSeries(source, start string, ms []float64, pause map[int]time.Duration) []pulsebase.Sample {
	t := at(start)
	out := make([]pulsebase.Sample, len(ms))
	for i, v := range ms {
		t = t.Add(pause[i])
		ts := t.Format(time.RFC3339Nano)
		out[i] = sample("rr_interval", v, ts, ts, source)
		t = t.Add(time.Duration(v) * time.Millisecond)
	}
	return out
}

// cycle returns n values repeating 1000, 1010, 1030 ms: successive differences +10, +20,
// −30, so every 3 pairs add 1,400 ms² of squares.
func cycle(n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = []float64{1000, 1010, 1030}[i%3]
	}
	return out
}

func TestDailyHRV(t *testing.T) {
	night := []pulsebase.Sample{stage("light", "2026-11-29T01:00:00-06:00", "2026-11-29T07:00:00-06:00")}
	withArtifact := append(append(cycle(31), 1600), cycle(61)[31:]...)
	tests := []struct {
		name    string
		samples []pulsebase.Sample
		want    float64 // NaN: absent
		from    string
	}{{
		// 60 pairs, 28,000 ms²: √(28000/60).
		name:    "clean night",
		samples: cat(night, rrSeries("strap", "2026-11-29T02:00:00-06:00", cycle(61), nil)),
		want:    math.Sqrt(28000.0 / 60), from: FromRR,
	}, {
		// A 1,600 ms beat between 1000 and 1010: both its pairs change by > 20 % and go,
		// and the +10 pair it split is gone: 59 pairs, 27,900 ms².
		name:    "an artifact",
		samples: cat(night, rrSeries("strap", "2026-11-29T02:00:00-06:00", withArtifact, nil)),
		want:    math.Sqrt(27900.0 / 59), from: FromRR,
	}, {
		name:    "a hole of 4 s in the recording splits a pair",
		samples: cat(night, rrSeries("strap", "2026-11-29T02:00:00-06:00", cycle(61), map[int]time.Duration{31: 4 * time.Second})),
		want:    math.Sqrt(27900.0 / 59), from: FromRR,
	}, {
		// The strap's pairs and the ring's constant 800 ms beats (0 ms² each) are paired
		// per source, never across: √(28000/120). Across, 1000 → 800 would pass the 20 %
		// filter and count.
		name: "two sources interleaved",
		samples: cat(night,
			rrSeries("strap", "2026-11-29T02:00:00-06:00", cycle(61), nil),
			rrSeries("ring", "2026-11-29T02:00:00.5-06:00", slicesRepeat(800, 61), nil)),
		want: math.Sqrt(28000.0 / 120), from: FromRR,
	}, {
		name: "too few pairs: the device's nightly values",
		samples: cat(night, rrSeries("strap", "2026-11-29T02:00:00-06:00", cycle(30), nil), []pulsebase.Sample{
			interval("hrv_rmssd", 40, "2026-11-28T23:00:00-06:00", "2026-11-29T07:00:00-06:00"),
			instant("hrv_rmssd", 50, "2026-11-29T07:05:00-06:00"),
		}),
		want: 45, from: FromDevice,
	}, {
		name:    "RR intervals outside sleep do not count",
		samples: rrSeries("strap", "2026-11-29T12:00:00-06:00", cycle(61), nil),
		want:    math.NaN(),
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := dayOf(DailyMetrics(tt.samples), "2026-11-29")
			if math.IsNaN(tt.want) {
				if d.HRVRMSSD != nil {
					t.Errorf("got %v, want absent", *d.HRVRMSSD)
				}
				return
			}
			checkFloat(t, "HRVRMSSD", d.HRVRMSSD, tt.want)
			if d.HRVFrom != tt.from {
				t.Errorf("got from %q, want %q", d.HRVFrom, tt.from)
			}
		})
	}
}

func slicesRepeat(v float64, n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = v
	}
	return out
}

func TestSessions(t *testing.T) {
	type want struct {
		date, start, end string
		inBed, asleep    float64 // minutes
		stages           map[string]float64
	}
	deepAfter := func(gap time.Duration) pulsebase.Sample {
		from := at("2026-11-29T01:00:00-06:00").Add(gap)
		return stage("deep", from.Format(time.RFC3339), from.Add(time.Hour).Format(time.RFC3339))
	}
	light := stage("light", "2026-11-28T23:00:00-06:00", "2026-11-29T01:00:00-06:00")
	tests := []struct {
		name    string
		samples []pulsebase.Sample
		want    []want
	}{{
		name:    "a gap of 59 minutes keeps one session",
		samples: []pulsebase.Sample{light, deepAfter(59 * time.Minute)},
		want:    []want{{"2026-11-29", "2026-11-28T23:00:00-06:00", "2026-11-29T02:59:00-06:00", 180, 180, map[string]float64{"light": 120, "deep": 60}}},
	}, {
		name:    "a gap of 60 minutes splits it",
		samples: []pulsebase.Sample{light, deepAfter(60 * time.Minute)},
		want: []want{
			{"2026-11-29", "2026-11-28T23:00:00-06:00", "2026-11-29T01:00:00-06:00", 120, 120, map[string]float64{"light": 120}},
			{"2026-11-29", "2026-11-29T02:00:00-06:00", "2026-11-29T03:00:00-06:00", 60, 60, map[string]float64{"deep": 60}},
		},
	}, {
		name:    "a gap of 61 minutes splits it",
		samples: []pulsebase.Sample{light, deepAfter(61 * time.Minute)},
		want: []want{
			{"2026-11-29", "2026-11-28T23:00:00-06:00", "2026-11-29T01:00:00-06:00", 120, 120, map[string]float64{"light": 120}},
			{"2026-11-29", "2026-11-29T02:01:00-06:00", "2026-11-29T03:01:00-06:00", 60, 60, map[string]float64{"deep": 60}},
		},
	}, {
		name: "a night in bed with stages inside: counted on the wake-up day, in bed once",
		samples: []pulsebase.Sample{
			stage("in_bed", "2026-11-28T22:30:00-06:00", "2026-11-29T06:30:00-06:00"),
			stage("light", "2026-11-28T23:00:00-06:00", "2026-11-29T01:00:00-06:00"),
			stage("deep", "2026-11-29T01:00:00-06:00", "2026-11-29T02:00:00-06:00"),
			stage("awake", "2026-11-29T02:00:00-06:00", "2026-11-29T02:15:00-06:00"),
			stage("rem", "2026-11-29T02:15:00-06:00", "2026-11-29T03:00:00-06:00"),
			stage("light", "2026-11-29T03:00:00-06:00", "2026-11-29T06:00:00-06:00"),
		},
		want: []want{{"2026-11-29", "2026-11-28T22:30:00-06:00", "2026-11-29T06:30:00-06:00", 480, 405,
			map[string]float64{"in_bed": 480, "light": 300, "deep": 60, "awake": 15, "rem": 45}}},
	}, {
		name: "a 30-minute hole is not time in bed",
		samples: []pulsebase.Sample{
			stage("light", "2026-11-28T23:00:00-06:00", "2026-11-29T01:00:00-06:00"),
			stage("rem", "2026-11-29T01:30:00-06:00", "2026-11-29T02:00:00-06:00"),
		},
		want: []want{{"2026-11-29", "2026-11-28T23:00:00-06:00", "2026-11-29T02:00:00-06:00", 150, 150, map[string]float64{"light": 120, "rem": 30}}},
	}, {
		name:    "ending at midnight: the day that ends",
		samples: []pulsebase.Sample{stage("light", "2026-11-28T22:00:00-06:00", "2026-11-29T00:00:00-06:00")},
		want:    []want{{"2026-11-28", "2026-11-28T22:00:00-06:00", "2026-11-29T00:00:00-06:00", 120, 120, map[string]float64{"light": 120}}},
	}, {
		name: "a phone's in-bed night loses to a ring's stages; its nap stays",
		samples: []pulsebase.Sample{
			sample("sleep_stage", 0, "2026-11-28T22:00:00-06:00", "2026-11-29T08:00:00-06:00", "phone"),
			sample("sleep_stage", 2, "2026-11-28T23:00:00-06:00", "2026-11-29T07:00:00-06:00", "ring"),
			sample("sleep_stage", 2, "2026-11-29T14:00:00-06:00", "2026-11-29T14:30:00-06:00", "phone"),
		},
		want: []want{
			{"2026-11-29", "2026-11-28T23:00:00-06:00", "2026-11-29T07:00:00-06:00", 480, 480, map[string]float64{"light": 480}},
			{"2026-11-29", "2026-11-29T14:00:00-06:00", "2026-11-29T14:30:00-06:00", 30, 30, map[string]float64{"light": 30}},
		},
	}, {
		name: "the zone decides the day",
		samples: func() []pulsebase.Sample {
			s := stage("light", "2026-11-29T00:00:00Z", "2026-11-29T05:30:00Z")
			s.Zone = "America/Chicago"
			return []pulsebase.Sample{s}
		}(),
		want: []want{{"2026-11-28", "2026-11-28T18:00:00-06:00", "2026-11-28T23:30:00-06:00", 330, 330, map[string]float64{"light": 330}}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Sessions(tt.samples)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d sessions %+v, want %d", len(got), got, len(tt.want))
			}
			for i, g := range got {
				w := tt.want[i]
				if g.Date != w.date || g.Start.Format(time.RFC3339) != w.start || g.End.Format(time.RFC3339) != w.end ||
					g.InBed.Minutes() != w.inBed || g.Asleep.Minutes() != w.asleep || !near(g.Efficiency, w.asleep/w.inBed) {
					t.Errorf("session %d: got %s %s–%s in bed %v asleep %v eff %v, want %+v", i, g.Date,
						g.Start.Format(time.RFC3339), g.End.Format(time.RFC3339), g.InBed, g.Asleep, g.Efficiency, w)
				}
				stages := make(map[string]float64)
				for l, d := range g.Stages {
					stages[l] = d.Minutes()
				}
				if fmt.Sprint(stages) != fmt.Sprint(w.stages) {
					t.Errorf("session %d stages: got %v, want %v", i, stages, w.stages)
				}
			}
		})
	}
}

func TestDailySleep(t *testing.T) {
	ss := []pulsebase.Sample{
		stage("in_bed", "2026-11-28T22:30:00-06:00", "2026-11-29T06:30:00-06:00"),
		stage("light", "2026-11-28T23:00:00-06:00", "2026-11-29T01:00:00-06:00"),
		stage("deep", "2026-11-29T01:00:00-06:00", "2026-11-29T02:00:00-06:00"),
		stage("awake", "2026-11-29T02:00:00-06:00", "2026-11-29T02:15:00-06:00"),
		stage("rem", "2026-11-29T02:15:00-06:00", "2026-11-29T03:00:00-06:00"),
		stage("light", "2026-11-29T03:00:00-06:00", "2026-11-29T06:00:00-06:00"),
		// A nap of 20 minutes asleep, 10 awake, the same day.
		stage("awake", "2026-11-29T15:00:00-06:00", "2026-11-29T15:10:00-06:00"),
		stage("light", "2026-11-29T15:10:00-06:00", "2026-11-29T15:30:00-06:00"),
	}
	days := DailyMetrics(ss)
	if len(days) != 1 {
		t.Fatalf("got %d days, want 1 (the night counts on the day it ends)", len(days))
	}
	d := days[0]
	checkInt(t, "SleepMinutes", d.SleepMinutes, 405+20)
	checkFloat(t, "SleepEfficiency", d.SleepEfficiency, 425.0/510)
	want := map[string]int{"in_bed": 480, "light": 320, "deep": 60, "awake": 25, "rem": 45}
	if fmt.Sprint(d.SleepStages) != fmt.Sprint(want) {
		t.Errorf("SleepStages: got %v, want %v", d.SleepStages, want)
	}
	// The main session runs 22:30–06:30 (the nap is smaller): its middle is 02:30.
	checkFloat(t, "SleepMidpoint", d.SleepMidpoint, 150)
}

func TestSleepMidpointBeforeMidnight(t *testing.T) {
	d := DailyMetrics([]pulsebase.Sample{stage("light", "2026-11-28T20:00:00-06:00", "2026-11-29T03:00:00-06:00")})[0]
	// 20:00–03:00: the middle is 23:30 the evening before the day the night counts on.
	checkFloat(t, "SleepMidpoint", d.SleepMidpoint, -30)
}

func TestDailySumsLastMean(t *testing.T) {
	ss := []pulsebase.Sample{
		interval("active_energy", 200, "2026-11-28T23:00:00-06:00", "2026-11-29T01:00:00-06:00"),
		interval("distance", 5000, "2026-11-29T10:00:00-06:00", "2026-11-29T11:00:00-06:00"),
		interval("distance", 1500, "2026-11-29T17:00:00-06:00", "2026-11-29T17:30:00-06:00"),
		instant("water", 250, "2026-11-29T09:00:00-06:00"),
		instant("water", 500, "2026-11-29T13:00:00-06:00"),
		instant("body_weight", 70, "2026-11-29T07:00:00-06:00"),
		instant("body_weight", 69.5, "2026-11-29T20:00:00-06:00"),
		sample("body_weight", 71, "2026-11-28T07:00:00-06:00", "2026-11-28T07:00:00-06:00", "scale"),
		sample("body_weight", 70, "2026-11-28T07:00:00-06:00", "2026-11-28T07:00:00-06:00", "app"),
		instant("mood", 3, "2026-11-29T08:00:00-06:00"),
		instant("mood", 5, "2026-11-29T12:00:00-06:00"),
		instant("mood", 4, "2026-11-29T21:00:00-06:00"),
		instant("heart_rate", 60, "2026-11-27T12:00:00-06:00"), // nothing derived: no day
	}
	days := DailyMetrics(ss)
	if len(days) != 2 {
		t.Fatalf("got days %v, want the 28th and the 29th", days)
	}
	d := dayOf(days, "2026-11-29")
	checkFloat(t, "ActiveEnergy", d.ActiveEnergy, 100)
	checkFloat(t, "Distance", d.Distance, 6500)
	checkFloat(t, "Water", d.Water, 750)
	checkFloat(t, "Weight", d.Weight, 69.5)
	checkFloat(t, "Mood", d.Mood, 4)
	d = dayOf(days, "2026-11-28")
	checkFloat(t, "ActiveEnergy on the 28th", d.ActiveEnergy, 100)
	checkFloat(t, "Weight on the 28th", d.Weight, 71)
	if d.Distance != nil || d.Water != nil || d.Mood != nil || d.Steps != nil || d.SleepMinutes != nil ||
		d.RestingHeartRate != nil || d.HRVRMSSD != nil || d.ActiveMinutes != nil || d.SleepStages != nil {
		t.Errorf("the 28th: got %+v, want only ActiveEnergy and Weight", d)
	}
}

// TestZoneChange: a user flies from New York (−05:00) to Paris (+01:00) on Wednesday. Each
// sample's own clock decides its day, so every day has its local total; by UTC days the
// totals would be shifted by 5 or 1 hours.
func TestZoneChange(t *testing.T) {
	type leg struct {
		day, offset, zone string
		from, to          int // local hours [from, to)
	}
	legs := []leg{
		{"2026-01-05", "-05:00", "America/New_York", 0, 24},
		{"2026-01-06", "-05:00", "America/New_York", 0, 24},
		{"2026-01-07", "-05:00", "America/New_York", 0, 12}, // departs 12:00 (17:00Z)
		{"2026-01-08", "+01:00", "Europe/Paris", 2, 24},     // lands 02:00 (01:00Z)
		{"2026-01-09", "+01:00", "Europe/Paris", 0, 24},
		{"2026-01-10", "+01:00", "Europe/Paris", 0, 24},
		{"2026-01-11", "+01:00", "Europe/Paris", 0, 24},
	}
	want := map[string]float64{
		"2026-01-05": 2400, "2026-01-06": 2400, "2026-01-07": 1200, "2026-01-08": 2200,
		"2026-01-09": 2400, "2026-01-10": 2400, "2026-01-11": 2400,
	}
	for _, zoned := range []bool{false, true} {
		t.Run(fmt.Sprintf("zones=%v", zoned), func(t *testing.T) {
			var ss []pulsebase.Sample
			add := func(s pulsebase.Sample, zone string) {
				if zoned {
					// The zone alone must give the same days: send the times in UTC.
					s.Start, s.End, s.Zone = s.Start.UTC(), s.End.UTC(), zone
				}
				ss = append(ss, s)
			}
			for _, l := range legs {
				for h := l.from; h < l.to; h++ {
					from := fmt.Sprintf("%sT%02d:00:00%s", l.day, h, l.offset)
					to := at(from).Add(time.Hour).Format(time.RFC3339)
					add(interval("steps", 100, from, to), l.zone)
				}
			}
			// 23:30 in New York on Tuesday is Wednesday in UTC and in Paris: Tuesday's.
			add(instant("water", 300, "2026-01-06T23:30:00-05:00"), "America/New_York")
			// 00:30 in Paris on Thursday is Wednesday in UTC and in New York: Thursday's.
			add(instant("water", 200, "2026-01-08T00:30:00+01:00"), "Europe/Paris")

			days := DailyMetrics(ss)
			for date, w := range want {
				checkFloat(t, "Steps on "+date, dayOf(days, date).Steps, w)
			}
			checkFloat(t, "Water on Tuesday", dayOf(days, "2026-01-06").Water, 300)
			checkFloat(t, "Water on Thursday", dayOf(days, "2026-01-08").Water, 200)
			if d := dayOf(days, "2026-01-07"); d.Water != nil {
				t.Errorf("Water on Wednesday: got %v, want absent", *d.Water)
			}

			series := toPts(Buckets(ss, "steps", Day))
			wantSeries := []pt{
				{"2026-01-05T00:00:00-05:00", 24, 2400, 100, 100, 100, 100, nil},
				{"2026-01-06T00:00:00-05:00", 24, 2400, 100, 100, 100, 100, nil},
				{"2026-01-07T00:00:00-05:00", 12, 1200, 100, 100, 100, 100, nil},
				{"2026-01-08T00:00:00+01:00", 22, 2200, 100, 100, 100, 100, nil},
				{"2026-01-09T00:00:00+01:00", 24, 2400, 100, 100, 100, 100, nil},
				{"2026-01-10T00:00:00+01:00", 24, 2400, 100, 100, 100, 100, nil},
				{"2026-01-11T00:00:00+01:00", 24, 2400, 100, 100, 100, 100, nil},
			}
			if !samePts(series, wantSeries) {
				t.Errorf("day series:\n got %v\nwant %v", series, wantSeries)
			}
		})
	}
}
