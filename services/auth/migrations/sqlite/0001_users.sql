-- Users of Agora. `username` is kept exactly as given (any Unicode, trimmed);
-- `username_key` is its case fold, computed by the service (SQLite's lower()
-- folds ASCII only), and the unique index on it is what makes a name taken
-- case-insensitively, even for two signups racing each other.
CREATE TABLE users (
    id            TEXT PRIMARY KEY NOT NULL,
    username      TEXT NOT NULL,
    username_key  TEXT NOT NULL,
    password_hash TEXT NOT NULL,  -- argon2id PHC string, parameters included
    created_at    TEXT NOT NULL
);

CREATE UNIQUE INDEX users_username_key ON users (username_key);

-- Failed logins, one row per failure per subject (`user:<name key>` or
-- `ip:<address>`), so every replica sees the same counts. Rows older than the
-- throttling window are pruned by the service.
CREATE TABLE login_failures (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    subject   TEXT NOT NULL,
    failed_at INTEGER NOT NULL  -- Unix milliseconds
);

CREATE INDEX login_failures_subject ON login_failures (subject, failed_at);
CREATE INDEX login_failures_failed_at ON login_failures (failed_at);
