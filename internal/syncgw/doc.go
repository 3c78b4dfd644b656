// Package syncgw is the sync gateway: GET /v1/sync of API.md, a WebSocket per device over
// which a user's change feed streams live, samples and profile ops come in, and a device
// that was away resumes from its cursor without gap or duplicate, or is told to start
// again from a snapshot (ARCHITECTURE.md invariant 5). docs/sync.md is the protocol as
// clients see it; this comment is how the gateway keeps its promises.
//
// # One reader of the feed per process
//
// The feed lives in JetStream (stream CHANGES, subject changes.<user>), so any gateway
// serves any user and a cursor means the same on all of them. A gateway reads the stream
// once, with one ordered consumer of changes.> from the moment it starts (the hub), and
// hands each message to the connections of its user, decrypted once and encoded once for
// all of them. Messages of users with no connection here are skipped unopened. This keeps
// the broker's work independent of the number of connections: no consumer per
// connection.
//
// # The seam between history and live
//
// A connection registers with the hub before it reads any history, so every message
// stored after registration reaches it live. It then reads its history from the cursor
// with direct gets of the user's subject until none is left, while live messages are held
// back. Every message stored before registration is found by those gets; every message
// stored after them arrives live. The connection remembers the stream sequence of the
// last message it sent, releases the held messages, and from then on drops any message at
// or below that sequence — so a message found both ways is sent once, in order.
//
// A connection without a usable cursor gets a snapshot instead: its position is the head
// of the stream read after registration, and the state it is sent is read after that, so
// a change stored in between is in the snapshot, sent live, or both. Changes carry the new
// state of what they name (a bucket's values, a day's fields, profile ops that apply
// idempotently), so receiving one whose effect the snapshot already shows changes nothing.
//
// # Flow control
//
// Frames wait in a per-connection queue bounded in bytes; one goroutine per connection
// writes while the queue is not empty and exits when it is, so an idle connection costs a
// reading goroutine and the socket's buffers. A queue over its bound closes the
// connection with 4008: the client reconnects with its cursor and loses nothing, because
// the cursor only moves past frames it processed. History is read no faster than the
// socket takes it. Pings go out on a timer, without a goroutine per connection while
// waiting; a peer that does not answer in time is closed.
//
// # Revocation and consent
//
// The gateway re-checks its connections' credentials whenever a revocation arrives from
// any process (internal/auth), and closes those revoked with 4009; a connection whose
// token expires is closed with 4001. Series changes of a category the user no longer
// consents to collect are not sent, including those already queued when the consent
// changed.
//
// # Coaches
//
// The hello may name the user whose data to sync; internal/auth's Policy decides, as it
// does for the HTTP API, and a coach is allowed the categories a user granted them. The
// hub encodes each message once for all of a user's connections; a coach's connection
// takes its own copy of what it may read: series changes of its categories, daily changes
// decoded, reduced with processor.ScopeDay and re-encoded, and nothing else (profile,
// consent, recommendations are the user's own; an unknown kind is denied by default). Its
// snapshot is reduced the same way. Its access is fixed at the hello: when a grant of
// that user changes the gateway decides again and closes, with 4003, the connections whose
// access would differ, rather than take back what it sent; grants that expire are found
// by a once-a-second pass over the coaches' connections only.
//
// It imports the domain package, the broker, the vault, the processor (for the feed and
// the stored derived data), ingest, profile, consent, crdt and telemetry; cmd/pulsebase
// wires it and httpapi routes GET /v1/sync to it.
package syncgw
