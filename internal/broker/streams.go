package broker

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Stream names.
const (
	// StreamSamples holds every accepted sample, encrypted, on
	// samples.<partition>.<user>. It is the replayable source of truth.
	StreamSamples = "SAMPLES"
	// StreamChanges is the per-user change feed on changes.<user>.
	StreamChanges = "CHANGES"
	// StreamDeadLetter keeps messages a consumer gave up on, on
	// deadletter.<anything>, for inspection and manual replay.
	StreamDeadLetter = "DEADLETTER"
)

// Message size limits per stream. They are checked by the server; ingest
// should reject larger samples before publishing so the device gets a
// per-sample error instead of a failed batch.
const (
	// MaxSampleSize fits one encrypted sample with room for a dense
	// waveform (30 s of ECG), far below the server's 1 MiB payload limit.
	MaxSampleSize = 256 << 10
	MaxChangeSize = 256 << 10
	// MaxDeadLetterSize leaves room for the failed message plus error headers.
	MaxDeadLetterSize = 1 << 20
)

const (
	samplesInPrefix = "samples.in."
	// changesDuplicateWindow only needs to cover a processor re-publishing
	// after a quick restart; a long window would just cost memory.
	changesDuplicateWindow = 2 * time.Minute
	deadLetterRetention    = 30 * 24 * time.Hour
)

// samplesTransformDest is the SAMPLES subject transform destination for n
// partitions: partition(n,1) hashes wildcard 1 (the user) with FNV-1a, so all
// of a user's samples share one partition and stay in order there.
func samplesTransformDest(n int) string {
	return fmt.Sprintf("samples.{{partition(%d,1)}}.{{wildcard(1)}}", n)
}

var partitionCountRE = regexp.MustCompile(`(?i)partition\(\s*(\d+)\s*,`)

func (b *Broker) streamConfigs() []jetstream.StreamConfig {
	c := b.cfg
	return []jetstream.StreamConfig{{
		Name:        StreamSamples,
		Description: "Pulsebase samples by partition and user (source of truth)",
		// Publishers address a user; the server assigns the partition, so
		// no client can put a user's samples in the wrong partition.
		Subjects: []string{samplesInPrefix + "*"},
		SubjectTransform: &jetstream.SubjectTransformConfig{
			Source:      samplesInPrefix + "*",
			Destination: samplesTransformDest(c.Partitions),
		},
		Storage:    jetstream.FileStorage,
		Retention:  jetstream.LimitsPolicy,
		Discard:    jetstream.DiscardOld,
		MaxAge:     c.SampleRetention,
		Duplicates: c.DuplicateWindow,
		MaxMsgSize: MaxSampleSize,
		MaxMsgs:    -1,
		MaxBytes:   -1,
		Replicas:   c.Replicas,
		// The default mode writes each message to the file (page cache)
		// before acking, so an ack survives a crash of this process.
		// AsyncPersistMode would ack from the server's buffer, trading that
		// for throughput; ingest acks to devices depend on it, so never.
		PersistMode: jetstream.DefaultPersistMode,
	}, {
		Name:        StreamChanges,
		Description: "Pulsebase per-user change feed",
		Subjects:    []string{"changes.*"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      c.ChangeRetention,
		Duplicates:  changesDuplicateWindow,
		MaxMsgSize:  MaxChangeSize,
		MaxMsgs:     -1,
		MaxBytes:    -1,
		Replicas:    c.Replicas,
		// Sync gateways read a user's latest change by subject on resume.
		AllowDirect: true,
	}, {
		Name:        StreamDeadLetter,
		Description: "Pulsebase messages that could not be processed",
		Subjects:    []string{"deadletter.>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      deadLetterRetention,
		MaxMsgSize:  MaxDeadLetterSize,
		MaxMsgs:     -1,
		MaxBytes:    -1,
		Replicas:    c.Replicas,
	}}
}

// ensureStreams creates the streams or brings existing ones to the
// configured settings. It is idempotent, so every process of a cluster runs
// it at start.
func (b *Broker) ensureStreams(ctx context.Context) error {
	if err := b.checkPartitions(ctx); err != nil {
		return err
	}
	for _, sc := range b.streamConfigs() {
		if _, err := b.js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("create or update stream %s: %w", sc.Name, err)
		}
	}
	return nil
}

// ErrPartitionMismatch is returned by Open when SAMPLES already exists with a
// partition count other than Config.Partitions.
var ErrPartitionMismatch = errors.New("samples partition count mismatch")

// checkPartitions refuses to repartition an existing SAMPLES stream: an
// update would silently route a user's new samples to a different partition
// than their stored ones, breaking per-user order and partition ownership.
// Two processes racing to create the stream with different counts are not
// caught here; the stream's first creator wins and the loser fails on its
// next start.
func (b *Broker) checkPartitions(ctx context.Context) error {
	s, err := b.js.Stream(ctx, StreamSamples)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up stream %s: %w", StreamSamples, err)
	}
	tr := s.CachedInfo().Config.SubjectTransform
	if tr == nil {
		return fmt.Errorf("%w: stream %s exists without a partition transform", ErrPartitionMismatch, StreamSamples)
	}
	m := partitionCountRE.FindStringSubmatch(tr.Destination)
	if m == nil {
		return fmt.Errorf("%w: stream %s has transform %q without partition()", ErrPartitionMismatch, StreamSamples, tr.Destination)
	}
	got, err := strconv.Atoi(m[1])
	if err != nil || got != b.cfg.Partitions {
		return fmt.Errorf("%w: stream %s has %s partitions, configured %d (the count is fixed at creation)",
			ErrPartitionMismatch, StreamSamples, m[1], b.cfg.Partitions)
	}
	return nil
}
