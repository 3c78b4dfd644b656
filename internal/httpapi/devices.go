package httpapi

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/auth"
	"github.com/pulsebase/pulsebase/internal/vault"
)

// maxDeviceIDBytes bounds the length of a device id.
const maxDeviceIDBytes = 64

// maxEnrollBodyBytes bounds an enrollment or renewal body (a CSR is a few hundred bytes).
const maxEnrollBodyBytes = 32 << 10

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

// DeviceSealer seals an owner's subject in their device records with the owner's data
// key (auth.DeviceSealer over the vault).
type DeviceSealer struct{ Vault *vault.Vault }

const deviceSubjectKind = "device_subject"

// SealSubject implements auth.DeviceSealer.
func (d DeviceSealer) SealSubject(ctx context.Context, user, device, subject string) ([]byte, error) {
	keys, err := d.Vault.UserKeys(ctx, user)
	if err != nil {
		return nil, err
	}
	return keys.Seal(deviceSubjectKind, device, []byte(subject))
}

// OpenSubject implements auth.DeviceSealer.
func (d DeviceSealer) OpenSubject(ctx context.Context, user, device string, sealed []byte) (string, error) {
	keys, err := d.Vault.UserKeys(ctx, user)
	if err != nil {
		return "", err
	}
	b, err := keys.Open(deviceSubjectKind, device, sealed)
	return string(b), err
}

// enrollBody is the body of POST /v1/users/me/devices and of a renewal.
type enrollBody struct {
	Device string `json:"device"`
	// CSR is a PKCS#10 request (PEM, or base64 DER) for a key the device generated and
	// keeps.
	CSR string `json:"csr"`
}

func (s *Server) devicesAvailable(w http.ResponseWriter) bool {
	if s.deps.Devices == nil {
		writeProblem(w, pulsebase.EUNAVAILABLE, "device enrollment is not served here")
		return false
	}
	return true
}

// handleEnrollDevice enrolls one of the caller's devices: the device CA certifies the key
// of its CSR, and the device gets an access token bound to that certificate and a
// refresh token. The private key never leaves the device.
func (s *Server) handleEnrollDevice(w http.ResponseWriter, r *http.Request) {
	if !s.devicesAvailable(w) {
		return
	}
	var body enrollBody
	if !decodeJSONBody(w, r, &body, maxEnrollBodyBytes) {
		return
	}
	if !validDeviceID(body.Device) {
		writeProblem(w, pulsebase.EINVALID, "device must be 1 to 64 printable ASCII characters without spaces")
		return
	}
	csr, err := auth.ParseCSR([]byte(body.CSR))
	if err != nil {
		writeProblem(w, pulsebase.EINVALID, "csr: "+reasonOf(err))
		return
	}
	creds, err := s.deps.Devices.Enroll(r.Context(), principal(r).Subject, owner(r).ID, body.Device, csr, time.Now())
	if err != nil {
		s.deviceError(w, r, "enroll device", err)
		return
	}
	w.Header().Set("Location", "/v1/users/me/devices/"+url.PathEscape(body.Device))
	writeJSON(w, http.StatusCreated, s.withDeviceURL(creds))
}

// handleRenewDevice gives the calling device (over the device listener, with a token
// bound to its current certificate) a new certificate for a new key, a new access token
// and the next refresh token.
func (s *Server) handleRenewDevice(w http.ResponseWriter, r *http.Request) {
	if !s.devicesAvailable(w) {
		return
	}
	var body enrollBody
	if !decodeJSONBody(w, r, &body, maxEnrollBodyBytes) {
		return
	}
	csr, err := auth.ParseCSR([]byte(body.CSR))
	if err != nil {
		writeProblem(w, pulsebase.EINVALID, "csr: "+reasonOf(err))
		return
	}
	creds, err := s.deps.Devices.Renew(r.Context(), principal(r), owner(r).ID, csr, time.Now())
	if err != nil {
		s.deviceError(w, r, "renew device", err)
		return
	}
	writeJSON(w, http.StatusOK, s.withDeviceURL(creds))
}

// deviceCredentials is what enrollment, renewal and refresh answer.
type deviceCredentials struct {
	auth.Credentials
	// DeviceURL is the device listener's base URL, when the server knows it.
	DeviceURL string `json:"device_url,omitempty"`
}

func (s *Server) withDeviceURL(c auth.Credentials) deviceCredentials {
	return deviceCredentials{Credentials: c, DeviceURL: s.deps.DeviceURL}
}

// deviceView is an enrolled device as GET /v1/users/me/devices lists it.
type deviceView struct {
	ID         string     `json:"id"`
	Serial     string     `json:"serial"`
	NotAfter   time.Time  `json:"not_after"`
	Enrolled   time.Time  `json:"enrolled"`
	Renewed    time.Time  `json:"renewed"`
	Rotations  int        `json:"rotations"`
	Revoked    *time.Time `json:"revoked,omitempty"`
	RevokedWhy string     `json:"revoked_reason,omitempty"`
}

// devicesResponse is the body of GET /v1/users/me/devices.
type devicesResponse struct {
	Devices []deviceView `json:"devices"`
}

func (s *Server) handleListDevices(w http.ResponseWriter, r *http.Request) {
	if !s.devicesAvailable(w) {
		return
	}
	list, err := s.deps.Devices.List(r.Context(), owner(r).ID)
	if err != nil {
		s.deviceError(w, r, "list devices", err)
		return
	}
	out := devicesResponse{Devices: make([]deviceView, 0, len(list))}
	for _, d := range list {
		out.Devices = append(out.Devices, deviceView{ID: d.ID, Serial: d.Serial, NotAfter: d.NotAfter,
			Enrolled: d.Enrolled, Renewed: d.Renewed, Rotations: d.Generation - 1, Revoked: d.Revoked, RevokedWhy: d.RevokedWhy})
	}
	writeJSON(w, http.StatusOK, out)
}

// handleRevokeDevice revokes one of the caller's devices at once on every server: its
// certificate, its refresh-token family, and every token of its id issued until now, so
// that its open sync connections close with 4009. The device need not be enrolled (a
// token minted for it by the operator is revoked too); answering the same way either way
// does not tell which devices exist.
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
	if s.deps.Devices != nil {
		if _, err := s.deps.Devices.Revoke(r.Context(), owner(r).ID, id, time.Now()); err != nil {
			s.deps.Log.LogAttrs(r.Context(), slog.LevelError, "revoke enrolled device", slog.Any("err", err))
			writeProblem(w, pulsebase.EUNAVAILABLE, "the revocation could not be shared with every server; try again")
			return
		}
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

// tokenBody is the body of POST /v1/token (JSON; a form with the same fields works too,
// as OAuth clients send).
type tokenBody struct {
	GrantType    string `json:"grant_type"`
	RefreshToken string `json:"refresh_token"`
}

// handleToken exchanges a device's refresh token for a new access token and the next
// refresh token (rotation). It is served on the device listener only: the refresh token
// is bound to the device's certificate like its access tokens.
func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	if !s.devicesAvailable(w) {
		return
	}
	var body tokenBody
	if media, _ := mediaType(r); media == "application/x-www-form-urlencoded" {
		r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
		if err := r.ParseForm(); err != nil {
			writeProblem(w, pulsebase.EINVALID, "the form could not be read")
			return
		}
		body = tokenBody{GrantType: r.PostForm.Get("grant_type"), RefreshToken: r.PostForm.Get("refresh_token")}
	} else if !decodeJSONBody(w, r, &body, 8<<10) {
		return
	}
	if body.GrantType != "refresh_token" {
		writeProblem(w, pulsebase.EINVALID, "grant_type must be refresh_token")
		return
	}
	fail := func(reason, detail string) {
		s.deps.Metrics.AuthFailures.WithLabelValues(reason).Inc()
		writeProblem(w, pulsebase.EUNAUTHORIZED, detail)
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		fail("refresh_no_certificate", "refresh tokens are exchanged on the device listener, with the device's certificate")
		return
	}
	creds, err := s.deps.Devices.Refresh(r.Context(), strings.TrimSpace(body.RefreshToken), auth.Thumbprint(r.TLS.PeerCertificates[0].Raw), time.Now())
	switch {
	case errors.Is(err, auth.ErrDeviceRevoked):
		fail("refresh_revoked", "the device was revoked (a refresh token was used twice, or by its owner); enroll it again")
	case errors.Is(err, auth.ErrBadRefresh):
		fail("refresh_invalid", "the refresh token is invalid, expired or spent")
	case err != nil:
		s.deviceError(w, r, "refresh", err)
	default:
		writeJSON(w, http.StatusOK, s.withDeviceURL(creds))
	}
}

// deviceError answers a device operation's failure.
func (s *Server) deviceError(w http.ResponseWriter, r *http.Request, what string, err error) {
	switch {
	case errors.Is(err, auth.ErrNoDevice):
		writeProblem(w, pulsebase.ENOTFOUND, "no such device")
	case errors.Is(err, auth.ErrDeviceRevoked):
		writeProblem(w, pulsebase.EFORBIDDEN, "the device was revoked; enroll it again")
	default:
		s.deps.Log.LogAttrs(r.Context(), slog.LevelError, what, slog.Any("err", err))
		writeProblem(w, pulsebase.EUNAVAILABLE, "the device could not be updated; try again")
	}
}
