package crdt

import (
	"cmp"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pulsebase/pulsebase"
)

// DefaultMaxSkew is how far ahead of the local clock a remote timestamp may be before
// Observe refuses it. A device whose clock runs an hour fast is broken; accepting its
// timestamps would drag every clock that hears from it an hour into the future.
const DefaultMaxSkew = time.Hour

// Timestamp is a hybrid logical clock reading. Timestamps are totally ordered by Compare:
// Wall, then Logical, then Node.
type Timestamp struct {
	// Wall is the physical part, in milliseconds since the Unix epoch.
	Wall int64 `json:"wall"`
	// Logical orders the events of one Wall millisecond.
	Logical uint32 `json:"logical"`
	// Node is the id of the clock that made the reading (a device id); it breaks ties
	// between clocks.
	Node string `json:"node"`
}

// Compare returns -1, 0 or +1 as t is before, equal to or after u.
func (t Timestamp) Compare(u Timestamp) int {
	if c := cmp.Compare(t.Wall, u.Wall); c != 0 {
		return c
	}
	if c := cmp.Compare(t.Logical, u.Logical); c != 0 {
		return c
	}
	return strings.Compare(t.Node, u.Node)
}

// String formats t as wall.logical@node, for logs and test messages.
func (t Timestamp) String() string {
	return strconv.FormatInt(t.Wall, 10) + "." + strconv.FormatUint(uint64(t.Logical), 10) + "@" + t.Node
}

// HLC is a hybrid logical clock (Kulkarni, Demirbas et al., "Logical Physical Clocks and
// Consistent Snapshots in Globally Distributed Databases", 2014): its readings never go
// backwards, stay within the accepted skew of physical time, and are after every remote
// reading the clock has observed, so an edit made after seeing another sorts after it.
//
// The physical time is passed in rather than read, so that callers and tests decide what
// "now" is. An HLC is safe for concurrent use.
type HLC struct {
	node    string
	maxSkew int64 // milliseconds

	mu      sync.Mutex
	wall    int64  // guarded by mu; the last reading's Wall
	logical uint32 // guarded by mu; the last reading's Logical
}

// NewHLC returns a clock for node that refuses remote readings more than maxSkew ahead of
// its physical time; zero means DefaultMaxSkew.
func NewHLC(node string, maxSkew time.Duration) *HLC {
	if maxSkew <= 0 {
		maxSkew = DefaultMaxSkew
	}
	return &HLC{node: node, maxSkew: maxSkew.Milliseconds()}
}

// Now returns a reading for a local event (an edit) at physical time wall: after every
// earlier reading of c, and equal to wall's millisecond when the clock is not ahead of it.
func (c *HLC) Now(wall time.Time) Timestamp {
	pt := wall.UnixMilli()
	c.mu.Lock()
	defer c.mu.Unlock()
	if pt > c.wall {
		c.wall, c.logical = pt, 0
	} else {
		c.tick()
	}
	return c.read()
}

// Observe merges a remote reading, received at physical time wall, into the clock and
// returns the reading of the receive event, which is after both remote and every earlier
// reading of c. A remote Wall more than the maximum skew ahead of wall is refused with an
// error of code clock_skew and leaves the clock as it was: one device with a clock hours
// fast must not drag the server's clock, and through it every device's, into the future.
func (c *HLC) Observe(remote Timestamp, wall time.Time) (Timestamp, error) {
	pt := wall.UnixMilli()
	if pt <= math.MaxInt64-c.maxSkew && remote.Wall > pt+c.maxSkew {
		return Timestamp{}, pulsebase.Errorf(CodeClockSkew,
			"the op's time is %s ahead of the server's clock (at most %s accepted)",
			time.Duration(remote.Wall-pt)*time.Millisecond, time.Duration(c.maxSkew)*time.Millisecond)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// The receive rule of the paper: the new Wall is the largest of the three; the logical
	// part continues whichever of the clock and the remote reading holds that Wall.
	l := max(c.wall, remote.Wall, pt)
	switch {
	case l == c.wall && l == remote.Wall:
		c.logical = max(c.logical, remote.Logical)
		c.tick()
	case l == c.wall:
		c.tick()
	case l == remote.Wall:
		c.wall, c.logical = l, remote.Logical
		c.tick()
	default:
		c.wall, c.logical = l, 0
	}
	return c.read(), nil
}

// tick advances the logical part. When it would overflow it carries into Wall instead: a
// millisecond early is harmless, a reading that goes backwards is not.
func (c *HLC) tick() {
	if c.logical == math.MaxUint32 {
		c.wall, c.logical = c.wall+1, 0
		return
	}
	c.logical++
}

func (c *HLC) read() Timestamp {
	return Timestamp{Wall: c.wall, Logical: c.logical, Node: c.node}
}
