//! The registry's tests: one test binary (faster to link), one module per concern.

mod register;
mod watch;
