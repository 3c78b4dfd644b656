package crdt

import (
	"math"
	"sync"
	"testing"
	"time"
)

func ms(n int64) time.Time { return time.UnixMilli(n) }

func TestTimestampCompare(t *testing.T) {
	tests := []struct {
		a, b Timestamp
		want int
	}{
		{Timestamp{1, 0, "a"}, Timestamp{1, 0, "a"}, 0},
		{Timestamp{1, 9, "z"}, Timestamp{2, 0, "a"}, -1}, // wall first
		{Timestamp{2, 0, "z"}, Timestamp{2, 1, "a"}, -1}, // then logical
		{Timestamp{2, 1, "b"}, Timestamp{2, 1, "a"}, 1},  // then node
		{Timestamp{2, 1, "a"}, Timestamp{2, 1, "ab"}, -1},
	}
	for _, tt := range tests {
		if got := tt.a.Compare(tt.b); got != tt.want {
			t.Errorf("%v.Compare(%v): got %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := tt.b.Compare(tt.a); got != -tt.want {
			t.Errorf("%v.Compare(%v): got %d, want %d", tt.b, tt.a, got, -tt.want)
		}
	}
}

// TestHLCNow: readings follow physical time when it moves forward and never go backwards
// when it does not.
func TestHLCNow(t *testing.T) {
	c := NewHLC("a", 0)
	steps := []struct {
		wall int64
		want Timestamp
	}{
		{1000, Timestamp{1000, 0, "a"}},
		{1000, Timestamp{1000, 1, "a"}}, // same millisecond
		{999, Timestamp{1000, 2, "a"}},  // physical clock stepped back
		{500, Timestamp{1000, 3, "a"}},
		{1001, Timestamp{1001, 0, "a"}}, // caught up
	}
	for i, s := range steps {
		if got := c.Now(ms(s.wall)); got != s.want {
			t.Errorf("step %d: Now(%d): got %v, want %v", i, s.wall, got, s.want)
		}
	}
}

// TestHLCObserve walks through the cases of the paper's receive rule.
func TestHLCObserve(t *testing.T) {
	tests := []struct {
		name   string
		local  Timestamp // the clock's last reading
		remote Timestamp
		wall   int64
		want   Timestamp
	}{
		{"physical time ahead of both", Timestamp{100, 5, "a"}, Timestamp{200, 7, "b"}, 300, Timestamp{300, 0, "a"}},
		{"remote ahead", Timestamp{100, 5, "a"}, Timestamp{200, 7, "b"}, 150, Timestamp{200, 8, "a"}},
		{"local ahead", Timestamp{250, 5, "a"}, Timestamp{200, 7, "b"}, 150, Timestamp{250, 6, "a"}},
		{"same wall, remote logical larger", Timestamp{200, 5, "a"}, Timestamp{200, 7, "b"}, 150, Timestamp{200, 8, "a"}},
		{"same wall, local logical larger", Timestamp{200, 9, "a"}, Timestamp{200, 7, "b"}, 150, Timestamp{200, 10, "a"}},
		{"remote logical at its maximum", Timestamp{100, 0, "a"}, Timestamp{200, math.MaxUint32, "b"}, 150, Timestamp{201, 0, "a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &HLC{node: "a", maxSkew: time.Hour.Milliseconds(), wall: tt.local.Wall, logical: tt.local.Logical}
			got, err := c.Observe(tt.remote, ms(tt.wall))
			if err != nil {
				t.Fatalf("Observe: %v", err)
			}
			if got != tt.want {
				t.Fatalf("Observe(%v) at %d: got %v, want %v", tt.remote, tt.wall, got, tt.want)
			}
			if got.Compare(tt.remote) <= 0 || got.Compare(tt.local) <= 0 {
				t.Fatalf("Observe: %v is not after both %v and %v", got, tt.remote, tt.local)
			}
			if next := c.Now(ms(tt.wall)); next.Compare(got) <= 0 {
				t.Fatalf("Now after Observe: got %v, want after %v", next, got)
			}
		})
	}
}

// TestHLCSkew: a remote reading more than the skew ahead is refused and leaves the clock
// as if it had never been offered; one just inside is taken.
func TestHLCSkew(t *testing.T) {
	const now = 1_800_000_000_000
	c := NewHLC("server", time.Hour)
	c.Now(ms(now))
	for _, remote := range []int64{now + time.Hour.Milliseconds() + 1, now + 1000*time.Hour.Milliseconds(), math.MaxInt64} {
		_, err := c.Observe(Timestamp{Wall: remote, Node: "d"}, ms(now))
		if err == nil || codeOf(t, err) != CodeClockSkew {
			t.Fatalf("Observe(%d) at %d: got %v, want code %s", remote, int64(now), err, CodeClockSkew)
		}
	}
	if got, want := c.Now(ms(now)), (Timestamp{now, 1, "server"}); got != want {
		t.Fatalf("Now after refused readings: got %v, want %v (the clock was poisoned)", got, want)
	}
	edge := now + time.Hour.Milliseconds()
	got, err := c.Observe(Timestamp{Wall: edge, Node: "d"}, ms(now))
	if err != nil || got != (Timestamp{edge, 1, "server"}) {
		t.Fatalf("Observe(%d) at %d: got %v, %v, want %v", edge, int64(now), got, err, Timestamp{edge, 1, "server"})
	}
}

// TestHLCOverflow: a logical part at its maximum carries into the wall rather than wrapping.
func TestHLCOverflow(t *testing.T) {
	c := &HLC{node: "a", maxSkew: 1, wall: 500, logical: math.MaxUint32}
	if got, want := c.Now(ms(400)), (Timestamp{501, 0, "a"}); got != want {
		t.Fatalf("Now: got %v, want %v", got, want)
	}
}

// TestHLCConcurrent: readings taken from many goroutines are all distinct and increase
// within each goroutine.
func TestHLCConcurrent(t *testing.T) {
	c := NewHLC("a", 0)
	const workers, each = 8, 500
	got := make([][]Timestamp, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				if i%2 == 0 {
					got[w] = append(got[w], c.Now(ms(1000+int64(i/100))))
				} else {
					ts, err := c.Observe(Timestamp{Wall: 1000 + int64(i%7), Logical: uint32(i), Node: "b"}, ms(1000))
					if err != nil {
						t.Error(err)
						return
					}
					got[w] = append(got[w], ts)
				}
			}
		})
	}
	wg.Wait()
	seen := map[Timestamp]bool{}
	for w := range got {
		for i, ts := range got[w] {
			if seen[ts] {
				t.Fatalf("reading %v returned twice", ts)
			}
			seen[ts] = true
			if i > 0 && ts.Compare(got[w][i-1]) <= 0 {
				t.Fatalf("goroutine %d: reading %v after %v", w, ts, got[w][i-1])
			}
		}
	}
}
