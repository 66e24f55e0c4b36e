//! The job queue (SPEC §4): enqueue → id; reserve with a lease (a visibility
//! timeout); complete with a result or fail with a reason (retried with
//! jittered exponential backoff up to a number of attempts, then failed);
//! status by id; finished jobs kept for a retention period.
//!
//! Two backends pass one conformance suite (`crates/kit/tests/kit/queue.rs`):
//!
//! * **embedded SQLite**, the default: `QUEUE_URL` unset → `$DATA_DIR/queue.db`
//!   (or `QUEUE_URL=sqlite://…`). Its table is created at connect with
//!   `CREATE TABLE IF NOT EXISTS` rather than `sqlx::migrate!`, so the queue
//!   can share a file with a service's own migrated tables without the two
//!   migration histories tripping over each other. Reservation is one
//!   `UPDATE … WHERE seq = (SELECT … ORDER BY seq LIMIT 1) RETURNING …`
//!   statement, a write transaction from its first step, so it is atomic
//!   across processes (WAL, busy timeout). A waiting reserve wakes at once for
//!   work enqueued in the same process, and finds other processes' work by
//!   polling ([`QueueOptions::sqlite_poll`], 25 ms).
//! * **Redis** (`QUEUE_URL=redis://…`), for more than one machine. Every state
//!   change is one Lua script (atomic in Redis, timed by Redis's clock); an
//!   idle worker blocks on a wake-up list (`BLPOP`, on a connection of its
//!   own) that enqueue pushes to, so it picks a new job up at once rather than
//!   at a poll interval, and a busy worker completes a job and reserves the
//!   next in one script call (one round trip per job).
//!
//! # States
//!
//! ```text
//!            reserve                complete
//! queued ─────────────▶ started ─────────────▶ finished
//!                        │   ▲
//!   fail or lease expiry │   │ reserve (once the backoff has elapsed)
//!   with attempts left   ▼   │
//!                       retrying
//!
//! started ── fail or lease expiry on the last attempt ──▶ failed
//! ```
//!
//! Any job that has not ended can be cancelled ([`Queue::cancel`]): it is
//! `failed` at once with the reason [`CANCELLED`], and a worker holding it
//! learns of it at its next renew (or progress report) and stops.
//!
//! # Delivery
//!
//! At least once. A reservation is a lease: a random token, the attempt
//! number and a deadline. A worker renews its lease while it works
//! ([`run_worker`] does it in the background); if the worker dies, the lease
//! runs out and the job is handed to the next worker that asks (or put back
//! by [`Queue::spawn_maintenance`]), at once, as a new attempt (or marked
//! failed if that was its last). `complete`, `fail` and
//! `renew` check the token and the attempt number, so a worker whose lease
//! ran out gets [`QueueError::LeaseLost`] and two workers never both finish
//! the same attempt. A handler can still run twice (the first worker may have
//! done the work and died before saying so): handlers should be idempotent.
//!
//! # Typed jobs
//!
//! A service describes each kind of job with a [`Job`]: the payload type, its
//! queue, its output and error types; [`run_worker`] hands its handler that
//! type, never raw JSON. The store knows none of this: payloads and results
//! are JSON text, so a job type may gain optional fields without touching
//! what is queued. A payload that no longer parses as its job type fails at
//! once with the parse error as its reason; retrying it would not help.

mod job;
mod redis;
mod sqlite;
mod worker;

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::backoff::Backoff;
use crate::config::{ConfigError, Env, Source};
use crate::shutdown::Shutdown;

pub use job::Job;
pub use worker::{run_worker, run_worker_with, WorkerOptions};

/// The reason stored on a cancelled job.
pub const CANCELLED: &str = "cancelled";

/// A job's identifier (a UUIDv7, so ids sort roughly by creation time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(uuid::Uuid);

impl JobId {
    /// A fresh id.
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> uuid::Uuid {
        self.0
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for JobId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s.trim()).map(Self)
    }
}

/// Where a job is in its life (persisted, visible through [`Queue::status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for its first attempt.
    Queued,
    /// Reserved by a worker, under a lease.
    Started,
    /// An attempt failed (or its worker died); waiting for the next attempt.
    Retrying,
    /// Done, with a result.
    Finished,
    /// Every attempt failed; the last reason is kept.
    Failed,
}

impl JobState {
    /// The name stored and shown (`queued`, `started`, `retrying`, `finished`, `failed`).
    pub fn as_str(&self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Started => "started",
            JobState::Retrying => "retrying",
            JobState::Finished => "finished",
            JobState::Failed => "failed",
        }
    }

    /// Whether the job will not change any more (`finished` or `failed`).
    pub fn is_terminal(&self) -> bool {
        matches!(self, JobState::Finished | JobState::Failed)
    }

    fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "queued" => JobState::Queued,
            "started" => JobState::Started,
            "retrying" => JobState::Retrying,
            "finished" => JobState::Finished,
            "failed" => JobState::Failed,
            _ => return None,
        })
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a job is to be run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EnqueueOptions {
    /// Attempts before the job is marked failed (at least 1).
    pub max_attempts: u32,
    /// Delay between attempts: attempt `n` failing waits `retry_backoff.delay(n - 1)` (jittered).
    pub retry_backoff: Backoff,
}

impl Default for EnqueueOptions {
    fn default() -> Self {
        Self { max_attempts: 3, retry_backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(300)) }
    }
}

impl EnqueueOptions {
    /// The defaults with `max_attempts` attempts.
    pub fn attempts(max_attempts: u32) -> Self {
        Self { max_attempts, ..Self::default() }
    }
}

/// A reserved job: the worker holds it until its lease runs out.
#[derive(Clone)]
pub struct Lease {
    /// The job.
    pub id: JobId,
    /// The queue it came from.
    pub queue: String,
    /// This attempt's number (1 for the first).
    pub attempt: u32,
    /// Attempts allowed in all.
    pub max_attempts: u32,
    /// The worker holding the lease.
    pub worker: String,
    /// When the job was enqueued.
    pub enqueued_at: DateTime<Utc>,
    /// When this attempt started.
    pub started_at: DateTime<Utc>,
    /// What to work on, as stored (JSON text): read with [`Lease::payload`].
    payload: String,
    token: String,
    backoff: Backoff,
    reserved: Instant,
}

impl fmt::Debug for Lease {
    // Neither the token (it proves ownership) nor the payload (it may be large) goes to logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("id", &self.id)
            .field("queue", &self.queue)
            .field("attempt", &self.attempt)
            .field("max_attempts", &self.max_attempts)
            .field("worker", &self.worker)
            .field("started_at", &self.started_at)
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// The payload parsed as `T` (an error if what is stored is not a `T`).
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.payload)
    }

    /// The delay before the next attempt if this one fails.
    fn retry_delay(&self) -> Duration {
        self.backoff.delay(self.attempt.saturating_sub(1))
    }
}

/// What `fail` did with the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Another attempt is due at `at`.
    Retrying {
        /// When the next attempt may start.
        at: DateTime<Utc>,
    },
    /// That was the last attempt: the job is `failed` with this reason.
    Failed,
}

/// A job as a client sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobView {
    /// The job's id.
    pub id: JobId,
    /// Its queue.
    pub queue: String,
    /// Where it is in its life.
    pub state: JobState,
    /// Attempts started so far.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// The handler's result, once finished.
    pub result: Option<Value>,
    /// The last failure's reason (failed or retrying jobs).
    pub error: Option<String>,
    /// When it was enqueued.
    pub enqueued_at: DateTime<Utc>,
    /// When its latest attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished or failed for good.
    pub finished_at: Option<DateTime<Utc>>,
    /// How far the current (or last) attempt got, 0–100, as its worker reported with
    /// [`Queue::progress`]; `None` until it reports (reset when an attempt starts).
    pub progress: Option<u8>,
    /// Whether the job was cancelled ([`Queue::cancel`]): it is then `failed` with the reason `cancelled`.
    pub cancelled: bool,
}

/// Queue failures.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// `QUEUE_URL` names no backend we support.
    #[error("unsupported queue URL {url}: expected sqlite:// or redis://")]
    Unsupported {
        /// The URL, password removed.
        url: String,
    },
    /// The backend could not be reached or opened at connect.
    #[error("queue backend {url} unavailable: {reason}")]
    Unavailable {
        /// The URL, password removed.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The lease is no longer ours: it ran out and the job went to another
    /// worker (or was settled, or purged). The caller must drop the job.
    #[error("lease on job {id} lost: it expired and the job was handed on, or the job is gone")]
    LeaseLost {
        /// The job.
        id: JobId,
    },
    /// The job was cancelled ([`Queue::cancel`]) while this lease held it: the
    /// holder must stop working on it and not settle it (it is already `failed`).
    #[error("job {id} was cancelled")]
    Cancelled {
        /// The job.
        id: JobId,
    },
    /// A queue name that cannot be used.
    #[error("invalid queue name {name:?}: {reason}")]
    InvalidQueueName {
        /// The name given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A payload or result that cannot be written as JSON (a map with
    /// non-string keys, a failing `Serialize` impl).
    #[error("cannot store the {what} of a job of queue {queue} as JSON: {reason}")]
    Encode {
        /// `payload` or `result`.
        what: &'static str,
        /// The job's queue.
        queue: String,
        /// What serde_json said.
        reason: String,
    },
    /// A stored job that does not read back (written by something else?).
    #[error("job {id} is corrupt in the queue store: {reason}")]
    Corrupt {
        /// The job's id as stored.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The SQLite store failed.
    #[error("queue store (sqlite): {0}")]
    Sqlite(#[from] sqlx::Error),
    /// The Redis store failed.
    #[error("queue store (redis): {0}")]
    Redis(#[from] ::redis::RedisError),
    /// `QUEUE_URL` is malformed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The backend is down: refused at once until a probe sees it again (see [`crate::outage`]).
    #[error(transparent)]
    Outage(#[from] crate::outage::Unavailable),
}

impl crate::outage::Gated for QueueError {
    fn failure(&self) -> Option<crate::outage::Failure> {
        match self {
            QueueError::Redis(e) => {
                let unreachable = e.is_io_error()
                    || e.is_connection_refusal()
                    || e.is_connection_dropped()
                    || e.is_timeout()
                    || matches!(e.kind(), ::redis::ErrorKind::BusyLoadingError | ::redis::ErrorKind::TryAgain);
                unreachable.then_some(crate::outage::Failure::Unreachable)
            }
            QueueError::Sqlite(e) => crate::db::failure_of(e),
            _ => None,
        }
    }
}

/// Tuning that rarely changes; the defaults suit production.
#[derive(Debug, Clone)]
pub struct QueueOptions {
    /// Prefix of every Redis key (tests use a unique one each).
    pub redis_prefix: String,
    /// How often a waiting SQLite reserve looks for work enqueued by other
    /// processes (work enqueued in this process wakes it at once).
    pub sqlite_poll: Duration,
    /// How a Redis outage is detected (`DB_OUTAGE_DETECT_MS`, as for databases).
    pub outage: crate::outage::OutagePolicy,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            redis_prefix: "agora:queue".into(),
            sqlite_poll: Duration::from_millis(25),
            outage: crate::outage::OutagePolicy::default(),
        }
    }
}

impl QueueOptions {
    /// The defaults, with the outage policy read from the environment (`DB_OUTAGE_DETECT_MS`).
    pub fn from_env<S: crate::config::Source>(env: &crate::config::Env<S>) -> Result<Self, crate::config::ConfigError> {
        Ok(Self { outage: crate::outage::OutagePolicy::from_env(env)?, ..Self::default() })
    }
}

/// A connection to the job queue: SQLite (embedded) or Redis. Cheap to clone;
/// clones share connections.
#[derive(Clone)]
pub enum Queue {
    /// The embedded backend.
    Sqlite(sqlite::SqliteQueue),
    /// The Redis backend.
    Redis(redis::RedisQueue),
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Queue::{}", self.backend())
    }
}

impl Queue {
    /// Connects to `url` (`redis://…` or `sqlite://…`), or to `$data_dir/queue.db` when `None`.
    pub async fn connect(url: Option<&str>, data_dir: &Path) -> Result<Self, QueueError> {
        Self::connect_with(url, data_dir, QueueOptions::default()).await
    }

    /// [`Queue::connect`] with explicit options.
    pub async fn connect_with(url: Option<&str>, data_dir: &Path, options: QueueOptions) -> Result<Self, QueueError> {
        let url = url.map(str::trim).filter(|u| !u.is_empty());
        let queue = match url {
            None => {
                std::fs::create_dir_all(data_dir).map_err(|e| QueueError::Unavailable {
                    url: data_dir.display().to_string(),
                    reason: format!("cannot create the data directory: {e}"),
                })?;
                let url = crate::db::sqlite_url_in(data_dir, "queue");
                Queue::Sqlite(sqlite::SqliteQueue::connect(&url, &options).await?)
            }
            Some(u) if u.starts_with("sqlite:") => Queue::Sqlite(sqlite::SqliteQueue::connect(u, &options).await?),
            Some(u) if u.starts_with("redis:") || u.starts_with("redis+unix:") || u.starts_with("unix:") => {
                Queue::Redis(redis::RedisQueue::connect(u, &options).await?)
            }
            Some(u) => return Err(QueueError::Unsupported { url: crate::config::redact_url(u) }),
        };
        tracing::info!(backend = queue.backend(), "job queue connected");
        Ok(queue)
    }

    /// Connects to `QUEUE_URL`, or to the embedded queue under `data_dir` when it is unset.
    pub async fn from_env<S: Source>(env: &Env<S>, data_dir: &Path) -> Result<Self, QueueError> {
        // Validated as a URL (the error names the variable), used as written.
        env.url_opt("QUEUE_URL", &["sqlite", "redis", "redis+unix", "unix"])?;
        Self::connect(env.string("QUEUE_URL").as_deref(), data_dir).await
    }

    /// The gate the backend's commands go through, for a service's `/readyz` (Redis; the embedded
    /// queue is a local file and has none).
    pub fn gate(&self) -> Option<crate::outage::Gate> {
        match self {
            Queue::Sqlite(_) => None,
            Queue::Redis(q) => Some(q.gate().clone()),
        }
    }

    /// The backend's name (`sqlite` or `redis`), for logs.
    pub fn backend(&self) -> &'static str {
        match self {
            Queue::Sqlite(_) => "sqlite",
            Queue::Redis(_) => "redis",
        }
    }

    /// Adds a job to the end of `queue`, its payload stored as JSON (for a
    /// [`Job`], `queue` is its [`Job::QUEUE`]).
    pub async fn enqueue(
        &self,
        queue: &str,
        payload: impl Serialize,
        opts: EnqueueOptions,
    ) -> Result<JobId, QueueError> {
        check_queue_name(queue)?;
        let id = JobId::new();
        let job = NewJob {
            id,
            queue,
            payload: to_json("payload", queue, &payload)?,
            max_attempts: opts.max_attempts.max(1),
            backoff_base_ms: duration_ms(opts.retry_backoff.base),
            backoff_max_ms: duration_ms(opts.retry_backoff.max.max(opts.retry_backoff.base)),
        };
        match self {
            Queue::Sqlite(q) => q.enqueue(&job).await?,
            Queue::Redis(q) => q.enqueue(&job).await?,
        }
        metrics::counter!("queue_jobs_total", "queue" => queue.to_string(), "outcome" => "enqueued").increment(1);
        Ok(id)
    }

    /// Reserves the oldest job of `queue` that is due, waiting up to `wait` for one;
    /// the lease lasts `lease` unless renewed.
    pub async fn reserve(
        &self,
        queue: &str,
        worker_id: &str,
        lease: Duration,
        wait: Duration,
    ) -> Result<Option<Lease>, QueueError> {
        self.reserve_until(queue, worker_id, lease, wait, None).await
    }

    /// [`Queue::reserve`] that gives up waiting when `stop` trips, for a worker loop of
    /// one's own: it never gives up while a reservation is being written, so no job is
    /// taken and dropped (dropping a plain `reserve` future could lose a job until its
    /// lease runs out).
    pub async fn reserve_unless_stopped(
        &self,
        queue: &str,
        worker_id: &str,
        lease: Duration,
        wait: Duration,
        stop: &Shutdown,
    ) -> Result<Option<Lease>, QueueError> {
        self.reserve_until(queue, worker_id, lease, wait, Some(stop)).await
    }

    /// [`Queue::reserve`] that also gives up waiting when `cancel` trips (never
    /// while a reservation is being written, so no job is taken and dropped).
    pub(crate) async fn reserve_until(
        &self,
        queue: &str,
        worker_id: &str,
        lease: Duration,
        wait: Duration,
        cancel: Option<&Shutdown>,
    ) -> Result<Option<Lease>, QueueError> {
        check_queue_name(queue)?;
        let lease_ms = duration_ms(lease).max(1);
        let reserved = match self {
            Queue::Sqlite(q) => q.reserve(queue, worker_id, lease_ms, wait, cancel).await?,
            Queue::Redis(q) => q.reserve(queue, worker_id, lease_ms, wait, cancel).await?,
        };
        if let Some(lease) = &reserved {
            record_reservation(lease);
        }
        Ok(reserved)
    }

    /// Extends the lease to `lease` from now; [`QueueError::LeaseLost`] if it is no longer ours.
    pub async fn renew(&self, held: &Lease, lease: Duration) -> Result<(), QueueError> {
        let lease_ms = duration_ms(lease).max(1);
        let renewed = match self {
            Queue::Sqlite(q) => q.renew(held, lease_ms).await?,
            Queue::Redis(q) => q.renew(held, lease_ms).await?,
        };
        renewed.into_result(held)
    }

    /// Records how far the holder of `held` has got (`percent`, capped at 100),
    /// shown as [`JobView::progress`]. [`QueueError::LeaseLost`] if the lease is no
    /// longer ours, [`QueueError::Cancelled`] if the job was cancelled.
    pub async fn progress(&self, held: &Lease, percent: u8) -> Result<(), QueueError> {
        let percent = percent.min(100);
        let recorded = match self {
            Queue::Sqlite(q) => q.progress(held, percent).await?,
            Queue::Redis(q) => q.progress(held, percent).await?,
        };
        recorded.into_result(held)
    }

    /// Cancels a job that has not ended: it becomes `failed` with the reason
    /// `cancelled` at once (waiters of [`Queue::wait_finished`] return), is never
    /// reserved again, and a worker holding it learns of it at its next
    /// [`Queue::renew`] or [`Queue::progress`] ([`QueueError::Cancelled`]).
    /// Returns whether it was cancelled: `false` if it had already ended or is unknown.
    pub async fn cancel(&self, id: JobId) -> Result<bool, QueueError> {
        let cancelled = match self {
            Queue::Sqlite(q) => q.cancel(id).await?,
            Queue::Redis(q) => q.cancel(id).await?,
        };
        if let (true, Some(job)) = (cancelled, self.status(id).await?) {
            metrics::counter!("queue_jobs_total", "queue" => job.queue, "outcome" => "cancelled").increment(1);
        }
        Ok(cancelled)
    }

    /// Marks the job finished with `result` (stored as JSON); [`QueueError::LeaseLost`]
    /// if the lease is no longer ours.
    pub async fn complete(&self, held: &Lease, result: impl Serialize) -> Result<(), QueueError> {
        self.complete_json(held, &to_json("result", &held.queue, &result)?).await
    }

    /// [`Queue::complete`] with the result already JSON text.
    pub(crate) async fn complete_json(&self, held: &Lease, result: &str) -> Result<(), QueueError> {
        let done = match self {
            Queue::Sqlite(q) => q.complete(held, result).await?,
            Queue::Redis(q) => q.complete(held, result).await?,
        };
        record_completion(held, done)
    }

    /// [`Queue::complete`], then a reservation of the next job of the same queue
    /// without waiting: on Redis one round trip (one script) instead of two, which
    /// is what a busy worker does between jobs. The completion's own outcome comes
    /// first, the next lease second.
    pub(crate) async fn complete_then_reserve(
        &self,
        held: &Lease,
        result: &str,
        worker_id: &str,
        lease: Duration,
    ) -> Result<(Result<(), QueueError>, Option<Lease>), QueueError> {
        let lease_ms = duration_ms(lease).max(1);
        let (done, next) = match self {
            Queue::Sqlite(q) => {
                let done = q.complete(held, result).await?;
                (done, q.reserve(&held.queue, worker_id, lease_ms, Duration::ZERO, None).await?)
            }
            Queue::Redis(q) => q.complete_then_reserve(held, result, worker_id, lease_ms).await?,
        };
        if let Some(next) = &next {
            record_reservation(next);
        }
        Ok((record_completion(held, done), next))
    }

    /// Records a failed attempt: the job is retried after a jittered backoff, or
    /// fails for good (keeping `error`) if that was its last attempt.
    pub async fn fail(&self, held: &Lease, error: &str) -> Result<FailOutcome, QueueError> {
        self.settle_failure(held, error, Retry::IfAttemptsLeft).await
    }

    /// Marks the job failed for good with `reason`, attempts left or not: for a
    /// job that cannot succeed (its payload does not parse, its input is not
    /// what it should be), so that it fails once rather than in a retry loop.
    pub async fn fail_permanently(&self, held: &Lease, reason: &str) -> Result<(), QueueError> {
        self.settle_failure(held, reason, Retry::Never).await.map(|_| ())
    }

    async fn settle_failure(&self, held: &Lease, error: &str, retry: Retry) -> Result<FailOutcome, QueueError> {
        let delay_ms = duration_ms(held.retry_delay());
        let outcome = match self {
            Queue::Sqlite(q) => q.fail(held, error, delay_ms, retry).await?,
            Queue::Redis(q) => q.fail(held, error, delay_ms, retry).await?,
        };
        let Some(outcome) = outcome else {
            metrics::counter!("queue_jobs_total", "queue" => held.queue.clone(), "outcome" => "lease_lost")
                .increment(1);
            return Err(QueueError::LeaseLost { id: held.id });
        };
        let label = match outcome {
            FailOutcome::Retrying { .. } => "retrying",
            FailOutcome::Failed => "failed",
        };
        metrics::counter!("queue_jobs_total", "queue" => held.queue.clone(), "outcome" => label).increment(1);
        metrics::histogram!("queue_job_duration_seconds", "queue" => held.queue.clone())
            .record(held.reserved.elapsed().as_secs_f64());
        Ok(outcome)
    }

    /// The job, or `None` if no such job exists (never did, or was purged).
    pub async fn status(&self, id: JobId) -> Result<Option<JobView>, QueueError> {
        match self {
            Queue::Sqlite(q) => q.status(id).await,
            Queue::Redis(q) => q.status(id).await,
        }
    }

    /// Waits until the job is finished or failed and returns it; `None` if it is
    /// unknown or still running after `timeout`. Returns as soon as the job ends
    /// (Redis pub/sub; in-process notification or a short poll on SQLite).
    pub async fn wait_finished(&self, id: JobId, timeout: Duration) -> Result<Option<JobView>, QueueError> {
        match self {
            Queue::Sqlite(q) => q.wait_finished(id, timeout).await,
            Queue::Redis(q) => q.wait_finished(id, timeout).await,
        }
    }

    /// Jobs of `queue` waiting for a worker (`queued` or `retrying`).
    pub async fn depth(&self, queue: &str) -> Result<u64, QueueError> {
        check_queue_name(queue)?;
        let depth = match self {
            Queue::Sqlite(q) => q.depth(queue).await?,
            Queue::Redis(q) => q.depth(queue).await?,
        };
        record_depth(queue, depth);
        Ok(depth)
    }

    /// Deletes finished and failed jobs that ended more than `older_than` ago; returns how many.
    pub async fn purge_finished(&self, older_than: Duration) -> Result<u64, QueueError> {
        match self {
            Queue::Sqlite(q) => q.purge_finished(duration_ms(older_than)).await,
            Queue::Redis(q) => q.purge_finished(duration_ms(older_than)).await,
        }
    }

    /// Puts back every job whose lease ran out (its worker died), or fails it if
    /// that was its last attempt; returns how many. Reserve does this too, for
    /// its own queue; maintenance does it for all.
    pub async fn requeue_expired(&self) -> Result<u64, QueueError> {
        let expired = match self {
            Queue::Sqlite(q) => q.requeue_expired().await?,
            Queue::Redis(q) => q.requeue_expired().await?,
        };
        Ok(expired)
    }

    /// Whether the backend answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), String> {
        match self {
            Queue::Sqlite(q) => q.ping().await,
            Queue::Redis(q) => q.ping().await,
        }
        .map_err(|e| format!("queue: {e}"))
    }

    /// Refreshes the `queue_depth` gauge of every queue known to the store.
    pub async fn record_depths(&self) -> Result<(), QueueError> {
        let depths = match self {
            Queue::Sqlite(q) => q.depths().await?,
            Queue::Redis(q) => q.depths().await?,
        };
        for (queue, depth) in depths {
            record_depth(&queue, depth);
        }
        Ok(())
    }

    /// Starts the background housekeeping: every `retention / 4` (between 50 ms
    /// and 1 s) it puts back jobs whose lease ran out, deletes finished and
    /// failed jobs older than `retention`, and refreshes the depth gauges; it
    /// stops when `shutdown` trips.
    pub fn spawn_maintenance(&self, retention: Duration, shutdown: Shutdown) -> tokio::task::JoinHandle<()> {
        let queue = self.clone();
        let period = (retention / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let pass = async {
                    let requeued = queue.requeue_expired().await?;
                    let purged = queue.purge_finished(retention).await?;
                    queue.record_depths().await?;
                    Ok::<_, QueueError>((requeued, purged))
                };
                match pass.await {
                    Ok((requeued, purged)) => {
                        if failing {
                            tracing::info!(backend = queue.backend(), "queue maintenance recovered");
                            failing = false;
                        }
                        if requeued > 0 || purged > 0 {
                            tracing::debug!(requeued, purged, "queue maintenance");
                        }
                    }
                    Err(err) => {
                        // Logged once per outage, not once per tick.
                        if !failing {
                            let backend = queue.backend();
                            tracing::warn!(backend, error = %err, "queue maintenance failed; retrying");
                            failing = true;
                        }
                    }
                }
            }
        })
    }
}

/// What a backend found when the holder of a lease touched its job (renew, progress).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Touch {
    /// The lease is held; the change was made.
    Held,
    /// The lease is no longer ours.
    Lost,
    /// The job was cancelled during this attempt.
    Cancelled,
}

impl Touch {
    fn into_result(self, held: &Lease) -> Result<(), QueueError> {
        match self {
            Touch::Held => Ok(()),
            Touch::Lost => Err(QueueError::LeaseLost { id: held.id }),
            Touch::Cancelled => Err(QueueError::Cancelled { id: held.id }),
        }
    }
}

/// Whether a failed attempt may be followed by another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// While the job has attempts left, after its backoff.
    IfAttemptsLeft,
    /// No: the job fails now.
    Never,
}

/// A job about to be stored.
struct NewJob<'a> {
    id: JobId,
    queue: &'a str,
    payload: String,
    max_attempts: u32,
    backoff_base_ms: u64,
    backoff_max_ms: u64,
}

/// The columns a reservation reads back, shared by both backends.
struct Reserved {
    id: String,
    payload: String,
    attempt: i64,
    max_attempts: i64,
    backoff_base_ms: i64,
    backoff_max_ms: i64,
    enqueued_at_ms: i64,
    started_at_ms: i64,
}

impl Reserved {
    fn into_lease(self, queue: &str, worker: &str, token: String) -> Result<Lease, QueueError> {
        let corrupt = |reason: String| QueueError::Corrupt { id: self.id.clone(), reason };
        let id = self.id.parse().map_err(|e| corrupt(format!("bad id: {e}")))?;
        let base = Duration::from_millis(self.backoff_base_ms.max(0) as u64);
        let max = Duration::from_millis(self.backoff_max_ms.max(0) as u64);
        Ok(Lease {
            id,
            queue: queue.to_string(),
            attempt: u32::try_from(self.attempt).map_err(|_| corrupt(format!("bad attempt {}", self.attempt)))?,
            max_attempts: u32::try_from(self.max_attempts)
                .map_err(|_| corrupt(format!("bad max_attempts {}", self.max_attempts)))?,
            worker: worker.to_string(),
            enqueued_at: timestamp(self.enqueued_at_ms).ok_or_else(|| corrupt("bad enqueued_at".into()))?,
            started_at: timestamp(self.started_at_ms).ok_or_else(|| corrupt("bad started_at".into()))?,
            payload: self.payload,
            token,
            backoff: Backoff::new(base, max.max(base)),
            reserved: Instant::now(),
        })
    }
}

/// A job's stored fields, as both backends read them for [`JobView`].
struct StoredView {
    id: String,
    queue: String,
    state: String,
    attempts: i64,
    max_attempts: i64,
    result: Option<String>,
    error: Option<String>,
    enqueued_at_ms: i64,
    started_at_ms: Option<i64>,
    finished_at_ms: Option<i64>,
    progress: Option<i64>,
    cancelled: bool,
}

impl StoredView {
    fn into_view(self) -> Result<JobView, QueueError> {
        let corrupt = |reason: String| QueueError::Corrupt { id: self.id.clone(), reason };
        let result = match &self.result {
            Some(raw) => Some(serde_json::from_str(raw).map_err(|e| corrupt(format!("bad result: {e}")))?),
            None => None,
        };
        let optional_time = |ms: Option<i64>, what: &str| match ms {
            None => Ok(None),
            Some(ms) => timestamp(ms).map(Some).ok_or_else(|| corrupt(format!("bad {what}"))),
        };
        Ok(JobView {
            id: self.id.parse().map_err(|e| corrupt(format!("bad id: {e}")))?,
            state: JobState::parse(&self.state).ok_or_else(|| corrupt(format!("unknown state {:?}", self.state)))?,
            attempts: u32::try_from(self.attempts).map_err(|_| corrupt("bad attempts".into()))?,
            max_attempts: u32::try_from(self.max_attempts).map_err(|_| corrupt("bad max_attempts".into()))?,
            result,
            enqueued_at: timestamp(self.enqueued_at_ms).ok_or_else(|| corrupt("bad enqueued_at".into()))?,
            started_at: optional_time(self.started_at_ms, "started_at")?,
            finished_at: optional_time(self.finished_at_ms, "finished_at")?,
            progress: self.progress.map(|p| p.clamp(0, 100) as u8),
            cancelled: self.cancelled,
            queue: self.queue,
            error: self.error,
        })
    }
}

/// Queue names become Redis keys and metric labels: keep them short and printable.
fn check_queue_name(name: &str) -> Result<(), QueueError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > 128 {
        "it is longer than 128 bytes"
    } else if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        "it contains whitespace or control characters"
    } else {
        return Ok(());
    };
    Err(QueueError::InvalidQueueName { name: name.chars().take(140).collect(), reason })
}

/// `queue_wait_seconds`: how long a job waited for its first attempt.
fn record_reservation(lease: &Lease) {
    if lease.attempt == 1 {
        let waited = (lease.started_at - lease.enqueued_at).num_microseconds().unwrap_or(0).max(0);
        metrics::histogram!("queue_wait_seconds", "queue" => lease.queue.clone()).record(waited as f64 / 1e6);
    }
}

/// Counts a completion (or a lost lease) and times the job.
fn record_completion(held: &Lease, done: bool) -> Result<(), QueueError> {
    if !done {
        metrics::counter!("queue_jobs_total", "queue" => held.queue.clone(), "outcome" => "lease_lost").increment(1);
        return Err(QueueError::LeaseLost { id: held.id });
    }
    metrics::counter!("queue_jobs_total", "queue" => held.queue.clone(), "outcome" => "finished").increment(1);
    metrics::histogram!("queue_job_duration_seconds", "queue" => held.queue.clone())
        .record(held.reserved.elapsed().as_secs_f64());
    Ok(())
}

fn record_depth(queue: &str, depth: u64) {
    metrics::gauge!("queue_depth", "queue" => queue.to_string()).set(depth as f64);
}

fn to_json(what: &'static str, queue: &str, value: &impl Serialize) -> Result<String, QueueError> {
    serde_json::to_string(value).map_err(|e| QueueError::Encode {
        what,
        queue: queue.to_string(),
        reason: e.to_string(),
    })
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 4).min(i64::MAX as u64 / 4)
}

fn timestamp(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

/// A fresh lease token: unguessable, so a stale worker cannot forge the current one.
fn lease_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_round_trip_through_their_text_form() {
        let id = JobId::new();
        assert_eq!(id.to_string().parse::<JobId>().unwrap(), id);
        assert!("not-a-job".parse::<JobId>().is_err());
    }

    #[test]
    fn every_state_reads_back_from_its_stored_name() {
        for state in [JobState::Queued, JobState::Started, JobState::Retrying, JobState::Finished, JobState::Failed] {
            assert_eq!(JobState::parse(state.as_str()), Some(state));
            assert_eq!(serde_json::to_value(state).unwrap(), Value::String(state.as_str().into()));
        }
        assert_eq!(JobState::parse("done"), None);
    }

    #[test]
    fn queue_names_that_would_break_keys_or_labels_are_refused() {
        assert!(check_queue_name("classify").is_ok());
        assert!(check_queue_name("media:mp3").is_ok());
        for bad in ["", "two words", "tab\there", &"x".repeat(129)] {
            assert!(matches!(check_queue_name(bad), Err(QueueError::InvalidQueueName { .. })), "{bad:?}");
        }
    }

    #[test]
    fn a_failed_attempt_waits_the_backoff_of_its_number() {
        let lease = Lease {
            id: JobId::new(),
            queue: "q".into(),
            attempt: 3,
            max_attempts: 5,
            worker: "w".into(),
            enqueued_at: Utc::now(),
            started_at: Utc::now(),
            payload: "null".into(),
            token: lease_token(),
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(10)).without_jitter(),
            reserved: Instant::now(),
        };
        assert_eq!(lease.retry_delay(), Duration::from_millis(400));
    }
}
