package syncgw

import (
	"bytes"
	"encoding/json"
	"slices"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/auth"
	"github.com/pulsebase/pulsebase/internal/processor"
)

// scoped reports whether the connection may read some categories of its user's data only
// (a coach's, under the user's grants). Its access is fixed by the hello; a grant change
// that would alter it closes the connection instead (recheckGrant), so that what a
// connection was sent never needs taking back.
func (c *conn) scoped() bool { return c.access.Categories != nil }

// scopeFrames returns the frames of frames a scoped connection may be sent: series changes
// of the categories it may read, and daily changes reduced to those categories' fields.
// Every other change — profile, consent, recommendation, rejection, and any kind added
// later — is private to the user and their devices, so it is dropped: deny by default.
// An unscoped connection gets frames as they are, without a copy.
func (c *conn) scopeFrames(frames []frame) []frame {
	if !c.scoped() || len(frames) == 0 {
		return frames
	}
	var out []frame
	for _, f := range frames {
		switch f.kind {
		case kindSeries:
			// The category was found from the bucket's type; a type this build does not
			// know (cat -1) is shown to nobody who reads only some categories.
			if f.cat >= 0 && c.access.MayRead(pulsebase.Categories()[f.cat]) {
				out = append(out, f)
			}
		case kindDaily:
			if sf, ok := scopeDailyFrame(f, c.access.MayRead); ok {
				out = append(out, sf)
			}
		}
	}
	return out
}

// scopeDailyFrame re-encodes a daily change frame with only the fields may allows
// (processor.ScopeDay). It reports false for a change that, reduced, says nothing — one
// that changed only fields of other categories — so that a coach does not even learn
// that the user's other data moved. A day that emptied keeps its deleted mark: without
// it a coach would keep showing the day's old values of the categories they may read.
func scopeDailyFrame(f frame, may func(pulsebase.Category) bool) (frame, bool) {
	var ch struct {
		Cursor string              `json:"cursor"`
		Key    string              `json:"key"`
		Data   processor.DayObject `json:"data"`
	}
	dec := json.NewDecoder(bytes.NewReader(f.b))
	dec.UseNumber() // numbers go out exactly as the processor wrote them
	if err := dec.Decode(&ch); err != nil || ch.Data == nil {
		return frame{}, false // the gateway encoded it; a frame it cannot read is not shared
	}
	day := processor.ScopeDay(ch.Data, may)
	if ch.Data["deleted"] == true {
		day["deleted"] = true
	} else if emptyDay(day) {
		return frame{}, false
	}
	data, err := json.Marshal(day)
	if err != nil {
		return frame{}, false
	}
	f.b = changeFrame(ch.Cursor, processor.RawChange{Kind: processor.KindDaily, Key: ch.Key, Data: data})
	return f, true
}

// emptyDay reports whether a scoped day object holds nothing but its date (and an empty
// set of baselines).
func emptyDay(day processor.DayObject) bool {
	for k, v := range day {
		switch k {
		case "date":
		case "baselines":
			if bs, _ := v.(map[string]any); len(bs) > 0 {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// sameCategories reports whether a and b list the same categories, in any order.
func sameCategories(a, b []pulsebase.Category) bool {
	if (a == nil) != (b == nil) || len(a) != len(b) {
		return false
	}
	for _, c := range a {
		if !slices.Contains(b, c) {
			return false
		}
	}
	return true
}

// decideSync asks the policy whether the connection's principal may still sync its user's
// data, as the hello did.
func (g *Gateway) decideSync(c *conn) auth.Decision {
	return g.deps.Policy.Decide(auth.Request{Principal: c.principal, Self: c.self, Action: auth.ActSync, Owner: c.user})
}

// grantHolds reports whether c's access is what the policy decides now: a grant that was
// revoked, expired or changed (categories added or taken away) no longer holds.
func (g *Gateway) grantHolds(c *conn) bool {
	d := g.decideSync(c)
	return d.Allowed() && sameCategories(d.Categories, c.access.Categories)
}

// recheckGrant closes c with 4003 unless its grant still holds. The client reconnects and
// gets what the policy allows now — a fresh snapshot of it — rather than the gateway
// patching what it sent under the old grant.
func (g *Gateway) recheckGrant(c *conn) {
	if !g.grantHolds(c) {
		c.fail(pulsebase.EFORBIDDEN, "the grant was revoked or changed; reconnect", CloseForbidden)
	}
}

// grantsChanged decides again for the scoped connections to owner's data, after one of
// owner's grants changed (in any process).
func (g *Gateway) grantsChanged(owner string) {
	for _, c := range g.of(owner) {
		if c.scoped() {
			g.recheckGrant(c)
		}
	}
}

// expireGrants decides again for every scoped connection: grants expire without any
// change to watch, so Run calls it every second. With no scoped connection it costs a
// map's length under a read lock.
func (g *Gateway) expireGrants() {
	g.mu.RLock()
	if len(g.scopedConns) == 0 {
		g.mu.RUnlock()
		return
	}
	cs := make([]*conn, 0, len(g.scopedConns))
	for c := range g.scopedConns {
		cs = append(cs, c)
	}
	g.mu.RUnlock()
	for _, c := range cs {
		g.recheckGrant(c)
	}
}
