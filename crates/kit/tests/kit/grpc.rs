//! gRPC support: TLS settings from the environment, channels, how statuses
//! count for the peer client, `GrpcPeer` over them, and a server that serves
//! health, reflection and metrics, registers as `grpc`, and turns NOT_SERVING
//! before it stops.
//! (The end-to-end TLS test lives with the threads service.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, post, put};
use axum::{Json, Router};
use kit::backoff::Backoff;
use kit::config::{Env, ServiceConfig};
use kit::discovery::Discovery;
use kit::grpc::{attempt_error, channel, start_grpc, GrpcPeer, GrpcServices, GrpcTls};
use kit::peer::{AttemptError, CallPolicy, PeerError};
use kit::test_support::eventually;
use kit::Shutdown;
use serde_json::{json, Value};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// A CA and a certificate for `localhost` signed by it: (ca, cert, key), PEM.
fn localhost_pki() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap().signed_by(&key, &issuer).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

fn tls_error(vars: Vec<(String, String)>) -> String {
    GrpcTls::from_env(&Env::new(vars)).unwrap_err().to_string()
}

fn var(name: &str, value: impl std::fmt::Display) -> (String, String) {
    (name.to_string(), value.to_string())
}

#[test]
fn without_variables_grpc_is_plaintext() {
    let tls = GrpcTls::from_env(&Env::new(Vec::new())).unwrap();
    assert!(!tls.is_server_tls());
    assert!(!tls.is_client_tls());
}

#[test]
fn a_certificate_without_its_key_or_a_key_without_its_certificate_names_the_missing_variable() {
    let err = tls_error(vec![var("GRPC_TLS_CERT_FILE", "/etc/agora/cert.pem")]);
    assert!(err.contains("GRPC_TLS_KEY_FILE is not set"), "{err}");
    let err = tls_error(vec![var("GRPC_TLS_KEY_FILE", "/etc/agora/key.pem")]);
    assert!(err.contains("GRPC_TLS_CERT_FILE is not set"), "{err}");
}

#[test]
fn unreadable_or_wrong_files_name_the_variable_and_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = localhost_pki();
    let ca_path = dir.path().join("ca.pem");
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    let junk_path = dir.path().join("junk.pem");
    std::fs::write(&ca_path, &ca).unwrap();
    std::fs::write(&cert_path, &cert).unwrap();
    std::fs::write(&key_path, &key).unwrap();
    std::fs::write(&junk_path, "not a certificate").unwrap();
    let missing = dir.path().join("missing.pem");

    let err =
        tls_error(vec![var("GRPC_TLS_CERT_FILE", missing.display()), var("GRPC_TLS_KEY_FILE", key_path.display())]);
    assert!(err.contains("GRPC_TLS_CERT_FILE") && err.contains(&missing.display().to_string()), "{err}");
    let err =
        tls_error(vec![var("GRPC_TLS_CERT_FILE", cert_path.display()), var("GRPC_TLS_KEY_FILE", missing.display())]);
    assert!(err.contains("GRPC_TLS_KEY_FILE") && err.contains(&missing.display().to_string()), "{err}");
    let err =
        tls_error(vec![var("GRPC_TLS_CERT_FILE", junk_path.display()), var("GRPC_TLS_KEY_FILE", key_path.display())]);
    assert!(err.contains("GRPC_TLS_CERT_FILE") && err.contains("PEM"), "{err}");
    // A certificate where the key should be.
    let err =
        tls_error(vec![var("GRPC_TLS_CERT_FILE", cert_path.display()), var("GRPC_TLS_KEY_FILE", cert_path.display())]);
    assert!(err.contains("GRPC_TLS_KEY_FILE"), "{err}");
    // A key that is not the certificate's.
    let (_, _, other_key) = localhost_pki();
    let other_key_path = dir.path().join("other-key.pem");
    std::fs::write(&other_key_path, other_key).unwrap();
    let err = tls_error(vec![
        var("GRPC_TLS_CERT_FILE", cert_path.display()),
        var("GRPC_TLS_KEY_FILE", other_key_path.display()),
    ]);
    assert!(err.contains("GRPC_TLS_KEY_FILE"), "{err}");
    let err = tls_error(vec![var("GRPC_TLS_CA_FILE", missing.display())]);
    assert!(err.contains("GRPC_TLS_CA_FILE") && err.contains(&missing.display().to_string()), "{err}");
    let err = tls_error(vec![var("GRPC_TLS_CA_FILE", junk_path.display())]);
    assert!(err.contains("GRPC_TLS_CA_FILE"), "{err}");

    let tls = GrpcTls::from_env(&Env::new(vec![
        var("GRPC_TLS_CERT_FILE", cert_path.display()),
        var("GRPC_TLS_KEY_FILE", key_path.display()),
        var("GRPC_TLS_CA_FILE", ca_path.display()),
    ]))
    .unwrap();
    assert!(tls.is_server_tls() && tls.is_client_tls());
    let shown = format!("{tls:?}");
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    assert!(shown.contains("localhost"), "the default domain is localhost: {shown}");
}

#[tokio::test]
async fn channels_accept_registry_urls_and_refuse_others() {
    assert!(channel("http://127.0.0.1:1", &GrpcTls::none()).is_ok());
    let (ca, _, _) = localhost_pki();
    assert!(channel("http://127.0.0.1:1", &GrpcTls::client(ca, "localhost")).is_ok());
    for bad in ["127.0.0.1:1", "ftp://host:1", "http://", "http://host:1/path", "https://host:1"] {
        let err = channel(bad, &GrpcTls::none()).unwrap_err().to_string();
        assert!(err.contains(bad), "{bad}: {err}");
    }
}

#[test]
fn failures_of_the_instance_count_against_it_and_answers_do_not() {
    for code in
        [Code::Unavailable, Code::DeadlineExceeded, Code::Internal, Code::Unknown, Code::Aborted, Code::Cancelled]
    {
        assert!(matches!(attempt_error(tonic::Status::new(code, "x")), AttemptError::Unhealthy(_)), "{code:?}");
    }
    for code in [
        Code::InvalidArgument,
        Code::NotFound,
        Code::PermissionDenied,
        Code::FailedPrecondition,
        Code::AlreadyExists,
        Code::Unauthenticated,
        Code::OutOfRange,
        Code::ResourceExhausted,
    ] {
        assert!(matches!(attempt_error(tonic::Status::new(code, "x")), AttemptError::Answered(_)), "{code:?}");
    }
}

/// A registry that records what it is told.
#[derive(Clone, Default)]
struct FakeRegistry {
    registered: Arc<Mutex<Vec<Value>>>,
    deregistered: Arc<Mutex<Vec<String>>>,
}

async fn fake_registry() -> (FakeRegistry, url::Url, Shutdown) {
    let state = FakeRegistry::default();
    let app = Router::new()
        .route(
            "/v1/instances",
            post(|State(s): State<FakeRegistry>, Json(body): Json<Value>| async move {
                s.registered.lock().unwrap().push(body.clone());
                let instance = json!({
                    "instance_id": body["instance_id"], "service": body["service"], "address": body["address"],
                    "protocol": body["protocol"], "version": body["version"], "ttl_secs": 3,
                    "registered_at": "2025-01-01T00:00:00Z", "last_heartbeat_ms_ago": 0,
                });
                (StatusCode::CREATED, Json(instance))
            }),
        )
        .route("/v1/instances/{id}/heartbeat", put(|| async { StatusCode::NO_CONTENT }))
        .route(
            "/v1/instances/{id}",
            delete(|State(s): State<FakeRegistry>, Path(id): Path<String>| async move {
                s.deregistered.lock().unwrap().push(id);
                StatusCode::NO_CONTENT
            }),
        )
        .with_state(state.clone());
    let shutdown = Shutdown::new();
    let started =
        kit::service::start_http(&ServiceConfig::for_tests("registry", None), app, shutdown.clone()).await.unwrap();
    (state, url::Url::parse(&started.url()).unwrap(), shutdown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_server_serves_health_and_metrics_registers_as_grpc_and_says_not_serving_when_stopping() {
    let handle = kit::metrics::install().expect("a metrics recorder");
    let (registry, registry_url, registry_stop) = fake_registry().await;
    let config = ServiceConfig::for_tests("probe", Some(registry_url));
    let shutdown = Shutdown::new();
    let started = start_grpc(&config, GrpcServices::new(), &GrpcTls::none(), &[], shutdown.clone()).await.unwrap();
    let mut health = HealthClient::new(channel(&started.url(), &GrpcTls::none()).unwrap());

    let answer = health.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert_eq!(answer.status(), ServingStatus::Serving);
    let unknown = health.check(HealthCheckRequest { service: "no.such.Service".into() }).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    let registered = eventually("the registration", Duration::from_secs(5), || {
        let found = registry.registered.lock().unwrap().first().cloned();
        async move { found }
    })
    .await;
    assert_eq!(registered["protocol"], "grpc");
    assert_eq!(registered["service"], "probe");
    assert_eq!(registered["address"], started.addr.to_string());

    let rendered = handle.render();
    assert!(
        rendered.contains(r#"grpc_requests_total{method="/grpc.health.v1.Health/Check",status="OK"}"#),
        "{rendered}"
    );
    assert!(rendered.contains(r#"grpc_requests_total{method="/grpc.health.v1.Health/Check",status="NOT_FOUND"}"#));
    assert!(rendered.contains("grpc_request_duration_seconds_bucket{method=\"/grpc.health.v1.Health/Check\""));

    // A watcher sees the server go NOT_SERVING as soon as shutdown starts.
    let mut watch = health.watch(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().status(), ServingStatus::Serving);
    shutdown.cancel();
    let next = tokio::time::timeout(Duration::from_secs(5), watch.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(next.status(), ServingStatus::NotServing);
    drop(watch);
    drop(health);
    tokio::time::timeout(Duration::from_secs(10), started.wait()).await.expect("stops in time").unwrap();
    assert_eq!(*registry.deregistered.lock().unwrap(), vec![config.instance_id.clone()]);
    registry_stop.cancel();
}

#[tokio::test]
async fn reflection_lists_what_is_served() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let shutdown = Shutdown::new();
    let config = ServiceConfig::for_tests("probe", None);
    let started = start_grpc(&config, GrpcServices::new(), &GrpcTls::none(), &[], shutdown.clone()).await.unwrap();
    let mut client = ServerReflectionClient::new(channel(&started.url(), &GrpcTls::none()).unwrap());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = client.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) = answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected a list of services");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(
        names,
        ["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"]
    );
    shutdown.cancel();
}

/// Asks the health of `service` through `peer`, counting each attempt in `attempts`.
async fn health_through(
    peer: &GrpcPeer,
    service: &'static str,
    attempts: &AtomicUsize,
) -> Result<ServingStatus, PeerError<tonic::Status>> {
    let answer = peer
        .call(true, |channel| async move {
            attempts.fetch_add(1, Ordering::SeqCst);
            HealthClient::new(channel).check(HealthCheckRequest { service: service.into() }).await
        })
        .await?;
    Ok(answer.status())
}

#[tokio::test]
async fn a_grpc_peer_retries_a_dead_instance_on_a_live_one_and_returns_answers_as_they_are() {
    let shutdown = Shutdown::new();
    let config = ServiceConfig::for_tests("probe", None);
    let started = start_grpc(&config, GrpcServices::new(), &GrpcTls::none(), &[], shutdown.clone()).await.unwrap();
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let instances = Arc::new(HashMap::from([
        ("probe".to_string(), vec![dead, started.url()]),
        ("live".to_string(), vec![started.url()]),
        ("nowhere".to_string(), vec!["ftp://127.0.0.1:1".to_string()]),
    ]));
    let peer = |service: &str| {
        let backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(5));
        let policy = CallPolicy { backoff, ..CallPolicy::default() };
        GrpcPeer::new(service, Discovery::Static(instances.clone()), policy, GrpcTls::none())
    };
    let attempts = AtomicUsize::new(0);
    let check = |peer, service| health_through(peer, service, &attempts);

    // Whichever instance round-robin starts with, the live one answers.
    let probe = peer("probe");
    for _ in 0..2 {
        assert_eq!(check(&probe, "").await.unwrap(), ServingStatus::Serving);
    }
    let live = peer("live");
    attempts.store(0, Ordering::SeqCst);
    let refused = check(&live, "no.such.Service").await.unwrap_err();
    assert!(matches!(&refused, PeerError::Answered(status) if status.code() == Code::NotFound), "{refused}");
    assert_eq!(attempts.load(Ordering::SeqCst), 1, "an answer is not retried");

    // An instance whose URL cannot be a channel is unavailable, named in the error.
    let err = check(&peer("nowhere"), "").await.unwrap_err();
    assert!(matches!(&err, PeerError::Failed { error, .. } if error.code() == Code::Unavailable), "{err}");
    assert!(err.to_string().contains("ftp://127.0.0.1:1"), "{err}");
    shutdown.cancel();
}
