//! Per-image latency of both models: `cargo run --release -p classifier --example latency [-- RUNS]`.
//!
//! For every model it prints the load time (parse + optimise), then, over RUNS (default 50) timed runs
//! after 5 warm-ups per sample, the p50 / p99 / max of inference alone (the input tensor prepared
//! beforehand, as in the onnxruntime figures of `assets/NOTICE.md`) and of the whole path a job takes
//! (decode + preprocess + inference + softmax). Single-threaded, as the service runs it.

use std::error::Error;
use std::time::{Duration, Instant};

use classifier::images::{self, UploadLimits, SAMPLES};
use classifier::model::Models;
use classifier::preprocess::preprocess;

const WARM_UP: usize = 5;

fn main() -> Result<(), Box<dyn Error>> {
    let runs: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse().map_err(|_| format!("RUNS must be a positive number, not {arg:?}"))?,
        None => 50,
    };
    let started = Instant::now();
    let models = Models::load()?;
    println!("loaded {} models in {:.0} ms", models.list().count(), ms(started.elapsed()));

    let decoded = SAMPLES
        .iter()
        .map(|sample| Ok((sample.id, images::decode(sample.bytes, &UploadLimits::default())?.image)))
        .collect::<Result<Vec<_>, images::UploadError>>()?;
    let inputs: Vec<_> = decoded.iter().map(|(id, image)| (*id, preprocess(image))).collect();

    println!("\n{runs} runs per image after {WARM_UP} warm-ups, ms");
    println!(
        "{:<20} {:<11} {:>24}   {:>24}",
        "model", "image", "inference p50 / p99 / max", "end-to-end p50 / p99 / max"
    );
    for info in models.list() {
        let mut all_inference = Vec::new();
        let mut all_end_to_end = Vec::new();
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
                let image = images::decode(sample.bytes, &UploadLimits::default())?.image;
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
            all_inference.extend(inference);
            all_end_to_end.extend(end_to_end);
        }
        println!(
            "{:<20} {:<11} {:>26}   {:>26}",
            info.id,
            "all",
            summary(&mut all_inference),
            summary(&mut all_end_to_end)
        );
    }
    Ok(())
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// `p50 / p99 / max` in milliseconds (nearest-rank percentiles).
fn summary(samples: &mut [Duration]) -> String {
    if samples.is_empty() {
        return "-".to_owned();
    }
    samples.sort();
    let rank = |p: f64| samples[((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1];
    format!("{:.1} / {:.1} / {:.1}", ms(rank(0.50)), ms(rank(0.99)), ms(samples[samples.len() - 1]))
}
