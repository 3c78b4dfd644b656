package binread

import (
	"encoding/binary"
	"errors"
	"math"
	"testing"
)

func TestReadsWhatEncodingBinaryWrote(t *testing.T) {
	bad := errors.New("bad")
	var b []byte
	b = binary.AppendUvarint(b, 300)
	b = binary.AppendVarint(b, -7)
	b = append(b, 0xAB)
	b = binary.BigEndian.AppendUint64(b, 1<<40+1)
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(2.5))
	b = binary.AppendUvarint(b, 5)
	b = append(b, "hello"...)
	b = binary.AppendUvarint(b, 2) // a count of 2 items of 1 byte
	b = append(b, 1, 2)
	r := New(b, bad)
	if r.Uvarint() != 300 || r.Varint() != -7 || r.Byte() != 0xAB || r.Uint64BE() != 1<<40+1 || r.Float64LE() != 2.5 ||
		r.Str() != "hello" || r.Count(1) != 2 || string(r.Bytes(2)) != "\x01\x02" || r.Err() != nil || r.Len() != 0 {
		t.Fatalf("misread: err %v", r.Err())
	}
	// Every truncation fails with the caller's error and reads zeros from there on.
	for n := range len(b) {
		r := New(b[:n], bad)
		r.Uvarint()
		r.Varint()
		r.Byte()
		r.Uint64BE()
		r.Float64LE()
		r.Str()
		r.Count(1)
		r.Bytes(2)
		if !errors.Is(r.Err(), bad) {
			t.Errorf("cut at %d of %d: err %v", n, len(b), r.Err())
		}
		if r.Uvarint() != 0 || r.Str() != "" {
			t.Errorf("cut at %d: a read after the failure returned data", n)
		}
	}
	// A count larger than what is left fails at once.
	if r := New(binary.AppendUvarint(nil, 1000), bad); r.Count(1) != 0 || r.Err() == nil {
		t.Error("an impossible count was accepted")
	}
}
