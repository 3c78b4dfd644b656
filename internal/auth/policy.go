package auth

import (
	"time"

	"github.com/pulsebase/pulsebase"
)

// Verifier checks a bearer token and returns the principal it speaks for; every failure
// wraps ErrInvalidToken.
type Verifier interface {
	Verify(token string) (pulsebase.Principal, error)
}

// Action is what a request does, as the policy sees it. Every route of the API names one;
// the policy decides from (principal, action, resource owner, category) alone, so that no
// handler carries its own access check.
type Action string

// Actions.
const (
	// ActAccountRead reads the caller's own account (GET /v1/users/me).
	ActAccountRead Action = "account.read"
	// ActSamplesWrite ingests samples for the owner.
	ActSamplesWrite Action = "samples.write"
	// ActDataRead reads the owner's derived data of categories: series, daily metrics,
	// recommendations (the reads a coach may be granted).
	ActDataRead Action = "data.read"
	// ActPrivateRead reads the owner's records that are not one category's data: the
	// profile, the change feed, ranking decisions. Only the owner and their devices (or a
	// break-glass admin) read them.
	ActPrivateRead Action = "private.read"
	// ActSync opens a sync connection for the owner.
	ActSync Action = "sync"
	// ActProfileWrite edits the owner's profile.
	ActProfileWrite Action = "profile.write"
	// ActFeedbackWrite records feedback on the owner's recommendations.
	ActFeedbackWrite Action = "feedback.write"
	// ActConsentRead reads the owner's consent and its receipts.
	ActConsentRead Action = "consent.read"
	// ActConsentWrite changes the owner's consent.
	ActConsentWrite Action = "consent.write"
	// ActDevicesManage enrolls, lists and revokes the owner's devices.
	ActDevicesManage Action = "devices.manage"
	// ActDeviceRenew renews the calling device's own certificate and token.
	ActDeviceRenew Action = "device.renew"
	// ActGrantsManage grants, lists and revokes access to the owner's data.
	ActGrantsManage Action = "grants.manage"
	// ActOperate runs operations: reprocessing, key rotation.
	ActOperate Action = "ops"
	// ActAggregateRead reads aggregates across users (never a single user's data).
	ActAggregateRead Action = "aggregate.read"
)

// personal reports whether a is about one user's data (it has an owner).
func (a Action) personal() bool {
	switch a {
	case ActOperate, ActAggregateRead:
		return false
	}
	return true
}

// Request is one access decision's input.
type Request struct {
	Principal pulsebase.Principal
	// Self is the internal user id of the principal's own subject ("" when it has none,
	// e.g. an admin or service token).
	Self   string
	Action Action
	// Owner is the internal user id whose data the request touches; "" for operations.
	Owner string
	// Category narrows a data read to one category; "" asks for whatever the principal
	// may read of the owner's data (Decision.Categories says which).
	Category pulsebase.Category
	// Device is the device a device operation names (renewal: only the device itself).
	Device string
	// BreakGlass is the reason an admin states to reach personal data ("" for none).
	BreakGlass string
}

// Denial says how a refused request is answered.
type Denial int

// Denials. Forbidden (403) says the role may never do this; NotFound (404) hides whether
// the owner exists from a principal who may do this for some users but not this one.
const (
	Allowed Denial = iota
	Forbidden
	NotFound
)

// Decision is the policy's answer.
type Decision struct {
	Denial Denial
	// Reason is for logs and tests, never secret.
	Reason string
	// Categories the principal may read of the owner's data: nil means every category
	// (the owner, their devices, a break-glass admin); otherwise only those listed, and a
	// handler shows nothing of any other.
	Categories []pulsebase.Category
	// BreakGlass is set when the access is allowed only by an admin's stated reason: the
	// caller must record it before serving.
	BreakGlass bool
}

// Allowed reports whether the request may go ahead.
func (d Decision) Allowed() bool { return d.Denial == Allowed }

// MayRead reports whether the decision lets the principal read category c.
func (d Decision) MayRead(c pulsebase.Category) bool {
	if d.Denial != Allowed {
		return false
	}
	if d.Categories == nil {
		return true
	}
	for _, k := range d.Categories {
		if k == c {
			return true
		}
	}
	return false
}

// GrantIndex answers which categories of owner's data grantee (an internal user id) may
// read at now. Grants is one.
type GrantIndex interface {
	Granted(owner, grantee string, now time.Time) []pulsebase.Category
}

// Policy is the one place access is decided. It denies by default: a role is allowed an
// action only where the table below says so.
type Policy struct {
	grants GrantIndex
	now    func() time.Time
}

// NewPolicy returns the policy over grants (nil: no grants, so coaches see nothing).
func NewPolicy(grants GrantIndex) *Policy {
	return &Policy{grants: grants, now: time.Now}
}

// MinBreakGlassReason is the shortest reason an admin may give for a break-glass access.
const MinBreakGlassReason = 10

// ownerActions are what a role may do to its own account's data, by role. A device acts
// for its user: it writes, syncs and reads, but does not decide for the person (consent,
// devices, grants).
var ownerActions = map[pulsebase.Role]map[Action]bool{
	pulsebase.RoleUser: {
		ActAccountRead: true, ActSamplesWrite: true, ActDataRead: true, ActPrivateRead: true, ActSync: true,
		ActProfileWrite: true, ActFeedbackWrite: true, ActConsentRead: true,
		ActConsentWrite: true, ActDevicesManage: true, ActGrantsManage: true,
	},
	pulsebase.RoleDevice: {
		ActAccountRead: true, ActSamplesWrite: true, ActDataRead: true, ActPrivateRead: true, ActSync: true,
		ActProfileWrite: true, ActFeedbackWrite: true, ActConsentRead: true, ActDeviceRenew: true,
	},
	pulsebase.RoleCoach: {ActAccountRead: true},
}

// Decide answers r.
func (p *Policy) Decide(r Request) Decision {
	role := r.Principal.Role
	if role == pulsebase.RoleCoach && r.Action.personal() && r.Owner != r.Self {
		// API.md: a coach reads users who granted them; anything else is 404, so that a
		// coach learns nothing of users who did not (not even which routes exist for
		// them).
		if r.Action != ActDataRead && r.Action != ActSync {
			return Decision{Denial: NotFound, Reason: "a coach only reads granted data"}
		}
	} else if !mayEver(role, r.Action) {
		// What a role may never do is refused as such (403): saying so leaks nothing
		// about any user.
		return Decision{Denial: Forbidden, Reason: "role " + string(role) + " may not " + string(r.Action)}
	}
	if !r.Action.personal() {
		return Decision{Reason: "operations"}
	}
	if r.Owner == "" {
		return Decision{Denial: NotFound, Reason: "no owner"}
	}
	own := ownerActions[role]
	if r.Owner == r.Self && r.Self != "" {
		if r.Action == ActDeviceRenew && (r.Device == "" || r.Device != r.Principal.Device) {
			return Decision{Denial: Forbidden, Reason: "a device renews only itself"}
		}
		if own[r.Action] {
			return Decision{Reason: "owner"}
		}
		return Decision{Denial: Forbidden, Reason: "role " + string(role) + " may not " + string(r.Action)}
	}
	switch role {
	case pulsebase.RoleCoach:
		if r.Action != ActDataRead && r.Action != ActSync {
			return Decision{Denial: NotFound, Reason: "a coach only reads"}
		}
		var cats []pulsebase.Category
		if p.grants != nil && r.Self != "" {
			cats = p.grants.Granted(r.Owner, r.Self, p.now())
		}
		if len(cats) == 0 {
			return Decision{Denial: NotFound, Reason: "no grant"}
		}
		if r.Category != "" {
			for _, c := range cats {
				if c == r.Category {
					return Decision{Reason: "grant", Categories: []pulsebase.Category{c}}
				}
			}
			return Decision{Denial: NotFound, Reason: "category not granted"}
		}
		return Decision{Reason: "grant", Categories: cats}
	case pulsebase.RoleAdmin:
		if r.Action != ActDataRead && r.Action != ActPrivateRead && r.Action != ActConsentRead {
			return Decision{Denial: Forbidden, Reason: "break-glass reads only"}
		}
		if len(r.BreakGlass) < MinBreakGlassReason {
			return Decision{Denial: Forbidden, Reason: "personal data needs a break-glass reason"}
		}
		return Decision{Reason: "break-glass", BreakGlass: true}
	case pulsebase.RoleService:
		if r.Action == ActSamplesWrite {
			// An internal bridge (an edge hub, an import) writes samples for users; it
			// reads nothing back.
			return Decision{Reason: "service ingest"}
		}
		return Decision{Denial: Forbidden, Reason: "a service only writes samples for users"}
	case pulsebase.RoleUser, pulsebase.RoleDevice:
		if own[r.Action] && r.Action == ActSamplesWrite {
			// API.md: a device writing for another user is 403 — it knows that user's id
			// from its own request, so nothing leaks.
			return Decision{Denial: Forbidden, Reason: "writing for another user"}
		}
		return Decision{Denial: NotFound, Reason: "another user's data"}
	}
	return Decision{Denial: Forbidden, Reason: "role " + string(role) + " has no access to personal data"}
}

// Roles returns the roles the policy may allow a on some owner — for documentation (the
// OpenAPI document) only; decisions are Decide's.
func Roles(a Action) []pulsebase.Role {
	var out []pulsebase.Role
	for _, role := range pulsebase.Roles() {
		if mayEver(role, a) {
			out = append(out, role)
		}
	}
	return out
}

func mayEver(role pulsebase.Role, a Action) bool {
	switch {
	case ownerActions[role][a]:
		return true
	case a == ActOperate:
		return role == pulsebase.RoleAdmin || role == pulsebase.RoleService
	case a == ActAggregateRead:
		return role == pulsebase.RoleAnalyst || role == pulsebase.RoleAdmin || role == pulsebase.RoleService
	case role == pulsebase.RoleCoach:
		return a == ActDataRead || a == ActSync
	case role == pulsebase.RoleAdmin:
		return a == ActDataRead || a == ActPrivateRead || a == ActConsentRead
	case role == pulsebase.RoleService:
		return a == ActSamplesWrite
	}
	return false
}
