// Package httpapi is Pulsebase's HTTP interface: the routes of API.md, authentication of
// bearer tokens, problem+json errors, request metrics and the OpenAPI document, which is
// generated from the same route table the router is built from.
//
// It is imported by cmd/pulsebase only.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/auth"
	"github.com/pulsebase/pulsebase/internal/consent"
	"github.com/pulsebase/pulsebase/internal/ingest"

	"github.com/pulsebase/pulsebase/internal/profile"
	"github.com/pulsebase/pulsebase/internal/recommend"
	"github.com/pulsebase/pulsebase/internal/syncgw"
	"github.com/pulsebase/pulsebase/internal/telemetry"
	"github.com/pulsebase/pulsebase/internal/vault"
)

// Limits of a request.
const (
	MaxBodyBytes = 4 << 20 // a larger body is refused with 413
	MaxSamples   = 5000    // a larger batch is refused with 413
)

// Deps are what the HTTP layer needs from the rest of the server.
type Deps struct {
	Issuer  *auth.Issuer
	Users   *Users
	Ingest  *ingest.Service
	Consent *consent.Service
	// Revocations refuses revoked tokens and serves device revocation; nil means no
	// revocation checks, and the revocation route answers 503.
	Revocations *auth.Revocations
	Vault       *vault.Vault
	// Store serves derived data (series, daily, recommendations and their decisions) to
	// the read routes, and keeps recommendation feedback.
	Store   Store
	Metrics *telemetry.Metrics
	// Rules is the recommendation rule library in use: feedback teaches the pooled prior
	// only under the consent its kind's rule asks for. Without it the feedback route
	// answers 503; the read routes of recommendations do not need it.
	Rules *recommend.Rules
	// Profiles serves the profile routes; without it they answer 503.
	Profiles *profile.Service
	// JetStream and Partitions serve the operations routes (reprocessing); without
	// JetStream they answer 503.
	JetStream  jetstream.JetStream
	Partitions int
	// Sync serves GET /v1/sync; without it the route answers 503.
	Sync *syncgw.Gateway
	// Ready reports whether the broker and the store are ready; /readyz answers 503 while
	// it returns an error.
	Ready   func(ctx context.Context) error
	Log     *slog.Logger
	Version string
	// RateLimits bound requests per source address and per principal; zero rates are
	// unlimited.
	RateLimits RateLimits
	// Tokens verifies bearer tokens (the built-in issuer and any external OpenID
	// providers); nil means the built-in issuer only.
	Tokens auth.Verifier
	// Policy decides every request; nil means auth.NewPolicy(Grants).
	Policy *auth.Policy
	// Grants keeps users' grants to coaches; nil: the grant routes answer 503 and coaches
	// see nothing.
	Grants *auth.Grants
	// Audit records break-glass accesses; without it an admin cannot break glass.
	Audit pulsebase.KeyEventStore
	// Devices enrolls devices with the device CA; nil: the enrollment, renewal and token
	// routes answer 503.
	Devices *auth.Devices
	// DeviceURL is the device (mutual TLS) listener's base URL, told to enrolled devices.
	DeviceURL string
}

// Store is what the HTTP layer reads and writes in the database besides the services'
// own: derived records and recommendation feedback. pulsebase.Store is one.
type Store = recommend.Store

// Server serves the HTTP API.
type Server struct {
	deps    Deps
	mux     *http.ServeMux
	openapi []byte
	// feedbackLocks serialize feedback on one recommendation in this process (see
	// handleFeedback).
	feedbackLocks [64]sync.Mutex
	// byAddress and byPrincipal are the rate limits' buckets (nil: unlimited).
	byAddress, byPrincipal *limiters
	authn                  *auth.Authenticator
}

// New returns a server whose router and OpenAPI document are built from routes().
func New(d Deps) *Server {
	if d.Tokens == nil {
		d.Tokens = d.Issuer
	}
	if d.Policy == nil {
		var gi auth.GrantIndex
		if d.Grants != nil {
			gi = d.Grants
		}
		d.Policy = auth.NewPolicy(gi)
	}
	s := &Server{deps: d, mux: http.NewServeMux(), byAddress: newLimiters(d.RateLimits.PerAddress),
		byPrincipal: newLimiters(d.RateLimits.PerPrincipal), authn: &auth.Authenticator{Tokens: d.Tokens, Revocations: d.Revocations}}
	byPath := map[string]bool{}
	for _, rt := range s.routes() {
		s.mux.Handle(rt.Method+" "+rt.Pattern, s.wrap(rt))
		byPath[rt.Pattern] = true
	}
	// A path known with other methods answers 405 in problem+json: the method-less pattern
	// matches only when no method-specific one does.
	for p := range byPath {
		s.mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
			writeProblem(w, codeMethodNotAllowed, "method "+r.Method+" is not allowed on this path")
		})
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, pulsebase.ENOTFOUND, "no such resource")
	})
	s.openapi = buildOpenAPI(s.routes(), d.Version)
	return s
}

// Handler returns the root handler.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		securityHeaders(w.Header(), r.TLS != nil)
		s.mux.ServeHTTP(w, r)
	})
}

// Serve serves on ln until ctx is cancelled, then stops accepting, lets in-flight requests
// finish for up to grace, and returns.
func (s *Server) Serve(ctx context.Context, ln net.Listener, grace time.Duration) error {
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second, // slow-loris: headers must arrive promptly
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.deps.Log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := srv.Shutdown(sctx)
	if e := <-errc; !errors.Is(e, http.ErrServerClosed) && err == nil {
		err = e
	}
	return err
}

type ctxKey int

const accessKey ctxKey = 0

// access is what the policy layer established for a request: who asks, as which
// internal user, for whose data, and what it may see.
type access struct {
	principal pulsebase.Principal
	// self is the caller's own internal user ("" for roles without one: admin, service,
	// analyst).
	self string
	// owner is the user whose data the request touches ("" for operations).
	owner    string
	decision auth.Decision
}

// accessOf returns what the policy established for r; handlers of routes with an action
// always have it.
func accessOf(r *http.Request) access {
	a, _ := r.Context().Value(accessKey).(access)
	return a
}

// principal returns the authenticated principal of r.
func principal(r *http.Request) pulsebase.Principal { return accessOf(r).principal }

// owner returns the user whose data r touches, as the policy allowed it.
func owner(r *http.Request) pulsebase.User { return pulsebase.User{ID: accessOf(r).owner} }

// BreakGlassHeader carries the reason an admin states to read a user's data; every such
// access is recorded.
const BreakGlassHeader = "Pulsebase-Break-Glass"

// wrap adds what every route gets: panic recovery, latency metrics, and for routes with an
// action, authentication and the policy's decision.
func (s *Server) wrap(rt route) http.Handler {
	h := rt.handler
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.deps.Log.LogAttrs(r.Context(), slog.LevelError, "handler panic",
					slog.String("route", rt.Pattern), slog.Any("panic", v), slog.String("stack", string(debug.Stack())))
				if sw.status == 0 {
					writeProblem(sw, pulsebase.EINTERNAL, "internal error")
				}
			}
			s.deps.Metrics.HTTPDuration.WithLabelValues(rt.Pattern, r.Method, strconv.Itoa(sw.code())).
				Observe(time.Since(start).Seconds())
		}()
		if !rt.Unlimited {
			if wait, ok := s.byAddress.allow(sourceAddress(r), start); !ok {
				s.tooMany(sw, "address", wait)
				return
			}
		}
		if rt.Action != "" {
			p, ok := s.authenticate(sw, r)
			if !ok {
				return
			}
			if wait, ok := s.byPrincipal.allow(string(p.Role)+"|"+p.Subject+"|"+p.Device, start); !ok {
				s.tooMany(sw, "principal", wait)
				return
			}
			a, ok := s.authorize(sw, r, rt, p)
			if !ok {
				return
			}
			r = r.WithContext(context.WithValue(r.Context(), accessKey, a))
		}
		h(s, sw, r)
	})
}

// hasAccount are the roles whose subject is a user of the service, with an internal id.
func hasAccount(r pulsebase.Role) bool {
	return r == pulsebase.RoleUser || r == pulsebase.RoleDevice || r == pulsebase.RoleCoach
}

// authorize asks the policy about r and answers the refusal itself: 403 when the role may
// never do this, 404 when it may for some users but not this one (so that nobody learns
// which ids exist). A break-glass access is recorded before it is allowed.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, rt route, p pulsebase.Principal) (access, bool) {
	a := access{principal: p}
	if hasAccount(p.Role) {
		usr, err := s.deps.Users.Resolve(r.Context(), p.Subject)
		if err != nil {
			s.internalError(w, r, "resolve user", err)
			return access{}, false
		}
		a.self = usr.ID
	}
	switch rt.Owner {
	case ownerSelf:
		a.owner = a.self
	case ownerPath, ownerQuery:
		id := r.PathValue("user")
		if rt.Owner == ownerQuery {
			id = r.URL.Query().Get("user")
		}
		if id == "" || id == "me" {
			id = a.self
		}
		a.owner = id
	}
	req := auth.Request{Principal: p, Self: a.self, Action: rt.Action, Owner: a.owner,
		Device: r.PathValue("id"), BreakGlass: strings.TrimSpace(r.Header.Get(BreakGlassHeader))}
	if rt.Category != nil {
		req.Category = rt.Category(r)
	}
	a.decision = s.deps.Policy.Decide(req)
	switch a.decision.Denial {
	case auth.Forbidden:
		s.deps.Metrics.AuthFailures.WithLabelValues("forbidden").Inc()
		detail := "role " + string(p.Role) + " may not do this"
		if rt.Action == auth.ActSamplesWrite && a.owner != a.self {
			detail = "a token may only write samples for its own user"
		}
		writeProblem(w, pulsebase.EFORBIDDEN, detail)
		return access{}, false
	case auth.NotFound:
		writeProblem(w, pulsebase.ENOTFOUND, "no such user")
		return access{}, false
	}
	if a.decision.BreakGlass {
		if !s.recordBreakGlass(r, rt, a, req.BreakGlass) {
			writeProblem(w, pulsebase.EUNAVAILABLE, "the break-glass access could not be recorded, so it is refused")
			return access{}, false
		}
	}
	return a, true
}

// recordBreakGlass appends an admin's access to a user's data, with the stated reason, to
// the audit log (the key events), and reports whether it was recorded.
func (s *Server) recordBreakGlass(r *http.Request, rt route, a access, reason string) bool {
	if s.deps.Audit == nil {
		return false
	}
	if len(reason) > 500 {
		reason = reason[:500]
	}
	d, _ := json.Marshal(map[string]string{"user": a.owner, "route": rt.Method + " " + rt.Pattern,
		"reason": reason, "token": a.principal.TokenID})
	err := s.deps.Audit.AppendKeyEvent(r.Context(), pulsebase.KeyEvent{At: time.Now().UTC(),
		Actor: "admin:" + a.principal.Subject, Action: "access.break_glass", Detail: string(d)})
	if err != nil {
		s.deps.Log.LogAttrs(r.Context(), slog.LevelError, "record break-glass access", slog.Any("err", err))
		return false
	}
	s.deps.Log.LogAttrs(r.Context(), slog.LevelWarn, "break-glass access", slog.String("route", rt.Pattern),
		slog.String("admin", a.principal.Subject), slog.String("reason", reason))
	return true
}

// securityHeaders are sent with every answer: the API serves JSON only, so nothing may be
// sniffed, framed or loaded by it; over HTTPS, browsers are told to keep using HTTPS.
func securityHeaders(h http.Header, https bool) {
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
	if https {
		h.Set("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
	}
}

// authenticate verifies the bearer token of r, answering 401 when there is none or it is
// invalid. The reason goes to metrics and debug logs only, never to the client.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (pulsebase.Principal, bool) {
	fail := func(reason, detail string) (pulsebase.Principal, bool) {
		s.deps.Metrics.AuthFailures.WithLabelValues(reason).Inc()
		w.Header().Set("WWW-Authenticate", `Bearer realm="pulsebase"`)
		writeProblem(w, pulsebase.EUNAUTHORIZED, detail)
		return pulsebase.Principal{}, false
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		return fail("missing", "a bearer token is required")
	}
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return fail("malformed", "the Authorization header must be 'Bearer <token>'")
	}
	p, err := s.authn.Authenticate(strings.TrimSpace(tok), r.TLS)
	switch {
	case errors.Is(err, auth.ErrRevoked):
		return fail("revoked", "the bearer token was revoked")
	case err != nil:
		s.deps.Log.LogAttrs(r.Context(), slog.LevelDebug, "token refused", slog.String("reason", reasonOf(err)))
		return fail("invalid", "the bearer token is invalid or expired")
	}
	return p, true
}

// reasonOf gives a token error's reason without echoing any part of the token.
func reasonOf(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		return msg[i+2:]
	}
	return msg
}

// statusWriter remembers the status code written, for metrics and recovery.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) code() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.deps.Ready(ctx); err != nil {
		s.deps.Log.LogAttrs(r.Context(), slog.LevelDebug, "not ready", slog.Any("err", err))
		writeProblem(w, pulsebase.EUNAVAILABLE, "not ready")
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	promhttp.HandlerFor(s.deps.Metrics.Registry, promhttp.HandlerOpts{}).ServeHTTP(w, r)
}

func (s *Server) handleJWKS(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.Write(s.deps.Issuer.JWKS())
}

func (s *Server) handleOpenAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Write(s.openapi)
}

// userResponse is the body of GET /v1/users/me.
type userResponse struct {
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
}

func (s *Server) handleMe(w http.ResponseWriter, r *http.Request) {
	u, err := s.deps.Users.Resolve(r.Context(), principal(r).Subject)
	if err != nil {
		s.internalError(w, r, "resolve user", err)
		return
	}
	writeJSON(w, http.StatusOK, userResponse{ID: u.ID, Created: u.Created})
}

// internalError logs err with what was being done and answers 500 without details.
func (s *Server) internalError(w http.ResponseWriter, r *http.Request, what string, err error) {
	s.deps.Log.LogAttrs(r.Context(), slog.LevelError, what, slog.String("route", r.Pattern), slog.Any("err", err))
	writeProblem(w, pulsebase.EINTERNAL, "internal error")
}
