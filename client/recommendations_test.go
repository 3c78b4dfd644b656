package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/client"
	"github.com/pulsebase/pulsebase/internal/pbtest"
	"github.com/pulsebase/pulsebase/internal/recommend"
)

// TestRecommendationsAndFeedback lists a delivered recommendation, gives feedback on it,
// and sees its new state; refusals come back as *client.Error with their status and code.
func TestRecommendationsAndFeedback(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	ctx := context.Background()
	c := client.New(s.URL, s.UserToken(t, "ana"))
	me, err := c.Me(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// A recommendation as the processor stores it.
	keys, err := s.Vault.UserKeys(ctx, me.ID)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	rec := &recommend.Recommendation{ID: recommend.NewID(now), Kind: "move_break", Title: "Stand up", Body: "A short walk helps.",
		Why: "58 minutes without steps.", Evidence: map[string]any{"sedentary_minutes": 58.0}, Created: now,
		Expires: now.Add(time.Hour), State: recommend.StateActive, Priority: 60}
	ct, err := recommend.SealRecommendation(keys, rec)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Store.CommitPartition(ctx, pulsebase.Checkpoint{Partition: 1 << 20, Epoch: 1, Seq: 1}, []pulsebase.DerivedRecord{
		{User: me.ID, Kind: recommend.KindRecommendation, Key: rec.ID, Ciphertext: ct, Updated: now}}); err != nil {
		t.Fatal(err)
	}

	list, err := c.Recommendations(ctx, "")
	if err != nil || len(list) != 1 || list[0].ID != rec.ID || list[0].State != "active" || list[0].Why != rec.Why ||
		list[0].Evidence["sedentary_minutes"] != 58.0 || !list[0].Expires.Equal(rec.Expires) {
		t.Fatalf("Recommendations: %+v, %v", list, err)
	}
	if err := c.Feedback(ctx, rec.ID, "accepted", 4); err != nil {
		t.Fatalf("Feedback: %v", err)
	}
	if err := c.Feedback(ctx, rec.ID, "accepted", 4); err != nil {
		t.Fatalf("Feedback again: %v", err)
	}
	list, err = c.Recommendations(ctx, "all")
	if err != nil || len(list) != 1 || list[0].State != "accepted" || len(list[0].Feedback) != 1 ||
		list[0].Feedback[0].Action != "accepted" || list[0].Feedback[0].Rating != 4 {
		t.Fatalf("after feedback: %+v, %v", list, err)
	}

	for _, tc := range []struct {
		name   string
		err    error
		status int
		code   string
	}{
		{"ignored is the server's", c.Feedback(ctx, rec.ID, "ignored", 0), 400, pulsebase.EINVALID},
		{"rating 6", c.Feedback(ctx, rec.ID, "completed", 6), 400, pulsebase.EINVALID},
		{"unknown id", c.Feedback(ctx, recommend.NewID(now), "accepted", 0), 404, pulsebase.ENOTFOUND},
		{"unknown state", func() error { _, err := c.Recommendations(ctx, "done"); return err }(), 400, pulsebase.EINVALID},
	} {
		var e *client.Error
		if !errors.As(tc.err, &e) || e.Status != tc.status || e.Code != tc.code {
			t.Errorf("%s: got %v, want a %d %s *client.Error", tc.name, tc.err, tc.status, tc.code)
		}
	}
}
