package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pulsebase/pulsebase"
)

// RevocationBucket is the JetStream key-value bucket listing revoked devices and tokens.
const RevocationBucket = "REVOCATIONS"

// revocationTTL is how long the bucket keeps a revocation. A revoked token was issued at
// or before the revocation (in the same second at the latest) and lives at most MaxTTL,
// plus the Leeway verification allows past its expiry; after that nothing it revokes can
// still be valid, so the entry may go.
const revocationTTL = MaxTTL + Leeway + time.Second

// pruneEvery is how often Run drops revocations from memory that can no longer matter.
const pruneEvery = time.Hour

// Key prefixes in RevocationBucket.
const (
	devicePrefix = "dev."
	tokenPrefix  = "tok."
	certPrefix   = "crt."
)

// Revocations says which tokens were revoked. It keeps the whole REVOCATIONS bucket in
// memory, so that checking a token costs a map lookup, and follows the bucket's changes
// from every process: a revocation made anywhere takes effect everywhere within
// milliseconds.
//
// A device revocation refuses every token of that subject's device issued at or before
// the revocation. Token issue times (iat) have whole seconds only, so a token minted in the
// same second as the revocation counts as issued before it and is refused too: a device
// re-enrolled right after being revoked must be given a token minted at least a second
// later. The comparison uses the revoking process's clock against the minter's, so
// servers and the issuer are assumed to keep NTP time. A token revocation refuses one
// token, by its id (jti), whatever its role.
//
// Bucket keys are dev.<hex sha256(subject)[:32]>.<hex sha256(device)[:32]> with the
// revocation time as the value (Unix nanoseconds, decimal), tok.<hex sha256(jti)[:32]>
// with the token's expiry as the value (Unix nanoseconds, decimal), and
// crt.<hex sha256(x5t#S256)[:32]> with the certificate's expiry. Hashing keeps any
// subject, device or token id a valid key; the hashes are not meant to hide them.
//
// Its methods are safe for concurrent use.
type Revocations struct {
	kv  jetstream.KeyValue
	log *slog.Logger
	now func() time.Time
	// loaded is the bucket revision the constructor loaded up to; Run resumes after it.
	loaded uint64

	// mu guards the maps below.
	mu sync.RWMutex
	// devices maps a device key to the revocation time (Unix ns).
	devices map[string]int64
	// tokens maps a token key to the token's expiry (Unix ns).
	tokens map[string]int64
	// certs maps a device certificate's key to the certificate's expiry (Unix ns).
	certs map[string]int64
	subs  subscribers[struct{}]
}

// NewRevocations opens the REVOCATIONS bucket in js (created if missing, with replicas
// copies) and loads every revocation in it. Call Run to follow later changes.
func NewRevocations(ctx context.Context, js jetstream.JetStream, replicas int, log *slog.Logger) (*Revocations, error) {
	if replicas < 1 {
		replicas = 1
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      RevocationBucket,
		Description: "revoked devices and tokens, until no token they revoke can be valid",
		History:     1,
		TTL:         revocationTTL,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("revocation bucket: %w", err)
	}
	r := &Revocations{
		kv: kv, log: log, now: time.Now,
		devices: make(map[string]int64), tokens: make(map[string]int64), certs: make(map[string]int64),
	}
	if err := r.load(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// load applies every entry of the bucket.
func (r *Revocations) load(ctx context.Context) error {
	rev, err := loadBucket(ctx, r.kv, r.apply)
	if err != nil {
		return err
	}
	r.loaded = rev
	return nil
}

// Run applies revocations made by any process until ctx is done, calling the Subscribe
// callbacks after each. Call it once, and start it before serving: checks are only as
// fresh as the watch.
func (r *Revocations) Run(ctx context.Context) error {
	// An entry seen by both load and Run is applied twice, which changes nothing.
	return followBucket(ctx, r.kv, r.loaded, r.apply, func(jetstream.KeyValueEntry) { r.notify() },
		pruneEvery, func() { r.prune(r.now()) })
}

// apply records e in memory and reports whether it revoked something. A deleted or purged
// key lifts its revocation. The latest entry of a key wins, as in the bucket, so that
// every process holds the same set.
func (r *Revocations) apply(e jetstream.KeyValueEntry) bool {
	key := e.Key()
	var m map[string]int64
	switch {
	case strings.HasPrefix(key, devicePrefix):
		m = r.devices
	case strings.HasPrefix(key, tokenPrefix):
		m = r.tokens
	case strings.HasPrefix(key, certPrefix):
		m = r.certs
	default:
		r.log.Warn("unknown key in revocation bucket", "key", key)
		return false
	}
	if e.Operation() != jetstream.KeyValuePut {
		r.mu.Lock()
		delete(m, key)
		r.mu.Unlock()
		return false
	}
	ns, err := strconv.ParseInt(string(e.Value()), 10, 64)
	if err != nil || ns < 0 {
		r.log.Warn("bad revocation in bucket", "key", key)
		return false
	}
	r.mu.Lock()
	m[key] = ns
	r.mu.Unlock()
	return true
}

// notify calls the Subscribe callbacks, outside the lock so that they may call Revoked.
func (r *Revocations) notify() { r.subs.notify(struct{}{}) }

// prune drops revocations that no longer matter at now: the bucket forgets them after
// revocationTTL, and this process should too.
func (r *Revocations) prune(now time.Time) {
	n := now.UnixNano()
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, at := range r.devices {
		if at+int64(revocationTTL) < n {
			delete(r.devices, k)
		}
	}
	for _, m := range []map[string]int64{r.tokens, r.certs} {
		for k, exp := range m {
			if exp+int64(Leeway) < n {
				delete(m, k)
			}
		}
	}
}

// Revoked reports whether p's token was revoked: its id is listed, the certificate it is
// bound to is, or it is a device token (p.Device set) issued no later than the second its
// device was revoked in.
func (r *Revocations) Revoked(p pulsebase.Principal) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if p.TokenID != "" && len(r.tokens) > 0 {
		if _, ok := r.tokens[tokenKey(p.TokenID)]; ok {
			return true
		}
	}
	if p.Confirmation != "" && len(r.certs) > 0 {
		if _, ok := r.certs[certKey(p.Confirmation)]; ok {
			return true
		}
	}
	if p.Device != "" && len(r.devices) > 0 {
		// Whole seconds on both sides: a token without iat (zero Issued) is refused.
		if at, ok := r.devices[deviceKey(p.Subject, p.Device)]; ok && p.Issued.Unix() <= at/int64(time.Second) {
			return true
		}
	}
	return false
}

// RevokeDevice revokes every token of subject's device issued until now (this second
// included). It takes effect in this process at once and in every other one through the
// bucket; an error means the others may not have learnt of it, and the caller should
// retry.
func (r *Revocations) RevokeDevice(ctx context.Context, subject, device string) error {
	if subject == "" || device == "" {
		return errors.New("revoke device: subject and device are required")
	}
	key := deviceKey(subject, device)
	at := r.now().UnixNano()
	r.mu.Lock()
	// Locally a revocation only ever widens; the watch then applies the bucket's word.
	r.devices[key] = max(r.devices[key], at)
	r.mu.Unlock()
	if _, err := r.kv.Put(ctx, key, []byte(strconv.FormatInt(at, 10))); err != nil {
		return fmt.Errorf("revoke device: %w", err)
	}
	return nil
}

// RevokeToken revokes the one token p was verified from, by its id. It takes effect like
// RevokeDevice; a token without an id cannot be revoked this way.
func (r *Revocations) RevokeToken(ctx context.Context, p pulsebase.Principal) error {
	if p.TokenID == "" {
		return errors.New("revoke token: the token has no id")
	}
	exp := p.Expires
	if exp.IsZero() {
		// Without an expiry, keep the revocation as long as any token can live.
		exp = r.now().Add(MaxTTL)
	}
	key := tokenKey(p.TokenID)
	r.mu.Lock()
	r.tokens[key] = exp.UnixNano()
	r.mu.Unlock()
	if _, err := r.kv.Put(ctx, key, []byte(strconv.FormatInt(exp.UnixNano(), 10))); err != nil {
		return fmt.Errorf("revoke token: %w", err)
	}
	return nil
}

// RevokeCertificate revokes the device certificate with thumbprint x5t (RFC 8705
// x5t#S256) until its expiry notAfter, like RevokeToken: the device listener refuses the
// certificate, and every token bound to it, from then on.
func (r *Revocations) RevokeCertificate(ctx context.Context, x5t string, notAfter time.Time) error {
	if x5t == "" {
		return errors.New("revoke certificate: no thumbprint")
	}
	key := certKey(x5t)
	r.mu.Lock()
	r.certs[key] = notAfter.UnixNano()
	r.mu.Unlock()
	if _, err := r.kv.Put(ctx, key, []byte(strconv.FormatInt(notAfter.UnixNano(), 10))); err != nil {
		return fmt.Errorf("revoke certificate: %w", err)
	}
	return nil
}

// CertificateRevoked reports whether the device certificate with thumbprint x5t was
// revoked.
func (r *Revocations) CertificateRevoked(x5t string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if len(r.certs) == 0 {
		return false
	}
	_, ok := r.certs[certKey(x5t)]
	return ok
}

// Subscribe registers fn to be called after any revocation, by any process, has been
// applied, so that holders of long-lived connections can check them again with Revoked.
// fn runs on the watch goroutine: it must return quickly (signal a channel, say). After
// cancel returns, fn is called at most once more, by a notification already under way.
func (r *Revocations) Subscribe(fn func()) (cancel func()) {
	return r.subs.add(func(struct{}) { fn() })
}

// deviceKey is the bucket key of subject's device.
func deviceKey(subject, device string) string {
	s := sha256.Sum256([]byte(subject))
	d := sha256.Sum256([]byte(device))
	return devicePrefix + hex.EncodeToString(s[:16]) + "." + hex.EncodeToString(d[:16])
}

// certKey is the bucket key of a device certificate, by thumbprint.
func certKey(x5t string) string {
	h := sha256.Sum256([]byte(x5t))
	return certPrefix + hex.EncodeToString(h[:16])
}

// tokenKey is the bucket key of the token with id jti.
func tokenKey(jti string) string {
	h := sha256.Sum256([]byte(jti))
	return tokenPrefix + hex.EncodeToString(h[:16])
}
