//go:build !unix

package client

import (
	"fmt"
	"os"
)

// lockFile opens (creating) path. Where flock does not exist, two processes opening the
// same queue are not detected: a device runs one app process per queue.
func lockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("pulsebase: open queue: %w", err)
	}
	return f, nil
}
