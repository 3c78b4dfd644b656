package broker

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// openBroker opens a broker and closes it at the end of the test.
func openBroker(t testing.TB, cfg Config) *Broker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := Open(ctx, cfg, testLogger(t))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func batch(prefix string, n, size int) []Message {
	msgs := make([]Message, n)
	for i := range msgs {
		data := make([]byte, size)
		rand.Read(data)
		msgs[i] = Message{ID: fmt.Sprintf("%s-%d", prefix, i), Data: data}
	}
	return msgs
}

func streamConfig(t *testing.T, b *Broker, name string) jetstream.StreamConfig {
	t.Helper()
	s, err := b.JetStream().Stream(testCtx(t), name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	return s.CachedInfo().Config
}

func streamMsgs(t *testing.T, b *Broker, name string) uint64 {
	t.Helper()
	s, err := b.JetStream().Stream(testCtx(t), name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	return s.CachedInfo().State.Msgs
}

func TestOpenCreatesStreams(t *testing.T) {
	b := openBroker(t, Config{DataDir: t.TempDir()})
	if err := b.Ready(testCtx(t)); err != nil {
		t.Fatalf("Ready: %v", err)
	}

	s := streamConfig(t, b, StreamSamples)
	if got, want := s.Subjects, []string{"samples.in.*"}; !slices.Equal(got, want) {
		t.Errorf("SAMPLES subjects = %v, want %v", got, want)
	}
	if s.SubjectTransform == nil {
		t.Fatal("SAMPLES has no subject transform")
	}
	if got, want := *s.SubjectTransform, (jetstream.SubjectTransformConfig{
		Source: "samples.in.*", Destination: "samples.{{partition(64,1)}}.{{wildcard(1)}}",
	}); got != want {
		t.Errorf("SAMPLES transform = %+v, want %+v", got, want)
	}
	checks := []struct {
		name string
		got  any
		want any
	}{
		{"SAMPLES storage", s.Storage, jetstream.FileStorage},
		{"SAMPLES retention", s.Retention, jetstream.LimitsPolicy},
		{"SAMPLES discard", s.Discard, jetstream.DiscardOld},
		{"SAMPLES max age", s.MaxAge, DefaultSampleRetention},
		{"SAMPLES duplicates", s.Duplicates, DefaultDuplicateWindow},
		{"SAMPLES replicas", s.Replicas, 1},
		{"SAMPLES max msg size", s.MaxMsgSize, int32(MaxSampleSize)},
	}

	c := streamConfig(t, b, StreamChanges)
	d := streamConfig(t, b, StreamDeadLetter)
	checks = append(checks, []struct {
		name string
		got  any
		want any
	}{
		{"CHANGES subjects", strings.Join(c.Subjects, ","), "changes.*"},
		{"CHANGES storage", c.Storage, jetstream.FileStorage},
		{"CHANGES max age", c.MaxAge, DefaultChangeRetention},
		{"CHANGES duplicates", c.Duplicates, 2 * time.Minute},
		{"CHANGES replicas", c.Replicas, 1},
		{"CHANGES transform", c.SubjectTransform == nil, true},
		{"DEADLETTER subjects", strings.Join(d.Subjects, ","), "deadletter.>"},
		{"DEADLETTER storage", d.Storage, jetstream.FileStorage},
		{"DEADLETTER max age", d.MaxAge, 30 * 24 * time.Hour},
	}...)
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestConfigOverrides(t *testing.T) {
	b := openBroker(t, Config{
		DataDir:         t.TempDir(),
		Partitions:      7,
		SampleRetention: 48 * time.Hour,
		ChangeRetention: 24 * time.Hour,
		DuplicateWindow: time.Minute,
		SyncAlways:      true,
	})
	s := streamConfig(t, b, StreamSamples)
	if got, want := s.SubjectTransform.Destination, "samples.{{partition(7,1)}}.{{wildcard(1)}}"; got != want {
		t.Errorf("transform destination = %q, want %q", got, want)
	}
	if s.MaxAge != 48*time.Hour || s.Duplicates != time.Minute {
		t.Errorf("SAMPLES max age, duplicates = %v, %v; want 48h, 1m", s.MaxAge, s.Duplicates)
	}
	if got := streamConfig(t, b, StreamChanges).MaxAge; got != 24*time.Hour {
		t.Errorf("CHANGES max age = %v, want 24h", got)
	}
	if b.Partitions() != 7 {
		t.Errorf("Partitions() = %d, want 7", b.Partitions())
	}
}

func TestConfigInvalid(t *testing.T) {
	for _, cfg := range []Config{
		{},                                 // no data dir, no URL
		{DataDir: "x", Partitions: -1},     // negative
		{DataDir: "x", Partitions: 5000},   // too many
		{DataDir: "x", Replicas: 7},        // too many
		{DataDir: "x", ListenAddr: "nope"}, // no port
		{DataDir: "x", DuplicateWindow: time.Hour, SampleRetention: time.Minute},
	} {
		b, err := Open(testCtx(t), cfg, nil)
		if err == nil {
			b.Close()
			t.Errorf("Open(%+v) succeeded, want error", cfg)
		}
	}
}

// TestPartitionMatchesTransform publishes for many users and finds each
// sample on the subject Partition predicts, so Partition and the server's
// partition() agree.
func TestPartitionMatchesTransform(t *testing.T) {
	for _, n := range []int{64, 7, 1} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			b := openBroker(t, Config{DataDir: t.TempDir(), Partitions: n})
			ctx := testCtx(t)
			users := make([]string, 300)
			for i := range users {
				switch i % 3 {
				case 0:
					users[i] = fmt.Sprintf("u%d", i)
				case 1:
					users[i] = rand.Text()
				default:
					users[i] = fmt.Sprintf("01J%08dXYZ-_~%d", i*7919, i)
				}
			}
			for _, u := range users {
				if _, err := b.PublishSamples(ctx, u, []Message{{ID: "id-" + u, Data: []byte(u)}}); err != nil {
					t.Fatal(err)
				}
			}
			s, err := b.JetStream().Stream(ctx, StreamSamples)
			if err != nil {
				t.Fatal(err)
			}
			perPartition := map[int]int{}
			for _, u := range users {
				p := Partition(u, n)
				perPartition[p]++
				subj := SampleSubject(p, u)
				m, err := s.GetLastMsgForSubject(ctx, subj)
				if err != nil {
					t.Fatalf("user %q: no message on %s (Partition = %d): %v", u, subj, p, err)
				}
				if string(m.Data) != u {
					t.Errorf("message on %s = %q, want %q", subj, m.Data, u)
				}
			}

			// A consumer filtering one partition sees exactly that
			// partition's users: the server accepts the post-transform
			// filter even though it matches no configured stream subject.
			p := Partition(users[0], n)
			cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
				FilterSubjects: []string{PartitionFilter(p)},
			})
			if err != nil {
				t.Fatalf("ordered consumer on %s: %v", PartitionFilter(p), err)
			}
			got := 0
			for got < perPartition[p] {
				mb, err := cons.Fetch(perPartition[p]-got, jetstream.FetchMaxWait(5*time.Second))
				if err != nil {
					t.Fatal(err)
				}
				for m := range mb.Messages() {
					gp, u, ok := ParseSampleSubject(m.Subject())
					if !ok || gp != p || Partition(u, n) != p || string(m.Data()) != u {
						t.Errorf("partition %d consumer got %q (data %q)", p, m.Subject(), m.Data())
					}
					got++
				}
				if err := mb.Error(); err != nil {
					t.Fatal(err)
				}
			}
			info, err := s.Info(ctx, jetstream.WithSubjectFilter(PartitionFilter(p)))
			if err != nil {
				t.Fatal(err)
			}
			// With a subject filter, State.Msgs is still the whole stream's
			// count; the filter only selects State.Subjects.
			var inPartition uint64
			for _, c := range info.State.Subjects {
				inPartition += c
			}
			if int(inPartition) != perPartition[p] {
				t.Errorf("partition %d holds %d messages, want %d", p, inPartition, perPartition[p])
			}
		})
	}
}

func TestPartitionKnownValues(t *testing.T) {
	// FNV-1a 32 reference values, so a change to Partition shows up even
	// without a server: fnv32a("") = 0x811c9dc5, fnv32a("a") = 0xe40c292c.
	for _, tt := range []struct {
		user string
		n    int
		want int
	}{
		{"", 64, 0x811c9dc5 % 64},
		{"a", 64, 0xe40c292c % 64},
		{"a", 1, 0},
		{"a", 0, 0},
	} {
		if got := Partition(tt.user, tt.n); got != tt.want {
			t.Errorf("Partition(%q, %d) = %d, want %d", tt.user, tt.n, got, tt.want)
		}
	}
}

func TestPublishResultsInOrder(t *testing.T) {
	b := openBroker(t, Config{DataDir: t.TempDir()})
	ctx := testCtx(t)
	msgs := batch("order", 1000, 100)
	hdr := nats.Header{"Pulsebase-Kind": []string{"hr"}}
	msgs[0].Header = hdr
	res, err := b.PublishSamples(ctx, "alice", msgs)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != len(msgs) {
		t.Fatalf("got %d results, want %d", len(res), len(msgs))
	}
	for i, r := range res {
		if r.Seq != uint64(i+1) || r.Duplicate {
			t.Fatalf("result %d = %+v, want seq %d, not duplicate", i, r, i+1)
		}
	}
	if len(hdr) != 1 {
		t.Errorf("caller's header was modified: %v", hdr)
	}
	s, _ := b.JetStream().Stream(ctx, StreamSamples)
	m, err := s.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get("Pulsebase-Kind") != "hr" || m.Header.Get(jetstream.MsgIDHeader) != "order-0" {
		t.Errorf("stored headers = %v, want Pulsebase-Kind and Nats-Msg-Id", m.Header)
	}
}

func TestPublishRejectsBadInput(t *testing.T) {
	b := openBroker(t, Config{DataDir: t.TempDir()})
	ctx := testCtx(t)
	for _, tt := range []struct {
		name string
		user string
		msgs []Message
	}{
		{"empty user", "", batch("x", 1, 1)},
		{"dot in user", "a.b", batch("x", 1, 1)},
		{"wildcard user", "*", batch("x", 1, 1)},
		{"space in user", "a b", batch("x", 1, 1)},
		{"missing id", "alice", []Message{{ID: "ok", Data: []byte("1")}, {Data: []byte("2")}}},
		{"too large", "alice", []Message{{ID: "big", Data: make([]byte, MaxSampleSize+1)}}},
	} {
		if _, err := b.PublishSamples(ctx, tt.user, tt.msgs); err == nil {
			t.Errorf("%s: PublishSamples succeeded, want error", tt.name)
		}
	}
	// Validation happens before anything is published.
	if n := streamMsgs(t, b, StreamSamples); n != 0 {
		t.Errorf("SAMPLES holds %d messages after rejected batches, want 0", n)
	}
}

func TestPublishContextCanceled(t *testing.T) {
	b := openBroker(t, Config{DataDir: t.TempDir()})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := b.PublishSamples(ctx, "alice", batch("c", 10, 10))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("PublishSamples with canceled ctx: err = %v, want context.Canceled", err)
	}
}

func TestDuplicatesAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := testCtx(t)
	msgs := batch("dup", 50, 64)

	b, err := Open(ctx, Config{DataDir: dir}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	first, err := b.PublishSamples(ctx, "bob", msgs)
	if err != nil {
		t.Fatal(err)
	}
	// A re-sent batch with some new messages mixed in.
	resend := append(slices.Clone(msgs[:25]), batch("new", 5, 64)...)
	res, err := b.PublishSamples(ctx, "bob", resend)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		wantDup := i < 25
		if r.Duplicate != wantDup {
			t.Errorf("before restart: result %d duplicate = %v, want %v", i, r.Duplicate, wantDup)
		}
		if wantDup && r.Seq != first[i].Seq {
			t.Errorf("before restart: duplicate %d seq = %d, want original %d", i, r.Seq, first[i].Seq)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	// After a restart the server rebuilds its ID map from the stored
	// messages' headers, so re-sends are still caught.
	b = openBroker(t, Config{DataDir: dir})
	res, err = b.PublishSamples(ctx, "bob", msgs)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if !r.Duplicate || r.Seq != first[i].Seq {
			t.Errorf("after restart: result %d = %+v, want duplicate of seq %d", i, r, first[i].Seq)
		}
	}
	if n := streamMsgs(t, b, StreamSamples); n != 55 {
		t.Errorf("SAMPLES holds %d messages, want 55", n)
	}
}

// TestDuplicateScopeIsStream documents that Msg-Id dedupe is per stream,
// not per subject: the same ID from two users is one message.
func TestDuplicateScopeIsStream(t *testing.T) {
	b := openBroker(t, Config{DataDir: t.TempDir()})
	ctx := testCtx(t)
	m := []Message{{ID: "same", Data: []byte("x")}}
	if _, err := b.PublishSamples(ctx, "alice", m); err != nil {
		t.Fatal(err)
	}
	res, err := b.PublishSamples(ctx, "bob", m)
	if err != nil {
		t.Fatal(err)
	}
	if !res[0].Duplicate {
		t.Errorf("same ID from another user: duplicate = false; dedupe scope changed, update Message.ID docs")
	}
}

func TestReopenKeepsMessagesAndConfig(t *testing.T) {
	dir := t.TempDir()
	ctx := testCtx(t)
	b, err := Open(ctx, Config{DataDir: dir}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.PublishSamples(ctx, "carol", batch("keep", 20, 32)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.JetStream().Publish(ctx, ChangeSubject("carol"), []byte("c1")); err != nil {
		t.Fatal(err)
	}
	before := map[string]jetstream.StreamConfig{}
	for _, name := range []string{StreamSamples, StreamChanges, StreamDeadLetter} {
		before[name] = streamConfig(t, b, name)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}

	b = openBroker(t, Config{DataDir: dir})
	if n := streamMsgs(t, b, StreamSamples); n != 20 {
		t.Errorf("SAMPLES after reopen holds %d messages, want 20", n)
	}
	if n := streamMsgs(t, b, StreamChanges); n != 1 {
		t.Errorf("CHANGES after reopen holds %d messages, want 1", n)
	}
	for name, want := range before {
		got := streamConfig(t, b, name)
		// Metadata carries server version stamps that may legitimately differ.
		got.Metadata, want.Metadata = nil, nil
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s config changed on reopen:\n got %+v\nwant %+v", name, got, want)
		}
	}
	// New samples continue the sequence.
	res, err := b.PublishSamples(ctx, "carol", batch("more", 1, 32))
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Seq != 21 {
		t.Errorf("first sample after reopen seq = %d, want 21", res[0].Seq)
	}
}

func TestPartitionCountIsFixed(t *testing.T) {
	dir := t.TempDir()
	ctx := testCtx(t)
	b, err := Open(ctx, Config{DataDir: dir}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	b.Close()

	b, err = Open(ctx, Config{DataDir: dir, Partitions: 32}, testLogger(t))
	if err == nil {
		b.Close()
		t.Fatal("Open with 32 partitions over a 64-partition stream succeeded")
	}
	if !errors.Is(err, ErrPartitionMismatch) || !strings.Contains(err.Error(), "64") {
		t.Errorf("err = %v, want ErrPartitionMismatch naming 64", err)
	}

	// The failed Open left the stream alone and released the store.
	b = openBroker(t, Config{DataDir: dir, Partitions: 64})
	if got := streamConfig(t, b, StreamSamples).SubjectTransform.Destination; !strings.Contains(got, "partition(64,1)") {
		t.Errorf("transform after failed repartition = %q", got)
	}
}

func TestEmbeddedHasNoListener(t *testing.T) {
	b := openBroker(t, Config{DataDir: t.TempDir()})
	if addr := b.srv.Addr(); addr != nil {
		t.Errorf("embedded server listens on %v, want no listener", addr)
	}
	if u := b.ClientURL(); u != "" {
		t.Errorf("ClientURL() = %q, want empty", u)
	}
	if !b.Conn().IsConnected() {
		t.Error("in-process connection not connected")
	}
}

// TestListenAndExternal exposes the embedded server on a port and opens a
// second Broker in external mode against it, which covers external mode
// against a real server.
func TestListenAndExternal(t *testing.T) {
	emb := openBroker(t, Config{DataDir: t.TempDir(), ListenAddr: "127.0.0.1:0"})
	url := emb.ClientURL()
	if url == "" {
		t.Fatal("ClientURL() empty with ListenAddr set")
	}
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(url, "nats://"), 5*time.Second)
	if err != nil {
		t.Fatalf("dial embedded listener: %v", err)
	}
	conn.Close()

	ext := openBroker(t, Config{URL: url})
	if ext.srv != nil {
		t.Fatal("external mode started a server")
	}
	ctx := testCtx(t)
	if err := ext.Ready(ctx); err != nil {
		t.Fatalf("external Ready: %v", err)
	}
	if got := ext.Conn().ConnectedUrl(); got != url {
		t.Errorf("external connected to %q, want %q", got, url)
	}
	res, err := ext.PublishSamples(ctx, "dave", batch("ext", 10, 32))
	if err != nil {
		t.Fatal(err)
	}
	if res[9].Seq != 10 {
		t.Errorf("last seq = %d, want 10", res[9].Seq)
	}
	// Seen through the embedded side: same streams, same partitioning.
	s, err := emb.JetStream().Stream(ctx, StreamSamples)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(ctx, SampleSubject(Partition("dave", 64), "dave"))
	if err != nil {
		t.Fatal(err)
	}
	if m.Sequence != 10 {
		t.Errorf("last message for dave seq = %d, want 10", m.Sequence)
	}
	// External mode must not repartition either.
	if _, err := Open(ctx, Config{URL: url, Partitions: 8}, testLogger(t)); !errors.Is(err, ErrPartitionMismatch) {
		t.Errorf("external Open with 8 partitions: err = %v, want ErrPartitionMismatch", err)
	}
}

func TestExternalUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens here now
	if b, err := Open(testCtx(t), Config{URL: "nats://" + addr}, testLogger(t)); err == nil {
		b.Close()
		t.Fatal("Open against a closed port succeeded")
	}
}

func TestConcurrentPublishers(t *testing.T) {
	b := openBroker(t, Config{DataDir: t.TempDir()})
	ctx := testCtx(t)
	const publishers, batches, size = 8, 5, 500
	var wg sync.WaitGroup
	errs := make(chan error, publishers)
	for p := range publishers {
		wg.Go(func() {
			user := fmt.Sprintf("user%d", p)
			for i := range batches {
				res, err := b.PublishSamples(ctx, user, batch(fmt.Sprintf("%s-%d", user, i), size, 300))
				if err != nil {
					errs <- err
					return
				}
				for j := 1; j < len(res); j++ {
					if res[j].Seq <= res[j-1].Seq || res[j].Duplicate {
						errs <- fmt.Errorf("%s batch %d: result %d = %+v after %+v", user, i, j, res[j], res[j-1])
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := streamMsgs(t, b, StreamSamples); n != publishers*batches*size {
		t.Errorf("SAMPLES holds %d messages, want %d", n, publishers*batches*size)
	}
}

func BenchmarkPublishSamples(b *testing.B) {
	for _, publishers := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("publishers=%d", publishers), func(b *testing.B) {
			benchmarkPublish(b, Config{DataDir: b.TempDir()}, publishers)
		})
	}
}

func BenchmarkPublishInflight(b *testing.B) {
	defer func(v int) { publishInflight = v }(publishInflight)
	for _, n := range []int{1000, 2000, 4096, 8192, 16384} {
		publishInflight = n
		b.Run(fmt.Sprintf("inflight=%d", n), func(b *testing.B) {
			benchmarkPublish(b, Config{DataDir: b.TempDir()}, 8)
		})
	}
}

// BenchmarkPublishTCP publishes over loopback TCP (external mode against the
// embedded server) to compare with the in-process pipe.
func BenchmarkPublishTCP(b *testing.B) {
	emb := openBroker(b, Config{DataDir: b.TempDir(), ListenAddr: "127.0.0.1:0"})
	benchmarkPublish(b, Config{URL: emb.ClientURL()}, 8)
}

// benchmarkPublish runs b.N batches of 500 × 300-byte samples spread over
// publishers goroutines, each publishing for its own users as concurrent
// HTTP handlers would.
func benchmarkPublish(b *testing.B, cfg Config, publishers int) {
	const batchSize, msgSize = 500, 300
	br := openBroker(b, cfg)
	ctx := context.Background()
	data := make([]byte, msgSize)
	rand.Read(data)
	var (
		mu   sync.Mutex
		next int
	)
	take := func() (int, bool) {
		mu.Lock()
		defer mu.Unlock()
		if next >= b.N {
			return 0, false
		}
		next++
		return next - 1, true
	}
	b.ResetTimer()
	cpu0 := processCPU(b)
	start := time.Now()
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			msgs := make([]Message, batchSize)
			for {
				n, ok := take()
				if !ok {
					return
				}
				for i := range msgs {
					msgs[i] = Message{ID: fmt.Sprintf("%d-%d", n, i), Data: data}
				}
				if _, err := br.PublishSamples(ctx, fmt.Sprintf("user%d-%d", p, n%100), msgs); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	n := float64(b.N * batchSize)
	b.ReportMetric(n/elapsed.Seconds(), "msgs/s")
	// CPU per message (client and embedded server together) is steadier
	// than msgs/s on a shared machine: throughput on an idle 2-core box is
	// about 2 CPU-seconds divided by this.
	b.ReportMetric(float64(processCPU(b)-cpu0)/n, "cpu-ns/msg")
}

// processCPU returns the user+system CPU time this process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestPublishFailureReported drives the async error path: a subject no
// stream listens on gets no-responders from the server, the client gives up
// after its retries, and the waiting chunk must return that error rather
// than hang until its context ends.
func TestPublishFailureReported(t *testing.T) {
	b := openBroker(t, Config{DataDir: t.TempDir()})
	msgs := batch("lost", 3, 8)
	res := make([]PubResult, len(msgs))
	err := b.publishChunk(testCtx(t), "nostream.alice", msgs, res)
	if !errors.Is(err, jetstream.ErrNoStreamResponse) {
		t.Fatalf("publish to a subject without stream: err = %v, want ErrNoStreamResponse", err)
	}
	// The broker is still usable afterwards.
	if _, err := b.PublishSamples(testCtx(t), "alice", batch("ok", 3, 8)); err != nil {
		t.Fatal(err)
	}
}
