package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/auth"
	"github.com/pulsebase/pulsebase/internal/processor"
)

const reprocessSynopsis = `Usage: pulsebase reprocess (--user ID | --all) [--server URL] [--token T | --data-dir DIR] [--wait=false]

Rebuilds derived data (buckets, daily metrics, baselines) from the retained sample stream
while the server runs — after a change to how metrics are computed, or to repair. --user
takes the user's internal id (as GET /v1/users/me shows it). Each partition's processor
replays its part of the stream; samples that arrive meanwhile are applied afterwards, so
nothing is lost and nothing counted twice. Without --token, an admin token is minted with
the built-in issuer's key in --data-dir. With --wait (the default) it prints the progress
and returns when every partition concerned has finished.`

func runReprocess(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("reprocess", flag.ContinueOnError)
	server := fs.String("server", "http://127.0.0.1:8080", "base URL of a running server")
	token := fs.String("token", "", "an admin bearer token; empty mints one from --data-dir")
	dataDir := fs.String("data-dir", defaultDataDir, "data directory holding the built-in issuer's key (without --token)")
	user := fs.String("user", "", "the internal id of the user to rebuild")
	all := fs.Bool("all", false, "rebuild every user")
	wait := fs.Bool("wait", true, "wait until every partition concerned has finished")
	timeout := fs.Duration("timeout", time.Hour, "how long to wait at most")
	fs.Usage = usageFunc(fs, reprocessSynopsis)
	if err := parseFlags(fs, args, getenv, stderr); err != nil {
		return err
	}
	if (*user == "") == !*all {
		return usageErr(fs, "give --user ID or --all")
	}
	tok := *token
	if tok == "" {
		iss, err := auth.OpenIssuer(filepath.Join(*dataDir, issuerKeyFile), auth.DefaultIssuer, auth.DefaultAudience)
		if err != nil {
			return fmt.Errorf("open token key: %w", err)
		}
		if tok, err = iss.Mint(auth.TokenRequest{Subject: "pulsebase-reprocess", Role: pulsebase.RoleAdmin, TTL: *timeout + time.Minute}, time.Now()); err != nil {
			return err
		}
	}
	base := strings.TrimRight(*server, "/")
	body, _ := json.Marshal(map[string]any{"user": *user, "all": *all})
	var st processor.ReprocessStatus
	if err := adminCall(ctx, "POST", base+"/v1/admin/reprocess", tok, body, http.StatusAccepted, &st); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "reprocess %s requested: %d partition(s)\n", st.Request.ID, st.Partitions)
	if !*wait {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	last := -1
	for !st.Complete {
		select {
		case <-ctx.Done():
			return fmt.Errorf("reprocess %s: %d of %d partitions done when waiting stopped: %w", st.Request.ID, st.Done, st.Partitions, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
		if err := adminCall(ctx, "GET", base+"/v1/admin/reprocess/"+st.Request.ID, tok, nil, http.StatusOK, &st); err != nil {
			return err
		}
		if st.Done != last {
			last = st.Done
			fmt.Fprintf(stdout, "%d/%d partitions rebuilt\n", st.Done, st.Partitions)
		}
	}
	fmt.Fprintf(stdout, "reprocess %s complete\n", st.Request.ID)
	return nil
}

// adminCall sends an operations request and decodes the answer into out.
func adminCall(ctx context.Context, method, url, token string, body []byte, want int, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, bytes.TrimSpace(b))
	}
	return json.Unmarshal(b, out)
}
