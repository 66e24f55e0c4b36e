//! The resilient client every service uses to call a peer service: a deadline
//! per call, jittered retries for idempotent calls only, a circuit breaker per
//! peer instance, and round-robin balancing across the instances discovery returns.
//!
//! Retries are bounded by a [`RetryBudget`] shared by every call to the peer,
//! not only by a count per call: with a count alone, a failing peer receives
//! every call `max_attempts` times, just when it can least take it; the
//! budget allows retries for a fifth of recent calls (plus a small floor, so a
//! quiet caller can still retry), and beyond it a failed attempt is the answer.
//!
//! The gateway chooses and retries upstream instances its own way, and the two
//! are deliberately not one. A [`Peer`] serves typed calls whose request the
//! caller can send again and whose idempotence the caller declares, so it
//! retries any failure of an instance (refused, a failing status, timeout)
//! after a backoff, looks instances up on the call path (cached briefly), and
//! keeps a breaker per instance. The gateway forwards bodies it streams and
//! cannot replay and knows only the HTTP method, so it sends a bodiless
//! `GET`/`HEAD`/`OPTIONS` a second time at most, at once, to another instance,
//! only when the first exchange broke without an answer; it refreshes
//! instances in the background so that no request waits on the registry, and
//! keeps one breaker per service, ejecting a failed instance for a moment.
//! Both build on [`crate::circuit_breaker`] and [`crate::discovery`]. Its
//! one retry multiplies only requests that got no answer; should it ever need
//! bounding, [`RetryBudget`] is the tool.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tower::retry::budget::{Budget, TpsBudget};

use crate::backoff::Backoff;
use crate::circuit_breaker::{BreakerConfig, CircuitBreaker, CircuitState};
use crate::discovery::{Discovery, Endpoint};

/// Timeouts and retries of calls to one peer service.
#[derive(Debug, Clone, Copy)]
pub struct CallPolicy {
    /// The whole call, retries included, must finish within this.
    pub deadline: Duration,
    /// One attempt must finish within this.
    pub per_try: Duration,
    /// At most this many attempts for one idempotent call, while the
    /// [`CallPolicy::retry_budget`] allows them (non-idempotent calls get exactly one).
    pub max_attempts: u32,
    /// How many retries all the calls to the peer may make together.
    pub retry_budget: RetryBudget,
    /// Delay between attempts.
    pub backoff: Backoff,
    /// Breaker per instance.
    pub breaker: BreakerConfig,
    /// How long a discovered instance list is reused.
    pub discovery_ttl: Duration,
}

impl Default for CallPolicy {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(5),
            per_try: Duration::from_secs(2),
            max_attempts: 3,
            retry_budget: RetryBudget::default(),
            backoff: Backoff::new(Duration::from_millis(25), Duration::from_millis(500)),
            breaker: BreakerConfig::default(),
            discovery_ttl: Duration::from_secs(1),
        }
    }
}

/// The retries all the calls to one peer may make together: `ratio` retries
/// per call made in the last `window`, plus `min_per_sec` for each second of
/// the window. A call's first attempt is never refused; a retry the budget
/// cannot pay for is not made, and the call ends with its last attempt's error.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudget {
    /// How long a call counts towards the budget (1 to 60 s; other values are clamped).
    pub window: Duration,
    /// Retries a second allowed however few calls there were: the floor that lets a quiet caller retry.
    pub min_per_sec: u32,
    /// Retries allowed per call on top of the floor (0.2: one retry for every five calls).
    pub ratio: f32,
}

impl Default for RetryBudget {
    /// A fifth of the calls of the last 10 s, plus 10 retries a second: linkerd's and finagle's defaults.
    fn default() -> Self {
        Self { window: Duration::from_secs(10), min_per_sec: 10, ratio: 0.2 }
    }
}

impl RetryBudget {
    fn build(&self) -> TpsBudget {
        // `TpsBudget::new` panics outside these ranges.
        let window = self.window.clamp(Duration::from_secs(1), Duration::from_secs(60));
        let ratio = if self.ratio.is_finite() { self.ratio.clamp(0.0, 1000.0) } else { 0.0 };
        TpsBudget::new(window, self.min_per_sec.min(i32::MAX as u32 - 1), ratio)
    }
}

/// How one attempt ended, as judged by the caller's closure.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError<E> {
    /// The peer is unhealthy (connection refused, 5xx, unavailable): counts
    /// against its breaker and may be retried if the call is idempotent.
    #[error("peer failure: {0}")]
    Unhealthy(E),
    /// The peer answered, and the answer is an error for the caller (404, 422):
    /// returned as is, never retried.
    #[error("peer answered with an error: {0}")]
    Answered(E),
}

/// Why a call to a peer did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError<E> {
    /// Discovery found no instance (or could not ask).
    #[error("no instance of {service} is available: {reason}")]
    NoInstance {
        /// The peer service.
        service: String,
        /// Why.
        reason: String,
    },
    /// Every instance's breaker is open.
    #[error("{service} is failing; its circuit is open")]
    CircuitOpen {
        /// The peer service.
        service: String,
    },
    /// The deadline passed.
    #[error("{service} did not answer within {deadline:?}")]
    Timeout {
        /// The peer service.
        service: String,
        /// The deadline that passed.
        deadline: Duration,
    },
    /// The last attempt failed with this.
    #[error("{service} failed: {error}")]
    Failed {
        /// The peer service.
        service: String,
        /// The last attempt's error.
        error: E,
    },
    /// The peer answered with an application error.
    #[error("{0}")]
    Answered(E),
}

/// A client of one peer service, shared by all the tasks that call it.
pub struct Peer {
    service: String,
    discovery: Discovery,
    policy: CallPolicy,
    budget: TpsBudget,
    breakers: Mutex<HashMap<String, Arc<CircuitBreaker>>>,
    cache: tokio::sync::Mutex<Option<(Instant, Vec<Endpoint>)>>,
    next: AtomicUsize,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer").field("service", &self.service).finish()
    }
}

impl Peer {
    /// A client of `service`, found through `discovery`.
    pub fn new(service: &str, discovery: Discovery, policy: CallPolicy) -> Self {
        Self {
            service: service.to_string(),
            discovery,
            budget: policy.retry_budget.build(),
            policy,
            breakers: Mutex::new(HashMap::new()),
            cache: tokio::sync::Mutex::new(None),
            next: AtomicUsize::new(0),
        }
    }

    /// The peer service's name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The breaker state of every instance seen so far.
    pub fn circuit_states(&self) -> Vec<(String, CircuitState)> {
        let breakers = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        breakers.iter().map(|(id, b)| (id.clone(), b.state())).collect()
    }

    fn breaker(&self, endpoint: &Endpoint) -> Arc<CircuitBreaker> {
        let mut breakers = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        breakers
            .entry(endpoint.id.clone())
            .or_insert_with(|| Arc::new(CircuitBreaker::new(self.policy.breaker)))
            .clone()
    }

    async fn endpoints(&self) -> Result<Vec<Endpoint>, String> {
        let mut cache = self.cache.lock().await;
        if let Some((at, list)) = cache.as_ref() {
            if at.elapsed() < self.policy.discovery_ttl && !list.is_empty() {
                return Ok(list.clone());
            }
        }
        match self.discovery.endpoints(&self.service).await {
            Ok(list) => {
                *cache = Some((Instant::now(), list.clone()));
                Ok(list)
            }
            // A registry hiccup should not stop calls to instances we already know.
            Err(err) => match cache.as_ref() {
                Some((_, list)) if !list.is_empty() => Ok(list.clone()),
                _ => Err(err.to_string()),
            },
        }
    }

    /// Forgets the cached instance list (after a connection failure, say).
    pub async fn refresh(&self) {
        *self.cache.lock().await = None;
    }

    /// Calls the peer: `attempt` is run against one instance at a time; an
    /// `idempotent` call is tried again after a failure of the instance, while
    /// the deadline, [`CallPolicy::max_attempts`] and the retry budget allow.
    pub async fn call<T, E, F, Fut>(&self, idempotent: bool, attempt: F) -> Result<T, PeerError<E>>
    where
        F: Fn(Endpoint) -> Fut,
        Fut: Future<Output = Result<T, AttemptError<E>>>,
        E: std::fmt::Display,
    {
        let deadline = tokio::time::Instant::now() + self.policy.deadline;
        let attempts = if idempotent { self.policy.max_attempts.max(1) } else { 1 };
        self.budget.deposit();
        let mut last: Option<PeerError<E>> = None;
        for n in 0..attempts {
            if n > 0 {
                let pause = self.policy.backoff.delay(n - 1);
                if tokio::time::Instant::now() + pause >= deadline {
                    break;
                }
                if !self.budget.withdraw() {
                    tracing::debug!(service = %self.service, "retry budget spent; not retrying");
                    break;
                }
                tokio::time::sleep(pause).await;
            }
            let endpoints = self
                .endpoints()
                .await
                .map_err(|reason| PeerError::NoInstance { service: self.service.clone(), reason })?;
            if endpoints.is_empty() {
                return Err(PeerError::NoInstance { service: self.service.clone(), reason: "none registered".into() });
            }
            // Round-robin, skipping instances whose breaker refuses.
            let start = self.next.fetch_add(1, Ordering::Relaxed);
            let candidates: Vec<(Endpoint, Arc<CircuitBreaker>)> = (0..endpoints.len())
                .map(|i| {
                    let endpoint = endpoints[(start + i) % endpoints.len()].clone();
                    let breaker = self.breaker(&endpoint);
                    (endpoint, breaker)
                })
                .collect();
            let chosen = candidates
                .iter()
                .find_map(|(endpoint, breaker)| breaker.try_acquire().ok().map(|permit| (endpoint.clone(), permit)));
            let Some((endpoint, permit)) = chosen else {
                last = Some(PeerError::CircuitOpen { service: self.service.clone() });
                continue;
            };
            let budget = deadline.saturating_duration_since(tokio::time::Instant::now()).min(self.policy.per_try);
            match tokio::time::timeout(budget, attempt(endpoint)).await {
                Ok(Ok(value)) => {
                    permit.success();
                    return Ok(value);
                }
                Ok(Err(AttemptError::Answered(e))) => {
                    permit.success();
                    return Err(PeerError::Answered(e));
                }
                Ok(Err(AttemptError::Unhealthy(error))) => {
                    permit.failure();
                    self.refresh().await;
                    last = Some(PeerError::Failed { service: self.service.clone(), error });
                }
                Err(_) => {
                    permit.failure();
                    last = Some(PeerError::Timeout { service: self.service.clone(), deadline: budget });
                }
            }
        }
        Err(last.unwrap_or(PeerError::Timeout { service: self.service.clone(), deadline: self.policy.deadline }))
    }
}
