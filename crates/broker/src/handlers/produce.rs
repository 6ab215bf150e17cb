//! Produce: validate batch headers, append, acknowledge by `acks`.
//!
//! Only batch headers are parsed (length, magic, CRC32C, counts); records are never decoded on
//! this path. acks=0 sends no response, acks=1 answers after the append, acks=all answers when
//! the high watermark has passed the batch (with `strata.fsync.before.ack`, after the fsync
//! that covers it), or with REQUEST_TIMED_OUT after the request's `timeout_ms`.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::FutureExt;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, ResponseKind};
use strata_protocol::batch::validate_batches;
use strata_protocol::ErrorCode;

use super::{str_bytes, Reply};
use crate::auth::{authorize, ConnectionContext, Operation, Resource};
use crate::broker::Broker;
use crate::partition::{now_ms, Appended, HwWait, HwWaitError};

/// A partition whose acknowledgement waits for its high watermark.
struct Waiting {
    topic_index: usize,
    partition_index: usize,
    append: HwWait,
}

/// Appends the request's batches on the blocking pool (file writes, and a segment roll's
/// fsync, never run on a runtime worker), then answers by `acks`. The connection awaits this
/// before handling its next request, so appends keep the order of arrival.
pub async fn produce(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: ProduceRequest,
    version: i16,
) -> Reply {
    let acks = req.acks;
    let timeout = Duration::from_millis(req.timeout_ms.clamp(0, 300_000) as u64);
    let metrics = broker.metrics.clone();
    let verified = verify_with_remote_coordinator(broker, &req, version).await;
    let (broker, ctx) = (broker.clone(), ctx.clone());
    let appended = tokio::task::spawn_blocking(move || {
        append_all(&broker, &ctx, req, version, verified.as_ref())
    });
    let (response, waiting) = match appended.await {
        Ok(appended) => appended,
        Err(error) => {
            tracing::error!(%error, "produce task failed");
            return Reply::now(ResponseKind::Produce(ProduceResponse::default()));
        }
    };
    if acks == 0 {
        return Reply::None;
    }
    if waiting.is_empty() {
        return Reply::now(ResponseKind::Produce(response));
    }
    Reply::Later(
        async move {
            let started = std::time::Instant::now();
            let answer = acknowledge(response, waiting, timeout).await;
            metrics
                .storage
                .durable_wait
                .observe_duration(started.elapsed());
            answer
        }
        .boxed(),
    )
}

/// Partitions' verification outcomes by (topic, partition).
type Verified = std::collections::BTreeMap<(String, i32), Result<(), ErrorCode>>;

/// When the request carries transactional batches and their transaction is coordinated by
/// another broker, asks that coordinator whether each partition is in the producer's open
/// transaction (KIP-890, as Kafka's partition leaders do); `None` when the coordinator is
/// this broker (verified locally while appending) or nothing is transactional.
async fn verify_with_remote_coordinator(
    broker: &Arc<Broker>,
    req: &ProduceRequest,
    version: i16,
) -> Option<Verified> {
    let tid = req.transactional_id.as_ref()?.0.to_string();
    let image = broker.image();
    let coordinator = crate::inter_broker::txn_coordinator(broker, &image, &tid)?;
    if coordinator == broker.node_id() {
        return None;
    }
    let mut producer = None;
    let mut partitions = Vec::new();
    for topic_data in &req.topic_data {
        let topic = if version >= 13 {
            image.topic_by_id(&topic_data.topic_id)
        } else {
            image.topic_by_name(topic_data.name.0.as_str())
        };
        let Some(topic) = topic else { continue };
        for data in &topic_data.partition_data {
            let Some(header) = data
                .records
                .as_ref()
                .and_then(|r| strata_protocol::batch::parse_header(r).ok())
            else {
                continue;
            };
            if header.is_transactional() {
                producer.get_or_insert((header.producer_id, header.producer_epoch));
                partitions.push((topic.name.clone(), data.index));
            }
        }
    }
    let (producer_id, epoch) = producer?;
    Some(
        crate::inter_broker::verify_txn_partitions(
            broker,
            &image,
            coordinator,
            &tid,
            producer_id,
            epoch,
            &partitions,
        )
        .await,
    )
}

/// Validates and appends every partition's batches; returns the response as acks=1 answers
/// it and the partitions an acks=all answer waits for. `verified` holds the outcomes of a
/// remote coordinator's verification of transactional batches.
fn append_all(
    broker: &Broker,
    ctx: &ConnectionContext,
    req: ProduceRequest,
    version: i16,
    verified: Option<&Verified>,
) -> (ProduceResponse, Vec<Waiting>) {
    let acks = req.acks;
    let transactional_id = req.transactional_id.as_ref().map(|t| t.0.to_string());
    // A transactional request needs WRITE on its transactional id: without it every
    // partition is refused (Kafka's answer), checked once per request.
    let transactional_id_denied = transactional_id
        .as_deref()
        .is_some_and(|tid| !authorize(ctx, Operation::Write, Resource::TransactionalId(tid)));
    let image = broker.image();
    let now = now_ms();
    let mut waiting = Vec::new();
    let mut responses = Vec::with_capacity(req.topic_data.len());
    for (ti, topic_data) in req.topic_data.into_iter().enumerate() {
        let topic = if version >= 13 {
            image.topic_by_id(&topic_data.topic_id)
        } else {
            image.topic_by_name(topic_data.name.0.as_str())
        };
        // WRITE on the topic, once per topic and, by name, before its existence is looked at
        // (not disclosed to a principal that may not write it). An unknown id has no name.
        let write_denied = match (version >= 13, topic) {
            (true, None) => false,
            (true, Some(t)) => !authorize(ctx, Operation::Write, Resource::Topic(&t.name)),
            (false, _) => !authorize(
                ctx,
                Operation::Write,
                Resource::Topic(topic_data.name.0.as_str()),
            ),
        };
        let mut partition_responses = Vec::with_capacity(topic_data.partition_data.len());
        for (pi, data) in topic_data.partition_data.into_iter().enumerate() {
            let base = PartitionProduceResponse::default()
                .with_index(data.index)
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1);
            // Per-record errors (produce v8+): (index in the batch, message).
            let mut record_errors: Vec<i32> = Vec::new();
            let result = (|| {
                if !matches!(acks, -1..=1) {
                    return Err((ErrorCode::InvalidRequiredAcks, None));
                }
                if transactional_id_denied {
                    return Err((ErrorCode::TransactionalIdAuthorizationFailed, None));
                }
                if write_denied {
                    return Err((ErrorCode::TopicAuthorizationFailed, None));
                }
                let topic = topic.ok_or(if version >= 13 {
                    (ErrorCode::UnknownTopicId, None)
                } else {
                    (ErrorCode::UnknownTopicOrPartition, None)
                })?;
                let partition = broker
                    .partitions
                    .lookup(topic, data.index)
                    .map_err(|code| (code, None))?;
                let records = data
                    .records
                    .as_ref()
                    .ok_or((ErrorCode::CorruptMessage, Some("no records".to_string())))?;
                let settings = partition.settings();
                if acks == -1 {
                    // As Kafka, before anything is appended: acks=all promises the write
                    // reached min.insync.replicas replicas.
                    let in_sync = partition
                        .in_sync_replica_count()
                        .ok_or((ErrorCode::NotLeaderOrFollower, None))?;
                    if in_sync < settings.min_insync_replicas {
                        return Err((
                            ErrorCode::NotEnoughReplicas,
                            Some(format!(
                                "the partition {}-{} has {in_sync} in-sync replicas, fewer than its min.insync.replicas={}",
                                topic.name, data.index, settings.min_insync_replicas
                            )),
                        ));
                    }
                }
                let headers = validate_batches(records, settings.max_message_bytes)
                    .map_err(|e| {
                        tracing::info!(peer = %ctx.peer, topic = %topic.name, partition = data.index, error = %e, "refused produce");
                        (ErrorCode::try_from_code(e.kafka_error_code()).unwrap_or(ErrorCode::CorruptMessage), Some(e.to_string()))
                    })?;
                if headers.iter().any(|h| h.is_control()) {
                    // Transaction markers are written by the coordinator only.
                    return Err((
                        ErrorCode::InvalidRecord,
                        Some("clients may not write control batches".to_string()),
                    ));
                }
                if !settings.log_append_time {
                    for h in &headers {
                        let too_old = h.base_timestamp.min(h.max_timestamp) >= 0
                            && now.saturating_sub(h.base_timestamp.min(h.max_timestamp))
                                > settings.timestamp_before_max_ms;
                        let too_new =
                            h.max_timestamp.saturating_sub(now) > settings.timestamp_after_max_ms;
                        if too_old || too_new {
                            return Err((
                                ErrorCode::InvalidTimestamp,
                                Some(format!(
                                    "timestamp {} is out of the range allowed by message.timestamp.before/after.max.ms",
                                    if too_new { h.max_timestamp } else { h.base_timestamp }
                                )),
                            ));
                        }
                    }
                }
                if settings.compact {
                    check_keys(
                        records,
                        &headers,
                        &topic.name,
                        data.index,
                        &mut record_errors,
                    )?;
                }
                if let Some(h) = headers.iter().find(|h| h.is_transactional()) {
                    // KIP-890: a transactional batch only for a partition in the producer's
                    // open transaction.
                    let tid = transactional_id.as_deref().ok_or((
                        ErrorCode::InvalidTxnState,
                        Some(
                            "a transactional batch needs the request's transactional id"
                                .to_string(),
                        ),
                    ))?;
                    let key = (topic.name.clone(), data.index);
                    match verified {
                        Some(verified) => verified
                            .get(&key)
                            .copied()
                            .unwrap_or(Err(ErrorCode::InvalidTxnState)),
                        None => broker.txns.verify(tid, h.producer_id, h.producer_epoch, &key),
                    }
                        .map_err(|code| (code, Some(format!("partition {}-{} is not part of the transaction of producer {} epoch {}", topic.name, data.index, h.producer_id, h.producer_epoch))))?;
                }
                let record_count: i64 = headers.iter().map(|h| i64::from(h.records_count)).sum();
                // The request's bytes are appended as they are (no copy) unless the topic's
                // compression.type asks for another codec.
                let recompressed = match settings.compression {
                    Some(target) if headers.iter().any(|h| h.compression() != target) => Some(
                        recompress(records, &headers, target, settings.compression_level)?,
                    ),
                    _ => None,
                };
                let bytes: &[u8] = recompressed.as_deref().unwrap_or(&records[..]);
                let info = partition.append(bytes, &headers, record_count, now)?;
                partition.metrics.bytes_in.add(bytes.len() as u64);
                partition.metrics.records_in.add(record_count as u64);
                broker.partitions.flusher.after_append(&partition);
                if acks == -1 {
                    waiting.push(Waiting {
                        topic_index: ti,
                        partition_index: pi,
                        append: HwWait::new(partition.clone(), &info),
                    });
                }
                Ok((info, partition.log_start_offset()))
            })();
            // log_start_offset exists from v5, error_message from v8.
            partition_responses.push(match result {
                Ok((info, log_start)) => base
                    .with_base_offset(info.base_offset())
                    .with_log_append_time_ms(match info {
                        Appended::New { info, .. } => info.log_append_time.unwrap_or(-1),
                        Appended::Duplicate { .. } => -1,
                    })
                    .with_log_start_offset(if version >= 5 { log_start } else { -1 }),
                Err((code, message)) => {
                    let errors = if version >= 8 {
                        record_errors
                            .iter()
                            .map(|i| {
                                BatchIndexAndErrorMessage::default()
                                    .with_batch_index(*i)
                                    .with_batch_index_error_message(message.clone().map(str_bytes))
                            })
                            .collect()
                    } else {
                        Vec::new()
                    };
                    base.with_error_code(code.code())
                        .with_error_message(message.filter(|_| version >= 8).map(str_bytes))
                        .with_record_errors(errors)
                }
            });
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic_data.name)
                .with_topic_id(topic_data.topic_id)
                .with_partition_responses(partition_responses),
        );
    }
    (
        ProduceResponse::default().with_responses(responses),
        waiting,
    )
}

/// Waits until the high watermark of every waiting partition passes its batch (acks=all),
/// or `timeout`, and marks the partitions that were not acknowledged.
async fn acknowledge(
    mut response: ProduceResponse,
    waiting: Vec<Waiting>,
    timeout: Duration,
) -> ResponseKind {
    let deadline = tokio::time::Instant::now() + timeout;
    for w in waiting {
        let code = match tokio::time::timeout_at(deadline, w.append.wait()).await {
            Ok(Ok(())) => None,
            Ok(Err(HwWaitError::Deleted)) => Some(ErrorCode::UnknownTopicOrPartition),
            // Written, but the directory failed before it was durable: never acknowledged
            // (the producer may retry once the broker is back).
            Ok(Err(HwWaitError::Offline)) => Some(ErrorCode::KafkaStorageError),
            // A new leader epoch before the HW passed the batch: a deposed leader's records
            // may be cut, so the producer retries against the current leader.
            Ok(Err(HwWaitError::EpochChanged)) => Some(ErrorCode::NotLeaderOrFollower),
            Err(_) => Some(ErrorCode::RequestTimedOut),
        };
        if let Some(code) = code {
            let p = &mut response.responses[w.topic_index].partition_responses[w.partition_index];
            p.error_code = code.code();
            p.base_offset = -1;
        }
    }
    ResponseKind::Produce(response)
}

/// A compacted topic keeps the latest value per key, so a record without a key cannot be
/// stored there: INVALID_RECORD, as Kafka answers. Records are decoded only for compacted
/// topics.
fn check_keys(
    records: &[u8],
    headers: &[strata_protocol::batch::BatchHeader],
    topic: &str,
    partition: i32,
    record_errors: &mut Vec<i32>,
) -> Result<(), (ErrorCode, Option<String>)> {
    let mut pos = 0;
    let mut first_index = 0;
    for h in headers {
        let batch = &records[pos..pos + h.total_len()];
        pos += h.total_len();
        let keyless = strata_protocol::records::keyless_records(batch)
            .map_err(|e| (ErrorCode::CorruptMessage, Some(e.to_string())))?;
        record_errors.extend(keyless.iter().map(|i| first_index + i));
        first_index += h.records_count;
    }
    if record_errors.is_empty() {
        return Ok(());
    }
    Err((
        ErrorCode::InvalidRecord,
        Some(format!(
            "Compacted topic cannot accept message without key in topic partition {topic}-{partition}."
        )),
    ))
}

/// The partition's batches with every batch in the topic's `compression.type` codec.
fn recompress(
    records: &[u8],
    headers: &[strata_protocol::batch::BatchHeader],
    target: strata_protocol::batch::Compression,
    level: Option<i32>,
) -> Result<BytesMut, (ErrorCode, Option<String>)> {
    let mut out = BytesMut::with_capacity(records.len());
    let mut pos = 0;
    for h in headers {
        let batch = &records[pos..pos + h.total_len()];
        pos += h.total_len();
        if h.compression() == target {
            out.extend_from_slice(batch);
        } else {
            let rewritten = strata_log::recompress_batch(batch, target, level)
                .map_err(|e| (ErrorCode::CorruptMessage, Some(e)))?;
            out.extend_from_slice(&rewritten);
        }
    }
    Ok(out)
}
