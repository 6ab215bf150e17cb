//! Kafka record batches (magic 2): header parsing, validation and the few in-place rewrites a
//! broker does, without ever decoding a record.
//!
//! A batch on the wire and on disk is a 61-byte header followed by the records (possibly
//! compressed). All integers are big-endian:
//!
//! ```text
//! offset  field                    notes
//!      0  baseOffset i64           rewritten by the leader on append (outside the CRC)
//!      8  batchLength i32          bytes after this field: total size = 12 + batchLength
//!     12  partitionLeaderEpoch i32 rewritten by the leader (outside the CRC)
//!     16  magic i8                 must be 2
//!     17  crc u32                  CRC-32C of bytes [21, end of batch)
//!     21  attributes i16           bits 0-2 codec, bit 3 LogAppendTime, bit 4 transactional,
//!                                  bit 5 control
//!     23  lastOffsetDelta i32
//!     27  baseTimestamp i64
//!     35  maxTimestamp i64
//!     43  producerId i64
//!     51  producerEpoch i16
//!     53  baseSequence i32
//!     57  recordsCount i32
//!     61  records...
//! ```
//!
//! Two entry points: [`validate_batches`] for the produce path (every check, including the
//! size limit and the codec) and [`iter_batches`] / [`check_batch`] for log recovery (framing,
//! magic, CRC and counts). This module never panics on bad input; the setters panic only when
//! handed fewer than [`BATCH_HEADER_LEN`] bytes, which is a caller bug.

use std::ops::Range;

/// Size of the fixed batch header.
pub const BATCH_HEADER_LEN: usize = 61;
/// Bytes before `batchLength` counts: baseOffset + batchLength.
pub const LOG_OVERHEAD: usize = 12;
/// The smallest legal `batchLength`: a header with no records.
pub const MIN_BATCH_LENGTH: i32 = (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32;
/// The only record-batch format Strata accepts.
pub const CURRENT_MAGIC: i8 = 2;

pub const BASE_OFFSET_OFFSET: usize = 0;
pub const BATCH_LENGTH_OFFSET: usize = 8;
pub const PARTITION_LEADER_EPOCH_OFFSET: usize = 12;
pub const MAGIC_OFFSET: usize = 16;
pub const CRC_OFFSET: usize = 17;
pub const ATTRIBUTES_OFFSET: usize = 21;
pub const LAST_OFFSET_DELTA_OFFSET: usize = 23;
pub const BASE_TIMESTAMP_OFFSET: usize = 27;
pub const MAX_TIMESTAMP_OFFSET: usize = 35;
pub const PRODUCER_ID_OFFSET: usize = 43;
pub const PRODUCER_EPOCH_OFFSET: usize = 51;
pub const BASE_SEQUENCE_OFFSET: usize = 53;
pub const RECORDS_COUNT_OFFSET: usize = 57;
/// The CRC covers everything from the attributes to the end of the batch.
pub const CRC_START_OFFSET: usize = ATTRIBUTES_OFFSET;

const COMPRESSION_CODEC_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;

/// The compression codec named by attribute bits 0-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
    /// Codecs 5-7 are not defined by Kafka.
    Unknown(u8),
}

/// The parsed fixed header of one record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Size of the whole batch in bytes (header included). Meaningful once `batch_length` has
    /// been checked to be non-negative; a negative length yields a value below the header size.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + usize::try_from(self.batch_length).unwrap_or(0)
    }

    /// The offset of the last record: `base_offset + last_offset_delta`.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// The offset right after this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    pub fn compression(&self) -> Compression {
        match (self.attributes & COMPRESSION_CODEC_MASK) as u8 {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => Compression::Unknown(other),
        }
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    /// True when the timestamps are the broker's append time (`LogAppendTime`), false for
    /// `CreateTime`.
    pub fn timestamp_type_log_append(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_BIT != 0
    }
}

/// Why a batch (or a buffer of batches) was refused. `position` is the byte position of the
/// offending batch in the buffer that was checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("the record set is empty")]
    Empty,
    #[error("record batch at byte {position} is truncated: it needs {needed} bytes but only {available} remain")]
    Truncated {
        position: usize,
        needed: usize,
        available: usize,
    },
    #[error("record batch at byte {position} has batchLength {batch_length}, below the minimum {MIN_BATCH_LENGTH}")]
    InvalidLength { position: usize, batch_length: i32 },
    #[error("record batch at byte {position} has magic {magic}; only magic 2 record batches are supported (use a client with produce v3 or newer)")]
    UnsupportedMagic { position: usize, magic: i8 },
    #[error("record batch at byte {position} is corrupt: stored CRC {stored:#010x}, computed {computed:#010x}")]
    CorruptCrc {
        position: usize,
        stored: u32,
        computed: u32,
    },
    #[error("record batch at byte {position} has inconsistent counts: recordsCount {records_count}, lastOffsetDelta {last_offset_delta}")]
    InconsistentCounts {
        position: usize,
        records_count: i32,
        last_offset_delta: i32,
    },
    #[error("record batch at byte {position} is {size} bytes, more than the limit of {max} bytes (max.message.bytes)")]
    TooLarge {
        position: usize,
        size: usize,
        max: usize,
    },
    #[error("record batch at byte {position} uses unknown compression codec {codec}")]
    UnsupportedCompression { position: usize, codec: u8 },
}

impl BatchError {
    /// The Kafka error code a produce response carries for this error.
    pub fn kafka_error_code(&self) -> i16 {
        const CORRUPT_MESSAGE: i16 = 2;
        const MESSAGE_TOO_LARGE: i16 = 10;
        const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;
        const INVALID_RECORD: i16 = 87;
        match self {
            BatchError::Empty
            | BatchError::Truncated { .. }
            | BatchError::InvalidLength { .. }
            | BatchError::CorruptCrc { .. }
            | BatchError::InconsistentCounts { .. } => CORRUPT_MESSAGE,
            // Kafka answers INVALID_RECORD when a produce v3+ request carries magic 0 or 1.
            BatchError::UnsupportedMagic { .. } => INVALID_RECORD,
            BatchError::TooLarge { .. } => MESSAGE_TOO_LARGE,
            BatchError::UnsupportedCompression { .. } => UNSUPPORTED_COMPRESSION_TYPE,
        }
    }
}

fn be_i16(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes(buf[at..at + 2].try_into().expect("slice of length 2"))
}

fn be_i32(buf: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(buf[at..at + 4].try_into().expect("slice of length 4"))
}

fn be_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(buf[at..at + 4].try_into().expect("slice of length 4"))
}

fn be_i64(buf: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(buf[at..at + 8].try_into().expect("slice of length 8"))
}

/// Parses the 61-byte header at the start of `buf`. Checks nothing but the length of `buf`.
pub fn parse_header(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    if buf.len() < BATCH_HEADER_LEN {
        return Err(BatchError::Truncated {
            position: 0,
            needed: BATCH_HEADER_LEN,
            available: buf.len(),
        });
    }
    Ok(BatchHeader {
        base_offset: be_i64(buf, BASE_OFFSET_OFFSET),
        batch_length: be_i32(buf, BATCH_LENGTH_OFFSET),
        partition_leader_epoch: be_i32(buf, PARTITION_LEADER_EPOCH_OFFSET),
        magic: buf[MAGIC_OFFSET] as i8,
        crc: be_u32(buf, CRC_OFFSET),
        attributes: be_i16(buf, ATTRIBUTES_OFFSET),
        last_offset_delta: be_i32(buf, LAST_OFFSET_DELTA_OFFSET),
        base_timestamp: be_i64(buf, BASE_TIMESTAMP_OFFSET),
        max_timestamp: be_i64(buf, MAX_TIMESTAMP_OFFSET),
        producer_id: be_i64(buf, PRODUCER_ID_OFFSET),
        producer_epoch: be_i16(buf, PRODUCER_EPOCH_OFFSET),
        base_sequence: be_i32(buf, BASE_SEQUENCE_OFFSET),
        records_count: be_i32(buf, RECORDS_COUNT_OFFSET),
    })
}

/// Parses the header at the start of `buf` and checks the framing only: magic 2 and a sane
/// `batchLength`. Does not need the batch body, so a log can call it on a 61-byte read to learn
/// how long the batch is. `position` only labels errors.
pub fn check_header(buf: &[u8], position: usize) -> Result<BatchHeader, BatchError> {
    let header = parse_header(buf).map_err(|_| BatchError::Truncated {
        position,
        needed: BATCH_HEADER_LEN,
        available: buf.len(),
    })?;
    // The magic byte sits at the same place in every message format, so check it first: an
    // old-format message set would otherwise be reported as a confusing length or CRC error.
    if header.magic != CURRENT_MAGIC {
        return Err(BatchError::UnsupportedMagic {
            position,
            magic: header.magic,
        });
    }
    if header.batch_length < MIN_BATCH_LENGTH {
        return Err(BatchError::InvalidLength {
            position,
            batch_length: header.batch_length,
        });
    }
    Ok(header)
}

/// Checks the whole batch at the start of `buf` (which may continue past it): framing, that
/// the batch is complete, the CRC-32C, and the record counts. Returns the header; the batch
/// occupies `0..header.total_len()`. `position` only labels errors.
///
/// Counts: `recordsCount >= 0`, `lastOffsetDelta >= 0` and `lastOffsetDelta >=
/// recordsCount - 1`. Equality is not required because compaction may remove records from a
/// batch while keeping its offset range.
pub fn check_batch(buf: &[u8], position: usize) -> Result<BatchHeader, BatchError> {
    let header = check_header(buf, position)?;
    let total = header.total_len();
    if total > buf.len() {
        return Err(BatchError::Truncated {
            position,
            needed: total,
            available: buf.len(),
        });
    }
    let computed = crc32c::crc32c(&buf[CRC_START_OFFSET..total]);
    if computed != header.crc {
        return Err(BatchError::CorruptCrc {
            position,
            stored: header.crc,
            computed,
        });
    }
    let counts_ok = header.records_count >= 0
        && header.last_offset_delta >= 0
        && i64::from(header.last_offset_delta) >= i64::from(header.records_count) - 1;
    if !counts_ok {
        return Err(BatchError::InconsistentCounts {
            position,
            records_count: header.records_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    Ok(header)
}

/// Smallest encoding of one record (every field at its minimum).
const MIN_RECORD_BYTES: i64 = 7;

/// The produce-path validator for the `records` bytes of one partition: one or more complete,
/// consecutive batches that exactly fill `buf`. Each batch must pass [`check_batch`], be at
/// most `max_batch_bytes` long, and use a known codec (0-4). Returns the headers in order.
pub fn validate_batches(
    buf: &[u8],
    max_batch_bytes: usize,
) -> Result<Vec<BatchHeader>, BatchError> {
    if buf.is_empty() {
        return Err(BatchError::Empty);
    }
    let mut headers = Vec::new();
    let mut position = 0;
    // Every iteration consumes at least BATCH_HEADER_LEN bytes, so the loop is bounded by
    // buf.len() / 61.
    while position < buf.len() {
        let rest = &buf[position..];
        let header = check_header(rest, position)?;
        let size = header.total_len();
        // Refuse an oversized batch before looking at its body, so a client that sends a huge
        // batch learns the real reason even if the request was cut.
        if size > max_batch_bytes {
            return Err(BatchError::TooLarge {
                position,
                size,
                max: max_batch_bytes,
            });
        }
        let header = check_batch(rest, position)?;
        // An uncompressed record takes at least 7 bytes (length, attributes, timestamp and
        // offset deltas, key and value lengths, header count), so the count a batch claims
        // must fit its size. Readers size buffers from this count.
        let body = (size - BATCH_HEADER_LEN) as i64;
        if header.compression() == Compression::None
            && i64::from(header.records_count) * MIN_RECORD_BYTES > body
        {
            return Err(BatchError::InconsistentCounts {
                position,
                records_count: header.records_count,
                last_offset_delta: header.last_offset_delta,
            });
        }
        if let Compression::Unknown(codec) = header.compression() {
            return Err(BatchError::UnsupportedCompression { position, codec });
        }
        headers.push(header);
        position += size;
    }
    debug_assert_eq!(position, buf.len());
    Ok(headers)
}

/// A scanner over consecutive batches, as used by log recovery: yields each valid batch with
/// its byte range and stops after the first error (which it yields). See [`iter_batches`].
#[derive(Debug, Clone)]
pub struct BatchIter<'a> {
    buf: &'a [u8],
    position: usize,
    failed: bool,
}

impl BatchIter<'_> {
    /// The end of the valid prefix so far: the byte position after the last good batch.
    pub fn position(&self) -> usize {
        self.position
    }
}

impl Iterator for BatchIter<'_> {
    type Item = Result<(BatchHeader, Range<usize>), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.position >= self.buf.len() {
            return None;
        }
        match check_batch(&self.buf[self.position..], self.position) {
            Ok(header) => {
                let range = self.position..self.position + header.total_len();
                self.position = range.end;
                Some(Ok((header, range)))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Walks the consecutive batches of `buf` with [`check_batch`], stopping at the first bad one.
/// No size limit and no codec check: this is for bytes already in a log.
pub fn iter_batches(buf: &[u8]) -> BatchIter<'_> {
    BatchIter {
        buf,
        position: 0,
        failed: false,
    }
}

fn assert_header(batch: &[u8]) {
    assert!(
        batch.len() >= BATCH_HEADER_LEN,
        "a record batch is at least {BATCH_HEADER_LEN} bytes, got {}",
        batch.len()
    );
}

/// Rewrites `baseOffset`. The field is outside the CRC, so the CRC stays valid.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    assert_header(batch);
    batch[BASE_OFFSET_OFFSET..BASE_OFFSET_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Rewrites `partitionLeaderEpoch`. The field is outside the CRC, so the CRC stays valid.
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    assert_header(batch);
    batch[PARTITION_LEADER_EPOCH_OFFSET..PARTITION_LEADER_EPOCH_OFFSET + 4]
        .copy_from_slice(&epoch.to_be_bytes());
}

/// Stamps a batch with the broker's append time: sets the LogAppendTime attribute bit and
/// `maxTimestamp`, then recomputes the CRC. `batch` must hold exactly one whole batch (its
/// length must equal the header's total length), since the CRC runs to the end of the slice.
pub fn set_log_append_time(batch: &mut [u8], ts_ms: i64) {
    assert_header(batch);
    let header = parse_header(batch).expect("length checked above");
    assert_eq!(
        header.total_len(),
        batch.len(),
        "set_log_append_time needs exactly one whole batch"
    );
    let attributes = header.attributes | TIMESTAMP_TYPE_BIT;
    batch[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8].copy_from_slice(&ts_ms.to_be_bytes());
    let crc = crc32c::crc32c(&batch[CRC_START_OFFSET..]);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_protocol::records::{Compression as KCompression, RecordBatchDecoder, TimestampType};

    /// A valid v2 batch with `n` records, built by kafka-protocol's encoder (the oracle)
    /// through the crate's shared `records::encode_batch`.
    fn batch(n: usize, base_timestamp: i64, compression: KCompression) -> Vec<u8> {
        let records: Vec<crate::records::PlainRecord> = (0..n)
            .map(|i| {
                crate::records::PlainRecord::new(
                    Some(format!("k{i}").as_bytes()),
                    Some(format!("value-{i}").as_bytes()),
                    base_timestamp + i as i64,
                )
            })
            .collect();
        crate::records::encode_batch(&records, compression)
            .expect("encode")
            .to_vec()
    }

    fn plain(n: usize) -> Vec<u8> {
        batch(n, 1_000, KCompression::None)
    }

    /// Rewrites a header field and fixes the CRC, to build batches that are wrong only in
    /// that field.
    fn patch(buf: &mut [u8], at: usize, bytes: &[u8]) {
        buf[at..at + bytes.len()].copy_from_slice(bytes);
        let crc = crc32c::crc32c(&buf[CRC_START_OFFSET..]);
        buf[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    }

    #[test]
    fn parses_a_valid_batch() {
        let b = plain(3);
        let h = parse_header(&b).expect("parse");
        assert_eq!(h.base_offset, 0);
        assert_eq!(h.total_len(), b.len());
        assert_eq!(h.magic, 2);
        assert_eq!(h.records_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.last_offset(), 2);
        assert_eq!(h.base_timestamp, 1_000);
        assert_eq!(h.max_timestamp, 1_002);
        assert_eq!(h.producer_id, -1);
        assert_eq!(h.compression(), Compression::None);
        assert!(!h.is_transactional());
        assert!(!h.is_control());
        assert!(!h.timestamp_type_log_append());
        assert_eq!(validate_batches(&b, 1 << 20).expect("valid"), vec![h]);
    }

    #[test]
    fn compressed_batches_are_accepted() {
        for c in [
            KCompression::Gzip,
            KCompression::Zstd,
            KCompression::Lz4,
            KCompression::Snappy,
        ] {
            let b = batch(10, 5, c);
            let hs = validate_batches(&b, 1 << 20).expect("valid");
            assert_eq!(hs[0].records_count, 10);
            assert_ne!(hs[0].compression(), Compression::None);
        }
    }

    #[test]
    fn empty_and_short_buffers() {
        assert_eq!(validate_batches(&[], 100), Err(BatchError::Empty));
        let b = plain(1);
        assert!(matches!(
            parse_header(&b[..60]),
            Err(BatchError::Truncated { needed: 61, .. })
        ));
        assert!(matches!(
            validate_batches(&b[..b.len() - 1], 1 << 20),
            Err(BatchError::Truncated { position: 0, .. })
        ));
        assert!(matches!(
            validate_batches(&b[..30], 1 << 20),
            Err(BatchError::Truncated { .. })
        ));
    }

    #[test]
    fn flipped_byte_fails_the_crc() {
        let mut b = plain(2);
        let last = b.len() - 1;
        b[last] ^= 0x01;
        let err = validate_batches(&b, 1 << 20).expect_err("corrupt");
        assert!(matches!(err, BatchError::CorruptCrc { position: 0, .. }));
        assert_eq!(err.kafka_error_code(), 2);
    }

    #[test]
    fn wrong_magic_is_refused() {
        let mut b = plain(1);
        b[MAGIC_OFFSET] = 1;
        let err = validate_batches(&b, 1 << 20).expect_err("magic");
        assert_eq!(
            err,
            BatchError::UnsupportedMagic {
                position: 0,
                magic: 1
            }
        );
        assert_eq!(err.kafka_error_code(), 87);
    }

    #[test]
    fn short_batch_length_is_refused() {
        let mut b = plain(1);
        b[BATCH_LENGTH_OFFSET..BATCH_LENGTH_OFFSET + 4].copy_from_slice(&10i32.to_be_bytes());
        assert!(matches!(
            validate_batches(&b, 1 << 20),
            Err(BatchError::InvalidLength {
                batch_length: 10,
                ..
            })
        ));
        b[BATCH_LENGTH_OFFSET..BATCH_LENGTH_OFFSET + 4].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(matches!(
            validate_batches(&b, 1 << 20),
            Err(BatchError::InvalidLength { .. })
        ));
    }

    #[test]
    fn inconsistent_counts_are_refused() {
        let mut b = plain(3);
        // lastOffsetDelta 1 with 3 records: fewer offsets than records.
        patch(&mut b, LAST_OFFSET_DELTA_OFFSET, &1i32.to_be_bytes());
        let err = validate_batches(&b, 1 << 20).expect_err("counts");
        assert!(matches!(
            err,
            BatchError::InconsistentCounts {
                records_count: 3,
                last_offset_delta: 1,
                ..
            }
        ));
        assert_eq!(err.kafka_error_code(), 2);

        let mut b = plain(3);
        patch(&mut b, LAST_OFFSET_DELTA_OFFSET, &(-1i32).to_be_bytes());
        assert!(matches!(
            validate_batches(&b, 1 << 20),
            Err(BatchError::InconsistentCounts { .. })
        ));

        let mut b = plain(3);
        patch(&mut b, RECORDS_COUNT_OFFSET, &(-2i32).to_be_bytes());
        assert!(matches!(
            validate_batches(&b, 1 << 20),
            Err(BatchError::InconsistentCounts { .. })
        ));

        // A compacted batch keeps its offset range with fewer records: accepted.
        let mut b = plain(3);
        patch(&mut b, LAST_OFFSET_DELTA_OFFSET, &7i32.to_be_bytes());
        assert_eq!(
            validate_batches(&b, 1 << 20).expect("compacted")[0].last_offset(),
            7
        );
    }

    #[test]
    fn too_large_is_refused() {
        let b = plain(5);
        let err = validate_batches(&b, b.len() - 1).expect_err("too large");
        assert_eq!(
            err,
            BatchError::TooLarge {
                position: 0,
                size: b.len(),
                max: b.len() - 1
            }
        );
        assert_eq!(err.kafka_error_code(), 10);
        assert!(validate_batches(&b, b.len()).is_ok());
    }

    #[test]
    fn unknown_codec_is_refused() {
        let mut b = plain(1);
        patch(&mut b, ATTRIBUTES_OFFSET, &6i16.to_be_bytes());
        let err = validate_batches(&b, 1 << 20).expect_err("codec");
        assert_eq!(
            err,
            BatchError::UnsupportedCompression {
                position: 0,
                codec: 6
            }
        );
        assert_eq!(err.kafka_error_code(), 76);
    }

    #[test]
    fn multiple_batches_and_the_scanner() {
        let (a, b, c) = (plain(1), plain(4), batch(2, 9, KCompression::Gzip));
        let mut buf = [a.clone(), b.clone(), c.clone()].concat();
        let hs = validate_batches(&buf, 1 << 20).expect("valid");
        assert_eq!(
            hs.iter().map(|h| h.records_count).collect::<Vec<_>>(),
            vec![1, 4, 2]
        );

        let ranges: Vec<_> = iter_batches(&buf).map(|r| r.expect("ok").1).collect();
        assert_eq!(
            ranges,
            vec![
                0..a.len(),
                a.len()..a.len() + b.len(),
                a.len() + b.len()..buf.len()
            ]
        );

        // Corrupt the second batch: the scanner yields the first, then the error, then stops.
        buf[a.len() + 70] ^= 0xff;
        let mut it = iter_batches(&buf);
        assert!(it.next().expect("first").is_ok());
        assert!(
            matches!(it.next(), Some(Err(BatchError::CorruptCrc { position, .. })) if position == a.len())
        );
        assert!(it.next().is_none());
        assert_eq!(it.position(), a.len());
        assert!(matches!(
            validate_batches(&buf, 1 << 20),
            Err(BatchError::CorruptCrc { .. })
        ));

        // Trailing garbage after good batches.
        let mut buf = [a.clone(), vec![0u8; 5]].concat();
        assert!(matches!(
            validate_batches(&buf, 1 << 20),
            Err(BatchError::Truncated { .. })
        ));
        buf.truncate(a.len());
        assert!(validate_batches(&buf, 1 << 20).is_ok());
    }

    #[test]
    fn offset_and_epoch_rewrites_keep_the_crc() {
        let mut b = plain(3);
        set_base_offset(&mut b, 1_234_567);
        set_partition_leader_epoch(&mut b, 42);
        let h = validate_batches(&b, 1 << 20).expect("still valid")[0];
        assert_eq!(h.base_offset, 1_234_567);
        assert_eq!(h.last_offset(), 1_234_569);
        assert_eq!(h.partition_leader_epoch, 42);
        // The oracle agrees.
        let decoded = RecordBatchDecoder::decode(&mut Bytes::from(b)).expect("decode");
        assert_eq!(decoded.records[2].offset, 1_234_569);
    }

    #[test]
    fn log_append_time_recomputes_the_crc() {
        let mut b = plain(2);
        set_log_append_time(&mut b, 99_999);
        let h = validate_batches(&b, 1 << 20).expect("still valid")[0];
        assert!(h.timestamp_type_log_append());
        assert_eq!(h.max_timestamp, 99_999);
        assert_eq!(h.base_timestamp, 1_000);
        let decoded = RecordBatchDecoder::decode(&mut Bytes::from(b)).expect("decode");
        assert_eq!(decoded.records[0].timestamp_type, TimestampType::LogAppend);
        // (kafka-protocol reports the stored per-record timestamps as they are; consumers
        // substitute maxTimestamp under LogAppendTime.)
    }
}
