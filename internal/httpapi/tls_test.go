package httpapi

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
)

func TestSelfSignedCertificateRecoversAHalfPresentPair(t *testing.T) {
	dir := t.TempDir()
	first, err := SelfSignedCertificate(dir, []string{"0.0.0.0", "pulse.example"})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(first.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range leaf.IPAddresses {
		if ip.IsUnspecified() {
			t.Errorf("the certificate names the unspecified address %s", ip)
		}
	}
	if len(leaf.DNSNames) != 2 || leaf.DNSNames[1] != "pulse.example" {
		t.Errorf("got DNS names %v, want localhost and pulse.example", leaf.DNSNames)
	}
	if err := os.Remove(filepath.Join(dir, "tls.crt")); err != nil {
		t.Fatal(err)
	}
	second, err := SelfSignedCertificate(dir, nil)
	if err != nil {
		t.Fatalf("with the certificate deleted and its key left: %v", err)
	}
	if string(second.Certificate[0]) == string(first.Certificate[0]) {
		t.Error("got the deleted certificate back")
	}
}
