//! Access tokens: Ed25519 signing keys (loaded, or generated once and kept
//! with mode 0600), JWTs signed with EdDSA, the JWKS that publishes the public
//! keys (current first, then the previous ones kept for rotation) and the
//! verification behind `POST /validate`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use kit::auth::{AuthError, Claims};
use kit::config::{ConfigError, Env, Source};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::Secret;

/// Name of the key file generated under `DATA_DIR` when no key is configured.
pub const GENERATED_KEY_FILE: &str = "auth-signing-key.pem";

/// Where the signing key comes from.
#[derive(Debug, Clone)]
pub enum SigningKeySource {
    /// PKCS#8 PEM text (`AUTH_SIGNING_KEY`).
    Pem(Secret<String>),
    /// A PKCS#8 PEM file (`AUTH_SIGNING_KEY_FILE`).
    File(PathBuf),
    /// The embedded default: a key generated on first start and kept in this
    /// file (mode 0600); a group- or world-readable file is refused.
    Generated(PathBuf),
    /// A fresh key per process, never written anywhere (tests).
    Ephemeral,
}

/// Which keys sign and which are published.
#[derive(Debug, Clone)]
pub struct KeyConfig {
    /// The key new tokens are signed with.
    pub signing: SigningKeySource,
    /// Keys from before a rotation (`AUTH_PREVIOUS_KEYS_FILES`): published and
    /// accepted, never used to sign.
    pub previous: Vec<PathBuf>,
}

impl KeyConfig {
    /// Reads `AUTH_SIGNING_KEY`, `AUTH_SIGNING_KEY_FILE` and
    /// `AUTH_PREVIOUS_KEYS_FILES`; with neither key variable set, the key is
    /// generated once under `data_dir`.
    pub fn from_env<S: Source>(env: &Env<S>, data_dir: &Path) -> Result<Self, ConfigError> {
        let pem = env.string("AUTH_SIGNING_KEY");
        let file = env.string("AUTH_SIGNING_KEY_FILE");
        let signing = match (pem, file) {
            (Some(_), Some(file)) => {
                return Err(ConfigError::Invalid {
                    name: "AUTH_SIGNING_KEY_FILE".into(),
                    value: file,
                    reason: "AUTH_SIGNING_KEY is set too; set only one of them".into(),
                })
            }
            (Some(pem), None) => SigningKeySource::Pem(Secret::new(pem)),
            (None, Some(file)) => SigningKeySource::File(PathBuf::from(file.trim())),
            (None, None) => SigningKeySource::Generated(data_dir.join(GENERATED_KEY_FILE)),
        };
        let previous = env
            .string("AUTH_PREVIOUS_KEYS_FILES")
            .map(|raw| raw.split(',').map(str::trim).filter(|p| !p.is_empty()).map(PathBuf::from).collect())
            .unwrap_or_default();
        Ok(Self { signing, previous })
    }
}

/// What tokens say and how long they last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenConfig {
    /// `iss` of issued tokens, and the only one accepted (`AUTH_ISSUER`, default `agora-auth`).
    pub issuer: String,
    /// `aud` of issued tokens, and the only one accepted (`AUTH_AUDIENCE`, default `agora`).
    pub audience: String,
    /// Lifetime of a token (`AUTH_TOKEN_TTL_SECS`, default 3600).
    pub ttl: Duration,
}

impl Default for TokenConfig {
    fn default() -> Self {
        let auth = kit::auth::AuthConfig::default();
        Self { issuer: auth.issuer, audience: auth.audience, ttl: Duration::from_secs(3600) }
    }
}

impl TokenConfig {
    /// Reads `AUTH_ISSUER`, `AUTH_AUDIENCE` (shared with every verifier) and `AUTH_TOKEN_TTL_SECS`.
    pub fn from_env<S: Source>(env: &Env<S>) -> Result<Self, ConfigError> {
        let auth = kit::auth::AuthConfig::from_env(env)?;
        let ttl: u64 = env.parse_or("AUTH_TOKEN_TTL_SECS", 3600)?;
        if ttl == 0 {
            return Err(ConfigError::Invalid {
                name: "AUTH_TOKEN_TTL_SECS".into(),
                value: "0".into(),
                reason: "a token must live at least one second".into(),
            });
        }
        Ok(Self { issuer: auth.issuer, audience: auth.audience, ttl: Duration::from_secs(ttl) })
    }
}

/// Why the keys could not be loaded (never includes key material).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key file could not be read.
    #[error("cannot read signing key {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The generated key could not be written.
    #[error("cannot write signing key {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The generated key file is readable by other users.
    #[error(
        "refusing to use signing key {path}: its mode is {mode:o}, readable by group or others; \
         run `chmod 600 {path}` (or delete it to generate a new key)"
    )]
    Insecure {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key is not an Ed25519 PKCS#8 PEM.
    #[error("signing key from {origin} is not usable: {reason}")]
    Malformed {
        /// Where it came from (a variable's name or a path).
        origin: String,
        /// What is wrong, without the key itself.
        reason: &'static str,
    },
    /// The task loading the keys died (it panicked or was cancelled).
    #[error("loading the signing keys was interrupted: {0}")]
    Interrupted(String),
    /// The system's random generator failed.
    #[error("cannot generate a signing key: the system random generator failed")]
    Random,
}

/// An Ed25519 key pair ready to sign.
struct SigningKey {
    kid: String,
    public: [u8; 32],
    encoding: EncodingKey,
}

/// One public key of the JWKS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Jwk {
    /// Key type: always `OKP`.
    pub kty: String,
    /// Curve: always `Ed25519`.
    pub crv: String,
    /// Algorithm: always `EdDSA`.
    pub alg: String,
    /// Use: always `sig`.
    #[serde(rename = "use")]
    pub use_: String,
    /// Key id, as in the `kid` header of the tokens it signed.
    pub kid: String,
    /// The 32-byte public key, base64url without padding.
    pub x: String,
}

/// `GET /.well-known/jwks.json`: the current key first, then the previous ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Jwks {
    /// The public keys.
    pub keys: Vec<Jwk>,
}

/// A freshly issued access token.
#[derive(Debug)]
pub struct Issued {
    /// The compact JWT.
    pub token: Secret<String>,
    /// What it says.
    pub claims: Claims,
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// Issues and verifies tokens with the configured keys.
pub struct Tokens {
    config: TokenConfig,
    signing: SigningKey,
    jwks: Jwks,
    decoding: HashMap<String, DecodingKey>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("config", &self.config)
            .field("kid", &self.signing.kid)
            .field("published", &self.jwks.keys.len())
            .finish()
    }
}

impl Tokens {
    /// Loads (or generates) the keys; blocking file I/O, call it off the async runtime.
    pub fn load(keys: &KeyConfig, config: TokenConfig) -> Result<Self, KeyError> {
        let (der, origin) = match &keys.signing {
            SigningKeySource::Pem(pem) => {
                (der_from_pem(pem.expose(), "AUTH_SIGNING_KEY")?, "AUTH_SIGNING_KEY".to_string())
            }
            SigningKeySource::File(path) => {
                warn_if_readable_by_others(path);
                (read_pem_file(path)?, path.display().to_string())
            }
            SigningKeySource::Generated(path) => (load_or_generate(path)?, path.display().to_string()),
            SigningKeySource::Ephemeral => (generate_pkcs8()?, "a generated key".to_string()),
        };
        let signing = signing_key(&der, &origin)?;
        let mut published = vec![(signing.kid.clone(), signing.public)];
        for path in &keys.previous {
            let der = read_pem_file(path)?;
            let key = signing_key(&der, &path.display().to_string())?;
            if published.iter().all(|(kid, _)| *kid != key.kid) {
                published.push((key.kid, key.public));
            }
        }
        let mut decoding = HashMap::new();
        let mut jwks = Jwks { keys: Vec::new() };
        for (kid, public) in published {
            let x = URL_SAFE_NO_PAD.encode(public);
            let key = DecodingKey::from_ed_components(&x).map_err(|_| KeyError::Malformed {
                origin: kid.clone(),
                reason: "its public key cannot be used to verify",
            })?;
            decoding.insert(kid.clone(), key);
            jwks.keys.push(Jwk {
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                alg: "EdDSA".into(),
                use_: "sig".into(),
                kid,
                x,
            });
        }
        Ok(Self { config, signing, jwks, decoding })
    }

    /// The id of the key new tokens are signed with.
    pub fn current_kid(&self) -> &str {
        &self.signing.kid
    }

    /// The published public keys.
    pub fn jwks(&self) -> &Jwks {
        &self.jwks
    }

    /// The token settings.
    pub fn config(&self) -> &TokenConfig {
        &self.config
    }

    /// Signs a token for a user, valid from `now` for the configured lifetime.
    pub fn issue(
        &self,
        user_id: &str,
        username: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Issued, jsonwebtoken::errors::Error> {
        let iat = now.timestamp();
        let ttl = self.config.ttl.as_secs();
        let claims = Claims {
            sub: user_id.to_string(),
            name: username.to_string(),
            iss: self.config.issuer.clone(),
            aud: self.config.audience.clone(),
            iat,
            exp: iat.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)),
            jti: uuid::Uuid::new_v4().to_string(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.signing.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.signing.encoding)?;
        Ok(Issued { token: Secret::new(token), claims, expires_in: ttl })
    }

    /// Checks a token: EdDSA only (`none` and symmetric algorithms are refused
    /// before any key is looked at), signed by a published key named by its
    /// `kid`, with our issuer and audience, not expired.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let invalid = |why: &str| AuthError::Invalid(why.to_string());
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("malformed token"))?;
        if header.alg != Algorithm::EdDSA {
            return Err(invalid("algorithm not accepted"));
        }
        let kid = header.kid.ok_or_else(|| invalid("the token names no key (kid)"))?;
        let key = self.decoding.get(&kid).ok_or_else(|| invalid("signed by an unknown key"))?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.algorithms = vec![Algorithm::EdDSA];
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        jsonwebtoken::decode::<Claims>(token, key, &validation).map(|data| data.claims).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            invalid(match e.kind() {
                ErrorKind::ExpiredSignature => "the token has expired",
                ErrorKind::InvalidIssuer => "wrong issuer",
                ErrorKind::InvalidAudience => "wrong audience",
                ErrorKind::InvalidSignature => "bad signature",
                ErrorKind::InvalidAlgorithm => "algorithm not accepted",
                _ => "malformed token",
            })
        })
    }
}

/// The key id of an Ed25519 public key: the first 16 hex digits of its SHA-256.
pub fn kid_of(public: &[u8]) -> String {
    Sha256::digest(public).iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// A new Ed25519 key as PKCS#8 PEM (for operators rotating keys, and tests).
pub fn generate_pem() -> Result<Secret<String>, KeyError> {
    let der = generate_pkcs8()?;
    Ok(Secret::new(pem_from_der(der.expose())))
}

fn generate_pkcs8() -> Result<Secret<Vec<u8>>, KeyError> {
    let rng = ring::rand::SystemRandom::new();
    Ed25519KeyPair::generate_pkcs8(&rng).map(|doc| Secret::new(doc.as_ref().to_vec())).map_err(|_| KeyError::Random)
}

fn signing_key(der: &Secret<Vec<u8>>, origin: &str) -> Result<SigningKey, KeyError> {
    let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.expose()).map_err(|_| KeyError::Malformed {
        origin: origin.to_string(),
        reason: "not an Ed25519 private key in PKCS#8 form",
    })?;
    let public: [u8; 32] = pair
        .public_key()
        .as_ref()
        .try_into()
        .map_err(|_| KeyError::Malformed { origin: origin.to_string(), reason: "its public key is not 32 bytes" })?;
    Ok(SigningKey { kid: kid_of(&public), public, encoding: EncodingKey::from_ed_der(der.expose()) })
}

const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";

fn pem_from_der(der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut pem = String::from(PEM_BEGIN);
    pem.push('\n');
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str(PEM_END);
    pem.push('\n');
    pem
}

/// The DER inside a `PRIVATE KEY` PEM block; tolerates `\n` written as two
/// characters, as environment variables often carry it.
fn der_from_pem(pem: &str, origin: &str) -> Result<Secret<Vec<u8>>, KeyError> {
    let malformed = |reason| KeyError::Malformed { origin: origin.to_string(), reason };
    let start =
        pem.find(PEM_BEGIN).ok_or_else(|| malformed("no -----BEGIN PRIVATE KEY----- block (PKCS#8 PEM expected)"))?
            + PEM_BEGIN.len();
    let end = pem[start..].find(PEM_END).ok_or_else(|| malformed("the PEM block has no END line"))? + start;
    let body: String = pem[start..end].replace("\\n", "").chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD.decode(body).map(Secret::new).map_err(|_| malformed("the PEM body is not valid base64"))
}

fn read_pem_file(path: &Path) -> Result<Secret<Vec<u8>>, KeyError> {
    let pem = std::fs::read_to_string(path).map_err(|source| KeyError::Read { path: path.to_path_buf(), source })?;
    der_from_pem(&pem, &path.display().to_string())
}

#[cfg(unix)]
fn mode_of(path: &Path) -> Result<u32, KeyError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o777)
        .map_err(|source| KeyError::Read { path: path.to_path_buf(), source })
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    if let Ok(mode) = mode_of(path) {
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "the signing key file is readable by group or others");
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// The embedded default: read the key kept at `path`, or generate it there
/// once. Written to a private temporary file first and linked into place, so
/// that a crash never leaves half a key and two replicas starting together
/// on one data directory end up with the same key.
fn load_or_generate(path: &Path) -> Result<Secret<Vec<u8>>, KeyError> {
    if !path.exists() {
        generate_into(path)?;
    }
    #[cfg(unix)]
    {
        let mode = mode_of(path)?;
        if mode & 0o077 != 0 {
            return Err(KeyError::Insecure { path: path.to_path_buf(), mode });
        }
    }
    read_pem_file(path)
}

fn generate_into(path: &Path) -> Result<(), KeyError> {
    let write_err = |source| KeyError::Write { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(write_err)?;
    }
    let pem = generate_pem()?;
    let file_name =
        path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| GENERATED_KEY_FILE.to_string());
    let tmp = path.with_file_name(format!(".{file_name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = options.open(&tmp).and_then(|mut file| {
        file.write_all(pem.expose().as_bytes())?;
        file.sync_all()
    });
    if let Err(source) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(write_err(source));
    }
    // `hard_link` fails if `path` exists: whoever linked first wins, atomically.
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            tracing::info!(path = %path.display(), "generated a new signing key");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(write_err(source)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pem_round_trips_and_its_kid_is_stable() {
        let pem = generate_pem().unwrap();
        let der = der_from_pem(pem.expose(), "test").unwrap();
        let a = signing_key(&der, "test").unwrap();
        let escaped = pem.expose().replace('\n', "\\n");
        let b = signing_key(&der_from_pem(&escaped, "test").unwrap(), "test").unwrap();
        assert_eq!(a.kid, b.kid);
        assert_eq!(a.kid.len(), 16);
        assert!(a.kid.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn a_bad_key_is_refused_without_echoing_it() {
        let err = der_from_pem("-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----", "AUTH_SIGNING_KEY")
            .and_then(|der| signing_key(&der, "AUTH_SIGNING_KEY").map(|_| der))
            .unwrap_err()
            .to_string();
        assert!(err.contains("AUTH_SIGNING_KEY"), "{err}");
        assert!(!err.contains("c2VjcmV0"), "{err}");
        assert!(der_from_pem("hello", "x").is_err());
    }

    #[test]
    fn issued_tokens_verify_and_carry_exactly_the_agreed_claims() {
        let tokens =
            Tokens::load(&KeyConfig { signing: SigningKeySource::Ephemeral, previous: vec![] }, TokenConfig::default())
                .unwrap();
        let issued = tokens.issue("42", "alice", chrono::Utc::now()).unwrap();
        let claims = tokens.verify(issued.token.expose()).unwrap();
        assert_eq!(claims, issued.claims);
        assert_eq!(claims.exp - claims.iat, 3600);
        assert_eq!(format!("{issued:?}").matches("eyJ").count(), 0);
        assert_eq!(tokens.jwks().keys[0].kid, tokens.current_kid());
    }
}
