//! The event bus's conformance suite: every test runs against each backend through the
//! same public API, embedded (`embedded::…`) and RabbitMQ (`amqp::…`, against
//! `AGORA_TEST_AMQP_URL`, ignored without it unless `AGORA_REQUIRE_BACKENDS=1`). Each test
//! gets a fresh bus: a new SQLite file in a temp dir, or a namespace of its own on the
//! broker (deleted afterwards). Several `EventBus` connections stand in for several
//! processes (each binds its own wake-up socket or broker connection, as a process does).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kit::backoff::Backoff;
use kit::events::{
    Delivery, Durable, Event, EventBus, EventsConfig, EventsError, HandlerError, Heard, MAX_EVENT_BYTES,
};
use kit::test_support::eventually;
use kit::Shutdown;
use serde::{Deserialize, Serialize};

/// The topics this suite declares, as a contract crate would.
const TOPICS: &[&str] = &["test.greeting", "test.parting", "audit.logged"];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Greeting {
    n: u64,
}

impl Event for Greeting {
    const TOPIC: &'static str = "test.greeting";
    const VERSION: u32 = 1;
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Parting {
    words: String,
}

impl Event for Parting {
    const TOPIC: &'static str = "test.parting";
    const VERSION: u32 = 1;
}

/// Published as `audit.logged` but not what a `Greeting` handler can read.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Audit {
    line: String,
}

impl Event for Audit {
    const TOPIC: &'static str = "audit.logged";
    const VERSION: u32 = 1;
}

const TEST_TIMEOUT: Duration = Duration::from_secs(60);
const LONG: Duration = Duration::from_secs(20);

/// Every subscription name the suite uses (the RabbitMQ clean-up deletes their queues).
const SUBSCRIPTIONS: &[&str] =
    &["restart", "outbox", "billing", "audit", "ordered", "flaky", "strict", "leased", "slow", "fixed", "nobody"];

/// One bus store, reachable by as many connections as a test wants.
struct Backend {
    config: EventsConfig,
    _dir: tempfile::TempDir,
    broker: Option<(String, String)>,
}

impl Backend {
    fn embedded() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self { config: EventsConfig::embedded_in(dir.path()), _dir: dir, broker: None }
    }

    fn amqp() -> Option<Self> {
        let url = kit::test_support::amqp_url()?;
        let namespace = format!("agora-test-{}", uuid::Uuid::new_v4().simple());
        let dir = tempfile::tempdir().expect("temp dir");
        Some(Self {
            config: EventsConfig::new(url.clone()).with_namespace(&namespace),
            _dir: dir,
            broker: Some((url, namespace)),
        })
    }

    /// Deletes the test's queues and exchanges from the broker.
    async fn clean_up(&self) {
        if let Some((url, namespace)) = &self.broker {
            kit::test_support::delete_amqp_namespace(url, namespace, SUBSCRIPTIONS).await;
        }
    }

    /// A new connection: another process, as far as the bus can tell.
    async fn connect(&self) -> EventBus {
        EventBus::connect(&self.config, TOPICS).await.unwrap_or_else(|e| panic!("cannot connect to the bus: {e}"))
    }
}

/// Runs each named test against every backend.
macro_rules! conformance {
    ($($test:ident),+ $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    let backend = super::Backend::embedded();
                    tokio::time::timeout(super::TEST_TIMEOUT, super::$test(&backend)).await.expect("test timed out");
                }
            )+
        }
        mod amqp {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                #[cfg_attr(no_amqp, ignore = "set AGORA_TEST_AMQP_URL to run it against RabbitMQ")]
                async fn $test() {
                    use futures::FutureExt;
                    let Some(backend) = super::Backend::amqp() else { return };
                    let run = tokio::time::timeout(super::TEST_TIMEOUT, super::$test(&backend));
                    // Caught so that a failing test still deletes its queues.
                    let outcome = std::panic::AssertUnwindSafe(run).catch_unwind().await;
                    backend.clean_up().await;
                    match outcome {
                        Ok(finished) => finished.expect("test timed out"),
                        Err(panic) => std::panic::resume_unwind(panic),
                    }
                }
            )+
        }
    };
}

conformance!(
    every_durable_subscription_gets_every_event_and_consumers_of_one_share_them,
    every_listening_process_hears_every_event_published_after_it_listened,
    one_consumer_handles_events_in_publish_order,
    a_failing_handler_is_retried_then_its_event_is_dead_lettered_and_can_be_replayed,
    a_payload_the_handler_cannot_read_is_dead_lettered_at_once_with_the_reason,
    events_held_by_a_consumer_that_died_go_to_another_consumer,
    undeclared_topics_unmatched_patterns_and_oversize_events_are_refused,
    a_subscription_counts_its_waiting_events_as_lag,
);

/// RabbitMQ's bindings are additive, so only the embedded backend can refuse this.
#[tokio::test]
async fn an_embedded_subscription_keeps_its_pattern() {
    a_subscription_keeps_its_pattern(&Backend::embedded()).await;
}

/// A handler that records who handled which greeting, `(consumer, n)`.
fn recorder(
    consumer: &'static str,
    seen: Arc<Mutex<Vec<(&'static str, u64)>>>,
) -> impl Fn(Delivery) -> futures::future::BoxFuture<'static, Result<(), HandlerError>> + Send + Sync + 'static {
    move |delivery: Delivery| {
        let seen = seen.clone();
        Box::pin(async move {
            let greeting: Greeting = delivery.decode()?;
            seen.lock().unwrap().push((consumer, greeting.n));
            Ok(())
        })
    }
}

fn quick(name: &str, pattern: &str) -> Durable {
    Durable {
        backoff: Backoff::new(Duration::from_millis(20), Duration::from_millis(100)),
        poll: Duration::from_millis(200),
        ..Durable::new(name, pattern)
    }
}

async fn every_durable_subscription_gets_every_event_and_consumers_of_one_share_them(backend: &Backend) {
    let (one, two, publisher) = (backend.connect().await, backend.connect().await, backend.connect().await);
    let shutdown = Shutdown::new();
    let shared = Arc::new(Mutex::new(Vec::new()));
    let alone = Arc::new(Mutex::new(Vec::new()));
    let sharing = Durable { prefetch: 5, ..quick("billing", "test.*") };
    one.subscribe(sharing.clone(), recorder("one", shared.clone()), shutdown.clone()).await.expect("subscribe");
    two.subscribe(sharing, recorder("two", shared.clone()), shutdown.clone()).await.expect("subscribe");
    one.subscribe(quick("audit", "#"), recorder("audit", alone.clone()), shutdown.clone()).await.expect("subscribe");

    for n in 0..200 {
        publisher.publish(&format!("order-{n}"), &Greeting { n }).await.expect("publish");
    }

    eventually("both subscriptions have all 200", LONG, || async {
        (shared.lock().unwrap().len() >= 200 && alone.lock().unwrap().len() >= 200).then_some(())
    })
    .await;
    shutdown.cancel();
    let shared = shared.lock().unwrap().clone();
    let mut numbers: Vec<u64> = shared.iter().map(|(_, n)| *n).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (0..200).collect::<Vec<_>>(), "each event handled exactly once within the subscription");
    for consumer in ["one", "two"] {
        assert!(shared.iter().any(|(c, _)| *c == consumer), "consumer {consumer} handled none: {shared:?}");
    }
    let mut audited: Vec<u64> = alone.lock().unwrap().iter().map(|(_, n)| *n).collect();
    audited.sort_unstable();
    assert_eq!(audited, (0..200).collect::<Vec<_>>());
}

async fn every_listening_process_hears_every_event_published_after_it_listened(backend: &Backend) {
    let (one, two, publisher) = (backend.connect().await, backend.connect().await, backend.connect().await);
    publisher.publish("before", &Greeting { n: 999 }).await.expect("publish");
    let mut first = one.listen("test.greeting").await.expect("listen");
    let mut second = two.listen("test.#").await.expect("listen");

    publisher.publish("a", &Greeting { n: 1 }).await.expect("publish");
    publisher.publish("b", &Parting { words: "bye".into() }).await.expect("publish");
    publisher.publish("c", &Greeting { n: 2 }).await.expect("publish");

    let mut heard_first = Vec::new();
    while heard_first.len() < 2 {
        match tokio::time::timeout(LONG, first.next()).await.expect("first listener heard nothing") {
            Some(Heard::Event(e)) => heard_first.push(e.decode::<Greeting>().expect("a greeting").n),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(heard_first, vec![1, 2], "only greetings published after listening, in order");
    let mut heard_second = Vec::new();
    while heard_second.len() < 3 {
        match tokio::time::timeout(LONG, second.next()).await.expect("second listener heard nothing") {
            Some(Heard::Event(e)) => heard_second.push(e.key.clone()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(heard_second, vec!["a", "b", "c"]);
}

async fn one_consumer_handles_events_in_publish_order(backend: &Backend) {
    let (bus, publisher) = (backend.connect().await, backend.connect().await);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let shutdown = Shutdown::new();
    for n in 0..50 {
        publisher.publish("same-key", &Greeting { n }).await.expect("publish");
        if n == 0 {
            // The subscription exists from here: events before it are not for it.
            bus.subscribe(
                Durable { prefetch: 7, ..quick("ordered", "test.greeting") },
                recorder("only", seen.clone()),
                shutdown.clone(),
            )
            .await
            .expect("subscribe");
        }
    }
    eventually("49 events handled", LONG, || async { (seen.lock().unwrap().len() >= 49).then_some(()) }).await;
    shutdown.cancel();
    let order: Vec<u64> = seen.lock().unwrap().iter().map(|(_, n)| *n).collect();
    assert_eq!(order, (1..50).collect::<Vec<_>>());
}

async fn a_failing_handler_is_retried_then_its_event_is_dead_lettered_and_can_be_replayed(backend: &Backend) {
    let bus = backend.connect().await;
    let attempts = Arc::new(Mutex::new(HashMap::<u64, Vec<u32>>::new()));
    let healed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let shutdown = Shutdown::new();
    let (seen, fixed) = (attempts.clone(), healed.clone());
    bus.subscribe(
        Durable { max_attempts: 3, ..quick("flaky", "test.greeting") },
        move |delivery: Delivery| {
            let (seen, fixed) = (seen.clone(), fixed.clone());
            async move {
                let greeting: Greeting = delivery.decode()?;
                seen.lock().unwrap().entry(greeting.n).or_default().push(delivery.attempt);
                match greeting.n {
                    // Fails twice, then works.
                    1 if delivery.attempt < 3 => Err(HandlerError::Retry(format!("try {} failed", delivery.attempt))),
                    // Fails until the test heals it.
                    2 if !fixed.load(std::sync::atomic::Ordering::SeqCst) => {
                        Err(HandlerError::Retry(format!("still broken on attempt {}", delivery.attempt)))
                    }
                    _ => Ok(()),
                }
            }
        },
        shutdown.clone(),
    )
    .await
    .expect("subscribe");

    bus.publish("k", &Greeting { n: 1 }).await.expect("publish");
    let poison = bus.publish("k", &Greeting { n: 2 }).await.expect("publish");

    let dead = eventually("the flaky event handled, the hopeless one dead-lettered", LONG, || async {
        let dead = bus.dead_letters(Some("flaky")).await.expect("dead letters");
        let handled = attempts.lock().unwrap().get(&1).map(Vec::len) == Some(3);
        (handled && !dead.is_empty()).then_some(dead)
    })
    .await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].envelope.event_id, poison);
    assert_eq!(dead[0].attempts, 3);
    assert_eq!(dead[0].last_error, "still broken on attempt 3");
    assert_eq!(attempts.lock().unwrap().get(&1), Some(&vec![1, 2, 3]), "retried until it worked");
    assert_eq!(attempts.lock().unwrap().get(&2), Some(&vec![1, 2, 3]));
    assert_eq!(bus.lag("flaky").await.expect("lag"), 0);

    healed.store(true, std::sync::atomic::Ordering::SeqCst);
    bus.replay("flaky", poison).await.expect("replay");
    eventually("the replayed event is handled", LONG, || async {
        (attempts.lock().unwrap().get(&2).map(Vec::len) == Some(4)).then_some(())
    })
    .await;
    assert_eq!(attempts.lock().unwrap().get(&2), Some(&vec![1, 2, 3, 1]), "a replay starts its attempts afresh");
    assert!(bus.dead_letters(Some("flaky")).await.expect("dead letters").is_empty());
    match bus.replay("flaky", poison).await {
        Err(EventsError::NoSuchDeadLetter { .. }) => {}
        other => panic!("replaying twice: {other:?}"),
    }
    shutdown.cancel();
}

async fn a_payload_the_handler_cannot_read_is_dead_lettered_at_once_with_the_reason(backend: &Backend) {
    let bus = backend.connect().await;
    let calls = Arc::new(Mutex::new(0));
    let shutdown = Shutdown::new();
    let counted = calls.clone();
    bus.subscribe(
        quick("strict", "#"),
        move |delivery: Delivery| {
            let counted = counted.clone();
            async move {
                *counted.lock().unwrap() += 1;
                delivery.decode::<Greeting>().map(|_| ())
            }
        },
        shutdown.clone(),
    )
    .await
    .expect("subscribe");
    let id = bus.publish("x", &Audit { line: "not a greeting".into() }).await.expect("publish");
    let dead = eventually("dead-lettered", LONG, || async {
        let dead = bus.dead_letters(Some("strict")).await.expect("dead letters");
        (!dead.is_empty()).then_some(dead)
    })
    .await;
    assert_eq!(dead[0].envelope.event_id, id);
    assert_eq!(dead[0].attempts, 1, "not retried");
    assert!(dead[0].last_error.contains("expected topic test.greeting"), "{}", dead[0].last_error);
    assert_eq!(*calls.lock().unwrap(), 1);
    assert_eq!(bus.purge(Some("strict")).await.expect("purge"), 1);
    assert!(bus.dead_letters(Some("strict")).await.expect("dead letters").is_empty());
    shutdown.cancel();
}

async fn events_held_by_a_consumer_that_died_go_to_another_consumer(backend: &Backend) {
    let (dying, survivor, publisher) = (backend.connect().await, backend.connect().await, backend.connect().await);
    let durable = Durable { lease: Duration::from_millis(500), prefetch: 3, ..quick("leased", "test.greeting") };
    let started = Arc::new(tokio::sync::Notify::new());
    let signal = started.clone();
    // A consumer that takes events and never finishes them, then "dies" (its task is aborted).
    let stuck = dying
        .subscribe(
            durable.clone(),
            move |_delivery: Delivery| {
                let signal = signal.clone();
                async move {
                    signal.notify_one();
                    std::future::pending::<()>().await;
                    Ok(())
                }
            },
            Shutdown::new(),
        )
        .await
        .expect("subscribe");
    for n in 0..3 {
        publisher.publish("k", &Greeting { n }).await.expect("publish");
    }
    tokio::time::timeout(LONG, started.notified()).await.expect("the doomed consumer took an event");
    // As if its process were killed: its task, and with it its channel or leases, goes.
    stuck.abort();
    drop(dying);

    let seen = Arc::new(Mutex::new(Vec::new()));
    let shutdown = Shutdown::new();
    survivor.subscribe(durable, recorder("survivor", seen.clone()), shutdown.clone()).await.expect("subscribe");
    eventually("the survivor handled all three", LONG, || async { (seen.lock().unwrap().len() >= 3).then_some(()) })
        .await;
    let mut numbers: Vec<u64> = seen.lock().unwrap().iter().map(|(_, n)| *n).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, vec![0, 1, 2]);
    shutdown.cancel();
}

async fn undeclared_topics_unmatched_patterns_and_oversize_events_are_refused(backend: &Backend) {
    #[derive(Serialize, Deserialize)]
    struct Rogue;
    impl Event for Rogue {
        const TOPIC: &'static str = "rogue.thing";
        const VERSION: u32 = 1;
    }
    let bus = backend.connect().await;
    match bus.publish("k", &Rogue).await {
        Err(EventsError::UndeclaredTopic { topic, declared }) => {
            assert_eq!(topic, "rogue.thing");
            assert_eq!(declared, "test.greeting, test.parting, audit.logged");
        }
        other => panic!("publishing an undeclared topic: {other:?}"),
    }
    for pattern in ["rogue.*", "test.**", ""] {
        match bus.listen(pattern).await {
            Err(EventsError::UnmatchedPattern { declared, .. }) => assert!(declared.contains("test.greeting")),
            Err(other) => panic!("listening to {pattern:?}: {other:?}"),
            Ok(_) => panic!("listening to {pattern:?} was allowed"),
        }
    }
    let subscribed =
        bus.subscribe(Durable::new("nobody", "rogue.#"), recorder("x", Default::default()), Shutdown::new()).await;
    assert!(matches!(subscribed, Err(EventsError::UnmatchedPattern { .. })));
    let badly_named =
        bus.subscribe(Durable::new("no spaces", "#"), recorder("x", Default::default()), Shutdown::new()).await;
    assert!(matches!(badly_named, Err(EventsError::BadSubscriptionName(_))));
    let huge = Parting { words: "x".repeat(MAX_EVENT_BYTES) };
    match bus.publish("k", &huge).await {
        Err(EventsError::TooLarge { size, .. }) => assert!(size > MAX_EVENT_BYTES),
        other => panic!("an oversize event: {other:?}"),
    }
}

async fn a_subscription_counts_its_waiting_events_as_lag(backend: &Backend) {
    let bus = backend.connect().await;
    let shutdown = Shutdown::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    assert!(matches!(bus.lag("slow").await, Err(EventsError::NoSuchSubscription(_))));
    // Made, then stopped: events wait for it.
    bus.subscribe(quick("slow", "test.greeting"), recorder("slow", seen.clone()), shutdown.clone())
        .await
        .expect("subscribe");
    shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for n in 0..7 {
        bus.publish("k", &Greeting { n }).await.expect("publish");
    }
    bus.publish("k", &Parting { words: "not for slow".into() }).await.expect("publish");
    // RabbitMQ's queue counts follow its log a moment after the confirms.
    eventually("the lag counts the seven greetings", LONG, || async {
        (bus.lag("slow").await.ok() == Some(7)).then_some(())
    })
    .await;
    let resumed = Shutdown::new();
    bus.subscribe(quick("slow", "test.greeting"), recorder("slow", seen.clone()), resumed.clone())
        .await
        .expect("subscribe");
    // Lag counts waiting events, not those a handler holds: wait for both.
    eventually("the backlog drains and every greeting is handled", LONG, || async {
        let handled = seen.lock().unwrap().len();
        (handled >= 7 && bus.lag("slow").await.ok() == Some(0)).then_some(())
    })
    .await;
    assert_eq!(seen.lock().unwrap().len(), 7);
    // The consuming process reports the subscription, with its lag as last sampled.
    let consumed = bus.consumed();
    assert_eq!(consumed.len(), 1, "{consumed:?}");
    assert_eq!(consumed[0].subscription, "slow");
    // So does the `/readyz` of a service that serves with that bus (the gateway's /status reads it).
    let app = kit::http::service_router(
        axum::Router::new(),
        kit::http::RouterOptions { events: Some(bus.clone()), ..Default::default() },
    );
    let config = kit::config::ServiceConfig::for_tests("consumer", None);
    let started = kit::service::start_http(&config, app, resumed.clone()).await.expect("serve");
    let ready = kit::test_support::client().get(format!("{}/readyz", started.url())).send().await.expect("readyz");
    assert_eq!(ready.status(), 200);
    let ready: serde_json::Value = ready.json().await.expect("readyz body");
    assert_eq!(ready["subscriptions"][0]["subscription"], "slow", "{ready}");
    resumed.cancel();
    eventually("a stopped subscription is no longer reported", LONG, || async {
        bus.consumed().is_empty().then_some(())
    })
    .await;
}

async fn a_subscription_keeps_its_pattern(backend: &Backend) {
    let bus = backend.connect().await;
    let shutdown = Shutdown::new();
    bus.subscribe(quick("fixed", "test.greeting"), recorder("a", Default::default()), shutdown.clone())
        .await
        .expect("subscribe");
    match bus.subscribe(quick("fixed", "test.*"), recorder("b", Default::default()), shutdown.clone()).await {
        Err(EventsError::PatternChanged { existing, asked, .. }) => {
            assert_eq!((existing.as_str(), asked.as_str()), ("test.greeting", "test.*"));
        }
        other => panic!("changing a pattern: {other:?}"),
    }
    shutdown.cancel();
}

mod outbox {
    //! The transactional outbox, on each database engine, relaying to the embedded bus.

    use std::time::Duration;

    use kit::db::Database;
    use kit::events::outbox::{stage, OutboxRelay};
    use kit::events::{Envelope, EventBus};
    use kit::test_support::eventually;
    use kit::Shutdown;

    use kit::test_support::Backend as TestBackend;

    use super::{Backend, Greeting, LONG};

    /// A fresh database of the engine `backend` names.
    async fn open(backend: &TestBackend) -> (kit::test_support::TestDb, Database) {
        let test_db = kit::test_support::fresh_db(backend, "service").await;
        let db = match backend {
            TestBackend::Sqlite => Database::Sqlite(sqlx::SqlitePool::connect(&test_db.url).await.expect("sqlite")),
            TestBackend::Postgres(_) => {
                Database::Postgres(sqlx::PgPool::connect(&test_db.url).await.expect("postgres"))
            }
        };
        (test_db, db)
    }

    /// Stages greeting `n` in a transaction that commits or rolls back.
    async fn greet(db: &Database, n: u64, commit: bool) -> uuid::Uuid {
        macro_rules! in_tx {
            ($pool:expr) => {{
                let mut tx = $pool.begin().await.expect("begin");
                let id = stage(&mut tx, "k", &Greeting { n }).await.expect("stage");
                if commit {
                    tx.commit().await.expect("commit");
                } else {
                    tx.rollback().await.expect("rollback");
                }
                id
            }};
        }
        match db {
            Database::Sqlite(pool) => in_tx!(pool),
            Database::Postgres(pool) => in_tx!(pool),
        }
    }

    /// The outbox rows still waiting, as the relay would read them.
    async fn waiting(db: &Database) -> Vec<Envelope> {
        let rows: Vec<String> = match db {
            Database::Sqlite(pool) => {
                sqlx::query_scalar("SELECT envelope FROM event_outbox ORDER BY seq").fetch_all(pool).await
            }
            Database::Postgres(pool) => {
                sqlx::query_scalar("SELECT envelope FROM event_outbox ORDER BY seq").fetch_all(pool).await
            }
        }
        .expect("read the outbox");
        rows.iter().map(|r| serde_json::from_str(r).expect("an envelope")).collect()
    }

    /// Committed events are published once each, rolled-back ones never, and an event the
    /// relay sent but did not delete (it stopped in between) is not published twice.
    async fn exactly_the_committed_events_are_published(engine: TestBackend) {
        let bus = Backend::embedded();
        let handled = committed_events_reach_a_subscriber(engine, &bus).await;
        let numbers: Vec<u64> = handled.iter().map(|(_, n)| *n).collect();
        assert_eq!(numbers, vec![1, 3], "each committed event once, in order; the rolled-back one never");
    }

    kit::on_every_backend!(exactly_the_committed_events_are_published);

    /// RabbitMQ cannot tell that an event came before: the one the relay sent and did not
    /// delete comes again, with the same event id, for the handler to recognise. Nothing
    /// else repeats, and the rolled-back event never comes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(no_amqp, ignore = "set AGORA_TEST_AMQP_URL to run it against RabbitMQ")]
    async fn amqp_committed_events_are_published_and_a_resent_one_keeps_its_id() {
        use futures::FutureExt;
        let Some(bus) = Backend::amqp() else { return };
        let run = committed_events_reach_a_subscriber(TestBackend::Sqlite, &bus);
        let outcome = std::panic::AssertUnwindSafe(tokio::time::timeout(super::TEST_TIMEOUT, run)).catch_unwind().await;
        bus.clean_up().await;
        let handled = match outcome {
            Ok(finished) => finished.expect("test timed out"),
            Err(panic) => std::panic::resume_unwind(panic),
        };
        let mut ids = std::collections::HashSet::new();
        let once: Vec<u64> = handled.iter().filter(|(id, _)| ids.insert(*id)).map(|(_, n)| *n).collect();
        assert_eq!(once, vec![1, 3], "each committed event, by id, in order; the rolled-back one never");
        assert!(handled.len() <= 3, "only the resent event repeats: {handled:?}");
        assert!(handled.iter().filter(|(_, n)| *n == 3).count() == 1, "event 3 was sent once: {handled:?}");
    }

    /// Stages events 1 (committed), 2 (rolled back) and 3 (committed) in a database of
    /// `engine`, publishes event 1 as a relay that stopped before deleting its row would,
    /// then runs the relay; returns what a subscriber handled, as (event id, number).
    async fn committed_events_reach_a_subscriber(engine: TestBackend, backend: &Backend) -> Vec<(uuid::Uuid, u64)> {
        let (_guard, db) = open(&engine).await;
        let bus: EventBus = backend.connect().await;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let shutdown = Shutdown::new();
        let handler = {
            let seen = seen.clone();
            move |delivery: kit::events::Delivery| {
                let seen = seen.clone();
                async move {
                    let greeting: Greeting = delivery.decode()?;
                    seen.lock().unwrap().push((delivery.event_id(), greeting.n));
                    Ok(())
                }
            }
        };
        bus.subscribe(super::quick("outbox", "test.greeting"), handler, shutdown.clone()).await.expect("subscribe");

        // The relay's table exists before anything is staged: start it, stop it at once.
        let first = Shutdown::new();
        drop(
            OutboxRelay::start(db.clone(), bus.clone(), Duration::from_secs(3600), first.clone()).await.expect("relay"),
        );
        first.cancel();
        tokio::time::sleep(Duration::from_millis(100)).await;

        greet(&db, 1, true).await;
        greet(&db, 2, false).await;
        greet(&db, 3, true).await;
        // A relay that published event 1 and stopped before deleting its row.
        let staged = waiting(&db).await;
        assert_eq!(staged.len(), 2, "the rolled-back event was never staged");
        bus.publish_envelope(&staged[0]).await.expect("publish");

        let relay = OutboxRelay::start(db.clone(), bus.clone(), Duration::from_millis(50), shutdown.clone())
            .await
            .expect("relay");
        relay.staged();
        eventually("the outbox is empty", LONG, || async { waiting(&db).await.is_empty().then_some(()) }).await;
        eventually("both committed events handled", LONG, || async {
            let numbers: Vec<u64> = seen.lock().unwrap().iter().map(|(_, n)| *n).collect();
            (numbers.contains(&1) && numbers.contains(&3)).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        shutdown.cancel();
        let handled = seen.lock().unwrap().clone();
        handled
    }
}

mod serial {
    //! Tests that restart the shared broker: `.ci/run` runs them alone, after the others.

    use std::collections::HashSet;
    use std::process::Command;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use futures::FutureExt;
    use kit::test_support::eventually;
    use kit::Shutdown;

    use super::{quick, recorder, Backend, Greeting};

    /// Events published while the broker goes down and comes back.
    const EVENTS: u64 = 2_000;

    fn rabbitmqctl(args: &[&str]) {
        let status = Command::new("rabbitmqctl").args(args).status().expect("run rabbitmqctl");
        assert!(status.success(), "rabbitmqctl {args:?} failed");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[cfg_attr(no_amqp, ignore = "set AGORA_TEST_AMQP_URL to run it against RabbitMQ")]
    async fn amqp_every_confirmed_event_is_delivered_after_the_broker_restarts() {
        let Some(backend) = Backend::amqp() else { return };
        let run = tokio::time::timeout(Duration::from_secs(240), confirmed_events_survive_a_restart(&backend));
        let outcome = std::panic::AssertUnwindSafe(run).catch_unwind().await;
        backend.clean_up().await;
        match outcome {
            Ok(finished) => finished.expect("test timed out"),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    async fn confirmed_events_survive_a_restart(backend: &Backend) {
        let (consumer, publisher) = (backend.connect().await, backend.connect().await);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let shutdown = Shutdown::new();
        consumer
            .subscribe(quick("restart", "test.greeting"), recorder("c", seen.clone()), shutdown.clone())
            .await
            .expect("subscribe");

        let confirmed = Arc::new(Mutex::new(Vec::new()));
        let publishing = {
            let confirmed = confirmed.clone();
            tokio::spawn(async move {
                let mut refused = 0u32;
                for n in 0..EVENTS {
                    // An event is retried until the broker confirms it; only confirmed ones are promised.
                    while publisher.publish("k", &Greeting { n }).await.is_err() {
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    confirmed.lock().unwrap().push(n);
                }
                refused
            })
        };
        eventually("some events confirmed", Duration::from_secs(60), || async {
            (confirmed.lock().unwrap().len() >= 300).then_some(())
        })
        .await;
        let restart = tokio::task::spawn_blocking(|| {
            rabbitmqctl(&["stop_app"]);
            rabbitmqctl(&["start_app"]);
            rabbitmqctl(&["await_startup"]);
        });
        restart.await.expect("restart the broker");
        let refused = publishing.await.expect("publisher");
        assert!(refused > 0, "the restart was not noticed by the publisher: the test proves nothing");

        eventually("every confirmed event is delivered", Duration::from_secs(120), || async {
            let handled: HashSet<u64> = seen.lock().unwrap().iter().map(|(_, n)| *n).collect();
            confirmed.lock().unwrap().iter().all(|n| handled.contains(n)).then_some(())
        })
        .await;
        shutdown.cancel();
    }
}
