//! Exponential backoff with full jitter, shared by database connects, peer
//! retries, registry re-registration, job retries and `agora up` restarts.

use std::time::Duration;

/// The shape of a backoff: `base * factor^attempt`, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the first retry (before jitter).
    pub base: Duration,
    /// Upper bound of any delay.
    pub max: Duration,
    /// Growth per attempt.
    pub factor: f64,
    /// Whether delays are drawn uniformly from `[delay/2, delay]` to avoid thundering herds.
    pub jitter: bool,
}

impl Backoff {
    /// A backoff from `base` doubling up to `max`, jittered.
    pub const fn new(base: Duration, max: Duration) -> Self {
        Self { base, max, factor: 2.0, jitter: true }
    }

    /// The same backoff without jitter (for deterministic logs and tests).
    pub const fn without_jitter(mut self) -> Self {
        self.jitter = false;
        self
    }

    /// The un-jittered delay before retry number `attempt` (0-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let grown = self.base.as_secs_f64() * self.factor.powi(attempt.min(64) as i32);
        let capped = grown.min(self.max.as_secs_f64());
        Duration::from_secs_f64(capped.max(0.0))
    }

    /// The delay before retry number `attempt` (0-based), jittered if enabled.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        if !self.jitter || ceiling.is_zero() {
            return ceiling;
        }
        let half = ceiling.as_secs_f64() / 2.0;
        Duration::from_secs_f64(half + rand::random::<f64>() * half)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_until_the_cap() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).without_jitter();
        let delays: Vec<_> = (0..6).map(|a| b.delay(a).as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jitter_stays_between_half_and_the_full_delay() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        for attempt in 0..8 {
            let ceiling = b.ceiling(attempt);
            for _ in 0..50 {
                let d = b.delay(attempt);
                assert!(d <= ceiling && d >= ceiling / 2, "{d:?} outside [{:?}, {ceiling:?}]", ceiling / 2);
            }
        }
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(30));
    }
}
