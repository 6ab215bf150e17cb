//! `strata configs`: describe and alter broker and topic configs.

use serde_json::json;
use strata_client::{ConfigOp, ResourceType};

use super::table::Table;
use super::{key_value, print_json, Common};

#[derive(clap::Subcommand, Debug)]
pub enum ConfigsCommand {
    /// Show configs (overrides only, unless --all)
    ///
    /// Examples:
    ///   strata configs describe --topic orders
    ///   strata configs describe --broker 1 --all
    #[command(verbatim_doc_comment)]
    Describe(DescribeArgs),
    /// Set or remove configs
    ///
    /// Examples:
    ///   strata configs alter --topic orders --set retention.ms=3600000
    ///   strata configs alter --topic orders --delete retention.ms
    ///   strata configs alter --broker 1 --set log.retention.ms=604800000
    #[command(verbatim_doc_comment)]
    Alter(AlterArgs),
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("resource").required(true).args(["topic", "broker"])))]
pub struct Resource {
    /// A topic's configs.
    #[arg(long)]
    topic: Option<String>,
    /// A broker's configs (its node id).
    #[arg(long)]
    broker: Option<i32>,
}

impl Resource {
    fn get(&self) -> (ResourceType, String) {
        match (&self.topic, self.broker) {
            (Some(t), _) => (ResourceType::Topic, t.clone()),
            (None, Some(b)) => (ResourceType::Broker, b.to_string()),
            (None, None) => unreachable!("clap requires one"),
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct DescribeArgs {
    #[command(flatten)]
    resource: Resource,
    /// Every config, defaults included.
    #[arg(long)]
    all: bool,
}

#[derive(clap::Args, Debug)]
pub struct AlterArgs {
    #[command(flatten)]
    resource: Resource,
    /// KEY=VALUE to set; repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// KEY to remove (back to the default); repeatable.
    #[arg(long, value_name = "KEY")]
    delete: Vec<String>,
}

pub async fn run(common: &Common, command: ConfigsCommand) -> anyhow::Result<()> {
    let client = common.connect().await?;
    match command {
        ConfigsCommand::Describe(a) => {
            let (kind, name) = a.resource.get();
            if kind == ResourceType::Topic {
                client.fresh_topic(&name).await?;
            }
            let entries: Vec<_> = client
                .describe_configs(kind, &name, None)
                .await?
                .into_iter()
                .filter(|e| a.all || e.source_name() != "DEFAULT_CONFIG")
                .collect();
            let shown = |e: &strata_client::admin::ConfigEntry| {
                if e.sensitive {
                    Some("(sensitive)".to_string())
                } else {
                    e.value.clone()
                }
            };
            if common.json() {
                print_json(&json!(entries
                    .iter()
                    .map(|e| json!({
                        "name": e.name,
                        "value": shown(e),
                        "source": e.source_name(),
                        "read_only": e.read_only,
                        "sensitive": e.sensitive,
                    }))
                    .collect::<Vec<_>>()));
                return Ok(());
            }
            let mut table = Table::new(&["NAME", "VALUE", "SOURCE"]);
            for e in &entries {
                table.row(vec![
                    e.name.clone(),
                    shown(e).unwrap_or_else(|| "null".into()),
                    e.source_name().into(),
                ]);
            }
            table.print();
            Ok(())
        }
        ConfigsCommand::Alter(a) => {
            let (kind, name) = a.resource.get();
            let mut ops = Vec::new();
            for s in &a.set {
                let (k, v) = key_value(s, "--set")?;
                ops.push(ConfigOp::Set(k, v));
            }
            for k in &a.delete {
                ops.push(ConfigOp::Delete(k.clone()));
            }
            if ops.is_empty() {
                anyhow::bail!("nothing to change: give --set KEY=VALUE or --delete KEY");
            }
            if kind == ResourceType::Topic {
                client.fresh_topic(&name).await?;
            }
            client.alter_configs(kind, &name, &ops).await?;
            let what = match kind {
                ResourceType::Topic => format!("topic {name}"),
                ResourceType::Broker => format!("broker {name}"),
            };
            if common.json() {
                print_json(&json!({"resource": what, "set": a.set, "deleted": a.delete}));
            } else {
                println!("altered configs of {what}");
            }
            Ok(())
        }
    }
}
