package client

// The queue file is an 8-byte magic string followed by records, each framed as
//
//	length  uint32, little-endian: bytes of payload after the type byte
//	crc     uint32, little-endian: CRC-32C of the length bytes, the type byte and the payload
//	type    byte: recHeader, recEntry or recAck
//	payload
//
// The first record is always a header holding the Seq the next Append assigns, so the
// counter survives compaction, which drops acked entries and their acks. A queue file is
// only ever created whole (written to a temporary file, synced, renamed over the path), and
// afterwards only appended to, one record per write, each synced before the next: a crash
// can therefore damage only the last record, which OpenQueue cuts away. Damage anywhere
// else is reported as ErrQueueCorrupt, and the file is left as it is.

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
)

// MaxQueueData is the largest Data one queue entry may hold, in bytes.
const MaxQueueData = 8 << 20

// maxQueueKind is the longest Kind, in bytes.
const maxQueueKind = 32

var (
	// ErrQueueCorrupt means a queue file is damaged somewhere other than in its last
	// record (which a crash may tear, and OpenQueue removes), or is not a queue file.
	// OpenQueue leaves such a file untouched.
	ErrQueueCorrupt = errors.New("pulsebase: queue file is corrupt")
	// ErrQueueLocked means another Queue, in this process or another, has the file open.
	ErrQueueLocked = errors.New("pulsebase: queue file is open elsewhere")
	// ErrQueueClosed is returned by the methods of a closed Queue.
	ErrQueueClosed = errors.New("pulsebase: queue is closed")
	// ErrQueueEntryTooLarge is returned by Append for Data longer than MaxQueueData.
	ErrQueueEntryTooLarge = errors.New("pulsebase: queue entry too large")
)

const (
	queueMagic = "PBQUEUE1"

	recHeader byte = 1 // payload: next Seq, uint64
	recEntry  byte = 2 // payload: Seq uint64, kind length byte, kind, data
	recAck    byte = 3 // payload: Seq uint64

	frameSize        = 4 + 4 + 1 // length, crc, type
	entryFixed       = 8 + 1     // Seq, kind length
	maxRecordPayload = entryFixed + maxQueueKind + MaxQueueData
	headerRecordSize = frameSize + 8
	ackRecordSize    = frameSize + 8

	// defaultCompactMin is the file size, in bytes, below which the queue is never
	// rewritten, however much of it is acked.
	defaultCompactMin = 1 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Queue is a durable FIFO of entries, kept in one file: what a client must send to the
// server until the server has acknowledged it. An entry Append returned survives the
// process being killed and the machine losing power, until it is acked. All pending entries
// are also held in memory.
//
// A Queue is safe for concurrent use. It holds an advisory lock on path+".lock" while
// open, so one file has at most one Queue at a time.
type Queue struct {
	path string
	lock *os.File // holds the flock on path+".lock" until Close

	mu sync.Mutex
	f  *os.File // the log, opened O_APPEND; nil once closed
	// pend is the pending entries in ascending Seq, with holes: an entry acked since the
	// last sweep stays as a slot with acked set, so acks cost O(log n) amortized.
	pend  []slot
	holes int    // slots in pend with acked set
	next  uint64 // Seq the next Append assigns; never 0
	size  int64  // bytes in the file
	live  int64  // bytes a rewritten file would have: magic, header, pending entries
	// compactMin is the size below which the file is not rewritten; tests lower it.
	compactMin int64
	// compactions counts the compactions since OpenQueue, for tests.
	compactions int
	// err is the first failed write or sync. After one the end of the file is unknown
	// (a partial record, or pages the kernel dropped), so the Queue refuses to write
	// until it is reopened and the tail recovered.
	err error
}

// QueueEntry is one entry of a Queue.
type QueueEntry struct {
	// Seq is assigned by Append, increasing; it is never reused in the life of the file,
	// across compaction and reopening.
	Seq uint64
	// Kind says what Data is ("samples" or "ops"); the queue does not interpret it.
	// It is 1 to 32 bytes.
	Kind string
	// Data is the payload (the JSON the sync client sends); the queue does not interpret it.
	Data []byte
}

// slot is an entry of Queue.pend: pending, or acked and waiting for a sweep.
type slot struct {
	QueueEntry
	acked bool
}

// OpenQueue opens the queue file at path, creating it (mode 0600) and its parent
// directories (0700) if missing. A record torn by a crash at the end of the file is
// removed; damage elsewhere is an error wrapping ErrQueueCorrupt. If another Queue has the
// file open, the error wraps ErrQueueLocked.
func OpenQueue(path string) (*Queue, error) {
	if err := mkdirAllDurable(filepath.Dir(path)); err != nil {
		return nil, fmt.Errorf("pulsebase: open queue: %w", err)
	}
	lock, err := lockFile(path + ".lock")
	if err != nil {
		return nil, err
	}
	q := &Queue{path: path, lock: lock, compactMin: defaultCompactMin}
	if err := q.load(); err != nil {
		if q.f != nil {
			q.f.Close()
		}
		lock.Close()
		if errors.Is(err, ErrQueueCorrupt) {
			return nil, err
		}
		return nil, fmt.Errorf("pulsebase: open queue: %w", err)
	}
	return q, nil
}

// load reads the file into q, creating it if missing or empty and cutting a torn tail.
func (q *Queue) load() error {
	// A temporary file is what a compaction left when it crashed before its rename; the
	// queue file itself is still whole.
	if err := os.Remove(q.path + ".tmp"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	f, err := os.OpenFile(q.path, os.O_RDWR|os.O_APPEND, 0)
	if errors.Is(err, fs.ErrNotExist) {
		q.next = 1
		return q.rewrite()
	}
	if err != nil {
		return err
	}
	b, err := os.ReadFile(q.path) // the same file as f: the lock keeps others from renaming
	if err == nil && len(b) == 0 {
		// Nothing to lose: an empty file (touched by hand) becomes a new queue.
		f.Close()
		q.next = 1
		return q.rewrite()
	}
	var end int
	if err == nil {
		end, err = q.replay(b)
	}
	if err == nil && end < len(b) {
		err = f.Truncate(int64(end))
		if err == nil {
			err = f.Sync()
		}
	}
	if err != nil {
		f.Close()
		return err
	}
	q.f, q.size = f, int64(end)
	return nil
}

// replay rebuilds the state from the file contents b and returns where the valid records
// end: len(b), or the start of a torn last record.
func (q *Queue) replay(b []byte) (int, error) {
	corrupt := func(off int, format string, args ...any) error {
		return fmt.Errorf("%w: %s: record at offset %d: %s", ErrQueueCorrupt, q.path, off, fmt.Sprintf(format, args...))
	}
	if !bytes.HasPrefix(b, []byte(queueMagic)) {
		return 0, fmt.Errorf("%w: %s: not a queue file", ErrQueueCorrupt, q.path)
	}
	off := len(queueMagic)
	typ, p, next, ok := readRecord(b, off)
	if !ok || typ != recHeader || len(p) != 8 || binary.LittleEndian.Uint64(p) == 0 {
		return 0, corrupt(off, "no valid header")
	}
	q.next = binary.LittleEndian.Uint64(p)
	q.live = int64(next)
	var last uint64 // Seq of the last entry read
	for off = next; off < len(b); off = next {
		typ, p, next, ok = readRecord(b, off)
		if !ok {
			if tornTail(b, off) {
				break
			}
			return 0, corrupt(off, "damaged record followed by valid ones")
		}
		switch typ {
		case recEntry:
			e, ok := decodeEntry(p)
			if !ok {
				return 0, corrupt(off, "malformed entry")
			}
			// Entries a compaction copied have Seqs below the header's next; later
			// ones continue from it. Either way they increase.
			if e.Seq <= last || e.Seq == math.MaxUint64 {
				return 0, corrupt(off, "entry seq %d after %d", e.Seq, last)
			}
			last = e.Seq
			q.next = max(q.next, e.Seq+1)
			q.pend = append(q.pend, slot{QueueEntry: e})
			q.live += int64(next - off)
		case recAck:
			if len(p) != 8 {
				return 0, corrupt(off, "malformed ack")
			}
			seq := binary.LittleEndian.Uint64(p)
			e, ok := q.remove(seq)
			if !ok {
				return 0, corrupt(off, "ack of seq %d, which is not pending", seq)
			}
			q.live -= entryRecordSize(e)
		default:
			return 0, corrupt(off, "unexpected record type %d", typ)
		}
	}
	// The entries' Data point into b, most of which may be acked records: copy them out
	// so b can be freed.
	q.sweep()
	for i := range q.pend {
		q.pend[i].Data = bytes.Clone(q.pend[i].Data)
	}
	return off, nil
}

// readRecord decodes the record framed at b[off:], reporting ok false if it is
// incomplete, fails its checksum or has an unknown type.
func readRecord(b []byte, off int) (typ byte, payload []byte, next int, ok bool) {
	if len(b)-off < frameSize {
		return 0, nil, 0, false
	}
	n := binary.LittleEndian.Uint32(b[off:])
	if n > maxRecordPayload || len(b)-off-frameSize < int(n) {
		return 0, nil, 0, false
	}
	// The type is checked first, as it is cheaper than the checksum: tornTail calls this
	// at every offset of what may be megabytes of garbage.
	typ = b[off+8]
	if typ < recHeader || typ > recAck {
		return 0, nil, 0, false
	}
	end := off + frameSize + int(n)
	sum := crc32.Update(crc32.Update(0, castagnoli, b[off:off+4]), castagnoli, b[off+8:end])
	if sum != binary.LittleEndian.Uint32(b[off+4:]) {
		return 0, nil, 0, false
	}
	return typ, b[off+frameSize : end], end, true
}

// tornTail reports whether the invalid record at b[off:] can be the last write, torn by a
// crash: only one write is unsynced at a time, so what follows is no longer than one
// record and holds no valid record (a torn write leaves a prefix of the record, perhaps
// followed by zeros the file system allocated).
func tornTail(b []byte, off int) bool {
	if len(b)-off > frameSize+maxRecordPayload {
		return false
	}
	for p := off + 1; p < len(b); p++ {
		if _, _, _, ok := readRecord(b, p); ok {
			return false
		}
	}
	return true
}

func decodeEntry(p []byte) (QueueEntry, bool) {
	if len(p) < entryFixed {
		return QueueEntry{}, false
	}
	k := int(p[8])
	if k == 0 || k > maxQueueKind || len(p)-entryFixed < k || len(p)-entryFixed-k > MaxQueueData {
		return QueueEntry{}, false
	}
	return QueueEntry{
		Seq:  binary.LittleEndian.Uint64(p),
		Kind: string(p[entryFixed : entryFixed+k]),
		Data: p[entryFixed+k:],
	}, true
}

// appendRecord appends to b the frame of a record of type typ whose payload is the bytes
// parts together.
func appendRecord(b []byte, typ byte, parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	start := len(b)
	b = binary.LittleEndian.AppendUint32(b, uint32(n))
	b = append(b, 0, 0, 0, 0, typ)
	for _, p := range parts {
		b = append(b, p...)
	}
	sum := crc32.Update(crc32.Update(0, castagnoli, b[start:start+4]), castagnoli, b[start+8:])
	binary.LittleEndian.PutUint32(b[start+4:], sum)
	return b
}

func appendEntryRecord(b []byte, e QueueEntry) []byte {
	head := binary.LittleEndian.AppendUint64(make([]byte, 0, entryFixed+len(e.Kind)), e.Seq)
	head = append(append(head, byte(len(e.Kind))), e.Kind...)
	return appendRecord(b, recEntry, head, e.Data)
}

func entryRecordSize(e QueueEntry) int64 {
	return int64(frameSize + entryFixed + len(e.Kind) + len(e.Data))
}

// Append adds an entry at the end of the queue and returns its Seq once the entry is on
// stable storage. Kind must be 1 to 32 bytes and data at most MaxQueueData bytes (the
// error then wraps ErrQueueEntryTooLarge); the queue keeps its own copy of data.
func (q *Queue) Append(kind string, data []byte) (uint64, error) {
	if len(kind) == 0 || len(kind) > maxQueueKind {
		return 0, fmt.Errorf("pulsebase: queue entry kind %q: want 1 to %d bytes", kind, maxQueueKind)
	}
	if len(data) > MaxQueueData {
		return 0, fmt.Errorf("%w: %d bytes, at most %d", ErrQueueEntryTooLarge, len(data), MaxQueueData)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if err := q.writable(); err != nil {
		return 0, err
	}
	e := QueueEntry{Seq: q.next, Kind: kind, Data: data}
	rec := appendEntryRecord(nil, e)
	if err := q.write(rec); err != nil {
		return 0, err
	}
	q.next++
	// The record holds a copy of data already; share it rather than copy again.
	e.Data = rec[len(rec)-len(data) : len(rec) : len(rec)]
	q.pend = append(q.pend, slot{QueueEntry: e})
	q.live += int64(len(rec))
	return e.Seq, nil
}

// Pending returns copies of the entries not yet acked, in Seq order. It returns nil once
// the queue is closed.
func (q *Queue) Pending() []QueueEntry {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.pend) == q.holes {
		return nil
	}
	out := make([]QueueEntry, 0, len(q.pend)-q.holes)
	for _, s := range q.pend {
		if !s.acked {
			out = append(out, QueueEntry{Seq: s.Seq, Kind: s.Kind, Data: bytes.Clone(s.Data)})
		}
	}
	return out
}

// Len returns the number of entries not yet acked; 0 once the queue is closed.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.pend) - q.holes
}

// Ack removes the entry seq from the queue once the removal is on stable storage.
// Entries may be acked in any order; acking a Seq that is not pending does nothing.
//
// When acked entries make up most of a large file, Ack rewrites the file without them.
// If that rewrite fails, Ack returns its error although the ack itself is durable (so
// acking again does nothing), and the queue carries on with the old file.
func (q *Queue) Ack(seq uint64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if err := q.writable(); err != nil {
		return err
	}
	if _, ok := q.find(seq); !ok {
		return nil
	}
	rec := appendRecord(make([]byte, 0, ackRecordSize), recAck, binary.LittleEndian.AppendUint64(nil, seq))
	if err := q.write(rec); err != nil {
		return err
	}
	e, _ := q.remove(seq)
	q.live -= entryRecordSize(e)
	if q.size <= q.compactMin || q.live*2 >= q.size {
		return nil
	}
	if err := q.rewrite(); err != nil {
		return fmt.Errorf("pulsebase: queue compaction (the ack is durable): %w", err)
	}
	q.compactions++
	return nil
}

// Close closes the file and releases the lock. Closing a closed Queue does nothing.
func (q *Queue) Close() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.f == nil {
		return nil
	}
	err := q.f.Close()
	q.f, q.pend, q.holes = nil, nil, 0
	// Closing the lock file's only descriptor releases the flock.
	if lerr := q.lock.Close(); err == nil {
		err = lerr
	}
	return err
}

func (q *Queue) writable() error {
	if q.f == nil {
		return ErrQueueClosed
	}
	if q.err != nil {
		return fmt.Errorf("pulsebase: queue unusable after a failed write, reopen it: %w", q.err)
	}
	return nil
}

// write appends one record and syncs it. Callers hold q.mu.
func (q *Queue) write(rec []byte) error {
	if _, err := q.f.Write(rec); err != nil {
		q.err = err
		return fmt.Errorf("pulsebase: queue write: %w", err)
	}
	if err := q.f.Sync(); err != nil {
		q.err = err
		return fmt.Errorf("pulsebase: queue sync: %w", err)
	}
	q.size += int64(len(rec))
	return nil
}

// find returns the index in q.pend of the pending entry seq.
func (q *Queue) find(seq uint64) (int, bool) {
	i, ok := slices.BinarySearchFunc(q.pend, seq, func(s slot, seq uint64) int { return cmp.Compare(s.Seq, seq) })
	return i, ok && !q.pend[i].acked
}

// remove takes the pending entry seq out of q.pend and returns it.
func (q *Queue) remove(seq uint64) (QueueEntry, bool) {
	i, ok := q.find(seq)
	if !ok {
		return QueueEntry{}, false
	}
	e := q.pend[i].QueueEntry
	// Keep Seq so the slice stays sorted for find; drop the rest.
	q.pend[i] = slot{QueueEntry: QueueEntry{Seq: seq}, acked: true}
	q.holes++
	// Sweeping when most slots are holes keeps the cost amortized O(1) per ack.
	if q.holes > len(q.pend)/2 {
		q.sweep()
	}
	return e, true
}

func (q *Queue) sweep() {
	q.pend = slices.DeleteFunc(q.pend, func(s slot) bool { return s.acked })
	q.holes = 0
}

// rewrite replaces the file with one holding only the header and the pending entries,
// through a temporary file renamed over it, so that a crash at any step leaves either the
// old file or the new one whole. If it fails before the rename, the old file stays in use.
func (q *Queue) rewrite() error {
	tmp := q.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	n, err := q.writeSnapshot(f)
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = os.Rename(tmp, q.path)
	}
	if err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if q.f != nil {
		q.f.Close()
	}
	q.f, q.size, q.live = f, n, n
	// Until the directory is synced, a power loss may bring the old file back, and
	// appends to the new one would be lost with it.
	if err := syncDir(filepath.Dir(q.path)); err != nil {
		q.err = err
		return err
	}
	return nil
}

// writeSnapshot writes the magic, the header and the pending entries to f and returns
// the number of bytes written.
func (q *Queue) writeSnapshot(f *os.File) (int64, error) {
	w := bufio.NewWriterSize(f, 64<<10)
	rec := appendRecord([]byte(queueMagic), recHeader, binary.LittleEndian.AppendUint64(nil, q.next))
	n := int64(len(rec))
	if _, err := w.Write(rec); err != nil {
		return 0, err
	}
	for _, s := range q.pend {
		if s.acked {
			continue
		}
		rec = appendEntryRecord(rec[:0], s.QueueEntry)
		n += int64(len(rec))
		if _, err := w.Write(rec); err != nil {
			return 0, err
		}
	}
	return n, w.Flush()
}

// mkdirAllDurable creates dir and its missing parents, syncing the directory holding each
// new one so that a power loss cannot take the queue's directory away with the queue.
func mkdirAllDurable(dir string) error {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		_, err := os.Stat(d)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		missing = append(missing, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, d := range slices.Backward(missing) {
		if err := syncDir(filepath.Dir(d)); err != nil {
			return err
		}
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
