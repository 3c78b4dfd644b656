package loadgen

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Publishing settings of the server's broker connection (internal/broker), copied so that
// the baseline pipelines exactly as the server does; if they change there, change them
// here.
const (
	// samplesInPrefix is where publishers address a user in the SAMPLES stream; the
	// stream's subject transform moves the message to the user's partition.
	samplesInPrefix = "samples.in."
	// publishMaxPending is the server connection's cap on unacknowledged async publishes.
	publishMaxPending = 4096
	// stallWait is how long one PublishMsgAsync waits for a free pending slot.
	stallWait = 250 * time.Millisecond
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
	t := &BrokerTarget{nc: nc, js: js, w: w, noise: make([]byte, w.maxStoredBytes())}
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
	futs := make([]jetstream.PubAckFuture, len(sizes))
	for j, size := range sizes {
		m := &nats.Msg{
			Subject: subject,
			Data:    t.noise[:size],
			Header:  nats.Header{jetstream.MsgIDHeader: []string{t.w.MsgID(n, j)}},
		}
		for {
			f, err := t.js.PublishMsgAsync(m, jetstream.WithStallWait(stallWait))
			if err == nil {
				futs[j] = f
				break
			}
			if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
				return Outcome{Status: "error", Err: fmt.Errorf("publish %d of %d: %w", j, len(sizes), err)}
			}
			if ctx.Err() != nil {
				return Outcome{Status: "error", Err: context.Cause(ctx)}
			}
		}
	}
	var o Outcome
	for j, f := range futs {
		select {
		case ack := <-f.Ok():
			if ack.Duplicate {
				o.Duplicates++
			} else {
				o.Accepted++
			}
		case err := <-f.Err():
			// The batch failed as a whole, as the server would answer 503 for it.
			return Outcome{Status: "error", Err: fmt.Errorf("ack %d of %d: %w", j, len(futs), err)}
		case <-ctx.Done():
			return Outcome{Status: "error", Err: context.Cause(ctx)}
		}
	}
	o.Status = "ok"
	return o
}
