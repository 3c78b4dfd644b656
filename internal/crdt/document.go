package crdt

import (
	"bytes"
	"maps"
	"math"
	"slices"
	"strings"

	"github.com/pulsebase/pulsebase"
)

// Limits of a document. They bound every structure of the state, so that MaxDocumentSize
// holds for any document Apply or Merge can produce.
const (
	// MaxDevices is the most devices a document remembers: a device that has made an op,
	// or one a pending remove names.
	MaxDevices = 64
	// MaxTombstones is the most removes a document keeps waiting for the adds they
	// cancel (see the package documentation).
	MaxTombstones = 128
	// RetainDays is how many days of counters a document keeps, ending with the latest day
	// it has a counter for.
	RetainDays = 31
	// MaxCount is the most a device may add to, or take from, one day's counter.
	MaxCount = 1_000_000_000
	// MaxSeqJump is how far past the last op of a device the server takes the seq of its
	// next one (CheckIncoming): a device does not make a million ops offline.
	MaxSeqJump = 1 << 20
	// MaxDocumentSize is the largest encoding UnmarshalBinary accepts; the limits above
	// keep every document well below it.
	MaxDocumentSize = 256 << 10
)

// Document is a replica of one user's profile. The zero value is not usable; call New.
// A Document is not safe for concurrent use.
type Document struct {
	// seen is the version vector: for each device, the highest seq of its ops applied
	// here. A device named only by a pending remove's observed is here with 0.
	seen map[string]uint64
	// regs holds the winning set of each scalar, indexed like scalars; nil if none yet.
	// A register is never modified once stored (Merge and clone share them).
	regs [len(scalars)]*lww
	// sets holds, for each set (indexed like sets), element → device → entry.
	sets [len(sets)]map[string]map[string]entry
	// days holds the counters: day → device → counts.
	days map[day]map[string]pn
}

// lww is the state of a register: the winning set op.
type lww struct {
	ts    Timestamp // ts.Node is the device that made the op
	seq   uint64
	value []byte // canonical JSON; null when cleared
}

// after reports whether r wins over o: the later ts, then the larger seq (ts only ties
// between ops of one device, whose HLC never repeats a reading), then the larger value
// (for two ops a buggy device sent under one id, should two states hold one each).
func (r *lww) after(o *lww) bool {
	if c := r.ts.Compare(o.ts); c != 0 {
		return c > 0
	}
	if r.seq != o.seq {
		return r.seq > o.seq
	}
	return bytes.Compare(r.value, o.value) > 0
}

// entry is what a set knows of one device's adds of one element: add is the seq of its
// latest add, rem the highest seq of its adds that a remove cancelled. The device's adds
// are live when add > rem. Stored entries are canonical (see canon): either live {add, 0}
// or a tombstone {0, rem} waiting for the device's ops up to rem. A device with no entry
// for an element has every add of it that this document has seen cancelled: {0, seen}.
type entry struct{ add, rem uint64 }

// canon returns e in canonical form given seen, the device's version, and false if
// nothing needs storing. A live entry's rem is dropped: no future op of the device can
// have a seq at or below it. A dead entry is dropped once seen reaches rem: its adds have
// all arrived, and any later add of the device is newer than the remove.
func (e entry) canon(seen uint64) (entry, bool) {
	switch {
	case e.add > e.rem:
		return entry{add: e.add}, true
	case e.rem > seen:
		return entry{rem: e.rem}, true
	default:
		return entry{}, false
	}
}

// pn is one device's contribution to one day's counter: p added, n taken away.
type pn struct{ p, n uint64 }

// New returns an empty profile.
func New() *Document {
	d := &Document{seen: map[string]uint64{}, days: map[day]map[string]pn{}}
	for i := range d.sets {
		d.sets[i] = map[string]map[string]entry{}
	}
	return d
}

// Seen returns the highest seq of device's ops that d has applied, 0 if none. A device
// that lost its local state continues its ids after Seen of the server's document.
func (d *Document) Seen(device string) uint64 { return d.seen[device] }

// Observed returns what a remove of elem from the set at path must carry as observed:
// for each device whose add keeps elem in the set, the seq of that add. It returns nil if
// elem is not a member (or path not a set).
func (d *Document) Observed(path, elem string) map[string]uint64 {
	i := setIndex(path)
	if i < 0 || len(d.sets[i][elem]) == 0 {
		return nil
	}
	out := map[string]uint64{}
	for dev, e := range d.sets[i][elem] {
		if e.add > 0 {
			out[dev] = e.add
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// Apply applies op to d. It returns applied=true if op was new to d, in which case d has
// changed (if only in remembering op) and must be persisted and op passed on to the other
// replicas; a new op may still change nothing visible, such as a set that loses to a
// later one. An op whose seq is at or below Seen of its device is a duplicate: Apply
// returns false, nil (see the package documentation on delivery order).
//
// Apply returns the errors of Validate, and ETOOLARGE when the op would take d over one
// of its limits. On error d is unchanged.
func (d *Document) Apply(op Op) (applied bool, err error) {
	p, err := op.parse()
	if err != nil {
		return false, err
	}
	if p.seq <= d.seen[p.device] {
		return false, nil
	}
	// Apply to a copy and check the limits on the result: a bad op never touches d. A
	// profile is a few kilobytes and changes a few times a day.
	next := d.clone()
	next.apply(p)
	if err := next.checkLimits(); err != nil {
		return false, err
	}
	*d = *next
	return true, nil
}

func (d *Document) apply(p parsed) {
	switch p.shape {
	case register:
		r := &lww{ts: p.ts, seq: p.seq, value: p.value}
		if cur := d.regs[p.index]; cur == nil || r.after(cur) {
			d.regs[p.index] = r
		}
	case orSet:
		// The entries joined here are read before seen moves to p.seq: a device's missing
		// entry stands for {0, seen} as it was before this op.
		es := d.sets[p.index][p.elem]
		if es == nil {
			es = map[string]entry{}
			d.sets[p.index][p.elem] = es
		}
		if p.kind == KindAdd {
			e := d.entry(p.index, p.elem, p.device)
			e.add = max(e.add, p.seq)
			es[p.device] = e
		} else {
			for dev, s := range p.observed {
				e := d.entry(p.index, p.elem, dev)
				e.rem = max(e.rem, s)
				es[dev] = e
				if _, ok := d.seen[dev]; !ok {
					d.seen[dev] = 0
				}
			}
		}
	case counter:
		// A day older than the days kept is counted here and forgotten by normalize, as it
		// would have been had it arrived before the later days.
		cs := d.days[p.day]
		if cs == nil {
			cs = map[string]pn{}
			d.days[p.day] = cs
		}
		c := cs[p.device]
		if p.delta > 0 {
			c.p += uint64(p.delta)
		} else {
			c.n += uint64(-p.delta)
		}
		cs[p.device] = c
	}
	d.seen[p.device] = p.seq
	d.normalize()
}

// entry returns the entry of device dev for elem in set i, {0, seen} if none is stored.
func (d *Document) entry(i int, elem, dev string) entry {
	if e, ok := d.sets[i][elem][dev]; ok {
		return e
	}
	return entry{rem: d.seen[dev]}
}

// floor returns the oldest day of counters kept; d.days must not be empty.
func (d *Document) floor() day {
	latest := day(math.MinInt32)
	for dd := range d.days {
		latest = max(latest, dd)
	}
	return latest - RetainDays + 1
}

// normalize puts d in canonical form: entries by canon, no empty maps, no counters before
// the floor, no device with seen 0 that no entry names. Two documents that hold the same
// state are then equal field by field, and encode to the same bytes.
func (d *Document) normalize() {
	named := map[string]bool{}
	for i := range d.sets {
		for elem, es := range d.sets[i] {
			for dev, e := range es {
				if c, ok := e.canon(d.seen[dev]); ok {
					es[dev] = c
					named[dev] = true
				} else {
					delete(es, dev)
				}
			}
			if len(es) == 0 {
				delete(d.sets[i], elem)
			}
		}
	}
	if len(d.days) > 0 {
		floor := d.floor()
		for dd := range d.days {
			if dd < floor {
				delete(d.days, dd)
			}
		}
	}
	for dev, s := range d.seen {
		if s == 0 && !named[dev] {
			delete(d.seen, dev)
		}
	}
}

// checkLimits returns ETOOLARGE if d is over one of its limits.
func (d *Document) checkLimits() error {
	if len(d.seen) > MaxDevices {
		return pulsebase.Errorf(pulsebase.ETOOLARGE, "the profile would hold more than %d devices", MaxDevices)
	}
	tombstones := 0
	for i := range d.sets {
		for _, es := range d.sets[i] {
			for _, e := range es {
				if e.add == 0 {
					tombstones++
				}
			}
		}
	}
	if tombstones > MaxTombstones {
		return pulsebase.Errorf(pulsebase.ETOOLARGE, "the profile would hold more than %d removes waiting for their adds", MaxTombstones)
	}
	if n := len(d.members(setIndex("favourite_activities"))); n > MaxFavourites {
		return pulsebase.Errorf(pulsebase.ETOOLARGE, "favourite_activities would hold more than %d activities", MaxFavourites)
	}
	for _, cs := range d.days {
		for _, c := range cs {
			if c.p > MaxCount || c.n > MaxCount {
				return pulsebase.Errorf(pulsebase.ETOOLARGE, "a water_glasses counter would pass %d", MaxCount)
			}
		}
	}
	return nil
}

// CheckIncoming makes the checks only the server can make of an op straight from its
// device, before Apply; it returns CodeInvalidOp if
//
//   - op is a remove whose observed names an add of another device that d has not seen.
//     The server is the hub every op passes before any other replica, so a device can only
//     have observed what the server sent it, or its own earlier ops. Such a remove would
//     cancel that device's future adds of the element until its seqs got there.
//   - op's seq is more than MaxSeqJump past Seen of its device. The device's later ops
//     would all be taken for duplicates of what it has already sent.
//
// Other replicas must not call it: ops reach them in orders where a remove may overtake
// the add it cancels.
func (d *Document) CheckIncoming(op Op) error {
	device, seq, _ := parseID(op.ID) // a bad id is Apply's to refuse
	if seq > d.seen[device]+MaxSeqJump {
		return pulsebase.Errorf(CodeInvalidOp, "the op's seq is more than %d past the device's last op", MaxSeqJump)
	}
	for dev, s := range op.Observed {
		if dev != device && s > d.seen[dev] {
			return pulsebase.Errorf(CodeInvalidOp, "observed names an add the server has not seen")
		}
	}
	return nil
}

// Merge joins other into d: afterwards d is the document that applying every op either
// had applied gives. Merge is commutative, associative and idempotent. It returns
// ETOOLARGE, leaving d unchanged, if the join would be over a limit (say, 50 favourites
// on each side).
//
// Merging relies on each document having applied, of each device's ops, all those up to
// its Seen of the device (see the package documentation on delivery order).
func (d *Document) Merge(other *Document) error {
	m := New()
	for dev, s := range d.seen {
		m.seen[dev] = s
	}
	for dev, s := range other.seen {
		m.seen[dev] = max(m.seen[dev], s)
	}
	for i := range m.regs {
		a, b := d.regs[i], other.regs[i]
		switch {
		case a == nil:
			m.regs[i] = b
		case b == nil || a.after(b):
			m.regs[i] = a
		default:
			m.regs[i] = b
		}
	}
	for i := range m.sets {
		// Every (element, device) either side stores; a side without an entry takes part
		// as {0, its seen}: it saw those adds and no longer has them.
		for _, src := range []*Document{d, other} {
			for elem, es := range src.sets[i] {
				if m.sets[i][elem] == nil {
					m.sets[i][elem] = map[string]entry{}
				}
				for dev := range es {
					a, b := d.entry(i, elem, dev), other.entry(i, elem, dev)
					m.sets[i][elem][dev] = entry{add: max(a.add, b.add), rem: max(a.rem, b.rem)}
				}
			}
		}
	}
	for _, src := range []*Document{d, other} {
		for dd, cs := range src.days {
			if m.days[dd] == nil {
				m.days[dd] = map[string]pn{}
			}
			for dev, c := range cs {
				o := m.days[dd][dev]
				m.days[dd][dev] = pn{p: max(o.p, c.p), n: max(o.n, c.n)}
			}
		}
	}
	m.normalize()
	if err := m.checkLimits(); err != nil {
		return err
	}
	*d = *m
	return nil
}

// View returns the profile as GET /v1/users/{user}/profile shows it:
//
//	{"goals": {"steps": 8000, "sleep_minutes": 480, "active_minutes": 30, "water_ml": 2000},
//	 "units": "metric", "time_zone": "America/Chicago",
//	 "quiet_hours": {"start": "22:00", "end": "07:00"}, "active_hours": {…},
//	 "enabled_nudges": ["bedtime", "hydration"], "favourite_activities": ["Cycling"],
//	 "water_glasses": {"2026-11-29": 3}}
//
// goals, enabled_nudges, favourite_activities and water_glasses are always present
// (possibly empty); a scalar never set, or cleared, is absent. Integers are int64, sets
// []string sorted by byte order, water_glasses a map[string]int64 of every day kept.
func (d *Document) View() map[string]any {
	goals := map[string]any{}
	v := map[string]any{"goals": goals}
	for i := range scalars {
		f, r := &scalars[i], d.regs[i]
		if r == nil || bytes.Equal(r.value, nullJSON) {
			continue
		}
		if name, ok := strings.CutPrefix(f.path, "goals."); ok {
			goals[name] = f.view(r.value)
		} else {
			v[f.path] = f.view(r.value)
		}
	}
	for i := range sets {
		v[sets[i].path] = d.members(i)
	}
	water := map[string]int64{}
	for dd, cs := range d.days {
		var sum int64
		for _, c := range cs {
			sum += int64(c.p) - int64(c.n)
		}
		water[dd.String()] = sum
	}
	v["water_glasses"] = water
	return v
}

// members returns the elements of set i, sorted; never nil.
func (d *Document) members(i int) []string {
	out := []string{}
	for elem, es := range d.sets[i] {
		for _, e := range es {
			if e.add > 0 {
				out = append(out, elem)
				break
			}
		}
	}
	slices.Sort(out)
	return out
}

// clone returns a deep copy of d (registers, which are never modified, are shared).
func (d *Document) clone() *Document {
	c := &Document{seen: maps.Clone(d.seen), regs: d.regs, days: make(map[day]map[string]pn, len(d.days))}
	for i := range d.sets {
		c.sets[i] = make(map[string]map[string]entry, len(d.sets[i]))
		for elem, es := range d.sets[i] {
			c.sets[i][elem] = maps.Clone(es)
		}
	}
	for dd, cs := range d.days {
		c.days[dd] = maps.Clone(cs)
	}
	return c
}
