//! Where notifications and e-mail contacts live: one [`Store`] over SQLite (the embedded
//! default) or PostgreSQL, the same SQL for both (`$n` placeholders, times as Unix
//! milliseconds), each engine with its own migrations under `migrations/`.

use chrono::{DateTime, Utc};
use kit::db::{Database, Migrations};
use sqlx::{PgPool, Row, SqlitePool};

use crate::domain::{Kind, NewNotification};

/// The notifications service's migrations, embedded in the binary.
pub const MIGRATIONS: Migrations = kit::migrations!();

/// A notification as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Its id: the event's.
    pub id: String,
    /// The user it is for.
    pub user_id: String,
    /// What it tells.
    pub kind: Kind,
    /// What it is about (a video's id).
    pub about: String,
    /// One sentence for the user.
    pub text: String,
    /// Where to go from it.
    pub link: String,
    /// The e-mail's subject.
    pub subject: String,
    /// When it happened.
    pub created_at: DateTime<Utc>,
    /// When its user marked it read.
    pub read_at: Option<DateTime<Utc>>,
}

impl From<NewNotification> for Notification {
    fn from(n: NewNotification) -> Self {
        Self {
            id: n.id.to_string(),
            user_id: n.user_id,
            kind: n.kind,
            about: n.about,
            text: n.text,
            link: n.link,
            subject: n.subject,
            created_at: n.created_at,
            read_at: None,
        }
    }
}

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored value cannot be read back.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

#[derive(Debug, Clone)]
enum Engine {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Notifications and contacts.
#[derive(Debug, Clone)]
pub struct Store {
    engine: Engine,
}

const COLUMNS: &str = "notification_id, user_id, kind, about, text, link, subject, created_at, read_at";

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn time(ms: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| StoreError::Corrupt(format!("bad time {ms}")))
}

/// Reads a notification from a row of either engine (a macro: the rows are different types).
macro_rules! notification_from {
    ($row:expr) => {{
        let row = $row;
        let kind: String = row.try_get("kind")?;
        Notification {
            id: row.try_get("notification_id")?,
            user_id: row.try_get("user_id")?,
            kind: Kind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("unknown kind {kind:?}")))?,
            about: row.try_get("about")?,
            text: row.try_get("text")?,
            link: row.try_get("link")?,
            subject: row.try_get("subject")?,
            created_at: time(row.try_get("created_at")?)?,
            read_at: row.try_get::<Option<i64>, _>("read_at")?.map(time).transpose()?,
        }
    }};
}

/// Runs the same code on either engine's pool.
macro_rules! on_engine {
    ($self:expr, $pool:ident => $body:expr) => {
        match &$self.engine {
            Engine::Sqlite($pool) => $body,
            Engine::Postgres($pool) => $body,
        }
    };
}

impl Store {
    /// The store for a connected, migrated database.
    pub fn new(db: Database) -> Self {
        let engine = match db {
            Database::Sqlite(pool) => Engine::Sqlite(pool),
            Database::Postgres(pool) => Engine::Postgres(pool),
        };
        Self { engine }
    }

    /// Stores `n` unless a notification with its id is stored already; whether it was new.
    pub async fn insert(&self, n: &NewNotification) -> Result<bool, StoreError> {
        let sql = "INSERT INTO notifications (notification_id, user_id, kind, about, text, link, subject, created_at) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (notification_id) DO NOTHING";
        let done = on_engine!(self, pool => {
            sqlx::query(sql)
                .bind(n.id.to_string())
                .bind(&n.user_id)
                .bind(n.kind.as_str())
                .bind(&n.about)
                .bind(&n.text)
                .bind(&n.link)
                .bind(&n.subject)
                .bind(n.created_at.timestamp_millis())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(done == 1)
    }

    /// `user_id`'s notifications, newest first, those older than `before` if given, unread
    /// ones only if `unread_only`.
    pub async fn list(
        &self,
        user_id: &str,
        unread_only: bool,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Notification>, StoreError> {
        let unread = if unread_only { "AND read_at IS NULL" } else { "" };
        let sql = format!(
            "SELECT {COLUMNS} FROM notifications WHERE user_id = $1 {unread} \
             AND ($2 IS NULL OR notification_id < $2) ORDER BY notification_id DESC LIMIT $3"
        );
        on_engine!(self, pool => {
            let rows = sqlx::query(&sql).bind(user_id).bind(before).bind(i64::from(limit)).fetch_all(pool).await?;
            rows.iter().map(|row| Ok(notification_from!(row))).collect()
        })
    }

    /// `user_id`'s notifications newer than `after`, oldest first, at most `limit` (a stream's
    /// replay after `Last-Event-ID`).
    pub async fn newer_than(&self, user_id: &str, after: &str, limit: u32) -> Result<Vec<Notification>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM notifications WHERE user_id = $1 AND notification_id > $2 \
             ORDER BY notification_id LIMIT $3"
        );
        on_engine!(self, pool => {
            let rows = sqlx::query(&sql).bind(user_id).bind(after).bind(i64::from(limit)).fetch_all(pool).await?;
            rows.iter().map(|row| Ok(notification_from!(row))).collect()
        })
    }

    /// How many of `user_id`'s notifications are unread.
    pub async fn unread_count(&self, user_id: &str) -> Result<u64, StoreError> {
        let sql = "SELECT COUNT(*) FROM notifications WHERE user_id = $1 AND read_at IS NULL";
        let n: i64 = on_engine!(self, pool => sqlx::query_scalar(sql).bind(user_id).fetch_one(pool).await?);
        Ok(n.max(0) as u64)
    }

    /// Marks one of `user_id`'s notifications read (it keeps the first time it was); whether
    /// it is theirs.
    pub async fn mark_read(&self, user_id: &str, id: &str) -> Result<bool, StoreError> {
        let sql =
            "UPDATE notifications SET read_at = COALESCE(read_at, $3) WHERE notification_id = $1 AND user_id = $2";
        let n = on_engine!(self, pool => {
            sqlx::query(sql).bind(id).bind(user_id).bind(now_ms()).execute(pool).await?.rows_affected()
        });
        Ok(n == 1)
    }

    /// Marks every unread notification of `user_id` read; how many were unread.
    pub async fn mark_all_read(&self, user_id: &str) -> Result<u64, StoreError> {
        let sql = "UPDATE notifications SET read_at = $2 WHERE user_id = $1 AND read_at IS NULL";
        let n = on_engine!(self, pool => {
            sqlx::query(sql).bind(user_id).bind(now_ms()).execute(pool).await?.rows_affected()
        });
        Ok(n)
    }

    /// The notification `id` and its user's e-mail address, if it is still to be e-mailed:
    /// not e-mailed yet, and its user has an address.
    pub async fn mail_due(&self, id: &str) -> Result<Option<(Notification, String)>, StoreError> {
        let sql = format!(
            "SELECT {}, c.email FROM notifications n JOIN contacts c ON c.user_id = n.user_id \
             WHERE n.notification_id = $1 AND n.emailed_at IS NULL",
            COLUMNS.split(", ").map(|c| format!("n.{c}")).collect::<Vec<_>>().join(", ")
        );
        on_engine!(self, pool => {
            let row = sqlx::query(&sql).bind(id).fetch_optional(pool).await?;
            match row {
                Some(row) => {
                    let email: String = row.try_get("email")?;
                    Ok(Some((notification_from!(&row), email)))
                }
                None => Ok(None),
            }
        })
    }

    /// Records that the notification `id` was e-mailed.
    pub async fn mark_emailed(&self, id: &str) -> Result<(), StoreError> {
        let sql = "UPDATE notifications SET emailed_at = $2 WHERE notification_id = $1";
        on_engine!(self, pool => {
            sqlx::query(sql).bind(id).bind(now_ms()).execute(pool).await?;
        });
        Ok(())
    }

    /// The address `user_id` wants notifications e-mailed to, if any.
    pub async fn contact(&self, user_id: &str) -> Result<Option<String>, StoreError> {
        let sql = "SELECT email FROM contacts WHERE user_id = $1";
        Ok(on_engine!(self, pool => sqlx::query_scalar(sql).bind(user_id).fetch_optional(pool).await?))
    }

    /// Sets (or replaces) the address `user_id` wants notifications e-mailed to.
    pub async fn set_contact(&self, user_id: &str, email: &str) -> Result<(), StoreError> {
        let sql = "INSERT INTO contacts (user_id, email, updated_at) VALUES ($1, $2, $3) \
                   ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, updated_at = excluded.updated_at";
        on_engine!(self, pool => {
            sqlx::query(sql).bind(user_id).bind(email).bind(now_ms()).execute(pool).await?;
        });
        Ok(())
    }

    /// Forgets `user_id`'s address; whether there was one.
    pub async fn delete_contact(&self, user_id: &str) -> Result<bool, StoreError> {
        let sql = "DELETE FROM contacts WHERE user_id = $1";
        let n = on_engine!(self, pool => sqlx::query(sql).bind(user_id).execute(pool).await?.rows_affected());
        Ok(n == 1)
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_engine!(self, pool => {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }
}
