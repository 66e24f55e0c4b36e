//! Topic names and subscription patterns, in RabbitMQ's topic-exchange syntax so the
//! embedded backend and the broker route alike: a topic is dot-separated words
//! (`project.proposed`); in a pattern `*` stands for exactly one word and `#` for zero
//! or more (`project.*`, `media.#`, `#`).

/// Whether `topic` is a valid name: one or more non-empty words of ASCII letters,
/// digits, `-` and `_`, separated by dots.
pub fn is_valid_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= 255
        && topic
            .split('.')
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

/// Whether `pattern` is well formed: words as in a topic, or `*`, or `#`.
pub fn is_valid_pattern(pattern: &str) -> bool {
    !pattern.is_empty() && pattern.len() <= 255 && pattern.split('.').all(|w| w == "*" || w == "#" || is_valid_topic(w))
}

/// Whether `topic` is routed to a subscription with `pattern`.
pub fn matches(pattern: &str, topic: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('.').collect();
    let topic: Vec<&str> = topic.split('.').collect();
    matches_words(&pattern, &topic)
}

fn matches_words(pattern: &[&str], topic: &[&str]) -> bool {
    match pattern.split_first() {
        None => topic.is_empty(),
        Some((&"#", rest)) => (0..=topic.len()).any(|skip| matches_words(rest, &topic[skip..])),
        Some((word, rest)) => match topic.split_first() {
            Some((first, tail)) => (*word == "*" || word == first) && matches_words(rest, tail),
            None => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_is_one_word_and_hash_any_number() {
        assert!(matches("project.proposed", "project.proposed"));
        assert!(matches("project.*", "project.changed"));
        assert!(!matches("project.*", "project"));
        assert!(!matches("project.*", "project.changed.v2"));
        assert!(matches("project.#", "project"));
        assert!(matches("project.#", "project.changed.v2"));
        assert!(matches("#", "anything.at.all"));
        assert!(matches("*.proposed", "project.proposed"));
        assert!(matches("#.ready", "media.mp3.ready"));
        assert!(!matches("media.*", "project.proposed"));
    }

    #[test]
    fn names_and_patterns_are_checked() {
        assert!(is_valid_topic("project.proposed"));
        assert!(is_valid_topic("media.mp3-ready_v2"));
        assert!(!is_valid_topic(""));
        assert!(!is_valid_topic("project..proposed"));
        assert!(!is_valid_topic("project.*"));
        assert!(!is_valid_topic("pro ject"));
        assert!(is_valid_pattern("project.*"));
        assert!(is_valid_pattern("#"));
        assert!(!is_valid_pattern("project.**"));
        assert!(!is_valid_pattern("project."));
    }
}
