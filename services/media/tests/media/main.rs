//! The media service over real sockets: the API and an in-process converter on one database
//! (SQLite, and PostgreSQL when configured, with its blobs in the database), test videos made
//! with ffmpeg at test time. Tests that run ffmpeg are under `ffmpeg::` and are ignored without
//! it (a failure under `AGORA_REQUIRE_BACKENDS=1`).

mod api;
mod support;
