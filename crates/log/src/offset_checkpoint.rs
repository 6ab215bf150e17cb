//! Kafka's per-directory offset checkpoint files: `recovery-point-offset-checkpoint` (the
//! offset below which each partition is known to be fsynced) and
//! `replication-offset-checkpoint` (each partition's high watermark).
//!
//! Format (text, as Kafka writes it):
//!
//! ```text
//! 0                      version
//! 2                      number of entries
//! orders 0 1234          topic, partition, offset (one entry per line)
//! orders 1 99
//! ```
//!
//! Written to `<name>.tmp`, fsynced, renamed over `<name>`, and the directory fsynced, so a
//! crash leaves the old or the new file. A missing file is an empty checkpoint; an unreadable
//! one is logged and treated as empty (its readers fall back to something safe: recovery from
//! offset 0, the high watermark at the log end).

use std::collections::HashMap;
use std::io;
use std::path::Path;

use crate::checkpoint::replace_file_durably;
use crate::segment::io_err;
use crate::LogError;

pub const RECOVERY_POINT_FILE: &str = "recovery-point-offset-checkpoint";
pub const HIGH_WATERMARK_FILE: &str = "replication-offset-checkpoint";

/// Offsets by (topic, partition).
pub type OffsetCheckpoint = HashMap<(String, i32), i64>;

/// Reads `dir/name`; empty if absent, logged and empty if malformed.
pub fn read_offsets(dir: &Path, name: &str) -> Result<OffsetCheckpoint, LogError> {
    let path = dir.join(name);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(io_err("read checkpoint", &path)(e)),
    };
    match parse(&text) {
        Some(offsets) => Ok(offsets),
        None => {
            tracing::warn!(file = %path.display(), "ignoring a malformed offset checkpoint");
            Ok(HashMap::new())
        }
    }
}

fn parse(text: &str) -> Option<OffsetCheckpoint> {
    let mut lines = text.lines();
    if lines.next()?.trim() != "0" {
        return None;
    }
    let count: usize = lines.next()?.trim().parse().ok()?;
    let mut offsets = HashMap::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let line = lines.next()?;
        // Topic names never contain spaces (Kafka's rules), so the last two fields are the
        // partition and the offset.
        let mut fields = line.rsplitn(3, ' ');
        let offset: i64 = fields.next()?.parse().ok()?;
        let partition: i32 = fields.next()?.parse().ok()?;
        let topic = fields.next()?;
        if topic.is_empty() || offset < 0 || partition < 0 {
            return None;
        }
        offsets.insert((topic.to_string(), partition), offset);
    }
    Some(offsets)
}

/// Replaces `dir/name` with `entries`, atomically and durably.
pub fn write_offsets(
    dir: &Path,
    name: &str,
    entries: &[(String, i32, i64)],
) -> Result<(), LogError> {
    let mut text = format!("0\n{}\n", entries.len());
    for (topic, partition, offset) in entries {
        text.push_str(&format!("{topic} {partition} {offset}\n"));
    }
    replace_file_durably(dir, name, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_missing_and_malformed() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(read_offsets(dir.path(), RECOVERY_POINT_FILE)
            .expect("read")
            .is_empty());
        let entries = vec![
            ("orders".to_string(), 0, 1234),
            ("a.b-c_d".to_string(), 7, 0),
        ];
        write_offsets(dir.path(), RECOVERY_POINT_FILE, &entries).expect("write");
        let text = std::fs::read_to_string(dir.path().join(RECOVERY_POINT_FILE)).expect("read");
        assert_eq!(text, "0\n2\norders 0 1234\na.b-c_d 7 0\n");
        let read = read_offsets(dir.path(), RECOVERY_POINT_FILE).expect("read");
        assert_eq!(read.get(&("orders".into(), 0)), Some(&1234));
        assert_eq!(read.get(&("a.b-c_d".into(), 7)), Some(&0));
        for bad in [
            "1\n0\n",
            "0\n2\norders 0 1\n",
            "0\n1\norders x 1\n",
            "0\n1\norders 0 -5\n",
            "",
        ] {
            std::fs::write(dir.path().join(HIGH_WATERMARK_FILE), bad).expect("write");
            assert!(
                read_offsets(dir.path(), HIGH_WATERMARK_FILE)
                    .expect("read")
                    .is_empty(),
                "{bad:?}"
            );
        }
    }
}
