package ingest

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/binread"
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
	r := recordReader{binread.New(b[1:], errTruncated)}
	s.ID = r.Str()
	s.Type = r.Str()
	s.Value = math.Float64frombits(r.Uint64BE())
	s.Level = r.Str()
	s.Unit = r.Str()
	if v := r.Str(); v != "" {
		s.OrigValue = json.RawMessage(v)
	}
	s.OrigUnit = r.Str()
	s.Start = r.time()
	s.End = r.time()
	s.Zone = r.Str()
	s.Source = r.Str()
	s.Device = r.Str()
	s.Subject = r.Str()
	s.Received = time.Unix(0, r.Varint()).UTC()
	if r.Err() != nil {
		return pulsebase.Sample{}, r.Err()
	}
	if r.Len() != 0 {
		return pulsebase.Sample{}, fmt.Errorf("%w: %d trailing bytes", errRecord, r.Len())
	}
	return s, nil
}

// recordReader reads the fields of a record; after the first error every read returns a
// zero value and Err stays set.
type recordReader struct{ *binread.Reader }

// errTruncated is the error of a record that ends early or holds a malformed field.
var errTruncated = fmt.Errorf("%w: truncated", errRecord)

func (r recordReader) time() time.Time {
	sec, nsec, off := r.Varint(), r.Uvarint(), r.Varint()
	if nsec >= 1e9 || off <= -24*3600 || off >= 24*3600 {
		r.Fail()
		return time.Time{}
	}
	t := time.Unix(sec, int64(nsec))
	if off == 0 {
		return t.UTC()
	}
	return t.In(time.FixedZone("", int(off)))
}
