//! The one error type of the service, and the gRPC status each case becomes.

use tonic_types::{ErrorDetails, StatusExt};

/// Why a request was not done. The first three are answers about the request
/// (they name the field, and the REST layer shows it to users); the last is
/// the service's own failure, logged here and never described to callers.
#[derive(Debug, thiserror::Error)]
pub enum ThreadsError {
    /// A field is invalid. `INVALID_ARGUMENT` carries it as a `google.rpc.BadRequest` field
    /// violation, so callers read the field from the details instead of parsing the message.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field's path in the request, as `google.rpc.BadRequest` spells it (`threads[2].message`).
        field: String,
        /// What is wrong with it (`must be 1 to 10000 characters`).
        reason: String,
    },
    /// A thread named in the request does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The caller may not do this (change someone else's message).
    #[error("{0}")]
    PermissionDenied(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The database is down, or cannot take this write now: `UNAVAILABLE`, which the projects
    /// service turns into its degraded page (reads) or a 503 with `Retry-After` (writes).
    #[error(transparent)]
    Unavailable(#[from] kit::outage::Unavailable),
    /// Detached database work did not finish (it panicked, or the service is stopping).
    #[error(transparent)]
    Interrupted(#[from] kit::db::Detached),
}

impl kit::outage::Gated for ThreadsError {
    fn failure(&self) -> Option<kit::outage::Failure> {
        match self {
            ThreadsError::Database(e) => kit::db::failure_of(e),
            _ => None,
        }
    }
}

impl ThreadsError {
    /// The field at `field` (its path in the request) is invalid because of `reason`.
    pub fn invalid(field: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Self::Invalid { field: field.into(), reason: reason.to_string() }
    }
}

impl From<ThreadsError> for tonic::Status {
    fn from(err: ThreadsError) -> Self {
        match err {
            ThreadsError::Invalid { field, reason } => {
                // The message stays `field: reason` for people reading logs and grpcurl.
                let message = format!("{field}: {reason}");
                let details = ErrorDetails::with_bad_request_violation(field, reason);
                tonic::Status::with_error_details(tonic::Code::InvalidArgument, message, details)
            }
            ThreadsError::NotFound(why) => tonic::Status::not_found(why),
            ThreadsError::PermissionDenied(why) => tonic::Status::permission_denied(why),
            ThreadsError::Unavailable(unavailable) => {
                tonic::Status::unavailable(format!("the threads {} is unavailable", unavailable.dependency))
            }
            ThreadsError::Interrupted(e) => {
                tracing::error!(error = %e, "threads database work did not complete");
                tonic::Status::internal("internal error")
            }
            ThreadsError::Database(e) => {
                let sqlstate = e.as_database_error().and_then(|d| d.code()).map(|c| c.into_owned());
                if matches!(sqlstate.as_deref(), Some("40P01" | "40001")) {
                    // A PostgreSQL deadlock or serialization failure: nothing was applied; trying again may work.
                    tracing::warn!(error = %e, "threads transaction aborted by a concurrent one");
                    tonic::Status::aborted("a concurrent change conflicted with this one; nothing was applied")
                } else if matches!(e, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_))
                    || sqlite_busy(&e)
                {
                    // Transient: the caller's peer client may try another instance.
                    tracing::error!(error = %e, "threads database unavailable");
                    tonic::Status::unavailable("the threads database is unavailable")
                } else {
                    tracing::error!(error = %e, "threads database failure");
                    tonic::Status::internal("internal error")
                }
            }
        }
    }
}

/// SQLite's BUSY or LOCKED (any extended code): the file stayed locked beyond the busy timeout.
fn sqlite_busy(e: &sqlx::Error) -> bool {
    let Some(db) = e.as_database_error() else { return false };
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_none() {
        return false;
    }
    let code = db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or_default();
    matches!(code & 0xff, 5 | 6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_keep_their_text_and_failures_hide_theirs() {
        let status = tonic::Status::from(ThreadsError::invalid("threads[2].message", "too long"));
        assert_eq!((status.code(), status.message()), (tonic::Code::InvalidArgument, "threads[2].message: too long"));
        assert_eq!(tonic::Status::from(ThreadsError::NotFound("x".into())).code(), tonic::Code::NotFound);
        assert_eq!(
            tonic::Status::from(ThreadsError::PermissionDenied("x".into())).code(),
            tonic::Code::PermissionDenied
        );
        let busy = tonic::Status::from(ThreadsError::Database(sqlx::Error::PoolTimedOut));
        assert_eq!(busy.code(), tonic::Code::Unavailable);
        let broken = tonic::Status::from(ThreadsError::Database(sqlx::Error::Protocol("secret detail".into())));
        assert_eq!((broken.code(), broken.message()), (tonic::Code::Internal, "internal error"));
    }
}
