//! Typed configuration from the environment (12-factor).
//!
//! Every variable is parsed once at start; a bad value stops the service with
//! a message naming the variable, never a bare `KeyError` deep inside the code.

use std::fmt::Display;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

/// A configuration problem, always naming the variable at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A required variable is not set.
    #[error("configuration error: {name} is not set ({hint})")]
    Missing {
        /// The variable's name.
        name: String,
        /// What a valid value looks like.
        hint: String,
    },
    /// A variable is set to something that does not parse.
    #[error("configuration error: {name}={value:?} is invalid: {reason}")]
    Invalid {
        /// The variable's name.
        name: String,
        /// The raw value found (secrets are never passed here).
        value: String,
        /// Why it was rejected.
        reason: String,
    },
}

/// Where variables are read from: the process environment, or a fixed map in tests.
pub trait Source {
    /// The raw value of `name`, if set and not empty.
    fn get(&self, name: &str) -> Option<String>;
}

/// Reads from the real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Source for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }
}

impl<const N: usize> Source for [(&str, &str); N] {
    fn get(&self, name: &str) -> Option<String> {
        self.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string()).filter(|v| !v.trim().is_empty())
    }
}

impl Source for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<String> {
        self.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).filter(|v| !v.trim().is_empty())
    }
}

/// A typed view over a [`Source`]: every getter names the variable in its error.
pub struct Env<S: Source = ProcessEnv> {
    source: S,
}

impl Env<ProcessEnv> {
    /// The process environment.
    pub fn process() -> Self {
        Self { source: ProcessEnv }
    }
}

impl<S: Source> Env<S> {
    /// Wraps any source (tests use arrays of pairs).
    pub fn new(source: S) -> Self {
        Self { source }
    }

    /// The raw string, if set.
    pub fn string(&self, name: &str) -> Option<String> {
        self.source.get(name)
    }

    /// The raw string, or `default`.
    pub fn string_or(&self, name: &str, default: &str) -> String {
        self.string(name).unwrap_or_else(|| default.to_string())
    }

    /// A required raw string.
    pub fn required(&self, name: &str, hint: &str) -> Result<String, ConfigError> {
        self.string(name).ok_or_else(|| ConfigError::Missing { name: name.to_string(), hint: hint.to_string() })
    }

    /// Any `FromStr` value, or `default` when unset.
    pub fn parse_or<T>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.string(name) {
            None => Ok(default),
            Some(raw) => raw.trim().parse().map_err(|e: T::Err| ConfigError::Invalid {
                name: name.to_string(),
                value: raw.clone(),
                reason: e.to_string(),
            }),
        }
    }

    /// An optional `FromStr` value.
    pub fn parse_opt<T>(&self, name: &str) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.string(name) {
            None => Ok(None),
            Some(raw) => raw.trim().parse().map(Some).map_err(|e: T::Err| ConfigError::Invalid {
                name: name.to_string(),
                value: raw.clone(),
                reason: e.to_string(),
            }),
        }
    }

    /// A TCP port (0 means "any free port").
    pub fn port_or(&self, name: &str, default: u16) -> Result<u16, ConfigError> {
        match self.string(name) {
            None => Ok(default),
            Some(raw) => raw.trim().parse::<u16>().map_err(|_| ConfigError::Invalid {
                name: name.to_string(),
                value: raw.clone(),
                reason: "expected a port number between 0 and 65535".into(),
            }),
        }
    }

    /// A boolean (`true/false/1/0/yes/no/on/off`).
    pub fn bool_or(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        match self.string(name) {
            None => Ok(default),
            Some(raw) => match raw.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" => Ok(false),
                _ => Err(ConfigError::Invalid {
                    name: name.to_string(),
                    value: raw,
                    reason: "expected true or false".into(),
                }),
            },
        }
    }

    /// A duration in seconds (fractions allowed: `0.5`), or `default`.
    pub fn secs_or(&self, name: &str, default: Duration) -> Result<Duration, ConfigError> {
        match self.string(name) {
            None => Ok(default),
            Some(raw) => match raw.trim().parse::<f64>() {
                Ok(s) if (0.0..1e9).contains(&s) => Ok(Duration::from_secs_f64(s)),
                _ => Err(ConfigError::Invalid {
                    name: name.to_string(),
                    value: raw,
                    reason: "expected a non-negative number of seconds".into(),
                }),
            },
        }
    }

    /// A URL with one of the given schemes.
    pub fn url_opt(&self, name: &str, schemes: &[&str]) -> Result<Option<url::Url>, ConfigError> {
        let Some(raw) = self.string(name) else {
            return Ok(None);
        };
        let invalid = |reason: String| ConfigError::Invalid { name: name.to_string(), value: redact_url(&raw), reason };
        let parsed = url::Url::parse(raw.trim()).map_err(|e| invalid(e.to_string()))?;
        if !schemes.is_empty() && !schemes.contains(&parsed.scheme()) {
            return Err(invalid(format!("expected a URL starting with {}", schemes.join(":// or ") + "://")));
        }
        Ok(Some(parsed))
    }
}

/// Where a service keeps its files: `DATA_DIR`, default `./data` (SQLite databases, the
/// embedded job queue and event bus, auth's signing key).
pub fn data_dir<S: Source>(env: &Env<S>) -> std::path::PathBuf {
    std::path::PathBuf::from(env.string_or("DATA_DIR", "./data"))
}

/// The URL with its password replaced by `***`, safe to log and show.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) if raw.contains('@') => "<unparseable URL>".to_string(),
        Err(_) => raw.to_string(),
    }
}

/// What every Agora service reads from the environment, whatever its domain.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The service's name as registered (`jokes`, `gateway`, …).
    pub name: String,
    /// Address to listen on (`HOST` + `PORT`).
    pub listen: SocketAddr,
    /// Address peers should use to reach us (`ADVERTISE_ADDR`), when it differs from `listen`.
    pub advertise: Option<String>,
    /// Registry to register with (`REGISTRY_URL`); `None` for static discovery.
    pub registry_url: Option<url::Url>,
    /// Static peers (`PEERS=jokes=http://jokes:8080,auth=http://auth:8080`) for Kubernetes/DNS mode.
    pub static_peers: Vec<(String, String)>,
    /// How long in-flight requests get to finish at shutdown (`SHUTDOWN_TIMEOUT_SECS`).
    pub shutdown_timeout: Duration,
    /// Heartbeat period towards the registry (`HEARTBEAT_SECS`).
    pub heartbeat: Duration,
    /// Instance id (`INSTANCE_ID`), generated when unset.
    pub instance_id: String,
}

impl ServiceConfig {
    /// Reads the common variables; `default_port` applies when `PORT` is unset.
    pub fn from_env<S: Source>(env: &Env<S>, name: &str, default_port: u16) -> Result<Self, ConfigError> {
        let host: IpAddr = env.parse_or("HOST", IpAddr::from([127, 0, 0, 1]))?;
        let port = env.port_or("PORT", default_port)?;
        let registry_url = env.url_opt("REGISTRY_URL", &["http", "https"])?;
        let static_peers = match env.string("PEERS") {
            None => Vec::new(),
            Some(raw) => parse_peers(&raw).map_err(|reason| ConfigError::Invalid {
                name: "PEERS".into(),
                value: raw.clone(),
                reason,
            })?,
        };
        let instance_id = env
            .string("INSTANCE_ID")
            .unwrap_or_else(|| format!("{name}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]));
        Ok(Self {
            name: name.to_string(),
            listen: SocketAddr::new(host, port),
            advertise: env.string("ADVERTISE_ADDR"),
            registry_url,
            static_peers,
            shutdown_timeout: env.secs_or("SHUTDOWN_TIMEOUT_SECS", Duration::from_secs(10))?,
            heartbeat: env.secs_or("HEARTBEAT_SECS", Duration::from_secs(2))?,
            instance_id,
        })
    }

    /// A config for tests: port 0 on loopback, the given registry.
    pub fn for_tests(name: &str, registry_url: Option<url::Url>) -> Self {
        Self {
            name: name.to_string(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            registry_url,
            static_peers: Vec::new(),
            shutdown_timeout: Duration::from_secs(5),
            heartbeat: Duration::from_millis(200),
            instance_id: format!("{name}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        }
    }
}

fn parse_peers(raw: &str) -> Result<Vec<(String, String)>, String> {
    raw.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            let (name, url) =
                pair.split_once('=').ok_or_else(|| format!("{pair:?} is not of the form service=http://host:port"))?;
            url::Url::parse(url.trim()).map_err(|e| format!("{url:?}: {e}"))?;
            Ok((name.trim().to_string(), url.trim().trim_end_matches('/').to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_appear_in_shown_urls() {
        assert_eq!(redact_url("postgres://app:s3cret@db:5432/projects"), "postgres://app:***@db:5432/projects");
        assert_eq!(redact_url("postgres://db/projects"), "postgres://db/projects");
        assert!(!redact_url("postgres://app:s3cret@[bad").contains("s3cret"));
    }

    #[test]
    fn a_bad_port_names_the_variable() {
        let env = Env::new([("PORT", "eighty")]);
        let err = ServiceConfig::from_env(&env, "jokes", 8000).unwrap_err();
        assert_eq!(
            err.to_string(),
            "configuration error: PORT=\"eighty\" is invalid: expected a port number between 0 and 65535"
        );
    }

    #[test]
    fn a_missing_required_variable_names_it_and_says_what_is_expected() {
        let env = Env::new([("OTHER", "x")]);
        let err = env.required("DATABASE_URL", "e.g. postgres://user@host/db").unwrap_err();
        assert!(err.to_string().contains("DATABASE_URL is not set"), "{err}");
    }

    #[test]
    fn a_url_with_the_wrong_scheme_is_rejected_without_leaking_its_password() {
        let env = Env::new([("REGISTRY_URL", "ftp://user:hunter2@registry")]);
        let err = ServiceConfig::from_env(&env, "jokes", 0).unwrap_err().to_string();
        assert!(err.contains("REGISTRY_URL"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn durations_booleans_and_defaults_parse() {
        let env = Env::new([("T", "0.25"), ("B", "yes"), ("BAD", "-1")]);
        assert_eq!(env.secs_or("T", Duration::ZERO).unwrap(), Duration::from_millis(250));
        assert!(env.bool_or("B", false).unwrap());
        assert!(env.secs_or("BAD", Duration::ZERO).is_err());
        assert_eq!(env.port_or("UNSET", 8080).unwrap(), 8080);
    }

    #[test]
    fn static_peers_parse_and_bad_ones_are_named() {
        let env = Env::new([("PEERS", "jokes=http://jokes:8080/, auth=http://auth:80")]);
        let cfg = ServiceConfig::from_env(&env, "gateway", 0).unwrap();
        assert_eq!(cfg.static_peers[0], ("jokes".into(), "http://jokes:8080".into()));
        let env = Env::new([("PEERS", "jokes")]);
        let err = ServiceConfig::from_env(&env, "gateway", 0).unwrap_err().to_string();
        assert!(err.contains("PEERS"), "{err}");
    }
}
