//! Where metadata records are made durable before they are applied.
//!
//! `LocalMetadataLog` layout (`<log.dirs>/meta/metadata.log`), repeated per record:
//!
//! ```text
//! u32 length (big-endian) | u32 CRC-32C of payload | payload: the record as JSON
//! ```
//!
//! Appends are one write followed by fsync. On open, replay stops at the first frame whose
//! length runs past the end or whose CRC is wrong, and the file is truncated there: a torn tail
//! was never acknowledged, because commit returns only after the fsync.
//!
//! A failed append must not leave a partial frame for later appends to follow (they would be
//! cut off with it at the next open). A failed write is cut back to the last whole frame and
//! fsynced, and the log goes on. A failed fsync, or a cut that fails, leaves the file in an
//! unknown state (Linux forgets a failed writeback after reporting it once), so the log
//! refuses every later append until the process restarts and recovery reads what is really
//! on disk.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::record::MetadataRecord;

/// Records larger than this are refused; metadata records are small.
const MAX_RECORD_BYTES: u32 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum MetadataLogError {
    #[error("metadata log {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("metadata record cannot be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("metadata log {path} is unusable after an earlier storage error ({reason}); restart the broker once the disk is fixed")]
    Failed { path: PathBuf, reason: String },
}

/// A durable, ordered sequence of metadata records.
pub trait MetadataLog: Send {
    /// Appends records durably (returns after they are on stable storage).
    fn append(&mut self, records: &[MetadataRecord]) -> Result<(), MetadataLogError>;
}

pub struct LocalMetadataLog {
    path: PathBuf,
    file: File,
    /// Bytes of whole, durable frames: the file's length after the last good append.
    len: u64,
    /// Set after an error that leaves the file's content unknown; no append succeeds after.
    failed: Option<String>,
}

impl LocalMetadataLog {
    /// Opens (creating if needed) the log in `dir` and returns it with every intact record.
    pub fn open(dir: &Path) -> Result<(Self, Vec<MetadataRecord>), MetadataLogError> {
        let path = dir.join("metadata.log");
        let io_err = |source| MetadataLogError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io_err)?;
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io_err)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io_err)?;
        let (records, valid_len) = decode_frames(&bytes);
        if valid_len < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                truncated_bytes = bytes.len() - valid_len,
                "metadata log had a torn or corrupt tail; truncating it"
            );
            file.set_len(valid_len as u64).map_err(io_err)?;
            file.sync_all().map_err(io_err)?;
        }
        Ok((
            Self {
                path,
                file,
                len: valid_len as u64,
                failed: None,
            },
            records,
        ))
    }
}

impl MetadataLog for LocalMetadataLog {
    fn append(&mut self, records: &[MetadataRecord]) -> Result<(), MetadataLogError> {
        let mut buf = Vec::new();
        for record in records {
            encode_frame(&serde_json::to_vec(record)?, &mut buf);
        }
        if let Some(reason) = &self.failed {
            return Err(MetadataLogError::Failed {
                path: self.path.clone(),
                reason: reason.clone(),
            });
        }
        let path = self.path.clone();
        if let Err(source) = self.file.write_all(&buf) {
            let cut = self
                .file
                .set_len(self.len)
                .and_then(|()| self.file.sync_data());
            if let Err(cut_error) = cut {
                self.failed = Some(format!("{source}; then cutting back failed: {cut_error}"));
                tracing::error!(path = %path.display(), error = %source, %cut_error, "metadata log write failed and could not be cut back; refusing further metadata changes");
            } else {
                tracing::warn!(path = %path.display(), error = %source, "metadata log write failed; nothing of it was kept");
            }
            return Err(MetadataLogError::Io { path, source });
        }
        if let Err(source) = self.file.sync_data() {
            self.failed = Some(format!("fsync failed: {source}"));
            tracing::error!(path = %path.display(), error = %source, "metadata log fsync failed; refusing further metadata changes until a restart");
            return Err(MetadataLogError::Io { path, source });
        }
        self.len += buf.len() as u64;
        Ok(())
    }
}

/// Appends one frame holding `payload` to `buf`: `u32 length | u32 CRC-32C | payload`.
pub(crate) fn encode_frame(payload: &[u8], buf: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).expect("metadata frame below 4 GiB");
    assert!(len <= MAX_RECORD_BYTES, "metadata frame of {len} bytes");
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&crc32c::crc32c(payload).to_be_bytes());
    buf.extend_from_slice(payload);
}

/// The payloads of the whole, intact frames at the start of `bytes`, each with its start
/// position, and the length of that good prefix: the first frame whose length runs past the
/// end or whose CRC is wrong ends it.
pub(crate) fn split_frames(bytes: &[u8]) -> (Vec<(usize, &[u8])>, usize) {
    let mut frames = Vec::new();
    let mut pos = 0;
    while bytes.len() - pos >= 8 {
        let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes"));
        let crc = u32::from_be_bytes(bytes[pos + 4..pos + 8].try_into().expect("4 bytes"));
        if len > MAX_RECORD_BYTES || bytes.len() - pos - 8 < len as usize {
            break;
        }
        let payload = &bytes[pos + 8..pos + 8 + len as usize];
        if crc32c::crc32c(payload) != crc {
            break;
        }
        frames.push((pos, payload));
        pos += 8 + len as usize;
    }
    (frames, pos)
}

/// Decodes frames until the first bad one; returns the records and the length of the good
/// prefix.
fn decode_frames(bytes: &[u8]) -> (Vec<MetadataRecord>, usize) {
    let (frames, mut end) = split_frames(bytes);
    let mut records = Vec::with_capacity(frames.len());
    for (pos, payload) in frames {
        match serde_json::from_slice(payload) {
            Ok(record) => records.push(record),
            Err(error) => {
                tracing::warn!(%error, offset = pos, "undecodable metadata record");
                end = pos;
                break;
            }
        }
    }
    (records, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(id: &str) -> MetadataRecord {
        MetadataRecord::Cluster {
            cluster_id: id.into(),
        }
    }

    #[test]
    fn replays_and_truncates_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut log, records) = LocalMetadataLog::open(dir.path()).expect("open");
            assert!(records.is_empty());
            log.append(&[cluster("a"), cluster("b")]).expect("append");
        }
        let path = dir.path().join("metadata.log");
        let good_len = std::fs::metadata(&path).expect("stat").len();
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(&[0, 0, 0, 50, 1, 2, 3, 4, 5]).expect("garbage");
        drop(f);
        let (mut log, records) = LocalMetadataLog::open(dir.path()).expect("reopen");
        assert_eq!(records, vec![cluster("a"), cluster("b")]);
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), good_len);
        log.append(&[cluster("c")])
            .expect("append after truncation");
        drop(log);
        let (_, records) = LocalMetadataLog::open(dir.path()).expect("reopen");
        assert_eq!(records.len(), 3);
    }
}
