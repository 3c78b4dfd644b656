-- Users' feedback on recommendations and the pooled prior of each recommendation kind. It
-- mirrors internal/sqlite/migrations/00006_feedback.sql table for table.

-- +goose Up

-- recommendation_feedback holds one row per action of a user on a recommendation. The
-- primary key makes a retried request a no-op; what the feedback says about the user is in
-- ciphertext, sealed under the user's key. Recommendations and actions order bytewise
-- (COLLATE "C"), as on SQLite.
CREATE TABLE recommendation_feedback (
    user_id        TEXT NOT NULL,
    recommendation TEXT COLLATE "C" NOT NULL,
    action         TEXT COLLATE "C" NOT NULL,
    at             TIMESTAMPTZ NOT NULL,
    ciphertext     BYTEA NOT NULL,
    PRIMARY KEY (user_id, recommendation, action)
);

-- recommendation_feedback_by_time serves Feedback (a user's feedback since a time, in the
-- order it returns).
CREATE INDEX recommendation_feedback_by_time ON recommendation_feedback (user_id, at, recommendation, action);

-- recommendation_pool is the pooled prior of each recommendation kind: sums over the
-- feedback of every user who allowed pooling, never one user's data. n counts the
-- feedbacks summed; updated is the time of the latest.
CREATE TABLE recommendation_pool (
    kind    TEXT PRIMARY KEY,
    success DOUBLE PRECISION NOT NULL,
    failure DOUBLE PRECISION NOT NULL,
    n       BIGINT NOT NULL,
    updated TIMESTAMPTZ NOT NULL
);

-- +goose Down
DROP TABLE recommendation_pool;
DROP INDEX recommendation_feedback_by_time;
DROP TABLE recommendation_feedback;
