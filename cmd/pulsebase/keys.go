package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"
	"time"

	"github.com/pulsebase/pulsebase/internal/broker"
	"github.com/pulsebase/pulsebase/internal/httpapi"
	"github.com/pulsebase/pulsebase/internal/vault"
)

const keysUsage = `Usage: pulsebase keys <command> [flags]

Key management. Each command works on the deployment's store and key-encryption keys
directly, with the server running or not, and is recorded in the key event log (who, when,
which keys; never key material).

Commands:
  rotate-kek          re-wrap every key under a new key-encryption key (resumable)
  rotate-user         add a new primary data-key version for one user
  rotate-processing   make a new HPKE key pair current for sealed samples
  events              print the key event log
`

func runKeys(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, keysUsage)
		if len(args) == 0 {
			return &usageError{"keys: no command given"}
		}
		return nil
	}
	cmd, rest := args[0], args[1:]
	fs := flag.NewFlagSet("keys "+cmd, flag.ContinueOnError)
	var kc keysConfig
	kc.flags(fs)
	var to, subject, userID string
	var grace time.Duration
	var synopsis string
	switch cmd {
	case "rotate-kek":
		fs.StringVar(&to, "to", "", "URI of the new key-encryption key (required; see serve --help for the schemes)")
		synopsis = "Usage: pulsebase keys rotate-kek --to URI [flags]\n\nRe-wraps every user and system key under the KEK at URI and makes it primary, while\nservers keep running. Interrupted, it resumes where it stopped when run again."
	case "rotate-user":
		fs.StringVar(&subject, "user", "", "the user's external subject (as for pulsebase token)")
		fs.StringVar(&userID, "user-id", "", "the user's internal id, instead of --user")
		synopsis = "Usage: pulsebase keys rotate-user --user NAME | --user-id ID [flags]\n\nAdds a new primary version to the user's data key: new data is sealed with it, older\ndata stays readable."
	case "rotate-processing":
		fs.DurationVar(&grace, "grace", 24*time.Hour, "how long batches sealed to the previous key are still accepted")
		synopsis = "Usage: pulsebase keys rotate-processing [--grace 24h] [flags]\n\nMakes a new HPKE key pair current for sealed samples."
	case "events":
		synopsis = "Usage: pulsebase keys events [flags]\n\nPrints the key event log, oldest first."
	default:
		fmt.Fprint(stderr, keysUsage)
		msg := fmt.Sprintf("keys: unknown command %q", cmd)
		fmt.Fprintln(stderr, "pulsebase:", msg)
		return &usageError{msg}
	}
	fs.Usage = usageFunc(fs, synopsis)
	if err := parseFlags(fs, rest, getenv, stderr); err != nil {
		return err
	}
	switch {
	case cmd == "rotate-kek" && to == "":
		return usageErr(fs, "--to is required")
	case cmd == "rotate-user" && (subject == "") == (userID == ""):
		return usageErr(fs, "give exactly one of --user and --user-id")
	case cmd == "rotate-processing" && grace < 0:
		return usageErr(fs, "--grace must not be negative")
	}

	store, err := openStore(ctx, Config{DataDir: kc.dataDir, DatabaseURL: kc.databaseURL})
	if err != nil {
		return err
	}
	defer store.Close()
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	v, err := vault.Open(ctx, store, vault.Config{KEKURI: kc.kekURI, DataDir: kc.dataDir, Log: log})
	if err != nil {
		return fmt.Errorf("open vault: %w", err)
	}
	if kc.natsURL != "" {
		// Tell running servers at once; without a broker they notice within their
		// key cache TTL (or at the first ciphertext their cached keys cannot open).
		brk, err := broker.Open(ctx, broker.Config{URL: kc.natsURL}, log)
		if err != nil {
			return fmt.Errorf("connect to broker: %w", err)
		}
		defer brk.Close()
		if err := v.AttachBroker(ctx, brk.JetStream(), 1); err != nil {
			return err
		}
	}
	actor := cliActor()

	switch cmd {
	case "rotate-kek":
		res, err := v.RotateKEK(ctx, to, actor, func(done int) { fmt.Fprintf(stdout, "progress: %d keys\n", done) })
		if err != nil {
			return fmt.Errorf("rotate kek: %w (run the command again to resume)", err)
		}
		fmt.Fprintf(stdout, "rotated: %d keys re-wrapped, %d already moved; primary kek %s; retired %v\n", res.Rewrapped, res.Skipped, res.To, res.From)
	case "rotate-user":
		if userID == "" {
			h, err := v.SubjectHash(subject)
			if err != nil {
				return err
			}
			u, created, err := store.EnsureUser(ctx, h, httpapi.NewUserID(), time.Now().UTC())
			if err != nil {
				return err
			}
			if created {
				fmt.Fprintln(stderr, "pulsebase: note: that user did not exist yet and was created")
			}
			userID = u.ID
		}
		id, err := v.RotateUser(ctx, userID, actor)
		if err != nil {
			return fmt.Errorf("rotate user key: %w", err)
		}
		fmt.Fprintf(stdout, "rotated: user %s has primary key version %d\n", userID, id)
	case "rotate-processing":
		k, err := v.RotateProcessingKey(ctx, grace, actor)
		if err != nil {
			return fmt.Errorf("rotate processing key: %w", err)
		}
		fmt.Fprintf(stdout, "rotated: processing key %s is current; previous keys accepted for %s\n", k.KeyID, grace)
	case "events":
		evs, err := store.KeyEvents(ctx)
		if err != nil {
			return err
		}
		for _, e := range evs {
			fmt.Fprintf(stdout, "%d\t%s\t%s\t%s\t%s\n", e.Seq, e.At.Format(time.RFC3339), e.Actor, e.Action, e.Detail)
		}
	}
	return nil
}

// keysConfig locates a deployment's store and KEK, as serve does.
type keysConfig struct {
	dataDir, databaseURL, kekURI, natsURL string
}

func (k *keysConfig) flags(fs *flag.FlagSet) {
	fs.StringVar(&k.dataDir, "data-dir", defaultDataDir, "the deployment's data directory (keys, SQLite database)")
	fs.StringVar(&k.databaseURL, "database-url", "", "postgres://… when the deployment uses PostgreSQL")
	fs.StringVar(&k.kekURI, "kek-uri", vault.DefaultKEKURI, "a key-encryption key the deployment has registered")
	fs.StringVar(&k.natsURL, "nats-url", "", "nats://… to tell running servers of the change at once")
}

// cliActor names who ran a keys command, for the key event log.
func cliActor() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	return "cli:" + name + "@" + host
}
