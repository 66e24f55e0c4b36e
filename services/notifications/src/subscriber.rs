//! How events become notifications, two ways:
//!
//! * the durable subscription [`SUBSCRIPTION`] stores one notification per event for the event's
//!   user (idempotent: its id is the event's) and e-mails it when the user has an address and
//!   `SMTP_URL` is set. The replicas share its events; a failed send is retried by the bus and
//!   never loses the stored notification;
//! * [`Live`], an ephemeral listener in every replica, hears every event and hands the
//!   notification it makes to the streams (`GET /notifications/stream`) of this replica, each of
//!   which passes on its own user's.

use std::sync::Arc;

use kit::events::{Delivery, Durable, Envelope, EventBus, EventsError, HandlerError, Heard};
use kit::Shutdown;
use tokio::sync::broadcast;

use crate::domain;
use crate::mail::{MailError, Mailer};
use crate::store::{Notification, Store, StoreError};

/// The durable subscription's name, shared by every replica.
pub const SUBSCRIPTION: &str = "notifications";

/// The topics that make notifications: the media converters' (`media.mp3.ready`,
/// `media.conversion.failed`). `#`, not `*`: a `*` is one word, and these topics have two after
/// `media`.
pub const PATTERN: &str = "media.#";

/// How many live notifications a slow stream may fall behind before it is ended (its client
/// reconnects with `Last-Event-ID` and gets the rest from the store).
const LIVE_BUFFER: usize = 1024;

/// Starts the durable subscription: events published from now on (and those waiting in it) are
/// stored, and e-mailed with `mailer`.
pub async fn subscribe(
    bus: &EventBus,
    store: Store,
    mailer: Option<Mailer>,
    shutdown: Shutdown,
) -> Result<tokio::task::JoinHandle<()>, EventsError> {
    let handler = move |delivery: Delivery| {
        let (store, mailer) = (store.clone(), mailer.clone());
        async move { handle(&store, mailer.as_ref(), &delivery.envelope).await }
    };
    bus.subscribe(Durable::new(SUBSCRIPTION, PATTERN), handler, shutdown).await
}

fn retry(err: StoreError) -> HandlerError {
    HandlerError::Retry(err.to_string())
}

/// Stores the notification `envelope` makes, then e-mails it if it is due; safe to repeat.
pub async fn handle(store: &Store, mailer: Option<&Mailer>, envelope: &Envelope) -> Result<(), HandlerError> {
    let Some(made) = domain::from_event(envelope)? else {
        return Ok(());
    };
    let id = made.id.to_string();
    if store.insert(&made).await.map_err(retry)? {
        tracing::info!(notification = %id, user = %made.user_id, kind = made.kind.as_str(), "notification stored");
        metrics::counter!("notifications_stored_total", "kind" => made.kind.as_str()).increment(1);
    }
    let Some(mailer) = mailer else {
        return Ok(());
    };
    let Some((notification, email)) = store.mail_due(&id).await.map_err(retry)? else {
        return Ok(());
    };
    match mailer.send(&email, &notification).await {
        Ok(()) => {
            metrics::counter!("notifications_emailed_total").increment(1);
            tracing::info!(notification = %id, user = %notification.user_id, "notification e-mailed");
            store.mark_emailed(&id).await.map_err(retry)
        }
        Err(err @ MailError::Send(_)) => {
            tracing::warn!(notification = %id, error = %err, "e-mail not sent; the bus retries it");
            Err(HandlerError::Retry(err.to_string()))
        }
        // Nothing a retry would change; the notification stays stored.
        Err(err) => {
            tracing::error!(notification = %id, error = %err, "e-mail cannot be sent");
            Err(HandlerError::Reject(err.to_string()))
        }
    }
}

/// What the live listener hands to this replica's streams.
#[derive(Debug, Clone)]
pub enum Pushed {
    /// A new notification (every user's: each stream passes on its own user's).
    Notification(Arc<Notification>),
    /// Events went by unheard: every stream ends, and its client reconnects with
    /// `Last-Event-ID` to get what it missed from the store.
    Resync,
}

/// This replica's live feed of new notifications, from an ephemeral listener on the bus.
#[derive(Clone)]
pub struct Live {
    sender: broadcast::Sender<Pushed>,
}

impl Live {
    /// Listens on `bus` (kept alive as long as the listener runs) until `shutdown`.
    pub async fn start(bus: EventBus, shutdown: Shutdown) -> Result<Self, EventsError> {
        let mut listener = bus.listen(PATTERN).await?;
        let (sender, _) = broadcast::channel(LIVE_BUFFER);
        let live = Self { sender: sender.clone() };
        tokio::spawn(async move {
            let _bus = bus;
            loop {
                let heard = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    heard = listener.next() => heard,
                };
                match heard {
                    Some(Heard::Event(envelope)) => match domain::from_event(&envelope) {
                        Ok(Some(made)) => {
                            // No stream listening is no error.
                            let _ = sender.send(Pushed::Notification(Arc::new(made.into())));
                        }
                        Ok(None) => {}
                        Err(err) => {
                            tracing::debug!(event = %envelope.event_id, error = %err, "event makes no notification")
                        }
                    },
                    Some(Heard::Missed(n)) => {
                        tracing::warn!(missed = n, "the live listener fell behind; streams resynchronise");
                        let _ = sender.send(Pushed::Resync);
                    }
                    None => {
                        tracing::error!("the event bus closed the live listener; live streams get nothing new");
                        break;
                    }
                }
            }
        });
        Ok(live)
    }

    /// A receiver of everything pushed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Pushed> {
        self.sender.subscribe()
    }
}
