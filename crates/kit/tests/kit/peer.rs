//! The resilient peer client: balancing, retries only for idempotent calls and
//! within a budget, a breaker per instance, and the trace carried to the peer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use kit::backoff::Backoff;
use kit::circuit_breaker::{BreakerConfig, CircuitState};
use kit::config::ServiceConfig;
use kit::context::RequestContext;
use kit::discovery::{Discovery, Endpoint};
use kit::http::{service_router, RouterOptions};
use kit::peer::{AttemptError, CallPolicy, Peer, PeerError, RetryBudget};
use kit::service::start_http;
use kit::Shutdown;

/// A peer that answers with the trace id it sees.
async fn echo_trace_server() -> String {
    let app = Router::new().route(
        "/trace",
        get(|| async { RequestContext::current().map(|c| c.trace_id().to_string()).unwrap_or_default() }),
    );
    let started = start_http(
        &ServiceConfig::for_tests("echo", None),
        service_router(app, RouterOptions::default()),
        Shutdown::new(),
    )
    .await
    .unwrap();
    started.url()
}

fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

fn peer(urls: Vec<String>) -> Peer {
    let discovery = Discovery::Static(Arc::new(HashMap::from([("echo".to_string(), urls)])));
    let policy = CallPolicy {
        deadline: Duration::from_secs(3),
        per_try: Duration::from_secs(1),
        max_attempts: 3,
        retry_budget: RetryBudget::default(),
        backoff: Backoff::new(Duration::from_millis(5), Duration::from_millis(20)),
        breaker: BreakerConfig {
            failure_threshold: 2,
            open_backoff: Backoff::new(Duration::from_secs(30), Duration::from_secs(30)),
        },
        discovery_ttl: Duration::from_secs(60),
    };
    Peer::new("echo", discovery, policy)
}

async fn get_trace(endpoint: Endpoint, attempts: &AtomicUsize) -> Result<String, AttemptError<String>> {
    attempts.fetch_add(1, Ordering::SeqCst);
    let mut headers = reqwest::header::HeaderMap::new();
    kit::context::inject_current(&mut headers);
    let resp = reqwest::Client::new()
        .get(format!("{}/trace", endpoint.base_url))
        .headers(headers)
        .send()
        .await
        .map_err(|e| AttemptError::Unhealthy(e.to_string()))?;
    resp.text().await.map_err(|e| AttemptError::Unhealthy(e.to_string()))
}

#[tokio::test]
async fn idempotent_calls_are_retried_on_another_instance_and_the_trace_follows() {
    let live = echo_trace_server().await;
    let peer = peer(vec![dead_url(), live]);
    let ctx = RequestContext::from_headers(&Default::default());
    let trace = ctx.trace_id().to_string();
    let attempts = AtomicUsize::new(0);
    for _ in 0..4 {
        let seen =
            ctx.clone().scope(peer.call(true, |e| get_trace(e, &attempts))).await.expect("a live instance answers");
        assert_eq!(seen, trace, "the peer continues our trace");
    }
    // The dead instance failed twice, which opened its breaker: it is skipped now.
    let states: HashMap<String, CircuitState> = peer.circuit_states().into_iter().collect();
    assert!(states.values().any(|s| *s == CircuitState::Open), "{states:?}");
    let before = attempts.load(Ordering::SeqCst);
    peer.call(true, |e| get_trace(e, &attempts)).await.unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), before + 1, "no attempt is wasted on an open circuit");
}

#[tokio::test]
async fn non_idempotent_calls_are_tried_once() {
    let peer = peer(vec![dead_url()]);
    let attempts = AtomicUsize::new(0);
    let err = peer.call(false, |e| get_trace(e, &attempts)).await.unwrap_err();
    assert!(matches!(err, PeerError::Failed { .. }), "{err}");
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_application_error_is_returned_as_is_and_not_retried() {
    let live = echo_trace_server().await;
    let peer = peer(vec![live]);
    let attempts = AtomicUsize::new(0);
    let err = peer
        .call(true, |_| async {
            attempts.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(AttemptError::Answered("404 no such thread".to_string()))
        })
        .await
        .unwrap_err();
    assert!(matches!(err, PeerError::Answered(ref m) if m.contains("404")), "{err}");
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_peer_with_no_instances_is_reported_by_name() {
    let peer = peer(vec![]);
    let err = peer.call(true, |e| async move { Ok::<_, AttemptError<String>>(e) }).await.unwrap_err();
    assert!(err.to_string().contains("no instance of echo"), "{err}");
}

#[tokio::test]
async fn under_a_failing_peer_retries_stop_when_the_budget_is_spent() {
    let discovery = Discovery::Static(Arc::new(HashMap::from([("echo".to_string(), vec![dead_url()])])));
    // One retry a second for 10 s (a floor of 10), plus one for every five calls. (Nothing leaves
    // the 10 s window while this test runs: it takes milliseconds.)
    let budget = RetryBudget { window: Duration::from_secs(10), min_per_sec: 1, ratio: 0.2 };
    let policy = CallPolicy {
        max_attempts: 3,
        retry_budget: budget,
        backoff: Backoff::new(Duration::from_millis(1), Duration::from_millis(1)),
        // The breaker would cut the calls off first: this test is about the budget alone.
        breaker: BreakerConfig { failure_threshold: u32::MAX, ..BreakerConfig::default() },
        ..CallPolicy::default()
    };
    let peer = Peer::new("echo", discovery, policy);
    let attempts = &AtomicUsize::new(0);
    let failing_call = || {
        peer.call(true, |_| async {
            attempts.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(AttemptError::Unhealthy("503".to_string()))
        })
    };
    let attempts_of = |calls: usize| async move {
        let before = attempts.load(Ordering::SeqCst);
        for _ in 0..calls {
            assert!(matches!(failing_call().await, Err(PeerError::Failed { .. })));
        }
        attempts.load(Ordering::SeqCst) - before
    };

    assert_eq!(attempts_of(1).await, 3, "a quiet caller's call is retried up to its attempts");
    let calls = 100;
    let made = attempts_of(calls).await;
    // Without the budget: 300 attempts. With it: each call once, plus the floor and a fifth of the calls.
    assert!(made <= calls + 10 + (calls + 1) / 5, "{made} attempts for {calls} calls");
    assert!(made >= calls + 10, "the floor is spent before retries stop: {made}");
    assert_eq!(attempts_of(10).await, 12, "once spent, one retry for every five calls");
}
