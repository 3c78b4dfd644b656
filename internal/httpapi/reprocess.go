package httpapi

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/processor"
)

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

// handleRotateTokenKey replaces the built-in issuer's signing key. Tokens signed by the
// old key stay valid until they expire (the old key stays in the JWKS that long); other
// processes sharing the data directory pick the new key up within a minute, or at once
// when they meet a token signed with it.
func (s *Server) handleRotateTokenKey(w http.ResponseWriter, r *http.Request) {
	rot, err := s.deps.Issuer.Rotate(time.Now())
	if err != nil {
		s.internalError(w, r, "rotate token key", err)
		return
	}
	if s.deps.Audit != nil {
		d, _ := json.Marshal(rot)
		if err := s.deps.Audit.AppendKeyEvent(r.Context(), pulsebase.KeyEvent{At: time.Now().UTC(),
			Actor: string(principal(r).Role) + ":" + principal(r).Subject, Action: "token.rotate", Detail: string(d)}); err != nil {
			s.deps.Log.LogAttrs(r.Context(), slog.LevelError, "record token key rotation", slog.Any("err", err))
		}
	}
	writeJSON(w, http.StatusOK, rot)
}
