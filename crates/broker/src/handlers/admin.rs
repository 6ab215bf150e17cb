//! CreateTopics, DeleteTopics, CreatePartitions: validate against the image, then commit
//! metadata records.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};
use strata_protocol::topic::{collision_key, validate_topic_name};
use strata_protocol::ErrorCode;
use strata_quorum::{ConfigResource, MetadataImage, MetadataRecord};
use uuid::Uuid;

use super::str_bytes;
use crate::auth::{authorize, ConnectionContext, Operation, Resource};
use crate::broker::Broker;
use crate::config::{
    resolve_topic_config, topic_config_def, validate_value, BrokerConfig, ConfigLayers,
    TOPIC_CONFIGS,
};

/// Partitions one request may create, so a typo cannot exhaust file handles.
const MAX_PARTITIONS_PER_TOPIC: i32 = 10_000;

pub type ApiError = (ErrorCode, String);

/// Checks topic configs (known key, valid value).
pub fn validate_topic_configs(configs: &BTreeMap<String, String>) -> Result<(), ApiError> {
    for (k, v) in configs {
        let def = topic_config_def(k).ok_or_else(|| {
            (
                ErrorCode::InvalidConfig,
                format!("Unknown topic config name: {k}"),
            )
        })?;
        validate_value(&def.def, v).map_err(|e| (ErrorCode::InvalidConfig, e.to_string()))?;
    }
    let ignored = crate::config::topic_configs_not_in_effect(configs.keys());
    if !ignored.is_empty() {
        tracing::warn!(
            keys = ignored.join(","),
            "topic configuration keys accepted but not in effect yet"
        );
    }
    Ok(())
}

/// The records that create topic `name`. `partitions`/`replication_factor` of -1 take the
/// broker defaults; `assignments` (partition → replicas) replace both when non-empty.
pub fn plan_create_topic(
    image: &MetadataImage,
    config: &BrokerConfig,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    assignments: &[(i32, Vec<i32>)],
    configs: &BTreeMap<String, String>,
) -> Result<Vec<MetadataRecord>, ApiError> {
    validate_topic_name(name).map_err(|e| (ErrorCode::InvalidTopicException, e.to_string()))?;
    if image.topic_by_name(name).is_some() {
        return Err((
            ErrorCode::TopicAlreadyExists,
            format!("Topic '{name}' already exists."),
        ));
    }
    let key = collision_key(name);
    if let Some(other) = image.topics().find(|t| collision_key(&t.name) == key) {
        return Err((
            ErrorCode::InvalidTopicException,
            format!(
                "Topic '{name}' collides with existing topic '{}': '.' and '_' are interchangeable in metric names",
                other.name
            ),
        ));
    }
    validate_topic_configs(configs)?;
    let brokers = [config.node_id];
    let replica_sets: Vec<(i32, Vec<i32>)> = if !assignments.is_empty() {
        if partitions != -1 || replication_factor != -1 {
            return Err((
                ErrorCode::InvalidRequest,
                "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.".into(),
            ));
        }
        let mut sorted = assignments.to_vec();
        sorted.sort_by_key(|(p, _)| *p);
        for (i, (p, replicas)) in sorted.iter().enumerate() {
            if *p != i as i32 {
                return Err((
                    ErrorCode::InvalidReplicaAssignment,
                    "Partitions must be numbered consecutively from 0.".into(),
                ));
            }
            validate_replicas(replicas, &brokers)?;
        }
        sorted
    } else {
        let n = if partitions == -1 {
            config.num_partitions
        } else {
            partitions
        };
        let rf = if replication_factor == -1 {
            config.default_replication_factor
        } else {
            replication_factor
        };
        if n <= 0 || n > MAX_PARTITIONS_PER_TOPIC {
            return Err((
                ErrorCode::InvalidPartitions,
                format!("Number of partitions must be between 1 and {MAX_PARTITIONS_PER_TOPIC}, not {n}."),
            ));
        }
        if rf <= 0 {
            return Err((
                ErrorCode::InvalidReplicationFactor,
                "Replication factor must be larger than 0.".into(),
            ));
        }
        if rf as usize > brokers.len() {
            return Err((
                ErrorCode::InvalidReplicationFactor,
                format!(
                    "Unable to replicate the partition {rf} time(s): The target replication factor of {rf} cannot be reached because only {} broker(s) are registered.",
                    brokers.len()
                ),
            ));
        }
        (0..n).map(|p| (p, brokers.to_vec())).collect()
    };
    let topic_id = Uuid::new_v4();
    let mut records = vec![MetadataRecord::Topic {
        name: name.to_string(),
        topic_id,
    }];
    for (k, v) in configs {
        records.push(MetadataRecord::Config {
            resource: ConfigResource::Topic(name.to_string()),
            name: k.clone(),
            value: Some(v.clone()),
        });
    }
    records.extend(
        replica_sets
            .into_iter()
            .map(|(p, replicas)| partition_record(topic_id, p, replicas)),
    );
    Ok(records)
}

fn partition_record(topic_id: Uuid, partition: i32, replicas: Vec<i32>) -> MetadataRecord {
    MetadataRecord::Partition {
        topic_id,
        partition,
        leader: replicas[0],
        isr: replicas.clone(),
        replicas,
        leader_epoch: 0,
        partition_epoch: 0,
    }
}

fn validate_replicas(replicas: &[i32], brokers: &[i32]) -> Result<(), ApiError> {
    if replicas.is_empty() {
        return Err((
            ErrorCode::InvalidReplicaAssignment,
            "A partition needs at least one replica.".into(),
        ));
    }
    let mut seen = replicas.to_vec();
    seen.sort_unstable();
    seen.dedup();
    if seen.len() != replicas.len() {
        return Err((
            ErrorCode::InvalidReplicaAssignment,
            "Duplicate brokers in a replica assignment.".into(),
        ));
    }
    if let Some(b) = replicas.iter().find(|b| !brokers.contains(b)) {
        return Err((
            ErrorCode::InvalidReplicaAssignment,
            format!("Broker {b} in the replica assignment is not registered."),
        ));
    }
    Ok(())
}

pub async fn create_topics(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    struct Wanted {
        name: String,
        partitions: i32,
        replication_factor: i16,
        assignments: Vec<(i32, Vec<i32>)>,
        configs: BTreeMap<String, String>,
        authorized: bool,
        duplicate: bool,
    }
    let mut seen = std::collections::HashMap::new();
    for t in &req.topics {
        *seen.entry(t.name.0.to_string()).or_insert(0) += 1;
    }
    let wanted: Vec<Wanted> = req
        .topics
        .iter()
        .map(|t| Wanted {
            name: t.name.0.to_string(),
            partitions: t.num_partitions,
            replication_factor: t.replication_factor,
            assignments: t
                .assignments
                .iter()
                .map(|a| {
                    (
                        a.partition_index,
                        a.broker_ids.iter().map(|b| b.0).collect(),
                    )
                })
                .collect(),
            configs: t
                .configs
                .iter()
                .filter_map(|c| {
                    c.value
                        .as_ref()
                        .map(|v| (c.name.to_string(), v.to_string()))
                })
                .collect(),
            authorized: authorize(ctx, Operation::Create, Resource::Topic(t.name.0.as_str())),
            duplicate: seen.get(t.name.0.as_str()).copied().unwrap_or(0) > 1,
        })
        .collect();
    let validate_only = req.validate_only;
    let config = broker.config.clone();
    let outcome = broker
        .commit(move |image| {
            let mut scratch = image.clone();
            let mut records = Vec::new();
            let mut results = Vec::new();
            // Checked once, under the metadata lock: a topic is created with all its
            // partitions or not at all, never left half-made for lack of descriptors.
            let mut headroom: Option<Option<String>> = None;
            for w in wanted {
                let planned = if w.duplicate {
                    Err((
                        ErrorCode::InvalidRequest,
                        format!("Topic '{}' appears more than once in the request.", w.name),
                    ))
                } else if !w.authorized {
                    Err((
                        ErrorCode::TopicAuthorizationFailed,
                        "Not authorized to create the topic.".into(),
                    ))
                } else {
                    plan_create_topic(
                        &scratch,
                        &config,
                        &w.name,
                        w.partitions,
                        w.replication_factor,
                        &w.assignments,
                        &w.configs,
                    )
                    .and_then(|plan| {
                        match headroom.get_or_insert_with(crate::fd_limit::create_headroom_error) {
                            Some(message) => Err((ErrorCode::PolicyViolation, message.clone())),
                            None => Ok(plan),
                        }
                    })
                };
                match planned {
                    Ok(plan) => {
                        for r in &plan {
                            scratch.apply(r);
                        }
                        if !validate_only {
                            records.extend(plan);
                        }
                        results.push((w.name, Ok(())));
                    }
                    Err(e) => results.push((w.name, Err(e))),
                }
            }
            (records, (results, scratch))
        })
        .await;
    let (results, scratch) = match outcome {
        Ok(r) => r,
        Err(error) => {
            tracing::error!(%error, "create topics failed");
            let topics = req
                .topics
                .iter()
                .map(|t| {
                    CreatableTopicResult::default()
                        .with_name(t.name.clone())
                        .with_error_code(ErrorCode::UnknownServerError.code())
                        .with_error_message(Some(str_bytes(error.to_string())))
                })
                .collect();
            return CreateTopicsResponse::default().with_topics(topics);
        }
    };
    let topics = results
        .into_iter()
        .map(|(name, result)| {
            let base =
                CreatableTopicResult::default().with_name(TopicName(str_bytes(name.clone())));
            match result {
                // topic_config_error_code, num_partitions, replication_factor and configs
                // exist from v5, topic_id from v7.
                Err((code, message)) => base
                    .with_error_code(code.code())
                    .with_error_message(Some(str_bytes(message)))
                    .with_topic_config_error_code(
                        if code == ErrorCode::InvalidConfig && version >= 5 {
                            code.code()
                        } else {
                            0
                        },
                    ),
                Ok(()) => {
                    let topic = scratch.topic_by_name(&name).expect("planned above");
                    let mut result = base;
                    if version >= 7 {
                        result = result.with_topic_id(topic.topic_id);
                    }
                    if version >= 5 {
                        result = result
                            .with_num_partitions(topic.partitions.len() as i32)
                            .with_replication_factor(
                                topic
                                    .partitions
                                    .values()
                                    .next()
                                    .map_or(1, |p| p.replicas.len() as i16),
                            )
                            .with_configs(Some(created_configs(broker, &scratch, &topic.configs)));
                    }
                    result
                }
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

fn created_configs(
    broker: &Broker,
    image: &MetadataImage,
    overrides: &BTreeMap<String, String>,
) -> Vec<CreatableTopicConfigs> {
    let layers = ConfigLayers {
        topic: overrides,
        dynamic_broker: image.broker_configs.get(&Some(broker.node_id())),
        dynamic_default: image.broker_configs.get(&None),
        static_broker: &broker.config.set,
    };
    TOPIC_CONFIGS
        .iter()
        .map(|def| {
            let r = resolve_topic_config(def, &layers);
            CreatableTopicConfigs::default()
                .with_name(str_bytes(r.name))
                .with_value(r.value.map(str_bytes))
                .with_config_source(r.source as i8)
        })
        .collect()
}

pub async fn delete_topics(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    // v6+ names topics by name or id; older versions by name only.
    let wanted: Vec<(Option<String>, Uuid)> = if version >= 6 {
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        req.topic_names
            .iter()
            .map(|n| (Some(n.0.to_string()), Uuid::nil()))
            .collect()
    };
    let ctx = ctx.clone();
    let outcome = broker
        .commit(move |image| {
            let mut records = Vec::new();
            let mut results = Vec::new();
            for (name, id) in wanted {
                let topic = match &name {
                    Some(n) => image.topic_by_name(n),
                    None => image.topic_by_id(&id),
                };
                let result = match topic {
                    None if name.is_none() => Err(ErrorCode::UnknownTopicId),
                    None => Err(ErrorCode::UnknownTopicOrPartition),
                    Some(t) if !authorize(&ctx, Operation::Delete, Resource::Topic(&t.name)) => {
                        Err(ErrorCode::TopicAuthorizationFailed)
                    }
                    Some(t) if records.iter().any(|r| matches!(r, MetadataRecord::RemoveTopic { topic_id } if *topic_id == t.topic_id)) => {
                        Ok((t.name.clone(), t.topic_id))
                    }
                    Some(t) => {
                        records.push(MetadataRecord::RemoveTopic { topic_id: t.topic_id });
                        Ok((t.name.clone(), t.topic_id))
                    }
                };
                results.push((name, id, result));
            }
            (records, results)
        })
        .await;
    let results = match outcome {
        Ok(r) => r,
        Err(error) => {
            tracing::error!(%error, "delete topics failed");
            return DeleteTopicsResponse::default();
        }
    };
    let responses = results
        .into_iter()
        // topic_id exists from v6, error_message from v5.
        .map(|(name, id, result)| match result {
            Ok((name, id)) => DeletableTopicResult::default()
                .with_name(Some(TopicName(str_bytes(name))))
                .with_topic_id(if version >= 6 { id } else { Uuid::nil() }),
            Err(code) => DeletableTopicResult::default()
                .with_name(name.map(|n| TopicName(str_bytes(n))))
                .with_topic_id(if version >= 6 { id } else { Uuid::nil() })
                .with_error_code(code.code())
                .with_error_message((version >= 5).then(|| str_bytes(code.to_string()))),
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}

pub async fn create_partitions(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let node_id = broker.node_id();
    let validate_only = req.validate_only;
    let ctx = ctx.clone();
    let topics = req.topics.clone();
    let outcome = broker
        .commit(move |image| {
            let mut records = Vec::new();
            let mut results = Vec::new();
            let mut headroom: Option<Option<String>> = None;
            for t in topics {
                let name = t.name.0.to_string();
                let result = (|| -> Result<Vec<MetadataRecord>, ApiError> {
                    let topic = image.topic_by_name(&name).ok_or((
                        ErrorCode::UnknownTopicOrPartition,
                        format!("The topic '{name}' does not exist."),
                    ))?;
                    if !authorize(&ctx, Operation::Alter, Resource::Topic(&name)) {
                        return Err((ErrorCode::TopicAuthorizationFailed, "Not authorized.".into()));
                    }
                    let current = topic.partitions.len() as i32;
                    if t.count <= current {
                        return Err((
                            ErrorCode::InvalidPartitions,
                            format!("Topic currently has {current} partitions, which is higher than or equal to the requested {}.", t.count),
                        ));
                    }
                    if t.count > MAX_PARTITIONS_PER_TOPIC {
                        return Err((ErrorCode::InvalidPartitions, format!("At most {MAX_PARTITIONS_PER_TOPIC} partitions.")));
                    }
                    let added = (t.count - current) as usize;
                    let assignments: Vec<Vec<i32>> = match &t.assignments {
                        Some(a) => {
                            if a.len() != added {
                                return Err((
                                    ErrorCode::InvalidReplicaAssignment,
                                    format!("Increasing the number of partitions by {added} but {} assignments provided.", a.len()),
                                ));
                            }
                            a.iter().map(|x| x.broker_ids.iter().map(|b| b.0).collect()).collect()
                        }
                        None => {
                            let rf = topic.partitions.values().next().map_or(1, |p| p.replicas.len());
                            if rf > 1 {
                                return Err((ErrorCode::InvalidReplicationFactor, "Only one broker is registered.".into()));
                            }
                            vec![vec![node_id]; added]
                        }
                    };
                    let mut out = Vec::new();
                    for (i, replicas) in assignments.into_iter().enumerate() {
                        validate_replicas(&replicas, &[node_id])?;
                        out.push(partition_record(topic.topic_id, current + i as i32, replicas));
                    }
                    if let Some(message) = headroom.get_or_insert_with(crate::fd_limit::create_headroom_error) {
                        return Err((ErrorCode::PolicyViolation, message.clone()));
                    }
                    Ok(out)
                })();
                match result {
                    Ok(plan) => {
                        if !validate_only {
                            records.extend(plan);
                        }
                        results.push((name, None));
                    }
                    Err(e) => results.push((name, Some(e))),
                }
            }
            (records, results)
        })
        .await;
    let results = match outcome {
        Ok(r) => r,
        Err(error) => {
            tracing::error!(%error, "create partitions failed");
            return CreatePartitionsResponse::default();
        }
    };
    CreatePartitionsResponse::default().with_results(
        results
            .into_iter()
            .map(|(name, err)| {
                let r =
                    CreatePartitionsTopicResult::default().with_name(TopicName(str_bytes(name)));
                match err {
                    None => r,
                    Some((code, message)) => r
                        .with_error_code(code.code())
                        .with_error_message(Some(str_bytes(message))),
                }
            })
            .collect(),
    )
}
