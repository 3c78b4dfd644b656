package crdt

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
)

// t0 is the time the tests' edits start at.
var t0 = time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC)

// author makes the ops of one device in tests: seqs from 1, timestamps from its own HLC.
type author struct {
	device string
	clock  *HLC
	seq    uint64
}

func newAuthor(device string) *author {
	return &author{device: device, clock: NewHLC(device, 0)}
}

// op returns the device's next op. value is encoded as JSON unless it is already a
// json.RawMessage.
func (a *author) op(wall time.Time, kind Kind, path string, value any, observed map[string]uint64) Op {
	a.seq++
	raw, ok := value.(json.RawMessage)
	if !ok {
		var err error
		if raw, err = json.Marshal(value); err != nil {
			panic(err)
		}
	}
	return Op{
		ID:   a.device + ":" + strconv.FormatUint(a.seq, 10),
		TS:   a.clock.Now(wall),
		Kind: kind, Path: path, Value: raw, Observed: observed,
	}
}

// mustApply applies op and fails the test unless it was new and valid.
func mustApply(t testing.TB, d *Document, op Op) {
	t.Helper()
	applied, err := d.Apply(op)
	if err != nil || !applied {
		t.Fatalf("Apply(%s %s %s %s): got %v, %v, want true, nil", op.ID, op.Kind, op.Path, op.Value, applied, err)
	}
}

func encode(t testing.TB, d *Document) []byte {
	t.Helper()
	b, err := d.MarshalBinary()
	if err != nil {
		t.Fatalf("MarshalBinary: %v", err)
	}
	return b
}

func viewJSON(t testing.TB, d *Document) string {
	t.Helper()
	b, err := json.Marshal(d.View())
	if err != nil {
		t.Fatalf("marshal View: %v", err)
	}
	return string(b)
}

// codeOf returns the code of err, failing unless err is a *pulsebase.Error.
func codeOf(t testing.TB, err error) string {
	t.Helper()
	var perr *pulsebase.Error
	if !errors.As(err, &perr) {
		t.Fatalf("got error %v (%T), want a *pulsebase.Error", err, err)
	}
	return perr.Code
}

// knownCodes are the codes the errors of this package may carry.
var knownCodes = []string{CodeInvalidOp, CodeInvalidPath, CodeInvalidValue, CodeClockSkew, pulsebase.ETOOLARGE}

// A history is what simulated devices did: each device's ops in the order it made them
// (seq order), and the devices' own replicas, to which each op was applied first.
type history struct {
	names []string
	logs  [][]Op
	local []*Document
	seen  [][]int // seen[i][j]: how many of device j's ops device i's replica has applied
}

var activities = []string{"Cycling", "Yoga", "Running", "Swimming", "Climbing", "Rowing", "Tai chi", "Pilates"}

// generate simulates two or three devices editing one profile for a few weeks: each makes
// random ops against its own replica and now and then syncs part of the others' ops into
// it (in each device's order), so that its removes observe some adds and not others.
// Invalid ops (refused by the device's replica, leaving a gap in its seqs) and removes
// naming adds nobody has sent yet are mixed in.
func generate(r *rand.Rand) history {
	n := 2 + r.IntN(2)
	h := history{names: []string{"phone", "watch", "ring"}[:n], logs: make([][]Op, n), seen: make([][]int, n)}
	authors := make([]*author, n)
	offsets := make([]time.Duration, n)
	for i := range n {
		authors[i] = newAuthor(h.names[i])
		h.local = append(h.local, New())
		h.seen[i] = make([]int, n)
		if n == 3 {
			offsets[i] = time.Duration(r.IntN(600)-300) * time.Second // clocks a few minutes apart
		}
	}
	wall := t0.Add(time.Duration(r.IntN(24*60)) * time.Minute)
	for range 20 + r.IntN(80) {
		switch x := r.IntN(10); {
		case x < 2:
			wall = wall.Add(time.Duration(1+r.IntN(4)) * 24 * time.Hour)
		case x < 4:
			wall = wall.Add(time.Duration(1+r.IntN(12)) * time.Hour)
		case x < 7:
			wall = wall.Add(time.Duration(r.IntN(300)) * time.Second)
		default: // no time passes: devices on one clock edit in the same millisecond
		}
		i := r.IntN(n)
		a, local, now := authors[i], h.local[i], wall.Add(offsets[i])
		if r.IntN(3) == 0 { // sync: a further part of each other device's ops
			for j := range n {
				if j == i {
					continue
				}
				k := h.seen[i][j] + r.IntN(len(h.logs[j])-h.seen[i][j]+1)
				for _, op := range h.logs[j][h.seen[i][j]:k] {
					if _, err := a.clock.Observe(op.TS, now); err != nil {
						panic(err)
					}
					if applied, err := local.Apply(op); !applied || err != nil {
						panic(fmt.Sprintf("sync %s: %v %v", op.ID, applied, err))
					}
				}
				h.seen[i][j] = k
			}
		}
		op, valid := randomOp(r, a, local, now, authors)
		applied, err := local.Apply(op)
		if valid != (err == nil) || valid && !applied {
			panic(fmt.Sprintf("device applying its own %s %s %s: %v, %v (valid %v)", op.Kind, op.Path, op.Value, applied, err, valid))
		}
		if valid {
			h.logs[i] = append(h.logs[i], op)
			h.seen[i][i]++
		}
	}
	return h
}

// randomOp returns a random op of a, and whether it is valid.
func randomOp(r *rand.Rand, a *author, local *Document, now time.Time, authors []*author) (Op, bool) {
	switch x := r.IntN(100); {
	case x < 4: // invalid: spends a seq that no replica will ever see
		return a.op(now, KindSet, "goals.steps", 100_001+r.IntN(10), nil), false
	case x < 35:
		i := r.IntN(len(scalars))
		return a.op(now, KindSet, scalars[i].path, randomValue(r, &scalars[i]), nil), true
	case x < 60:
		path, elem := randomElement(r)
		return a.op(now, KindAdd, path, elem, nil), true
	case x < 75:
		path, elem := randomElement(r)
		observed := local.Observed(path, elem)
		if observed == nil || r.IntN(4) == 0 {
			// A remove naming adds this replica has not seen: some other device's next
			// seqs, as if a third replica had seen them.
			observed = map[string]uint64{}
			for range 1 + r.IntN(2) {
				o := authors[r.IntN(len(authors))]
				if o == a {
					if a.seq > 0 {
						observed[o.device] = 1 + uint64(r.IntN(int(a.seq)))
					}
					continue
				}
				observed[o.device] = 1 + uint64(r.IntN(int(o.seq)+3))
			}
			if len(observed) == 0 {
				observed[authors[0].device] = 1
				if a == authors[0] {
					return a.op(now, KindAdd, path, elem, nil), true
				}
			}
		}
		return a.op(now, KindRemove, path, elem, observed), true
	default:
		// The day is the device's date, or one of the days before: within the range an
		// op's ts allows, which may be up to a day past now.
		dd := dayOf(now.UnixMilli()) - day(r.IntN(3))
		if r.IntN(10) == 0 {
			dd = dayOf(now.UnixMilli()) - daysBack + 1
		}
		delta := 1 + r.IntN(3)
		if r.IntN(10) == 0 {
			delta = MaxIncr
		}
		if r.IntN(3) == 0 {
			delta = -delta
		}
		return a.op(now, KindIncr, counterPrefix+dd.String(), delta, nil), true
	}
}

func randomValue(r *rand.Rand, f *scalarField) any {
	if r.IntN(10) == 0 {
		return nil
	}
	switch f.kind {
	case intValue:
		return f.min + r.Int64N(f.max-f.min+1)
	case enumValue:
		return f.enum[r.IntN(len(f.enum))]
	case zoneValue:
		return []string{"UTC", "America/Chicago", "Europe/Paris", "Asia/Kolkata"}[r.IntN(4)]
	default:
		start := r.IntN(24)
		return hours{Start: fmt.Sprintf("%02d:%02d", start, 15*r.IntN(4)), End: fmt.Sprintf("%02d:10", (start+1+r.IntN(23))%24)}
	}
}

func randomElement(r *rand.Rand) (path, elem string) {
	if r.IntN(2) == 0 {
		return sets[0].path, sets[0].allowed[r.IntN(len(sets[0].allowed))]
	}
	return sets[1].path, activities[r.IntN(len(activities))]
}

// deliver applies to d the ops of each device j from from[j] up to to[j], interleaving
// the devices at random but keeping each device's order, and re-delivering already
// delivered ops (dup of the time). It fails the test unless every first delivery is
// applied and every re-delivery is a duplicate that leaves d as it was.
func deliver(t testing.TB, r *rand.Rand, d *Document, logs [][]Op, from, to []int, dup float64) {
	t.Helper()
	pos := slices.Clone(from)
	for {
		var open []int
		for j := range logs {
			if pos[j] < to[j] {
				open = append(open, j)
			}
		}
		if len(open) == 0 {
			return
		}
		j := open[r.IntN(len(open))]
		mustApply(t, d, logs[j][pos[j]])
		pos[j]++
		if r.Float64() < dup {
			k := r.IntN(len(logs))
			if pos[k] == 0 {
				continue
			}
			op := logs[k][r.IntN(pos[k])]
			before := encode(t, d)
			if applied, err := d.Apply(op); applied || err != nil {
				t.Fatalf("re-delivering %s: got %v, %v, want false, nil", op.ID, applied, err)
			}
			if !bytes.Equal(before, encode(t, d)) {
				t.Fatalf("re-delivering %s changed the document", op.ID)
			}
		}
	}
}

// model computes the profile from a set of distinct ops straight from the rules of the
// package documentation, with none of Document's machinery: the greatest set per scalar;
// an element is a member while some add of it is not cancelled by a remove observing its
// seq; a counter day is the sum of its incrs, for the RetainDays ending with the latest
// day any incr names.
func model(ops []Op) string {
	type set struct {
		op  Op
		seq uint64
		v   []byte
	}
	win := map[string]set{}
	type add struct {
		device string
		seq    uint64
	}
	adds := map[string][]add{}                  // path+"\x00"+elem → adds
	removes := map[string][]map[string]uint64{} // path+"\x00"+elem → observed of each remove
	sums := map[day]int64{}
	for _, op := range ops {
		p, err := op.parse()
		if err != nil {
			panic(err)
		}
		switch op.Kind {
		case KindSet:
			s := set{op: op, seq: p.seq, v: p.value}
			w, ok := win[op.Path]
			if !ok || s.op.TS.Compare(w.op.TS) > 0 ||
				s.op.TS.Compare(w.op.TS) == 0 && (s.seq > w.seq || s.seq == w.seq && bytes.Compare(s.v, w.v) > 0) {
				win[op.Path] = s
			}
		case KindAdd:
			adds[op.Path+"\x00"+p.elem] = append(adds[op.Path+"\x00"+p.elem], add{p.device, p.seq})
		case KindRemove:
			removes[op.Path+"\x00"+p.elem] = append(removes[op.Path+"\x00"+p.elem], op.Observed)
		case KindIncr:
			sums[p.day] += p.delta
		}
	}
	goals := map[string]any{}
	v := map[string]any{"goals": goals}
	for path, w := range win {
		if string(w.v) == "null" {
			continue
		}
		var x any
		_ = json.Unmarshal(w.v, &x)
		if name, ok := cutGoal(path); ok {
			goals[name] = x
		} else {
			v[path] = x
		}
	}
	for _, f := range sets {
		members := []string{}
		for key, as := range adds {
			path, elem, _ := bytes.Cut([]byte(key), []byte{0})
			if string(path) != f.path {
				continue
			}
			for _, a := range as {
				cancelled := false
				for _, obs := range removes[key] {
					if obs[a.device] >= a.seq {
						cancelled = true
					}
				}
				if !cancelled {
					members = append(members, string(elem))
					break
				}
			}
		}
		slices.Sort(members)
		v[f.path] = members
	}
	water := map[string]int64{}
	if len(sums) > 0 {
		var latest day
		for dd := range sums {
			latest = max(latest, dd)
		}
		for dd, s := range sums {
			if dd > latest-RetainDays {
				water[dd.String()] = s
			}
		}
	}
	v["water_glasses"] = water
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func cutGoal(path string) (string, bool) {
	const prefix = "goals."
	if len(path) > len(prefix) && path[:len(prefix)] == prefix {
		return path[len(prefix):], true
	}
	return "", false
}

// union returns the ops of logs[j][:to[j]] for every j.
func union(logs [][]Op, to []int) []Op {
	var ops []Op
	for j := range logs {
		ops = append(ops, logs[j][:to[j]]...)
	}
	return ops
}
