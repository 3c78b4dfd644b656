package pulsebase

import (
	"context"
	"time"
)

// User is a person whose data Pulsebase holds. ID is a random pseudonymous id; the external
// subject (from a token) is never stored in the clear, only as a keyed hash.
type User struct {
	ID      string
	Created time.Time
}

// UserStore maps external subjects to internal users.
type UserStore interface {
	// EnsureUser returns the user whose keyed subject hash is subjectHash, creating it with
	// id newID and creation time now when there is none. created reports which happened.
	// Two concurrent calls for the same hash return the same user.
	EnsureUser(ctx context.Context, subjectHash []byte, newID string, now time.Time) (u User, created bool, err error)

	// User returns the user with internal id id, or an *Error with code ENOTFOUND.
	User(ctx context.Context, id string) (User, error)
}

// WrappedKey is a key (a serialized keyset) encrypted under a key-encryption key. The
// plaintext key never reaches a store.
type WrappedKey struct {
	Owner string // a user id, or "system" for keys of the deployment
	Name  string // what the key is for, e.g. "data" or "subject-index"
	KEKID string // which key-encryption key wrapped it
	// Ciphertext is the wrapped keyset; it is bound to (Owner, Name) as associated data.
	Ciphertext []byte
	Created    time.Time
	Updated    time.Time
}

// KeyStore holds wrapped keys.
type KeyStore interface {
	// WrappedKey returns the key of owner named name, or an *Error with code ENOTFOUND.
	WrappedKey(ctx context.Context, owner, name string) (WrappedKey, error)

	// CreateWrappedKey stores k unless a key with the same owner and name exists, and returns
	// the stored key: k itself, or the one that was there first (so two racing creators
	// agree on one key).
	CreateWrappedKey(ctx context.Context, k WrappedKey) (WrappedKey, error)

	// UpdateWrappedKey replaces the ciphertext and KEK id of an existing key if it still is
	// exactly expect (same KEK id and ciphertext): a compare-and-set, so that a re-wrap
	// under a new KEK and a rotation of the key's versions never overwrite each other. It
	// returns an *Error with code ECONFLICT when the key changed, ENOTFOUND when there is
	// none and EERASED when its owner was erased.
	UpdateWrappedKey(ctx context.Context, k WrappedKey, expect WrappedKey) error

	// EraseKeys deletes every key of owner and leaves a tombstone, in one transaction
	// (crypto-shredding). Afterwards WrappedKey and CreateWrappedKey for owner return an
	// *Error with code EERASED, so no new key can be made for an erased owner by a racing
	// writer. Erasing an owner twice, or one without keys, is not an error.
	EraseKeys(ctx context.Context, owner string, at time.Time) error

	// WrappedKeysByKEK returns up to limit keys wrapped by the KEK kekID whose (owner, name)
	// sorts after (afterOwner, afterName), in that order; it pages through keys for
	// re-wrapping under a new KEK.
	WrappedKeysByKEK(ctx context.Context, kekID, afterOwner, afterName string, limit int) ([]WrappedKey, error)

	// CountWrappedKeys returns how many keys each KEK wraps.
	CountWrappedKeys(ctx context.Context) (map[string]int, error)
}

// KEKInfo is a key-encryption key known to the deployment: its id and where it lives (a
// URI such as local://PATH or pkcs11://…; never key material). The primary KEK wraps new
// keys; the others still unwrap keys not yet re-wrapped.
type KEKInfo struct {
	ID      string
	URI     string
	Primary bool
	Created time.Time
}

// KEKStore keeps the registry of KEKs, so that every process of a deployment knows which
// KEK wraps new keys while a rotation runs.
type KEKStore interface {
	// KEKs returns every registered KEK, oldest first.
	KEKs(ctx context.Context) ([]KEKInfo, error)

	// RegisterKEK adds k (not primary) unless a KEK with its id exists, in which case it
	// updates nothing and returns nil.
	RegisterKEK(ctx context.Context, k KEKInfo) error

	// SetPrimaryKEK makes the registered KEK id the only primary one, in one transaction.
	// It returns an *Error with code ENOTFOUND for an unknown id.
	SetPrimaryKEK(ctx context.Context, id string) error

	// RemoveKEK deletes a KEK from the registry. It returns an *Error with code ECONFLICT
	// if the KEK is primary or still wraps keys.
	RemoveKEK(ctx context.Context, id string) error
}

// KeyEvent records a key-management action for audit: who, when, which keys. It never
// holds key material.
type KeyEvent struct {
	Seq    int64 // assigned by the store
	At     time.Time
	Actor  string // e.g. "cli:root@host" or a principal's role and token id
	Action string // e.g. "kek.rotate.start", "kek.rotate.done", "user.rotate", "user.erase"
	// Detail is a JSON object with ids and counts, never secrets.
	Detail string
}

// KeyEventStore keeps the append-only log of key-management actions.
type KeyEventStore interface {
	AppendKeyEvent(ctx context.Context, e KeyEvent) error
	// KeyEvents returns every event, oldest first.
	KeyEvents(ctx context.Context) ([]KeyEvent, error)
}

// Store is everything the server keeps in its SQL database.
type Store interface {
	UserStore
	KeyStore
	KEKStore
	KeyEventStore
	ConsentStore
	DerivedStore
	ProfileStore
	FeedbackStore
	// Ping reports whether the database answers.
	Ping(ctx context.Context) error
	Close() error
}
