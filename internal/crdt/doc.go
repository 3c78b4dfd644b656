// Package crdt is the user profile as a conflict-free replicated document: the goals,
// units, time zone, quiet and active hours, enabled nudges, favourite activities and daily
// water glasses a user edits from several devices, offline or not. Every replica (the
// server and each device) that has applied the same ops holds the same document, whatever
// order and however many times the ops arrived. This comment is the specification that the
// sync layer, the client SDK and the API documentation cite for issue [4].
//
// The package has no clock and does no I/O; it imports the domain package and the standard
// library only. Anything may import it. A Document is not safe for concurrent use; an HLC is.
//
// # Ops
//
// An edit is an Op. On the wire (the "ops" of a sync frame) it is a JSON object:
//
//	{"id": "watch-1:42",
//	 "ts": {"wall": 1795939200000, "logical": 0, "node": "watch-1"},
//	 "kind": "set", "path": "goals.steps", "value": 8000}
//
//	{"id": "phone:7", "ts": {…}, "kind": "add", "path": "enabled_nudges", "value": "bedtime"}
//	{"id": "phone:8", "ts": {…}, "kind": "remove", "path": "favourite_activities",
//	 "value": "Yoga", "observed": {"phone": 3, "watch-1": 40}}
//	{"id": "watch-1:43", "ts": {…}, "kind": "incr", "path": "water_glasses.2026-11-29", "value": 1}
//
// Its members:
//
//   - id is "<device>:<seq>": the device id (1 to 64 bytes of printable ASCII other than
//     space and ':') and a decimal seq, 1 to 2^53-1 without leading zeros. A device numbers
//     its ops 1, 2, 3, …: each op's seq is larger than the one before (gaps are allowed, as
//     when the server refused an op). An id names one op; a device never reuses one.
//   - ts is the device's hybrid logical clock reading (HLC) when it made the op: wall in
//     Unix milliseconds (2020 to 2200), a logical counter, and node, which must be the
//     device of the id.
//   - kind is set, add, remove or incr: the one (or one of the two) the path takes.
//   - path and value are one of the rows below.
//   - observed, on a remove only, maps devices to seqs: for each device, the seq of its
//     latest add of value that the remover had seen (Document.Observed gives it).
//
// The paths of a profile:
//
//	path                      type          kind         value
//	goals.steps               LWW register  set          integer 0..100000, or null
//	goals.sleep_minutes       LWW register  set          integer 0..1440, or null
//	goals.active_minutes      LWW register  set          integer 0..1440, or null
//	goals.water_ml            LWW register  set          integer 0..10000, or null
//	units                     LWW register  set          "metric" | "imperial", or null
//	time_zone                 LWW register  set          IANA zone name ("America/Chicago"), or null
//	quiet_hours               LWW register  set          {"start": "HH:MM", "end": "HH:MM"}, start ≠ end, or null
//	active_hours              LWW register  set          {"start": "HH:MM", "end": "HH:MM"}, start ≠ end, or null
//	enabled_nudges            OR-set        add, remove  one of recovery_day, move_break, step_pacing,
//	                                                     bedtime, hydration, mindful_break, celebrate
//	favourite_activities      OR-set        add, remove  a string of 1..64 characters, no control
//	                                                     characters, no leading or trailing space
//	water_glasses.YYYY-MM-DD  PN-counter    incr         integer -20..20 other than 0
//
// Integers are JSON integers (8000, not 8000.0 or "8000"). An op object has no other
// members. Its compact encoding is at most MaxOpSize (4 KiB) bytes.
//
// # Registers: last writer wins
//
// A scalar holds the value of the set op with the greatest timestamp, compared by wall,
// then logical, then node (the device id, by bytes); two ops of one device never share a
// timestamp, and should they (a broken clock) the larger seq wins, then the larger
// canonical JSON value. A set to null clears the field: it is absent from the view, and a
// later set gives it a value again. A device's clock observes every op it receives
// (HLC.Observe), so an edit made after seeing another wins over it; between edits made without seeing each
// other, the later clock wins.
//
// # Sets: add-wins observed-remove
//
// A remove cancels the adds it observed and only those: for each device k in observed,
// every add of value by k with seq ≤ observed[k]. An element is a member while some add of
// it is not cancelled. So an add concurrent with a remove (one the remover had not seen)
// wins, and adding an element again after removing it adds it. To remove an element,
// send observed = Document.Observed(path, element) of the device's replica.
//
// Per (element, device) a document keeps two seqs: that of the device's latest add and the
// highest a remove cancelled. Once the device's seqs have been applied up to both, nothing
// needs keeping if the element is not a member, and one seq if it is: add/remove churn
// leaves nothing behind. Only a remove that arrives before an add it cancels leaves a
// tombstone (the seq to wait for), removed when the add arrives; MaxTombstones (128) bounds
// them. The server, through which ops pass first, never keeps one: a device only observes
// adds the server sent it (CheckIncoming).
//
// # Counters: PN-counter per device and day
//
// water_glasses.<day> counts the glasses of one local day: each device keeps how much it
// added (p) and took away (n) on each day, and the counter is the sum over devices of p
// minus n. Two
// devices each adding a glass offline give 2. There is no remove: to undo a glass, incr by
// -1. Concurrent decrements can make a day negative; a client shows max(0, value). The day
// is the device's local date and must lie from 7 days before to 1 day after the UTC date of
// the op's ts. A document keeps the RetainDays (31) days ending with the latest day it has
// a counter for; an incr of an older day is accepted (and acknowledged) and has no effect,
// as if it had arrived before the later days.
//
// # Duplicates and delivery order
//
// A document remembers, per device, the highest seq it has applied (a version vector; see
// Seen), not the ids of the ops: an op at or below it is a duplicate, which Apply reports
// as applied=false and no error. This takes bounded space (MaxDevices entries) where a set
// of ids, or uuids as ids, would grow with every op or forget some and double-count an
// increment. It relies on one rule: the ops of one device reach every replica in the
// order of their seqs. The ops of different devices may interleave in any order, and any
// op may arrive any number of times. The sync protocol keeps the rule: a device sends its
// queue in order and resends from its oldest unacknowledged op; the server applies a
// device's ops in the order they arrive and passes them on in the order it applied them
// (the change feed); a device that resumes from a snapshot merges the snapshot's state. An
// op arriving after a later op of its device is taken for a duplicate and lost.
//
// A device that lost its local state continues its seqs after Seen(device) of the server's
// document.
//
// # Errors and limits
//
// Apply validates an op against what depends on the op alone (Validate), so every replica
// gives the same answer, and refuses with a *pulsebase.Error: CodeInvalidOp (the shape,
// id, ts, kind or observed), CodeInvalidPath, CodeInvalidValue, or pulsebase.ETOOLARGE
// (an op over MaxOpSize; or a document over a limit: MaxDevices devices, MaxFavourites
// favourites, MaxTombstones tombstones, MaxCount per device and day). A refused op leaves
// the document exactly as it was. The limits on the document depend on its state, so a
// replica whose state differs could refuse what another took; the server, applying every
// op first, is the gate, and other replicas receive only what it took.
//
// The server, for each op from a device, checks in this order: DecodeOp (or Validate),
// CheckIncoming against its document, its HLC's Observe at the current time (which
// refuses with CodeClockSkew an op more than an hour ahead of the server's clock and keeps
// the clock ahead of every op it took), then Apply, and persists the document when Apply
// returns applied=true.
//
// # State
//
// Merge joins two documents: the result is the document that applying every op of either
// gives; it is commutative, associative and idempotent. View gives the profile as GET
// /v1/users/{user}/profile returns it. MarshalBinary encodes a document canonically
// (equal states, equal bytes) behind a version byte; UnmarshalBinary accepts only such
// encodings of a document within the limits (at most MaxDocumentSize bytes).
package crdt
