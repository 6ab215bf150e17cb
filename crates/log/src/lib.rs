//! The storage engine for one partition: a segmented, append-only log of Kafka record batches.
//!
//! Principal types:
//!
//! - [`PartitionLog`]: the log of one partition directory. [`PartitionLog::append`] assigns
//!   offsets by rewriting each batch's base offset in place and writes the batches to the
//!   active segment, rolling it by size or age; [`PartitionLog::read`] returns whole batches
//!   starting with the one that contains an offset; [`PartitionLog::open`] recovers after a
//!   crash and reports what it did in a [`RecoveryReport`].
//! - [`SyncJob`]: everything written since the previous job (cached segment files and paths,
//!   no descriptors held while it waits), so that the fsync runs without holding the log
//!   (group commit is the caller's business).
//! - [`file_cache`]: the process-wide LRU of open segment files within a descriptor budget;
//!   a partition holds no descriptor while idle.
//! - [`PartitionLog::clean`]: log compaction of closed segments ([`CleanOptions`],
//!   [`CleanReport`]; see `compaction.rs`); [`PartitionLog::clean_concurrently`] runs the
//!   same pass on a log behind the caller's lock, holding it only for a snapshot and for each
//!   swap, so appends and reads go on while it copies.
//! - [`LogConfig`], [`AppendInfo`], [`LogError`].
//!
//! Internally a `PartitionLog` is a `BTreeMap` from base offset to `Segment` (one `.log` with
//! its sparse `.index` and `.timeindex`; see `segment.rs` and `index.rs` for the byte layouts
//! and `checkpoint.rs` for `log-start-offset`, `horizon.rs` for the cleaner's
//! `cleaner-delete-horizons`).
//!
//! Data flow:
//!
//! ```text
//!  produce bytes ──append──▶ active segment (.log in the page cache through a cached
//!                            descriptor, index entries in memory until the segment rolls)
//!                 sync_job ─▶ SyncJob::run (fdatasync, off the lock) ─▶ "durable below N"
//!  fetch ◀──read── index lookup ▶ scan batch headers ▶ one positioned read of whole batches
//! ```
//!
//! What this crate must never do: decode records on the append or read path (only batch
//! headers are parsed), serve a partial batch, reuse an offset, or do networking / async. It
//! takes no locks of its own: the caller serializes access (the broker holds a mutex per
//! partition); [`PartitionLog::clean_concurrently`] is given a way to take the caller's lock
//! and takes it for its brief steps only.
//! Errors are typed ([`LogError`]); invariant violations are panics.

mod checkpoint;
mod compaction;
pub mod epoch_cache;
pub mod file_cache;
mod horizon;
mod index;
pub mod offset_checkpoint;
mod partition_log;
pub mod producer_state;
mod segment;
mod txn_index;

use std::path::PathBuf;

use strata_protocol::batch::BatchError;

pub use crate::checkpoint::replace_file_durably;
pub use crate::compaction::{recompress_batch, CleanOptions, CleanReport, CleanStage};
pub use crate::partition_log::{PartitionLog, SyncJob};
pub use crate::producer_state::{
    AbortedTxn, Check, Marker, MarkerRecord, ProducerError, ProducerStateManager,
};

/// Log settings taken from the topic config (Kafka's `segment.bytes`, `segment.ms`,
/// `index.interval.bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll the active segment before an append that would make it larger than this.
    pub segment_bytes: u64,
    /// Roll a non-empty active segment whose first append is at least this old.
    pub segment_ms: i64,
    /// Bytes of log between two sparse index entries (0 indexes every batch).
    pub index_interval_bytes: u32,
}

impl Default for LogConfig {
    /// Kafka's defaults: 1 GiB segments, 7 days, 4 KiB index interval.
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            index_interval_bytes: 4096,
        }
    }
}

/// What [`PartitionLog::open`] found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Bytes cut from the tail of the last segment (a torn or corrupt write).
    pub truncated_bytes: u64,
    /// The log end offset at which the cut happened (the first offset that was lost).
    pub truncated_at_offset: Option<i64>,
    /// Segments whose index files were missing, inconsistent or stale and were rewritten.
    pub rebuilt_indexes: usize,
    /// Segments in the log after recovery.
    pub segments: usize,
}

/// What [`PartitionLog::append`] assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// The offset of the first record of the first batch.
    pub base_offset: i64,
    /// The offset of the last record of the last batch.
    pub last_offset: i64,
    /// The largest batch `maxTimestamp` appended (after LogAppendTime stamping).
    pub max_timestamp: i64,
    /// The last offset of the batch holding `max_timestamp` (batch granularity).
    pub offset_of_max_timestamp: i64,
    /// The time stamped on the batches, if the topic uses LogAppendTime.
    pub log_append_time: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("could not {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The requested offset is outside `[start, end]` (`end`, the log end offset, is valid
    /// and reads as empty).
    #[error("offset {offset} is out of range: the log holds offsets from {start} to {end}")]
    OffsetOutOfRange { offset: i64, start: i64, end: i64 },
    /// Data on disk is not what the log wrote; recovery handles the last segment, so this is
    /// damage to an older one (or a bug).
    #[error("{path} is corrupt at byte {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    /// `append` was given bytes that are not valid batches (the caller should have run
    /// `strata_protocol::batch::validate_batches`).
    #[error("refusing to append: {0}")]
    InvalidBatches(#[from] BatchError),
    /// A write failed (for example ENOSPC) and the segment was cut back to where it was, so
    /// the log is as it was before the append: the append can be retried later. Any other
    /// I/O error from an append leaves the log in an unknown state.
    #[error("could not write {path} (nothing of the append was kept): {source}")]
    WriteRolledBack {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `append` was given more than one segment can hold (2^32 bytes or offsets).
    #[error("refusing to append: {reason}")]
    AppendTooLarge { reason: String },
}
