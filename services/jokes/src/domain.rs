//! The jokes corpus: our own jokes, bundled in the binary, parsed once.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use rand::seq::IndexedRandom;
use serde::Deserialize;

/// One joke.
#[derive(Debug, Clone, Deserialize)]
pub struct Joke {
    /// Its category (lowercase).
    pub category: String,
    /// The text.
    pub joke: String,
}

/// Every joke, indexed by category.
#[derive(Debug)]
pub struct Corpus {
    all: Vec<Joke>,
    by_category: BTreeMap<String, Vec<usize>>,
}

/// Asked for a category we do not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown category {asked:?}; known categories: {known}")]
pub struct UnknownCategory {
    /// What was asked for.
    pub asked: String,
    /// The categories we have, comma-separated.
    pub known: String,
}

impl Corpus {
    /// Parses a JSON array of `{category, joke}`.
    pub fn parse(json: &str) -> Result<Self, serde_json::Error> {
        let all: Vec<Joke> = serde_json::from_str(json)?;
        let mut by_category: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, joke) in all.iter().enumerate() {
            by_category.entry(joke.category.clone()).or_default().push(i);
        }
        Ok(Self { all, by_category })
    }

    /// The bundled corpus (parsed on first use; the file is checked by a test).
    pub fn bundled() -> &'static Corpus {
        static CORPUS: OnceLock<Corpus> = OnceLock::new();
        CORPUS.get_or_init(|| {
            Corpus::parse(include_str!("corpus.json")).unwrap_or_else(|e| {
                tracing::error!(error = %e, "bundled jokes corpus is malformed");
                Corpus { all: Vec::new(), by_category: BTreeMap::new() }
            })
        })
    }

    /// The categories, sorted.
    pub fn categories(&self) -> impl Iterator<Item = &str> {
        self.by_category.keys().map(String::as_str)
    }

    /// How many jokes there are.
    pub fn len(&self) -> usize {
        self.all.len()
    }

    /// Whether the corpus is empty.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// A random joke, from one category if asked.
    pub fn random(&self, category: Option<&str>) -> Result<Option<&Joke>, UnknownCategory> {
        let mut rng = rand::rng();
        match category {
            None => Ok(self.all.choose(&mut rng)),
            Some(asked) => {
                let key = asked.trim().to_ascii_lowercase();
                let indices = self.by_category.get(&key).ok_or_else(|| UnknownCategory {
                    asked: asked.to_string(),
                    known: self.categories().collect::<Vec<_>>().join(", "),
                })?;
                Ok(indices.choose(&mut rng).map(|&i| &self.all[i]))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_corpus_has_at_least_100_jokes_in_several_categories() {
        let corpus = Corpus::parse(include_str!("corpus.json")).expect("corpus.json parses");
        assert!(corpus.len() >= 100, "only {} jokes", corpus.len());
        assert!(corpus.categories().count() >= 5);
        let mut seen = std::collections::HashSet::new();
        for joke in &corpus.all {
            assert!(!joke.joke.trim().is_empty());
            assert!(seen.insert(joke.joke.as_str()), "duplicate joke: {}", joke.joke);
        }
    }

    #[test]
    fn a_joke_of_a_category_comes_from_that_category() {
        let corpus = Corpus::bundled();
        for _ in 0..50 {
            assert_eq!(corpus.random(Some("Science")).unwrap().unwrap().category, "science");
        }
    }

    #[test]
    fn an_unknown_category_lists_the_known_ones() {
        let err = Corpus::bundled().random(Some("knock-knock")).unwrap_err();
        assert!(err.known.contains("programming"), "{err}");
    }
}
