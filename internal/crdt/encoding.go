package crdt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
)

// ErrCorrupt is wrapped by every error of UnmarshalBinary: the bytes are not a document
// this package wrote.
var ErrCorrupt = errors.New("crdt: corrupt document")

// formatVersion is the first byte of every encoding; a new layout takes a new version and
// UnmarshalBinary keeps reading the old ones.
const formatVersion = 1

// MarshalBinary encodes d for storage. The encoding is canonical: documents holding the
// same state encode to the same bytes. Layout (version 1; integers are uvarints, strings
// and byte strings a uvarint length and the bytes, devices an index into the device table):
//
//	version byte 1
//	devices:   count, then per device in byte order: name, seen
//	registers: count, then per register set, by field number: field, ts.wall, ts.logical,
//	           device, seq, canonical JSON value
//	sets:      per set field in schema order: count, then per element in byte order:
//	           element, count, then per device in table order: device, add, rem
//	counters:  count, then per day ascending: days since 1970-01-01, count, then per
//	           device in table order: device, p, n
func (d *Document) MarshalBinary() ([]byte, error) {
	names := slices.Sorted(maps.Keys(d.seen))
	index := make(map[string]uint64, len(names))
	b := []byte{formatVersion}
	b = binary.AppendUvarint(b, uint64(len(names)))
	for i, n := range names {
		index[n] = uint64(i)
		b = appendString(b, n)
		b = binary.AppendUvarint(b, d.seen[n])
	}
	regs := 0
	for _, r := range d.regs {
		if r != nil {
			regs++
		}
	}
	b = binary.AppendUvarint(b, uint64(regs))
	for i, r := range d.regs {
		if r == nil {
			continue
		}
		b = binary.AppendUvarint(b, uint64(i))
		b = binary.AppendUvarint(b, uint64(r.ts.Wall))
		b = binary.AppendUvarint(b, uint64(r.ts.Logical))
		b = binary.AppendUvarint(b, index[r.ts.Node])
		b = binary.AppendUvarint(b, r.seq)
		b = appendString(b, string(r.value))
	}
	for i := range d.sets {
		elems := slices.Sorted(maps.Keys(d.sets[i]))
		b = binary.AppendUvarint(b, uint64(len(elems)))
		for _, elem := range elems {
			es := d.sets[i][elem]
			b = appendString(b, elem)
			b = binary.AppendUvarint(b, uint64(len(es)))
			for _, dev := range slices.Sorted(maps.Keys(es)) {
				b = binary.AppendUvarint(b, index[dev])
				b = binary.AppendUvarint(b, es[dev].add)
				b = binary.AppendUvarint(b, es[dev].rem)
			}
		}
	}
	b = binary.AppendUvarint(b, uint64(len(d.days)))
	for _, dd := range slices.Sorted(maps.Keys(d.days)) {
		cs := d.days[dd]
		b = binary.AppendUvarint(b, uint64(dd))
		b = binary.AppendUvarint(b, uint64(len(cs)))
		for _, dev := range slices.Sorted(maps.Keys(cs)) {
			b = binary.AppendUvarint(b, index[dev])
			b = binary.AppendUvarint(b, cs[dev].p)
			b = binary.AppendUvarint(b, cs[dev].n)
		}
	}
	return b, nil
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// UnmarshalBinary replaces d with the document data encodes. It accepts only what
// MarshalBinary writes for a document within the limits: every value is validated as Apply
// would, every invariant of the state checked, and the bytes must be canonical. Any other
// input gives an error wrapping ErrCorrupt, and d is unchanged.
func (d *Document) UnmarshalBinary(data []byte) error {
	m, err := decode(data)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	*d = *m
	return nil
}

func decode(data []byte) (*Document, error) {
	if len(data) > MaxDocumentSize {
		return nil, fmt.Errorf("%d bytes, more than %d", len(data), MaxDocumentSize)
	}
	if len(data) == 0 {
		return nil, errors.New("empty")
	}
	if data[0] != formatVersion {
		return nil, fmt.Errorf("unknown version %d", data[0])
	}
	r := &reader{b: data[1:]}
	m := New()

	names := make([]string, r.count(MaxDevices))
	for i := range names {
		names[i] = r.string(MaxDeviceLen)
		if r.err == nil && !validDevice(names[i]) {
			r.fail("bad device id")
		}
		if _, dup := m.seen[names[i]]; dup {
			r.fail("device listed twice")
		}
		m.seen[names[i]] = r.seq(0)
	}
	device := func() string {
		i := r.uvarint()
		if r.err != nil || i >= uint64(len(names)) {
			r.fail("device index out of range")
			return ""
		}
		return names[i]
	}

	for range r.count(len(scalars)) {
		i := r.uvarint()
		if r.err != nil || i >= uint64(len(scalars)) || m.regs[i] != nil {
			return nil, errors.Join(r.err, errors.New("bad register field"))
		}
		wall, logical, dev := r.uvarint(), r.uvarint(), device()
		seq, value := r.seq(1), r.string(MaxOpSize)
		if r.err != nil {
			return nil, r.err
		}
		if wall < uint64(minWall) || wall >= uint64(maxWall) || logical > math.MaxUint32 || seq > m.seen[dev] {
			return nil, errors.New("bad register timestamp or seq")
		}
		f := &scalars[i]
		if c, err := f.canonical([]byte(value)); err != nil || !bytes.Equal(c, []byte(value)) {
			return nil, fmt.Errorf("bad value for %s", f.path)
		}
		m.regs[i] = &lww{ts: Timestamp{Wall: int64(wall), Logical: uint32(logical), Node: dev}, seq: seq, value: []byte(value)}
	}

	for i := range sets {
		f := &sets[i]
		for range r.count(MaxFavourites + MaxTombstones) {
			elem := r.string(4 * MaxActivityLen)
			if r.err != nil {
				return nil, r.err
			}
			if err := f.check(elem); err != nil || m.sets[i][elem] != nil {
				return nil, fmt.Errorf("bad element of %s", f.path)
			}
			es := map[string]entry{}
			m.sets[i][elem] = es
			for range r.count(MaxDevices) {
				dev, add, rem := device(), r.seq(0), r.seq(0)
				if r.err != nil {
					return nil, r.err
				}
				// Live entries are adds this document applied; tombstones wait for seqs
				// it has not reached.
				if add > 0 && (rem != 0 || add > m.seen[dev]) || add == 0 && rem <= m.seen[dev] {
					return nil, fmt.Errorf("bad entry in %s", f.path)
				}
				es[dev] = entry{add: add, rem: rem}
			}
		}
	}

	for range r.count(RetainDays) {
		dd := r.uvarint()
		if r.err != nil {
			return nil, r.err
		}
		if dd < uint64(dayOf(minWall)-daysBack) || dd > uint64(dayOf(maxWall)+daysAhead) || m.days[day(dd)] != nil {
			return nil, errors.New("bad counter day")
		}
		cs := map[string]pn{}
		m.days[day(dd)] = cs
		for range r.count(MaxDevices) {
			dev, p, n := device(), r.uvarint(), r.uvarint()
			if r.err != nil {
				return nil, r.err
			}
			if m.seen[dev] == 0 || p > MaxCount || n > MaxCount || p == 0 && n == 0 {
				return nil, errors.New("bad counter")
			}
			cs[dev] = pn{p: p, n: n}
		}
	}
	if r.err != nil {
		return nil, r.err
	}
	if len(r.b) > 0 {
		return nil, errors.New("data after the document")
	}
	if err := m.checkLimits(); err != nil {
		return nil, err
	}
	// Whatever the checks above let through, a state in any but its canonical form (out of
	// order, an empty map, an expired day, a device nothing names) is not one this package
	// wrote.
	m.normalize()
	if again, _ := m.MarshalBinary(); !bytes.Equal(again, data) {
		return nil, errors.New("not in canonical form")
	}
	return m, nil
}

// reader reads the binary encoding; the first error sticks and later reads return zeros.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(msg string) {
	if r.err == nil {
		r.err = errors.New(msg)
	}
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("bad varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

// seq reads a seq of at least min, at most MaxSeq.
func (r *reader) seq(min uint64) uint64 {
	v := r.uvarint()
	if v < min || v > MaxSeq {
		r.fail("seq out of range")
		return 0
	}
	return v
}

// count reads the length of a list of at most max items; each item takes a byte at least,
// so a count beyond the bytes left is corrupt too (and allocates nothing).
func (r *reader) count(max int) int {
	v := r.uvarint()
	if v > uint64(max) || v > uint64(len(r.b)) {
		r.fail("count out of range")
		return 0
	}
	return int(v)
}

func (r *reader) string(max int) string {
	n := r.uvarint()
	if n > uint64(max) || n > uint64(len(r.b)) {
		r.fail("string length out of range")
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}
