-- Privacy and key management: tombstones of crypto-shredded owners, the KEK registry, the
-- audit log of key-management actions, and users' encrypted consent history. It mirrors
-- internal/sqlite/migrations/00002_privacy.sql table for table.

-- +goose Up

-- erased_owners holds a tombstone for every owner whose keys were erased. EraseKeys writes
-- it in the transaction that deletes the keys, and CreateWrappedKey reads it in the
-- transaction of its insert; both first take a per-owner advisory lock (see
-- lockKeyOwner), without which READ COMMITTED would let them interleave.
CREATE TABLE erased_owners (
    owner  TEXT PRIMARY KEY,
    erased TIMESTAMPTZ NOT NULL -- time of the first erase
);

-- wrapped_keys_by_kek serves WrappedKeysByKEK (re-wrapping pages through one KEK's keys in
-- (owner, name) order), CountWrappedKeys and RemoveKEK's in-use check. The "C" collation
-- is byte order, the order SQLite uses, whatever the database's default collation; the
-- queries ask for it explicitly so they can use this index.
CREATE INDEX wrapped_keys_by_kek ON wrapped_keys (kek_id, owner COLLATE "C", name COLLATE "C");

-- keks is the registry of key-encryption keys: ids and locations, never key material.
CREATE TABLE keks (
    id         TEXT PRIMARY KEY,
    uri        TEXT NOT NULL,
    is_primary BOOLEAN NOT NULL DEFAULT false,
    created    TIMESTAMPTZ NOT NULL
);

-- At most one KEK is primary, whatever a buggy or racing writer does.
CREATE UNIQUE INDEX keks_one_primary ON keks (is_primary) WHERE is_primary;

-- key_events is the append-only audit log of key-management actions. Identity values only
-- grow (though concurrent appends may commit out of seq order).
CREATE TABLE key_events (
    seq    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at     TIMESTAMPTZ NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL -- a JSON object, stored as given (JSONB would reformat it)
);

-- consent_records is each user's consent history: one row per version, the receipt sealed
-- under the user's key. The primary key makes the versions of a user unique, so of two
-- writers appending the same version only one can succeed.
CREATE TABLE consent_records (
    user_id    TEXT NOT NULL,
    version    INTEGER NOT NULL CHECK (version >= 1),
    created    TIMESTAMPTZ NOT NULL,
    ciphertext BYTEA NOT NULL,
    PRIMARY KEY (user_id, version)
);

-- +goose Down
DROP TABLE consent_records;
DROP TABLE key_events;
DROP TABLE keks;
DROP INDEX wrapped_keys_by_kek;
DROP TABLE erased_owners;
