//! Seed 003's challenge 3.1, with the real binary: a service started while its
//! database is unreachable retries with exponential backoff, logging each
//! attempt; it connects once the database appears, and gives up after the
//! maximum number of retries with a non-zero exit naming the database URL
//! without its password.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kit::test_support::{eventually, fresh_postgres_database, postgres_url};

use crate::support::free_port;

fn serve(service: &str, database_url: &str, retries: u32) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agora"));
    cmd.args(["serve", service])
        .env("PORT", "0")
        .env("HOST", "127.0.0.1")
        .env("DATABASE_URL", database_url)
        // Where the event bus lives (the service's own data goes to DATABASE_URL).
        .env("DATA_DIR", std::env::temp_dir().join("agora-startup-tests"))
        .env("DB_CONNECT_RETRIES", retries.to_string())
        .env("DB_CONNECT_BACKOFF_SECS", "0.1")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env_remove("REGISTRY_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

#[test]
fn a_service_gives_up_after_its_retries_naming_the_database_without_its_password() {
    let port = free_port();
    let url = format!("postgres://projects:hunter2@127.0.0.1:{port}/projects");
    for service in ["projects", "threads"] {
        let started = Instant::now();
        let out = serve(service, &url, 3).output().expect("agora runs");
        let logs = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "{service} must exit non-zero:\n{logs}");
        assert!(!logs.contains("hunter2"), "the password leaked:\n{logs}");
        let shown = format!("postgres://projects:***@127.0.0.1:{port}/projects");
        let last = String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or_default().to_string();
        assert!(last.contains(&shown) && last.contains("after 4 attempts"), "{service}: last line {last:?}");
        let retries = logs.lines().filter(|l| l.contains("database not reachable yet; retrying")).count();
        assert_eq!(retries, 3, "{service} logs each retry:\n{logs}");
        // 0.1 + 0.2 + 0.4 s of backoff (with jitter): it waited, and not forever.
        assert!(started.elapsed() >= Duration::from_millis(300), "{service} did not back off");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(no_postgres, ignore = "set AGORA_TEST_POSTGRES_URL to run it against PostgreSQL")]
async fn a_service_started_before_its_postgres_database_connects_once_the_database_appears() {
    let Some(server) = postgres_url() else { return };
    let database = url::Url::parse(&fresh_postgres_database(&server).await).unwrap();
    let real = format!("{}:{}", database.host_str().unwrap(), database.port().unwrap_or(5432));
    // The service is pointed at a port where the database will appear later.
    let port = free_port();
    let mut url = database.clone();
    url.set_port(Some(port)).unwrap();
    let mut child = serve("projects", url.as_str(), 30).spawn().expect("agora runs");
    let stderr = child.stderr.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let logs = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    for stream in [Box::new(stderr) as Box<dyn std::io::Read + Send>, Box::new(stdout)] {
        let logs = logs.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stream).lines().map_while(Result::ok) {
                logs.lock().unwrap().push_str(&(line + "\n"));
            }
        });
    }
    let retrying = || logs.lock().unwrap().matches("database not reachable yet; retrying").count();
    eventually("two logged retries", Duration::from_secs(20), || async { (retrying() >= 2).then_some(()) }).await;

    // The database appears: a relay on that port to the real server.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let real = real.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(real).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    eventually("the service to connect and listen", Duration::from_secs(30), || async {
        let text = logs.lock().unwrap().clone();
        (text.contains("database connected and migrated") && text.contains("listening")).then_some(())
    })
    .await;
    assert!(child.try_wait().unwrap().is_none(), "the service is running");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "a graceful stop exits 0:\n{}", logs.lock().unwrap());
}
