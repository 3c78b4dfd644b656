package window

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/binread"
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

// Decode reads a State written by Encode.
func Decode(b []byte) (*State, error) {
	if len(b) == 0 || b[0] != encodingVersion {
		return nil, fmt.Errorf("decode window state: %w: unknown version", ErrCorrupt)
	}
	r := binread.New(b[1:], ErrCorrupt)
	s := &State{ids: make(map[uint64]int64), series: make(map[string]*series)}
	s.horizon = time.Duration(r.Varint())
	s.minuteHorizon = time.Duration(r.Varint())
	s.watermark = r.Varint()
	if r.Err() == nil && (s.horizon <= 0 || s.minuteHorizon <= 0 || s.minuteHorizon > s.horizon) {
		r.Fail()
	}
	for range r.Count(9) {
		fp := r.Uint64LE()
		s.ids[fp] = s.watermark + r.Varint()
	}
	for range r.Count(2) {
		n := r.Count(1)
		if r.Err() != nil {
			break
		}
		name := string(r.Bytes(uint64(n)))
		t, ok := pulsebase.LookupType(name)
		if !ok || s.series[name] != nil {
			r.Fail()
			break
		}
		sr := &series{typ: t}
		s.series[name] = sr
		for i, res := range resolutions {
			sr.buckets[i] = make(map[int64]*acc)
			prev := s.watermark
			for range r.Count(5) {
				a := &acc{}
				a.start = prev + r.Varint()
				prev = a.start
				a.end = a.start + r.Varint()
				a.off = int32(r.Varint())
				a.count = r.Varint()
				if t.Shape == pulsebase.ShapeCategorical {
					a.levels = r.Byte()
					if a.levels>>len(t.Levels) != 0 {
						r.Fail()
					}
					a.minutes = make([]float64, len(t.Levels))
					for l := range a.minutes {
						if a.levels&(1<<l) != 0 {
							a.minutes[l] = math.Float64frombits(r.Uint64LE())
						}
					}
				} else {
					a.sum = math.Float64frombits(r.Uint64LE())
					a.min = math.Float64frombits(r.Uint64LE())
					a.max = math.Float64frombits(r.Uint64LE())
					a.last = math.Float64frombits(r.Uint64LE())
					a.lastStart = a.start + r.Varint()
					a.lastEnd = a.lastStart + r.Varint()
				}
				if r.Err() != nil {
					break
				}
				if a.off < -24*3600 || a.off > 24*3600 {
					r.Fail()
					break
				}
				k := key(time.Unix(0, a.start).In(fixedZone(int(a.off))), res)
				if _, dup := sr.buckets[i][k]; dup {
					r.Fail()
					break
				}
				sr.buckets[i][k] = a
			}
		}
	}
	if r.Err() == nil && r.Len() != 0 {
		r.Fail()
	}
	if r.Err() != nil {
		return nil, fmt.Errorf("decode window state: %w", r.Err())
	}
	return s, nil
}
