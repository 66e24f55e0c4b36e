//! A circuit breaker per peer: closed → open after consecutive failures →
//! half-open probe after a cool-down → closed on success, open again (with a
//! longer cool-down) on failure. Callers ask [`CircuitBreaker::try_acquire`]
//! before a call and report the outcome with the returned [`Permit`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::backoff::Backoff;

/// The breaker's state as shown on `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CircuitState {
    /// Calls flow.
    Closed,
    /// Calls are refused at once until the cool-down ends.
    Open,
    /// One probe call is in flight; others are refused.
    HalfOpen,
}

impl CircuitState {
    /// The lowercase name used in JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half-open",
        }
    }
}

/// Tunables of a breaker.
#[derive(Debug, Clone, Copy)]
pub struct BreakerConfig {
    /// Consecutive failures that open the circuit.
    pub failure_threshold: u32,
    /// Cool-down before the first probe; grows on repeated failed probes.
    pub open_backoff: Backoff,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self { failure_threshold: 5, open_backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(30)) }
    }
}

#[derive(Debug)]
struct Inner {
    state: CircuitState,
    consecutive_failures: u32,
    failed_probes: u32,
    open_until: Instant,
}

/// The breaker itself; cheap to query, safe to share between tasks.
#[derive(Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    inner: Mutex<Inner>,
    /// Closed with no failure counted: the common case, answered without taking the lock
    /// (a breaker is shared by every thread calling its peer). Written only under the lock.
    healthy: AtomicBool,
}

/// Permission to make one call; report its outcome exactly once.
#[must_use = "report the call's outcome with success() or failure()"]
#[derive(Debug)]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    probe: bool,
}

impl Permit<'_> {
    /// The call succeeded.
    pub fn success(self) {
        self.breaker.on_success(self.probe);
    }
    /// The call failed in a way that says the peer is unhealthy.
    pub fn failure(self) {
        self.breaker.on_failure(self.probe, Instant::now());
    }
    /// The call was abandoned without telling anything about the peer's health.
    pub fn neutral(self) {
        if self.probe {
            self.breaker.release_probe();
        }
    }
}

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit open; retry in {retry_in:?}")]
pub struct Rejected {
    /// Time left before a probe is allowed.
    pub retry_in: Duration,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            inner: Mutex::new(Inner {
                state: CircuitState::Closed,
                consecutive_failures: 0,
                failed_probes: 0,
                open_until: Instant::now(),
            }),
            healthy: AtomicBool::new(true),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned breaker only means a panic elsewhere; its counters are still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records whether the breaker is back to (or still in) its common case; called with the lock held.
    fn note_health(&self, inner: &Inner) {
        let healthy = inner.state == CircuitState::Closed && inner.consecutive_failures == 0;
        self.healthy.store(healthy, Ordering::Release);
    }

    /// The current state (an open breaker past its cool-down reports half-open).
    pub fn state(&self) -> CircuitState {
        self.state_at(Instant::now())
    }

    /// The state as of `now`.
    pub fn state_at(&self, now: Instant) -> CircuitState {
        let inner = self.lock();
        match inner.state {
            CircuitState::Open if now >= inner.open_until => CircuitState::HalfOpen,
            s => s,
        }
    }

    /// Asks to make a call now.
    pub fn try_acquire(&self) -> Result<Permit<'_>, Rejected> {
        if self.healthy.load(Ordering::Acquire) {
            return Ok(Permit { breaker: self, probe: false });
        }
        self.try_acquire_at(Instant::now())
    }

    /// Asks to make a call at `now` (tests drive the clock).
    pub fn try_acquire_at(&self, now: Instant) -> Result<Permit<'_>, Rejected> {
        let mut inner = self.lock();
        match inner.state {
            CircuitState::Closed => Ok(Permit { breaker: self, probe: false }),
            CircuitState::Open if now >= inner.open_until => {
                inner.state = CircuitState::HalfOpen;
                self.note_health(&inner);
                Ok(Permit { breaker: self, probe: true })
            }
            CircuitState::Open => Err(Rejected { retry_in: inner.open_until - now }),
            CircuitState::HalfOpen => Err(Rejected { retry_in: Duration::ZERO }),
        }
    }

    fn on_success(&self, probe: bool) {
        if !probe && self.healthy.load(Ordering::Acquire) {
            return; // nothing to reset
        }
        let mut inner = self.lock();
        inner.consecutive_failures = 0;
        if probe || inner.state == CircuitState::HalfOpen {
            inner.failed_probes = 0;
            inner.state = CircuitState::Closed;
        }
        self.note_health(&inner);
    }

    fn on_failure(&self, probe: bool, now: Instant) {
        let mut inner = self.lock();
        inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
        let trips = match inner.state {
            CircuitState::HalfOpen if probe => {
                inner.failed_probes = inner.failed_probes.saturating_add(1);
                true
            }
            CircuitState::Closed => inner.consecutive_failures >= self.config.failure_threshold,
            _ => false,
        };
        if trips {
            inner.state = CircuitState::Open;
            let probes = inner.failed_probes.saturating_sub(1);
            inner.open_until = now + self.config.open_backoff.delay(probes);
        }
        self.note_health(&inner);
    }

    fn release_probe(&self) {
        let mut inner = self.lock();
        if inner.state == CircuitState::HalfOpen {
            inner.state = CircuitState::Open;
        }
        self.note_health(&inner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig {
            failure_threshold: 3,
            open_backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(8)).without_jitter(),
        })
    }

    fn fail(b: &CircuitBreaker, now: Instant) {
        let p = b.try_acquire_at(now).expect("allowed");
        b.on_failure(p.probe, now);
    }

    #[test]
    fn it_opens_after_consecutive_failures_only() {
        let b = breaker();
        let t = Instant::now();
        fail(&b, t);
        fail(&b, t);
        b.try_acquire_at(t).unwrap().success(); // a success resets the count
        fail(&b, t);
        fail(&b, t);
        assert_eq!(b.state_at(t), CircuitState::Closed);
        fail(&b, t);
        assert_eq!(b.state_at(t), CircuitState::Open);
        let rejected = b.try_acquire_at(t).unwrap_err();
        assert_eq!(rejected.retry_in, Duration::from_secs(1));
    }

    #[test]
    fn after_the_cool_down_one_probe_goes_through_and_its_success_closes_the_circuit() {
        let b = breaker();
        let t = Instant::now();
        (0..3).for_each(|_| fail(&b, t));
        let later = t + Duration::from_secs(1);
        assert_eq!(b.state_at(later), CircuitState::HalfOpen);
        let probe = b.try_acquire_at(later).expect("probe allowed");
        assert!(b.try_acquire_at(later).is_err(), "only one probe at a time");
        probe.success();
        assert_eq!(b.state_at(later), CircuitState::Closed);
        assert!(b.try_acquire_at(later).is_ok());
    }

    #[test]
    fn a_failed_probe_reopens_with_a_longer_cool_down() {
        let b = breaker();
        let t = Instant::now();
        (0..3).for_each(|_| fail(&b, t));
        let t1 = t + Duration::from_secs(1);
        fail(&b, t1); // the probe fails
        assert_eq!(b.state_at(t1), CircuitState::Open);
        assert_eq!(b.try_acquire_at(t1).unwrap_err().retry_in, Duration::from_secs(1));
        let t2 = t1 + Duration::from_secs(1);
        fail(&b, t2); // second failed probe: cool-down doubles
        assert_eq!(b.try_acquire_at(t2).unwrap_err().retry_in, Duration::from_secs(2));
    }

    #[test]
    fn the_lock_free_path_agrees_with_the_state_machine() {
        let b = breaker();
        b.try_acquire().expect("closed").failure();
        assert!(!b.healthy.load(Ordering::Relaxed), "a counted failure leaves the fast path");
        b.try_acquire().expect("still closed").success();
        assert!(b.healthy.load(Ordering::Relaxed), "a success resets the count");
        (0..3).for_each(|_| b.try_acquire().expect("closed").failure());
        assert_eq!(b.state(), CircuitState::Open);
        assert!(b.try_acquire().is_err(), "an open circuit refuses through the public path too");
    }

    #[test]
    fn an_abandoned_probe_lets_another_probe_through() {
        let b = breaker();
        let t = Instant::now();
        (0..3).for_each(|_| fail(&b, t));
        let later = t + Duration::from_secs(2);
        b.try_acquire_at(later).unwrap().neutral();
        assert!(b.try_acquire_at(later).is_ok());
    }
}
