package httpapi_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/pbtest"
)

type profileAnswer struct {
	Results []struct {
		ID      string
		Applied bool
		Code    string
	}
	Profile map[string]any
	Version int64
}

// TestProfileMergesDevices edits one profile from two devices, with a stale clock, re-sends
// and bad ops, and reads the merged document and the change feed.
func TestProfileMergesDevices(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	watch := s.Token(t, "pat", pulsebase.RoleDevice, "watch-1")
	phone := s.Token(t, "pat", pulsebase.RoleDevice, "phone")
	user := s.UserToken(t, "pat")
	now := time.Now().UnixMilli()
	today := time.Now().UTC().Format("2006-01-02")
	op := func(device string, seq int, wall int64, kind, path, value string) string {
		return fmt.Sprintf(`{"id":"%s:%d","ts":{"wall":%d,"logical":0,"node":%q},"kind":%q,"path":%q,"value":%s}`,
			device, seq, wall, device, kind, path, value)
	}
	post := func(tok string, ops ...string) profileAnswer {
		t.Helper()
		r := pbtest.Do(t, "POST", s.URL+"/v1/users/me/profile/ops", tok, jsonCT, []byte(`{"ops":[`+strings.Join(ops, ",")+`]}`))
		if r.Status != 200 {
			t.Fatalf("got %d %s", r.Status, r.Body)
		}
		var a profileAnswer
		r.JSON(t, &a)
		return a
	}
	watchOps := []string{
		op("watch-1", 1, now, "set", "goals.steps", "8000"),
		op("watch-1", 2, now, "add", "enabled_nudges", `"bedtime"`),
		op("watch-1", 3, now, "incr", "water_glasses."+today, "1"),
	}
	if a := post(watch, watchOps...); a.Version != 1 || len(a.Results) != 3 || !a.Results[0].Applied || !a.Results[2].Applied {
		t.Fatalf("the watch's ops: %+v", a)
	}
	// The phone edited the goal earlier (an older clock) while offline: the watch's wins.
	a := post(phone,
		op("phone", 1, now-60_000, "set", "goals.steps", "10000"),
		op("phone", 2, now-60_000, "incr", "water_glasses."+today, "1"),
		op("phone", 3, now-60_000, "add", "enabled_nudges", `"hydration"`))
	if a.Version != 2 {
		t.Fatalf("the phone's ops: %+v", a)
	}
	var got map[string]any
	r := pbtest.Do(t, "GET", s.URL+"/v1/users/me/profile", user, "", nil)
	if r.Status != 200 || r.Header.Get("ETag") != `"2"` {
		t.Fatalf("GET profile: %d %s, ETag %s", r.Status, r.Body, r.Header.Get("ETag"))
	}
	r.JSON(t, &got)
	want := fmt.Sprintf(`map[enabled_nudges:[bedtime hydration] favourite_activities:[] goals:map[steps:8000] water_glasses:map[%s:2]]`, today)
	if fmt.Sprint(got) != want {
		t.Errorf("merged profile %v, want %s", got, want)
	}
	// Re-sent ops are duplicates: nothing changes, no new version.
	if a := post(watch, watchOps...); a.Version != 2 || a.Results[0].Applied || a.Results[0].Code != "" {
		t.Errorf("re-sent ops: %+v", a)
	}
	// Bad ops are refused one by one; the good one in the batch applies.
	a = post(watch,
		op("watch-1", 4, now, "set", "goals.nope", "1"),
		op("watch-1", 5, now, "set", "goals.steps", "-5"),
		`{"id":"watch-1:6","kind":"set"}`,
		op("watch-1", 7, now+1, "set", "units", `"imperial"`))
	codes := []string{}
	for _, res := range a.Results {
		codes = append(codes, res.Code)
	}
	if a.Version != 3 || a.Profile["units"] != "imperial" || a.Profile["goals"].(map[string]any)["steps"] != 8000.0 ||
		strings.Count(strings.Join(codes, ","), "invalid") < 3 {
		t.Errorf("mixed batch: %+v (codes %v)", a, codes)
	}
	// The applied ops are on the change feed, for the user's other devices.
	pbtest.WaitFor(t, 30*time.Second, "a profile change on the feed", func() bool {
		return strings.Contains(string(pbtest.Do(t, "GET", s.URL+"/v1/users/me/changes?limit=1000", user, "", nil).Body), `"kind":"profile"`)
	})
	// Someone else's profile is their own; an empty batch is refused.
	other := s.UserToken(t, "quinn")
	if r := pbtest.Do(t, "GET", s.URL+"/v1/users/me/profile", other, "", nil); r.Status != 200 ||
		strings.TrimSpace(string(r.Body)) != `{"enabled_nudges":[],"favourite_activities":[],"goals":{},"water_glasses":{}}` {
		t.Errorf("another user's profile: %d %s", r.Status, r.Body)
	}
	if r := pbtest.Do(t, "POST", s.URL+"/v1/users/me/profile/ops", other, jsonCT, []byte(`{"ops":[]}`)); r.Status != 400 {
		t.Errorf("no ops: got %d", r.Status)
	}
}
