package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
)

func TestDecodeBatchJSON(t *testing.T) {
	body := `{"samples": [
  {"id": "c0ffee-0001", "type": "heart_rate", "value": 72, "unit": "bpm",
   "start": "2026-11-29T08:00:00-06:00", "source": "watch-1"},
  {"type": "steps", "value": 120, "unit": "count",
   "start": "2026-11-29T08:00:00-06:00", "end": "2026-11-29T08:01:00-06:00", "source": "phone"},
  {"type": "sleep_stage", "value": "deep", "extra": {"ignored": [1, 2, {"x": null}]},
   "start": "2026-11-29T02:00:00-06:00", "end": "2026-11-29T02:20:00-06:00", "source": "ring", "zone": "America/Chicago"}
], "client": "sdk/1.0"}`
	got, err := DecodeBatch("application/json; charset=UTF-8", []byte(body), 10)
	if err != nil {
		t.Fatalf("DecodeBatch: got error %v, want nil", err)
	}
	want := []pulsebase.SampleInput{
		{ID: "c0ffee-0001", Type: "heart_rate", Value: json.RawMessage("72"), Unit: "bpm", Start: "2026-11-29T08:00:00-06:00", Source: "watch-1"},
		{Type: "steps", Value: json.RawMessage("120"), Unit: "count", Start: "2026-11-29T08:00:00-06:00", End: "2026-11-29T08:01:00-06:00", Source: "phone"},
		{Type: "sleep_stage", Value: json.RawMessage(`"deep"`), Start: "2026-11-29T02:00:00-06:00", End: "2026-11-29T02:20:00-06:00", Source: "ring", Zone: "America/Chicago"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("DecodeBatch:\ngot  %+v\nwant %+v", got, want)
	}
	checkAgainstStdlib(t, MediaJSON, []byte(body), got)
}

func TestDecodeBatchNDJSON(t *testing.T) {
	body := "{\"type\":\"heart_rate\",\"value\":60,\"start\":\"2026-11-29T08:00:00Z\",\"source\":\"w\"}\r\n" +
		"\n   \n" +
		"{\"type\":\"mood\",\"value\":4,\"start\":\"2026-11-29T08:00:00Z\",\"source\":\"app\"}"
	got, err := DecodeBatch("application/x-ndjson", []byte(body), 10)
	if err != nil {
		t.Fatalf("DecodeBatch: got error %v, want nil", err)
	}
	if len(got) != 2 || got[0].Type != "heart_rate" || got[1].Type != "mood" || string(got[1].Value) != "4" {
		t.Errorf("DecodeBatch: got %+v, want heart_rate 60 and mood 4", got)
	}
	checkAgainstStdlib(t, MediaNDJSON, []byte(body), got)
}

func TestDecodeBatchAccepts(t *testing.T) {
	// Inputs with the corners of encoding/json's semantics; each must decode as it does.
	for _, body := range []string{
		`{"samples":[{"TYPE":"steps","Value":1,"ſource":"s","\u0073tart":"x"}]}`,         // case folding, escaped key
		`{"SAMPLES":[{"type":null,"value":null}]}`,                                       // null leaves a string field empty
		`{"samples":[{"source":"a\"b\\c\/d\b\f\n\r\t\u00e9\ud83d\ude00\ud800x\udc00"}]}`, // escapes, lone surrogates
		`{"samples":[{"value":[1, {"a" : [true,false,null]}] , "kelvin":1}]}`,
		`{"samples":[{"value":-0.5e+10},{"value":"str"},{"value":{}},{"value":[]}],"x":[]}`,
		` {"x":{"samples":1},"samples":[{}]} ` + "\n",
		`{"samples":[{"id":"","type":"","unit":"é","zone":"Europe/Paris"}]}`,
	} {
		got, err := DecodeBatch(MediaJSON, []byte(body), 0)
		if err != nil {
			t.Errorf("DecodeBatch(%s): got error %v, want nil", body, err)
			continue
		}
		checkAgainstStdlib(t, MediaJSON, []byte(body), got)
	}
}

func TestDecodeBatchErrors(t *testing.T) {
	deep := strings.Repeat("[", 100_000)
	for _, tc := range []struct {
		ctype, body string
		max         int
		code        string
	}{
		{"text/plain", `{"samples":[{}]}`, 10, pulsebase.EUNSUPPORTED},
		{"application/json; charset=latin1", `{"samples":[{}]}`, 10, pulsebase.EUNSUPPORTED},
		{"", `{"samples":[{}]}`, 10, pulsebase.EUNSUPPORTED},
		{"application/json", ``, 10, pulsebase.EINVALID},
		{"application/json", `   `, 10, pulsebase.EINVALID},
		{"application/json", `{"samples":[]}`, 10, pulsebase.EINVALID},
		{"application/json", `{"samples":null}`, 10, pulsebase.EINVALID},
		{"application/json", `{}`, 10, pulsebase.EINVALID},
		{"application/json", `null`, 10, pulsebase.EINVALID},
		{"application/json", `[{"type":"steps"}]`, 10, pulsebase.EINVALID},
		{"application/json", `{"samples":{"type":"steps"}}`, 10, pulsebase.EINVALID},
		{"application/json", `{"samples":[{"type":"steps"}`, 10, pulsebase.EINVALID},
		{"application/json", `{"samples":[{"type":"steps"}]`, 10, pulsebase.EINVALID},
		{"application/json", `{"samples":[{"type":"steps"}]}}`, 10, pulsebase.EINVALID},
		{"application/json", `{"samples":[{"type":"steps"}]} x`, 10, pulsebase.EINVALID},
		{"application/json", `{"samples":[{"type":"st` + "\xff" + `eps"}]}`, 10, pulsebase.EINVALID},
		{"application/json", `{"samples":[{"type":"a` + "\x01" + `"}]}`, 10, pulsebase.EINVALID},
		{"application/json", `{"samples":[{"type":"\x"}]}`, 10, pulsebase.EINVALID},
		{"application/json", `{"samples":[{"type":"\u12"}]}`, 10, pulsebase.EINVALID},
		{"application/json", `{"samples":[{"type":5}]}`, 10, pulsebase.EINVALID},
		{"application/json", `{"samples":[{"type":"a","type":"b"}]}`, 10, pulsebase.EINVALID},
		{"application/json", `{"samples":[{"type":"a","Type":"b"}]}`, 10, pulsebase.EINVALID},
		{"application/json", `{"samples":[{}],"Samples":[{}]}`, 10, pulsebase.EINVALID},
		{"application/json", `{"samples":[null]}`, 10, pulsebase.EINVALID},
		{"application/json", `{"samples":[1]}`, 10, pulsebase.EINVALID},
		{"application/json", `{"samples":[{"value":01}]}`, 10, pulsebase.EINVALID},
		{"application/json", `{"samples":[{"value":1.}]}`, 10, pulsebase.EINVALID},
		{"application/json", `{"samples":[{"value":.5}]}`, 10, pulsebase.EINVALID},
		{"application/json", `{"samples":[{"value":1e}]}`, 10, pulsebase.EINVALID},
		{"application/json", `{"samples":[{"value":NaN}]}`, 10, pulsebase.EINVALID},
		{"application/json", `{"samples":[{"value":tru}]}`, 10, pulsebase.EINVALID},
		{"application/json", `{"samples":[{"value":1,}]}`, 10, pulsebase.EINVALID},
		{"application/json", `{"samples":[{},]}`, 10, pulsebase.EINVALID},
		{"application/json", `{"samples":[{"value":` + deep + `}]}`, 10, pulsebase.EINVALID},
		{"application/json", deep, 10, pulsebase.EINVALID},
		{"application/json", `{"samples":[{},{},{}]}`, 2, pulsebase.ETOOLARGE},
		{"application/x-ndjson", "{}\n{}\n{}\n", 2, pulsebase.ETOOLARGE},
		{"application/x-ndjson", "", 10, pulsebase.EINVALID},
		{"application/x-ndjson", "\n \r\n", 10, pulsebase.EINVALID},
		{"application/x-ndjson", "{}\n{", 10, pulsebase.EINVALID},
		{"application/x-ndjson", "{} {}\n", 10, pulsebase.EINVALID},
		{"application/x-ndjson", "{\n}\n", 10, pulsebase.EINVALID},
		{"application/x-ndjson", "[{}]\n", 10, pulsebase.EINVALID},
		{"application/x-ndjson", "null\n", 10, pulsebase.EINVALID},
	} {
		got, err := DecodeBatch(tc.ctype, []byte(tc.body), tc.max)
		var perr *pulsebase.Error
		if !errors.As(err, &perr) || perr.Code != tc.code {
			name := tc.body
			if len(name) > 60 {
				name = name[:60] + "…"
			}
			t.Errorf("DecodeBatch(%q, %q, %d): got %d samples, error %v; want code %s", tc.ctype, name, tc.max, len(got), err, tc.code)
		}
	}
}

func TestDecodeBatchValuesDoNotAliasBody(t *testing.T) {
	body := []byte(`{"samples":[{"type":"steps","value":123,"source":"a"}]}`)
	got, err := DecodeBatch(MediaJSON, body, 10)
	if err != nil {
		t.Fatal(err)
	}
	for i := range body {
		body[i] = 'x'
	}
	if string(got[0].Value) != "123" || got[0].Source != "a" {
		t.Errorf("after overwriting the body: got value %s source %q, want 123 \"a\"", got[0].Value, got[0].Source)
	}
	if cap(got[0].Value) != len(got[0].Value) {
		t.Errorf("value capacity: got %d, want %d (appending must not clobber the next value)", cap(got[0].Value), len(got[0].Value))
	}
}

// checkAgainstStdlib fails t unless encoding/json decodes body to got.
func checkAgainstStdlib(t testing.TB, media string, body []byte, got []pulsebase.SampleInput) {
	t.Helper()
	var want []pulsebase.SampleInput
	if media == MediaJSON {
		var env struct {
			Samples []pulsebase.SampleInput `json:"samples"`
		}
		if err := json.Unmarshal(body, &env); err != nil {
			t.Fatalf("DecodeBatch accepted %q, encoding/json says %v", body, err)
		}
		want = env.Samples
	} else {
		for line := range bytes.SplitSeq(body, []byte{'\n'}) {
			if len(bytes.TrimSpace(line)) == 0 {
				continue
			}
			var s pulsebase.SampleInput
			if err := json.Unmarshal(line, &s); err != nil {
				t.Fatalf("DecodeBatch accepted %q, encoding/json says %v", body, err)
			}
			want = append(want, s)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("DecodeBatch(%q): got %d samples, encoding/json %d", body, len(got), len(want))
	}
	for i := range got {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Fatalf("DecodeBatch(%q) sample %d:\ngot  %#v\nwant %#v (encoding/json)", body, i, got[i], want[i])
		}
	}
}

// benchBatch is a realistic batch: mostly heart rate and steps from a watch and a phone,
// some sleep, energy, distance, weight in pounds, a few with client ids.
func benchBatch(n int, now time.Time) []byte {
	var b bytes.Buffer
	b.WriteString(`{"samples":[`)
	base := now.Add(-2 * time.Hour).Truncate(time.Minute)
	loc := time.FixedZone("", -6*3600)
	for i := range n {
		if i > 0 {
			b.WriteString(",\n")
		}
		at := base.Add(time.Duration(i) * 10 * time.Second).In(loc)
		start := at.Format(time.RFC3339)
		end := at.Add(time.Minute).Format(time.RFC3339)
		switch i % 10 {
		case 0, 1, 2, 3:
			fmt.Fprintf(&b, `{"type":"heart_rate","value":%d,"unit":"bpm","start":%q,"source":"watch-1"}`, 55+i%40, start)
		case 4, 5:
			fmt.Fprintf(&b, `{"id":"c0ffee-%06d","type":"steps","value":%d,"unit":"count","start":%q,"end":%q,"source":"phone-7f3a"}`, i, i%150, start, end)
		case 6:
			fmt.Fprintf(&b, `{"type":"sleep_stage","value":"deep","start":%q,"end":%q,"source":"ring","zone":"America/Chicago"}`, start, end)
		case 7:
			fmt.Fprintf(&b, `{"type":"active_energy","value":%d.25,"unit":"kJ","start":%q,"end":%q,"source":"watch-1"}`, i%20, start, end)
		case 8:
			fmt.Fprintf(&b, `{"type":"distance","value":0.0%d,"unit":"km","start":%q,"end":%q,"source":"phone-7f3a"}`, i%9+1, start, end)
		case 9:
			fmt.Fprintf(&b, `{"type":"body_weight","value":172.%d,"unit":"lb","start":%q,"source":"scale"}`, i%10, start)
		}
	}
	b.WriteString("]}")
	return b.Bytes()
}

func BenchmarkDecodeValidate(b *testing.B) {
	now := time.Now()
	body := benchBatch(500, now)
	if _, err := pulsebase.LoadZone("America/Chicago"); err != nil {
		b.Fatal(err)
	}
	run := func(b *testing.B, decode func([]byte) []pulsebase.SampleInput) {
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		for b.Loop() {
			in := decode(body)
			for i := range in {
				if _, probs := pulsebase.Normalize(in[i], now); probs != nil {
					b.Fatalf("sample %d: %v", i, probs)
				}
			}
		}
		b.ReportMetric(float64(b.N*500)/b.Elapsed().Seconds(), "samples/s")
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*500), "ns/sample")
	}
	b.Run("DecodeBatch", func(b *testing.B) {
		run(b, func(body []byte) []pulsebase.SampleInput {
			in, err := DecodeBatch(MediaJSON, body, 5000)
			if err != nil {
				b.Fatal(err)
			}
			return in
		})
	})
	b.Run("encoding-json", func(b *testing.B) {
		run(b, func(body []byte) []pulsebase.SampleInput {
			var env struct {
				Samples []pulsebase.SampleInput `json:"samples"`
			}
			if err := json.Unmarshal(body, &env); err != nil {
				b.Fatal(err)
			}
			return env.Samples
		})
	})
}

func BenchmarkDecodeBatch(b *testing.B) {
	body := benchBatch(500, time.Now())
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeBatch(MediaJSON, body, 5000); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*500)/b.Elapsed().Seconds(), "samples/s")
}
