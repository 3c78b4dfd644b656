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

	// UpdateWrappedKey replaces the ciphertext and KEK id of an existing key if its current
	// KEK id is expectKEKID (compare-and-set, for re-wrapping under a new KEK). It returns an
	// *Error with code ECONFLICT when the KEK id differs and ENOTFOUND when there is no key.
	UpdateWrappedKey(ctx context.Context, k WrappedKey, expectKEKID string) error

	// DeleteWrappedKeys deletes every key of owner (crypto-shredding). Deleting an owner
	// without keys is not an error.
	DeleteWrappedKeys(ctx context.Context, owner string) error
}

// Store is everything the server keeps in its SQL database.
type Store interface {
	UserStore
	KeyStore
	// Ping reports whether the database answers.
	Ping(ctx context.Context) error
	Close() error
}
