//! Failing fast while a backend (a database, a queue) is down: a [`Gate`] that every call to the
//! backend goes through.
//!
//! ```text
//!            probe fails                          probe succeeds (every `probe_every`)
//!   Up ─────────────────────────────► Down ──────────────────────────────────────► Up
//!   │ ▲                                │
//!   │ └─ probe succeeds: stays Up      └─ every call: `Unavailable` at once (503 + Retry-After)
//!   └─ a call failed to reach the backend, or ran longer than half of `detect`: probe (one at a time)
//! ```
//!
//! Up, calls run as they would without the gate. Two things make it suspect an outage: a call that
//! failed to reach the backend (refused, reset: the caller's error type says which errors those are,
//! [`Gated`]), and — for a backend across a network, where a partition makes connects and queries
//! hang instead of failing — a call still running after half of [`OutagePolicy::detect`]. Either
//! starts one probe (a fresh connection and a trivial query, within the other half): if it fails
//! and no call was answered meanwhile (a busy machine can make a probe slow, but an outage answers
//! nobody), the gate is Down, and every call waiting on the backend, and every later one, is answered with
//! [`Unavailable`] at once. So only the first calls of an outage wait, for at most `detect`. A slow
//! call to a backend that answers the probe (a query waiting on a row lock) is left to finish.
//!
//! Down, a background task probes every [`OutagePolicy::probe_every`] until the backend answers;
//! the gate is then Up again, with nothing restarted. A call cut short by the gate is not
//! cancelled inside the backend: database writes run detached (`kit::db::detached`), so a write
//! either commits or rolls back; it was never acknowledged, and an acknowledged one is never lost.
//!
//! The gate's state is part of the instance's `/readyz` body ([`Gate::health`]) without making the
//! instance unready: an instance with its database down still answers (503 problems, stale pages),
//! which is better than no instance at all.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::http::header;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{ConfigError, Env, Source};
use crate::problem::Problem;

/// How quickly an outage is noticed and a recovery seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutagePolicy {
    /// The longest a call waits on a backend that stopped answering before it is declared down
    /// (`DB_OUTAGE_DETECT_MS`, default 500 ms): half of it before a probe starts, half for the probe.
    pub detect: Duration,
    /// How often a down backend is probed (250 ms).
    pub probe_every: Duration,
    /// What `Retry-After` says while the backend is down (1 s).
    pub retry_after: Duration,
}

impl Default for OutagePolicy {
    fn default() -> Self {
        Self {
            detect: Duration::from_millis(500),
            probe_every: Duration::from_millis(250),
            retry_after: Duration::from_secs(1),
        }
    }
}

impl OutagePolicy {
    /// Reads `DB_OUTAGE_DETECT_MS` (at least 10 ms).
    pub fn from_env<S: Source>(env: &Env<S>) -> Result<Self, ConfigError> {
        let d = Self::default();
        let ms: u64 = env.parse_or("DB_OUTAGE_DETECT_MS", d.detect.as_millis() as u64)?;
        Ok(Self { detect: Duration::from_millis(ms.max(10)), ..d })
    }
}

/// Why a call to a backend was not made, or not answered: the backend is down, or cannot do this
/// right now. Every service's error type maps it to [`Unavailable::problem`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("the {dependency} is unavailable: {reason}")]
pub struct Unavailable {
    /// What is unavailable (`database`, `queue`).
    pub dependency: &'static str,
    /// Why, for logs and the problem's detail (no secrets: errors of the driver, not its URL).
    pub reason: String,
    /// When to try again.
    pub retry_after: Duration,
}

impl Unavailable {
    /// The 503 problem+json, with `Retry-After` (whole seconds, at least 1).
    pub fn problem(&self) -> Problem {
        let secs = self.retry_after.as_secs().max(1);
        Problem::unavailable(format!("the {} is unavailable right now; try again shortly", self.dependency))
            .titled("Service Unavailable")
            .with("dependency", self.dependency)
            .with("retry_after", secs)
            .header(header::RETRY_AFTER, &secs.to_string())
    }
}

/// What an error says about the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The backend could not be reached (refused, reset, timed out): it may be down, so the gate
    /// probes it. The call is answered as [`Unavailable`].
    Unreachable,
    /// The backend is there but cannot do this now (a SQLite file locked by another process
    /// beyond the busy timeout, or read-only): this call is [`Unavailable`], other calls (reads) go on.
    Refused,
}

/// An error type of calls through a [`Gate`]: it can hold an [`Unavailable`], and tells which of
/// its errors are the backend's failures.
pub trait Gated: From<Unavailable> + std::fmt::Display {
    /// `Some` when this error is the backend failing rather than an answer about the request.
    fn failure(&self) -> Option<Failure>;
}

/// Checks that the backend answers: a fresh connection and a trivial query.
pub type Probe = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Up,
    Down { reason: String },
}

/// A backend's gate: see the module documentation. Clones share their state.
#[derive(Clone)]
pub struct Gate {
    inner: Arc<Inner>,
}

struct Inner {
    dependency: &'static str,
    policy: OutagePolicy,
    probe: Probe,
    /// Whether a slow call is suspect (a backend across a network), or only a failed one.
    watch_slow: bool,
    state: watch::Sender<State>,
    /// Since when the state holds.
    since: Mutex<std::time::SystemTime>,
    /// A probe (or the recovery loop) is running.
    probing: AtomicBool,
    /// When the backend was last seen answering (a probe, or a call while `watch_slow`), in
    /// milliseconds since `epoch`, plus one (0: never). An atomic: every answered call writes it.
    verified_at_ms: AtomicU64,
    epoch: Instant,
}

impl Inner {
    fn mark_verified(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.verified_at_ms.store(ms + 1, Ordering::Relaxed);
    }

    /// Whether the backend was seen answering within `recently`.
    fn verified_within(&self, recently: Duration) -> bool {
        match self.verified_at_ms.load(Ordering::Relaxed) {
            0 => false,
            at => {
                let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
                now.saturating_sub(at - 1) < u64::try_from(recently.as_millis()).unwrap_or(u64::MAX)
            }
        }
    }
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("dependency", &self.inner.dependency)
            .field("state", &*self.inner.state.borrow())
            .finish()
    }
}

/// A dependency's state, as `/readyz` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DependencyHealth {
    /// `database`, `queue`, …
    pub name: &'static str,
    /// `up` or `down`.
    pub status: &'static str,
    /// Since when (RFC 3339).
    pub since: String,
    /// Why it is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Gate {
    /// A gate for `dependency` (`database`, `queue`) that checks the backend with `probe`.
    /// `watch_slow`: whether a call running longer than half of `policy.detect` is suspect (a
    /// backend across a network; not a local SQLite file, where waits are lock waits).
    pub fn new(dependency: &'static str, policy: OutagePolicy, watch_slow: bool, probe: Probe) -> Self {
        let (state, _) = watch::channel(State::Up);
        Self {
            inner: Arc::new(Inner {
                dependency,
                policy,
                probe,
                watch_slow,
                state,
                since: Mutex::new(std::time::SystemTime::now()),
                probing: AtomicBool::new(false),
                verified_at_ms: AtomicU64::new(0),
                epoch: Instant::now(),
            }),
        }
    }

    /// A gate that never closes: for a backend without outages of its own (tests, in-memory stores).
    pub fn always_up(dependency: &'static str) -> Self {
        Self::new(dependency, OutagePolicy::default(), false, Arc::new(|| Box::pin(async { Ok(()) })))
    }

    /// What this gate guards (`database`, `queue`).
    pub fn dependency(&self) -> &'static str {
        self.inner.dependency
    }

    /// Whether the backend is believed up.
    pub fn is_up(&self) -> bool {
        *self.inner.state.borrow() == State::Up
    }

    fn unavailable(&self, reason: impl Into<String>) -> Unavailable {
        Unavailable {
            dependency: self.inner.dependency,
            reason: reason.into(),
            retry_after: self.inner.policy.retry_after,
        }
    }

    /// `Ok` while the backend is believed up; [`Unavailable`] at once while it is down.
    pub fn check(&self) -> Result<(), Unavailable> {
        match &*self.inner.state.borrow() {
            State::Up => Ok(()),
            State::Down { reason } => Err(self.unavailable(reason.clone())),
        }
    }

    /// Runs `call` (one use of the backend) through the gate: answered [`Unavailable`] at once while
    /// the backend is down, or as soon as it is found down while `call` waits; a failure of the
    /// backend (see [`Gated`]) becomes [`Unavailable`] and makes the gate probe it.
    pub async fn run<T, E, F>(&self, call: F) -> Result<T, E>
    where
        E: Gated,
        F: Future<Output = Result<T, E>>,
    {
        self.check()?;
        let mut call = std::pin::pin!(call);
        let result = if self.inner.watch_slow {
            let mut state = self.inner.state.subscribe();
            let half = self.inner.policy.detect / 2;
            let suspicion = tokio::time::sleep(half);
            let mut suspicion = std::pin::pin!(suspicion);
            loop {
                tokio::select! {
                    biased;
                    result = &mut call => break result,
                    _ = state.wait_for(|s| *s != State::Up) => {
                        let reason = match self.check() {
                            Err(unavailable) => unavailable,
                            Ok(()) => self.unavailable("found down while the call waited"),
                        };
                        return Err(reason.into());
                    }
                    () = &mut suspicion => {
                        self.suspect(false);
                        suspicion.as_mut().reset(Instant::now() + half);
                    }
                }
            }
        } else {
            call.await
        };
        match result {
            Ok(value) => {
                self.answered();
                Ok(value)
            }
            Err(err) => match err.failure() {
                None => {
                    self.answered();
                    Err(err)
                }
                Some(Failure::Unreachable) => {
                    tracing::warn!(dependency = self.inner.dependency, error = %err, "backend unreachable; probing it");
                    self.suspect(true);
                    Err(self.unavailable(err.to_string()).into())
                }
                Some(Failure::Refused) => {
                    tracing::warn!(dependency = self.inner.dependency, error = %err, "backend refused the call for now");
                    Err(self.unavailable(err.to_string()).into())
                }
            },
        }
    }

    /// Notes that the backend just answered a call: while calls are being answered, a slow one is
    /// contention (a busy pool, a lock), not an outage, and starts no probe.
    fn answered(&self) {
        if self.inner.watch_slow {
            self.inner.mark_verified();
        }
    }

    /// Reports a failure seen outside [`Gate::run`] (a background task's call): `Unreachable` makes the gate probe.
    pub fn report(&self, failure: Failure) {
        if failure == Failure::Unreachable {
            self.suspect(true);
        }
    }

    /// Starts a probe unless one runs already (or, for a mere slow call, the backend answered a probe
    /// or a call within half of `detect`).
    fn suspect(&self, failed: bool) {
        let half = self.inner.policy.detect / 2;
        if !failed && self.inner.verified_within(half) {
            return;
        }
        if self.inner.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let Some(inner) = weak.upgrade() else { return };
            let answered_before = inner.verified_at_ms.load(Ordering::Relaxed);
            let verdict = probe_within(&inner, half).await;
            // A call answered while the probe ran: the backend is there, the probe was only slow
            // (a starved machine, a full connection limit); an outage answers nobody.
            let answered_meanwhile = inner.verified_at_ms.load(Ordering::Relaxed) != answered_before;
            match verdict {
                Ok(()) => {
                    inner.mark_verified();
                    inner.probing.store(false, Ordering::Release);
                }
                Err(reason) if answered_meanwhile => {
                    tracing::debug!(dependency = inner.dependency, %reason, "probe failed while calls were answered");
                    inner.probing.store(false, Ordering::Release);
                }
                Err(reason) => {
                    set_state(&inner, State::Down { reason });
                    drop(inner);
                    recover(weak).await;
                }
            }
        });
    }

    /// The dependency's state, for `/readyz`.
    pub fn health(&self) -> DependencyHealth {
        let since = *self.inner.since.lock().unwrap_or_else(|p| p.into_inner());
        let since = chrono_free_rfc3339(since);
        match &*self.inner.state.borrow() {
            State::Up => DependencyHealth { name: self.inner.dependency, status: "up", since, reason: None },
            State::Down { reason } => {
                DependencyHealth { name: self.inner.dependency, status: "down", since, reason: Some(reason.clone()) }
            }
        }
    }

    /// Waits until the backend is believed up (for workers that pause during an outage).
    pub async fn wait_up(&self) {
        let mut state = self.inner.state.subscribe();
        let _ = state.wait_for(|s| *s == State::Up).await;
    }
}

async fn probe_within(inner: &Inner, within: Duration) -> Result<(), String> {
    match tokio::time::timeout(within, (inner.probe)()).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {} ms", within.as_millis())),
    }
}

fn set_state(inner: &Inner, next: State) {
    let changed = inner.state.send_if_modified(|state| {
        if *state == next || (matches!(state, State::Down { .. }) && matches!(next, State::Down { .. })) {
            return false;
        }
        *state = next.clone();
        true
    });
    if !changed {
        return;
    }
    *inner.since.lock().unwrap_or_else(|p| p.into_inner()) = std::time::SystemTime::now();
    let up = next == State::Up;
    metrics::gauge!("dependency_up", "dependency" => inner.dependency).set(if up { 1.0 } else { 0.0 });
    match next {
        State::Up => tracing::warn!(dependency = inner.dependency, "backend reachable again; calls go through"),
        State::Down { reason } => {
            tracing::error!(dependency = inner.dependency, %reason, "backend down; calls fail fast until a probe succeeds")
        }
    }
}

/// Probes a down backend until it answers, then opens the gate. Ends early if the gate is dropped.
async fn recover(weak: Weak<Inner>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let every = inner.policy.probe_every;
        match probe_within(&inner, inner.policy.detect).await {
            Ok(()) => {
                inner.mark_verified();
                set_state(&inner, State::Up);
                inner.probing.store(false, Ordering::Release);
                return;
            }
            Err(reason) => tracing::debug!(dependency = inner.dependency, %reason, "backend still down"),
        }
        drop(inner);
        tokio::time::sleep(every).await;
    }
}

/// RFC 3339 in UTC, to the second, without a date crate (the kit's `chrono` is optional).
fn chrono_free_rfc3339(at: std::time::SystemTime) -> String {
    let secs = at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[derive(Debug, thiserror::Error)]
    enum TestError {
        #[error("refused")]
        Refused,
        #[error("not found")]
        NotFound,
        #[error(transparent)]
        Unavailable(#[from] Unavailable),
    }

    impl Gated for TestError {
        fn failure(&self) -> Option<Failure> {
            matches!(self, TestError::Refused).then_some(Failure::Unreachable)
        }
    }

    fn gate_with(answers: Arc<AtomicBool>, probes: Arc<AtomicU32>) -> Gate {
        let policy = OutagePolicy {
            detect: Duration::from_millis(100),
            probe_every: Duration::from_millis(20),
            ..Default::default()
        };
        Gate::new(
            "database",
            policy,
            true,
            Arc::new(move || {
                let (answers, probes) = (answers.clone(), probes.clone());
                Box::pin(async move {
                    probes.fetch_add(1, Ordering::Relaxed);
                    if answers.load(Ordering::Relaxed) {
                        Ok(())
                    } else {
                        Err("refused".to_string())
                    }
                })
            }),
        )
    }

    #[tokio::test]
    async fn a_backend_that_fails_and_fails_its_probe_closes_the_gate_until_it_answers_again() {
        let (answers, probes) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU32::new(0)));
        let gate = gate_with(answers.clone(), probes.clone());
        let err = gate.run(async { Err::<(), _>(TestError::Refused) }).await.unwrap_err();
        assert!(matches!(err, TestError::Unavailable(_)), "{err}");
        let mut state = gate.inner.state.subscribe();
        state.wait_for(|s| *s != State::Up).await.unwrap();
        assert_eq!(gate.health().status, "down");
        let calls = AtomicU32::new(0);
        let err = gate
            .run(async {
                calls.fetch_add(1, Ordering::Relaxed);
                Ok::<(), TestError>(())
            })
            .await
            .unwrap_err();
        assert!(matches!(err, TestError::Unavailable(_)));
        assert_eq!(calls.load(Ordering::Relaxed), 0, "a closed gate does not call the backend");
        answers.store(true, Ordering::Relaxed);
        gate.wait_up().await;
        assert!(gate.run(async { Ok::<_, TestError>(7) }).await.is_ok());
        assert_eq!(gate.health().status, "up");
    }

    #[tokio::test]
    async fn an_answer_about_the_request_is_not_a_failure_of_the_backend() {
        let (answers, probes) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicU32::new(0)));
        let gate = gate_with(answers, probes.clone());
        let err = gate.run(async { Err::<(), _>(TestError::NotFound) }).await.unwrap_err();
        assert!(matches!(err, TestError::NotFound));
        assert_eq!(probes.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_call_that_hangs_on_a_dead_backend_is_answered_once_the_probe_fails() {
        let (answers, probes) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU32::new(0)));
        let gate = gate_with(answers.clone(), probes);
        let err = gate.run(std::future::pending::<Result<(), TestError>>()).await.unwrap_err();
        assert!(matches!(err, TestError::Unavailable(_)), "{err}");
        assert!(!gate.is_up());
    }

    #[tokio::test]
    async fn a_slow_call_to_a_live_backend_is_left_to_finish() {
        let (answers, probes) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicU32::new(0)));
        let gate = gate_with(answers, probes.clone());
        let slow = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<_, TestError>("done")
        };
        assert_eq!(gate.run(slow).await.unwrap(), "done");
        assert!(probes.load(Ordering::Relaxed) >= 1, "the slow call was checked on");
        assert!(gate.is_up());
    }

    #[test]
    fn the_unavailable_problem_says_when_to_try_again() {
        let problem =
            Unavailable { dependency: "database", reason: "x".into(), retry_after: Duration::from_millis(300) }
                .problem();
        assert_eq!(problem.status, 503);
        assert!(problem.headers.iter().any(|(n, v)| n == header::RETRY_AFTER && v == "1"));
    }

    #[test]
    fn times_are_shown_in_rfc_3339() {
        let at = std::time::UNIX_EPOCH + Duration::from_secs(1_764_679_815);
        assert_eq!(chrono_free_rfc3339(at), "2025-12-02T12:50:15Z");
    }
}
