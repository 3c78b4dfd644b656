package httpapi_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase/internal/pbtest"
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
	pbtest.WaitFor(t, 10*time.Second, "the processed hour bucket", func() bool {
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
	pbtest.WaitFor(t, 10*time.Second, "the processor's metrics", func() bool {
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
			t.Errorf("%s: got %d, want %s problem+json", c.query, r.Status, c.want)
		}
	}
}
