//! ListOffsets and DeleteRecords.

use std::sync::Arc;

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    DeleteRecordsRequest, DeleteRecordsResponse, ListOffsetsRequest, ListOffsetsResponse,
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
};
use strata_protocol::ErrorCode;

use crate::auth::{authorize, authorize_quiet, ConnectionContext, Operation, Resource};
use crate::broker::Broker;
use crate::partition::Partition;

/// Special timestamps of ListOffsets.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

/// The partition, once `op` on its topic is authorized (`None`: already authorized, e.g. by
/// CLUSTER_ACTION on the cluster).
fn lookup(
    broker: &Broker,
    ctx: &ConnectionContext,
    topic: &str,
    partition: i32,
    op: Option<Operation>,
) -> Result<Arc<Partition>, ErrorCode> {
    // Authorized before existence: an unauthorized topic's existence is not disclosed.
    if op.is_some_and(|op| !authorize(ctx, op, Resource::Topic(topic))) {
        return Err(ErrorCode::TopicAuthorizationFailed);
    }
    let image = broker.image();
    let t = image
        .topic_by_name(topic)
        .ok_or(ErrorCode::UnknownTopicOrPartition)?;
    broker.partitions.lookup(t, partition)
}

pub fn list_offsets(
    broker: &Broker,
    ctx: &ConnectionContext,
    req: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let read_committed = req.isolation_level == 1;
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let base = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_timestamp(-1)
                        .with_offset(-1)
                        .with_leader_epoch(-1);
                    let found = lookup(
                        broker,
                        ctx,
                        t.name.0.as_str(),
                        p.partition_index,
                        Some(Operation::Describe),
                    )
                    .and_then(|partition| {
                        let ours = partition.leader_epoch();
                        if p.current_leader_epoch >= 0 && p.current_leader_epoch > ours {
                            return Err(ErrorCode::UnknownLeaderEpoch);
                        }
                        if p.current_leader_epoch >= 0 && p.current_leader_epoch < ours {
                            return Err(ErrorCode::FencedLeaderEpoch);
                        }
                        let latest = if read_committed {
                            partition.last_stable_offset()
                        } else {
                            partition.high_watermark()
                        };
                        let answer = match p.timestamp {
                            LATEST => Some((latest, -1)),
                            EARLIEST | EARLIEST_LOCAL => Some((partition.log_start_offset(), -1)),
                            LATEST_TIERED => Some((partition.log_start_offset() - 1, -1)),
                            MAX_TIMESTAMP => partition.max_timestamp(),
                            ts if ts >= 0 => partition.offset_for_timestamp(ts)?,
                            _ => return Err(ErrorCode::InvalidRequest),
                        };
                        Ok((answer, ours))
                    });
                    match found {
                        // leader_epoch exists from v4.
                        Ok((Some((offset, timestamp)), epoch)) => base
                            .with_offset(offset)
                            .with_timestamp(timestamp)
                            .with_leader_epoch(if version >= 4 { epoch } else { -1 }),
                        // Nothing at or after the timestamp: offset -1 and timestamp -1.
                        Ok((None, _)) => base,
                        Err(code) => base.with_error_code(code.code()),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

pub fn delete_records(
    broker: &Broker,
    ctx: &ConnectionContext,
    req: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let base = DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index)
                        .with_low_watermark(-1);
                    let result = lookup(
                        broker,
                        ctx,
                        t.name.0.as_str(),
                        p.partition_index,
                        Some(Operation::Delete),
                    )
                    .and_then(|partition| {
                        // -1 means "up to the high watermark".
                        let offset = if p.offset == -1 {
                            partition.high_watermark()
                        } else {
                            p.offset
                        };
                        partition.delete_records_before(offset)
                    });
                    match result {
                        Ok(low) => base.with_low_watermark(low),
                        Err(code) => base.with_error_code(code.code()),
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}

/// OffsetForLeaderEpoch (KIP-101, KIP-320): for each partition, the largest epoch at or below
/// the requested one and the offset where it ends in this replica's log (the start of the
/// next epoch, or the log end for the current one). Consumers use it to detect a truncated
/// log after a leader change, followers to find where their log diverged. A
/// `current_leader_epoch` other than -1 is checked against this replica's epoch
/// (FENCED_LEADER_EPOCH if older, UNKNOWN_LEADER_EPOCH if newer).
pub fn offset_for_leader_epoch(
    broker: &Broker,
    ctx: &ConnectionContext,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    // A replica may ask with CLUSTER_ACTION on the cluster, a consumer (KIP-320) with DESCRIBE
    // on the topic.
    let replica = authorize_quiet(ctx, Operation::ClusterAction, Resource::Cluster);
    let op = (!replica).then_some(Operation::Describe);
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let answer =
                        lookup(broker, ctx, &t.topic, p.partition, op).and_then(|partition| {
                            let ours = partition.leader_epoch();
                            match p.current_leader_epoch {
                                e if e < 0 || e == ours => {}
                                e if e < ours => return Err(ErrorCode::FencedLeaderEpoch),
                                _ => return Err(ErrorCode::UnknownLeaderEpoch),
                            }
                            partition.end_offset_for_epoch(p.leader_epoch)
                        });
                    let base = EpochEndOffset::default().with_partition(p.partition);
                    match answer {
                        Ok((epoch, end_offset)) => {
                            base.with_leader_epoch(epoch).with_end_offset(end_offset)
                        }
                        Err(code) => base
                            .with_error_code(code.code())
                            .with_leader_epoch(-1)
                            .with_end_offset(-1),
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
