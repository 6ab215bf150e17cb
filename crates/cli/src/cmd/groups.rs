//! `strata groups`: list, describe (with lag), reset offsets and delete consumer groups.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;
use strata_client::{Client, ErrorCode, OffsetSpec, Tp};

use super::table::Table;
use super::{print_json, Common};

#[derive(clap::Subcommand, Debug)]
pub enum GroupsCommand {
    /// List groups
    ///
    /// Examples:
    ///   strata groups list
    #[command(verbatim_doc_comment)]
    List,
    /// Show per partition the committed offset, the end offset, the lag and the owner
    ///
    /// Examples:
    ///   strata groups describe billing
    ///   strata groups describe billing --output json
    #[command(verbatim_doc_comment)]
    Describe(DescribeArgs),
    /// Move a group's committed offsets (a dry run unless --execute; the group must be empty)
    ///
    /// Examples:
    ///   strata groups reset-offsets billing --topic orders --to-earliest
    ///   strata groups reset-offsets billing --topic orders:0,1 --to-offset 100 --execute
    ///   strata groups reset-offsets billing --all-topics --shift-by -10 --execute
    ///   strata groups reset-offsets billing --topic orders --to-datetime 2026-01-31T12:00:00Z
    #[command(verbatim_doc_comment)]
    ResetOffsets(ResetArgs),
    /// Delete groups (they must have no active members)
    ///
    /// Examples:
    ///   strata groups delete billing
    #[command(verbatim_doc_comment)]
    Delete(DeleteArgs),
    /// Lag status of groups, judged over their recent commits (OK, WARN, ERR; per partition
    /// also STOP, STALL, REWIND), from the broker's console
    ///
    /// Examples:
    ///   strata groups lag
    ///   strata groups lag billing --output json
    ///   strata groups lag --fail-on ERR        # exit 3 when a group is in error
    ///   strata groups lag --console http://10.0.0.7:8080/
    #[command(verbatim_doc_comment)]
    Lag(LagArgs),
}

#[derive(clap::Args, Debug)]
pub struct LagArgs {
    /// Groups to show per partition; none: every group, one line each.
    pub groups: Vec<String>,
    /// The broker's console URL; found through the broker's console.listener when absent.
    #[arg(long, value_name = "URL")]
    pub console: Option<String>,
    /// Exit with status 3 when a shown group's status is at least this.
    #[arg(long, value_name = "STATUS", value_parser = ["WARN", "ERR"])]
    pub fail_on: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct DescribeArgs {
    #[arg(required = true)]
    groups: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    #[arg(required = true)]
    groups: Vec<String>,
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("target").required(true).args(
    ["to_earliest", "to_latest", "to_offset", "to_timestamp", "to_datetime", "shift_by"])))]
#[command(group(clap::ArgGroup::new("scope").required(true).args(["topic", "all_topics"])))]
pub struct ResetArgs {
    group: String,
    /// TOPIC or TOPIC:P1,P2 to reset; repeatable.
    #[arg(long, short = 't')]
    topic: Vec<String>,
    /// Every topic the group has committed offsets for.
    #[arg(long)]
    all_topics: bool,
    #[arg(long)]
    to_earliest: bool,
    #[arg(long)]
    to_latest: bool,
    #[arg(long, value_name = "OFFSET")]
    to_offset: Option<i64>,
    /// Milliseconds since the epoch.
    #[arg(long, value_name = "MS")]
    to_timestamp: Option<i64>,
    /// An ISO-8601 UTC time, e.g. 2026-01-31T12:00:00Z.
    #[arg(long, value_name = "DATETIME")]
    to_datetime: Option<String>,
    /// Move the committed offset by N (negative moves back).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    shift_by: Option<i64>,
    /// Commit the new offsets (without it, only show them).
    #[arg(long)]
    execute: bool,
}

pub async fn run(common: &Common, command: GroupsCommand) -> anyhow::Result<()> {
    let client = common.connect().await?;
    match command {
        GroupsCommand::List => list(common, &client).await,
        GroupsCommand::Describe(a) => {
            let mut all = Vec::new();
            for (i, g) in a.groups.iter().enumerate() {
                if i > 0 && !common.json() {
                    println!();
                }
                all.push(describe(common, &client, g).await?);
            }
            if common.json() {
                print_json(&json!(all));
            }
            Ok(())
        }
        GroupsCommand::ResetOffsets(a) => reset(common, &client, a).await,
        GroupsCommand::Delete(a) => delete(common, &client, a).await,
        GroupsCommand::Lag(a) => super::lag::run(common, &client, a).await,
    }
}

async fn list(common: &Common, client: &Client) -> anyhow::Result<()> {
    let groups = client.list_groups().await?;
    if common.json() {
        print_json(&json!(groups
            .iter()
            .map(
                |g| json!({"group": g.group_id, "state": g.state, "protocol_type": g.protocol_type})
            )
            .collect::<Vec<_>>()));
        return Ok(());
    }
    let mut table = Table::new(&["GROUP", "STATE", "PROTOCOL-TYPE"]);
    for g in groups {
        let state = if g.state.is_empty() {
            "-".into()
        } else {
            g.state
        };
        let kind = if g.protocol_type.is_empty() {
            "-".into()
        } else {
            g.protocol_type
        };
        table.row(vec![g.group_id, state, kind]);
    }
    table.print();
    Ok(())
}

async fn describe(
    common: &Common,
    client: &Client,
    group: &str,
) -> anyhow::Result<serde_json::Value> {
    let description = client.describe_group(group).await?;
    let committed = client.committed_offsets(group, None).await?;
    if description.state == "Dead" && committed.is_empty() {
        return Err(strata_client::Error::kafka(
            format!("describing group {group:?}"),
            ErrorCode::GroupIdNotFound.code(),
            None,
        )
        .into());
    }
    let mut owners: BTreeMap<Tp, (String, String, String)> = BTreeMap::new();
    for m in &description.members {
        for tp in &m.assignment {
            owners.insert(
                tp.clone(),
                (
                    m.member_id.clone(),
                    m.client_host.clone(),
                    m.client_id.clone(),
                ),
            );
        }
    }
    let tps: BTreeSet<Tp> = committed.keys().chain(owners.keys()).cloned().collect();
    let tps: Vec<Tp> = tps.into_iter().collect();
    let ends = client
        .list_offsets(&tps, OffsetSpec::Latest)
        .await
        .unwrap_or_default();
    let rows: Vec<_> = tps
        .iter()
        .map(|tp| {
            let current = committed.get(tp).copied();
            let end = ends.get(tp).copied();
            let lag = match (current, end) {
                (Some(c), Some(e)) => Some((e - c).max(0)),
                _ => None,
            };
            (tp, current, end, lag, owners.get(tp))
        })
        .collect();
    let value = json!({
        "group": group,
        "state": description.state,
        "protocol": description.protocol,
        "coordinator": description.coordinator,
        "members": description.members.iter().map(|m| json!({
            "member_id": m.member_id,
            "client_id": m.client_id,
            "host": m.client_host,
            "assignment": m.assignment.iter().map(|(t, p)| json!({"topic": t, "partition": p})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "partitions": rows.iter().map(|(tp, current, end, lag, owner)| json!({
            "topic": tp.0,
            "partition": tp.1,
            "current_offset": current,
            "log_end_offset": end,
            "lag": lag,
            "consumer_id": owner.map(|o| &o.0),
        })).collect::<Vec<_>>(),
    });
    if !common.json() {
        println!(
            "Group: {group}  State: {}  Members: {}",
            description.state,
            description.members.len()
        );
        let mut table = Table::new(&[
            "GROUP",
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "CONSUMER-ID",
            "HOST",
            "CLIENT-ID",
        ]);
        let cell = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
        for (tp, current, end, lag, owner) in &rows {
            let (id, host, client_id) = owner
                .map(|o| (o.0.clone(), o.1.clone(), o.2.clone()))
                .unwrap_or(("-".into(), "-".into(), "-".into()));
            table.row(vec![
                group.to_string(),
                tp.0.clone(),
                tp.1.to_string(),
                cell(*current),
                cell(*end),
                cell(*lag),
                id,
                host,
                client_id,
            ]);
        }
        table.print();
    }
    Ok(value)
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff][Z]` (UTC) into milliseconds since the epoch.
fn parse_datetime(s: &str) -> anyhow::Result<i64> {
    let bad =
        || anyhow::anyhow!("--to-datetime expects YYYY-MM-DDTHH:MM:SS[.sss][Z] in UTC, got {s:?}");
    let t = s.trim_end_matches('Z');
    let (date, time) = t.split_once('T').unwrap_or((t, "00:00:00"));
    let d: Vec<i64> = date
        .split('-')
        .map(|x| x.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let h: Vec<i64> = hms
        .split(':')
        .map(|x| x.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    if d.len() != 3 || h.len() != 3 || !(1..=12).contains(&d[1]) || !(1..=31).contains(&d[2]) {
        return Err(bad());
    }
    let ms: i64 = format!("{frac:0<3}")[..3].parse().map_err(|_| bad())?;
    // Days from the civil date (proleptic Gregorian calendar).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(((days * 24 + h[0]) * 60 + h[1]) * 60_000 + h[2] * 1000 + ms)
}

async fn reset(common: &Common, client: &Client, a: ResetArgs) -> anyhow::Result<()> {
    let description = client.describe_group(&a.group).await?;
    if a.execute && !matches!(description.state.as_str(), "Empty" | "Dead" | "") {
        anyhow::bail!(
            "group {} is {} with {} active members; stop its consumers before resetting offsets",
            a.group,
            description.state,
            description.members.len()
        );
    }
    let committed = client.committed_offsets(&a.group, None).await?;
    let mut tps: BTreeSet<Tp> = BTreeSet::new();
    if a.all_topics {
        tps.extend(committed.keys().cloned());
    }
    for spec in &a.topic {
        let (topic, parts) = match spec.split_once(':') {
            Some((t, ps)) => {
                let ps: Vec<i32> = ps
                    .split(',')
                    .map(|p| {
                        p.trim().parse().map_err(|_| {
                            anyhow::anyhow!("--topic expects TOPIC or TOPIC:P1,P2, got {spec:?}")
                        })
                    })
                    .collect::<anyhow::Result<_>>()?;
                (t, Some(ps))
            }
            None => (spec.as_str(), None),
        };
        let info = client.fresh_topic(topic).await?;
        match parts {
            Some(ps) => {
                for p in ps {
                    if !info.partitions.iter().any(|x| x.id == p) {
                        anyhow::bail!("partition {p} does not exist in topic {topic}");
                    }
                    tps.insert((topic.to_string(), p));
                }
            }
            None => tps.extend(info.partitions.iter().map(|p| (topic.to_string(), p.id))),
        }
    }
    let tps: Vec<Tp> = tps.into_iter().collect();
    if tps.is_empty() {
        anyhow::bail!(
            "group {} has no committed offsets to reset; name topics with --topic",
            a.group
        );
    }
    let earliest = client.list_offsets(&tps, OffsetSpec::Earliest).await?;
    let latest = client.list_offsets(&tps, OffsetSpec::Latest).await?;
    let by_time = match (a.to_timestamp, &a.to_datetime) {
        (Some(t), _) => Some(client.list_offsets(&tps, OffsetSpec::Timestamp(t)).await?),
        (None, Some(s)) => {
            let t = parse_datetime(s)?;
            Some(client.list_offsets(&tps, OffsetSpec::Timestamp(t)).await?)
        }
        _ => None,
    };
    let mut new_offsets = BTreeMap::new();
    for tp in &tps {
        let (lo, hi) = (earliest[tp], latest[tp]);
        let target = if a.to_earliest {
            lo
        } else if a.to_latest {
            hi
        } else if let Some(o) = a.to_offset {
            o
        } else if let Some(n) = a.shift_by {
            committed.get(tp).copied().unwrap_or(lo) + n
        } else {
            by_time
                .as_ref()
                .and_then(|m| m.get(tp).copied())
                .filter(|o| *o >= 0)
                .unwrap_or(hi)
        };
        new_offsets.insert(tp.clone(), target.clamp(lo, hi));
    }
    if a.execute {
        client
            .commit_offsets(&a.group, -1, "", &new_offsets)
            .await?;
    }
    if common.json() {
        print_json(&json!({
            "group": a.group,
            "executed": a.execute,
            "partitions": new_offsets.iter().map(|(tp, o)| json!({
                "topic": tp.0,
                "partition": tp.1,
                "previous_offset": committed.get(tp),
                "new_offset": o,
            })).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    let mut table = Table::new(&[
        "GROUP",
        "TOPIC",
        "PARTITION",
        "PREVIOUS-OFFSET",
        "NEW-OFFSET",
    ]);
    for (tp, o) in &new_offsets {
        table.row(vec![
            a.group.clone(),
            tp.0.clone(),
            tp.1.to_string(),
            committed.get(tp).map_or("-".into(), |c| c.to_string()),
            o.to_string(),
        ]);
    }
    table.print();
    if !a.execute {
        eprintln!("dry run: nothing was committed; add --execute to apply");
    }
    Ok(())
}

async fn delete(common: &Common, client: &Client, a: DeleteArgs) -> anyhow::Result<()> {
    let results = client.delete_groups(&a.groups).await?;
    super::report(common, "group", "deleted", results, |_| false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_parse_as_utc() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(
            parse_datetime("2024-02-29T12:34:56.789Z").unwrap(),
            1_709_210_096_789
        );
        assert!(parse_datetime("yesterday").is_err());
    }
}
