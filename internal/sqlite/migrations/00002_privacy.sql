-- Privacy and key management: tombstones of crypto-shredded owners, the KEK registry, the
-- audit log of key-management actions, and users' encrypted consent history. It mirrors
-- internal/postgres/migrations/00002_privacy.sql table for table.

-- +goose Up

-- erased_owners holds a tombstone for every owner whose keys were erased. EraseKeys writes
-- it in the transaction that deletes the keys, and CreateWrappedKey reads it in the
-- transaction of its insert, so no key can be made for an owner once erased.
CREATE TABLE erased_owners (
    owner  TEXT NOT NULL PRIMARY KEY,
    erased TEXT NOT NULL -- time of the first erase
) STRICT, WITHOUT ROWID;

-- wrapped_keys_by_kek serves WrappedKeysByKEK (re-wrapping pages through one KEK's keys in
-- (owner, name) order), CountWrappedKeys and RemoveKEK's in-use check.
CREATE INDEX wrapped_keys_by_kek ON wrapped_keys (kek_id, owner, name);

-- keks is the registry of key-encryption keys: ids and locations, never key material.
CREATE TABLE keks (
    id         TEXT NOT NULL PRIMARY KEY,
    uri        TEXT NOT NULL,
    is_primary INTEGER NOT NULL DEFAULT 0 CHECK (is_primary IN (0, 1)),
    created    TEXT NOT NULL
) STRICT;

-- At most one KEK is primary, whatever a buggy or racing writer does.
CREATE UNIQUE INDEX keks_one_primary ON keks (is_primary) WHERE is_primary = 1;

-- key_events is the append-only audit log of key-management actions. AUTOINCREMENT, unlike
-- a plain rowid, never hands out a seq twice, so seq only ever grows.
CREATE TABLE key_events (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    at     TEXT NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL -- a JSON object, stored as given
) STRICT;

-- consent_records is each user's consent history: one row per version, the receipt sealed
-- under the user's key. The primary key makes the versions of a user unique, so of two
-- writers appending the same version only one can succeed.
CREATE TABLE consent_records (
    user_id    TEXT NOT NULL,
    version    INTEGER NOT NULL CHECK (version >= 1),
    created    TEXT NOT NULL,
    ciphertext BLOB NOT NULL,
    PRIMARY KEY (user_id, version)
) STRICT, WITHOUT ROWID;

-- +goose Down
DROP TABLE consent_records;
DROP TABLE key_events;
DROP TABLE keks;
DROP INDEX wrapped_keys_by_kek;
DROP TABLE erased_owners;
