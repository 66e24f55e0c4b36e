//! Where projects, tags and the thread outbox live: one [`Store`] trait,
//! implemented for SQLite (the embedded default) and PostgreSQL, each with its
//! own migrations under `migrations/`.

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

use crate::domain::{Invalid, ThreadType, ValidProposal};

static SQLITE: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("migrations/postgres");

/// The projects service's migrations, embedded in the binary.
pub const MIGRATIONS: Migrations = Migrations { sqlite: &SQLITE, postgres: &POSTGRES };

/// A project as stored (its threads live in the threads service).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    /// Its id, increasing with time (the listing's order and cursor).
    pub project_id: i64,
    /// Its name.
    pub project_name: String,
    /// Its tagline.
    pub tagline: String,
    /// Its tags, in the order they were added.
    pub tags: Vec<String>,
    /// The proposer's user id.
    pub author: String,
    /// The proposer's name when proposing.
    pub author_name: String,
    /// When it was proposed.
    pub created_at: DateTime<Utc>,
    /// How many of its problems and solutions are still waiting in the outbox.
    pub pending_threads: i64,
}

/// Who is proposing, and when.
#[derive(Debug, Clone, Copy)]
pub struct Proposer<'a> {
    /// The user's id.
    pub id: &'a str,
    /// The user's name.
    pub name: &'a str,
    /// The time of the proposal.
    pub at: DateTime<Utc>,
}

/// A thread waiting to be created in the threads service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    /// The outbox row.
    pub outbox_id: i64,
    /// The project the thread belongs to.
    pub project_id: i64,
    /// PROBLEM or SOLUTION.
    pub thread_type: ThreadType,
    /// The thread's message.
    pub message: String,
    /// The proposer's user id.
    pub author: String,
    /// The proposer's name.
    pub author_name: String,
    /// Sent with the thread so that a repeated delivery creates nothing new.
    pub idempotency_key: String,
    /// Deliveries tried so far.
    pub attempts: i32,
}

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No project has this id.
    #[error("no project {0}")]
    NotFound(i64),
    /// Someone else's project.
    #[error("only the author of project {0} may change it")]
    NotAuthor(i64),
    /// The change breaks a rule (checked inside the transaction).
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// A stored value cannot be read back.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Detached database work did not finish (it panicked, or the service is stopping).
    #[error(transparent)]
    Interrupted(#[from] kit::db::Detached),
}

/// A boxed future returned by [`Store`] methods (object safe, `Send`).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Projects, tags and the thread outbox.
pub trait Store: Send + Sync {
    /// Stores a project, its tags and one outbox row per problem and solution,
    /// in one transaction: all of it or nothing. Returns the project and its outbox rows.
    fn propose<'a>(
        &'a self,
        proposal: &'a ValidProposal,
        by: Proposer<'a>,
    ) -> StoreFuture<'a, (Project, Vec<OutboxItem>)>;

    /// Projects newest first, those older than `before` (a project id) if given.
    fn list(&self, limit: u32, before: Option<i64>) -> StoreFuture<'_, Vec<Project>>;

    /// One project.
    fn get(&self, project_id: i64) -> StoreFuture<'_, Option<Project>>;

    /// Removes then adds tags atomically, checking the limits on the result; returns the new list.
    /// Only the project's author (`by`) may change them.
    fn update_tags<'a>(
        &'a self,
        project_id: i64,
        by: &'a str,
        add: &'a [String],
        remove: &'a [String],
    ) -> StoreFuture<'a, Vec<String>>;

    /// Outbox rows whose next attempt is due, oldest first.
    fn due_outbox(&self, now: DateTime<Utc>, limit: u32) -> StoreFuture<'_, Vec<OutboxItem>>;

    /// Deletes delivered outbox rows.
    fn outbox_delivered<'a>(&'a self, outbox_ids: &'a [i64]) -> StoreFuture<'a, ()>;

    /// Records a failed delivery and when to try again.
    fn outbox_failed<'a>(
        &'a self,
        outbox_ids: &'a [i64],
        error: &'a str,
        next_attempt_at: DateTime<Utc>,
    ) -> StoreFuture<'a, ()>;

    /// Whether the database answers (`/readyz`).
    fn ping(&self) -> StoreFuture<'_, ()>;
}

/// The store for a connected database.
pub fn for_database(db: Database) -> Arc<dyn Store> {
    match db {
        Database::Sqlite(pool) => Arc::new(SqliteStore::new(pool)),
        Database::Postgres(pool) => Arc::new(PostgresStore::new(pool)),
    }
}

/// The outbox key of a proposal's `index`-th problem or solution.
fn outbox_key(project_id: i64, kind: ThreadType, index: usize) -> String {
    format!("project-{project_id}-{}-{index}", kind.as_str().to_ascii_lowercase())
}

/// The outbox rows of a stored proposal, in the order the threads should appear.
fn outbox_rows(project_id: i64, proposal: &ValidProposal) -> Vec<(ThreadType, &str, String)> {
    let problems = proposal.problems.iter().enumerate().map(|(i, m)| (ThreadType::Problem, i, m));
    let solutions = proposal.solutions.iter().enumerate().map(|(i, m)| (ThreadType::Solution, i, m));
    problems.chain(solutions).map(|(kind, i, m)| (kind, m.as_str(), outbox_key(project_id, kind, i))).collect()
}

/// Columns every project query selects, with the tags aggregated by the engine's own function.
const PROJECT_COLUMNS: &str = "p.project_id, p.project_name, p.tagline, p.author, p.author_name, p.created_at, \
     (SELECT COUNT(*) FROM thread_outbox o WHERE o.project_id = p.project_id) AS pending_threads";

/// Outbox columns, in [`OutboxItem`]'s order.
const OUTBOX_COLUMNS: &str =
    "outbox_id, project_id, thread_type, message, author, author_name, idempotency_key, attempts";

fn thread_type(raw: &str) -> Result<ThreadType, StoreError> {
    ThreadType::parse(raw).ok_or_else(|| StoreError::Corrupt(format!("unknown thread type {raw:?} in the outbox")))
}
