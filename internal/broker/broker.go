// Package broker is Pulsebase's connection to NATS JetStream: it starts the
// embedded nats-server (the default, single-process deployment) or connects
// to an external JetStream cluster (scale-out), declares the SAMPLES, CHANGES
// and DEADLETTER streams, and owns the partitioning scheme of the sample
// stream.
//
// It is imported by cmd/pulsebase (wiring), ingest (PublishSamples),
// processor (partition consumers on SAMPLES, publishing to CHANGES) and sync
// (the per-user change feed). Nothing outside those may depend on whether the
// broker is embedded or external: both modes hand out the same
// *nats.Conn and jetstream.JetStream.
//
// # Durability
//
// A publish is acknowledged by JetStream once the message is written to the
// stream's file store, not once it is fsynced: the server flushes and fsyncs
// its files every SyncInterval (two minutes by default). This is the NATS
// default durability. It survives a crash of the Pulsebase process (kill -9),
// because the data has reached the kernel, but not a power loss or kernel
// crash inside the sync interval. Deployments that need fsync per write set
// Config.SyncAlways in embedded mode (at a large throughput cost), or rely on
// replication (Replicas: 3) on a cluster, where an ack means a quorum stored
// the message.
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/semaphore"
)

// Defaults applied by Open to zero Config fields.
const (
	DefaultPartitions      = 64
	DefaultSampleRetention = 30 * 24 * time.Hour
	DefaultChangeRetention = 30 * 24 * time.Hour
	DefaultDuplicateWindow = 2 * time.Minute
)

// Config says where the broker runs and how its streams are shaped. The zero
// value (plus DataDir) is the embedded single-machine deployment.
type Config struct {
	// DataDir is the Pulsebase data directory; in embedded mode the JetStream
	// file store lives under DataDir/jetstream. Ignored when URL is set.
	DataDir string

	// URL, if set, is an external NATS server or cluster (nats://host:port,
	// comma-separated for several seeds) to connect to instead of embedding.
	URL string

	// ListenAddr is the host:port on which the embedded server accepts
	// network clients. Empty means no listener at all: the server runs with
	// DontListen and Pulsebase talks to it over an in-process pipe, so no
	// port is opened on the machine. Port 0 picks a free port.
	ListenAddr string

	// Partitions is the number of SAMPLES partitions; zero means 64. It is
	// fixed when the stream is created: Open refuses to change it on an
	// existing stream, because every stored sample's subject encodes it.
	Partitions int

	// SampleRetention is how long SAMPLES keeps messages; zero means 30 days.
	// The sample stream is the replayable source of truth, so this bounds how
	// far back `pulsebase reprocess` can go.
	SampleRetention time.Duration

	// ChangeRetention is how long CHANGES keeps messages; zero means 30 days.
	// A device offline for longer must resync from a snapshot.
	ChangeRetention time.Duration

	// DuplicateWindow is how long SAMPLES remembers message IDs to drop
	// re-sent samples; zero means 2 minutes. The server holds every ID seen
	// in the window in memory (a map entry, an index slot and a copy of the
	// ID: about 100 bytes plus the ID's length), so the cost is ingest rate
	// × window: 150k samples/s over 2 minutes is 18M IDs, roughly 2.2 GB with
	// 22-byte IDs, and a 10-minute window at that rate would need ~11 GB. The map is also
	// rebuilt from the stored messages at every restart. Re-sends arriving
	// after the window are not caught here and must be idempotent
	// downstream.
	DuplicateWindow time.Duration

	// Replicas is the stream replication factor; zero means 1. Use 3 on a
	// cluster. The embedded server is a single node and accepts only 1.
	Replicas int

	// SyncAlways makes the embedded server fsync the file store on every
	// write (nats-server's sync_always) instead of every two minutes. See
	// the package documentation on durability. Ignored in external mode,
	// where it is the cluster's own setting.
	SyncAlways bool
}

// withDefaults returns c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.Partitions == 0 {
		c.Partitions = DefaultPartitions
	}
	if c.SampleRetention == 0 {
		c.SampleRetention = DefaultSampleRetention
	}
	if c.ChangeRetention == 0 {
		c.ChangeRetention = DefaultChangeRetention
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = DefaultDuplicateWindow
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.URL == "" && c.DataDir == "":
		return errors.New("embedded broker needs a data dir")
	case c.Partitions < 1 || c.Partitions > maxPartitions:
		return fmt.Errorf("partitions %d out of range 1..%d", c.Partitions, maxPartitions)
	case c.Replicas < 1 || c.Replicas > 5:
		return fmt.Errorf("replicas %d out of range 1..5", c.Replicas)
	case c.SampleRetention < 0 || c.ChangeRetention < 0 || c.DuplicateWindow < 0:
		return errors.New("retention and duplicate window must not be negative")
	case c.DuplicateWindow > c.SampleRetention:
		// The server rejects this too, but less clearly.
		return fmt.Errorf("duplicate window %v exceeds sample retention %v", c.DuplicateWindow, c.SampleRetention)
	}
	return nil
}

// maxPartitions bounds Partitions to something a processor fleet can own;
// more partitions only add consumers and per-partition checkpoints.
const maxPartitions = 4096

// Broker is an open connection to JetStream with the Pulsebase streams in
// place. It is safe for concurrent use.
type Broker struct {
	cfg Config
	log *slog.Logger
	srv *server.Server // nil in external mode
	nc  *nats.Conn
	js  jetstream.JetStream

	// pub is a JetStream context used only by PublishSamples: its async
	// error handler and pending limit are tuned for the ingest path and must
	// not see other publishers' messages.
	pub         jetstream.JetStream
	inflight    *semaphore.Weighted // messages PublishSamples has in flight
	inflightCap int

	failMu sync.Mutex
	failed chan struct{} // closed and replaced on every async publish failure

	closed    chan struct{} // closed by the connection's ClosedHandler
	closeOnce sync.Once
	closeErr  error
}

// publishInflight caps the samples PublishSamples has sent but not yet seen
// acknowledged, across all concurrent calls. It must hold several
// 500-message batches so the server always has work queued, and stay small
// enough that a slow server pushes back on ingest instead of the client
// buffering without bound. Measured with BenchmarkPublishInflight.
var publishInflight = 4096 // a var so the benchmark can compare settings

// Open starts the embedded server (or connects to cfg.URL), and creates or
// updates the streams. It fails if SAMPLES exists with a different partition
// count. The caller must Close the Broker.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Broker, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("broker config: %w", err)
	}
	b := &Broker{
		cfg:         cfg,
		log:         log,
		inflightCap: publishInflight,
		inflight:    semaphore.NewWeighted(int64(publishInflight)),
		failed:      make(chan struct{}),
		closed:      make(chan struct{}),
	}

	opts := []nats.Option{
		nats.Name("pulsebase"),
		// Fail Open when the broker is unreachable at start; afterwards keep
		// reconnecting forever, since ingest can do nothing useful without it.
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.DrainTimeout(10 * time.Second),
		nats.ClosedHandler(func(*nats.Conn) { close(b.closed) }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			// A nil error is our own Close; anything else is worth a look.
			if err != nil {
				log.Warn("broker disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("broker reconnected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			attrs := []any{"err", err}
			if sub != nil {
				attrs = append(attrs, "subject", sub.Subject)
			}
			log.Warn("broker async error", attrs...)
		}),
	}

	url := cfg.URL
	if url == "" {
		srv, err := startServer(cfg, log)
		if err != nil {
			return nil, err
		}
		b.srv = srv
		// Even with a listener, Pulsebase itself uses the in-process pipe:
		// no TCP stack, and it works the same with or without ListenAddr.
		opts = append(opts, nats.InProcessServer(srv))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		b.shutdownServer()
		return nil, fmt.Errorf("connect to broker: %w", err)
	}
	b.nc = nc

	js, err := jetstream.New(nc)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	b.js = js
	// The client's own limit is only a backstop above the semaphore: chunks
	// abandoned by a canceled ctx keep client slots until their acks arrive.
	pub, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(2*publishInflight),
		jetstream.WithPublishAsyncErrHandler(b.pubFailed))
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	b.pub = pub

	if err := b.ensureStreams(ctx); err != nil {
		b.Close()
		return nil, err
	}
	mode := "external"
	if b.srv != nil {
		mode = "embedded"
	}
	log.Info("broker open", "mode", mode, "partitions", cfg.Partitions, "replicas", cfg.Replicas)
	return b, nil
}

// startServer runs nats-server in this process with JetStream on
// DataDir/jetstream and waits until it accepts connections.
func startServer(cfg Config, log *slog.Logger) (*server.Server, error) {
	opts := &server.Options{
		ServerName:             "pulsebase",
		JetStream:              true,
		StoreDir:               filepath.Join(cfg.DataDir, "jetstream"),
		SyncAlways:             cfg.SyncAlways,
		DontListen:             cfg.ListenAddr == "",
		NoSigs:                 true, // signals belong to cmd/pulsebase
		DisableJetStreamBanner: true,
	}
	if cfg.ListenAddr != "" {
		host, portStr, err := net.SplitHostPort(cfg.ListenAddr)
		if err != nil {
			return nil, fmt.Errorf("broker listen address %q: %w", cfg.ListenAddr, err)
		}
		port, err := strconv.Atoi(portStr)
		if err != nil || port < 0 || port > 65535 {
			return nil, fmt.Errorf("broker listen address %q: bad port", cfg.ListenAddr)
		}
		if port == 0 {
			// nats-server reads port 0 as "default" (4222); -1 is "any free port".
			port = server.RANDOM_PORT
		}
		opts.Host, opts.Port = host, port
	}

	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	srv.SetLoggerV2(newServerLogger(log), log.Enabled(context.Background(), slog.LevelDebug), false, false)
	srv.Start()
	// Start reports failures such as an unusable store dir through the
	// logger, not a return value, so check both readiness and JetStream.
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, errors.New("embedded broker did not become ready (listen address in use?)")
	}
	if !srv.JetStreamEnabled() {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("embedded broker: jetstream did not start (store dir %s)", opts.StoreDir)
	}
	return srv, nil
}

// JetStream returns the JetStream handle for consumers and publishers other
// than PublishSamples (CHANGES, DEADLETTER, KV).
func (b *Broker) JetStream() jetstream.JetStream { return b.js }

// Conn returns the underlying NATS connection. Callers must not close it.
func (b *Broker) Conn() *nats.Conn { return b.nc }

// Partitions returns the SAMPLES partition count in effect.
func (b *Broker) Partitions() int { return b.cfg.Partitions }

// ClientURL returns the nats:// URL of the embedded server's listener, or ""
// when there is none (external mode, or embedded without ListenAddr).
func (b *Broker) ClientURL() string {
	if b.srv == nil {
		return ""
	}
	addr := b.srv.Addr()
	if addr == nil {
		return ""
	}
	return "nats://" + addr.String()
}

// Ready reports whether the broker can take work: the connection is up, the
// embedded server (if any) is running JetStream, and every stream answers.
// It is meant for readiness probes.
func (b *Broker) Ready(ctx context.Context) error {
	if b.srv != nil && !b.srv.JetStreamEnabled() {
		return errors.New("broker: embedded jetstream not running")
	}
	if s := b.nc.Status(); s != nats.CONNECTED {
		return fmt.Errorf("broker: connection %s", s)
	}
	for _, name := range []string{StreamSamples, StreamChanges, StreamDeadLetter} {
		if _, err := b.js.Stream(ctx, name); err != nil {
			return fmt.Errorf("broker: stream %s: %w", name, err)
		}
	}
	return nil
}

// Close drains the connection, letting in-flight publishes be acknowledged,
// and then shuts the embedded server down, waiting until its files are
// flushed and closed so the same DataDir can be reopened. It is safe to call
// more than once.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		if b.nc != nil {
			if err := b.nc.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
				b.closeErr = fmt.Errorf("drain broker connection: %w", err)
				b.nc.Close()
			}
			<-b.closed
		}
		b.shutdownServer()
	})
	return b.closeErr
}

func (b *Broker) shutdownServer() {
	if b.srv == nil {
		return
	}
	b.srv.Shutdown()
	b.srv.WaitForShutdown()
}
