//! Followers fetch from their leaders (`docs/design/cluster.md` §4.2).
//!
//! One task per leader broker fetches every partition this node follows from it, over one
//! connection to the leader's inter-broker listener: Fetch with this node's replica id, each
//! partition from its log end with the epoch of its last batch (`last_fetched_epoch`).
//! There is no separate truncation step: the leader checks every fetch against its epoch
//! cache and answers `diverging_epoch` when the follower's log went another way (records of
//! a deposed leader); the follower cuts its log there and fetches again (Kafka's truncation
//! on fetch, KIP-595).
//!
//! ```text
//!   fetch(offset = log end, last_fetched_epoch) ──> leader
//!        <── records | diverging_epoch | error
//!   append_replicated (offsets and epochs kept, producer state, .txnindex)
//!   fsync (with strata.fsync.before.ack)   <- the next fetch offset claims durability
//!   HW = min(leader's HW, own durable end); log start follows the leader's
//! ```
//!
//! With `strata.fsync.before.ack=true` a follower fsyncs what it appended before it sends its
//! next fetch, so the fetch offset the leader counts toward the high watermark is durable on
//! the follower: an acknowledged write is on stable storage on every ISR member.
//!
//! The set of followed partitions is kept in step with the partitions' roles by
//! [`ReplicaFetchers::update`], called by the metadata publisher after each change; a task
//! whose leader no longer leads anything here ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ReplicaState};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use strata_client::conn::Connection;
use strata_protocol::ErrorCode;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::broker::Broker;
use crate::manager::PartitionKey;
use crate::partition::{now_ms, Partition};

/// A partition this node follows: from `leader`, in `leader_epoch`.
#[derive(Clone)]
struct Follow {
    partition: Arc<Partition>,
    leader: i32,
    leader_epoch: i32,
}

#[derive(Default)]
struct State {
    follows: HashMap<PartitionKey, Follow>,
    /// The running task of each leader, and how to wake it when its partitions change.
    tasks: HashMap<i32, Arc<Notify>>,
}

/// The follower side of replication on this broker.
pub struct ReplicaFetchers {
    broker: Weak<Broker>,
    state: Arc<Mutex<State>>,
}

/// Fetch settings, from Kafka's `replica.fetch.*` keys.
#[derive(Clone, Copy)]
struct Settings {
    max_wait_ms: i32,
    min_bytes: i32,
    max_bytes: i32,
    partition_max_bytes: i32,
    backoff: Duration,
}

impl Settings {
    fn of(broker: &Broker) -> Settings {
        let c = &broker.config;
        Settings {
            max_wait_ms: c.parsed("replica.fetch.wait.max.ms").unwrap_or(500),
            min_bytes: c.parsed("replica.fetch.min.bytes").unwrap_or(1),
            max_bytes: c
                .parsed("replica.fetch.response.max.bytes")
                .unwrap_or(10 << 20),
            partition_max_bytes: c.parsed("replica.fetch.max.bytes").unwrap_or(1 << 20),
            backoff: Duration::from_millis(c.parsed("replica.fetch.backoff.ms").unwrap_or(1000)),
        }
    }
}

/// The Fetch version sent: replica state and topic ids (Kafka 3.5+ and Strata).
const FETCH_VERSION: i16 = 15;

impl ReplicaFetchers {
    pub fn new(broker: Weak<Broker>) -> ReplicaFetchers {
        ReplicaFetchers {
            broker,
            state: Arc::default(),
        }
    }

    /// Follows each of `partitions` this node is a follower of (from its current leader and
    /// epoch), and stops following the others. Starts a leader's task when it gets its first
    /// partition; a task ends by itself once it has none. Needs a tokio runtime.
    pub fn update(&self, partitions: impl IntoIterator<Item = Arc<Partition>>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut woken = Vec::new();
        // Deleted partitions leave the manager without passing here.
        state.follows.retain(|_, f| {
            let keep = !f.partition.is_deleted();
            if !keep {
                woken.push(f.leader);
            }
            keep
        });
        for partition in partitions {
            let key = (partition.topic_id, partition.index);
            let follow = partition
                .followed_leader()
                .filter(|_| !partition.is_deleted());
            let previous = match follow {
                Some((leader, leader_epoch)) => state.follows.insert(
                    key,
                    Follow {
                        partition,
                        leader,
                        leader_epoch,
                    },
                ),
                None => state.follows.remove(&key),
            };
            woken.extend(previous.map(|f| f.leader));
            woken.extend(follow.map(|(leader, _)| leader));
        }
        woken.sort_unstable();
        woken.dedup();
        for leader in woken {
            let has_partitions = state.follows.values().any(|f| f.leader == leader);
            match state.tasks.get(&leader) {
                Some(notify) => notify.notify_one(),
                None if has_partitions => {
                    let notify = Arc::new(Notify::new());
                    state.tasks.insert(leader, notify.clone());
                    let task = FetchTask {
                        broker: self.broker.clone(),
                        state: self.state.clone(),
                        leader,
                        notify,
                    };
                    tokio::spawn(task.run());
                }
                None => {}
            }
        }
    }
}

struct FetchTask {
    broker: Weak<Broker>,
    state: Arc<Mutex<State>>,
    leader: i32,
    notify: Arc<Notify>,
}

impl FetchTask {
    /// This leader's partitions, or `None` (and the task forgotten) when there are none.
    fn partitions(&self) -> Option<Vec<Follow>> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let follows: Vec<Follow> = state
            .follows
            .values()
            .filter(|f| f.leader == self.leader)
            .cloned()
            .collect();
        if follows.is_empty() {
            state.tasks.remove(&self.leader);
            return None;
        }
        Some(follows)
    }

    async fn run(self) {
        let mut connection: Option<Connection> = None;
        // Partitions the leader refused, and when to ask again.
        let mut delayed: HashMap<PartitionKey, Instant> = HashMap::new();
        let mut backoff = false;
        let mut gated = false;
        loop {
            let Some(follows) = self.partitions() else {
                return;
            };
            let Some(broker) = self.broker.upgrade() else {
                return;
            };
            let settings = Settings::of(&broker);
            if fetch_gate_holds(&broker) {
                if !gated {
                    gated = true;
                    tracing::info!(
                        leader = self.leader,
                        "test knob: fetch gate closed; not fetching"
                    );
                }
                drop(broker);
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            gated = false;
            if backoff {
                drop(broker);
                backoff = false;
                let _ = tokio::time::timeout(settings.backoff, self.notify.notified()).await;
                continue;
            }
            let now = Instant::now();
            delayed.retain(|_, until| *until > now);
            let ready: Vec<Follow> = follows
                .into_iter()
                .filter(|f| !delayed.contains_key(&(f.partition.topic_id, f.partition.index)))
                .collect();
            if ready.is_empty() {
                drop(broker);
                let next = delayed.values().min().copied().unwrap_or(now);
                let _ = tokio::time::timeout_at(next, self.notify.notified()).await;
                continue;
            }
            if connection.as_ref().is_none_or(|c| c.is_closed()) {
                let image = broker.image();
                let Some(address) = crate::inter_broker::endpoint_of(&broker, &image, self.leader)
                else {
                    // Fenced or not registered: the metadata will move the partitions.
                    backoff = true;
                    continue;
                };
                let client_id = format!("strata-replica-fetcher-{}", broker.node_id());
                let security = broker.inter_broker_security.clone();
                drop(broker);
                match Connection::open(
                    &address,
                    &client_id,
                    Duration::from_secs(5),
                    Duration::from_secs(30),
                    &security,
                )
                .await
                {
                    Ok(c) => connection = Some(c),
                    Err(error) => {
                        tracing::info!(leader = self.leader, %address, %error, "cannot reach the partitions' leader; retrying");
                        backoff = true;
                    }
                }
                continue;
            }
            let conn = connection.as_ref().expect("opened above");
            let version = match conn.version::<FetchRequest>(FETCH_VERSION) {
                Ok(v) if v >= 13 => v,
                _ => {
                    tracing::error!(
                        leader = self.leader,
                        "the leader does not serve Fetch v13 or later"
                    );
                    connection = None;
                    backoff = true;
                    continue;
                }
            };
            let request = fetch_request(broker.node_id(), &ready, settings, version);
            drop(broker);
            // The leader holds the fetch up to max_wait; allow for that and a slow answer.
            let timeout =
                Duration::from_millis(settings.max_wait_ms.max(0) as u64) + Duration::from_secs(30);
            let response = match conn.start(version, &request).await {
                Ok(reply) => reply.wait_within(timeout).await,
                Err(e) => Err(e),
            };
            let response = match response {
                Ok(r) => r,
                Err(error) => {
                    tracing::info!(leader = self.leader, %error, "fetch from the partitions' leader failed; reconnecting");
                    connection = None;
                    backoff = true;
                    continue;
                }
            };
            if response.error_code != 0 {
                tracing::info!(
                    leader = self.leader,
                    error_code = response.error_code,
                    "the leader refused a fetch"
                );
                backoff = true;
                continue;
            }
            let refused = tokio::task::spawn_blocking(move || apply_response(&ready, response))
                .await
                .unwrap_or_default();
            let until = Instant::now() + settings.backoff;
            for key in refused {
                delayed.insert(key, until);
            }
        }
    }
}

/// Test knob `strata.test.replica.fetch.gate.file` (a path, relative to the data directory
/// unless absolute): while that file exists this node's followers fetch nothing, so a leader
/// can take writes its followers never get (how the end-to-end tests make a leader's log
/// diverge). Off unless set.
fn fetch_gate_holds(broker: &Broker) -> bool {
    broker
        .config
        .set
        .get("strata.test.replica.fetch.gate.file")
        .is_some_and(|file| broker.config.data_dir.join(file).exists())
}

fn fetch_request(node: i32, follows: &[Follow], settings: Settings, version: i16) -> FetchRequest {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for f in follows {
        let p = &f.partition;
        let partition = FetchPartition::default()
            .with_partition(p.index)
            .with_current_leader_epoch(f.leader_epoch)
            .with_fetch_offset(p.log_end_offset())
            .with_last_fetched_epoch(p.latest_epoch())
            .with_log_start_offset(p.log_start_offset())
            .with_partition_max_bytes(settings.partition_max_bytes);
        match topics.iter_mut().find(|t| t.topic_id == p.topic_id) {
            Some(t) => t.partitions.push(partition),
            None => topics.push(
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(p.topic.clone())))
                    .with_topic_id(p.topic_id)
                    .with_partitions(vec![partition]),
            ),
        }
    }
    let request = FetchRequest::default()
        .with_max_wait_ms(settings.max_wait_ms)
        .with_min_bytes(settings.min_bytes)
        .with_max_bytes(settings.max_bytes)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics);
    if version >= 15 {
        request.with_replica_state(
            ReplicaState::default()
                .with_replica_id(BrokerId(node))
                .with_replica_epoch(-1),
        )
    } else {
        request.with_replica_id(BrokerId(node))
    }
}

/// Applies a leader's answer to the partitions fetched: appends, fsyncs (with fsync before
/// ack), cuts diverged logs, takes the leader's HW and log start. Returns the partitions the
/// leader refused, to ask again after a back-off. Blocking.
fn apply_response(follows: &[Follow], response: FetchResponse) -> Vec<PartitionKey> {
    let mut refused = Vec::new();
    let mut appended: Vec<(&Follow, i64, i64)> = Vec::new();
    let now = now_ms();
    for topic in &response.responses {
        for data in &topic.partitions {
            let Some(f) = follows.iter().find(|f| {
                f.partition.topic_id == topic.topic_id && f.partition.index == data.partition_index
            }) else {
                continue;
            };
            let p = &f.partition;
            let key = (p.topic_id, p.index);
            // The role moved on while the fetch was out: its answer is of no use.
            if p.followed_leader() != Some((f.leader, f.leader_epoch)) {
                continue;
            }
            if data.error_code != 0 {
                let code = ErrorCode::try_from_code(data.error_code);
                tracing::debug!(topic = %p.topic, partition = p.index, leader = f.leader, error = ?code, "the leader refused a partition's fetch");
                if code == Some(ErrorCode::OffsetOutOfRange) {
                    // Our log end is outside the leader's log: above it, our tail was never
                    // the leader's (cut back to the HW, which every replica agrees on);
                    // below its start, the leader no longer has what we miss.
                    let end = p.log_end_offset();
                    if end > p.high_watermark() {
                        tracing::warn!(topic = %p.topic, partition = p.index, end, high_watermark = p.high_watermark(), "the leader's log does not reach this replica's end; cutting back to the high watermark");
                        let _ = p.truncate_to(p.high_watermark());
                        continue;
                    }
                    tracing::error!(topic = %p.topic, partition = p.index, end, leader_log_start = data.log_start_offset, "the leader no longer holds the records this replica misses");
                }
                refused.push(key);
                continue;
            }
            let diverging = &data.diverging_epoch;
            if diverging.epoch >= 0 || diverging.end_offset >= 0 {
                let to = truncation_point(p, diverging.epoch, diverging.end_offset);
                tracing::info!(topic = %p.topic, partition = p.index, leader = f.leader, epoch = diverging.epoch, leader_end = diverging.end_offset, to, "this replica's log diverged from the leader's; cutting it");
                if let Err(code) = p.truncate_to(to) {
                    tracing::error!(topic = %p.topic, partition = p.index, error = ?code, "cannot cut the diverged log");
                    refused.push(key);
                }
                continue;
            }
            if let Some(records) = data.records.as_ref().filter(|r| !r.is_empty()) {
                // Only whole batches are appended; a fetch answer may end in a partial one.
                let whole = whole_batches(records);
                if whole > 0 {
                    if let Err(code) = p.append_replicated(&records[..whole], now) {
                        tracing::warn!(topic = %p.topic, partition = p.index, error = ?code, "cannot append replicated records");
                        refused.push(key);
                        continue;
                    }
                }
            }
            appended.push((f, data.high_watermark, data.log_start_offset));
        }
    }
    // The next fetch offset claims durability: fsync what was appended first.
    for (f, hw, log_start) in appended {
        let p = &f.partition;
        if p.fsync_before_ack() && !crate::flusher::flush_now(p) {
            refused.push((p.topic_id, p.index));
            continue;
        }
        p.follow_leader(hw, log_start);
    }
    refused
}

/// Where a follower cuts its log when the leader says it diverged: the leader's last epoch at
/// or below ours is `leader_epoch` and ends at `leader_end` (Kafka's rules). If we hold that
/// epoch, the logs agree up to the earlier of its two ends; if not, we cut after our own last
/// epoch below it and the next fetch checks again from there; if we hold nothing that old,
/// at the leader's end. Unknown to the leader (-1): our high watermark.
pub(crate) fn truncation_point(p: &Partition, leader_epoch: i32, leader_end: i64) -> i64 {
    let end = p.log_end_offset();
    if leader_epoch < 0 || leader_end < 0 {
        return p.high_watermark().min(end);
    }
    match p.end_offset_for_epoch(leader_epoch) {
        Ok((ours, our_end)) if ours == leader_epoch => leader_end.min(our_end).min(end),
        Ok((ours, our_end)) if ours >= 0 => our_end.min(end),
        _ => leader_end.min(end),
    }
}

/// The length of the whole batches at the start of `records`.
fn whole_batches(records: &[u8]) -> usize {
    let mut batches = strata_protocol::batch::iter_batches(records);
    for item in batches.by_ref() {
        if item.is_err() {
            break;
        }
    }
    batches.position()
}

#[cfg(test)]
mod tests {
    use kafka_protocol::records::Compression;
    use strata_log::Marker;
    use strata_protocol::records::{encode_batch_as, BatchProducer, PlainRecord};

    use super::*;
    use crate::partition::test_replica;

    fn batch(value: &[u8], producer: BatchProducer) -> bytes::Bytes {
        encode_batch_as(
            &[PlainRecord::new(Some(b"k"), Some(value), 1)],
            Compression::None,
            producer,
        )
        .expect("encode")
    }

    fn append(p: &Partition, value: &[u8], producer: BatchProducer) {
        p.append_internal(&batch(value, producer), 0)
            .expect("append");
        assert!(crate::flusher::flush_now(p));
    }

    /// One fetch round of `follower` (node `id`) from `leader`, as the fetcher and the fetch
    /// handler do it: a divergence check, then records up to the leader's log end, appended,
    /// fsynced, and the follower's position counted by the leader.
    fn fetch_round(leader: &Partition, follower: &Partition, id: i32) {
        let offset = follower.log_end_offset();
        if let Some((epoch, end)) = leader.divergence(follower.latest_epoch(), offset) {
            let to = truncation_point(follower, epoch, end);
            follower.truncate_to(to).expect("truncate");
            return;
        }
        leader.on_follower_fetch(id, offset);
        let read = leader.read_for_replica(offset, 1 << 20).expect("read");
        if !read.records.is_empty() {
            follower
                .append_replicated(&read.records, 0)
                .expect("append replicated");
            assert!(crate::flusher::flush_now(follower));
        }
        follower.follow_leader(read.high_watermark, read.log_start_offset);
    }

    fn log_bytes(p: &Partition) -> Vec<u8> {
        let read = p
            .read_for_replica(p.log_start_offset(), 1 << 30)
            .expect("read");
        read.records.to_vec()
    }

    #[test]
    fn followers_copy_the_log_producer_state_and_aborted_transactions() {
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let leader = test_replica(dirs[0].path(), 1, 1, 3, &[1, 2]);
        let follower = test_replica(dirs[1].path(), 2, 1, 3, &[1, 2]);
        let idempotent = BatchProducer {
            producer_id: 7,
            producer_epoch: 0,
            base_sequence: 0,
            transactional: false,
            control: false,
        };
        let transactional = BatchProducer {
            producer_id: 8,
            producer_epoch: 0,
            base_sequence: 0,
            transactional: true,
            control: false,
        };
        append(&leader, b"plain", BatchProducer::NONE);
        append(&leader, b"idem", idempotent);
        append(&leader, b"txn", transactional);
        leader
            .append_marker(8, 0, Marker::Abort, 0, 0)
            .expect("marker");
        assert!(crate::flusher::flush_now(&leader));
        assert_eq!(leader.high_watermark(), 0, "the follower holds it back");

        fetch_round(&leader, &follower, 2);
        assert_eq!(follower.log_end_offset(), 4);
        assert_eq!(
            leader.high_watermark(),
            0,
            "the follower has not claimed 4 yet"
        );
        fetch_round(&leader, &follower, 2);
        assert_eq!(
            leader.high_watermark(),
            4,
            "the follower's fetch offset counts"
        );
        assert_eq!(follower.high_watermark(), 4, "learnt from the leader");
        assert_eq!(log_bytes(&leader), log_bytes(&follower));
        assert_eq!(
            follower.leader_epochs(),
            vec![(3, 0)],
            "the leader's stamps"
        );

        // The follower becomes leader: it knows the producers and the aborted transaction.
        follower.assign(2, 2, 4, &[2]);
        let mut producers: Vec<i64> = follower
            .producer_entries()
            .iter()
            .map(|e| e.producer_id)
            .collect();
        producers.sort_unstable();
        assert_eq!(producers, vec![7, 8]);
        let retried = batch(b"idem", idempotent);
        let headers: Vec<_> = strata_protocol::batch::iter_batches(&retried)
            .map(|b| b.expect("batch").0)
            .collect();
        let again = follower
            .append(&retried, &headers, 1, 0)
            .expect("a retried batch");
        assert!(
            matches!(
                again,
                crate::partition::Appended::Duplicate { base_offset: 1, .. }
            ),
            "{again:?}"
        );
        let committed = follower
            .read_isolated(0, 1 << 20, true)
            .expect("read_committed");
        assert_eq!(
            committed.aborted.len(),
            1,
            "the aborted transaction is indexed"
        );
        assert_eq!(committed.aborted[0].producer_id, 8);
    }

    #[test]
    fn a_deposed_leader_cuts_what_the_new_leader_never_had() {
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let a = test_replica(dirs[0].path(), 1, 1, 1, &[1, 2]);
        let b = test_replica(dirs[1].path(), 2, 1, 1, &[1, 2]);
        for i in 0..3 {
            append(&a, format!("agreed{i}").as_bytes(), BatchProducer::NONE);
        }
        fetch_round(&a, &b, 2);
        fetch_round(&a, &b, 2);
        assert_eq!(a.high_watermark(), 3);
        // Two acks=1 writes that never reach b; then b leads in epoch 2 and takes others.
        append(&a, b"lost1", BatchProducer::NONE);
        append(&a, b"lost2", BatchProducer::NONE);
        b.assign(2, 2, 2, &[2, 1]);
        a.assign(1, 2, 2, &[2, 1]);
        for i in 0..4 {
            append(&b, format!("new{i}").as_bytes(), BatchProducer::NONE);
        }
        assert_eq!(a.latest_epoch(), 1);
        // a's first fetch is told it diverged: epoch 1 ends at 3 on b.
        assert_eq!(b.divergence(1, 5), Some((1, 3)));
        fetch_round(&b, &a, 1);
        assert_eq!(a.log_end_offset(), 3, "cut back to where the logs agree");
        for _ in 0..3 {
            fetch_round(&b, &a, 1);
        }
        assert_eq!(a.log_end_offset(), 7);
        assert_eq!(log_bytes(&a), log_bytes(&b), "byte for byte");
        assert_eq!(a.leader_epochs(), b.leader_epochs());
        assert_eq!(b.high_watermark(), 7);
        assert_eq!(a.high_watermark(), 7);
    }
}
