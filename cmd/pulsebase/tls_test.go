package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase/internal/pbtest"
)

// liveServer is a `pulsebase serve` started through run(), over HTTP or HTTPS, with a
// client that trusts its certificate.
type liveServer struct {
	url    string // with an unspecified listen host replaced by loopback
	client *http.Client
	stdout *pbtest.SyncBuffer
	stderr *pbtest.SyncBuffer
	stop   func() error
}

var listeningHTTPS = regexp.MustCompile(`listening on (https?://\S+)`)

// startLive runs `serve --data-dir dataDir --log-format json extra...` and waits until
// /readyz answers 200. For an https URL the client trusts only the PEM certificate in
// caFile, read once the server listens (a self-signed one is created at start); caFile ""
// means the server must speak plain HTTP. extra may override --http-addr.
func startLive(t *testing.T, dataDir, caFile string, extra ...string) *liveServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &liveServer{stdout: &pbtest.SyncBuffer{}, stderr: &pbtest.SyncBuffer{}}
	args := append([]string{"serve", "--data-dir", dataDir, "--http-addr", "127.0.0.1:0", "--log-format", "json"}, extra...)
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, noEnv, strings.NewReader(""), s.stdout, s.stderr) }()
	var raw string
	pbtest.WaitFor(t, 30*time.Second, "the server to listen", func() bool {
		select {
		case err := <-done:
			cancel()
			t.Fatalf("serve %v returned early: %v\n%s", extra, err, s.stderr)
		default:
		}
		if m := listeningHTTPS.FindStringSubmatch(s.stdout.String()); m != nil {
			raw = m[1]
		}
		return raw != ""
	})
	var once bool
	s.stop = func() error {
		if once {
			return nil
		}
		once = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			return errors.New("serve did not stop within 30s")
		}
	}
	t.Cleanup(func() { s.stop() })

	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	// A server on all interfaces is reached through loopback.
	if ip := net.ParseIP(u.Hostname()); ip != nil && ip.IsUnspecified() {
		lo := "127.0.0.1"
		if ip.To4() == nil {
			lo = "::1"
		}
		u.Host = net.JoinHostPort(lo, u.Port())
	}
	s.url = u.String()
	switch {
	case caFile == "" && u.Scheme != "http":
		t.Fatalf("got %s, want a plain http URL", raw)
	case caFile != "" && u.Scheme != "https":
		t.Fatalf("got %s, want an https URL", raw)
	}
	s.client = &http.Client{Timeout: 30 * time.Second}
	if caFile != "" {
		s.client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: certPool(t, caFile)}}
	}
	pbtest.WaitFor(t, 30*time.Second, "readyz", func() bool {
		r, err := s.client.Get(s.url + "/readyz")
		if err != nil {
			t.Fatalf("GET /readyz: %v", err)
		}
		r.Body.Close()
		return r.StatusCode == http.StatusOK
	})
	return s
}

// do sends a request through the server's client, like pbtest.Do.
func (s *liveServer) do(t *testing.T, method, path, token, contentType string, body []byte) pbtest.Response {
	t.Helper()
	return doWith(t, s.client, method, s.url+path, token, contentType, body)
}

func doWith(t *testing.T, c *http.Client, method, url, token, contentType string, body []byte) pbtest.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return pbtest.Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

func certPool(t *testing.T, pemFile string) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(pemFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("%s holds no PEM certificate", pemFile)
	}
	return pool
}

// serveFails runs `serve args...`, which must return on its own without ever listening,
// and returns its error and everything it wrote.
func serveFails(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, errb := &pbtest.SyncBuffer{}, &pbtest.SyncBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, append([]string{"serve"}, args...), noEnv, strings.NewReader(""), out, errb) }()
	var err error
	pbtest.WaitFor(t, 60*time.Second, "serve to give up", func() bool {
		select {
		case err = <-done:
			return true
		default:
		}
		if strings.Contains(out.String(), "listening on") {
			cancel()
			<-done
			t.Fatalf("serve %v started; want it refused\n%s", args, out)
		}
		return false
	})
	if err == nil {
		t.Fatalf("serve %v returned nil; want an error", args)
	}
	return out.String() + errb.String(), err
}

// TestServeRefusesPlaintextOnTheNetwork: without TLS, an address other machines can reach
// is a usage error that says what to do, and nothing is created before it.
func TestServeRefusesPlaintextOnTheNetwork(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", "[::]:0", ":0"} {
		t.Run(addr, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			out, err := serveFails(t, "--data-dir", dir, "--http-addr", addr)
			if got := exitCode(err); got != 2 {
				t.Errorf("got exit code %d (%v), want 2", got, err)
			}
			for _, want := range []string{"--tls-self-signed", "--insecure-plaintext", "--tls-cert", "plain text"} {
				if !strings.Contains(out, want) || !strings.Contains(err.Error(), want) {
					t.Errorf("got output %q and error %q, want both to mention %q", out, err, want)
				}
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("data dir: got %v, want it never created by a refused start", err)
			}
		})
	}
}

// TestServePlaintextAllowed: loopback addresses serve plain HTTP as they are, other
// addresses with --insecure-plaintext; plain HTTP answers carry the other security headers
// but never HSTS.
func TestServePlaintextAllowed(t *testing.T) {
	for _, c := range []struct {
		addr  string
		extra []string
	}{
		{"127.0.0.1:0", nil},
		{"localhost:0", nil},
		{"[::1]:0", nil},
		{"0.0.0.0:0", []string{"--insecure-plaintext"}},
		{"[::]:0", []string{"--insecure-plaintext"}},
		{":0", []string{"--insecure-plaintext"}},
	} {
		t.Run(c.addr, func(t *testing.T) {
			s := startLive(t, t.TempDir(), "", append([]string{"--http-addr", c.addr}, c.extra...)...)
			r := s.do(t, "GET", "/healthz", "", "", nil)
			if r.Status != http.StatusOK {
				t.Fatalf("GET /healthz: got %d %s, want 200", r.Status, r.Body)
			}
			if h := r.Header.Get("Strict-Transport-Security"); h != "" {
				t.Errorf("got Strict-Transport-Security %q over plain HTTP, want none", h)
			}
			if h := r.Header.Get("X-Content-Type-Options"); h != "nosniff" {
				t.Errorf("got X-Content-Type-Options %q, want nosniff", h)
			}
			if err := s.stop(); err != nil {
				t.Errorf("stop: %v", err)
			}
		})
	}
}

// TestServeSelfSignedTLS: --tls-self-signed serves HTTPS with a certificate kept in the data
// dir and reused on restart, with TLS 1.2 (AEAD suites only) and 1.3, and HSTS.
func TestServeSelfSignedTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "keys", "tls.crt"), filepath.Join(dir, "keys", "tls.key")
	s := startLive(t, dir, certFile, "--tls-self-signed")
	host := strings.TrimPrefix(s.url, "https://")

	fi, err := os.Stat(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("%s: got mode %#o, want 0600", keyFile, perm)
	}
	firstCert, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	firstKey, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}

	// A client that has not been told to trust the certificate is turned away by its own
	// verification: the certificate is self-signed, not from a public CA.
	if _, err := http.Get(s.url + "/healthz"); err == nil {
		t.Error("a client with the system roots accepted the self-signed certificate")
	}
	// Plain HTTP on the HTTPS port gets no API answer.
	if r, err := http.Get("http://" + host + "/healthz"); err == nil {
		r.Body.Close()
		if r.StatusCode == http.StatusOK {
			t.Error("plain HTTP on the TLS port: got 200, want a refusal")
		}
	}

	// A real request with a token over TLS, by default negotiated as TLS 1.3.
	tok := mintToken(t, dir, "--user", "tls-user@example.com")
	req, _ := http.NewRequest("GET", s.url+"/v1/users/me", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /v1/users/me over TLS: got %d, want 200", resp.StatusCode)
	}
	if resp.TLS == nil || resp.TLS.Version != tls.VersionTLS13 {
		t.Errorf("got TLS state %+v, want TLS 1.3 negotiated by default", resp.TLS)
	}

	// Security headers, on a success and on an error answer alike.
	for _, path := range []string{"/healthz", "/v1/users/me", "/no/such/path"} {
		r := s.do(t, "GET", path, "", "", nil)
		checkHTTPSHeaders(t, path, r.Header)
	}

	checkProtocols(t, host, certFile, keyFile)

	// The certificate is reused, not re-made, on restart.
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	s = startLive(t, dir, certFile, "--tls-self-signed")
	if b, _ := os.ReadFile(certFile); !bytes.Equal(b, firstCert) {
		t.Error("keys/tls.crt changed on restart; want the certificate reused")
	}
	if b, _ := os.ReadFile(keyFile); !bytes.Equal(b, firstKey) {
		t.Error("keys/tls.key changed on restart; want the key reused")
	}
	blk, _ := pem.Decode(firstCert)
	if blk == nil {
		t.Fatal("keys/tls.crt is not PEM")
	}
	st, err := handshake(strings.TrimPrefix(s.url, "https://"), &tls.Config{RootCAs: certPool(t, certFile)})
	if err != nil {
		t.Fatalf("handshake after restart: %v", err)
	}
	if !bytes.Equal(st.PeerCertificates[0].Raw, blk.Bytes) {
		t.Error("after restart the server presents a certificate other than keys/tls.crt")
	}
}

// checkHTTPSHeaders checks the security headers of an answer over HTTPS.
func checkHTTPSHeaders(t *testing.T, what string, h http.Header) {
	t.Helper()
	hsts := h.Get("Strict-Transport-Security")
	age, _ := strconv.Atoi(strings.TrimPrefix(strings.Split(hsts, ";")[0], "max-age="))
	if age < 365*24*3600 {
		t.Errorf("%s: got Strict-Transport-Security %q, want max-age of at least a year", what, hsts)
	}
	for name, want := range map[string]string{
		"X-Content-Type-Options":  "nosniff",
		"X-Frame-Options":         "DENY",
		"Referrer-Policy":         "no-referrer",
		"Content-Security-Policy": "default-src 'none'",
	} {
		if got := h.Get(name); !strings.Contains(got, want) {
			t.Errorf("%s: got %s %q, want %q", what, name, got, want)
		}
	}
}

// checkProtocols dials the server at addr with old and weak client settings. Each setting
// the server refuses is first shown to work against a permissive server with the same
// certificate, so a refusal is the server's doing, not a client that cannot connect.
func checkProtocols(t *testing.T, addr, certFile, keyFile string) {
	t.Helper()
	pool := certPool(t, certFile)
	cbc := []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256,
	}
	permissive := permissiveServer(t, certFile, keyFile, cbc)
	for _, c := range []struct {
		name    string
		cfg     *tls.Config
		refused bool
	}{
		{"TLS 1.0", &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS10, CipherSuites: cbc}, true},
		{"TLS 1.1", &tls.Config{MinVersion: tls.VersionTLS11, MaxVersion: tls.VersionTLS11, CipherSuites: cbc}, true},
		{"TLS 1.2 CBC", &tls.Config{MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12, CipherSuites: cbc}, true},
		{"TLS 1.2 AES-GCM", &tls.Config{MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12,
			CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}}, false},
		{"TLS 1.2 ChaCha20", &tls.Config{MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12,
			CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}}, false},
		{"default", &tls.Config{}, false},
	} {
		c.cfg.RootCAs = pool
		if c.refused {
			if _, err := handshake(permissive, c.cfg.Clone()); err != nil {
				t.Fatalf("%s: the control server refused it too (%v); the client settings are broken", c.name, err)
			}
		}
		st, err := handshake(addr, c.cfg)
		switch {
		case c.refused && err == nil:
			t.Errorf("%s: got a handshake (version %s, suite %s), want it refused",
				c.name, tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite))
		case !c.refused && err != nil:
			t.Errorf("%s: got %v, want a handshake", c.name, err)
		case !c.refused && c.cfg.MaxVersion == tls.VersionTLS12 && (st.Version != tls.VersionTLS12 || st.CipherSuite != c.cfg.CipherSuites[0]):
			t.Errorf("%s: got %s %s, want TLS 1.2 %s", c.name, tls.VersionName(st.Version),
				tls.CipherSuiteName(st.CipherSuite), tls.CipherSuiteName(c.cfg.CipherSuites[0]))
		case !c.refused && c.cfg.MaxVersion == 0 && st.Version != tls.VersionTLS13:
			t.Errorf("%s: got %s, want TLS 1.3", c.name, tls.VersionName(st.Version))
		}
	}
}

// handshake completes a TLS handshake with addr and returns its state.
func handshake(addr string, cfg *tls.Config) (tls.ConnectionState, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer conn.Close()
	return conn.ConnectionState(), nil
}

// permissiveServer accepts TLS 1.0 to 1.3 with suites plus the defaults, using the given
// certificate, and returns its address.
func permissiveServer(t *testing.T, certFile, keyFile string, suites []uint16) string {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	all := append([]uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}, suites...)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS10, CipherSuites: all})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

// TestServeGivenCertificate: --tls-cert/--tls-key serve the operator's certificate; a key
// file others can read is refused at start, and the two flags go together.
func TestServeGivenCertificate(t *testing.T) {
	certs := t.TempDir()
	certFile, keyFile := filepath.Join(certs, "server.crt"), filepath.Join(certs, "server.key")
	der := writeTestCert(t, certFile, keyFile)

	dir := t.TempDir()
	s := startLive(t, dir, certFile, "--tls-cert", certFile, "--tls-key", keyFile)
	st, err := handshake(strings.TrimPrefix(s.url, "https://"), &tls.Config{RootCAs: certPool(t, certFile)})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(st.PeerCertificates[0].Raw, der) {
		t.Error("the server presents a certificate other than --tls-cert")
	}
	r := s.do(t, "GET", "/v1/users/me", mintToken(t, dir, "--user", "given-cert@example.com"), "", nil)
	if r.Status != http.StatusOK {
		t.Errorf("GET /v1/users/me: got %d %s, want 200", r.Status, r.Body)
	}
	checkHTTPSHeaders(t, "/v1/users/me", r.Header)
	if _, err := os.Stat(filepath.Join(dir, "keys", "tls.crt")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("keys/tls.crt: got %v, want no self-signed certificate made when one is given", err)
	}
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}

	// The same files with a key readable by others: refused, naming the file and the fix.
	if err := os.Chmod(keyFile, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = serveFails(t, "--data-dir", dir, "--http-addr", "127.0.0.1:0", "--tls-cert", certFile, "--tls-key", keyFile)
	if got := exitCode(err); got != 1 {
		t.Errorf("key mode 0644: got exit code %d (%v), want 1", got, err)
	}
	if msg := err.Error(); !strings.Contains(msg, keyFile) || !strings.Contains(msg, "chmod 600") {
		t.Errorf("key mode 0644: got %q, want it to name %s and say chmod 600", msg, keyFile)
	}

	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"cert without key", []string{"--tls-cert", certFile}, "--tls-cert and --tls-key go together"},
		{"key without cert", []string{"--tls-key", keyFile}, "--tls-cert and --tls-key go together"},
		{"cert and self-signed", []string{"--tls-cert", certFile, "--tls-key", keyFile, "--tls-self-signed"}, "exclude each other"},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, err := serveFails(t, append([]string{"--data-dir", dir, "--http-addr", "127.0.0.1:0"}, c.args...)...)
			if got := exitCode(err); got != 2 {
				t.Errorf("got exit code %d (%v), want 2", got, err)
			}
			if !strings.Contains(out, c.want) {
				t.Errorf("got output %q, want it to say %q", out, c.want)
			}
		})
	}
}

// TestServeTLSOnTheNetwork: with TLS, an address other machines can reach needs no
// --insecure-plaintext.
func TestServeTLSOnTheNetwork(t *testing.T) {
	dir := t.TempDir()
	s := startLive(t, dir, filepath.Join(dir, "keys", "tls.crt"), "--tls-self-signed", "--http-addr", "0.0.0.0:0")
	checkHTTPSHeaders(t, "/healthz", s.do(t, "GET", "/healthz", "", "", nil).Header)
}

// writeTestCert writes a self-signed ECDSA certificate for 127.0.0.1 and localhost (0644)
// and its key (0600), and returns the certificate's DER.
func writeTestCert(t *testing.T, certFile, keyFile string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "pulsebase test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return der
}
