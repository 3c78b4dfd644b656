package profile_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase/internal/crdt"
	"github.com/pulsebase/pulsebase/internal/profile"
	"github.com/pulsebase/pulsebase/internal/sqlite"
	"github.com/pulsebase/pulsebase/internal/vault"
)

// TestConcurrentServersLoseNothing applies ops for one user from two services (two servers)
// at once: each write is a compare-and-set, so every increment ends in the document, and
// the stored document opens only with the user's key.
func TestConcurrentServersLoseNothing(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	store, err := sqlite.Open(ctx, filepath.Join(dir, "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	v, err := vault.Open(ctx, store, vault.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	servers := []*profile.Service{profile.New(store, v, nil, nil), profile.New(store, v, nil, nil)}
	const user, perDevice = "uprofile", 20
	day := time.Now().UTC().Format("2006-01-02")
	var wg sync.WaitGroup
	for d := range 4 {
		wg.Go(func() {
			device := fmt.Sprintf("dev-%d", d)
			for seq := 1; seq <= perDevice; seq++ {
				op := crdt.Op{ID: fmt.Sprintf("%s:%d", device, seq), TS: crdt.Timestamp{Wall: time.Now().UnixMilli(), Node: device},
					Kind: "incr", Path: "water_glasses." + day, Value: json.RawMessage("1")}
				res, _, _, err := servers[d%2].Apply(ctx, user, []crdt.Op{op})
				if err != nil || !res[0].Applied {
					t.Errorf("%s: %+v, %v", op.ID, res, err)
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
	sp, err := store.Profile(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	other, err := v.UserKeys(ctx, "usomeoneelse")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Open("profile", "", sp.Ciphertext); err == nil {
		t.Error("another user's key opens the stored profile")
	}
}
