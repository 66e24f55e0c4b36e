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
        if req.version.chars().count() > 64 {
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

/// The longest a watch (`GET /v1/services?index=N&wait=…`) may be held.
pub const MAX_WAIT: Duration = Duration::from_secs(300);
/// How long a watch is held when it names no `wait`.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// A watch's `wait`: a whole number of milliseconds, seconds or minutes (`500ms`, `30s`, `5m`); a
/// longer one is held for [`MAX_WAIT`] (as a server may end any long poll early).
pub fn parse_wait(raw: &str) -> Result<Duration, Invalid> {
    let bad = || invalid("wait", "must be a whole number of ms, s or m (e.g. 30s)");
    let unit_at = raw.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (digits, unit) = raw.split_at(unit_at);
    if digits.is_empty() || digits.len() > 9 {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let wait = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        _ => return Err(bad()),
    };
    Ok(wait.min(MAX_WAIT))
}

/// A watch's `index`: the `index` of an earlier answer (a whole number).
pub fn parse_index(raw: &str) -> Result<u64, Invalid> {
    raw.parse::<u64>()
        .ok()
        .filter(|index| i64::try_from(*index).is_ok())
        .ok_or_else(|| invalid("index", "must be the index of an earlier answer, a whole number"))
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

/// Every known instance, keyed by instance id, and the index of the table's last change.
#[derive(Debug)]
pub struct Table {
    entries: HashMap<String, Entry>,
    index: u64,
}

impl Table {
    /// An empty table whose index starts at `first_index` (at least 1, so that a watcher's `index=0`
    /// always differs). The registry starts it at its start time in milliseconds: a restarted registry
    /// does not hand out again an index a watcher of the previous one may still hold.
    pub fn new(first_index: u64) -> Self {
        Self { entries: HashMap::new(), index: first_index.max(1) }
    }

    /// Changes with every registration, deregistration and eviction (never with a mere heartbeat):
    /// a watcher that holds the current index has seen the current instances.
    pub fn index(&self) -> u64 {
        self.index
    }

    fn changed(&mut self) {
        self.index = self.index.wrapping_add(1).max(1);
    }

    /// Adds or refreshes an instance (re-registering an id replaces it).
    pub fn register(&mut self, reg: Registration, now: Instant) -> Instance {
        let id = reg.instance_id.clone();
        let entry = Entry { reg, registered_at: chrono::Utc::now(), last_seen: now };
        let view = entry.view(now);
        self.entries.insert(id, entry);
        self.changed();
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
                self.changed();
                false
            }
            None => false,
        }
    }

    /// Removes an instance; `false` if unknown.
    pub fn deregister(&mut self, id: &str) -> bool {
        let removed = self.entries.remove(id).is_some();
        if removed {
            self.changed();
        }
        removed
    }

    /// Drops every instance whose TTL passed; returns the evicted ones.
    pub fn evict_expired(&mut self, now: Instant) -> Vec<Instance> {
        let expired: Vec<String> =
            self.entries.iter().filter(|(_, e)| !e.alive_at(now)).map(|(id, _)| id.clone()).collect();
        let evicted: Vec<Instance> =
            expired.iter().filter_map(|id| self.entries.remove(id)).map(|e| e.view(now)).collect();
        if !evicted.is_empty() {
            self.changed();
        }
        evicted
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
    fn a_wait_is_a_whole_number_of_ms_s_or_m_up_to_five_minutes() {
        assert_eq!(parse_wait("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_wait("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_wait("5m"), Ok(MAX_WAIT));
        assert_eq!(parse_wait("6m"), Ok(MAX_WAIT), "a longer wait is held for the longest");
        assert_eq!(parse_wait("999999999m"), Ok(MAX_WAIT));
        assert_eq!(parse_wait("0s"), Ok(Duration::ZERO));
        for bad in ["", "30", "s", "-1s", "1.5s", "30 s", "1h", "99999999999s", "١s"] {
            assert_eq!(parse_wait(bad).map_err(|e| e.field), Err("wait"), "{bad:?}");
        }
        assert_eq!(parse_index("42"), Ok(42));
        for bad in ["", "-1", "x", "18446744073709551616"] {
            assert_eq!(parse_index(bad).map_err(|e| e.field), Err("index"), "{bad:?}");
        }
    }

    #[test]
    fn a_version_is_counted_in_characters_as_documented() {
        let mut r = req("jokes", "jokes:8080");
        r.version = "é".repeat(64);
        assert!(Registration::parse(r.clone()).is_ok(), "64 characters, 128 bytes");
        r.version.push('é');
        assert_eq!(Registration::parse(r).unwrap_err().field, "version");
    }

    #[test]
    fn an_instance_that_stops_heartbeating_is_evicted_after_its_ttl() {
        let mut table = Table::new(1);
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
    fn the_index_moves_with_every_change_of_the_instances_and_only_then() {
        let mut table = Table::new(0);
        let t0 = Instant::now();
        let mut last = table.index();
        assert!(last >= 1, "index 0 always means: answer at once");
        let mut moved = |table: &Table, what: &str| {
            assert_ne!(table.index(), last, "{what} changes the index");
            last = table.index();
        };
        let a = table.register(Registration::parse(req("jokes", "127.0.0.1:1000")).unwrap(), t0);
        moved(&table, "a registration");
        let b = table.register(Registration::parse(req("jokes", "127.0.0.1:1001")).unwrap(), t0);
        moved(&table, "a second registration");
        assert!(table.heartbeat(&a.instance_id, t0 + Duration::from_millis(1500)));
        assert!(!table.deregister("nobody"));
        assert!(table.evict_expired(t0 + Duration::from_millis(1500)).is_empty());
        assert_eq!(table.index(), last, "heartbeats and no-ops change nothing");
        assert!(table.deregister(&a.instance_id));
        assert_ne!(table.index(), last, "a deregistration changes the index");
        let before_eviction = table.index();
        assert_eq!(table.evict_expired(t0 + Duration::from_secs(5)).len(), 1, "{b:?} is evicted");
        assert_ne!(table.index(), before_eviction, "an eviction changes the index");
        let quiet = table.index();
        assert!(!table.heartbeat(&b.instance_id, t0 + Duration::from_secs(5)));
        assert_eq!(table.index(), quiet, "a heartbeat of an unknown instance changes nothing");
    }

    #[test]
    fn services_count_only_live_instances() {
        let mut table = Table::new(1);
        let t0 = Instant::now();
        table.register(Registration::parse(req("jokes", "127.0.0.1:1000")).unwrap(), t0);
        table.register(Registration::parse(req("auth", "127.0.0.1:1001")).unwrap(), t0);
        assert_eq!(table.services(t0), vec![("auth".into(), 1), ("jokes".into(), 1)]);
        assert!(table.services(t0 + Duration::from_secs(3)).is_empty());
    }
}
