package vault_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/broker"
	"github.com/pulsebase/pulsebase/internal/consent"
	"github.com/pulsebase/pulsebase/internal/ingest"
	"github.com/pulsebase/pulsebase/internal/sqlite"
	"github.com/pulsebase/pulsebase/internal/vault"
)

// noopAEAD "encrypts" by copying: the baseline that shows what real encryption costs.
type noopAEAD struct{}

func (noopAEAD) Encrypt(p, _ []byte) ([]byte, error) { return append([]byte(nil), p...), nil }
func (noopAEAD) Decrypt(c, _ []byte) ([]byte, error) { return append([]byte(nil), c...), nil }

// BenchmarkIngestEncryption runs the ingest service (validate, identify, encrypt, publish
// to the embedded broker and wait for acks) with the real AEAD and with a no-op one.
// Compare the samples/s of the two: issue [1] targets a ratio of at least 0.85.
func BenchmarkIngestEncryption(b *testing.B) {
	for _, mode := range []string{"tink", "noop"} {
		b.Run("aead="+mode, func(b *testing.B) {
			ctx := context.Background()
			dir := b.TempDir()
			store, err := sqlite.Open(ctx, filepath.Join(dir, "db"))
			if err != nil {
				b.Fatal(err)
			}
			defer store.Close()
			v, err := vault.Open(ctx, store, vault.Config{DataDir: dir})
			if err != nil {
				b.Fatal(err)
			}
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			brk, err := broker.Open(ctx, broker.Config{DataDir: dir}, log)
			if err != nil {
				b.Fatal(err)
			}
			defer brk.Close()
			cons, err := consent.New(ctx, store, v, brk.JetStream(), 1, log)
			if err != nil {
				b.Fatal(err)
			}
			svc := ingest.NewService(v, cons, brk, nil, log, nil)

			const users, batchSize = 8, 500
			ids := make([]string, users)
			for i := range ids {
				ids[i] = fmt.Sprintf("ubench%d", i)
				if _, err := v.UserKeys(ctx, ids[i]); err != nil {
					b.Fatal(err)
				}
				all := pulsebase.Consent{Collect: map[pulsebase.Category]bool{pulsebase.CategoryHeart: true}}
				if _, err := cons.Set(ctx, ids[i], all, pulsebase.Actor{Role: pulsebase.RoleUser}); err != nil {
					b.Fatal(err)
				}
				if mode == "noop" {
					v.SetAEADForBenchmark(ids[i], noopAEAD{})
				}
			}
			base := time.Now().Add(-24 * time.Hour)
			var next atomic.Int64
			batch := func() []pulsebase.SampleInput {
				n := next.Add(1)
				in := make([]pulsebase.SampleInput, batchSize)
				for i := range in {
					at := base.Add(time.Duration(n*batchSize+int64(i)) * time.Millisecond).Format(time.RFC3339Nano)
					in[i] = pulsebase.SampleInput{Type: "heart_rate", Value: []byte("72"), Unit: "bpm", Start: at, Source: "bench-watch"}
				}
				return in
			}
			b.ResetTimer()
			var wg sync.WaitGroup
			var calls atomic.Int64
			for w := 0; w < 8; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for calls.Add(1) <= int64(b.N) {
						in := batch()
						res, err := svc.Ingest(ctx, ids[w%users], pulsebase.Principal{Subject: "bench", Role: pulsebase.RoleUser}, in)
						if err != nil || res.Accepted != batchSize {
							b.Errorf("got %+v, %v; want %d accepted", res, err, batchSize)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(b.N*batchSize)/b.Elapsed().Seconds(), "samples/s")
		})
	}
}
