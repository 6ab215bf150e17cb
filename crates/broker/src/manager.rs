//! The partitions hosted on this broker, kept in step with the metadata image.
//!
//! `apply` acts on a metadata change (an image and the [`MetadataDelta`] that led to it, from
//! the metadata publisher): it opens (and recovers) the logs of the new partitions the delta
//! names, updates settings and leader epochs, and deletes the logs of removed topics, touching
//! nothing else, so one change costs what it touched, not the number of partitions.
//! `sync` compares the whole image with what is open: the reconcile at start-up and for
//! retries; both reach the same state.
//! Directory per partition: `<log.dirs>/<topic>-<partition>/`, holding the log segments and a
//! `partition.metadata` file with the topic id, so that a directory left over from a deleted
//! topic of the same name is never mistaken for the new one.
//!
//! A partition that cannot be opened (a full disk, no descriptors left, a damaged directory)
//! does not stop the others, nor a metadata change that created it: it is logged, answered
//! with KAFKA_STORAGE_ERROR ([`PartitionManager::lookup`]) and tried again by the next
//! `sync` (the maintenance task retries while any is pending).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use strata_log::offset_checkpoint::{self, OffsetCheckpoint};
use strata_log::PartitionLog;
use strata_quorum::{MetadataDelta, MetadataImage, PartitionImage, TopicImage};
use uuid::Uuid;

use crate::config::{BrokerConfig, ConfigLayers, TopicSettings};
use crate::flusher::Flusher;
use crate::log_dir::LogDirState;
use crate::metrics::BrokerMetrics;
use crate::partition::{log_config, now_ms, Partition, PartitionInit};
use strata_protocol::ErrorCode;

pub type PartitionKey = (Uuid, i32);

pub struct PartitionManager {
    data_dir: PathBuf,
    partitions: RwLock<HashMap<PartitionKey, Arc<Partition>>>,
    fsync_before_ack: bool,
    pub flusher: Flusher,
    pub log_dir: Arc<LogDirState>,
    /// Partitions of the image that could not be opened yet.
    unopened: RwLock<HashSet<PartitionKey>>,
    /// After an unclean stop: each partition's recovery point from the checkpoint (a
    /// partition directory that existed before is opened with `open_after_crash`). `None`
    /// after a clean shutdown.
    recovery_points: Option<OffsetCheckpoint>,
    /// High watermarks from `replication-offset-checkpoint`, read at start-up.
    checkpointed_hws: OffsetCheckpoint,
    /// Where each opened partition gets its topic's traffic counters.
    metrics: Arc<BrokerMetrics>,
    /// Whether this start of the broker is registered with the controller. Until it is, a
    /// partition with other replicas that the metadata says this broker leads is not led
    /// here (its leader is taken as unknown): the controller may be about to move it away
    /// from a broker that crashed and came back (see `RegisterBroker` in the plan).
    registered: std::sync::atomic::AtomicBool,
}

/// Whether broker `node` leads `p` only once its start is registered: the metadata names it
/// leader and other replicas hold the partition (they may be about to lead it instead).
pub fn held_until_registered(node: i32, p: &PartitionImage) -> bool {
    p.leader == node && p.replicas.len() > 1
}

/// Written at the end of a clean shutdown, removed at start-up: its absence means the broker
/// stopped uncleanly and recovery must validate every batch after the recovery points.
pub const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";

const PARTITION_METADATA: &str = "partition.metadata";

impl PartitionManager {
    /// A manager for `data_dir`. Reads the offset checkpoints and consumes the clean-shutdown
    /// marker (so a crash from now on is seen as unclean at the next start).
    pub fn new(
        data_dir: PathBuf,
        fsync_before_ack: bool,
        flusher: Flusher,
        metrics: Arc<BrokerMetrics>,
    ) -> std::io::Result<Self> {
        let marker = data_dir.join(CLEAN_SHUTDOWN_FILE);
        let clean = marker.exists();
        let read = |name| {
            offset_checkpoint::read_offsets(&data_dir, name)
                .map_err(|e| std::io::Error::other(e.to_string()))
        };
        let recovery_points = if clean {
            std::fs::remove_file(&marker)?;
            std::fs::File::open(&data_dir)?.sync_all()?;
            None
        } else {
            let points = read(offset_checkpoint::RECOVERY_POINT_FILE)?;
            // A directory that never held a partition (a first start) has nothing to recover.
            let held_partitions = std::fs::read_dir(&data_dir)?
                .filter_map(Result::ok)
                .any(|e| e.file_name() != "meta" && e.path().is_dir());
            if held_partitions {
                tracing::warn!(dir = %data_dir.display(), checkpointed = points.len(), "the broker did not shut down cleanly; validating every batch after each partition's recovery point");
            }
            Some(points)
        };
        let checkpointed_hws = read(offset_checkpoint::HIGH_WATERMARK_FILE)?;
        Ok(PartitionManager {
            log_dir: Arc::new(LogDirState::new(&data_dir)),
            data_dir,
            partitions: RwLock::new(HashMap::new()),
            fsync_before_ack,
            flusher,
            unopened: RwLock::new(HashSet::new()),
            recovery_points,
            checkpointed_hws,
            metrics,
            registered: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// This start of the broker is registered: from the next sync on, it leads what the
    /// metadata gives it.
    pub fn set_registered(&self) {
        self.registered
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// The leader of `p` as this broker `node` acts on it: unknown while this start is not
    /// registered and [`held_until_registered`].
    fn leader_to_follow(&self, node: i32, p: &PartitionImage) -> i32 {
        let registered = self.registered.load(std::sync::atomic::Ordering::Acquire);
        if !registered && held_until_registered(node, p) {
            -1
        } else {
            p.leader
        }
    }

    /// Writes `recovery-point-offset-checkpoint` and `replication-offset-checkpoint` for
    /// every open partition. A failure takes the directory offline (as Kafka does). Blocking.
    pub fn write_checkpoints(&self) {
        if self.log_dir.is_offline() {
            return;
        }
        let mut recovery = Vec::new();
        let mut hws = Vec::new();
        for p in self.all() {
            recovery.push((p.topic.clone(), p.index, p.recovery_point()));
            hws.push((p.topic.clone(), p.index, p.high_watermark()));
        }
        for (name, entries) in [
            (offset_checkpoint::RECOVERY_POINT_FILE, recovery),
            (offset_checkpoint::HIGH_WATERMARK_FILE, hws),
        ] {
            if let Err(error) = offset_checkpoint::write_offsets(&self.data_dir, name, &entries) {
                self.log_dir.fail("write the offset checkpoint", &error);
                for p in self.all() {
                    p.wake();
                }
                return;
            }
        }
    }

    /// Ends a clean shutdown: checkpoints, then the marker that lets the next start skip
    /// validating closed segments. Nothing is marked clean once the directory is offline.
    pub fn mark_clean_shutdown(&self) {
        self.write_checkpoints();
        if self.log_dir.is_offline() {
            return;
        }
        let marker = self.data_dir.join(CLEAN_SHUTDOWN_FILE);
        let written = std::fs::File::create(&marker)
            .and_then(|f| f.sync_all())
            .and_then(|()| std::fs::File::open(&self.data_dir)?.sync_all());
        if let Err(error) = written {
            tracing::warn!(%error, "could not mark the shutdown clean; the next start validates the logs");
        }
    }

    /// The partition `partition` of `topic` if this broker leads it: what client requests
    /// (and followers' fetches) are served from. NOT_LEADER_OR_FOLLOWER if another broker
    /// leads it (or none does), UNKNOWN_TOPIC_OR_PARTITION if the image has no such
    /// partition, KAFKA_STORAGE_ERROR if its log could not be opened here.
    pub fn lookup(&self, topic: &TopicImage, partition: i32) -> Result<Arc<Partition>, ErrorCode> {
        self.lookup_replica(topic, partition).and_then(|p| {
            if p.is_leader() {
                Ok(p)
            } else {
                Err(ErrorCode::NotLeaderOrFollower)
            }
        })
    }

    /// The open replica `partition` of `topic`, leader or not; errors as for [`Self::lookup`].
    pub fn lookup_replica(
        &self,
        topic: &TopicImage,
        partition: i32,
    ) -> Result<Arc<Partition>, ErrorCode> {
        let topic_id = &topic.topic_id;
        if let Some(p) = self.get(topic_id, partition) {
            return Ok(p);
        }
        let unopened = self.unopened.read().unwrap_or_else(|p| p.into_inner());
        if unopened.contains(&(*topic_id, partition)) {
            Err(ErrorCode::KafkaStorageError)
        } else if topic.partitions.contains_key(&partition) {
            // Another broker holds it.
            Err(ErrorCode::NotLeaderOrFollower)
        } else {
            Err(ErrorCode::UnknownTopicOrPartition)
        }
    }

    /// Whether some partition of the image is still waiting to be opened.
    pub fn has_unopened(&self) -> bool {
        !self
            .unopened
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    pub fn get(&self, topic_id: &Uuid, partition: i32) -> Option<Arc<Partition>> {
        self.partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(*topic_id, partition))
            .cloned()
    }

    pub fn all(&self) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        self.data_dir.join(format!("{topic}-{partition}"))
    }

    /// Brings the open partitions in line with `image` as a whole: the full reconcile, run at
    /// start-up and to retry partitions that could not be opened (metadata changes go through
    /// [`Self::apply`]). Blocking (opens files, runs recovery). A partition that cannot be
    /// opened is left out, remembered and logged; the error of the first such partition is
    /// returned after every other partition was handled.
    pub fn sync(&self, image: &MetadataImage, config: &BrokerConfig) -> std::io::Result<()> {
        let node = config.node_id;
        let wanted: HashSet<PartitionKey> = image
            .topics()
            .flat_map(|t| {
                t.partitions
                    .values()
                    .filter(|p| p.replicas.contains(&node))
                    .map(|p| (t.topic_id, p.partition))
            })
            .collect();
        // Removals first: a topic deleted and created again under the same name reuses the
        // directory name.
        let removed: Vec<Arc<Partition>> = {
            let mut map = self.partitions.write().unwrap_or_else(|p| p.into_inner());
            let gone: Vec<PartitionKey> = map
                .keys()
                .filter(|k| !wanted.contains(k))
                .copied()
                .collect();
            gone.iter().filter_map(|k| map.remove(k)).collect()
        };
        self.delete(removed);
        let mut unopened = HashSet::new();
        let mut first_error = None;
        for topic in image.topics() {
            let settings = Arc::new(topic_settings(image, config, &topic.configs));
            for p in topic.partitions.values() {
                if !p.replicas.contains(&node) {
                    continue;
                }
                if let Err(error) = self.ensure_open(node, topic, p, &settings) {
                    unopened.insert((topic.topic_id, p.partition));
                    first_error.get_or_insert(error);
                }
            }
        }
        *self.unopened.write().unwrap_or_else(|p| p.into_inner()) = unopened;
        match first_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Brings the open partitions in line with `image` where `delta` says it changed: only
    /// the partitions it names are opened, updated or deleted, and settings are re-read only
    /// for topics whose configs changed (all of them when this broker's dynamic configs did).
    /// A delta that asks for a reset runs [`Self::sync`]. The result is the state `sync`
    /// would reach from the same image (`tests::delta_apply_matches_full_sync`). Blocking;
    /// errors as for `sync`.
    pub fn apply(
        &self,
        image: &MetadataImage,
        delta: &MetadataDelta,
        config: &BrokerConfig,
    ) -> std::io::Result<()> {
        if delta.reset {
            return self.sync(image, config);
        }
        let node = config.node_id;
        let hosted = |(topic, p): &PartitionKey| {
            image
                .partition(topic, *p)
                .is_some_and(|p| p.replicas.contains(&node))
        };
        // Removals first, as in `sync`.
        let (keep, gone): (Vec<PartitionKey>, Vec<PartitionKey>) =
            delta.partitions.iter().copied().partition(hosted);
        if !gone.is_empty() {
            let removed: Vec<Arc<Partition>> = {
                let mut map = self.partitions.write().unwrap_or_else(|p| p.into_inner());
                gone.iter().filter_map(|k| map.remove(k)).collect()
            };
            self.delete(removed);
            let mut unopened = self.unopened.write().unwrap_or_else(|p| p.into_inner());
            for key in &gone {
                unopened.remove(key);
            }
        }
        let mut settings: HashMap<Uuid, Arc<TopicSettings>> = HashMap::new();
        let mut settings_of = |topic: &TopicImage| {
            settings
                .entry(topic.topic_id)
                .or_insert_with(|| Arc::new(topic_settings(image, config, &topic.configs)))
                .clone()
        };
        // New settings for the open partitions of topics whose configs may have changed.
        let broker_wide = delta
            .broker_configs
            .iter()
            .any(|n| n.is_none() || *n == Some(node));
        let reconfigured: Vec<&TopicImage> = if broker_wide {
            image.topics().collect()
        } else {
            delta
                .topic_configs
                .iter()
                .filter_map(|id| image.topic_by_id(id))
                .collect()
        };
        for topic in reconfigured {
            let settings = settings_of(topic);
            for p in topic.partitions.keys() {
                if let Some(existing) = self.get(&topic.topic_id, *p) {
                    if *existing.settings() != *settings {
                        existing.set_settings(settings.clone());
                    }
                }
            }
        }
        let mut first_error = None;
        for (topic_id, index) in keep {
            let topic = image
                .topic_by_id(&topic_id)
                .expect("hosted partitions exist");
            let p = &topic.partitions[&index];
            let opened = self.ensure_open(node, topic, p, &settings_of(topic));
            let mut unopened = self.unopened.write().unwrap_or_else(|p| p.into_inner());
            match opened {
                Ok(()) => unopened.remove(&(topic_id, index)),
                Err(error) => {
                    first_error.get_or_insert(error);
                    unopened.insert((topic_id, index))
                }
            };
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Opens partition `p` of `topic` unless it is open, else brings its settings and role
    /// (leader epoch, leader, ISR) up to date for `node`. An open that fails is logged and
    /// returned.
    fn ensure_open(
        &self,
        node: i32,
        topic: &TopicImage,
        p: &PartitionImage,
        settings: &Arc<TopicSettings>,
    ) -> std::io::Result<()> {
        if let Some(existing) = self.get(&topic.topic_id, p.partition) {
            if *existing.settings() != **settings {
                existing.set_settings(settings.clone());
            }
            existing.set_partition_epoch(p.partition_epoch);
            existing.assign(node, self.leader_to_follow(node, p), p.leader_epoch, &p.isr);
            return Ok(());
        }
        let leader = self.leader_to_follow(node, p);
        let dir = self.partition_dir(&topic.name, p.partition);
        let name_key = (topic.name.clone(), p.partition);
        // After an unclean stop, a directory that existed before is recovered from its
        // recovery point (0 when the checkpoint does not know it).
        let recover_from = self
            .recovery_points
            .as_ref()
            .filter(|_| dir.join(PARTITION_METADATA).exists())
            .map(|points| points.get(&name_key).copied().unwrap_or(0));
        let opened = claim_dir(&dir, &topic.topic_id).and_then(|()| {
            let config = log_config(settings);
            match recover_from {
                Some(point) => PartitionLog::open_after_crash(&dir, config, now_ms(), point),
                None => PartitionLog::open(&dir, config, now_ms()),
            }
            .and_then(|(mut log, report)| {
                log.adopt_leader_epoch(p.leader_epoch, leader == node)?;
                Ok((log, report))
            })
            .map_err(|e| std::io::Error::other(format!("{}: {e}", dir.display())))
        });
        let (log, report) = match opened {
            Ok(opened) => opened,
            Err(error) => {
                tracing::error!(topic = %topic.name, partition = p.partition, %error, "cannot open partition; it answers KAFKA_STORAGE_ERROR until a retry succeeds");
                return Err(error);
            }
        };
        if report.truncated_bytes > 0 || report.rebuilt_indexes > 0 {
            tracing::warn!(
                topic = %topic.name,
                partition = p.partition,
                truncated_bytes = report.truncated_bytes,
                truncated_at_offset = ?report.truncated_at_offset,
                rebuilt_indexes = report.rebuilt_indexes,
                "recovered partition log"
            );
        }
        let partition = Arc::new(Partition::new(
            topic.name.clone(),
            topic.topic_id,
            p.partition,
            log,
            settings.clone(),
            PartitionInit {
                node_id: node,
                leader,
                isr: p.isr.clone(),
                leader_epoch: p.leader_epoch,
                fsync_before_ack: self.fsync_before_ack,
                log_dir: self.log_dir.clone(),
                checkpointed_hw: self.checkpointed_hws.get(&name_key).copied(),
                metrics: self.metrics.topic(&topic.name),
            },
        ));
        partition.set_partition_epoch(p.partition_epoch);
        self.partitions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert((topic.topic_id, p.partition), partition);
        Ok(())
    }

    /// Marks `removed` deleted and removes their directories (set aside at once, deleted in
    /// the background).
    fn delete(&self, removed: Vec<Arc<Partition>>) {
        let mut doomed = Vec::with_capacity(removed.len());
        for p in removed {
            p.mark_deleted();
            doomed.push(set_aside(&self.partition_dir(&p.topic, p.index)));
        }
        remove_in_background(doomed);
    }

    /// Deals with partition directories that belong to no partition in `image`: one of a
    /// topic the metadata says was deleted is removed (a deletion interrupted by a crash);
    /// any other is renamed `<dir>.<random>-stray` and kept, never deleted, because its
    /// records may have been acknowledged (the metadata that named it could have been lost).
    pub fn remove_orphans(&self, image: &MetadataImage) {
        let Ok(entries) = std::fs::read_dir(&self.data_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.ends_with("-stray") || !path.join(PARTITION_METADATA).exists() {
                // Set aside at an earlier start: left for the operator.
                continue;
            }
            let Some(id) = read_topic_id(&path) else {
                continue;
            };
            let belongs = image.topic_by_id(&id).is_some_and(|t| {
                t.partitions
                    .keys()
                    .any(|p| format!("{}-{p}", t.name) == name)
            });
            if belongs {
                continue;
            }
            if image.was_removed(&id) {
                tracing::warn!(dir = %path.display(), "removing partition directory of a deleted topic");
                remove_in_background(vec![set_aside(&path)]);
            } else {
                let stray = aside_name(&path, "stray");
                match std::fs::rename(&path, &stray) {
                    Ok(()) => {
                        tracing::error!(dir = %path.display(), kept_as = %stray.display(), "partition directory of a topic the metadata does not know; kept aside, not deleted")
                    }
                    Err(error) => {
                        tracing::error!(dir = %path.display(), %error, "partition directory of a topic the metadata does not know; could not set it aside")
                    }
                }
            }
        }
    }
}

/// The effective settings of a topic with `overrides`.
pub fn topic_settings(
    image: &MetadataImage,
    config: &BrokerConfig,
    overrides: &std::collections::BTreeMap<String, String>,
) -> TopicSettings {
    TopicSettings::resolve(&ConfigLayers {
        topic: overrides,
        dynamic_broker: image.broker_configs.get(&Some(config.node_id)),
        dynamic_default: image.broker_configs.get(&None),
        static_broker: &config.set,
    })
}

fn read_topic_id(dir: &Path) -> Option<Uuid> {
    let text = std::fs::read_to_string(dir.join(PARTITION_METADATA)).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("topic_id:"))
        .and_then(|id| Uuid::parse_str(id.trim()).ok())
}

/// Makes `dir` the home of a partition of `topic_id`: a directory left by an older topic of the
/// same name is removed first.
fn claim_dir(dir: &Path, topic_id: &Uuid) -> std::io::Result<()> {
    match read_topic_id(dir) {
        Some(existing) if existing == *topic_id => return Ok(()),
        Some(_) => {
            tracing::warn!(dir = %dir.display(), "directory belongs to a deleted topic of the same name; removing it");
            std::fs::remove_dir_all(dir)?;
        }
        None => {}
    }
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{PARTITION_METADATA}.tmp"));
    std::fs::write(&tmp, format!("version: 0\ntopic_id: {topic_id}\n"))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, dir.join(PARTITION_METADATA))?;
    Ok(())
}

/// Renames a partition directory that is to be removed, so that a crash halfway through the
/// removal leaves a directory that is plainly not a partition. Returns the path to remove.
fn set_aside(dir: &Path) -> PathBuf {
    let doomed = aside_name(dir, "delete");
    match std::fs::rename(dir, &doomed) {
        Ok(()) => doomed,
        Err(_) => dir.to_path_buf(),
    }
}

/// `<dir>.<random>-<kind>`: a name that is plainly not a partition directory.
fn aside_name(dir: &Path, kind: &str) -> PathBuf {
    PathBuf::from(format!(
        "{}.{}-{kind}",
        dir.display(),
        Uuid::new_v4().simple()
    ))
}

/// Removes directories on one background thread (however many partitions a deleted topic
/// had), so that a deletion returns without waiting for the files to go.
fn remove_in_background(dirs: Vec<PathBuf>) {
    if dirs.is_empty() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("strata-remove".into())
        .spawn(move || {
            for dir in dirs {
                if let Err(error) = std::fs::remove_dir_all(&dir) {
                    tracing::warn!(dir = %dir.display(), %error, "could not remove deleted partition");
                }
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "could not start removing deleted partitions; they stay as *-delete directories");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeMap;
    use strata_quorum::{ConfigResource, MetadataRecord};

    fn manager(dir: &Path) -> PartitionManager {
        let metrics = Arc::new(BrokerMetrics::new());
        let flusher = Flusher::start(2, metrics.clone());
        PartitionManager::new(dir.to_path_buf(), true, flusher, metrics).expect("manager")
    }

    /// A record of the kinds that change what a broker hosts: topics created (names reused
    /// after deletion) and removed, partitions created, moved to and from this node and given
    /// new epochs, topic and broker configs that change settings, references to unknowns.
    fn random_record(rng: &mut StdRng, image: &MetadataImage, node: i32) -> MetadataRecord {
        const NAMES: [&str; 3] = ["a", "b", "c"];
        let topics: Vec<&TopicImage> = image.topics().collect();
        let free = NAMES[rng.gen_range(0..3)];
        let pick = rng.gen_range(0..10);
        if pick < 2 && image.topic_by_name(free).is_none() {
            return MetadataRecord::Topic {
                name: free.into(),
                topic_id: Uuid::from_u128(rng.gen()),
            };
        }
        match pick {
            0..=4 if !topics.is_empty() => {
                let topic = topics[rng.gen_range(0..topics.len())];
                let partition = rng.gen_range(0..4);
                let epoch = topic
                    .partitions
                    .get(&partition)
                    .map_or(0, |p| p.leader_epoch + rng.gen_range(0..2));
                let replicas: Vec<i32> = [node, node + 1]
                    .into_iter()
                    .filter(|_| rng.gen_bool(0.7))
                    .collect();
                MetadataRecord::partition_led_by_first(topic.topic_id, partition, replicas, epoch)
            }
            5 | 6 => {
                let resource = match rng.gen_range(0..4) {
                    0 => ConfigResource::Broker(None),
                    1 => ConfigResource::Broker(Some([node, node + 1][rng.gen_range(0..2)])),
                    _ => ConfigResource::Topic(NAMES[rng.gen_range(0..3)].into()),
                };
                let (name, values) = [
                    ("retention.ms", ["1000", "60000"]),
                    ("segment.bytes", ["1048576", "2097152"]),
                    ("cleanup.policy", ["delete", "compact"]),
                ][rng.gen_range(0..3)];
                // Broker configs use the broker-level names.
                let name = match (&resource, name) {
                    (ConfigResource::Broker(_), "retention.ms") => "log.retention.ms",
                    (ConfigResource::Broker(_), "segment.bytes") => "log.segment.bytes",
                    (ConfigResource::Broker(_), _) => "log.cleanup.policy",
                    (_, name) => name,
                };
                MetadataRecord::Config {
                    resource,
                    name: name.into(),
                    value: rng
                        .gen_bool(0.7)
                        .then(|| values[rng.gen_range(0..2)].into()),
                }
            }
            7 if !topics.is_empty() => MetadataRecord::RemoveTopic {
                topic_id: topics[rng.gen_range(0..topics.len())].topic_id,
            },
            _ => MetadataRecord::Partition {
                topic_id: Uuid::from_u128(rng.gen()),
                partition: 0,
                replicas: vec![node],
                isr: vec![node],
                leader: node,
                leader_epoch: 0,
                partition_epoch: 0,
                adding_replicas: Vec::new(),
                removing_replicas: Vec::new(),
            },
        }
    }

    /// Partition directories (not set aside) and the topic id each belongs to.
    fn directories(dir: &Path) -> BTreeMap<String, Option<Uuid>> {
        std::fs::read_dir(dir)
            .expect("list")
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| !name.ends_with("-delete") && !name.ends_with("-stray"))
            .map(|name| {
                let id = read_topic_id(&dir.join(&name));
                (name, id)
            })
            .collect()
    }

    /// What a manager holds: per open partition its topic, settings and leader epoch.
    fn state(m: &PartitionManager) -> BTreeMap<PartitionKey, (String, TopicSettings, i32)> {
        m.all()
            .into_iter()
            .map(|p| {
                assert!(!p.is_deleted());
                (
                    (p.topic_id, p.index),
                    (p.topic.clone(), (*p.settings()).clone(), p.leader_epoch()),
                )
            })
            .collect()
    }

    /// Delta-driven `apply` over random record sequences, published at random points (so
    /// deltas cover one record or many), leaves the same partitions open with the same
    /// settings and epochs, and the same directories, as a full `sync` of each image.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delta_apply_matches_full_sync() {
        let seeds = std::env::var("STRATA_DELTA_SEEDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(40u64);
        for seed in 0..seeds {
            let mut rng = StdRng::seed_from_u64(seed);
            let (dir_a, dir_b) = (
                tempfile::tempdir().expect("a"),
                tempfile::tempdir().expect("b"),
            );
            let set = [("log.dirs".to_string(), dir_a.path().display().to_string())].into();
            let config = BrokerConfig::from_map(set).expect("config").0;
            let node = config.node_id;
            let (by_delta, by_sync) = (manager(dir_a.path()), manager(dir_b.path()));
            let mut image = MetadataImage::default();
            let mut delta = MetadataDelta::default();
            for step in 0..60 {
                let record = random_record(&mut rng, &image, node);
                image.apply_into(&record, &mut delta);
                if step != 59 && rng.gen_range(0..3) != 0 {
                    continue;
                }
                by_delta
                    .apply(&image, &std::mem::take(&mut delta), &config)
                    .expect("apply");
                by_sync.sync(&image, &config).expect("sync");
                let context = format!("seed {seed} step {step} after {record:?}");
                assert_eq!(state(&by_delta), state(&by_sync), "{context}");
                assert_eq!(
                    directories(dir_a.path()),
                    directories(dir_b.path()),
                    "{context}"
                );
                assert!(!by_delta.has_unopened(), "{context}");
            }
        }
    }
}
