//! [`Store`] on PostgreSQL: ids as `UUID`, timestamps as `TIMESTAMPTZ`.

use sqlx::{PgPool, Row};

use super::{taken_or, Store, StoreError, StoreFuture, User};

/// Users and failures in a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// A store over a migrated pool.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

fn user_from(row: &sqlx::postgres::PgRow) -> Result<User, StoreError> {
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        password_hash: row.try_get("password_hash")?,
        created_at: row.try_get("created_at")?,
    })
}

const USER_COLUMNS: &str = "SELECT id, username, password_hash, created_at FROM users";

impl Store for PostgresStore {
    fn create_user<'a>(&'a self, user: &'a User, username_key: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO users (id, username, username_key, password_hash, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(user.id)
            .bind(&user.username)
            .bind(username_key)
            .bind(&user.password_hash)
            .bind(user.created_at)
            .execute(&self.pool)
            .await
            .map_err(taken_or)?;
            Ok(())
        })
    }

    fn user_by_key<'a>(&'a self, username_key: &'a str) -> StoreFuture<'a, Option<User>> {
        Box::pin(async move {
            let row = sqlx::query(&format!("{USER_COLUMNS} WHERE username_key = $1"))
                .bind(username_key)
                .fetch_optional(&self.pool)
                .await?;
            row.as_ref().map(user_from).transpose()
        })
    }

    fn user_by_id(&self, id: uuid::Uuid) -> StoreFuture<'_, Option<User>> {
        Box::pin(async move {
            let row = sqlx::query(&format!("{USER_COLUMNS} WHERE id = $1")).bind(id).fetch_optional(&self.pool).await?;
            row.as_ref().map(user_from).transpose()
        })
    }

    fn recent_failures<'a>(&'a self, subject: &'a str, since_ms: i64, limit: u32) -> StoreFuture<'a, Vec<i64>> {
        Box::pin(async move {
            Ok(sqlx::query_scalar(
                "SELECT failed_at FROM login_failures WHERE subject = $1 AND failed_at > $2 \
                 ORDER BY failed_at DESC LIMIT $3",
            )
            .bind(subject)
            .bind(since_ms)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?)
        })
    }

    fn record_failure<'a>(&'a self, subjects: &'a [String], at_ms: i64) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await?;
            for subject in subjects {
                sqlx::query("INSERT INTO login_failures (subject, failed_at) VALUES ($1, $2)")
                    .bind(subject)
                    .bind(at_ms)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn clear_failures<'a>(&'a self, subject: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            sqlx::query("DELETE FROM login_failures WHERE subject = $1").bind(subject).execute(&self.pool).await?;
            Ok(())
        })
    }

    fn prune_failures(&self, before_ms: i64) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let done = sqlx::query("DELETE FROM login_failures WHERE failed_at <= $1")
                .bind(before_ms)
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected())
        })
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        })
    }
}
