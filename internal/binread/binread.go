// Package binread reads the compact binary layouts Pulsebase writes with encoding/binary —
// sample records (internal/ingest), window checkpoints (internal/window) and bucket records
// (internal/processor): varints, fixed-width integers, bytes and length-prefixed strings.
// A Reader stops at the first short or malformed field: that read and every later one
// return zero values, and Err reports the error the caller chose for malformed input, so
// a decoder reads every field and checks once. It imports only the standard library.
package binread

import (
	"encoding/binary"
	"math"
)

// Reader reads b from the front.
type Reader struct {
	b   []byte
	err error
	bad error
}

// New returns a Reader of b that reports bad once a read runs short or finds a malformed
// field.
func New(b []byte, bad error) *Reader { return &Reader{b: b, bad: bad} }

// Err is nil, or the error given to New after a read failed (or Fail was called).
func (r *Reader) Err() error { return r.err }

// Len is how many bytes are left.
func (r *Reader) Len() int { return len(r.b) }

// Fail marks the input malformed: a check of the caller's found it wrong.
func (r *Reader) Fail() {
	if r.err == nil {
		r.err = r.bad
	}
	r.b = nil
}

// Uvarint reads an unsigned varint.
func (r *Reader) Uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.Fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

// Varint reads a zigzag varint.
func (r *Reader) Varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.Fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

// Byte reads one byte.
func (r *Reader) Byte() byte {
	b := r.Bytes(1)
	if b == nil {
		return 0
	}
	return b[0]
}

// Bytes reads n bytes; they alias the input.
func (r *Reader) Bytes(n uint64) []byte {
	if r.err != nil || n > uint64(len(r.b)) {
		r.Fail()
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// Uint64BE reads 8 bytes, big-endian.
func (r *Reader) Uint64BE() uint64 {
	if b := r.Bytes(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

// Uint64LE reads 8 bytes, little-endian.
func (r *Reader) Uint64LE() uint64 {
	if b := r.Bytes(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

// Float64LE reads a little-endian IEEE 754 float64.
func (r *Reader) Float64LE() float64 { return math.Float64frombits(r.Uint64LE()) }

// Str reads a string after its uvarint length.
func (r *Reader) Str() string { return string(r.Bytes(r.Uvarint())) }

// Count reads a uvarint count of items that each take at least min bytes, and fails when
// that many cannot fit in what is left: corrupt input cannot make a decoder allocate
// without bound.
func (r *Reader) Count(min int) int {
	n := r.Uvarint()
	if r.err == nil && n > uint64(len(r.b)/max(min, 1)) {
		r.Fail()
		return 0
	}
	return int(n)
}
