// Package profile keeps users' profile documents (internal/crdt): it applies the ops
// devices send, persists the merged document sealed under the user's key with a
// compare-and-set version, and fans the applied ops out on the user's change feed (kind
// "profile"), for issue [4]'s sync. It imports the domain package, internal/crdt, the
// vault, the broker and the standard library.
package profile

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/broker"
	"github.com/pulsebase/pulsebase/internal/crdt"
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

// New returns a Service; js may be nil, and then nothing is published.
func New(store pulsebase.ProfileStore, v *vault.Vault, js jetstream.JetStream, log *slog.Logger) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{store: store, vault: v, js: js, clock: crdt.NewHLC("server", 0), log: log}
}

// Get returns the user's document and its version: an empty document and 0 when the user
// has none yet.
func (s *Service) Get(ctx context.Context, user string) (*crdt.Document, int64, error) {
	sp, err := s.store.Profile(ctx, user)
	if pulsebase.ErrorCode(err) == pulsebase.ENOTFOUND {
		return crdt.New(), 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	keys, err := s.vault.UserKeys(ctx, user)
	if err != nil {
		return nil, 0, err
	}
	pt, err := keys.Open(sealKind, "", sp.Ciphertext)
	if err != nil {
		return nil, 0, fmt.Errorf("open profile of %s: %w", user, err)
	}
	doc := crdt.New()
	if err := doc.UnmarshalBinary(pt); err != nil {
		return nil, 0, fmt.Errorf("decode profile of %s: %w", user, err)
	}
	return doc, sp.Version, nil
}

// Result is the outcome of one op: applied, a duplicate (applied false, no code), or
// refused with a stable code.
type Result struct {
	ID      string `json:"id"`
	Applied bool   `json:"applied"`
	Code    string `json:"code,omitempty"`
	Detail  string `json:"detail,omitempty"`
}

// conflictRetries bounds how often Apply starts again when another server wrote the same
// user's profile in between; it waits a random, growing while before each new attempt so
// that racing servers do not keep colliding.
const conflictRetries = 30

// Apply checks and applies ops to the user's document, in order, and returns each op's
// outcome with the merged view and its version. A refused op changes nothing and does not
// stop the others; the document is written only when some op applied, and the applied
// ops then go out on the user's change feed.
func (s *Service) Apply(ctx context.Context, user string, ops []crdt.Op) ([]Result, map[string]any, int64, error) {
	for attempt := range conflictRetries {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return nil, nil, 0, ctx.Err()
			case <-time.After(time.Duration(1+rand.IntN(attempt*2)) * time.Millisecond):
			}
		}
		doc, version, err := s.Get(ctx, user)
		if err != nil {
			return nil, nil, 0, err
		}
		results := make([]Result, len(ops))
		var applied []crdt.Op
		now := time.Now()
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
		if len(applied) == 0 {
			return results, doc.View(), version, nil
		}
		keys, err := s.vault.UserKeys(ctx, user)
		if err != nil {
			return nil, nil, 0, err
		}
		b, err := doc.MarshalBinary()
		if err != nil {
			return nil, nil, 0, err
		}
		ct, err := keys.Seal(sealKind, "", b)
		if err != nil {
			return nil, nil, 0, err
		}
		err = s.store.PutProfile(ctx, pulsebase.StoredProfile{User: user, Version: version + 1, Ciphertext: ct, Updated: now.UTC()})
		if pulsebase.ErrorCode(err) == pulsebase.ECONFLICT {
			continue // another server wrote meanwhile: merge again on top of it
		}
		if err != nil {
			return nil, nil, 0, err
		}
		if err := s.publish(ctx, keys, user, version+1, applied); err != nil {
			// Stored and acknowledged: devices that miss this change get the document in
			// their next snapshot or with the next change.
			s.log.Warn("publish profile change", "err", err)
		}
		return results, doc.View(), version + 1, nil
	}
	return nil, nil, 0, pulsebase.Errorf(pulsebase.ECONFLICT, "the profile is changing too fast; try again")
}

// publish puts the applied ops on the user's change feed as one change of kind profile.
func (s *Service) publish(ctx context.Context, keys *vault.Keys, user string, version int64, ops []crdt.Op) error {
	if s.js == nil {
		return nil
	}
	b, err := json.Marshal(map[string]any{"changes": []map[string]any{{
		"kind": "profile", "key": "profile", "data": map[string]any{"version": version, "ops": ops}}}})
	if err != nil {
		return err
	}
	msgID := user + "-profile-" + strconv.FormatInt(version, 10)
	ct, err := keys.Seal("change", msgID, b)
	if err != nil {
		return err
	}
	_, err = s.js.PublishMsg(ctx, &nats.Msg{Subject: broker.ChangeSubject(user), Data: ct,
		Header: nats.Header{jetstream.MsgIDHeader: []string{msgID}}})
	return err
}
