//go:build unix

package client

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// Environment of the child process of TestQueueKill.
const (
	killChildPath  = "PULSEBASE_QUEUE_KILL_PATH"  // the queue file; set only in the child
	killChildFirst = "PULSEBASE_QUEUE_KILL_FIRST" // the n of the child's first entry
)

// killEntry is the entry a child of TestQueueKill appends as its entry number n; the
// numbers are unique across rounds, so an entry's Data says which append wrote it.
func killEntry(n int) QueueEntry {
	return QueueEntry{
		Kind: []string{"samples", "ops"}[n%2],
		Data: fmt.Appendf(nil, `{"n":%d,"pad":%q}`, n, strings.Repeat("p", n*37%900)),
	}
}

// TestQueueKill runs rounds of a child process appending and acking in a loop, kills it
// with SIGKILL at a random point, and checks that the queue it leaves holds exactly what
// the child reported done, give or take the one operation in flight.
//
// The child reports on stdout, each line after the call returned:
//
//	add <seq> <n>   Append of entry n returned seq
//	ack? <seq>      about to Ack seq
//	ack <seq>       Ack of seq returned
//	compacted       that Ack compacted the file
//
// Of every three entries it appends, the child acks two (the third first, then the
// first), so that acked records outweigh live ones and compactions happen, and are
// killed, too.
func TestQueueKill(t *testing.T) {
	if path := os.Getenv(killChildPath); path != "" {
		queueKillChild(path)
		return
	}
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	path := t.TempDir() + "/queue"

	pend := map[uint64]QueueEntry{} // what the queue must hold, from what the children reported
	var maxSeq uint64               // the highest Seq any Append returned
	compactions := 0
	n := 0 // the next entry number
	for round := range 6 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestQueueKill$", "-test.count=1")
		cmd.Env = append(os.Environ(), killChildPath+"="+path, killChildFirst+"="+strconv.Itoa(n))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		kill := 20 + rng.IntN(150) // lines to read before the kill
		lines := 0
		inflightAck := uint64(0) // an Ack the child began and did not report done
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if lines++; lines == kill {
				cmd.Process.Kill()
			}
			// Lines the child wrote before it died are reported too: read them all.
			f := strings.Fields(sc.Text())
			var seq uint64
			var perr error
			if len(f) > 1 {
				seq, perr = strconv.ParseUint(f[1], 10, 64)
			}
			switch {
			case len(f) == 0 || perr != nil:
				t.Fatalf("round %d: unexpected child line %q", round, sc.Text())
			case f[0] == "add" && len(f) == 3:
				if seq <= maxSeq {
					t.Fatalf("round %d: Append returned seq %d, after %d", round, seq, maxSeq)
				}
				if got, err := strconv.Atoi(f[2]); err != nil || got != n {
					t.Fatalf("round %d: child line %q, want entry %d", round, sc.Text(), n)
				}
				e := killEntry(n)
				e.Seq = seq
				pend[seq], maxSeq = e, seq
				n++
			case f[0] == "ack?" && len(f) == 2:
				if _, ok := pend[seq]; !ok {
					t.Fatalf("round %d: child acks %d, which is not pending", round, seq)
				}
				inflightAck = seq
			case f[0] == "ack" && len(f) == 2:
				delete(pend, seq)
				inflightAck = 0
			case f[0] == "compacted" && len(f) == 1:
				compactions++
			default:
				t.Fatalf("round %d: unexpected child line %q", round, sc.Text())
			}
		}
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); lines < kill || err == nil || !strings.Contains(err.Error(), "killed") {
			t.Fatalf("round %d: child ended after %d lines, before the kill after %d: %v\n%s", round, lines, kill, err, stderr.Bytes())
		}

		q, err := OpenQueue(path)
		if err != nil {
			t.Fatalf("round %d: open after kill: %v", round, err)
		}
		got := q.Pending()
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
		for i, e := range got {
			if i > 0 && e.Seq <= got[i-1].Seq {
				t.Fatalf("round %d: pending seqs out of order or repeated: %v", round, seqs(got))
			}
			want, ok := pend[e.Seq]
			if !ok && e.Seq > maxSeq && i == len(got)-1 {
				// The Append in flight when the child died made it to the file.
				want = killEntry(n)
				want.Seq, ok = e.Seq, true
				maxSeq = e.Seq
				n++
			}
			if !ok {
				t.Fatalf("round %d: seq %d is pending, but was acked or never appended", round, e.Seq)
			}
			if e.Kind != want.Kind || !bytes.Equal(e.Data, want.Data) {
				t.Fatalf("round %d: seq %d: got %s %s, want %s %s", round, e.Seq, e.Kind, e.Data, want.Kind, want.Data)
			}
		}
		for seq := range pend {
			if seq != inflightAck && !slices.ContainsFunc(got, func(e QueueEntry) bool { return e.Seq == seq }) {
				t.Fatalf("round %d: seq %d was appended and not acked, but is not pending", round, seq)
			}
		}
		// What the queue holds is now known to be right; the next round starts from it.
		clear(pend)
		for _, e := range got {
			pend[e.Seq] = e
		}
		n++ // skip the number of an Append that died in flight
		t.Logf("round %d: killed after %d lines, %d pending", round, lines, len(got))
	}
	t.Logf("%d compactions", compactions)
	if compactions == 0 {
		t.Error("no child compacted the queue")
	}
}

// queueKillChild is the child process of TestQueueKill: it appends and acks on the queue
// at path until it is killed.
func queueKillChild(path string) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	n, err := strconv.Atoi(os.Getenv(killChildFirst))
	if err != nil {
		fail(err)
	}
	q, err := OpenQueue(path)
	if err != nil {
		fail(err)
	}
	// Compact small files, so that rounds of a few hundred records compact.
	q.compactMin = 16 << 10
	ack := func(seq uint64) {
		fmt.Printf("ack? %d\n", seq)
		c := q.compactions
		if err := q.Ack(seq); err != nil {
			fail(err)
		}
		fmt.Printf("ack %d\n", seq)
		if q.compactions != c {
			fmt.Println("compacted")
		}
	}
	var added []uint64
	// The parent kills the child long before the end; the bound only keeps a child whose
	// parent vanished from running for ever.
	for i := range 100_000 {
		e := killEntry(n)
		seq, err := q.Append(e.Kind, e.Data)
		if err != nil {
			fail(err)
		}
		fmt.Printf("add %d %d\n", seq, n)
		n++
		added = append(added, seq)
		if i%3 == 2 {
			ack(added[i])
			ack(added[i-2])
		}
	}
}
