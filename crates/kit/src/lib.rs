//! The kit: Agora's platform library (the seed's `pylib`, grown up).
//!
//! Everything two services need lives here, so a service crate holds only its
//! own domain: typed configuration, HTTP/gRPC serving with graceful shutdown,
//! health and metrics, request context propagation, problem+json errors,
//! databases with retrying connects and migrations, registry client and
//! discovery, and the resilient peer client.

pub mod auth;
pub mod backoff;
pub mod circuit_breaker;
pub mod config;
pub mod context;
pub mod db;
pub mod discovery;
#[cfg(feature = "events")]
pub mod events;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod peer;
pub mod problem;
pub mod queue;
pub mod ratelimit;
pub mod registry_client;
pub mod service;
pub mod shutdown;
pub mod telemetry;

#[cfg(feature = "test-support")]
pub mod test_support;

pub use problem::Problem;
pub use shutdown::Shutdown;
