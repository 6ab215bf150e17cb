//! The edge around the transaction coordinator state machine (`strata_coordinator::txn`):
//! the `__transaction_state` topic, transaction markers, and the clock.
//!
//! The coordinator is sharded as Kafka's is: one [`TxnShard`] per `__transaction_state`
//! partition (a transactional id belongs to the partition its Java hash picks), each behind
//! its own lock and built from that partition's records only. [`TxnService::load_partition`]
//! and [`TxnService::unload_partition`] are what a node calls when it becomes or stops being
//! the leader of a partition; on one node every partition is loaded at start-up or when the
//! topic is created. A shard that is not loaded answers NOT_COORDINATOR.
//!
//! A shard's lock is held only for in-memory transitions and the (non-blocking) append of
//! the records they produce, so the log order of one id's records is the order of its
//! changes; the wait for those records to be durable happens after the lock is released.
//! Every change is durable before the coordinator acts on it or answers. Ending a
//! transaction moves it to Prepare* (claimed by the ending task, so nobody else writes its
//! markers; other operations on that id get CONCURRENT_TRANSACTIONS meanwhile), writes a
//! commit or abort marker to each of its partitions, waits until they are durable, then
//! records the transaction complete. So one slow transaction never holds up another, even
//! in the same shard. Markers on `__consumer_offsets` also settle the offsets the
//! transaction committed (TxnOffsetCommit), once durable.
//!
//! A ticker finishes Prepare* transactions nobody is completing (left by a restart or a
//! failed attempt; their markers are written again, harmlessly), aborts transactions past
//! their `transaction.timeout.ms` (with a bumped epoch, fencing the producer) and expires
//! idle transactional ids.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strata_coordinator::txn::{encode_record, MarkerPlan, TxnConfig, TxnMetadata, TxnShard};
use strata_log::Marker;
use strata_protocol::records::{BatchProducer, PlainRecord};
use strata_protocol::ErrorCode;
use strata_quorum::MetadataImage;

use crate::broker::Broker;
use crate::groups::{append_to_internal_topic, replay_partition, wait_durable, OFFSETS_TOPIC};
use crate::partition::{now_ms, HwWait};
use crate::shards::Shards;

/// The internal topic of transaction state.
pub const TXN_TOPIC: &str = "__transaction_state";

/// How long a coordinator write may take to become durable.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Appended records: per partition, the offset the high watermark must reach.
pub type Waits = crate::groups::Waits;

pub struct TxnService {
    config: TxnConfig,
    /// One slot per `__transaction_state` partition: its shard when loaded here.
    shards: Shards<TxnShard>,
    pub state_partitions: i32,
    abort_interval_ms: u64,
    expire_interval_ms: u64,
}

fn config_i64(config: &crate::config::BrokerConfig, key: &str, default: i64) -> i64 {
    config
        .value(key)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Encodes coordinator records (`None`: a tombstone) keyed for their partitions.
fn keyed_records(
    records: Vec<(String, Option<TxnMetadata>)>,
    partitions: i32,
    now: i64,
) -> Vec<(i32, PlainRecord)> {
    records
        .into_iter()
        .map(|(id, value)| {
            let p = strata_coordinator::offsets_partition_for(&id, partitions);
            let (key, value) = match &value {
                Some(m) => {
                    let (k, v) = encode_record(m);
                    (k, Some(Bytes::from(v)))
                }
                None => (id.into_bytes(), None),
            };
            let record = PlainRecord {
                key: Some(Bytes::from(key)),
                value,
                timestamp: now,
            };
            (p, record)
        })
        .collect()
}

impl TxnService {
    pub fn new(config: &crate::config::BrokerConfig) -> Self {
        let txn_config = TxnConfig {
            max_timeout_ms: config_i64(config, "transaction.max.timeout.ms", 900_000) as i32,
            id_expiration_ms: config_i64(config, "transactional.id.expiration.ms", 604_800_000),
        };
        let state_partitions =
            config_i64(config, "transaction.state.log.num.partitions", 50).max(1) as i32;
        TxnService {
            config: txn_config,
            shards: Shards::new(state_partitions),
            state_partitions,
            abort_interval_ms: config_i64(
                config,
                "transaction.abort.timed.out.transaction.cleanup.interval.ms",
                10_000,
            )
            .max(10) as u64,
            expire_interval_ms: config_i64(
                config,
                "transaction.remove.expired.transaction.cleanup.interval.ms",
                3_600_000,
            )
            .max(10) as u64,
        }
    }

    /// The `__transaction_state` partition (and shard) of a transactional id.
    pub fn partition_for(&self, transactional_id: &str) -> i32 {
        strata_coordinator::offsets_partition_for(transactional_id, self.state_partitions)
    }

    /// Runs `f` on the shard of `transactional_id` with its lock held (in-memory work only).
    /// NOT_COORDINATOR if the shard is not loaded here.
    pub fn with<R>(
        &self,
        transactional_id: &str,
        f: impl FnOnce(&mut TxnShard) -> Result<R, ErrorCode>,
    ) -> Result<R, ErrorCode> {
        let partition = self.partition_for(transactional_id);
        self.shards
            .with(partition, || TxnShard::empty(self.config, partition), f)?
    }

    /// Runs a transition `f` on the shard of `transactional_id` and appends the records it
    /// returns, both under the shard lock (so the log order is the order of the changes);
    /// the caller waits for the returned appends to be durable without the lock.
    pub fn update<R>(
        &self,
        broker: &Broker,
        transactional_id: &str,
        f: impl FnOnce(&mut TxnShard) -> Result<(R, Vec<TxnMetadata>), ErrorCode>,
    ) -> Result<(R, Waits), ErrorCode> {
        self.with(transactional_id, |shard| {
            let (answer, records) = f(shard)?;
            if records.is_empty() {
                // Nothing changed, but what the answer rests on may be a change another
                // request appended that is not durable yet: wait for the shard's log tail.
                return Ok((answer, self.tail(broker, shard.partition)));
            }
            let records = records
                .into_iter()
                .map(|m| (m.transactional_id.clone(), Some(m)))
                .collect();
            match self.append(broker, records) {
                Ok(waits) => Ok((answer, waits)),
                Err(code) => {
                    // A transition to Prepare* claimed the id for the caller, who now gets
                    // an error: leave it to the ticker.
                    shard.release(transactional_id);
                    Err(code)
                }
            }
        })
    }

    /// The end of `__transaction_state` partition `partition`'s log, to wait for everything
    /// appended to it so far.
    fn tail(&self, broker: &Broker, partition: i32) -> Waits {
        broker
            .image()
            .topic_by_name(TXN_TOPIC)
            .and_then(|t| broker.partitions.get(&t.topic_id, partition))
            .map(|p| {
                let (offset, leader_epoch) = (p.log_end_offset(), p.leader_epoch());
                vec![HwWait {
                    partition: p,
                    offset,
                    leader_epoch,
                }]
            })
            .unwrap_or_default()
    }

    /// Appends coordinator records (`None`: a tombstone); returns what to wait for.
    fn append(
        &self,
        broker: &Broker,
        records: Vec<(String, Option<TxnMetadata>)>,
    ) -> Result<Waits, ErrorCode> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let keyed = keyed_records(records, self.state_partitions, now);
        append_to_internal_topic(broker, TXN_TOPIC, keyed, BatchProducer::NONE, now)
    }

    /// Verifies that a partition is in the producer's open transaction (KIP-890).
    pub fn verify(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partition: &(String, i32),
    ) -> Result<(), ErrorCode> {
        self.with(transactional_id, |s| {
            s.coordinator
                .verify(transactional_id, producer_id, epoch, partition)
        })
    }

    /// The state of a transactional id (DescribeTransactions).
    pub fn get(&self, transactional_id: &str) -> Result<Option<TxnMetadata>, ErrorCode> {
        self.with(transactional_id, |s| {
            Ok(s.coordinator.get(transactional_id).cloned())
        })
    }

    /// Every transactional id of the loaded shards (ListTransactions), one shard locked at a
    /// time.
    pub fn all(&self) -> Vec<TxnMetadata> {
        let mut out = Vec::new();
        self.shards
            .for_each(|shard| out.extend(shard.coordinator.all().cloned()));
        out
    }

    /// Gives up completing a transaction (its Prepare* stays; the ticker retries it).
    pub fn release(&self, transactional_id: &str) {
        let _ = self.with(transactional_id, |s| {
            s.release(transactional_id);
            Ok(())
        });
    }

    /// Writes the markers of `plan` to its partitions and waits until they are durable:
    /// here for the partitions this broker leads, with WriteTxnMarkers to the leader for the
    /// others (a partition without a leader fails the attempt; the ticker tries again).
    pub async fn write_markers(
        &self,
        broker: &Arc<Broker>,
        plan: &MarkerPlan,
    ) -> Result<(), ErrorCode> {
        let image = broker.image();
        let mut local = Vec::new();
        let mut remote: std::collections::BTreeMap<i32, Vec<(String, i32)>> = Default::default();
        for (topic_name, index) in &plan.partitions {
            let Some(leader) = image
                .topic_by_name(topic_name)
                .and_then(|t| t.partitions.get(index))
                .map(|p| p.leader)
            else {
                continue; // deleted meanwhile: nothing to mark
            };
            if leader == broker.node_id() {
                local.push((topic_name.clone(), *index));
            } else if leader < 0 {
                return Err(ErrorCode::NotLeaderOrFollower);
            } else {
                remote
                    .entry(leader)
                    .or_default()
                    .push((topic_name.clone(), *index));
            }
        }
        let mut waits = Vec::new();
        for (topic_name, index) in &local {
            let marker = MarkerWrite {
                producer_id: plan.producer_id,
                epoch: plan.epoch,
                commit: plan.commit,
                coordinator_epoch: 0,
            };
            if let Some(wait) = write_marker_here(broker, &image, topic_name, *index, &marker)? {
                waits.push(wait);
            }
        }
        for (leader, partitions) in remote {
            crate::inter_broker::write_txn_markers(broker, &image, leader, plan, &partitions)
                .await?;
        }
        broker.groups.wait_and_settle(waits, WRITE_TIMEOUT).await
    }

    /// Writes the markers of a prepared transaction the caller claimed, then records it
    /// complete. On failure the claim is released, so the ticker tries again later.
    pub async fn finish(&self, broker: &Arc<Broker>, plan: &MarkerPlan) -> Result<(), ErrorCode> {
        let id = plan.transactional_id.as_str();
        if let Err(code) = self.write_markers(broker, plan).await {
            self.release(id);
            return Err(code);
        }
        let ((), waits) = self.update(broker, id, |s| {
            s.release(id);
            Ok((
                (),
                s.coordinator.complete(id, now_ms()).into_iter().collect(),
            ))
        })?;
        wait_durable(waits, WRITE_TIMEOUT).await
    }

    /// Builds the shard of `__transaction_state` partition `partition` from that partition's
    /// records and starts answering for its ids (this node became the partition's leader).
    /// Loading a loaded shard does nothing. Prepare* transactions found are finished by the
    /// ticker.
    pub fn load_partition(&self, broker: &Broker, image: &MetadataImage, partition: i32) {
        self.shards
            .load(partition, || self.build_shard(broker, image, partition));
    }

    /// The shard of `partition`, built from that partition's records.
    fn build_shard(&self, broker: &Broker, image: &MetadataImage, partition: i32) -> TxnShard {
        let mut records = Vec::new();
        replay_partition(broker, image, TXN_TOPIC, partition, |r| {
            if let Some(key) = r.key {
                records.push((key.to_vec(), r.value.map(|v| v.to_vec())));
            }
        });
        let (shard, stats) = TxnShard::load(self.config, partition, self.state_partitions, records);
        if stats.skipped > 0 {
            tracing::warn!(
                partition,
                skipped = stats.skipped,
                "skipped transaction records that are unreadable or of another partition"
            );
        }
        tracing::debug!(
            partition,
            records = stats.records,
            transactional_ids = shard.coordinator.all().count(),
            "loaded a transaction coordinator shard"
        );
        shard
    }

    /// Drops the shard of `partition` (this node no longer leads it): its ids answer
    /// NOT_COORDINATOR from now on; tasks still completing one of its transactions fail
    /// their next step the same way, and the new leader finishes them from the log.
    pub fn unload_partition(&self, partition: i32) {
        self.shards.unload(partition);
    }

    /// One pass of the ticker over one shard, under its lock: timed-out transactions move to
    /// PrepareAbort (appended), unfinished Prepare* are claimed, idle ids expire (appended).
    /// Returns (plans with the appends to wait for first, tombstone appends).
    fn tick_shard(
        &self,
        broker: &Broker,
        partition: i32,
        now: i64,
        abort: bool,
        expire: bool,
    ) -> (Vec<(MarkerPlan, Waits)>, Waits) {
        let Some(mut slot) = self.shards.slot(partition) else {
            return (Vec::new(), Vec::new());
        };
        let Some(shard) = slot.as_mut() else {
            return (Vec::new(), Vec::new());
        };
        let mut plans = Vec::new();
        // Prepare* nobody completes: whatever this shard appended may not be durable yet
        // (a failed attempt), so wait for all of it before writing markers.
        let unfinished = shard.claim_unfinished();
        if !unfinished.is_empty() {
            let tail = self.tail(broker, partition);
            plans.extend(unfinished.into_iter().map(|p| (p, tail.clone())));
        }
        if abort {
            for (record, plan) in shard.coordinator.abort_timed_out(now) {
                tracing::info!(transactional_id = %plan.transactional_id, producer_id = plan.producer_id, "aborting a transaction past its timeout");
                shard.claim(&plan.transactional_id);
                match self.append(
                    broker,
                    vec![(record.transactional_id.clone(), Some(record))],
                ) {
                    Ok(waits) => plans.push((plan, waits)),
                    Err(code) => {
                        tracing::warn!(?code, "cannot persist a transaction abort");
                        shard.release(&plan.transactional_id);
                    }
                }
            }
        }
        let mut tombstones = Vec::new();
        if expire {
            let expired = shard.coordinator.expire_ids(now);
            if !expired.is_empty() {
                match self.append(broker, expired.into_iter().map(|id| (id, None)).collect()) {
                    Ok(waits) => tombstones = waits,
                    Err(code) => {
                        tracing::warn!(?code, "cannot persist expired transactional ids")
                    }
                }
            }
        }
        (plans, tombstones)
    }

    /// Finishes unfinished transactions, aborts timed-out ones and expires idle ids on their
    /// intervals, while the broker lives. Each transaction is finished by its own task.
    pub fn start_ticker(broker: &Arc<Broker>) {
        let weak = Arc::downgrade(broker);
        let abort_every = Duration::from_millis(broker.txns.abort_interval_ms);
        let expire_every_ms = broker.txns.expire_interval_ms as i64;
        tokio::spawn(async move {
            let mut last_expiry = now_ms();
            let mut tick = tokio::time::interval(abort_every.min(Duration::from_millis(1000)));
            let mut last_abort_check = 0i64;
            loop {
                tick.tick().await;
                let Some(broker) = weak.upgrade() else { return };
                let now = now_ms();
                let abort = now.saturating_sub(last_abort_check) >= abort_every.as_millis() as i64;
                if abort {
                    last_abort_check = now;
                }
                let expire = now.saturating_sub(last_expiry) >= expire_every_ms;
                if expire {
                    last_expiry = now;
                }
                for partition in 0..broker.txns.state_partitions {
                    let (plans, tombstones) = broker
                        .txns
                        .tick_shard(&broker, partition, now, abort, expire);
                    for (plan, waits) in plans {
                        let broker = broker.clone();
                        tokio::spawn(async move {
                            let svc = &broker.txns;
                            let result = match wait_durable(waits, WRITE_TIMEOUT).await {
                                Ok(()) => svc.finish(&broker, &plan).await,
                                Err(code) => {
                                    svc.release(&plan.transactional_id);
                                    Err(code)
                                }
                            };
                            if let Err(code) = result {
                                tracing::warn!(?code, transactional_id = %plan.transactional_id, "cannot complete a transaction; will retry");
                            }
                        });
                    }
                    if !tombstones.is_empty() {
                        tokio::spawn(async move {
                            if let Err(code) = wait_durable(tombstones, WRITE_TIMEOUT).await {
                                tracing::warn!(?code, "cannot persist expired transactional ids");
                            }
                        });
                    }
                }
            }
        });
    }
}

/// One transaction marker to write.
#[derive(Debug, Clone, Copy)]
pub struct MarkerWrite {
    pub producer_id: i64,
    pub epoch: i16,
    pub commit: bool,
    pub coordinator_epoch: i32,
}

/// Appends `marker` to `topic_name`'s partition `index`, which this broker must hold; the
/// wait for its durability, or `None` when a newer producer epoch already ended the
/// transaction there. A marker on `__consumer_offsets` settles the group's pending
/// transactional offsets.
pub fn write_marker_here(
    broker: &Broker,
    image: &MetadataImage,
    topic_name: &str,
    index: i32,
    marker: &MarkerWrite,
) -> Result<Option<HwWait>, ErrorCode> {
    let topic = image
        .topic_by_name(topic_name)
        .ok_or(ErrorCode::UnknownTopicOrPartition)?;
    let partition = broker.partitions.lookup(topic, index)?;
    let kind = if marker.commit {
        Marker::Commit
    } else {
        Marker::Abort
    };
    match partition.append_marker(
        marker.producer_id,
        marker.epoch,
        kind,
        marker.coordinator_epoch,
        now_ms(),
    ) {
        Ok(appended) => {
            broker.partitions.flusher.after_append(&partition);
            let wait = HwWait::new(partition, &appended);
            if topic_name == OFFSETS_TOPIC {
                broker
                    .groups
                    .complete_txn(marker.producer_id, marker.commit, index, wait.offset);
            }
            Ok(Some(wait))
        }
        Err(ErrorCode::InvalidProducerEpoch) => {
            // A newer epoch already wrote here: this transaction was fenced and ended by it.
            tracing::info!(topic = %topic_name, partition = index, producer_id = marker.producer_id, "marker skipped: newer producer epoch");
            Ok(None)
        }
        Err(code) => Err(code),
    }
}

#[cfg(test)]
mod tests {
    use strata_coordinator::txn::{InitPlan, TxnState};

    use super::*;

    /// A transition that initialises `id`, appended; waits until durable.
    async fn init(broker: &Arc<Broker>, id: &str, fresh: i64) -> Result<TxnMetadata, ErrorCode> {
        let (m, waits) = broker.txns.update(broker, id, |s| {
            match s
                .coordinator
                .init_producer_id(id, 10_000, None, fresh, now_ms())?
            {
                InitPlan::Ready(m) => Ok((m.clone(), vec![m])),
                InitPlan::AbortFirst(..) => Err(ErrorCode::ConcurrentTransactions),
            }
        })?;
        wait_durable(waits, WRITE_TIMEOUT).await?;
        Ok(m)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shards_load_and_unload_from_their_own_partition() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = crate::broker::open_for_test(
            dir.path(),
            &[("transaction.state.log.num.partitions", "4")],
        );
        let svc = &broker.txns;
        // Before the topic exists nothing is known, and nothing is refused as misrouted.
        assert_eq!(svc.get("a"), Ok(None));
        crate::handlers::groups::ensure_internal_topic(&broker, TXN_TOPIC, 4)
            .await
            .expect("topic");
        let a = "a";
        let b = (0..100)
            .map(|i| format!("b{i}"))
            .find(|id| svc.partition_for(id) != svc.partition_for(a))
            .expect("an id in another partition");
        let ma = init(&broker, a, 1).await.expect("init a");
        init(&broker, &b, 2).await.expect("init b");
        // Unloading a's shard: its ids are not coordinated here any more; b's shard serves.
        svc.unload_partition(svc.partition_for(a));
        assert_eq!(svc.get(a), Err(ErrorCode::NotCoordinator));
        assert_eq!(init(&broker, a, 3).await, Err(ErrorCode::NotCoordinator));
        assert_eq!(
            svc.get(&b).expect("b's shard").map(|m| m.producer_id),
            Some(2)
        );
        assert!(svc.all().iter().all(|m| m.transactional_id != a));
        // Loading it again rebuilds a's state from its partition's records alone.
        svc.load_partition(&broker, &broker.image(), svc.partition_for(a));
        assert_eq!(svc.get(a), Ok(Some(ma.clone())));
        assert_eq!(ma.state, TxnState::Empty);
        let again = init(&broker, a, 4).await.expect("init a again");
        assert_eq!((again.producer_id, again.producer_epoch), (1, 1));
    }
}
