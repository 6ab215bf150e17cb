//! Fetch: whole batches up to the high watermark, long-polling for `min_bytes`.
//!
//! Limits: each partition gets at most its `partition_max_bytes`, the response at most
//! `max_bytes`, except that the first partition with data always gets at least one whole batch
//! even when it is larger (otherwise a consumer could never get past a large batch). A fetch
//! offset inside a batch returns that whole batch; the client skips the records before its
//! position. An offset below the log start or above the log end answers OFFSET_OUT_OF_RANGE.
//! Sessions (KIP-227) are handled by [`crate::fetch_session`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ProducerId, ResponseKind, TopicName};
use strata_protocol::ErrorCode;

use super::{str_bytes, Reply};
use crate::auth::{authorize, ConnectionContext, Operation, Resource};
use crate::broker::Broker;
use crate::fetch_session::{FetchKey, SessionAction, SessionPartition};
use crate::partition::Partition;
use strata_quorum::TopicImage;

/// Upper bound on a fetch's wait, whatever the client asks.
const MAX_WAIT_CAP: Duration = Duration::from_secs(60);
/// Upper bound on one response's size, whatever the client asks.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

pub fn fetch(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    req: FetchRequest,
    version: i16,
) -> Reply {
    let by_id = version >= 13;
    let requested: Vec<(FetchKey, SessionPartition)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| {
                (
                    FetchKey {
                        topic_id: if by_id { t.topic_id } else { uuid::Uuid::nil() },
                        topic: if by_id {
                            String::new()
                        } else {
                            t.topic.0.to_string()
                        },
                        partition: p.partition,
                    },
                    SessionPartition {
                        fetch_offset: p.fetch_offset,
                        max_bytes: p.partition_max_bytes,
                        current_leader_epoch: p.current_leader_epoch,
                        last_fetched_epoch: if version >= 12 {
                            p.last_fetched_epoch
                        } else {
                            -1
                        },
                        last_high_watermark: -1,
                        last_log_start_offset: -1,
                    },
                )
            })
        })
        .collect();
    let forgotten: Vec<FetchKey> = req
        .forgotten_topics_data
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| FetchKey {
                topic_id: if by_id { t.topic_id } else { uuid::Uuid::nil() },
                topic: if by_id {
                    String::new()
                } else {
                    t.topic.0.to_string()
                },
                partition: *p,
            })
        })
        .collect();
    // Only partitions that exist are remembered in a session; the others are answered with
    // their error in this response and forgotten.
    let image = broker.image();
    let exists: Vec<bool> = requested
        .iter()
        .map(|(key, _)| {
            let topic = if by_id {
                image.topic_by_id(&key.topic_id)
            } else {
                image.topic_by_name(&key.topic)
            };
            topic.is_some_and(|t| t.partitions.contains_key(&key.partition))
        })
        .collect();
    let known: Vec<(FetchKey, SessionPartition)> = requested
        .iter()
        .zip(&exists)
        .filter(|(_, e)| **e)
        .map(|(r, _)| r.clone())
        .collect();
    drop(image);
    let action = {
        let mut cache = broker
            .fetch_sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        cache.begin(
            ctx.connection_id,
            req.session_id,
            req.session_epoch,
            &known,
            &forgotten,
        )
    };
    let action = match action {
        Ok(a) => a,
        Err(code) => {
            return Reply::now(ResponseKind::Fetch(
                FetchResponse::default()
                    .with_error_code(code.code())
                    .with_session_id(0),
            ))
        }
    };
    let (session_id, incremental, partitions) = match action {
        SessionAction::Sessionless => (0, false, requested),
        SessionAction::Full { session_id } => (session_id, false, requested),
        SessionAction::Incremental { session_id } => {
            let mut parts = broker
                .fetch_sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .partitions(session_id);
            // Partitions named now that do not exist get their error, once.
            parts.extend(
                requested
                    .into_iter()
                    .zip(exists)
                    .filter(|(_, e)| !e)
                    .map(|(r, _)| r),
            );
            (session_id, true, parts)
        }
    };
    let broker = broker.clone();
    let ctx = ctx.clone();
    let max_wait = Duration::from_millis(req.max_wait_ms.max(0) as u64).min(MAX_WAIT_CAP);
    let min_bytes = req.min_bytes.max(0) as usize;
    let max_bytes = (req.max_bytes.max(0) as usize).min(MAX_RESPONSE_BYTES);
    let read_committed = req.isolation_level == 1;
    // A replica's fetch needs CLUSTER_ACTION on the cluster; without it every partition is
    // TOPIC_AUTHORIZATION_FAILED, as Kafka answers.
    let replica_id = if version >= 15 {
        req.replica_state.replica_id.0
    } else {
        req.replica_id.0
    };
    let replica = (replica_id >= 0).then_some(replica_id);
    let follower_denied =
        replica.is_some() && !authorize(&ctx, Operation::ClusterAction, Resource::Cluster);
    // KIP-392: a consumer's fetch (v11+) may be served by a follower, and carries its rack.
    let consumer_rack = (version >= 11 && replica.is_none()).then(|| req.rack_id.to_string());
    Reply::Later(
        async move {
            let fetcher = Fetcher {
                by_id,
                replica,
                follower_denied,
                consumer_rack: consumer_rack.as_deref(),
            };
            let resolved: Arc<Vec<Resolved>> = Arc::new(
                partitions
                    .into_iter()
                    .map(|(key, sp)| resolve(&broker, &ctx, &fetcher, key, sp))
                    .collect(),
            );
            let deadline = tokio::time::Instant::now() + max_wait;
            let results = loop {
                // Subscribe before reading, so an append between the read and the wait wakes us.
                // A follower reads up to the log end, so it waits for appends.
                let mut receivers: Vec<_> = resolved
                    .iter()
                    .filter_map(|r| {
                        r.partition.as_ref().map(|p| {
                            if replica.is_some() {
                                p.subscribe_log_end()
                            } else {
                                p.subscribe()
                            }
                        })
                    })
                    .collect();
                let (results, total, any_error) =
                    read_all_blocking(&resolved, max_bytes, read_committed).await;
                if total >= min_bytes
                    || any_error
                    || receivers.is_empty()
                    || tokio::time::Instant::now() >= deadline
                {
                    break results;
                }
                let changed = futures::future::select_all(
                    receivers.iter_mut().map(|rx| Box::pin(rx.changed())),
                );
                if tokio::time::timeout_at(deadline, changed).await.is_err() {
                    // Timed out: answer with whatever is there now.
                    let (results, _, _) =
                        read_all_blocking(&resolved, max_bytes, read_committed).await;
                    break results;
                }
            };
            let mut topics: Vec<FetchableTopicResponse> = Vec::new();
            let mut cache = broker
                .fetch_sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if session_id != 0 {
                // A session never keeps partitions that no longer exist (deleted topics).
                let gone: Vec<FetchKey> = resolved
                    .iter()
                    .filter(|r| {
                        matches!(
                            r.error,
                            Some(ErrorCode::UnknownTopicOrPartition | ErrorCode::UnknownTopicId)
                        )
                    })
                    .map(|r| r.key.clone())
                    .collect();
                cache.forget(session_id, &gone);
            }
            for (r, data) in resolved.iter().zip(results) {
                let newsworthy = !incremental
                    || data.error_code != 0
                    || data.records.as_ref().is_some_and(|b| !b.is_empty())
                    || data.high_watermark != r.session.last_high_watermark
                    || data.log_start_offset != r.session.last_log_start_offset;
                if session_id != 0 {
                    cache.record_sent(
                        session_id,
                        &r.key,
                        data.high_watermark,
                        data.log_start_offset,
                    );
                }
                if !newsworthy {
                    continue;
                }
                let data = if read_committed && data.aborted_transactions.is_none() {
                    data.with_aborted_transactions(Some(vec![]))
                } else {
                    data
                };
                // log_start_offset exists from v5.
                let data = if version < 5 {
                    data.with_log_start_offset(-1)
                } else {
                    data
                };
                let same_topic = topics.last().is_some_and(|t| {
                    t.topic_id == r.key.topic_id && t.topic.0.as_str() == r.key.topic
                });
                if !same_topic {
                    topics.push(
                        FetchableTopicResponse::default()
                            .with_topic(TopicName(str_bytes(r.key.topic.clone())))
                            .with_topic_id(r.key.topic_id),
                    );
                }
                topics
                    .last_mut()
                    .expect("pushed above")
                    .partitions
                    .push(data);
            }
            drop(cache);
            ResponseKind::Fetch(
                FetchResponse::default()
                    .with_session_id(session_id)
                    .with_responses(topics),
            )
        }
        .boxed(),
    )
}

/// A requested partition, looked up once per request.
struct Resolved {
    key: FetchKey,
    session: SessionPartition,
    partition: Option<Arc<Partition>>,
    error: Option<ErrorCode>,
    /// A follower's fetch: read up to the log end.
    replica: bool,
    /// The follower's log diverged from this leader's: (epoch, end offset) to cut to, and
    /// no records.
    diverging: Option<(i32, i64)>,
    /// KIP-392: the consumer should fetch from this replica in its rack instead; no records.
    preferred: Option<i32>,
}

/// KIP-392, on the leader of `topic`'s partition `index`, for a consumer in `rack`: with
/// `replica.selector.class` set to the rack-aware selector, an in-sync replica of another
/// broker in the consumer's rack (the first in replica order), unless this broker is in it.
fn preferred_read_replica(
    broker: &Broker,
    topic: &TopicImage,
    index: i32,
    rack: &str,
) -> Option<i32> {
    if rack.is_empty()
        || broker
            .config
            .set
            .get("replica.selector.class")
            .map(|s| s.trim())
            != Some(crate::config::RACK_AWARE_SELECTOR)
    {
        return None;
    }
    let own_rack = broker.config.set.get("broker.rack").map(|r| r.trim());
    if own_rack == Some(rack) {
        return None;
    }
    let image = broker.image();
    let partition = topic.partitions.get(&index)?;
    partition.replicas.iter().copied().find(|r| {
        *r != broker.node_id()
            && partition.isr.contains(r)
            && image
                .broker(*r)
                .is_some_and(|b| !b.fenced && b.rack.as_deref() == Some(rack))
    })
}

/// Who fetches, the same for every partition of one request.
struct Fetcher<'a> {
    /// Partitions named by topic id (v13+).
    by_id: bool,
    /// A follower's replica id.
    replica: Option<i32>,
    /// A follower without CLUSTER_ACTION.
    follower_denied: bool,
    /// A consumer's rack (v11+, possibly empty): it may read from followers.
    consumer_rack: Option<&'a str>,
}

fn resolve(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    fetcher: &Fetcher,
    key: FetchKey,
    session: SessionPartition,
) -> Resolved {
    let Fetcher {
        by_id,
        replica,
        follower_denied,
        consumer_rack,
    } = *fetcher;
    let image = broker.image();
    let topic = if by_id {
        image.topic_by_id(&key.topic_id)
    } else {
        image.topic_by_name(&key.topic)
    };
    // By name, READ is checked before existence, so an unauthorized topic's existence is not
    // disclosed; topic ids are not secret (Kafka answers UNKNOWN_TOPIC_ID first).
    let lookup = match topic {
        _ if follower_denied => Err(ErrorCode::TopicAuthorizationFailed),
        None if by_id => Err(ErrorCode::UnknownTopicId),
        None if !authorize(ctx, Operation::Read, Resource::Topic(&key.topic)) => {
            Err(ErrorCode::TopicAuthorizationFailed)
        }
        None => Err(ErrorCode::UnknownTopicOrPartition),
        // A follower's fetch was authorized as CLUSTER_ACTION above.
        Some(t) if replica.is_some() => broker.partitions.lookup(t, key.partition),
        Some(t) if !authorize(ctx, Operation::Read, Resource::Topic(&t.name)) => {
            Err(ErrorCode::TopicAuthorizationFailed)
        }
        // A consumer that knows follower fetching (v11+) may read from any replica here, up
        // to that replica's high watermark.
        Some(t) if consumer_rack.is_some() => broker.partitions.lookup_replica(t, key.partition),
        Some(t) => broker.partitions.lookup(t, key.partition),
    };
    let preferred = match (&lookup, topic, consumer_rack) {
        (Ok(p), Some(t), Some(rack)) if p.is_leader() => {
            preferred_read_replica(broker, t, key.partition, rack)
        }
        _ => None,
    };
    let lookup = lookup.and_then(|p| {
        let ours = p.leader_epoch();
        match session.current_leader_epoch {
            e if e < 0 || e == ours => Ok(p),
            e if e > ours => Err(ErrorCode::UnknownLeaderEpoch),
            _ => Err(ErrorCode::FencedLeaderEpoch),
        }
    });
    match lookup {
        Ok(p) => {
            let mut diverging = None;
            if let Some(id) = replica {
                diverging = p.divergence(session.last_fetched_epoch, session.fetch_offset);
                if diverging.is_none() && session.fetch_offset <= p.log_end_offset() {
                    // Everything below the fetch offset is on the follower (durably, with
                    // fsync before ack): the HW may move.
                    if let Some(proposal) = p.on_follower_fetch(id, session.fetch_offset) {
                        crate::isr::send(broker, proposal);
                    }
                }
            }
            Resolved {
                key,
                session,
                partition: Some(p),
                error: None,
                replica: replica.is_some(),
                diverging,
                preferred,
            }
        }
        Err(e) => Resolved {
            key,
            session,
            partition: None,
            error: Some(e),
            replica: replica.is_some(),
            diverging: None,
            preferred: None,
        },
    }
}

/// [`read_all`] on the blocking pool: log reads never run on a runtime worker.
async fn read_all_blocking(
    resolved: &Arc<Vec<Resolved>>,
    max_bytes: usize,
    read_committed: bool,
) -> (Vec<PartitionData>, usize, bool) {
    let task = resolved.clone();
    // A request-time quota counts the reads (not the long-poll waits) as the fetch's time.
    let started = crate::quota::request_time::is_measured().then(std::time::Instant::now);
    let read =
        tokio::task::spawn_blocking(move || read_all(&task, max_bytes, read_committed)).await;
    if let Some(started) = started {
        crate::quota::request_time::add_blocking(started.elapsed());
    }
    match read {
        Ok(read) => read,
        Err(error) => {
            tracing::error!(%error, "fetch read task failed");
            let failed = resolved
                .iter()
                .map(|r| {
                    PartitionData::default()
                        .with_partition_index(r.key.partition)
                        .with_error_code(ErrorCode::UnknownServerError.code())
                })
                .collect();
            (failed, 0, true)
        }
    }
}

/// Reads every partition once. Returns the per-partition data, the total record bytes and
/// whether any partition has an error.
fn read_all(
    resolved: &[Resolved],
    max_bytes: usize,
    read_committed: bool,
) -> (Vec<PartitionData>, usize, bool) {
    let mut total = 0usize;
    let mut any_error = false;
    let mut out = Vec::with_capacity(resolved.len());
    for r in resolved {
        let base = PartitionData::default()
            .with_partition_index(r.key.partition)
            .with_high_watermark(-1)
            .with_last_stable_offset(-1)
            .with_log_start_offset(-1)
            .with_preferred_read_replica(kafka_protocol::messages::BrokerId(-1));
        let Some(partition) = &r.partition else {
            any_error = true;
            out.push(base.with_error_code(r.error.map_or(0, |e| e.code())));
            continue;
        };
        if let Some((epoch, end_offset)) = r.diverging {
            out.push(
                base.with_high_watermark(partition.high_watermark())
                    .with_log_start_offset(partition.log_start_offset())
                    .with_diverging_epoch(
                        kafka_protocol::messages::fetch_response::EpochEndOffset::default()
                            .with_epoch(epoch)
                            .with_end_offset(end_offset),
                    ),
            );
            // An answer to send at once: the follower must cut its log first.
            any_error = true;
            continue;
        }
        if let Some(node) = r.preferred {
            // KIP-392: no records; the consumer fetches from `node` from now on.
            out.push(
                base.with_high_watermark(partition.high_watermark())
                    .with_last_stable_offset(partition.last_stable_offset())
                    .with_log_start_offset(partition.log_start_offset())
                    .with_preferred_read_replica(kafka_protocol::messages::BrokerId(node)),
            );
            any_error = true;
            continue;
        }
        let remaining = max_bytes.saturating_sub(total);
        let limit = (r.session.max_bytes.max(0) as usize).min(remaining);
        // Once the response is full, later partitions get no records but still report their
        // offsets; the first partition with data always gets at least one batch.
        let result = if limit == 0 && total > 0 {
            partition.offsets_at(r.session.fetch_offset)
        } else if r.replica {
            partition.read_for_replica(r.session.fetch_offset, limit.max(1))
        } else {
            partition.read_isolated(r.session.fetch_offset, limit.max(1), read_committed)
        };
        match result {
            Ok(mut res) => {
                // Only the first partition with data may exceed the limits (with one whole
                // batch); later ones stop where the budget ends, or the response would grow
                // past what the client accepts.
                if total > 0 && res.records.len() > limit {
                    res.records = Bytes::new();
                }
                total += res.records.len();
                if !res.records.is_empty() && !r.replica {
                    partition.metrics.bytes_out.add(res.records.len() as u64);
                    partition
                        .metrics
                        .records_out
                        .add(crate::metrics::records_in_batches(&res.records));
                }
                let aborted = (read_committed && !res.records.is_empty()).then(|| {
                    res.aborted
                        .iter()
                        .map(|t| {
                            AbortedTransaction::default()
                                .with_producer_id(ProducerId(t.producer_id))
                                .with_first_offset(t.first_offset)
                        })
                        .collect()
                });
                out.push(
                    base.with_high_watermark(res.high_watermark)
                        .with_last_stable_offset(res.last_stable_offset)
                        .with_log_start_offset(res.log_start_offset)
                        .with_aborted_transactions(aborted)
                        .with_records(Some(res.records)),
                );
            }
            Err(code) => {
                any_error = true;
                out.push(
                    base.with_error_code(code.code())
                        .with_high_watermark(partition.high_watermark())
                        .with_last_stable_offset(partition.last_stable_offset())
                        .with_log_start_offset(partition.log_start_offset()),
                );
            }
        }
    }
    (out, total, any_error)
}
