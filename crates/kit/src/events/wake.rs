//! Wake-ups for the embedded backend, across the processes sharing one events file.
//!
//! Every bus that consumes (a durable subscription or a listener) binds a Unix datagram
//! socket in a directory next to the database (`events.db.wake/<pid>-<id>.sock`). After a
//! publish commits, the publisher sends one byte to every socket in that directory; the
//! receiving bus wakes its consumers, which then read the database. A datagram carries no
//! data that matters: losing one (a full socket buffer) only delays a consumer until its
//! next poll, so delivery never depends on it. A socket whose process has gone refuses the
//! datagram and is removed by the next publisher that finds it.
//!
//! Where sockets are unavailable (a path longer than a socket address allows), the bus
//! falls back to polling alone, and says so once in the log.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use tokio::net::UnixDatagram;
use tokio::sync::Notify;

/// The longest path a Unix socket address holds on Linux, less its terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// One bus's wake-ups: the local signal its consumers wait on, and the directory of peers.
pub(super) struct Wake {
    dir: PathBuf,
    local: Arc<Notify>,
    /// Our own socket, bound on first use by a consumer; removed when the bus goes.
    own: OnceLock<Option<Bound>>,
    /// Sends datagrams; unbound.
    sender: OnceLock<Option<std::os::unix::net::UnixDatagram>>,
}

struct Bound {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Bound {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Wake {
    /// Wake-ups for the events database at `db_path`.
    pub(super) fn new(db_path: &Path) -> Self {
        let mut dir = db_path.as_os_str().to_owned();
        dir.push(".wake");
        Self { dir: PathBuf::from(dir), local: Arc::new(Notify::new()), own: OnceLock::new(), sender: OnceLock::new() }
    }

    /// The signal this bus's consumers wait on. Binds the bus's socket on first call, so a
    /// publisher in another process can reach it.
    pub(super) fn signal(&self) -> Arc<Notify> {
        self.own.get_or_init(|| self.bind());
        self.local.clone()
    }

    fn bind(&self) -> Option<Bound> {
        let path = self.dir.join(format!("{}-{}.sock", std::process::id(), uuid::Uuid::new_v4().simple()));
        if path.as_os_str().len() > MAX_SOCKET_PATH {
            tracing::warn!(dir = %self.dir.display(), "events: socket path too long; consumers poll instead of being woken");
            return None;
        }
        let bound = std::fs::create_dir_all(&self.dir).and_then(|()| UnixDatagram::bind(&path));
        match bound {
            Ok(socket) => {
                let local = self.local.clone();
                let task = tokio::spawn(async move {
                    let mut buf = [0u8; 16];
                    while socket.recv(&mut buf).await.is_ok() {
                        local.notify_waiters();
                    }
                });
                Some(Bound { path, task })
            }
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "events: cannot bind a wake-up socket; consumers poll");
                None
            }
        }
    }

    /// Wakes this bus's consumers and every other bus on the file. Best effort: never fails.
    pub(super) fn wake_all(&self) {
        self.local.notify_waiters();
        let sender = self.sender.get_or_init(|| {
            let socket = std::os::unix::net::UnixDatagram::unbound().ok()?;
            socket.set_nonblocking(true).ok()?;
            Some(socket)
        });
        let (Some(sender), Ok(entries)) = (sender, std::fs::read_dir(&self.dir)) else { return };
        let own = self.own.get().and_then(|b| b.as_ref()).map(|b| b.path.as_path());
        for entry in entries.flatten() {
            let path = entry.path();
            if Some(path.as_path()) == own {
                continue;
            }
            match sender.send_to(b"!", &path) {
                Ok(_) => {}
                // Its process has gone: nobody will ever read it.
                Err(e) if matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::NotFound) => {
                    let _ = std::fs::remove_file(&path);
                }
                // A full buffer means it has wake-ups pending already.
                Err(_) => {}
            }
        }
    }
}
