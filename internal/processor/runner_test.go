package processor_test

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/agg"
	"github.com/pulsebase/pulsebase/internal/broker"
	"github.com/pulsebase/pulsebase/internal/consent"
	"github.com/pulsebase/pulsebase/internal/ingest"
	"github.com/pulsebase/pulsebase/internal/processor"
	"github.com/pulsebase/pulsebase/internal/sqlite"
	"github.com/pulsebase/pulsebase/internal/vault"
)

type pipeline struct {
	brk     *broker.Broker
	store   *sqlite.Store
	vault   *vault.Vault
	consent *consent.Service
	ingest  *ingest.Service
	// leaseTTL is the processors' lease time; zero means 2 s.
	leaseTTL time.Duration
}

func newPipeline(t testing.TB) *pipeline {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	store, err := sqlite.Open(ctx, filepath.Join(dir, "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	// A one-second duplicate window: re-sends after it reach the stream again and must be
	// caught by the processor.
	brk, err := broker.Open(ctx, broker.Config{DataDir: dir, DuplicateWindow: time.Second}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { brk.Close() })
	v, err := vault.Open(ctx, store, vault.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.AttachBroker(ctx, brk.JetStream(), 1); err != nil {
		t.Fatal(err)
	}
	cons, err := consent.New(ctx, store, v, brk.JetStream(), 1, log)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { cons.Run(runCtx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return &pipeline{brk: brk, store: store, vault: v, consent: cons, ingest: ingest.NewService(v, cons, brk, nil, log, nil)}
}

// run starts a coordinator with a runner and returns its stop function.
func (pl *pipeline) run(t testing.TB) func() {
	t.Helper()
	return pl.runWith(t, processor.RunnerConfig{Flush: 50 * time.Millisecond, DailyEvery: 200 * time.Millisecond})
}

// runWith is run with the runner's configuration.
func (pl *pipeline) runWith(t testing.TB, cfg processor.RunnerConfig) func() {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c, err := processor.NewCoordinator(ctx, pl.brk.JetStream(), processor.CoordinatorConfig{Partitions: 64, LeaseTTL: cmp.Or(pl.leaseTTL, 2*time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	r := processor.NewRunner(pl.brk.JetStream(), pl.store, pl.vault, pl.consent, cfg)
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, r) }()
	var stopped bool
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("coordinator: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

// waitApplied waits until user's partition has been checkpointed past the stream's end.
func (pl *pipeline) waitApplied(t *testing.T, user string) {
	t.Helper()
	ctx := context.Background()
	st, err := pl.brk.JetStream().Stream(ctx, broker.StreamSamples)
	if err != nil {
		t.Fatal(err)
	}
	last, err := st.GetLastMsgForSubject(ctx, broker.SampleSubject(broker.Partition(user, 64), user))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		cp, err := pl.store.Checkpoint(ctx, broker.Partition(user, 64))
		if err == nil && cp.Seq >= last.Sequence {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("partition of %s checkpointed at %d, want %d", user, cp.Seq, last.Sequence)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// moreSamples returns n random samples of the other types daily metrics read: activity
// intensity, RR intervals in bursts of successive beats, device resting heart rate and
// HRV, water, weight and mood — recent or weeks old, like randomSamples.
func moreSamples(rng *rand.Rand, n int, now time.Time) []pulsebase.SampleInput {
	var out []pulsebase.SampleInput
	for len(out) < n {
		ago := time.Duration(rng.Int64N(int64(2 * time.Hour)))
		if rng.IntN(4) == 0 {
			ago = time.Duration(rng.Int64N(int64(30 * 24 * time.Hour)))
		}
		start := now.Add(-ago - 45*time.Minute).Truncate(time.Second).In(time.FixedZone("", -6*3600))
		in := pulsebase.SampleInput{Start: start.Format(time.RFC3339), Source: "band"}
		switch rng.IntN(7) {
		case 0:
			in.Type, in.End = "activity_intensity", start.Add(time.Duration(1+rng.IntN(30))*time.Minute).Format(time.RFC3339)
			in.Value = json.RawMessage(`"` + []string{"sedentary", "light", "moderate", "vigorous"}[rng.IntN(4)] + `"`)
		case 1:
			beat := start
			for range 40 { // successive beats, some of them artifacts
				ms := 800 + rng.IntN(120)
				if rng.IntN(10) == 0 {
					ms = 1500
				}
				out = append(out, pulsebase.SampleInput{Type: "rr_interval", Value: json.RawMessage(fmt.Sprint(ms)), Start: beat.Format(time.RFC3339Nano), Source: "strap"})
				beat = beat.Add(time.Duration(ms) * time.Millisecond)
			}
			continue
		case 2:
			in.Type, in.Value = "resting_heart_rate", json.RawMessage(fmt.Sprint(48+rng.IntN(20)))
		case 3:
			in.Type, in.Value = "hrv_rmssd", json.RawMessage(fmt.Sprint(20+rng.IntN(80)))
		case 4:
			in.Type, in.Value = "water", json.RawMessage(fmt.Sprint(100+rng.IntN(400)))
		case 5:
			in.Type, in.Value = "body_weight", json.RawMessage(fmt.Sprint(60+rng.IntN(30)))
		default:
			in.Type, in.Value = "mood", json.RawMessage(fmt.Sprint(1+rng.IntN(5)))
		}
		out = append(out, in)
	}
	return out
}

func randomSamples(rng *rand.Rand, n int, now time.Time) []pulsebase.SampleInput {
	zones := []*time.Location{time.FixedZone("", -6*3600), time.FixedZone("", 5*3600+1800), time.UTC}
	var out []pulsebase.SampleInput
	for i := 0; i < n; i++ {
		// Within the last two hours, or days to weeks ago (the backfill path).
		ago := time.Duration(rng.Int64N(int64(2 * time.Hour)))
		if rng.IntN(4) == 0 {
			ago = time.Duration(rng.Int64N(int64(30 * 24 * time.Hour)))
		}
		start := now.Add(-ago - 45*time.Minute).Truncate(time.Second).In(zones[rng.IntN(len(zones))])
		switch rng.IntN(3) {
		case 0:
			out = append(out, pulsebase.SampleInput{Type: "heart_rate", Value: json.RawMessage(fmt.Sprint(50 + rng.IntN(60))),
				Start: start.Format(time.RFC3339), Source: "watch"})
		case 1:
			end := start.Add(time.Duration(1+rng.IntN(5)) * time.Minute)
			out = append(out, pulsebase.SampleInput{Type: "steps", Value: json.RawMessage(fmt.Sprint(rng.IntN(300))),
				Start: start.Format(time.RFC3339), End: end.Format(time.RFC3339), Source: "phone"})
		default:
			end := start.Add(time.Duration(1+rng.IntN(40)) * time.Minute)
			out = append(out, pulsebase.SampleInput{Type: "sleep_stage", Value: json.RawMessage(`"` + []string{"light", "deep", "rem", "awake"}[rng.IntN(4)] + `"`),
				Start: start.Format(time.RFC3339), End: end.Format(time.RFC3339), Source: "ring"})
		}
	}
	return out
}

// TestRunnerEqualsBatchComputation ingests random samples (recent and weeks old), with
// duplicates within batches, re-sends after the broker's duplicate window and a processor
// restart, and checks that the stored buckets equal agg.Buckets over the distinct samples.
func TestRunnerEqualsBatchComputation(t *testing.T) {
	for _, seed := range []uint64{3, 17, 29} {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) { runnerEqualsBatch(t, seed) })
	}
}

func runnerEqualsBatch(t *testing.T, seed uint64) {
	pl := newPipeline(t)
	ctx := context.Background()
	const user = "ualice"
	grantAll(t, pl, user)
	rng := rand.New(rand.NewPCG(seed, 4))
	now := time.Now()
	inputs := append(randomSamples(rng, 400, now), moreSamples(rng, 100, now)...)
	rng.Shuffle(len(inputs), func(i, j int) { inputs[i], inputs[j] = inputs[j], inputs[i] })
	post := func(in []pulsebase.SampleInput) {
		t.Helper()
		res, err := pl.ingest.Ingest(ctx, user, pulsebase.Principal{Subject: "alice", Role: pulsebase.RoleUser}, in)
		if err != nil || len(res.Rejected) > 0 {
			t.Fatalf("ingest: %+v, %v", res, err)
		}
	}
	stop := pl.run(t)
	post(append(inputs[:200:200], inputs[:20]...)) // with duplicates inside the batch
	pl.waitApplied(t, user)
	stop() // a processor restart halfway
	post(inputs[200:])
	time.Sleep(1100 * time.Millisecond) // past the broker's one-second duplicate window
	post(inputs[100:300])               // re-sends the broker no longer catches
	pl.run(t)
	pl.waitApplied(t, user)

	var distinct []pulsebase.Sample
	for _, in := range inputs {
		s, problems := pulsebase.Normalize(in, now)
		if len(problems) > 0 {
			t.Fatalf("bad generated sample: %v", problems)
		}
		distinct = append(distinct, s)
	}
	checked := pl.checkBuckets(t, user, distinct, "heart_rate", "steps", "sleep_stage")
	if checked < 100 {
		t.Errorf("checked only %d buckets", checked)
	}
	pl.waitDaily(t, user)
	if n := checkDaily(t, pl.storedDays(t, user), distinct); n < 100 {
		t.Errorf("compared only %d daily values", n)
	}
}

// checkBuckets compares user's stored buckets of types at every resolution with
// agg.Buckets over the distinct samples, and returns how many it compared.
func (pl *pipeline) checkBuckets(t *testing.T, user string, distinct []pulsebase.Sample, types ...string) int {
	t.Helper()
	ctx := context.Background()
	keys, err := pl.vault.UserKeys(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, typ := range types {
		for _, res := range []agg.Resolution{agg.Minute, agg.Hour, agg.Day} {
			want := agg.Buckets(distinct, typ, res)
			recs, err := pl.store.DerivedRecords(ctx, user, processor.KindBucket, typ+"/"+res.String()+"/", typ+"/"+res.String()+"/~")
			if err != nil {
				t.Fatal(err)
			}
			got := map[int64]agg.Point{}
			for _, r := range recs {
				cs, err := processor.OpenBuckets(keys, r.Key, r.Ciphertext)
				if err != nil {
					t.Fatal(err)
				}
				for _, c := range cs {
					got[c.Point.Start.Unix()] = c.Point
				}
			}
			if len(got) != len(want) {
				t.Errorf("%s %s: got %d buckets, want %d", typ, res, len(got), len(want))
				continue
			}
			for _, w := range want {
				g, ok := got[w.Start.Unix()]
				if !ok {
					t.Errorf("%s %s: no bucket at %s", typ, res, w.Start)
					continue
				}
				checked++
				if g.Count != w.Count || !near(g.Sum, w.Sum) || g.Min != w.Min || g.Max != w.Max || g.Last != w.Last {
					t.Errorf("%s %s %s: got %+v, want %+v", typ, res, w.Start, g, w)
				}
				for l, m := range w.Minutes {
					if !near(g.Minutes[l], m) {
						t.Errorf("%s %s %s: %s minutes got %v, want %v", typ, res, w.Start, l, g.Minutes[l], m)
					}
				}
			}
		}
	}
	return checked
}

// dayBuckets returns user's stored day buckets of typ by local date.
func (pl *pipeline) dayBuckets(t *testing.T, user, typ string) map[string]agg.Point {
	t.Helper()
	ctx := context.Background()
	keys, err := pl.vault.UserKeys(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := pl.store.DerivedRecords(ctx, user, processor.KindBucket, typ+"/1d/", typ+"/1d/~")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]agg.Point{}
	for _, r := range recs {
		cs, err := processor.OpenBuckets(keys, r.Key, r.Ciphertext)
		if err != nil || len(cs) != 1 {
			t.Fatal(len(cs), err)
		}
		out[cs[0].Date] = cs[0].Point
	}
	return out
}

func near(a, b float64) bool {
	return math.Abs(a-b) <= 1e-9*math.Max(1, math.Max(math.Abs(a), math.Abs(b)))
}

// TestFailoverKeepsResultsExact runs three processors over 64 partitions, stops one while
// samples for many users keep arriving, and checks that every partition is owned again and
// that every user's day totals equal the batch computation over the distinct samples.
func TestFailoverKeepsResultsExact(t *testing.T) {
	pl := newPipeline(t)
	ctx := context.Background()
	var users []string
	for i := 0; i < 24; i++ {
		u := fmt.Sprintf("ufailover%02d", i)
		users = append(users, u)
		if _, err := pl.consent.Set(ctx, u, pulsebase.Consent{
			Collect:  map[pulsebase.Category]bool{pulsebase.CategoryHeart: true, pulsebase.CategoryActivity: true, pulsebase.CategorySleep: true},
			Purposes: map[pulsebase.Purpose]bool{pulsebase.PurposePersonalization: true},
		}, pulsebase.Actor{Role: pulsebase.RoleUser}); err != nil {
			t.Fatal(err)
		}
	}
	stops := []func(){pl.run(t), pl.run(t), pl.run(t)}
	rng := rand.New(rand.NewPCG(5, 6))
	now := time.Now()
	sent := map[string][]pulsebase.SampleInput{}
	post := func(round int) {
		for _, u := range users {
			in := randomSamples(rng, 20, now)
			sent[u] = append(sent[u], in...)
			if round > 0 { // re-send part of the previous round too
				in = append(in, sent[u][:10]...)
			}
			if res, err := pl.ingest.Ingest(ctx, u, pulsebase.Principal{Subject: u, Role: pulsebase.RoleUser}, in); err != nil || len(res.Rejected) > 0 {
				t.Fatalf("ingest: %+v %v", res, err)
			}
		}
	}
	post(0)
	stops[1]() // a processor leaves while work is in flight
	post(1)
	post(2)
	for _, u := range users {
		pl.waitApplied(t, u)
	}
	keys := map[string]bool{}
	for _, u := range users {
		var distinct []pulsebase.Sample
		for _, in := range sent[u] {
			s, _ := pulsebase.Normalize(in, now)
			distinct = append(distinct, s)
		}
		for _, typ := range []string{"heart_rate", "steps"} {
			want := agg.Buckets(distinct, typ, agg.Day)
			got := pl.dayBuckets(t, u, typ)
			if len(got) != len(want) {
				t.Fatalf("%s %s: got %d day buckets, want %d", u, typ, len(got), len(want))
			}
			for _, w := range want {
				date := w.Start.Format(agg.DateLayout)
				if g := got[date]; g.Count != w.Count || !near(g.Sum, w.Sum) {
					t.Errorf("%s %s %s: got count %d sum %v, want %d %v", u, typ, date, g.Count, g.Sum, w.Count, w.Sum)
				}
				keys[u] = true
			}
		}
	}
	if len(keys) != len(users) {
		t.Errorf("checked %d users, want %d", len(keys), len(users))
	}
}

// TestTravellerKeepsLocalDays: a user who flies from -05:00 to +01:00 mid-week gets day
// totals on the local days of each sample's own clock.
func TestTravellerKeepsLocalDays(t *testing.T) {
	pl := newPipeline(t)
	pl.run(t)
	ctx := context.Background()
	const user = "utraveller"
	if _, err := pl.consent.Set(ctx, user, pulsebase.Consent{
		Collect:  map[pulsebase.Category]bool{pulsebase.CategoryActivity: true},
		Purposes: map[pulsebase.Purpose]bool{pulsebase.PurposePersonalization: true},
	}, pulsebase.Actor{Role: pulsebase.RoleUser}); err != nil {
		t.Fatal(err)
	}
	west, east := time.FixedZone("", -5*3600), time.FixedZone("", 3600)
	base := time.Now().Add(-6 * 24 * time.Hour)
	var in []pulsebase.SampleInput
	want := map[string]float64{}
	for d := 0; d < 6; d++ {
		zone := west
		if d >= 3 { // the flight
			zone = east
		}
		day := time.Date(base.Year(), base.Month(), base.Day()+d, 0, 0, 0, 0, zone)
		// 100 steps at 00:30 and 200 at 23:30 local: both on this local day whatever UTC says.
		for _, s := range []struct {
			at    time.Duration
			steps int
		}{{30 * time.Minute, 100}, {23*time.Hour + 30*time.Minute, 200}} {
			start := day.Add(s.at)
			if start.After(time.Now().Add(-time.Hour)) {
				continue
			}
			in = append(in, pulsebase.SampleInput{Type: "steps", Value: json.RawMessage(fmt.Sprint(s.steps)), Source: "phone",
				Start: start.Format(time.RFC3339), End: start.Add(time.Minute).Format(time.RFC3339)})
			want[day.Format("2006-01-02")] += float64(s.steps)
		}
	}
	if res, err := pl.ingest.Ingest(ctx, user, pulsebase.Principal{Subject: "t", Role: pulsebase.RoleUser}, in); err != nil || len(res.Rejected) > 0 {
		t.Fatalf("ingest: %+v %v", res.Rejected, err)
	}
	pl.waitApplied(t, user)
	got := map[string]float64{}
	for date, p := range pl.dayBuckets(t, user, "steps") {
		got[date] = p.Sum
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got day totals %v, want %v", got, want)
	}
}
