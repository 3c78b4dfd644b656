package vault

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/pulsebase/pulsebase"
)

// systemSecretReserved is the name prefix of the processing tier's raw secrets, which share
// the rawPrefix namespace with system secrets; SystemSecret refuses it so that no caller can
// read or shadow a processing key by naming it.
const systemSecretReserved = "processing-"

// SystemSecret returns the deployment secret called name (a raw secret wrapped with the KEK
// and kept in the database under SystemOwner), creating it with create on first use.
// Concurrent first uses in several processes agree on one secret: the loser of the create
// race reads the winner's.
//
// Secrets live under rawPrefix, so RotateKEK re-wraps them like the processing keys. Every
// call reads the store and unwraps; callers that need the secret often keep what they built
// from it (a signing key, say) rather than calling again.
func (v *Vault) SystemSecret(ctx context.Context, name string, create func() ([]byte, error)) ([]byte, error) {
	if name == "" || strings.ContainsRune(name, 0) || strings.HasPrefix(name, systemSecretReserved) {
		return nil, fmt.Errorf("system secret %q: bad or reserved name", name)
	}
	full := rawPrefix + name
	wk, err := v.store.WrappedKey(ctx, SystemOwner, full)
	if pulsebase.ErrorCode(err) == pulsebase.ENOTFOUND {
		secret, err := create()
		if err != nil {
			return nil, fmt.Errorf("create system secret %s: %w", name, err)
		}
		if len(secret) == 0 {
			// An empty secret is always a bug in create, and storing one would make it
			// permanent for the deployment.
			return nil, errors.New("create system secret " + name + ": empty secret")
		}
		nk, err := v.wrapRaw(ctx, full, secret)
		if err != nil {
			return nil, err
		}
		// CreateWrappedKey returns the row that won: ours, or another process's created
		// between our read and our insert. Unwrapping what it returns (rather than
		// returning secret) is what makes racing first uses agree.
		if wk, err = v.store.CreateWrappedKey(ctx, nk); err != nil {
			return nil, fmt.Errorf("store system secret %s: %w", name, err)
		}
		if string(wk.Ciphertext) == string(nk.Ciphertext) {
			return secret, nil
		}
	} else if err != nil {
		return nil, fmt.Errorf("load system secret %s: %w", name, err)
	}
	b, err := v.unwrapRaw(ctx, wk)
	if err != nil {
		return nil, fmt.Errorf("system secret %s: %w", name, err)
	}
	return b, nil
}
