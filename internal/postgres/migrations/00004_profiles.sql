-- Users' profile documents (internal/crdt), each sealed under the user's key. It mirrors
-- internal/sqlite/migrations/00004_profiles.sql.

-- +goose Up
CREATE TABLE profiles (
    user_id    TEXT NOT NULL PRIMARY KEY,
    version    BIGINT NOT NULL,
    ciphertext BYTEA NOT NULL,
    updated    TIMESTAMPTZ NOT NULL
);

-- +goose Down
DROP TABLE profiles;
