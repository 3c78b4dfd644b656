package httpapi

import (
	"log/slog"
	"net/http"

	"github.com/pulsebase/pulsebase"
)

// maxDeviceIDBytes bounds the length of a device id.
const maxDeviceIDBytes = 64

// validDeviceID reports whether id may name a device: 1..maxDeviceIDBytes bytes of
// printable ASCII without spaces.
func validDeviceID(id string) bool {
	if id == "" || len(id) > maxDeviceIDBytes {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return false
		}
	}
	return true
}

// handleRevokeDevice revokes every token of one of the caller's devices. The device need
// not be known: revoking an id no token was minted for changes nothing, and answering the
// same way does not tell which devices exist.
func (s *Server) handleRevokeDevice(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !validDeviceID(id) {
		writeProblem(w, pulsebase.EINVALID, "a device id is 1 to 64 printable ASCII characters without spaces")
		return
	}
	if s.deps.Revocations == nil {
		writeProblem(w, pulsebase.EUNAVAILABLE, "device revocation is not available")
		return
	}
	if err := s.deps.Revocations.RevokeDevice(r.Context(), principal(r).Subject, id); err != nil {
		// This process refuses the device already; the others may not know yet. The broker
		// is the likely cause, so the client is told to try again rather than given a 500.
		s.deps.Log.LogAttrs(r.Context(), slog.LevelError, "revoke device", slog.Any("err", err))
		writeProblem(w, pulsebase.EUNAVAILABLE, "the revocation could not be shared with every server; try again")
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}
