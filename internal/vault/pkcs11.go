//go:build cgo

package vault

import (
	"errors"
	"fmt"

	"github.com/ThalesGroup/crypto11"
)

// openPKCS11 opens (creating on first use) an AES-256 key in a PKCS #11 token. Wraps and
// unwraps run inside the HSM with CKM_AES_GCM.
func openPKCS11(uri string) (KEK, error) {
	p, err := parsePKCS11(uri)
	if err != nil {
		return nil, err
	}
	ctx, err := crypto11.Configure(&crypto11.Config{Path: p.module, TokenLabel: p.token, Pin: p.pin})
	if err != nil {
		return nil, fmt.Errorf("pkcs11 %s: %w", p.token, err)
	}
	var key *crypto11.SecretKey
	found, err := ctx.FindKeys(nil, []byte(p.object))
	switch {
	case err != nil:
	case len(found) > 1:
		err = errors.New("several keys have this label")
	case len(found) == 1:
		key = found[0]
	default:
		key, err = ctx.GenerateSecretKeyWithLabel([]byte(p.object), []byte(p.object), 256, crypto11.CipherAES)
	}
	if err != nil {
		ctx.Close()
		return nil, fmt.Errorf("pkcs11 key %s: %w", p.object, err)
	}
	gcm, err := key.NewGCM()
	if err != nil {
		ctx.Close()
		return nil, fmt.Errorf("pkcs11 key %s: %w", p.object, err)
	}
	return &gcmKEK{aead: gcm, id: pkcs11ID(p), close: ctx.Close}, nil
}
