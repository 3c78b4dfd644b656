package syncgw_test

import (
	"context"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/pbtest"
	"github.com/pulsebase/pulsebase/internal/recommend"
)

// TestSnapshotHasActiveRecommendations: a snapshot lists the user's active
// recommendations (newest first, accepted ones until they expire) as GET
// …/recommendations does, and none that feedback closed or that expired.
func TestSnapshotHasActiveRecommendations(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	tok := s.UserToken(t, "ada")
	var me struct{ ID string }
	pbtest.Do(t, "GET", s.URL+"/v1/users/me", tok, "", nil).JSON(t, &me)
	ctx := context.Background()
	keys, err := s.Vault.UserKeys(ctx, me.ID)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	var records []pulsebase.DerivedRecord
	seed := func(kind string, created, expires time.Time) string {
		rec := &recommend.Recommendation{ID: recommend.NewID(created), Kind: kind, Title: "t", Body: "b", Why: "w",
			Created: created.UTC(), Expires: expires.UTC(), State: recommend.StateActive}
		ct, err := recommend.SealRecommendation(keys, rec)
		if err != nil {
			t.Fatal(err)
		}
		records = append(records, pulsebase.DerivedRecord{User: me.ID, Kind: recommend.KindRecommendation, Key: rec.ID, Ciphertext: ct, Updated: created})
		return rec.ID
	}
	active := seed("recovery_day", now.Add(-time.Hour), now.Add(time.Hour))
	accepted := seed("move_break", now.Add(-2*time.Hour), now.Add(time.Hour))
	dismissed := seed("sleep_debt", now.Add(-3*time.Hour), now.Add(time.Hour))
	seed("streak", now.Add(-30*time.Hour), now.Add(-6*time.Hour)) // expired
	// Committed under a partition no processor owns.
	if err := s.Store.CommitPartition(ctx, pulsebase.Checkpoint{Partition: 1 << 20, Epoch: 1, Seq: 1}, records); err != nil {
		t.Fatal(err)
	}
	for id, action := range map[string]string{accepted: pulsebase.ActionAccepted, dismissed: pulsebase.ActionDismissed} {
		fb, err := recommend.SealFeedback(keys, me.ID, id, action, now.UTC(), recommend.FeedbackPayload{Kind: "k", Rating: 3})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Store.AddFeedback(ctx, fb, nil); err != nil {
			t.Fatal(err)
		}
	}

	_, w := hello(t, s, tok, "phone", nil)
	snap, _ := w["snapshot"].(map[string]any)
	recs, _ := snap["recommendations"].([]any)
	var got []string
	for _, r := range recs {
		m := r.(map[string]any)
		got = append(got, m["id"].(string)+":"+m["state"].(string))
	}
	want := []string{active + ":active", accepted + ":accepted"}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("the snapshot's recommendations: got %v, want %v", got, want)
	}
	fb, _ := recs[1].(map[string]any)["feedback"].([]any)
	if len(fb) != 1 || fb[0].(map[string]any)["action"] != "accepted" || fb[0].(map[string]any)["rating"] != 3.0 {
		t.Errorf("the accepted one's feedback: %v", fb)
	}
	// The same as GET …/recommendations lists.
	var list struct{ Recommendations []struct{ ID, State string } }
	pbtest.Do(t, "GET", s.URL+"/v1/users/me/recommendations", tok, "", nil).JSON(t, &list)
	if len(list.Recommendations) != 2 || list.Recommendations[0].ID != active || list.Recommendations[1].ID != accepted {
		t.Errorf("GET recommendations: %+v, want the snapshot's", list)
	}
}
