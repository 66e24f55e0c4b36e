//! The converter role (`agora serve converter`): takes conversion jobs from the kit queue,
//! probes the upload with ffprobe, converts its soundtrack with ffmpeg while reporting
//! progress, stores the mp3 and publishes "mp3 ready" or "conversion failed" (both staged in
//! the transaction that records the outcome).
//!
//! Failures are sorted: an input that can never be converted (not a video, no audio track)
//! or a conversion past its time limit fails once, for good; an ffmpeg failure is retried
//! while the job has attempts left. The lease is renewed while ffmpeg runs; when it is lost
//! or the job is cancelled (its video was deleted) ffmpeg is killed and nothing is stored;
//! when the converter stops, ffmpeg is killed and the job handed back at once.
//!
//! Every few seconds a converter reports to the database whether it can convert (ffmpeg
//! with libmp3lame found), so that the API refuses uploads, saying why, while none can.

use std::sync::Arc;
use std::time::Duration;

use kit::events::outbox::OutboxRelay;
use kit::queue::{FailOutcome, Job, Lease, Queue, QueueError};
use kit::Shutdown;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::blobs;
use crate::domain;
use crate::ffmpeg::{ConvertError, Tools};
use crate::store::{Store, StoreError};

/// How often a converter reports whether it can convert.
pub const REPORT_EVERY: Duration = Duration::from_secs(5);

/// A conversion job's payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConvertJob {
    /// The video to convert.
    pub video_id: String,
}

impl Job for ConvertJob {
    const QUEUE: &'static str = "media-mp3";
    type Output = serde_json::Value;
    type Error = String;
}

/// How converters run.
#[derive(Debug, Clone)]
pub struct ConverterOptions {
    /// Conversions at once per process.
    pub concurrency: usize,
    /// Lease per attempt, renewed every third of it.
    pub lease: Duration,
    /// A conversion's time limit.
    pub job_timeout: Duration,
    /// The programs.
    pub tools: Tools,
    /// This process's id in the queue and in the converters' reports.
    pub worker_id: String,
}

/// What every conversion task shares.
struct Converter {
    store: Store,
    queue: Queue,
    relay: Arc<OutboxRelay>,
    options: ConverterOptions,
}

/// Why the converter's own bookkeeping failed (logged; the job is left to its lease).
#[derive(Debug, thiserror::Error)]
enum Trouble {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Runs converters until `shutdown`: reports capability, and while ffmpeg is usable takes jobs
/// with `options.concurrency` tasks. Returns once every task has stopped.
pub async fn run(store: Store, queue: Queue, relay: Arc<OutboxRelay>, options: ConverterOptions, shutdown: Shutdown) {
    let converter = Arc::new(Converter { store, queue, relay, options });
    let usable = CancellationToken::new();
    let reporter = tokio::spawn(report(converter.clone(), usable.clone(), shutdown.clone()));
    let mut slots = tokio::task::JoinSet::new();
    for slot in 0..converter.options.concurrency.max(1) {
        slots.spawn(work(converter.clone(), slot, usable.clone(), shutdown.clone()));
    }
    while slots.join_next().await.is_some() {}
    let _ = reporter.await;
    if let Err(err) = converter.store.forget_converter(&converter.options.worker_id).await {
        tracing::warn!(error = %err, "could not withdraw the converter's report");
    }
    tracing::info!(worker = %converter.options.worker_id, "converter stopped");
}

/// Checks the tools and reports the outcome every [`REPORT_EVERY`]; trips `usable` the first
/// time they work (the work loops wait for it).
async fn report(converter: Arc<Converter>, usable: CancellationToken, shutdown: Shutdown) {
    let mut last: Option<Result<String, String>> = None;
    loop {
        // Once usable, the tools are not checked again (a process per check is not free).
        let checked = match &last {
            Some(Ok(version)) => Ok(version.clone()),
            _ => converter.options.tools.check().await,
        };
        match (&checked, &last) {
            (Ok(version), last) if !matches!(last, Some(Ok(_))) => {
                tracing::info!(worker = %converter.options.worker_id, ffmpeg = %version, "converter can convert");
                usable.cancel();
            }
            (Err(why), last) if last.as_ref() != Some(&checked) => {
                tracing::warn!(worker = %converter.options.worker_id, reason = %why, "converter cannot convert");
            }
            _ => {}
        }
        let (can, detail) = match &checked {
            Ok(version) => (true, version.as_str()),
            Err(why) => (false, why.as_str()),
        };
        if let Err(err) = converter.store.report_converter(&converter.options.worker_id, can, detail).await {
            tracing::warn!(error = %err, "could not report the converter's capability");
        }
        last = Some(checked);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(REPORT_EVERY) => {}
        }
    }
}

/// One conversion task: reserve, convert, settle, until shutdown.
async fn work(converter: Arc<Converter>, slot: usize, usable: CancellationToken, shutdown: Shutdown) {
    tokio::select! {
        _ = usable.cancelled() => {}
        _ = shutdown.cancelled() => return,
    }
    let worker = format!("{}/{slot}", converter.options.worker_id);
    let mut errors = 0u32;
    let backoff = kit::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    while !shutdown.is_cancelled() {
        let (lease, wait) = (converter.options.lease, Duration::from_secs(5));
        let reserved = converter.queue.reserve_unless_stopped(ConvertJob::QUEUE, &worker, lease, wait, &shutdown).await;
        match reserved {
            Ok(Some(lease)) => {
                errors = 0;
                let id = lease.id;
                if let Err(err) = converter.convert(lease, &shutdown).await {
                    tracing::warn!(job = %id, error = %err, "a conversion could not be settled; its lease will hand it on");
                }
            }
            Ok(None) => {}
            Err(err) => {
                let delay = backoff.delay(errors);
                errors = errors.saturating_add(1);
                tracing::warn!(error = %err, "reserving a conversion failed");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => break,
                }
            }
        }
    }
}

/// Why ffmpeg was stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopCause {
    Lost,
    Cancelled,
    Shutdown,
}

impl Converter {
    async fn convert(&self, lease: Lease, shutdown: &Shutdown) -> Result<(), Trouble> {
        let job: ConvertJob = match lease.payload() {
            Ok(job) => job,
            Err(err) => {
                let reason = format!("the payload is not a conversion job: {err}");
                return Ok(self.queue.fail_permanently(&lease, &reason).await?);
            }
        };
        let video_id = job.video_id.as_str();
        let Some(video) = self.store.start_attempt(video_id, lease.attempt).await? else {
            // Deleted, or settled by an earlier attempt that died before completing its job.
            let skipped = serde_json::json!({ "skipped": "the video is gone or already settled" });
            return Ok(self.queue.complete(&lease, skipped).await?);
        };
        tracing::info!(job = %lease.id, video = video_id, attempt = lease.attempt, "conversion started");
        let stop = CancellationToken::new();
        let cause = Arc::new(std::sync::Mutex::new(None));
        let renewer = tokio::spawn(keep_renewing(
            self.queue.clone(),
            lease.clone(),
            self.options.lease,
            stop.clone(),
            cause.clone(),
        ));
        let on_shutdown = {
            let (stop, cause, shutdown) = (stop.clone(), cause.clone(), shutdown.clone());
            tokio::spawn(async move {
                shutdown.cancelled().await;
                set_cause(&cause, StopCause::Shutdown);
                stop.cancel();
            })
        };
        let outcome = self.attempt(&lease, &video.video_blob, video_id, &stop, &cause).await;
        renewer.abort();
        on_shutdown.abort();
        let stopped_by = *cause.lock().unwrap_or_else(|p| p.into_inner());
        match outcome {
            Ok((mp3, duration_ms)) => match self.store.finish(video_id, mp3, duration_ms).await? {
                Some((video, _)) => {
                    self.relay.staged();
                    tracing::info!(video = video_id, mp3 = ?video.mp3_id, "mp3 ready");
                    let result = serde_json::json!({ "mp3_id": video.mp3_id });
                    Ok(self.queue.complete(&lease, result).await?)
                }
                None => {
                    let skipped = serde_json::json!({ "skipped": "the video was deleted while converting" });
                    Ok(self.queue.complete(&lease, skipped).await?)
                }
            },
            Err(ConvertError::Stopped) => match stopped_by {
                // Another converter has it, or it was cancelled: nothing to settle.
                Some(StopCause::Lost) | Some(StopCause::Cancelled) | None => {
                    tracing::info!(job = %lease.id, video = video_id, cause = ?stopped_by, "conversion abandoned");
                    Ok(())
                }
                Some(StopCause::Shutdown) => self.retry_or_fail(&lease, video_id, "the converter stopped").await,
            },
            Err(err @ (ConvertError::Unconvertible(_) | ConvertError::TimedOut(_))) => {
                let reason = err.to_string();
                tracing::info!(video = video_id, %reason, "video cannot be converted");
                if self.store.fail(video_id, &reason).await?.is_some() {
                    self.relay.staged();
                }
                Ok(self.queue.fail_permanently(&lease, &reason).await?)
            }
            Err(err) => self.retry_or_fail(&lease, video_id, &err.to_string()).await,
        }
    }

    /// Probes and converts; the mp3 (a temp file, hashed) and the duration.
    async fn attempt(
        &self,
        lease: &Lease,
        blob: &str,
        video_id: &str,
        stop: &CancellationToken,
        cause: &Arc<std::sync::Mutex<Option<StopCause>>>,
    ) -> Result<(blobs::Received, u64), ConvertError> {
        let local_error = |e: StoreError| ConvertError::Failed(format!("cannot read the upload: {e}"));
        let (input, _copy) = self.store.local_file(blob).await.map_err(local_error)?;
        let probe = self.options.tools.probe(&input).await?;
        if let Err(err) = self.store.set_progress(video_id, 0, Some(probe.duration_ms)).await {
            tracing::warn!(video = video_id, error = %err, "could not record the duration");
        }
        let tmp = self.store.tmp_dir().to_path_buf();
        tokio::fs::create_dir_all(&tmp).await.map_err(|e| ConvertError::Failed(e.to_string()))?;
        let output = tempfile::TempPath::try_from_path(tmp.join(format!("mp3-{}.part", uuid::Uuid::new_v4().simple())))
            .map_err(|e| ConvertError::Failed(format!("no temp file for the mp3: {e}")))?;
        let mut shown = 0u8;
        let progress = |at_us: u64| {
            let percent = domain::percent(at_us, probe.duration_ms);
            let changed = percent != shown;
            shown = percent;
            async move {
                if !changed {
                    return;
                }
                if let Err(err) = self.store.set_progress(video_id, percent, None).await {
                    tracing::debug!(video = video_id, error = %err, "could not record progress");
                }
                match self.queue.progress(lease, percent).await {
                    Ok(()) => {}
                    Err(QueueError::Cancelled { .. }) => {
                        set_cause(cause, StopCause::Cancelled);
                        stop.cancel();
                    }
                    Err(QueueError::LeaseLost { .. }) => {
                        set_cause(cause, StopCause::Lost);
                        stop.cancel();
                    }
                    Err(err) => tracing::debug!(video = video_id, error = %err, "could not report progress"),
                }
            }
        };
        self.options.tools.convert(&input, &output, self.options.job_timeout, stop, progress).await?;
        let mp3 = blobs::receive_file(output).await.map_err(|e| ConvertError::Failed(e.to_string()))?;
        if mp3.size == 0 {
            return Err(ConvertError::Failed("ffmpeg wrote an empty mp3".into()));
        }
        Ok((mp3, probe.duration_ms))
    }

    /// A failed attempt: retried (the video back to `queued`) while attempts are left, else
    /// the video fails with `reason`.
    async fn retry_or_fail(&self, lease: &Lease, video_id: &str, reason: &str) -> Result<(), Trouble> {
        tracing::warn!(job = %lease.id, video = video_id, attempt = lease.attempt, %reason, "conversion attempt failed");
        if lease.attempt < lease.max_attempts {
            self.store.requeue(video_id, reason).await?;
        }
        match self.queue.fail(lease, reason).await? {
            FailOutcome::Retrying { .. } => Ok(()),
            FailOutcome::Failed => {
                if self.store.fail(video_id, reason).await?.is_some() {
                    self.relay.staged();
                }
                Ok(())
            }
        }
    }
}

fn set_cause(cause: &std::sync::Mutex<Option<StopCause>>, why: StopCause) {
    let mut cause = cause.lock().unwrap_or_else(|p| p.into_inner());
    cause.get_or_insert(why);
}

/// Renews every third of the lease; stops the conversion when the lease is lost or the job cancelled.
async fn keep_renewing(
    queue: Queue,
    lease: Lease,
    lease_for: Duration,
    stop: CancellationToken,
    cause: Arc<std::sync::Mutex<Option<StopCause>>>,
) {
    let every = (lease_for / 3).max(Duration::from_millis(50));
    loop {
        tokio::time::sleep(every).await;
        match queue.renew(&lease, lease_for).await {
            Ok(()) => {}
            Err(QueueError::Cancelled { .. }) => {
                set_cause(&cause, StopCause::Cancelled);
                stop.cancel();
                return;
            }
            Err(QueueError::LeaseLost { .. }) => {
                set_cause(&cause, StopCause::Lost);
                stop.cancel();
                return;
            }
            Err(err) => tracing::warn!(job = %lease.id, error = %err, "renewing a conversion's lease failed"),
        }
    }
}
