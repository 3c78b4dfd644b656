package profile_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase/internal/crdt"
	"github.com/pulsebase/pulsebase/internal/profile"
)

// TestConcurrentServersLoseNothing applies ops for one user from two services (two servers)
// at once: each write is a compare-and-set, so every increment ends in the document, the
// feed carries every version's ops once and in version order, and the stored document
// opens only with the user's key.
func TestConcurrentServersLoseNothing(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	store, v := e.Store, e.Vault
	servers := []*profile.Service{profile.New(store, v, e.Broker.JetStream(), nil), profile.New(store, v, e.Broker.JetStream(), nil)}
	const user, perDevice = "uprofile", 20
	day := time.Now().UTC().Format("2006-01-02")
	var wg sync.WaitGroup
	for d := range 4 {
		wg.Go(func() {
			device := fmt.Sprintf("dev-%d", d)
			for seq := 1; seq <= perDevice; seq++ {
				op := crdt.Op{ID: fmt.Sprintf("%s:%d", device, seq), TS: crdt.Timestamp{Wall: time.Now().UnixMilli(), Node: device},
					Kind: "incr", Path: "water_glasses." + day, Value: json.RawMessage("1")}
				out, err := servers[d%2].Apply(ctx, user, []crdt.Op{op})
				if err != nil || !out.Results[0].Applied {
					t.Errorf("%s: %+v, %v", op.ID, out, err)
				}
			}
		})
	}
	wg.Wait()
	doc, version, err := servers[0].Get(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	glasses := fmt.Sprint(doc.View()["water_glasses"])
	if want := fmt.Sprintf("map[%s:%d]", day, 4*perDevice); glasses != want || version != 4*perDevice {
		t.Errorf("got glasses %s at version %d, want %s and %d", glasses, version, want, 4*perDevice)
	}
	ops, ids := feedOps(t, e.feed(t, user))
	if len(ops) != 4*perDevice || len(ids) != 4*perDevice || len(slices.Compact(slices.Sorted(slices.Values(ops)))) != len(ops) {
		t.Errorf("the feed holds %d ops (%d distinct) in %d messages, want each of %d once", len(ops),
			len(slices.Compact(slices.Sorted(slices.Values(ops)))), len(ids), 4*perDevice)
	}
	for i, id := range ids {
		if want := fmt.Sprintf("%s-profile-%d", user, i+1); id != want {
			t.Fatalf("message %d of the feed is %s, want %s", i, id, want)
		}
	}
	sp, err := store.Profile(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	if sp.Published != sp.Version {
		t.Errorf("got published %d at version %d", sp.Published, sp.Version)
	}
	other, err := v.UserKeys(ctx, "usomeoneelse")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Open("profile", "", sp.Ciphertext); err == nil {
		t.Error("another user's key opens the stored profile")
	}
}
