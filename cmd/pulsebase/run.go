package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// usageError is a mistake in how the command was called: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

const topUsage = `Pulsebase: the backend personalized wellness apps run on.

Usage:
  pulsebase <command> [flags]

Commands:
  serve     run the server (HTTP API, embedded broker and store by default)
  token     mint a bearer token from the built-in issuer's key
  keys      key management: rotate-kek, rotate-user, rotate-processing, events
  bench     load-test ingest and sync delivery (in-process or a server; broker baseline; chart)
  simulate  feed a server a seeded synthetic population through the SDK (HTTP and sync)
  reprocess rebuild derived data from the retained sample stream, while the server runs
  replay    replay a public data export (Fitbit) into a server as its users' apps would
  rules     check a recommendation rule library offline, or print one
  version   print the version

Run 'pulsebase <command> --help' for a command's flags. Every flag has a PULSEBASE_*
environment twin (--http-addr ↔ PULSEBASE_HTTP_ADDR); a flag on the command line wins.
Exit codes: 0 ok, 1 runtime failure, 2 bad usage.
`

// run is the whole program: it takes the OS pieces as arguments so that tests can call it.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, topUsage)
		return &usageError{"no command given"}
	}
	err := dispatch(ctx, args[0], args[1:], getenv, stdout, stderr)
	if errors.Is(err, errHelp) {
		return nil // --help was asked for and printed
	}
	return err
}

func dispatch(ctx context.Context, cmd string, rest []string, getenv func(string) string, stdout, stderr io.Writer) error {
	switch cmd {
	case "serve":
		return runServe(ctx, rest, getenv, stdout, stderr)
	case "token":
		return runToken(rest, getenv, stdout, stderr)
	case "keys":
		return runKeys(ctx, rest, getenv, stdout, stderr)
	case "bench":
		return runBench(ctx, rest, getenv, stdout, stderr)
	case "simulate":
		return runSimulate(ctx, rest, getenv, stdout, stderr)
	case "reprocess":
		return runReprocess(ctx, rest, getenv, stdout, stderr)
	case "replay":
		return runReplay(ctx, rest, getenv, stdout, stderr)
	case "rules":
		return runRules(rest, getenv, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "pulsebase", version)
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, topUsage)
		return nil
	default:
		fmt.Fprint(stderr, topUsage)
		msg := fmt.Sprintf("unknown command %q", cmd)
		fmt.Fprintln(stderr, "pulsebase:", msg)
		return &usageError{msg}
	}
}

// parseFlags parses args into fs, then fills every flag not given on the command line from
// its PULSEBASE_* environment twin. --help prints the usage and returns errHelp.
func parseFlags(fs *flag.FlagSet, args []string, getenv func(string) string, stderr io.Writer) error {
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return &usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		fs.Usage()
		msg := fmt.Sprintf("unexpected argument %q", fs.Arg(0))
		fmt.Fprintln(stderr, "pulsebase:", msg)
		return &usageError{msg}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		name := envName(f.Name)
		if v := getenv(name); v != "" {
			if e := fs.Set(f.Name, v); e != nil {
				err = &usageError{fmt.Sprintf("invalid value %q for %s: %v", v, name, e)}
			}
		}
	})
	if err != nil {
		fmt.Fprintln(stderr, "pulsebase:", err)
	}
	return err
}

// errHelp means --help was asked for and printed: run returns nil for it (exit 0).
var errHelp = errors.New("help requested")

// envName is the environment twin of a flag: --http-addr ↔ PULSEBASE_HTTP_ADDR.
func envName(flagName string) string {
	return "PULSEBASE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// usageFunc prints a command's synopsis and its flags with their environment twins.
func usageFunc(fs *flag.FlagSet, synopsis string) func() {
	return func() {
		w := fs.Output()
		fmt.Fprintf(w, "%s\n\nFlags:\n", synopsis)
		fs.VisitAll(func(f *flag.Flag) {
			name, usage := flag.UnquoteUsage(f)
			fmt.Fprintf(w, "  --%s %s\n    \t%s", f.Name, name, strings.ReplaceAll(usage, "\n", "\n    \t"))
			if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "[]" {
				fmt.Fprintf(w, " (default %s)", f.DefValue)
			}
			fmt.Fprintf(w, " [$%s]\n", envName(f.Name))
		})
	}
}
