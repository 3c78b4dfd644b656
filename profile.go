package pulsebase

import (
	"context"
	"time"
)

// StoredProfile is a user's profile document (internal/crdt) as the store keeps it: sealed
// under the user's key, with a version that grows by one at every write.
type StoredProfile struct {
	User       string
	Version    int64
	Ciphertext []byte
	Updated    time.Time
}

// ProfileStore keeps users' profile documents.
type ProfileStore interface {
	// Profile returns the user's profile, or an *Error with code ENOTFOUND when they have
	// none yet.
	Profile(ctx context.Context, user string) (StoredProfile, error)

	// PutProfile stores p if the stored version is p.Version-1 (none counts as 0): a
	// compare-and-set, so two servers merging ops at once cannot lose each other's. It
	// returns an *Error with code ECONFLICT when another write got there first.
	PutProfile(ctx context.Context, p StoredProfile) error
}
