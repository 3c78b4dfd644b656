package ingest

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
)

func randomSample(rng *rand.Rand) pulsebase.Sample {
	str := func(n int) string {
		b := make([]byte, rng.IntN(n))
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		return string(b)
	}
	offsets := []int{0, -6 * 3600, 5*3600 + 1800, 14 * 3600, -12 * 3600}
	at := func() time.Time {
		t := time.Unix(rng.Int64N(4e9)-1e9, rng.Int64N(1e9))
		if off := offsets[rng.IntN(len(offsets))]; off != 0 {
			return t.In(time.FixedZone("", off))
		}
		return t.UTC()
	}
	s := pulsebase.Sample{
		ID: str(40), Type: str(20), Value: rng.NormFloat64() * 1e6, Level: str(8), Unit: str(8),
		OrigUnit: str(8), Start: at(), End: at(), Zone: str(20), Source: str(60), Device: str(20),
		Subject: str(30), Received: time.Unix(0, rng.Int64()).UTC(),
	}
	if v := str(12); v != "" {
		s.OrigValue = json.RawMessage(v) // an empty original value reads back as none
	}
	return s
}

// sameSample compares samples field by field, times as instants with their offsets.
func sameSample(t *testing.T, got, want pulsebase.Sample) {
	t.Helper()
	for _, tt := range []struct {
		name     string
		got, exp time.Time
	}{{"start", got.Start, want.Start}, {"end", got.End, want.End}, {"received", got.Received, want.Received}} {
		_, go1 := tt.got.Zone()
		_, wo := tt.exp.Zone()
		if !tt.got.Equal(tt.exp) || go1 != wo {
			t.Fatalf("%s: got %v, want %v", tt.name, tt.got, tt.exp)
		}
	}
	got.Start, got.End, got.Received = want.Start, want.End, want.Received
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

func TestRecordRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	for i := 0; i < 2000; i++ {
		want := randomSample(rng)
		b := AppendSample(nil, &want)
		got, err := DecodeSample(b)
		if err != nil {
			t.Fatalf("sample %d: %v", i, err)
		}
		sameSample(t, got, want)
		// Every strict prefix is refused, never misread.
		for _, n := range []int{0, 1, len(b) / 2, len(b) - 1} {
			if _, err := DecodeSample(b[:n]); err == nil {
				t.Fatalf("sample %d: a %d-byte prefix of %d decoded", i, n, len(b))
			}
		}
		if _, err := DecodeSample(append(b, 0)); err == nil {
			t.Fatalf("sample %d: trailing bytes were accepted", i)
		}
	}
}

func TestRecordKeepsSpecialValues(t *testing.T) {
	for _, v := range []float64{0, math.Copysign(0, -1), math.MaxFloat64, math.SmallestNonzeroFloat64} {
		s := pulsebase.Sample{Type: "x", Value: v, Start: time.Unix(1, 0).UTC(), End: time.Unix(1, 0).UTC(), Received: time.Unix(0, 5).UTC()}
		got, err := DecodeSample(AppendSample(nil, &s))
		if err != nil || math.Float64bits(got.Value) != math.Float64bits(v) {
			t.Errorf("value %v: got %v, %v", v, got.Value, err)
		}
	}
}

func TestRecordReadsLegacyJSON(t *testing.T) {
	want := pulsebase.Sample{Type: "heart_rate", Value: 61, Unit: "/min", OrigValue: json.RawMessage("61"), OrigUnit: "bpm",
		Start: time.Date(2026, 11, 28, 8, 0, 0, 0, time.FixedZone("", -6*3600)), Source: "watch", Received: time.Unix(100, 0).UTC()}
	want.End = want.Start
	b, err := json.Marshal(&want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeSample(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Type != want.Type || got.Value != want.Value || !got.Start.Equal(want.Start) || got.Source != want.Source {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func FuzzDecodeSample(f *testing.F) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 5; i++ {
		s := randomSample(rng)
		f.Add(AppendSample(nil, &s))
	}
	f.Add([]byte{recordV1})
	f.Add([]byte(`{"type":"steps"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeSample(b)
		if err != nil || (len(b) > 0 && b[0] == '{') {
			return
		}
		// What decodes survives a round trip unchanged (varints may have been written
		// non-minimally, so the bytes themselves may differ).
		again, err := DecodeSample(AppendSample(nil, &s))
		if err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		sameSample(t, again, s)
	})
}

func BenchmarkRecord(b *testing.B) {
	s := pulsebase.Sample{ID: "c0ffee-0001", Type: "heart_rate", Value: 72, Unit: "/min", OrigValue: json.RawMessage("72"), OrigUnit: "bpm",
		Start: time.Now().In(time.FixedZone("", -6*3600)), Source: "watch-1", Device: "watch-1", Subject: "alice@example.com", Received: time.Now().UTC()}
	s.End = s.Start
	b.Run("binary", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			buf = AppendSample(buf[:0], &s)
			if _, err := DecodeSample(buf); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(buf)), "bytes")
	})
	b.Run("json", func(b *testing.B) {
		var n int
		for b.Loop() {
			buf, _ := json.Marshal(&s)
			var out pulsebase.Sample
			if err := json.Unmarshal(buf, &out); err != nil {
				b.Fatal(err)
			}
			n = len(buf)
		}
		b.ReportMetric(float64(n), "bytes")
	})
}
