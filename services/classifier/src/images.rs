//! Uploads and samples: what may be classified, checked before anything is enqueued.
//!
//! An upload is accepted only if it is a PNG, JPEG, WebP or GIF (the `image` crate is built with those
//! decoders and no others), no larger than [`UploadLimits::max_bytes`], and, judged from its header
//! *before* any pixel is decoded, no larger than [`UploadLimits::max_pixels`] or
//! [`UploadLimits::max_side`] on a side: a 50 000 × 50 000 PNG of a few hundred bytes is a decompression
//! bomb that would otherwise ask for 7.5 GB. The decoder also runs under `image::Limits`, in case a format
//! allocates more than its header admits.
//!
//! Samples are the bundled JPEGs, looked up by id in a fixed table: a client's string is only ever
//! compared with the known ids, never used as a path.

use std::fmt;
use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

/// Default largest upload, in bytes (10 MiB).
pub const DEFAULT_MAX_BYTES: usize = 10 * 1024 * 1024;
/// Default largest image, in pixels (40 megapixels).
pub const DEFAULT_MAX_PIXELS: u64 = 40_000_000;
/// Default longest allowed side, in pixels.
pub const DEFAULT_MAX_SIDE: u32 = 10_000;

/// How large an upload may be; the service's configuration sets these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadLimits {
    /// Largest encoded file, in bytes.
    pub max_bytes: usize,
    /// Largest width × height.
    pub max_pixels: u64,
    /// Largest width or height.
    pub max_side: u32,
}

impl Default for UploadLimits {
    fn default() -> Self {
        UploadLimits { max_bytes: DEFAULT_MAX_BYTES, max_pixels: DEFAULT_MAX_PIXELS, max_side: DEFAULT_MAX_SIDE }
    }
}

/// The image formats that are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// PNG.
    Png,
    /// JPEG.
    Jpeg,
    /// WebP (lossy or lossless; the first frame if animated).
    WebP,
    /// GIF (the first frame).
    Gif,
}

impl Format {
    /// Every accepted format.
    pub const ALL: [Format; 4] = [Format::Png, Format::Jpeg, Format::WebP, Format::Gif];

    /// The format's MIME type, e.g. `image/png`.
    pub fn mime_type(self) -> &'static str {
        match self {
            Format::Png => "image/png",
            Format::Jpeg => "image/jpeg",
            Format::WebP => "image/webp",
            Format::Gif => "image/gif",
        }
    }

    fn from_image_format(format: ImageFormat) -> Option<Format> {
        match format {
            ImageFormat::Png => Some(Format::Png),
            ImageFormat::Jpeg => Some(Format::Jpeg),
            ImageFormat::WebP => Some(Format::WebP),
            ImageFormat::Gif => Some(Format::Gif),
            _ => None,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Png => "PNG",
            Format::Jpeg => "JPEG",
            Format::WebP => "WebP",
            Format::Gif => "GIF",
        })
    }
}

/// Why an upload (or a sample id) was refused. The messages are written for the client and name no
/// internals; the decoder's own error is kept as the source, for the log.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// Empty, or no known image signature.
    #[error("the file is not an image")]
    NotAnImage,
    /// An image, but in a format that is not accepted (e.g. BMP, TIFF).
    #[error("{0} images are not supported; send PNG, JPEG, WebP or GIF")]
    UnsupportedFormat(String),
    /// The encoded file is larger than allowed.
    #[error("the file is {size} bytes; the limit is {max} bytes")]
    TooLarge { size: usize, max: usize },
    /// The header announces more pixels, or a longer side, than allowed. `size` is `None` when the header
    /// was too large for the decoder even to report it (e.g. a row of more than 512 MiB).
    #[error("the image is {}; the limit is {max_pixels} pixels and {max_side} per side", describe_size(.size))]
    TooManyPixels { size: Option<(u32, u32)>, max_pixels: u64, max_side: u32 },
    /// The header or the pixel data is broken (truncated, corrupt, zero-sized).
    #[error("the {format} image is corrupt or truncated")]
    Corrupt {
        format: Format,
        #[source]
        source: Option<image::ImageError>,
    },
    /// A sample id that is not one of [`SAMPLES`].
    #[error("unknown sample {0:?}")]
    UnknownSample(String),
}

/// What the header of an accepted upload says, read without decoding any pixel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    /// The detected format (from the content, never from a file name or content type).
    pub format: Format,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// A fully decoded, accepted image.
#[derive(Debug, Clone)]
pub struct DecodedImage {
    /// Format and size, as read from the header.
    pub info: ImageInfo,
    /// The pixels, already turned upright if EXIF says the camera was rotated.
    pub image: DynamicImage,
}

/// Checks an upload's size, format and dimensions from its header alone, and that a JPEG is complete:
/// cheap (no pixel is decoded), and enough to refuse most bad uploads before anything is enqueued.
pub fn inspect(bytes: &[u8], limits: &UploadLimits) -> Result<ImageInfo, UploadError> {
    if bytes.len() > limits.max_bytes {
        return Err(UploadError::TooLarge { size: bytes.len(), max: limits.max_bytes });
    }
    let format = detect_format(bytes)?;
    let (width, height) = reader(bytes, format).into_dimensions().map_err(|source| match source {
        image::ImageError::Limits(_) => too_many_pixels(None, limits),
        source => UploadError::Corrupt { format, source: Some(source) },
    })?;
    if width == 0 || height == 0 {
        return Err(UploadError::Corrupt { format, source: None });
    }
    if width > limits.max_side || height > limits.max_side || u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(too_many_pixels(Some((width, height)), limits));
    }
    if format == Format::Jpeg && !jpeg_is_complete(bytes) {
        return Err(UploadError::Corrupt { format, source: None });
    }
    Ok(ImageInfo { format, width, height })
}

/// [`inspect`]s an upload, then decodes it (under `image::Limits`) and applies its EXIF orientation.
///
/// CPU-bound for large images (tens of milliseconds): call it from `spawn_blocking`.
pub fn decode(bytes: &[u8], limits: &UploadLimits) -> Result<DecodedImage, UploadError> {
    let info = inspect(bytes, limits)?;
    let failed = |source| decode_error(info, limits, source);
    let mut budget = decoder_limits(limits);
    let mut reader = reader(bytes, info.format);
    reader.limits(budget.clone());
    let mut decoder = reader.into_decoder().map_err(failed)?;
    budget.reserve(decoder.total_bytes()).map_err(failed)?;
    // A photo taken with the phone on its side is stored sideways with an EXIF tag saying so: turn it the
    // way people see it, since the models expect upright objects. A broken tag is ignored, not fatal.
    let orientation = decoder.orientation().ok();
    let mut image = DynamicImage::from_decoder(decoder).map_err(failed)?;
    if let Some(orientation) = orientation {
        image.apply_orientation(orientation);
    }
    Ok(DecodedImage { info, image })
}

/// A decoder that hits its limits was lied to by the header; anything else is a broken file.
fn decode_error(info: ImageInfo, limits: &UploadLimits, source: image::ImageError) -> UploadError {
    match source {
        image::ImageError::Limits(_) => too_many_pixels(Some((info.width, info.height)), limits),
        source => UploadError::Corrupt { format: info.format, source: Some(source) },
    }
}

fn too_many_pixels(size: Option<(u32, u32)>, limits: &UploadLimits) -> UploadError {
    UploadError::TooManyPixels { size, max_pixels: limits.max_pixels, max_side: limits.max_side }
}

fn describe_size(size: &Option<(u32, u32)>) -> String {
    match size {
        Some((width, height)) => format!("{width} × {height} pixels"),
        None => "too large to decode".to_owned(),
    }
}

/// The format, from the file's signature bytes only.
fn detect_format(bytes: &[u8]) -> Result<Format, UploadError> {
    let guessed = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|_| UploadError::NotAnImage)?;
    match guessed.format() {
        None => Err(UploadError::NotAnImage),
        Some(format) => Format::from_image_format(format).ok_or_else(|| {
            UploadError::UnsupportedFormat(
                format
                    .extensions_str()
                    .first()
                    .map_or_else(|| format!("{format:?}"), |extension| extension.to_uppercase()),
            )
        }),
    }
}

/// Whether a JPEG's segments run, unbroken, up to its end-of-image marker.
///
/// The JPEG decoder (zune-jpeg, non-strict as the `image` crate configures it) fills a truncated file's
/// missing blocks with grey and succeeds, so a half-uploaded photo would be classified. Walking the
/// segments by their lengths, rather than searching for the marker, skips the EXIF thumbnail (a whole
/// JPEG, end marker included, inside an APP1 segment). Anything after the end marker is ignored, as
/// decoders do.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    const EOI: u8 = 0xD9;
    const SOS: u8 = 0xDA;
    let segment_length = |at: usize| Some(usize::from(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?])));
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return false;
    }
    let mut at = 2;
    loop {
        // Markers are 0xFF (possibly repeated as fill) then a code; tolerate stray bytes before them.
        while at < bytes.len() && bytes[at] != 0xFF {
            at += 1;
        }
        while at < bytes.len() && bytes[at] == 0xFF {
            at += 1;
        }
        let Some(&marker) = bytes.get(at) else { return false };
        at += 1;
        match marker {
            EOI => return true,
            // Restart markers and TEM stand alone, without a length.
            0xD0..=0xD7 | 0x01 => {}
            SOS => {
                let Some(length) = segment_length(at).filter(|&length| length >= 2) else { return false };
                at += length;
                // Entropy-coded data: 0xFF is escaped as FF 00, and restart markers may interrupt it.
                loop {
                    match bytes.get(at..at + 2) {
                        None => return false,
                        Some(&[0xFF, next]) if !matches!(next, 0x00 | 0xD0..=0xD7) => break,
                        Some(_) => at += 1,
                    }
                }
            }
            _ => {
                let Some(length) = segment_length(at).filter(|&length| length >= 2) else { return false };
                at += length;
            }
        }
    }
}

fn reader(bytes: &[u8], format: Format) -> ImageReader<Cursor<&[u8]>> {
    let format = match format {
        Format::Png => ImageFormat::Png,
        Format::Jpeg => ImageFormat::Jpeg,
        Format::WebP => ImageFormat::WebP,
        Format::Gif => ImageFormat::Gif,
    };
    ImageReader::with_format(Cursor::new(bytes), format)
}

/// The decoder's own limits, a second line of defence behind the header check: the sides as configured,
/// and allocations up to an RGBA image of 16-bit channels at the pixel limit.
fn decoder_limits(limits: &UploadLimits) -> Limits {
    let mut decoder_limits = Limits::default();
    decoder_limits.max_image_width = Some(limits.max_side);
    decoder_limits.max_image_height = Some(limits.max_side);
    decoder_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8));
    decoder_limits
}

/// A bundled sample image that clients may classify by id instead of uploading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Stable id, e.g. `cat`.
    pub id: &'static str,
    /// Human description.
    pub title: &'static str,
    /// The JPEG file.
    pub bytes: &'static [u8],
}

impl Sample {
    /// The MIME type of [`Sample::bytes`].
    pub const MIME_TYPE: &'static str = "image/jpeg";

    /// Decodes the sample through the same checks as an upload.
    pub fn decode(&self) -> Result<DecodedImage, UploadError> {
        decode(self.bytes, &UploadLimits::default())
    }
}

/// Every bundled sample (CC0 / public domain; see `assets/NOTICE.md`).
pub const SAMPLES: &[Sample] = &[
    Sample { id: "cat", title: "Chelsea the cat", bytes: include_bytes!("../assets/cat.jpg") },
    Sample { id: "coffee", title: "A cup of espresso", bytes: include_bytes!("../assets/coffee.jpg") },
    Sample { id: "rocket", title: "A Falcon 9 launch", bytes: include_bytes!("../assets/rocket.jpg") },
    Sample { id: "motorcycle", title: "A motorcycle", bytes: include_bytes!("../assets/motorcycle.jpg") },
];

/// The sample with this id. Only an exact match with a known id succeeds, so anything path-like
/// (`../etc/passwd`, `cat.jpg`, `/cat`) is an unknown sample; nothing touches the filesystem.
pub fn sample(id: &str) -> Result<&'static Sample, UploadError> {
    SAMPLES.iter().find(|sample| sample.id == id).ok_or_else(|| UploadError::UnknownSample(truncate_for_message(id)))
}

/// Client strings end up in error messages: keep them short.
pub(crate) fn truncate_for_message(id: &str) -> String {
    const MAX_CHARS: usize = 64;
    match id.char_indices().nth(MAX_CHARS) {
        Some((end, _)) => format!("{}…", &id[..end]),
        None => id.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_sample_ids_are_found() {
        for sample in SAMPLES {
            assert_eq!(super::sample(sample.id).map(|found| found.id).ok(), Some(sample.id));
        }
        for id in ["", "dog", "CAT", "cat.jpg", "cat/", "/cat", "../etc/passwd", "assets/cat.jpg", "cat\0", " cat"] {
            assert!(matches!(super::sample(id), Err(UploadError::UnknownSample(_))), "{id:?}");
        }
    }

    #[test]
    fn long_unknown_ids_are_shortened_in_the_message() {
        let id = "x".repeat(10_000);
        let message = super::sample(&id).map(|_| ()).unwrap_err().to_string();
        assert!(message.len() < 100, "{message}");
    }

    #[test]
    fn every_sample_is_an_acceptable_jpeg() {
        for sample in SAMPLES {
            let info = inspect(sample.bytes, &UploadLimits::default()).map_err(|e| format!("{}: {e}", sample.id));
            assert_eq!(info.map(|info| info.format), Ok(Format::Jpeg));
        }
    }

    #[test]
    fn a_jpeg_is_complete_only_up_to_its_end_marker() {
        let cat = SAMPLES[0].bytes;
        assert!(jpeg_is_complete(cat));
        assert!(jpeg_is_complete(&[cat, b"trailing bytes"].concat()));
        for end in [2, 3, 100, cat.len() / 2, cat.len() - 2, cat.len() - 1] {
            assert!(!jpeg_is_complete(&cat[..end]), "{end} of {} bytes", cat.len());
        }
        // An EXIF thumbnail's own end marker inside an APP1 segment does not count.
        let thumbnail: &[u8] = &[0xFF, 0xD8, 0xFF, 0xD9];
        let app1 = [&[0xFF, 0xE1, 0x00, 0x06][..], thumbnail].concat();
        let with_thumbnail = [&cat[..2], &app1, &cat[2..]].concat();
        assert!(jpeg_is_complete(&with_thumbnail));
        assert!(!jpeg_is_complete(&with_thumbnail[..with_thumbnail.len() / 2]));
    }

    #[test]
    fn oversized_files_are_refused_before_looking_inside() {
        let limits = UploadLimits { max_bytes: 10, ..UploadLimits::default() };
        assert!(matches!(inspect(&[0; 11], &limits), Err(UploadError::TooLarge { size: 11, max: 10 })));
    }

    #[test]
    fn empty_and_unknown_content_is_not_an_image() {
        let limits = UploadLimits::default();
        assert!(matches!(inspect(b"", &limits), Err(UploadError::NotAnImage)));
        assert!(matches!(inspect(b"hello, world\n", &limits), Err(UploadError::NotAnImage)));
    }
}
