//! Helpers shared by the fuzz targets and the seed-corpus generator.

use strata_protocol::batch::{
    BatchHeader, BATCH_LENGTH_OFFSET, CRC_OFFSET, CRC_START_OFFSET, CURRENT_MAGIC, LOG_OVERHEAD,
    MAGIC_OFFSET, MIN_BATCH_LENGTH,
};

/// Makes random bytes look like record batches so that the fuzzer gets past the CRC check:
/// walks the `batchLength` framing from the start of `buf` and, for every batch that fits,
/// sets magic 2 and rewrites the CRC-32C. Stops at the first length that is below the minimum
/// or runs past the end. Returns the number of bytes covered by whole batches.
///
/// Without this, a mutation anywhere in the CRC-covered part of a batch is rejected by the
/// CRC check, and nothing behind it (counts, codecs, record decoding, the log) is reached.
pub fn fix_batches(buf: &mut [u8]) -> usize {
    let mut position = 0;
    while buf.len() - position >= strata_protocol::batch::BATCH_HEADER_LEN {
        let at = position + BATCH_LENGTH_OFFSET;
        let batch_length = i32::from_be_bytes(buf[at..at + 4].try_into().unwrap());
        if batch_length < MIN_BATCH_LENGTH {
            break;
        }
        let total = LOG_OVERHEAD + batch_length as usize;
        if total > buf.len() - position {
            break;
        }
        let batch = &mut buf[position..position + total];
        batch[MAGIC_OFFSET] = CURRENT_MAGIC as u8;
        let crc = crc32c::crc32c(&batch[CRC_START_OFFSET..]);
        batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        position += total;
    }
    position
}

/// The invariants every header accepted by `validate_batches` / `check_batch` must satisfy.
pub fn assert_header_invariants(h: &BatchHeader) {
    assert_eq!(
        h.magic, CURRENT_MAGIC,
        "accepted a batch with magic {}",
        h.magic
    );
    assert!(
        h.batch_length >= MIN_BATCH_LENGTH,
        "accepted batchLength {}",
        h.batch_length
    );
    assert_eq!(h.total_len(), LOG_OVERHEAD + h.batch_length as usize);
    assert!(
        h.records_count >= 0,
        "accepted recordsCount {}",
        h.records_count
    );
    assert!(
        h.last_offset_delta >= 0,
        "accepted lastOffsetDelta {}",
        h.last_offset_delta
    );
    assert!(
        i64::from(h.last_offset_delta) >= i64::from(h.records_count) - 1,
        "accepted lastOffsetDelta {} < recordsCount {} - 1",
        h.last_offset_delta,
        h.records_count
    );
}

/// A small deterministic hash of the input, to derive parameters without shrinking the part
/// of the input that is interpreted as data.
pub fn mix(data: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325_u64;
    for b in data.iter().take(64) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^ data.len() as u64
}
