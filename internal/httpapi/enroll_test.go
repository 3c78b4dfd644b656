package httpapi_test

import (
	"crypto/tls"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/auth"
	"github.com/pulsebase/pulsebase/internal/pbtest"
)

// TestDeviceEnrollmentOverMutualTLS walks a device's life: enrollment with a CSR,
// certificate-bound traffic on the device listener, renewal, refresh-token rotation with
// reuse detection, and revocation by its owner that closes its sync connection.
func TestDeviceEnrollmentOverMutualTLS(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	alice := s.UserToken(t, "alice")
	watch := s.EnrollDevice(t, alice, "watch-1")
	c := watch.Creds
	if c.Device != "watch-1" || c.Serial == "" || c.TokenType != "Bearer" || c.ExpiresIn <= 0 || c.RefreshToken == "" ||
		!strings.Contains(c.Certificate, "BEGIN CERTIFICATE") || !strings.Contains(c.CA, "BEGIN CERTIFICATE") || c.DeviceURL != s.DeviceURL {
		t.Fatalf("enrollment answer %+v", c)
	}
	if left := time.Until(c.NotAfter); left <= 0 || left > auth.MaxDeviceCertTTL {
		t.Errorf("certificate valid until %s: want short-lived", c.NotAfter)
	}
	p, err := s.Issuer.Verify(c.AccessToken)
	if err != nil || p.Role != pulsebase.RoleDevice || p.Device != "watch-1" || p.Confirmation == "" {
		t.Fatalf("access token: %+v %v, want a bound device token", p, err)
	}

	// The bound token works with its certificate on the device listener…
	sample := batch(hr(1, "60"))
	if r := pbtest.DoWith(t, watch.Client, "POST", watch.URL+"/v1/samples", c.AccessToken, jsonCT, sample); r.Status != 202 {
		t.Fatalf("device ingest over mTLS: %d %s", r.Status, r.Body)
	}
	var me, aliceMe struct{ ID string }
	pbtest.DoWith(t, watch.Client, "GET", watch.URL+"/v1/users/me", c.AccessToken, "", nil).JSON(t, &me)
	pbtest.Do(t, "GET", s.URL+"/v1/users/me", alice, "", nil).JSON(t, &aliceMe)
	if me.ID == "" || me.ID != aliceMe.ID {
		t.Errorf("the device's user %q, alice is %q", me.ID, aliceMe.ID)
	}
	// …and nowhere else: not without a certificate (plain listener), not with another
	// device's certificate, and the device listener takes no unbound token.
	if r := pbtest.Do(t, "GET", s.URL+"/v1/users/me", c.AccessToken, "", nil); r.Status != 401 {
		t.Errorf("bound token without its certificate: %d %s, want 401", r.Status, r.Body)
	}
	ring := s.EnrollDevice(t, alice, "ring")
	if r := pbtest.DoWith(t, ring.Client, "GET", ring.URL+"/v1/users/me", c.AccessToken, "", nil); r.Status != 401 {
		t.Errorf("watch's token with the ring's certificate: %d %s, want 401", r.Status, r.Body)
	}
	unbound := s.Token(t, "alice", pulsebase.RoleDevice, "watch-1")
	for name, tok := range map[string]string{"an unbound device token": unbound, "a user token": alice} {
		if r := pbtest.DoWith(t, watch.Client, "GET", watch.URL+"/v1/users/me", tok, "", nil); r.Status != 401 {
			t.Errorf("%s on the device listener: %d %s, want 401", name, r.Status, r.Body)
		}
	}
	// Without a client certificate the handshake fails.
	noCert := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: watch.Client.Transport.(*http.Transport).TLSClientConfig.RootCAs}}}
	if resp, err := noCert.Get(watch.URL + "/healthz"); err == nil {
		resp.Body.Close()
		t.Error("the device listener served a client without a certificate")
	}
	// A device may not enroll others or grant access.
	if r := pbtest.DoWith(t, watch.Client, "GET", watch.URL+"/v1/users/me/devices", c.AccessToken, "", nil); r.Status != 403 {
		t.Errorf("a device listing devices: %d, want 403", r.Status)
	}

	// Renewal: a new certificate for a new key; both work until the old one expires.
	old := *watch
	if r := watch.Renew(t); r.Status != 200 {
		t.Fatalf("renew: %d %s", r.Status, r.Body)
	}
	if watch.Creds.Serial == old.Creds.Serial {
		t.Error("renewal kept the serial")
	}
	if r := pbtest.DoWith(t, watch.Client, "POST", watch.URL+"/v1/samples", watch.Creds.AccessToken, jsonCT, batch(hr(2, "61"))); r.Status != 202 {
		t.Errorf("ingest with the renewed certificate: %d %s", r.Status, r.Body)
	}
	if r := pbtest.DoWith(t, old.Client, "GET", old.URL+"/v1/users/me", old.Creds.AccessToken, "", nil); r.Status != 200 {
		t.Errorf("the old certificate before it expires: %d %s", r.Status, r.Body)
	}
	if r := pbtest.DoWith(t, ring.Client, "POST", ring.URL+"/v1/users/me/devices/watch-1/renew", ring.Creds.AccessToken, jsonCT, []byte(`{"csr":"x"}`)); r.Status != 403 {
		t.Errorf("the ring renewing the watch: %d %s, want 403", r.Status, r.Body)
	}

	// Refresh rotates; a spent refresh token used again revokes the device.
	spent := watch.Creds.RefreshToken
	if r := watch.Refresh(t); r.Status != 200 {
		t.Fatalf("refresh: %d %s", r.Status, r.Body)
	}
	if watch.Creds.RefreshToken == spent {
		t.Fatal("refresh did not rotate the refresh token")
	}
	if r := pbtest.DoWith(t, watch.Client, "GET", watch.URL+"/v1/users/me", watch.Creds.AccessToken, "", nil); r.Status != 200 {
		t.Errorf("the refreshed access token: %d %s", r.Status, r.Body)
	}
	if r := pbtest.DoWith(t, ring.Client, "POST", ring.URL+"/v1/token", "", jsonCT,
		[]byte(`{"grant_type":"refresh_token","refresh_token":"`+watch.Creds.RefreshToken+`"}`)); r.Status != 401 {
		t.Errorf("the watch's refresh token with the ring's certificate: %d %s, want 401", r.Status, r.Body)
	}
	if r := pbtest.Do(t, "POST", s.URL+"/v1/token", "", jsonCT,
		[]byte(`{"grant_type":"refresh_token","refresh_token":"`+watch.Creds.RefreshToken+`"}`)); r.Status != 401 {
		t.Errorf("a refresh on the plain listener: %d %s, want 401", r.Status, r.Body)
	}
	// Sent again at once (a retry after a lost answer), the token spent last is refused
	// but does not revoke the device…
	stolen := *watch
	stolen.Creds.RefreshToken = spent
	if r := stolen.Refresh(t); r.Status != 401 || strings.Contains(string(r.Body), "revoked") {
		t.Fatalf("retrying the refresh token spent last: %d %s, want 401 without revocation", r.Status, r.Body)
	}
	// …but one spent before that is a copy someone kept: the device is revoked.
	if r := watch.Refresh(t); r.Status != 200 {
		t.Fatalf("second refresh: %d %s", r.Status, r.Body)
	}
	if r := stolen.Refresh(t); r.Status != 401 || !strings.Contains(string(r.Body), "revoked") {
		t.Fatalf("reusing an older spent refresh token: %d %s, want 401 revoked", r.Status, r.Body)
	}
	for name, tok := range map[string]string{"the latest access token": watch.Creds.AccessToken, "the first access token": c.AccessToken} {
		if r := pbtest.DoWith(t, watch.Client, "GET", watch.URL+"/v1/users/me", tok, "", nil); r.Status != 401 {
			t.Errorf("%s after reuse detection: %d, want 401", name, r.Status)
		}
	}
	if r := watch.Refresh(t); r.Status != 401 {
		t.Errorf("the latest refresh token after reuse detection: %d, want 401", r.Status)
	}
	var list struct {
		Devices []struct {
			ID, Serial    string
			Revoked       *time.Time
			RevokedReason string `json:"revoked_reason"`
		}
	}
	pbtest.Do(t, "GET", s.URL+"/v1/users/me/devices", alice, "", nil).JSON(t, &list)
	if len(list.Devices) != 2 || list.Devices[0].ID != "watch-1" || list.Devices[0].Revoked == nil ||
		list.Devices[0].RevokedReason != "refresh_reuse" || list.Devices[1].ID != "ring" || list.Devices[1].Revoked != nil {
		t.Errorf("devices after reuse detection: %+v", list.Devices)
	}
	// The ring was not touched.
	if r := pbtest.DoWith(t, ring.Client, "GET", ring.URL+"/v1/users/me", ring.Creds.AccessToken, "", nil); r.Status != 200 {
		t.Errorf("the ring after the watch's revocation: %d", r.Status)
	}

	// Revocation by the owner: the ring's open sync connection closes with 4009, and it
	// can neither ingest nor refresh.
	ws, w, st := pbtest.SyncHello(t, ring.URL, ring.Client, map[string]any{"type": "hello", "token": ring.Creds.AccessToken, "device": "ring"})
	if w["type"] != "welcome" {
		t.Fatalf("ring sync over mTLS: %v (closed %d)", w, st)
	}
	if r := pbtest.Do(t, "DELETE", s.URL+"/v1/users/me/devices/ring", alice, "", nil); r.Status != 204 {
		t.Fatalf("revoke the ring: %d %s", r.Status, r.Body)
	}
	if st := pbtest.SyncClosed(ws, 5*time.Second); st != 4009 {
		t.Errorf("the ring's sync connection after revocation: closed %d, want 4009", st)
	}
	if r := pbtest.DoWith(t, ring.Client, "POST", ring.URL+"/v1/samples", ring.Creds.AccessToken, jsonCT, sample); r.Status != 401 {
		t.Errorf("the revoked ring ingesting: %d, want 401", r.Status)
	}
	if _, _, st := pbtest.SyncHello(t, ring.URL, ring.Client, map[string]any{"type": "hello", "token": ring.Creds.AccessToken}); st != 4009 && st != 4001 {
		t.Errorf("the revoked ring opening sync: closed %d, want 4009", st)
	}
	if r := ring.Refresh(t); r.Status != 401 {
		t.Errorf("the revoked ring refreshing: %d, want 401", r.Status)
	}
	// Enrolled again (a second later, as revocation covers the second it was made in), the
	// ring works again with new credentials.
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
	ring2 := s.EnrollDevice(t, alice, "ring")
	if r := pbtest.DoWith(t, ring2.Client, "POST", ring2.URL+"/v1/samples", ring2.Creds.AccessToken, jsonCT, sample); r.Status != 202 {
		t.Errorf("the re-enrolled ring: %d %s", r.Status, r.Body)
	}
}

func TestEnrollmentRefusals(t *testing.T) {
	s := pbtest.MustOpenServer(t)
	alice := s.UserToken(t, "alice")
	_, csr := pbtest.NewCSR(t)
	for _, c := range []struct{ name, body string }{
		{"no csr", `{"device":"watch-1"}`},
		{"garbage csr", `{"device":"watch-1","csr":"not a csr"}`},
		{"bad device id", `{"device":"watch 1","csr":` + quote(csr) + `}`},
		{"no device", `{"csr":` + quote(csr) + `}`},
		{"not JSON", `{"device":`},
	} {
		if r := pbtest.Do(t, "POST", s.URL+"/v1/users/me/devices", alice, jsonCT, []byte(c.body)); r.Status != 400 {
			t.Errorf("%s: %d %s, want 400", c.name, r.Status, r.Body)
		}
	}
	for _, c := range []struct{ name, body string }{
		{"garbage", `{"grant_type":"refresh_token","refresh_token":"nope"}`},
		{"wrong grant", `{"grant_type":"password","refresh_token":"x"}`},
	} {
		if r := pbtest.Do(t, "POST", s.URL+"/v1/token", "", jsonCT, []byte(c.body)); r.Status != 400 && r.Status != 401 {
			t.Errorf("token %s: %d %s", c.name, r.Status, r.Body)
		}
	}
	if r := pbtest.Do(t, "GET", s.URL+"/readyz", "", "", nil); r.Status != 200 {
		t.Errorf("readyz after refusals: %d", r.Status)
	}
}

func quote(s string) string {
	return `"` + strings.NewReplacer("\n", `\n`, `"`, `\"`).Replace(s) + `"`
}
