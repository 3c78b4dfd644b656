package storetest

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
)

func consentRecord(user string, version int, ciphertext string) pulsebase.ConsentRecord {
	return pulsebase.ConsentRecord{
		User: user, Version: version, Ciphertext: []byte(ciphertext),
		Created: t0.Add(time.Duration(version) * time.Minute),
	}
}

func sameConsent(t *testing.T, what string, got, want pulsebase.ConsentRecord) {
	t.Helper()
	if got.User != want.User || got.Version != want.Version || !bytes.Equal(got.Ciphertext, want.Ciphertext) {
		t.Errorf("%s: got %s v%d ciphertext %q, want %s v%d ciphertext %q", what,
			got.User, got.Version, got.Ciphertext, want.User, want.Version, want.Ciphertext)
	}
	sameTime(t, what+" Created", got.Created, stored(want.Created))
}

func wantHistory(t *testing.T, s pulsebase.Store, user string, want ...pulsebase.ConsentRecord) {
	t.Helper()
	got, err := s.ConsentHistory(t.Context(), user)
	if err != nil {
		t.Fatalf("ConsentHistory(%s): %v", user, err)
	}
	if len(got) != len(want) {
		t.Fatalf("ConsentHistory(%s): got %d records, want %d", user, len(got), len(want))
	}
	for i := range want {
		sameConsent(t, fmt.Sprintf("ConsentHistory(%s)[%d]", user, i), got[i], want[i])
	}
}

func testConsent(t *testing.T, open Opener) {
	s, _ := openStore(t, open)
	ctx := t.Context()

	_, err := s.LatestConsent(ctx, "u1")
	wantCode(t, err, pulsebase.ENOTFOUND)
	wantHistory(t, s, "u1")

	// The first version is 1; anything else on an empty history conflicts.
	wantCode(t, s.AppendConsent(ctx, consentRecord("u1", 2, "v2 too early")), pulsebase.ECONFLICT)
	wantCode(t, s.AppendConsent(ctx, consentRecord("u1", 0, "v0")), pulsebase.EINVALID)
	wantCode(t, s.AppendConsent(ctx, consentRecord("", 1, "nobody")), pulsebase.EINVALID)

	// Sealed receipts are arbitrary bytes: every byte value must come back as it was.
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	v1 := consentRecord("u1", 1, string(all))
	if err := s.AppendConsent(ctx, v1); err != nil {
		t.Fatalf("AppendConsent(v1): %v", err)
	}
	wantCode(t, s.AppendConsent(ctx, consentRecord("u1", 1, "v1 again")), pulsebase.ECONFLICT)
	wantCode(t, s.AppendConsent(ctx, consentRecord("u1", 3, "v3 skips v2")), pulsebase.ECONFLICT)
	v2 := consentRecord("u1", 2, "v2\x00\xff sealed")
	if err := s.AppendConsent(ctx, v2); err != nil {
		t.Fatalf("AppendConsent(v2): %v", err)
	}
	wantCode(t, s.AppendConsent(ctx, consentRecord("u1", 2, "v2 again")), pulsebase.ECONFLICT)

	got, err := s.LatestConsent(ctx, "u1")
	if err != nil {
		t.Fatalf("LatestConsent(u1): %v", err)
	}
	sameConsent(t, "LatestConsent(u1)", got, v2)
	wantHistory(t, s, "u1", v1, v2)

	// Users are independent: u1's versions neither block nor show for u2.
	_, err = s.LatestConsent(ctx, "u2")
	wantCode(t, err, pulsebase.ENOTFOUND)
	wantHistory(t, s, "u2")
	wantCode(t, s.AppendConsent(ctx, consentRecord("u2", 3, "u2 v3")), pulsebase.ECONFLICT)
	u2v1 := consentRecord("u2", 1, "u2 v1")
	if err := s.AppendConsent(ctx, u2v1); err != nil {
		t.Fatalf("AppendConsent(u2 v1): %v", err)
	}
	got, err = s.LatestConsent(ctx, "u2")
	if err != nil {
		t.Fatalf("LatestConsent(u2): %v", err)
	}
	sameConsent(t, "LatestConsent(u2)", got, u2v1)
	wantHistory(t, s, "u2", u2v1)
	wantHistory(t, s, "u1", v1, v2)
	// A user id that is a prefix of another is another user.
	wantHistory(t, s, "u")
}

// testAppendConsentConcurrent appends the same version from many goroutines at once:
// exactly one may win, the others must get ECONFLICT, and the history must hold the
// winner's record.
func testAppendConsentConcurrent(t *testing.T, open Opener) {
	s, _ := openStore(t, open)
	ctx := t.Context()
	v1 := consentRecord("u1", 1, "v1")
	if err := s.AppendConsent(ctx, v1); err != nil {
		t.Fatalf("AppendConsent(v1): %v", err)
	}
	const n = 20
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		errs  = make([]error, n)
	)
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = s.AppendConsent(ctx, consentRecord("u1", 2, fmt.Sprint("candidate-", i)))
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("goroutines %d and %d both appended version 2", winner, i)
		case err == nil:
			winner = i
		case pulsebase.ErrorCode(err) != pulsebase.ECONFLICT:
			t.Errorf("goroutine %d: got %v, want nil or %s", i, err, pulsebase.ECONFLICT)
		}
	}
	if winner < 0 {
		t.Fatalf("no goroutine appended version 2")
	}
	want := consentRecord("u1", 2, fmt.Sprint("candidate-", winner))
	got, err := s.LatestConsent(ctx, "u1")
	if err != nil {
		t.Fatalf("LatestConsent: %v", err)
	}
	sameConsent(t, "LatestConsent after the race", got, want)
	wantHistory(t, s, "u1", v1, want)
}
