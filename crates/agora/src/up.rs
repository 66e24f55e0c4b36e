//! `agora up`: the whole system on one machine. Each service runs as its own
//! child process (`agora serve <name>`) on 127.0.0.1; the registry first, the
//! gateway on `--port`, services on ephemeral ports found through the registry.
//! Logs are merged with a prefix per child; a crashed child is restarted with
//! backoff; Ctrl-C or SIGTERM stops the gateway, then the services, then the
//! registry, each gracefully, and leaves no process behind.

use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use kit::backoff::Backoff;
use kit::Shutdown;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// `agora up` options.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Port of the gateway (the only port you need).
    #[arg(long, default_value_t = 8080, env = "AGORA_PORT")]
    port: u16,
    /// Where services keep their SQLite databases.
    #[arg(long, default_value = "./data", env = "AGORA_DATA_DIR")]
    data_dir: PathBuf,
    /// More instances of a service, e.g. `--replicas jokes=2` (repeatable).
    #[arg(long = "replicas", value_parser = parse_replicas)]
    replicas: Vec<(String, usize)>,
    /// Seconds each child gets to finish in-flight work on shutdown.
    #[arg(long, default_value_t = 10)]
    grace_secs: u64,
}

fn parse_replicas(raw: &str) -> Result<(String, usize), String> {
    let (name, n) = raw.split_once('=').ok_or("expected service=N, e.g. jokes=2")?;
    let n: usize = n.parse().map_err(|_| format!("{n:?} is not a number of replicas"))?;
    if !(1..=16).contains(&n) {
        return Err("replicas must be between 1 and 16".into());
    }
    if !SERVICES.contains(&name) && !GRPC_SERVICES.contains(&name) && !WORKERS.contains(&name) {
        let known: Vec<&str> = SERVICES.iter().chain(GRPC_SERVICES).chain(WORKERS).copied().collect();
        return Err(format!("unknown service {name:?}; scalable services: {}", known.join(", ")));
    }
    Ok((name.to_string(), n))
}

/// Services started behind the gateway (each registers itself).
const SERVICES: &[&str] = &["auth", "jokes", "classifier", "projects", "media", "notifications"];

/// Services that only speak gRPC: the gateway does not route to them, so
/// readiness is asked of the registry.
const GRPC_SERVICES: &[&str] = &["threads"];

/// Background workers (they serve no HTTP and do not register; they take jobs from the queue).
const WORKERS: &[&str] = &["classifier-worker", "converter"];

/// Whose database a child uses: a worker role shares its service's (`MEDIA_DATABASE_URL` is the
/// converter's too).
fn database_of(service: &str) -> &str {
    match service {
        "converter" => "media",
        other => other,
    }
}

/// The order in which children are stopped: first the entry point, last the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Tier {
    Gateway,
    Service,
    Registry,
}

struct ChildSpec {
    label: String,
    service: &'static str,
    tier: Tier,
    env: Vec<(String, String)>,
}

/// Runs the system until a shutdown signal.
pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the agora executable")?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create the data directory {}", args.data_dir.display()))?;
    let data_dir = args.data_dir.canonicalize().unwrap_or(args.data_dir.clone());
    let gateway_addr = SocketAddr::from(([127, 0, 0, 1], args.port));
    if TcpListener::bind(gateway_addr).is_err() {
        bail!("port {} is already in use; choose another with --port", args.port);
    }
    let registry_port = free_port().context("no free port for the registry")?;
    let registry_url = format!("http://127.0.0.1:{registry_port}");
    let log_format = std::env::var("LOG_FORMAT")
        .unwrap_or_else(|_| if std::io::stdout().is_terminal() { "compact" } else { "json" }.to_string());
    let common = |service: &str, port: u16, instance: String| {
        let mut env = vec![
            ("HOST".to_string(), "127.0.0.1".to_string()),
            ("PORT".to_string(), port.to_string()),
            ("REGISTRY_URL".to_string(), registry_url.clone()),
            ("INSTANCE_ID".to_string(), instance),
            ("LOG_FORMAT".to_string(), log_format.clone()),
            ("DATA_DIR".to_string(), data_dir.display().to_string()),
            ("SHUTDOWN_TIMEOUT_SECS".to_string(), args.grace_secs.to_string()),
            ("AGORA_SERVICE".to_string(), service.to_string()),
        ];
        // Each service has its own database: `PROJECTS_DATABASE_URL=postgres://…` becomes
        // `DATABASE_URL` for the projects children only (default: SQLite under the data directory).
        let own_db = format!("{}_DATABASE_URL", database_of(service).to_ascii_uppercase().replace('-', "_"));
        if let Ok(url) = std::env::var(&own_db) {
            env.push(("DATABASE_URL".to_string(), url));
        }
        env
    };
    let mut specs = vec![ChildSpec {
        label: "registry".into(),
        service: "registry",
        tier: Tier::Registry,
        env: common("registry", registry_port, "registry-1".into()),
    }];
    for &service in SERVICES.iter().chain(GRPC_SERVICES).chain(WORKERS) {
        let n = args.replicas.iter().rev().find(|(s, _)| s == service).map_or(1, |(_, n)| *n);
        for i in 1..=n {
            let label = if n == 1 { service.to_string() } else { format!("{service}-{i}") };
            specs.push(ChildSpec {
                env: common(service, 0, format!("{service}-{i}")),
                label,
                service,
                tier: Tier::Service,
            });
        }
    }
    specs.push(ChildSpec {
        label: "gateway".into(),
        service: "gateway",
        tier: Tier::Gateway,
        env: common("gateway", args.port, "gateway-1".into()),
    });

    let colour = std::io::stdout().is_terminal();
    let width = specs.iter().map(|s| s.label.len()).max().unwrap_or(8);
    let out = Arc::new(Output { colour, width });
    let grace = Duration::from_secs(args.grace_secs);
    let tiers = [Tier::Gateway, Tier::Service, Tier::Registry].map(|t| (t, Shutdown::new()));
    let mut tasks = Vec::new();
    for (i, spec) in specs.into_iter().enumerate() {
        let stop = tiers.iter().find(|(t, _)| *t == spec.tier).map(|(_, s)| s.clone()).unwrap_or_default();
        let is_registry = spec.tier == Tier::Registry;
        tasks.push((spec.tier, tokio::spawn(supervise(exe.clone(), spec, i, out.clone(), stop, grace))));
        if is_registry {
            wait_for(&format!("{registry_url}/healthz"), Duration::from_secs(15)).await;
        }
    }

    let expected: Vec<(String, usize)> = SERVICES
        .iter()
        .map(|s| (s.to_string(), args.replicas.iter().rev().find(|(n, _)| n == s).map_or(1, |(_, n)| *n)))
        .collect();
    let grpc: Vec<(String, usize)> = GRPC_SERVICES
        .iter()
        .map(|s| (s.to_string(), args.replicas.iter().rev().find(|(n, _)| n == s).map_or(1, |(_, n)| *n)))
        .collect();
    let url = format!("http://127.0.0.1:{}", args.port);
    let all_ready = async {
        let (routed, registered) =
            tokio::join!(wait_until_ready(&url, &expected), wait_until_registered(&registry_url, &grpc));
        routed && registered
    };
    tokio::select! {
        ready = all_ready => {
            if ready {
                out.line("agora", &format!("Agora is up: {url}  (status {url}/status, API docs {url}/docs; Ctrl-C stops everything)"));
            } else {
                out.line("agora", &format!("some services are not ready yet; see the log above and {url}/status"));
            }
        }
        () = kit::shutdown::wait_for_signal() => {
            stop_all(&out, &tiers, &mut tasks).await;
            return Ok(());
        }
    }
    kit::shutdown::wait_for_signal().await;
    stop_all(&out, &tiers, &mut tasks).await;
    Ok(())
}

async fn stop_all(out: &Output, tiers: &[(Tier, Shutdown); 3], tasks: &mut [(Tier, tokio::task::JoinHandle<()>)]) {
    out.line("agora", "stopping: gateway first, then services, then the registry");
    for (tier, stop) in tiers {
        stop.cancel();
        for (t, task) in tasks.iter_mut() {
            if t == tier {
                let _ = task.await;
            }
        }
    }
    out.line("agora", "all stopped");
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn wait_for(url: &str, timeout: Duration) -> bool {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if client.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Ready when the gateway itself sees every expected service with enough ready instances.
async fn wait_until_ready(gateway: &str, expected: &[(String, usize)]) -> bool {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let report = match client.get(format!("{gateway}/api/status")).send().await {
            Ok(r) => r.json::<serde_json::Value>().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        };
        let services = report["services"].as_array().cloned().unwrap_or_default();
        let all = expected.iter().all(|(name, n)| {
            services.iter().any(|s| {
                s["name"] == name.as_str()
                    && s["instances"]
                        .as_array()
                        .is_some_and(|i| i.iter().filter(|i| i["healthy"] == true).count() >= *n)
            })
        });
        if all {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    false
}

/// Waits until the registry lists `n` instances of each gRPC-only service.
async fn wait_until_registered(registry: &str, expected: &[(String, usize)]) -> bool {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let mut all = true;
        for (name, n) in expected {
            let answer = match client.get(format!("{registry}/v1/services/{name}")).send().await {
                Ok(r) => r.json::<serde_json::Value>().await.unwrap_or_default(),
                Err(_) => serde_json::Value::Null,
            };
            all &= answer["instances"].as_array().is_some_and(|i| i.len() >= *n);
        }
        if all {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    false
}

/// Keeps one child running until `stop`, restarting it with backoff when it dies.
async fn supervise(exe: PathBuf, spec: ChildSpec, index: usize, out: Arc<Output>, stop: Shutdown, grace: Duration) {
    let backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut restarts = 0u32;
    loop {
        let started = Instant::now();
        let mut child = match spawn(&exe, &spec) {
            Ok(child) => child,
            Err(err) => {
                out.line(&spec.label, &format!("cannot start: {err}"));
                return;
            }
        };
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(pipe(stdout, spec.label.clone(), index, out.clone()));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(pipe(stderr, spec.label.clone(), index, out.clone()));
        }
        let status = tokio::select! {
            status = child.wait() => status,
            () = stop.cancelled() => {
                terminate(&mut child, grace, &spec.label, &out).await;
                return;
            }
        };
        if stop.is_cancelled() {
            return;
        }
        if started.elapsed() > Duration::from_secs(30) {
            restarts = 0;
        }
        let delay = backoff.delay(restarts);
        restarts = restarts.saturating_add(1);
        let how = match status {
            Ok(s) => describe(s),
            Err(e) => format!("could not be waited for ({e})"),
        };
        out.line(
            &spec.label,
            &format!("{} {how}; restarting in {:.1} s (restart #{restarts})", spec.service, delay.as_secs_f64()),
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => return,
        }
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "stopped".to_string(),
    }
}

fn spawn(exe: &PathBuf, spec: &ChildSpec) -> std::io::Result<tokio::process::Child> {
    let mut cmd = Command::new(exe);
    cmd.arg("serve")
        .arg(spec.service)
        // One DATABASE_URL shared by every service would mix their schemas; each gets its own (see `common`).
        .env_remove("DATABASE_URL")
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Own process group: the terminal's Ctrl-C reaches only `agora up`, which stops children in order.
        .process_group(0);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent; it makes the
    // kernel send SIGTERM to the child if `agora up` itself dies, so no child is orphaned.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

async fn terminate(child: &mut tokio::process::Child, grace: Duration, label: &str, out: &Output) {
    if let Some(pid) = child.id() {
        // SAFETY: sending a signal to our own child's pid, which we still own (not yet reaped).
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
    match tokio::time::timeout(grace + Duration::from_secs(1), child.wait()).await {
        Ok(Ok(status)) => out.line(label, &format!("stopped ({})", describe(status))),
        _ => {
            out.line(label, "did not stop in time; killing it");
            let _ = child.kill().await;
        }
    }
}

/// How much of a child's output is read at once (the gateway's access log hands over 32 KiB batches).
const RELAY_BUFFER: usize = 64 * 1024;
/// A line longer than this (without a newline) is relayed in pieces rather than held whole.
const MAX_LINE: usize = 1024 * 1024;

/// Relays a child's output to our stdout, prefixing every line.
async fn pipe<R: tokio::io::AsyncRead + Unpin>(reader: R, label: String, index: usize, out: Arc<Output>) {
    let prefix = out.prefix(&label, index);
    relay_lines(reader, &prefix, |batch| {
        let _ = std::io::stdout().lock().write_all(batch);
    })
    .await;
}

/// Reads `reader` to its end and hands `emit` its lines, each after `prefix`. Whatever one read
/// brings is handed over at once, so a busy child (the gateway's access log under load) costs a
/// few syscalls per batch rather than one per line; an unfinished last line waits for the rest
/// of it (up to [`MAX_LINE`] bytes).
async fn relay_lines<R: tokio::io::AsyncRead + Unpin>(mut reader: R, prefix: &[u8], mut emit: impl FnMut(&[u8])) {
    let mut buf = vec![0u8; RELAY_BUFFER];
    // The first `held` bytes of `buf` are an unfinished line.
    let mut held = 0;
    let mut batch = Vec::with_capacity(RELAY_BUFFER + RELAY_BUFFER / 4);
    loop {
        if held == buf.len() {
            if held >= MAX_LINE {
                prefix_lines(prefix, &buf[..held], &mut batch);
                emit(&batch);
                held = 0;
            } else {
                buf.resize(buf.len() * 2, 0);
            }
        }
        let filled = match reader.read(&mut buf[held..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => held + n,
        };
        match memchr::memrchr(b'\n', &buf[held..filled]) {
            Some(last) => {
                let end = held + last + 1;
                prefix_lines(prefix, &buf[..end], &mut batch);
                emit(&batch);
                buf.copy_within(end..filled, 0);
                held = filled - end;
            }
            None => held = filled,
        }
    }
    if held > 0 {
        prefix_lines(prefix, &buf[..held], &mut batch);
        emit(&batch);
    }
}

/// Writes prefixed lines to our stdout.
struct Output {
    colour: bool,
    width: usize,
}

/// Replaces `batch` with the lines of `text`, each after `prefix` and ending in a newline (one is
/// added to a last line without it). The bytes are passed through as they are: a child's output
/// is not re-decoded.
fn prefix_lines(prefix: &[u8], text: &[u8], batch: &mut Vec<u8>) {
    batch.clear();
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', text) {
        batch.extend_from_slice(prefix);
        batch.extend_from_slice(&text[start..=end]);
        start = end + 1;
    }
    if start < text.len() {
        batch.extend_from_slice(prefix);
        batch.extend_from_slice(&text[start..]);
        batch.push(b'\n');
    }
}

const COLOURS: [&str; 6] = ["36", "33", "35", "32", "34", "91"];

impl Output {
    /// What every line of the child `label` starts with (its name, padded, and a colour on a terminal).
    fn prefix(&self, label: &str, index: usize) -> Vec<u8> {
        let prefix = if self.colour {
            let colour = COLOURS[index % COLOURS.len()];
            format!("\x1b[{colour}m{label:<w$} |\x1b[0m ", w = self.width)
        } else {
            format!("{label:<w$} | ", w = self.width)
        };
        prefix.into_bytes()
    }

    fn line(&self, label: &str, message: &str) {
        let mut stdout = std::io::stdout().lock();
        let _ = if self.colour {
            writeln!(stdout, "\x1b[1m{label:<w$} | {message}\x1b[0m", w = self.width)
        } else {
            writeln!(stdout, "{label:<w$} | {message}", w = self.width)
        };
    }
}

#[cfg(test)]
mod relay_tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn relayed(pieces: &[&[u8]]) -> String {
        // A tiny pipe: the relay sees the output in reads of a few bytes, lines split across them.
        let (mut child, reader) = tokio::io::duplex(5);
        let pieces: Vec<Vec<u8>> = pieces.iter().map(|p| p.to_vec()).collect();
        let writer = tokio::spawn(async move {
            for piece in pieces {
                child.write_all(&piece).await.ok();
            }
        });
        let mut out = Vec::new();
        relay_lines(reader, b"svc | ", |batch| out.extend_from_slice(batch)).await;
        writer.await.ok();
        String::from_utf8(out).unwrap_or_default()
    }

    #[tokio::test]
    async fn every_line_gets_the_prefix_even_when_split_across_reads() {
        let out = relayed(&[b"first line\nsec", b"ond line\n", b"\nthird"]).await;
        assert_eq!(out, "svc | first line\nsvc | second line\nsvc | \nsvc | third\n");
    }

    #[tokio::test]
    async fn a_line_longer_than_the_buffer_is_kept_whole() {
        let long = "x".repeat(RELAY_BUFFER * 3);
        let text = format!("{long}\nshort\n");
        let out = relayed(&[text.as_bytes()]).await;
        assert_eq!(out, format!("svc | {long}\nsvc | short\n"));
    }

    #[test]
    fn bytes_that_are_not_utf8_pass_through_unchanged() {
        let mut batch = Vec::new();
        prefix_lines(b"> ", b"\xff\xfe\nok", &mut batch);
        assert_eq!(batch, b"> \xff\xfe\n> ok\n");
    }
}
