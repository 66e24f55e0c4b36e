//! Password hashing with argon2id. Hashing is deliberately slow and
//! memory-hungry, so it runs on the blocking pool (never on the async
//! runtime) and at most a few hashes run at once (each takes
//! `AUTH_ARGON2_MEMORY_KIB`), queueing the rest instead of exhausting memory.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use kit::config::{ConfigError, Env, Source};
use ring::rand::SecureRandom;
use tokio::sync::Semaphore;

use crate::domain::Secret;

/// The argon2id cost of new hashes (existing hashes keep the cost they were made with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordConfig {
    /// Memory per hash in KiB (`AUTH_ARGON2_MEMORY_KIB`, default 19456: OWASP's 19 MiB).
    pub memory_kib: u32,
    /// Passes over that memory (`AUTH_ARGON2_ITERATIONS`, default 2).
    pub iterations: u32,
    /// Hashes computed at once (`AUTH_MAX_CONCURRENT_HASHES`, default: the number of CPUs).
    pub max_concurrent: usize,
}

impl Default for PasswordConfig {
    fn default() -> Self {
        Self {
            memory_kib: 19_456,
            iterations: 2,
            max_concurrent: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

impl PasswordConfig {
    /// Cheap parameters, for tests only.
    pub fn cheap() -> Self {
        Self { memory_kib: Params::MIN_M_COST.max(64), iterations: 1, max_concurrent: 8 }
    }

    /// Reads `AUTH_ARGON2_MEMORY_KIB`, `AUTH_ARGON2_ITERATIONS`, `AUTH_MAX_CONCURRENT_HASHES`.
    pub fn from_env<S: Source>(env: &Env<S>) -> Result<Self, ConfigError> {
        let d = Self::default();
        let config = Self {
            memory_kib: env.parse_or("AUTH_ARGON2_MEMORY_KIB", d.memory_kib)?,
            iterations: env.parse_or("AUTH_ARGON2_ITERATIONS", d.iterations)?,
            max_concurrent: env.parse_or("AUTH_MAX_CONCURRENT_HASHES", d.max_concurrent)?,
        };
        let invalid = |name: &str, value: u64, reason: String| ConfigError::Invalid {
            name: name.into(),
            value: value.to_string(),
            reason,
        };
        if config.memory_kib < Params::MIN_M_COST {
            return Err(invalid(
                "AUTH_ARGON2_MEMORY_KIB",
                config.memory_kib.into(),
                format!("expected at least {} KiB", Params::MIN_M_COST),
            ));
        }
        if config.iterations < Params::MIN_T_COST {
            return Err(invalid(
                "AUTH_ARGON2_ITERATIONS",
                config.iterations.into(),
                format!("expected at least {}", Params::MIN_T_COST),
            ));
        }
        if config.max_concurrent == 0 {
            return Err(invalid("AUTH_MAX_CONCURRENT_HASHES", 0, "expected at least 1".into()));
        }
        Ok(config)
    }

    fn argon2(&self) -> Result<Argon2<'static>, HashError> {
        let params = Params::new(self.memory_kib, self.iterations, 1, None)
            .map_err(|e| HashError(format!("invalid argon2 parameters: {e}")))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

/// Hashing failed (bad parameters, a corrupt stored hash, a crashed worker).
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// Hashes and verifies passwords off the async runtime.
pub struct Hasher {
    argon2: Argon2<'static>,
    permits: Arc<Semaphore>,
    /// Verified against when the user does not exist, so that an unknown name
    /// costs as much time as a wrong password.
    dummy: String,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher").finish_non_exhaustive()
    }
}

impl Hasher {
    /// A hasher with `config`'s cost (computes the dummy hash once).
    pub async fn new(config: PasswordConfig) -> Result<Self, HashError> {
        let argon2 = config.argon2()?;
        let permits = Arc::new(Semaphore::new(config.max_concurrent.max(1)));
        let mut hasher = Self { argon2, permits, dummy: String::new() };
        let mut noise = [0u8; 24];
        ring::rand::SystemRandom::new()
            .fill(&mut noise)
            .map_err(|_| HashError("the system random generator failed".into()))?;
        let dummy = noise.iter().map(|b| format!("{b:02x}")).collect::<String>();
        hasher.dummy = hasher.hash(Secret::new(dummy)).await?;
        Ok(hasher)
    }

    /// The PHC string (`$argon2id$v=19$m=…`) of a new hash of `password`.
    pub async fn hash(&self, password: Secret<String>) -> Result<String, HashError> {
        let argon2 = self.argon2.clone();
        self.blocking(move || {
            let mut salt = [0u8; 16];
            ring::rand::SystemRandom::new()
                .fill(&mut salt)
                .map_err(|_| HashError("the system random generator failed".into()))?;
            let salt = SaltString::encode_b64(&salt).map_err(|e| HashError(e.to_string()))?;
            argon2
                .hash_password(password.expose().as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| HashError(e.to_string()))
        })
        .await
    }

    /// Whether `password` matches the stored hash; with no stored hash (unknown
    /// user) it checks against the dummy hash and answers `false`, taking as long.
    pub async fn verify(&self, password: Secret<String>, stored: Option<String>) -> Result<bool, HashError> {
        let known = stored.is_some();
        let phc = stored.unwrap_or_else(|| self.dummy.clone());
        let argon2 = self.argon2.clone();
        let matches = self
            .blocking(move || {
                let parsed =
                    PasswordHash::new(&phc).map_err(|e| HashError(format!("stored hash is unreadable: {e}")))?;
                Ok(argon2.verify_password(password.expose().as_bytes(), &parsed).is_ok())
            })
            .await?;
        Ok(known && matches)
    }

    async fn blocking<T, F>(&self, work: F) -> Result<T, HashError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, HashError> + Send + 'static,
    {
        let _permit = self.permits.acquire().await.map_err(|_| HashError("the hasher is shut down".into()))?;
        tokio::task::spawn_blocking(work).await.map_err(|e| HashError(format!("hashing task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_password_verifies_against_its_own_hash_only() {
        let hasher = Hasher::new(PasswordConfig::cheap()).await.unwrap();
        let phc = hasher.hash(Secret::new("correct horse".into())).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{phc}");
        let ok = |pw: &str| Secret::new(pw.to_string());
        assert!(hasher.verify(ok("correct horse"), Some(phc.clone())).await.unwrap());
        assert!(!hasher.verify(ok("wrong horse"), Some(phc.clone())).await.unwrap());
        assert!(!hasher.verify(ok("correct horse"), None).await.unwrap());
    }

    #[test]
    fn a_too_small_memory_cost_names_its_variable() {
        let env = Env::new([("AUTH_ARGON2_MEMORY_KIB", "1")]);
        let err = PasswordConfig::from_env(&env).unwrap_err().to_string();
        assert!(err.contains("AUTH_ARGON2_MEMORY_KIB"), "{err}");
    }
}
