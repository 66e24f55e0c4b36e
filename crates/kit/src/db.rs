//! Databases: SQLite (the embedded default) or PostgreSQL (`DATABASE_URL=postgres://…`),
//! connected with exponential backoff and a bounded number of retries (seed 003),
//! migrated at start from migrations embedded in the binary.

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

use crate::backoff::Backoff;
use crate::config::{redact_url, ConfigError, Env, Source};
use crate::outage::{Failure, Gate, OutagePolicy};

/// A connected, migrated database of one of the two supported engines.
#[derive(Debug, Clone)]
pub enum Database {
    /// A SQLite file.
    Sqlite(SqlitePool),
    /// A PostgreSQL server.
    Postgres(PgPool),
}

/// A service's migrations, one set per engine (SQL dialects differ).
#[derive(Debug, Clone, Copy)]
pub struct Migrations {
    /// Migrations for SQLite.
    pub sqlite: &'static Migrator,
    /// Migrations for PostgreSQL.
    pub postgres: &'static Migrator,
}

/// The calling crate's [`Migrations`]: `migrations/sqlite` and `migrations/postgres` under its
/// manifest directory, embedded in the binary at build time. A service's store says
/// `pub const MIGRATIONS: Migrations = kit::migrations!();`.
#[macro_export]
macro_rules! migrations {
    () => {{
        static SQLITE: ::sqlx::migrate::Migrator = ::sqlx::migrate!("migrations/sqlite");
        static POSTGRES: ::sqlx::migrate::Migrator = ::sqlx::migrate!("migrations/postgres");
        $crate::db::Migrations { sqlite: &SQLITE, postgres: &POSTGRES }
    }};
}

/// How hard to try before giving up on the database at start.
#[derive(Debug, Clone, Copy)]
pub struct ConnectPolicy {
    /// Retries after the first attempt (`DB_CONNECT_RETRIES`).
    pub max_retries: u32,
    /// Delay growth between attempts (`DB_CONNECT_BACKOFF_SECS` is the first delay).
    pub backoff: Backoff,
    /// Pool size (`DB_MAX_CONNECTIONS`).
    pub max_connections: u32,
    /// Time to wait for one connection attempt.
    pub connect_timeout: Duration,
    /// How long a SQLite write waits for a lock held by another process before it is refused
    /// (`DB_BUSY_TIMEOUT_MS`, default 1 s): then it is a 503, and reads go on.
    pub busy_timeout: Duration,
}

impl Default for ConnectPolicy {
    fn default() -> Self {
        Self {
            max_retries: 8,
            backoff: Backoff::new(Duration::from_millis(250), Duration::from_secs(8)),
            max_connections: 16,
            connect_timeout: Duration::from_secs(3),
            busy_timeout: Duration::from_secs(1),
        }
    }
}

impl ConnectPolicy {
    /// Reads `DB_CONNECT_RETRIES`, `DB_CONNECT_BACKOFF_SECS`, `DB_MAX_CONNECTIONS`, `DB_BUSY_TIMEOUT_MS`.
    pub fn from_env<S: Source>(env: &Env<S>) -> Result<Self, ConfigError> {
        let d = Self::default();
        let first = env.secs_or("DB_CONNECT_BACKOFF_SECS", d.backoff.base)?;
        Ok(Self {
            max_retries: env.parse_or("DB_CONNECT_RETRIES", d.max_retries)?,
            backoff: Backoff::new(first, Duration::from_secs(30).max(first)),
            max_connections: env.parse_or("DB_MAX_CONNECTIONS", d.max_connections)?,
            connect_timeout: d.connect_timeout,
            busy_timeout: Duration::from_millis(env.parse_or("DB_BUSY_TIMEOUT_MS", d.busy_timeout.as_millis() as u64)?),
        })
    }
}

/// A database URL that shows itself with its password replaced by `***` (`Debug` and `Display`), so that a
/// configuration holding it can be logged whole; [`SecretUrl::expose`] hands the real one to the driver.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL with its password, for connecting only: never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", redact_url(&self.0))
    }
}

impl std::fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

/// A service's database: where it is and how hard to try reaching it at start.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// `DATABASE_URL`; by default the SQLite file `<service>.db` under `DATA_DIR` (default `./data`).
    pub url: SecretUrl,
    /// Retries, backoff and pool size (`DB_CONNECT_RETRIES`, `DB_CONNECT_BACKOFF_SECS`, `DB_MAX_CONNECTIONS`).
    pub connect: ConnectPolicy,
    /// How an outage is noticed and a recovery seen (`DB_OUTAGE_DETECT_MS`): see [`Database::gate`].
    pub outage: OutagePolicy,
}

impl DatabaseConfig {
    /// Reads `DATABASE_URL` (else `DATA_DIR`) and the connect policy; a bad value is an error naming its variable.
    pub fn from_env<S: Source>(env: &Env<S>, service: &str) -> Result<Self, ConfigError> {
        let url = match env.string("DATABASE_URL") {
            Some(url) => url,
            None => sqlite_url_in(&crate::config::data_dir(env), service),
        };
        Ok(Self {
            url: SecretUrl::new(url),
            connect: ConnectPolicy::from_env(env)?,
            outage: OutagePolicy::from_env(env)?,
        })
    }

    /// The database at `url`, given up on after two retries: for tests.
    pub fn for_tests(url: impl Into<String>) -> Self {
        Self {
            url: SecretUrl::new(url),
            connect: ConnectPolicy { max_retries: 2, ..ConnectPolicy::default() },
            outage: OutagePolicy::default(),
        }
    }

    /// Creates a SQLite file's directory (so that a fresh `DATA_DIR` just works), connects with the
    /// connect policy and applies `migrations`.
    pub async fn open(&self, migrations: Migrations) -> Result<Database, DbError> {
        if let Some(dir) = sqlite_dir(self.url.expose()) {
            tokio::fs::create_dir_all(&dir).await.map_err(|source| DbError::DataDir { path: dir, source })?;
        }
        connect(self.url.expose(), migrations, self.connect).await
    }
}

/// Database failures at start.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The directory of a SQLite file could not be created.
    #[error("cannot create data directory {}: {source}", path.display())]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The URL names no engine we support.
    #[error("unsupported database URL {url}: expected sqlite:// or postgres://")]
    Unsupported {
        /// The URL, password removed.
        url: String,
    },
    /// The URL is malformed.
    #[error("invalid database URL {url}: {source}")]
    InvalidUrl {
        /// The URL, password removed.
        url: String,
        /// What sqlx said.
        source: sqlx::Error,
    },
    /// Every attempt failed.
    #[error("database {url} unreachable after {attempts} attempts: {source}")]
    Unreachable {
        /// The URL, password removed.
        url: String,
        /// How many attempts were made.
        attempts: u32,
        /// The last error.
        source: sqlx::Error,
    },
    /// Migrations failed.
    #[error("migrating database {url} failed: {source}")]
    Migrate {
        /// The URL, password removed.
        url: String,
        /// What went wrong.
        source: sqlx::migrate::MigrateError,
    },
}

/// Connects with retries, then applies migrations.
pub async fn connect(url: &str, migrations: Migrations, policy: ConnectPolicy) -> Result<Database, DbError> {
    let shown = redact_url(url);
    let mut attempt = 0u32;
    let db = loop {
        match try_connect(url, &shown, policy).await {
            Ok(db) => break db,
            Err(DbError::Unreachable { source, .. }) if attempt < policy.max_retries => {
                let delay = policy.backoff.delay(attempt);
                attempt += 1;
                tracing::warn!(
                    database = %shown,
                    attempt,
                    max_retries = policy.max_retries,
                    retry_in_ms = delay.as_millis() as u64,
                    error = %source,
                    "database not reachable yet; retrying"
                );
                tokio::time::sleep(delay).await;
            }
            Err(DbError::Unreachable { source, .. }) => {
                return Err(DbError::Unreachable { url: shown, attempts: attempt + 1, source });
            }
            Err(other) => return Err(other),
        }
    };
    let migrated = match &db {
        Database::Sqlite(pool) => migrations.sqlite.run(pool).await,
        Database::Postgres(pool) => migrations.postgres.run(pool).await,
    };
    migrated.map_err(|source| DbError::Migrate { url: shown.clone(), source })?;
    tracing::info!(database = %shown, "database connected and migrated");
    Ok(db)
}

async fn try_connect(url: &str, shown: &str, policy: ConnectPolicy) -> Result<Database, DbError> {
    let invalid = |source| DbError::InvalidUrl { url: shown.to_string(), source };
    let unreachable = |source| DbError::Unreachable { url: shown.to_string(), attempts: 1, source };
    if url.starts_with("sqlite:") {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(invalid)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(policy.busy_timeout)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(policy.max_connections.clamp(1, 8))
            .acquire_timeout(Duration::from_secs(30))
            .test_before_acquire(false)
            .before_acquire(|conn, meta| Box::pin(ping_if_idle(conn, meta)))
            .connect_with(options)
            .await
            .map_err(unreachable)?;
        Ok(Database::Sqlite(pool))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        let options = PgConnectOptions::from_str(url).map_err(invalid)?;
        let pool = PgPoolOptions::new()
            .max_connections(policy.max_connections)
            .acquire_timeout(policy.connect_timeout)
            .test_before_acquire(false)
            .before_acquire(|conn, meta| Box::pin(ping_if_idle(conn, meta)))
            .connect_with(options)
            .await
            .map_err(unreachable)?;
        Ok(Database::Postgres(pool))
    } else {
        Err(DbError::Unsupported { url: shown.to_string() })
    }
}

/// Why [`detached`] database work has no result: it panicked, or the runtime is shutting down.
#[derive(Debug, thiserror::Error)]
#[error("database work did not complete: {0}")]
pub struct Detached(String);

/// Runs database work in a task of its own and waits for it. sqlx transactions are not safe to cancel:
/// a future dropped half-way (a client that disconnects, a caller's deadline) can hand its connection
/// back to the pool still inside the transaction, or with a `BEGIN` the server ran but the driver never
/// counted, and every later use of that connection then fails or, worse, writes into a transaction
/// that is never committed. Detached, the work always ends with its commit or rollback, whoever stops
/// waiting for it. Use it for every write that opens a transaction on behalf of a request.
pub async fn detached<T, F>(work: F) -> Result<T, Detached>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    tokio::spawn(work).await.map_err(|e| Detached(e.to_string()))
}

/// Opens a fresh connection (not one of the pool's, which may be stuck), pings it, closes it.
async fn probe<C: sqlx::Connection>(options: &C::Options) -> Result<(), String> {
    use sqlx::ConnectOptions;
    let mut conn = options.connect().await.map_err(|e| e.to_string())?;
    conn.ping().await.map_err(|e| e.to_string())?;
    let _ = conn.close().await;
    Ok(())
}

/// The probe of a database across a network: a ping on a connection of the probe's own, kept
/// between probes, and a fresh connection only when that one fails. Opening a PostgreSQL
/// connection starts a server process; on a busy machine that alone can outlast the probe's time
/// and read as an outage, where a ping on an open connection answers. A partition still fails it:
/// the ping hangs, and the probe's time runs out. The connection is taken out while in use, so
/// a probe cut short by its time drops it rather than keeping it mid-query.
struct WarmProbe<C: sqlx::Connection> {
    options: C::Options,
    connection: std::sync::Mutex<Option<C>>,
}

impl<C: sqlx::Connection> WarmProbe<C> {
    async fn probe(&self) -> Result<(), String> {
        use sqlx::ConnectOptions;
        let kept = self.connection.lock().unwrap_or_else(|p| p.into_inner()).take();
        let answered = match kept {
            Some(mut conn) => conn.ping().await.is_ok().then_some(conn),
            None => None,
        };
        let conn = match answered {
            Some(conn) => conn,
            None => {
                let mut conn = self.options.connect().await.map_err(|e| e.to_string())?;
                conn.ping().await.map_err(|e| e.to_string())?;
                conn
            }
        };
        let spare = {
            let mut slot = self.connection.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                *slot = Some(conn);
                None
            } else {
                Some(conn)
            }
        };
        if let Some(conn) = spare {
            let _ = conn.close().await;
        }
        Ok(())
    }
}

/// [`detached`] work through `gate` (see [`crate::outage`]): refused at once while the database is
/// down, and given up on (not cancelled: it still commits or rolls back) as soon as the gate finds
/// the database down while it waits. Use it for every write transaction made for a request.
pub async fn detached_through<T, E, F>(gate: &Gate, work: F) -> Result<T, E>
where
    F: Future<Output = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: crate::outage::Gated + From<Detached> + Send + 'static,
{
    gate.run(async { detached(work).await.map_err(E::from)? }).await
}

/// A pooled connection idle for longer than this is pinged before it is handed out.
const TRUSTED_IDLE: Duration = Duration::from_secs(1);

/// Checks a connection before use only if it sat idle: a connection in steady use is known to work, and
/// pinging it on every checkout (sqlx's default) costs one round trip per query. A failed ping makes the
/// pool close it and hand out another.
async fn ping_if_idle<C: sqlx::Connection>(
    conn: &mut C,
    meta: sqlx::pool::PoolConnectionMetadata,
) -> Result<bool, sqlx::Error> {
    if meta.idle_for < TRUSTED_IDLE {
        return Ok(true);
    }
    Ok(conn.ping().await.is_ok())
}

/// What a database error says about the database (see [`crate::outage::Gated`]): connection
/// failures (refused, reset, timed out, PostgreSQL's connection and shutdown states) are
/// [`Failure::Unreachable`]; a SQLite file locked beyond the busy timeout, read-only, full or
/// failing its I/O is [`Failure::Refused`]; anything else is an answer about the request (`None`).
pub fn failure_of(err: &sqlx::Error) -> Option<Failure> {
    match err {
        // A stream cut mid-message can read as a protocol error: probing tells which it was.
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => Some(Failure::Unreachable),
        sqlx::Error::PoolClosed => Some(Failure::Refused),
        sqlx::Error::Database(db) => {
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                let code = db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or_default();
                // BUSY, LOCKED, IOERR, READONLY, FULL, CANTOPEN (primary codes; extended ones add high bits).
                return matches!(code & 0xff, 5 | 6 | 8 | 10 | 13 | 14).then_some(Failure::Refused);
            }
            let state = db.code()?;
            // Class 08: connection exception; 57P01–57P03: shutting down, crashed, not accepting yet;
            // 53300: too many connections.
            (state.starts_with("08") || matches!(&*state, "57P01" | "57P02" | "57P03" | "53300"))
                .then_some(Failure::Unreachable)
        }
        _ => None,
    }
}

impl Database {
    /// The gate every call to this database should go through (see [`crate::outage`]): it probes
    /// the database over a fresh connection of its own. On PostgreSQL a call still running after
    /// half of `policy.detect` is checked on (a partition makes queries hang rather than fail); on
    /// SQLite, a local file, waits are lock waits and only failures count.
    pub fn gate(&self, policy: OutagePolicy) -> Gate {
        match self {
            Database::Sqlite(pool) => {
                let options = pool.connect_options();
                Gate::new(
                    "database",
                    policy,
                    false,
                    std::sync::Arc::new(move || {
                        let options = options.clone();
                        Box::pin(async move { probe::<sqlx::SqliteConnection>(&options).await })
                    }),
                )
            }
            Database::Postgres(pool) => {
                let warm = std::sync::Arc::new(WarmProbe::<sqlx::PgConnection> {
                    options: (*pool.connect_options()).clone(),
                    connection: std::sync::Mutex::new(None),
                });
                Gate::new(
                    "database",
                    policy,
                    true,
                    std::sync::Arc::new(move || {
                        let warm = warm.clone();
                        Box::pin(async move { warm.probe().await })
                    }),
                )
            }
        }
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), String> {
        let result = match self {
            Database::Sqlite(pool) => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()),
            Database::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()),
        };
        result.map_err(|e| format!("database: {e}"))
    }

    /// Closes the pool (at shutdown).
    pub async fn close(&self) {
        match self {
            Database::Sqlite(pool) => pool.close().await,
            Database::Postgres(pool) => pool.close().await,
        }
    }

    /// The engine's name, for logs.
    pub fn engine(&self) -> &'static str {
        match self {
            Database::Sqlite(_) => "sqlite",
            Database::Postgres(_) => "postgres",
        }
    }
}

/// What differs between the two engines for a store written once, generic over the engine: a
/// service's `SqlStore<DB: Dialect>` holds its SQL, and an
/// `enum Store { Sqlite(SqlStore<Sqlite>), Postgres(SqlStore<Postgres>) }` picks the engine at start
/// (see [`with_engine!`](crate::with_engine)). SQL that differs more than this belongs in the engine's own file.
pub trait Dialect: sqlx::Database {
    /// Whether the engine lets one transaction write at a time (SQLite): then the writers of a process
    /// should take turns on a lock of their own rather than wait in the engine's sleeping busy handler.
    const ONE_WRITER: bool;

    /// A UUID as the engine stores it: hyphenated text in SQLite, `UUID` in PostgreSQL.
    type Uuid: From<uuid::Uuid>
        + Into<uuid::Uuid>
        + sqlx::Type<Self>
        + for<'q> sqlx::Encode<'q, Self>
        + for<'r> sqlx::Decode<'r, Self>
        + Send
        + Sync
        + 'static;

    /// Begins a transaction that will write. On SQLite it begins with `BEGIN IMMEDIATE`, which takes the
    /// write lock at once (waiting up to the busy timeout) instead of failing with `SQLITE_BUSY` when one
    /// of its reads has to become a write.
    fn begin_write(
        pool: &sqlx::Pool<Self>,
    ) -> impl Future<Output = Result<sqlx::Transaction<'static, Self>, sqlx::Error>> + Send;

    /// How many rows a statement changed (sqlx's query results have no common trait to ask).
    fn rows_affected(done: &Self::QueryResult) -> u64;
}

impl Dialect for sqlx::Sqlite {
    const ONE_WRITER: bool = true;
    type Uuid = uuid::fmt::Hyphenated;

    async fn begin_write(pool: &SqlitePool) -> Result<sqlx::Transaction<'static, Self>, sqlx::Error> {
        pool.begin_with("BEGIN IMMEDIATE").await
    }

    fn rows_affected(done: &sqlx::sqlite::SqliteQueryResult) -> u64 {
        done.rows_affected()
    }
}

impl Dialect for sqlx::Postgres {
    const ONE_WRITER: bool = false;
    type Uuid = uuid::Uuid;

    async fn begin_write(pool: &PgPool) -> Result<sqlx::Transaction<'static, Self>, sqlx::Error> {
        pool.begin().await
    }

    fn rows_affected(done: &sqlx::postgres::PgQueryResult) -> u64 {
        done.rows_affected()
    }
}

/// Runs the same code on whichever engine's store an
/// `enum { Sqlite(SqlStore<Sqlite>), Postgres(SqlStore<Postgres>) }` holds, inside the enum's `impl`:
/// `with_engine!(self, store => store.ping().await)`. One line per method, where a trait object
/// would need a boxed future.
#[macro_export]
macro_rules! with_engine {
    ($value:expr, $store:ident => $body:expr) => {
        match $value {
            Self::Sqlite($store) => $body,
            Self::Postgres($store) => $body,
        }
    };
}

/// A boxed future borrowing a transaction, as taken by [`transaction`].
pub type TxFuture<'t, T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 't>>;

/// Runs `body` in a transaction: it commits if `body` returns `Ok`, and rolls
/// back on `Err` (or if the future is dropped), so everything inside happens together or not at all.
pub async fn transaction<DB, T, E, F>(pool: &sqlx::Pool<DB>, body: F) -> Result<T, E>
where
    DB: sqlx::Database,
    E: From<sqlx::Error>,
    F: for<'t> FnOnce(&'t mut sqlx::Transaction<'static, DB>) -> TxFuture<'t, T, E>,
{
    let mut tx = pool.begin().await?;
    match body(&mut tx).await {
        Ok(value) => {
            tx.commit().await?;
            Ok(value)
        }
        Err(err) => {
            let _ = tx.rollback().await;
            Err(err)
        }
    }
}

/// The default SQLite URL for a service under a data directory.
pub fn sqlite_url_in(data_dir: &std::path::Path, service: &str) -> String {
    format!("sqlite://{}?mode=rwc", data_dir.join(format!("{service}.db")).display())
}

/// The directory a SQLite URL's file lives in, if it names a file.
fn sqlite_dir(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return None;
    }
    std::path::Path::new(path).parent().filter(|p| !p.as_os_str().is_empty()).map(std::path::Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sqlite_directory_is_found_in_the_url() {
        assert_eq!(sqlite_dir("sqlite:///tmp/x/auth.db?mode=rwc"), Some(std::path::PathBuf::from("/tmp/x")));
        assert_eq!(sqlite_dir("sqlite://auth.db"), None);
        assert_eq!(sqlite_dir("postgres://db/auth"), None);
    }

    #[test]
    fn a_database_url_hides_its_password_when_shown() {
        let url = SecretUrl::new("postgres://app:s3cret@db:5432/projects");
        assert_eq!(url.to_string(), "postgres://app:***@db:5432/projects");
        assert_eq!(format!("{url:?}"), "\"postgres://app:***@db:5432/projects\"");
        assert_eq!(url.expose(), "postgres://app:s3cret@db:5432/projects", "the driver still gets the password");
        let config = DatabaseConfig::for_tests("postgres://app:s3cret@db/projects");
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret") && shown.contains("app:***@db"), "{shown}");
    }

    #[test]
    fn the_default_database_is_a_sqlite_file_named_for_the_service_under_the_data_dir() {
        let config = DatabaseConfig::from_env(&Env::new([("DATA_DIR", "/var/lib/agora")]), "threads").unwrap();
        assert_eq!(config.url.expose(), "sqlite:///var/lib/agora/threads.db?mode=rwc");
        let config = DatabaseConfig::from_env(&Env::new([("DATABASE_URL", "postgres://db/x")]), "threads").unwrap();
        assert_eq!(config.url.expose(), "postgres://db/x");
        let err = DatabaseConfig::from_env(&Env::new([("DB_MAX_CONNECTIONS", "many")]), "threads").unwrap_err();
        assert!(err.to_string().contains("DB_MAX_CONNECTIONS"), "{err}");
    }

    #[tokio::test]
    async fn opening_a_sqlite_database_creates_its_directory() {
        static M: Migrator = Migrator::DEFAULT;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("fresh").join("data");
        let config = DatabaseConfig::for_tests(sqlite_url_in(&dir, "auth"));
        let db = config.open(Migrations { sqlite: &M, postgres: &M }).await.expect("opens");
        assert!(dir.join("auth.db").is_file(), "the file is made in a directory that did not exist");
        db.close().await;
    }

    #[tokio::test]
    async fn a_directory_that_cannot_be_made_is_named_in_the_error() {
        static M: Migrator = Migrator::DEFAULT;
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("a-file");
        std::fs::write(&file, b"").unwrap();
        let config = DatabaseConfig::for_tests(sqlite_url_in(&file.join("data"), "auth"));
        let err = config.open(Migrations { sqlite: &M, postgres: &M }).await.unwrap_err();
        assert!(matches!(err, DbError::DataDir { .. }), "{err}");
        assert!(err.to_string().contains("a-file"), "{err}");
    }

    #[tokio::test]
    async fn sqlite_keeps_a_uuid_as_the_hyphenated_text_it_always_stored() {
        let pool = SqlitePool::connect("sqlite::memory:").await.unwrap();
        let id = uuid::Uuid::new_v4();
        let stored: String = sqlx::query_scalar("SELECT $1")
            .bind(<sqlx::Sqlite as Dialect>::Uuid::from(id))
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(stored, id.to_string());
        let read: <sqlx::Sqlite as Dialect>::Uuid =
            sqlx::query_scalar("SELECT $1").bind(id.to_string()).fetch_one(&pool).await.unwrap();
        assert_eq!(uuid::Uuid::from(read), id);
    }

    #[tokio::test]
    async fn an_unsupported_scheme_is_refused_at_once() {
        static M: Migrator = Migrator::DEFAULT;
        let err =
            connect("mysql://root@localhost/x", Migrations { sqlite: &M, postgres: &M }, ConnectPolicy::default())
                .await
                .unwrap_err();
        assert!(matches!(err, DbError::Unsupported { .. }), "{err}");
    }
}
