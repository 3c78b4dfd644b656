package recommend

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// library returns a rule file of version with the rules (ruleYAML items).
func library(version string, rules ...string) string {
	return "version: \"" + version + "\"\nrules:\n" + strings.Join(rules, "")
}

// Broken rule files, each with one problem. typeError's is a CEL type error at line 6,
// column 23 (on "+"); syntaxError's is the YAML parser's (a key indented one space less
// than the rule's other keys).
var (
	typeError   = library("bad", ruleYAML("walk", map[string]string{"when": "today.steps + 'x' > 1.0"}))
	syntaxError = "version: \"bad\"\nrules:\n  - kind: a\n   category: heart\n"
)

// lockedBuffer is a log destination safe for the holder's goroutine and the test's.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func writeFile(t *testing.T, path, src string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
}

// replaceFile puts src at path with modification time mtime in one step (a file written
// beside it, renamed over it), as editors and config tools do: a watcher polling during
// the write never sees half a file or the intermediate modification time.
func replaceFile(t *testing.T, path, src string, mtime time.Time) {
	t.Helper()
	tmp := path + ".new"
	writeFile(t, tmp, src)
	if err := os.Chtimes(tmp, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// reloads sets r.OnReload to report every attempt's outcome on the returned channel.
func reloads(r *Rules) <-chan error {
	ch := make(chan error, 100)
	r.OnReload = func(lib *Library, err error) {
		if (lib == nil) == (err == nil) {
			err = errors.Join(err, errors.New("OnReload: got a library and an error, or neither"))
		}
		ch <- err
	}
	return ch
}

// nextReload returns the outcome of the next reload, failing t when none comes in 10 s.
func nextReload(t *testing.T, ch <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("no reload within 10s after %s", what)
		return nil
	}
}

// problemsOf returns err's problems, failing t when err is not Problems.
func problemsOf(t *testing.T, err error) Problems {
	t.Helper()
	var ps Problems
	if !errors.As(err, &ps) || len(ps) == 0 {
		t.Fatalf("got error %T %v, want Problems", err, err)
	}
	return ps
}

func TestHolderStarterWithoutFile(t *testing.T) {
	t.Parallel()
	r, err := NewRules("", nil)
	if err != nil || r == nil {
		t.Fatalf("NewRules(\"\") = %v, %v; want a holder and no error", r, err)
	}
	lib := r.Library()
	if lib.Name != StarterName || lib.Version != starter().Version || len(lib.Rules) != len(starter().Rules) {
		t.Errorf("got library %q version %q with %d rules, want the starter library", lib.Name, lib.Version, len(lib.Rules))
	}
	if err := r.Problems(); err != nil {
		t.Errorf("Problems() = %v, want nil", err)
	}
	if err := r.Reload(); err == nil {
		t.Error("Reload without a file succeeded; want an error")
	}
	if r.Library() != lib {
		t.Error("Reload without a file replaced the library")
	}
}

func TestHolderBadFileAtStartKeepsStarter(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct {
		name, src string
		// want follows the file name in the problem's String(); line is its line (for a
		// syntax error, the one the YAML parser names).
		want string
		line int
	}{
		{"type error", typeError, ":6:23: rule \"walk\" when: found no matching overload", 6},
		{"yaml syntax error", syntaxError, ":2: yaml: line 2", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".yaml")
			writeFile(t, path, tc.src)
			var logs lockedBuffer
			r, err := NewRules(path, slog.New(slog.NewTextHandler(&logs, nil)))
			if r == nil {
				t.Fatalf("NewRules(%s) returned no holder (error %v); want the starter library in use", tc.name, err)
			}
			ps := problemsOf(t, err)
			if len(ps) != 1 || ps[0].File != path || ps[0].Line != tc.line ||
				!strings.HasPrefix(ps[0].String(), path+tc.want) {
				t.Errorf("got problems\n%v\nwant one at line %d starting %s", ps, tc.line, path+tc.want)
			}
			if lib := r.Library(); lib.Name != StarterName || lib.Version != starter().Version {
				t.Errorf("got library %q version %q, want %s version %s", lib.Name, lib.Version, StarterName, starter().Version)
			}
			if got := r.Problems(); got == nil || got.Error() != err.Error() {
				t.Errorf("Problems() = %v, want %v", got, err)
			}
			// The log says what is wrong, where, and what stays in use.
			log := logs.String()
			for _, want := range []string{"level=ERROR", path, "in_use=" + StarterName, "version=" + starter().Version} {
				if !strings.Contains(log, want) {
					t.Errorf("log %q does not mention %q", log, want)
				}
			}
		})
	}
}

func TestHolderMissingFileAtStart(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "nope.yaml")
	r, err := NewRules(path, nil)
	if r == nil || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("NewRules(missing) = %v, %v; want a holder and a not-exist error", r, err)
	}
	if r.Library().Name != StarterName {
		t.Errorf("got library %q, want the starter", r.Library().Name)
	}
}

// TestHolderReload walks a holder through good, broken and missing files: only a file
// that checks replaces the library, and every attempt is reported.
func TestHolderReload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "rules.yaml")
	writeFile(t, path, library("v1", ruleYAML("a", nil)))
	var logs lockedBuffer
	r, err := NewRules(path, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("NewRules: %v", err)
	}
	if lib := r.Library(); lib.Name != path || lib.Version != "v1" || len(lib.Rules) != 1 {
		t.Fatalf("got library %q version %q with %d rules, want %s v1 with 1", lib.Name, lib.Version, len(lib.Rules), path)
	}
	got := reloads(r)

	// A good file replaces the library.
	writeFile(t, path, library("v2", ruleYAML("a", nil), ruleYAML("b", nil)))
	if err := r.Reload(); err != nil {
		t.Fatalf("Reload(v2): %v", err)
	}
	if err := nextReload(t, got, "v2"); err != nil {
		t.Errorf("OnReload got %v, want nil", err)
	}
	good := r.Library()
	if good.Version != "v2" || len(good.Rules) != 2 || good.Rule("b") == nil {
		t.Fatalf("got version %q with %d rules, want v2 with a and b", good.Version, len(good.Rules))
	}
	if err := r.Problems(); err != nil {
		t.Errorf("Problems() after a good load = %v, want nil", err)
	}

	// Broken files and a missing one: reported, and v2 stays in use.
	for _, tc := range []struct {
		name, src string
		// want is in the error's text; problems says whether it is Problems.
		want     string
		problems bool
	}{
		{"type error", typeError, path + ":6:23: rule \"walk\" when: found no matching overload", true},
		{"yaml syntax error", syntaxError, path + ":2: yaml: line 2", true},
		{"no rules", "version: \"v3\"\nrules: []\n", path + " rules: no rules", true},
		{"missing", "", "no such file", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "missing" {
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
			} else {
				writeFile(t, path, tc.src)
			}
			before := len(logs.String())
			err := r.Reload()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Reload = %v, want an error with %q", err, tc.want)
			}
			if tc.problems {
				problemsOf(t, err)
			}
			if e := nextReload(t, got, tc.name); e == nil || e.Error() != err.Error() {
				t.Errorf("OnReload got %v, want %v", e, err)
			}
			if lib := r.Library(); lib != good {
				t.Errorf("got library %q version %q, want the last good one (v2) kept", lib.Name, lib.Version)
			}
			if p := r.Problems(); p == nil || p.Error() != err.Error() {
				t.Errorf("Problems() = %v, want %v", p, err)
			}
			log := logs.String()[before:]
			if !strings.Contains(log, "level=ERROR") || !strings.Contains(log, "version=v2") {
				t.Errorf("log %q: want an error naming the version kept (v2)", log)
			}
		})
	}

	// A good file again: the problems are cleared.
	writeFile(t, path, library("v4", ruleYAML("c", nil)))
	if err := r.Reload(); err != nil {
		t.Fatalf("Reload(v4): %v", err)
	}
	if lib := r.Library(); lib.Version != "v4" || lib.Rule("c") == nil || lib.Rule("a") != nil {
		t.Errorf("got version %q, want v4 with rule c only", lib.Version)
	}
	if err := r.Problems(); err != nil {
		t.Errorf("Problems() = %v, want nil", err)
	}
	if err := nextReload(t, got, "v4"); err != nil {
		t.Errorf("OnReload got %v, want nil", err)
	}
}

// TestHolderReloadWhileRead reads the library while reloads replace it (for -race).
func TestHolderReloadWhileRead(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "rules.yaml")
	writeFile(t, path, library("v1", ruleYAML("a", nil)))
	r, err := NewRules(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				if lib := r.Library(); lib == nil || lib.Rule("a") == nil {
					t.Error("read a library without rule a")
					return
				}
				_ = r.Problems()
			}
		})
	}
	for i := range 20 {
		src := library("v1", ruleYAML("a", nil))
		if i%2 == 1 {
			src = typeError
		}
		writeFile(t, path, src)
		_ = r.Reload()
	}
	close(done)
	wg.Wait()
}

// TestHolderWatch checks that Watch notices a file whose modification time or size
// changed, keeps the last good library when the new file does not check, loads a file
// that appears after a missing one, and otherwise leaves the file alone.
func TestHolderWatch(t *testing.T) {
	t.Parallel()
	const interval = 20 * time.Millisecond
	dir := t.TempDir()
	path := filepath.Join(dir, "rules.yaml")
	writeFile(t, path, library("v1", ruleYAML("a", nil)))
	r, err := NewRules(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := reloads(r)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Watch(ctx, interval, nil) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch = %v, want nil", err)
		}
	}()
	mtime := func() time.Time {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.ModTime()
	}
	// setMtime gives the file a modification time the test controls, so that a change is
	// seen only through what the step means to change.
	quiet := func(what string) {
		t.Helper()
		select {
		case err := <-got:
			t.Fatalf("%s: got a reload (%v), want none", what, err)
		case <-time.After(10 * interval):
		}
	}

	// Nothing changed: no reload.
	quiet("unchanged file")

	// Same size, new modification time ("v1" → "v2").
	m := mtime()
	replaceFile(t, path, library("v2", ruleYAML("a", nil)), m.Add(time.Hour))
	if err := nextReload(t, got, "a new modification time"); err != nil {
		t.Fatalf("reload of v2: %v", err)
	}
	if v := r.Library().Version; v != "v2" {
		t.Fatalf("got version %q, want v2", v)
	}
	quiet("v2 loaded")

	// Same modification time, new size.
	m = mtime()
	replaceFile(t, path, library("v3", ruleYAML("a", nil), ruleYAML("b", nil)), m)
	if err := nextReload(t, got, "a new size"); err != nil {
		t.Fatalf("reload of v3: %v", err)
	}
	good := r.Library()
	if good.Version != "v3" || len(good.Rules) != 2 {
		t.Fatalf("got version %q with %d rules, want v3 with 2", good.Version, len(good.Rules))
	}

	// A broken file is reported once, and v3 stays.
	replaceFile(t, path, typeError, m.Add(2*time.Hour))
	problemsOf(t, nextReload(t, got, "a broken file"))
	if r.Library() != good {
		t.Fatalf("got version %q after a broken file, want v3 kept", r.Library().Version)
	}
	quiet("the broken file reported")
	if r.Library() != good || r.Problems() == nil {
		t.Fatalf("got version %q, problems %v; want v3 kept and the problems", r.Library().Version, r.Problems())
	}

	// A removed file is not an attempt; the file coming back is.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	quiet("file removed")
	replaceFile(t, path, library("v5", ruleYAML("e", nil)), time.Now())
	if err := nextReload(t, got, "the file came back"); err != nil {
		t.Fatalf("reload of v5: %v", err)
	}
	if lib := r.Library(); lib.Version != "v5" || r.Problems() != nil {
		t.Fatalf("got version %q, problems %v; want v5 and none", lib.Version, r.Problems())
	}
}

// TestHolderWatchSignal checks that a signal on the reload channel reloads the file even
// when it looks unchanged (the interval is too long to tick during the test).
func TestHolderWatchSignal(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "rules.yaml")
	writeFile(t, path, library("v1", ruleYAML("a", nil)))
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewRules(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := reloads(r)
	hup := make(chan os.Signal)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Watch(ctx, time.Hour, hup) }()

	// Same size and modification time: only the signal can tell.
	writeFile(t, path, library("v2", ruleYAML("a", nil)))
	if err := os.Chtimes(path, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	hup <- syscall.SIGHUP
	if err := nextReload(t, got, "SIGHUP"); err != nil {
		t.Fatalf("reload on SIGHUP: %v", err)
	}
	good := r.Library()
	if good.Version != "v2" {
		t.Fatalf("got version %q, want v2", good.Version)
	}
	writeFile(t, path, syntaxError)
	hup <- syscall.SIGHUP
	problemsOf(t, nextReload(t, got, "SIGHUP with a broken file"))
	if r.Library() != good {
		t.Errorf("got version %q, want v2 kept", r.Library().Version)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Watch = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Watch did not return within 10s of its context ending")
	}
}

// TestHolderWatchWithoutFile: without a file, Watch reloads nothing (not even on a
// signal) and returns when its context ends.
func TestHolderWatchWithoutFile(t *testing.T) {
	t.Parallel()
	r, err := NewRules("", nil)
	if err != nil {
		t.Fatal(err)
	}
	got := reloads(r)
	lib := r.Library()
	hup := make(chan os.Signal)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Watch(ctx, time.Millisecond, hup) }()
	hup <- syscall.SIGHUP // received: Watch is running
	select {
	case err := <-got:
		t.Fatalf("got a reload (%v) without a file", err)
	case <-time.After(50 * time.Millisecond):
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Watch = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Watch did not return within 10s of its context ending")
	}
	if r.Library() != lib || r.Problems() != nil {
		t.Errorf("got library %q and problems %v, want the starter and none", r.Library().Name, r.Problems())
	}
}
