//! ListOffsets and DeleteRecords.

use std::sync::Arc;

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{
    DeleteRecordsRequest, DeleteRecordsResponse, ListOffsetsRequest, ListOffsetsResponse,
};
use strata_protocol::ErrorCode;

use crate::auth::{authorize, ConnectionContext, Operation, Resource};
use crate::broker::Broker;
use crate::partition::Partition;

/// Special timestamps of ListOffsets.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

fn lookup(
    broker: &Broker,
    ctx: &ConnectionContext,
    topic: &str,
    partition: i32,
    op: Operation,
) -> Result<Arc<Partition>, ErrorCode> {
    let image = broker.image();
    let t = image
        .topic_by_name(topic)
        .ok_or(ErrorCode::UnknownTopicOrPartition)?;
    if !authorize(ctx, op, Resource::Topic(topic)) {
        return Err(ErrorCode::TopicAuthorizationFailed);
    }
    broker.partitions.lookup(&t.topic_id, partition)
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
                        Operation::Describe,
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
                        Operation::Delete,
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
