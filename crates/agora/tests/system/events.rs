//! The event bus across processes: consumers are `agora events tail` children, killed with
//! SIGKILL as a crash would, while this test publishes.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use contracts::projects::ProjectChanged;
use kit::events::{EventBus, EventsConfig};
use kit::test_support::eventually;

/// Events published in the kill test.
const EVENTS: i64 = 10_000;

/// A consumer process of subscription `name` whose printed events are counted per project id.
struct Consumer {
    child: Child,
    seen: Arc<Mutex<HashMap<i64, u32>>>,
}

impl Consumer {
    fn start(data_dir: &std::path::Path, name: &str, seen: Arc<Mutex<HashMap<i64, u32>>>) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_agora"))
            .args(["events", "tail", "--subscription", name, "--pattern", "project.*", "--lease-secs", "2"])
            .env("DATA_DIR", data_dir)
            .env_remove("EVENTS_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start agora events tail");
        let stdout = child.stdout.take().expect("stdout");
        let counts = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
                if let Some(id) = event["payload"]["project_id"].as_i64() {
                    *counts.lock().unwrap().entry(id).or_default() += 1;
                }
            }
        });
        Self { child, seen }
    }

    fn printed(&self) -> usize {
        self.seen.lock().unwrap().values().map(|n| *n as usize).sum()
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_killed_mid_stream_loses_no_event_and_repeats_only_what_it_held() {
    let data = tempfile::tempdir().expect("temp dir");
    let bus = EventBus::connect(&EventsConfig::embedded_in(data.path()), contracts::TOPICS).await.expect("bus");
    let first_seen = Arc::new(Mutex::new(HashMap::new()));
    let mut first = Consumer::start(data.path(), "indexer", first_seen.clone());
    eventually("the first consumer made its subscription", Duration::from_secs(30), || async {
        bus.lag("indexer").await.is_ok().then_some(())
    })
    .await;

    let publisher = {
        let bus = bus.clone();
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
    first.child.kill().expect("SIGKILL");
    let _ = first.child.wait();
    let printed_by_first = first.printed();

    let second_seen = Arc::new(Mutex::new(HashMap::new()));
    let second = Consumer::start(data.path(), "indexer", second_seen.clone());
    publisher.await.expect("publisher");
    eventually("every event was handled by one consumer or the other", Duration::from_secs(120), || async {
        let (a, b) = (first_seen.lock().unwrap(), second_seen.lock().unwrap());
        (0..EVENTS).all(|id| a.contains_key(&id) || b.contains_key(&id)).then_some(())
    })
    .await;
    eventually("the subscription is drained", Duration::from_secs(30), || async {
        (bus.lag("indexer").await.ok() == Some(0)).then_some(())
    })
    .await;

    let (a, b) = (first_seen.lock().unwrap(), second_seen.lock().unwrap());
    let twice: Vec<i64> = (0..EVENTS).filter(|id| a.contains_key(id) && b.contains_key(id)).collect();
    let repeated_by_one = a.values().chain(b.values()).filter(|n| **n > 1).count();
    eprintln!("killed after {printed_by_first} events; {} handled by both consumers: {twice:?}", twice.len());
    assert_eq!(repeated_by_one, 0, "a live consumer handled an event twice");
    // At least once: only what the killed consumer held (its batch, at most the prefetch) comes again.
    assert!(twice.len() <= 100, "{} events handled twice, more than one batch", twice.len());
    drop(second);
}
