//! `strata_log::PartitionLog`: append whatever `validate_batches` accepts, read it back, reopen
//! (recovery) and read again.
//!
//! Input: byte 0 chooses the log config and the scenario, the rest is record batches (made
//! CRC-valid by `fix_batches` and cut to the whole batches found, so most inputs are accepted).
//! The log lives in a fresh directory under a per-process temporary directory (in /dev/shm
//! when it exists).
//!
//! Checks: nothing panics; `append` of validated batches succeeds (or refuses with
//! `AppendTooLarge` and leaves the log end unchanged) and assigns contiguous offsets;
//! `read` at the base, middle and last offset of every batch (with several byte budgets and
//! high watermarks) returns only whole, CRC-valid batches, identical to what was appended, the
//! first one containing the offset, none at or past the high watermark, within the byte
//! budget except for a lone first batch; reads at the log end are empty and past it are
//! OffsetOutOfRange; reopening recovers the same log end without truncating anything;
//! `offset_for_timestamp` never panics.
#![no_main]

/// The broker binary's allocator: a hostile element count makes a reservation (released when
/// decoding fails) instead of aborting, so the fuzzer sees what the broker would.
#[global_allocator]
static ALLOCATOR: strata_protocol::alloc::ReservingAllocator =
    strata_protocol::alloc::ReservingAllocator;

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use strata_fuzz::fix_batches;
use strata_log::{LogConfig, LogError, PartitionLog};
use strata_protocol::batch::{iter_batches, parse_header, validate_batches};

const DEFAULT_MAX: usize = 1_048_588;
const T0: i64 = 1_700_000_000_000;
/// Reads are checked for at most this many batches per input (each costs a dozen reads).
const MAX_CHECKED_BATCHES: usize = 24;

fn root() -> &'static tempfile::TempDir {
    static ROOT: OnceLock<tempfile::TempDir> = OnceLock::new();
    ROOT.get_or_init(|| {
        let shm = std::path::Path::new("/dev/shm");
        let mut b = tempfile::Builder::new();
        b.prefix("strata-fuzz-log-");
        if shm.is_dir() {
            b.tempdir_in(shm)
        } else {
            b.tempdir()
        }
        .expect("temporary directory")
    })
}

/// One appended batch as it is in the log.
struct Stored {
    base: i64,
    last: i64,
    bytes: Vec<u8>,
}

fn check_read(
    log: &PartitionLog,
    model: &[Stored],
    i: usize,
    offset: i64,
    max_bytes: usize,
    hw: i64,
) {
    let got = log
        .read(offset, max_bytes, hw)
        .unwrap_or_else(|e| panic!("read({offset}, {max_bytes}, {hw}) failed: {e}"));
    // Only whole, valid batches.
    let mut it = iter_batches(&got);
    let mut n = 0;
    for item in &mut it {
        let (h, range) = item.unwrap_or_else(|e| panic!("read returned a bad batch: {e}"));
        let expect = model
            .get(i + n)
            .expect("read returned more batches than were appended");
        assert_eq!(
            &got[range],
            &expect.bytes[..],
            "batch {} differs from what was appended",
            i + n
        );
        assert!(
            h.last_offset() < hw,
            "read returned offset {} at or past the high watermark {hw}",
            h.last_offset()
        );
        n += 1;
    }
    assert_eq!(it.position(), got.len(), "read returned a partial batch");
    let first = &model[i];
    if first.last < hw {
        assert!(
            n >= 1,
            "read({offset}, {max_bytes}, {hw}) returned nothing below the high watermark"
        );
        assert!(first.base <= offset && offset <= first.last);
        assert!(
            got.len() <= max_bytes.max(first.bytes.len()),
            "read returned {} bytes for a budget of {max_bytes}",
            got.len()
        );
    } else {
        assert_eq!(n, 0, "read returned the batch at the high watermark");
    }
}

fn check_all_reads(log: &PartitionLog, model: &[Stored]) {
    let end = log.log_end_offset();
    assert_eq!(end, model.last().map_or(0, |s| s.last + 1));
    for (i, s) in model.iter().enumerate().take(MAX_CHECKED_BATCHES) {
        let mid = s.base + (s.last - s.base) / 2;
        for offset in [s.base, mid, s.last] {
            for max_bytes in [0, 1, s.bytes.len(), DEFAULT_MAX] {
                check_read(log, model, i, offset, max_bytes, end);
            }
            check_read(log, model, i, offset, DEFAULT_MAX, s.last + 1);
            check_read(log, model, i, offset, DEFAULT_MAX, s.last);
        }
    }
    assert!(log
        .read(end, DEFAULT_MAX, end)
        .expect("read at the log end")
        .is_empty());
    assert!(matches!(
        log.read(end + 1, DEFAULT_MAX, i64::MAX),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    let start = log.log_start_offset();
    if start > i64::MIN {
        assert!(matches!(
            log.read(start - 1, DEFAULT_MAX, end),
            Err(LogError::OffsetOutOfRange { .. })
        ));
    }
    for ts in [i64::MIN, -1, 0, T0, i64::MAX] {
        let _ = log.offset_for_timestamp(ts);
    }
    let _ = log.max_timestamp();
}

fuzz_target!(|data: &[u8]| {
    let Some((&cfg, rest)) = data.split_first() else {
        return;
    };
    let mut body = rest.to_vec();
    let whole = fix_batches(&mut body);
    body.truncate(whole);
    let Ok(headers) = validate_batches(&body, DEFAULT_MAX) else {
        return;
    };

    let config = LogConfig {
        segment_bytes: [200, 1000, 4096, 1 << 30][usize::from(cfg & 3)],
        segment_ms: if cfg & 0x80 != 0 {
            1000
        } else {
            7 * 24 * 3600 * 1000
        },
        index_interval_bytes: [0, 100, 4096, 1 << 20][usize::from((cfg >> 2) & 3)],
    };
    let log_append_time = (cfg & 0x10 != 0).then_some(T0 + 5);
    let per_append = usize::from((cfg >> 5) & 3) + 1;

    let dir: PathBuf = root().path().join("p");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("clean the partition directory");
    }
    let mut now = T0;
    let (mut log, report) = PartitionLog::open(&dir, config, now).expect("open an empty log");
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(log.log_end_offset(), 0);

    let mut model: Vec<Stored> = Vec::new();
    let mut position = 0;
    for group in headers.chunks(per_append) {
        let len: usize = group.iter().map(|h| h.total_len()).sum();
        let slice = &mut body[position..position + len];
        position += len;
        let end_before = log.log_end_offset();
        now += 600;
        match log.append(slice, now, log_append_time) {
            Ok(info) => {
                assert_eq!(info.base_offset, end_before);
                let mut next = end_before;
                let mut at = 0;
                for h in group {
                    let bytes = slice[at..at + h.total_len()].to_vec();
                    at += h.total_len();
                    let stored = parse_header(&bytes).unwrap();
                    assert_eq!(
                        stored.base_offset, next,
                        "offsets are assigned contiguously"
                    );
                    assert_eq!(stored.last_offset_delta, h.last_offset_delta);
                    if let Some(ts) = log_append_time {
                        assert_eq!(stored.max_timestamp, ts);
                        assert!(stored.timestamp_type_log_append());
                    }
                    model.push(Stored {
                        base: next,
                        last: stored.last_offset(),
                        bytes,
                    });
                    next = stored.next_offset();
                }
                assert_eq!(info.last_offset, next - 1);
                assert_eq!(log.log_end_offset(), next);
            }
            Err(LogError::AppendTooLarge { .. }) => {
                assert_eq!(
                    log.log_end_offset(),
                    end_before,
                    "a refused append moved the log end"
                );
            }
            Err(e) => panic!("append of validated batches failed: {e}"),
        }
    }
    check_all_reads(&log, &model);

    // Recovery: everything written (and synced) is found again.
    if let Some(job) = log.sync_job() {
        job.run().expect("fsync");
    }
    let end = log.log_end_offset();
    drop(log);
    let (log, report) = PartitionLog::open(&dir, config, now).expect("reopen");
    assert_eq!(
        report.truncated_bytes, 0,
        "recovery cut a log that was written whole: {report:?}"
    );
    assert_eq!(log.log_end_offset(), end, "recovery changed the log end");
    check_all_reads(&log, &model);
    drop(log);
    std::fs::remove_dir_all(&dir).expect("clean the partition directory");
});
