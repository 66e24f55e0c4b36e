//! `agora`: the one binary of the system (Grafana Loki style).
//!
//! - `agora serve <service>` runs one service in this process (what a container runs);
//! - `agora up` runs the whole system on this machine, one child process per service;
//! - `agora events …` inspects the event bus and repairs its dead letters.

mod events;
mod serve;
mod up;

use clap::{Parser, Subcommand};

/// mimalloc: the proxy's hot path allocates small buffers per request, where
/// glibc's allocator showed up as ~15% of the gateway's CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("agora: cannot start the async runtime: {err}");
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
