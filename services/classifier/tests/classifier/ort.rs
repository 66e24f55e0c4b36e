//! The ONNX Runtime engine (`--features ort`) against the same checks as tract's (`tests/classifier/model.rs`), and
//! against tract itself: same preprocessing, same embedded models, so the same answers.
//!
//! These tests need `ORT_DYLIB_PATH` (the path of libonnxruntime.so; `bench/ort-library.sh` installs the
//! PyPI wheel and prints it). Without it they fail: a build with the feature that cannot test it is a
//! broken setup, not something to skip. Built only with the feature (`required-features` in Cargo.toml).

use std::path::PathBuf;
use std::sync::OnceLock;

use classifier::engine::{Engine, OrtOptions};
use classifier::images::{self, UploadLimits, SAMPLES};
use classifier::model::{Models, Prediction};
use classifier::preprocess::preprocess;

const MODEL_IDS: [&str; 2] = ["efficientnet-lite0", "efficientnet-lite1"];
/// Largest difference allowed between tract's and ONNX Runtime's probability at each top-5 rank: both
/// run the same graph on the same tensor, so only float summation order differs (~1e-6 in practice).
const SCORE_TOLERANCE: f32 = 1e-4;

fn library() -> PathBuf {
    match std::env::var_os("ORT_DYLIB_PATH") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => panic!(
            "ORT_DYLIB_PATH is not set: the `ort` feature's tests need the path of libonnxruntime.so \
             (run bench/ort-library.sh, which installs the PyPI onnxruntime wheel and prints it)"
        ),
    }
}

fn ort_models() -> &'static Models {
    static MODELS: OnceLock<Models> = OnceLock::new();
    MODELS.get_or_init(|| {
        let engine = Engine::Ort(OrtOptions { library: library(), intra_threads: 1 });
        Models::load_with(&engine).unwrap_or_else(|error| panic!("{error}"))
    })
}

fn tract_models() -> &'static Models {
    static MODELS: OnceLock<Models> = OnceLock::new();
    MODELS.get_or_init(|| Models::load().expect("the embedded models load in tract"))
}

fn sample_image(id: &str) -> image::DynamicImage {
    let sample = images::sample(id).expect("a bundled sample");
    images::decode(sample.bytes, &UploadLimits::default()).expect("the sample decodes").image
}

fn assert_top1_in(sample: &str, accepted: &[usize]) {
    for model in MODEL_IDS {
        let predictions = ort_models().classify(model, &sample_image(sample)).expect("classification succeeds");
        assert!(
            accepted.contains(&predictions[0].class_index),
            "{model} on {sample} with ONNX Runtime: top-1 {:?}, expected one of {accepted:?}; all: {predictions:?}",
            predictions[0]
        );
    }
}

#[test]
fn onnx_runtime_runs_the_models() {
    assert_eq!(ort_models().engine(), "ort");
    assert_eq!(ort_models().list().map(|info| info.id).collect::<Vec<_>>(), MODEL_IDS);
}

#[test]
fn the_cat_is_recognised_as_a_cat_by_both_models_on_onnx_runtime() {
    assert_top1_in("cat", &[281, 282, 283, 284, 285]);
}

#[test]
fn the_coffee_is_recognised_as_espresso_a_cup_or_a_mug_by_both_models_on_onnx_runtime() {
    assert_top1_in("coffee", &[967, 968, 504]);
}

#[test]
fn tract_and_onnx_runtime_agree_on_every_sample() {
    let mut largest = 0.0f32;
    for model in MODEL_IDS {
        for sample in SAMPLES {
            let input = preprocess(&sample_image(sample.id));
            let tract = tract_models().classify_preprocessed(model, input.clone()).expect("tract classifies");
            let ort = ort_models().classify_preprocessed(model, input).expect("ONNX Runtime classifies");
            let context = format!("{model} on {}: tract {tract:?}, ONNX Runtime {ort:?}", sample.id);
            assert_eq!(tract[0].class_index, ort[0].class_index, "top-1 differs: {context}");
            assert_eq!(ort.len(), 5, "{context}");
            for (ours, theirs) in tract.iter().zip(&ort) {
                let difference = (ours.score - theirs.score).abs();
                largest = largest.max(difference);
                assert!(difference < SCORE_TOLERANCE, "scores differ by {difference}: {context}");
            }
        }
    }
    println!("largest top-5 probability difference, tract vs ONNX Runtime: {largest:e}");
}

#[test]
fn concurrent_inferences_on_one_model_give_the_same_answer() {
    let image = sample_image("coffee");
    let expected = ort_models().classify(MODEL_IDS[0], &image).expect("classifies");
    let results: Vec<Vec<Prediction>> = std::thread::scope(|scope| {
        let handles: Vec<_> =
            (0..4).map(|_| scope.spawn(|| ort_models().classify(MODEL_IDS[0], &image).expect("classifies"))).collect();
        handles.into_iter().map(|handle| handle.join().expect("no panic")).collect()
    });
    for result in results {
        assert_eq!(result, expected);
    }
}

#[test]
fn a_second_different_library_in_the_same_process_is_refused() {
    ort_models();
    let other = Engine::Ort(OrtOptions { library: "/tmp/another/libonnxruntime.so".into(), intra_threads: 1 });
    let error = Models::load_with(&other).expect_err("refused").to_string();
    assert!(error.contains("ORT_DYLIB_PATH=/tmp/another/libonnxruntime.so"), "{error}");
    assert!(error.contains("already loaded"), "{error}");
}

/// The whole path with `CLASSIFIER_ENGINE=ort` read from the environment: the API enqueues, a worker running
/// ONNX Runtime takes the job from the embedded queue and finishes it with the cat on top.
#[tokio::test]
async fn a_worker_configured_for_ort_classifies_a_queued_sample() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut config = classifier::Config::for_tests(dir.path(), None);
    let library = library().to_string_lossy().into_owned();
    let env = kit::config::Env::new(vec![
        ("CLASSIFIER_ENGINE".to_owned(), "ort".to_owned()),
        ("ORT_DYLIB_PATH".to_owned(), library),
    ]);
    config.engine = Engine::from_env(&env).expect("a valid engine configuration");
    let shutdown = kit::Shutdown::new();
    let started = classifier::start(config.clone(), shutdown.clone()).await.expect("the classifier starts");
    let worker = tokio::spawn(classifier::run_worker(config, shutdown.clone()));

    let url = started.url();
    let response = reqwest::Client::new()
        .post(format!("{url}/classifications"))
        .json(&serde_json::json!({"model_id": "efficientnet-lite1", "image_id": "cat"}))
        .send()
        .await
        .expect("the request is answered");
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().expect("an ASCII location").to_owned();
    let done = kit::test_support::eventually("the job to finish", std::time::Duration::from_secs(60), || async {
        let body: serde_json::Value = reqwest::get(format!("{url}{location}")).await.ok()?.json().await.ok()?;
        matches!(body["task_status"].as_str(), Some("finished" | "failed")).then_some(body)
    })
    .await;
    shutdown.cancel();
    assert_eq!(done["task_status"], "finished", "{done}");
    assert_eq!(done["data"][0][0], "Egyptian cat", "{done}");
    let stopped = worker.await.expect("the worker task does not panic");
    assert!(stopped.is_ok(), "{stopped:?}");
}
