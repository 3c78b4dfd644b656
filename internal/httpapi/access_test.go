package httpapi_test

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/auth"
	"github.com/pulsebase/pulsebase/internal/httpapi"
	"github.com/pulsebase/pulsebase/internal/pbtest"
)

// outcome is what the policy layer does with a request.
type outcome string

const (
	allow     outcome = "allow"     // reaches the handler (whatever the handler then says)
	forbidden outcome = "forbidden" // 403: the role may never do this
	notFound  outcome = "notfound"  // 404 no such user: the role may, but not for this owner
	public    outcome = "public"    // no token needed; the policy is not asked
)

// roleTable is the expected outcome of every route of the router for every role, each
// calling with its own token on "me" (and {id} = the device's own id for a device
// renewal). A route missing here fails TestRouteRoleTable: a new route needs a policy
// entry and a line here before it can ship.
var roleTable = map[string]map[pulsebase.Role]outcome{
	//                      user      device     coach      analyst    admin      service
	"postSamples":                row(allow, allow, forbidden, forbidden, forbidden, notFound),
	"getMe":                      row(allow, allow, allow, forbidden, forbidden, forbidden),
	"enrollDevice":               row(allow, forbidden, forbidden, forbidden, forbidden, forbidden),
	"listDevices":                row(allow, forbidden, forbidden, forbidden, forbidden, forbidden),
	"revokeDevice":               row(allow, forbidden, forbidden, forbidden, forbidden, forbidden),
	"renewDevice":                row(forbidden, allow, forbidden, forbidden, forbidden, forbidden),
	"createGrant":                row(allow, forbidden, forbidden, forbidden, forbidden, forbidden),
	"listGrants":                 row(allow, forbidden, forbidden, forbidden, forbidden, forbidden),
	"deleteGrant":                row(allow, forbidden, forbidden, forbidden, forbidden, forbidden),
	"getConsents":                row(allow, allow, forbidden, forbidden, notFound, forbidden),
	"putConsents":                row(allow, forbidden, forbidden, forbidden, forbidden, forbidden),
	"getConsentHistory":          row(allow, allow, forbidden, forbidden, notFound, forbidden),
	"getSeries":                  row(allow, allow, forbidden, forbidden, notFound, forbidden),
	"getDaily":                   row(allow, allow, forbidden, forbidden, notFound, forbidden),
	"getRecommendations":         row(allow, allow, forbidden, forbidden, notFound, forbidden),
	"postRecommendationFeedback": row(allow, allow, forbidden, forbidden, forbidden, forbidden),
	"getRecommendationDecision":  row(allow, allow, forbidden, forbidden, notFound, forbidden),
	"getDecisions":               row(allow, allow, forbidden, forbidden, notFound, forbidden),
	"getChanges":                 row(allow, allow, forbidden, forbidden, notFound, forbidden),
	"getProfile":                 row(allow, allow, forbidden, forbidden, notFound, forbidden),
	"postProfileOps":             row(allow, allow, forbidden, forbidden, forbidden, forbidden),
	"reprocess":                  row(forbidden, forbidden, forbidden, forbidden, allow, allow),
	"getReprocess":               row(forbidden, forbidden, forbidden, forbidden, allow, allow),
	"rotateTokenKey":             row(forbidden, forbidden, forbidden, forbidden, allow, allow),
	"token":                      row(public, public, public, public, public, public),
	"sync":                       row(public, public, public, public, public, public),
	"getProcessingKeys":          row(public, public, public, public, public, public),
	"healthz":                    row(public, public, public, public, public, public),
	"readyz":                     row(public, public, public, public, public, public),
	"metrics":                    row(public, public, public, public, public, public),
	"jwks":                       row(public, public, public, public, public, public),
	"openapi":                    row(public, public, public, public, public, public),
}

// coachReads are the routes a coach may call on users who granted them categories
// (TestCoachReadsOnlyGrantedCategories); on their own account they are forbidden.
var coachReads = []string{"getSeries", "getDaily", "getRecommendations"}

func row(user, device, coach, analyst, admin, service outcome) map[pulsebase.Role]outcome {
	return map[pulsebase.Role]outcome{pulsebase.RoleUser: user, pulsebase.RoleDevice: device, pulsebase.RoleCoach: coach,
		pulsebase.RoleAnalyst: analyst, pulsebase.RoleAdmin: admin, pulsebase.RoleService: service}
}

// operation is one route as the OpenAPI document lists it.
type operation struct {
	ID, Method, Path string
	Public           bool
	Roles            []string
}

// operations reads every route of the router from the OpenAPI document, which is built
// from the same table as the router.
func operations(t *testing.T, s *pbtest.Server) []operation {
	t.Helper()
	var doc struct {
		Paths map[string]map[string]struct {
			OperationID string           `json:"operationId"`
			Security    []map[string]any `json:"security"`
			Roles       []string         `json:"x-roles"`
		} `json:"paths"`
	}
	pbtest.Do(t, "GET", s.URL+"/openapi.json", "", "", nil).JSON(t, &doc)
	var ops []operation
	for path, methods := range doc.Paths {
		for m, op := range methods {
			ops = append(ops, operation{ID: op.OperationID, Method: strings.ToUpper(m), Path: path,
				Public: len(op.Security) == 0, Roles: op.Roles})
		}
	}
	sort.Slice(ops, func(i, j int) bool { return ops[i].ID < ops[j].ID })
	return ops
}

// outcomeOf tells the policy's answers apart from the handlers' own.
func outcomeOf(r pbtest.Response) outcome {
	var p httpapi.Problem
	_ = json.Unmarshal(r.Body, &p)
	switch {
	case r.Status == http.StatusForbidden && p.Code == pulsebase.EFORBIDDEN:
		return forbidden
	case r.Status == http.StatusNotFound && p.Detail == "no such user":
		return notFound
	}
	return allow
}

func TestRouteRoleTable(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	ops := operations(t, s)
	seen := map[string]bool{}
	for _, op := range ops {
		seen[op.ID] = true
		want, ok := roleTable[op.ID]
		if !ok {
			t.Errorf("route %s %s (%s) has no line in roleTable: say which roles may call it", op.Method, op.Path, op.ID)
			continue
		}
		if op.Public != (want[pulsebase.RoleUser] == public) {
			t.Errorf("%s: public=%v in the router, table says %s", op.ID, op.Public, want[pulsebase.RoleUser])
			continue
		}
		if op.Public {
			continue
		}
		// The document's x-roles (from auth.Roles) list exactly the roles allowed on some
		// owner.
		var allowedSomewhere []string
		for _, role := range pulsebase.Roles() {
			if want[role] == allow || want[role] == notFound || (role == pulsebase.RoleCoach && slices.Contains(coachReads, op.ID)) {
				allowedSomewhere = append(allowedSomewhere, string(role))
			}
		}
		if !slices.Equal(op.Roles, allowedSomewhere) {
			t.Errorf("%s: x-roles %v, table allows %v", op.ID, op.Roles, allowedSomewhere)
		}
		for _, role := range pulsebase.Roles() {
			device := ""
			if role == pulsebase.RoleDevice {
				device = "watch-1"
			}
			tok := s.Token(t, "table-"+string(role), role, device)
			path := strings.NewReplacer("{user}", "me", "{type}", "steps", "{id}", "watch-1").Replace(op.Path)
			var body []byte
			ct := ""
			if op.Method == "POST" || op.Method == "PUT" {
				body, ct = []byte("{}"), "application/json"
			}
			r := pbtest.Do(t, op.Method, s.URL+path, tok, ct, body)
			if r.Status == http.StatusUnauthorized {
				t.Errorf("%s as %s: 401 %s", op.ID, role, r.Body)
				continue
			}
			if got := outcomeOf(r); got != want[role] {
				t.Errorf("%s %s as %s: got %s (%d %s), want %s", op.Method, path, role, got, r.Status, r.Body, want[role])
			}
		}
	}
	for id := range roleTable {
		if !seen[id] {
			t.Errorf("roleTable lists %s, which the router does not have", id)
		}
	}
}

// TestCrossUserAccess: user B's credentials on user A's resources never reach A's data.
// Reads and writes of another user's path answer 404 (nobody learns which ids exist);
// writing samples for another user answers 403, as API.md says.
func TestCrossUserAccess(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	alice := s.UserToken(t, "alice")
	var me struct{ ID string }
	pbtest.Do(t, "GET", s.URL+"/v1/users/me", alice, "", nil).JSON(t, &me)
	bob := s.UserToken(t, "bob")
	bobsWatch := s.Token(t, "bob", pulsebase.RoleDevice, "watch-1")
	coach := s.Token(t, "coach-without-grant", pulsebase.RoleCoach, "")
	n := 0
	for _, op := range operations(t, s) {
		if !strings.Contains(op.Path, "{user}") {
			continue
		}
		n++
		path := strings.NewReplacer("{user}", me.ID, "{type}", "steps", "{id}", "x").Replace(op.Path)
		var body []byte
		ct := ""
		if op.Method == "POST" || op.Method == "PUT" {
			body, ct = []byte(pbtest.AllConsent), "application/json"
		}
		for _, c := range []struct{ who, tok string }{{"bob", bob}, {"bob's watch", bobsWatch}, {"a coach without a grant", coach}} {
			r := pbtest.Do(t, op.Method, s.URL+path, c.tok, ct, body)
			if got := outcomeOf(r); got != notFound && got != forbidden {
				t.Errorf("%s %s as %s: got %d %s, want 404 or 403", op.Method, op.Path, c.who, r.Status, r.Body)
			}
			if r.Status == http.StatusForbidden && c.who != "a coach without a grant" && op.Method == "GET" {
				t.Errorf("%s as %s: 403 tells that the user exists; want 404", op.Path, c.who)
			}
		}
	}
	if n < 10 {
		t.Fatalf("only %d user-scoped routes found", n)
	}
	for _, tok := range []string{bob, bobsWatch} {
		r := pbtest.Do(t, "POST", s.URL+"/v1/samples?user="+me.ID, tok, "application/json",
			[]byte(`{"samples":[{"type":"steps","value":10,"start":"2026-11-29T08:00:00Z","end":"2026-11-29T08:01:00Z","source":"x"}]}`))
		if r.Status != http.StatusForbidden {
			t.Errorf("samples for another user: got %d %s, want 403", r.Status, r.Body)
		}
	}
	// Alice's consent is still what she set: nothing above reached it.
	var c pulsebase.Consent
	pbtest.Do(t, "GET", s.URL+"/v1/users/me/consents", alice, "", nil).JSON(t, &c)
	if c.Version != 1 {
		t.Errorf("alice's consent version %d after the attempts, want 1", c.Version)
	}
}

// forge builds a compact JWS from header and claims with signature sig(signing input).
func forge(header, claims map[string]any, sig func(input string) []byte) string {
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	input := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c)
	return input + "." + base64.RawURLEncoding.EncodeToString(sig(input))
}

func TestBadTokensAreRefused(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	good := s.UserToken(t, "alice")
	keyPath := filepath.Join(s.DataDir, "keys", "token.key")
	mint := func(iss, aud string, now time.Time) string {
		i, err := auth.OpenIssuer(keyPath, iss, aud)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := i.Mint(auth.TokenRequest{Subject: "alice", Role: pulsebase.RoleUser, TTL: time.Hour}, now)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	now := time.Now()
	claims := map[string]any{"iss": auth.DefaultIssuer, "aud": []string{auth.DefaultAudience}, "sub": "alice", "role": "user",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(), "jti": "forged"}
	// The issuer's public key, as anyone can read it in the JWKS.
	var jwks struct {
		Keys []struct{ X, Kid string }
	}
	pbtest.Do(t, "GET", s.URL+"/.well-known/jwks.json", "", "", nil).JSON(t, &jwks)
	pub, err := base64.RawURLEncoding.DecodeString(jwks.Keys[0].X)
	if err != nil {
		t.Fatal(err)
	}
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	parts := strings.Split(good, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(payload), `"alice"`, `"mallory"`, 1))) + "." + parts[2]

	for _, c := range []struct{ name, token string }{
		{"expired", mint(auth.DefaultIssuer, auth.DefaultAudience, now.Add(-2*time.Hour))},
		{"not yet valid", mint(auth.DefaultIssuer, auth.DefaultAudience, now.Add(time.Hour))},
		{"wrong issuer", mint("https://evil.example", auth.DefaultAudience, now)},
		{"wrong audience", mint(auth.DefaultIssuer, "another-api", now)},
		{"alg none", forge(map[string]any{"alg": "none", "typ": "JWT"}, claims, func(string) []byte { return nil })},
		{"HS256 keyed with the public key", forge(map[string]any{"alg": "HS256", "typ": "JWT", "kid": jwks.Keys[0].Kid}, claims, func(in string) []byte {
			m := hmac.New(sha256.New, pub)
			m.Write([]byte(in))
			return m.Sum(nil)
		})},
		{"unknown kid", forge(map[string]any{"alg": "EdDSA", "typ": "JWT", "kid": "no-such-key"}, claims, func(in string) []byte {
			return ed25519.Sign(otherKey, []byte(in))
		})},
		{"signed by another key under the real kid", forge(map[string]any{"alg": "EdDSA", "typ": "JWT", "kid": jwks.Keys[0].Kid}, claims, func(in string) []byte {
			return ed25519.Sign(otherKey, []byte(in))
		})},
		{"tampered payload", tampered},
		{"not a JWT", "hello"},
	} {
		r := pbtest.Do(t, "GET", s.URL+"/v1/users/me", c.token, "", nil)
		if r.Status != http.StatusUnauthorized || !strings.Contains(string(r.Body), pulsebase.EUNAUTHORIZED) {
			t.Errorf("%s over HTTP: got %d %s, want 401", c.name, r.Status, r.Body)
		}
		if _, f, st := pbtest.SyncHello(t, s.URL, nil, map[string]any{"type": "hello", "token": c.token, "device": "phone"}); st != 4001 {
			t.Errorf("%s over sync: closed %d after %v, want 4001", c.name, st, f)
		}
	}
	// The good token still works, and the server is healthy.
	if r := pbtest.Do(t, "GET", s.URL+"/v1/users/me", good, "", nil); r.Status != 200 {
		t.Errorf("the good token: %d %s", r.Status, r.Body)
	}
	m := string(pbtest.Do(t, "GET", s.URL+"/metrics", "", "", nil).Body)
	if !strings.Contains(m, `pulsebase_auth_failures_total{reason="invalid"}`) {
		t.Error("token failures are not counted in pulsebase_auth_failures_total")
	}
}

func TestBreakGlassIsRecorded(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	alice := s.UserToken(t, "alice")
	var me struct{ ID string }
	pbtest.Do(t, "GET", s.URL+"/v1/users/me", alice, "", nil).JSON(t, &me)
	admin := s.Token(t, "ops-oncall", pulsebase.RoleAdmin, "")
	url := s.URL + "/v1/users/" + me.ID + "/consents"
	if r := pbtest.Do(t, "GET", url, admin, "", nil); r.Status != http.StatusForbidden {
		t.Fatalf("admin without a reason: got %d %s, want 403", r.Status, r.Body)
	}
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+admin)
	req.Header.Set(httpapi.BreakGlassHeader, "short")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("admin with a too short reason: %v %v", resp.StatusCode, err)
	}
	req.Header.Set(httpapi.BreakGlassHeader, "incident 4711: user reports missing data")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("admin with a reason: got %d, want 200", resp.StatusCode)
	}
	// Writes stay closed even with a reason.
	req, _ = http.NewRequest("PUT", url, strings.NewReader(pbtest.AllConsent))
	req.Header.Set("Authorization", "Bearer "+admin)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(httpapi.BreakGlassHeader, "incident 4711: user reports missing data")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("admin writing consent with a reason: %v %v, want 403", resp.StatusCode, err)
	}
	evs, err := s.Store.KeyEvents(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var found int
	for _, e := range evs {
		if e.Action == "access.break_glass" {
			found++
			if !strings.Contains(e.Detail, "incident 4711") || !strings.Contains(e.Detail, me.ID) || e.Actor != "admin:ops-oncall" {
				t.Errorf("break-glass record %+v lacks the reason, user or admin", e)
			}
		}
	}
	if found != 1 {
		t.Errorf("%d break-glass records, want 1 (refused attempts are not access)", found)
	}
}

func TestTokenKeyRotation(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	before := s.UserToken(t, "alice")
	admin := s.Token(t, "ops", pulsebase.RoleAdmin, "")
	var rot struct {
		KID     string    `json:"kid"`
		Retired string    `json:"retired_kid"`
		Until   time.Time `json:"retired_until"`
	}
	r := pbtest.Do(t, "POST", s.URL+"/v1/admin/keys/token", admin, "", nil)
	if r.Status != 200 {
		t.Fatalf("rotate: %d %s", r.Status, r.Body)
	}
	r.JSON(t, &rot)
	if rot.KID == rot.Retired || time.Until(rot.Until) < auth.MaxTTL-time.Minute {
		t.Errorf("rotation %+v: want a new kid and the old one kept for the longest token lifetime", rot)
	}
	after := s.Token(t, "alice", pulsebase.RoleUser, "")
	kidOf := func(tok string) string {
		h, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
		var v struct{ Kid string }
		json.Unmarshal(h, &v)
		return v.Kid
	}
	if kidOf(before) != rot.Retired || kidOf(after) != rot.KID {
		t.Errorf("kids: before %s after %s, rotation %+v", kidOf(before), kidOf(after), rot)
	}
	for name, tok := range map[string]string{"old key": before, "new key": after} {
		if r := pbtest.Do(t, "GET", s.URL+"/v1/users/me", tok, "", nil); r.Status != 200 {
			t.Errorf("a token of the %s after rotation: %d %s", name, r.Status, r.Body)
		}
	}
	var jwks struct{ Keys []struct{ Kid string } }
	pbtest.Do(t, "GET", s.URL+"/.well-known/jwks.json", "", "", nil).JSON(t, &jwks)
	if len(jwks.Keys) != 2 || jwks.Keys[0].Kid != rot.KID || jwks.Keys[1].Kid != rot.Retired {
		t.Errorf("JWKS after rotation: %+v, want the new key then the old", jwks.Keys)
	}
	evs, _ := s.Store.KeyEvents(t.Context())
	if !slices.ContainsFunc(evs, func(e pulsebase.KeyEvent) bool { return e.Action == "token.rotate" }) {
		t.Error("the rotation is not in the key events")
	}
}
