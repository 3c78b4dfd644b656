package vault

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/keyset"

	"github.com/pulsebase/pulsebase"
)

// RotationResult counts what a KEK rotation did.
type RotationResult struct {
	From      []string // KEK ids keys were moved off
	To        string   // the new primary KEK id
	Rewrapped int      // keys re-wrapped by this run
	Skipped   int      // keys another writer had already moved
}

// rotatePage is how many wrapped keys a rotation reads at a time.
const rotatePage = 500

// RotateKEK re-wraps every wrapped key under the KEK at toURI and makes it the primary one,
// while servers keep running: the new KEK is registered and made primary first (so servers
// wrap new keys with it within one registry refresh), then every key still wrapped by
// another KEK is unwrapped and re-wrapped in memory and replaced with a compare-and-set,
// and finally the old KEKs leave the registry. Data keys themselves do not change, so no
// data is re-encrypted and nothing in plaintext touches a disk.
//
// It is resumable: run again after an interruption, it continues where the last run
// stopped (keys already moved are no longer wrapped by an old KEK). progress, if not nil,
// is called after each page with the keys done so far.
func (v *Vault) RotateKEK(ctx context.Context, toURI, actor string, progress func(done int)) (RotationResult, error) {
	var res RotationResult
	to, err := OpenKEK(ctx, toURI, v.cfg.DataDir)
	if err != nil {
		return res, fmt.Errorf("open new kek: %w", err)
	}
	res.To = to.ID()
	v.mu.Lock()
	if _, ok := v.keks[to.ID()]; !ok {
		v.keks[to.ID()] = to
	}
	v.mu.Unlock()
	if err := v.store.RegisterKEK(ctx, pulsebase.KEKInfo{ID: to.ID(), URI: toURI, Created: time.Now().UTC()}); err != nil {
		return res, fmt.Errorf("register new kek: %w", err)
	}
	if err := v.keyEvent(ctx, actor, "kek.rotate.start", map[string]any{"to": to.ID()}); err != nil {
		return res, err
	}
	if err := v.store.SetPrimaryKEK(ctx, to.ID()); err != nil {
		return res, fmt.Errorf("make new kek primary: %w", err)
	}
	v.mu.Lock()
	v.primary = to.ID()
	v.mu.Unlock()
	// Let running servers notice the new primary before the sweep, so few keys are
	// created under an old KEK behind it (the final count catches any that are).
	select {
	case <-time.After(2 * v.cfg.RegistryRefresh):
	case <-ctx.Done():
		return res, ctx.Err()
	}

	for pass := 0; ; pass++ {
		infos, err := v.store.KEKs(ctx)
		if err != nil {
			return res, err
		}
		remaining := 0
		for _, info := range infos {
			if info.ID == to.ID() {
				continue
			}
			n, err := v.rewrapAll(ctx, info.ID, to, &res, progress)
			if err != nil {
				return res, err
			}
			remaining += n
		}
		counts, err := v.store.CountWrappedKeys(ctx)
		if err != nil {
			return res, err
		}
		left := 0
		for id, n := range counts {
			if id != to.ID() {
				left += n
			}
		}
		if left == 0 {
			break
		}
		if pass == 10 {
			return res, fmt.Errorf("%d keys are still wrapped by an old kek after %d passes: is a server still using it as primary?", left, pass+1)
		}
	}
	infos, err := v.store.KEKs(ctx)
	if err != nil {
		return res, err
	}
	for _, info := range infos {
		if info.ID != to.ID() {
			if err := v.store.RemoveKEK(ctx, info.ID); err != nil {
				return res, fmt.Errorf("retire kek %s: %w", info.ID, err)
			}
			res.From = append(res.From, info.ID)
		}
	}
	err = v.keyEvent(ctx, actor, "kek.rotate.done", map[string]any{
		"to": to.ID(), "from": res.From, "rewrapped": res.Rewrapped, "skipped": res.Skipped,
	})
	return res, err
}

// rewrapAll moves every key wrapped by kekID to to, page by page.
func (v *Vault) rewrapAll(ctx context.Context, kekID string, to KEK, res *RotationResult, progress func(int)) (int, error) {
	seen := 0
	afterOwner, afterName := "", ""
	for {
		page, err := v.store.WrappedKeysByKEK(ctx, kekID, afterOwner, afterName, rotatePage)
		if err != nil {
			return seen, fmt.Errorf("list keys of kek %s: %w", kekID, err)
		}
		for _, wk := range page {
			nk, err := v.rewrap(ctx, wk, to)
			if err != nil {
				return seen, err
			}
			nk.Created = wk.Created
			switch err := v.store.UpdateWrappedKey(ctx, nk, wk); pulsebase.ErrorCode(err) {
			case "":
				res.Rewrapped++
			case pulsebase.ECONFLICT, pulsebase.ENOTFOUND, pulsebase.EERASED:
				res.Skipped++ // moved, rotated or erased by someone else meanwhile
			default:
				return seen, fmt.Errorf("re-wrap %s key of %s: %w", wk.Name, wk.Owner, err)
			}
			seen++
		}
		if progress != nil && len(page) > 0 {
			progress(res.Rewrapped + res.Skipped)
		}
		if len(page) < rotatePage {
			return seen, nil
		}
		last := page[len(page)-1]
		afterOwner, afterName = last.Owner, last.Name
	}
}

// rewrap unwraps wk and wraps it again under to, in memory. Raw secrets (the processing
// tier's, named rawPrefix…) are not Tink keysets and are wrapped as they are.
func (v *Vault) rewrap(ctx context.Context, wk pulsebase.WrappedKey, to KEK) (pulsebase.WrappedKey, error) {
	if strings.HasPrefix(wk.Name, rawPrefix) {
		b, err := v.unwrapRaw(ctx, wk)
		if err != nil {
			return pulsebase.WrappedKey{}, err
		}
		return wrapRawWith(to, wk.Owner, wk.Name, b)
	}
	h, err := v.unwrap(ctx, wk)
	if err != nil {
		return pulsebase.WrappedKey{}, err
	}
	return wrapWith(to, wk.Owner, wk.Name, h)
}

// RotateUser adds a new primary key version to user's data keyset: new writes use it,
// data written before stays readable with the older versions it keeps. Other processes
// drop their cached copy at once through the generations bucket (or, without one, on the
// first ciphertext their copy cannot open).
func (v *Vault) RotateUser(ctx context.Context, user, actor string) (keyID uint32, err error) {
	for attempt := 0; attempt < 5; attempt++ {
		wk, err := v.store.WrappedKey(ctx, user, keyData)
		if err != nil {
			return 0, fmt.Errorf("load data key: %w", err)
		}
		h, err := v.unwrap(ctx, wk)
		if err != nil {
			return 0, err
		}
		m := keyset.NewManagerFromHandle(h)
		id, err := m.Add(aead.AES256GCMKeyTemplate())
		if err != nil {
			return 0, fmt.Errorf("add key version: %w", err)
		}
		if err := m.SetPrimary(id); err != nil {
			return 0, fmt.Errorf("set primary key version: %w", err)
		}
		nh, err := m.Handle()
		if err != nil {
			return 0, err
		}
		nk, err := v.wrap(ctx, user, keyData, nh)
		if err != nil {
			return 0, err
		}
		nk.Created = wk.Created
		err = v.store.UpdateWrappedKey(ctx, nk, wk)
		if pulsebase.ErrorCode(err) == pulsebase.ECONFLICT {
			continue // a concurrent rotation or re-wrap won: start from its result
		}
		if err != nil {
			return 0, fmt.Errorf("store rotated key: %w", err)
		}
		v.announce(ctx, user)
		return id, v.keyEvent(ctx, actor, "user.rotate", map[string]any{
			"user": user, "key_version": id, "versions": nh.Len(),
		})
	}
	return 0, pulsebase.Errorf(pulsebase.ECONFLICT, "the key kept changing during rotation; try again")
}

// DestroyUserKey crypto-shreds user: every wrapped copy of the user's keys is deleted (a
// tombstone stays so that no new key is made for them) and every process drops its cached
// copy. Afterwards all of the user's ciphertext, in the stream, the store and backups,
// is unreadable, and reads return an *Error with code EERASED.
func (v *Vault) DestroyUserKey(ctx context.Context, user, actor string) error {
	if user == "" || user == SystemOwner {
		return pulsebase.Errorf(pulsebase.EINVALID, "not a user")
	}
	if err := v.store.EraseKeys(ctx, user, time.Now().UTC()); err != nil {
		return fmt.Errorf("erase keys: %w", err)
	}
	v.announce(ctx, user)
	return v.keyEvent(ctx, actor, "user.erase", map[string]any{"user": user})
}
