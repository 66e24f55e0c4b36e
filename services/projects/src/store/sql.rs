//! [`SqlStore`]: the projects' SQL, once for both engines, with what differs
//! between them taken from [`EngineSql`].
//!
//! A write transaction's first statement writes: on SQLite it takes the
//! database's write lock at once (waiting on the busy timeout) instead of
//! failing later when a read would have to become a write; on PostgreSQL it
//! locks the project's row, so concurrent tag changes of one project take turns.

use chrono::{DateTime, Utc};
use contracts::projects::{ProjectChanged, ProjectProposed};
use kit::events::outbox;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};

use super::{outbox_rows, thread_type, EngineSql, OutboxItem, Project, Proposer, StoreError};
use crate::domain::{self, ValidProposal};

/// Columns every project query selects, the tags last (see [`EngineSql::TAGS`]).
const PROJECT_COLUMNS: &str = "p.project_id, p.project_name, p.tagline, p.author, p.author_name, p.created_at, \
     (SELECT COUNT(*) FROM thread_outbox o WHERE o.project_id = p.project_id) AS pending_threads";

/// Outbox columns, in [`OutboxItem`]'s order.
const OUTBOX_COLUMNS: &str =
    "outbox_id, project_id, thread_type, message, author, author_name, idempotency_key, attempts";

/// The announcement of a newly stored project.
fn proposed(project: &Project) -> ProjectProposed {
    ProjectProposed {
        project_id: project.project_id,
        project_name: project.project_name.clone(),
        tagline: project.tagline.clone(),
        tags: project.tags.clone(),
        author: project.author.clone(),
        author_name: project.author_name.clone(),
        proposed_at: project.created_at,
    }
}

/// Projects in a database of engine `DB`.
#[derive(Debug)]
pub struct SqlStore<DB: EngineSql> {
    pool: Pool<DB>,
    /// The database's gate, which [`Store`](super::Store) runs every call through.
    pub(super) gate: kit::outage::Gate,
}

impl<DB: EngineSql> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        Self { pool: self.pool.clone(), gate: self.gate.clone() }
    }
}

impl<DB: EngineSql> SqlStore<DB> {
    /// A store over a migrated pool.
    pub fn new(pool: Pool<DB>, gate: kit::outage::Gate) -> Self {
        Self { pool, gate }
    }
}

// What sqlx needs of an engine to run this SQL: executing on a connection, and
// each Rust type bound or read. Both engines have them all.
impl<DB> SqlStore<DB>
where
    DB: EngineSql,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Type<DB> + Encode<'q, DB> + Decode<'q, DB>,
    for<'q> i32: Type<DB> + Decode<'q, DB>,
    for<'q> String: Type<DB> + Decode<'q, DB>,
    for<'q> &'q str: Type<DB> + Encode<'q, DB>,
    for<'q> DateTime<Utc>: Type<DB> + Encode<'q, DB> + Decode<'q, DB>,
    for<'n> &'n str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
{
    fn select_projects() -> String {
        format!("SELECT {PROJECT_COLUMNS}, {} AS tags FROM projects p", DB::TAGS)
    }

    fn project_from(row: &DB::Row) -> Result<Project, StoreError> {
        Ok(Project {
            project_id: row.try_get("project_id")?,
            project_name: row.try_get("project_name")?,
            tagline: row.try_get("tagline")?,
            tags: DB::tags_from(row, "tags")?,
            author: row.try_get("author")?,
            author_name: row.try_get("author_name")?,
            created_at: row.try_get("created_at")?,
            pending_threads: row.try_get("pending_threads")?,
        })
    }

    fn outbox_from(row: &DB::Row) -> Result<OutboxItem, StoreError> {
        let kind: String = row.try_get("thread_type")?;
        Ok(OutboxItem {
            outbox_id: row.try_get("outbox_id")?,
            project_id: row.try_get("project_id")?,
            thread_type: thread_type(&kind)?,
            message: row.try_get("message")?,
            author: row.try_get("author")?,
            author_name: row.try_get("author_name")?,
            idempotency_key: row.try_get("idempotency_key")?,
            attempts: row.try_get("attempts")?,
        })
    }

    /// See [`Store::propose`](super::Store::propose).
    pub async fn propose(
        &self,
        proposal: &ValidProposal,
        by: Proposer<'_>,
    ) -> Result<(Project, Vec<OutboxItem>), StoreError> {
        let mut tx = self.pool.begin().await?;
        let project_id: i64 = sqlx::query_scalar(
            "INSERT INTO projects (project_name, tagline, author, author_name, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5) RETURNING project_id",
        )
        .bind(proposal.project_name.as_str())
        .bind(proposal.tagline.as_str())
        .bind(by.id)
        .bind(by.name)
        .bind(by.at)
        .fetch_one(&mut *tx)
        .await?;
        let tags: Vec<&str> = proposal.tags.iter().map(String::as_str).collect();
        DB::insert_tags(&mut tx, project_id, &tags).await?;
        let mut outbox = Vec::new();
        for (thread_type, message, idempotency_key) in outbox_rows(project_id, proposal) {
            let outbox_id: i64 = sqlx::query_scalar(
                "INSERT INTO thread_outbox \
                 (project_id, thread_type, message, author, author_name, idempotency_key, next_attempt_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING outbox_id",
            )
            .bind(project_id)
            .bind(thread_type.as_str())
            .bind(message)
            .bind(by.id)
            .bind(by.name)
            .bind(idempotency_key.as_str())
            .bind(by.at.timestamp_millis())
            .fetch_one(&mut *tx)
            .await?;
            outbox.push(OutboxItem {
                outbox_id,
                project_id,
                thread_type,
                message: message.to_string(),
                author: by.id.to_string(),
                author_name: by.name.to_string(),
                idempotency_key,
                attempts: 0,
            });
        }
        let project = Project {
            project_id,
            project_name: proposal.project_name.clone(),
            tagline: proposal.tagline.clone(),
            tags: proposal.tags.clone(),
            author: by.id.to_string(),
            author_name: by.name.to_string(),
            created_at: by.at,
            pending_threads: i64::try_from(outbox.len()).unwrap_or(i64::MAX),
        };
        outbox::stage(&mut tx, &project_id.to_string(), &proposed(&project)).await?;
        tx.commit().await?;
        Ok((project, outbox))
    }

    /// See [`Store::list`](super::Store::list).
    pub async fn list(&self, limit: u32, before: Option<i64>) -> Result<Vec<Project>, StoreError> {
        let sql = format!("{} WHERE p.project_id < $1 ORDER BY p.project_id DESC LIMIT $2", Self::select_projects());
        let rows =
            sqlx::query(&sql).bind(before.unwrap_or(i64::MAX)).bind(i64::from(limit)).fetch_all(&self.pool).await?;
        rows.iter().map(Self::project_from).collect()
    }

    /// See [`Store::get`](super::Store::get).
    pub async fn get(&self, project_id: i64) -> Result<Option<Project>, StoreError> {
        let sql = format!("{} WHERE p.project_id = $1", Self::select_projects());
        let row = sqlx::query(&sql).bind(project_id).fetch_optional(&self.pool).await?;
        row.as_ref().map(Self::project_from).transpose()
    }

    /// See [`Store::update_tags`](super::Store::update_tags).
    pub async fn update_tags(
        &self,
        project_id: i64,
        by: &str,
        add: &[String],
        remove: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let author: Option<String> =
            sqlx::query_scalar("UPDATE projects SET updated_at = $2 WHERE project_id = $1 RETURNING author")
                .bind(project_id)
                .bind(Utc::now())
                .fetch_optional(&mut *tx)
                .await?;
        match author {
            None => return Err(StoreError::NotFound(project_id)),
            Some(author) if author != by => return Err(StoreError::NotAuthor(project_id)),
            Some(_) => {}
        }
        let current: Vec<String> = sqlx::query_scalar("SELECT tag FROM tags WHERE project_id = $1 ORDER BY tag_id")
            .bind(project_id)
            .fetch_all(&mut *tx)
            .await?;
        let next = domain::apply_tags(&current, add, remove)?;
        let gone: Vec<&str> = current.iter().filter(|t| !next.contains(t)).map(String::as_str).collect();
        let new: Vec<&str> = next.iter().filter(|t| !current.contains(t)).map(String::as_str).collect();
        DB::delete_tags(&mut tx, project_id, &gone).await?;
        DB::insert_tags(&mut tx, project_id, &new).await?;
        let changed = ProjectChanged { project_id, tags: next.clone(), changed_at: Utc::now() };
        outbox::stage(&mut tx, &project_id.to_string(), &changed).await?;
        tx.commit().await?;
        Ok(next)
    }

    /// See [`Store::due_outbox`](super::Store::due_outbox).
    pub async fn due_outbox(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<OutboxItem>, StoreError> {
        let sql = format!(
            "SELECT {OUTBOX_COLUMNS} FROM thread_outbox WHERE next_attempt_at <= $1 ORDER BY outbox_id LIMIT $2"
        );
        let rows = sqlx::query(&sql).bind(now.timestamp_millis()).bind(i64::from(limit)).fetch_all(&self.pool).await?;
        rows.iter().map(Self::outbox_from).collect()
    }

    /// See [`Store::outbox_delivered`](super::Store::outbox_delivered).
    pub async fn outbox_delivered(&self, outbox_ids: &[i64]) -> Result<(), StoreError> {
        DB::delete_outbox(&self.pool, outbox_ids).await
    }

    /// See [`Store::outbox_failed`](super::Store::outbox_failed).
    pub async fn outbox_failed(
        &self,
        outbox_ids: &[i64],
        error: &str,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        DB::outbox_retry_at(&self.pool, outbox_ids, error, next_attempt_at.timestamp_millis()).await
    }

    /// See [`Store::ping`](super::Store::ping).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
