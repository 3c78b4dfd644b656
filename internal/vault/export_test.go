package vault

import "github.com/tink-crypto/tink-go/v2/tink"

// SetAEADForBenchmark replaces the AEAD of user's cached keys. Only benchmarks use it, to
// measure what encryption costs; there is no product flag that turns encryption off.
func (v *Vault) SetAEADForBenchmark(user string, a tink.AEAD) {
	if k, ok := v.cache.Get(user); ok {
		k.aead = a
	}
}
