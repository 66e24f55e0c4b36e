//! The classification job as it travels through the queue, and the worker
//! that runs it. Uploaded bytes travel inside the job, so a worker needs no
//! shared disk with the web server, on one machine or many.

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::images::{self, UploadLimits};
use crate::model::Models;

/// The queue classification jobs go through.
pub const QUEUE: &str = "classifications";

/// Where the image comes from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ImageSource {
    /// A bundled sample, by id.
    Sample {
        /// Sample id.
        id: String,
    },
    /// An upload, base64-encoded (checked before it was enqueued).
    Upload {
        /// The file's bytes, base64.
        data: String,
    },
}

/// A job's payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassifyJob {
    /// Which model.
    pub model_id: String,
    /// Which image.
    pub image: ImageSource,
}

/// Runs one job: decode, classify (on a blocking thread), return the top 5 as `[[label, score], …]`.
pub async fn run(
    models: Models,
    limits: UploadLimits,
    payload: serde_json::Value,
) -> Result<serde_json::Value, String> {
    let job: ClassifyJob = serde_json::from_value(payload).map_err(|e| format!("malformed job: {e}"))?;
    tokio::task::spawn_blocking(move || {
        let decoded = match &job.image {
            ImageSource::Sample { id } => images::sample(id).and_then(|s| s.decode()),
            ImageSource::Upload { data } => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .map_err(|e| format!("malformed upload: {e}"))?;
                images::decode(&bytes, &limits)
            }
        }
        .map_err(|e| e.to_string())?;
        let top = models.classify(&job.model_id, &decoded.image).map_err(|e| e.to_string())?;
        Ok(serde_json::Value::Array(
            top.into_iter().map(|p| serde_json::json!([p.label, (p.score as f64 * 1e4).round() / 1e4])).collect(),
        ))
    })
    .await
    .map_err(|e| format!("the worker's inference task failed: {e}"))?
}
