package httpapi

import (
	"net/http"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/processor"
)

// admins run operations; they never read a user's data through these routes.
var admins = []pulsebase.Role{pulsebase.RoleAdmin}

// reprocessBody is the body of POST /v1/admin/reprocess.
type reprocessBody struct {
	User string `json:"user"`
	All  bool   `json:"all"`
}

func (s *Server) handleReprocess(w http.ResponseWriter, r *http.Request) {
	if s.deps.JetStream == nil {
		writeProblem(w, pulsebase.EUNAVAILABLE, "this server has no broker connection for operations")
		return
	}
	var body reprocessBody
	if !decodeJSONBody(w, r, &body, 4096) {
		return
	}
	if (body.User == "") == !body.All {
		writeProblem(w, pulsebase.EINVALID, "give either user or all")
		return
	}
	if body.User != "" {
		if _, err := s.deps.Users.store.User(r.Context(), body.User); err != nil {
			s.serviceError(w, r, "reprocess user", err)
			return
		}
	}
	req, err := processor.RequestReprocess(r.Context(), s.deps.JetStream, body.User, body.All, principal(r).Subject)
	if err != nil {
		s.serviceError(w, r, "reprocess", err)
		return
	}
	s.deps.Log.Info("reprocess requested", "request", req.ID, "user", req.User, "all", req.All, "by", req.By)
	st, err := processor.GetReprocess(r.Context(), s.deps.JetStream, s.deps.Store, req.ID, s.partitions())
	if err != nil {
		s.serviceError(w, r, "reprocess status", err)
		return
	}
	w.Header().Set("Location", "/v1/admin/reprocess/"+req.ID)
	writeJSON(w, http.StatusAccepted, st)
}

func (s *Server) handleReprocessStatus(w http.ResponseWriter, r *http.Request) {
	if s.deps.JetStream == nil {
		writeProblem(w, pulsebase.EUNAVAILABLE, "this server has no broker connection for operations")
		return
	}
	st, err := processor.GetReprocess(r.Context(), s.deps.JetStream, s.deps.Store, r.PathValue("id"), s.partitions())
	if err != nil {
		s.serviceError(w, r, "reprocess status", err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) partitions() int {
	if s.deps.Partitions > 0 {
		return s.deps.Partitions
	}
	return 64
}
