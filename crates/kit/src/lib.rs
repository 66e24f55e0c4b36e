//! The kit: Agora's platform library (the seed's `pylib`, grown up).
//!
//! Everything two services need lives here, so a service crate holds only its
//! own domain: typed configuration, HTTP/gRPC serving with graceful shutdown,
//! health and metrics, request context propagation, problem+json errors,
//! databases with retrying connects and migrations, registry client and
//! discovery, and the resilient peer client.
//!
//! # Features
//!
//! A service enables the features it uses in its `Cargo.toml` and links only
//! those; none is on by default. Always there: `config`, `context`, `problem`,
//! `http`, `service`, `shutdown`, `telemetry`, `metrics`, `backoff`,
//! `circuit_breaker`, `registry_client`, `discovery`, `peer` and `outage` (what
//! every service, the registry and the gateway need; `outage` is the gate that
//! makes a backend's outage a quick 503).
//!
//! - `db`: `kit::db` — SQLite/PostgreSQL pools with retrying connects and
//!   migrations, `Dialect`, `with_engine!`, `service::with_database` (sqlx).
//! - `queue`: `kit::queue` — the job queue and its workers, on SQLite or
//!   Redis; implies `db` (sqlx, redis).
//! - `grpc`: `kit::grpc` — gRPC serving with health and reflection, TLS, and
//!   `GrpcPeer`, the resilient gRPC client (tonic).
//! - `auth`: `kit::auth` — verifying the auth service's bearer tokens, the
//!   `Claims` extractor (jsonwebtoken).
//! - `ratelimit`: `kit::ratelimit` — token buckets in memory or in Redis (redis).
//! - `events`: `kit::events` — publish/subscribe on embedded SQLite or
//!   RabbitMQ, and the transactional outbox; implies `db` (lapin).
//! - `test-support`: `kit::test_support` — helpers for tests; its database
//!   parts come with `db`, its token issuer with `auth`.

#[cfg(feature = "auth")]
pub mod auth;
pub mod backoff;
pub mod circuit_breaker;
pub mod config;
pub mod context;
#[cfg(feature = "db")]
pub mod db;
pub mod discovery;
#[cfg(feature = "events")]
pub mod events;
#[cfg(feature = "grpc")]
pub mod grpc;
pub mod http;
pub mod json_body;
pub mod metrics;
pub mod openapi;
pub mod outage;
pub mod peer;
pub mod problem;
#[cfg(feature = "queue")]
pub mod queue;
#[cfg(feature = "ratelimit")]
pub mod ratelimit;
pub mod registry_client;
pub mod service;
pub mod shutdown;
pub mod telemetry;

#[cfg(feature = "test-support")]
pub mod test_support;

pub use problem::Problem;
pub use shutdown::Shutdown;
