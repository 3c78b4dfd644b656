package syncgw_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/pbtest"
	"github.com/pulsebase/pulsebase/internal/syncgw"
)

// userID returns the internal id of token's user.
func userID(t *testing.T, s *pbtest.Server, token string) string {
	t.Helper()
	var me struct{ ID string }
	r := pbtest.Do(t, "GET", s.URL+"/v1/users/me", token, "", nil)
	if r.Status != 200 {
		t.Fatalf("GET /v1/users/me: %d %s", r.Status, r.Body)
	}
	r.JSON(t, &me)
	if me.ID == "" {
		t.Fatalf("GET /v1/users/me: no id in %s", r.Body)
	}
	return me.ID
}

// grantTo lets the coach with subject to read categories of the data of ownerToken's user
// until until, through the API, and returns the grant's id.
func grantTo(t *testing.T, s *pbtest.Server, ownerToken, to string, until time.Time, categories ...string) string {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"to": to, "categories": categories, "until": until.UTC().Format(time.RFC3339Nano)})
	r := pbtest.Do(t, "POST", s.URL+"/v1/users/me/grants", ownerToken, "application/json", b)
	if r.Status != 201 {
		t.Fatalf("POST grants: %d %s", r.Status, r.Body)
	}
	var g struct{ ID string }
	r.JSON(t, &g)
	return g.ID
}

// revokeGrant deletes ownerToken's user's grant id through the API.
func revokeGrant(t *testing.T, s *pbtest.Server, ownerToken, id string) {
	t.Helper()
	if r := pbtest.Do(t, "DELETE", s.URL+"/v1/users/me/grants/"+id, ownerToken, "", nil); r.Status != 204 {
		t.Fatalf("DELETE grant: %d %s", r.Status, r.Body)
	}
}

// coachHello dials and says hello with token for user's data, without a cursor.
func coachHello(t *testing.T, s *pbtest.Server, token, user string) *wsConn {
	t.Helper()
	c := dial(t, s)
	c.send(map[string]any{"type": "hello", "token": token, "device": "laptop", "cursor": nil, "user": user})
	return c
}

// welcomed reads the welcome of a connection that said hello.
func (c *wsConn) welcomed() map[string]any {
	c.t.Helper()
	w := c.recv()
	if w["type"] != "welcome" {
		c.t.Fatalf("expected a welcome, got %v", w)
	}
	return w
}

// closedBy reads until the server closes the connection, and returns the close status
// and the error frame before it; it fails the test if that does not happen by deadline.
func (c *wsConn) closedBy(deadline time.Time, what string) (websocket.StatusCode, map[string]any) {
	c.t.Helper()
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	var last map[string]any
	for {
		_, b, err := c.ws.Read(ctx)
		if err != nil {
			if st := websocket.CloseStatus(err); st != -1 {
				return st, last
			}
			if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
				c.t.Fatalf("%s: the connection was not closed in time", what)
			}
			c.t.Fatalf("%s: the connection ended without a close frame: %v", what, err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			c.t.Fatalf("%s: frame %s: %v", what, b, err)
		}
		if m["type"] == "error" {
			last = m
		}
	}
}

// steps is a steps sample of n steps in the half minute from at (at most 150: five a
// second).
func steps(n float64, at time.Time) map[string]any {
	return map[string]any{"type": "steps", "value": n, "start": at.UTC().Format(time.RFC3339),
		"end": at.Add(30 * time.Second).UTC().Format(time.RFC3339), "source": "test"}
}

// coachDayFields are the fields of a day object an activity-only reader may see.
var coachDayFields = []string{"date", "baselines", "deleted", "steps", "active_minutes", "sedentary_bouts",
	"sedentary_minutes", "active_energy", "distance"}

// checkCoachFrame fails the test if an activity-only coach was sent m: anything but a
// series change of an activity type or a daily change of activity fields.
func checkCoachFrame(t *testing.T, m map[string]any) {
	t.Helper()
	if m["type"] != "change" {
		t.Fatalf("the coach got a frame that is not a change: %v", m)
	}
	key, _ := m["key"].(string)
	switch m["kind"] {
	case "series":
		typ, _, _ := strings.Cut(key, "/")
		if st, ok := pulsebase.LookupType(typ); !ok || st.Category != pulsebase.CategoryActivity {
			t.Fatalf("the coach got a series change of %s: %v", typ, m)
		}
	case "daily":
		d, _ := m["data"].(map[string]any)
		for k := range d {
			if !slices.Contains(coachDayFields, k) {
				t.Fatalf("the coach got a daily change with %s: %v", k, m)
			}
		}
		if bs, _ := d["baselines"].(map[string]any); bs != nil {
			for k := range bs {
				if !slices.Contains(coachDayFields, k) {
					t.Fatalf("the coach got the baseline of %s: %v", k, m)
				}
			}
		}
	default:
		t.Fatalf("the coach got a %v change: %v", m["kind"], m)
	}
}

// TestCoachSyncsGrantedCategories: a coach granted activity syncs the user's data naming
// them in the hello, and gets the steps of the snapshot and of live changes, and nothing
// of heart rate, nor the profile, consent or recommendations.
func TestCoachSyncsGrantedCategories(t *testing.T) {
	s := pbtest.MustOpenServerOpts(t, pbtest.Options{DailyEvery: 100 * time.Millisecond})
	owner := s.UserToken(t, "olive") // consents to every category
	ownerID := userID(t, s, owner)
	coach := s.Token(t, "coach-carl", pulsebase.RoleCoach, "")
	grantTo(t, s, owner, "coach-carl", time.Now().Add(time.Hour), "activity")

	// Data of both categories before the coach connects, in the series and the days.
	at := time.Now().Add(-time.Hour).Truncate(time.Minute)
	postSamples(t, s, owner, steps(100, at), sample("heart_rate", 61, at), sample("resting_heart_rate", 55, at))
	pbtest.WaitFor(t, 60*time.Second, "the day with steps and resting heart rate", func() bool {
		var d struct{ Days []map[string]any }
		pbtest.Do(t, "GET", s.URL+"/v1/users/me/daily", owner, "", nil).JSON(t, &d)
		for _, day := range d.Days {
			if day["steps"] != nil && day["resting_heart_rate"] != nil {
				return true
			}
		}
		return false
	})
	pbtest.WaitFor(t, 60*time.Second, "the buckets on the feed", func() bool {
		var hr, st bool
		for _, ch := range fullFeed(t, s, owner).Changes {
			hr = hr || strings.HasPrefix(ch.Key, "heart_rate/")
			st = st || strings.HasPrefix(ch.Key, "steps/")
		}
		return hr && st
	})

	c := coachHello(t, s, coach, ownerID)
	w := c.welcomed()
	if w["user"] != ownerID || w["recovered"] != false {
		t.Fatalf("the coach's welcome: %v", w)
	}
	snap := w["snapshot"].(map[string]any)
	var stepBuckets int
	for _, b := range snap["series"].([]any) {
		key := b.(map[string]any)["key"].(string)
		typ, _, _ := strings.Cut(key, "/")
		if st, ok := pulsebase.LookupType(typ); !ok || st.Category != pulsebase.CategoryActivity {
			t.Errorf("the coach's snapshot holds the bucket %s", key)
		}
		if typ == "steps" {
			stepBuckets++
		}
	}
	if stepBuckets == 0 {
		t.Errorf("the coach's snapshot holds no steps bucket: %v", snap["series"])
	}
	var stepDays int
	for _, d := range snap["daily"].([]any) {
		day := d.(map[string]any)
		checkCoachFrame(t, map[string]any{"type": "change", "kind": "daily", "key": day["date"], "data": day})
		if day["steps"] != nil {
			stepDays++
		}
	}
	if stepDays == 0 {
		t.Errorf("the coach's snapshot holds no day with steps: %v", snap["daily"])
	}
	if recs, ok := snap["recommendations"].([]any); !ok || len(recs) != 0 {
		t.Errorf("the coach's snapshot's recommendations: %v", snap["recommendations"])
	}
	if p, _ := snap["profile"].(map[string]any); p["version"] != 0.0 || p["doc"] != nil || p["state"] != nil {
		t.Errorf("the coach's snapshot's profile: %v", snap["profile"])
	}
	if cons, _ := snap["consents"].(map[string]any); cons["version"] != 0.0 || cons["collect"] != nil || cons["purposes"] != nil {
		t.Errorf("the coach's snapshot's consents: %v", snap["consents"])
	}

	// Live: steps and heart rate, a profile edit and a consent change, then a marker of
	// steps. The feed is one order, so by the time the marker arrives every earlier change
	// was sent or withheld: none may be of heart rate, the profile, consent or anything but
	// activity.
	at2 := time.Now().Add(-30 * time.Minute).Truncate(time.Minute)
	postSamples(t, s, owner, steps(120, at2), sample("heart_rate", 62, at2))
	phone, _ := hello(t, s, owner, "phone", nil)
	ts := map[string]any{"wall": time.Now().UnixMilli(), "logical": 0, "node": "phone"}
	phone.send(map[string]any{"type": "ops", "ref": "o1", "doc": "profile", "ops": []any{
		map[string]any{"id": "phone:1", "ts": ts, "kind": "set", "path": "goals.steps", "value": 9000}}})
	phone.until("the ops ack", func(m map[string]any) bool { return m["type"] == "ack" })
	pbtest.Grant(t, s.URL, owner, `{"collect":{"heart":true,"activity":true,"sleep":true},"purposes":{"personalization":true}}`)
	pbtest.WaitFor(t, 60*time.Second, "the live batch on the feed", func() bool {
		for _, ch := range fullFeed(t, s, owner).Changes {
			if strings.HasPrefix(ch.Key, "heart_rate/1m/") && ch.Data["last"] == 62.0 {
				return true
			}
		}
		return false
	})
	marker := time.Now().Add(-10 * time.Minute).Truncate(time.Minute)
	postSamples(t, s, owner, steps(130, marker))
	var sawBatch bool
	c.until("the marker's steps change", func(m map[string]any) bool {
		checkCoachFrame(t, m)
		d, _ := m["data"].(map[string]any)
		key, _ := m["key"].(string)
		if m["kind"] == "series" && strings.HasPrefix(key, "steps/1m/") && d["sum"] == 120.0 {
			sawBatch = true
		}
		return m["kind"] == "series" && strings.HasPrefix(key, "steps/1m/") && d["sum"] == 130.0
	})
	if !sawBatch {
		t.Errorf("the coach did not get the live batch's steps change")
	}
	// The days are recomputed too: the coach gets the day's new steps, reduced to
	// activity (checkCoachFrame), whichever commit carries it.
	c.until("the day's new steps", func(m map[string]any) bool {
		checkCoachFrame(t, m)
		d, _ := m["data"].(map[string]any)
		return m["kind"] == "daily" && d["steps"] == 350.0
	})
}

// TestCoachHelloRefusals: a coach syncs only the data of a user who granted them some of
// it, by naming that user; anything else closes with 4003, as does a user or device naming
// another user. A user naming themselves, or "me", syncs as before.
func TestCoachHelloRefusals(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	amy, bob := s.UserToken(t, "amy"), s.UserToken(t, "bob")
	amyID, bobID := userID(t, s, amy), userID(t, s, bob)
	coach := s.Token(t, "coach-dan", pulsebase.RoleCoach, "")
	other := s.Token(t, "coach-eli", pulsebase.RoleCoach, "")
	bobsWatch := s.Token(t, "bob", pulsebase.RoleDevice, "watch-1")
	admin := s.Token(t, "root", pulsebase.RoleAdmin, "")
	grantTo(t, s, amy, "coach-dan", time.Now().Add(time.Hour), "activity")
	for _, c := range []struct {
		name, token, user string
	}{
		{"a coach without a grant", other, amyID},
		{"a coach naming a user who granted them nothing", coach, bobID},
		{"a coach naming no user", coach, ""},
		{"a coach naming themselves", coach, "me"},
		{"a coach naming no one who exists", coach, "u-nobody"},
		{"a user naming another", bob, amyID},
		{"a device naming another user", bobsWatch, amyID},
		{"an admin", admin, amyID},
	} {
		conn := coachHello(t, s, c.token, c.user)
		st, e := conn.closed()
		if st != syncgw.CloseForbidden || e == nil || e["code"] != pulsebase.EFORBIDDEN {
			t.Errorf("%s: closed %d after %v; want 4003 after an error %s", c.name, st, e, pulsebase.EFORBIDDEN)
		}
	}
	// The coach with the grant is welcome; users name themselves or "me".
	if w := coachHello(t, s, coach, amyID).welcomed(); w["user"] != amyID {
		t.Errorf("the granted coach's welcome: %v", w)
	}
	for _, user := range []string{"me", bobID} {
		if w := coachHello(t, s, bob, user).welcomed(); w["user"] != bobID {
			t.Errorf("bob naming %q: %v", user, w)
		}
	}
}

// TestRevokedGrantClosesCoachConnection: deleting a grant closes the coach's open
// connection with 4003 within a second, and so does a grant change that alters what the
// coach may read; the user's own connection stays.
func TestRevokedGrantClosesCoachConnection(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	owner := s.UserToken(t, "fern")
	ownerID := userID(t, s, owner)
	coach := s.Token(t, "coach-gil", pulsebase.RoleCoach, "")
	mine, _ := hello(t, s, owner, "phone", nil)
	first := grantTo(t, s, owner, "coach-gil", time.Now().Add(time.Hour), "activity")

	// A second grant adds sleep: the connection scoped to activity closes.
	c := coachHello(t, s, coach, ownerID)
	c.welcomed()
	second := grantTo(t, s, owner, "coach-gil", time.Now().Add(time.Hour), "sleep")
	if st, e := c.closedBy(time.Now().Add(time.Second), "after a grant was added"); st != syncgw.CloseForbidden || e == nil || e["code"] != pulsebase.EFORBIDDEN {
		t.Fatalf("after a grant was added: closed %d after %v", st, e)
	}
	// Reconnected under both grants, deleting one of them changes the categories.
	c = coachHello(t, s, coach, ownerID)
	c.welcomed()
	revokeGrant(t, s, owner, second)
	deleted := time.Now()
	if st, e := c.closedBy(deleted.Add(time.Second), "after one of two grants was deleted"); st != syncgw.CloseForbidden || e == nil || e["code"] != pulsebase.EFORBIDDEN {
		t.Fatalf("after one of two grants was deleted: closed %d after %v", st, e)
	}
	// Under the remaining grant; deleting it closes within a second.
	c = coachHello(t, s, coach, ownerID)
	c.welcomed()
	revokeGrant(t, s, owner, first)
	deleted = time.Now()
	st, e := c.closedBy(deleted.Add(time.Second), "after the grant was deleted")
	if took := time.Since(deleted); took > time.Second {
		t.Fatalf("closed %s after the grant was deleted; want within a second", took)
	}
	if st != syncgw.CloseForbidden || e == nil || e["code"] != pulsebase.EFORBIDDEN {
		t.Fatalf("after the grant was deleted: closed %d after %v", st, e)
	}
	if d, _ := e["detail"].(string); !strings.Contains(d, "revoked") {
		t.Errorf("the error's detail: %q", d)
	}
	// The coach cannot come back; the user's own connection is still served.
	again := coachHello(t, s, coach, ownerID)
	if st, _ := again.closed(); st != syncgw.CloseForbidden {
		t.Fatalf("the coach's hello after the revocation: closed %d", st)
	}
	postSamples(t, s, owner, steps(42, time.Now().Add(-time.Hour).Truncate(time.Minute)))
	mine.until("the owner's own change", func(m map[string]any) bool {
		d, _ := m["data"].(map[string]any)
		return m["kind"] == "series" && d["sum"] == 42.0
	})
}

// TestExpiredGrantClosesCoachConnection: a grant that expires closes the coach's open
// connection with 4003 about a second after its expiry at the latest, and not before it.
func TestExpiredGrantClosesCoachConnection(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	owner := s.UserToken(t, "gwen")
	ownerID := userID(t, s, owner)
	coach := s.Token(t, "coach-hal", pulsebase.RoleCoach, "")
	until := time.Now().Add(2 * time.Second).Truncate(time.Millisecond)
	grantTo(t, s, owner, "coach-hal", until, "activity")
	c := coachHello(t, s, coach, ownerID)
	c.welcomed()
	// The gateway checks expiries once a second: a little scheduling slack on top.
	st, e := c.closedBy(until.Add(1500*time.Millisecond), "after the grant expired")
	closedAt := time.Now()
	if closedAt.Before(until) {
		t.Fatalf("closed at %s, before the grant expired at %s", closedAt.Format(time.StampMilli), until.Format(time.StampMilli))
	}
	if st != syncgw.CloseForbidden || e == nil || e["code"] != pulsebase.EFORBIDDEN {
		t.Fatalf("after the grant expired: closed %d after %v", st, e)
	}
	t.Logf("closed %s after the grant expired", closedAt.Sub(until))
}

// TestCoachMayNotWrite: a coach's samples and ops frames are answered with a forbidden
// error frame naming the ref, and the connection stays open.
func TestCoachMayNotWrite(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	owner := s.UserToken(t, "hana")
	ownerID := userID(t, s, owner)
	coach := s.Token(t, "coach-ike", pulsebase.RoleCoach, "")
	grantTo(t, s, owner, "coach-ike", time.Now().Add(time.Hour), "activity")
	c := coachHello(t, s, coach, ownerID)
	c.welcomed()
	at := time.Now().Add(-time.Hour).Truncate(time.Minute)
	c.send(map[string]any{"type": "samples", "ref": "s1", "samples": []any{steps(5, at)}})
	if e := c.until("the samples frame's error", func(m map[string]any) bool { return m["type"] == "error" }); e["ref"] != "s1" || e["code"] != pulsebase.EFORBIDDEN {
		t.Fatalf("the coach's samples frame: %v", e)
	}
	ts := map[string]any{"wall": time.Now().UnixMilli(), "logical": 0, "node": "laptop"}
	c.send(map[string]any{"type": "ops", "ref": "o1", "doc": "profile", "ops": []any{
		map[string]any{"id": "laptop:1", "ts": ts, "kind": "set", "path": "goals.steps", "value": 1}}})
	if e := c.until("the ops frame's error", func(m map[string]any) bool { return m["type"] == "error" }); e["ref"] != "o1" || e["code"] != pulsebase.EFORBIDDEN {
		t.Fatalf("the coach's ops frame: %v", e)
	}
	// Nothing was written, and the connection is still open: the owner's steps reach it.
	postSamples(t, s, owner, steps(6, at))
	m := c.until("the owner's steps", func(m map[string]any) bool { return m["kind"] == "series" })
	if d, _ := m["data"].(map[string]any); d["sum"] != 6.0 {
		t.Fatalf("the coach's sample was stored, or the owner's is not the first change: %v", m)
	}
	var prof map[string]any
	pbtest.Do(t, "GET", s.URL+"/v1/users/me/profile", owner, "", nil).JSON(t, &prof)
	if b, _ := json.Marshal(prof); strings.Contains(string(b), `"steps":1`) {
		t.Fatalf("the coach's op was applied: %s", b)
	}
}
