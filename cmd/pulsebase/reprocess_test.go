package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase/internal/pbtest"
)

// TestReprocessCommand rebuilds one user, then everyone, through the CLI against a running
// server, and checks that the user's series is the same afterwards and that a non-admin
// token is refused.
func TestReprocessCommand(t *testing.T) {
	dir := t.TempDir()
	srv := startServer(t, dir)
	tok := mintToken(t, dir, "--user", "rita")
	pbtest.Grant(t, srv.url, tok, pbtest.AllConsent)
	hour := time.Now().UTC().Add(-3 * time.Hour).Truncate(time.Hour)
	var samples []string
	for i := 0; i < 40; i++ {
		samples = append(samples, fmt.Sprintf(`{"type":"heart_rate","value":%d,"start":%q,"source":"w"}`, 50+i, hour.Add(time.Duration(i)*time.Minute).Format(time.RFC3339)))
	}
	if r := pbtest.Do(t, "POST", srv.url+"/v1/samples", tok, "application/json", []byte(`{"samples":[`+strings.Join(samples, ",")+`]}`)); r.Status != 202 {
		t.Fatalf("got %d %s", r.Status, r.Body)
	}
	url := srv.url + "/v1/users/me/series/heart_rate?resolution=1h&from=" + hour.Format(time.RFC3339) + "&to=" + hour.Add(time.Hour).Format(time.RFC3339)
	series := func() string { return string(pbtest.Do(t, "GET", url, tok, "", nil).Body) }
	pbtest.WaitFor(t, 30*time.Second, "the hour bucket", func() bool { return strings.Contains(series(), `"count":40`) })
	want := series()
	var me struct{ ID string }
	pbtest.Do(t, "GET", srv.url+"/v1/users/me", tok, "", nil).JSON(t, &me)

	for _, args := range [][]string{{"--user", me.ID}, {"--all"}} {
		var out, errb bytes.Buffer
		full := append([]string{"reprocess", "--server", srv.url, "--data-dir", dir, "--timeout", "2m"}, args...)
		if err := run(context.Background(), full, noEnv, nil, &out, &errb); err != nil {
			t.Fatalf("%v: %v\n%s%s", full, err, out.String(), errb.String())
		}
		if !strings.Contains(out.String(), "complete") {
			t.Errorf("%v: got %q, want it to report completion", args, out.String())
		}
		if got := series(); got != want {
			t.Errorf("after %v: series %s, want %s", args, got, want)
		}
	}
	// Only admins; an unknown user is 404.
	if r := pbtest.Do(t, "POST", srv.url+"/v1/admin/reprocess", tok, "application/json", []byte(`{"all":true}`)); r.Status != 403 {
		t.Errorf("a user token: got %d, want 403", r.Status)
	}
	admin := mintToken(t, dir, "--user", "ops", "--role", "admin")
	if r := pbtest.Do(t, "POST", srv.url+"/v1/admin/reprocess", admin, "application/json", []byte(`{"user":"unobody"}`)); r.Status != 404 {
		t.Errorf("unknown user: got %d %s, want 404", r.Status, r.Body)
	}
	if r := pbtest.Do(t, "GET", srv.url+"/v1/admin/reprocess/123", admin, "", nil); r.Status != 404 {
		t.Errorf("unknown request: got %d %s, want 404", r.Status, r.Body)
	}
}
