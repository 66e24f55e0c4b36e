//! Publish/subscribe between services: `publish(topic, key, payload)` and two kinds of
//! subscription.
//!
//! * **Durable** ([`EventBus::subscribe`]): a named subscription with a topic pattern.
//!   Every durable subscription gets every matching event published after it was first
//!   made; the consumers of one subscription (in any number of processes) share its events,
//!   so it scales by starting more processes. Delivery is **at least once**: a handler
//!   that fails is retried with backoff, and after [`Durable::max_attempts`] the event goes
//!   to the subscription's dead letters with its last error. A consumer that dies holding
//!   events loses them to another consumer when their lease runs out. Handlers should be
//!   idempotent; [`Delivery::event_id`] names an event across redeliveries.
//! * **Ephemeral** ([`EventBus::listen`]): per process, from "now" on, gone with the
//!   process. Every process listening gets every matching event: live fan-out to SSE
//!   clients connected to any replica. A listener that falls too far behind misses events
//!   (it is told how many).
//!
//! Topics are declared by the contract crate (`crates/contracts`), which the bus is given at
//! connect: publishing an undeclared topic, or subscribing with a pattern that matches none,
//! is refused. Patterns use RabbitMQ's syntax ([`pattern`]).
//!
//! # Backends
//! Chosen by `EVENTS_URL`:
//! * unset or `sqlite://…`: **embedded**, one SQLite file (`$DATA_DIR/events.db` by
//!   default) shared by the processes of one machine ([`embedded`]);
//! * `amqp://…`: **RabbitMQ**.
//!
//! # Order
//! Events of one subscription are handed out in publish order. With one consumer and no
//! retries they are handled in that order; a retried event is handled after the events
//! behind it, and competing consumers handle events concurrently, so nothing is promised
//! per key beyond "published before, handed out before".

pub mod outbox;
pub mod pattern;

mod amqp;
mod embedded;
mod wake;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::backoff::Backoff;
use crate::config::{ConfigError, Env, Source};
use crate::shutdown::Shutdown;

/// The largest event accepted, as its JSON envelope: larger events are refused at
/// publish. Events name things; bulky data belongs in a store the event points to.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

/// A topic's payload, as declared in the contract crate.
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The topic: dot-separated words, `project.proposed`. A breaking change to the
    /// payload is a new topic (`project.proposed.v2`); additive changes keep it.
    const TOPIC: &'static str;
    /// The payload's version within its topic, raised by additive changes.
    const VERSION: u32;
}

/// An event as it travels and is stored: the payload and what identifies it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique per event; the same across redeliveries (for idempotent handlers).
    pub event_id: uuid::Uuid,
    /// The topic it was published to.
    pub topic: String,
    /// The payload's version ([`Event::VERSION`]).
    pub version: u32,
    /// What the event is about (a project id, an order id).
    pub key: String,
    /// When the publisher said it happened.
    pub occurred_at: DateTime<Utc>,
    /// The W3C trace context of the publishing request, so a trace continues across the bus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The payload.
    pub payload: serde_json::Value,
}

impl Envelope {
    /// An envelope for `event` about `key`, happening now, in the current request's trace.
    pub fn new<E: Event>(key: &str, event: &E) -> Result<Self, EventsError> {
        let payload = serde_json::to_value(event).map_err(|e| EventsError::Encode(e.to_string()))?;
        Ok(Self {
            event_id: uuid::Uuid::now_v7(),
            topic: E::TOPIC.to_string(),
            version: E::VERSION,
            key: key.to_string(),
            occurred_at: Utc::now(),
            traceparent: crate::context::RequestContext::current()
                .and_then(|c| c.traceparent().to_str().ok().map(str::to_string)),
            payload,
        })
    }

    /// An envelope for a payload that is already JSON (`agora events publish`): topic and
    /// version as the contract declares them, happening now.
    pub fn from_json(topic: &str, version: u32, key: &str, payload: serde_json::Value) -> Self {
        Self {
            event_id: uuid::Uuid::now_v7(),
            topic: topic.to_string(),
            version,
            key: key.to_string(),
            occurred_at: Utc::now(),
            traceparent: None,
            payload,
        }
    }

    /// The payload as `E`; an envelope of another topic, or a payload that does not parse
    /// as `E`, is an error naming why.
    pub fn decode<E: Event>(&self) -> Result<E, HandlerError> {
        if self.topic != E::TOPIC {
            return Err(HandlerError::Reject(format!("expected topic {}, got {}", E::TOPIC, self.topic)));
        }
        E::deserialize(&self.payload)
            .map_err(|e| HandlerError::Reject(format!("payload of {} does not parse: {e}", self.topic)))
    }

    fn to_bytes(&self) -> Result<Vec<u8>, EventsError> {
        let bytes = serde_json::to_vec(self).map_err(|e| EventsError::Encode(e.to_string()))?;
        if bytes.len() > MAX_EVENT_BYTES {
            return Err(EventsError::TooLarge { topic: self.topic.clone(), size: bytes.len() });
        }
        Ok(bytes)
    }
}

/// One event handed to a durable subscription's handler.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The event.
    pub envelope: Envelope,
    /// Which attempt this is, from 1.
    pub attempt: u32,
}

impl Delivery {
    /// The event's id, the same on every attempt.
    pub fn event_id(&self) -> uuid::Uuid {
        self.envelope.event_id
    }

    /// The payload as `E` (see [`Envelope::decode`]).
    pub fn decode<E: Event>(&self) -> Result<E, HandlerError> {
        self.envelope.decode()
    }
}

/// Why a handler did not handle an event.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HandlerError {
    /// Worth another try (a peer was down): retried with backoff, then dead-lettered.
    #[error("{0}")]
    Retry(String),
    /// Will never succeed (the payload is not what the handler understands): dead-lettered
    /// at once with this reason.
    #[error("{0}")]
    Reject(String),
}

/// What went wrong talking to the bus.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// The backend cannot be reached or refused the operation.
    #[error("events backend {url} unavailable: {reason}")]
    Unavailable {
        /// The backend's URL, password redacted.
        url: String,
        /// What failed.
        reason: String,
    },
    /// `EVENTS_URL` names no backend this build knows.
    #[error("EVENTS_URL must start with sqlite:// or amqp://, got {0}")]
    UnknownScheme(String),
    /// The topic is not declared by the contract crate.
    #[error("topic {topic} is not declared; declared topics: {declared}")]
    UndeclaredTopic {
        /// The topic asked for.
        topic: String,
        /// Every declared topic, comma-separated.
        declared: String,
    },
    /// The pattern matches no declared topic, or is malformed.
    #[error("pattern {pattern} matches no declared topic; declared topics: {declared}")]
    UnmatchedPattern {
        /// The pattern asked for.
        pattern: String,
        /// Every declared topic, comma-separated.
        declared: String,
    },
    /// A durable subscription exists with another pattern.
    #[error("subscription {name} exists with pattern {existing}, not {asked}")]
    PatternChanged {
        /// The subscription.
        name: String,
        /// Its pattern in the backend.
        existing: String,
        /// The pattern asked for now.
        asked: String,
    },
    /// The subscription name is not usable (empty, too long, odd characters).
    #[error("subscription name {0:?} must be 1-100 ASCII letters, digits, '-', '_' or '.'")]
    BadSubscriptionName(String),
    /// The event's envelope exceeds [`MAX_EVENT_BYTES`].
    #[error("event on {topic} is {size} bytes; the limit is {MAX_EVENT_BYTES}")]
    TooLarge {
        /// The topic.
        topic: String,
        /// The envelope's size.
        size: usize,
    },
    /// The payload could not be serialized.
    #[error("cannot encode event: {0}")]
    Encode(String),
    /// No durable subscription has that name.
    #[error("no subscription {0}")]
    NoSuchSubscription(String),
    /// No dead letter with that id in that subscription.
    #[error("no dead letter {event_id} in subscription {subscription}")]
    NoSuchDeadLetter {
        /// The subscription.
        subscription: String,
        /// The event.
        event_id: uuid::Uuid,
    },
}

/// Where the bus lives, from `EVENTS_URL` (its password redacted in `Debug`).
#[derive(Debug, Clone)]
pub struct EventsConfig {
    url: crate::db::SecretUrl,
    namespace: String,
}

impl EventsConfig {
    /// `EVENTS_URL`, or the embedded backend's file in `DATA_DIR`; `EVENTS_NAMESPACE`
    /// (default `agora`) names the RabbitMQ exchanges and queues ([`Self::with_namespace`]).
    pub fn from_env<S: Source>(env: &Env<S>) -> Result<Self, ConfigError> {
        let config = match env.string("EVENTS_URL") {
            Some(url) if url.starts_with("sqlite:") || url.starts_with("amqp:") || url.starts_with("amqps:") => {
                Self::new(url)
            }
            Some(url) => {
                return Err(ConfigError::Invalid {
                    name: "EVENTS_URL".into(),
                    value: crate::config::redact_url(&url),
                    reason: "must start with sqlite:// or amqp://".into(),
                })
            }
            None => Self::embedded_in(&crate::config::data_dir(env)),
        };
        match env.string("EVENTS_NAMESPACE") {
            None => Ok(config),
            Some(namespace) if check_name(&namespace).is_ok() => Ok(config.with_namespace(&namespace)),
            Some(namespace) => Err(ConfigError::Invalid {
                name: "EVENTS_NAMESPACE".into(),
                value: namespace,
                reason: "must be 1-100 ASCII letters, digits, '-', '_' or '.'".into(),
            }),
        }
    }

    /// The embedded backend in `data_dir/events.db`.
    pub fn embedded_in(data_dir: &Path) -> Self {
        Self::new(format!("sqlite://{}", data_dir.join("events.db").display()))
    }

    /// A backend at `url` (`sqlite://…` or `amqp://…`).
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: crate::db::SecretUrl::new(url), namespace: "agora".into() }
    }

    /// The same backend with its RabbitMQ exchanges and queues named `<namespace>.events…`
    /// instead of `agora.events…`, so that several systems (or tests) share a broker
    /// without hearing each other. The embedded backend is one file per system already.
    pub fn with_namespace(mut self, namespace: &str) -> Self {
        self.namespace = namespace.to_string();
        self
    }
}

/// How a durable subscription consumes.
#[derive(Debug, Clone)]
pub struct Durable {
    /// The subscription's name, shared by its consumers (`search.index-projects`).
    pub name: String,
    /// The topics it receives (`project.*`).
    pub pattern: String,
    /// Attempts before an event is dead-lettered.
    pub max_attempts: u32,
    /// Delay between attempts.
    pub backoff: Backoff,
    /// Events a consumer holds at once.
    pub prefetch: u16,
    /// How long a consumer may hold an event before it is given to another (embedded).
    pub lease: Duration,
    /// How often a consumer looks for work without being woken.
    pub poll: Duration,
}

impl Durable {
    /// A subscription `name` to `pattern` with the defaults: 5 attempts, backoff from
    /// 100 ms to 10 s, prefetch 100, a 30 s lease, a 1 s poll.
    pub fn new(name: &str, pattern: &str) -> Self {
        Self {
            name: name.to_string(),
            pattern: pattern.to_string(),
            max_attempts: 5,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(10)),
            prefetch: 100,
            lease: Duration::from_secs(30),
            poll: Duration::from_secs(1),
        }
    }
}

/// An event in a subscription's dead letters.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// The subscription it failed in.
    pub subscription: String,
    /// The event.
    pub envelope: Envelope,
    /// Attempts made.
    pub attempts: u32,
    /// The last attempt's error.
    pub last_error: String,
    /// When it was dead-lettered.
    pub dead_at: DateTime<Utc>,
}

/// How often a consuming process samples the lag of its durable subscriptions.
const LAG_SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// The event bus. Clones share connections.
#[derive(Clone)]
pub struct EventBus {
    backend: Backend,
    declared: Arc<[&'static str]>,
    /// The durable subscriptions this process consumes, with their lag at the last sample.
    consumed: Arc<std::sync::Mutex<std::collections::BTreeMap<String, Option<u64>>>>,
}

/// A durable subscription this process consumes, as `/readyz` and `/status` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscriptionLag {
    /// The subscription.
    pub subscription: String,
    /// Events waiting in it at the last sample (every 5 s); `None` until the first sample,
    /// or while the backend cannot say.
    pub lag: Option<u64>,
}

#[derive(Clone)]
enum Backend {
    Embedded(embedded::EmbeddedBus),
    Amqp(amqp::AmqpBus),
}

/// Runs `$body` with `$bus` bound to whichever backend `$self` uses.
macro_rules! on_backend {
    ($self:expr, $bus:ident => $body:expr) => {
        match &$self.backend {
            Backend::Embedded($bus) => $body,
            Backend::Amqp($bus) => $body,
        }
    };
}

impl EventBus {
    /// Connects to the backend `config` names; `declared` lists every topic of the
    /// contract crate (`contracts::TOPICS`).
    pub async fn connect(config: &EventsConfig, declared: &[&'static str]) -> Result<Self, EventsError> {
        let url = config.url.expose();
        let backend = if url.starts_with("sqlite:") {
            Backend::Embedded(embedded::EmbeddedBus::connect(url).await?)
        } else if url.starts_with("amqp:") || url.starts_with("amqps:") {
            Backend::Amqp(amqp::AmqpBus::connect(url, &config.namespace).await?)
        } else {
            return Err(EventsError::UnknownScheme(crate::config::redact_url(url)));
        };
        Ok(Self { backend, declared: declared.into(), consumed: Arc::default() })
    }

    /// Publishes `event` about `key`; returns once the backend has it durably.
    pub async fn publish<E: Event>(&self, key: &str, event: &E) -> Result<uuid::Uuid, EventsError> {
        let envelope = Envelope::new(key, event)?;
        self.publish_envelope(&envelope).await?;
        Ok(envelope.event_id)
    }

    /// Publishes a ready envelope (the outbox relay's path): an envelope whose id was
    /// published before is not published again where the backend can tell.
    pub async fn publish_envelope(&self, envelope: &Envelope) -> Result<(), EventsError> {
        self.check_topic(&envelope.topic)?;
        let bytes = envelope.to_bytes()?;
        on_backend!(self, bus => bus.publish(envelope, &bytes).await?);
        metrics::counter!("events_published_total", "topic" => envelope.topic.clone()).increment(1);
        Ok(())
    }

    /// Starts consuming `durable` with `handler` until `shutdown`: the subscription is made
    /// (or joined) before this returns, so events published afterwards reach it.
    pub async fn subscribe<H, F>(
        &self,
        durable: Durable,
        handler: H,
        shutdown: Shutdown,
    ) -> Result<tokio::task::JoinHandle<()>, EventsError>
    where
        H: Fn(Delivery) -> F + Send + Sync + 'static,
        F: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        check_name(&durable.name)?;
        self.check_pattern(&durable.pattern)?;
        let sampling = self.clone().sample_lag(durable.name.clone(), shutdown.clone());
        on_backend!(self, bus => {
            bus.ensure_subscription(&durable).await?;
            let consuming = bus.clone().consume(durable, handler, shutdown);
            Ok(tokio::spawn(async move {
                tokio::join!(consuming, sampling);
            }))
        })
    }

    /// The durable subscriptions this process consumes and their lag at the last sample.
    pub fn consumed(&self) -> Vec<SubscriptionLag> {
        let consumed = self.consumed.lock().unwrap_or_else(|p| p.into_inner());
        consumed.iter().map(|(name, lag)| SubscriptionLag { subscription: name.clone(), lag: *lag }).collect()
    }

    /// Samples `subscription`'s lag into the `events_subscription_lag` gauge and
    /// [`Self::consumed`] until `shutdown`.
    async fn sample_lag(self, subscription: String, shutdown: Shutdown) {
        let gauge = metrics::gauge!("events_subscription_lag", "subscription" => subscription.clone());
        loop {
            let lag = self.lag(&subscription).await.ok();
            if let Some(lag) = lag {
                gauge.set(lag as f64);
            }
            self.consumed.lock().unwrap_or_else(|p| p.into_inner()).insert(subscription.clone(), lag);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(LAG_SAMPLE_EVERY) => {}
            }
        }
        self.consumed.lock().unwrap_or_else(|p| p.into_inner()).remove(&subscription);
    }

    /// Every event matching `pattern` published from now on, in this process only.
    pub async fn listen(&self, pattern: &str) -> Result<Listener, EventsError> {
        self.check_pattern(pattern)?;
        let receiver = on_backend!(self, bus => bus.tail().await?);
        Ok(Listener { pattern: pattern.to_string(), receiver })
    }

    /// Events waiting in `subscription` (published, not yet acknowledged or dead).
    pub async fn lag(&self, subscription: &str) -> Result<u64, EventsError> {
        on_backend!(self, bus => bus.lag(subscription).await)
    }

    /// The dead letters of `subscription`, or of every subscription, oldest first.
    pub async fn dead_letters(&self, subscription: Option<&str>) -> Result<Vec<DeadLetter>, EventsError> {
        on_backend!(self, bus => bus.dead_letters(subscription).await)
    }

    /// Hands a dead letter back to its subscription as a fresh event (attempts from 1).
    pub async fn replay(&self, subscription: &str, event_id: uuid::Uuid) -> Result<(), EventsError> {
        on_backend!(self, bus => bus.replay(subscription, event_id).await)
    }

    /// Deletes the dead letters of `subscription` (or of all); returns how many.
    pub async fn purge(&self, subscription: Option<&str>) -> Result<u64, EventsError> {
        on_backend!(self, bus => bus.purge(subscription).await)
    }

    fn declared_list(&self) -> String {
        self.declared.join(", ")
    }

    fn check_topic(&self, topic: &str) -> Result<(), EventsError> {
        if self.declared.contains(&topic) {
            return Ok(());
        }
        Err(EventsError::UndeclaredTopic { topic: topic.to_string(), declared: self.declared_list() })
    }

    fn check_pattern(&self, pattern: &str) -> Result<(), EventsError> {
        if pattern::is_valid_pattern(pattern) && self.declared.iter().any(|t| pattern::matches(pattern, t)) {
            return Ok(());
        }
        Err(EventsError::UnmatchedPattern { pattern: pattern.to_string(), declared: self.declared_list() })
    }
}

/// Runs `handler` on `delivery` in the consumer's own task: a panic is one failed attempt
/// (retried), not a dead consumer. (A task spawned per event did the same at twice the cost.)
async fn run_handler<H, F>(handler: &H, delivery: Delivery) -> Result<(), HandlerError>
where
    H: Fn(Delivery) -> F,
    F: Future<Output = Result<(), HandlerError>>,
{
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(async { handler(delivery).await }).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(HandlerError::Retry(format!("handler panicked: {why}")))
        }
    }
}

fn check_name(name: &str) -> Result<(), EventsError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(EventsError::BadSubscriptionName(name.to_string()))
    }
}

/// A backend's feed of every new event to this process's listeners: the sender they
/// subscribe to and the task that fills it, stopped with the bus.
struct Tail {
    sender: tokio::sync::broadcast::Sender<Arc<Envelope>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Tail {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An ephemeral subscription: the events matching its pattern, as they are published.
pub struct Listener {
    pattern: String,
    receiver: tokio::sync::broadcast::Receiver<Arc<Envelope>>,
}

/// What a listener got.
#[derive(Debug, Clone)]
pub enum Heard {
    /// The next matching event.
    Event(Arc<Envelope>),
    /// The listener fell behind and this many events (of any topic) went by unseen.
    Missed(u64),
}

impl Listener {
    /// The next event or the news of missed ones; `None` once the bus is gone.
    pub async fn next(&mut self) -> Option<Heard> {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match self.receiver.recv().await {
                Ok(envelope) if pattern::matches(&self.pattern, &envelope.topic) => {
                    return Some(Heard::Event(envelope))
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => return Some(Heard::Missed(n)),
                Err(RecvError::Closed) => return None,
            }
        }
    }
}
