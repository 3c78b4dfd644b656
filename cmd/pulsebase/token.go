package main

import (
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/auth"
)

func runToken(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	dataDir := fs.String("data-dir", defaultDataDir, "data directory holding the issuer's signing key")
	user := fs.String("user", "", "the user's external subject (required)")
	device := fs.String("device", "", "device id (required for --role device)")
	role := fs.String("role", string(pulsebase.RoleUser), "role: user, device, coach, analyst or admin")
	ttl := fs.Duration("ttl", 24*time.Hour, "lifetime of the token (at most 2160h)")
	fs.Usage = usageFunc(fs, "Usage: pulsebase token --data-dir DIR --user NAME [--device ID] [--role ROLE] [--ttl 24h]\n\n"+
		"Prints one bearer token signed by the built-in issuer's key in the data directory\n"+
		"(created on first use, as 'pulsebase serve' would).")
	if err := parseFlags(fs, args, getenv, stderr); err != nil {
		return err
	}
	req := auth.TokenRequest{Subject: *user, Role: pulsebase.Role(*role), Device: *device, TTL: *ttl}
	switch {
	case req.Subject == "":
		return usageErr(fs, "--user is required")
	case !req.Role.Valid() || req.Role == pulsebase.RoleService:
		return usageErr(fs, fmt.Sprintf("--role %q: want user, device, coach, analyst or admin", *role))
	case req.Role == pulsebase.RoleDevice && req.Device == "":
		return usageErr(fs, "--role device needs --device")
	case req.TTL <= 0 || req.TTL > auth.MaxTTL:
		return usageErr(fs, fmt.Sprintf("--ttl %s: want more than 0 and at most %s", req.TTL, auth.MaxTTL))
	}
	iss, err := auth.OpenIssuer(filepath.Join(*dataDir, issuerKeyFile), auth.DefaultIssuer, auth.DefaultAudience)
	if err != nil {
		return fmt.Errorf("open token key: %w", err)
	}
	tok, err := iss.Mint(req, time.Now())
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}

// usageErr explains a bad flag value on stderr and returns a usage error (exit code 2).
func usageErr(fs *flag.FlagSet, msg string) error {
	fmt.Fprintln(fs.Output(), "pulsebase:", msg)
	return &usageError{msg}
}
