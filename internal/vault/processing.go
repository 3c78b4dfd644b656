package vault

import (
	"context"
	"crypto/hpke"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pulsebase/pulsebase"
)

// Names of the raw (non-keyset) secrets of the processing tier. Raw secrets are wrapped
// with the KEK directly; their names start with rawPrefix.
const (
	rawPrefix         = "raw/"
	keyProcessingPubs = rawPrefix + "processing-public"
	keyProcessingPriv = rawPrefix + "processing-private/"
)

// ProcessingKey is a public key of the processing tier (see pulsebase.SealBatch).
type ProcessingKey = pulsebase.ProcessingKey

// OpenBatch opens a batch sealed for user under keyID with the processing tier's private
// key. Only the processor calls it.
func (v *Vault) OpenBatch(ctx context.Context, keyID, user string, sealed []byte) ([]byte, error) {
	priv, err := v.processingPrivate(ctx, keyID)
	if err != nil {
		return nil, err
	}
	pt, err := hpke.Open(priv, pulsebase.SealKDF, pulsebase.SealAEAD, pulsebase.SealedInfo(keyID, user), sealed)
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}

// ProcessingKeys returns the processing tier's public keys that are still accepted, the
// current one first. It never touches a private key, so the ingest tier can call it.
func (v *Vault) ProcessingKeys(ctx context.Context) ([]ProcessingKey, error) {
	wk, err := v.store.WrappedKey(ctx, SystemOwner, keyProcessingPubs)
	if pulsebase.ErrorCode(err) == pulsebase.ENOTFOUND {
		return nil, pulsebase.Errorf(pulsebase.EUNAVAILABLE, "no processing key yet: a process with the process role creates it")
	}
	if err != nil {
		return nil, err
	}
	b, err := v.unwrapRaw(ctx, wk)
	if err != nil {
		return nil, err
	}
	var keys []ProcessingKey
	if err := json.Unmarshal(b, &keys); err != nil {
		return nil, fmt.Errorf("decode processing keys: %w", err)
	}
	now := time.Now()
	out := keys[:0]
	for _, k := range keys {
		if k.NotAfter.IsZero() || now.Before(k.NotAfter) {
			out = append(out, k)
		}
	}
	return out, nil
}

// EnsureProcessingKey creates the first processing key pair when there is none. The
// process role calls it at start.
func (v *Vault) EnsureProcessingKey(ctx context.Context) error {
	_, err := v.store.WrappedKey(ctx, SystemOwner, keyProcessingPubs)
	if pulsebase.ErrorCode(err) != pulsebase.ENOTFOUND {
		return err
	}
	_, err = v.RotateProcessingKey(ctx, 0, "server")
	if pulsebase.ErrorCode(err) == pulsebase.ECONFLICT {
		return nil // another process created it first
	}
	return err
}

// RotateProcessingKey makes a new processing key pair current. The previous keys stay
// accepted for grace (sealed batches in flight from devices that fetched the old key), then
// drop out of ProcessingKeys; their private keys stay in the vault so that batches already
// stored under them can still be processed.
func (v *Vault) RotateProcessingKey(ctx context.Context, grace time.Duration, actor string) (ProcessingKey, error) {
	priv, err := pulsebase.SealKEM.GenerateKey()
	if err != nil {
		return ProcessingKey{}, err
	}
	privBytes, err := priv.Bytes()
	if err != nil {
		return ProcessingKey{}, err
	}
	var id [9]byte
	rand.Read(id[:])
	now := time.Now().UTC().Truncate(time.Second)
	nk := ProcessingKey{
		KeyID: "pk-" + base64.RawURLEncoding.EncodeToString(id[:]), KEM: "DHKEM(X25519, HKDF-SHA256)",
		KDF: "HKDF-SHA256", AEAD: "AES-256-GCM", PublicKey: priv.PublicKey().Bytes(), Created: now,
	}
	pw, err := v.wrapRaw(ctx, keyProcessingPriv+nk.KeyID, privBytes)
	if err != nil {
		return ProcessingKey{}, err
	}
	if _, err := v.store.CreateWrappedKey(ctx, pw); err != nil {
		return ProcessingKey{}, err
	}
	old, err := v.store.WrappedKey(ctx, SystemOwner, keyProcessingPubs)
	var keys []ProcessingKey
	switch pulsebase.ErrorCode(err) {
	case "":
		b, err := v.unwrapRaw(ctx, old)
		if err != nil {
			return ProcessingKey{}, err
		}
		if err := json.Unmarshal(b, &keys); err != nil {
			return ProcessingKey{}, err
		}
	case pulsebase.ENOTFOUND:
	default:
		return ProcessingKey{}, err
	}
	// Every older key is accepted for at most grace from now.
	for i := range keys {
		if end := now.Add(grace); keys[i].NotAfter.IsZero() || end.Before(keys[i].NotAfter) {
			keys[i].NotAfter = end
		}
	}
	keys = append([]ProcessingKey{nk}, keys...)
	b, err := json.Marshal(keys)
	if err != nil {
		return ProcessingKey{}, err
	}
	pubs, err := v.wrapRaw(ctx, keyProcessingPubs, b)
	if err != nil {
		return ProcessingKey{}, err
	}
	if old.Owner == "" {
		stored, err := v.store.CreateWrappedKey(ctx, pubs)
		if err != nil {
			return ProcessingKey{}, err
		}
		if string(stored.Ciphertext) != string(pubs.Ciphertext) {
			return ProcessingKey{}, pulsebase.Errorf(pulsebase.ECONFLICT, "another process created the processing key")
		}
	} else if err := v.store.UpdateWrappedKey(ctx, pubs, old); err != nil {
		return ProcessingKey{}, err
	}
	return nk, v.keyEvent(ctx, actor, "processing.rotate", map[string]any{"key_id": nk.KeyID, "grace": grace.String()})
}

func (v *Vault) processingPrivate(ctx context.Context, keyID string) (hpke.PrivateKey, error) {
	if strings.ContainsAny(keyID, "/\x00") {
		return nil, errors.New("bad processing key id")
	}
	wk, err := v.store.WrappedKey(ctx, SystemOwner, keyProcessingPriv+keyID)
	if err != nil {
		return nil, fmt.Errorf("processing key %s: %w", keyID, err)
	}
	b, err := v.unwrapRaw(ctx, wk)
	if err != nil {
		return nil, err
	}
	return pulsebase.SealKEM.NewPrivateKey(b)
}

// wrapRaw wraps a raw secret (not a Tink keyset) of the system under the primary KEK.
func (v *Vault) wrapRaw(ctx context.Context, name string, secret []byte) (pulsebase.WrappedKey, error) {
	kek, err := v.primaryKEK(ctx)
	if err != nil {
		return pulsebase.WrappedKey{}, err
	}
	return wrapRawWith(kek, SystemOwner, name, secret)
}

func wrapRawWith(kek KEK, owner, name string, secret []byte) (pulsebase.WrappedKey, error) {
	ct, err := kek.Encrypt(secret, wrapAD(owner, name))
	if err != nil {
		return pulsebase.WrappedKey{}, fmt.Errorf("wrap %s: %w", name, err)
	}
	now := time.Now().UTC()
	return pulsebase.WrappedKey{Owner: owner, Name: name, KEKID: kek.ID(), Ciphertext: ct, Created: now, Updated: now}, nil
}

func (v *Vault) unwrapRaw(ctx context.Context, wk pulsebase.WrappedKey) ([]byte, error) {
	kek, err := v.kek(ctx, wk.KEKID)
	if err != nil {
		return nil, err
	}
	b, err := kek.Decrypt(wk.Ciphertext, wrapAD(wk.Owner, wk.Name))
	if err != nil {
		return nil, fmt.Errorf("unwrap %s: %w", wk.Name, err)
	}
	return b, nil
}
