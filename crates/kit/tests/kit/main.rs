//! The kit against real sockets and real backends: one test binary (faster to link), one module
//! per concern.

mod auth;
mod db;
mod events;
mod grpc;
mod outage;
mod peer;
mod queue;
mod ratelimit;
mod serve;
