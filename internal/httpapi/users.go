package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/vault"
)

// Users maps the external subjects of tokens to internal pseudonymous users, creating a
// user on first sight. The mapping is immutable once made, so it is cached.
type Users struct {
	store pulsebase.UserStore
	vault *vault.Vault
	cache *expirable.LRU[string, pulsebase.User]
}

// NewUsers returns a resolver over store, hashing subjects with the vault's index key.
func NewUsers(store pulsebase.UserStore, v *vault.Vault) *Users {
	return &Users{store: store, vault: v, cache: expirable.NewLRU[string, pulsebase.User](100_000, nil, time.Hour)}
}

// Resolve returns the user whose external subject is sub, creating it if needed.
func (u *Users) Resolve(ctx context.Context, sub string) (pulsebase.User, error) {
	if usr, ok := u.cache.Get(sub); ok {
		return usr, nil
	}
	h, err := u.vault.SubjectHash(sub)
	if err != nil {
		return pulsebase.User{}, fmt.Errorf("subject hash: %w", err)
	}
	usr, _, err := u.store.EnsureUser(ctx, h, NewUserID(), time.Now().UTC())
	if err != nil {
		return pulsebase.User{}, fmt.Errorf("ensure user: %w", err)
	}
	u.cache.Add(sub, usr)
	return usr, nil
}

var userIDEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// NewUserID returns a random internal user id: "u" and 26 base32 characters (128 bits). It
// carries nothing about the person and is safe in broker subjects.
func NewUserID() string {
	var b [16]byte
	rand.Read(b[:])
	return "u" + userIDEncoding.EncodeToString(b[:])
}
