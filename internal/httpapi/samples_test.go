package httpapi_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/auth"
	"github.com/pulsebase/pulsebase/internal/httpapi"
	"github.com/pulsebase/pulsebase/internal/pbtest"
)

const jsonCT = "application/json"

// hr returns a valid heart-rate sample n minutes before now, as JSON.
func hr(n int, value string) string {
	start := time.Now().Add(-time.Duration(n) * time.Minute).UTC().Format(time.RFC3339)
	return fmt.Sprintf(`{"type":"heart_rate","value":%s,"unit":"bpm","start":%q,"source":"watch-1"}`, value, start)
}

func batch(samples ...string) []byte {
	return []byte(`{"samples":[` + strings.Join(samples, ",") + `]}`)
}

// streamMsgs is how many messages the SAMPLES stream holds.
func streamMsgs(t *testing.T, s *pbtest.Server) uint64 {
	t.Helper()
	st, err := s.Broker.JetStream().Stream(context.Background(), "SAMPLES")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestPostSamplesAcceptsAndDeduplicates(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	tok := s.UserToken(t, "alice")
	body := batch(hr(3, "61"), hr(2, "62"), hr(2, "62"), `{"id":"c-1","type":"steps","value":120,"unit":"count","start":"2026-11-28T08:00:00-06:00","end":"2026-11-28T08:01:00-06:00","source":"phone"}`)

	r := pbtest.Do(t, "POST", s.URL+"/v1/samples", tok, jsonCT, body)
	if r.Status != 202 {
		t.Fatalf("got %d %s, want 202", r.Status, r.Body)
	}
	var res struct {
		Accepted, Duplicates int
		Rejected             []pulsebase.Rejection
	}
	r.JSON(t, &res)
	if res.Accepted != 3 || res.Duplicates != 1 || len(res.Rejected) != 0 {
		t.Errorf("first post: got %+v, want 3 accepted, 1 duplicate (repeated within the batch)", res)
	}
	if n := streamMsgs(t, s); n != 3 {
		t.Errorf("got %d messages in SAMPLES, want 3", n)
	}

	// The same batch again, and the steps sample with another offset of the same instant:
	// everything is a duplicate and nothing new is stored.
	r = pbtest.Do(t, "POST", s.URL+"/v1/samples", tok, jsonCT, body)
	r.JSON(t, &res)
	if r.Status != 202 || res.Accepted != 0 || res.Duplicates != 4 {
		t.Errorf("re-post: got %d %+v, want 202 with 0 accepted and 4 duplicates", r.Status, res)
	}
	if n := streamMsgs(t, s); n != 3 {
		t.Errorf("after re-post: got %d messages in SAMPLES, want still 3", n)
	}

	// Another user's identical sample is not a duplicate of alice's.
	r = pbtest.Do(t, "POST", s.URL+"/v1/samples", s.UserToken(t, "bob"), jsonCT, batch(hr(3, "61")))
	r.JSON(t, &res)
	if res.Accepted != 1 {
		t.Errorf("bob's sample: got %+v, want accepted", res)
	}
}

func TestPostSamplesNDJSON(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	s.UserToken(t, "alice")
	tok := s.Token(t, "alice", pulsebase.RoleDevice, "watch-1")
	body := hr(5, "70") + "\n" + hr(4, "71") + "\n\n" + hr(3, "72") + "\n"
	r := pbtest.Do(t, "POST", s.URL+"/v1/samples", tok, "application/x-ndjson", []byte(body))
	var res struct{ Accepted int }
	r.JSON(t, &res)
	if r.Status != 202 || res.Accepted != 3 {
		t.Errorf("got %d %s, want 202 with 3 accepted", r.Status, r.Body)
	}
}

func TestPostSamplesPartialBatch(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	tok := s.UserToken(t, "alice")
	r := pbtest.Do(t, "POST", s.URL+"/v1/samples", tok, jsonCT, batch(hr(3, "61"), hr(2, "400"), hr(1, "62")))
	var res struct {
		Accepted int
		Rejected []pulsebase.Rejection
	}
	r.JSON(t, &res)
	if r.Status != 202 || res.Accepted != 2 || len(res.Rejected) != 1 {
		t.Fatalf("got %d %s, want 202 with 2 accepted and 1 rejected", r.Status, r.Body)
	}
	if got := res.Rejected[0]; got.Index != 1 || got.Code != pulsebase.CodeOutOfRange {
		t.Errorf("got rejection %+v, want index 1 out_of_range", got)
	}
	if n := streamMsgs(t, s); n != 2 {
		t.Errorf("got %d messages in SAMPLES, want only the 2 accepted", n)
	}
}

// TestBadInput sends every kind of bad request of issue [1] and checks the documented
// status and code, that the answer is problem+json, that nothing was stored and that the
// server keeps serving.
func TestBadInput(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	tok := s.UserToken(t, "alice")
	now := time.Now().UTC()
	ts := func(d time.Duration) string { return now.Add(d).Format(time.RFC3339) }

	otherAud, err := auth.OpenIssuer(filepath.Join(s.DataDir, "keys", "token.key"), auth.DefaultIssuer, "another-api")
	if err != nil {
		t.Fatal(err)
	}
	otherAudTok, _ := otherAud.Mint(auth.TokenRequest{Subject: "alice", Role: pulsebase.RoleUser, TTL: time.Hour}, now)
	expired, _ := s.Issuer.Mint(auth.TokenRequest{Subject: "alice", Role: pulsebase.RoleUser, TTL: time.Hour}, now.Add(-3*time.Hour))
	tampered := tok[:len(tok)-4] + flip(tok[len(tok)-4:])
	parts := strings.Split(tok, ".")
	algNone := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + "."

	many := make([]string, httpapi.MaxSamples+1)
	for i := range many {
		many[i] = hr(1+i%60, "60")
	}
	huge := append(batch(hr(1, "60"))[:len(`{"samples":[`)+2], bytes.Repeat([]byte(" "), 5<<20)...)

	cases := []struct {
		name        string
		token, ct   string
		body        []byte
		status      int
		code        string
		sampleCodes []string // codes of the rejected list, for 422
	}{
		{name: "malformed JSON", body: []byte(`{"samples":[{"type":}]}`), status: 400, code: "invalid_request"},
		{name: "truncated body", body: batch(hr(1, "60"))[:30], status: 400, code: "invalid_request"},
		{name: "wrong content type", ct: "text/plain", body: batch(hr(1, "60")), status: 415, code: "unsupported_media"},
		{name: "no content type", ct: "-", body: batch(hr(1, "60")), status: 415, code: "unsupported_media"},
		{name: "empty batch", body: []byte(`{"samples":[]}`), status: 400, code: "invalid_request"},
		{name: "empty body", body: []byte(``), status: 400, code: "invalid_request"},
		{name: "5,001 samples", body: batch(many...), status: 413, code: "too_large"},
		{name: "5 MiB body", body: huge, status: 413, code: "too_large"},
		{name: "unknown type", body: batch(`{"type":"blood_sugar","value":5,"start":"` + ts(-time.Minute) + `","source":"x"}`), status: 422, code: "unknown_type"},
		{name: "unit not accepted", body: batch(`{"type":"heart_rate","value":60,"unit":"kg","start":"` + ts(-time.Minute) + `","source":"x"}`), status: 422, code: "bad_unit"},
		{name: "value out of range", body: batch(hr(1, "400")), status: 422, code: "out_of_range"},
		{name: "NaN", body: batch(hr(1, "NaN")), status: 400, code: "invalid_request"},
		{name: "Infinity", body: batch(hr(1, "Infinity")), status: 400, code: "invalid_request"},
		{name: "huge exponent", body: batch(hr(1, "1e999")), status: 422},
		{name: "end before start", body: batch(`{"type":"steps","value":10,"start":"` + ts(-time.Minute) + `","end":"` + ts(-2*time.Minute) + `","source":"x"}`), status: 422, code: "bad_time"},
		{name: "interval over 24 h", body: batch(`{"type":"steps","value":10,"start":"` + ts(-25*time.Hour-time.Minute) + `","end":"` + ts(-time.Minute) + `","source":"x"}`), status: 422, code: "bad_time"},
		{name: "start 1 hour in the future", body: batch(`{"type":"heart_rate","value":60,"start":"` + ts(time.Hour) + `","source":"x"}`), status: 422, code: "future_time"},
		{name: "missing fields", body: batch(`{"type":"heart_rate"}`), status: 422, code: "missing_field"},
		{name: "string where a number belongs", body: batch(hr(1, `"sixty"`)), status: 422, code: "bad_value"},
		{name: "deeply nested JSON", body: []byte(strings.Repeat("[", 100000) + strings.Repeat("]", 100000)), status: 400, code: "invalid_request"},
		{name: "invalid UTF-8", body: []byte("{\"samples\":[{\"type\":\"heart_rate\",\"value\":60,\"start\":\"" + ts(-time.Minute) + "\",\"source\":\"w\xff\xfe\"}]}"), status: 400, code: "invalid_request"},
		{name: "mixed rejections", body: batch(hr(1, "400"), `{"type":"nope","value":1,"start":"`+ts(-time.Minute)+`","source":"x"}`), status: 422, code: "all_rejected", sampleCodes: []string{"out_of_range", "unknown_type"}},
		{name: "no token", token: "-", body: batch(hr(1, "60")), status: 401, code: "unauthenticated"},
		{name: "token for another audience", token: otherAudTok, body: batch(hr(1, "60")), status: 401, code: "unauthenticated"},
		{name: "expired token", token: expired, body: batch(hr(1, "60")), status: 401, code: "unauthenticated"},
		{name: "tampered signature", token: tampered, body: batch(hr(1, "60")), status: 401, code: "unauthenticated"},
		{name: "alg none", token: algNone, body: batch(hr(1, "60")), status: 401, code: "unauthenticated"},
		{name: "a coach cannot write samples", token: s.Token(t, "coach-carol", pulsebase.RoleCoach, ""), body: batch(hr(1, "60")), status: 403, code: "forbidden"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			token, ct := tok, jsonCT
			switch c.token {
			case "-":
				token = ""
			case "":
			default:
				token = c.token
			}
			switch c.ct {
			case "-":
				ct = ""
			case "":
			default:
				ct = c.ct
			}
			r := pbtest.Do(t, "POST", s.URL+"/v1/samples", token, ct, c.body)
			if r.Status != c.status {
				t.Fatalf("got status %d (%.300s), want %d", r.Status, r.Body, c.status)
			}
			if got := r.Header.Get("Content-Type"); got != "application/problem+json" {
				t.Errorf("got content type %q, want application/problem+json", got)
			}
			var p httpapi.Problem
			r.JSON(t, &p)
			if c.code != "" && p.Code != c.code {
				t.Errorf("got code %q, want %q", p.Code, c.code)
			}
			if p.Status != c.status || p.Type == "" || p.Title == "" {
				t.Errorf("got problem %+v, want status %d with type and title", p, c.status)
			}
			if c.status == 422 && len(p.Rejected) == 0 {
				t.Errorf("got no rejected list on a 422")
			}
			for i, sc := range c.sampleCodes {
				if i >= len(p.Rejected) || p.Rejected[i].Code != sc || p.Rejected[i].Index != i {
					t.Errorf("got rejected %+v, want index %d with code %s", p.Rejected, i, sc)
				}
			}
		})
	}
	if n := streamMsgs(t, s); n != 0 {
		t.Errorf("got %d messages stored by rejected requests, want 0", n)
	}
	// Still serving.
	r := pbtest.Do(t, "POST", s.URL+"/v1/samples", tok, jsonCT, batch(hr(1, "60")))
	if r.Status != 202 {
		t.Errorf("after the bad input: got %d, want the server to accept a good batch", r.Status)
	}
	if r := pbtest.Do(t, "GET", s.URL+"/healthz", "", "", nil); r.Status != 200 {
		t.Errorf("healthz: got %d, want 200", r.Status)
	}
}

func flip(s string) string {
	b := []byte(s)
	for i := range b {
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
	}
	return string(b)
}

func TestDeviceWritesOnlyForItsOwnUser(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	s.UserToken(t, "alice")
	s.UserToken(t, "bob")
	dev := s.Token(t, "alice", pulsebase.RoleDevice, "watch-1")
	bob, err := s.Users.Resolve(context.Background(), "bob")
	if err != nil {
		t.Fatal(err)
	}
	alice, err := s.Users.Resolve(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	for target, want := range map[string]int{"me": 202, alice.ID: 202, bob.ID: 403, "someone": 403} {
		r := pbtest.Do(t, "POST", s.URL+"/v1/samples?user="+target, dev, jsonCT, batch(hr(1, "60")))
		if r.Status != want {
			t.Errorf("device of alice writing for %q: got %d, want %d", target, r.Status, want)
		}
	}
}

func TestUnknownRouteAndMethod(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	for _, c := range []struct {
		method, path string
		status       int
	}{
		{"GET", "/v1/nope", 404},
		{"GET", "/v1/samples", 405},
		{"DELETE", "/healthz", 405},
	} {
		r := pbtest.Do(t, c.method, s.URL+c.path, "", "", nil)
		if r.Status != c.status || r.Header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("%s %s: got %d %q, want %d problem+json", c.method, c.path, r.Status, r.Header.Get("Content-Type"), c.status)
		}
	}
}

func TestMetricsCountOutcomes(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	tok := s.UserToken(t, "alice")
	pbtest.Do(t, "POST", s.URL+"/v1/samples", tok, jsonCT, batch(hr(2, "60"), hr(2, "60"), hr(1, "400")))
	r := pbtest.Do(t, "GET", s.URL+"/metrics", "", "", nil)
	for _, want := range []string{
		`pulsebase_samples_total{code="",outcome="accepted",type="heart_rate"} 1`,
		`pulsebase_samples_total{code="",outcome="duplicate",type="heart_rate"} 1`,
		`pulsebase_samples_total{code="out_of_range",outcome="rejected",type="heart_rate"} 1`,
		`pulsebase_http_request_duration_seconds_count{code="202",method="POST",route="/v1/samples"} 1`,
		`pulsebase_broker_publish_duration_seconds_count 1`,
	} {
		if !bytes.Contains(r.Body, []byte(want)) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func TestUsersMeIsStable(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	var a, b struct{ ID string }
	pbtest.Do(t, "GET", s.URL+"/v1/users/me", s.Token(t, "alice", pulsebase.RoleUser, ""), "", nil).JSON(t, &a)
	pbtest.Do(t, "GET", s.URL+"/v1/users/me", s.Token(t, "alice", pulsebase.RoleDevice, "w"), "", nil).JSON(t, &b)
	if a.ID == "" || a.ID != b.ID || strings.Contains(a.ID, "alice") {
		t.Errorf("got ids %q and %q, want one pseudonymous id for alice", a.ID, b.ID)
	}
}

func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	r := pbtest.Do(t, "GET", s.URL+"/openapi.json", "", "", nil)
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	r.JSON(t, &doc)
	if doc.OpenAPI != "3.1.0" {
		t.Errorf("got openapi %q, want 3.1.0", doc.OpenAPI)
	}
	// Every documented operation is served (not 404/405), and the fixed paths of API.md
	// that exist by now are documented.
	n := 0
	for path, ops := range doc.Paths {
		for method := range ops {
			n++
			r := pbtest.Do(t, strings.ToUpper(method), s.URL+path, "", "", nil)
			if r.Status == 404 || r.Status == 405 {
				t.Errorf("%s %s is documented but answers %d", method, path, r.Status)
			}
		}
	}
	for _, want := range []string{"/v1/samples", "/v1/users/me", "/healthz", "/readyz", "/metrics", "/openapi.json", "/.well-known/jwks.json"} {
		if _, ok := doc.Paths[want]; !ok {
			t.Errorf("%s is not documented", want)
		}
	}
	if n < 7 {
		t.Errorf("got %d operations, want at least 7", n)
	}
}

func TestReadyzFollowsTheBroker(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	if r := pbtest.Do(t, "GET", s.URL+"/readyz", "", "", nil); r.Status != 200 {
		t.Fatalf("readyz with a running broker: got %d, want 200", r.Status)
	}
	tok := s.UserToken(t, "alice")
	s.Broker.Close()
	r := pbtest.Do(t, "GET", s.URL+"/readyz", "", "", nil)
	if r.Status != 503 || r.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("readyz with the broker gone: got %d %q, want 503 problem+json", r.Status, r.Header.Get("Content-Type"))
	}
	if r := pbtest.Do(t, "GET", s.URL+"/healthz", "", "", nil); r.Status != 200 {
		t.Errorf("healthz: got %d, want 200 (the process is alive)", r.Status)
	}
	// Ingest fails cleanly, without a partial success, while the broker is gone.
	r = pbtest.Do(t, "POST", s.URL+"/v1/samples", tok, jsonCT, batch(hr(1, "60")))
	if r.Status != 503 {
		t.Errorf("ingest with the broker gone: got %d %s, want 503", r.Status, r.Body)
	}
}
