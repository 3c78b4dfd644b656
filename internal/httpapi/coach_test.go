package httpapi_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/pbtest"
)

// TestCoachReadsOnlyGrantedCategories: a coach reads the categories a user granted them —
// series, daily metrics, recommendations — and nothing else of that user, and loses the
// access at once when the grant is deleted.
func TestCoachReadsOnlyGrantedCategories(t *testing.T) {
	e := openRecEnv(t)
	alice := e.UserToken(t, "alice")
	aliceID := e.userID(t, alice)
	coach := e.Token(t, "coach-carol", pulsebase.RoleCoach, "")
	now := time.Now().UTC()
	yesterday := now.AddDate(0, 0, -1).Truncate(time.Hour)
	samples := fmt.Sprintf(`{"samples":[
		{"type":"steps","value":120,"start":%q,"end":%q,"source":"phone"},
		{"type":"heart_rate","value":64,"start":%q,"source":"watch"},
		{"type":"resting_heart_rate","value":57,"start":%q,"source":"watch"}]}`,
		yesterday.Format(time.RFC3339), yesterday.Add(time.Minute).Format(time.RFC3339),
		yesterday.Format(time.RFC3339), yesterday.Format(time.RFC3339))
	if r := pbtest.Do(t, "POST", e.API+"/v1/samples", alice, jsonCT, []byte(samples)); r.Status != 202 || !strings.Contains(string(r.Body), `"accepted":3`) {
		t.Fatalf("samples: %d %s", r.Status, r.Body)
	}
	date := yesterday.Format("2006-01-02")
	dailyURL := func(user string) string { return e.API + "/v1/users/" + user + "/daily?from=" + date + "&to=" + date }
	pbtest.WaitFor(t, 30*time.Second, "alice's day with steps and resting heart rate", func() bool {
		var d struct{ Days []map[string]any }
		pbtest.Do(t, "GET", dailyURL("me"), alice, "", nil).JSON(t, &d)
		return len(d.Days) == 1 && d.Days[0]["steps"] != nil && d.Days[0]["resting_heart_rate"] != nil
	}, func() string { return string(pbtest.Do(t, "GET", dailyURL("me"), alice, "", nil).Body) })
	for _, kind := range []string{"recovery_day", "move_break", "breathing"} {
		e.seedRec(t, aliceID, kind, now.Add(-time.Hour), now.Add(time.Hour))
	}
	series := func(typ string) string {
		return e.API + "/v1/users/" + aliceID + "/series/" + typ + "?from=" + yesterday.Add(-time.Hour).Format(time.RFC3339)
	}

	// Before any grant, Alice does not exist for the coach.
	for _, u := range []string{series("steps"), dailyURL(aliceID), e.API + "/v1/users/" + aliceID + "/recommendations"} {
		if r := pbtest.Do(t, "GET", u, coach, "", nil); r.Status != 404 {
			t.Errorf("GET %s before a grant: %d %s, want 404", u, r.Status, r.Body)
		}
	}

	body, _ := json.Marshal(map[string]any{"to": "coach-carol", "categories": []string{"activity"}, "until": now.Add(time.Hour)})
	r := pbtest.Do(t, "POST", e.API+"/v1/users/me/grants", alice, jsonCT, body)
	if r.Status != 201 {
		t.Fatalf("grant: %d %s", r.Status, r.Body)
	}
	var g struct {
		ID         string
		To         string
		Categories []string
		Active     bool
	}
	r.JSON(t, &g)
	if g.ID == "" || g.To != "coach-carol" || !slices.Equal(g.Categories, []string{"activity"}) || !g.Active {
		t.Errorf("grant answer %+v", g)
	}
	var list struct{ Grants []struct{ ID, To string } }
	pbtest.Do(t, "GET", e.API+"/v1/users/me/grants", alice, "", nil).JSON(t, &list)
	if len(list.Grants) != 1 || list.Grants[0].To != "coach-carol" {
		t.Errorf("grant list %+v", list)
	}

	// Series: the granted category, not the others.
	var pts struct{ Points []map[string]any }
	r = pbtest.Do(t, "GET", series("steps"), coach, "", nil)
	r.JSON(t, &pts)
	if r.Status != 200 || len(pts.Points) == 0 {
		t.Errorf("coach reading steps: %d %s", r.Status, r.Body)
	}
	for _, typ := range []string{"heart_rate", "resting_heart_rate", "sleep_stage"} {
		if r := pbtest.Do(t, "GET", series(typ), coach, "", nil); r.Status != 404 {
			t.Errorf("coach reading %s: %d %s, want 404", typ, r.Status, r.Body)
		}
	}
	// Daily: the day with activity metrics and baselines only.
	var d struct{ Days []map[string]any }
	pbtest.Do(t, "GET", dailyURL(aliceID), coach, "", nil).JSON(t, &d)
	if len(d.Days) != 1 || d.Days[0]["steps"] == nil || d.Days[0]["date"] != date {
		t.Fatalf("coach's daily: %v", d.Days)
	}
	for k := range d.Days[0] {
		if k != "date" && k != "baselines" && k != "steps" && k != "active_minutes" && k != "sedentary_minutes" &&
			k != "sedentary_bouts" && k != "active_energy" && k != "distance" {
			t.Errorf("coach's daily shows %s", k)
		}
	}
	if bs, _ := d.Days[0]["baselines"].(map[string]any); bs["resting_heart_rate"] != nil {
		t.Error("coach's daily shows the resting heart rate baseline")
	}
	// Recommendations: only those whose rule reads nothing but activity.
	var recs struct{ Recommendations []struct{ Kind string } }
	pbtest.Do(t, "GET", e.API+"/v1/users/"+aliceID+"/recommendations", coach, "", nil).JSON(t, &recs)
	if len(recs.Recommendations) != 1 || recs.Recommendations[0].Kind != "move_break" {
		t.Errorf("coach's recommendations: %+v, want move_break only", recs.Recommendations)
	}
	pbtest.Do(t, "GET", e.API+"/v1/users/me/recommendations", alice, "", nil).JSON(t, &recs)
	if len(recs.Recommendations) != 3 {
		t.Errorf("alice's own recommendations: %d, want 3", len(recs.Recommendations))
	}
	// Everything else of Alice's stays closed: profile, consents, decisions, the change
	// feed, writes.
	for _, c := range []struct{ method, path string }{
		{"GET", "/profile"}, {"GET", "/consents"}, {"GET", "/consents/history"}, {"GET", "/decisions"},
		{"GET", "/changes"}, {"PUT", "/consents"}, {"POST", "/profile/ops"},
	} {
		r := pbtest.Do(t, c.method, e.API+"/v1/users/"+aliceID+c.path, coach, jsonCT, []byte("{}"))
		if r.Status != 404 {
			t.Errorf("coach %s %s: %d %s, want 404 (API.md: anything else is 404)", c.method, c.path, r.Status, r.Body)
		}
	}
	if r := pbtest.Do(t, "POST", e.API+"/v1/samples?user="+aliceID, coach, jsonCT, []byte(samples)); r.Status != 404 {
		t.Errorf("coach writing samples for alice: %d, want 404", r.Status)
	}
	// Another coach, and a user, see nothing.
	for _, tok := range []string{e.Token(t, "coach-dave", pulsebase.RoleCoach, ""), e.UserToken(t, "coach-carol")} {
		if r := pbtest.Do(t, "GET", series("steps"), tok, "", nil); r.Status != 404 {
			t.Errorf("another principal reading alice's steps: %d", r.Status)
		}
	}

	// Revocation takes effect at once.
	if r := pbtest.Do(t, "DELETE", e.API+"/v1/users/me/grants/"+g.ID, alice, "", nil); r.Status != 204 {
		t.Fatalf("delete grant: %d %s", r.Status, r.Body)
	}
	if r := pbtest.Do(t, "GET", series("steps"), coach, "", nil); r.Status != 404 {
		t.Errorf("coach after the grant was deleted: %d %s, want 404", r.Status, r.Body)
	}
	if r := pbtest.Do(t, "DELETE", e.API+"/v1/users/me/grants/"+g.ID, alice, "", nil); r.Status != 404 {
		t.Errorf("deleting the grant twice: %d, want 404", r.Status)
	}
}

func TestGrantRefusals(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	alice := s.UserToken(t, "alice")
	now := time.Now().UTC()
	for _, c := range []struct {
		name string
		body string
		want int
	}{
		{"no grantee", fmt.Sprintf(`{"categories":["activity"],"until":%q}`, now.Add(time.Hour).Format(time.RFC3339)), 400},
		{"no categories", fmt.Sprintf(`{"to":"c","categories":[],"until":%q}`, now.Add(time.Hour).Format(time.RFC3339)), 400},
		{"unknown category", fmt.Sprintf(`{"to":"c","categories":["finance"],"until":%q}`, now.Add(time.Hour).Format(time.RFC3339)), 400},
		{"in the past", fmt.Sprintf(`{"to":"c","categories":["sleep"],"until":%q}`, now.Add(-time.Hour).Format(time.RFC3339)), 400},
		{"too far", fmt.Sprintf(`{"to":"c","categories":["sleep"],"until":%q}`, now.AddDate(2, 0, 0).Format(time.RFC3339)), 400},
		{"to oneself", fmt.Sprintf(`{"to":"alice","categories":["sleep"],"until":%q}`, now.Add(time.Hour).Format(time.RFC3339)), 400},
		{"not JSON", `{"to":`, 400},
		{"good", fmt.Sprintf(`{"to":"c","categories":["sleep","heart"],"until":%q}`, now.Add(time.Hour).Format(time.RFC3339)), 201},
	} {
		r := pbtest.Do(t, "POST", s.URL+"/v1/users/me/grants", alice, jsonCT, []byte(c.body))
		if r.Status != c.want {
			t.Errorf("%s: %d %s, want %d", c.name, r.Status, r.Body, c.want)
		}
	}
	if r := pbtest.Do(t, "DELETE", s.URL+"/v1/users/me/grants/gnosuchgrant", alice, "", nil); r.Status != http.StatusNotFound {
		t.Errorf("deleting an unknown grant: %d", r.Status)
	}
	// Bob cannot delete Alice's grant, nor see it.
	var list struct{ Grants []struct{ ID string } }
	pbtest.Do(t, "GET", s.URL+"/v1/users/me/grants", alice, "", nil).JSON(t, &list)
	bob := s.UserToken(t, "bob")
	if r := pbtest.Do(t, "DELETE", s.URL+"/v1/users/me/grants/"+list.Grants[0].ID, bob, "", nil); r.Status != 404 {
		t.Errorf("bob deleting alice's grant: %d, want 404", r.Status)
	}
	var bobs struct{ Grants []any }
	pbtest.Do(t, "GET", s.URL+"/v1/users/me/grants", bob, "", nil).JSON(t, &bobs)
	if len(bobs.Grants) != 0 {
		t.Errorf("bob sees grants %v", bobs.Grants)
	}
}
