package httpapi_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase/internal/pbtest"
	"github.com/pulsebase/pulsebase/internal/processor"
)

type seriesDoc struct {
	Type       string `json:"type"`
	Unit       string `json:"unit"`
	Resolution string `json:"resolution"`
	Points     []struct {
		Start   string             `json:"start"`
		Count   int64              `json:"count"`
		Sum     float64            `json:"sum"`
		Min     float64            `json:"min"`
		Max     float64            `json:"max"`
		Last    float64            `json:"last"`
		Minutes map[string]float64 `json:"minutes"`
	} `json:"points"`
}

// TestSeriesShowsProcessedSamples posts samples, including duplicates, and reads the hour
// series the processor derived from them.
func TestSeriesShowsProcessedSamples(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	tok := s.UserToken(t, "alice")
	hour := time.Now().UTC().Add(-3 * time.Hour).Truncate(time.Hour)
	var samples []string
	for i := 0; i < 30; i++ {
		at := hour.Add(time.Duration(i) * time.Minute).Format(time.RFC3339)
		samples = append(samples, fmt.Sprintf(`{"type":"heart_rate","value":%d,"unit":"bpm","start":%q,"source":"w"}`, 60+i, at))
	}
	body := batch(samples...)
	for i := 0; i < 2; i++ { // the second post is all duplicates
		if r := pbtest.Do(t, "POST", s.URL+"/v1/samples", tok, jsonCT, body); r.Status != 202 {
			t.Fatalf("got %d %s", r.Status, r.Body)
		}
	}
	url := s.URL + "/v1/users/me/series/heart_rate?resolution=1h&from=" + hour.Add(-time.Hour).Format(time.RFC3339) + "&to=" + hour.Add(2*time.Hour).Format(time.RFC3339)
	var doc seriesDoc
	pbtest.WaitFor(t, 60*time.Second, "the processed hour bucket", func() bool {
		r := pbtest.Do(t, "GET", url, tok, "", nil)
		if r.Status != 200 {
			t.Fatalf("got %d %s", r.Status, r.Body)
		}
		r.JSON(t, &doc)
		return len(doc.Points) == 1 && doc.Points[0].Count == 30
	})
	p := doc.Points[0]
	if doc.Unit != "/min" || doc.Resolution != "1h" || p.Sum != 30*60+435 || p.Min != 60 || p.Max != 89 || p.Last != 89 {
		t.Errorf("got %+v, want 30 readings 60..89 summing to 2235", doc)
	}
	pbtest.WaitFor(t, 60*time.Second, "the processor's metrics", func() bool {
		metrics := string(pbtest.Do(t, "GET", s.URL+"/metrics", "", "", nil).Body)
		for _, want := range []string{
			`pulsebase_processor_samples_total{outcome="applied",type="heart_rate"} 30`,
			`pulsebase_processor_owned_partitions 64`,
			`pulsebase_processor_checkpoint_timestamp_seconds{partition=`,
			`pulsebase_processor_lag_messages{partition=`,
		} {
			if !strings.Contains(metrics, want) {
				return false
			}
		}
		return true
	})
	for _, c := range []struct{ query, want string }{
		{"/v1/users/me/series/blood_sugar", "404"},
		{"/v1/users/me/series/heart_rate?resolution=5m", "400"},
		{"/v1/users/me/series/heart_rate?resolution=1m&from=2026-01-01T00:00:00Z&to=2026-11-01T00:00:00Z", "400"},
		{"/v1/users/me/series/heart_rate?from=yesterday", "400"},
		{"/v1/users/unobody/series/heart_rate", "404"},
	} {
		if r := pbtest.Do(t, "GET", s.URL+c.query, tok, "", nil); fmt.Sprint(r.Status) != c.want || !strings.Contains(r.Header.Get("Content-Type"), "problem") {
			t.Errorf("%s: got %d %s, want %s problem+json", c.query, r.Status, r.Body, c.want)
		}
	}
}

// TestDailyShowsDerivedMetrics posts a day of steps and a night of sleep and reads them as
// daily metrics.
func TestDailyShowsDerivedMetrics(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	tok := s.UserToken(t, "dora")
	day := time.Now().UTC().AddDate(0, 0, -2).Truncate(24 * time.Hour)
	date := day.Format("2006-01-02")
	body := batch(
		fmt.Sprintf(`{"type":"steps","value":1200,"start":%q,"end":%q,"source":"phone"}`, day.Add(9*time.Hour).Format(time.RFC3339), day.Add(10*time.Hour).Format(time.RFC3339)),
		fmt.Sprintf(`{"type":"steps","value":800,"start":%q,"end":%q,"source":"phone"}`, day.Add(15*time.Hour).Format(time.RFC3339), day.Add(15*time.Hour+30*time.Minute).Format(time.RFC3339)),
		fmt.Sprintf(`{"type":"sleep_stage","value":"light","start":%q,"end":%q,"source":"ring"}`, day.Add(time.Hour).Format(time.RFC3339), day.Add(7*time.Hour).Format(time.RFC3339)),
	)
	if r := pbtest.Do(t, "POST", s.URL+"/v1/samples", tok, jsonCT, body); r.Status != 202 {
		t.Fatalf("got %d %s", r.Status, r.Body)
	}
	var doc struct {
		Days []map[string]any `json:"days"`
	}
	url := s.URL + "/v1/users/me/daily?from=" + date + "&to=" + date
	pbtest.WaitFor(t, 60*time.Second, "the day's metrics", func() bool {
		r := pbtest.Do(t, "GET", url, tok, "", nil)
		if r.Status != 200 {
			t.Fatalf("got %d %s", r.Status, r.Body)
		}
		doc.Days = nil
		r.JSON(t, &doc)
		return len(doc.Days) == 1 && doc.Days[0]["steps"] == 2000.0 && doc.Days[0]["sleep_minutes"] == 360.0
	})
	d := doc.Days[0]
	if d["date"] != date || d["resting_heart_rate"] != nil {
		t.Errorf("got %v, want %s with no resting heart rate", d, date)
	}
	if b, ok := d["baselines"].(map[string]any)["steps"].(map[string]any); !ok || b["established"] != false || b["days_7d"] != 1.0 {
		t.Errorf("steps baseline: got %v", d["baselines"])
	}
	for _, c := range []struct{ query, want string }{
		{"/v1/users/me/daily?from=2026-13-01", "400"},
		{"/v1/users/me/daily?from=2026-11-02&to=2026-11-01", "400"},
		{"/v1/users/me/daily?from=2024-01-01&to=2026-01-01", "400"},
		{"/v1/users/unobody/daily", "404"},
	} {
		if r := pbtest.Do(t, "GET", s.URL+c.query, tok, "", nil); fmt.Sprint(r.Status) != c.want || !strings.Contains(r.Header.Get("Content-Type"), "problem") {
			t.Errorf("%s: got %d %s, want %s problem+json", c.query, r.Status, r.Body, c.want)
		}
	}
	// Another user's token sees none of it.
	other := s.UserToken(t, "erin")
	if r := pbtest.Do(t, "GET", s.URL+"/v1/users/me/daily?from="+date+"&to="+date, other, "", nil); r.Status != 200 || strings.Contains(string(r.Body), "2000") {
		t.Errorf("another user: got %d %s", r.Status, r.Body)
	}
}

// TestChangesFallback reads the change feed over HTTP: the changes of posted samples, a
// resumed read with nothing new, and the errors.
func TestChangesFallback(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	tok := s.UserToken(t, "cleo")
	at := time.Now().UTC().Add(-time.Hour).Truncate(time.Minute)
	if r := pbtest.Do(t, "POST", s.URL+"/v1/samples", tok, jsonCT, batch(
		fmt.Sprintf(`{"type":"heart_rate","value":64,"start":%q,"source":"w"}`, at.Format(time.RFC3339)))); r.Status != 202 {
		t.Fatalf("got %d %s", r.Status, r.Body)
	}
	type page struct {
		Changes []struct {
			Cursor, Kind, Key string
			Data              map[string]any
		}
		Cursor  string
		HasMore bool `json:"has_more"`
	}
	var p page
	pbtest.WaitFor(t, 60*time.Second, "the minute bucket on the change feed", func() bool {
		r := pbtest.Do(t, "GET", s.URL+"/v1/users/me/changes?limit=1000", tok, "", nil)
		if r.Status != 200 {
			t.Fatalf("got %d %s", r.Status, r.Body)
		}
		p = page{}
		r.JSON(t, &p)
		for _, c := range p.Changes {
			if c.Kind == "series" && strings.HasPrefix(c.Key, "heart_rate/1m/") && c.Data["last"] == 64.0 {
				return true
			}
		}
		return false
	})
	if p.HasMore || p.Cursor != p.Changes[len(p.Changes)-1].Cursor {
		t.Errorf("got has_more %v and cursor %s, want false and the last change's", p.HasMore, p.Cursor)
	}
	// Page by page: the first change alone, then the rest from its cursor.
	var first, rest page
	pbtest.Do(t, "GET", s.URL+"/v1/users/me/changes?limit=1", tok, "", nil).JSON(t, &first)
	if len(first.Changes) != 1 || first.Changes[0].Cursor != p.Changes[0].Cursor || first.HasMore != (len(p.Changes) > 1) {
		t.Errorf("first page: %+v", first)
	}
	pbtest.Do(t, "GET", s.URL+"/v1/users/me/changes?limit=1000&after="+first.Cursor, tok, "", nil).JSON(t, &rest)
	if len(rest.Changes) != len(p.Changes)-1 {
		t.Errorf("resumed: %d changes, want %d", len(rest.Changes), len(p.Changes)-1)
	}
	// Another user's feed is their own: it holds their consent, nothing of cleo's, and
	// cleo's cursors mean nothing in it.
	var theirs page
	dan := s.UserToken(t, "dan")
	pbtest.Do(t, "GET", s.URL+"/v1/users/me/changes", dan, "", nil).JSON(t, &theirs)
	for _, c := range theirs.Changes {
		if c.Kind != "consent" {
			t.Errorf("another user sees a %s change %s", c.Kind, c.Key)
		}
	}
	if r := pbtest.Do(t, "GET", s.URL+"/v1/users/me/changes?after="+first.Cursor, dan, "", nil); r.Status != 400 {
		t.Errorf("another user's cursor: got %d %s, want 400", r.Status, r.Body)
	}
	var me struct{ ID string }
	pbtest.Do(t, "GET", s.URL+"/v1/users/me", tok, "", nil).JSON(t, &me)
	expired := processor.Cursor{Epoch: 1, Seq: 1}.Encode(me.ID)
	for _, c := range []struct{ query, want string }{
		{"?after=nonsense", "400"},
		{"?limit=0", "400"},
		{"?limit=1001", "400"},
		{"?after=" + expired, "410"},
	} {
		r := pbtest.Do(t, "GET", s.URL+"/v1/users/me/changes"+c.query, tok, "", nil)
		if fmt.Sprint(r.Status) != c.want || !strings.Contains(r.Header.Get("Content-Type"), "problem") {
			t.Errorf("%s: got %d %s, want %s problem+json", c.query, r.Status, r.Body, c.want)
		}
	}
}
