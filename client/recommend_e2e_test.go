package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase/client"
	"github.com/pulsebase/pulsebase/internal/pbtest"
)

// recChanges collects the recommendation changes a session receives.
type recChanges struct {
	mu  sync.Mutex
	all []map[string]any
}

func (r *recChanges) add(c client.Change) {
	var m map[string]any
	if err := json.Unmarshal(c.Data, &m); err == nil {
		r.mu.Lock()
		r.all = append(r.all, m)
		r.mu.Unlock()
	}
}

// where returns the changes for which keep is true.
func (r *recChanges) where(keep func(map[string]any) bool) []map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []map[string]any
	for _, m := range r.all {
		if keep(m) {
			out = append(out, m)
		}
	}
	return out
}

// TestRecoveryDayEndToEnd: a user's watch uploads three normal weeks and then a week of
// raised resting heart rate and lowered HRV; their phone and watch, connected by sync,
// each receive exactly one recovery_day recommendation whose why quotes the numbers;
// feedback the phone gives through the API changes its state on the watch.
func TestRecoveryDayEndToEnd(t *testing.T) {
	s := pbtest.MustOpenServerOpts(t, pbtest.Options{DailyEvery: 100 * time.Millisecond})
	tok := s.UserToken(t, "rosa")
	c := client.New(s.URL, tok)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	devices := map[string]*recChanges{}
	for _, dev := range []string{"phone", "watch"} {
		got := &recChanges{}
		devices[dev] = got
		sess, err := c.Sync(client.SyncOptions{Device: dev, Handlers: map[string]func(client.Change){"recommendation": got.add}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sess.Close() })
		go sess.Run(ctx)
	}

	now := time.Now()
	if res, err := c.PostSamples(ctx, pbtest.RecoverySamples(now, pbtest.MiddayZone(now))); err != nil || res.Accepted != 56 {
		t.Fatalf("post samples: %+v, %v", res, err)
	}
	recovery := func(m map[string]any) bool { return m["kind"] == "recovery_day" }
	for dev, got := range devices {
		pbtest.WaitFor(t, 60*time.Second, "a recovery_day recommendation on the "+dev, func() bool { return len(got.where(recovery)) > 0 })
	}
	// Later recomputations of the same days make no second one.
	time.Sleep(time.Second)
	var id string
	for dev, got := range devices {
		recs := got.where(recovery)
		if len(recs) != 1 {
			t.Fatalf("the %s got %d recovery_day recommendations, want 1", dev, len(recs))
		}
		why, _ := recs[0]["why"].(string)
		if !strings.Contains(why, "Resting heart rate 61 vs your usual") || !strings.Contains(why, "HRV 38 ms") {
			t.Errorf("the %s's why %q does not quote the numbers", dev, why)
		}
		if recs[0]["state"] != "active" {
			t.Errorf("the %s's recommendation is %v", dev, recs[0]["state"])
		}
		id, _ = recs[0]["id"].(string)
	}
	list, err := c.Recommendations(ctx, "active")
	if err != nil || len(list) != 1 || list[0].ID != id {
		t.Fatalf("GET recommendations: %+v, %v", list, err)
	}

	// The phone accepts it; the watch sees the new state.
	if err := c.Feedback(ctx, id, "accepted", 5); err != nil {
		t.Fatal(err)
	}
	pbtest.WaitFor(t, 30*time.Second, "the accepted state on the watch", func() bool {
		return len(devices["watch"].where(func(m map[string]any) bool { return m["id"] == id && m["state"] == "accepted" })) == 1
	})
	list, err = c.Recommendations(ctx, "all")
	if err != nil || len(list) != 1 || list[0].State != "accepted" || len(list[0].Feedback) != 1 || list[0].Feedback[0].Rating != 5 {
		t.Fatalf("after feedback: %+v, %v", list, err)
	}
}

// TestQuietHoursFromTheProfile: the quiet hours a user set on their profile hold a
// recommendation back, and the decision says so.
func TestQuietHoursFromTheProfile(t *testing.T) {
	s := pbtest.MustOpenServerOpts(t, pbtest.Options{DailyEvery: 100 * time.Millisecond})
	tok := s.UserToken(t, "noor")
	c := client.New(s.URL, tok)
	ctx := context.Background()
	now := time.Now()
	zone := pbtest.MiddayZone(now)
	// Quiet from an hour ago to an hour from now, on the user's clock.
	span := fmt.Sprintf(`{"start":"%s","end":"%s"}`, now.In(zone).Add(-time.Hour).Format("15:04"), now.In(zone).Add(time.Hour).Format("15:04"))
	r := pbtest.Do(t, "POST", s.URL+"/v1/users/me/profile/ops", tok, "application/json",
		[]byte(`{"ops":[{"id":"web:1","ts":{"wall":`+fmt.Sprint(now.UnixMilli())+`,"logical":0,"node":"web"},"kind":"set","path":"quiet_hours","value":`+span+`}]}`))
	if r.Status != 200 {
		t.Fatalf("profile op: %d %s", r.Status, r.Body)
	}
	if _, err := c.PostSamples(ctx, pbtest.RecoverySamples(now, zone)); err != nil {
		t.Fatal(err)
	}
	var decisions struct {
		Decisions []struct {
			Candidates []struct{ Kind, Reason string } `json:"candidates"`
		} `json:"decisions"`
	}
	pbtest.WaitFor(t, 60*time.Second, "a decision about recovery_day", func() bool {
		pbtest.Do(t, "GET", s.URL+"/v1/users/me/decisions", tok, "", nil).JSON(t, &decisions)
		return len(decisions.Decisions) > 0
	})
	for _, d := range decisions.Decisions {
		for _, cand := range d.Candidates {
			if cand.Kind == "recovery_day" && cand.Reason != "quiet_hours" {
				t.Errorf("recovery_day %s, want quiet_hours", cand.Reason)
			}
		}
	}
	if list, err := c.Recommendations(ctx, "all"); err != nil || len(list) != 0 {
		t.Errorf("delivered in quiet hours: %+v, %v", list, err)
	}
}
