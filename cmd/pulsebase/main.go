// Command pulsebase is the Pulsebase server and its tools: serve, token, keys, bench,
// simulate, replay, reprocess, rules and version.
//
// main only hands the OS to run, so that tests drive the very same code through run().
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err))
}

// exitCode maps run's error to the documented exit codes: 0 ok, 1 runtime failure, 2 bad
// usage. A usage error has already been explained on stderr by run.
func exitCode(err error) int {
	var ue *usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		return 2
	default:
		fmt.Fprintln(os.Stderr, "pulsebase:", err)
		return 1
	}
}
