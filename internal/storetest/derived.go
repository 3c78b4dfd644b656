package storetest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
)

func derivedRecord(user, kind, key, ciphertext string) pulsebase.DerivedRecord {
	return pulsebase.DerivedRecord{User: user, Kind: kind, Key: key, Ciphertext: []byte(ciphertext), Updated: t0}
}

// keysOf returns the keys and ciphertexts of records as "key=ciphertext" strings.
func keysOf(rs []pulsebase.DerivedRecord) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Key + "=" + string(r.Ciphertext)
	}
	return out
}

func wantRecords(t *testing.T, s pulsebase.Store, user, kind, from, to string, want ...string) {
	t.Helper()
	got, err := s.DerivedRecords(t.Context(), user, kind, from, to)
	if err != nil {
		t.Fatalf("DerivedRecords(%s, %s, %q, %q): %v", user, kind, from, to, err)
	}
	if fmt.Sprint(keysOf(got)) != fmt.Sprint(want) {
		t.Errorf("DerivedRecords(%s, %s, %q, %q): got %v, want %v", user, kind, from, to, keysOf(got), want)
	}
}

func testDerived(t *testing.T, open Opener) {
	s, reopen := openStore(t, open)
	ctx := t.Context()
	cp, err := s.Checkpoint(ctx, 7)
	if err != nil || cp.Partition != 7 || cp.Epoch != 0 || cp.Seq != 0 {
		t.Fatalf("Checkpoint of a new partition: got %+v, %v; want zero", cp, err)
	}
	err = s.CommitPartition(ctx, pulsebase.Checkpoint{Partition: 7, Epoch: 3, Seq: 100, Updated: t0}, []pulsebase.DerivedRecord{
		derivedRecord("ua", "bucket", "hr/1h/002", "b2"),
		derivedRecord("ua", "bucket", "hr/1h/001", "b1"),
		derivedRecord("ua", "bucket", "hr/1h/003", "b3"),
		derivedRecord("ua", "daily", "2026-11-28", "d1"),
		derivedRecord("ub", "bucket", "hr/1h/001", "other user"),
	})
	if err != nil {
		t.Fatal(err)
	}
	wantRecords(t, s, "ua", "bucket", "", "", "hr/1h/001=b1", "hr/1h/002=b2", "hr/1h/003=b3")
	wantRecords(t, s, "ua", "bucket", "hr/1h/002", "hr/1h/003", "hr/1h/002=b2", "hr/1h/003=b3")
	wantRecords(t, s, "ua", "bucket", "hr/1h/002", "hr/1h/002", "hr/1h/002=b2")
	wantRecords(t, s, "ua", "daily", "", "", "2026-11-28=d1")
	wantRecords(t, s, "ua", "sleep", "", "")

	// An upsert replaces; the same epoch moves forward.
	if err := s.CommitPartition(ctx, pulsebase.Checkpoint{Partition: 7, Epoch: 3, Seq: 150, Updated: t0},
		[]pulsebase.DerivedRecord{derivedRecord("ua", "bucket", "hr/1h/002", "b2'")}); err != nil {
		t.Fatal(err)
	}
	wantRecords(t, s, "ua", "bucket", "hr/1h/002", "hr/1h/002", "hr/1h/002=b2'")
	cp, _ = s.Checkpoint(ctx, 7)
	if cp.Epoch != 3 || cp.Seq != 150 {
		t.Errorf("got checkpoint %+v, want epoch 3 seq 150", cp)
	}
	sameTime(t, "checkpoint Updated", cp.Updated, stored(t0))

	// Deletes and writes in one commit; deleting what is not there is fine.
	if err := s.CommitPartition(ctx, pulsebase.Checkpoint{Partition: 7, Epoch: 3, Seq: 150, Updated: t0}, []pulsebase.DerivedRecord{
		{User: "ua", Kind: "bucket", Key: "hr/1h/003", Delete: true},
		{User: "ua", Kind: "bucket", Key: "hr/1h/404", Delete: true},
		derivedRecord("ua", "bucket", "hr/1h/004", "b4"),
	}); err != nil {
		t.Fatal(err)
	}
	wantRecords(t, s, "ua", "bucket", "", "", "hr/1h/001=b1", "hr/1h/002=b2'", "hr/1h/004=b4")
	wantRecords(t, s, "ub", "bucket", "", "", "hr/1h/001=other user")
	// An empty kind deletes every record of the user but the kept kinds; records after it
	// in the same commit are written.
	if err := s.CommitPartition(ctx, pulsebase.Checkpoint{Partition: 8, Epoch: 1, Seq: 1, Updated: t0}, []pulsebase.DerivedRecord{
		derivedRecord("uc", "bucket", "x", "old"), derivedRecord("uc", "daily", "2026-11-28", "old"),
		derivedRecord("uc", "recommendation", "r1", "kept"), derivedRecord("uc", "decision", "d1", "kept"),
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.CommitPartition(ctx, pulsebase.Checkpoint{Partition: 8, Epoch: 1, Seq: 2, Updated: t0}, []pulsebase.DerivedRecord{
		{User: "uc", Delete: true}, derivedRecord("uc", "bucket", "y", "new"),
	}); err != nil {
		t.Fatal(err)
	}
	wantRecords(t, s, "uc", "bucket", "", "", "y=new")
	wantRecords(t, s, "uc", "daily", "", "")
	wantRecords(t, s, "uc", "recommendation", "", "", "r1=kept")
	wantRecords(t, s, "uc", "decision", "", "", "d1=kept")
	wantRecords(t, s, "ub", "bucket", "", "", "hr/1h/001=other user")

	// Going back within an epoch is refused; a newer epoch may restart from its own point.
	err = s.CommitPartition(ctx, pulsebase.Checkpoint{Partition: 7, Epoch: 3, Seq: 120}, nil)
	wantCode(t, err, pulsebase.EINVALID)
	if err := s.CommitPartition(ctx, pulsebase.Checkpoint{Partition: 7, Epoch: 5, Seq: 140}, nil); err != nil {
		t.Fatalf("a newer epoch: %v", err)
	}
	// The former owner (epoch 3) is fenced off and writes nothing.
	err = s.CommitPartition(ctx, pulsebase.Checkpoint{Partition: 7, Epoch: 3, Seq: 999},
		[]pulsebase.DerivedRecord{derivedRecord("ua", "bucket", "hr/1h/001", "zombie")})
	wantCode(t, err, pulsebase.EFENCED)
	wantRecords(t, s, "ua", "bucket", "hr/1h/001", "hr/1h/001", "hr/1h/001=b1")
	cp, _ = s.Checkpoint(ctx, 7)
	if cp.Epoch != 5 || cp.Seq != 140 {
		t.Errorf("after the fenced write: got checkpoint %+v, want epoch 5 seq 140", cp)
	}
	// A bad record rolls the whole commit back, checkpoint included.
	err = s.CommitPartition(ctx, pulsebase.Checkpoint{Partition: 7, Epoch: 5, Seq: 200}, []pulsebase.DerivedRecord{
		derivedRecord("ua", "bucket", "hr/1h/009", "x"), {User: "", Kind: "bucket", Key: "k"},
	})
	wantCode(t, err, pulsebase.EINVALID)
	wantRecords(t, s, "ua", "bucket", "hr/1h/009", "hr/1h/009")
	if cp, _ = s.Checkpoint(ctx, 7); cp.Seq != 140 {
		t.Errorf("a failed commit moved the checkpoint to %d", cp.Seq)
	}

	if err := s.DeleteDerived(ctx, "ua"); err != nil {
		t.Fatal(err)
	}
	wantRecords(t, s, "ua", "bucket", "", "")
	wantRecords(t, s, "ub", "bucket", "", "", "hr/1h/001=other user")
	s2 := reopen(t)
	wantRecords(t, s2, "ub", "bucket", "", "", "hr/1h/001=other user")
	if cp, _ := s2.Checkpoint(ctx, 7); cp.Epoch != 5 || cp.Seq != 140 {
		t.Errorf("after reopening: got %+v, want epoch 5 seq 140", cp)
	}
}

// testCommitPartitionFencingConcurrent races owners of two epochs on one partition: the
// checkpoint ends at the newer epoch whatever the interleaving, and once it has committed
// the older one never wins again.
func testCommitPartitionFencingConcurrent(t *testing.T, open Opener) {
	s, _ := openStore(t, open)
	ctx := t.Context()
	var wg sync.WaitGroup
	for _, epoch := range []uint64{1, 2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := uint64(1); seq <= 20; seq++ {
				err := s.CommitPartition(ctx, pulsebase.Checkpoint{Partition: 1, Epoch: epoch, Seq: seq, Updated: time.Now()},
					[]pulsebase.DerivedRecord{derivedRecord("u", "state", fmt.Sprint(epoch), fmt.Sprint(seq))})
				if err != nil && pulsebase.ErrorCode(err) != pulsebase.EFENCED {
					t.Errorf("epoch %d seq %d: %v", epoch, seq, err)
				}
			}
		}()
	}
	wg.Wait()
	cp, err := s.Checkpoint(ctx, 1)
	if err != nil || cp.Epoch != 2 || cp.Seq != 20 {
		t.Errorf("got %+v, %v; want epoch 2 at seq 20", cp, err)
	}
	if err := s.CommitPartition(ctx, pulsebase.Checkpoint{Partition: 1, Epoch: 1, Seq: 21}, nil); pulsebase.ErrorCode(err) != pulsebase.EFENCED {
		t.Errorf("epoch 1 after epoch 2 committed: got %v, want fenced", err)
	}
}
