package pulsebase

import (
	"errors"
	"fmt"
)

// Stable error codes. They appear as the `code` member of problem+json responses and in
// per-sample rejections, so they never change once released.
const (
	// Request-level codes.
	EINVALID       = "invalid_request"   // malformed body or parameters
	EUNAUTHORIZED  = "unauthenticated"   // no, expired or invalid credentials
	EFORBIDDEN     = "forbidden"         // authenticated but not allowed
	ENOTFOUND      = "not_found"         // no such resource (or not visible to the caller)
	ETOOLARGE      = "too_large"         // body or batch over the limits
	EUNSUPPORTED   = "unsupported_media" // content type not accepted
	EUNPROCESSABLE = "all_rejected"      // every sample of a batch was rejected
	ECONFLICT      = "conflict"          // concurrent modification
	EUNAVAILABLE   = "unavailable"       // a dependency (broker, store) is not ready
	EINTERNAL      = "internal"          // anything else; details are logged, never shown
	ERATELIMITED   = "rate_limited"      // too many requests
	EERASED        = "erased"            // the owner's keys were destroyed: the data is gone

	// Per-sample rejection codes (DOMAIN.md).
	CodeUnknownType  = "unknown_type"
	CodeBadUnit      = "bad_unit"
	CodeOutOfRange   = "out_of_range"
	CodeBadTime      = "bad_time"
	CodeFutureTime   = "future_time"
	CodeMissingField = "missing_field"
	CodeBadValue     = "bad_value"
	CodeNoConsent    = "no_consent"
	// CodeDuplicate is not an error: a re-sent sample is reported as a duplicate.
	CodeDuplicate = "duplicate"
)

// Error is an error meant for the caller of the API: Code is stable and machine readable,
// Message is safe to show (it never carries secrets or health values).
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("pulsebase: %s: %s", e.Code, e.Message) }

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, EINTERNAL for any other
// non-nil error and "" for nil.
func ErrorCode(err error) string {
	var e *Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &e):
		return e.Code
	default:
		return EINTERNAL
	}
}

// ErrorMessage returns the message of the first *Error in err's chain, or a generic text for
// any other error (whose details must only be logged).
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}
