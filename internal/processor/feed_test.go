package processor_test

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/processor"
)

// TestReadFeedPagesWithoutGapOrDuplicate reads a user's feed whole and in pages of every
// size from 1 to 9, and from the cursor of every change, and checks that each way gives
// the same changes in the same order; stale and foreign cursors are refused.
func TestReadFeedPagesWithoutGapOrDuplicate(t *testing.T) {
	pl := newPipeline(t)
	ctx := context.Background()
	const user, other = "ufeedpages", "ufeedother"
	grantAll(t, pl, user)
	grantAll(t, pl, other)
	stop := pl.run(t)
	rng := rand.New(rand.NewPCG(21, 22))
	now := time.Now()
	for i := 0; i < 4; i++ { // several commits, so several messages
		for _, u := range []string{user, other} {
			if _, err := pl.ingest.Ingest(ctx, u, pulsebase.Principal{Subject: u, Role: pulsebase.RoleUser}, randomSamples(rng, 15, now)); err != nil {
				t.Fatal(err)
			}
		}
		pl.waitApplied(t, user)
	}
	pl.waitDaily(t, user)
	// The feed must hold still while it is read many ways: a later recomputation (the
	// processor runs on; under load its last ones come late) would add changes between
	// the reads.
	stop()
	keys, err := pl.vault.UserKeys(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	js := pl.brk.JetStream()
	all, err := processor.ReadFeed(ctx, js, keys, user, "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	if all.HasMore || len(all.Changes) < 20 {
		t.Fatalf("the whole feed: %d changes, has_more %v", len(all.Changes), all.HasMore)
	}
	if want := pl.feed(t, user); countChanges(want) != len(all.Changes) {
		t.Fatalf("ReadFeed gave %d changes, the stream holds %d", len(all.Changes), countChanges(want))
	}
	same := func(got []processor.FeedChange, want []processor.FeedChange, what string) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %d changes, want %d", what, len(got), len(want))
		}
		for i := range want {
			if got[i].Cursor != want[i].Cursor || got[i].Kind != want[i].Kind || got[i].Key != want[i].Key {
				t.Fatalf("%s: change %d is %s %s, want %s %s", what, i, got[i].Kind, got[i].Key, want[i].Kind, want[i].Key)
			}
		}
	}
	for size := 1; size <= 9; size++ {
		var got []processor.FeedChange
		after := ""
		for pages := 0; ; pages++ {
			p, err := processor.ReadFeed(ctx, js, keys, user, after, size)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, p.Changes...)
			after = p.Cursor
			if !p.HasMore {
				break
			}
			if pages > 10_000 {
				t.Fatal("paging does not end")
			}
		}
		same(got, all.Changes, "pages")
		// Reading again from the end gives nothing, and the same cursor.
		if p, err := processor.ReadFeed(ctx, js, keys, user, after, size); err != nil || len(p.Changes) != 0 || p.HasMore || p.Cursor != after {
			t.Fatalf("after the end: %+v, %v", p, err)
		}
	}
	for i, c := range all.Changes {
		p, err := processor.ReadFeed(ctx, js, keys, user, c.Cursor, 1000)
		if err != nil {
			t.Fatal(err)
		}
		same(p.Changes, all.Changes[i+1:], "resumed")
	}
	// A cursor of another epoch (a recreated stream) has expired; garbage is invalid.
	cur, err := processor.ParseCursor(all.Changes[0].Cursor, user)
	if err != nil {
		t.Fatal(err)
	}
	cur.Epoch--
	if _, err := processor.ReadFeed(ctx, js, keys, user, cur.Encode(user), 10); pulsebase.ErrorCode(err) != processor.ECURSOREXPIRED {
		t.Errorf("a cursor of another epoch: got %v, want %s", err, processor.ECURSOREXPIRED)
	}
	// A cursor of this user's feed is refused in another's, where it would name a
	// position of no meaning.
	okeys, err := pl.vault.UserKeys(ctx, other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := processor.ReadFeed(ctx, js, okeys, other, all.Changes[0].Cursor, 10); pulsebase.ErrorCode(err) != pulsebase.EINVALID {
		t.Errorf("another user's cursor: got %v, want invalid", err)
	}
	for _, bad := range []string{"x", "c1.!!", "c1." + "YWJj"} {
		if _, err := processor.ReadFeed(ctx, js, keys, user, bad, 10); pulsebase.ErrorCode(err) != pulsebase.EINVALID {
			t.Errorf("cursor %q: got %v, want invalid", bad, err)
		}
	}
}

func countChanges(batches []processor.ChangeBatch) int {
	n := 0
	for _, b := range batches {
		n += len(b.Changes)
	}
	return n
}
