//! Consumer-group APIs (classic protocol), committed offsets, and group admin.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};
use strata_coordinator::group::{JoinResponse, SyncResponse};
use strata_coordinator::{CommittedOffset, GroupRecord, GroupState, JoinRequest, SyncRequest};
use strata_protocol::ErrorCode;
use strata_quorum::controller::ops::{CreateTopics, NewTopic};

use super::{str_bytes, Reply};
use crate::auth::{
    authorize, authorize_quiet, authorized_operations, ConnectionContext, Operation, Resource,
    GROUP_OPERATIONS,
};
use crate::broker::Broker;
use crate::groups::{wait_durable, OFFSETS_TOPIC, WRITE_TIMEOUT};
use crate::partition::now_ms;

fn code(e: Option<ErrorCode>) -> i16 {
    e.map_or(0, |e| e.code())
}

fn opt_str(s: &Option<StrBytes>) -> Option<String> {
    s.as_ref().map(|s| s.to_string())
}

/// Creates `__consumer_offsets` (compacted, `offsets.topic.num.partitions` partitions) the
/// first time a group needs it, as Kafka does on the first FindCoordinator.
pub async fn ensure_offsets_topic(broker: &Arc<Broker>) -> Result<(), ErrorCode> {
    ensure_internal_topic(broker, OFFSETS_TOPIC, broker.groups.offsets_partitions).await
}

/// Creates a compacted internal topic (`__consumer_offsets`, `__transaction_state`) with
/// `partitions` partitions unless it exists.
pub async fn ensure_internal_topic(
    broker: &Arc<Broker>,
    name: &'static str,
    partitions: i32,
) -> Result<(), ErrorCode> {
    if broker.image().topic_by_name(name).is_some() {
        return Ok(());
    }
    let mut configs: BTreeMap<String, String> = [
        ("cleanup.policy", "compact"),
        ("segment.bytes", "104857600"),
        ("compression.type", "producer"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let replication_factor = internal_replication_factor(broker, name);
    if name == crate::txn::TXN_TOPIC {
        // As Kafka: the transaction log's writes need `transaction.state.log.min.isr`
        // replicas (never more than it has).
        let min_isr = broker
            .config
            .parsed::<i16>("transaction.state.log.min.isr")
            .unwrap_or(2)
            .clamp(1, replication_factor);
        configs.insert("min.insync.replicas".into(), min_isr.to_string());
    }
    let op = CreateTopics {
        topics: vec![NewTopic {
            num_partitions: partitions,
            replication_factor,
            configs,
            ..NewTopic::named(name)
        }],
        validate_only: false,
    };
    match broker.submit(op).await.map(|r| r.topics.into_iter().next()) {
        Ok(Some(Ok(_))) => tracing::info!(partitions, topic = name, "created internal topic"),
        // Created meanwhile by another request.
        Ok(Some(Err(e))) if e.code == ErrorCode::TopicAlreadyExists.code() => {}
        answer => tracing::error!(?answer, topic = name, "cannot create an internal topic"),
    }
    // The metadata publisher loaded the coordinator shards of its partitions before the
    // image that holds it was published.
    if broker.image().topic_by_name(name).is_some() {
        Ok(())
    } else {
        Err(ErrorCode::CoordinatorNotAvailable)
    }
}

/// The replication factor of internal topic `name`: `offsets.topic.replication.factor` or
/// `transaction.state.log.replication.factor` when set, strictly (with fewer brokers
/// registered the creation is refused and clients retry, as with Kafka); unset, Kafka's 3
/// capped at the cluster's size (the registered brokers, or the controller quorum's voters
/// while they register), so a single node needs no setting.
fn internal_replication_factor(broker: &Broker, name: &str) -> i16 {
    let key = if name == crate::txn::TXN_TOPIC {
        "transaction.state.log.replication.factor"
    } else {
        "offsets.topic.replication.factor"
    };
    if broker.config.set.contains_key(key) {
        if let Some(rf) = broker.config.parsed::<i16>(key) {
            return rf.max(1);
        }
    }
    let registered = broker.image().brokers().count();
    let voters = match broker.config.roles.controller {
        true => crate::controller::quorum_voters(&broker.config).len(),
        false => 0,
    };
    registered.max(voters).clamp(1, 3) as i16
}

pub async fn join_group(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    client_id: &str,
    req: JoinGroupRequest,
    version: i16,
) -> Reply {
    let respond = move |r: JoinResponse| {
        let members = r
            .members
            .into_iter()
            .map(|(id, instance, metadata)| {
                JoinGroupResponseMember::default()
                    .with_member_id(str_bytes(id))
                    .with_group_instance_id(instance.filter(|_| version >= 5).map(str_bytes))
                    .with_metadata(metadata)
            })
            .collect();
        ResponseKind::JoinGroup(
            JoinGroupResponse::default()
                .with_error_code(code(r.error))
                .with_generation_id(r.generation_id)
                .with_protocol_type(r.protocol_type.filter(|_| version >= 7).map(str_bytes))
                .with_protocol_name(if version >= 7 {
                    r.protocol_name.map(str_bytes)
                } else {
                    Some(str_bytes(r.protocol_name.unwrap_or_default()))
                })
                .with_leader(str_bytes(r.leader))
                .with_skip_assignment(r.skip_assignment && version >= 9)
                .with_member_id(str_bytes(r.member_id))
                .with_members(members),
        )
    };
    let group_id = req.group_id.0.to_string();
    if !authorize(ctx, Operation::Read, Resource::Group(&group_id)) {
        return Reply::now(respond(JoinResponse::error(
            ErrorCode::GroupAuthorizationFailed,
            req.member_id.to_string(),
        )));
    }
    if let Err(e) = ensure_offsets_topic(broker).await {
        return Reply::now(respond(JoinResponse::error(e, req.member_id.to_string())));
    }
    let join = JoinRequest {
        group_id,
        member_id: req.member_id.to_string(),
        group_instance_id: if version >= 5 {
            opt_str(&req.group_instance_id)
        } else {
            None
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        client_id: client_id.to_string(),
        client_host: format!("/{}", ctx.peer.ip()),
        require_known_member_id: version >= 4,
    };
    let svc = &broker.groups;
    let member_id = req.member_id.to_string();
    let (token, rx) = svc.wait_join(&join.group_id);
    let group_id = join.group_id.clone();
    if let Err(e) = svc.with(&group_id, |shard| {
        let out = shard.classic.join(now_ms(), token, join);
        svc.dispatch(broker, out);
    }) {
        svc.forget(token);
        return Reply::now(respond(JoinResponse::error(e, member_id)));
    }
    Reply::Later(
        async move {
            let r = rx.await.unwrap_or_else(|_| {
                JoinResponse::error(ErrorCode::CoordinatorNotAvailable, member_id)
            });
            respond(r)
        }
        .boxed(),
    )
}

pub fn sync_group(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: SyncGroupRequest,
    version: i16,
) -> Reply {
    let respond = move |r: SyncResponse| {
        ResponseKind::SyncGroup(
            SyncGroupResponse::default()
                .with_error_code(code(r.error))
                .with_protocol_type(r.protocol_type.filter(|_| version >= 5).map(str_bytes))
                .with_protocol_name(r.protocol_name.filter(|_| version >= 5).map(str_bytes))
                .with_assignment(r.assignment),
        )
    };
    let sync = SyncRequest {
        group_id: req.group_id.0.to_string(),
        generation_id: req.generation_id,
        member_id: req.member_id.to_string(),
        group_instance_id: if version >= 3 {
            opt_str(&req.group_instance_id)
        } else {
            None
        },
        protocol_type: if version >= 5 {
            opt_str(&req.protocol_type)
        } else {
            None
        },
        protocol_name: if version >= 5 {
            opt_str(&req.protocol_name)
        } else {
            None
        },
        assignments: req
            .assignments
            .iter()
            .map(|a| (a.member_id.to_string(), a.assignment.clone()))
            .collect(),
    };
    if !authorize(ctx, Operation::Read, Resource::Group(&sync.group_id)) {
        return Reply::now(respond(SyncResponse::error(
            ErrorCode::GroupAuthorizationFailed,
        )));
    }
    let svc = &broker.groups;
    let (token, rx) = svc.wait_sync(&sync.group_id);
    let group_id = sync.group_id.clone();
    if let Err(e) = svc.with(&group_id, |shard| {
        let out = shard.classic.sync(now_ms(), token, sync);
        svc.dispatch(broker, out);
    }) {
        svc.forget(token);
        return Reply::now(respond(SyncResponse::error(e)));
    }
    Reply::Later(
        async move {
            let r = rx
                .await
                .unwrap_or_else(|_| SyncResponse::error(ErrorCode::CoordinatorNotAvailable));
            respond(r)
        }
        .boxed(),
    )
}

pub fn heartbeat(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: HeartbeatRequest,
    version: i16,
) -> HeartbeatResponse {
    let instance = if version >= 3 {
        opt_str(&req.group_instance_id)
    } else {
        None
    };
    let group_id = req.group_id.0.as_str();
    if !authorize(ctx, Operation::Read, Resource::Group(group_id)) {
        return HeartbeatResponse::default()
            .with_error_code(ErrorCode::GroupAuthorizationFailed.code());
    }
    let error = broker
        .groups
        .with(group_id, |shard| {
            shard.classic.heartbeat(
                now_ms(),
                group_id,
                req.generation_id,
                req.member_id.as_str(),
                instance.as_deref(),
            )
        })
        .unwrap_or_else(Some);
    HeartbeatResponse::default().with_error_code(code(error))
}

pub fn leave_group(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    if !authorize(
        ctx,
        Operation::Read,
        Resource::Group(req.group_id.0.as_str()),
    ) {
        return LeaveGroupResponse::default()
            .with_error_code(ErrorCode::GroupAuthorizationFailed.code());
    }
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        req.members
            .iter()
            .map(|m| (m.member_id.to_string(), opt_str(&m.group_instance_id)))
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let svc = &broker.groups;
    let group_id = req.group_id.0.as_str();
    let results = svc
        .with(group_id, |shard| {
            let (results, out) = shard.classic.leave(now_ms(), group_id, &members);
            svc.dispatch(broker, out);
            results
        })
        .unwrap_or_else(|e| vec![Some(e); members.len()]);
    if version >= 3 {
        LeaveGroupResponse::default().with_members(
            members
                .into_iter()
                .zip(results)
                .map(|((id, instance), err)| {
                    MemberResponse::default()
                        .with_member_id(str_bytes(id))
                        .with_group_instance_id(instance.map(str_bytes))
                        .with_error_code(code(err))
                })
                .collect(),
        )
    } else {
        LeaveGroupResponse::default().with_error_code(code(results.into_iter().next().flatten()))
    }
}

pub async fn offset_commit(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: OffsetCommitRequest,
    version: i16,
) -> OffsetCommitResponse {
    let group_id = req.group_id.0.to_string();
    let instance = if version >= 7 {
        opt_str(&req.group_instance_id)
    } else {
        None
    };
    let all = |e: ErrorCode| {
        OffsetCommitResponse::default().with_topics(
            req.topics
                .iter()
                .map(|t| {
                    OffsetCommitResponseTopic::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    OffsetCommitResponsePartition::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(e.code())
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
    };
    if !authorize(ctx, Operation::Read, Resource::Group(&group_id)) {
        return all(ErrorCode::GroupAuthorizationFailed);
    }
    if let Err(e) = ensure_offsets_topic(broker).await {
        return all(e);
    }
    let image = broker.image();
    let now = now_ms();
    let svc = &broker.groups;
    let max_metadata = svc.max_metadata_bytes();
    // Per partition: the record to write, or the error to answer.
    let mut plan: Vec<(String, i32, Result<GroupRecord, ErrorCode>)> = Vec::new();
    for t in &req.topics {
        let topic = t.name.0.to_string();
        let known = image.topic_by_name(&topic);
        for p in &t.partitions {
            let metadata = p
                .committed_metadata
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default();
            // Authorized before existence, so an unauthorized topic's existence is not
            // disclosed.
            let result = if !authorize(ctx, Operation::Read, Resource::Topic(&topic)) {
                Err(ErrorCode::TopicAuthorizationFailed)
            } else if known.is_none_or(|k| !k.partitions.contains_key(&p.partition_index)) {
                Err(ErrorCode::UnknownTopicOrPartition)
            } else if metadata.len() > max_metadata {
                Err(ErrorCode::OffsetMetadataTooLarge)
            } else {
                Ok(GroupRecord::Offset {
                    group: group_id.clone(),
                    topic: topic.clone(),
                    partition: p.partition_index,
                    value: Some(CommittedOffset {
                        offset: p.committed_offset,
                        leader_epoch: if version >= 6 {
                            p.committed_leader_epoch
                        } else {
                            -1
                        },
                        metadata,
                        commit_ms: now,
                        end_offset: broker.end_offset_of(&image, &topic, p.partition_index),
                    }),
                })
            };
            plan.push((topic.clone(), p.partition_index, result));
        }
    }
    let records: Vec<GroupRecord> = plan
        .iter()
        .filter_map(|(_, _, r)| r.as_ref().ok().cloned())
        .collect();
    // The member check fails every partition; a failed append only those it would write.
    let checked = svc.with(&group_id, |shard| {
        shard.check_commit(
            now,
            &group_id,
            req.generation_id_or_member_epoch,
            req.member_id.as_str(),
            instance.as_deref(),
        )?;
        if records.is_empty() {
            return Ok(Ok(Vec::new()));
        }
        // Staged, not applied: OffsetFetch sees the commit only once its record is durable
        // (settled below, or by the ticker).
        let waits = svc.append(broker, &records);
        if let Ok(waits) = &waits {
            for w in waits {
                shard
                    .classic
                    .stage(w.partition.index, w.offset, records.clone());
            }
        }
        Ok(waits)
    });
    let durable = match checked {
        Err(e) | Ok(Err(e)) => return all(e),
        Ok(Ok(Ok(waits))) => svc.wait_and_settle(waits, WRITE_TIMEOUT).await,
        Ok(Ok(Err(e))) => Err(e),
    };
    let mut topics: Vec<OffsetCommitResponseTopic> = Vec::new();
    for (topic, partition, result) in plan {
        let error = match (&result, &durable) {
            (Err(e), _) => Some(*e),
            (Ok(_), Err(e)) => Some(*e),
            (Ok(_), Ok(())) => None,
        };
        if topics.last().is_none_or(|t| t.name.0.as_str() != topic) {
            topics
                .push(OffsetCommitResponseTopic::default().with_name(TopicName(str_bytes(topic))));
        }
        topics.last_mut().expect("pushed").partitions.push(
            OffsetCommitResponsePartition::default()
                .with_partition_index(partition)
                .with_error_code(code(error)),
        );
    }
    OffsetCommitResponse::default().with_topics(topics)
}

/// One committed offset as OffsetFetch answers it: partition, offset, leader epoch,
/// metadata, and whether it is unsettled (a transaction or a pending commit may change it).
struct FetchedOffset {
    partition: i32,
    offset: i64,
    leader_epoch: i32,
    metadata: String,
    unsettled: bool,
}
/// Offsets of one topic.
type FetchedTopic = (String, Vec<FetchedOffset>);

/// The committed offsets of one group, for the requested topics (`None`: everything
/// committed); absent ones answer offset -1. With `require_stable`, unsettled offsets are
/// flagged. NOT_COORDINATOR if the group's shard is not loaded here.
fn fetch_group(
    broker: &Broker,
    group_id: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> Result<Vec<FetchedTopic>, ErrorCode> {
    broker.groups.with(group_id, |shard| {
        let committed = shard.classic.offsets(group_id);
        let row = |t: &str, p: i32, o: Option<&CommittedOffset>| FetchedOffset {
            partition: p,
            offset: o.map_or(-1, |o| o.offset),
            leader_epoch: o.map_or(-1, |o| o.leader_epoch),
            metadata: o.map(|o| o.metadata.clone()).unwrap_or_default(),
            unsettled: require_stable && shard.has_unsettled_offset(group_id, t, p),
        };
        match topics {
            Some(list) => list
                .into_iter()
                .map(|(t, parts)| {
                    let rows = parts
                        .into_iter()
                        .map(|p| row(&t, p, committed.and_then(|c| c.get(&(t.clone(), p)))))
                        .collect();
                    (t, rows)
                })
                .collect(),
            None => {
                let mut out: Vec<FetchedTopic> = Vec::new();
                for ((t, p), o) in committed.into_iter().flatten() {
                    if out.last().is_none_or(|(name, _)| name != t) {
                        out.push((t.clone(), Vec::new()));
                    }
                    out.last_mut().expect("pushed").1.push(row(t, *p, Some(o)));
                }
                out
            }
        }
    })
}

pub fn offset_fetch(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    let epoch = |e: i32| if version >= 5 { e } else { -1 };
    // require_stable (v7+): an offset a transaction may still change is not answered.
    if version >= 8 {
        let groups = req
            .groups
            .iter()
            .map(|g| {
                let id = g.group_id.0.to_string();
                let group = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
                if !authorize(ctx, Operation::Describe, Resource::Group(&id)) {
                    return group.with_error_code(ErrorCode::GroupAuthorizationFailed.code());
                }
                let topics = g.topics.as_ref().map(|ts| {
                    ts.iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                        .collect()
                });
                let rows = match fetch_group(broker, &id, topics, req.require_stable) {
                    Ok(rows) => rows,
                    Err(e) => return group.with_error_code(e.code()),
                };
                let (rows, denied) = topic_access(ctx, rows, g.topics.is_some());
                group.with_topics(
                    rows.into_iter()
                        .map(|(t, parts)| {
                            let refused = denied.contains(&t);
                            let partitions = parts
                                .into_iter()
                                .map(|f| {
                                    let r = OffsetFetchResponsePartitions::default()
                                        .with_partition_index(f.partition)
                                        .with_committed_offset(f.offset)
                                        .with_committed_leader_epoch(f.leader_epoch)
                                        .with_metadata(Some(str_bytes(f.metadata)));
                                    if refused {
                                        r.with_committed_offset(-1)
                                            .with_metadata(None)
                                            .with_error_code(
                                                ErrorCode::TopicAuthorizationFailed.code(),
                                            )
                                    } else if f.unsettled {
                                        r.with_committed_offset(-1)
                                            .with_error_code(ErrorCode::UnstableOffsetCommit.code())
                                    } else {
                                        r
                                    }
                                })
                                .collect();
                            OffsetFetchResponseTopics::default()
                                .with_name(TopicName(str_bytes(t)))
                                .with_partitions(partitions)
                        })
                        .collect(),
                )
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let id = req.group_id.0.to_string();
    if !authorize(ctx, Operation::Describe, Resource::Group(&id)) {
        return OffsetFetchResponse::default().with_error_code(if version >= 2 {
            ErrorCode::GroupAuthorizationFailed.code()
        } else {
            0
        });
    }
    let topics = req.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    let rows = match fetch_group(broker, &id, topics, req.require_stable) {
        Ok(rows) => rows,
        Err(e) => return OffsetFetchResponse::default().with_error_code(e.code()),
    };
    let (rows, denied) = topic_access(ctx, rows, req.topics.is_some());
    OffsetFetchResponse::default().with_topics(
        rows.into_iter()
            .map(|(t, parts)| {
                let refused = denied.contains(&t);
                let partitions = parts
                    .into_iter()
                    .map(|f| {
                        let r = OffsetFetchResponsePartition::default()
                            .with_partition_index(f.partition)
                            .with_committed_offset(f.offset)
                            .with_committed_leader_epoch(epoch(f.leader_epoch))
                            .with_metadata(Some(str_bytes(f.metadata)));
                        if refused {
                            r.with_committed_offset(-1)
                                .with_metadata(None)
                                .with_error_code(ErrorCode::TopicAuthorizationFailed.code())
                        } else if f.unsettled {
                            r.with_committed_offset(-1)
                                .with_error_code(ErrorCode::UnstableOffsetCommit.code())
                        } else {
                            r
                        }
                    })
                    .collect();
                OffsetFetchResponseTopic::default()
                    .with_name(TopicName(str_bytes(t)))
                    .with_partitions(partitions)
            })
            .collect(),
    )
}

/// OffsetFetch's topic check (DESCRIBE): the topics a client named and may not describe are
/// returned in the set (their partitions answer TOPIC_AUTHORIZATION_FAILED); when it asked for
/// all of the group's offsets, such topics are left out (quietly: a filtered listing).
fn topic_access<P>(
    ctx: &ConnectionContext,
    rows: Vec<(String, P)>,
    named: bool,
) -> (Vec<(String, P)>, HashSet<String>) {
    if named {
        let denied = rows
            .iter()
            .map(|(t, _)| t)
            .filter(|t| !authorize(ctx, Operation::Describe, Resource::Topic(t)))
            .cloned()
            .collect();
        (rows, denied)
    } else {
        let rows = rows
            .into_iter()
            .filter(|(t, _)| authorize_quiet(ctx, Operation::Describe, Resource::Topic(t)))
            .collect();
        (rows, HashSet::new())
    }
}

/// Topics a group's members subscribe to (consumer protocol), decoded from their metadata.
fn subscribed_topics(metadata: &[Bytes]) -> Vec<String> {
    let mut topics = Vec::new();
    for m in metadata {
        if m.len() < 2 {
            continue;
        }
        let version = i16::from_be_bytes([m[0], m[1]]);
        let mut body = m.slice(2..);
        if let Ok(sub) = ConsumerProtocolSubscription::decode(&mut body, version.clamp(0, 3)) {
            topics.extend(sub.topics.iter().map(|t| t.to_string()));
        }
    }
    topics
}

pub async fn offset_delete(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    let group_id = req.group_id.0.to_string();
    if !authorize(ctx, Operation::Delete, Resource::Group(&group_id)) {
        return OffsetDeleteResponse::default()
            .with_error_code(ErrorCode::GroupAuthorizationFailed.code());
    }
    // READ on each topic, checked before anything about the group is looked at.
    let readable: HashSet<String> = req
        .topics
        .iter()
        .map(|t| t.name.0.to_string())
        .filter(|name| authorize(ctx, Operation::Read, Resource::Topic(name)))
        .collect();
    let svc = &broker.groups;
    let planned = svc.with(&group_id, |shard| {
        let c = &mut shard.classic;
        if !c.exists(&group_id) {
            return Err(ErrorCode::GroupIdNotFound);
        }
        let subscribed = if c.has_members(&group_id) {
            let d = c.describe(&group_id);
            subscribed_topics(&d.members.iter().map(|m| m.4.clone()).collect::<Vec<_>>())
        } else {
            Vec::new()
        };
        let mut records = Vec::new();
        let topics: Vec<OffsetDeleteResponseTopic> = req
            .topics
            .iter()
            .map(|t| {
                let name = t.name.0.to_string();
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let error = if !readable.contains(&name) {
                            Some(ErrorCode::TopicAuthorizationFailed)
                        } else if subscribed.contains(&name) {
                            Some(ErrorCode::GroupSubscribedToTopic)
                        } else {
                            records.push(GroupRecord::Offset {
                                group: group_id.clone(),
                                topic: name.clone(),
                                partition: p.partition_index,
                                value: None,
                            });
                            None
                        };
                        OffsetDeleteResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(code(error))
                    })
                    .collect();
                OffsetDeleteResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(partitions)
            })
            .collect();
        let waits = if records.is_empty() {
            Ok(Vec::new())
        } else {
            let w = svc.append(broker, &records);
            if w.is_ok() {
                for r in records {
                    c.apply(now_ms(), r);
                }
            }
            w
        };
        Ok((topics, waits))
    });
    let (result, waits) = match planned.and_then(|r| r) {
        Ok(planned) => planned,
        Err(e) => return OffsetDeleteResponse::default().with_error_code(e.code()),
    };
    let durable = match waits {
        Ok(w) => wait_durable(w, Duration::from_secs(30)).await,
        Err(e) => Err(e),
    };
    match durable {
        Ok(()) => OffsetDeleteResponse::default().with_topics(result),
        Err(e) => OffsetDeleteResponse::default().with_error_code(e.code()),
    }
}

pub fn list_groups(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: ListGroupsRequest,
    version: i16,
) -> ListGroupsResponse {
    let states: Vec<String> = if version >= 4 {
        req.states_filter.iter().map(|s| s.to_lowercase()).collect()
    } else {
        Vec::new()
    };
    let types: Vec<String> = if version >= 5 {
        req.types_filter.iter().map(|s| s.to_lowercase()).collect()
    } else {
        Vec::new()
    };
    let mut consumer: Vec<(String, String, String, &'static str)> = Vec::new();
    let mut classic: Vec<(String, String, String, &'static str)> = Vec::new();
    broker.groups.for_each_shard(|shard| {
        let first = consumer.len();
        consumer.extend(shard.consumer.groups.values().map(|g| {
            (
                g.id.clone(),
                "consumer".to_string(),
                g.state_name().to_string(),
                "consumer",
            )
        }));
        let ours = &consumer[first..];
        classic.extend(
            shard
                .classic
                .list()
                .into_iter()
                .filter(|(id, _, _)| !ours.iter().any(|c| &c.0 == id))
                .map(|(id, protocol_type, state)| {
                    (id, protocol_type, state.name().to_string(), "classic")
                }),
        );
    });
    // DESCRIBE on the cluster lists every group; otherwise those the principal may DESCRIBE.
    // A filter on a listing, so denials are not audited.
    let sees_all = authorize_quiet(ctx, Operation::Describe, Resource::Cluster);
    let groups = classic
        .into_iter()
        .chain(consumer)
        .filter(|(id, _, _, _)| {
            sees_all || authorize_quiet(ctx, Operation::Describe, Resource::Group(id))
        })
        .filter(|(_, _, state, _)| states.is_empty() || states.contains(&state.to_lowercase()))
        .filter(|(_, _, _, kind)| types.is_empty() || types.iter().any(|t| t == kind))
        .map(|(id, protocol_type, state, kind)| {
            let mut g = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(id)))
                .with_protocol_type(str_bytes(protocol_type));
            if version >= 4 {
                g = g.with_group_state(str_bytes(state));
            }
            if version >= 5 {
                g = g.with_group_type(str_bytes(kind));
            }
            g
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

pub fn describe_groups(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let groups = req
        .groups
        .iter()
        .map(|id| {
            let name = id.0.to_string();
            if !authorize(ctx, Operation::Describe, Resource::Group(&name)) {
                return DescribedGroup::default()
                    .with_group_id(id.clone())
                    .with_error_code(ErrorCode::GroupAuthorizationFailed.code());
            }
            let d = match broker
                .groups
                .with(&name, |shard| shard.classic.describe(&name))
            {
                Ok(d) => d,
                Err(e) => {
                    return DescribedGroup::default()
                        .with_group_id(id.clone())
                        .with_error_code(e.code())
                }
            };
            let missing = d.state == GroupState::Dead;
            let members = d
                .members
                .into_iter()
                .map(
                    |(member_id, instance, client_id, host, metadata, assignment)| {
                        DescribedGroupMember::default()
                            .with_member_id(str_bytes(member_id))
                            .with_group_instance_id(
                                instance.filter(|_| version >= 4).map(str_bytes),
                            )
                            .with_client_id(str_bytes(client_id))
                            .with_client_host(str_bytes(host))
                            .with_member_metadata(metadata)
                            .with_member_assignment(assignment)
                    },
                )
                .collect();
            DescribedGroup::default()
                .with_group_id(id.clone())
                .with_error_code(if missing && version >= 6 {
                    ErrorCode::GroupIdNotFound.code()
                } else {
                    0
                })
                .with_error_message(
                    (missing && version >= 6)
                        .then(|| str_bytes(format!("Group {name} not found."))),
                )
                .with_group_state(str_bytes(d.state.name()))
                .with_protocol_type(str_bytes(d.protocol_type))
                .with_protocol_data(str_bytes(d.protocol))
                .with_members(members)
                .with_authorized_operations(if version >= 3 && req.include_authorized_operations {
                    authorized_operations(ctx, Resource::Group(&name), GROUP_OPERATIONS)
                } else {
                    i32::MIN
                })
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

pub async fn delete_groups(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let svc = &broker.groups;
    let mut results = Vec::new();
    let mut waits = Vec::new();
    for id in &req.groups_names {
        let name = id.0.to_string();
        let outcome = if !authorize(ctx, Operation::Delete, Resource::Group(&name)) {
            Err(ErrorCode::GroupAuthorizationFailed)
        } else {
            svc.with(&name, |shard| {
                let records = shard.classic.delete_group(&name)?;
                svc.append(broker, &records)
            })
            .and_then(|r| r)
        };
        let error = match outcome {
            Ok(w) => {
                waits.extend(w);
                None
            }
            Err(e) => Some(e),
        };
        results.push((id.clone(), error));
    }
    let durable = wait_durable(waits, Duration::from_secs(30)).await.err();
    DeleteGroupsResponse::default().with_results(
        results
            .into_iter()
            .map(|(id, e)| {
                kafka_protocol::messages::delete_groups_response::DeletableGroupResult::default()
                    .with_group_id(id)
                    .with_error_code(code(e.or(durable)))
            })
            .collect(),
    )
}

pub async fn consumer_group_heartbeat(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    client_id: &str,
    req: ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    use kafka_protocol::messages::consumer_group_heartbeat_response::{
        Assignment, TopicPartitions,
    };
    let group_id = req.group_id.0.to_string();
    let fail = |e: ErrorCode| {
        ConsumerGroupHeartbeatResponse::default()
            .with_error_code(e.code())
            .with_error_message(Some(str_bytes(e.to_string())))
            .with_member_epoch(-1)
    };
    if !authorize(ctx, Operation::Read, Resource::Group(&group_id)) {
        return fail(ErrorCode::GroupAuthorizationFailed);
    }
    // Subscribed topics need DESCRIBE (Kafka names the ones refused).
    let refused: Vec<String> = req
        .subscribed_topic_names
        .iter()
        .flatten()
        .map(|t| t.0.to_string())
        .filter(|t| !authorize(ctx, Operation::Describe, Resource::Topic(t)))
        .collect();
    if !refused.is_empty() {
        return fail(ErrorCode::TopicAuthorizationFailed).with_error_message(Some(str_bytes(
            format!(
                "The member is not authorized to access topics: {}",
                refused.join(", ")
            ),
        )));
    }
    if let Err(e) = ensure_offsets_topic(broker).await {
        return fail(e);
    }
    let topics = crate::groups::subscribable_topics(broker);
    let hb = strata_coordinator::consumer::HeartbeatRequest {
        group_id: group_id.clone(),
        member_id: req.member_id.to_string(),
        member_epoch: req.member_epoch,
        instance_id: opt_str(&req.instance_id),
        rack_id: opt_str(&req.rack_id),
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        subscribed_topic_names: req
            .subscribed_topic_names
            .as_ref()
            .map(|ts| ts.iter().map(|t| t.0.to_string()).collect()),
        server_assignor: opt_str(&req.server_assignor),
        owned: req.topic_partitions.as_ref().map(|tps| {
            tps.iter()
                .flat_map(|tp| tp.partitions.iter().map(move |p| (tp.topic_id, *p)))
                .collect()
        }),
        client_id: client_id.to_string(),
        client_host: format!("/{}", ctx.peer.ip()),
    };
    tracing::debug!(?hb, "ConsumerGroupHeartbeat");
    let answer = broker.groups.with(&group_id, |shard| {
        if shard.classic.has_members(&group_id) {
            // A classic group with live members owns this id.
            return Err(ErrorCode::GroupIdNotFound);
        }
        Ok(shard.consumer.heartbeat(now_ms(), hb, &topics))
    });
    let r = match answer.and_then(|r| r) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    tracing::debug!(?r, "ConsumerGroupHeartbeat answer");
    if let Some(e) = r.error {
        return fail(e).with_member_id(Some(str_bytes(r.member_id)));
    }
    let assignment = r.assignment.map(|parts| {
        let by_topic = by_topic(parts);
        Assignment::default().with_topic_partitions(
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    TopicPartitions::default()
                        .with_topic_id(t)
                        .with_partitions(ps)
                })
                .collect(),
        )
    });
    ConsumerGroupHeartbeatResponse::default()
        .with_member_id(Some(str_bytes(r.member_id)))
        .with_member_epoch(r.member_epoch)
        .with_heartbeat_interval_ms(r.heartbeat_interval_ms)
        .with_assignment(assignment)
}

pub fn consumer_group_describe(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    use kafka_protocol::messages::consumer_group_describe_response::{
        Assignment, DescribedGroup as CgGroup, Member, TopicPartitions,
    };
    let image = broker.image();
    let names = |parts: &std::collections::BTreeSet<(uuid::Uuid, i32)>| {
        let by_topic = by_topic(parts.iter().copied());
        Assignment::default().with_topic_partitions(
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    TopicPartitions::default()
                        .with_topic_id(t)
                        .with_topic_name(TopicName(str_bytes(
                            image
                                .topic_by_id(&t)
                                .map(|x| x.name.clone())
                                .unwrap_or_default(),
                        )))
                        .with_partitions(ps)
                })
                .collect(),
        )
    };
    let groups = req
        .group_ids
        .iter()
        .map(|id| {
            let name = id.0.to_string();
            if !authorize(ctx, Operation::Describe, Resource::Group(&name)) {
                return CgGroup::default()
                    .with_group_id(id.clone())
                    .with_error_code(ErrorCode::GroupAuthorizationFailed.code());
            }
            let described =
                broker
                    .groups
                    .with(&name, |shard| match shard.consumer.groups.get(&name) {
                        None => CgGroup::default()
                            .with_group_id(id.clone())
                            .with_error_code(ErrorCode::GroupIdNotFound.code())
                            .with_error_message(Some(str_bytes(format!(
                                "Group {name} not found."
                            )))),
                        Some(g) => CgGroup::default()
                            .with_group_id(id.clone())
                            .with_group_state(str_bytes(g.state_name()))
                            .with_group_epoch(g.group_epoch)
                            .with_assignment_epoch(g.assignment_epoch)
                            .with_assignor_name(str_bytes(g.assignor.clone()))
                            .with_authorized_operations(if req.include_authorized_operations {
                                authorized_operations(ctx, Resource::Group(&name), GROUP_OPERATIONS)
                            } else {
                                i32::MIN
                            })
                            .with_members(
                                g.members
                                    .values()
                                    .map(|m| {
                                        Member::default()
                                            .with_member_id(str_bytes(m.member_id.clone()))
                                            .with_instance_id(m.instance_id.clone().map(str_bytes))
                                            .with_rack_id(m.rack_id.clone().map(str_bytes))
                                            .with_member_epoch(m.member_epoch)
                                            .with_client_id(str_bytes(m.client_id.clone()))
                                            .with_client_host(str_bytes(m.client_host.clone()))
                                            .with_subscribed_topic_names(
                                                m.subscribed
                                                    .iter()
                                                    .map(|t| TopicName(str_bytes(t.clone())))
                                                    .collect(),
                                            )
                                            .with_assignment(names(&m.assigned))
                                            .with_target_assignment(names(
                                                &g.target
                                                    .get(&m.member_id)
                                                    .cloned()
                                                    .unwrap_or_default(),
                                            ))
                                    })
                                    .collect(),
                            ),
                    });
            described.unwrap_or_else(|e| {
                CgGroup::default()
                    .with_group_id(id.clone())
                    .with_error_code(e.code())
            })
        })
        .collect();
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}

/// Partitions named by (topic id, index), grouped per topic id in order, as KIP-848
/// assignments carry them.
fn by_topic(parts: impl IntoIterator<Item = (uuid::Uuid, i32)>) -> BTreeMap<uuid::Uuid, Vec<i32>> {
    let mut grouped: BTreeMap<uuid::Uuid, Vec<i32>> = BTreeMap::new();
    for (t, p) in parts {
        grouped.entry(t).or_default().push(p);
    }
    grouped
}
