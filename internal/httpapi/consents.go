package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/pulsebase/pulsebase"
)

// consentBody is the body of PUT …/consents.
type consentBody struct {
	Collect  map[pulsebase.Category]bool `json:"collect"`
	Purposes map[pulsebase.Purpose]bool  `json:"purposes"`
}

func (s *Server) handleGetConsents(w http.ResponseWriter, r *http.Request) {
	usr := owner(r)
	c, err := s.deps.Consent.Get(r.Context(), usr.ID)
	if err != nil {
		s.serviceError(w, r, "get consent", err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

func (s *Server) handlePutConsents(w http.ResponseWriter, r *http.Request) {
	usr := owner(r)
	var body consentBody
	if !decodeJSONBody(w, r, &body, 64<<10) {
		return
	}
	p := principal(r)
	c, err := s.deps.Consent.Set(r.Context(), usr.ID, pulsebase.Consent{Collect: body.Collect, Purposes: body.Purposes},
		pulsebase.Actor{Subject: p.Subject, Role: p.Role, Device: p.Device, TokenID: p.TokenID})
	if err != nil {
		s.serviceError(w, r, "set consent", err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

func (s *Server) handleConsentHistory(w http.ResponseWriter, r *http.Request) {
	usr := owner(r)
	h, err := s.deps.Consent.History(r.Context(), usr.ID)
	if err != nil {
		s.serviceError(w, r, "consent history", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"history": h})
}

// decodeJSONBody reads a small JSON request body into v, answering 415, 413 or 400 itself
// when it cannot. Unknown fields are refused, so a misspelt member is not silently lost.
func decodeJSONBody(w http.ResponseWriter, r *http.Request, v any, limit int64) bool {
	if media, err := mediaType(r); err != nil || media != "application/json" {
		writeProblem(w, pulsebase.EUNSUPPORTED, "send application/json")
		return false
	}
	b, ok := readBody(w, r, limit)
	if !ok {
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil || dec.More() {
		writeProblem(w, pulsebase.EINVALID, "the body is not the expected JSON object")
		return false
	}
	return true
}

// serviceError answers a service's error: its own code when it is an *Error meant for the
// caller, 500 otherwise.
func (s *Server) serviceError(w http.ResponseWriter, r *http.Request, what string, err error) {
	var e *pulsebase.Error
	if errors.As(err, &e) && e.Code != pulsebase.EINTERNAL {
		writeProblem(w, e.Code, e.Message)
		return
	}
	s.internalError(w, r, what, err)
}

// readBody reads r's body up to limit bytes, answering 413 or 400 itself when it cannot.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, bool) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeProblem(w, pulsebase.ETOOLARGE, fmt.Sprintf("the body is larger than %d KiB", limit>>10))
		} else {
			writeProblem(w, pulsebase.EINVALID, "the body could not be read")
		}
		return nil, false
	}
	return b, true
}
