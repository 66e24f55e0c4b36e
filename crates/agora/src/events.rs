//! `agora events …`: look at and repair the event bus named by `EVENTS_URL` (default: the
//! embedded bus in `$DATA_DIR/events.db`). There is no HTTP admin API for this: nobody has
//! an admin role yet, and whoever can run the binary next to the bus can read its files.

use std::io::Write;

use anyhow::Context;
use clap::{Args, Subcommand};
use kit::config::Env;
use kit::events::{Delivery, Durable, Envelope, EventBus, EventsConfig, Heard};
use kit::Shutdown;

/// `agora events`.
#[derive(Args)]
pub struct EventsArgs {
    #[command(subcommand)]
    command: EventsCommand,
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Events that failed every attempt, by subscription.
    DeadLetters {
        #[command(subcommand)]
        command: DeadLetterCommand,
    },
    /// Print events as JSON lines as they arrive: as a consumer of the durable subscription
    /// `--subscription` (acknowledging each once printed), or, without one, every event
    /// published from now on.
    Tail {
        /// The durable subscription to consume (made if it does not exist).
        #[arg(long)]
        subscription: Option<String>,
        /// The topics to receive.
        #[arg(long, default_value = "#")]
        pattern: String,
        /// How long this consumer may hold events before they go to another (embedded bus).
        #[arg(long, default_value_t = 30)]
        lease_secs: u64,
    },
    /// Publish one event per line of standard input (each line is a payload, as JSON),
    /// printing each event's id once the bus has it durably: a line printed is an event
    /// promised to every subscription.
    Publish {
        /// The topic, as the contract crate declares it.
        #[arg(long)]
        topic: String,
        /// What the events are about (a project id).
        #[arg(long)]
        key: String,
        /// The payload's version within its topic.
        #[arg(long, default_value_t = 1)]
        version: u32,
    },
    /// How many events wait in a durable subscription.
    Lag {
        /// The subscription.
        #[arg(long)]
        subscription: String,
    },
}

#[derive(Subcommand)]
enum DeadLetterCommand {
    /// One line per dead letter: subscription, event id, topic, attempts, last error.
    List {
        /// Only this subscription's (required with RabbitMQ).
        #[arg(long)]
        subscription: Option<String>,
    },
    /// One dead letter in full, as JSON.
    Show {
        /// The event's id.
        event_id: uuid::Uuid,
        /// Its subscription (required with RabbitMQ).
        #[arg(long)]
        subscription: Option<String>,
    },
    /// Hand a dead letter back to its subscription, attempts starting afresh.
    Replay {
        /// The event's id.
        event_id: uuid::Uuid,
        /// Its subscription.
        #[arg(long)]
        subscription: String,
    },
    /// Delete dead letters for good.
    Purge {
        /// Only this subscription's (required with RabbitMQ).
        #[arg(long)]
        subscription: Option<String>,
    },
}

/// Runs an `agora events` command.
pub async fn run(args: EventsArgs) -> anyhow::Result<()> {
    let env = Env::process();
    let config = EventsConfig::from_env(&env)?;
    let bus = EventBus::connect(&config, contracts::TOPICS).await.context("connecting to the event bus")?;
    match args.command {
        EventsCommand::DeadLetters { command } => dead_letters(&bus, command).await,
        EventsCommand::Tail { subscription: Some(name), pattern, lease_secs } => {
            let durable =
                Durable { lease: std::time::Duration::from_secs(lease_secs), ..Durable::new(&name, &pattern) };
            consume(&bus, durable).await
        }
        EventsCommand::Tail { subscription: None, pattern, .. } => listen(&bus, &pattern).await,
        EventsCommand::Publish { topic, key, version } => publish(&bus, &topic, &key, version).await,
        EventsCommand::Lag { subscription } => {
            println!("{}", bus.lag(&subscription).await?);
            Ok(())
        }
    }
}

async fn dead_letters(bus: &EventBus, command: DeadLetterCommand) -> anyhow::Result<()> {
    match command {
        DeadLetterCommand::List { subscription } => {
            for letter in bus.dead_letters(subscription.as_deref()).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    letter.subscription,
                    letter.envelope.event_id,
                    letter.envelope.topic,
                    letter.attempts,
                    letter.last_error
                );
            }
        }
        DeadLetterCommand::Show { event_id, subscription } => {
            let letters = bus.dead_letters(subscription.as_deref()).await?;
            let letter = letters
                .iter()
                .find(|l| l.envelope.event_id == event_id)
                .with_context(|| format!("no dead letter {event_id}"))?;
            println!("{}", serde_json::to_string_pretty(letter)?);
        }
        DeadLetterCommand::Replay { event_id, subscription } => {
            bus.replay(&subscription, event_id).await?;
            println!("replayed {event_id} to {subscription}");
        }
        DeadLetterCommand::Purge { subscription } => {
            println!("purged {}", bus.purge(subscription.as_deref()).await?);
        }
    }
    Ok(())
}

/// Prints one event as a JSON line, flushed at once (the line is the acknowledgement's
/// witness: a consumer killed after printing and before acking is seen twice).
fn print_line(value: &serde_json::Value) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    out.write_all(b"\n")?;
    out.flush()
}

async fn consume(bus: &EventBus, durable: Durable) -> anyhow::Result<()> {
    let shutdown = kit::shutdown::on_signal();
    let handler = |delivery: Delivery| async move {
        let line = serde_json::json!({
            "event_id": delivery.envelope.event_id,
            "topic": delivery.envelope.topic,
            "key": delivery.envelope.key,
            "attempt": delivery.attempt,
            "payload": delivery.envelope.payload,
        });
        print_line(&line).map_err(|e| kit::events::HandlerError::Retry(format!("cannot print: {e}")))
    };
    let name = durable.name.clone();
    let consumer = bus.subscribe(durable, handler, shutdown).await?;
    // From here every matching event published is the subscription's (on RabbitMQ its queue is
    // bound only now, not when it is declared): scripts and tests wait for this line.
    eprintln!("agora: subscription {name} is consuming");
    consumer.await.context("the consumer stopped")?;
    Ok(())
}

async fn publish(bus: &EventBus, topic: &str, key: &str, version: u32) -> anyhow::Result<()> {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut number = 0u64;
    while let Some(line) = lines.next_line().await.context("reading standard input")? {
        number += 1;
        if line.trim().is_empty() {
            continue;
        }
        let payload: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("line {number} is not JSON"))?;
        let envelope = Envelope::from_json(topic, version, key, payload);
        bus.publish_envelope(&envelope).await.with_context(|| format!("publishing line {number}"))?;
        print_line(&serde_json::json!({ "event_id": envelope.event_id }))?;
    }
    Ok(())
}

async fn listen(bus: &EventBus, pattern: &str) -> anyhow::Result<()> {
    let shutdown: Shutdown = kit::shutdown::on_signal();
    let mut listener = bus.listen(pattern).await?;
    loop {
        let heard = tokio::select! {
            heard = listener.next() => heard,
            _ = shutdown.cancelled() => return Ok(()),
        };
        match heard {
            Some(Heard::Event(envelope)) => print_line(&serde_json::to_value(&*envelope)?)?,
            Some(Heard::Missed(n)) => eprintln!("agora: fell behind; {n} events missed"),
            None => return Ok(()),
        }
    }
}
