//! The embedded backend: one SQLite table, `queue_jobs`, in its own file by default.
//!
//! Every state change is a single `UPDATE` statement. A write statement takes
//! SQLite's write lock before it reads anything, so "find the oldest due job
//! and lease it" cannot interleave with another process doing the same.
//! Work enqueued in this process wakes waiting workers at once; work enqueued
//! by other processes is found by polling every [`QueueOptions::sqlite_poll`].

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{
    lease_token, FailOutcome, JobId, JobView, Lease, NewJob, QueueError, QueueOptions, Reserved, Retry, StoredView,
    Touch,
};
use crate::shutdown::Shutdown;

/// The table, created at connect (idempotent). `seq` is the place in line:
/// FIFO by enqueue order, kept across retries. Times are Unix milliseconds.
const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS queue_jobs (
    seq             INTEGER PRIMARY KEY,
    id              TEXT    NOT NULL UNIQUE,
    queue           TEXT    NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('queued', 'started', 'retrying', 'finished', 'failed')),
    payload         TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL,
    backoff_base_ms INTEGER NOT NULL,
    backoff_max_ms  INTEGER NOT NULL,
    run_at          INTEGER NOT NULL,  -- not reserved before this (retry backoff)
    lease_token     TEXT,              -- the current attempt's secret; NULL unless started
    lease_until     INTEGER,           -- the lease's deadline; NULL unless started
    worker          TEXT,
    result          TEXT,
    error           TEXT,
    enqueued_at     INTEGER NOT NULL,
    started_at      INTEGER,
    finished_at     INTEGER,
    progress        INTEGER,           -- 0-100, as the current attempt's worker reported it
    cancelled       INTEGER NOT NULL DEFAULT 0  -- 1: cancelled (state failed; lease_token kept for its holder)
);
-- Reserve: the oldest waiting job of a queue.
CREATE INDEX IF NOT EXISTS queue_jobs_waiting ON queue_jobs (queue, seq) WHERE state IN ('queued', 'retrying');
-- Maintenance: leases that ran out, and settled jobs past their retention.
CREATE INDEX IF NOT EXISTS queue_jobs_leases ON queue_jobs (lease_until) WHERE state = 'started';
CREATE INDEX IF NOT EXISTS queue_jobs_settled ON queue_jobs (finished_at) WHERE state IN ('finished', 'failed');
"#;

/// Columns added after the first release, for files created before them: `(name, definition)`.
const ADDED_COLUMNS: &[(&str, &str)] =
    &[("progress", "progress INTEGER"), ("cancelled", "cancelled INTEGER NOT NULL DEFAULT 0")];

const RESERVE: &str = "
UPDATE queue_jobs
   SET state = 'started', attempts = attempts + 1, lease_token = ?1, lease_until = ?2 + ?3, worker = ?4,
       started_at = ?2, progress = NULL
 WHERE seq = (SELECT seq FROM queue_jobs
               WHERE queue = ?5 AND state IN ('queued', 'retrying') AND run_at <= ?2
               ORDER BY seq LIMIT 1)
RETURNING id, payload, attempts, max_attempts, backoff_base_ms, backoff_max_ms, enqueued_at";

const REQUEUE_EXPIRED: &str = "
UPDATE queue_jobs
   SET state = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'retrying' END,
       error = 'lease expired: worker ' || COALESCE(worker, '?') || ' stopped renewing during attempt '
               || attempts || ' of ' || max_attempts,
       finished_at = CASE WHEN attempts >= max_attempts THEN ?1 ELSE NULL END,
       run_at = ?1, lease_token = NULL, lease_until = NULL
 WHERE state = 'started' AND lease_until <= ?1
RETURNING queue, state";

const FAIL: &str = "
UPDATE queue_jobs
   SET state = CASE WHEN ?7 = 0 OR attempts >= max_attempts THEN 'failed' ELSE 'retrying' END,
       error = ?1,
       finished_at = CASE WHEN ?7 = 0 OR attempts >= max_attempts THEN ?2 ELSE NULL END,
       run_at = ?2 + ?3, lease_token = NULL, lease_until = NULL
 WHERE id = ?4 AND state = 'started' AND lease_token = ?5 AND attempts = ?6
RETURNING state, run_at";

/// How often one process sweeps expired leases from inside `reserve`.
const REAP_EVERY_MS: i64 = 100;

/// The embedded queue. Clones share the pool.
#[derive(Clone)]
pub struct SqliteQueue {
    inner: Arc<Inner>,
}

struct Inner {
    pool: SqlitePool,
    signals: Arc<Signals>,
    poll: Duration,
    last_reap_ms: AtomicI64,
    known_queues: Mutex<HashSet<String>>,
}

/// Wake-ups shared by every connection of this process to the same file.
#[derive(Default)]
struct Signals {
    work: Notify,
    settled: Notify,
}

fn signals_for(path: PathBuf) -> Arc<Signals> {
    static ALL: OnceLock<Mutex<HashMap<PathBuf, Weak<Signals>>>> = OnceLock::new();
    let mut all = ALL.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    all.retain(|_, s| s.strong_count() > 0);
    if let Some(signals) = all.get(&path).and_then(Weak::upgrade) {
        return signals;
    }
    let signals = Arc::new(Signals::default());
    all.insert(path, Arc::downgrade(&signals));
    signals
}

/// Adds the columns of [`ADDED_COLUMNS`] that a file made by an older version lacks. Two processes
/// may race here: a column that turns out to exist already is fine.
async fn add_missing_columns(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    let present: Vec<String> =
        sqlx::query_scalar("SELECT name FROM pragma_table_info('queue_jobs')").fetch_all(pool).await?;
    for (name, definition) in ADDED_COLUMNS {
        if present.iter().any(|p| p == name) {
            continue;
        }
        let added = sqlx::raw_sql(&format!("ALTER TABLE queue_jobs ADD COLUMN {definition}")).execute(pool).await;
        if let Err(err) = added {
            if !err.to_string().contains("duplicate column") {
                return Err(err);
            }
        }
    }
    Ok(())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX / 4)
}

impl SqliteQueue {
    pub(super) async fn connect(url: &str, options: &QueueOptions) -> Result<Self, QueueError> {
        let shown = crate::config::redact_url(url);
        let unavailable = |e: sqlx::Error| QueueError::Unavailable { url: shown.clone(), reason: e.to_string() };
        let connect_options = SqliteConnectOptions::from_str(url)
            .map_err(unavailable)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        let path = connect_options.get_filename().to_path_buf();
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(connect_options)
            .await
            .map_err(unavailable)?;
        sqlx::raw_sql(SCHEMA).execute(&pool).await.map_err(unavailable)?;
        add_missing_columns(&pool).await.map_err(unavailable)?;
        let key = std::fs::canonicalize(&path).unwrap_or(path);
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                signals: signals_for(key),
                poll: options.sqlite_poll.max(Duration::from_millis(1)),
                last_reap_ms: AtomicI64::new(0),
                known_queues: Mutex::new(HashSet::new()),
            }),
        })
    }

    fn remember(&self, queue: &str) {
        let mut known = self.inner.known_queues.lock().unwrap_or_else(|p| p.into_inner());
        if !known.contains(queue) {
            known.insert(queue.to_string());
        }
    }

    pub(super) async fn enqueue(&self, job: &NewJob<'_>) -> Result<(), QueueError> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO queue_jobs (id, queue, state, payload, max_attempts, backoff_base_ms, backoff_max_ms, \
             run_at, enqueued_at) VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?6, ?7, ?7)",
        )
        .bind(job.id.to_string())
        .bind(job.queue)
        .bind(&job.payload)
        .bind(i64::from(job.max_attempts))
        .bind(to_i64(job.backoff_base_ms))
        .bind(to_i64(job.backoff_max_ms))
        .bind(now)
        .execute(&self.inner.pool)
        .await?;
        self.remember(job.queue);
        self.inner.signals.work.notify_waiters();
        Ok(())
    }

    pub(super) async fn reserve(
        &self,
        queue: &str,
        worker: &str,
        lease_ms: u64,
        wait: Duration,
        cancel: Option<&Shutdown>,
    ) -> Result<Option<Lease>, QueueError> {
        self.remember(queue);
        let deadline = Instant::now() + wait;
        loop {
            // Registered before looking, so an enqueue between the look and the nap still wakes us.
            let notified = self.inner.signals.work.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.requeue_expired_if_due().await?;
            if let Some(lease) = self.try_reserve(queue, worker, lease_ms).await? {
                return Ok(Some(lease));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let cancelled = async {
                match cancel {
                    Some(token) => token.cancelled().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep((deadline - now).min(self.inner.poll)) => {}
                _ = cancelled => return Ok(None),
            }
        }
    }

    async fn try_reserve(&self, queue: &str, worker: &str, lease_ms: u64) -> Result<Option<Lease>, QueueError> {
        let token = lease_token();
        let now = now_ms();
        let row = sqlx::query(RESERVE)
            .bind(&token)
            .bind(now)
            .bind(to_i64(lease_ms))
            .bind(worker)
            .bind(queue)
            .fetch_optional(&self.inner.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let reserved = Reserved {
            id: row.try_get("id")?,
            payload: row.try_get("payload")?,
            attempt: row.try_get("attempts")?,
            max_attempts: row.try_get("max_attempts")?,
            backoff_base_ms: row.try_get("backoff_base_ms")?,
            backoff_max_ms: row.try_get("backoff_max_ms")?,
            enqueued_at_ms: row.try_get("enqueued_at")?,
            started_at_ms: now,
        };
        reserved.into_lease(queue, worker, token).map(Some)
    }

    /// Reserve sweeps expired leases itself (so a dead worker's job moves on even
    /// without maintenance), but at most every [`REAP_EVERY_MS`] per process.
    async fn requeue_expired_if_due(&self) -> Result<(), QueueError> {
        let now = now_ms();
        let last = self.inner.last_reap_ms.load(Ordering::Relaxed);
        if now - last < REAP_EVERY_MS {
            return Ok(());
        }
        if self.inner.last_reap_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            self.requeue_expired().await?;
        }
        Ok(())
    }

    pub(super) async fn requeue_expired(&self) -> Result<u64, QueueError> {
        let rows = sqlx::query(REQUEUE_EXPIRED).bind(now_ms()).fetch_all(&self.inner.pool).await?;
        for row in &rows {
            let queue: String = row.try_get("queue")?;
            let state: String = row.try_get("state")?;
            let outcome = if state == "failed" { "failed" } else { "expired" };
            tracing::warn!(queue = %queue, outcome, "a job's lease ran out (its worker died or stalled)");
            metrics::counter!("queue_jobs_total", "queue" => queue, "outcome" => outcome).increment(1);
        }
        if !rows.is_empty() {
            self.inner.signals.work.notify_waiters();
            self.inner.signals.settled.notify_waiters();
        }
        Ok(rows.len() as u64)
    }

    pub(super) async fn renew(&self, held: &Lease, lease_ms: u64) -> Result<Touch, QueueError> {
        let done = sqlx::query(
            "UPDATE queue_jobs SET lease_until = ?1 + ?2 \
             WHERE id = ?3 AND state = 'started' AND lease_token = ?4 AND attempts = ?5",
        )
        .bind(now_ms())
        .bind(to_i64(lease_ms))
        .bind(held.id.to_string())
        .bind(&held.token)
        .bind(i64::from(held.attempt))
        .execute(&self.inner.pool)
        .await?;
        self.touched(held, done.rows_affected()).await
    }

    pub(super) async fn progress(&self, held: &Lease, percent: u8) -> Result<Touch, QueueError> {
        let done = sqlx::query(
            "UPDATE queue_jobs SET progress = ?1 \
             WHERE id = ?2 AND state = 'started' AND lease_token = ?3 AND attempts = ?4",
        )
        .bind(i64::from(percent))
        .bind(held.id.to_string())
        .bind(&held.token)
        .bind(i64::from(held.attempt))
        .execute(&self.inner.pool)
        .await?;
        self.touched(held, done.rows_affected()).await
    }

    /// What a holder's update that changed `rows` rows means: held, or else lost or cancelled.
    async fn touched(&self, held: &Lease, rows: u64) -> Result<Touch, QueueError> {
        if rows == 1 {
            return Ok(Touch::Held);
        }
        let cancelled: Option<i64> =
            sqlx::query_scalar("SELECT cancelled FROM queue_jobs WHERE id = ?1 AND lease_token = ?2 AND attempts = ?3")
                .bind(held.id.to_string())
                .bind(&held.token)
                .bind(i64::from(held.attempt))
                .fetch_optional(&self.inner.pool)
                .await?;
        Ok(if cancelled == Some(1) { Touch::Cancelled } else { Touch::Lost })
    }

    pub(super) async fn cancel(&self, id: JobId) -> Result<bool, QueueError> {
        // The lease token stays, so that its holder can tell "cancelled" from "lost".
        let done = sqlx::query(
            "UPDATE queue_jobs SET state = 'failed', cancelled = 1, error = ?1, finished_at = ?2, lease_until = NULL \
             WHERE id = ?3 AND state IN ('queued', 'retrying', 'started')",
        )
        .bind(super::CANCELLED)
        .bind(now_ms())
        .bind(id.to_string())
        .execute(&self.inner.pool)
        .await?;
        let cancelled = done.rows_affected() == 1;
        if cancelled {
            self.inner.signals.settled.notify_waiters();
        }
        Ok(cancelled)
    }

    pub(super) async fn complete(&self, held: &Lease, result: &str) -> Result<bool, QueueError> {
        let done = sqlx::query(
            "UPDATE queue_jobs SET state = 'finished', result = ?1, error = NULL, finished_at = ?2, \
             lease_token = NULL, lease_until = NULL \
             WHERE id = ?3 AND state = 'started' AND lease_token = ?4 AND attempts = ?5",
        )
        .bind(result)
        .bind(now_ms())
        .bind(held.id.to_string())
        .bind(&held.token)
        .bind(i64::from(held.attempt))
        .execute(&self.inner.pool)
        .await?;
        let done = done.rows_affected() == 1;
        if done {
            self.inner.signals.settled.notify_waiters();
        }
        Ok(done)
    }

    pub(super) async fn fail(
        &self,
        held: &Lease,
        error: &str,
        delay_ms: u64,
        retry: Retry,
    ) -> Result<Option<FailOutcome>, QueueError> {
        let row = sqlx::query(FAIL)
            .bind(error)
            .bind(now_ms())
            .bind(to_i64(delay_ms))
            .bind(held.id.to_string())
            .bind(&held.token)
            .bind(i64::from(held.attempt))
            .bind(retry == Retry::IfAttemptsLeft)
            .fetch_optional(&self.inner.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let state: String = row.try_get("state")?;
        if state == "failed" {
            self.inner.signals.settled.notify_waiters();
            return Ok(Some(FailOutcome::Failed));
        }
        let run_at: i64 = row.try_get("run_at")?;
        let at = super::timestamp(run_at)
            .ok_or_else(|| QueueError::Corrupt { id: held.id.to_string(), reason: format!("bad run_at {run_at}") })?;
        // Waiting workers recompute their nap; the retry is found by the poll once due.
        self.inner.signals.work.notify_waiters();
        Ok(Some(FailOutcome::Retrying { at }))
    }

    pub(super) async fn status(&self, id: JobId) -> Result<Option<JobView>, QueueError> {
        let row = sqlx::query(
            "SELECT id, queue, state, attempts, max_attempts, result, error, enqueued_at, started_at, finished_at, \
             progress, cancelled FROM queue_jobs WHERE id = ?1",
        )
        .bind(id.to_string())
        .fetch_optional(&self.inner.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        StoredView {
            id: row.try_get("id")?,
            queue: row.try_get("queue")?,
            state: row.try_get("state")?,
            attempts: row.try_get("attempts")?,
            max_attempts: row.try_get("max_attempts")?,
            result: row.try_get("result")?,
            error: row.try_get("error")?,
            enqueued_at_ms: row.try_get("enqueued_at")?,
            started_at_ms: row.try_get("started_at")?,
            finished_at_ms: row.try_get("finished_at")?,
            progress: row.try_get("progress")?,
            cancelled: row.try_get::<i64, _>("cancelled")? == 1,
        }
        .into_view()
        .map(Some)
    }

    pub(super) async fn wait_finished(&self, id: JobId, timeout: Duration) -> Result<Option<JobView>, QueueError> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.inner.signals.settled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.status(id).await? {
                None => return Ok(None),
                Some(view) if view.state.is_terminal() => return Ok(Some(view)),
                Some(_) => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep((deadline - now).min(self.inner.poll)) => {}
            }
        }
    }

    pub(super) async fn depth(&self, queue: &str) -> Result<u64, QueueError> {
        self.remember(queue);
        let depth: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM queue_jobs WHERE queue = ?1 AND state IN ('queued', 'retrying')")
                .bind(queue)
                .fetch_one(&self.inner.pool)
                .await?;
        Ok(depth.max(0) as u64)
    }

    pub(super) async fn depths(&self) -> Result<Vec<(String, u64)>, QueueError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT queue, COUNT(*) FROM queue_jobs WHERE state IN ('queued', 'retrying') GROUP BY queue",
        )
        .fetch_all(&self.inner.pool)
        .await?;
        let mut depths: HashMap<String, u64> =
            self.inner.known_queues.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|q| (q.clone(), 0)).collect();
        for (queue, n) in rows {
            depths.insert(queue, n.max(0) as u64);
        }
        Ok(depths.into_iter().collect())
    }

    pub(super) async fn purge_finished(&self, older_than_ms: u64) -> Result<u64, QueueError> {
        let cutoff = now_ms().saturating_sub(to_i64(older_than_ms));
        let done = sqlx::query("DELETE FROM queue_jobs WHERE state IN ('finished', 'failed') AND finished_at < ?1")
            .bind(cutoff)
            .execute(&self.inner.pool)
            .await?;
        Ok(done.rows_affected())
    }

    pub(super) async fn ping(&self) -> Result<(), QueueError> {
        sqlx::query("SELECT 1").execute(&self.inner.pool).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table as the first release made it, before `progress` and `cancelled`.
    const FIRST_SCHEMA: &str = "CREATE TABLE queue_jobs (
        seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, queue TEXT NOT NULL, state TEXT NOT NULL,
        payload TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, max_attempts INTEGER NOT NULL,
        backoff_base_ms INTEGER NOT NULL, backoff_max_ms INTEGER NOT NULL, run_at INTEGER NOT NULL,
        lease_token TEXT, lease_until INTEGER, worker TEXT, result TEXT, error TEXT,
        enqueued_at INTEGER NOT NULL, started_at INTEGER, finished_at INTEGER)";

    #[tokio::test]
    async fn a_file_made_before_progress_and_cancel_gains_their_columns_and_keeps_its_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let url = crate::db::sqlite_url_in(dir.path(), "queue");
        let old = SqlitePool::connect(&url).await.unwrap();
        sqlx::raw_sql(FIRST_SCHEMA).execute(&old).await.unwrap();
        sqlx::query(
            "INSERT INTO queue_jobs (id, queue, state, payload, max_attempts, backoff_base_ms, backoff_max_ms, \
             run_at, enqueued_at) VALUES (?1, 'old', 'queued', 'null', 3, 10, 10, 0, 0)",
        )
        .bind(JobId::new().to_string())
        .execute(&old)
        .await
        .unwrap();
        old.close().await;

        // Twice: the second connect finds the columns there.
        for _ in 0..2 {
            let queue = SqliteQueue::connect(&url, &QueueOptions::default()).await.unwrap();
            assert_eq!(queue.depth("old").await.unwrap(), 1);
        }
        let queue = SqliteQueue::connect(&url, &QueueOptions::default()).await.unwrap();
        let lease = queue.reserve("old", "w", 10_000, Duration::ZERO, None).await.unwrap().expect("the old job");
        assert_eq!(queue.progress(&lease, 50).await.unwrap(), Touch::Held);
        let view = queue.status(lease.id).await.unwrap().expect("the job");
        assert_eq!((view.progress, view.cancelled), (Some(50), false));
        assert!(queue.cancel(lease.id).await.unwrap());
        assert_eq!(queue.renew(&lease, 10_000).await.unwrap(), Touch::Cancelled);
    }
}
