package httpapi

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/processor"
	"github.com/pulsebase/pulsebase/internal/syncgw"
)

// Limits of GET …/changes.
const (
	defaultChangesLimit = 100
	maxChangesLimit     = 1000
)

func (s *Server) handleChanges(w http.ResponseWriter, r *http.Request) {
	usr := owner(r)
	if s.deps.JetStream == nil {
		writeProblem(w, pulsebase.EUNAVAILABLE, "this server has no broker connection for the change feed")
		return
	}
	q := r.URL.Query()
	limit := defaultChangesLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxChangesLimit {
			writeProblem(w, pulsebase.EINVALID, "limit must be an integer from 1 to 1000")
			return
		}
		limit = n
	}
	keys, err := s.deps.Vault.UserKeys(r.Context(), usr.ID)
	if err != nil {
		s.serviceError(w, r, "changes keys", err)
		return
	}
	page, err := processor.ReadFeed(r.Context(), s.deps.JetStream, keys, usr.ID, q.Get("after"), limit)
	if err != nil {
		s.serviceError(w, r, "changes", err)
		return
	}
	writeJSON(w, http.StatusOK, page)
}

// handleSync hands a WebSocket upgrade to the sync gateway, which authenticates the first
// frame; anything else is answered here in problem+json.
func (s *Server) handleSync(w http.ResponseWriter, r *http.Request) {
	if s.deps.Sync == nil || !s.deps.Sync.Ready() {
		writeProblem(w, pulsebase.EUNAVAILABLE, "the sync gateway is not running")
		return
	}
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		writeProblem(w, pulsebase.EINVALID, "GET /v1/sync is a WebSocket: send an upgrade request offering the subprotocol "+syncgw.Subprotocol)
		return
	}
	s.deps.Sync.ServeHTTP(w, r)
}
