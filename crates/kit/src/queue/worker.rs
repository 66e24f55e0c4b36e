//! Running jobs: a pool of worker tasks that reserve a job, parse its payload
//! as the [`Job`] type, keep its lease renewed in the background while the
//! handler runs, complete or fail it, and on shutdown finish the job in hand
//! before stopping.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use super::{FailOutcome, Job, Lease, Queue, QueueError};
use crate::backoff::Backoff;
use crate::shutdown::Shutdown;

/// How a worker pool runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Jobs handled at once (one task each).
    pub concurrency: usize,
    /// Lease per attempt, renewed every third of it while the handler runs:
    /// a worker that dies loses its job to another worker after at most this long.
    pub lease: Duration,
    /// How long one reserve call waits for work before asking again (shutdown interrupts it).
    pub poll_wait: Duration,
    /// Recorded on the jobs this pool takes (`<host>:<pid>:<random>` by default; `/<slot>` is appended).
    pub worker_id: String,
}

impl WorkerOptions {
    /// `concurrency` tasks, 30 s leases.
    pub fn new(concurrency: usize) -> Self {
        Self {
            concurrency,
            lease: Duration::from_secs(30),
            poll_wait: Duration::from_secs(5),
            worker_id: default_worker_id(),
        }
    }
}

fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME").ok().filter(|h| !h.trim().is_empty()).unwrap_or_else(|| "local".into());
    format!("{host}:{}:{}", std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// Runs `handler` on the jobs of queue [`J::QUEUE`](Job::QUEUE) with
/// `concurrency` tasks until `shutdown` trips; each task finishes the job in
/// hand first. `Ok` completes the job with its output, `Err` fails the attempt
/// with its reason (retried per the job's options), and a panic counts as a
/// failure. A payload that does not parse as a `J` fails the job at once.
pub async fn run_worker<J, H, Fut>(queue: Queue, concurrency: usize, handler: H, shutdown: Shutdown)
where
    J: Job,
    H: Fn(J) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<J::Output, J::Error>> + Send + 'static,
{
    run_worker_with(queue, WorkerOptions::new(concurrency), handler, shutdown).await
}

/// [`run_worker`] with explicit options.
pub async fn run_worker_with<J, H, Fut>(queue: Queue, options: WorkerOptions, handler: H, shutdown: Shutdown)
where
    J: Job,
    H: Fn(J) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<J::Output, J::Error>> + Send + 'static,
{
    let name = J::QUEUE;
    let handler = Arc::new(handler);
    let concurrency = options.concurrency.max(1);
    let mut slots = tokio::task::JoinSet::new();
    for slot in 0..concurrency {
        slots.spawn(work_slot(
            queue.clone(),
            name.to_string(),
            format!("{}/{slot}", options.worker_id),
            options.clone(),
            handler.clone(),
            shutdown.clone(),
        ));
    }
    tracing::info!(queue = name, concurrency, backend = queue.backend(), worker = %options.worker_id, "worker started");
    while let Some(joined) = slots.join_next().await {
        if let Err(err) = joined {
            tracing::error!(queue = name, error = %err, "a worker task ended abnormally");
        }
    }
    tracing::info!(queue = name, worker = %options.worker_id, "worker stopped");
}

async fn work_slot<J, H, Fut>(
    queue: Queue,
    name: String,
    worker_id: String,
    options: WorkerOptions,
    handler: Arc<H>,
    shutdown: Shutdown,
) where
    J: Job,
    H: Fn(J) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<J::Output, J::Error>> + Send + 'static,
{
    // At most 2 s apart: a queue back from an outage gets its workers back within that.
    let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let mut errors = 0u32;
    // The job reserved while settling the previous one, if any: it is ours and must be run.
    let mut next: Option<Lease> = None;
    loop {
        let lease = match next.take() {
            Some(lease) => lease,
            None if shutdown.is_cancelled() => break,
            None => {
                match queue.reserve_until(&name, &worker_id, options.lease, options.poll_wait, Some(&shutdown)).await {
                    Ok(Some(lease)) => {
                        errors = 0;
                        lease
                    }
                    Ok(None) => continue,
                    Err(err) => {
                        let delay = backoff.delay(errors);
                        errors = errors.saturating_add(1);
                        let retry_in_ms = delay.as_millis() as u64;
                        tracing::warn!(queue = %name, error = %err, retry_in_ms, "reserving a job failed");
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(delay) => {}
                        }
                        continue;
                    }
                }
            }
        };
        // Asking for the next job while settling this one saves a round trip, unless we are stopping.
        let reserve_next = (!shutdown.is_cancelled()).then_some(worker_id.as_str());
        next = run_one(&queue, lease, options.lease, handler.as_ref(), reserve_next).await;
    }
}

/// Runs one attempt and settles it; with `reserve_next` (a worker id), a successful
/// attempt is completed together with the reservation of the next job, which is returned.
/// Shutdown is deliberately not watched here: the job in hand is finished.
async fn run_one<J, H, Fut>(
    queue: &Queue,
    mut lease: Lease,
    lease_for: Duration,
    handler: &H,
    reserve_next: Option<&str>,
) -> Option<Lease>
where
    J: Job,
    H: Fn(J) -> Fut,
    Fut: Future<Output = Result<J::Output, J::Error>>,
{
    // Taken out (and freed once parsed), so the renewer's copy of the lease does not carry it.
    let job = match serde_json::from_str::<J>(&std::mem::take(&mut lease.payload)) {
        Ok(job) => job,
        Err(err) => {
            // Another attempt would read the same bytes: the job fails now.
            let reason = format!("the payload does not parse as {}: {err}", std::any::type_name::<J>());
            tracing::error!(job = %lease.id, queue = %lease.queue, %reason, "job refused");
            let settled = queue.fail_permanently(&lease, &reason).await.map(|()| "failed");
            log_settled(&lease, settled);
            return None;
        }
    };
    tracing::debug!(job = %lease.id, queue = %lease.queue, attempt = lease.attempt, "job started");
    let lost = CancellationToken::new();
    let renewer = tokio::spawn(keep_renewing(queue.clone(), lease.clone(), lease_for, lost.clone()));
    let work = AssertUnwindSafe(handler(job)).catch_unwind();
    let outcome = tokio::select! {
        outcome = work => Some(outcome),
        _ = lost.cancelled() => None,
    };
    renewer.abort();
    let Some(outcome) = outcome else {
        // Another worker has the job now (or it was cancelled); whatever this attempt produces would be refused.
        let attempt = lease.attempt;
        tracing::warn!(job = %lease.id, queue = %lease.queue, attempt, "lease lost while working; attempt abandoned");
        return None;
    };
    // A result that cannot be stored is the handler's failure, not the queue's.
    let outcome = outcome.map(|ran| {
        ran.map_err(|err| err.to_string()).and_then(|output| {
            serde_json::to_string(&output).map_err(|e| format!("the result cannot be stored as JSON: {e}"))
        })
    });
    let mut next = None;
    let settled = match (outcome, reserve_next) {
        (Ok(Ok(result)), Some(worker_id)) => {
            match queue.complete_then_reserve(&lease, &result, worker_id, lease_for).await {
                Ok((completed, reserved)) => {
                    next = reserved;
                    completed.map(|()| "finished")
                }
                Err(err) => Err(err),
            }
        }
        (Ok(Ok(result)), None) => queue.complete_json(&lease, &result).await.map(|()| "finished"),
        (Ok(Err(reason)), _) => queue.fail(&lease, &reason).await.map(outcome_name),
        (Err(panic), _) => {
            let reason = format!("handler panicked: {}", panic_message(panic.as_ref()));
            tracing::error!(job = %lease.id, queue = %lease.queue, %reason, "job handler panicked");
            queue.fail(&lease, &reason).await.map(outcome_name)
        }
    };
    log_settled(&lease, settled);
    next
}

fn log_settled(lease: &Lease, settled: Result<&'static str, QueueError>) {
    match settled {
        Ok(outcome) => tracing::debug!(job = %lease.id, queue = %lease.queue, outcome, "job settled"),
        Err(QueueError::LeaseLost { .. }) => {
            let (job, queue) = (lease.id, &lease.queue);
            tracing::warn!(%job, %queue, "lease ran out before the job was settled; another worker has it")
        }
        Err(err) => tracing::warn!(
            job = %lease.id, queue = %lease.queue, error = %err,
            "settling the job failed; it will be retried when its lease runs out"
        ),
    }
}

fn outcome_name(outcome: FailOutcome) -> &'static str {
    match outcome {
        FailOutcome::Retrying { .. } => "retrying",
        FailOutcome::Failed => "failed",
    }
}

/// Renews every third of the lease until aborted; trips `lost` if the lease is gone.
async fn keep_renewing(queue: Queue, lease: Lease, lease_for: Duration, lost: CancellationToken) {
    let every = (lease_for / 3).max(Duration::from_millis(5));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match queue.renew(&lease, lease_for).await {
            Ok(()) => {}
            Err(QueueError::LeaseLost { .. } | QueueError::Cancelled { .. }) => {
                lost.cancel();
                return;
            }
            // A blip: the next tick tries again, well before the lease runs out.
            Err(err) => tracing::warn!(job = %lease.id, error = %err, "renewing a lease failed"),
        }
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic".to_string()
    }
}
