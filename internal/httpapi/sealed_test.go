package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/client"
	"github.com/pulsebase/pulsebase/internal/ingest"
	"github.com/pulsebase/pulsebase/internal/pbtest"
	"github.com/pulsebase/pulsebase/internal/processor"
)

func sampleInputs(n int, source string) []pulsebase.SampleInput {
	out := make([]pulsebase.SampleInput, n)
	for i := range out {
		out[i] = pulsebase.SampleInput{
			Type: "heart_rate", Value: json.RawMessage("71"), Unit: "bpm", Source: source,
			Start: time.Now().Add(-time.Duration(i+1) * time.Minute).UTC().Format(time.RFC3339),
		}
	}
	return out
}

// TestSealedBatchIsStoredUnopenedAndOpensInTheProcessingTier posts a batch sealed with the
// SDK, reads the stored record back from the stream and opens it the way the processor
// will: with the user's data key, then the processing tier's private key.
func TestSealedBatchIsStoredUnopenedAndOpensInTheProcessingTier(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	ctx := context.Background()
	c := client.New(s.URL, s.UserToken(t, "alice"))
	me, err := c.Me(ctx)
	if err != nil {
		t.Fatal(err)
	}
	key, err := c.ProcessingKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := client.Seal(key, me.ID, sampleInputs(3, "sealed-watch"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.PostSealed(ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	if res.Sealed == nil || res.Sealed.Duplicate || res.Sealed.Batch == "" {
		t.Fatalf("got %+v, want a stored sealed batch", res)
	}
	again, err := c.PostSealed(ctx, batch)
	if err != nil || again.Sealed == nil || !again.Sealed.Duplicate || again.Sealed.Batch != res.Sealed.Batch {
		t.Errorf("re-post: got %+v %v, want the same batch as a duplicate", again, err)
	}

	st, err := s.Broker.JetStream().Stream(ctx, "SAMPLES")
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get(ingest.KindHeader) != ingest.KindSealed {
		t.Fatalf("got kind %q, want sealed", m.Header.Get(ingest.KindHeader))
	}
	keys, err := s.Vault.UserKeys(ctx, me.ID)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := ingest.OpenSealedRecord(keys, m.Header.Get("Nats-Msg-Id"), m.Data)
	if err != nil {
		t.Fatal(err)
	}
	if rec.KeyID != key.KeyID || rec.Subject != "alice" {
		t.Errorf("got record %+v, want key %s and subject alice", rec, key.KeyID)
	}
	pt, err := s.Vault.OpenBatch(ctx, rec.KeyID, me.ID, rec.Sealed)
	if err != nil {
		t.Fatal(err)
	}
	in, err := ingest.DecodeBatch("application/json", pt, 0)
	if err != nil || len(in) != 3 || in[0].Source != "sealed-watch" {
		t.Errorf("got %d samples (%v), want the 3 sealed ones", len(in), err)
	}
	// Sealed for alice, the batch does not open as bob's.
	if _, err := s.Vault.OpenBatch(ctx, rec.KeyID, "ubob", rec.Sealed); err == nil {
		t.Error("a batch sealed for alice opened for another user")
	}
}

func TestSealedBatchRefusals(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	ctx := context.Background()
	tok := s.UserToken(t, "alice")
	c := client.New(s.URL, tok)
	me, _ := c.Me(ctx)
	key, err := c.ProcessingKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	unknown := key
	unknown.KeyID = "pk-unknown"
	b, err := client.Seal(unknown, me.ID, sampleInputs(1, "w"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.PostSealed(ctx, b)
	var apiErr *client.Error
	if !errors.As(err, &apiErr) || apiErr.Status != 400 {
		t.Errorf("unknown key id: got %v, want 400", err)
	}
	for name, body := range map[string]string{
		"not JSON":      `{"key_id":`,
		"no ciphertext": `{"key_id":"` + key.KeyID + `"}`,
		"bad base64":    `{"key_id":"` + key.KeyID + `","sealed":"%%%"}`,
		"extra member":  `{"key_id":"` + key.KeyID + `","sealed":"AAAA","samples":[]}`,
	} {
		r := pbtest.Do(t, "POST", s.URL+"/v1/samples", tok, pulsebase.MediaSealed, []byte(body))
		if r.Status != 400 {
			t.Errorf("%s: got %d %s, want 400", name, r.Status, r.Body)
		}
	}
	if n := streamMsgs(t, s); n != 0 {
		t.Errorf("refused sealed batches stored %d messages", n)
	}
}

func TestProcessingKeyRotationKeepsTheOldKeyForAGracePeriod(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	ctx := context.Background()
	old, err := client.New(s.URL, "").ProcessingKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	next, err := s.Vault.RotateProcessingKey(ctx, time.Hour, "test")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := s.Vault.ProcessingKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0].KeyID != next.KeyID || keys[1].KeyID != old.KeyID || keys[1].NotAfter.IsZero() {
		t.Fatalf("got %+v, want the new key first and the old one with an end of grace", keys)
	}
	// A rotation with no grace retires every older key at once; batches stored under them
	// still open, since their private keys stay in the vault.
	sealedOld, _ := pulsebase.SealBatch(old, "ualice", []byte(`{"samples":[]}`))
	if _, err := s.Vault.RotateProcessingKey(ctx, 0, "test"); err != nil {
		t.Fatal(err)
	}
	keys, _ = s.Vault.ProcessingKeys(ctx)
	if len(keys) != 1 || keys[0].KeyID == old.KeyID || keys[0].KeyID == next.KeyID {
		t.Errorf("got %+v after a rotation without grace, want only the newest key", keys)
	}
	if pt, err := s.Vault.OpenBatch(ctx, old.KeyID, "ualice", sealedOld.Sealed); err != nil || !strings.Contains(string(pt), "samples") {
		t.Errorf("a batch sealed to a retired key no longer opens: %v", err)
	}
}

// TestSealedSamplesAreValidatedAndCountedByTheProcessor: the processor opens a sealed
// batch, counts its valid samples and reports the invalid one, by index and code, on the
// user's change feed.
func TestSealedSamplesAreValidatedAndCountedByTheProcessor(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	ctx := context.Background()
	tok := s.UserToken(t, "alice")
	c := client.New(s.URL, tok)
	me, _ := c.Me(ctx)
	key, err := c.ProcessingKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hour := time.Now().UTC().Add(-2 * time.Hour).Truncate(time.Hour)
	var in []pulsebase.SampleInput
	for i, v := range []string{"61", "62", "63", "400"} {
		in = append(in, pulsebase.SampleInput{Type: "heart_rate", Value: json.RawMessage(v), Unit: "bpm", Source: "ring",
			Start: hour.Add(time.Duration(i) * time.Minute).Format(time.RFC3339)})
	}
	b, err := client.Seal(key, me.ID, in)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.PostSealed(ctx, b); err != nil {
		t.Fatal(err)
	}
	url := s.URL + "/v1/users/me/series/heart_rate?resolution=1h&from=" + hour.Format(time.RFC3339) + "&to=" + hour.Add(time.Hour).Format(time.RFC3339)
	pbtest.WaitFor(t, 60*time.Second, "the sealed samples in the series", func() bool {
		var doc seriesDoc
		pbtest.Do(t, "GET", url, tok, "", nil).JSON(t, &doc)
		return len(doc.Points) == 1 && doc.Points[0].Count == 3 && doc.Points[0].Sum == 186
	})
	// The rejection on alice's change feed.
	keys, err := s.Vault.UserKeys(ctx, me.ID)
	if err != nil {
		t.Fatal(err)
	}
	st, err := s.Broker.JetStream().Stream(ctx, "CHANGES")
	if err != nil {
		t.Fatal(err)
	}
	var rejection map[string]any
	pbtest.WaitFor(t, 60*time.Second, "a rejection on the change feed", func() bool {
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
			m, err := st.GetMsg(ctx, seq)
			if err != nil {
				continue
			}
			cb, err := processor.OpenChanges(keys, m.Header.Get("Nats-Msg-Id"), m.Data)
			if err != nil {
				t.Fatalf("a change on alice's feed does not open: %v", err)
			}
			for _, ch := range cb.Changes {
				if ch.Kind == "rejection" {
					rejection = ch.Data
					return true
				}
			}
		}
		return false
	})
	if rejection["index"] != float64(3) || rejection["code"] != pulsebase.CodeOutOfRange {
		t.Errorf("got rejection %v, want index 3 out_of_range", rejection)
	}
}
