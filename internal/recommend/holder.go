package recommend

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Rules holds the rule library in use and replaces it when its file changes. A file that
// does not check is reported (every problem, with its position) and the last good library
// stays in use: the server never stops, and never runs part of a library.
type Rules struct {
	path string
	log  *slog.Logger
	cur  atomic.Pointer[Library]

	mu       sync.Mutex
	modTime  time.Time
	size     int64
	problems error // of the latest attempt; nil when it loaded
	// OnReload, if set, is called after every attempt with its outcome.
	OnReload func(lib *Library, err error)
}

// NewRules returns the holder of the starter library, or of the library in path when it
// is not empty. A path whose library does not load leaves the starter library in use;
// the problems are logged and returned (the holder is usable either way).
func NewRules(path string, log *slog.Logger) (*Rules, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Rules{path: path, log: log}
	lib, err := Load(StarterName, Starter)
	if err != nil {
		return nil, err // the build's own library: a test keeps this from happening
	}
	r.cur.Store(lib)
	if path == "" {
		return r, nil
	}
	return r, r.Reload()
}

// Library returns the library in use.
func (r *Rules) Library() *Library { return r.cur.Load() }

// Problems returns the problems of the latest load, nil when it succeeded.
func (r *Rules) Problems() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.problems
}

// Reload loads the holder's file again. On success the new library is in use; otherwise
// the problems are logged and returned and the library in use stays.
func (r *Rules) Reload() error {
	if r.path == "" {
		return errors.New("no rules file: the built-in library is in use")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if fi, err := os.Stat(r.path); err == nil {
		r.modTime, r.size = fi.ModTime(), fi.Size()
	}
	data, err := os.ReadFile(r.path)
	var lib *Library
	if err == nil {
		lib, err = Load(r.path, data)
	}
	r.problems = err
	if err != nil {
		r.log.Error("rule library not loaded; the last good one stays in use", "file", r.path,
			"in_use", r.cur.Load().Name, "version", r.cur.Load().Version, "problems", err.Error())
	} else {
		r.cur.Store(lib)
		r.log.Info("rule library loaded", "file", r.path, "version", lib.Version, "rules", len(lib.Rules))
	}
	if r.OnReload != nil {
		r.OnReload(lib, err)
	}
	return err
}

// changed reports whether the file's modification time or size changed since the last
// load.
func (r *Rules) changed() bool {
	fi, err := os.Stat(r.path)
	if err != nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return !fi.ModTime().Equal(r.modTime) || fi.Size() != r.size
}

// Watch reloads the file whenever it changes (checked every interval) or reload
// receives, until ctx ends. Without a file it only waits.
func (r *Rules) Watch(ctx context.Context, interval time.Duration, reload <-chan os.Signal) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-reload:
			if r.path != "" {
				_ = r.Reload()
			}
		case <-t.C:
			if r.path != "" && r.changed() {
				_ = r.Reload()
			}
		}
	}
}
