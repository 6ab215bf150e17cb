//! `strata topics`: create, list, describe, alter and delete topics.

use std::collections::BTreeMap;

use anyhow::Context;
use serde_json::json;
use strata_client::{Client, ConfigOp, NewTopic, OffsetSpec, ResourceType};

use super::table::{ids, Table};
use super::{key_value, print_json, Common};

#[derive(clap::Subcommand, Debug)]
pub enum TopicsCommand {
    /// Create topics
    ///
    /// Examples:
    ///   strata topics create orders --partitions 6
    ///   strata topics create logs --config cleanup.policy=compact --config retention.ms=86400000
    #[command(verbatim_doc_comment)]
    Create(CreateArgs),
    /// List topics
    ///
    /// Examples:
    ///   strata topics list
    ///   strata topics list --output json
    #[command(verbatim_doc_comment)]
    List(ListArgs),
    /// Show partitions (leader, replicas, ISR, log start and end offsets, size on disk)
    ///
    /// Examples:
    ///   strata topics describe orders
    ///   strata topics describe            (every topic)
    #[command(verbatim_doc_comment)]
    Describe(DescribeArgs),
    /// Add partitions or change configs
    ///
    /// Examples:
    ///   strata topics alter orders --partitions 12
    ///   strata topics alter orders --config retention.ms=3600000 --delete-config cleanup.policy
    #[command(verbatim_doc_comment)]
    Alter(AlterArgs),
    /// Delete topics
    ///
    /// Examples:
    ///   strata topics delete orders
    ///   strata topics delete a b c --if-exists
    #[command(verbatim_doc_comment)]
    Delete(DeleteArgs),
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// Topic names.
    #[arg(required = true)]
    topics: Vec<String>,
    /// Partition count (the broker's num.partitions if left out).
    #[arg(long, short = 'p')]
    partitions: Option<i32>,
    /// Replication factor (the broker's default if left out).
    #[arg(long, short = 'r')]
    replication_factor: Option<i16>,
    /// A topic config, KEY=VALUE; repeatable.
    #[arg(long, short = 'c', value_name = "KEY=VALUE")]
    config: Vec<String>,
    /// Succeed when a topic already exists.
    #[arg(long)]
    if_not_exists: bool,
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Also list internal topics (such as __consumer_offsets).
    #[arg(long)]
    internal: bool,
}

#[derive(clap::Args, Debug)]
pub struct DescribeArgs {
    /// Topic names (all topics if none).
    topics: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct AlterArgs {
    topic: String,
    /// New (higher) partition count.
    #[arg(long, short = 'p')]
    partitions: Option<i32>,
    /// Set a topic config, KEY=VALUE; repeatable.
    #[arg(long, short = 'c', value_name = "KEY=VALUE")]
    config: Vec<String>,
    /// Remove a topic config override (back to the default); repeatable.
    #[arg(long, value_name = "KEY")]
    delete_config: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    #[arg(required = true)]
    topics: Vec<String>,
    /// Succeed when a topic does not exist.
    #[arg(long)]
    if_exists: bool,
}

pub async fn run(common: &Common, command: TopicsCommand) -> anyhow::Result<()> {
    let client = common.connect().await?;
    match command {
        TopicsCommand::Create(a) => create(common, &client, a).await,
        TopicsCommand::List(a) => list(common, &client, a).await,
        TopicsCommand::Describe(a) => describe(common, &client, a).await,
        TopicsCommand::Alter(a) => alter(common, &client, a).await,
        TopicsCommand::Delete(a) => delete(common, &client, a).await,
    }
}

async fn create(common: &Common, client: &Client, a: CreateArgs) -> anyhow::Result<()> {
    let configs = a
        .config
        .iter()
        .map(|c| key_value(c, "--config"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(p) = a.partitions.filter(|p| *p < 1) {
        anyhow::bail!("--partitions must be at least 1, got {p}");
    }
    let topics: Vec<NewTopic> = a
        .topics
        .iter()
        .map(|t| NewTopic {
            name: t.clone(),
            partitions: a.partitions.unwrap_or(-1),
            replication_factor: a.replication_factor.unwrap_or(-1),
            configs: configs.clone(),
        })
        .collect();
    let results = client.create_topics(&topics, false).await?;
    super::report(common, "topic", "created", results, |e| {
        a.if_not_exists && e.code() == Some(strata_client::ErrorCode::TopicAlreadyExists)
    })
}

async fn list(common: &Common, client: &Client, a: ListArgs) -> anyhow::Result<()> {
    let metadata = client.refresh_metadata(None).await?;
    let topics: Vec<_> = metadata
        .topics
        .values()
        .filter(|t| a.internal || !t.internal)
        .collect();
    if common.json() {
        super::print_json_rows(topics.iter().map(|t| {
            json!({
                "name": t.name,
                "id": t.id.to_string(),
                "partitions": t.partitions.len(),
                "replication_factor": replication(t),
                "internal": t.internal,
            })
        }));
        return Ok(());
    }
    let mut table = Table::new(&["TOPIC", "PARTITIONS", "REPLICATION-FACTOR"]);
    for t in topics {
        table.row(vec![
            t.name.clone(),
            t.partitions.len().to_string(),
            replication(t).to_string(),
        ]);
    }
    table.print();
    Ok(())
}

async fn describe(common: &Common, client: &Client, a: DescribeArgs) -> anyhow::Result<()> {
    let metadata = if a.topics.is_empty() {
        client.refresh_metadata(None).await?
    } else {
        client.refresh_metadata(Some(&a.topics)).await?
    };
    let mut topics = Vec::new();
    for name in &a.topics {
        metadata.topic(name)?;
    }
    for t in metadata.topics.values() {
        if a.topics.is_empty() && t.internal {
            continue;
        }
        topics.push(t.clone());
    }
    let tps: Vec<(String, i32)> = topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.clone(), p.id)))
        .collect();
    let starts = client.list_offsets(&tps, OffsetSpec::Earliest).await?;
    let ends = client.list_offsets(&tps, OffsetSpec::Latest).await?;
    let names: Vec<String> = topics.iter().map(|t| t.name.clone()).collect();
    let sizes = client
        .log_dir_sizes(Some(&names))
        .await
        .context("reading partition sizes (DescribeLogDirs)")?;
    let mut configs = BTreeMap::new();
    for t in &topics {
        let entries = client
            .describe_configs(ResourceType::Topic, &t.name, None)
            .await?;
        let overrides: BTreeMap<String, Option<String>> = entries
            .into_iter()
            .filter(|e| e.source == 1)
            .map(|e| (e.name, e.value))
            .collect();
        configs.insert(t.name.clone(), overrides);
    }
    let offset =
        |m: &BTreeMap<(String, i32), i64>, t: &str, p: i32| m.get(&(t.to_string(), p)).copied();
    if common.json() {
        print_json(&json!(topics
            .iter()
            .map(|t| json!({
                "name": t.name,
                "id": t.id.to_string(),
                "configs": configs.get(&t.name),
                "partitions": t.partitions.iter().map(|p| json!({
                    "partition": p.id,
                    "leader": p.leader,
                    "replicas": p.replicas,
                    "isr": p.isr,
                    "log_start_offset": offset(&starts, &t.name, p.id),
                    "log_end_offset": offset(&ends, &t.name, p.id),
                    "size_bytes": offset(&sizes, &t.name, p.id),
                })).collect::<Vec<_>>(),
            }))
            .collect::<Vec<_>>()));
        return Ok(());
    }
    for (i, t) in topics.iter().enumerate() {
        if i > 0 {
            println!();
        }
        let overrides = configs
            .get(&t.name)
            .map(|c| {
                c.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_deref().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        println!(
            "Topic: {}  Id: {}  Partitions: {}  Replication: {}  Configs: {}",
            t.name,
            t.id,
            t.partitions.len(),
            replication(t),
            if overrides.is_empty() {
                "-"
            } else {
                &overrides
            }
        );
        let mut table = Table::new(&[
            "PARTITION",
            "LEADER",
            "REPLICAS",
            "ISR",
            "LOG-START",
            "LOG-END",
            "SIZE",
        ]);
        let cell = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
        for p in &t.partitions {
            table.row(vec![
                p.id.to_string(),
                p.leader.to_string(),
                ids(&p.replicas),
                ids(&p.isr),
                cell(offset(&starts, &t.name, p.id)),
                cell(offset(&ends, &t.name, p.id)),
                cell(offset(&sizes, &t.name, p.id)),
            ]);
        }
        table.print();
    }
    Ok(())
}

async fn alter(common: &Common, client: &Client, a: AlterArgs) -> anyhow::Result<()> {
    if a.partitions.is_none() && a.config.is_empty() && a.delete_config.is_empty() {
        anyhow::bail!("nothing to change: give --partitions, --config or --delete-config");
    }
    let topic = client.fresh_topic(&a.topic).await?;
    let mut changes = Vec::new();
    if let Some(p) = a.partitions {
        let current = topic.partitions.len() as i32;
        if p <= current {
            anyhow::bail!(
                "topic {} has {current} partitions; --partitions can only raise the count",
                a.topic
            );
        }
        client.create_partitions(&a.topic, p).await?;
        changes.push(format!("partitions {current} -> {p}"));
    }
    let mut ops = Vec::new();
    for c in &a.config {
        let (k, v) = key_value(c, "--config")?;
        changes.push(format!("set {k}={v}"));
        ops.push(ConfigOp::Set(k, v));
    }
    for k in &a.delete_config {
        changes.push(format!("deleted {k}"));
        ops.push(ConfigOp::Delete(k.clone()));
    }
    if !ops.is_empty() {
        client
            .alter_configs(ResourceType::Topic, &a.topic, &ops)
            .await?;
    }
    if common.json() {
        print_json(&json!({"topic": a.topic, "changes": changes}));
    } else {
        println!("altered topic {}: {}", a.topic, changes.join(", "));
    }
    Ok(())
}

async fn delete(common: &Common, client: &Client, a: DeleteArgs) -> anyhow::Result<()> {
    let results = client.delete_topics(&a.topics).await?;
    super::report(common, "topic", "deleted", results, |e| {
        a.if_exists && e.code() == Some(strata_client::ErrorCode::UnknownTopicOrPartition)
    })
}

/// The replication factor (replicas of the first partition).
fn replication(t: &strata_client::client::TopicInfo) -> usize {
    t.partitions.first().map_or(0, |p| p.replicas.len())
}
