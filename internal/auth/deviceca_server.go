package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net"
	"sync"
	"time"
)

// serverCertTTL is the lifetime of the device listener's own certificate; it is renewed
// in memory at two thirds of it.
const serverCertTTL = 30 * 24 * time.Hour

// ServerCertificates returns a tls.Config.GetCertificate for the device listener that
// presents a certificate the device CA issues for hosts (DNS names or IP addresses), so
// that devices verify the server with the same CA certificate their enrollment gave
// them. The certificate and its key live in memory only and are replaced well before
// they expire.
func (ca *DeviceCA) ServerCertificates(hosts []string) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	var (
		mu    sync.Mutex
		cur   *tls.Certificate
		renew time.Time
	)
	return func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		mu.Lock()
		defer mu.Unlock()
		now := time.Now()
		if cur == nil || now.After(renew) {
			c, err := ca.issueServer(hosts, now)
			if err != nil {
				return nil, err
			}
			cur, renew = c, now.Add(serverCertTTL*2/3)
		}
		return cur, nil
	}
}

func (ca *DeviceCA) issueServer(hosts []string, now time.Time) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "Pulsebase device listener"},
		NotBefore:             now.Add(-deviceCertSkew),
		NotAfter:              now.Add(serverCertTTL),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	if tmpl.NotAfter.After(ca.cert.NotAfter) {
		tmpl.NotAfter = ca.cert.NotAfter
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("issue device listener certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key, Leaf: leaf}, nil
}
