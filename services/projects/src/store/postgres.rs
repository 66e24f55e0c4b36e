//! [`EngineSql`] on PostgreSQL: tags aggregated with `array_agg`, every list
//! sent as one array in one statement.

use sqlx::postgres::PgRow;
use sqlx::{Pool, Postgres, Row, Transaction};

use super::{EngineSql, StoreError};

impl EngineSql for Postgres {
    const TAGS: &'static str =
        "COALESCE((SELECT array_agg(t.tag ORDER BY t.tag_id) FROM tags t WHERE t.project_id = p.project_id), '{}')";

    fn tags_from(row: &PgRow, column: &str) -> Result<Vec<String>, StoreError> {
        Ok(row.try_get(column)?)
    }

    async fn insert_tags(
        tx: &mut Transaction<'static, Postgres>,
        project_id: i64,
        tags: &[&str],
    ) -> Result<(), StoreError> {
        if tags.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO tags (project_id, tag) SELECT $1, tag FROM UNNEST($2::text[]) WITH ORDINALITY AS t(tag, n) \
             ORDER BY n",
        )
        .bind(project_id)
        .bind(tags)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    async fn delete_tags(
        tx: &mut Transaction<'static, Postgres>,
        project_id: i64,
        tags: &[&str],
    ) -> Result<(), StoreError> {
        if tags.is_empty() {
            return Ok(());
        }
        sqlx::query("DELETE FROM tags WHERE project_id = $1 AND tag = ANY($2::text[])")
            .bind(project_id)
            .bind(tags)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    async fn delete_outbox(pool: &Pool<Postgres>, outbox_ids: &[i64]) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM thread_outbox WHERE outbox_id = ANY($1)").bind(outbox_ids).execute(pool).await?;
        Ok(())
    }

    async fn outbox_retry_at(
        pool: &Pool<Postgres>,
        outbox_ids: &[i64],
        error: &str,
        next_attempt_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE thread_outbox SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3 \
             WHERE outbox_id = ANY($1)",
        )
        .bind(outbox_ids)
        .bind(error)
        .bind(next_attempt_ms)
        .execute(pool)
        .await?;
        Ok(())
    }
}
