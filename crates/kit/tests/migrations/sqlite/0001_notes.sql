-- A tiny table to prove migrations run and transactions are atomic.
CREATE TABLE notes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    body TEXT NOT NULL UNIQUE
);
