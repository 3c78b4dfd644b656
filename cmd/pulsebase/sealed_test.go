package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/client"
	"github.com/pulsebase/pulsebase/internal/pbtest"
)

// TestIngestTierNeverSeesSealedPlaintext runs a server with the ingest role only (a full
// server ran first, as the processing tier, and created the processing key), posts a batch
// sealed with the SDK whose samples carry a marker, and checks that the marker appears
// neither in any log line of the ingest process nor in any file under the data dir.
func TestIngestTierNeverSeesSealedPlaintext(t *testing.T) {
	dir := t.TempDir()
	full := startServer(t, dir)
	if err := full.stop(); err != nil {
		t.Fatal(err)
	}

	srv := startServer(t, dir, "--roles", "ingest,api", "--log-level", "debug")
	marker := fmt.Sprintf("SEALED-MARKER-%d", time.Now().UnixNano())
	user := mintToken(t, dir, "--user", "alice")
	pbtest.Grant(t, srv.url, user, pbtest.AllConsent)
	c := client.New(srv.url, mintToken(t, dir, "--user", "alice", "--role", "device", "--device", "ring-1"))
	ctx := context.Background()
	me, err := c.Me(ctx)
	if err != nil {
		t.Fatal(err)
	}
	key, err := c.ProcessingKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var samples []pulsebase.SampleInput
	for i := 0; i < 20; i++ {
		samples = append(samples, pulsebase.SampleInput{
			ID: fmt.Sprintf("%s-%d", marker, i), Type: "heart_rate", Value: json.RawMessage("64"), Unit: "bpm",
			Start: time.Now().Add(-time.Duration(i+1) * time.Minute).UTC().Format(time.RFC3339), Source: marker,
		})
	}
	batch, err := client.Seal(key, me.ID, samples)
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.PostSealed(ctx, batch)
	if err != nil || res.Sealed == nil || res.Sealed.Duplicate {
		t.Fatalf("got %+v, %v; want the sealed batch stored", res, err)
	}
	if err := srv.stop(); err != nil {
		t.Fatal(err)
	}
	logs := srv.stderr.String() + srv.stdout.String()
	if !strings.Contains(logs, `"level":"DEBUG"`) {
		t.Fatal("no debug log lines were captured; the check below would prove nothing")
	}
	if strings.Contains(logs, marker) {
		t.Error("a log line of the ingest process contains the sealed marker")
	}
	assertNoMarker(t, dir, marker)
}

// TestIngestOnlyDoesNotMakeTheProcessingKey: a process without the process role never
// creates (and so never holds) the processing tier's private key.
func TestIngestOnlyDoesNotMakeTheProcessingKey(t *testing.T) {
	srv := startServer(t, t.TempDir(), "--roles", "ingest,api")
	r := pbtest.Do(t, "GET", srv.url+"/v1/keys/processing", "", "", nil)
	if r.Status != 503 {
		t.Errorf("got %d %s, want 503 until a processing process made the key", r.Status, r.Body)
	}
}
