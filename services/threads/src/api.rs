//! The gRPC API (`agora.threads.v1.Threads`): parses each request with the
//! domain rules, runs it against the store, and answers in the wire types;
//! every refusal becomes a status through [`ThreadsError`].

use agora_proto::threads::v1 as pb;
use agora_proto::threads::v1::threads_server::Threads;
use tonic::{Request, Response, Status};

use crate::domain;
use crate::error::ThreadsError;
use crate::store::Store;
use crate::votes::Votes;

/// The largest request accepted: a full `UpdateThreads` batch (200 messages of 10 000
/// characters of up to 4 bytes each is 8 MB) with room for the other fields.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// The `Threads` service over a store.
#[derive(Clone)]
pub struct ThreadsApi {
    store: Store,
    votes: Votes,
}

impl std::fmt::Debug for ThreadsApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadsApi").finish_non_exhaustive()
    }
}

impl ThreadsApi {
    /// The API over `store`, with at most `vote_queue_limit` votes waiting per thread.
    pub fn new(store: Store, vote_queue_limit: std::num::NonZeroUsize) -> Self {
        Self { votes: Votes::new(store.clone(), vote_queue_limit), store }
    }

    /// The generated tonic server for this API, ready for `kit::grpc::GrpcServices::with`. It accepts
    /// requests up to [`MAX_REQUEST_BYTES`]: tonic's 4 MiB default is less than a full batch.
    pub fn into_server(self) -> pb::threads_server::ThreadsServer<Self> {
        pb::threads_server::ThreadsServer::new(self).max_decoding_message_size(MAX_REQUEST_BYTES)
    }
}

#[tonic::async_trait]
impl Threads for ThreadsApi {
    async fn get_project_threads(
        &self,
        request: Request<pb::GetProjectThreadsRequest>,
    ) -> Result<Response<pb::GetProjectThreadsResponse>, Status> {
        let req = request.into_inner();
        if req.project_id <= 0 {
            return Err(ThreadsError::invalid("project_id", "must be a positive project id").into());
        }
        let limit = domain::limit(req.limit)?;
        let voter = domain::optional_voter(&req.voter)?;
        let threads = self.store.project_threads(req.project_id, limit, voter.as_deref()).await?;
        Ok(Response::new(pb::GetProjectThreadsResponse { threads: threads.iter().map(|t| t.to_pb()).collect() }))
    }

    async fn update_threads(
        &self,
        request: Request<pb::UpdateThreadsRequest>,
    ) -> Result<Response<pb::UpdateThreadsResponse>, Status> {
        let changes = domain::changes(&request.get_ref().threads)?;
        // A caller that gives up (its deadline) cancels this handler; the transaction must not be cut
        // short with it (see `kit::db::detached`).
        let stored = self.store.apply(changes).await?;
        Ok(Response::new(pb::UpdateThreadsResponse {
            thread_ids: stored.iter().map(|t| t.thread_id).collect(),
            threads: stored.iter().map(|t| t.to_pb()).collect(),
        }))
    }

    async fn vote(&self, request: Request<pb::VoteRequest>) -> Result<Response<pb::VoteResponse>, Status> {
        let req = request.into_inner();
        let thread_id = domain::thread_id("thread_id", req.thread_id)?;
        let voter = domain::voter(&req.voter)?;
        let direction = domain::direction(req.direction)?;
        let tally = self.votes.vote(thread_id, voter, direction).await?;
        Ok(Response::new(pb::VoteResponse {
            thread_id,
            up_vote: tally.up_vote,
            down_vote: tally.down_vote,
            direction: direction.to_pb().into(),
        }))
    }
}
