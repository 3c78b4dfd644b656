package pulsebase

import (
	"crypto/ecdh"
	"crypto/hpke"
	"fmt"
	"time"
)

// Sealed samples: a device encrypts a batch with HPKE (RFC 9180) to the processing tier's
// public key, so that the ingest tier stores it without being able to read it. The suite is
// DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM in single-shot base mode, and the
// info string binds a batch to its key id and to the internal id of the user it is for.

// MediaSealed is the content type of a sealed batch: a SealedBatch as JSON.
const MediaSealed = "application/pulsebase-sealed+json"

// ProcessingKey is a public key of the processing tier, as GET /v1/keys/processing
// publishes it.
type ProcessingKey struct {
	KeyID     string    `json:"key_id"`
	KEM       string    `json:"kem"`
	KDF       string    `json:"kdf"`
	AEAD      string    `json:"aead"`
	PublicKey []byte    `json:"public_key"` // RFC 9180 SerializePublicKey; base64 in JSON
	Created   time.Time `json:"created"`
	// NotAfter is set on a retired key: batches sealed to it are accepted until then.
	NotAfter time.Time `json:"not_after,omitzero"`
}

// SealedBatch is the body of a sealed request: an application/json sample batch sealed to
// the processing key KeyID. Sealed is the encapsulated key followed by the ciphertext.
type SealedBatch struct {
	KeyID  string `json:"key_id"`
	Sealed []byte `json:"sealed"`
}

// The HPKE suite of sealed samples.
var (
	SealKEM  = hpke.DHKEM(ecdh.X25519())
	SealKDF  = hpke.HKDFSHA256()
	SealAEAD = hpke.AES256GCM()
)

// SealedInfo is the HPKE info of a batch sealed for user under keyID.
func SealedInfo(keyID, user string) []byte {
	return []byte("pulsebase/sealed/v1\x00" + keyID + "\x00" + user)
}

// SealBatch seals plaintext (an application/json sample batch) for user, the internal id
// of the account it is for, to the processing key k.
func SealBatch(k ProcessingKey, user string, plaintext []byte) (SealedBatch, error) {
	pk, err := SealKEM.NewPublicKey(k.PublicKey)
	if err != nil {
		return SealedBatch{}, fmt.Errorf("processing key %s: %w", k.KeyID, err)
	}
	ct, err := hpke.Seal(pk, SealKDF, SealAEAD, SealedInfo(k.KeyID, user), plaintext)
	if err != nil {
		return SealedBatch{}, err
	}
	return SealedBatch{KeyID: k.KeyID, Sealed: ct}, nil
}
