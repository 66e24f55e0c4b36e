//! What the gateway knows about each upstream service: its instances (from the
//! registry, refreshed in the background, never on the request path), their
//! readiness, a circuit breaker, and request/error rates for `/status`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use kit::circuit_breaker::{BreakerConfig, CircuitBreaker, CircuitState};
use kit::discovery::{Discovery, Endpoint};
use serde::{Deserialize, Serialize};

use http::HeaderValue;

/// One running process of an upstream, as the gateway sees it.
#[derive(Debug)]
pub struct Instance {
    /// Registry instance id.
    pub id: String,
    /// `host:port`: where requests go, their `Host` header (so a valid header value), and the
    /// key of the connection pools.
    pub address: Arc<str>,
    /// Software version.
    pub version: String,
    /// Whether its `/readyz` answered 200 at the last probe.
    pub ready: AtomicBool,
    /// Whether that answer said `degraded`: one of its backends (database, queue) is down, and it
    /// answers what it can (503s with `Retry-After`, stale pages). It stays in rotation.
    pub degraded: AtomicBool,
    /// The event subscriptions it consumes, with their lag, as its last `/readyz` said.
    pub subscriptions: RwLock<Vec<SubscriptionLag>>,
    /// Not picked before this time (ms since the gateway started): set after a connection failure.
    ejected_until_ms: AtomicU64,
    /// Milliseconds since its last heartbeat, as the registry said.
    pub last_heartbeat_ms_ago: AtomicU64,
}

/// One upstream service.
#[derive(Debug)]
pub struct Upstream {
    /// Its registry name.
    pub name: &'static str,
    /// Trips after consecutive failures of the service as a whole.
    pub breaker: CircuitBreaker,
    instances: RwLock<Arc<Vec<Arc<Instance>>>>,
    next: AtomicUsize,
    requests: AtomicU64,
    errors: AtomicU64,
    rates: RwLock<Rates>,
    refreshed: AtomicBool,
    epoch: Instant,
}

#[derive(Debug, Clone, Copy, Default)]
struct Rates {
    at: Option<Instant>,
    requests: u64,
    errors: u64,
    rps: f64,
    error_rate: f64,
}

impl Upstream {
    fn new(name: &'static str, breaker: BreakerConfig, epoch: Instant) -> Self {
        Self {
            name,
            breaker: CircuitBreaker::new(breaker),
            instances: RwLock::new(Arc::new(Vec::new())),
            next: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            rates: RwLock::new(Rates::default()),
            refreshed: AtomicBool::new(false),
            epoch,
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The current instances.
    pub fn instances(&self) -> Arc<Vec<Arc<Instance>>> {
        self.instances.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Round-robin over ready, non-ejected instances; falls back to any instance
    /// (a stale readiness probe must not make a live service unreachable).
    pub fn pick(&self, avoid: Option<&str>) -> Option<Arc<Instance>> {
        self.pick_from(&self.instances(), avoid)
    }

    /// [`Upstream::pick`] from a snapshot the caller already holds (see [`Upstream::instances`]).
    pub fn pick_from(&self, instances: &[Arc<Instance>], avoid: Option<&str>) -> Option<Arc<Instance>> {
        if instances.is_empty() {
            return None;
        }
        let now = self.now_ms();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = instances.len();
        let usable = |t: &Instance| Some(t.id.as_str()) != avoid && t.ejected_until_ms.load(Ordering::Relaxed) <= now;
        (0..n)
            .map(|i| &instances[(start + i) % n])
            .find(|t| usable(t) && t.ready.load(Ordering::Relaxed))
            .or_else(|| (0..n).map(|i| &instances[(start + i) % n]).find(|t| usable(t)))
            .or_else(|| (0..n).map(|i| &instances[(start + i) % n]).find(|t| Some(t.id.as_str()) != avoid))
            .cloned()
    }

    /// Stops picking `instance` for a while after it refused a connection.
    pub fn eject(&self, instance: &Instance, for_: Duration) {
        instance.ejected_until_ms.store(self.now_ms() + for_.as_millis() as u64, Ordering::Relaxed);
    }

    /// Counts one proxied request and whether it failed.
    pub fn count(&self, failed: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn replace_instances(&self, found: Vec<Endpoint>) {
        let old = self.instances();
        let by_id: HashMap<&str, &Arc<Instance>> = old.iter().map(|t| (t.id.as_str(), t)).collect();
        // An address that cannot be a `Host` header cannot be proxied to: such an instance is left out.
        let fresh: Vec<Arc<Instance>> = found
            .into_iter()
            .filter_map(|e| match by_id.get(e.id.as_str()) {
                Some(existing) if *existing.address == *e.address() => {
                    existing.last_heartbeat_ms_ago.store(e.last_heartbeat_ms_ago, Ordering::Relaxed);
                    Some(Arc::clone(existing))
                }
                _ if HeaderValue::from_str(e.address()).is_err() => {
                    // The registry accepts only host:port addresses, so this means a bad record.
                    tracing::warn!(service = self.name, instance = %e.id, address = e.address(), "instance address cannot be a Host header; not routing to it");
                    None
                }
                _ => Some(Arc::new(Instance {
                    address: e.address().into(),
                    id: e.id,
                    version: e.version,
                    // Trusted until the first probe says otherwise: it just registered.
                    ready: AtomicBool::new(true),
                    degraded: AtomicBool::new(false),
                    subscriptions: RwLock::new(Vec::new()),
                    ejected_until_ms: AtomicU64::new(0),
                    last_heartbeat_ms_ago: AtomicU64::new(e.last_heartbeat_ms_ago),
                })),
            })
            .collect();
        *self.instances.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        self.refreshed.store(true, Ordering::Relaxed);
    }

    fn update_rates(&self, now: Instant) {
        let requests = self.requests.load(Ordering::Relaxed);
        let errors = self.errors.load(Ordering::Relaxed);
        let mut rates = self.rates.write().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = rates.at {
            let secs = now.duration_since(at).as_secs_f64();
            if secs >= 1.0 {
                let dr = requests.saturating_sub(rates.requests);
                let de = errors.saturating_sub(rates.errors);
                let rps = dr as f64 / secs;
                let err = if dr == 0 { 0.0 } else { de as f64 / dr as f64 };
                rates.rps = 0.5 * rates.rps + 0.5 * rps;
                rates.error_rate = 0.5 * rates.error_rate + 0.5 * err;
                rates.at = Some(now);
                rates.requests = requests;
                rates.errors = errors;
            }
        } else {
            *rates = Rates { at: Some(now), requests, errors, ..*rates };
        }
    }

    /// A snapshot for `/api/status` and the pages.
    pub fn status(&self) -> ServiceStatus {
        let instances = self.instances();
        let rates = *self.rates.read().unwrap_or_else(|p| p.into_inner());
        let circuit = self.breaker.state();
        let ready = instances.iter().filter(|t| t.ready.load(Ordering::Relaxed)).count();
        let degraded = instances.iter().any(|t| t.degraded.load(Ordering::Relaxed));
        let status = if !self.refreshed.load(Ordering::Relaxed) {
            "unknown"
        } else if ready == 0 || circuit == CircuitState::Open {
            "down"
        } else if ready < instances.len() || circuit == CircuitState::HalfOpen || degraded {
            "degraded"
        } else {
            "up"
        };
        ServiceStatus {
            name: self.name,
            status,
            circuit: circuit.as_str(),
            subscriptions: subscriptions_of(&instances),
            requests_per_sec: (rates.rps * 10.0).round() / 10.0,
            error_rate: (rates.error_rate * 1000.0).round() / 1000.0,
            instances: instances
                .iter()
                .map(|t| InstanceStatus {
                    id: t.id.clone(),
                    address: t.address.to_string(),
                    version: t.version.clone(),
                    healthy: t.ready.load(Ordering::Relaxed),
                    degraded: t.degraded.load(Ordering::Relaxed),
                    last_seen_secs: t.last_heartbeat_ms_ago.load(Ordering::Relaxed) as f64 / 1000.0,
                })
                .collect(),
        }
    }
}

/// One service's line on the status page.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ServiceStatus {
    /// Service name.
    pub name: &'static str,
    /// `up`, `degraded`, `down` or `unknown` (not yet asked).
    pub status: &'static str,
    /// Circuit state of the gateway's breaker for it.
    pub circuit: &'static str,
    /// Requests per second through the gateway (smoothed).
    pub requests_per_sec: f64,
    /// Share of those requests that failed (0–1).
    pub error_rate: f64,
    /// The durable event subscriptions its instances consume, by name, with the events waiting
    /// in each (the largest of its instances' last samples; `null` while none could say).
    pub subscriptions: Vec<SubscriptionLag>,
    /// Its instances.
    pub instances: Vec<InstanceStatus>,
}

/// A durable event subscription and the events waiting in it, as a consuming instance reports
/// it in `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SubscriptionLag {
    /// The subscription's name.
    pub subscription: String,
    /// Events waiting to be handled, as last sampled (every few seconds); `null` while unknown.
    pub lag: Option<u64>,
}

/// Every subscription `instances` consume, once each, sorted by name. Instances of one service
/// share a subscription (competing consumers), so each reports the same backlog sampled at a
/// different moment: the largest is shown.
fn subscriptions_of(instances: &[Arc<Instance>]) -> Vec<SubscriptionLag> {
    let mut by_name: std::collections::BTreeMap<String, Option<u64>> = Default::default();
    for t in instances {
        for s in t.subscriptions.read().unwrap_or_else(|p| p.into_inner()).iter() {
            let lag = by_name.entry(s.subscription.clone()).or_insert(None);
            *lag = (*lag).max(s.lag);
        }
    }
    by_name.into_iter().map(|(subscription, lag)| SubscriptionLag { subscription, lag }).collect()
}

/// One instance's line on the status page.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct InstanceStatus {
    /// Instance id.
    pub id: String,
    /// `host:port`.
    pub address: String,
    /// Software version.
    pub version: String,
    /// Whether its last readiness probe passed.
    pub healthy: bool,
    /// Whether that probe said one of its backends is down (it still answers).
    pub degraded: bool,
    /// Seconds since its last heartbeat.
    pub last_seen_secs: f64,
}

/// Every upstream, by name.
#[derive(Debug)]
pub struct Upstreams {
    by_name: HashMap<&'static str, Arc<Upstream>>,
    order: Vec<&'static str>,
}

impl Upstreams {
    /// One upstream per service in `names`.
    pub fn new(names: &[&'static str], breaker: BreakerConfig) -> Self {
        let epoch = Instant::now();
        let by_name = names.iter().map(|&n| (n, Arc::new(Upstream::new(n, breaker, epoch)))).collect();
        Self { by_name, order: names.to_vec() }
    }

    /// The upstream named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.by_name.get(name)
    }

    /// Every upstream in route-table order.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.order.iter().filter_map(|n| self.by_name.get(n))
    }

    /// One refresh round: ask the registry (when `lookup`: the instances may have changed), probe every
    /// instance's `/readyz`, update rates.
    pub async fn refresh_once(&self, discovery: &Discovery, lookup: bool, http: &reqwest::Client) {
        let rounds = self.all().map(|up| async move {
            if lookup {
                match discovery.endpoints(up.name).await {
                    Ok(found) => up.replace_instances(found),
                    Err(err) => tracing::warn!(service = up.name, error = %err, "registry lookup failed; keeping the last known instances"),
                }
            }
            let instances = up.instances();
            let probes = instances.iter().map(|t| async move {
                let (ok, degraded) = match http.get(format!("http://{}/readyz", t.address)).send().await {
                    Ok(r) if r.status().is_success() => {
                        let body: serde_json::Value = r.json().await.unwrap_or_default();
                        let subscriptions = serde_json::from_value(body["subscriptions"].clone()).unwrap_or_default();
                        *t.subscriptions.write().unwrap_or_else(|p| p.into_inner()) = subscriptions;
                        (true, body["status"] == "degraded")
                    }
                    _ => (false, false),
                };
                let was = t.ready.swap(ok, Ordering::Relaxed);
                if was != ok {
                    tracing::info!(service = up.name, instance = %t.id, ready = ok, "instance readiness changed");
                }
                if t.degraded.swap(degraded, Ordering::Relaxed) != degraded {
                    tracing::warn!(service = up.name, instance = %t.id, degraded, "instance degraded state changed");
                }
            });
            futures::future::join_all(probes).await;
            up.update_rates(Instant::now());
        });
        futures::future::join_all(rounds).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(id: &str, base_url: &str) -> Endpoint {
        Endpoint { id: id.into(), base_url: base_url.into(), version: "1".into(), last_heartbeat_ms_ago: 0 }
    }

    /// An upstream with one instance per id, all ready, at ports 1, 2, 3, …
    fn upstream(ids: &[&str]) -> Upstream {
        let up = Upstream::new("jokes", BreakerConfig::default(), Instant::now());
        let found = ids.iter().enumerate().map(|(i, id)| endpoint(id, &format!("http://127.0.0.1:{}", i + 1)));
        up.replace_instances(found.collect());
        up
    }

    fn instance(up: &Upstream, id: &str) -> Arc<Instance> {
        up.instances().iter().find(|i| i.id == id).cloned().unwrap()
    }

    /// The ids of `n` picks in a row, avoiding `avoid`.
    fn picks(up: &Upstream, n: usize, avoid: Option<&str>) -> Vec<String> {
        (0..n).map(|_| up.pick(avoid).map_or_else(|| "none".into(), |i| i.id.clone())).collect()
    }

    #[test]
    fn instances_are_picked_in_turn() {
        let up = upstream(&["a", "b", "c"]);
        let picked = picks(&up, 6, None);
        for id in ["a", "b", "c"] {
            assert_eq!(picked.iter().filter(|p| *p == id).count(), 2, "{picked:?}");
        }
        assert!(picked.windows(2).all(|w| w[0] != w[1]), "{picked:?}");
    }

    #[test]
    fn an_instance_that_failed_its_readiness_probe_is_passed_over_while_another_is_ready() {
        let up = upstream(&["a", "b"]);
        instance(&up, "a").ready.store(false, Ordering::Relaxed);
        assert_eq!(picks(&up, 4, None), ["b"; 4]);
    }

    #[test]
    fn when_no_instance_is_ready_one_is_picked_all_the_same() {
        // A stale probe must not make a live service unreachable.
        let up = upstream(&["a", "b"]);
        for id in ["a", "b"] {
            instance(&up, id).ready.store(false, Ordering::Relaxed);
        }
        assert!(picks(&up, 4, None).iter().all(|p| p == "a" || p == "b"));
    }

    #[test]
    fn a_service_whose_instance_has_a_backend_down_shows_as_degraded_and_stays_in_rotation() {
        let up = upstream(&["a", "b"]);
        assert_eq!(up.status().status, "up");
        instance(&up, "a").degraded.store(true, Ordering::Relaxed);
        let status = up.status();
        assert_eq!(status.status, "degraded");
        assert!(status.instances.iter().any(|i| i.id == "a" && i.degraded && i.healthy));
        assert!(picks(&up, 4, None).contains(&"a".to_string()), "still picked");
    }

    #[test]
    fn an_ejected_instance_is_passed_over_until_its_time_is_up() {
        let up = upstream(&["a", "b"]);
        up.eject(&instance(&up, "a"), Duration::from_millis(100));
        assert_eq!(picks(&up, 4, None), ["b"; 4]);
        std::thread::sleep(Duration::from_millis(150));
        assert!(picks(&up, 4, None).contains(&"a".to_string()), "back after its time");
    }

    #[test]
    fn an_unready_instance_is_preferred_to_an_ejected_one_and_an_ejected_one_to_none() {
        let up = upstream(&["a", "b"]);
        up.eject(&instance(&up, "a"), Duration::from_secs(60));
        instance(&up, "b").ready.store(false, Ordering::Relaxed);
        assert_eq!(picks(&up, 3, None), ["b"; 3], "not ready, but not ejected");
        up.eject(&instance(&up, "b"), Duration::from_secs(60));
        assert!(picks(&up, 4, None).iter().all(|p| p == "a" || p == "b"), "every one ejected: one all the same");
    }

    #[test]
    fn the_instance_to_avoid_is_never_picked_so_with_one_instance_none_is() {
        let up = upstream(&["a", "b"]);
        up.eject(&instance(&up, "b"), Duration::from_secs(60));
        assert_eq!(picks(&up, 3, Some("a")), ["b"; 3], "ejected, but not the one to avoid");
        let alone = upstream(&["a"]);
        assert_eq!(picks(&alone, 2, Some("a")), ["none"; 2]);
        assert_eq!(picks(&upstream(&[]), 1, None), ["none"]);
    }

    #[test]
    fn a_subscription_shared_by_instances_shows_once_with_the_largest_backlog() {
        let up = upstream(&["a", "b"]);
        let lag = |name: &str, lag| SubscriptionLag { subscription: name.into(), lag };
        *instance(&up, "a").subscriptions.write().unwrap() = vec![lag("mail", Some(3)), lag("store", None)];
        *instance(&up, "b").subscriptions.write().unwrap() = vec![lag("store", Some(0)), lag("mail", Some(7))];
        assert_eq!(up.status().subscriptions, [lag("mail", Some(7)), lag("store", Some(0))]);
        assert!(upstream(&["a"]).status().subscriptions.is_empty(), "a service that consumes nothing");
    }

    #[test]
    fn a_refresh_keeps_what_is_known_of_an_instance_and_drops_bad_addresses() {
        let up = upstream(&["a", "b"]);
        up.eject(&instance(&up, "a"), Duration::from_secs(60));
        up.replace_instances(vec![
            endpoint("a", "http://127.0.0.1:1"),
            endpoint("c", "http://127.0.0.1:3"),
            endpoint("bad", "http://127.0.0.1:4\r\nx-injected: 1"),
        ]);
        let ids: Vec<String> = up.instances().iter().map(|i| i.id.clone()).collect();
        assert_eq!(ids, ["a", "c"], "b is gone; an address that cannot be a Host header is left out");
        assert_eq!(picks(&up, 3, None), ["c"; 3], "a is still ejected");
        // The same id at a new address is a new instance.
        up.replace_instances(vec![endpoint("a", "http://127.0.0.1:9")]);
        assert_eq!(&*instance(&up, "a").address, "127.0.0.1:9");
        assert_eq!(picks(&up, 1, None), ["a"]);
    }
}
