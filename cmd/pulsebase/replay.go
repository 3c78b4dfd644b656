package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/auth"
	"github.com/pulsebase/pulsebase/internal/sim"
)

// replayTokenTTL is the lifetime of the tokens a replay mints; a longer replay mints new
// ones when the server answers 401.
const replayTokenTTL = 24 * time.Hour

// replayConfig is every setting of `pulsebase replay`.
type replayConfig struct {
	Format      string
	Dir         string // the export's directory (the one argument)
	Server      string
	DataDir     string
	Zone        string
	Users       string // comma-separated Fitbit Ids; "" means all
	From, To    string // local dates, YYYY-MM-DD, inclusive; "" means unbounded
	Speed       float64
	Fast        bool // --as-fast-as-possible
	Batch       int
	Concurrency int
	Timeout     time.Duration
	JSON        string // file for the JSON report; "" means none

	zone *time.Location
}

func (c *replayConfig) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.Format, "format", "", "the export's `FORMAT`: fitbit (the Fitabase export of Fitbit data, as on Kaggle)")
	fs.StringVar(&c.Server, "server", "http://127.0.0.1:8080", "base `URL` of the server")
	fs.StringVar(&c.DataDir, "data-dir", defaultDataDir, "the server's data directory `DIR`, whose issuer key signs the users' tokens")
	fs.StringVar(&c.Zone, "zone", "", "IANA time `ZONE` the export's naive local times are in (required), e.g. America/Chicago")
	fs.StringVar(&c.Users, "users", "", "comma-separated Fitbit `IDS` to replay (default every user)")
	fs.StringVar(&c.From, "from", "", "first local `DATE` to replay, YYYY-MM-DD (default the first of the export)")
	fs.StringVar(&c.To, "to", "", "last local `DATE` to replay, YYYY-MM-DD, inclusive (default the last of the export)")
	fs.Float64Var(&c.Speed, "speed", 0, "replay in the data's time order `X` times faster than real time (3600: an hour a second)")
	fs.BoolVar(&c.Fast, "as-fast-as-possible", false, "send every user's samples back to back, as fast as the server accepts them")
	fs.IntVar(&c.Batch, "batch", sim.MaxReplayBatch, "most samples per request (1..5000)")
	fs.IntVar(&c.Concurrency, "concurrency", 4, "users sending at once")
	fs.DurationVar(&c.Timeout, "timeout", 30*time.Second, "how long one request may take")
	fs.StringVar(&c.JSON, "json", "", "also write the report as JSON to `FILE`")
}

func (c *replayConfig) validate() error {
	switch {
	case c.Format == "":
		return errors.New("--format is required (fitbit)")
	case c.Format != "fitbit":
		return fmt.Errorf("--format %q: want fitbit", c.Format)
	case c.Zone == "":
		return errors.New("--zone is required: the export's times have no zone (America/Chicago, say)")
	case c.Speed < 0 || math.IsNaN(c.Speed) || math.IsInf(c.Speed, 0):
		return fmt.Errorf("--speed %g: want more than 0", c.Speed)
	case c.Speed > 0 && c.Fast:
		return errors.New("give --speed or --as-fast-as-possible, not both")
	case c.Speed == 0 && !c.Fast:
		return errors.New("give --speed X or --as-fast-as-possible")
	case c.Batch < 1 || c.Batch > sim.MaxReplayBatch:
		return fmt.Errorf("--batch %d: want 1..%d", c.Batch, sim.MaxReplayBatch)
	case c.Concurrency < 1 || c.Concurrency > 256:
		return fmt.Errorf("--concurrency %d: want 1..256", c.Concurrency)
	case c.Timeout <= 0:
		return fmt.Errorf("--timeout %s: want more than 0", c.Timeout)
	case c.DataDir == "":
		return errors.New("--data-dir must not be empty")
	}
	var err error
	if c.zone, err = pulsebase.LoadZone(c.Zone); err != nil {
		return fmt.Errorf("--zone %q: want an IANA time zone such as America/Chicago", c.Zone)
	}
	u, err := url.Parse(c.Server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--server %q: want http://HOST:PORT", c.Server)
	}
	for _, d := range []struct{ flag, v string }{{"--from", c.From}, {"--to", c.To}} {
		if _, err := time.Parse(time.DateOnly, d.v); d.v != "" && err != nil {
			return fmt.Errorf("%s %q: want YYYY-MM-DD", d.flag, d.v)
		}
	}
	if c.From != "" && c.To != "" && c.From > c.To {
		return fmt.Errorf("--from %s is after --to %s", c.From, c.To)
	}
	for _, id := range c.userList() {
		if id == "" || strings.Trim(id, "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") != "" || len(id) > 64 {
			return fmt.Errorf("--users: %q is not a Fitbit Id", id)
		}
	}
	return nil
}

// userList returns the Ids of --users; nil means every user.
func (c *replayConfig) userList() []string {
	if c.Users == "" {
		return nil
	}
	ids := strings.Split(c.Users, ",")
	for i := range ids {
		ids[i] = strings.TrimSpace(ids[i])
	}
	return ids
}

const replaySynopsis = `Usage: pulsebase replay --format fitbit DIR --zone ZONE [--server URL --data-dir DIR]
                        [--users ID,ID…] [--from DATE] [--to DATE]
                        (--speed X | --as-fast-as-possible) [--batch 5000] [--concurrency 4]
                        [--json FILE]

Replays a public data export as its users' apps would, through the public API: each user
(the external subject fitbit-<Id>, with a token minted from the data directory's issuer
key, as 'pulsebase bench' does) consents to the collection of activity, heart, sleep and
body data for personalization and gets the profile time zone ZONE; then their samples are
posted, each with a stable id, so replaying again sends only duplicates.

The Fitbit export's times are naive local wall-clock strings: --zone says where they were
taken, and every sample carries that zone's offset of the moment (daylight saving time
included) and the zone's name, so that the server's local days are the export's. What
each file becomes is in docs/replay.md.

--speed X sends the samples in the data's time order X times faster than real time, each
when a device would have known it; --as-fast-as-possible sends --concurrency users at
once, back to back. The report counts, per sample type, the samples sent, accepted,
duplicates and rejected, and the samples per second.`

func runReplay(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var cfg replayConfig
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	cfg.flags(fs)
	fs.Usage = usageFunc(fs, replaySynopsis)
	flags, dirs := splitArgs(fs, args)
	if err := parseFlags(fs, flags, getenv, stderr); err != nil {
		return err
	}
	switch len(dirs) {
	case 0:
		return usageErr(fs, "the export's directory is required: pulsebase replay --format fitbit DIR …")
	case 1:
		cfg.Dir = dirs[0]
	default:
		return usageErr(fs, fmt.Sprintf("one export directory, not %d: %q", len(dirs), dirs))
	}
	if err := cfg.validate(); err != nil {
		return usageErr(fs, err.Error())
	}
	return replay(ctx, cfg, stdout, stderr)
}

// splitArgs separates the flags of args from the arguments between or after them, so that
// the directory may come anywhere ("--format fitbit DIR --server URL"). A flag's value is
// the next argument unless the flag is boolean or written --flag=value; "--" ends the
// flags.
func splitArgs(fs *flag.FlagSet, args []string) (flags, rest []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			return flags, append(rest, args[i+1:]...)
		case len(a) < 2 || a[0] != '-':
			rest = append(rest, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") {
			continue
		}
		f := fs.Lookup(name)
		if f == nil {
			continue // parseFlags reports it
		}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			continue
		}
		if i+1 < len(args) {
			i++
			flags = append(flags, args[i])
		}
	}
	return flags, rest
}

// replay loads the export, replays it and reports on stdout (and in cfg.JSON).
func replay(ctx context.Context, cfg replayConfig, stdout, stderr io.Writer) error {
	keyPath := filepath.Join(cfg.DataDir, issuerKeyFile)
	// OpenIssuer would create a key that no server knows: a mistyped --data-dir must fail.
	if _, err := os.Stat(keyPath); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("no token key at %s: --data-dir must be the server's data directory", keyPath)
	}
	iss, err := auth.OpenIssuer(keyPath, auth.DefaultIssuer, auth.DefaultAudience)
	if err != nil {
		return fmt.Errorf("open token key: %w", err)
	}
	load := time.Now()
	x, err := sim.LoadFitbit(cfg.Dir, sim.FitbitOptions{Zone: cfg.zone, Users: cfg.userList(), From: cfg.From, To: cfg.To})
	if err != nil {
		return err
	}
	first, last := x.Span()
	fmt.Fprintf(stderr, "replay: %d samples of %d users from %s to %s, read in %.1f s\n", x.Len(), len(x.Users),
		first.Format(time.RFC3339), last.Format(time.RFC3339), time.Since(load).Seconds())
	if len(x.Missing) > 0 {
		fmt.Fprintf(stderr, "replay: not in %s (nothing sent from them): %s\n", cfg.Dir, strings.Join(x.Missing, ", "))
	}

	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = cfg.Concurrency
	hc := &http.Client{Transport: tr, Timeout: cfg.Timeout}
	defer hc.CloseIdleConnections()
	rep, err := sim.ReplayFitbit(ctx, cfg.Server, x, sim.ReplayOptions{
		Token: func(subject string) (string, error) {
			return iss.Mint(auth.TokenRequest{Subject: subject, Role: pulsebase.RoleUser, TTL: replayTokenTTL}, time.Now())
		},
		HTTPClient:  hc,
		Speed:       cfg.Speed,
		Batch:       cfg.Batch,
		Concurrency: cfg.Concurrency,
		Log:         slog.New(slog.NewTextHandler(stderr, nil)),
	})
	if rep != nil {
		if werr := rep.WriteTable(stdout); werr != nil && err == nil {
			err = werr
		}
		if cfg.JSON != "" {
			if werr := writeReplayJSON(cfg.JSON, rep); werr != nil && err == nil {
				err = werr
			}
		}
	}
	return err
}

func writeReplayJSON(path string, rep *sim.ReplayReport) error {
	b, err := rep.MarshalJSON()
	if err != nil {
		return fmt.Errorf("json report: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("json report: %w", err)
	}
	return nil
}
