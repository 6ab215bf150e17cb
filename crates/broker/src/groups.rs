//! The edge around the group coordinator state machines (`strata_coordinator`): waiting
//! requests, the clock, and the `__consumer_offsets` topic.
//!
//! Coordination is sharded as Kafka's is: one [`GroupShard`] per `__consumer_offsets`
//! partition (a group belongs to the partition its id's Java hash picks), each behind its own
//! lock and built from that partition's records only. [`GroupService::load_partition`] and
//! [`GroupService::unload_partition`] are what a node calls when it becomes or stops being
//! the leader of a partition; on one node every partition is loaded at start-up or when the
//! topic is created. A shard that is not loaded answers NOT_COORDINATOR.
//!
//! JoinGroup and SyncGroup get a token and a oneshot channel; the machine answers tokens when
//! the rebalance allows (maybe during a later request or a tick), and this service routes each
//! answer to its channel. Records a shard wants persisted are appended to its partition while
//! the shard lock is held, so the log order matches the order of the machine's changes; the
//! lock is held only for in-memory transitions and those (non-blocking) appends, never across
//! a wait for durability. Committed offsets are staged when appended and become visible to
//! OffsetFetch, and are acknowledged, only once their append is durable (the partition's high
//! watermark passes it).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::records::{Compression, Record, RecordBatchDecoder};
use strata_coordinator::consumer::{ConsumerConfig, Topics};
use strata_coordinator::group::{JoinResponse, SyncResponse};
use strata_coordinator::lag::LagConfig;
use strata_coordinator::{
    GroupConfig, GroupEvent, GroupProtocol, GroupRecord, GroupShard, Output, Replayed, Token,
};
use strata_protocol::records::{encode_batch_as, BatchProducer, PlainRecord};
use strata_protocol::ErrorCode;
use strata_quorum::MetadataImage;
use tokio::sync::oneshot;

use crate::broker::Broker;
use crate::partition::{now_ms, HwWait, HwWaitError, Partition};
use crate::shards::Shards;

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

/// The internal topic of committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// How long a group-coordinator write may take to become durable.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Appended records: per partition, the offset the high watermark must reach.
pub type Waits = Vec<HwWait>;

enum Waiting {
    Join(oneshot::Sender<JoinResponse>),
    Sync(oneshot::Sender<SyncResponse>),
}

pub struct GroupService {
    group_config: GroupConfig,
    consumer_config: ConsumerConfig,
    /// One slot per `__consumer_offsets` partition: its shard when loaded here.
    shards: Shards<GroupShard>,
    /// JoinGroup/SyncGroup requests waiting for their answer, with their shard's partition.
    waiting: Mutex<HashMap<Token, (i32, Waiting)>>,
    next_token: AtomicU64,
    pub offsets_partitions: i32,
}

fn config_i64(broker_config: &crate::config::BrokerConfig, key: &str) -> i64 {
    broker_config
        .value(key)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Logs the rebalance events the KIP-848 groups of a shard reported.
fn log_consumer_events(shard: &mut GroupShard) {
    for event in shard.consumer.take_events() {
        log_group_event(&event);
    }
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
            lag: LagConfig {
                window_commits: config_i64(config, "strata.lag.window.commits").max(1) as usize,
                min_distance_ms: config_i64(config, "strata.lag.min.commit.distance.ms"),
                stop_floor_ms: config_i64(config, "strata.lag.stop.floor.ms"),
            },
        };
        let consumer_config = ConsumerConfig {
            session_timeout_ms: config_i64(config, "group.consumer.session.timeout.ms"),
            heartbeat_interval_ms: config_i64(config, "group.consumer.heartbeat.interval.ms")
                as i32,
            max_size: config_i64(config, "group.consumer.max.size").max(1) as usize,
        };
        let offsets_partitions = config_i64(config, "offsets.topic.num.partitions").max(1) as i32;
        GroupService {
            group_config,
            consumer_config,
            shards: Shards::new(offsets_partitions),
            waiting: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
            offsets_partitions,
        }
    }

    /// The `__consumer_offsets` partition (and shard) of a group.
    pub fn partition_for(&self, group_id: &str) -> i32 {
        strata_coordinator::offsets_partition_for(group_id, self.offsets_partitions)
    }

    /// Longest committed-offset metadata string (`offset.metadata.max.bytes`).
    pub fn max_metadata_bytes(&self) -> usize {
        self.group_config.max_metadata_bytes
    }

    /// Runs `f` on the shard of `__consumer_offsets` partition `partition` with its lock held
    /// (in-memory work and non-blocking appends only), then logs the rebalance events it
    /// caused. NOT_COORDINATOR if the shard is not loaded here.
    pub fn with_partition<R>(
        &self,
        partition: i32,
        f: impl FnOnce(&mut GroupShard) -> R,
    ) -> Result<R, ErrorCode> {
        self.shards.with(
            partition,
            || GroupShard::new(partition, self.group_config, self.consumer_config),
            |shard| {
                let result = f(shard);
                log_consumer_events(shard);
                result
            },
        )
    }

    /// [`Self::with_partition`] on the shard of `group_id`.
    pub fn with<R>(
        &self,
        group_id: &str,
        f: impl FnOnce(&mut GroupShard) -> R,
    ) -> Result<R, ErrorCode> {
        self.with_partition(self.partition_for(group_id), f)
    }

    /// Runs `f` on every loaded shard, one locked at a time (listing).
    pub fn for_each_shard(&self, f: impl FnMut(&mut GroupShard)) {
        self.shards.for_each(f)
    }

    fn token(&self) -> Token {
        self.next_token.fetch_add(1, Ordering::Relaxed)
    }

    fn waiting(&self) -> MutexGuard<'_, HashMap<Token, (i32, Waiting)>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A token for a JoinGroup of `group_id`, and where its answer arrives.
    pub fn wait_join(&self, group_id: &str) -> (Token, oneshot::Receiver<JoinResponse>) {
        let token = self.token();
        let (tx, rx) = oneshot::channel();
        let partition = self.partition_for(group_id);
        self.waiting().insert(token, (partition, Waiting::Join(tx)));
        (token, rx)
    }

    /// A token for a SyncGroup of `group_id`, and where its answer arrives.
    pub fn wait_sync(&self, group_id: &str) -> (Token, oneshot::Receiver<SyncResponse>) {
        let token = self.token();
        let (tx, rx) = oneshot::channel();
        let partition = self.partition_for(group_id);
        self.waiting().insert(token, (partition, Waiting::Sync(tx)));
        (token, rx)
    }

    /// Drops a waiting request whose event never reached a shard (its receiver then ends).
    pub fn forget(&self, token: Token) {
        self.waiting().remove(&token);
    }

    /// Delivers answers and persists records. Call inside [`Self::with`] (with the shard
    /// lock held) so appends keep the machine's order.
    pub fn dispatch(&self, broker: &Broker, outputs: Vec<Output>) {
        let mut records = Vec::new();
        {
            let mut waiting = self.waiting();
            for output in outputs {
                match output {
                    Output::Join(token, response) => {
                        if let Some((_, Waiting::Join(tx))) = waiting.remove(&token) {
                            let _ = tx.send(response);
                        }
                    }
                    Output::Sync(token, response) => {
                        if let Some((_, Waiting::Sync(tx))) = waiting.remove(&token) {
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
    pub fn append(&self, broker: &Broker, records: &[GroupRecord]) -> Result<Waits, ErrorCode> {
        self.append_as(broker, records, BatchProducer::NONE)
    }

    /// Appends offsets of `group_id` committed inside a transaction (a transactional batch
    /// from the producer) and keeps them pending in the group's shard until the transaction
    /// ends; both under the shard lock, so no marker comes between them.
    pub fn append_txn(
        &self,
        broker: &Broker,
        group_id: &str,
        records: Vec<GroupRecord>,
        producer_id: i64,
        producer_epoch: i16,
    ) -> Result<Waits, ErrorCode> {
        self.with(group_id, |shard| {
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
            shard.add_txn_offsets(producer_id, records);
            Ok(waits)
        })?
    }

    /// A transaction marker of `producer_id` was written to `__consumer_offsets` partition
    /// `partition`, its batch ending before `end_offset`: on commit, its pending offsets apply
    /// once the marker is durable ([`Self::settle`]); on abort they vanish.
    pub fn complete_txn(&self, producer_id: i64, commit: bool, partition: i32, end_offset: i64) {
        let _ = self.with_partition(partition, |shard| {
            shard.complete_txn(producer_id, commit, end_offset)
        });
    }

    /// Applies the commits staged for a `__consumer_offsets` partition that its high
    /// watermark now covers (they become visible to OffsetFetch).
    pub fn settle(&self, partition: &Partition) {
        let hw = partition.high_watermark();
        let _ = self.with_partition(partition.index, |shard| {
            shard.classic.durable(now_ms(), partition.index, hw)
        });
    }

    /// Waits until `waits` are durable (or `timeout`), then settles the staged commits of
    /// the `__consumer_offsets` partitions among them, whatever the outcome: what became
    /// durable applies.
    pub async fn wait_and_settle(&self, waits: Waits, timeout: Duration) -> Result<(), ErrorCode> {
        let offsets: Vec<Arc<Partition>> = waits
            .iter()
            .filter(|w| w.partition.topic == OFFSETS_TOPIC)
            .map(|w| w.partition.clone())
            .collect();
        let durable = wait_durable(waits, timeout).await;
        for p in offsets {
            self.settle(&p);
        }
        durable
    }

    fn append_as(
        &self,
        broker: &Broker,
        records: &[GroupRecord],
        producer: BatchProducer,
    ) -> Result<Waits, ErrorCode> {
        let now = now_ms();
        let keyed = records
            .iter()
            .map(|r| {
                let (key, value) = r.encode();
                (
                    self.partition_for(r.group()),
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

    /// Builds the shard of `__consumer_offsets` partition `partition` from that partition's
    /// records and starts answering for its groups (this node became the partition's
    /// leader). Loading a loaded shard does nothing. Offsets of transactions still open wait
    /// for their markers.
    pub fn load_partition(&self, broker: &Broker, image: &MetadataImage, partition: i32) {
        self.shards.load(partition, || {
            let now = now_ms();
            let mut shard = GroupShard::new(partition, self.group_config, self.consumer_config);
            let mut loaded = 0usize;
            replay_partition(broker, image, OFFSETS_TOPIC, partition, |r| {
                let entry = if r.control {
                    // A transaction marker: key = version i16, type i16 (1 = commit).
                    let commit = r
                        .key
                        .as_ref()
                        .is_some_and(|k| k.len() >= 4 && k[2..4] == [0, 1]);
                    Replayed::Marker {
                        producer_id: r.producer_id,
                        commit,
                    }
                } else {
                    let Some(key) = r.key else { return };
                    match GroupRecord::decode(&key, r.value.as_deref()) {
                        Ok(record) if r.transactional => Replayed::Transactional {
                            producer_id: r.producer_id,
                            record,
                        },
                        Ok(record) => Replayed::Record(record),
                        Err(e) => {
                            tracing::warn!(partition, offset = r.offset, error = ?e, "skipping an unreadable group record");
                            return;
                        }
                    }
                };
                if shard.replay(now, entry) {
                    loaded += 1;
                }
            });
            tracing::debug!(
                partition,
                records = loaded,
                groups = shard.classic.list().len(),
                "loaded a group coordinator shard"
            );
            shard
        });
    }

    /// Drops the shard of `partition` (this node no longer leads it): its groups answer
    /// NOT_COORDINATOR from now on, and their members rejoin wherever the new leader is.
    /// Requests waiting in a rebalance of its groups end with COORDINATOR_NOT_AVAILABLE.
    pub fn unload_partition(&self, partition: i32) {
        self.shards.unload(partition);
        self.waiting().retain(|_, (p, _)| *p != partition);
    }

    /// Runs the shards' timers every 100 ms while the broker lives.
    pub fn start_ticker(broker: &Arc<Broker>) {
        let weak = Arc::downgrade(broker);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let Some(broker) = weak.upgrade() else { return };
                let svc = &broker.groups;
                // Built only if a shard has KIP-848 groups (most ticks of most brokers: none).
                let topics = std::cell::OnceCell::new();
                let image = broker.image();
                let offsets = image.topic_by_name(OFFSETS_TOPIC);
                for p in 0..svc.offsets_partitions {
                    let staged = svc.with_partition(p, |shard| {
                        let now = now_ms();
                        let outputs = shard.classic.tick(now);
                        if !outputs.is_empty() {
                            svc.dispatch(&broker, outputs);
                        }
                        if !shard.consumer.groups.is_empty() {
                            let topics = topics.get_or_init(|| subscribable_topics(&broker));
                            shard.consumer.tick(now, topics);
                        }
                        !shard.classic.staged_partitions().is_empty()
                    });
                    // Commits whose own waiter gave up (timeout) apply once durable anyway,
                    // as their records are in the log and a restart would replay them.
                    if let (Ok(true), Some(topic)) = (staged, &offsets) {
                        if let Some(partition) = broker.partitions.get(&topic.topic_id, p) {
                            svc.settle(&partition);
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
) -> Result<Waits, ErrorCode> {
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
        waits.push(HwWait::new(partition, &info));
    }
    Ok(waits)
}

/// Calls `f(record)` for every record of one partition of an internal topic, from the log
/// start to the high watermark, in log order (loading a coordinator). An undecodable batch
/// ends the replay, with an error logged.
pub fn replay_partition(
    broker: &Broker,
    image: &MetadataImage,
    name: &str,
    p: i32,
    mut f: impl FnMut(Record),
) {
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

/// Waits until every partition's high watermark passes its offset, or `timeout`. An append
/// whose partition was deleted, went offline or changed leader epoch meanwhile is not
/// durable here: COORDINATOR_NOT_AVAILABLE (the coordinator's clients retry, finding the
/// coordinator again after an epoch change).
pub async fn wait_durable(waits: Waits, timeout: Duration) -> Result<(), ErrorCode> {
    let deadline = tokio::time::Instant::now() + timeout;
    for w in waits {
        match tokio::time::timeout_at(deadline, w.wait()).await {
            Ok(Ok(())) => {}
            Ok(Err(HwWaitError::Deleted | HwWaitError::Offline | HwWaitError::EpochChanged)) => {
                return Err(ErrorCode::CoordinatorNotAvailable)
            }
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

#[cfg(test)]
mod tests {
    use strata_coordinator::CommittedOffset;

    use super::*;

    fn offset(group: &str, value: i64) -> GroupRecord {
        GroupRecord::Offset {
            group: group.to_string(),
            topic: "t".to_string(),
            partition: 0,
            value: Some(CommittedOffset {
                offset: value,
                leader_epoch: -1,
                metadata: String::new(),
                commit_ms: now_ms(),
                end_offset: None,
            }),
        }
    }

    /// Commits `value` for `group` as OffsetCommit does: appended and staged under the shard
    /// lock, settled once durable.
    async fn commit(broker: &Arc<Broker>, group: &str, value: i64) -> Result<(), ErrorCode> {
        let svc = &broker.groups;
        let records = vec![offset(group, value)];
        let waits = svc.with(group, |shard| {
            let waits = svc.append(broker, &records)?;
            for w in &waits {
                shard
                    .classic
                    .stage(w.partition.index, w.offset, records.clone());
            }
            Ok(waits)
        })??;
        svc.wait_and_settle(waits, WRITE_TIMEOUT).await
    }

    fn committed(broker: &Broker, group: &str) -> Result<Option<i64>, ErrorCode> {
        broker.groups.with(group, |shard| {
            shard
                .classic
                .offsets(group)
                .and_then(|o| o.get(&("t".to_string(), 0)))
                .map(|o| o.offset)
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shards_load_and_unload_from_their_own_partition() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker =
            crate::broker::open_for_test(dir.path(), &[("offsets.topic.num.partitions", "4")]);
        let svc = &broker.groups;
        // Before the topic exists no group has state, and nothing is refused as misrouted.
        assert_eq!(committed(&broker, "a"), Ok(None));
        crate::handlers::groups::ensure_offsets_topic(&broker)
            .await
            .expect("topic");
        let a = "a";
        let b = (0..100)
            .map(|i| format!("b{i}"))
            .find(|id| svc.partition_for(id) != svc.partition_for(a))
            .expect("a group in another partition");
        commit(&broker, a, 5).await.expect("commit a");
        commit(&broker, &b, 7).await.expect("commit b");
        // An offset of a committed inside a transaction that has not ended.
        let waits = svc
            .append_txn(&broker, a, vec![offset(a, 9)], 42, 0)
            .expect("txn commit");
        wait_durable(waits, WRITE_TIMEOUT).await.expect("durable");
        // Shards are locked apart: working in b's shard while a's is held does not wait.
        let nested = svc.with(a, |_| svc.with(&b, |shard| shard.partition));
        assert_eq!(nested, Ok(Ok(svc.partition_for(&b))));
        // A JoinGroup of a waiting in a rebalance ends when a's shard goes.
        let (_token, rx) = svc.wait_join(a);
        svc.unload_partition(svc.partition_for(a));
        assert!(rx.await.is_err(), "the waiting join is dropped");
        assert_eq!(committed(&broker, a), Err(ErrorCode::NotCoordinator));
        assert_eq!(commit(&broker, a, 6).await, Err(ErrorCode::NotCoordinator));
        assert_eq!(committed(&broker, &b), Ok(Some(7)));
        let mut listed = Vec::new();
        svc.for_each_shard(|shard| listed.extend(shard.classic.list()));
        assert!(listed.iter().all(|(id, _, _)| id != a));
        assert!(listed.iter().any(|(id, _, _)| id == &b));
        // Loading it again rebuilds a's groups from its partition's records alone; the open
        // transaction's offset still waits for its marker.
        svc.load_partition(&broker, &broker.image(), svc.partition_for(a));
        assert_eq!(committed(&broker, a), Ok(Some(5)));
        assert_eq!(
            svc.with(a, |shard| shard.has_unsettled_offset(a, "t", 0)),
            Ok(true)
        );
        commit(&broker, a, 6).await.expect("commit a again");
        assert_eq!(committed(&broker, a), Ok(Some(6)));
    }
}
