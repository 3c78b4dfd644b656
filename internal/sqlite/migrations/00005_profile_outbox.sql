-- The profile outbox: published is the highest version whose ops are on the user's change
-- feed (the sealed document keeps the latest version's ops until they are). Profiles
-- written before it had their ops published, or lost, at write time, so they start as
-- published. It mirrors internal/postgres/migrations/00005_profile_outbox.sql.

-- +goose Up
ALTER TABLE profiles ADD COLUMN published INTEGER NOT NULL DEFAULT 0;
UPDATE profiles SET published = version;

-- +goose Down
ALTER TABLE profiles DROP COLUMN published;
