//! The edge around the group coordinator state machine (`strata_coordinator`): waiting
//! requests, the clock, and the `__consumer_offsets` topic.
//!
//! JoinGroup and SyncGroup get a token and a oneshot channel; the machine answers tokens when
//! the rebalance allows (maybe during a later request or a tick), and this service routes each
//! answer to its channel. Records the machine wants persisted are appended to the group's
//! `__consumer_offsets` partition (chosen as Kafka does, from the group id's Java hash) while
//! the coordinator lock is held, so the log order matches the order of the machine's changes.
//! Committed offsets are staged when appended and become visible to OffsetFetch, and are
//! acknowledged, only once their append is durable (the partition's high watermark passes
//! it); the coordinator lock is not held while waiting. At start-up every partition of the topic is replayed into the
//! machine.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::records::{Compression, Record, RecordBatchDecoder};
use strata_coordinator::consumer::{ConsumerConfig, ConsumerGroups, Topics};
use strata_coordinator::group::{JoinResponse, SyncResponse};
use strata_coordinator::{
    GroupConfig, GroupCoordinator, GroupEvent, GroupProtocol, GroupRecord, Output, Token,
};
use strata_protocol::records::{encode_batch_as, BatchProducer, PlainRecord};
use strata_protocol::ErrorCode;
use tokio::sync::oneshot;

use crate::broker::Broker;
use crate::partition::{now_ms, Partition};

/// Logs a rebalance milestone at INFO, as Kafka's group coordinator does: the group, why it
/// rebalances, the generation and the member count, and each generation once stable.
fn log_group_event(event: &GroupEvent) {
    match event {
        GroupEvent::RebalanceStarted {
            group,
            protocol: GroupProtocol::Classic,
            reason,
            generation,
            members,
        } => tracing::info!(
            %group,
            %reason,
            old_generation = generation,
            members,
            "preparing to rebalance group"
        ),
        GroupEvent::RebalanceStarted {
            group,
            protocol: GroupProtocol::Consumer,
            reason,
            generation,
            members,
        } => tracing::info!(
            %group,
            %reason,
            epoch = generation,
            members,
            "rebalancing consumer group (KIP-848)"
        ),
        GroupEvent::Stable {
            group,
            protocol,
            generation,
            members,
        } => tracing::info!(%group, %protocol, generation, members, "group stable"),
        GroupEvent::Emptied {
            group,
            protocol,
            generation,
        } => tracing::info!(%group, %protocol, generation, "group is now empty"),
    }
}

/// The KIP-848 groups under their lock; logs the rebalance events of whatever was done with
/// them when dropped, so that every path through the machine is logged.
pub struct ConsumerGroupsGuard<'a>(MutexGuard<'a, ConsumerGroups>);

impl std::ops::Deref for ConsumerGroupsGuard<'_> {
    type Target = ConsumerGroups;
    fn deref(&self) -> &ConsumerGroups {
        &self.0
    }
}

impl std::ops::DerefMut for ConsumerGroupsGuard<'_> {
    fn deref_mut(&mut self) -> &mut ConsumerGroups {
        &mut self.0
    }
}

impl Drop for ConsumerGroupsGuard<'_> {
    fn drop(&mut self) {
        for event in self.0.take_events() {
            log_group_event(&event);
        }
    }
}

/// The internal topic of committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

enum Waiting {
    Join(oneshot::Sender<JoinResponse>),
    Sync(oneshot::Sender<SyncResponse>),
}

pub struct GroupService {
    coordinator: Mutex<GroupCoordinator>,
    /// Consumer-protocol (KIP-848) groups; their committed offsets live with the classic
    /// groups' in `coordinator`.
    consumer: Mutex<ConsumerGroups>,
    waiting: Mutex<HashMap<Token, Waiting>>,
    next_token: AtomicU64,
    pub offsets_partitions: i32,
    /// Offsets committed inside open transactions (TxnOffsetCommit), by producer id; they
    /// apply when the transaction's commit marker is written, and vanish on abort.
    pending_txn: Mutex<HashMap<i64, Vec<GroupRecord>>>,
}

fn config_i64(broker_config: &crate::config::BrokerConfig, key: &str) -> i64 {
    broker_config
        .value(key)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

impl GroupService {
    pub fn new(config: &crate::config::BrokerConfig) -> Self {
        let group_config = GroupConfig {
            initial_rebalance_delay_ms: config_i64(config, "group.initial.rebalance.delay.ms"),
            min_session_timeout_ms: config_i64(config, "group.min.session.timeout.ms") as i32,
            max_session_timeout_ms: config_i64(config, "group.max.session.timeout.ms") as i32,
            offsets_retention_ms: config_i64(config, "offsets.retention.minutes")
                .saturating_mul(60_000),
            max_metadata_bytes: config_i64(config, "offset.metadata.max.bytes").max(0) as usize,
        };
        let consumer_config = ConsumerConfig {
            session_timeout_ms: config_i64(config, "group.consumer.session.timeout.ms"),
            heartbeat_interval_ms: config_i64(config, "group.consumer.heartbeat.interval.ms")
                as i32,
            max_size: config_i64(config, "group.consumer.max.size").max(1) as usize,
        };
        GroupService {
            coordinator: Mutex::new(GroupCoordinator::new(group_config)),
            consumer: Mutex::new(ConsumerGroups::new(consumer_config)),
            waiting: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
            offsets_partitions: config_i64(config, "offsets.topic.num.partitions").max(1) as i32,
            pending_txn: Mutex::new(HashMap::new()),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, GroupCoordinator> {
        self.coordinator.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The KIP-848 groups; their rebalance events are logged when the guard is dropped.
    pub fn consumer(&self) -> ConsumerGroupsGuard<'_> {
        ConsumerGroupsGuard(self.consumer.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn token(&self) -> Token {
        self.next_token.fetch_add(1, Ordering::Relaxed)
    }

    pub fn wait_join(&self) -> (Token, oneshot::Receiver<JoinResponse>) {
        let token = self.token();
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token, Waiting::Join(tx));
        (token, rx)
    }

    pub fn wait_sync(&self) -> (Token, oneshot::Receiver<SyncResponse>) {
        let token = self.token();
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token, Waiting::Sync(tx));
        (token, rx)
    }

    /// Delivers answers and persists records. Call with the coordinator lock held (pass the
    /// guard) so appends keep the machine's order.
    pub fn dispatch(&self, broker: &Broker, outputs: Vec<Output>) {
        let mut records = Vec::new();
        {
            let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
            for output in outputs {
                match output {
                    Output::Join(token, response) => {
                        if let Some(Waiting::Join(tx)) = waiting.remove(&token) {
                            let _ = tx.send(response);
                        }
                    }
                    Output::Sync(token, response) => {
                        if let Some(Waiting::Sync(tx)) = waiting.remove(&token) {
                            let _ = tx.send(response);
                        }
                    }
                    Output::Persist(record) => records.push(record),
                    Output::Event(event) => log_group_event(&event),
                }
            }
        }
        if !records.is_empty() {
            if let Err(code) = self.append(broker, &records) {
                tracing::error!(?code, "could not persist group metadata");
            }
        }
    }

    /// Appends records to their groups' partitions; returns, per partition, the offset the
    /// high watermark must reach for them to be durable.
    pub fn append(
        &self,
        broker: &Broker,
        records: &[GroupRecord],
    ) -> Result<Vec<(Arc<Partition>, i64)>, ErrorCode> {
        self.append_as(broker, records, BatchProducer::NONE)
    }

    /// Appends offsets committed inside a transaction (a transactional batch from the
    /// producer) and keeps them pending until the transaction ends.
    pub fn append_txn(
        &self,
        broker: &Broker,
        records: Vec<GroupRecord>,
        producer_id: i64,
        producer_epoch: i16,
    ) -> Result<Vec<(Arc<Partition>, i64)>, ErrorCode> {
        let waits = self.append_as(
            broker,
            &records,
            BatchProducer {
                producer_id,
                producer_epoch,
                base_sequence: -1,
                transactional: true,
                control: false,
            },
        )?;
        self.pending_txn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(producer_id)
            .or_default()
            .extend(records);
        Ok(waits)
    }

    /// A transaction marker of `producer_id` was written to `__consumer_offsets` partition
    /// `partition`, its batch ending before `end_offset`: on commit, its pending offsets apply
    /// once the marker is durable ([`Self::settle`]); on abort they vanish.
    pub fn complete_txn(&self, producer_id: i64, commit: bool, partition: i32, end_offset: i64) {
        let records = self
            .pending_txn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&producer_id);
        if let (Some(records), true) = (records, commit) {
            self.lock().stage(partition, end_offset, records);
        }
    }

    /// Applies the commits staged for a `__consumer_offsets` partition that its high
    /// watermark now covers (they become visible to OffsetFetch).
    pub fn settle(&self, partition: &Partition) {
        let hw = partition.high_watermark();
        self.lock().durable(now_ms(), partition.index, hw);
    }

    /// Whether an offset of `group` for the partition is not settled: it waits for a
    /// transaction to end, or for its commit to be durable (OffsetFetch with require_stable
    /// answers UNSTABLE_OFFSET_COMMIT then, as Kafka does for pending commits).
    pub fn has_pending_txn_offset(&self, group: &str, topic: &str, partition: i32) -> bool {
        let in_txn = self
            .pending_txn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .flatten()
            .any(|r| {
                matches!(r, GroupRecord::Offset { group: g, topic: t, partition: p, .. }
                    if g == group && t == topic && *p == partition)
            });
        in_txn || self.lock().has_staged_offset(group, topic, partition)
    }

    fn append_as(
        &self,
        broker: &Broker,
        records: &[GroupRecord],
        producer: BatchProducer,
    ) -> Result<Vec<(Arc<Partition>, i64)>, ErrorCode> {
        let now = now_ms();
        let keyed = records
            .iter()
            .map(|r| {
                let (key, value) = r.encode();
                let p =
                    strata_coordinator::offsets_partition_for(r.group(), self.offsets_partitions);
                (
                    p,
                    PlainRecord {
                        key: Some(key),
                        value,
                        timestamp: now,
                    },
                )
            })
            .collect();
        append_to_internal_topic(broker, OFFSETS_TOPIC, keyed, producer, now)
    }

    /// Replays `__consumer_offsets` into the machine (start-up).
    pub fn load(&self, broker: &Broker) {
        let now = now_ms();
        let mut coordinator = self.lock();
        let mut loaded = 0usize;
        let mut pending: HashMap<i64, Vec<GroupRecord>> = HashMap::new();
        replay_topic(broker, OFFSETS_TOPIC, |p, r| {
            if r.control {
                // A transaction marker: key = version i16, type i16 (1 = commit).
                let commit = r
                    .key
                    .as_ref()
                    .is_some_and(|k| k.len() >= 4 && k[2..4] == [0, 1]);
                let records = pending.remove(&r.producer_id).unwrap_or_default();
                if commit {
                    for record in records {
                        coordinator.apply(now, record);
                    }
                }
                return;
            }
            let Some(key) = r.key else { return };
            match GroupRecord::decode(&key, r.value.as_deref()) {
                Ok(record) if r.transactional => {
                    pending.entry(r.producer_id).or_default().push(record);
                }
                Ok(record) => {
                    coordinator.apply(now, record);
                    loaded += 1;
                }
                Err(e) => {
                    tracing::warn!(partition = p, offset = r.offset, error = ?e, "skipping an unreadable group record")
                }
            }
        });
        drop(coordinator);
        // Transactions still open at the restart: their offsets wait for the markers.
        *self.pending_txn.lock().unwrap_or_else(|p| p.into_inner()) = pending;
        tracing::info!(
            records = loaded,
            groups = self.lock().list().len(),
            "loaded consumer groups"
        );
    }

    /// Runs the machine's timers every 100 ms while the broker lives.
    pub fn start_ticker(broker: &Arc<Broker>) {
        let weak = Arc::downgrade(broker);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let Some(broker) = weak.upgrade() else { return };
                let svc = &broker.groups;
                {
                    let mut coordinator = svc.lock();
                    let outputs = coordinator.tick(now_ms());
                    if !outputs.is_empty() {
                        svc.dispatch(&broker, outputs);
                    }
                }
                let topics = subscribable_topics(&broker);
                svc.consumer().tick(now_ms(), &topics);
                // Commits whose own waiter gave up (timeout) apply once durable anyway, as
                // their records are in the log and a restart would replay them.
                let staged = svc.lock().staged_partitions();
                if !staged.is_empty() {
                    if let Some(topic) = broker.image().topic_by_name(OFFSETS_TOPIC) {
                        for p in staged {
                            if let Some(partition) = broker.partitions.get(&topic.topic_id, p) {
                                svc.settle(&partition);
                            }
                        }
                    }
                }
            }
        });
    }
}

/// Appends `(partition, record)` pairs to an internal topic, one batch per partition with the
/// producer fields `producer`; returns, per partition, the offset the high watermark must
/// reach for them to be durable.
pub fn append_to_internal_topic(
    broker: &Broker,
    name: &str,
    records: Vec<(i32, PlainRecord)>,
    producer: BatchProducer,
    now: i64,
) -> Result<Vec<(Arc<Partition>, i64)>, ErrorCode> {
    let image = broker.image();
    let topic = image
        .topic_by_name(name)
        .ok_or(ErrorCode::CoordinatorNotAvailable)?;
    let mut by_partition: BTreeMap<i32, Vec<PlainRecord>> = BTreeMap::new();
    for (p, r) in records {
        by_partition.entry(p).or_default().push(r);
    }
    let mut waits = Vec::new();
    for (p, recs) in by_partition {
        let partition = broker
            .partitions
            .get(&topic.topic_id, p)
            .ok_or(ErrorCode::CoordinatorNotAvailable)?;
        let batch = encode_batch_as(&recs, Compression::None, producer).map_err(|e| {
            tracing::error!(topic = name, error = %e, "cannot encode an internal record batch");
            ErrorCode::UnknownServerError
        })?;
        let info = partition.append_internal(&batch, now)?;
        broker.partitions.flusher.after_append(&partition);
        waits.push((partition, info.last_offset() + 1));
    }
    Ok(waits)
}

/// Calls `f(partition, record)` for every record of every partition of an internal topic,
/// in log order (start-up replay); see [`replay_partition`].
pub fn replay_topic(broker: &Broker, name: &str, mut f: impl FnMut(i32, Record)) {
    let image = broker.image();
    let Some(topic) = image.topic_by_name(name) else {
        return;
    };
    for p in topic.partitions.keys() {
        replay_partition(broker, name, *p, |r| f(*p, r));
    }
}

/// Calls `f(record)` for every record of one partition of an internal topic, from the log
/// start to the high watermark, in log order (loading a coordinator). An undecodable batch
/// ends the replay, with an error logged.
pub fn replay_partition(broker: &Broker, name: &str, p: i32, mut f: impl FnMut(Record)) {
    let image = broker.image();
    let Some(topic) = image.topic_by_name(name) else {
        return;
    };
    let Some(partition) = broker.partitions.get(&topic.topic_id, p) else {
        return;
    };
    let mut offset = partition.log_start_offset();
    while offset < partition.high_watermark() {
        let Ok(read) = partition.read(offset, 1 << 20) else {
            break;
        };
        if read.records.is_empty() {
            break;
        }
        let mut bytes: Bytes = read.records;
        let Ok(sets) = RecordBatchDecoder::decode_all(&mut bytes) else {
            tracing::error!(
                topic = name,
                partition = p,
                offset,
                "undecodable batch in an internal topic; skipping the rest of the partition"
            );
            break;
        };
        let mut next = offset;
        for set in sets {
            for r in set.records {
                next = next.max(r.offset + 1);
                if r.offset >= offset {
                    f(r);
                }
            }
        }
        if next <= offset {
            break;
        }
        offset = next;
    }
}

/// Waits until every partition's high watermark passes its offset, or `timeout`.
pub async fn wait_durable(
    waits: Vec<(Arc<Partition>, i64)>,
    timeout: Duration,
) -> Result<(), ErrorCode> {
    let deadline = tokio::time::Instant::now() + timeout;
    for (partition, needed) in waits {
        let mut rx = partition.subscribe();
        let reached = tokio::time::timeout_at(deadline, async {
            loop {
                if *rx.borrow_and_update() >= needed {
                    return true;
                }
                if partition.is_offline() {
                    return false;
                }
                if rx.changed().await.is_err() || partition.is_deleted() {
                    return false;
                }
            }
        })
        .await;
        match reached {
            Ok(true) => {}
            Ok(false) => return Err(ErrorCode::CoordinatorNotAvailable),
            Err(_) => return Err(ErrorCode::RequestTimedOut),
        }
    }
    Ok(())
}

/// Topics a consumer-protocol group may be assigned: every non-internal topic, by name, with
/// its id and partition count.
pub fn subscribable_topics(broker: &Broker) -> Topics {
    broker
        .image()
        .topics()
        .filter(|t| !strata_protocol::topic::is_internal(&t.name))
        .map(|t| (t.name.clone(), (t.topic_id, t.partitions.len() as i32)))
        .collect()
}
