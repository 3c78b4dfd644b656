package loadgen

import (
	"context"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/auth"
	"github.com/pulsebase/pulsebase/internal/pbtest"
)

// BenchmarkHTTPIngest sends b.N requests of 500 samples, closed loop with 4 workers, to a
// whole server stack in this process (pbtest.MustOpenServer: SQLite, embedded JetStream,
// vault). It exists to profile the server's ingest path:
//
//	go test -run '^$' -bench HTTPIngest -benchtime 400x -cpuprofile cpu.out ./internal/loadgen
//	go tool pprof -top -focus 'httpapi' loadgen.test cpu.out
//
// The profile also holds the generator's side of each request (building bodies, the
// HTTP client), which focusing on the server's packages leaves out.
func BenchmarkHTTPIngest(b *testing.B) {
	const batch, users, workers = 500, 20, 4
	srv := pbtest.MustOpenServer(b)
	w, err := NewWorkload(batch, users, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	tokens := make([]string, users)
	for u := range tokens {
		tokens[u], err = srv.Issuer.Mint(auth.TokenRequest{Subject: w.Subject(u), Role: pulsebase.RoleUser, TTL: time.Hour}, time.Now())
		if err != nil {
			b.Fatal(err)
		}
	}
	t, err := NewHTTPTarget(srv.URL, tokens, w, workers, time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	defer t.Close()
	ctx := context.Background()
	if err := t.WarmUp(ctx, workers); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	r, err := Run(ctx, t, w, Options{Duration: time.Hour, Concurrency: workers, Requests: int64(b.N)})
	if err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if r.Samples.Accepted != int64(b.N)*batch {
		b.Fatalf("got %d samples accepted, want %d; errors: %q", r.Samples.Accepted, int64(b.N)*batch, r.Errors)
	}
	b.ReportMetric(r.AcceptedPerSec, "samples/s")
	b.ReportMetric(r.Latency.P50, "p50-ms")
	b.ReportMetric(r.Latency.P99, "p99-ms")
}
