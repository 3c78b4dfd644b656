package httpapi

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/ingest"
)

// handleSamples is POST /v1/samples. Checks run cheapest first: the token (done by wrap),
// the target user (done by the policy), the content type, the body size, the decoding, then per-sample
// validation in the ingest service.
func (s *Server) handleSamples(w http.ResponseWriter, r *http.Request) {
	// The policy let the token write for this user: its own (a user or device token; ?user=
	// naming anyone else was refused with 403, so a device can never inject data for
	// another user) or, for an internal service, the one named.
	p, usr := principal(r), owner(r)
	ct := r.Header.Get("Content-Type")
	if media, _ := mediaType(r); media == ingest.MediaSealed {
		s.handleSealed(w, r, usr, p)
		return
	}
	if _, err := ingest.MediaType(ct); err != nil {
		writeProblem(w, pulsebase.ErrorCode(err), pulsebase.ErrorMessage(err))
		return
	}
	body, ok := readBody(w, r, MaxBodyBytes)
	if !ok {
		return
	}
	in, err := ingest.DecodeBatch(ct, body, MaxSamples)
	if err != nil {
		writeProblem(w, pulsebase.ErrorCode(err), pulsebase.ErrorMessage(err))
		return
	}
	res, err := s.deps.Ingest.Ingest(r.Context(), usr.ID, p, in)
	if err != nil {
		if r.Context().Err() != nil {
			return // the client went away; nothing to answer
		}
		if pulsebase.ErrorCode(err) == pulsebase.EERASED {
			writeProblem(w, pulsebase.EERASED, "this user's data was erased")
			return
		}
		s.deps.Log.LogAttrs(r.Context(), slog.LevelError, "ingest failed", slog.Any("err", err))
		writeProblem(w, pulsebase.EUNAVAILABLE, "the samples could not be stored; retry the batch")
		return
	}
	if res.Accepted+res.Duplicates == 0 {
		writeProblemDoc(w, &Problem{
			Code:     batchCode(res.Rejected),
			Detail:   "every sample of the batch was rejected",
			Rejected: res.Rejected,
		})
		return
	}
	writeJSON(w, http.StatusAccepted, res)
}

// batchCode is the code of a batch whose samples were all rejected: their common code when
// they share one (so one bad sample reads as "out_of_range"), else "all_rejected".
func batchCode(rej []pulsebase.Rejection) string {
	code := rej[0].Code
	for _, r := range rej[1:] {
		if r.Code != code {
			return pulsebase.EUNPROCESSABLE
		}
	}
	return code
}

// handleSealed stores a batch sealed to the processing tier without opening it.
func (s *Server) handleSealed(w http.ResponseWriter, r *http.Request, usr pulsebase.User, p pulsebase.Principal) {
	body, ok := readBody(w, r, MaxBodyBytes)
	if !ok {
		return
	}
	var b ingest.SealedBatch
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil || dec.More() {
		writeProblem(w, pulsebase.EINVALID, "a sealed batch is {\"key_id\": \"…\", \"sealed\": \"<base64>\"}")
		return
	}
	res, err := s.deps.Ingest.IngestSealed(r.Context(), usr.ID, p, b)
	if err != nil {
		if r.Context().Err() != nil {
			return
		}
		s.serviceError(w, r, "ingest sealed batch", err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"accepted": 0, "duplicates": 0, "rejected": []any{}, "sealed": res})
}

func (s *Server) handleProcessingKeys(w http.ResponseWriter, r *http.Request) {
	keys, err := s.deps.Vault.ProcessingKeys(r.Context())
	if err != nil {
		s.serviceError(w, r, "processing keys", err)
		return
	}
	w.Header().Set("Cache-Control", "public, max-age=60")
	writeJSONCached(w, http.StatusOK, map[string]any{"keys": keys})
}
