//! The projects service's client of the threads service (gRPC): every call
//! goes through the kit's [`GrpcPeer`] (deadline, retries for idempotent
//! calls, a breaker per instance, round-robin across the instances the
//! registry knows), over TLS when certificates are configured.

use agora_proto::threads::v1 as pb;
use kit::discovery::Discovery;
use kit::grpc::{GrpcPeer, GrpcTls, PeerChannel};
use kit::peer::{CallPolicy, PeerError};

use crate::domain::{Direction, ThreadType};

/// A thread type as the threads service spells it.
pub fn wire_type(kind: ThreadType) -> pb::ThreadType {
    match kind {
        ThreadType::Comment => pb::ThreadType::Comment,
        ThreadType::Solution => pb::ThreadType::Solution,
        ThreadType::Problem => pb::ThreadType::Problem,
    }
}

/// A thread type from the threads service (an unknown value reads as a comment).
pub fn type_from_wire(raw: i32) -> ThreadType {
    match pb::ThreadType::try_from(raw) {
        Ok(pb::ThreadType::Problem) => ThreadType::Problem,
        Ok(pb::ThreadType::Solution) => ThreadType::Solution,
        _ => ThreadType::Comment,
    }
}

/// A vote direction as the threads service spells it.
pub fn wire_direction(direction: Direction) -> pb::VoteDirection {
    match direction {
        Direction::Up => pb::VoteDirection::Up,
        Direction::Down => pb::VoteDirection::Down,
        Direction::None => pb::VoteDirection::None,
    }
}

/// A vote direction from the threads service (an unknown value reads as no vote).
pub fn direction_from_wire(raw: i32) -> Direction {
    match pb::VoteDirection::try_from(raw) {
        Ok(pb::VoteDirection::Up) => Direction::Up,
        Ok(pb::VoteDirection::Down) => Direction::Down,
        _ => Direction::None,
    }
}

/// The threads service's name in the registry.
pub const SERVICE: &str = "threads";

/// Largest gRPC message either way: a project's 1 000 threads of 10 000 four-byte characters fit.
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Why a call to the threads service did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ThreadsError {
    /// The threads service answered with an error for the caller (invalid argument, not found…).
    #[error("threads service: {}", .0.message())]
    Answered(tonic::Status),
    /// The threads service could not be reached or failed.
    #[error("{0}")]
    Unavailable(String),
}

impl From<PeerError<tonic::Status>> for ThreadsError {
    fn from(err: PeerError<tonic::Status>) -> Self {
        match err {
            PeerError::Answered(status) => Self::Answered(status),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

/// A client of every threads instance.
#[derive(Debug)]
pub struct Threads {
    peer: GrpcPeer,
}

type Client = pb::threads_client::ThreadsClient<PeerChannel>;

/// A client of the threads service on `channel`.
fn client(channel: PeerChannel) -> Client {
    // A project's threads can exceed tonic's 4 MiB default (1 000 messages of up to 10 000 characters).
    pb::threads_client::ThreadsClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

impl Threads {
    /// A client finding instances through `discovery`.
    pub fn new(discovery: Discovery, policy: CallPolicy, tls: GrpcTls) -> Self {
        Self { peer: GrpcPeer::new(SERVICE, discovery, policy, tls) }
    }

    /// The breaker state of each instance seen so far (for logs and status).
    pub fn circuit_states(&self) -> Vec<(String, kit::circuit_breaker::CircuitState)> {
        self.peer.circuit_states()
    }

    /// One RPC through the peer: `rpc` is run on a client of each instance tried, with a copy of `request`.
    async fn call<Req, Resp, F, Fut>(&self, idempotent: bool, request: Req, rpc: F) -> Result<Resp, ThreadsError>
    where
        Req: Clone,
        F: Fn(Client, Req) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        Ok(self.peer.call(idempotent, |channel| rpc(client(channel), request.clone())).await?)
    }

    /// The threads of a project, oldest first, with `voter`'s own votes marked.
    pub async fn of_project(&self, project_id: i64, voter: Option<&str>) -> Result<Vec<pb::Thread>, ThreadsError> {
        let request = pb::GetProjectThreadsRequest { project_id, limit: 0, voter: voter.unwrap_or_default().into() };
        let response =
            self.call(true, request, |mut client, r| async move { client.get_project_threads(r).await }).await?;
        Ok(response.threads)
    }

    /// Creates threads (each with an idempotency key, so a retried call creates nothing twice).
    pub async fn create(&self, threads: Vec<pb::Thread>) -> Result<Vec<pb::Thread>, ThreadsError> {
        let idempotent = threads.iter().all(|t| !t.idempotency_key.is_empty());
        let request = pb::UpdateThreadsRequest { threads };
        let response =
            self.call(idempotent, request, |mut client, r| async move { client.update_threads(r).await }).await?;
        Ok(response.threads)
    }

    /// Sets `voter`'s vote on a thread; setting a direction twice is harmless, so it is retried.
    pub async fn vote(
        &self,
        thread_id: i64,
        voter: &str,
        direction: pb::VoteDirection,
    ) -> Result<pb::VoteResponse, ThreadsError> {
        let request = pb::VoteRequest { thread_id, voter: voter.to_string(), direction: direction.into() };
        self.call(true, request, |mut client, r| async move { client.vote(r).await }).await
    }
}
