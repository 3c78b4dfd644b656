package httpapi

import (
	"net/http"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/auth"
)

// route is one operation of the API. The router and the OpenAPI document are both built
// from the table in routes(), so they cannot drift apart.
type route struct {
	Method  string
	Pattern string // net/http pattern without the method, e.g. "/v1/users/me"
	// Action is what the route does, for the policy (internal/auth.Policy), which decides
	// every request to it; "" means the route is public (no token needed).
	Action auth.Action
	// Owner says where the user whose data the route touches is named.
	Owner ownerSource
	// Category names the one category a request reads ("" for none or several); nil for
	// routes that do not read one category.
	Category func(r *http.Request) pulsebase.Category
	handler  func(*Server, http.ResponseWriter, *http.Request)
	// Unlimited exempts the route from the per-address rate limit (health, readiness and
	// metrics are polled by infrastructure from few addresses).
	Unlimited bool

	// OpenAPI description.
	ID          string
	Summary     string
	Tag         string
	RequestBody map[string]string // content type → schema name
	Params      []param
	Responses   []response
}

type param struct {
	Name, In, Description string
	Required              bool
}

type response struct {
	Status      int
	Description string
	ContentType string // "" for no body
	Schema      string // component schema name
}

// ownerSource is where a route names the user whose data it touches.
type ownerSource int

const (
	ownerNone  ownerSource = iota // operations: no user
	ownerSelf                     // /v1/users/me/…: the caller's own user
	ownerPath                     // /v1/users/{user}/…: "me" or an internal id
	ownerQuery                    // ?user=: "me" (the default) or an internal id
)

// typeCategory is the category of the sample type in the path ("" for an unknown type,
// which the handler refuses).
func typeCategory(r *http.Request) pulsebase.Category {
	if t, ok := pulsebase.LookupType(r.PathValue("type")); ok {
		return t.Category
	}
	return ""
}

var userParam = param{Name: "user", In: "path", Required: true, Description: "'me' or the caller's internal user id"}

// problems are the error responses an authenticated route can give besides its own.
func authProblems(extra ...int) []response {
	out := []response{{Status: 401, Description: "no, invalid, expired or revoked token", ContentType: problemJSON, Schema: "Problem"}}
	for _, st := range extra {
		out = append(out, response{Status: st, Description: http.StatusText(st), ContentType: problemJSON, Schema: "Problem"})
	}
	return out
}

const problemJSON = "application/problem+json"

func (s *Server) routes() []route {
	return []route{
		{
			Method: "POST", Pattern: "/v1/samples", Action: auth.ActSamplesWrite, Owner: ownerQuery, handler: (*Server).handleSamples,
			ID: "postSamples", Tag: "samples",
			Summary:     "Ingest a batch of samples (at most 5,000 and 4 MiB). 202 means every accepted sample is durably stored.",
			RequestBody: map[string]string{"application/json": "SampleBatch", "application/x-ndjson": "SampleInput", "application/pulsebase-sealed+json": "SealedBatch"},
			Params:      []param{{Name: "user", In: "query", Description: "the user written for: 'me' or the token's own internal id (anything else is 403)"}},
			Responses: append([]response{
				{Status: 202, Description: "at least one sample was accepted or was a duplicate", ContentType: "application/json", Schema: "IngestResult"},
				{Status: 400, Description: "the body is not valid JSON/NDJSON, or the batch is empty", ContentType: problemJSON, Schema: "Problem"},
				{Status: 422, Description: "every sample was rejected; `rejected` lists why", ContentType: problemJSON, Schema: "Problem"},
			}, authProblems(403, 413, 415, 503)...),
		},
		{
			Method: "GET", Pattern: "/v1/users/me", Action: auth.ActAccountRead, Owner: ownerSelf, handler: (*Server).handleMe,
			ID: "getMe", Tag: "users", Summary: "The caller's internal pseudonymous user, created on first use.",
			Responses: append([]response{{Status: 200, Description: "the user", ContentType: "application/json", Schema: "User"}}, authProblems(403)...),
		},
		{
			Method: "POST", Pattern: "/v1/users/me/devices", Action: auth.ActDevicesManage, Owner: ownerSelf, handler: (*Server).handleEnrollDevice,
			ID: "enrollDevice", Tag: "devices",
			Summary:     "Enroll one of the caller's devices (docs/security.md): send the device id and a PKCS#10 CSR for a key the device generated. The device CA answers with a short-lived client certificate naming the user and device, the CA certificate, an access token bound to that certificate (RFC 8705 cnf x5t#S256, valid only over the device listener with that certificate) and a refresh token. Enrolling an id again replaces its certificate and refresh tokens.",
			RequestBody: map[string]string{"application/json": "DeviceEnrollment"},
			Responses: append([]response{
				{Status: 201, Description: "enrolled", ContentType: "application/json", Schema: "DeviceCredentials"},
				{Status: 400, Description: "a bad device id or CSR (unparseable, bad signature, weak key)", ContentType: problemJSON, Schema: "Problem"},
			}, authProblems(403, 413, 415, 503)...),
		},
		{
			Method: "GET", Pattern: "/v1/users/me/devices", Action: auth.ActDevicesManage, Owner: ownerSelf, handler: (*Server).handleListDevices,
			ID: "listDevices", Tag: "devices", Summary: "The caller's enrolled devices (revoked ones too, with when and why), in enrollment order.",
			Responses: append([]response{{Status: 200, Description: "the devices", ContentType: "application/json", Schema: "Devices"}}, authProblems(403, 503)...),
		},
		{
			Method: "DELETE", Pattern: "/v1/users/me/devices/{id}", Action: auth.ActDevicesManage, Owner: ownerSelf, handler: (*Server).handleRevokeDevice,
			ID: "revokeDevice", Tag: "devices",
			Summary: "Revoke one of the caller's devices, at once on every server: its certificate, its refresh-token family and every token of its id issued until now (this second included); its open sync connections close with 4009. The device must enroll again (a second later at the earliest) to be let in. Idempotent.",
			Params:  []param{{Name: "id", In: "path", Required: true, Description: "the device id: 1..64 printable ASCII characters, no spaces"}},
			Responses: append([]response{
				{Status: 204, Description: "revoked"},
				{Status: 400, Description: "not a device id", ContentType: problemJSON, Schema: "Problem"},
			}, authProblems(403, 503)...),
		},
		{
			Method: "POST", Pattern: "/v1/users/me/devices/{id}/renew", Action: auth.ActDeviceRenew, Owner: ownerSelf, handler: (*Server).handleRenewDevice,
			ID: "renewDevice", Tag: "devices",
			Summary:     "Renew the calling device's certificate before it expires (device listener, with a token bound to the current certificate; {id} is the device's own id): a new certificate for the CSR's key, a new bound access token and the family's next refresh token. The old certificate stays valid until it expires.",
			Params:      []param{{Name: "id", In: "path", Required: true, Description: "the calling device's id"}},
			RequestBody: map[string]string{"application/json": "DeviceEnrollment"},
			Responses: append([]response{
				{Status: 200, Description: "renewed", ContentType: "application/json", Schema: "DeviceCredentials"},
				{Status: 400, Description: "a bad CSR", ContentType: problemJSON, Schema: "Problem"},
				{Status: 404, Description: "the device is not enrolled, or the token is not bound to its current certificate", ContentType: problemJSON, Schema: "Problem"},
			}, authProblems(403, 413, 415, 503)...),
		},
		{
			Method: "POST", Pattern: "/v1/token", handler: (*Server).handleToken,
			ID: "token", Tag: "devices",
			Summary:     "Exchange a device's refresh token (grant_type=refresh_token, JSON or form) for a new bound access token and the next refresh token, on the device listener with the device's certificate. Each refresh token works once: presenting a spent one again revokes the device (its certificate, family and tokens).",
			RequestBody: map[string]string{"application/json": "TokenRequest", "application/x-www-form-urlencoded": "TokenRequest"},
			Responses: []response{
				{Status: 200, Description: "new tokens", ContentType: "application/json", Schema: "DeviceCredentials"},
				{Status: 400, Description: "grant_type is not refresh_token, or not the expected body", ContentType: problemJSON, Schema: "Problem"},
				{Status: 401, Description: "no device certificate, or the refresh token is invalid, expired, spent (the device is then revoked) or not this certificate's", ContentType: problemJSON, Schema: "Problem"},
				{Status: 503, Description: "device enrollment is not served here", ContentType: problemJSON, Schema: "Problem"},
			},
		},
		{
			Method: "POST", Pattern: "/v1/users/me/grants", Action: auth.ActGrantsManage, Owner: ownerSelf, handler: (*Server).handleCreateGrant,
			ID: "createGrant", Tag: "users",
			Summary:     "Let a coach (named by their subject, as in their tokens: the built-in issuer's user name, or an external provider's issuer#sub) read some categories of the caller's data — series, daily metrics, recommendations, sync — until a time (at most 366 days ahead). Takes effect at once on every server.",
			RequestBody: map[string]string{"application/json": "GrantInput"},
			Responses: append([]response{
				{Status: 201, Description: "granted", ContentType: "application/json", Schema: "Grant"},
				{Status: 400, Description: "no grantee, an unknown category, until not in the future or too far, or not the expected JSON", ContentType: problemJSON, Schema: "Problem"},
			}, authProblems(403, 413, 415, 503)...),
		},
		{
			Method: "GET", Pattern: "/v1/users/me/grants", Action: auth.ActGrantsManage, Owner: ownerSelf, handler: (*Server).handleListGrants,
			ID: "listGrants", Tag: "users", Summary: "The caller's grants, newest first (expired ones are listed, inactive, for a day).",
			Responses: append([]response{{Status: 200, Description: "the grants", ContentType: "application/json", Schema: "Grants"}}, authProblems(403, 503)...),
		},
		{
			Method: "DELETE", Pattern: "/v1/users/me/grants/{id}", Action: auth.ActGrantsManage, Owner: ownerSelf, handler: (*Server).handleDeleteGrant,
			ID: "deleteGrant", Tag: "users", Summary: "Revoke a grant, at once on every server: the coach's requests are refused and their sync connections to the caller's data close (4003).",
			Params: []param{{Name: "id", In: "path", Required: true, Description: "the grant's id"}},
			Responses: append([]response{
				{Status: 204, Description: "revoked"},
				{Status: 404, Description: "the caller has no grant with this id", ContentType: problemJSON, Schema: "Problem"},
			}, authProblems(403, 503)...),
		},
		{
			Method: "GET", Pattern: "/v1/users/{user}/consents", Action: auth.ActConsentRead, Owner: ownerPath, handler: (*Server).handleGetConsents,
			ID: "getConsents", Tag: "consents", Summary: "The user's current consent: categories that may be collected, purposes data may be used for. A new user has consented to nothing (version 0).",
			Params:    []param{userParam},
			Responses: append([]response{{Status: 200, Description: "the consent", ContentType: "application/json", Schema: "Consent"}}, authProblems(403, 404)...),
		},
		{
			Method: "PUT", Pattern: "/v1/users/{user}/consents", Action: auth.ActConsentWrite, Owner: ownerPath, handler: (*Server).handlePutConsents,
			ID: "putConsents", Tag: "consents", Summary: "Replace the user's consent (absent entries are false). Takes effect on every ingest path within a second; the change is kept as a receipt.",
			Params:      []param{userParam},
			RequestBody: map[string]string{"application/json": "ConsentInput"},
			Responses: append([]response{
				{Status: 200, Description: "the new consent", ContentType: "application/json", Schema: "Consent"},
				{Status: 400, Description: "unknown category or purpose, or not the expected JSON", ContentType: problemJSON, Schema: "Problem"},
			}, authProblems(403, 404, 413, 415)...),
		},
		{
			Method: "GET", Pattern: "/v1/users/{user}/consents/history", Action: auth.ActConsentRead, Owner: ownerPath, handler: (*Server).handleConsentHistory,
			ID: "getConsentHistory", Tag: "consents", Summary: "Every consent change, oldest first, with who made it, when and from which device and token (consent receipts).",
			Params:    []param{userParam},
			Responses: append([]response{{Status: 200, Description: "the receipts", ContentType: "application/json", Schema: "ConsentHistory"}}, authProblems(403, 404)...),
		},
		{
			Method: "GET", Pattern: "/v1/users/{user}/series/{type}", Action: auth.ActDataRead, Owner: ownerPath, Category: typeCategory, handler: (*Server).handleSeries,
			ID: "getSeries", Tag: "derived",
			Summary: "A sample type's buckets between from and to (RFC 3339; default the last 24 h) at resolution 1m, 1h (default) or 1d (the user's local days). Numeric types give count, sum, min, max, mean and last; categorical types give minutes per level.",
			Params: []param{userParam,
				{Name: "type", In: "path", Required: true, Description: "a sample type"},
				{Name: "from", In: "query", Description: "RFC 3339 start (inclusive)"},
				{Name: "to", In: "query", Description: "RFC 3339 end (exclusive)"},
				{Name: "resolution", In: "query", Description: "1m, 1h or 1d"}},
			Responses: append([]response{
				{Status: 200, Description: "the series", ContentType: "application/json", Schema: "Series"},
				{Status: 400, Description: "bad range or resolution", ContentType: problemJSON, Schema: "Problem"},
			}, authProblems(403, 404)...),
		},
		{
			Method: "GET", Pattern: "/v1/users/{user}/daily", Action: auth.ActDataRead, Owner: ownerPath, handler: (*Server).handleDaily,
			ID: "getDaily", Tag: "derived",
			Summary: "The user's daily metrics and personal baselines for the local dates from..to (inclusive, YYYY-MM-DD; default the last week). A metric with no data that day is absent; each baseline compares the 7 days up to the date with the 60 days before it.",
			Params: []param{userParam,
				{Name: "from", In: "query", Description: "first local date, YYYY-MM-DD"},
				{Name: "to", In: "query", Description: "last local date, YYYY-MM-DD"}},
			Responses: append([]response{
				{Status: 200, Description: "the days", ContentType: "application/json", Schema: "Daily"},
				{Status: 400, Description: "bad dates, or more than 366 days", ContentType: problemJSON, Schema: "Problem"},
			}, authProblems(403, 404)...),
		},
		{
			Method: "GET", Pattern: "/v1/users/{user}/recommendations", Action: auth.ActDataRead, Owner: ownerPath, handler: (*Server).handleRecommendations,
			ID: "getRecommendations", Tag: "recommendations",
			Summary: "The user's recommendations, newest first, each with its state now and its feedback. state=active (default) lists those still on screen: active, or accepted and not expired (made in the last 28 days); state=all lists every one made in the last 90 days, whatever its state (active, accepted, completed, dismissed, snoozed, ignored or expired). At most limit are listed.",
			Params: []param{userParam,
				{Name: "state", In: "query", Description: "active (default) or all"},
				{Name: "limit", In: "query", Description: "1..500, default 100"}},
			Responses: append([]response{
				{Status: 200, Description: "the recommendations", ContentType: "application/json", Schema: "Recommendations"},
				{Status: 400, Description: "an unknown state, or a bad limit", ContentType: problemJSON, Schema: "Problem"},
			}, authProblems(403, 404)...),
		},
		{
			Method: "POST", Pattern: "/v1/users/{user}/recommendations/{id}/feedback", Action: auth.ActFeedbackWrite, Owner: ownerPath, handler: (*Server).handleFeedback,
			ID: "postRecommendationFeedback", Tag: "recommendations",
			Summary: "Record the user's action on a recommendation: accepted, dismissed, completed or snoozed, with an optional rating from 1 to 5 (\"ignored\" is inferred by the server at expiry). Idempotent per action: the same action again changes nothing. Feedback on an expired recommendation is recorded too (a late completed counts). Each recommendation teaches the ranking once, through its first action that carries a reward; it teaches the population's prior only if the user allowed model training on what its rule reads. The new state goes out on the user's change feed as a recommendation change {id, state, feedback}.",
			Params: []param{userParam,
				{Name: "id", In: "path", Required: true, Description: "the recommendation's id"}},
			RequestBody: map[string]string{"application/json": "FeedbackInput"},
			Responses: append([]response{
				{Status: 204, Description: "recorded (or recorded before)"},
				{Status: 400, Description: "an unknown action, a rating outside 1..5, or not the expected JSON", ContentType: problemJSON, Schema: "Problem"},
				{Status: 404, Description: "the user has no recommendation with this id", ContentType: problemJSON, Schema: "Problem"},
				{Status: 503, Description: "recommendations are not served here, or the feedback is stored but its change could not be published (send it again)", ContentType: problemJSON, Schema: "Problem"},
			}, authProblems(403, 413, 415)...),
		},
		{
			Method: "GET", Pattern: "/v1/users/{user}/recommendations/{id}/decision", Action: auth.ActPrivateRead, Owner: ownerPath, handler: (*Server).handleRecommendationDecision,
			ID: "getRecommendationDecision", Tag: "recommendations",
			Summary: "Why a recommendation was made: the decision behind it — the context features, every candidate rule that fired with its Beta posterior, sampled score and the reason it was or was not delivered — and the rule library's version.",
			Params: []param{userParam,
				{Name: "id", In: "path", Required: true, Description: "the recommendation's id"}},
			Responses: append([]response{
				{Status: 200, Description: "the decision", ContentType: "application/json", Schema: "Decision"},
				{Status: 404, Description: "the user has no recommendation with this id, or no decision is recorded for it", ContentType: problemJSON, Schema: "Problem"},
			}, authProblems(403)...),
		},
		{
			Method: "GET", Pattern: "/v1/users/{user}/decisions", Action: auth.ActPrivateRead, Owner: ownerPath, handler: (*Server).handleDecisions,
			ID: "getDecisions", Tag: "recommendations",
			Summary: "The user's ranking decisions, newest first: those that delivered a recommendation and those that held candidates back (quiet hours, daily cap, cooldown, …). Made at since or later (RFC 3339; default the last 30 days), at most limit.",
			Params: []param{userParam,
				{Name: "since", In: "query", Description: "RFC 3339 time; default 30 days ago"},
				{Name: "limit", In: "query", Description: "1..500, default 50"}},
			Responses: append([]response{
				{Status: 200, Description: "the decisions", ContentType: "application/json", Schema: "Decisions"},
				{Status: 400, Description: "a bad since or limit", ContentType: problemJSON, Schema: "Problem"},
			}, authProblems(403, 404)...),
		},
		{
			Method: "GET", Pattern: "/v1/sync", handler: (*Server).handleSync,
			ID: "sync", Tag: "sync",
			Summary: "Real-time sync (docs/sync.md): a WebSocket with subprotocol pulsebase.sync.v1 and JSON text frames. The first frame is {\"type\":\"hello\",\"token\",\"device\",\"cursor\"}; the token is checked there, not in a header. The answer is a welcome, with recovered true and every change after the cursor, or recovered false and a snapshot; then live changes, and acks of samples and ops frames. Close codes: 4001 unauthenticated, 4003 forbidden, 4008 too slow (resume from the cursor), 4009 credential revoked.",
			Responses: []response{
				{Status: 101, Description: "switching to the WebSocket protocol"},
				{Status: 400, Description: "not a WebSocket upgrade", ContentType: problemJSON, Schema: "Problem"},
				{Status: 503, Description: "the sync gateway is not running (yet)", ContentType: problemJSON, Schema: "Problem"},
			},
		},
		{
			Method: "GET", Pattern: "/v1/users/{user}/changes", Action: auth.ActPrivateRead, Owner: ownerPath, handler: (*Server).handleChanges,
			ID: "getChanges", Tag: "sync",
			Summary: "The user's change feed after a cursor (HTTP fallback of /v1/sync): up to limit changes in order, each with the cursor just after it, the cursor to continue from, and has_more. Without after, from the oldest change retained. A cursor older than the feed's retention answers 410 cursor_expired: start again from a snapshot.",
			Params: []param{userParam,
				{Name: "after", In: "query", Description: "a cursor from an earlier answer or change"},
				{Name: "limit", In: "query", Description: "1..1000, default 100"}},
			Responses: append([]response{
				{Status: 200, Description: "the changes", ContentType: "application/json", Schema: "Changes"},
				{Status: 400, Description: "not a cursor, or a bad limit", ContentType: problemJSON, Schema: "Problem"},
				{Status: 410, Description: "cursor_expired", ContentType: problemJSON, Schema: "Problem"},
			}, authProblems(403, 404)...),
		},
		{
			Method: "GET", Pattern: "/v1/users/{user}/profile", Action: auth.ActPrivateRead, Owner: ownerPath, handler: (*Server).handleGetProfile,
			ID: "getProfile", Tag: "sync",
			Summary:   "The user's profile (goals, units, time zone, quiet and active hours, enabled nudges, favourite activities, water glasses per day), merged from every device's edits; ETag is its version.",
			Params:    []param{userParam},
			Responses: append([]response{{Status: 200, Description: "the profile", ContentType: "application/json", Schema: "Profile"}}, authProblems(403, 404)...),
		},
		{
			Method: "POST", Pattern: "/v1/users/{user}/profile/ops", Action: auth.ActProfileWrite, Owner: ownerPath, handler: (*Server).handleProfileOps,
			ID: "postProfileOps", Tag: "sync",
			Summary:     "Apply profile ops (the CRDT ops of internal/crdt, as sync's ops frames carry them; HTTP fallback): each op's outcome (applied, duplicate, or refused with a code) and the merged profile. Ops are idempotent by id; a refused op changes nothing.",
			Params:      []param{userParam},
			RequestBody: map[string]string{"application/json": "ProfileOps"},
			Responses: append([]response{
				{Status: 200, Description: "the outcomes and the profile", ContentType: "application/json", Schema: "ProfileOpsResult"},
				{Status: 400, Description: "no ops or more than 200, or not the expected JSON", ContentType: problemJSON, Schema: "Problem"},
			}, authProblems(403, 404, 413, 415)...),
		},
		{
			Method: "POST", Pattern: "/v1/admin/reprocess", Action: auth.ActOperate, handler: (*Server).handleReprocess,
			ID: "reprocess", Tag: "operations",
			Summary:     "Rebuild one user's derived data ({\"user\": internal id}) or everyone's ({\"all\": true}) from the retained sample stream, while the server runs: no double counting, and samples arriving meanwhile are applied after the replay.",
			RequestBody: map[string]string{"application/json": "ReprocessInput"},
			Responses: append([]response{
				{Status: 202, Description: "requested; follow Location for progress", ContentType: "application/json", Schema: "Reprocess"},
				{Status: 400, Description: "neither or both of user and all", ContentType: problemJSON, Schema: "Problem"},
				{Status: 503, Description: "no broker connection", ContentType: problemJSON, Schema: "Problem"},
			}, authProblems(403, 404, 413, 415)...),
		},
		{
			Method: "GET", Pattern: "/v1/admin/reprocess/{id}", Action: auth.ActOperate, handler: (*Server).handleReprocessStatus,
			ID: "getReprocess", Tag: "operations", Summary: "How far a reprocess request has come: the partitions it concerns and how many have finished.",
			Params: []param{{Name: "id", In: "path", Required: true, Description: "the request's id"}},
			Responses: append([]response{
				{Status: 200, Description: "the progress", ContentType: "application/json", Schema: "Reprocess"},
				{Status: 503, Description: "no broker connection", ContentType: problemJSON, Schema: "Problem"},
			}, authProblems(403, 404)...),
		},
		{
			Method: "POST", Pattern: "/v1/admin/keys/token", Action: auth.ActOperate, handler: (*Server).handleRotateTokenKey,
			ID: "rotateTokenKey", Tag: "operations",
			Summary: "Rotate the built-in token issuer's signing key: new tokens are signed with a new key; the old one keeps verifying, and stays in /.well-known/jwks.json, until every token it signed has expired (90 days, the leeway, and 5 minutes for processes sharing the key file that had not seen the rotation yet). Recorded in the key events.",
			Responses: append([]response{
				{Status: 200, Description: "rotated", ContentType: "application/json", Schema: "TokenKeyRotation"},
			}, authProblems(403)...),
		},
		{
			Method: "GET", Pattern: "/v1/keys/processing", handler: (*Server).handleProcessingKeys,
			ID: "getProcessingKeys", Tag: "samples",
			Summary: "Public HPKE keys of the processing tier (current first, then retired keys still accepted): seal batches to them with application/pulsebase-sealed+json.",
			Responses: []response{
				{Status: 200, Description: "the keys", ContentType: "application/json", Schema: "ProcessingKeys"},
				{Status: 503, Description: "no processing key yet", ContentType: problemJSON, Schema: "Problem"},
			},
		},
		{
			Method: "GET", Pattern: "/healthz", Unlimited: true, handler: (*Server).handleHealthz,
			ID: "healthz", Tag: "operations", Summary: "The process is alive.",
			Responses: []response{{Status: 200, Description: "alive", ContentType: "application/json", Schema: "Status"}},
		},
		{
			Method: "GET", Pattern: "/readyz", Unlimited: true, handler: (*Server).handleReadyz,
			ID: "readyz", Tag: "operations", Summary: "The broker and the store are ready.",
			Responses: []response{
				{Status: 200, Description: "ready", ContentType: "application/json", Schema: "Status"},
				{Status: 503, Description: "not ready", ContentType: problemJSON, Schema: "Problem"},
			},
		},
		{
			Method: "GET", Pattern: "/metrics", Unlimited: true, handler: (*Server).handleMetrics,
			ID: "metrics", Tag: "operations", Summary: "Prometheus metrics in the text exposition format.",
			Responses: []response{{Status: 200, Description: "metrics", ContentType: "text/plain"}},
		},
		{
			Method: "GET", Pattern: "/.well-known/jwks.json", handler: (*Server).handleJWKS,
			ID: "jwks", Tag: "auth", Summary: "Public keys of the built-in token issuer (JWKS).",
			Responses: []response{{Status: 200, Description: "the key set", ContentType: "application/jwk-set+json", Schema: "JWKS"}},
		},
		{
			Method: "GET", Pattern: "/openapi.json", handler: (*Server).handleOpenAPI,
			ID: "openapi", Tag: "operations", Summary: "This document.",
			Responses: []response{{Status: 200, Description: "OpenAPI 3.1 document", ContentType: "application/json"}},
		},
	}
}
