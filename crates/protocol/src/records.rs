//! Record-level reads, for the few paths that need them (ListOffsets by timestamp). Never on
//! the produce or fetch path, which work on batch headers only.

use crate::batch::{check_batch, BatchError};

/// Offsets and timestamps of every record in one whole batch, decompressing it if needed.
/// Under LogAppendTime every record carries the batch's max timestamp.
pub fn record_timestamps(batch: &[u8]) -> Result<Vec<(i64, i64)>, BatchError> {
    let header = check_batch(batch, 0)?;
    let mut buf = bytes::Bytes::copy_from_slice(&batch[..header.total_len()]);
    let corrupt = || BatchError::CorruptCrc {
        position: 0,
        stored: header.crc,
        computed: header.crc,
    };
    // The decoder trusts the batch's counts and timestamp deltas: a count it cannot satisfy
    // fails the decode, and arithmetic on hostile timestamps can overflow (a panic in
    // debug builds). Neither may take down the caller.
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        kafka_protocol::records::RecordBatchDecoder::decode(&mut buf)
    }))
    .map_err(|_| corrupt())?;
    let set = decoded.map_err(|_| corrupt())?;
    let log_append = header.timestamp_type_log_append();
    Ok(set
        .records
        .iter()
        .map(|r| {
            let ts = if log_append {
                header.max_timestamp
            } else {
                r.timestamp
            };
            (r.offset, ts)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
