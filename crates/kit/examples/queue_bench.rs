//! Job queue benchmark (see `bench/queue.sh`, which runs it for both backends).
//!
//! ```sh
//! cargo run --release -p kit --example queue_bench -- --backend redis --jobs 20000 --workers 2
//! cargo run --release -p kit --example queue_bench -- --backend sqlite --jobs 5000
//! ```
//!
//! Measures, on one fresh store (a temporary SQLite file, or a fresh Redis key prefix):
//!
//! 1. **enqueue**: jobs per second enqueued one after another by one client;
//! 2. **drain**: no-op jobs finished per second by 1 worker task, then by
//!    `--workers` tasks, each task on its own connection (`run_worker`, with
//!    its lease renewal and settling, exactly as a service runs it);
//! 3. **round trip**: enqueue → finished visible to the client
//!    (`wait_finished`), one job at a time with one idle worker, p50/p99.
//!
//! Prints a report and, last, one JSON line with every figure.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use kit::queue::{run_worker_with, EnqueueOptions, Job, JobId, JobState, Queue, QueueOptions, WorkerOptions};
use kit::Shutdown;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// A job that does nothing: the drain phases measure the queue alone.
#[derive(Serialize, Deserialize)]
struct Noop {
    n: usize,
}

impl Job for Noop {
    // Both drain phases use it, one after the other: the first leaves the queue empty.
    const QUEUE: &'static str = "drain";
    type Output = ();
    type Error = Infallible;
}

/// A job whose result is its payload, for the round trips.
#[derive(Serialize, Deserialize)]
struct Echo {
    i: usize,
}

impl Job for Echo {
    const QUEUE: &'static str = "round-trip";
    type Output = Echo;
    type Error = Infallible;
}

struct Args {
    backend: String,
    jobs: usize,
    workers: usize,
    round_trips: usize,
    redis_url: String,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        backend: "redis".into(),
        jobs: 10_000,
        workers: 2,
        round_trips: 500,
        redis_url: std::env::var("QUEUE_BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--backend" => args.backend = value()?,
            "--jobs" => args.jobs = value()?.parse().context("--jobs")?,
            "--workers" => args.workers = value()?.parse().context("--workers")?,
            "--round-trips" => args.round_trips = value()?.parse().context("--round-trips")?,
            "--redis-url" => args.redis_url = value()?,
            "-h" | "--help" => {
                println!(
                    "queue_bench [--backend redis|sqlite] [--jobs N] [--workers W] [--round-trips R] [--redis-url URL]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if !matches!(args.backend.as_str(), "redis" | "sqlite") {
        bail!("--backend must be redis or sqlite, not {:?}", args.backend);
    }
    if args.jobs == 0 || args.workers == 0 || args.round_trips == 0 {
        bail!("--jobs, --workers and --round-trips must be positive");
    }
    Ok(args)
}

/// The store under test; every `connect` is a separate connection (pool) to it.
struct Store {
    url: Option<String>,
    dir: tempfile::TempDir,
    options: QueueOptions,
}

impl Store {
    async fn connect(&self) -> anyhow::Result<Queue> {
        Ok(Queue::connect_with(self.url.as_deref(), self.dir.path(), self.options.clone()).await?)
    }

    async fn clean_up(&self) -> anyhow::Result<()> {
        let Some(url) = &self.url else { return Ok(()) };
        let client = redis::Client::open(url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(format!("{}:*", self.options.redis_prefix)).query_async(&mut conn).await?;
        for chunk in keys.chunks(1000) {
            let _: () = redis::cmd("DEL").arg(chunk).query_async(&mut conn).await?;
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let store = Store {
        url: (args.backend == "redis").then(|| args.redis_url.clone()),
        dir: tempfile::tempdir().context("temp dir")?,
        options: QueueOptions {
            redis_prefix: format!("agora:bench:{}", uuid::Uuid::new_v4().simple()),
            ..QueueOptions::default()
        },
    };
    let outcome = run(&args, &store).await;
    store.clean_up().await.context("cleaning up the benchmark's Redis keys")?;
    outcome
}

async fn run(args: &Args, store: &Store) -> anyhow::Result<()> {
    println!(
        "queue_bench: backend={} jobs={} workers={} round_trips={}",
        args.backend, args.jobs, args.workers, args.round_trips
    );
    let client = store.connect().await?;

    // 1. Enqueue rate, one client, one job after another.
    let (enqueue_rate, last) = enqueue_all(&client, args.jobs).await?;
    println!("enqueue                      {enqueue_rate:>10.0} jobs/s");

    // 2. Drain rate with 1 worker task, then with `workers` tasks.
    let drain_1 = drain(store, &client, args.jobs, 1, last).await?;
    println!("drain, 1 worker              {drain_1:>10.0} jobs/s");
    let drain_w = if args.workers > 1 {
        let (_, last) = enqueue_all(&client, args.jobs).await?;
        let rate = drain(store, &client, args.jobs, args.workers, last).await?;
        println!("drain, {} workers            {rate:>10.0} jobs/s", args.workers);
        Some(rate)
    } else {
        None
    };

    // 3. Round trip with one idle worker.
    let latencies = round_trips(store, &client, args.round_trips).await?;
    let (p50, p99, mean) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99), mean(&latencies));
    println!("round trip                   p50 {p50:.3} ms   p99 {p99:.3} ms   mean {mean:.3} ms");

    let summary = json!({
        "backend": args.backend,
        "jobs": args.jobs,
        "workers": args.workers,
        "enqueue_per_sec": enqueue_rate.round(),
        "drain_1_per_sec": drain_1.round(),
        "drain_w_per_sec": drain_w.map(f64::round),
        "round_trip_p50_ms": round3(p50),
        "round_trip_p99_ms": round3(p99),
        "round_trip_mean_ms": round3(mean),
        "round_trips": args.round_trips,
    });
    println!("{summary}");
    Ok(())
}

async fn enqueue_all(queue: &Queue, jobs: usize) -> anyhow::Result<(f64, JobId)> {
    let started = Instant::now();
    let mut last = None;
    for n in 0..jobs {
        last = Some(queue.enqueue(Noop::QUEUE, Noop { n }, EnqueueOptions::default()).await?);
    }
    let rate = jobs as f64 / started.elapsed().as_secs_f64();
    Ok((rate, last.context("no job enqueued")?))
}

/// Starts `workers` worker tasks, each on its own connection, and times them
/// until the last of `jobs` waiting no-op jobs is finished.
async fn drain(store: &Store, client: &Queue, jobs: usize, workers: usize, last: JobId) -> anyhow::Result<f64> {
    let done = Arc::new(AtomicUsize::new(0));
    let all_handled = Arc::new(tokio::sync::Notify::new());
    let shutdown = Shutdown::new();
    let mut pools = Vec::new();
    let mut connections = Vec::new();
    for _ in 0..workers {
        connections.push(store.connect().await?);
    }
    let started = Instant::now();
    for queue in connections {
        let (done, all_handled) = (done.clone(), all_handled.clone());
        let handler = move |_job: Noop| {
            if done.fetch_add(1, Ordering::Relaxed) + 1 == jobs {
                all_handled.notify_one();
            }
            async { Ok::<_, Infallible>(()) }
        };
        let options = WorkerOptions { poll_wait: Duration::from_millis(500), ..WorkerOptions::new(1) };
        pools.push(tokio::spawn(run_worker_with(queue, options, handler, shutdown.clone())));
    }
    all_handled.notified().await;
    // FIFO: the last job enqueued is the last handed out; once it is settled, all are.
    let view = client.wait_finished(last, Duration::from_secs(60)).await?.context("the last job did not finish")?;
    let elapsed = started.elapsed();
    if view.state != JobState::Finished {
        bail!("the last job ended {:?}", view.state);
    }
    shutdown.cancel();
    for pool in pools {
        pool.await?;
    }
    let remaining = client.depth(Noop::QUEUE).await?;
    if remaining != 0 {
        bail!("{remaining} jobs left in {}", Noop::QUEUE);
    }
    Ok(jobs as f64 / elapsed.as_secs_f64())
}

/// Milliseconds from enqueue to the client seeing the job finished, one job at a time.
async fn round_trips(store: &Store, client: &Queue, count: usize) -> anyhow::Result<Vec<f64>> {
    let shutdown = Shutdown::new();
    let worker = store.connect().await?;
    let handler = |job: Echo| async move { Ok::<_, Infallible>(job) };
    let pool = tokio::spawn(run_worker_with(worker, WorkerOptions::new(1), handler, shutdown.clone()));
    let warm_up = 20;
    let mut latencies = Vec::with_capacity(count);
    for i in 0..count + warm_up {
        let started = Instant::now();
        let id = client.enqueue(Echo::QUEUE, Echo { i }, EnqueueOptions::default()).await?;
        let view = client.wait_finished(id, Duration::from_secs(10)).await?.context("a round trip timed out")?;
        let elapsed = started.elapsed();
        if view.state != JobState::Finished {
            bail!("round-trip job ended {:?}", view.state);
        }
        if i >= warm_up {
            latencies.push(elapsed.as_secs_f64() * 1000.0);
        }
    }
    shutdown.cancel();
    pool.await?;
    Ok(latencies)
}

fn percentile(samples: &[f64], q: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn mean(samples: &[f64]) -> f64 {
    samples.iter().sum::<f64>() / samples.len().max(1) as f64
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
