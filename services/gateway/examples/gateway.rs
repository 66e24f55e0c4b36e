//! The gateway alone, configured from the environment as `agora serve gateway` is (and with the
//! same allocator), for the stream benchmarks (`bench/sse-fanout.sh`, `bench/stream-1gib.sh`):
//! a release build of it takes minutes, where the whole `agora` binary (every service, the
//! classifier's inference) takes far longer.

/// As in `agora`: see crates/agora/src/main.rs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    kit::telemetry::init("gateway");
    kit::metrics::install();
    let env = kit::config::Env::process();
    let config = gateway::Config::from_env(&env)?;
    let started = gateway::start(config, kit::shutdown::on_signal()).await?;
    started.wait().await?;
    Ok(())
}
