//! [`SqlStore`]: the users' and failures' SQL, once for both engines. Ids are
//! stored the engine's way ([`Dialect::Uuid`]: text in SQLite, `UUID` in
//! PostgreSQL), timestamps as RFC 3339 text in SQLite and `TIMESTAMPTZ` in
//! PostgreSQL; sqlx reads both.

use chrono::{DateTime, Utc};
use kit::db::Dialect;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};

use super::{taken_or, StoreError, User};

/// Users and failures in a database of engine `DB`.
#[derive(Debug)]
pub struct SqlStore<DB: Dialect> {
    pool: Pool<DB>,
    /// The database's gate, which [`Store`](super::Store) runs every call through.
    pub(super) gate: kit::outage::Gate,
}

impl<DB: Dialect> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        Self { pool: self.pool.clone(), gate: self.gate.clone() }
    }
}

impl<DB: Dialect> SqlStore<DB> {
    /// A store over a migrated pool.
    pub fn new(pool: Pool<DB>, gate: kit::outage::Gate) -> Self {
        Self { pool, gate }
    }
}

const USER_COLUMNS: &str = "SELECT id, username, password_hash, created_at FROM users";

// What sqlx needs of an engine to run this SQL: executing on a connection, and
// each Rust type bound or read. Both engines have them all.
impl<DB> SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Type<DB> + Encode<'q, DB> + Decode<'q, DB>,
    for<'q> String: Type<DB> + Decode<'q, DB>,
    for<'q> &'q str: Type<DB> + Encode<'q, DB>,
    for<'q> DateTime<Utc>: Type<DB> + Encode<'q, DB> + Decode<'q, DB>,
    for<'n> &'n str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
{
    fn user_from(row: &DB::Row) -> Result<User, StoreError> {
        let id: DB::Uuid = row.try_get("id")?;
        Ok(User {
            id: id.into(),
            username: row.try_get("username")?,
            password_hash: row.try_get("password_hash")?,
            created_at: row.try_get("created_at")?,
        })
    }

    /// See [`Store::create_user`](super::Store::create_user).
    pub async fn create_user(&self, user: &User, username_key: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO users (id, username, username_key, password_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(DB::Uuid::from(user.id))
        .bind(user.username.as_str())
        .bind(username_key)
        .bind(user.password_hash.as_str())
        .bind(user.created_at)
        .execute(&self.pool)
        .await
        .map_err(taken_or)?;
        Ok(())
    }

    /// See [`Store::user_by_key`](super::Store::user_by_key).
    pub async fn user_by_key(&self, username_key: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(&format!("{USER_COLUMNS} WHERE username_key = $1"))
            .bind(username_key)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::user_from).transpose()
    }

    /// See [`Store::user_by_id`](super::Store::user_by_id).
    pub async fn user_by_id(&self, id: uuid::Uuid) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(&format!("{USER_COLUMNS} WHERE id = $1"))
            .bind(DB::Uuid::from(id))
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::user_from).transpose()
    }

    /// See [`Store::recent_failures`](super::Store::recent_failures).
    pub async fn recent_failures(&self, subject: &str, since_ms: i64, limit: u32) -> Result<Vec<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT failed_at FROM login_failures WHERE subject = $1 AND failed_at > $2 \
             ORDER BY failed_at DESC LIMIT $3",
        )
        .bind(subject)
        .bind(since_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    /// See [`Store::record_failure`](super::Store::record_failure).
    pub async fn record_failure(&self, subjects: &[String], at_ms: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for subject in subjects {
            sqlx::query("INSERT INTO login_failures (subject, failed_at) VALUES ($1, $2)")
                .bind(subject.as_str())
                .bind(at_ms)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// See [`Store::clear_failures`](super::Store::clear_failures).
    pub async fn clear_failures(&self, subject: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM login_failures WHERE subject = $1").bind(subject).execute(&self.pool).await?;
        Ok(())
    }

    /// See [`Store::prune_failures`](super::Store::prune_failures).
    pub async fn prune_failures(&self, before_ms: i64) -> Result<u64, StoreError> {
        let done =
            sqlx::query("DELETE FROM login_failures WHERE failed_at <= $1").bind(before_ms).execute(&self.pool).await?;
        Ok(DB::rows_affected(&done))
    }

    /// See [`Store::ping`](super::Store::ping).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
