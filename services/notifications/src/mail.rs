//! E-mail, when `SMTP_URL` is set: one plain-text message per notification, sent over SMTP with
//! `lettre` (`smtp://` in the clear, `smtp://…?tls=required` with STARTTLS, `smtps://`).

use std::time::Duration;

use kit::db::SecretUrl;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::store::Notification;

/// How long one message may take to send before it counts as a failure (and is retried).
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and as whom e-mail is sent.
#[derive(Debug, Clone)]
pub struct MailConfig {
    /// The SMTP server (`SMTP_URL`), credentials included.
    pub url: SecretUrl,
    /// The sender (`SMTP_FROM`).
    pub from: String,
    /// The site as users reach it (`PUBLIC_URL`), for the link in each message.
    pub public_url: String,
}

/// Why an e-mail was not sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The configuration cannot work (a bad URL or sender).
    #[error("e-mail configuration: {0}")]
    Config(String),
    /// The recipient is not an address (stored before the rules changed).
    #[error("recipient {0:?} is not an e-mail address")]
    Recipient(String),
    /// The message could not be built.
    #[error("cannot build the message: {0}")]
    Build(String),
    /// The SMTP server refused it or could not be reached.
    #[error("SMTP: {0}")]
    Send(String),
}

/// Sends notifications by e-mail.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    public_url: String,
}

impl Mailer {
    /// A mailer for `config`; nothing is connected until the first message.
    pub fn new(config: &MailConfig) -> Result<Self, MailError> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(config.url.expose())
            .map_err(|e| MailError::Config(format!("SMTP_URL {}: {e}", config.url)))?
            .timeout(Some(SEND_TIMEOUT))
            .build();
        let from = config.from.parse().map_err(|e| MailError::Config(format!("SMTP_FROM {:?}: {e}", config.from)))?;
        Ok(Self { transport, from, public_url: config.public_url.trim_end_matches('/').to_string() })
    }

    /// Sends `notification` to `to`.
    pub async fn send(&self, to: &str, notification: &Notification) -> Result<(), MailError> {
        let to: Mailbox = to.parse().map_err(|_| MailError::Recipient(to.to_string()))?;
        let body = format!(
            "{}\n\n{}{}\n\n-- \nAgora. You get this because you asked for your notifications by e-mail; \
             DELETE /notifications/email stops them.\n",
            notification.text, self.public_url, notification.link
        );
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(notification.subject.as_str())
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| MailError::Build(e.to_string()))?;
        // The transport's own timeout covers connecting; this covers a server that stops answering.
        match tokio::time::timeout(SEND_TIMEOUT, self.transport.send(message)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(MailError::Send(e.to_string())),
            Err(_) => Err(MailError::Send(format!("no answer within {} s", SEND_TIMEOUT.as_secs()))),
        }
    }
}
