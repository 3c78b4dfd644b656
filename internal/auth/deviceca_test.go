package auth_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/auth"
	"github.com/pulsebase/pulsebase/internal/vault"
)

// The vault is the SecretStore a server opens its device CA over.
var _ auth.SecretStore = (*vault.Vault)(nil)

// memSecrets is an in-memory SecretStore.
type memSecrets struct {
	mu      sync.Mutex
	m       map[string][]byte
	creates int
	err     error
}

func (s *memSecrets) SystemSecret(_ context.Context, name string, create func() ([]byte, error)) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, s.err
	}
	if b, ok := s.m[name]; ok {
		return bytes.Clone(b), nil
	}
	b, err := create()
	if err != nil {
		return nil, err
	}
	if s.m == nil {
		s.m = map[string][]byte{}
	}
	s.m[name] = bytes.Clone(b)
	s.creates++
	return b, nil
}

// newCA opens a fresh device CA over its own in-memory store.
func newCA(tb testing.TB) *auth.DeviceCA {
	tb.Helper()
	ca, err := auth.OpenDeviceCA(context.Background(), &memSecrets{})
	if err != nil {
		tb.Fatal(err)
	}
	return ca
}

func p256(tb testing.TB) *ecdsa.PrivateKey {
	tb.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func ed25519Key(tb testing.TB) ed25519.PrivateKey {
	tb.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// csrPEM makes a certificate request signed by key, with whatever names a device might
// ask for.
func csrPEM(tb testing.TB, key crypto.Signer) []byte {
	tb.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: "admin", Organization: []string{"root"}},
		DNSNames: []string{"evil.example"},
		URIs:     []*url.URL{{Scheme: "pulsebase", Host: "users", Path: "/root/devices/x"}},
	}, key)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// issue parses a request made with key and issues a certificate for user's device.
func issue(tb testing.TB, ca *auth.DeviceCA, key crypto.Signer, user, device string, now time.Time) auth.DeviceCert {
	tb.Helper()
	csr, err := auth.ParseCSR(csrPEM(tb, key))
	if err != nil {
		tb.Fatal(err)
	}
	dc, err := ca.Issue(csr, user, device, 0, now)
	if err != nil {
		tb.Fatal(err)
	}
	return dc
}

func parse(tb testing.TB, der []byte) *x509.Certificate {
	tb.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func TestIssueAndDeviceOf(t *testing.T) {
	ca := newCA(t)
	now := time.Now()
	for name, key := range map[string]func(testing.TB) crypto.Signer{
		"ECDSA-P256": func(tb testing.TB) crypto.Signer { return p256(tb) },
		"ECDSA-P384": func(tb testing.TB) crypto.Signer {
			k, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
			return k
		},
		"Ed25519": func(tb testing.TB) crypto.Signer { return ed25519Key(tb) },
	} {
		t.Run(name, func(t *testing.T) {
			k := key(t)
			dc := issue(t, ca, k, "u123", "watch-1", now)
			cert := parse(t, dc.DER)
			if blk, _ := pem.Decode(dc.PEM); blk == nil || blk.Type != "CERTIFICATE" || !bytes.Equal(blk.Bytes, dc.DER) {
				t.Error("PEM does not hold the DER")
			}
			user, device, serial, thumb, err := ca.DeviceOf([]*x509.Certificate{cert}, now)
			if err != nil {
				t.Fatal(err)
			}
			if user != "u123" || device != "watch-1" {
				t.Errorf("DeviceOf names %q/%q, want u123/watch-1", user, device)
			}
			if serial != dc.Serial || serial != cert.SerialNumber.Text(16) || serial != strings.ToLower(serial) {
				t.Errorf("serial %q, DeviceCert says %q, certificate %x", serial, dc.Serial, cert.SerialNumber)
			}
			if thumb != dc.Thumbprint || thumb != auth.Thumbprint(dc.DER) || len(thumb) != 43 {
				t.Errorf("thumbprint %q, DeviceCert says %q", thumb, dc.Thumbprint)
			}
			if !cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(k.Public()) {
				t.Error("certificate is not for the request's key")
			}
			// The server's names, not the request's.
			if cert.Subject.CommonName != "watch-1" || len(cert.Subject.Organization) != 1 || cert.Subject.Organization[0] != "u123" {
				t.Errorf("subject %v, want CN=watch-1,O=u123", cert.Subject)
			}
			if len(cert.DNSNames) != 0 || len(cert.URIs) != 1 || cert.URIs[0].String() != "pulsebase://users/u123/devices/watch-1" {
				t.Errorf("SANs DNS %v URI %v, want only pulsebase://users/u123/devices/watch-1", cert.DNSNames, cert.URIs)
			}
			if cert.IsCA || len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
				t.Errorf("IsCA %v, ExtKeyUsage %v; want a leaf for client auth only", cert.IsCA, cert.ExtKeyUsage)
			}
			if cert.SerialNumber.BitLen() > 128 || cert.SerialNumber.BitLen() < 96 {
				t.Errorf("serial of %d bits, want a random 128-bit one", cert.SerialNumber.BitLen())
			}
			wantNB, wantNA := now.Add(-time.Minute).Truncate(time.Second), now.Add(auth.DeviceCertTTL).Truncate(time.Second)
			if !dc.NotBefore.Equal(wantNB) || !dc.NotAfter.Equal(wantNA) || !cert.NotAfter.Equal(dc.NotAfter) {
				t.Errorf("valid %s to %s, want %s to %s", dc.NotBefore, dc.NotAfter, wantNB, wantNA)
			}
		})
	}
	// Two certificates never share a serial.
	a, b := issue(t, ca, p256(t), "u", "d", now), issue(t, ca, p256(t), "u", "d", now)
	if a.Serial == b.Serial {
		t.Errorf("two certificates with serial %s", a.Serial)
	}
}

func TestIssueRSA(t *testing.T) {
	if testing.Short() {
		t.Skip("RSA key generation is slow")
	}
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ca := newCA(t)
	dc := issue(t, ca, k, "u1", "laptop", time.Now())
	if _, dev, _, _, err := ca.DeviceOf([]*x509.Certificate{parse(t, dc.DER)}, time.Now()); err != nil || dev != "laptop" {
		t.Errorf("got %q, %v", dev, err)
	}
}

func TestDeviceOfRefuses(t *testing.T) {
	ca := newCA(t)
	now := time.Now()
	dc := issue(t, ca, p256(t), "u1", "watch-1", now)
	good := parse(t, dc.DER)
	// Another CA of another deployment has the very same name: only the signature tells
	// them apart.
	other := newCA(t)
	if other.Certificate().Subject.String() != ca.Certificate().Subject.String() {
		t.Fatal("test wants two CAs with one name")
	}
	foreign := parse(t, issue(t, other, p256(t), "u1", "watch-1", now).DER)
	tampered := bytes.Clone(dc.DER)
	tampered[len(tampered)-1] ^= 1 // last byte of the signature
	for name, c := range map[string]struct {
		chain []*x509.Certificate
		at    time.Time
	}{
		"no certificate":         {nil, now},
		"another CA of one name": {[]*x509.Certificate{foreign}, now},
		"another CA, ours after": {[]*x509.Certificate{foreign, ca.Certificate()}, now},
		"expired":                {[]*x509.Certificate{good}, dc.NotAfter.Add(time.Second)},
		"not yet valid":          {[]*x509.Certificate{good}, dc.NotBefore.Add(-time.Second)},
		"tampered signature":     {[]*x509.Certificate{parse(t, tampered)}, now},
		"the CA itself":          {[]*x509.Certificate{ca.Certificate()}, now},
		"self-signed":            {[]*x509.Certificate{selfSigned(t, p256(t), "watch-1").Leaf}, now},
	} {
		_, _, _, _, err := ca.DeviceOf(c.chain, c.at)
		if err == nil {
			t.Errorf("%s: accepted", name)
		} else if code := pulsebase.ErrorCode(err); code != pulsebase.EUNAUTHORIZED {
			t.Errorf("%s: code %s (%v), want %s", name, code, err, pulsebase.EUNAUTHORIZED)
		}
	}
	// The limits themselves are inside the validity period.
	for _, at := range []time.Time{dc.NotBefore, dc.NotAfter} {
		if _, _, _, _, err := ca.DeviceOf([]*x509.Certificate{good}, at); err != nil {
			t.Errorf("at %s: %v", at, err)
		}
	}
	// The verification error stays reachable under the code.
	_, _, _, _, err := ca.DeviceOf([]*x509.Certificate{good}, dc.NotAfter.Add(time.Hour))
	var inv x509.CertificateInvalidError
	if !errors.As(err, &inv) || inv.Reason != x509.Expired {
		t.Errorf("expired: got %v, want an x509.CertificateInvalidError for expiry", err)
	}
}

func TestIssueNames(t *testing.T) {
	ca := newCA(t)
	now := time.Now()
	for _, n := range []struct{ user, device string }{
		{"u1", "watch/1 ä"},
		{"u/../x?y#z%", "../devices/evil"},
		{"ユーザー", "%2F%"},
		{"u1", strings.Repeat("é", 32)},
	} {
		dc := issue(t, ca, p256(t), n.user, n.device, now)
		user, device, _, _, err := ca.DeviceOf([]*x509.Certificate{parse(t, dc.DER)}, now)
		if err != nil || user != n.user || device != n.device {
			t.Errorf("%q/%q came back as %q/%q, %v", n.user, n.device, user, device, err)
		}
	}
	csr, err := auth.ParseCSR(csrPEM(t, p256(t)))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []struct{ user, device string }{
		{"", "d"}, {"u", ""}, {"u", "a\nb"}, {"u\x00", "d"}, {"u", "\xff"}, {"u", strings.Repeat("x", 65)},
	} {
		if _, err := ca.Issue(csr, n.user, n.device, 0, now); pulsebase.ErrorCode(err) != pulsebase.EINVALID {
			t.Errorf("%q/%q: got %v, want EINVALID", n.user, n.device, err)
		}
	}
}

func TestIssueLifetime(t *testing.T) {
	ca := newCA(t)
	now := time.Now()
	csr, err := auth.ParseCSR(csrPEM(t, p256(t)))
	if err != nil {
		t.Fatal(err)
	}
	dc, err := ca.Issue(csr, "u", "d", auth.MaxDeviceCertTTL, now)
	if err != nil || !dc.NotAfter.Equal(now.Add(auth.MaxDeviceCertTTL).Truncate(time.Second)) {
		t.Errorf("30 days: NotAfter %s, %v", dc.NotAfter, err)
	}
	for _, ttl := range []time.Duration{-time.Second, auth.MaxDeviceCertTTL + time.Second} {
		if _, err := ca.Issue(csr, "u", "d", ttl, now); pulsebase.ErrorCode(err) != pulsebase.EINVALID {
			t.Errorf("ttl %s: got %v, want EINVALID", ttl, err)
		}
	}
	// A CA near its end issues certificates that end with it, and none once it ended.
	key := p256(t)
	short := auth.NewDeviceCA(key, caCert(t, key, now.Add(time.Hour)))
	dc, err = short.Issue(csr, "u", "d", 0, now)
	if err != nil || !dc.NotAfter.Equal(short.Certificate().NotAfter) {
		t.Errorf("NotAfter %s, %v; want the CA's %s", dc.NotAfter, err, short.Certificate().NotAfter)
	}
	if _, err := short.Issue(csr, "u", "d", 0, now.Add(2*time.Hour)); err == nil {
		t.Error("an expired CA issued a certificate")
	}
	if _, err := ca.Issue(nil, "u", "d", 0, now); err == nil {
		t.Error("issued without a request")
	}
}

// caCert self-signs a CA certificate for key valid until notAfter.
func caCert(t *testing.T, key *ecdsa.PrivateKey, notAfter time.Time) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "short CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter,
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return parse(t, der)
}

func TestParseCSR(t *testing.T) {
	key := p256(t)
	p := csrPEM(t, key)
	blk, _ := pem.Decode(p)
	der := blk.Bytes
	std := base64.StdEncoding.EncodeToString(der)
	var wrapped strings.Builder
	for s := std; len(s) > 0; {
		n := min(64, len(s))
		wrapped.WriteString(s[:n] + "\r\n")
		s = s[n:]
	}
	for name, in := range map[string][]byte{
		"PEM":                 p,
		"legacy PEM type":     pem.EncodeToMemory(&pem.Block{Type: "NEW CERTIFICATE REQUEST", Bytes: der}),
		"base64":              []byte(std),
		"base64 wrapped":      []byte(wrapped.String()),
		"base64url unpadded":  []byte(base64.RawURLEncoding.EncodeToString(der)),
		"DER":                 der,
		"PEM with whitespace": append(append([]byte("\n  "), p...), "\n\n"...),
	} {
		csr, err := auth.ParseCSR(in)
		if err != nil {
			t.Errorf("%s: %v", name, err)
		} else if !key.PublicKey.Equal(csr.PublicKey) {
			t.Errorf("%s: another key", name)
		}
	}

	badSig := bytes.Clone(der)
	badSig[len(badSig)-1] ^= 1
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	for name, in := range map[string][]byte{
		"empty":           nil,
		"garbage":         []byte("not a request at all"),
		"random bytes":    []byte("\x30\x82\x01\x00garbage"),
		"a certificate":   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"bad signature":   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: badSig}),
		"RSA-1024":        csrPEM(t, rsa1024),
		"ECDSA P-224":     csrPEM(t, p224),
		"ECDSA P-521":     csrPEM(t, p521),
		"over 16 KiB":     append(bytes.Repeat([]byte(" "), 16<<10), p...),
		"truncated":       p[:len(p)/2],
		"base64 of junk":  []byte(base64.StdEncoding.EncodeToString([]byte("junk junk junk"))),
		"truncated DER":   der[:len(der)-10],
		"PEM, bad base64": []byte("-----BEGIN CERTIFICATE REQUEST-----\n!!!\n-----END CERTIFICATE REQUEST-----\n"),
	} {
		if _, err := auth.ParseCSR(in); pulsebase.ErrorCode(err) != pulsebase.EINVALID {
			t.Errorf("%s: got %v, want EINVALID", name, err)
		}
	}
}

func TestOpenDeviceCA(t *testing.T) {
	ctx := context.Background()
	s := &memSecrets{}
	a, err := auth.OpenDeviceCA(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	b, err := auth.OpenDeviceCA(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if !a.Certificate().Equal(b.Certificate()) || s.creates != 1 {
		t.Fatalf("second open: same cert %v, %d creates; want the same CA, created once", a.Certificate().Equal(b.Certificate()), s.creates)
	}
	// What one opened, the other verifies: the key came back too.
	dc := issue(t, a, p256(t), "u", "d", time.Now())
	if _, _, _, _, err := b.DeviceOf([]*x509.Certificate{parse(t, dc.DER)}, time.Now()); err != nil {
		t.Errorf("a certificate from the first open fails the second: %v", err)
	}
	c := a.Certificate()
	if c.Subject.CommonName != "Pulsebase device CA" || !c.IsCA || c.MaxPathLen != 0 || !c.MaxPathLenZero ||
		c.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("CA certificate: CN %q IsCA %v MaxPathLen %d/%v KeyUsage %b", c.Subject.CommonName, c.IsCA, c.MaxPathLen, c.MaxPathLenZero, c.KeyUsage)
	}
	if k, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("CA key %T, want ECDSA P-256", c.PublicKey)
	}
	if life := c.NotAfter.Sub(c.NotBefore); life < 10*365*24*time.Hour || life > 3660*24*time.Hour {
		t.Errorf("CA valid for %s, want 10 years", life)
	}
	// The pool handed out is a copy: adding to it does not widen what the CA accepts.
	pool := a.Pool()
	other := newCA(t)
	pool.AddCert(other.Certificate())
	foreign := parse(t, issue(t, other, p256(t), "u", "d", time.Now()).DER)
	if _, _, _, _, err := a.DeviceOf([]*x509.Certificate{foreign}, time.Now()); err == nil {
		t.Error("adding to Pool() made the CA accept another CA's certificate")
	}

	for name, secret := range map[string][]byte{
		"garbage":  []byte("garbage"),
		"key only": s.m[auth.DeviceCASecret][:bytes.Index(s.m[auth.DeviceCASecret], []byte("-----BEGIN CERTIFICATE"))],
		"another CA's certificate": append(
			s.m[auth.DeviceCASecret][:bytes.Index(s.m[auth.DeviceCASecret], []byte("-----BEGIN CERTIFICATE"))],
			pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: other.Certificate().Raw})...),
	} {
		bad := &memSecrets{m: map[string][]byte{auth.DeviceCASecret: secret}}
		if _, err := auth.OpenDeviceCA(ctx, bad); err == nil {
			t.Errorf("%s: opened", name)
		}
	}
	boom := errors.New("store down")
	if _, err := auth.OpenDeviceCA(ctx, &memSecrets{err: boom}); !errors.Is(err, boom) {
		t.Errorf("got %v, want the store's error", err)
	}
}

// selfSigned returns a certificate for key, signed by itself, that a device might try
// instead of an issued one.
func selfSigned(tb testing.TB, key crypto.Signer, cn string) tls.Certificate {
	tb.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: cn},
		URIs:      []*url.URL{{Scheme: "pulsebase", Host: "users", Path: "/u1/devices/" + cn}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		tb.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: parse(tb, der)}
}

// serverCert makes the TLS server's own certificate for 127.0.0.1 and a pool with which
// clients verify it. It is not from the device CA: that one signs clients only.
func serverCert(tb testing.TB) (tls.Certificate, *x509.CertPool) {
	tb.Helper()
	key := p256(tb)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pulsebase test server"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		tb.Fatal(err)
	}
	leaf := parse(tb, der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// clientCert is an issued certificate with its key, as a device holds it.
func clientCert(tb testing.TB, ca *auth.DeviceCA, key crypto.Signer, user, device string) tls.Certificate {
	tb.Helper()
	dc := issue(tb, ca, key, user, device, time.Now())
	return tls.Certificate{Certificate: [][]byte{dc.DER}, PrivateKey: key, Leaf: parse(tb, dc.DER)}
}

func TestMTLSRoundTrip(t *testing.T) {
	ca := newCA(t)
	sc, roots := serverCert(t)
	type seen struct {
		user, device, serial, thumb string
		version                     uint16
	}
	got := make(chan seen, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, device, serial, thumb, err := ca.DeviceOf(r.TLS.PeerCertificates, time.Now())
		if err != nil {
			t.Errorf("handler: crypto/tls let in a certificate DeviceOf refuses: %v", err)
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		got <- seen{user, device, serial, thumb, r.TLS.Version}
		fmt.Fprintf(w, "hello %s/%s", user, device)
	}))
	srv.TLS = ca.TLSConfig(sc)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected here
	srv.StartTLS()
	t.Cleanup(srv.Close)

	get := func(cfg *tls.Config) (string, error) {
		cfg.RootCAs = roots
		tr := &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(srv.URL)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("status %s: %s", resp.Status, b)
		}
		return string(b), err
	}

	for name, ver := range map[string]uint16{"TLS 1.3": tls.VersionTLS13, "TLS 1.2": tls.VersionTLS12} {
		t.Run("issued certificate, "+name, func(t *testing.T) {
			cc := clientCert(t, ca, p256(t), "u42", "watch/1 ä")
			body, err := get(&tls.Config{Certificates: []tls.Certificate{cc}, MinVersion: ver, MaxVersion: ver})
			if err != nil {
				t.Fatal(err)
			}
			s := <-got
			if body != "hello u42/watch/1 ä" || s.user != "u42" || s.device != "watch/1 ä" || s.version != ver {
				t.Errorf("body %q, handler saw %+v", body, s)
			}
			if s.thumb != auth.Thumbprint(cc.Certificate[0]) || s.serial != cc.Leaf.SerialNumber.Text(16) {
				t.Errorf("handler saw serial %s thumbprint %s, want %x %s", s.serial, s.thumb, cc.Leaf.SerialNumber, auth.Thumbprint(cc.Certificate[0]))
			}
		})
	}
	t.Run("Ed25519 device key", func(t *testing.T) {
		cc := clientCert(t, ca, ed25519Key(t), "u42", "ring")
		if _, err := get(&tls.Config{Certificates: []tls.Certificate{cc}}); err != nil {
			t.Fatal(err)
		}
		if s := <-got; s.device != "ring" {
			t.Errorf("handler saw %+v", s)
		}
	})

	// A client with the wrong certificate would not even send it by default, since its
	// issuer is not among the CAs the server asks for; GetClientCertificate sends it
	// anyway so that the server's verification is what refuses it.
	sendAnyway := func(c tls.Certificate) *tls.Config {
		return &tls.Config{GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }}
	}
	other := newCA(t)
	for name, cfg := range map[string]*tls.Config{
		"no certificate":         {},
		"self-signed":            sendAnyway(selfSigned(t, p256(t), "watch-1")),
		"another CA of one name": {Certificates: []tls.Certificate{clientCert(t, other, p256(t), "u42", "watch-1")}},
		"expired": sendAnyway(func() tls.Certificate {
			key := p256(t)
			csr, _ := auth.ParseCSR(csrPEM(t, key))
			dc, err := ca.Issue(csr, "u42", "watch-1", time.Hour, time.Now().Add(-2*time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			return tls.Certificate{Certificate: [][]byte{dc.DER}, PrivateKey: key}
		}()),
		"server certificate": sendAnyway(sc),
	} {
		t.Run(name, func(t *testing.T) {
			body, err := get(cfg)
			if err == nil {
				t.Errorf("request succeeded: %q", body)
			}
			t.Logf("refused: %v", err)
			select {
			case s := <-got:
				t.Errorf("handler ran for %+v", s)
			default:
			}
		})
	}
}

// handshakeServer accepts TLS connections on loopback with cfg and, after each completed
// handshake (client certificate verified), writes one byte and closes: the client waits
// for that byte, so a measured handshake includes the server's verification, which TLS
// 1.3 otherwise lets the client finish before.
func handshakeServer(b *testing.B, cfg *tls.Config) string {
	b.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	b.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				tc := c.(*tls.Conn)
				if err := tc.Handshake(); err != nil {
					b.Errorf("server handshake: %v", err)
					return
				}
				tc.Write([]byte{1})
			})
		}
	})
	return ln.Addr().String()
}

func dialOnce(b *testing.B, addr string, cfg *tls.Config) {
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		b.Fatal(err)
	}
	var one [1]byte
	if _, err := io.ReadFull(c, one[:]); err != nil {
		b.Fatal(err)
	}
	c.Close()
}

// BenchmarkMTLSHandshake measures full TLS 1.3 handshakes (no resumption: the client has
// no session cache) with client certificate verification against the device CA, over
// loopback TCP. Client and server share the machine's cores, so a server alone does
// somewhat better than these rates.
func BenchmarkMTLSHandshake(b *testing.B) {
	ca := newCA(b)
	sc, roots := serverCert(b)
	addr := handshakeServer(b, ca.TLSConfig(sc))
	for _, c := range []struct {
		name   string
		key    crypto.Signer
		curves []tls.CurveID
	}{
		// The default key exchange, X25519MLKEM768 in current Go.
		{"ECDSA-P256", p256(b), nil},
		// Classical X25519 alone, to show what the post-quantum hybrid costs.
		{"ECDSA-P256/X25519", p256(b), []tls.CurveID{tls.X25519}},
		{"Ed25519-client", ed25519Key(b), nil},
	} {
		cc := clientCert(b, ca, c.key, "u1", "watch-1")
		cfg := &tls.Config{
			Certificates: []tls.Certificate{cc}, RootCAs: roots,
			MinVersion: tls.VersionTLS13, CurvePreferences: c.curves,
		}
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				dialOnce(b, addr, cfg)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "handshakes/s")
		})
		if c.curves == nil && c.name == "ECDSA-P256" {
			b.Run(c.name+"/parallel", func(b *testing.B) {
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						dialOnce(b, addr, cfg)
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "handshakes/s")
			})
		}
	}
}

// BenchmarkIssue measures signing a device certificate from a parsed request (the
// request's signature is checked again inside Issue), and parsing plus issuing.
func BenchmarkIssue(b *testing.B) {
	ca := newCA(b)
	for _, c := range []struct {
		name string
		key  crypto.Signer
	}{{"ECDSA-P256", p256(b)}, {"Ed25519", ed25519Key(b)}} {
		name, p := c.name, csrPEM(b, c.key)
		csr, err := auth.ParseCSR(p)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			now := time.Now()
			for b.Loop() {
				if _, err := ca.Issue(csr, "u1", "watch-1", 0, now); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/ParseCSR+Issue", func(b *testing.B) {
			b.ReportAllocs()
			now := time.Now()
			for b.Loop() {
				csr, err := auth.ParseCSR(p)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := ca.Issue(csr, "u1", "watch-1", 0, now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
