//! A cleaning pass that copies without the log's lock, when the segment it is about to read
//! was deleted while the descriptor cache had closed its file: the reopen by path fails, and
//! the pass gives up quietly instead of reporting an error. Its own test binary, so the
//! process-wide descriptor budget is not shared.

use std::sync::Mutex;

use kafka_protocol::records::Compression;
use strata_log::{file_cache, CleanOptions, CleanStage, LogConfig, PartitionLog};
use strata_protocol::records::{encode_batch, PlainRecord};

const BUDGET: usize = 16;
const NOW: i64 = 1_700_000_000_000;
const OPTS: CleanOptions = CleanOptions {
    delete_retention_ms: 0,
    min_compaction_lag_ms: 0,
};

#[test]
fn a_segment_deleted_while_its_file_is_closed_abandons_the_pass() {
    file_cache::set_budget(BUDGET);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        segment_bytes: 300,
        segment_ms: i64::MAX,
        index_interval_bytes: 60,
    };
    let (mut log, _) = PartitionLog::open(dir.path(), config, 0).expect("open");
    for i in 0..80 {
        let (key, value) = (format!("k{}", i % 5), format!("v{i}"));
        let records = [PlainRecord::new(
            Some(key.as_bytes()),
            Some(value.as_bytes()),
            1,
        )];
        let batch = encode_batch(&records, Compression::None).expect("encode");
        log.append(&batch, 0, None).expect("append");
    }
    let bases = log.segment_base_offsets();
    // The key map reads every segment in order, so the first one's descriptor is closed
    // by the time it is read again.
    assert!(bases.len() > BUDGET + 2, "{} segments", bases.len());
    let end = log.log_end_offset();
    let log = Mutex::new(log);
    let mut deleted = false;
    let report = PartitionLog::clean_concurrently_with_hook(
        || Some(log.lock().expect("lock")),
        NOW,
        OPTS,
        end,
        usize::MAX,
        &mut |stage| {
            if stage == CleanStage::KeysMapped {
                assert!(file_cache::stats().evictions > 0);
                let mut log = log.lock().expect("lock");
                log.delete_records_before(bases[1]).expect("delete records");
                deleted = true;
            }
        },
    )
    .expect("the pass gives up quietly");
    assert!(deleted);
    assert!(
        report.abandoned && report.segments_cleaned == 0,
        "{report:?}"
    );
    for entry in std::fs::read_dir(dir.path()).expect("list") {
        let name = entry.expect("entry").file_name();
        let name = name.to_string_lossy();
        assert!(!name.ends_with(".cleaned"), "{name} left behind");
        assert!(!name.starts_with(&format!("{:020}.", bases[0])), "{name}");
    }
    let mut log = log.into_inner().expect("lock");
    let end = log.log_end_offset();
    let next = log.clean(NOW, OPTS, end).expect("the next pass");
    assert!(!next.abandoned && next.segments_cleaned > 0, "{next:?}");
}
