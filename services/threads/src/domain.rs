//! The rules of threads and votes, without I/O: what a valid request is,
//! parsed once from the wire types into values the store can trust.

use agora_proto::threads::v1 as pb;

use crate::error::ThreadsError;

/// Threads returned by `GetProjectThreads` when the request says `limit: 0`.
pub const DEFAULT_LIMIT: u32 = 1000;
/// The most threads one `GetProjectThreads` may ask for.
pub const MAX_LIMIT: u32 = 1000;
/// The most threads one `UpdateThreads` may carry (one transaction stays short).
pub const MAX_BATCH: usize = 200;
/// The longest message, in characters (SPEC §3.5).
pub const MAX_MESSAGE_CHARS: usize = 10_000;
/// The longest user id, display name or idempotency key, in characters: far
/// above any real value, low enough that a row stays small.
pub const MAX_NAME_CHARS: usize = 200;

/// What a thread is; stored as its name (`COMMENT`, `SOLUTION`, `PROBLEM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadType {
    /// A comment or reply.
    Comment,
    /// A proposed solution.
    Solution,
    /// A problem the project addresses.
    Problem,
}

impl ThreadType {
    /// The stored name (the `CHECK` constraint of the `threads` table lists them).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Comment => "COMMENT",
            Self::Solution => "SOLUTION",
            Self::Problem => "PROBLEM",
        }
    }

    /// Parses a stored name.
    pub fn from_stored(name: &str) -> Option<Self> {
        match name {
            "COMMENT" => Some(Self::Comment),
            "SOLUTION" => Some(Self::Solution),
            "PROBLEM" => Some(Self::Problem),
            _ => None,
        }
    }

    /// The wire value.
    pub fn to_pb(self) -> pb::ThreadType {
        match self {
            Self::Comment => pb::ThreadType::Comment,
            Self::Solution => pb::ThreadType::Solution,
            Self::Problem => pb::ThreadType::Problem,
        }
    }

    fn from_pb(raw: i32) -> Option<Self> {
        match pb::ThreadType::try_from(raw).ok()? {
            pb::ThreadType::Comment => Some(Self::Comment),
            pb::ThreadType::Solution => Some(Self::Solution),
            pb::ThreadType::Problem => Some(Self::Problem),
            pb::ThreadType::Unspecified => None,
        }
    }
}

/// A voter's vote on a thread; stored as `1` (up) or `-1` (down), no row for none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// No vote, or a withdrawn one.
    None,
    /// An up vote.
    Up,
    /// A down vote.
    Down,
}

impl Direction {
    /// The stored value (`0` means no row).
    pub fn stored(self) -> i16 {
        match self {
            Self::None => 0,
            Self::Up => 1,
            Self::Down => -1,
        }
    }

    /// Parses a stored value; anything but `1`/`-1` counts as no vote.
    pub fn from_stored(value: i16) -> Self {
        match value {
            1 => Self::Up,
            -1 => Self::Down,
            _ => Self::None,
        }
    }

    /// The wire value.
    pub fn to_pb(self) -> pb::VoteDirection {
        match self {
            Self::None => pb::VoteDirection::None,
            Self::Up => pb::VoteDirection::Up,
            Self::Down => pb::VoteDirection::Down,
        }
    }

    /// How `up_vote` and `down_vote` change when a voter goes from `self` to `next`.
    pub fn delta_to(self, next: Direction) -> (i64, i64) {
        let count = |d: Direction, which: Direction| i64::from(d == which);
        (
            count(next, Direction::Up) - count(self, Direction::Up),
            count(next, Direction::Down) - count(self, Direction::Down),
        )
    }
}

/// A thread to create, checked except for what needs the database (its parent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewThread {
    /// The project it belongs to (> 0).
    pub project_id: i64,
    /// The thread it replies to, if any (checked by the store: it must exist, in the same project).
    pub parent_thread_id: Option<i64>,
    /// What it is.
    pub thread_type: ThreadType,
    /// 1 to 10 000 characters, not blank.
    pub message: String,
    /// The author's user id.
    pub author: String,
    /// The author's display name, as the caller gave it (may be empty).
    pub author_name: String,
    /// Sending the same key again returns the first thread instead of a second one.
    pub idempotency_key: Option<String>,
}

/// A new message for an existing thread, by its author.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// The thread (> 0; the store says whether it exists).
    pub thread_id: i64,
    /// 1 to 10 000 characters, not blank.
    pub message: String,
    /// Who asks; must be the stored author.
    pub author: String,
}

/// One element of an `UpdateThreads` request, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `thread_id` 0: a new thread.
    Create(NewThread),
    /// `thread_id` > 0: a new message for that thread.
    Edit(Edit),
}

/// A thread as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thread {
    /// Its id, increasing with creation.
    pub thread_id: i64,
    /// Its project.
    pub project_id: i64,
    /// The thread it replies to.
    pub parent_thread_id: Option<i64>,
    /// What it is.
    pub thread_type: ThreadType,
    /// Its message.
    pub message: String,
    /// Exact number of up votes.
    pub up_vote: i64,
    /// Exact number of down votes.
    pub down_vote: i64,
    /// Its author's user id.
    pub author: String,
    /// Its author's display name.
    pub author_name: String,
    /// When it was created.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// The asking voter's vote on it (none when nobody asked).
    pub my_vote: Direction,
}

impl Thread {
    /// The wire form.
    pub fn to_pb(&self) -> pb::Thread {
        pb::Thread {
            thread_id: self.thread_id,
            project_id: self.project_id,
            parent_thread_id: self.parent_thread_id,
            thread_type: self.thread_type.to_pb().into(),
            message: self.message.clone(),
            up_vote: self.up_vote,
            down_vote: self.down_vote,
            author: self.author.clone(),
            created_at: self.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            // The key is the caller's retry token, not part of the thread: it is never shown.
            idempotency_key: String::new(),
            my_vote: self.my_vote.to_pb().into(),
            author_name: self.author_name.clone(),
        }
    }
}

/// One voter's vote on a thread, as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ballot {
    /// The voter's user id.
    pub voter: String,
    /// Up, down, or none to withdraw.
    pub direction: Direction,
}

/// Vote counts after a vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Exact number of up votes.
    pub up_vote: i64,
    /// Exact number of down votes.
    pub down_vote: i64,
}

fn invalid(field: &str, reason: impl std::fmt::Display) -> ThreadsError {
    ThreadsError::invalid(field, reason)
}

/// A message: 1 to 10 000 characters (not bytes), not only whitespace.
fn message(field: &str, raw: &str) -> Result<String, ThreadsError> {
    let chars = raw.chars().count();
    if chars == 0 || chars > MAX_MESSAGE_CHARS {
        return Err(invalid(field, format_args!("must be 1 to {MAX_MESSAGE_CHARS} characters")));
    }
    if raw.trim().is_empty() {
        return Err(invalid(field, "must not be blank"));
    }
    Ok(raw.to_string())
}

/// A user id (author, voter): required, not blank, at most 200 characters.
fn user_id(field: &str, raw: &str) -> Result<String, ThreadsError> {
    if raw.trim().is_empty() {
        return Err(invalid(field, "is required"));
    }
    short(field, raw)
}

fn short(field: &str, raw: &str) -> Result<String, ThreadsError> {
    if raw.chars().count() > MAX_NAME_CHARS {
        return Err(invalid(field, format_args!("must be at most {MAX_NAME_CHARS} characters")));
    }
    Ok(raw.to_string())
}

/// The number of threads to return: 0 means [`DEFAULT_LIMIT`], more than [`MAX_LIMIT`] is refused.
pub fn limit(raw: u32) -> Result<u32, ThreadsError> {
    match raw {
        0 => Ok(DEFAULT_LIMIT),
        n if n > MAX_LIMIT => Err(invalid("limit", format_args!("must be at most {MAX_LIMIT}"))),
        n => Ok(n),
    }
}

/// An optional voter for `my_vote` (empty means nobody).
pub fn optional_voter(raw: &str) -> Result<Option<String>, ThreadsError> {
    if raw.is_empty() {
        return Ok(None);
    }
    user_id("voter", raw).map(Some)
}

/// The voter of a `Vote`: required.
pub fn voter(raw: &str) -> Result<String, ThreadsError> {
    user_id("voter", raw)
}

/// A thread id named in a request: positive.
pub fn thread_id(field: &str, raw: i64) -> Result<i64, ThreadsError> {
    if raw <= 0 {
        return Err(invalid(field, "must be a positive thread id"));
    }
    Ok(raw)
}

/// The direction of a `Vote`.
pub fn direction(raw: i32) -> Result<Direction, ThreadsError> {
    match pb::VoteDirection::try_from(raw) {
        Ok(pb::VoteDirection::None) => Ok(Direction::None),
        Ok(pb::VoteDirection::Up) => Ok(Direction::Up),
        Ok(pb::VoteDirection::Down) => Ok(Direction::Down),
        Err(_) => Err(invalid("direction", "must be VOTE_DIRECTION_UP, VOTE_DIRECTION_DOWN or VOTE_DIRECTION_NONE")),
    }
}

/// Parses an `UpdateThreads` request: at most [`MAX_BATCH`] threads, each
/// valid; errors name the field with its index (`threads[2].message: …`),
/// because the REST layer shows them to users.
pub fn changes(threads: &[pb::Thread]) -> Result<Vec<Change>, ThreadsError> {
    if threads.is_empty() {
        return Err(invalid("threads", "must contain at least one thread"));
    }
    if threads.len() > MAX_BATCH {
        return Err(invalid("threads", format_args!("must contain at most {MAX_BATCH} threads")));
    }
    threads.iter().enumerate().map(|(i, t)| change(i, t)).collect()
}

fn change(index: usize, t: &pb::Thread) -> Result<Change, ThreadsError> {
    let field = |name: &str| format!("threads[{index}].{name}");
    let text = message(&field("message"), &t.message)?;
    let author = user_id(&field("author"), &t.author)?;
    match t.thread_id {
        0 => {
            let thread_type = ThreadType::from_pb(t.thread_type).ok_or_else(|| {
                invalid(
                    &field("thread_type"),
                    "must be THREAD_TYPE_COMMENT, THREAD_TYPE_SOLUTION or THREAD_TYPE_PROBLEM",
                )
            })?;
            if t.project_id <= 0 {
                return Err(invalid(&field("project_id"), "must be a positive project id"));
            }
            let parent_thread_id = t.parent_thread_id.map(|p| thread_id(&field("parent_thread_id"), p)).transpose()?;
            let key = short(&field("idempotency_key"), &t.idempotency_key)?;
            Ok(Change::Create(NewThread {
                project_id: t.project_id,
                parent_thread_id,
                thread_type,
                message: text,
                author,
                author_name: short(&field("author_name"), &t.author_name)?,
                idempotency_key: (!key.is_empty()).then_some(key),
            }))
        }
        id if id > 0 => Ok(Change::Edit(Edit { thread_id: id, message: text, author })),
        _ => Err(invalid(&field("thread_id"), "must be 0 (a new thread) or the id of an existing one")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_thread(message: &str) -> pb::Thread {
        pb::Thread {
            project_id: 7,
            thread_type: pb::ThreadType::Problem.into(),
            message: message.into(),
            author: "u1".into(),
            ..Default::default()
        }
    }

    fn refusal(threads: &[pb::Thread]) -> String {
        match changes(threads) {
            Err(invalid @ ThreadsError::Invalid { .. }) => invalid.to_string(),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn messages_are_counted_in_characters_not_bytes() {
        let max = "é".repeat(MAX_MESSAGE_CHARS);
        assert!(changes(&[new_thread(&max)]).is_ok(), "10 000 two-byte characters fit");
        let over = "é".repeat(MAX_MESSAGE_CHARS + 1);
        assert_eq!(refusal(&[new_thread(&over)]), "threads[0].message: must be 1 to 10000 characters");
        assert_eq!(refusal(&[new_thread("")]), "threads[0].message: must be 1 to 10000 characters");
        assert_eq!(refusal(&[new_thread(" \n\t ")]), "threads[0].message: must not be blank");
    }

    #[test]
    fn errors_name_the_field_with_its_index() {
        let mut unspecified = new_thread("ok");
        unspecified.thread_type = pb::ThreadType::Unspecified.into();
        assert!(refusal(&[new_thread("ok"), unspecified]).starts_with("threads[1].thread_type: "));
        let mut nobody = new_thread("ok");
        nobody.author = "  ".into();
        assert_eq!(refusal(&[new_thread("ok"), new_thread("ok"), nobody]), "threads[2].author: is required");
        let mut no_project = new_thread("ok");
        no_project.project_id = 0;
        assert!(refusal(&[no_project]).starts_with("threads[0].project_id: "));
        let mut negative = new_thread("ok");
        negative.thread_id = -3;
        assert!(refusal(&[negative]).starts_with("threads[0].thread_id: "));
        let mut bad_parent = new_thread("ok");
        bad_parent.parent_thread_id = Some(0);
        assert!(refusal(&[bad_parent]).starts_with("threads[0].parent_thread_id: "));
        let too_many = vec![new_thread("ok"); MAX_BATCH + 1];
        assert_eq!(refusal(&too_many), "threads: must contain at most 200 threads");
        assert!(refusal(&[]).starts_with("threads: "));
    }

    #[test]
    fn an_existing_id_is_an_edit_of_its_message_only() {
        let mut edit = new_thread("new text");
        edit.thread_id = 42;
        edit.thread_type = pb::ThreadType::Unspecified.into();
        edit.project_id = 0;
        assert_eq!(
            changes(&[edit]).unwrap(),
            vec![Change::Edit(Edit { thread_id: 42, message: "new text".into(), author: "u1".into() })]
        );
    }

    #[test]
    fn limits_and_directions() {
        assert_eq!(limit(0).unwrap(), DEFAULT_LIMIT);
        assert_eq!(limit(1000).unwrap(), 1000);
        assert!(matches!(limit(1001), Err(ThreadsError::Invalid { field, .. }) if field == "limit"));
        assert!(matches!(direction(9), Err(ThreadsError::Invalid { field, .. }) if field == "direction"));
        assert!(
            matches!(voter(""), Err(ThreadsError::Invalid { field, reason }) if field == "voter" && reason == "is required")
        );
        assert_eq!(optional_voter("").unwrap(), None);
    }

    #[test]
    fn vote_deltas_move_one_vote_at_most() {
        use Direction::*;
        assert_eq!(None.delta_to(Up), (1, 0));
        assert_eq!(Up.delta_to(Up), (0, 0));
        assert_eq!(Up.delta_to(Down), (-1, 1));
        assert_eq!(Down.delta_to(None), (0, -1));
        assert_eq!(None.delta_to(None), (0, 0));
    }
}
