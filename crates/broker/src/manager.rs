//! The partitions hosted on this broker, kept in step with the metadata image.
//!
//! `sync` compares the image with what is open: it opens (and recovers) the logs of new
//! partitions, updates settings and leader epochs, and deletes the logs of removed topics.
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
use strata_quorum::MetadataImage;
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
        })
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

    /// The open partition `partition` of `topic_id`: UNKNOWN_TOPIC_OR_PARTITION if the image
    /// has no such partition, KAFKA_STORAGE_ERROR if it has but its log could not be opened.
    pub fn lookup(&self, topic_id: &Uuid, partition: i32) -> Result<Arc<Partition>, ErrorCode> {
        if let Some(p) = self.get(topic_id, partition) {
            return Ok(p);
        }
        let unopened = self.unopened.read().unwrap_or_else(|p| p.into_inner());
        if unopened.contains(&(*topic_id, partition)) {
            Err(ErrorCode::KafkaStorageError)
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

    /// Brings the open partitions in line with `image`. Blocking (opens files, runs recovery).
    /// A partition that cannot be opened is left out, remembered and logged; the error of the
    /// first such partition is returned after every other partition was handled.
    pub fn sync(&self, image: &MetadataImage, config: &BrokerConfig) -> std::io::Result<()> {
        let mut wanted: HashMap<PartitionKey, ()> = HashMap::new();
        let mut unopened = HashSet::new();
        let mut first_error = None;
        for topic in image.topics() {
            let settings = Arc::new(topic_settings(image, config, &topic.configs));
            for p in topic.partitions.values() {
                if !p.replicas.contains(&config.node_id) {
                    continue;
                }
                let key = (topic.topic_id, p.partition);
                wanted.insert(key, ());
                if let Some(existing) = self.get(&topic.topic_id, p.partition) {
                    if *existing.settings() != *settings {
                        existing.set_settings(settings.clone());
                    }
                    existing.set_leader_epoch(p.leader_epoch);
                    continue;
                }
                let dir = self.partition_dir(&topic.name, p.partition);
                let name_key = (topic.name.clone(), p.partition);
                // After an unclean stop, a directory that existed before is recovered from
                // its recovery point (0 when the checkpoint does not know it).
                let recover_from = self
                    .recovery_points
                    .as_ref()
                    .filter(|_| dir.join(PARTITION_METADATA).exists())
                    .map(|points| points.get(&name_key).copied().unwrap_or(0));
                let opened = claim_dir(&dir, &topic.topic_id).and_then(|()| {
                    let config = log_config(&settings);
                    match recover_from {
                        Some(point) => {
                            PartitionLog::open_after_crash(&dir, config, now_ms(), point)
                        }
                        None => PartitionLog::open(&dir, config, now_ms()),
                    }
                    .and_then(|(mut log, report)| {
                        log.set_leader_epoch(p.leader_epoch)?;
                        Ok((log, report))
                    })
                    .map_err(|e| std::io::Error::other(format!("{}: {e}", dir.display())))
                });
                let (log, report) = match opened {
                    Ok(opened) => opened,
                    Err(error) => {
                        tracing::error!(topic = %topic.name, partition = p.partition, %error, "cannot open partition; it answers KAFKA_STORAGE_ERROR until a retry succeeds");
                        unopened.insert(key);
                        first_error.get_or_insert(error);
                        continue;
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
                        leader_epoch: p.leader_epoch,
                        fsync_before_ack: self.fsync_before_ack,
                        log_dir: self.log_dir.clone(),
                        checkpointed_hw: self.checkpointed_hws.get(&name_key).copied(),
                        metrics: self.metrics.topic(&topic.name),
                    },
                ));
                self.partitions
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, partition);
            }
        }
        let removed: Vec<Arc<Partition>> = {
            let mut map = self.partitions.write().unwrap_or_else(|p| p.into_inner());
            let gone: Vec<PartitionKey> = map
                .keys()
                .filter(|k| !wanted.contains_key(k))
                .copied()
                .collect();
            gone.iter().filter_map(|k| map.remove(k)).collect()
        };
        let mut doomed = Vec::with_capacity(removed.len());
        for p in removed {
            p.mark_deleted();
            doomed.push(set_aside(&self.partition_dir(&p.topic, p.index)));
        }
        remove_in_background(doomed);
        *self.unopened.write().unwrap_or_else(|p| p.into_inner()) = unopened;
        match first_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
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
