//! The instance table: registration rules and TTL eviction, with time passed
//! in so the rules are testable without sleeping.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kit::registry_client::{Instance, Protocol, RegisterRequest};

/// Shortest and longest TTL an instance may ask for.
pub const TTL_RANGE: (u64, u64) = (1, 300);
/// TTL when the instance does not say.
pub const DEFAULT_TTL: u64 = 10;

/// A registration that breaks a rule, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    /// The offending field.
    pub field: &'static str,
    /// Why it was refused.
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Invalid {
    Invalid { field, reason: reason.into() }
}

/// A service name: lowercase letters, digits and dashes, 1–63 characters (a DNS label).
pub fn valid_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// A checked registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    service: String,
    instance_id: String,
    address: String,
    protocol: Protocol,
    version: String,
    ttl: Duration,
}

impl Registration {
    /// Checks every field of a registration request.
    pub fn parse(req: RegisterRequest) -> Result<Self, Invalid> {
        if !valid_service_name(&req.service) {
            return Err(invalid("service", "must be 1-63 characters of a-z, 0-9 and '-'"));
        }
        let instance_id = match req.instance_id {
            Some(id)
                if id.is_empty()
                    || id.len() > 128
                    || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
            {
                return Err(invalid("instance_id", "must be 1-128 characters of letters, digits, '-', '_' or '.'"))
            }
            Some(id) => id,
            None => format!("{}-{}", req.service, &uuid::Uuid::new_v4().simple().to_string()[..12]),
        };
        let address = req.address.trim().to_string();
        if !valid_address(&address) {
            return Err(invalid("address", "must be host:port, e.g. 127.0.0.1:8101 or jokes:8080"));
        }
        if req.version.len() > 64 {
            return Err(invalid("version", "must be at most 64 characters"));
        }
        let ttl = req.ttl_secs.unwrap_or(DEFAULT_TTL);
        if !(TTL_RANGE.0..=TTL_RANGE.1).contains(&ttl) {
            return Err(invalid("ttl_secs", format!("must be between {} and {} seconds", TTL_RANGE.0, TTL_RANGE.1)));
        }
        Ok(Self {
            service: req.service,
            instance_id,
            address,
            protocol: req.protocol,
            version: req.version,
            ttl: Duration::from_secs(ttl),
        })
    }
}

fn valid_address(address: &str) -> bool {
    if address.parse::<std::net::SocketAddr>().is_ok() {
        return !address.ends_with(":0");
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return false;
    };
    let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .split('.')
            .all(|label| !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    port_ok && host_ok
}

#[derive(Debug, Clone)]
struct Entry {
    reg: Registration,
    registered_at: chrono::DateTime<chrono::Utc>,
    last_seen: Instant,
}

impl Entry {
    fn alive_at(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_seen) <= self.reg.ttl
    }

    fn view(&self, now: Instant) -> Instance {
        Instance {
            instance_id: self.reg.instance_id.clone(),
            service: self.reg.service.clone(),
            address: self.reg.address.clone(),
            protocol: self.reg.protocol,
            version: self.reg.version.clone(),
            ttl_secs: self.reg.ttl.as_secs(),
            registered_at: self.registered_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            last_heartbeat_ms_ago: now.saturating_duration_since(self.last_seen).as_millis() as u64,
        }
    }
}

/// Every known instance, keyed by instance id.
#[derive(Debug, Default)]
pub struct Table {
    entries: HashMap<String, Entry>,
}

impl Table {
    /// Adds or refreshes an instance (re-registering an id replaces it).
    pub fn register(&mut self, reg: Registration, now: Instant) -> Instance {
        let id = reg.instance_id.clone();
        let entry = Entry { reg, registered_at: chrono::Utc::now(), last_seen: now };
        let view = entry.view(now);
        self.entries.insert(id, entry);
        view
    }

    /// Renews a lease; `false` if the instance is unknown or already expired.
    pub fn heartbeat(&mut self, id: &str, now: Instant) -> bool {
        match self.entries.get_mut(id) {
            Some(e) if e.alive_at(now) => {
                e.last_seen = now;
                true
            }
            Some(_) => {
                self.entries.remove(id);
                false
            }
            None => false,
        }
    }

    /// Removes an instance; `false` if unknown.
    pub fn deregister(&mut self, id: &str) -> bool {
        self.entries.remove(id).is_some()
    }

    /// Drops every instance whose TTL passed; returns the evicted ones.
    pub fn evict_expired(&mut self, now: Instant) -> Vec<Instance> {
        let expired: Vec<String> =
            self.entries.iter().filter(|(_, e)| !e.alive_at(now)).map(|(id, _)| id.clone()).collect();
        expired.iter().filter_map(|id| self.entries.remove(id)).map(|e| e.view(now)).collect()
    }

    /// Live instances of one service, oldest registration first.
    pub fn instances(&self, service: &str, now: Instant) -> Vec<Instance> {
        let mut found: Vec<&Entry> =
            self.entries.values().filter(|e| e.reg.service == service && e.alive_at(now)).collect();
        found.sort_by(|a, b| a.registered_at.cmp(&b.registered_at).then(a.reg.instance_id.cmp(&b.reg.instance_id)));
        found.into_iter().map(|e| e.view(now)).collect()
    }

    /// Every service with its number of live instances, by name.
    pub fn services(&self, now: Instant) -> Vec<(String, usize)> {
        let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
        for e in self.entries.values().filter(|e| e.alive_at(now)) {
            *counts.entry(e.reg.service.clone()).or_default() += 1;
        }
        counts.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(service: &str, address: &str) -> RegisterRequest {
        RegisterRequest {
            service: service.into(),
            instance_id: None,
            address: address.into(),
            protocol: Protocol::Http,
            version: "1".into(),
            ttl_secs: Some(2),
        }
    }

    #[test]
    fn bad_registrations_name_the_field() {
        assert_eq!(Registration::parse(req("Jokes!", "127.0.0.1:1")).unwrap_err().field, "service");
        assert_eq!(Registration::parse(req("jokes", "nowhere")).unwrap_err().field, "address");
        assert_eq!(Registration::parse(req("jokes", "127.0.0.1:0")).unwrap_err().field, "address");
        assert_eq!(Registration::parse(req("jokes", "host:99999")).unwrap_err().field, "address");
        let mut r = req("jokes", "jokes:8080");
        r.ttl_secs = Some(0);
        assert_eq!(Registration::parse(r).unwrap_err().field, "ttl_secs");
        assert!(Registration::parse(req("jokes", "jokes.agora.svc:8080")).is_ok());
    }

    #[test]
    fn an_instance_that_stops_heartbeating_is_evicted_after_its_ttl() {
        let mut table = Table::default();
        let t0 = Instant::now();
        let a = table.register(Registration::parse(req("jokes", "127.0.0.1:1000")).unwrap(), t0);
        let b = table.register(Registration::parse(req("jokes", "127.0.0.1:1001")).unwrap(), t0);
        let t1 = t0 + Duration::from_millis(1500);
        assert!(table.heartbeat(&a.instance_id, t1));
        let t2 = t0 + Duration::from_millis(2500);
        let live: Vec<_> = table.instances("jokes", t2).into_iter().map(|i| i.instance_id).collect();
        assert_eq!(live, vec![a.instance_id.clone()]);
        let evicted = table.evict_expired(t2);
        assert_eq!(evicted.len(), 1);
        assert_eq!(evicted[0].instance_id, b.instance_id);
        assert!(!table.heartbeat(&b.instance_id, t2), "an evicted instance must register again");
    }

    #[test]
    fn services_count_only_live_instances() {
        let mut table = Table::default();
        let t0 = Instant::now();
        table.register(Registration::parse(req("jokes", "127.0.0.1:1000")).unwrap(), t0);
        table.register(Registration::parse(req("auth", "127.0.0.1:1001")).unwrap(), t0);
        assert_eq!(table.services(t0), vec![("auth".into(), 1), ("jokes".into(), 1)]);
        assert!(table.services(t0 + Duration::from_secs(3)).is_empty());
    }
}
