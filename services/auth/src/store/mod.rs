//! Where users and failed logins live: one [`Store`] trait, implemented for
//! SQLite (the embedded default) and PostgreSQL, each with its own migrations
//! under `migrations/`.

mod postgres;
mod sqlite;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use kit::db::{Database, Migrations};
use sqlx::migrate::Migrator;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

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

/// A boxed future returned by [`Store`] methods (object safe, `Send`).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Users and failed logins.
pub trait Store: Send + Sync {
    /// Adds a user; [`StoreError::Taken`] if `username_key` exists.
    fn create_user<'a>(&'a self, user: &'a User, username_key: &'a str) -> StoreFuture<'a, ()>;

    /// The user whose name has this key.
    fn user_by_key<'a>(&'a self, username_key: &'a str) -> StoreFuture<'a, Option<User>>;

    /// The user with this id.
    fn user_by_id(&self, id: uuid::Uuid) -> StoreFuture<'_, Option<User>>;

    /// The `limit` most recent failures of `subject` after `since_ms` (Unix ms).
    fn recent_failures<'a>(&'a self, subject: &'a str, since_ms: i64, limit: u32) -> StoreFuture<'a, Vec<i64>>;

    /// Records one failure at `at_ms` for each subject, together.
    fn record_failure<'a>(&'a self, subjects: &'a [String], at_ms: i64) -> StoreFuture<'a, ()>;

    /// Forgets every failure of `subject`.
    fn clear_failures<'a>(&'a self, subject: &'a str) -> StoreFuture<'a, ()>;

    /// Deletes failures older than `before_ms`; returns how many.
    fn prune_failures(&self, before_ms: i64) -> StoreFuture<'_, u64>;

    /// Whether the database answers (for `/readyz`).
    fn ping(&self) -> StoreFuture<'_, ()>;
}

/// The store for a connected database.
pub fn for_database(db: Database) -> Arc<dyn Store> {
    match db {
        Database::Sqlite(pool) => Arc::new(SqliteStore::new(pool)),
        Database::Postgres(pool) => Arc::new(PostgresStore::new(pool)),
    }
}
