//! [`SqlStore`]: the threads' SQL, once for both engines. SQLite keeps
//! timestamps as RFC 3339 text, PostgreSQL as `TIMESTAMPTZ`; sqlx reads both.
//!
//! Write transactions begin the engine's way ([`Dialect::begin_write`]). On
//! SQLite, which has one writer at a time, the writers of this process also
//! queue on a mutex first, so they wait their turn here rather than in
//! SQLite's sleeping busy handler. PostgreSQL runs them side by side at READ
//! COMMITTED: a vote's first statement takes its thread's row lock, and every
//! later statement of the vote sees what the votes before it committed, so the
//! counts stay exact across replicas too.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use kit::db::Dialect;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Pool, Row, Transaction, Type};
use tokio::sync::{Mutex, MutexGuard};

use super::{check_parent, edit_refused, no_such_thread, replayed, thread_from, vanished, THREAD_COLUMNS};
use crate::domain::{Ballot, Change, Direction, Edit, NewThread, Tally, Thread};
use crate::error::ThreadsError;

/// Threads and votes in a database of engine `DB`.
#[derive(Debug)]
pub struct SqlStore<DB: Dialect> {
    pool: Pool<DB>,
    /// The turn of this process's writers, taken only when the engine has one writer at a time.
    writer: Arc<Mutex<()>>,
    /// The database's gate, which [`Store`](super::Store) runs every call through.
    pub(super) gate: kit::outage::Gate,
}

impl<DB: Dialect> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        Self { pool: self.pool.clone(), writer: self.writer.clone(), gate: self.gate.clone() }
    }
}

impl<DB: Dialect> SqlStore<DB> {
    /// A store over a migrated pool.
    pub fn new(pool: Pool<DB>, gate: kit::outage::Gate) -> Self {
        Self { pool, writer: Arc::default(), gate }
    }
}

// What sqlx needs of an engine to run this SQL: executing on a connection, and
// each Rust type bound or read. Both engines have them all.
impl<DB> SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Type<DB> + Encode<'q, DB> + Decode<'q, DB>,
    for<'q> Option<i64>: Encode<'q, DB>,
    for<'q> i16: Type<DB> + Encode<'q, DB> + Decode<'q, DB>,
    for<'q> String: Type<DB> + Decode<'q, DB>,
    for<'q> &'q str: Type<DB> + Encode<'q, DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
    for<'q> DateTime<Utc>: Type<DB> + Encode<'q, DB> + Decode<'q, DB>,
    usize: ColumnIndex<DB::Row>,
{
    /// Starts a write transaction, one writer of this process at a time on an
    /// engine with one writer; the returned turn must live until the transaction ends.
    async fn begin_write(&self) -> Result<(Option<MutexGuard<'_, ()>>, Transaction<'static, DB>), ThreadsError> {
        let turn = if DB::ONE_WRITER { Some(self.writer.lock().await) } else { None };
        let tx = DB::begin_write(&self.pool).await?;
        Ok((turn, tx))
    }

    /// See [`Store::project_threads`](super::Store::project_threads).
    pub async fn project_threads(
        &self,
        project_id: i64,
        limit: u32,
        voter: Option<&str>,
    ) -> Result<Vec<Thread>, ThreadsError> {
        // One query: with no voter, the join matches nothing and every my_vote is 0 (a SMALLINT, as
        // `direction` is: a bare 0 would make PostgreSQL's COALESCE an INTEGER).
        let rows = sqlx::query(
            "SELECT t.thread_id, t.project_id, t.parent_thread_id, t.thread_type, t.message, t.up_vote, \
             t.down_vote, t.author, t.author_name, t.created_at, COALESCE(v.direction, CAST(0 AS SMALLINT)) \
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
                thread.my_vote = Direction::from_stored(row.try_get(10)?);
                Ok(thread)
            })
            .collect()
    }

    /// See [`Store::apply`](super::Store::apply).
    pub async fn apply(&self, changes: &[Change]) -> Result<Vec<Thread>, ThreadsError> {
        let (_turn, mut tx) = self.begin_write().await?;
        let result = Self::apply_all(&mut tx, changes).await;
        finish(tx, result).await
    }

    /// See [`Store::vote`](super::Store::vote).
    pub async fn vote(&self, thread_id: i64, ballots: &[Ballot]) -> Result<Vec<Tally>, ThreadsError> {
        let (_turn, mut tx) = self.begin_write().await?;
        let result = Self::vote_in(&mut tx, thread_id, ballots).await;
        finish(tx, result).await
    }

    /// See [`Store::ping`](super::Store::ping).
    pub async fn ping(&self) -> Result<(), ThreadsError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn by_key(tx: &mut Transaction<'static, DB>, key: &str) -> Result<Option<Thread>, ThreadsError> {
        let row = sqlx::query(&format!("SELECT {THREAD_COLUMNS} FROM threads WHERE idempotency_key = $1"))
            .bind(key)
            .fetch_optional(&mut **tx)
            .await?;
        row.as_ref().map(thread_from).transpose()
    }

    async fn create(tx: &mut Transaction<'static, DB>, index: usize, new: &NewThread) -> Result<Thread, ThreadsError> {
        if let Some(key) = &new.idempotency_key {
            if let Some(existing) = Self::by_key(tx, key).await? {
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
        .bind(new.message.as_str())
        .bind(new.author.as_str())
        .bind(new.author_name.as_str())
        .bind(new.idempotency_key.as_deref())
        .bind(now)
        .fetch_optional(&mut **tx)
        .await?;
        match (row, &new.idempotency_key) {
            (Some(row), _) => thread_from(&row),
            // Only a key can conflict: another writer made this thread since the lookup above.
            (None, Some(key)) => replayed(index, Self::by_key(tx, key).await?.ok_or_else(|| vanished(key))?, new),
            (None, None) => Err(vanished("")),
        }
    }

    async fn edit(tx: &mut Transaction<'static, DB>, index: usize, edit: &Edit) -> Result<Thread, ThreadsError> {
        let row = sqlx::query(&format!(
            "UPDATE threads SET message = $1, updated_at = $2 WHERE thread_id = $3 AND author = $4 \
             RETURNING {THREAD_COLUMNS}"
        ))
        .bind(edit.message.as_str())
        .bind(Utc::now())
        .bind(edit.thread_id)
        .bind(edit.author.as_str())
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

    async fn apply_all(tx: &mut Transaction<'static, DB>, changes: &[Change]) -> Result<Vec<Thread>, ThreadsError> {
        let mut stored = Vec::with_capacity(changes.len());
        for (index, change) in changes.iter().enumerate() {
            stored.push(match change {
                Change::Create(new) => Self::create(tx, index, new).await?,
                Change::Edit(e) => Self::edit(tx, index, e).await?,
            });
        }
        Ok(stored)
    }

    async fn vote_in(
        tx: &mut Transaction<'static, DB>,
        thread_id: i64,
        ballots: &[Ballot],
    ) -> Result<Vec<Tally>, ThreadsError> {
        // The first statement writes (a no-op) so that it holds the thread until the transaction ends.
        let locked =
            sqlx::query("UPDATE threads SET up_vote = up_vote WHERE thread_id = $1 RETURNING up_vote, down_vote")
                .bind(thread_id)
                .fetch_optional(&mut **tx)
                .await?;
        let locked = locked.ok_or_else(|| no_such_thread(thread_id))?;
        let (mut up_vote, mut down_vote): (i64, i64) = (locked.try_get(0)?, locked.try_get(1)?);
        let (before_up, before_down) = (up_vote, down_vote);
        let mut tallies = Vec::with_capacity(ballots.len());
        for ballot in ballots {
            let previous: Option<i16> =
                sqlx::query_scalar("SELECT direction FROM votes WHERE thread_id = $1 AND voter = $2")
                    .bind(thread_id)
                    .bind(ballot.voter.as_str())
                    .fetch_optional(&mut **tx)
                    .await?;
            let previous = Direction::from_stored(previous.unwrap_or(0));
            if previous != ballot.direction {
                if ballot.direction == Direction::None {
                    sqlx::query("DELETE FROM votes WHERE thread_id = $1 AND voter = $2")
                        .bind(thread_id)
                        .bind(ballot.voter.as_str())
                        .execute(&mut **tx)
                        .await?;
                } else {
                    sqlx::query(
                        "INSERT INTO votes (thread_id, voter, direction) VALUES ($1, $2, $3) \
                         ON CONFLICT (thread_id, voter) DO UPDATE SET direction = excluded.direction",
                    )
                    .bind(thread_id)
                    .bind(ballot.voter.as_str())
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
}

/// Commits if `result` is `Ok`, else rolls back: all of the transaction or none of it.
async fn finish<DB: Dialect, T>(
    tx: Transaction<'static, DB>,
    result: Result<T, ThreadsError>,
) -> Result<T, ThreadsError> {
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
