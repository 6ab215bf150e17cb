//! [`PartitionLog`]: the segments of one partition directory, and [`SyncJob`].
//!
//! Offsets: the log holds `[log_start_offset, log_end_offset)`. The start only moves forward
//! (DeleteRecords, retention) and is checkpointed before any segment is deleted; the end moves
//! forward by exactly the offsets of each appended batch and backward only when recovery cuts
//! a torn tail that was never fsynced.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::IoSlice;
use std::ops::DerefMut;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use strata_protocol::batch::{self, BatchHeader};

use crate::checkpoint;
use crate::compaction::{self, CleanOptions, CleanReport, CleanStage, CrashBudget};
use crate::epoch_cache::EpochCache;
use crate::file_cache::CachedFile;
use crate::horizon::{self, Horizons};
use crate::producer_state::AbortedTxn;
use crate::segment::{io_err, parse_segment_name, segment_path, Segment, SegmentSnapshot};
use crate::txn_index;
use crate::{AppendInfo, LogConfig, LogError, RecoveryReport};

/// Everything that must be fsynced to make the log durable up to `end_offset`: shared handles
/// of the files written since the previous job (segment data, the index files of segments
/// that were closed, the directory after segments were created or removed).
///
/// If [`SyncJob::run`] fails the obligation is lost with the job: treat the log as failed
/// (Kafka takes the log directory offline), do not retry with a later job.
#[derive(Debug)]
pub struct SyncJob {
    files: Vec<SyncTarget>,
    end_offset: i64,
}

/// A file a [`SyncJob`] must fsync. No descriptor is held for it while the job waits (a
/// flusher round may cover thousands of partitions): the job takes a descriptor when it
/// runs, from the descriptor cache if the file is still open there, else a new one.
///
/// Why no fsync obligation is lost: an fsync flushes the file (its inode's dirty pages and
/// metadata), not what one descriptor wrote, so an fsync through a reopened descriptor of
/// the same file makes durable everything written through a descriptor closed meanwhile.
/// Writeback errors are kept per file (Linux's errseq since 4.13) and reported to an fsync
/// on a descriptor opened after the error if no fsync saw it yet, so a reopened descriptor
/// does not hide an error either. And the file is usually still open: a segment written
/// since the last fsync is among the most recently used entries of the LRU, so it is closed
/// before the fsync only if more than the whole budget of other files was used in between.
/// A file gone meanwhile (its segment deleted by retention or truncation, its topic
/// deleted) holds nothing to make durable and is skipped.
#[derive(Debug)]
enum SyncTarget {
    /// A segment's `.log`, through the descriptor cache.
    Segment(Arc<CachedFile>),
    /// Index files and directories: opened, fsynced and closed.
    Path(PathBuf),
}

impl SyncTarget {
    fn sync(&self) -> std::io::Result<()> {
        let file = match self {
            SyncTarget::Segment(cached) => cached.get(),
            SyncTarget::Path(path) => {
                crate::file_cache::open_evicting(|| File::open(path)).map(Arc::new)
            }
        };
        match file {
            // fdatasync: the data and the size, not the mtime (every acks=all waits on it).
            Ok(file) => file.sync_data(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl SyncJob {
    /// Fsyncs the files; on success every offset below the returned one is durable.
    pub fn run(self) -> std::io::Result<i64> {
        for target in &self.files {
            target.sync()?;
        }
        Ok(self.end_offset)
    }

    /// The offset the job covers (every offset below it, once it ran).
    pub fn end_offset(&self) -> i64 {
        self.end_offset
    }
}

/// The log of one partition. See the crate docs for the overview.
pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    /// By base offset; never empty; the last one is the active segment.
    segments: BTreeMap<i64, Segment>,
    log_start_offset: i64,
    log_end_offset: i64,
    /// Files of closed segments not fsynced yet (the obligation survives rolls).
    unsynced_files: Vec<SyncTarget>,
    active_unsynced: bool,
    dir_unsynced: bool,
    /// The aborted-transaction index, by segment base offset (`txn_index.rs`).
    aborted: BTreeMap<i64, Vec<AbortedTxn>>,
    /// The cleaner's delete horizons of closed segments (see `horizon.rs`), as checkpointed.
    horizons: Horizons,
    /// The earliest delete horizon no cleaning pass has applied yet: a horizon recorded by
    /// the last pass, or later than it (after `open`, the earliest of all).
    next_horizon: Option<i64>,
    /// The leader epoch stamped into every appended batch (`partitionLeaderEpoch`).
    leader_epoch: i32,
    /// Epoch → start offset, as checkpointed in `leader-epoch-checkpoint` (`epoch_cache.rs`).
    epochs: EpochCache,
    /// Set while a cleaning pass is under way (it runs partly without the log; see
    /// [`PartitionLog::clean_concurrently`]), so that no second one starts.
    cleaning: Arc<AtomicBool>,
}

impl std::fmt::Debug for PartitionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionLog")
            .field("dir", &self.dir)
            .field("log_start_offset", &self.log_start_offset)
            .field("log_end_offset", &self.log_end_offset)
            .field("segments", &self.segments.len())
            .field("delete_horizons", &self.horizons.len())
            .finish()
    }
}

impl PartitionLog {
    /// Opens (creating it if absent) the log in `dir` and recovers it:
    ///
    /// - the last segment: every batch is validated (length, magic 2, CRC32C, counts,
    ///   increasing offsets); the file is truncated at the first bad or torn batch and
    ///   fsynced; its indexes are always rebuilt (they are never fsynced, so never trusted);
    /// - older segments: index files are loaded, and rebuilt if missing, of a size that is not
    ///   a multiple of the entry size, or inconsistent (not increasing, past the end);
    /// - the `log-start-offset` checkpoint is applied: segments entirely below it are removed.
    ///
    /// Truncations are logged with `tracing::warn!` and described in the [`RecoveryReport`].
    ///
    /// This is the open after a clean shutdown; [`PartitionLog::open_after_crash`] is the
    /// one after an unclean stop.
    pub fn open(
        dir: &Path,
        config: LogConfig,
        now_ms: i64,
    ) -> Result<(Self, RecoveryReport), LogError> {
        Self::open_recovering(dir, config, now_ms, None)
    }

    /// Opens the log after an unclean stop (a crash or a power loss). Closed segments are not
    /// assumed whole: every batch of every segment that holds offsets at or above
    /// `recovery_point` (the offset below which everything was known to be fsynced; 0 when
    /// unknown) is validated, and the log is cut at the first bad batch, later segments
    /// included. The recovered log is then fsynced, so that everything it holds is durable.
    pub fn open_after_crash(
        dir: &Path,
        config: LogConfig,
        now_ms: i64,
        recovery_point: i64,
    ) -> Result<(Self, RecoveryReport), LogError> {
        let (mut log, report) = Self::open_recovering(dir, config, now_ms, Some(recovery_point))?;
        // Whatever survived the crash may still be only in the page cache (a process crash
        // keeps it there): make it durable before anyone is told about it.
        let unflushed: Vec<SyncTarget> = log
            .segments
            .values()
            .filter(|s| s.end_offset > recovery_point && s.writers_closed())
            .map(|s| SyncTarget::Segment(s.log.clone()))
            .collect();
        log.unsynced_files.extend(unflushed);
        log.active_unsynced = true;
        log.dir_unsynced = true;
        if let Some(job) = log.sync_job() {
            job.run().map_err(io_err("fsync recovered log", dir))?;
        }
        Ok((log, report))
    }

    fn open_recovering(
        dir: &Path,
        config: LogConfig,
        now_ms: i64,
        recovery_point: Option<i64>,
    ) -> Result<(Self, RecoveryReport), LogError> {
        let created = !dir.exists();
        std::fs::create_dir_all(dir).map_err(io_err("create partition directory", dir))?;
        if created {
            if let Some(parent) = dir.parent() {
                // Make the new directory entry durable; a failure only risks an empty
                // partition directory vanishing after a power loss.
                if let Err(error) = File::open(parent).and_then(|p| p.sync_all()) {
                    tracing::warn!(dir = %dir.display(), %error, "could not fsync the parent directory");
                }
            }
        }
        let checkpointed_start = checkpoint::read(dir)?;
        compaction::recover_cleaner_files(dir, &open_dir(dir)?)?;
        let mut bases = list_segments(dir)?;

        let mut report = RecoveryReport::default();
        if let Some(recovery_point) = recovery_point {
            validate_unflushed_segments(dir, &mut bases, recovery_point, &mut report)?;
        }
        let mut segments = BTreeMap::new();
        if bases.is_empty() {
            let base = checkpointed_start.unwrap_or(0);
            segments.insert(base, Segment::create(dir, base)?);
        } else {
            for pair in bases.windows(2) {
                let (segment, rebuilt) =
                    Segment::open_closed(dir, pair[0], pair[1], config.index_interval_bytes)?;
                if rebuilt {
                    tracing::warn!(segment = %segment.log_path.display(), "rebuilt the index files of a closed segment");
                    report.rebuilt_indexes += 1;
                }
                segments.insert(pair[0], segment);
            }
            let last = *bases.last().expect("bases is not empty");
            let (segment, recovery) =
                Segment::recover_active(dir, last, config.index_interval_bytes, now_ms)?;
            if let Some(stop) = &recovery.stop {
                report.truncated_bytes += recovery.truncated_bytes;
                report.truncated_at_offset = Some(segment.end_offset);
                tracing::warn!(
                    dir = %dir.display(),
                    segment = %segment.log_path.display(),
                    offset = segment.end_offset,
                    position = stop.position,
                    truncated_bytes = recovery.truncated_bytes,
                    reason = %stop.reason,
                    "truncated the log at the first invalid batch"
                );
            }
            if recovery.index_rewritten {
                report.rebuilt_indexes += 1;
            }
            segments.insert(last, segment);
        }

        let first_base = *segments.keys().next().expect("at least one segment");
        let log_end_offset = segments
            .values()
            .next_back()
            .expect("at least one segment")
            .end_offset;
        let mut log = PartitionLog {
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start_offset: first_base,
            log_end_offset,
            unsynced_files: Vec::new(),
            active_unsynced: false,
            dir_unsynced: false,
            aborted: BTreeMap::new(),
            horizons: horizon::read(dir)?,
            next_horizon: None,
            leader_epoch: 0,
            epochs: EpochCache::read(dir)?,
            cleaning: Arc::new(AtomicBool::new(false)),
        };
        log.load_txn_indexes()?;
        if let Some(start) = checkpointed_start.filter(|s| *s > first_base) {
            if start > log.log_end_offset {
                // The start was checkpointed past data that a crash then lost: the log is
                // empty from `start` on, which a new segment at `start` expresses.
                tracing::warn!(dir = %dir.display(), start, end = log.log_end_offset, "log start offset is past the recovered end; starting an empty segment there");
                log.start_new_segment(start)?;
            }
            log.log_start_offset = start;
            log.remove_segments_below_start()?;
        }
        // Only closed segments have a horizon. An entry for the active segment is stale: a
        // crash lost the segment rolled after it, so it takes appends (and tombstones) again;
        // it gets a new horizon once it is closed and cleaned.
        let active_base = log.active().base_offset;
        log.horizons
            .retain(|base, _| *base < active_base && log.segments.contains_key(base));
        log.next_horizon = log.horizons.values().min().copied();
        // Epochs that started in a tail recovery cut, or before the log start, go.
        let end = log.log_end_offset;
        let start = log.log_start_offset;
        if log.epochs.truncate_from_end(end) | log.epochs.truncate_from_start(start) {
            log.epochs.write(&log.dir, &log.dir_handle()?)?;
        }
        report.segments = log.segments.len();
        log.check_invariants();
        Ok((log, report))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The partition directory, opened for an fsync after entries changed (no descriptor of
    /// it is kept: a partition holds none while idle).
    fn dir_handle(&self) -> Result<File, LogError> {
        open_dir(&self.dir)
    }

    pub fn config(&self) -> LogConfig {
        self.config
    }

    /// Applies new settings; they take effect from the next append or roll check.
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    /// Sets the leader epoch that appends stamp into their batches (and record in the epoch
    /// cache when it is new). A non-empty log without any epoch entry (written before epochs
    /// were recorded) is attributed to this epoch from its start, so that OffsetForLeaderEpoch
    /// never reports a truncation that did not happen.
    ///
    /// A new epoch is recorded here, starting at the log end, rather than by the first append
    /// in it: the checkpoint's fsync then happens when leadership changes (off the request
    /// path), not inside a produce request.
    pub fn set_leader_epoch(&mut self, epoch: i32) -> Result<(), LogError> {
        self.leader_epoch = epoch;
        let changed = if self.epochs.is_empty() && self.log_end_offset > self.log_start_offset {
            self.epochs.assign(epoch, self.log_start_offset)
        } else {
            self.epochs.assign(epoch, self.log_end_offset)
        };
        if changed {
            self.epochs.write(&self.dir, &self.dir_handle()?)?;
        }
        Ok(())
    }

    /// Takes leader epoch `epoch`: as its leader ([`Self::set_leader_epoch`], the epoch
    /// starts at the log end), or as a follower, the field only: a follower's epoch cache
    /// follows the stamps of the batches it replicates ([`Self::append_replicated`]), not the
    /// moment it learnt of the epoch.
    pub fn adopt_leader_epoch(&mut self, epoch: i32, leading: bool) -> Result<(), LogError> {
        if leading {
            self.set_leader_epoch(epoch)
        } else {
            self.leader_epoch = epoch;
            Ok(())
        }
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }

    /// The epoch cache's entries: (epoch, start offset).
    pub fn leader_epochs(&self) -> &[(i32, i64)] {
        self.epochs.entries()
    }

    /// OffsetForLeaderEpoch: the largest epoch at or below `requested` and where it ends
    /// (see [`EpochCache::end_offset_for`]); `(-1, -1)` when unknown.
    pub fn end_offset_for_epoch(&self, requested: i32) -> (i32, i64) {
        self.epochs.end_offset_for(requested, self.log_end_offset)
    }

    /// The first offset that can be read.
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    /// The offset the next appended record gets.
    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset
    }

    /// Bytes of all segment files (indexes excluded).
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size).sum()
    }

    /// Number of segments (the active one included).
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn check_invariants(&self) {
        debug_assert!(self.log_start_offset <= self.log_end_offset);
        debug_assert_eq!(self.active().end_offset, self.log_end_offset);
        debug_assert!(self
            .segments
            .iter()
            .all(|(base, s)| *base == s.base_offset && s.end_offset >= s.base_offset));
    }

    /// Appends already-validated batches (the produce bytes of one partition, one or more
    /// whole batches). Each batch is checked again (framing, CRC32C, counts) because a bad
    /// batch in the log would make recovery cut everything after it.
    ///
    /// Offsets are assigned from the log end offset: each batch is written with its
    /// `baseOffset` replaced (the field is outside the CRC), straight from `batches` with one
    /// vectored write — the request bytes are not copied. With `log_append_time = Some(ts)`
    /// each batch is also stamped (timestamp type bit, `maxTimestamp`, CRC), which needs a
    /// private copy. Before writing, the active segment is rolled if it is non-empty and the
    /// append would push it past `segment_bytes`, or it is older than `segment_ms`. The
    /// batches are then indexed.
    pub fn append(
        &mut self,
        batches: &[u8],
        now_ms: i64,
        log_append_time: Option<i64>,
    ) -> Result<AppendInfo, LogError> {
        let mut headers = self.prepare_append(batches, now_ms)?;
        let len = batches.len() as u64;

        // A new leader epoch starts at this append: checkpoint it first, so no batch of the
        // epoch is on disk before its entry.
        if self.epochs.assign(self.leader_epoch, self.log_end_offset) {
            self.epochs.write(&self.dir, &self.dir_handle()?)?;
        }

        // Assign offsets and stamp the leader epoch (and the time, on a copy), then write.
        let epoch_bytes = self.leader_epoch.to_be_bytes();
        let mut stamped = log_append_time.map(|_| batches.to_vec());
        let mut base_offsets: Vec<[u8; 8]> = Vec::with_capacity(headers.len());
        let mut next_offset = self.log_end_offset;
        let mut max_timestamp = (i64::MIN, next_offset);
        for (header, start) in headers.iter_mut() {
            header.base_offset = next_offset;
            base_offsets.push(next_offset.to_be_bytes());
            if let (Some(ts), Some(copy)) = (log_append_time, stamped.as_mut()) {
                let range = *start..*start + header.total_len();
                batch::set_base_offset(&mut copy[range.clone()], next_offset);
                copy[range.start + 12..range.start + 16].copy_from_slice(&epoch_bytes);
                batch::set_log_append_time(&mut copy[range], ts);
                header.max_timestamp = ts;
                header.attributes |= 0x08;
            }
            if header.max_timestamp > max_timestamp.0 {
                max_timestamp = (header.max_timestamp, header.last_offset());
            }
            next_offset = header.next_offset();
        }
        let slices: Vec<IoSlice<'_>> = match &stamped {
            Some(copy) => vec![IoSlice::new(copy)],
            // Bytes 0..8 are the base offset and 12..16 the leader epoch, both outside the CRC.
            None => headers
                .iter()
                .zip(&base_offsets)
                .flat_map(|((header, start), base)| {
                    [
                        IoSlice::new(base),
                        IoSlice::new(&batches[*start + 8..*start + 12]),
                        IoSlice::new(&epoch_bytes),
                        IoSlice::new(&batches[*start + 16..*start + header.total_len()]),
                    ]
                })
                .collect(),
        };
        let base_offset = self.log_end_offset;
        let interval = self.config.index_interval_bytes;
        self.active_mut()
            .append(slices, len, &headers, now_ms, interval)?;
        assert!(next_offset > self.log_end_offset, "offsets only grow");
        self.log_end_offset = next_offset;
        self.active_unsynced = true;
        self.check_invariants();
        Ok(AppendInfo {
            base_offset,
            last_offset: next_offset - 1,
            max_timestamp: max_timestamp.0,
            offset_of_max_timestamp: max_timestamp.1,
            log_append_time,
        })
    }

    /// The headers of `batches` (with where each starts), after the checks every append
    /// makes (whole batches, not empty, sizes within the segment format's limits) and a roll
    /// if the active segment is full or old.
    fn prepare_append(
        &mut self,
        batches: &[u8],
        now_ms: i64,
    ) -> Result<Vec<(BatchHeader, usize)>, LogError> {
        let mut headers: Vec<(BatchHeader, usize)> = Vec::new();
        for item in batch::iter_batches(batches) {
            let (header, range) = item?;
            headers.push((header, range.start));
        }
        if headers.is_empty() {
            return Err(batch::BatchError::Empty.into());
        }
        let offset_count: i64 = headers
            .iter()
            .map(|(h, _)| i64::from(h.last_offset_delta) + 1)
            .sum();
        let len = batches.len() as u64;
        if len > u64::from(u32::MAX) || offset_count > i64::from(u32::MAX) {
            return Err(LogError::AppendTooLarge {
                reason: format!("{len} bytes and {offset_count} offsets in one append"),
            });
        }
        let active = self.active();
        let would_overflow = active.size + len > self.config.segment_bytes
            || active.size + len > u64::from(u32::MAX)
            || self.log_end_offset + offset_count - active.base_offset > i64::from(u32::MAX);
        if !active.is_empty() && (would_overflow || self.is_due_for_time_roll(now_ms)) {
            self.roll()?;
        }
        Ok(headers)
    }

    /// Appends batches copied from the leader (a follower's fetch, `docs/design/cluster.md`
    /// §4.2) as they are: their offsets and leader-epoch stamps are kept, so the first must
    /// start at the log end and each continue the previous one (else `OffsetOutOfRange`
    /// naming the first offset that does not fit, and nothing is written). The epoch cache
    /// is extended from the batches' epochs and checkpointed before any of them is written,
    /// as [`Self::append`] does for its own epoch.
    pub fn append_replicated(
        &mut self,
        batches: &[u8],
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        let mut expected = self.log_end_offset;
        for item in batch::iter_batches(batches) {
            let (header, _) = item?;
            if header.base_offset != expected {
                return Err(LogError::OffsetOutOfRange {
                    offset: header.base_offset,
                    start: self.log_start_offset,
                    end: expected,
                });
            }
            expected = header.next_offset();
        }
        let headers = self.prepare_append(batches, now_ms)?;
        let mut epochs_changed = false;
        for (header, _) in &headers {
            epochs_changed |= self
                .epochs
                .assign(header.partition_leader_epoch, header.base_offset);
        }
        if epochs_changed {
            self.epochs.write(&self.dir, &self.dir_handle()?)?;
        }
        let mut max_timestamp = (i64::MIN, self.log_end_offset);
        for (header, _) in &headers {
            if header.max_timestamp > max_timestamp.0 {
                max_timestamp = (header.max_timestamp, header.last_offset());
            }
        }
        let len = batches.len() as u64;
        let interval = self.config.index_interval_bytes;
        self.active_mut()
            .append(vec![IoSlice::new(batches)], len, &headers, now_ms, interval)?;
        let base_offset = self.log_end_offset;
        assert!(expected > base_offset, "offsets only grow");
        self.log_end_offset = expected;
        self.active_unsynced = true;
        self.check_invariants();
        Ok(AppendInfo {
            base_offset,
            last_offset: expected - 1,
            max_timestamp: max_timestamp.0,
            offset_of_max_timestamp: max_timestamp.1,
            log_append_time: None,
        })
    }

    fn is_due_for_time_roll(&self, now_ms: i64) -> bool {
        let active = self.active();
        !active.is_empty()
            && active
                .rolling_base_ms
                .is_some_and(|base| now_ms.saturating_sub(base) >= self.config.segment_ms)
    }

    /// Rolls the active segment if it is non-empty and older than `segment_ms` (counted from
    /// its first append). Returns whether it rolled.
    pub fn maybe_roll(&mut self, now_ms: i64) -> Result<bool, LogError> {
        if self.is_due_for_time_roll(now_ms) {
            self.roll()?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Closes the active segment and starts a new one at the log end offset.
    fn roll(&mut self) -> Result<(), LogError> {
        let end = self.log_end_offset;
        self.start_new_segment(end)
    }

    fn start_new_segment(&mut self, base_offset: i64) -> Result<(), LogError> {
        assert!(
            base_offset > self.active().base_offset,
            "a new segment starts after the active one"
        );
        // The old segment is made whole on disk before a later segment can hold any data:
        // otherwise writeback could put the new segment's pages on disk before the old one's
        // tail, and a power loss would leave a hole in the offsets that recovery could not
        // tell from a compacted segment's end. The cost is bounded: what was appended since
        // the last flush (with fsync-before-ack, one group commit's worth), once per roll.
        if self.active_unsynced {
            let active = self.active();
            active
                .log
                .get()
                .and_then(|file| file.sync_data())
                .map_err(io_err("fsync segment", &active.log_path))?;
        }
        // Create the new segment before sealing the old one: if creating fails (a full disk,
        // no descriptors left), the log is unchanged and the old segment stays active.
        let segment = match Segment::create(&self.dir, base_offset) {
            Ok(segment) => segment,
            Err(e @ LogError::Corrupt { .. }) => return Err(e),
            Err(e) => {
                // Leave no empty files behind to be mistaken for a segment at restart.
                let _ = Segment::remove_files(&self.dir, base_offset);
                return Err(e);
            }
        };
        let active_unsynced = std::mem::take(&mut self.active_unsynced);
        let active = self.active_mut();
        // Sealing takes the index writers whatever happens, so the new segment becomes the
        // active one even if it fails (a seal error is an I/O error the caller must treat as
        // fatal for the log; the old segment's indexes are rebuilt at open if incomplete).
        let sealed = active.seal();
        let log_file = active.log.clone();
        // The old segment's data still has to be fsynced: move the obligation, with its index
        // files (which become trusted once the segment is closed).
        if active_unsynced {
            self.unsynced_files.push(SyncTarget::Segment(log_file));
        }
        if let Ok(index_files) = &sealed {
            self.unsynced_files
                .extend(index_files.iter().cloned().map(SyncTarget::Path));
        }
        self.segments.insert(base_offset, segment);
        self.log_end_offset = base_offset;
        self.dir_unsynced = true;
        sealed.map(|_| ())
    }

    /// Everything written since the previous job, to fsync off the caller's lock; `None` if
    /// nothing was. Segments rolled in between are included.
    pub fn sync_job(&mut self) -> Option<SyncJob> {
        if self.unsynced_files.is_empty() && !self.active_unsynced && !self.dir_unsynced {
            return None;
        }
        let mut files = std::mem::take(&mut self.unsynced_files);
        if std::mem::take(&mut self.active_unsynced) {
            files.push(SyncTarget::Segment(self.active().log.clone()));
        }
        if std::mem::take(&mut self.dir_unsynced) {
            files.push(SyncTarget::Path(self.dir.clone()));
        }
        Some(SyncJob {
            files,
            end_offset: self.log_end_offset,
        })
    }

    /// Whole batches starting with the batch that contains `offset` (its base offset may be
    /// lower), in log order, from a single segment:
    ///
    /// - stops before the first batch whose last offset is `>= max_offset_exclusive` (the
    ///   high watermark), so nothing at or above it is returned;
    /// - stops before the batch that would take the total past `max_bytes`, but always
    ///   returns the first batch if it is below the bound, however large (so a consumer can
    ///   always make progress);
    /// - returns empty bytes when `offset` is the log end offset or nothing is below the
    ///   bound.
    ///
    /// Errors with [`LogError::OffsetOutOfRange`] if `offset` is outside
    /// `[log_start_offset, log_end_offset]`.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset_exclusive: i64,
    ) -> Result<Bytes, LogError> {
        self.check_range(offset)?;
        if offset >= self.log_end_offset || offset >= max_offset_exclusive {
            return Ok(Bytes::new());
        }
        // Normally the first segment tried holds the offset; the loop only moves on if a
        // segment ends short of the next one's base.
        for segment in self
            .segments
            .range(..=offset)
            .next_back()
            .into_iter()
            .map(|(_, s)| s)
            .chain(self.segments.range(offset + 1..).map(|(_, s)| s))
        {
            let from = segment.index.lookup_offset(offset);
            let Some((position, first)) = segment.find_batch(offset, from)? else {
                continue;
            };
            if first.last_offset() >= max_offset_exclusive {
                return Ok(Bytes::new());
            }
            let want = (max_bytes as u64).max(first.total_len() as u64);
            let len = want.min(segment.size - position);
            let mut buf = segment.read_bytes(
                position,
                usize::try_from(len).expect("bounded by max_bytes or a batch"),
            )?;
            let keep = whole_batches_below(&buf, max_offset_exclusive);
            if keep < first.total_len() {
                // The bytes changed between two reads of the same batch: the disk is unwell.
                return Err(LogError::Corrupt {
                    path: segment.log_path.clone(),
                    position,
                    reason: "batch changed while it was read".to_string(),
                });
            }
            buf.truncate(keep);
            return Ok(Bytes::from(buf));
        }
        Ok(Bytes::new())
    }

    fn check_range(&self, offset: i64) -> Result<(), LogError> {
        if offset < self.log_start_offset || offset > self.log_end_offset {
            return Err(LogError::OffsetOutOfRange {
                offset,
                start: self.log_start_offset,
                end: self.log_end_offset,
            });
        }
        Ok(())
    }

    /// Kafka's ListOffsets by timestamp: the earliest offset at or after the log start whose
    /// record timestamp is `>= ts`, with that timestamp; `None` if there is none.
    ///
    /// The time index narrows the search to the first batch whose `maxTimestamp >= ts`; that
    /// batch is then decoded (`strata_protocol::records`) to find the exact record. If the
    /// decode fails the answer falls back to batch granularity: the batch's base offset (or
    /// the log start, if higher) and its `maxTimestamp`.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, LogError> {
        for segment in self.segments.values() {
            if segment.end_offset <= self.log_start_offset
                || segment.index.max_timestamp.is_none_or(|(max, _)| max < ts)
            {
                continue;
            }
            let scan_from = segment.index.lookup_time(ts).max(self.log_start_offset);
            let mut position = segment.index.lookup_offset(scan_from);
            while position < segment.size {
                let header = segment.header_at(position)?;
                let len = header.total_len();
                if header.last_offset() >= scan_from && header.max_timestamp >= ts {
                    let bytes = segment.read_bytes(position, len)?;
                    match strata_protocol::records::record_timestamps(&bytes) {
                        Ok(records) => {
                            if let Some(found) = records
                                .into_iter()
                                .find(|(o, t)| *o >= self.log_start_offset && *t >= ts)
                            {
                                return Ok(Some(found));
                            }
                        }
                        Err(error) => {
                            tracing::debug!(segment = %segment.log_path.display(), position, %error, "could not decode batch; answering at batch granularity");
                            return Ok(Some((
                                header.base_offset.max(self.log_start_offset),
                                header.max_timestamp,
                            )));
                        }
                    }
                }
                position += len as u64;
            }
        }
        Ok(None)
    }

    /// Kafka's ListOffsets MAX_TIMESTAMP: the offset and timestamp of the first record holding
    /// the largest timestamp in the log (at or after the log start). The segment indexes find
    /// the batch; that batch is decoded to find the exact record. If the decode fails, the
    /// answer is the batch's last offset.
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        let mut best: Option<(&Segment, i64, i64)> = None;
        for segment in self.segments.values() {
            if segment.end_offset <= self.log_start_offset {
                continue;
            }
            if let Some((ts, offset)) = segment.index.max_timestamp {
                if best.is_none_or(|(_, _, best_ts)| ts > best_ts) {
                    best = Some((segment, offset, ts));
                }
            }
        }
        let (segment, batch_last, ts) = best?;
        let exact = (|| -> Option<(i64, i64)> {
            let mut position = segment.index.lookup_offset(batch_last);
            while position < segment.size {
                let header = segment.header_at(position).ok()?;
                let len = header.total_len();
                if header.last_offset() >= batch_last {
                    let bytes = segment.read_bytes(position, len).ok()?;
                    let records = strata_protocol::records::record_timestamps(&bytes).ok()?;
                    return records
                        .into_iter()
                        .find(|(o, t)| *t == ts && *o >= self.log_start_offset);
                }
                position += len as u64;
            }
            None
        })();
        Some(exact.unwrap_or((batch_last.max(self.log_start_offset), ts)))
    }

    /// Advances the log start offset to `offset` (DeleteRecords): checkpoints it durably, then
    /// deletes every segment that lies entirely below it. When `offset` is the log end offset
    /// the active segment is rolled first so that its data can be deleted too. Returns the new
    /// log start offset; an `offset` at or below the current start changes nothing.
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64, LogError> {
        if offset < 0 || offset > self.log_end_offset {
            return Err(LogError::OffsetOutOfRange {
                offset,
                start: self.log_start_offset,
                end: self.log_end_offset,
            });
        }
        if offset <= self.log_start_offset {
            return Ok(self.log_start_offset);
        }
        checkpoint::write(&self.dir, &self.dir_handle()?, offset)?;
        self.log_start_offset = offset;
        if offset == self.log_end_offset && !self.active().is_empty() {
            self.roll()?;
        }
        self.remove_segments_below_start()?;
        if self.epochs.truncate_from_start(self.log_start_offset) {
            self.epochs.write(&self.dir, &self.dir_handle()?)?;
        }
        self.check_invariants();
        Ok(self.log_start_offset)
    }

    /// Cuts the log so that it ends at the start of the batch holding `offset` (or at `offset`
    /// when that is a batch boundary): what a replica does when its history diverged from the
    /// leader's. Later segments are deleted, the cut segment becomes the active one (fsynced,
    /// indexes rebuilt), and the aborted-transaction index, the epoch cache and the cleaner's
    /// horizons forget what was cut. Returns the new log end offset. Offsets below the log
    /// start cannot be cut to (`OffsetOutOfRange`).
    pub fn truncate_to(&mut self, offset: i64, now_ms: i64) -> Result<i64, LogError> {
        if offset >= self.log_end_offset {
            return Ok(self.log_end_offset);
        }
        if offset < self.log_start_offset {
            return Err(LogError::OffsetOutOfRange {
                offset,
                start: self.log_start_offset,
                end: self.log_end_offset,
            });
        }
        let base = *self
            .segments
            .range(..=offset)
            .next_back()
            .map(|(base, _)| base)
            .unwrap_or_else(|| self.segments.keys().next().expect("a log has a segment"));
        let later: Vec<i64> = self.segments.range(base + 1..).map(|(b, _)| *b).collect();
        let mut horizons_changed = false;
        for b in later {
            self.segments.remove(&b);
            self.aborted.remove(&b);
            horizons_changed |= self.horizons.remove(&b).is_some();
            Segment::remove_files(&self.dir, b)?;
        }
        let segment = self
            .segments
            .remove(&base)
            .expect("the segment holding the offset");
        let mut position = segment.index.lookup_offset(offset);
        // Bounded by the segment size: each step advances by at least one header.
        while position < segment.size {
            let header = segment.header_at(position)?;
            if header.last_offset() >= offset {
                break;
            }
            position += header.total_len() as u64;
        }
        let path = segment.log_path.clone();
        drop(segment);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io_err("open segment", &path))?;
        file.set_len(position)
            .map_err(io_err("truncate segment", &path))?;
        file.sync_all().map_err(io_err("fsync segment", &path))?;
        drop(file);
        let (segment, _) =
            Segment::recover_active(&self.dir, base, self.config.index_interval_bytes, now_ms)?;
        self.log_end_offset = segment.end_offset;
        self.segments.insert(base, segment);
        self.active_unsynced = false;
        self.dir_unsynced = true;
        horizons_changed |= self.horizons.remove(&base).is_some();
        if horizons_changed {
            horizon::write(
                &self.dir,
                &self.dir_handle()?,
                &self.horizons,
                &mut CrashBudget(None),
            )?;
        }
        self.next_horizon = self.horizons.values().min().copied();
        if let Some(entries) = self.aborted.get_mut(&base) {
            let before = entries.len();
            entries.retain(|t| t.last_offset < self.log_end_offset);
            if entries.len() != before {
                txn_index::rewrite(&self.dir, base, entries)?;
            }
        }
        if self.epochs.truncate_from_end(self.log_end_offset) {
            self.epochs.write(&self.dir, &self.dir_handle()?)?;
        }
        self.check_invariants();
        tracing::info!(dir = %self.dir.display(), requested = offset, log_end_offset = self.log_end_offset, "truncated the log");
        Ok(self.log_end_offset)
    }

    /// Bytes of the closed segments that lie wholly below `high_watermark`: those whose
    /// records are at or after `clean_point` (dirty, not cleaned since), and all of them. The
    /// cleaner's `min.cleanable.dirty.ratio` is the first over the second.
    pub fn cleanable_bytes(&self, clean_point: i64, high_watermark: i64) -> (u64, u64) {
        let active_base = self.active().base_offset;
        let mut dirty = 0;
        let mut total = 0;
        for s in self.segments.values() {
            if s.base_offset == active_base || s.end_offset > high_watermark {
                break;
            }
            total += s.size;
            if s.end_offset > clean_point {
                dirty += s.size;
            }
        }
        (dirty, total)
    }

    /// The end offset of the last closed segment wholly below `high_watermark`: how far a
    /// cleaning pass can reach.
    pub fn cleanable_end(&self, high_watermark: i64) -> i64 {
        let active_base = self.active().base_offset;
        self.segments
            .values()
            .take_while(|s| s.base_offset != active_base && s.end_offset <= high_watermark)
            .last()
            .map_or(self.log_start_offset, |s| s.end_offset)
    }

    /// Time and size retention (`cleanup.policy=delete`): deletes the oldest segments while
    /// every record in them is older than `retention_ms` (compared with the segment's largest
    /// timestamp), or while the log without them is still at least `retention_bytes` large.
    /// Only a prefix of the log goes, and the log start offset advances to the first kept
    /// offset (checkpointed, as DeleteRecords does). An expired active segment is rolled and
    /// deleted too, so an idle topic still empties (size alone never deletes the active
    /// segment). Nothing at or above `high_watermark` is deleted. `-1` disables either limit.
    /// Returns the new log start offset when it moved.
    pub fn apply_retention(
        &mut self,
        now_ms: i64,
        retention_ms: i64,
        retention_bytes: i64,
        high_watermark: i64,
    ) -> Result<Option<i64>, LogError> {
        let mut size = self.size_bytes();
        let mut new_start = None;
        let active_base = self.active().base_offset;
        for segment in self.segments.values() {
            let is_active = segment.base_offset == active_base;
            if segment.is_empty() && !is_active && segment.end_offset <= high_watermark {
                // Emptied by compaction: it goes with the next segment that expires.
                continue;
            }
            if segment.is_empty() || segment.end_offset > high_watermark {
                break;
            }
            let expired = retention_ms >= 0
                && segment
                    .index
                    .max_timestamp
                    .is_some_and(|(ts, _)| now_ms.saturating_sub(ts) > retention_ms);
            let oversized = !is_active
                && retention_bytes >= 0
                && size.saturating_sub(segment.size) >= retention_bytes as u64;
            if !(expired || oversized) {
                break;
            }
            size -= segment.size;
            new_start = Some(segment.end_offset);
        }
        match new_start {
            Some(start) if start > self.log_start_offset => {
                let start = self.delete_records_before(start)?;
                tracing::info!(dir = %self.dir.display(), log_start_offset = start, "retention deleted old segments");
                Ok(Some(start))
            }
            _ => Ok(None),
        }
    }

    /// Base offsets of the segments, in order (the last one is the active segment).
    pub fn segment_base_offsets(&self) -> Vec<i64> {
        self.segments.keys().copied().collect()
    }

    /// The cleaner's delete horizons: (segment base offset, ms from which its tombstones may
    /// be removed), for the closed segments that keep a tombstone, in offset order.
    pub fn delete_horizons(&self) -> Vec<(i64, i64)> {
        self.horizons.iter().map(|(b, h)| (*b, *h)).collect()
    }

    /// Whether a delete horizon that no cleaning pass has applied yet has passed (at or
    /// before `now_ms`): a pass would now remove tombstones, even if no new data is dirty.
    pub fn delete_horizon_due(&self, now_ms: i64) -> bool {
        self.next_horizon.is_some_and(|h| h <= now_ms)
    }

    /// Log compaction (`cleanup.policy=compact`): rewrites closed segments so that only the
    /// latest record of each key stays.
    ///
    /// - The latest record of a key is the one with the highest offset among all batches whose
    ///   last offset is below `high_watermark`, the active segment included (control and
    ///   transactional batches do not count: a transaction may be aborted).
    /// - Cleaned: closed segments (never the active one) that end at or below
    ///   `high_watermark` and whose largest timestamp is at most `now_ms -
    ///   min_compaction_lag_ms`. Every keyed record that is not the latest of its key is
    ///   removed; a tombstone (null value) that is the latest of its key is removed once the
    ///   delete horizon of its segment has passed (at or before `now_ms`), but only if every
    ///   earlier segment is cleaned in the same pass (so no older value of its key can
    ///   survive it).
    /// - Delete horizons: the first pass that covers a segment keeping a tombstone records
    ///   `now_ms + delete_retention_ms` as the segment's horizon in the
    ///   `cleaner-delete-horizons` checkpoint (written after the segments, atomically), so a
    ///   tombstone always survives the pass that first cleans it and stays readable for
    ///   `delete_retention_ms` after it, whatever its record timestamp. A horizon is removed
    ///   once its segment keeps no tombstone, or the segment is deleted.
    /// - Kept unchanged: records without a key, control batches and batches with a producer
    ///   id (idempotent or transactional producers). A batch keeps its base offset and last
    ///   offset delta; kept records are copied byte for byte and the batch is recompressed
    ///   with its own codec; a batch left with no record is dropped; a segment left with no
    ///   batch stays as an empty file (so the log start offset does not move).
    /// - A segment from which nothing is removed is not rewritten, so a second pass with the
    ///   same `now_ms` changes nothing (unless `delete_retention_ms` is 0: then the horizons
    ///   the first pass recorded have already passed).
    ///
    /// Each rewrite is crash-safe: `<base>.log.cleaned` is written and fsynced, renamed to
    /// `<base>.log.swap` (the commit point) and the directory fsynced; the old indexes are
    /// deleted, `.swap` is renamed over `<base>.log`, the directory fsynced, and the index
    /// files written (from the index built while copying) and fsynced. [`PartitionLog::open`]
    /// finishes or discards an interrupted rewrite. Segments are rewritten and swapped in
    /// offset order, one at a time.
    ///
    /// This holds `&mut self` for the whole pass; [`PartitionLog::clean_concurrently`] runs
    /// the same pass on a log behind the caller's lock, holding it only for a snapshot and
    /// for each swap.
    ///
    /// A batch that cannot be decompressed is left as it is (and its keys are not counted).
    /// Memory: the key map holds every distinct key below the high watermark; see
    /// [`PartitionLog::clean_bounded`] for a bound.
    pub fn clean(
        &mut self,
        now_ms: i64,
        opts: CleanOptions,
        high_watermark: i64,
    ) -> Result<CleanReport, LogError> {
        self.clean_inner(now_ms, opts, high_watermark, usize::MAX, CrashBudget(None))
    }

    /// [`PartitionLog::clean`] with a key map of at most `max_keys` entries (each a 128-bit
    /// hash of the key and an offset, about 32 bytes). Once the map is full, keys not in it
    /// are left alone (all their records kept) while the keys in it are still followed to
    /// their latest offset, so the result is correct, only less compact; a later pass
    /// continues.
    pub fn clean_bounded(
        &mut self,
        now_ms: i64,
        opts: CleanOptions,
        high_watermark: i64,
        max_keys: usize,
    ) -> Result<CleanReport, LogError> {
        self.clean_inner(now_ms, opts, high_watermark, max_keys, CrashBudget(None))
    }

    /// Test hook: [`PartitionLog::clean`] that fails with a "simulated crash" error after
    /// `steps` durable steps, leaving the files as a crash at that point would. The log must
    /// then be dropped and reopened. Not part of the API.
    #[doc(hidden)]
    pub fn clean_with_simulated_crash(
        &mut self,
        now_ms: i64,
        opts: CleanOptions,
        high_watermark: i64,
        steps: u32,
    ) -> Result<CleanReport, LogError> {
        self.clean_inner(
            now_ms,
            opts,
            high_watermark,
            usize::MAX,
            CrashBudget(Some(steps)),
        )
    }

    /// [`PartitionLog::clean_bounded`] on a log that others go on using during the pass: the
    /// caller's lock is held only for brief steps, so appends, reads, retention and
    /// truncation are not held up while the pass reads and copies. `lock` takes the lock
    /// (`None`: the log is going away, the pass stops); the pass drops each guard it gets
    /// before it reads or writes segment data:
    ///
    /// 1. under the lock, a snapshot: the segments holding offsets below the high watermark
    ///    (their `.log` handles and sizes), which closed ones are cleaned and whether
    ///    tombstones may go from each, and the log start offset;
    /// 2. without it, the key map is built, then segment by segment the rewrite is written to
    ///    `<base>.log.cleaned` and fsynced;
    /// 3. under the lock, for each rewrite, a check that the log still holds every segment
    ///    the pass read, as it read it (the same `.log` handle with at least as many bytes,
    ///    which a deletion or a truncation changes; the same log start offset); then the
    ///    rewrite is swapped in with the durable steps of [`PartitionLog::clean`], its index
    ///    files written from the index built while copying (the new file is not read again);
    /// 4. under the lock, the same check, then the delete horizon checkpoint.
    ///
    /// When a check fails, or `lock` returns `None`, the rewrite at hand is discarded and the
    /// pass stops with [`CleanReport::abandoned`] set: nothing is lost, a later pass does the
    /// rest. An error while reading or copying is reported the same way if the log changed
    /// meanwhile (a segment deleted or cut under the reads), and as an error otherwise. One
    /// pass runs on a log at a time: a pass that finds another under way is abandoned at once.
    pub fn clean_concurrently<G>(
        lock: impl FnMut() -> Option<G>,
        now_ms: i64,
        opts: CleanOptions,
        high_watermark: i64,
        max_keys: usize,
    ) -> Result<CleanReport, LogError>
    where
        G: DerefMut<Target = PartitionLog>,
    {
        Self::clean_concurrently_with_hook(
            lock,
            now_ms,
            opts,
            high_watermark,
            max_keys,
            &mut |_| {},
        )
    }

    /// Test hook: [`PartitionLog::clean_concurrently`] that calls `hook` at each
    /// [`CleanStage`], without the lock. Not part of the API.
    #[doc(hidden)]
    pub fn clean_concurrently_with_hook<G>(
        lock: impl FnMut() -> Option<G>,
        now_ms: i64,
        opts: CleanOptions,
        high_watermark: i64,
        max_keys: usize,
        hook: &mut dyn FnMut(CleanStage),
    ) -> Result<CleanReport, LogError>
    where
        G: DerefMut<Target = PartitionLog>,
    {
        clean_pass(
            lock,
            now_ms,
            opts,
            high_watermark,
            max_keys,
            CrashBudget(None),
            hook,
        )
    }

    /// The pass of [`PartitionLog::clean_concurrently`] with `self` as the only user: the
    /// same steps in the same order, each "lock" a reborrow.
    fn clean_inner(
        &mut self,
        now_ms: i64,
        opts: CleanOptions,
        high_watermark: i64,
        max_keys: usize,
        crash: CrashBudget,
    ) -> Result<CleanReport, LogError> {
        // A pass that kept a guard while copying would panic here ("already borrowed").
        let log = std::cell::RefCell::new(self);
        clean_pass(
            || Some(std::cell::RefMut::map(log.borrow_mut(), |log| &mut **log)),
            now_ms,
            opts,
            high_watermark,
            max_keys,
            crash,
            &mut |_| {},
        )
    }

    /// Step 1 of a pass (under the lock): what it cleans and reads.
    fn plan_clean(&self, now_ms: i64, opts: CleanOptions, high_watermark: i64) -> Planned {
        let high_watermark = high_watermark.min(self.log_end_offset);
        let active_base = self.active().base_offset;
        let lag_cutoff = now_ms.saturating_sub(opts.min_compaction_lag_ms);

        // Which closed segments are cleaned, and whether tombstones may go from each.
        let mut candidates = Vec::new();
        let mut all_earlier_cleaned = true;
        for segment in self.segments.values() {
            if segment.base_offset == active_base || segment.end_offset > high_watermark {
                break;
            }
            if segment.is_empty() {
                continue;
            }
            let old_enough = segment
                .index
                .max_timestamp
                .is_some_and(|(ts, _)| ts <= lag_cutoff);
            if old_enough {
                let horizon_passed = self
                    .horizons
                    .get(&segment.base_offset)
                    .is_some_and(|h| *h <= now_ms);
                candidates.push((segment.base_offset, all_earlier_cleaned && horizon_passed));
            } else {
                all_earlier_cleaned = false;
            }
        }
        if candidates.is_empty() {
            return Planned::Nothing;
        }
        if self.cleaning.swap(true, Ordering::AcqRel) {
            return Planned::Busy;
        }
        Planned::Pass(CleanPlan {
            dir: self.dir.clone(),
            index_interval_bytes: self.config.index_interval_bytes,
            high_watermark,
            log_start_offset: self.log_start_offset,
            segments: self
                .segments
                .range(..high_watermark)
                .map(|(_, s)| s.snapshot())
                .collect(),
            candidates,
            _running: RunningPass(self.cleaning.clone()),
        })
    }

    /// Whether the log still holds every segment `plan` read, as it read it, and the same
    /// log start offset (see [`Segment::is_snapshot_of`]).
    fn still_as_planned(&self, plan: &CleanPlan) -> bool {
        self.log_start_offset == plan.log_start_offset
            && plan.segments.iter().all(|snapshot| {
                self.segments
                    .get(&snapshot.base_offset)
                    .is_some_and(|segment| segment.is_snapshot_of(snapshot))
            })
    }

    /// Step 3 of a pass (under the lock, after [`Self::still_as_planned`]): swaps the rewrite
    /// `cleaned` in for its segment. Crash steps 3 to 8 of the rewrite: `.cleaned` renamed to
    /// `.swap` (the commit point) and the directory fsynced; the old indexes deleted, the
    /// directory fsynced; `.swap` renamed over `.log`, the directory fsynced; then the index
    /// files are written from the index built while copying and fsynced.
    fn swap_cleaned(
        &mut self,
        cleaned: compaction::CleanedSegment,
        crash: &mut CrashBudget,
    ) -> Result<(), LogError> {
        let dir = self.dir.clone();
        let base = cleaned.base_offset;
        let end_offset = self
            .segments
            .get(&base)
            .expect("the plan's segment is in the log")
            .end_offset;
        let cleaned_path = segment_path(&dir, base, compaction::CLEANED_EXT);
        let swap_path = segment_path(&dir, base, compaction::SWAP_EXT);
        let dir_handle = self.dir_handle()?;
        std::fs::rename(&cleaned_path, &swap_path)
            .map_err(io_err("rename cleaned segment", &cleaned_path))?;
        crash.step(&dir)?; // 3: renamed, the rename not durable
        compaction::fsync_dir(&dir, &dir_handle)?;
        crash.step(&dir)?; // 4: committed
        for ext in ["index", "timeindex"] {
            compaction::remove_if_exists(&segment_path(&dir, base, ext), "remove stale index")?;
        }
        crash.step(&dir)?; // 5
        compaction::fsync_dir(&dir, &dir_handle)?;
        crash.step(&dir)?; // 6
        let log_path = segment_path(&dir, base, "log");
        std::fs::rename(&swap_path, &log_path)
            .map_err(io_err("rename swap segment", &swap_path))?;
        crash.step(&dir)?; // 7
        compaction::fsync_dir(&dir, &dir_handle)?;
        crash.step(&dir)?; // 8
        debug_assert_eq!(
            std::fs::metadata(&log_path).map(|m| m.len()).ok(),
            Some(cleaned.after)
        );
        let (segment, index_files) =
            Segment::closed_with_index(&dir, end_offset, cleaned.after, cleaned.index)?;
        // The indexes are trusted from now on, as a rolled segment's are once synced.
        for path in index_files {
            File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(io_err("fsync index", &path))?;
        }
        self.segments.insert(base, segment);
        self.check_invariants();
        Ok(())
    }

    /// Step 4 of a pass (under the lock, after [`Self::still_as_planned`]): records the delete
    /// horizons of the cleaned segments, `(base, whether it keeps a tombstone)` in offset
    /// order, and writes the checkpoint if they changed.
    fn record_horizons(
        &mut self,
        now_ms: i64,
        opts: CleanOptions,
        tombstones_kept: &[(i64, bool)],
        report: &mut CleanReport,
        crash: &mut CrashBudget,
    ) -> Result<(), LogError> {
        let mut horizons = self.horizons.clone();
        for &(base, kept_tombstone) in tombstones_kept {
            if kept_tombstone {
                horizons
                    .entry(base)
                    .or_insert_with(|| now_ms.saturating_add(opts.delete_retention_ms.max(0)));
            } else {
                horizons.remove(&base);
            }
        }
        if horizons != self.horizons {
            report.horizons_recorded = horizons
                .keys()
                .filter(|b| !self.horizons.contains_key(b))
                .count();
            horizon::write(&self.dir, &self.dir_handle()?, &horizons, crash)?;
        }
        // A horizon this pass could apply and did not (an earlier segment was not cleaned)
        // waits for the next pass that runs for another reason.
        self.next_horizon = horizons
            .iter()
            .filter(|(base, h)| **h > now_ms || !self.horizons.contains_key(base))
            .map(|(_, h)| *h)
            .min();
        self.horizons = horizons;
        if report.segments_cleaned > 0 || report.horizons_recorded > 0 {
            tracing::info!(dir = %self.dir.display(), ?report, "cleaned segments");
        }
        self.check_invariants();
        Ok(())
    }

    /// Loads every segment's aborted-transaction index, dropping entries at or past the log
    /// end (their markers were lost with a torn tail).
    fn load_txn_indexes(&mut self) -> Result<(), LogError> {
        for base in self.segments.keys().copied().collect::<Vec<_>>() {
            let mut entries = txn_index::load(&self.dir, base)?;
            let loaded = entries.len();
            entries.retain(|t| t.last_offset < self.log_end_offset);
            if entries.len() != loaded {
                txn_index::rewrite(&self.dir, base, &entries)?;
            }
            if !entries.is_empty() {
                self.aborted.insert(base, entries);
            }
        }
        Ok(())
    }

    /// Records an aborted transaction in the index of the segment holding its marker
    /// (`txn.last_offset`). Already known entries (same producer and marker) are skipped, so
    /// replay after a restart may offer them again. The file is fsynced with the next sync job.
    pub fn add_aborted_txn(&mut self, txn: AbortedTxn) -> Result<(), LogError> {
        let Some(base) = self
            .segments
            .range(..=txn.last_offset)
            .next_back()
            .map(|(base, _)| *base)
        else {
            return Ok(());
        };
        let entries = self.aborted.entry(base).or_default();
        if entries
            .iter()
            .any(|t| t.producer_id == txn.producer_id && t.last_offset == txn.last_offset)
        {
            return Ok(());
        }
        let path = txn_index::append(&self.dir, base, &txn)?;
        entries.push(txn);
        // Closed now and fsynced by path with the next job (once per file per job).
        if !self
            .unsynced_files
            .iter()
            .any(|t| matches!(t, SyncTarget::Path(p) if *p == path))
        {
            self.unsynced_files.push(SyncTarget::Path(path));
        }
        Ok(())
    }

    /// Aborted transactions that overlap `[from, upper)`: marker at or after `from`, first
    /// offset below `upper` (what a `read_committed` fetch of that range must be told).
    pub fn aborted_txns(&self, from: i64, upper: i64) -> Vec<AbortedTxn> {
        self.aborted
            .values()
            .flatten()
            .filter(|t| t.last_offset >= from && t.first_offset < upper)
            .copied()
            .collect()
    }

    /// Calls `f` with the header of every batch from the one holding `from` to the log end,
    /// in order, and with the batch bytes for control batches (transaction markers). Used to
    /// rebuild producer state at start-up.
    pub fn scan_batches(
        &self,
        from: i64,
        mut f: impl FnMut(&BatchHeader, Option<&[u8]>),
    ) -> Result<(), LogError> {
        let from = from.max(self.log_start_offset);
        let first_base = self
            .segments
            .range(..=from)
            .next_back()
            .map_or(from, |(base, _)| *base);
        for segment in self.segments.range(first_base..).map(|(_, s)| s) {
            let mut position = segment.index.lookup_offset(from);
            // Bounded by the segment size: each step advances by at least one header.
            while position < segment.size {
                let header = segment.header_at(position)?;
                if header.last_offset() >= from {
                    if header.is_control() {
                        let bytes = segment.read_bytes(position, header.total_len())?;
                        f(&header, Some(&bytes));
                    } else {
                        f(&header, None);
                    }
                }
                position += header.total_len() as u64;
            }
        }
        Ok(())
    }

    /// Deletes closed segments whose successor starts at or below the log start offset.
    fn remove_segments_below_start(&mut self) -> Result<(), LogError> {
        let doomed: Vec<i64> = self
            .segments
            .keys()
            .zip(self.segments.keys().skip(1))
            .take_while(|(_, next)| **next <= self.log_start_offset)
            .map(|(base, _)| *base)
            .collect();
        let mut forgot_horizon = false;
        for base in doomed {
            self.segments.remove(&base);
            self.aborted.remove(&base);
            Segment::remove_files(&self.dir, base)?;
            forgot_horizon |= self.horizons.remove(&base).is_some();
            self.dir_unsynced = true;
            tracing::debug!(dir = %self.dir.display(), base, "deleted segment below the log start offset");
        }
        if forgot_horizon {
            // Best effort: a stale entry on disk is harmless (dropped at open, and no new
            // segment reuses a deleted base offset).
            if let Err(error) = horizon::write(
                &self.dir,
                &self.dir_handle()?,
                &self.horizons,
                &mut CrashBudget(None),
            ) {
                tracing::warn!(dir = %self.dir.display(), %error, "could not rewrite the delete horizon checkpoint");
            }
        }
        Ok(())
    }

    /// Closes the files and removes the partition directory with everything in it.
    pub fn delete(self) -> Result<(), LogError> {
        let dir = self.dir.clone();
        drop(self);
        std::fs::remove_dir_all(&dir).map_err(io_err("remove partition directory", &dir))
    }
}

/// Opens a directory to fsync it, making room in the descriptor cache if needed.
fn open_dir(dir: &Path) -> Result<File, LogError> {
    crate::file_cache::open_evicting(|| File::open(dir))
        .map_err(io_err("open partition directory", dir))
}

/// The length of the longest prefix of `buf` made of whole batches whose last offset is below
/// `max_offset_exclusive`.
fn whole_batches_below(buf: &[u8], max_offset_exclusive: i64) -> usize {
    let mut position = 0;
    // Each step advances by at least one header.
    while buf.len() - position >= batch::BATCH_HEADER_LEN {
        let Ok(header) = batch::check_header(&buf[position..], position) else {
            break;
        };
        if position + header.total_len() > buf.len() || header.last_offset() >= max_offset_exclusive
        {
            break;
        }
        position += header.total_len();
    }
    position
}

/// After an unclean stop: checks every batch (framing, CRC, increasing offsets) of each closed
/// segment that holds offsets at or above `recovery_point`, in order. At the first segment with
/// a bad batch, every later segment is deleted, so that segment becomes the last one and
/// `Segment::recover_active` cuts it at the bad batch. (The last segment is always checked by
/// `recover_active`.)
fn validate_unflushed_segments(
    dir: &Path,
    bases: &mut Vec<i64>,
    recovery_point: i64,
    report: &mut RecoveryReport,
) -> Result<(), LogError> {
    let closed = bases.len().saturating_sub(1);
    for i in 0..closed {
        // A segment holds offsets below the next one's base: wholly below the recovery point
        // means known durable.
        if bases[i + 1] <= recovery_point {
            continue;
        }
        let Some(stop) = Segment::validate(dir, bases[i])? else {
            continue;
        };
        tracing::warn!(
            dir = %dir.display(),
            segment = bases[i],
            position = stop.position,
            reason = %stop.reason,
            later_segments = closed - i,
            "a closed segment past the recovery point is damaged; cutting the log there"
        );
        for base in bases.drain(i + 1..) {
            report.truncated_bytes += std::fs::metadata(segment_path(dir, base, "log"))
                .map(|m| m.len())
                .unwrap_or(0);
            Segment::remove_files(dir, base)?;
        }
        break;
    }
    Ok(())
}

/// Base offsets of the `.log` files in `dir`, sorted. Removes a leftover checkpoint temp file
/// and index files without a `.log` (from a deletion that was interrupted).
fn list_segments(dir: &Path) -> Result<Vec<i64>, LogError> {
    let mut logs = Vec::new();
    let mut indexes = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err("list partition directory", dir))? {
        let entry = entry.map_err(io_err("list partition directory", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(base) = parse_segment_name(name, "log") {
            logs.push(base);
        } else if let Some(base) =
            parse_segment_name(name, "index").or_else(|| parse_segment_name(name, "timeindex"))
        {
            indexes.push(base);
        } else if name == checkpoint::TMP_FILE_NAME || name == horizon::TMP_FILE_NAME {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(io_err("remove", &path))?;
        }
    }
    logs.sort_unstable();
    for base in indexes {
        if logs.binary_search(&base).is_err() {
            for ext in ["index", "timeindex"] {
                let path = segment_path(dir, base, ext);
                if path.exists() {
                    std::fs::remove_file(&path).map_err(io_err("remove orphan index", &path))?;
                }
            }
        }
    }
    Ok(logs)
}

/// What [`PartitionLog::plan_clean`] found.
enum Planned {
    /// No segment to clean.
    Nothing,
    /// Another pass is under way on this log.
    Busy,
    Pass(CleanPlan),
}

/// What a cleaning pass took from the log under its lock (step 1), to read and copy without
/// it.
struct CleanPlan {
    dir: PathBuf,
    index_interval_bytes: u32,
    /// At most the log end offset at the snapshot.
    high_watermark: i64,
    log_start_offset: i64,
    /// Every segment holding offsets below the high watermark, in offset order: what the key
    /// map reads. A segment the pass swapped is replaced by the new one.
    segments: Vec<SegmentSnapshot>,
    /// The closed segments to clean, in offset order, with whether tombstones may go from
    /// each (its delete horizon passed and every earlier segment is cleaned too).
    candidates: Vec<(i64, bool)>,
    _running: RunningPass,
}

impl CleanPlan {
    fn segment(&self, base: i64) -> &SegmentSnapshot {
        let i = self
            .segments
            .binary_search_by_key(&base, |s| s.base_offset)
            .expect("a candidate is among the segments read");
        &self.segments[i]
    }

    /// After the swap of `segment`: the log now holds it in place of the one read.
    fn swapped(&mut self, segment: SegmentSnapshot) {
        let i = self
            .segments
            .binary_search_by_key(&segment.base_offset, |s| s.base_offset)
            .expect("a candidate is among the segments read");
        self.segments[i] = segment;
    }

    /// Removes the unswapped rewrite of `base` (best effort: `open` removes a leftover).
    fn discard(&self, base: i64) {
        let path = segment_path(&self.dir, base, compaction::CLEANED_EXT);
        if let Err(error) = compaction::remove_if_exists(&path, "remove discarded cleaned segment")
        {
            tracing::warn!(%error, "cleaner: could not remove a discarded rewrite; it goes at the next open");
        }
    }

    /// After `error` while reading or copying without the lock: if the log changed meanwhile
    /// (or is going away), the error is what the change did to the reads and the pass is
    /// abandoned quietly; otherwise it is a real error.
    fn give_up<G>(
        &self,
        lock: &mut impl FnMut() -> Option<G>,
        error: LogError,
        report: CleanReport,
    ) -> Result<CleanReport, LogError>
    where
        G: DerefMut<Target = PartitionLog>,
    {
        if lock().is_some_and(|log| log.still_as_planned(self)) {
            return Err(error);
        }
        tracing::debug!(dir = %self.dir.display(), %error, "cleaner: the log changed under the pass's reads; giving up this pass");
        Ok(abandoned(report))
    }
}

/// Marks a log as having a cleaning pass under way, until dropped.
struct RunningPass(Arc<AtomicBool>);

impl Drop for RunningPass {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// `report`, marked as given up (see [`CleanReport::abandoned`]).
fn abandoned(mut report: CleanReport) -> CleanReport {
    report.abandoned = true;
    report
}

/// A cleaning pass (see [`PartitionLog::clean_concurrently`]): `lock` gives the log for each
/// brief step; everything else runs without it.
fn clean_pass<G>(
    mut lock: impl FnMut() -> Option<G>,
    now_ms: i64,
    opts: CleanOptions,
    high_watermark: i64,
    max_keys: usize,
    mut crash: CrashBudget,
    hook: &mut dyn FnMut(CleanStage),
) -> Result<CleanReport, LogError>
where
    G: DerefMut<Target = PartitionLog>,
{
    let report = CleanReport::default();
    // 1. The snapshot, under the lock.
    let planned = match lock() {
        Some(log) => log.plan_clean(now_ms, opts, high_watermark),
        None => return Ok(abandoned(report)),
    };
    let mut plan = match planned {
        Planned::Nothing => return Ok(report),
        Planned::Busy => {
            tracing::debug!("cleaner: another pass is under way on this log");
            return Ok(abandoned(report));
        }
        Planned::Pass(plan) => plan,
    };
    let mut report = report;

    // 2. The key map and the rewrites, without the lock.
    let keys = match compaction::map_keys(&plan.segments, plan.high_watermark, max_keys) {
        Ok(keys) => keys,
        Err(error) => return plan.give_up(&mut lock, error, report),
    };
    hook(CleanStage::KeysMapped);
    let mut tombstones_kept = Vec::with_capacity(plan.candidates.len());
    for i in 0..plan.candidates.len() {
        let (base, drop_tombstones) = plan.candidates[i];
        let kept_tombstone = std::cell::Cell::new(false);
        let keep = |record: &compaction::RawRecord<'_>| -> bool {
            let Some(key) = record.key else { return true };
            let keep = match keys.latest.get(&compaction::key_hash(key)) {
                Some(&at) if at != record.offset => false,
                Some(_) => !(record.value_is_null && drop_tombstones),
                None => true,
            };
            if keep && record.value_is_null {
                kept_tombstone.set(true);
            }
            keep
        };
        // An idempotent batch left with no record keeps its header while it is the last
        // batch of its producer, so that the producer state rebuilt from the log still
        // knows the producer's epoch and last sequence.
        let keep_empty = |header: &BatchHeader| {
            header.producer_id >= 0
                && keys.last_of_producer.get(&header.producer_id) == Some(&header.base_offset)
        };
        let written = compaction::write_cleaned(
            &plan.dir,
            plan.segment(base),
            keep,
            keep_empty,
            plan.index_interval_bytes,
            &mut crash,
        );
        let cleaned = match written {
            Ok(cleaned) => cleaned,
            Err(error) if compaction::is_simulated_crash(&error) => return Err(error),
            Err(error) => return plan.give_up(&mut lock, error, report),
        };
        if let Some(cleaned) = cleaned {
            hook(CleanStage::Copied(base));
            // 3. The swap, under the lock, if the log is still what the pass read.
            let Some(mut log) = lock().filter(|log| log.still_as_planned(&plan)) else {
                plan.discard(base);
                tracing::debug!(dir = %plan.dir.display(), base, "cleaner: the log changed during the pass; its rewrite is discarded");
                return Ok(abandoned(report));
            };
            let (removed, before, after) = (cleaned.removed, cleaned.before, cleaned.after);
            log.swap_cleaned(cleaned, &mut crash)?;
            let swapped = log.segments.get(&base).expect("just swapped in").snapshot();
            drop(log);
            plan.swapped(swapped);
            report.segments_cleaned += 1;
            report.records_removed += removed;
            report.bytes_before += before;
            report.bytes_after += after;
        }
        tombstones_kept.push((base, kept_tombstone.get()));
    }

    // 4. The delete horizons, under the lock.
    let Some(mut log) = lock().filter(|log| log.still_as_planned(&plan)) else {
        tracing::debug!(dir = %plan.dir.display(), "cleaner: the log changed during the pass; no horizon recorded");
        return Ok(abandoned(report));
    };
    log.record_horizons(now_ms, opts, &tombstones_kept, &mut report, &mut crash)?;
    Ok(report)
}
