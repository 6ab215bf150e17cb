//! The client subcommands: topics, produce, consume, groups, configs, cluster, perf, users,
//! acls and quotas.

pub mod acls;
pub mod cluster;
pub mod configs;
pub mod consume;
pub mod groups;
pub mod lag;
pub mod perf;
pub mod produce;
pub mod quotas;
pub mod table;
pub mod topics;
pub mod users;

use std::time::Duration;

use strata_client::ErrorCode as ResponseError;
use strata_client::{Client, ClientConfig};

/// Options every client subcommand takes.
#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// Broker address(es) to bootstrap from, host:port[,host:port...].
    #[arg(
        long,
        short = 'b',
        global = true,
        env = "STRATA_BOOTSTRAP_SERVER",
        default_value = "localhost:9092",
        value_name = "HOST:PORT"
    )]
    pub bootstrap_server: String,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// How long to wait for each broker answer, in milliseconds.
    #[arg(long, global = true, default_value_t = 30_000, value_name = "MS")]
    pub request_timeout_ms: u64,
    /// Kafka client properties: security.protocol, sasl.mechanism, sasl.username and
    /// sasl.password (or sasl.jaas.config), ssl.ca.location.
    #[arg(
        long,
        global = true,
        env = "STRATA_COMMAND_CONFIG",
        value_name = "FILE"
    )]
    pub command_config: Option<std::path::PathBuf>,
}

/// How results are printed.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// JSON for programs.
    Json,
}

impl Common {
    pub fn json(&self) -> bool {
        self.output == Output::Json
    }

    /// Connects to the cluster.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        let mut config = ClientConfig::new(&self.bootstrap_server);
        config.client_id = "strata-cli".into();
        config.request_timeout = Duration::from_millis(self.request_timeout_ms);
        config.connect_timeout = Duration::from_millis(self.request_timeout_ms.min(5_000));
        config.retries = 3;
        config.security = self.security()?;
        Ok(Client::connect(config).await?)
    }

    /// TLS and SASL from `--command-config`.
    pub fn security(&self) -> anyhow::Result<strata_client::Security> {
        let Some(path) = &self.command_config else {
            return Ok(Default::default());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read --command-config {}: {e}", path.display()))?;
        let props = strata_broker::BrokerConfig::parse_properties(&text)
            .map_err(|e| anyhow::anyhow!("--command-config {}: {e}", path.display()))?;
        strata_client::Security::from_properties(&props)
            .map_err(|e| anyhow::anyhow!("--command-config {}: {e}", path.display()))
    }
}

/// The topic a producing command writes to. Like Kafka's console producer and perf test, it
/// asks the broker to create a missing topic (Metadata with allow_auto_topic_creation), which
/// the broker does with its defaults when `auto.create.topics.enable` is true; the creation is
/// reported on stderr so that a typo in a topic name does not go unnoticed.
pub async fn topic_for_producing(
    client: &Client,
    topic: &str,
) -> anyhow::Result<strata_client::client::TopicInfo> {
    match client.topic_or_auto_create(topic).await {
        Ok((info, created)) => {
            if created {
                eprintln!(
                    "topic {topic} did not exist; the broker created it with {} partition(s) (auto.create.topics.enable)",
                    info.partitions.len()
                );
            }
            Ok(info)
        }
        Err(e) if e.code() == Some(ResponseError::UnknownTopicOrPartition) => anyhow::bail!(
            "topic {topic:?} does not exist and the broker does not create topics on demand (auto.create.topics.enable=false); create it with `strata topics create {topic}`"
        ),
        Err(e) => Err(e.into()),
    }
}

/// Prints a JSON value on stdout.
pub fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON values serialize")
    );
}

/// Prints JSON values as one JSON array on stdout.
pub fn print_json_rows(rows: impl Iterator<Item = serde_json::Value>) {
    print_json(&serde_json::Value::Array(rows.collect()));
}

/// Splits `KEY=VALUE`.
pub fn key_value(item: &str, what: &str) -> anyhow::Result<(String, String)> {
    let (k, v) = item
        .split_once('=')
        .ok_or_else(|| anyhow::anyhow!("{what} expects KEY=VALUE, got {item:?}"))?;
    if k.trim().is_empty() {
        anyhow::bail!("{what} expects KEY=VALUE, got {item:?} (the key is empty)");
    }
    Ok((k.trim().to_string(), v.to_string()))
}

/// What to do about a client error, where there is something to say.
pub fn hint(error: &anyhow::Error) -> Option<&'static str> {
    use strata_client::ErrorCode as C;
    let e = error.downcast_ref::<strata_client::Error>()?;
    Some(match e.code()? {
        C::UnknownTopicOrPartition => {
            "list the topics with `strata topics list`, or create it with `strata topics create`"
        }
        C::TopicAlreadyExists => "pass --if-not-exists to accept an existing topic",
        C::GroupIdNotFound => "list the groups with `strata groups list`",
        C::NonEmptyGroup => "stop the group's consumers first, then try again",
        C::InvalidConfig => "check the config name and value with `strata configs describe --all`",
        C::SecurityDisabled => {
            "the broker has no authorizer: set authorizer.class.name (see docs/security.md)"
        }
        C::ClusterAuthorizationFailed => {
            "this principal may not do that on the cluster; ACLs are managed by super.users or principals allowed ALTER on the cluster"
        }
        _ => return None,
    })
}

/// Prints per-item results ("deleted topic x"; JSON rows with --output json) and fails if any
/// failed, unless `ignore` accepts its error.
pub fn report(
    common: &Common,
    kind: &str,
    verb: &str,
    results: Vec<(String, strata_client::Result<()>)>,
    ignore: impl Fn(&strata_client::Error) -> bool,
) -> anyhow::Result<()> {
    let mut failures = Vec::new();
    let mut rows = Vec::new();
    for (name, result) in results {
        match result {
            Ok(()) => {
                if !common.json() {
                    println!("{verb} {kind} {name}");
                }
                rows.push(serde_json::json!({kind: name, "result": verb}));
            }
            Err(e) if ignore(&e) => {
                rows.push(serde_json::json!({kind: name, "result": "unchanged"}));
            }
            Err(e) => {
                rows.push(serde_json::json!({kind: name, "error": e.to_string()}));
                failures.push(e);
            }
        }
    }
    if common.json() {
        print_json(&serde_json::json!(rows));
    }
    first_of(failures)
}

/// Fails with the only error, or with all of them listed.
pub fn first_of(mut failures: Vec<strata_client::Error>) -> anyhow::Result<()> {
    match failures.len() {
        0 => Ok(()),
        1 => Err(failures.remove(0).into()),
        _ => anyhow::bail!(
            "{}",
            failures
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}
