package auth

import (
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"

	"github.com/pulsebase/pulsebase"
)

// ErrRevoked is returned for a valid token (or certificate) that was revoked.
var ErrRevoked = errors.New("credential revoked")

// Authenticator turns a bearer token, and the TLS connection it came over, into a
// principal: the token's signature and claims (Tokens), its binding to a client
// certificate (RFC 8705), and the revocation list. The HTTP API and the sync gateway both
// use it, so a credential is judged the same way on every path.
type Authenticator struct {
	// Tokens verifies the token itself.
	Tokens Verifier
	// Revocations may be nil: then nothing is revoked before it expires.
	Revocations *Revocations
}

// Authenticate checks token, presented over a connection with TLS state peer (nil for
// plain HTTP). A token bound to a certificate (cnf x5t#S256) is valid only over a
// connection that presented that certificate; a connection that presented a client
// certificate (the device listener) accepts only tokens bound to it, so that a device's
// traffic is always sender-constrained. Errors wrap ErrInvalidToken or ErrRevoked.
func (a *Authenticator) Authenticate(token string, peer *tls.ConnectionState) (pulsebase.Principal, error) {
	p, err := a.Tokens.Verify(token)
	if err != nil {
		return pulsebase.Principal{}, err
	}
	var cert []byte
	if peer != nil && len(peer.PeerCertificates) > 0 {
		cert = peer.PeerCertificates[0].Raw
	}
	switch {
	case p.Confirmation != "" && cert == nil:
		return pulsebase.Principal{}, fmt.Errorf("%w: a certificate-bound token without its certificate", ErrInvalidToken)
	case p.Confirmation != "" && subtle.ConstantTimeCompare([]byte(p.Confirmation), []byte(Thumbprint(cert))) != 1:
		return pulsebase.Principal{}, fmt.Errorf("%w: the token is bound to another certificate", ErrInvalidToken)
	case p.Confirmation == "" && cert != nil:
		return pulsebase.Principal{}, fmt.Errorf("%w: the device listener takes certificate-bound tokens only", ErrInvalidToken)
	}
	if a.Revocations != nil {
		if a.Revocations.Revoked(p) {
			return pulsebase.Principal{}, fmt.Errorf("%w: token", ErrRevoked)
		}
		if cert != nil && a.Revocations.CertificateRevoked(Thumbprint(cert)) {
			return pulsebase.Principal{}, fmt.Errorf("%w: certificate", ErrRevoked)
		}
	}
	return p, nil
}
