-- Blobs: content-addressed (sha256), reference-counted. With the file backend their bytes are
-- files under DATA_DIR; with PostgreSQL they are chunks in `blob_chunks`.
CREATE TABLE blobs (
    blob_id    TEXT    PRIMARY KEY,
    size       BIGINT  NOT NULL,
    refs       BIGINT  NOT NULL,
    created_at BIGINT  NOT NULL
);

CREATE TABLE videos (
    video_id    TEXT    PRIMARY KEY,          -- a UUIDv7: sorts by upload time
    owner       TEXT    NOT NULL,
    file_name   TEXT    NOT NULL,
    status      TEXT    NOT NULL CHECK (status IN ('queued', 'converting', 'done', 'failed')),
    progress    INTEGER NOT NULL DEFAULT 0,
    video_blob  TEXT    NOT NULL,
    video_size  BIGINT  NOT NULL,
    duration_ms BIGINT,
    mp3_id      TEXT    UNIQUE,
    mp3_blob    TEXT,
    mp3_size    BIGINT,
    error       TEXT,
    job_id      TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL
);
CREATE INDEX videos_by_owner ON videos (owner, video_id);

-- Converters say whether they can convert (ffmpeg present, with an mp3 encoder) every few seconds.
CREATE TABLE converters (
    worker_id   TEXT    PRIMARY KEY,
    can_convert INTEGER NOT NULL,
    detail      TEXT    NOT NULL,
    seen_at     BIGINT  NOT NULL
);
