//! [`EngineSql`] on SQLite, which has no arrays: tags aggregated with
//! `json_group_array`, lists written one statement per item inside one
//! transaction.

use sqlx::sqlite::SqliteRow;
use sqlx::{Pool, Row, Sqlite, Transaction};

use super::{EngineSql, StoreError};

impl EngineSql for Sqlite {
    const TAGS: &'static str = "(SELECT json_group_array(tag) FROM \
         (SELECT t.tag FROM tags t WHERE t.project_id = p.project_id ORDER BY t.tag_id))";

    fn tags_from(row: &SqliteRow, column: &str) -> Result<Vec<String>, StoreError> {
        let tags: String = row.try_get(column)?;
        serde_json::from_str(&tags).map_err(|e| StoreError::Corrupt(format!("tags of a project: {e}")))
    }

    async fn insert_tags(
        tx: &mut Transaction<'static, Sqlite>,
        project_id: i64,
        tags: &[&str],
    ) -> Result<(), StoreError> {
        for tag in tags {
            sqlx::query("INSERT INTO tags (project_id, tag) VALUES ($1, $2)")
                .bind(project_id)
                .bind(tag)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    async fn delete_tags(
        tx: &mut Transaction<'static, Sqlite>,
        project_id: i64,
        tags: &[&str],
    ) -> Result<(), StoreError> {
        for tag in tags {
            sqlx::query("DELETE FROM tags WHERE project_id = $1 AND tag = $2")
                .bind(project_id)
                .bind(tag)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    async fn delete_outbox(pool: &Pool<Sqlite>, outbox_ids: &[i64]) -> Result<(), StoreError> {
        let mut tx = pool.begin().await?;
        for id in outbox_ids {
            sqlx::query("DELETE FROM thread_outbox WHERE outbox_id = $1").bind(id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn outbox_retry_at(
        pool: &Pool<Sqlite>,
        outbox_ids: &[i64],
        error: &str,
        next_attempt_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tx = pool.begin().await?;
        for id in outbox_ids {
            sqlx::query(
                "UPDATE thread_outbox SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3 \
                 WHERE outbox_id = $1",
            )
            .bind(id)
            .bind(error)
            .bind(next_attempt_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
