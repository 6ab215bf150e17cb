//! The aborted-transaction index of a segment: `<base:020>.txnindex`.
//!
//! One entry per transaction aborted by a marker in the segment, appended when the marker is
//! written, 34 bytes big-endian:
//!
//! ```text
//! version: i16 (0) | producer_id: i64 | first_offset: i64 | last_offset: i64 | last_stable_offset: i64
//! ```
//!
//! `last_offset` is the abort marker's offset. `read_committed` fetches return the entries
//! that overlap the fetched range so consumers can drop the aborted records. The file is
//! fsynced with the segment; after a crash, entries at or past the recovered log end are
//! dropped and the producer-state replay re-adds the ones a lost write took with it.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::producer_state::AbortedTxn;
use crate::segment::{io_err, segment_path};
use crate::LogError;

pub const ENTRY_LEN: usize = 34;
pub const EXT: &str = "txnindex";

pub fn encode(t: &AbortedTxn) -> [u8; ENTRY_LEN] {
    let mut out = [0u8; ENTRY_LEN];
    out[0..2].copy_from_slice(&0i16.to_be_bytes());
    out[2..10].copy_from_slice(&t.producer_id.to_be_bytes());
    out[10..18].copy_from_slice(&t.first_offset.to_be_bytes());
    out[18..26].copy_from_slice(&t.last_offset.to_be_bytes());
    out[26..34].copy_from_slice(&t.last_stable_offset.to_be_bytes());
    out
}

fn decode(b: &[u8]) -> Option<AbortedTxn> {
    let i64_at = |at: usize| i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    if i16::from_be_bytes([b[0], b[1]]) != 0 {
        return None;
    }
    let t = AbortedTxn {
        producer_id: i64_at(2),
        first_offset: i64_at(10),
        last_offset: i64_at(18),
        last_stable_offset: i64_at(26),
    };
    (t.first_offset >= 0 && t.first_offset <= t.last_offset).then_some(t)
}

/// The entries of a segment's index; a missing file is empty, a torn last entry or a
/// malformed entry ends the list.
pub fn load(dir: &Path, base: i64) -> Result<Vec<AbortedTxn>, LogError> {
    let path = segment_path(dir, base, EXT);
    let data = match std::fs::read(&path) {
        Ok(data) => data,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("read transaction index", &path)(e)),
    };
    Ok(data.chunks_exact(ENTRY_LEN).map_while(decode).collect())
}

/// Rewrites a segment's index with exactly `entries` (after recovery dropped some).
pub fn rewrite(dir: &Path, base: i64, entries: &[AbortedTxn]) -> Result<(), LogError> {
    let path = segment_path(dir, base, EXT);
    let bytes: Vec<u8> = entries.iter().flat_map(encode).collect();
    std::fs::write(&path, bytes).map_err(io_err("rewrite transaction index", &path))
}

/// Appends one entry and closes the file; returns its path so the caller can fsync it with
/// the segment.
pub fn append(dir: &Path, base: i64, entry: &AbortedTxn) -> Result<PathBuf, LogError> {
    let path = segment_path(dir, base, EXT);
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io_err("open transaction index", &path))?;
    file.write_all(&encode(entry))
        .map_err(io_err("append to transaction index", &path))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_a_torn_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let a = AbortedTxn {
            producer_id: 5,
            first_offset: 10,
            last_offset: 20,
            last_stable_offset: 21,
        };
        let b = AbortedTxn {
            producer_id: 6,
            first_offset: 15,
            last_offset: 30,
            last_stable_offset: 31,
        };
        append(dir.path(), 0, &a).unwrap();
        append(dir.path(), 0, &b).unwrap();
        assert_eq!(load(dir.path(), 0).unwrap(), vec![a, b]);
        let path = segment_path(dir.path(), 0, EXT);
        let mut data = std::fs::read(&path).unwrap();
        data.truncate(ENTRY_LEN + 7);
        std::fs::write(&path, data).unwrap();
        assert_eq!(load(dir.path(), 0).unwrap(), vec![a]);
        assert!(load(dir.path(), 99).unwrap().is_empty());
        rewrite(dir.path(), 0, &[]).unwrap();
        assert!(load(dir.path(), 0).unwrap().is_empty());
    }
}
