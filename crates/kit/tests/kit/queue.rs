//! The job queue's conformance suite (SPEC §4): every test runs against both
//! backends, embedded SQLite (`sqlite::…`) and Redis (`redis::…`, against
//! `AGORA_TEST_REDIS_URL`, skipped without it unless `AGORA_REQUIRE_BACKENDS=1`).
//! Each test gets its own store: a fresh SQLite file, or a fresh Redis key prefix.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kit::backoff::Backoff;
use kit::queue::{
    run_worker, run_worker_with, EnqueueOptions, FailOutcome, Job, JobId, JobState, Queue, QueueError, QueueOptions,
    WorkerOptions,
};
use kit::test_support::eventually;
use kit::Shutdown;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// A numbered job (`{"n": 4}`), answered with its square.
#[derive(Serialize, Deserialize)]
struct Square {
    n: u64,
}

impl Job for Square {
    const QUEUE: &'static str = "once";
    type Output = Value;
    type Error = String;
}

/// `"flaky"` or `"hopeless"`: how a job fares in the worker's retry test.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Hope {
    Flaky,
    Hopeless,
}

impl Job for Hope {
    const QUEUE: &'static str = "handlers";
    type Output = Value;
    type Error = String;
}

/// A job with nothing in it (`null`) that takes its time.
#[derive(Serialize, Deserialize)]
struct Nap;

impl Job for Nap {
    const QUEUE: &'static str = "graceful";
    type Output = Value;
    type Error = String;
}

/// One store, reachable by as many connections (stand-ins for processes) as a test wants.
struct Backend {
    url: Option<String>,
    dir: tempfile::TempDir,
    options: QueueOptions,
}

impl Backend {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self { url: None, dir, options: QueueOptions::default() }
    }

    fn redis() -> Option<Self> {
        let url = kit::test_support::redis_url()?;
        let dir = tempfile::tempdir().expect("temp dir");
        let prefix = format!("agora:test:queue:{}", uuid::Uuid::new_v4().simple());
        Some(Self { url: Some(url), dir, options: QueueOptions { redis_prefix: prefix, ..QueueOptions::default() } })
    }

    /// A new connection to the same store.
    async fn connect(&self) -> Queue {
        Queue::connect_with(self.url.as_deref(), self.dir.path(), self.options.clone())
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the queue: {e}"))
    }

    /// Deletes the test's Redis keys (the SQLite file goes with its temp dir).
    async fn clean_up(&self) {
        let Some(url) = &self.url else { return };
        let Ok(client) = ::redis::Client::open(url.as_str()) else { return };
        let Ok(mut conn) = client.get_multiplexed_async_connection().await else { return };
        let keys: Vec<String> = ::redis::cmd("KEYS")
            .arg(format!("{}:*", self.options.redis_prefix))
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<(), _> = ::redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
        }
    }
}

/// Runs each named test against both backends.
macro_rules! conformance {
    ($($test:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    let backend = super::Backend::sqlite();
                    tokio::time::timeout(super::TEST_TIMEOUT, super::$test(&backend)).await.expect("test timed out");
                }
            )+
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                #[cfg_attr(no_redis, ignore = "set AGORA_TEST_REDIS_URL to run it against Redis")]
                async fn $test() {
                    let Some(backend) = super::Backend::redis() else { return };
                    let outcome = tokio::time::timeout(super::TEST_TIMEOUT, super::$test(&backend)).await;
                    backend.clean_up().await;
                    outcome.expect("test timed out");
                }
            )+
        }
    };
}

const TEST_TIMEOUT: Duration = Duration::from_secs(120);
const LONG: Duration = Duration::from_secs(30);
const NO_WAIT: Duration = Duration::ZERO;

conformance!(
    a_job_round_trips_from_enqueue_to_its_result,
    a_jobs_state_is_visible_as_queued_then_started_then_finished,
    jobs_are_reserved_in_enqueue_order_by_three_concurrent_workers,
    four_concurrent_workers_finish_every_job_exactly_once,
    a_job_whose_lease_expires_goes_to_another_worker_and_the_late_complete_is_refused,
    a_renewed_lease_keeps_the_job_from_other_workers,
    a_failing_job_is_retried_with_backoff_then_fails_with_its_last_reason,
    a_job_whose_worker_dies_on_its_last_attempt_is_marked_failed,
    the_status_of_an_unknown_job_is_none,
    settled_jobs_are_purged_after_the_retention_and_waiting_ones_are_kept,
    maintenance_purges_old_results_in_the_background,
    depth_counts_the_jobs_waiting_for_a_worker,
    queues_do_not_share_jobs,
    a_waiting_reserve_picks_up_a_job_enqueued_later,
    wait_finished_returns_once_the_job_is_settled,
    the_worker_retries_a_failing_handler_and_counts_a_panic_as_a_failure,
    the_worker_finishes_the_job_in_hand_when_shut_down,
    a_payload_that_is_not_the_workers_job_type_fails_at_once_and_the_worker_goes_on,
    a_queue_name_that_would_break_keys_is_refused,
    progress_is_recorded_for_the_holder_and_reset_by_the_next_attempt,
    a_cancelled_waiting_job_fails_at_once_and_is_never_reserved,
    the_holder_of_a_cancelled_job_learns_it_at_its_next_renew,
    a_job_failed_permanently_is_not_retried_though_it_has_attempts_left,
    the_worker_abandons_a_job_cancelled_while_its_handler_runs,
);

async fn progress_is_recorded_for_the_holder_and_reset_by_the_next_attempt(backend: &Backend) {
    let queue = backend.connect().await;
    let id = queue.enqueue("progress", json!(null), EnqueueOptions::attempts(2)).await.unwrap();
    assert_eq!(queue.status(id).await.unwrap().expect("the job").progress, None);
    let lease = queue.reserve("progress", "w", LONG, NO_WAIT).await.unwrap().expect("a job");
    queue.progress(&lease, 40).await.unwrap();
    assert_eq!(queue.status(id).await.unwrap().expect("the job").progress, Some(40));
    queue.progress(&lease, 250).await.unwrap();
    assert_eq!(queue.status(id).await.unwrap().expect("the job").progress, Some(100), "capped at 100");

    queue.fail(&lease, "boom").await.unwrap();
    let late = queue.progress(&lease, 50).await;
    assert!(matches!(late, Err(QueueError::LeaseLost { .. })), "{late:?}");
    let second = queue.reserve("progress", "w", LONG, LONG).await.unwrap().expect("the retry");
    assert_eq!(second.attempt, 2);
    let job = queue.status(id).await.unwrap().expect("the job");
    assert_eq!((job.progress, job.cancelled), (None, false), "a new attempt starts from nothing");
    queue.progress(&second, 7).await.unwrap();
    queue.complete(&second, json!("done")).await.unwrap();
    assert_eq!(queue.status(id).await.unwrap().expect("the job").progress, Some(7));
}

async fn a_cancelled_waiting_job_fails_at_once_and_is_never_reserved(backend: &Backend) {
    let queue = backend.connect().await;
    let id = queue.enqueue("cancel-waiting", json!(1), EnqueueOptions::default()).await.unwrap();
    let kept = queue.enqueue("cancel-waiting", json!(2), EnqueueOptions::default()).await.unwrap();
    assert!(queue.cancel(id).await.unwrap());
    let job = queue.wait_finished(id, NO_WAIT).await.unwrap().expect("a settled job");
    assert_eq!((job.state, job.error.as_deref(), job.cancelled), (JobState::Failed, Some("cancelled"), true));
    assert!(job.finished_at.is_some());
    assert_eq!(queue.depth("cancel-waiting").await.unwrap(), 1);
    let lease = queue.reserve("cancel-waiting", "w", LONG, NO_WAIT).await.unwrap().expect("the other job");
    assert_eq!(lease.id, kept);
    assert!(
        queue.reserve("cancel-waiting", "w", LONG, NO_WAIT).await.unwrap().is_none(),
        "the cancelled job came back"
    );

    assert!(!queue.cancel(id).await.unwrap(), "cancelled twice");
    queue.complete(&lease, json!(null)).await.unwrap();
    assert!(!queue.cancel(kept).await.unwrap(), "a finished job was cancelled");
    assert_eq!(queue.status(kept).await.unwrap().map(|j| (j.state, j.cancelled)), Some((JobState::Finished, false)));
    assert!(!queue.cancel(JobId::new()).await.unwrap(), "an unknown job was cancelled");
}

async fn the_holder_of_a_cancelled_job_learns_it_at_its_next_renew(backend: &Backend) {
    let queue = backend.connect().await;
    let other = backend.connect().await;
    let id = queue.enqueue("cancel-started", json!(null), EnqueueOptions::attempts(3)).await.unwrap();
    let lease = queue.reserve("cancel-started", "w", LONG, NO_WAIT).await.unwrap().expect("a job");
    queue.progress(&lease, 30).await.unwrap();
    assert!(other.cancel(id).await.unwrap());
    let job = queue.status(id).await.unwrap().expect("the job");
    assert_eq!((job.state, job.cancelled, job.attempts), (JobState::Failed, true, 1));

    let renewed = queue.renew(&lease, LONG).await;
    assert!(matches!(renewed, Err(QueueError::Cancelled { id: c }) if c == id), "{renewed:?}");
    let reported = queue.progress(&lease, 60).await;
    assert!(matches!(reported, Err(QueueError::Cancelled { .. })), "{reported:?}");
    let completed = queue.complete(&lease, json!("too late")).await;
    assert!(matches!(completed, Err(QueueError::LeaseLost { .. })), "{completed:?}");
    let job = queue.status(id).await.unwrap().expect("the job");
    assert_eq!((job.state, job.result, job.error.as_deref()), (JobState::Failed, None, Some("cancelled")));
    queue.requeue_expired().await.unwrap();
    assert!(queue.reserve("cancel-started", "w", LONG, NO_WAIT).await.unwrap().is_none(), "retried after cancel");
}

async fn a_job_failed_permanently_is_not_retried_though_it_has_attempts_left(backend: &Backend) {
    let queue = backend.connect().await;
    let id = queue.enqueue("hopeless", json!({"file": "notes.txt"}), EnqueueOptions::attempts(5)).await.unwrap();
    let lease = queue.reserve("hopeless", "w", LONG, NO_WAIT).await.unwrap().expect("a job");
    queue.fail_permanently(&lease, "not a video: no streams").await.unwrap();
    let job = queue.wait_finished(id, NO_WAIT).await.unwrap().expect("a settled job");
    assert_eq!((job.state, job.attempts, job.cancelled), (JobState::Failed, 1, false));
    assert_eq!(job.error.as_deref(), Some("not a video: no streams"));
    assert!(queue.reserve("hopeless", "w", LONG, NO_WAIT).await.unwrap().is_none(), "it was retried");
    let again = queue.fail_permanently(&lease, "twice").await;
    assert!(matches!(again, Err(QueueError::LeaseLost { .. })), "{again:?}");
}

/// A job whose handler waits until told to stop (it never is).
#[derive(Serialize, Deserialize)]
struct Endless;

impl Job for Endless {
    const QUEUE: &'static str = "endless";
    type Output = Value;
    type Error = String;
}

async fn the_worker_abandons_a_job_cancelled_while_its_handler_runs(backend: &Backend) {
    let queue = backend.connect().await;
    let id = queue.enqueue(Endless::QUEUE, Endless, EnqueueOptions::default()).await.unwrap();
    let started = Arc::new(tokio::sync::Notify::new());
    let dropped = Arc::new(tokio::sync::Notify::new());
    let shutdown = Shutdown::new();
    let options = WorkerOptions { lease: Duration::from_millis(300), ..WorkerOptions::new(1) };
    let (on_start, on_drop) = (started.clone(), dropped.clone());
    let worker = tokio::spawn(run_worker_with(
        queue.clone(),
        options,
        move |_: Endless| {
            let (on_start, on_drop) = (on_start.clone(), on_drop.clone());
            async move {
                // Dropped (not finished) when the worker abandons the job.
                struct Signal(Arc<tokio::sync::Notify>);
                impl Drop for Signal {
                    fn drop(&mut self) {
                        self.0.notify_one();
                    }
                }
                let _signal = Signal(on_drop);
                on_start.notify_one();
                std::future::pending::<Result<Value, String>>().await
            }
        },
        shutdown.clone(),
    ));
    started.notified().await;
    assert!(queue.cancel(id).await.unwrap());
    dropped.notified().await;
    let job = queue.status(id).await.unwrap().expect("the job");
    assert_eq!((job.state, job.attempts, job.cancelled), (JobState::Failed, 1, true));
    shutdown.cancel();
    worker.await.unwrap();
}

async fn a_job_round_trips_from_enqueue_to_its_result(backend: &Backend) {
    let queue = backend.connect().await;
    let id = queue
        .enqueue("classify", json!({"image": "cat.jpg", "model": "résnet"}), EnqueueOptions::attempts(4))
        .await
        .unwrap();

    let lease = queue.reserve("classify", "worker-1", LONG, NO_WAIT).await.unwrap().expect("a job to reserve");
    assert_eq!(lease.id, id);
    assert_eq!(lease.queue, "classify");
    assert_eq!(lease.payload::<Value>().unwrap(), json!({"image": "cat.jpg", "model": "résnet"}));
    assert_eq!((lease.attempt, lease.max_attempts), (1, 4));
    assert_eq!(lease.worker, "worker-1");
    assert!(queue.reserve("classify", "worker-2", LONG, NO_WAIT).await.unwrap().is_none(), "handed out twice");

    queue.complete(&lease, json!([["tabby", 0.91], ["tiger cat", 0.05]])).await.unwrap();
    let job = queue.status(id).await.unwrap().expect("the job");
    assert_eq!(job.id, id);
    assert_eq!(job.state, JobState::Finished);
    assert_eq!(job.result, Some(json!([["tabby", 0.91], ["tiger cat", 0.05]])));
    assert_eq!((job.attempts, job.max_attempts), (1, 4));
    assert_eq!(job.error, None);
    let (started, finished) = (job.started_at.expect("started_at"), job.finished_at.expect("finished_at"));
    assert!(job.enqueued_at <= started && started <= finished, "{job:?}");
    assert!(queue.reserve("classify", "worker-2", LONG, NO_WAIT).await.unwrap().is_none(), "a finished job came back");
}

async fn a_jobs_state_is_visible_as_queued_then_started_then_finished(backend: &Backend) {
    let queue = backend.connect().await;
    let id = queue.enqueue("states", json!(1), EnqueueOptions::default()).await.unwrap();
    let job = queue.status(id).await.unwrap().expect("the job");
    assert_eq!((job.state, job.attempts, job.started_at, job.finished_at), (JobState::Queued, 0, None, None));

    let lease = queue.reserve("states", "w", LONG, NO_WAIT).await.unwrap().expect("a job");
    let job = queue.status(id).await.unwrap().expect("the job");
    assert_eq!((job.state, job.attempts), (JobState::Started, 1));
    assert_eq!(job.started_at, Some(lease.started_at));
    assert_eq!(job.result, None);

    queue.complete(&lease, json!({"ok": true})).await.unwrap();
    let job = queue.status(id).await.unwrap().expect("the job");
    assert_eq!((job.state, &job.result), (JobState::Finished, &Some(json!({"ok": true}))));
    assert_eq!(serde_json::to_value(&job).unwrap()["state"], "finished");
}

async fn jobs_are_reserved_in_enqueue_order_by_three_concurrent_workers(backend: &Backend) {
    let producer = backend.connect().await;
    for n in 0..200u64 {
        producer.enqueue("fifo", json!({"n": n}), EnqueueOptions::default()).await.unwrap();
    }
    let mut workers = Vec::new();
    for w in 0..3 {
        let queue = backend.connect().await;
        workers.push(tokio::spawn(async move {
            let mut taken = Vec::new();
            while let Some(lease) = queue.reserve("fifo", &format!("worker-{w}"), LONG, NO_WAIT).await.unwrap() {
                taken.push(lease.payload::<Value>().unwrap()["n"].as_u64().expect("n"));
                queue.complete(&lease, Value::Null).await.unwrap();
            }
            taken
        }));
    }
    let mut all = Vec::new();
    for worker in workers {
        let taken = worker.await.unwrap();
        // FIFO: each worker sees the line in order (the jobs it took are increasing).
        assert!(taken.windows(2).all(|w| w[0] < w[1]), "out of order: {taken:?}");
        all.extend(taken);
    }
    all.sort_unstable();
    assert_eq!(all, (0..200).collect::<Vec<_>>(), "every job exactly once");
}

async fn four_concurrent_workers_finish_every_job_exactly_once(backend: &Backend) {
    let producer = backend.connect().await;
    let mut ids = Vec::new();
    for n in 0..200u64 {
        ids.push((n, producer.enqueue("once", json!({"n": n}), EnqueueOptions::default()).await.unwrap()));
    }
    let runs: Arc<Mutex<HashMap<u64, usize>>> = Arc::default();
    let shutdown = Shutdown::new();
    let mut pools = Vec::new();
    // Two "processes" with two worker tasks each.
    for _ in 0..2 {
        let queue = backend.connect().await;
        let runs = runs.clone();
        let handler = move |Square { n }: Square| {
            let runs = runs.clone();
            async move {
                *runs.lock().unwrap().entry(n).or_default() += 1;
                tokio::task::yield_now().await;
                Ok(json!({"square": n * n}))
            }
        };
        pools.push(tokio::spawn(run_worker(queue, 2, handler, shutdown.clone())));
    }
    for (n, id) in &ids {
        let job = producer.wait_finished(*id, LONG).await.unwrap().expect("finished in time");
        assert_eq!((job.state, job.attempts), (JobState::Finished, 1));
        assert_eq!(job.result, Some(json!({"square": n * n})));
    }
    shutdown.cancel();
    for pool in pools {
        pool.await.unwrap();
    }
    let runs = runs.lock().unwrap();
    assert_eq!(runs.len(), 200, "every job ran");
    assert!(runs.values().all(|&c| c == 1), "some job ran twice: {runs:?}");
}

async fn a_job_whose_lease_expires_goes_to_another_worker_and_the_late_complete_is_refused(backend: &Backend) {
    let (a, b) = (backend.connect().await, backend.connect().await);
    let id = a.enqueue("leases", json!("work"), EnqueueOptions::default()).await.unwrap();
    let first = a.reserve("leases", "worker-a", Duration::from_secs(1), NO_WAIT).await.unwrap().expect("a job");
    assert!(b.reserve("leases", "worker-b", LONG, NO_WAIT).await.unwrap().is_none(), "taken while leased");

    // worker-a "dies": it never renews, so its lease runs out and worker-b gets the job.
    let second = b.reserve("leases", "worker-b", LONG, LONG).await.unwrap().expect("the job, handed on");
    assert_eq!((second.id, second.attempt), (id, 2));
    let job = b.status(id).await.unwrap().expect("the job");
    assert_eq!((job.state, job.attempts), (JobState::Started, 2));

    for refused in [
        a.complete(&first, json!("late")).await.err(),
        a.fail(&first, "late").await.err(),
        a.renew(&first, LONG).await.err(),
    ] {
        assert!(matches!(refused, Some(QueueError::LeaseLost { id: lost }) if lost == id), "{refused:?}");
    }
    b.complete(&second, json!("on time")).await.unwrap();
    let job = a.status(id).await.unwrap().expect("the job");
    assert_eq!((job.state, job.attempts, job.result), (JobState::Finished, 2, Some(json!("on time"))));
    assert!(matches!(a.complete(&first, json!("later still")).await, Err(QueueError::LeaseLost { .. })));
}

async fn a_renewed_lease_keeps_the_job_from_other_workers(backend: &Backend) {
    let (a, b) = (backend.connect().await, backend.connect().await);
    let id = a.enqueue("renewals", json!(null), EnqueueOptions::default()).await.unwrap();
    let lease_for = Duration::from_millis(1500);
    let lease = a.reserve("renewals", "worker-a", lease_for, NO_WAIT).await.unwrap().expect("a job");
    let renewing = {
        let (a, lease) = (a.clone(), lease.clone());
        tokio::spawn(async move {
            for _ in 0..30 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                a.renew(&lease, lease_for).await.unwrap();
            }
        })
    };
    // Twice the lease passes while worker-b asks: the renewals keep the job with worker-a.
    let stolen = b.reserve("renewals", "worker-b", LONG, Duration::from_secs(3)).await.unwrap();
    assert!(stolen.is_none(), "a renewed job was handed on: {stolen:?}");
    renewing.await.unwrap();
    a.complete(&lease, json!("mine")).await.unwrap();
    assert_eq!(a.status(id).await.unwrap().expect("the job").attempts, 1);
}

async fn a_failing_job_is_retried_with_backoff_then_fails_with_its_last_reason(backend: &Backend) {
    let queue = backend.connect().await;
    let options = EnqueueOptions {
        max_attempts: 3,
        retry_backoff: Backoff::new(Duration::from_millis(300), Duration::from_secs(2)),
    };
    let id = queue.enqueue("retries", json!({"flaky": true}), options).await.unwrap();
    let mut due = None;
    for attempt in 1..=3 {
        let lease = queue.reserve("retries", "w", LONG, LONG).await.unwrap().expect("the next attempt");
        assert_eq!((lease.id, lease.attempt, lease.max_attempts), (id, attempt, 3));
        if let Some(due) = due {
            assert!(
                lease.started_at >= due,
                "attempt {attempt} started at {} before its backoff ({due})",
                lease.started_at
            );
        }
        let outcome = queue.fail(&lease, &format!("boom {attempt}")).await.unwrap();
        if attempt < 3 {
            let FailOutcome::Retrying { at } = outcome else { panic!("attempt {attempt} was final: {outcome:?}") };
            // Jittered: between half and all of 300 ms × 2^(attempt-1) after the failure.
            let least = chrono::Duration::milliseconds(150 * (1 << (attempt - 1)));
            assert!(at - lease.started_at >= least, "retry at {at} is too soon after {}", lease.started_at);
            let job = queue.status(id).await.unwrap().expect("the job");
            assert_eq!(
                (job.state, job.error.as_deref()),
                (JobState::Retrying, Some(format!("boom {attempt}").as_str()))
            );
            assert!(
                queue.reserve("retries", "w", LONG, NO_WAIT).await.unwrap().is_none(),
                "retried before its backoff"
            );
            due = Some(at);
        } else {
            assert_eq!(outcome, FailOutcome::Failed);
        }
    }
    let job = queue.status(id).await.unwrap().expect("the job");
    assert_eq!((job.state, job.attempts, job.max_attempts), (JobState::Failed, 3, 3));
    assert_eq!(job.error.as_deref(), Some("boom 3"));
    assert_eq!(job.result, None);
    assert!(job.finished_at.is_some());
    assert!(queue.reserve("retries", "w", LONG, NO_WAIT).await.unwrap().is_none(), "a failed job came back");
}

async fn a_job_whose_worker_dies_on_its_last_attempt_is_marked_failed(backend: &Backend) {
    let queue = backend.connect().await;
    let id = queue.enqueue("doomed", json!(null), EnqueueOptions::attempts(1)).await.unwrap();
    let lease = queue.reserve("doomed", "worker-that-dies", Duration::from_millis(200), NO_WAIT).await.unwrap();
    drop(lease.expect("a job"));
    let job = eventually("the expired job to fail", LONG, || async {
        queue.requeue_expired().await.unwrap();
        queue.status(id).await.unwrap().filter(|j| j.state == JobState::Failed)
    })
    .await;
    assert_eq!(job.attempts, 1);
    let error = job.error.unwrap_or_default();
    assert!(error.contains("lease expired") && error.contains("worker-that-dies"), "{error}");
    assert_eq!(queue.wait_finished(id, NO_WAIT).await.unwrap().map(|j| j.state), Some(JobState::Failed));
}

async fn the_status_of_an_unknown_job_is_none(backend: &Backend) {
    let queue = backend.connect().await;
    assert_eq!(queue.status(JobId::new()).await.unwrap(), None);
    assert_eq!(queue.wait_finished(JobId::new(), Duration::from_millis(50)).await.unwrap(), None);
}

async fn settled_jobs_are_purged_after_the_retention_and_waiting_ones_are_kept(backend: &Backend) {
    let queue = backend.connect().await;
    let done = queue.enqueue("purge", json!(1), EnqueueOptions::default()).await.unwrap();
    let lease = queue.reserve("purge", "w", LONG, NO_WAIT).await.unwrap().expect("a job");
    queue.complete(&lease, json!("result")).await.unwrap();
    let failed = queue.enqueue("purge", json!(2), EnqueueOptions::attempts(1)).await.unwrap();
    let lease = queue.reserve("purge", "w", LONG, NO_WAIT).await.unwrap().expect("a job");
    queue.fail(&lease, "no").await.unwrap();
    let running = queue.enqueue("purge", json!(3), EnqueueOptions::default()).await.unwrap();
    let _held = queue.reserve("purge", "w", LONG, NO_WAIT).await.unwrap().expect("a job");
    let waiting = queue.enqueue("purge", json!(4), EnqueueOptions::default()).await.unwrap();

    assert_eq!(queue.purge_finished(Duration::from_secs(3600)).await.unwrap(), 0, "purged within the retention");
    assert!(queue.status(done).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(queue.purge_finished(Duration::from_millis(10)).await.unwrap(), 2);
    assert_eq!(queue.status(done).await.unwrap(), None);
    assert_eq!(queue.status(failed).await.unwrap(), None);
    assert_eq!(queue.status(running).await.unwrap().map(|j| j.state), Some(JobState::Started));
    assert_eq!(queue.status(waiting).await.unwrap().map(|j| j.state), Some(JobState::Queued));
}

async fn maintenance_purges_old_results_in_the_background(backend: &Backend) {
    let queue = backend.connect().await;
    let shutdown = Shutdown::new();
    let maintenance = queue.spawn_maintenance(Duration::from_millis(200), shutdown.clone());
    let id = queue.enqueue("retention", json!(null), EnqueueOptions::default()).await.unwrap();
    let lease = queue.reserve("retention", "w", LONG, NO_WAIT).await.unwrap().expect("a job");
    queue.complete(&lease, json!("short-lived")).await.unwrap();
    assert!(queue.status(id).await.unwrap().is_some(), "purged at once");
    eventually("the result to be purged", LONG, || async { queue.status(id).await.unwrap().is_none().then_some(()) })
        .await;
    shutdown.cancel();
    maintenance.await.unwrap();
}

async fn depth_counts_the_jobs_waiting_for_a_worker(backend: &Backend) {
    let queue = backend.connect().await;
    assert_eq!(queue.depth("depth").await.unwrap(), 0);
    for n in 0..3 {
        queue.enqueue("depth", json!(n), EnqueueOptions::default()).await.unwrap();
    }
    queue.enqueue("elsewhere", json!(0), EnqueueOptions::default()).await.unwrap();
    assert_eq!(queue.depth("depth").await.unwrap(), 3);
    let lease = queue.reserve("depth", "w", LONG, NO_WAIT).await.unwrap().expect("a job");
    assert_eq!(queue.depth("depth").await.unwrap(), 2);
    queue.fail(&lease, "again").await.unwrap();
    assert_eq!(queue.depth("depth").await.unwrap(), 3, "a job waiting to retry is waiting");
}

async fn queues_do_not_share_jobs(backend: &Backend) {
    let queue = backend.connect().await;
    let id = queue.enqueue("alpha", json!("a"), EnqueueOptions::default()).await.unwrap();
    assert!(queue.reserve("beta", "w", LONG, NO_WAIT).await.unwrap().is_none());
    assert_eq!(queue.reserve("alpha", "w", LONG, NO_WAIT).await.unwrap().map(|l| l.id), Some(id));
}

async fn a_waiting_reserve_picks_up_a_job_enqueued_later(backend: &Backend) {
    let (worker, producer) = (backend.connect().await, backend.connect().await);
    assert!(worker.reserve("later", "w", LONG, Duration::from_millis(100)).await.unwrap().is_none());
    let waiting = tokio::spawn(async move { worker.reserve("later", "w", LONG, LONG).await.unwrap() });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let id = producer.enqueue("later", json!("wake up"), EnqueueOptions::default()).await.unwrap();
    let lease = waiting.await.unwrap().expect("the job enqueued while waiting");
    assert_eq!((lease.id, lease.payload::<Value>().unwrap()), (id, json!("wake up")));
}

async fn wait_finished_returns_once_the_job_is_settled(backend: &Backend) {
    let (client, worker) = (backend.connect().await, backend.connect().await);
    let id = client.enqueue("waits", json!(21), EnqueueOptions::default()).await.unwrap();
    assert_eq!(client.wait_finished(id, Duration::from_millis(50)).await.unwrap(), None, "not finished yet");
    tokio::spawn(async move {
        let lease = worker.reserve("waits", "w", LONG, LONG).await.unwrap().expect("a job");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let n: i64 = lease.payload().unwrap_or_default();
        worker.complete(&lease, json!(n * 2)).await.unwrap();
    });
    let job = client.wait_finished(id, LONG).await.unwrap().expect("finished in time");
    assert_eq!((job.state, job.result), (JobState::Finished, Some(json!(42))));
}

async fn the_worker_retries_a_failing_handler_and_counts_a_panic_as_a_failure(backend: &Backend) {
    let queue = backend.connect().await;
    let quick = Backoff::new(Duration::from_millis(10), Duration::from_millis(50));
    let flaky = queue
        .enqueue("handlers", json!("flaky"), EnqueueOptions { max_attempts: 3, retry_backoff: quick })
        .await
        .unwrap();
    let hopeless = queue
        .enqueue("handlers", json!("hopeless"), EnqueueOptions { max_attempts: 2, retry_backoff: quick })
        .await
        .unwrap();
    let flaky_runs = Arc::new(AtomicUsize::new(0));
    let handler = {
        let flaky_runs = flaky_runs.clone();
        move |hope: Hope| {
            let flaky_runs = flaky_runs.clone();
            async move {
                match hope {
                    Hope::Flaky => match flaky_runs.fetch_add(1, Ordering::SeqCst) {
                        0 => Err("flaked".to_string()),
                        1 => panic!("kaboom"),
                        _ => Ok(json!("third time lucky")),
                    },
                    Hope::Hopeless => Err("no hope".to_string()),
                }
            }
        }
    };
    let shutdown = Shutdown::new();
    let pool = tokio::spawn(run_worker(queue.clone(), 2, handler, shutdown.clone()));
    let job = queue.wait_finished(flaky, LONG).await.unwrap().expect("settled in time");
    assert_eq!((job.state, job.attempts, job.result), (JobState::Finished, 3, Some(json!("third time lucky"))));
    let job = queue.wait_finished(hopeless, LONG).await.unwrap().expect("settled in time");
    assert_eq!((job.state, job.attempts, job.error.as_deref()), (JobState::Failed, 2, Some("no hope")));
    shutdown.cancel();
    pool.await.unwrap();
}

async fn the_worker_finishes_the_job_in_hand_when_shut_down(backend: &Backend) {
    let queue = backend.connect().await;
    let id = queue.enqueue("graceful", json!(null), EnqueueOptions::default()).await.unwrap();
    let shutdown = Shutdown::new();
    let handler = |_: Nap| async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        Ok(json!("done anyway"))
    };
    let options = WorkerOptions { lease: Duration::from_millis(150), ..WorkerOptions::new(1) };
    let pool = tokio::spawn(run_worker_with(queue.clone(), options, handler, shutdown.clone()));
    eventually("the job to start", LONG, || async {
        (queue.status(id).await.unwrap()?.state == JobState::Started).then_some(())
    })
    .await;
    shutdown.cancel();
    pool.await.unwrap();
    let job = queue.status(id).await.unwrap().expect("the job");
    // The handler outlived its 150 ms lease twice over: the background renewals kept it.
    assert_eq!((job.state, job.attempts, job.result), (JobState::Finished, 1, Some(json!("done anyway"))));
}

async fn a_payload_that_is_not_the_workers_job_type_fails_at_once_and_the_worker_goes_on(backend: &Backend) {
    let queue = backend.connect().await;
    let garbled = queue.enqueue(Square::QUEUE, json!({"n": "four"}), EnqueueOptions::attempts(3)).await.unwrap();
    let good = queue.enqueue(Square::QUEUE, json!({"n": 4}), EnqueueOptions::attempts(3)).await.unwrap();
    let shutdown = Shutdown::new();
    let handler = |Square { n }: Square| async move { Ok(json!({"square": n * n})) };
    let pool = tokio::spawn(run_worker(queue.clone(), 1, handler, shutdown.clone()));

    let job = queue.wait_finished(garbled, LONG).await.unwrap().expect("settled in time");
    assert_eq!((job.state, job.attempts, &job.result), (JobState::Failed, 1, &None), "retried: {job:?}");
    let error = job.error.unwrap_or_default();
    assert!(error.contains("Square") && error.contains("invalid type: string \"four\""), "{error}");
    let job = queue.wait_finished(good, LONG).await.unwrap().expect("settled in time");
    assert_eq!((job.state, job.result), (JobState::Finished, Some(json!({"square": 16}))));
    shutdown.cancel();
    pool.await.unwrap();
}

async fn a_queue_name_that_would_break_keys_is_refused(backend: &Backend) {
    let queue = backend.connect().await;
    let refused = queue.enqueue("two words", json!(null), EnqueueOptions::default()).await;
    assert!(matches!(refused, Err(QueueError::InvalidQueueName { .. })), "{refused:?}");
    assert!(matches!(queue.reserve("", "w", LONG, NO_WAIT).await, Err(QueueError::InvalidQueueName { .. })));
}

#[tokio::test]
async fn without_a_queue_url_the_queue_lives_in_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let queue = Queue::connect(None, &data_dir).await.unwrap();
    assert_eq!(queue.backend(), "sqlite");
    assert!(Path::new(&data_dir.join("queue.db")).exists());
    queue.ping().await.unwrap();

    let url = format!("sqlite://{}?mode=rwc", dir.path().join("other.db").display());
    let explicit = Queue::connect(Some(&url), dir.path()).await.unwrap();
    assert_eq!(explicit.backend(), "sqlite");
}

#[tokio::test]
async fn jobs_survive_a_restart_of_the_embedded_queue() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let queue = Queue::connect(None, dir.path()).await.unwrap();
        queue.enqueue("durable", json!({"keep": "me"}), EnqueueOptions::default()).await.unwrap()
    };
    let reopened = Queue::connect(None, dir.path()).await.unwrap();
    let lease = reopened.reserve("durable", "w", LONG, NO_WAIT).await.unwrap().expect("the job, after a restart");
    assert_eq!((lease.id, lease.payload::<Value>().unwrap()), (id, json!({"keep": "me"})));
}

#[tokio::test]
async fn a_payload_or_result_that_cannot_be_json_is_refused_with_its_queue() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::connect(None, dir.path()).await.unwrap();
    // JSON object keys are strings: a map keyed by pairs has no JSON form.
    let unwritable = HashMap::from([((1, 2), "pair")]);
    let refused = queue.enqueue("pairs", &unwritable, EnqueueOptions::default()).await;
    assert!(
        matches!(&refused, Err(QueueError::Encode { what: "payload", queue, .. }) if queue == "pairs"),
        "{refused:?}"
    );
    assert_eq!(queue.depth("pairs").await.unwrap(), 0);

    queue.enqueue("pairs", json!(null), EnqueueOptions::default()).await.unwrap();
    let lease = queue.reserve("pairs", "w", LONG, NO_WAIT).await.unwrap().expect("a job");
    let refused = queue.complete(&lease, &unwritable).await;
    assert!(matches!(refused, Err(QueueError::Encode { what: "result", .. })), "{refused:?}");
    queue.complete(&lease, "fine").await.unwrap();
}

#[tokio::test]
async fn an_unsupported_queue_url_is_refused_without_showing_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let err = Queue::connect(Some("amqp://user:hunter2@broker/"), dir.path()).await.unwrap_err();
    assert!(matches!(err, QueueError::Unsupported { .. }), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[tokio::test]
async fn queue_activity_shows_up_in_the_prometheus_metrics() {
    let handle = kit::metrics::install().expect("a metrics recorder");
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::connect(None, dir.path()).await.unwrap();
    queue.enqueue("metered", json!(1), EnqueueOptions::default()).await.unwrap();
    queue.enqueue("metered", json!(2), EnqueueOptions::attempts(1)).await.unwrap();
    let lease = queue.reserve("metered", "w", LONG, NO_WAIT).await.unwrap().expect("a job");
    queue.complete(&lease, json!("ok")).await.unwrap();
    let lease = queue.reserve("metered", "w", LONG, NO_WAIT).await.unwrap().expect("a job");
    queue.fail(&lease, "no").await.unwrap();
    queue.record_depths().await.unwrap();

    let text = handle.render();
    for expected in [
        r#"queue_jobs_total{queue="metered",outcome="enqueued"} 2"#,
        r#"queue_jobs_total{queue="metered",outcome="finished"} 1"#,
        r#"queue_jobs_total{queue="metered",outcome="failed"} 1"#,
        r#"queue_depth{queue="metered"} 0"#,
        r#"queue_job_duration_seconds_count{queue="metered"} 2"#,
        r#"queue_wait_seconds_count{queue="metered"} 2"#,
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
}
