//! TLS for gRPC between services: the server's identity and the CA its
//! clients trust, read and checked from the environment at start.

use std::path::Path;

use tonic::transport::{Identity, Server, ServerTlsConfig};

use super::client::client_endpoint;
use crate::config::{ConfigError, Env, Source};

/// The name clients verify in the server's certificate when `GRPC_TLS_DOMAIN` is unset.
pub const DEFAULT_TLS_DOMAIN: &str = "localhost";

/// TLS for gRPC between services (rustls): the identity a server presents, and
/// the CA a client trusts. Either side may be off; with neither, gRPC runs in
/// plaintext, which is what `agora up` on one machine uses.
#[derive(Clone, Default)]
pub struct GrpcTls {
    /// The server's certificate chain and private key (PEM).
    pub(super) identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The CA clients trust (PEM), and the name they verify.
    pub(super) client: Option<(Vec<u8>, String)>,
}

impl std::fmt::Debug for GrpcTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcTls")
            .field("server_identity", &self.identity.as_ref().map(|_| "[set; key redacted]"))
            .field("client_domain", &self.client.as_ref().map(|(_, domain)| domain.as_str()))
            .finish()
    }
}

/// Where a PEM file was supposed to be read from, for error messages.
fn read_pem(variable: &str, path: &str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(Path::new(path)).map_err(|e| ConfigError::Invalid {
        name: variable.to_string(),
        value: path.to_string(),
        reason: format!("cannot read the file: {e}"),
    })
}

fn require_pem(variable: &str, path: &str, pem: &[u8], marker: &str) -> Result<(), ConfigError> {
    let text = String::from_utf8_lossy(pem);
    if text.contains("-----BEGIN") && text.contains(marker) {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            name: variable.to_string(),
            value: path.to_string(),
            reason: format!("expected a PEM file containing a {}", marker.trim_matches('-')),
        })
    }
}

impl GrpcTls {
    /// Reads `GRPC_TLS_CERT_FILE` + `GRPC_TLS_KEY_FILE` (the server's identity,
    /// both or neither), `GRPC_TLS_CA_FILE` (the CA clients trust; when set,
    /// clients speak TLS) and `GRPC_TLS_DOMAIN` (the name clients verify,
    /// default `localhost`). Files are read and checked now, so a bad one stops
    /// the start with the variable's name instead of failing the first call.
    pub fn from_env<S: Source>(env: &Env<S>) -> Result<Self, ConfigError> {
        let cert = env.string("GRPC_TLS_CERT_FILE");
        let key = env.string("GRPC_TLS_KEY_FILE");
        let identity = match (cert, key) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::Missing {
                    name: "GRPC_TLS_KEY_FILE".into(),
                    hint: "GRPC_TLS_CERT_FILE is set, so the server also needs its private key (PEM file)".into(),
                })
            }
            (None, Some(_)) => {
                return Err(ConfigError::Missing {
                    name: "GRPC_TLS_CERT_FILE".into(),
                    hint: "GRPC_TLS_KEY_FILE is set, so the server also needs its certificate (PEM file)".into(),
                })
            }
            (Some(cert_path), Some(key_path)) => {
                let cert = read_pem("GRPC_TLS_CERT_FILE", &cert_path)?;
                require_pem("GRPC_TLS_CERT_FILE", &cert_path, &cert, "CERTIFICATE-----")?;
                let key = read_pem("GRPC_TLS_KEY_FILE", &key_path)?;
                require_pem("GRPC_TLS_KEY_FILE", &key_path, &key, "PRIVATE KEY-----")?;
                // rustls checks the pair (parsable, key matching the certificate) when building the acceptor.
                let config = ServerTlsConfig::new().identity(Identity::from_pem(&cert, &key));
                if let Err(e) = Server::builder().tls_config(config) {
                    return Err(ConfigError::Invalid {
                        name: "GRPC_TLS_KEY_FILE".into(),
                        value: key_path,
                        reason: format!("not usable with the certificate of GRPC_TLS_CERT_FILE={cert_path}: {e}"),
                    });
                }
                Some((cert, key))
            }
        };
        let domain = env.string_or("GRPC_TLS_DOMAIN", DEFAULT_TLS_DOMAIN).trim().to_string();
        let client = match env.string("GRPC_TLS_CA_FILE") {
            None => None,
            Some(ca_path) => {
                let ca = read_pem("GRPC_TLS_CA_FILE", &ca_path)?;
                require_pem("GRPC_TLS_CA_FILE", &ca_path, &ca, "CERTIFICATE-----")?;
                if let Err(e) = client_endpoint("https://localhost", &ca, &domain) {
                    return Err(ConfigError::Invalid {
                        name: "GRPC_TLS_CA_FILE".into(),
                        value: ca_path,
                        reason: e.to_string(),
                    });
                }
                Some((ca, domain))
            }
        };
        Ok(Self { identity, client })
    }

    /// Plaintext both ways.
    pub fn none() -> Self {
        Self::default()
    }

    /// A server presenting this certificate chain and private key (PEM); its
    /// clients stay plaintext unless [`GrpcTls::with_client`] is added.
    pub fn server(cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        Self { identity: Some((cert_pem.into(), key_pem.into())), client: None }
    }

    /// Clients that connect over TLS, trusting `ca_pem` and verifying `domain`.
    pub fn client(ca_pem: impl Into<Vec<u8>>, domain: impl Into<String>) -> Self {
        Self::none().with_client(ca_pem, domain)
    }

    /// Adds the client side to these settings (a service that both serves and calls).
    pub fn with_client(mut self, ca_pem: impl Into<Vec<u8>>, domain: impl Into<String>) -> Self {
        self.client = Some((ca_pem.into(), domain.into()));
        self
    }

    /// Whether servers present a certificate.
    pub fn is_server_tls(&self) -> bool {
        self.identity.is_some()
    }

    /// Whether clients connect with `https` and verify the server against the CA.
    pub fn is_client_tls(&self) -> bool {
        self.client.is_some()
    }
}
