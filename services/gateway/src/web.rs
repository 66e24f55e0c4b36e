//! The gateway's own web UI: server-rendered pages, the account forms and the API docs.

pub mod account;
pub mod docs;
pub mod pages;
