package pulsebase

import (
	"context"
	"time"
)

// Purpose is a use of a user's data that needs its own consent.
type Purpose string

// Purposes of DOMAIN.md and API.md. The list may grow; a purpose a user never answered is
// not consented.
const (
	PurposePersonalization Purpose = "personalization"
	PurposeResearch        Purpose = "research"
	PurposeModelTraining   Purpose = "model_training"
)

// Categories lists every consent category, in a stable order.
func Categories() []Category {
	return []Category{CategoryHeart, CategoryActivity, CategorySleep, CategoryBody, CategoryMind, CategoryNutrition}
}

// Purposes lists every purpose, in a stable order.
func Purposes() []Purpose {
	return []Purpose{PurposePersonalization, PurposeResearch, PurposeModelTraining}
}

// Consent is one version of a user's answers: which categories may be collected, and for
// which purposes collected data may be used. A new user has version 0 and consented to
// nothing.
type Consent struct {
	Collect  map[Category]bool `json:"collect"`
	Purposes map[Purpose]bool  `json:"purposes"`
	// Version counts the changes, starting at 1 for the first answer.
	Version int       `json:"version"`
	Updated time.Time `json:"updated,omitzero"`
}

// Actor is who made a change, for receipts: never a token itself, only its id.
type Actor struct {
	Subject string `json:"subject,omitempty"`
	Role    Role   `json:"role"`
	Device  string `json:"device,omitempty"`
	TokenID string `json:"token_id,omitempty"`
}

// ConsentReceipt is one entry of a user's consent history: the whole record as it was
// set, when and by whom.
type ConsentReceipt struct {
	Consent
	Actor Actor `json:"actor"`
}

// ConsentRecord is a stored consent version: the receipt sealed under its owner's key.
type ConsentRecord struct {
	User       string
	Version    int
	Created    time.Time
	Ciphertext []byte
}

// ConsentStore keeps the append-only history of users' consent receipts, encrypted.
type ConsentStore interface {
	// AppendConsent stores r if the user's latest version is r.Version-1 (compare-and-set,
	// so two concurrent changes cannot both win). It returns an *Error with code ECONFLICT
	// when another version got there first.
	AppendConsent(ctx context.Context, r ConsentRecord) error

	// LatestConsent returns the user's newest record, or an *Error with code ENOTFOUND
	// when the user never answered.
	LatestConsent(ctx context.Context, user string) (ConsentRecord, error)

	// ConsentHistory returns every record of the user, oldest first.
	ConsentHistory(ctx context.Context, user string) ([]ConsentRecord, error)
}
