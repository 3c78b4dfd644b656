package pbtest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/pulsebase/pulsebase/internal/syncgw"
)

// Device is an enrolled device as a test holds it: its key and certificate, the
// credentials of its enrollment (or latest refresh), and an HTTP client that presents its
// certificate and trusts the device CA.
type Device struct {
	ID  string
	Key *ecdsa.PrivateKey
	// Creds is the enrollment (or the latest renewal or refresh) answer.
	Creds DeviceCreds
	// Client talks to the device listener with the device's certificate.
	Client *http.Client
	// URL is the device listener's base URL.
	URL string
}

// DeviceCreds is the JSON answer of enrollment, renewal and refresh.
type DeviceCreds struct {
	Device       string    `json:"device"`
	Certificate  string    `json:"certificate"`
	CA           string    `json:"ca"`
	Serial       string    `json:"serial"`
	NotAfter     time.Time `json:"not_after"`
	AccessToken  string    `json:"access_token"`
	TokenType    string    `json:"token_type"`
	ExpiresIn    int       `json:"expires_in"`
	RefreshToken string    `json:"refresh_token"`
	DeviceURL    string    `json:"device_url"`
}

// NewCSR returns a new P-256 key and a PEM certificate request for it.
func NewCSR(t TB) (*ecdsa.PrivateKey, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "test device"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// EnrollDevice enrolls device id for the owner of userToken through POST
// /v1/users/me/devices and returns it, failing the test unless the answer is 201.
func (s *Server) EnrollDevice(t TB, userToken, id string) *Device {
	t.Helper()
	key, csr := NewCSR(t)
	body, _ := json.Marshal(map[string]string{"device": id, "csr": csr})
	r := Do(t, "POST", s.URL+"/v1/users/me/devices", userToken, "application/json", body)
	if r.Status != http.StatusCreated {
		var logs string
		if s.Logs != nil {
			logs = s.Logs.String()
		}
		t.Fatalf("enroll %s: %d %s\n%s", id, r.Status, r.Body, lastLines(logs, 20))
	}
	d := &Device{ID: id, Key: key, URL: s.DeviceURL}
	r.JSON(t, &d.Creds)
	d.Client = d.client(t, d.Creds.Certificate)
	return d
}

// client returns an HTTP client presenting certPEM with d's key and trusting the CA.
func (d *Device) client(t TB, certPEM string) *http.Client {
	t.Helper()
	blk, _ := pem.Decode([]byte(certPEM))
	if blk == nil {
		t.Fatalf("no certificate in %.100q", certPEM)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(d.Creds.CA)) {
		t.Fatal("no CA certificate in the enrollment answer")
	}
	cert := tls.Certificate{Certificate: [][]byte{blk.Bytes}, PrivateKey: d.Key}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}}
}

// Refresh exchanges d's refresh token at POST /v1/token and returns the answer; on 200
// d's credentials become the new ones.
func (d *Device) Refresh(t TB) Response {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"grant_type": "refresh_token", "refresh_token": d.Creds.RefreshToken})
	r := DoWith(t, d.Client, "POST", d.URL+"/v1/token", "", "application/json", body)
	if r.Status == http.StatusOK {
		var c DeviceCreds
		r.JSON(t, &c)
		d.Creds.AccessToken, d.Creds.RefreshToken = c.AccessToken, c.RefreshToken
	}
	return r
}

// Renew renews d's certificate with a new key; on 200 d uses the new certificate.
func (d *Device) Renew(t TB) Response {
	t.Helper()
	key, csr := NewCSR(t)
	body, _ := json.Marshal(map[string]string{"csr": csr})
	r := DoWith(t, d.Client, "POST", d.URL+"/v1/users/me/devices/"+d.ID+"/renew", d.Creds.AccessToken, "application/json", body)
	if r.Status == http.StatusOK {
		var c DeviceCreds
		r.JSON(t, &c)
		ca := d.Creds.CA
		d.Creds, d.Key = c, key
		if d.Creds.CA == "" {
			d.Creds.CA = ca
		}
		d.Client = d.client(t, c.Certificate)
	}
	return r
}

// SyncHello opens a sync connection to baseURL with client c (nil: the default), sends
// hello, and returns the connection and the first frame the server sends (a welcome or
// an error), or the close status if the server closed instead.
func SyncHello(t TB, baseURL string, c *http.Client, hello map[string]any) (*websocket.Conn, map[string]any, websocket.StatusCode) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(baseURL, "http")+"/v1/sync",
		&websocket.DialOptions{Subprotocols: []string{syncgw.Subprotocol}, HTTPClient: c})
	if err != nil {
		t.Fatal(err)
	}
	ws.SetReadLimit(64 << 20)
	t.Cleanup(func() { ws.CloseNow() })
	b, _ := json.Marshal(hello)
	if err := ws.Write(ctx, websocket.MessageText, b); err != nil {
		t.Fatal(err)
	}
	_, msg, err := ws.Read(ctx)
	if err != nil {
		return ws, nil, websocket.CloseStatus(err)
	}
	var f map[string]any
	if err := json.Unmarshal(msg, &f); err != nil {
		t.Fatal(err)
	}
	if f["type"] == "error" {
		// The close follows the error frame.
		_, _, err := ws.Read(ctx)
		return ws, f, websocket.CloseStatus(err)
	}
	return ws, f, -1
}

// SyncClosed reads from ws until it closes or timeout passes, and returns the close
// status (-1 on timeout).
func SyncClosed(ws *websocket.Conn, timeout time.Duration) websocket.StatusCode {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		if _, _, err := ws.Read(ctx); err != nil {
			if ctx.Err() != nil {
				return -1
			}
			return websocket.CloseStatus(err)
		}
	}
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
