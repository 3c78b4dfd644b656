package loadgen

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"strconv"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/ingest"
)

// MaxBatch is the most samples one request may carry (the API's limit).
const MaxBatch = 5000

// sealOverhead is what the vault's Tink AES-256-GCM adds to a plaintext: a 5-byte key
// prefix, a 12-byte nonce and a 16-byte tag.
const sealOverhead = 5 + 12 + 16

// templates is how many distinct request bodies a Workload prepares. Requests cycle
// through them; only the sample ids change from one request to the next.
const templates = 64

// Id layout. Every sample id is "<run><request><index>": an 8-character run id drawn at
// start, so that a second bench against the same server sends no duplicates, the request
// number in 10 digits and the sample's index in the request in 4 digits. Fixed widths let
// a request's body be made by copying a template and overwriting the request digits.
// 22 characters is also the length of the server's own keyed sample ids, which the broker
// baseline uses as Nats-Msg-Id.
const (
	runIDLen    = 8
	reqDigits   = 10
	indexDigits = 4
	idLen       = runIDLen + reqDigits + indexDigits
)

// Workload is the traffic of a run: request n goes to user n mod Users and carries Batch
// samples no other request of the run carries. It is prepared once, before the clock
// starts, and is safe for concurrent use.
type Workload struct {
	batch int
	users int
	runID string
	// bodies are the JSON request templates; idAt[k] are the offsets of the request
	// digits of every sample id in bodies[k].
	bodies [][]byte
	idAt   [][]int
	// sizes[k][j] is the size in bytes the server stores for sample j of template k:
	// the binary record of the normalized sample plus the AEAD overhead.
	sizes [][]int
	// marks[u], if not zero, is the minute user u's marker samples fall in (see Mark).
	// Set before the run, read-only during it.
	marks []time.Time
}

// NewWorkload prepares the requests of a run for users users and batch samples per
// request, with start times within the three days before now.
func NewWorkload(batch, users int, now time.Time) (*Workload, error) {
	switch {
	case batch < 1 || batch > MaxBatch:
		return nil, fmt.Errorf("batch %d: want 1..%d", batch, MaxBatch)
	case users < 1:
		return nil, fmt.Errorf("users %d: want at least 1", users)
	}
	w := &Workload{batch: batch, users: users, runID: newRunID()}
	// The server records the token's subject in every sample; all subjects have the
	// same length, so any one gives the stored size.
	subject := w.Subject(0)
	for k := range templates {
		rng := mrand.New(mrand.NewPCG(uint64(k), 0x9e3779b97f4a7c15))
		body := []byte(`{"samples":[`)
		var offs []int
		var sizes []int
		for j := range batch {
			if j > 0 {
				body = append(body, ',')
			}
			in := sampleInput(rng, k, now)
			in.ID = w.runID + zeros(reqDigits) + pad(j, indexDigits)
			smp, problems := pulsebase.Normalize(in, now)
			if len(problems) > 0 {
				return nil, fmt.Errorf("generated an invalid %s sample: %s", in.Type, problems[0].Detail)
			}
			smp.Subject = subject
			smp.Received = now.UTC()
			// The size the server stores: the sample record it seals, plus the AEAD's share.
			sizes = append(sizes, len(ingest.AppendSample(nil, &smp))+sealOverhead)
			b, err := json.Marshal(in)
			if err != nil {
				return nil, err
			}
			// json.Marshal writes the fields in order and the id first: `{"id":"`.
			offs = append(offs, len(body)+len(`{"id":"`)+runIDLen)
			body = append(body, b...)
		}
		body = append(body, "]}"...)
		w.bodies = append(w.bodies, body)
		w.idAt = append(w.idAt, offs)
		w.sizes = append(w.sizes, sizes)
	}
	return w, nil
}

// Batch is the number of samples per request.
func (w *Workload) Batch() int { return w.batch }

// Users is the number of users the requests are spread over.
func (w *Workload) Users() int { return w.users }

// User is the user request n is for, in 0..Users-1.
func (w *Workload) User(n int64) int { return int(n % int64(w.users)) }

// Subject is the external subject of user u: the same names in every run, so that
// repeated runs against one server reuse its users instead of creating new ones.
func (w *Workload) Subject(u int) string { return "bench-user-" + pad(u, 6) }

// Body returns a new JSON body for request n. Bodies of different n share no sample id.
// A request of a marked user (Mark) carries the marker sample in place of its last one.
func (w *Workload) Body(n int64) []byte {
	k := int(n % templates)
	b := make([]byte, len(w.bodies[k]), len(w.bodies[k])+len(markerTemplate))
	copy(b, w.bodies[k])
	var digits [reqDigits]byte
	fillDigits(digits[:], n)
	for _, off := range w.idAt[k] {
		copy(b[off:], digits[:])
	}
	if minute := w.marker(w.User(n)); !minute.IsZero() {
		// The last sample starts where its id's run prefix and `{"id":"` begin.
		last := w.idAt[k][w.batch-1] - runIDLen - len(`{"id":"`)
		id := string(b[last+len(`{"id":"`) : last+len(`{"id":"`)+idLen])
		b = append(b[:last], fmt.Sprintf(markerTemplate, id, 60+n%40, minute.Add(time.Duration(n%60)*time.Second).Format(time.RFC3339))...)
		b = append(b, "]}"...)
	}
	return b
}

// The marker sample. Every request of a marked user carries one, a heart rate in the
// user's marker minute: that minute's bucket gains one sample per request, and the
// processor's series change for it, which carries the bucket's count, says how many of
// the user's marked requests it has applied. The minute lies in the last hour, which the
// workload's own samples (all at least an hour older than the workload) never touch.
const (
	// MarkerType is the type of marker samples, and so the category (heart) a user must
	// consent to for its subscribers to see their changes.
	MarkerType     = "heart_rate"
	markerTemplate = `{"id":%q,"type":"heart_rate","value":%d,"unit":"bpm","start":%q,"source":"bench-marker"}`
)

// Mark makes every request of user u carry a marker sample in minute (truncated to the
// minute); the zero time unmarks. Call it before the run: Body reads the marks
// unguarded.
func (w *Workload) Mark(u int, minute time.Time) {
	if w.marks == nil {
		w.marks = make([]time.Time, w.users)
	}
	w.marks[u] = minute.Truncate(time.Minute).UTC()
}

func (w *Workload) marker(u int) time.Time {
	if w.marks == nil {
		return time.Time{}
	}
	return w.marks[u]
}

// MarkerKey is the series key of the minute bucket of user u's markers, as the
// processor's changes name it, or "" for an unmarked user.
func (w *Workload) MarkerKey(u int) string {
	m := w.marker(u)
	if m.IsZero() {
		return ""
	}
	return MarkerBucketKey(m)
}

// MarkerBucketKey is the key of the minute bucket of MarkerType starting at minute:
// type/resolution/Unix seconds in 20 digits (internal/processor.BucketKey).
func MarkerBucketKey(minute time.Time) string {
	return fmt.Sprintf("%s/1m/%020d", MarkerType, minute.Truncate(time.Minute).Unix())
}

// MsgID returns the Nats-Msg-Id of sample j of request n for the broker baseline, unique
// within the run and as long as the server's own ids.
func (w *Workload) MsgID(n int64, j int) string {
	var b [idLen]byte
	copy(b[:], w.runID)
	fillDigits(b[runIDLen:runIDLen+reqDigits], n)
	fillDigits(b[runIDLen+reqDigits:], int64(j))
	return string(b[:])
}

// StoredSizes returns the stored size of each sample of request n, in bytes. The slice
// is shared: callers must not modify it.
func (w *Workload) StoredSizes(n int64) []int { return w.sizes[int(n%templates)] }

// MeanBodyBytes is the mean size of a request body.
func (w *Workload) MeanBodyBytes() float64 {
	t := 0
	for _, b := range w.bodies {
		t += len(b)
	}
	return float64(t) / float64(len(w.bodies))
}

// MeanStoredBytes is the mean stored size of a sample.
func (w *Workload) MeanStoredBytes() float64 {
	t, c := 0, 0
	for _, s := range w.sizes {
		for _, n := range s {
			t += n
			c++
		}
	}
	return float64(t) / float64(c)
}

// maxStoredBytes is the largest stored size of a sample.
func (w *Workload) maxStoredBytes() int {
	m := 0
	for _, s := range w.sizes {
		for _, n := range s {
			m = max(m, n)
		}
	}
	return m
}

// zones are the offsets samples are stamped with, as phones in different places would.
var zones = []*time.Location{
	time.FixedZone("", -6*3600), time.FixedZone("", -5*3600), time.UTC,
	time.FixedZone("", 1*3600), time.FixedZone("", 5*3600+1800), time.FixedZone("", 9*3600),
}

// sampleInput makes one plausible sample of a mix like a watch and a phone upload:
// mostly heart rate, then steps and energy per minute, some SpO₂, breathing and sleep.
func sampleInput(rng *mrand.Rand, k int, now time.Time) pulsebase.SampleInput {
	zone := zones[k%len(zones)]
	// An hour back at least, so that intervals have ended.
	start := now.Add(-time.Hour - time.Duration(rng.Int64N(int64(71*time.Hour)))).Truncate(time.Second).In(zone)
	minute := func() string { return start.Add(time.Minute).Format(time.RFC3339) }
	watch := "bench-watch-" + strconv.Itoa(k%4)
	num := func(f float64, prec int) json.RawMessage {
		return json.RawMessage(strconv.FormatFloat(f, 'f', prec, 64))
	}
	in := pulsebase.SampleInput{Start: start.Format(time.RFC3339), Source: watch}
	switch p := rng.IntN(100); {
	case p < 50:
		in.Type, in.Unit, in.Value = "heart_rate", "bpm", num(float64(50+rng.IntN(90)), 0)
	case p < 70:
		in.Type, in.Unit, in.Value, in.End = "steps", "count", num(float64(rng.IntN(180)), 0), minute()
		in.Source = "bench-phone"
	case p < 85:
		in.Type, in.Unit, in.Value, in.End = "active_energy", "kcal", num(rng.Float64()*12, 2), minute()
	case p < 90:
		in.Type, in.Unit, in.Value = "spo2", "%", num(float64(92+rng.IntN(8)), 0)
	case p < 95:
		in.Type, in.Unit, in.Value = "respiratory_rate", "breaths/min", num(float64(10+rng.IntN(10)), 0)
	default:
		stages := []string{"light", "deep", "rem", "awake"}
		in.Type, in.End = "sleep_stage", start.Add(time.Duration(5+rng.IntN(25))*time.Minute).Format(time.RFC3339)
		in.Value = json.RawMessage(strconv.Quote(stages[rng.IntN(len(stages))]))
		in.Source = "bench-ring"
	}
	return in
}

// newRunID returns 8 random lower-case base32 characters.
func newRunID() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz234567"
	var b [runIDLen]byte
	rand.Read(b[:])
	for i := range b {
		b[i] = alphabet[b[i]%32]
	}
	return string(b[:])
}

// fillDigits writes n in decimal into b, zero-padded to len(b) (keeping the low digits).
func fillDigits(b []byte, n int64) {
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = byte('0' + n%10)
		n /= 10
	}
}

func zeros(n int) string {
	b := make([]byte, n)
	fillDigits(b, 0)
	return string(b)
}

func pad(v, n int) string {
	b := make([]byte, n)
	fillDigits(b, int64(v))
	return string(b)
}
