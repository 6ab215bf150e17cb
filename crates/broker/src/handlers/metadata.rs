//! Metadata, FindCoordinator, DescribeCluster, DescribeTopicPartitions.

use std::collections::HashSet;
use std::sync::Arc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, DescribeTopicPartitionsRequest,
    DescribeTopicPartitionsResponse, FindCoordinatorRequest, FindCoordinatorResponse,
    MetadataRequest, MetadataResponse, TopicName,
};
use strata_protocol::topic::is_internal;
use strata_protocol::ErrorCode;
use strata_quorum::controller::ops::{CreateTopics, NewTopic};
use strata_quorum::{MetadataImage, TopicImage};
use uuid::Uuid;

use super::str_bytes;
use crate::auth::{
    authorize, authorize_quiet, authorized_operations, ConnectionContext, Operation, Resource,
    CLUSTER_OPERATIONS, TOPIC_OPERATIONS,
};
use crate::broker::Broker;

/// "Authorized operations were not requested" on the wire.
const OPERATIONS_OMITTED: i32 = i32::MIN;

pub async fn metadata(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    // v0 answers every topic for an empty list; v1+ uses null for "all".
    let requested: Option<Vec<(Option<String>, Uuid)>> = match req.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(
            t.into_iter()
                .map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id))
                .collect(),
        ),
    };
    let allow_auto_create =
        broker.config.auto_create_topics && (version < 4 || req.allow_auto_topic_creation);
    let include_ops = req.include_topic_authorized_operations;
    // As Kafka: a requested topic the principal may not DESCRIBE is answered
    // TOPIC_AUTHORIZATION_FAILED whether it exists or not (its existence is not disclosed),
    // and one that would be auto-created needs CREATE on the cluster or on the topic.
    let mut refused_create = HashSet::new();
    if let (Some(list), true) = (&requested, allow_auto_create) {
        let describable: Vec<&String> = list
            .iter()
            .filter_map(|(name, _)| name.as_ref())
            .filter(|n| authorize(ctx, Operation::Describe, Resource::Topic(n)))
            .collect();
        refused_create = auto_create(broker, ctx, &describable).await;
    }
    let image = broker.image();
    let refused = |name: Option<String>, id: Uuid| {
        MetadataResponseTopic::default()
            .with_error_code(ErrorCode::TopicAuthorizationFailed.code())
            .with_name(name.map(|n| TopicName(str_bytes(n))))
            .with_topic_id(id)
            .with_topic_authorized_operations(OPERATIONS_OMITTED)
    };
    let topics = match requested {
        // Listing every topic shows only those the principal may DESCRIBE (not audited: the
        // listing is filtered, nothing is refused).
        None => image
            .topics()
            .filter(|t| authorize_quiet(ctx, Operation::Describe, Resource::Topic(&t.name)))
            .map(|t| topic_metadata(ctx, t, include_ops))
            .collect(),
        Some(list) => list
            .into_iter()
            .map(|(name, id)| {
                let found = match &name {
                    Some(n) => {
                        if !authorize_quiet(ctx, Operation::Describe, Resource::Topic(n)) {
                            // Audited once, above, when auto-creation asked; else here.
                            if !allow_auto_create {
                                authorize(ctx, Operation::Describe, Resource::Topic(n));
                            }
                            return refused(Some(n.clone()), Uuid::nil());
                        }
                        if refused_create.contains(n) {
                            return refused(Some(n.clone()), Uuid::nil());
                        }
                        image.topic_by_name(n)
                    }
                    None => {
                        let found = image.topic_by_id(&id);
                        // Topic ids are not secret: an unauthorized one is refused by id.
                        if found.is_some_and(|t| {
                            !authorize(ctx, Operation::Describe, Resource::Topic(&t.name))
                        }) {
                            return refused(None, id);
                        }
                        found
                    }
                };
                match (found, name) {
                    (Some(t), _) => topic_metadata(ctx, t, include_ops),
                    (None, Some(n)) => {
                        let code = if strata_protocol::topic::validate_topic_name(&n).is_err() {
                            ErrorCode::InvalidTopicException
                        } else {
                            ErrorCode::UnknownTopicOrPartition
                        };
                        MetadataResponseTopic::default()
                            .with_error_code(code.code())
                            .with_name(Some(TopicName(str_bytes(n))))
                            .with_topic_authorized_operations(OPERATIONS_OMITTED)
                    }
                    (None, None) => MetadataResponseTopic::default()
                        .with_error_code(ErrorCode::UnknownTopicId.code())
                        .with_topic_id(id)
                        .with_topic_authorized_operations(OPERATIONS_OMITTED),
                }
            })
            .collect(),
    };
    MetadataResponse::default()
        .with_brokers(metadata_brokers(broker, &image, ctx))
        .with_cluster_id(Some(str_bytes(
            image.cluster_id.clone().unwrap_or_default(),
        )))
        .with_controller_id(BrokerId(controller_id(broker)))
        .with_topics(topics)
        .with_cluster_authorized_operations(if req.include_cluster_authorized_operations {
            cluster_operations(ctx)
        } else {
            OPERATIONS_OMITTED
        })
}

/// Creates requested topics that do not exist yet, with the broker's defaults; returns the
/// names refused for want of CREATE (on the cluster or the topic), which Metadata answers
/// TOPIC_AUTHORIZATION_FAILED.
async fn auto_create(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    requested: &[&String],
) -> HashSet<String> {
    let image = broker.image();
    let missing: Vec<String> = requested
        .iter()
        .filter(|n| image.topic_by_name(n).is_none())
        .filter(|n| strata_protocol::topic::validate_topic_name(n).is_ok())
        .map(|n| n.to_string())
        .collect();
    let mut refused = HashSet::new();
    if missing.is_empty() {
        return refused;
    }
    let may_create_any = authorize_quiet(ctx, Operation::Create, Resource::Cluster);
    let (missing, not_allowed): (Vec<String>, Vec<String>) = missing
        .into_iter()
        .partition(|n| may_create_any || authorize(ctx, Operation::Create, Resource::Topic(n)));
    refused.extend(not_allowed);
    if missing.is_empty() {
        return refused;
    }
    // As CreateTopics: no topic is made whose partitions could not be opened for lack of
    // descriptors; the names stay unknown and a later request tries again.
    if let Some(message) = crate::fd_limit::create_headroom_error() {
        tracing::warn!(topics = ?missing, %message, "not auto-creating topics");
        return refused;
    }
    // Another request may have created a name meanwhile, or an earlier name in this list may
    // collide with it: the controller plans each against the ones before and refuses those,
    // which stay as they are (unknown, or created by the other request).
    let op = CreateTopics {
        topics: missing.iter().map(NewTopic::named).collect(),
        validate_only: false,
    };
    match broker.submit(op).await {
        Ok(reply) => {
            let created: Vec<&String> = missing
                .iter()
                .zip(&reply.topics)
                .filter_map(|(name, result)| result.is_ok().then_some(name))
                .collect();
            if !created.is_empty() {
                tracing::info!(topics = ?created, "auto-created topics");
            }
        }
        Err(error) => tracing::error!(%error, "auto-creating topics failed"),
    }
    refused
}

/// A broker as clients are told of it: id, host and port of the listener the client
/// connected to, rack.
#[derive(Debug, Clone)]
pub(crate) struct ClusterBroker {
    pub id: i32,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
}

/// The brokers of the cluster, in id order: the registered, unfenced ones, with the endpoint of the
/// listener `listener` (by name, else their first), and this node from its own config
/// (it serves before its registration is committed).
pub(crate) fn cluster_brokers(
    broker: &Broker,
    image: &MetadataImage,
    listener: &str,
) -> Vec<ClusterBroker> {
    let me = broker.node_id();
    let own = broker.config.advertised_for(listener);
    let mut brokers: Vec<ClusterBroker> = image
        .brokers()
        .filter(|b| b.node_id != me && !b.fenced)
        .filter_map(|b| {
            let e = b.endpoint(listener)?;
            Some(ClusterBroker {
                id: b.node_id,
                host: e.host.clone(),
                port: e.port,
                rack: b.rack.clone(),
            })
        })
        .collect();
    brokers.push(ClusterBroker {
        id: me,
        host: own.host.clone(),
        port: own.port,
        rack: broker.config.set.get("broker.rack").cloned(),
    });
    brokers.sort_by_key(|b| b.id);
    brokers
}

/// The controller id clients are told: the active controller (the metadata quorum's
/// leader) when it is also a live broker, else this broker. Clients send admin requests
/// there and cannot reach a controller-only node, so Kafka names a live broker too, which
/// forwards them.
pub(crate) fn controller_id(broker: &Broker) -> i32 {
    let image = broker.image();
    broker
        .controller()
        .leader()
        .and_then(|(l, _)| i32::try_from(l).ok())
        .filter(|l| image.broker(*l).is_some_and(|b| !b.fenced))
        .unwrap_or_else(|| broker.node_id())
}

fn metadata_brokers(
    broker: &Broker,
    image: &MetadataImage,
    ctx: &ConnectionContext,
) -> Vec<MetadataResponseBroker> {
    cluster_brokers(broker, image, &ctx.listener)
        .into_iter()
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.id))
                .with_host(str_bytes(b.host))
                .with_port(i32::from(b.port))
                .with_rack(b.rack.map(str_bytes))
        })
        .collect()
}

fn topic_metadata(
    ctx: &ConnectionContext,
    topic: &TopicImage,
    include_operations: bool,
) -> MetadataResponseTopic {
    let partitions = topic
        .partitions
        .values()
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p.partition)
                .with_leader_id(BrokerId(p.leader))
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(p.replicas.iter().copied().map(BrokerId).collect())
                .with_isr_nodes(p.isr.iter().copied().map(BrokerId).collect())
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(topic.name.clone()))))
        .with_topic_id(topic.topic_id)
        .with_is_internal(is_internal(&topic.name))
        .with_partitions(partitions)
        .with_topic_authorized_operations(if include_operations {
            authorized_operations(ctx, Resource::Topic(&topic.name), TOPIC_OPERATIONS)
        } else {
            OPERATIONS_OMITTED
        })
}

/// The coordinator of a group or transactional id is the leader of its partition of the
/// internal topic (created on first use).
pub async fn find_coordinator(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    const GROUP: i8 = 0;
    const TRANSACTION: i8 = 1;
    let ensured = match req.key_type {
        GROUP => super::groups::ensure_offsets_topic(broker).await,
        TRANSACTION => {
            let partitions = broker.txns.state_partitions;
            super::groups::ensure_internal_topic(broker, crate::txn::TXN_TOPIC, partitions).await
        }
        _ => Err(ErrorCode::InvalidRequest),
    };
    // The coordinator of a key is the leader of its internal partition.
    let image = broker.image();
    let brokers = cluster_brokers(broker, &image, &ctx.listener);
    let coordinator = |key: &str| -> Result<(i32, String, i32), ErrorCode> {
        ensured?;
        let (topic, partition) = match req.key_type {
            GROUP => (
                crate::groups::OFFSETS_TOPIC,
                broker.groups.partition_for(key),
            ),
            _ => (crate::txn::TXN_TOPIC, broker.txns.partition_for(key)),
        };
        let leader = image
            .topic_by_name(topic)
            .and_then(|t| t.partitions.get(&partition))
            .map(|p| p.leader)
            .ok_or(ErrorCode::CoordinatorNotAvailable)?;
        let b = brokers
            .iter()
            .find(|b| b.id == leader)
            .ok_or(ErrorCode::CoordinatorNotAvailable)?;
        Ok((b.id, b.host.clone(), i32::from(b.port)))
    };
    let answer = |key: &str| match coordinator(key) {
        Ok((n, h, p)) => (n, h, p, 0, None),
        Err(e) => (
            -1,
            String::new(),
            -1,
            e.code(),
            Some(str_bytes(e.to_string())),
        ),
    };
    // DESCRIBE on the group or transactional id, per key (Kafka checks after the key type).
    let refusal = |key: &str| -> Option<ErrorCode> {
        match req.key_type {
            GROUP if !authorize(ctx, Operation::Describe, Resource::Group(key)) => {
                Some(ErrorCode::GroupAuthorizationFailed)
            }
            TRANSACTION if !authorize(ctx, Operation::Describe, Resource::TransactionalId(key)) => {
                Some(ErrorCode::TransactionalIdAuthorizationFailed)
            }
            _ => None,
        }
    };
    let refused = |e: ErrorCode| {
        (
            -1,
            String::new(),
            -1,
            e.code(),
            Some(str_bytes(e.to_string())),
        )
    };
    if version >= 4 {
        let coordinators = req
            .coordinator_keys
            .iter()
            .map(|key| {
                let (node, host, port, code, message) = match refusal(key) {
                    Some(e) => refused(e),
                    None => answer(key),
                };
                Coordinator::default()
                    .with_key(key.clone())
                    .with_node_id(BrokerId(node))
                    .with_host(str_bytes(host))
                    .with_port(port)
                    .with_error_code(code)
                    .with_error_message(message)
            })
            .collect();
        FindCoordinatorResponse::default().with_coordinators(coordinators)
    } else {
        let (node, host, port, code, message) = match refusal(&req.key) {
            Some(e) => refused(e),
            None => answer(&req.key),
        };
        FindCoordinatorResponse::default()
            .with_error_code(code)
            .with_error_message(message.filter(|_| version >= 1))
            .with_node_id(BrokerId(node))
            .with_host(str_bytes(host))
            .with_port(port)
    }
}

pub fn describe_cluster(
    broker: &Broker,
    ctx: &ConnectionContext,
    req: DescribeClusterRequest,
) -> DescribeClusterResponse {
    // Open to every principal, as in Kafka (clients bootstrap with it like with Metadata);
    // only the authorized-operations bit set depends on DESCRIBE on the cluster.
    let nodes: Vec<DescribeClusterBroker> = cluster_brokers(broker, &broker.image(), &ctx.listener)
        .into_iter()
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.id))
                .with_host(str_bytes(b.host))
                .with_port(i32::from(b.port))
                .with_rack(b.rack.map(str_bytes))
        })
        .collect();
    // endpoint_type 1 asks for brokers, 2 for controllers; one node is both.
    let endpoint_type = if req.endpoint_type == 0 {
        1
    } else {
        req.endpoint_type
    };
    DescribeClusterResponse::default()
        .with_endpoint_type(endpoint_type)
        .with_cluster_id(str_bytes(broker.cluster_id()))
        .with_controller_id(BrokerId(controller_id(broker)))
        .with_brokers(nodes)
        .with_cluster_authorized_operations(if req.include_cluster_authorized_operations {
            cluster_operations(ctx)
        } else {
            OPERATIONS_OMITTED
        })
}

pub fn describe_topic_partitions(
    broker: &Broker,
    ctx: &ConnectionContext,
    req: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let image: Arc<MetadataImage> = broker.image();
    let limit = req.response_partition_limit.clamp(1, 2000) as usize;
    let listing_all = req.topics.is_empty();
    let mut names: Vec<String> = if listing_all {
        // Only the topics the principal may DESCRIBE are listed.
        image
            .topics()
            .filter(|t| authorize_quiet(ctx, Operation::Describe, Resource::Topic(&t.name)))
            .map(|t| t.name.clone())
            .collect()
    } else {
        req.topics.iter().map(|t| t.name.0.to_string()).collect()
    };
    names.sort();
    names.dedup();
    let (start_topic, start_partition) = match &req.cursor {
        Some(c) => (Some(c.topic_name.0.to_string()), c.partition_index),
        None => (None, 0),
    };
    let mut budget = limit;
    let mut topics = Vec::new();
    let mut next_cursor = None;
    for name in names {
        if let Some(start) = &start_topic {
            if &name < start {
                continue;
            }
        }
        // Authorized before its existence is looked at, so that it is not disclosed.
        if !listing_all && !authorize(ctx, Operation::Describe, Resource::Topic(&name)) {
            topics.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_error_code(ErrorCode::TopicAuthorizationFailed.code())
                    .with_name(Some(TopicName(str_bytes(name))))
                    .with_topic_authorized_operations(OPERATIONS_OMITTED),
            );
            continue;
        }
        let Some(topic) = image.topic_by_name(&name) else {
            topics.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_error_code(ErrorCode::UnknownTopicOrPartition.code())
                    .with_name(Some(TopicName(str_bytes(name))))
                    .with_topic_authorized_operations(OPERATIONS_OMITTED),
            );
            continue;
        };
        if budget == 0 {
            next_cursor = Some(
                Cursor::default()
                    .with_topic_name(TopicName(str_bytes(name)))
                    .with_partition_index(0),
            );
            break;
        }
        let first = if start_topic.as_deref() == Some(name.as_str()) {
            start_partition
        } else {
            0
        };
        let mut partitions = Vec::new();
        for p in topic.partitions.values().filter(|p| p.partition >= first) {
            if budget == 0 {
                next_cursor = Some(
                    Cursor::default()
                        .with_topic_name(TopicName(str_bytes(name.clone())))
                        .with_partition_index(p.partition),
                );
                break;
            }
            budget -= 1;
            partitions.push(
                DescribeTopicPartitionsResponsePartition::default()
                    .with_partition_index(p.partition)
                    .with_leader_id(BrokerId(p.leader))
                    .with_leader_epoch(p.leader_epoch)
                    .with_replica_nodes(p.replicas.iter().copied().map(BrokerId).collect())
                    .with_isr_nodes(p.isr.iter().copied().map(BrokerId).collect())
                    .with_eligible_leader_replicas(Some(vec![]))
                    .with_last_known_elr(Some(vec![])),
            );
        }
        topics.push(
            DescribeTopicPartitionsResponseTopic::default()
                .with_name(Some(TopicName(str_bytes(name.clone()))))
                .with_topic_id(topic.topic_id)
                .with_is_internal(is_internal(&name))
                .with_partitions(partitions)
                .with_topic_authorized_operations(authorized_operations(
                    ctx,
                    Resource::Topic(&name),
                    TOPIC_OPERATIONS,
                )),
        );
        if next_cursor.is_some() {
            break;
        }
    }
    DescribeTopicPartitionsResponse::default()
        .with_topics(topics)
        .with_next_cursor(next_cursor)
}

/// The cluster operations the principal may perform, as Metadata and DescribeCluster report
/// them: none without DESCRIBE on the cluster (Kafka's rule).
fn cluster_operations(ctx: &ConnectionContext) -> i32 {
    if authorize_quiet(ctx, Operation::Describe, Resource::Cluster) {
        authorized_operations(ctx, Resource::Cluster, CLUSTER_OPERATIONS)
    } else {
        0
    }
}
