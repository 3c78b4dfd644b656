// Package storetest is the conformance suite every pulsebase.Store implementation runs
// (internal/sqlite, internal/postgres): one set of behaviours, checked the same way on each
// engine, so the embedded and the scale-out deployment cannot drift apart.
//
// Only tests import it. It asserts on the contract written in the root package's doc
// comments, not on any engine's details; engine-specific checks (WAL mode, fresh databases)
// live in each engine's own tests.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
)

// Opener opens a store on a new, empty database for t, and returns it with reopen, which
// opens another store on that same database, as a restarted process would.
//
// Run closes every store it is given (registering the Close with t.Cleanup right after it
// gets the store, so it runs before the opener's own cleanups). The opener is responsible
// only for the database: a t.TempDir file, or a database it creates and drops in
// t.Cleanup. Each subtest calls the opener once, so subtests never see each other's data.
type Opener func(t *testing.T) (s pulsebase.Store, reopen func(t *testing.T) pulsebase.Store)

// Run runs the conformance suite against the stores open returns. Subtests run in
// parallel, which also exercises the store's pooling.
func Run(t *testing.T, open Opener) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open Opener)
	}{
		{"EnsureUser", testEnsureUser},
		{"EnsureUserConcurrent", testEnsureUserConcurrent},
		{"EnsureUserIDTaken", testEnsureUserIDTaken},
		{"UserNotFound", testUserNotFound},
		{"CreateWrappedKey", testCreateWrappedKey},
		{"CreateWrappedKeyConcurrent", testCreateWrappedKeyConcurrent},
		{"WrappedKeyNotFound", testWrappedKeyNotFound},
		{"UpdateWrappedKey", testUpdateWrappedKey},
		{"EraseKeys", testEraseKeys},
		{"EraseKeysRacesCreate", testEraseKeysRacesCreate},
		{"WrappedKeysByKEK", testWrappedKeysByKEK},
		{"CountWrappedKeys", testCountWrappedKeys},
		{"KEKRegistry", testKEKRegistry},
		{"SetPrimaryKEKConcurrent", testSetPrimaryKEKConcurrent},
		{"KeyEvents", testKeyEvents},
		{"Consent", testConsent},
		{"AppendConsentConcurrent", testAppendConsentConcurrent},
		{"Derived", testDerived},
		{"CommitPartitionFencingConcurrent", testCommitPartitionFencingConcurrent},
		{"Profile", testProfile},
		{"PutProfileConcurrent", testPutProfileConcurrent},
		{"ProfilePublished", testProfilePublished},
		{"MarkProfilePublishedConcurrent", testMarkProfilePublishedConcurrent},
		{"Feedback", testFeedback},
		{"AddFeedbackConcurrent", testAddFeedbackConcurrent},
		{"Times", testTimes},
		{"Ping", testPing},
		{"Reopen", testReopen},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, open)
		})
	}
}

// openStore calls open and closes the store at the end of the test.
func openStore(t *testing.T, open Opener) (pulsebase.Store, func(t *testing.T) pulsebase.Store) {
	t.Helper()
	s, reopen := open(t)
	t.Cleanup(func() { s.Close() })
	return s, func(t *testing.T) pulsebase.Store {
		t.Helper()
		s := reopen(t)
		t.Cleanup(func() { s.Close() })
		return s
	}
}

// t0 is a time with nanoseconds, in a zone other than UTC, so tests see normalization.
var t0 = time.Date(2026, 3, 14, 15, 9, 26, 535897932, time.FixedZone("UTC+2", 2*3600))

// stored is what t looks like after a round trip through any store.
func stored(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	var e *pulsebase.Error
	if !errors.As(err, &e) {
		t.Fatalf("got error %v, want a *pulsebase.Error with code %q", err, code)
	}
	if e.Code != code {
		t.Fatalf("got code %q (%v), want %q", e.Code, err, code)
	}
}

func sameTime(t *testing.T, what string, got, want time.Time) {
	t.Helper()
	if !got.Equal(want) || got.Location() != time.UTC {
		t.Errorf("%s: got %v (%v), want %v in UTC", what, got, got.Location(), want)
	}
}

func testEnsureUser(t *testing.T, open Opener) {
	s, _ := openStore(t, open)
	ctx := t.Context()
	hash := []byte("subject-hash-1\x00\xff")

	u, created, err := s.EnsureUser(ctx, hash, "u1", t0)
	if err != nil {
		t.Fatalf("first EnsureUser: %v", err)
	}
	if !created || u.ID != "u1" {
		t.Fatalf("first EnsureUser: got (%+v, created=%v), want id u1, created", u, created)
	}
	sameTime(t, "first EnsureUser created", u.Created, stored(t0))

	u2, created, err := s.EnsureUser(ctx, hash, "u2", t0.Add(time.Hour))
	if err != nil {
		t.Fatalf("second EnsureUser: %v", err)
	}
	if created || u2.ID != "u1" {
		t.Fatalf("second EnsureUser: got (%+v, created=%v), want id u1, not created", u2, created)
	}
	sameTime(t, "second EnsureUser created", u2.Created, stored(t0))

	// The id offered by the losing call must not have been stored.
	if _, err := s.User(ctx, "u2"); pulsebase.ErrorCode(err) != pulsebase.ENOTFOUND {
		t.Errorf("User(u2) after a no-op EnsureUser: got %v, want %s", err, pulsebase.ENOTFOUND)
	}

	// Another hash is another user.
	u3, created, err := s.EnsureUser(ctx, []byte("subject-hash-2"), "u3", t0)
	if err != nil || !created || u3.ID != "u3" {
		t.Fatalf("EnsureUser(other hash): got (%+v, %v, %v), want new user u3", u3, created, err)
	}

	got, err := s.User(ctx, "u1")
	if err != nil {
		t.Fatalf("User(u1): %v", err)
	}
	if got.ID != "u1" {
		t.Errorf("User(u1): got id %q", got.ID)
	}
	sameTime(t, "User(u1).Created", got.Created, stored(t0))
}

func testEnsureUserConcurrent(t *testing.T, open Opener) {
	s, _ := openStore(t, open)
	ctx := t.Context()
	const n = 20
	hash := []byte("contended-subject")

	type result struct {
		u       pulsebase.User
		created bool
		err     error
	}
	results := make([]result, n)
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
	)
	for i := range n {
		wg.Go(func() {
			<-start // line every goroutine up to maximize the overlap
			u, created, err := s.EnsureUser(ctx, hash, fmt.Sprintf("user-%02d", i), t0)
			results[i] = result{u, created, err}
		})
	}
	close(start)
	wg.Wait()

	var creators int
	winner := ""
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("goroutine %d: EnsureUser: %v", i, r.err)
		}
		if r.created {
			creators++
		}
		if winner == "" {
			winner = r.u.ID
		}
		if r.u.ID != winner {
			t.Errorf("goroutine %d: got user %q, another got %q; want one user", i, r.u.ID, winner)
		}
	}
	if creators != 1 {
		t.Errorf("got %d callers told they created the user, want 1", creators)
	}
	if _, err := s.User(ctx, winner); err != nil {
		t.Errorf("User(%q) of the winner: %v", winner, err)
	}
}

func testEnsureUserIDTaken(t *testing.T, open Opener) {
	s, _ := openStore(t, open)
	ctx := t.Context()
	if _, _, err := s.EnsureUser(ctx, []byte("a"), "same-id", t0); err != nil {
		t.Fatalf("EnsureUser: %v", err)
	}
	// A new hash with an id already in use must not silently return or replace the other
	// user.
	_, _, err := s.EnsureUser(ctx, []byte("b"), "same-id", t0)
	wantCode(t, err, pulsebase.ECONFLICT)

	_, _, err = s.EnsureUser(ctx, nil, "id", t0)
	wantCode(t, err, pulsebase.EINVALID)
	_, _, err = s.EnsureUser(ctx, []byte("c"), "", t0)
	wantCode(t, err, pulsebase.EINVALID)
}

func testUserNotFound(t *testing.T, open Opener) {
	s, _ := openStore(t, open)
	_, err := s.User(t.Context(), "nobody")
	wantCode(t, err, pulsebase.ENOTFOUND)
}

func key(owner, name, kek string, ciphertext string) pulsebase.WrappedKey {
	return pulsebase.WrappedKey{
		Owner: owner, Name: name, KEKID: kek, Ciphertext: []byte(ciphertext),
		Created: t0, Updated: t0,
	}
}

func sameKey(t *testing.T, what string, got, want pulsebase.WrappedKey) {
	t.Helper()
	if got.Owner != want.Owner || got.Name != want.Name || got.KEKID != want.KEKID ||
		!bytes.Equal(got.Ciphertext, want.Ciphertext) {
		t.Errorf("%s: got key %s/%s kek %q ciphertext %q, want %s/%s kek %q ciphertext %q", what,
			got.Owner, got.Name, got.KEKID, got.Ciphertext,
			want.Owner, want.Name, want.KEKID, want.Ciphertext)
	}
	sameTime(t, what+" Created", got.Created, stored(want.Created))
	sameTime(t, what+" Updated", got.Updated, stored(want.Updated))
}

func testCreateWrappedKey(t *testing.T, open Opener) {
	s, _ := openStore(t, open)
	ctx := t.Context()
	first := key("u1", "data", "kek-1", "first\x00\xff ciphertext")

	got, err := s.CreateWrappedKey(ctx, first)
	if err != nil {
		t.Fatalf("CreateWrappedKey: %v", err)
	}
	sameKey(t, "CreateWrappedKey", got, first)

	second := key("u1", "data", "kek-2", "second")
	second.Created = t0.Add(time.Hour)
	got, err = s.CreateWrappedKey(ctx, second)
	if err != nil {
		t.Fatalf("second CreateWrappedKey: %v", err)
	}
	sameKey(t, "second CreateWrappedKey returns the first key", got, first)

	got, err = s.WrappedKey(ctx, "u1", "data")
	if err != nil {
		t.Fatalf("WrappedKey: %v", err)
	}
	sameKey(t, "WrappedKey after two creates", got, first)

	// Same name, other owner, and same owner, other name, are different keys.
	for _, k := range []pulsebase.WrappedKey{key("u2", "data", "kek-1", "u2"), key("u1", "index", "kek-1", "idx")} {
		got, err := s.CreateWrappedKey(ctx, k)
		if err != nil {
			t.Fatalf("CreateWrappedKey(%s/%s): %v", k.Owner, k.Name, err)
		}
		sameKey(t, "CreateWrappedKey "+k.Owner+"/"+k.Name, got, k)
	}
}

func testCreateWrappedKeyConcurrent(t *testing.T, open Opener) {
	s, _ := openStore(t, open)
	ctx := t.Context()
	const n = 20
	got := make([]pulsebase.WrappedKey, n)
	errs := make([]error, n)
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
	)
	for i := range n {
		wg.Go(func() {
			<-start
			got[i], errs[i] = s.CreateWrappedKey(ctx, key("system", "subject-index", "kek-1", fmt.Sprint("candidate-", i)))
		})
	}
	close(start)
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("goroutine %d: CreateWrappedKey: %v", i, errs[i])
		}
		if !bytes.Equal(got[i].Ciphertext, got[0].Ciphertext) {
			t.Errorf("goroutine %d got ciphertext %q, goroutine 0 got %q; want one key", i, got[i].Ciphertext, got[0].Ciphertext)
		}
	}
	stored, err := s.WrappedKey(ctx, "system", "subject-index")
	if err != nil {
		t.Fatalf("WrappedKey: %v", err)
	}
	if !bytes.Equal(stored.Ciphertext, got[0].Ciphertext) {
		t.Errorf("stored ciphertext %q, creators were told %q", stored.Ciphertext, got[0].Ciphertext)
	}
}

func testWrappedKeyNotFound(t *testing.T, open Opener) {
	s, _ := openStore(t, open)
	ctx := t.Context()
	if _, err := s.CreateWrappedKey(ctx, key("u1", "data", "kek-1", "x")); err != nil {
		t.Fatalf("CreateWrappedKey: %v", err)
	}
	for _, c := range [][2]string{{"u1", "other"}, {"u2", "data"}, {"", ""}} {
		_, err := s.WrappedKey(ctx, c[0], c[1])
		wantCode(t, err, pulsebase.ENOTFOUND)
	}
}

func testUpdateWrappedKey(t *testing.T, open Opener) {
	s, _ := openStore(t, open)
	ctx := t.Context()
	orig := key("u1", "data", "kek-1", "under kek-1")
	if _, err := s.CreateWrappedKey(ctx, orig); err != nil {
		t.Fatalf("CreateWrappedKey: %v", err)
	}
	current := func(what string) pulsebase.WrappedKey {
		t.Helper()
		got, err := s.WrappedKey(ctx, "u1", "data")
		if err != nil {
			t.Fatalf("%s: WrappedKey: %v", what, err)
		}
		return got
	}

	// Success: the key is exactly as expected (a re-wrap under a new KEK).
	rewrapped := key("u1", "data", "kek-2", "under kek-2")
	rewrapped.Created = t0.Add(-time.Hour) // must be ignored: creation time never changes
	rewrapped.Updated = t0.Add(time.Minute)
	if err := s.UpdateWrappedKey(ctx, rewrapped, orig); err != nil {
		t.Fatalf("UpdateWrappedKey(expect orig): %v", err)
	}
	want := rewrapped
	want.Created = orig.Created
	sameKey(t, "after UpdateWrappedKey", current("after re-wrap"), want)

	// Conflict: the KEK id differs; nothing changes.
	lost := key("u1", "data", "kek-3", "under kek-3")
	lost.Updated = t0.Add(2 * time.Minute)
	wantCode(t, s.UpdateWrappedKey(ctx, lost, orig), pulsebase.ECONFLICT)
	sameKey(t, "after UpdateWrappedKey with a stale KEK id", current("stale KEK id"), want)

	// Conflict: same KEK id, other ciphertext (the key's versions were rotated meanwhile).
	staleCiphertext := key("u1", "data", "kek-2", "under kek-2, before a rotation")
	wantCode(t, s.UpdateWrappedKey(ctx, lost, staleCiphertext), pulsebase.ECONFLICT)
	sameKey(t, "after UpdateWrappedKey with a stale ciphertext", current("stale ciphertext"), want)

	// Success: same KEK, new ciphertext (a rotation of the key's versions).
	rotated := key("u1", "data", "kek-2", "rotated under kek-2")
	rotated.Updated = t0.Add(3 * time.Minute)
	if err := s.UpdateWrappedKey(ctx, rotated, want); err != nil {
		t.Fatalf("UpdateWrappedKey(rotation): %v", err)
	}
	want = rotated
	want.Created = orig.Created
	sameKey(t, "after rotation", current("after rotation"), want)

	// An empty ciphertext compares like any other.
	empty := key("u1", "empty", "kek-1", "")
	empty.Ciphertext = nil
	if _, err := s.CreateWrappedKey(ctx, empty); err != nil {
		t.Fatalf("CreateWrappedKey(empty): %v", err)
	}
	if err := s.UpdateWrappedKey(ctx, key("u1", "empty", "kek-2", "filled"), empty); err != nil {
		t.Errorf("UpdateWrappedKey(expect an empty ciphertext): %v", err)
	}

	// Not found: no such key, whatever the expectation.
	wantCode(t, s.UpdateWrappedKey(ctx, key("u1", "missing", "kek-2", "x"), orig), pulsebase.ENOTFOUND)
	wantCode(t, s.UpdateWrappedKey(ctx, key("u2", "data", "kek-2", "x"), key("u2", "data", "kek-2", "x")), pulsebase.ENOTFOUND)
	if _, err := s.WrappedKey(ctx, "u1", "missing"); pulsebase.ErrorCode(err) != pulsebase.ENOTFOUND {
		t.Errorf("UpdateWrappedKey of a missing key created it: WrappedKey got %v", err)
	}

	// Erased: the owner's keys are gone for good, and an update cannot bring one back.
	doomed := key("u3", "data", "kek-1", "u3")
	if _, err := s.CreateWrappedKey(ctx, doomed); err != nil {
		t.Fatalf("CreateWrappedKey(u3): %v", err)
	}
	if err := s.EraseKeys(ctx, "u3", t0); err != nil {
		t.Fatalf("EraseKeys(u3): %v", err)
	}
	wantCode(t, s.UpdateWrappedKey(ctx, key("u3", "data", "kek-2", "back"), doomed), pulsebase.EERASED)
	_, err := s.WrappedKey(ctx, "u3", "data")
	wantCode(t, err, pulsebase.EERASED)
}

func testTimes(t *testing.T, open Opener) {
	s, _ := openStore(t, open)
	ctx := t.Context()
	times := []time.Time{
		t0,
		time.Date(1999, 12, 31, 23, 59, 59, 999999999, time.UTC), // must truncate, not round into 2000
		time.Date(2026, 6, 1, 0, 0, 0, 1000, time.FixedZone("UTC-7", -7*3600)),
		time.Now(), // carries a monotonic reading, which must not matter
	}
	for i, tm := range times {
		id := fmt.Sprint("time-", i)
		u, _, err := s.EnsureUser(ctx, []byte(id), id, tm)
		if err != nil {
			t.Fatalf("EnsureUser(%v): %v", tm, err)
		}
		sameTime(t, fmt.Sprintf("EnsureUser(%v).Created", tm), u.Created, stored(tm))
		got, err := s.User(ctx, id)
		if err != nil {
			t.Fatalf("User(%s): %v", id, err)
		}
		sameTime(t, fmt.Sprintf("User for %v, Created", tm), got.Created, stored(tm))
		if !got.Created.Equal(u.Created) {
			t.Errorf("EnsureUser returned %v, User returned %v; want the same", u.Created, got.Created)
		}

		k := key("u", id, "kek", "c")
		k.Created, k.Updated = tm, tm.Add(time.Second)
		if _, err := s.CreateWrappedKey(ctx, k); err != nil {
			t.Fatalf("CreateWrappedKey: %v", err)
		}
		gotKey, err := s.WrappedKey(ctx, "u", id)
		if err != nil {
			t.Fatalf("WrappedKey: %v", err)
		}
		sameKey(t, fmt.Sprintf("key with times %v", tm), gotKey, k)
	}
	// Stored times must order like the times themselves (text encodings can get this wrong).
	a, _ := s.User(ctx, "time-0")
	b, _ := s.User(ctx, "time-1")
	if !b.Created.Before(a.Created) {
		t.Errorf("got 1999 user created %v not before 2026 user created %v", b.Created, a.Created)
	}
}

func testPing(t *testing.T, open Opener) {
	s, _ := openStore(t, open)
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	// A closed store must not claim to be healthy.
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := s.Ping(ctx); err == nil {
		t.Errorf("Ping after Close: got nil, want an error")
	}
}

func testReopen(t *testing.T, open Opener) {
	s, reopen := openStore(t, open)
	ctx := t.Context()
	u, _, err := s.EnsureUser(ctx, []byte("durable"), "u1", t0)
	if err != nil {
		t.Fatalf("EnsureUser: %v", err)
	}
	k := key("u1", "data", "kek-1", "durable key")
	if _, err := s.CreateWrappedKey(ctx, k); err != nil {
		t.Fatalf("CreateWrappedKey: %v", err)
	}
	if err := s.EraseKeys(ctx, "gone", t0); err != nil {
		t.Fatalf("EraseKeys: %v", err)
	}
	kek := pulsebase.KEKInfo{ID: "kek-1", URI: "local:///kek-1", Created: t0}
	if err := s.RegisterKEK(ctx, kek); err != nil {
		t.Fatalf("RegisterKEK: %v", err)
	}
	if err := s.SetPrimaryKEK(ctx, "kek-1"); err != nil {
		t.Fatalf("SetPrimaryKEK: %v", err)
	}
	event := pulsebase.KeyEvent{At: t0, Actor: "test", Action: "user.erase", Detail: `{"user":"gone"}`}
	if err := s.AppendKeyEvent(ctx, event); err != nil {
		t.Fatalf("AppendKeyEvent: %v", err)
	}
	consent := consentRecord("u1", 1, "sealed")
	if err := s.AppendConsent(ctx, consent); err != nil {
		t.Fatalf("AppendConsent: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	// Reopening runs the migrations again; they must find nothing to do and keep the data.
	s2 := reopen(t)
	got, err := s2.User(ctx, "u1")
	if err != nil {
		t.Fatalf("User after reopen: %v", err)
	}
	if got.ID != u.ID || !got.Created.Equal(u.Created) {
		t.Errorf("User after reopen: got %+v, want %+v", got, u)
	}
	again, created, err := s2.EnsureUser(ctx, []byte("durable"), "u2", t0)
	if err != nil || created || again.ID != "u1" {
		t.Errorf("EnsureUser after reopen: got (%+v, %v, %v), want existing u1", again, created, err)
	}
	gotKey, err := s2.WrappedKey(ctx, "u1", "data")
	if err != nil {
		t.Fatalf("WrappedKey after reopen: %v", err)
	}
	sameKey(t, "WrappedKey after reopen", gotKey, k)
	_, err = s2.WrappedKey(ctx, "gone", "data")
	wantCode(t, err, pulsebase.EERASED)
	kek.Primary = true
	wantKEKs(t, "KEKs after reopen", s2, kek)
	if events, err := s2.KeyEvents(ctx); err != nil || len(events) != 1 || events[0].Detail != event.Detail {
		t.Errorf("KeyEvents after reopen: got %+v, %v; want the one event", events, err)
	}
	gotConsent, err := s2.LatestConsent(ctx, "u1")
	if err != nil {
		t.Fatalf("LatestConsent after reopen: %v", err)
	}
	sameConsent(t, "LatestConsent after reopen", gotConsent, consent)
}
