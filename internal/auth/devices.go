package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pulsebase/pulsebase"
)

// DeviceBucket is the JetStream key-value bucket of enrolled devices.
const DeviceBucket = "DEVICES"

// Lifetimes of what an enrolled device holds.
const (
	// DeviceTokenTTL is the lifetime of a device's access token: short, because it is
	// renewed with the refresh token over the device's mutual-TLS connection.
	DeviceTokenTTL = time.Hour
	// RefreshTokenTTL is how long a refresh token may go unused: a device offline longer
	// than this enrolls again.
	RefreshTokenTTL = 30 * 24 * time.Hour
)

// RefreshReuseGrace is how long after a rotation the refresh token just spent is refused
// without revoking the device: a device that sent one refresh twice (a retry after a lost
// answer, two requests racing) should not lose its enrollment for it. A thief's copy used
// in that window gets nothing either; it is only not detected.
const RefreshReuseGrace = 10 * time.Second

// refreshPrefix starts every refresh token, so that one is recognised in logs and
// secret scanners.
const refreshPrefix = "pbr1."

// Device is an enrolled device as stored: its certificate, its refresh-token family, and
// whether it was revoked. The owner's external subject, needed to mint the device's
// tokens, is kept only sealed under the owner's data key.
type Device struct {
	User string `json:"user"`
	ID   string `json:"id"`
	// Subject is the owner's external subject, sealed (see DeviceSealer).
	Subject []byte `json:"subject"`
	// Serial, Thumbprint and NotAfter describe the current certificate.
	Serial     string    `json:"serial"`
	Thumbprint string    `json:"x5t"`
	NotAfter   time.Time `json:"not_after"`
	// PrevThumbprint is the certificate the current one was renewed from.
	PrevThumbprint string `json:"prev_x5t,omitempty"`
	// Family is the refresh-token family; Generation counts its rotations; Refresh is
	// the SHA-256 of the current refresh secret, RefreshExpires when it lapses.
	Family         string    `json:"family"`
	Generation     int       `json:"generation"`
	Refresh        string    `json:"refresh"`
	RefreshExpires time.Time `json:"refresh_expires"`
	// PrevRefresh is the hash of the refresh secret spent last, at Rotated: presented
	// again within RefreshReuseGrace it is refused without revoking the family.
	PrevRefresh string    `json:"prev_refresh,omitempty"`
	Rotated     time.Time `json:"rotated,omitempty"`
	Enrolled    time.Time `json:"enrolled"`
	Renewed     time.Time `json:"renewed"`
	// Revoked is when the device was revoked (nil while it is not); RevokedWhy says why
	// ("owner", "refresh_reuse").
	Revoked    *time.Time `json:"revoked,omitempty"`
	RevokedWhy string     `json:"revoked_why,omitempty"`
}

// DeviceSealer seals and opens an owner's subject for a device record with the owner's
// data key, so that the registry holds no readable personal name.
type DeviceSealer interface {
	SealSubject(ctx context.Context, user, device, subject string) ([]byte, error)
	OpenSubject(ctx context.Context, user, device string, sealed []byte) (string, error)
}

// Credentials are what a device receives at enrollment, renewal and refresh.
type Credentials struct {
	Device string `json:"device"`
	// Certificate (PEM) is set at enrollment and renewal, with the CA's certificate.
	Certificate string    `json:"certificate,omitempty"`
	CA          string    `json:"ca,omitempty"`
	Serial      string    `json:"serial"`
	NotAfter    time.Time `json:"not_after"`
	// AccessToken is bound to the certificate (cnf x5t#S256).
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
}

// Devices enrolls devices, renews their certificates and rotates their refresh tokens.
// Records live in the DEVICES bucket, so every process sees each change at once;
// refresh-token rotation is a compare-and-set on the record's revision, so of two
// refreshes with one token exactly one wins.
type Devices struct {
	kv     jetstream.KeyValue
	ca     *DeviceCA
	iss    *Issuer
	rev    *Revocations
	sealer DeviceSealer
	// CertTTL and TokenTTL override DeviceCertTTL and DeviceTokenTTL (tests).
	CertTTL, TokenTTL time.Duration
}

// NewDevices opens the DEVICES bucket (created if missing, with replicas copies).
func NewDevices(ctx context.Context, js jetstream.JetStream, replicas int, ca *DeviceCA, iss *Issuer, rev *Revocations, sealer DeviceSealer) (*Devices, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      DeviceBucket,
		Description: "enrolled devices: certificate, refresh-token family, revocation",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("device bucket: %w", err)
	}
	return &Devices{kv: kv, ca: ca, iss: iss, rev: rev, sealer: sealer, CertTTL: DeviceCertTTL, TokenTTL: DeviceTokenTTL}, nil
}

// deviceRecordKey is the bucket key of user's device: user ids are base32, the device id
// is hashed so that any id makes a valid key.
func deviceRecordKey(user, device string) string {
	h := sha256.Sum256([]byte(device))
	return "d." + user + "." + hex.EncodeToString(h[:16])
}

// Errors of device operations; the HTTP layer maps them to codes.
var (
	// ErrNoDevice: no such enrolled device (or it belongs to someone else).
	ErrNoDevice = errors.New("no such device")
	// ErrDeviceRevoked: the device was revoked and must enroll again.
	ErrDeviceRevoked = errors.New("the device was revoked")
	// ErrBadRefresh: the refresh token is malformed, expired, spent or not this
	// certificate's.
	ErrBadRefresh = errors.New("invalid refresh token")
)

// Enroll enrolls (or re-enrolls) user's device with the public key of csr: a fresh
// certificate, an access token bound to it and a new refresh-token family. A device
// enrolled before under the same id loses its old certificate and family at once.
func (d *Devices) Enroll(ctx context.Context, subject, user, device string, csr *x509.CertificateRequest, now time.Time) (Credentials, error) {
	key := deviceRecordKey(user, device)
	old, rev, err := d.get(ctx, key)
	if err != nil && !errors.Is(err, ErrNoDevice) {
		return Credentials{}, err
	}
	if err == nil && old.Revoked == nil {
		// The old certificate, and the tokens bound to it, stop; its refresh family is
		// replaced below. Unbound tokens of the id are left alone: revoking them by
		// device would refuse the new token too when minted in the same second.
		if err := d.rev.RevokeCertificate(ctx, old.Thumbprint, old.NotAfter); err != nil {
			return Credentials{}, err
		}
	}
	cert, err := d.ca.Issue(csr, user, device, d.CertTTL, now)
	if err != nil {
		return Credentials{}, err
	}
	sealed, err := d.sealer.SealSubject(ctx, user, device, subject)
	if err != nil {
		return Credentials{}, fmt.Errorf("seal subject: %w", err)
	}
	rec := Device{User: user, ID: device, Subject: sealed, Serial: cert.Serial, Thumbprint: cert.Thumbprint,
		NotAfter: cert.NotAfter, Family: newSecretID(), Enrolled: now.UTC(), Renewed: now.UTC()}
	return d.certify(ctx, key, rec, rev, subject, cert, now)
}

// certify mints rec's next tokens, stores rec if its key is still at revision rev, and
// returns the credentials with cert and the CA's certificate.
func (d *Devices) certify(ctx context.Context, key string, rec Device, rev uint64, subject string, cert DeviceCert, now time.Time) (Credentials, error) {
	creds, err := d.issue(&rec, subject, now)
	if err != nil {
		return Credentials{}, err
	}
	if err := d.put(ctx, key, rec, rev); err != nil {
		return Credentials{}, err
	}
	creds.Certificate, creds.CA = string(cert.PEM), string(pemCert(d.ca.Certificate()))
	return creds, nil
}

// Renew gives the device p speaks for (over its mutual-TLS connection, with a token bound
// to its current certificate) a new certificate for csr's key, a new access token and
// the next refresh token of its family.
func (d *Devices) Renew(ctx context.Context, p pulsebase.Principal, user string, csr *x509.CertificateRequest, now time.Time) (Credentials, error) {
	key := deviceRecordKey(user, p.Device)
	rec, rev, err := d.get(ctx, key)
	if err != nil {
		return Credentials{}, err
	}
	switch {
	case rec.Revoked != nil:
		return Credentials{}, ErrDeviceRevoked
	case p.Confirmation == "" || subtle.ConstantTimeCompare([]byte(p.Confirmation), []byte(rec.Thumbprint)) != 1:
		// Only the current certificate renews: a token bound to a replaced one is stale.
		return Credentials{}, fmt.Errorf("%w: the token is not bound to the device's current certificate", ErrNoDevice)
	}
	cert, err := d.ca.Issue(csr, user, p.Device, d.CertTTL, now)
	if err != nil {
		return Credentials{}, err
	}
	subject, err := d.sealer.OpenSubject(ctx, user, p.Device, rec.Subject)
	if err != nil {
		return Credentials{}, fmt.Errorf("open subject: %w", err)
	}
	rec.PrevThumbprint = rec.Thumbprint
	rec.Serial, rec.Thumbprint, rec.NotAfter, rec.Renewed = cert.Serial, cert.Thumbprint, cert.NotAfter, now.UTC()
	// The old certificate stays valid until it expires, so that the device's open
	// connections carry on while it reconnects with the new one; renewal is not
	// revocation (DELETE is).
	return d.certify(ctx, key, rec, rev, subject, cert, now)
}

// Refresh spends refresh token rt, presented over a connection with the client
// certificate of thumbprint x5t, and returns a new access token and the family's next
// refresh token. A refresh token is single-use: presenting a spent one again (a copy
// was stolen, or the device was cloned) revokes the whole family — the device, its
// certificate and every token it holds — and the owner must enroll it again; only the
// token spent last, presented again within RefreshReuseGrace, is merely refused.
func (d *Devices) Refresh(ctx context.Context, rt, x5t string, now time.Time) (Credentials, error) {
	user, devHash, family, secret, ok := parseRefresh(rt)
	if !ok {
		return Credentials{}, ErrBadRefresh
	}
	key := "d." + user + "." + devHash
	rec, rev, err := d.get(ctx, key)
	switch {
	case errors.Is(err, ErrNoDevice):
		return Credentials{}, ErrBadRefresh
	case err != nil:
		return Credentials{}, err
	case rec.Revoked != nil:
		return Credentials{}, ErrDeviceRevoked
	case subtle.ConstantTimeCompare([]byte(family), []byte(rec.Family)) != 1:
		// A family replaced by a re-enrollment: nothing to revoke any more.
		return Credentials{}, ErrBadRefresh
	case !sameText(x5t, rec.Thumbprint) && !sameText(x5t, rec.PrevThumbprint):
		// Refresh tokens are sender-constrained like access tokens: only a holder of the
		// device's key (its current certificate's, or the one it renewed from) gets
		// anywhere, and only such a holder can set off reuse detection — a clone that
		// renewed first included.
		return Credentials{}, fmt.Errorf("%w: not presented with the device's certificate", ErrBadRefresh)
	}
	if h := hashSecret(secret); subtle.ConstantTimeCompare([]byte(h), []byte(rec.Refresh)) != 1 {
		if rec.PrevRefresh != "" && subtle.ConstantTimeCompare([]byte(h), []byte(rec.PrevRefresh)) == 1 && now.Sub(rec.Rotated) < RefreshReuseGrace {
			return Credentials{}, fmt.Errorf("%w: spent a moment ago", ErrBadRefresh)
		}
		if err := d.revoke(ctx, key, "refresh_reuse", now); err != nil {
			return Credentials{}, err
		}
		return Credentials{}, fmt.Errorf("%w: a spent refresh token was used again; the device is revoked", ErrDeviceRevoked)
	}
	if !sameText(x5t, rec.Thumbprint) {
		return Credentials{}, fmt.Errorf("%w: the certificate was renewed; present the new one", ErrBadRefresh)
	}
	if !now.Before(rec.RefreshExpires) {
		return Credentials{}, fmt.Errorf("%w: expired", ErrBadRefresh)
	}
	subject, err := d.sealer.OpenSubject(ctx, user, rec.ID, rec.Subject)
	if err != nil {
		return Credentials{}, fmt.Errorf("open subject: %w", err)
	}
	creds, err := d.issue(&rec, subject, now)
	if err != nil {
		return Credentials{}, err
	}
	if err := d.put(ctx, key, rec, rev); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			// Another refresh with the same token won the race: this one presented a
			// token that is spent now.
			return Credentials{}, fmt.Errorf("%w: spent", ErrBadRefresh)
		}
		return Credentials{}, err
	}
	return creds, nil
}

// issue mints rec's next access token and refresh token, updating rec's family state.
func (d *Devices) issue(rec *Device, subject string, now time.Time) (Credentials, error) {
	tok, err := d.iss.Mint(TokenRequest{Subject: subject, Role: pulsebase.RoleDevice, Device: rec.ID,
		TTL: d.TokenTTL, Confirmation: rec.Thumbprint, Family: rec.Family}, now)
	if err != nil {
		return Credentials{}, err
	}
	secret := newSecretID()
	// Refresh and renewal both spend the current refresh token: remember it for the retry
	// grace.
	if rec.Refresh != "" {
		rec.PrevRefresh, rec.Rotated = rec.Refresh, now.UTC()
	}
	rec.Generation++
	rec.Refresh = hashSecret(secret)
	rec.RefreshExpires = now.Add(RefreshTokenTTL).UTC()
	h := sha256.Sum256([]byte(rec.ID))
	return Credentials{
		Device: rec.ID, Serial: rec.Serial, NotAfter: rec.NotAfter,
		AccessToken: tok, TokenType: "Bearer", ExpiresIn: int(d.TokenTTL / time.Second),
		RefreshToken: refreshPrefix + rec.User + "." + hex.EncodeToString(h[:16]) + "." + rec.Family + "." + secret,
	}, nil
}

// List returns user's enrolled devices (revoked ones too), by enrollment time.
func (d *Devices) List(ctx context.Context, user string) ([]Device, error) {
	lister, err := d.kv.ListKeysFiltered(ctx, "d."+user+".*")
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	var out []Device
	for k := range lister.Keys() {
		rec, _, err := d.get(ctx, k)
		if errors.Is(err, ErrNoDevice) {
			continue // deleted meanwhile
		}
		if err != nil {
			_ = lister.Stop()
			return nil, err
		}
		out = append(out, rec)
	}
	slices.SortFunc(out, func(a, b Device) int { return a.Enrolled.Compare(b.Enrolled) })
	return out, nil
}

// Revoke revokes user's enrolled device id, if there is one: its certificate, its
// refresh-token family and (by the caller, through Revocations.RevokeDevice) every
// token it holds. It reports whether the device was enrolled.
func (d *Devices) Revoke(ctx context.Context, user, device string, now time.Time) (bool, error) {
	err := d.revoke(ctx, deviceRecordKey(user, device), "owner", now)
	if errors.Is(err, ErrNoDevice) {
		return false, nil
	}
	return err == nil, err
}

func (d *Devices) revoke(ctx context.Context, key, why string, now time.Time) error {
	for {
		rec, rev, err := d.get(ctx, key)
		if err != nil {
			return err
		}
		if rec.Revoked == nil {
			at := now.UTC()
			rec.Revoked, rec.RevokedWhy = &at, why
			if err := d.put(ctx, key, rec, rev); errors.Is(err, jetstream.ErrKeyExists) {
				continue // changed meanwhile (a refresh): decide again on the new record
			} else if err != nil {
				return err
			}
		}
		return d.revokeCredentials(ctx, rec)
	}
}

// revokeCredentials refuses rec's certificate and every token of the device from now on,
// in every process.
func (d *Devices) revokeCredentials(ctx context.Context, rec Device) error {
	if err := d.rev.RevokeCertificate(ctx, rec.Thumbprint, rec.NotAfter); err != nil {
		return err
	}
	subject, err := d.sealer.OpenSubject(ctx, rec.User, rec.ID, rec.Subject)
	if err != nil {
		return fmt.Errorf("open subject: %w", err)
	}
	return d.rev.RevokeDevice(ctx, subject, rec.ID)
}

func (d *Devices) get(ctx context.Context, key string) (Device, uint64, error) {
	e, err := d.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Device{}, 0, ErrNoDevice
	}
	if err != nil {
		return Device{}, 0, fmt.Errorf("read device: %w", err)
	}
	var rec Device
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return Device{}, 0, fmt.Errorf("decode device: %w", err)
	}
	return rec, e.Revision(), nil
}

// put writes rec if the key is still at revision rev (0: if it does not exist).
func (d *Devices) put(ctx context.Context, key string, rec Device, rev uint64) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if rev == 0 {
		_, err = d.kv.Create(ctx, key, b)
	} else {
		_, err = d.kv.Update(ctx, key, b, rev)
	}
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) || strings.Contains(err.Error(), "wrong last sequence") {
			return fmt.Errorf("store device: %w", jetstream.ErrKeyExists)
		}
		return fmt.Errorf("store device: %w", err)
	}
	return nil
}

// parseRefresh splits pbr1.<user>.<device hash>.<family>.<secret>.
func parseRefresh(rt string) (user, devHash, family, secret string, ok bool) {
	rest, found := strings.CutPrefix(rt, refreshPrefix)
	if !found || len(rt) > 256 {
		return "", "", "", "", false
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 4 {
		return "", "", "", "", false
	}
	for _, p := range parts {
		if p == "" {
			return "", "", "", "", false
		}
		for i := 0; i < len(p); i++ {
			if c := p[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return "", "", "", "", false
			}
		}
	}
	return parts[0], parts[1], parts[2], parts[3], true
}

// newSecretID returns 256 random bits, base64url.
func newSecretID() string {
	var b [32]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func hashSecret(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// pemCert encodes a certificate as PEM.
func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// sameText compares two secrets-or-thumbprints in constant time; "" matches nothing.
func sameText(a, b string) bool {
	return a != "" && b != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
