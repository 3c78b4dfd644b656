-- Derived data of the stream processor and its checkpoints. It mirrors
-- internal/sqlite/migrations/00003_derived.sql table for table.

-- +goose Up

-- derived holds what the processor derives per user (buckets, daily summaries, baselines,
-- its own state), each sealed under the user's key. key orders records within (user, kind)
-- bytewise (COLLATE "C"), as on SQLite.
CREATE TABLE derived (
    user_id    TEXT NOT NULL,
    kind       TEXT NOT NULL,
    key        TEXT COLLATE "C" NOT NULL,
    ciphertext BYTEA NOT NULL,
    updated    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (user_id, kind, key)
);

-- partition_checkpoints records how far each SAMPLES partition has been applied, and by
-- which fencing epoch: a write with an older epoch is refused.
CREATE TABLE partition_checkpoints (
    partition INTEGER PRIMARY KEY,
    epoch     BIGINT NOT NULL,
    seq       BIGINT NOT NULL,
    updated   TIMESTAMPTZ NOT NULL
);

-- +goose Down
DROP TABLE partition_checkpoints;
DROP TABLE derived;
