package vault

import (
	"context"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/tink-crypto/tink-go-gcpkms/v2/integration/gcpkms"
	"github.com/tink-crypto/tink-go-hcvault/v2/integration/hcvault"
	"github.com/tink-crypto/tink-go/v2/tink"
)

// DefaultKEKURI is the KEK of the embedded default: a key file in the data directory.
const DefaultKEKURI = "local://keys/kek.json"

// OpenKEK opens the key-encryption key a URI names:
//
//   - local://PATH — a Tink keyset file (0600); a relative PATH is under dataDir.
//   - pkcs11://TOKEN/OBJECT?module=LIB&pin-env=VAR (or pin-file=PATH) — an AES-256 key in
//     a PKCS #11 hardware security module, created on first use; the key never leaves the
//     HSM, which computes every wrap and unwrap.
//   - hcvault://HOST[:PORT]/transit/keys/NAME — a HashiCorp Vault transit key, through
//     Tink's Vault client; the token comes from VAULT_TOKEN.
//   - gcp-kms://projects/…/cryptoKeys/NAME — a Google Cloud KMS key, through Tink's GCP
//     client with application default credentials.
//
// URIs name keys, never hold secrets: they are stored in the KEK registry.
func OpenKEK(ctx context.Context, uri, dataDir string) (KEK, error) {
	scheme, rest, ok := strings.Cut(uri, "://")
	if !ok {
		return nil, fmt.Errorf("kek uri %q: want SCHEME://…", redact(uri))
	}
	switch scheme {
	case "local":
		path := rest
		if !filepath.IsAbs(path) {
			path = filepath.Join(dataDir, path)
		}
		return OpenLocalKEK(path)
	case "pkcs11":
		return openPKCS11(uri)
	case "hcvault":
		client, err := hcvault.NewClient(uri, nil, os.Getenv("VAULT_TOKEN"))
		if err != nil {
			return nil, fmt.Errorf("vault transit client: %w", err)
		}
		a, err := client.GetAEAD(uri)
		if err != nil {
			return nil, fmt.Errorf("vault transit key: %w", err)
		}
		return &remoteKEK{AEAD: a, id: "hcvault:" + rest}, nil
	case "gcp-kms":
		client, err := gcpkms.NewClientWithOptions(ctx, uri)
		if err != nil {
			return nil, fmt.Errorf("gcp kms client: %w", err)
		}
		a, err := client.GetAEAD(uri)
		if err != nil {
			return nil, fmt.Errorf("gcp kms key: %w", err)
		}
		return &remoteKEK{AEAD: a, id: "gcp-kms:" + rest}, nil
	default:
		return nil, fmt.Errorf("kek uri: unknown scheme %q (want local, pkcs11, hcvault or gcp-kms)", scheme)
	}
}

// redact drops the query of a URI, where a careless operator might have put a PIN.
func redact(uri string) string {
	if i := strings.IndexByte(uri, '?'); i >= 0 {
		return uri[:i] + "?…"
	}
	return uri
}

// remoteKEK is a KEK held by a key-management service; every wrap and unwrap is a call to it.
type remoteKEK struct {
	tink.AEAD
	id string
}

func (k *remoteKEK) ID() string { return k.id }

// gcmKEK turns a cipher.AEAD whose key lives in an HSM into a KEK: a random nonce is
// prepended to each ciphertext.
type gcmKEK struct {
	aead  cipher.AEAD
	id    string
	close func() error
}

func (k *gcmKEK) ID() string { return k.id }

func (k *gcmKEK) Encrypt(plaintext, ad []byte) ([]byte, error) {
	nonce := make([]byte, k.aead.NonceSize(), k.aead.NonceSize()+len(plaintext)+k.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return k.aead.Seal(nonce, nonce, plaintext, ad), nil
}

func (k *gcmKEK) Decrypt(ciphertext, ad []byte) ([]byte, error) {
	n := k.aead.NonceSize()
	if len(ciphertext) < n+k.aead.Overhead() {
		return nil, errors.New("kek: ciphertext too short")
	}
	return k.aead.Open(nil, ciphertext[:n], ciphertext[n:], ad)
}

// Close releases the HSM session.
func (k *gcmKEK) Close() error { return k.close() }

// pkcs11Params are the parts of a pkcs11:// URI.
type pkcs11Params struct {
	module, token, object, pin string
}

func parsePKCS11(uri string) (pkcs11Params, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return pkcs11Params{}, fmt.Errorf("pkcs11 uri: %w", err)
	}
	q := u.Query()
	p := pkcs11Params{module: q.Get("module"), token: u.Host, object: strings.TrimPrefix(u.Path, "/")}
	if q.Has("pin-value") || q.Has("pin") {
		return p, errors.New("pkcs11 uri: give the PIN with pin-env=VAR or pin-file=PATH, never in the URI (it is stored in the KEK registry)")
	}
	switch {
	case q.Get("pin-env") != "":
		p.pin = os.Getenv(q.Get("pin-env"))
	case q.Get("pin-file") != "":
		if err := CheckPrivateFile(q.Get("pin-file")); err != nil {
			return p, err
		}
		b, err := os.ReadFile(q.Get("pin-file"))
		if err != nil {
			return p, fmt.Errorf("pkcs11 pin file: %w", err)
		}
		p.pin = strings.TrimSpace(string(b))
	}
	switch {
	case p.module == "":
		return p, errors.New("pkcs11 uri: module=PATH of the PKCS #11 library is required")
	case p.token == "" || p.object == "":
		return p, errors.New("pkcs11 uri: want pkcs11://TOKEN-LABEL/KEY-LABEL?module=…")
	case p.pin == "":
		return p, errors.New("pkcs11 uri: no PIN (pin-env or pin-file is empty or missing)")
	}
	return p, nil
}

// pkcs11ID names an HSM key by token and label (not by module path, which differs
// between machines).
func pkcs11ID(p pkcs11Params) string {
	sum := sha256.Sum256([]byte(p.token + "\x00" + p.object))
	return "pkcs11:" + p.token + "/" + p.object + ":" + hex.EncodeToString(sum[:4])
}
