//! One partition replica on this broker: its log and its replication state.
//!
//! State kept here, as a leader in a cluster will need it: the leader epoch, the log start and
//! end offsets, and the high watermark (HW). Consumers never see offsets at or above the HW.
//! On a single node the HW is the *durable* log end when `strata.fsync.before.ack` is on (an
//! offset becomes visible once it is fsynced), and the log end otherwise.
//!
//! Appends take the log's mutex, so appends to one partition are serialized and offsets are
//! assigned in arrival order; reads take it briefly too (positioned reads do not move a
//! cursor). So does the log cleaner: it takes a snapshot of the segments under the mutex,
//! reads and copies them without it, and holds it again only to swap each rewritten segment
//! in ([`Partition::clean`]), so produce requests to a compacted partition do not wait for
//! the copy. The HW is published through a `watch` channel that long-polling fetches and
//! acks=all produces wait on.
//!
//! Each replica has a [`Role`] (`strata_replication`), set from the metadata by
//! [`Partition::assign`]: a leader keeps a `LeaderState`, the only place its HW is computed
//! (from its own durable end and, in a cluster, its followers' positions); followers and
//! offline replicas refuse appends. A new leader epoch replaces the role under the
//! producer-state and log locks, so no append straddles it, and wakes every waiter: a wait
//! for the HW to pass an append of an older epoch fails ([`HwWait`]), because a deposed
//! leader's records may be truncated. Lock order: `role`, then `producers`, then `log`; the
//! role lock is never taken while holding either of the others.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use bytes::Bytes;
use strata_log::{
    AbortedTxn, AppendInfo, Check, CleanStage, LogConfig, LogError, Marker, MarkerRecord,
    PartitionLog, ProducerError, ProducerStateManager, SyncJob,
};
use strata_protocol::batch::BatchHeader;
use strata_protocol::ErrorCode;
use strata_replication::Role;
use tokio::sync::watch;
use uuid::Uuid;

use crate::config::TopicSettings;
use crate::log_dir::LogDirState;
use crate::metrics::TopicMetrics;

pub struct Partition {
    pub topic: String,
    /// Client traffic of the partition's topic, for `/metrics`.
    pub metrics: Arc<TopicMetrics>,
    pub topic_id: Uuid,
    pub index: i32,
    log: Mutex<PartitionLog>,
    /// Idempotent and transactional producers' state (`strata_log::producer_state`). Lock
    /// order: `producers` before `log`.
    producers: Mutex<ProducerStateManager>,
    /// Set when `producers` changed since the last snapshot.
    producers_dirty: AtomicBool,
    /// The log offset the last producer-state snapshot covers (-1: none), so that shutdown
    /// writes one whenever the log moved and the next start-up replays only what follows.
    snapshot_offset: AtomicI64,
    settings: RwLock<Arc<TopicSettings>>,
    /// Leader, follower or offline, for the current leader epoch ([`Partition::assign`]).
    role: Mutex<Role>,
    /// Whether `role` is leader: the check every append makes, without the role lock.
    leading: AtomicBool,
    leader_epoch: AtomicI32,
    /// The partition epoch of the metadata this replica follows: what an ISR proposal
    /// names, so the controller refuses one based on stale metadata.
    partition_epoch: AtomicI32,
    log_start_offset: AtomicI64,
    log_end_offset: AtomicI64,
    high_watermark: AtomicI64,
    /// Every offset below this is known to be fsynced (Kafka's recovery point); checkpointed
    /// to `recovery-point-offset-checkpoint` so an unclean start validates only what follows.
    recovery_point: AtomicI64,
    hw_tx: watch::Sender<i64>,
    /// The log end offset, published on every append: what a follower's long-polling fetch
    /// waits on (followers read up to the log end, not the HW).
    leo_tx: watch::Sender<i64>,
    fsync_before_ack: bool,
    /// Fsync results held back by the test gate ([`test_fsync_gate`]); -1: none.
    gated_durable: AtomicI64,
    /// Set while the partition waits in the flusher's queue, so it is queued at most once.
    pub(crate) flush_queued: AtomicBool,
    /// Messages appended since the last fsync (for `flush.messages`).
    unflushed_messages: AtomicI64,
    /// When the oldest unflushed append happened (ms), 0 when everything is flushed.
    unflushed_since_ms: AtomicI64,
    /// Set once the partition is deleted: appends fail, waiters give up.
    deleted: AtomicBool,
    /// The data directory's health: once it is offline, this partition refuses reads and
    /// writes with KAFKA_STORAGE_ERROR and its high watermark never moves (`log_dir.rs`).
    log_dir: Arc<LogDirState>,
    /// The cleaner's position: records before it were cleaned in the last pass (not kept
    /// across restarts, so the first pass after a start sees everything as dirty).
    clean_point: AtomicI64,
    /// When the first record not yet seen by the cleaner was appended (ms), 0 if none.
    dirty_since_ms: AtomicI64,
}

/// The result of a read: the bytes and the partition's offsets at that moment.
pub struct ReadResult {
    pub records: Bytes,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    /// For `read_committed` reads: the aborted transactions overlapping the records.
    pub aborted: Vec<AbortedTxn>,
}

/// What an append did, and the leader epoch it was made in (what an acknowledgement waits
/// under: [`HwWait`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// The batches were written at these offsets.
    New { info: AppendInfo, leader_epoch: i32 },
    /// The batch repeats one the producer wrote before: its original offsets, nothing written.
    Duplicate {
        base_offset: i64,
        last_offset: i64,
        leader_epoch: i32,
    },
}

impl Appended {
    pub fn leader_epoch(&self) -> i32 {
        match self {
            Appended::New { leader_epoch, .. } | Appended::Duplicate { leader_epoch, .. } => {
                *leader_epoch
            }
        }
    }

    pub fn base_offset(&self) -> i64 {
        match self {
            Appended::New { info, .. } => info.base_offset,
            Appended::Duplicate { base_offset, .. } => *base_offset,
        }
    }

    pub fn last_offset(&self) -> i64 {
        match self {
            Appended::New { info, .. } => info.last_offset,
            Appended::Duplicate { last_offset, .. } => *last_offset,
        }
    }
}

/// Kafka's error for a refused producer batch.
pub fn producer_error_code(e: &ProducerError) -> ErrorCode {
    match e {
        ProducerError::InvalidProducerEpoch { .. } => ErrorCode::InvalidProducerEpoch,
        ProducerError::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequenceNumber,
        ProducerError::InvalidTxnState { .. } => ErrorCode::InvalidTxnState,
    }
}

/// Why a wait for the high watermark ended before it passed the offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HwWaitError {
    /// The partition was deleted.
    Deleted,
    /// Its data directory went offline after a storage error.
    Offline,
    /// The leader epoch changed: this node may no longer lead, and the append may be cut.
    EpochChanged,
}

/// An append to wait for: acknowledged once the partition's HW passes `offset` (durable, and
/// on every ISR member), provided the leader epoch it was made in still holds.
#[derive(Clone)]
pub struct HwWait {
    pub partition: Arc<Partition>,
    /// The offset after the append's last record.
    pub offset: i64,
    pub leader_epoch: i32,
}

impl HwWait {
    pub fn new(partition: Arc<Partition>, appended: &Appended) -> HwWait {
        HwWait {
            partition,
            offset: appended.last_offset() + 1,
            leader_epoch: appended.leader_epoch(),
        }
    }

    /// Waits until the HW passes the append. No deadline: callers bound it.
    pub async fn wait(&self) -> Result<(), HwWaitError> {
        let p = &self.partition;
        let mut rx = p.subscribe();
        loop {
            if *rx.borrow_and_update() >= self.offset {
                return Ok(());
            }
            if p.is_deleted() {
                return Err(HwWaitError::Deleted);
            }
            if p.is_offline() {
                return Err(HwWaitError::Offline);
            }
            if p.leader_epoch() != self.leader_epoch {
                return Err(HwWaitError::EpochChanged);
            }
            if rx.changed().await.is_err() {
                return Err(HwWaitError::Deleted);
            }
        }
    }
}

/// A new ISR a partition's leader proposes to the controller (AlterPartition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrProposal {
    pub topic_id: Uuid,
    pub partition: i32,
    /// The leader and partition epochs the proposal is based on.
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<i32>,
}

/// How a partition replica starts, besides its identity and log.
pub struct PartitionInit {
    /// This node, and the partition's leader (-1: none), leader epoch and ISR as the metadata
    /// records them.
    pub node_id: i32,
    pub leader: i32,
    pub isr: Vec<i32>,
    pub leader_epoch: i32,
    pub fsync_before_ack: bool,
    pub log_dir: Arc<LogDirState>,
    /// The high watermark from `replication-offset-checkpoint`, if it had one.
    pub checkpointed_hw: Option<i64>,
    /// The topic's traffic counters (`crate::metrics`).
    pub metrics: Arc<TopicMetrics>,
}

impl Partition {
    pub fn new(
        topic: String,
        topic_id: Uuid,
        index: i32,
        log: PartitionLog,
        settings: Arc<TopicSettings>,
        init: PartitionInit,
    ) -> Self {
        let PartitionInit {
            node_id,
            leader,
            isr,
            leader_epoch,
            fsync_before_ack,
            log_dir,
            checkpointed_hw,
            metrics,
        } = init;
        let mut log = log;
        let (producers, snapshot_offset) = rebuild_producer_state(&mut log, &topic, index);
        let start = log.log_start_offset();
        let end = log.log_end_offset();
        // The high watermark starts at its checkpoint (within the log), or at the log start
        // without one: a replica's log may end with records that were never committed (a
        // deposed leader's tail), and claiming them would let it serve them as leader. A
        // leader that is the whole ISR (a single node) then advances it to the log end:
        // everything recovered is durable (a clean shutdown fsynced it; an unclean start's
        // recovery fsyncs what it kept), and it is on the whole ISR.
        let checkpointed = checkpointed_hw.map_or(start, |hw| hw.clamp(start, end));
        let role = Role::assign(
            node_id,
            leader,
            leader_epoch,
            &isr,
            checkpointed,
            end,
            std::time::Instant::now(),
        );
        let hw = match &role {
            Role::Leader(state) => state.high_watermark(),
            _ => checkpointed,
        };
        let (hw_tx, _) = watch::channel(hw);
        let (leo_tx, _) = watch::channel(end);
        Partition {
            topic,
            topic_id,
            index,
            log: Mutex::new(log),
            producers: Mutex::new(producers),
            producers_dirty: AtomicBool::new(false),
            snapshot_offset: AtomicI64::new(snapshot_offset),
            settings: RwLock::new(settings),
            leading: AtomicBool::new(role.is_leader()),
            role: Mutex::new(role),
            leader_epoch: AtomicI32::new(leader_epoch),
            partition_epoch: AtomicI32::new(-1),
            log_start_offset: AtomicI64::new(start),
            log_end_offset: AtomicI64::new(end),
            high_watermark: AtomicI64::new(hw),
            recovery_point: AtomicI64::new(end),
            hw_tx,
            leo_tx,
            fsync_before_ack,
            gated_durable: AtomicI64::new(-1),
            flush_queued: AtomicBool::new(false),
            unflushed_messages: AtomicI64::new(0),
            unflushed_since_ms: AtomicI64::new(0),
            deleted: AtomicBool::new(false),
            metrics,
            log_dir,
            clean_point: AtomicI64::new(start),
            dirty_since_ms: AtomicI64::new(0),
        }
    }

    fn lock_log(&self) -> MutexGuard<'_, PartitionLog> {
        // A panic while holding the log lock would be a bug; the log itself stays consistent
        // on disk (recovery handles a torn tail), so keep serving.
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn settings(&self) -> Arc<TopicSettings> {
        self.settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_settings(&self, settings: Arc<TopicSettings>) {
        let log_config = log_config(&settings);
        self.lock_log().set_config(log_config);
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = settings;
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }

    fn lock_role(&self) -> MutexGuard<'_, Role> {
        self.role.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The leader and leader epoch this replica follows, if it is a follower.
    pub fn followed_leader(&self) -> Option<(i32, i32)> {
        match &*self.lock_role() {
            Role::Follower {
                leader,
                leader_epoch,
            } => Some((*leader, *leader_epoch)),
            _ => None,
        }
    }

    /// Whether an append is acknowledged only once fsynced (`strata.fsync.before.ack`).
    pub fn fsync_before_ack(&self) -> bool {
        self.fsync_before_ack
    }

    /// Whether this replica leads the partition.
    pub fn is_leader(&self) -> bool {
        self.leading.load(Ordering::Acquire)
    }

    /// How many replicas the leader's ISR holds, itself included (`None` unless it leads):
    /// what acks=all checks against `min.insync.replicas`.
    pub fn in_sync_replica_count(&self) -> Option<usize> {
        match &*self.lock_role() {
            Role::Leader(state) => Some(state.isr().len()),
            _ => None,
        }
    }

    /// Takes the role the metadata gives `node` for this partition: led by `leader` (-1:
    /// none) in `leader_epoch` with `isr`. Within the same epoch and role only the ISR can
    /// change. A new epoch sets the leader epoch that Fetch and Produce check and appends
    /// stamp (recorded in the epoch cache), starts a fresh role (as a leader: every follower's
    /// position unknown, the HW where it is), and wakes every waiter, so waits of the old
    /// epoch fail. Done under the producer-state and log locks, so no append straddles it.
    pub fn assign(&self, node: i32, leader: i32, leader_epoch: i32, isr: &[i32]) {
        let mut role = self.lock_role();
        if role.leader_epoch() == leader_epoch && role.is_leader() == (leader == node) {
            if let Role::Leader(state) = &mut *role {
                if state.isr() != isr {
                    if let Some(hw) = state.set_isr(isr) {
                        self.publish_high_watermark(hw);
                    }
                }
            }
            return;
        }
        // Leading an epoch it followed before (its start registered, say) starts the epoch
        // in the cache here too.
        let becomes_leader = leader == node && !role.is_leader();
        {
            let _producers = self.lock_producers();
            let mut log = self.lock_log();
            if self.leader_epoch.swap(leader_epoch, Ordering::AcqRel) != leader_epoch
                || becomes_leader
            {
                if let Err(e) = log.adopt_leader_epoch(leader_epoch, leader == node) {
                    self.fail_storage("checkpoint the leader epoch of", &e);
                }
            }
            let own_end = if self.fsync_before_ack {
                self.recovery_point()
            } else {
                log.log_end_offset()
            };
            *role = Role::assign(
                node,
                leader,
                leader_epoch,
                isr,
                self.high_watermark(),
                own_end,
                std::time::Instant::now(),
            );
            self.leading.store(role.is_leader(), Ordering::Release);
        }
        if let Role::Leader(state) = &*role {
            self.publish_high_watermark(state.high_watermark());
        }
        drop(role);
        self.wake();
    }

    /// OffsetForLeaderEpoch: the largest epoch at or below `requested` and the offset where
    /// it ends on this replica; `(-1, -1)` when unknown.
    pub fn end_offset_for_epoch(&self, requested: i32) -> Result<(i32, i64), ErrorCode> {
        if self.is_offline() {
            return Err(ErrorCode::KafkaStorageError);
        }
        Ok(self.lock_log().end_offset_for_epoch(requested))
    }

    /// The leader-epoch cache: (epoch, start offset).
    pub fn leader_epochs(&self) -> Vec<(i32, i64)> {
        self.lock_log().leader_epochs().to_vec()
    }

    /// Cuts this replica's log at `offset` (see `PartitionLog::truncate_to`): what a follower
    /// does when its log diverged from the leader's. The high watermark and the producer state
    /// follow the cut. Never done by a leader, whose high watermark never moves back. Blocking.
    pub fn truncate_to(&self, offset: i64) -> Result<i64, ErrorCode> {
        if self.is_offline() {
            return Err(ErrorCode::KafkaStorageError);
        }
        let mut producers = self.lock_producers();
        let mut log = self.lock_log();
        let end = log.truncate_to(offset, now_ms()).map_err(|e| match e {
            LogError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            other => {
                self.fail_storage("truncate", &other);
                ErrorCode::KafkaStorageError
            }
        })?;
        self.log_end_offset.store(end, Ordering::Release);
        self.high_watermark.fetch_min(end, Ordering::AcqRel);
        self.recovery_point.fetch_min(end, Ordering::AcqRel);
        self.hw_tx.send_replace(self.high_watermark());
        // The producer state may describe batches that are gone: rebuild it from the log.
        ProducerStateManager::remove_snapshot(log.dir());
        let (state, snapshot_offset) = rebuild_producer_state(&mut log, &self.topic, self.index);
        *producers = state;
        self.snapshot_offset
            .store(snapshot_offset, Ordering::Release);
        self.producers_dirty.store(true, Ordering::Release);
        Ok(end)
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset.load(Ordering::Acquire)
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset.load(Ordering::Acquire)
    }

    /// Every offset below this is known to be on stable storage.
    pub fn recovery_point(&self) -> i64 {
        self.recovery_point.load(Ordering::Acquire)
    }

    pub fn size_bytes(&self) -> u64 {
        self.lock_log().size_bytes()
    }

    /// A receiver that wakes when the high watermark moves.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.hw_tx.subscribe()
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    pub(crate) fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
        self.wake();
    }

    /// Whether the data directory holding this partition is offline after a storage error.
    pub fn is_offline(&self) -> bool {
        self.log_dir.is_offline()
    }

    /// Wakes everything waiting on the high watermark or the log end, so that it notices a
    /// deletion, an offline directory or a new role.
    pub(crate) fn wake(&self) {
        self.hw_tx.send_modify(|_| {});
        self.leo_tx.send_modify(|_| {});
    }

    /// A receiver that wakes when the log end moves (or on [`Self::wake`]).
    pub fn subscribe_log_end(&self) -> watch::Receiver<i64> {
        self.leo_tx.subscribe()
    }

    /// Takes the data directory offline after `error` (see `log_dir.rs`) and wakes this
    /// partition's waiters; other partitions' waiters are woken by the flusher.
    pub(crate) fn fail_storage(&self, what: &str, error: &dyn std::fmt::Display) {
        let what = format!("{what} {}-{}", self.topic, self.index);
        self.log_dir.fail(&what, error);
        self.wake();
    }

    /// Maps an append error to Kafka's code. A write that was cut back cleanly (a full disk)
    /// fails only this request; any other I/O error leaves the log in an unknown state and
    /// takes the directory offline.
    fn append_error(&self, e: LogError) -> ErrorCode {
        match e {
            LogError::WriteRolledBack { .. } => {
                tracing::warn!(topic = %self.topic, partition = self.index, error = %e, "append failed; nothing was written");
            }
            LogError::Io { .. } | LogError::Corrupt { .. } => self.fail_storage("append to", &e),
            LogError::InvalidBatches(_)
            | LogError::AppendTooLarge { .. }
            | LogError::OffsetOutOfRange { .. } => {
                tracing::error!(topic = %self.topic, partition = self.index, error = %e, "append refused");
            }
        }
        ErrorCode::KafkaStorageError
    }

    fn offline_error(&self) -> (ErrorCode, Option<String>) {
        (
            ErrorCode::KafkaStorageError,
            Some(format!(
                "the log directory {} is offline after a storage error",
                self.log_dir.path().display()
            )),
        )
    }

    fn lock_producers(&self) -> MutexGuard<'_, ProducerStateManager> {
        self.producers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends validated batches (`headers` are theirs, in order). Batches of idempotent
    /// producers are checked against the producer state first: a retried batch is answered
    /// with its original offsets and not written again; a sequence gap or a stale epoch is
    /// refused. The caller decides when to acknowledge (acks=all waits for the HW to pass the
    /// last offset).
    pub fn append(
        &self,
        batches: &[u8],
        headers: &[BatchHeader],
        record_count: i64,
        now_ms: i64,
    ) -> Result<Appended, (ErrorCode, Option<String>)> {
        if self.is_deleted() {
            return Err((ErrorCode::UnknownTopicOrPartition, None));
        }
        if self.is_offline() {
            return Err(self.offline_error());
        }
        if !self.is_leader() {
            return Err((ErrorCode::NotLeaderOrFollower, None));
        }
        let settings = self.settings();
        let log_append_time = settings.log_append_time.then_some(now_ms);
        let idempotent = headers.iter().any(|h| h.producer_id >= 0);
        if idempotent && headers.len() != 1 {
            // Kafka allows exactly one batch per partition in a produce request (v3+);
            // sequence checks rely on it.
            return Err((
                ErrorCode::InvalidRecord,
                Some("a produce request may hold only one record batch per partition".into()),
            ));
        }
        let mut producers = self.lock_producers();
        if idempotent {
            match producers.check(&headers[0]) {
                Ok(Check::Append) => {}
                Ok(Check::Duplicate(batch)) => {
                    tracing::debug!(topic = %self.topic, partition = self.index, producer_id = headers[0].producer_id, sequence = batch.first_seq, "duplicate batch");
                    // Answered under the current epoch: if the original is cut by a new
                    // leader, the wait fails and the producer retries.
                    return Ok(Appended::Duplicate {
                        base_offset: batch.first_offset,
                        last_offset: batch.last_offset,
                        leader_epoch: self.leader_epoch(),
                    });
                }
                Err(e) => {
                    tracing::info!(topic = %self.topic, partition = self.index, error = %e, "refused a producer batch");
                    return Err((producer_error_code(&e), Some(e.to_string())));
                }
            }
        }
        let (info, leader_epoch) = {
            let mut log = self.lock_log();
            let info = log
                .append(batches, now_ms, log_append_time)
                .map_err(|e| (self.append_error(e), None))?;
            debug_assert_eq!(info.last_offset + 1, log.log_end_offset());
            self.log_end_offset
                .store(log.log_end_offset(), Ordering::Release);
            // The epoch the log stamped: it changes only under this lock.
            (info, self.leader_epoch())
        };
        if idempotent {
            let mut h = headers[0];
            h.base_offset = info.base_offset;
            producers.on_batch(&h, now_ms);
            self.producers_dirty.store(true, Ordering::Release);
        }
        drop(producers);
        self.after_write(info.last_offset, record_count, now_ms);
        Ok(Appended::New { info, leader_epoch })
    }

    /// Appends batches the broker built itself (internal topics).
    pub fn append_internal(&self, batches: &[u8], now_ms: i64) -> Result<Appended, ErrorCode> {
        let mut headers = Vec::new();
        let mut records = 0i64;
        for item in strata_protocol::batch::iter_batches(batches) {
            let (h, _) = item.map_err(|_| ErrorCode::CorruptMessage)?;
            records += i64::from(h.records_count);
            headers.push(h);
        }
        self.append(batches, &headers, records, now_ms)
            .map_err(|(code, _)| code)
    }

    /// Appends a transaction marker for `producer_id` (a control batch) and records it in
    /// the producer state; an abort that ends an open transaction goes to the aborted
    /// transaction index. Returns what was appended (the marker's offset is its base).
    pub fn append_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        marker: Marker,
        coordinator_epoch: i32,
        now_ms: i64,
    ) -> Result<Appended, ErrorCode> {
        if self.is_deleted() {
            return Err(ErrorCode::UnknownTopicOrPartition);
        }
        if self.is_offline() {
            return Err(ErrorCode::KafkaStorageError);
        }
        if !self.is_leader() {
            return Err(ErrorCode::NotLeaderOrFollower);
        }
        let mut producers = self.lock_producers();
        producers
            .check_marker(producer_id, producer_epoch)
            .map_err(|e| producer_error_code(&e))?;
        let control = strata_protocol::records::ControlMarker {
            commit: marker == Marker::Commit,
            coordinator_epoch,
        };
        let bytes =
            strata_protocol::records::encode_marker(producer_id, producer_epoch, control, now_ms)
                .map_err(|_| ErrorCode::UnknownServerError)?;
        let settings = self.settings();
        let log_append_time = settings.log_append_time.then_some(now_ms);
        let mut log = self.lock_log();
        let info = log
            .append(&bytes, now_ms, log_append_time)
            .map_err(|e| self.append_error(e))?;
        self.log_end_offset
            .store(log.log_end_offset(), Ordering::Release);
        let record = MarkerRecord {
            producer_id,
            epoch: producer_epoch,
            marker,
            coordinator_epoch,
            offset: info.base_offset,
            timestamp: now_ms,
        };
        if let Some(aborted) = producers.on_marker(&record, self.high_watermark()) {
            if let Err(e) = log.add_aborted_txn(aborted) {
                // The marker is in the log but its index entry is not: read_committed readers
                // would see aborted records. Stop serving; recovery rebuilds the entry.
                self.fail_storage("index an aborted transaction of", &e);
                return Err(ErrorCode::KafkaStorageError);
            }
        }
        let leader_epoch = self.leader_epoch();
        drop(log);
        self.producers_dirty.store(true, Ordering::Release);
        drop(producers);
        self.after_write(info.last_offset, 1, now_ms);
        Ok(Appended::New { info, leader_epoch })
    }

    /// A follower appends batches fetched from its leader: offsets and leader-epoch stamps
    /// as the leader wrote them (`PartitionLog::append_replicated`), the first continuing this
    /// log's end exactly. The producer state and the aborted-transaction index follow, as on
    /// the leader, so this replica can lead with them (deduplicate retried batches, serve
    /// `read_committed`). Returns the new log end. A leader never replicates into its own log.
    pub fn append_replicated(&self, batches: &[u8], now_ms: i64) -> Result<i64, ErrorCode> {
        if self.is_deleted() {
            return Err(ErrorCode::UnknownTopicOrPartition);
        }
        if self.is_offline() {
            return Err(ErrorCode::KafkaStorageError);
        }
        if self.is_leader() {
            return Err(ErrorCode::NotLeaderOrFollower);
        }
        let mut producers = self.lock_producers();
        let mut log = self.lock_log();
        let info = log
            .append_replicated(batches, now_ms)
            .map_err(|e| match e {
                LogError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
                LogError::InvalidBatches(_) => ErrorCode::CorruptMessage,
                other => self.append_error(other),
            })?;
        let end = log.log_end_offset();
        self.log_end_offset.store(end, Ordering::Release);
        let hw = self.high_watermark();
        let mut records = 0i64;
        let mut idempotent = false;
        for item in strata_protocol::batch::iter_batches(batches) {
            let Ok((h, range)) = item else { break };
            records += i64::from(h.records_count);
            if h.producer_id < 0 {
                continue;
            }
            idempotent = true;
            if !h.is_control() {
                producers.on_batch(&h, now_ms);
                continue;
            }
            let Some(m) = strata_protocol::records::decode_marker(&batches[range]) else {
                continue;
            };
            let record = MarkerRecord {
                producer_id: h.producer_id,
                epoch: h.producer_epoch,
                marker: if m.commit {
                    Marker::Commit
                } else {
                    Marker::Abort
                },
                coordinator_epoch: m.coordinator_epoch,
                offset: h.base_offset,
                timestamp: now_ms,
            };
            if let Some(aborted) = producers.on_marker(&record, hw) {
                if let Err(e) = log.add_aborted_txn(aborted) {
                    self.fail_storage("index an aborted transaction of", &e);
                    return Err(ErrorCode::KafkaStorageError);
                }
            }
        }
        drop(log);
        if idempotent {
            self.producers_dirty.store(true, Ordering::Release);
        }
        drop(producers);
        self.after_write(info.last_offset, records, now_ms);
        Ok(end)
    }

    /// A follower learnt its leader's high watermark and log start: its own HW is the
    /// leader's, bounded by what it holds durably (with `strata.fsync.before.ack`) or has
    /// written; its log start follows the leader's (DeleteRecords, retention), never past
    /// its own end.
    pub fn follow_leader(&self, leader_hw: i64, leader_log_start: i64) {
        if self.is_leader() || self.is_offline() {
            return;
        }
        let own_end = if self.fsync_before_ack {
            self.recovery_point().min(self.log_end_offset())
        } else {
            self.log_end_offset()
        };
        self.publish_high_watermark(leader_hw.min(own_end));
        if leader_log_start > self.log_start_offset() {
            let mut log = self.lock_log();
            let target = leader_log_start.min(log.log_end_offset());
            match log.delete_records_before(target) {
                Ok(start) => self.log_start_offset.store(start, Ordering::Release),
                Err(e) => self.fail_storage("advance the log start of", &e),
            }
        }
    }

    /// The epoch of the last batch this replica holds (-1: none): what a follower's fetch
    /// names as `last_fetched_epoch`, for the leader to check that the logs agree.
    pub fn latest_epoch(&self) -> i32 {
        self.lock_log()
            .leader_epochs()
            .last()
            .map_or(-1, |(e, _)| *e)
    }

    /// The leader checks a follower's fetch: if this log's `last_fetched_epoch` ends before
    /// `fetch_offset`, or the follower's epoch is unknown here, the follower's log diverged
    /// and must be cut: the (epoch, end offset) to truncate to, Kafka's `diverging_epoch`.
    pub fn divergence(&self, last_fetched_epoch: i32, fetch_offset: i64) -> Option<(i32, i64)> {
        if last_fetched_epoch < 0 {
            return None;
        }
        let (epoch, end) = self.lock_log().end_offset_for_epoch(last_fetched_epoch);
        (epoch != last_fetched_epoch || end < fetch_offset).then_some((epoch, end))
    }

    /// Replica `replica` fetched from `fetch_offset`: everything below is on it (durably,
    /// with `strata.fsync.before.ack`). The leader's state may advance the HW, and may
    /// propose the replica into the ISR: the proposal is returned for the caller to send.
    pub fn on_follower_fetch(&self, replica: i32, fetch_offset: i64) -> Option<IsrProposal> {
        let leader_end = self.log_end_offset();
        let now = std::time::Instant::now();
        let (moved, proposal) = match &mut *self.lock_role() {
            Role::Leader(state) => {
                let moved = state.on_follower_fetch(replica, fetch_offset, leader_end, now);
                let proposal = state
                    .expansion(replica, fetch_offset)
                    .map(|isr| self.proposal(state.leader_epoch(), isr));
                (moved, proposal)
            }
            _ => (None, None),
        };
        if let Some(hw) = moved {
            self.publish_high_watermark(hw);
        }
        proposal
    }

    /// As leader at `now`: a proposal without the ISR members that have not caught up for
    /// `max_lag` (`replica.lag.time.max.ms`), if any.
    pub fn propose_isr_shrink(
        &self,
        now: std::time::Instant,
        max_lag: std::time::Duration,
    ) -> Option<IsrProposal> {
        match &mut *self.lock_role() {
            Role::Leader(state) => state
                .shrink(now, max_lag)
                .map(|isr| self.proposal(state.leader_epoch(), isr)),
            _ => None,
        }
    }

    /// The controller answered (or could not be asked) the proposal made in `leader_epoch`:
    /// another may follow. An accepted change already reached this replica through the
    /// metadata, before the answer.
    pub fn isr_proposal_settled(&self, leader_epoch: i32) {
        let moved = match &mut *self.lock_role() {
            Role::Leader(state) if state.leader_epoch() == leader_epoch => state.clear_pending(),
            _ => None,
        };
        if let Some(hw) = moved {
            self.publish_high_watermark(hw);
        }
    }

    /// Records the partition epoch of the metadata this replica now follows.
    pub fn set_partition_epoch(&self, partition_epoch: i32) {
        self.partition_epoch
            .store(partition_epoch, Ordering::Release);
    }

    fn proposal(&self, leader_epoch: i32, isr: Vec<i32>) -> IsrProposal {
        IsrProposal {
            topic_id: self.topic_id,
            partition: self.index,
            leader_epoch,
            partition_epoch: self.partition_epoch.load(Ordering::Acquire),
            isr,
        }
    }

    /// Reads whole batches from `offset` for a follower: up to the log end, not the HW.
    pub fn read_for_replica(&self, offset: i64, max_bytes: usize) -> Result<ReadResult, ErrorCode> {
        if self.is_offline() {
            return Err(ErrorCode::KafkaStorageError);
        }
        let log = self.lock_log();
        let log_start_offset = log.log_start_offset();
        let log_end_offset = log.log_end_offset();
        if offset < log_start_offset || offset > log_end_offset {
            return Err(ErrorCode::OffsetOutOfRange);
        }
        let records = log
            .read(offset, max_bytes, log_end_offset)
            .map_err(|e| self.read_error(e))?;
        drop(log);
        Ok(ReadResult {
            records,
            high_watermark: self.high_watermark(),
            last_stable_offset: -1,
            log_start_offset,
            log_end_offset,
            aborted: Vec::new(),
        })
    }

    fn after_write(&self, last_offset: i64, record_count: i64, now_ms: i64) {
        if !self.fsync_before_ack && !self.is_offline() {
            self.on_own_end(last_offset + 1);
        }
        self.leo_tx.send_replace(last_offset + 1);
        let _ = self.unflushed_since_ms.compare_exchange(
            0,
            now_ms,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.unflushed_messages
            .fetch_add(record_count, Ordering::AcqRel);
        let _ =
            self.dirty_since_ms
                .compare_exchange(0, now_ms, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The last stable offset: `read_committed` reads stop there.
    pub fn last_stable_offset(&self) -> i64 {
        let hw = self.high_watermark();
        let mut producers = self.lock_producers();
        producers.on_high_watermark(hw);
        producers.last_stable_offset(hw)
    }

    /// Open transactions in this partition: (producer id, epoch, first offset).
    pub fn open_transactions(&self) -> Vec<(i64, i16, i64)> {
        self.lock_producers().ongoing()
    }

    /// Producers known here (DescribeProducers): a copy of their entries.
    pub fn producer_entries(&self) -> Vec<strata_log::producer_state::ProducerEntry> {
        self.lock_producers().entries().cloned().collect()
    }

    /// Drops producers idle for `producer.id.expiration.ms`.
    pub fn expire_producers(&self, now_ms: i64, expiration_ms: i64) {
        if self.lock_producers().expire(now_ms, expiration_ms) > 0 {
            self.producers_dirty.store(true, Ordering::Release);
        }
    }

    /// Writes the producer-state snapshot if the state changed, or with `if_log_moved` (at
    /// shutdown) also if the log grew past the last snapshot. Blocking: fsyncs the log first,
    /// then the snapshot, so the snapshot never describes data a power loss could take.
    pub fn snapshot_producer_state(&self, if_log_moved: bool) {
        let moved =
            if_log_moved && self.snapshot_offset.load(Ordering::Acquire) != self.log_end_offset();
        if !self.producers_dirty.swap(false, Ordering::AcqRel) && !moved {
            return;
        }
        if !crate::flusher::flush_now(self) {
            // The snapshot must never describe data that is not durable.
            self.producers_dirty.store(true, Ordering::Release);
            return;
        }
        let (state, offset, dir) = {
            let producers = self.lock_producers();
            let log = self.lock_log();
            (
                producers.clone(),
                log.log_end_offset(),
                log.dir().to_path_buf(),
            )
        };
        match state.write_snapshot(&dir, offset) {
            Ok(()) => self.snapshot_offset.store(offset, Ordering::Release),
            Err(e) => {
                self.producers_dirty.store(true, Ordering::Release);
                tracing::warn!(topic = %self.topic, partition = self.index, error = %e, "cannot write the producer state snapshot");
            }
        }
    }

    /// Whether this partition should be queued for an fsync now.
    pub fn needs_flush(&self, now_ms: i64) -> bool {
        if self.fsync_before_ack {
            return true;
        }
        let settings = self.settings();
        let since = self.unflushed_since_ms.load(Ordering::Acquire);
        self.unflushed_messages.load(Ordering::Acquire) >= settings.flush_messages
            || (since > 0 && now_ms.saturating_sub(since) >= settings.flush_ms)
    }

    pub(crate) fn sync_job(&self) -> Option<SyncJob> {
        self.unflushed_messages.store(0, Ordering::Release);
        self.unflushed_since_ms.store(0, Ordering::Release);
        self.lock_log().sync_job()
    }

    /// Called by the flusher once everything below `durable_offset` is on stable storage.
    pub(crate) fn on_flushed(&self, durable_offset: i64) {
        if test_fsync_gate::holds(&self.topic) {
            // Test knob: this fsync "has not finished" until the gate opens.
            self.gated_durable
                .fetch_max(durable_offset, Ordering::AcqRel);
            return;
        }
        self.on_flushed_now(durable_offset);
    }

    /// Completes the fsyncs a closed test gate held back ([`test_fsync_gate`]).
    pub(crate) fn release_gated_fsync(&self) {
        let durable = self.gated_durable.swap(-1, Ordering::AcqRel);
        if durable >= 0 {
            self.on_flushed_now(durable);
        }
    }

    fn on_flushed_now(&self, durable_offset: i64) {
        self.recovery_point
            .fetch_max(durable_offset, Ordering::AcqRel);
        // After a storage error nothing more is acknowledged, even if a later fsync works:
        // Linux may have dropped the pages that failed.
        if self.fsync_before_ack && !self.is_offline() {
            self.on_own_end(durable_offset);
        }
    }

    /// This replica's own end moved (durable with `strata.fsync.before.ack`, written
    /// otherwise): a leader's state may advance the HW. On a single node (ISR = {self}) the
    /// new end is the HW.
    fn on_own_end(&self, end: i64) {
        let moved = match &mut *self.lock_role() {
            Role::Leader(state) => state.on_leader_end(end),
            Role::Follower { .. } | Role::Offline { .. } => None,
        };
        if let Some(hw) = moved {
            self.publish_high_watermark(hw);
        }
    }

    /// Publishes a HW the leader state computed; it never moves back.
    fn publish_high_watermark(&self, offset: i64) {
        let previous = self.high_watermark.fetch_max(offset, Ordering::AcqRel);
        if offset > previous {
            self.hw_tx.send_replace(offset);
        }
    }

    /// Reads whole batches from `offset`, up to the high watermark.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult, ErrorCode> {
        self.read_isolated(offset, max_bytes, false)
    }

    /// Reads whole batches from `offset`, up to the high watermark, or with `read_committed`
    /// up to the last stable offset, with the aborted transactions in that range.
    pub fn read_isolated(
        &self,
        offset: i64,
        max_bytes: usize,
        read_committed: bool,
    ) -> Result<ReadResult, ErrorCode> {
        if self.is_offline() {
            return Err(ErrorCode::KafkaStorageError);
        }
        let last_stable_offset = self.last_stable_offset();
        let log = self.lock_log();
        let high_watermark = self.high_watermark();
        let bound = if read_committed {
            last_stable_offset.min(high_watermark)
        } else {
            high_watermark
        };
        let log_start_offset = log.log_start_offset();
        let log_end_offset = log.log_end_offset();
        if offset < log_start_offset || offset > log_end_offset {
            return Err(ErrorCode::OffsetOutOfRange);
        }
        let records = if offset >= bound {
            Bytes::new()
        } else {
            log.read(offset, max_bytes, bound)
                .map_err(|e| self.read_error(e))?
        };
        let aborted = if read_committed && !records.is_empty() {
            log.aborted_txns(offset, bound)
        } else {
            Vec::new()
        };
        Ok(ReadResult {
            records,
            high_watermark,
            last_stable_offset,
            log_start_offset,
            log_end_offset,
            aborted,
        })
    }

    /// The partition's offsets for a fetch at `offset` that has no byte budget left: no
    /// records and no log read, but the same OFFSET_OUT_OF_RANGE check as [`Self::read`].
    pub fn offsets_at(&self, offset: i64) -> Result<ReadResult, ErrorCode> {
        let log_start_offset = self.log_start_offset();
        let log_end_offset = self.log_end_offset();
        if offset < log_start_offset || offset > log_end_offset {
            return Err(ErrorCode::OffsetOutOfRange);
        }
        Ok(ReadResult {
            records: Bytes::new(),
            high_watermark: self.high_watermark(),
            last_stable_offset: self.last_stable_offset(),
            log_start_offset,
            log_end_offset,
            aborted: Vec::new(),
        })
    }

    fn read_error(&self, e: LogError) -> ErrorCode {
        match e {
            LogError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            other @ (LogError::Io { .. } | LogError::WriteRolledBack { .. }) => {
                self.fail_storage("read or checkpoint", &other);
                ErrorCode::KafkaStorageError
            }
            other => {
                tracing::error!(topic = %self.topic, partition = self.index, error = %other, "read failed");
                ErrorCode::KafkaStorageError
            }
        }
    }

    /// The first offset whose timestamp is at or after `timestamp`, below the HW.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, ErrorCode> {
        let hw = self.high_watermark();
        let found = self
            .lock_log()
            .offset_for_timestamp(timestamp)
            .map_err(|e| self.read_error(e))?;
        Ok(found.filter(|(offset, _)| *offset < hw))
    }

    /// The offset and timestamp of the record with the largest timestamp.
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        let hw = self.high_watermark();
        self.lock_log()
            .max_timestamp()
            .filter(|(offset, _)| *offset < hw)
    }

    /// Advances the log start offset to `offset` (DeleteRecords); returns the new start.
    pub fn delete_records_before(&self, offset: i64) -> Result<i64, ErrorCode> {
        let hw = self.high_watermark();
        if offset > hw || offset < 0 {
            return Err(ErrorCode::OffsetOutOfRange);
        }
        if self.is_offline() {
            return Err(ErrorCode::KafkaStorageError);
        }
        let mut log = self.lock_log();
        let start = log
            .delete_records_before(offset)
            .map_err(|e| self.read_error(e))?;
        self.log_start_offset.store(start, Ordering::Release);
        Ok(start)
    }

    /// Applies `retention.ms` / `retention.bytes` when the topic's cleanup policy includes
    /// `delete`; advances the log start offset. Blocking (deletes files).
    pub fn apply_retention(&self, now_ms: i64) {
        let settings = self.settings();
        if !settings.delete || self.is_offline() {
            return;
        }
        let hw = self.high_watermark();
        let mut log = self.lock_log();
        match log.apply_retention(now_ms, settings.retention_ms, settings.retention_bytes, hw) {
            Ok(Some(start)) => self.log_start_offset.store(start, Ordering::Release),
            Ok(None) => {}
            Err(e @ LogError::Io { .. }) => self.fail_storage("apply retention to", &e),
            Err(e) => {
                tracing::warn!(topic = %self.topic, partition = self.index, error = %e, "retention failed")
            }
        }
    }

    /// How much this partition wants a cleaning pass at `now_ms`: `None` if it is not due
    /// (not compacted, deleted, or none of the reasons below); otherwise its dirty ratio (the
    /// dirty share of the cleanable log, `min.cleanable.dirty.ratio` or more), or 1 plus it
    /// when a pass is forced — a dirty record waited `max.compaction.lag.ms`, or a delete
    /// horizon passed so tombstones can go. The cleaner picks the highest.
    pub fn cleaning_priority(&self, now_ms: i64) -> Option<f64> {
        let settings = self.settings();
        if !settings.compact || self.is_deleted() || self.is_offline() {
            return None;
        }
        let hw = self.high_watermark();
        let log = self.lock_log();
        self.priority_locked(&log, &settings, now_ms, hw)
    }

    fn priority_locked(
        &self,
        log: &PartitionLog,
        settings: &TopicSettings,
        now_ms: i64,
        hw: i64,
    ) -> Option<f64> {
        let (dirty, total) = log.cleanable_bytes(self.clean_point.load(Ordering::Acquire), hw);
        let ratio = if total == 0 {
            0.0
        } else {
            dirty as f64 / total as f64
        };
        let since = self.dirty_since_ms.load(Ordering::Acquire);
        let overdue = dirty > 0
            && since > 0
            && now_ms.saturating_sub(since) >= settings.max_compaction_lag_ms;
        if overdue || log.delete_horizon_due(now_ms) {
            Some(1.0 + ratio)
        } else if dirty > 0 && ratio >= settings.min_cleanable_dirty_ratio {
            Some(ratio)
        } else {
            None
        }
    }

    /// Compacts the closed segments of a `cleanup.policy=compact` topic (see
    /// `PartitionLog::clean`) if it is due (see [`Self::cleaning_priority`]). Blocking
    /// (rewrites files), but it holds the log's lock only briefly: to take a snapshot of the
    /// segments, and to swap each rewritten segment in (a few renames and fsyncs); reading the
    /// log and writing the rewrites happen without it, so produce requests and fetches go on
    /// (`PartitionLog::clean_concurrently`). A pass that finds the log changed under it
    /// (retention, DeleteRecords, a truncation), or the partition deleted or its directory
    /// offline, gives up and is retried by a later round. Returns the bytes of the segments it
    /// rewrote.
    pub fn clean(&self, now_ms: i64, max_keys: usize) -> u64 {
        self.clean_with_hook(now_ms, max_keys, &mut |_| {})
    }

    /// [`Self::clean`], calling `hook` at each stage of the copy (a no-op outside tests).
    fn clean_with_hook(
        &self,
        now_ms: i64,
        max_keys: usize,
        hook: &mut dyn FnMut(CleanStage),
    ) -> u64 {
        let settings = self.settings();
        if !settings.compact {
            return 0;
        }
        let hw = self.high_watermark();
        let opts = strata_log::CleanOptions {
            delete_retention_ms: settings.delete_retention_ms,
            min_compaction_lag_ms: settings.min_compaction_lag_ms,
        };
        let (reach, dirty_since) = {
            let log = self.lock_log();
            if self.priority_locked(&log, &settings, now_ms, hw).is_none() {
                return 0;
            }
            // Appends during the pass are not seen by it: their wait for the cleaner
            // (`max.compaction.lag.ms`) starts afresh from here.
            (
                log.cleanable_end(hw),
                self.dirty_since_ms.swap(0, Ordering::AcqRel),
            )
        };
        let result = PartitionLog::clean_concurrently_with_hook(
            || (!self.is_deleted() && !self.is_offline()).then(|| self.lock_log()),
            now_ms,
            opts,
            hw,
            max_keys,
            hook,
        );
        if matches!(&result, Ok(report) if !report.abandoned) {
            self.clean_point.store(reach, Ordering::Release);
        } else if dirty_since > 0 {
            // The dirty records still wait: keep the earliest time they were appended.
            let _ = self
                .dirty_since_ms
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                    Some(if now == 0 {
                        dirty_since
                    } else {
                        now.min(dirty_since)
                    })
                });
        }
        match result {
            Ok(report) => {
                if report.segments_cleaned > 0 || report.horizons_recorded > 0 {
                    tracing::info!(
                        topic = %self.topic,
                        partition = self.index,
                        segments = report.segments_cleaned,
                        records_removed = report.records_removed,
                        bytes_before = report.bytes_before,
                        bytes_after = report.bytes_after,
                        delete_horizons_recorded = report.horizons_recorded,
                        abandoned = report.abandoned,
                        "compacted"
                    );
                }
                if report.abandoned {
                    tracing::debug!(topic = %self.topic, partition = self.index, "the log changed during a cleaning pass; a later round retries");
                }
                report.bytes_before
            }
            Err(e) => {
                tracing::warn!(topic = %self.topic, partition = self.index, error = %e, "compaction failed");
                0
            }
        }
    }

    /// Rolls the active segment if it is older than `segment.ms`.
    pub fn maybe_roll(&self, now_ms: i64) {
        if let Err(e) = self.lock_log().maybe_roll(now_ms) {
            tracing::warn!(topic = %self.topic, partition = self.index, error = %e, "segment roll failed");
        }
    }
}

/// Rebuilds the producer state of a log just opened: the snapshot, if it matches the log,
/// then every batch after it (markers included; aborted transactions found on the way are
/// put back in the transaction index in case a crash lost their entry).
/// Also returns the offset the snapshot covered (-1 if there was none usable).
fn rebuild_producer_state(
    log: &mut PartitionLog,
    topic: &str,
    index: i32,
) -> (ProducerStateManager, i64) {
    let (mut state, from, snapshot_offset) = match ProducerStateManager::read_snapshot(log.dir()) {
        Some((state, offset)) if offset <= log.log_end_offset() => {
            (state, offset.max(log.log_start_offset()), offset)
        }
        Some(_) => {
            // Written before a crash lost the log's tail: replay everything instead.
            ProducerStateManager::remove_snapshot(log.dir());
            (ProducerStateManager::new(), log.log_start_offset(), -1)
        }
        None => (ProducerStateManager::new(), log.log_start_offset(), -1),
    };
    let end = log.log_end_offset();
    let now = now_ms();
    let mut aborted = Vec::new();
    let mut batches = 0u64;
    let scanned = log.scan_batches(from, |h, control| {
        batches += 1;
        match control {
            Some(bytes) if h.producer_id >= 0 => {
                if let Some(m) = strata_protocol::records::decode_marker(bytes) {
                    let marker = if m.commit {
                        Marker::Commit
                    } else {
                        Marker::Abort
                    };
                    let record = MarkerRecord {
                        producer_id: h.producer_id,
                        epoch: h.producer_epoch,
                        marker,
                        coordinator_epoch: m.coordinator_epoch,
                        offset: h.base_offset,
                        timestamp: now,
                    };
                    aborted.extend(state.on_marker(&record, end));
                }
            }
            Some(_) => {}
            None => state.on_batch(h, now),
        }
    });
    if let Err(e) = scanned {
        tracing::error!(topic, partition = index, error = %e, "cannot replay producer state; duplicates of retried batches may not be detected");
    }
    for txn in aborted {
        if let Err(e) = log.add_aborted_txn(txn) {
            tracing::error!(topic, partition = index, error = %e, "cannot index an aborted transaction");
        }
    }
    if batches > 0 {
        tracing::debug!(
            topic,
            partition = index,
            from,
            batches,
            producers = state.len(),
            "replayed producer state"
        );
    }
    (state, snapshot_offset)
}

/// The log crate's view of a topic's settings.
pub fn log_config(settings: &TopicSettings) -> LogConfig {
    LogConfig {
        segment_bytes: settings.segment_bytes,
        segment_ms: settings.segment_ms,
        index_interval_bytes: settings.index_interval_bytes,
    }
}

/// A test-only knob, off unless the hidden broker configs `strata.test.fsync.gate.topic` and
/// `strata.test.fsync.gate.file` are set: while that file exists, fsyncs of that topic's
/// partitions do not complete (their high watermark stays put under
/// `strata.fsync.before.ack`), as if the disk were slow; once it is removed they complete.
/// Integration tests use it to hold one operation on a durable write deterministically.
/// It is held back after the fsync itself, so the flusher's other partitions go on.
pub mod test_fsync_gate {
    use std::path::PathBuf;
    use std::sync::OnceLock;

    static GATE: OnceLock<(String, PathBuf)> = OnceLock::new();

    /// Sets the gate (once per process: the broker reads its config at start-up).
    pub fn configure(topic: String, file: PathBuf) {
        let _ = GATE.set((topic, file));
    }

    /// Whether fsyncs of `topic` are held back now.
    pub fn holds(topic: &str) -> bool {
        GATE.get()
            .is_some_and(|(t, file)| t == topic && file.exists())
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Partition 0 of topic `t` in `dir/t-0` with default settings, as node `node` sees it when
/// `leader` leads it in `leader_epoch` with `isr`: a test building block for replication.
#[cfg(test)]
pub(crate) fn test_replica(
    dir: &std::path::Path,
    node: i32,
    leader: i32,
    leader_epoch: i32,
    isr: &[i32],
) -> Partition {
    let settings = Arc::new(TopicSettings::resolve(&crate::config::ConfigLayers {
        topic: &Default::default(),
        dynamic_broker: None,
        dynamic_default: None,
        static_broker: &Default::default(),
    }));
    let (mut log, _) =
        PartitionLog::open(&dir.join("t-0"), log_config(&settings), 0).expect("open");
    log.adopt_leader_epoch(leader_epoch, leader == node)
        .expect("epoch");
    Partition::new(
        "t".into(),
        Uuid::nil(),
        0,
        log,
        settings,
        PartitionInit {
            node_id: node,
            leader,
            isr: isr.to_vec(),
            leader_epoch,
            fsync_before_ack: true,
            log_dir: Arc::new(LogDirState::new(dir)),
            checkpointed_hw: None,
            metrics: Default::default(),
        },
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use strata_protocol::records::{encode_batch, record_timestamps, PlainRecord};

    use super::*;
    use crate::config::ConfigLayers;

    /// The offsets of every record, read as a consumer from `earliest` does.
    fn offsets(p: &Partition) -> Vec<i64> {
        let mut out = Vec::new();
        let mut next = p.log_start_offset();
        while next < p.high_watermark() {
            let read = p.read(next, 1 << 20).expect("read");
            for item in strata_protocol::batch::iter_batches(&read.records) {
                let (header, range) = item.expect("whole batches");
                let records = record_timestamps(&read.records[range]).expect("records");
                out.extend(records.into_iter().map(|(o, _)| o));
                next = header.last_offset() + 1;
            }
        }
        out
    }

    /// A partition of a compacted topic with one batch a segment (`segment.bytes` is tiny)
    /// in `dir`.
    fn compacted_partition(dir: &std::path::Path) -> Partition {
        partition_with(
            dir,
            &[
                ("cleanup.policy", "compact"),
                ("delete.retention.ms", "1000"),
                ("min.compaction.lag.ms", "0"),
                ("segment.bytes", "14"),
            ],
            false,
        )
    }

    /// Partition 0 of topic `t` in `dir` with topic configs `configs`, led by this node (1)
    /// alone in epoch 0.
    fn partition_with(
        dir: &std::path::Path,
        configs: &[(&str, &str)],
        fsync_before_ack: bool,
    ) -> Partition {
        let topic: BTreeMap<String, String> = configs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let settings = Arc::new(TopicSettings::resolve(&ConfigLayers {
            topic: &topic,
            dynamic_broker: None,
            dynamic_default: None,
            static_broker: &BTreeMap::new(),
        }));
        let (log, _) =
            PartitionLog::open(&dir.join("t-0"), log_config(&settings), 0).expect("open");
        Partition::new(
            "t".into(),
            Uuid::nil(),
            0,
            log,
            settings,
            PartitionInit {
                node_id: 1,
                leader: 1,
                isr: vec![1],
                leader_epoch: 0,
                fsync_before_ack,
                log_dir: Arc::new(LogDirState::new(dir)),
                checkpointed_hw: None,
                metrics: Default::default(),
            },
        )
    }

    /// Appends one record with an ancient timestamp; returns its offset.
    fn append_record(p: &Partition, key: &[u8], value: Option<&[u8]>) -> i64 {
        let batch = encode_batch(
            &[PlainRecord::new(Some(key), value, 1)],
            kafka_protocol::records::Compression::None,
        )
        .expect("encode");
        p.append_internal(&batch, 0).expect("append").base_offset()
    }

    /// A compacted partition that was cleaned once keeps its tombstone, is not due while
    /// nothing is dirty, becomes due when the delete horizon passes, and then loses it.
    #[test]
    fn a_passed_delete_horizon_makes_a_clean_partition_due() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = compacted_partition(dir.path());
        // One segment each: a=1, a tombstone with an ancient timestamp, z=1 in the active
        // segment.
        for (key, value) in [(b"a", Some(&b"1"[..])), (b"a", None), (b"z", Some(b"1"))] {
            append_record(&p, key, value);
        }
        let now = 1_700_000_000_000;
        assert!(p.cleaning_priority(now).is_some(), "dirty");
        assert!(p.clean(now, 1_000) > 0);
        assert_eq!(
            offsets(&p),
            vec![1, 2],
            "the tombstone survives the first pass"
        );
        assert_eq!(p.cleaning_priority(now + 999), None);
        assert_eq!(p.clean(now + 999, 1_000), 0);
        assert!(p.cleaning_priority(now + 1_000).is_some_and(|x| x >= 1.0));
        assert!(p.clean(now + 1_000, 1_000) > 0);
        assert_eq!(offsets(&p), vec![2], "gone after delete.retention.ms");
        assert_eq!(p.cleaning_priority(now + 10_000), None);
    }

    /// The cleaner does not hold the log's lock while it copies: at every stage of the copy
    /// a produce from another thread goes through (new values of the keys being compacted);
    /// the pass then swaps its rewrites in, and every record appended meanwhile is intact.
    #[test]
    fn produce_goes_on_while_the_cleaner_copies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = compacted_partition(dir.path());
        for i in 0..6 {
            append_record(&p, format!("k{}", i % 2).as_bytes(), Some(b"old"));
        }
        let now = 1_700_000_000_000;
        let mut during = Vec::new();
        let mut stages = Vec::new();
        let bytes = p.clean_with_hook(now, 1_000, &mut |stage| {
            assert!(p.log.try_lock().is_ok(), "the log is locked at {stage:?}");
            let offset = std::thread::scope(|s| {
                s.spawn(|| append_record(&p, b"k0", Some(b"new")))
                    .join()
                    .expect("append")
            });
            during.push(offset);
            stages.push(stage);
        });
        assert!(bytes > 0);
        assert_eq!(stages[0], CleanStage::KeysMapped);
        assert!(stages.len() > 1, "{stages:?}");
        // k0 and k1 were written at 0..6 (k0 last at 4, k1 at 5, in the active segment):
        // the pass kept k0@4 and k1@5, and everything appended during it.
        let mut expected = vec![4, 5];
        expected.extend(&during);
        assert_eq!(offsets(&p), expected);
        assert_eq!(p.log_end_offset(), 6 + during.len() as i64);
        // The new values are dirty: the next pass compacts them.
        assert!(p.cleaning_priority(now).is_some());
        assert!(p.clean(now, 1_000) > 0);
        assert_eq!(offsets(&p), vec![5, *during.last().expect("appended")]);
    }

    /// A pass that finds the log changed when it comes to swap (here DeleteRecords during
    /// the copy) gives up, and the partition stays due: the next pass does the work.
    #[test]
    fn a_cleaning_pass_given_up_leaves_the_partition_due() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = compacted_partition(dir.path());
        for i in 0..6 {
            append_record(&p, format!("k{}", i % 2).as_bytes(), Some(b"v"));
        }
        let now = 1_700_000_000_000;
        let bytes = p.clean_with_hook(now, 1_000, &mut |stage| {
            if stage == CleanStage::KeysMapped {
                assert_eq!(p.delete_records_before(1), Ok(1));
            }
        });
        assert_eq!(bytes, 0, "nothing swapped");
        assert_eq!(offsets(&p), vec![1, 2, 3, 4, 5]);
        assert!(p.cleaning_priority(now).is_some(), "still due");
        assert!(p.clean(now, 1_000) > 0);
        assert_eq!(offsets(&p), vec![4, 5]);
    }

    /// A wait for the HW fails once the leader epoch changes before the HW passes the
    /// append; appends of the new epoch are acknowledged as usual.
    #[tokio::test]
    async fn an_epoch_change_fails_waits_of_the_old_epoch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = Arc::new(partition_with(dir.path(), &[], true));
        let batch = |p: &Partition| {
            let batch = encode_batch(
                &[PlainRecord::new(Some(b"k"), Some(b"v"), 1)],
                kafka_protocol::records::Compression::None,
            )
            .expect("encode");
            p.append_internal(&batch, 0).expect("append")
        };
        let old = HwWait::new(p.clone(), &batch(&p));
        assert_eq!(old.leader_epoch, 0);
        // Same epoch, same ISR: nothing changes.
        p.assign(1, 1, 0, &[1]);
        p.assign(1, 1, 1, &[1]);
        assert_eq!(old.wait().await, Err(HwWaitError::EpochChanged));
        let new = HwWait::new(p.clone(), &batch(&p));
        assert_eq!(new.leader_epoch, 1);
        assert_eq!(
            p.leader_epochs().last(),
            Some(&(1, 1)),
            "stamped from offset 1"
        );
        p.on_flushed(p.log_end_offset());
        assert_eq!(new.wait().await, Ok(()));
        assert_eq!(p.high_watermark(), 2);
    }

    /// A follower refuses appends and its HW does not follow its own log; a leader with
    /// followers holds the HW until they are known; a leader alone again moves it to its
    /// durable end.
    #[test]
    fn roles_decide_appends_and_the_high_watermark() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = partition_with(dir.path(), &[], true);
        let batch = encode_batch(
            &[PlainRecord::new(Some(b"k"), Some(b"v"), 1)],
            kafka_protocol::records::Compression::None,
        )
        .expect("encode");
        p.append_internal(&batch, 0).expect("append");
        p.on_flushed(1);
        assert_eq!(p.high_watermark(), 1);
        p.assign(1, 2, 1, &[2, 1]);
        assert!(!p.is_leader());
        assert_eq!(p.in_sync_replica_count(), None);
        assert_eq!(
            p.append_internal(&batch, 0),
            Err(ErrorCode::NotLeaderOrFollower)
        );
        // Leader again with a follower whose position is unknown in this epoch.
        p.assign(1, 1, 2, &[1, 2]);
        assert_eq!(p.in_sync_replica_count(), Some(2));
        p.append_internal(&batch, 0).expect("append");
        p.on_flushed(2);
        assert_eq!(p.high_watermark(), 1, "held by the unknown follower");
        // The follower leaves the ISR: the leader's durable end is the HW.
        p.assign(1, 1, 2, &[1]);
        assert_eq!(p.high_watermark(), 2);
    }
}
