//! The `log-start-offset` checkpoint: the first offset a consumer may read.
//!
//! Format: the offset in decimal ASCII followed by `\n`. Written to `log-start-offset.tmp`,
//! fsynced, renamed over `log-start-offset`, and the directory fsynced, so a crash leaves
//! either the old or the new value, never a torn one. A missing file means "the base offset
//! of the first segment".

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use crate::compaction::CrashBudget;
use crate::segment::io_err;
use crate::LogError;

pub(crate) const FILE_NAME: &str = "log-start-offset";
pub(crate) const TMP_FILE_NAME: &str = "log-start-offset.tmp";

/// Reads the checkpoint. `Ok(None)` if absent; an unreadable value is logged and ignored,
/// since the first segment's base offset is a safe fallback.
pub(crate) fn read(dir: &Path) -> Result<Option<i64>, LogError> {
    let path = dir.join(FILE_NAME);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read checkpoint", &path)(e)),
    };
    match text.trim().parse::<i64>() {
        Ok(offset) if offset >= 0 => Ok(Some(offset)),
        _ => {
            tracing::warn!(file = %path.display(), content = %text.trim(), "ignoring unreadable log start offset checkpoint");
            Ok(None)
        }
    }
}

/// Writes the checkpoint atomically and durably; `dir_handle` is the open directory.
pub(crate) fn write(dir: &Path, dir_handle: &File, offset: i64) -> Result<(), LogError> {
    replace_file(
        dir,
        dir_handle,
        TMP_FILE_NAME,
        FILE_NAME,
        format!("{offset}\n").as_bytes(),
        &mut CrashBudget(None),
    )
}

/// Replaces `dir/name` with `contents` atomically and durably (see [`replace_file`]), with
/// `dir/<name>.tmp` as the temporary file; for files outside a partition log (the data
/// directory's checkpoints and `meta.properties`).
pub fn replace_file_durably(dir: &Path, name: &str, contents: &[u8]) -> Result<(), LogError> {
    let dir_handle = File::open(dir).map_err(io_err("open directory", dir))?;
    replace_file(
        dir,
        &dir_handle,
        &format!("{name}.tmp"),
        name,
        contents,
        &mut CrashBudget(None),
    )
}

/// Replaces `dir/name` with `contents` atomically and durably: written to `dir/tmp_name`,
/// fsynced, renamed over `dir/name`, and the directory fsynced, so a crash leaves the old or
/// the new file, never a torn one (a torn temporary file may stay behind). `crash` is the
/// cleaner's test-only crash hook, counted after each of the four steps.
pub(crate) fn replace_file(
    dir: &Path,
    dir_handle: &File,
    tmp_name: &str,
    name: &str,
    contents: &[u8],
    crash: &mut CrashBudget,
) -> Result<(), LogError> {
    let tmp = dir.join(tmp_name);
    let path = dir.join(name);
    let mut file = File::create(&tmp).map_err(io_err("create checkpoint", &tmp))?;
    file.write_all(contents)
        .map_err(io_err("write checkpoint", &tmp))?;
    crash.step(dir)?; // written, not durable
    file.sync_all().map_err(io_err("write checkpoint", &tmp))?;
    drop(file);
    crash.step(dir)?; // durable, not in place
    std::fs::rename(&tmp, &path).map_err(io_err("rename checkpoint", &path))?;
    crash.step(dir)?; // renamed, the rename not durable
    dir_handle
        .sync_all()
        .map_err(io_err("fsync directory", dir))?;
    crash.step(dir) // done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let handle = File::open(dir.path()).expect("open dir");
        assert_eq!(read(dir.path()).expect("read"), None);
        write(dir.path(), &handle, 42).expect("write");
        assert_eq!(read(dir.path()).expect("read"), Some(42));
        assert!(!dir.path().join(TMP_FILE_NAME).exists());
        std::fs::write(dir.path().join(FILE_NAME), "x\n").expect("write");
        assert_eq!(read(dir.path()).expect("read"), None);
    }
}
