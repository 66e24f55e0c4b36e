//! ONNX Runtime through the `ort` crate, for `CLASSIFIER_ENGINE=ort`.
//!
//! The library is opened once per process from `ORT_DYLIB_PATH` (`load-dynamic`: nothing is linked at build
//! time and nothing is downloaded). Sessions are built from the same embedded bytes as tract's models, and
//! the input is the same preprocessed tensor, passed without a copy.
//!
//! `ort`'s `Session::run` takes `&mut self`, while `Models` is shared by every job of a worker. Rather than
//! a lock held during inference (which would serialise concurrent jobs), each model keeps a small pool of
//! sessions: a job takes an idle one, or builds one when all are busy, and gives it back. The pool grows to
//! the worker's concurrency and no further.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use ort::environment::Environment;
use ort::session::Session;
use ort::value::TensorRef;
use tract_onnx::prelude::tract_ndarray::Array4;

use super::{EngineError, OrtOptions};
use crate::model::ModelError;

/// The library this process loaded and its environment, kept for the process's life: `ort` allows one
/// library and one environment per process, ever, so every load after the first shares them, and a second,
/// different path is an error rather than silently ignored.
static LOADED: Mutex<Option<(PathBuf, Environment)>> = Mutex::new(None);

/// One model's ONNX Runtime sessions.
pub(crate) struct Sessions {
    bytes: &'static [u8],
    environment: Environment,
    intra_threads: usize,
    idle: Mutex<Vec<Session>>,
}

impl Sessions {
    /// Opens the library (once per process) and builds a first session, which checks the model.
    pub(crate) fn load(options: &OrtOptions, model: &'static str, bytes: &'static [u8]) -> Result<Self, ModelError> {
        let environment = environment(&options.library)?;
        let sessions = Self { bytes, environment, intra_threads: options.intra_threads, idle: Mutex::new(Vec::new()) };
        let first = sessions.new_session().map_err(|source| ModelError::Load { model, source })?;
        sessions.give_back(first);
        Ok(sessions)
    }

    /// The model's logits for one preprocessed input, on an idle session (or a new one if all are busy).
    pub(crate) fn logits(&self, input: Array4<f32>) -> Result<Vec<f32>, EngineError> {
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let mut session = match idle {
            Some(session) => session,
            None => self.new_session()?,
        };
        let result = run(&mut session, &input);
        // A failed run leaves the session usable (ONNX Runtime keeps no state between runs).
        self.give_back(session);
        result
    }

    fn new_session(&self) -> Result<Session, EngineError> {
        let mut builder = Session::builder(&self.environment)?
            .with_intra_threads(self.intra_threads)
            .map_err(Into::<ort::Error>::into)?
            .with_inter_threads(1)
            .map_err(Into::<ort::Error>::into)?
            // Spinning idle intra-op threads would take CPU from the other jobs on this worker's cores.
            .with_intra_op_spinning(false)
            .map_err(Into::<ort::Error>::into)?;
        Ok(builder.commit_from_memory(self.bytes)?)
    }

    fn give_back(&self, session: Session) {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).push(session);
    }
}

fn run(session: &mut Session, input: &Array4<f32>) -> Result<Vec<f32>, EngineError> {
    let input = input.as_standard_layout();
    let data = input.as_slice().ok_or("the input tensor is not contiguous")?;
    let tensor = TensorRef::from_array_view((input.shape().to_vec(), data))?;
    let outputs = session.run(ort::inputs![tensor])?;
    let output = outputs.values().next().ok_or("the model returned no output")?;
    let (_, logits) = output.try_extract_tensor::<f32>()?;
    Ok(logits.to_vec())
}

/// The process's ONNX Runtime environment on the library at `library`, which is opened on the first call.
fn environment(library: &Path) -> Result<Environment, ModelError> {
    let fail = |reason: String| ModelError::OrtLibrary { path: library.to_path_buf(), reason };
    // `ort` would look for a relative path beside the executable first; the working directory is what a
    // user means.
    let absolute = std::path::absolute(library).map_err(|e| fail(e.to_string()))?;
    let mut loaded = LOADED.lock().unwrap_or_else(PoisonError::into_inner);
    match &*loaded {
        Some((first, environment)) if *first == absolute => Ok(environment.clone()),
        Some((first, _)) => {
            Err(fail(format!("ONNX Runtime is already loaded from {} in this process", first.display())))
        }
        None => {
            if !absolute.is_file() {
                return Err(fail("no such file".to_owned()));
            }
            let builder = ort::init_from(&absolute).map_err(|e| fail(e.to_string()))?;
            let environment = builder.with_name("agora-classifier").build().map_err(|e| fail(e.to_string()))?;
            *loaded = Some((absolute, environment.clone()));
            Ok(environment)
        }
    }
}
