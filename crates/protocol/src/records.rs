//! Record-level reads, for the few paths that need them (ListOffsets by timestamp). Never on
//! the produce or fetch path, which work on batch headers only.
//!
//! Records are walked here rather than by the message crate's decoder, which sizes its
//! buffers from counts in the data (record counts, header counts) before reading them: a
//! batch of a few hundred bytes could make it reserve, and initialise, gigabytes. Walking
//! reads only each record's length, timestamp delta and offset delta, and skips the rest.

use bytes::Bytes;
use kafka_protocol::compression::{Decompressor, Gzip, Lz4, Snappy, Zstd};

use crate::batch::{check_batch, BatchError, BatchHeader, Compression, BATCH_HEADER_LEN};

/// Reads a zigzag-encoded varint (Kafka's record fields) of at most `max_bytes` bytes.
pub fn read_zigzag(buf: &mut &[u8], max_bytes: usize) -> Option<i64> {
    let mut value: u64 = 0;
    for i in 0..max_bytes {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    None
}

/// One record's place in its batch.
struct Walked {
    offset: i64,
    timestamp: i64,
    has_key: bool,
}

/// (offset, timestamp) of each record in the uncompressed records section `data`.
fn walk(data: &[u8], header: &BatchHeader) -> Option<Vec<(i64, i64)>> {
    Some(
        walk_records(data, header)?
            .into_iter()
            .map(|w| (w.offset, w.timestamp))
            .collect(),
    )
}

fn walk_records(mut data: &[u8], header: &BatchHeader) -> Option<Vec<Walked>> {
    let claimed = usize::try_from(header.records_count).ok()?;
    // Each record takes at least 7 bytes, so the data bounds how many there can be.
    let mut out = Vec::with_capacity(claimed.min(data.len() / 7 + 1));
    let log_append = header.timestamp_type_log_append();
    for _ in 0..claimed {
        let len = usize::try_from(read_zigzag(&mut data, 5)?).ok()?;
        if len > data.len() {
            return None;
        }
        let (mut record, rest) = data.split_at(len);
        data = rest;
        // Skip the attributes byte.
        record = record.get(1..)?;
        let timestamp_delta = read_zigzag(&mut record, 10)?;
        let offset_delta = read_zigzag(&mut record, 5)?;
        let key_len = read_zigzag(&mut record, 5)?;
        let timestamp = if log_append {
            header.max_timestamp
        } else {
            header.base_timestamp.wrapping_add(timestamp_delta)
        };
        out.push(Walked {
            offset: header.base_offset.wrapping_add(offset_delta),
            timestamp,
            has_key: key_len >= 0,
        });
    }
    Some(out)
}

/// Decompresses (if needed) one whole batch and runs `f` on its records section.
pub fn with_records<T>(
    batch: &[u8],
    f: impl FnOnce(&[u8], &BatchHeader) -> Option<T>,
) -> Result<T, BatchError> {
    let header = check_batch(batch, 0)?;
    let corrupt = || BatchError::CorruptCrc {
        position: 0,
        stored: header.crc,
        computed: header.crc,
    };
    let mut body = Bytes::copy_from_slice(&batch[BATCH_HEADER_LEN..header.total_len()]);
    let parse = move |b: &mut Bytes| -> anyhow::Result<T> {
        f(b, &header).ok_or_else(|| anyhow::anyhow!("malformed records"))
    };
    // Decompressors are third-party code fed untrusted bytes: a panic is an error here.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        match header.compression() {
            Compression::None => parse(&mut body),
            Compression::Gzip => Gzip::decompress(&mut body, parse),
            Compression::Snappy => Snappy::decompress(&mut body, parse),
            Compression::Lz4 => Lz4::decompress(&mut body, parse),
            Compression::Zstd => Zstd::decompress(&mut body, parse),
            Compression::Unknown(_) => Err(anyhow::anyhow!("unknown codec")),
        }
    }))
    .map_err(|_| corrupt())?;
    result.map_err(|_| corrupt())
}

/// Indexes (within the batch) of records without a key; a compacted topic refuses them.
pub fn keyless_records(batch: &[u8]) -> Result<Vec<i32>, BatchError> {
    with_records(batch, |data, header| {
        Some(
            walk_records(data, header)?
                .iter()
                .enumerate()
                .filter(|(_, w)| !w.has_key)
                .map(|(i, _)| i as i32)
                .collect(),
        )
    })
}

/// Offsets and timestamps of every record in one whole batch, decompressing it if needed.
/// Under LogAppendTime every record carries the batch's max timestamp.
pub fn record_timestamps(batch: &[u8]) -> Result<Vec<(i64, i64)>, BatchError> {
    with_records(batch, walk)
}

/// A record to encode: key, value and timestamp (no headers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub timestamp: i64,
}

impl PlainRecord {
    pub fn new(key: Option<&[u8]>, value: Option<&[u8]>, timestamp: i64) -> Self {
        PlainRecord {
            key: key.map(Bytes::copy_from_slice),
            value: value.map(Bytes::copy_from_slice),
            timestamp,
        }
    }
}

/// Encodes records as one magic-2 batch with base offset 0, as a non-idempotent producer
/// sends it. Used where the broker writes records itself (internal topics) and by tests.
pub fn encode_batch(
    records: &[PlainRecord],
    compression: kafka_protocol::records::Compression,
) -> Result<Bytes, EncodeBatchError> {
    encode_batch_as(records, compression, BatchProducer::NONE)
}

/// The producer fields of a batch: id, epoch, first sequence, and the transactional and
/// control attribute bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchProducer {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub transactional: bool,
    pub control: bool,
}

impl BatchProducer {
    /// A batch from no particular producer.
    pub const NONE: BatchProducer = BatchProducer {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        transactional: false,
        control: false,
    };
}

/// Encodes records as one magic-2 batch with base offset 0 and the given producer fields.
pub fn encode_batch_as(
    records: &[PlainRecord],
    compression: kafka_protocol::records::Compression,
    producer: BatchProducer,
) -> Result<Bytes, EncodeBatchError> {
    encode_records_as(
        records
            .iter()
            .map(|r| (r.key.clone(), r.value.clone(), r.timestamp, Headers::new())),
        compression,
        producer,
    )
}

/// Record headers, in order.
pub type Headers =
    kafka_protocol::indexmap::IndexMap<kafka_protocol::protocol::StrBytes, Option<Bytes>>;

/// Encodes (key, value, timestamp, headers) records as one magic-2 batch with base offset 0
/// and no producer id or sequence, as a non-idempotent producer sends it.
pub fn encode_records(
    records: impl IntoIterator<Item = (Option<Bytes>, Option<Bytes>, i64, Headers)>,
    compression: kafka_protocol::records::Compression,
) -> Result<Bytes, EncodeBatchError> {
    encode_records_as(records, compression, BatchProducer::NONE)
}

/// Encodes (key, value, timestamp, headers) records as one magic-2 batch with base offset 0
/// and the given producer fields.
pub fn encode_records_as(
    records: impl IntoIterator<Item = (Option<Bytes>, Option<Bytes>, i64, Headers)>,
    compression: kafka_protocol::records::Compression,
    producer: BatchProducer,
) -> Result<Bytes, EncodeBatchError> {
    use kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
    let records: Vec<Record> = records
        .into_iter()
        .enumerate()
        .map(|(i, (key, value, timestamp, headers))| Record {
            transactional: producer.transactional,
            control: producer.control,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: producer.producer_id,
            producer_epoch: producer.producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch when offset - sequence changes; keeping it
            // constant gives one batch (without a sequence when the first is -1).
            sequence: producer.base_sequence.wrapping_add(i as i32),
            timestamp,
            key,
            value,
            headers,
        })
        .collect();
    let mut buf = bytes::BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .map_err(|e| EncodeBatchError(e.to_string()))?;
    Ok(buf.freeze())
}

/// A transaction marker: the control record of a commit or an abort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlMarker {
    pub commit: bool,
    pub coordinator_epoch: i32,
}

/// Encodes a transaction marker as Kafka writes it: a transactional control batch of one
/// record whose key is `version: i16 = 0, type: i16 (0 abort, 1 commit)` and whose value is
/// `version: i16 = 0, coordinator_epoch: i32`.
pub fn encode_marker(
    producer_id: i64,
    producer_epoch: i16,
    marker: ControlMarker,
    timestamp: i64,
) -> Result<Bytes, EncodeBatchError> {
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&i16::from(marker.commit).to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&marker.coordinator_epoch.to_be_bytes());
    encode_batch_as(
        &[PlainRecord::new(Some(&key), Some(&value), timestamp)],
        kafka_protocol::records::Compression::None,
        BatchProducer {
            producer_id,
            producer_epoch,
            base_sequence: -1,
            transactional: true,
            control: true,
        },
    )
}

/// Reads the marker of a control batch; `None` if the batch is not a readable transaction
/// marker (an unknown control type is skipped, as Kafka's readers do). Only the first record
/// is read, with bounded reads: the record count in the header sizes nothing.
pub fn decode_marker(batch: &[u8]) -> Option<ControlMarker> {
    let header = check_batch(batch, 0).ok()?;
    if !header.is_control() || header.records_count < 1 {
        return None;
    }
    with_records(batch, |data, _| {
        let mut rec = data;
        let len = usize::try_from(read_zigzag(&mut rec, 5)?).ok()?;
        let mut rec = rec.get(..len)?;
        rec = rec.get(1..)?; // attributes
        read_zigzag(&mut rec, 10)?; // timestamp delta
        read_zigzag(&mut rec, 5)?; // offset delta
        let key_len = usize::try_from(read_zigzag(&mut rec, 5)?).ok()?;
        let key = rec.get(..key_len)?;
        rec = &rec[key_len..];
        let commit = match key.get(2..4)? {
            [0, 0] => false,
            [0, 1] => true,
            _ => return Some(None),
        };
        let value_len = read_zigzag(&mut rec, 5)?;
        let coordinator_epoch = usize::try_from(value_len)
            .ok()
            .and_then(|l| rec.get(..l))
            .and_then(|v| v.get(2..6))
            .map_or(0, |e| i32::from_be_bytes([e[0], e[1], e[2], e[3]]));
        Some(Some(ControlMarker {
            commit,
            coordinator_epoch,
        }))
    })
    .ok()
    .flatten()
}

/// A batch that could not be encoded.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode a record batch: {0}")]
pub struct EncodeBatchError(pub String);

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::Compression as Codec;

    /// The unit-test binary uses the broker's allocator, as the real binary does.
    #[global_allocator]
    static ALLOCATOR: crate::alloc::ReservingAllocator = crate::alloc::ReservingAllocator;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn every_codec_gives_every_record() {
        for codec in [
            Codec::None,
            Codec::Gzip,
            Codec::Snappy,
            Codec::Lz4,
            Codec::Zstd,
        ] {
            let records: Vec<PlainRecord> = [500, 100, 900, 300, 700]
                .iter()
                .map(|ts| PlainRecord::new(None, Some(b"value"), *ts))
                .collect();
            let batch = encode_batch(&records, codec).expect("encodes");
            let got = record_timestamps(&batch).expect("decodes");
            assert_eq!(
                got,
                vec![(0, 500), (1, 100), (2, 900), (3, 300), (4, 700)],
                "{codec:?}"
            );
        }
    }

    #[test]
    fn finds_keyless_records() {
        let records = vec![
            PlainRecord::new(Some(b"k"), Some(b"v"), 1),
            PlainRecord::new(None, Some(b"v"), 2),
            PlainRecord::new(Some(b""), None, 3),
        ];
        for codec in [Codec::None, Codec::Zstd] {
            let batch = encode_batch(&records, codec).expect("encodes");
            assert_eq!(
                keyless_records(&batch).expect("walks"),
                vec![1],
                "{codec:?}"
            );
        }
    }

    #[test]
    fn hostile_counts_and_timestamps_are_errors_not_aborts() {
        // recordsCount = lastOffsetDelta = 2^31-1 with no records, valid CRC (found by fuzzing).
        let huge_count = hex("000000000000000000000031ffffffff0265bc217a00007fffffff00000000000000000000000000000000ffffffffffffffffffffffffffff7fffffff");
        assert!(
            crate::batch::validate_batches(&huge_count, 1 << 20).is_err(),
            "produce refuses it"
        );
        assert!(record_timestamps(&huge_count).is_err());
        // baseTimestamp = i64::MAX and a record with timestamp delta 1 (overflow).
        let overflow = hex("000000000000000000000038ffffffff02babae7af0000000000007fffffffffffffff7fffffffffffffffffffffffffffffffffffffffffff000000010c000200010100");
        let _ = record_timestamps(&overflow);
    }

    #[test]
    fn markers_round_trip() {
        for commit in [true, false] {
            let marker = ControlMarker {
                commit,
                coordinator_epoch: 7,
            };
            let batch = encode_marker(42, 3, marker, 1000).unwrap();
            let header = crate::batch::check_batch(&batch, 0).unwrap();
            assert!(header.is_control() && header.is_transactional());
            assert_eq!((header.producer_id, header.producer_epoch), (42, 3));
            assert_eq!(decode_marker(&batch), Some(marker));
        }
        let data =
            encode_batch(&[PlainRecord::new(Some(b"k"), Some(b"v"), 1)], Codec::None).unwrap();
        assert_eq!(decode_marker(&data), None);
    }
}
