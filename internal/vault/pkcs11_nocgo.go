//go:build !cgo

package vault

import "errors"

func openPKCS11(string) (KEK, error) {
	return nil, errors.New("pkcs11: this binary was built without cgo, which PKCS #11 needs (build with CGO_ENABLED=1)")
}
