//! [`Store`] on SQLite: timestamps as RFC 3339 text.
//!
//! SQLite has one writer at a time. Write transactions start with
//! `BEGIN IMMEDIATE`, which takes the write lock at once (waiting up to the
//! busy timeout) instead of failing with `SQLITE_BUSY` when a read has to
//! become a write; and writers of this process queue on a mutex first, so they
//! wait their turn here rather than in SQLite's sleeping busy handler.

use chrono::Utc;
use sqlx::{Row, Sqlite, SqlitePool, Transaction};
use tokio::sync::{Mutex, MutexGuard};

use super::{
    check_parent, edit_refused, no_such_thread, replayed, thread_from, vanished, Store, StoreFuture, THREAD_COLUMNS,
};
use crate::domain::{Ballot, Change, Direction, Edit, NewThread, Tally, Thread};
use crate::error::ThreadsError;

/// Threads and votes in a SQLite file.
#[derive(Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    writer: Mutex<()>,
}

impl SqliteStore {
    /// A store over a migrated pool.
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool, writer: Mutex::new(()) }
    }

    /// Starts a write transaction, one writer of this process at a time; the
    /// returned guard must live until the transaction ends.
    async fn begin_write(&self) -> Result<(MutexGuard<'_, ()>, Transaction<'static, Sqlite>), ThreadsError> {
        let turn = self.writer.lock().await;
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok((turn, tx))
    }
}

async fn by_key(tx: &mut Transaction<'static, Sqlite>, key: &str) -> Result<Option<Thread>, ThreadsError> {
    let row = sqlx::query(&format!("SELECT {THREAD_COLUMNS} FROM threads WHERE idempotency_key = $1"))
        .bind(key)
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(thread_from).transpose()
}

async fn create(tx: &mut Transaction<'static, Sqlite>, index: usize, new: &NewThread) -> Result<Thread, ThreadsError> {
    if let Some(key) = &new.idempotency_key {
        if let Some(existing) = by_key(tx, key).await? {
            return replayed(index, existing, new);
        }
    }
    if let Some(parent) = new.parent_thread_id {
        let project: Option<i64> = sqlx::query_scalar("SELECT project_id FROM threads WHERE thread_id = $1")
            .bind(parent)
            .fetch_optional(&mut **tx)
            .await?;
        check_parent(index, parent, project, new)?;
    }
    let now = Utc::now();
    let row = sqlx::query(&format!(
        "INSERT INTO threads (project_id, parent_thread_id, thread_type, message, author, author_name, \
         idempotency_key, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
         ON CONFLICT (idempotency_key) DO NOTHING RETURNING {THREAD_COLUMNS}"
    ))
    .bind(new.project_id)
    .bind(new.parent_thread_id)
    .bind(new.thread_type.as_str())
    .bind(&new.message)
    .bind(&new.author)
    .bind(&new.author_name)
    .bind(new.idempotency_key.as_deref())
    .bind(now)
    .fetch_optional(&mut **tx)
    .await?;
    match (row, &new.idempotency_key) {
        (Some(row), _) => thread_from(&row),
        // Only a key can conflict: another writer made this thread since the lookup above.
        (None, Some(key)) => replayed(index, by_key(tx, key).await?.ok_or_else(|| vanished(key))?, new),
        (None, None) => Err(vanished("")),
    }
}

async fn edit(tx: &mut Transaction<'static, Sqlite>, index: usize, edit: &Edit) -> Result<Thread, ThreadsError> {
    let row = sqlx::query(&format!(
        "UPDATE threads SET message = $1, updated_at = $2 WHERE thread_id = $3 AND author = $4 \
         RETURNING {THREAD_COLUMNS}"
    ))
    .bind(&edit.message)
    .bind(Utc::now())
    .bind(edit.thread_id)
    .bind(&edit.author)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(row) = row {
        return thread_from(&row);
    }
    let author: Option<String> = sqlx::query_scalar("SELECT author FROM threads WHERE thread_id = $1")
        .bind(edit.thread_id)
        .fetch_optional(&mut **tx)
        .await?;
    Err(edit_refused(index, edit.thread_id, author))
}

/// Commits if `result` is `Ok`, else rolls back: all of the transaction or none of it.
async fn finish<T>(tx: Transaction<'static, Sqlite>, result: Result<T, ThreadsError>) -> Result<T, ThreadsError> {
    match result {
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

async fn apply_all(tx: &mut Transaction<'static, Sqlite>, changes: &[Change]) -> Result<Vec<Thread>, ThreadsError> {
    let mut stored = Vec::with_capacity(changes.len());
    for (index, change) in changes.iter().enumerate() {
        stored.push(match change {
            Change::Create(new) => create(tx, index, new).await?,
            Change::Edit(e) => edit(tx, index, e).await?,
        });
    }
    Ok(stored)
}

async fn vote_in(
    tx: &mut Transaction<'static, Sqlite>,
    thread_id: i64,
    ballots: &[Ballot],
) -> Result<Vec<Tally>, ThreadsError> {
    // The first statement writes (a no-op) so that it holds the thread until the transaction ends.
    let locked: Option<(i64, i64)> =
        sqlx::query_as("UPDATE threads SET up_vote = up_vote WHERE thread_id = $1 RETURNING up_vote, down_vote")
            .bind(thread_id)
            .fetch_optional(&mut **tx)
            .await?;
    let (mut up_vote, mut down_vote) = locked.ok_or_else(|| no_such_thread(thread_id))?;
    let (before_up, before_down) = (up_vote, down_vote);
    let mut tallies = Vec::with_capacity(ballots.len());
    for ballot in ballots {
        let previous: Option<i64> =
            sqlx::query_scalar("SELECT direction FROM votes WHERE thread_id = $1 AND voter = $2")
                .bind(thread_id)
                .bind(&ballot.voter)
                .fetch_optional(&mut **tx)
                .await?;
        let previous = Direction::from_stored(previous.and_then(|d| i16::try_from(d).ok()).unwrap_or(0));
        if previous != ballot.direction {
            if ballot.direction == Direction::None {
                sqlx::query("DELETE FROM votes WHERE thread_id = $1 AND voter = $2")
                    .bind(thread_id)
                    .bind(&ballot.voter)
                    .execute(&mut **tx)
                    .await?;
            } else {
                sqlx::query(
                    "INSERT INTO votes (thread_id, voter, direction) VALUES ($1, $2, $3) \
                     ON CONFLICT (thread_id, voter) DO UPDATE SET direction = excluded.direction",
                )
                .bind(thread_id)
                .bind(&ballot.voter)
                .bind(ballot.direction.stored())
                .execute(&mut **tx)
                .await?;
            }
            let (up, down) = previous.delta_to(ballot.direction);
            up_vote += up;
            down_vote += down;
        }
        tallies.push(Tally { up_vote, down_vote });
    }
    if (up_vote, down_vote) != (before_up, before_down) {
        sqlx::query("UPDATE threads SET up_vote = up_vote + $2, down_vote = down_vote + $3 WHERE thread_id = $1")
            .bind(thread_id)
            .bind(up_vote - before_up)
            .bind(down_vote - before_down)
            .execute(&mut **tx)
            .await?;
    }
    Ok(tallies)
}

impl Store for SqliteStore {
    fn project_threads<'a>(
        &'a self,
        project_id: i64,
        limit: u32,
        voter: Option<&'a str>,
    ) -> StoreFuture<'a, Vec<Thread>> {
        Box::pin(async move {
            // One query: with no voter, the join matches nothing and every my_vote is 0.
            let rows = sqlx::query(
                "SELECT t.thread_id, t.project_id, t.parent_thread_id, t.thread_type, t.message, t.up_vote, \
                 t.down_vote, t.author, t.author_name, t.created_at, COALESCE(v.direction, 0) AS my_vote \
                 FROM threads t LEFT JOIN votes v ON v.thread_id = t.thread_id AND v.voter = $2 \
                 WHERE t.project_id = $1 ORDER BY t.thread_id LIMIT $3",
            )
            .bind(project_id)
            .bind(voter)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|row| {
                    let mut thread = thread_from(row)?;
                    let my_vote: i64 = row.try_get("my_vote")?;
                    thread.my_vote = Direction::from_stored(i16::try_from(my_vote).unwrap_or_default());
                    Ok(thread)
                })
                .collect()
        })
    }

    fn apply<'a>(&'a self, changes: &'a [Change]) -> StoreFuture<'a, Vec<Thread>> {
        Box::pin(async move {
            let (_turn, mut tx) = self.begin_write().await?;
            let result = apply_all(&mut tx, changes).await;
            finish(tx, result).await
        })
    }

    fn vote<'a>(&'a self, thread_id: i64, ballots: &'a [Ballot]) -> StoreFuture<'a, Vec<Tally>> {
        Box::pin(async move {
            let (_turn, mut tx) = self.begin_write().await?;
            let result = vote_in(&mut tx, thread_id, ballots).await;
            finish(tx, result).await
        })
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        })
    }
}
