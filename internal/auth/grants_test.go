package auth

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/broker"
)

// testJS starts an embedded JetStream broker (the real one) in a temp dir, closed at
// cleanup.
func testJS(tb testing.TB) jetstream.JetStream {
	tb.Helper()
	brk, err := broker.Open(context.Background(), broker.Config{DataDir: tb.TempDir(), Partitions: 1}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { brk.Close() })
	return brk.JetStream()
}

// openGrants opens grants on js as one server process would; with run, it follows the
// bucket until cleanup.
func openGrants(t *testing.T, js jetstream.JetStream, run bool) *Grants {
	t.Helper()
	g, err := NewGrants(t.Context(), js, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if run {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- g.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	return g
}

// within polls cond every millisecond until it holds or d has passed, and reports how
// long it took and whether it held.
func within(d time.Duration, cond func() bool) (time.Duration, bool) {
	start := time.Now()
	for {
		if cond() {
			return time.Since(start), true
		}
		if time.Since(start) > d {
			return time.Since(start), false
		}
		time.Sleep(time.Millisecond)
	}
}

var (
	activity = []pulsebase.Category{pulsebase.CategoryActivity}
	actSleep = []pulsebase.Category{pulsebase.CategoryActivity, pulsebase.CategorySleep}
)

func TestGrantsCreateListGrantedDelete(t *testing.T) {
	js := testJS(t)
	g := openGrants(t, js, false)
	ctx := t.Context()
	now := time.Now()
	if got := g.Granted("uamy", "ucoach", now); got != nil {
		t.Fatalf("granted before any grant: %v", got)
	}
	first, err := g.Create(ctx, Grant{Owner: "uamy", Grantee: "ucoach", Categories: activity, Until: now.Add(time.Hour), To: []byte("sealed")}, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(first.ID) != 27 || first.ID[0] != 'g' || !first.Created.Equal(now) || first.Created.Location() != time.UTC ||
		!first.Until.Equal(now.Add(time.Hour)) || string(first.To) != "sealed" {
		t.Errorf("created grant: %+v", first)
	}
	second, err := g.Create(ctx, Grant{Owner: "uamy", Grantee: "ucoach", Categories: actSleep, Until: now.Add(2 * time.Hour)}, now.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	other, err := g.Create(ctx, Grant{Owner: "ubob", Grantee: "ucoach", Categories: []pulsebase.Category{pulsebase.CategoryHeart}, Until: now.Add(time.Hour)}, now)
	if err != nil {
		t.Fatal(err)
	}
	if first.ID == second.ID {
		t.Fatal("two grants with one id")
	}

	// The union of amy's grants, each category once.
	if got := g.Granted("uamy", "ucoach", now); !slices.Equal(got, actSleep) {
		t.Errorf("granted: %v, want %v", got, actSleep)
	}
	for _, c := range []struct{ owner, grantee string }{{"uamy", "ueve"}, {"ucoach", "uamy"}, {"ueve", "ucoach"}} {
		if got := g.Granted(c.owner, c.grantee, now); got != nil {
			t.Errorf("%s → %s: granted %v, want nothing", c.owner, c.grantee, got)
		}
	}
	if got := g.Granted("ubob", "ucoach", now); !slices.Equal(got, []pulsebase.Category{pulsebase.CategoryHeart}) {
		t.Errorf("bob's grant: %v", got)
	}

	list := g.List("uamy")
	if len(list) != 2 || list[0].ID != second.ID || list[1].ID != first.ID {
		t.Errorf("list, newest first: %+v", list)
	}
	if list := g.List("unobody"); list == nil || len(list) != 0 {
		t.Errorf("list of a user without grants: %#v, want empty", list)
	}

	// Stored as given, under g.<owner>.<id>.
	e, err := g.kv.Get(ctx, "g.uamy."+first.ID)
	if err != nil {
		t.Fatalf("the grant is not in the bucket: %v", err)
	}
	if e.Revision() == 0 || len(e.Value()) == 0 {
		t.Errorf("bucket entry: %v", e)
	}

	if ok, err := g.Delete(ctx, "uamy", second.ID); err != nil || !ok {
		t.Fatalf("delete: %v %v", ok, err)
	}
	if got := g.Granted("uamy", "ucoach", now); !slices.Equal(got, activity) {
		t.Errorf("after deleting the sleep grant: %v, want %v", got, activity)
	}
	if _, err := g.kv.Get(ctx, "g.uamy."+second.ID); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("the deleted grant is still in the bucket: %v", err)
	}
	// Deleting it again, or deleting it as another owner, finds nothing.
	if ok, err := g.Delete(ctx, "uamy", second.ID); err != nil || ok {
		t.Errorf("second delete: %v %v", ok, err)
	}
	if ok, err := g.Delete(ctx, "ubob", first.ID); err != nil || ok {
		t.Errorf("bob deleting amy's grant: %v %v", ok, err)
	}
	if got := g.Granted("uamy", "ucoach", now); !slices.Equal(got, activity) {
		t.Errorf("amy's grant after bob's attempt: %v", got)
	}
	if ok, err := g.Delete(ctx, "ubob", other.ID); err != nil || !ok {
		t.Errorf("delete bob's: %v %v", ok, err)
	}
	if got, list := g.Granted("ubob", "ucoach", now), g.List("ubob"); got != nil || len(list) != 0 {
		t.Errorf("after deleting bob's only grant: %v %v", got, list)
	}

	// A process started now loads what is in the bucket, deletions applied.
	h := openGrants(t, js, false)
	if list := h.List("uamy"); len(list) != 1 || list[0].ID != first.ID || !slices.Equal(list[0].Categories, activity) {
		t.Errorf("loaded at startup: %+v", list)
	}
	if got := h.Granted("ubob", "ucoach", now); got != nil {
		t.Errorf("a deleted grant was loaded: %v", got)
	}
}

func TestGrantsReachAnotherProcess(t *testing.T) {
	js := testJS(t)
	a := openGrants(t, js, true)
	b := openGrants(t, js, true)
	ctx := t.Context()
	now := time.Now()

	var mu sync.Mutex
	var seenA, seenB []string
	cancelA := a.Subscribe(func(owner string) { mu.Lock(); seenA = append(seenA, owner); mu.Unlock() })
	defer cancelA()
	cancelB := b.Subscribe(func(owner string) { mu.Lock(); seenB = append(seenB, owner); mu.Unlock() })
	defer cancelB()
	sawB := func(owner string, n int) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			c := 0
			for _, o := range seenB {
				if o == owner {
					c++
				}
			}
			return c >= n
		}
	}

	gr, err := a.Create(ctx, Grant{Owner: "uamy", Grantee: "ucoach", Categories: activity, Until: now.Add(time.Hour)}, now)
	if err != nil {
		t.Fatal(err)
	}
	if got := a.Granted("uamy", "ucoach", time.Now()); !slices.Equal(got, activity) {
		t.Errorf("the creating process does not see its grant at once: %v", got)
	}
	if took, ok := within(time.Second, func() bool { return slices.Equal(b.Granted("uamy", "ucoach", time.Now()), activity) }); !ok {
		t.Fatalf("the other process did not see the grant within a second")
	} else {
		t.Logf("the other process saw the grant after %v", took)
	}
	if _, ok := within(time.Second, sawB("uamy", 1)); !ok {
		t.Errorf("the other process's subscriber was not told of amy's grant: %v", seenB)
	}
	if list := b.List("uamy"); len(list) != 1 || list[0].ID != gr.ID || !list[0].Until.Equal(gr.Until) {
		t.Errorf("the other process lists %+v", list)
	}

	// A deletion in b ends access in a (a's subscriber hears of it) and in b at once.
	if ok, err := b.Delete(ctx, "uamy", gr.ID); err != nil || !ok {
		t.Fatalf("delete in the other process: %v %v", ok, err)
	}
	if got := b.Granted("uamy", "ucoach", time.Now()); got != nil {
		t.Errorf("the deleting process still grants %v", got)
	}
	if _, ok := within(time.Second, sawB("uamy", 2)); !ok {
		t.Errorf("the deleting process's subscriber was not told: %v", seenB)
	}
	if took, ok := within(time.Second, func() bool { return a.Granted("uamy", "ucoach", time.Now()) == nil }); !ok {
		t.Fatalf("the first process still grants a second after the deletion")
	} else {
		t.Logf("the first process saw the deletion after %v", took)
	}
	sawA := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seenA) >= 2 && !slices.ContainsFunc(seenA, func(o string) bool { return o != "uamy" })
	}
	if _, ok := within(time.Second, sawA); !ok {
		mu.Lock()
		t.Errorf("the first process's subscriber heard %v, want amy's create and delete", seenA)
		mu.Unlock()
	}

	// After cancel, a subscriber hears nothing more.
	cancelB()
	mu.Lock()
	before := len(seenB)
	mu.Unlock()
	if _, err := a.Create(ctx, Grant{Owner: "ubob", Grantee: "ucoach", Categories: activity, Until: now.Add(time.Hour)}, now); err != nil {
		t.Fatal(err)
	}
	if _, ok := within(time.Second, func() bool { return b.Granted("ubob", "ucoach", time.Now()) != nil }); !ok {
		t.Fatal("bob's grant did not reach the other process")
	}
	time.Sleep(20 * time.Millisecond)
	mu.Lock()
	if len(seenB) != before {
		t.Errorf("a cancelled subscriber was called: %v", seenB[before:])
	}
	mu.Unlock()
}

func TestGrantsRefuseBadGrants(t *testing.T) {
	g := openGrants(t, testJS(t), false)
	now := time.Now()
	good := Grant{Owner: "uamy", Grantee: "ucoach", Categories: activity, Until: now.Add(time.Hour)}
	for _, c := range []struct {
		name string
		mod  func(*Grant)
	}{
		{"no owner", func(g *Grant) { g.Owner = "" }},
		{"no grantee", func(g *Grant) { g.Grantee = "" }},
		{"self-grant", func(g *Grant) { g.Grantee = g.Owner }},
		{"no categories", func(g *Grant) { g.Categories = nil }},
		{"empty categories", func(g *Grant) { g.Categories = []pulsebase.Category{} }},
		{"unknown category", func(g *Grant) { g.Categories = []pulsebase.Category{pulsebase.CategoryActivity, "finance"} }},
		{"empty category", func(g *Grant) { g.Categories = []pulsebase.Category{""} }},
		{"until now", func(g *Grant) { g.Until = now }},
		{"until past", func(g *Grant) { g.Until = now.Add(-time.Minute) }},
		{"no until", func(g *Grant) { g.Until = time.Time{} }},
		{"until beyond 366 days", func(g *Grant) { g.Until = now.Add(MaxGrantDuration + time.Second) }},
		{"until in two years", func(g *Grant) { g.Until = now.AddDate(2, 0, 0) }},
	} {
		gr := good
		gr.Categories = slices.Clone(good.Categories)
		c.mod(&gr)
		if _, err := g.Create(t.Context(), gr, now); !errors.Is(err, ErrBadGrant) {
			t.Errorf("%s: got %v, want ErrBadGrant", c.name, err)
		}
	}
	if n := len(g.List("uamy")); n != 0 {
		t.Errorf("refused grants were stored: %d", n)
	}
	if st, err := g.kv.Status(t.Context()); err != nil || st.Values() != 0 {
		t.Errorf("bucket holds %d values after refusals (%v)", st.Values(), err)
	}
	// The limits themselves are fine.
	for _, until := range []time.Time{now.Add(time.Nanosecond), now.Add(MaxGrantDuration)} {
		gr := good
		gr.Until = until
		if _, err := g.Create(t.Context(), gr, now); err != nil {
			t.Errorf("until %v: %v", until.Sub(now), err)
		}
	}
}

func TestGrantsExpire(t *testing.T) {
	g := openGrants(t, testJS(t), false)
	now := time.Now()
	until := now.Add(time.Minute)
	gr, err := g.Create(t.Context(), Grant{Owner: "uamy", Grantee: "ucoach", Categories: activity, Until: until}, now)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		at   time.Time
		want []pulsebase.Category
	}{
		{now, activity},
		{until.Add(-time.Nanosecond), activity},
		{until, nil},
		{until.Add(time.Nanosecond), nil},
		{until.Add(24 * time.Hour), nil},
	} {
		if got := g.Granted("uamy", "ucoach", c.at); !slices.Equal(got, c.want) {
			t.Errorf("at until%+v: %v, want %v", c.at.Sub(until), got, c.want)
		}
	}
	// An expired grant stays listed until it is pruned; a live one beside it still counts.
	if list := g.List("uamy"); len(list) != 1 || list[0].ID != gr.ID {
		t.Errorf("list after expiry: %+v", list)
	}
	if _, err := g.Create(t.Context(), Grant{Owner: "uamy", Grantee: "ucoach", Categories: []pulsebase.Category{pulsebase.CategorySleep}, Until: until.Add(time.Hour)}, now); err != nil {
		t.Fatal(err)
	}
	if got := g.Granted("uamy", "ucoach", until); !slices.Equal(got, []pulsebase.Category{pulsebase.CategorySleep}) {
		t.Errorf("one grant expired, one not: %v", got)
	}

	// The policy sees the expiry with the real clock.
	short, err := g.Create(t.Context(), Grant{Owner: "ubob", Grantee: "ucoach", Categories: activity, Until: time.Now().Add(50 * time.Millisecond)}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pol := NewPolicy(g)
	req := Request{Principal: pulsebase.Principal{Subject: "dan", Role: pulsebase.RoleCoach}, Self: "ucoach", Owner: "ubob", Action: ActDataRead}
	if d := pol.Decide(req); !d.Allowed() {
		t.Fatalf("before expiry: %+v", d)
	}
	time.Sleep(time.Until(short.Until) + time.Millisecond)
	if d := pol.Decide(req); d.Denial != NotFound {
		t.Errorf("after expiry: %+v, want NotFound", d)
	}
}

func TestGrantsDeleteUser(t *testing.T) {
	js := testJS(t)
	g := openGrants(t, js, true)
	other := openGrants(t, js, true)
	ctx := t.Context()
	now := time.Now()
	mk := func(owner, grantee string) Grant {
		t.Helper()
		gr, err := g.Create(ctx, Grant{Owner: owner, Grantee: grantee, Categories: activity, Until: now.Add(time.Hour)}, now)
		if err != nil {
			t.Fatal(err)
		}
		return gr
	}
	mk("uamy", "ucoach") // given by amy
	mk("uamy", "ueve")   // given by amy
	mk("ubob", "uamy")   // received by amy
	keep1 := mk("ubob", "ucoach")
	keep2 := mk("ueve", "ucoach")
	if _, ok := within(time.Second, func() bool { return len(other.List("ueve")) == 1 }); !ok {
		t.Fatal("the other process did not load the grants")
	}
	if err := g.DeleteUser(ctx, "uamy"); err != nil {
		t.Fatal(err)
	}
	check := func(name string, g *Grants) {
		t.Helper()
		if list := g.List("uamy"); len(list) != 0 {
			t.Errorf("%s: amy's grants survive: %+v", name, list)
		}
		if got := g.Granted("ubob", "uamy", time.Now()); got != nil {
			t.Errorf("%s: amy still receives bob's data: %v", name, got)
		}
		if list := g.List("ubob"); len(list) != 1 || list[0].ID != keep1.ID {
			t.Errorf("%s: bob's grants: %+v", name, list)
		}
		if list := g.List("ueve"); len(list) != 1 || list[0].ID != keep2.ID {
			t.Errorf("%s: eve's grants: %+v", name, list)
		}
	}
	check("this process", g)
	if _, ok := within(time.Second, func() bool {
		return len(other.List("uamy")) == 0 && len(other.List("ubob")) == 1
	}); !ok {
		t.Error("the other process did not see the erasure within a second")
	}
	check("the other process", other)
	keys, err := g.kv.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	want := []string{grantKey("ubob", keep1.ID), grantKey("ueve", keep2.ID)}
	slices.Sort(want)
	if !slices.Equal(keys, want) {
		t.Errorf("bucket keys after erasure: %v, want %v", keys, want)
	}
	// Erasing a user without grants is fine.
	if err := g.DeleteUser(ctx, "unobody"); err != nil {
		t.Error(err)
	}
}

func TestGrantsPruneExpired(t *testing.T) {
	js := testJS(t)
	g := openGrants(t, js, true)
	other := openGrants(t, js, true)
	ctx := t.Context()
	now := time.Now()
	// Grants made two days ago (Create validates against the time it is given).
	then := now.Add(-48 * time.Hour)
	mk := func(owner string, until time.Time, at time.Time) Grant {
		t.Helper()
		gr, err := g.Create(ctx, Grant{Owner: owner, Grantee: "ucoach", Categories: activity, Until: until}, at)
		if err != nil {
			t.Fatal(err)
		}
		return gr
	}
	longGone := mk("uamy", then.Add(time.Hour), then)                  // expired 47 h ago
	recent := mk("uamy", now.Add(-time.Hour), then)                    // expired an hour ago
	live := mk("ubob", now.Add(time.Hour), now)                        // live
	edge := mk("ueve", now.Add(-24*time.Hour), now.Add(-25*time.Hour)) // expired exactly at the cutoff
	if _, ok := within(time.Second, func() bool { return len(other.List("ueve")) == 1 }); !ok {
		t.Fatal("the other process did not load the grants")
	}
	g.pruneExpired(ctx, now.Add(-24*time.Hour))
	if list := g.List("uamy"); len(list) != 1 || list[0].ID != recent.ID {
		t.Errorf("amy's grants after pruning: %+v; want only %s (not %s)", list, recent.ID, longGone.ID)
	}
	if list := g.List("ubob"); len(list) != 1 || list[0].ID != live.ID {
		t.Errorf("bob's live grant: %+v", list)
	}
	if list := g.List("ueve"); len(list) != 1 || list[0].ID != edge.ID {
		t.Errorf("a grant expiring at the cutoff is kept (before, not at): %+v", list)
	}
	if _, err := g.kv.Get(ctx, grantKey("uamy", longGone.ID)); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("the pruned grant is still in the bucket: %v", err)
	}
	if _, ok := within(time.Second, func() bool { return len(other.List("uamy")) == 1 }); !ok {
		t.Errorf("the other process still lists %+v", other.List("uamy"))
	}
	// Another process pruning the same (already deleted) grants changes nothing.
	other.pruneExpired(ctx, now.Add(-24*time.Hour))
	g.pruneExpired(ctx, now.Add(-24*time.Hour))
	if n := len(g.List("uamy")) + len(g.List("ubob")) + len(g.List("ueve")); n != 3 {
		t.Errorf("%d grants after pruning twice, want 3", n)
	}
}

// TestGrantsDeletedHereStayDeleted: the watch delivers this process's own changes after
// it has applied them; a grant created and at once deleted must not come back when the
// watch delivers its creation (access ends "at once" in the deleting process).
func TestGrantsDeletedHereStayDeleted(t *testing.T) {
	g := openGrants(t, testJS(t), true)
	var heard sync.Map
	defer g.Subscribe(func(owner string) { heard.Store(owner, true) })()
	for n := range 30 {
		now := time.Now()
		gr, err := g.Create(t.Context(), Grant{Owner: "uamy", Grantee: "ucoach", Categories: activity, Until: now.Add(time.Hour)}, now)
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := g.Delete(t.Context(), "uamy", gr.ID); err != nil || !ok {
			t.Fatalf("delete: %v %v", ok, err)
		}
		for end := time.Now().Add(30 * time.Millisecond); time.Now().Before(end); {
			if got := g.Granted("uamy", "ucoach", time.Now()); got != nil {
				t.Fatalf("round %d: the deleted grant is back: %v", n, got)
			}
		}
	}
	if _, ok := heard.Load("uamy"); !ok {
		t.Error("the subscriber heard nothing")
	}
	if list := g.List("uamy"); len(list) != 0 {
		t.Errorf("grants left: %+v", list)
	}
}
