//! The sparse offset and time indexes of one segment, in memory and in their file formats.
//!
//! ```text
//! <base>.index      entries of 8 bytes:  u32 relative offset | u32 byte position   (big-endian)
//! <base>.timeindex  entries of 12 bytes: i64 max timestamp   | u32 relative offset (big-endian)
//! ```
//!
//! Offset index: an entry `(rel, pos)` says the batch with base offset `segment_base + rel`
//! starts at byte `pos` of the `.log`. The first batch (position 0) never gets an entry; a
//! later batch gets one when at least `index_interval_bytes` of log were written since the
//! previous entry (so `index_interval_bytes = 0` indexes every batch). Both fields strictly
//! increase from entry to entry.
//!
//! Time index: an entry `(ts, rel)` says that `ts` is the largest `maxTimestamp` of all batches
//! of the segment up to and including the batch whose *last* offset is `segment_base + rel`.
//! An entry is written when that running maximum grows, at most one per index interval; when
//! the segment stops being active the final maximum is written too, so the last entry of a
//! closed segment is its largest timestamp. Timestamps strictly increase, relative offsets do
//! not decrease.
//!
//! Neither file is fsynced on the append path: both can be rebuilt from the `.log`, and the
//! last segment's are always rebuilt on open. The owner of this module never trusts an index
//! to be complete, only to be *consistent*: a missing entry only makes a lookup scan further.

use strata_protocol::batch::BatchHeader;

pub(crate) const OFFSET_ENTRY_LEN: usize = 8;
pub(crate) const TIME_ENTRY_LEN: usize = 12;

/// One offset-index entry: the batch at `base + relative_offset` starts at `position`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

/// One time-index entry: `timestamp` is the running maximum up to `base + relative_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

/// The indexes of one segment plus the running state needed to extend them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentIndex {
    pub base_offset: i64,
    pub offsets: Vec<OffsetEntry>,
    pub times: Vec<TimeEntry>,
    /// The largest batch `maxTimestamp` and the last offset of its (first) batch.
    pub max_timestamp: Option<(i64, i64)>,
    bytes_since_offset_entry: u64,
    bytes_since_time_entry: u64,
    /// The running maximum grew but was not written (interval not reached yet).
    time_entry_pending: bool,
}

/// What one batch added to the indexes, for the caller to append to the files.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NewEntries {
    pub offset: Option<OffsetEntry>,
    pub time: Option<TimeEntry>,
}

impl SegmentIndex {
    pub fn new(base_offset: i64) -> Self {
        SegmentIndex {
            base_offset,
            offsets: Vec::new(),
            times: Vec::new(),
            max_timestamp: None,
            bytes_since_offset_entry: 0,
            bytes_since_time_entry: 0,
            time_entry_pending: false,
        }
    }

    fn relative(&self, offset: i64) -> u32 {
        u32::try_from(offset - self.base_offset)
            .expect("the segment rolls before a relative offset leaves u32")
    }

    /// Accounts for one batch written at `position`. `header.base_offset` is the assigned one.
    pub fn on_batch(
        &mut self,
        header: &BatchHeader,
        position: u64,
        interval_bytes: u32,
    ) -> NewEntries {
        let mut added = NewEntries::default();
        let interval = u64::from(interval_bytes);
        if position > 0 && self.bytes_since_offset_entry >= interval {
            let entry = OffsetEntry {
                relative_offset: self.relative(header.base_offset),
                position: u32::try_from(position)
                    .expect("the segment rolls before a position leaves u32"),
            };
            debug_assert!(self.offsets.last().is_none_or(|last| {
                last.relative_offset < entry.relative_offset && last.position < entry.position
            }));
            self.offsets.push(entry);
            self.bytes_since_offset_entry = 0;
            added.offset = Some(entry);
        }
        let len = header.total_len() as u64;
        self.bytes_since_offset_entry += len;

        if self
            .max_timestamp
            .is_none_or(|(ts, _)| header.max_timestamp > ts)
        {
            self.max_timestamp = Some((header.max_timestamp, header.last_offset()));
            if self.times.is_empty() || self.bytes_since_time_entry >= interval {
                added.time = Some(self.push_time_entry());
            } else {
                self.time_entry_pending = true;
            }
        }
        self.bytes_since_time_entry += len;
        added
    }

    fn push_time_entry(&mut self) -> TimeEntry {
        let (timestamp, offset) = self.max_timestamp.expect("called after a batch was seen");
        let entry = TimeEntry {
            timestamp,
            relative_offset: self.relative(offset),
        };
        self.times.push(entry);
        self.bytes_since_time_entry = 0;
        self.time_entry_pending = false;
        entry
    }

    /// Called when the segment stops being active: writes the final maximum if it is missing,
    /// so that the last entry of a closed segment's time index is its largest timestamp.
    pub fn seal(&mut self) -> Option<TimeEntry> {
        self.time_entry_pending.then(|| self.push_time_entry())
    }

    /// The position to start scanning for `offset`: that of the last entry at or below it.
    pub fn lookup_offset(&self, offset: i64) -> u64 {
        let rel = offset - self.base_offset;
        let n = self
            .offsets
            .partition_point(|e| i64::from(e.relative_offset) <= rel);
        if n == 0 {
            0
        } else {
            u64::from(self.offsets[n - 1].position)
        }
    }

    /// The first offset worth scanning for a timestamp `>= ts`: every batch that ends before
    /// it has a `maxTimestamp` below `ts`.
    pub fn lookup_time(&self, ts: i64) -> i64 {
        let n = self.times.partition_point(|e| e.timestamp < ts);
        if n == 0 {
            self.base_offset
        } else {
            self.base_offset + i64::from(self.times[n - 1].relative_offset) + 1
        }
    }

    pub fn encode_offsets(entries: &[OffsetEntry]) -> Vec<u8> {
        let mut out = Vec::with_capacity(entries.len() * OFFSET_ENTRY_LEN);
        for e in entries {
            out.extend_from_slice(&e.relative_offset.to_be_bytes());
            out.extend_from_slice(&e.position.to_be_bytes());
        }
        out
    }

    pub fn encode_times(entries: &[TimeEntry]) -> Vec<u8> {
        let mut out = Vec::with_capacity(entries.len() * TIME_ENTRY_LEN);
        for e in entries {
            out.extend_from_slice(&e.timestamp.to_be_bytes());
            out.extend_from_slice(&e.relative_offset.to_be_bytes());
        }
        out
    }

    /// Loads the index files of a closed segment, or `None` if they are inconsistent: a size
    /// that is not a multiple of the entry size, entries that do not increase, positions at or
    /// past `log_size`, or offsets at or past `end_offset` (the next segment's base).
    pub fn load_closed(
        base_offset: i64,
        offset_bytes: &[u8],
        time_bytes: &[u8],
        log_size: u64,
        end_offset: i64,
    ) -> Option<Self> {
        if offset_bytes.len() % OFFSET_ENTRY_LEN != 0 || time_bytes.len() % TIME_ENTRY_LEN != 0 {
            return None;
        }
        let max_rel = end_offset - base_offset;
        let u32_at = |b: &[u8], at: usize| {
            u32::from_be_bytes(b[at..at + 4].try_into().expect("slice of length 4"))
        };
        let offsets: Vec<OffsetEntry> = offset_bytes
            .chunks_exact(OFFSET_ENTRY_LEN)
            .map(|c| OffsetEntry {
                relative_offset: u32_at(c, 0),
                position: u32_at(c, 4),
            })
            .collect();
        let times: Vec<TimeEntry> = time_bytes
            .chunks_exact(TIME_ENTRY_LEN)
            .map(|c| TimeEntry {
                timestamp: i64::from_be_bytes(c[0..8].try_into().expect("slice of length 8")),
                relative_offset: u32_at(c, 8),
            })
            .collect();
        let offsets_ok = offsets.iter().all(|e| {
            e.position > 0
                && u64::from(e.position) < log_size
                && i64::from(e.relative_offset) < max_rel
        }) && offsets
            .windows(2)
            .all(|w| w[0].relative_offset < w[1].relative_offset && w[0].position < w[1].position);
        let times_ok = times.iter().all(|e| i64::from(e.relative_offset) < max_rel)
            && times.windows(2).all(|w| {
                w[0].timestamp < w[1].timestamp && w[0].relative_offset <= w[1].relative_offset
            });
        // A non-empty closed segment always has at least one time entry.
        if !offsets_ok || !times_ok || (log_size > 0 && times.is_empty()) {
            return None;
        }
        let max_timestamp = times
            .last()
            .map(|e| (e.timestamp, base_offset + i64::from(e.relative_offset)));
        Some(SegmentIndex {
            base_offset,
            offsets,
            times,
            max_timestamp,
            bytes_since_offset_entry: 0,
            bytes_since_time_entry: 0,
            time_entry_pending: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(base_offset: i64, records: i32, len: usize, max_ts: i64) -> BatchHeader {
        BatchHeader {
            base_offset,
            batch_length: (len - 12) as i32,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: records - 1,
            base_timestamp: max_ts,
            max_timestamp: max_ts,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            records_count: records,
        }
    }

    #[test]
    fn entries_are_sparse_and_sealed() {
        let mut idx = SegmentIndex::new(100);
        let mut pos = 0;
        let mut offset = 100;
        // Nine batches of 100 bytes, 2 records each, timestamps growing with one dip.
        for (i, ts) in [10, 20, 15, 40, 50, 60, 70, 80, 90].iter().enumerate() {
            let h = header(offset, 2, 100, *ts);
            let added = idx.on_batch(&h, pos, 250);
            if i == 0 {
                assert_eq!(added.offset, None);
                assert_eq!(
                    added.time,
                    Some(TimeEntry {
                        timestamp: 10,
                        relative_offset: 1
                    })
                );
            }
            pos += 100;
            offset += 2;
        }
        // An offset entry after every 300 bytes (>= 250): the batches at 300 and 600.
        assert_eq!(
            idx.offsets,
            vec![
                OffsetEntry {
                    relative_offset: 6,
                    position: 300
                },
                OffsetEntry {
                    relative_offset: 12,
                    position: 600
                },
            ]
        );
        assert_eq!(idx.lookup_offset(100), 0);
        assert_eq!(idx.lookup_offset(106), 300);
        assert_eq!(idx.lookup_offset(111), 300);
        assert_eq!(idx.lookup_offset(117), 600);
        // Time entries when the maximum grew and 250 bytes passed: (10, 1), (40, 7), (70, 13).
        assert_eq!(idx.times.len(), 3);
        assert_eq!(idx.max_timestamp, Some((90, 117)));
        let sealed = idx.seal();
        assert_eq!(
            sealed,
            Some(TimeEntry {
                timestamp: 90,
                relative_offset: 17
            })
        );
        assert_eq!(idx.seal(), None);
        assert!(idx
            .times
            .windows(2)
            .all(|w| w[0].timestamp < w[1].timestamp));
        // Every batch ending before lookup_time(ts) has max timestamp < ts.
        assert_eq!(idx.lookup_time(5), 100);
        assert_eq!(idx.lookup_time(41), 108);

        let reloaded = SegmentIndex::load_closed(
            100,
            &SegmentIndex::encode_offsets(&idx.offsets),
            &SegmentIndex::encode_times(&idx.times),
            900,
            118,
        )
        .expect("consistent");
        assert_eq!(reloaded.offsets, idx.offsets);
        assert_eq!(reloaded.times, idx.times);
        assert_eq!(reloaded.max_timestamp, Some((90, 117)));
    }

    #[test]
    fn inconsistent_files_are_refused() {
        let good = SegmentIndex::encode_offsets(&[
            OffsetEntry {
                relative_offset: 5,
                position: 100,
            },
            OffsetEntry {
                relative_offset: 9,
                position: 200,
            },
        ]);
        let times = SegmentIndex::encode_times(&[TimeEntry {
            timestamp: 1,
            relative_offset: 3,
        }]);
        assert!(SegmentIndex::load_closed(0, &good, &times, 300, 20).is_some());
        assert!(SegmentIndex::load_closed(0, &good[..7], &times, 300, 20).is_none());
        assert!(SegmentIndex::load_closed(0, &good, &times[..11], 300, 20).is_none());
        // Position past the end of the log.
        assert!(SegmentIndex::load_closed(0, &good, &times, 200, 20).is_none());
        // Offset past the end of the segment.
        assert!(SegmentIndex::load_closed(0, &good, &times, 300, 9).is_none());
        // Not increasing (zero-filled tail after a power loss).
        let zeros = [good.clone(), vec![0u8; 8]].concat();
        assert!(SegmentIndex::load_closed(0, &zeros, &times, 300, 20).is_none());
        // A non-empty segment without a time entry.
        assert!(SegmentIndex::load_closed(0, &good, &[], 300, 20).is_none());
    }
}
