-- Derived data of the stream processor and its checkpoints. It mirrors
-- internal/postgres/migrations/00003_derived.sql table for table.

-- +goose Up

-- derived holds what the processor derives per user (buckets, daily summaries, baselines,
-- its own state), each sealed under the user's key. key orders records within (user, kind).
CREATE TABLE derived (
    user_id    TEXT NOT NULL,
    kind       TEXT NOT NULL,
    key        TEXT NOT NULL,
    ciphertext BLOB NOT NULL,
    updated    TEXT NOT NULL,
    PRIMARY KEY (user_id, kind, key)
) STRICT, WITHOUT ROWID;

-- partition_checkpoints records how far each SAMPLES partition has been applied, and by
-- which fencing epoch: a write with an older epoch is refused.
CREATE TABLE partition_checkpoints (
    partition INTEGER NOT NULL PRIMARY KEY,
    epoch     INTEGER NOT NULL,
    seq       INTEGER NOT NULL,
    updated   TEXT NOT NULL
) STRICT;

-- +goose Down
DROP TABLE partition_checkpoints;
DROP TABLE derived;
