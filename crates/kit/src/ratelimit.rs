//! Token-bucket rate limiting keyed by client (IP or user). One limiter per
//! process, shared by every connection (a limiter cloned per connection limits
//! nothing); its state lives in Redis when configured, so several gateway
//! replicas enforce one limit.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Burst size and sustained rate of a bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quota {
    /// Requests allowed at once (bucket capacity).
    pub burst: u32,
    /// Tokens added per second.
    pub per_second: f64,
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Refused; a token is available after this long.
    Deny {
        /// Time until the next token.
        retry_after: Duration,
    },
}

/// Where bucket state lives.
pub enum Limiter {
    /// In this process (one replica).
    Memory(MemoryBuckets),
    /// In Redis (shared by replicas).
    Redis(Box<RedisBuckets>),
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Limiter::Memory(_) => "Limiter::Memory",
            Limiter::Redis(_) => "Limiter::Redis",
        })
    }
}

impl Limiter {
    /// An in-memory limiter.
    pub fn memory() -> Self {
        Self::Memory(MemoryBuckets::default())
    }

    /// A Redis-backed limiter; connects lazily and reconnects on its own.
    pub async fn redis(url: &str, prefix: &str) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let conn = redis::aio::ConnectionManager::new(client).await?;
        Ok(Self::Redis(Box::new(RedisBuckets {
            conn,
            prefix: prefix.to_string(),
            script: redis::Script::new(BUCKET_LUA),
        })))
    }

    /// Takes one token from `key`'s bucket.
    pub async fn check(&self, key: &str, quota: Quota) -> Decision {
        match self {
            Limiter::Memory(m) => m.check(key, quota, Instant::now()),
            // Boxed: the Redis call's state is large, and would otherwise make every caller's future
            // (and so every request's) as large even when the limiter is in memory.
            Limiter::Redis(r) => Box::pin(r.check(key, quota)).await,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

const SHARDS: usize = 32;

/// In-process buckets, sharded to keep lock contention low.
pub struct MemoryBuckets {
    shards: Vec<Mutex<HashMap<String, Bucket>>>,
}

impl Default for MemoryBuckets {
    fn default() -> Self {
        Self { shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect() }
    }
}

impl MemoryBuckets {
    /// Takes a token at time `now` (tests drive the clock).
    pub fn check(&self, key: &str, quota: Quota, now: Instant) -> Decision {
        let shard = fnv(key) % SHARDS;
        let mut map = self.shards[shard].lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 50_000 {
            // Forget buckets that have refilled completely: they hold no information.
            let full_after = Duration::from_secs_f64(quota.burst as f64 / quota.per_second.max(1e-9));
            map.retain(|_, b| now.saturating_duration_since(b.at) < full_after);
        }
        // Look up before inserting: the common case (a known client) allocates nothing.
        if let Some(bucket) = map.get_mut(key) {
            return bucket.take(quota, now);
        }
        let mut bucket = Bucket { tokens: quota.burst as f64, at: now };
        let decision = bucket.take(quota, now);
        map.insert(key.to_string(), bucket);
        decision
    }
}

impl Bucket {
    /// Refills the bucket up to `now` and takes a token if there is one.
    fn take(&mut self, quota: Quota, now: Instant) -> Decision {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * quota.per_second;
        self.tokens = (self.tokens + refill).min(quota.burst as f64);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Decision::Allow
        } else {
            let wait = (1.0 - self.tokens) / quota.per_second.max(1e-9);
            Decision::Deny { retry_after: Duration::from_secs_f64(wait.min(86_400.0)) }
        }
    }
}

fn fnv(key: &str) -> usize {
    let mut hash: u64 = 0xcbf29ce484222325;
    for b in key.bytes() {
        hash ^= b as u64;
        hash = hash.wrapping_mul(0x100000001b3);
    }
    hash as usize
}

/// The bucket update, atomic inside Redis, using Redis's own clock so replicas agree.
const BUCKET_LUA: &str = r#"
local burst = tonumber(ARGV[1])
local rate = tonumber(ARGV[2]) / 1000.0
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.ceil((1 - tokens) / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate) + 1000)
return {allowed, wait}
"#;

/// Buckets in Redis.
pub struct RedisBuckets {
    conn: redis::aio::ConnectionManager,
    prefix: String,
    script: redis::Script,
}

impl RedisBuckets {
    async fn check(&self, key: &str, quota: Quota) -> Decision {
        let mut conn = self.conn.clone();
        let result: Result<(i64, i64), _> = self
            .script
            .key(format!("{}:{key}", self.prefix))
            .arg(quota.burst)
            .arg(quota.per_second)
            .invoke_async(&mut conn)
            .await;
        match result {
            Ok((1, _)) => Decision::Allow,
            Ok((_, wait_ms)) => Decision::Deny { retry_after: Duration::from_millis(wait_ms.max(1) as u64) },
            Err(err) => {
                // Failing open: an outage of the limiter's store must not take the site down.
                tracing::warn!(error = %err, "rate limiter store unavailable; allowing the request");
                metrics::counter!("ratelimit_store_errors_total").increment(1);
                Decision::Allow
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let buckets = MemoryBuckets::default();
        let quota = Quota { burst: 3, per_second: 2.0 };
        let t = Instant::now();
        for _ in 0..3 {
            assert_eq!(buckets.check("ip:1", quota, t), Decision::Allow);
        }
        let Decision::Deny { retry_after } = buckets.check("ip:1", quota, t) else { panic!("burst exceeded") };
        assert_eq!(retry_after, Duration::from_millis(500));
        assert_eq!(buckets.check("ip:2", quota, t), Decision::Allow, "keys are independent");
        assert_eq!(buckets.check("ip:1", quota, t + Duration::from_millis(500)), Decision::Allow);
        assert!(matches!(buckets.check("ip:1", quota, t + Duration::from_millis(500)), Decision::Deny { .. }));
    }
}
