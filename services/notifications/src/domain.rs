//! The notifications service's rules, without I/O: which events make which notification
//! (its words and its link), what an e-mail address must look like, and how a page of
//! notifications is asked for.

use chrono::{DateTime, Utc};
use contracts::media::{ConversionFailed, Mp3Ready};
use kit::events::{Envelope, Event, HandlerError};
use serde::{Deserialize, Serialize};

/// The longest e-mail address accepted (RFC 5321's path limit, less its angle brackets).
pub const MAX_EMAIL_CHARS: usize = 254;

/// What a notification tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A video's mp3 can be downloaded.
    Mp3Ready,
    /// A video could not be converted.
    ConversionFailed,
}

impl Kind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mp3Ready => "mp3_ready",
            Self::ConversionFailed => "conversion_failed",
        }
    }

    /// The kind a stored name stands for.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "mp3_ready" => Some(Self::Mp3Ready),
            "conversion_failed" => Some(Self::ConversionFailed),
            _ => None,
        }
    }
}

/// A notification made from an event, before it is stored: every replica makes the same one
/// from the same event (its id is the event's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotification {
    /// The event's id (a UUIDv7, so ids sort by when the event was published).
    pub id: uuid::Uuid,
    /// The user it is for.
    pub user_id: String,
    /// What it tells.
    pub kind: Kind,
    /// What it is about (the video's id).
    pub about: String,
    /// One sentence for the user.
    pub text: String,
    /// Where to go from it: a path on the site.
    pub link: String,
    /// The e-mail's subject.
    pub subject: String,
    /// When the event happened.
    pub created_at: DateTime<Utc>,
}

/// The notification an event makes: `Ok(None)` for a topic that tells users nothing (a topic
/// added to the pattern later), an error for a payload that does not parse (dead-lettered).
pub fn from_event(envelope: &Envelope) -> Result<Option<NewNotification>, HandlerError> {
    let id = envelope.event_id;
    let made = match envelope.topic.as_str() {
        Mp3Ready::TOPIC => {
            let ready: Mp3Ready = envelope.decode()?;
            let mp3 = mp3_file_name(&ready.file_name);
            NewNotification {
                id,
                user_id: ready.owner,
                kind: Kind::Mp3Ready,
                about: ready.video_id,
                text: format!("{mp3} is ready"),
                link: format!("/download?fid={}", ready.mp3_id),
                subject: format!("Your mp3 is ready: {mp3}"),
                created_at: ready.converted_at,
            }
        }
        ConversionFailed::TOPIC => {
            let failed: ConversionFailed = envelope.decode()?;
            let name = display_name(&failed.file_name);
            NewNotification {
                id,
                user_id: failed.owner,
                kind: Kind::ConversionFailed,
                about: failed.video_id,
                text: format!("{name} could not be converted: {}", failed.reason.trim()),
                link: "/media".into(),
                subject: format!("{name} could not be converted"),
                created_at: failed.failed_at,
            }
        }
        _ => return Ok(None),
    };
    if made.user_id.trim().is_empty() {
        return Err(HandlerError::Reject(format!("event {id} on {} names no user", envelope.topic)));
    }
    Ok(Some(made))
}

/// A file name as shown in a sentence: its control characters dropped, never empty.
fn display_name(file_name: &str) -> String {
    let clean: String = file_name.chars().filter(|c| !c.is_control()).collect();
    let clean = clean.trim();
    if clean.is_empty() {
        "Your video".into()
    } else {
        clean.to_string()
    }
}

/// The mp3's name for an uploaded file: its extension replaced (`clip.mp4` → `clip.mp3`), as
/// the download names it.
pub fn mp3_file_name(file_name: &str) -> String {
    let name = display_name(file_name);
    let stem = match name.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem,
        _ => name.as_str(),
    };
    format!("{stem}.mp3")
}

/// An e-mail address a user gave, checked: trimmed, at most [`MAX_EMAIL_CHARS`], one that an
/// SMTP server can be given (`local@domain`, the domain with a dot or `localhost`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailAddress(String);

impl EmailAddress {
    /// Checks `raw`; the error says why it is not an address.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let email = raw.trim();
        if email.is_empty() {
            return Err("must not be blank".into());
        }
        if email.chars().count() > MAX_EMAIL_CHARS {
            return Err(format!("must be at most {MAX_EMAIL_CHARS} characters"));
        }
        let address: lettre::Address =
            email.parse().map_err(|_| "is not an e-mail address (name@example.com)".to_string())?;
        let domain = address.domain();
        if !domain.contains('.') && !domain.eq_ignore_ascii_case("localhost") {
            return Err("needs a full domain (name@example.com)".into());
        }
        Ok(Self(email.to_string()))
    }

    /// The address as given (trimmed).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Notifications per page when the caller does not say.
pub const DEFAULT_PAGE: u32 = 20;
/// The most notifications on one page.
pub const MAX_PAGE: u32 = 100;

/// How many notifications a page has: `limit` if given (1–[`MAX_PAGE`]), else [`DEFAULT_PAGE`].
pub fn page_size(limit: Option<u32>) -> Result<u32, String> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(n) => Err(format!("must be between 1 and {MAX_PAGE}, not {n}")),
    }
}

/// A notification id given by a client (a cursor, `Last-Event-ID`, a path): a UUID in its
/// hyphenated form (as the API writes them, in either case), written the way ids are stored.
pub fn parse_id(raw: &str) -> Option<String> {
    let raw = raw.trim();
    (raw.len() == 36).then(|| uuid::Uuid::parse_str(raw).ok().map(|id| id.to_string())).flatten()
}

/// The `unread` query parameter: `1`/`true` for unread only, `0`/`false` (or absent) for all;
/// exactly those words, as the API document says.
pub fn parse_flag(raw: Option<&str>) -> Result<bool, String> {
    match raw {
        None | Some("0") | Some("false") => Ok(false),
        Some("1") | Some("true") => Ok(true),
        Some(other) => Err(format!("must be 1, 0, true or false, not {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope<E: Event>(event: &E) -> Envelope {
        Envelope::new("video-1", event).unwrap()
    }

    #[test]
    fn an_mp3_ready_event_tells_its_owner_the_mp3_and_links_its_download() {
        let ready = Mp3Ready {
            video_id: "video-1".into(),
            mp3_id: "mp3-9".into(),
            owner: "alice".into(),
            file_name: "holiday clip.mp4".into(),
            mp3_size: 1000,
            duration_ms: 3000,
            converted_at: Utc::now(),
        };
        let env = envelope(&ready);
        let made = from_event(&env).unwrap().unwrap();
        assert_eq!(made.id, env.event_id);
        assert_eq!(made.user_id, "alice");
        assert_eq!(made.kind, Kind::Mp3Ready);
        assert_eq!(made.text, "holiday clip.mp3 is ready");
        assert_eq!(made.link, "/download?fid=mp3-9");
        assert_eq!(made.about, "video-1");
    }

    #[test]
    fn a_failed_conversion_tells_why_and_links_the_media_page() {
        let failed = ConversionFailed {
            video_id: "video-2".into(),
            owner: "bob".into(),
            file_name: "silent\u{7}.mp4".into(),
            reason: "the file has no audio track ".into(),
            failed_at: Utc::now(),
        };
        let made = from_event(&envelope(&failed)).unwrap().unwrap();
        assert_eq!(made.text, "silent.mp4 could not be converted: the file has no audio track");
        assert_eq!(made.link, "/media");
        assert_eq!(made.subject, "silent.mp4 could not be converted");
    }

    #[test]
    fn a_payload_that_does_not_parse_is_rejected() {
        let env = Envelope::from_json(Mp3Ready::TOPIC, 1, "k", serde_json::json!({"owner": 3}));
        assert!(matches!(from_event(&env), Err(HandlerError::Reject(_))));
    }

    #[test]
    fn mp3_names_replace_the_extension() {
        assert_eq!(mp3_file_name("a.b.mkv"), "a.b.mp3");
        assert_eq!(mp3_file_name("noext"), "noext.mp3");
        assert_eq!(mp3_file_name(".hidden"), ".hidden.mp3");
        assert_eq!(mp3_file_name(" "), "Your video.mp3");
    }

    #[test]
    fn e_mail_addresses_are_checked() {
        assert_eq!(EmailAddress::parse(" alice@example.com ").unwrap().as_str(), "alice@example.com");
        assert!(EmailAddress::parse("root@localhost").is_ok());
        for bad in ["", "   ", "alice", "alice@", "@example.com", "a b@example.com", "alice@example", "a@b@c.d"] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(EmailAddress::parse(&long).is_err());
    }

    #[test]
    fn pages_and_flags_are_checked() {
        assert_eq!(page_size(None), Ok(DEFAULT_PAGE));
        assert_eq!(page_size(Some(100)), Ok(100));
        assert!(page_size(Some(0)).is_err() && page_size(Some(101)).is_err());
        assert_eq!(parse_flag(Some("1")), Ok(true));
        assert_eq!(parse_flag(None), Ok(false));
        assert!(parse_flag(Some("yes")).is_err());
        let id = uuid::Uuid::now_v7();
        assert_eq!(parse_id(&id.to_string().to_uppercase()), Some(id.to_string()));
        assert_eq!(parse_id(&id.simple().to_string()), None);
        assert_eq!(parse_id("nope"), None);
        assert!(parse_flag(Some("")).is_err() && parse_flag(Some(" 1")).is_err());
    }
}
