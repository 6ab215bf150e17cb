//! Integration tests of `PartitionLog` against real files in a temporary directory.

use kafka_protocol::records::Compression;
use strata_log::{LogConfig, LogError, PartitionLog};
use strata_protocol::batch::{self, BatchHeader};
use strata_protocol::records::{encode_batch, PlainRecord};

/// A valid magic-2 batch of `records` records with timestamps `ts, ts + 1, ...` and values of
/// `value_len` bytes, encoded by kafka-protocol (base offset 0, as a producer sends it).
fn batch(records: usize, ts: i64, value_len: usize) -> Vec<u8> {
    let value = vec![b'v'; value_len];
    let records: Vec<PlainRecord> = (0..records)
        .map(|i| PlainRecord::new(None, Some(&value), ts + i as i64))
        .collect();
    encode_batch(&records, Compression::None)
        .expect("encode")
        .to_vec()
}

fn config(segment_bytes: u64, index_interval_bytes: u32) -> LogConfig {
    LogConfig {
        segment_bytes,
        segment_ms: i64::MAX,
        index_interval_bytes,
    }
}

fn headers(bytes: &[u8]) -> Vec<BatchHeader> {
    batch::iter_batches(bytes)
        .map(|r| r.expect("read returns whole valid batches").0)
        .collect()
}

/// Appends one batch of `records` records; returns (base, last).
fn append(log: &mut PartitionLog, records: usize, ts: i64) -> (i64, i64) {
    let b = batch(records, ts, 100);
    let info = log.append(&b, 0, None).expect("append");
    (info.base_offset, info.last_offset)
}

/// Reads the whole log batch by batch from `from`, checking density; returns the headers.
fn read_all(log: &PartitionLog, from: i64) -> Vec<BatchHeader> {
    let mut out: Vec<BatchHeader> = Vec::new();
    let mut offset = from;
    while offset < log.log_end_offset() {
        let bytes = log.read(offset, 1 << 20, i64::MAX).expect("read");
        let hs = headers(&bytes);
        assert!(!hs.is_empty(), "read at {offset} returned nothing");
        for h in hs {
            if let Some(prev) = out.last() {
                assert_eq!(h.base_offset, prev.last_offset() + 1, "offsets are dense");
            }
            out.push(h);
        }
        offset = out.last().expect("non-empty").last_offset() + 1;
    }
    out
}

#[test]
fn append_and_read_across_segment_rolls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, report) = PartitionLog::open(dir.path(), config(1000, 200), 0).expect("open");
    assert_eq!(report.segments, 1);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));

    let mut expected = Vec::new();
    for i in 0..40 {
        let records = 1 + i % 4;
        let (base, last) = append(&mut log, records, 1_000 + i as i64);
        assert_eq!(last - base + 1, records as i64);
        expected.push((base, last));
    }
    assert_eq!(expected[0].0, 0);
    assert_eq!(log.log_end_offset(), expected.last().expect("some").1 + 1);
    assert!(
        log.segment_count() > 5,
        "small segments roll: {}",
        log.segment_count()
    );

    let read: Vec<(i64, i64)> = read_all(&log, 0)
        .iter()
        .map(|h| (h.base_offset, h.last_offset()))
        .collect();
    assert_eq!(read, expected);

    // Every offset reads the batch that contains it first.
    for offset in 0..log.log_end_offset() {
        let bytes = log.read(offset, 1, i64::MAX).expect("read");
        let hs = headers(&bytes);
        assert_eq!(hs.len(), 1);
        assert!(hs[0].base_offset <= offset && offset <= hs[0].last_offset());
    }
    let files: Vec<String> = std::fs::read_dir(dir.path())
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(files.contains(&"00000000000000000000.log".to_string()));
    assert!(files.contains(&"00000000000000000000.index".to_string()));
    assert!(files.contains(&"00000000000000000000.timeindex".to_string()));
}

#[test]
fn read_honours_max_bytes_and_the_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = PartitionLog::open(dir.path(), config(1 << 20, 0), 0).expect("open");
    let one = batch(3, 10, 100).len();
    for i in 0..5 {
        append(&mut log, 3, 10 + i);
    }
    // Offset 4 is inside the second batch [3, 5]: the whole batch comes back.
    let hs = headers(&log.read(4, one, i64::MAX).expect("read"));
    assert_eq!(hs.len(), 1);
    assert_eq!(hs[0].base_offset, 3);
    // max_bytes smaller than one batch still returns one whole batch.
    let bytes = log.read(0, 1, i64::MAX).expect("read");
    assert_eq!(bytes.len(), one);
    // max_bytes of two and a half batches returns two.
    assert_eq!(
        headers(&log.read(0, one * 5 / 2, i64::MAX).expect("read")).len(),
        2
    );
    assert_eq!(
        headers(&log.read(0, usize::MAX / 2, i64::MAX).expect("read")).len(),
        5
    );
    // The bound (high watermark) excludes any batch reaching it.
    assert_eq!(headers(&log.read(0, 1 << 20, 7).expect("read")).len(), 2);
    assert_eq!(headers(&log.read(0, 1 << 20, 6).expect("read")).len(), 2);
    assert_eq!(headers(&log.read(0, 1 << 20, 5).expect("read")).len(), 1);
    assert!(log.read(0, 1 << 20, 2).expect("read").is_empty());
    assert!(log.read(4, 1 << 20, 5).expect("read").is_empty());
    // The end reads as empty; past it or below the start is out of range.
    assert!(log.read(15, 1 << 20, i64::MAX).expect("read").is_empty());
    assert!(matches!(
        log.read(16, 1 << 20, i64::MAX),
        Err(LogError::OffsetOutOfRange {
            offset: 16,
            start: 0,
            end: 15
        })
    ));
    assert!(matches!(
        log.read(-1, 1, i64::MAX),
        Err(LogError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn offsets_by_timestamp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = PartitionLog::open(dir.path(), config(600, 0), 0).expect("open");
    assert_eq!(log.offset_for_timestamp(0).expect("lookup"), None);
    assert_eq!(log.max_timestamp(), None);
    // Batches of 4 records; batch i has timestamps 1000*i .. 1000*i + 3, except a dip.
    let stamps = [1_000, 2_000, 3_000, 500, 4_000, 5_000, 6_000];
    for ts in stamps {
        append(&mut log, 4, ts);
    }
    assert!(log.segment_count() > 2);
    // Exact record: timestamp 2002 is the third record of the second batch (offset 6).
    assert_eq!(
        log.offset_for_timestamp(2_002).expect("lookup"),
        Some((6, 2_002))
    );
    assert_eq!(
        log.offset_for_timestamp(0).expect("lookup"),
        Some((0, 1_000))
    );
    // 3_500 is first reached by batch 4 (offsets 16..19, timestamps 4000..4003).
    assert_eq!(
        log.offset_for_timestamp(3_500).expect("lookup"),
        Some((16, 4_000))
    );
    assert_eq!(
        log.offset_for_timestamp(6_003).expect("lookup"),
        Some((27, 6_003))
    );
    assert_eq!(log.offset_for_timestamp(6_004).expect("lookup"), None);
    // The largest timestamp, at the last offset of its batch.
    assert_eq!(log.max_timestamp(), Some((27, 6_003)));

    // After DeleteRecords, nothing below the start is returned.
    log.delete_records_before(5).expect("delete");
    assert_eq!(
        log.offset_for_timestamp(0).expect("lookup"),
        Some((5, 2_001))
    );

    // The answers survive a reopen (closed segments' time indexes are loaded from disk).
    drop(log);
    let (log, report) = PartitionLog::open(dir.path(), config(600, 0), 0).expect("reopen");
    assert_eq!(report.rebuilt_indexes, 0);
    assert_eq!(
        log.offset_for_timestamp(3_500).expect("lookup"),
        Some((16, 4_000))
    );
    assert_eq!(log.max_timestamp(), Some((27, 6_003)));
}

#[test]
fn log_append_time_stamps_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = PartitionLog::open(dir.path(), LogConfig::default(), 0).expect("open");
    let b = batch(2, 5, 10);
    let info = log.append(&b, 77, Some(123_456)).expect("append");
    assert_eq!(info.log_append_time, Some(123_456));
    assert_eq!(info.max_timestamp, 123_456);
    assert_eq!(info.offset_of_max_timestamp, 1);
    let hs = headers(&log.read(0, 1 << 20, i64::MAX).expect("read"));
    assert!(hs[0].timestamp_type_log_append());
    assert_eq!(hs[0].max_timestamp, 123_456);
}

#[test]
fn multi_batch_append_and_invalid_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = PartitionLog::open(dir.path(), LogConfig::default(), 0).expect("open");
    let bytes = [batch(2, 1, 10), batch(3, 2, 10)].concat();
    let info = log.append(&bytes, 0, None).expect("append");
    assert_eq!((info.base_offset, info.last_offset), (0, 4));
    let hs = headers(&log.read(0, 1 << 20, i64::MAX).expect("read"));
    assert_eq!(
        hs.iter().map(|h| h.base_offset).collect::<Vec<_>>(),
        vec![0, 2]
    );

    let mut corrupt = batch(2, 1, 10);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    assert!(matches!(
        log.append(&corrupt, 0, None),
        Err(LogError::InvalidBatches(_))
    ));
    assert!(matches!(
        log.append(&[], 0, None),
        Err(LogError::InvalidBatches(_))
    ));
    assert_eq!(log.log_end_offset(), 5);
}

#[test]
fn reopen_after_clean_close_keeps_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = PartitionLog::open(dir.path(), config(700, 100), 0).expect("open");
    for i in 0..20 {
        append(&mut log, 2, i);
    }
    let before = read_all(&log, 0);
    let (segments, end, size) = (log.segment_count(), log.log_end_offset(), log.size_bytes());
    drop(log);
    let (mut log, report) = PartitionLog::open(dir.path(), config(700, 100), 0).expect("reopen");
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(report.truncated_at_offset, None);
    assert_eq!(report.rebuilt_indexes, 0);
    assert_eq!(report.segments, segments);
    assert_eq!((log.log_end_offset(), log.size_bytes()), (end, size));
    assert_eq!(read_all(&log, 0), before);
    assert_eq!(append(&mut log, 1, 0), (end, end));
}

/// The crash test: garbage and half a batch at the tail of the last segment, its index gone.
#[test]
fn recovery_truncates_a_torn_tail_and_rebuilds_the_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(2_000, 100);
    let (mut log, _) = PartitionLog::open(dir.path(), cfg, 0).expect("open");
    for i in 0..25 {
        append(&mut log, 3, i);
    }
    let end = log.log_end_offset();
    let good_size = log.size_bytes();
    let before = read_all(&log, 0);
    let active_base = before
        .iter()
        .map(|h| h.base_offset)
        .filter(|b| dir.path().join(format!("{b:020}.log")).exists())
        .max()
        .expect("an active segment");
    drop(log);

    let log_path = dir.path().join(format!("{active_base:020}.log"));
    let mut tail = vec![0xAB; 37];
    let half = batch(4, 99, 100);
    tail.extend_from_slice(&half[..half.len() / 2]);
    let mut data = std::fs::read(&log_path).expect("read segment");
    data.extend_from_slice(&tail);
    std::fs::write(&log_path, &data).expect("append garbage");
    std::fs::write(
        dir.path().join(format!("{active_base:020}.index")),
        b"garbage",
    )
    .expect("corrupt index");
    std::fs::remove_file(dir.path().join(format!("{active_base:020}.timeindex")))
        .expect("rm timeindex");

    let (mut log, report) = PartitionLog::open(dir.path(), cfg, 0).expect("recover");
    assert_eq!(report.truncated_bytes, tail.len() as u64);
    assert_eq!(report.truncated_at_offset, Some(end));
    assert!(report.rebuilt_indexes >= 1);
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(log.size_bytes(), good_size);
    assert_eq!(read_all(&log, 0), before);
    for offset in 0..end {
        let hs = headers(&log.read(offset, 1, i64::MAX).expect("read"));
        assert!(hs[0].base_offset <= offset && offset <= hs[0].last_offset());
    }
    assert_eq!(append(&mut log, 2, 0), (end, end + 1));
    assert_eq!(read_all(&log, 0).len(), before.len() + 1);

    // A second open finds nothing more to repair.
    drop(log);
    let (_, report) = PartitionLog::open(dir.path(), cfg, 0).expect("reopen");
    assert_eq!((report.truncated_bytes, report.rebuilt_indexes), (0, 0));
}

#[test]
fn recovery_cuts_at_a_corrupt_crc_in_the_middle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = PartitionLog::open(dir.path(), LogConfig::default(), 0).expect("open");
    let one = batch(1, 0, 100).len();
    for i in 0..5 {
        append(&mut log, 1, i);
    }
    drop(log);
    let path = dir.path().join(format!("{:020}.log", 0));
    let mut data = std::fs::read(&path).expect("read");
    data[2 * one + 70] ^= 0xFF; // inside the third batch's records
    std::fs::write(&path, &data).expect("write");
    let (log, report) = PartitionLog::open(dir.path(), LogConfig::default(), 0).expect("recover");
    assert_eq!(log.log_end_offset(), 2);
    assert_eq!(report.truncated_at_offset, Some(2));
    assert_eq!(report.truncated_bytes, 3 * one as u64);
}

#[test]
fn a_damaged_old_index_is_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(1_500, 100);
    let (mut log, _) = PartitionLog::open(dir.path(), cfg, 0).expect("open");
    for i in 0..30 {
        append(&mut log, 2, i);
    }
    assert!(log.segment_count() >= 3);
    let before = read_all(&log, 0);
    drop(log);
    let first_index = dir.path().join(format!("{:020}.index", 0));
    let original = std::fs::read(&first_index).expect("read index");
    assert!(!original.is_empty());
    // Wrong size: not a multiple of 8.
    std::fs::write(&first_index, &original[..original.len() - 3]).expect("truncate index");
    let (log, report) = PartitionLog::open(dir.path(), cfg, 0).expect("reopen");
    assert_eq!(report.rebuilt_indexes, 1);
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(std::fs::read(&first_index).expect("read index"), original);
    assert_eq!(read_all(&log, 0), before);
    drop(log);
    // Positions past the end of the log, and a missing time index.
    let mut bad = original.clone();
    bad[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
    std::fs::write(&first_index, &bad).expect("write index");
    std::fs::remove_file(dir.path().join(format!("{:020}.timeindex", 0))).expect("rm");
    let (log, report) = PartitionLog::open(dir.path(), cfg, 0).expect("reopen");
    assert_eq!(report.rebuilt_indexes, 1);
    assert_eq!(read_all(&log, 0), before);
}

#[test]
fn delete_records_before_moves_the_start_and_deletes_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(800, 100);
    let (mut log, _) = PartitionLog::open(dir.path(), cfg, 0).expect("open");
    for i in 0..20 {
        append(&mut log, 2, i);
    }
    let segments = log.segment_count();
    let end = log.log_end_offset();
    assert!(matches!(
        log.delete_records_before(end + 1),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(log.delete_records_before(17).expect("delete"), 17);
    assert_eq!(log.log_start_offset(), 17);
    assert!(log.segment_count() < segments);
    assert!(!dir.path().join(format!("{:020}.log", 0)).exists());
    assert!(matches!(
        log.read(16, 1, i64::MAX),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    // Offset 17 sits inside the batch [16, 17]: that whole batch is returned.
    assert_eq!(
        headers(&log.read(17, 1, i64::MAX).expect("read"))[0].base_offset,
        16
    );
    // Going backwards changes nothing.
    assert_eq!(log.delete_records_before(3).expect("noop"), 17);
    drop(log);

    let (mut log, _) = PartitionLog::open(dir.path(), cfg, 0).expect("reopen");
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (17, end));
    assert_eq!(
        read_all(&log, 17).last().expect("some").last_offset(),
        end - 1
    );

    // Deleting everything rolls the active segment away; appends continue at the end.
    assert_eq!(log.delete_records_before(end).expect("delete all"), end);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.size_bytes(), 0);
    assert!(log.read(end, 1, i64::MAX).expect("read").is_empty());
    assert_eq!(append(&mut log, 1, 0), (end, end));
    drop(log);
    let (log, _) = PartitionLog::open(dir.path(), cfg, 0).expect("reopen");
    assert_eq!(
        (log.log_start_offset(), log.log_end_offset()),
        (end, end + 1)
    );
}

#[test]
fn time_based_roll() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        segment_bytes: 1 << 30,
        segment_ms: 1_000,
        index_interval_bytes: 4096,
    };
    let (mut log, _) = PartitionLog::open(dir.path(), cfg, 0).expect("open");
    // An empty segment never rolls by time.
    assert!(!log.maybe_roll(1_000_000).expect("roll check"));
    let b = batch(1, 0, 10);
    log.append(&b, 10_000, None).expect("append");
    assert!(!log.maybe_roll(10_999).expect("roll check"));
    assert!(log.maybe_roll(11_000).expect("roll check"));
    assert_eq!(log.segment_count(), 2);
    assert!(dir.path().join(format!("{:020}.log", 1)).exists());
    // An append after segment.ms rolls first, too.
    let b = batch(1, 0, 10);
    log.append(&b, 20_000, None).expect("append");
    let b = batch(1, 0, 10);
    log.append(&b, 21_500, None).expect("append");
    assert_eq!(log.segment_count(), 3);
    assert_eq!(log.log_end_offset(), 3);
}

#[test]
fn sync_jobs_cover_rolled_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = PartitionLog::open(dir.path(), config(500, 100), 0).expect("open");
    assert!(log.sync_job().is_none());
    for i in 0..10 {
        append(&mut log, 1, i);
    }
    assert!(log.segment_count() > 1);
    let job = log.sync_job().expect("something to sync");
    assert_eq!(job.end_offset(), 10);
    assert!(log.sync_job().is_none(), "the obligation moved to the job");
    assert_eq!(job.run().expect("fsync"), 10);
    append(&mut log, 1, 0);
    assert_eq!(log.sync_job().expect("job").run().expect("fsync"), 11);
}

#[test]
fn delete_removes_the_directory() {
    let parent = tempfile::tempdir().expect("tempdir");
    let dir = parent.path().join("topic-0");
    let (mut log, _) = PartitionLog::open(&dir, LogConfig::default(), 0).expect("open");
    append(&mut log, 1, 0);
    assert_eq!(log.dir(), dir.as_path());
    log.delete().expect("delete");
    assert!(!dir.exists());
}

#[test]
fn damage_in_a_closed_segment_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(600, 100);
    let (mut log, _) = PartitionLog::open(dir.path(), cfg, 0).expect("open");
    for i in 0..10 {
        append(&mut log, 1, i);
    }
    assert!(log.segment_count() > 2);
    drop(log);
    // Give the first batch of the first segment an absurd length.
    let path = dir.path().join(format!("{:020}.log", 0));
    let mut data = std::fs::read(&path).expect("read");
    data[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
    std::fs::write(&path, &data).expect("write");
    let (log, _) = PartitionLog::open(dir.path(), cfg, 0).expect("open");
    assert!(matches!(
        log.read(0, 1 << 20, i64::MAX),
        Err(LogError::Corrupt { .. })
    ));
    assert!(matches!(
        log.offset_for_timestamp(0),
        Err(LogError::Corrupt { .. })
    ));
    // Later segments still read.
    let last = log.log_end_offset() - 1;
    assert!(!log.read(last, 1, i64::MAX).expect("read").is_empty());
}
