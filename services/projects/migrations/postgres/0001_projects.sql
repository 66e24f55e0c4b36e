-- Crowdfunding projects (seed 003). Problems and solutions live in the threads
-- service's database; this one holds projects, their tags, and the outbox of
-- threads still to be created there.
CREATE TABLE projects (
    project_id   BIGSERIAL PRIMARY KEY,
    project_name TEXT NOT NULL,
    tagline      TEXT NOT NULL,
    author       TEXT NOT NULL,
    author_name  TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);

CREATE TABLE tags (
    tag_id     BIGSERIAL PRIMARY KEY,
    project_id BIGINT NOT NULL REFERENCES projects ON DELETE CASCADE,
    tag        TEXT NOT NULL,
    UNIQUE (project_id, tag)
);

-- A proposal's problems and solutions, written in the proposal's transaction
-- and delivered to the threads service by the relay; a row is deleted once the
-- thread exists. `idempotency_key` makes a repeated delivery create nothing new.
CREATE TABLE thread_outbox (
    outbox_id       BIGSERIAL PRIMARY KEY,
    project_id      BIGINT NOT NULL REFERENCES projects ON DELETE CASCADE,
    thread_type     TEXT NOT NULL CHECK (thread_type IN ('PROBLEM', 'SOLUTION')),
    message         TEXT NOT NULL,
    author          TEXT NOT NULL,
    author_name     TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,  -- Unix milliseconds
    last_error      TEXT
);

CREATE INDEX thread_outbox_due ON thread_outbox (next_attempt_at);
CREATE INDEX thread_outbox_project ON thread_outbox (project_id);
