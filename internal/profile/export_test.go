package profile

import "testing"

// SetMaxOpsBytes makes n bytes of ops JSON the most one change message carries until t
// ends. Tests using it must not run in parallel.
func SetMaxOpsBytes(t *testing.T, n int) {
	old := maxOpsBytes
	maxOpsBytes = n
	t.Cleanup(func() { maxOpsBytes = old })
}
