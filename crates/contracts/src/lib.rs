//! The event contracts: what goes over the event bus, as `crates/proto` is for gRPC.
//!
//! One module per publishing service, one type per topic. Services depend on this crate,
//! never on each other. A contract changes only additively (a new optional field, with
//! [`kit::events::Event::VERSION`] raised); anything else is a new topic
//! (`project.proposed.v2`), published beside the old one until its consumers have moved.

pub mod media;
pub mod projects;

use kit::events::Event;

/// Every declared topic: the bus refuses to publish any other, and a subscription whose
/// pattern matches none of them.
pub const TOPICS: &[&str] = &[
    projects::ProjectProposed::TOPIC,
    projects::ProjectChanged::TOPIC,
    media::Mp3Ready::TOPIC,
    media::ConversionFailed::TOPIC,
];
