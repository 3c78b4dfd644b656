// Package vault keeps the keys that protect personal data: key-encryption keys (KEKs) in a
// file, an HSM or a KMS; one data keyset per user wrapped by the primary KEK; and the keyed
// functions derived from them (dedupe identities, the subject index, per-purpose
// pseudonyms). Every personal payload Pulsebase writes to the broker or the store is sealed
// here under its owner's key with associated data binding it to (user, kind, record), so a
// ciphertext moved to another user or record does not open.
//
// It is imported by the ingest, consent, processing and API layers and by the keys
// commands; it imports the root package for the stores it keeps wrapped keys in.
package vault

import (
	"bytes"
	"context"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/prf"
	tinkpb "github.com/tink-crypto/tink-go/v2/proto/tink_go_proto"
	"github.com/tink-crypto/tink-go/v2/tink"
	"golang.org/x/sync/singleflight"

	"github.com/pulsebase/pulsebase"
)

// Names of wrapped keys.
const (
	keyData     = "data"     // a user's AEAD keyset for personal payloads
	keyIdentity = "identity" // a user's PRF keyset for dedupe identities
	// SystemOwner owns the deployment's own keys.
	SystemOwner    = "system"
	keySubjectHash = "subject-index" // PRF keyset for the subject → user index
	keyPseudonym   = "pseudonym"     // PRF keyset for per-purpose pseudonyms
)

// GenerationsBucket is the JetStream key-value bucket where a user's key generation is
// bumped when their keys change (rotation, erasure), so every process drops its cached copy.
const GenerationsBucket = "KEY_GENERATIONS"

// Store is what the vault keeps in the database.
type Store interface {
	pulsebase.KeyStore
	pulsebase.KEKStore
	pulsebase.KeyEventStore
}

// Config says where the vault's KEK is and how it caches.
type Config struct {
	// KEKURI is the KEK to start with (see OpenKEK); "" means DefaultKEKURI. Once a
	// deployment has rotated to another KEK, the registry in the store names the primary
	// one and KEKURI only needs to be any KEK still registered.
	KEKURI string
	// DataDir anchors relative local:// paths.
	DataDir string
	// CacheSize bounds how many users' unwrapped keys stay in memory; zero means 100,000.
	CacheSize int
	// CacheTTL bounds how long an unwrapped key stays in memory; zero means 10 minutes.
	// It is also how long a process that cannot watch the generations bucket may keep
	// using a key another process rotated or destroyed.
	CacheTTL time.Duration
	// RegistryRefresh is how often the primary KEK is re-read from the registry; zero
	// means 2 seconds.
	RegistryRefresh time.Duration
	Log             *slog.Logger
}

// Vault hands out users' keys, creating them on first use.
type Vault struct {
	store Store
	cfg   Config
	log   *slog.Logger

	mu      sync.RWMutex
	keks    map[string]KEK // by KEK id; opened on demand
	primary string         // id of the KEK that wraps new keys

	cache *expirable.LRU[string, *Keys]
	group singleflight.Group
	gen   jetstream.KeyValue // nil until Watch

	subject prf.PRF
	pseudo  prf.PRF
}

// Keys are one user's unwrapped keys.
type Keys struct {
	user     string
	aead     tink.AEAD
	identity prf.PRF
	v        *Vault
}

// Open returns a vault over store: it opens the configured KEK, registers it (making it
// primary in a new deployment), and loads or creates the deployment's own keys, so it fails
// early when the KEK cannot open them.
func Open(ctx context.Context, store Store, cfg Config) (*Vault, error) {
	if cfg.KEKURI == "" {
		cfg.KEKURI = DefaultKEKURI
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = 100_000
	}
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = 10 * time.Minute
	}
	if cfg.RegistryRefresh <= 0 {
		cfg.RegistryRefresh = 2 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	v := &Vault{store: store, cfg: cfg, log: cfg.Log, keks: map[string]KEK{},
		cache: expirable.NewLRU[string, *Keys](cfg.CacheSize, nil, cfg.CacheTTL)}
	infos, err := store.KEKs(ctx)
	if err != nil {
		return nil, fmt.Errorf("kek registry: %w", err)
	}
	registered := false
	for _, k := range infos {
		registered = registered || k.URI == cfg.KEKURI
	}
	switch {
	case len(infos) == 0:
		// A new deployment: the configured KEK (created if it is a local file) becomes
		// the first and primary one.
		kek, err := OpenKEK(ctx, cfg.KEKURI, cfg.DataDir)
		if err != nil {
			return nil, fmt.Errorf("open kek: %w", err)
		}
		v.keks[kek.ID()] = kek
		if err := store.RegisterKEK(ctx, pulsebase.KEKInfo{ID: kek.ID(), URI: cfg.KEKURI, Created: time.Now().UTC()}); err != nil {
			return nil, fmt.Errorf("register kek: %w", err)
		}
		if err := v.refreshPrimary(ctx, kek.ID()); err != nil {
			return nil, err
		}
	default:
		// The registry decides. A configured KEK it does not list (say, the old default
		// after a rotation to an HSM) is neither opened, nor created, nor registered:
		// only `keys rotate-kek` adds KEKs.
		if !registered {
			v.log.Warn("the configured kek is not in the registry; using the registry's primary kek (rotate with 'pulsebase keys rotate-kek')",
				"configured", redact(cfg.KEKURI))
		}
		if err := v.refreshPrimary(ctx, ""); err != nil {
			return nil, err
		}
	}
	h, err := v.loadOrCreate(ctx, SystemOwner, keySubjectHash, prf.HMACSHA256PRFKeyTemplate())
	if err != nil {
		return nil, err
	}
	if v.subject, err = primaryPRF(h); err != nil {
		return nil, err
	}
	h, err = v.loadOrCreate(ctx, SystemOwner, keyPseudonym, prf.HMACSHA256PRFKeyTemplate())
	if err != nil {
		return nil, err
	}
	if v.pseudo, err = primaryPRF(h); err != nil {
		return nil, err
	}
	return v, nil
}

// refreshPrimary reads the registry and makes its primary KEK the one that wraps new keys.
// In a registry without a primary, fallback becomes primary (a new deployment).
func (v *Vault) refreshPrimary(ctx context.Context, fallback string) error {
	infos, err := v.store.KEKs(ctx)
	if err != nil {
		return fmt.Errorf("kek registry: %w", err)
	}
	primary := ""
	for _, k := range infos {
		if k.Primary {
			primary = k.ID
		}
	}
	if primary == "" {
		if fallback == "" {
			return errors.New("kek registry has no primary kek")
		}
		if err := v.store.SetPrimaryKEK(ctx, fallback); err != nil {
			return fmt.Errorf("set primary kek: %w", err)
		}
		primary = fallback
	}
	if _, err := v.kek(ctx, primary); err != nil {
		return err
	}
	v.mu.Lock()
	changed := v.primary != "" && v.primary != primary
	v.primary = primary
	v.mu.Unlock()
	if changed {
		v.log.Info("primary kek changed", "kek", primary)
	}
	return nil
}

// kek returns the KEK with id, opening it from the registry's URI on first use.
func (v *Vault) kek(ctx context.Context, id string) (KEK, error) {
	v.mu.RLock()
	k, ok := v.keks[id]
	v.mu.RUnlock()
	if ok {
		return k, nil
	}
	infos, err := v.store.KEKs(ctx)
	if err != nil {
		return nil, fmt.Errorf("kek registry: %w", err)
	}
	for _, info := range infos {
		if info.ID != id {
			continue
		}
		k, err := OpenKEK(ctx, info.URI, v.cfg.DataDir)
		if err != nil {
			return nil, fmt.Errorf("open kek %s: %w", id, err)
		}
		if k.ID() != id {
			return nil, fmt.Errorf("kek at %s has id %s, registered as %s", redact(info.URI), k.ID(), id)
		}
		v.mu.Lock()
		if prev, ok := v.keks[id]; ok {
			k = prev
		} else {
			v.keks[id] = k
		}
		v.mu.Unlock()
		return k, nil
	}
	return nil, fmt.Errorf("kek %s is not in the registry", id)
}

func (v *Vault) primaryKEK(ctx context.Context) (KEK, error) {
	v.mu.RLock()
	id := v.primary
	v.mu.RUnlock()
	return v.kek(ctx, id)
}

// Watch keeps the vault coherent with other processes until ctx is done: it re-reads the
// primary KEK from the registry, and drops cached keys of users whose key generation was
// bumped in the generations bucket. Call AttachBroker first.
func (v *Vault) Watch(ctx context.Context) error {
	v.mu.RLock()
	kv := v.gen
	v.mu.RUnlock()
	if kv == nil {
		return errors.New("vault: Watch before AttachBroker")
	}
	w, err := kv.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("watch key generations: %w", err)
	}
	defer w.Stop()
	t := time.NewTicker(v.cfg.RegistryRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := v.refreshPrimary(ctx, ""); err != nil {
				v.log.Warn("refresh kek registry", "err", err)
			}
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("key generation watch stopped")
			}
			if e != nil {
				v.cache.Remove(e.Key())
			}
		}
	}
}

func generations(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      GenerationsBucket,
		Description: "per-user key generation, bumped on rotation and erasure to drop cached keys",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("key generations bucket: %w", err)
	}
	return kv, nil
}

// announce tells every process that user's keys changed. Without a watched bucket (a CLI
// run without a broker) other processes notice within the cache TTL, or at once when a
// ciphertext does not open under their cached keys (Keys.Open reloads).
func (v *Vault) announce(ctx context.Context, user string) {
	v.cache.Remove(user)
	v.mu.RLock()
	kv := v.gen
	v.mu.RUnlock()
	if kv == nil {
		return
	}
	if _, err := kv.Put(ctx, user, []byte(strconv.FormatInt(time.Now().UnixNano(), 10))); err != nil {
		v.log.Warn("announce key change", "err", err)
	}
}

// AttachBroker connects the vault to the broker's generations bucket (created if missing),
// so that it announces key changes to other processes; Watch then listens for theirs.
func (v *Vault) AttachBroker(ctx context.Context, js jetstream.JetStream, replicas int) error {
	kv, err := generations(ctx, js, replicas)
	if err != nil {
		return err
	}
	v.mu.Lock()
	v.gen = kv
	v.mu.Unlock()
	return nil
}

// SubjectHash returns the keyed hash under which the user with external subject sub is
// indexed. Without the vault's key the index reveals nothing about subjects.
func (v *Vault) SubjectHash(sub string) ([]byte, error) {
	return v.subject.ComputePRF([]byte(sub), 32)
}

var pseudonymEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// Pseudonym returns the pseudonym of user for purpose (e.g. "research", "analytics"): a
// keyed PRF of both, so datasets made for different purposes cannot be joined on it
// without the vault's key, and the same user keeps one pseudonym within a purpose.
func (v *Vault) Pseudonym(purpose, user string) (string, error) {
	if purpose == "" {
		return "", errors.New("pseudonym: purpose is required")
	}
	b, err := v.pseudo.ComputePRF([]byte(purpose+"\x00"+user), 16)
	if err != nil {
		return "", fmt.Errorf("pseudonym: %w", err)
	}
	return "p" + pseudonymEncoding.EncodeToString(b), nil
}

// UserKeys returns the keys of user, creating them on first use. Concurrent callers for one
// user share one load. For a user whose keys were destroyed it returns an *Error with code
// EERASED.
func (v *Vault) UserKeys(ctx context.Context, user string) (*Keys, error) {
	if k, ok := v.cache.Get(user); ok {
		return k, nil
	}
	return v.loadUserKeys(ctx, user)
}

func (v *Vault) loadUserKeys(ctx context.Context, user string) (*Keys, error) {
	r, err, _ := v.group.Do(user, func() (any, error) {
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
		k := &Keys{user: user, aead: a, identity: p, v: v}
		v.cache.Add(user, k)
		return k, nil
	})
	if err != nil {
		return nil, err
	}
	return r.(*Keys), nil
}

// Forget drops user's unwrapped keys from this process's memory.
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
		nk, err := v.wrap(ctx, owner, name, h)
		if err != nil {
			return nil, err
		}
		if wk, err = v.store.CreateWrappedKey(ctx, nk); err != nil {
			return nil, fmt.Errorf("store %s key: %w", name, err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("load %s key: %w", name, err)
	}
	return v.unwrap(ctx, wk)
}

// wrap encrypts h under the primary KEK, bound to (owner, name).
func (v *Vault) wrap(ctx context.Context, owner, name string, h *keyset.Handle) (pulsebase.WrappedKey, error) {
	kek, err := v.primaryKEK(ctx)
	if err != nil {
		return pulsebase.WrappedKey{}, err
	}
	return wrapWith(kek, owner, name, h)
}

func wrapWith(kek KEK, owner, name string, h *keyset.Handle) (pulsebase.WrappedKey, error) {
	var buf bytes.Buffer
	if err := h.WriteWithAssociatedData(keyset.NewBinaryWriter(&buf), kek, wrapAD(owner, name)); err != nil {
		return pulsebase.WrappedKey{}, fmt.Errorf("wrap %s key: %w", name, err)
	}
	now := time.Now().UTC()
	return pulsebase.WrappedKey{Owner: owner, Name: name, KEKID: kek.ID(), Ciphertext: buf.Bytes(), Created: now, Updated: now}, nil
}

// unwrap decrypts a wrapped key with the KEK it names.
func (v *Vault) unwrap(ctx context.Context, wk pulsebase.WrappedKey) (*keyset.Handle, error) {
	kek, err := v.kek(ctx, wk.KEKID)
	if err != nil {
		return nil, fmt.Errorf("%s key of %s: %w", wk.Name, wk.Owner, err)
	}
	h, err := keyset.ReadWithAssociatedData(keyset.NewBinaryReader(bytes.NewReader(wk.Ciphertext)), kek, wrapAD(wk.Owner, wk.Name))
	if err != nil {
		return nil, fmt.Errorf("unwrap %s key of %s: %w", wk.Name, wk.Owner, err)
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
// tampered with or moved to another user or record.
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

// Seal encrypts plaintext under the user's primary data key, bound to (kind, record).
func (k *Keys) Seal(kind, record string, plaintext []byte) ([]byte, error) {
	return k.aead.Encrypt(plaintext, AD(k.user, kind, record))
}

// Open decrypts a ciphertext made by Seal for the same user, kind and record. If it does
// not open, the user's keys are reloaded once from the store (another process may have
// rotated them and written with the new version); if they were destroyed meanwhile the
// error has code EERASED.
func (k *Keys) Open(kind, record string, ciphertext []byte) ([]byte, error) {
	ad := AD(k.user, kind, record)
	p, err := k.aead.Decrypt(ciphertext, ad)
	if err == nil {
		return p, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	k.v.cache.Remove(k.user)
	fresh, err := k.v.loadUserKeys(ctx, k.user)
	if err != nil {
		return nil, err
	}
	if p, err := fresh.aead.Decrypt(ciphertext, ad); err == nil {
		return p, nil
	}
	return nil, ErrOpen
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

// keyEvent appends an audit record of a key-management action.
func (v *Vault) keyEvent(ctx context.Context, actor, action string, detail map[string]any) error {
	d, err := json.Marshal(detail)
	if err != nil {
		return err
	}
	return v.store.AppendKeyEvent(ctx, pulsebase.KeyEvent{At: time.Now().UTC(), Actor: actor, Action: action, Detail: string(d)})
}
