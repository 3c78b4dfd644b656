package crdt

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
)

// TestConvergence is the property issue [4] rests on. For several hundred random histories
// of two or three devices, three replicas each receive every op in a different random
// order (each device's ops in its order, the devices interleaved at random, a fifth of
// deliveries followed by a duplicate of an earlier op), with a partition part way through.
// Then:
//
//   - every replica, and every device's own replica once it has synced the rest, has the
//     same View and the same MarshalBinary;
//   - that View is the model's (the rules applied directly to the set of ops), at the
//     partition as well as at the end;
//   - merging the replicas' states at the partition gives what applying the union of their
//     ops gives, in any grouping and order, and merging is idempotent;
//   - applying the rest of the ops to a merged state ends at the same document;
//   - every state survives MarshalBinary and UnmarshalBinary unchanged.
func TestConvergence(t *testing.T) {
	const seeds, groups = 300, 4
	var tombstones, expired, ties atomic.Int64 // how often the histories exercised the hard cases
	t.Run("seeds", func(t *testing.T) {
		for g := range uint64(groups) {
			t.Run(fmt.Sprint(g), func(t *testing.T) {
				t.Parallel()
				for seed := g; seed < seeds; seed += groups {
					a, b, c := convergence(t, seed)
					tombstones.Add(a)
					expired.Add(b)
					ties.Add(c)
				}
			})
		}
	})
	// The histories must reach the cases that are easy to get wrong, or this test proves
	// little.
	if tombstones.Load() < seeds/4 || expired.Load() < seeds/10 || ties.Load() < 1 {
		t.Errorf("histories too tame: %d replicas with tombstones, %d histories with expired days, %d LWW wall ties",
			tombstones.Load(), expired.Load(), ties.Load())
	}
}

// convergence checks one history and returns how many replicas had tombstones at the
// partition, whether counter days expired, and how many set ops tied on wall time.
func convergence(t *testing.T, seed uint64) (tombstones, expired, ties int64) {
	r := rand.New(rand.NewPCG(seed, 4))
	h := generate(r)
	n := len(h.logs)
	full := make([]int, n)
	zero := make([]int, n)
	for j := range h.logs {
		full[j] = len(h.logs[j])
	}
	want := model(union(h.logs, full))

	const replicas = 3
	var final []byte
	cuts := make([][]int, replicas)
	parts := make([]*Document, replicas)
	for i := range replicas {
		d := New()
		cuts[i] = make([]int, n)
		for j := range cuts[i] {
			cuts[i][j] = r.IntN(full[j] + 1)
		}
		deliver(t, r, d, h.logs, zero, cuts[i], 0.2)
		if got, want := viewJSON(t, d), model(union(h.logs, cuts[i])); got != want {
			t.Fatalf("seed %d: replica %d at the partition: got View %s, want %s", seed, i, got, want)
		}
		tombstones += int64(countTombstones(d))
		parts[i] = roundTrip(t, d)
		deliver(t, r, d, h.logs, cuts[i], full, 0.2)
		b := encode(t, d)
		if got := viewJSON(t, d); got != want {
			t.Fatalf("seed %d: replica %d: got View %s, want %s", seed, i, got, want)
		}
		if i == 0 {
			final = b
		} else if !bytes.Equal(b, final) {
			t.Fatalf("seed %d: replica %d encodes differently from replica 0 although both views are %s", seed, i, want)
		}
		roundTrip(t, d)
	}
	for i, local := range h.local {
		deliver(t, r, local, h.logs, h.seen[i], full, 0.1)
		if got := encode(t, local); !bytes.Equal(got, final) {
			t.Fatalf("seed %d: device %s's replica: got View %s, want %s", seed, h.names[i], viewJSON(t, local), want)
		}
	}

	// Merging the states at the partition.
	merge := func(a, b *Document) *Document {
		t.Helper()
		m := roundTrip(t, a)
		if err := m.Merge(b); err != nil {
			t.Fatalf("seed %d: Merge: %v", seed, err)
		}
		return m
	}
	both := make([]int, n)
	for j := range both {
		both[j] = max(cuts[0][j], cuts[1][j])
	}
	applied := New()
	deliver(t, r, applied, h.logs, zero, both, 0)
	m01 := merge(parts[0], parts[1])
	if got, want := encode(t, m01), encode(t, applied); !bytes.Equal(got, want) {
		t.Fatalf("seed %d: merging two replicas: got View %s, want %s (applying the union of their ops)", seed, viewJSON(t, m01), viewJSON(t, applied))
	}
	if got := encode(t, merge(parts[1], parts[0])); !bytes.Equal(got, encode(t, m01)) {
		t.Fatalf("seed %d: Merge is not commutative", seed)
	}
	for _, x := range []*Document{m01, parts[0], parts[1]} {
		if got := encode(t, merge(m01, x)); !bytes.Equal(got, encode(t, m01)) {
			t.Fatalf("seed %d: merging a state into one that holds it changed it", seed)
		}
	}
	left := merge(m01, parts[2])
	right := merge(parts[0], merge(parts[1], parts[2]))
	if !bytes.Equal(encode(t, left), encode(t, right)) {
		t.Fatalf("seed %d: Merge is not associative: %s vs %s", seed, viewJSON(t, left), viewJSON(t, right))
	}
	all := make([]int, n)
	for j := range all {
		all[j] = max(both[j], cuts[2][j])
	}
	deliver(t, r, left, h.logs, all, full, 0.1)
	if got := encode(t, left); !bytes.Equal(got, final) {
		t.Fatalf("seed %d: a merged state that received the rest of the ops: got View %s, want %s", seed, viewJSON(t, left), want)
	}

	ties += int64(countTies(h.logs))
	if latest, earliest := dayRange(h.logs); latest-earliest >= RetainDays {
		expired++
	}
	return tombstones, expired, ties
}

func roundTrip(t testing.TB, d *Document) *Document {
	t.Helper()
	b := encode(t, d)
	c := New()
	if err := c.UnmarshalBinary(b); err != nil {
		t.Fatalf("UnmarshalBinary(MarshalBinary()): %v", err)
	}
	if again := encode(t, c); !bytes.Equal(again, b) {
		t.Fatalf("MarshalBinary after UnmarshalBinary differs")
	}
	if viewJSON(t, c) != viewJSON(t, d) {
		t.Fatalf("View after UnmarshalBinary differs")
	}
	return c
}

func countTombstones(d *Document) int {
	for i := range d.sets {
		for _, es := range d.sets[i] {
			for _, e := range es {
				if e.add == 0 {
					return 1
				}
			}
		}
	}
	return 0
}

// countTies counts set ops of one path made in the same millisecond by different devices.
func countTies(logs [][]Op) int {
	type key struct {
		path string
		wall int64
	}
	by := map[key]string{}
	n := 0
	for _, log := range logs {
		for _, op := range log {
			if op.Kind != KindSet {
				continue
			}
			k := key{op.Path, op.TS.Wall}
			if dev, ok := by[k]; ok && dev != op.TS.Node {
				n++
			}
			by[k] = op.TS.Node
		}
	}
	return n
}

func dayRange(logs [][]Op) (latest, earliest day) {
	earliest = 1 << 30
	for _, log := range logs {
		for _, op := range log {
			if op.Kind == KindIncr {
				p, _ := op.parse()
				latest, earliest = max(latest, p.day), min(earliest, p.day)
			}
		}
	}
	return latest, earliest
}
