//! Logs: `tracing` with JSON lines when stdout is not a terminal (collectors
//! parse them), human-readable lines on a terminal, written off the request
//! path by a background writer.

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Lines (or pre-formatted batches) the background log writer queues before loggers wait for it.
const LOG_QUEUE_LINES: usize = 8192;

static GUARD: OnceLock<tracing_appender::non_blocking::WorkerGuard> = OnceLock::new();

/// The background writer of the JSON lines, once [`init`] has chosen JSON.
static JSON_WRITER: OnceLock<tracing_appender::non_blocking::NonBlocking> = OnceLock::new();

/// The background writer every log line goes through, when lines are JSON: for a writer of
/// pre-formatted lines of the same shape (the gateway's access log), so they are interleaved
/// whole with the others. `None` before [`init`], or when lines are not JSON.
pub fn json_writer() -> Option<tracing_appender::non_blocking::NonBlocking> {
    JSON_WRITER.get().cloned()
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Multi-line, coloured, for a developer's terminal.
    Pretty,
    /// One short line per event (used under `agora up`, which prefixes lines).
    Compact,
}

impl LogFormat {
    /// `LOG_FORMAT` if set (json|pretty|compact), else JSON unless stdout is a terminal.
    pub fn from_env() -> Self {
        match std::env::var("LOG_FORMAT").unwrap_or_default().to_ascii_lowercase().as_str() {
            "json" => Self::Json,
            "pretty" => Self::Pretty,
            "compact" => Self::Compact,
            _ if std::io::stdout().is_terminal() => Self::Pretty,
            _ => Self::Json,
        }
    }
}

/// Installs the global subscriber once (`RUST_LOG` filters, default `info`).
/// Later calls are no-ops, so tests can call it freely.
pub fn init(service: &str) {
    if GUARD.get().is_some() {
        return;
    }
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,hyper=warn,tower=warn,h2=warn"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        // The queue is allocated, and every slot touched, up front: the default 128 000 lines made
        // ~4 MB of every process's idle memory. A full queue makes loggers wait (not lossy); 8192
        // lines (or access-log batches) leave the writer ample slack.
        .buffered_lines_limit(LOG_QUEUE_LINES)
        // Buffered: the background writer flushes whenever its queue runs dry, so
        // under load many lines share one write instead of one syscall each.
        .finish(std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout()));
    let format = LogFormat::from_env();
    let json_writer = (format == LogFormat::Json).then(|| writer.clone());
    let base = tracing_subscriber::fmt::layer().with_writer(writer);
    let result = match format {
        LogFormat::Json => tracing_subscriber::registry()
            .with(filter)
            .with(base.json().flatten_event(true).with_current_span(true).with_span_list(false))
            .try_init(),
        LogFormat::Pretty => tracing_subscriber::registry().with(filter).with(base.pretty()).try_init(),
        LogFormat::Compact => {
            tracing_subscriber::registry().with(filter).with(base.compact().with_target(false)).try_init()
        }
    };
    if result.is_ok() {
        let _ = GUARD.set(guard);
        if let Some(writer) = json_writer {
            let _ = JSON_WRITER.set(writer);
        }
        tracing::debug!(service, "logging initialised");
    }
}
