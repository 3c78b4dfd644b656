package loadgen

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/semaphore"
)

// Publishing settings of the server's sample publisher (internal/broker), copied so that
// the baseline pipelines as the server does; if they change there, change them here.
const (
	// samplesInPrefix is where publishers address a user in the SAMPLES stream; the
	// stream's subject transform moves the message to the user's partition.
	samplesInPrefix = "samples.in."
	// publishInflight caps the messages sent but not yet acknowledged across all
	// concurrent batches; a batch waits for room for all its messages (or for a chunk of
	// publishInflight when it is larger) before publishing any.
	publishInflight = 4096
	// publishMaxPending is the connection's own cap, above publishInflight so that the
	// client never stalls while the budget is respected.
	publishMaxPending = 2 * publishInflight
)

// BrokerTarget is the broker baseline: for each request of a Workload it publishes one
// message per sample straight to the SAMPLES stream of the server's JetStream, with the
// size the server would store for that sample (random bytes, as incompressible as
// ciphertext) and a unique Nats-Msg-Id, pipelined with PublishMsgAsync and waiting for
// every acknowledgement, as the server's ingest does for a batch. What this sustains is
// the ceiling for the HTTP API on the same stream configuration: everything the API does
// besides publishing (TLS-free HTTP, JSON, validation, keyed ids, encryption) comes on top.
//
// The messages are not encrypted under any user's key: point it only at a throwaway data
// directory, whose processors would dead-letter them.
type BrokerTarget struct {
	nc    *nats.Conn
	js    jetstream.JetStream
	w     *Workload
	users []string
	// inflight holds publishInflight units, one per unacknowledged message.
	inflight *semaphore.Weighted
	// noise is random bytes every message's payload is a prefix of.
	noise []byte
}

// NewBrokerTarget connects to the NATS server at url, which must hold the Pulsebase
// SAMPLES stream (a server started with --nats-listen, or its external cluster). Like
// the server, it uses one connection for all concurrent publishers.
func NewBrokerTarget(ctx context.Context, url string, w *Workload) (*BrokerTarget, error) {
	nc, err := nats.Connect(url, nats.Name("pulsebase-bench"), nats.Timeout(5*time.Second))
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", url, err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(publishMaxPending))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	if _, err := js.Stream(ctx, "SAMPLES"); err != nil {
		nc.Close()
		return nil, fmt.Errorf("stream SAMPLES at %s: %w (is this a Pulsebase broker?)", url, err)
	}
	t := &BrokerTarget{nc: nc, js: js, w: w, noise: make([]byte, w.maxStoredBytes()),
		inflight: semaphore.NewWeighted(publishInflight)}
	rand.Read(t.noise)
	// Internal user ids look like the server's: "u" and 26 base32 characters.
	for range w.Users() {
		t.users = append(t.users, "u"+rand.Text())
	}
	return t, nil
}

// Name is "broker".
func (t *BrokerTarget) Name() string { return "broker" }

// Close closes the connection.
func (t *BrokerTarget) Close() { t.nc.Close() }

// Send publishes the messages of request n and waits for their acknowledgements.
func (t *BrokerTarget) Send(ctx context.Context, n int64) Outcome {
	subject := samplesInPrefix + t.users[t.w.User(n)]
	sizes := t.w.StoredSizes(n)
	var o Outcome
	for start := 0; start < len(sizes); start += publishInflight {
		end := min(start+publishInflight, len(sizes))
		if err := t.publishChunk(ctx, subject, n, start, sizes[start:end], &o); err != nil {
			// The batch failed as a whole, as the server would answer 503 for it.
			return Outcome{Status: "error", Err: err}
		}
	}
	o.Status = "ok"
	return o
}

// publishChunk publishes the messages of request n from index first on, one per size,
// and counts their acknowledgements into o.
func (t *BrokerTarget) publishChunk(ctx context.Context, subject string, n int64, first int, sizes []int, o *Outcome) error {
	if err := t.inflight.Acquire(ctx, int64(len(sizes))); err != nil {
		return err
	}
	defer t.inflight.Release(int64(len(sizes)))
	futs := make([]jetstream.PubAckFuture, len(sizes))
	for i, size := range sizes {
		m := &nats.Msg{
			Subject: subject,
			Data:    t.noise[:size],
			Header:  nats.Header{jetstream.MsgIDHeader: []string{t.w.MsgID(n, first+i)}},
		}
		for {
			f, err := t.js.PublishMsgAsync(m)
			if err == nil {
				futs[i] = f
				break
			}
			if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
				return fmt.Errorf("publish %d of %d: %w", first+i, t.w.Batch(), err)
			}
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
		}
	}
	for i, f := range futs {
		select {
		case ack := <-f.Ok():
			if ack.Duplicate {
				o.Duplicates++
			} else {
				o.Accepted++
			}
		case err := <-f.Err():
			return fmt.Errorf("ack %d of %d: %w", first+i, t.w.Batch(), err)
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	return nil
}
