//! The process-wide budget of open segment descriptors: a bounded LRU of open files.
//!
//! A partition used to hold about four descriptors for its whole life (its directory, the
//! active `.log`, the active `.index` and `.timeindex` writers) plus one per closed segment,
//! so a broker ran out of descriptors at a few thousand partitions. Now:
//!
//! - the index files of the active segment are not kept open: the index lives in memory and
//!   is written out whole when the segment is sealed (recovery rebuilds an active segment's
//!   index from its `.log` anyway);
//! - the partition directory is opened when it must be fsynced, and closed again;
//! - every segment's `.log` is a [`CachedFile`]: a path plus an entry in this cache, opened
//!   on first use and closed when the cache needs room for a more recently used one.
//!
//! The budget is set once at start-up from `RLIMIT_NOFILE` (RocksDB's `max_open_files`
//! idea); [`set_budget`]. An open that fails with EMFILE/ENFILE evicts part of the cache and
//! tries once more, so that sockets and transient files compete fairly with segments.
//!
//! Fsync obligations: the cache only ever drops *its* reference (`Arc<File>`). A log that
//! wrote through a handle keeps its own clone until that data was fsynced (the `SyncJob`
//! holds it), so a descriptor with unsynced writes is never closed by eviction: the fsync
//! runs on the very descriptor the data was written through (or on an older descriptor of
//! the same file, which sees every writeback error since before the write).
//!
//! What this module must never do: hold its lock across an open or a close (both can block
//! on the filesystem), or hand out a handle opened in a different mode than asked.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// The budget before [`set_budget`] is called (library users and tests).
const DEFAULT_BUDGET: usize = 1024;
/// Fewer than this would thrash on a single partition's reads and writes.
const MIN_BUDGET: usize = 16;

/// How a cached file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenMode {
    /// Closed segments: read only.
    Read,
    /// The active segment: reads and appends.
    ReadAppend,
}

struct Entry {
    file: Arc<File>,
    tick: u64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<u64, Entry>,
    /// Last use → id: the first is the least recently used.
    by_tick: BTreeMap<u64, u64>,
    tick: u64,
}

struct FileCache {
    inner: Mutex<Inner>,
    budget: AtomicUsize,
    next_id: AtomicU64,
    opens: AtomicU64,
    evictions: AtomicU64,
}

fn cache() -> &'static FileCache {
    static CACHE: OnceLock<FileCache> = OnceLock::new();
    CACHE.get_or_init(|| FileCache {
        inner: Mutex::new(Inner::default()),
        budget: AtomicUsize::new(DEFAULT_BUDGET),
        next_id: AtomicU64::new(1),
        opens: AtomicU64::new(0),
        evictions: AtomicU64::new(0),
    })
}

fn lock() -> std::sync::MutexGuard<'static, Inner> {
    // A panic while holding the lock cannot leave the maps inconsistent in a way that
    // matters (at worst an entry is missing from one of them), so a poisoned lock is used.
    cache().inner.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sets how many segment files may stay open at once (at least 16). Entries over a lowered
/// budget are closed at the next open.
pub fn set_budget(open_files: usize) {
    cache()
        .budget
        .store(open_files.max(MIN_BUDGET), Ordering::Relaxed);
}

/// The current budget.
pub fn budget() -> usize {
    cache().budget.load(Ordering::Relaxed)
}

/// Counters of the cache, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileCacheStats {
    /// Descriptors held by the cache now.
    pub open: usize,
    /// The budget.
    pub budget: usize,
    /// Opens since start (misses).
    pub opens: u64,
    /// Descriptors closed to stay within the budget.
    pub evictions: u64,
}

pub fn stats() -> FileCacheStats {
    let open = lock().entries.len();
    let c = cache();
    FileCacheStats {
        open,
        budget: budget(),
        opens: c.opens.load(Ordering::Relaxed),
        evictions: c.evictions.load(Ordering::Relaxed),
    }
}

fn is_out_of_descriptors(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE)
    )
}

/// Closes the least recently used entries until at most `keep` remain. The files are
/// returned so the caller drops (closes) them after releasing the lock.
fn evict_down_to(inner: &mut Inner, keep: usize) -> Vec<Arc<File>> {
    let mut closed = Vec::new();
    // Bounded by the number of entries.
    while inner.entries.len() > keep {
        let Some((_, id)) = inner.by_tick.pop_first() else {
            break;
        };
        if let Some(entry) = inner.entries.remove(&id) {
            closed.push(entry.file);
        }
    }
    cache()
        .evictions
        .fetch_add(closed.len() as u64, Ordering::Relaxed);
    closed
}

/// Runs `open`; if the process is out of descriptors, closes a quarter of the cache (at
/// least 16 entries) and tries once more.
pub(crate) fn open_evicting(open: impl Fn() -> io::Result<File>) -> io::Result<File> {
    match open() {
        Err(e) if is_out_of_descriptors(&e) => {
            let closed = {
                let mut inner = lock();
                let len = inner.entries.len();
                let keep = len.saturating_sub((len / 4).max(MIN_BUDGET));
                evict_down_to(&mut inner, keep)
            };
            if closed.is_empty() {
                return Err(e);
            }
            drop(closed);
            open()
        }
        other => other,
    }
}

fn open_mode(path: &Path, mode: OpenMode) -> io::Result<File> {
    match mode {
        OpenMode::Read => File::open(path),
        OpenMode::ReadAppend => OpenOptions::new().read(true).append(true).open(path),
    }
}

/// A file that is opened on demand and whose descriptor lives in the process-wide cache.
/// Dropping it closes the cached descriptor (handles given out stay valid).
pub(crate) struct CachedFile {
    id: u64,
    path: PathBuf,
    mode: OpenMode,
}

impl std::fmt::Debug for CachedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedFile")
            .field("path", &self.path)
            .field("mode", &self.mode)
            .finish()
    }
}

impl CachedFile {
    /// A file not opened yet.
    pub fn lazy(path: PathBuf, mode: OpenMode) -> Self {
        CachedFile {
            id: cache().next_id.fetch_add(1, Ordering::Relaxed),
            path,
            mode,
        }
    }

    /// A file just opened by the caller in `mode`; its descriptor goes into the cache.
    pub fn with_open(path: PathBuf, mode: OpenMode, file: File) -> Self {
        let cached = Self::lazy(path, mode);
        cached.insert(Arc::new(file));
        cached
    }

    /// A handle to the open file, opening it if the cache does not hold it. The handle stays
    /// valid however long it is kept, even if the cache closes its own reference.
    pub fn get(&self) -> io::Result<Arc<File>> {
        {
            let mut inner = lock();
            inner.tick += 1;
            let tick = inner.tick;
            if let Some(entry) = inner.entries.get_mut(&self.id) {
                let old = std::mem::replace(&mut entry.tick, tick);
                let file = entry.file.clone();
                inner.by_tick.remove(&old);
                inner.by_tick.insert(tick, self.id);
                return Ok(file);
            }
        }
        // Opened without the lock: an open can block on the filesystem.
        let file = Arc::new(open_evicting(|| open_mode(&self.path, self.mode))?);
        cache().opens.fetch_add(1, Ordering::Relaxed);
        Ok(self.insert(file))
    }

    /// Inserts `file` (or returns the entry another thread inserted meanwhile), then closes
    /// the least recently used entries over the budget.
    fn insert(&self, file: Arc<File>) -> Arc<File> {
        let budget = budget();
        let (file, closed) = {
            let mut inner = lock();
            inner.tick += 1;
            let tick = inner.tick;
            let file = match inner.entries.get_mut(&self.id) {
                Some(entry) => {
                    let old = std::mem::replace(&mut entry.tick, tick);
                    let existing = entry.file.clone();
                    inner.by_tick.remove(&old);
                    existing
                }
                None => {
                    inner.entries.insert(
                        self.id,
                        Entry {
                            file: file.clone(),
                            tick,
                        },
                    );
                    file
                }
            };
            inner.by_tick.insert(tick, self.id);
            let closed = evict_down_to(&mut inner, budget);
            (file, closed)
        };
        drop(closed);
        file
    }

    /// Closes the cached descriptor now (handles given out stay valid).
    pub fn close(&self) {
        let closed = {
            let mut inner = lock();
            let entry = inner.entries.remove(&self.id);
            if let Some(entry) = &entry {
                inner.by_tick.remove(&entry.tick);
            }
            entry
        };
        drop(closed);
    }
}

impl Drop for CachedFile {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reopens_after_eviction_and_keeps_given_handles_valid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files: Vec<CachedFile> = (0..40)
            .map(|i| {
                let path = dir.path().join(format!("{i}.log"));
                std::fs::File::create(&path)
                    .and_then(|mut f| f.write_all(&[i as u8]))
                    .expect("create");
                CachedFile::lazy(path, OpenMode::Read)
            })
            .collect();
        let first = files[0].get().expect("open");
        for f in &files {
            let file = f.get().expect("open");
            let mut b = [0u8; 1];
            std::os::unix::fs::FileExt::read_exact_at(&*file, &mut b, 0).expect("read");
        }
        // The budget may be shared with other tests running at once; what matters is that
        // every file opens and that a handle given out outlives its eviction.
        let mut b = [0u8; 1];
        std::os::unix::fs::FileExt::read_exact_at(&*first, &mut b, 0).expect("read");
        assert_eq!(b[0], 0);
        drop(files);
    }
}
