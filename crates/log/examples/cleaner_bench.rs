//! Cleaner throughput: MB/s of log compacted by `PartitionLog::clean`.
//!
//! Builds a log of `RECORDS` records (`VALUE_BYTES`-byte values, `KEYS` distinct keys, so most
//! records are superseded) in batches of 100 with the given codec, then times one clean pass
//! over it. `cargo run --release -p strata-log --example cleaner_bench -- [records] [codec]`
//! (codec: none, gzip, snappy, lz4, zstd). Prints one line; `bench/` collects the figures.

use std::time::Instant;

use kafka_protocol::records::Compression;
use strata_log::{CleanOptions, LogConfig, PartitionLog};
use strata_protocol::records::{encode_batch, PlainRecord};

const KEYS: usize = 10_000;
const VALUE_BYTES: usize = 1024;
const BATCH: usize = 100;

fn main() {
    let mut args = std::env::args().skip(1);
    let records: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let codec = match args.next().as_deref() {
        Some("gzip") => Compression::Gzip,
        Some("snappy") => Compression::Snappy,
        Some("lz4") => Compression::Lz4,
        Some("zstd") => Compression::Zstd,
        _ => Compression::None,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        segment_bytes: 64 << 20,
        segment_ms: 1,
        index_interval_bytes: 4096,
    };
    let (mut log, _) = PartitionLog::open(dir.path(), config, 0).expect("open");
    let value: Vec<u8> = (0..VALUE_BYTES).map(|i| (i * 7 % 251) as u8).collect();
    let mut written = 0usize;
    while written < records {
        let batch: Vec<PlainRecord> = (written..(written + BATCH).min(records))
            .map(|i| {
                PlainRecord::new(
                    Some(format!("key-{}", i % KEYS).as_bytes()),
                    Some(&value),
                    i as i64,
                )
            })
            .collect();
        let bytes = encode_batch(&batch, codec).expect("encodes").to_vec();
        log.append(&bytes, 0, None).expect("append");
        written += batch.len();
    }
    // One more batch so every record above is in a closed segment.
    log.maybe_roll(10).expect("roll");
    let tail = encode_batch(&[PlainRecord::new(Some(b"tail"), Some(b"t"), 0)], codec)
        .expect("encodes")
        .to_vec();
    log.append(&tail, 0, None).expect("append");
    let end = log.log_end_offset();
    let size = log.size_bytes();
    let opts = CleanOptions {
        delete_retention_ms: i64::MAX,
        min_compaction_lag_ms: 0,
    };
    let started = Instant::now();
    let report = log.clean(1_000_000_000, opts, end).expect("clean");
    let secs = started.elapsed().as_secs_f64();
    println!(
        "cleaner codec={codec:?} records={records} keys={KEYS} log={:.1} MB cleaned={:.1} MB -> {:.1} MB in {secs:.2} s = {:.1} MB/s, {:.0} records/s",
        size as f64 / 1e6,
        report.bytes_before as f64 / 1e6,
        report.bytes_after as f64 / 1e6,
        report.bytes_before as f64 / 1e6 / secs,
        records as f64 / secs
    );
}
