// Package vault keeps the keys that protect personal data: a key-encryption key (KEK), one
// data keyset per user wrapped by it, and the keyed functions derived from them. Every
// personal payload Pulsebase writes to the broker or the store is sealed here under its
// owner's key with associated data binding it to (user, kind, record), so a ciphertext
// moved to another user or record does not open.
//
// It is imported by the ingest, processing and API layers; it imports the root package for
// the KeyStore it keeps wrapped keys in.
package vault

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/prf"
	tinkpb "github.com/tink-crypto/tink-go/v2/proto/tink_go_proto"
	"github.com/tink-crypto/tink-go/v2/tink"
	"golang.org/x/sync/singleflight"

	"github.com/pulsebase/pulsebase"
)

// Names of the wrapped keys a user owns.
const (
	keyData     = "data"     // AEAD keyset for personal payloads
	keyIdentity = "identity" // PRF keyset for dedupe identities
	// systemOwner owns the deployment's own keys.
	systemOwner    = "system"
	keySubjectHash = "subject-index" // PRF keyset for the subject → user index
)

// Options tune the cache of unwrapped keys.
type Options struct {
	// CacheSize bounds how many users' unwrapped keys stay in memory; zero means 100,000.
	CacheSize int
	// CacheTTL bounds how long an unwrapped key stays in memory; zero means 10 minutes.
	CacheTTL time.Duration
}

// Vault hands out users' keys, creating them on first use.
type Vault struct {
	store pulsebase.KeyStore
	kek   KEK
	cache *expirable.LRU[string, *Keys]
	group singleflight.Group
	// subject is the PRF for the subject → user index, loaded once at New.
	subject prf.PRF
}

// Keys are one user's unwrapped keys.
type Keys struct {
	user     string
	aead     tink.AEAD
	identity prf.PRF
}

// New returns a vault keeping wrapped keys in store under kek. It loads (or creates) the
// deployment's own keys, so it fails early when the KEK cannot open them.
func New(ctx context.Context, store pulsebase.KeyStore, kek KEK, opts Options) (*Vault, error) {
	if opts.CacheSize <= 0 {
		opts.CacheSize = 100_000
	}
	if opts.CacheTTL <= 0 {
		opts.CacheTTL = 10 * time.Minute
	}
	v := &Vault{store: store, kek: kek, cache: expirable.NewLRU[string, *Keys](opts.CacheSize, nil, opts.CacheTTL)}
	h, err := v.loadOrCreate(ctx, systemOwner, keySubjectHash, prf.HMACSHA256PRFKeyTemplate())
	if err != nil {
		return nil, err
	}
	if v.subject, err = primaryPRF(h); err != nil {
		return nil, err
	}
	return v, nil
}

// SubjectHash returns the keyed hash under which the user with external subject sub is
// indexed. Without the vault's key the index reveals nothing about subjects.
func (v *Vault) SubjectHash(sub string) ([]byte, error) {
	return v.subject.ComputePRF([]byte(sub), 32)
}

// UserKeys returns the keys of user, creating them on first use. Concurrent callers for one
// user share one load.
func (v *Vault) UserKeys(ctx context.Context, user string) (*Keys, error) {
	if k, ok := v.cache.Get(user); ok {
		return k, nil
	}
	r, err, _ := v.group.Do(user, func() (any, error) {
		if k, ok := v.cache.Get(user); ok {
			return k, nil
		}
		dh, err := v.loadOrCreate(ctx, user, keyData, aead.AES256GCMKeyTemplate())
		if err != nil {
			return nil, err
		}
		a, err := aead.New(dh)
		if err != nil {
			return nil, fmt.Errorf("user aead: %w", err)
		}
		ih, err := v.loadOrCreate(ctx, user, keyIdentity, prf.HMACSHA256PRFKeyTemplate())
		if err != nil {
			return nil, err
		}
		p, err := primaryPRF(ih)
		if err != nil {
			return nil, err
		}
		k := &Keys{user: user, aead: a, identity: p}
		v.cache.Add(user, k)
		return k, nil
	})
	if err != nil {
		return nil, err
	}
	return r.(*Keys), nil
}

// Forget drops user's unwrapped keys from memory.
func (v *Vault) Forget(user string) { v.cache.Remove(user) }

// loadOrCreate returns the keyset (owner, name), creating and storing a new one from tmpl
// when there is none. When two processes race, the first stored keyset wins and both use it.
func (v *Vault) loadOrCreate(ctx context.Context, owner, name string, tmpl *tinkpb.KeyTemplate) (*keyset.Handle, error) {
	wk, err := v.store.WrappedKey(ctx, owner, name)
	if pulsebase.ErrorCode(err) == pulsebase.ENOTFOUND {
		h, err := keyset.NewHandle(tmpl)
		if err != nil {
			return nil, fmt.Errorf("new %s key: %w", name, err)
		}
		var buf bytes.Buffer
		if err := h.WriteWithAssociatedData(keyset.NewBinaryWriter(&buf), v.kek, wrapAD(owner, name)); err != nil {
			return nil, fmt.Errorf("wrap %s key: %w", name, err)
		}
		now := time.Now().UTC()
		wk, err = v.store.CreateWrappedKey(ctx, pulsebase.WrappedKey{
			Owner: owner, Name: name, KEKID: v.kek.ID(), Ciphertext: buf.Bytes(), Created: now, Updated: now,
		})
		if err != nil {
			return nil, fmt.Errorf("store %s key: %w", name, err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("load %s key: %w", name, err)
	}
	if wk.KEKID != v.kek.ID() {
		return nil, fmt.Errorf("%s key of %s is wrapped by KEK %q, not the configured %q", name, owner, wk.KEKID, v.kek.ID())
	}
	h, err := keyset.ReadWithAssociatedData(keyset.NewBinaryReader(bytes.NewReader(wk.Ciphertext)), v.kek, wrapAD(owner, name))
	if err != nil {
		return nil, fmt.Errorf("unwrap %s key: %w", name, err)
	}
	return h, nil
}

func primaryPRF(h *keyset.Handle) (prf.PRF, error) {
	s, err := prf.NewPRFSet(h)
	if err != nil {
		return nil, fmt.Errorf("prf: %w", err)
	}
	return s.PRFs[s.PrimaryID], nil
}

// wrapAD binds a wrapped keyset to its owner and name: a wrapped key copied to another
// user's row does not unwrap.
func wrapAD(owner, name string) []byte {
	return []byte("pulsebase/keyset/v1\x00" + owner + "\x00" + name)
}

// ErrOpen is returned when a ciphertext does not open under its owner's key: it was
// tampered with, moved to another user or record, or its key is gone.
var ErrOpen = errors.New("vault: ciphertext does not open")

// AD is the associated data that binds a ciphertext to its owner, its kind of record and
// the record's id.
func AD(user, kind, record string) []byte {
	b := make([]byte, 0, len("pulsebase/v1")+len(user)+len(kind)+len(record)+3)
	b = append(b, "pulsebase/v1\x00"...)
	b = append(b, user...)
	b = append(b, 0)
	b = append(b, kind...)
	b = append(b, 0)
	return append(b, record...)
}

// Seal encrypts plaintext under the user's data key, bound to (kind, record).
func (k *Keys) Seal(kind, record string, plaintext []byte) ([]byte, error) {
	return k.aead.Encrypt(plaintext, AD(k.user, kind, record))
}

// Open decrypts a ciphertext made by Seal for the same user, kind and record.
func (k *Keys) Open(kind, record string, ciphertext []byte) ([]byte, error) {
	p, err := k.aead.Decrypt(ciphertext, AD(k.user, kind, record))
	if err != nil {
		return nil, ErrOpen
	}
	return p, nil
}

// Identity returns a short keyed identifier for material (e.g. a sample's dedupe identity):
// equal inputs of one user give equal ids, and without the user's key an id reveals
// nothing about the material. The result is 22 URL-safe characters (128 bits).
func (k *Keys) Identity(material []byte) (string, error) {
	b, err := k.identity.ComputePRF(material, 16)
	if err != nil {
		return "", fmt.Errorf("identity: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}
