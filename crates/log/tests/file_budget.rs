//! Many partition logs under a small descriptor budget (`strata_log::file_cache`): the logs
//! hold no descriptors of their own, the cache never keeps more open than its budget, and
//! appends, rolls, fsyncs, reads and reopening all work while files are closed and reopened
//! underneath. Its own test binary, so the process-wide budget is not shared.

use kafka_protocol::records::Compression;
use strata_log::{file_cache, LogConfig, PartitionLog};
use strata_protocol::batch;
use strata_protocol::records::{encode_batch, PlainRecord};

const LOGS: usize = 120;
const BUDGET: usize = 16;

fn batch_of(tag: usize, i: usize) -> Vec<u8> {
    let value = format!("log {tag} batch {i}").repeat(8);
    let records = vec![PlainRecord::new(None, Some(value.as_bytes()), i as i64)];
    encode_batch(&records, Compression::None)
        .expect("encode")
        .to_vec()
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 600,
        segment_ms: i64::MAX,
        index_interval_bytes: 0,
    }
}

/// Every value in the log, in order.
fn values(log: &PartitionLog) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    // Each read returns at least one batch, so this ends within log_end_offset steps.
    while offset < log.log_end_offset() {
        let bytes = log.read(offset, 1 << 20, i64::MAX).expect("read");
        for item in batch::iter_batches(&bytes) {
            let (header, range) = item.expect("whole batches");
            out.push(bytes[range][61..].to_vec());
            offset = header.next_offset();
        }
    }
    out
}

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("/proc").count()
}

#[test]
fn many_logs_share_a_small_descriptor_budget() {
    file_cache::set_budget(BUDGET);
    let root = tempfile::tempdir().expect("tempdir");
    let dirs: Vec<_> = (0..LOGS)
        .map(|i| root.path().join(format!("t-{i}")))
        .collect();
    let before = open_descriptors();
    let mut logs: Vec<PartitionLog> = dirs
        .iter()
        .map(|d| PartitionLog::open(d, config(), 0).expect("open").0)
        .collect();
    // Rounds of one append to every log: each log rolls several segments, and every log is
    // evicted and reopened between two of its appends.
    for round in 0..8 {
        for (i, log) in logs.iter_mut().enumerate() {
            log.append(&batch_of(i, round), 0, None).expect("append");
            if round % 3 == 2 {
                log.sync_job()
                    .expect("something to sync")
                    .run()
                    .expect("fsync");
            }
        }
        let stats = file_cache::stats();
        assert!(stats.open <= BUDGET, "{stats:?}");
    }
    assert!(logs.iter().all(|l| l.segment_count() > 2));
    for log in &mut logs {
        if let Some(job) = log.sync_job() {
            job.run().expect("fsync");
        }
    }
    // No descriptor is held per log: the process holds about the budget more than before.
    let held = open_descriptors().saturating_sub(before);
    assert!(held <= BUDGET + 4, "{held} descriptors held by {LOGS} logs");
    let expected: Vec<Vec<Vec<u8>>> = logs.iter().map(values).collect();
    for (i, v) in expected.iter().enumerate() {
        assert_eq!(v.len(), 8, "log {i}");
    }
    assert!(file_cache::stats().evictions > 0);
    drop(logs);
    assert_eq!(
        file_cache::stats().open,
        0,
        "dropped logs leave nothing open"
    );

    // Reopened, every log reads the same, and the indexes written at seal time were trusted.
    let logs: Vec<PartitionLog> = dirs
        .iter()
        .map(|d| {
            let (log, report) = PartitionLog::open(d, config(), 0).expect("reopen");
            assert_eq!(report.rebuilt_indexes, 0, "{report:?}");
            assert_eq!(report.truncated_bytes, 0, "{report:?}");
            log
        })
        .collect();
    for (log, want) in logs.iter().zip(&expected) {
        assert_eq!(&values(log), want);
    }
    assert!(file_cache::stats().open <= BUDGET);
}
