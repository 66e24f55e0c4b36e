//! gRPC serving (tonic) with the same guarantees as HTTP: graceful shutdown,
//! registration, `grpc.health.v1`, server reflection, per-RPC metrics, the
//! request context carried across hops, and TLS (rustls) between services.
//! Also the client side: [`GrpcPeer`], the resilient [`crate::peer::Peer`]
//! with a channel per discovered instance, and how a [`tonic::Status`] counts for it.
//!
//! - [`server`]: [`start_grpc`] and the [`GrpcServices`] it serves.
//! - [`tls`]: [`GrpcTls`], both sides' certificates from the environment.
//! - [`layers`]: the tower layers every server runs (request context, metrics).
//! - [`client`]: channels, [`GrpcPeer`], context propagation, [`attempt_error`].

pub mod client;
pub mod layers;
pub mod server;
pub mod tls;

pub use client::{attempt_error, channel, propagate_context, GrpcError, GrpcPeer, PeerChannel, Propagate};
pub use layers::{ContextLayer, ContextService, MetricsLayer, MetricsService, ObservedBody};
pub use server::{bind, start_grpc, GrpcServices};
pub use tls::{GrpcTls, DEFAULT_TLS_DOMAIN};
