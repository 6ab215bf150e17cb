//! Transaction APIs: InitProducerId with a transactional id, AddPartitionsToTxn,
//! AddOffsetsToTxn, TxnOffsetCommit, EndTxn, DescribeTransactions, ListTransactions (the
//! coordinator is `crate::txn`, its state machine `strata_coordinator::txn`).

use std::sync::Arc;

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedState;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::*;
use strata_coordinator::txn::{EndPlan, InitPlan};
use strata_coordinator::{CommittedOffset, GroupRecord};
use strata_protocol::ErrorCode;

use super::str_bytes;
use crate::auth::{authorize, authorize_quiet, ConnectionContext, Operation, Resource};
use crate::broker::Broker;
use crate::groups::{wait_durable, OFFSETS_TOPIC};
use crate::partition::now_ms;
use crate::txn::TXN_TOPIC;

const WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// InitProducerId for a transactional producer: a new id, or the next epoch of its id
/// (aborting a transaction the previous instance left open first).
pub async fn init_transactional(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    transactional_id: &str,
    req: &InitProducerIdRequest,
) -> Result<(i64, i16), ErrorCode> {
    if !authorize(
        ctx,
        Operation::Write,
        Resource::TransactionalId(transactional_id),
    ) {
        return Err(ErrorCode::TransactionalIdAuthorizationFailed);
    }
    let svc = &broker.txns;
    super::groups::ensure_internal_topic(broker, TXN_TOPIC, svc.state_partitions).await?;
    let expected = (req.producer_id.0 >= 0 && req.producer_epoch >= 0)
        .then_some((req.producer_id.0, req.producer_epoch));
    // At most: abort the open transaction, then initialise.
    for _ in 0..2 {
        let fresh = broker
            .allocate_producer_id()
            .await
            .map_err(|_| ErrorCode::UnknownServerError)?;
        let (plan, waits) = svc.update(broker, transactional_id, |s| {
            let plan = s.coordinator.init_producer_id(
                transactional_id,
                req.transaction_timeout_ms,
                expected,
                fresh,
                now_ms(),
            )?;
            let record = match &plan {
                InitPlan::Ready(m) => m.clone(),
                InitPlan::AbortFirst(m, _) => {
                    // This request writes the markers of the transaction it aborts.
                    s.claim(transactional_id);
                    m.clone()
                }
            };
            Ok((plan, vec![record]))
        })?;
        let durable = wait_durable(waits, WAIT).await;
        match plan {
            InitPlan::Ready(m) => {
                durable?;
                return Ok((m.producer_id, m.producer_epoch));
            }
            InitPlan::AbortFirst(m, markers) => {
                if let Err(code) = durable {
                    svc.release(transactional_id);
                    return Err(code);
                }
                tracing::info!(
                    transactional_id,
                    producer_id = m.producer_id,
                    epoch = m.producer_epoch,
                    "fencing the previous producer: aborting its open transaction"
                );
                svc.finish(broker, &markers).await?;
            }
        }
    }
    Err(ErrorCode::ConcurrentTransactions)
}

fn code(r: Result<(), ErrorCode>) -> i16 {
    r.err().map_or(0, |e| e.code())
}

pub async fn add_partitions_to_txn(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: AddPartitionsToTxnRequest,
    version: i16,
) -> AddPartitionsToTxnResponse {
    if version >= 4 {
        // The batched form is what brokers send each other; one node never needs it, but
        // answer it properly: each transaction is handled like a v3 request. Being a
        // broker's request, it needs CLUSTER_ACTION on the cluster (Kafka's check).
        if !authorize(ctx, Operation::ClusterAction, Resource::Cluster) {
            return AddPartitionsToTxnResponse::default()
                .with_error_code(ErrorCode::ClusterAuthorizationFailed.code());
        }
        let mut results = Vec::new();
        for t in req.transactions {
            let topics = add_one(
                broker,
                ctx,
                t.transactional_id.0.as_str(),
                t.producer_id.0,
                t.producer_epoch,
                t.topics,
                t.verify_only,
            )
            .await;
            results.push(
                AddPartitionsToTxnResult::default()
                    .with_transactional_id(t.transactional_id)
                    .with_topic_results(topics),
            );
        }
        return AddPartitionsToTxnResponse::default().with_results_by_transaction(results);
    }
    let topics = add_one(
        broker,
        ctx,
        req.v3_and_below_transactional_id.0.as_str(),
        req.v3_and_below_producer_id.0,
        req.v3_and_below_producer_epoch,
        req.v3_and_below_topics,
        false,
    )
    .await;
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(topics)
}

async fn add_one(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    transactional_id: &str,
    producer_id: i64,
    epoch: i16,
    topics: Vec<add_partitions_to_txn_request::AddPartitionsToTxnTopic>,
    verify_only: bool,
) -> Vec<AddPartitionsToTxnTopicResult> {
    let image = broker.image();
    // Without WRITE on the transactional id every partition is answered so, before the
    // topics are looked at (Kafka's order).
    let tid_authorized = authorize(
        ctx,
        Operation::Write,
        Resource::TransactionalId(transactional_id),
    );
    // Kafka adds all partitions or none: any bad partition fails the request, the others
    // get OPERATION_NOT_ATTEMPTED.
    let mut wanted = Vec::new();
    let mut bad: Vec<(String, i32, ErrorCode)> = Vec::new();
    for t in &topics {
        let name = t.name.0.to_string();
        for p in &t.partitions {
            let problem = if !tid_authorized {
                Some(ErrorCode::TransactionalIdAuthorizationFailed)
            } else if !authorize(ctx, Operation::Write, Resource::Topic(&name)) {
                Some(ErrorCode::TopicAuthorizationFailed)
            } else if image
                .topic_by_name(&name)
                .is_none_or(|topic| !topic.partitions.contains_key(p))
            {
                Some(ErrorCode::UnknownTopicOrPartition)
            } else {
                None
            };
            match problem {
                Some(e) => bad.push((name.clone(), *p, e)),
                None => wanted.push((name.clone(), *p)),
            }
        }
    }
    let overall: Result<(), ErrorCode> = if !tid_authorized {
        Err(ErrorCode::TransactionalIdAuthorizationFailed)
    } else if !bad.is_empty() {
        Err(ErrorCode::OperationNotAttempted)
    } else if verify_only {
        wanted
            .iter()
            .try_for_each(|tp| broker.txns.verify(transactional_id, producer_id, epoch, tp))
    } else {
        add_to_txn(broker, transactional_id, producer_id, epoch, &wanted).await
    };
    topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let results = t
                .partitions
                .iter()
                .map(|p| {
                    let e = bad
                        .iter()
                        .find(|(n, i, _)| *n == name && i == p)
                        .map(|(_, _, e)| *e);
                    let c = match e {
                        Some(e) => e.code(),
                        None => code(overall),
                    };
                    AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(*p)
                        .with_partition_error_code(c)
                })
                .collect();
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name)
                .with_results_by_partition(results)
        })
        .collect()
}

/// Adds partitions to the producer's transaction and waits until the change is durable.
async fn add_to_txn(
    broker: &Arc<Broker>,
    transactional_id: &str,
    producer_id: i64,
    epoch: i16,
    partitions: &[(String, i32)],
) -> Result<(), ErrorCode> {
    let svc = &broker.txns;
    super::groups::ensure_internal_topic(broker, TXN_TOPIC, svc.state_partitions).await?;
    let ((), waits) = svc.update(broker, transactional_id, |s| {
        let change = s.coordinator.add_partitions(
            transactional_id,
            producer_id,
            epoch,
            partitions,
            now_ms(),
        )?;
        Ok(((), change.into_iter().collect()))
    })?;
    wait_durable(waits, WAIT).await
}

pub async fn add_offsets_to_txn(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: AddOffsetsToTxnRequest,
) -> AddOffsetsToTxnResponse {
    let result = async {
        let tid = req.transactional_id.0.as_str();
        let group = req.group_id.0.as_str();
        if !authorize(ctx, Operation::Write, Resource::TransactionalId(tid)) {
            return Err(ErrorCode::TransactionalIdAuthorizationFailed);
        }
        if !authorize(ctx, Operation::Read, Resource::Group(group)) {
            return Err(ErrorCode::GroupAuthorizationFailed);
        }
        super::groups::ensure_offsets_topic(broker).await?;
        let partition = broker.groups.partition_for(group);
        add_to_txn(
            broker,
            tid,
            req.producer_id.0,
            req.producer_epoch,
            &[(OFFSETS_TOPIC.to_string(), partition)],
        )
        .await
    }
    .await;
    AddOffsetsToTxnResponse::default().with_error_code(code(result))
}

pub async fn txn_offset_commit(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let tid = req.transactional_id.0.to_string();
    let group = req.group_id.0.to_string();
    let producer_id = req.producer_id.0;
    let epoch = req.producer_epoch;
    let partition = broker.groups.partition_for(&group);
    let check = if !authorize(ctx, Operation::Write, Resource::TransactionalId(&tid)) {
        Err(ErrorCode::TransactionalIdAuthorizationFailed)
    } else if !authorize(ctx, Operation::Read, Resource::Group(&group)) {
        Err(ErrorCode::GroupAuthorizationFailed)
    } else {
        // The group's offsets partition must have been added (AddOffsetsToTxn), at the
        // transaction's coordinator (asked when it is another broker).
        let key = (OFFSETS_TOPIC.to_string(), partition);
        let keys = std::slice::from_ref(&key);
        crate::inter_broker::verify_txn(broker, &broker.image(), &tid, producer_id, epoch, keys)
            .await
            .remove(&key)
            .unwrap_or(Err(ErrorCode::InvalidTxnState))
    };
    let now = now_ms();
    let image = broker.image();
    let mut records = Vec::new();
    let mut per_partition: Vec<(usize, i32, Option<ErrorCode>)> = Vec::new();
    for (ti, t) in req.topics.iter().enumerate() {
        let topic = t.name.0.to_string();
        let authorized = authorize(ctx, Operation::Read, Resource::Topic(&topic));
        for p in &t.partitions {
            let error = if let Err(e) = check {
                Some(e)
            } else if !authorized {
                Some(ErrorCode::TopicAuthorizationFailed)
            } else {
                records.push(GroupRecord::Offset {
                    group: group.clone(),
                    topic: topic.clone(),
                    partition: p.partition_index,
                    value: Some(CommittedOffset {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p
                            .committed_metadata
                            .as_ref()
                            .map(|m| m.to_string())
                            .unwrap_or_default(),
                        commit_ms: now,
                        end_offset: broker.end_offset_of(&image, &topic, p.partition_index),
                    }),
                });
                None
            };
            per_partition.push((ti, p.partition_index, error));
        }
    }
    let written = if records.is_empty() {
        Ok(())
    } else {
        match broker
            .groups
            .append_txn(broker, &group, records, producer_id, epoch)
        {
            Ok(waits) => wait_durable(waits, WAIT).await,
            Err(e) => Err(e),
        }
    };
    let topics = req
        .topics
        .iter()
        .enumerate()
        .map(|(ti, t)| {
            let partitions = per_partition
                .iter()
                .filter(|(i, _, _)| *i == ti)
                .map(|(_, p, e)| {
                    let e = e.or(written.err());
                    TxnOffsetCommitResponsePartition::default()
                        .with_partition_index(*p)
                        .with_error_code(e.map_or(0, |e| e.code()))
                })
                .collect();
            TxnOffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}

pub async fn end_txn(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: EndTxnRequest,
    version: i16,
) -> EndTxnResponse {
    let tid = req.transactional_id.0.to_string();
    let result = async {
        if !authorize(ctx, Operation::Write, Resource::TransactionalId(&tid)) {
            return Err(ErrorCode::TransactionalIdAuthorizationFailed);
        }
        let svc = &broker.txns;
        super::groups::ensure_internal_topic(broker, TXN_TOPIC, svc.state_partitions).await?;
        let (plan, waits) = svc.update(broker, &tid, |s| {
            let plan = s.coordinator.end_txn(
                &tid,
                req.producer_id.0,
                req.producer_epoch,
                req.committed,
                now_ms(),
            )?;
            match &plan {
                EndPlan::AlreadyDone => Ok((plan, Vec::new())),
                EndPlan::Markers(m, _) => {
                    // Prepare*: this request writes the markers; the same id's other
                    // requests get CONCURRENT_TRANSACTIONS until it is complete, other ids
                    // are not held up.
                    s.claim(&tid);
                    let m = m.clone();
                    Ok((plan, vec![m]))
                }
            }
        })?;
        match plan {
            EndPlan::AlreadyDone => wait_durable(waits, WAIT).await,
            EndPlan::Markers(_, markers) => {
                if let Err(code) = wait_durable(waits, WAIT).await {
                    svc.release(&tid);
                    return Err(code);
                }
                svc.finish(broker, &markers).await
            }
        }
    }
    .await;
    // Versions before KIP-588 get INVALID_PRODUCER_EPOCH instead of PRODUCER_FENCED
    // (strata_protocol::versioned, applied to every answer).
    EndTxnResponse::default()
        .with_error_code(code(result))
        .with_producer_id(ProducerId(if version >= 5 {
            req.producer_id.0
        } else {
            -1
        }))
        .with_producer_epoch(if version >= 5 { req.producer_epoch } else { -1 })
}

pub fn describe_transactions(
    broker: &Broker,
    ctx: &ConnectionContext,
    req: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let states = req
        .transactional_ids
        .into_iter()
        .map(|id| {
            let base = TransactionState::default()
                .with_transactional_id(id.clone())
                .with_transaction_state(str_bytes(""))
                .with_transaction_start_time_ms(-1)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1);
            if !authorize(ctx, Operation::Describe, Resource::TransactionalId(&id.0)) {
                return base.with_error_code(ErrorCode::TransactionalIdAuthorizationFailed.code());
            }
            let m = match broker.txns.get(&id.0) {
                Ok(Some(m)) => m,
                Ok(None) => return base.with_error_code(ErrorCode::TransactionalIdNotFound.code()),
                Err(code) => return base.with_error_code(code.code()),
            };
            let mut topics: Vec<TopicData> = Vec::new();
            // Only the partitions of topics the principal may DESCRIBE (a filter, as Kafka's).
            let partitions = m.partitions.iter().filter(|(topic, _)| {
                authorize_quiet(ctx, Operation::Describe, Resource::Topic(topic))
            });
            for (topic, p) in partitions {
                match topics.iter_mut().find(|t| t.topic.0.as_str() == topic) {
                    Some(t) => t.partitions.push(*p),
                    None => topics.push(
                        TopicData::default()
                            .with_topic(TopicName(str_bytes(topic.clone())))
                            .with_partitions(vec![*p]),
                    ),
                }
            }
            base.with_transaction_state(str_bytes(m.state.name()))
                .with_transaction_timeout_ms(m.timeout_ms)
                .with_transaction_start_time_ms(m.start_ms)
                .with_producer_id(ProducerId(m.producer_id))
                .with_producer_epoch(m.producer_epoch)
                .with_topics(topics)
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

pub fn list_transactions(
    broker: &Broker,
    ctx: &ConnectionContext,
    req: ListTransactionsRequest,
) -> ListTransactionsResponse {
    const STATES: [&str; 6] = [
        "Empty",
        "Ongoing",
        "PrepareCommit",
        "PrepareAbort",
        "CompleteCommit",
        "CompleteAbort",
    ];
    let unknown: Vec<_> = req
        .state_filters
        .iter()
        .filter(|s| !STATES.contains(&s.as_str()))
        .cloned()
        .collect();
    let now = now_ms();
    let mut states: Vec<ListedState> = broker
        .txns
        .all()
        .into_iter()
        .filter(|m| {
            (req.state_filters.is_empty()
                || req
                    .state_filters
                    .iter()
                    .any(|s| s.as_str() == m.state.name()))
                && (req.producer_id_filters.is_empty()
                    || req.producer_id_filters.contains(&ProducerId(m.producer_id)))
                && (req.duration_filter < 0
                    || (m.start_ms >= 0 && now - m.start_ms >= req.duration_filter))
                // A listing: ids the principal may not DESCRIBE are left out, not audited.
                && authorize_quiet(
                    ctx,
                    Operation::Describe,
                    Resource::TransactionalId(&m.transactional_id),
                )
        })
        .map(|m| {
            ListedState::default()
                .with_transactional_id(TransactionalId(str_bytes(m.transactional_id.clone())))
                .with_producer_id(ProducerId(m.producer_id))
                .with_transaction_state(str_bytes(m.state.name()))
        })
        .collect();
    states.sort_by(|a, b| a.transactional_id.0.cmp(&b.transactional_id.0));
    ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown)
        .with_transaction_states(states)
}

/// DescribeProducers (KIP-664): the producer state of each requested partition.
pub fn describe_producers(
    broker: &Broker,
    ctx: &ConnectionContext,
    req: DescribeProducersRequest,
) -> DescribeProducersResponse {
    use kafka_protocol::messages::describe_producers_response::{
        PartitionResponse, ProducerState, TopicResponse,
    };
    let image = broker.image();
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let topic = image.topic_by_name(&name);
            let partitions = t
                .partition_indexes
                .iter()
                .map(|index| {
                    let base = PartitionResponse::default().with_partition_index(*index);
                    if !authorize(ctx, Operation::Read, Resource::Topic(&name)) {
                        return base.with_error_code(ErrorCode::TopicAuthorizationFailed.code());
                    }
                    let Some(partition) =
                        topic.and_then(|t| broker.partitions.get(&t.topic_id, *index))
                    else {
                        return base.with_error_code(ErrorCode::UnknownTopicOrPartition.code());
                    };
                    let mut producers: Vec<ProducerState> = partition
                        .producer_entries()
                        .into_iter()
                        .map(|e| {
                            ProducerState::default()
                                .with_producer_id(ProducerId(e.producer_id))
                                .with_producer_epoch(i32::from(e.epoch))
                                .with_last_sequence(e.batches.back().map_or(-1, |b| b.last_seq))
                                .with_last_timestamp(e.last_timestamp)
                                .with_coordinator_epoch(e.coordinator_epoch)
                                .with_current_txn_start_offset(
                                    e.current_txn_first_offset.unwrap_or(-1),
                                )
                        })
                        .collect();
                    producers.sort_by_key(|p| p.producer_id.0);
                    base.with_active_producers(producers)
                })
                .collect();
            TopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}

/// WriteTxnMarkers, sent by a transaction coordinator to the leader of each partition of a
/// transaction it ends (CLUSTER_ACTION on the cluster, as in Kafka): each marker is appended
/// to the partitions this broker leads and answered once durable. A partition held elsewhere
/// answers NOT_LEADER_OR_FOLLOWER, and the coordinator tries again.
pub async fn write_txn_markers(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: WriteTxnMarkersRequest,
) -> WriteTxnMarkersResponse {
    use kafka_protocol::messages::write_txn_markers_response::{
        WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
    };
    let allowed = authorize(ctx, Operation::ClusterAction, Resource::Cluster);
    let image = broker.image();
    let mut waits = Vec::new();
    let mut results: Vec<WritableTxnMarkerResult> = req
        .markers
        .iter()
        .map(|m| {
            let marker = crate::txn::MarkerWrite {
                producer_id: m.producer_id.0,
                epoch: m.producer_epoch,
                commit: m.transaction_result,
                coordinator_epoch: m.coordinator_epoch,
            };
            let topics = m
                .topics
                .iter()
                .map(|t| {
                    let partitions = t
                        .partition_indexes
                        .iter()
                        .map(|&p| {
                            let code = if !allowed {
                                ErrorCode::ClusterAuthorizationFailed.code()
                            } else {
                                match crate::txn::write_marker_here(
                                    broker, &image, &t.name.0, p, &marker,
                                ) {
                                    Ok(Some(wait)) => {
                                        waits.push(wait);
                                        0
                                    }
                                    Ok(None) => 0,
                                    Err(code) => code.code(),
                                }
                            };
                            WritableTxnMarkerPartitionResult::default()
                                .with_partition_index(p)
                                .with_error_code(code)
                        })
                        .collect();
                    WritableTxnMarkerTopicResult::default()
                        .with_name(t.name.clone())
                        .with_partitions(partitions)
                })
                .collect();
            WritableTxnMarkerResult::default()
                .with_producer_id(m.producer_id)
                .with_topics(topics)
        })
        .collect();
    let settled = broker
        .groups
        .wait_and_settle(waits, std::time::Duration::from_secs(30))
        .await;
    if let Err(code) = settled {
        for p in results
            .iter_mut()
            .flat_map(|r| r.topics.iter_mut())
            .flat_map(|t| t.partitions.iter_mut())
            .filter(|p| p.error_code == 0)
        {
            p.error_code = code.code();
        }
    }
    WriteTxnMarkersResponse::default().with_markers(results)
}
