package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/broker"
	"github.com/pulsebase/pulsebase/internal/ingest"
	"github.com/pulsebase/pulsebase/internal/pbtest"
	"github.com/pulsebase/pulsebase/internal/sqlite"
	"github.com/pulsebase/pulsebase/internal/vault"
)

// server is a `pulsebase serve` started through run() on port 0.
type server struct {
	url    string
	stdout *pbtest.SyncBuffer
	stderr *pbtest.SyncBuffer
	stop   func() error
}

var listening = regexp.MustCompile(`listening on (http://\S+)`)

func startServer(t *testing.T, dataDir string, extra ...string) *server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{stdout: &pbtest.SyncBuffer{}, stderr: &pbtest.SyncBuffer{}}
	args := append([]string{"serve", "--data-dir", dataDir, "--http-addr", "127.0.0.1:0", "--log-format", "json"}, extra...)
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, noEnv, strings.NewReader(""), s.stdout, s.stderr) }()
	pbtest.WaitFor(t, 30*time.Second, "the server to listen", func() bool {
		select {
		case err := <-done:
			t.Fatalf("serve returned early: %v\n%s", err, s.stderr)
		default:
		}
		m := listening.FindStringSubmatch(s.stdout.String())
		if m != nil {
			s.url = m[1]
		}
		return m != nil
	})
	pbtest.WaitFor(t, 30*time.Second, "readyz", func() bool {
		return pbtest.Do(t, "GET", s.url+"/readyz", "", "", nil).Status == 200
	})
	var once bool
	s.stop = func() error {
		if once {
			return nil
		}
		once = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			return fmt.Errorf("serve did not stop within 30s")
		}
	}
	t.Cleanup(func() { s.stop() })
	return s
}

func noEnv(string) string { return "" }

func mintToken(t *testing.T, dataDir string, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if err := run(context.Background(), append([]string{"token", "--data-dir", dataDir}, args...), noEnv, nil, &out, &errb); err != nil {
		t.Fatalf("token: %v: %s", err, errb.String())
	}
	return strings.TrimSpace(out.String())
}

// TestEndToEnd runs the server through run(), posts samples, restarts it, and checks the
// samples are still in the stream, re-posts are duplicates, and no plaintext reached disk.
func TestEndToEnd(t *testing.T) {
	dir := t.TempDir()
	marker := "MARKER-" + fmt.Sprint(time.Now().UnixNano())
	srv := startServer(t, dir)
	tok := mintToken(t, dir, "--user", "alice@example.com", "--role", "device", "--device", "watch-1")
	pbtest.Grant(t, srv.url, mintToken(t, dir, "--user", "alice@example.com"), pbtest.AllConsent)

	var samples []string
	base := time.Now().Add(-2 * time.Hour).Truncate(time.Minute)
	for i := 0; i < 50; i++ {
		st := base.Add(time.Duration(i) * time.Minute)
		samples = append(samples,
			fmt.Sprintf(`{"type":"heart_rate","value":%d,"unit":"bpm","start":%q,"source":"%s-watch"}`, 60+i%20, st.Format(time.RFC3339), marker),
			fmt.Sprintf(`{"id":"%s-steps-%d","type":"steps","value":%d,"start":%q,"end":%q,"source":"%s-phone"}`, marker, i, 5*i, st.Format(time.RFC3339), st.Add(time.Minute).Format(time.RFC3339), marker))
	}
	body := []byte(`{"samples":[` + strings.Join(samples, ",") + `]}`)
	post := func(url string) (accepted, duplicates int) {
		r := pbtest.Do(t, "POST", url+"/v1/samples", tok, "application/json", body)
		if r.Status != 202 {
			t.Fatalf("got %d %s, want 202", r.Status, r.Body)
		}
		var res struct{ Accepted, Duplicates int }
		r.JSON(t, &res)
		return res.Accepted, res.Duplicates
	}
	if a, d := post(srv.url); a != 100 || d != 0 {
		t.Fatalf("first post: got %d accepted %d duplicates, want 100 and 0", a, d)
	}
	var me struct{ ID string }
	pbtest.Do(t, "GET", srv.url+"/v1/users/me", tok, "", nil).JSON(t, &me)
	if err := srv.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	assertNoMarker(t, dir, marker)

	srv = startServer(t, dir)
	if a, d := post(srv.url); a != 0 || d != 100 {
		t.Errorf("re-post after restart: got %d accepted %d duplicates, want 0 and 100", a, d)
	}
	if strings.Contains(srv.stderr.String(), marker) || strings.Contains(srv.stderr.String(), tok) {
		t.Error("the server logged a sample's source or a token")
	}
	if err := srv.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	assertNoMarker(t, dir, marker)

	// The samples are in the stream, on the user's partition, and open under the user's key.
	got := readStream(t, dir, me.ID)
	if len(got) != 100 {
		t.Fatalf("got %d samples in the stream, want 100", len(got))
	}
	for _, s := range got {
		if !strings.HasPrefix(s.Source, marker) || s.Device != "watch-1" || s.Subject != "alice@example.com" {
			t.Fatalf("got sample %+v, want source with the marker and provenance watch-1/alice", s)
		}
	}
}

// readStream opens the data dir as the server would and decrypts every sample of user.
func readStream(t *testing.T, dir, user string) []pulsebase.Sample {
	t.Helper()
	ctx := context.Background()
	brk, err := broker.Open(ctx, broker.Config{DataDir: dir}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer brk.Close()
	store, err := sqlite.Open(ctx, filepath.Join(dir, sqliteFile))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	v, err := vault.Open(ctx, store, vault.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := v.UserKeys(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	subject := broker.SampleSubject(broker.Partition(user, 64), user)
	st, err := brk.JetStream().Stream(ctx, "SAMPLES")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []pulsebase.Sample
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if m.Subject != subject {
			t.Fatalf("got subject %q, want %q", m.Subject, subject)
		}
		s, err := ingest.OpenSample(keys, m.Header.Get("Nats-Msg-Id"), m.Data)
		if err != nil {
			t.Fatalf("open sample %d: %v", seq, err)
		}
		out = append(out, s)
	}
	return out
}

// assertNoMarker fails if any file under dir contains marker.
func assertNoMarker(t *testing.T, dir, marker string) {
	t.Helper()
	files := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		if bytes.Contains(b, []byte(marker)) {
			t.Errorf("%s contains the plaintext marker", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 5 {
		t.Errorf("scanned only %d files; want the key, database and stream files", files)
	}
}

func TestCLIUsage(t *testing.T) {
	checkUsage(t, []usageCase{
		{"no command", nil, nil, 2, "Commands:"},
		{"unknown command", []string{"frobnicate"}, nil, 2, "unknown command"},
		{"version", []string{"version"}, nil, 0, "pulsebase"},
		{"serve help", []string{"serve", "--help"}, nil, 0, "PULSEBASE_HTTP_ADDR"},
		{"token help", []string{"token", "--help"}, nil, 0, "--role"},
		{"bad flag value", []string{"serve", "--partitions", "0"}, nil, 2, "--partitions 0"},
		{"bad duration", []string{"serve", "--sample-retention", "soon"}, nil, 2, "invalid value"},
		{"bad env value", []string{"serve"}, map[string]string{"PULSEBASE_LOG_FORMAT": "xml"}, 2, "--log-format"},
		{"bad env type", []string{"serve"}, map[string]string{"PULSEBASE_PARTITIONS": "many"}, 2, "PULSEBASE_PARTITIONS"},
		{"unknown role", []string{"serve", "--roles", "ingest,cook"}, nil, 2, "unknown role"},
		{"small sync queue", []string{"serve", "--sync-queue-bytes", "100"}, nil, 2, "--sync-queue-bytes 100"},
		{"more per device than per user", []string{"serve", "--sync-conns-per-device", "30"}, nil, 2, "--sync-conns-per-device 30"},
		{"sync ping from env", []string{"serve"}, map[string]string{"PULSEBASE_SYNC_PING_INTERVAL": "10ms"}, 2, "--sync-ping-interval 10ms"},
		{"bad database url", []string{"serve", "--database-url", "mysql://x"}, nil, 2, "--database-url"},
		{"oidc issuer without audience", []string{"serve", "--oidc-issuer", "https://idp.example"}, nil, 2, "--oidc-issuer needs --oidc-audience"},
		{"oidc issuer not a URL", []string{"serve", "--oidc-issuer", "idp.example", "--oidc-audience", "a"}, nil, 2, "--oidc-issuer \"idp.example\""},
		{"oidc issuer over plain http", []string{"serve", "--oidc-issuer", "http://idp.example", "--oidc-audience", "a"}, nil, 2, "http:// only on loopback"},
		{"oidc audiences per issuer", []string{"serve", "--oidc-issuer", "https://a.example,https://b.example,https://c.example", "--oidc-audience", "x,y"}, nil, 2, "3 issuers, 2 audiences"},
		{"oidc audience alone", []string{"serve"}, map[string]string{"PULSEBASE_OIDC_AUDIENCE": "api"}, 2, "--oidc-audience without --oidc-issuer"},
		{"bad device listener", []string{"serve", "--device-mtls-addr", "8443"}, nil, 2, "--device-mtls-addr"},
		{"token without user", []string{"token", "--data-dir", t.TempDir()}, nil, 2, "--user is required"},
		{"device token without device", []string{"token", "--data-dir", t.TempDir(), "--user", "a", "--role", "device"}, nil, 2, "--device"},
		{"reprocess help", []string{"reprocess", "--help"}, nil, 0, "PULSEBASE_ALL"},
		{"reprocess neither", []string{"reprocess"}, nil, 2, "--user ID or --all"},
		{"reprocess both", []string{"reprocess", "--user", "u1", "--all"}, nil, 2, "--user ID or --all"},
		{"token role from env", []string{"token", "--data-dir", t.TempDir(), "--user", "a"}, map[string]string{"PULSEBASE_ROLE": "root"}, 2, "--role"},
	})
}

// usageCase is one call of the CLI and what it must answer: the exit code and a piece of
// its output.
type usageCase struct {
	name string
	args []string
	env  map[string]string
	code int
	want string
}

// checkUsage runs each case through run() with its environment.
func checkUsage(t *testing.T, cases []usageCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			err := run(context.Background(), c.args, func(k string) string { return c.env[k] }, nil, &out, &errb)
			if got := exitCode(err); got != c.code {
				t.Errorf("got exit code %d (%v), want %d", got, err, c.code)
			}
			if all := out.String() + errb.String(); !strings.Contains(all, c.want) {
				t.Errorf("got output %q, want it to mention %q", all, c.want)
			}
		})
	}
}

func TestEnvTwinsConfigureServe(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{"PULSEBASE_DATA_DIR": dir, "PULSEBASE_HTTP_ADDR": "127.0.0.1:0", "PULSEBASE_LOG_FORMAT": "json"}
	ctx, cancel := context.WithCancel(context.Background())
	out := &pbtest.SyncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve"}, func(k string) string { return env[k] }, nil, out, io.Discard)
	}()
	pbtest.WaitFor(t, 30*time.Second, "listening", func() bool { return listening.MatchString(out.String()) })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, sqliteFile)); err != nil {
		t.Errorf("PULSEBASE_DATA_DIR was not used: %v", err)
	}
}

func TestTokenFlagsWork(t *testing.T) {
	dir := t.TempDir()
	tok := mintToken(t, dir, "--user", "bob", "--role", "device", "--device", "ring-7", "--ttl", "5m")
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("got %q, want a JWS compact token", tok)
	}
	var c map[string]any
	b, _ := base64Decode(parts[1])
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	if c["sub"] != "bob" || c["role"] != "device" || c["dev"] != "ring-7" {
		t.Errorf("got claims %v, want sub bob, role device, dev ring-7", c)
	}
	if exp, iat := c["exp"].(float64), c["iat"].(float64); exp-iat != 300 {
		t.Errorf("got lifetime %vs, want 300s", exp-iat)
	}
}

func base64Decode(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }

// TestDemo: `serve --demo` feeds the demo users through the SDK's sync sessions: their
// watches hold sync connections, and their two hours of data reach the series.
func TestDemo(t *testing.T) {
	s := startServer(t, t.TempDir(), "--demo")
	var tok string
	pbtest.WaitFor(t, 30*time.Second, "the demo token", func() bool {
		lines := strings.Split(s.stdout.String(), "\n")
		for i, l := range lines {
			if strings.HasPrefix(l, "demo: token for demo-alice") && i+1 < len(lines) && lines[i+1] != "" {
				tok = lines[i+1]
				return true
			}
		}
		return false
	})
	pbtest.WaitFor(t, 60*time.Second, "the demo's heart rate in the series", func() bool {
		var series struct{ Points []map[string]any }
		r := pbtest.Do(t, "GET", s.url+"/v1/users/me/series/heart_rate?resolution=1m", tok, "", nil)
		if r.Status != 200 {
			return false
		}
		r.JSON(t, &series)
		return len(series.Points) >= 100 // two hours of minutes, give or take the edges
	})
	pbtest.WaitFor(t, 30*time.Second, "the demo watches' sync connections", func() bool {
		return strings.Contains(string(pbtest.Do(t, "GET", s.url+"/metrics", "", "", nil).Body), "pulsebase_sync_connections 3")
	})
}
