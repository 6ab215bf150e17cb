//! `strata cluster describe`: one look at the whole cluster. Besides the cluster id, the
//! controller and the brokers it shows the metadata quorum (DescribeQuorum: leader, epoch,
//! high watermark, each voter's log end and lag) and the partitions that need attention
//! (Metadata: offline, under-replicated, under their topic's effective
//! `min.insync.replicas`), so "is the cluster healthy" is one command. A broker that refuses
//! or lacks DescribeQuorum (or DescribeConfigs) costs only that part, with a note.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use strata_client::admin::QuorumInfo;
use strata_client::client::PartitionInfo;

use super::table::{ids, Table};
use super::{print_json, Common};

/// Affected partitions listed per kind in the table; the rest are counted.
const SHOWN: usize = 20;

#[derive(clap::Subcommand, Debug)]
pub enum ClusterCommand {
    /// Show the cluster id, controller, brokers, metadata quorum and partition health
    ///
    /// Examples:
    ///   strata cluster describe
    ///   strata cluster describe --output json
    #[command(verbatim_doc_comment)]
    Describe,
}

/// One partition that needs attention.
struct Unhealthy {
    topic: String,
    partition: PartitionInfo,
    min_isr: Option<i32>,
}

impl Unhealthy {
    fn json(&self) -> Value {
        json!({
            "topic": self.topic,
            "partition": self.partition.id,
            "leader": self.partition.leader,
            "replicas": self.partition.replicas,
            "isr": self.partition.isr,
            "min_isr": self.min_isr,
        })
    }
}

/// The partition health of the cluster, from one Metadata answer and the topics' effective
/// `min.insync.replicas`.
#[derive(Default)]
struct Health {
    topics: usize,
    partitions: usize,
    offline: Vec<Unhealthy>,
    under_replicated: Vec<Unhealthy>,
    under_min_isr: Vec<Unhealthy>,
    /// Why under-min-ISR could not be counted, if it could not.
    min_isr_note: Option<String>,
}

pub async fn run(common: &Common, command: ClusterCommand) -> anyhow::Result<()> {
    let ClusterCommand::Describe = command;
    let client = common.connect().await?;
    let info = client.describe_cluster().await?;
    let quorum = client.describe_quorum().await.map_err(|e| e.to_string());
    let metadata = client.refresh_metadata(None).await?;
    let names: Vec<String> = metadata.topics.keys().cloned().collect();
    let (min_isr, min_isr_note) = match client
        .topics_config_key(&names, "min.insync.replicas")
        .await
    {
        Ok(values) => (
            values
                .into_iter()
                .filter_map(|(t, v)| Some((t, v.parse::<i32>().ok()?)))
                .collect(),
            None,
        ),
        Err(e) => (
            BTreeMap::new(),
            Some(format!("under-min-ISR not counted: {e}")),
        ),
    };
    let mut health = Health {
        topics: metadata.topics.len(),
        min_isr_note,
        ..Health::default()
    };
    for topic in metadata.topics.values() {
        let min = min_isr.get(&topic.name).copied();
        for p in &topic.partitions {
            health.partitions += 1;
            let entry = || Unhealthy {
                topic: topic.name.clone(),
                partition: p.clone(),
                min_isr: min,
            };
            if p.leader < 0 {
                health.offline.push(entry());
            }
            if p.isr.len() < p.replicas.len() {
                health.under_replicated.push(entry());
            }
            if min.is_some_and(|m| (p.isr.len() as i64) < i64::from(m)) {
                health.under_min_isr.push(entry());
            }
        }
    }
    if common.json() {
        let list = |v: &[Unhealthy]| v.iter().map(Unhealthy::json).collect::<Vec<_>>();
        print_json(&json!({
            "cluster_id": info.cluster_id,
            "controller_id": info.controller_id,
            "brokers": info.brokers.iter().map(|b| json!({
                "id": b.id, "host": b.host, "port": b.port, "rack": b.rack,
            })).collect::<Vec<_>>(),
            "quorum": quorum.as_ref().ok().map(quorum_json),
            "quorum_error": quorum.as_ref().err(),
            "partitions": {
                "topics": health.topics,
                "total": health.partitions,
                "offline": list(&health.offline),
                "under_replicated": list(&health.under_replicated),
                "under_min_isr": list(&health.under_min_isr),
                "under_min_isr_error": health.min_isr_note,
            },
        }));
        return Ok(());
    }
    println!(
        "Cluster: {}  Controller: {}",
        info.cluster_id, info.controller_id
    );
    let mut table = Table::new(&["ID", "HOST", "PORT", "RACK"]);
    for b in &info.brokers {
        table.row(vec![
            b.id.to_string(),
            b.host.clone(),
            b.port.to_string(),
            b.rack.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    table.print();
    println!();
    match &quorum {
        Ok(q) => print_quorum(q),
        Err(e) => println!("Metadata quorum: not available ({e})"),
    }
    println!();
    print_health(&health);
    Ok(())
}

fn quorum_json(q: &QuorumInfo) -> Value {
    let replicas = |rs: &[strata_client::admin::QuorumReplica]| {
        rs.iter()
            .map(|r| {
                json!({
                    "id": r.id,
                    "log_end_offset": r.log_end_offset,
                    "lag": r.lag(q.high_watermark),
                    "last_fetch_ms": r.last_fetch_ms,
                    "last_caught_up_ms": r.last_caught_up_ms,
                })
            })
            .collect::<Vec<_>>()
    };
    json!({
        "leader_id": q.leader_id,
        "leader_epoch": q.leader_epoch,
        "high_watermark": q.high_watermark,
        "voters": replicas(&q.voters),
        "observers": replicas(&q.observers),
    })
}

fn print_quorum(q: &QuorumInfo) {
    println!(
        "Metadata quorum: leader {}  epoch {}  high watermark {}",
        q.leader_id, q.leader_epoch, q.high_watermark
    );
    let mut table = Table::new(&["REPLICA", "ROLE", "LOG END OFFSET", "LAG"]);
    for (role, replicas) in [("voter", &q.voters), ("observer", &q.observers)] {
        for r in replicas {
            let role = if role == "voter" && r.id == q.leader_id {
                "leader"
            } else {
                role
            };
            table.row(vec![
                r.id.to_string(),
                role.to_string(),
                r.log_end_offset.to_string(),
                r.lag(q.high_watermark).to_string(),
            ]);
        }
    }
    table.print();
}

fn print_health(h: &Health) {
    println!(
        "Partitions: {} in {} topics  offline: {}  under-replicated: {}  under min ISR: {}",
        h.partitions,
        h.topics,
        h.offline.len(),
        h.under_replicated.len(),
        if h.min_isr_note.is_some() {
            "?".to_string()
        } else {
            h.under_min_isr.len().to_string()
        },
    );
    if let Some(note) = &h.min_isr_note {
        println!("note: {note}");
    }
    for (title, list) in [
        ("Offline partitions", &h.offline),
        ("Under-replicated partitions", &h.under_replicated),
        ("Under-min-ISR partitions", &h.under_min_isr),
    ] {
        if list.is_empty() {
            continue;
        }
        println!();
        println!("{title}:");
        let mut table = Table::new(&["TOPIC", "PARTITION", "LEADER", "REPLICAS", "ISR", "MIN ISR"]);
        for u in list.iter().take(SHOWN) {
            table.row(vec![
                u.topic.clone(),
                u.partition.id.to_string(),
                u.partition.leader.to_string(),
                ids(&u.partition.replicas),
                ids(&u.partition.isr),
                u.min_isr.map_or_else(|| "-".into(), |m| m.to_string()),
            ]);
        }
        table.print();
        if list.len() > SHOWN {
            println!("... and {} more", list.len() - SHOWN);
        }
    }
}
