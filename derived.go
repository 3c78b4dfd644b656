package pulsebase

import (
	"context"
	"time"
)

// EFENCED is the code of a write refused because a newer owner of the partition exists.
const EFENCED = "fenced"

// DerivedRecord is one piece of what the processor derives for a user — a bucket, a daily
// summary, a baseline, or its own per-user state — sealed under the user's key with
// associated data (user, kind, key). The store orders records by Key bytewise, so keys
// that should sort by time encode the time so that it sorts (e.g. zero-padded Unix
// seconds).
type DerivedRecord struct {
	User       string
	Kind       string // e.g. "bucket", "daily", "baseline", "state"
	Key        string // unique per (User, Kind)
	Ciphertext []byte
	Updated    time.Time
	// Delete makes CommitPartition delete the record (User, Kind, Key) instead of writing
	// it — with an empty Kind, every record of User but those of the KeptKinds (a rebuild
	// starts from nothing); deleting what does not exist is not an error.
	Delete bool
}

// KeptKinds are the kinds of derived records a rebuild keeps: the recommendations a user
// was given and the decisions behind them are history, not a function of the samples, and
// their feedback refers to them.
var KeptKinds = []string{"recommendation", "decision"}

// Checkpoint is how far a partition of the SAMPLES stream has been applied: every message
// up to and including Seq, by the owner holding fencing Epoch.
type Checkpoint struct {
	Partition int
	Epoch     uint64
	Seq       uint64
	Updated   time.Time
}

// DerivedStore keeps the processor's output and its checkpoints. Records and the
// checkpoint they lead to are written in one transaction, so a crash leaves either both
// or neither: the processor resumes after the checkpoint and re-applies nothing twice.
type DerivedStore interface {
	// CommitPartition upserts records and sets the checkpoint of cp.Partition to cp, in one
	// transaction, if cp.Epoch is at least the stored checkpoint's epoch (fencing: a former
	// owner that comes back late is refused with an *Error with code EFENCED and writes
	// nothing). The checkpoint's Seq may not go backwards within one epoch (EINVALID).
	CommitPartition(ctx context.Context, cp Checkpoint, records []DerivedRecord) error

	// Checkpoint returns partition p's checkpoint; a partition never committed has the zero
	// Checkpoint (with Partition set).
	Checkpoint(ctx context.Context, p int) (Checkpoint, error)

	// DerivedRecords returns the user's records of kind whose keys lie in [fromKey, toKey],
	// in key order; an empty toKey means no upper bound.
	DerivedRecords(ctx context.Context, user, kind, fromKey, toKey string) ([]DerivedRecord, error)

	// DeleteDerived deletes every derived record of user (before a reprocess, or erasure).
	DeleteDerived(ctx context.Context, user string) error
}
