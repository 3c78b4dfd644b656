package storetest

import (
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
)

func testEraseKeys(t *testing.T, open Opener) {
	s, reopen := openStore(t, open)
	ctx := t.Context()
	keys := []pulsebase.WrappedKey{
		key("u1", "data", "kek-1", "u1 data"),
		key("u1", "index", "kek-2", "u1 index"),
		key("u2", "data", "kek-1", "u2 data"),
		key("u10", "data", "kek-1", "owner with u1 as a prefix"),
		key("system", "u1", "kek-1", "named like u1, owned by system"),
	}
	for _, k := range keys {
		if _, err := s.CreateWrappedKey(ctx, k); err != nil {
			t.Fatalf("CreateWrappedKey(%s/%s): %v", k.Owner, k.Name, err)
		}
	}
	if err := s.EraseKeys(ctx, "u1", t0); err != nil {
		t.Fatalf("EraseKeys(u1): %v", err)
	}
	for _, k := range keys {
		got, err := s.WrappedKey(ctx, k.Owner, k.Name)
		if k.Owner == "u1" {
			if pulsebase.ErrorCode(err) != pulsebase.EERASED {
				t.Errorf("WrappedKey(%s/%s) after erasing u1: got %v, want %s", k.Owner, k.Name, err, pulsebase.EERASED)
			}
			continue
		}
		if err != nil {
			t.Errorf("WrappedKey(%s/%s) after erasing u1: %v, want it kept", k.Owner, k.Name, err)
			continue
		}
		sameKey(t, "kept key", got, k)
	}
	// Every name of an erased owner is erased, not only the names it had.
	_, err := s.WrappedKey(ctx, "u1", "never-had")
	wantCode(t, err, pulsebase.EERASED)

	// No key can be made for u1 again, under an old name or a new one.
	for _, k := range []pulsebase.WrappedKey{key("u1", "data", "kek-3", "fresh"), key("u1", "new", "kek-3", "new")} {
		_, err := s.CreateWrappedKey(ctx, k)
		wantCode(t, err, pulsebase.EERASED)
	}
	// Updating is no way back in either.
	wantCode(t, s.UpdateWrappedKey(ctx, key("u1", "data", "kek-3", "x"), keys[0]), pulsebase.EERASED)
	if got, err := s.WrappedKeysByKEK(ctx, "kek-1", "", "", 100); err != nil {
		t.Fatalf("WrappedKeysByKEK: %v", err)
	} else {
		for _, k := range got {
			if k.Owner == "u1" {
				t.Errorf("WrappedKeysByKEK lists %s/%s after erasing u1", k.Owner, k.Name)
			}
		}
	}
	// Other owners are unaffected.
	other := key("u2", "index", "kek-1", "u2 index")
	if got, err := s.CreateWrappedKey(ctx, other); err != nil {
		t.Errorf("CreateWrappedKey(u2/index) after erasing u1: %v", err)
	} else {
		sameKey(t, "CreateWrappedKey of another owner", got, other)
	}

	// Erasing again, or an owner that never had keys, is not an error; the latter is
	// erased all the same.
	for _, owner := range []string{"u1", "nobody"} {
		if err := s.EraseKeys(ctx, owner, t0.Add(time.Hour)); err != nil {
			t.Errorf("EraseKeys(%s): %v, want nil", owner, err)
		}
	}
	_, err = s.CreateWrappedKey(ctx, key("nobody", "data", "kek-1", "x"))
	wantCode(t, err, pulsebase.EERASED)
	_, err = s.WrappedKey(ctx, "nobody", "data")
	wantCode(t, err, pulsebase.EERASED)

	// The tombstone is durable.
	s2 := reopen(t)
	_, err = s2.WrappedKey(ctx, "u1", "data")
	wantCode(t, err, pulsebase.EERASED)
	_, err = s2.CreateWrappedKey(ctx, key("u1", "data", "kek-1", "after reopen"))
	wantCode(t, err, pulsebase.EERASED)
}

// testEraseKeysRacesCreate races EraseKeys against CreateWrappedKey, round after round:
// each create must either come wholly before the erase (and be deleted by it) or after it
// (and fail with EERASED). A store that checks the tombstone outside the create's
// transaction, or writes it apart from the delete, leaves keys behind. Each round has one
// owner and several creators, so that whatever gap an erase leaves, a creator of that
// owner is likely waiting to fall into it. The race is timing-dependent, so a regression
// shows up often, not always.
func testEraseKeysRacesCreate(t *testing.T, open Opener) {
	s, _ := openStore(t, open)
	ctx := t.Context()
	const (
		rounds   = 25
		creators = 8
	)
	for round := range rounds {
		owner := fmt.Sprintf("racer-%02d", round)
		var (
			wg         sync.WaitGroup
			start      = make(chan struct{})
			eraseErr   error
			createErrs = make([]error, creators)
		)
		for i := range creators {
			wg.Go(func() {
				<-start
				_, createErrs[i] = s.CreateWrappedKey(ctx, key(owner, fmt.Sprint("key-", i), "kek-race", "doomed"))
			})
		}
		wg.Go(func() {
			<-start
			eraseErr = s.EraseKeys(ctx, owner, t0)
		})
		close(start)
		wg.Wait()

		if eraseErr != nil {
			t.Fatalf("EraseKeys(%s): %v", owner, eraseErr)
		}
		for i, err := range createErrs {
			if err != nil && pulsebase.ErrorCode(err) != pulsebase.EERASED {
				t.Errorf("CreateWrappedKey(%s/key-%d): got %v, want nil or %s", owner, i, err, pulsebase.EERASED)
			}
			_, err := s.WrappedKey(ctx, owner, fmt.Sprint("key-", i))
			if pulsebase.ErrorCode(err) != pulsebase.EERASED {
				t.Errorf("WrappedKey(%s/key-%d) after the race: got %v, want %s", owner, i, err, pulsebase.EERASED)
			}
		}
	}
	left, err := s.WrappedKeysByKEK(ctx, "kek-race", "", "", 1000)
	if err != nil {
		t.Fatalf("WrappedKeysByKEK: %v", err)
	}
	for _, k := range left {
		t.Errorf("key %s/%s outlived the erase of its owner", k.Owner, k.Name)
	}
}

// byKEKKeys returns the keys testWrappedKeysByKEK stores: 25 under "kek-old" and 10
// under "kek-new" with the same owners. The owners and names are chosen so that a wrong
// order shows: "B" sorts before "a" in byte order, ("a", "z") before ("ab", "a") as a pair
// (but not as a concatenation), and "u1" before "u10".
func byKEKKeys() (old, other []pulsebase.WrappedKey) {
	owners := []string{"u10", "a", "B", "u1", "ab"}
	for i, owner := range owners {
		for j, name := range []string{"z", "a", "data", "Index", "x-1"} {
			k := key(owner, name, "kek-old", fmt.Sprintf("old %s/%s\x00\xff", owner, name))
			k.Created = t0.Add(time.Duration(i*5+j) * time.Second)
			k.Updated = k.Created.Add(time.Minute)
			old = append(old, k)
		}
		for _, name := range []string{"m1", "m2"} {
			other = append(other, key(owner, name, "kek-new", "new "+owner+"/"+name))
		}
	}
	return old, other
}

func keyBefore(a, b pulsebase.WrappedKey) bool {
	return a.Owner < b.Owner || a.Owner == b.Owner && a.Name < b.Name
}

func testWrappedKeysByKEK(t *testing.T, open Opener) {
	s, _ := openStore(t, open)
	ctx := t.Context()
	old, other := byKEKKeys()
	// Create interleaved, so neither insertion order nor KEK groups give the answer.
	for i := range max(len(old), len(other)) {
		for _, ks := range [][]pulsebase.WrappedKey{old, other} {
			if i < len(ks) {
				if _, err := s.CreateWrappedKey(ctx, ks[i]); err != nil {
					t.Fatalf("CreateWrappedKey(%s/%s): %v", ks[i].Owner, ks[i].Name, err)
				}
			}
		}
	}
	want := append([]pulsebase.WrappedKey(nil), old...)
	sort.Slice(want, func(i, j int) bool { return keyBefore(want[i], want[j]) })

	// Page through with limit 7: 7, 7, 7, 4, then nothing.
	const limit = 7
	var (
		got   []pulsebase.WrappedKey
		sizes []int
		owner string
		name  string
	)
	for page := 0; ; page++ {
		if page > len(want) {
			t.Fatalf("still paging after %d pages; cursor stuck at (%q, %q)?", page, owner, name)
		}
		keys, err := s.WrappedKeysByKEK(ctx, "kek-old", owner, name, limit)
		if err != nil {
			t.Fatalf("WrappedKeysByKEK(after (%q, %q)): %v", owner, name, err)
		}
		sizes = append(sizes, len(keys))
		if len(keys) > limit {
			t.Fatalf("WrappedKeysByKEK(limit %d): got %d keys", limit, len(keys))
		}
		if len(keys) == 0 {
			break
		}
		got = append(got, keys...)
		owner, name = keys[len(keys)-1].Owner, keys[len(keys)-1].Name
	}
	if fmt.Sprint(sizes) != "[7 7 7 4 0]" {
		t.Errorf("page sizes: got %v, want [7 7 7 4 0]", sizes)
	}
	if len(got) != len(want) {
		t.Fatalf("paged through %d keys, want %d (each key of kek-old once)", len(got), len(want))
	}
	for i := range want {
		sameKey(t, fmt.Sprintf("key %d in (owner, name) order", i), got[i], want[i])
	}

	// A cursor need not be a key: it is a position in the order.
	for _, c := range [][2]string{{"ab", "b"}, {"u1", ""}, {"", ""}, {"a", "z"}, {"u10", "z"}, {"zz", ""}} {
		keys, err := s.WrappedKeysByKEK(ctx, "kek-old", c[0], c[1], 100)
		if err != nil {
			t.Fatalf("WrappedKeysByKEK(after %q): %v", c, err)
		}
		cursor := pulsebase.WrappedKey{Owner: c[0], Name: c[1]}
		var wantAfter []pulsebase.WrappedKey
		for _, k := range want {
			if keyBefore(cursor, k) {
				wantAfter = append(wantAfter, k)
			}
		}
		if len(keys) != len(wantAfter) {
			t.Errorf("WrappedKeysByKEK(after %q): got %d keys, want %d", c, len(keys), len(wantAfter))
			continue
		}
		for i := range keys {
			sameKey(t, fmt.Sprintf("after %q, key %d", c, i), keys[i], wantAfter[i])
		}
	}

	// The limit holds however many keys follow.
	if keys, err := s.WrappedKeysByKEK(ctx, "kek-old", "", "", 1); err != nil || len(keys) != 1 {
		t.Errorf("WrappedKeysByKEK(limit 1): got %d keys, %v; want 1", len(keys), err)
	} else {
		sameKey(t, "WrappedKeysByKEK(limit 1)", keys[0], want[0])
	}
	// A page of nothing would look like the end of the keys.
	_, err := s.WrappedKeysByKEK(ctx, "kek-old", "", "", 0)
	wantCode(t, err, pulsebase.EINVALID)

	// Other KEKs' keys, and a KEK without keys.
	if keys, err := s.WrappedKeysByKEK(ctx, "kek-new", "", "", 100); err != nil || len(keys) != len(other) {
		t.Errorf("WrappedKeysByKEK(kek-new): got %d keys, %v; want %d", len(keys), err, len(other))
	}
	if keys, err := s.WrappedKeysByKEK(ctx, "kek-none", "", "", 100); err != nil || len(keys) != 0 {
		t.Errorf("WrappedKeysByKEK(kek-none): got %d keys, %v; want none", len(keys), err)
	}

	// A key re-wrapped under another KEK leaves kek-old's pages.
	moved := want[3]
	moved.KEKID, moved.Ciphertext = "kek-new", []byte("re-wrapped")
	if err := s.UpdateWrappedKey(ctx, moved, want[3]); err != nil {
		t.Fatalf("UpdateWrappedKey: %v", err)
	}
	keys, err := s.WrappedKeysByKEK(ctx, "kek-old", "", "", 100)
	if err != nil {
		t.Fatalf("WrappedKeysByKEK after re-wrap: %v", err)
	}
	if len(keys) != len(want)-1 {
		t.Errorf("WrappedKeysByKEK(kek-old) after re-wrapping one: got %d keys, want %d", len(keys), len(want)-1)
	}
	for _, k := range keys {
		if k.Owner == moved.Owner && k.Name == moved.Name {
			t.Errorf("WrappedKeysByKEK(kek-old) lists %s/%s, re-wrapped under kek-new", k.Owner, k.Name)
		}
	}
}

func testCountWrappedKeys(t *testing.T, open Opener) {
	s, _ := openStore(t, open)
	ctx := t.Context()
	check := func(what string, want map[string]int) {
		t.Helper()
		got, err := s.CountWrappedKeys(ctx)
		if err != nil {
			t.Fatalf("%s: CountWrappedKeys: %v", what, err)
		}
		// A KEK without keys may be absent or counted as 0.
		for kek, n := range got {
			if n != want[kek] {
				t.Errorf("%s: got %d keys under %q, want %d", what, n, kek, want[kek])
			}
		}
		for kek, n := range want {
			if got[kek] != n {
				t.Errorf("%s: got %d keys under %q, want %d", what, got[kek], kek, n)
			}
		}
	}
	check("empty store", map[string]int{})

	for _, k := range []pulsebase.WrappedKey{
		key("u1", "data", "kek-1", "a"),
		key("u1", "index", "kek-2", "b"),
		key("u2", "data", "kek-1", "c"),
		key("u3", "data", "kek-1", "d"),
		key("system", "subject-index", "kek-2", "e"),
	} {
		if _, err := s.CreateWrappedKey(ctx, k); err != nil {
			t.Fatalf("CreateWrappedKey: %v", err)
		}
	}
	// A create that finds the key there adds nothing.
	if _, err := s.CreateWrappedKey(ctx, key("u1", "data", "kek-3", "loser")); err != nil {
		t.Fatalf("CreateWrappedKey: %v", err)
	}
	check("after creates", map[string]int{"kek-1": 3, "kek-2": 2})

	if err := s.UpdateWrappedKey(ctx, key("u2", "data", "kek-2", "re-wrapped"), key("u2", "data", "kek-1", "c")); err != nil {
		t.Fatalf("UpdateWrappedKey: %v", err)
	}
	check("after re-wrapping one key", map[string]int{"kek-1": 2, "kek-2": 3})

	if err := s.EraseKeys(ctx, "u1", t0); err != nil {
		t.Fatalf("EraseKeys: %v", err)
	}
	check("after erasing u1", map[string]int{"kek-1": 1, "kek-2": 2})
}
