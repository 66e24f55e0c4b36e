//! The rules of crowdfunding projects (SPEC §3.5), with no I/O: what a valid
//! proposal, tag change, thread or vote is. Every refusal names the field at
//! fault so that the API can say exactly what to fix.

use serde::{Deserialize, Serialize};

/// Longest project name, in characters.
pub const MAX_NAME: usize = 200;
/// Longest tagline, in characters.
pub const MAX_TAGLINE: usize = 500;
/// Most tags a project may carry.
pub const MAX_TAGS: usize = 20;
/// Longest tag, in characters.
pub const MAX_TAG: usize = 50;
/// Longest thread message, in characters.
pub const MAX_MESSAGE: usize = 10_000;
/// Most problems, and most solutions, in one proposal.
pub const MAX_PROBLEMS_OR_SOLUTIONS: usize = 100;
/// Default page size of the listing.
pub const DEFAULT_PAGE: u32 = 20;
/// Largest page size of the listing.
pub const MAX_PAGE: u32 = 100;

/// A refused input: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    /// The field, e.g. `project_name` or `problems[2]`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Invalid {
    Invalid { field: field.into(), reason: reason.into() }
}

/// Checks `value` has 1..=`max` characters as sent (white space at either end counts, as in the
/// schema's maxLength) and is not blank; it is kept trimmed.
fn text(field: &str, value: &str, max: usize) -> Result<String, Invalid> {
    let chars = value.chars().count();
    if chars > max {
        return Err(invalid(field, format!("must be at most {max} characters (got {chars})")));
    }
    let value = value.trim();
    if value.is_empty() {
        return Err(invalid(field, "must not be empty or blank"));
    }
    Ok(value.to_string())
}

/// Checks tags: each 1..=50 characters as sent, not blank, kept trimmed; exact duplicates are merged.
pub fn tags(field: &str, raw: &[String]) -> Result<Vec<String>, Invalid> {
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
    for (i, tag) in raw.iter().enumerate() {
        let tag = text(&format!("{field}[{i}]"), tag, MAX_TAG)?;
        if !out.contains(&tag) {
            out.push(tag);
        }
    }
    Ok(out)
}

/// A proposal as a client sends it.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({
    "project_name": "Popee the Performer",
    "tagline": "an apprentice clown in Wolf Circus",
    "tags": ["clown", "circus"],
    "problems": ["short temper"],
    "solutions": ["play the drums"]
}))]
pub struct Proposal {
    /// 1–200 characters, not blank.
    #[schema(schema_with = schema::project_name)]
    pub project_name: String,
    /// At most 500 characters (may be empty).
    #[serde(default)]
    #[schema(max_length = 500)]
    pub tagline: String,
    /// At most 20 tags of 1–50 characters.
    #[serde(default)]
    #[schema(schema_with = schema::tags)]
    pub tags: Vec<String>,
    /// At most 100 problems of 1–10 000 characters; each becomes a PROBLEM thread.
    #[serde(default)]
    #[schema(schema_with = schema::problems)]
    pub problems: Vec<String>,
    /// At most 100 solutions of 1–10 000 characters; each becomes a SOLUTION thread.
    #[serde(default)]
    #[schema(schema_with = schema::solutions)]
    pub solutions: Vec<String>,
}

/// The OpenAPI schemas of the fields checked here, stating the rules this module applies.
pub mod schema {
    use kit::openapi::{text, texts};
    use utoipa::openapi::schema::{Array, Object};

    use super::{MAX_MESSAGE, MAX_NAME, MAX_PROBLEMS_OR_SOLUTIONS, MAX_TAG, MAX_TAGS};

    /// `project_name`.
    pub fn project_name() -> Object {
        text(MAX_NAME, "1–200 characters, not blank.")
    }

    /// A thread's `message`.
    pub fn message() -> Object {
        text(MAX_MESSAGE, "1–10 000 characters, not blank.")
    }

    /// A project's `tags`.
    pub fn tags() -> Array {
        texts(MAX_TAGS, MAX_TAG, "At most 20 tags of 1–50 characters, not blank; duplicates are merged.")
    }

    /// Tags to add or remove.
    pub fn tag_change() -> Array {
        texts(MAX_TAGS, MAX_TAG, "Tags of 1–50 characters, not blank; a project keeps at most 20.")
    }

    /// A proposal's `problems`.
    pub fn problems() -> Array {
        texts(
            MAX_PROBLEMS_OR_SOLUTIONS,
            MAX_MESSAGE,
            "At most 100 problems of 1–10 000 characters, not blank; each becomes a PROBLEM thread.",
        )
    }

    /// A proposal's `solutions`.
    pub fn solutions() -> Array {
        texts(
            MAX_PROBLEMS_OR_SOLUTIONS,
            MAX_MESSAGE,
            "At most 100 solutions of 1–10 000 characters, not blank; each becomes a SOLUTION thread.",
        )
    }
}

/// A proposal that passed every rule, trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidProposal {
    /// The project's name.
    pub project_name: String,
    /// Its tagline.
    pub tagline: String,
    /// Its tags, without duplicates.
    pub tags: Vec<String>,
    /// Its problems, in order.
    pub problems: Vec<String>,
    /// Its solutions, in order.
    pub solutions: Vec<String>,
}

fn messages(field: &str, raw: &[String]) -> Result<Vec<String>, Invalid> {
    if raw.len() > MAX_PROBLEMS_OR_SOLUTIONS {
        return Err(invalid(field, format!("at most {MAX_PROBLEMS_OR_SOLUTIONS} are allowed (got {})", raw.len())));
    }
    raw.iter().enumerate().map(|(i, m)| message(&format!("{field}[{i}]"), m)).collect()
}

/// Checks one thread message: 1–10 000 characters, not blank.
pub fn message(field: &str, raw: &str) -> Result<String, Invalid> {
    text(field, raw, MAX_MESSAGE)
}

impl Proposal {
    /// Applies every rule of SPEC §3.5, reporting the first field at fault.
    pub fn validate(&self) -> Result<ValidProposal, Invalid> {
        let project_name = text("project_name", &self.project_name, MAX_NAME)?;
        let chars = self.tagline.chars().count();
        if chars > MAX_TAGLINE {
            return Err(invalid("tagline", format!("must be at most {MAX_TAGLINE} characters (got {chars})")));
        }
        let tagline = self.tagline.trim().to_string();
        if self.tags.len() > MAX_TAGS {
            return Err(invalid("tags", format!("at most {MAX_TAGS} tags are allowed (got {})", self.tags.len())));
        }
        Ok(ValidProposal {
            project_name,
            tagline,
            tags: tags("tags", &self.tags)?,
            problems: messages("problems", &self.problems)?,
            solutions: messages("solutions", &self.solutions)?,
        })
    }
}

/// What a thread is, as the REST API spells it (seed 003's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ThreadType {
    /// A comment, or a reply.
    Comment,
    /// A solution to the project's problems.
    Solution,
    /// A problem the project addresses.
    Problem,
}

impl ThreadType {
    /// The name stored in the outbox and shown in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Comment => "COMMENT",
            Self::Solution => "SOLUTION",
            Self::Problem => "PROBLEM",
        }
    }

    /// Parses a stored name.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "COMMENT" => Some(Self::Comment),
            "SOLUTION" => Some(Self::Solution),
            "PROBLEM" => Some(Self::Problem),
            _ => None,
        }
    }
}

/// A voter's choice on a thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// An up vote.
    Up,
    /// A down vote.
    Down,
    /// No vote: withdraws an earlier one.
    None,
}

/// The listing's page size: the default when absent, refused outside 1..=100.
pub fn page_size(limit: Option<u32>) -> Result<u32, Invalid> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(n) => Err(invalid("limit", format!("must be between 1 and {MAX_PAGE} (got {n})"))),
    }
}

/// Reads a listing cursor: the id of the last project of the previous page (an empty one is
/// no cursor of a previous page either).
pub fn cursor(raw: Option<&str>) -> Result<Option<i64>, Invalid> {
    match raw {
        None => Ok(None),
        Some(c) => match c.parse::<i64>() {
            Ok(id) if id > 0 => Ok(Some(id)),
            _ => Err(invalid("cursor", "is not a cursor from a previous page")),
        },
    }
}

/// Checks a tag change: both lists valid, and the result within the limit.
pub fn apply_tags(current: &[String], add: &[String], remove: &[String]) -> Result<Vec<String>, Invalid> {
    let add = tags("add", add)?;
    let remove = tags("remove", remove)?;
    let mut next: Vec<String> = current.iter().filter(|t| !remove.contains(t)).cloned().collect();
    for tag in add {
        if !next.contains(&tag) {
            next.push(tag);
        }
    }
    if next.len() > MAX_TAGS {
        return Err(invalid(
            "add",
            format!("a project may have at most {MAX_TAGS} tags (this would make {})", next.len()),
        ));
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proposal() -> Proposal {
        Proposal {
            project_name: "  Popee the Performer ".into(),
            tagline: "an apprentice clown in Wolf Circus".into(),
            tags: vec!["clown".into(), "circus".into(), "clown".into()],
            problems: vec!["short temper".into(), "self centered".into()],
            solutions: vec!["play the drums".into()],
        }
    }

    #[test]
    fn the_seed_proposal_is_valid_trimmed_and_deduplicated() {
        let valid = proposal().validate().unwrap();
        assert_eq!(valid.project_name, "Popee the Performer");
        assert_eq!(valid.tags, ["clown", "circus"]);
        assert_eq!(valid.problems.len(), 2);
    }

    #[test]
    fn every_limit_names_its_field() {
        let cases: Vec<(Proposal, &str)> = vec![
            (Proposal { project_name: "   ".into(), ..proposal() }, "project_name"),
            (Proposal { project_name: "x".repeat(201), ..proposal() }, "project_name"),
            (Proposal { tagline: "x".repeat(501), ..proposal() }, "tagline"),
            (Proposal { tags: vec!["t".into(); 21], ..proposal() }, "tags"),
            (Proposal { tags: vec!["ok".into(), "x".repeat(51)], ..proposal() }, "tags[1]"),
            (Proposal { tags: vec!["".into()], ..proposal() }, "tags[0]"),
            (Proposal { problems: vec!["p".into(); 101], ..proposal() }, "problems"),
            (Proposal { solutions: vec!["ok".into(), " ".into()], ..proposal() }, "solutions[1]"),
            (Proposal { problems: vec!["x".repeat(10_001)], ..proposal() }, "problems[0]"),
            // White space at either end counts towards a limit, as the schema's maxLength says.
            (Proposal { project_name: format!(" {}", "x".repeat(200)), ..proposal() }, "project_name"),
            (Proposal { tagline: format!("{} ", "x".repeat(500)), ..proposal() }, "tagline"),
            (Proposal { tags: vec![format!(" {} ", "x".repeat(49))], ..proposal() }, "tags[0]"),
        ];
        for (p, field) in cases {
            assert_eq!(p.validate().unwrap_err().field, field);
        }
    }

    #[test]
    fn limits_count_characters_not_bytes() {
        let name = "é".repeat(200);
        assert!(Proposal { project_name: name, ..proposal() }.validate().is_ok());
    }

    #[test]
    fn tag_changes_remove_then_add_and_respect_the_limit() {
        let current = vec!["a".to_string(), "b".to_string()];
        assert_eq!(apply_tags(&current, &["c".into(), "a".into()], &["b".into()]).unwrap(), ["a", "c"]);
        let many: Vec<String> = (0..19).map(|i| i.to_string()).collect();
        assert_eq!(apply_tags(&current, &many, &[]).unwrap_err().field, "add");
        assert_eq!(apply_tags(&current, &[" ".into()], &[]).unwrap_err().field, "add[0]");
    }

    #[test]
    fn pages_and_cursors_are_checked() {
        assert_eq!(page_size(None).unwrap(), DEFAULT_PAGE);
        assert_eq!(page_size(Some(0)).unwrap_err().field, "limit");
        assert_eq!(page_size(Some(101)).unwrap_err().field, "limit");
        assert_eq!(cursor(Some("42")).unwrap(), Some(42));
        assert_eq!(cursor(None).unwrap(), None);
        assert_eq!(cursor(Some("../1")).unwrap_err().field, "cursor");
        assert_eq!(cursor(Some("-3")).unwrap_err().field, "cursor");
        assert_eq!(cursor(Some("")).unwrap_err().field, "cursor");
    }
}
