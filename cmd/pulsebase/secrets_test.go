package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/client"
	"github.com/pulsebase/pulsebase/internal/auth"
	"github.com/pulsebase/pulsebase/internal/pbtest"
)

// TestNoSecretsInLogsOrErrors runs an end-to-end session through run() with debug logging
// — tokens, keys and health values, good requests and bad ones, a sealed batch through the
// SDK — captures every log line and every response, and checks that no token, no key
// material, no health value and no marker sent in a request appears in them.
//
// Two echoes are part of the API and allowed in the answer to the very request that sent
// them (never in logs, never in any other answer): an out_of_range rejection states the
// value (API.md: "heart_rate 400 /min outside 20..250"), and an unknown type or category is
// quoted, clipped to 32 bytes, so that a typo can be recognised.
func TestNoSecretsInLogsOrErrors(t *testing.T) {
	dir := t.TempDir()
	marker := fmt.Sprintf("SECRETMARK%d", time.Now().UnixNano())
	srv := startLive(t, dir, filepath.Join(dir, "keys", "tls.crt"), "--tls-self-signed", "--log-level", "debug")
	rec := &recorder{base: srv.client.Transport}
	hc := &http.Client{Transport: rec, Timeout: 30 * time.Second}
	ctx := context.Background()

	// Distinctive values: each would stand out in any log line or answer.
	const (
		heartRate  = "187.123456"
		bodyWeight = "83.987654"
		skinTemp   = "36.918273"
		sealedHR   = "143.271828"
		sealedWt   = "61.414213"
		outOfRange = "999.87654"
	)
	// The subject gets its own marker: the owner reads it back in their consent receipts.
	subject := fmt.Sprintf("person%d@example.com", time.Now().UnixNano())
	userTok := mintToken(t, dir, "--user", subject)
	deviceTok := mintToken(t, dir, "--user", subject, "--role", "device", "--device", "watch-1")
	otherTok := mintToken(t, dir, "--user", "bob@example.com")
	expiredTok := mintWith(t, dir, auth.DefaultIssuer, auth.DefaultAudience, subject, time.Now().Add(-3*time.Hour))
	otherAudTok := mintWith(t, dir, auth.DefaultIssuer, "another-api", subject, time.Now())
	otherIssTok := mintWith(t, dir, "someone-else", auth.DefaultAudience, subject, time.Now())
	foreignTok := mintForeign(t, subject)
	tamperedClaims := tamperClaims(t, userTok)
	tamperedSig := flipSignature(userTok)
	tokens := []string{userTok, deviceTok, otherTok, expiredTok, otherAudTok, otherIssTok, foreignTok, tamperedClaims, tamperedSig}

	start := time.Now().Add(-30 * time.Minute).UTC().Truncate(time.Second)
	at := func(d time.Duration) string { return start.Add(d).Format(time.RFC3339) }

	// do sends one request through the recording client; echo lists what its answer may
	// state back (see the test's comment).
	do := func(method, path, token, contentType, body string, want int, echo ...string) pbtest.Response {
		t.Helper()
		req, err := http.NewRequestWithContext(context.WithValue(ctx, echoKey{}, echo), method, srv.url+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			t.Errorf("%s %s: got %d %s, want %d", method, path, resp.StatusCode, b, want)
		}
		return pbtest.Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
	}

	// The good part of the session.
	do("PUT", "/v1/users/me/consents", userTok, "application/json", pbtest.AllConsent, 200)
	good := fmt.Sprintf(`{"samples":[`+
		`{"id":"id-%[1]s","type":"heart_rate","value":%[2]s,"unit":"bpm","start":%[4]q,"source":"src-%[1]s"},`+
		`{"type":"body_weight","value":%[3]s,"unit":"kg","start":%[4]q,"source":"scale-%[1]s"}]}`,
		marker, heartRate, bodyWeight, at(0))
	var res struct{ Accepted int }
	do("POST", "/v1/samples", deviceTok, "application/json", good, 202).JSON(t, &res)
	if res.Accepted != 2 {
		t.Errorf("got %d samples accepted, want 2", res.Accepted)
	}
	ndjson := fmt.Sprintf(`{"type":"skin_temperature","value":%s,"unit":"Cel","start":%q,"source":"ring-%s"}`+"\n", skinTemp, at(time.Minute), marker)
	do("POST", "/v1/samples", userTok, "application/x-ndjson", ndjson, 202)

	// The bad part: every one of these answers with an error.
	valued := fmt.Sprintf(`{"samples":[{"type":"heart_rate","value":%s,"unit":"bpm","start":%q,"source":"src-%s"}]}`, heartRate, at(2*time.Minute), marker)
	for _, tok := range []string{expiredTok, otherAudTok, otherIssTok, foreignTok, tamperedClaims, tamperedSig, "not-a-token-" + marker} {
		do("POST", "/v1/samples", tok, "application/json", valued, 401)
	}
	do("POST", "/v1/samples", "", "application/json", valued, 401)
	do("GET", "/v1/users/me", "Basic "+userTok, "", "", 401)
	do("POST", "/v1/samples", deviceTok, "application/json",
		fmt.Sprintf(`{"samples":[{"type":"heart_rate","value":%s,"unit":"bpm","start":%q,"source":"src-%s"}]}`, outOfRange, at(3*time.Minute), marker),
		422, outOfRange)
	do("POST", "/v1/samples", deviceTok, "text/plain", valued, 415)
	do("POST", "/v1/samples", deviceTok, "application/json",
		fmt.Sprintf(`{"samples":[{"type":"t_%[1]s","value":%[2]s,"start":%[3]q,"source":"src-%[1]s"}]}`, marker, heartRate, at(4*time.Minute)),
		422, marker)
	// Unknown types, units and categories are quoted clipped to 32 bytes: a marker past them
	// is never stated back.
	do("POST", "/v1/samples", deviceTok, "application/json",
		fmt.Sprintf(`{"samples":[{"type":"an_unknown_type_with_a_long_name_%[1]s","value":%[2]s,"start":%[3]q,"source":"src-%[1]s"}]}`, marker, heartRate, at(4*time.Minute)),
		422)
	do("POST", "/v1/samples", deviceTok, "application/json",
		fmt.Sprintf(`{"samples":[{"type":"body_weight","value":%s,"unit":"a_unit_with_a_long_name_%s","start":%q,"source":"s"}]}`, bodyWeight, marker, at(5*time.Minute)),
		422)
	// Ids and sources are never stated back.
	do("POST", "/v1/samples", deviceTok, "application/json",
		fmt.Sprintf(`{"samples":[{"id":"id2-%[1]s","type":"heart_rate","value":%[2]s,"unit":"bpm","start":"yesterday","source":"src-%[1]s"}]}`, marker, heartRate),
		422)
	do("POST", "/v1/samples", deviceTok, "application/json", fmt.Sprintf(`{"samples":[{"type":"heart_rate","value":%s,"source":"%s"`, heartRate, marker), 400)
	do("POST", "/v1/samples?user="+marker, deviceTok, "application/json", valued, 403)
	do("POST", "/v1/samples", deviceTok, pulsebase.MediaSealed, fmt.Sprintf(`{"key_id":"%s","sealed":"%s"}`, marker, heartRate), 400)
	do("PUT", "/v1/users/me/consents", deviceTok, "application/json", pbtest.AllConsent, 403)
	do("PUT", "/v1/users/me/consents", userTok, "application/json",
		fmt.Sprintf(`{"collect":{"category_with_a_long_long_name_%s":true}}`, marker), 400)
	do("GET", "/v1/users/"+marker+"/consents", userTok, "", "", 404)
	do("DELETE", "/v1/users/me/consents", userTok, "", "", 405)

	// A sealed batch through the SDK, with its own distinctive values.
	dev := client.New(srv.url, deviceTok, client.WithHTTPClient(hc))
	me, err := dev.Me(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := dev.ProcessingKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := client.Seal(pk, me.ID, []pulsebase.SampleInput{
		{ID: "sid-" + marker, Type: "heart_rate", Value: json.RawMessage(sealedHR), Unit: "bpm", Start: at(6 * time.Minute), Source: "sealed-" + marker},
		{Type: "body_weight", Value: json.RawMessage(sealedWt), Unit: "kg", Start: at(6 * time.Minute), Source: "sealed-" + marker},
	})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := dev.PostSealed(ctx, batch); err != nil || r.Sealed == nil || r.Sealed.Duplicate {
		t.Errorf("PostSealed: got %+v, %v; want the batch stored", r, err)
	}
	if r, err := dev.PostSealed(ctx, batch); err != nil || r.Sealed == nil || !r.Sealed.Duplicate {
		t.Errorf("PostSealed again: got %+v, %v; want a duplicate", r, err)
	}
	// The SDK's own errors carry no token either.
	var sdkErrs []string
	for _, tok := range []string{expiredTok, tamperedSig} {
		_, err := client.New(srv.url, tok, client.WithHTTPClient(hc)).Me(ctx)
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Status != 401 {
			t.Errorf("Me with a bad token: got %v, want a 401 *client.Error", err)
		}
		if err != nil {
			sdkErrs = append(sdkErrs, err.Error())
		}
	}

	// Reading back.
	do("GET", "/v1/users/me/consents", userTok, "", "", 200)
	var hist struct{ History []json.RawMessage }
	do("GET", "/v1/users/me/consents/history", userTok, "", "", 200).JSON(t, &hist)
	if len(hist.History) == 0 {
		t.Error("consent history is empty; want the receipt of the grant")
	}

	if err := srv.stop(); err != nil {
		t.Fatal(err)
	}
	logs := srv.stderr.String() + srv.stdout.String()
	// The check is worth something only if debug lines were written and the refused tokens
	// reached the logger.
	for _, want := range []string{`"level":"DEBUG"`, "token refused"} {
		if !strings.Contains(logs, want) {
			t.Fatalf("the logs do not contain %q; the checks below would prove nothing:\n%s", want, logs)
		}
	}

	secrets := []secret{}
	for i, tok := range tokens {
		secrets = append(secrets, secret{fmt.Sprintf("token %d", i), tok, true})
		if p := strings.Split(tok, "."); len(p) == 3 {
			secrets = append(secrets, secret{fmt.Sprintf("signature of token %d", i), p[2], true})
		}
	}
	secrets = append(secrets, keyMaterial(t, dir)...)
	for name, v := range map[string]string{
		"heart rate": heartRate, "body weight": bodyWeight, "skin temperature": skinTemp,
		"sealed heart rate": sealedHR, "sealed body weight": sealedWt,
	} {
		secrets = append(secrets, secret{name, v, true}, secret{name + " (3 decimals)", v[:strings.Index(v, ".")+4], true})
	}
	secrets = append(secrets,
		secret{"marker", marker, true},
		secret{"out-of-range value", outOfRange, true},
		secret{"external subject", subject, false}, // the owner reads it back in their consent receipts
	)

	lines := strings.Split(logs, "\n")
	if len(lines) < 10 {
		t.Fatalf("captured only %d log lines", len(lines))
	}
	for _, s := range secrets {
		for i, l := range lines {
			if strings.Contains(l, s.value) {
				t.Errorf("log line %d contains the %s: %s", i+1, s.name, l)
			}
		}
		for _, e := range sdkErrs {
			if strings.Contains(e, s.value) {
				t.Errorf("an SDK error contains the %s: %s", s.name, e)
			}
		}
	}
	answers := rec.all()
	if len(answers) < 30 {
		t.Fatalf("recorded only %d answers", len(answers))
	}
	errorAnswers := 0
	for _, a := range answers {
		if a.status >= 400 {
			errorAnswers++
			if ct := a.header.Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("%s: got %d with Content-Type %q, want application/problem+json", a.what, a.status, ct)
			}
		}
		var hdr bytes.Buffer
		a.header.Write(&hdr)
		for _, s := range secrets {
			if !s.inAnswers || contains(a.echo, s.value) {
				continue
			}
			if strings.Contains(hdr.String(), s.value) {
				t.Errorf("%s: the %d answer's headers contain the %s", a.what, a.status, s.name)
			}
			if bytes.Contains(a.body, []byte(s.value)) {
				t.Errorf("%s: the %d answer's body contains the %s: %s", a.what, a.status, s.name, a.body)
			}
		}
	}
	if errorAnswers < 20 {
		t.Errorf("recorded only %d error answers, want the 20 or more bad requests", errorAnswers)
	}

	checkKeyFileModes(t, dir)
	checkKeyFilesRefusedWhenReadable(t, dir, secrets)
}

// secret is something that must not appear in logs and, when inAnswers, in answers.
type secret struct {
	name, value string
	inAnswers   bool
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// echoKey keys, in a request's context, what its answer may state back.
type echoKey struct{}

// answer is one recorded HTTP response.
type answer struct {
	what   string
	status int
	header http.Header
	body   []byte
	echo   []string
}

// recorder is a RoundTripper that keeps every response, whoever made the request (the test
// or the SDK).
type recorder struct {
	base    http.RoundTripper
	mu      sync.Mutex
	answers []answer
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	echo, _ := req.Context().Value(echoKey{}).([]string)
	r.mu.Lock()
	r.answers = append(r.answers, answer{req.Method + " " + req.URL.RequestURI(), resp.StatusCode, resp.Header.Clone(), b, echo})
	r.mu.Unlock()
	return resp, nil
}

func (r *recorder) all() []answer {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]answer(nil), r.answers...)
}

// mintWith mints a user token signed with the data dir's token key but for the given issuer
// and audience, issued at iat for an hour.
func mintWith(t *testing.T, dir, issuer, audience, subject string, iat time.Time) string {
	t.Helper()
	iss, err := auth.OpenIssuer(filepath.Join(dir, issuerKeyFile), issuer, audience)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := iss.Mint(auth.TokenRequest{Subject: subject, Role: pulsebase.RoleUser, TTL: time.Hour}, iat)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// mintForeign mints an otherwise valid token with a key the server does not know.
func mintForeign(t *testing.T, subject string) string {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := auth.NewIssuer(key, auth.DefaultIssuer, auth.DefaultAudience).
		Mint(auth.TokenRequest{Subject: subject, Role: pulsebase.RoleUser, TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// tamperClaims makes tok speak for an admin, keeping its signature.
func tamperClaims(t *testing.T, tok string) string {
	t.Helper()
	p := strings.Split(tok, ".")
	b, err := base64.RawURLEncoding.DecodeString(p[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	c["role"] = "admin"
	b, _ = json.Marshal(c)
	return p[0] + "." + base64.RawURLEncoding.EncodeToString(b) + "." + p[2]
}

// flipSignature changes one character in the middle of tok's signature.
func flipSignature(tok string) string {
	i := strings.LastIndex(tok, ".") + 10
	c := byte('A')
	if tok[i] == 'A' {
		c = 'B'
	}
	return tok[:i] + string(c) + tok[i+1:]
}

// keyMaterial returns the secret parts of the key files in dir, in the encodings a careless
// log line would use: the files' PEM or JSON text and the raw keys in base64 and hex.
func keyMaterial(t *testing.T, dir string) []secret {
	t.Helper()
	var out []secret
	raw := func(name string, b []byte) {
		out = append(out,
			secret{name + " (base64)", base64.StdEncoding.EncodeToString(b), true},
			secret{name + " (base64url)", base64.RawURLEncoding.EncodeToString(b), true},
			secret{name + " (hex)", hex.EncodeToString(b), true})
	}
	pemKey := func(file string) any {
		b, err := os.ReadFile(filepath.Join(dir, "keys", file))
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			t.Fatalf("keys/%s is not PEM", file)
		}
		out = append(out, secret{"keys/" + file, strings.TrimSpace(string(b)), true})
		raw("keys/"+file+" DER", blk.Bytes)
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	tk, ok := pemKey("token.key").(ed25519.PrivateKey)
	if !ok {
		t.Fatal("keys/token.key is not an Ed25519 key")
	}
	raw("token key seed", tk.Seed())
	ek, ok := pemKey("tls.key").(*ecdsa.PrivateKey)
	if !ok {
		t.Fatal("keys/tls.key is not an ECDSA key")
	}
	d, err := ek.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	raw("TLS private scalar", d)

	b, err := os.ReadFile(filepath.Join(dir, "keys", "kek.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ks struct {
		Key []struct {
			KeyData struct {
				Value string `json:"value"`
			} `json:"keyData"`
		} `json:"key"`
	}
	if err := json.Unmarshal(b, &ks); err != nil || len(ks.Key) == 0 {
		t.Fatalf("keys/kek.json: got %v and %d keys, want a Tink JSON keyset", err, len(ks.Key))
	}
	for i, k := range ks.Key {
		v, err := base64.StdEncoding.DecodeString(k.KeyData.Value)
		if err != nil || len(v) < 32 {
			t.Fatalf("kek.json key %d: value is not base64 of a serialized key (%v)", i, err)
		}
		out = append(out, secret{fmt.Sprintf("kek.json key %d value", i), k.KeyData.Value, true})
		// An AesGcmKey proto ends with its 32-byte key value.
		raw(fmt.Sprintf("kek.json key %d AES key", i), v[len(v)-32:])
	}
	return out
}

// checkKeyFileModes checks that the key files are readable by their owner only.
func checkKeyFileModes(t *testing.T, dir string) {
	t.Helper()
	for _, f := range []string{"keys/token.key", "keys/kek.json", "keys/tls.key"} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Error(err)
			continue
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s: got mode %#o, want 0600", f, perm)
		}
	}
	fi, err := os.Stat(filepath.Join(dir, "keys"))
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		t.Errorf("keys/: got mode %#o, want no access for group or others", perm)
	}
}

// checkKeyFilesRefusedWhenReadable makes each key file readable by others in turn and checks
// that serve (and token, for the token key) refuse to start, naming the file and the fix
// without showing any secret; with the mode restored, serve starts again.
func checkKeyFilesRefusedWhenReadable(t *testing.T, dir string, secrets []secret) {
	t.Helper()
	for _, f := range []string{"keys/kek.json", "keys/token.key", "keys/tls.key"} {
		path := filepath.Join(dir, f)
		if err := os.Chmod(path, 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := serveFails(t, "--data-dir", dir, "--http-addr", "127.0.0.1:0", "--tls-self-signed")
		msgs := []string{err.Error(), out}
		if got := exitCode(err); got != 1 {
			t.Errorf("%s mode 0644: got exit code %d (%v), want 1", f, got, err)
		}
		if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("%s mode 0644: got %q, want it to name %s and say chmod 600", f, err, path)
		}
		if f == "keys/token.key" {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), []string{"token", "--data-dir", dir, "--user", "x"}, noEnv, nil, &stdout, &stderr)
			if err == nil || exitCode(err) != 1 || stdout.Len() > 0 {
				t.Errorf("token with %s mode 0644: got %v and %q, want exit code 1 and no token", f, err, stdout.String())
			} else {
				msgs = append(msgs, err.Error(), stderr.String())
			}
		}
		for _, m := range msgs {
			for _, s := range secrets {
				if strings.Contains(m, s.value) {
					t.Errorf("%s mode 0644: the error contains the %s", f, s.name)
				}
			}
		}
		if err := os.Chmod(path, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// With the modes restored the same data dir starts: the refusals were the modes' doing.
	s := startLive(t, dir, filepath.Join(dir, "keys", "tls.crt"), "--tls-self-signed")
	if err := s.stop(); err != nil {
		t.Error(err)
	}
}
