//! `strata`: the Strata command line. `strata serve` (or no arguments) runs a broker.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use strata_broker::config::BrokerConfig;

/// Huge allocations (a decoder sizing a vector from a hostile element count) reserve address
/// space instead of aborting the process; see `strata_protocol::alloc`.
#[global_allocator]
static ALLOCATOR: strata_protocol::alloc::ReservingAllocator =
    strata_protocol::alloc::ReservingAllocator;

#[derive(Parser)]
#[command(
    name = "strata",
    version,
    about = "Strata: a Kafka-compatible event streaming platform"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker (the default with no arguments).
    ///
    /// Examples:
    ///   strata serve
    ///   strata serve --config server.properties
    ///   strata serve --set listeners=PLAINTEXT://127.0.0.1:19092 --set log.dirs=/tmp/strata
    Serve(ServeArgs),
}

#[derive(clap::Args, Default)]
struct ServeArgs {
    /// A Kafka-style properties file (key=value lines).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Override one configuration key; repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STRATA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        None => ServeArgs::default(),
    };
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(args: &ServeArgs) -> anyhow::Result<BrokerConfig> {
    let mut map = BTreeMap::new();
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
        map = BrokerConfig::parse_properties(&text)?;
    }
    for item in &args.set {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--set expects KEY=VALUE, got {item:?}"))?;
        map.insert(k.trim().to_string(), v.trim().to_string());
    }
    let (config, unknown) = BrokerConfig::from_map(map)?;
    for key in unknown {
        tracing::warn!(key, "unknown configuration key; ignoring it");
    }
    Ok(config)
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = load_config(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("strata")
        .build()?;
    runtime.block_on(async move {
        // Lock the data directory before binding, so a second broker on the same directory
        // is refused for that reason even when its port is taken too.
        let listener_config = config.listeners.clone();
        let broker = tokio::task::block_in_place(|| strata_broker::Broker::open(config))?;
        let listeners = strata_broker::server::BoundListeners::bind(&listener_config).await?;
        strata_broker::server::serve(broker, listeners, shutdown_signal()).await;
        anyhow::Ok(())
    })?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
