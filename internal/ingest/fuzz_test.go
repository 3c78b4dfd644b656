package ingest

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
)

// FuzzDecodeBatch checks that DecodeBatch never panics, fails only with *pulsebase.Error,
// decodes every body it accepts exactly as encoding/json does, and that Normalize and
// Identity take whatever it returns. Its seeds run with plain go test.
func FuzzDecodeBatch(f *testing.F) {
	now := time.Date(2026, 11, 29, 14, 0, 0, 0, time.UTC)
	f.Add(false, benchBatch(5, now))
	f.Add(true, []byte(strings.Join([]string{
		`{"type":"heart_rate","value":72,"unit":"bpm","start":"2026-11-29T08:00:00-06:00","source":"w"}`,
		``,
		`{"type":"sleep_stage","value":"deep","start":"2026-11-29T02:00:00-06:00","end":"2026-11-29T02:20:00-06:00","source":"ring"}`,
	}, "\n")))
	for _, s := range []string{
		`{"samples":[{"id":"a","type":"steps","value":120,"unit":"count","start":"2026-11-29T08:00:00Z","end":"2026-11-29T08:01:00Z","source":"p","zone":"UTC"}]}`,
		`{"samples":[{"type":"steps","value":120`,                                                 // truncated
		`{"samples":[{"type":"steps"}]} {}`,                                                       // trailing garbage
		`{"samples":[{"value":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}]}`, // nested
		`{"samples":[{"value":` + strings.Repeat("[", 200) + `}]}`,
		"{\"samples\":[{\"type\":\"st\xc3\x28eps\"}]}", // invalid UTF-8
		`{"samples":[{"TYPE":"steps","ſource":"k","\u0076alue":1e999}]}`,
		`{"samples":[{"source":"\ud83d\ude00\ud800\\\"\u0000"}]}`,
		`{"samples":[{"type":"a","type":"b"}]}`,
		`{"samples":[],"samples":[{}]}`,
		`{"samples":[null,1,"x",true]}`,
		`{"samples":[{"value":-0.0e-0},{"value":"\u0072em"},{"value":{"a":{}}}]}`,
		`{"samples":{}}`,
		`{"other":[1,2,{"x":null}],"samples":[{"type":null}]}`,
		`  null  `,
		``,
		`{"samples":[{"value":01}]}`,
		`{"samples":[{"start":"2026-11-29T08:00:00+25:00","value":1.}]}`,
	} {
		f.Add(false, []byte(s))
	}
	f.Add(true, []byte("{}\n{\"type\":\"mood\"}\r\n\n   \t\n{\"value\":1} \n"))
	f.Add(true, []byte("{\"type\":\"mood\"}{\"type\":\"mood\"}\n"))
	f.Add(true, []byte("[1]\n"))

	f.Fuzz(func(t *testing.T, ndjson bool, body []byte) {
		media := MediaJSON
		if ndjson {
			media = MediaNDJSON
		}
		got, err := DecodeBatch(media, body, 50)
		if err != nil {
			var perr *pulsebase.Error
			if !errors.As(err, &perr) || perr.Code != pulsebase.EINVALID && perr.Code != pulsebase.ETOOLARGE {
				t.Fatalf("DecodeBatch(%q): got error %v, want an *Error with code %s or %s", body, err, pulsebase.EINVALID, pulsebase.ETOOLARGE)
			}
			if got != nil {
				t.Fatalf("DecodeBatch(%q): got %d samples with error %v, want none", body, len(got), err)
			}
			return
		}
		if len(got) == 0 || len(got) > 50 {
			t.Fatalf("DecodeBatch(%q): got %d samples, want 1..50", body, len(got))
		}
		checkAgainstStdlib(t, media, body, got)
		for _, in := range got {
			s, probs := pulsebase.Normalize(in, now)
			for _, p := range probs {
				if p.Code == "" || p.Detail == "" {
					t.Fatalf("Normalize(%+v): got problem %+v, want a code and a detail", in, p)
				}
			}
			if probs == nil {
				_ = s.Identity()
			}
		}
	})
}
