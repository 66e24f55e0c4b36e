//! Backend outages through the kit's gate: PostgreSQL and Redis behind the fault proxy (the shared
//! servers are never stopped), and a SQLite file that cannot be written.

use std::sync::Arc;
use std::time::Duration;

use kit::db::{failure_of, Database, DatabaseConfig, Migrations};
use kit::outage::{Failure, Gated, OutagePolicy, Unavailable};
use kit::queue::{run_worker, EnqueueOptions, Job, JobState, Queue, QueueError, QueueOptions};
use kit::test_support::{eventually, fresh_postgres_database, postgres_url, redis_url, Fault, FaultProxy};
use kit::Shutdown;
use serde::{Deserialize, Serialize};
use sqlx::migrate::Migrator;

static NO_MIGRATIONS: Migrator = Migrator::DEFAULT;
const NONE: Migrations = Migrations { sqlite: &NO_MIGRATIONS, postgres: &NO_MIGRATIONS };

/// A store error as a service has one.
#[derive(Debug, thiserror::Error)]
enum StoreError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

impl Gated for StoreError {
    fn failure(&self) -> Option<Failure> {
        match self {
            StoreError::Database(e) => failure_of(e),
            StoreError::Unavailable(_) => None,
        }
    }
}

async fn select_one(db: &Database) -> Result<i64, StoreError> {
    let Database::Postgres(pool) = db else { unreachable!("PostgreSQL only") };
    Ok(sqlx::query_scalar("SELECT 1::BIGINT").fetch_one(pool).await?)
}

async fn postgres_outage(fault: Fault) {
    let Some(server) = postgres_url() else { return };
    let database = fresh_postgres_database(&server).await;
    let proxy = FaultProxy::in_front_of(&database).await;
    let db = DatabaseConfig::for_tests(proxy.url(&database)).open(NONE).await.expect("connects through the proxy");
    let gate = db.gate(OutagePolicy::default());
    assert_eq!(gate.run(select_one(&db)).await.unwrap(), 1);

    proxy.set(fault);
    let err = gate.run(select_one(&db)).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    eventually("the gate to close", Duration::from_secs(10), || async { (!gate.is_up()).then_some(()) }).await;
    assert_eq!(gate.health().status, "down");
    for _ in 0..10 {
        let err = gate.run(select_one(&db)).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "refused at once while down: {err}");
    }

    proxy.set(Fault::Pass);
    gate.wait_up().await;
    eventually("queries to go through again", Duration::from_secs(10), || async {
        gate.run(select_one(&db)).await.ok()
    })
    .await;
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_postgres, ignore = "set AGORA_TEST_POSTGRES_URL to run it against PostgreSQL")]
async fn postgres_refusing_connections_closes_the_gate_until_a_probe_sees_it_again() {
    postgres_outage(Fault::Refuse).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_postgres, ignore = "set AGORA_TEST_POSTGRES_URL to run it against PostgreSQL")]
async fn postgres_resetting_connections_closes_the_gate_until_a_probe_sees_it_again() {
    postgres_outage(Fault::Reset).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_postgres, ignore = "set AGORA_TEST_POSTGRES_URL to run it against PostgreSQL")]
async fn postgres_black_holed_closes_the_gate_after_the_first_wait_until_a_probe_sees_it_again() {
    postgres_outage(Fault::BlackHole).await;
}

#[tokio::test]
async fn a_read_only_sqlite_file_refuses_writes_as_for_now_and_reads_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let url = kit::db::sqlite_url_in(dir.path(), "notes");
    let db = DatabaseConfig::for_tests(&url).open(NONE).await.unwrap();
    let Database::Sqlite(pool) = &db else { unreachable!() };
    sqlx::query("CREATE TABLE notes (body TEXT)").execute(pool).await.unwrap();
    db.close().await;

    let read_only = url.replace("mode=rwc", "mode=ro");
    let pool = sqlx::SqlitePool::connect(&read_only).await.unwrap();
    let err = sqlx::query("INSERT INTO notes (body) VALUES ('x')").execute(&pool).await.unwrap_err();
    assert_eq!(failure_of(&err), Some(Failure::Refused), "{err}");
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM notes").fetch_one(&pool).await.unwrap();
    assert_eq!(count, 0, "reads go on");
}

/// A job for the Redis outage test.
#[derive(Serialize, Deserialize)]
struct Echo {
    n: u64,
}

impl Job for Echo {
    const QUEUE: &'static str = "outage";
    type Output = u64;
    type Error = String;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_redis, ignore = "set AGORA_TEST_REDIS_URL to run it against Redis")]
async fn redis_refusing_connections_makes_enqueue_unavailable_and_workers_resume_with_no_job_lost() {
    let Some(server) = redis_url() else { return };
    let proxy = FaultProxy::in_front_of(&server).await;
    let prefix = format!("agora:test:outage:{}", uuid::Uuid::new_v4().simple());
    let options = QueueOptions { redis_prefix: prefix, ..QueueOptions::default() };
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::connect_with(Some(&proxy.url(&server)), dir.path(), options).await.unwrap();
    let gate = queue.gate().expect("a Redis queue has a gate");

    // Jobs enqueued before the outage, and no worker yet: they wait in Redis.
    let mut before = Vec::new();
    for n in 0..5 {
        before.push(queue.enqueue(Echo::QUEUE, Echo { n }, EnqueueOptions::default()).await.unwrap());
    }
    proxy.set(Fault::Refuse);
    let err = queue.enqueue(Echo::QUEUE, Echo { n: 99 }, EnqueueOptions::default()).await.unwrap_err();
    assert!(matches!(err, QueueError::Outage(_)), "{err}");
    eventually("the gate to close", Duration::from_secs(10), || async { (!gate.is_up()).then_some(()) }).await;
    let err = queue.status(before[0]).await.unwrap_err();
    assert!(matches!(err, QueueError::Outage(_)), "{err}");

    // A worker started during the outage backs off, then works once Redis is back.
    let shutdown = Shutdown::new();
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = done.clone();
    let worker = tokio::spawn(run_worker(
        queue.clone(),
        2,
        move |job: Echo| {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok::<_, String>(job.n)
            }
        },
        shutdown.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await; // let the worker meet the outage
    proxy.set(Fault::Pass);
    for id in &before {
        let view = eventually("every job enqueued before the outage to finish", Duration::from_secs(20), || async {
            queue.status(*id).await.ok().flatten().filter(|v| v.state == JobState::Finished)
        })
        .await;
        assert!(view.result.is_some());
    }
    assert_eq!(done.load(std::sync::atomic::Ordering::Relaxed), 5, "each job ran once");
    shutdown.cancel();
    worker.await.unwrap();
}
