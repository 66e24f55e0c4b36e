//! Published by the media service's converters, keyed by the video's id.

use chrono::{DateTime, Utc};
use kit::events::Event;
use serde::{Deserialize, Serialize};

/// A video's soundtrack was converted: its mp3 can be downloaded (`GET /download?fid=<mp3_id>`).
/// Published in the transaction that records the mp3.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mp3Ready {
    /// The video.
    pub video_id: String,
    /// The mp3's id (the `fid` of `/download`).
    pub mp3_id: String,
    /// The user who uploaded the video (the only one who may download the mp3).
    pub owner: String,
    /// The uploaded file's name.
    pub file_name: String,
    /// The mp3's size in bytes.
    pub mp3_size: u64,
    /// The soundtrack's length in milliseconds.
    pub duration_ms: u64,
    /// When the conversion finished.
    pub converted_at: DateTime<Utc>,
}

impl Event for Mp3Ready {
    const TOPIC: &'static str = "media.mp3.ready";
    const VERSION: u32 = 1;
}

/// A video could not be converted, for good (not a video, no audio track, or every attempt
/// failed). Published in the transaction that records the failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversionFailed {
    /// The video.
    pub video_id: String,
    /// The user who uploaded it.
    pub owner: String,
    /// The uploaded file's name.
    pub file_name: String,
    /// Why, in words for the user.
    pub reason: String,
    /// When it failed.
    pub failed_at: DateTime<Utc>,
}

impl Event for ConversionFailed {
    const TOPIC: &'static str = "media.conversion.failed";
    const VERSION: u32 = 1;
}
