//! Which inference library runs the models: tract (pure Rust, the default) or ONNX Runtime (the `ort`
//! cargo feature), behind one small interface.
//!
//! Both engines take the same embedded ONNX bytes and the same preprocessed `[1, 3, 224, 224]` input
//! ([`crate::preprocess`]) and return the 1000 logits; softmax and top-5 are shared in [`crate::model`], so
//! switching engines changes speed, not the pipeline. ONNX Runtime is about 5× faster here (~3 ms instead of
//! ~15–26 ms per image), but it is a C++ library opened at run time (`ORT_DYLIB_PATH`, from the PyPI
//! `onnxruntime` wheel): it is opt-in and nothing is ever downloaded, at build or at run time.
//!
//! ```text
//! CLASSIFIER_ENGINE       tract (default) | ort
//! ORT_DYLIB_PATH          with ort: the path of libonnxruntime.so (required)
//! CLASSIFIER_ORT_THREADS  with ort: intra-op threads per inference (default 1)
//! ```

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use kit::config::{ConfigError, Env, Source};
use tract_onnx::prelude::tract_ndarray::Array4;
use tract_onnx::prelude::{
    tvec, Datum, Framework, InferenceFact, InferenceModelExt, IntoRunnable, IntoTensor, TractError, TypedRunnableModel,
};

use crate::model::ModelError;
use crate::preprocess::INPUT_SIZE;

#[cfg(feature = "ort")]
mod onnxruntime;

/// The variable that chooses the engine.
pub const ENGINE_VAR: &str = "CLASSIFIER_ENGINE";
/// The variable ONNX Runtime's library path is read from (the name the `ort` crate documents too).
pub const ORT_DYLIB_PATH_VAR: &str = "ORT_DYLIB_PATH";
/// The variable for ONNX Runtime's intra-op threads per inference.
pub const ORT_THREADS_VAR: &str = "CLASSIFIER_ORT_THREADS";

/// What to do when `ort` is asked for in a build without the feature.
pub const ORT_FEATURE_HINT: &str =
    "build with the `ort` feature (`cargo build --release -p agora --features classifier/ort`)";

/// An inference library's own error, whichever library it comes from.
pub type EngineError = Box<dyn std::error::Error + Send + Sync>;

/// Which engine runs the models, with its settings; parsed once from the environment ([`Engine::from_env`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Engine {
    /// tract-onnx: pure Rust, nothing to install, single-threaded per inference. The default.
    #[default]
    Tract,
    /// ONNX Runtime through the `ort` crate; only usable in a build with the `ort` feature.
    Ort(OrtOptions),
}

/// How ONNX Runtime is loaded and run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrtOptions {
    /// `libonnxruntime.so` (`ORT_DYLIB_PATH`), opened once per process; version 1.17 or newer.
    pub library: PathBuf,
    /// Intra-op threads per inference (`CLASSIFIER_ORT_THREADS`, default 1).
    ///
    /// One, like tract: throughput comes from running several jobs at once (worker processes and
    /// `CLASSIFIER_WORKER_CONCURRENCY`), each on one core. More threads per inference lower one image's
    /// latency but make concurrent inferences fight over the same cores (2 on this machine).
    pub intra_threads: usize,
}

/// The value of `CLASSIFIER_ENGINE`, before the engine's own settings are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EngineKind {
    Tract,
    Ort,
}

impl FromStr for EngineKind {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.to_ascii_lowercase().as_str() {
            "tract" => Ok(Self::Tract),
            "ort" if cfg!(feature = "ort") => Ok(Self::Ort),
            "ort" => Err(format!("this build has no ONNX Runtime support; {ORT_FEATURE_HINT}")),
            _ => Err("expected `tract` or `ort`".to_owned()),
        }
    }
}

impl Engine {
    /// Reads `CLASSIFIER_ENGINE` and, for `ort`, `ORT_DYLIB_PATH` and `CLASSIFIER_ORT_THREADS`.
    ///
    /// `ort` in a build without the feature, or without a library path, is an error naming the variable:
    /// a worker should not quietly fall back to the 5× slower engine it was told not to use.
    pub fn from_env<S: Source>(env: &Env<S>) -> Result<Self, ConfigError> {
        match env.parse_or(ENGINE_VAR, EngineKind::Tract)? {
            EngineKind::Tract => Ok(Self::Tract),
            EngineKind::Ort => Ok(Self::Ort(OrtOptions {
                library: PathBuf::from(env.required(
                    ORT_DYLIB_PATH_VAR,
                    "CLASSIFIER_ENGINE=ort needs the path of libonnxruntime.so, e.g. from the PyPI onnxruntime \
                     wheel (bench/ort-library.sh prints it)",
                )?),
                intra_threads: env.parse_or(ORT_THREADS_VAR, 1usize)?.max(1),
            })),
        }
    }

    /// The engine's short name, as `CLASSIFIER_ENGINE` spells it.
    pub fn id(&self) -> &'static str {
        match self {
            Self::Tract => "tract",
            Self::Ort(_) => "ort",
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// One model loaded into one engine: ONNX bytes in, logits out.
pub(crate) enum Runner {
    Tract(Arc<TypedRunnableModel>),
    #[cfg(feature = "ort")]
    Ort(onnxruntime::Sessions),
}

impl Runner {
    /// Parses and optimises an embedded model with `engine` (a moment: call once at start-up).
    pub(crate) fn load(engine: &Engine, model: &'static str, bytes: &'static [u8]) -> Result<Self, ModelError> {
        match engine {
            Engine::Tract => {
                load_tract(bytes).map(Self::Tract).map_err(|source| ModelError::Load { model, source: source.into() })
            }
            #[cfg(feature = "ort")]
            Engine::Ort(options) => onnxruntime::Sessions::load(options, model, bytes).map(Self::Ort),
            #[cfg(not(feature = "ort"))]
            Engine::Ort(_) => Err(ModelError::OrtNotBuilt),
        }
    }

    /// The model's raw output (one logit per class) for a preprocessed input.
    pub(crate) fn logits(&self, input: Array4<f32>) -> Result<Vec<f32>, EngineError> {
        match self {
            Self::Tract(plan) => run_tract(plan, input).map_err(Into::into),
            #[cfg(feature = "ort")]
            Self::Ort(sessions) => sessions.logits(input),
        }
    }
}

/// Parses an ONNX graph, fixes its input to `[1, 3, 224, 224]` f32 and optimises it for this CPU.
fn load_tract(mut bytes: &[u8]) -> Result<Arc<TypedRunnableModel>, TractError> {
    let side = INPUT_SIZE as usize;
    tract_onnx::onnx()
        .model_for_read(&mut bytes)?
        .with_input_fact(0, InferenceFact::dt_shape(f32::datum_type(), tvec![1, 3, side, side]))?
        .into_optimized()?
        .into_runnable()
}

fn run_tract(plan: &Arc<TypedRunnableModel>, input: Array4<f32>) -> Result<Vec<f32>, TractError> {
    let outputs = plan.run(tvec![input.into_tensor().into()])?;
    let output = outputs.first().ok_or_else(|| TractError::msg("the model returned no output"))?;
    Ok(output.try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(vars: &[(&str, &str)]) -> Result<Engine, ConfigError> {
        let pairs = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        Engine::from_env(&Env::new(pairs))
    }

    #[test]
    fn tract_is_the_default_engine() {
        assert_eq!(engine(&[]), Ok(Engine::Tract));
        assert_eq!(engine(&[("CLASSIFIER_ENGINE", "tract")]), Ok(Engine::Tract));
        assert_eq!(Engine::default().to_string(), "tract");
    }

    #[test]
    fn an_unknown_engine_is_refused_by_name() {
        let error = engine(&[("CLASSIFIER_ENGINE", "onnx")]).expect_err("refused").to_string();
        assert!(error.contains("CLASSIFIER_ENGINE") && error.contains("`tract` or `ort`"), "{error}");
    }

    #[cfg(not(feature = "ort"))]
    #[test]
    fn ort_in_a_build_without_the_feature_is_a_configuration_error() {
        let error = engine(&[("CLASSIFIER_ENGINE", "ort"), ("ORT_DYLIB_PATH", "/x.so")]).expect_err("refused");
        let message = error.to_string();
        assert!(message.contains("CLASSIFIER_ENGINE") && message.contains("--features"), "{message}");
        let options = OrtOptions { library: "/x.so".into(), intra_threads: 1 };
        let error = Runner::load(&Engine::Ort(options), "efficientnet-lite0", b"").err().map(|e| e.to_string());
        assert!(error.is_some_and(|message| message.contains("--features")));
    }

    #[cfg(feature = "ort")]
    #[test]
    fn ort_needs_the_library_path_and_reads_its_thread_count() {
        let error = engine(&[("CLASSIFIER_ENGINE", "ort")]).expect_err("refused").to_string();
        assert!(error.contains("ORT_DYLIB_PATH is not set"), "{error}");
        let parsed = engine(&[("CLASSIFIER_ENGINE", "ORT"), ("ORT_DYLIB_PATH", "/x.so")]);
        assert_eq!(parsed, Ok(Engine::Ort(OrtOptions { library: "/x.so".into(), intra_threads: 1 })));
        let parsed =
            engine(&[("CLASSIFIER_ENGINE", "ort"), ("ORT_DYLIB_PATH", "/x.so"), ("CLASSIFIER_ORT_THREADS", "2")]);
        assert_eq!(parsed, Ok(Engine::Ort(OrtOptions { library: "/x.so".into(), intra_threads: 2 })));
        let error =
            engine(&[("CLASSIFIER_ENGINE", "ort"), ("ORT_DYLIB_PATH", "/x.so"), ("CLASSIFIER_ORT_THREADS", "two")])
                .expect_err("refused")
                .to_string();
        assert!(error.contains("CLASSIFIER_ORT_THREADS"), "{error}");
    }

    #[cfg(feature = "ort")]
    #[test]
    fn a_library_that_cannot_be_loaded_is_reported_with_its_variable() {
        let options = OrtOptions { library: "/nonexistent/libonnxruntime.so".into(), intra_threads: 1 };
        let error = Runner::load(&Engine::Ort(options), "efficientnet-lite0", b"").err().map(|e| e.to_string());
        let message = error.unwrap_or_default();
        assert!(message.contains("ORT_DYLIB_PATH=/nonexistent/libonnxruntime.so"), "{message}");
    }
}
