//! One segment: a `.log` file of record batches with its `.index` and `.timeindex`.
//!
//! On-disk layout of a partition directory `<log.dirs>/<topic>-<partition>/`:
//!
//! ```text
//! 00000000000000000000.log        record batches back to back, exactly as on the wire except
//!                                 for the leader-assigned baseOffset (and, under
//!                                 LogAppendTime, the timestamp-type bit, maxTimestamp, CRC)
//! 00000000000000000000.index      sparse offset index, 8-byte entries (see index.rs)
//! 00000000000000000000.timeindex  sparse time index, 12-byte entries (see index.rs)
//! 00000000000000012345.log        the next segment: named after its first offset, 20 digits
//! ...
//! log-start-offset                the log start offset, decimal text + "\n" (checkpoint.rs)
//! ```
//!
//! Invariants: the batches of a segment are contiguous from byte 0 to the segment's size;
//! every batch passes `strata_protocol::batch::check_batch`; base offsets strictly increase
//! within and across segments, and the first batch of a segment starts at the segment's base
//! offset (or later, or there is none, once compaction removed batches); a segment spans less than 2^32 offsets and 2^32 bytes (index entries are u32).
//! Only the last (active) segment is ever written; closed segments are read-only.
//!
//! Files other than these (for example the broker's `partition.metadata`) are left alone.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_protocol::batch::{self, BatchHeader, BATCH_HEADER_LEN};

use crate::file_cache::{CachedFile, OpenMode};
use crate::index::SegmentIndex;
use crate::LogError;

/// Writes every slice, in order (a vectored `write_all`).
fn write_all_vectored(mut file: &File, slices: &mut Vec<io::IoSlice<'_>>) -> io::Result<()> {
    let mut rest: &mut [io::IoSlice<'_>] = slices;
    while !rest.is_empty() {
        // At most IOV_MAX (1024) slices per call.
        let take = rest.len().min(1024);
        match file.write_vectored(&rest[..take]) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => io::IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads exactly `len` bytes at `position` into a new vector without zeroing it first (reads
/// are the fetch path's bulk: zeroing a buffer the kernel is about to fill cost as much as a
/// tenth of a fetch-heavy broker's CPU).
fn read_exact_at_uninit(file: &File, len: usize, position: u64) -> io::Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    let mut filled = 0usize;
    while filled < len {
        let offset = libc::off_t::try_from(position + filled as u64)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // Safety: the destination is the vector's spare capacity from `filled` on, at least
        // `len - filled` bytes, owned by us; pread writes at most that many bytes into it.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                buf.as_mut_ptr().add(filled).cast(),
                len - filled,
                offset,
            )
        };
        match n {
            0 => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            n if n < 0 => {
                let error = io::Error::last_os_error();
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
            // Safety: pread initialised `n` more bytes after the first `filled`.
            n => unsafe {
                filled += n as usize;
                buf.set_len(filled);
            },
        }
    }
    Ok(buf)
}

/// `<dir>/<base:020>.<ext>`.
pub(crate) fn segment_path(dir: &Path, base_offset: i64, ext: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{ext}"))
}

/// Parses `00000000000000012345.log` into 12345.
pub(crate) fn parse_segment_name(name: &str, ext: &str) -> Option<i64> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

pub(crate) fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> LogError {
    let path = path.to_path_buf();
    move |source| LogError::Io {
        action,
        path,
        source,
    }
}

pub(crate) struct Segment {
    pub base_offset: i64,
    /// The `.log`, opened on demand through the process-wide descriptor budget
    /// (`file_cache.rs`); handles taken from it are shared with [`crate::SyncJob`]s so an
    /// fsync can run without the log.
    pub log: Arc<CachedFile>,
    pub log_path: PathBuf,
    /// Bytes of whole batches in the `.log`; reads never go past it.
    pub size: u64,
    /// The offset after the last batch (the base offset when empty).
    pub end_offset: i64,
    pub index: SegmentIndex,
    /// Whether this is the active segment. Its index lives only in memory (no descriptors
    /// are held for it) and is written out whole by [`Segment::seal`].
    active: bool,
    /// Basis of the `segment.ms` age: when the first batch was appended (or, for a segment
    /// recovered at start-up, the modification time of its file, which is never earlier).
    pub rolling_base_ms: Option<i64>,
}

/// Why a scan stopped before the end of the file.
pub(crate) struct ScanStop {
    pub position: u64,
    pub reason: String,
}

/// Outcome of recovering the active segment.
pub(crate) struct ActiveRecovery {
    pub truncated_bytes: u64,
    pub stop: Option<ScanStop>,
    pub index_rewritten: bool,
}

fn open_index_writer(path: &Path, truncate_to: &[u8]) -> Result<BufWriter<File>, LogError> {
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(io_err("create index", path))?;
    file.write_all(truncate_to)
        .map_err(io_err("write index", path))?;
    Ok(BufWriter::new(file))
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, LogError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read index", path)(e)),
    }
}

fn mtime_ms(file: &File) -> Option<i64> {
    let modified = file.metadata().ok()?.modified().ok()?;
    let since = modified.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(since.as_millis()).ok()
}

/// Walks the batches of `file[0..size)`, calling `on_batch(header, position)` for each good
/// one. Checks framing and that base offsets start at `base_offset` or above and increase;
/// with `verify_crc` also reads every batch whole and checks its CRC and counts. Returns
/// where and why it stopped early, if it did.
fn scan(
    file: &File,
    size: u64,
    base_offset: i64,
    verify_crc: bool,
    mut on_batch: impl FnMut(&BatchHeader, u64),
) -> io::Result<Option<ScanStop>> {
    let mut position = 0u64;
    let mut next_offset = base_offset;
    let mut header_buf = [0u8; BATCH_HEADER_LEN];
    let mut batch_buf = Vec::new();
    // Each iteration advances by at least one header, so this ends within size / 61 steps.
    while position < size {
        let stop = |reason: String| Ok(Some(ScanStop { position, reason }));
        let remaining = size - position;
        if remaining < BATCH_HEADER_LEN as u64 {
            return stop(format!(
                "{remaining} trailing bytes, less than a batch header"
            ));
        }
        file.read_exact_at(&mut header_buf, position)?;
        let header = match batch::check_header(&header_buf, 0) {
            Ok(h) => h,
            Err(e) => return stop(e.to_string()),
        };
        let total = header.total_len() as u64;
        if total > remaining {
            return stop(format!(
                "torn batch: it needs {total} bytes but only {remaining} remain"
            ));
        }
        if verify_crc {
            batch_buf.resize(header.total_len(), 0);
            file.read_exact_at(&mut batch_buf, position)?;
            if let Err(e) = batch::check_batch(&batch_buf, 0) {
                return stop(e.to_string());
            }
        } else if header.last_offset_delta < 0 {
            return stop(format!(
                "negative lastOffsetDelta {}",
                header.last_offset_delta
            ));
        }
        if header.base_offset < next_offset {
            return stop(format!(
                "base offset {} is below the expected {next_offset}",
                header.base_offset
            ));
        }
        on_batch(&header, position);
        next_offset = header.next_offset();
        position += total;
    }
    Ok(None)
}

impl Segment {
    /// A closed segment over `log_path`, holding no descriptor until it is read.
    fn closed(
        base_offset: i64,
        log_path: PathBuf,
        size: u64,
        end_offset: i64,
        index: SegmentIndex,
    ) -> Segment {
        Segment {
            base_offset,
            log: Arc::new(CachedFile::lazy(log_path.clone(), OpenMode::Read)),
            log_path,
            size,
            end_offset,
            index,
            active: false,
            rolling_base_ms: None,
        }
    }

    /// Creates a new, empty active segment. Refuses to reuse a non-empty `.log`.
    pub fn create(dir: &Path, base_offset: i64) -> Result<Segment, LogError> {
        let log_path = segment_path(dir, base_offset, "log");
        let log = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err("create segment", &log_path))?;
        let len = log
            .metadata()
            .map_err(io_err("stat segment", &log_path))?
            .len();
        if len != 0 {
            return Err(LogError::Corrupt {
                path: log_path,
                position: 0,
                reason: format!("a new segment would overwrite an existing file of {len} bytes"),
            });
        }
        // Empty index files, so the directory always has the three files of a segment; they
        // are closed at once and written when the segment is sealed.
        for ext in ["index", "timeindex"] {
            open_index_writer(&segment_path(dir, base_offset, ext), &[])?;
        }
        Ok(Segment {
            base_offset,
            log: Arc::new(CachedFile::with_open(
                log_path.clone(),
                OpenMode::ReadAppend,
                log,
            )),
            log_path,
            size: 0,
            end_offset: base_offset,
            index: SegmentIndex::new(base_offset),
            active: true,
            rolling_base_ms: None,
        })
    }

    /// Opens a closed (older) segment that ends where the next begins, `end_offset`. Loads
    /// its index files and rebuilds them if missing or inconsistent; returns whether it did.
    pub fn open_closed(
        dir: &Path,
        base_offset: i64,
        end_offset: i64,
        interval_bytes: u32,
    ) -> Result<(Segment, bool), LogError> {
        let log_path = segment_path(dir, base_offset, "log");
        let log = File::open(&log_path).map_err(io_err("open segment", &log_path))?;
        let size = log
            .metadata()
            .map_err(io_err("stat segment", &log_path))?
            .len();
        let index_path = segment_path(dir, base_offset, "index");
        let time_path = segment_path(dir, base_offset, "timeindex");
        let loaded = match (read_optional(&index_path)?, read_optional(&time_path)?) {
            (Some(offsets), Some(times)) => {
                SegmentIndex::load_closed(base_offset, &offsets, &times, size, end_offset)
            }
            _ => None,
        };
        let (index, rebuilt) = match loaded {
            Some(index) => (index, false),
            None => {
                let mut index = SegmentIndex::new(base_offset);
                let stop = scan(&log, size, base_offset, false, |h, pos| {
                    index.on_batch(h, pos, interval_bytes);
                })
                .map_err(io_err("read segment", &log_path))?;
                if let Some(stop) = stop {
                    // An old segment is never truncated: it was complete when it was closed,
                    // so damage here is not a torn write. Index what is readable and say so.
                    tracing::warn!(
                        segment = %log_path.display(),
                        position = stop.position,
                        reason = %stop.reason,
                        "closed segment is damaged; batches after this position are unreadable"
                    );
                }
                index.seal();
                open_index_writer(&index_path, &SegmentIndex::encode_offsets(&index.offsets))?
                    .flush()
                    .map_err(io_err("write index", &index_path))?;
                open_index_writer(&time_path, &SegmentIndex::encode_times(&index.times))?
                    .flush()
                    .map_err(io_err("write index", &time_path))?;
                (index, true)
            }
        };
        // A closed segment needs no descriptor until it is read.
        drop(log);
        Ok((
            Segment::closed(base_offset, log_path, size, end_offset, index),
            rebuilt,
        ))
    }

    /// Checks every batch of a closed segment (framing, CRC32C, counts, increasing offsets)
    /// through to the end of its file; where and why it stopped, if it found a bad one.
    pub fn validate(dir: &Path, base_offset: i64) -> Result<Option<ScanStop>, LogError> {
        let log_path = segment_path(dir, base_offset, "log");
        let log = File::open(&log_path).map_err(io_err("open segment", &log_path))?;
        let size = log
            .metadata()
            .map_err(io_err("stat segment", &log_path))?
            .len();
        scan(&log, size, base_offset, true, |_, _| {}).map_err(io_err("read segment", &log_path))
    }

    /// Opens the last segment after a restart: validates every batch (framing, CRC32C,
    /// counts, increasing offsets), truncates the file at the first bad one (then fsyncs
    /// it), and rebuilds both indexes, rewriting the files if they differ.
    pub fn recover_active(
        dir: &Path,
        base_offset: i64,
        interval_bytes: u32,
        now_ms: i64,
    ) -> Result<(Segment, ActiveRecovery), LogError> {
        let log_path = segment_path(dir, base_offset, "log");
        let log = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err("open segment", &log_path))?;
        let file_size = log
            .metadata()
            .map_err(io_err("stat segment", &log_path))?
            .len();
        let mut index = SegmentIndex::new(base_offset);
        let mut end_offset = base_offset;
        let mut valid_len = 0u64;
        let stop = scan(&log, file_size, base_offset, true, |h, pos| {
            index.on_batch(h, pos, interval_bytes);
            end_offset = h.next_offset();
            valid_len = pos + h.total_len() as u64;
        })
        .map_err(io_err("read segment", &log_path))?;
        let truncated_bytes = file_size - valid_len;
        if truncated_bytes > 0 {
            log.set_len(valid_len)
                .map_err(io_err("truncate segment", &log_path))?;
            log.sync_all().map_err(io_err("fsync segment", &log_path))?;
        }

        let index_path = segment_path(dir, base_offset, "index");
        let time_path = segment_path(dir, base_offset, "timeindex");
        // The active segment's index files are written only when it is sealed, so on disk
        // they are empty or a stale prefix of the index (the in-memory one, rebuilt here, is
        // the truth). Files that are not a prefix (damaged, or longer after a cut) are
        // rewritten so no stale entries remain.
        let offsets = SegmentIndex::encode_offsets(&index.offsets);
        let times = SegmentIndex::encode_times(&index.times);
        let mut index_rewritten = false;
        for (path, bytes) in [(&index_path, &offsets), (&time_path, &times)] {
            let on_disk = read_optional(path)?;
            if !on_disk.as_deref().is_some_and(|d| bytes.starts_with(d)) {
                open_index_writer(path, bytes)?
                    .flush()
                    .map_err(io_err("write index", path))?;
                index_rewritten |= on_disk.is_some_and(|d| !d.is_empty());
            }
        }
        let rolling_base_ms = (valid_len > 0).then(|| mtime_ms(&log).unwrap_or(now_ms).min(now_ms));
        Ok((
            Segment {
                base_offset,
                log: Arc::new(CachedFile::with_open(
                    log_path.clone(),
                    OpenMode::ReadAppend,
                    log,
                )),
                log_path,
                size: valid_len,
                end_offset,
                index,
                active: true,
                rolling_base_ms,
            },
            ActiveRecovery {
                truncated_bytes,
                stop,
                index_rewritten,
            },
        ))
    }

    /// Whether this is a closed segment (never appended to again).
    pub fn writers_closed(&self) -> bool {
        !self.active
    }

    /// A handle to the `.log` (opened if the descriptor cache does not hold it).
    pub fn file(&self) -> Result<Arc<File>, LogError> {
        self.log
            .get()
            .map_err(io_err("open segment", &self.log_path))
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Appends `bytes`, which hold whole batches with assigned offsets; `headers` are their
    /// headers with each batch's position inside `bytes`. One `write_all`; on failure the file
    /// is cut back to its previous size so no partial batch stays behind.
    pub fn append(
        &mut self,
        mut slices: Vec<io::IoSlice<'_>>,
        len: u64,
        headers: &[(BatchHeader, usize)],
        now_ms: i64,
        interval_bytes: u32,
    ) -> Result<(), LogError> {
        assert!(self.active, "only the active segment is appended to");
        // Nothing is written if the open fails (no descriptor left): the append can be retried.
        let file = self.log.get().map_err(|source| LogError::WriteRolledBack {
            path: self.log_path.clone(),
            source,
        })?;
        debug_assert_eq!(
            headers.first().map(|(h, _)| h.base_offset),
            Some(self.end_offset)
        );
        if let Err(e) = write_all_vectored(&file, &mut slices) {
            // Cut back what was written of the batches. If that fails too, the file's tail is
            // unknown: the caller must stop using the log (recovery cuts the torn tail on
            // restart).
            return match file.set_len(self.size) {
                Ok(()) => Err(LogError::WriteRolledBack {
                    path: self.log_path.clone(),
                    source: e,
                }),
                Err(_) => Err(io_err("write segment", &self.log_path)(e)),
            };
        }
        for (header, at) in headers {
            // The new entries stay in memory until the segment is sealed.
            self.index
                .on_batch(header, self.size + *at as u64, interval_bytes);
            self.end_offset = header.next_offset();
        }
        self.size += len;
        self.rolling_base_ms.get_or_insert(now_ms);
        Ok(())
    }

    /// Makes the segment read-only: adds the final time-index entry, writes both index files
    /// whole, closes them and returns their paths, so that the caller can fsync them with the
    /// next sync job. The `.log` descriptor stays in the cache's LRU like any segment's.
    pub fn seal(&mut self) -> Result<Vec<PathBuf>, LogError> {
        if !std::mem::take(&mut self.active) {
            return Ok(Vec::new());
        }
        self.index.seal();
        let dir = self.log_path.parent().unwrap_or(Path::new("."));
        let mut files = Vec::with_capacity(2);
        for (ext, bytes) in [
            ("index", SegmentIndex::encode_offsets(&self.index.offsets)),
            ("timeindex", SegmentIndex::encode_times(&self.index.times)),
        ] {
            let path = segment_path(dir, self.base_offset, ext);
            open_index_writer(&path, &bytes)?
                .flush()
                .map_err(io_err("flush index", &path))?;
            files.push(path);
        }
        Ok(files)
    }

    /// Reads and parses the batch header at `position`, checking that the batch lies within
    /// the segment.
    pub fn header_at(&self, position: u64) -> Result<BatchHeader, LogError> {
        self.header_in(&*self.file()?, position)
    }

    /// [`Self::header_at`] through a handle the caller already took from the file cache (a
    /// scan takes it once, not once per batch).
    fn header_in(&self, file: &File, position: u64) -> Result<BatchHeader, LogError> {
        read_header(file, &self.log_path, self.size, position)
    }

    /// The position and header of the first batch at or after byte `from` whose last offset
    /// is at least `offset`, or `None` if the segment has none.
    pub fn find_batch(
        &self,
        offset: i64,
        from: u64,
    ) -> Result<Option<(u64, BatchHeader)>, LogError> {
        let mut position = from;
        let file = self.file()?;
        // Bounded by the segment size: each step advances by at least one header.
        while position < self.size {
            let header = self.header_in(&file, position)?;
            if header.last_offset() >= offset {
                return Ok(Some((position, header)));
            }
            position += header.total_len() as u64;
        }
        Ok(None)
    }

    /// Reads `len` bytes at `position`, which the caller keeps within `size`.
    pub fn read_bytes(&self, position: u64, len: usize) -> Result<Vec<u8>, LogError> {
        assert!(
            position + len as u64 <= self.size,
            "reads stay within the segment"
        );
        read_exact_at_uninit(&*self.file()?, len, position)
            .map_err(io_err("read segment", &self.log_path))
    }

    /// What the cleaner needs to read this segment without the log (see [`SegmentSnapshot`]).
    pub fn snapshot(&self) -> SegmentSnapshot {
        SegmentSnapshot {
            base_offset: self.base_offset,
            log: self.log.clone(),
            log_path: self.log_path.clone(),
            size: self.size,
        }
    }

    /// Whether this is still the segment `snapshot` was taken of, with the bytes it read: the
    /// same `.log` handle (a truncation, a swap or a deletion and re-creation makes a new one)
    /// and at least as many bytes (only the active segment grows, by appends).
    pub fn is_snapshot_of(&self, snapshot: &SegmentSnapshot) -> bool {
        Arc::ptr_eq(&self.log, &snapshot.log) && self.size >= snapshot.size
    }

    /// A closed segment whose `.log` (of `size` bytes, ending at `end_offset`) was just
    /// written by the cleaner, with the index it built while writing it (sealed): the index
    /// files are written from it (not fsynced; the paths are returned), so the `.log` is not
    /// read again.
    pub fn closed_with_index(
        dir: &Path,
        end_offset: i64,
        size: u64,
        index: SegmentIndex,
    ) -> Result<(Segment, [PathBuf; 2]), LogError> {
        let base_offset = index.base_offset;
        let log_path = segment_path(dir, base_offset, "log");
        let index_path = segment_path(dir, base_offset, "index");
        let time_path = segment_path(dir, base_offset, "timeindex");
        for (path, bytes) in [
            (&index_path, SegmentIndex::encode_offsets(&index.offsets)),
            (&time_path, SegmentIndex::encode_times(&index.times)),
        ] {
            open_index_writer(path, &bytes)?
                .flush()
                .map_err(io_err("write index", path))?;
        }
        Ok((
            Segment::closed(base_offset, log_path, size, end_offset, index),
            [index_path, time_path],
        ))
    }

    /// Removes the segment's files. Missing files are not an error.
    pub fn remove_files(dir: &Path, base_offset: i64) -> Result<(), LogError> {
        for ext in ["log", "index", "timeindex", "txnindex"] {
            let path = segment_path(dir, base_offset, ext);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("delete segment", &path)(e)),
            }
        }
        Ok(())
    }
}

/// Reads and parses the batch header at `position` of `file` (the `.log` at `path`, of
/// `size` bytes), checking that the batch lies within the segment.
fn read_header(
    file: &File,
    path: &Path,
    size: u64,
    position: u64,
) -> Result<BatchHeader, LogError> {
    let mut buf = [0u8; BATCH_HEADER_LEN];
    file.read_exact_at(&mut buf, position)
        .map_err(io_err("read segment", path))?;
    let corrupt = |reason: String| LogError::Corrupt {
        path: path.to_path_buf(),
        position,
        reason,
    };
    let header = batch::check_header(&buf, 0).map_err(|e| corrupt(e.to_string()))?;
    // Damage in a closed segment must surface as an error, not as a read past the end.
    if position + header.total_len() as u64 > size {
        return Err(corrupt(format!(
            "batch of {} bytes runs past the end of the segment ({size} bytes)",
            header.total_len(),
        )));
    }
    Ok(header)
}

/// A segment as the cleaner saw it under the log's lock, to read it after the lock is
/// released: its base offset, its `.log` handle in the descriptor cache, and its size then.
///
/// Reading through it is safe without the log: the bytes below `size` of a segment never
/// change while it stays in the log (closed segments are read-only and the active one is only
/// appended to). What can happen meanwhile is that the segment leaves the log (retention,
/// DeleteRecords) or is cut (a replica's truncation): then a read fails (the file is gone
/// when the cache reopens it, or is shorter) or returns other bytes (the file was cut and
/// appended to again), and [`Segment::is_snapshot_of`] is false, so the cleaner discards
/// whatever it made of them.
#[derive(Debug, Clone)]
pub(crate) struct SegmentSnapshot {
    pub base_offset: i64,
    pub log: Arc<CachedFile>,
    pub log_path: PathBuf,
    /// Bytes of whole batches when the snapshot was taken; reads stay below.
    pub size: u64,
}

impl SegmentSnapshot {
    /// Takes a descriptor of the `.log` from the cache (opening it by path if the cache closed
    /// it) and keeps it for the reads of one scan, so the cache closing its own reference
    /// meanwhile does not matter.
    pub fn reader(&self) -> Result<SnapshotReader<'_>, LogError> {
        let file = self
            .log
            .get()
            .map_err(io_err("open segment", &self.log_path))?;
        Ok(SnapshotReader {
            snapshot: self,
            file,
        })
    }
}

/// A [`SegmentSnapshot`] with a descriptor held for reading.
pub(crate) struct SnapshotReader<'a> {
    snapshot: &'a SegmentSnapshot,
    file: Arc<File>,
}

impl SnapshotReader<'_> {
    /// Reads and parses the batch header at `position`, checking that the batch lies within
    /// the snapshot's size.
    pub fn header_at(&self, position: u64) -> Result<BatchHeader, LogError> {
        read_header(
            &self.file,
            &self.snapshot.log_path,
            self.snapshot.size,
            position,
        )
    }

    /// Reads `len` bytes at `position`, which the caller keeps within the snapshot's size.
    pub fn read_bytes(&self, position: u64, len: usize) -> Result<Vec<u8>, LogError> {
        assert!(
            position + len as u64 <= self.snapshot.size,
            "reads stay within the segment"
        );
        read_exact_at_uninit(&self.file, len, position)
            .map_err(io_err("read segment", &self.snapshot.log_path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names() {
        assert_eq!(
            segment_path(Path::new("/d"), 12345, "log"),
            PathBuf::from("/d/00000000000000012345.log")
        );
        assert_eq!(
            parse_segment_name("00000000000000012345.log", "log"),
            Some(12345)
        );
        assert_eq!(
            parse_segment_name("00000000000000012345.index", "log"),
            None
        );
        assert_eq!(parse_segment_name("12345.log", "log"), None);
        assert_eq!(parse_segment_name("0000000000000001234x.log", "log"), None);
        assert_eq!(parse_segment_name("partition.metadata", "log"), None);
    }
}
