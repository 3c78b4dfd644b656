package processor

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/pulsebase/pulsebase/internal/agg"
	"github.com/pulsebase/pulsebase/internal/vault"
	"github.com/pulsebase/pulsebase/internal/window"
)

// Kinds of derived records.
const (
	KindBucket = "bucket" // one bucket of a series
	KindState  = "state"  // a user's window.State, key ""
	KindIDs    = "ids"    // the sample ids counted on one local day, for the backfill path
)

// BucketKey is the store key of a bucket: type/resolution/start, with minute and hour
// starts as zero-padded Unix seconds and days as their local date, so keys sort by time.
func BucketKey(typ string, res agg.Resolution, start time.Time, date string) string {
	if res == agg.Day {
		return typ + "/" + res.String() + "/" + date
	}
	return fmt.Sprintf("%s/%s/%020d", typ, res, start.Unix())
}

// bucketKey is BucketKey of a change.
func bucketKey(c window.Change) string { return BucketKey(c.Type, c.Res, c.Start, c.Date) }

// storedBucket is a bucket as sealed in the store: the point and what Merge needs.
type storedBucket struct {
	Type      string    `json:"type"`
	Res       string    `json:"res"`
	Date      string    `json:"date,omitempty"`
	Point     agg.Point `json:"point"`
	LastStart time.Time `json:"last_start"`
	LastEnd   time.Time `json:"last_end"`
}

func sealBucket(keys *vault.Keys, key string, c window.Change) ([]byte, error) {
	b, err := json.Marshal(storedBucket{Type: c.Type, Res: c.Res.String(), Date: c.Date, Point: c.Point, LastStart: c.LastStart, LastEnd: c.LastEnd})
	if err != nil {
		return nil, err
	}
	return keys.Seal(KindBucket, key, b)
}

// OpenBucket decrypts a stored bucket record.
func OpenBucket(keys *vault.Keys, key string, ciphertext []byte) (window.Change, error) {
	pt, err := keys.Open(KindBucket, key, ciphertext)
	if err != nil {
		return window.Change{}, err
	}
	var sb storedBucket
	if err := json.Unmarshal(pt, &sb); err != nil {
		return window.Change{}, fmt.Errorf("decode bucket %s: %w", key, err)
	}
	res, ok := agg.ParseResolution(sb.Res)
	if !ok {
		return window.Change{}, fmt.Errorf("bucket %s: unknown resolution %q", key, sb.Res)
	}
	return window.Change{Type: sb.Type, Res: res, Start: sb.Point.Start, Date: sb.Date, Point: sb.Point,
		LastStart: sb.LastStart, LastEnd: sb.LastEnd}, nil
}
