//! An SMTP server for tests: `mailin`'s sessions over tokio sockets, keeping every message it
//! accepts; it can refuse the next messages to show that a failed send is retried.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use mailin::{Action, Handler, Response, SessionBuilder};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A message the server accepted.
#[derive(Debug, Clone)]
pub struct Mail {
    /// The envelope's recipients.
    pub to: Vec<String>,
    /// The message as sent: headers, blank line, body.
    pub data: String,
}

/// A running SMTP server; it stops with the test's runtime.
pub struct TestSmtp {
    /// `smtp://127.0.0.1:<port>`, for `SMTP_URL`.
    pub url: String,
    mails: Arc<Mutex<Vec<Mail>>>,
    refuse: Arc<AtomicU32>,
}

struct Session {
    to: Vec<String>,
    data: Vec<u8>,
    mails: Arc<Mutex<Vec<Mail>>>,
    refuse: Arc<AtomicU32>,
}

impl Handler for Session {
    fn rcpt(&mut self, _to: &str) -> Response {
        // Refused at RCPT (a server in trouble says 451 there too): `mailin` keeps a session whose
        // DATA was refused in its data state, where the client's QUIT would go unanswered.
        let refused = self.refuse.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        if refused {
            return Response::custom(451, "try again later".into());
        }
        mailin::response::OK
    }

    fn data_start(&mut self, _domain: &str, _from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.to = to.to_vec();
        self.data.clear();
        mailin::response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let mail = Mail { to: std::mem::take(&mut self.to), data: String::from_utf8_lossy(&self.data).into_owned() };
        self.mails.lock().unwrap().push(mail);
        mailin::response::OK
    }
}

impl TestSmtp {
    /// Listens on a free port of 127.0.0.1.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("smtp://{}", listener.local_addr().unwrap());
        let mails = Arc::new(Mutex::new(Vec::new()));
        let refuse = Arc::new(AtomicU32::new(0));
        let (kept, refusing) = (mails.clone(), refuse.clone());
        tokio::spawn(async move {
            let builder = SessionBuilder::new("test-smtp");
            while let Ok((socket, _)) = listener.accept().await {
                let handler =
                    Session { to: Vec::new(), data: Vec::new(), mails: kept.clone(), refuse: refusing.clone() };
                let mut session = builder.build(IpAddr::V4(Ipv4Addr::LOCALHOST), handler);
                tokio::spawn(async move {
                    let (read, mut write) = socket.into_split();
                    let mut lines = BufReader::new(read);
                    if write.write_all(&session.greeting().buffer().unwrap()).await.is_err() {
                        return;
                    }
                    let mut line = Vec::new();
                    loop {
                        line.clear();
                        match lines.read_until(b'\n', &mut line).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        let response = session.process(&line);
                        if response.action != Action::NoReply
                            && write.write_all(&response.buffer().unwrap()).await.is_err()
                        {
                            return;
                        }
                        if response.action == Action::Close {
                            return;
                        }
                    }
                });
            }
        });
        Self { url, mails, refuse }
    }

    /// Refuses the next `n` messages (451 at `RCPT`), as a server in trouble would.
    pub fn refuse_next(&self, n: u32) {
        self.refuse.store(n, Ordering::SeqCst);
    }

    /// Every message accepted so far.
    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }
}
