//! Published by the projects service, keyed by the project's id.

use chrono::{DateTime, Utc};
use kit::events::Event;
use serde::{Deserialize, Serialize};

/// A project was proposed: published in the proposal's transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectProposed {
    /// The new project's id.
    pub project_id: i64,
    /// Its name.
    pub project_name: String,
    /// Its one-line pitch.
    pub tagline: String,
    /// Its tags, in the order given.
    pub tags: Vec<String>,
    /// The proposing user's id.
    pub author: String,
    /// The proposing user's display name.
    pub author_name: String,
    /// When it was proposed.
    pub proposed_at: DateTime<Utc>,
}

impl Event for ProjectProposed {
    const TOPIC: &'static str = "project.proposed";
    const VERSION: u32 = 1;
}

/// A project's tags changed: published in the change's transaction, with the tags as
/// they are after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectChanged {
    /// The project's id.
    pub project_id: i64,
    /// All of its tags now.
    pub tags: Vec<String>,
    /// When they changed.
    pub changed_at: DateTime<Utc>,
}

impl Event for ProjectChanged {
    const TOPIC: &'static str = "project.changed";
    const VERSION: u32 = 1;
}
