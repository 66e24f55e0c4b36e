//! Where threads and votes live: one [`Store`] over SQLite (the embedded
//! default) or PostgreSQL, its SQL written once in [`SqlStore`], each engine
//! with its own migrations under `migrations/`.
//!
//! Two rules are the database's to keep, whatever the concurrency:
//! * a transaction of votes locks their thread's row with its first statement
//!   (a write), so the votes of one thread are applied one after the other and
//!   the counts stay exactly equal to the votes;
//! * a creation with an idempotency key relies on the key's unique index, so
//!   two racing creations make one thread.

mod sql;

use kit::db::{Database, Migrations};
use kit::outage::Gate;
use sqlx::{Postgres, Sqlite};

pub use sql::SqlStore;

use crate::domain::{Ballot, Change, Direction, NewThread, Tally, Thread, ThreadType};
use crate::error::ThreadsError;

/// The threads service's migrations, embedded in the binary.
pub const MIGRATIONS: Migrations = kit::migrations!();

/// Threads and votes, in the engine the service was started with. Every call goes through the
/// database's [`Gate`]: while the database is down it fails at once with `UNAVAILABLE`.
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

    /// The first `limit` threads of a project by id (oldest first), with
    /// `voter`'s vote on each when given. An unknown project has none.
    pub async fn project_threads(
        &self,
        project_id: i64,
        limit: u32,
        voter: Option<&str>,
    ) -> Result<Vec<Thread>, ThreadsError> {
        self.gate()
            .run(async { kit::with_engine!(self, store => store.project_threads(project_id, limit, voter).await) })
            .await
    }

    /// Applies every change in one transaction (all or nothing) and returns
    /// the threads as stored, in the same order. The transaction runs detached
    /// (`kit::db::detached`): neither a caller that gives up nor the gate cuts it short.
    pub async fn apply(&self, changes: Vec<Change>) -> Result<Vec<Thread>, ThreadsError> {
        let store = self.clone();
        kit::db::detached_through(self.gate(), async move {
            kit::with_engine!(&store, store => store.apply(&changes).await)
        })
        .await
    }

    /// Applies votes on one thread in one transaction, in order (a voter may
    /// appear twice), and returns the counts right after each of them. Detached, like [`Store::apply`].
    pub async fn vote(&self, thread_id: i64, ballots: Vec<Ballot>) -> Result<Vec<Tally>, ThreadsError> {
        let store = self.clone();
        kit::db::detached_through(self.gate(), async move {
            kit::with_engine!(&store, store => store.vote(thread_id, &ballots).await)
        })
        .await
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), ThreadsError> {
        self.gate().run(async { kit::with_engine!(self, store => store.ping().await) }).await
    }
}

/// The columns every query returns, in [`thread_from`]'s order.
const THREAD_COLUMNS: &str = "thread_id, project_id, parent_thread_id, thread_type, message, up_vote, down_vote, \
     author, author_name, created_at";

/// Decodes a row of [`THREAD_COLUMNS`] (`my_vote` is left to the caller).
fn thread_from<'r, R>(row: &'r R) -> Result<Thread, ThreadsError>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    chrono::DateTime<chrono::Utc>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let stored_type: String = row.try_get(3)?;
    let thread_type = ThreadType::from_stored(&stored_type).ok_or_else(|| {
        ThreadsError::Database(sqlx::Error::Decode(format!("threads.thread_type {stored_type:?} is unknown").into()))
    })?;
    Ok(Thread {
        thread_id: row.try_get(0)?,
        project_id: row.try_get(1)?,
        parent_thread_id: row.try_get(2)?,
        thread_type,
        message: row.try_get(4)?,
        up_vote: row.try_get(5)?,
        down_vote: row.try_get(6)?,
        author: row.try_get(7)?,
        author_name: row.try_get(8)?,
        created_at: row.try_get(9)?,
        my_vote: Direction::None,
    })
}

/// The thread an idempotency key already made, if it is compatible with the
/// request: a key reused for another project or author is a caller's bug, not a retry.
fn replayed(index: usize, existing: Thread, new: &NewThread) -> Result<Thread, ThreadsError> {
    if existing.project_id != new.project_id || existing.author != new.author {
        return Err(ThreadsError::invalid(
            format!("threads[{index}].idempotency_key"),
            "already used for a thread of another project or author",
        ));
    }
    Ok(existing)
}

/// Checks a new thread's parent, given the parent's project (`None`: no such thread).
fn check_parent(index: usize, parent: i64, parent_project: Option<i64>, new: &NewThread) -> Result<(), ThreadsError> {
    match parent_project {
        None => {
            Err(ThreadsError::NotFound(format!("threads[{index}].parent_thread_id: thread {parent} does not exist")))
        }
        Some(project) if project != new.project_id => Err(ThreadsError::invalid(
            format!("threads[{index}].parent_thread_id"),
            format_args!("thread {parent} belongs to another project"),
        )),
        Some(_) => Ok(()),
    }
}

/// Why an edit matched no row, given the thread's stored author (`None`: no such thread).
fn edit_refused(index: usize, thread_id: i64, stored_author: Option<String>) -> ThreadsError {
    match stored_author {
        None => ThreadsError::NotFound(format!("threads[{index}].thread_id: thread {thread_id} does not exist")),
        Some(_) => ThreadsError::PermissionDenied(format!(
            "threads[{index}].author: only the author of thread {thread_id} may change its message"
        )),
    }
}

/// A vote on a thread that does not exist.
fn no_such_thread(thread_id: i64) -> ThreadsError {
    ThreadsError::NotFound(format!("thread_id: thread {thread_id} does not exist"))
}

/// A key that conflicted and then could not be found (only if rows were deleted under us).
fn vanished(key: &str) -> ThreadsError {
    ThreadsError::Database(sqlx::Error::Protocol(format!("idempotency key {key:?} conflicted but its thread is gone")))
}
