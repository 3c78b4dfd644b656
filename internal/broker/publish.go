package broker

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Message is one sample to publish.
type Message struct {
	// ID becomes the Nats-Msg-Id header: JetStream drops a second message
	// with the same ID within Config.DuplicateWindow and reports it as a
	// Duplicate. The window is per stream, not per user, so ID must be
	// unique across all users (derive it from user, device and sample);
	// two users sending the same ID would lose the second sample. Required.
	ID string
	// Data is the (encrypted) payload, at most MaxSampleSize bytes.
	Data []byte
	// Header holds optional extra headers. It is copied, never modified.
	Header nats.Header
}

// PubResult is the broker's answer for one published Message.
type PubResult struct {
	// Seq is the message's sequence in SAMPLES; for a duplicate, the
	// sequence of the original.
	Seq uint64
	// Duplicate means a message with the same ID was already stored within
	// the duplicate window and this one was dropped.
	Duplicate bool
}

// Partition returns the SAMPLES partition of user among n partitions. It
// matches the server's partition(n,1) transform, FNV-1a 32 of the user token
// modulo n, so processors can compute ownership without asking the broker.
func Partition(user string, n int) int {
	if n <= 0 {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(user))
	return int(h.Sum32() % uint32(n))
}

// SampleSubject is the subject a user's samples are stored on in SAMPLES.
func SampleSubject(partition int, user string) string {
	return "samples." + strconv.Itoa(partition) + "." + user
}

// PartitionFilter is the consumer filter subject for one SAMPLES partition.
func PartitionFilter(partition int) string {
	return "samples." + strconv.Itoa(partition) + ".*"
}

// ChangeSubject is the subject of a user's change feed in CHANGES.
func ChangeSubject(user string) string { return "changes." + user }

// ErrInvalidUser is returned for a user ID that cannot be a subject token.
var ErrInvalidUser = errors.New("invalid user id for broker subject")

// ValidUser reports whether user can be used as a single subject token:
// non-empty, printable ASCII without '.', '*', '>' or spaces. User IDs are
// opaque identifiers minted by Pulsebase, so this never rejects a real one.
func ValidUser(user string) bool {
	if user == "" || len(user) > 256 {
		return false
	}
	for i := 0; i < len(user); i++ {
		c := user[i]
		if c <= ' ' || c >= 0x7f || c == '.' || c == '*' || c == '>' {
			return false
		}
	}
	return true
}

// PublishSamples publishes msgs for user to SAMPLES and waits until the
// broker has stored every one (see the package documentation on what stored
// means) or ctx is done. Results are in the order of msgs.
//
// Messages are pipelined with the async publish API; the server stores them
// in publish order, so a user's samples keep their batch order within the
// partition. On error some messages may have been stored: the caller retries
// the whole batch with the same IDs, and the stored ones come back as
// Duplicate.
func (b *Broker) PublishSamples(ctx context.Context, user string, msgs []Message) ([]PubResult, error) {
	if !ValidUser(user) {
		return nil, fmt.Errorf("publish samples: %w: %q", ErrInvalidUser, user)
	}
	// Validate the whole batch first so a bad message cannot leave it half
	// published.
	for i := range msgs {
		switch {
		case msgs[i].ID == "":
			return nil, fmt.Errorf("publish samples: message %d has no id", i)
		case len(msgs[i].Data) > MaxSampleSize:
			return nil, fmt.Errorf("publish samples: message %d is %d bytes, max %d", i, len(msgs[i].Data), MaxSampleSize)
		}
	}
	subject := samplesInPrefix + user
	res := make([]PubResult, len(msgs))
	// A batch larger than the in-flight budget goes in budget-sized chunks.
	for start := 0; start < len(msgs); start += b.inflightCap {
		end := min(start+b.inflightCap, len(msgs))
		if err := b.publishChunk(ctx, subject, msgs[start:end], res[start:end]); err != nil {
			return nil, fmt.Errorf("publish samples (%d messages): %w", len(msgs), err)
		}
	}
	return res, nil
}

// publishChunk publishes at most inflightCap messages and fills res with
// their acks. Message indexes in errors are relative to the chunk only when
// the batch was split, which needs more than inflightCap messages.
func (b *Broker) publishChunk(ctx context.Context, subject string, msgs []Message, res []PubResult) error {
	// Admission per chunk, not per message: concurrent batches queue FIFO
	// here instead of all stalling inside the client on every free slot.
	n := int64(len(msgs))
	if err := b.inflight.Acquire(ctx, n); err != nil {
		return fmt.Errorf("waiting for publish budget: %w", err)
	}
	defer b.inflight.Release(n)

	// Taken before publishing, so any failure of these messages closes it.
	failed := b.pubFailures()

	futs := make([]jetstream.PubAckFuture, len(msgs))
	for i := range msgs {
		m := &msgs[i]
		// A fresh header map: the client writes into it, and the caller's
		// map may be shared.
		h := make(nats.Header, len(m.Header)+1)
		for k, v := range m.Header {
			h[k] = v
		}
		h[jetstream.MsgIDHeader] = []string{m.ID}
		nm := &nats.Msg{Subject: subject, Data: m.Data, Header: h}
		for {
			// No per-message options: they cost an allocation each.
			f, err := b.pub.PublishMsgAsync(nm)
			if err == nil {
				futs[i] = f
				break
			}
			// The client stalls only if abandoned chunks (ctx canceled
			// before their acks) still hold its pending slots.
			if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
				return fmt.Errorf("message %d: %w", i, err)
			}
			if ctx.Err() != nil {
				return fmt.Errorf("waiting to publish message %d: %w", i, context.Cause(ctx))
			}
		}
	}

	for i, f := range futs {
		// Waiting on Ok alone allocates one channel per message instead of
		// two; the rare failure is signalled through failed.
		var ack *jetstream.PubAck
		select {
		case ack = <-f.Ok():
		case <-failed:
			select {
			case ack = <-f.Ok():
			case err := <-f.Err():
				return fmt.Errorf("message %d (id %s): %w", i, msgs[i].ID, err)
			case <-ctx.Done():
				return fmt.Errorf("waiting for ack %d: %w", i, context.Cause(ctx))
			}
		case <-ctx.Done():
			return fmt.Errorf("waiting for ack %d: %w", i, context.Cause(ctx))
		}
		res[i] = PubResult{Seq: ack.Sequence, Duplicate: ack.Duplicate}
	}
	return nil
}

// pubFailures returns a channel closed at the next async publish failure.
func (b *Broker) pubFailures() <-chan struct{} {
	b.failMu.Lock()
	defer b.failMu.Unlock()
	return b.failed
}

// pubFailed is the sample publisher's async error handler. It cannot tell
// which chunk the message belongs to, so it wakes all waiting chunks, and
// each checks its own futures. Failures are rare (disconnects, a stream
// rejecting a message), so the broadcast costs nothing on the hot path.
func (b *Broker) pubFailed(_ jetstream.JetStream, _ *nats.Msg, _ error) {
	b.failMu.Lock()
	defer b.failMu.Unlock()
	close(b.failed)
	b.failed = make(chan struct{})
}

// ParseSampleSubject returns the partition and user of a stored SAMPLES
// subject (samples.<partition>.<user>), as a consumer sees it.
func ParseSampleSubject(subject string) (partition int, user string, ok bool) {
	rest, found := strings.CutPrefix(subject, "samples.")
	if !found {
		return 0, "", false
	}
	p, user, found := strings.Cut(rest, ".")
	if !found {
		return 0, "", false
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		return 0, "", false
	}
	return n, user, true
}
