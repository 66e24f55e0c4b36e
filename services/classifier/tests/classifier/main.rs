//! The classifier's tests: one test binary (faster to link), one module per concern.

mod api;
mod model;
// ONNX Runtime's tests need ORT_DYLIB_PATH: built only with the feature.
#[cfg(feature = "ort")]
mod ort;
