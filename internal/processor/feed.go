package processor

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/broker"
	"github.com/pulsebase/pulsebase/internal/vault"
)

// Reading a user's change feed (the HTTP fallback of API.md's sync, and the recovery the
// sync gateway of issue [4] does).
//
// A cursor names a position in the feed: the CHANGES message (stream sequence) and how many
// of its changes were read, plus the stream's creation time as an epoch, so that a cursor
// from a stream that was since recreated is refused rather than misread. It is opaque to
// clients ("c1." and base64url), the same on every server, and survives restarts: it is a
// position in the broker, not in any server's memory.

// ECURSOREXPIRED is the code of a cursor older than what the feed retains (410).
const ECURSOREXPIRED = "cursor_expired"

// Cursor is a position in a user's change feed: after the first N changes of message Seq.
type Cursor struct {
	Epoch int64 // the CHANGES stream's creation time, Unix seconds
	Seq   uint64
	N     int
}

// String encodes c for clients.
func (c Cursor) String() string {
	raw := fmt.Sprintf("%d.%d.%d", c.Epoch, c.Seq, c.N)
	return "c1." + base64.RawURLEncoding.EncodeToString([]byte(raw))
}

// ParseCursor decodes a cursor String made; anything else is EINVALID.
func ParseCursor(s string) (Cursor, error) {
	bad := pulsebase.Errorf(pulsebase.EINVALID, "not a cursor this server gave")
	rest, ok := strings.CutPrefix(s, "c1.")
	if !ok || len(rest) > 80 {
		return Cursor{}, bad
	}
	raw, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil {
		return Cursor{}, bad
	}
	parts := strings.Split(string(raw), ".")
	if len(parts) != 3 {
		return Cursor{}, bad
	}
	epoch, err1 := strconv.ParseInt(parts[0], 10, 64)
	seq, err2 := strconv.ParseUint(parts[1], 10, 64)
	n, err3 := strconv.Atoi(parts[2])
	if err1 != nil || err2 != nil || err3 != nil || n < 0 {
		return Cursor{}, bad
	}
	return Cursor{Epoch: epoch, Seq: seq, N: n}, nil
}

// FeedChange is a change with the cursor just after it.
type FeedChange struct {
	Cursor string         `json:"cursor"`
	Kind   string         `json:"kind"`
	Key    string         `json:"key"`
	Data   map[string]any `json:"data"`
}

// FeedPage is up to a limit of changes after a cursor.
type FeedPage struct {
	Changes []FeedChange `json:"changes"`
	// Cursor is where the next read starts: after the last change returned, or where the
	// read started when there was none.
	Cursor  string `json:"cursor"`
	HasMore bool   `json:"has_more"`
}

// ReadFeed returns up to limit changes of user's feed after the cursor after ("" for the
// oldest change retained). A cursor of another epoch, or older than the feed's retention,
// is an error with code ECURSOREXPIRED: the client must start again from a snapshot.
func ReadFeed(ctx context.Context, js jetstream.JetStream, keys *vault.Keys, user, after string, limit int) (FeedPage, error) {
	st, err := js.Stream(ctx, broker.StreamChanges)
	if err != nil {
		return FeedPage{}, err
	}
	info := st.CachedInfo()
	epoch := info.Created.Unix()
	pos := Cursor{Epoch: epoch, Seq: info.State.FirstSeq}
	if info.State.FirstSeq > 0 {
		pos.Seq = info.State.FirstSeq - 1 // before the first message
		pos.N = 1 << 30
	}
	if after != "" {
		c, err := ParseCursor(after)
		if err != nil {
			return FeedPage{}, err
		}
		// Messages after the cursor's may have been removed by retention when the cursor
		// points before the first one retained.
		if c.Epoch != epoch || c.Seq+1 < info.State.FirstSeq {
			return FeedPage{}, pulsebase.Errorf(ECURSOREXPIRED, "the change feed no longer holds this cursor's position; start again from a snapshot")
		}
		pos = c
	}
	page := FeedPage{Changes: []FeedChange{}}
	subject := broker.ChangeSubject(user)
	next := pos.Seq // the message to look at first: the cursor's own, for its unread changes
	if pos.Seq == 0 {
		next = 1
	}
	for {
		m, err := st.GetMsg(ctx, next, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return FeedPage{}, fmt.Errorf("read change feed: %w", err)
		}
		cb, err := OpenChanges(keys, m.Header.Get(jetstream.MsgIDHeader), m.Data)
		if err != nil {
			return FeedPage{}, fmt.Errorf("open change message %d: %w", m.Sequence, err)
		}
		first := 0
		if m.Sequence == pos.Seq {
			first = min(pos.N, len(cb.Changes))
		}
		for i := first; i < len(cb.Changes); i++ {
			if len(page.Changes) == limit {
				page.HasMore = true
				break
			}
			pos = Cursor{Epoch: epoch, Seq: m.Sequence, N: i + 1}
			c := cb.Changes[i]
			page.Changes = append(page.Changes, FeedChange{Cursor: pos.String(), Kind: c.Kind, Key: c.Key, Data: c.Data})
		}
		if page.HasMore {
			break
		}
		if m.Sequence == pos.Seq && pos.N < len(cb.Changes) {
			pos.N = len(cb.Changes)
		}
		next = m.Sequence + 1
		if len(page.Changes) == limit {
			// Exactly at the limit: say whether anything follows.
			if _, err := st.GetMsg(ctx, next, jetstream.WithGetMsgSubject(subject)); err == nil {
				page.HasMore = true
			}
			break
		}
	}
	page.Cursor = pos.String()
	return page, nil
}
