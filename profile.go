package pulsebase

import (
	"context"
	"time"
)

// StoredProfile is a user's profile document (internal/crdt) as the store keeps it: sealed
// under the user's key, with a version that grows by one at every write.
type StoredProfile struct {
	User    string
	Version int64
	// Published is the highest version whose ops are known to be on the user's change
	// feed; below Version, the latest write's ops still wait to go out (the sealed
	// document keeps them). PutProfile ignores it; only MarkProfilePublished moves it.
	Published  int64
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
	// keeps the stored Published (0 for a new profile). It returns an *Error with code
	// ECONFLICT when another write got there first, EINVALID without a user or with a
	// version below 1.
	PutProfile(ctx context.Context, p StoredProfile) error

	// MarkProfilePublished records that the ops of the user's profile version went out on
	// their change feed: Published becomes max(Published, version). Marking an older
	// version again changes nothing. It returns an *Error with code ENOTFOUND when the
	// user has no profile, EINVALID for a version below 1 or above the stored one.
	MarkProfilePublished(ctx context.Context, user string, version int64) error
}
