//! The record-batch checks of `strata_protocol`: `batch::validate_batches` (the produce path),
//! `batch::iter_batches` (log recovery) and `records::record_timestamps` (ListOffsets by
//! timestamp, which decodes and decompresses records).
//!
//! Each input is checked twice: as is, and after `fix_batches` has set magic 2 and rewritten
//! the CRC of every framed batch, so that mutations behind the CRC reach the count checks,
//! the codecs and the record decoder.
//!
//! Checks: nothing panics (nor aborts on a huge allocation); for every `Ok` from
//! `validate_batches`: the batches' `total_len` add up to `buf.len()`, every header has magic
//! 2, `batchLength >= 49`, `recordsCount >= 0`, `lastOffsetDelta >= recordsCount - 1`, size
//! within the limit and a known codec; `iter_batches` agrees with it (same headers,
//! contiguous ranges, no error); a tighter limit only turns Ok into TooLarge. `iter_batches`
//! on any input yields contiguous ranges from 0, stops after the first error, and its
//! `position()` is the end of the valid prefix. `record_timestamps` on an accepted batch
//! returns one entry per record.
#![no_main]

/// The broker binary's allocator: a hostile element count makes a reservation (released when
/// decoding fails) instead of aborting, so the fuzzer sees what the broker would.
#[global_allocator]
static ALLOCATOR: strata_protocol::alloc::ReservingAllocator =
    strata_protocol::alloc::ReservingAllocator;

use libfuzzer_sys::fuzz_target;
use strata_fuzz::{assert_header_invariants, fix_batches, mix};
use strata_protocol::batch::{
    check_batch, iter_batches, parse_header, validate_batches, BatchError, Compression,
};
use strata_protocol::records::record_timestamps;

/// Kafka's default max.message.bytes.
const DEFAULT_MAX: usize = 1_048_588;

fn check(buf: &[u8]) {
    let derived_max = (mix(buf) % (buf.len() as u64 + 64)) as usize;
    let unlimited = validate_batches(buf, usize::MAX);
    let _ = unlimited
        .as_ref()
        .map_err(|e| (e.to_string(), e.kafka_error_code()));

    if let Ok(headers) = &unlimited {
        assert!(!headers.is_empty());
        let sum: usize = headers.iter().map(|h| h.total_len()).sum();
        assert_eq!(sum, buf.len(), "batches do not fill the buffer");
        for h in headers {
            assert_header_invariants(h);
            assert!(!matches!(h.compression(), Compression::Unknown(_)));
        }
        // The recovery scanner accepts exactly the same batches.
        let mut it = iter_batches(buf);
        let mut position = 0;
        for h in headers {
            let (h2, range) = it
                .next()
                .expect("iter_batches stopped early")
                .expect("iter_batches refused");
            assert_eq!(*h, h2);
            assert_eq!(range, position..position + h.total_len());
            position = range.end;
        }
        assert!(it.next().is_none());
        assert_eq!(it.position(), buf.len());
        // Limits: below the largest batch → TooLarge, otherwise the same answer.
        let largest = headers.iter().map(|h| h.total_len()).max().unwrap();
        for max in [DEFAULT_MAX, derived_max, largest, largest - 1] {
            match validate_batches(buf, max) {
                Ok(h) => {
                    assert!(
                        largest <= max,
                        "a batch of {largest} bytes passed max {max}"
                    );
                    assert_eq!(&h, headers);
                }
                Err(BatchError::TooLarge { size, .. }) => assert!(size > max && largest > max),
                Err(e) => panic!("limit {max} changed the answer to {e:?}"),
            }
        }
        // Record-level decode of every accepted batch.
        let mut position = 0;
        for h in headers {
            let one = &buf[position..position + h.total_len()];
            if let Ok(ts) = record_timestamps(one) {
                assert_eq!(
                    ts.len(),
                    h.records_count as usize,
                    "one timestamp per record"
                );
            }
            position += h.total_len();
        }
    } else {
        for max in [DEFAULT_MAX, derived_max] {
            // A tighter limit never makes a refused buffer acceptable.
            assert!(validate_batches(buf, max).is_err());
        }
    }

    // The recovery scanner on its own.
    let mut it = iter_batches(buf);
    let mut position = 0;
    let mut failed = false;
    while let Some(item) = it.next() {
        assert!(!failed, "iter_batches went on after an error");
        match item {
            Ok((h, range)) => {
                assert_header_invariants(&h);
                assert_eq!(range.start, position, "ranges are contiguous");
                assert_eq!(range.len(), h.total_len());
                assert!(range.end <= buf.len());
                assert_eq!(parse_header(&buf[range.clone()]).unwrap(), h);
                assert_eq!(check_batch(&buf[range.start..], range.start).unwrap(), h);
                position = range.end;
            }
            Err(e) => {
                let _ = e.to_string();
                failed = true;
            }
        }
        assert_eq!(it.position(), position);
    }
    assert!(failed || position == buf.len());

    // record_timestamps on whatever is at the start (it may be followed by anything).
    let _ = record_timestamps(buf);
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut fixed = data.to_vec();
    fix_batches(&mut fixed);
    if fixed != data {
        check(&fixed);
    }
});
