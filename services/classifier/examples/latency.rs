//! Per-image latency of both models, per engine:
//! `cargo run --release -p classifier --example latency [-- RUNS]`.
//!
//! For every engine and model it prints the load time (parse + optimise), then, over RUNS (default 50)
//! timed runs after 5 warm-ups per sample, the p50 / p99 / max of inference alone (the input tensor
//! prepared beforehand, as in the onnxruntime figures of `assets/NOTICE.md`) and of the whole path a job
//! takes (decode + preprocess + inference + softmax). Single-threaded, as the service runs it.
//!
//! The engine is tract; built with `--features ort` it measures ONNX Runtime on the same images too
//! (library from `ORT_DYLIB_PATH`, intra-op threads from `CLASSIFIER_ORT_THREADS`, default 1; see
//! `bench/ort-library.sh`) and ends with the tract / ONNX Runtime ratio of the p50s.

use std::error::Error;
use std::time::{Duration, Instant};

use classifier::engine::Engine;
use classifier::images::{self, UploadLimits, SAMPLES};
use classifier::model::Models;
use classifier::preprocess::preprocess;
use image::DynamicImage;
use tract_onnx::prelude::tract_ndarray::Array4;

const WARM_UP: usize = 5;

/// One engine × model: every timed run over all samples.
struct Measured {
    engine: &'static str,
    model: &'static str,
    inference: Vec<Duration>,
    end_to_end: Vec<Duration>,
}

fn main() -> Result<(), Box<dyn Error>> {
    let runs: usize = match std::env::args().nth(1) {
        Some(arg) => {
            arg.parse().ok().filter(|&runs| runs > 0).ok_or(format!("RUNS must be a positive number, not {arg:?}"))?
        }
        None => 50,
    };
    let mut engines = vec![Engine::Tract];
    if cfg!(feature = "ort") {
        // The same variables as the service; CLASSIFIER_ENGINE is implied.
        let env = kit::config::Env::new(vec![
            ("CLASSIFIER_ENGINE".to_owned(), "ort".to_owned()),
            ("ORT_DYLIB_PATH".to_owned(), std::env::var("ORT_DYLIB_PATH").unwrap_or_default()),
            ("CLASSIFIER_ORT_THREADS".to_owned(), std::env::var("CLASSIFIER_ORT_THREADS").unwrap_or_default()),
        ]);
        engines.push(Engine::from_env(&env)?);
    }

    let decoded = SAMPLES
        .iter()
        .map(|sample| Ok((sample.id, images::decode(sample.bytes, &UploadLimits::default())?.image)))
        .collect::<Result<Vec<_>, images::UploadError>>()?;
    let inputs: Vec<_> = decoded.iter().map(|(id, image)| (*id, preprocess(image))).collect();

    let mut measured = Vec::new();
    for engine in &engines {
        measured.extend(measure(engine, &inputs, runs)?);
    }

    if engines.len() > 1 {
        println!("\ntract / ort, inference alone over all images");
        let percentiles: Vec<_> = measured.iter_mut().map(|m| (m.engine, m.model, p(&mut m.inference))).collect();
        for (_, model, tract) in percentiles.iter().filter(|(engine, ..)| *engine == "tract") {
            let ort = percentiles.iter().find(|(engine, other, _)| *engine == "ort" && other == model);
            if let Some((_, _, ort)) = ort {
                println!(
                    "{model:<20} p50 {:.1} / {:.1} ms = {:.1}×   p99 {:.1} / {:.1} ms = {:.1}×",
                    ms(tract.0),
                    ms(ort.0),
                    ms(tract.0) / ms(ort.0),
                    ms(tract.1),
                    ms(ort.1),
                    ms(tract.1) / ms(ort.1)
                );
            }
        }
    }
    Ok(())
}

/// Loads both models into `engine` and times them on every sample.
fn measure(engine: &Engine, inputs: &[(&str, Array4<f32>)], runs: usize) -> Result<Vec<Measured>, Box<dyn Error>> {
    let started = Instant::now();
    let models = Models::load_with(engine)?;
    println!("\n{engine}: loaded {} models in {:.0} ms", models.list().count(), ms(started.elapsed()));
    println!("{runs} runs per image after {WARM_UP} warm-ups, ms");
    println!(
        "{:<20} {:<11} {:>26}   {:>26}",
        "model", "image", "inference p50 / p99 / max", "end-to-end p50 / p99 / max"
    );
    let mut measured = Vec::new();
    for info in models.list() {
        let mut all = Measured { engine: engine.id(), model: info.id, inference: Vec::new(), end_to_end: Vec::new() };
        for ((id, input), sample) in inputs.iter().zip(SAMPLES) {
            let mut top1 = String::new();
            for _ in 0..WARM_UP {
                let predictions = models.classify_preprocessed(info.id, input.clone())?;
                if let Some(best) = predictions.first() {
                    top1 = format!("{} {} {:.3}", best.class_index, best.label, best.score);
                }
            }
            let mut inference = Vec::with_capacity(runs);
            for _ in 0..runs {
                let input = input.clone();
                let started = Instant::now();
                models.classify_preprocessed(info.id, input)?;
                inference.push(started.elapsed());
            }
            let mut end_to_end = Vec::with_capacity(runs);
            for _ in 0..runs {
                let started = Instant::now();
                let image: DynamicImage = images::decode(sample.bytes, &UploadLimits::default())?.image;
                models.classify(info.id, &image)?;
                end_to_end.push(started.elapsed());
            }
            println!(
                "{:<20} {:<11} {:>26}   {:>26}   {top1}",
                info.id,
                id,
                summary(&mut inference),
                summary(&mut end_to_end)
            );
            all.inference.extend(inference);
            all.end_to_end.extend(end_to_end);
        }
        println!(
            "{:<20} {:<11} {:>26}   {:>26}",
            info.id,
            "all",
            summary(&mut all.inference),
            summary(&mut all.end_to_end)
        );
        measured.push(all);
    }
    Ok(measured)
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// Nearest-rank p50 and p99 (of at least one sample: RUNS is positive).
fn p(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let rank = |p: f64| samples[((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1];
    (rank(0.50), rank(0.99))
}

/// `p50 / p99 / max` in milliseconds (nearest-rank percentiles).
fn summary(samples: &mut [Duration]) -> String {
    if samples.is_empty() {
        return "-".to_owned();
    }
    let (p50, p99) = p(samples);
    format!("{:.1} / {:.1} / {:.1}", ms(p50), ms(p99), ms(samples[samples.len() - 1]))
}
