//! `agora`: the one binary of the system (Grafana Loki style).
//!
//! - `agora serve <service>` runs one service in this process (what a container runs);
//! - `agora up` runs the whole system on this machine, one child process per service;
//! - `agora events …` inspects the event bus and repairs its dead letters.

mod allocator;
mod events;
mod serve;
mod up;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "agora", version, about = "Agora: microservices in Rust")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one service in this process, configured from the environment.
    Serve {
        /// The service to run.
        #[arg(value_enum)]
        service: serve::ServiceName,
    },
    /// Run the whole system on this machine: registry, gateway and every service as child processes.
    Up(up::UpArgs),
    /// Inspect the event bus: tail events, see a subscription's lag, list and replay dead letters.
    Events(events::EventsArgs),
}

/// The async runtime a command runs on, sized to its work: every thread costs a stack and an
/// allocator heap of its own, and most of the system idles. `agora up` and `agora events` only wait
/// on pipes, sockets and timers; a service runs on `ASYNC_THREADS` threads (see
/// [`serve::async_threads`]), one by default: the main thread itself, no worker threads.
/// (CPU-heavy work — password hashing, inference — runs on the blocking pool, started on demand,
/// and the gateway serves from its own per-core threads.)
fn runtime(command: &Command) -> anyhow::Result<tokio::runtime::Runtime> {
    let threads = match command {
        Command::Serve { .. } => serve::async_threads(&kit::config::Env::process())?,
        Command::Up(_) | Command::Events(_) => 1,
    };
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    Ok(builder.enable_all().build()?)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match runtime(&cli.command) {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("agora: cannot start the async runtime: {err:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve { service } => serve::run(service).await,
            Command::Up(args) => up::run(args).await,
            Command::Events(args) => events::run(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("agora: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
