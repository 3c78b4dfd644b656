-- The schema of the embedded (single-machine) deployment. It mirrors the PostgreSQL schema
-- in internal/postgres/migrations table for table; only the column types differ.
--
-- Times are TEXT in one fixed-width UTC form (2006-01-02T15:04:05.000000Z) so that text
-- order is time order and the file stays readable with the sqlite3 shell. STRICT makes
-- SQLite reject a value of the wrong type instead of silently storing it.

-- +goose Up
CREATE TABLE users (
    id           TEXT NOT NULL PRIMARY KEY,
    -- keyed hash of the external subject; the subject itself is never stored
    subject_hash BLOB NOT NULL UNIQUE,
    created      TEXT NOT NULL
) STRICT;

-- owner is not a foreign key to users: "system" owns the deployment's own keys, and a
-- user's keys are deleted (crypto-shredding) independently of the user row.
CREATE TABLE wrapped_keys (
    owner      TEXT NOT NULL,
    name       TEXT NOT NULL,
    kek_id     TEXT NOT NULL,
    ciphertext BLOB NOT NULL,
    created    TEXT NOT NULL,
    updated    TEXT NOT NULL,
    PRIMARY KEY (owner, name)
) STRICT, WITHOUT ROWID;

-- +goose Down
DROP TABLE wrapped_keys;
DROP TABLE users;
