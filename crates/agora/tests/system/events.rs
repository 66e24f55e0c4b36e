//! The event bus across processes: consumers are `agora events tail` children and
//! publishers `agora events publish` children, killed with SIGKILL as a crash would.
//! The kill tests run on the embedded bus and on RabbitMQ (`amqp_…`, in a namespace of
//! their own on the broker, deleted afterwards).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use contracts::projects::ProjectChanged;
use kit::events::{EventBus, EventsConfig};
use kit::test_support::eventually;

/// Events published in the kill tests.
const EVENTS: i64 = 10_000;

/// The subscription the consumers share.
const SUBSCRIPTION: &str = "indexer";

/// Where the bus lives: a data directory of its own, or a namespace of its own on the broker.
struct Bus {
    data: tempfile::TempDir,
    broker: Option<(String, String)>,
}

impl Bus {
    fn embedded() -> Self {
        Self { data: tempfile::tempdir().expect("temp dir"), broker: None }
    }

    fn amqp() -> Option<Self> {
        let url = kit::test_support::amqp_url()?;
        let namespace = format!("agora-test-{}", uuid::Uuid::new_v4().simple());
        Some(Self { data: tempfile::tempdir().expect("temp dir"), broker: Some((url, namespace)) })
    }

    fn config(&self) -> EventsConfig {
        match &self.broker {
            Some((url, namespace)) => EventsConfig::new(url.clone()).with_namespace(namespace),
            None => EventsConfig::embedded_in(self.data.path()),
        }
    }

    async fn connect(&self) -> EventBus {
        EventBus::connect(&self.config(), contracts::TOPICS).await.expect("connect to the bus")
    }

    /// `agora events …` on this bus.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_agora"));
        command.arg("events").args(args).env("DATA_DIR", self.data.path());
        match &self.broker {
            Some((url, namespace)) => command.env("EVENTS_URL", url).env("EVENTS_NAMESPACE", namespace),
            None => command.env_remove("EVENTS_URL").env_remove("EVENTS_NAMESPACE"),
        };
        command
    }

    async fn clean_up(&self) {
        if let Some((url, namespace)) = &self.broker {
            kit::test_support::delete_amqp_namespace(url, namespace, &[SUBSCRIPTION]).await;
        }
    }
}

/// A consumer process of [`SUBSCRIPTION`] whose printed events are counted by event id and
/// by project id.
struct Consumer {
    child: Child,
    by_project: Arc<Mutex<HashMap<i64, u32>>>,
    by_event: Arc<Mutex<HashSet<String>>>,
    /// It said its subscription is consuming.
    consuming: Arc<std::sync::atomic::AtomicBool>,
}

impl Consumer {
    fn start(bus: &Bus) -> Self {
        let mut child = bus
            .command(&["tail", "--subscription", SUBSCRIPTION, "--pattern", "project.*", "--lease-secs", "2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start agora events tail");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let consuming = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let said = Arc::clone(&consuming);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("is consuming") {
                    said.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
        });
        let by_project: Arc<Mutex<HashMap<i64, u32>>> = Arc::default();
        let by_event: Arc<Mutex<HashSet<String>>> = Arc::default();
        let (projects, events) = (Arc::clone(&by_project), Arc::clone(&by_event));
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
                if let Some(id) = event["payload"]["project_id"].as_i64() {
                    *projects.lock().unwrap().entry(id).or_default() += 1;
                }
                if let Some(id) = event["event_id"].as_str() {
                    events.lock().unwrap().insert(id.to_string());
                }
            }
        });
        Self { child, by_project, by_event, consuming }
    }

    /// Waits until its subscription takes every event published from now on. (That its queue
    /// exists is not enough: on RabbitMQ the queue is declared, then bound.)
    async fn wait_consuming(&self) {
        eventually("the consumer made its subscription", Duration::from_secs(30), || async {
            self.consuming.load(std::sync::atomic::Ordering::SeqCst).then_some(())
        })
        .await;
    }

    fn printed(&self) -> usize {
        self.by_project.lock().unwrap().values().map(|n| *n as usize).sum()
    }

    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A publisher process fed `ProjectChanged` payloads on its standard input; the ids of the
/// events it confirmed are collected as it prints them.
struct Publisher {
    child: Child,
    confirmed: Arc<Mutex<Vec<String>>>,
}

impl Publisher {
    fn start(bus: &Bus, projects: std::ops::Range<i64>) -> Self {
        let mut child = bus
            .command(&["publish", "--topic", "project.changed", "--key", "system-test"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start agora events publish");
        let mut stdin = child.stdin.take().expect("stdin");
        std::thread::spawn(move || {
            for project_id in projects {
                let changed = ProjectChanged { project_id, tags: vec![], changed_at: chrono::Utc::now() };
                let line = serde_json::to_string(&changed).expect("encode");
                // The write fails once the publisher is killed: that is the end of the feed.
                if writeln!(stdin, "{line}").is_err() {
                    return;
                }
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let confirmed = Arc::new(Mutex::new(Vec::new()));
        let printed = Arc::clone(&confirmed);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
                if let Some(id) = event["event_id"].as_str() {
                    printed.lock().unwrap().push(id.to_string());
                }
            }
        });
        Self { child, confirmed }
    }

    fn confirmed(&self) -> usize {
        self.confirmed.lock().unwrap().len()
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `test` within a time limit, then deletes what it made on `bus`'s broker.
async fn on(bus: &Bus, test: impl std::future::Future<Output = ()>) {
    use futures::FutureExt;
    let run = tokio::time::timeout(Duration::from_secs(240), test);
    let outcome = std::panic::AssertUnwindSafe(run).catch_unwind().await;
    bus.clean_up().await;
    match outcome {
        Ok(finished) => finished.expect("test timed out"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_killed_mid_stream_loses_no_event_and_repeats_only_what_it_held() {
    let bus = Bus::embedded();
    on(&bus, consumer_killed_mid_stream(&bus)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_amqp, ignore = "set AGORA_TEST_AMQP_URL to run it against RabbitMQ")]
async fn amqp_a_consumer_killed_mid_stream_loses_no_event_and_repeats_only_what_it_held() {
    let Some(bus) = Bus::amqp() else { return };
    on(&bus, consumer_killed_mid_stream(&bus)).await;
}

async fn consumer_killed_mid_stream(bus: &Bus) {
    let publishing_bus = bus.connect().await;
    let mut first = Consumer::start(bus);
    first.wait_consuming().await;

    let publisher = {
        let bus = publishing_bus.clone();
        tokio::spawn(async move {
            for project_id in 0..EVENTS {
                let changed = ProjectChanged { project_id, tags: vec![], changed_at: chrono::Utc::now() };
                bus.publish(&project_id.to_string(), &changed).await.expect("publish");
            }
        })
    };
    eventually("the first consumer is under way", Duration::from_secs(60), || async {
        (first.printed() >= 1000).then_some(())
    })
    .await;
    first.kill();
    let printed_by_first = first.printed();

    let second = Consumer::start(bus);
    publisher.await.expect("publisher");
    eventually("every event was handled by one consumer or the other", Duration::from_secs(120), || async {
        let (a, b) = (first.by_project.lock().unwrap(), second.by_project.lock().unwrap());
        (0..EVENTS).all(|id| a.contains_key(&id) || b.contains_key(&id)).then_some(())
    })
    .await;
    eventually("the subscription is drained", Duration::from_secs(30), || async {
        (publishing_bus.lag(SUBSCRIPTION).await.ok() == Some(0)).then_some(())
    })
    .await;

    let (a, b) = (first.by_project.lock().unwrap(), second.by_project.lock().unwrap());
    let twice: Vec<i64> = (0..EVENTS).filter(|id| a.contains_key(id) && b.contains_key(id)).collect();
    let repeated_by_one = a.values().chain(b.values()).filter(|n| **n > 1).count();
    eprintln!("killed after {printed_by_first} events; {} handled by both consumers: {twice:?}", twice.len());
    assert_eq!(repeated_by_one, 0, "a live consumer handled an event twice");
    // At least once: only what the killed consumer held (its prefetch, 100) comes again.
    assert!(twice.len() <= 100, "{} events handled twice, more than one prefetch", twice.len());
}

/// Every process of the embedded bus is killed while events are published: the publisher
/// mid-write and the consumer mid-batch. After a restart, every event the publisher had
/// confirmed is delivered. (RabbitMQ's counterpart restarts the broker: the kit's
/// `serial::amqp_every_confirmed_event_is_delivered_after_the_broker_restarts`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_confirmed_event_is_delivered_after_every_process_is_killed() {
    let bus = Bus::embedded();
    let mut consumer = Consumer::start(&bus);
    consumer.wait_consuming().await;

    let mut publisher = Publisher::start(&bus, 0..EVENTS);
    eventually("events are confirmed and consumed", Duration::from_secs(120), || async {
        (publisher.confirmed() >= 2_000 && consumer.printed() >= 500).then_some(())
    })
    .await;
    publisher.child.kill().expect("SIGKILL the publisher");
    consumer.kill();
    let _ = publisher.child.wait();
    let confirmed: Vec<String> = publisher.confirmed.lock().unwrap().clone();
    assert!(confirmed.len() < EVENTS as usize, "the publisher finished before it was killed: the test proves nothing");

    // Everything comes back: a new consumer, and a publisher that carries on.
    let restarted = Consumer::start(&bus);
    let more = Publisher::start(&bus, EVENTS..EVENTS + 100);
    eventually("the restarted publisher is confirmed", Duration::from_secs(60), || async {
        (more.confirmed() == 100).then_some(())
    })
    .await;
    let promised: Vec<String> = confirmed.iter().chain(more.confirmed.lock().unwrap().iter()).cloned().collect();
    eventually("every confirmed event is delivered", Duration::from_secs(120), || async {
        let (before, after) = (consumer.by_event.lock().unwrap(), restarted.by_event.lock().unwrap());
        promised.iter().all(|id| before.contains(id) || after.contains(id)).then_some(())
    })
    .await;
    eprintln!(
        "killed after {} confirmed events, {} consumed; {} promised in all",
        confirmed.len(),
        consumer.printed(),
        promised.len()
    );
}
