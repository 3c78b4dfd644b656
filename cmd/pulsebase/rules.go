package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/pulsebase/pulsebase/internal/recommend"
)

const rulesSynopsis = `Usage: pulsebase rules check FILE...
       pulsebase rules print [FILE]

check type-checks recommendation rule libraries offline, exactly as the server does at
startup and on reload: every problem is printed with the file, line and column, the rule
and the field (for a CEL expression, the position of the error inside it). It exits 1 when
any file has a problem.

print writes a library (the built-in starter library without FILE) as a table of its
rules: kind, categories, triggers, priority, expiry and cooldown.

The file format and the variables rules can read are in docs/recommendations.md. A
running server picks up a changed --rules file by itself (or on SIGHUP), keeping the last
good library when the new one does not check.`

func runRules(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("rules", flag.ContinueOnError)
	fs.Usage = usageFunc(fs, rulesSynopsis)
	// The subcommand and files are positional; only --help is a flag.
	var pos []string
	for _, a := range args {
		if strings.HasPrefix(a, "-") {
			if err := parseFlags(fs, []string{a}, getenv, stderr); err != nil {
				return err
			}
			continue
		}
		pos = append(pos, a)
	}
	if err := parseFlags(fs, nil, getenv, stderr); err != nil {
		return err
	}
	arg := func(i int) string {
		if i < len(pos) {
			return pos[i]
		}
		return ""
	}
	switch sub := arg(0); sub {
	case "check":
		files := pos[1:]
		if len(files) == 0 {
			return usageErr(fs, "rules check needs a FILE")
		}
		failed := 0
		for _, f := range files {
			lib, err := loadRulesFile(f)
			if err != nil {
				failed++
				var ps recommend.Problems
				if errors.As(err, &ps) {
					fmt.Fprintln(stdout, ps.Error())
				} else {
					fmt.Fprintln(stdout, err) // the OS's error names the file
				}
				continue
			}
			fmt.Fprintf(stdout, "%s: ok, %d rules (version %s)\n", f, len(lib.Rules), lib.Version)
		}
		if failed > 0 {
			return fmt.Errorf("%d of %d rule files do not check", failed, len(files))
		}
		return nil
	case "print":
		if len(pos) > 2 {
			return usageErr(fs, "rules print takes at most one FILE")
		}
		lib, err := recommend.Load(recommend.StarterName, recommend.Starter)
		if f := arg(1); f != "" {
			lib, err = loadRulesFile(f)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s (version %s)\n", lib.Name, lib.Version)
		fmt.Fprintf(stdout, "%-20s %-16s %-44s %4s %8s %8s\n", "KIND", "CATEGORIES", "TRIGGERS", "PRIO", "EXPIRES", "COOLDOWN")
		for _, r := range lib.Rules {
			var cats, trig []string
			for _, c := range r.Categories {
				cats = append(cats, string(c))
			}
			trig = append(trig, r.Metrics...)
			for _, at := range r.At {
				trig = append(trig, fmt.Sprintf("at %02d:%02d", at/60, at%60))
			}
			fmt.Fprintf(stdout, "%-20s %-16s %-44s %4d %8s %8s\n", r.Kind, strings.Join(cats, ","), strings.Join(trig, ","),
				r.Priority, shortDuration(r.Expires), shortDuration(r.Cooldown))
		}
		return nil
	case "":
		return usageErr(fs, "give a subcommand: check or print")
	default:
		return usageErr(fs, fmt.Sprintf("unknown subcommand %q", sub))
	}
}

func loadRulesFile(name string) (*recommend.Library, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	return recommend.Load(name, data)
}

// shortDuration prints whole days as "3d" and the rest as Go does, without zero units.
func shortDuration(d time.Duration) string {
	if d > 0 && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	s := strings.TrimSuffix(d.String(), "0s")
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
