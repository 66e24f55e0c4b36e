-- A tiny table to prove migrations run and transactions are atomic.
CREATE TABLE notes (
    id BIGSERIAL PRIMARY KEY,
    body TEXT NOT NULL UNIQUE
);
