// Package processor turns the SAMPLES stream into per-user state: it decides
// which processor owns which partition of the stream (ownership.go), and runs
// each owned partition in stream order — windows, derived metrics,
// baselines, checkpoints and replay.
//
// Ownership is the safety core: at most one processor runs a partition at a
// time, and every owner carries a fencing epoch so that a former owner that
// wakes up late cannot overwrite its successor's work. See docs/processor.md
// for the protocol.
//
// It is imported only by cmd/pulsebase (wiring `serve --roles process`,
// `replay`, `reprocess`) and by tests; it depends on broker and the store
// interfaces of the root package.
package processor
