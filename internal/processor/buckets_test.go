package processor

import (
	"reflect"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase/internal/agg"
	"github.com/pulsebase/pulsebase/internal/window"
)

func TestBucketRecordRoundTrip(t *testing.T) {
	chicago := time.FixedZone("", -6*3600)
	t0 := time.Date(2026, 11, 29, 8, 0, 0, 0, chicago)
	numeric := []window.Change{
		{Type: "heart_rate", Res: agg.Minute, Point: agg.Point{Start: t0, Count: 3, Sum: 180, Min: 55, Max: 65, Mean: 60, Last: 60},
			LastStart: t0.Add(40 * time.Second), LastEnd: t0.Add(40 * time.Second)},
		{Type: "heart_rate", Res: agg.Minute, Point: agg.Point{Start: t0.Add(time.Minute).UTC(), Count: 1, Sum: 70.25, Min: 70.25, Max: 70.25, Mean: 70.25, Last: 70.25},
			LastStart: t0.Add(70 * time.Second), LastEnd: t0.Add(70 * time.Second)},
	}
	day := []window.Change{{Type: "sleep_stage", Res: agg.Day, Date: "2026-11-29",
		Point: agg.Point{Start: time.Date(2026, 11, 29, 0, 0, 0, 0, chicago), Count: 2, Minutes: map[string]float64{"deep": 42.5, "rem": 10}}}}
	for _, cs := range [][]window.Change{numeric, day} {
		for i := range cs {
			cs[i].Start = cs[i].Point.Start
		}
		got, err := decodeBuckets(appendBuckets(nil, cs))
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(cs) {
			t.Fatalf("got %d buckets, want %d", len(got), len(cs))
		}
		for i := range cs {
			w, g := cs[i], got[i]
			if !g.Start.Equal(w.Start) || g.Start.Format(time.RFC3339) != w.Start.Format(time.RFC3339) || !g.LastStart.Equal(w.LastStart) || !g.LastEnd.Equal(w.LastEnd) {
				t.Errorf("bucket %d: times %v %v %v, want %v %v %v", i, g.Start, g.LastStart, g.LastEnd, w.Start, w.LastStart, w.LastEnd)
			}
			g.Start, g.Point.Start, g.LastStart, g.LastEnd = w.Start, w.Point.Start, w.LastStart, w.LastEnd
			if !reflect.DeepEqual(g, w) {
				t.Errorf("bucket %d: got %+v, want %+v", i, g, w)
			}
		}
	}
	// A truncated record is an error, never a panic or a short list.
	b := appendBuckets(nil, numeric)
	for n := 1; n < len(b); n++ {
		if _, err := decodeBuckets(b[:n]); err == nil {
			t.Errorf("a record cut at %d of %d bytes decoded", n, len(b))
		}
	}
}
