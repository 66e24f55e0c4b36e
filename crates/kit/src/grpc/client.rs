//! The client side: channels to discovered instances, [`GrpcPeer`] (the
//! resilient peer with one channel per instance), the request context sent
//! along, and how a [`tonic::Status`] counts for the peer.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::Code;

use super::tls::GrpcTls;
use crate::circuit_breaker::CircuitState;
use crate::context::RequestContext;
use crate::discovery::{self, Discovery};
use crate::peer::{AttemptError, CallPolicy, Peer, PeerError};

/// Client interceptor: sends the current request id and `traceparent` to the peer.
pub fn propagate_context(mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    if let Some(ctx) = RequestContext::current() {
        if let Ok(v) = MetadataValue::try_from(ctx.request_id()) {
            req.metadata_mut().insert("x-request-id", v);
        }
        if let Ok(v) = MetadataValue::try_from(ctx.traceparent().as_bytes()) {
            req.metadata_mut().insert("traceparent", v);
        }
    }
    Ok(req)
}

/// Why a channel to a peer could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    /// The instance's base URL is not `http://host:port` (or `https://`).
    #[error("invalid gRPC endpoint {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The client TLS settings were refused (a CA that does not parse, say).
    #[error("gRPC client TLS for {url}: {reason}")]
    Tls {
        /// The URL the channel was for.
        url: String,
        /// What rustls or tonic said.
        reason: String,
    },
}

pub(super) fn client_endpoint(url: &str, ca_pem: &[u8], domain: &str) -> Result<Endpoint, GrpcError> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| GrpcError::InvalidUrl { url: url.to_string(), reason: e.to_string() })?;
    let config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)).domain_name(domain);
    endpoint.tls_config(config).map_err(|e| GrpcError::Tls { url: url.to_string(), reason: e.to_string() })
}

/// A lazily connecting channel to one instance, whose registry `base_url` is
/// `http://host:port`: it becomes `https://` with the CA and domain of `tls`
/// when client TLS is configured. Cheap to clone; callers keep one per instance
/// (it multiplexes every call over one HTTP/2 connection and reconnects by itself).
pub fn channel(base_url: &str, tls: &GrpcTls) -> Result<tonic::transport::Channel, GrpcError> {
    let invalid = |reason: &str| GrpcError::InvalidUrl { url: base_url.to_string(), reason: reason.to_string() };
    let trimmed = base_url.trim().trim_end_matches('/');
    let (scheme, rest) = trimmed.split_once("://").ok_or_else(|| invalid("expected http://host:port"))?;
    if !matches!(scheme, "http" | "https") {
        return Err(invalid("expected an http:// or https:// URL"));
    }
    if rest.is_empty() || rest.contains('/') {
        return Err(invalid("expected http://host:port, without a path"));
    }
    let endpoint = match &tls.client {
        Some((ca, domain)) => client_endpoint(&format!("https://{rest}"), ca, domain)?,
        None if scheme == "https" => {
            return Err(invalid("https needs client TLS settings (GRPC_TLS_CA_FILE)"));
        }
        None => Endpoint::from_shared(format!("http://{rest}")).map_err(|e| invalid(&e.to_string()))?,
    };
    Ok(endpoint
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(false)
        .connect_lazy())
}

/// How a failed call counts for [`crate::peer::Peer`]: statuses that say the
/// instance could not do the work (unavailable, timed out, broken)
/// count against its breaker and may be retried elsewhere; statuses that are
/// the server's considered answer about the request (invalid, not found,
/// denied, …) go back to the caller as they are. `RESOURCE_EXHAUSTED` is such an
/// answer: a quota, a limit on what one request may use (tonic's decompressed
/// size), or one key's backlog (the threads service's votes on a hot thread),
/// not the instance failing; sent
/// elsewhere it would meet the same limit, and counted against the breaker one
/// busy key would cut every caller off.
pub fn attempt_error(status: tonic::Status) -> AttemptError<tonic::Status> {
    match status.code() {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Internal
        | Code::Unknown
        | Code::Aborted
        // The call's stream or connection went away under it (an instance stopping, a reset):
        // the instance failed, not the request.
        | Code::Cancelled => AttemptError::Unhealthy(status),
        _ => AttemptError::Answered(status),
    }
}

/// The interceptor every [`PeerChannel`] runs: [`propagate_context`].
pub type Propagate = fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>;

/// A channel to one instance that sends the caller's request context along;
/// a generated client wraps it (`ThreadsClient::new(channel)`).
pub type PeerChannel = InterceptedService<Channel, Propagate>;

/// A client of every instance of one gRPC service: the [`Peer`]'s deadline,
/// retries, breakers and balancing, over one lazily connected [`channel`] per
/// instance. A channel multiplexes every call over one HTTP/2 connection and
/// reconnects by itself, so it is made once per instance and kept, not made per call.
pub struct GrpcPeer {
    peer: Peer,
    tls: GrpcTls,
    /// By the instance's base URL.
    channels: Mutex<HashMap<String, Channel>>,
}

impl std::fmt::Debug for GrpcPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcPeer").field("peer", &self.peer).field("tls", &self.tls).finish_non_exhaustive()
    }
}

impl GrpcPeer {
    /// A client of `service`, found through `discovery`, called under `policy`, over TLS when `tls` has a client side.
    pub fn new(service: &str, discovery: Discovery, policy: CallPolicy, tls: GrpcTls) -> Self {
        Self { peer: Peer::new(service, discovery, policy), tls, channels: Mutex::new(HashMap::new()) }
    }

    /// The peer service's name in the registry.
    pub fn service(&self) -> &str {
        self.peer.service()
    }

    /// The breaker state of every instance seen so far (for logs and status).
    pub fn circuit_states(&self) -> Vec<(String, CircuitState)> {
        self.peer.circuit_states()
    }

    fn channel(&self, endpoint: &discovery::Endpoint) -> Result<PeerChannel, GrpcError> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let channel = match channels.get(&endpoint.base_url) {
            Some(channel) => channel.clone(),
            None => {
                let channel = channel(&endpoint.base_url, &self.tls)?;
                channels.insert(endpoint.base_url.clone(), channel.clone());
                channel
            }
        };
        Ok(InterceptedService::new(channel, propagate_context as Propagate))
    }

    /// One RPC through the peer: `rpc` runs on a channel to each instance
    /// tried (a call that is not `idempotent` is tried once), and its status
    /// counts as [`attempt_error`] says. An instance whose URL cannot become a
    /// channel counts as unavailable.
    pub async fn call<T, F, Fut>(&self, idempotent: bool, rpc: F) -> Result<T, PeerError<tonic::Status>>
    where
        F: Fn(PeerChannel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let response = self
            .peer
            .call(idempotent, |endpoint| {
                let attempt = self
                    .channel(&endpoint)
                    .map(&rpc)
                    .map_err(|e| AttemptError::Unhealthy(tonic::Status::unavailable(e.to_string())));
                async move { attempt?.await.map_err(attempt_error) }
            })
            .await?;
        Ok(response.into_inner())
    }
}
