//! The embedded backend: one SQLite file shared by the processes of a machine.
//!
//! * `events` holds every published event in publish order (`seq`); events nobody still
//!   needs are deleted after [`RETENTION`].
//! * `event_deliveries` is each durable subscription's queue: publishing inserts the event
//!   and one delivery per matching subscription in one transaction, as a broker routes a
//!   message to its queues. A consumer leases a batch (`lease_until`), handles it, and
//!   deletes what it handled; a failed event is made visible again after its backoff; a
//!   lease that runs out (its consumer died) makes the event available to the next consumer
//!   that asks.
//! * `event_dead_letters` keeps what failed [`Durable::max_attempts`] times, with the last
//!   error, until it is replayed or purged.
//!
//! A publish is acknowledged after its commit, in WAL mode with `synchronous = FULL`: the
//! commit is in the write-ahead log and flushed to the disk, so it survives the SIGKILL of
//! every process and a power loss (as far as the disk honours flushes).
//!
//! Consumers are woken by the publisher through [`Wake`] (a datagram per consuming bus),
//! and also look every [`Durable::poll`], so a lost wake-up only delays.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use tokio::sync::{broadcast, Notify, OnceCell};

use super::wake::Wake;
use super::{pattern, DeadLetter, Delivery, Durable, Envelope, EventsError, HandlerError, Tail};
use crate::shutdown::Shutdown;

/// How long an event is kept once no subscription needs it (for listeners catching up).
const RETENTION: Duration = Duration::from_secs(3600);
/// How often a consumer sweeps expired leases on last attempts.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How often a consumer deletes events older than [`RETENTION`] that nothing needs.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Events a listener may fall behind before it is told it missed some.
const LISTENER_BUFFER: usize = 4096;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     TEXT    NOT NULL UNIQUE,
    topic        TEXT    NOT NULL,
    envelope     TEXT    NOT NULL,
    published_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS event_subscriptions (
    name         TEXT    PRIMARY KEY,
    pattern      TEXT    NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS event_deliveries (
    subscription TEXT    NOT NULL,
    seq          INTEGER NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    visible_at   INTEGER NOT NULL,
    lease_until  INTEGER,
    last_error   TEXT,
    PRIMARY KEY (subscription, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS event_deliveries_by_seq ON event_deliveries (seq);
CREATE TABLE IF NOT EXISTS event_dead_letters (
    subscription TEXT    NOT NULL,
    seq          INTEGER NOT NULL,
    attempts     INTEGER NOT NULL,
    last_error   TEXT    NOT NULL,
    dead_at      INTEGER NOT NULL,
    PRIMARY KEY (subscription, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS event_dead_letters_by_seq ON event_dead_letters (seq);
"#;

/// Leases up to `?4` due events of subscription `?3` for `?2` ms from now (`?1`), skipping
/// those on their last attempt (the sweep dead-letters them when their lease runs out).
const CLAIM: &str = "
UPDATE event_deliveries
   SET attempts = attempts + 1, lease_until = ?1 + ?2
 WHERE subscription = ?3 AND seq IN (
       SELECT seq FROM event_deliveries
        WHERE subscription = ?3 AND visible_at <= ?1 AND (lease_until IS NULL OR lease_until <= ?1)
          AND attempts < ?5
        ORDER BY seq LIMIT ?4)
RETURNING seq, attempts";

/// The embedded bus. Clones share the pool and the wake-ups.
#[derive(Clone)]
pub(super) struct EmbeddedBus {
    inner: Arc<Inner>,
}

struct Inner {
    pool: SqlitePool,
    shown_url: String,
    wake: Wake,
    tail: OnceCell<Tail>,
}

struct Claimed {
    seq: i64,
    attempts: u32,
    envelope: Option<Envelope>,
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl EmbeddedBus {
    pub(super) async fn connect(url: &str) -> Result<Self, EventsError> {
        let shown_url = crate::config::redact_url(url);
        let unavailable =
            |e: &dyn std::fmt::Display| EventsError::Unavailable { url: shown_url.clone(), reason: e.to_string() };
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| unavailable(&e))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        let path = options.get_filename().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| unavailable(&e))?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .map_err(|e| unavailable(&e))?;
        sqlx::raw_sql(SCHEMA).execute(&pool).await.map_err(|e| unavailable(&e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                shown_url: shown_url.clone(),
                wake: Wake::new(&path),
                tail: OnceCell::new(),
            }),
        })
    }

    fn unavailable(&self, e: sqlx::Error) -> EventsError {
        EventsError::Unavailable { url: self.inner.shown_url.clone(), reason: e.to_string() }
    }

    pub(super) async fn publish(&self, envelope: &Envelope, bytes: &[u8]) -> Result<(), EventsError> {
        let text = std::str::from_utf8(bytes).map_err(|e| EventsError::Encode(e.to_string()))?;
        let now = now_ms();
        let mut tx = self.inner.pool.begin().await.map_err(|e| self.unavailable(e))?;
        // The insert comes first: it takes the write lock, so the subscriptions read next are
        // the ones this event is routed to, with no subscription made in between.
        let seq: Option<i64> = sqlx::query_scalar(
            "INSERT INTO events (event_id, topic, envelope, published_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (event_id) DO NOTHING RETURNING seq",
        )
        .bind(envelope.event_id.to_string())
        .bind(&envelope.topic)
        .bind(text)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| self.unavailable(e))?;
        let Some(seq) = seq else {
            // Published before (an outbox relay sending again after a crash): nothing to do.
            return Ok(());
        };
        let subscriptions: Vec<(String, String)> = sqlx::query_as("SELECT name, pattern FROM event_subscriptions")
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| self.unavailable(e))?;
        for (name, _) in subscriptions.iter().filter(|(_, p)| pattern::matches(p, &envelope.topic)) {
            deliver(&mut tx, name, seq, now).await.map_err(|e| self.unavailable(e))?;
        }
        tx.commit().await.map_err(|e| self.unavailable(e))?;
        self.inner.wake.wake_all();
        Ok(())
    }

    pub(super) async fn ensure_subscription(&self, durable: &Durable) -> Result<(), EventsError> {
        sqlx::query("INSERT INTO event_subscriptions (name, pattern, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO NOTHING")
            .bind(&durable.name)
            .bind(&durable.pattern)
            .bind(now_ms())
            .execute(&self.inner.pool)
            .await
            .map_err(|e| self.unavailable(e))?;
        let existing: String = sqlx::query_scalar("SELECT pattern FROM event_subscriptions WHERE name = ?1")
            .bind(&durable.name)
            .fetch_one(&self.inner.pool)
            .await
            .map_err(|e| self.unavailable(e))?;
        if existing != durable.pattern {
            return Err(EventsError::PatternChanged {
                name: durable.name.clone(),
                existing,
                asked: durable.pattern.clone(),
            });
        }
        Ok(())
    }

    /// Handles `durable`'s events with `handler` until `shutdown`.
    pub(super) async fn consume<H, F>(self, durable: Durable, handler: H, shutdown: Shutdown)
    where
        H: Fn(Delivery) -> F + Send + Sync + 'static,
        F: std::future::Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let signal = self.inner.wake.signal();
        let mut last_sweep = tokio::time::Instant::now() - SWEEP_EVERY;
        let mut last_prune = tokio::time::Instant::now() - PRUNE_EVERY;
        let mut failures = 0u32;
        while !shutdown.is_cancelled() {
            let notified = signal.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if last_sweep.elapsed() >= SWEEP_EVERY {
                last_sweep = tokio::time::Instant::now();
                let prune = last_prune.elapsed() >= PRUNE_EVERY;
                if prune {
                    last_prune = last_sweep;
                }
                if let Err(e) = self.sweep(&durable, prune).await {
                    tracing::warn!(subscription = %durable.name, error = %e, "events: sweep failed");
                }
            }
            let batch = match self.claim(&durable).await {
                Ok(batch) => {
                    failures = 0;
                    batch
                }
                Err(e) => {
                    tracing::warn!(subscription = %durable.name, error = %e, "events: cannot claim; backing off");
                    failures = failures.saturating_add(1);
                    let pause = durable.backoff.delay(failures - 1);
                    tokio::select! { _ = tokio::time::sleep(pause) => {}, _ = shutdown.cancelled() => {} }
                    continue;
                }
            };
            if batch.is_empty() {
                let wait = self.next_due_in(&durable).await.min(durable.poll);
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.cancelled() => {}
                }
                continue;
            }
            self.handle_batch(&durable, &handler, batch, &shutdown).await;
        }
    }

    async fn handle_batch<H, F>(&self, durable: &Durable, handler: &H, batch: Vec<Claimed>, shutdown: &Shutdown)
    where
        H: Fn(Delivery) -> F + Send + Sync + 'static,
        F: std::future::Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let mut handled = Vec::with_capacity(batch.len());
        // The topic of each handled event, for the acknowledged count.
        let mut handled_topics = Vec::with_capacity(batch.len());
        let mut unstarted = Vec::new();
        for claimed in batch {
            if shutdown.is_cancelled() {
                unstarted.push(claimed.seq);
                continue;
            }
            let (topic, outcome) = match claimed.envelope {
                // The event row is gone (it cannot be while a delivery needs it, unless the
                // file was edited by hand): nothing to hand over.
                None => (
                    String::from("unknown"),
                    Err(HandlerError::Reject("the event is missing from the events table".into())),
                ),
                Some(envelope) => {
                    let topic = envelope.topic.clone();
                    metrics::counter!("events_delivered_total", "topic" => topic.clone(), "subscription" => durable.name.clone())
                        .increment(1);
                    (topic, super::run_handler(handler, Delivery { envelope, attempt: claimed.attempts }).await)
                }
            };
            let settled = match outcome {
                Ok(()) => {
                    handled.push(claimed.seq);
                    handled_topics.push(topic);
                    Ok(())
                }
                Err(HandlerError::Retry(reason)) if claimed.attempts < durable.max_attempts => {
                    metrics::counter!("events_retried_total", "topic" => topic, "subscription" => durable.name.clone())
                        .increment(1);
                    let delay = durable.backoff.delay(claimed.attempts.saturating_sub(1));
                    self.retry_later(&durable.name, claimed.seq, delay, &reason).await
                }
                Err(HandlerError::Retry(reason) | HandlerError::Reject(reason)) => {
                    metrics::counter!("events_dead_lettered_total", "topic" => topic, "subscription" => durable.name.clone())
                        .increment(1);
                    tracing::warn!(subscription = %durable.name, seq = claimed.seq, attempts = claimed.attempts, %reason,
                        "events: dead-lettered");
                    self.dead_letter(&durable.name, claimed.seq, claimed.attempts, &reason).await
                }
            };
            if let Err(e) = settled {
                tracing::warn!(subscription = %durable.name, error = %e, "events: cannot settle an event; its lease will run out");
            }
        }
        if let Err(e) = self.ack(&durable.name, &handled).await {
            tracing::warn!(subscription = %durable.name, error = %e, "events: cannot acknowledge; the events will be redelivered");
        } else {
            for topic in handled_topics {
                metrics::counter!("events_acked_total", "topic" => topic, "subscription" => durable.name.clone())
                    .increment(1);
            }
        }
        if !unstarted.is_empty() {
            // Given back at once rather than when the lease runs out.
            let _ = self.release(&durable.name, &unstarted).await;
        }
    }

    async fn claim(&self, durable: &Durable) -> Result<Vec<Claimed>, EventsError> {
        let rows = sqlx::query(CLAIM)
            .bind(now_ms())
            .bind(millis(durable.lease))
            .bind(&durable.name)
            .bind(i64::from(durable.prefetch.max(1)))
            .bind(i64::from(durable.max_attempts))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(|e| self.unavailable(e))?;
        let mut claimed: Vec<Claimed> = rows
            .iter()
            .map(|r| Claimed {
                seq: r.get::<i64, _>(0),
                attempts: u32::try_from(r.get::<i64, _>(1)).unwrap_or(u32::MAX),
                envelope: None,
            })
            .collect();
        if claimed.is_empty() {
            return Ok(claimed);
        }
        claimed.sort_by_key(|c| c.seq);
        let seqs = seq_list(claimed.iter().map(|c| c.seq));
        let bodies: Vec<(i64, String)> =
            sqlx::query_as("SELECT seq, envelope FROM events WHERE seq IN (SELECT value FROM json_each(?1))")
                .bind(seqs)
                .fetch_all(&self.inner.pool)
                .await
                .map_err(|e| self.unavailable(e))?;
        let bodies: std::collections::HashMap<i64, String> = bodies.into_iter().collect();
        for c in &mut claimed {
            c.envelope = bodies.get(&c.seq).and_then(|text| serde_json::from_str(text).ok());
        }
        Ok(claimed)
    }

    /// How long until the earliest event waiting out its backoff is due (at most a minute).
    async fn next_due_in(&self, durable: &Durable) -> Duration {
        let due: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(COALESCE(lease_until, visible_at)) FROM event_deliveries WHERE subscription = ?1",
        )
        .bind(&durable.name)
        .fetch_one(&self.inner.pool)
        .await
        .unwrap_or(None);
        match due {
            Some(at) => Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0).max(1)),
            None => Duration::from_secs(60),
        }
    }

    async fn ack(&self, subscription: &str, seqs: &[i64]) -> Result<(), EventsError> {
        if seqs.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "DELETE FROM event_deliveries WHERE subscription = ?1 AND seq IN (SELECT value FROM json_each(?2))",
        )
        .bind(subscription)
        .bind(seq_list(seqs.iter().copied()))
        .execute(&self.inner.pool)
        .await
        .map_err(|e| self.unavailable(e))?;
        Ok(())
    }

    async fn release(&self, subscription: &str, seqs: &[i64]) -> Result<(), EventsError> {
        sqlx::query(
            "UPDATE event_deliveries SET lease_until = NULL, attempts = MAX(attempts - 1, 0)
              WHERE subscription = ?1 AND seq IN (SELECT value FROM json_each(?2))",
        )
        .bind(subscription)
        .bind(seq_list(seqs.iter().copied()))
        .execute(&self.inner.pool)
        .await
        .map_err(|e| self.unavailable(e))?;
        self.inner.wake.wake_all();
        Ok(())
    }

    async fn retry_later(&self, subscription: &str, seq: i64, delay: Duration, error: &str) -> Result<(), EventsError> {
        sqlx::query(
            "UPDATE event_deliveries SET lease_until = NULL, visible_at = ?1, last_error = ?2
              WHERE subscription = ?3 AND seq = ?4",
        )
        .bind(now_ms() + millis(delay))
        .bind(error)
        .bind(subscription)
        .bind(seq)
        .execute(&self.inner.pool)
        .await
        .map_err(|e| self.unavailable(e))?;
        Ok(())
    }

    async fn dead_letter(&self, subscription: &str, seq: i64, attempts: u32, error: &str) -> Result<(), EventsError> {
        let mut tx = self.inner.pool.begin().await.map_err(|e| self.unavailable(e))?;
        sqlx::query(
            "INSERT INTO event_dead_letters (subscription, seq, attempts, last_error, dead_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (subscription, seq) DO UPDATE SET attempts = excluded.attempts,
                 last_error = excluded.last_error, dead_at = excluded.dead_at",
        )
        .bind(subscription)
        .bind(seq)
        .bind(i64::from(attempts))
        .bind(error)
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(|e| self.unavailable(e))?;
        sqlx::query("DELETE FROM event_deliveries WHERE subscription = ?1 AND seq = ?2")
            .bind(subscription)
            .bind(seq)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.unavailable(e))?;
        tx.commit().await.map_err(|e| self.unavailable(e))
    }

    /// Dead-letters events whose consumer died on their last attempt, and, when `prune`,
    /// deletes events that no subscription needs any more once they are older than
    /// [`RETENTION`] (a scan of the table: not every second).
    async fn sweep(&self, durable: &Durable, prune: bool) -> Result<(), EventsError> {
        let now = now_ms();
        let mut tx = self.inner.pool.begin().await.map_err(|e| self.unavailable(e))?;
        sqlx::query(
            "INSERT INTO event_dead_letters (subscription, seq, attempts, last_error, dead_at)
             SELECT subscription, seq, attempts,
                    'lease expired on attempt ' || attempts || ' (the consumer stopped); last error: '
                        || COALESCE(last_error, 'none'), ?1
               FROM event_deliveries
              WHERE subscription = ?2 AND lease_until <= ?1 AND attempts >= ?3
             ON CONFLICT (subscription, seq) DO NOTHING",
        )
        .bind(now)
        .bind(&durable.name)
        .bind(i64::from(durable.max_attempts))
        .execute(&mut *tx)
        .await
        .map_err(|e| self.unavailable(e))?;
        sqlx::query("DELETE FROM event_deliveries WHERE subscription = ?1 AND lease_until <= ?2 AND attempts >= ?3")
            .bind(&durable.name)
            .bind(now)
            .bind(i64::from(durable.max_attempts))
            .execute(&mut *tx)
            .await
            .map_err(|e| self.unavailable(e))?;
        if prune {
            sqlx::query(
                "DELETE FROM events WHERE published_at < ?1
                   AND NOT EXISTS (SELECT 1 FROM event_deliveries d WHERE d.seq = events.seq)
                   AND NOT EXISTS (SELECT 1 FROM event_dead_letters l WHERE l.seq = events.seq)",
            )
            .bind(now - millis(RETENTION))
            .execute(&mut *tx)
            .await
            .map_err(|e| self.unavailable(e))?;
        }
        tx.commit().await.map_err(|e| self.unavailable(e))
    }

    /// A receiver of every event published from now on, by any process.
    pub(super) async fn tail(&self) -> Result<broadcast::Receiver<Arc<Envelope>>, EventsError> {
        let tail = self
            .inner
            .tail
            .get_or_try_init(|| async {
                let from: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM events")
                    .fetch_one(&self.inner.pool)
                    .await
                    .map_err(|e| self.unavailable(e))?;
                let (sender, _) = broadcast::channel(LISTENER_BUFFER);
                let task =
                    tokio::spawn(follow(self.inner.pool.clone(), self.inner.wake.signal(), sender.clone(), from));
                Ok::<_, EventsError>(Tail { sender, task })
            })
            .await?;
        Ok(tail.sender.subscribe())
    }

    pub(super) async fn lag(&self, subscription: &str) -> Result<u64, EventsError> {
        let n: Option<i64> = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM event_deliveries d WHERE d.subscription = s.name)
               FROM event_subscriptions s WHERE s.name = ?1",
        )
        .bind(subscription)
        .fetch_optional(&self.inner.pool)
        .await
        .map_err(|e| self.unavailable(e))?;
        let n = n.ok_or_else(|| EventsError::NoSuchSubscription(subscription.to_string()))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    pub(super) async fn dead_letters(&self, subscription: Option<&str>) -> Result<Vec<DeadLetter>, EventsError> {
        let rows = sqlx::query(
            "SELECT l.subscription, e.envelope, l.attempts, l.last_error, l.dead_at
               FROM event_dead_letters l JOIN events e ON e.seq = l.seq
              WHERE ?1 IS NULL OR l.subscription = ?1
              ORDER BY l.dead_at, l.seq",
        )
        .bind(subscription)
        .fetch_all(&self.inner.pool)
        .await
        .map_err(|e| self.unavailable(e))?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let envelope = serde_json::from_str(r.get::<&str, _>(1)).ok()?;
                Some(DeadLetter {
                    subscription: r.get(0),
                    envelope,
                    attempts: u32::try_from(r.get::<i64, _>(2)).unwrap_or(u32::MAX),
                    last_error: r.get(3),
                    dead_at: from_ms(r.get(4)),
                })
            })
            .collect())
    }

    pub(super) async fn replay(&self, subscription: &str, event_id: uuid::Uuid) -> Result<(), EventsError> {
        let mut tx = self.inner.pool.begin().await.map_err(|e| self.unavailable(e))?;
        let seq: Option<i64> = sqlx::query_scalar(
            "DELETE FROM event_dead_letters WHERE subscription = ?1
                AND seq = (SELECT seq FROM events WHERE event_id = ?2) RETURNING seq",
        )
        .bind(subscription)
        .bind(event_id.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| self.unavailable(e))?;
        let Some(seq) = seq else {
            return Err(EventsError::NoSuchDeadLetter { subscription: subscription.to_string(), event_id });
        };
        deliver(&mut tx, subscription, seq, now_ms()).await.map_err(|e| self.unavailable(e))?;
        tx.commit().await.map_err(|e| self.unavailable(e))?;
        self.inner.wake.wake_all();
        Ok(())
    }

    pub(super) async fn purge(&self, subscription: Option<&str>) -> Result<u64, EventsError> {
        let done = sqlx::query("DELETE FROM event_dead_letters WHERE ?1 IS NULL OR subscription = ?1")
            .bind(subscription)
            .execute(&self.inner.pool)
            .await
            .map_err(|e| self.unavailable(e))?;
        Ok(done.rows_affected())
    }
}

/// Puts event `seq` in `subscription`'s queue, due at once.
async fn deliver(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    subscription: &str,
    seq: i64,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO event_deliveries (subscription, seq, visible_at) VALUES (?1, ?2, ?3)")
        .bind(subscription)
        .bind(seq)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map(drop)
}

/// Reads events after `from` as they are published and hands them to the listeners.
async fn follow(pool: SqlitePool, signal: Arc<Notify>, sender: broadcast::Sender<Arc<Envelope>>, mut from: i64) {
    loop {
        let notified = signal.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let rows: Result<Vec<(i64, String)>, _> =
            sqlx::query_as("SELECT seq, envelope FROM events WHERE seq > ?1 ORDER BY seq LIMIT 1000")
                .bind(from)
                .fetch_all(&pool)
                .await;
        match rows {
            Ok(rows) if !rows.is_empty() => {
                for (seq, text) in rows {
                    from = seq;
                    if let Ok(envelope) = serde_json::from_str::<Envelope>(&text) {
                        let _ = sender.send(Arc::new(envelope));
                    }
                }
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "events: listeners cannot read new events"),
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// A JSON array of sequence numbers, for `json_each` (SQLite binds no arrays).
fn seq_list(seqs: impl Iterator<Item = i64>) -> String {
    let items: Vec<String> = seqs.map(|s| s.to_string()).collect();
    format!("[{}]", items.join(","))
}
