//! The media service's rules, without I/O: a video's states, which uploads are video
//! containers (by their magic bytes), what ffprobe's report means for a conversion, how far
//! ffmpeg's `-progress` output says it got, byte ranges and download file names.

use serde::{Deserialize, Serialize};

/// Where a video is in its conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum VideoStatus {
    /// Waiting for a converter (also between attempts).
    Queued,
    /// A converter is working on it.
    Converting,
    /// Its mp3 is ready.
    Done,
    /// It cannot be converted; the reason is kept.
    Failed,
}

impl VideoStatus {
    /// The stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Converting => "converting",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }

    /// The status a stored name stands for.
    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "queued" => Self::Queued,
            "converting" => Self::Converting,
            "done" => Self::Done,
            "failed" => Self::Failed,
            _ => return None,
        })
    }

    /// Whether a converter may still work on it.
    pub fn is_pending(self) -> bool {
        matches!(self, Self::Queued | Self::Converting)
    }
}

/// A container format recognised by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// ISO base media: MP4, MOV, M4V, 3GP (`ftyp` at offset 4).
    IsoMedia,
    /// Matroska or WebM (EBML header).
    Matroska,
    /// AVI (RIFF … `AVI `).
    Avi,
    /// MPEG transport stream (sync byte every 188 bytes).
    MpegTs,
    /// MPEG program stream (pack header).
    MpegPs,
    /// Flash video.
    Flv,
    /// Ogg (Theora, …).
    Ogg,
    /// ASF: WMV.
    Asf,
}

/// How many leading bytes [`sniff_container`] looks at, at most.
pub const SNIFF_BYTES: usize = 512;

/// The video container `head` (a file's first bytes, up to [`SNIFF_BYTES`]) starts, if any.
/// A text file named `.mp4` is `None`; whether a container really holds a video is for ffprobe.
pub fn sniff_container(head: &[u8]) -> Option<Container> {
    const ASF: [u8; 8] = [0x30, 0x26, 0xB2, 0x75, 0x8E, 0x66, 0xCF, 0x11];
    if head.len() >= 8 && &head[4..8] == b"ftyp" {
        return Some(Container::IsoMedia);
    }
    if head.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        return Some(Container::Matroska);
    }
    if head.len() >= 12 && head.starts_with(b"RIFF") && &head[8..12] == b"AVI " {
        return Some(Container::Avi);
    }
    if head.len() > 188 && head[0] == 0x47 && head[188] == 0x47 {
        return Some(Container::MpegTs);
    }
    if head.starts_with(&[0x00, 0x00, 0x01, 0xBA]) {
        return Some(Container::MpegPs);
    }
    if head.starts_with(b"FLV\x01") {
        return Some(Container::Flv);
    }
    if head.starts_with(b"OggS") {
        return Some(Container::Ogg);
    }
    if head.starts_with(&ASF) {
        return Some(Container::Asf);
    }
    None
}

/// What ffprobe said about an input that can be converted.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// The input's duration in milliseconds (0 when ffprobe does not know it).
    pub duration_ms: u64,
}

/// Why an input can never be converted (the job fails once, with this as its reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unconvertible {
    /// ffprobe could not read it as media at all.
    #[error("not a video: {0}")]
    NotMedia(String),
    /// It has streams, but no video.
    #[error("not a video: the file has no video stream")]
    NoVideo,
    /// It is a video without sound.
    #[error("the video has no audio track")]
    NoAudio,
}

/// Reads ffprobe's `-print_format json -show_format -show_streams` output.
pub fn read_probe(json: &str) -> Result<Probe, Unconvertible> {
    #[derive(Deserialize)]
    struct Report {
        #[serde(default)]
        streams: Vec<Stream>,
        format: Option<Format>,
    }
    #[derive(Deserialize)]
    struct Stream {
        codec_type: Option<String>,
    }
    #[derive(Deserialize)]
    struct Format {
        duration: Option<String>,
    }
    let report: Report = serde_json::from_str(json)
        .map_err(|e| Unconvertible::NotMedia(format!("ffprobe's report does not parse: {e}")))?;
    if report.streams.is_empty() {
        return Err(Unconvertible::NotMedia("ffprobe found no streams".into()));
    }
    let has = |kind: &str| report.streams.iter().any(|s| s.codec_type.as_deref() == Some(kind));
    if !has("video") {
        return Err(Unconvertible::NoVideo);
    }
    if !has("audio") {
        return Err(Unconvertible::NoAudio);
    }
    let seconds = report.format.and_then(|f| f.duration).and_then(|d| d.trim().parse::<f64>().ok());
    let duration_ms = seconds.filter(|s| s.is_finite() && *s > 0.0).map_or(0, |s| (s * 1000.0).round() as u64);
    Ok(Probe { duration_ms })
}

/// What one line of ffmpeg's `-progress` output says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressLine {
    /// Output written up to this position, in microseconds.
    At(u64),
    /// The conversion finished (`progress=end`).
    End,
    /// Anything else (frame counts, bitrates, `progress=continue`).
    Other,
}

/// Reads one line of ffmpeg's `-progress` output (`key=value`).
pub fn read_progress_line(line: &str) -> ProgressLine {
    let Some((key, value)) = line.trim().split_once('=') else { return ProgressLine::Other };
    match key {
        // Despite its name, `out_time_ms` is in microseconds too (an old ffmpeg quirk).
        "out_time_us" | "out_time_ms" => value.parse().map_or(ProgressLine::Other, ProgressLine::At),
        "progress" if value == "end" => ProgressLine::End,
        _ => ProgressLine::Other,
    }
}

/// The percentage of `duration_ms` that `at_us` reaches: 0–99 while converting (100 only
/// once the mp3 is stored), 0 when the duration is unknown.
pub fn percent(at_us: u64, duration_ms: u64) -> u8 {
    if duration_ms == 0 {
        return 0;
    }
    let done = at_us / 1000 * 100 / duration_ms;
    done.min(99) as u8
}

/// A request's `Range` over a body of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// No (usable) range: the whole body. Several ranges are answered with the whole body, as
    /// RFC 9110 allows.
    Full,
    /// Bytes `start..=end`.
    Part {
        /// First byte.
        start: u64,
        /// Last byte, inclusive.
        end: u64,
    },
    /// A range that starts past the end: 416.
    Unsatisfiable,
}

/// Reads a `Range` header (`bytes=0-99`, `bytes=100-`, `bytes=-100`).
pub fn parse_range(header: Option<&str>, size: u64) -> ByteRange {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else { return ByteRange::Full };
    if spec.contains(',') {
        return ByteRange::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return ByteRange::Full };
    let (first, last) = (first.trim(), last.trim());
    let parsed = |s: &str| s.parse::<u64>().ok();
    match (first.is_empty(), last.is_empty()) {
        // The last `n` bytes.
        (true, false) => match parsed(last) {
            None => ByteRange::Full,
            Some(n) if n == 0 || size == 0 => ByteRange::Unsatisfiable,
            Some(n) => ByteRange::Part { start: size.saturating_sub(n), end: size - 1 },
        },
        (false, _) => {
            let Some(start) = parsed(first) else { return ByteRange::Full };
            let end = if last.is_empty() { Some(u64::MAX) } else { parsed(last) };
            match end {
                None => ByteRange::Full,
                Some(end) if end < start => ByteRange::Full,
                Some(_) if start >= size => ByteRange::Unsatisfiable,
                Some(end) => ByteRange::Part { start, end: end.min(size - 1) },
            }
        }
        (true, true) => ByteRange::Full,
    }
}

/// The name an mp3 of the upload `file_name` is downloaded as: its stem (without a
/// directory, control characters or quotes) with `.mp3`; `soundtrack.mp3` when nothing is left.
pub fn mp3_file_name(file_name: &str) -> String {
    let base = file_name.rsplit(['/', '\\']).next().unwrap_or(file_name);
    let stem = base.rsplit_once('.').map_or(base, |(stem, _)| stem);
    let clean: String = stem.chars().filter(|c| !c.is_control() && !matches!(c, '"' | '\\' | '/')).collect();
    let clean = clean.trim();
    if clean.is_empty() {
        "soundtrack.mp3".to_string()
    } else {
        format!("{clean}.mp3")
    }
}

/// A `Content-Disposition: attachment` value for `name`: an ASCII fallback and the exact
/// name percent-encoded in UTF-8 (RFC 6266).
pub fn content_disposition(name: &str) -> String {
    let ascii: String = name.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '_' }).collect();
    let mut encoded = String::with_capacity(name.len() * 3);
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

/// The name an upload is kept under: the client's, without directories or control
/// characters, at most 200 characters; `video` when none is given.
pub fn upload_file_name(given: Option<&str>) -> String {
    let base = given.map(|g| g.rsplit(['/', '\\']).next().unwrap_or(g)).unwrap_or("");
    let clean: String = base.chars().filter(|c| !c.is_control()).take(200).collect();
    let clean = clean.trim();
    if clean.is_empty() {
        "video".to_string()
    } else {
        clean.to_string()
    }
}

/// Page sizes of `GET /videos`: 20 unless asked, at most 100.
pub fn page_size(asked: Option<u32>) -> Result<u32, String> {
    match asked {
        None => Ok(20),
        Some(n) if (1..=100).contains(&n) => Ok(n),
        Some(n) => Err(format!("limit must be between 1 and 100, not {n}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_containers_are_recognised_and_text_is_not() {
        let mut mp4 = vec![0, 0, 0, 0x20];
        mp4.extend_from_slice(b"ftypisom");
        assert_eq!(sniff_container(&mp4), Some(Container::IsoMedia));
        assert_eq!(sniff_container(&[0x1A, 0x45, 0xDF, 0xA3, 1]), Some(Container::Matroska));
        assert_eq!(sniff_container(b"RIFF\0\0\0\0AVI LIST"), Some(Container::Avi));
        let mut ts = vec![0u8; 376];
        ts[0] = 0x47;
        ts[188] = 0x47;
        assert_eq!(sniff_container(&ts), Some(Container::MpegTs));
        assert_eq!(sniff_container(b"hello, this is not a video at all"), None);
        assert_eq!(sniff_container(b""), None);
        assert_eq!(sniff_container(b"RIFF\0\0\0\0WAVEfmt "), None);
    }

    #[test]
    fn a_probe_needs_a_video_and_an_audio_stream() {
        let both = r#"{"streams":[{"codec_type":"video"},{"codec_type":"audio"}],"format":{"duration":"3.500000"}}"#;
        assert_eq!(read_probe(both), Ok(Probe { duration_ms: 3500 }));
        let silent = r#"{"streams":[{"codec_type":"video"}],"format":{"duration":"2.0"}}"#;
        assert_eq!(read_probe(silent), Err(Unconvertible::NoAudio));
        let audio = r#"{"streams":[{"codec_type":"audio"}],"format":{}}"#;
        assert_eq!(read_probe(audio), Err(Unconvertible::NoVideo));
        assert!(matches!(read_probe(r#"{"streams":[]}"#), Err(Unconvertible::NotMedia(_))));
        assert!(matches!(read_probe("garbage"), Err(Unconvertible::NotMedia(_))));
        let unknown = r#"{"streams":[{"codec_type":"video"},{"codec_type":"audio"}],"format":{"duration":"N/A"}}"#;
        assert_eq!(read_probe(unknown), Ok(Probe { duration_ms: 0 }));
    }

    #[test]
    fn progress_lines_give_the_position_and_the_end() {
        assert_eq!(read_progress_line("out_time_us=1500000"), ProgressLine::At(1_500_000));
        assert_eq!(read_progress_line("out_time_ms=2000000\n"), ProgressLine::At(2_000_000));
        assert_eq!(read_progress_line("out_time_us=N/A"), ProgressLine::Other);
        assert_eq!(read_progress_line("progress=end"), ProgressLine::End);
        assert_eq!(read_progress_line("progress=continue"), ProgressLine::Other);
        assert_eq!(percent(1_500_000, 3000), 50);
        assert_eq!(percent(9_000_000, 3000), 99, "100 only once stored");
        assert_eq!(percent(1_000_000, 0), 0);
    }

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(parse_range(None, 100), ByteRange::Full);
        assert_eq!(parse_range(Some("bytes=0-9"), 100), ByteRange::Part { start: 0, end: 9 });
        assert_eq!(parse_range(Some("bytes=90-"), 100), ByteRange::Part { start: 90, end: 99 });
        assert_eq!(parse_range(Some("bytes=90-500"), 100), ByteRange::Part { start: 90, end: 99 });
        assert_eq!(parse_range(Some("bytes=-10"), 100), ByteRange::Part { start: 90, end: 99 });
        assert_eq!(parse_range(Some("bytes=-500"), 100), ByteRange::Part { start: 0, end: 99 });
        assert_eq!(parse_range(Some("bytes=100-"), 100), ByteRange::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), ByteRange::Full);
        assert_eq!(parse_range(Some("bytes=9-1"), 100), ByteRange::Full);
        assert_eq!(parse_range(Some("items=0-1"), 100), ByteRange::Full);
        assert_eq!(parse_range(Some("bytes=-0"), 100), ByteRange::Unsatisfiable);
    }

    #[test]
    fn download_names_keep_the_uploads_stem() {
        assert_eq!(mp3_file_name("holiday.mp4"), "holiday.mp3");
        assert_eq!(mp3_file_name("C:\\videos\\my \"clip\".mov"), "my clip.mp3");
        assert_eq!(mp3_file_name(".mp4"), "soundtrack.mp3");
        assert_eq!(mp3_file_name(""), "soundtrack.mp3");
        assert_eq!(
            content_disposition("été.mp3"),
            "attachment; filename=\"_t_.mp3\"; filename*=UTF-8''%C3%A9t%C3%A9.mp3"
        );
        assert_eq!(upload_file_name(Some("../../etc/passwd")), "passwd");
        assert_eq!(upload_file_name(None), "video");
    }
}
