package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/tink-crypto/tink-go/v2/insecurecleartextkeyset"
	"github.com/tink-crypto/tink-go/v2/keyset"
	aesgcmpb "github.com/tink-crypto/tink-go/v2/proto/aes_gcm_go_proto"
	hmacprfpb "github.com/tink-crypto/tink-go/v2/proto/hmac_prf_go_proto"
	"google.golang.org/protobuf/proto"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/broker"
	"github.com/pulsebase/pulsebase/internal/httpapi"
	"github.com/pulsebase/pulsebase/internal/ingest"
	"github.com/pulsebase/pulsebase/internal/pbtest"
	"github.com/pulsebase/pulsebase/internal/sqlite"
	"github.com/pulsebase/pulsebase/internal/vault"
)

// runMainEnv makes the test binary run main() instead of the tests, so that a test can
// start `pulsebase …` as a child process (and kill it) without building the binary.
const runMainEnv = "PULSEBASE_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main() // exits
	}
	os.Exit(m.Run())
}

// pulsebaseCmd returns a command that runs `pulsebase args…` in a child process: this
// test binary re-executed as main. The child gets none of the PULSEBASE_* variables of
// the environment, which would configure its flags.
func pulsebaseCmd(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = []string{runMainEnv + "=1"}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PULSEBASE_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	return cmd
}

const newKEKURI = "local://keys/kek-2.json"

// TestRotateKEKCrashAndResume is the acceptance test of `pulsebase keys rotate-kek`: while
// a server runs, a rotation in another process is killed with SIGKILL after its first page
// of keys, the server keeps serving throughout (with keys under both KEKs), a second run
// finishes the job, the old KEK is retired, everything sealed before still opens with the
// new KEK alone, and no key material reaches a disk or the key event log.
func TestRotateKEKCrashAndResume(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	// A key cache of one user makes the server unwrap keys from the store on almost every
	// request, so it really reads keys wrapped by either KEK while the rotation runs. The
	// clients post as fast as they can from one address: no rate limits.
	srv := startServer(t, dir, "--key-cache-size", "1", "--rate-per-address", "0", "--rate-per-principal", "0")
	store := openSQLite(t, dir)
	oldKEK := primaryKEK(t, store)

	// Users of the API: each has a device that posts samples, and a consent receipt.
	alice := newAPIUser(t, srv, dir, "alice@example.com")
	bob := newAPIUser(t, srv, dir, "bob@example.com")
	alice.post(t, srv.url, 20)
	bob.post(t, srv.url, 20)

	// Many more users, created as another server process would create them.
	// (With the system's keys, including the processing tier's raw secrets, that is
	// more than three pages of keys for the rotation.)
	const bulkUsers = 800
	start := wrappedCounts(t, store)[oldKEK]
	bulk, sealed := makeUsers(t, store, dir, bulkUsers)
	before := wrappedCounts(t, store)
	if len(before) != 1 || before[oldKEK] != start+2*bulkUsers {
		t.Fatalf("got wrapped keys %v, want %d under %s", before, start+2*bulkUsers, oldKEK)
	}
	oldKEKFile := kekMaterial(t, filepath.Join(dir, "keys", "kek.json"))

	// Traffic for the whole rotation: a device posting, an app reading consents.
	load := startLoad(srv.url, alice, bob)

	// The crash: kill the rotation right after its first page of keys.
	cmd := pulsebaseCmd(t, "keys", "rotate-kek", "--to", newKEKURI, "--data-dir", dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr pbtest.SyncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	crashing := cmd.Process
	t.Cleanup(func() { crashing.Kill() })
	sc := bufio.NewScanner(out)
	var first string
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, "progress:") {
			first = line
			if err := crashing.Kill(); err != nil { // SIGKILL
				t.Fatal(err)
			}
			break
		} else {
			t.Fatalf("rotate-kek printed %q before any progress line", line)
		}
	}
	io.Copy(io.Discard, out)
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != -1 || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("rotate-kek: got %v after %q, want it killed\n%s", err, first, stderr.String())
	}
	if first != "progress: 500 keys" {
		t.Errorf("got first progress line %q, want %q", first, "progress: 500 keys")
	}

	// Halfway: keys are under both KEKs, the new one is primary, the old one still registered.
	newKEK := primaryKEK(t, store)
	atCrash := wrappedCounts(t, store)
	if newKEK == oldKEK || len(atCrash) != 2 || atCrash[oldKEK] == 0 || atCrash[newKEK] < 500 {
		t.Fatalf("after the crash: got primary %s and wrapped keys %v, want a new primary wrapping at least 500 keys and %s the rest", newKEK, atCrash, oldKEK)
	}
	if n := len(keks(t, store)); n != 2 {
		t.Errorf("after the crash: got %d registered KEKs, want 2", n)
	}
	assertNoKeyMaterial(t, dir, userKeyMaterial(t, store, dir, alice.id), "alice's keys (after the crash)")

	// The server serves users whose keys are under either KEK …
	for _, kek := range []string{oldKEK, newKEK} {
		id := someUserUnder(t, store, kek)
		u := &apiUser{subject: bulk[id]}
		u.token = mintToken(t, dir, "--user", u.subject)
		pbtest.Grant(t, srv.url, u.token, pbtest.AllConsent)
		u.id = me(t, srv.url, u.token)
		if u.id != id {
			t.Fatalf("subject %s: the server resolved user %s, want %s", u.subject, u.id, id)
		}
		u.readConsents(t, srv.url)
	}
	// … and wraps a new user's keys with the new KEK, which it learns from the registry.
	newUserUnder(t, srv, dir, store, newKEK)

	// The second run resumes: it moves exactly the keys the first left behind.
	var rout, rerr bytes.Buffer
	cmd = pulsebaseCmd(t, "keys", "rotate-kek", "--to", newKEKURI, "--data-dir", dir)
	cmd.Stdout, cmd.Stderr = &rout, &rerr
	if err := cmd.Run(); err != nil {
		t.Fatalf("second rotate-kek: %v\n%s%s", err, rout.String(), rerr.String())
	}
	want := fmt.Sprintf("rotated: %d keys re-wrapped, 0 already moved; primary kek %s; retired [%s]", atCrash[oldKEK], newKEK, oldKEK)
	if !strings.Contains(rout.String(), want) {
		t.Errorf("second rotate-kek: got\n%s\nwant a line %q", rout.String(), want)
	}
	after := wrappedCounts(t, store)
	if len(after) != 1 || after[newKEK] < before[oldKEK] {
		t.Errorf("after the rotation: got wrapped keys %v, want all %d+ under %s", after, before[oldKEK], newKEK)
	}
	if ks := keks(t, store); len(ks) != 1 || ks[0].ID != newKEK || !ks[0].Primary || ks[0].URI != newKEKURI {
		t.Errorf("after the rotation: got registry %+v, want only %s (%s), primary", ks, newKEK, newKEKURI)
	}

	// Still serving, and still wrapping new keys with the new KEK.
	newUserUnder(t, srv, dir, store, newKEK)
	alice.post(t, srv.url, 5)
	bob.readConsents(t, srv.url)
	posted, failures := load.stop()
	if failures != "" {
		t.Errorf("requests failed while the rotation ran:\n%s", failures)
	}
	if posted == 0 {
		t.Error("no sample was posted while the rotation ran")
	}
	alice.posted += posted

	// The audit log: two starts (one crashed), one finish, no key material of either KEK.
	kekFiles := append(oldKEKFile, kekMaterial(t, filepath.Join(dir, "keys", "kek-2.json"))...)
	var actions []string
	for _, e := range keyEvents(t, store) {
		if strings.HasPrefix(e.Action, "kek.") {
			actions = append(actions, e.Action)
		}
		for _, m := range kekFiles {
			if strings.Contains(e.Detail, m) {
				t.Errorf("key event %s holds key material of a KEK: %s", e.Action, e.Detail)
			}
		}
	}
	if got := strings.Join(actions, ","); got != "kek.rotate.start,kek.rotate.start,kek.rotate.done" {
		t.Errorf("got key events %s, want two starts and one done", got)
	}
	var evOut, evErr bytes.Buffer
	// After the rotation the new KEK is the one to name. (With the default --kek-uri, the
	// old kek.json, the command would register the retired KEK again.)
	if err := run(ctx, []string{"keys", "events", "--data-dir", dir, "--kek-uri", newKEKURI}, noEnv, nil, &evOut, &evErr); err != nil {
		t.Fatalf("keys events: %v\n%s", err, evErr.String())
	}
	if n, m := strings.Count(evOut.String(), "\tkek.rotate.start\t"), strings.Count(evOut.String(), "\tkek.rotate.done\t"); n != 2 || m != 1 {
		t.Errorf("keys events: got %d starts and %d dones in\n%s\nwant 2 and 1", n, m, evOut.String())
	}

	if err := srv.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	// No plaintext key material anywhere in the data dir: not the users' data or identity
	// keys, and not the old KEK outside its own file.
	for _, id := range []string{alice.id, bob.id, someUserUnder(t, store, newKEK)} {
		assertNoKeyMaterial(t, dir, userKeyMaterial(t, store, dir, id), "keys of "+id)
	}
	assertNoKeyMaterial(t, dir, kekRawMaterial(t, filepath.Join(dir, "keys", "kek.json")), "the old KEK")

	// The old KEK file can go: everything sealed before the rotation opens with the new
	// KEK alone.
	if err := os.Remove(filepath.Join(dir, "keys", "kek.json")); err != nil {
		t.Fatal(err)
	}
	samples := streamSamples(t, dir, newKEKURI)
	for _, u := range []*apiUser{alice, bob} {
		if got := len(samples[u.id]); got != u.posted {
			t.Errorf("%s: got %d samples in the stream, want %d", u.subject, got, u.posted)
		}
	}
	fresh := openVault(t, store, dir, newKEKURI)
	for id, ct := range sealed {
		k, err := fresh.UserKeys(ctx, id)
		if err != nil {
			t.Fatalf("keys of %s: %v", id, err)
		}
		if p, err := k.Open("test", id, ct); err != nil || string(p) != "payload of "+id {
			t.Errorf("%s: got %q, %v; want the payload sealed before the rotation", id, p, err)
		}
	}
	// A server that knows only the new KEK starts and reads consents sealed long before.
	srv = startServer(t, dir, "--kek-uri", newKEKURI, "--rate-per-address", "0", "--rate-per-principal", "0")
	alice.readConsents(t, srv.url)
	if ks := keks(t, store); len(ks) != 1 {
		t.Errorf("after a restart on the new KEK: got registry %+v, want it alone", ks)
	}
}

// TestKeysRotateUser runs `pulsebase keys rotate-user` through run() against a running
// server: samples the user posted before still open, samples posted after are sealed with
// the new key version (the server hears of the rotation through the broker), and the key
// event log says so.
func TestKeysRotateUser(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	srv := startServer(t, dir, "--nats-listen", "127.0.0.1:0")
	m := natsListening.FindStringSubmatch(srv.stdout.String())
	if m == nil {
		t.Fatalf("serve with --nats-listen printed no nats URL:\n%s", srv.stdout)
	}
	natsURL := m[1]
	alice := newAPIUser(t, srv, dir, "alice@example.com")
	alice.post(t, srv.url, 10)
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, broker.StreamSamples)
	if err != nil {
		t.Fatal(err)
	}
	lastKeyID := func() uint32 {
		t.Helper()
		msg, err := stream.GetLastMsgForSubject(ctx, broker.SampleSubject(broker.Partition(alice.id, 64), alice.id))
		if err != nil {
			t.Fatal(err)
		}
		return tinkKeyID(t, msg.Data)
	}
	oldID := lastKeyID()

	var out, errb bytes.Buffer
	args := []string{"keys", "rotate-user", "--user", alice.subject, "--data-dir", dir, "--nats-url", natsURL}
	if err := run(ctx, args, noEnv, nil, &out, &errb); err != nil {
		t.Fatalf("rotate-user: %v\n%s", err, errb.String())
	}
	mm := regexp.MustCompile(`rotated: user (\S+) has primary key version (\d+)`).FindStringSubmatch(out.String())
	if mm == nil || mm[1] != alice.id {
		t.Fatalf("rotate-user: got %q, want user %s rotated", out.String(), alice.id)
	}
	v, _ := strconv.ParseUint(mm[2], 10, 32)
	newID := uint32(v)
	if newID == oldID {
		t.Fatalf("got key version %d after the rotation, the one before it", newID)
	}
	// The server drops its cached keys when the rotation is announced; once a sample is
	// sealed with the new version, every later one is.
	pbtest.WaitFor(t, 10*time.Second, "a sample sealed with the new key version", func() bool {
		alice.post(t, srv.url, 1)
		return lastKeyID() == newID
	})
	newFrom := alice.posted
	alice.post(t, srv.url, 10)
	alice.readConsents(t, srv.url)

	out.Reset()
	if err := run(ctx, []string{"keys", "events", "--data-dir", dir}, noEnv, nil, &out, &errb); err != nil {
		t.Fatalf("keys events: %v\n%s", err, errb.String())
	}
	if ev := out.String(); !strings.Contains(ev, "\tuser.rotate\t") || !strings.Contains(ev, alice.id) || strings.Contains(ev, alice.subject) {
		t.Errorf("keys events: got\n%s\nwant a user.rotate event naming %s by id only", ev, alice.id)
	}
	if err := srv.stop(); err != nil {
		t.Fatal(err)
	}

	got := streamSamples(t, dir, vault.DefaultKEKURI)[alice.id]
	if len(got) != alice.posted {
		t.Fatalf("got %d samples, want %d", len(got), alice.posted)
	}
	for i, s := range got {
		switch {
		case i < 10 && s.keyID != oldID:
			t.Errorf("sample %d, posted before the rotation: got key version %d, want %d", i, s.keyID, oldID)
		case i >= newFrom && s.keyID != newID:
			t.Errorf("sample %d, posted after the rotation: got key version %d, want %d", i, s.keyID, newID)
		}
	}
}

// TestKeysUsage checks the usage errors of the keys commands: exit code 2 and a message
// naming the mistake, before anything is opened.
func TestKeysUsage(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no command", []string{"keys"}, 2, "Commands:"},
		{"unknown command", []string{"keys", "rotate-everything", "--data-dir", dir}, 2, "unknown command"},
		{"rotate-kek without --to", []string{"keys", "rotate-kek", "--data-dir", dir}, 2, "--to is required"},
		{"rotate-kek with empty --to", []string{"keys", "rotate-kek", "--to", "", "--data-dir", dir}, 2, "--to is required"},
		{"rotate-user without a user", []string{"keys", "rotate-user", "--data-dir", dir}, 2, "exactly one of --user and --user-id"},
		{"rotate-user with both", []string{"keys", "rotate-user", "--user", "a", "--user-id", "u1", "--data-dir", dir}, 2, "exactly one of --user and --user-id"},
		{"negative grace", []string{"keys", "rotate-processing", "--grace", "-1h", "--data-dir", dir}, 2, "--grace must not be negative"},
		{"stray argument", []string{"keys", "events", "--data-dir", dir, "now"}, 2, "unexpected argument"},
		{"rotate-kek help", []string{"keys", "rotate-kek", "--help"}, 0, "resumes where it stopped"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			err := run(context.Background(), c.args, noEnv, nil, &out, &errb)
			if got := exitCode(err); got != c.code {
				t.Errorf("got exit code %d (%v), want %d", got, err, c.code)
			}
			if all := out.String() + errb.String(); !strings.Contains(all, c.want) {
				t.Errorf("got output %q, want it to mention %q", all, c.want)
			}
		})
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
		t.Errorf("a usage error touched the data dir: %v %v", entries, err)
	}
	// The exit code a shell sees, from a real process.
	cmd := pulsebaseCmd(t, "keys", "rotate-user", "--user", "a", "--user-id", "u1", "--data-dir", dir)
	if err := cmd.Run(); exitStatus(err) != 2 {
		t.Errorf("pulsebase keys rotate-user --user a --user-id u1: got %v, want exit status 2", err)
	}
}

func exitStatus(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// apiUser is a user of the HTTP API with a device token (for samples) and a user token.
type apiUser struct {
	subject, id   string
	token, device string
	posted        int // samples accepted so far
}

func newAPIUser(t *testing.T, srv *server, dir, subject string) *apiUser {
	t.Helper()
	u := &apiUser{subject: subject}
	u.token = mintToken(t, dir, "--user", subject)
	u.device = mintToken(t, dir, "--user", subject, "--role", "device", "--device", "watch")
	pbtest.Grant(t, srv.url, u.token, pbtest.AllConsent)
	u.id = me(t, srv.url, u.token)
	return u
}

// sampleSeq makes every posted sample distinct (no duplicates): each starts a second after
// the one before, from a day ago.
var (
	sampleSeq  atomic.Int64
	sampleBase = time.Now().Add(-24 * time.Hour).Truncate(time.Hour)
)

func samplesBody(n int) []byte {
	var parts []string
	for range n {
		st := sampleBase.Add(time.Duration(sampleSeq.Add(1)) * time.Second)
		parts = append(parts, fmt.Sprintf(`{"type":"heart_rate","value":%d,"unit":"bpm","start":%q,"source":"keys-test"}`, 60+len(parts)%40, st.Format(time.RFC3339)))
	}
	return []byte(`{"samples":[` + strings.Join(parts, ",") + `]}`)
}

// post posts n new samples from the user's device.
func (u *apiUser) post(t *testing.T, url string, n int) {
	t.Helper()
	r := pbtest.Do(t, "POST", url+"/v1/samples", u.device, "application/json", samplesBody(n))
	var res struct{ Accepted int }
	if r.Status == http.StatusAccepted {
		r.JSON(t, &res)
	}
	if r.Status != http.StatusAccepted || res.Accepted != n {
		t.Fatalf("%s: post %d samples: got %d %s, want 202 and all accepted", u.subject, n, r.Status, r.Body)
	}
	u.posted += n
}

// readConsents reads the user's consent history, which the server decrypts with their key.
func (u *apiUser) readConsents(t *testing.T, url string) {
	t.Helper()
	r := pbtest.Do(t, "GET", url+"/v1/users/me/consents/history", u.token, "", nil)
	var h struct{ History []json.RawMessage }
	if r.Status == http.StatusOK {
		r.JSON(t, &h)
	}
	if r.Status != http.StatusOK || len(h.History) == 0 {
		t.Fatalf("%s: consent history: got %d %s, want 200 and a receipt", u.subject, r.Status, r.Body)
	}
}

func me(t *testing.T, url, token string) string {
	t.Helper()
	var m struct{ ID string }
	pbtest.Do(t, "GET", url+"/v1/users/me", token, "", nil).JSON(t, &m)
	if m.ID == "" {
		t.Fatal("GET /v1/users/me: no id")
	}
	return m.ID
}

// newUserUnder creates new users through the API until one's keys are wrapped by kek: the
// server re-reads the primary KEK from the registry every 2 seconds.
func newUserUnder(t *testing.T, srv *server, dir string, store *sqlite.Store, kek string) {
	t.Helper()
	pbtest.WaitFor(t, 10*time.Second, "a new user's keys wrapped by "+kek, func() bool {
		u := &apiUser{subject: fmt.Sprintf("new-%d@example.com", sampleSeq.Add(1))}
		u.token = mintToken(t, dir, "--user", u.subject)
		pbtest.Grant(t, srv.url, u.token, pbtest.AllConsent)
		u.id = me(t, srv.url, u.token)
		u.readConsents(t, srv.url)
		wk, err := store.WrappedKey(context.Background(), u.id, "data")
		if err != nil {
			t.Fatal(err)
		}
		return wk.KEKID == kek
	})
}

// load is traffic against a server: one device posting samples, one app reading its
// consents, over and over until stop.
type load struct {
	done     chan struct{}
	wg       sync.WaitGroup
	posted   atomic.Int64
	mu       sync.Mutex
	failures []string
}

func startLoad(url string, poster, reader *apiUser) *load {
	l := &load{done: make(chan struct{})}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for {
			select {
			case <-l.done:
				return
			default:
			}
			if err := request("POST", url+"/v1/samples", poster.device, samplesBody(1), http.StatusAccepted); err != nil {
				l.fail(err)
			} else {
				l.posted.Add(1)
			}
			if err := request("GET", url+"/v1/users/me/consents/history", reader.token, nil, http.StatusOK); err != nil {
				l.fail(err)
			}
		}
	}()
	return l
}

func (l *load) fail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.failures) < 10 {
		l.failures = append(l.failures, err.Error())
	}
}

// stop ends the traffic and returns how many samples were accepted and what failed.
func (l *load) stop() (posted int, failures string) {
	close(l.done)
	l.wg.Wait()
	return int(l.posted.Load()), strings.Join(l.failures, "\n")
}

func request(method, url, token string, body []byte, want int) error {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: got %d %s, want %d", method, url, resp.StatusCode, b, want)
	}
	return nil
}

// makeUsers creates n users with keys as another server process on the same database
// would, and returns their subjects by id, and for every hundredth user a ciphertext
// sealed under their key (record id = user id, payload "payload of ID").
func makeUsers(t *testing.T, store *sqlite.Store, dir string, n int) (subjects map[string]string, sealed map[string][]byte) {
	t.Helper()
	ctx := context.Background()
	v := openVault(t, store, dir, vault.DefaultKEKURI)
	subjects, sealed = map[string]string{}, map[string][]byte{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 4 {
				sub := fmt.Sprintf("bulk-%03d@example.com", i)
				h, err := v.SubjectHash(sub)
				if err != nil {
					errs <- err
					return
				}
				u, _, err := store.EnsureUser(ctx, h, httpapi.NewUserID(), time.Now().UTC())
				if err != nil {
					errs <- err
					return
				}
				k, err := v.UserKeys(ctx, u.ID)
				if err != nil {
					errs <- err
					return
				}
				var ct []byte
				if i%100 == 0 {
					if ct, err = k.Seal("test", u.ID, []byte("payload of "+u.ID)); err != nil {
						errs <- err
						return
					}
				}
				mu.Lock()
				subjects[u.ID] = sub
				if ct != nil {
					sealed[u.ID] = ct
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	return subjects, sealed
}

func openSQLite(t *testing.T, dir string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(dir, sqliteFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func openVault(t *testing.T, store *sqlite.Store, dir, kekURI string) *vault.Vault {
	t.Helper()
	v, err := vault.Open(context.Background(), store, vault.Config{DataDir: dir, KEKURI: kekURI})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func keks(t *testing.T, store *sqlite.Store) []pulsebase.KEKInfo {
	t.Helper()
	ks, err := store.KEKs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

func primaryKEK(t *testing.T, store *sqlite.Store) string {
	t.Helper()
	for _, k := range keks(t, store) {
		if k.Primary {
			return k.ID
		}
	}
	t.Fatal("the KEK registry has no primary")
	return ""
}

func wrappedCounts(t *testing.T, store *sqlite.Store) map[string]int {
	t.Helper()
	c, err := store.CountWrappedKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func keyEvents(t *testing.T, store *sqlite.Store) []pulsebase.KeyEvent {
	t.Helper()
	evs, err := store.KeyEvents(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// someUserUnder returns a user (not the system) whose data key kek wraps.
func someUserUnder(t *testing.T, store *sqlite.Store, kek string) string {
	t.Helper()
	keys, err := store.WrappedKeysByKEK(context.Background(), kek, vault.SystemOwner, "\xff", 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k.Name == "data" {
			return k.Owner
		}
	}
	t.Fatalf("no user's data key is wrapped by %s", kek)
	return ""
}

// userKeyMaterial unwraps the data and identity keysets of user, as the vault does, and
// returns their raw key bytes and the encodings a leak would likely take (base64 of the
// raw key and of Tink's serialized key).
func userKeyMaterial(t *testing.T, store *sqlite.Store, dir, user string) [][]byte {
	t.Helper()
	ctx := context.Background()
	uris := map[string]string{}
	for _, k := range keks(t, store) {
		uris[k.ID] = k.URI
	}
	var out [][]byte
	for _, name := range []string{"data", "identity"} {
		wk, err := store.WrappedKey(ctx, user, name)
		if err != nil {
			t.Fatal(err)
		}
		kek, err := vault.OpenKEK(ctx, uris[wk.KEKID], dir)
		if err != nil {
			t.Fatal(err)
		}
		// The associated data of a wrapped key, as vault.wrapAD makes it.
		ad := []byte("pulsebase/keyset/v1\x00" + user + "\x00" + name)
		h, err := keyset.ReadWithAssociatedData(keyset.NewBinaryReader(bytes.NewReader(wk.Ciphertext)), kek, ad)
		if err != nil {
			t.Fatalf("unwrap %s key of %s: %v", name, user, err)
		}
		out = append(out, keysetMaterial(t, h)...)
	}
	return out
}

// keysetMaterial returns the raw key bytes of each AES-GCM or HMAC-PRF key of h, with
// base64 of those bytes and of each serialized key.
func keysetMaterial(t *testing.T, h *keyset.Handle) [][]byte {
	t.Helper()
	var out [][]byte
	for _, k := range insecurecleartextkeyset.KeysetMaterial(h).GetKey() {
		kd := k.GetKeyData()
		var raw []byte
		switch {
		case strings.HasSuffix(kd.GetTypeUrl(), "AesGcmKey"):
			var g aesgcmpb.AesGcmKey
			if err := proto.Unmarshal(kd.GetValue(), &g); err != nil {
				t.Fatal(err)
			}
			raw = g.GetKeyValue()
		case strings.HasSuffix(kd.GetTypeUrl(), "HmacPrfKey"):
			var p hmacprfpb.HmacPrfKey
			if err := proto.Unmarshal(kd.GetValue(), &p); err != nil {
				t.Fatal(err)
			}
			raw = p.GetKeyValue()
		default:
			t.Fatalf("unexpected key type %s", kd.GetTypeUrl())
		}
		if len(raw) < 32 {
			t.Fatalf("got a %d-byte key, want 32", len(raw))
		}
		out = append(out, raw,
			[]byte(base64.StdEncoding.EncodeToString(raw)),
			[]byte(base64.StdEncoding.EncodeToString(kd.GetValue())))
	}
	return out
}

func readKEKFile(t *testing.T, path string) *keyset.Handle {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h, err := insecurecleartextkeyset.Read(keyset.NewJSONReader(bytes.NewReader(b)))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// kekMaterial returns the strings that would betray the local KEK at path in a text such
// as a key event's detail: base64 of its raw key bytes, and the base64 key value its file
// holds.
func kekMaterial(t *testing.T, path string) []string {
	t.Helper()
	m := keysetMaterial(t, readKEKFile(t, path))
	return []string{string(m[1]), string(m[2])}
}

// kekRawMaterial returns the raw key bytes of the local KEK at path (its file holds them
// only base64-encoded, inside a serialized key).
func kekRawMaterial(t *testing.T, path string) [][]byte {
	t.Helper()
	return keysetMaterial(t, readKEKFile(t, path))[:1]
}

// assertNoKeyMaterial fails if any file under dir contains one of markers. It scans a copy
// made by cp: closing a file descriptor of an SQLite database drops every POSIX lock this
// process holds on it, so reading the database here while a connection of this process
// (the server's, the test's) is open could corrupt it.
func assertNoKeyMaterial(t *testing.T, dir string, markers [][]byte, what string) {
	t.Helper()
	snap := filepath.Join(t.TempDir(), "snapshot")
	if out, err := exec.Command("cp", "-R", dir, snap).CombinedOutput(); err != nil {
		// A running server may delete a temp file while cp copies the directory.
		if !bytes.Contains(out, []byte("No such file")) {
			t.Fatalf("copy the data dir: %v: %s", err, out)
		}
	}
	files := 0
	err := filepath.WalkDir(snap, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		for _, m := range markers {
			if bytes.Contains(b, m) {
				rel, _ := filepath.Rel(snap, path)
				t.Errorf("%s holds key material of %s", rel, what)
				break
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 5 {
		t.Errorf("scanned only %d files; want the keys, database and stream files", files)
	}
}

// streamSample is a sample read back from the SAMPLES stream with the version (Tink key
// id) of the user's key that sealed it.
type streamSample struct {
	pulsebase.Sample
	keyID uint32
}

// streamSamples opens the embedded broker of dir (the server must be stopped) and decrypts
// every sample in the SAMPLES stream with a vault that opens keys with the KEK at kekURI
// only. It returns the samples by user id, in stream order.
func streamSamples(t *testing.T, dir, kekURI string) map[string][]streamSample {
	t.Helper()
	ctx := context.Background()
	brk, err := broker.Open(ctx, broker.Config{DataDir: dir}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer brk.Close()
	store := openSQLite(t, dir)
	v := openVault(t, store, dir, kekURI)
	st, err := brk.JetStream().Stream(ctx, broker.StreamSamples)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]streamSample{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		user := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
		keys, err := v.UserKeys(ctx, user)
		if err != nil {
			t.Fatal(err)
		}
		s, err := ingest.OpenSample(keys, m.Header.Get("Nats-Msg-Id"), m.Data)
		if err != nil {
			t.Fatalf("open sample %d of %s: %v", seq, user, err)
		}
		out[user] = append(out[user], streamSample{s, tinkKeyID(t, m.Data)})
	}
	return out
}

// tinkKeyID returns the id of the key that made a Tink ciphertext: its output prefix is a
// version byte 1 and the key id, big-endian.
func tinkKeyID(t *testing.T, ct []byte) uint32 {
	t.Helper()
	if len(ct) < 5 || ct[0] != 1 {
		t.Fatalf("got a ciphertext starting %x, want a Tink prefix", ct[:min(len(ct), 5)])
	}
	return binary.BigEndian.Uint32(ct[1:5])
}
