package pulsebase

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// now is the clock of these tests: 2026-11-29 14:00 UTC, 08:00 in Chicago.
var now = time.Date(2026, 11, 29, 14, 0, 0, 0, time.UTC)

const t0 = "2026-11-29T08:00:00-06:00" // now, at the client's offset

// in returns a valid input of type typ with the given value and unit: an instant type a
// minute ago, an interval type over the last minute (mindful_session the last 20).
func in(typ, value, unit string) SampleInput {
	s := SampleInput{Type: typ, Value: json.RawMessage(value), Unit: unit,
		Start: "2026-11-29T07:59:00-06:00", Source: "watch-1"}
	if st, ok := LookupType(typ); ok && (st.Shape == ShapeInterval || st.Shape == ShapeCategorical) {
		s.End = t0
		if typ == "mindful_session" {
			s.Start = "2026-11-29T07:40:00-06:00"
		}
	}
	return s
}

// codes renders problems as "code(field) code(field)".
func codes(probs []Problem) string {
	var b strings.Builder
	for i, p := range probs {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s(%s)", p.Code, p.Field)
	}
	return b.String()
}

func TestNormalizeEveryType(t *testing.T) {
	for _, tc := range []struct {
		typ, value, unit string
		want             float64 // canonical value; ignored when code is set
		code             string  // the one expected problem, "" for none
	}{
		{"heart_rate", "72", "", 72, ""},
		{"heart_rate", "72", "/min", 72, ""},
		{"heart_rate", "72", "bpm", 72, ""},
		{"heart_rate", "72.5", "beats/min", 72.5, ""},
		{"heart_rate", "72", "count/min", 72, ""},
		{"heart_rate", "20", "", 20, ""},
		{"heart_rate", "250", "", 250, ""},
		{"heart_rate", "19.9", "", 0, CodeOutOfRange},
		{"heart_rate", "251", "", 0, CodeOutOfRange},
		{"heart_rate", "72", "Hz", 0, CodeBadUnit},

		{"resting_heart_rate", "55", "bpm", 55, ""},
		{"resting_heart_rate", "24", "", 0, CodeOutOfRange},
		{"resting_heart_rate", "151", "", 0, CodeOutOfRange},
		{"resting_heart_rate", "55", "ms", 0, CodeBadUnit},

		{"rr_interval", "800", "ms", 800, ""},
		{"rr_interval", "0.801", "s", 801, ""},
		{"rr_interval", "199", "", 0, CodeOutOfRange},
		{"rr_interval", "2.501", "s", 0, CodeOutOfRange},
		{"rr_interval", "800", "us", 0, CodeBadUnit},

		{"hrv_rmssd", "45", "ms", 45, ""},
		{"hrv_rmssd", "0.9", "", 0, CodeOutOfRange},
		{"hrv_rmssd", "301", "", 0, CodeOutOfRange},
		{"hrv_rmssd", "0.045", "s", 0, CodeBadUnit},

		{"steps", "120", "", 120, ""},
		{"steps", "120", "{steps}", 120, ""},
		{"steps", "120", "count", 120, ""},
		{"steps", "300", "steps", 300, ""}, // 5/s over 60 s
		{"steps", "0", "", 0, ""},
		{"steps", "-1", "", 0, CodeOutOfRange},
		{"steps", "301", "", 0, CodeOutOfRange},
		{"steps", "120", "km", 0, CodeBadUnit},

		{"distance", "500", "m", 500, ""},
		{"distance", "0.5", "km", 500, ""},
		{"distance", "0.25", "mi", 402.336, ""},
		{"distance", "1000", "ft", 304.8, ""},
		{"distance", "900", "", 900, ""}, // 15 m/s over 60 s
		{"distance", "-0.1", "", 0, CodeOutOfRange},
		{"distance", "0.901", "km", 0, CodeOutOfRange},
		{"distance", "500", "yd", 0, CodeBadUnit},

		{"active_energy", "5", "kcal", 5, ""},
		{"active_energy", "41.84", "kJ", 10, ""},
		{"active_energy", "5", "Cal", 5, ""},
		{"active_energy", "30", "", 30, ""}, // 0.5 kcal/s over 60 s
		{"active_energy", "-1", "", 0, CodeOutOfRange},
		{"active_energy", "30.01", "", 0, CodeOutOfRange},
		{"active_energy", "5", "cal", 0, CodeBadUnit},

		{"activity_intensity", `"sedentary"`, "", 0, ""},
		{"activity_intensity", `"moderate"`, "", 2, ""},
		{"activity_intensity", `"vigorous"`, "level", 3, ""},
		{"activity_intensity", "0", "", 0, ""},
		{"activity_intensity", "3", "", 3, ""},
		{"activity_intensity", "-1", "", 0, CodeOutOfRange},
		{"activity_intensity", "4", "", 0, CodeOutOfRange},
		{"activity_intensity", "1.5", "", 0, CodeBadValue},
		{"activity_intensity", `"running"`, "", 0, CodeBadValue},
		{"activity_intensity", `"Moderate"`, "", 0, CodeBadValue},
		{"activity_intensity", "true", "", 0, CodeBadValue},
		{"activity_intensity", "2", "MET", 0, CodeBadUnit},

		{"sleep_stage", `"in_bed"`, "", 0, ""},
		{"sleep_stage", `"awake"`, "", 1, ""},
		{"sleep_stage", `"light"`, "", 2, ""},
		{"sleep_stage", `"deep"`, "stage", 3, ""},
		{"sleep_stage", `"rem"`, "", 4, ""},
		{"sleep_stage", `"\u0072em"`, "", 4, ""},
		{"sleep_stage", "4", "", 4, ""},
		{"sleep_stage", "5", "", 0, CodeOutOfRange},
		{"sleep_stage", `"nap"`, "", 0, CodeBadValue},
		{"sleep_stage", `"deep"`, "level", 0, CodeBadUnit},

		{"spo2", "97", "%", 97, ""},
		{"spo2", "0.97", "fraction", 97, ""},
		{"spo2", "0.57", "fraction", 57, ""},
		{"spo2", "49", "", 0, CodeOutOfRange},
		{"spo2", "101", "", 0, CodeOutOfRange},
		{"spo2", "1.01", "fraction", 0, CodeOutOfRange},
		{"spo2", "97", "percent", 0, CodeBadUnit},

		{"respiratory_rate", "15", "/min", 15, ""},
		{"respiratory_rate", "15", "breaths/min", 15, ""},
		{"respiratory_rate", "3", "", 0, CodeOutOfRange},
		{"respiratory_rate", "61", "", 0, CodeOutOfRange},
		{"respiratory_rate", "15", "Hz", 0, CodeBadUnit},

		{"skin_temperature", "33.5", "Cel", 33.5, ""},
		{"skin_temperature", "98.6", "degF", 37, ""},
		{"skin_temperature", "91.4", "[degF]", 33, ""},
		{"skin_temperature", "24.9", "", 0, CodeOutOfRange},
		{"skin_temperature", "45.1", "", 0, CodeOutOfRange},
		{"skin_temperature", "114", "degF", 0, CodeOutOfRange}, // 45.56 °C
		{"skin_temperature", "310", "K", 0, CodeBadUnit},

		{"body_weight", "70", "kg", 70, ""},
		{"body_weight", "150", "lb", 68.0388555, ""},
		{"body_weight", "1", "[lb_av]", 0, CodeOutOfRange},
		{"body_weight", "1.9", "", 0, CodeOutOfRange},
		{"body_weight", "651", "", 0, CodeOutOfRange},
		{"body_weight", "70", "g", 0, CodeBadUnit},

		{"mood", "3", "", 3, ""},
		{"mood", "3", "{score}", 3, ""},
		{"mood", "1", "", 1, ""},
		{"mood", "5", "", 5, ""},
		{"mood", "0", "", 0, CodeOutOfRange},
		{"mood", "6", "", 0, CodeOutOfRange},
		{"mood", "3", "%", 0, CodeBadUnit},

		{"mindful_session", "20", "min", 20, ""},
		{"mindful_session", "1200", "s", 20, ""},
		{"mindful_session", "90", "s", 1.5, ""},
		{"mindful_session", "1440", "", 1440, ""},
		{"mindful_session", "-1", "", 0, CodeOutOfRange},
		{"mindful_session", "1441", "", 0, CodeOutOfRange},
		{"mindful_session", "86401", "s", 0, CodeOutOfRange},
		{"mindful_session", "20", "h", 0, CodeBadUnit},

		{"water", "250", "mL", 250, ""},
		{"water", "0.25", "L", 250, ""},
		{"water", "8", "[foz_us]", 236.5882365, ""},
		{"water", "0", "", 0, ""},
		{"water", "-1", "", 0, CodeOutOfRange},
		{"water", "5001", "", 0, CodeOutOfRange},
		{"water", "5.1", "L", 0, CodeOutOfRange},
		{"water", "250", "ml", 0, CodeBadUnit},
	} {
		name := fmt.Sprintf("%s %s %q", tc.typ, tc.value, tc.unit)
		input := in(tc.typ, tc.value, tc.unit)
		s, probs := Normalize(input, now)
		if tc.code != "" {
			if len(probs) != 1 || probs[0].Code != tc.code {
				t.Errorf("%s: got problems %s, want one %s", name, codes(probs), tc.code)
			}
			continue
		}
		if len(probs) != 0 {
			t.Errorf("%s: got problems %s %v, want none", name, codes(probs), probs)
			continue
		}
		st, _ := LookupType(tc.typ)
		if s.Value != tc.want || s.Type != tc.typ || s.Unit != st.Unit {
			t.Errorf("%s: got %v %s %s, want %v %s %s", name, s.Value, s.Type, s.Unit, tc.want, tc.typ, st.Unit)
		}
		if string(s.OrigValue) != tc.value || s.OrigUnit != tc.unit {
			t.Errorf("%s: got orig %s %q, want %s %q", name, s.OrigValue, s.OrigUnit, tc.value, tc.unit)
		}
		if st.Levels != nil && s.Level != st.Levels[int(tc.want)] {
			t.Errorf("%s: got level %q, want %q", name, s.Level, st.Levels[int(tc.want)])
		}
	}
}

func TestNormalizeKeepsProvenance(t *testing.T) {
	input := SampleInput{ID: "c0ffee-0001", Type: "heart_rate", Value: json.RawMessage("72"), Unit: "bpm",
		Start: "2026-11-29T07:59:00-06:00", Source: "watch-1", Zone: "America/Chicago"}
	s, probs := Normalize(input, now)
	if probs != nil {
		t.Fatalf("Normalize: got problems %v, want none", probs)
	}
	if _, off := s.Start.Zone(); off != -6*3600 {
		t.Errorf("start offset: got %d, want %d (the client's)", off, -6*3600)
	}
	if !s.End.Equal(s.Start) {
		t.Errorf("end of an instant reading: got %v, want %v", s.End, s.Start)
	}
	if s.ID != input.ID || s.Source != input.Source || s.Zone != input.Zone || !s.Received.Equal(now) ||
		string(s.OrigValue) != "72" || s.OrigUnit != "bpm" || s.Unit != "/min" {
		t.Errorf("Normalize: got %+v, want id, source, zone, orig value and unit kept", s)
	}
}

func TestNormalizeDetail(t *testing.T) {
	input := in("heart_rate", "400", "bpm")
	input.ID, input.Source = "SECRET-ID", "SECRET-SOURCE"
	_, probs := Normalize(input, now)
	if len(probs) != 1 || probs[0].Detail != "heart_rate 400 /min outside 20..250" {
		t.Errorf("heart_rate 400 bpm: got %v, want detail %q", probs, "heart_rate 400 /min outside 20..250")
	}
	input = SampleInput{ID: "SECRET-ID", Type: "steps", Value: json.RawMessage(`"x"`), Unit: "parsecs", Start: "yesterday",
		End: "today", Source: "SECRET-SOURCE", Zone: "Nowhere/SECRET"}
	_, probs = Normalize(input, now)
	if len(probs) < 5 {
		t.Errorf("everything wrong: got %s, want bad_value, bad_unit, bad_time ×3", codes(probs))
	}
	for _, p := range probs {
		if strings.Contains(p.Detail, "SECRET") {
			t.Errorf("%s(%s): got detail %q, want one without the id, source or zone", p.Code, p.Field, p.Detail)
		}
	}
	input = in("steps", "120", strings.Repeat("u", 1000))
	_, probs = Normalize(input, now)
	if len(probs) != 1 || len(probs[0].Detail) > 200 {
		t.Errorf("a 1000-byte unit: got %v, want one problem with a short detail", probs)
	}
}

func TestNormalizeTime(t *testing.T) {
	hr := func(start, end string) SampleInput {
		return SampleInput{Type: "heart_rate", Value: json.RawMessage("72"), Start: start, End: end, Source: "w"}
	}
	steps := func(start, end string) SampleInput {
		return SampleInput{Type: "steps", Value: json.RawMessage("100"), Start: start, End: end, Source: "p"}
	}
	for _, tc := range []struct {
		name string
		in   SampleInput
		want string
	}{
		{"instant now", hr("2026-11-29T14:00:00Z", ""), ""},
		{"instant with end equal at another offset", hr("2026-11-29T14:00:00Z", "2026-11-29T08:00:00-06:00"), ""},
		{"instant with fractional seconds", hr("2026-11-29T13:59:59.123456789+00:00", ""), ""},
		{"instant with end after start", hr("2026-11-29T13:00:00Z", "2026-11-29T13:01:00Z"), "bad_time(end)"},
		{"5 minutes in the future", hr("2026-11-29T14:05:00Z", ""), ""},
		{"10 minutes in the future", hr("2026-11-29T14:10:00Z", ""), ""},
		{"1 hour in the future", hr("2026-11-29T15:00:00Z", ""), "future_time(start)"},
		{"1 hour in the future, offset", hr("2026-11-29T09:00:00-06:00", ""), "future_time(start)"},
		{"five years old", hr("2021-11-29T14:00:00Z", ""), ""},
		{"2000-01-01", hr("2000-01-01T00:00:00Z", ""), ""},
		{"before 2000", hr("1999-12-31T23:59:59Z", ""), "bad_time(start)"},
		{"before 2000 in UTC only", hr("2000-01-01T00:30:00+01:00", ""), "bad_time(start)"},
		{"no offset", hr("2026-11-29T14:00:00", ""), "bad_time(start)"},
		{"not RFC 3339", hr("2026-11-29 14:00:00Z", ""), "bad_time(start)"},
		{"bad month", hr("2026-13-29T14:00:00Z", ""), "bad_time(start)"},
		{"bad end", hr("2026-11-29T14:00:00Z", "soon"), "bad_time(end)"},
		{"interval", steps("2026-11-29T13:00:00Z", "2026-11-29T13:01:00Z"), ""},
		{"interval missing end", steps("2026-11-29T13:00:00Z", ""), "missing_field(end)"},
		{"end before start", steps("2026-11-29T13:01:00Z", "2026-11-29T13:00:00Z"), "bad_time(end)"},
		{"empty interval", steps("2026-11-29T13:00:00Z", "2026-11-29T13:00:00Z"), "out_of_range(value)"},
		{"24 hours", steps("2026-11-28T13:00:00Z", "2026-11-29T13:00:00Z"), ""},
		{"over 24 hours", steps("2026-11-28T13:00:00Z", "2026-11-29T13:00:01Z"), "bad_time(end)"},
		{"ends 1 hour in the future", steps("2026-11-29T13:59:00Z", "2026-11-29T15:00:00Z"), "future_time(end)"},
		{"ends 5 minutes in the future", steps("2026-11-29T13:59:00Z", "2026-11-29T14:05:00Z"), ""},
		{"starts in the future", steps("2026-11-29T16:00:00Z", "2026-11-29T16:01:00Z"), "future_time(start)"},
		{"daily without end", SampleInput{Type: "resting_heart_rate", Value: json.RawMessage("52"), Start: "2026-11-29T00:00:00-06:00", Source: "w"}, ""},
		{"daily over a night", SampleInput{Type: "hrv_rmssd", Value: json.RawMessage("52"), Start: "2026-11-28T23:00:00-06:00", End: "2026-11-29T07:00:00-06:00", Source: "w"}, ""},
		{"daily over 2 days", SampleInput{Type: "resting_heart_rate", Value: json.RawMessage("52"), Start: "2026-11-27T00:00:00-06:00", End: "2026-11-29T00:00:00-06:00", Source: "w"}, "bad_time(end)"},
	} {
		_, probs := Normalize(tc.in, now)
		if got := codes(probs); got != tc.want {
			t.Errorf("%s (%s..%s): got %q, want %q", tc.name, tc.in.Start, tc.in.End, got, tc.want)
		}
	}
}

func TestNormalizeZone(t *testing.T) {
	for _, tc := range []struct {
		zone, want string
	}{
		{"", ""},
		{"America/Chicago", ""},
		{"Europe/Paris", ""},
		{"UTC", ""},
		{"Etc/GMT+6", ""},
		{"Mars/Olympus_Mons", "bad_time(zone)"},
		{"Local", "bad_time(zone)"},
		{"america/chicago", "bad_time(zone)"},
		{"../../etc/passwd", "bad_time(zone)"},
		{"/etc/localtime", "bad_time(zone)"},
		{"America/Chicago\x00", "bad_time(zone)"},
		{strings.Repeat("A", 200), "bad_time(zone)"},
	} {
		input := SampleInput{Type: "mood", Value: json.RawMessage("3"), Start: "2026-11-29T08:00:00-06:00", Source: "app", Zone: tc.zone}
		for range 2 { // the second time from the cache
			_, probs := Normalize(input, now)
			if got := codes(probs); got != tc.want {
				t.Errorf("zone %q: got %q, want %q", tc.zone, got, tc.want)
			}
		}
	}
	loc, err := LoadZone("America/Chicago")
	if err != nil || loc.String() != "America/Chicago" {
		t.Errorf("LoadZone(America/Chicago): got %v %v, want America/Chicago", loc, err)
	}
}

func TestNormalizeValues(t *testing.T) {
	for _, tc := range []struct {
		typ, unit, value, want string
	}{
		{"heart_rate", "", "1e999", "out_of_range(value)"},
		{"heart_rate", "", "-1e999", "out_of_range(value)"},
		{"heart_rate", "", "1e-999", "out_of_range(value)"},
		{"heart_rate", "", "7.2e1", ""},
		{"heart_rate", "", "72.000000000000000000000000001", ""},
		{"heart_rate", "", "720000000000000000000000000000e-28", ""},
		{"distance", "km", "1.7e308", "out_of_range(value)"},
		{"distance", "km", "1e99999999999", "out_of_range(value)"},
		{"distance", "km", "1e-99999999999", ""},
		{"distance", "km", "0." + strings.Repeat("0", 5000) + "1", ""},
		{"water", "L", "0.2" + strings.Repeat("0", 5000) + "1", ""},
		{"sleep_stage", "", "1e999", "bad_value(value)"},
		{"heart_rate", "", "NaN", "bad_value(value)"},
		{"heart_rate", "", "Infinity", "bad_value(value)"},
		{"heart_rate", "", "-Inf", "bad_value(value)"},
		{"heart_rate", "", "0x48", "bad_value(value)"},
		{"heart_rate", "", "7_2", "bad_value(value)"},
		{"heart_rate", "", "+72", "bad_value(value)"},
		{"heart_rate", "", "072", "bad_value(value)"},
		{"heart_rate", "", `"72"`, "bad_value(value)"},
		{"heart_rate", "", "true", "bad_value(value)"},
		{"heart_rate", "", "[72]", "bad_value(value)"},
		{"heart_rate", "", `{"v":72}`, "bad_value(value)"},
		{"heart_rate", "", " 72 ", ""},
		{"heart_rate", "", "null", "missing_field(value)"},
		{"heart_rate", "", "", "missing_field(value)"},
		{"heart_rate", "", "-", "bad_value(value)"},
		{"sleep_stage", "", `"de\u0065p"`, ""},
		{"sleep_stage", "", `"deep`, "bad_value(value)"},
		{"sleep_stage", "", `"\ud800"`, "bad_value(value)"},
		{"sleep_stage", "", "\"de\xffep\"", "bad_value(value)"},
		{"sleep_stage", "", "[]", "bad_value(value)"},
		{"activity_intensity", "", "2.0", ""},
		{"activity_intensity", "", "-0", ""},
		{"activity_intensity", "", "2e0", ""},
	} {
		_, probs := Normalize(in(tc.typ, tc.value, tc.unit), now)
		name := tc.value
		if len(name) > 40 {
			name = name[:40] + "…"
		}
		if got := codes(probs); got != tc.want {
			t.Errorf("%s %s %q: got %q, want %q", tc.typ, name, tc.unit, got, tc.want)
		}
	}
}

func TestNormalizeMissingFields(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   SampleInput
		want string
	}{
		{"nothing", SampleInput{}, "missing_field(type) missing_field(value) missing_field(start) missing_field(source)"},
		{"interval type only", SampleInput{Type: "steps"}, "missing_field(value) missing_field(start) missing_field(end) missing_field(source)"},
		{"unknown type", SampleInput{Type: "calories", Value: json.RawMessage("5"), Start: t0, Source: "a"}, "unknown_type(type)"},
		{"unknown type, no source", SampleInput{Type: "calories", Value: json.RawMessage("5"), Unit: "kcal", Start: t0}, "unknown_type(type) missing_field(source)"},
		{"bad value, unit and time", SampleInput{Type: "heart_rate", Value: json.RawMessage(`"fast"`), Unit: "Hz", Start: "now", Source: "a"},
			"bad_value(value) bad_unit(unit) bad_time(start)"},
		{"out of range and future", SampleInput{Type: "heart_rate", Value: json.RawMessage("400"), Start: "2026-11-29T16:00:00Z", Source: "a"},
			"future_time(start) out_of_range(value)"},
	} {
		_, probs := Normalize(tc.in, now)
		if got := codes(probs); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestIdentity(t *testing.T) {
	norm := func(in SampleInput) Sample {
		t.Helper()
		s, probs := Normalize(in, now)
		if probs != nil {
			t.Fatalf("Normalize(%+v): got problems %v", in, probs)
		}
		return s
	}
	base := SampleInput{Type: "distance", Value: json.RawMessage("200"), Unit: "m",
		Start: "2026-11-29T07:00:00-06:00", End: "2026-11-29T07:01:00-06:00", Source: "phone"}
	with := func(f func(*SampleInput)) SampleInput {
		c := base
		f(&c)
		return c
	}
	id := norm(base).Identity()
	for _, tc := range []struct {
		name string
		in   SampleInput
		same bool
	}{
		{"same instants at UTC", with(func(s *SampleInput) { s.Start, s.End = "2026-11-29T13:00:00Z", "2026-11-29T13:01:00Z" }), true},
		{"same instants at +05:30", with(func(s *SampleInput) { s.Start, s.End = "2026-11-29T18:30:00+05:30", "2026-11-29T18:31:00+05:30" }), true},
		{"same value in km (0.2)", with(func(s *SampleInput) { s.Value, s.Unit = json.RawMessage("0.2"), "km" }), true},
		{"same value written 2e2", with(func(s *SampleInput) { s.Value = json.RawMessage("2e2") }), true},
		{"with a zone", with(func(s *SampleInput) { s.Zone = "America/Chicago" }), true},
		{"other source", with(func(s *SampleInput) { s.Source = "watch" }), false},
		{"other value", with(func(s *SampleInput) { s.Value = json.RawMessage("201") }), false},
		{"other start", with(func(s *SampleInput) { s.Start = "2026-11-29T07:00:01-06:00" }), false},
		{"other end", with(func(s *SampleInput) { s.End = "2026-11-29T07:02:00-06:00" }), false},
		{"other type", with(func(s *SampleInput) { s.Type, s.Unit, s.Value = "steps", "", json.RawMessage("200") }), false},
		{"a client id", with(func(s *SampleInput) { s.ID = "c0ffee" }), false},
	} {
		got := bytes.Equal(norm(tc.in).Identity(), id)
		if got != tc.same {
			t.Errorf("%s: got same identity %v, want %v", tc.name, got, tc.same)
		}
	}

	// With a client id, the id alone is the identity.
	a := norm(with(func(s *SampleInput) { s.ID = "c0ffee" }))
	b := norm(with(func(s *SampleInput) { s.ID = "c0ffee"; s.Value = json.RawMessage("700") }))
	c := norm(with(func(s *SampleInput) { s.ID = "c0ffef" }))
	if !bytes.Equal(a.Identity(), b.Identity()) || bytes.Equal(a.Identity(), c.Identity()) {
		t.Errorf("client ids: got %x %x %x, want the first two equal and the third different", a.Identity(), b.Identity(), c.Identity())
	}

	// Fields are delimited: moving a byte from one field to the next changes the identity.
	x := Sample{Type: "ab", Source: "c", Start: now, End: now}
	y := Sample{Type: "a", Source: "bc", Start: now, End: now}
	if bytes.Equal(x.Identity(), y.Identity()) {
		t.Errorf("type ab source c and type a source bc: got the same identity %x", x.Identity())
	}
	// An id cannot collide with the fields of a sample without one.
	z := Sample{ID: string(y.Identity()[1:])}
	if bytes.Equal(z.Identity(), y.Identity()) {
		t.Errorf("an id equal to another sample's fields: got the same identity %x", z.Identity())
	}
	// -0 and 0 are one value.
	zero := norm(with(func(s *SampleInput) { s.Value = json.RawMessage("0") }))
	negZero := norm(with(func(s *SampleInput) { s.Value = json.RawMessage("-0") }))
	if !bytes.Equal(zero.Identity(), negZero.Identity()) {
		t.Errorf("values 0 and -0: got identities %x and %x, want equal", zero.Identity(), negZero.Identity())
	}
}

func TestNormalizeAllocs(t *testing.T) {
	input := in("distance", "0.5", "km")
	input.Zone = "America/Chicago"
	if _, probs := Normalize(input, now); probs != nil {
		t.Fatal(probs)
	}
	if n := testing.AllocsPerRun(100, func() { Normalize(input, now) }); n > 1 {
		t.Errorf("Normalize of a valid sample: got %v allocations, want at most 1", n)
	}
}

func BenchmarkNormalize(b *testing.B) {
	inputs := []SampleInput{
		in("heart_rate", "72", "bpm"),
		in("steps", "120", "count"),
		in("distance", "0.5", "km"),
		in("sleep_stage", `"deep"`, ""),
		in("body_weight", "172.4", "lb"),
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, s := range inputs {
			Normalize(s, now)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(inputs)), "ns/sample")
}
