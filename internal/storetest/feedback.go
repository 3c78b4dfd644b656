package storetest

import (
	"bytes"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
)

func storedFeedback(user, recommendation, action string, at time.Time, ciphertext string) pulsebase.StoredFeedback {
	return pulsebase.StoredFeedback{
		User: user, Recommendation: recommendation, Action: action, At: at, Ciphertext: []byte(ciphertext),
	}
}

func sameFeedback(t *testing.T, what string, got, want []pulsebase.StoredFeedback) {
	t.Helper()
	describe := func(fbs []pulsebase.StoredFeedback) []string {
		out := make([]string, len(fbs))
		for i, fb := range fbs {
			out[i] = fmt.Sprintf("%s/%s/%s=%q", fb.User, fb.Recommendation, fb.Action, fb.Ciphertext)
		}
		return out
	}
	if len(got) != len(want) {
		t.Errorf("%s: got %q, want %q", what, describe(got), describe(want))
		return
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.User != w.User || g.Recommendation != w.Recommendation || g.Action != w.Action ||
			!bytes.Equal(g.Ciphertext, w.Ciphertext) {
			t.Errorf("%s: got %q, want %q", what, describe(got), describe(want))
			return
		}
		sameTime(t, fmt.Sprintf("%s[%d] At", what, i), g.At, stored(w.At))
	}
}

func wantFeedbackSince(t *testing.T, s pulsebase.Store, user string, since time.Time, want ...pulsebase.StoredFeedback) {
	t.Helper()
	got, err := s.Feedback(t.Context(), user, since)
	if err != nil {
		t.Fatalf("Feedback(%s, %v): %v", user, since, err)
	}
	sameFeedback(t, fmt.Sprintf("Feedback(%s, %v)", user, since), got, want)
}

func wantFeedbackOn(t *testing.T, s pulsebase.Store, user, recommendation string, want ...pulsebase.StoredFeedback) {
	t.Helper()
	got, err := s.FeedbackOn(t.Context(), user, recommendation)
	if err != nil {
		t.Fatalf("FeedbackOn(%s, %s): %v", user, recommendation, err)
	}
	sameFeedback(t, fmt.Sprintf("FeedbackOn(%s, %s)", user, recommendation), got, want)
}

func wantPool(t *testing.T, what string, s pulsebase.Store, want map[string]pulsebase.PoolStat) {
	t.Helper()
	got, err := s.Pool(t.Context())
	if err != nil {
		t.Fatalf("%s: Pool: %v", what, err)
	}
	if len(got) != len(want) {
		t.Errorf("%s: got pool %+v, want %+v", what, got, want)
	}
	for kind, w := range want {
		g, ok := got[kind]
		if !ok {
			t.Errorf("%s: no pool of kind %q", what, kind)
			continue
		}
		// The amounts used are exact in binary, so the sums are too.
		if g.Success != w.Success || g.Failure != w.Failure || g.N != w.N {
			t.Errorf("%s: got pool of %q success %v failure %v n %d, want %v %v %d", what, kind,
				g.Success, g.Failure, g.N, w.Success, w.Failure, w.N)
		}
		sameTime(t, fmt.Sprintf("%s: pool of %q Updated", what, kind), g.Updated, stored(w.Updated))
	}
}

func addFeedback(t *testing.T, s pulsebase.Store, fb pulsebase.StoredFeedback, pool *pulsebase.PoolDelta, wantAdded bool) {
	t.Helper()
	added, err := s.AddFeedback(t.Context(), fb, pool)
	if err != nil {
		t.Fatalf("AddFeedback(%s/%s/%s): %v", fb.User, fb.Recommendation, fb.Action, err)
	}
	if added != wantAdded {
		t.Errorf("AddFeedback(%s/%s/%s): got added=%v, want %v", fb.User, fb.Recommendation, fb.Action, added, wantAdded)
	}
}

func testFeedback(t *testing.T, open Opener) {
	s, reopen := openStore(t, open)
	ctx := t.Context()
	wantFeedbackSince(t, s, "ua", time.Time{})
	wantFeedbackOn(t, s, "ua", "r1")
	wantPool(t, "new store", s, nil)

	// A retry keeps the first row, its time and ciphertext, and counts nothing.
	accepted := storedFeedback("ua", "r1", pulsebase.ActionAccepted, t0, "accepted\x00\xff sealed")
	addFeedback(t, s, accepted, &pulsebase.PoolDelta{Kind: "walk", Success: 1}, true)
	retry := storedFeedback("ua", "r1", pulsebase.ActionAccepted, t0.Add(time.Hour), "retry")
	addFeedback(t, s, retry, &pulsebase.PoolDelta{Kind: "walk", Success: 1, Failure: 0.5}, false)
	wantFeedbackOn(t, s, "ua", "r1", accepted)
	wantPool(t, "after a retry", s, map[string]pulsebase.PoolStat{"walk": {Success: 1, N: 1, Updated: t0}})

	// Another action on the same recommendation is another row. At t0+2m there are
	// several, to check the order after the time: recommendation, then action, bytewise
	// ("R9" before "r0", whatever the database's collation).
	completed := storedFeedback("ua", "r1", pulsebase.ActionCompleted, t0.Add(2*time.Minute), "completed")
	addFeedback(t, s, completed, &pulsebase.PoolDelta{Kind: "walk", Success: 0.5, Failure: 0.25}, true)
	dismissed := storedFeedback("ua", "r1", pulsebase.ActionDismissed, t0.Add(2*time.Minute), "dismissed")
	addFeedback(t, s, dismissed, &pulsebase.PoolDelta{Kind: "sleep", Failure: 1}, true)
	snoozed := storedFeedback("ua", "r0", pulsebase.ActionSnoozed, t0.Add(2*time.Minute), "")
	snoozed.Ciphertext = nil
	addFeedback(t, s, snoozed, nil, true) // no pool: not counted anywhere
	upper := storedFeedback("ua", "R9", pulsebase.ActionAccepted, t0.Add(2*time.Minute), "upper")
	addFeedback(t, s, upper, nil, true)
	ignored := storedFeedback("ua", "r2", pulsebase.ActionIgnored, t0.Add(time.Minute), "ignored")
	addFeedback(t, s, ignored, &pulsebase.PoolDelta{Kind: "sleep", Failure: 1}, true)
	// Another user's feedback, older than the pool's latest: it counts, and Updated stays.
	other := storedFeedback("ub", "r1", pulsebase.ActionAccepted, t0, "other user")
	addFeedback(t, s, other, &pulsebase.PoolDelta{Kind: "walk", Success: 1}, true)

	all := []pulsebase.StoredFeedback{accepted, ignored, upper, snoozed, completed, dismissed}
	wantFeedbackSince(t, s, "ua", time.Time{}, all...)
	wantFeedbackSince(t, s, "ua", t0, all...)
	// since with nanoseconds still finds the feedback given at it.
	wantFeedbackSince(t, s, "ua", t0.Add(time.Minute), all[1:]...)
	wantFeedbackSince(t, s, "ua", t0.Add(time.Minute+time.Microsecond), all[2:]...)
	wantFeedbackSince(t, s, "ua", t0.Add(3*time.Minute))
	wantFeedbackOn(t, s, "ua", "r1", accepted, completed, dismissed)
	wantFeedbackOn(t, s, "ua", "r2", ignored)
	wantFeedbackOn(t, s, "ua", "none")

	// Users never see each other's feedback.
	wantFeedbackSince(t, s, "ub", time.Time{}, other)
	wantFeedbackOn(t, s, "ub", "r1", other)
	wantFeedbackOn(t, s, "ub", "r2")
	wantFeedbackSince(t, s, "uc", time.Time{})

	pool := map[string]pulsebase.PoolStat{
		"walk":  {Success: 2.5, Failure: 0.25, N: 3, Updated: t0.Add(2 * time.Minute)},
		"sleep": {Failure: 2, N: 2, Updated: t0.Add(2 * time.Minute)},
	}
	wantPool(t, "after adds", s, pool)

	// Invalid feedback or pool amounts store and count nothing.
	walk := &pulsebase.PoolDelta{Kind: "walk", Success: 1}
	for _, c := range []struct {
		name string
		fb   pulsebase.StoredFeedback
		pool *pulsebase.PoolDelta
	}{
		{"no user", storedFeedback("", "bad", pulsebase.ActionAccepted, t0, "x"), walk},
		{"no recommendation", storedFeedback("ua", "", pulsebase.ActionAccepted, t0, "x"), walk},
		{"no action", storedFeedback("ua", "bad", "", t0, "x"), walk},
		{"no kind", storedFeedback("ua", "bad", pulsebase.ActionAccepted, t0, "x"), &pulsebase.PoolDelta{Success: 1}},
		{"negative", storedFeedback("ua", "bad", pulsebase.ActionAccepted, t0, "x"), &pulsebase.PoolDelta{Kind: "walk", Failure: -1}},
		{"NaN", storedFeedback("ua", "bad", pulsebase.ActionAccepted, t0, "x"), &pulsebase.PoolDelta{Kind: "walk", Success: math.NaN()}},
		{"infinite", storedFeedback("ua", "bad", pulsebase.ActionAccepted, t0, "x"), &pulsebase.PoolDelta{Kind: "walk", Failure: math.Inf(1)}},
	} {
		added, err := s.AddFeedback(ctx, c.fb, c.pool)
		if added {
			t.Errorf("AddFeedback(%s): got added", c.name)
		}
		wantCode(t, err, pulsebase.EINVALID)
	}
	wantFeedbackOn(t, s, "ua", "bad")
	wantPool(t, "after invalid adds", s, pool)

	// Everything survives a restart, and a retry after it is still a retry.
	s2 := reopen(t)
	wantFeedbackSince(t, s2, "ua", time.Time{}, all...)
	wantFeedbackSince(t, s2, "ub", time.Time{}, other)
	wantPool(t, "after reopening", s2, pool)
	addFeedback(t, s2, retry, &pulsebase.PoolDelta{Kind: "walk", Success: 1}, false)
	wantPool(t, "after a retry after reopening", s2, pool)
}

// testAddFeedbackConcurrent races retries of one feedback, each with a pool delta, against
// distinct feedback of another kind: the retries add one row and count once, and the
// distinct ones all count.
func testAddFeedbackConcurrent(t *testing.T, open Opener) {
	s, _ := openStore(t, open)
	ctx := t.Context()
	const n = 16
	retry := storedFeedback("ua", "r1", pulsebase.ActionCompleted, t0, "completed")
	retried := make([]bool, n)
	errs := make([]error, 2*n)
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
	)
	for i := range n {
		wg.Go(func() {
			<-start // line every goroutine up to maximize the overlap
			retried[i], errs[i] = s.AddFeedback(ctx, retry, &pulsebase.PoolDelta{Kind: "walk", Success: 1})
		})
		wg.Go(func() {
			<-start
			fb := storedFeedback(fmt.Sprint("user-", i), "r1", pulsebase.ActionDismissed, t0, "dismissed")
			var added bool
			added, errs[n+i] = s.AddFeedback(ctx, fb, &pulsebase.PoolDelta{Kind: "sleep", Success: 0.5, Failure: 0.25})
			if errs[n+i] == nil && !added {
				errs[n+i] = fmt.Errorf("got added=false for new feedback")
			}
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("goroutine %d: AddFeedback: %v", i, err)
		}
	}
	var added int
	for _, a := range retried {
		if a {
			added++
		}
	}
	if added != 1 {
		t.Errorf("got %d retries told they added the feedback, want 1", added)
	}
	wantFeedbackOn(t, s, "ua", "r1", retry)
	wantPool(t, "after racing adds", s, map[string]pulsebase.PoolStat{
		"walk":  {Success: 1, N: 1, Updated: t0},
		"sleep": {Success: 0.5 * n, Failure: 0.25 * n, N: n, Updated: t0},
	})
}
