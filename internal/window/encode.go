package window

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/pulsebase/pulsebase"
)

// encodingVersion is the first byte of Encode's output; Decode refuses others.
const encodingVersion = 1

// ErrCorrupt reports checkpoint bytes Decode cannot read.
var ErrCorrupt = errors.New("window: corrupt checkpoint")

// Encode returns the State as compact bytes for a checkpoint: a version byte, then
// varints and little-endian float64s. Ids are kept as their fingerprints; buckets and ids
// are written in sorted order, so equal States encode to equal bytes.
//
// Layout (v1): version, horizon, minute horizon, watermark; ids: count, then (fingerprint
// u64, keep-until delta from the watermark, zigzag); series: count, then name, and per
// resolution a bucket count and buckets: start delta from the previous bucket (zigzag ns),
// end − start, offset, count, then sum, min, max, last (f64) and last start/end deltas for
// numeric types, or the level mask and the minutes of each level seen for categorical ones.
func (s *State) Encode() []byte {
	b := []byte{encodingVersion}
	b = binary.AppendVarint(b, int64(s.horizon))
	b = binary.AppendVarint(b, int64(s.minuteHorizon))
	b = binary.AppendVarint(b, s.watermark)

	fps := make([]uint64, 0, len(s.ids))
	for fp := range s.ids {
		fps = append(fps, fp)
	}
	slices.Sort(fps)
	b = binary.AppendUvarint(b, uint64(len(fps)))
	for _, fp := range fps {
		b = binary.LittleEndian.AppendUint64(b, fp)
		b = binary.AppendVarint(b, s.ids[fp]-s.watermark)
	}

	names := make([]string, 0, len(s.series))
	for n := range s.series {
		names = append(names, n)
	}
	slices.Sort(names)
	b = binary.AppendUvarint(b, uint64(len(names)))
	for _, n := range names {
		sr := s.series[n]
		b = binary.AppendUvarint(b, uint64(len(n)))
		b = append(b, n...)
		for i := range sr.buckets {
			keys := make([]int64, 0, len(sr.buckets[i]))
			for k := range sr.buckets[i] {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			b = binary.AppendUvarint(b, uint64(len(keys)))
			prev := s.watermark
			for _, k := range keys {
				a := sr.buckets[i][k]
				b = binary.AppendVarint(b, a.start-prev)
				prev = a.start
				b = binary.AppendVarint(b, a.end-a.start)
				b = binary.AppendVarint(b, int64(a.off))
				b = binary.AppendVarint(b, a.count)
				if a.minutes != nil {
					b = append(b, a.levels)
					for l, m := range a.minutes {
						if a.levels&(1<<l) != 0 {
							b = binary.LittleEndian.AppendUint64(b, math.Float64bits(m))
						}
					}
					continue
				}
				for _, f := range [...]float64{a.sum, a.min, a.max, a.last} {
					b = binary.LittleEndian.AppendUint64(b, math.Float64bits(f))
				}
				b = binary.AppendVarint(b, a.lastStart-a.start)
				b = binary.AppendVarint(b, a.lastEnd-a.lastStart)
			}
		}
	}
	return b
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) u64() uint64 {
	if len(r.b) < 8 {
		r.fail()
		return 0
	}
	v := binary.LittleEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) byte() byte {
	if len(r.b) < 1 {
		r.fail()
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

// count reads a length that must fit in what is left (each item takes ≥ min bytes), so
// corrupt input cannot make Decode allocate without bound.
func (r *reader) count(min int) int {
	n := r.uvarint()
	if r.err == nil && n > uint64(len(r.b)/min) {
		r.fail()
		return 0
	}
	return int(n)
}

func (r *reader) fail() {
	if r.err == nil {
		r.err = ErrCorrupt
	}
	r.b = nil
}

// Decode reads a State written by Encode.
func Decode(b []byte) (*State, error) {
	if len(b) == 0 || b[0] != encodingVersion {
		return nil, fmt.Errorf("decode window state: %w: unknown version", ErrCorrupt)
	}
	r := &reader{b: b[1:]}
	s := &State{ids: make(map[uint64]int64), series: make(map[string]*series)}
	s.horizon = time.Duration(r.varint())
	s.minuteHorizon = time.Duration(r.varint())
	s.watermark = r.varint()
	if r.err == nil && (s.horizon <= 0 || s.minuteHorizon <= 0 || s.minuteHorizon > s.horizon) {
		r.fail()
	}
	for range r.count(9) {
		fp := r.u64()
		s.ids[fp] = s.watermark + r.varint()
	}
	for range r.count(2) {
		n := r.count(1)
		if r.err != nil {
			break
		}
		name := string(r.b[:n])
		r.b = r.b[n:]
		t, ok := pulsebase.LookupType(name)
		if !ok || s.series[name] != nil {
			r.fail()
			break
		}
		sr := &series{typ: t}
		s.series[name] = sr
		for i, res := range resolutions {
			sr.buckets[i] = make(map[int64]*acc)
			prev := s.watermark
			for range r.count(5) {
				a := &acc{}
				a.start = prev + r.varint()
				prev = a.start
				a.end = a.start + r.varint()
				a.off = int32(r.varint())
				a.count = r.varint()
				if t.Shape == pulsebase.ShapeCategorical {
					a.levels = r.byte()
					if a.levels>>len(t.Levels) != 0 {
						r.fail()
					}
					a.minutes = make([]float64, len(t.Levels))
					for l := range a.minutes {
						if a.levels&(1<<l) != 0 {
							a.minutes[l] = math.Float64frombits(r.u64())
						}
					}
				} else {
					a.sum = math.Float64frombits(r.u64())
					a.min = math.Float64frombits(r.u64())
					a.max = math.Float64frombits(r.u64())
					a.last = math.Float64frombits(r.u64())
					a.lastStart = a.start + r.varint()
					a.lastEnd = a.lastStart + r.varint()
				}
				if r.err != nil {
					break
				}
				if a.off < -24*3600 || a.off > 24*3600 {
					r.fail()
					break
				}
				k := key(time.Unix(0, a.start).In(fixedZone(int(a.off))), res)
				if _, dup := sr.buckets[i][k]; dup {
					r.fail()
					break
				}
				sr.buckets[i][k] = a
			}
		}
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail()
	}
	if r.err != nil {
		return nil, fmt.Errorf("decode window state: %w", r.err)
	}
	return s, nil
}
