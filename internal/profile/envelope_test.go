package profile

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/pulsebase/pulsebase/internal/crdt"
)

// FuzzDecodeStored feeds arbitrary plaintexts to decodeStored: it never panics, and what
// it accepts encodes back to a plaintext it reads the same way.
func FuzzDecodeStored(f *testing.F) {
	doc := crdt.New()
	op := crdt.Op{ID: "watch:1", TS: crdt.Timestamp{Wall: 1795939200000, Node: "watch"}, Kind: "set", Path: "goals.steps",
		Value: json.RawMessage("8000")}
	if _, err := doc.Apply(op); err != nil {
		f.Fatal(err)
	}
	bare, err := doc.MarshalBinary()
	if err != nil {
		f.Fatal(err)
	}
	env, err := encodeStored(doc, []crdt.Op{op})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(bare)
	f.Add(env)
	f.Add([]byte{envelopeFormat})
	f.Add([]byte{envelopeFormat, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, pt []byte) {
		d, ops, err := decodeStored(pt)
		if err != nil {
			return
		}
		again, err := encodeStored(d, ops)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		d2, ops2, err := decodeStored(again)
		if err != nil {
			t.Fatalf("decode the re-encoding: %v", err)
		}
		b1, _ := d.MarshalBinary()
		b2, _ := d2.MarshalBinary()
		if !slices.Equal(b1, b2) || len(ops) != len(ops2) {
			t.Errorf("the re-encoding reads differently: %d ops, %d ops", len(ops), len(ops2))
		}
	})
}
