//! The Raft log of the metadata quorum on disk (`<meta>/raft/`, format version 3):
//!
//! ```text
//! vote                          the vote, JSON, replaced durably (write, fsync, rename)
//! committed                     the last committed log id, JSON, written without fsync
//! purged                        the last purged log id, JSON, replaced durably
//! log/<first index>.entries     segments of frames: u32 length | u32 CRC-32C | entry JSON
//! ```
//!
//! An entry's JSON is `{"index","term","kind":"blank"|"records"|"membership",...}`
//! with the batch's `records` or the `membership`. Appends are one write and one fsync, on
//! the blocking pool, before openraft is told the entries are flushed: an entry counts only
//! once it is on stable storage, so a torn frame at the end of the log was never counted, and
//! opening cuts the log at the first short, corrupt, undecodable or out-of-sequence frame. A
//! segment rolls at 64 MiB; purging deletes the segments wholly below the purged id. The
//! entries since the last purge are also kept in memory (the log between snapshots is small
//! by construction), and readers are served from there.
//!
//! After a failed write or fsync the content of the file is unknown (Linux forgets a failed
//! writeback once it has reported it), so the log refuses everything after it until the
//! process restarts and reads what is really on disk; openraft takes a storage error as
//! fatal and the node stops voting and leading.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, Membership};
use serde::{Deserialize, Serialize};

use super::{
    io_error, log_id, storage_error, ControllerNode, Entry, LogId, MetadataBatch, StorageError,
    TypeConfig, Vote,
};
use crate::log::{encode_frame, split_frames};
use crate::record::MetadataRecord;

/// A segment takes appends until it is this long (unless opened with another size).
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// An entry as written in a segment. (No `#[serde(flatten)]`: it cannot read back the
/// membership's maps keyed by node id.)
#[derive(Debug, Serialize, Deserialize)]
struct StoredEntry {
    index: u64,
    term: u64,
    kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    records: Option<Vec<MetadataRecord>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    membership: Option<Membership<u64, ControllerNode>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Blank,
    Records,
    Membership,
}

impl StoredEntry {
    fn of(entry: &Entry) -> Self {
        let (kind, records, membership) = match &entry.payload {
            EntryPayload::Blank => (Kind::Blank, None, None),
            EntryPayload::Normal(batch) => (Kind::Records, Some(batch.records.clone()), None),
            EntryPayload::Membership(m) => (Kind::Membership, None, Some(m.clone())),
        };
        StoredEntry {
            index: entry.log_id.index,
            term: entry.log_id.leader_id.term,
            kind,
            records,
            membership,
        }
    }

    fn into_entry(self) -> Result<Entry, String> {
        let payload = match (self.kind, self.records, self.membership) {
            (Kind::Blank, None, None) => EntryPayload::Blank,
            (Kind::Records, Some(records), None) => EntryPayload::Normal(MetadataBatch { records }),
            (Kind::Membership, None, Some(m)) => EntryPayload::Membership(m),
            (kind, ..) => return Err(format!("a {kind:?} entry with the wrong fields")),
        };
        Ok(openraft::Entry {
            log_id: log_id(self.term, self.index),
            payload,
        })
    }
}

/// The entries since the last purge, shared with the log's readers.
type Entries = Arc<RwLock<BTreeMap<u64, Entry>>>;

/// The metadata quorum's Raft log.
pub struct RaftLog {
    dir: PathBuf,
    entries: Entries,
    /// Where each entry in `entries` starts: its segment (by first index) and byte offset.
    positions: BTreeMap<u64, (u64, u64)>,
    /// Segment files by first index, with their length in whole frames.
    segments: BTreeMap<u64, u64>,
    /// The last segment, open for appending.
    active: (u64, Arc<File>),
    vote: Option<Vote>,
    committed: Option<LogId>,
    purged: Option<LogId>,
    /// Set after an error that leaves the files in an unknown state.
    failed: Option<String>,
    /// A segment takes appends until it is this long.
    segment_bytes: u64,
    /// The index of the last entry in the files (purged or not).
    last_written: Option<u64>,
    /// The active segment's end, for reservations.
    space: Arc<AppendSpace>,
}

/// Reads entries for openraft while the log appends.
#[derive(Clone)]
pub struct LogReader {
    entries: Entries,
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join("log").join(format!("{first:020}.entries"))
}

/// Reads a JSON file; a missing file is `None`.
fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::other(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replaces `path` with `bytes` so that a crash leaves the old or the new content: a
/// temporary file written and fsynced, renamed over it, the directory fsynced.
pub(crate) fn replace_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl RaftLog {
    /// Opens the log in `dir` (creating it), cutting a torn or corrupt tail; segments roll
    /// at `segment_bytes`.
    pub fn open(dir: &Path, segment_bytes: u64) -> io::Result<RaftLog> {
        std::fs::create_dir_all(dir.join("log"))?;
        let vote = read_json(&dir.join("vote"))?;
        let purged: Option<LogId> = read_json(&dir.join("purged"))?;
        // Written without fsync: a torn one is as good as none.
        let committed = read_json(&dir.join("committed")).unwrap_or(None);
        let mut firsts: Vec<u64> = std::fs::read_dir(dir.join("log"))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".entries")?
                    .parse()
                    .ok()
            })
            .collect();
        firsts.sort_unstable();
        let mut entries = BTreeMap::new();
        let mut positions = BTreeMap::new();
        let mut segments = BTreeMap::new();
        let mut last_index: Option<u64> = None;
        let mut cut_after: Option<usize> = None;
        for (n, &first) in firsts.iter().enumerate() {
            let path = segment_path(dir, first);
            let bytes = std::fs::read(&path)?;
            let (frames, mut good) = split_frames(&bytes);
            for (pos, payload) in frames {
                let decoded = serde_json::from_slice::<StoredEntry>(payload)
                    .map_err(|e| e.to_string())
                    .and_then(|stored| Ok((stored.index, stored.into_entry()?)));
                let entry = match decoded {
                    // Each entry follows the one before, except the first after a purge
                    // point that the log had not reached (a snapshot was installed).
                    Ok((index, entry))
                        if last_index.is_none_or(|l| {
                            index == l + 1
                                || purged.is_some_and(|p| l <= p.index && index == p.index + 1)
                        }) =>
                    {
                        entry
                    }
                    Ok((index, _)) => {
                        tracing::warn!(path = %path.display(), index, after = ?last_index, "metadata log entry out of sequence; cutting the log there");
                        good = pos;
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(path = %path.display(), %error, offset = pos, "undecodable metadata log entry; cutting the log there");
                        good = pos;
                        break;
                    }
                };
                let index = entry.log_id.index;
                last_index = Some(index);
                if purged.is_none_or(|p| index > p.index) {
                    positions.insert(index, (first, pos as u64));
                    entries.insert(index, entry);
                }
            }
            segments.insert(first, good as u64);
            if good < bytes.len() {
                tracing::warn!(
                    path = %path.display(),
                    truncated_bytes = bytes.len() - good,
                    "metadata log had a torn or corrupt tail; truncating it"
                );
                let file = OpenOptions::new().write(true).open(&path)?;
                file.set_len(good as u64)?;
                file.sync_all()?;
                cut_after = Some(n);
                break;
            }
        }
        if let Some(n) = cut_after {
            for &first in &firsts[n + 1..] {
                std::fs::remove_file(segment_path(dir, first))?;
            }
            sync_dir(&dir.join("log"))?;
        }
        if segments.is_empty() {
            let first = last_index.or(purged.map(|p| p.index)).map_or(0, |i| i + 1);
            File::create(segment_path(dir, first))?.sync_all()?;
            sync_dir(&dir.join("log"))?;
            segments.insert(first, 0);
        }
        let (&active_first, _) = segments.last_key_value().expect("one segment at least");
        let active = Arc::new(
            OpenOptions::new()
                .append(true)
                .open(segment_path(dir, active_first))?,
        );
        let space = Arc::new(AppendSpace {
            active: std::sync::Mutex::new((active.clone(), segments[&active_first])),
        });
        Ok(RaftLog {
            dir: dir.to_path_buf(),
            entries: Arc::new(RwLock::new(entries)),
            positions,
            segments,
            active: (active_first, active),
            vote,
            committed,
            purged,
            failed: None,
            segment_bytes,
            last_written: last_index,
            space,
        })
    }

    /// Where reservations for the next appends are made.
    pub fn space(&self) -> Arc<AppendSpace> {
        self.space.clone()
    }

    /// The committed log id read at open (or saved since).
    pub fn committed(&self) -> Option<LogId> {
        self.committed
    }

    /// The entries in `range` (those still held).
    pub fn entries_in(&self, range: impl RangeBounds<u64>) -> Vec<Entry> {
        read_range(&self.entries, range)
    }

    // openraft's traits return its StorageError; this helper returns the same.
    #[allow(clippy::result_large_err)]
    fn check(&self) -> Result<(), StorageError> {
        match &self.failed {
            Some(reason) => Err(storage_error(
                ErrorSubject::Logs,
                ErrorVerb::Write,
                format!(
                    "metadata log {} is unusable after an earlier storage error ({reason}); restart once the disk is fixed",
                    self.dir.display()
                ),
            )),
            None => Ok(()),
        }
    }

    /// Records a failure that leaves the files unknown, and returns it as openraft's error.
    fn fail(&mut self, what: &str, error: &io::Error, subject: ErrorSubject<u64>) -> StorageError {
        tracing::error!(dir = %self.dir.display(), %error, "metadata log {what} failed; refusing further metadata changes until a restart");
        self.failed = Some(format!("{what} failed: {error}"));
        io_error(subject, ErrorVerb::Write, error)
    }

    fn last_log_id(&self) -> Option<LogId> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries
            .last_key_value()
            .map(|(_, e)| e.log_id)
            .or(self.purged)
    }

    fn active_len(&self) -> u64 {
        self.segments[&self.active.0]
    }

    /// Starts a new segment whose first entry is `first`.
    fn roll(&mut self, first: u64) -> io::Result<()> {
        let path = segment_path(&self.dir, first);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        file.sync_all()?;
        sync_dir(&self.dir.join("log"))?;
        self.segments.insert(first, 0);
        self.active = (first, Arc::new(file));
        self.space.set(&self.active.1, 0);
        Ok(())
    }
}

fn read_range(entries: &Entries, range: impl RangeBounds<u64>) -> Vec<Entry> {
    let entries = entries.read().unwrap_or_else(|p| p.into_inner());
    entries.range(range).map(|(_, e)| e.clone()).collect()
}

/// Writes `buf` at the end of the segment `file` (`start` bytes long) and fsyncs it. A write
/// that fails (a full disk: the controller reserves space first, see [`AppendSpace`], so this
/// is a backstop) is cut back to `start` and tried again after a pause, until the disk has
/// room: openraft takes any storage error as fatal, and a full disk is not. A failed fsync,
/// or a cut that fails, is an error: the file's content is then unknown.
fn write_and_sync(file: &File, start: u64, buf: &[u8]) -> io::Result<()> {
    let mut pause = Duration::from_millis(50);
    loop {
        match (&*file).write_all(buf) {
            Ok(()) => return file.sync_data(),
            Err(error) => {
                file.set_len(start)?;
                file.sync_data()?;
                tracing::warn!(%error, retry_in = ?pause, "metadata log write failed and was cut back; trying again");
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// The end of the log's active segment, shared with whoever reserves room for the next
/// appends ([`AppendSpace::reserve`]).
pub struct AppendSpace {
    active: std::sync::Mutex<(Arc<File>, u64)>,
}

impl AppendSpace {
    fn set(&self, file: &Arc<File>, len: u64) {
        *self.active.lock().unwrap_or_else(|p| p.into_inner()) = (file.clone(), len);
    }

    /// Allocates disk blocks for `bytes` more past the end of the active segment, without
    /// changing its size, so that an append of that much cannot find the disk full. Fails
    /// with the disk's error (ENOSPC) when there is no room: the caller refuses the change
    /// before it reaches the log. A file system that cannot allocate ahead is not an error.
    /// Blocking.
    pub fn reserve(&self, bytes: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let (file, len) = self
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let (Ok(offset), Ok(size)) = (i64::try_from(len), i64::try_from(bytes)) else {
            return Ok(());
        };
        // SAFETY: fallocate on a file descriptor the `File` keeps open; no memory is passed.
        let rc =
            unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, offset, size) };
        if rc == 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => Ok(()),
            _ => Err(error),
        }
    }
}

/// Runs blocking file work on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e.to_string())))
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(read_range(&self.entries, range))
    }
}

impl RaftLogReader<TypeConfig> for RaftLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(read_range(&self.entries, range))
    }
}

impl RaftLogStorage<TypeConfig> for RaftLog {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        Ok(LogState {
            last_purged_log_id: self.purged,
            last_log_id: self.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            entries: self.entries.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.check()?;
        let path = self.dir.join("vote");
        let bytes = serde_json::to_vec(vote).expect("a vote encodes");
        if let Err(error) = blocking(move || replace_durably(&path, &bytes)).await {
            return Err(self.fail("saving the vote", &error, ErrorSubject::Vote));
        }
        self.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.committed = committed;
        // Best effort, no fsync (openraft allows it): a restart then applies up to what it
        // finds at once and the rest once the leader commits again.
        let path = self.dir.join("committed");
        let tmp = path.with_extension("tmp");
        let bytes = serde_json::to_vec(&committed).expect("a log id encodes");
        let written = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(error) = written {
            tracing::warn!(path = %path.display(), %error, "could not record the committed metadata index");
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        if let Err(error) = self.check() {
            callback.log_io_completed(Err(io::Error::other(error.to_string())));
            return Err(error);
        }
        let entries: Vec<Entry> = entries.into_iter().collect();
        let Some(first) = entries.first().map(|e| e.log_id.index) else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        // A full segment rolls; so does one whose last entry does not precede these (after
        // a snapshot was installed past the log's end), so that a segment never has a gap.
        let gap = self.last_written.is_some_and(|l| first != l + 1);
        if self.active_len() >= self.segment_bytes || (gap && self.active_len() > 0) {
            if let Err(error) = self.roll(first) {
                let e = self.fail("rolling a segment", &error, ErrorSubject::Logs);
                callback.log_io_completed(Err(error));
                return Err(e);
            }
        }
        let (segment, file) = (self.active.0, self.active.1.clone());
        let start = self.active_len();
        let mut buf = Vec::new();
        for entry in &entries {
            self.positions
                .insert(entry.log_id.index, (segment, start + buf.len() as u64));
            let json = serde_json::to_vec(&StoredEntry::of(entry)).expect("an entry encodes");
            encode_frame(&json, &mut buf);
        }
        let len = buf.len() as u64;
        let last = entries.last().expect("not empty").log_id.index;
        {
            let mut held = self.entries.write().unwrap_or_else(|p| p.into_inner());
            held.extend(entries.into_iter().map(|e| (e.log_id.index, e)));
        }
        let written = blocking(move || write_and_sync(&file, start, &buf)).await;
        match written {
            Ok(()) => {
                let end = self.segments.get_mut(&segment).expect("active segment");
                *end += len;
                self.space.set(&self.active.1, *end);
                self.last_written = Some(last);
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(error) => {
                let e = self.fail("appending", &error, ErrorSubject::Logs);
                callback.log_io_completed(Err(error));
                Err(e)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.check()?;
        let Some(&(segment, pos)) = self.positions.get(&log_id.index) else {
            return Ok(());
        };
        self.entries
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .split_off(&log_id.index);
        self.positions.split_off(&log_id.index);
        let later: Vec<u64> = self
            .segments
            .range(segment + 1..)
            .map(|(f, _)| *f)
            .collect();
        let dir = self.dir.clone();
        let cut = blocking(move || {
            for first in later {
                std::fs::remove_file(segment_path(&dir, first))?;
            }
            let file = OpenOptions::new()
                .append(true)
                .open(segment_path(&dir, segment))?;
            file.set_len(pos)?;
            file.sync_all()?;
            sync_dir(&dir.join("log"))?;
            Ok(file)
        })
        .await;
        match cut {
            Ok(file) => {
                self.segments.split_off(&(segment + 1));
                self.segments.insert(segment, pos);
                self.active = (segment, Arc::new(file));
                self.space.set(&self.active.1, pos);
                self.last_written = log_id.index.checked_sub(1);
                Ok(())
            }
            Err(error) => Err(self.fail("truncating", &error, ErrorSubject::Logs)),
        }
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.check()?;
        let path = self.dir.join("purged");
        let bytes = serde_json::to_vec(&log_id).expect("a log id encodes");
        if let Err(error) = blocking(move || replace_durably(&path, &bytes)).await {
            return Err(self.fail("recording a purge", &error, ErrorSubject::Logs));
        }
        self.purged = Some(log_id);
        {
            let mut held = self.entries.write().unwrap_or_else(|p| p.into_inner());
            *held = held.split_off(&(log_id.index + 1));
        }
        self.positions = self.positions.split_off(&(log_id.index + 1));
        // A segment is wholly purged when the next one starts at or below the purged index
        // plus one; the active segment stays.
        let firsts: Vec<u64> = self.segments.keys().copied().collect();
        let removable: Vec<u64> = firsts
            .windows(2)
            .filter(|w| w[1] <= log_id.index + 1)
            .map(|w| w[0])
            .collect();
        for first in removable {
            let path = segment_path(&self.dir, first);
            if let Err(error) = std::fs::remove_file(&path) {
                // Only space is lost: the entries in it are below the purged id.
                tracing::warn!(path = %path.display(), %error, "could not delete a purged metadata log segment");
            }
            self.segments.remove(&first);
        }
        Ok(())
    }
}
