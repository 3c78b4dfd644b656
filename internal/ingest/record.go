package ingest

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/pulsebase/pulsebase"
)

// The sample record is how a normalized sample is stored (inside its ciphertext) in the
// SAMPLES stream. It is a compact binary encoding, several times cheaper to write and read
// than JSON on the ingest and processing hot paths:
//
//	version byte 1
//	id, type            (uvarint length + bytes each)
//	value               (8 bytes, IEEE 754 big-endian)
//	level, unit, orig_value, orig_unit
//	start, end          (varint Unix seconds, uvarint nanoseconds, varint UTC offset seconds)
//	zone, source, device, subject
//	received            (varint Unix nanoseconds)
//
// Records written before this encoding are JSON objects; DecodeSample reads both.
const recordV1 = 1

// AppendSample appends the record of s to dst.
func AppendSample(dst []byte, s *pulsebase.Sample) []byte {
	dst = append(dst, recordV1)
	dst = appendString(dst, s.ID)
	dst = appendString(dst, s.Type)
	dst = binary.BigEndian.AppendUint64(dst, math.Float64bits(s.Value))
	dst = appendString(dst, s.Level)
	dst = appendString(dst, s.Unit)
	dst = appendString(dst, string(s.OrigValue))
	dst = appendString(dst, s.OrigUnit)
	dst = appendTime(dst, s.Start)
	dst = appendTime(dst, s.End)
	dst = appendString(dst, s.Zone)
	dst = appendString(dst, s.Source)
	dst = appendString(dst, s.Device)
	dst = appendString(dst, s.Subject)
	return binary.AppendVarint(dst, s.Received.UnixNano())
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func appendTime(dst []byte, t time.Time) []byte {
	_, off := t.Zone()
	dst = binary.AppendVarint(dst, t.Unix())
	dst = binary.AppendUvarint(dst, uint64(t.Nanosecond()))
	return binary.AppendVarint(dst, int64(off))
}

// errRecord is returned for a record that is truncated or malformed.
var errRecord = errors.New("malformed sample record")

// DecodeSample reads a record made by AppendSample (or a legacy JSON record).
func DecodeSample(b []byte) (pulsebase.Sample, error) {
	var s pulsebase.Sample
	if len(b) > 0 && b[0] == '{' {
		err := json.Unmarshal(b, &s)
		return s, err
	}
	if len(b) == 0 || b[0] != recordV1 {
		return s, fmt.Errorf("%w: unknown version", errRecord)
	}
	r := recordReader{b: b[1:]}
	s.ID = r.string()
	s.Type = r.string()
	s.Value = math.Float64frombits(r.uint64())
	s.Level = r.string()
	s.Unit = r.string()
	if v := r.string(); v != "" {
		s.OrigValue = json.RawMessage(v)
	}
	s.OrigUnit = r.string()
	s.Start = r.time()
	s.End = r.time()
	s.Zone = r.string()
	s.Source = r.string()
	s.Device = r.string()
	s.Subject = r.string()
	s.Received = time.Unix(0, r.varint()).UTC()
	if r.err != nil {
		return pulsebase.Sample{}, r.err
	}
	if len(r.b) != 0 {
		return pulsebase.Sample{}, fmt.Errorf("%w: %d trailing bytes", errRecord, len(r.b))
	}
	return s, nil
}

// recordReader reads the fields of a record; after the first error every read returns a
// zero value and err stays set.
type recordReader struct {
	b   []byte
	err error
}

func (r *recordReader) fail() {
	if r.err == nil {
		r.err = fmt.Errorf("%w: truncated", errRecord)
	}
	r.b = nil
}

func (r *recordReader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *recordReader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *recordReader) uint64() uint64 {
	if len(r.b) < 8 {
		r.fail()
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *recordReader) string() string {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.fail()
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func (r *recordReader) time() time.Time {
	sec, nsec, off := r.varint(), r.uvarint(), r.varint()
	if nsec >= 1e9 || off <= -24*3600 || off >= 24*3600 {
		r.fail()
		return time.Time{}
	}
	t := time.Unix(sec, int64(nsec))
	if off == 0 {
		return t.UTC()
	}
	return t.In(time.FixedZone("", int(off)))
}
