package processor

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
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

// allOfMessage is the N of a cursor after every change of its message.
const allOfMessage = 1 << 30

// Encode gives c to clients of user's feed. The encoding carries a tag of the user, so
// that a cursor of one user's feed is refused, not misread, in another's.
func (c Cursor) Encode(user string) string {
	raw := fmt.Sprintf("%d.%d.%d.%s", c.Epoch, c.Seq, c.N, cursorTag(user))
	return "c1." + base64.RawURLEncoding.EncodeToString([]byte(raw))
}

// cursorTag is a short digest of the user a cursor belongs to. It is no secret and needs
// none: the feed a client reads is chosen by its token, never by its cursor.
func cursorTag(user string) string {
	h := sha256.Sum256([]byte("pulsebase cursor\x00" + user))
	return hex.EncodeToString(h[:8])
}

// ParseCursor decodes a cursor Encode made for user; anything else is EINVALID.
func ParseCursor(s, user string) (Cursor, error) {
	bad := pulsebase.Errorf(pulsebase.EINVALID, "not a cursor this server gave for this user's feed")
	rest, ok := strings.CutPrefix(s, "c1.")
	if !ok || len(rest) > 100 {
		return Cursor{}, bad
	}
	raw, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil {
		return Cursor{}, bad
	}
	parts := strings.Split(string(raw), ".")
	if len(parts) != 4 || parts[3] != cursorTag(user) {
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

// Feed reads one user's change feed: the messages of the CHANGES stream on the user's
// subject, in stream order.
type Feed struct {
	st      jetstream.Stream
	user    string
	subject string
	epoch   int64
	first   uint64 // the stream's first retained sequence when opened
	last    uint64 // its last sequence when opened
}

// OpenFeed returns user's feed as the stream is now.
func OpenFeed(ctx context.Context, js jetstream.JetStream, user string) (*Feed, error) {
	st, err := js.Stream(ctx, broker.StreamChanges)
	if err != nil {
		return nil, fmt.Errorf("change stream: %w", err)
	}
	info := st.CachedInfo()
	return &Feed{st: st, user: user, subject: broker.ChangeSubject(user), epoch: info.Created.Unix(),
		first: info.State.FirstSeq, last: info.State.LastSeq}, nil
}

// Oldest is the position before the oldest change the feed retains.
func (f *Feed) Oldest() Cursor {
	if f.first == 0 {
		return Cursor{Epoch: f.epoch}
	}
	return Cursor{Epoch: f.epoch, Seq: f.first - 1, N: allOfMessage}
}

// Head is the position after every change stored when the feed was opened.
func (f *Feed) Head() Cursor { return f.After(f.last) }

// Epoch is the stream's creation time, the epoch of the feed's cursors.
func (f *Feed) Epoch() int64 { return f.epoch }

// After is the position after every change of message seq.
func (f *Feed) After(seq uint64) Cursor { return AfterMessage(f.epoch, seq) }

// AfterMessage is the position after every change of message seq of the stream of epoch.
func AfterMessage(epoch int64, seq uint64) Cursor {
	return Cursor{Epoch: epoch, Seq: seq, N: allOfMessage}
}

// Resume decodes a client's cursor and checks that the feed still holds everything after
// it: a cursor of another epoch (a recreated stream), or older than the feed's retention,
// is an error with code ECURSOREXPIRED, and the client must start again from a snapshot.
func (f *Feed) Resume(after string) (Cursor, error) {
	c, err := ParseCursor(after, f.user)
	if err != nil {
		return Cursor{}, err
	}
	// Messages after the cursor's may have been removed by retention when the cursor
	// points before the first one retained.
	if c.Epoch != f.epoch || c.Seq+1 < f.first {
		return Cursor{}, pulsebase.Errorf(ECURSOREXPIRED, "the change feed no longer holds this cursor's position; start again from a snapshot")
	}
	return c, nil
}

// Next returns the user's first message at or after sequence seq, or nil when there is
// none yet.
func (f *Feed) Next(ctx context.Context, seq uint64) (*jetstream.RawStreamMsg, error) {
	m, err := f.st.GetMsg(ctx, max(seq, 1), jetstream.WithGetMsgSubject(f.subject))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read change feed: %w", err)
	}
	return m, nil
}

// Unread returns how many of the first changes of message seq a reader at c has read.
func (c Cursor) Unread(seq uint64, n int) int {
	if seq == c.Seq {
		return min(c.N, n)
	}
	return 0
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
// oldest change retained); see Feed.Resume for the errors of a cursor that cannot be used.
func ReadFeed(ctx context.Context, js jetstream.JetStream, keys *vault.Keys, user, after string, limit int) (FeedPage, error) {
	f, err := OpenFeed(ctx, js, user)
	if err != nil {
		return FeedPage{}, err
	}
	pos := f.Oldest()
	if after != "" {
		if pos, err = f.Resume(after); err != nil {
			return FeedPage{}, err
		}
	}
	page := FeedPage{Changes: []FeedChange{}}
	next := pos.Seq // the message to look at first: the cursor's own, for its unread changes
	for {
		m, err := f.Next(ctx, next)
		if err != nil {
			return FeedPage{}, err
		}
		if m == nil {
			break
		}
		cb, err := OpenChanges(keys, m.Header.Get(jetstream.MsgIDHeader), m.Data)
		if err != nil {
			return FeedPage{}, fmt.Errorf("open change message %d: %w", m.Sequence, err)
		}
		for i := pos.Unread(m.Sequence, len(cb.Changes)); i < len(cb.Changes); i++ {
			if len(page.Changes) == limit {
				page.HasMore = true
				break
			}
			pos = Cursor{Epoch: f.epoch, Seq: m.Sequence, N: i + 1}
			c := cb.Changes[i]
			page.Changes = append(page.Changes, FeedChange{Cursor: pos.Encode(user), Kind: c.Kind, Key: c.Key, Data: c.Data})
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
			if m, err := f.Next(ctx, next); err == nil && m != nil {
				page.HasMore = true
			}
			break
		}
	}
	page.Cursor = pos.Encode(user)
	return page, nil
}
