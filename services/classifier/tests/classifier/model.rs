//! The classifier's model side against its references: the onnxruntime results in `assets/expected.json`,
//! the Pillow preprocessing in `tests/fixtures/preprocess_reference.json`, and hostile uploads.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use classifier::images::{self, Format, UploadError, UploadLimits, SAMPLES};
use classifier::model::{Models, Prediction};
use classifier::preprocess::preprocess;
use image::{DynamicImage, ImageFormat, RgbImage};
use serde_json::Value;
use tract_onnx::prelude::tract_ndarray::s;

const MODEL_IDS: [&str; 2] = ["efficientnet-lite0", "efficientnet-lite1"];
const LABELS: &str = include_str!("../../assets/imagenet_labels.txt");
const EXPECTED: &str = include_str!("../../assets/expected.json");
const PREPROCESS_REFERENCE: &str = include_str!("../fixtures/preprocess_reference.json");

/// Loaded once for the whole test binary: parsing and optimising both graphs is the slow part.
fn models() -> &'static Models {
    static MODELS: OnceLock<Models> = OnceLock::new();
    MODELS.get_or_init(|| Models::load().expect("the embedded models load"))
}

fn sample_image(id: &str) -> DynamicImage {
    let sample = images::sample(id).expect("a bundled sample");
    images::decode(sample.bytes, &UploadLimits::default()).expect("the sample decodes").image
}

/// The labels of ImageNet class indices, from the label file rather than from the crate under test.
fn labels_of(indices: impl IntoIterator<Item = usize>) -> Vec<&'static str> {
    let labels: Vec<&str> = LABELS.lines().collect();
    indices.into_iter().map(|index| labels[index]).collect()
}

fn classify(model: &str, sample: &str) -> Vec<Prediction> {
    models().classify(model, &sample_image(sample)).expect("classification succeeds")
}

fn assert_top1_in(sample: &str, accepted: &[usize]) {
    let accepted_labels = labels_of(accepted.iter().copied());
    for model in MODEL_IDS {
        let predictions = classify(model, sample);
        let top1 = &predictions[0];
        assert!(
            accepted_labels.contains(&top1.label.as_str()) && accepted.contains(&top1.class_index),
            "{model} on {sample}: top-1 {top1:?}, expected one of {accepted_labels:?}; all: {predictions:?}"
        );
    }
}

#[test]
fn the_cat_is_recognised_as_a_cat_by_both_models() {
    assert_top1_in("cat", &[281, 282, 283, 284, 285]);
}

#[test]
fn the_coffee_is_recognised_as_espresso_a_cup_or_a_mug_by_both_models() {
    assert_top1_in("coffee", &[967, 968, 504]);
}

#[test]
fn predictions_are_five_labelled_probabilities_best_first() {
    for model in MODEL_IDS {
        let predictions = classify(model, "motorcycle");
        assert_eq!(predictions.len(), 5);
        assert!(predictions.windows(2).all(|pair| pair[0].score >= pair[1].score), "{predictions:?}");
        assert!(predictions.iter().all(|p| (0.0..=1.0).contains(&p.score)));
        for prediction in &predictions {
            assert_eq!(labels_of([prediction.class_index]), [prediction.label.as_str()]);
        }
    }
}

/// onnxruntime on Pillow's preprocessing (expected.json) and tract on ours agree on the top-1 class and,
/// to within the pixel differences of the two decoders and resizers, on its probability.
#[test]
fn results_agree_with_the_onnxruntime_reference() {
    let expected: Value = serde_json::from_str(EXPECTED).expect("expected.json is JSON");
    for model in MODEL_IDS {
        for sample in ["cat", "coffee", "motorcycle"] {
            let reference = &expected[format!("{model}.onnx")][format!("{sample}.jpg")][0];
            let (index, probability) = (reference[0].as_u64().unwrap_or(0) as usize, reference[2].as_f64());
            let predictions = classify(model, sample);
            let found = predictions.iter().find(|p| p.class_index == index);
            let score = found.map(|p| f64::from(p.score));
            assert!(
                matches!((score, probability), (Some(ours), Some(theirs)) if (ours - theirs).abs() < 0.06),
                "{model} on {sample}: onnxruntime's top-1 {reference}, ours {predictions:?}"
            );
        }
    }
}

#[test]
fn the_registry_lists_both_models_and_refuses_unknown_ids() {
    let listed: Vec<(&str, &str)> = models().list().map(|info| (info.id, info.name)).collect();
    assert_eq!(listed, [("efficientnet-lite0", "EfficientNet-Lite0"), ("efficientnet-lite1", "EfficientNet-Lite1")]);
    let image = DynamicImage::new_rgb8(8, 8);
    for id in ["", "efficientnet-lite2", "EfficientNet-Lite0", "../efficientnet-lite0.onnx"] {
        let error = models().classify(id, &image).expect_err("unknown model");
        assert!(error.to_string().contains("unknown model"), "{error}");
    }
}

#[test]
fn models_can_be_shared_between_threads() {
    let image = sample_image("coffee");
    let results: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = MODEL_IDS
            .iter()
            .map(|model| {
                let models = models().clone();
                let image = &image;
                scope.spawn(move || models.classify(model, image).expect("classifies")[0].label.clone())
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().expect("no panic")).collect()
    });
    assert_eq!(results, ["espresso", "espresso"]);
}

/// Our preprocessing against Pillow's (`tools/classifier-assets/preprocess_fixture.py`): whole-tensor
/// statistics, 32 × 32 block means (which catch a crop off by a pixel or swapped channels) and single values.
///
/// On the lossless synthetic images, resize + crop + scaling must agree to within a level: both resize
/// with the same triangle filter, but Pillow rounds to 8 bits between its horizontal and vertical passes
/// while `image` keeps f32, so values that fall on a half after the first pass (a ramp at exactly 2×,
/// the 770 × 512 image) come out half a level higher on average in Pillow. On the JPEG samples the
/// decoders differ too: zune-jpeg and Pillow's libjpeg-turbo convert YCbCr differently, by up to 4 levels
/// and a bias of about 0.3 level per channel.
#[test]
fn preprocessing_matches_the_pillow_reference() {
    let reference: Value = serde_json::from_str(PREPROCESS_REFERENCE).expect("the fixture is JSON");
    let images = reference["images"].as_object().expect("an images object");
    assert!(images.contains_key("cat.jpg") && images.len() == 7, "{:?}", images.keys());
    let level = 1.0 / 128.0;
    for (name, expected) in images {
        let (image, tolerance) = match name.strip_suffix(".jpg") {
            Some(id) => (sample_image(id), Tolerance { mean: 0.5, std: 0.3, block: 1.0, value: 4.0 }),
            None => (synthetic(name), Tolerance { mean: 0.5, std: 0.05, block: 0.6, value: 1.0 }),
        };
        let size = (image.width(), image.height());
        let resized = classifier::preprocess::resized_size(size.0, size.1);
        assert_eq!(pair(&expected["resized_size"]), resized, "{name}");
        assert_eq!(
            pair(&expected["crop_left_top"]),
            classifier::preprocess::crop_origin(resized.0, resized.1),
            "{name}"
        );

        let tensor = preprocess(&image);
        assert_eq!(tensor.shape(), [1, 3, 224, 224]);
        let mut worst = Tolerance { mean: 0.0, std: 0.0, block: 0.0, value: 0.0 };
        for channel in 0..3 {
            let plane = tensor.slice(s![0, channel, .., ..]);
            let (mean, std) = mean_std(plane.iter());
            worst.mean = worst.mean.max((mean - number(&expected["channel_mean"][channel])).abs());
            worst.std = worst.std.max((std - number(&expected["channel_std"][channel])).abs());
            for by in 0..7 {
                for bx in 0..7 {
                    let (block_mean, _) =
                        mean_std(plane.slice(s![by * 32..by * 32 + 32, bx * 32..bx * 32 + 32]).iter());
                    let diff = (block_mean - number(&expected["block_means_32"][channel][by][bx])).abs();
                    worst.block = worst.block.max(diff);
                }
            }
        }
        let samples = expected["samples"].as_array().expect("samples");
        assert_eq!(samples.len(), 20);
        for sample in samples {
            let chw: Vec<usize> = (0..3).map(|axis| number(&sample["chw"][axis]) as usize).collect();
            let ours = f64::from(tensor[[0, chw[0], chw[1], chw[2]]]);
            worst.value = worst.value.max((ours - number(&sample["value"])).abs());
        }
        let worst = Tolerance {
            mean: worst.mean / level,
            std: worst.std / level,
            block: worst.block / level,
            value: worst.value / level,
        };
        println!("{name}: largest differences in levels (1/128): {worst:?}");
        assert!(
            worst.mean < tolerance.mean
                && worst.std < tolerance.std
                && worst.block < tolerance.block
                && worst.value < tolerance.value + 1e-3,
            "{name}: differences {worst:?} exceed {tolerance:?} (in levels of 1/128)"
        );
    }
}

/// Largest differences allowed, in levels of 1/128 (one step of an 8-bit channel after scaling).
#[derive(Debug)]
struct Tolerance {
    mean: f64,
    std: f64,
    block: f64,
    value: f64,
}

fn number(value: &Value) -> f64 {
    value.as_f64().expect("a number")
}

fn pair(value: &Value) -> (u32, u32) {
    (number(&value[0]) as u32, number(&value[1]) as u32)
}

fn mean_std<'a>(values: impl Iterator<Item = &'a f32> + Clone) -> (f64, f64) {
    let count = values.clone().count() as f64;
    let mean = values.clone().map(|&v| f64::from(v)).sum::<f64>() / count;
    let variance = values.map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / count;
    (mean, variance.sqrt())
}

/// The fixture's `synthetic-WxH` image: channel c of (x, y) = (3x + 5y + 85c + 10 ((x y) mod 7)) mod 256.
fn synthetic(name: &str) -> DynamicImage {
    let size = name.strip_prefix("synthetic-").and_then(|size| size.split_once('x'));
    let (width, height) = size.and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?))).expect("synthetic-WxH");
    DynamicImage::ImageRgb8(RgbImage::from_fn(width, height, |x, y| {
        let value = |c: u32| ((3 * x + 5 * y + 85 * c + 10 * ((x * y) % 7)) % 256) as u8;
        image::Rgb([value(0), value(1), value(2)])
    }))
}

// ---- uploads ----

/// CRC-32 (ISO-HDLC), as PNG chunks need: the decoder checks it, so a crafted header must be well formed.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
    chunk.extend_from_slice(kind);
    chunk.extend_from_slice(data);
    let mut covered = kind.to_vec();
    covered.extend_from_slice(data);
    chunk.extend_from_slice(&crc32(&covered).to_be_bytes());
    chunk
}

/// A valid-looking PNG of a few dozen bytes whose header claims `width` × `height` RGB pixels.
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit, truecolour, deflate, no filter, no interlace
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(png_chunk(b"IHDR", &ihdr));
    png.extend(png_chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01])); // an empty zlib stream
    png.extend(png_chunk(b"IEND", &[]));
    png
}

fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    image.write_to(&mut bytes, format).expect("encodes");
    bytes.into_inner()
}

#[test]
fn a_50000_by_50000_png_header_is_refused_without_decoding() {
    let bomb = png_claiming(50_000, 50_000);
    assert!(bomb.len() < 100);
    let started = Instant::now();
    let result = images::decode(&bomb, &UploadLimits::default());
    assert!(matches!(result, Err(UploadError::TooManyPixels { size: Some((50_000, 50_000)), .. })), "{result:?}");
    // Decoding would have asked for 7.5 GB; reading a header takes microseconds.
    assert!(started.elapsed() < Duration::from_millis(100), "{:?}", started.elapsed());
    let message = result.map(|_| ()).expect_err("refused").to_string();
    assert_eq!(message, "the image is 50000 × 50000 pixels; the limit is 40000000 pixels and 10000 per side");
}

#[test]
fn too_many_pixels_or_too_long_a_side_is_refused_from_the_header() {
    let limits = UploadLimits::default();
    // 2³¹ − 1 is the largest side PNG allows: the decoder itself refuses to describe such an image.
    for (width, height) in [(7_000, 7_000), (10_001, 1), (1, 10_001), (i32::MAX as u32, i32::MAX as u32)] {
        let result = images::inspect(&png_claiming(width, height), &limits);
        assert!(matches!(result, Err(UploadError::TooManyPixels { .. })), "{width}x{height}: {result:?}");
    }
    let result = images::inspect(&png_claiming(8_000, 5_000), &limits);
    assert_eq!(result.map(|info| (info.width, info.height)).ok(), Some((8_000, 5_000)));
}

#[test]
fn a_text_file_is_not_an_image() {
    let text = b"name,score\ncat,0.9\ncoffee,0.8\n";
    assert!(matches!(images::decode(text, &UploadLimits::default()), Err(UploadError::NotAnImage)));
    assert!(matches!(images::decode(b"", &UploadLimits::default()), Err(UploadError::NotAnImage)));
}

#[test]
fn a_truncated_jpeg_is_refused() {
    let cat = images::sample("cat").expect("a sample").bytes;
    for keep in [cat.len() / 2, cat.len() - 200, 600, 2] {
        let result = images::decode(&cat[..keep], &UploadLimits::default());
        assert!(
            matches!(result, Err(UploadError::Corrupt { format: Format::Jpeg, .. }) | Err(UploadError::NotAnImage)),
            "{keep} bytes: {:?}",
            result.map(|decoded| decoded.info)
        );
    }
}

#[test]
fn truncated_png_webp_and_gif_files_are_refused() {
    let image = DynamicImage::ImageRgb8(RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8 * 4, y as u8 * 4, 7])));
    for (format, expected) in
        [(ImageFormat::Png, Format::Png), (ImageFormat::WebP, Format::WebP), (ImageFormat::Gif, Format::Gif)]
    {
        let bytes = encode(&image, format);
        for keep in [bytes.len() / 3, bytes.len() / 2, bytes.len() * 3 / 4] {
            let result = images::decode(&bytes[..keep], &UploadLimits::default());
            assert!(
                matches!(result, Err(UploadError::Corrupt { format, .. }) if format == expected),
                "{expected} cut to {keep} of {} bytes: {:?}",
                bytes.len(),
                result.map(|decoded| decoded.info)
            );
        }
    }
}

#[test]
fn other_image_formats_are_refused_by_name() {
    let image = DynamicImage::new_rgb8(4, 4);
    // Headers of formats whose decoders are not compiled in.
    let bmp = [b"BM".as_slice(), &[0; 52]].concat();
    let tiff = [b"II*\0".as_slice(), &[0; 12]].concat();
    for (bytes, name) in [(bmp, "BMP"), (tiff, "TIFF")] {
        let result = images::decode(&bytes, &UploadLimits::default());
        assert!(matches!(&result, Err(UploadError::UnsupportedFormat(found)) if found == name), "{name}: {result:?}");
    }
    assert!(images::decode(&encode(&image, ImageFormat::Png), &UploadLimits::default()).is_ok());
}

#[test]
fn png_jpeg_webp_and_gif_are_accepted() {
    let image = DynamicImage::ImageRgb8(RgbImage::from_fn(40, 30, |x, y| image::Rgb([x as u8 * 6, y as u8 * 8, 128])));
    for (format, expected) in [
        (ImageFormat::Png, Format::Png),
        (ImageFormat::Jpeg, Format::Jpeg),
        (ImageFormat::WebP, Format::WebP),
        (ImageFormat::Gif, Format::Gif),
    ] {
        let bytes = encode(&image, format);
        let decoded = images::decode(&bytes, &UploadLimits::default()).expect("accepted");
        assert_eq!((decoded.info.format, decoded.info.width, decoded.info.height), (expected, 40, 30));
        assert_eq!((decoded.image.width(), decoded.image.height()), (40, 30));
    }
}

#[test]
fn a_file_over_the_byte_limit_is_refused() {
    let limits = UploadLimits { max_bytes: 1_000, ..UploadLimits::default() };
    let cat = images::sample("cat").expect("a sample").bytes;
    let result = images::decode(cat, &limits);
    assert!(matches!(result, Err(UploadError::TooLarge { max: 1_000, .. })), "{result:?}");
    assert_eq!(UploadLimits::default().max_bytes, 10 * 1024 * 1024);
}

#[test]
fn every_sample_is_listed_decodes_and_path_like_ids_are_refused() {
    let ids: Vec<&str> = SAMPLES.iter().map(|sample| sample.id).collect();
    assert_eq!(ids, ["cat", "coffee", "rocket", "motorcycle"]);
    for sample in SAMPLES {
        assert!(sample.decode().is_ok(), "{}", sample.id);
    }
    for id in ["../etc/passwd", "/etc/passwd", "cat.jpg", "assets/cat.jpg", "..", "cat%2F..", "Cat"] {
        assert!(matches!(images::sample(id), Err(UploadError::UnknownSample(_))), "{id}");
    }
}

#[test]
fn a_lazy_catalogue_lists_and_checks_models_without_loading_any() {
    let models = Models::lazy(&classifier::Engine::Tract).expect("the catalogue");
    let ids: Vec<&str> = models.list().map(|info| info.id).collect();
    assert_eq!(ids, MODEL_IDS);
    assert!(models.get("efficientnet-lite1").is_some());
    assert!(models.get("resnet").is_none());
    assert!(models.loaded().is_empty(), "listing and checking ids loads nothing");
    assert!(models.classify("resnet", &sample_image("cat")).is_err(), "an unknown model is refused");
    assert!(models.loaded().is_empty(), "refusing an unknown model loads nothing");
}

#[test]
fn a_model_is_loaded_by_its_first_classification_and_only_that_one() {
    let models = Models::lazy(&classifier::Engine::Tract).expect("the catalogue");
    let first = models.classify("efficientnet-lite0", &sample_image("cat")).expect("classification succeeds");
    assert_eq!(models.loaded(), ["efficientnet-lite0"]);
    let again = models.classify("efficientnet-lite0", &sample_image("cat")).expect("classification succeeds");
    assert_eq!(first, again, "the loaded model is reused");
    assert_eq!(first, classify("efficientnet-lite0", "cat"), "same answer as an eagerly loaded model");
    models.load_all().expect("the rest loads");
    assert_eq!(models.loaded(), MODEL_IDS);
}
