package auth_test

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/auth"
)

// prefixSealer stands in for the vault: it "seals" a subject by prefixing the user and
// device it belongs to, and opens only what it sealed for the same pair.
type prefixSealer struct{}

func (prefixSealer) SealSubject(_ context.Context, user, device, subject string) ([]byte, error) {
	return []byte("sealed:" + user + "/" + device + ":" + subject), nil
}

func (prefixSealer) OpenSubject(_ context.Context, user, device string, sealed []byte) (string, error) {
	s, ok := strings.CutPrefix(string(sealed), "sealed:"+user+"/"+device+":")
	if !ok {
		return "", errors.New("not sealed for this device")
	}
	return s, nil
}

// devFixture is a device registry over a real embedded JetStream, with its CA, issuer,
// revocations and an authenticator as the device listener uses them.
type devFixture struct {
	ca   *auth.DeviceCA
	iss  *auth.Issuer
	rev  *auth.Revocations
	devs *auth.Devices
	auth *auth.Authenticator
}

func newDevFixture(t *testing.T) *devFixture {
	t.Helper()
	js := openBroker(t)
	f := &devFixture{ca: newCA(t), rev: newRevocations(t, js, nil)}
	var err error
	if f.iss, err = auth.OpenIssuer(filepath.Join(t.TempDir(), "token.key"), auth.DefaultIssuer, auth.DefaultAudience); err != nil {
		t.Fatal(err)
	}
	if f.devs, err = auth.NewDevices(t.Context(), js, 1, f.ca, f.iss, f.rev, prefixSealer{}); err != nil {
		t.Fatal(err)
	}
	f.auth = &auth.Authenticator{Tokens: f.iss, Revocations: f.rev}
	return f
}

// csrFor returns a parsed certificate request for key.
func csrFor(t *testing.T, key crypto.Signer) *x509.CertificateRequest {
	t.Helper()
	csr, err := auth.ParseCSR(csrPEM(t, key))
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

// enroll enrolls amy's device with a fresh key and returns its credentials and parsed
// certificate.
func (f *devFixture) enroll(t *testing.T, device string, now time.Time) (auth.Credentials, *x509.Certificate) {
	t.Helper()
	creds, err := f.devs.Enroll(t.Context(), "amy", "uamy", device, csrFor(t, p256(t)), now)
	if err != nil {
		t.Fatal(err)
	}
	return creds, certOf(t, creds.Certificate)
}

func certOf(t *testing.T, pemCert string) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode([]byte(pemCert))
	if blk == nil || blk.Type != "CERTIFICATE" {
		t.Fatalf("not a PEM certificate: %q", pemCert)
	}
	return parse(t, blk.Bytes)
}

// over is the TLS state of a connection that presented cert (nil: none).
func over(cert *x509.Certificate) *tls.ConnectionState {
	if cert == nil {
		return &tls.ConnectionState{}
	}
	return &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}}
}

// record returns amy's device id as listed.
func (f *devFixture) record(t *testing.T, device string) auth.Device {
	t.Helper()
	list, err := f.devs.List(t.Context(), "uamy")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range list {
		if d.ID == device {
			return d
		}
	}
	t.Fatalf("device %s not listed: %+v", device, list)
	return auth.Device{}
}

func TestDeviceEnrollAndAuthenticate(t *testing.T) {
	f := newDevFixture(t)
	now := time.Now()
	creds, cert := f.enroll(t, "watch-1", now)
	thumb := auth.Thumbprint(cert.Raw)

	if creds.Device != "watch-1" || creds.TokenType != "Bearer" || creds.ExpiresIn != int(auth.DeviceTokenTTL/time.Second) ||
		!strings.HasPrefix(creds.RefreshToken, "pbr1.uamy.") || creds.AccessToken == "" {
		t.Errorf("credentials: %+v", creds)
	}
	if creds.Serial != cert.SerialNumber.Text(16) || !creds.NotAfter.Equal(cert.NotAfter) {
		t.Errorf("serial %s / not after %v do not describe the certificate (%s, %v)", creds.Serial, creds.NotAfter, cert.SerialNumber.Text(16), cert.NotAfter)
	}
	if ca := certOf(t, creds.CA); !ca.Equal(f.ca.Certificate()) {
		t.Error("the CA in the credentials is not the device CA")
	}
	if user, dev, _, x5t, err := f.ca.DeviceOf([]*x509.Certificate{cert}, now); err != nil || user != "uamy" || dev != "watch-1" || x5t != thumb {
		t.Errorf("DeviceOf the enrolled certificate: %s %s %s %v", user, dev, x5t, err)
	}

	p, err := f.iss.Verify(creds.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if p.Subject != "amy" || p.Role != pulsebase.RoleDevice || p.Device != "watch-1" || p.Confirmation != thumb || p.Family == "" {
		t.Errorf("access token principal: %+v (thumbprint %s)", p, thumb)
	}
	if got := p.Expires.Sub(p.Issued); got != auth.DeviceTokenTTL {
		t.Errorf("access token lifetime %v", got)
	}
	rec := f.record(t, "watch-1")
	if rec.Thumbprint != thumb || rec.Family != p.Family || rec.Generation != 1 || rec.Revoked != nil ||
		rec.User != "uamy" || rec.Serial != creds.Serial || string(rec.Subject) != "sealed:uamy/watch-1:amy" {
		t.Errorf("record: %+v", rec)
	}
	if strings.Contains(rec.Refresh, strings.Split(creds.RefreshToken, ".")[4]) {
		t.Error("the record holds the refresh secret itself, not its hash")
	}

	// Over the connection that presented the certificate: accepted.
	got, err := f.auth.Authenticate(creds.AccessToken, over(cert))
	if err != nil || got.Device != "watch-1" || got.Confirmation != thumb {
		t.Errorf("with its certificate: %+v %v", got, err)
	}
	// Without a certificate (plain HTTP, or TLS without one): refused.
	for name, peer := range map[string]*tls.ConnectionState{"no TLS": nil, "TLS without a certificate": over(nil)} {
		if _, err := f.auth.Authenticate(creds.AccessToken, peer); !errors.Is(err, auth.ErrInvalidToken) {
			t.Errorf("%s: got %v, want ErrInvalidToken", name, err)
		}
	}
	// With another certificate, even one the CA issued for the same device: refused.
	otherCert := parse(t, issue(t, f.ca, p256(t), "uamy", "watch-1", now).DER)
	if _, err := f.auth.Authenticate(creds.AccessToken, over(otherCert)); !errors.Is(err, auth.ErrInvalidToken) {
		t.Errorf("with another certificate: got %v, want ErrInvalidToken", err)
	}
	// An unbound token over a connection with a certificate: refused.
	unbound, err := f.iss.Mint(auth.TokenRequest{Subject: "amy", Role: pulsebase.RoleDevice, Device: "watch-1", TTL: time.Hour}, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.auth.Authenticate(unbound, over(cert)); !errors.Is(err, auth.ErrInvalidToken) {
		t.Errorf("an unbound token with a certificate: got %v, want ErrInvalidToken", err)
	}
	if _, err := f.auth.Authenticate(unbound, nil); err != nil {
		t.Errorf("an unbound token without a certificate: %v", err)
	}
	// A garbled token is refused before anything else.
	if _, err := f.auth.Authenticate(creds.AccessToken+"x", over(cert)); !errors.Is(err, auth.ErrInvalidToken) {
		t.Errorf("a garbled token: %v", err)
	}
}

func TestDeviceRefreshRotatesAndDetectsReuse(t *testing.T) {
	f := newDevFixture(t)
	ctx := t.Context()
	// Minted in the past, so that the steps below stay before the real time.
	now := time.Now().Add(-20 * time.Minute)
	creds, cert := f.enroll(t, "watch-1", now)
	thumb := auth.Thumbprint(cert.Raw)
	first, _ := f.iss.Verify(creds.AccessToken)

	next, err := f.devs.Refresh(ctx, creds.RefreshToken, thumb, now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if next.RefreshToken == creds.RefreshToken || next.AccessToken == creds.AccessToken || next.RefreshToken == "" {
		t.Error("refresh did not rotate the tokens")
	}
	if next.Certificate != "" || next.Serial != creds.Serial || next.Device != "watch-1" {
		t.Errorf("refresh credentials: %+v", next)
	}
	if g := f.record(t, "watch-1").Generation; g != 2 {
		t.Errorf("generation after one refresh: %d, want 2", g)
	}
	p, err := f.auth.Authenticate(next.AccessToken, over(cert))
	if err != nil {
		t.Fatal(err)
	}
	if p.Family != first.Family || p.Confirmation != thumb || p.TokenID == first.TokenID {
		t.Errorf("refreshed token: %+v, first %+v", p, first)
	}
	latest, err := f.devs.Refresh(ctx, next.RefreshToken, thumb, now.Add(2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	latestP, err := f.auth.Authenticate(latest.AccessToken, over(cert))
	if err != nil {
		t.Fatal(err)
	}
	if g := f.record(t, "watch-1").Generation; g != 3 {
		t.Errorf("generation after two refreshes: %d, want 3", g)
	}

	// The first refresh token again: reuse. The family is revoked.
	if _, err := f.devs.Refresh(ctx, creds.RefreshToken, thumb, now.Add(3*time.Minute)); !errors.Is(err, auth.ErrDeviceRevoked) {
		t.Fatalf("reusing a spent refresh token: got %v, want ErrDeviceRevoked", err)
	}
	rec := f.record(t, "watch-1")
	if rec.Revoked == nil || rec.RevokedWhy != "refresh_reuse" {
		t.Errorf("record after reuse: revoked %v why %q", rec.Revoked, rec.RevokedWhy)
	}
	if _, err := f.devs.Refresh(ctx, latest.RefreshToken, thumb, now.Add(3*time.Minute)); !errors.Is(err, auth.ErrDeviceRevoked) {
		t.Errorf("the latest refresh token after reuse: got %v, want ErrDeviceRevoked", err)
	}
	if !f.rev.Revoked(latestP) {
		t.Error("the latest access token of the family is not revoked")
	}
	if !f.rev.CertificateRevoked(thumb) {
		t.Error("the family's certificate is not revoked")
	}
	if _, err := f.auth.Authenticate(latest.AccessToken, over(cert)); !errors.Is(err, auth.ErrRevoked) {
		t.Errorf("authenticating the latest access token after reuse: got %v, want ErrRevoked", err)
	}
	// The token is refused by subject and device too, not only by certificate.
	unbound := latestP
	unbound.Confirmation = ""
	if !f.rev.Revoked(unbound) {
		t.Error("the device's tokens are not revoked by device")
	}
}

func TestDeviceRefreshWrongCertificateDoesNotRevoke(t *testing.T) {
	f := newDevFixture(t)
	ctx := t.Context()
	now := time.Now()
	creds, cert := f.enroll(t, "watch-1", now)
	other := auth.Thumbprint(issue(t, f.ca, p256(t), "uamy", "watch-1", now).DER)
	for name, x5t := range map[string]string{"another certificate": other, "no certificate": ""} {
		if _, err := f.devs.Refresh(ctx, creds.RefreshToken, x5t, now); !errors.Is(err, auth.ErrBadRefresh) {
			t.Errorf("%s: got %v, want ErrBadRefresh", name, err)
		}
	}
	if rec := f.record(t, "watch-1"); rec.Revoked != nil || rec.Generation != 1 {
		t.Errorf("after refreshes with the wrong certificate: %+v", rec)
	}
	if f.rev.CertificateRevoked(auth.Thumbprint(cert.Raw)) {
		t.Error("the certificate was revoked")
	}
	// The token was not spent: it still refreshes with its certificate.
	next, err := f.devs.Refresh(ctx, creds.RefreshToken, auth.Thumbprint(cert.Raw), now)
	if err != nil {
		t.Fatalf("the right refresh after wrong ones: %v", err)
	}
	// Even a spent token presented with the wrong certificate does not revoke: only the
	// certificate's holder can set off reuse detection.
	if _, err := f.devs.Refresh(ctx, creds.RefreshToken, other, now); !errors.Is(err, auth.ErrBadRefresh) {
		t.Errorf("a spent token with another certificate: got %v, want ErrBadRefresh", err)
	}
	if rec := f.record(t, "watch-1"); rec.Revoked != nil {
		t.Errorf("revoked by a spent token presented with another certificate: %+v", rec)
	}
	if _, err := f.devs.Refresh(ctx, next.RefreshToken, auth.Thumbprint(cert.Raw), now); err != nil {
		t.Errorf("the current token afterwards: %v", err)
	}
}

func TestDeviceRefreshExpires(t *testing.T) {
	f := newDevFixture(t)
	now := time.Now()
	creds, cert := f.enroll(t, "watch-1", now)
	thumb := auth.Thumbprint(cert.Raw)
	if _, err := f.devs.Refresh(t.Context(), creds.RefreshToken, thumb, now.Add(auth.RefreshTokenTTL)); !errors.Is(err, auth.ErrBadRefresh) {
		t.Errorf("at its expiry: got %v, want ErrBadRefresh", err)
	}
	if rec := f.record(t, "watch-1"); rec.Revoked != nil {
		t.Errorf("an expired refresh revoked the device: %+v", rec)
	}
	if _, err := f.devs.Refresh(t.Context(), creds.RefreshToken, thumb, now.Add(auth.RefreshTokenTTL-time.Second)); err != nil {
		t.Errorf("just before its expiry: %v", err)
	}
}

func TestDeviceConcurrentRefreshOneWins(t *testing.T) {
	f := newDevFixture(t)
	for round := range 8 {
		device := fmt.Sprintf("watch-%d", round)
		creds, cert := f.enroll(t, device, time.Now())
		thumb := auth.Thumbprint(cert.Raw)
		const n = 2
		var (
			wg    sync.WaitGroup
			start = make(chan struct{})
			errs  = make([]error, n)
		)
		for i := range n {
			wg.Go(func() {
				<-start
				_, errs[i] = f.devs.Refresh(t.Context(), creds.RefreshToken, thumb, time.Now())
			})
		}
		close(start)
		wg.Wait()
		ok := 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case errors.Is(err, auth.ErrBadRefresh):
				// The loser presented a spent token: refused, whether it lost the
				// compare-and-set or came right after the winner (within the grace,
				// so it is not taken for theft).
			default:
				t.Errorf("round %d: unexpected error %v", round, err)
			}
		}
		if ok != 1 {
			t.Errorf("round %d: %d refreshes succeeded, want exactly 1 (%v)", round, ok, errs)
		}
		if rec := f.record(t, device); rec.Generation != 2 || rec.Revoked != nil {
			t.Errorf("round %d: generation %d, revoked %v; want 2 and not revoked", round, rec.Generation, rec.Revoked)
		}
	}
}

// TestDeviceRefreshRetryWithinGrace: the refresh token spent last, sent again a moment
// later (a retry after a lost answer), is refused without revoking the device; sent again
// after the grace, it is taken for a stolen copy.
func TestDeviceRefreshRetryWithinGrace(t *testing.T) {
	f := newDevFixture(t)
	now := time.Now().Add(-20 * time.Minute)
	creds, cert := f.enroll(t, "watch-1", now)
	thumb := auth.Thumbprint(cert.Raw)
	next, err := f.devs.Refresh(t.Context(), creds.RefreshToken, thumb, now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.devs.Refresh(t.Context(), creds.RefreshToken, thumb, now.Add(time.Minute+auth.RefreshReuseGrace/2)); !errors.Is(err, auth.ErrBadRefresh) {
		t.Fatalf("a retry within the grace: %v, want ErrBadRefresh", err)
	}
	if rec := f.record(t, "watch-1"); rec.Revoked != nil {
		t.Fatal("a retry within the grace revoked the device")
	}
	if _, err := f.devs.Refresh(t.Context(), next.RefreshToken, thumb, now.Add(2*time.Minute)); err != nil {
		t.Fatalf("the current refresh token after a refused retry: %v", err)
	}
	// next is now the token spent last; presented after the grace it is reuse.
	if _, err := f.devs.Refresh(t.Context(), next.RefreshToken, thumb, now.Add(2*time.Minute+auth.RefreshReuseGrace)); !errors.Is(err, auth.ErrDeviceRevoked) {
		t.Fatalf("the spent token after the grace: %v, want ErrDeviceRevoked", err)
	}
}

func TestDeviceRenew(t *testing.T) {
	f := newDevFixture(t)
	ctx := t.Context()
	// Minted in the past, so that the steps below stay before the real time.
	now := time.Now().Add(-20 * time.Minute)
	creds, oldCert := f.enroll(t, "watch-1", now)
	oldThumb := auth.Thumbprint(oldCert.Raw)
	p, err := f.auth.Authenticate(creds.AccessToken, over(oldCert))
	if err != nil {
		t.Fatal(err)
	}
	renewed, err := f.devs.Renew(ctx, p, "uamy", csrFor(t, p256(t)), now.Add(10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	newCert := certOf(t, renewed.Certificate)
	newThumb := auth.Thumbprint(newCert.Raw)
	if newThumb == oldThumb || renewed.Serial == creds.Serial || renewed.Serial != newCert.SerialNumber.Text(16) ||
		!newCert.NotAfter.After(oldCert.NotAfter) || renewed.CA == "" {
		t.Errorf("renewal: %+v", renewed)
	}
	if _, dev, _, _, err := f.ca.DeviceOf([]*x509.Certificate{newCert}, time.Now()); err != nil || dev != "watch-1" {
		t.Errorf("the new certificate: %s %v", dev, err)
	}
	np, err := f.auth.Authenticate(renewed.AccessToken, over(newCert))
	if err != nil || np.Confirmation != newThumb || np.Family != p.Family {
		t.Errorf("the renewed token over the new certificate: %+v %v", np, err)
	}
	rec := f.record(t, "watch-1")
	if rec.Thumbprint != newThumb || rec.Serial != renewed.Serial || rec.Generation != 2 || rec.Revoked != nil {
		t.Errorf("record after renewal: %+v", rec)
	}
	// Renewal is not revocation: the old certificate and its token carry on.
	if f.rev.CertificateRevoked(oldThumb) {
		t.Error("renewal revoked the old certificate")
	}
	if _, err := f.auth.Authenticate(creds.AccessToken, over(oldCert)); err != nil {
		t.Errorf("the old token over the old certificate after renewal: %v", err)
	}
	// A token bound to the replaced certificate renews no more.
	if _, err := f.devs.Renew(ctx, p, "uamy", csrFor(t, p256(t)), now.Add(10*time.Minute)); !errors.Is(err, auth.ErrNoDevice) {
		t.Errorf("renewing with the old certificate's token: got %v, want ErrNoDevice", err)
	}
	unbound := np
	unbound.Confirmation = ""
	if _, err := f.devs.Renew(ctx, unbound, "uamy", csrFor(t, p256(t)), now.Add(10*time.Minute)); !errors.Is(err, auth.ErrNoDevice) {
		t.Errorf("renewing with an unbound token: got %v, want ErrNoDevice", err)
	}
	if _, err := f.devs.Renew(ctx, np, "ubob", csrFor(t, p256(t)), now.Add(10*time.Minute)); !errors.Is(err, auth.ErrNoDevice) {
		t.Errorf("renewing as another user: got %v, want ErrNoDevice", err)
	}
	// Refresh is now sender-constrained to the new certificate.
	if _, err := f.devs.Refresh(ctx, renewed.RefreshToken, oldThumb, now.Add(10*time.Minute)); !errors.Is(err, auth.ErrBadRefresh) {
		t.Errorf("refreshing with the old certificate: got %v, want ErrBadRefresh", err)
	}
	if _, err := f.devs.Refresh(ctx, renewed.RefreshToken, newThumb, now.Add(10*time.Minute)); err != nil {
		t.Errorf("refreshing with the new certificate: %v", err)
	}
	// Renewal gave the family's next refresh token: the one before it is spent.
	if _, err := f.devs.Refresh(ctx, creds.RefreshToken, newThumb, now.Add(10*time.Minute)); !errors.Is(err, auth.ErrDeviceRevoked) {
		t.Errorf("the refresh token from before the renewal: got %v, want ErrDeviceRevoked", err)
	}
	if _, err := f.devs.Renew(ctx, np, "uamy", csrFor(t, p256(t)), now.Add(10*time.Minute)); !errors.Is(err, auth.ErrDeviceRevoked) {
		t.Errorf("renewing a revoked device: got %v, want ErrDeviceRevoked", err)
	}
}

func TestDeviceRevoke(t *testing.T) {
	f := newDevFixture(t)
	ctx := t.Context()
	now := time.Now()
	creds, cert := f.enroll(t, "watch-1", now)
	ring, ringCert := f.enroll(t, "ring-2", now)
	thumb := auth.Thumbprint(cert.Raw)

	ok, err := f.devs.Revoke(ctx, "uamy", "watch-1", now)
	if err != nil || !ok {
		t.Fatalf("revoke: %v %v", ok, err)
	}
	list, err := f.devs.List(ctx, "uamy")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 {
		t.Fatalf("list: %+v", list)
	}
	for _, d := range list {
		switch d.ID {
		case "watch-1":
			if d.Revoked == nil || d.RevokedWhy != "owner" || !d.Revoked.Equal(now.UTC()) {
				t.Errorf("the revoked device is listed as %+v", d)
			}
		case "ring-2":
			if d.Revoked != nil {
				t.Errorf("the other device is revoked: %+v", d)
			}
		default:
			t.Errorf("unexpected device %+v", d)
		}
	}
	if _, err := f.devs.Refresh(ctx, creds.RefreshToken, thumb, now); !errors.Is(err, auth.ErrDeviceRevoked) {
		t.Errorf("refresh after revocation: got %v, want ErrDeviceRevoked", err)
	}
	if !f.rev.CertificateRevoked(thumb) {
		t.Error("the certificate is not revoked")
	}
	if _, err := f.auth.Authenticate(creds.AccessToken, over(cert)); !errors.Is(err, auth.ErrRevoked) {
		t.Errorf("the access token after revocation: got %v, want ErrRevoked", err)
	}
	// The other device is untouched.
	if f.rev.CertificateRevoked(auth.Thumbprint(ringCert.Raw)) {
		t.Error("the other device's certificate was revoked")
	}
	if _, err := f.auth.Authenticate(ring.AccessToken, over(ringCert)); err != nil {
		t.Errorf("the other device's token: %v", err)
	}
	if _, err := f.devs.Refresh(ctx, ring.RefreshToken, auth.Thumbprint(ringCert.Raw), now); err != nil {
		t.Errorf("the other device's refresh: %v", err)
	}
	// Again, and an unknown device.
	if ok, err := f.devs.Revoke(ctx, "uamy", "watch-1", now.Add(time.Minute)); err != nil || !ok {
		t.Errorf("revoking again: %v %v", ok, err)
	}
	if rec := f.record(t, "watch-1"); !rec.Revoked.Equal(now.UTC()) {
		t.Errorf("revoking again moved the revocation time: %v", rec.Revoked)
	}
	if ok, err := f.devs.Revoke(ctx, "uamy", "nothing", now); err != nil || ok {
		t.Errorf("revoking an unknown device: %v %v", ok, err)
	}
	if ok, err := f.devs.Revoke(ctx, "ubob", "ring-2", now); err != nil || ok {
		t.Errorf("revoking amy's device as bob: %v %v", ok, err)
	}
	if list, err := f.devs.List(ctx, "ubob"); err != nil || len(list) != 0 {
		t.Errorf("bob's devices: %+v %v", list, err)
	}

	// Enrolling again after the revocation: a new family and certificate that work once
	// minted after the second of the revocation (see Revocations).
	later := time.Now().Truncate(time.Second).Add(2 * time.Second)
	again, againCert := f.enroll(t, "watch-1", later)
	if rec := f.record(t, "watch-1"); rec.Revoked != nil || rec.RevokedWhy != "" {
		t.Errorf("re-enrolled record: %+v", rec)
	}
	if _, err := f.auth.Authenticate(again.AccessToken, over(againCert)); err != nil {
		t.Errorf("the re-enrolled device's token: %v", err)
	}
	if _, err := f.devs.Refresh(ctx, again.RefreshToken, auth.Thumbprint(againCert.Raw), later); err != nil {
		t.Errorf("the re-enrolled device's refresh: %v", err)
	}
}

func TestDeviceReenrollReplacesFamily(t *testing.T) {
	f := newDevFixture(t)
	ctx := t.Context()
	// Minted in the past, so that the steps below stay before the real time.
	now := time.Now().Add(-20 * time.Minute)
	old, oldCert := f.enroll(t, "watch-1", now)
	oldP, _ := f.iss.Verify(old.AccessToken)
	fresh, freshCert := f.enroll(t, "watch-1", now.Add(time.Minute))
	freshP, _ := f.iss.Verify(fresh.AccessToken)
	if freshP.Family == oldP.Family {
		t.Fatal("re-enrollment kept the family")
	}
	for name, x5t := range map[string]string{"old certificate": auth.Thumbprint(oldCert.Raw), "new certificate": auth.Thumbprint(freshCert.Raw)} {
		if _, err := f.devs.Refresh(ctx, old.RefreshToken, x5t, now.Add(time.Minute)); !errors.Is(err, auth.ErrBadRefresh) {
			t.Errorf("the old family's refresh token with the %s: got %v, want ErrBadRefresh", name, err)
		}
	}
	rec := f.record(t, "watch-1")
	if rec.Revoked != nil || rec.Family != freshP.Family || rec.Generation != 1 || rec.Thumbprint != auth.Thumbprint(freshCert.Raw) {
		t.Errorf("record after re-enrollment: %+v", rec)
	}
	if list, _ := f.devs.List(ctx, "uamy"); len(list) != 1 {
		t.Errorf("re-enrollment listed %d devices", len(list))
	}
	if !f.rev.CertificateRevoked(auth.Thumbprint(oldCert.Raw)) {
		t.Error("the old certificate is not revoked")
	}
	if f.rev.CertificateRevoked(auth.Thumbprint(freshCert.Raw)) {
		t.Error("the new certificate is revoked")
	}
	if _, err := f.auth.Authenticate(old.AccessToken, over(oldCert)); !errors.Is(err, auth.ErrRevoked) {
		t.Errorf("the old token over the old certificate: got %v, want ErrRevoked", err)
	}
	if _, err := f.auth.Authenticate(fresh.AccessToken, over(freshCert)); err != nil {
		t.Errorf("the new token: %v", err)
	}
	if _, err := f.devs.Refresh(ctx, fresh.RefreshToken, auth.Thumbprint(freshCert.Raw), now.Add(time.Minute)); err != nil {
		t.Errorf("the new family's refresh: %v", err)
	}
}

func TestDeviceRefreshRefusesMalformedTokens(t *testing.T) {
	f := newDevFixture(t)
	now := time.Now()
	creds, cert := f.enroll(t, "watch-1", now)
	thumb := auth.Thumbprint(cert.Raw)
	parts := strings.Split(strings.TrimPrefix(creds.RefreshToken, "pbr1."), ".")
	if len(parts) != 4 {
		t.Fatalf("refresh token %q has %d parts", creds.RefreshToken, len(parts))
	}
	user, dev, fam, secret := parts[0], parts[1], parts[2], parts[3]
	join := func(p ...string) string { return "pbr1." + strings.Join(p, ".") }
	for _, c := range []struct{ name, rt string }{
		{"empty", ""},
		{"prefix only", "pbr1."},
		{"no prefix", strings.TrimPrefix(creds.RefreshToken, "pbr1.")},
		{"another prefix", "pbr2." + strings.TrimPrefix(creds.RefreshToken, "pbr1.")},
		{"upper-case prefix", "PBR1." + strings.TrimPrefix(creds.RefreshToken, "pbr1.")},
		{"an access token", creds.AccessToken},
		{"three parts", join(user, dev, fam)},
		{"five parts", join(user, dev, fam, secret, "x")},
		{"empty user", join("", dev, fam, secret)},
		{"empty secret", join(user, dev, fam, "")},
		{"trailing dot", creds.RefreshToken + "."},
		{"space", creds.RefreshToken + " "},
		{"newline", creds.RefreshToken + "\n"},
		{"wildcard user", join("*", dev, fam, secret)},
		{"subject wildcard", join(">", dev, fam, secret)},
		{"non-ASCII", join(user, dev, fam, secret+"é")},
		{"NUL", join(user, dev, fam+"\x00", secret)},
		{"too long", join(user, dev, fam, secret+strings.Repeat("a", 200))},
		{"unknown user", join("ubob", dev, fam, secret)},
		{"unknown device", join(user, "00000000000000000000000000000000", fam, secret)},
		{"another family", join(user, dev, strings.Repeat("A", len(fam)), secret)},
	} {
		if _, err := f.devs.Refresh(t.Context(), c.rt, thumb, now); !errors.Is(err, auth.ErrBadRefresh) {
			t.Errorf("%s: got %v, want ErrBadRefresh", c.name, err)
		}
	}
	if rec := f.record(t, "watch-1"); rec.Revoked != nil || rec.Generation != 1 {
		t.Errorf("malformed tokens changed the device: %+v", rec)
	}
	if _, err := f.devs.Refresh(t.Context(), creds.RefreshToken, thumb, now); err != nil {
		t.Errorf("the real token afterwards: %v", err)
	}
}

// TestDeviceCloneThatRenewedFirstIsCaught: a clone (same key) renews the certificate and
// so spends the refresh token; when the original later presents that token with the
// certificate it still holds (the one renewed from), reuse detection revokes the device.
func TestDeviceCloneThatRenewedFirstIsCaught(t *testing.T) {
	f := newDevFixture(t)
	ctx := t.Context()
	now := time.Now().Add(-20 * time.Minute)
	creds, cert := f.enroll(t, "watch-1", now)
	p, err := f.auth.Authenticate(creds.AccessToken, over(cert))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.devs.Renew(ctx, p, "uamy", csrFor(t, p256(t)), now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.devs.Refresh(ctx, creds.RefreshToken, auth.Thumbprint(cert.Raw), now.Add(5*time.Minute)); !errors.Is(err, auth.ErrDeviceRevoked) {
		t.Fatalf("the original's refresh after the clone renewed: %v, want ErrDeviceRevoked", err)
	}
	if rec := f.record(t, "watch-1"); rec.RevokedWhy != "refresh_reuse" {
		t.Errorf("revoked why %q, want refresh_reuse", rec.RevokedWhy)
	}
}
