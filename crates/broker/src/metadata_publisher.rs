//! The one door through which metadata reaches the broker (`docs/design/cluster.md` §2.8).
//!
//! ```text
//!  metadata state machine ──Published { offset, image, delta }──▶ queue (bounded)
//!                                                                      │ one task, in
//!                                                                      ▼ offset order
//!   1. PartitionManager::apply  (open / update / delete the partitions the delta names)
//!   2. coordinator shards       (load where this node now leads an internal partition,
//!                                unload where it no longer does)
//!   3. authorizer, quotas, Broker::image ← the new image
//!   4. applied_offset ← offset  (wait_applied callers wake)
//! ```
//!
//! Items queued while one is being applied are folded into one (their deltas merged, the
//! newest image kept), so a burst of changes costs one application. Every step works from the
//! delta: a change to one partition costs one partition's work however many the broker holds.
//! The full reconcile (`PartitionManager::sync`, [`load_coordinators_at_start`]) runs only at
//! start-up, and for partitions that could not be opened.
//!
//! Ordering is the point: [`crate::Broker::submit`] answers an operation only once the
//! publisher has applied the offset the controller answered with
//! ([`MetadataPublisher::wait_applied`]), so a CreateTopics followed by a Metadata request on
//! the same connection sees the topic with its partitions open, and a coordinator request
//! after the creation of an internal topic finds its shards loaded. Shards are loaded before
//! the image is published, so no request sees an internal topic whose shards are not loaded.
//!
//! The metadata state machine (`strata_quorum::raft::state_machine`) hands over every image it
//! applies, once [`MetadataPublisher::attach`] connected them. This module never plans or
//! commits metadata (the controller does) and never reads the metadata log: it only acts on
//! what it is handed.

use std::sync::{Arc, Weak};

use strata_quorum::raft::state_machine::{MachineHandle, Published};
use strata_quorum::{MetadataDelta, MetadataImage};
use tokio::sync::{mpsc, watch};

use crate::broker::Broker;
use crate::controller::ControllerError;
use crate::groups::OFFSETS_TOPIC;
use crate::txn::TXN_TOPIC;

/// Changes queued at most. The state machine waits when the publisher is this far behind,
/// which slows metadata changes instead of letting them pile up.
const QUEUE_CAPACITY: usize = 256;

/// Folds `later` into `update`: the newer image, both deltas.
fn absorb(update: &mut Published, later: Published) {
    debug_assert!(
        later.offset >= update.offset,
        "updates arrive in offset order"
    );
    update.offset = later.offset;
    update.image = later.image;
    update.delta.merge(later.delta);
}

/// The queue in front of the publishing task, and the offset it has applied.
pub struct MetadataPublisher {
    queue: mpsc::Sender<Published>,
    applied: watch::Receiver<u64>,
}

impl MetadataPublisher {
    /// Starts the publishing task on the current tokio runtime for `broker`, which already
    /// serves the image at `offset` (reconciled in full at start-up). The task ends when
    /// every handle to the queue is gone or the broker is dropped.
    pub fn start(broker: Weak<Broker>, offset: u64) -> Self {
        let (queue, pending) = mpsc::channel(QUEUE_CAPACITY);
        let (applied_tx, applied) = watch::channel(offset);
        tokio::spawn(run(pending, applied_tx, broker));
        MetadataPublisher { queue, applied }
    }

    /// From now on the metadata state machine hands every image it applies to this
    /// publisher (at once, if it is already past the image the broker serves).
    pub fn attach(&self, machine: &MachineHandle) {
        machine.attach(self.queue.clone(), self.applied_offset());
    }

    /// The offset of the newest image the broker serves.
    pub fn applied_offset(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Waits until the broker serves the image at `offset` or a newer one.
    pub async fn wait_applied(&self, offset: u64) -> Result<(), ControllerError> {
        let mut applied = self.applied.clone();
        applied
            .wait_for(|applied| *applied >= offset)
            .await
            .map(|_| ())
            .map_err(|_| ControllerError::Unavailable("the metadata publisher has stopped".into()))
    }
}

/// Applies queued changes in order until the queue closes or the broker is gone.
async fn run(
    mut pending: mpsc::Receiver<Published>,
    applied: watch::Sender<u64>,
    broker: Weak<Broker>,
) {
    while let Some(mut update) = pending.recv().await {
        // Bounded by the queue's capacity.
        while let Ok(later) = pending.try_recv() {
            absorb(&mut update, later);
        }
        let Some(broker) = broker.upgrade() else {
            tracing::debug!("the broker is gone; the metadata publisher stops");
            return;
        };
        let offset = update.offset;
        let done = tokio::task::spawn_blocking(move || {
            apply(&broker, update.image, &update.delta);
        })
        .await;
        if let Err(error) = done {
            // A bug: what was applied is unknown, so nothing is claimed applied; waiting
            // operations fail and later ones are refused.
            tracing::error!(%error, offset, "applying metadata failed; the broker no longer follows metadata changes");
            return;
        }
        applied.send_if_modified(|current| {
            let newer = offset > *current;
            *current = (*current).max(offset);
            newer
        });
    }
}

/// Makes the broker serve `image`, acting on what `delta` says changed. Blocking (opens
/// partition logs, replays coordinator partitions).
fn apply(broker: &Arc<Broker>, image: Arc<MetadataImage>, delta: &MetadataDelta) {
    // Under the partition lock so that a retry of unopened partitions never overlaps, and
    // sees this image once it gets the lock.
    let _sync = broker
        .partition_sync
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    // The change is durable whether or not its partitions open: one that cannot is logged,
    // answers KAFKA_STORAGE_ERROR and is retried by the maintenance task (a topic that was
    // created is reported created).
    if let Err(error) = broker.partitions.apply(&image, delta, &broker.config) {
        tracing::error!(%error, "a committed metadata change left partitions that could not be opened");
    }
    // Followers fetch from the leaders the change gave them.
    if delta.reset {
        broker.replica_fetchers.update(broker.partitions.all());
    } else {
        broker.replica_fetchers.update(
            delta
                .partitions
                .iter()
                .filter_map(|(topic, index)| broker.partitions.get(topic, *index)),
        );
    }
    apply_to_coordinators(broker, &image, delta);
    // Both compare pointers first: a few nanoseconds when their part did not change.
    broker.authorizer.update(&image);
    broker.quotas.update(&image);
    broker.set_image(image);
}

/// A new leader of an internal partition whose HW is below its log end: its log is what
/// every replica will hold (a leader never truncates), but the records above the HW are not
/// committed yet, and a coordinator must not answer from them. Returns the partition to wait
/// for, or `None` to load at once (a single node: the HW is its durable end).
fn behind_high_watermark(
    broker: &Broker,
    image: &MetadataImage,
    name: &str,
    p: i32,
) -> Option<Arc<crate::partition::Partition>> {
    let topic = image.topic_by_name(name)?;
    let partition = broker.partitions.get(&topic.topic_id, p)?;
    (partition.is_leader() && partition.high_watermark() < partition.log_end_offset())
        .then_some(partition)
}

/// Loads the shard of internal partition `p` once its HW reaches its log end as it is now
/// (one fetch round of the ISR), if this node still leads it in the same epoch; meanwhile
/// its keys answer NOT_COORDINATOR and clients retry.
fn load_when_committed(
    broker: &Arc<Broker>,
    name: &'static str,
    p: i32,
    partition: Arc<crate::partition::Partition>,
) {
    let target = partition.log_end_offset();
    let epoch = partition.leader_epoch();
    let broker = Arc::downgrade(broker);
    tracing::info!(
        topic = name,
        partition = p,
        high_watermark = partition.high_watermark(),
        target,
        "loading the coordinator once the new leader's records are committed"
    );
    tokio::spawn(async move {
        let leading = {
            let partition = partition.clone();
            move || {
                partition.is_leader()
                    && partition.leader_epoch() == epoch
                    && !partition.is_deleted()
            }
        };
        let mut hw = partition.subscribe();
        loop {
            if *hw.borrow_and_update() >= target {
                break;
            }
            if !leading() || hw.changed().await.is_err() {
                return;
            }
        }
        let Some(broker) = broker.upgrade() else {
            return;
        };
        let _ = tokio::task::spawn_blocking(move || {
            if !leading() {
                return;
            }
            let image = broker.image();
            let groups_topic = name == OFFSETS_TOPIC;
            if groups_topic {
                broker.groups.load_partition(&broker, &image, p);
            } else {
                broker.txns.load_partition(&broker, &image, p);
            }
            // The publisher unloads a shard after the role changed: if it did so while this
            // load ran, the shard must go.
            if !leading() {
                if groups_topic {
                    broker.groups.unload_partition(p);
                } else {
                    broker.txns.unload_partition(p);
                }
            } else {
                tracing::info!(topic = name, partition = p, "coordinator loaded");
            }
        })
        .await;
    });
}

/// Loads the coordinator shards of every internal partition this node leads in `image`:
/// at start-up, after the partitions were opened and before the broker serves.
pub fn load_coordinators_at_start(broker: &Arc<Broker>, image: &MetadataImage) {
    apply_to_coordinators(broker, image, &MetadataDelta::reset());
}

/// Once this start of the broker is registered: loads the shards of the replicated internal
/// partitions it leads, which it did not lead before (`PartitionManager::set_registered`).
pub fn load_coordinators_once_registered(broker: &Arc<Broker>, image: &MetadataImage) {
    let mut delta = MetadataDelta::default();
    for name in [OFFSETS_TOPIC, TXN_TOPIC] {
        if let Some(topic) = image.topic_by_name(name) {
            delta.partitions.extend(
                topic
                    .partitions
                    .values()
                    .filter(|p| crate::manager::held_until_registered(broker.node_id(), p))
                    .map(|p| (topic.topic_id, p.partition)),
            );
        }
    }
    apply_to_coordinators(broker, image, &delta);
}

/// Loads the shard of each internal partition the delta names that this node now leads, and
/// unloads the shard of each it no longer leads (or that was removed). Unloads come first,
/// so an internal topic removed and created again reloads from the new partition.
fn apply_to_coordinators(broker: &Arc<Broker>, image: &MetadataImage, delta: &MetadataDelta) {
    let node = broker.node_id();
    // Led in the image and by the replica here (not before this start is registered).
    let leads = |topic_id: &uuid::Uuid, p: &strata_quorum::PartitionImage| {
        p.leader == node
            && broker
                .partitions
                .get(topic_id, p.partition)
                .is_some_and(|replica| replica.is_leader())
    };
    let mut touched: Vec<(&str, i32, bool)> = Vec::new();
    if delta.reset {
        for name in [OFFSETS_TOPIC, TXN_TOPIC] {
            if let Some(topic) = image.topic_by_name(name) {
                touched.extend(
                    topic
                        .partitions
                        .values()
                        .map(|p| (name, p.partition, leads(&topic.topic_id, p))),
                );
            }
        }
    } else {
        for (topic_id, p) in &delta.partitions {
            let name = match image.topic_by_id(topic_id) {
                Some(topic) => topic.name.as_str(),
                None => match delta.topics_removed.get(topic_id) {
                    Some(name) => name.as_str(),
                    None => continue,
                },
            };
            if name == OFFSETS_TOPIC || name == TXN_TOPIC {
                let leads = image
                    .partition(topic_id, *p)
                    .is_some_and(|p| leads(topic_id, p));
                touched.push((name, *p, leads));
            }
        }
    }
    if touched.is_empty() {
        return;
    }
    // Unloads (false) before loads (true).
    touched.sort_by_key(|(_, _, leads)| *leads);
    let (mut groups, mut txns) = (0usize, 0usize);
    for (name, p, leads) in touched {
        let groups_topic = name == OFFSETS_TOPIC;
        let name = if groups_topic {
            OFFSETS_TOPIC
        } else {
            TXN_TOPIC
        };
        if !leads {
            if groups_topic {
                broker.groups.unload_partition(p);
            } else {
                broker.txns.unload_partition(p);
            }
            continue;
        }
        if let Some(deferred) = behind_high_watermark(broker, image, name, p) {
            load_when_committed(broker, name, p, deferred);
            continue;
        }
        if groups_topic {
            broker.groups.load_partition(broker, image, p);
            groups += 1;
        } else {
            broker.txns.load_partition(broker, image, p);
            txns += 1;
        }
    }
    if groups > 0 {
        let mut count = 0;
        broker
            .groups
            .for_each_shard(|shard| count += shard.classic.list().len());
        tracing::info!(
            partitions = groups,
            groups = count,
            "loaded consumer groups"
        );
    }
    if txns > 0 {
        tracing::info!(
            partitions = txns,
            transactional_ids = broker.txns.all().len(),
            "loaded transaction state"
        );
    }
}

#[cfg(test)]
mod tests {
    use strata_quorum::controller::ops::{CreateTopics, DeleteTopics, NewTopic};

    fn new_topic(name: &str, partitions: i32) -> NewTopic {
        NewTopic {
            num_partitions: partitions,
            ..NewTopic::named(name)
        }
    }

    /// An operation is answered only once the broker serves its outcome: the image holds the
    /// topic, its partitions are open, the applied offset has moved; a deletion likewise.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_follow_the_published_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = crate::broker::open_for_test(dir.path(), &[]);
        let start = broker.publisher.applied_offset();
        for round in 0..20 {
            let name = format!("t{round}");
            let created = broker
                .submit(CreateTopics {
                    topics: vec![new_topic(&name, 3)],
                    validate_only: false,
                })
                .await
                .expect("answered");
            assert!(created.topics[0].is_ok());
            let image = broker.image();
            let topic = image.topic_by_name(&name).expect("published");
            for p in 0..3 {
                assert!(broker.partitions.get(&topic.topic_id, p).is_some());
            }
            // The image is published just before the applied offset moves (and the broker's
            // own heartbeats publish too), so the offset catches up at once.
            tokio::time::timeout(
                std::time::Duration::from_secs(10),
                broker.publisher.wait_applied(image.offset),
            )
            .await
            .expect("the applied offset reaches the published image")
            .expect("publisher running");
            let id = topic.topic_id;
            broker
                .submit(DeleteTopics {
                    topics: vec![strata_quorum::controller::ops::TopicRef::Name(name.clone())],
                })
                .await
                .expect("answered");
            assert!(broker.image().topic_by_name(&name).is_none());
            assert!(broker.partitions.get(&id, 0).is_none());
        }
        assert!(broker.publisher.applied_offset() > start);
    }
}
