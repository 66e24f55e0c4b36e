//! No half-proposals: a proposal's problems and solutions are written to an
//! outbox in the same transaction as the project, then delivered to the
//! threads service — at once when it is up, and later, reliably, when it is
//! not. Each thread carries an idempotency key, so a delivery repeated after a
//! lost answer (or by two replicas at once) creates each thread exactly once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use agora_proto::threads::v1 as pb;
use chrono::Utc;
use kit::backoff::Backoff;
use kit::Shutdown;

use crate::store::{OutboxItem, Store};
use crate::threads::{wire_type, Threads};

/// Rows delivered per round.
const BATCH: u32 = 200;

/// Delivers outbox rows to the threads service.
pub struct Relay {
    store: Store,
    threads: Arc<Threads>,
    /// Pause between rounds when nothing is due.
    interval: Duration,
    /// Delay before the next attempt of a failed delivery, by attempts so far.
    backoff: Backoff,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("interval", &self.interval).finish()
    }
}

fn to_thread(item: &OutboxItem) -> pb::Thread {
    pb::Thread {
        project_id: item.project_id,
        thread_type: wire_type(item.thread_type).into(),
        message: item.message.clone(),
        author: item.author.clone(),
        author_name: item.author_name.clone(),
        idempotency_key: item.idempotency_key.clone(),
        ..Default::default()
    }
}

impl Relay {
    /// A relay polling every `interval` and retrying failures with `backoff`.
    pub fn new(store: Store, threads: Arc<Threads>, interval: Duration, backoff: Backoff) -> Self {
        Self { store, threads, interval, backoff }
    }

    /// Delivers `items` (one project's, say) now; on failure they stay in the
    /// outbox for the background loop. Returns whether they were delivered.
    pub async fn deliver(&self, items: &[OutboxItem]) -> bool {
        if items.is_empty() {
            return true;
        }
        let ids: Vec<i64> = items.iter().map(|i| i.outbox_id).collect();
        match self.threads.create(items.iter().map(to_thread).collect()).await {
            Ok(_) => match self.store.outbox_delivered(&ids).await {
                Ok(()) => {
                    metrics::counter!("projects_outbox_delivered_total").increment(ids.len() as u64);
                    true
                }
                // The threads exist; the rows will be delivered again, which creates nothing new.
                Err(e) => {
                    tracing::warn!(error = %e, "threads created but their outbox rows could not be deleted");
                    false
                }
            },
            Err(e) => {
                let attempts = items.iter().map(|i| i.attempts).max().unwrap_or(0);
                let delay = self.backoff.delay(u32::try_from(attempts).unwrap_or(u32::MAX));
                let next = Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::seconds(30));
                tracing::warn!(
                    error = %e,
                    threads = ids.len(),
                    attempt = attempts + 1,
                    retry_in_ms = delay.as_millis() as u64,
                    "threads service unavailable; proposal threads stay in the outbox"
                );
                metrics::counter!("projects_outbox_failures_total").increment(1);
                if let Err(e) = self.store.outbox_failed(&ids, &e.to_string(), next).await {
                    tracing::warn!(error = %e, "could not record an outbox failure");
                }
                false
            }
        }
    }

    /// One round: every due row, grouped by project. Returns how many were delivered.
    pub async fn deliver_due(&self) -> usize {
        let due = match self.store.due_outbox(Utc::now(), BATCH).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "reading the outbox failed");
                return 0;
            }
        };
        let mut by_project: BTreeMap<i64, Vec<OutboxItem>> = BTreeMap::new();
        for item in due {
            by_project.entry(item.project_id).or_default().push(item);
        }
        let mut delivered = 0;
        for items in by_project.values() {
            if self.deliver(items).await {
                delivered += items.len();
            }
        }
        delivered
    }

    /// Runs rounds until `shutdown`: right away, then every `interval`.
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        loop {
            let delivered = self.deliver_due().await;
            if delivered > 0 {
                tracing::info!(delivered, "outbox threads delivered to the threads service");
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.interval) => {}
            }
        }
    }
}
