package storetest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
)

// wantKEKs checks that s lists exactly want, in order.
func wantKEKs(t *testing.T, what string, s pulsebase.Store, want ...pulsebase.KEKInfo) {
	t.Helper()
	got, err := s.KEKs(t.Context())
	if err != nil {
		t.Fatalf("%s: KEKs: %v", what, err)
	}
	if len(got) != len(want) {
		t.Fatalf("%s: got KEKs %+v, want %+v", what, got, want)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.ID != w.ID || g.URI != w.URI || g.Primary != w.Primary {
			t.Errorf("%s: KEK %d: got %s %s primary=%v, want %s %s primary=%v", what, i,
				g.ID, g.URI, g.Primary, w.ID, w.URI, w.Primary)
		}
		sameTime(t, fmt.Sprintf("%s: KEK %d Created", what, i), g.Created, stored(w.Created))
	}
}

func testKEKRegistry(t *testing.T, open Opener) {
	s, _ := openStore(t, open)
	ctx := t.Context()
	wantKEKs(t, "empty registry", s)

	a := pulsebase.KEKInfo{ID: "kek-a", URI: "pkcs11://token/slot-a", Created: t0}
	b := pulsebase.KEKInfo{ID: "kek-b", URI: "local:///var/lib/pulsebase/kek-b", Created: t0.Add(time.Hour)}
	// b first, and claiming to be primary: the list is oldest first, not in registration
	// order, and only SetPrimaryKEK makes a primary.
	claims := b
	claims.Primary = true
	for _, k := range []pulsebase.KEKInfo{claims, a} {
		if err := s.RegisterKEK(ctx, k); err != nil {
			t.Fatalf("RegisterKEK(%s): %v", k.ID, err)
		}
	}
	// Registering an id again changes nothing.
	again := pulsebase.KEKInfo{ID: "kek-a", URI: "local:///elsewhere", Created: t0.Add(2 * time.Hour)}
	if err := s.RegisterKEK(ctx, again); err != nil {
		t.Fatalf("RegisterKEK(kek-a) again: %v, want nil", err)
	}
	wantKEKs(t, "after registering", s, a, b)

	primary := func(k pulsebase.KEKInfo) pulsebase.KEKInfo { k.Primary = true; return k }
	if err := s.SetPrimaryKEK(ctx, "kek-a"); err != nil {
		t.Fatalf("SetPrimaryKEK(kek-a): %v", err)
	}
	wantKEKs(t, "after SetPrimaryKEK(kek-a)", s, primary(a), b)
	if err := s.SetPrimaryKEK(ctx, "kek-a"); err != nil {
		t.Fatalf("SetPrimaryKEK(kek-a) again: %v", err)
	}
	wantKEKs(t, "after SetPrimaryKEK(kek-a) twice", s, primary(a), b)
	if err := s.SetPrimaryKEK(ctx, "kek-b"); err != nil {
		t.Fatalf("SetPrimaryKEK(kek-b): %v", err)
	}
	wantKEKs(t, "after SetPrimaryKEK(kek-b)", s, a, primary(b))
	// Registering the primary's id again does not demote it.
	if err := s.RegisterKEK(ctx, b); err != nil {
		t.Fatalf("RegisterKEK(kek-b) again: %v", err)
	}
	wantKEKs(t, "after registering the primary again", s, a, primary(b))

	err := s.SetPrimaryKEK(ctx, "kek-unknown")
	wantCode(t, err, pulsebase.ENOTFOUND)
	wantKEKs(t, "after SetPrimaryKEK(unknown)", s, a, primary(b))

	// The primary cannot be removed.
	wantCode(t, s.RemoveKEK(ctx, "kek-b"), pulsebase.ECONFLICT)
	// Nor a KEK that still wraps a key.
	k := key("u1", "data", "kek-a", "under a")
	if _, err := s.CreateWrappedKey(ctx, k); err != nil {
		t.Fatalf("CreateWrappedKey: %v", err)
	}
	wantCode(t, s.RemoveKEK(ctx, "kek-a"), pulsebase.ECONFLICT)
	wantKEKs(t, "after refused removals", s, a, primary(b))

	// Once the key is re-wrapped, kek-a can go.
	rewrapped := key("u1", "data", "kek-b", "under b")
	if err := s.UpdateWrappedKey(ctx, rewrapped, k); err != nil {
		t.Fatalf("UpdateWrappedKey: %v", err)
	}
	if err := s.RemoveKEK(ctx, "kek-a"); err != nil {
		t.Fatalf("RemoveKEK(kek-a) after re-wrapping: %v", err)
	}
	wantKEKs(t, "after RemoveKEK(kek-a)", s, primary(b))
	wantCode(t, s.RemoveKEK(ctx, "kek-a"), pulsebase.ENOTFOUND)
	wantCode(t, s.SetPrimaryKEK(ctx, "kek-a"), pulsebase.ENOTFOUND)

	wantCode(t, s.RegisterKEK(ctx, pulsebase.KEKInfo{URI: "local:///no-id", Created: t0}), pulsebase.EINVALID)
}

// testSetPrimaryKEKConcurrent makes KEKs primary from many goroutines at once: every call
// must succeed and exactly one KEK end up primary. A store that clears and sets the flag
// without serializing the calls leaves two primaries, or fails a call on the unique index.
func testSetPrimaryKEKConcurrent(t *testing.T, open Opener) {
	s, _ := openStore(t, open)
	ctx := t.Context()
	const n = 8
	for i := range n {
		k := pulsebase.KEKInfo{ID: fmt.Sprint("kek-", i), URI: fmt.Sprint("local:///kek-", i), Created: t0}
		if err := s.RegisterKEK(ctx, k); err != nil {
			t.Fatalf("RegisterKEK: %v", err)
		}
	}
	for round := range 5 {
		var (
			wg    sync.WaitGroup
			start = make(chan struct{})
			errs  = make([]error, n)
		)
		for i := range n {
			wg.Go(func() {
				<-start
				errs[i] = s.SetPrimaryKEK(ctx, fmt.Sprint("kek-", i))
			})
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("round %d: SetPrimaryKEK(kek-%d): %v", round, i, err)
			}
		}
		keks, err := s.KEKs(ctx)
		if err != nil {
			t.Fatalf("KEKs: %v", err)
		}
		var primaries []string
		for _, k := range keks {
			if k.Primary {
				primaries = append(primaries, k.ID)
			}
		}
		if len(keks) != n || len(primaries) != 1 {
			t.Fatalf("round %d: got %d KEKs with primaries %v, want %d KEKs and one primary", round, len(keks), primaries, n)
		}
	}
}

func testKeyEvents(t *testing.T, open Opener) {
	s, _ := openStore(t, open)
	ctx := t.Context()
	if got, err := s.KeyEvents(ctx); err != nil || len(got) != 0 {
		t.Fatalf("KeyEvents of an empty store: got %v, %v; want none", got, err)
	}
	events := []pulsebase.KeyEvent{
		{At: t0, Actor: "cli:root@host", Action: "kek.rotate.start", Detail: `{"from":"kek-1","to":"kek-2"}`},
		// Detail comes back byte for byte, whitespace and key order included.
		{At: t0.Add(time.Minute), Actor: "admin/tok-1", Action: "user.erase", Detail: "{\"user\": \"u1\",\n  \"keys\": 2, \"é\": \"\u2603\"}"},
		// Appended later but stamped earlier: the log is in append order.
		{At: t0.Add(-time.Hour), Actor: "cli:root@host", Action: "kek.rotate.done", Detail: `{"rewrapped":25}`},
	}
	for i := range events {
		// Seq is the store's to assign: the same value on every event must not matter.
		e := events[i]
		e.Seq = 7
		if err := s.AppendKeyEvent(ctx, e); err != nil {
			t.Fatalf("AppendKeyEvent: %v", err)
		}
	}
	got, err := s.KeyEvents(ctx)
	if err != nil {
		t.Fatalf("KeyEvents: %v", err)
	}
	if len(got) != len(events) {
		t.Fatalf("KeyEvents: got %d events, want %d", len(got), len(events))
	}
	for i, w := range events {
		g := got[i]
		if g.Actor != w.Actor || g.Action != w.Action || g.Detail != w.Detail {
			t.Errorf("event %d: got (%q, %q, %q), want (%q, %q, %q)", i, g.Actor, g.Action, g.Detail, w.Actor, w.Action, w.Detail)
		}
		sameTime(t, fmt.Sprintf("event %d At", i), g.At, stored(w.At))
		if i > 0 && g.Seq <= got[i-1].Seq {
			t.Errorf("event %d: Seq %d after Seq %d, want increasing", i, g.Seq, got[i-1].Seq)
		}
	}

	// Concurrent appends each get their own place.
	const n = 20
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			errs[i] = s.AppendKeyEvent(ctx, pulsebase.KeyEvent{At: t0, Actor: "test", Action: fmt.Sprint("concurrent-", i), Detail: "{}"})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent AppendKeyEvent %d: %v", i, err)
		}
	}
	got, err = s.KeyEvents(ctx)
	if err != nil {
		t.Fatalf("KeyEvents: %v", err)
	}
	if len(got) != len(events)+n {
		t.Fatalf("KeyEvents after concurrent appends: got %d events, want %d", len(got), len(events)+n)
	}
	seen := make(map[string]bool)
	for i, e := range got {
		if i > 0 && e.Seq <= got[i-1].Seq {
			t.Errorf("event %d: Seq %d after Seq %d, want increasing", i, e.Seq, got[i-1].Seq)
		}
		if seen[e.Action] {
			t.Errorf("event %q listed twice", e.Action)
		}
		seen[e.Action] = true
	}
	for i := range n {
		if !seen[fmt.Sprint("concurrent-", i)] {
			t.Errorf("event concurrent-%d missing", i)
		}
	}
}
