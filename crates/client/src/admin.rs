//! Admin calls: topics, offsets, configs, log dirs, cluster and groups.

use std::collections::{BTreeMap, HashMap};

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::client::{broker, name, sb, BrokerInfo, Client};
use crate::error::{check, Error, Result};

/// A topic to create.
#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    /// -1 for the broker's default.
    pub partitions: i32,
    /// -1 for the broker's default.
    pub replication_factor: i16,
    pub configs: Vec<(String, String)>,
}

/// Which offset ListOffsets asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    Earliest,
    Latest,
    /// The first offset whose timestamp is at or after this (ms since the epoch).
    Timestamp(i64),
}

impl OffsetSpec {
    fn wire(self) -> i64 {
        match self {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::Timestamp(t) => t,
        }
    }
}

/// A topic-partition.
pub type Tp = (String, i32);

/// Config resource types, as the protocol numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceType {
    Topic = 2,
    Broker = 4,
}

/// One config entry of a DescribeConfigs answer.
#[derive(Debug, Clone)]
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    pub source: i8,
    pub read_only: bool,
    pub sensitive: bool,
}

impl ConfigEntry {
    /// The source's name, as Kafka's tools print it.
    pub fn source_name(&self) -> &'static str {
        config_source_name(self.source)
    }
}

/// A config change for IncrementalAlterConfigs.
#[derive(Debug, Clone)]
pub enum ConfigOp {
    Set(String, String),
    Delete(String),
}

/// DescribeCluster's answer (or Metadata's, for brokers without it).
#[derive(Debug, Clone)]
pub struct ClusterInfo {
    pub cluster_id: String,
    pub controller_id: i32,
    pub brokers: Vec<BrokerInfo>,
}

/// DescribeQuorum's answer for the metadata partition (`__cluster_metadata`-0).
#[derive(Debug, Clone)]
pub struct QuorumInfo {
    pub leader_id: i32,
    pub leader_epoch: i32,
    pub high_watermark: i64,
    pub voters: Vec<QuorumReplica>,
    pub observers: Vec<QuorumReplica>,
}

/// One voter or observer of the metadata quorum.
#[derive(Debug, Clone)]
pub struct QuorumReplica {
    pub id: i32,
    pub log_end_offset: i64,
    /// -1 when unknown (versions before 1).
    pub last_fetch_ms: i64,
    pub last_caught_up_ms: i64,
}

impl QuorumReplica {
    /// How far the replica is behind the high watermark; never negative (a leader's log end
    /// is ahead of the high watermark until its followers catch up).
    pub fn lag(&self, high_watermark: i64) -> i64 {
        (high_watermark - self.log_end_offset).max(0)
    }
}

/// A group as ListGroups lists it.
#[derive(Debug, Clone)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: String,
}

/// One member of a described group.
#[derive(Debug, Clone)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Partitions assigned, for "consumer" groups.
    pub assignment: Vec<Tp>,
}

impl MemberDescription {
    fn new(
        (member_id, instance_id): (StrBytes, Option<StrBytes>),
        client_id: &str,
        client_host: &str,
        assignment: Vec<Tp>,
    ) -> Self {
        MemberDescription {
            member_id: member_id.to_string(),
            group_instance_id: opt(instance_id),
            client_id: client_id.to_string(),
            client_host: client_host.to_string(),
            assignment,
        }
    }
}

/// A group as DescribeGroups describes it.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub coordinator: i32,
    pub members: Vec<MemberDescription>,
}

fn opt(s: Option<StrBytes>) -> Option<String> {
    s.map(|s| s.to_string())
}

/// One result per name of `names`, in order, from (name, error code, message) answers.
fn per_topic(
    verb: &str,
    names: &[String],
    answers: impl Iterator<Item = (String, i16, Option<String>)>,
) -> Vec<(String, Result<()>)> {
    let mut results: HashMap<String, Result<()>> = answers
        .map(|(n, code, message)| {
            let r = check(|| format!("{verb} topic {n:?}"), code, message);
            (n, r)
        })
        .collect();
    names
        .iter()
        .map(|n| {
            let r = results
                .remove(n)
                .unwrap_or_else(|| Err(Error::Protocol("no result for the topic".into())));
            (n.clone(), r)
        })
        .collect()
}

impl Client {
    /// Creates topics; one result per topic, in order.
    pub async fn create_topics(
        &self,
        topics: &[NewTopic],
        validate_only: bool,
    ) -> Result<Vec<(String, Result<()>)>> {
        let controller = self.cached_metadata().controller_id;
        let build = |version: i16| {
            let mut r = CreateTopicsRequest::default()
                .with_timeout_ms(30_000)
                .with_topics(
                    topics
                        .iter()
                        .map(|t| {
                            CreatableTopic::default()
                                .with_name(name(&t.name))
                                .with_num_partitions(t.partitions)
                                .with_replication_factor(t.replication_factor)
                                .with_configs(
                                    t.configs
                                        .iter()
                                        .map(|(k, v)| {
                                            CreatableTopicConfig::default()
                                                .with_name(sb(k))
                                                .with_value(Some(sb(v)))
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                );
            if version >= 1 {
                r.validate_only = validate_only;
            }
            r
        };
        let response = self.send_to_controller(controller, 7, build).await?;
        let names: Vec<String> = topics.iter().map(|t| t.name.clone()).collect();
        Ok(per_topic(
            "creating",
            &names,
            response
                .topics
                .into_iter()
                .map(|t| (t.name.0.to_string(), t.error_code, opt(t.error_message))),
        ))
    }

    async fn send_to_controller<R: kafka_protocol::protocol::Request>(
        &self,
        controller: i32,
        cap: i16,
        build: impl Fn(i16) -> R,
    ) -> Result<R::Response> {
        if controller >= 0 {
            self.send_to(controller, cap, build).await
        } else {
            self.send_any(cap, build).await
        }
    }

    /// Deletes topics; one result per topic, in order.
    pub async fn delete_topics(&self, topics: &[String]) -> Result<Vec<(String, Result<()>)>> {
        let controller = self.cached_metadata().controller_id;
        let build = |_version: i16| {
            DeleteTopicsRequest::default()
                .with_timeout_ms(30_000)
                .with_topic_names(topics.iter().map(|t| name(t)).collect())
        };
        let response = self.send_to_controller(controller, 5, build).await?;
        Ok(per_topic(
            "deleting",
            topics,
            response.responses.into_iter().map(|t| {
                (
                    t.name.map(|n| n.0.to_string()).unwrap_or_default(),
                    t.error_code,
                    opt(t.error_message),
                )
            }),
        ))
    }

    /// Raises a topic's partition count to `count`.
    pub async fn create_partitions(&self, topic: &str, count: i32) -> Result<()> {
        let response = self
            .send_any(3, |_| {
                CreatePartitionsRequest::default()
                    .with_timeout_ms(30_000)
                    .with_topics(vec![CreatePartitionsTopic::default()
                        .with_name(name(topic))
                        .with_count(count)
                        .with_assignments(None)])
            })
            .await?;
        for r in response.results {
            check(
                || format!("adding partitions to {topic:?}"),
                r.error_code,
                opt(r.error_message),
            )?;
        }
        Ok(())
    }

    /// Offsets of partitions, asking each partition's leader. Missing partitions are errors.
    pub async fn list_offsets(&self, tps: &[Tp], spec: OffsetSpec) -> Result<BTreeMap<Tp, i64>> {
        let mut by_leader: BTreeMap<i32, Vec<Tp>> = BTreeMap::new();
        for (t, p) in tps {
            let leader = self.leader(t, *p).await?;
            by_leader.entry(leader).or_default().push((t.clone(), *p));
        }
        let mut out = BTreeMap::new();
        for (leader, tps) in by_leader {
            let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
            for (t, p) in &tps {
                topics.entry(t).or_default().push(*p);
            }
            let response = self
                .send_to(leader, 7, |_| {
                    ListOffsetsRequest::default()
                        .with_replica_id(broker(-1))
                        .with_topics(
                            topics
                                .iter()
                                .map(|(t, ps)| {
                                    ListOffsetsTopic::default()
                                        .with_name(name(t))
                                        .with_partitions(
                                            ps.iter()
                                                .map(|p| {
                                                    ListOffsetsPartition::default()
                                                        .with_partition_index(*p)
                                                        .with_timestamp(spec.wire())
                                                })
                                                .collect(),
                                        )
                                })
                                .collect(),
                        )
                })
                .await?;
            for t in response.topics {
                for p in t.partitions {
                    let topic = t.name.0.to_string();
                    check(
                        || format!("listing offsets of {topic}-{}", p.partition_index),
                        p.error_code,
                        None,
                    )?;
                    out.insert((topic, p.partition_index), p.offset);
                }
            }
        }
        Ok(out)
    }

    /// Size on disk of each partition of `topics` (all topics with `None`), summed over
    /// every broker's log dirs (the leader's copy where replicas differ is not singled out).
    pub async fn log_dir_sizes(&self, topics: Option<&[String]>) -> Result<BTreeMap<Tp, i64>> {
        let mut out: BTreeMap<Tp, i64> = BTreeMap::new();
        let meta = self.cached_metadata();
        for id in self.broker_ids() {
            let response = self
                .send_to(id, 4, |_| {
                    DescribeLogDirsRequest::default().with_topics(topics.map(|ts| {
                        ts.iter()
                            .map(|t| {
                                let parts = meta
                                    .topics
                                    .get(t)
                                    .map(|i| i.partitions.iter().map(|p| p.id).collect())
                                    .unwrap_or_default();
                                DescribableLogDirTopic::default()
                                    .with_topic(name(t))
                                    .with_partitions(parts)
                            })
                            .collect()
                    }))
                })
                .await?;
            for dir in response.results {
                if dir.error_code != 0 {
                    continue;
                }
                for t in dir.topics {
                    for p in t.partitions {
                        if p.is_future_key {
                            continue;
                        }
                        let e = out
                            .entry((t.name.0.to_string(), p.partition_index))
                            .or_insert(0);
                        *e = (*e).max(p.partition_size);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The configs of one resource (all keys, or `keys`).
    pub async fn describe_configs(
        &self,
        kind: ResourceType,
        resource: &str,
        keys: Option<&[String]>,
    ) -> Result<Vec<ConfigEntry>> {
        let request = |_| {
            DescribeConfigsRequest::default().with_resources(vec![
                DescribeConfigsResource::default()
                    .with_resource_type(kind as i8)
                    .with_resource_name(sb(resource))
                    .with_configuration_keys(keys.map(|ks| ks.iter().map(|k| sb(k)).collect())),
            ])
        };
        let response = match kind {
            ResourceType::Broker => match resource.parse::<i32>() {
                Ok(id) => self.send_to(id, 4, request).await?,
                Err(_) => self.send_any(4, request).await?,
            },
            ResourceType::Topic => self.send_any(4, request).await?,
        };
        let mut out = Vec::new();
        for r in response.results {
            check(
                || format!("describing the configs of {resource:?}"),
                r.error_code,
                opt(r.error_message),
            )?;
            for c in r.configs {
                out.push(ConfigEntry {
                    name: c.name.to_string(),
                    value: opt(c.value),
                    source: c.config_source,
                    read_only: c.read_only,
                    sensitive: c.is_sensitive,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// One config key of many topics in one DescribeConfigs request: topic -> value (topics
    /// the broker answered with an error, or without the key, are left out).
    pub async fn topics_config_key(
        &self,
        topics: &[String],
        key: &str,
    ) -> Result<BTreeMap<String, String>> {
        if topics.is_empty() {
            return Ok(BTreeMap::new());
        }
        let response = self
            .send_any(4, |_| {
                DescribeConfigsRequest::default().with_resources(
                    topics
                        .iter()
                        .map(|t| {
                            DescribeConfigsResource::default()
                                .with_resource_type(ResourceType::Topic as i8)
                                .with_resource_name(sb(t))
                                .with_configuration_keys(Some(vec![sb(key)]))
                        })
                        .collect(),
                )
            })
            .await?;
        Ok(response
            .results
            .into_iter()
            .filter(|r| r.error_code == 0)
            .filter_map(|r| {
                let value = r
                    .configs
                    .into_iter()
                    .find(|c| c.name.as_str() == key)
                    .and_then(|c| c.value)?;
                Some((r.resource_name.to_string(), value.to_string()))
            })
            .collect())
    }

    /// Sets or deletes config keys of one resource.
    pub async fn alter_configs(
        &self,
        kind: ResourceType,
        resource: &str,
        ops: &[ConfigOp],
    ) -> Result<()> {
        let request = |_| {
            IncrementalAlterConfigsRequest::default().with_resources(vec![
                AlterConfigsResource::default()
                    .with_resource_type(kind as i8)
                    .with_resource_name(sb(resource))
                    .with_configs(
                        ops.iter()
                            .map(|op| match op {
                                ConfigOp::Set(k, v) => AlterableConfig::default()
                                    .with_name(sb(k))
                                    .with_config_operation(0)
                                    .with_value(Some(sb(v))),
                                ConfigOp::Delete(k) => AlterableConfig::default()
                                    .with_name(sb(k))
                                    .with_config_operation(1)
                                    .with_value(None),
                            })
                            .collect(),
                    ),
            ])
        };
        let response = match (kind, resource.parse::<i32>()) {
            (ResourceType::Broker, Ok(id)) => self.send_to(id, 1, request).await?,
            _ => self.send_any(1, request).await?,
        };
        for r in response.responses {
            check(
                || format!("altering the configs of {resource:?}"),
                r.error_code,
                opt(r.error_message),
            )?;
        }
        Ok(())
    }

    /// The cluster id, controller and brokers.
    pub async fn describe_cluster(&self) -> Result<ClusterInfo> {
        match self
            .send_any(1, |_| DescribeClusterRequest::default())
            .await
        {
            Ok(r) => {
                check(
                    || "describing the cluster".into(),
                    r.error_code,
                    opt(r.error_message),
                )?;
                let mut brokers: Vec<BrokerInfo> = r
                    .brokers
                    .into_iter()
                    .map(|b| BrokerInfo {
                        id: b.broker_id.0,
                        host: b.host.to_string(),
                        port: b.port,
                        rack: opt(b.rack),
                    })
                    .collect();
                brokers.sort_by_key(|b| b.id);
                Ok(ClusterInfo {
                    cluster_id: r.cluster_id.to_string(),
                    controller_id: r.controller_id.0,
                    brokers,
                })
            }
            Err(Error::Unsupported(_)) => {
                let m = self.refresh_metadata(Some(&[])).await?;
                Ok(ClusterInfo {
                    cluster_id: m.cluster_id.unwrap_or_default(),
                    controller_id: m.controller_id,
                    brokers: m.brokers.into_values().collect(),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// The metadata quorum (DescribeQuorum on `__cluster_metadata`-0): leader, epoch, high
    /// watermark, voters and observers.
    pub async fn describe_quorum(&self) -> Result<QuorumInfo> {
        use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
        let response = self
            .send_any(2, |_| {
                DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
                    .with_topic_name(name("__cluster_metadata"))
                    .with_partitions(vec![PartitionData::default().with_partition_index(0)])])
            })
            .await?;
        let context = || "describing the metadata quorum".to_string();
        check(context, response.error_code, opt(response.error_message))?;
        let partition = response
            .topics
            .into_iter()
            .flat_map(|t| t.partitions)
            .find(|p| p.partition_index == 0)
            .ok_or_else(|| Error::Protocol("DescribeQuorum answered no partition 0".into()))?;
        check(context, partition.error_code, opt(partition.error_message))?;
        let replicas = |states: Vec<describe_quorum_response::ReplicaState>| {
            states
                .into_iter()
                .map(|r| QuorumReplica {
                    id: r.replica_id.0,
                    log_end_offset: r.log_end_offset,
                    last_fetch_ms: r.last_fetch_timestamp,
                    last_caught_up_ms: r.last_caught_up_timestamp,
                })
                .collect()
        };
        Ok(QuorumInfo {
            leader_id: partition.leader_id.0,
            leader_epoch: partition.leader_epoch,
            high_watermark: partition.high_watermark,
            voters: replicas(partition.current_voters),
            observers: replicas(partition.observers),
        })
    }

    /// Every group on every broker.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        let mut out = Vec::new();
        for id in self.broker_ids() {
            let r = self
                .send_to(id, 4, |_| ListGroupsRequest::default())
                .await?;
            check(|| "listing groups".into(), r.error_code, None)?;
            for g in r.groups {
                out.push(GroupListing {
                    group_id: g.group_id.0.to_string(),
                    protocol_type: g.protocol_type.to_string(),
                    state: g.group_state.to_string(),
                });
            }
        }
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out.dedup_by(|a, b| a.group_id == b.group_id);
        Ok(out)
    }

    /// Describes one group (state, members and their assignments).
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        let coordinator = self.coordinator(group).await?;
        let r = self
            .send_to(coordinator, 5, |_| {
                DescribeGroupsRequest::default().with_groups(vec![GroupId(sb(group))])
            })
            .await?;
        let g = r
            .groups
            .into_iter()
            .next()
            .ok_or_else(|| Error::Protocol("DescribeGroups returned no group".into()))?;
        if g.error_code == ResponseError::GroupIdNotFound.code() || g.group_state.as_str() == "Dead"
        {
            // Not a classic group: perhaps a KIP-848 consumer group.
            match self.describe_consumer_group(coordinator, group).await {
                Ok(Some(d)) => return Ok(d),
                Ok(None) | Err(Error::Unsupported(_)) => {}
                Err(e) => return Err(e),
            }
        }
        check(
            || format!("describing group {group:?}"),
            g.error_code,
            opt(g.error_message),
        )?;
        let consumer = g.protocol_type.as_str() == "consumer";
        Ok(GroupDescription {
            group_id: g.group_id.0.to_string(),
            state: g.group_state.to_string(),
            protocol_type: g.protocol_type.to_string(),
            protocol: g.protocol_data.to_string(),
            coordinator,
            members: g
                .members
                .into_iter()
                .map(|m| {
                    let assignment = if consumer {
                        crate::group::decode_assignment(&m.member_assignment).unwrap_or_default()
                    } else {
                        Vec::new()
                    };
                    let ids = (m.member_id, m.group_instance_id);
                    MemberDescription::new(ids, &m.client_id, &m.client_host, assignment)
                })
                .collect(),
        })
    }

    /// Describes a KIP-848 consumer group (ConsumerGroupDescribe); `None` if it is not one.
    async fn describe_consumer_group(
        &self,
        coordinator: i32,
        group: &str,
    ) -> Result<Option<GroupDescription>> {
        let r = self
            .send_to(coordinator, 1, |_| {
                ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(sb(group))])
            })
            .await?;
        let Some(g) = r.groups.into_iter().next().filter(|g| g.error_code == 0) else {
            return Ok(None);
        };
        Ok(Some(GroupDescription {
            group_id: g.group_id.0.to_string(),
            state: g.group_state.to_string(),
            protocol_type: "consumer".into(),
            protocol: g.assignor_name.to_string(),
            coordinator,
            members: g
                .members
                .into_iter()
                .map(|m| {
                    let assignment = m
                        .assignment
                        .topic_partitions
                        .iter()
                        .flat_map(|t| {
                            t.partitions
                                .iter()
                                .map(|p| (t.topic_name.0.to_string(), *p))
                        })
                        .collect();
                    let ids = (m.member_id, m.instance_id);
                    MemberDescription::new(ids, &m.client_id, &m.client_host, assignment)
                })
                .collect(),
        }))
    }

    /// Deletes groups (they must be empty); one result per group.
    pub async fn delete_groups(&self, groups: &[String]) -> Result<Vec<(String, Result<()>)>> {
        let mut out = Vec::new();
        for group in groups {
            let result = async {
                let coordinator = self.coordinator(group).await?;
                let r = self
                    .send_to(coordinator, 2, |_| {
                        DeleteGroupsRequest::default().with_groups_names(vec![GroupId(sb(group))])
                    })
                    .await?;
                for g in r.results {
                    check(|| format!("deleting group {group:?}"), g.error_code, None)?;
                }
                Ok(())
            }
            .await;
            out.push((group.clone(), result));
        }
        Ok(out)
    }

    /// The committed offsets of a group (all its partitions with `None`).
    pub async fn committed_offsets(
        &self,
        group: &str,
        partitions: Option<&[Tp]>,
    ) -> Result<BTreeMap<Tp, i64>> {
        let coordinator = self.coordinator(group).await?;
        let topics = partitions.map(|tps| {
            let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
            for (t, p) in tps {
                by_topic.entry(t).or_default().push(*p);
            }
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    OffsetFetchRequestTopic::default()
                        .with_name(name(t))
                        .with_partition_indexes(ps)
                })
                .collect::<Vec<_>>()
        });
        let r = self
            .send_to(coordinator, 7, |_| {
                OffsetFetchRequest::default()
                    .with_group_id(GroupId(sb(group)))
                    .with_topics(topics.clone())
            })
            .await?;
        check(
            || format!("reading the offsets of group {group:?}"),
            r.error_code,
            None,
        )?;
        let mut out = BTreeMap::new();
        for t in r.topics {
            for p in t.partitions {
                if p.error_code == ResponseError::UnknownTopicOrPartition.code() {
                    continue;
                }
                check(
                    || format!("reading the offsets of group {group:?}"),
                    p.error_code,
                    None,
                )?;
                if p.committed_offset >= 0 {
                    out.insert(
                        (t.name.0.to_string(), p.partition_index),
                        p.committed_offset,
                    );
                }
            }
        }
        Ok(out)
    }

    /// Commits offsets for a group: as a member (`generation`, `member_id`) or, with
    /// generation -1 and an empty member id, as an admin of an empty group.
    pub async fn commit_offsets(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        offsets: &BTreeMap<Tp, i64>,
    ) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let coordinator = self.coordinator(group).await?;
        let mut by_topic: BTreeMap<&str, Vec<(i32, i64)>> = BTreeMap::new();
        for ((t, p), o) in offsets {
            by_topic.entry(t).or_default().push((*p, *o));
        }
        let r = self
            .send_to(coordinator, 8, |version| {
                let mut r = OffsetCommitRequest::default()
                    .with_group_id(GroupId(sb(group)))
                    .with_generation_id_or_member_epoch(generation)
                    .with_member_id(sb(member_id))
                    .with_topics(
                        by_topic
                            .iter()
                            .map(|(t, ps)| {
                                OffsetCommitRequestTopic::default()
                                    .with_name(name(t))
                                    .with_partitions(
                                        ps.iter()
                                            .map(|(p, o)| {
                                                OffsetCommitRequestPartition::default()
                                                    .with_partition_index(*p)
                                                    .with_committed_offset(*o)
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    );
                if (2..=4).contains(&version) {
                    r.retention_time_ms = -1;
                }
                r
            })
            .await?;
        for t in r.topics {
            for p in t.partitions {
                check(
                    || format!("committing offsets of group {group:?}"),
                    p.error_code,
                    None,
                )?;
            }
        }
        Ok(())
    }
}

/// A DescribeConfigs source code's name, as Kafka's tools print it.
pub fn config_source_name(source: i8) -> &'static str {
    match source {
        1 => "DYNAMIC_TOPIC_CONFIG",
        2 => "DYNAMIC_BROKER_CONFIG",
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        6 => "DYNAMIC_BROKER_LOGGER_CONFIG",
        7 => "CLIENT_METRICS_CONFIG",
        8 => "GROUP_CONFIG",
        _ => "UNKNOWN",
    }
}
