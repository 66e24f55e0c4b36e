//! Where a peer service's instances are: asked of the registry, or fixed by
//! configuration (Kubernetes, where the platform's DNS does discovery).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::backoff::Backoff;
use crate::config::ServiceConfig;
use crate::registry_client::{RegistryClient, RegistryError};
use crate::shutdown::Shutdown;

/// How long each long poll of [`Discovery::watch`] is held by the registry.
const WATCH_WAIT: Duration = Duration::from_secs(30);

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

    /// Waits until the instances of any service may have changed since `index` (the value of an
    /// earlier call; `None` answers at once), for at most `wait`, and returns the current index: a
    /// long poll of the registry's watch. A static list never changes: this never returns.
    pub async fn changes(&self, index: Option<u64>, wait: Duration) -> Result<u64, DiscoveryError> {
        match self {
            Self::Registry(client) => Ok(client.watch(index, wait).await?),
            Self::Static(_) => std::future::pending().await,
        }
    }

    /// Watches the registry in the background until `shutdown`: the returned [`Changes`] wakes its
    /// holder as soon as any instance registers, deregisters or is evicted, so that discovery need
    /// not poll. While the registry cannot be watched (unreachable, restarting) the loop retries with
    /// backoff and [`Changes::is_live`] says so, so the holder can fall back to polling.
    pub fn watch(&self, shutdown: Shutdown) -> Changes {
        let changes = Changes { wake: Arc::new(Notify::new()), live: Arc::new(AtomicBool::new(false)) };
        if let Self::Registry(_) = self {
            tokio::spawn(watch_loop(self.clone(), changes.clone(), shutdown));
        }
        changes
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

/// What [`Discovery::watch`] hands its holder.
#[derive(Debug, Clone)]
pub struct Changes {
    wake: Arc<Notify>,
    live: Arc<AtomicBool>,
}

impl Changes {
    /// Resolves once the instances changed since the last time it resolved (at once if they changed
    /// in between): time to look them up again.
    pub async fn changed(&self) {
        self.wake.notified().await;
    }

    /// Whether the registry is being watched right now; if not, changes may go unnoticed.
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Relaxed)
    }
}

async fn watch_loop(discovery: Discovery, changes: Changes, shutdown: Shutdown) {
    let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut index = None;
    let mut failures = 0u32;
    loop {
        let answer = tokio::select! {
            () = shutdown.cancelled() => return,
            answer = discovery.changes(index, WATCH_WAIT) => answer,
        };
        match answer {
            Ok(now) => {
                failures = 0;
                changes.live.store(true, Ordering::Relaxed);
                if index != Some(now) {
                    index = Some(now);
                    changes.wake.notify_one();
                }
            }
            Err(err) => {
                let delay = backoff.delay(failures);
                if failures == 0 {
                    tracing::warn!(error = %err, "cannot watch the registry; polling it until it answers again");
                }
                failures = failures.saturating_add(1);
                changes.live.store(false, Ordering::Relaxed);
                // Start over: whatever index we held may mean nothing to the registry that answers next.
                index = None;
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}
