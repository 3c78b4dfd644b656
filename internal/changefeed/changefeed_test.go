package changefeed_test

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pulsebase/pulsebase/internal/broker"
	"github.com/pulsebase/pulsebase/internal/changefeed"
	"github.com/pulsebase/pulsebase/internal/pbtest"
	"github.com/pulsebase/pulsebase/internal/processor"
)

// TestPublish publishes a change twice with one id, as a retry after a lost ack would:
// the feed holds it once, both calls name its sequence, it opens with the owner's key as
// processor.OpenChanges reads the feed, and with no one else's.
func TestPublish(t *testing.T) {
	ctx := context.Background()
	parts := pbtest.OpenParts(t, broker.Config{})
	v, js := parts.Vault, parts.Broker.JetStream()
	keys, err := v.UserKeys(ctx, "ufeed")
	if err != nil {
		t.Fatal(err)
	}
	changes := []processor.Change{{Kind: "consent", Key: "consent", Data: map[string]any{"version": 1.0}}}
	seq1, err := changefeed.Publish(ctx, js, keys, "ufeed", "ufeed-consent-1", changes)
	if err != nil {
		t.Fatal(err)
	}
	seq2, err := changefeed.Publish(ctx, js, keys, "ufeed", "ufeed-consent-1", changes)
	if err != nil {
		t.Fatal(err)
	}
	if seq1 == 0 || seq2 != seq1 {
		t.Errorf("got sequences %d and %d, want one non-zero sequence twice", seq1, seq2)
	}
	st, err := js.Stream(ctx, broker.StreamChanges)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetMsg(ctx, seq1)
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.Msgs; n != 1 {
		t.Errorf("got %d messages in %s, want 1", n, broker.StreamChanges)
	}
	id := m.Header.Get(jetstream.MsgIDHeader)
	if m.Subject != broker.ChangeSubject("ufeed") || id != "ufeed-consent-1" {
		t.Errorf("got subject %s id %s, want %s ufeed-consent-1", m.Subject, id, broker.ChangeSubject("ufeed"))
	}
	cb, err := processor.OpenChanges(keys, id, m.Data)
	if err != nil {
		t.Fatal(err)
	}
	if len(cb.Changes) != 1 || cb.Changes[0].Kind != "consent" || cb.Changes[0].Data["version"] != 1.0 {
		t.Errorf("got %+v, want the consent change", cb)
	}
	other, err := v.UserKeys(ctx, "uother")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := processor.OpenChanges(other, id, m.Data); err == nil {
		t.Error("another user's key opens the change")
	}
	if _, err := changefeed.Publish(ctx, js, keys, "u.bad", "x", changes); err == nil {
		t.Error("a user that is no subject token was published")
	}
}
