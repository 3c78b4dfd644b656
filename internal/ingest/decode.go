// Package ingest turns request bodies into validated, deduplicated, encrypted samples in
// the broker: DecodeBatch reads a body, Service normalizes and publishes it. Transports
// (internal/httpapi, later the sync gateway) import it; it imports the domain, the vault
// and the broker.
package ingest

import (
	"bytes"
	"mime"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/pulsebase/pulsebase"
)

// Media types DecodeBatch reads.
const (
	MediaJSON   = "application/json"
	MediaNDJSON = "application/x-ndjson"
)

// maxDepth bounds the nesting of a body. encoding/json allows 10,000; a sample needs 3
// ({"samples":[{...}]}) and its value none, so 64 leaves room for ignored fields without
// letting "[[[[…" cost anything.
const maxDepth = 64

// DecodeBatch decodes the samples of a request body of content type contentType: a JSON
// object {"samples": [...]} (application/json) or one sample object per line
// (application/x-ndjson, blank lines ignored). Parameters other than charset=utf-8 are
// ignored. maxSamples ≤ 0 means no limit.
//
// Every batch DecodeBatch accepts decodes exactly as encoding/json would decode it into
// SampleInput values, except that DecodeBatch is stricter: it rejects invalid UTF-8,
// duplicate keys (also keys equal but for case, which encoding/json merges), a sample that
// is null, nesting deeper than 64 and, like encoding/json, a string field given another
// JSON type. Unknown fields are ignored. The value of a sample may be any JSON value; it
// is Normalize that requires a number or a level name.
//
// Errors are *pulsebase.Error: EUNSUPPORTED for another content type or charset,
// ETOOLARGE for more than maxSamples samples, EINVALID for anything else (messages give a
// byte offset or sample index, never content).
func DecodeBatch(contentType string, body []byte, maxSamples int) ([]pulsebase.SampleInput, error) {
	media, err := MediaType(contentType)
	if err != nil {
		return nil, err
	}
	// encoding/json would silently turn invalid UTF-8 into U+FFFD: refuse it instead.
	if !utf8.Valid(body) {
		return nil, pulsebase.Errorf(pulsebase.EINVALID, "body is not valid UTF-8")
	}
	if maxSamples <= 0 {
		maxSamples = int(^uint(0) >> 1)
	}
	d := &decoder{buf: body, max: maxSamples}
	if media == MediaJSON {
		err = d.batch()
	} else {
		err = d.lines()
	}
	if err != nil {
		return nil, err
	}
	if len(d.out) == 0 {
		return nil, pulsebase.Errorf(pulsebase.EINVALID, "empty batch")
	}
	d.finish()
	return d.out, nil
}

// MediaType returns the media type of a Content-Type header if DecodeBatch reads it, and an
// *Error with code EUNSUPPORTED otherwise, so a transport can refuse a body before reading
// it.
func MediaType(contentType string) (string, error) {
	media, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return "", pulsebase.Errorf(pulsebase.EUNSUPPORTED, "unreadable content type")
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") && !strings.EqualFold(cs, "utf8") {
		return "", pulsebase.Errorf(pulsebase.EUNSUPPORTED, "charset must be utf-8")
	}
	if media != MediaJSON && media != MediaNDJSON {
		return "", pulsebase.Errorf(pulsebase.EUNSUPPORTED, "content type must be %s or %s", MediaJSON, MediaNDJSON)
	}
	return media, nil
}

// decoder is a hand-written reader for the one shape DecodeBatch accepts; it is several
// times faster than encoding/json's reflection (see BenchmarkDecodeValidate) and checks
// the same grammar.
type decoder struct {
	buf   []byte
	i     int // next byte to read
	depth int
	max   int
	out   []pulsebase.SampleInput

	arena   []byte    // backing store for the values, so that they do not alias buf
	scratch []byte    // unescaped strings
	timeBuf []byte    // the start and end strings of every sample, one after the other
	times   []timeRef // where each is

	// recent holds the last few distinct strings of the fields that repeat from sample
	// to sample (source, zone), reused to save an allocation each time.
	recent [8]string
	slot   int // where the next string goes in recent
}

// The fields of SampleInput, by their index in fieldNames.
const (
	fID = iota
	fType
	fValue
	fUnit
	fStart
	fEnd
	fSource
	fZone
	nFields
)

var fieldNames = [nFields]string{"id", "type", "value", "unit", "start", "end", "source", "zone"}

// interned holds, by length, the names of the types and units, so that decoding them
// does not allocate.
var interned = func() (idx [32][]string) {
	add := func(s string) {
		for _, x := range idx[len(s)] {
			if x == s {
				return
			}
		}
		idx[len(s)] = append(idx[len(s)], s)
	}
	for _, t := range pulsebase.SampleTypes() {
		add(t.Name)
		add(t.Unit)
		for _, a := range t.Aliases {
			add(a)
		}
	}
	return idx
}()

func intern(v []byte) (string, bool) {
	if len(v) < len(interned) {
		for _, s := range interned[len(v)] {
			if s == string(v) {
				return s, true
			}
		}
	}
	return "", false
}

func (d *decoder) syntax(what string) error {
	if d.i >= len(d.buf) {
		return pulsebase.Errorf(pulsebase.EINVALID, "malformed JSON: unexpected end of body")
	}
	return pulsebase.Errorf(pulsebase.EINVALID, "malformed JSON at byte %d: %s", d.i, what)
}

func (d *decoder) tooLarge() error {
	return pulsebase.Errorf(pulsebase.ETOOLARGE, "batch has more than %d samples", d.max)
}

// batch reads {"samples": [...]}.
func (d *decoder) batch() error {
	d.ws()
	if d.i >= len(d.buf) {
		return pulsebase.Errorf(pulsebase.EINVALID, "empty body")
	}
	if d.buf[d.i] != '{' {
		return pulsebase.Errorf(pulsebase.EINVALID, `body must be a JSON object {"samples": [...]}`)
	}
	d.i++
	d.depth++
	seen := false
	for first := true; ; first = false {
		d.ws()
		if first && d.i < len(d.buf) && d.buf[d.i] == '}' {
			d.i++
			break
		}
		key, err := d.key()
		if err != nil {
			return err
		}
		if foldEqual(key, "samples") {
			if seen {
				return pulsebase.Errorf(pulsebase.EINVALID, `duplicate key "samples"`)
			}
			seen = true
			if err := d.samples(); err != nil {
				return err
			}
		} else if _, err := d.skip(); err != nil {
			return err
		}
		if end, err := d.next('}'); err != nil {
			return err
		} else if end {
			break
		}
	}
	d.depth--
	d.ws()
	if d.i != len(d.buf) {
		return d.syntax("data after the top-level value")
	}
	if !seen {
		return pulsebase.Errorf(pulsebase.EINVALID, `body has no "samples" array`)
	}
	return nil
}

// samples reads the array of samples, or null.
func (d *decoder) samples() error {
	d.ws()
	if d.hasLiteral("null") {
		d.i += 4
		return nil
	}
	if d.i >= len(d.buf) || d.buf[d.i] != '[' {
		if d.i >= len(d.buf) {
			return d.syntax("")
		}
		return pulsebase.Errorf(pulsebase.EINVALID, `"samples" must be an array`)
	}
	d.i++
	if err := d.push(); err != nil {
		return err
	}
	// Size the result from the number of objects, which bounds the number of samples.
	d.alloc(bytes.Count(d.buf[d.i:], []byte{'{'}))
	d.ws()
	if d.i < len(d.buf) && d.buf[d.i] == ']' {
		d.i++
		d.depth--
		return nil
	}
	for {
		if err := d.sample(); err != nil {
			return err
		}
		if end, err := d.next(']'); err != nil {
			return err
		} else if end {
			break
		}
	}
	d.depth--
	return nil
}

// alloc sizes the buffers for at most n samples.
func (d *decoder) alloc(n int) {
	n = min(n, d.max)
	d.out = make([]pulsebase.SampleInput, 0, n)
	// Times are copied from the body, so they never need more than it. 52 bytes hold a
	// start and an end with offsets and no fraction.
	d.timeBuf = make([]byte, 0, min(52*n, len(d.buf)))
	d.times = make([]timeRef, 0, min(2*n, len(d.buf)/8))
}

// lines reads NDJSON.
func (d *decoder) lines() error {
	d.alloc(bytes.Count(d.buf, []byte{'\n'}) + 1)
	body := d.buf
	for lineStart := 0; lineStart < len(body); {
		end := bytes.IndexByte(body[lineStart:], '\n')
		if end < 0 {
			end = len(body)
		} else {
			end += lineStart
		}
		// Parse within the line, with offsets still relative to the body.
		d.buf = body[:end]
		d.i = lineStart
		d.ws()
		if d.i < end {
			if err := d.sample(); err != nil {
				return err
			}
			d.ws()
			if d.i != end {
				return d.syntax("data after the sample on its line")
			}
		}
		lineStart = end + 1
	}
	d.buf = body
	return nil
}

// sample reads one sample object and appends it to d.out.
func (d *decoder) sample() error {
	if len(d.out) >= d.max {
		return d.tooLarge()
	}
	if d.i >= len(d.buf) {
		return d.syntax("")
	}
	if d.buf[d.i] != '{' {
		return pulsebase.Errorf(pulsebase.EINVALID, "sample %d is not an object", len(d.out))
	}
	d.i++
	if err := d.push(); err != nil {
		return err
	}
	d.out = append(d.out, pulsebase.SampleInput{})
	s := &d.out[len(d.out)-1]
	var seen [nFields]bool
	d.ws()
	if d.i < len(d.buf) && d.buf[d.i] == '}' {
		d.i++
		d.depth--
		return nil
	}
	for {
		key, err := d.key()
		if err != nil {
			return err
		}
		f := field(key)
		switch {
		case f < 0:
			if _, err := d.skip(); err != nil {
				return err
			}
		case seen[f]:
			return pulsebase.Errorf(pulsebase.EINVALID, "sample %d: duplicate key %q", len(d.out)-1, fieldNames[f])
		case f == fValue:
			seen[f] = true
			raw, err := d.skip()
			if err != nil {
				return err
			}
			s.Value = d.keep(raw)
		default:
			seen[f] = true
			d.ws()
			if d.hasLiteral("null") { // encoding/json leaves the field as it is
				d.i += 4
				break
			}
			if d.i >= len(d.buf) || d.buf[d.i] != '"' {
				if d.i >= len(d.buf) {
					return d.syntax("")
				}
				return pulsebase.Errorf(pulsebase.EINVALID, "sample %d: %s must be a string", len(d.out)-1, fieldNames[f])
			}
			v, err := d.str()
			if err != nil {
				return err
			}
			d.set(s, f, v)
		}
		if end, err := d.next('}'); err != nil {
			return err
		} else if end {
			break
		}
	}
	d.depth--
	return nil
}

// set stores the decoded string v (which may point into scratch) as field f of s.
func (d *decoder) set(s *pulsebase.SampleInput, f int, v []byte) {
	var str string
	switch {
	case len(v) == 0:
	case f == fType || f == fUnit:
		var ok bool
		if str, ok = intern(v); !ok {
			str = string(v)
		}
	case f == fStart || f == fEnd:
		// Times differ from sample to sample: gather them into one string for the whole
		// batch (see finish). Nothing but the SampleInput holds on to them.
		d.times = append(d.times, timeRef{sample: int32(len(d.out) - 1), end: f == fEnd, off: int32(len(d.timeBuf)), n: int32(len(v))})
		d.timeBuf = append(d.timeBuf, v...)
		return
	case f == fSource || f == fZone:
		str = d.reuse(v)
	default:
		str = string(v)
	}
	switch f {
	case fID:
		s.ID = str
	case fType:
		s.Type = str
	case fUnit:
		s.Unit = str
	case fStart:
		s.Start = str
	case fEnd:
		s.End = str
	case fSource:
		s.Source = str
	case fZone:
		s.Zone = str
	}
}

// reuse returns v as a string, one of recent if it is there.
func (d *decoder) reuse(v []byte) string {
	for _, r := range d.recent {
		if r == string(v) {
			return r
		}
	}
	str := string(v)
	d.recent[d.slot] = str
	d.slot = (d.slot + 1) % len(d.recent)
	return str
}

// timeRef says where the start or end of sample is in timeBuf.
type timeRef struct {
	sample, off, n int32
	end            bool
}

// finish sets the start and end strings gathered in timeBuf.
func (d *decoder) finish() {
	all := string(d.timeBuf)
	for _, r := range d.times {
		s := &d.out[r.sample]
		if r.end {
			s.End = all[r.off : r.off+r.n]
		} else {
			s.Start = all[r.off : r.off+r.n]
		}
	}
}

// keep copies a raw value out of the body into the arena, so that the samples do not keep
// the body alive nor change if the caller reuses it.
func (d *decoder) keep(raw []byte) []byte {
	if len(raw) > cap(d.arena)-len(d.arena) {
		d.arena = make([]byte, 0, max(4096, len(raw)))
	}
	n := len(d.arena)
	d.arena = append(d.arena, raw...)
	return d.arena[n:len(d.arena):len(d.arena)]
}

// field returns the index of the field key names, -1 for an unknown field. Like
// encoding/json it prefers an exact match and else matches regardless of case (with
// Unicode simple folding: "ſource" is "source").
func field(key []byte) int {
	switch string(key) {
	case "id":
		return fID
	case "type":
		return fType
	case "value":
		return fValue
	case "unit":
		return fUnit
	case "start":
		return fStart
	case "end":
		return fEnd
	case "source":
		return fSource
	case "zone":
		return fZone
	}
	for f, n := range fieldNames {
		if foldEqual(key, n) {
			return f
		}
	}
	return -1
}

// foldEqual reports whether key equals the lower-case ASCII name the way encoding/json
// compares names: rune by rune after unicode.ToUpper(unicode.ToLower(r)).
func foldEqual(key []byte, name string) bool {
	j := 0
	for i := 0; i < len(key); {
		if j >= len(name) {
			return false
		}
		want := rune(name[j]) - 'a' + 'A'
		if name[j] < 'a' || name[j] > 'z' {
			want = rune(name[j])
		}
		c := key[i]
		if c < utf8.RuneSelf {
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			if rune(c) != want {
				return false
			}
			i++
		} else {
			r, n := utf8.DecodeRune(key[i:])
			if unicode.ToUpper(unicode.ToLower(r)) != want {
				return false
			}
			i += n
		}
		j++
	}
	return j == len(name)
}

func (d *decoder) ws() {
	for d.i < len(d.buf) {
		switch d.buf[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

func (d *decoder) hasLiteral(lit string) bool {
	return len(d.buf)-d.i >= len(lit) && string(d.buf[d.i:d.i+len(lit)]) == lit
}

func (d *decoder) push() error {
	d.depth++
	if d.depth > maxDepth {
		return pulsebase.Errorf(pulsebase.EINVALID, "JSON nested deeper than %d", maxDepth)
	}
	return nil
}

// next reads the ',' between members or elements, or the closing byte; it reports
// whether it read the closing byte.
func (d *decoder) next(closing byte) (bool, error) {
	d.ws()
	if d.i >= len(d.buf) {
		return false, d.syntax("")
	}
	switch d.buf[d.i] {
	case ',':
		d.i++
		d.ws()
		return false, nil
	case closing:
		d.i++
		return true, nil
	}
	return false, d.syntax("expected ',' or '" + string(closing) + "'")
}

// key reads a member name and its ':'.
func (d *decoder) key() ([]byte, error) {
	d.ws()
	if d.i >= len(d.buf) || d.buf[d.i] != '"' {
		return nil, d.syntax("expected a member name")
	}
	k, err := d.str()
	if err != nil {
		return nil, err
	}
	d.ws()
	if d.i >= len(d.buf) || d.buf[d.i] != ':' {
		return nil, d.syntax("expected ':'")
	}
	d.i++
	return k, nil
}

// str reads a string starting at the '"' at d.i and returns its contents: a slice of buf
// when it has no escapes, else of scratch (valid until the next call).
func (d *decoder) str() ([]byte, error) {
	start := d.i + 1
	i := start
	for i < len(d.buf) && !special[d.buf[i]] {
		i++
	}
	if i < len(d.buf) {
		switch c := d.buf[i]; {
		case c == '"':
			d.i = i + 1
			return d.buf[start:i], nil
		case c < 0x20:
			d.i = i
			return nil, d.syntax("control character in string")
		}
	}
	if i >= len(d.buf) {
		d.i = i
		return nil, d.syntax("")
	}
	// Slow path: unescape like encoding/json, including its U+FFFD for lone surrogates.
	out := append(d.scratch[:0], d.buf[start:i]...)
	for i < len(d.buf) {
		c := d.buf[i]
		switch {
		case c == '"':
			d.i = i + 1
			d.scratch = out
			return out, nil
		case c < 0x20:
			d.i = i
			return nil, d.syntax("control character in string")
		case c != '\\':
			out = append(out, c)
			i++
			continue
		}
		if i+1 >= len(d.buf) {
			d.i = len(d.buf)
			return nil, d.syntax("")
		}
		switch e := d.buf[i+1]; e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r := hex4(d.buf[i+2:])
			if r < 0 {
				d.i = i
				return nil, d.syntax("bad \\u escape")
			}
			i += 6
			if utf16.IsSurrogate(r) {
				if r2 := hex4u(d.buf[i:]); r2 >= 0 {
					if dec := utf16.DecodeRune(r, r2); dec != unicode.ReplacementChar {
						out = utf8.AppendRune(out, dec)
						i += 6
						continue
					}
				}
				r = unicode.ReplacementChar
			}
			out = utf8.AppendRune(out, r)
			continue
		default:
			d.i = i
			return nil, d.syntax("bad escape")
		}
		i += 2
	}
	d.i = i
	return nil, d.syntax("")
}

// special marks the bytes that end the fast scan of a string.
var special = func() (t [256]bool) {
	for c := range 0x20 {
		t[c] = true
	}
	t['"'], t['\\'] = true, true
	return t
}()

// hex4 decodes the four hex digits at the start of b, or returns -1.
func hex4(b []byte) rune {
	if len(b) < 4 {
		return -1
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r*16 + rune(c)
	}
	return r
}

// hex4u decodes a \uXXXX escape at the start of b, or returns -1.
func hex4u(b []byte) rune {
	if len(b) < 6 || b[0] != '\\' || b[1] != 'u' {
		return -1
	}
	return hex4(b[2:])
}

// skip reads any JSON value and returns its text.
func (d *decoder) skip() ([]byte, error) {
	d.ws()
	start := d.i
	if d.i >= len(d.buf) {
		return nil, d.syntax("")
	}
	switch c := d.buf[d.i]; {
	case c == '"':
		if _, err := d.str(); err != nil {
			return nil, err
		}
	case c == '-' || '0' <= c && c <= '9':
		if err := d.number(); err != nil {
			return nil, err
		}
	case c == 't' && d.hasLiteral("true"), c == 'n' && d.hasLiteral("null"):
		d.i += 4
	case c == 'f' && d.hasLiteral("false"):
		d.i += 5
	case c == '[':
		d.i++
		if err := d.push(); err != nil {
			return nil, err
		}
		d.ws()
		if d.i < len(d.buf) && d.buf[d.i] == ']' {
			d.i++
		} else {
			for {
				if _, err := d.skip(); err != nil {
					return nil, err
				}
				if end, err := d.next(']'); err != nil {
					return nil, err
				} else if end {
					break
				}
			}
		}
		d.depth--
	case c == '{':
		d.i++
		if err := d.push(); err != nil {
			return nil, err
		}
		d.ws()
		if d.i < len(d.buf) && d.buf[d.i] == '}' {
			d.i++
		} else {
			for {
				if _, err := d.key(); err != nil {
					return nil, err
				}
				if _, err := d.skip(); err != nil {
					return nil, err
				}
				if end, err := d.next('}'); err != nil {
					return nil, err
				} else if end {
					break
				}
			}
		}
		d.depth--
	default:
		return nil, d.syntax("expected a value")
	}
	return d.buf[start:d.i], nil
}

// number reads a number in JSON syntax: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (d *decoder) number() error {
	b, i := d.buf, d.i
	if b[i] == '-' {
		i++
	}
	digits := func() bool {
		s := i
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
		return i > s
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case !digits():
		d.i = i
		return d.syntax("bad number")
	}
	if i < len(b) && b[i] == '.' {
		i++
		if !digits() {
			d.i = i
			return d.syntax("bad number")
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if !digits() {
			d.i = i
			return d.syntax("bad number")
		}
	}
	d.i = i
	return nil
}
