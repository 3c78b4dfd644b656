package processor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/broker"
)

// BenchmarkProcess measures the processor alone: samples for many users are stored first
// (outside the timer), then one processor applies them all across the 64 partitions.
// Reports samples/s processed (issue [3] targets 250,000/s with 100k users × 3 types).
func BenchmarkProcess(b *testing.B) {
	const users, perUser = 1000, 100
	for range b.N {
		b.StopTimer()
		pl := newPipeline(b)
		ctx := context.Background()
		now := time.Now()
		last := map[int]uint64{}
		for u := 0; u < users; u++ {
			user := fmt.Sprintf("ubench%05d", u)
			if _, err := pl.consent.Set(ctx, user, pulsebase.Consent{
				Collect:  map[pulsebase.Category]bool{pulsebase.CategoryHeart: true, pulsebase.CategoryActivity: true},
				Purposes: map[pulsebase.Purpose]bool{pulsebase.PurposePersonalization: true},
			}, pulsebase.Actor{Role: pulsebase.RoleUser}); err != nil {
				b.Fatal(err)
			}
			in := make([]pulsebase.SampleInput, perUser)
			for i := range in {
				start := now.Add(-time.Duration(perUser-i) * time.Minute).UTC()
				if i%2 == 0 {
					in[i] = pulsebase.SampleInput{Type: "heart_rate", Value: json.RawMessage("70"), Start: start.Format(time.RFC3339), Source: "w"}
				} else {
					in[i] = pulsebase.SampleInput{Type: "steps", Value: json.RawMessage("50"), Start: start.Format(time.RFC3339),
						End: start.Add(time.Minute).Format(time.RFC3339), Source: "w"}
				}
			}
			if _, err := pl.ingest.Ingest(ctx, user, pulsebase.Principal{Subject: user, Role: pulsebase.RoleUser}, in); err != nil {
				b.Fatal(err)
			}
		}
		st, _ := pl.brk.JetStream().Stream(ctx, broker.StreamSamples)
		for p := 0; p < 64; p++ {
			if m, err := st.GetLastMsgForSubject(ctx, broker.PartitionFilter(p)); err == nil {
				last[p] = m.Sequence
			}
		}
		b.StartTimer()
		start := time.Now()
		stop := pl.run(b)
		for p, seq := range last {
			for {
				cp, err := pl.store.Checkpoint(ctx, p)
				if err != nil {
					b.Fatal(err)
				}
				if cp.Seq >= seq {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		elapsed := time.Since(start)
		b.StopTimer()
		stop()
		b.ReportMetric(float64(users*perUser)/elapsed.Seconds(), "samples/s")
	}
}
