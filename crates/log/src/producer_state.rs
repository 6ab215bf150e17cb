//! Producer state of one partition: what idempotent and transactional producers have written.
//!
//! For every producer id seen in the partition this keeps its epoch, the sequence ranges and
//! offsets of its last [`MAX_CACHED_BATCHES`] batches (so a retried batch is recognised and
//! answered with its original offsets instead of being appended twice), and the first offset
//! of its open transaction, if any. From the open transactions follows the partition's first
//! unstable offset, and with the high watermark its last stable offset (LSO), the bound of
//! `read_committed` fetches.
//!
//! The manager is a pure state machine: [`ProducerStateManager::check`] validates a batch a
//! client sends (before the append), [`ProducerStateManager::on_batch`] records an appended
//! batch, [`ProducerStateManager::on_marker`] a transaction marker (control batch). The same
//! `on_batch` / `on_marker` replay the log at start-up, from the offset of the last snapshot
//! ([`ProducerStateManager::write_snapshot`], [`ProducerStateManager::read_snapshot`]).
//!
//! Sequence rules (Kafka's): within an epoch a batch must start right after the last one
//! (`last + 1`, wrapping from `i32::MAX` to 0); a new epoch starts at sequence 0; a producer
//! the partition has no state for may start anywhere (its earlier batches may have been
//! removed by retention). An older epoch is refused.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use strata_protocol::batch::BatchHeader;

use crate::segment::io_err;
use crate::LogError;

/// How many recent batches per producer are remembered for duplicate detection (Kafka's
/// `max.in.flight.requests.per.connection` limit for idempotence is 5).
pub const MAX_CACHED_BATCHES: usize = 5;

/// The snapshot file in the partition directory.
pub const SNAPSHOT_FILE: &str = "producer-state.snapshot";

/// One appended batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchMetadata {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

/// What the partition knows about one producer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    pub producer_id: i64,
    pub epoch: i16,
    /// The last batches, oldest first, at most [`MAX_CACHED_BATCHES`].
    pub batches: VecDeque<BatchMetadata>,
    /// When the producer last wrote here (broker time of the append; at start-up, replayed
    /// producers count from the replay), ms.
    pub last_timestamp: i64,
    /// The first offset of the producer's open transaction in this partition.
    pub current_txn_first_offset: Option<i64>,
    /// The coordinator epoch of the last marker.
    pub coordinator_epoch: i32,
}

/// An aborted transaction's range in the partition, as kept in the transaction index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// The offset of the abort marker.
    pub last_offset: i64,
    /// The partition's last stable offset once this transaction completed.
    pub last_stable_offset: i64,
}

/// Why a producer's batch is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProducerError {
    #[error(
        "producer {producer_id} has epoch {current}; a batch with the older epoch {got} is refused"
    )]
    InvalidProducerEpoch {
        producer_id: i64,
        current: i16,
        got: i16,
    },
    #[error("out of order sequence for producer {producer_id}: expected {expected}, got {got}")]
    OutOfOrderSequence {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    #[error(
        "producer {producer_id} has an open transaction; a non-transactional batch is refused"
    )]
    InvalidTxnState { producer_id: i64 },
}

/// The result of [`ProducerStateManager::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Append the batch.
    Append,
    /// The batch was appended before: answer with these offsets, do not append.
    Duplicate(BatchMetadata),
}

/// A transaction marker as written to the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkerRecord {
    pub producer_id: i64,
    pub epoch: i16,
    pub marker: Marker,
    pub coordinator_epoch: i32,
    /// The marker's offset.
    pub offset: i64,
    /// Broker time of the write, ms.
    pub timestamp: i64,
}

/// The kind of a transaction marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    Commit,
    Abort,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProducerStateManager {
    producers: HashMap<i64, ProducerEntry>,
    /// Open transactions: first offset -> producer id.
    ongoing: BTreeMap<i64, i64>,
    /// Completed transactions whose marker may still be above the high watermark:
    /// first offset -> marker offset. They keep the LSO until the HW passes the marker.
    completing: BTreeMap<i64, i64>,
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

/// The last sequence of a batch whose first is `first` with `count` records (wrapping).
fn last_seq(first: i32, last_offset_delta: i32) -> i32 {
    let last = i64::from(first) + i64::from(last_offset_delta);
    if last > i64::from(i32::MAX) {
        (last - i64::from(i32::MAX) - 1) as i32
    } else {
        last as i32
    }
}

impl ProducerStateManager {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn entry(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    pub fn entries(&self) -> impl Iterator<Item = &ProducerEntry> {
        self.producers.values()
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Validates a batch a client sent (its base offset is not assigned yet).
    pub fn check(&self, h: &BatchHeader) -> Result<Check, ProducerError> {
        if h.producer_id < 0 {
            return Ok(Check::Append);
        }
        let Some(entry) = self.producers.get(&h.producer_id) else {
            return Ok(Check::Append);
        };
        if h.producer_epoch < entry.epoch {
            return Err(ProducerError::InvalidProducerEpoch {
                producer_id: h.producer_id,
                current: entry.epoch,
                got: h.producer_epoch,
            });
        }
        if !h.is_transactional() && entry.current_txn_first_offset.is_some() {
            return Err(ProducerError::InvalidTxnState {
                producer_id: h.producer_id,
            });
        }
        if h.producer_epoch > entry.epoch {
            if h.base_sequence != 0 {
                return Err(ProducerError::OutOfOrderSequence {
                    producer_id: h.producer_id,
                    expected: 0,
                    got: h.base_sequence,
                });
            }
            return Ok(Check::Append);
        }
        let last = last_seq(h.base_sequence, h.last_offset_delta);
        if let Some(dup) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == h.base_sequence && b.last_seq == last)
        {
            return Ok(Check::Duplicate(*dup));
        }
        match entry.batches.back() {
            Some(prev) if h.base_sequence != next_seq(prev.last_seq) => {
                Err(ProducerError::OutOfOrderSequence {
                    producer_id: h.producer_id,
                    expected: next_seq(prev.last_seq),
                    got: h.base_sequence,
                })
            }
            _ => Ok(Check::Append),
        }
    }

    /// Records an appended data batch (base offset assigned) at broker time `now_ms`. Also
    /// used for replay.
    pub fn on_batch(&mut self, h: &BatchHeader, now_ms: i64) {
        if h.producer_id < 0 || h.is_control() {
            return;
        }
        let entry = self
            .producers
            .entry(h.producer_id)
            .or_insert_with(|| ProducerEntry {
                producer_id: h.producer_id,
                epoch: h.producer_epoch,
                batches: VecDeque::new(),
                last_timestamp: -1,
                current_txn_first_offset: None,
                coordinator_epoch: -1,
            });
        if h.producer_epoch > entry.epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        if h.base_sequence >= 0 {
            entry.batches.push_back(BatchMetadata {
                first_seq: h.base_sequence,
                last_seq: last_seq(h.base_sequence, h.last_offset_delta),
                first_offset: h.base_offset,
                last_offset: h.last_offset(),
                max_timestamp: h.max_timestamp,
            });
            while entry.batches.len() > MAX_CACHED_BATCHES {
                entry.batches.pop_front();
            }
        }
        entry.last_timestamp = entry.last_timestamp.max(now_ms);
        if h.is_transactional() && entry.current_txn_first_offset.is_none() {
            entry.current_txn_first_offset = Some(h.base_offset);
            self.ongoing.insert(h.base_offset, h.producer_id);
        }
    }

    /// Whether a marker from `producer_id` at `epoch` may be written (its epoch is not older
    /// than the producer's).
    pub fn check_marker(&self, producer_id: i64, epoch: i16) -> Result<(), ProducerError> {
        match self.producers.get(&producer_id) {
            Some(entry) if epoch < entry.epoch => Err(ProducerError::InvalidProducerEpoch {
                producer_id,
                current: entry.epoch,
                got: epoch,
            }),
            _ => Ok(()),
        }
    }

    /// Records a transaction marker (written at `m.offset`). Returns the aborted range when
    /// it ends an open transaction with an abort (to add to the transaction index).
    pub fn on_marker(&mut self, m: &MarkerRecord, high_watermark: i64) -> Option<AbortedTxn> {
        let MarkerRecord {
            producer_id,
            epoch,
            marker,
            coordinator_epoch,
            offset,
            timestamp,
        } = *m;
        let entry = self
            .producers
            .entry(producer_id)
            .or_insert_with(|| ProducerEntry {
                producer_id,
                epoch,
                batches: VecDeque::new(),
                last_timestamp: -1,
                current_txn_first_offset: None,
                coordinator_epoch,
            });
        if epoch > entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        entry.coordinator_epoch = coordinator_epoch;
        entry.last_timestamp = entry.last_timestamp.max(timestamp);
        let first = entry.current_txn_first_offset.take()?;
        self.ongoing.remove(&first);
        self.completing.insert(first, offset);
        let last_stable_offset = self.last_stable_offset(high_watermark.max(offset + 1));
        (marker == Marker::Abort).then_some(AbortedTxn {
            producer_id,
            first_offset: first,
            last_offset: offset,
            last_stable_offset,
        })
    }

    /// The first offset of the earliest transaction that is open, or complete but with its
    /// marker at or above `high_watermark`.
    pub fn first_unstable_offset(&self, high_watermark: i64) -> Option<i64> {
        let ongoing = self.ongoing.keys().next().copied();
        let completing = self
            .completing
            .iter()
            .find(|(_, marker)| **marker >= high_watermark)
            .map(|(first, _)| *first);
        match (ongoing, completing) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The last stable offset for a high watermark: `read_committed` reads stop there.
    pub fn last_stable_offset(&self, high_watermark: i64) -> i64 {
        self.first_unstable_offset(high_watermark)
            .map_or(high_watermark, |first| first.min(high_watermark))
    }

    /// Forgets completed transactions whose markers are below the high watermark.
    pub fn on_high_watermark(&mut self, high_watermark: i64) {
        self.completing
            .retain(|_, marker| *marker >= high_watermark);
    }

    /// Open transactions: (producer id, epoch, first offset), oldest first.
    pub fn ongoing(&self) -> Vec<(i64, i16, i64)> {
        self.ongoing
            .iter()
            .map(|(first, pid)| {
                (
                    *pid,
                    self.producers.get(pid).map_or(-1, |e| e.epoch),
                    *first,
                )
            })
            .collect()
    }

    /// Drops producers without an open transaction that last wrote before
    /// `now - expiration_ms` (`producer.id.expiration.ms`). Returns how many.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| {
            e.current_txn_first_offset.is_some()
                || e.last_timestamp < 0
                || now_ms.saturating_sub(e.last_timestamp) < expiration_ms
        });
        before - self.producers.len()
    }

    /// Writes the state as of log end offset `offset` (every batch below it is included) to
    /// the snapshot file: temp file, fsync, rename. A missing or unreadable snapshot only
    /// means a longer replay at start-up.
    pub fn write_snapshot(&self, dir: &Path, offset: i64) -> Result<(), LogError> {
        let snapshot = Snapshot {
            version: 1,
            offset,
            producers: self.producers.values().cloned().collect(),
        };
        let body = serde_json::to_vec(&snapshot).expect("snapshot serializes");
        let crc = crc32c::crc32c(&body);
        let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
        let path = dir.join(SNAPSHOT_FILE);
        let mut file = std::fs::File::create(&tmp).map_err(io_err("create snapshot", &tmp))?;
        file.write_all(format!("{crc:08x}\n").as_bytes())
            .and_then(|_| file.write_all(&body))
            .and_then(|_| file.sync_all())
            .map_err(io_err("write snapshot", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_err("rename snapshot", &path))?;
        Ok(())
    }

    /// Reads the snapshot: the state and the offset replay continues from. `None` if there is
    /// none or it is damaged (then replay from the log start).
    pub fn read_snapshot(dir: &Path) -> Option<(ProducerStateManager, i64)> {
        let data = std::fs::read(dir.join(SNAPSHOT_FILE)).ok()?;
        let newline = data.iter().position(|b| *b == b'\n')?;
        let crc = u32::from_str_radix(std::str::from_utf8(&data[..newline]).ok()?, 16).ok()?;
        let body = &data[newline + 1..];
        if crc32c::crc32c(body) != crc {
            tracing::warn!(dir = %dir.display(), "producer state snapshot has a bad checksum; replaying the log instead");
            return None;
        }
        let snapshot: Snapshot = serde_json::from_slice(body).ok()?;
        let mut state = ProducerStateManager::new();
        for entry in snapshot.producers {
            if let Some(first) = entry.current_txn_first_offset {
                state.ongoing.insert(first, entry.producer_id);
            }
            state.producers.insert(entry.producer_id, entry);
        }
        Some((state, snapshot.offset))
    }

    /// Removes the snapshot (when it no longer matches the log).
    pub fn remove_snapshot(dir: &Path) {
        let _ = std::fs::remove_file(dir.join(SNAPSHOT_FILE));
    }
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    offset: i64,
    producers: Vec<ProducerEntry>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, count: i32, txn: bool) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            batch_length: 0,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: if txn { 0x10 } else { 0 },
            last_offset_delta: count - 1,
            base_timestamp: 1000,
            max_timestamp: 1000,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: count,
        }
    }

    fn marker(producer_id: i64, marker: Marker, offset: i64) -> MarkerRecord {
        MarkerRecord {
            producer_id,
            epoch: 0,
            marker,
            coordinator_epoch: 0,
            offset,
            timestamp: 2000,
        }
    }

    fn append(state: &mut ProducerStateManager, mut h: BatchHeader, at: i64) -> BatchHeader {
        assert_eq!(state.check(&h), Ok(Check::Append));
        h.base_offset = at;
        state.on_batch(&h, 1000);
        h
    }

    #[test]
    fn in_order_batches_append_and_retries_are_duplicates() {
        let mut s = ProducerStateManager::new();
        append(&mut s, header(7, 0, 0, 3, false), 0);
        append(&mut s, header(7, 0, 3, 2, false), 3);
        // A retry of either batch is a duplicate with its original offsets.
        assert_eq!(
            s.check(&header(7, 0, 0, 3, false)),
            Ok(Check::Duplicate(BatchMetadata {
                first_seq: 0,
                last_seq: 2,
                first_offset: 0,
                last_offset: 2,
                max_timestamp: 1000
            }))
        );
        assert!(matches!(
            s.check(&header(7, 0, 3, 2, false)),
            Ok(Check::Duplicate(b)) if b.first_offset == 3 && b.last_offset == 4
        ));
        // A gap is out of order, naming the expected sequence.
        assert_eq!(
            s.check(&header(7, 0, 6, 1, false)),
            Err(ProducerError::OutOfOrderSequence {
                producer_id: 7,
                expected: 5,
                got: 6
            })
        );
        append(&mut s, header(7, 0, 5, 1, false), 5);
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut s = ProducerStateManager::new();
        for i in 0..7 {
            append(&mut s, header(1, 0, i, 1, false), i64::from(i));
        }
        assert_eq!(s.entry(1).unwrap().batches.len(), MAX_CACHED_BATCHES);
        assert!(matches!(
            s.check(&header(1, 0, 2, 1, false)),
            Ok(Check::Duplicate(_))
        ));
        // Sequence 0 and 1 fell out of the cache: no longer recognised, and out of order.
        assert!(matches!(
            s.check(&header(1, 0, 1, 1, false)),
            Err(ProducerError::OutOfOrderSequence { expected: 7, .. })
        ));
    }

    #[test]
    fn epochs_fence_and_restart_sequences() {
        let mut s = ProducerStateManager::new();
        append(&mut s, header(1, 3, 0, 1, false), 0);
        assert_eq!(
            s.check(&header(1, 2, 1, 1, false)),
            Err(ProducerError::InvalidProducerEpoch {
                producer_id: 1,
                current: 3,
                got: 2
            })
        );
        // A new epoch starts at 0 ...
        assert!(matches!(
            s.check(&header(1, 4, 5, 1, false)),
            Err(ProducerError::OutOfOrderSequence { expected: 0, .. })
        ));
        append(&mut s, header(1, 4, 0, 1, false), 1);
        // ... and the old epoch is now refused, even for a retry of its batch.
        assert!(matches!(
            s.check(&header(1, 3, 0, 1, false)),
            Err(ProducerError::InvalidProducerEpoch { .. })
        ));
    }

    #[test]
    fn unknown_producers_may_start_anywhere_and_sequences_wrap() {
        let mut s = ProducerStateManager::new();
        append(&mut s, header(9, 0, i32::MAX - 1, 2, false), 0);
        assert_eq!(s.entry(9).unwrap().batches[0].last_seq, i32::MAX);
        append(&mut s, header(9, 0, 0, 1, false), 2);
        // Non-idempotent batches carry no state.
        append(&mut s, header(-1, -1, -1, 1, false), 3);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn transactions_hold_the_last_stable_offset_until_their_marker_is_below_the_hw() {
        let mut s = ProducerStateManager::new();
        append(&mut s, header(1, 0, 0, 2, true), 10);
        append(&mut s, header(2, 0, 0, 1, true), 12);
        append(&mut s, header(1, 0, 2, 1, true), 13);
        assert_eq!(s.last_stable_offset(14), 10);
        // A non-transactional batch from a producer with an open transaction is refused.
        assert_eq!(
            s.check(&header(1, 0, 3, 1, false)),
            Err(ProducerError::InvalidTxnState { producer_id: 1 })
        );
        // Commit producer 1 at offset 14: the LSO moves to producer 2's first offset once the
        // marker is below the HW.
        assert_eq!(s.on_marker(&marker(1, Marker::Commit, 14), 14), None);
        assert_eq!(s.last_stable_offset(14), 10);
        assert_eq!(s.last_stable_offset(15), 12);
        s.on_high_watermark(15);
        let aborted = s.on_marker(&marker(2, Marker::Abort, 15), 15).unwrap();
        assert_eq!(
            aborted,
            AbortedTxn {
                producer_id: 2,
                first_offset: 12,
                last_offset: 15,
                last_stable_offset: 16
            }
        );
        assert_eq!(s.last_stable_offset(16), 16);
        assert!(s.ongoing().is_empty());
        // A marker with an older epoch is refused.
        assert!(s.check_marker(1, 0).is_ok());
        append(&mut s, header(1, 1, 0, 1, false), 16);
        assert!(s.check_marker(1, 0).is_err());
    }

    #[test]
    fn snapshots_round_trip_and_damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ProducerStateManager::new();
        append(&mut s, header(1, 0, 0, 2, true), 0);
        append(&mut s, header(2, 5, 0, 1, false), 2);
        s.write_snapshot(dir.path(), 3).unwrap();
        let (read, offset) = ProducerStateManager::read_snapshot(dir.path()).unwrap();
        assert_eq!(offset, 3);
        assert_eq!(read.entry(1), s.entry(1));
        assert_eq!(read.entry(2), s.entry(2));
        assert_eq!(read.last_stable_offset(3), 0);
        let path = dir.path().join(SNAPSHOT_FILE);
        let mut data = std::fs::read(&path).unwrap();
        let last = data.len() - 2;
        data[last] ^= 1;
        std::fs::write(&path, data).unwrap();
        assert!(ProducerStateManager::read_snapshot(dir.path()).is_none());
    }

    #[test]
    fn idle_producers_expire_but_open_transactions_stay() {
        let mut s = ProducerStateManager::new();
        append(&mut s, header(1, 0, 0, 1, false), 0);
        append(&mut s, header(2, 0, 0, 1, true), 1);
        assert_eq!(s.expire(1000 + 60_000, 60_000), 1);
        assert!(s.entry(1).is_none());
        assert!(s.entry(2).is_some());
    }
}
