//! Cluster-administration APIs: DescribeLogDirs, ElectLeaders, ListPartitionReassignments,
//! AlterPartitionReassignments, ListConfigResources, DescribeQuorum.

use std::sync::Arc;

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::list_config_resources_response::ConfigResource;
use kafka_protocol::messages::*;
use strata_protocol::ErrorCode;

use super::str_bytes;
use crate::auth::{authorize, ConnectionContext, Operation, Resource};
use crate::broker::Broker;
use crate::controller::ControllerError;
use strata_quorum::controller::ops::{AlterPartitionReassignments, ElectLeaders};

/// Free and total bytes of the file system holding `path`.
fn disk_space(path: &std::path::Path) -> (i64, i64) {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return (-1, -1);
    };
    // Safety: `c` is a valid NUL-terminated path and `stat` a properly sized out-parameter.
    unsafe {
        let mut stat: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut stat) != 0 {
            return (-1, -1);
        }
        let block = stat.f_frsize as i64;
        (stat.f_blocks as i64 * block, stat.f_bavail as i64 * block)
    }
}

pub fn describe_log_dirs(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    if !authorize(ctx, Operation::Describe, Resource::Cluster) {
        return DescribeLogDirsResponse::default()
            .with_error_code(ErrorCode::ClusterAuthorizationFailed.code());
    }
    let image = broker.image();
    let wanted: Option<Vec<(String, Vec<i32>)>> = req.topics.map(|ts| {
        ts.iter()
            .map(|t| (t.topic.0.to_string(), t.partitions.clone()))
            .collect()
    });
    let mut topics = Vec::new();
    for topic in image.topics() {
        let parts: Vec<i32> = match &wanted {
            None => topic.partitions.keys().copied().collect(),
            Some(list) => match list.iter().find(|(n, _)| *n == topic.name) {
                Some((_, ps)) => ps.clone(),
                None => continue,
            },
        };
        let partitions: Vec<DescribeLogDirsPartition> = parts
            .into_iter()
            .filter_map(|p| broker.partitions.get(&topic.topic_id, p))
            .map(|p| {
                DescribeLogDirsPartition::default()
                    .with_partition_index(p.index)
                    .with_partition_size(p.size_bytes() as i64)
                    .with_offset_lag(0)
            })
            .collect();
        if !partitions.is_empty() {
            topics.push(
                DescribeLogDirsTopic::default()
                    .with_name(TopicName(str_bytes(topic.name.clone())))
                    .with_partitions(partitions),
            );
        }
    }
    let dir = &broker.config.data_dir;
    let absolute = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
    let (total, usable) = disk_space(&absolute);
    DescribeLogDirsResponse::default().with_results(vec![DescribeLogDirsResult::default()
        .with_log_dir(str_bytes(absolute.display().to_string()))
        .with_topics(topics)
        .with_total_bytes(total)
        .with_usable_bytes(usable)])
}

/// ElectLeaders: a controller operation deciding with the partition change rules (one node
/// is always its partitions' preferred leader: ELECTION_NOT_NEEDED). v0 has no
/// ELECTION_NOT_NEEDED: such partitions are answered as successes.
pub async fn elect_leaders(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: ElectLeadersRequest,
    version: i16,
) -> ElectLeadersResponse {
    if !authorize(ctx, Operation::Alter, Resource::Cluster) {
        return ElectLeadersResponse::default()
            .with_error_code(ErrorCode::ClusterAuthorizationFailed.code());
    }
    let op = ElectLeaders {
        // v0 has no election type: preferred.
        election_type: if version >= 1 { req.election_type } else { 0 },
        partitions: req.topic_partitions.map(|tps| {
            tps.iter()
                .map(|t| (t.topic.0.to_string(), t.partitions.clone()))
                .collect()
        }),
    };
    let reply = match broker.submit(op).await {
        Ok(reply) => reply,
        Err(error) => {
            tracing::error!(%error, "leader election failed");
            let code = match &error {
                ControllerError::Refused(e) => e.code,
                _ => ErrorCode::UnknownServerError.code(),
            };
            return ElectLeadersResponse::default().with_error_code(code);
        }
    };
    let not_needed = ErrorCode::ElectionNotNeeded.code();
    let results = reply
        .topics
        .into_iter()
        .map(|(name, partitions)| {
            ReplicaElectionResult::default()
                .with_topic(TopicName(str_bytes(name)))
                .with_partition_result(
                    partitions
                        .into_iter()
                        .map(|(p, result)| {
                            let r = PartitionResult::default().with_partition_id(p);
                            match result {
                                Ok(()) => r,
                                Err(e) if e.code == not_needed && version == 0 => r,
                                Err(e) => r
                                    .with_error_code(e.code)
                                    .with_error_message(Some(str_bytes(e.message))),
                            }
                        })
                        .collect(),
                )
        })
        .collect();
    ElectLeadersResponse::default().with_replica_election_results(results)
}

/// The reassignments in progress (KIP-455): every partition whose replicas are being added or
/// removed, or those of the partitions asked for.
pub fn list_partition_reassignments(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    use kafka_protocol::messages::list_partition_reassignments_response::{
        OngoingPartitionReassignment, OngoingTopicReassignment,
    };
    if !authorize(ctx, Operation::Describe, Resource::Cluster) {
        return ListPartitionReassignmentsResponse::default()
            .with_error_code(ErrorCode::ClusterAuthorizationFailed.code());
    }
    let image = broker.image();
    let wanted: Option<Vec<(String, Vec<i32>)>> = req.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let ids = |ids: &[i32]| ids.iter().copied().map(BrokerId).collect::<Vec<_>>();
    let topics = image
        .topics()
        .filter_map(|topic| {
            let asked = match &wanted {
                None => None,
                Some(w) => Some(&w.iter().find(|(name, _)| *name == topic.name)?.1),
            };
            let partitions: Vec<OngoingPartitionReassignment> = topic
                .partitions
                .values()
                .filter(|p| !p.adding_replicas.is_empty() || !p.removing_replicas.is_empty())
                .filter(|p| asked.is_none_or(|a| a.contains(&p.partition)))
                .map(|p| {
                    OngoingPartitionReassignment::default()
                        .with_partition_index(p.partition)
                        .with_replicas(ids(&p.replicas))
                        .with_adding_replicas(ids(&p.adding_replicas))
                        .with_removing_replicas(ids(&p.removing_replicas))
                })
                .collect();
            (!partitions.is_empty()).then(|| {
                OngoingTopicReassignment::default()
                    .with_name(TopicName(str_bytes(topic.name.clone())))
                    .with_partitions(partitions)
            })
        })
        .collect();
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}

/// AlterPartitionReassignments (KIP-455): a controller operation; each partition moves to its
/// target replicas (new ones catch up as followers, and once they are in the ISR the leader's
/// AlterPartition completes the move and the removed replicas delete their copy), or a null
/// target cancels the move in progress.
pub async fn alter_partition_reassignments(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: AlterPartitionReassignmentsRequest,
    version: i16,
) -> AlterPartitionReassignmentsResponse {
    if !authorize(ctx, Operation::Alter, Resource::Cluster) {
        return AlterPartitionReassignmentsResponse::default()
            .with_error_code(ErrorCode::ClusterAuthorizationFailed.code());
    }
    let op = AlterPartitionReassignments {
        topics: req
            .topics
            .iter()
            .map(|t| {
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let target = p.replicas.as_ref().map(|r| r.iter().map(|b| b.0).collect());
                        (p.partition_index, target)
                    })
                    .collect();
                (t.name.0.to_string(), partitions)
            })
            .collect(),
        allow_replication_factor_change: version < 1 || req.allow_replication_factor_change,
    };
    let reply = match broker.submit(op).await {
        Ok(reply) => reply,
        Err(error) => {
            tracing::error!(%error, "partition reassignment failed");
            let (code, message) = match &error {
                ControllerError::Refused(e) => (e.code, e.message.clone()),
                _ => (ErrorCode::UnknownServerError.code(), error.to_string()),
            };
            return AlterPartitionReassignmentsResponse::default()
                .with_error_code(code)
                .with_error_message(Some(str_bytes(message)));
        }
    };
    let responses = reply
        .topics
        .into_iter()
        .map(|(name, partitions)| {
            ReassignableTopicResponse::default()
                .with_name(TopicName(str_bytes(name)))
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|(p, result)| {
                            let r =
                                ReassignablePartitionResponse::default().with_partition_index(p);
                            match result {
                                Ok(()) => r,
                                Err(e) => r
                                    .with_error_code(e.code)
                                    .with_error_message(Some(str_bytes(e.message))),
                            }
                        })
                        .collect(),
                )
        })
        .collect();
    AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(req.allow_replication_factor_change)
        .with_responses(responses)
}

/// Resources that have configs: topics and this broker. Version 0 (once
/// ListClientMetricsResources) lists only client-metrics resources, of which there are none.
pub fn list_config_resources(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: ListConfigResourcesRequest,
    version: i16,
) -> ListConfigResourcesResponse {
    const TOPIC: i8 = 2;
    const BROKER: i8 = 4;
    if version == 0 {
        return ListConfigResourcesResponse::default();
    }
    // As its predecessor ListClientMetricsResources: DESCRIBE_CONFIGS on the cluster.
    if !authorize(ctx, Operation::DescribeConfigs, Resource::Cluster) {
        return ListConfigResourcesResponse::default()
            .with_error_code(ErrorCode::ClusterAuthorizationFailed.code());
    }
    let wants = |t: i8| req.resource_types.is_empty() || req.resource_types.contains(&t);
    let mut resources = Vec::new();
    if wants(TOPIC) {
        for t in broker.image().topics() {
            resources.push(
                ConfigResource::default()
                    .with_resource_name(str_bytes(t.name.clone()))
                    .with_resource_type(TOPIC),
            );
        }
    }
    if wants(BROKER) {
        resources.push(
            ConfigResource::default()
                .with_resource_name(str_bytes(broker.node_id().to_string()))
                .with_resource_type(BROKER),
        );
    }
    ListConfigResourcesResponse::default().with_config_resources(resources)
}

/// The metadata quorum (`__cluster_metadata` partition 0) as this node's Raft node sees it:
/// the leader, the term as the leader epoch, the committed end as the high watermark, and
/// each voter's log end.
pub fn describe_quorum(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: DescribeQuorumRequest,
    version: i16,
) -> DescribeQuorumResponse {
    use kafka_protocol::messages::describe_quorum_response::{
        Listener, Node, PartitionData, ReplicaState, TopicData,
    };
    if !authorize(ctx, Operation::Describe, Resource::Cluster) {
        return DescribeQuorumResponse::default()
            .with_error_code(ErrorCode::ClusterAuthorizationFailed.code());
    }
    let node = broker.node_id();
    let quorum = broker.controller().describe();
    let now = crate::partition::now_ms();
    let as_id = |id: u64| BrokerId(i32::try_from(id).unwrap_or(-1));
    let voters: Vec<ReplicaState> = quorum
        .voters
        .iter()
        .map(|(id, end)| {
            let seen = if version >= 1 && end.is_some() {
                now
            } else {
                -1
            };
            ReplicaState::default()
                .with_replica_id(as_id(*id))
                .with_log_end_offset(end.map_or(-1, |e| e as i64))
                .with_last_fetch_timestamp(seen)
                .with_last_caught_up_timestamp(seen)
        })
        .collect();
    // The brokers that are not voters and fetch the metadata (from this voter, or as the
    // voter a broker-only node fetched from last saw them).
    let observers: Vec<ReplicaState> = quorum
        .observers
        .iter()
        .map(|(id, end, at)| {
            ReplicaState::default()
                .with_replica_id(as_id(*id))
                .with_log_end_offset(*end as i64)
                .with_last_fetch_timestamp(if version >= 1 { *at } else { -1 })
                .with_last_caught_up_timestamp(-1)
        })
        .collect();
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let known = t.topic_name.0.as_str() == "__cluster_metadata";
            TopicData::default()
                .with_topic_name(t.topic_name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            if !known || p.partition_index != 0 {
                                return PartitionData::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(ErrorCode::UnknownTopicOrPartition.code());
                            }
                            PartitionData::default()
                                .with_partition_index(0)
                                .with_leader_id(quorum.leader.map_or(BrokerId(-1), as_id))
                                .with_leader_epoch(i32::try_from(quorum.term).unwrap_or(i32::MAX))
                                .with_high_watermark(quorum.high_watermark as i64)
                                .with_current_voters(voters.clone())
                                .with_observers(observers.clone())
                        })
                        .collect(),
                )
        })
        .collect();
    let nodes = if version >= 2 {
        vec![Node::default().with_node_id(BrokerId(node)).with_listeners(
            broker
                .config
                .advertised_listeners
                .iter()
                .map(|l| {
                    Listener::default()
                        .with_name(str_bytes(l.name.clone()))
                        .with_host(str_bytes(l.host.clone()))
                        .with_port(l.port)
                })
                .collect(),
        )]
    } else {
        Vec::new()
    };
    DescribeQuorumResponse::default()
        .with_topics(topics)
        .with_nodes(nodes)
}

/// Moving a replica between log directories: there is one directory, so a move to it is a
/// no-op and any other path is LOG_DIR_NOT_FOUND.
pub fn alter_replica_log_dirs(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: AlterReplicaLogDirsRequest,
) -> AlterReplicaLogDirsResponse {
    use kafka_protocol::messages::alter_replica_log_dirs_response::{
        AlterReplicaLogDirPartitionResult, AlterReplicaLogDirTopicResult,
    };
    let dir = &broker.config.data_dir;
    let ours = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
    let image = broker.image();
    let mut results = Vec::new();
    for d in &req.dirs {
        let same = std::fs::canonicalize(d.path.as_str()).is_ok_and(|p| p == ours);
        for t in &d.topics {
            let topic = image.topic_by_name(t.name.0.as_str());
            results.push(
                AlterReplicaLogDirTopicResult::default()
                    .with_topic_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                let code = if !authorize(ctx, Operation::Alter, Resource::Cluster) {
                                    ErrorCode::ClusterAuthorizationFailed.code()
                                } else if topic.is_none_or(|x| !x.partitions.contains_key(p)) {
                                    ErrorCode::UnknownTopicOrPartition.code()
                                } else if !same {
                                    ErrorCode::LogDirNotFound.code()
                                } else {
                                    0
                                };
                                AlterReplicaLogDirPartitionResult::default()
                                    .with_partition_index(*p)
                                    .with_error_code(code)
                            })
                            .collect(),
                    ),
            );
        }
    }
    AlterReplicaLogDirsResponse::default().with_results(results)
}
