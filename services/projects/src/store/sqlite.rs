//! [`Store`] on SQLite: tags aggregated with `json_group_array`, and every
//! write transaction starting with a write so that it takes the database's
//! write lock at once (waiting on the busy timeout) instead of failing later
//! when a read would have to become a write.

use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqlitePool};

use super::{
    outbox_rows, thread_type, OutboxItem, Project, Proposer, Store, StoreError, StoreFuture, OUTBOX_COLUMNS,
    PROJECT_COLUMNS,
};
use crate::domain::{self, ValidProposal};

/// Projects in a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// A store over a migrated pool.
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

fn select_projects() -> String {
    format!(
        "SELECT {PROJECT_COLUMNS}, \
         (SELECT json_group_array(tag) FROM (SELECT t.tag FROM tags t WHERE t.project_id = p.project_id ORDER BY t.tag_id)) \
         AS tags FROM projects p"
    )
}

fn project_from(row: &SqliteRow) -> Result<Project, StoreError> {
    let tags: String = row.try_get("tags")?;
    let tags: Vec<String> =
        serde_json::from_str(&tags).map_err(|e| StoreError::Corrupt(format!("tags of a project: {e}")))?;
    Ok(Project {
        project_id: row.try_get("project_id")?,
        project_name: row.try_get("project_name")?,
        tagline: row.try_get("tagline")?,
        tags,
        author: row.try_get("author")?,
        author_name: row.try_get("author_name")?,
        created_at: row.try_get("created_at")?,
        pending_threads: row.try_get("pending_threads")?,
    })
}

fn outbox_from(row: &SqliteRow) -> Result<OutboxItem, StoreError> {
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

impl Store for SqliteStore {
    fn propose<'a>(
        &'a self,
        proposal: &'a ValidProposal,
        by: Proposer<'a>,
    ) -> StoreFuture<'a, (Project, Vec<OutboxItem>)> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await?;
            let project_id: i64 = sqlx::query_scalar(
                "INSERT INTO projects (project_name, tagline, author, author_name, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $5) RETURNING project_id",
            )
            .bind(&proposal.project_name)
            .bind(&proposal.tagline)
            .bind(by.id)
            .bind(by.name)
            .bind(by.at)
            .fetch_one(&mut *tx)
            .await?;
            for tag in &proposal.tags {
                sqlx::query("INSERT INTO tags (project_id, tag) VALUES ($1, $2)")
                    .bind(project_id)
                    .bind(tag)
                    .execute(&mut *tx)
                    .await?;
            }
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
                .bind(&idempotency_key)
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
            tx.commit().await?;
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
            Ok((project, outbox))
        })
    }

    fn list(&self, limit: u32, before: Option<i64>) -> StoreFuture<'_, Vec<Project>> {
        Box::pin(async move {
            let sql = format!("{} WHERE p.project_id < $1 ORDER BY p.project_id DESC LIMIT $2", select_projects());
            let rows =
                sqlx::query(&sql).bind(before.unwrap_or(i64::MAX)).bind(i64::from(limit)).fetch_all(&self.pool).await?;
            rows.iter().map(project_from).collect()
        })
    }

    fn get(&self, project_id: i64) -> StoreFuture<'_, Option<Project>> {
        Box::pin(async move {
            let sql = format!("{} WHERE p.project_id = $1", select_projects());
            let row = sqlx::query(&sql).bind(project_id).fetch_optional(&self.pool).await?;
            row.as_ref().map(project_from).transpose()
        })
    }

    fn update_tags<'a>(
        &'a self,
        project_id: i64,
        by: &'a str,
        add: &'a [String],
        remove: &'a [String],
    ) -> StoreFuture<'a, Vec<String>> {
        Box::pin(async move {
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
            for gone in current.iter().filter(|t| !next.contains(t)) {
                sqlx::query("DELETE FROM tags WHERE project_id = $1 AND tag = $2")
                    .bind(project_id)
                    .bind(gone)
                    .execute(&mut *tx)
                    .await?;
            }
            for new in next.iter().filter(|t| !current.contains(t)) {
                sqlx::query("INSERT INTO tags (project_id, tag) VALUES ($1, $2)")
                    .bind(project_id)
                    .bind(new)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(next)
        })
    }

    fn due_outbox(&self, now: DateTime<Utc>, limit: u32) -> StoreFuture<'_, Vec<OutboxItem>> {
        Box::pin(async move {
            let sql = format!(
                "SELECT {OUTBOX_COLUMNS} FROM thread_outbox WHERE next_attempt_at <= $1 ORDER BY outbox_id LIMIT $2"
            );
            let rows =
                sqlx::query(&sql).bind(now.timestamp_millis()).bind(i64::from(limit)).fetch_all(&self.pool).await?;
            rows.iter().map(outbox_from).collect()
        })
    }

    fn outbox_delivered<'a>(&'a self, outbox_ids: &'a [i64]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await?;
            for id in outbox_ids {
                sqlx::query("DELETE FROM thread_outbox WHERE outbox_id = $1").bind(id).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn outbox_failed<'a>(
        &'a self,
        outbox_ids: &'a [i64],
        error: &'a str,
        next_attempt_at: DateTime<Utc>,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await?;
            for id in outbox_ids {
                sqlx::query(
                    "UPDATE thread_outbox SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3 \
                     WHERE outbox_id = $1",
                )
                .bind(id)
                .bind(error)
                .bind(next_attempt_at.timestamp_millis())
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        })
    }
}
