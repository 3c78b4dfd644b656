package auth

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/pulsebase/pulsebase"
)

// Lifetimes of device certificates. They are short because a certificate, unlike a token,
// is not looked up on every request: expiry bounds how long a lost device keeps working
// when no one revokes its serial.
const (
	// DeviceCertTTL is the lifetime of a device certificate when Issue is given none.
	DeviceCertTTL = 7 * 24 * time.Hour
	// MaxDeviceCertTTL bounds the lifetime Issue accepts.
	MaxDeviceCertTTL = 30 * 24 * time.Hour
	// deviceCertSkew backdates NotBefore so that a device whose clock is a little behind the
	// server's can use its certificate at once.
	deviceCertSkew = time.Minute
	// deviceCALifetime is the lifetime of the CA certificate. Devices never see it expire
	// in practice; rolling it over means re-enrolling every device.
	deviceCALifetime = 10 * 365 * 24 * time.Hour
)

// DeviceCASecret is the name of the system secret holding the device CA's key and
// certificate (see SecretStore).
const DeviceCASecret = "device-ca"

// maxCSRSize bounds what ParseCSR reads, so a hostile enrollment body costs little. A CSR
// with an RSA-8192 key and a few names is under 3 KiB in PEM.
const maxCSRSize = 16 << 10

// maxNameLen bounds user and device names: they go into the subject's O and CN, whose
// upper bound in RFC 5280 is 64 characters, and the sync gateway's device ids are at most
// 64 bytes too.
const maxNameLen = 64

// deviceURIScheme and deviceURIHost start the URI SAN naming a device:
// pulsebase://users/<user>/devices/<device>, path segments escaped.
const (
	deviceURIScheme = "pulsebase"
	deviceURIHost   = "users"
)

// SecretStore keeps deployment secrets; *vault.Vault implements it with SystemSecret.
type SecretStore interface {
	// SystemSecret returns the secret called name, creating it with create on first use;
	// concurrent first uses agree on one secret.
	SystemSecret(ctx context.Context, name string, create func() ([]byte, error)) ([]byte, error)
}

// DeviceCA issues short-lived client certificates to enrolled devices, which then
// authenticate with mutual TLS (RFC 8705). Its methods are safe for concurrent use.
type DeviceCA struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
	pool *x509.CertPool // only cert: chains must end at this CA, never at a system root
}

// OpenDeviceCA loads the device CA from secrets, creating its ECDSA P-256 key and
// self-signed certificate on first use. Every server process of a deployment gets the same
// CA, so a device enrolled through one is accepted by all.
func OpenDeviceCA(ctx context.Context, secrets SecretStore) (*DeviceCA, error) {
	b, err := secrets.SystemSecret(ctx, DeviceCASecret, newDeviceCASecret)
	if err != nil {
		return nil, fmt.Errorf("device ca: %w", err)
	}
	key, cert, err := parseDeviceCASecret(b)
	if err != nil {
		return nil, fmt.Errorf("device ca: %w", err)
	}
	// An expired CA would fail every device handshake with a verification error that
	// does not say why; fail loudly at start instead.
	if now := time.Now(); now.After(cert.NotAfter) {
		return nil, fmt.Errorf("device ca: certificate expired at %s: every device must be re-enrolled under a new CA", cert.NotAfter.Format(time.RFC3339))
	}
	return NewDeviceCA(key, cert), nil
}

// NewDeviceCA returns a CA signing with key, whose certificate is cert. Tests use it; a
// server opens its CA with OpenDeviceCA.
func NewDeviceCA(key *ecdsa.PrivateKey, cert *x509.Certificate) *DeviceCA {
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &DeviceCA{key: key, cert: cert, pool: pool}
}

// newDeviceCASecret makes a CA key and certificate and returns both in PEM, the form
// the secret store keeps.
func newDeviceCASecret() ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "Pulsebase device CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(deviceCALifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		// It signs device certificates only, never another CA.
		MaxPathLen:     0,
		MaxPathLenZero: true,
		KeyUsage:       x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("self-sign certificate: %w", err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	var buf bytes.Buffer
	pem.Encode(&buf, &pem.Block{Type: "PRIVATE KEY", Bytes: pk})
	pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	return buf.Bytes(), nil
}

// parseDeviceCASecret reads what newDeviceCASecret wrote, and checks that the key is the
// certificate's.
func parseDeviceCASecret(b []byte) (*ecdsa.PrivateKey, *x509.Certificate, error) {
	var key *ecdsa.PrivateKey
	var cert *x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		switch blk.Type {
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
			if err != nil {
				return nil, nil, fmt.Errorf("parse key: %w", err)
			}
			ek, ok := k.(*ecdsa.PrivateKey)
			if !ok {
				return nil, nil, fmt.Errorf("key is a %T, want ECDSA", k)
			}
			key = ek
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, nil, fmt.Errorf("parse certificate: %w", err)
			}
			cert = c
		}
	}
	if key == nil || cert == nil {
		return nil, nil, errors.New("secret lacks the key or the certificate")
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, nil, errors.New("key does not match the certificate")
	}
	if !cert.IsCA {
		return nil, nil, errors.New("certificate is not a CA")
	}
	return key, cert, nil
}

// Certificate returns the CA certificate, for devices to pin or operators to inspect. It
// is shared: do not modify it.
func (ca *DeviceCA) Certificate() *x509.Certificate { return ca.cert }

// Pool returns a pool holding only the CA certificate. It is a copy, so adding to it
// cannot widen what the CA's own TLSConfig accepts.
func (ca *DeviceCA) Pool() *x509.CertPool { return ca.pool.Clone() }

// ParseCSR decodes a PKCS#10 request in PEM, base64 DER (as RFC 7030 sends it, padded or
// not, standard or URL alphabet) or raw DER, checks its self-signature (proof that the
// device holds the private key) and accepts only ECDSA P-256/P-384, Ed25519 or RSA keys of
// 2048 to 8192 bits. Its errors have code EINVALID and a message safe to show the device.
func ParseCSR(b []byte) (*x509.CertificateRequest, error) {
	if len(b) > maxCSRSize {
		return nil, pulsebase.Errorf(pulsebase.EINVALID, "certificate request over %d bytes", maxCSRSize)
	}
	der, err := csrDER(b)
	if err != nil {
		return nil, err
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, pulsebase.Errorf(pulsebase.EINVALID, "certificate request does not parse: %v", err)
	}
	if err := checkCSR(csr); err != nil {
		return nil, err
	}
	return csr, nil
}

// csrDER finds the DER of a request in b.
func csrDER(b []byte) ([]byte, error) {
	b = bytes.TrimSpace(b)
	if bytes.HasPrefix(b, []byte("-----BEGIN")) {
		blk, _ := pem.Decode(b)
		// "NEW CERTIFICATE REQUEST" is what older tools (Netscape, some Windows ones) write.
		if blk == nil || (blk.Type != "CERTIFICATE REQUEST" && blk.Type != "NEW CERTIFICATE REQUEST") {
			return nil, pulsebase.Errorf(pulsebase.EINVALID, "no CERTIFICATE REQUEST PEM block")
		}
		return blk.Bytes, nil
	}
	if len(b) > 0 && b[0] == 0x30 { // an ASN.1 SEQUENCE: raw DER ('0' is not base64 of one)
		return b, nil
	}
	// Base64 bodies may be wrapped at 64 or 76 columns.
	s := strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return -1
		}
		return r
	}, string(b))
	s = strings.TrimRight(s, "=")
	if strings.ContainsAny(s, "-_") {
		der, err := base64.RawURLEncoding.DecodeString(s)
		if err == nil {
			return der, nil
		}
	} else if der, err := base64.RawStdEncoding.DecodeString(s); err == nil {
		return der, nil
	}
	return nil, pulsebase.Errorf(pulsebase.EINVALID, "certificate request is neither PEM, base64 nor DER")
}

// checkCSR checks the self-signature and the key of csr. Issue runs it too, so a request
// parsed by other means is held to the same rules.
func checkCSR(csr *x509.CertificateRequest) error {
	if err := checkDeviceKey(csr.PublicKey); err != nil {
		return err
	}
	if err := csr.CheckSignature(); err != nil {
		return pulsebase.Errorf(pulsebase.EINVALID, "certificate request signature does not verify: %v", err)
	}
	return nil
}

// checkDeviceKey accepts the public keys a device certificate may hold. RSA stops at 8192
// bits because crypto/tls refuses larger keys in a handshake: a certificate for one would
// be useless.
func checkDeviceKey(pub any) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() || k.Curve == elliptic.P384() {
			return nil
		}
		return pulsebase.Errorf(pulsebase.EINVALID, "ECDSA curve %s not accepted: use P-256 or P-384", k.Curve.Params().Name)
	case ed25519.PublicKey:
		return nil
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < 2048 || n > 8192 {
			return pulsebase.Errorf(pulsebase.EINVALID, "RSA key of %d bits not accepted: use 2048 to 8192 bits", n)
		}
		return nil
	default:
		return pulsebase.Errorf(pulsebase.EINVALID, "public key type %T not accepted: use ECDSA P-256/P-384, Ed25519 or RSA", pub)
	}
}

// DeviceCert is a certificate Issue made.
type DeviceCert struct {
	DER       []byte // the certificate, as TLS sends it
	PEM       []byte // the same, for the enrollment response
	Serial    string // lowercase hex without leading zeros
	NotBefore time.Time
	NotAfter  time.Time
	// Thumbprint is the certificate's x5t#S256 (RFC 8705): tokens bound to it carry it in
	// their cnf claim.
	Thumbprint string
}

// Issue signs a client certificate for the public key of csr naming user (the internal
// id) and device: subject CN=device, O=user, and a URI SAN
// pulsebase://users/<user>/devices/<device> (segments path-escaped), which is what
// DeviceOf reads. It is good for client authentication only, has a random 128-bit serial,
// and is valid from now-1m (clock skew) to now+ttl (0 means DeviceCertTTL, at most
// MaxDeviceCertTTL, never past the CA's own expiry). The request's own subject and
// names are ignored: the server decides who the certificate names.
func (ca *DeviceCA) Issue(csr *x509.CertificateRequest, user, device string, ttl time.Duration, now time.Time) (DeviceCert, error) {
	if csr == nil {
		return DeviceCert{}, pulsebase.Errorf(pulsebase.EINVALID, "no certificate request")
	}
	if err := checkCSR(csr); err != nil {
		return DeviceCert{}, err
	}
	if err := checkName("user", user); err != nil {
		return DeviceCert{}, err
	}
	if err := checkName("device", device); err != nil {
		return DeviceCert{}, err
	}
	switch {
	case ttl == 0:
		ttl = DeviceCertTTL
	case ttl < 0 || ttl > MaxDeviceCertTTL:
		return DeviceCert{}, pulsebase.Errorf(pulsebase.EINVALID, "certificate lifetime %s not in (0, %s]", ttl, MaxDeviceCertTTL)
	}
	notAfter := now.Add(ttl)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	if !now.Before(notAfter) {
		return DeviceCert{}, fmt.Errorf("issue device certificate: the device CA expired at %s", ca.cert.NotAfter.Format(time.RFC3339))
	}
	serial, err := randomSerial()
	if err != nil {
		return DeviceCert{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// The subject is for people reading the certificate (logs, openssl x509 -text);
		// DeviceOf reads the URI, which is unambiguous.
		Subject:               pkix.Name{CommonName: device, Organization: []string{user}},
		URIs:                  []*url.URL{deviceURI(user, device)},
		NotBefore:             now.Add(-deviceCertSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, csr.PublicKey, ca.key)
	if err != nil {
		return DeviceCert{}, fmt.Errorf("issue device certificate for %s/%s: %w", user, device, err)
	}
	// Read back what was encoded: the times are whole seconds in the certificate.
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return DeviceCert{}, fmt.Errorf("issue device certificate: parse own output: %w", err)
	}
	return DeviceCert{
		DER:        der,
		PEM:        pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		Serial:     serialHex(cert.SerialNumber),
		NotBefore:  cert.NotBefore,
		NotAfter:   cert.NotAfter,
		Thumbprint: Thumbprint(der),
	}, nil
}

// checkName accepts 1 to maxNameLen bytes of UTF-8 without control characters: any such
// name encodes in a certificate and escapes in a URI losslessly.
func checkName(what, s string) error {
	if s == "" || len(s) > maxNameLen || !utf8.ValidString(s) {
		return pulsebase.Errorf(pulsebase.EINVALID, "%s name must be 1 to %d bytes of UTF-8", what, maxNameLen)
	}
	if strings.IndexFunc(s, unicode.IsControl) >= 0 {
		return pulsebase.Errorf(pulsebase.EINVALID, "%s name has a control character", what)
	}
	return nil
}

// deviceURI is the URI SAN naming user's device.
func deviceURI(user, device string) *url.URL {
	// RawPath keeps a "/" inside a name escaped (%2F) on output, so it cannot be taken
	// for a separator; with Path alone it would be written bare.
	return &url.URL{
		Scheme:  deviceURIScheme,
		Host:    deviceURIHost,
		Path:    "/" + user + "/devices/" + device,
		RawPath: "/" + url.PathEscape(user) + "/devices/" + url.PathEscape(device),
	}
}

// parseDeviceURI is the inverse of deviceURI.
func parseDeviceURI(u *url.URL) (user, device string, ok bool) {
	if u.Scheme != deviceURIScheme || u.Host != deviceURIHost || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", "", false
	}
	parts := strings.Split(u.EscapedPath(), "/")
	if len(parts) != 4 || parts[0] != "" || parts[2] != "devices" {
		return "", "", false
	}
	user, err1 := url.PathUnescape(parts[1])
	device, err2 := url.PathUnescape(parts[3])
	if err1 != nil || err2 != nil || checkName("user", user) != nil || checkName("device", device) != nil {
		return "", "", false
	}
	return user, device, true
}

// DeviceOf verifies a presented client certificate chain (leaf first, as in
// tls.ConnectionState.PeerCertificates) against the CA at now, for client authentication,
// and returns the user and device it names, its serial (lowercase hex) and its thumbprint.
// Certificates after the leaf are ignored: the CA signs devices directly. It does not
// consult revocations; the caller checks the certificate with Revocations.CertificateRevoked.
// Refusals have code EUNAUTHORIZED and wrap the verification error.
func (ca *DeviceCA) DeviceOf(chain []*x509.Certificate, now time.Time) (user, device, serial, thumbprint string, err error) {
	if len(chain) == 0 || chain[0] == nil {
		return "", "", "", "", pulsebase.Errorf(pulsebase.EUNAUTHORIZED, "no client certificate")
	}
	leaf := chain[0]
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:       ca.pool,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return "", "", "", "", fmt.Errorf("%w: %w", pulsebase.Errorf(pulsebase.EUNAUTHORIZED, "client certificate not accepted"), err)
	}
	found := false
	for _, u := range leaf.URIs {
		us, dev, ok := parseDeviceURI(u)
		if !ok {
			continue
		}
		if found {
			// Issue writes one; two would mean a certificate this code did not make.
			return "", "", "", "", pulsebase.Errorf(pulsebase.EUNAUTHORIZED, "client certificate names two devices")
		}
		user, device, found = us, dev, true
	}
	if !found {
		return "", "", "", "", pulsebase.Errorf(pulsebase.EUNAUTHORIZED, "client certificate names no device")
	}
	return user, device, serialHex(leaf.SerialNumber), Thumbprint(leaf.Raw), nil
}

// Thumbprint returns the base64url (unpadded) SHA-256 of a certificate's DER: its
// x5t#S256 confirmation method in RFC 8705.
func Thumbprint(der []byte) string {
	h := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// TLSConfig returns a server configuration for the device listener: serverCert is the
// server's own certificate; clients must present a certificate the device CA issued
// (checked by crypto/tls at the current time). The server then needs no names from the
// certificate: tokens are bound to its thumbprint (Authenticator); DeviceOf reads them for
// tools and diagnostics.
// TLS 1.2 is the floor because RFC 8705 and older devices allow it.
func (ca *DeviceCA) TLSConfig(serverCert tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{serverCert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.pool,
		MinVersion:   tls.VersionTLS12,
		// TLS 1.2 with forward-secret AEAD suites only, as the API listener (TLS 1.3's
		// suites are all AEAD).
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
	}
}

// randomSerial returns a random positive 128-bit serial: unpredictable serials are what
// keep a chosen-prefix collision from forging a certificate, and RFC 5280 caps serials at
// 20 bytes.
func randomSerial() (*big.Int, error) {
	var b [16]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("serial: %w", err)
		}
		if s := new(big.Int).SetBytes(b[:]); s.Sign() > 0 {
			return s, nil
		}
	}
}

// serialHex formats a serial as Revocations keys it.
func serialHex(s *big.Int) string { return s.Text(16) }
