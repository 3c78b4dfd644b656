package processor

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/pulsebase/pulsebase/internal/agg"
	"github.com/pulsebase/pulsebase/internal/binread"
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

// storedBucket is a bucket as records before the binary layout held it (JSON).
type storedBucket struct {
	Type      string    `json:"type"`
	Res       string    `json:"res"`
	Date      string    `json:"date,omitempty"`
	Point     agg.Point `json:"point"`
	LastStart time.Time `json:"last_start"`
	LastEnd   time.Time `json:"last_end"`
}

// ChunkKey is the store key of the record that holds a bucket: hour and day buckets have
// a record each (their BucketKey); minute buckets are kept sixty to a record, by the UTC
// hour they start in (the BucketKey of that hour's start), so that a day of minute data is
// 24 rows, not 1,440.
func ChunkKey(typ string, res agg.Resolution, start time.Time, date string) string {
	if res == agg.Minute {
		return BucketKey(typ, res, start.UTC().Truncate(time.Hour), "")
	}
	return BucketKey(typ, res, start, date)
}

func chunkKey(c window.Change) string { return ChunkKey(c.Type, c.Res, c.Start, c.Date) }

// sealBuckets seals the buckets of one record (one bucket, or a chunk of minute buckets in
// time order), in the binary layout of appendBuckets.
func sealBuckets(keys *vault.Keys, key string, cs []window.Change) ([]byte, error) {
	return keys.Seal(KindBucket, key, appendBuckets(nil, cs))
}

// bucketsV2 starts the binary layout of a bucket record. Records written before it are
// JSON (one object, or an array) and are still read.
const bucketsV2 = 0xB2

// appendBuckets encodes buckets of one type and resolution, ~50 bytes each where JSON
// took ~250 (what the store writes is most of the processor's cost):
//
//	0xB2, type (uvarint length + bytes), resolution (byte), count (uvarint), then per
//	bucket: start (varint Unix ns, delta from the previous start), UTC offset (varint s),
//	date (uvarint length + bytes), sample count (uvarint), and either, for a categorical
//	type, the number of levels and per level its name and minutes (f64), or sum, min,
//	max, last (f64) and the last sample's start and end (varint ns from start).
func appendBuckets(b []byte, cs []window.Change) []byte {
	b = append(b, bucketsV2)
	if len(cs) == 0 {
		return append(b, 0, 0, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(cs[0].Type)))
	b = append(b, cs[0].Type...)
	b = append(b, byte(cs[0].Res))
	b = binary.AppendUvarint(b, uint64(len(cs)))
	f64 := func(v float64) { b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v)) }
	var prev int64
	for _, c := range cs {
		p := c.Point
		start := p.Start.UnixNano()
		_, off := p.Start.Zone()
		b = binary.AppendVarint(b, start-prev)
		prev = start
		b = binary.AppendVarint(b, int64(off))
		b = binary.AppendUvarint(b, uint64(len(c.Date)))
		b = append(b, c.Date...)
		b = binary.AppendUvarint(b, uint64(p.Count))
		if p.Minutes != nil {
			b = append(b, 1)
			b = binary.AppendUvarint(b, uint64(len(p.Minutes)))
			for _, l := range slices.Sorted(maps.Keys(p.Minutes)) {
				b = binary.AppendUvarint(b, uint64(len(l)))
				b = append(b, l...)
				f64(p.Minutes[l])
			}
			continue
		}
		b = append(b, 0)
		f64(p.Sum)
		f64(p.Min)
		f64(p.Max)
		f64(p.Last)
		b = binary.AppendVarint(b, c.LastStart.UnixNano()-start)
		b = binary.AppendVarint(b, c.LastEnd.UnixNano()-start)
	}
	return b
}

var errBuckets = errors.New("malformed bucket record")

func decodeBuckets(b []byte) ([]window.Change, error) {
	r := binread.New(b[1:], errBuckets)
	typ := r.Str()
	res := agg.Resolution(r.Byte())
	n := r.Count(6) // a bucket takes at least 6 bytes
	if r.Err() != nil {
		return nil, errBuckets
	}
	out := make([]window.Change, 0, n)
	var prev int64
	for range n {
		start := prev + r.Varint()
		prev = start
		loc := fixedZone(int(r.Varint()))
		c := window.Change{Type: typ, Res: res, Date: r.Str()}
		c.Point.Start = time.Unix(0, start).In(loc)
		c.Start = c.Point.Start
		c.Point.Count = int64(r.Uvarint())
		if r.Byte() == 1 {
			k := r.Count(9) // a level takes at least 9 bytes
			if r.Err() != nil {
				return nil, errBuckets
			}
			c.Point.Minutes = make(map[string]float64, k)
			for range k {
				l := r.Str()
				c.Point.Minutes[l] = r.Float64LE()
			}
		} else {
			c.Point.Sum, c.Point.Min, c.Point.Max, c.Point.Last = r.Float64LE(), r.Float64LE(), r.Float64LE(), r.Float64LE()
			if c.Point.Count > 0 {
				c.Point.Mean = c.Point.Sum / float64(c.Point.Count)
			}
			c.LastStart = time.Unix(0, start+r.Varint())
			c.LastEnd = time.Unix(0, start+r.Varint())
		}
		if r.Err() != nil {
			return nil, errBuckets
		}
		out = append(out, c)
	}
	return out, nil
}

var fixedZones sync.Map // offset → *time.Location

func fixedZone(off int) *time.Location {
	if off == 0 {
		return time.UTC
	}
	if loc, ok := fixedZones.Load(off); ok {
		return loc.(*time.Location)
	}
	loc, _ := fixedZones.LoadOrStore(off, time.FixedZone("", off))
	return loc.(*time.Location)
}

// OpenBuckets decrypts a bucket record: one hour or day bucket, or a chunk of minute
// buckets in time order.
func OpenBuckets(keys *vault.Keys, key string, ciphertext []byte) ([]window.Change, error) {
	pt, err := keys.Open(KindBucket, key, ciphertext)
	if err != nil {
		return nil, err
	}
	if len(pt) > 0 && pt[0] == bucketsV2 {
		cs, err := decodeBuckets(pt)
		if err != nil {
			return nil, fmt.Errorf("bucket record %s: %w", key, err)
		}
		return cs, nil
	}
	var list []storedBucket
	if len(pt) > 0 && pt[0] == '{' {
		list = make([]storedBucket, 1)
		err = json.Unmarshal(pt, &list[0])
	} else {
		err = json.Unmarshal(pt, &list)
	}
	if err != nil {
		return nil, fmt.Errorf("decode bucket record %s: %w", key, err)
	}
	out := make([]window.Change, len(list))
	for i, sb := range list {
		res, ok := agg.ParseResolution(sb.Res)
		if !ok {
			return nil, fmt.Errorf("bucket record %s: unknown resolution %q", key, sb.Res)
		}
		out[i] = window.Change{Type: sb.Type, Res: res, Start: sb.Point.Start, Date: sb.Date, Point: sb.Point,
			LastStart: sb.LastStart, LastEnd: sb.LastEnd}
	}
	return out, nil
}
