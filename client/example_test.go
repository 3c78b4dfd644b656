package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/pulsebase/pulsebase"
	"github.com/pulsebase/pulsebase/client"
	"github.com/pulsebase/pulsebase/internal/pbtest"
)

// server starts a Pulsebase server on real parts for an example, and returns it with a
// token of a user who consented to everything.
func server(subject string) (*pbtest.Example, *pbtest.Server, string) {
	ex := &pbtest.Example{}
	s := pbtest.MustOpenServer(ex)
	return ex, s, s.UserToken(ex, subject)
}

// A device syncs: it edits its profile (offline or not), and sees the merged document
// and every change of the user's feed.
func ExampleClient_Sync() {
	ex, s, token := server("ana")
	defer ex.Close()

	profiles := make(chan client.Change, 16)
	acks := make(chan client.Ack, 16)
	sess, err := client.New(s.URL, token).Sync(client.SyncOptions{
		Device:   "phone",
		StateDir: ex.TempDir(), // cursor, profile replica and offline queue survive restarts
		Handlers: map[string]func(client.Change){
			"profile": func(c client.Change) { profiles <- c }, // one handler per kind of change
		},
		OnAck: func(a client.Ack) { acks <- a },
	})
	if err != nil {
		panic(err)
	}
	defer sess.Close()
	// Edits apply to the local replica at once and wait in the offline queue.
	sess.Set("goals.steps", 9000)
	sess.Incr("water_glasses.2026-11-29", 2)
	fmt.Println("before connecting:", sess.Profile()["goals"], sess.Pending(), "edits queued")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sess.Run(ctx) // connects, resumes from the cursor, reconnects with backoff
	for range 2 {
		a := <-acks // the server applied the edit and stored the document
		fmt.Println("applied:", a.Results[0].ID, a.Results[0].Applied)
	}
	for range 2 {
		c := <-profiles // and sent it to the user's devices on the feed
		var d struct{ Ops []struct{ ID string } }
		json.Unmarshal(c.Data, &d)
		fmt.Println("on the feed:", d.Ops[0].ID)
	}
	fmt.Println("after syncing:", sess.Profile()["water_glasses"], sess.Pending(), "edits queued")
	// Output:
	// before connecting: map[steps:9000] 2 edits queued
	// applied: phone:1 true
	// applied: phone:2 true
	// on the feed: phone:1
	// on the feed: phone:2
	// after syncing: map[2026-11-29:2] 0 edits queued
}

// Samples sent through a session are queued durably and acknowledged once stored.
func ExampleSession_SendSamples() {
	ex, s, token := server("ben")
	defer ex.Close()

	acks := make(chan client.Ack, 1)
	sess, err := client.New(s.URL, token).Sync(client.SyncOptions{
		Device: "watch", OnAck: func(a client.Ack) { acks <- a },
	})
	if err != nil {
		panic(err)
	}
	defer sess.Close()
	at := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	sess.SendSamples([]pulsebase.SampleInput{
		{Type: "heart_rate", Value: json.RawMessage("62"), Start: at, Source: "watch"},
		{Type: "heart_rate", Value: json.RawMessage("62"), Start: at, Source: "watch"}, // the same sample again
		{Type: "heart_rate", Value: json.RawMessage("900"), Start: at, Source: "watch"},
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sess.Run(ctx)
	a := <-acks
	fmt.Printf("%s: %d accepted, %d duplicate, %d rejected (%s)\n", a.Kind, a.Accepted, a.Duplicates, len(a.Rejected), a.Rejected[0].Code)
	// Output:
	// samples: 1 accepted, 1 duplicate, 1 rejected (out_of_range)
}

// Seal keeps samples unreadable to the ingest tier: only the processing tier can open
// them.
func ExampleSeal() {
	ex, s, token := server("cal")
	defer ex.Close()

	c := client.New(s.URL, token)
	ctx := context.Background()
	me, _ := c.Me(ctx)
	key, err := c.ProcessingKey(ctx)
	if err != nil {
		panic(err)
	}
	batch, err := client.Seal(key, me.ID, []pulsebase.SampleInput{
		{Type: "steps", Value: json.RawMessage("120"), Start: "2026-11-29T08:00:00Z", End: "2026-11-29T08:01:00Z", Source: "band"},
	})
	if err != nil {
		panic(err)
	}
	first, _ := c.PostSealed(ctx, batch)
	again, _ := c.PostSealed(ctx, batch)
	fmt.Println("stored:", !first.Sealed.Duplicate, "then duplicate:", again.Sealed.Duplicate)
	// Output:
	// stored: true then duplicate: true
}
