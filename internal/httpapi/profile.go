package httpapi

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/crdt"
	"github.com/pulsebase/pulsebase/internal/profile"
)

// Limits of POST …/profile/ops.
const (
	maxProfileOps       = 200
	maxProfileBodyBytes = 256 << 10
)

func (s *Server) handleGetProfile(w http.ResponseWriter, r *http.Request) {
	usr, ok := s.profileUser(w, r)
	if !ok {
		return
	}
	doc, version, err := s.deps.Profiles.Get(r.Context(), usr.ID)
	if err != nil {
		s.serviceError(w, r, "get profile", err)
		return
	}
	w.Header().Set("ETag", strconv.Quote(strconv.FormatInt(version, 10)))
	writeJSON(w, http.StatusOK, doc.View())
}

// profileUser is the owner of a profile route's request, which also needs the profile
// service.
func (s *Server) profileUser(w http.ResponseWriter, r *http.Request) (pulsebase.User, bool) {
	if s.deps.Profiles == nil {
		writeProblem(w, pulsebase.EUNAVAILABLE, "profiles are not served here")
		return pulsebase.User{}, false
	}
	return owner(r), true
}

// profileOpsBody is the body of POST …/profile/ops.
type profileOpsBody struct {
	Ops []json.RawMessage `json:"ops"`
}

// profileOpsResponse is its answer: each op's outcome and the merged profile.
type profileOpsResponse struct {
	Results []profile.Result `json:"results"`
	Profile map[string]any   `json:"profile"`
	Version int64            `json:"version"`
}

func (s *Server) handleProfileOps(w http.ResponseWriter, r *http.Request) {
	usr, ok := s.profileUser(w, r)
	if !ok {
		return
	}
	var body profileOpsBody
	if !decodeJSONBody(w, r, &body, maxProfileBodyBytes) {
		return
	}
	if len(body.Ops) == 0 || len(body.Ops) > maxProfileOps {
		writeProblem(w, pulsebase.EINVALID, "send 1 to 200 ops")
		return
	}
	// Every op is decoded first: a malformed one is reported and left out, the others go on.
	ops := make([]crdt.Op, 0, len(body.Ops))
	var refused []profile.Result
	for i, raw := range body.Ops {
		op, err := crdt.DecodeOp(raw)
		if err != nil {
			code := pulsebase.ErrorCode(err)
			if code == "" {
				code = pulsebase.EINVALID
			}
			refused = append(refused, profile.Result{ID: "#" + strconv.Itoa(i), Code: code, Detail: err.Error()})
			continue
		}
		ops = append(ops, op)
	}
	out, err := s.deps.Profiles.Apply(r.Context(), usr.ID, ops)
	if err != nil {
		s.serviceError(w, r, "apply profile ops", err)
		return
	}
	w.Header().Set("ETag", strconv.Quote(strconv.FormatInt(out.Version, 10)))
	writeJSON(w, http.StatusOK, profileOpsResponse{Results: append(refused, out.Results...), Profile: out.View, Version: out.Version})
}
