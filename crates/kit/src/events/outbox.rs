//! The transactional outbox: an event is published if and only if the transaction that
//! made it true committed.
//!
//! A service [`stage`]s the event inside its own database transaction (SQLite or
//! PostgreSQL): a row in `event_outbox`, beside the state change. After commit, the
//! [`OutboxRelay`] publishes staged events in order and deletes them. A rolled-back
//! transaction leaves no row, so nothing is published; a relay that stops between
//! publishing and deleting publishes the same envelope (same `event_id`) again when it
//! resumes, which the embedded backend recognises and ignores. On RabbitMQ such a repeat
//! reaches consumers twice: handlers are idempotent by `event_id` (at-least-once).
//!
//! The relay creates its table when it starts (`CREATE TABLE IF NOT EXISTS`, like the job
//! queue), so a service needs no migration of its own: start the relay before serving.
//! With PostgreSQL, relays of several replicas take rows with `FOR UPDATE SKIP LOCKED`
//! and never publish the same row at once.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{Encode, Executor, IntoArguments, Type};
use tokio::sync::Notify;

use super::{Envelope, Event, EventBus, EventsError};
use crate::backoff::Backoff;
use crate::db::Database;
use crate::shutdown::Shutdown;

/// Rows published per round.
const BATCH: i64 = 100;

const SQLITE_TABLE: &str = "CREATE TABLE IF NOT EXISTS event_outbox (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    envelope TEXT    NOT NULL
)";

const POSTGRES_TABLE: &str = "CREATE TABLE IF NOT EXISTS event_outbox (
    seq      BIGSERIAL PRIMARY KEY,
    envelope TEXT      NOT NULL
)";

/// Stages `event` about `key` in the transaction `tx`; the relay publishes it once `tx`
/// commits. Returns the event's id.
pub async fn stage<DB, E>(tx: &mut sqlx::Transaction<'_, DB>, key: &str, event: &E) -> Result<uuid::Uuid, EventsError>
where
    DB: sqlx::Database,
    E: Event,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Type<DB> + Encode<'q, DB>,
{
    let envelope = Envelope::new(key, event)?;
    let bytes = envelope.to_bytes()?;
    let text = std::str::from_utf8(&bytes).map_err(|e| EventsError::Encode(e.to_string()))?;
    sqlx::query("INSERT INTO event_outbox (envelope) VALUES ($1)")
        .bind(text)
        .execute(&mut **tx)
        .await
        .map_err(|e| EventsError::Unavailable { url: "the service's database".into(), reason: e.to_string() })?;
    Ok(envelope.event_id)
}

/// Publishes what was staged, in order, after commit.
pub struct OutboxRelay {
    db: Database,
    bus: EventBus,
    staged: Notify,
    poll: Duration,
}

impl OutboxRelay {
    /// Creates the outbox table in `db` if needed and starts relaying to `bus` until
    /// `shutdown`; besides [`OutboxRelay::staged`], it looks for rows every `poll`.
    pub async fn start(
        db: Database,
        bus: EventBus,
        poll: Duration,
        shutdown: Shutdown,
    ) -> Result<Arc<Self>, EventsError> {
        let created = match &db {
            Database::Sqlite(pool) => sqlx::query(SQLITE_TABLE).execute(pool).await.map(drop),
            Database::Postgres(pool) => sqlx::query(POSTGRES_TABLE).execute(pool).await.map(drop),
        };
        created
            .map_err(|e| EventsError::Unavailable { url: "the service's database".into(), reason: e.to_string() })?;
        let relay = Arc::new(Self { db, bus, staged: Notify::new(), poll });
        tokio::spawn(relay.clone().run(shutdown));
        Ok(relay)
    }

    /// Tells the relay that a transaction with staged events committed, so it publishes
    /// them now rather than at its next look.
    pub fn staged(&self) {
        self.staged.notify_one();
    }

    async fn run(self: Arc<Self>, shutdown: Shutdown) {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let mut failures = 0u32;
        while !shutdown.is_cancelled() {
            let wait = match self.relay_batch().await {
                Ok(n) if n as i64 == BATCH => continue,
                Ok(_) => {
                    failures = 0;
                    self.poll
                }
                Err(e) => {
                    tracing::warn!(error = %e, "events: the outbox relay cannot publish; retrying");
                    failures = failures.saturating_add(1);
                    backoff.delay(failures - 1)
                }
            };
            tokio::select! {
                _ = self.staged.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }

    /// Publishes up to [`BATCH`] staged events and deletes them; returns how many.
    async fn relay_batch(&self) -> Result<usize, EventsError> {
        let failed =
            |e: sqlx::Error| EventsError::Unavailable { url: "the service's database".into(), reason: e.to_string() };
        match &self.db {
            Database::Sqlite(pool) => {
                let rows: Vec<(i64, String)> =
                    sqlx::query_as("SELECT seq, envelope FROM event_outbox ORDER BY seq LIMIT $1")
                        .bind(BATCH)
                        .fetch_all(pool)
                        .await
                        .map_err(failed)?;
                let (sent, outcome) = self.publish_in_order(&rows).await;
                if let Some(last) = sent {
                    sqlx::query("DELETE FROM event_outbox WHERE seq <= $1")
                        .bind(last)
                        .execute(pool)
                        .await
                        .map_err(failed)?;
                }
                outcome.map(|()| rows.len())
            }
            Database::Postgres(pool) => {
                let mut tx = pool.begin().await.map_err(failed)?;
                let rows: Vec<(i64, String)> = sqlx::query_as(
                    "SELECT seq, envelope FROM event_outbox ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED",
                )
                .bind(BATCH)
                .fetch_all(&mut *tx)
                .await
                .map_err(failed)?;
                let (sent, outcome) = self.publish_in_order(&rows).await;
                if let Some(last) = sent {
                    let seqs: Vec<i64> = rows.iter().map(|(seq, _)| *seq).filter(|seq| *seq <= last).collect();
                    sqlx::query("DELETE FROM event_outbox WHERE seq = ANY($1)")
                        .bind(seqs)
                        .execute(&mut *tx)
                        .await
                        .map_err(failed)?;
                }
                tx.commit().await.map_err(failed)?;
                outcome.map(|()| rows.len())
            }
        }
    }

    /// Publishes `rows` in order until one fails; returns the last published row's `seq`.
    async fn publish_in_order(&self, rows: &[(i64, String)]) -> (Option<i64>, Result<(), EventsError>) {
        let mut last = None;
        for (seq, text) in rows {
            match serde_json::from_str::<Envelope>(text) {
                Ok(envelope) => {
                    if let Err(e) = self.bus.publish_envelope(&envelope).await {
                        return (last, Err(e));
                    }
                }
                // Written by `stage` from an `Envelope`, so this is a hand-edited row: skipped, loudly.
                Err(e) => tracing::error!(seq, error = %e, "events: an outbox row is not an envelope; dropped"),
            }
            last = Some(*seq);
        }
        (last, Ok(()))
    }
}
