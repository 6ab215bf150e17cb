//! The edge around the transaction coordinator state machine (`strata_coordinator::txn`):
//! the `__transaction_state` topic, transaction markers, and the clock.
//!
//! Every change of a transaction is appended to its `__transaction_state` partition (chosen
//! from the transactional id as Kafka does) and is durable before the coordinator acts on it.
//! Ending a transaction writes a commit or abort marker (a control batch) to each of its
//! partitions, waits until they are durable, then records the transaction complete. Markers
//! on `__consumer_offsets` also settle the offsets the transaction committed
//! (TxnOffsetCommit). Operations are serialized by one async lock (`ops`), so a transaction's
//! prepare -> markers -> complete sequence is never interleaved with another change.
//!
//! At start-up the topic is replayed; transactions found in PrepareCommit/PrepareAbort get
//! their markers written again (harmless where they already were). A ticker aborts
//! transactions past their `transaction.timeout.ms` (with a bumped epoch, fencing the
//! producer) and expires idle transactional ids.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use strata_coordinator::txn::{
    decode_record, encode_record, MarkerPlan, TxnConfig, TxnCoordinator, TxnMetadata,
};
use strata_log::Marker;
use strata_protocol::records::{BatchProducer, PlainRecord};
use strata_protocol::ErrorCode;

use crate::broker::Broker;
use crate::groups::{append_to_internal_topic, replay_topic, wait_durable, OFFSETS_TOPIC};
use crate::partition::now_ms;

/// The internal topic of transaction state.
pub const TXN_TOPIC: &str = "__transaction_state";

/// How long a coordinator write may take to become durable.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

pub struct TxnService {
    state: Mutex<TxnCoordinator>,
    /// Serializes coordinator operations that write (held across their awaits).
    pub ops: tokio::sync::Mutex<()>,
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

impl TxnService {
    pub fn new(config: &crate::config::BrokerConfig) -> Self {
        let txn_config = TxnConfig {
            max_timeout_ms: config_i64(config, "transaction.max.timeout.ms", 900_000) as i32,
            id_expiration_ms: config_i64(config, "transactional.id.expiration.ms", 604_800_000),
        };
        TxnService {
            state: Mutex::new(TxnCoordinator::new(txn_config)),
            ops: tokio::sync::Mutex::new(()),
            state_partitions: config_i64(config, "transaction.state.log.num.partitions", 50).max(1)
                as i32,
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

    pub fn lock(&self) -> MutexGuard<'_, TxnCoordinator> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends coordinator records (`None`: a tombstone) and waits until they are durable.
    pub async fn persist(
        &self,
        broker: &Arc<Broker>,
        records: Vec<(String, Option<TxnMetadata>)>,
    ) -> Result<(), ErrorCode> {
        if records.is_empty() {
            return Ok(());
        }
        crate::handlers::groups::ensure_internal_topic(broker, TXN_TOPIC, self.state_partitions)
            .await?;
        let now = now_ms();
        let keyed = records
            .into_iter()
            .map(|(id, value)| {
                let p = strata_coordinator::offsets_partition_for(&id, self.state_partitions);
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
            .collect();
        let waits = append_to_internal_topic(broker, TXN_TOPIC, keyed, BatchProducer::NONE, now)?;
        wait_durable(waits, WRITE_TIMEOUT).await
    }

    /// Writes the markers of `plan` to its partitions and waits until they are durable.
    pub async fn write_markers(
        &self,
        broker: &Arc<Broker>,
        plan: &MarkerPlan,
    ) -> Result<(), ErrorCode> {
        let image = broker.image();
        let marker = if plan.commit {
            Marker::Commit
        } else {
            Marker::Abort
        };
        let now = now_ms();
        let mut waits = Vec::new();
        for (topic_name, index) in &plan.partitions {
            let Some(topic) = image.topic_by_name(topic_name) else {
                continue; // deleted meanwhile: nothing to mark
            };
            let Some(partition) = broker.partitions.get(&topic.topic_id, *index) else {
                continue;
            };
            match partition.append_marker(plan.producer_id, plan.epoch, marker, 0, now) {
                Ok(offset) => {
                    broker.partitions.flusher.after_append(&partition);
                    waits.push((partition, offset + 1));
                }
                Err(ErrorCode::InvalidProducerEpoch) => {
                    // A newer epoch already wrote here: this transaction was fenced and
                    // ended by it.
                    tracing::info!(topic = %topic_name, partition = index, producer_id = plan.producer_id, "marker skipped: newer producer epoch");
                    continue;
                }
                Err(code) => return Err(code),
            }
            if topic_name == OFFSETS_TOPIC {
                broker.groups.complete_txn(plan.producer_id, plan.commit);
            }
        }
        wait_durable(waits, WRITE_TIMEOUT).await
    }

    /// Writes the markers of a prepared transaction, then records it complete.
    pub async fn finish(&self, broker: &Arc<Broker>, plan: &MarkerPlan) -> Result<(), ErrorCode> {
        self.write_markers(broker, plan).await?;
        let done = self.lock().complete(&plan.transactional_id, now_ms());
        if let Some(done) = done {
            self.persist(broker, vec![(done.transactional_id.clone(), Some(done))])
                .await?;
        }
        Ok(())
    }

    /// Replays `__transaction_state` into the machine (start-up).
    pub fn load(&self, broker: &Broker) {
        let mut coordinator = self.lock();
        let mut loaded = 0usize;
        replay_topic(broker, TXN_TOPIC, |p, r| {
            let Some(key) = r.key else { return };
            match decode_record(&key, r.value.as_deref()) {
                Some((id, value)) => {
                    coordinator.apply(&id, value);
                    loaded += 1;
                }
                None => {
                    tracing::warn!(
                        partition = p,
                        offset = r.offset,
                        "skipping an unreadable transaction record"
                    )
                }
            }
        });
        tracing::info!(
            records = loaded,
            transactional_ids = coordinator.all().count(),
            "loaded transaction state"
        );
    }

    /// Completes transactions left prepared by a restart, then aborts timed-out
    /// transactions and expires idle ids on their intervals, while the broker lives.
    pub fn start_ticker(broker: &Arc<Broker>) {
        let weak = Arc::downgrade(broker);
        let abort_every = Duration::from_millis(broker.txns.abort_interval_ms);
        let expire_every_ms = broker.txns.expire_interval_ms as i64;
        tokio::spawn(async move {
            let mut first = true;
            let mut last_expiry = now_ms();
            let mut tick = tokio::time::interval(abort_every.min(Duration::from_millis(1000)));
            let mut last_abort_check = 0i64;
            loop {
                tick.tick().await;
                let Some(broker) = weak.upgrade() else { return };
                let svc = &broker.txns;
                let _ops = svc.ops.lock().await;
                let now = now_ms();
                let mut plans = Vec::new();
                if first {
                    plans.extend(svc.lock().pending_markers());
                    first = false;
                }
                if now.saturating_sub(last_abort_check) >= abort_every.as_millis() as i64 {
                    last_abort_check = now;
                    let timed_out = svc.lock().abort_timed_out(now);
                    for (record, plan) in timed_out {
                        tracing::info!(transactional_id = %plan.transactional_id, producer_id = plan.producer_id, "aborting a transaction past its timeout");
                        if let Err(code) = svc
                            .persist(
                                &broker,
                                vec![(record.transactional_id.clone(), Some(record))],
                            )
                            .await
                        {
                            tracing::warn!(?code, "cannot persist a transaction abort");
                            continue;
                        }
                        plans.push(plan);
                    }
                }
                for plan in plans {
                    if let Err(code) = svc.finish(&broker, &plan).await {
                        tracing::warn!(?code, transactional_id = %plan.transactional_id, "cannot complete a transaction; will retry");
                        first = true;
                    }
                }
                if now.saturating_sub(last_expiry) >= expire_every_ms {
                    last_expiry = now;
                    let expired = svc.lock().expire_ids(now);
                    if !expired.is_empty() {
                        let records = expired.into_iter().map(|id| (id, None)).collect();
                        if let Err(code) = svc.persist(&broker, records).await {
                            tracing::warn!(?code, "cannot persist expired transactional ids");
                        }
                    }
                }
            }
        });
    }
}
