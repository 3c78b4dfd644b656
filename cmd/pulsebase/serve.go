package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/auth"
	"github.com/pulsebase/pulsebase/internal/broker"
	"github.com/pulsebase/pulsebase/internal/consent"
	"github.com/pulsebase/pulsebase/internal/httpapi"
	"github.com/pulsebase/pulsebase/internal/ingest"
	"github.com/pulsebase/pulsebase/internal/postgres"
	"github.com/pulsebase/pulsebase/internal/processor"
	"github.com/pulsebase/pulsebase/internal/profile"
	"github.com/pulsebase/pulsebase/internal/recommend"
	"github.com/pulsebase/pulsebase/internal/sim"
	"github.com/pulsebase/pulsebase/internal/sqlite"
	"github.com/pulsebase/pulsebase/internal/syncgw"
	"github.com/pulsebase/pulsebase/internal/telemetry"
	"github.com/pulsebase/pulsebase/internal/vault"
	"github.com/pulsebase/pulsebase/internal/window"
)

const (
	defaultDataDir = "./pulsebase-data"
	issuerKeyFile  = "keys/token.key"
	sqliteFile     = "pulsebase.db"
)

// knownRoles are the parts of the server a process can run. ingest and api serve HTTP;
// process runs the stream processor (and holds the sealed-sample private key); sync runs
// the sync gateway (GET /v1/sync answers 503 on a process without it).
var knownRoles = []string{"ingest", "process", "sync", "api"}

// Config is every setting of `pulsebase serve`. It is filled from flags and PULSEBASE_*
// environment variables and validated once by validate.
type Config struct {
	DataDir     string
	HTTPAddr    string
	DatabaseURL string // "" means SQLite in the data directory
	NATSURL     string // "" means the embedded broker
	NATSListen  string // embedded broker: "" means no network listener
	Roles       []string
	Demo        bool

	TLSCert           string
	TLSKey            string
	TLSSelfSigned     bool
	InsecurePlaintext bool

	Partitions      int
	SampleRetention time.Duration
	ChangeRetention time.Duration
	DuplicateWindow time.Duration
	Replicas        int
	SyncAlways      bool

	LiveHorizon   time.Duration
	DailyInterval time.Duration
	// Rules is a recommendation rule library file replacing the built-in one; DailyCap the
	// most recommendations a user gets a day.
	Rules    string
	DailyCap int
	// RatePerAddress and RatePerPrincipal are requests a second (0: unlimited), with their
	// bursts.
	RatePerAddress, RatePerPrincipal   float64
	BurstPerAddress, BurstPerPrincipal int
	// Sync gateway limits (internal/syncgw.Config).
	SyncQueueBytes     int
	SyncConnsPerUser   int
	SyncConnsPerDevice int
	SyncPingInterval   time.Duration

	// OIDCIssuers and OIDCAudiences are the external OpenID providers whose tokens are
	// accepted (one audience for all, or one per issuer); OIDCRoleClaim names their role
	// claim.
	OIDCIssuers, OIDCAudiences []string
	OIDCRoleClaim              string
	// DeviceMTLSAddr is the device listener (mutual TLS); DeviceMTLSNames the names its
	// certificate carries; DeviceURL the base URL told to enrolled devices.
	DeviceMTLSAddr  string
	DeviceMTLSNames []string
	DeviceURL       string

	KEKURI       string
	KeyCacheSize int
	KeyCacheTTL  time.Duration

	LogFormat       string
	LogLevel        slog.Level
	ShutdownTimeout time.Duration
}

func (c *Config) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.DataDir, "data-dir", defaultDataDir, "directory for keys, the SQLite database and the embedded broker's files")
	fs.StringVar(&c.HTTPAddr, "http-addr", "127.0.0.1:8080", "HOST:PORT the HTTP API listens on (port 0 picks a free one)")
	fs.StringVar(&c.DatabaseURL, "database-url", "", "postgres://… to use PostgreSQL; empty means SQLite in the data directory")
	fs.StringVar(&c.NATSURL, "nats-url", "", "nats://… of an external NATS JetStream cluster; empty means the embedded broker")
	fs.StringVar(&c.NATSListen, "nats-listen", "", "HOST:PORT to expose the embedded broker on; empty means no network listener")
	fs.Func("roles", "comma-separated parts to run: ingest,process,sync,api (default all)", func(s string) error {
		c.Roles = nil
		for _, r := range strings.Split(s, ",") {
			if r = strings.TrimSpace(r); r != "" {
				c.Roles = append(c.Roles, r)
			}
		}
		return nil
	})
	fs.StringVar(&c.TLSCert, "tls-cert", "", "PEM certificate chain for HTTPS (with --tls-key)")
	fs.StringVar(&c.TLSKey, "tls-key", "", "PEM private key for HTTPS, readable by its owner only")
	fs.BoolVar(&c.TLSSelfSigned, "tls-self-signed", false, "serve HTTPS with a self-signed certificate kept in the data dir (keys/tls.crt)")
	fs.BoolVar(&c.InsecurePlaintext, "insecure-plaintext", false, "allow plain HTTP on a non-loopback address (only behind a TLS-terminating proxy)")
	fs.BoolVar(&c.Demo, "demo", false, "feed a few simulated users with live data so the APIs show something at once")
	fs.IntVar(&c.Partitions, "partitions", 64, "partitions of the SAMPLES stream (fixed when the stream is created)")
	fs.DurationVar(&c.SampleRetention, "sample-retention", 30*24*time.Hour, "how long raw samples stay in the SAMPLES stream")
	fs.DurationVar(&c.ChangeRetention, "change-retention", 30*24*time.Hour, "how long the per-user change feed is kept (the offline horizon)")
	fs.DurationVar(&c.DuplicateWindow, "duplicate-window", 2*time.Minute, "how long the broker remembers sample ids to drop re-sends")
	fs.IntVar(&c.Replicas, "replicas", 1, "stream replicas (3 on a JetStream cluster)")
	fs.BoolVar(&c.SyncAlways, "sync-always", false, "fsync the embedded broker's store on every write (slower; survives power loss)")
	fs.DurationVar(&c.LiveHorizon, "live-horizon", window.DefaultHorizon, "samples this recent update the processor's in-memory windows; older ones take the backfill path")
	fs.DurationVar(&c.DailyInterval, "daily-interval", processor.DefaultDailyEvery, "how often at most a user's daily metrics and baselines are recomputed (series buckets follow every commit)")
	fs.StringVar(&c.Rules, "rules", "", "recommendation rule library (YAML) to use instead of the built-in one; reloaded when it changes\nor on SIGHUP, keeping the last good library when it does not check (see pulsebase rules check)")
	fs.Float64Var(&c.RatePerAddress, "rate-per-address", 1000, "requests a second one source address may make on average (0: no limit); more get 429 with Retry-After")
	fs.IntVar(&c.BurstPerAddress, "rate-burst-per-address", 2000, "requests one source address may make at once")
	fs.Float64Var(&c.RatePerPrincipal, "rate-per-principal", 200, "requests a second one token subject (user, device, …) may make on average (0: no limit)")
	fs.IntVar(&c.BurstPerPrincipal, "rate-burst-per-principal", 400, "requests one token subject may make at once")
	fs.IntVar(&c.DailyCap, "recommend-daily-cap", recommend.DefaultDailyCap, "most recommendations delivered to a user per local day")
	fs.IntVar(&c.SyncQueueBytes, "sync-queue-bytes", 1<<20, "bytes of frames a sync connection may have waiting; a client that falls further behind is closed with 4008 and resumes from its cursor")
	fs.IntVar(&c.SyncConnsPerUser, "sync-conns-per-user", 20, "sync connections one user may hold on this process")
	fs.IntVar(&c.SyncConnsPerDevice, "sync-conns-per-device", 3, "sync connections one device may hold on this process")
	fs.DurationVar(&c.SyncPingInterval, "sync-ping-interval", 15*time.Second, "how often sync connections are pinged; one silent for two intervals is closed")
	list := func(dst *[]string) func(string) error {
		return func(v string) error {
			for _, x := range strings.Split(v, ",") {
				if x = strings.TrimSpace(x); x != "" {
					*dst = append(*dst, x)
				}
			}
			return nil
		}
	}
	fs.Func("oidc-issuer", "accept tokens of this external OpenID provider (issuer URL; repeatable or comma-separated), checked\nthrough its discovery document and JWKS; its subjects become users as issuer#sub", list(&c.OIDCIssuers))
	fs.Func("oidc-audience", "the audience tokens of the --oidc-issuer must carry: one for all issuers, or one per issuer in order", list(&c.OIDCAudiences))
	fs.StringVar(&c.OIDCRoleClaim, "oidc-role-claim", auth.DefaultRoleClaim, "claim of an external token naming its role (user, coach, analyst or admin; absent: user)")
	fs.StringVar(&c.DeviceMTLSAddr, "device-mtls-addr", "", "HOST:PORT of the device listener: mutual TLS with certificates of the built-in device CA,\ncertificate-bound device tokens and refresh (empty: no device listener; enrollment still works)")
	fs.Func("device-mtls-names", "DNS names or IPs the device listener's certificate carries (default: its host, localhost, 127.0.0.1)", list(&c.DeviceMTLSNames))
	fs.StringVar(&c.DeviceURL, "device-url", "", "base URL devices reach the device listener at, told to them at enrollment (default https://<device-mtls-addr>)")
	fs.StringVar(&c.KEKURI, "kek-uri", vault.DefaultKEKURI, "key-encryption key: local://PATH (relative to the data dir), pkcs11://TOKEN/KEY?module=LIB&pin-env=VAR,\nhcvault://HOST/transit/keys/NAME or gcp-kms://projects/…/cryptoKeys/NAME")
	fs.IntVar(&c.KeyCacheSize, "key-cache-size", 100_000, "users whose unwrapped keys stay in memory")
	fs.DurationVar(&c.KeyCacheTTL, "key-cache-ttl", 10*time.Minute, "how long an unwrapped key stays in memory")
	fs.StringVar(&c.LogFormat, "log-format", "auto", "log format: auto (text on a terminal, else JSON), text or json")
	fs.TextVar(&c.LogLevel, "log-level", slog.LevelInfo, "log level: debug, info, warn or error")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 15*time.Second, "how long in-flight requests may take to finish on shutdown")
}

// validate checks every setting and says clearly what is wrong with the first bad one.
func (c *Config) validate() error {
	if c.DataDir == "" {
		return errors.New("--data-dir must not be empty")
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		return fmt.Errorf("--http-addr %q: want HOST:PORT (%v)", c.HTTPAddr, err)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if c.TLSCert != "" && c.TLSSelfSigned {
		return errors.New("--tls-self-signed and --tls-cert exclude each other")
	}
	if !c.tls() && !c.InsecurePlaintext && !httpapi.IsLoopback(c.HTTPAddr) {
		return fmt.Errorf("--http-addr %s accepts connections from other machines, and health data must not cross a network in plain text: "+
			"give --tls-cert/--tls-key or --tls-self-signed, or --insecure-plaintext if a TLS-terminating proxy sits in front", c.HTTPAddr)
	}
	if c.DatabaseURL != "" {
		u, err := url.Parse(c.DatabaseURL)
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			return fmt.Errorf("--database-url: want postgres://user@host:port/db (got a %q URL)", schemeOf(c.DatabaseURL))
		}
	}
	if c.NATSURL != "" {
		u, err := url.Parse(c.NATSURL)
		if err != nil || (u.Scheme != "nats" && u.Scheme != "tls") {
			return fmt.Errorf("--nats-url: want nats://host:port (got a %q URL)", schemeOf(c.NATSURL))
		}
		if c.NATSListen != "" {
			return errors.New("--nats-listen only applies to the embedded broker; drop it or --nats-url")
		}
	}
	if c.NATSListen != "" {
		if _, _, err := net.SplitHostPort(c.NATSListen); err != nil {
			return fmt.Errorf("--nats-listen %q: want HOST:PORT", c.NATSListen)
		}
	}
	if len(c.Roles) == 0 {
		return errors.New("--roles: name at least one of ingest, process, sync, api")
	}
	for _, iss := range c.OIDCIssuers {
		// Keys fetched over plain HTTP could be swapped on the way: plain HTTP only to a
		// provider on this machine (development, tests).
		u, err := url.Parse(iss)
		if err != nil || u.Host == "" || (u.Scheme != "https" && !(u.Scheme == "http" && httpapi.IsLoopback(net.JoinHostPort(u.Hostname(), "80")))) {
			return fmt.Errorf("--oidc-issuer %q: want the issuer's https:// URL (http:// only on loopback)", iss)
		}
	}
	switch {
	case len(c.OIDCIssuers) > 0 && len(c.OIDCAudiences) == 0:
		return errors.New("--oidc-issuer needs --oidc-audience: the audience its tokens must carry for this API")
	case len(c.OIDCAudiences) > 1 && len(c.OIDCAudiences) != len(c.OIDCIssuers):
		return fmt.Errorf("--oidc-audience: give one audience for all issuers or one per issuer (%d issuers, %d audiences)", len(c.OIDCIssuers), len(c.OIDCAudiences))
	case len(c.OIDCIssuers) == 0 && len(c.OIDCAudiences) > 0:
		return errors.New("--oidc-audience without --oidc-issuer")
	}
	if c.DeviceMTLSAddr != "" {
		if _, _, err := net.SplitHostPort(c.DeviceMTLSAddr); err != nil {
			return fmt.Errorf("--device-mtls-addr %q: want HOST:PORT (%v)", c.DeviceMTLSAddr, err)
		}
	}
	for _, r := range c.Roles {
		if !slices.Contains(knownRoles, r) {
			return fmt.Errorf("--roles: unknown role %q (want ingest, process, sync or api)", r)
		}
	}
	switch {
	case c.Partitions < 1 || c.Partitions > 1024:
		return fmt.Errorf("--partitions %d: want 1..1024", c.Partitions)
	case c.SampleRetention < time.Hour:
		return fmt.Errorf("--sample-retention %s: want at least 1h", c.SampleRetention)
	case c.ChangeRetention < time.Hour:
		return fmt.Errorf("--change-retention %s: want at least 1h", c.ChangeRetention)
	case c.DuplicateWindow < time.Second || c.DuplicateWindow > c.SampleRetention:
		return fmt.Errorf("--duplicate-window %s: want at least 1s and at most --sample-retention", c.DuplicateWindow)
	case c.LiveHorizon < 3*time.Hour:
		return fmt.Errorf("--live-horizon %s: want at least 3h", c.LiveHorizon)
	case c.RatePerAddress < 0 || c.RatePerPrincipal < 0 || c.BurstPerAddress < 0 || c.BurstPerPrincipal < 0:
		return errors.New("--rate-* and --rate-burst-* must not be negative")
	case c.DailyCap < 1:
		return fmt.Errorf("--recommend-daily-cap %d: want at least 1", c.DailyCap)
	case c.DailyInterval < 100*time.Millisecond:
		return fmt.Errorf("--daily-interval %s: want at least 100ms", c.DailyInterval)
	case c.SyncQueueBytes < 64<<10:
		return fmt.Errorf("--sync-queue-bytes %d: want at least 65536", c.SyncQueueBytes)
	case c.SyncConnsPerUser < 1 || c.SyncConnsPerDevice < 1 || c.SyncConnsPerDevice > c.SyncConnsPerUser:
		return fmt.Errorf("--sync-conns-per-user %d, --sync-conns-per-device %d: want at least 1, per device at most per user", c.SyncConnsPerUser, c.SyncConnsPerDevice)
	case c.SyncPingInterval < time.Second:
		return fmt.Errorf("--sync-ping-interval %s: want at least 1s", c.SyncPingInterval)
	case c.Replicas < 1 || c.Replicas > 5:
		return fmt.Errorf("--replicas %d: want 1..5", c.Replicas)
	case c.KeyCacheSize < 1:
		return fmt.Errorf("--key-cache-size %d: want at least 1", c.KeyCacheSize)
	case c.KeyCacheTTL <= 0:
		return fmt.Errorf("--key-cache-ttl %s: want more than 0", c.KeyCacheTTL)
	case c.ShutdownTimeout <= 0:
		return fmt.Errorf("--shutdown-timeout %s: want more than 0", c.ShutdownTimeout)
	}
	switch c.LogFormat {
	case "auto", "text", "json":
	default:
		return fmt.Errorf("--log-format %q: want auto, text or json", c.LogFormat)
	}
	return nil
}

func (c *Config) tls() bool { return c.TLSCert != "" || c.TLSSelfSigned }

// schemeOf names a URL's scheme without echoing the URL, which may hold a password.
func schemeOf(s string) string {
	if i := strings.Index(s, "://"); i > 0 {
		return s[:i]
	}
	return ""
}

const serveSynopsis = `Usage: pulsebase serve [flags]

Runs the Pulsebase server. With no flags it needs nothing else: NATS JetStream runs
in-process (files under the data directory, no network listener), SQLite keeps users and
wrapped keys, and a local key file in the data directory is the key-encryption key.
Scale out with --nats-url (a JetStream cluster) and --database-url (PostgreSQL).

It prints "listening on http://HOST:PORT" on stdout once the API is up.`

func runServe(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg := Config{Roles: slices.Clone(knownRoles)}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfg.flags(fs)
	fs.Usage = usageFunc(fs, serveSynopsis)
	if err := parseFlags(fs, args, getenv, stderr); err != nil {
		return err
	}
	if err := cfg.validate(); err != nil {
		return usageErr(fs, err.Error())
	}
	log := telemetry.NewLogger(stderr, cfg.LogFormat, cfg.LogLevel)
	return serve(ctx, cfg, log, stdout)
}

// serve wires the server from cfg and runs it until ctx is cancelled.
func serve(ctx context.Context, cfg Config, log *slog.Logger, stdout io.Writer) (err error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	store, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer closeLogged(log, "store", store.Close)

	vlt, err := vault.Open(ctx, store, vault.Config{
		KEKURI: cfg.KEKURI, DataDir: cfg.DataDir, CacheSize: cfg.KeyCacheSize, CacheTTL: cfg.KeyCacheTTL, Log: log,
	})
	if err != nil {
		return fmt.Errorf("open vault: %w", err)
	}
	iss, err := auth.OpenIssuer(filepath.Join(cfg.DataDir, issuerKeyFile), auth.DefaultIssuer, auth.DefaultAudience)
	if err != nil {
		return fmt.Errorf("open token key: %w", err)
	}

	brk, err := broker.Open(ctx, broker.Config{
		DataDir:         cfg.DataDir,
		URL:             cfg.NATSURL,
		ListenAddr:      cfg.NATSListen,
		Partitions:      cfg.Partitions,
		SampleRetention: cfg.SampleRetention,
		ChangeRetention: cfg.ChangeRetention,
		DuplicateWindow: cfg.DuplicateWindow,
		Replicas:        cfg.Replicas,
		SyncAlways:      cfg.SyncAlways,
	}, log)
	if err != nil {
		return fmt.Errorf("open broker: %w", err)
	}
	// The broker closes after the HTTP server has finished its in-flight requests (the
	// deferred calls run in reverse order), so every acknowledged publish is flushed.
	defer closeLogged(log, "broker", brk.Close)

	if slices.Contains(cfg.Roles, "process") {
		// The processing tier's HPKE key pair, for sealed samples. A process without the
		// process role never loads its private key.
		if err := vlt.EnsureProcessingKey(ctx); err != nil {
			return fmt.Errorf("processing key: %w", err)
		}
	}
	if err := vlt.AttachBroker(ctx, brk.JetStream(), cfg.Replicas); err != nil {
		return err
	}
	cons, err := consent.New(ctx, store, vlt, brk.JetStream(), cfg.Replicas, log)
	if err != nil {
		return err
	}
	// revocations refuses revoked tokens: the HTTP API checks every request with it, and a
	// sync gateway re-checks its open connections when it signals a change.
	revocations, err := auth.NewRevocations(ctx, brk.JetStream(), cfg.Replicas, log)
	if err != nil {
		return err
	}
	// grants are users' grants to coaches, followed from every process like revocations;
	// the policy decides every request with them.
	grants, err := auth.NewGrants(ctx, brk.JetStream(), cfg.Replicas, log)
	if err != nil {
		return err
	}
	policy := auth.NewPolicy(grants)
	// Tokens of the built-in issuer and of every external OpenID provider configured.
	var providers []*auth.OIDC
	for n, issURL := range cfg.OIDCIssuers {
		aud := cfg.OIDCAudiences[0]
		if len(cfg.OIDCAudiences) > 1 {
			aud = cfg.OIDCAudiences[n]
		}
		o, err := auth.NewOIDC(ctx, auth.OIDCConfig{Issuer: issURL, Audience: aud, RoleClaim: cfg.OIDCRoleClaim})
		if err != nil {
			return fmt.Errorf("--oidc-issuer %s: %w", issURL, err)
		}
		providers = append(providers, o)
	}
	// Verified tokens are remembered for a minute: clients send the same token with every
	// request, and its signature need not be checked every time (revocation still is).
	tokens := auth.NewVerifiedCache(auth.NewVerifiers(iss, providers...), 50_000, time.Minute)
	authn := &auth.Authenticator{Tokens: tokens, Revocations: revocations}
	// The device CA (its key in the vault) certifies enrolled devices' keys; the device
	// listener, when configured, requires its certificates.
	deviceCA, err := auth.OpenDeviceCA(ctx, vlt)
	if err != nil {
		return fmt.Errorf("device CA: %w", err)
	}
	devices, err := auth.NewDevices(ctx, brk.JetStream(), cfg.Replicas, deviceCA, iss, revocations, httpapi.DeviceSealer{Vault: vlt})
	if err != nil {
		return err
	}
	var coord *processor.Coordinator
	if slices.Contains(cfg.Roles, "process") {
		coord, err = processor.NewCoordinator(ctx, brk.JetStream(), processor.CoordinatorConfig{
			Partitions: brk.Partitions(), Replicas: cfg.Replicas, Log: log,
		})
		if err != nil {
			return fmt.Errorf("processor: %w", err)
		}
	}
	metrics := telemetry.NewMetrics()
	// The rule library: a --rules file that does not check leaves the built-in library in
	// use (the problems are logged); the server runs either way.
	rules, rerr := recommend.NewRules(cfg.Rules, log)
	if rules == nil {
		return fmt.Errorf("rule library: %w", rerr)
	}
	var inUse [2]string // the rule_library labels set
	ruleLoaded := func(err error) {
		lib := rules.Library()
		metrics.RuleLibrary.WithLabelValues(lib.Name, lib.Version).Set(1)
		if now := [2]string{lib.Name, lib.Version}; now != inUse {
			if inUse[0] != "" {
				metrics.RuleLibrary.DeleteLabelValues(inUse[0], inUse[1])
			}
			inUse = now
		}
		metrics.RuleReloads.WithLabelValues(map[bool]string{true: "ok", false: "error"}[err == nil]).Inc()
	}
	ruleLoaded(rerr)
	rules.OnReload = func(_ *recommend.Library, err error) { ruleLoaded(err) }
	users := httpapi.NewUsers(store, vlt)
	ing := ingest.NewService(vlt, cons, brk, metrics, log, nil)
	profiles := profile.New(store, vlt, brk.JetStream(), log)
	var gateway *syncgw.Gateway
	if slices.Contains(cfg.Roles, "sync") {
		gateway = syncgw.New(syncgw.Config{MaxQueueBytes: cfg.SyncQueueBytes, MaxConnsPerUser: cfg.SyncConnsPerUser,
			MaxConnsPerDevice: cfg.SyncConnsPerDevice, PingInterval: cfg.SyncPingInterval}, syncgw.Deps{
			JetStream: brk.JetStream(), Vault: vlt, Store: store, Ingest: ing, Profiles: profiles, Consent: cons,
			Revocations: revocations, Authenticate: authn.Authenticate, Resolve: users.Resolve, Metrics: metrics, Log: log,
			Policy: policy, Grants: grants,
		})
	}
	// The device listener: mutual TLS with the device CA's certificates, which it also
	// presents itself, so that a device trusts the server with the CA its enrollment gave.
	var deviceLn net.Listener
	deviceURL := cfg.DeviceURL
	if cfg.DeviceMTLSAddr != "" {
		tcfg := deviceCA.TLSConfig(tls.Certificate{})
		tcfg.Certificates = nil
		tcfg.GetCertificate = deviceCA.ServerCertificates(cfg.deviceNames())
		raw, err := net.Listen("tcp", cfg.DeviceMTLSAddr)
		if err != nil {
			return fmt.Errorf("device listener: %w", err)
		}
		defer raw.Close() // Serve closes it; this covers a failed start
		deviceLn = tls.NewListener(raw, tcfg)
		if deviceURL == "" {
			deviceURL = "https://" + raw.Addr().String()
		}
	}
	api := httpapi.New(httpapi.Deps{
		Issuer:     iss,
		Users:      users,
		Ingest:     ing,
		Consent:    cons,
		Vault:      vlt,
		Store:      store,
		Metrics:    metrics,
		Profiles:   profiles,
		Sync:       gateway,
		JetStream:  brk.JetStream(),
		Partitions: brk.Partitions(),
		Ready: func(ctx context.Context) error {
			if err := brk.Ready(ctx); err != nil {
				return fmt.Errorf("broker: %w", err)
			}
			if err := store.Ping(ctx); err != nil {
				return fmt.Errorf("store: %w", err)
			}
			return nil
		},
		Revocations: revocations,
		Grants:      grants,
		Policy:      policy,
		Audit:       store,
		Tokens:      tokens,
		Devices:     devices,
		DeviceURL:   deviceURL,
		Rules:       rules,
		RateLimits: httpapi.RateLimits{PerAddress: httpapi.Rate{PerSecond: cfg.RatePerAddress, Burst: cfg.BurstPerAddress},
			PerPrincipal: httpapi.Rate{PerSecond: cfg.RatePerPrincipal, Burst: cfg.BurstPerPrincipal}},
		Log:     log,
		Version: version,
	})

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	baseURL := "http://" + ln.Addr().String()
	var demoClient *http.Client
	if cfg.tls() {
		cert, err := loadCert(cfg)
		if err != nil {
			ln.Close()
			return fmt.Errorf("tls: %w", err)
		}
		ln = tls.NewListener(ln, httpapi.TLSConfig(cert))
		baseURL = "https://" + ln.Addr().String()
		// The demo talks to this very server: trust its certificate for that.
		pool := x509.NewCertPool()
		if leaf, err := x509.ParseCertificate(cert.Certificate[0]); err == nil {
			pool.AddCert(leaf)
		}
		demoClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	}
	log.Info("pulsebase started", "version", version, "http", baseURL, "data_dir", cfg.DataDir,
		"broker", brokerKind(cfg), "store", storeKind(cfg), "roles", strings.Join(cfg.Roles, ","))
	fmt.Fprintf(stdout, "listening on %s\n", baseURL)
	if deviceLn != nil {
		fmt.Fprintf(stdout, "devices (mutual TLS) on %s\n", deviceURL)
	}
	if u := brk.ClientURL(); u != "" {
		fmt.Fprintf(stdout, "nats listening on %s\n", u)
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return cons.Run(gctx) })
	g.Go(func() error { return revocations.Run(gctx) })
	g.Go(func() error { return grants.Run(gctx) })
	for _, o := range providers {
		g.Go(func() error { o.Run(gctx); return nil })
	}
	// Processes sharing the data directory see each other's token key rotations.
	g.Go(func() error { iss.Watch(gctx, time.Minute); return nil })
	if gateway != nil {
		g.Go(func() error { return gateway.Run(gctx) })
	}
	g.Go(func() error { return vlt.Watch(gctx) })
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	g.Go(func() error { return rules.Watch(gctx, 2*time.Second, hup) })
	if coord != nil {
		runner := processor.NewRunner(brk.JetStream(), store, vlt, cons, processor.RunnerConfig{Log: log, Metrics: metrics, Partitions: brk.Partitions(),
			Horizon: cfg.LiveHorizon, DailyEvery: cfg.DailyInterval, Rules: rules, Profiles: profiles, DailyCap: cfg.DailyCap})
		g.Go(func() error { return coord.Run(gctx, runner) })
	}
	g.Go(func() error { return api.Serve(gctx, ln, cfg.ShutdownTimeout) })
	if deviceLn != nil {
		g.Go(func() error { return api.Serve(gctx, deviceLn, cfg.ShutdownTimeout) })
	}
	if cfg.Demo {
		g.Go(func() error { return sim.RunDemo(gctx, baseURL, demoClient, demoTokens(iss), stdout, log) })
	}
	err = g.Wait()
	log.Info("pulsebase stopping")
	return err
}

// deviceNames are the names the device listener's certificate carries.
func (c *Config) deviceNames() []string {
	if len(c.DeviceMTLSNames) > 0 {
		return c.DeviceMTLSNames
	}
	host, _, _ := net.SplitHostPort(c.DeviceMTLSAddr)
	names := []string{"localhost", "127.0.0.1", "::1"}
	if host != "" && !slices.Contains(names, host) {
		names = append(names, host)
	}
	return names
}

func loadCert(cfg Config) (tls.Certificate, error) {
	if cfg.TLSSelfSigned {
		host, _, _ := net.SplitHostPort(cfg.HTTPAddr)
		return httpapi.SelfSignedCertificate(filepath.Join(cfg.DataDir, "keys"), []string{host})
	}
	return httpapi.LoadCertificate(cfg.TLSCert, cfg.TLSKey)
}

func openStore(ctx context.Context, cfg Config) (pulsebase.Store, error) {
	if cfg.DatabaseURL != "" {
		s, err := postgres.Open(ctx, cfg.DatabaseURL)
		if err != nil {
			return nil, fmt.Errorf("open postgres: %w", err)
		}
		return s, nil
	}
	s, err := sqlite.Open(ctx, filepath.Join(cfg.DataDir, sqliteFile))
	if err != nil {
		return nil, fmt.Errorf("open sqlite: %w", err)
	}
	return s, nil
}

// demoTokens mints a token for each demo user.
func demoTokens(iss *auth.Issuer) func(user string) (string, error) {
	return func(user string) (string, error) {
		return iss.Mint(auth.TokenRequest{Subject: user, Role: pulsebase.RoleUser, TTL: 24 * time.Hour}, time.Now())
	}
}

func brokerKind(cfg Config) string {
	if cfg.NATSURL != "" {
		return "external"
	}
	return "embedded"
}

func storeKind(cfg Config) string {
	if cfg.DatabaseURL != "" {
		return "postgres"
	}
	return "sqlite"
}

func closeLogged(log *slog.Logger, what string, close func() error) {
	if err := close(); err != nil {
		log.Error("close "+what, "err", err)
	}
}
