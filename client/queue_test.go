//go:build unix

package client

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
)

func openQueue(t testing.TB, path string) *Queue {
	t.Helper()
	q, err := OpenQueue(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

func mustAppend(t testing.TB, q *Queue, kind string, data []byte) uint64 {
	t.Helper()
	seq, err := q.Append(kind, data)
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

func mustAck(t testing.TB, q *Queue, seq uint64) {
	t.Helper()
	if err := q.Ack(seq); err != nil {
		t.Fatal(err)
	}
}

func mustReopen(t testing.TB, q *Queue) *Queue {
	t.Helper()
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	return openQueue(t, q.path)
}

func fileSize(t testing.TB, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// checkPending compares the pending entries of q with want.
func checkPending(t testing.TB, q *Queue, want []QueueEntry) {
	t.Helper()
	got := q.Pending()
	if len(got) != len(want) || q.Len() != len(want) {
		t.Fatalf("got %d pending (Len %d): %v, want %d: %v", len(got), q.Len(), seqs(got), len(want), seqs(want))
	}
	for i := range want {
		if got[i].Seq != want[i].Seq || got[i].Kind != want[i].Kind || !bytes.Equal(got[i].Data, want[i].Data) {
			t.Fatalf("pending[%d]: got {%d %q %q}, want {%d %q %q}", i,
				got[i].Seq, got[i].Kind, got[i].Data, want[i].Seq, want[i].Kind, want[i].Data)
		}
	}
}

func seqs(es []QueueEntry) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.Seq
	}
	return out
}

func TestQueueRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a", "b", "queue")
	q := openQueue(t, path)
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("queue file: got %v, %v, want mode 0600", fi, err)
	}
	checkPending(t, q, nil)

	buf := []byte(`{"samples":[1]}`)
	var want []QueueEntry
	for i, kind := range []string{"samples", "ops", "samples"} {
		data := slices.Clone(buf)
		seq := mustAppend(t, q, kind, buf)
		if seq != uint64(i+1) {
			t.Fatalf("append %d: got seq %d, want %d", i, seq, i+1)
		}
		want = append(want, QueueEntry{Seq: seq, Kind: kind, Data: data})
		buf[len(buf)-3]++ // the queue must have copied buf
	}
	checkPending(t, q, want)
	q.Pending()[0].Data[0] = 'X' // nor may callers change what Pending returns
	checkPending(t, q, want)

	q = mustReopen(t, q)
	checkPending(t, q, want)
	if seq := mustAppend(t, q, "ops", []byte("[]")); seq != 4 {
		t.Fatalf("append after reopen: got seq %d, want 4", seq)
	}
}

func TestQueueAck(t *testing.T) {
	q := openQueue(t, filepath.Join(t.TempDir(), "queue"))
	var want []QueueEntry
	for i := range 6 {
		data := fmt.Appendf(nil, "entry %d", i)
		want = append(want, QueueEntry{Seq: mustAppend(t, q, "samples", data), Kind: "samples", Data: data})
	}
	mustAck(t, q, 5)
	mustAck(t, q, 2)
	mustAck(t, q, 2)  // again: no-op
	mustAck(t, q, 99) // unknown: no-op
	mustAck(t, q, 0)
	want = slices.Delete(want, 4, 5)
	want = slices.Delete(want, 1, 2)
	checkPending(t, q, want)

	size := fileSize(t, q.path)
	mustAck(t, q, 2)
	if got := fileSize(t, q.path); got != size {
		t.Fatalf("acking an acked seq wrote to the file: size %d, want %d", got, size)
	}

	q = mustReopen(t, q)
	checkPending(t, q, want)
	for _, seq := range []uint64{6, 1, 4, 3} {
		mustAck(t, q, seq)
	}
	checkPending(t, q, nil)
	q = mustReopen(t, q)
	checkPending(t, q, nil)
	if seq := mustAppend(t, q, "ops", nil); seq != 7 {
		t.Fatalf("append after acking all: got seq %d, want 7", seq)
	}
}

func TestQueueLimits(t *testing.T) {
	q := openQueue(t, filepath.Join(t.TempDir(), "queue"))
	for _, kind := range []string{"", string(make([]byte, 33))} {
		if _, err := q.Append(kind, nil); err == nil {
			t.Errorf("append kind of %d bytes: got no error", len(kind))
		}
	}
	if _, err := q.Append("samples", make([]byte, MaxQueueData+1)); !errors.Is(err, ErrQueueEntryTooLarge) {
		t.Errorf("append MaxQueueData+1 bytes: got %v, want ErrQueueEntryTooLarge", err)
	}
	checkPending(t, q, nil)

	big := bytes.Repeat([]byte("x"), MaxQueueData)
	kind := string(bytes.Repeat([]byte("k"), 32))
	seq := mustAppend(t, q, kind, big)
	q = mustReopen(t, q)
	checkPending(t, q, []QueueEntry{{Seq: seq, Kind: kind, Data: big}})
}

func TestQueueClose(t *testing.T) {
	q := openQueue(t, filepath.Join(t.TempDir(), "queue"))
	mustAppend(t, q, "ops", []byte("1"))
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatalf("second close: got %v, want nil", err)
	}
	if _, err := q.Append("ops", nil); !errors.Is(err, ErrQueueClosed) {
		t.Errorf("append after close: got %v, want ErrQueueClosed", err)
	}
	if err := q.Ack(1); !errors.Is(err, ErrQueueClosed) {
		t.Errorf("ack after close: got %v, want ErrQueueClosed", err)
	}
	if n := q.Len(); n != 0 {
		t.Errorf("Len after close: got %d, want 0", n)
	}
}

func TestQueueLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "queue")
	q := openQueue(t, path)
	if q2, err := OpenQueue(path); !errors.Is(err, ErrQueueLocked) {
		if q2 != nil {
			q2.Close()
		}
		t.Fatalf("second open: got %v, want ErrQueueLocked", err)
	}
	q.Close()
	openQueue(t, path)
}

func TestQueueEmptyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "queue")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	q := openQueue(t, path)
	if seq := mustAppend(t, q, "ops", []byte("x")); seq != 1 {
		t.Fatalf("got seq %d, want 1", seq)
	}
}

func TestQueueNotAQueue(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.json")
	content := []byte(`{"not": "a queue"}`)
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenQueue(path); !errors.Is(err, ErrQueueCorrupt) {
		t.Fatalf("got %v, want ErrQueueCorrupt", err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, content) {
		t.Fatalf("OpenQueue changed a file that is not a queue: %q", got)
	}
}

// buildQueue writes a queue of the given entries, acking those in ack after all appends,
// and returns the entries and the file size after each write (sizes[0] is the new file).
func buildQueue(t *testing.T, path string, n int, ack ...uint64) (entries []QueueEntry, sizes []int64) {
	t.Helper()
	q := openQueue(t, path)
	sizes = append(sizes, fileSize(t, path))
	for i := range n {
		kind := []string{"samples", "ops"}[i%2]
		data := bytes.Repeat(fmt.Appendf(nil, "%d", i), 10+i)
		entries = append(entries, QueueEntry{Seq: mustAppend(t, q, kind, data), Kind: kind, Data: data})
		sizes = append(sizes, fileSize(t, path))
	}
	for _, seq := range ack {
		mustAck(t, q, seq)
		sizes = append(sizes, fileSize(t, path))
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	return entries, sizes
}

func TestQueueTornTail(t *testing.T) {
	for _, tc := range []struct {
		name string
		n    int
		ack  []uint64
		want []uint64 // pending seqs once the last write is torn
	}{
		{"entry", 3, nil, []uint64{1, 2}},
		{"only entry", 1, nil, nil},
		{"ack", 3, []uint64{2}, []uint64{1, 2, 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			entries, sizes := buildQueue(t, filepath.Join(dir, "orig"), tc.n, tc.ack...)
			orig, err := os.ReadFile(filepath.Join(dir, "orig"))
			if err != nil {
				t.Fatal(err)
			}
			var want []QueueEntry
			for _, e := range entries {
				if slices.Contains(tc.want, e.Seq) {
					want = append(want, e)
				}
			}
			last := sizes[len(sizes)-2] // where the last record starts
			path := filepath.Join(dir, "queue")
			for cut := last; cut < int64(len(orig)); cut++ {
				// A torn write leaves a prefix of the record, perhaps followed by zeros.
				for _, pad := range []int{0, 3, 4096} {
					content := append(slices.Clone(orig[:cut]), make([]byte, pad)...)
					if bytes.HasPrefix(content, orig) {
						continue // the zeros completed the record
					}
					if err := os.WriteFile(path, content, 0o600); err != nil {
						t.Fatal(err)
					}
					q, err := OpenQueue(path)
					if err != nil {
						t.Fatalf("cut at %d, %d zeros: %v", cut, pad, err)
					}
					checkPending(t, q, want)
					if got := fileSize(t, path); got != last {
						t.Fatalf("cut at %d, %d zeros: file size %d after open, want %d", cut, pad, got, last)
					}
					// Appending after the recovered tail must give a readable file.
					e := QueueEntry{Kind: "ops", Data: []byte("after")}
					e.Seq = mustAppend(t, q, e.Kind, e.Data)
					q.Close()
					q = openQueue(t, path)
					checkPending(t, q, append(slices.Clone(want), e))
					q.Close()
				}
			}
		})
	}
}

func TestQueueCorruptMiddle(t *testing.T) {
	dir := t.TempDir()
	orig := filepath.Join(dir, "orig")
	entries, sizes := buildQueue(t, orig, 3)
	content, err := os.ReadFile(orig)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "queue")

	// Every byte before the last record (magic, header, first two entries) is checked.
	for off := range sizes[2] {
		for _, mask := range []byte{0x01, 0x80, 0xff} {
			bad := slices.Clone(content)
			bad[off] ^= mask
			if err := os.WriteFile(path, bad, 0o600); err != nil {
				t.Fatal(err)
			}
			if q, err := OpenQueue(path); !errors.Is(err, ErrQueueCorrupt) {
				if q != nil {
					q.Close()
				}
				t.Fatalf("byte %d ^ %#x: got %v, want ErrQueueCorrupt", off, mask, err)
			}
			if got, _ := os.ReadFile(path); !bytes.Equal(got, bad) {
				t.Fatalf("byte %d ^ %#x: OpenQueue changed a corrupt file", off, mask)
			}
		}
	}

	// A damaged last record is what a torn write looks like: it is cut away.
	bad := slices.Clone(content)
	bad[len(bad)-1] ^= 0x01
	if err := os.WriteFile(path, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	q := openQueue(t, path)
	checkPending(t, q, entries[:2])
}

func TestQueueCompaction(t *testing.T) {
	path := filepath.Join(t.TempDir(), "queue")
	q := openQueue(t, path)
	var want []QueueEntry
	for i := range 24 {
		data := bytes.Repeat([]byte{byte('a' + i)}, 64<<10)
		want = append(want, QueueEntry{Seq: mustAppend(t, q, "samples", data), Kind: "samples", Data: data})
	}
	before := fileSize(t, path)
	// Ack all but four, out of order, leaving pending entries on both sides of the acked.
	keep := []uint64{1, 7, 8, 24}
	for _, seq := range []uint64{12, 2, 3, 23, 4, 5, 6, 9, 10, 11, 22, 13, 14, 15, 16, 17, 18, 19, 20, 21} {
		n := q.compactions
		mustAck(t, q, seq)
		want = slices.DeleteFunc(want, func(e QueueEntry) bool { return e.Seq == seq })
		if q.compactions == n {
			continue
		}
		// Right after a compaction the file holds the magic, the header and the pending
		// entries, nothing else.
		live := int64(len(queueMagic) + headerRecordSize)
		for _, e := range want {
			live += entryRecordSize(e)
		}
		if got := fileSize(t, path); got != live {
			t.Fatalf("compaction at ack of %d: file size %d, want %d", seq, got, live)
		}
	}
	if q.compactions == 0 {
		t.Fatal("no compaction after acking 20 of 24 entries of 64 KiB")
	}
	if len(want) != len(keep) {
		t.Fatalf("test bug: %d entries left, want %d", len(want), len(keep))
	}
	checkPending(t, q, want)
	if after := fileSize(t, path); after > before*2/3 {
		t.Fatalf("file size: got %d after compaction, %d before", after, before)
	}
	if _, err := os.Stat(path + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temporary file left behind: %v", err)
	}

	q = mustReopen(t, q)
	checkPending(t, q, want)
	e := QueueEntry{Kind: "ops", Data: []byte("next")}
	if e.Seq = mustAppend(t, q, e.Kind, e.Data); e.Seq != 25 {
		t.Fatalf("append after compaction: got seq %d, want 25", e.Seq)
	}
	// The file now holds entries below the header's next Seq and one above it.
	q = mustReopen(t, q)
	checkPending(t, q, append(want, e))
}

// TestQueueCompactionFails makes the temporary file impossible to create: the ack stays
// durable, and the queue carries on with the old file.
func TestQueueCompactionFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "queue")
	q := openQueue(t, path)
	for range 3 {
		mustAppend(t, q, "samples", make([]byte, 1<<20))
	}
	mustAck(t, q, 1) // two thirds of the file are live: no compaction yet
	if err := os.Mkdir(path+".tmp", 0o700); err != nil {
		t.Fatal(err)
	}
	if err := q.Ack(2); err == nil {
		t.Fatal("ack with a directory in the way of the compaction: got no error")
	}
	e := QueueEntry{Kind: "ops", Data: []byte("after")}
	e.Seq = mustAppend(t, q, e.Kind, e.Data)
	if err := os.Remove(path + ".tmp"); err != nil {
		t.Fatal(err)
	}
	q = mustReopen(t, q)
	checkPending(t, q, []QueueEntry{{Seq: 3, Kind: "samples", Data: make([]byte, 1<<20)}, e})
	if q.compactions != 0 {
		t.Fatalf("got %d compactions, want 0", q.compactions)
	}
	mustAck(t, q, 3) // now the rewrite can happen
	if q.compactions != 1 {
		t.Fatalf("got %d compactions, want 1", q.compactions)
	}
	checkPending(t, q, []QueueEntry{e})
}

// TestQueueCompactionKeepsSeq empties the queue by compaction, so that only the header can
// carry the next Seq across the reopen.
func TestQueueCompactionKeepsSeq(t *testing.T) {
	path := filepath.Join(t.TempDir(), "queue")
	q := openQueue(t, path)
	for range 3 {
		mustAppend(t, q, "samples", []byte("small"))
	}
	seq := mustAppend(t, q, "samples", make([]byte, 2<<20))
	for s := uint64(1); s <= seq; s++ {
		mustAck(t, q, s)
	}
	if q.compactions != 1 {
		t.Fatalf("got %d compactions, want 1", q.compactions)
	}
	if got, want := fileSize(t, path), int64(len(queueMagic)+headerRecordSize); got != want {
		t.Fatalf("file size: got %d, want %d", got, want)
	}
	q = mustReopen(t, q)
	checkPending(t, q, nil)
	if got := mustAppend(t, q, "ops", nil); got != seq+1 {
		t.Fatalf("append after compaction: got seq %d, want %d", got, seq+1)
	}
}

// TestQueueStaleTemp opens a queue next to the temporary file of a compaction that
// crashed before its rename.
func TestQueueStaleTemp(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "queue")
	entries, _ := buildQueue(t, path, 2)
	if err := os.WriteFile(path+".tmp", []byte(queueMagic+"half a compaction"), 0o600); err != nil {
		t.Fatal(err)
	}
	q := openQueue(t, path)
	checkPending(t, q, entries)
	if _, err := os.Stat(path + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale temporary file: got %v, want it removed", err)
	}
}

func TestQueueConcurrent(t *testing.T) {
	q := openQueue(t, filepath.Join(t.TempDir(), "queue"))
	const workers, each = 4, 25
	var wg sync.WaitGroup
	got := make([][]uint64, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				seq, err := q.Append("ops", fmt.Appendf(nil, "%d/%d", w, i))
				if err != nil {
					t.Error(err)
					return
				}
				got[w] = append(got[w], seq)
				if i%2 == 1 {
					if err := q.Ack(got[w][i-1]); err != nil {
						t.Error(err)
					}
				}
				q.Pending()
			}
		})
	}
	wg.Wait()

	var want []QueueEntry
	for w, ss := range got {
		if !slices.IsSorted(ss) {
			t.Fatalf("worker %d: seqs out of order: %v", w, ss)
		}
		for i, seq := range ss {
			if i%2 == 1 || i == len(ss)-1 {
				want = append(want, QueueEntry{Seq: seq, Kind: "ops", Data: fmt.Appendf(nil, "%d/%d", w, i)})
			}
		}
	}
	slices.SortFunc(want, func(a, b QueueEntry) int { return int(a.Seq) - int(b.Seq) })
	checkPending(t, q, want)
	q = mustReopen(t, q)
	checkPending(t, q, want)
}

// FuzzOpenQueue opens arbitrary bytes as a queue file. OpenQueue must not panic, and
// whatever it accepts must reopen to the same entries, also after an append.
func FuzzOpenQueue(f *testing.F) {
	dir := f.TempDir()
	for i, n := range []int{0, 1, 4} {
		path := filepath.Join(dir, fmt.Sprint(i))
		q, err := OpenQueue(path)
		if err != nil {
			f.Fatal(err)
		}
		for j := range n {
			if _, err := q.Append("ops", bytes.Repeat([]byte{'a' + byte(j)}, j*7)); err != nil {
				f.Fatal(err)
			}
		}
		if n > 2 {
			q.Ack(2)
		}
		q.Close()
		b, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)-3])
		f.Add(append(slices.Clone(b), make([]byte, 20)...))
	}
	f.Add([]byte{})
	f.Add([]byte(queueMagic))

	f.Fuzz(func(t *testing.T, content []byte) {
		path := filepath.Join(t.TempDir(), "queue")
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}
		q, err := OpenQueue(path)
		if err != nil {
			return
		}
		defer q.Close()
		want := q.Pending()
		for i := 1; i < len(want); i++ {
			if want[i].Seq <= want[i-1].Seq {
				t.Fatalf("pending seqs not increasing: %v", seqs(want))
			}
		}
		e := QueueEntry{Kind: "ops", Data: []byte("x")}
		if e.Seq, err = q.Append(e.Kind, e.Data); err != nil {
			t.Fatal(err)
		}
		if len(want) > 0 && e.Seq <= want[len(want)-1].Seq {
			t.Fatalf("append: got seq %d after pending %v", e.Seq, seqs(want))
		}
		want = append(want, e)
		if len(want) > 1 {
			if err := q.Ack(want[0].Seq); err != nil {
				t.Fatal(err)
			}
			want = want[1:]
		}
		q.Close()
		q2, err := OpenQueue(path)
		if err != nil {
			t.Fatalf("reopen: %v", err)
		}
		defer q2.Close()
		checkPending(t, q2, want)
	})
}
