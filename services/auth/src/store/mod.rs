//! Where users and failed logins live: one [`Store`] over SQLite (the
//! embedded default) or PostgreSQL, its SQL written once in [`SqlStore`], each
//! engine with its own migrations under `migrations/`.

mod sql;

use chrono::{DateTime, Utc};
use kit::db::{Database, Migrations};
use kit::outage::{Failure, Gate, Gated, Unavailable};
use sqlx::{Postgres, Sqlite};

pub use sql::SqlStore;

/// The auth service's migrations, embedded in the binary.
pub const MIGRATIONS: Migrations = kit::migrations!();

/// A user as stored (the password hash included; never serialized).
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// Stable id (`sub` of the user's tokens).
    pub id: uuid::Uuid,
    /// The name as the user wrote it.
    pub username: String,
    /// The argon2id PHC string.
    pub password_hash: String,
    /// When the user signed up.
    pub created_at: DateTime<Utc>,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("password_hash", &"[redacted]")
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another user has this name (case-insensitively).
    #[error("the username is taken")]
    Taken,
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Detached database work did not finish (it panicked, or the service is stopping).
    #[error(transparent)]
    Interrupted(#[from] kit::db::Detached),
    /// The database is down, or cannot take this write now (a SQLite file locked or read-only).
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

impl Gated for StoreError {
    fn failure(&self) -> Option<Failure> {
        match self {
            StoreError::Database(e) => kit::db::failure_of(e),
            _ => None,
        }
    }
}

/// Maps a unique-constraint violation to [`StoreError::Taken`]; the index is
/// the arbiter, so two signups racing for one name get one user and one 409.
fn taken_or(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Taken,
        _ => StoreError::Database(e),
    }
}

/// Users and failed logins, in the engine the service was started with. Every call goes through
/// the database's [`Gate`]: while the database is down it fails at once with [`StoreError::Unavailable`].
#[derive(Debug, Clone)]
pub enum Store {
    /// In a SQLite file.
    Sqlite(SqlStore<Sqlite>),
    /// In a PostgreSQL database.
    Postgres(SqlStore<Postgres>),
}

impl Store {
    /// The store for a connected, migrated database, its calls going through `gate` (see [`Database::gate`]).
    pub fn new(db: Database, gate: Gate) -> Self {
        match db {
            Database::Sqlite(pool) => Self::Sqlite(SqlStore::new(pool, gate)),
            Database::Postgres(pool) => Self::Postgres(SqlStore::new(pool, gate)),
        }
    }

    /// The database's gate.
    pub fn gate(&self) -> &Gate {
        kit::with_engine!(self, store => &store.gate)
    }

    /// Adds a user; [`StoreError::Taken`] if `username_key` exists. Runs detached (`kit::db::detached`):
    /// neither a client that hangs up nor the gate giving up on a stuck database cuts it short.
    pub async fn create_user(&self, user: User, username_key: String) -> Result<(), StoreError> {
        let store = self.clone();
        kit::db::detached_through(self.gate(), async move {
            kit::with_engine!(&store, store => store.create_user(&user, &username_key).await)
        })
        .await
    }

    /// The user whose name has this key.
    pub async fn user_by_key(&self, username_key: &str) -> Result<Option<User>, StoreError> {
        self.gate().run(async { kit::with_engine!(self, store => store.user_by_key(username_key).await) }).await
    }

    /// The user with this id.
    pub async fn user_by_id(&self, id: uuid::Uuid) -> Result<Option<User>, StoreError> {
        self.gate().run(async { kit::with_engine!(self, store => store.user_by_id(id).await) }).await
    }

    /// The `limit` most recent failures of `subject` after `since_ms` (Unix ms).
    pub async fn recent_failures(&self, subject: &str, since_ms: i64, limit: u32) -> Result<Vec<i64>, StoreError> {
        self.gate()
            .run(async { kit::with_engine!(self, store => store.recent_failures(subject, since_ms, limit).await) })
            .await
    }

    /// Records one failure at `at_ms` for each subject, together, in a transaction that runs detached.
    pub async fn record_failure(&self, subjects: Vec<String>, at_ms: i64) -> Result<(), StoreError> {
        let store = self.clone();
        kit::db::detached_through(self.gate(), async move {
            kit::with_engine!(&store, store => store.record_failure(&subjects, at_ms).await)
        })
        .await
    }

    /// Forgets every failure of `subject`.
    pub async fn clear_failures(&self, subject: &str) -> Result<(), StoreError> {
        self.gate().run(async { kit::with_engine!(self, store => store.clear_failures(subject).await) }).await
    }

    /// Deletes failures older than `before_ms`; returns how many.
    pub async fn prune_failures(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.gate().run(async { kit::with_engine!(self, store => store.prune_failures(before_ms).await) }).await
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        kit::with_engine!(self, store => store.ping().await)
    }
}
