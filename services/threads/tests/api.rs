//! The threads service over real gRPC: the service runs on port 0 and is
//! called with the generated client. Everything touching storage runs on
//! SQLite, and on PostgreSQL too when `AGORA_TEST_POSTGRES_URL` is set.

use std::time::{Duration, Instant};

use agora_proto::threads::v1 as pb;
use agora_proto::threads::v1::threads_client::ThreadsClient;
use futures::future::join_all;
use kit::grpc::{channel, GrpcTls};
use kit::test_support::{fresh_db, Backend, Running};
use kit::Shutdown;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

// ---------------------------------------------------------------------------
// spawn_threads and its helpers

/// The interceptor the projects service uses: it carries the request context.
type Propagate = fn(tonic::Request<()>) -> Result<tonic::Request<()>, Status>;

/// A client as the projects service makes one.
type Client = ThreadsClient<InterceptedService<Channel, Propagate>>;

fn client_for(url: &str, tls: &GrpcTls) -> Client {
    let channel = channel(url, tls).expect("a channel");
    // Answers can be large (1 000 threads of up to 40 kB each); tonic's default limit is 4 MiB.
    ThreadsClient::with_interceptor(channel, kit::grpc::propagate_context as Propagate)
        .max_decoding_message_size(64 * 1024 * 1024)
}

/// A running threads service.
struct TestThreads {
    url: String,
    client: Client,
    service: Running,
}

/// Starts the threads service with `config` on port 0.
async fn spawn_threads(config: threads::Config) -> TestThreads {
    let service = threads::testing::spawn(config).await;
    let url = service.url.clone();
    // Plaintext; the TLS test makes its own clients.
    let client = client_for(&url, &GrpcTls::none());
    TestThreads { url, client, service }
}

/// Starts the threads service on a fresh database of `backend`.
async fn spawn_threads_on(backend: &Backend) -> (TestThreads, kit::test_support::TestDb) {
    let db = fresh_db(backend, "threads").await;
    (spawn_threads(threads::Config::for_tests(&db.url)).await, db)
}

fn new_thread(project_id: i64, thread_type: pb::ThreadType, message: &str, author: &str) -> pb::Thread {
    pb::Thread {
        project_id,
        thread_type: thread_type.into(),
        message: message.into(),
        author: author.into(),
        author_name: format!("{author} (display)"),
        ..Default::default()
    }
}

fn reply(project_id: i64, parent: i64, message: &str, author: &str) -> pb::Thread {
    pb::Thread { parent_thread_id: Some(parent), ..new_thread(project_id, pb::ThreadType::Comment, message, author) }
}

fn keyed(mut thread: pb::Thread, key: &str) -> pb::Thread {
    thread.idempotency_key = key.into();
    thread
}

fn edit(thread_id: i64, message: &str, author: &str) -> pb::Thread {
    pb::Thread { thread_id, message: message.into(), author: author.into(), ..Default::default() }
}

fn vote_of(thread_id: i64, voter: &str, direction: pb::VoteDirection) -> pb::VoteRequest {
    pb::VoteRequest { thread_id, voter: voter.into(), direction: direction.into() }
}

impl TestThreads {
    async fn update(&self, threads: Vec<pb::Thread>) -> Result<pb::UpdateThreadsResponse, Status> {
        self.client.clone().update_threads(pb::UpdateThreadsRequest { threads }).await.map(tonic::Response::into_inner)
    }

    async fn create(&self, threads: Vec<pb::Thread>) -> Vec<i64> {
        self.update(threads).await.expect("the threads are stored").thread_ids
    }

    async fn list(&self, project_id: i64, voter: &str) -> Vec<pb::Thread> {
        self.client
            .clone()
            .get_project_threads(pb::GetProjectThreadsRequest { project_id, limit: 0, voter: voter.into() })
            .await
            .expect("the threads are listed")
            .into_inner()
            .threads
    }

    async fn vote(
        &self,
        thread_id: i64,
        voter: &str,
        direction: pb::VoteDirection,
    ) -> Result<pb::VoteResponse, Status> {
        self.client.clone().vote(vote_of(thread_id, voter, direction)).await.map(tonic::Response::into_inner)
    }

    /// Stops gracefully and waits until the server is gone.
    async fn stop(self) {
        self.service.stop().await;
    }
}

fn refused(result: Result<impl std::fmt::Debug, Status>, code: Code) -> String {
    match result {
        Err(status) if status.code() == code => status.message().to_string(),
        other => panic!("expected {code:?}, got {other:?}"),
    }
}

kit::on_every_backend!(
    problems_solutions_and_a_reply_are_listed_oldest_first_with_their_fields,
    a_reply_must_name_an_existing_thread_of_the_same_project,
    a_batch_with_one_invalid_thread_stores_nothing_and_names_the_field,
    the_same_idempotency_key_creates_one_thread_even_when_sent_concurrently,
    only_the_author_may_change_a_message,
    a_thousand_concurrent_voters_are_counted_exactly,
    a_voter_racing_themself_on_two_replicas_still_counts_once,
    votes_on_unknown_threads_and_oversized_limits_are_refused,
    votes_beyond_a_threads_queue_are_refused_at_once_and_the_rest_counted,
);

// ---------------------------------------------------------------------------
// Creating and listing

async fn problems_solutions_and_a_reply_are_listed_oldest_first_with_their_fields(backend: Backend) {
    let (svc, _db) = spawn_threads_on(&backend).await;
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    let created = svc
        .update(vec![
            new_thread(7, pb::ThreadType::Problem, "Too little rain", "u-ada"),
            new_thread(7, pb::ThreadType::Solution, "Collect rainwater — 雨水", "u-ada"),
        ])
        .await
        .unwrap();
    assert_eq!(created.thread_ids.len(), 2);
    assert!(created.thread_ids[0] < created.thread_ids[1], "ids grow: {:?}", created.thread_ids);
    assert_eq!(created.threads.iter().map(|t| t.thread_id).collect::<Vec<_>>(), created.thread_ids);
    let problem = created.thread_ids[0];
    let answer = svc.create(vec![reply(7, problem, "How much rain?", "u-bob")]).await;
    // Another project's threads are not listed.
    svc.create(vec![new_thread(8, pb::ThreadType::Comment, "elsewhere", "u-bob")]).await;

    let listed = svc.list(7, "").await;
    assert_eq!(listed.len(), 3);
    assert_eq!(listed.iter().map(|t| t.thread_id).collect::<Vec<_>>(), [problem, created.thread_ids[1], answer[0]]);
    let first = &listed[0];
    assert_eq!(first.project_id, 7);
    assert_eq!(first.parent_thread_id, None);
    assert_eq!(first.thread_type(), pb::ThreadType::Problem);
    assert_eq!(first.message, "Too little rain");
    assert_eq!(first.author, "u-ada");
    assert_eq!(first.author_name, "u-ada (display)");
    assert_eq!((first.up_vote, first.down_vote), (0, 0));
    assert_eq!(first.my_vote(), pb::VoteDirection::None);
    assert!(first.idempotency_key.is_empty());
    let created_at = chrono::DateTime::parse_from_rfc3339(&first.created_at).expect("RFC 3339");
    assert!(created_at >= before && created_at <= chrono::Utc::now() + chrono::Duration::seconds(1), "{created_at}");
    assert_eq!(listed[1].thread_type(), pb::ThreadType::Solution);
    assert_eq!(listed[1].message, "Collect rainwater — 雨水");
    assert_eq!(listed[2].parent_thread_id, Some(problem));
    assert_eq!(listed[2].thread_type(), pb::ThreadType::Comment);
    // What UpdateThreads answered is what is stored.
    assert_eq!(created.threads[0], listed[0]);

    // A limit returns the oldest ones; an unknown project has no threads.
    let two = svc
        .client
        .clone()
        .get_project_threads(pb::GetProjectThreadsRequest { project_id: 7, limit: 2, voter: String::new() })
        .await
        .unwrap()
        .into_inner()
        .threads;
    assert_eq!(two.iter().map(|t| t.thread_id).collect::<Vec<_>>(), [problem, created.thread_ids[1]]);
    assert!(svc.list(999, "").await.is_empty());
    svc.stop().await;
}

async fn a_reply_must_name_an_existing_thread_of_the_same_project(backend: Backend) {
    let (svc, _db) = spawn_threads_on(&backend).await;
    let other = svc.create(vec![new_thread(1, pb::ThreadType::Problem, "theirs", "u1")]).await[0];
    let why = refused(svc.update(vec![reply(2, other, "cross-project", "u2")]).await, Code::InvalidArgument);
    assert_eq!(why, format!("threads[0].parent_thread_id: thread {other} belongs to another project"));
    let why = refused(svc.update(vec![reply(2, 424_242, "to nothing", "u2")]).await, Code::NotFound);
    assert_eq!(why, "threads[0].parent_thread_id: thread 424242 does not exist");
    assert!(svc.list(2, "").await.is_empty());
}

/// The `google.rpc.BadRequest` field violations in a refusal's details: (field, description).
fn violations(result: Result<impl std::fmt::Debug, Status>) -> Vec<(String, String)> {
    let status = result.expect_err("a refusal");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let bad = status.get_details_bad_request().expect("BadRequest details");
    bad.field_violations.into_iter().map(|v| (v.field, v.description)).collect()
}

#[tokio::test]
async fn an_invalid_field_is_named_in_the_status_details_for_callers_to_read() {
    let (svc, _db) = spawn_threads_on(&Backend::Sqlite).await;
    let blank = new_thread(5, pb::ThreadType::Problem, "   ", "u1");
    let ok = new_thread(5, pb::ThreadType::Problem, "fine", "u1");
    assert_eq!(
        violations(svc.update(vec![ok, blank]).await),
        [("threads[1].message".to_string(), "must not be blank".to_string())]
    );
    // Refusals found in the database (after the rules passed) carry them too.
    let other = svc.create(vec![new_thread(1, pb::ThreadType::Problem, "theirs", "u1")]).await[0];
    assert_eq!(
        violations(svc.update(vec![reply(2, other, "cross-project", "u2")]).await),
        [("threads[0].parent_thread_id".to_string(), format!("thread {other} belongs to another project"))]
    );
    assert_eq!(violations(svc.vote(other, "", pb::VoteDirection::Up).await)[0].0, "voter");
}

async fn a_batch_with_one_invalid_thread_stores_nothing_and_names_the_field(backend: Backend) {
    let (svc, _db) = spawn_threads_on(&backend).await;
    let ok = || new_thread(5, pb::ThreadType::Problem, "fine", "u1");

    // Caught by the rules before any write.
    let long = "ü".repeat(10_001);
    let why = refused(
        svc.update(vec![ok(), ok(), new_thread(5, pb::ThreadType::Solution, &long, "u1")]).await,
        Code::InvalidArgument,
    );
    assert_eq!(why, "threads[2].message: must be 1 to 10000 characters");
    let mut unspecified = ok();
    unspecified.thread_type = pb::ThreadType::Unspecified.into();
    let why = refused(svc.update(vec![ok(), unspecified]).await, Code::InvalidArgument);
    assert!(why.starts_with("threads[1].thread_type: "), "{why}");
    let why =
        refused(svc.update(vec![new_thread(5, pb::ThreadType::Problem, "   ", "u1")]).await, Code::InvalidArgument);
    assert_eq!(why, "threads[0].message: must not be blank");
    let why = refused(svc.update(vec![ok(); 201]).await, Code::InvalidArgument);
    assert_eq!(why, "threads: must contain at most 200 threads");

    // Caught by the database after two writes in the same transaction: they are undone.
    let why = refused(svc.update(vec![ok(), ok(), reply(5, 777_777, "orphan", "u1")]).await, Code::NotFound);
    assert!(why.starts_with("threads[2].parent_thread_id: "), "{why}");
    let why = refused(svc.update(vec![ok(), edit(888_888, "edit of nothing", "u1")]).await, Code::NotFound);
    assert!(why.starts_with("threads[1].thread_id: "), "{why}");
    assert!(svc.list(5, "").await.is_empty(), "nothing of a refused batch is stored");

    // A full batch of 10 000-character messages (4-byte characters: 8 MB) is accepted at once.
    let longest = "🌧".repeat(10_000);
    let full: Vec<pb::Thread> = (0..200).map(|_| new_thread(5, pb::ThreadType::Comment, &longest, "u1")).collect();
    assert_eq!(svc.create(full).await.len(), 200);
}

async fn the_same_idempotency_key_creates_one_thread_even_when_sent_concurrently(backend: Backend) {
    let (svc, _db) = spawn_threads_on(&backend).await;
    let proposal = |key: &str| {
        vec![
            keyed(new_thread(3, pb::ThreadType::Problem, "the problem", "u1"), &format!("{key}-p")),
            keyed(new_thread(3, pb::ThreadType::Solution, "the solution", "u1"), &format!("{key}-s")),
        ]
    };
    let first = svc.create(proposal("once")).await;
    let again = svc.create(proposal("once")).await;
    assert_eq!(first, again, "a retry returns the threads created the first time");
    assert_eq!(svc.list(3, "").await.len(), 2);

    // Ten callers racing with one key make one thread, and all get its id.
    let racing = (0..10).map(|_| svc.update(proposal("race")));
    let answers = join_all(racing).await;
    let ids: Vec<Vec<i64>> = answers.into_iter().map(|a| a.expect("every racer is answered").thread_ids).collect();
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    assert_eq!(svc.list(3, "").await.len(), 4);

    // A key reused for another author is a caller's bug, not a retry.
    let stolen = keyed(new_thread(3, pb::ThreadType::Problem, "the problem", "u2"), "once-p");
    let why = refused(svc.update(vec![stolen]).await, Code::InvalidArgument);
    assert!(why.starts_with("threads[0].idempotency_key: "), "{why}");
}

async fn only_the_author_may_change_a_message(backend: Backend) {
    let (svc, _db) = spawn_threads_on(&backend).await;
    let id = svc.create(vec![new_thread(4, pb::ThreadType::Solution, "first draft", "u-ada")]).await[0];

    let changed = svc.update(vec![edit(id, "second draft", "u-ada")]).await.unwrap();
    assert_eq!(changed.thread_ids, [id]);
    assert_eq!(changed.threads[0].message, "second draft");
    assert_eq!(changed.threads[0].thread_type(), pb::ThreadType::Solution, "only the message changes");

    let why = refused(svc.update(vec![edit(id, "vandalised", "u-eve")]).await, Code::PermissionDenied);
    assert_eq!(why, format!("threads[0].author: only the author of thread {id} may change its message"));
    let why = refused(svc.update(vec![edit(id + 1000, "nobody's", "u-ada")]).await, Code::NotFound);
    assert_eq!(why, format!("threads[0].thread_id: thread {} does not exist", id + 1000));
    assert_eq!(svc.list(4, "").await[0].message, "second draft");
}

// ---------------------------------------------------------------------------
// Votes

async fn a_thousand_concurrent_voters_are_counted_exactly(backend: Backend) {
    let db = fresh_db(&backend, "threads").await;
    // A thousand voters load a 2-core machine that other tests load too: with the default 500 ms,
    // a database probe starved of CPU can read as an outage (outage tests use the default).
    let patient = || {
        let mut config = threads::Config::for_tests(&db.url);
        config.database.outage.detect = Duration::from_secs(3);
        config
    };
    let svc = spawn_threads(patient()).await;
    // Two replicas on one database: each batches the votes it receives, and
    // only the database's row lock keeps the two from losing each other's votes.
    let replica = spawn_threads(patient()).await;
    let id = svc.create(vec![new_thread(9, pb::ThreadType::Problem, "vote on me", "u-author")]).await[0];
    // A few connections to each, as a few projects replicas would have.
    let clients: Vec<Client> =
        (0..6).map(|i| client_for(if i % 2 == 0 { &svc.url } else { &replica.url }, &GrpcTls::none())).collect();
    let voter = |i: usize| format!("voter-{i}");
    let cast = |i: usize, direction: pb::VoteDirection| {
        let mut client = clients[i % clients.len()].clone();
        let request = vote_of(id, &voter(i), direction);
        tokio::spawn(async move { client.vote(request).await.map(tonic::Response::into_inner) })
    };
    let started = Instant::now();

    let all_up = join_all((0..1000).map(|i| cast(i, pb::VoteDirection::Up))).await;
    for answer in all_up {
        let answer = answer.unwrap().expect("every vote is answered");
        assert_eq!(answer.direction(), pb::VoteDirection::Up);
    }
    let thread = &svc.list(9, "voter-1").await[0];
    assert_eq!((thread.up_vote, thread.down_vote), (1000, 0));

    // 400 change their mind, 100 withdraw, all at once.
    let changes = (0..500).map(|i| cast(i, if i < 400 { pb::VoteDirection::Down } else { pb::VoteDirection::None }));
    for answer in join_all(changes).await {
        answer.unwrap().expect("every change is answered");
    }
    let thread = &svc.list(9, "").await[0];
    assert_eq!((thread.up_vote, thread.down_vote), (500, 400));
    let elapsed = started.elapsed();

    // Voting up twice counts once; withdrawing twice changes nothing.
    let again = svc.vote(id, &voter(999), pb::VoteDirection::Up).await.unwrap();
    assert_eq!((again.up_vote, again.down_vote, again.direction()), (500, 400, pb::VoteDirection::Up));
    let again = svc.vote(id, &voter(450), pb::VoteDirection::None).await.unwrap();
    assert_eq!((again.up_vote, again.down_vote, again.direction()), (500, 400, pb::VoteDirection::None));
    // Up to down moves one vote across.
    let moved = svc.vote(id, &voter(999), pb::VoteDirection::Down).await.unwrap();
    assert_eq!((moved.up_vote, moved.down_vote), (499, 401));

    for (who, mine) in [
        (0, pb::VoteDirection::Down),
        (450, pb::VoteDirection::None),
        (998, pb::VoteDirection::Up),
        (999, pb::VoteDirection::Down),
    ] {
        assert_eq!(svc.list(9, &voter(who)).await[0].my_vote(), mine, "{}", voter(who));
    }
    assert_eq!(svc.list(9, "stranger").await[0].my_vote(), pb::VoteDirection::None);
    eprintln!("{backend:?}: 1 500 concurrent votes on two replicas in {elapsed:?}");
    replica.stop().await;
}

async fn a_voter_racing_themself_on_two_replicas_still_counts_once(backend: Backend) {
    let (svc, db) = spawn_threads_on(&backend).await;
    let replica = spawn_threads(threads::Config::for_tests(&db.url)).await;
    let id = svc.create(vec![new_thread(10, pb::ThreadType::Solution, "change your mind", "u-author")]).await[0];
    let clients = [client_for(&svc.url, &GrpcTls::none()), client_for(&replica.url, &GrpcTls::none())];
    let cycle = [pb::VoteDirection::Up, pb::VoteDirection::Down, pb::VoteDirection::None];
    // Each voter sends twelve different votes at once, through both replicas:
    // only the last one applied may count, once.
    let votes = (0..40).flat_map(|v| (0..12).map(move |n| (v, n))).map(|(v, n)| {
        let mut client = clients[n % 2].clone();
        let request = vote_of(id, &format!("racer-{v}"), cycle[(v + n) % 3]);
        tokio::spawn(async move { client.vote(request).await })
    });
    for answer in join_all(votes).await {
        answer.unwrap().expect("every vote is answered");
    }
    let (mut up, mut down) = (0, 0);
    for v in 0..40 {
        match svc.list(10, &format!("racer-{v}")).await[0].my_vote() {
            pb::VoteDirection::Up => up += 1,
            pb::VoteDirection::Down => down += 1,
            pb::VoteDirection::None => {}
        }
    }
    let thread = &svc.list(10, "").await[0];
    assert_eq!((thread.up_vote, thread.down_vote), (up, down), "the counts are the votes");
    replica.stop().await;
}

async fn votes_on_unknown_threads_and_oversized_limits_are_refused(backend: Backend) {
    let (svc, _db) = spawn_threads_on(&backend).await;
    let why = refused(svc.vote(31_337, "u1", pb::VoteDirection::Up).await, Code::NotFound);
    assert_eq!(why, "thread_id: thread 31337 does not exist");
    let id = svc.create(vec![new_thread(6, pb::ThreadType::Comment, "hello", "u1")]).await[0];
    let why = refused(svc.vote(id, "", pb::VoteDirection::Up).await, Code::InvalidArgument);
    assert_eq!(why, "voter: is required");
    let bad_direction = pb::VoteRequest { thread_id: id, voter: "u1".into(), direction: 7 };
    refused(svc.client.clone().vote(bad_direction).await, Code::InvalidArgument);

    let too_many = pb::GetProjectThreadsRequest { project_id: 6, limit: 1001, voter: String::new() };
    let why = refused(svc.client.clone().get_project_threads(too_many).await, Code::InvalidArgument);
    assert_eq!(why, "limit: must be at most 1000");
    let thousand = pb::GetProjectThreadsRequest { project_id: 6, limit: 1000, voter: String::new() };
    assert_eq!(svc.client.clone().get_project_threads(thousand).await.unwrap().into_inner().threads.len(), 1);
}

async fn votes_beyond_a_threads_queue_are_refused_at_once_and_the_rest_counted(backend: Backend) {
    let db = fresh_db(&backend, "threads").await;
    let mut config = threads::Config::for_tests(&db.url);
    config.vote_queue_limit = std::num::NonZeroUsize::new(2).unwrap();
    let svc = spawn_threads(config).await;
    let id = svc.create(vec![new_thread(12, pb::ThreadType::Problem, "a hot thread", "u-author")]).await[0];
    // Far more votes at once than may wait while a transaction runs.
    let votes = (0..300).map(|i| {
        let mut client = svc.client.clone();
        let request = vote_of(id, &format!("voter-{i}"), pb::VoteDirection::Up);
        tokio::spawn(async move { client.vote(request).await })
    });
    let (mut counted, mut refused) = (0, 0);
    for answer in join_all(votes).await {
        match answer.unwrap() {
            Ok(_) => counted += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert_eq!(status.message(), format!("too many votes are waiting on thread {id}; try again shortly"));
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "300 votes at once on a queue of 2 refuse some");
    let thread = &svc.list(12, "").await[0];
    assert_eq!(thread.up_vote, counted, "every answered vote is stored, no refused one is");
    // Once the queue has drained, a vote is taken again.
    let later = svc.vote(id, "voter-late", pb::VoteDirection::Up).await.unwrap();
    assert_eq!(later.up_vote, counted + 1);
}

// ---------------------------------------------------------------------------
// Serving: health, reflection, TLS, shutdown

#[tokio::test]
async fn health_says_serving_and_reflection_lists_the_threads_service() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let (svc, _db) = spawn_threads_on(&Backend::Sqlite).await;
    let channel = channel(&svc.url, &GrpcTls::none()).unwrap();
    let mut health = HealthClient::new(channel.clone());
    let status = health.check(HealthCheckRequest { service: "agora.threads.v1.Threads".into() }).await.unwrap();
    assert_eq!(status.into_inner().status(), ServingStatus::Serving);

    let mut reflection = ServerReflectionClient::new(channel);
    let requests = [
        MessageRequest::ListServices(String::new()),
        MessageRequest::FileContainingSymbol("agora.threads.v1.Threads".into()),
    ]
    .map(|m| ServerReflectionRequest { host: String::new(), message_request: Some(m) });
    let mut answers = reflection.server_reflection_info(tokio_stream::iter(requests)).await.unwrap().into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) = answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected the list of services");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"agora.threads.v1.Threads".to_string()), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health".to_string()), "{names:?}");
    let Some(MessageResponse::FileDescriptorResponse(files)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected the file of the threads service");
    };
    assert!(!files.file_descriptor_proto.is_empty());
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_only_clients_that_trust_the_ca_get_through() {
    let kit::test_support::TestCertificates { ca_pem: ca, cert_pem: cert, key_pem: key } =
        kit::test_support::TestCertificates::localhost();
    let db = fresh_db(&Backend::Sqlite, "threads").await;
    let mut config = threads::Config::for_tests(&db.url);
    config.tls = GrpcTls::server(cert, key);
    let svc = spawn_threads(config).await;
    assert!(svc.url.starts_with("http://"), "the registry address stays http://host:port: {}", svc.url);

    let trusting = client_for(&svc.url, &GrpcTls::client(ca.clone(), "localhost"));
    let created = trusting
        .clone()
        .update_threads(pb::UpdateThreadsRequest {
            threads: vec![new_thread(1, pb::ThreadType::Problem, "over TLS", "u1")],
        })
        .await
        .expect("a client trusting the CA is answered");
    assert_eq!(created.into_inner().threads[0].message, "over TLS");

    let list = || pb::GetProjectThreadsRequest { project_id: 1, limit: 0, voter: String::new() };
    let plaintext = client_for(&svc.url, &GrpcTls::none());
    let err = tokio::time::timeout(Duration::from_secs(5), plaintext.clone().get_project_threads(list()))
        .await
        .expect("a plaintext client is refused promptly")
        .unwrap_err();
    assert_ne!(err.code(), Code::Ok);

    let other_ca = kit::test_support::TestCertificates::localhost().ca_pem;
    let untrusting = client_for(&svc.url, &GrpcTls::client(other_ca, "localhost"));
    let err = tokio::time::timeout(Duration::from_secs(5), untrusting.clone().get_project_threads(list()))
        .await
        .expect("a client that does not trust the CA is refused promptly")
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");

    let wrong_name = client_for(&svc.url, &GrpcTls::client(ca, "threads.example"));
    let err = wrong_name.clone().get_project_threads(list()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "a certificate for another name is refused: {err}");
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_postgres, ignore = "set AGORA_TEST_POSTGRES_URL to run it against PostgreSQL")]
async fn health_says_not_serving_while_the_postgres_database_is_unreachable_and_serving_once_it_is_back() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let Some(server) = kit::test_support::postgres_url() else { return };
    let db = fresh_db(&Backend::Postgres(server.clone()), "threads").await;
    let svc = spawn_threads(threads::Config::for_tests(&db.url)).await;
    let health = HealthClient::new(channel(&svc.url, &GrpcTls::none()).unwrap());
    let status_of = |service: &'static str| {
        let mut health = health.clone();
        async move {
            let request = HealthCheckRequest { service: service.into() };
            health.check(request).await.map(|answer| answer.into_inner().status())
        }
    };
    assert_eq!(status_of("agora.threads.v1.Threads").await.unwrap(), ServingStatus::Serving);

    kit::test_support::set_postgres_database_reachable(&server, &db.url, false).await;
    let wait = Duration::from_secs(20);
    kit::test_support::eventually("health to say NOT_SERVING with the database gone", wait, || async {
        (status_of("agora.threads.v1.Threads").await.ok()? == ServingStatus::NotServing).then_some(())
    })
    .await;
    assert_eq!(status_of("").await.unwrap(), ServingStatus::NotServing, "the server as a whole too");

    kit::test_support::set_postgres_database_reachable(&server, &db.url, true).await;
    kit::test_support::eventually("health to say SERVING with the database back", wait, || async {
        (status_of("agora.threads.v1.Threads").await.ok()? == ServingStatus::Serving).then_some(())
    })
    .await;
    assert_eq!(status_of("").await.unwrap(), ServingStatus::Serving);
    assert_eq!(svc.list(1, "").await.len(), 0, "and it answers from the database again");
}

#[tokio::test]
async fn an_unreachable_database_stops_the_start_with_its_url_but_not_its_password() {
    let mut config = threads::Config::for_tests("postgres://threads:hunter2@127.0.0.1:1/threads");
    config.database.connect.max_retries = 0;
    let err = threads::start(config, Shutdown::new()).await.err().expect("no database, no start").to_string();
    assert!(err.contains("127.0.0.1:1"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_postgres, ignore = "set AGORA_TEST_POSTGRES_URL to run it against PostgreSQL")]
async fn every_call_is_unavailable_while_postgres_is_black_holed_and_answers_again_after() {
    use kit::test_support::{eventually, Fault, FaultProxy};
    let Some(server) = kit::test_support::postgres_url() else { return };
    let database = kit::test_support::fresh_postgres_database(&server).await;
    let proxy = FaultProxy::in_front_of(&database).await;
    let svc = spawn_threads(threads::Config::for_tests(proxy.url(&database))).await;
    let ids = svc.create(vec![new_thread(7, pb::ThreadType::Problem, "acknowledged", "ann")]).await;

    proxy.set(Fault::BlackHole);
    let list = pb::GetProjectThreadsRequest { project_id: 7, limit: 0, voter: String::new() };
    let err = svc.client.clone().get_project_threads(list.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    for _ in 0..3 {
        let err = svc.client.clone().get_project_threads(list.clone()).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err}");
        let err = svc.update(vec![new_thread(7, pb::ThreadType::Comment, "during", "bob")]).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err}");
        let err = svc.vote(ids[0], "bob", pb::VoteDirection::Up).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err}");
    }

    proxy.set(Fault::Pass);
    let listed = eventually("calls to answer again, nothing restarted", Duration::from_secs(20), || async {
        svc.client.clone().get_project_threads(list.clone()).await.ok().map(|r| r.into_inner().threads)
    })
    .await;
    assert!(listed.iter().any(|t| t.thread_id == ids[0]), "the thread acknowledged before is there");
    let counts = eventually("votes to go through again", Duration::from_secs(20), || async {
        svc.vote(ids[0], "bob", pb::VoteDirection::Up).await.ok()
    })
    .await;
    assert_eq!(counts.up_vote, 1);
}
