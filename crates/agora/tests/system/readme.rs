//! The README's curl examples, run as written against `agora up`: the README cannot drift
//! from the API.
//!
//! Every `sh` block of README.md that calls curl runs, in order, in one bash under
//! `set -euo pipefail`, with `curl` failing on any HTTP error (`-f`). Placeholders are the
//! shell variables earlier blocks set (`$TOKEN`, `$JOB_ID`); files are the repository's;
//! `localhost:8080` is the test's `agora up`. curl and jq are the examples' tools: without
//! them the test is skipped, and under `AGORA_REQUIRE_BACKENDS=1` it fails.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::free_port;

/// The repository's root: the examples run there, so their file paths are the repository's.
fn repository() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// The `sh` blocks of `markdown` that call curl, in order.
fn curl_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                if block.contains("curl ") {
                    blocks.push(std::mem::take(block));
                }
                current = None;
            }
            (Some(block), line) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// Whether every tool is on the `PATH`; panics naming the missing ones when CI requires them.
fn tools_present(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|tool| {
            let found = Command::new("sh").args(["-c", &format!("command -v {tool} >/dev/null")]).status();
            !found.is_ok_and(|s| s.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(!kit::test_support::backends_required(), "{missing:?} must be installed when AGORA_REQUIRE_BACKENDS=1");
    eprintln!("skipped: install {missing:?} to run the README's examples");
    false
}

#[test]
fn the_readme_has_curl_examples_apart_from_its_set_up_commands() {
    let readme = std::fs::read_to_string(repository().join("README.md")).expect("README.md");
    let blocks = curl_blocks(&readme);
    assert!(!blocks.is_empty(), "README.md has no sh block calling curl");
    assert!(blocks.iter().all(|b| !b.contains("cargo ")), "the set-up commands are not examples: {blocks:?}");
}

#[test]
fn the_readme_curl_examples_work_as_written_against_agora_up() {
    if !tools_present(&["bash", "curl", "jq"]) {
        return;
    }
    let readme = std::fs::read_to_string(repository().join("README.md")).expect("README.md");
    let port = free_port();
    let data = tempfile::tempdir().expect("temp dir");
    let mut up = Command::new(env!("CARGO_BIN_EXE_agora"))
        .args(["up", "--port", &port.to_string(), "--data-dir"])
        .arg(data.path())
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("agora up starts");
    let stdout = up.stdout.take().expect("stdout");
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        match lines.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
            Ok(line) if line.contains("Agora is up") => break,
            Ok(_) => continue,
            Err(e) => {
                let _ = up.kill();
                panic!("agora up did not come up: {e}");
            }
        }
    }
    std::thread::spawn(move || for _ in lines {});

    let examples = curl_blocks(&readme).join("\n").replace("localhost:8080", &format!("127.0.0.1:{port}"));
    let script = format!(
        "set -euo pipefail\nset -x\ncurl() {{ command curl -f --silent --show-error --max-time 30 \"$@\"; }}\n{examples}"
    );
    let output = Command::new("bash").arg("-c").arg(&script).current_dir(repository()).output().expect("run bash");
    let _ = unsafe { libc::kill(up.id() as i32, libc::SIGTERM) };
    let _ = up.wait();
    let (out, err) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the README's examples failed ({}):\n{err}\n--- stdout ---\n{out}", output.status);
    // What the examples show a reader: a joke, the proposed project in the list, the job.
    assert!(out.contains("Popee the Performer"), "the proposed project is listed:\n{out}");
    assert!(out.contains("task_status"), "the classification job is shown:\n{out}");
}
