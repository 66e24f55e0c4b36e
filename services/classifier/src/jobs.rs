//! The classification job as it travels through the queue, and the worker
//! that runs it. Uploaded bytes travel inside the job, so a worker needs no
//! shared disk with the web server, on one machine or many.

use base64::Engine;
use kit::queue::Job;
use serde::{Deserialize, Serialize};

use crate::images::{self, UploadError, UploadLimits};
use crate::model::{ModelError, Models};

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

impl Job for ClassifyJob {
    const QUEUE: &'static str = "classifications";
    /// The top 5, best first, as `[[label, score], …]` with scores rounded to 4 places.
    type Output = Vec<(String, f64)>;
    type Error = ClassifyError;
}

/// Why a classification attempt failed; the text is the job's `error`.
#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    /// The upload's base64 does not decode (it was encoded by the web server, so: corrupted on the way).
    #[error("malformed upload: {0}")]
    Base64(#[from] base64::DecodeError),
    /// The image does not decode, or the sample is unknown.
    #[error(transparent)]
    Image(#[from] UploadError),
    /// The model is unknown or failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The blocking inference task panicked or was cancelled.
    #[error("the worker's inference task failed: {0}")]
    Inference(#[from] tokio::task::JoinError),
}

/// Runs one job: decode, classify (on a blocking thread), return the top 5.
pub async fn run(models: Models, limits: UploadLimits, job: ClassifyJob) -> Result<Vec<(String, f64)>, ClassifyError> {
    tokio::task::spawn_blocking(move || {
        let decoded = match &job.image {
            ImageSource::Sample { id } => images::sample(id).and_then(|s| s.decode())?,
            ImageSource::Upload { data } => {
                let bytes = base64::engine::general_purpose::STANDARD.decode(data)?;
                images::decode(&bytes, &limits)?
            }
        };
        let top = models.classify(&job.model_id, &decoded.image)?;
        Ok(top.into_iter().map(|p| (p.label, (p.score as f64 * 1e4).round() / 1e4)).collect())
    })
    .await?
}
