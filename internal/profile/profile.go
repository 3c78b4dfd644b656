// Package profile keeps users' profile documents (internal/crdt): it applies the ops
// devices send, persists the merged document sealed under the user's key with a
// compare-and-set version, and fans the applied ops out on the user's change feed (kind
// "profile"), for issue [4]'s sync.
//
// The feed is written through an outbox: the sealed document keeps the ops of the version
// that wrote it, and the store a published marker, so ops stored but not yet on the feed
// (a broker outage, a crash between the write and the publication) go out before the next
// version, or at the next Flush. A device resuming from a cursor thus sees every version's
// ops, in version order.
//
// It imports the domain package, internal/crdt, the vault, the broker, internal/changefeed
// (and internal/processor for the layout of a change) and the standard library; httpapi,
// the sync gateway and cmd/pulsebase import it.
package profile

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/broker"
	"github.com/pulsebase/pulsebase/internal/changefeed"
	"github.com/pulsebase/pulsebase/internal/crdt"
	"github.com/pulsebase/pulsebase/internal/processor"
	"github.com/pulsebase/pulsebase/internal/vault"
)

// sealKind is the associated-data kind of a stored profile.
const sealKind = "profile"

// Service applies and serves profile documents.
type Service struct {
	store pulsebase.ProfileStore
	vault *vault.Vault
	js    jetstream.JetStream
	clock *crdt.HLC
	log   *slog.Logger
}

// New returns a Service. js may be nil (tests, tools): then nothing is published and the
// outbox is left alone, for a Service with a broker to flush.
func New(store pulsebase.ProfileStore, v *vault.Vault, js jetstream.JetStream, log *slog.Logger) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{store: store, vault: v, js: js, clock: crdt.NewHLC("server", 0), log: log}
}

// stored is a user's profile as loaded from the store.
type stored struct {
	doc       *crdt.Document
	version   int64
	published int64
	// ops are the ops that made version; nil for a document stored before the outbox,
	// whose ops were published (or lost) when it was written.
	ops []crdt.Op
	// keys are the user's keys; nil until needed when the user has no profile yet.
	keys *vault.Keys
}

// load returns the user's stored profile: an empty document at version 0 when they have
// none yet.
func (s *Service) load(ctx context.Context, user string) (stored, error) {
	sp, err := s.store.Profile(ctx, user)
	if pulsebase.ErrorCode(err) == pulsebase.ENOTFOUND {
		return stored{doc: crdt.New()}, nil
	}
	if err != nil {
		return stored{}, fmt.Errorf("load profile: %w", err)
	}
	keys, err := s.vault.UserKeys(ctx, user)
	if err != nil {
		return stored{}, err
	}
	pt, err := keys.Open(sealKind, "", sp.Ciphertext)
	if err != nil {
		return stored{}, fmt.Errorf("open profile of %s: %w", user, err)
	}
	doc, ops, err := decodeStored(pt)
	if err != nil {
		return stored{}, fmt.Errorf("decode profile of %s: %w", user, err)
	}
	return stored{doc: doc, version: sp.Version, published: sp.Published, ops: ops, keys: keys}, nil
}

// envelopeFormat is the first byte of a stored profile's plaintext since the outbox, which
// is followed by the length of the document's encoding (uvarint), that encoding, and the
// JSON array of the ops that made this version. An encoding of internal/crdt starts with
// its own format version, a small number (1 today) that will not reach this one, so a
// document stored before the outbox (the bare encoding) still opens.
const envelopeFormat = 0xF1

// encodeStored returns the plaintext of a stored profile.
func encodeStored(doc *crdt.Document, ops []crdt.Op) ([]byte, error) {
	d, err := doc.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("encode profile: %w", err)
	}
	o, err := json.Marshal(ops)
	if err != nil {
		return nil, fmt.Errorf("encode profile ops: %w", err)
	}
	b := make([]byte, 0, 1+binary.MaxVarintLen64+len(d)+len(o))
	b = append(b, envelopeFormat)
	b = binary.AppendUvarint(b, uint64(len(d)))
	b = append(b, d...)
	return append(b, o...), nil
}

// decodeStored reads what encodeStored wrote, or a bare document encoding (ops nil).
func decodeStored(pt []byte) (*crdt.Document, []crdt.Op, error) {
	doc := crdt.New()
	if len(pt) == 0 || pt[0] != envelopeFormat {
		if err := doc.UnmarshalBinary(pt); err != nil {
			return nil, nil, err
		}
		return doc, nil, nil
	}
	n, k := binary.Uvarint(pt[1:])
	if k <= 0 || n > uint64(len(pt)-1-k) {
		return nil, nil, errors.New("bad envelope length")
	}
	d, o := pt[1+k:1+k+int(n)], pt[1+k+int(n):]
	if err := doc.UnmarshalBinary(d); err != nil {
		return nil, nil, err
	}
	var ops []crdt.Op
	if err := json.Unmarshal(o, &ops); err != nil {
		return nil, nil, fmt.Errorf("ops: %w", err)
	}
	return doc, ops, nil
}

// Get returns the user's document and its version: an empty document and 0 when the user
// has none yet. It does not flush the outbox.
func (s *Service) Get(ctx context.Context, user string) (*crdt.Document, int64, error) {
	st, err := s.load(ctx, user)
	if err != nil {
		return nil, 0, err
	}
	return st.doc, st.version, nil
}

// Flush puts the ops of the user's latest version on their change feed if they are not
// known to be there yet (the write's publication failed or was cut short), so that a
// snapshot taken after it is not ahead of the feed. It returns an *Error with code
// EUNAVAILABLE when the broker does not take them.
func (s *Service) Flush(ctx context.Context, user string) error {
	st, err := s.load(ctx, user)
	if err != nil {
		return err
	}
	return s.flush(ctx, user, &st)
}

// flush publishes st's ops if st.published is behind st.version, and records that it no
// longer is.
func (s *Service) flush(ctx context.Context, user string, st *stored) error {
	if s.js == nil || st.published >= st.version {
		return nil
	}
	// A document stored before the outbox keeps no ops: its writer published them.
	if len(st.ops) > 0 {
		if _, err := s.publish(ctx, st.keys, user, st.version, st.ops); err != nil {
			return s.unavailable(user, st.version, err)
		}
	}
	if err := s.store.MarkProfilePublished(ctx, user, st.version); err != nil {
		return fmt.Errorf("mark profile version %d published: %w", st.version, err)
	}
	st.published = st.version
	return nil
}

// unavailable reports that the ops of a stored version could not go out on the feed.
func (s *Service) unavailable(user string, version int64, err error) error {
	s.log.Warn("publish profile change", "user", user, "version", version, "err", err)
	return fmt.Errorf("profile version %d of %s: %w: %w", version, user,
		pulsebase.Errorf(pulsebase.EUNAVAILABLE, "the change is stored but could not reach the change feed; send the same ops again"), err)
}

// Result is the outcome of one op: applied, a duplicate (applied false, no code), or
// refused with a stable code.
type Result struct {
	ID      string `json:"id"`
	Applied bool   `json:"applied"`
	Code    string `json:"code,omitempty"`
	Detail  string `json:"detail,omitempty"`
}

// Outcome is what Apply did.
type Outcome struct {
	// Results holds each op's outcome, in the order of the ops.
	Results []Result
	// View is the merged document, as crdt.Document.View gives it.
	View map[string]any
	// Version is the document's version after the call.
	Version int64
	// Seq is the sequence in CHANGES of the message carrying the ops this call applied
	// (of the last one, should they not fit in one); 0 when it applied none, or without a
	// broker.
	Seq uint64
}

// conflictRetries bounds how often Apply starts again when another server wrote the same
// user's profile in between; it waits a random, growing while before each new attempt so
// that racing servers do not keep colliding.
const conflictRetries = 30

// Apply checks and applies ops to the user's document, in order. A refused op changes
// nothing and does not stop the others; the document is written only when some op
// applied, and the applied ops then go out on the user's change feed. Ops of an earlier
// version still waiting to go out (see Flush) go first.
//
// It returns an *Error with code EUNAVAILABLE when the change feed does not take ops:
// those of an earlier version (nothing of this call is applied), or this call's after they
// were stored. Either way the caller sends the same ops again; they come back as
// duplicates, and the stored ones go out then. ECONFLICT means the document kept changing
// under this call too often.
func (s *Service) Apply(ctx context.Context, user string, ops []crdt.Op) (Outcome, error) {
	for attempt := range conflictRetries {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return Outcome{}, ctx.Err()
			case <-time.After(time.Duration(1+rand.IntN(attempt*2)) * time.Millisecond):
			}
		}
		st, err := s.load(ctx, user)
		if err != nil {
			return Outcome{}, err
		}
		// The feed gets versions in order: this one's ops only after the last one's.
		if err := s.flush(ctx, user, &st); err != nil {
			return Outcome{}, err
		}
		now := time.Now()
		results, applied := s.merge(st.doc, ops, now)
		if len(applied) == 0 {
			return Outcome{Results: results, View: st.doc.View(), Version: st.version}, nil
		}
		if st.keys == nil {
			if st.keys, err = s.vault.UserKeys(ctx, user); err != nil {
				return Outcome{}, err
			}
		}
		pt, err := encodeStored(st.doc, applied)
		if err != nil {
			return Outcome{}, err
		}
		ct, err := st.keys.Seal(sealKind, "", pt)
		if err != nil {
			return Outcome{}, fmt.Errorf("seal profile: %w", err)
		}
		version := st.version + 1
		err = s.store.PutProfile(ctx, pulsebase.StoredProfile{User: user, Version: version, Ciphertext: ct, Updated: now.UTC()})
		if pulsebase.ErrorCode(err) == pulsebase.ECONFLICT {
			continue // another server wrote meanwhile: merge again on top of it
		}
		if err != nil {
			return Outcome{}, fmt.Errorf("store profile: %w", err)
		}
		out := Outcome{Results: results, View: st.doc.View(), Version: version}
		if s.js == nil {
			return out, nil
		}
		if out.Seq, err = s.publish(ctx, st.keys, user, version, applied); err != nil {
			return Outcome{}, s.unavailable(user, version, err)
		}
		// The ops are out; a failed mark only makes the next call publish them again,
		// which the broker drops as a duplicate within its window.
		if err := s.store.MarkProfilePublished(ctx, user, version); err != nil {
			s.log.Warn("mark profile change published", "user", user, "version", version, "err", err)
		}
		return out, nil
	}
	return Outcome{}, pulsebase.Errorf(pulsebase.ECONFLICT, "the profile is changing too fast; try again")
}

// merge applies ops to doc in order and returns each op's result and the ops that applied.
func (s *Service) merge(doc *crdt.Document, ops []crdt.Op, now time.Time) ([]Result, []crdt.Op) {
	results := make([]Result, len(ops))
	var applied []crdt.Op
	for i, op := range ops {
		results[i].ID = op.ID
		err := op.Validate()
		if err == nil {
			err = doc.CheckIncoming(op)
		}
		if err == nil {
			_, err = s.clock.Observe(op.TS, now)
		}
		ok := false
		if err == nil {
			ok, err = doc.Apply(op)
		}
		if err != nil {
			results[i].Code, results[i].Detail = pulsebase.ErrorCode(err), err.Error()
			if results[i].Code == "" {
				results[i].Code = pulsebase.EINVALID
			}
			continue
		}
		results[i].Applied = ok
		if ok {
			applied = append(applied, op)
		}
	}
	return results, applied
}

// maxOpsBytes bounds the JSON of the ops in one change message, leaving room under
// broker.MaxChangeSize for the batch around them and the seal. A var so that a test can
// make a few ops overflow it.
var maxOpsBytes = broker.MaxChangeSize - 16<<10

// publish puts the ops of version on the user's change feed as changes of kind profile,
// in one message with id <user>-profile-<version> (more, with -1, -2, … appended, only if
// they do not fit in one), and returns the sequence of the last.
func (s *Service) publish(ctx context.Context, keys *vault.Keys, user string, version int64, ops []crdt.Op) (uint64, error) {
	var seq uint64
	part, size := 0, 0
	var chunk []json.RawMessage
	send := func() error {
		msgID := user + "-profile-" + strconv.FormatInt(version, 10)
		if part > 0 {
			msgID += "-" + strconv.Itoa(part)
		}
		var err error
		seq, err = changefeed.Publish(ctx, s.js, keys, user, msgID, []processor.Change{{
			Kind: "profile", Key: "profile", Data: map[string]any{"version": version, "ops": chunk}}})
		part, size, chunk = part+1, 0, nil
		return err
	}
	for _, op := range ops {
		b, err := json.Marshal(op)
		if err != nil {
			return 0, fmt.Errorf("encode op %s: %w", op.ID, err)
		}
		if len(chunk) > 0 && size+len(b)+1 > maxOpsBytes {
			if err := send(); err != nil {
				return 0, err
			}
		}
		chunk = append(chunk, b)
		size += len(b) + 1
	}
	if err := send(); err != nil {
		return 0, err
	}
	return seq, nil
}
