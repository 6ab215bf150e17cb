//! Partition log behaviour: append/read, rolls, indexes, recovery from a torn tail.

use std::io::Write;

use bytes::Bytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use strata_log::{LogConfig, LogError, PartitionLog};
use strata_protocol::records::{encode_batch, PlainRecord};

fn batch(first_ts: i64, values: &[&str]) -> Vec<u8> {
    let records: Vec<PlainRecord> = values
        .iter()
        .enumerate()
        .map(|(i, v)| PlainRecord::new(None, Some(v.as_bytes()), first_ts + i as i64))
        .collect();
    encode_batch(&records, Compression::None)
        .expect("encodes")
        .to_vec()
}

fn values(bytes: Bytes) -> Vec<(i64, String)> {
    let mut b = bytes;
    RecordBatchDecoder::decode_all(&mut b)
        .expect("decodes")
        .into_iter()
        .flat_map(|s| s.records)
        .map(|r| {
            (
                r.offset,
                String::from_utf8(r.value.expect("value").to_vec()).expect("utf8"),
            )
        })
        .collect()
}

fn small() -> LogConfig {
    LogConfig {
        segment_bytes: 1000,
        segment_ms: i64::MAX,
        index_interval_bytes: 100,
    }
}

fn fill(log: &mut PartitionLog, n: usize) -> Vec<(i64, String)> {
    let mut expected = Vec::new();
    for i in 0..n {
        let v = format!("value-{i:04}");
        let b = batch(1000 + i as i64 * 10, &[&v, &format!("{v}-b")]);
        let info = log.append(&b, 0, None).expect("append");
        expected.push((info.base_offset, v.clone()));
        expected.push((info.base_offset + 1, format!("{v}-b")));
    }
    expected
}

fn read_everything(log: &PartitionLog) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    loop {
        let bytes = log.read(offset, 300, log.log_end_offset()).expect("read");
        if bytes.is_empty() {
            break;
        }
        for (o, v) in values(bytes) {
            if o >= offset {
                out.push((o, v));
                offset = o + 1;
            }
        }
    }
    out
}

#[test]
fn append_and_read_across_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = PartitionLog::open(dir.path(), small(), 0).expect("open");
    let expected = fill(&mut log, 50);
    assert!(log.segment_count() > 3, "rolled by size");
    assert_eq!(log.log_end_offset(), 100);
    assert_eq!(read_everything(&log), expected);
    // An offset inside a batch returns the whole batch.
    let got = values(log.read(41, 1, 100).expect("read"));
    assert_eq!(got[0].0, 40);
    // At least one batch even with a tiny budget; bounded by the high watermark.
    assert_eq!(values(log.read(0, 1, 100).expect("read")).len(), 2);
    assert!(log.read(0, 10_000, 0).expect("read").is_empty());
    let bounded = values(log.read(0, 100_000, 10).expect("read"));
    assert_eq!(bounded.last().expect("some").0, 9);
    assert!(log.read(100, 100, 100).expect("read").is_empty());
    assert!(matches!(
        log.read(101, 100, 100),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    drop(log);
    let (log, report) = PartitionLog::open(dir.path(), small(), 0).expect("reopen");
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(read_everything(&log), expected);
}

#[test]
fn timestamps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = PartitionLog::open(dir.path(), small(), 0).expect("open");
    fill(&mut log, 30);
    // batch i has timestamps 1000+10i and 1000+10i+1 at offsets 2i, 2i+1.
    assert_eq!(log.offset_for_timestamp(0).expect("ok"), Some((0, 1000)));
    assert_eq!(log.offset_for_timestamp(1001).expect("ok"), Some((1, 1001)));
    assert_eq!(
        log.offset_for_timestamp(1055).expect("ok"),
        Some((12, 1060))
    );
    assert_eq!(
        log.offset_for_timestamp(1291).expect("ok"),
        Some((59, 1291))
    );
    assert_eq!(log.offset_for_timestamp(1292).expect("ok"), None);
    assert_eq!(log.max_timestamp(), Some((59, 1291)));
    drop(log);
    let (log, _) = PartitionLog::open(dir.path(), small(), 0).expect("reopen");
    assert_eq!(
        log.offset_for_timestamp(1055).expect("ok"),
        Some((12, 1060))
    );
    assert_eq!(log.max_timestamp(), Some((59, 1291)));
}

#[test]
fn torn_tail_is_truncated_and_index_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        segment_bytes: 1 << 20,
        ..small()
    };
    let (mut log, _) = PartitionLog::open(dir.path(), config, 0).expect("open");
    let expected = fill(&mut log, 40);
    let end = log.log_end_offset();
    drop(log);
    let seg = dir.path().join(format!("{:020}.log", 0));
    let good_len = std::fs::metadata(&seg).expect("stat").len();
    let half = batch(5000, &["torn"]);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .expect("open");
    f.write_all(&half[..half.len() / 2]).expect("half a batch");
    drop(f);
    std::fs::remove_file(dir.path().join(format!("{:020}.index", 0))).expect("remove index");
    let (mut log, report) = PartitionLog::open(dir.path(), config, 0).expect("recover");
    assert_eq!(report.truncated_bytes, (half.len() / 2) as u64);
    assert_eq!(report.truncated_at_offset, Some(end));
    assert_eq!(std::fs::metadata(&seg).expect("stat").len(), good_len);
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(read_everything(&log), expected);
    // Index rebuilt: reads from the middle find their batch.
    assert_eq!(values(log.read(51, 1, end).expect("read"))[0].0, 50);
    assert!(
        std::fs::metadata(dir.path().join(format!("{:020}.index", 0)))
            .expect("index")
            .len()
            > 0
    );
    // Garbage (not a batch) after valid data.
    let b = batch(9000, &["after"]);
    let info = log.append(&b, 0, None).expect("append continues");
    assert_eq!(info.base_offset, end);
    drop(log);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .expect("open");
    f.write_all(&[0x55; 300]).expect("garbage");
    drop(f);
    let (log, report) = PartitionLog::open(dir.path(), config, 0).expect("recover");
    assert_eq!(report.truncated_bytes, 300);
    assert_eq!(log.log_end_offset(), end + 1);
    // A flipped byte in the last batch: its CRC fails, the batch goes.
    drop(log);
    let len = std::fs::metadata(&seg).expect("stat").len();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&seg)
        .expect("open");
    use std::os::unix::fs::FileExt;
    f.write_all_at(&[0xff], len - 2).expect("flip");
    drop(f);
    let (log, report) = PartitionLog::open(dir.path(), config, 0).expect("recover");
    assert!(report.truncated_bytes > 0);
    assert_eq!(log.log_end_offset(), end);
}

#[test]
fn damaged_old_index_is_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = PartitionLog::open(dir.path(), small(), 0).expect("open");
    let expected = fill(&mut log, 40);
    drop(log);
    let index = dir.path().join(format!("{:020}.index", 0));
    let mut bytes = std::fs::read(&index).expect("index");
    assert!(!bytes.is_empty());
    bytes.push(1);
    std::fs::write(&index, &bytes).expect("damage");
    let (log, report) = PartitionLog::open(dir.path(), small(), 0).expect("reopen");
    // The last segment's index is always rebuilt in memory, but it only counts as rebuilt
    // when the files on disk differed (after a clean close they do not).
    assert_eq!(
        report.rebuilt_indexes, 1,
        "the damaged old index: {report:?}"
    );
    assert_eq!(std::fs::read(&index).expect("index").len() % 8, 0);
    assert_eq!(read_everything(&log), expected);
}

#[test]
fn delete_records_advances_start_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = PartitionLog::open(dir.path(), small(), 0).expect("open");
    let expected = fill(&mut log, 50);
    let before = log.segment_count();
    assert_eq!(log.delete_records_before(61).expect("delete"), 61);
    assert!(
        log.segment_count() < before,
        "whole segments below the start are gone"
    );
    assert!(matches!(
        log.read(10, 100, 100),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    let got = read_everything(&log);
    assert_eq!(got, expected[61..].to_vec());
    assert!(log.delete_records_before(1000).is_err());
    drop(log);
    let (log, _) = PartitionLog::open(dir.path(), small(), 0).expect("reopen");
    assert_eq!(log.log_start_offset(), 61);
    assert_eq!(read_everything(&log), expected[61..].to_vec());
}

#[test]
fn time_roll_and_sync_jobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        segment_bytes: 1 << 20,
        segment_ms: 1000,
        index_interval_bytes: 4096,
    };
    let (mut log, _) = PartitionLog::open(dir.path(), config, 0).expect("open");
    assert!(log.sync_job().is_none(), "nothing to sync yet");
    let b = batch(1, &["a"]);
    log.append(&b, 10, None).expect("append");
    assert!(!log.maybe_roll(500).expect("roll check"));
    assert!(log.maybe_roll(2000).expect("roll"));
    assert_eq!(log.segment_count(), 2);
    assert!(!log
        .maybe_roll(5000)
        .expect("empty active segment does not roll"));
    let job = log.sync_job().expect("rolled segment must be synced");
    assert_eq!(job.run().expect("fsync"), 1);
    assert!(log.sync_job().is_none());
    let b = batch(1, &["b"]);
    let info = log.append(&b, 3000, Some(4242)).expect("append");
    assert_eq!(info.log_append_time, Some(4242));
    assert_eq!(log.sync_job().expect("dirty").run().expect("fsync"), 2);
    let read = log.read(1, 1000, 2).expect("read");
    let h = strata_protocol::batch::check_batch(&read, 0).expect("stamped batch is valid");
    assert!(h.timestamp_type_log_append());
    assert_eq!(h.max_timestamp, 4242);
}

#[test]
fn retention_by_time_and_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = PartitionLog::open(dir.path(), small(), 0).expect("open");
    // 50 batches at timestamps 1000, 1010, ... over several 1000-byte segments.
    let expected = fill(&mut log, 50);
    let end = log.log_end_offset();
    let segments = log.segment_count();
    assert!(segments > 3);
    // Nothing is old enough yet.
    assert_eq!(
        log.apply_retention(1000, 10_000, -1, end)
            .expect("retention"),
        None
    );
    // Records up to timestamp ~1200 are older than 100 ms at now=1300: whole segments go.
    let start = log
        .apply_retention(1300, 100, -1, end)
        .expect("retention")
        .expect("moved");
    assert!(start > 0 && start < end);
    assert!(log.segment_count() < segments);
    assert_eq!(read_everything(&log), expected[start as usize..].to_vec());
    // Nothing at or above the high watermark is deleted, however old.
    assert_eq!(
        log.apply_retention(1_000_000, 0, -1, start)
            .expect("retention"),
        None
    );
    // Size: keep at most ~1500 bytes; the active segment is never deleted by size.
    let before = log.log_start_offset();
    let moved = log.apply_retention(1300, -1, 1500, end).expect("retention");
    assert!(moved.is_some_and(|s| s > before));
    assert!(log.size_bytes() < 3000);
    assert_eq!(log.log_end_offset(), end);
    // Everything expired: the active segment is rolled and deleted too.
    let last = log
        .apply_retention(10_000_000, 100, -1, end)
        .expect("retention")
        .expect("moved");
    assert_eq!(last, end);
    assert!(read_everything(&log).is_empty());
    drop(log);
    let (log, _) = PartitionLog::open(dir.path(), small(), 0).expect("reopen");
    assert_eq!(log.log_start_offset(), end);
    assert_eq!(log.log_end_offset(), end);
}

#[test]
fn cleaning_with_a_bounded_key_map_is_correct_and_converges() {
    use strata_log::CleanOptions;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = PartitionLog::open(dir.path(), small(), 0).expect("open");
    // Keys a and b, each written 10 times, one record per batch, over several segments.
    for i in 0..10 {
        for key in [b"a", b"b"] {
            let v = format!("{}{i}", key[0] as char);
            let batch = encode_batch(
                &[PlainRecord::new(Some(key), Some(v.as_bytes()), 1000 + i)],
                Compression::None,
            )
            .expect("encodes")
            .to_vec();
            log.append(&batch, 0, None).expect("append");
        }
    }
    let tail = batch(5000, &["tail"]);
    log.append(&tail, 0, None).expect("append");
    let end = log.log_end_offset();
    let opts = CleanOptions {
        delete_retention_ms: i64::MAX,
        min_compaction_lag_ms: 0,
    };
    let count = |log: &PartitionLog, prefix: char| {
        read_everything(log)
            .iter()
            .filter(|(_, v)| v.starts_with(prefix))
            .count()
    };
    // Room for one key: that key is compacted, the other is left whole.
    log.clean_bounded(10_000, opts, end, 1).expect("clean");
    let (a, b) = (count(&log, 'a'), count(&log, 'b'));
    // (Records in the active segment are never cleaned, so "compacted" means fewer than 10.)
    assert!(
        (a < 10 && b == 10) || (a == 10 && b < 10),
        "one key compacted, the other untouched: a={a} b={b}"
    );
    // Unbounded, both end at their latest value.
    log.clean(10_000, opts, end).expect("clean");
    let values: Vec<String> = read_everything(&log).into_iter().map(|(_, v)| v).collect();
    assert!(values.contains(&"a9".to_string()) && values.contains(&"b9".to_string()));
    assert!(count(&log, 'a') < 10 && count(&log, 'b') < 10);
}

#[test]
fn recompression_honours_codec_levels() {
    let value: Vec<u8> = (0..4000).map(|i| (i % 13) as u8 + b'a').collect();
    let records: Vec<PlainRecord> = (0..50)
        .map(|i| PlainRecord::new(Some(b"k"), Some(&value), i))
        .collect();
    let plain = encode_batch(&records, Compression::None).expect("encodes");
    for (codec, low, high) in [
        (strata_protocol::batch::Compression::Gzip, 1, 9),
        (strata_protocol::batch::Compression::Zstd, 1, 19),
        (strata_protocol::batch::Compression::Lz4, 1, 17),
    ] {
        let fast = strata_log::recompress_batch(&plain, codec, Some(low)).expect("recompresses");
        let small = strata_log::recompress_batch(&plain, codec, Some(high)).expect("recompresses");
        let default = strata_log::recompress_batch(&plain, codec, None).expect("recompresses");
        for b in [&fast, &small, &default] {
            let h = strata_protocol::batch::check_batch(b, 0).expect("valid batch");
            assert_eq!(h.compression(), codec);
            let got = strata_protocol::records::record_timestamps(b).expect("decodes");
            assert_eq!(got.len(), 50, "{codec:?}");
        }
        assert!(
            small.len() <= fast.len(),
            "{codec:?}: level {high} is not larger than level {low}"
        );
    }
}

#[test]
fn cleaning_keeps_control_batches_byte_for_byte() {
    use strata_log::CleanOptions;
    use strata_protocol::batch::{
        ATTRIBUTES_OFFSET, CRC_OFFSET, CRC_START_OFFSET, PRODUCER_ID_OFFSET,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = PartitionLog::open(dir.path(), small(), 0).expect("open");
    let keyed = |v: &str, ts: i64| {
        encode_batch(
            &[PlainRecord::new(Some(b"a"), Some(v.as_bytes()), ts)],
            Compression::None,
        )
        .expect("encodes")
        .to_vec()
    };
    // A commit marker as a transaction coordinator writes it: control + transactional bits,
    // a producer id, one record whose key is (version 0, type 1 = commit).
    let mut marker = encode_batch(
        &[PlainRecord::new(
            Some(&[0, 0, 0, 1]),
            Some(&[0, 0, 0, 0, 0, 0]),
            5,
        )],
        Compression::None,
    )
    .expect("encodes")
    .to_vec();
    let attributes: i16 = (1 << 5) | (1 << 4);
    marker[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    marker[PRODUCER_ID_OFFSET..PRODUCER_ID_OFFSET + 8].copy_from_slice(&42i64.to_be_bytes());
    let crc = crc32c::crc32c(&marker[CRC_START_OFFSET..]);
    marker[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    let mut marker_offset = -1;
    for i in 0..30 {
        let b = keyed(&format!("a{i}"), i);
        log.append(&b, 0, None).expect("append");
        if i == 3 {
            let m = marker.clone();
            marker_offset = log.append(&m, 0, None).expect("append marker").base_offset;
        }
    }
    let tail = keyed("last", 100);
    log.append(&tail, 0, None).expect("append");
    let end = log.log_end_offset();
    let before = log.read(marker_offset, 1, end).expect("read marker");
    let opts = CleanOptions {
        delete_retention_ms: i64::MAX,
        min_compaction_lag_ms: 0,
    };
    let report = log.clean(10_000, opts, end).expect("clean");
    assert!(report.records_removed > 0, "superseded values went");
    let after = log.read(marker_offset, 1, end).expect("read marker");
    let h = strata_protocol::batch::check_batch(&after, 0).expect("valid");
    assert!(h.is_control() && h.base_offset == marker_offset);
    assert_eq!(
        &after[..h.total_len()],
        &before[..h.total_len()],
        "the marker is untouched"
    );
}

/// Base offsets of the segment files in `dir`, sorted.
fn segment_bases(dir: &std::path::Path) -> Vec<i64> {
    let mut bases: Vec<i64> = std::fs::read_dir(dir)
        .expect("list")
        .filter_map(|e| {
            let name = e.expect("entry").file_name().into_string().ok()?;
            name.strip_suffix(".log")?.parse().ok()
        })
        .collect();
    bases.sort_unstable();
    bases
}

/// Power loss can damage a closed segment (its pages were never fsynced): after an unclean
/// stop, every segment past the recovery point is validated and the log is cut at the first
/// bad batch, later segments included; segments wholly below the recovery point, and every
/// closed segment after a clean shutdown, are trusted as they are.
#[test]
fn unclean_open_validates_closed_segments_from_the_recovery_point() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = PartitionLog::open(dir.path(), small(), 0).expect("open");
    let expected = fill(&mut log, 50);
    drop(log);
    let bases = segment_bases(dir.path());
    assert!(bases.len() >= 4, "rolled by size: {bases:?}");
    // Damage the middle of the second segment (a lost page reads as zeroes).
    let victim = dir.path().join(format!("{:020}.log", bases[1]));
    let len = std::fs::metadata(&victim).expect("stat").len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&victim)
        .expect("open");
    use std::os::unix::fs::FileExt;
    f.write_all_at(&[0u8; 40], len / 2).expect("zero a page");
    drop(f);

    // A clean open trusts closed segments (the damage stays unseen until read).
    let (log, report) = PartitionLog::open(dir.path(), small(), 0).expect("clean open");
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(log.log_end_offset(), 100);
    drop(log);

    // Recovery point past the damaged segment: it is trusted too.
    let (log, report) =
        PartitionLog::open_after_crash(dir.path(), small(), 0, bases[2]).expect("open");
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(log.log_end_offset(), 100);
    drop(log);

    // Recovery point inside it: cut at the first bad batch, later segments gone.
    let (mut log, report) =
        PartitionLog::open_after_crash(dir.path(), small(), 0, bases[1]).expect("recover");
    assert!(report.truncated_bytes > 0);
    let end = log.log_end_offset();
    assert!(
        end > bases[1] && end < bases[2],
        "cut inside the damaged segment: {end}"
    );
    assert_eq!(segment_bases(dir.path()), bases[..2].to_vec());
    let kept: Vec<(i64, String)> = expected.iter().filter(|(o, _)| *o < end).cloned().collect();
    assert_eq!(read_everything(&log), kept);
    // Appends continue at the cut, and a reopen keeps everything.
    let info = log
        .append(&batch(9000, &["after"]), 0, None)
        .expect("append");
    assert_eq!(info.base_offset, end);
    drop(log);
    let (log, report) = PartitionLog::open_after_crash(dir.path(), small(), 0, 0).expect("reopen");
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(log.log_end_offset(), end + 1);
}

/// The `partitionLeaderEpoch` of every batch, read from the segment files.
fn stamped_epochs(dir: &std::path::Path) -> Vec<(i64, i32)> {
    let mut out = Vec::new();
    for base in segment_bases(dir) {
        let bytes = std::fs::read(dir.join(format!("{base:020}.log"))).expect("read");
        let mut at = 0;
        while at < bytes.len() {
            let base_offset = i64::from_be_bytes(bytes[at..at + 8].try_into().expect("8"));
            let len = i32::from_be_bytes(bytes[at + 8..at + 12].try_into().expect("4"));
            let epoch = i32::from_be_bytes(bytes[at + 12..at + 16].try_into().expect("4"));
            out.push((base_offset, epoch));
            at += 12 + len as usize;
        }
    }
    out
}

/// Every appended batch carries the leader epoch; the epoch cache records where each epoch
/// starts, survives a reopen, answers OffsetForLeaderEpoch, and follows truncation.
#[test]
fn leader_epochs_are_stamped_checkpointed_and_truncated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = PartitionLog::open(dir.path(), small(), 0).expect("open");
    log.set_leader_epoch(0).expect("epoch");
    fill(&mut log, 10); // offsets 0..20, epoch 0
    log.set_leader_epoch(3).expect("epoch");
    fill(&mut log, 10); // 20..40, epoch 3
    log.set_leader_epoch(5).expect("epoch");
    let b = batch(5000, &["x"]);
    let with_time = log.append(&b, 0, Some(77)).expect("append"); // LogAppendTime copy path
    assert_eq!(with_time.base_offset, 40);
    fill(&mut log, 5); // 41..51
    assert_eq!(log.leader_epochs(), &[(0, 0), (3, 20), (5, 40)]);
    let stamped = stamped_epochs(dir.path());
    assert!(
        stamped.iter().all(|(o, e)| *e
            == if *o < 20 {
                0
            } else if *o < 40 {
                3
            } else {
                5
            }),
        "{stamped:?}"
    );
    assert_eq!(log.end_offset_for_epoch(5), (5, 51));
    assert_eq!(log.end_offset_for_epoch(4), (3, 40));
    assert_eq!(log.end_offset_for_epoch(0), (0, 20));
    assert_eq!(log.end_offset_for_epoch(9), (-1, -1));
    drop(log);

    let (mut log, _) = PartitionLog::open(dir.path(), small(), 0).expect("reopen");
    assert_eq!(log.leader_epochs(), &[(0, 0), (3, 20), (5, 40)]);
    let expected = read_everything(&log);
    // Cut inside a batch (offset 31 is the second record of the batch at 30): the whole batch
    // goes, later segments too.
    let end = log.truncate_to(31, 0).expect("truncate");
    assert_eq!(end, 30);
    assert_eq!(log.log_end_offset(), 30);
    assert_eq!(log.leader_epochs(), &[(0, 0), (3, 20)]);
    let kept: Vec<(i64, String)> = expected.into_iter().filter(|(o, _)| *o < 30).collect();
    assert_eq!(read_everything(&log), kept);
    // Appends go on at the cut, in a new epoch.
    log.set_leader_epoch(7).expect("epoch");
    assert_eq!(
        log.append(&batch(6000, &["y"]), 0, None)
            .expect("append")
            .base_offset,
        30
    );
    assert_eq!(log.leader_epochs(), &[(0, 0), (3, 20), (7, 30)]);
    drop(log);
    let (log, report) = PartitionLog::open_after_crash(dir.path(), small(), 0, 0).expect("reopen");
    assert_eq!(report.truncated_bytes, 0, "the truncation left a valid log");
    assert_eq!(log.log_end_offset(), 31);
    assert_eq!(log.leader_epochs(), &[(0, 0), (3, 20), (7, 30)]);
    assert!(matches!(
        PartitionLog::open(dir.path(), small(), 0)
            .expect("open")
            .0
            .truncate_to(-1, 0),
        Err(LogError::OffsetOutOfRange { .. })
    ));

    // DeleteRecords moves the first epoch's start with the log start.
    let (mut log, _) = PartitionLog::open(dir.path(), small(), 0).expect("open");
    log.delete_records_before(25).expect("delete");
    assert_eq!(log.leader_epochs(), &[(3, 25), (7, 30)]);
}

/// A log written before epochs were recorded (no checkpoint) is attributed to the current
/// epoch from its start, so it never reads as truncated.
#[test]
fn a_log_without_epochs_is_attributed_to_the_current_epoch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = PartitionLog::open(dir.path(), small(), 0).expect("open");
    fill(&mut log, 5);
    drop(log);
    std::fs::remove_file(dir.path().join("leader-epoch-checkpoint")).expect("remove");
    let (mut log, _) = PartitionLog::open(dir.path(), small(), 0).expect("reopen");
    assert!(log.leader_epochs().is_empty());
    assert_eq!(log.end_offset_for_epoch(2), (-1, -1));
    log.set_leader_epoch(2).expect("epoch");
    assert_eq!(log.leader_epochs(), &[(2, 0)]);
    assert_eq!(log.end_offset_for_epoch(2), (2, 10));
}

/// A follower's copy: batches read from a leader's log and appended with `append_replicated`
/// keep their offsets and epoch stamps, extend the epoch cache (surviving a reopen), read back
/// the same; a batch that does not continue the log end is refused and nothing is written.
#[test]
fn replicated_appends_keep_offsets_and_epochs() {
    let (leader_dir, follower_dir) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let (mut leader, _) = PartitionLog::open(leader_dir.path(), small(), 0).expect("open");
    leader.set_leader_epoch(0).expect("epoch");
    fill(&mut leader, 8); // offsets 0..16, epoch 0
    leader.set_leader_epoch(4).expect("epoch");
    fill(&mut leader, 8); // 16..32, epoch 4
    let (mut follower, _) = PartitionLog::open(follower_dir.path(), small(), 0).expect("open");
    // Fetch-sized chunks of whole batches, some spanning both epochs.
    let mut offset = 0;
    while offset < leader.log_end_offset() {
        let bytes = leader
            .read(offset, 250, leader.log_end_offset())
            .expect("read");
        let info = follower.append_replicated(&bytes, 0).expect("append");
        assert_eq!(info.base_offset, offset);
        offset = info.last_offset + 1;
        assert_eq!(follower.log_end_offset(), offset);
        // The same chunk again does not continue the log: refused, nothing written.
        match follower.append_replicated(&bytes, 0) {
            Err(LogError::OffsetOutOfRange { end, .. }) => assert_eq!(end, offset),
            other => panic!("a repeated chunk was not refused: {other:?}"),
        }
        assert_eq!(follower.log_end_offset(), offset);
    }
    assert_eq!(follower.leader_epochs(), &[(0, 0), (4, 16)]);
    assert_eq!(
        stamped_epochs(follower_dir.path()),
        stamped_epochs(leader_dir.path())
    );
    assert_eq!(read_everything(&follower), read_everything(&leader));
    drop(follower);
    let (follower, _) = PartitionLog::open(follower_dir.path(), small(), 0).expect("reopen");
    assert_eq!(follower.leader_epochs(), &[(0, 0), (4, 16)]);
    assert_eq!(follower.end_offset_for_epoch(0), (0, 16));
    assert_eq!(read_everything(&follower), read_everything(&leader));
}
