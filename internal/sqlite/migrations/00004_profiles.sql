-- Users' profile documents (internal/crdt), each sealed under the user's key. It mirrors
-- internal/postgres/migrations/00004_profiles.sql.

-- +goose Up
CREATE TABLE profiles (
    user_id    TEXT NOT NULL PRIMARY KEY,
    version    INTEGER NOT NULL,
    ciphertext BLOB NOT NULL,
    updated    TEXT NOT NULL
) STRICT;

-- +goose Down
DROP TABLE profiles;
