//! `strata quotas`: client quotas (DescribeClientQuotas, AlterClientQuotas), as
//! `kafka-configs.sh --entity-type users|clients` describes and alters them.
//!
//! An entity is a user and/or a client id, each a name or the default. `describe` with no
//! entity flag lists every quota; with some, it sends Kafka's strict filter (an entity matches
//! when it has exactly the named components): `--user alice` is alice's own quota, not
//! alice+client-id ones, and `--user` without a name is every user-only entity.

use std::collections::BTreeMap;

use serde_json::json;
use strata_client::quotas::{CLIENT_ID, USER};
use strata_client::{QuotaAlteration, QuotaEntity, QuotaMatch};

use super::table::Table;
use super::{print_json, print_json_rows, Common};

/// The keys Kafka accepts for user and client-id entities.
const KEYS: &[&str] = &[
    "producer_byte_rate",
    "consumer_byte_rate",
    "request_percentage",
    "controller_mutation_rate",
];

#[derive(clap::Subcommand, Debug)]
pub enum QuotasCommand {
    /// Show client quotas (all, or those of the entities named)
    ///
    /// Examples:
    ///   strata quotas describe
    ///   strata quotas describe --user alice
    ///   strata quotas describe --user alice --client-id app
    ///   strata quotas describe --user-default --client-id       # default user, any client id
    ///   strata quotas describe --client-id -o json              # every client-id-only quota
    #[command(verbatim_doc_comment)]
    Describe(EntityArgs),
    /// Set or remove quota keys of one entity
    ///
    /// Examples:
    ///   strata quotas alter --user alice --add producer_byte_rate=1048576,consumer_byte_rate=2097152
    ///   strata quotas alter --client-id app --add request_percentage=50
    ///   strata quotas alter --user-default --client-id-default --add producer_byte_rate=524288
    ///   strata quotas alter --user alice --client-id app --delete request_percentage
    #[command(verbatim_doc_comment)]
    Alter(AlterArgs),
}

/// The entity a command is about.
#[derive(clap::Args, Debug)]
pub struct EntityArgs {
    /// A user (the principal's name, `alice` for User:alice). In `describe`, without a name:
    /// any user.
    #[arg(long, value_name = "USER", conflicts_with = "user_default")]
    user: Option<Option<String>>,
    /// The default user quota (every user without one of its own).
    #[arg(long, alias = "user-defaults")]
    user_default: bool,
    /// A client id. In `describe`, without a name: any client id.
    #[arg(long, value_name = "CLIENT_ID", conflicts_with = "client_id_default")]
    client_id: Option<Option<String>>,
    /// The default client-id quota (every client id without one of its own).
    #[arg(long, alias = "client-defaults")]
    client_id_default: bool,
}

#[derive(clap::Args, Debug)]
pub struct AlterArgs {
    #[command(flatten)]
    entity: EntityArgs,
    /// Keys to set, KEY=VALUE[,KEY=VALUE...] (repeatable): producer_byte_rate and
    /// consumer_byte_rate (bytes/s), request_percentage (% of one thread's time),
    /// controller_mutation_rate (partitions/s).
    #[arg(long, alias = "add-config", value_name = "KEY=VALUE,...")]
    add: Vec<String>,
    /// Keys to remove, KEY[,KEY...] (repeatable).
    #[arg(long, alias = "delete-config", value_name = "KEY,...")]
    delete: Vec<String>,
}

impl EntityArgs {
    /// The describe filter: per entity type named, what it matches.
    fn filter(&self) -> anyhow::Result<Vec<(String, QuotaMatch)>> {
        let mut out = Vec::new();
        let component = |name: &Option<Option<String>>, default: bool, flag: &str| {
            Ok(match (name, default) {
                (_, true) => Some(QuotaMatch::Default),
                (Some(Some(n)), false) if n.is_empty() => {
                    anyhow::bail!("--{flag} needs a name; leave the name out to match any")
                }
                (Some(Some(n)), false) => Some(QuotaMatch::Exact(n.clone())),
                (Some(None), false) => Some(QuotaMatch::Any),
                (None, false) => None,
            })
        };
        if let Some(m) = component(&self.user, self.user_default, "user")? {
            out.push((USER.to_string(), m));
        }
        if let Some(m) = component(&self.client_id, self.client_id_default, "client-id")? {
            out.push((CLIENT_ID.to_string(), m));
        }
        Ok(out)
    }

    /// The one entity an alteration changes.
    fn entity(&self) -> anyhow::Result<QuotaEntity> {
        let mut entity = QuotaEntity::new();
        let component = |name: &Option<Option<String>>, default: bool, flag: &str| {
            Ok(match (name, default) {
                (_, true) => Some(None),
                (Some(Some(n)), false) if !n.is_empty() => Some(Some(n.clone())),
                (Some(_), false) => {
                    anyhow::bail!("--{flag} needs a name here (or use --{flag}-default)")
                }
                (None, false) => None,
            })
        };
        if let Some(n) = component(&self.user, self.user_default, "user")? {
            entity.insert(USER.to_string(), n);
        }
        if let Some(n) = component(&self.client_id, self.client_id_default, "client-id")? {
            entity.insert(CLIENT_ID.to_string(), n);
        }
        if entity.is_empty() {
            anyhow::bail!(
                "name the entity: --user NAME or --user-default, and/or --client-id NAME or --client-id-default"
            );
        }
        Ok(entity)
    }
}

fn check_key(key: &str) -> anyhow::Result<()> {
    if !KEYS.contains(&key) {
        anyhow::bail!("unknown quota key {key:?}; use one of: {}", KEYS.join(", "));
    }
    Ok(())
}

impl AlterArgs {
    /// The keys to set and remove, checked.
    fn ops(&self) -> anyhow::Result<Vec<(String, Option<f64>)>> {
        let mut ops: BTreeMap<String, Option<f64>> = BTreeMap::new();
        for item in self.add.iter().flat_map(|a| a.split(',')) {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let (key, value) = super::key_value(item, "--add")?;
            check_key(&key)?;
            let number: f64 = value
                .trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("--add {key}={value}: the value must be a number"))?;
            if !number.is_finite() || number < 0.0 {
                anyhow::bail!("--add {key}={value}: the value must be a number of 0 or more");
            }
            if ops.insert(key.clone(), Some(number)).is_some() {
                anyhow::bail!("{key} is given twice");
            }
        }
        for key in self.delete.iter().flat_map(|d| d.split(',')) {
            let key = key.trim();
            if key.is_empty() {
                continue;
            }
            check_key(key)?;
            if ops.insert(key.to_string(), None).is_some() {
                anyhow::bail!("{key} is both set and deleted (or deleted twice)");
            }
        }
        if ops.is_empty() {
            anyhow::bail!("nothing to change: give --add KEY=VALUE or --delete KEY");
        }
        Ok(ops.into_iter().collect())
    }
}

/// A quota value as people write it: whole numbers without a fraction.
fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

/// `user=alice,client-id=<default>`.
fn entity_text(entity: &QuotaEntity) -> String {
    [USER, CLIENT_ID]
        .into_iter()
        .filter_map(|t| {
            let name = entity.get(t)?;
            Some(format!("{t}={}", name.as_deref().unwrap_or("<default>")))
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn component_cell(entity: &QuotaEntity, entity_type: &str) -> String {
    match entity.get(entity_type) {
        None => "-".to_string(),
        Some(None) => "<default>".to_string(),
        Some(Some(name)) => name.clone(),
    }
}

fn values_text(values: &BTreeMap<String, f64>) -> String {
    values
        .iter()
        .map(|(k, v)| format!("{k}={}", number(*v)))
        .collect::<Vec<_>>()
        .join(",")
}

pub async fn run(common: &Common, command: QuotasCommand) -> anyhow::Result<()> {
    match command {
        QuotasCommand::Describe(a) => {
            let filter = a.filter()?;
            let client = common.connect().await?;
            // No entity named: every quota; else Kafka's strict filter, as kafka-configs.sh.
            let strict = !filter.is_empty();
            let quotas = client.describe_client_quotas(&filter, strict).await?;
            if common.json() {
                print_json_rows(
                    quotas
                        .iter()
                        .map(|(entity, values)| json!({"entity": entity, "quotas": values})),
                );
                return Ok(());
            }
            let mut table = Table::new(&["USER", "CLIENT-ID", "QUOTAS"]);
            for (entity, values) in &quotas {
                table.row(vec![
                    component_cell(entity, USER),
                    component_cell(entity, CLIENT_ID),
                    values_text(values),
                ]);
            }
            table.print();
            Ok(())
        }
        QuotasCommand::Alter(a) => {
            let entity = a.entity.entity()?;
            let ops = a.ops()?;
            let client = common.connect().await?;
            let alteration = QuotaAlteration {
                entity: entity.clone(),
                ops: ops.clone(),
            };
            for result in client.alter_client_quotas(&[alteration], false).await? {
                result.map_err(|e| anyhow::anyhow!("{}: {e}", entity_text(&entity)))?;
            }
            let set: BTreeMap<String, f64> = ops
                .iter()
                .filter_map(|(k, v)| v.map(|v| (k.clone(), v)))
                .collect();
            let deleted: Vec<&str> = ops
                .iter()
                .filter(|(_, v)| v.is_none())
                .map(|(k, _)| k.as_str())
                .collect();
            if common.json() {
                print_json(&json!({"entity": entity, "set": set, "deleted": deleted}));
            } else {
                let mut changes = Vec::new();
                if !set.is_empty() {
                    changes.push(format!("set {}", values_text(&set)));
                }
                if !deleted.is_empty() {
                    changes.push(format!("deleted {}", deleted.join(",")));
                }
                println!(
                    "altered the quotas of {}: {}",
                    entity_text(&entity),
                    changes.join("; ")
                );
            }
            Ok(())
        }
    }
}
