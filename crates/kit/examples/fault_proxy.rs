//! The tests' fault proxy as a program, for `bench/outage.sh`: forwards `LISTEN` to `BACKEND` and
//! reads one command a line from stdin — `pass`, `refuse`, `reset`, `blackhole` — answering each
//! with `ok <fault>` on stdout.
//!
//! ```sh
//! cargo run --release -p kit --features test-support --example fault_proxy -- 127.0.0.1:15432 127.0.0.1:5432
//! ```

use std::net::SocketAddr;

use kit::test_support::{Fault, FaultProxy};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(backend)) = (args.next(), args.next()) else {
        return Err("usage: fault_proxy LISTEN BACKEND (host:port each)".into());
    };
    let listen: SocketAddr = listen.parse()?;
    let proxy = FaultProxy::start_on(listen, &backend).await?;
    println!("listening {} -> {backend}", proxy.addr());
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let fault = match line.trim() {
            "pass" => Fault::Pass,
            "refuse" => Fault::Refuse,
            "reset" => Fault::Reset,
            "blackhole" => Fault::BlackHole,
            "" => continue,
            other => {
                eprintln!("unknown command {other:?}: pass, refuse, reset or blackhole");
                continue;
            }
        };
        proxy.set(fault);
        println!("ok {}", line.trim());
    }
    Ok(())
}
