//! The `cleaner-delete-horizons` checkpoint: when the tombstones of each closed segment may
//! be removed by the cleaner.
//!
//! `delete.retention.ms` counts from the first cleaning pass that covers a segment, not from
//! the tombstones' record timestamps: a consumer that read the log up to the cleaned part
//! within `delete.retention.ms` of that pass is sure to see the tombstone. So when a pass
//! first covers a segment that keeps a tombstone, it records the segment's delete horizon,
//! `now + delete.retention.ms`; later passes remove its tombstones once the horizon has
//! passed.
//!
//! Format (text, one entry a line, in base offset order):
//!
//! ```text
//! strata-delete-horizons 1
//! <segment base offset> <delete horizon, ms since the epoch>
//! ...
//! crc32c <8 hex digits: CRC-32C of every byte before this line>
//! ```
//!
//! The file is replaced atomically (temporary file, fsync, rename, directory fsync; see
//! [`crate::checkpoint::replace_file`]). Reading is tolerant: a missing file, a file that does
//! not end with a matching checksum line, or any malformed line makes the whole file count as
//! absent. Losing entries only makes tombstones live longer (the next pass covering the
//! segment records a later horizon), never shorter, and never affects other records.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::Path;

use crate::checkpoint::replace_file;
use crate::compaction::CrashBudget;
use crate::segment::io_err;
use crate::LogError;

pub(crate) const FILE_NAME: &str = "cleaner-delete-horizons";
pub(crate) const TMP_FILE_NAME: &str = "cleaner-delete-horizons.tmp";
const MAGIC: &str = "strata-delete-horizons 1";

/// Delete horizons by segment base offset.
pub(crate) type Horizons = BTreeMap<i64, i64>;

/// The file's bytes for `horizons`.
pub(crate) fn encode(horizons: &Horizons) -> Vec<u8> {
    let mut text = format!("{MAGIC}\n");
    for (base, horizon) in horizons {
        text.push_str(&format!("{base} {horizon}\n"));
    }
    let crc = crc32c::crc32c(text.as_bytes());
    text.push_str(&format!("crc32c {crc:08x}\n"));
    text.into_bytes()
}

/// The entries of a file's bytes; `None` if anything is wrong with them.
pub(crate) fn decode(bytes: &[u8]) -> Option<Horizons> {
    let text = std::str::from_utf8(bytes).ok()?;
    let body_end = text.strip_suffix('\n')?.rfind('\n')? + 1;
    let (body, trailer) = text.split_at(body_end);
    if trailer != format!("crc32c {:08x}\n", crc32c::crc32c(body.as_bytes())) {
        return None;
    }
    let mut lines = body.lines();
    if lines.next()? != MAGIC {
        return None;
    }
    let mut horizons = Horizons::new();
    for line in lines {
        let (base, horizon) = line.split_once(' ')?;
        let base: i64 = base.parse().ok().filter(|b| *b >= 0)?;
        if horizons.insert(base, horizon.parse().ok()?).is_some() {
            return None;
        }
    }
    Some(horizons)
}

/// Reads the checkpoint: empty if it is absent or unreadable (logged), since forgetting a
/// horizon only keeps tombstones longer.
pub(crate) fn read(dir: &Path) -> Result<Horizons, LogError> {
    let path = dir.join(FILE_NAME);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Horizons::new()),
        Err(e) => return Err(io_err("read delete horizons", &path)(e)),
    };
    Ok(decode(&bytes).unwrap_or_else(|| {
        tracing::warn!(file = %path.display(), "ignoring an unreadable delete horizon checkpoint; tombstones will be kept until later passes record new horizons");
        Horizons::new()
    }))
}

/// Writes the checkpoint atomically and durably (see [`replace_file`] for the crash steps).
pub(crate) fn write(
    dir: &Path,
    dir_handle: &File,
    horizons: &Horizons,
    crash: &mut CrashBudget,
) -> Result<(), LogError> {
    replace_file(
        dir,
        dir_handle,
        TMP_FILE_NAME,
        FILE_NAME,
        &encode(horizons),
        crash,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let horizons: Horizons = [(0, 5), (17, i64::MAX), (40, -3)].into_iter().collect();
        assert_eq!(decode(&encode(&horizons)).as_ref(), Some(&horizons));
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(read(dir.path()).expect("read").is_empty(), "absent");
        let handle = File::open(dir.path()).expect("open dir");
        write(dir.path(), &handle, &horizons, &mut CrashBudget(None)).expect("write");
        assert_eq!(read(dir.path()).expect("read"), horizons);
        assert!(!dir.path().join(TMP_FILE_NAME).exists());
        write(
            dir.path(),
            &handle,
            &Horizons::new(),
            &mut CrashBudget(None),
        )
        .expect("write");
        assert!(read(dir.path()).expect("read").is_empty());
    }

    #[test]
    fn any_damage_discards_the_whole_file() {
        let horizons: Horizons = [(0, 1_000), (12, 2_000)].into_iter().collect();
        let good = encode(&horizons);
        assert_eq!(decode(&good), Some(horizons));
        for i in 0..good.len() {
            // Every single-bit flip and every truncation is detected.
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[i] ^= 1 << bit;
                assert_eq!(decode(&bad), None, "flip of bit {bit} at byte {i}");
            }
            assert_eq!(decode(&good[..i]), None, "cut at {i}");
        }
        assert_eq!(decode(b""), None);
        assert_eq!(decode(b"garbage\n"), None);
        // A well-formed checksum over a malformed body is still refused.
        let body = format!("{MAGIC}\n5 x\n");
        let bad = format!("{body}crc32c {:08x}\n", crc32c::crc32c(body.as_bytes()));
        assert_eq!(decode(bad.as_bytes()), None);
    }
}
