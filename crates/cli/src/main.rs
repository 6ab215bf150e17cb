//! `strata`: the Strata command line. `strata serve` (or no arguments) runs a broker and
//! `strata storage` formats its data directory; the other subcommands are clients of a
//! running cluster (see `cmd`).

mod cmd;

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
    #[command(flatten)]
    common: cmd::Common,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker (the default with no arguments)
    ///
    /// Examples:
    ///   strata serve
    ///   strata serve --config server.properties
    ///   strata serve --set listeners=PLAINTEXT://127.0.0.1:19092 --set log.dirs=/tmp/strata
    #[command(verbatim_doc_comment)]
    Serve(ServeArgs),
    /// Format a data directory before the first start, as kafka-storage.sh does.
    #[command(subcommand)]
    Storage(StorageCommand),
    /// Create, list, describe, alter and delete topics.
    #[command(subcommand)]
    Topics(cmd::topics::TopicsCommand),
    Produce(cmd::produce::ProduceArgs),
    Consume(cmd::consume::ConsumeArgs),
    /// List, describe (with lag), reset offsets of and delete consumer groups.
    #[command(subcommand)]
    Groups(cmd::groups::GroupsCommand),
    /// Describe and alter broker and topic configs.
    #[command(subcommand)]
    Configs(cmd::configs::ConfigsCommand),
    /// Describe the cluster.
    #[command(subcommand)]
    Cluster(cmd::cluster::ClusterCommand),
    /// Producer and consumer performance tests (throughput, latency percentiles).
    #[command(subcommand)]
    Perf(cmd::perf::PerfCommand),
    /// List, describe, create, alter and delete SCRAM users.
    #[command(subcommand)]
    Users(cmd::users::UsersCommand),
    /// List, add and remove ACLs (the broker needs authorizer.class.name).
    #[command(subcommand)]
    Acls(cmd::acls::AclsCommand),
    /// Describe and alter client quotas (byte rates, request percentage, mutation rate).
    #[command(subcommand)]
    Quotas(cmd::quotas::QuotasCommand),
}

#[derive(clap::Args, Default)]
struct ServeArgs {
    /// A Kafka-style properties file (key=value lines).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Override one configuration key; repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// A SCRAM user written when the data directory is formatted (the first start), as
    /// kafka-storage.sh format --add-scram: 'SCRAM-SHA-256=[name=alice,password=alice-secret]';
    /// repeatable. Ignored (with a warning) on a directory formatted before.
    #[arg(long = "add-scram", value_name = "CREDENTIAL")]
    add_scram: Vec<String>,
}

#[derive(Subcommand)]
enum StorageCommand {
    /// Format the data directory (log.dirs) of a config as the broker's first start would
    ///
    /// Writes meta.properties and the first metadata records: the cluster id and the
    /// --add-scram users. A directory formatted before is an error unless --ignore-formatted
    /// (then it is skipped); one formatted for another cluster id is always an error.
    ///
    /// Examples:
    ///   strata storage format --config server.properties
    ///   strata storage format --config server.properties --cluster-id "$(strata storage random-uuid)"
    ///   strata storage format --config server.properties \
    ///       --add-scram 'SCRAM-SHA-512=[name=admin,password=admin-secret]'
    #[command(verbatim_doc_comment)]
    Format(FormatArgs),
    /// Print a new cluster id (a random UUID in Kafka's 22-character base64 form)
    RandomUuid,
}

#[derive(clap::Args)]
struct FormatArgs {
    /// The broker's properties file (the one `strata serve --config` will use).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The cluster id (22-character base64 UUID); default: the file's cluster.id, else a new
    /// one. Overrides the file's cluster.id.
    #[arg(long, short = 't', value_name = "ID")]
    cluster_id: Option<String>,
    /// A SCRAM user to create, as 'SCRAM-SHA-256=[name=alice,password=alice-secret]';
    /// repeatable.
    #[arg(long = "add-scram", value_name = "CREDENTIAL")]
    add_scram: Vec<String>,
    /// Skip a directory that is already formatted instead of failing.
    #[arg(long, short = 'g')]
    ignore_formatted: bool,
}

/// `strata storage`: runs on this machine, no broker involved.
fn storage(command: StorageCommand) -> anyhow::Result<()> {
    let args = match command {
        StorageCommand::RandomUuid => {
            println!("{}", strata_broker::format::random_uuid());
            return Ok(());
        }
        StorageCommand::Format(args) => args,
    };
    let config = load_config(&ServeArgs {
        config: Some(args.config),
        set: args
            .cluster_id
            .iter()
            .map(|id| format!("cluster.id={id}"))
            .collect(),
        add_scram: args.add_scram,
    })?;
    match strata_broker::format::format(&config, args.ignore_formatted)? {
        strata_broker::format::Formatted::Formatted { dir, cluster_id } => {
            println!("Formatted {dir} with cluster id {cluster_id}")
        }
        strata_broker::format::Formatted::Skipped { dir, cluster_id } => {
            println!("Skipped {dir}: already formatted with cluster id {cluster_id}")
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Client commands keep stderr for their own messages unless STRATA_LOG asks for more.
    let default_level = match cli.command {
        None | Some(Command::Serve(_)) => "info",
        Some(_) => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STRATA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Some(Command::Serve(args)) => serve(args),
        None => serve(ServeArgs::default()),
        Some(Command::Storage(c)) => storage(c),
        Some(command) => run_client(&cli.common, command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            if let Some(hint) = cmd::hint(&error) {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Runs a client subcommand.
fn run_client(common: &cmd::Common, command: Command) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match command {
            Command::Topics(c) => cmd::topics::run(common, c).await,
            Command::Produce(a) => cmd::produce::run(common, a).await,
            Command::Consume(a) => cmd::consume::run(common, a).await,
            Command::Groups(c) => cmd::groups::run(common, c).await,
            Command::Configs(c) => cmd::configs::run(common, c).await,
            Command::Cluster(c) => cmd::cluster::run(common, c).await,
            Command::Perf(c) => cmd::perf::run(common, c).await,
            Command::Users(c) => cmd::users::run(common, c).await,
            Command::Acls(c) => cmd::acls::run(common, c).await,
            Command::Quotas(c) => cmd::quotas::run(common, c).await,
            Command::Serve(_) | Command::Storage(_) => {
                unreachable!("serve and storage are handled by main")
            }
        }
    })
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
    let (mut config, unknown) = BrokerConfig::from_map(map)?;
    for item in &args.add_scram {
        config.add_scram.push(
            strata_broker::sasl::AddScram::parse(item)
                .map_err(|e| anyhow::anyhow!("--add-scram: {e}"))?,
        );
    }
    if !unknown.is_empty() {
        tracing::warn!(
            keys = unknown.join(","),
            "unknown configuration keys; ignoring them"
        );
    }
    let not_in_effect = config.set_but_not_in_effect();
    if !not_in_effect.is_empty() {
        tracing::warn!(
            keys = not_in_effect.join(","),
            "configuration keys accepted but not in effect yet"
        );
    }
    Ok(config)
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = load_config(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("strata")
        .build()?;
    if !config.roles.broker {
        return runtime.block_on(async move {
            let listeners: Vec<String> = config
                .listeners
                .iter()
                .map(|l| format!("{}://{}:{}", l.name, l.host, l.port))
                .collect();
            let node = strata_broker::controller::ControllerOnlyNode::open(config).await?;
            tracing::info!(
                "strata started controller={} (process.roles=controller: no client listener)",
                listeners.join(",")
            );
            node.serve(shutdown_signal()).await;
            anyhow::Ok(())
        });
    }
    runtime.block_on(async move {
        // Lock the data directory before binding, so a second broker on the same directory
        // is refused for that reason even when its port is taken too.
        let listener_config = config.listeners.clone();
        // Certificates first: a missing or broken keystore stops start-up before recovery.
        let tls = strata_broker::tls::load_listeners(&config)?;
        let broker = tokio::task::block_in_place(|| strata_broker::Broker::open(config))?;
        // The controller listeners are the broker's own (bound while it opened).
        let client_listeners: Vec<_> = listener_config
            .iter()
            .filter(|l| !broker.config.is_controller_listener(&l.name))
            .cloned()
            .collect();
        let listeners = strata_broker::server::BoundListeners::bind(&client_listeners, tls).await?;
        let console = strata_console::bind(&broker.config).await?;
        let kafka: Vec<String> = listener_config
            .iter()
            .filter(|l| !broker.config.is_controller_listener(&l.name))
            .map(|l| format!("{}://{}:{}", l.name, l.host, l.port))
            .collect();
        let console_url = console.as_ref().and_then(|c| c.url());
        let console = console.map(|c| c.serve(broker.clone()));
        tracing::info!(
            "strata started kafka={} console={}",
            kafka.join(","),
            console_url.as_deref().unwrap_or("off")
        );
        strata_broker::server::serve(broker, listeners, shutdown_signal()).await;
        if let Some(console) = console {
            console.shutdown().await;
        }
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
