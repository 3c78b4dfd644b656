package crdt

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"testing"

	"github.com/pulsebase/pulsebase"
)

// FuzzUnmarshalBinary checks that UnmarshalBinary never panics, refuses with ErrCorrupt
// and without touching the document, and that whatever it accepts is a document every
// other method takes: it re-encodes to the same bytes, shows, merges and applies. Its seeds
// run with plain go test.
func FuzzUnmarshalBinary(f *testing.F) {
	base := sample(f)
	good := encode(f, base)
	f.Add(good)
	f.Add(encode(f, New()))
	f.Add(good[:len(good)/2])
	f.Add([]byte{})
	f.Add([]byte{formatVersion})
	f.Add([]byte{formatVersion, 0, 0, 0, 0, 0})
	f.Add([]byte{formatVersion, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Add([]byte{2, 0, 0, 0, 0, 0})
	f.Add(append(bytes.Clone(good), 0))

	f.Fuzz(func(t *testing.T, data []byte) {
		d := New()
		if err := d.UnmarshalBinary(data); err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("got %v, want an error wrapping ErrCorrupt", err)
			}
			if b := encode(t, d); !bytes.Equal(b, encode(t, New())) {
				t.Fatal("a refused input changed the document")
			}
			return
		}
		if b := encode(t, d); !bytes.Equal(b, data) {
			t.Fatal("accepted bytes that are not the document's encoding")
		}
		viewJSON(t, d)
		if err := d.Merge(base); err != nil && codeOf(t, err) != pulsebase.ETOOLARGE {
			t.Fatalf("Merge: %v", err)
		}
		roundTrip(t, d)
		op := newAuthor("fuzz").op(t0, KindAdd, "enabled_nudges", "bedtime", nil)
		if _, err := d.Apply(op); err != nil && codeOf(t, err) != pulsebase.ETOOLARGE {
			t.Fatalf("Apply: %v", err)
		}
		roundTrip(t, d)
	})
}

// FuzzApplyOp checks that decoding and applying any op never panics; that a refused op
// carries one of the package's codes and leaves the document exactly as it was; and that
// an accepted op is idempotent and leaves a document that survives encoding.
func FuzzApplyOp(f *testing.F) {
	base := encode(f, sample(f))
	ts := `"ts":{"wall":1795939200000,"logical":0,"node":"fuzz"}`
	for _, s := range []string{
		`{"id":"fuzz:1",` + ts + `,"kind":"set","path":"goals.steps","value":8000}`,
		`{"id":"fuzz:1",` + ts + `,"kind":"set","path":"goals.water_ml","value":null}`,
		`{"id":"fuzz:1",` + ts + `,"kind":"set","path":"units","value":"imperial"}`,
		`{"id":"fuzz:1",` + ts + `,"kind":"set","path":"time_zone","value":"Asia/Kolkata"}`,
		`{"id":"fuzz:1",` + ts + `,"kind":"set","path":"quiet_hours","value":{"start":"22:00","end":"07:00"}}`,
		`{"id":"fuzz:1",` + ts + `,"kind":"add","path":"enabled_nudges","value":"hydration"}`,
		`{"id":"fuzz:1",` + ts + `,"kind":"add","path":"favourite_activities","value":"Yoga"}`,
		`{"id":"fuzz:2",` + ts + `,"kind":"remove","path":"favourite_activities","value":"Yoga","observed":{"phone":3,"fuzz":1}}`,
		`{"id":"fuzz:2",` + ts + `,"kind":"remove","path":"enabled_nudges","value":"bedtime","observed":{"watch":999}}`,
		`{"id":"fuzz:1",` + ts + `,"kind":"incr","path":"water_glasses.2026-11-29","value":-20}`,
		`{"id":"phone:1",` + ts + `,"kind":"set","path":"goals.steps","value":1}`,
		`{"id":"fuzz:1",` + ts + `,"kind":"set","path":"goals.steps","value":1e400}`,
		`{"id":"fuzz:1",` + ts + `,"kind":"set","path":"goals.steps","value":[[[[[[[[[[[[[[]]]]]]]]]]]]]]}`,
		`{"id":"fuzz:1",` + ts + `,"kind":"add","path":"favourite_activities","value":"\ud800x"}`,
		`{"id":"fuzz:1",` + ts + `,"kind":"add","path":"favourite_activities","value":"\u0000"}`,
		`{"id":"fuzz:01",` + ts + `,"kind":"incr","path":"water_glasses.2026-02-29","value":1}`,
		`{"id":"fuzz:1",` + ts + `,"kind":"incr","path":"water_glasses.9999-12-31","value":1}`,
		`{"id":"fuzz:1","ts":{"wall":-1,"logical":0,"node":"fuzz"},"kind":"set","path":"units","value":"metric"}`,
		`{"id":"fuzz:1",` + ts + `,"kind":"set","path":"units","value":"metric","value":"imperial"}`,
		"{\"id\":\"fuzz:1\"," + ts + ",\"kind\":\"add\",\"path\":\"favourite_activities\",\"value\":\"Yo\xffga\"}",
		`{}`, `null`, `[]`, `"set"`, ``,
	} {
		f.Add([]byte(s))
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		op, err := DecodeOp(data)
		if err != nil {
			if code := codeOf(t, err); !slices.Contains(knownCodes, code) {
				t.Fatalf("DecodeOp: got code %s, want one of %v", code, knownCodes)
			}
			return
		}
		d := New()
		if err := d.UnmarshalBinary(base); err != nil {
			t.Fatal(err)
		}
		applied, err := d.Apply(op)
		after := encode(t, d)
		if err != nil {
			if code := codeOf(t, err); !slices.Contains(knownCodes, code) {
				t.Fatalf("Apply: got code %s, want one of %v", code, knownCodes)
			}
			if applied || !bytes.Equal(after, base) {
				t.Fatalf("a refused op changed the document (applied=%v)", applied)
			}
			return
		}
		if !applied && !bytes.Equal(after, base) {
			t.Fatal("a duplicate changed the document")
		}
		if again, err := d.Apply(op); again || err != nil {
			t.Fatalf("applying %s again: got %v, %v, want false, nil", op.ID, again, err)
		}
		if !bytes.Equal(encode(t, d), after) {
			t.Fatal("applying an op twice changed the document")
		}
		roundTrip(t, d)
		// The op round-trips through its wire form.
		b, err := json.Marshal(op)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeOp(b); err != nil {
			t.Fatalf("re-decoding %s: %v", b, err)
		}
	})
}
