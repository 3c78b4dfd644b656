-- Users' feedback on recommendations and the pooled prior of each recommendation kind. It
-- mirrors internal/postgres/migrations/00006_feedback.sql table for table.

-- +goose Up

-- recommendation_feedback holds one row per action of a user on a recommendation. The
-- primary key makes a retried request a no-op; what the feedback says about the user is in
-- ciphertext, sealed under the user's key.
CREATE TABLE recommendation_feedback (
    user_id        TEXT NOT NULL,
    recommendation TEXT NOT NULL,
    action         TEXT NOT NULL,
    at             TEXT NOT NULL,
    ciphertext     BLOB NOT NULL,
    PRIMARY KEY (user_id, recommendation, action)
) STRICT, WITHOUT ROWID;

-- recommendation_feedback_by_time serves Feedback (a user's feedback since a time, in the
-- order it returns).
CREATE INDEX recommendation_feedback_by_time ON recommendation_feedback (user_id, at, recommendation, action);

-- recommendation_pool is the pooled prior of each recommendation kind: sums over the
-- feedback of every user who allowed pooling, never one user's data. n counts the
-- feedbacks summed; updated is the time of the latest.
CREATE TABLE recommendation_pool (
    kind    TEXT NOT NULL PRIMARY KEY,
    success REAL NOT NULL,
    failure REAL NOT NULL,
    n       INTEGER NOT NULL,
    updated TEXT NOT NULL
) STRICT;

-- +goose Down
DROP TABLE recommendation_pool;
DROP INDEX recommendation_feedback_by_time;
DROP TABLE recommendation_feedback;
