//! The models: two EfficientNet-Lite ImageNet classifiers compiled into the binary, run with tract or,
//! in a build with the `ort` feature, ONNX Runtime (see [`crate::engine`]).
//!
//! Both ONNX files and the label list are embedded with `include_bytes!`, so `agora` runs from any
//! directory and nothing is read or downloaded at run time. A graph is parsed and optimised once (a few
//! hundred milliseconds and tens of megabytes each, in release): by [`Models::load`] for every model at
//! once, or, from [`Models::lazy`], when a model is first asked to classify — so a process that only
//! lists or checks model ids (the web service) never holds one. [`Models::classify`] then takes about
//! 20 ms of one core per image with tract (~4 ms with ONNX Runtime) and is meant to run in
//! `tokio::task::spawn_blocking`. `Models` is `Send + Sync` and a clone is an `Arc` clone, so every handler
//! and worker can hold one.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

use image::DynamicImage;
use tract_onnx::prelude::tract_ndarray::Array4;

use crate::engine::{Engine, EngineError, Runner, ORT_FEATURE_HINT};
use crate::preprocess;

/// Number of ImageNet-1k classes, the length of both models' output.
pub const CLASSES: usize = 1000;
/// How many predictions [`Models::classify`] returns.
pub const TOP_K: usize = 5;
/// The model used when a client names none.
pub const DEFAULT_MODEL: &str = "efficientnet-lite0";

const LABELS: &str = include_str!("../assets/imagenet_labels.txt");

/// What the registry knows about each embedded model; `assets/NOTICE.md` says where each file comes from.
const EMBEDDED: [(ModelInfo, &[u8]); 2] = [
    (
        ModelInfo {
            id: "efficientnet-lite0",
            name: "EfficientNet-Lite0",
            description: "ImageNet-1k, 4.6 M parameters, 224 × 224: the faster one",
        },
        include_bytes!("../assets/efficientnet-lite0.onnx"),
    ),
    (
        ModelInfo {
            id: "efficientnet-lite1",
            name: "EfficientNet-Lite1",
            description: "ImageNet-1k, 5.4 M parameters, 224 × 224: a little more accurate, ~30 % slower",
        },
        include_bytes!("../assets/efficientnet-lite1.onnx"),
    ),
];

/// A model's public identity, as an API lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelInfo {
    /// Stable id used in requests, e.g. `efficientnet-lite0`.
    pub id: &'static str,
    /// Human name, e.g. `EfficientNet-Lite0`.
    pub name: &'static str,
    /// One line for people choosing between models.
    pub description: &'static str,
}

/// One of the top classes for an image.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// ImageNet-1k class index (0–999), the line of `imagenet_labels.txt`.
    pub class_index: usize,
    /// The class's label, e.g. `Egyptian cat`.
    pub label: String,
    /// Softmax probability, in [0, 1].
    pub score: f32,
}

/// The API's `[label, score]` pair (SPEC §3.6's `data`).
impl From<Prediction> for (String, f32) {
    fn from(prediction: Prediction) -> Self {
        (prediction.label, prediction.score)
    }
}

/// Why models could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The client asked for a model that does not exist; safe to report as a 404/422.
    #[error("unknown model {id:?}; known models: {known}")]
    UnknownModel { id: String, known: String },
    /// An embedded model or the label list is broken: a build problem, never the client's fault.
    #[error("the embedded model {model} is unusable")]
    Load {
        model: &'static str,
        #[source]
        source: EngineError,
    },
    /// `CLASSIFIER_ENGINE=ort` in a build without the `ort` feature.
    #[error("CLASSIFIER_ENGINE=ort: this build has no ONNX Runtime support; {ORT_FEATURE_HINT}")]
    OrtNotBuilt,
    /// The ONNX Runtime library could not be loaded: a deployment problem, so the message names the variable.
    #[error("CLASSIFIER_ENGINE=ort: cannot load ONNX Runtime from ORT_DYLIB_PATH={}: {reason}", path.display())]
    OrtLibrary { path: PathBuf, reason: String },
    /// The label list does not have one line per class.
    #[error("the embedded label list has {0} lines, expected {CLASSES}")]
    Labels(usize),
    /// Inference failed (an internal error: the input is always a valid tensor).
    #[error("inference with {model} failed")]
    Inference {
        model: &'static str,
        #[source]
        source: EngineError,
    },
}

/// The loaded models, ready to run; cheap to clone (an `Arc`) and shareable across threads.
#[derive(Clone)]
pub struct Models {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    models: Vec<Slot>,
    labels: Vec<&'static str>,
}

/// One embedded model, and its runner once something asked for it.
struct Slot {
    info: ModelInfo,
    bytes: &'static [u8],
    runner: OnceLock<Runner>,
    /// Held while the runner is being built, so that two jobs arriving together load it once.
    loading: Mutex<()>,
}

impl Slot {
    /// The runner, built (and logged) now if this is the first time it is needed.
    fn runner(&self, engine: &Engine) -> Result<&Runner, ModelError> {
        if let Some(runner) = self.runner.get() {
            return Ok(runner);
        }
        let _loading = self.loading.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(runner) = self.runner.get() {
            return Ok(runner);
        }
        let started = Instant::now();
        let runner = Runner::load(engine, self.info.id, self.bytes)?;
        tracing::info!(
            model = self.info.id,
            engine = engine.id(),
            load_ms = started.elapsed().as_millis() as u64,
            "model loaded"
        );
        Ok(self.runner.get_or_init(|| runner))
    }
}

// Handlers and workers share one `Models` across threads; keep that a compile-time guarantee.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Models>();
};

impl Models {
    /// Parses and optimises every embedded model with tract; call once at start-up (it takes a moment).
    pub fn load() -> Result<Models, ModelError> {
        Self::load_with(&Engine::Tract)
    }

    /// Loads every embedded model into `engine` (what `CLASSIFIER_ENGINE` chose); call once at start-up.
    pub fn load_with(engine: &Engine) -> Result<Models, ModelError> {
        let models = Self::lazy(engine)?;
        models.load_all()?;
        Ok(models)
    }

    /// Loads every model not loaded yet (`CLASSIFIER_PRELOAD=1`: a slower start rather than a slower first job).
    pub fn load_all(&self) -> Result<(), ModelError> {
        for slot in &self.inner.models {
            slot.runner(&self.inner.engine)?;
        }
        Ok(())
    }

    /// The embedded models with none loaded yet: each is loaded into `engine` when it is first asked to
    /// classify (and the log says so). Listing and checking ids never loads one.
    pub fn lazy(engine: &Engine) -> Result<Models, ModelError> {
        let labels: Vec<&'static str> = LABELS.lines().collect();
        if labels.len() != CLASSES {
            return Err(ModelError::Labels(labels.len()));
        }
        let models = EMBEDDED
            .iter()
            .map(|(info, bytes)| Slot { info: *info, bytes, runner: OnceLock::new(), loading: Mutex::new(()) })
            .collect();
        Ok(Models { inner: Arc::new(Inner { engine: engine.clone(), models, labels }) })
    }

    /// The engine running the models: `tract` or `ort`.
    pub fn engine(&self) -> &'static str {
        self.inner.engine.id()
    }

    /// Every model, in a stable order (the default first).
    pub fn list(&self) -> impl Iterator<Item = &ModelInfo> {
        self.inner.models.iter().map(|model| &model.info)
    }

    /// The ids of the models loaded so far, in [`Models::list`]'s order.
    pub fn loaded(&self) -> Vec<&'static str> {
        self.inner.models.iter().filter(|model| model.runner.get().is_some()).map(|model| model.info.id).collect()
    }

    /// The model with this id, if there is one.
    pub fn get(&self, id: &str) -> Option<&ModelInfo> {
        self.find(id).map(|model| &model.info)
    }

    /// The label of an ImageNet class index.
    pub fn label(&self, class_index: usize) -> Option<&'static str> {
        self.inner.labels.get(class_index).copied()
    }

    /// The top 5 classes for an image, best first: preprocessing, inference and softmax.
    ///
    /// CPU-bound (~20 ms in release with tract): call it from `spawn_blocking`, never on the async runtime.
    pub fn classify(&self, model_id: &str, image: &DynamicImage) -> Result<Vec<Prediction>, ModelError> {
        let model = self.find_or_err(model_id)?;
        self.run(model, preprocess::preprocess(image))
    }

    /// The top 5 classes for an already preprocessed `[1, 3, 224, 224]` input (see [`preprocess`]).
    pub fn classify_preprocessed(&self, model_id: &str, input: Array4<f32>) -> Result<Vec<Prediction>, ModelError> {
        let model = self.find_or_err(model_id)?;
        self.run(model, input)
    }

    fn find(&self, id: &str) -> Option<&Slot> {
        self.inner.models.iter().find(|model| model.info.id == id)
    }

    fn find_or_err(&self, id: &str) -> Result<&Slot, ModelError> {
        self.find(id).ok_or_else(|| ModelError::UnknownModel {
            id: crate::images::truncate_for_message(id),
            known: self.list().map(|info| info.id).collect::<Vec<_>>().join(", "),
        })
    }

    fn run(&self, model: &Slot, input: Array4<f32>) -> Result<Vec<Prediction>, ModelError> {
        let inference = |source| ModelError::Inference { model: model.info.id, source };
        let logits = model.runner(&self.inner.engine)?.logits(input).map_err(inference)?;
        if logits.len() != CLASSES {
            return Err(inference(format!("{} logits, expected {CLASSES}", logits.len()).into()));
        }
        Ok(top_k(&softmax(&logits), TOP_K)
            .into_iter()
            .map(|(class_index, score)| Prediction {
                class_index,
                label: self.inner.labels[class_index].to_owned(),
                score,
            })
            .collect())
    }
}

impl fmt::Debug for Models {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Models")
            .field("engine", &self.engine())
            .field("models", &self.list().map(|info| info.id).collect::<Vec<_>>())
            .finish()
    }
}

/// Softmax over logits, computed in f64 after subtracting the maximum so that it cannot overflow.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f64> = logits.iter().map(|&logit| f64::from(logit - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|&e| (e / sum) as f32).collect()
}

/// The `k` highest scores with their indices, highest first (ties keep the lower index first).
pub fn top_k(scores: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut indexed: Vec<(usize, f32)> = scores.iter().copied().enumerate().collect();
    indexed.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    indexed.truncate(k);
    indexed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_keeps_the_order() {
        let probabilities = softmax(&[1.0, 3.0, 2.0, -50.0]);
        let sum: f32 = probabilities.iter().sum();
        assert!((sum - 1.0).abs() < 1e-6);
        assert!(probabilities[1] > probabilities[2] && probabilities[2] > probabilities[0]);
        assert!((probabilities[1] - 0.665_240_9).abs() < 1e-6);
    }

    #[test]
    fn softmax_does_not_overflow_on_large_logits() {
        let probabilities = softmax(&[1000.0, 1000.0]);
        assert_eq!(probabilities, vec![0.5, 0.5]);
    }

    #[test]
    fn top_k_is_sorted_best_first() {
        assert_eq!(top_k(&[0.1, 0.5, 0.2, 0.5, 0.0], 3), vec![(1, 0.5), (3, 0.5), (2, 0.2)]);
        assert_eq!(top_k(&[0.3], 5), vec![(0, 0.3)]);
    }

    #[test]
    fn the_embedded_labels_have_one_line_per_class() {
        assert_eq!(LABELS.lines().count(), CLASSES);
        assert_eq!(LABELS.lines().nth(285), Some("Egyptian cat"));
    }

    #[test]
    fn the_default_model_is_embedded_first() {
        assert_eq!(EMBEDDED[0].0.id, DEFAULT_MODEL);
    }
}
