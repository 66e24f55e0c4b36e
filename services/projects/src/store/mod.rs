//! Where projects, tags and the thread outbox live: one [`Store`] over SQLite
//! (the embedded default) or PostgreSQL, its SQL written once in [`SqlStore`]
//! except for what the engines really do differently ([`EngineSql`]: arrays in
//! PostgreSQL, loops in SQLite), each engine with its own migrations under
//! `migrations/`.

mod postgres;
mod sql;
mod sqlite;

use std::future::Future;

use chrono::{DateTime, Utc};
use kit::db::{Database, Dialect, Migrations};
use kit::outage::{Failure, Gate, Gated, Unavailable};
use sqlx::{Pool, Postgres, Sqlite, Transaction};

pub use sql::SqlStore;

use crate::domain::{Invalid, ThreadType, ValidProposal};

/// The projects service's migrations, embedded in the binary.
pub const MIGRATIONS: Migrations = kit::migrations!();

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
    /// The event announcing the change could not be staged in the outbox.
    #[error(transparent)]
    Event(#[from] kit::events::EventsError),
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
            // Staging the event failed with its transaction's connection.
            StoreError::Event(kit::events::EventsError::Unavailable { .. }) => Some(Failure::Unreachable),
            _ => None,
        }
    }
}

/// Projects, tags and the thread outbox, in the engine the service was started with. Every call
/// goes through the database's [`Gate`]: while the database is down it fails at once with
/// [`StoreError::Unavailable`].
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

    /// Stores a project, its tags and one outbox row per problem and solution,
    /// in one transaction: all of it or nothing. Returns the project and its outbox rows.
    /// The transaction runs detached (`kit::db::detached`): neither a client that disconnects nor the
    /// gate giving up on a database that stopped answering cuts it short.
    pub async fn propose(
        &self,
        proposal: ValidProposal,
        author: (String, String),
        at: DateTime<Utc>,
    ) -> Result<(Project, Vec<OutboxItem>), StoreError> {
        let store = self.clone();
        kit::db::detached_through(self.gate(), async move {
            let by = Proposer { id: &author.0, name: &author.1, at };
            kit::with_engine!(&store, store => store.propose(&proposal, by).await)
        })
        .await
    }

    /// Projects newest first, those older than `before` (a project id) if given.
    pub async fn list(&self, limit: u32, before: Option<i64>) -> Result<Vec<Project>, StoreError> {
        self.gate().run(async { kit::with_engine!(self, store => store.list(limit, before).await) }).await
    }

    /// One project.
    pub async fn get(&self, project_id: i64) -> Result<Option<Project>, StoreError> {
        self.gate().run(async { kit::with_engine!(self, store => store.get(project_id).await) }).await
    }

    /// Removes then adds tags atomically, checking the limits on the result; returns the new list.
    /// Only the project's author (`by`) may change them. Detached, like [`Store::propose`].
    pub async fn update_tags(
        &self,
        project_id: i64,
        by: String,
        add: Vec<String>,
        remove: Vec<String>,
    ) -> Result<Vec<String>, StoreError> {
        let store = self.clone();
        kit::db::detached_through(self.gate(), async move {
            kit::with_engine!(&store, store => store.update_tags(project_id, &by, &add, &remove).await)
        })
        .await
    }

    /// Outbox rows whose next attempt is due, oldest first.
    pub async fn due_outbox(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<OutboxItem>, StoreError> {
        self.gate().run(async { kit::with_engine!(self, store => store.due_outbox(now, limit).await) }).await
    }

    /// Deletes delivered outbox rows.
    pub async fn outbox_delivered(&self, outbox_ids: &[i64]) -> Result<(), StoreError> {
        self.gate().run(async { kit::with_engine!(self, store => store.outbox_delivered(outbox_ids).await) }).await
    }

    /// Records a failed delivery and when to try again.
    pub async fn outbox_failed(
        &self,
        outbox_ids: &[i64],
        error: &str,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.gate()
            .run(async {
                kit::with_engine!(self, store => store.outbox_failed(outbox_ids, error, next_attempt_at).await)
            })
            .await
    }

    /// Whether the database answers (`/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        kit::with_engine!(self, store => store.ping().await)
    }
}

/// The statements whose SQL differs between the engines: PostgreSQL takes a
/// whole list in one statement (arrays), SQLite has no arrays and loops.
pub trait EngineSql: Dialect {
    /// A subquery of a project's tags (of the project aliased `p`), in the order they were added.
    const TAGS: &'static str;

    /// Reads the column [`EngineSql::TAGS`] was selected as.
    fn tags_from(row: &Self::Row, column: &str) -> Result<Vec<String>, StoreError>;

    /// Adds `tags` to a project, in order.
    fn insert_tags(
        tx: &mut Transaction<'static, Self>,
        project_id: i64,
        tags: &[&str],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes `tags` from a project.
    fn delete_tags(
        tx: &mut Transaction<'static, Self>,
        project_id: i64,
        tags: &[&str],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes outbox rows, together.
    fn delete_outbox(pool: &Pool<Self>, outbox_ids: &[i64]) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Counts a failed attempt of outbox rows, together, and sets their next one (Unix ms).
    fn outbox_retry_at(
        pool: &Pool<Self>,
        outbox_ids: &[i64],
        error: &str,
        next_attempt_ms: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
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

fn thread_type(raw: &str) -> Result<ThreadType, StoreError> {
    ThreadType::parse(raw).ok_or_else(|| StoreError::Corrupt(format!("unknown thread type {raw:?} in the outbox")))
}
