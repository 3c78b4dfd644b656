package syncgw

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/processor"
	"github.com/pulsebase/pulsebase/internal/profile"
)

// inFrame is any frame a client sends; Type says which members matter.
type inFrame struct {
	Type    string            `json:"type"`
	Token   string            `json:"token"`
	Device  string            `json:"device"`
	Cursor  *string           `json:"cursor"`
	Ref     string            `json:"ref"`
	Samples json.RawMessage   `json:"samples"`
	Doc     string            `json:"doc"`
	Ops     []json.RawMessage `json:"ops"`
	// User is the internal id of the user whose data to sync (a hello's); absent or "me"
	// is the caller's own.
	User string `json:"user"`
}

// welcome is the first frame the gateway sends.
type welcome struct {
	Type      string    `json:"type"`
	Cursor    string    `json:"cursor"`
	Recovered bool      `json:"recovered"`
	Snapshot  *Snapshot `json:"snapshot,omitempty"`
	// User is the internal user whose data the connection syncs (the token's own unless
	// the hello named another); Device the device this connection is.
	User   string `json:"user"`
	Device string `json:"device"`
	// Reason says why a cursor the client sent could not be used (recovered false).
	Reason string `json:"reason,omitempty"`
}

// samplesAck answers a samples frame.
type samplesAck struct {
	Type       string                `json:"type"`
	Ref        string                `json:"ref"`
	Accepted   int                   `json:"accepted"`
	Duplicates int                   `json:"duplicates"`
	Rejected   []pulsebase.Rejection `json:"rejected"`
}

// opsAck answers an ops frame: each op's outcome, the profile version, and the cursor of
// the change carrying the applied ops (or the connection's position when none applied).
type opsAck struct {
	Type    string           `json:"type"`
	Ref     string           `json:"ref"`
	Cursor  string           `json:"cursor"`
	Version int64            `json:"version"`
	Results []profile.Result `json:"results"`
}

// errorFrame reports a problem. With a ref it answers that request and the connection
// stays open; without one the gateway closes the connection after it.
type errorFrame struct {
	Type   string `json:"type"`
	Ref    string `json:"ref,omitempty"`
	Code   string `json:"code"`
	Detail string `json:"detail"`
}

// frame is an encoded frame and, for a series change, the index of its category in
// pulsebase.Categories() (-1 for any other frame).
type frame struct {
	b   []byte
	cat int8
	// kind says which change a frame carries, so that a connection that may read some
	// categories only (a coach's) knows which frames it may pass on, and which it must
	// reduce first.
	kind   frameKind
	change bool
	// stored is when the change's message was stored, for a live change; zero otherwise.
	stored time.Time
}

// frameKind is the kind of change a frame carries.
type frameKind uint8

// Frame kinds: everything a coach's connection may be sent is a series or a daily change.
const (
	kindOther  frameKind = iota // not a change, or a change of another kind
	kindSeries                  // a series change: a bucket of one type
	kindDaily                   // a daily change: fields of one day object
)

// changeKind is the frameKind of a change of kind k.
func changeKind(k string) frameKind {
	switch k {
	case "series":
		return kindSeries
	case processor.KindDaily:
		return kindDaily
	}
	return kindOther
}

// encode marshals a frame the gateway built (which cannot fail to marshal).
func encode(v any) frame {
	b, err := json.Marshal(v)
	if err != nil {
		panic("syncgw: encode frame: " + err.Error())
	}
	return frame{b: b, cat: -1}
}

// frames opens message seq of user's feed and encodes its changes, skipping those a
// reader at from has read, and series changes of categories the user does not consent
// to collect (any more).
func (g *Gateway) frames(ctx context.Context, user string, epoch int64, seq uint64, msgID string, data []byte, from processor.Cursor) ([]frame, error) {
	keys, err := g.deps.Vault.UserKeys(ctx, user)
	if err != nil {
		return nil, err
	}
	changes, err := processor.OpenRawChanges(keys, msgID, data)
	if err != nil {
		return nil, err
	}
	var allowed []bool // by category index, looked up at the first series change
	out := make([]frame, 0, len(changes))
	for i := from.Unread(seq, len(changes)); i < len(changes); i++ {
		c := changes[i]
		cat := int8(-1)
		if c.Kind == "series" {
			typ, _, _ := strings.Cut(c.Key, "/")
			if t, ok := pulsebase.LookupType(typ); ok {
				cat = categoryIndex(t.Category)
			}
			if allowed == nil && g.deps.Consent != nil {
				allowed = g.allowedCategories(ctx, user)
			}
			if cat >= 0 && allowed != nil && !allowed[cat] {
				continue
			}
		}
		cur := processor.Cursor{Epoch: epoch, Seq: seq, N: i + 1}.Encode(user)
		out = append(out, frame{b: changeFrame(cur, c), cat: cat, kind: changeKind(c.Kind), change: true})
	}
	return out, nil
}

// changeFrame encodes {"type":"change","cursor":…,"kind":…,"key":…,"data":…} without
// decoding the change's data.
func changeFrame(cursor string, c processor.RawChange) []byte {
	data := c.Data
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	b := make([]byte, 0, 48+len(cursor)+len(c.Kind)+len(c.Key)+len(data))
	b = append(b, `{"type":"change","cursor":`...)
	b = appendString(b, cursor)
	b = append(b, `,"kind":`...)
	b = appendString(b, c.Kind)
	b = append(b, `,"key":`...)
	b = appendString(b, c.Key)
	b = append(b, `,"data":`...)
	b = append(b, data...)
	return append(b, '}')
}

// appendString appends s as a JSON string.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// categoryIndex is the index of c in pulsebase.Categories(), or -1.
func categoryIndex(c pulsebase.Category) int8 {
	for i, x := range pulsebase.Categories() {
		if x == c {
			return int8(i)
		}
	}
	return -1
}
