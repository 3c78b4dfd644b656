package httpapi

import (
	"encoding/json"
	"mime"
	"net/http"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/processor"
)

// problemBase prefixes the type URI of every problem; the code completes it.
const problemBase = "https://pulsebase.dev/problems/"

// Problem is an RFC 9457 problem details document. Rejected is set for batches of samples
// that were all rejected.
type Problem struct {
	Type     string                `json:"type"`
	Title    string                `json:"title"`
	Status   int                   `json:"status"`
	Code     string                `json:"code"`
	Detail   string                `json:"detail,omitempty"`
	Rejected []pulsebase.Rejection `json:"rejected,omitempty"`
}

// statusOf maps a stable error code to its HTTP status. It is the one place where codes
// meet statuses.
func statusOf(code string) int {
	switch code {
	case pulsebase.EINVALID:
		return http.StatusBadRequest
	case pulsebase.EUNAUTHORIZED:
		return http.StatusUnauthorized
	case pulsebase.EFORBIDDEN:
		return http.StatusForbidden
	case pulsebase.ENOTFOUND:
		return http.StatusNotFound
	case codeMethodNotAllowed:
		return http.StatusMethodNotAllowed
	case pulsebase.ECONFLICT:
		return http.StatusConflict
	case pulsebase.ETOOLARGE:
		return http.StatusRequestEntityTooLarge
	case pulsebase.EUNSUPPORTED:
		return http.StatusUnsupportedMediaType
	case pulsebase.ERATELIMITED:
		return http.StatusTooManyRequests
	case pulsebase.EUNAVAILABLE:
		return http.StatusServiceUnavailable
	case pulsebase.EINTERNAL:
		return http.StatusInternalServerError
	case pulsebase.EERASED, processor.ECURSOREXPIRED:
		return http.StatusGone
	default:
		// Per-sample codes (out_of_range, unknown_type, …) reach the client as the code of
		// a batch whose samples were all rejected.
		return http.StatusUnprocessableEntity
	}
}

// codeMethodNotAllowed is the code of a 405 answer.
const codeMethodNotAllowed = "method_not_allowed"

// writeProblem answers with a problem document for code.
func writeProblem(w http.ResponseWriter, code, detail string) {
	p := Problem{Code: code, Detail: detail}
	writeProblemDoc(w, &p)
}

func writeProblemDoc(w http.ResponseWriter, p *Problem) {
	p.Status = statusOf(p.Code)
	p.Type = problemBase + p.Code
	p.Title = http.StatusText(p.Status)
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}

// writeJSON answers with v as JSON; personal data is never cached.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Cache-Control", "no-store")
	writeJSONCached(w, status, v)
}

// writeJSONCached answers with v as JSON, leaving caching to the caller's headers.
func writeJSONCached(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// mediaType is the media type of r's body, without parameters.
func mediaType(r *http.Request) (string, error) {
	m, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return m, err
}
