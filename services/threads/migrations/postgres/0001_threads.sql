-- Threads of projects: problems, solutions and comments, and replies to them.
-- The threads service does not know projects (the projects service does), so
-- project_id is a plain number. Listing is "oldest first" by id, served by the
-- (project_id, thread_id) index.
CREATE TABLE threads (
    thread_id        BIGSERIAL PRIMARY KEY,
    project_id       BIGINT NOT NULL,
    parent_thread_id BIGINT REFERENCES threads (thread_id),
    thread_type      TEXT NOT NULL CHECK (thread_type IN ('COMMENT', 'SOLUTION', 'PROBLEM')),
    message          TEXT NOT NULL,
    -- Exact counts, kept equal to the rows of `votes` by the service: a vote
    -- locks its thread's row first, so votes on one thread are serialised.
    up_vote          BIGINT NOT NULL DEFAULT 0 CHECK (up_vote >= 0),
    down_vote        BIGINT NOT NULL DEFAULT 0 CHECK (down_vote >= 0),
    author           TEXT NOT NULL,  -- the user id; only the author may change the message
    author_name      TEXT NOT NULL DEFAULT '',
    -- The caller's retry token: the unique index is what makes a retried (or
    -- raced) creation return the first thread instead of making a second one.
    -- NULL (no key) never conflicts.
    idempotency_key  TEXT UNIQUE,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);

CREATE INDEX threads_project ON threads (project_id, thread_id);

-- One row per voter per thread (no row: no vote); the primary key is what
-- makes "one vote per voter" hold.
CREATE TABLE votes (
    thread_id BIGINT NOT NULL REFERENCES threads (thread_id),
    voter     TEXT NOT NULL,
    direction SMALLINT NOT NULL CHECK (direction IN (1, -1)),  -- 1 up, -1 down
    PRIMARY KEY (thread_id, voter)
);
