//! Where a peer service's instances are: asked of the registry, or fixed by
//! configuration (Kubernetes, where the platform's DNS does discovery).

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::ServiceConfig;
use crate::registry_client::{RegistryClient, RegistryError};

/// One reachable instance of a peer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Stable id (instance id, or the URL in static mode).
    pub id: String,
    /// `http://host:port`.
    pub base_url: String,
    /// Software version, when the registry knows it.
    pub version: String,
    /// Milliseconds since its last heartbeat (0 in static mode).
    pub last_heartbeat_ms_ago: u64,
}

impl Endpoint {
    /// `host:port`, without the scheme.
    pub fn address(&self) -> &str {
        self.base_url.split_once("://").map_or(self.base_url.as_str(), |(_, rest)| rest).trim_end_matches('/')
    }
}

/// The discovery mode.
#[derive(Debug, Clone)]
pub enum Discovery {
    /// Ask the registry.
    Registry(RegistryClient),
    /// A fixed list per service (`PEERS=svc=url,…`).
    Static(Arc<HashMap<String, Vec<String>>>),
}

/// Discovery failures.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The registry could not answer.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl Discovery {
    /// The mode a service's configuration asks for: registry when `REGISTRY_URL`
    /// is set, else the static `PEERS` list.
    pub fn from_config(config: &ServiceConfig) -> Self {
        match &config.registry_url {
            Some(url) => Self::Registry(RegistryClient::new(url)),
            None => {
                let mut map: HashMap<String, Vec<String>> = HashMap::new();
                for (name, url) in &config.static_peers {
                    map.entry(name.clone()).or_default().push(url.clone());
                }
                Self::Static(Arc::new(map))
            }
        }
    }

    /// The instances of `service` that can be called now.
    pub async fn endpoints(&self, service: &str) -> Result<Vec<Endpoint>, DiscoveryError> {
        match self {
            Self::Registry(client) => Ok(client
                .instances(service)
                .await?
                .into_iter()
                .map(|i| Endpoint {
                    base_url: i.base_url(),
                    id: i.instance_id,
                    version: i.version,
                    last_heartbeat_ms_ago: i.last_heartbeat_ms_ago,
                })
                .collect()),
            Self::Static(map) => Ok(map
                .get(service)
                .map(|urls| {
                    urls.iter()
                        .map(|u| Endpoint {
                            id: u.clone(),
                            base_url: u.clone(),
                            version: String::new(),
                            last_heartbeat_ms_ago: 0,
                        })
                        .collect()
                })
                .unwrap_or_default()),
        }
    }
}
