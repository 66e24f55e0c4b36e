//! The kit's database layer against real engines: SQLite always, PostgreSQL
//! when `AGORA_TEST_POSTGRES_URL` is set (CI sets it and requires it).

use std::time::Duration;

use kit::backoff::Backoff;
use kit::db::{connect, transaction, ConnectPolicy, Database, DbError, Migrations};
use kit::test_support::{fresh_postgres_database, postgres_url, temp_sqlite_url};
use sqlx::migrate::Migrator;

static SQLITE: Migrator = sqlx::migrate!("tests/migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("tests/migrations/postgres");
const MIGRATIONS: Migrations = Migrations { sqlite: &SQLITE, postgres: &POSTGRES };

fn quick_policy(retries: u32) -> ConnectPolicy {
    ConnectPolicy {
        max_retries: retries,
        backoff: Backoff::new(Duration::from_millis(10), Duration::from_millis(40)),
        max_connections: 4,
        connect_timeout: Duration::from_millis(500),
        ..ConnectPolicy::default()
    }
}

#[derive(Debug)]
struct Failed;
impl From<sqlx::Error> for Failed {
    fn from(_: sqlx::Error) -> Self {
        Failed
    }
}

async fn count(db: &Database) -> i64 {
    match db {
        Database::Sqlite(p) => sqlx::query_scalar("SELECT COUNT(*) FROM notes").fetch_one(p).await.unwrap(),
        Database::Postgres(p) => sqlx::query_scalar("SELECT COUNT(*) FROM notes").fetch_one(p).await.unwrap(),
    }
}

/// Inserts two notes in one transaction; the second is a duplicate when `fail` is set.
async fn insert_two(db: &Database, fail: bool) -> Result<(), Failed> {
    let second = if fail { "first" } else { "second" };
    match db {
        Database::Sqlite(pool) => {
            transaction(pool, |tx| {
                Box::pin(async move {
                    sqlx::query("INSERT INTO notes (body) VALUES ('first')").execute(&mut **tx).await?;
                    sqlx::query("INSERT INTO notes (body) VALUES ($1)").bind(second).execute(&mut **tx).await?;
                    Ok(())
                })
            })
            .await
        }
        Database::Postgres(pool) => {
            transaction(pool, |tx| {
                Box::pin(async move {
                    sqlx::query("INSERT INTO notes (body) VALUES ('first')").execute(&mut **tx).await?;
                    sqlx::query("INSERT INTO notes (body) VALUES ($1)").bind(second).execute(&mut **tx).await?;
                    Ok(())
                })
            })
            .await
        }
    }
}

async fn migrations_and_transactions_hold(url: &str) {
    let db = connect(url, MIGRATIONS, quick_policy(0)).await.expect("connects and migrates");
    db.ping().await.expect("answers");
    assert!(insert_two(&db, true).await.is_err(), "a duplicate fails the transaction");
    assert_eq!(count(&db).await, 0, "a failed transaction leaves nothing behind");
    insert_two(&db, false).await.expect("a good transaction commits");
    assert_eq!(count(&db).await, 2);
    db.close().await;
    // Connecting again re-runs nothing and keeps the data.
    let again = connect(url, MIGRATIONS, quick_policy(0)).await.expect("reconnects");
    assert_eq!(count(&again).await, 2, "data survives a restart");
}

#[tokio::test]
async fn sqlite_is_migrated_at_start_and_transactions_are_all_or_nothing() {
    let (_dir, url) = temp_sqlite_url("kit");
    migrations_and_transactions_hold(&url).await;
}

#[tokio::test]
#[cfg_attr(no_postgres, ignore = "set AGORA_TEST_POSTGRES_URL to run it against PostgreSQL")]
async fn postgres_is_migrated_at_start_and_transactions_are_all_or_nothing() {
    let Some(server) = postgres_url() else { return };
    let url = fresh_postgres_database(&server).await;
    migrations_and_transactions_hold(&url).await;
}

#[tokio::test]
async fn an_unreachable_database_is_retried_then_reported_without_its_password() {
    // Nothing listens on port 1.
    let err = connect("postgres://agora:hunter2@127.0.0.1:1/agora", MIGRATIONS, quick_policy(2))
        .await
        .expect_err("cannot connect");
    let message = err.to_string();
    assert!(matches!(err, DbError::Unreachable { attempts: 3, .. }), "{message}");
    assert!(message.contains("postgres://agora:***@127.0.0.1:1/agora"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}

#[tokio::test]
#[cfg_attr(no_postgres, ignore = "set AGORA_TEST_POSTGRES_URL to run it against PostgreSQL")]
async fn a_postgres_database_that_appears_while_retrying_is_used() {
    let Some(server) = postgres_url() else { return };
    let url = fresh_postgres_database(&server).await;
    // Point at a port that starts forwarding to PostgreSQL only after a while.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let target = url::Url::parse(&url).unwrap();
    let pg_addr = format!("{}:{}", target.host_str().unwrap_or("127.0.0.1"), target.port().unwrap_or(5432));
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            let pg_addr = pg_addr.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(pg_addr).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    let mut late = target.clone();
    late.set_host(Some("127.0.0.1")).unwrap();
    late.set_port(Some(port)).unwrap();
    let db = connect(late.as_str(), MIGRATIONS, quick_policy(30)).await.expect("connects once the database appears");
    assert_eq!(count(&db).await, 0);
}

/// Inserts two notes in one transaction that takes `pause` between them.
async fn insert_two_slowly(db: Database, pause: Duration) -> Result<(), Failed> {
    match &db {
        Database::Sqlite(pool) => {
            let mut tx = pool.begin().await?;
            sqlx::query("INSERT INTO notes (body) VALUES ('slow first')").execute(&mut *tx).await?;
            tokio::time::sleep(pause).await;
            sqlx::query("INSERT INTO notes (body) VALUES ('slow second')").execute(&mut *tx).await?;
            tx.commit().await?;
        }
        Database::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            sqlx::query("INSERT INTO notes (body) VALUES ('slow first')").execute(&mut *tx).await?;
            tokio::time::sleep(pause).await;
            sqlx::query("INSERT INTO notes (body) VALUES ('slow second')").execute(&mut *tx).await?;
            tx.commit().await?;
        }
    }
    Ok(())
}

async fn a_detached_transaction_ends_whoever_stops_waiting(url: &str) {
    let db = connect(url, MIGRATIONS, quick_policy(0)).await.expect("connects and migrates");
    // The caller gives up (a deadline, a client gone) while the transaction is half-way.
    let work = kit::db::detached(insert_two_slowly(db.clone(), Duration::from_millis(300)));
    assert!(tokio::time::timeout(Duration::from_millis(50), work).await.is_err(), "the caller stopped waiting");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while count(&db).await < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the detached transaction never committed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every pooled connection is still usable for transactions.
    for _ in 0..8 {
        insert_two(&db, false).await.expect("a transaction on a pooled connection commits");
        let removed = match &db {
            Database::Sqlite(p) => {
                sqlx::query("DELETE FROM notes WHERE body <> 'slow first' AND body <> 'slow second'")
                    .execute(p)
                    .await
                    .map(|r| r.rows_affected())
            }
            Database::Postgres(p) => {
                sqlx::query("DELETE FROM notes WHERE body <> 'slow first' AND body <> 'slow second'")
                    .execute(p)
                    .await
                    .map(|r| r.rows_affected())
            }
        };
        assert_eq!(removed.expect("deletes"), 2);
    }
    assert_eq!(count(&db).await, 2);
}

#[tokio::test]
async fn sqlite_detached_transactions_end_whoever_stops_waiting() {
    let (_dir, url) = temp_sqlite_url("kit");
    a_detached_transaction_ends_whoever_stops_waiting(&url).await;
}

#[tokio::test]
#[cfg_attr(no_postgres, ignore = "set AGORA_TEST_POSTGRES_URL to run it against PostgreSQL")]
async fn postgres_detached_transactions_end_whoever_stops_waiting() {
    let Some(server) = postgres_url() else { return };
    let url = fresh_postgres_database(&server).await;
    a_detached_transaction_ends_whoever_stops_waiting(&url).await;
}
