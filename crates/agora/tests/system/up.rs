//! `agora up` as a user runs it: the real binary, real child processes.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use kit::test_support::eventually;

use crate::support::free_port;

/// Pids of the `agora serve <service>` children of `parent`.
fn children(parent: u32, service: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid =
            stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().nth(1)).and_then(|p| p.parse::<u32>().ok());
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default().replace('\0', " ");
        if ppid == Some(parent) && cmdline.contains(&format!("serve {service}")) {
            found.push(pid);
        }
    }
    found
}

/// Stops `agora up` even when an assertion fails, so no test leaves processes behind.
struct Guard(u32);

impl Drop for Guard {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0 as i32, libc::SIGTERM) };
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
}

#[tokio::test]
async fn up_runs_the_system_restarts_a_crashed_child_and_stops_everything() {
    let port = free_port();
    let data = tempfile::tempdir().unwrap();
    let mut up = Command::new(env!("CARGO_BIN_EXE_agora"))
        .args(["up", "--port", &port.to_string(), "--data-dir"])
        .arg(data.path())
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("agora up starts");
    let _guard = Guard(up.id());
    let (tx, lines) = mpsc::channel::<String>();
    let stdout = up.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let wait_for_line = |needle: &str, timeout: Duration| -> Vec<String> {
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + timeout;
        while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
            let hit = line.contains(needle);
            seen.push(line);
            if hit {
                return seen;
            }
        }
        panic!("no line containing {needle:?} within {timeout:?}; saw:\n{}", seen.join("\n"));
    };
    let seen = wait_for_line("Agora is up", Duration::from_secs(60));
    assert!(seen.iter().any(|l| l.starts_with("jokes") && l.contains('|')), "logs are prefixed by service");

    let gateway = format!("http://127.0.0.1:{port}");
    assert_eq!(reqwest::get(format!("{gateway}/joke")).await.unwrap().status(), 200);

    // A crashed child is restarted, and says so.
    let jokes = children(up.id(), "jokes");
    assert_eq!(jokes.len(), 1, "one jokes child");
    unsafe { libc::kill(jokes[0] as i32, libc::SIGKILL) };
    wait_for_line("restarting in", Duration::from_secs(10));
    eventually("a joke from the restarted child", Duration::from_secs(20), || async {
        let r = reqwest::get(format!("{gateway}/joke")).await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;

    // SIGTERM stops every child and leaves no orphan.
    let all: Vec<u32> = ["registry", "jokes", "gateway"].iter().flat_map(|s| children(up.id(), s)).collect();
    assert_eq!(all.len(), 3, "{all:?}");
    unsafe { libc::kill(up.id() as i32, libc::SIGTERM) };
    let status = up.wait().unwrap();
    assert!(status.success(), "agora up exits cleanly: {status}");
    for pid in all {
        assert!(!alive(pid), "child {pid} outlived agora up");
    }
}
