package auth

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// loadBucket applies every entry of kv, returning the last revision applied once the
// watch has delivered them all (it marks that with a nil entry).
func loadBucket(ctx context.Context, kv jetstream.KeyValue, apply func(jetstream.KeyValueEntry) bool) (uint64, error) {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return 0, fmt.Errorf("load %s: %w", kv.Bucket(), err)
	}
	defer stop(w)
	var rev uint64
	for {
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("load %s: %w", kv.Bucket(), ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return 0, fmt.Errorf("load %s: watch stopped", kv.Bucket())
			}
			if e == nil {
				return rev, nil
			}
			apply(e)
			rev = max(rev, e.Revision())
		}
	}
}

// followBucket applies kv's changes after revision from until ctx is done, calling
// changed after each that apply reports as a change, and tick every period (0: never).
// Resuming right after the revision loadBucket returned leaves no gap between the two
// watches.
func followBucket(ctx context.Context, kv jetstream.KeyValue, from uint64, apply func(jetstream.KeyValueEntry) bool,
	changed func(jetstream.KeyValueEntry), period time.Duration, tick func()) error {
	w, err := kv.WatchAll(ctx, jetstream.ResumeFromRevision(from+1))
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("watch %s: %w", kv.Bucket(), err)
	}
	defer stop(w)
	var tc <-chan time.Time
	if period > 0 {
		t := time.NewTicker(period)
		defer t.Stop()
		tc = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tc:
			tick()
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New(kv.Bucket() + " watch stopped")
			}
			if e != nil && apply(e) {
				changed(e)
			}
		}
	}
}

// stop stops w and drains its channel in the background: its delivery goroutine may be
// blocked on the full channel and must finish before the channel is closed.
func stop(w jetstream.KeyWatcher) {
	w.Stop()
	go func() {
		for range w.Updates() {
		}
	}()
}
