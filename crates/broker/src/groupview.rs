//! Consumer groups as observers see them: state, members and assignments, committed offsets
//! against the partitions' high watermarks, and the lag evaluation of their commit windows.
//!
//! One snapshot feeds `/metrics`, the console's REST API and its pages, so they agree. Each
//! shard's lock is held only while its groups are copied out; high watermarks are atomics.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use kafka_protocol::messages::ConsumerProtocolAssignment;
use kafka_protocol::protocol::Decodable;
use strata_coordinator::lag::{self, CommitWindow, GroupLag, LagConfig, PartitionNow};
use strata_coordinator::GroupShard;
use strata_quorum::MetadataImage;

use crate::broker::Broker;

/// A topic partition by name.
pub type Tp = (String, i32);

#[derive(Debug, Clone)]
pub struct MemberView {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    pub assignment: Vec<Tp>,
}

/// One partition of a consumed topic (one where the group committed anything).
#[derive(Debug, Clone)]
pub struct OffsetView {
    pub topic: String,
    pub partition: i32,
    /// `None`: no commit for this partition.
    pub committed: Option<i64>,
    /// The high watermark, when this broker holds the partition.
    pub end_offset: Option<i64>,
    /// `end − committed`, never below 0; `None` without both.
    pub lag: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct GroupView {
    pub group: String,
    /// `classic` or `consumer` (KIP-848).
    pub protocol: &'static str,
    /// The classic protocol type (`consumer`, `connect`, ...), empty when unknown.
    pub protocol_type: String,
    pub state: String,
    /// Generation (classic) or group epoch (consumer protocol).
    pub generation: i32,
    /// The chosen assignment strategy (classic) or server-side assignor.
    pub assignor: String,
    pub members: Vec<MemberView>,
    pub offsets: Vec<OffsetView>,
    pub lag: GroupLag<Tp>,
}

impl GroupView {
    /// Who owns each partition, for lag answers.
    pub fn owners(&self) -> BTreeMap<Tp, &MemberView> {
        let mut owners = BTreeMap::new();
        for m in &self.members {
            for tp in &m.assignment {
                owners.insert(tp.clone(), m);
            }
        }
        owners
    }
}

/// Every group of every loaded shard, sorted by name.
pub fn all_groups(broker: &Broker) -> Vec<GroupView> {
    let image = broker.image();
    let now = crate::partition::now_ms();
    let mut views = Vec::new();
    broker.groups.for_each_shard(|shard| {
        views.extend(groups_of_shard(broker, &image, shard, None, now));
    });
    views.sort_by(|a, b| a.group.cmp(&b.group));
    views
}

/// One group, `None` when its coordinator shard does not know it.
pub fn one_group(broker: &Broker, group: &str) -> Option<GroupView> {
    let image = broker.image();
    let now = crate::partition::now_ms();
    broker
        .groups
        .with(group, |shard| {
            groups_of_shard(broker, &image, shard, Some(group), now)
                .into_iter()
                .next()
        })
        .ok()
        .flatten()
}

fn groups_of_shard(
    broker: &Broker,
    image: &MetadataImage,
    shard: &GroupShard,
    only: Option<&str>,
    now: i64,
) -> Vec<GroupView> {
    let lag_config = *shard.classic.lag_config();
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for g in shard.classic.groups() {
        if only.is_some_and(|o| o != g.id) {
            continue;
        }
        seen.insert(g.id.clone());
        let modern = shard.consumer.groups.get(&g.id);
        let (protocol, state, generation, assignor, members) = match modern {
            Some(c) => (
                "consumer",
                c.state_name().to_string(),
                c.group_epoch,
                c.assignor.clone(),
                consumer_members(c, image),
            ),
            None => (
                "classic",
                g.state.name().to_string(),
                g.generation,
                g.protocol.clone().unwrap_or_default(),
                g.members
                    .values()
                    .map(|m| MemberView {
                        member_id: m.member_id.clone(),
                        instance_id: m.group_instance_id.clone(),
                        client_id: m.client_id.clone(),
                        host: m.client_host.clone(),
                        assignment: decode_assignment(&m.assignment),
                    })
                    .collect(),
            ),
        };
        let committed: BTreeMap<Tp, i64> = g
            .offsets
            .iter()
            .map(|(k, v)| (k.clone(), v.offset))
            .collect();
        out.push(GroupView {
            group: g.id.clone(),
            protocol,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            state,
            generation,
            assignor,
            members,
            offsets: offset_views(broker, image, &committed),
            lag: evaluate(broker, image, &g.commit_windows, &lag_config, now),
        });
    }
    // Consumer-protocol groups that never committed.
    for c in shard.consumer.groups.values() {
        if seen.contains(&c.id) || only.is_some_and(|o| o != c.id) {
            continue;
        }
        out.push(GroupView {
            group: c.id.clone(),
            protocol: "consumer",
            protocol_type: "consumer".into(),
            state: c.state_name().to_string(),
            generation: c.group_epoch,
            assignor: c.assignor.clone(),
            members: consumer_members(c, image),
            offsets: Vec::new(),
            lag: lag::roll_up(true, Vec::new()),
        });
    }
    out
}

fn consumer_members(
    c: &strata_coordinator::consumer::ConsumerGroup,
    image: &MetadataImage,
) -> Vec<MemberView> {
    c.members
        .values()
        .map(|m| MemberView {
            member_id: m.member_id.clone(),
            instance_id: m.instance_id.clone(),
            client_id: m.client_id.clone(),
            host: m.client_host.clone(),
            assignment: m
                .assigned
                .iter()
                .filter_map(|(id, p)| image.topic_by_id(id).map(|t| (t.name.clone(), *p)))
                .collect(),
        })
        .collect()
}

/// Every partition of each topic the group committed to: committed offset or none, and lag
/// against the high watermark (as `kafka_exporter` and `strata groups describe` report).
fn offset_views(
    broker: &Broker,
    image: &MetadataImage,
    committed: &BTreeMap<Tp, i64>,
) -> Vec<OffsetView> {
    let topics: BTreeSet<&String> = committed.keys().map(|(t, _)| t).collect();
    let mut out = Vec::new();
    for topic in topics {
        let Some(t) = image.topic_by_name(topic) else {
            continue;
        };
        for &p in t.partitions.keys() {
            let committed = committed.get(&(topic.clone(), p)).copied();
            let end_offset = broker.end_offset_of(image, topic, p);
            let lag = match (committed, end_offset) {
                (Some(c), Some(e)) => Some((e - c).max(0)),
                _ => None,
            };
            out.push(OffsetView {
                topic: topic.clone(),
                partition: p,
                committed,
                end_offset,
                lag,
            });
        }
    }
    out
}

fn evaluate(
    broker: &Broker,
    image: &MetadataImage,
    windows: &BTreeMap<Tp, CommitWindow>,
    config: &LagConfig,
    now: i64,
) -> GroupLag<Tp> {
    let evaluated = windows
        .iter()
        .map(|((topic, p), window)| {
            let now = PartitionNow {
                end_offset: broker.end_offset_of(image, topic, *p).unwrap_or(-1),
                recent_end_offsets: &[],
                now_ms: now,
            };
            (
                (topic.clone(), *p),
                lag::evaluate_partition(window, now, config),
            )
        })
        .collect();
    lag::roll_up(true, evaluated)
}

/// A classic consumer-protocol assignment (version, then the body); anything else (another
/// protocol type, garbage) assigns nothing visible.
fn decode_assignment(bytes: &Bytes) -> Vec<Tp> {
    if bytes.len() < 2 {
        return Vec::new();
    }
    let version = i16::from_be_bytes([bytes[0], bytes[1]]);
    let mut body = bytes.slice(2..);
    match ConsumerProtocolAssignment::decode(&mut body, version.clamp(0, 3)) {
        Ok(a) => a
            .assigned_partitions
            .iter()
            .flat_map(|tp| {
                tp.partitions
                    .iter()
                    .map(move |p| (tp.topic.to_string(), *p))
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}
