package crdt

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/pulsebase/pulsebase"
)

// Stable error codes of this package, beside pulsebase.ETOOLARGE. Every error of Apply,
// DecodeOp, Validate, CheckIncoming, Merge and Observe is a *pulsebase.Error with one of
// them; the sync layer sends the code to the device as is.
const (
	// CodeInvalidOp: the op is malformed: not JSON of the op shape, a bad id or
	// timestamp, an unknown kind, a kind the path does not take, or a bad observed.
	CodeInvalidOp = "invalid_op"
	// CodeInvalidPath: no such path in the profile, or a counter's day out of range.
	CodeInvalidPath = "invalid_path"
	// CodeInvalidValue: the value is not one the path takes.
	CodeInvalidValue = "invalid_value"
	// CodeClockSkew: the op's time is too far ahead of the server's clock.
	CodeClockSkew = "clock_skew"
)

// Kind is what an op does to its path.
type Kind string

// The kinds of op. Each path takes one of set (registers), add and remove (sets) or incr
// (counters).
const (
	KindSet    Kind = "set"
	KindAdd    Kind = "add"
	KindRemove Kind = "remove"
	KindIncr   Kind = "incr"
)

// Op is one edit of a profile, as it crosses the wire (see the package documentation for
// the JSON shape and the meaning of each field).
type Op struct {
	// ID is "<device>:<seq>", unique among the ops of a user.
	ID string `json:"id"`
	// TS is the device's HLC reading when it made the op; TS.Node is the device of ID.
	TS Timestamp `json:"ts"`
	// Kind is set, add, remove or incr.
	Kind Kind `json:"kind"`
	// Path names the field: "goals.steps", "enabled_nudges", "water_glasses.2026-11-29", …
	Path string `json:"path"`
	// Value is the JSON value: the register's new value, the element added or removed, or
	// the step of the counter.
	Value json.RawMessage `json:"value"`
	// Observed, on a remove only, maps each device to the highest seq of its adds of Value
	// that the remover had seen.
	Observed map[string]uint64 `json:"observed,omitempty"`
}

// Limits of ops.
const (
	// MaxOpSize is the largest op, in bytes of its JSON encoding.
	MaxOpSize = 4 << 10
	// MaxDeviceLen is the longest device id, in bytes.
	MaxDeviceLen = 64
	// MaxSeq is the largest seq of an op id: 2^53-1, the largest integer every JSON
	// implementation (JavaScript's included) reads exactly, as observed carries seqs as
	// numbers.
	MaxSeq = 1<<53 - 1
)

// The range of an op's TS.Wall: ops are made by devices of this century. The bounds keep
// counter days and encodings in range; the skew against real time is Observe's to check.
var (
	minWall = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	maxWall = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
)

// The days a counter's path may name, relative to the UTC date of the op's TS: a device
// may correct the past week, and a local date may be a day ahead of UTC's.
const (
	daysBack  = 7
	daysAhead = 1
)

// DecodeOp decodes and validates one op from its JSON encoding. It returns ETOOLARGE for
// more than MaxOpSize bytes, CodeInvalidOp for JSON that is not an op (unknown members
// included: an old server must not drop a field a newer client relies on), and the
// errors of Validate.
func DecodeOp(data []byte) (Op, error) {
	if len(data) > MaxOpSize {
		return Op{}, pulsebase.Errorf(pulsebase.ETOOLARGE, "an op is larger than %d bytes", MaxOpSize)
	}
	var op Op
	if err := decodeStrict(data, &op); err != nil {
		return Op{}, pulsebase.Errorf(CodeInvalidOp, "op: %v", err)
	}
	if err := op.Validate(); err != nil {
		return Op{}, err
	}
	return op, nil
}

// Validate checks everything about op that does not depend on a document, so that every
// replica gives the same answer: the id, the timestamp's range and node, the path, that
// the kind is the one the path takes, the value, observed, and the size. See the codes
// above.
func (op Op) Validate() error {
	_, err := op.parse()
	return err
}

// parsed is a valid op, taken apart.
type parsed struct {
	device   string
	seq      uint64
	ts       Timestamp
	kind     Kind
	shape    shape
	index    int               // into scalars or sets
	value    []byte            // set: the canonical value
	elem     string            // add, remove
	observed map[string]uint64 // remove
	day      day               // incr
	delta    int64             // incr
}

// shape is how a path merges.
type shape uint8

const (
	register shape = iota // last-writer-wins register; set
	orSet                 // add-wins observed-remove set; add, remove
	counter               // PN-counter per device and day; incr
)

func (op Op) parse() (parsed, error) {
	invalid := func(code, format string, args ...any) (parsed, error) {
		return parsed{}, pulsebase.Errorf(code, format, args...)
	}
	// Sizes first, so that nothing below works on a huge op.
	if len(op.Observed) > MaxDevices || op.rawSize() > MaxOpSize {
		return invalid(pulsebase.ETOOLARGE, "an op is larger than %d bytes", MaxOpSize)
	}
	device, seq, ok := parseID(op.ID)
	if !ok {
		return invalid(CodeInvalidOp, `id must be "<device>:<seq>": a device id of 1..%d printable ASCII characters other than space and ':', and an integer 1..2^53-1 without leading zeros`, MaxDeviceLen)
	}
	if op.TS.Node != device {
		return invalid(CodeInvalidOp, "ts.node must be the device of the id")
	}
	if op.TS.Wall < minWall || op.TS.Wall >= maxWall {
		return invalid(CodeInvalidOp, "ts.wall must be Unix milliseconds between 2020 and 2200")
	}
	p := parsed{device: device, seq: seq, ts: op.TS, kind: op.Kind}
	switch op.Kind {
	case KindSet, KindAdd, KindRemove, KindIncr:
	default:
		return invalid(CodeInvalidOp, "kind must be set, add, remove or incr")
	}
	if op.Value == nil {
		return invalid(CodeInvalidOp, "value is missing")
	}
	if op.Observed != nil && op.Kind != KindRemove {
		return invalid(CodeInvalidOp, "only a remove has observed")
	}
	if i := scalarIndex(op.Path); i >= 0 {
		f := &scalars[i]
		if op.Kind != KindSet {
			return invalid(CodeInvalidOp, "%s takes set, not %s", f.path, op.Kind)
		}
		v, err := f.canonical(op.Value)
		if err != nil {
			return invalid(CodeInvalidValue, "%v", err)
		}
		p.shape, p.index, p.value = register, i, v
	} else if i := setIndex(op.Path); i >= 0 {
		f := &sets[i]
		if op.Kind != KindAdd && op.Kind != KindRemove {
			return invalid(CodeInvalidOp, "%s takes add or remove, not %s", f.path, op.Kind)
		}
		e, err := f.element(op.Value)
		if err != nil {
			return invalid(CodeInvalidValue, "%v", err)
		}
		p.shape, p.index, p.elem = orSet, i, e
		if op.Kind == KindRemove {
			if len(op.Observed) == 0 {
				return invalid(CodeInvalidOp, "a remove needs observed: the seqs of the adds it cancels, by device")
			}
			for d, s := range op.Observed {
				if !validDevice(d) || s == 0 || s > MaxSeq {
					return invalid(CodeInvalidOp, "observed maps device ids to seqs 1..2^53-1")
				}
				if d == device && s >= seq {
					return invalid(CodeInvalidOp, "observed names an op of this device that is not before this one")
				}
			}
			p.observed = op.Observed
		}
	} else if ds, ok := strings.CutPrefix(op.Path, counterPrefix); ok {
		dd, ok := parseDay(ds)
		if !ok {
			return invalid(CodeInvalidPath, "water_glasses.<day> needs a date YYYY-MM-DD")
		}
		if t := dayOf(op.TS.Wall); dd < t-daysBack || dd > t+daysAhead {
			return invalid(CodeInvalidPath, "water_glasses.<day> must be from %d days before to %d day after the op's ts", daysBack, daysAhead)
		}
		if op.Kind != KindIncr {
			return invalid(CodeInvalidOp, "water_glasses takes incr, not %s (to undo, incr by the opposite)", op.Kind)
		}
		d, err := incrValue(op.Value)
		if err != nil {
			return invalid(CodeInvalidValue, "%v", err)
		}
		p.shape, p.day, p.delta = counter, dd, d
	} else {
		return invalid(CodeInvalidPath, "no path %q in the profile", truncate(op.Path, 64))
	}
	// The exact size last, and only for an op that could be near the limit: escaping
	// makes a byte at most 6, and the members' names and punctuation take under 200.
	if n := op.rawSize(); 6*n+200 > MaxOpSize {
		if b, err := json.Marshal(op); err != nil || len(b) > MaxOpSize {
			return invalid(pulsebase.ETOOLARGE, "an op is larger than %d bytes", MaxOpSize)
		}
	}
	return p, nil
}

// rawSize returns the bytes of op's strings, value and numbers before encoding.
func (op Op) rawSize() int {
	n := len(op.ID) + len(op.TS.Node) + len(op.Kind) + len(op.Path) + len(op.Value) + 30
	for d := range op.Observed {
		n += len(d) + 20
	}
	return n
}

// parseID splits "<device>:<seq>".
func parseID(id string) (device string, seq uint64, ok bool) {
	device, num, found := strings.Cut(id, ":")
	if !found || !validDevice(device) || num == "" || len(num) > 16 || num[0] == '0' {
		return "", 0, false
	}
	for _, c := range []byte(num) {
		if c < '0' || c > '9' {
			return "", 0, false
		}
	}
	seq, err := strconv.ParseUint(num, 10, 64)
	if err != nil || seq > MaxSeq {
		return "", 0, false
	}
	return device, seq, true
}

// validDevice reports whether s may be a device id: 1..MaxDeviceLen bytes of printable
// ASCII other than space and ':'.
func validDevice(s string) bool {
	if s == "" || len(s) > MaxDeviceLen {
		return false
	}
	for _, c := range []byte(s) {
		if c <= ' ' || c > '~' || c == ':' {
			return false
		}
	}
	return true
}

func scalarIndex(path string) int {
	for i := range scalars {
		if scalars[i].path == path {
			return i
		}
	}
	return -1
}

func setIndex(path string) int {
	for i := range sets {
		if sets[i].path == path {
			return i
		}
	}
	return -1
}

// truncate shortens s for an error message, on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
