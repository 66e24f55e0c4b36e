//! System tests: real services on real sockets, talking as in production.
//! One test binary (faster to link), one module per concern.

mod classify;
mod crowdfunding;
mod events;
mod gateway;
mod media;
mod outage;
mod pages;
mod readme;
mod resilience;
mod security;
mod startup;
mod streams;
mod support;
mod system;
mod up;
mod upstream;
mod wire;
