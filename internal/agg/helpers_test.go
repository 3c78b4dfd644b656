package agg

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
)

// at parses an RFC 3339 time, keeping its offset.
func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

// sample builds a normalized sample of typ from start to end (end "" for an instant).
func sample(typ string, v float64, start, end, source string) pulsebase.Sample {
	t, ok := pulsebase.LookupType(typ)
	if !ok {
		panic("unknown type " + typ)
	}
	s := pulsebase.Sample{Type: typ, Value: v, Unit: t.Unit, Start: at(start), Source: source}
	s.End = s.Start
	if end != "" {
		s.End = at(end)
	}
	return s
}

func instant(typ string, v float64, ts string) pulsebase.Sample {
	return sample(typ, v, ts, "", "dev")
}

func interval(typ string, v float64, start, end string) pulsebase.Sample {
	return sample(typ, v, start, end, "dev")
}

// level builds a categorical sample of typ at the named level.
func level(typ, name, start, end string) pulsebase.Sample {
	t, _ := pulsebase.LookupType(typ)
	for i, l := range t.Levels {
		if l == name {
			s := sample(typ, float64(i), start, end, "dev")
			s.Level = name
			return s
		}
	}
	panic("unknown level " + name)
}

func stage(name, start, end string) pulsebase.Sample { return level("sleep_stage", name, start, end) }

// minutes returns one sample per minute from start, built by f from the minute's start
// and end in RFC 3339 and its index.
func minutes(start string, n int, f func(i int, from, to string) pulsebase.Sample) []pulsebase.Sample {
	t := at(start)
	out := make([]pulsebase.Sample, n)
	for i := range out {
		a, b := t.Add(time.Duration(i)*time.Minute), t.Add(time.Duration(i+1)*time.Minute)
		out[i] = f(i, a.Format(time.RFC3339), b.Format(time.RFC3339))
	}
	return out
}

func withSource(ss []pulsebase.Sample, source string) []pulsebase.Sample {
	for i := range ss {
		ss[i].Source = source
	}
	return ss
}

func cat(parts ...[]pulsebase.Sample) []pulsebase.Sample {
	var out []pulsebase.Sample
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// near reports whether a and b agree to a relative 1e-9 (absolute near zero).
func near(a, b float64) bool {
	return math.Abs(a-b) <= 1e-9*math.Max(1, math.Max(math.Abs(a), math.Abs(b)))
}

func str[T any](p *T) string {
	if p == nil {
		return "nil"
	}
	return fmt.Sprint(*p)
}

// dayOf returns the Daily of date in days, or a zero Daily with that date.
func dayOf(days []Daily, date string) Daily {
	for _, d := range days {
		if d.Date == date {
			return d
		}
	}
	return Daily{Date: date}
}

func checkFloat(t *testing.T, name string, got *float64, want float64) {
	t.Helper()
	if got == nil || !near(*got, want) {
		t.Errorf("%s: got %s, want %v", name, str(got), want)
	}
}

func checkInt(t *testing.T, name string, got *int, want int) {
	t.Helper()
	if got == nil || *got != want {
		t.Errorf("%s: got %s, want %d", name, str(got), want)
	}
}
