//! The leader-epoch cache of a partition: `leader-epoch-checkpoint`, epoch → start offset.
//!
//! Every batch the leader appends carries its leader epoch (`partitionLeaderEpoch`); the cache
//! records, for each epoch, the first offset written in it. It answers OffsetForLeaderEpoch
//! (KIP-101, KIP-320): "where does my epoch end on the leader?", which a follower uses to
//! truncate a diverging log and a consumer to detect a truncation.
//!
//! File format, Kafka's (`LeaderEpochCheckpointFile`), text:
//!
//! ```text
//! 0            version
//! 2            entries
//! 0 0          epoch start_offset
//! 3 1500
//! ```
//!
//! Invariants: epochs and start offsets strictly increase; every start offset is within
//! `[log_start_offset, log_end_offset]`. The file is replaced atomically and durably (temp
//! file, fsync, rename, fsync of the directory) whenever the entries change: when a new epoch
//! is first appended, and when the log is truncated at either end. A missing or malformed file
//! reads as empty.

use std::fs::File;
use std::io;
use std::path::Path;

use crate::checkpoint::replace_file;
use crate::compaction::CrashBudget;
use crate::segment::io_err;
use crate::LogError;

pub const FILE_NAME: &str = "leader-epoch-checkpoint";
const TMP_FILE_NAME: &str = "leader-epoch-checkpoint.tmp";

/// OffsetForLeaderEpoch's "no such epoch" (Kafka's UNDEFINED_EPOCH and UNDEFINED_EPOCH_OFFSET).
pub const UNDEFINED: (i32, i64) = (-1, -1);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochCache {
    /// (epoch, start offset), both strictly increasing.
    entries: Vec<(i32, i64)>,
}

impl EpochCache {
    pub fn read(dir: &Path) -> Result<Self, LogError> {
        let path = dir.join(FILE_NAME);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(io_err("read leader epoch checkpoint", &path)(e)),
        };
        match parse(&text) {
            Some(entries) => Ok(EpochCache { entries }),
            None => {
                tracing::warn!(file = %path.display(), "ignoring a malformed leader epoch checkpoint");
                Ok(Self::default())
            }
        }
    }

    pub fn write(&self, dir: &Path, dir_handle: &File) -> Result<(), LogError> {
        let mut text = format!("0\n{}\n", self.entries.len());
        for (epoch, start) in &self.entries {
            text.push_str(&format!("{epoch} {start}\n"));
        }
        replace_file(
            dir,
            dir_handle,
            TMP_FILE_NAME,
            FILE_NAME,
            text.as_bytes(),
            &mut CrashBudget(None),
        )
    }

    pub fn entries(&self) -> &[(i32, i64)] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|(epoch, _)| *epoch)
    }

    /// Records that `epoch` starts at `start_offset`, if `epoch` is newer than every known
    /// one. Returns whether the cache changed (then it must be written).
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 || self.latest_epoch().is_some_and(|latest| epoch <= latest) {
            return false;
        }
        // A newer epoch cannot start before an older one; entries at or past its start are
        // from a history that was truncated away.
        self.entries.retain(|(_, start)| *start < start_offset);
        self.entries.push((epoch, start_offset));
        self.check();
        true
    }

    /// Drops every epoch starting at or after `end_offset` (the log was cut there). Returns
    /// whether the cache changed.
    pub fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(_, start)| *start < end_offset);
        self.entries.len() != before
    }

    /// The log now starts at `start_offset`: epochs wholly before it go, and the one it falls
    /// in starts there. Returns whether the cache changed.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        let Some(floor) = self
            .entries
            .iter()
            .rposition(|(_, start)| *start <= start_offset)
        else {
            return false;
        };
        if floor == 0 && self.entries[0].1 == start_offset {
            return false;
        }
        self.entries.drain(..floor);
        self.entries[0].1 = start_offset;
        self.check();
        true
    }

    /// OffsetForLeaderEpoch: the largest epoch at or below `requested` and the offset where it
    /// ends (the start of the next epoch, or `log_end_offset` for the latest). A request below
    /// every known epoch gets `requested` and the first epoch's start; above the latest, or
    /// with an empty cache, [`UNDEFINED`].
    pub fn end_offset_for(&self, requested: i32, log_end_offset: i64) -> (i32, i64) {
        if requested < 0 {
            return UNDEFINED;
        }
        match self.latest_epoch() {
            None => UNDEFINED,
            Some(latest) if requested == latest => (latest, log_end_offset),
            Some(latest) if requested > latest => UNDEFINED,
            Some(_) => {
                let higher = self
                    .entries
                    .iter()
                    .position(|(epoch, _)| *epoch > requested)
                    .expect("a later epoch exists: requested is below the latest");
                let end = self.entries[higher].1;
                match higher.checked_sub(1) {
                    Some(floor) => (self.entries[floor].0, end),
                    None => (requested, end),
                }
            }
        }
    }

    fn check(&self) {
        debug_assert!(self
            .entries
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));
    }
}

fn parse(text: &str) -> Option<Vec<(i32, i64)>> {
    let mut lines = text.lines();
    if lines.next()?.trim() != "0" {
        return None;
    }
    let count: usize = lines.next()?.trim().parse().ok()?;
    let mut entries = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let (epoch, start) = lines.next()?.trim().split_once(' ')?;
        let entry: (i32, i64) = (epoch.parse().ok()?, start.trim().parse().ok()?);
        if entry.0 < 0 || entry.1 < 0 {
            return None;
        }
        if let Some(last) = entries.last() {
            let (e, s): &(i32, i64) = last;
            if entry.0 <= *e || entry.1 <= *s {
                return None;
            }
        }
        entries.push(entry);
    }
    Some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> EpochCache {
        EpochCache {
            entries: entries.to_vec(),
        }
    }

    #[test]
    fn end_offsets_follow_kafka() {
        let c = cache(&[(1, 0), (3, 100), (4, 250)]);
        assert_eq!(c.end_offset_for(4, 300), (4, 300), "latest: the log end");
        assert_eq!(c.end_offset_for(3, 300), (3, 250));
        assert_eq!(
            c.end_offset_for(2, 300),
            (1, 100),
            "largest epoch at or below"
        );
        assert_eq!(c.end_offset_for(1, 300), (1, 100));
        assert_eq!(c.end_offset_for(0, 300), (0, 0), "below every epoch");
        assert_eq!(c.end_offset_for(5, 300), UNDEFINED, "above the latest");
        assert_eq!(c.end_offset_for(-1, 300), UNDEFINED);
        assert_eq!(EpochCache::default().end_offset_for(0, 10), UNDEFINED);
    }

    #[test]
    fn assign_and_truncate() {
        let mut c = EpochCache::default();
        assert!(c.assign(0, 0));
        assert!(!c.assign(0, 10), "same epoch: no new entry");
        assert!(c.assign(2, 10));
        assert!(!c.assign(1, 20), "older epoch ignored");
        assert!(c.assign(5, 30));
        assert_eq!(c.entries(), &[(0, 0), (2, 10), (5, 30)]);
        assert!(c.truncate_from_end(30));
        assert_eq!(c.entries(), &[(0, 0), (2, 10)]);
        assert!(!c.truncate_from_end(31));
        assert!(c.truncate_from_start(15));
        assert_eq!(c.entries(), &[(2, 15)]);
        assert!(!c.truncate_from_start(15));
        assert!(
            !c.truncate_from_start(3),
            "before the first entry: unchanged"
        );
        // A new epoch at an offset before existing entries replaces them (truncated history).
        let mut c = cache(&[(1, 0), (2, 50)]);
        assert!(c.assign(3, 40));
        assert_eq!(c.entries(), &[(1, 0), (3, 40)]);
    }

    #[test]
    fn file_round_trip_and_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let handle = File::open(dir.path()).expect("dir");
        assert!(EpochCache::read(dir.path()).expect("read").is_empty());
        let c = cache(&[(0, 0), (3, 1500)]);
        c.write(dir.path(), &handle).expect("write");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(FILE_NAME)).expect("read"),
            "0\n2\n0 0\n3 1500\n"
        );
        assert_eq!(EpochCache::read(dir.path()).expect("read"), c);
        for bad in [
            "1\n0\n",
            "0\n2\n0 0\n",
            "0\n2\n3 10\n2 20\n",
            "0\n1\nx 0\n",
            "0\n1\n1 -3\n",
        ] {
            std::fs::write(dir.path().join(FILE_NAME), bad).expect("write");
            assert!(
                EpochCache::read(dir.path()).expect("read").is_empty(),
                "{bad:?}"
            );
        }
    }
}
