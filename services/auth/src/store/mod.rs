//! Where users and failed logins live: one [`Store`] over SQLite (the
//! embedded default) or PostgreSQL, its SQL written once in [`SqlStore`], each
//! engine with its own migrations under `migrations/`.

mod sql;

use chrono::{DateTime, Utc};
use kit::db::{Database, Migrations};
use sqlx::migrate::Migrator;
use sqlx::{Postgres, Sqlite};

pub use sql::SqlStore;

static SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("migrations/postgres");

/// The auth service's migrations, embedded in the binary.
pub const MIGRATIONS: Migrations = Migrations { sqlite: &SQLITE, postgres: &POSTGRES };

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
}

/// Maps a unique-constraint violation to [`StoreError::Taken`]; the index is
/// the arbiter, so two signups racing for one name get one user and one 409.
fn taken_or(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Taken,
        _ => StoreError::Database(e),
    }
}

/// Users and failed logins, in the engine the service was started with.
#[derive(Debug, Clone)]
pub enum Store {
    /// In a SQLite file.
    Sqlite(SqlStore<Sqlite>),
    /// In a PostgreSQL database.
    Postgres(SqlStore<Postgres>),
}

impl Store {
    /// The store for a connected, migrated database.
    pub fn new(db: Database) -> Self {
        match db {
            Database::Sqlite(pool) => Self::Sqlite(SqlStore::new(pool)),
            Database::Postgres(pool) => Self::Postgres(SqlStore::new(pool)),
        }
    }

    /// Adds a user; [`StoreError::Taken`] if `username_key` exists.
    pub async fn create_user(&self, user: &User, username_key: &str) -> Result<(), StoreError> {
        kit::with_engine!(self, store => store.create_user(user, username_key).await)
    }

    /// The user whose name has this key.
    pub async fn user_by_key(&self, username_key: &str) -> Result<Option<User>, StoreError> {
        kit::with_engine!(self, store => store.user_by_key(username_key).await)
    }

    /// The user with this id.
    pub async fn user_by_id(&self, id: uuid::Uuid) -> Result<Option<User>, StoreError> {
        kit::with_engine!(self, store => store.user_by_id(id).await)
    }

    /// The `limit` most recent failures of `subject` after `since_ms` (Unix ms).
    pub async fn recent_failures(&self, subject: &str, since_ms: i64, limit: u32) -> Result<Vec<i64>, StoreError> {
        kit::with_engine!(self, store => store.recent_failures(subject, since_ms, limit).await)
    }

    /// Records one failure at `at_ms` for each subject, together.
    pub async fn record_failure(&self, subjects: &[String], at_ms: i64) -> Result<(), StoreError> {
        kit::with_engine!(self, store => store.record_failure(subjects, at_ms).await)
    }

    /// Forgets every failure of `subject`.
    pub async fn clear_failures(&self, subject: &str) -> Result<(), StoreError> {
        kit::with_engine!(self, store => store.clear_failures(subject).await)
    }

    /// Deletes failures older than `before_ms`; returns how many.
    pub async fn prune_failures(&self, before_ms: i64) -> Result<u64, StoreError> {
        kit::with_engine!(self, store => store.prune_failures(before_ms).await)
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        kit::with_engine!(self, store => store.ping().await)
    }
}
