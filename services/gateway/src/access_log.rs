//! The gateway's access log: one line per request, so its cost is paid on every request. With
//! JSON logs the line is written straight into a per-thread buffer (the same JSON shape and
//! fields the `tracing` layer would produce), and the buffer goes to the log's background
//! writer when it fills up or when [`flush_every`]'s timer fires, as nginx's
//! `access_log … buffer= flush=` does. With pretty or compact logs (a developer's terminal) the
//! line simply goes through `tracing`.
//!
//! The lines may go to a file of their own instead ([`to_file`], nginx's `access_log path`):
//! the same JSON lines, appended by the server thread itself when its buffer is handed over,
//! without passing through the log (nor through `agora up`, which relays every child's output
//! line by line).
//!
//! The `RUST_LOG` filter applies as to any info event of target `kit::http`, except to a file of
//! the access log's own, which gets every line (it was asked for).

use std::cell::RefCell;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use tracing_appender::non_blocking::NonBlocking;

use kit::context::RequestContext;
use kit::http::AccessLine;

/// A thread's buffer is handed to the writer once it holds this many bytes.
const BATCH_BYTES: usize = 32 * 1024;

/// The file access lines go to, once [`to_file`] has opened it.
static FILE: OnceLock<File> = OnceLock::new();

/// Sends this process's access lines to the file at `path` (created if missing, appended to)
/// instead of the log, whatever the log's format. Call it before serving; a second call keeps the
/// first file.
pub fn to_file(path: &Path) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    let _ = FILE.set(file);
    Ok(())
}

/// Where a thread's buffered lines are handed.
enum Sink {
    /// The log's background writer (JSON logs).
    Log(NonBlocking),
    /// The access-log file, written by the thread itself: appends of whole buffers.
    File(&'static File),
}

impl Sink {
    fn current() -> Option<Self> {
        FILE.get().map(Sink::File).or_else(|| kit::telemetry::json_writer().map(Sink::Log))
    }
}

struct ThreadBuffer {
    lines: Vec<u8>,
    writer: Option<Sink>,
    /// The Unix second the cached `YYYY-MM-DDTHH:MM:SS` prefix is for.
    second: i64,
    prefix: String,
}

thread_local! {
    static BUFFER: RefCell<ThreadBuffer> = RefCell::new(ThreadBuffer {
        lines: Vec::with_capacity(BATCH_BYTES + 1024),
        writer: Sink::current(),
        second: i64::MIN,
        prefix: String::new(),
    });
}

/// Writes one access-log line for the request `ctx` (info level, target `kit::http`): the
/// gateway's [`kit::http::AccessLog::Write`].
pub fn write(line: &AccessLine<'_>, ctx: &RequestContext) {
    let buffered = BUFFER.with(|buffer| {
        let mut buffer = buffer.borrow_mut();
        if buffer.writer.is_none() {
            buffer.writer = Sink::current();
        }
        match buffer.writer {
            None => return false,
            Some(Sink::Log(_)) if !tracing::enabled!(target: "kit::http", tracing::Level::INFO) => return true,
            Some(_) => {}
        }
        buffer.append(line, ctx);
        if buffer.lines.len() >= BATCH_BYTES {
            buffer.flush();
        }
        true
    });
    if !buffered {
        line.info(ctx);
    }
}

/// Hands this thread's buffered lines to the writer now.
pub fn flush() {
    BUFFER.with(|buffer| buffer.borrow_mut().flush());
}

/// Flushes this thread's buffer every `period`, forever: spawn it on each
/// thread that writes access lines (a current-thread runtime runs it there).
pub async fn flush_every(period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        flush();
    }
}

impl ThreadBuffer {
    fn flush(&mut self) {
        if self.lines.is_empty() {
            return;
        }
        // Whole buffers, so lines are never split between two writes (nor, in the file, between
        // threads: each write is appended at the end as one piece).
        match self.writer.as_mut() {
            Some(Sink::Log(writer)) => {
                let _ = writer.write_all(&self.lines);
            }
            Some(Sink::File(file)) => {
                if let Err(err) = (*file).write_all(&self.lines) {
                    tracing::warn!(error = %err, "writing the access log failed; {} bytes lost", self.lines.len());
                }
            }
            None => {}
        }
        self.lines.clear();
    }

    fn append(&mut self, line: &AccessLine<'_>, ctx: &RequestContext) {
        let now = chrono::Utc::now();
        if now.timestamp() != self.second {
            self.second = now.timestamp();
            self.prefix = now.format("%Y-%m-%dT%H:%M:%S").to_string();
        }
        let out = &mut self.lines;
        out.extend_from_slice(b"{\"timestamp\":\"");
        out.extend_from_slice(self.prefix.as_bytes());
        out.push(b'.');
        push_digits(out, u64::from(now.timestamp_subsec_micros()), 6);
        out.extend_from_slice(b"Z\",\"level\":\"INFO\",\"message\":\"access\"");
        field(out, "request_id", ctx.request_id());
        // Hex digits, an HTTP token and our own route prefix: nothing in them needs escaping.
        plain_field(out, "trace_id", ctx.trace_id());
        plain_field(out, "method", line.method.as_str());
        field(out, "path", line.path);
        plain_field(out, "route", line.route);
        field(out, "upstream", line.upstream);
        // Numbers as serde_json writes them (the `tracing` JSON layer's format), without `fmt`.
        out.extend_from_slice(b",\"status\":");
        push_digits(out, u64::from(line.status), 1);
        // Milliseconds with three decimals: the latency to the microsecond, without float formatting.
        let micros = u64::try_from(line.elapsed.as_micros()).unwrap_or(u64::MAX);
        out.extend_from_slice(b",\"latency_ms\":");
        push_digits(out, micros / 1000, 1);
        out.push(b'.');
        push_digits(out, micros % 1000, 3);
        out.extend_from_slice(b",\"target\":\"kit::http\"}\n");
    }
}

/// `,"name":"value"` with the value escaped as JSON.
fn field(out: &mut Vec<u8>, name: &str, value: &str) {
    // Every byte is looked at (no early exit), which the compiler turns into a few wide compares.
    let needs_escaping = value.bytes().fold(false, |found, b| found | (b == b'"') | (b == b'\\') | (b < 0x20));
    if needs_escaping {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
        let _ = serde_json::to_writer(&mut *out, value);
    } else {
        plain_field(out, name, value);
    }
}

/// `,"name":"value"` for a value with nothing to escape (checked by the caller).
fn plain_field(out: &mut Vec<u8>, name: &str, value: &str) {
    for part in [",\"", name, "\":\"", value, "\""] {
        out.extend_from_slice(part.as_bytes());
    }
}

/// Writes `n` in decimal, zero-padded to at least `width` digits.
fn push_digits(out: &mut Vec<u8>, n: u64, width: usize) {
    let mut buffer = itoa::Buffer::new();
    let digits = buffer.format(n).as_bytes();
    out.resize(out.len() + width.saturating_sub(digits.len()), b'0');
    out.extend_from_slice(digits);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `GET` of `path` on the `/joke` route that took `elapsed` and answered `status`.
    fn joke_line(path: &'static str, status: u16, elapsed: Duration) -> AccessLine<'static> {
        AccessLine { method: &http::Method::GET, path, route: "/joke", upstream: "127.0.0.1:9", status, elapsed }
    }

    #[test]
    fn a_line_is_one_json_object_with_the_fields_of_the_tracing_line() {
        let mut buffer = ThreadBuffer { lines: Vec::new(), writer: None, second: i64::MIN, prefix: String::new() };
        let mut headers = http::HeaderMap::new();
        headers.insert("x-request-id", http::HeaderValue::from_static("req-\"1\""));
        let ctx = RequestContext::from_headers(&headers);
        let line = joke_line("/joke/\\x", 200, Duration::from_micros(1500));
        buffer.append(&line, &ctx);
        buffer.append(&line, &ctx);
        let text = String::from_utf8(buffer.lines.clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let parsed: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(parsed["message"], "access");
        assert_eq!(parsed["level"], "INFO");
        assert_eq!(parsed["request_id"], "req-\"1\"");
        assert_eq!(parsed["path"], "/joke/\\x");
        assert_eq!(parsed["status"], 200);
        assert_eq!(parsed["latency_ms"], 1.5);
        assert_eq!(parsed["trace_id"].as_str().map(str::len), Some(32));
        let stamp = parsed["timestamp"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(stamp).is_ok(), "{stamp}");
    }

    #[test]
    fn a_thread_hands_its_lines_to_the_access_log_file_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        std::fs::write(&path, "an earlier line\n").unwrap();
        let file: &'static File = Box::leak(Box::new(std::fs::OpenOptions::new().append(true).open(&path).unwrap()));
        let mut buffer =
            ThreadBuffer { lines: Vec::new(), writer: Some(Sink::File(file)), second: i64::MIN, prefix: String::new() };
        let ctx = RequestContext::from_headers(&http::HeaderMap::new());
        let line = joke_line("/joke", 200, Duration::from_micros(700));
        buffer.append(&line, &ctx);
        buffer.append(&line, &ctx);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "an earlier line\n", "nothing before the flush");
        buffer.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        for line in &lines[1..] {
            let parsed: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!((parsed["path"].as_str(), parsed["status"].as_u64()), (Some("/joke"), Some(200)));
        }
        assert!(buffer.lines.is_empty());
    }

    #[test]
    fn numbers_are_written_with_their_digits_padded_to_the_width_asked() {
        let digits = |n, width| {
            let mut out = Vec::new();
            push_digits(&mut out, n, width);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(digits(0, 1), "0");
        assert_eq!(digits(200, 1), "200");
        assert_eq!(digits(7, 3), "007");
        assert_eq!(digits(123_456, 6), "123456");
        assert_eq!(digits(42, 6), "000042");
        assert_eq!(digits(u64::MAX, 1), "18446744073709551615");
    }

    #[test]
    fn the_latency_keeps_its_microseconds() {
        let mut buffer = ThreadBuffer { lines: Vec::new(), writer: None, second: i64::MIN, prefix: String::new() };
        let ctx = RequestContext::from_headers(&http::HeaderMap::new());
        for (elapsed, expected) in [
            (Duration::from_nanos(999), "0.000"),
            (Duration::from_micros(812), "0.812"),
            (Duration::from_micros(12_345_678), "12345.678"),
        ] {
            buffer.lines.clear();
            let line = joke_line("/", 204, elapsed);
            buffer.append(&line, &ctx);
            let text = String::from_utf8(buffer.lines.clone()).unwrap();
            assert!(text.contains(&format!(",\"latency_ms\":{expected},")), "{text}");
            assert!(text.contains(",\"status\":204,"), "{text}");
        }
    }
}
