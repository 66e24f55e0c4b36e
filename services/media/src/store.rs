//! Where videos, blob reference counts and converter capabilities live: one [`Store`] over
//! SQLite (the embedded default) or PostgreSQL, the same SQL for both (`$n` placeholders,
//! times as Unix milliseconds), each engine with its own migrations under `migrations/`.
//!
//! A blob is referenced by the videos (and mp3s) that use it; it is kept while its count is
//! above zero, so deleting a video never removes bytes another record still uses. A blob's
//! row is locked (PostgreSQL) or the database is (SQLite) while its count and its bytes
//! change together, so an upload of the same bytes and a deletion cannot cross.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use contracts::media::{ConversionFailed, Mp3Ready};
use futures::stream::BoxStream;
use futures::StreamExt;
use kit::db::{Database, Dialect, Migrations};
use sqlx::{PgPool, Row, SqlitePool};

use crate::blobs::{self, BlobError, BlobPlace, Received, CHUNK_BYTES};
use crate::domain::VideoStatus;

/// The media service's migrations, embedded in the binary.
pub const MIGRATIONS: Migrations = kit::migrations!();

/// A video as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Video {
    /// Its id (a UUIDv7).
    pub video_id: String,
    /// The user who uploaded it.
    pub owner: String,
    /// The uploaded file's name.
    pub file_name: String,
    /// Where its conversion is.
    pub status: VideoStatus,
    /// How far the current conversion got, 0–100.
    pub progress: u8,
    /// The upload's blob.
    pub video_blob: String,
    /// The upload's size in bytes.
    pub video_size: u64,
    /// Its length, once probed.
    pub duration_ms: Option<u64>,
    /// The mp3's id (the download's `fid`), once converted.
    pub mp3_id: Option<String>,
    /// The mp3's blob.
    pub mp3_blob: Option<String>,
    /// The mp3's size in bytes.
    pub mp3_size: Option<u64>,
    /// Why it failed (or why the last attempt failed, while retrying).
    pub error: Option<String>,
    /// The conversion job.
    pub job_id: Option<String>,
    /// Conversion attempts started.
    pub attempts: u32,
    /// When it was uploaded.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// Whether any converter can convert, from their latest reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    /// At least one converter that reported recently can.
    Available,
    /// Converters reported recently, none can; their reason.
    Unavailable(String),
    /// No converter reported recently.
    NoConverter,
}

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Blob bytes could not be moved.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// A stored value cannot be read back.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The event could not be staged in the outbox.
    #[error(transparent)]
    Event(#[from] kit::events::EventsError),
    /// The configuration asks for something this database cannot do.
    #[error("{0}")]
    Unsupported(String),
}

#[derive(Debug, Clone)]
enum Engine {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Videos and their blobs.
#[derive(Debug, Clone)]
pub struct Store {
    engine: Engine,
    place: BlobPlace,
    tmp_dir: PathBuf,
}

const VIDEO_COLUMNS: &str = "video_id, owner, file_name, status, progress, video_blob, video_size, duration_ms, \
     mp3_id, mp3_blob, mp3_size, error, job_id, attempts, created_at, updated_at";

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn time(ms: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| StoreError::Corrupt(format!("bad time {ms}")))
}

fn size(n: i64) -> u64 {
    n.max(0) as u64
}

fn db_size(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Reads a video from a row of either engine (a macro: the rows are different types).
macro_rules! video_from {
    ($row:expr) => {{
        let row = $row;
        let status: String = row.try_get("status")?;
        Video {
            video_id: row.try_get("video_id")?,
            owner: row.try_get("owner")?,
            file_name: row.try_get("file_name")?,
            status: VideoStatus::parse(&status)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown video status {status:?}")))?,
            progress: row.try_get::<i32, _>("progress")?.clamp(0, 100) as u8,
            video_blob: row.try_get("video_blob")?,
            video_size: size(row.try_get("video_size")?),
            duration_ms: row.try_get::<Option<i64>, _>("duration_ms")?.map(size),
            mp3_id: row.try_get("mp3_id")?,
            mp3_blob: row.try_get("mp3_blob")?,
            mp3_size: row.try_get::<Option<i64>, _>("mp3_size")?.map(size),
            error: row.try_get("error")?,
            job_id: row.try_get("job_id")?,
            attempts: row.try_get::<i32, _>("attempts")?.max(0) as u32,
            created_at: time(row.try_get("created_at")?)?,
            updated_at: time(row.try_get("updated_at")?)?,
        }
    }};
}

/// Runs the same code on either engine's pool.
macro_rules! on_engine {
    ($self:expr, $pool:ident => $body:expr) => {
        match &$self.engine {
            Engine::Sqlite($pool) => $body,
            Engine::Postgres($pool) => $body,
        }
    };
}

/// Adds one reference to blob `$id` of `$size` bytes inside `$tx`, storing its bytes from
/// `$received` if they are not kept yet. Evaluates to `Result<(), StoreError>`.
macro_rules! add_ref {
    ($store:expr, $tx:expr, $id:expr, $received:expr) => {{
        let received: Received = $received;
        let refs: i64 = sqlx::query_scalar(
            "INSERT INTO blobs (blob_id, size, refs, created_at) VALUES ($1, $2, 1, $3) \
             ON CONFLICT (blob_id) DO UPDATE SET refs = blobs.refs + 1 RETURNING refs",
        )
        .bind($id)
        .bind(db_size(received.size))
        .bind(now_ms())
        .fetch_one(&mut *$tx)
        .await?;
        match &$store.place {
            BlobPlace::Files(dir) => blobs::place_file(dir, $id, received).await.map_err(StoreError::from),
            BlobPlace::Database if refs == 1 => {
                let mut chunks = blobs::read_chunks(&received.path).await?;
                let mut seq = 0i32;
                while let Some(chunk) = chunks.next().await? {
                    sqlx::query("INSERT INTO blob_chunks (blob_id, seq, data) VALUES ($1, $2, $3)")
                        .bind($id)
                        .bind(seq)
                        .bind(chunk)
                        .execute(&mut *$tx)
                        .await?;
                    seq += 1;
                }
                Ok(())
            }
            BlobPlace::Database => Ok(()),
        }
    }};
}

/// Drops one reference to blob `$id` inside `$tx`; evaluates to the file set aside for deletion
/// (file backend, last reference), as `Result<Option<(PathBuf, PathBuf)>, StoreError>`.
macro_rules! drop_ref {
    ($store:expr, $tx:expr, $id:expr) => {{
        let id: &str = $id;
        let refs: Option<i64> =
            sqlx::query_scalar("UPDATE blobs SET refs = refs - 1 WHERE blob_id = $1 RETURNING refs")
                .bind(id)
                .fetch_optional(&mut *$tx)
                .await?;
        match refs {
            Some(refs) if refs <= 0 => {
                sqlx::query("DELETE FROM blobs WHERE blob_id = $1").bind(id).execute(&mut *$tx).await?;
                match &$store.place {
                    BlobPlace::Files(dir) => blobs::set_aside(dir, id).await.map_err(StoreError::from),
                    BlobPlace::Database => {
                        sqlx::query("DELETE FROM blob_chunks WHERE blob_id = $1").bind(id).execute(&mut *$tx).await?;
                        Ok(None)
                    }
                }
            }
            _ => Ok(None),
        }
    }};
}

/// After a transaction that dropped blobs: delete the files set aside if it committed, or put
/// them back if it did not.
async fn settle_aside(aside: Vec<(PathBuf, PathBuf)>, committed: bool) {
    for (file, moved) in aside {
        let done =
            if committed { tokio::fs::remove_file(&moved).await } else { tokio::fs::rename(&moved, &file).await };
        if let Err(err) = done {
            tracing::warn!(file = %moved.display(), error = %err, committed, "a released blob file was not settled");
        }
    }
}

impl Store {
    /// The store for a connected, migrated database, its blobs kept at `place`, its temp files
    /// under `tmp_dir`. Blobs in the database need PostgreSQL.
    pub fn new(db: Database, place: BlobPlace, tmp_dir: PathBuf) -> Result<Self, StoreError> {
        let engine = match db {
            Database::Sqlite(pool) => Engine::Sqlite(pool),
            Database::Postgres(pool) => Engine::Postgres(pool),
        };
        if matches!((&engine, &place), (Engine::Sqlite(_), BlobPlace::Database)) {
            return Err(StoreError::Unsupported(
                "MEDIA_BLOB_STORE=database needs a PostgreSQL DATABASE_URL; with SQLite blobs are files".into(),
            ));
        }
        Ok(Self { engine, place, tmp_dir })
    }

    /// Where temp files go.
    pub fn tmp_dir(&self) -> &std::path::Path {
        &self.tmp_dir
    }

    /// Where blobs are kept.
    pub fn place(&self) -> &BlobPlace {
        &self.place
    }

    /// Stores a new `queued` video of `owner` from its received upload.
    pub async fn create_video(&self, owner: &str, file_name: &str, upload: Received) -> Result<Video, StoreError> {
        let video_id = uuid::Uuid::now_v7().to_string();
        let blob = upload.sha256.clone();
        let video_size = db_size(upload.size);
        let now = now_ms();
        on_engine!(self, pool => {
            let mut tx = Dialect::begin_write(pool).await?;
            add_ref!(self, tx, blob.as_str(), upload)?;
            let row = sqlx::query(&format!(
                "INSERT INTO videos (video_id, owner, file_name, status, video_blob, video_size, created_at, \
                 updated_at) VALUES ($1, $2, $3, 'queued', $4, $5, $6, $6) RETURNING {VIDEO_COLUMNS}"
            ))
            .bind(&video_id)
            .bind(owner)
            .bind(file_name)
            .bind(&blob)
            .bind(video_size)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            let video = video_from!(&row);
            tx.commit().await?;
            Ok(video)
        })
    }

    /// Records the conversion job of a video.
    pub async fn set_job(&self, video_id: &str, job_id: &str) -> Result<(), StoreError> {
        on_engine!(self, pool => {
            sqlx::query("UPDATE videos SET job_id = $1 WHERE video_id = $2")
                .bind(job_id)
                .bind(video_id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// `owner`'s videos, newest first, those before the video `before` if given.
    pub async fn list(&self, owner: &str, limit: u32, before: Option<&str>) -> Result<Vec<Video>, StoreError> {
        let sql = format!(
            "SELECT {VIDEO_COLUMNS} FROM videos WHERE owner = $1 AND ($2 IS NULL OR video_id < $2) \
             ORDER BY video_id DESC LIMIT $3"
        );
        on_engine!(self, pool => {
            let rows = sqlx::query(&sql).bind(owner).bind(before).bind(i64::from(limit)).fetch_all(pool).await?;
            rows.iter().map(|row| Ok(video_from!(row))).collect()
        })
    }

    /// One video, if it exists and is `owner`'s (`None` for anyone else's: no existence oracle).
    pub async fn get(&self, owner: &str, video_id: &str) -> Result<Option<Video>, StoreError> {
        Ok(self.get_any(video_id).await?.filter(|v| v.owner == owner))
    }

    /// One video, whoever's (for the converter).
    pub async fn get_any(&self, video_id: &str) -> Result<Option<Video>, StoreError> {
        let sql = format!("SELECT {VIDEO_COLUMNS} FROM videos WHERE video_id = $1");
        on_engine!(self, pool => {
            let row = sqlx::query(&sql).bind(video_id).fetch_optional(pool).await?;
            row.map(|row| Ok(video_from!(&row))).transpose()
        })
    }

    /// The video whose mp3 is `mp3_id`, if it is `owner`'s.
    pub async fn by_mp3(&self, owner: &str, mp3_id: &str) -> Result<Option<Video>, StoreError> {
        let sql = format!("SELECT {VIDEO_COLUMNS} FROM videos WHERE mp3_id = $1 AND owner = $2");
        on_engine!(self, pool => {
            let row = sqlx::query(&sql).bind(mp3_id).bind(owner).fetch_optional(pool).await?;
            row.map(|row| Ok(video_from!(&row))).transpose()
        })
    }

    /// Deletes `owner`'s video and releases its blobs; the deleted video, or `None` if it is
    /// not theirs or does not exist.
    pub async fn delete(&self, owner: &str, video_id: &str) -> Result<Option<Video>, StoreError> {
        let sql = format!("DELETE FROM videos WHERE video_id = $1 AND owner = $2 RETURNING {VIDEO_COLUMNS}");
        let mut aside = Vec::new();
        let outcome: Result<Option<Video>, StoreError> = on_engine!(self, pool => async {
            let mut tx = Dialect::begin_write(pool).await?;
            let Some(row) = sqlx::query(&sql).bind(video_id).bind(owner).fetch_optional(&mut *tx).await? else {
                return Ok(None);
            };
            let video = video_from!(&row);
            for blob in std::iter::once(&video.video_blob).chain(video.mp3_blob.as_ref()) {
                aside.extend(drop_ref!(self, tx, blob.as_str())?);
            }
            tx.commit().await?;
            Ok(Some(video))
        }.await);
        settle_aside(aside, outcome.is_ok()).await;
        outcome
    }

    /// Marks a pending video `converting` for attempt `attempt`; `None` if it is gone or no
    /// longer pending (deleted, or settled by an earlier attempt).
    pub async fn start_attempt(&self, video_id: &str, attempt: u32) -> Result<Option<Video>, StoreError> {
        let sql = format!(
            "UPDATE videos SET status = 'converting', progress = 0, attempts = $1, updated_at = $2 \
             WHERE video_id = $3 AND status IN ('queued', 'converting') RETURNING {VIDEO_COLUMNS}"
        );
        on_engine!(self, pool => {
            let row = sqlx::query(&sql)
                .bind(i32::try_from(attempt).unwrap_or(i32::MAX))
                .bind(now_ms())
                .bind(video_id)
                .fetch_optional(pool)
                .await?;
            row.map(|row| Ok(video_from!(&row))).transpose()
        })
    }

    /// Records a converting video's progress (and its duration, once probed).
    pub async fn set_progress(&self, video_id: &str, percent: u8, duration_ms: Option<u64>) -> Result<(), StoreError> {
        on_engine!(self, pool => {
            sqlx::query(
                "UPDATE videos SET progress = $1, duration_ms = COALESCE($2, duration_ms), updated_at = $3 \
                 WHERE video_id = $4 AND status = 'converting'",
            )
            .bind(i32::from(percent.min(100)))
            .bind(duration_ms.map(db_size))
            .bind(now_ms())
            .bind(video_id)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Stores the mp3 of a converting video and marks it `done`, staging "mp3 ready" in the
    /// same transaction. `None` (and the mp3 is not kept) if the video is gone or no longer converting.
    pub async fn finish(
        &self,
        video_id: &str,
        mp3: Received,
        duration_ms: u64,
    ) -> Result<Option<(Video, Mp3Ready)>, StoreError> {
        let mp3_id = uuid::Uuid::now_v7().to_string();
        let blob = mp3.sha256.clone();
        let mp3_size = mp3.size;
        let sql = format!(
            "UPDATE videos SET status = 'done', progress = 100, mp3_id = $1, mp3_blob = $2, mp3_size = $3, \
             duration_ms = $4, error = NULL, updated_at = $5 \
             WHERE video_id = $6 AND status = 'converting' RETURNING {VIDEO_COLUMNS}"
        );
        on_engine!(self, pool => {
            let mut tx = Dialect::begin_write(pool).await?;
            let Some(row) = sqlx::query(&sql)
                .bind(&mp3_id)
                .bind(&blob)
                .bind(db_size(mp3_size))
                .bind(db_size(duration_ms))
                .bind(now_ms())
                .bind(video_id)
                .fetch_optional(&mut *tx)
                .await?
            else {
                return Ok(None);
            };
            let video = video_from!(&row);
            add_ref!(self, tx, blob.as_str(), mp3)?;
            let event = Mp3Ready {
                video_id: video.video_id.clone(),
                mp3_id,
                owner: video.owner.clone(),
                file_name: video.file_name.clone(),
                mp3_size,
                duration_ms,
                converted_at: video.updated_at,
            };
            kit::events::outbox::stage(&mut tx, &video.video_id, &event).await?;
            tx.commit().await?;
            Ok(Some((video, event)))
        })
    }

    /// Marks a pending video `failed` for good with `reason`, staging "conversion failed" in
    /// the same transaction; `None` if it is gone or already settled.
    pub async fn fail(&self, video_id: &str, reason: &str) -> Result<Option<ConversionFailed>, StoreError> {
        let sql = format!(
            "UPDATE videos SET status = 'failed', error = $1, updated_at = $2 \
             WHERE video_id = $3 AND status IN ('queued', 'converting') RETURNING {VIDEO_COLUMNS}"
        );
        on_engine!(self, pool => {
            let mut tx = Dialect::begin_write(pool).await?;
            let Some(row) = sqlx::query(&sql).bind(reason).bind(now_ms()).bind(video_id).fetch_optional(&mut *tx).await?
            else {
                return Ok(None);
            };
            let video = video_from!(&row);
            let event = ConversionFailed {
                video_id: video.video_id.clone(),
                owner: video.owner.clone(),
                file_name: video.file_name.clone(),
                reason: reason.to_string(),
                failed_at: video.updated_at,
            };
            kit::events::outbox::stage(&mut tx, &video.video_id, &event).await?;
            tx.commit().await?;
            Ok(Some(event))
        })
    }

    /// Puts a converting video back to `queued` after a failed attempt that will be retried.
    pub async fn requeue(&self, video_id: &str, reason: &str) -> Result<(), StoreError> {
        on_engine!(self, pool => {
            sqlx::query(
                "UPDATE videos SET status = 'queued', progress = 0, error = $1, updated_at = $2 \
                 WHERE video_id = $3 AND status = 'converting'",
            )
            .bind(reason)
            .bind(now_ms())
            .bind(video_id)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// `len` bytes of blob `id` from `start`, streamed.
    pub async fn read_blob(
        &self,
        id: &str,
        start: u64,
        len: u64,
    ) -> Result<BoxStream<'static, Result<bytes::Bytes, std::io::Error>>, StoreError> {
        match (&self.place, &self.engine) {
            (BlobPlace::Files(dir), _) => Ok(blobs::file_stream(blobs::file_of(dir, id), start, len).await?.boxed()),
            (BlobPlace::Database, Engine::Postgres(pool)) => Ok(chunk_stream(pool.clone(), id.to_string(), start, len)),
            (BlobPlace::Database, Engine::Sqlite(_)) => {
                Err(StoreError::Unsupported("blobs in the database need PostgreSQL".into()))
            }
        }
    }

    /// A local file with blob `id`'s bytes, for ffmpeg: the blob's own file with the file
    /// backend, else a temp copy (deleted when the returned guard drops).
    pub async fn local_file(&self, id: &str) -> Result<(PathBuf, Option<tempfile::TempPath>), StoreError> {
        if let BlobPlace::Files(dir) = &self.place {
            let path = blobs::file_of(dir, id);
            if !tokio::fs::try_exists(&path).await.map_err(BlobError::from)? {
                return Err(BlobError::Missing(id.to_string()).into());
            }
            return Ok((path, None));
        }
        let mut writer = blobs::TempWriter::create(&self.tmp_dir).await?;
        let mut stream = self.read_blob(id, 0, u64::MAX).await?;
        while let Some(piece) = stream.next().await {
            writer.write(&piece.map_err(BlobError::from)?).await?;
        }
        let received = writer.finish().await?;
        if received.sha256 != id {
            return Err(BlobError::Missing(format!("{id} (its chunks do not add up to it)")).into());
        }
        let path = received.path.to_path_buf();
        Ok((path, Some(received.path)))
    }

    /// A converter's report of whether it can convert.
    pub async fn report_converter(&self, worker_id: &str, can_convert: bool, detail: &str) -> Result<(), StoreError> {
        on_engine!(self, pool => {
            sqlx::query(
                "INSERT INTO converters (worker_id, can_convert, detail, seen_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (worker_id) DO UPDATE SET can_convert = $2, detail = $3, seen_at = $4",
            )
            .bind(worker_id)
            .bind(i32::from(can_convert))
            .bind(detail)
            .bind(now_ms())
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Removes a stopping converter's report.
    pub async fn forget_converter(&self, worker_id: &str) -> Result<(), StoreError> {
        on_engine!(self, pool => {
            sqlx::query("DELETE FROM converters WHERE worker_id = $1").bind(worker_id).execute(pool).await?;
        });
        Ok(())
    }

    /// Whether a converter that reported within `fresh` can convert.
    pub async fn capability(&self, fresh: std::time::Duration) -> Result<Capability, StoreError> {
        let since = now_ms() - i64::try_from(fresh.as_millis()).unwrap_or(i64::MAX / 2);
        let rows: Vec<(i32, String)> = on_engine!(self, pool => {
            sqlx::query_as("SELECT can_convert, detail FROM converters WHERE seen_at >= $1 ORDER BY can_convert DESC")
                .bind(since)
                .fetch_all(pool)
                .await?
        });
        Ok(match rows.first() {
            None => Capability::NoConverter,
            Some((1, _)) => Capability::Available,
            Some((_, detail)) => Capability::Unavailable(detail.clone()),
        })
    }

    /// Whether the database answers (`/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_engine!(self, pool => { sqlx::query("SELECT 1").execute(pool).await?; });
        Ok(())
    }

    /// How many blobs are kept, and their references in all (for tests and operations).
    pub async fn blob_counts(&self) -> Result<(i64, i64), StoreError> {
        let counts: (i64, Option<i64>) = on_engine!(self, pool => {
            sqlx::query_as("SELECT COUNT(*), CAST(SUM(refs) AS BIGINT) FROM blobs").fetch_one(pool).await?
        });
        Ok((counts.0, counts.1.unwrap_or(0)))
    }
}

/// Reads a blob kept in PostgreSQL chunk by chunk, from `start`, `len` bytes at most.
fn chunk_stream(
    pool: PgPool,
    id: String,
    start: u64,
    len: u64,
) -> BoxStream<'static, Result<bytes::Bytes, std::io::Error>> {
    let chunk = CHUNK_BYTES as u64;
    let first = start / chunk;
    let skip = (start % chunk) as usize;
    futures::stream::try_unfold((first, skip, len), move |(seq, skip, left)| {
        let (pool, id) = (pool.clone(), id.clone());
        async move {
            if left == 0 {
                return Ok(None);
            }
            let data: Option<Vec<u8>> =
                sqlx::query_scalar("SELECT data FROM blob_chunks WHERE blob_id = $1 AND seq = $2")
                    .bind(&id)
                    .bind(i32::try_from(seq).unwrap_or(i32::MAX))
                    .fetch_optional(&pool)
                    .await
                    .map_err(std::io::Error::other)?;
            let Some(data) = data else {
                // Past the last chunk: the blob ended (a `len` of "to the end" stops here).
                return Ok(None);
            };
            let piece = data.get(skip..).unwrap_or_default();
            let take = piece.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let bytes = bytes::Bytes::copy_from_slice(&piece[..take]);
            Ok(Some((bytes, (seq + 1, 0, left - take as u64))))
        }
    })
    .boxed()
}
