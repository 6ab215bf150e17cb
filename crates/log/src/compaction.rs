//! Log compaction: rewriting closed segments so that only the latest record per key stays.
//!
//! Records are handled as raw bytes: a batch is decompressed with its codec (the message
//! crate's `kafka_protocol::compression`), its records are walked (length, attributes,
//! timestamp delta, offset delta, key, value) and the kept records are copied byte for byte
//! into a new records section, which is compressed again with the same codec. The batch keeps
//! its header (base offset, `lastOffsetDelta`, base timestamp, producer fields, attributes);
//! only `recordsCount`, `maxTimestamp` (CreateTime), `batchLength` and the CRC change. So
//! every kept record keeps its offset, key, value, headers (duplicates and non-UTF-8 keys
//! included), timestamp and timestamp type, and a batch's offset range stays the same (as in
//! Kafka, whose cleaner keeps a v2 batch's base and last offsets). A batch from which nothing
//! is removed is copied unchanged, without recompression.
//!
//! The message crate's `RecordBatchDecoder` is not used: it collapses duplicate header keys
//! (headers are a map) and rejects non-UTF-8 header keys, which would alter records.
//!
//! A pass reads and copies without the log (the caller's lock is free meanwhile): the key map
//! ([`map_keys`]) and each rewrite ([`write_cleaned`]) read the segments through
//! [`SegmentSnapshot`]s taken under the lock; `PartitionLog` swaps each rewrite in under the
//! lock, after checking the log still holds what the pass read (see
//! `PartitionLog::clean_concurrently`).
//!
//! Crash safety: steps 1-2 of a rewrite in [`write_cleaned`], steps 3-8 in
//! `PartitionLog::swap_cleaned`, recovery in [`recover_cleaner_files`].

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;

use bytes::{BufMut, BytesMut};
use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};
use strata_protocol::batch::{
    BatchHeader, Compression, ATTRIBUTES_OFFSET, BATCH_HEADER_LEN, BATCH_LENGTH_OFFSET, CRC_OFFSET,
    CRC_START_OFFSET, LOG_OVERHEAD, MAX_TIMESTAMP_OFFSET, RECORDS_COUNT_OFFSET,
};

use crate::index::SegmentIndex;
use crate::segment::{io_err, parse_segment_name, segment_path, SegmentSnapshot};
use crate::LogError;

/// Settings of one cleaning pass (Kafka's `delete.retention.ms`, `min.compaction.lag.ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanOptions {
    /// A tombstone (null value) that is the latest record of its key is removed once
    /// `delete_retention_ms` has passed since the first pass that cleaned its segment (its
    /// delete horizon; see `horizon.rs`), whatever its record timestamp.
    pub delete_retention_ms: i64,
    /// A segment whose largest timestamp is newer than `now - min_compaction_lag_ms` is not
    /// cleaned.
    pub min_compaction_lag_ms: i64,
}

/// What one [`crate::PartitionLog::clean`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanReport {
    /// Segments rewritten (a segment from which nothing could be removed is not rewritten).
    pub segments_cleaned: usize,
    /// Records removed (superseded records and tombstones past their delete horizon).
    pub records_removed: u64,
    /// Size of the rewritten segments before cleaning.
    pub bytes_before: u64,
    /// Size of the rewritten segments after cleaning.
    pub bytes_after: u64,
    /// Segments given a delete horizon by this pass (covered for the first time while they
    /// keep a tombstone).
    pub horizons_recorded: usize,
    /// The pass gave up because the log changed while it copied without the log's lock (a
    /// segment it read was deleted or cut: retention, DeleteRecords, a replica's truncation)
    /// or the log went away (see [`crate::PartitionLog::clean_concurrently`]). Its unfinished
    /// rewrites were discarded and no horizon was recorded; segments swapped in before the
    /// change (counted above) stay cleaned, which a crash at that point would leave too. A
    /// later pass does the rest.
    pub abandoned: bool,
}

/// Where a cleaning pass stands, for the test hook of
/// [`crate::PartitionLog::clean_concurrently_with_hook`]: the hook runs at each of these
/// points without the log's lock, so a test can act on the log while the pass copies.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanStage {
    /// The key map is built; no file is written yet.
    KeysMapped,
    /// The rewrite of the segment with this base offset is written and fsynced as
    /// `<base>.log.cleaned`; its swap, under the lock, comes next.
    Copied(i64),
}

/// One record of a batch, as walked from its uncompressed records section.
pub(crate) struct RawRecord<'a> {
    /// The whole record, its length prefix included.
    pub bytes: &'a [u8],
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value_is_null: bool,
}

use strata_protocol::records::read_zigzag;

/// Walks the records of an uncompressed records section; `None` if it is malformed (fewer
/// or more bytes than `recordsCount` records take, a field past its record).
pub(crate) fn walk_records<'a>(
    mut data: &'a [u8],
    header: &BatchHeader,
) -> Option<Vec<RawRecord<'a>>> {
    let count = usize::try_from(header.records_count).ok()?;
    // Each record takes at least 7 bytes, so the data bounds how many there can be.
    let mut out = Vec::with_capacity(count.min(data.len() / 7 + 1));
    let log_append = header.timestamp_type_log_append();
    for _ in 0..count {
        let start = data;
        let len = usize::try_from(read_zigzag(&mut data, 5)?).ok()?;
        if len > data.len() {
            return None;
        }
        let prefix = start.len() - data.len();
        let bytes = &start[..prefix + len];
        let mut record = &data[..len];
        data = &data[len..];
        record = record.get(1..)?; // attributes
        let timestamp_delta = read_zigzag(&mut record, 10)?;
        let offset_delta = read_zigzag(&mut record, 5)?;
        let key_len = read_zigzag(&mut record, 5)?;
        let key = if key_len >= 0 {
            let key_len = usize::try_from(key_len).ok()?;
            let key = record.get(..key_len)?;
            record = &record[key_len..];
            Some(key)
        } else {
            None
        };
        let value_len = read_zigzag(&mut record, 5)?;
        if value_len > record.len() as i64 {
            return None;
        }
        out.push(RawRecord {
            bytes,
            offset: header.base_offset.wrapping_add(offset_delta),
            timestamp: if log_append {
                header.max_timestamp
            } else {
                header.base_timestamp.wrapping_add(timestamp_delta)
            },
            key,
            value_is_null: value_len < 0,
        });
    }
    data.is_empty().then_some(out)
}

/// Runs `f` on the uncompressed records section of the whole batch `batch`.
pub(crate) fn with_records<T>(
    batch: &[u8],
    _header: &BatchHeader,
    f: impl FnOnce(&[u8]) -> Option<T>,
) -> Result<T, String> {
    strata_protocol::records::with_records(batch, |data, _| f(data)).map_err(|e| e.to_string())
}

/// Compresses `data` with `codec` at `level` (gzip 1-9 or -1 for the default, lz4 1-17,
/// zstd -131072..22); snappy ignores the level.
fn compress_with_level(codec: Compression, data: &[u8], level: i32) -> Result<Vec<u8>, String> {
    match codec {
        Compression::Gzip => {
            let level = if level < 0 {
                flate2::Compression::default()
            } else {
                flate2::Compression::new(level.clamp(0, 9) as u32)
            };
            let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
            e.write_all(data).map_err(|e| e.to_string())?;
            e.finish().map_err(|e| e.to_string())
        }
        Compression::Zstd => zstd::encode_all(data, level).map_err(|e| e.to_string()),
        Compression::Lz4 => {
            let mut e = lz4::EncoderBuilder::new()
                .level(level.clamp(1, 17) as u32)
                .block_mode(lz4::BlockMode::Independent)
                .build(Vec::new())
                .map_err(|e| e.to_string())?;
            e.write_all(data).map_err(|e| e.to_string())?;
            let (out, result) = e.finish();
            result.map_err(|e| e.to_string())?;
            Ok(out)
        }
        other => compress(other, data),
    }
}

/// Compresses `data` with `codec`.
fn compress(codec: Compression, data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = BytesMut::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match codec {
        Compression::None => {
            out.put_slice(data);
            Ok(())
        }
        Compression::Gzip => Gzip::compress(&mut out, |b| {
            b.put_slice(data);
            Ok(())
        }),
        Compression::Snappy => Snappy::compress(&mut out, |b| {
            b.put_slice(data);
            Ok(())
        }),
        Compression::Lz4 => Lz4::compress(&mut out, |b| {
            b.put_slice(data);
            Ok(())
        }),
        Compression::Zstd => Zstd::compress(&mut out, |b| {
            b.put_slice(data);
            Ok(())
        }),
        Compression::Unknown(c) => Err(anyhow::anyhow!("unknown codec {c}")),
    }));
    match result {
        Ok(Ok(())) => Ok(out.to_vec()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the compressor panicked".to_string()),
    }
}

/// The keys of the records of one batch, with their offsets, in offset order; `Err` if the
/// batch cannot be decompressed or walked.
pub(crate) fn record_keys(
    batch: &[u8],
    header: &BatchHeader,
    mut on_key: impl FnMut(&[u8], i64),
) -> Result<(), String> {
    with_records(batch, header, |data| {
        for record in walk_records(data, header)? {
            if let Some(key) = record.key {
                on_key(key, record.offset);
            }
        }
        Some(())
    })
}

/// What filtering did to one batch.
pub(crate) enum Filtered {
    /// The batch stays as it is: copy it unchanged.
    Unchanged,
    /// Some records go (how many), or an empty batch goes (0): the rewritten batch, or
    /// `None` if the batch is dropped.
    Rewritten(u64, Option<Vec<u8>>),
}

/// Keeps the records of `batch` for which `keep` says so. A batch left with no record (or
/// one that had none) is dropped, unless `keep_empty`: then its header stays as an empty
/// batch (see [`empty_batch`]).
pub(crate) fn filter_batch(
    batch: &[u8],
    header: &BatchHeader,
    keep: impl Fn(&RawRecord<'_>) -> bool,
    keep_empty: bool,
) -> Result<Filtered, String> {
    let kept = with_records(batch, header, |data| {
        let records = walk_records(data, header)?;
        let total = records.len();
        let mut out = Vec::with_capacity(data.len());
        let mut count = 0usize;
        let mut max_timestamp = None::<i64>;
        for record in records.iter().filter(|r| keep(r)) {
            out.extend_from_slice(record.bytes);
            count += 1;
            max_timestamp =
                Some(max_timestamp.map_or(record.timestamp, |m| m.max(record.timestamp)));
        }
        Some((total, count, out, max_timestamp))
    })?;
    let (total, count, records, max_timestamp) = kept;
    let removed = (total - count) as u64;
    let Some(max_timestamp) = max_timestamp else {
        // Nothing left. An empty batch that stays empty is copied as it is.
        return Ok(match (keep_empty, total) {
            (true, 0) if header.compression() == Compression::None => Filtered::Unchanged,
            (true, _) => Filtered::Rewritten(removed, Some(empty_batch(batch))),
            (false, _) => Filtered::Rewritten(removed, None),
        });
    };
    if count == total {
        return Ok(Filtered::Unchanged);
    }
    // Under LogAppendTime the batch's maxTimestamp is the append time: it stays.
    let max_timestamp = if header.timestamp_type_log_append() {
        header.max_timestamp
    } else {
        max_timestamp
    };
    let compressed = compress(header.compression(), &records)?;
    let count = i32::try_from(count).expect("at most the original i32 count");
    with_body(batch, &compressed, header.attributes, max_timestamp, count)
        .map(|out| Filtered::Rewritten(removed, Some(out)))
}

/// The header of the whole batch `batch` alone, as a batch with no records: same base
/// offset, `lastOffsetDelta` (so the same offset and sequence range), timestamps, timestamp
/// type and producer fields; `recordsCount` 0, no codec (an empty body is not a valid
/// compressed stream for every reader), `batchLength` 49 and a new CRC.
pub(crate) fn empty_batch(batch: &[u8]) -> Vec<u8> {
    let header = strata_protocol::batch::parse_header(batch).expect("a whole batch");
    with_body(
        batch,
        &[],
        header.attributes & !COMPRESSION_CODEC_BITS,
        header.max_timestamp,
        0,
    )
    .expect("a header fits")
}

/// The codec bits of the batch attributes.
const COMPRESSION_CODEC_BITS: i16 = 0x7;

/// The header of `batch` followed by `body`, with the given attributes, `maxTimestamp` and
/// `recordsCount`; `batchLength` and the CRC are recomputed.
fn with_body(
    batch: &[u8],
    body: &[u8],
    attributes: i16,
    max_timestamp: i64,
    records_count: i32,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(BATCH_HEADER_LEN + body.len());
    out.extend_from_slice(&batch[..BATCH_HEADER_LEN]);
    out.extend_from_slice(body);
    let batch_length = i32::try_from(out.len() - LOG_OVERHEAD)
        .map_err(|_| "the rewritten batch is too large".to_string())?;
    out[BATCH_LENGTH_OFFSET..BATCH_LENGTH_OFFSET + 4].copy_from_slice(&batch_length.to_be_bytes());
    out[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    out[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8]
        .copy_from_slice(&max_timestamp.to_be_bytes());
    out[RECORDS_COUNT_OFFSET..RECORDS_COUNT_OFFSET + 4]
        .copy_from_slice(&records_count.to_be_bytes());
    let crc = crc32c::crc32c(&out[CRC_START_OFFSET..]);
    out[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// The whole batch `batch` with its records compressed by `codec` instead (the broker's
/// `compression.type`): same records, offsets, timestamps and header fields; the codec bits,
/// length and CRC are recomputed.
///
/// `level` is the codec's level (`compression.gzip.level`, `.lz4.level`, `.zstd.level`);
/// `None`, or -1 for gzip, uses the codec's default. Snappy has no levels.
pub fn recompress_batch(
    batch: &[u8],
    codec: Compression,
    level: Option<i32>,
) -> Result<Vec<u8>, String> {
    let header = strata_protocol::batch::check_batch(batch, 0).map_err(|e| e.to_string())?;
    let records = with_records(batch, &header, |data| Some(data.to_vec()))?;
    let compressed = match level {
        Some(level) => compress_with_level(codec, &records, level)?,
        None => compress(codec, &records)?,
    };
    let code: i16 = match codec {
        Compression::None => 0,
        Compression::Gzip => 1,
        Compression::Snappy => 2,
        Compression::Lz4 => 3,
        Compression::Zstd => 4,
        Compression::Unknown(c) => return Err(format!("unknown codec {c}")),
    };
    let attributes = (header.attributes & !COMPRESSION_CODEC_BITS) | code;
    with_body(
        batch,
        &compressed,
        attributes,
        header.max_timestamp,
        header.records_count,
    )
}

/// `<base>.log.cleaned`: a segment being rewritten (incomplete until renamed).
pub(crate) const CLEANED_EXT: &str = "log.cleaned";
/// `<base>.log.swap`: a complete rewritten segment that replaces `<base>.log`.
pub(crate) const SWAP_EXT: &str = "log.swap";

/// Counts the steps of a cleaning pass for the test-only crash hook: `Err` once the budget
/// is spent, as if the process died right after the previous step.
pub(crate) struct CrashBudget(pub Option<u32>);

impl CrashBudget {
    pub fn step(&mut self, dir: &Path) -> Result<(), LogError> {
        match &mut self.0 {
            Some(0) => Err(LogError::Io {
                action: "continue cleaning (simulated crash)",
                path: dir.to_path_buf(),
                source: std::io::Error::other("simulated crash"),
            }),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }
}

/// Whether `error` is the test hook's simulated crash (the files are then left as they are).
pub(crate) fn is_simulated_crash(error: &LogError) -> bool {
    matches!(error, LogError::Io { action, .. } if action.contains("simulated crash"))
}

/// A 128-bit hash of a record key for the cleaner's key map (two SipHash passes with
/// different prefixes); a collision would need 2^64 keys to become likely.
pub(crate) fn key_hash(key: &[u8]) -> u128 {
    use std::hash::{Hash, Hasher};
    let mut a = std::collections::hash_map::DefaultHasher::new();
    0u8.hash(&mut a);
    key.hash(&mut a);
    let mut b = std::collections::hash_map::DefaultHasher::new();
    1u8.hash(&mut b);
    key.hash(&mut b);
    (u128::from(a.finish()) << 64) | u128::from(b.finish())
}

/// What a pass knows of the log below the high watermark.
#[derive(Debug, Default)]
pub(crate) struct KeyMap {
    /// The offset of the latest record of every key (by [`key_hash`]).
    pub latest: HashMap<u128, i64>,
    /// The base offset of the last batch of every producer.
    pub last_of_producer: HashMap<i64, i64>,
}

/// Builds the key map from `segments` (in offset order, each holding offsets below
/// `high_watermark`): every non-control, non-transactional batch whose last offset is below
/// `high_watermark`, the active segment's included. At most `max_keys` keys: once the map is
/// full, new keys are left out (their records are all kept) while the keys in it are still
/// followed to their latest offset. Reads the segments without the log (see
/// [`SegmentSnapshot`]).
pub(crate) fn map_keys(
    segments: &[SegmentSnapshot],
    high_watermark: i64,
    max_keys: usize,
) -> Result<KeyMap, LogError> {
    let mut map = KeyMap::default();
    'segments: for segment in segments {
        if segment.base_offset >= high_watermark {
            break;
        }
        if segment.size == 0 {
            continue;
        }
        let reader = segment.reader()?;
        let mut position = 0u64;
        // Bounded by the segment size: each step advances by at least one header.
        while position < segment.size {
            let header = reader.header_at(position)?;
            let len = header.total_len();
            if header.last_offset() >= high_watermark {
                break 'segments;
            }
            if header.producer_id >= 0 && !header.is_control() {
                map.last_of_producer
                    .insert(header.producer_id, header.base_offset);
            }
            if !header.is_control() && !header.is_transactional() {
                let bytes = reader.read_bytes(position, len)?;
                let latest = &mut map.latest;
                if let Err(error) = record_keys(&bytes, &header, |key, offset| {
                    let hash = key_hash(key);
                    let room = latest.len() < max_keys;
                    match latest.get_mut(&hash) {
                        Some(at) => *at = offset,
                        None if room => {
                            latest.insert(hash, offset);
                        }
                        None => {}
                    }
                }) {
                    tracing::warn!(segment = %segment.log_path.display(), position, %error, "cleaner: cannot read the records of a batch; it is left as it is");
                }
            }
            position += len as u64;
        }
    }
    Ok(map)
}

/// The rewrite of one closed segment, written to `<base>.log.cleaned` and fsynced: ready to
/// be swapped in (`PartitionLog`'s swap, under the log's lock).
#[derive(Debug)]
pub(crate) struct CleanedSegment {
    pub base_offset: i64,
    /// Records removed.
    pub removed: u64,
    /// Bytes of the segment before the rewrite.
    pub before: u64,
    /// Bytes of the rewrite.
    pub after: u64,
    /// The rewrite's indexes (sealed), built while writing it, so the swap need not read the
    /// new file again.
    pub index: SegmentIndex,
}

/// Rewrites the closed segment `segment` into `<base>.log.cleaned` in `dir`, keeping the
/// records `keep` accepts, and the batches left with no record that `keep_empty` accepts (as
/// empty batches); transactional and control batches are copied as they are. The file is
/// written and fsynced (crash steps 1 and 2 of the rewrite) and the rewrite's index is built
/// with `index_interval_bytes`. `None` (and no file left) if no batch changed, and so neither
/// did the segment. Reads the segment and writes the file without the log (see
/// [`SegmentSnapshot`]); on an error other than a simulated crash the file is removed.
pub(crate) fn write_cleaned(
    dir: &Path,
    segment: &SegmentSnapshot,
    keep: impl Fn(&RawRecord<'_>) -> bool,
    keep_empty: impl Fn(&BatchHeader) -> bool,
    index_interval_bytes: u32,
    crash: &mut CrashBudget,
) -> Result<Option<CleanedSegment>, LogError> {
    let base = segment.base_offset;
    let cleaned_path = segment_path(dir, base, CLEANED_EXT);
    // The descriptor first: if the segment is gone already, no file is created.
    let reader = segment.reader()?;
    let (mut writer, file) = create_cleaned(dir, base)?;
    let mut index = SegmentIndex::new(base);
    let written = (|| -> Result<(u64, u64, bool), LogError> {
        let mut removed = 0u64;
        let mut changed = false;
        let mut after = 0u64;
        let mut position = 0u64;
        // Bounded by the segment size: each step advances by at least one header.
        while position < segment.size {
            let header = reader.header_at(position)?;
            let len = header.total_len();
            let bytes = reader.read_bytes(position, len)?;
            position += len as u64;
            let filtered = if header.is_control() || header.is_transactional() {
                Filtered::Unchanged
            } else {
                filter_batch(&bytes, &header, &keep, keep_empty(&header)).unwrap_or_else(
                    |error| {
                        tracing::warn!(segment = %segment.log_path.display(), position, %error, "cleaner: cannot rewrite a batch; it is left as it is");
                        Filtered::Unchanged
                    },
                )
            };
            let out = match &filtered {
                Filtered::Unchanged => Some((&bytes[..], header)),
                Filtered::Rewritten(n, batch) => {
                    removed += n;
                    changed = true;
                    batch.as_deref().map(|b| {
                        let header = strata_protocol::batch::parse_header(b)
                            .expect("a rewritten batch has a whole header");
                        (b, header)
                    })
                }
            };
            if let Some((out, header)) = out {
                index.on_batch(&header, after, index_interval_bytes);
                writer
                    .write_all(out)
                    .map_err(io_err("write cleaned segment", &cleaned_path))?;
                after += out.len() as u64;
            }
        }
        Ok((removed, after, changed))
    })();
    let (removed, after, changed) = match written {
        Ok(done) => done,
        Err(error) => {
            drop(writer);
            let _ = std::fs::remove_file(&cleaned_path);
            return Err(error);
        }
    };
    if !changed {
        drop(writer);
        remove_if_exists(&cleaned_path, "remove unneeded cleaned segment")?;
        return Ok(None);
    }
    let finish = (|| -> Result<(), LogError> {
        writer
            .into_inner()
            .map_err(|e| io_err("write cleaned segment", &cleaned_path)(e.into_error()))?;
        crash.step(dir)?; // 1: written, not durable
        file.sync_all()
            .map_err(io_err("fsync cleaned segment", &cleaned_path))?;
        crash.step(dir)?; // 2: durable, not committed
        Ok(())
    })();
    if let Err(error) = finish {
        if !is_simulated_crash(&error) {
            let _ = std::fs::remove_file(&cleaned_path);
        }
        return Err(error);
    }
    index.seal();
    Ok(Some(CleanedSegment {
        base_offset: base,
        removed,
        before: segment.size,
        after,
        index,
    }))
}

pub(crate) fn create_cleaned(dir: &Path, base: i64) -> Result<(BufWriter<File>, File), LogError> {
    let path = segment_path(dir, base, CLEANED_EXT);
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .map_err(io_err("create cleaned segment", &path))?;
    let writer = BufWriter::new(
        file.try_clone()
            .map_err(io_err("create cleaned segment", &path))?,
    );
    Ok((writer, file))
}

pub(crate) fn remove_if_exists(path: &Path, action: &'static str) -> Result<(), LogError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(action, path)(e)),
    }
}

pub(crate) fn fsync_dir(dir: &Path, dir_handle: &File) -> Result<(), LogError> {
    dir_handle
        .sync_all()
        .map_err(io_err("fsync partition directory", dir))
}

/// Start-up recovery of an interrupted cleaning pass, before the segments are listed:
///
/// - `<base>.log.cleaned` is an incomplete rewrite; `<base>.log` is intact: it is deleted;
/// - `<base>.log.swap` is a complete, fsynced rewrite (the rename to `.swap` is the commit
///   point): the indexes of `<base>` are deleted (they describe the old file), then it is
///   renamed over `<base>.log`; the indexes are rebuilt when the segment is opened.
///
/// Returns the bases whose swap was completed.
pub(crate) fn recover_cleaner_files(dir: &Path, dir_handle: &File) -> Result<Vec<i64>, LogError> {
    let mut swaps = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err("list partition directory", dir))? {
        let entry = entry.map_err(io_err("list partition directory", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if parse_segment_name(name, CLEANED_EXT).is_some() {
            let path = entry.path();
            tracing::warn!(file = %path.display(), "deleting an incomplete cleaned segment");
            remove_if_exists(&path, "remove incomplete cleaned segment")?;
        } else if let Some(base) = parse_segment_name(name, SWAP_EXT) {
            swaps.push(base);
        }
    }
    swaps.sort_unstable();
    for &base in &swaps {
        for ext in ["index", "timeindex"] {
            remove_if_exists(&segment_path(dir, base, ext), "remove stale index")?;
        }
        fsync_dir(dir, dir_handle)?;
        let swap = segment_path(dir, base, SWAP_EXT);
        let log = segment_path(dir, base, "log");
        std::fs::rename(&swap, &log).map_err(io_err("rename swap segment", &swap))?;
        fsync_dir(dir, dir_handle)?;
        tracing::warn!(segment = %log.display(), "completed an interrupted segment swap of the cleaner");
    }
    Ok(swaps)
}
