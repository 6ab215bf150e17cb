//! Writes a producer's record batch (magic 2) straight into its bytes, one record at a time,
//! as records are sent: no intermediate record structs, and each key and value is copied
//! once, into the batch.
//!
//! The batch is a 61-byte header followed by the records; the header is filled in when the
//! batch is finished (count, timestamps, compression, CRC-32C over everything after the CRC
//! field). Base offset 0 and no producer id or sequence: a non-idempotent producer's batch.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::compression::Compressor;
use kafka_protocol::records::Compression;

use crate::error::{Error, Result};

/// Bytes before the first record.
pub const HEADER_LEN: usize = 61;
const LENGTH_AT: usize = 8;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;

/// Bytes of a zigzag varint.
fn varint_len(v: i64) -> usize {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

fn put_varint(buf: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        buf.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    buf.put_u8(z as u8);
}

fn bytes_len(b: Option<&[u8]>) -> usize {
    match b {
        Some(b) => varint_len(b.len() as i64) + b.len(),
        None => 1,
    }
}

fn put_bytes(buf: &mut BytesMut, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            put_varint(buf, b.len() as i64);
            buf.put_slice(b);
        }
        None => put_varint(buf, -1),
    }
}

/// One record's fields, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub timestamp: i64,
    pub headers: &'a [(String, Option<bytes::Bytes>)],
}

/// A batch being filled.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: BytesMut,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
}

impl BatchBuilder {
    /// An empty batch with room for `capacity` bytes (header included).
    pub fn new(capacity: usize) -> Self {
        let mut buf = BytesMut::with_capacity(capacity.max(HEADER_LEN));
        buf.put_bytes(0, HEADER_LEN);
        BatchBuilder {
            buf,
            count: 0,
            base_timestamp: 0,
            max_timestamp: i64::MIN,
        }
    }

    /// Bytes so far, header included (uncompressed).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Records so far.
    pub fn count(&self) -> i32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The bytes `record` would add as the next record of this batch.
    pub fn size_of(&self, record: &RecordRef<'_>) -> usize {
        let body = self.body_len(record);
        varint_len(body as i64) + body
    }

    fn body_len(&self, r: &RecordRef<'_>) -> usize {
        let base = if self.count == 0 {
            r.timestamp
        } else {
            self.base_timestamp
        };
        let mut n = 1 // attributes
            + varint_len(r.timestamp.wrapping_sub(base))
            + varint_len(i64::from(self.count))
            + bytes_len(r.key)
            + bytes_len(r.value)
            + varint_len(r.headers.len() as i64);
        for (k, v) in r.headers {
            n += bytes_len(Some(k.as_bytes())) + bytes_len(v.as_deref());
        }
        n
    }

    /// Appends `record`; returns its index in the batch.
    pub fn push(&mut self, r: &RecordRef<'_>) -> i32 {
        if self.count == 0 {
            self.base_timestamp = r.timestamp;
        }
        let body = self.body_len(r);
        let buf = &mut self.buf;
        buf.reserve(varint_len(body as i64) + body);
        put_varint(buf, body as i64);
        buf.put_u8(0);
        put_varint(buf, r.timestamp.wrapping_sub(self.base_timestamp));
        put_varint(buf, i64::from(self.count));
        put_bytes(buf, r.key);
        put_bytes(buf, r.value);
        put_varint(buf, r.headers.len() as i64);
        for (k, v) in r.headers {
            put_bytes(buf, Some(k.as_bytes()));
            put_bytes(buf, v.as_deref());
        }
        self.max_timestamp = self.max_timestamp.max(r.timestamp);
        self.count += 1;
        self.count - 1
    }

    /// The finished batch, its records compressed with `compression`.
    pub fn finish(self, compression: Compression) -> Result<Bytes> {
        let BatchBuilder {
            buf,
            count,
            base_timestamp,
            max_timestamp,
        } = self;
        let mut buf = match compression {
            Compression::None => buf,
            codec => {
                let records = &buf[HEADER_LEN..];
                let mut out = BytesMut::with_capacity(HEADER_LEN + records.len() / 2 + 64);
                out.put_bytes(0, HEADER_LEN);
                let copy = |tmp: &mut BytesMut| -> anyhow::Result<()> {
                    tmp.put_slice(records);
                    Ok(())
                };
                use kafka_protocol::compression as c;
                match codec {
                    Compression::Gzip => c::Gzip::compress(&mut out, copy),
                    Compression::Snappy => c::Snappy::compress(&mut out, copy),
                    Compression::Lz4 => c::Lz4::compress(&mut out, copy),
                    Compression::Zstd => c::Zstd::compress(&mut out, copy),
                    Compression::None => unreachable!("handled above"),
                }
                .map_err(|e| Error::Protocol(format!("cannot compress a record batch: {e}")))?;
                out
            }
        };
        let codec_bits: i16 = match compression {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        };
        let total = buf.len();
        let mut h = &mut buf[..HEADER_LEN];
        h.put_i64(0); // base offset
        h.put_i32((total - LENGTH_AT - 4) as i32);
        h.put_i32(0); // partition leader epoch
        h.put_i8(2); // magic
        h.put_u32(0); // CRC, below
        h.put_i16(codec_bits); // attributes: create time, not transactional
        h.put_i32(count - 1); // last offset delta
        h.put_i64(base_timestamp);
        h.put_i64(if count == 0 {
            base_timestamp
        } else {
            max_timestamp
        });
        h.put_i64(-1); // producer id
        h.put_i16(-1); // producer epoch
        h.put_i32(-1); // base sequence
        h.put_i32(count);
        let crc = crc32c::crc32c(&buf[ATTRIBUTES_AT..]);
        buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        Ok(buf.freeze())
    }
}

/// One record read from a batch; key, value and header values share the fetched bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRecord {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Calls `f` on every record at or after offset `from` of the whole batch `batch` (header
/// included), decompressing it if needed; control batches give nothing. Under
/// LogAppendTime every record carries the batch's max timestamp, as Kafka's readers do.
///
/// Keys and values are slices of `batch` (or of the decompressed records), not copies. The
/// record count in the header is not trusted to size anything.
pub fn read_batch(batch: &Bytes, from: i64, mut f: impl FnMut(ReadRecord)) -> Result<()> {
    use strata_protocol::batch::Compression as Codec;
    let header = strata_protocol::batch::check_batch(batch, 0)
        .map_err(|e| Error::Protocol(format!("a bad record batch: {e}")))?;
    if header.base_offset < 0 {
        return Err(Error::Protocol(format!(
            "a record batch with the negative base offset {}",
            header.base_offset
        )));
    }
    if header.is_control() || header.next_offset() <= from {
        return Ok(());
    }
    let mut body = batch.slice(HEADER_LEN..header.total_len());
    let whole = |b: &mut Bytes| -> anyhow::Result<Bytes> { Ok(b.clone()) };
    use kafka_protocol::compression::{self as c, Decompressor};
    // Decompressors are third-party code fed the broker's bytes: a panic is an error here.
    let data = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        match header.compression() {
            Codec::None => Ok(body.clone()),
            Codec::Gzip => c::Gzip::decompress(&mut body, whole),
            Codec::Snappy => c::Snappy::decompress(&mut body, whole),
            Codec::Lz4 => c::Lz4::decompress(&mut body, whole),
            Codec::Zstd => c::Zstd::decompress(&mut body, whole),
            Codec::Unknown(n) => Err(anyhow::anyhow!("unknown codec {n}")),
        }
    }))
    .map_err(|_| Error::Protocol("cannot decompress a record batch".into()))?
    .map_err(|e| Error::Protocol(format!("cannot decompress a record batch: {e}")))?;
    let malformed = || Error::Protocol("a malformed record in a batch".into());
    let log_append = header.timestamp_type_log_append();
    let mut pos = 0usize;
    let mut previous_delta = -1i64;
    for _ in 0..header.records_count.max(0) {
        let mut cur = &data[pos..];
        let len = varint(&mut cur, 5)?;
        let start = data.len() - cur.len();
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| start.checked_add(l))
            .filter(|e| *e <= data.len())
            .ok_or_else(malformed)?;
        let mut rec = &data[start..end];
        rec = rec.get(1..).ok_or_else(malformed)?; // attributes
        let timestamp_delta = varint(&mut rec, 10)?;
        let offset_delta = varint(&mut rec, 5)?;
        let key = bytes_at(&data, end, &mut rec)?;
        let value = bytes_at(&data, end, &mut rec)?;
        let count = varint(&mut rec, 5)?;
        let mut headers = Vec::new();
        for _ in 0..count.max(0) {
            let k = bytes_at(&data, end, &mut rec)?.ok_or_else(malformed)?;
            let v = bytes_at(&data, end, &mut rec)?;
            headers.push((String::from_utf8_lossy(&k).into_owned(), v));
        }
        pos = end;
        // Offsets must increase within the batch's range; anything else is a corrupt batch,
        // not records to hand out (they would move the consumer's position backwards or
        // past the batch).
        if offset_delta < 0
            || offset_delta > i64::from(header.last_offset_delta)
            || offset_delta <= previous_delta
        {
            return Err(Error::Protocol(format!(
                "a record batch at offset {} has a record at offset delta {offset_delta} (last delta {}, previous {previous_delta})",
                header.base_offset, header.last_offset_delta
            )));
        }
        previous_delta = offset_delta;
        let offset = header.base_offset + offset_delta;
        if offset < from {
            continue;
        }
        f(ReadRecord {
            offset,
            timestamp: if log_append {
                header.max_timestamp
            } else {
                header.base_timestamp.wrapping_add(timestamp_delta)
            },
            key,
            value,
            headers,
        });
    }
    Ok(())
}

fn varint(buf: &mut &[u8], max_bytes: usize) -> Result<i64> {
    strata_protocol::records::read_zigzag(buf, max_bytes)
        .ok_or_else(|| Error::Protocol("a malformed varint in a record".into()))
}

/// A length-prefixed byte string of the record `rec`, which ends at `end` in `data`: a
/// slice of `data` (no copy), or `None` for length -1.
fn bytes_at(data: &Bytes, end: usize, rec: &mut &[u8]) -> Result<Option<Bytes>> {
    let len = varint(rec, 5)?;
    if len < 0 {
        return Ok(None);
    }
    let len = len as usize;
    if len > rec.len() {
        return Err(Error::Protocol(
            "a record field runs past its record".into(),
        ));
    }
    let start = end - rec.len();
    *rec = &rec[len..];
    Ok(Some(data.slice(start..start + len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::RecordBatchDecoder;

    fn build(records: &[RecordRef<'_>], codec: Compression) -> Bytes {
        let mut b = BatchBuilder::new(16);
        for (i, r) in records.iter().enumerate() {
            let before = b.len();
            let size = b.size_of(r);
            assert_eq!(b.push(r), i as i32);
            assert_eq!(b.len() - before, size, "size_of is exact");
        }
        b.finish(codec).expect("finishes")
    }

    #[test]
    fn the_decoder_reads_back_every_field() {
        let headers = vec![
            ("h1".to_string(), Some(Bytes::from_static(b"x"))),
            ("h2".to_string(), None),
        ];
        let big = vec![7u8; 300];
        let records = [
            RecordRef {
                key: Some(b"k0"),
                value: Some(b"v0"),
                timestamp: 1_700_000_000_000,
                headers: &headers,
            },
            RecordRef {
                key: None,
                value: Some(&big),
                timestamp: 1_699_999_999_000,
                headers: &[],
            },
            RecordRef {
                key: Some(b""),
                value: None,
                timestamp: 1_700_000_005_000,
                headers: &[],
            },
        ];
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let batch = build(&records, codec);
            let header = strata_protocol::batch::check_batch(&batch, 0).expect("valid batch");
            assert_eq!(header.records_count, 3, "{codec:?}");
            assert_eq!(header.total_len(), batch.len(), "{codec:?}");
            assert_eq!(header.max_timestamp, 1_700_000_005_000);
            assert_eq!((header.producer_id, header.base_sequence), (-1, -1));
            let mut bytes = batch.clone();
            let set = RecordBatchDecoder::decode(&mut bytes).expect("decodes");
            assert_eq!(set.records.len(), 3);
            for (i, (got, want)) in set.records.iter().zip(&records).enumerate() {
                assert_eq!(got.offset, i as i64, "{codec:?}");
                assert_eq!(got.timestamp, want.timestamp, "{codec:?}");
                assert_eq!(got.key.as_deref(), want.key, "{codec:?}");
                assert_eq!(got.value.as_deref(), want.value, "{codec:?}");
                assert_eq!(got.producer_id, -1);
                let hs: Vec<(String, Option<Bytes>)> = got
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect();
                assert_eq!(hs, want.headers.to_vec(), "{codec:?}");
            }
            let mut read = Vec::new();
            read_batch(&batch, 1, |r| read.push(r)).expect("reads");
            assert_eq!(read.len(), 2, "from offset 1, {codec:?}");
            for (got, want) in read.iter().zip(&records[1..]) {
                assert_eq!(got.timestamp, want.timestamp);
                assert_eq!(got.key.as_deref(), want.key);
                assert_eq!(got.value.as_deref(), want.value);
            }
            assert_eq!(read[0].offset, 1);
            let stamps = strata_protocol::records::record_timestamps(&batch).expect("walks");
            assert_eq!(stamps[1], (1, 1_699_999_999_000));
        }
    }

    #[test]
    fn matches_the_reference_encoder_byte_for_byte() {
        let value = vec![b'a'; 1024];
        let refs: Vec<RecordRef<'_>> = (0..50)
            .map(|i| RecordRef {
                key: (i % 2 == 0).then_some(&b"key"[..]),
                value: Some(&value[..100 + i * 7]),
                timestamp: 1_000 + i as i64 * 3,
                headers: &[],
            })
            .collect();
        let ours = build(&refs, Compression::None);
        let reference = strata_protocol::records::encode_records(
            refs.iter().map(|r| {
                (
                    r.key.map(Bytes::copy_from_slice),
                    r.value.map(Bytes::copy_from_slice),
                    r.timestamp,
                    Default::default(),
                )
            }),
            Compression::None,
        )
        .expect("encodes");
        assert_eq!(ours, reference);
    }

    #[test]
    fn reads_headers_and_refuses_truncated_records() {
        let headers = vec![("trace".to_string(), Some(Bytes::from_static(b"abc")))];
        let r = RecordRef {
            key: Some(b"k"),
            value: Some(b"v"),
            timestamp: 5,
            headers: &headers,
        };
        let batch = build(&[r, r], Compression::None);
        let mut read = Vec::new();
        read_batch(&batch, 0, |r| read.push(r)).expect("reads");
        assert_eq!(read.len(), 2);
        assert_eq!(read[1].offset, 1);
        assert_eq!(read[1].headers, headers);
        // A record length past the end of the batch (CRC fixed up): an error, not a panic.
        let mut bad = bytes::BytesMut::from(&batch[..]);
        bad[HEADER_LEN] = 0x7e;
        let crc = crc32c::crc32c(&bad[ATTRIBUTES_AT..]);
        bad[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(read_batch(&bad.freeze(), 0, |_| {}).is_err());
    }

    #[test]
    fn varints_at_the_edges() {
        for v in [0i64, 1, -1, 63, -64, 64, -65, 1 << 20, i64::MAX, i64::MIN] {
            let mut b = BytesMut::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
            let mut s = &b[..];
            assert_eq!(strata_protocol::records::read_zigzag(&mut s, 10), Some(v));
        }
    }
}
