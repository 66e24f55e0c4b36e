-- One row per event that told a user something. The id is the event's (a UUIDv7: ids sort by
-- publish time, and every replica, every redelivery, agrees on it), so storing is idempotent.
CREATE TABLE notifications (
    notification_id TEXT    PRIMARY KEY,
    user_id         TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    about           TEXT    NOT NULL,
    text            TEXT    NOT NULL,
    link            TEXT    NOT NULL,
    subject         TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL,     -- Unix milliseconds, as every time here
    read_at         BIGINT,
    emailed_at      BIGINT                -- set once the e-mail went out: a redelivery sends none
);
CREATE INDEX notifications_by_user ON notifications (user_id, notification_id);
CREATE INDEX notifications_unread ON notifications (user_id, notification_id) WHERE read_at IS NULL;

-- Where a user wants their notifications e-mailed (a setting this service owns).
CREATE TABLE contacts (
    user_id    TEXT    PRIMARY KEY,
    email      TEXT    NOT NULL,
    updated_at BIGINT  NOT NULL
);
