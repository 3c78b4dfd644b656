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
