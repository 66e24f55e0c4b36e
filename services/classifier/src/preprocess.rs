//! The models' input: an image turned into the `[1, 3, 224, 224]` tensor they were converted with.
//!
//! This is the reference preprocessing of `tools/classifier-assets/verify_assets.py` (documented in
//! `assets/NOTICE.md`), step for step:
//!
//! 1. RGB8 (alpha dropped, not composited; grey replicated), as Pillow's `convert("RGB")`;
//! 2. resize so that the shorter side is 256 and the longer `floor(256 · long / short)`, with a triangle
//!    (bilinear) filter whose support widens when downscaling, as Pillow's `BILINEAR` does;
//! 3. centre crop 224 × 224 at `round((side − 224) / 2)`, with Python's round-half-to-even;
//! 4. `(x − 127) / 128` per channel (the TF EfficientNet-Lite scaling, not ImageNet mean/std), NCHW.
//!
//! The pixels differ from Pillow's by about one level (JPEG decoder and resampler rounding), which moves
//! probabilities in the second or third decimal and is checked against a fixture in `tests/classifier/model.rs`.

use std::borrow::Cow;

use image::imageops::{self, FilterType};
use image::DynamicImage;
use tract_onnx::prelude::tract_ndarray::Array4;

/// Side of the square input both models take.
pub const INPUT_SIZE: u32 = 224;
/// The shorter side is resized to this before the centre crop.
pub const RESIZE_SHORTER_SIDE: u32 = 256;
/// Longest allowed long/short ratio before resizing; see [`limit_aspect_ratio`].
const MAX_ASPECT_RATIO: u32 = 8;

/// The model input for one image: `[1, 3, 224, 224]` f32, RGB, NCHW, values in about [−1, 1].
pub fn preprocess(image: &DynamicImage) -> Array4<f32> {
    // Decoded JPEGs are already RGB8: borrow them rather than copy up to 120 MB.
    let rgb = match image.as_rgb8() {
        Some(rgb) => Cow::Borrowed(rgb),
        None => Cow::Owned(image.to_rgb8()),
    };
    let (x, y, window_width, window_height) = aspect_ratio_window(rgb.width(), rgb.height());
    let window = imageops::crop_imm(rgb.as_ref(), x, y, window_width, window_height);
    let (width, height) = resized_size(window_width, window_height);
    let resized = imageops::resize(&*window, width, height, FilterType::Triangle);
    let (left, top) = crop_origin(width, height);
    let side = INPUT_SIZE as usize;
    Array4::from_shape_fn((1, 3, side, side), |(_, channel, y, x)| {
        // The indices are below 224 and the origin within the resized image, so this stays in bounds.
        let pixel = resized.get_pixel(left + x as u32, top + y as u32);
        (f32::from(pixel.0[channel]) - 127.0) / 128.0
    })
}

/// The size the image is resized to: shorter side 256, longer side `floor(256 · long / short)`.
///
/// Integer arithmetic gives the same floor as the reference's `int(256 * long / short)` (the quotient of
/// two integers this small is never within a float rounding error of the next integer).
pub fn resized_size(width: u32, height: u32) -> (u32, u32) {
    let (width, height) = (width.max(1), height.max(1));
    let scaled = |long: u32, short: u32| {
        let value = u64::from(RESIZE_SHORTER_SIDE) * u64::from(long) / u64::from(short);
        u32::try_from(value).unwrap_or(u32::MAX)
    };
    if width <= height {
        (RESIZE_SHORTER_SIDE, scaled(height, width))
    } else {
        (scaled(width, height), RESIZE_SHORTER_SIDE)
    }
}

/// Top-left corner of the centre crop: `round((side − 224) / 2)` with ties to even, like Python's `round`
/// (a 385-wide image is cropped at 80, not 81).
pub fn crop_origin(resized_width: u32, resized_height: u32) -> (u32, u32) {
    let origin = |side: u32| (f64::from(side.saturating_sub(INPUT_SIZE)) / 2.0).round_ties_even() as u32;
    (origin(resized_width), origin(resized_height))
}

/// The part of the image that is resized: all of it, unless it is more elongated than 8 : 1, in which case
/// its centre 8 : 1 part, as `(x, y, width, height)`.
///
/// Resizing the shorter side to 256 makes the longer side `256 × ratio`: a 1 × 10 000 upload (which passes
/// every size check) would become a 256 × 2 560 000 image, gigabytes of memory. Only the centre 224 survives
/// the crop anyway, and at 8 : 1 it is far from the cut, so the result differs from the reference only by
/// a sub-pixel shift of the sampling grid, and only for images that elongated.
fn aspect_ratio_window(width: u32, height: u32) -> (u32, u32, u32, u32) {
    let max_long = width.min(height).max(1).saturating_mul(MAX_ASPECT_RATIO);
    if width > max_long {
        ((width - max_long) / 2, 0, max_long, height)
    } else if height > max_long {
        (0, (height - max_long) / 2, width, max_long)
    } else {
        (0, 0, width, height)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::RgbImage;

    #[test]
    fn the_shorter_side_becomes_256_and_the_longer_is_floored() {
        assert_eq!(resized_size(451, 300), (384, 256));
        assert_eq!(resized_size(741, 500), (379, 256));
        assert_eq!(resized_size(300, 451), (256, 384));
        assert_eq!(resized_size(300, 300), (256, 256));
        assert_eq!(resized_size(100, 50), (512, 256));
    }

    #[test]
    fn the_crop_is_centred_with_ties_to_even_like_python() {
        assert_eq!(crop_origin(384, 256), (80, 16));
        assert_eq!(crop_origin(385, 256), (80, 16)); // 80.5 → 80
        assert_eq!(crop_origin(387, 256), (82, 16)); // 81.5 → 82
        assert_eq!(crop_origin(379, 256), (78, 16)); // 77.5 → 78
        assert_eq!(crop_origin(256, 224), (16, 0));
    }

    #[test]
    fn only_extremely_elongated_images_are_narrowed_before_resizing() {
        assert_eq!(aspect_ratio_window(451, 300), (0, 0, 451, 300));
        assert_eq!(aspect_ratio_window(800, 100), (0, 0, 800, 100));
        assert_eq!(aspect_ratio_window(1, 10_000), (0, 4996, 1, 8));
        assert_eq!(aspect_ratio_window(10_000, 100), (4600, 0, 800, 100));
    }

    #[test]
    fn any_image_gives_a_1x3x224x224_tensor() {
        for (w, h) in [(0, 0), (0, 5), (1, 1), (3, 5), (224, 224), (1000, 20), (1, 10_000)] {
            let image = DynamicImage::new_rgb8(w, h);
            assert_eq!(preprocess(&image).shape(), &[1, 3, 224, 224], "{w}x{h}");
        }
    }

    #[test]
    fn values_are_scaled_as_x_minus_127_over_128_in_rgb_order() {
        let image = RgbImage::from_pixel(300, 300, image::Rgb([255, 127, 0]));
        let tensor = preprocess(&DynamicImage::ImageRgb8(image));
        assert_eq!(tensor[[0, 0, 100, 100]], 1.0);
        assert_eq!(tensor[[0, 1, 100, 100]], 0.0);
        assert_eq!(tensor[[0, 2, 100, 100]], -127.0 / 128.0);
    }

    #[test]
    fn alpha_is_dropped_and_grey_is_replicated() {
        let rgba = image::RgbaImage::from_pixel(50, 50, image::Rgba([10, 20, 30, 0]));
        let tensor = preprocess(&DynamicImage::ImageRgba8(rgba));
        assert_eq!(tensor[[0, 0, 0, 0]], (10.0 - 127.0) / 128.0);
        let grey = image::GrayImage::from_pixel(50, 50, image::Luma([200]));
        let tensor = preprocess(&DynamicImage::ImageLuma8(grey));
        for channel in 0..3 {
            assert_eq!(tensor[[0, channel, 7, 7]], (200.0 - 127.0) / 128.0);
        }
    }
}
