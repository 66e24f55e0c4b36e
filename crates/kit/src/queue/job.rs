//! What a kind of job is: the payload type, the queue it goes through, what a
//! run returns and why a run fails. [`run_worker`](super::run_worker) runs a
//! handler of one `Job` type; the store keeps payloads and results as JSON, so
//! a job type can change as long as what is already queued still parses.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A kind of job. `Self` is the payload: serialized to JSON when enqueued,
/// parsed back when a worker reserves it (one that no longer parses fails at
/// once, with the parse error as its reason, and is not retried).
///
/// ```
/// use kit::queue::Job;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Resize { image: String, width: u32 }
///
/// impl Job for Resize {
///     const QUEUE: &'static str = "resize";
///     type Output = String;
///     type Error = std::io::Error;
/// }
/// ```
pub trait Job: Serialize + DeserializeOwned + Send + 'static {
    /// The queue jobs of this kind go through (a Redis key part and a metric
    /// label: short, no whitespace).
    const QUEUE: &'static str;
    /// What a finished job holds: stored as JSON, shown by [`Queue::status`](super::Queue::status).
    type Output: Serialize + Send + 'static;
    /// Why an attempt failed: its `Display` text is the stored reason, and the
    /// attempt is retried while the job has attempts left.
    type Error: fmt::Display + Send + 'static;
}
