//! The auth service's rules, no I/O: what a username and a password must be,
//! when failed logins are throttled, and a wrapper that keeps secrets out of logs.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A secret (password, private key, token): its `Debug` prints `[redacted]`,
/// and it has no `Display`, so it cannot end up in a log line by accident.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a secret value.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The secret itself; call only where it is really used.
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// Unwraps the secret, for handing it to the code that uses it.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Secret<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Secret)
    }
}

/// A rule broken by a signup, naming the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    /// `username` or `password`.
    pub field: &'static str,
    /// What is wrong with it, for the user.
    pub reason: String,
}

impl Invalid {
    fn username(reason: impl Into<String>) -> Self {
        Self { field: "username", reason: reason.into() }
    }

    fn password(reason: impl Into<String>) -> Self {
        Self { field: "password", reason: reason.into() }
    }
}

/// Longest username, in characters.
pub const USERNAME_MAX_CHARS: usize = 64;
/// Shortest password, in characters.
pub const PASSWORD_MIN_CHARS: usize = 8;
/// Longest password, in characters (argon2 would take more, but nobody types more).
pub const PASSWORD_MAX_CHARS: usize = 256;

/// A valid username: at most 64 characters as sent (what its OpenAPI schema says), not blank,
/// no control characters, stored trimmed; any other Unicode (quotes, SQL, emoji) is fine and is
/// stored as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    /// Checks a username as given at signup.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        // Counted before trimming: white space at either end counts, as the schema's maxLength.
        if raw.chars().count() > USERNAME_MAX_CHARS {
            return Err(Invalid::username(format!("must be at most {USERNAME_MAX_CHARS} characters")));
        }
        let name = raw.trim();
        if name.is_empty() {
            return Err(Invalid::username("must not be empty"));
        }
        if name.chars().any(char::is_control) {
            return Err(Invalid::username("must not contain control characters"));
        }
        Ok(Self(name.to_string()))
    }

    /// The name as the user wrote it (trimmed).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key two names that differ only in case share (what uniqueness is about).
    pub fn key(&self) -> String {
        username_key(&self.0)
    }
}

/// The case-insensitive key of any attempted username (valid or not), as
/// used for lookups and for per-user throttling; bounded in length so an
/// attacker's megabyte-long name cannot bloat the failures table.
pub fn username_key(raw: &str) -> String {
    raw.trim().to_lowercase().chars().take(USERNAME_MAX_CHARS * 2).collect()
}

/// The most common passwords of at least eight characters (shorter ones fail
/// the length rule anyway), compared case-insensitively.
const COMMON_PASSWORDS: &[&str] = &[
    "password",
    "password1",
    "password12",
    "password123",
    "password!",
    "passw0rd",
    "p@ssw0rd",
    "p@ssword",
    "12345678",
    "123456789",
    "1234567890",
    "0123456789",
    "87654321",
    "987654321",
    "12341234",
    "11223344",
    "12344321",
    "123123123",
    "147258369",
    "123456789a",
    "1234567a",
    "a1234567",
    "aa123456",
    "abc12345",
    "abcd1234",
    "1234abcd",
    "abcdefgh",
    "abcdefg1",
    "qwertyui",
    "qwertyuiop",
    "qwerty12",
    "qwerty123",
    "qwerty1234",
    "1qaz2wsx",
    "zaq12wsx",
    "1q2w3e4r",
    "1q2w3e4r5t",
    "q1w2e3r4",
    "qazwsxedc",
    "1234qwer",
    "qwer1234",
    "123qweasd",
    "asdfghjk",
    "asdfghjkl",
    "zxcvbnm1",
    "iloveyou",
    "iloveyou1",
    "sunshine",
    "sunshine1",
    "princess",
    "princess1",
    "football",
    "football1",
    "baseball",
    "baseball1",
    "basketball",
    "superman",
    "batman123",
    "starwars",
    "trustno1",
    "welcome1",
    "welcome123",
    "letmein1",
    "letmein123",
    "changeme",
    "changeme1",
    "whatever",
    "computer",
    "internet",
    "jennifer",
    "michael1",
    "charlie1",
    "monkey123",
    "dragon123",
    "master123",
    "shadow123",
    "admin123",
    "admin1234",
    "administrator",
    "secret123",
    "hello123",
    "test1234",
    "testtest",
    "loveyou1",
    "mypassword",
    "lovelove",
    "11111111",
    "00000000",
];

/// Checks a password chosen at signup for `username`.
pub fn check_password(password: &str, username: &Username) -> Result<(), Invalid> {
    let chars = password.chars().count();
    if chars < PASSWORD_MIN_CHARS {
        return Err(Invalid::password(format!("must be at least {PASSWORD_MIN_CHARS} characters")));
    }
    if chars > PASSWORD_MAX_CHARS {
        return Err(Invalid::password(format!("must be at most {PASSWORD_MAX_CHARS} characters")));
    }
    let folded = password.to_lowercase();
    if folded == username.key() || folded.trim() == username.key() {
        return Err(Invalid::password("must not be the username"));
    }
    let mut all = password.chars();
    if let Some(first) = all.next() {
        if all.all(|c| c == first) {
            return Err(Invalid::password("must not be one character repeated"));
        }
    }
    if COMMON_PASSWORDS.contains(&folded.as_str()) {
        return Err(Invalid::password("is one of the most common passwords; choose another"));
    }
    Ok(())
}

/// How failed logins are throttled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Failures a username may have within the window before logins to it are refused (`AUTH_MAX_FAILURES_PER_USER`).
    pub max_failures_per_user: u32,
    /// Failures a client IP may have within the window before its logins are refused (`AUTH_MAX_FAILURES_PER_IP`).
    pub max_failures_per_ip: u32,
    /// How long a failure counts (`AUTH_FAILURE_WINDOW_SECS`).
    pub window: Duration,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self { max_failures_per_user: 5, max_failures_per_ip: 50, window: Duration::from_secs(900) }
    }
}

/// The throttling subject of a username.
pub fn user_subject(key: &str) -> String {
    format!("user:{key}")
}

/// The throttling subject of a client address.
pub fn ip_subject(ip: &str) -> String {
    format!("ip:{ip}")
}

/// Whether a subject is throttled, given its most recent failures within the
/// window (at most `max` of them, in any order, Unix milliseconds): when it
/// has `max` of them, the answer is how long until the oldest of those leaves
/// the window (so the count drops below `max`), rounded up to whole seconds.
pub fn throttled_for(recent: &[i64], max: u32, window: Duration, now_ms: i64) -> Option<Duration> {
    if (recent.len() as u64) < u64::from(max) {
        return None;
    }
    let oldest = recent.iter().copied().min().unwrap_or(now_ms);
    let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    let leaves_at = oldest.saturating_add(window_ms);
    let wait_ms = leaves_at.saturating_sub(now_ms).max(0);
    // Whole seconds, rounded up, and never 0: `Retry-After: 0` invites a busy loop.
    let secs = (wait_ms as u64).div_ceil(1000).max(1);
    Some(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(raw: &str) -> Username {
        Username::parse(raw).unwrap()
    }

    #[test]
    fn usernames_are_trimmed_and_any_printable_unicode_is_kept() {
        assert_eq!(name("  alice ").as_str(), "alice");
        assert_eq!(name("robert'); DROP TABLE users;--").as_str(), "robert'); DROP TABLE users;--");
        assert_eq!(name("Zoë 🦀").as_str(), "Zoë 🦀");
        assert_eq!(name("ÉLODIE").key(), "élodie");
    }

    #[test]
    fn blank_long_or_control_character_usernames_are_refused() {
        for bad in ["", "   ", "a\u{0}b", "line\nbreak", "tab\there"] {
            let err = Username::parse(bad).unwrap_err();
            assert_eq!(err.field, "username", "{bad:?}");
        }
        assert!(Username::parse(&"é".repeat(64)).is_ok());
        assert!(Username::parse(&"é".repeat(65)).is_err());
        // The limit is on the name as sent, white space at either end included.
        assert!(Username::parse(&format!(" {}", "a".repeat(63))).is_ok());
        assert!(Username::parse(&format!(" {}", "a".repeat(64))).is_err());
        assert!(Username::parse(&format!("{}\u{3000}", "a".repeat(64))).is_err());
    }

    #[test]
    fn weak_passwords_are_refused_with_a_reason() {
        let alice = name("Alice");
        for (bad, why) in [
            ("", "at least 8"),
            ("short", "at least 8"),
            ("aaaaaaaaaaaa", "repeated"),
            ("Password123", "common"),
            ("QWERTYUIOP", "common"),
            ("alice", "at least 8"),
        ] {
            let err = check_password(bad, &alice).unwrap_err();
            assert_eq!(err.field, "password");
            assert!(err.reason.contains(why), "{bad:?}: {}", err.reason);
        }
        let long_name = name("alexander-the-great");
        let err = check_password("Alexander-The-Great", &long_name).unwrap_err();
        assert!(err.reason.contains("username"), "{}", err.reason);
        assert!(check_password(&"x".repeat(257), &alice).is_err());
        assert!(check_password("correct horse battery staple", &alice).is_ok());
        assert!(check_password("пароль-надёжный", &alice).is_ok());
    }

    #[test]
    fn throttling_starts_at_the_limit_and_lasts_until_the_oldest_failure_leaves() {
        let window = Duration::from_secs(900);
        let now = 1_000_000_000;
        assert_eq!(throttled_for(&[now - 1000; 4], 5, window, now), None);
        let recent = [now - 100_000, now - 1000, now - 500, now - 10, now];
        assert_eq!(throttled_for(&recent, 5, window, now), Some(Duration::from_secs(800)));
        // A failure just about to leave still means "retry in 1 s", never 0.
        assert_eq!(throttled_for(&[now - 899_999; 5], 5, window, now), Some(Duration::from_secs(1)));
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2hunter2".to_string());
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(s.expose(), "hunter2hunter2");
    }
}
