-- The schema of the scale-out deployment. It mirrors the SQLite schema in
-- internal/sqlite/migrations table for table; only the column types differ.
--
-- TIMESTAMPTZ keeps microseconds, which is why both stores round times to microseconds.

-- +goose Up
CREATE TABLE users (
    id           TEXT PRIMARY KEY,
    -- keyed hash of the external subject; the subject itself is never stored
    subject_hash BYTEA NOT NULL UNIQUE,
    created      TIMESTAMPTZ NOT NULL
);

-- owner is not a foreign key to users: "system" owns the deployment's own keys, and a
-- user's keys are deleted (crypto-shredding) independently of the user row.
CREATE TABLE wrapped_keys (
    owner      TEXT NOT NULL,
    name       TEXT NOT NULL,
    kek_id     TEXT NOT NULL,
    ciphertext BYTEA NOT NULL,
    created    TIMESTAMPTZ NOT NULL,
    updated    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (owner, name)
);

-- +goose Down
DROP TABLE wrapped_keys;
DROP TABLE users;
