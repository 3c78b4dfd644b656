package vault

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/insecurecleartextkeyset"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/tink"
)

// KEK is a key-encryption key: it wraps and unwraps data keys and nothing else. ID names
// the key (not its material) so a stored wrapped key says which KEK can open it.
type KEK interface {
	tink.AEAD
	ID() string
}

// LocalKEK is a KEK kept in a file of the data directory: a Tink AES-256-GCM keyset in the
// clear, readable by the owner only. It is the embedded default; a KMS or HSM keeps the KEK
// out of the process in deployments that need it.
type LocalKEK struct {
	tink.AEAD
	id string
}

// ID returns "local:" followed by a fingerprint of the keyset's public info (key ids), never
// of key material.
func (k *LocalKEK) ID() string { return k.id }

// OpenLocalKEK loads the KEK at path, creating it (mode 0600, parent 0700) on first start. A
// file that is readable or writable by group or others is refused: the key would not be
// secret any more.
func OpenLocalKEK(path string) (*LocalKEK, error) {
	h, err := readKeysetFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		h, err = createKeysetFile(path)
		if errors.Is(err, fs.ErrExist) { // another process created it first
			h, err = readKeysetFile(path)
		}
	}
	if err != nil {
		return nil, err
	}
	a, err := aead.New(h)
	if err != nil {
		return nil, fmt.Errorf("kek %s: %w", path, err)
	}
	sum := sha256.Sum256([]byte(h.KeysetInfo().String()))
	return &LocalKEK{AEAD: a, id: "local:" + hex.EncodeToString(sum[:8])}, nil
}

func readKeysetFile(path string) (*keyset.Handle, error) {
	if err := CheckPrivateFile(path); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	h, err := insecurecleartextkeyset.Read(keyset.NewJSONReader(bytes.NewReader(b)))
	if err != nil {
		return nil, fmt.Errorf("read kek %s: %w", path, err)
	}
	return h, nil
}

func createKeysetFile(path string) (*keyset.Handle, error) {
	h, err := keyset.NewHandle(aead.AES256GCMKeyTemplate())
	if err != nil {
		return nil, fmt.Errorf("new kek: %w", err)
	}
	var buf bytes.Buffer
	if err := insecurecleartextkeyset.Write(h, keyset.NewJSONWriter(&buf)); err != nil {
		return nil, fmt.Errorf("encode kek: %w", err)
	}
	if err := WritePrivateFile(path, buf.Bytes()); err != nil {
		return nil, err
	}
	return h, nil
}

// CheckPrivateFile returns an error if path is accessible by group or others.
func CheckPrivateFile(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("key file %s has mode %#o: it must be readable by its owner only (chmod 600)", path, perm)
	}
	return nil
}

// WritePrivateFile creates path with mode 0600 (its directory 0700) and writes b to it,
// failing if the file exists so that a key is never overwritten. The data is synced before
// the file is renamed into place, so a crash leaves either no file or a whole one.
func WritePrivateFile(path string, b []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	tmp, err := os.CreateTemp(dir, ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	// Link rather than rename: it fails when path already exists (a concurrent creator won).
	if err := os.Link(tmp.Name(), path); err != nil {
		return fmt.Errorf("install %s: %w", path, err)
	}
	return nil
}
