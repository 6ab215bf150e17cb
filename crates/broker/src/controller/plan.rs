//! Pure plans: a controller operation, the image it is planned against and the broker config
//! give the records that perform it and the reply. No I/O, no clock: planning twice against
//! the same image gives the same answer (only new topic ids are random).
//!
//! Per-item failures are answered in the reply with Kafka's error codes, as the admin APIs
//! report them per topic or resource; an `Err` from [`plan`] refuses the whole operation.
//! `validate_only` operations are planned in full and yield no records.

use std::borrow::Cow;
use std::collections::BTreeMap;

use strata_protocol::topic::{collision_key, validate_topic_name};
use strata_protocol::ErrorCode;
use strata_quorum::controller::ops::{
    AllocateProducerIds, AlterConfigs, AlterConfigsReply, AlterPartition,
    AlterPartitionReassignments, AlterPartitionReassignmentsReply, AlterPartitionReply,
    BrokerHeartbeatReply, ConfigOperation, ConfigTarget, ControllerOp, ControllerReply,
    CreatePartitions, CreatePartitionsReply, CreateTopics, CreateTopicsReply, CreatedTopic,
    DeleteTopics, DeleteTopicsReply, DeletedTopic, ElectLeaders, ElectLeadersReply,
    FenceBrokerReply, IncrementalAlterConfigs, ItemResult, NewPartitions, NewTopic, OpError,
    PartitionResult, ProducerIdBlock, RegisterBrokerReply, TopicRef,
};
use strata_quorum::controller::partition_change::{self, PartitionState};
use strata_quorum::controller::placement::{self, BrokerInfo, Stripe};
use strata_quorum::{ConfigResource, MetadataImage, MetadataRecord, TopicImage};
use uuid::Uuid;

use crate::config::{
    broker_config_def, resolve_topic_config, topic_config_def, validate_value, BrokerConfig,
    ConfigLayers, ConfigType,
};

/// Partitions one topic may have, so a typo cannot exhaust file handles.
pub const MAX_PARTITIONS_PER_TOPIC: i32 = 10_000;

/// Producer ids per allocated block (Kafka's controller hands out 1000 at a time).
pub const PRODUCER_ID_BLOCK: i64 = 1000;

/// An item refused with Kafka's `code`.
pub fn refuse(code: ErrorCode, message: impl Into<String>) -> OpError {
    OpError::new(code.code(), message)
}

/// The brokers new replicas may go to: this node alone until brokers register with the
/// controller (the cluster's registrations will list them with their racks and states).
fn usable_brokers(image: &MetadataImage, config: &BrokerConfig) -> Vec<BrokerInfo> {
    let mut brokers: Vec<BrokerInfo> = image
        .brokers()
        .map(|b| BrokerInfo {
            rack: b.rack.clone(),
            fenced: b.fenced,
            ..BrokerInfo::new(b.node_id)
        })
        .collect();
    // This node serves from its first start, before its registration is committed (a
    // controller-only node is no broker).
    if config.roles.broker && !brokers.iter().any(|b| b.id == config.node_id) {
        brokers.push(BrokerInfo {
            rack: config.set.get("broker.rack").cloned(),
            ..BrokerInfo::new(config.node_id)
        });
    }
    brokers
}

/// The brokers' states for partition changes: the registered ones with their fencing, and
/// this node, active, before its registration is committed.
fn broker_states(image: &MetadataImage, config: &BrokerConfig) -> partition_change::Brokers {
    let mut brokers: partition_change::Brokers = image
        .brokers()
        .map(|b| {
            let mut state = partition_change::BrokerState::active(0);
            state.fenced = b.fenced;
            (b.node_id, state)
        })
        .collect();
    if config.roles.broker {
        brokers
            .entry(config.node_id)
            .or_insert_with(|| partition_change::BrokerState::active(0));
    }
    brokers
}

/// A `Partition` record of `topic_id`'s partition `p` in `state`.
fn partition_record(
    topic_id: uuid::Uuid,
    p: i32,
    state: partition_change::PartitionState,
) -> MetadataRecord {
    MetadataRecord::Partition {
        topic_id,
        partition: p,
        replicas: state.replicas,
        isr: state.isr,
        leader: state.leader,
        leader_epoch: state.leader_epoch,
        partition_epoch: state.partition_epoch,
        adding_replicas: state.adding_replicas,
        removing_replicas: state.removing_replicas,
    }
}

/// The brokers a manual replica assignment may name: every registered one (fenced or not,
/// as Kafka's controller allows), and this node, registered or about to be.
fn registered_brokers(image: &MetadataImage, config: &BrokerConfig) -> Vec<i32> {
    let mut ids: Vec<i32> = image.brokers().map(|b| b.node_id).collect();
    if config.roles.broker && !ids.contains(&config.node_id) {
        ids.push(config.node_id);
    }
    ids
}

/// A broker fenced or unfenced: its registration changes, and every partition it is a
/// replica of follows the partition change rules (leaderships move within the ISR, or a
/// partition goes offline; an offline partition whose ISR holds a returning broker is led
/// by it again).
fn broker_fencing(
    image: &MetadataImage,
    config: &BrokerConfig,
    node_id: i32,
    fenced: bool,
) -> Vec<MetadataRecord> {
    let mut records = vec![MetadataRecord::BrokerChange { node_id, fenced }];
    let mut after = image.clone();
    after.apply(&records[0]);
    let brokers = broker_states(&after, config);
    records.extend(partition_changes(image, |topic, current| {
        if !current.replicas.contains(&node_id) {
            return None;
        }
        let unclean = unclean_enabled(image, config, topic);
        let state = PartitionState::from_image(current);
        if fenced {
            partition_change::broker_fenced(&state, &brokers, node_id, unclean)
        } else {
            partition_change::broker_unfenced(&state, &brokers, node_id, unclean)
        }
    }));
    records
}

/// A `Partition` record for every partition of `image` that `change` gives a new state.
fn partition_changes(
    image: &MetadataImage,
    mut change: impl FnMut(&TopicImage, &strata_quorum::PartitionImage) -> Option<PartitionState>,
) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for topic in image.topics() {
        for (p, current) in &topic.partitions {
            if let Some(next) = change(topic, current) {
                records.push(partition_record(topic.topic_id, *p, next));
            }
        }
    }
    records
}

/// Each requested partition's outcome, per topic in request order:
/// UNKNOWN_TOPIC_OR_PARTITION for one the image lacks, else what `decide` answers; a new
/// state it returns becomes a `Partition` record in `records`.
fn requested_changes<T>(
    image: &MetadataImage,
    requested: impl IntoIterator<Item = (String, Vec<(i32, T)>)>,
    records: &mut Vec<MetadataRecord>,
    mut decide: impl FnMut(&TopicImage, PartitionState, T) -> Result<Option<PartitionState>, OpError>,
) -> Vec<(String, Vec<PartitionResult>)> {
    requested
        .into_iter()
        .map(|(name, partitions)| {
            let topic = image.topic_by_name(&name);
            let results = partitions
                .into_iter()
                .map(|(p, wanted)| {
                    let Some((topic, current)) =
                        topic.and_then(|t| t.partitions.get(&p).map(|c| (t, c)))
                    else {
                        return (
                            p,
                            Err(refuse(
                                ErrorCode::UnknownTopicOrPartition,
                                "This server does not host this topic-partition.",
                            )),
                        );
                    };
                    let decided = decide(topic, PartitionState::from_image(current), wanted);
                    let result = decided.map(|next| {
                        if let Some(next) = next {
                            records.push(partition_record(topic.topic_id, p, next));
                        }
                    });
                    (p, result)
                })
                .collect();
            (name, results)
        })
        .collect()
}

/// Whether `topic`'s partitions may elect a replica that is not in sync
/// (`unclean.leader.election.enable`): the topic's override, else the cluster-wide dynamic
/// default, else the controller's configuration (Kafka's default: false).
fn unclean_enabled(image: &MetadataImage, config: &BrokerConfig, topic: &TopicImage) -> bool {
    const KEY: &str = "unclean.leader.election.enable";
    topic
        .configs
        .get(KEY)
        .cloned()
        .or_else(|| image.broker_configs.get(&None)?.get(KEY).cloned())
        .or_else(|| config.value(KEY))
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// Offline partitions (no leader) of topics that allow unclean elections, led again by an
/// active replica (Kafka's controller does this when the setting is turned on): the records.
fn unclean_elections(image: &MetadataImage, config: &BrokerConfig) -> Vec<MetadataRecord> {
    let brokers = broker_states(image, config);
    partition_changes(image, |topic, current| {
        if current.leader != partition_change::NO_LEADER || !unclean_enabled(image, config, topic) {
            return None;
        }
        let next =
            partition_change::elect_unclean(&PartitionState::from_image(current), &brokers).ok()?;
        tracing::warn!(topic = %topic.name, partition = current.partition, leader = next.leader, "unclean leader election: a replica that was not in sync leads; records only the old ISR had are lost");
        Some(next)
    })
}

/// ElectLeaders through the partition change rules: a partition whose state changes gets a
/// new `Partition` record; the others say why not. One node always leads its partitions
/// and is their preferred replica, so there it answers ELECTION_NOT_NEEDED.
fn elect_leaders(
    image: &MetadataImage,
    config: &BrokerConfig,
    op: &ElectLeaders,
) -> (Vec<MetadataRecord>, ElectLeadersReply) {
    let brokers = broker_states(image, config);
    let requested = op.partitions.clone().unwrap_or_else(|| {
        image
            .topics()
            .map(|t| (t.name.clone(), t.partitions.keys().copied().collect()))
            .collect()
    });
    let requested = requested
        .into_iter()
        .map(|(name, partitions)| (name, partitions.into_iter().map(|p| (p, ())).collect()));
    let mut records = Vec::new();
    let topics = requested_changes(image, requested, &mut records, |_, state, ()| {
        match op.election_type {
            ElectLeaders::PREFERRED => partition_change::elect_preferred(&state, &brokers),
            ElectLeaders::UNCLEAN => partition_change::elect_unclean(&state, &brokers),
            other => Err(refuse(
                ErrorCode::InvalidRequest,
                format!("Unknown election type {other}."),
            )),
        }
        .map(Some)
    });
    (records, ElectLeadersReply { topics })
}

/// AlterPartition through the partition change rules: the leader's proposed ISR, refused
/// per Kafka's checks or written as a new `Partition` record.
fn alter_partition(
    image: &MetadataImage,
    config: &BrokerConfig,
    op: &AlterPartition,
) -> (Vec<MetadataRecord>, AlterPartitionReply) {
    let Some(current) = image.partition(&op.topic_id, op.partition) else {
        let refused = refuse(
            ErrorCode::UnknownTopicOrPartition,
            "This server does not host this topic-partition.",
        );
        return (
            Vec::new(),
            AlterPartitionReply {
                result: Err(refused),
            },
        );
    };
    let brokers = broker_states(image, config);
    let request = partition_change::IsrChangeRequest {
        broker_id: op.broker_id,
        leader_epoch: op.leader_epoch,
        partition_epoch: op.partition_epoch,
        new_isr: op.new_isr.iter().map(|id| (*id, -1)).collect(),
        leader_recovery_state: partition_change::LeaderRecoveryState::Recovered,
    };
    let state = PartitionState::from_image(current);
    match partition_change::alter_partition(&state, &brokers, false, &request) {
        Ok(partition_change::IsrChangeOutcome::Unchanged) => (
            Vec::new(),
            AlterPartitionReply {
                result: Ok(state.isr),
            },
        ),
        Ok(
            partition_change::IsrChangeOutcome::Changed(next)
            | partition_change::IsrChangeOutcome::LeaderMoved(next),
        ) => {
            let isr = next.isr.clone();
            (
                vec![partition_record(op.topic_id, op.partition, next)],
                AlterPartitionReply { result: Ok(isr) },
            )
        }
        Err(refused) => (
            Vec::new(),
            AlterPartitionReply {
                result: Err(refused),
            },
        ),
    }
}

/// AlterPartitionReassignments through the partition change rules: a target starts (or
/// replaces) a reassignment, `None` cancels the one in progress; each partition whose state
/// changes gets a new `Partition` record. The reassignment completes when the leader
/// proposes the adding replicas into the ISR (AlterPartition).
fn alter_partition_reassignments(
    image: &MetadataImage,
    config: &BrokerConfig,
    op: &AlterPartitionReassignments,
) -> (Vec<MetadataRecord>, AlterPartitionReassignmentsReply) {
    let brokers = broker_states(image, config);
    let mut records = Vec::new();
    let topics = requested_changes(
        image,
        op.topics.clone(),
        &mut records,
        |topic, state, target| {
            let replication_factor = state.original_replicas().len();
            match target {
            Some(target) if !op.allow_replication_factor_change && target.len() != replication_factor => {
                Err(refuse(
                    ErrorCode::InvalidReplicationFactor,
                    format!(
                        "The replication factor is changed from {replication_factor} to {} but allowReplicationFactorChange is false.",
                        target.len()
                    ),
                ))
            }
            Some(target) => partition_change::reassign(&state, &brokers, &target),
            None => {
                let unclean = unclean_enabled(image, config, topic);
                partition_change::cancel_reassignment(&state, &brokers, unclean)
            }
        }
        },
    );
    (records, AlterPartitionReassignmentsReply { topics })
}

/// The partitions to move back to their preferred replica, by topic: those of every broker
/// whose share of preferred partitions led elsewhere is above `percentage`, when the
/// preferred replica can lead (registered, unfenced, in the ISR).
pub fn imbalanced_partitions(
    image: &strata_quorum::MetadataImage,
    percentage: u32,
) -> Vec<(String, Vec<i32>)> {
    use std::collections::BTreeMap;
    // preferred broker -> (preferred partitions, movable ones)
    let mut per_broker: BTreeMap<i32, (usize, Vec<(String, i32)>)> = BTreeMap::new();
    for topic in image.topics() {
        for p in topic.partitions.values() {
            let Some(&preferred) = p.replicas.first() else {
                continue;
            };
            if p.replicas.len() < 2 {
                continue;
            }
            let entry = per_broker.entry(preferred).or_default();
            entry.0 += 1;
            let can_lead =
                p.isr.contains(&preferred) && image.broker(preferred).is_some_and(|b| !b.fenced);
            if p.leader != preferred && can_lead {
                entry.1.push((topic.name.clone(), p.partition));
            }
        }
    }
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (total, movable) in per_broker.into_values() {
        if movable.is_empty() || movable.len() * 100 <= total * percentage as usize {
            continue;
        }
        for (topic, p) in movable {
            by_topic.entry(topic).or_default().push(p);
        }
    }
    by_topic.into_iter().collect()
}

/// Plans one operation against `image`.
pub fn plan(
    image: &MetadataImage,
    config: &BrokerConfig,
    op: &ControllerOp,
) -> Result<(Vec<MetadataRecord>, ControllerReply), OpError> {
    Ok(match op {
        ControllerOp::CreateTopics(op) => {
            let (records, reply) = create_topics(image, config, op);
            (records, ControllerReply::CreateTopics(reply))
        }
        ControllerOp::DeleteTopics(op) => {
            let (records, reply) = delete_topics(image, op);
            (records, ControllerReply::DeleteTopics(reply))
        }
        ControllerOp::CreatePartitions(op) => {
            let (records, reply) = create_partitions(image, config, op);
            (records, ControllerReply::CreatePartitions(reply))
        }
        ControllerOp::AlterConfigs(op) => {
            let (records, reply) = alter_configs(image, config, op);
            (records, ControllerReply::AlterConfigs(reply))
        }
        ControllerOp::IncrementalAlterConfigs(op) => {
            let (records, reply) = incremental_alter_configs(image, config, op);
            (records, ControllerReply::IncrementalAlterConfigs(reply))
        }
        ControllerOp::AllocateProducerIds(op) => {
            let (records, reply) = allocate_producer_ids(image, op)?;
            (records, ControllerReply::AllocateProducerIds(reply))
        }
        ControllerOp::AlterUserScramCredentials(op) => {
            let (records, reply) = super::scram::alter_user_scram_credentials(image, op);
            (records, ControllerReply::AlterUserScramCredentials(reply))
        }
        ControllerOp::CreateAcls(op) => {
            let (records, reply) = super::acls::create_acls(image, op);
            (records, ControllerReply::CreateAcls(reply))
        }
        ControllerOp::DeleteAcls(op) => {
            let (records, reply) = super::acls::delete_acls(image, op);
            (records, ControllerReply::DeleteAcls(reply))
        }
        ControllerOp::AlterClientQuotas(op) => {
            let (records, reply) = super::quotas::alter_client_quotas(image, op);
            (records, ControllerReply::AlterClientQuotas(reply))
        }
        ControllerOp::ElectLeaders(op) => {
            let (records, reply) = elect_leaders(image, config, op);
            (records, ControllerReply::ElectLeaders(reply))
        }
        ControllerOp::RegisterBroker(op) => {
            let existing = image.broker(op.node_id);
            let current = existing.is_some_and(|b| {
                b.endpoints == op.endpoints && b.rack == op.rack && b.incarnation == op.incarnation
            });
            let mut records = Vec::new();
            if !current {
                records.push(MetadataRecord::RegisterBroker {
                    node_id: op.node_id,
                    endpoints: op.endpoints.clone(),
                    rack: op.rack.clone(),
                    incarnation: op.incarnation.clone(),
                });
            }
            // A broker process that started again before its session ran out (a crash and
            // a quick restart) is fenced now, as Kafka fences the old registration: its
            // leaderships move on in a new leader epoch, so that what it lost of its
            // unsynced tail can never be written again under the epoch its followers hold;
            // its next heartbeat unfences it. A single broker has no one to diverge from.
            let restarted = existing.is_some_and(|b| !b.fenced && b.incarnation != op.incarnation);
            let others = image.brokers().any(|b| b.node_id != op.node_id);
            if restarted && others {
                let mut registered = image.clone();
                for record in &records {
                    registered.apply(record);
                }
                records.extend(broker_fencing(&registered, config, op.node_id, true));
            }
            (
                records,
                ControllerReply::RegisterBroker(RegisterBrokerReply {}),
            )
        }
        ControllerOp::BrokerHeartbeat(op) => {
            let fenced = image.broker(op.node_id).is_some_and(|b| b.fenced);
            let records = if fenced {
                broker_fencing(image, config, op.node_id, false)
            } else {
                Vec::new()
            };
            (
                records,
                ControllerReply::BrokerHeartbeat(BrokerHeartbeatReply { fenced: false }),
            )
        }
        ControllerOp::AlterPartition(op) => {
            let (records, reply) = alter_partition(image, config, op);
            (records, ControllerReply::AlterPartition(reply))
        }
        ControllerOp::AlterPartitionReassignments(op) => {
            let (records, reply) = alter_partition_reassignments(image, config, op);
            (records, ControllerReply::AlterPartitionReassignments(reply))
        }
        ControllerOp::FenceBroker(op) => {
            let unfenced = image.broker(op.node_id).is_some_and(|b| !b.fenced);
            let records = if unfenced {
                broker_fencing(image, config, op.node_id, true)
            } else {
                Vec::new()
            };
            (
                records,
                ControllerReply::FenceBroker(FenceBrokerReply {
                    fenced_now: unfenced,
                }),
            )
        }
    })
}

/// The plan of several operations committed together.
#[derive(Debug)]
pub struct BatchPlan {
    /// Every operation's records, in operation order: one commit.
    pub records: Vec<MetadataRecord>,
    /// Per operation, in order: its answer, and whether the answer holds only if `records`
    /// are committed (the operation, or one before it, yielded records).
    pub answers: Vec<(Result<ControllerReply, OpError>, bool)>,
}

/// Plans `ops` in order, each against `image` with the records of the ones before it
/// applied, so that they see each other as if committed one by one.
pub fn plan_batch(image: &MetadataImage, config: &BrokerConfig, ops: &[ControllerOp]) -> BatchPlan {
    let mut scratch = Cow::Borrowed(image);
    let mut records = Vec::new();
    let mut answers = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        let answer = plan(&scratch, config, op).map(|(planned, reply)| {
            if i + 1 < ops.len() {
                apply_all(&mut scratch, &planned);
            }
            records.extend(planned);
            reply
        });
        answers.push((answer, !records.is_empty()));
    }
    BatchPlan { records, answers }
}

/// Applies `records` to a scratch image, copying the image on the first record.
fn apply_all(scratch: &mut Cow<MetadataImage>, records: &[MetadataRecord]) {
    for r in records {
        scratch.to_mut().apply(r);
    }
}

/// Checks topic configs (known key, valid value).
pub fn validate_topic_configs(configs: &BTreeMap<String, String>) -> Result<(), OpError> {
    for (k, v) in configs {
        let def = topic_config_def(k).ok_or_else(|| {
            refuse(
                ErrorCode::InvalidConfig,
                format!("Unknown topic config name: {k}"),
            )
        })?;
        validate_value(&def.def, v).map_err(|e| refuse(ErrorCode::InvalidConfig, e.to_string()))?;
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

/// CreateTopics: each topic planned against the image with the topics before it created.
pub fn create_topics(
    image: &MetadataImage,
    config: &BrokerConfig,
    op: &CreateTopics,
) -> (Vec<MetadataRecord>, CreateTopicsReply) {
    let mut scratch = Cow::Borrowed(image);
    let mut records = Vec::new();
    let mut topics = Vec::with_capacity(op.topics.len());
    for (i, t) in op.topics.iter().enumerate() {
        topics.push(
            plan_create_topic(&scratch, config, t).map(|(planned, created)| {
                if i + 1 < op.topics.len() {
                    apply_all(&mut scratch, &planned);
                }
                if !op.validate_only {
                    records.extend(planned);
                }
                created
            }),
        );
    }
    (records, CreateTopicsReply { topics })
}

/// The records that create one topic. `num_partitions`/`replication_factor` of -1 take the
/// broker defaults; `assignments` replace both when non-empty.
pub fn plan_create_topic(
    image: &MetadataImage,
    config: &BrokerConfig,
    topic: &NewTopic,
) -> Result<(Vec<MetadataRecord>, CreatedTopic), OpError> {
    let name = topic.name.as_str();
    validate_topic_name(name)
        .map_err(|e| refuse(ErrorCode::InvalidTopicException, e.to_string()))?;
    if image.topic_by_name(name).is_some() {
        return Err(refuse(
            ErrorCode::TopicAlreadyExists,
            format!("Topic '{name}' already exists."),
        ));
    }
    let key = collision_key(name);
    if let Some(other) = image.topics().find(|t| collision_key(&t.name) == key) {
        return Err(refuse(
            ErrorCode::InvalidTopicException,
            format!(
                "Topic '{name}' collides with existing topic '{}': '.' and '_' are interchangeable in metric names",
                other.name
            ),
        ));
    }
    validate_topic_configs(&topic.configs)?;
    let brokers = registered_brokers(image, config);
    let replica_sets: Vec<(i32, Vec<i32>)> = if !topic.assignments.is_empty() {
        if topic.num_partitions != -1 || topic.replication_factor != -1 {
            return Err(refuse(
                ErrorCode::InvalidRequest,
                "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.",
            ));
        }
        let mut sorted: Vec<(i32, Vec<i32>)> = topic
            .assignments
            .iter()
            .map(|a| (a.partition, a.replicas.clone()))
            .collect();
        sorted.sort_by_key(|(p, _)| *p);
        for (i, (p, replicas)) in sorted.iter().enumerate() {
            if *p != i as i32 {
                return Err(refuse(
                    ErrorCode::InvalidReplicaAssignment,
                    "Partitions must be numbered consecutively from 0.",
                ));
            }
            validate_replicas(replicas, &brokers)?;
        }
        sorted
    } else {
        let n = if topic.num_partitions == -1 {
            config.num_partitions
        } else {
            topic.num_partitions
        };
        let rf = if topic.replication_factor == -1 {
            config.default_replication_factor
        } else {
            topic.replication_factor
        };
        if n <= 0 || n > MAX_PARTITIONS_PER_TOPIC {
            return Err(refuse(
                ErrorCode::InvalidPartitions,
                format!("Number of partitions must be between 1 and {MAX_PARTITIONS_PER_TOPIC}, not {n}."),
            ));
        }
        if rf <= 0 {
            return Err(refuse(
                ErrorCode::InvalidReplicationFactor,
                "Replication factor must be larger than 0.",
            ));
        }
        let brokers = usable_brokers(image, config);
        placement::place_topic(&brokers, n, rf, Stripe::from_seed(rand::random()))?
            .into_iter()
            .zip(0..)
            .map(|(replicas, p)| (p, replicas))
            .collect()
    };
    let topic_id = Uuid::new_v4();
    let created = CreatedTopic {
        topic_id,
        num_partitions: replica_sets.len() as i32,
        replication_factor: replica_sets.first().map_or(1, |(_, r)| r.len() as i16),
        configs: topic.configs.clone(),
    };
    let mut records = vec![MetadataRecord::Topic {
        name: name.to_string(),
        topic_id,
    }];
    for (k, v) in &topic.configs {
        records.push(MetadataRecord::Config {
            resource: ConfigResource::Topic(name.to_string()),
            name: k.clone(),
            value: Some(v.clone()),
        });
    }
    records.extend(
        replica_sets
            .into_iter()
            .map(|(p, replicas)| MetadataRecord::partition_led_by_first(topic_id, p, replicas, 0)),
    );
    Ok((records, created))
}

fn validate_replicas(replicas: &[i32], brokers: &[i32]) -> Result<(), OpError> {
    if replicas.is_empty() {
        return Err(refuse(
            ErrorCode::InvalidReplicaAssignment,
            "A partition needs at least one replica.",
        ));
    }
    let mut seen = replicas.to_vec();
    seen.sort_unstable();
    seen.dedup();
    if seen.len() != replicas.len() {
        return Err(refuse(
            ErrorCode::InvalidReplicaAssignment,
            "Duplicate brokers in a replica assignment.",
        ));
    }
    if let Some(b) = replicas.iter().find(|b| !brokers.contains(b)) {
        return Err(refuse(
            ErrorCode::InvalidReplicaAssignment,
            format!("Broker {b} in the replica assignment is not registered."),
        ));
    }
    Ok(())
}

/// DeleteTopics: a topic named twice is removed once and reported deleted twice.
pub fn delete_topics(
    image: &MetadataImage,
    op: &DeleteTopics,
) -> (Vec<MetadataRecord>, DeleteTopicsReply) {
    let mut records = Vec::new();
    let topics = op
        .topics
        .iter()
        .map(|wanted| {
            let (found, unknown) = match wanted {
                TopicRef::Name(n) => (image.topic_by_name(n), ErrorCode::UnknownTopicOrPartition),
                TopicRef::Id(id) => (image.topic_by_id(id), ErrorCode::UnknownTopicId),
            };
            let topic = found.ok_or_else(|| refuse(unknown, unknown.to_string()))?;
            let removal = MetadataRecord::RemoveTopic {
                topic_id: topic.topic_id,
            };
            if !records.contains(&removal) {
                records.push(removal);
            }
            Ok(DeletedTopic {
                name: topic.name.clone(),
                topic_id: topic.topic_id,
            })
        })
        .collect();
    (records, DeleteTopicsReply { topics })
}

/// The topic named `name`, or UNKNOWN_TOPIC_OR_PARTITION.
pub fn known_topic<'a>(image: &'a MetadataImage, name: &str) -> Result<&'a TopicImage, OpError> {
    image.topic_by_name(name).ok_or_else(|| {
        refuse(
            ErrorCode::UnknownTopicOrPartition,
            format!("The topic '{name}' does not exist."),
        )
    })
}

/// CreatePartitions: each topic planned against `image` as it is.
pub fn create_partitions(
    image: &MetadataImage,
    config: &BrokerConfig,
    op: &CreatePartitions,
) -> (Vec<MetadataRecord>, CreatePartitionsReply) {
    let mut records = Vec::new();
    let topics = op
        .topics
        .iter()
        .map(|t| {
            let planned = plan_new_partitions(image, config, t)?;
            if !op.validate_only {
                records.extend(planned);
            }
            Ok(())
        })
        .collect();
    (records, CreatePartitionsReply { topics })
}

fn plan_new_partitions(
    image: &MetadataImage,
    config: &BrokerConfig,
    t: &NewPartitions,
) -> Result<Vec<MetadataRecord>, OpError> {
    let topic = known_topic(image, &t.name)?;
    let current = topic.partitions.len() as i32;
    if t.count <= current {
        return Err(refuse(
            ErrorCode::InvalidPartitions,
            format!(
                "Topic currently has {current} partitions, which is higher than or equal to the requested {}.",
                t.count
            ),
        ));
    }
    if t.count > MAX_PARTITIONS_PER_TOPIC {
        return Err(refuse(
            ErrorCode::InvalidPartitions,
            format!("At most {MAX_PARTITIONS_PER_TOPIC} partitions."),
        ));
    }
    let added = (t.count - current) as usize;
    let registered = registered_brokers(image, config);
    let assignments: Vec<Vec<i32>> = match &t.assignments {
        Some(a) => {
            if a.len() != added {
                return Err(refuse(
                    ErrorCode::InvalidReplicaAssignment,
                    format!(
                        "Increasing the number of partitions by {added} but {} assignments provided.",
                        a.len()
                    ),
                ));
            }
            a.clone()
        }
        None => {
            let existing: Vec<Vec<i32>> = topic
                .partitions
                .values()
                .map(|p| p.replicas.clone())
                .collect();
            let rf = existing.first().map_or(1, Vec::len);
            placement::place_added_partitions(
                &usable_brokers(image, config),
                &existing,
                added as i32,
                i16::try_from(rf).unwrap_or(i16::MAX),
                Stripe::from_seed(rand::random()),
            )?
        }
    };
    let mut out = Vec::with_capacity(added);
    for (i, replicas) in assignments.into_iter().enumerate() {
        validate_replicas(&replicas, &registered)?;
        out.push(MetadataRecord::partition_led_by_first(
            topic.topic_id,
            current + i as i32,
            replicas,
            0,
        ));
    }
    Ok(out)
}

/// The broker entity a config resource name means: `""` the cluster-wide default, else this
/// node's id.
pub fn broker_entity(node_id: i32, name: &str) -> Result<Option<i32>, OpError> {
    if name.is_empty() {
        return Ok(None);
    }
    match name.parse::<i32>() {
        Ok(id) if id == node_id => Ok(Some(id)),
        _ => Err(refuse(
            ErrorCode::InvalidRequest,
            format!(
                "Unexpected broker id, expected {node_id} or empty string, but received {name}"
            ),
        )),
    }
}

/// AlterConfigs: each resource's overrides become exactly the given set.
pub fn alter_configs(
    image: &MetadataImage,
    config: &BrokerConfig,
    op: &AlterConfigs,
) -> (Vec<MetadataRecord>, AlterConfigsReply) {
    config_changes(
        image,
        config,
        op.validate_only,
        op.resources
            .iter()
            .map(|(target, wanted)| (target, Ok(wanted.clone()))),
    )
}

/// IncrementalAlterConfigs: each resource's overrides in `image`, changed key by key.
pub fn incremental_alter_configs(
    image: &MetadataImage,
    config: &BrokerConfig,
    op: &IncrementalAlterConfigs,
) -> (Vec<MetadataRecord>, AlterConfigsReply) {
    config_changes(
        image,
        config,
        op.validate_only,
        op.resources.iter().map(|(target, operations)| {
            (target, apply_operations(image, config, target, operations))
        }),
    )
}

/// Plans whole new override sets (or answers the error that computing one met), each against
/// `image` as it is.
fn config_changes<'a>(
    image: &MetadataImage,
    config: &BrokerConfig,
    validate_only: bool,
    changes: impl Iterator<Item = (&'a ConfigTarget, ItemResult<BTreeMap<String, String>>)>,
) -> (Vec<MetadataRecord>, AlterConfigsReply) {
    let mut records = Vec::new();
    let resources = changes
        .map(|(target, wanted)| {
            let planned = match target.resource_type {
                ConfigTarget::TOPIC => plan_topic_change(image, &target.name, wanted?),
                ConfigTarget::BROKER => plan_broker_change(image, config, &target.name, wanted?),
                other => Err(refuse(
                    ErrorCode::InvalidRequest,
                    format!("Unsupported resource type {other}"),
                )),
            }?;
            if !validate_only {
                records.extend(planned);
            }
            Ok(())
        })
        .collect();
    if !records.is_empty() {
        // A change may have allowed unclean elections for offline partitions.
        let mut after = image.clone();
        for record in &records {
            after.apply(record);
        }
        records.extend(unclean_elections(&after, config));
    }
    (records, AlterConfigsReply { resources })
}

fn plan_topic_change(
    image: &MetadataImage,
    name: &str,
    wanted: BTreeMap<String, String>,
) -> Result<Vec<MetadataRecord>, OpError> {
    let topic = known_topic(image, name)?;
    validate_topic_configs(&wanted)?;
    Ok(diff_records(
        ConfigResource::Topic(name.to_string()),
        &topic.configs,
        &wanted,
    ))
}

fn plan_broker_change(
    image: &MetadataImage,
    config: &BrokerConfig,
    name: &str,
    wanted: BTreeMap<String, String>,
) -> Result<Vec<MetadataRecord>, OpError> {
    let entity = broker_entity(config.node_id, name)?;
    for (k, v) in &wanted {
        let def = broker_config_def(k).ok_or_else(|| {
            refuse(
                ErrorCode::InvalidConfig,
                format!("Unknown broker config name: {k}"),
            )
        })?;
        if !def.dynamic {
            return Err(refuse(
                ErrorCode::InvalidConfig,
                format!("Cannot update these configs dynamically: {k}"),
            ));
        }
        validate_value(def, v).map_err(|e| refuse(ErrorCode::InvalidConfig, e.to_string()))?;
    }
    let empty = BTreeMap::new();
    let current = image.broker_configs.get(&entity).unwrap_or(&empty);
    Ok(diff_records(
        ConfigResource::Broker(entity),
        current,
        &wanted,
    ))
}

/// The records that turn the overrides `current` into `wanted`.
fn diff_records(
    resource: ConfigResource,
    current: &BTreeMap<String, String>,
    wanted: &BTreeMap<String, String>,
) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for k in current.keys().filter(|k| !wanted.contains_key(*k)) {
        records.push(MetadataRecord::Config {
            resource: resource.clone(),
            name: k.clone(),
            value: None,
        });
    }
    for (k, v) in wanted {
        if current.get(k) != Some(v) {
            records.push(MetadataRecord::Config {
                resource: resource.clone(),
                name: k.clone(),
                value: Some(v.clone()),
            });
        }
    }
    records
}

/// The overrides of a resource in `image` (none for an unknown one).
fn current_overrides(
    image: &MetadataImage,
    config: &BrokerConfig,
    target: &ConfigTarget,
) -> BTreeMap<String, String> {
    match target.resource_type {
        ConfigTarget::TOPIC => image
            .topic_by_name(&target.name)
            .map(|t| t.configs.clone())
            .unwrap_or_default(),
        ConfigTarget::BROKER => broker_entity(config.node_id, &target.name)
            .ok()
            .and_then(|e| image.broker_configs.get(&e).cloned())
            .unwrap_or_default(),
        _ => BTreeMap::new(),
    }
}

/// What `key` of a resource is when the resource does not set it.
fn inherited_value(
    image: &MetadataImage,
    config: &BrokerConfig,
    resource_type: i8,
    key: &str,
) -> Option<String> {
    match resource_type {
        ConfigTarget::TOPIC => {
            let def = topic_config_def(key)?;
            let empty = BTreeMap::new();
            let layers = ConfigLayers {
                topic: &empty,
                dynamic_broker: image.broker_configs.get(&Some(config.node_id)),
                dynamic_default: image.broker_configs.get(&None),
                static_broker: &config.set,
            };
            resolve_topic_config(def, &layers).value
        }
        ConfigTarget::BROKER => config.value(key),
        _ => None,
    }
}

fn is_list(resource_type: i8, name: &str) -> bool {
    let kind = match resource_type {
        ConfigTarget::TOPIC => topic_config_def(name).map(|d| d.def.kind),
        _ => broker_config_def(name).map(|d| d.kind),
    };
    kind == Some(ConfigType::List)
}

/// The overrides of `target` after IncrementalAlterConfigs' operations, in order.
fn apply_operations(
    image: &MetadataImage,
    config: &BrokerConfig,
    target: &ConfigTarget,
    operations: &[ConfigOperation],
) -> ItemResult<BTreeMap<String, String>> {
    let mut wanted = current_overrides(image, config, target);
    for c in operations {
        let key = c.name.clone();
        match c.op {
            ConfigOperation::SET => {
                wanted.insert(key, c.value.clone().unwrap_or_default());
            }
            ConfigOperation::DELETE => {
                wanted.remove(&key);
            }
            ConfigOperation::APPEND | ConfigOperation::SUBTRACT => {
                if !is_list(target.resource_type, &key) {
                    return Err(refuse(
                        ErrorCode::InvalidConfig,
                        format!("Config value append/subtract is not allowed for config key {key}, which is not a list"),
                    ));
                }
                // APPEND and SUBTRACT start from the value in effect: the resource's own
                // setting, else what it inherits (broker setting or default).
                let current = wanted
                    .get(&key)
                    .cloned()
                    .or_else(|| inherited_value(image, config, target.resource_type, &key));
                let mut items: Vec<String> = current
                    .map(|v| {
                        v.split(',')
                            .map(|s| s.trim().to_string())
                            .filter(|s| !s.is_empty())
                            .collect()
                    })
                    .unwrap_or_default();
                let value = c.value.clone().unwrap_or_default();
                for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if c.op == ConfigOperation::APPEND {
                        if !items.iter().any(|i| i == item) {
                            items.push(item.to_string());
                        }
                    } else {
                        items.retain(|i| i != item);
                    }
                }
                wanted.insert(key, items.join(","));
            }
            other => {
                return Err(refuse(
                    ErrorCode::InvalidRequest,
                    format!("Unknown config operation {other}"),
                ));
            }
        }
    }
    Ok(wanted)
}

/// AllocateProducerIds: the next block of ids, never handed out before.
pub fn allocate_producer_ids(
    image: &MetadataImage,
    _op: &AllocateProducerIds,
) -> Result<(Vec<MetadataRecord>, ProducerIdBlock), OpError> {
    let first = image.next_producer_id;
    let next_producer_id = first.checked_add(PRODUCER_ID_BLOCK).ok_or_else(|| {
        refuse(
            ErrorCode::UnknownServerError,
            "Exhausted all producer ids: the next block would pass the largest 64-bit id.",
        )
    })?;
    Ok((
        vec![MetadataRecord::ProducerIds { next_producer_id }],
        ProducerIdBlock {
            first,
            size: PRODUCER_ID_BLOCK,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_quorum::controller::ops::ReplicaAssignment;

    use crate::config::test_config as config;

    fn image_with(records: &[MetadataRecord]) -> MetadataImage {
        let mut image = MetadataImage::default();
        for r in records {
            image.apply(r);
        }
        image
    }

    /// Partition 0 of `topic_id` on `replicas` with `isr`, led by `leader` in `epoch` (also its
    /// partition epoch), no reassignment.
    fn partition_zero(
        topic_id: Uuid,
        replicas: &[i32],
        isr: &[i32],
        leader: i32,
        epoch: i32,
    ) -> MetadataRecord {
        MetadataRecord::Partition {
            topic_id,
            partition: 0,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            leader,
            leader_epoch: epoch,
            partition_epoch: epoch,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        }
    }

    /// The registration of broker `node_id` with one plaintext endpoint.
    fn register(node_id: i32) -> MetadataRecord {
        MetadataRecord::RegisterBroker {
            node_id,
            endpoints: vec![strata_quorum::BrokerEndpoint {
                name: "PLAINTEXT".into(),
                host: "127.0.0.1".into(),
                port: 9000 + node_id as u16,
                security_protocol: "PLAINTEXT".into(),
            }],
            rack: None,
            incarnation: None,
        }
    }

    /// `image` with `records` applied.
    fn applied(image: &MetadataImage, records: &[MetadataRecord]) -> MetadataImage {
        let mut image = image.clone();
        for r in records {
            image.apply(r);
        }
        image
    }

    /// A broker fenced for missed heartbeats gives up its leaderships: to another in-sync
    /// replica where there is one, offline (-1) where it was the only one; its heartbeat
    /// unfences it and it leads its offline partitions again, each change a new epoch.
    #[test]
    fn assignments_and_added_partitions_use_every_registered_broker() {
        use strata_quorum::controller::ops::ReplicaAssignment;
        let id = Uuid::new_v4();
        let image = image_with(&[
            register(1),
            register(2),
            register(3),
            MetadataRecord::Topic {
                name: "t".into(),
                topic_id: id,
            },
            partition_zero(id, &[2, 3, 1], &[2, 3, 1], 2, 0),
        ]);
        let config = config(&[]);
        let add = |assignments: Option<Vec<Vec<i32>>>| {
            let op = ControllerOp::CreatePartitions(CreatePartitions {
                topics: vec![NewPartitions {
                    name: "t".into(),
                    count: 3,
                    assignments,
                }],
                validate_only: false,
            });
            match plan(&image, &config, &op).expect("planned") {
                (records, ControllerReply::CreatePartitions(reply)) => {
                    (records, reply.topics.into_iter().next().expect("one topic"))
                }
                other => panic!("{other:?}"),
            }
        };
        let (records, result) = add(None);
        assert!(result.is_ok(), "{result:?}");
        let placed = applied(&image, &records);
        for p in 1..3 {
            let mut replicas = placed.partition(&id, p).expect("added").replicas.clone();
            replicas.sort_unstable();
            assert_eq!(replicas, vec![1, 2, 3], "three replicas on three brokers");
        }
        let (_, result) = add(Some(vec![vec![3, 1, 2], vec![1, 2, 3]]));
        assert!(result.is_ok(), "{result:?}");
        let (records, result) = add(Some(vec![vec![3, 1, 9], vec![1, 2, 3]]));
        assert!(records.is_empty());
        assert_eq!(
            result.expect_err("broker 9 is not registered").code,
            ErrorCode::InvalidReplicaAssignment.code()
        );
        let create = ControllerOp::CreateTopics(CreateTopics {
            topics: vec![NewTopic {
                assignments: vec![ReplicaAssignment {
                    partition: 0,
                    replicas: vec![3, 2],
                }],
                ..NewTopic::named("manual")
            }],
            validate_only: false,
        });
        match plan(&image, &config, &create).expect("planned") {
            (records, ControllerReply::CreateTopics(reply)) => {
                assert!(reply.topics[0].is_ok(), "{:?}", reply.topics[0]);
                assert!(!records.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn leaders_away_from_their_preferred_replica_beyond_the_tolerance_are_moved_back() {
        let id = Uuid::new_v4();
        // Ten partitions prefer broker 1; `moved` of them are led by broker 2.
        let image = |moved: i32, isr_has_1: bool| {
            let mut records = vec![
                register(1),
                register(2),
                MetadataRecord::Topic {
                    name: "t".into(),
                    topic_id: id,
                },
            ];
            for p in 0..10 {
                records.push(MetadataRecord::Partition {
                    topic_id: id,
                    partition: p,
                    replicas: vec![1, 2],
                    isr: if isr_has_1 { vec![1, 2] } else { vec![2] },
                    leader: if p < moved { 2 } else { 1 },
                    leader_epoch: 1,
                    partition_epoch: 1,
                    adding_replicas: Vec::new(),
                    removing_replicas: Vec::new(),
                });
            }
            image_with(&records)
        };
        assert!(imbalanced_partitions(&image(0, true), 10).is_empty());
        assert!(
            imbalanced_partitions(&image(1, true), 10).is_empty(),
            "10 % is tolerated"
        );
        assert_eq!(
            imbalanced_partitions(&image(2, true), 10),
            vec![("t".to_string(), vec![0, 1])]
        );
        assert_eq!(
            imbalanced_partitions(&image(1, true), 0),
            vec![("t".to_string(), vec![0])]
        );
        assert!(
            imbalanced_partitions(&image(5, false), 0).is_empty(),
            "a preferred replica out of the ISR cannot lead"
        );
    }

    #[test]
    fn fencing_moves_or_offlines_leaderships_and_a_heartbeat_restores_them() {
        use strata_quorum::controller::ops::{BrokerHeartbeat, FenceBroker};
        let config = config(&[]);
        let id = Uuid::new_v4();
        let partition = |p: i32, replicas: Vec<i32>| MetadataRecord::Partition {
            topic_id: id,
            partition: p,
            isr: replicas.clone(),
            leader: replicas[0],
            replicas,
            leader_epoch: 3,
            partition_epoch: 3,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        };
        let image = image_with(&[
            register(1),
            register(2),
            register(3),
            MetadataRecord::Topic {
                name: "t".into(),
                topic_id: id,
            },
            partition(0, vec![2]),
            partition(1, vec![2, 3]),
            partition(2, vec![3]),
        ]);
        let fence = ControllerOp::FenceBroker(FenceBroker { node_id: 2 });
        let (records, _) = plan(&image, &config, &fence).expect("planned");
        let fenced = applied(&image, &records);
        assert!(fenced.broker(2).expect("registered").fenced);
        let p = |img: &MetadataImage, n: i32| img.partition(&id, n).cloned().expect("partition");
        assert_eq!((p(&fenced, 0).leader, p(&fenced, 0).leader_epoch), (-1, 4));
        assert_eq!(
            p(&fenced, 0).isr,
            vec![2],
            "the last member stays in the ISR"
        );
        assert_eq!(
            (p(&fenced, 1).leader, p(&fenced, 1).isr.clone()),
            (3, vec![3])
        );
        assert_eq!(p(&fenced, 2), p(&image, 2), "untouched");
        let (again, _) = plan(&fenced, &config, &fence).expect("planned");
        assert!(again.is_empty(), "fencing a fenced broker writes nothing");

        let beat = ControllerOp::BrokerHeartbeat(BrokerHeartbeat { node_id: 2 });
        let (records, _) = plan(&fenced, &config, &beat).expect("planned");
        let back = applied(&fenced, &records);
        assert!(!back.broker(2).expect("registered").fenced);
        assert_eq!((p(&back, 0).leader, p(&back, 0).leader_epoch), (2, 5));
        assert_eq!(
            p(&back, 1).leader,
            3,
            "a moved leadership stays where it went"
        );
        let (none, _) = plan(&back, &config, &beat).expect("planned");
        assert!(none.is_empty(), "a live broker's heartbeat writes nothing");
    }

    #[test]
    fn leader_elections_follow_the_partition_change_rules() {
        let config = config(&[]);
        let id = Uuid::new_v4();
        let partition = |p: i32, leader: i32, epoch: i32| MetadataRecord::Partition {
            topic_id: id,
            partition: p,
            replicas: vec![1],
            isr: vec![1],
            leader,
            leader_epoch: epoch,
            partition_epoch: epoch,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        };
        let image = image_with(&[
            MetadataRecord::Topic {
                name: "t".into(),
                topic_id: id,
            },
            partition(0, 1, 0),
            // Offline (leader -1), its replica in the ISR and active again.
            partition(1, -1, 3),
        ]);
        let elect = |election_type, partitions: Option<Vec<(String, Vec<i32>)>>| {
            elect_leaders(
                &image,
                &config,
                &ElectLeaders {
                    election_type,
                    partitions,
                },
            )
        };
        let code = |r: &ItemResult<()>| r.as_ref().err().map(|e| e.code);
        // Preferred, every partition: 0 is already led by its preferred replica; 1 gets it
        // back with a new leader epoch.
        let (records, reply) = elect(ElectLeaders::PREFERRED, None);
        let results = &reply.topics[0].1;
        assert_eq!(
            code(&results[0].1),
            Some(ErrorCode::ElectionNotNeeded.code())
        );
        assert_eq!(results[1], (1, Ok(())));
        assert_eq!(
            records,
            vec![MetadataRecord::Partition {
                topic_id: id,
                partition: 1,
                replicas: vec![1],
                isr: vec![1],
                leader: 1,
                leader_epoch: 4,
                partition_epoch: 4,
                adding_replicas: Vec::new(),
                removing_replicas: Vec::new(),
            }]
        );
        // Unclean: only an offline partition needs it; unknown partitions and topics say so.
        let (records, reply) = elect(
            ElectLeaders::UNCLEAN,
            Some(vec![("t".into(), vec![0, 1, 9]), ("nope".into(), vec![0])]),
        );
        let t = &reply.topics[0].1;
        assert_eq!(code(&t[0].1), Some(ErrorCode::ElectionNotNeeded.code()));
        assert_eq!(t[1], (1, Ok(())));
        assert_eq!(
            code(&t[2].1),
            Some(ErrorCode::UnknownTopicOrPartition.code())
        );
        assert_eq!(
            code(&reply.topics[1].1[0].1),
            Some(ErrorCode::UnknownTopicOrPartition.code())
        );
        assert_eq!(records.len(), 1);
        let (records, reply) = elect(7, None);
        assert!(records.is_empty());
        assert_eq!(
            code(&reply.topics[0].1[0].1),
            Some(ErrorCode::InvalidRequest.code())
        );
    }

    #[test]
    fn unclean_elections_happen_only_where_the_topic_or_cluster_allows_them() {
        use strata_quorum::controller::ops::{BrokerHeartbeat, FenceBroker};
        let allowing = config(&[("unclean.leader.election.enable", "true")]);
        let config = config(&[]);
        let (unclean, clean) = (Uuid::new_v4(), Uuid::new_v4());
        // Both on brokers 2 and 3, led by 2, whose ISR lost 3.
        let partition = |id| partition_zero(id, &[2, 3], &[2], 2, 1);
        let image = image_with(&[
            register(1),
            register(2),
            register(3),
            MetadataRecord::Topic {
                name: "u".into(),
                topic_id: unclean,
            },
            MetadataRecord::Config {
                resource: ConfigResource::Topic("u".into()),
                name: "unclean.leader.election.enable".into(),
                value: Some("true".into()),
            },
            partition(unclean),
            MetadataRecord::Topic {
                name: "c".into(),
                topic_id: clean,
            },
            partition(clean),
        ]);
        let leader = |image: &MetadataImage, id| image.partition(&id, 0).expect("p").leader;
        // Broker 2 is fenced: the topic that allows it elects 3, the other goes offline.
        let fence = ControllerOp::FenceBroker(FenceBroker { node_id: 2 });
        let (records, _) = plan(&image, &config, &fence).expect("planned");
        let fenced = applied(&image, &records);
        assert_eq!(leader(&fenced, unclean), 3);
        assert_eq!(fenced.partition(&unclean, 0).expect("p").isr, vec![3]);
        assert_eq!(leader(&fenced, clean), -1);
        // Broker 3's heartbeat changes nothing for the clean topic: 3 was not in sync.
        let beat = ControllerOp::BrokerHeartbeat(BrokerHeartbeat { node_id: 3 });
        let (records, _) = plan(&fenced, &config, &beat).expect("planned");
        assert!(records.is_empty());
        // Turning it on for the clean topic elects 3 there too.
        let op = ControllerOp::IncrementalAlterConfigs(IncrementalAlterConfigs {
            resources: vec![(
                topic_target("c"),
                vec![operation("unclean.leader.election.enable", 0, Some("true"))],
            )],
            validate_only: false,
        });
        let (records, _) = plan(&fenced, &config, &op).expect("planned");
        let allowed = applied(&fenced, &records);
        assert_eq!(leader(&allowed, clean), 3);
        // The controller's configuration allows it for every topic.
        let (records, _) = plan(&image, &allowing, &fence).expect("planned");
        assert_eq!(leader(&applied(&image, &records), clean), 3);
    }

    #[test]
    fn a_reassignment_moves_a_partition_once_the_new_replica_is_in_sync() {
        let config = config(&[]);
        let id = Uuid::new_v4();
        let image = image_with(&[
            register(1),
            register(2),
            register(3),
            register(4),
            MetadataRecord::Topic {
                name: "t".into(),
                topic_id: id,
            },
            partition_zero(id, &[1, 2, 3], &[1, 2, 3], 1, 2),
        ]);
        let p = |image: &MetadataImage| image.partition(&id, 0).expect("partition").clone();
        let reassign = |image: &MetadataImage, target: Option<Vec<i32>>, allow: bool| {
            alter_partition_reassignments(
                image,
                &config,
                &AlterPartitionReassignments {
                    topics: vec![
                        ("t".into(), vec![(0, target)]),
                        ("nope".into(), vec![(0, None)]),
                    ],
                    allow_replication_factor_change: allow,
                },
            )
        };
        // Started: the target first, then the leaving replica; the leader stays meanwhile.
        let (records, reply) = reassign(&image, Some(vec![4, 2, 3]), false);
        assert_eq!(reply.topics[0].1, vec![(0, Ok(()))]);
        assert_eq!(
            code(&reply.topics[1].1[0].1),
            ErrorCode::UnknownTopicOrPartition.code()
        );
        let moving = applied(&image, &records);
        let state = p(&moving);
        assert_eq!(state.replicas, vec![4, 2, 3, 1]);
        assert_eq!(
            (
                state.adding_replicas.clone(),
                state.removing_replicas.clone()
            ),
            (vec![4], vec![1])
        );
        assert_eq!(
            (state.leader, state.leader_epoch, state.isr.clone()),
            (1, 2, vec![1, 2, 3])
        );
        // The reassignment survives a snapshot (the image written as records).
        assert_eq!(
            MetadataImage::from_records(&moving.to_records()).partition(&id, 0),
            Some(&state)
        );
        // KIP-860: another replication factor only when allowed.
        let (records, reply) = reassign(&image, Some(vec![4, 2]), false);
        assert!(records.is_empty());
        assert_eq!(
            code(&reply.topics[0].1[0].1),
            ErrorCode::InvalidReplicationFactor.code()
        );

        // The leader proposes the caught-up new replica into the ISR: the move completes,
        // replica 1 leaves, and 4 (first of the target in the ISR) leads in a new epoch.
        let op = ControllerOp::AlterPartition(AlterPartition {
            broker_id: 1,
            topic_id: id,
            partition: 0,
            leader_epoch: 2,
            partition_epoch: state.partition_epoch,
            new_isr: vec![1, 2, 3, 4],
        });
        let (records, _) = plan(&moving, &config, &op).expect("planned");
        let done = p(&applied(&moving, &records));
        assert_eq!(done.replicas, vec![4, 2, 3]);
        assert!(done.adding_replicas.is_empty() && done.removing_replicas.is_empty());
        assert_eq!(done.leader, 4);
        assert_eq!(done.leader_epoch, 3);
        assert_eq!(sorted(done.isr), vec![2, 3, 4]);

        // Cancelled before it completes: back to the replicas before it (in the order they
        // had during the move, as Kafka reverts).
        let (records, reply) = reassign(&moving, None, true);
        assert_eq!(reply.topics[0].1, vec![(0, Ok(()))]);
        let back = p(&applied(&moving, &records));
        assert_eq!(back.replicas, vec![2, 3, 1]);
        assert_eq!(sorted(back.isr), vec![1, 2, 3]);
        assert!(back.adding_replicas.is_empty() && back.removing_replicas.is_empty());
        // Nothing to cancel.
        let (_, reply) = reassign(&image, None, true);
        assert_eq!(
            code(&reply.topics[0].1[0].1),
            ErrorCode::NoReassignmentInProgress.code()
        );
    }

    fn sorted(mut ids: Vec<i32>) -> Vec<i32> {
        ids.sort_unstable();
        ids
    }

    fn create(topics: Vec<NewTopic>) -> CreateTopics {
        CreateTopics {
            topics,
            validate_only: false,
        }
    }

    fn sized(name: &str, partitions: i32) -> NewTopic {
        NewTopic {
            num_partitions: partitions,
            ..NewTopic::named(name)
        }
    }

    fn code(result: &ItemResult<impl std::fmt::Debug>) -> i16 {
        result.as_ref().err().map_or(0, |e| e.code)
    }

    /// An image holding topic `orders` with `partitions` partitions and `retention.ms=1000`.
    fn orders(partitions: i32) -> MetadataImage {
        let topic = NewTopic {
            num_partitions: partitions,
            configs: [("retention.ms".to_string(), "1000".to_string())].into(),
            ..NewTopic::named("orders")
        };
        let (records, reply) = create_topics(
            &MetadataImage::default(),
            &config(&[]),
            &create(vec![topic]),
        );
        assert!(reply.topics[0].is_ok());
        image_with(&records)
    }

    #[test]
    fn create_topic_with_defaults_partitions_and_configs() {
        let config = config(&[("num.partitions", "3")]);
        let topic = NewTopic {
            configs: [("cleanup.policy".to_string(), "compact".to_string())].into(),
            ..NewTopic::named("orders")
        };
        let (records, reply) =
            create_topics(&MetadataImage::default(), &config, &create(vec![topic]));
        let created = reply.topics[0].as_ref().expect("created");
        assert_eq!(created.num_partitions, 3);
        assert_eq!(created.replication_factor, 1);
        assert_eq!(created.configs["cleanup.policy"], "compact");
        // Topic, its config, then one record per partition led by this node.
        assert_eq!(records.len(), 5);
        assert_eq!(
            records[0],
            MetadataRecord::Topic {
                name: "orders".into(),
                topic_id: created.topic_id
            }
        );
        let image = image_with(&records);
        let t = image.topic_by_name("orders").expect("in the image");
        assert_eq!(t.topic_id, created.topic_id);
        assert_eq!(t.configs["cleanup.policy"], "compact");
        assert_eq!(t.partitions.len(), 3);
        for (p, partition) in &t.partitions {
            assert_eq!(partition.partition, *p);
            assert_eq!(partition.replicas, vec![1]);
            assert_eq!(partition.isr, vec![1]);
            assert_eq!(partition.leader, 1);
            assert_eq!(partition.leader_epoch, 0);
        }
    }

    #[test]
    fn create_topic_with_explicit_assignments() {
        let topic = NewTopic {
            assignments: vec![
                ReplicaAssignment {
                    partition: 1,
                    replicas: vec![1],
                },
                ReplicaAssignment {
                    partition: 0,
                    replicas: vec![1],
                },
            ],
            ..NewTopic::named("assigned")
        };
        let (records, reply) = create_topics(
            &MetadataImage::default(),
            &config(&[]),
            &create(vec![topic]),
        );
        assert_eq!(reply.topics[0].as_ref().expect("created").num_partitions, 2);
        let image = image_with(&records);
        assert_eq!(
            image
                .topic_by_name("assigned")
                .expect("created")
                .partitions
                .len(),
            2
        );
    }

    #[test]
    fn create_refusals_carry_kafkas_codes() {
        let image = orders(1);
        let config = config(&[]);
        let assigned = |partition, replicas: Vec<i32>| ReplicaAssignment {
            partition,
            replicas,
        };
        let cases: Vec<(NewTopic, ErrorCode)> = vec![
            (NewTopic::named("orders"), ErrorCode::TopicAlreadyExists),
            (NewTopic::named("a/b"), ErrorCode::InvalidTopicException),
            (NewTopic::named(""), ErrorCode::InvalidTopicException),
            (sized("zero", 0), ErrorCode::InvalidPartitions),
            (
                sized("huge", MAX_PARTITIONS_PER_TOPIC + 1),
                ErrorCode::InvalidPartitions,
            ),
            (
                NewTopic {
                    replication_factor: 2,
                    ..NewTopic::named("rf2")
                },
                ErrorCode::InvalidReplicationFactor,
            ),
            (
                NewTopic {
                    replication_factor: 0,
                    ..NewTopic::named("rf0")
                },
                ErrorCode::InvalidReplicationFactor,
            ),
            (
                NewTopic {
                    configs: [("no.such.key".to_string(), "1".to_string())].into(),
                    ..NewTopic::named("badkey")
                },
                ErrorCode::InvalidConfig,
            ),
            (
                NewTopic {
                    configs: [("retention.ms".to_string(), "soon".to_string())].into(),
                    ..NewTopic::named("badvalue")
                },
                ErrorCode::InvalidConfig,
            ),
            (
                NewTopic {
                    assignments: vec![assigned(0, vec![1])],
                    ..sized("both", 1)
                },
                ErrorCode::InvalidRequest,
            ),
            (
                NewTopic {
                    assignments: vec![assigned(1, vec![1])],
                    ..NewTopic::named("gap")
                },
                ErrorCode::InvalidReplicaAssignment,
            ),
            (
                NewTopic {
                    assignments: vec![assigned(0, vec![2])],
                    ..NewTopic::named("elsewhere")
                },
                ErrorCode::InvalidReplicaAssignment,
            ),
            (
                NewTopic {
                    assignments: vec![assigned(0, vec![1, 1])],
                    ..NewTopic::named("twice")
                },
                ErrorCode::InvalidReplicaAssignment,
            ),
        ];
        for (topic, expected) in cases {
            let name = topic.name.clone();
            let (records, reply) = create_topics(&image, &config, &create(vec![topic]));
            assert_eq!(
                code(&reply.topics[0]),
                expected.code(),
                "{name}: {:?}",
                reply.topics[0]
            );
            assert!(records.is_empty(), "{name}");
        }
    }

    #[test]
    fn colliding_name_is_an_invalid_topic() {
        // '.' and '_' are interchangeable in metric names.
        let image = image_with(&[MetadataRecord::Topic {
            name: "a.b".into(),
            topic_id: Uuid::new_v4(),
        }]);
        let (_, reply) = create_topics(&image, &config(&[]), &create(vec![NewTopic::named("a_b")]));
        assert_eq!(
            code(&reply.topics[0]),
            ErrorCode::InvalidTopicException.code()
        );
    }

    #[test]
    fn later_topics_of_one_request_see_the_earlier_ones() {
        let (records, reply) = create_topics(
            &MetadataImage::default(),
            &config(&[]),
            &create(vec![
                NewTopic::named("a.b"),
                NewTopic::named("a.b"),
                NewTopic::named("a_b"),
            ]),
        );
        assert!(reply.topics[0].is_ok());
        assert_eq!(code(&reply.topics[1]), ErrorCode::TopicAlreadyExists.code());
        assert_eq!(
            code(&reply.topics[2]),
            ErrorCode::InvalidTopicException.code()
        );
        assert_eq!(image_with(&records).topic_count(), 1);
    }

    #[test]
    fn validate_only_answers_without_records() {
        let op = CreateTopics {
            topics: vec![sized("a", 2), sized("a", 2)],
            validate_only: true,
        };
        let (records, reply) = create_topics(&MetadataImage::default(), &config(&[]), &op);
        assert!(records.is_empty());
        assert_eq!(reply.topics[0].as_ref().expect("valid").num_partitions, 2);
        assert_eq!(code(&reply.topics[1]), ErrorCode::TopicAlreadyExists.code());

        let image = orders(1);
        let op = CreatePartitions {
            topics: vec![NewPartitions {
                name: "orders".into(),
                count: 4,
                assignments: None,
            }],
            validate_only: true,
        };
        let (records, reply) = create_partitions(&image, &config(&[]), &op);
        assert!(records.is_empty());
        assert!(reply.topics[0].is_ok());
    }

    #[test]
    fn delete_known_and_unknown_topics() {
        let image = orders(2);
        let id = image.topic_by_name("orders").expect("orders").topic_id;
        let op = DeleteTopics {
            topics: vec![
                TopicRef::Name("orders".into()),
                TopicRef::Id(id),
                TopicRef::Name("missing".into()),
                TopicRef::Id(Uuid::new_v4()),
            ],
        };
        let (records, reply) = delete_topics(&image, &op);
        assert_eq!(records, vec![MetadataRecord::RemoveTopic { topic_id: id }]);
        let deleted = DeletedTopic {
            name: "orders".into(),
            topic_id: id,
        };
        assert_eq!(reply.topics[0], Ok(deleted.clone()));
        assert_eq!(reply.topics[1], Ok(deleted));
        assert_eq!(
            code(&reply.topics[2]),
            ErrorCode::UnknownTopicOrPartition.code()
        );
        assert_eq!(code(&reply.topics[3]), ErrorCode::UnknownTopicId.code());
        let after = applied(&image, &records);
        assert!(after.topic_by_name("orders").is_none());
        assert!(after.was_removed(&id));
    }

    #[test]
    fn create_partitions_grows_a_topic() {
        let image = orders(2);
        let id = image.topic_by_name("orders").expect("orders").topic_id;
        let grow = |count, assignments| CreatePartitions {
            topics: vec![NewPartitions {
                name: "orders".into(),
                count,
                assignments,
            }],
            validate_only: false,
        };
        let (records, reply) = create_partitions(&image, &config(&[]), &grow(4, None));
        assert!(reply.topics[0].is_ok());
        assert_eq!(records.len(), 2);
        let after = applied(&image, &records);
        let t = after.topic_by_id(&id).expect("still there");
        assert_eq!(
            t.partitions.keys().copied().collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        assert_eq!(t.partitions[&3].leader, 1);

        let refused = |op: CreatePartitions| {
            let (records, reply) = create_partitions(&image, &config(&[]), &op);
            assert!(records.is_empty());
            code(&reply.topics[0])
        };
        assert_eq!(refused(grow(2, None)), ErrorCode::InvalidPartitions.code());
        assert_eq!(refused(grow(1, None)), ErrorCode::InvalidPartitions.code());
        assert_eq!(
            refused(grow(MAX_PARTITIONS_PER_TOPIC + 1, None)),
            ErrorCode::InvalidPartitions.code()
        );
        assert_eq!(
            refused(grow(4, Some(vec![vec![1]]))),
            ErrorCode::InvalidReplicaAssignment.code()
        );
        assert_eq!(
            refused(grow(3, Some(vec![vec![7]]))),
            ErrorCode::InvalidReplicaAssignment.code()
        );
        assert_eq!(
            refused(CreatePartitions {
                topics: vec![NewPartitions {
                    name: "missing".into(),
                    count: 3,
                    assignments: None
                }],
                validate_only: false,
            }),
            ErrorCode::UnknownTopicOrPartition.code()
        );
    }

    fn topic_target(name: &str) -> ConfigTarget {
        ConfigTarget {
            resource_type: ConfigTarget::TOPIC,
            name: name.into(),
        }
    }

    fn broker_target(name: &str) -> ConfigTarget {
        ConfigTarget {
            resource_type: ConfigTarget::BROKER,
            name: name.into(),
        }
    }

    fn set(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn alter_configs_replaces_the_whole_set() {
        let image = orders(1);
        let op = AlterConfigs {
            resources: vec![
                (
                    topic_target("orders"),
                    set(&[("cleanup.policy", "compact")]),
                ),
                (broker_target(""), set(&[("log.retention.ms", "5000")])),
                (broker_target("1"), set(&[("message.max.bytes", "2000")])),
            ],
            validate_only: false,
        };
        let (records, reply) = alter_configs(&image, &config(&[]), &op);
        assert!(reply.resources.iter().all(Result::is_ok), "{reply:?}");
        let after = applied(&image, &records);
        // retention.ms was not in the new set: removed.
        assert_eq!(
            after.topic_by_name("orders").expect("orders").configs,
            set(&[("cleanup.policy", "compact")])
        );
        assert_eq!(after.broker_configs[&None]["log.retention.ms"], "5000");
        assert_eq!(after.broker_configs[&Some(1)]["message.max.bytes"], "2000");
        // Setting what is already set writes nothing.
        let again = AlterConfigs {
            resources: vec![(
                topic_target("orders"),
                set(&[("cleanup.policy", "compact")]),
            )],
            validate_only: false,
        };
        assert!(alter_configs(&after, &config(&[]), &again).0.is_empty());
    }

    #[test]
    fn alter_configs_refusals() {
        let image = orders(1);
        let cases = [
            (
                topic_target("missing"),
                set(&[]),
                ErrorCode::UnknownTopicOrPartition,
            ),
            (
                topic_target("orders"),
                set(&[("nope", "1")]),
                ErrorCode::InvalidConfig,
            ),
            (
                topic_target("orders"),
                set(&[("retention.ms", "x")]),
                ErrorCode::InvalidConfig,
            ),
            (broker_target("2"), set(&[]), ErrorCode::InvalidRequest),
            (
                broker_target(""),
                set(&[("log.dirs", "/x")]),
                ErrorCode::InvalidConfig,
            ),
            (
                broker_target(""),
                set(&[("nope", "1")]),
                ErrorCode::InvalidConfig,
            ),
            (
                ConfigTarget {
                    resource_type: 8,
                    name: "x".into(),
                },
                set(&[]),
                ErrorCode::InvalidRequest,
            ),
        ];
        for (target, wanted, expected) in cases {
            let op = AlterConfigs {
                resources: vec![(target.clone(), wanted)],
                validate_only: false,
            };
            let (records, reply) = alter_configs(&image, &config(&[]), &op);
            assert_eq!(code(&reply.resources[0]), expected.code(), "{target:?}");
            assert!(records.is_empty());
        }
    }

    fn operation(name: &str, op: i8, value: Option<&str>) -> ConfigOperation {
        ConfigOperation {
            name: name.into(),
            op,
            value: value.map(str::to_string),
        }
    }

    #[test]
    fn incremental_alter_configs_changes_key_by_key() {
        let image = orders(1);
        let op = IncrementalAlterConfigs {
            resources: vec![(
                topic_target("orders"),
                vec![
                    operation("segment.ms", ConfigOperation::SET, Some("60000")),
                    operation("retention.ms", ConfigOperation::DELETE, None),
                    // Appends to the inherited default ("delete").
                    operation("cleanup.policy", ConfigOperation::APPEND, Some("compact")),
                ],
            )],
            validate_only: false,
        };
        let (records, reply) = incremental_alter_configs(&image, &config(&[]), &op);
        assert!(reply.resources[0].is_ok(), "{reply:?}");
        let after = applied(&image, &records);
        assert_eq!(
            after.topic_by_name("orders").expect("orders").configs,
            set(&[
                ("cleanup.policy", "delete,compact"),
                ("segment.ms", "60000")
            ])
        );
        let subtract = IncrementalAlterConfigs {
            resources: vec![(
                topic_target("orders"),
                vec![operation(
                    "cleanup.policy",
                    ConfigOperation::SUBTRACT,
                    Some("delete"),
                )],
            )],
            validate_only: false,
        };
        let (records, _) = incremental_alter_configs(&after, &config(&[]), &subtract);
        let after = applied(&after, &records);
        assert_eq!(
            after.topic_by_name("orders").expect("orders").configs["cleanup.policy"],
            "compact"
        );

        for (operations, expected) in [
            (
                vec![operation(
                    "retention.ms",
                    ConfigOperation::APPEND,
                    Some("1"),
                )],
                ErrorCode::InvalidConfig,
            ),
            (
                vec![operation("retention.ms", 9, Some("1"))],
                ErrorCode::InvalidRequest,
            ),
        ] {
            let op = IncrementalAlterConfigs {
                resources: vec![(topic_target("orders"), operations)],
                validate_only: false,
            };
            let (records, reply) = incremental_alter_configs(&image, &config(&[]), &op);
            assert_eq!(code(&reply.resources[0]), expected.code());
            assert!(records.is_empty());
        }
    }

    #[test]
    fn producer_id_blocks_follow_each_other() {
        let op = AllocateProducerIds { broker_id: 1 };
        let (records, first) =
            allocate_producer_ids(&MetadataImage::default(), &op).expect("block");
        assert_eq!(
            first,
            ProducerIdBlock {
                first: 0,
                size: PRODUCER_ID_BLOCK
            }
        );
        let image = image_with(&records);
        let (_, second) = allocate_producer_ids(&image, &op).expect("block");
        assert_eq!(second.first, PRODUCER_ID_BLOCK);
        let exhausted = image_with(&[MetadataRecord::ProducerIds {
            next_producer_id: i64::MAX - 10,
        }]);
        let refused = allocate_producer_ids(&exhausted, &op).expect_err("no ids left");
        assert_eq!(refused.code, ErrorCode::UnknownServerError.code());
    }

    #[test]
    fn a_batch_plans_each_operation_after_the_previous_ones() {
        let ops: Vec<ControllerOp> = vec![
            AllocateProducerIds { broker_id: 1 }.into(),
            create(vec![NewTopic::named("a")]).into(),
            create(vec![NewTopic::named("a")]).into(),
            AllocateProducerIds { broker_id: 1 }.into(),
            DeleteTopics {
                topics: vec![TopicRef::Name("a".into())],
            }
            .into(),
        ];
        let image = image_with(&[MetadataRecord::Cluster {
            cluster_id: "c".into(),
        }]);
        let plan = plan_batch(&image, &config(&[]), &ops);
        let answers: Vec<ControllerReply> = plan
            .answers
            .iter()
            .map(|(a, needs_commit)| {
                assert!(*needs_commit);
                a.clone().expect("answered")
            })
            .collect();
        let block = |r: &ControllerReply| match r {
            ControllerReply::AllocateProducerIds(b) => b.first,
            other => panic!("{other:?}"),
        };
        assert_eq!(block(&answers[0]), 0);
        assert_eq!(block(&answers[3]), PRODUCER_ID_BLOCK);
        let ControllerReply::CreateTopics(second) = &answers[2] else {
            panic!("{:?}", answers[2]);
        };
        assert_eq!(
            code(&second.topics[0]),
            ErrorCode::TopicAlreadyExists.code()
        );
        let ControllerReply::DeleteTopics(deleted) = &answers[4] else {
            panic!("{:?}", answers[4]);
        };
        assert!(deleted.topics[0].is_ok());
        // One commit: created, then deleted; two blocks taken.
        let after = applied(&image, &plan.records);
        assert_eq!(after.topic_count(), 0);
        assert_eq!(after.next_producer_id, 2 * PRODUCER_ID_BLOCK);
    }

    #[test]
    fn answers_before_the_first_records_do_not_need_the_commit() {
        let ops: Vec<ControllerOp> = vec![
            create(vec![NewTopic::named("bad/name")]).into(),
            create(vec![NewTopic::named("good")]).into(),
            create(vec![NewTopic::named("bad/name")]).into(),
        ];
        let plan = plan_batch(&MetadataImage::default(), &config(&[]), &ops);
        let needs: Vec<bool> = plan.answers.iter().map(|(_, n)| *n).collect();
        assert_eq!(needs, vec![false, true, true]);
    }
}
