//! The event bus benchmark behind `bench/events.sh`: one mode per run, one JSON line out.
//!
//! ```text
//! events_bench kit-embedded [--events N] [--live N]
//! events_bench kit-amqp     --url amqp://… [--events N] [--live N]
//! events_bench lapin        --url amqp://… [--events N] [--live N]
//! ```
//!
//! Fixed settings, the same in every mode (and in `bench/events_pika.py`): 1 KiB payloads,
//! one publisher waiting for each publish to be acknowledged (a commit, or a publisher
//! confirm), a quorum queue, prefetch 100, manual acks, a handler that does nothing.
//! Three phases: publish a backlog of `--events` (events/s published), drain it with one
//! consumer (events/s consumed), then publish `--live` events one by one with the consumer
//! running and measure publish → handler latency (p50, p99).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kit::events::{Delivery, Durable, Event, EventBus, EventsConfig};
use kit::Shutdown;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde::{Deserialize, Serialize};

const TOPICS: &[&str] = &["bench.event"];
const PAYLOAD_BYTES: usize = 1024;
const PREFETCH: u16 = 100;

#[derive(Serialize, Deserialize)]
struct BenchEvent {
    /// When it was published, in microseconds since the Unix epoch.
    sent_us: i64,
    filler: String,
}

impl Event for BenchEvent {
    const TOPIC: &'static str = "bench.event";
    const VERSION: u32 = 1;
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

fn event() -> BenchEvent {
    BenchEvent { sent_us: now_us(), filler: "x".repeat(PAYLOAD_BYTES) }
}

/// Latencies seen by the handler, and how many events it has handled.
#[derive(Default)]
struct Seen {
    handled: u64,
    latencies_us: Vec<i64>,
}

struct Args {
    mode: String,
    url: Option<String>,
    events: u64,
    live: u64,
}

fn args() -> Result<Args, String> {
    let mut raw = std::env::args().skip(1);
    let mode =
        raw.next().ok_or("usage: events_bench <kit-embedded|kit-amqp|lapin> [--url U] [--events N] [--live N]")?;
    let mut args = Args { mode, url: None, events: 100_000, live: 2_000 };
    while let Some(flag) = raw.next() {
        let value = raw.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--url" => args.url = Some(value),
            "--events" => args.events = value.parse().map_err(|e| format!("--events: {e}"))?,
            "--live" => args.live = value.parse().map_err(|e| format!("--live: {e}"))?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = args()?;
    let result = match args.mode.as_str() {
        "kit-embedded" => {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            run_kit(EventsConfig::embedded_in(dir.path()), &args).await?
        }
        "kit-amqp" => {
            let url = args.url.clone().ok_or("--url is required")?;
            let namespace = format!("agora-bench-{}", uuid::Uuid::new_v4().simple());
            let result = run_kit(EventsConfig::new(url.clone()).with_namespace(&namespace), &args).await;
            delete_namespace(&url, &namespace).await;
            result?
        }
        "lapin" => run_lapin(&args).await?,
        other => return Err(format!("unknown mode {other}")),
    };
    println!("{result}");
    Ok(())
}

fn report(mode: &str, events: u64, published: Duration, drained: Duration, seen: &Seen) -> serde_json::Value {
    let mut latencies = seen.latencies_us.clone();
    latencies.sort_unstable();
    let at = |q: f64| latencies.get(((latencies.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0);
    serde_json::json!({
        "mode": mode,
        "events": events,
        "payload_bytes": PAYLOAD_BYTES,
        "prefetch": PREFETCH,
        "publish_per_s": (events as f64 / published.as_secs_f64()).round(),
        "consume_per_s": (events as f64 / drained.as_secs_f64()).round(),
        "latency_p50_ms": at(0.50) as f64 / 1000.0,
        "latency_p99_ms": at(0.99) as f64 / 1000.0,
        "latency_samples": latencies.len(),
    })
}

async fn wait_until(seen: &Mutex<Seen>, handled: u64) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while seen.lock().map_err(|e| e.to_string())?.handled < handled {
        if Instant::now() > deadline {
            return Err("the consumer stalled".into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

async fn run_kit(config: EventsConfig, args: &Args) -> Result<serde_json::Value, String> {
    let bus = EventBus::connect(&config, TOPICS).await.map_err(|e| e.to_string())?;
    let durable = Durable { prefetch: PREFETCH, max_attempts: 5, ..Durable::new("bench", "bench.event") };
    // Made and stopped, so that the backlog waits for it.
    let made = Shutdown::new();
    bus.subscribe(durable.clone(), |_d: Delivery| async { Ok(()) }, made.clone()).await.map_err(|e| e.to_string())?;
    made.cancel();

    let start = Instant::now();
    for n in 0..args.events {
        bus.publish(&n.to_string(), &event()).await.map_err(|e| e.to_string())?;
    }
    let published = start.elapsed();

    let seen = Arc::new(Mutex::new(Seen::default()));
    let measure_latency = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (counter, measuring) = (seen.clone(), measure_latency.clone());
    let shutdown = Shutdown::new();
    let start = Instant::now();
    bus.subscribe(
        durable,
        move |delivery: Delivery| {
            let (counter, measuring) = (counter.clone(), measuring.clone());
            async move {
                let sent = delivery.envelope.payload["sent_us"].as_i64().unwrap_or(0);
                let mut seen = counter.lock().map_err(|e| kit::events::HandlerError::Retry(e.to_string()))?;
                seen.handled += 1;
                if measuring.load(std::sync::atomic::Ordering::Relaxed) {
                    seen.latencies_us.push(now_us() - sent);
                }
                Ok(())
            }
        },
        shutdown.clone(),
    )
    .await
    .map_err(|e| e.to_string())?;
    wait_until(&seen, args.events).await?;
    let drained = start.elapsed();

    measure_latency.store(true, std::sync::atomic::Ordering::Relaxed);
    for n in 0..args.live {
        bus.publish(&n.to_string(), &event()).await.map_err(|e| e.to_string())?;
        wait_until(&seen, args.events + n + 1).await?;
    }
    shutdown.cancel();
    let seen = seen.lock().map_err(|e| e.to_string())?;
    Ok(report(&args.mode, args.events, published, drained, &seen))
}

/// The same exchange of messages with lapin alone: a quorum queue, confirms, manual acks.
async fn run_lapin(args: &Args) -> Result<serde_json::Value, String> {
    let url = args.url.clone().ok_or("--url is required")?;
    let queue = format!("agora-bench-lapin-{}", uuid::Uuid::new_v4().simple());
    let connection = Connection::connect(&url, ConnectionProperties::default()).await.map_err(|e| e.to_string())?;
    let publisher = connection.create_channel().await.map_err(|e| e.to_string())?;
    publisher.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| e.to_string())?;
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    publisher
        .queue_declare(queue.as_str().into(), QueueDeclareOptions { durable: true, ..Default::default() }, arguments)
        .await
        .map_err(|e| e.to_string())?;
    let properties = BasicProperties::default().with_delivery_mode(2).with_content_type("application/json".into());
    let publish = |body: Vec<u8>| {
        let (publisher, queue, properties) = (publisher.clone(), queue.clone(), properties.clone());
        async move {
            let confirm = publisher
                .basic_publish("".into(), queue.as_str().into(), BasicPublishOptions::default(), &body, properties)
                .await
                .map_err(|e| e.to_string())?;
            let confirmation = confirm.await.map_err(|e| e.to_string())?;
            if confirmation.is_ack() {
                Ok(())
            } else {
                Err("not confirmed".to_string())
            }
        }
    };

    let start = Instant::now();
    for _ in 0..args.events {
        publish(serde_json::to_vec(&event()).map_err(|e| e.to_string())?).await?;
    }
    let published = start.elapsed();

    let seen = Arc::new(Mutex::new(Seen::default()));
    let measure_latency = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let consumer_channel = connection.create_channel().await.map_err(|e| e.to_string())?;
    consumer_channel.basic_qos(PREFETCH, BasicQosOptions::default()).await.map_err(|e| e.to_string())?;
    let mut consumer = consumer_channel
        .basic_consume(queue.as_str().into(), "bench".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .map_err(|e| e.to_string())?;
    let (counter, measuring) = (seen.clone(), measure_latency.clone());
    let start = Instant::now();
    let consuming = tokio::spawn(async move {
        while let Some(Ok(message)) = consumer.next().await {
            let sent = serde_json::from_slice::<serde_json::Value>(&message.data)
                .ok()
                .and_then(|v| v["sent_us"].as_i64())
                .unwrap_or(0);
            if message.acker.ack(BasicAckOptions::default()).await.is_err() {
                break;
            }
            let Ok(mut seen) = counter.lock() else { break };
            seen.handled += 1;
            if measuring.load(std::sync::atomic::Ordering::Relaxed) {
                seen.latencies_us.push(now_us() - sent);
            }
        }
    });
    wait_until(&seen, args.events).await?;
    let drained = start.elapsed();

    measure_latency.store(true, std::sync::atomic::Ordering::Relaxed);
    for n in 0..args.live {
        publish(serde_json::to_vec(&event()).map_err(|e| e.to_string())?).await?;
        wait_until(&seen, args.events + n + 1).await?;
    }
    consuming.abort();
    let _ = publisher.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
    let seen = seen.lock().map_err(|e| e.to_string())?;
    Ok(report(&args.mode, args.events, published, drained, &seen))
}

/// Deletes what a kit-amqp run made on the broker.
async fn delete_namespace(url: &str, namespace: &str) {
    let Ok(connection) = Connection::connect(url, ConnectionProperties::default()).await else { return };
    let Ok(channel) = connection.create_channel().await else { return };
    for queue in [format!("{namespace}.events.bench"), format!("{namespace}.events.bench.dead")] {
        let _ = channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
    }
    for exchange in [format!("{namespace}.events"), format!("{namespace}.events.dead")] {
        let _ = channel.exchange_delete(exchange.as_str().into(), Default::default()).await;
    }
}
