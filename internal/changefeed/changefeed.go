// Package changefeed puts changes made outside the stream processor on a user's change
// feed (JetStream stream CHANGES, subject changes.<user>): profile ops (internal/profile)
// and consent answers (internal/consent). A message is a processor.ChangeBatch sealed under
// the user's key with associated data ("change", its Nats-Msg-Id), so processor.OpenChanges
// and everything reading the feed opens it like the processor's own.
//
// It imports the broker, the processor (for the ChangeBatch layout) and the vault; the
// services that write to the feed import it.
package changefeed

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pulsebase/pulsebase/internal/broker"
	"github.com/pulsebase/pulsebase/internal/processor"
	"github.com/pulsebase/pulsebase/internal/vault"
)

// sealKind is the associated-data kind of a change message; processor.OpenChanges opens it.
const sealKind = "change"

// Publish seals changes as one processor.ChangeBatch under the user's keys, bound to
// ("change", msgID), and publishes it on the user's change feed with msgID as its
// Nats-Msg-Id, waiting until the broker has stored it. It returns the message's sequence in
// CHANGES. A message re-published with the same msgID within the stream's duplicate window
// is dropped by the broker, and Publish then returns the sequence of the one stored first:
// so a caller that does not know whether an earlier attempt went out publishes again.
//
// msgID must be unique across all users (start it with the user); the whole batch must fit
// in broker.MaxChangeSize once sealed.
func Publish(ctx context.Context, js jetstream.JetStream, keys *vault.Keys, user, msgID string, changes []processor.Change) (uint64, error) {
	if !broker.ValidUser(user) {
		return 0, fmt.Errorf("publish change %s: %w: %q", msgID, broker.ErrInvalidUser, user)
	}
	b, err := json.Marshal(processor.ChangeBatch{Changes: changes})
	if err != nil {
		return 0, fmt.Errorf("encode change %s: %w", msgID, err)
	}
	ct, err := keys.Seal(sealKind, msgID, b)
	if err != nil {
		return 0, fmt.Errorf("seal change %s: %w", msgID, err)
	}
	ack, err := js.PublishMsg(ctx, &nats.Msg{Subject: broker.ChangeSubject(user), Data: ct,
		Header: nats.Header{jetstream.MsgIDHeader: []string{msgID}}})
	if err != nil {
		return 0, fmt.Errorf("publish change %s: %w", msgID, err)
	}
	return ack.Sequence, nil
}
