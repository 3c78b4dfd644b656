// Package pbtest holds test helpers shared by the packages of this module: a whole server
// stack on real parts (SQLite in a temp dir, the embedded JetStream broker, the vault and
// the token issuer), or the parts alone for a test of one service, reading a user's change
// feed, polling with a deadline instead of sleeping, and the quantiles of Prometheus
// histograms that benchmarks report.
//
// Only tests import it.
package pbtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/auth"
	"github.com/pulsebase/pulsebase/internal/broker"
	"github.com/pulsebase/pulsebase/internal/consent"
	"github.com/pulsebase/pulsebase/internal/httpapi"
	"github.com/pulsebase/pulsebase/internal/ingest"
	"github.com/pulsebase/pulsebase/internal/processor"
	"github.com/pulsebase/pulsebase/internal/profile"
	"github.com/pulsebase/pulsebase/internal/recommend"
	"github.com/pulsebase/pulsebase/internal/sqlite"
	"github.com/pulsebase/pulsebase/internal/syncgw"
	"github.com/pulsebase/pulsebase/internal/telemetry"
	"github.com/pulsebase/pulsebase/internal/vault"
)

// TB is what the helpers need of a test: testing.TB has it, and so does Example, for the
// runnable examples of the public packages.
type TB interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	TempDir() string
	Cleanup(func())
}

// Example is a TB for Example functions, which have no *testing.T: Fatal panics, and
// Close runs the cleanups.
type Example struct {
	cleanups []func()
}

// Helper does nothing.
func (e *Example) Helper() {}

// Fatal panics with args.
func (e *Example) Fatal(args ...any) { panic(fmt.Sprint(args...)) }

// Fatalf panics with the formatted message.
func (e *Example) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }

// TempDir returns a new temporary directory, removed by Close.
func (e *Example) TempDir() string {
	dir, err := os.MkdirTemp("", "pulsebase-example-")
	if err != nil {
		panic(err)
	}
	e.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// Cleanup registers fn to run at Close, last registered first.
func (e *Example) Cleanup(fn func()) { e.cleanups = append(e.cleanups, fn) }

// Close runs the cleanups.
func (e *Example) Close() {
	for i := len(e.cleanups) - 1; i >= 0; i-- {
		e.cleanups[i]()
	}
	e.cleanups = nil
}

// Server is a running Pulsebase HTTP API on real parts, stopped at test cleanup.
type Server struct {
	URL     string
	DataDir string
	Issuer  *auth.Issuer
	Broker  *broker.Broker
	Store   pulsebase.Store
	Vault   *vault.Vault
	Users   *httpapi.Users
	Consent *consent.Service
	Metrics *telemetry.Metrics
	// Revocations and Gateway are the server's token revocations and sync gateway.
	Revocations *auth.Revocations
	// Grants are the users' grants to coaches.
	Grants *auth.Grants
	// DeviceURL is the device listener (mutual TLS with DeviceCA's certificates).
	DeviceURL string
	DeviceCA  *auth.DeviceCA
	Devices   *auth.Devices
	Gateway   *syncgw.Gateway
	Ingest    *ingest.Service
	// Logs receives everything the server logs, as JSON lines.
	Logs *SyncBuffer
}

// MustOpenServer starts a server in a new temp data dir.
func MustOpenServer(t TB) *Server {
	return MustOpenServerWith(t, syncgw.Config{})
}

// MustOpenServerWith starts a server whose sync gateway has the limits cfg.
func MustOpenServerWith(t TB, cfg syncgw.Config) *Server {
	return MustOpenServerOpts(t, Options{Gateway: cfg})
}

// Options configure a test server.
type Options struct {
	// Gateway are the sync gateway's limits.
	Gateway syncgw.Config
	// Flush is the processor's commit interval: 50 ms when zero, a tenth of the
	// production default, so that tests wait less.
	Flush time.Duration
	// Rules is the recommendation rule library; nil means the built-in one.
	Rules *recommend.Rules
	// DailyEvery is how often at most the processor recomputes a user's days: the
	// production default when zero.
	DailyEvery time.Duration
}

// MustOpenServerOpts starts a server configured by o.
func MustOpenServerOpts(t TB, o Options) *Server {
	cfg := o.Gateway
	if o.Flush == 0 {
		o.Flush = 50 * time.Millisecond
	}
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	logs := &SyncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	store, err := sqlite.Open(ctx, filepath.Join(dir, "pulsebase.db"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := vault.Open(ctx, store, vault.Config{DataDir: dir, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	iss, err := auth.OpenIssuer(filepath.Join(dir, "keys", "token.key"), auth.DefaultIssuer, auth.DefaultAudience)
	if err != nil {
		t.Fatal(err)
	}
	brk, err := broker.Open(ctx, broker.Config{DataDir: dir}, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.AttachBroker(ctx, brk.JetStream(), 1); err != nil {
		t.Fatal(err)
	}
	if err := v.EnsureProcessingKey(ctx); err != nil {
		t.Fatal(err)
	}
	cons, err := consent.New(ctx, store, v, brk.JetStream(), 1, log)
	if err != nil {
		t.Fatal(err)
	}
	revs, err := auth.NewRevocations(ctx, brk.JetStream(), 1, log)
	if err != nil {
		t.Fatal(err)
	}
	grants, err := auth.NewGrants(ctx, brk.JetStream(), 1, log)
	if err != nil {
		t.Fatal(err)
	}
	policy := auth.NewPolicy(grants)
	authn := &auth.Authenticator{Tokens: iss, Revocations: revs}
	deviceCA, err := auth.OpenDeviceCA(ctx, v)
	if err != nil {
		t.Fatal(err)
	}
	devices, err := auth.NewDevices(ctx, brk.JetStream(), 1, deviceCA, iss, revs, httpapi.DeviceSealer{Vault: v})
	if err != nil {
		t.Fatal(err)
	}
	// The device listener: the same API over mutual TLS with the device CA, as
	// --device-mtls-addr serves it.
	dl := httptest.NewUnstartedServer(nil)
	// httptest puts its own certificate in Certificates unless one is there, and a client
	// dialling an IP sends no SNI, so GetCertificate would never be asked: give it one.
	serverCert, err := deviceCA.ServerCertificates([]string{"127.0.0.1", "localhost"})(nil)
	if err != nil {
		t.Fatal(err)
	}
	dl.TLS = deviceCA.TLSConfig(*serverCert)
	runCtx, cancel := context.WithCancel(ctx)
	consentDone := make(chan error, 1)
	go func() { consentDone <- cons.Run(runCtx) }()
	revsDone := make(chan error, 1)
	go func() { revsDone <- revs.Run(runCtx) }()
	grantsDone := make(chan error, 1)
	go func() { grantsDone <- grants.Run(runCtx) }()
	vaultDone := make(chan error, 1)
	go func() { vaultDone <- v.Watch(runCtx) }()
	m := telemetry.NewMetrics()
	coord, err := processor.NewCoordinator(ctx, brk.JetStream(), processor.CoordinatorConfig{Partitions: brk.Partitions(), Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if o.Rules == nil {
		if o.Rules, err = recommend.NewRules("", log); err != nil {
			t.Fatal(err)
		}
	}
	profiles := profile.New(store, v, brk.JetStream(), log)
	procDone := make(chan error, 1)
	go func() {
		procDone <- coord.Run(runCtx, processor.NewRunner(brk.JetStream(), store, v, cons, processor.RunnerConfig{Flush: o.Flush, Log: log, Metrics: m,
			DailyEvery: o.DailyEvery, Rules: o.Rules, Profiles: profiles}))
	}()
	users := httpapi.NewUsers(store, v)
	ing := ingest.NewService(v, cons, brk, m, log, nil)
	gw := syncgw.New(cfg, syncgw.Deps{
		JetStream: brk.JetStream(), Vault: v, Store: store, Ingest: ing, Profiles: profiles, Consent: cons,
		Revocations: revs, Authenticate: authn.Authenticate, Resolve: users.Resolve, Metrics: m, Log: log,
		Policy: policy, Grants: grants,
	})
	gwDone := make(chan error, 1)
	go func() { gwDone <- gw.Run(runCtx) }()
	api := httpapi.New(httpapi.Deps{
		Issuer: iss, Users: users, Ingest: ing, Consent: cons, Vault: v, Store: store, Metrics: m,
		JetStream: brk.JetStream(), Partitions: brk.Partitions(), Profiles: profiles, Sync: gw, Revocations: revs,
		Rules: o.Rules, Ready: brk.Ready, Log: log, Version: "test", Grants: grants, Policy: policy, Audit: store,
		Devices: devices, DeviceURL: "https://" + dl.Listener.Addr().String(),
	})
	hs := httptest.NewServer(api.Handler())
	dl.Config.Handler = api.Handler()
	dl.StartTLS()
	WaitFor(t, 10*time.Second, "the sync gateway", gw.Ready)
	t.Cleanup(func() {
		cancel()
		<-gwDone
		hs.Close()
		dl.Close()
		<-consentDone
		<-revsDone
		<-grantsDone
		<-vaultDone
		<-procDone
		brk.Close()
		store.Close()
	})
	return &Server{URL: hs.URL, DataDir: dir, Issuer: iss, Broker: brk, Store: store, Vault: v, Users: users,
		Consent: cons, Metrics: m, Logs: logs, Revocations: revs, Gateway: gw, Ingest: ing, Grants: grants,
		DeviceURL: "https://" + dl.Listener.Addr().String(), DeviceCA: deviceCA, Devices: devices}
}

// Token mints a token for subject with role (and device, for device tokens).
func (s *Server) Token(t TB, subject string, role pulsebase.Role, device string) string {
	t.Helper()
	tok, err := s.Issuer.Mint(auth.TokenRequest{Subject: subject, Role: role, Device: device, TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// AllConsent is a consent body granting every category and purpose.
const AllConsent = `{"collect":{"heart":true,"activity":true,"sleep":true,"body":true,"mind":true,"nutrition":true},` +
	`"purposes":{"personalization":true,"research":true,"model_training":true}}`

// Grant records consent body for the owner of token through the public API, as an app
// would, and fails the test if it is refused.
func Grant(t TB, baseURL, token, body string) {
	t.Helper()
	r := Do(t, "PUT", baseURL+"/v1/users/me/consents", token, "application/json", []byte(body))
	if r.Status != http.StatusOK {
		t.Fatalf("PUT consents: got %d %s, want 200", r.Status, r.Body)
	}
}

// UserToken mints a user token for subject who consented to everything.
func (s *Server) UserToken(t TB, subject string) string {
	t.Helper()
	tok := s.Token(t, subject, pulsebase.RoleUser, "")
	Grant(t, s.URL, tok, AllConsent)
	return tok
}

// Response is an HTTP response with its body read.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into v, failing the test if it is not JSON.
func (r Response) JSON(t TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("response body is not JSON (%v): %.200s", err, r.Body)
	}
}

// Do sends a request with an optional bearer token and content type.
func Do(t TB, method, url, token, contentType string, body []byte) Response {
	t.Helper()
	return DoWith(t, http.DefaultClient, method, url, token, contentType, body)
}

// DoWith is Do with client c (a device's mutual-TLS client, say).
func DoWith(t TB, c *http.Client, method, url, token, contentType string, body []byte) Response {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// WaitFor polls cond every 10 ms until it returns true or timeout passes, then fails.
func WaitFor(t TB, timeout time.Duration, what string, cond func() bool, describe ...func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			state := ""
			for _, d := range describe {
				state += "\n" + d()
			}
			t.Fatalf("timed out after %s waiting for %s%s", timeout, what, state)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// SyncBuffer is a bytes.Buffer safe for concurrent writers and readers.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
