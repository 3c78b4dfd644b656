package crdt

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// sample returns a document with something in every structure, tombstones included.
func sample(t testing.TB) *Document {
	t.Helper()
	for seed := uint64(0); ; seed++ {
		h := generate(rand.New(rand.NewPCG(seed, 9)))
		d := h.local[0]
		if countTombstones(d) > 0 && len(d.days) > 0 && d.regs[6] != nil && len(d.View()["favourite_activities"].([]string)) > 0 {
			return d
		}
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	for _, d := range []*Document{New(), sample(t)} {
		b := encode(t, d)
		if b[0] != formatVersion {
			t.Fatalf("first byte: got %d, want the version %d", b[0], formatVersion)
		}
		c := roundTrip(t, d)
		if again, _ := c.MarshalBinary(); !bytes.Equal(again, b) {
			t.Fatal("round trip changed the encoding")
		}
	}
}

// TestUnmarshalCorrupt: every truncation of a valid encoding, and every other version, is
// refused; every single-bit change is refused or decodes to a valid document whose
// encoding is exactly the changed bytes; the document is never touched on error.
func TestUnmarshalCorrupt(t *testing.T) {
	good := encode(t, sample(t))
	refuse := func(data []byte, what string) {
		t.Helper()
		d := New()
		err := d.UnmarshalBinary(data)
		if err == nil || !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%s: got %v, want an error wrapping ErrCorrupt", what, err)
		}
		if len(d.seen) != 0 || len(d.days) != 0 {
			t.Fatalf("%s: a refused input changed the document", what)
		}
	}
	for n := range len(good) {
		refuse(good[:n], fmt.Sprintf("truncated to %d of %d bytes", n, len(good)))
	}
	refuse(append(bytes.Clone(good), 0), "a byte appended")
	for _, v := range []byte{0, 2, 255} {
		refuse(append([]byte{v}, good[1:]...), fmt.Sprintf("version %d", v))
	}
	refuse(make([]byte, MaxDocumentSize+1), "too large")
	accepted := 0
	for i := range good {
		for bit := range 8 {
			data := bytes.Clone(good)
			data[i] ^= 1 << bit
			d := New()
			if err := d.UnmarshalBinary(data); err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("byte %d bit %d: got %v, want an error wrapping ErrCorrupt", i, bit, err)
				}
				continue
			}
			accepted++
			if again := encode(t, d); !bytes.Equal(again, data) {
				t.Fatalf("byte %d bit %d: accepted, but encodes differently", i, bit)
			}
			viewJSON(t, d)
		}
	}
	if accepted == 0 {
		t.Fatal("no bit flip decoded: a flipped seq or count should")
	}
}

// TestWorstCaseSize: a document at every limit at once encodes within MaxDocumentSize,
// so that whatever Apply and Merge build can be stored and read back.
func TestWorstCaseSize(t *testing.T) {
	d := New()
	var devices []string
	for i := range MaxDevices {
		dev := fmt.Sprintf("%s%02d", strings.Repeat("d", MaxDeviceLen-2), i)
		devices = append(devices, dev)
		d.seen[dev] = MaxSeq - 1
	}
	for i := range scalars {
		var v string
		switch scalars[i].kind {
		case intValue:
			v = fmt.Sprint(scalars[i].max)
		case enumValue:
			v = `"imperial"`
		case zoneValue:
			v = `"America/Argentina/ComodRivadavia"`
		default:
			v = `{"start":"22:00","end":"07:00"}`
		}
		d.regs[i] = &lww{ts: Timestamp{Wall: maxWall - 1, Logical: 1<<32 - 1, Node: devices[0]}, seq: MaxSeq - 1, value: []byte(v)}
	}
	long := func(i int) string { return fmt.Sprintf("%03d", i) + strings.Repeat("𝄞", MaxActivityLen-3) }
	for _, n := range sets[0].allowed {
		d.sets[0][n] = map[string]entry{}
		for _, dev := range devices {
			d.sets[0][n][dev] = entry{add: MaxSeq - 1}
		}
	}
	for i := range MaxFavourites {
		d.sets[1][long(i)] = map[string]entry{}
		for _, dev := range devices {
			d.sets[1][long(i)][dev] = entry{add: MaxSeq - 1}
		}
	}
	for i := range MaxTombstones {
		d.sets[1][long(100+i)] = map[string]entry{devices[i%MaxDevices]: {rem: MaxSeq}}
	}
	for i := range RetainDays {
		dd := dayOf(maxWall) - day(i)
		d.days[dd] = map[string]pn{}
		for _, dev := range devices {
			d.days[dd][dev] = pn{p: MaxCount, n: MaxCount}
		}
	}
	before := encode(t, d)
	d.normalize()
	if err := d.checkLimits(); err != nil {
		t.Fatalf("the worst case is over a limit: %v", err)
	}
	b := encode(t, d)
	if !bytes.Equal(b, before) {
		t.Fatal("the worst case is not in canonical form")
	}
	if len(b) > MaxDocumentSize {
		t.Fatalf("worst case: %d bytes, more than MaxDocumentSize %d", len(b), MaxDocumentSize)
	}
	t.Logf("worst case: %d bytes", len(b))
	roundTrip(t, d)
}
