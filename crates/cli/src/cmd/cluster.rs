//! `strata cluster describe`.

use serde_json::json;

use super::table::Table;
use super::{print_json, Common};

#[derive(clap::Subcommand, Debug)]
pub enum ClusterCommand {
    /// Show the cluster id, the controller and the brokers
    ///
    /// Examples:
    ///   strata cluster describe
    ///   strata cluster describe --output json
    #[command(verbatim_doc_comment)]
    Describe,
}

pub async fn run(common: &Common, command: ClusterCommand) -> anyhow::Result<()> {
    let ClusterCommand::Describe = command;
    let client = common.connect().await?;
    let info = client.describe_cluster().await?;
    if common.json() {
        print_json(&json!({
            "cluster_id": info.cluster_id,
            "controller_id": info.controller_id,
            "brokers": info.brokers.iter().map(|b| json!({
                "id": b.id, "host": b.host, "port": b.port, "rack": b.rack,
            })).collect::<Vec<_>>(),
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
    Ok(())
}
