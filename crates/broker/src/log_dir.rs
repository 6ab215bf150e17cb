//! The health of the data directory (`log.dirs`), as Kafka's log-directory failure handling.
//!
//! Linux reports a failed writeback to `fsync` once and then forgets it: the pages that could
//! not be written are dropped or marked clean, and the next `fsync` succeeds. Retrying an
//! fsync after an error would therefore acknowledge data that is not on disk. So the first
//! I/O error whose effect on the files is unknown (a failed fsync, a write that could not be
//! cut back, a failed checkpoint) takes the whole directory offline for the life of the
//! process:
//!
//! - every partition in it answers KAFKA_STORAGE_ERROR to Produce and Fetch;
//! - the high watermark never moves again, so nothing written before the failure is ever
//!   acknowledged or shown to consumers;
//! - the error is logged once, at ERROR, with the path and what failed;
//! - a restart recovers from what is really on disk (recovery validates every batch after the
//!   recovery point).
//!
//! A write that failed cleanly (`strata_log::LogError::WriteRolledBack`, e.g. ENOSPC with the
//! segment cut back) fails only its own request and does not take the directory offline, so a
//! full disk serves again once space is freed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

#[derive(Debug)]
pub struct LogDirState {
    path: PathBuf,
    offline: AtomicBool,
    /// What took the directory offline (the first failure only).
    reason: Mutex<Option<String>>,
}

impl LogDirState {
    pub fn new(path: &Path) -> Self {
        LogDirState {
            path: path.to_path_buf(),
            offline: AtomicBool::new(false),
            reason: Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn is_offline(&self) -> bool {
        self.offline.load(Ordering::Acquire)
    }

    /// Why the directory is offline, if it is.
    pub fn reason(&self) -> Option<String> {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Takes the directory offline because `what` failed with `error`. Logs once; later
    /// failures are only counted in the debug log. Returns whether this call took it offline.
    pub fn fail(&self, what: &str, error: &dyn std::fmt::Display) -> bool {
        let mut reason = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        // Set the flag under the lock so `reason` is filled before anyone sees it offline.
        if self.offline.swap(true, Ordering::AcqRel) {
            tracing::debug!(dir = %self.path.display(), what, %error, "another storage error in the offline log directory");
            return false;
        }
        let text = format!("{what}: {error}");
        tracing::error!(
            dir = %self.path.display(),
            what,
            %error,
            "storage error: the log directory is offline; its partitions answer KAFKA_STORAGE_ERROR \
             and nothing written before the error is acknowledged. Fix the disk and restart the \
             broker; recovery keeps what is really on disk"
        );
        *reason = Some(text);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goes_offline_once_and_keeps_the_first_reason() {
        let dir = LogDirState::new(Path::new("/data"));
        assert!(!dir.is_offline());
        assert_eq!(dir.reason(), None);
        assert!(dir.fail("fsync t-0", &"Input/output error"));
        assert!(dir.is_offline());
        assert!(!dir.fail("fsync t-1", &"No space left on device"));
        assert_eq!(
            dir.reason().as_deref(),
            Some("fsync t-0: Input/output error")
        );
    }
}
