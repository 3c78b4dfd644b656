package pbtest

import (
	"context"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/internal/broker"
	"github.com/pulsebase/pulsebase/internal/processor"
	"github.com/pulsebase/pulsebase/internal/sqlite"
	"github.com/pulsebase/pulsebase/internal/vault"
)

// Parts are the real parts a service of this module runs on, without a server around
// them: a SQLite store, a vault and an embedded JetStream broker, in one temp dir. Tests
// of one service build it on them as the server would, and may build several, as
// processes share one database and one broker.
type Parts struct {
	// Dir is the temp dir holding the database, the vault's keys and the broker's streams.
	Dir string
	// StorePath is the SQLite database file, in Dir, for tests that change it behind the
	// store's back.
	StorePath string
	Store     pulsebase.Store
	Vault     *vault.Vault
	Broker    *broker.Broker
}

// OpenParts opens parts in a new temp dir, the broker configured by cfg (its DataDir
// set to that dir), and closes the broker and the store at test cleanup.
func OpenParts(t TB, cfg broker.Config) *Parts {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "db")
	store, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	v, err := vault.Open(ctx, store, vault.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = dir
	brk, err := broker.Open(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { brk.Close() })
	return &Parts{Dir: dir, StorePath: path, Store: store, Vault: v, Broker: brk}
}

// FeedMessage is one message of a user's change feed, opened.
type FeedMessage struct {
	// ID is the message's deduplication id (its Nats-Msg-Id), Seq its sequence in
	// broker.StreamChanges.
	ID    string
	Seq   uint64
	Batch processor.ChangeBatch
}

// ReadFeed returns the user's change feed on js, in order, every message opened with the
// user's keys from v as processor.OpenChanges opens it for a device. It fails the test if
// one does not open. It reads until the feed has had nothing more for 300 ms.
func ReadFeed(t TB, js jetstream.JetStream, v *vault.Vault, user string) []FeedMessage {
	t.Helper()
	ctx := context.Background()
	keys, err := v.UserKeys(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := js.OrderedConsumer(ctx, broker.StreamChanges,
		jetstream.OrderedConsumerConfig{FilterSubjects: []string{broker.ChangeSubject(user)}})
	if err != nil {
		t.Fatal(err)
	}
	var out []FeedMessage
	for {
		batch, err := cons.Fetch(100, jetstream.FetchMaxWait(300*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			meta, err := m.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			id := m.Headers().Get(jetstream.MsgIDHeader)
			cb, err := processor.OpenChanges(keys, id, m.Data())
			if err != nil {
				t.Fatalf("change %s does not open: %v", id, err)
			}
			out = append(out, FeedMessage{ID: id, Seq: meta.Sequence.Stream, Batch: cb})
		}
		if n == 0 {
			return out
		}
	}
}
