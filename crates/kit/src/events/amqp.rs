//! The RabbitMQ backend (`EVENTS_URL=amqp://…`), through `lapin`.
//!
//! * Events go to one durable topic exchange, `agora.events`, with the topic as routing key,
//!   as persistent messages; a publish returns once the broker has confirmed it (publisher
//!   confirms).
//! * A durable subscription is a quorum queue, `agora.events.<name>`, bound with its pattern.
//!   Its arguments make dead-lettering lossless: `x-delivery-limit` (the broker dead-letters a
//!   message whose consumers keep dying), `x-dead-letter-strategy: at-least-once` and
//!   `x-overflow: reject-publish` (which that strategy needs: a full queue refuses new
//!   events, and the publisher hears it, rather than dropping old ones).
//! * Consumers ack manually with a bounded prefetch ([`Durable::prefetch`]). A retried event
//!   is negatively acknowledged and requeued after its backoff; the consumer goes on with
//!   the others meanwhile. The attempt number is the broker's `x-delivery-count` plus one.
//! * Dead letters are republished by the consumer (confirmed, then the original is acked)
//!   to the direct exchange `agora.events.dead`, routed to the quorum queue
//!   `agora.events.<name>.dead`, with the last error in the `x-last-error` header.
//! * A listener is one exclusive, auto-deleted queue per bus bound with `#`, consumed
//!   without acks: it exists as long as the process does.
//!
//! A lost connection is reopened on the next publish, and consumers reconnect with backoff.
//! What the embedded backend does that this one does not: refuse a subscription whose
//! pattern changed (a queue's bindings are additive in RabbitMQ; unbind the old pattern by
//! hand), and list the dead letters of every subscription at once (name one).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::{broadcast, Mutex, OnceCell};

use super::{DeadLetter, Delivery, Durable, Envelope, EventsError, HandlerError, Tail};
use crate::backoff::Backoff;
use crate::shutdown::Shutdown;

/// Events a listener may fall behind before it is told it missed some.
const LISTENER_BUFFER: usize = 4096;
/// Persistent delivery mode.
const PERSISTENT: u8 = 2;

/// The RabbitMQ bus. Clones share the connection.
#[derive(Clone)]
pub(super) struct AmqpBus {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    names: Names,
    shown_url: String,
    link: Mutex<Option<Link>>,
    tail: OnceCell<Tail>,
}

/// The exchanges' and queues' names, under a namespace (`agora` unless configured).
struct Names {
    exchange: String,
    dead_exchange: String,
}

impl Names {
    fn new(namespace: &str) -> Self {
        Self { exchange: format!("{namespace}.events"), dead_exchange: format!("{namespace}.events.dead") }
    }

    fn queue(&self, subscription: &str) -> String {
        format!("{}.{subscription}", self.exchange)
    }

    fn dead_queue(&self, subscription: &str) -> String {
        format!("{}.{subscription}.dead", self.exchange)
    }
}

/// An open connection and its publishing channel (in confirm mode).
#[derive(Clone)]
struct Link {
    connection: Arc<Connection>,
    publisher: Channel,
}

impl AmqpBus {
    pub(super) async fn connect(url: &str, namespace: &str) -> Result<Self, EventsError> {
        let bus = Self {
            inner: Arc::new(Inner {
                url: url.to_string(),
                names: Names::new(namespace),
                shown_url: crate::config::redact_url(url),
                link: Mutex::new(None),
                tail: OnceCell::new(),
            }),
        };
        bus.link().await?;
        Ok(bus)
    }

    fn unavailable(&self, e: impl std::fmt::Display) -> EventsError {
        EventsError::Unavailable { url: self.inner.shown_url.clone(), reason: e.to_string() }
    }

    /// The open link, reopened (and the topology declared) if it was lost.
    async fn link(&self) -> Result<Link, EventsError> {
        let mut link = self.inner.link.lock().await;
        if let Some(open) =
            link.as_ref().filter(|l| l.connection.status().connected() && l.publisher.status().connected())
        {
            return Ok(open.clone());
        }
        let connection = Connection::connect(&self.inner.url, ConnectionProperties::default())
            .await
            .map_err(|e| self.unavailable(e))?;
        let publisher = connection.create_channel().await.map_err(|e| self.unavailable(e))?;
        publisher.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| self.unavailable(e))?;
        let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
        publisher
            .exchange_declare(
                self.inner.names.exchange.as_str().into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await
            .map_err(|e| self.unavailable(e))?;
        publisher
            .exchange_declare(
                self.inner.names.dead_exchange.as_str().into(),
                ExchangeKind::Direct,
                durable,
                FieldTable::default(),
            )
            .await
            .map_err(|e| self.unavailable(e))?;
        let open = Link { connection: Arc::new(connection), publisher };
        *link = Some(open.clone());
        Ok(open)
    }

    async fn channel(&self) -> Result<Channel, EventsError> {
        let link = self.link().await?;
        match link.connection.create_channel().await {
            Ok(channel) => Ok(channel),
            Err(e) => {
                self.forget_link().await;
                Err(self.unavailable(e))
            }
        }
    }

    /// Drops the connection after a failure, so the next call opens a new one rather than
    /// trusting a connection whose broker may have gone (it can look open until a heartbeat
    /// is missed).
    async fn forget_link(&self) {
        *self.inner.link.lock().await = None;
    }

    async fn confirmed(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), EventsError> {
        let link = self.link().await?;
        let sent = link
            .publisher
            .basic_publish(exchange.into(), routing_key.into(), BasicPublishOptions::default(), body, properties)
            .await;
        let confirmation = match sent {
            Ok(confirm) => confirm.await,
            Err(e) => Err(e),
        };
        match confirmation {
            Ok(Confirmation::Ack(_)) => Ok(()),
            Ok(Confirmation::Nack(_)) => {
                Err(self.unavailable("the broker refused the event (a subscription's queue is full)"))
            }
            Ok(Confirmation::NotRequested) => Err(self.unavailable("the channel is not in confirm mode")),
            Err(e) => {
                self.forget_link().await;
                Err(self.unavailable(e))
            }
        }
    }

    pub(super) async fn publish(&self, envelope: &Envelope, bytes: &[u8]) -> Result<(), EventsError> {
        let mut headers = FieldTable::default();
        headers.insert("key".into(), AMQPValue::LongString(LongString::from(envelope.key.as_str())));
        let properties = BasicProperties::default()
            .with_delivery_mode(PERSISTENT)
            .with_content_type("application/json".into())
            .with_message_id(envelope.event_id.to_string().into())
            .with_headers(headers);
        self.confirmed(&self.inner.names.exchange, &envelope.topic, bytes, properties).await
    }

    pub(super) async fn ensure_subscription(&self, durable: &Durable) -> Result<(), EventsError> {
        let channel = self.channel().await?;
        let queue = self.inner.names.queue(&durable.name);
        let dead_queue = self.inner.names.dead_queue(&durable.name);
        let mut arguments = quorum();
        arguments.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(i32::try_from(durable.max_attempts).unwrap_or(i32::MAX)),
        );
        arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(self.inner.names.dead_exchange.as_str().into()),
        );
        arguments.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(durable.name.as_str().into()));
        arguments.insert("x-dead-letter-strategy".into(), AMQPValue::LongString("at-least-once".into()));
        arguments.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
        let durable_queue = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        channel
            .queue_declare(dead_queue.as_str().into(), durable_queue, quorum())
            .await
            .map_err(|e| self.unavailable(e))?;
        channel
            .queue_bind(
                dead_queue.as_str().into(),
                self.inner.names.dead_exchange.as_str().into(),
                durable.name.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| self.unavailable(e))?;
        channel
            .queue_declare(queue.as_str().into(), durable_queue, arguments)
            .await
            .map_err(|e| self.unavailable(e))?;
        channel
            .queue_bind(
                queue.as_str().into(),
                self.inner.names.exchange.as_str().into(),
                durable.pattern.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| self.unavailable(e))?;
        let _ = channel.close(200, "declared".into()).await;
        Ok(())
    }

    /// Handles `durable`'s events with `handler` until `shutdown`, reconnecting after failures.
    pub(super) async fn consume<H, F>(self, durable: Durable, handler: H, shutdown: Shutdown)
    where
        H: Fn(Delivery) -> F + Send + Sync + 'static,
        F: std::future::Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let reconnect = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut failures = 0u32;
        while !shutdown.is_cancelled() {
            match self.consume_until_broken(&durable, &handler, &shutdown, &mut failures).await {
                Ok(()) => break,
                Err(e) => {
                    self.forget_link().await;
                    tracing::warn!(subscription = %durable.name, error = %e, "events: consumer lost its broker; reconnecting");
                    let pause = reconnect.delay(failures);
                    failures = failures.saturating_add(1);
                    tokio::select! { _ = tokio::time::sleep(pause) => {}, _ = shutdown.cancelled() => {} }
                }
            }
        }
    }

    async fn consume_until_broken<H, F>(
        &self,
        durable: &Durable,
        handler: &H,
        shutdown: &Shutdown,
        failures: &mut u32,
    ) -> Result<(), EventsError>
    where
        H: Fn(Delivery) -> F + Send + Sync + 'static,
        F: std::future::Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        self.ensure_subscription(durable).await?;
        let channel = self.channel().await?;
        channel
            .basic_qos(durable.prefetch.max(1), BasicQosOptions::default())
            .await
            .map_err(|e| self.unavailable(e))?;
        let tag = format!("{}-{}", durable.name, uuid::Uuid::new_v4().simple());
        let mut consumer = channel
            .basic_consume(
                self.inner.names.queue(&durable.name).as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| self.unavailable(e))?;
        *failures = 0;
        loop {
            let next = tokio::select! {
                next = consumer.next() => next,
                _ = shutdown.cancelled() => {
                    // Unacked events go back to the queue when the channel closes.
                    let _ = channel.close(200, "stopping".into()).await;
                    return Ok(());
                }
            };
            let message = match next {
                Some(Ok(message)) => message,
                Some(Err(e)) => return Err(self.unavailable(e)),
                None => return Err(self.unavailable("the broker cancelled the consumer")),
            };
            self.handle(durable, handler, message).await?;
        }
    }

    async fn handle<H, F>(
        &self,
        durable: &Durable,
        handler: &H,
        message: lapin::message::Delivery,
    ) -> Result<(), EventsError>
    where
        H: Fn(Delivery) -> F + Send + Sync + 'static,
        F: std::future::Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let headers = message.properties.headers().clone().unwrap_or_default();
        let redeliveries = headers.inner().get("x-delivery-count").and_then(as_u32).unwrap_or(0);
        let attempt = redeliveries.saturating_add(1);
        let parsed = serde_json::from_slice::<Envelope>(&message.data);
        // A message that is no envelope is labelled with its routing key (its topic, unless
        // it was replayed straight to the queue).
        let topic = match &parsed {
            Ok(envelope) => envelope.topic.clone(),
            Err(_) => message.routing_key.as_str().to_string(),
        };
        let outcome = match parsed {
            Err(e) => Err(HandlerError::Reject(format!("not an event envelope: {e}"))),
            Ok(envelope) => {
                metrics::counter!("events_delivered_total", "topic" => topic.clone(), "subscription" => durable.name.clone())
                    .increment(1);
                super::run_handler(handler, Delivery { envelope, attempt }).await
            }
        };
        match outcome {
            Ok(()) => {
                message.acker.ack(BasicAckOptions::default()).await.map_err(|e| self.unavailable(e))?;
                metrics::counter!("events_acked_total", "topic" => topic.clone(), "subscription" => durable.name.clone()).increment(1);
            }
            Err(HandlerError::Retry(reason)) if attempt < durable.max_attempts => {
                metrics::counter!("events_retried_total", "topic" => topic.clone(), "subscription" => durable.name.clone()).increment(1);
                tracing::debug!(subscription = %durable.name, attempt, %reason, "events: retrying later");
                // Requeued after the backoff; the consumer goes on with the next events meanwhile.
                let delay = durable.backoff.delay(attempt.saturating_sub(1));
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = message.acker.nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() }).await;
                });
            }
            Err(HandlerError::Retry(reason) | HandlerError::Reject(reason)) => {
                metrics::counter!("events_dead_lettered_total", "topic" => topic.clone(), "subscription" => durable.name.clone()).increment(1);
                tracing::warn!(subscription = %durable.name, attempt, %reason, "events: dead-lettered");
                let mut headers = FieldTable::default();
                headers.insert("x-last-error".into(), AMQPValue::LongString(reason.as_str().into()));
                headers.insert("x-attempts".into(), AMQPValue::LongUInt(attempt));
                headers.insert("x-dead-at".into(), AMQPValue::LongLongInt(Utc::now().timestamp_millis()));
                let properties = message.properties.clone().with_delivery_mode(PERSISTENT).with_headers(headers);
                match self.confirmed(&self.inner.names.dead_exchange, &durable.name, &message.data, properties).await {
                    Ok(()) => message.acker.ack(BasicAckOptions::default()).await.map_err(|e| self.unavailable(e))?,
                    Err(e) => {
                        let _ =
                            message.acker.nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() }).await;
                        return Err(e);
                    }
                };
            }
        }
        Ok(())
    }

    /// A receiver of every event published from now on.
    pub(super) async fn tail(&self) -> Result<broadcast::Receiver<Arc<Envelope>>, EventsError> {
        let tail = self
            .inner
            .tail
            .get_or_try_init(|| async {
                let (sender, _) = broadcast::channel(LISTENER_BUFFER);
                // The first queue is bound before `listen` returns, so nothing published after it is missed.
                let consumer = self.listen_queue().await?;
                let task = tokio::spawn(follow(self.clone(), consumer, sender.clone()));
                Ok::<_, EventsError>(Tail { sender, task })
            })
            .await?;
        Ok(tail.sender.subscribe())
    }

    async fn listen_queue(&self) -> Result<lapin::Consumer, EventsError> {
        let channel = self.channel().await?;
        let options = QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() };
        let queue =
            channel.queue_declare("".into(), options, FieldTable::default()).await.map_err(|e| self.unavailable(e))?;
        channel
            .queue_bind(
                queue.name().clone(),
                self.inner.names.exchange.as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| self.unavailable(e))?;
        channel
            .basic_consume(
                queue.name().clone(),
                "listener".into(),
                BasicConsumeOptions { no_ack: true, exclusive: true, ..BasicConsumeOptions::default() },
                FieldTable::default(),
            )
            .await
            .map_err(|e| self.unavailable(e))
    }

    pub(super) async fn lag(&self, subscription: &str) -> Result<u64, EventsError> {
        let channel = self.channel().await?;
        let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        // A passive declare of a missing queue is refused by the broker (404).
        let queue = channel
            .queue_declare(self.inner.names.queue(subscription).as_str().into(), options, FieldTable::default())
            .await
            .map_err(|_| EventsError::NoSuchSubscription(subscription.to_string()))?;
        let _ = channel.close(200, "done".into()).await;
        Ok(u64::from(queue.message_count()))
    }

    /// Reads the dead letters of `subscription` without taking them: every message is got
    /// unacknowledged, then handed back with one explicit nack (requeue) on the same channel.
    /// The explicit nack matters: the requeue a closing channel does happens after the
    /// broker confirms the close, so a `replay` right after could find the queue empty.
    pub(super) async fn dead_letters(&self, subscription: Option<&str>) -> Result<Vec<DeadLetter>, EventsError> {
        let subscription = subscription.ok_or_else(|| self.unavailable("with RabbitMQ, name the subscription"))?;
        let channel = self.channel().await?;
        let read = self.read_dead_letters(&channel, subscription, None).await;
        let _ = channel.close(200, "read".into()).await;
        let (letters, _) = read?;
        Ok(letters.into_iter().flatten().collect())
    }

    pub(super) async fn replay(&self, subscription: &str, event_id: uuid::Uuid) -> Result<(), EventsError> {
        let channel = self.channel().await?;
        let result = match self.read_dead_letters(&channel, subscription, Some(event_id)).await {
            Err(e) => Err(e),
            Ok((_, None)) => Err(EventsError::NoSuchDeadLetter { subscription: subscription.to_string(), event_id }),
            Ok((_, Some(letter))) => {
                // Straight to the subscription's queue (the default exchange routes by queue name),
                // as a fresh message: no headers, so its attempts start again.
                let properties = BasicProperties::default()
                    .with_delivery_mode(PERSISTENT)
                    .with_content_type("application/json".into())
                    .with_message_id(event_id.to_string().into());
                match self.confirmed("", &self.inner.names.queue(subscription), &letter.data, properties).await {
                    Ok(()) => {
                        letter.acker.ack(BasicAckOptions::default()).await.map_err(|e| self.unavailable(e))?;
                        Ok(())
                    }
                    Err(e) => {
                        let requeue = BasicNackOptions { requeue: true, ..BasicNackOptions::default() };
                        let _ = letter.acker.nack(requeue).await;
                        Err(e)
                    }
                }
            }
        };
        let _ = channel.close(200, "replayed".into()).await;
        result
    }

    /// Gets the dead letters of `subscription` one by one, up to the one with `wanted`'s id
    /// (or all of them), and hands every one it does not return back to the queue, in place.
    async fn read_dead_letters(
        &self,
        channel: &Channel,
        subscription: &str,
        wanted: Option<uuid::Uuid>,
    ) -> Result<(Vec<Option<DeadLetter>>, Option<lapin::message::Delivery>), EventsError> {
        let queue = self.inner.names.dead_queue(subscription);
        let mut letters = Vec::new();
        let mut last_read: Option<lapin::message::Delivery> = None;
        let mut found = None;
        loop {
            let got = channel.basic_get(queue.as_str().into(), BasicGetOptions::default()).await;
            let Some(got) = got.map_err(|e| self.unavailable(e))? else { break };
            let letter = dead_letter_of(subscription, &got.delivery);
            if wanted.is_some() && letter.as_ref().map(|l| l.envelope.event_id) == wanted {
                found = Some(got.delivery);
                break;
            }
            letters.push(letter);
            last_read = Some(got.delivery);
        }
        if let Some(last) = last_read {
            // One nack for every message read before `last` too (`multiple`), requeued in place.
            let every_one = BasicNackOptions { multiple: true, requeue: true };
            last.acker.nack(every_one).await.map_err(|e| self.unavailable(e))?;
        }
        Ok((letters, found))
    }

    pub(super) async fn purge(&self, subscription: Option<&str>) -> Result<u64, EventsError> {
        let subscription = subscription.ok_or_else(|| self.unavailable("with RabbitMQ, name the subscription"))?;
        let channel = self.channel().await?;
        let purged = channel
            .queue_purge(self.inner.names.dead_queue(subscription).as_str().into(), QueuePurgeOptions::default())
            .await
            .map_err(|e| self.unavailable(e))?;
        let _ = channel.close(200, "purged".into()).await;
        Ok(u64::from(purged))
    }
}

/// Hands every event the listener queue receives to the listeners, reopening the queue
/// (on a new connection) if the broker goes away.
async fn follow(bus: AmqpBus, mut consumer: lapin::Consumer, sender: broadcast::Sender<Arc<Envelope>>) {
    let reconnect = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut failures = 0u32;
    loop {
        while let Some(Ok(message)) = consumer.next().await {
            failures = 0;
            if let Ok(envelope) = serde_json::from_slice::<Envelope>(&message.data) {
                let _ = sender.send(Arc::new(envelope));
            }
        }
        loop {
            tokio::time::sleep(reconnect.delay(failures)).await;
            failures = failures.saturating_add(1);
            bus.forget_link().await;
            match bus.listen_queue().await {
                Ok(fresh) => {
                    consumer = fresh;
                    break;
                }
                Err(e) => tracing::warn!(error = %e, "events: listeners lost the broker; reconnecting"),
            }
        }
    }
}

/// Queue arguments of a quorum queue.
fn quorum() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    arguments
}

fn as_u32(value: &AMQPValue) -> Option<u32> {
    match value {
        AMQPValue::LongInt(n) => u32::try_from(*n).ok(),
        AMQPValue::LongUInt(n) => Some(*n),
        AMQPValue::LongLongInt(n) => u32::try_from(*n).ok(),
        AMQPValue::ShortInt(n) => u32::try_from(*n).ok(),
        AMQPValue::ShortUInt(n) => Some(u32::from(*n)),
        _ => None,
    }
}

fn header_text(headers: &FieldTable, name: &str) -> Option<String> {
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// A dead letter as stored in a `.dead` queue: written by our consumer (with `x-last-error`)
/// or by the broker when the delivery limit was reached (with `x-death`).
fn dead_letter_of(subscription: &str, delivery: &lapin::message::Delivery) -> Option<DeadLetter> {
    let envelope = serde_json::from_slice::<Envelope>(&delivery.data).ok()?;
    let headers = delivery.properties.headers().clone().unwrap_or_default();
    let (attempts, last_error) = match header_text(&headers, "x-last-error") {
        Some(error) => (headers.inner().get("x-attempts").and_then(as_u32).unwrap_or(0), error),
        None => (
            headers.inner().get("x-delivery-count").and_then(as_u32).unwrap_or(0),
            "the delivery limit was reached: consumers stopped during every attempt".to_string(),
        ),
    };
    let dead_at = match headers.inner().get("x-dead-at") {
        Some(AMQPValue::LongLongInt(ms)) => chrono::DateTime::from_timestamp_millis(*ms).unwrap_or_default(),
        _ => Utc::now(),
    };
    Some(DeadLetter { subscription: subscription.to_string(), envelope, attempts, last_error, dead_at })
}
