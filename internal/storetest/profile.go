package storetest

import (
	"sync"
	"testing"

	"github.com/pulsebase/pulsebase"
)

func testProfile(t *testing.T, open Opener) {
	s, reopen := openStore(t, open)
	ctx := t.Context()
	_, err := s.Profile(ctx, "ua")
	wantCode(t, err, pulsebase.ENOTFOUND)
	wantCode(t, s.PutProfile(ctx, pulsebase.StoredProfile{User: "ua", Version: 2, Ciphertext: []byte("p2")}), pulsebase.ECONFLICT)
	wantCode(t, s.PutProfile(ctx, pulsebase.StoredProfile{User: "ua", Version: 0}), pulsebase.EINVALID)
	if err := s.PutProfile(ctx, pulsebase.StoredProfile{User: "ua", Version: 1, Ciphertext: []byte("p1"), Updated: t0}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, s.PutProfile(ctx, pulsebase.StoredProfile{User: "ua", Version: 1, Ciphertext: []byte("again")}), pulsebase.ECONFLICT)
	if err := s.PutProfile(ctx, pulsebase.StoredProfile{User: "ua", Version: 2, Ciphertext: []byte("p2"), Updated: t0}); err != nil {
		t.Fatal(err)
	}
	p, err := s.Profile(ctx, "ua")
	if err != nil || p.Version != 2 || string(p.Ciphertext) != "p2" {
		t.Fatalf("got %+v, %v; want version 2 p2", p, err)
	}
	sameTime(t, "profile Updated", p.Updated, stored(t0))
	if _, err := s.Profile(ctx, "ub"); pulsebase.ErrorCode(err) != pulsebase.ENOTFOUND {
		t.Errorf("another user's profile: %v", err)
	}
	if p, err := reopen(t).Profile(ctx, "ua"); err != nil || p.Version != 2 {
		t.Errorf("after reopening: %+v, %v", p, err)
	}
}

// testPutProfileConcurrent races writers of the same next version: exactly one wins.
func testPutProfileConcurrent(t *testing.T, open Opener) {
	s, _ := openStore(t, open)
	ctx := t.Context()
	const writers = 8
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for i := range writers {
		wg.Go(func() {
			errs[i] = s.PutProfile(ctx, pulsebase.StoredProfile{User: "uc", Version: 1, Ciphertext: []byte{byte(i)}})
		})
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch pulsebase.ErrorCode(err) {
		case "":
			won++
		case pulsebase.ECONFLICT:
		default:
			t.Errorf("unexpected error %v", err)
		}
	}
	if won != 1 {
		t.Errorf("%d writers of version 1 won, want exactly 1", won)
	}
}

// testProfilePublished checks the outbox marker: a new profile starts unpublished,
// PutProfile never moves the marker, and MarkProfilePublished only raises it, up to the
// stored version.
func testProfilePublished(t *testing.T, open Opener) {
	s, reopen := openStore(t, open)
	ctx := t.Context()
	published := func(s pulsebase.Store, want int64) {
		t.Helper()
		p, err := s.Profile(ctx, "up")
		if err != nil {
			t.Fatal(err)
		}
		if p.Published != want {
			t.Errorf("got published %d at version %d, want %d", p.Published, p.Version, want)
		}
	}
	wantCode(t, s.MarkProfilePublished(ctx, "up", 1), pulsebase.ENOTFOUND)
	// Published in a write is ignored: only MarkProfilePublished says what went out.
	if err := s.PutProfile(ctx, pulsebase.StoredProfile{User: "up", Version: 1, Published: 1, Ciphertext: []byte("p1"), Updated: t0}); err != nil {
		t.Fatal(err)
	}
	published(s, 0)
	wantCode(t, s.MarkProfilePublished(ctx, "up", 0), pulsebase.EINVALID)
	wantCode(t, s.MarkProfilePublished(ctx, "up", 2), pulsebase.EINVALID)
	if err := s.MarkProfilePublished(ctx, "up", 1); err != nil {
		t.Fatal(err)
	}
	published(s, 1)
	for v := int64(2); v <= 3; v++ {
		if err := s.PutProfile(ctx, pulsebase.StoredProfile{User: "up", Version: v, Published: 9, Ciphertext: []byte("p"), Updated: t0}); err != nil {
			t.Fatal(err)
		}
	}
	published(s, 1)
	if err := s.MarkProfilePublished(ctx, "up", 3); err != nil {
		t.Fatal(err)
	}
	// An older version marked late (a slow server) does not lower the marker.
	if err := s.MarkProfilePublished(ctx, "up", 2); err != nil {
		t.Fatal(err)
	}
	published(s, 3)
	if err := s.PutProfile(ctx, pulsebase.StoredProfile{User: "up", Version: 4, Ciphertext: []byte("p4"), Updated: t0}); err != nil {
		t.Fatal(err)
	}
	published(reopen(t), 3)
	wantCode(t, s.MarkProfilePublished(ctx, "someone-else", 1), pulsebase.ENOTFOUND)
}

// testMarkProfilePublishedConcurrent races marks of every version: the marker ends at the
// highest, whatever the order they land in.
func testMarkProfilePublishedConcurrent(t *testing.T, open Opener) {
	s, _ := openStore(t, open)
	ctx := t.Context()
	const versions = 8
	for v := int64(1); v <= versions; v++ {
		if err := s.PutProfile(ctx, pulsebase.StoredProfile{User: "um", Version: v, Ciphertext: []byte("p")}); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for v := int64(versions); v >= 1; v-- {
		wg.Go(func() {
			if err := s.MarkProfilePublished(ctx, "um", v); err != nil {
				t.Errorf("mark %d: %v", v, err)
			}
		})
	}
	wg.Wait()
	if p, err := s.Profile(ctx, "um"); err != nil || p.Published != versions {
		t.Errorf("got %+v, %v; want published %d", p, err, versions)
	}
}
