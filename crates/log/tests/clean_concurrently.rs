//! `PartitionLog::clean_concurrently`: the cleaner reads and copies without the caller's lock
//! and swaps under it, briefly.
//!
//! The log sits behind a `Mutex`, as in the broker. The pass's test hook runs at each stage
//! of the copy (key map built, each rewrite written), without the lock; there the tests act
//! on the log through its public API (appends from another thread, retention, DeleteRecords,
//! truncation, a second pass) and then check what the pass did. The stages are points in the
//! pass's own thread, so every interleaving here is deterministic: no sleeps, no timing.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use strata_log::{CleanOptions, CleanReport, CleanStage, LogConfig, LogError, PartitionLog};
use strata_protocol::batch;
use strata_protocol::records::{encode_batch, PlainRecord};

const NOW: i64 = 1_700_000_000_000;
const OPTS: CleanOptions = CleanOptions {
    delete_retention_ms: 60_000,
    min_compaction_lag_ms: 0,
};

/// (offset, key, value) of a record.
type Rec = (i64, String, Option<String>);

fn config() -> LogConfig {
    LogConfig {
        // About two of the test's batches a segment.
        segment_bytes: 300,
        segment_ms: i64::MAX,
        index_interval_bytes: 60,
    }
}

/// One batch of `(key, value)` records, with ancient timestamps (old enough to clean).
fn batch(records: &[(&str, Option<&str>)]) -> Vec<u8> {
    let records: Vec<PlainRecord> = records
        .iter()
        .enumerate()
        .map(|(i, (k, v))| PlainRecord::new(Some(k.as_bytes()), v.map(str::as_bytes), i as i64))
        .collect();
    encode_batch(&records, Compression::None)
        .expect("encodes")
        .to_vec()
}

/// Appends one batch of `records`; returns them with their offsets.
fn append(log: &mut PartitionLog, records: &[(&str, Option<&str>)]) -> Vec<Rec> {
    let info = log.append(&batch(records), 0, None).expect("append");
    records
        .iter()
        .enumerate()
        .map(|(i, (k, v))| {
            (
                info.base_offset + i as i64,
                k.to_string(),
                v.map(str::to_string),
            )
        })
        .collect()
}

/// A log of several closed segments with many superseded records: keys `k0`..`k4`, two
/// records a batch. Returns the log and its records.
fn build(dir: &Path) -> (PartitionLog, Vec<Rec>) {
    let (mut log, _) = PartitionLog::open(dir, config(), 0).expect("open");
    let mut model = Vec::new();
    for i in 0..24 {
        let (a, b) = (format!("k{}", i % 5), format!("k{}", (i + 2) % 5));
        let (va, vb) = (format!("v{i}a"), format!("v{i}b"));
        model.extend(append(
            &mut log,
            &[
                (a.as_str(), Some(va.as_str())),
                (b.as_str(), Some(vb.as_str())),
            ],
        ));
    }
    assert!(log.segment_base_offsets().len() >= 6, "several segments");
    (log, model)
}

/// Every record from the log start to the log end.
fn contents(log: &PartitionLog) -> Vec<Rec> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    let end = log.log_end_offset();
    while offset < end {
        let bytes = log.read(offset, 1 << 20, end).expect("read");
        if bytes.is_empty() {
            break;
        }
        // Past the last batch read (compaction leaves gaps in the offsets).
        let next = batch::iter_batches(&bytes)
            .map(|item| item.expect("whole batches").0.next_offset())
            .last()
            .expect("a batch");
        let text = |b: Bytes| String::from_utf8(b.to_vec()).expect("utf-8");
        let mut bytes = bytes;
        for set in RecordBatchDecoder::decode_all(&mut bytes).expect("whole, valid batches") {
            for r in set.records {
                if r.offset >= offset {
                    out.push((r.offset, text(r.key.expect("keyed")), r.value.map(text)));
                }
            }
        }
        offset = next;
    }
    out
}

/// What a pass over `records` leaves when it cleans every segment below `cleaned_below` with
/// a key map of every record below `high_watermark` (no tombstones here).
fn compacted(records: &[Rec], cleaned_below: i64, high_watermark: i64) -> Vec<Rec> {
    let mut latest = BTreeMap::new();
    for (offset, key, _) in records.iter().filter(|r| r.0 < high_watermark) {
        latest.insert(key.clone(), *offset);
    }
    records
        .iter()
        .filter(|(offset, key, _)| *offset >= cleaned_below || latest.get(key) == Some(offset))
        .cloned()
        .collect()
}

/// The records of `model` the log still holds: `[log start, log end)`.
fn remaining(log: &PartitionLog, model: &[Rec]) -> Vec<Rec> {
    let range = log.log_start_offset()..log.log_end_offset();
    model
        .iter()
        .filter(|r| range.contains(&r.0))
        .cloned()
        .collect()
}

/// The base offset of the active segment.
fn active_base(log: &PartitionLog) -> i64 {
    *log.segment_base_offsets().last().expect("a segment")
}

/// No rewrite is left behind in `dir`.
fn assert_no_leftovers(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("list") {
        let name = entry.expect("entry").file_name();
        let name = name.to_string_lossy();
        assert!(
            !name.ends_with(".cleaned") && !name.ends_with(".swap") && !name.ends_with(".tmp"),
            "{name} left behind"
        );
    }
}

/// Runs a pass on `log` with `hook` at each stage.
fn clean_with_hook(
    log: &Mutex<PartitionLog>,
    hook: &mut dyn FnMut(CleanStage),
) -> Result<CleanReport, LogError> {
    let hw = log.lock().expect("lock").log_end_offset();
    PartitionLog::clean_concurrently_with_hook(
        || Some(log.lock().expect("lock")),
        NOW,
        OPTS,
        hw,
        usize::MAX,
        hook,
    )
}

/// While the pass copies, another thread appends to the same log (new values of keys the
/// pass is compacting, and new keys) and its appends complete; the pass then swaps its
/// rewrites in. The result is exactly the pass's compaction of what it saw, followed by the
/// records appended meanwhile, intact; the latest value of every key survives; the log
/// reopens to the same records. A later pass then compacts the new records too.
#[test]
fn appends_go_on_while_the_pass_copies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, mut model) = build(dir.path());
    let hw = log.log_end_offset();
    let cleaned_below = active_base(&log);
    let log = Mutex::new(log);

    let (to_appender, requests) = mpsc::channel::<(String, String)>();
    let (appended_tx, appended) = mpsc::channel::<Result<i64, LogError>>();
    let mut stages = Vec::new();
    let mut during = Vec::new();
    let report = std::thread::scope(|s| {
        let log = &log;
        s.spawn(move || {
            for (key, value) in requests {
                let result = log
                    .lock()
                    .expect("lock")
                    .append(&batch(&[(key.as_str(), Some(value.as_str()))]), 0, None)
                    .map(|info| info.base_offset);
                appended_tx.send(result).expect("the pass waits for it");
            }
        });
        let mut hook = |stage: CleanStage| {
            assert!(log.try_lock().is_ok(), "the lock is free at {stage:?}");
            // A new value of a key being compacted, and a new key.
            for key in ["k0".to_string(), format!("new{}", stages.len())] {
                let value = format!("during-{}-{key}", stages.len());
                to_appender
                    .send((key.clone(), value.clone()))
                    .expect("appender");
                // Only a failure waits this long: the append finishes at once when the
                // lock is free (a pass holding it would make this time out).
                let offset = appended
                    .recv_timeout(Duration::from_secs(60))
                    .expect("the append finished while the pass copied")
                    .expect("the append succeeded");
                during.push((offset, key, Some(value)));
            }
            stages.push(stage);
        };
        let report = clean_with_hook(log, &mut hook).expect("clean");
        drop(to_appender);
        report
    });

    assert_eq!(stages[0], CleanStage::KeysMapped);
    assert!(stages.len() >= 3, "stages {stages:?}");
    assert!(!report.abandoned, "{report:?}");
    assert_eq!(report.segments_cleaned, stages.len() - 1, "{report:?}");
    assert!(report.records_removed > 0);
    assert!(
        during.iter().all(|r| r.0 >= hw),
        "appended after the snapshot"
    );
    model.extend(during.iter().cloned());

    let mut log = log.into_inner().expect("lock");
    let expected = compacted(&model, cleaned_below, hw);
    assert_eq!(contents(&log), expected);
    // The latest value of every key, the ones written during the pass included, is there.
    let latest: BTreeMap<&String, &Rec> = model.iter().map(|r| (&r.1, r)).collect();
    let got = contents(&log);
    for (key, record) in &latest {
        assert!(got.contains(record), "latest of {key}");
    }
    assert_no_leftovers(dir.path());

    // A later pass sees the new records and compacts up to its own snapshot.
    let hw = log.log_end_offset();
    let cleaned_below = active_base(&log);
    let report = log.clean(NOW, OPTS, hw).expect("second pass");
    assert!(!report.abandoned);
    let expected = compacted(&model, cleaned_below, hw);
    assert_eq!(contents(&log), expected);

    drop(log);
    let (log, _) = PartitionLog::open(dir.path(), config(), 0).expect("reopen");
    assert_eq!(contents(&log), expected);
}

/// What a test does to the log at one stage of the pass.
type Action = fn(&mut PartitionLog);

/// Runs a pass that does `action` to the log at `stage` (the first time it comes), checks
/// that the pass gives up without an error and leaves no file behind, that the log holds what
/// it held after the action (with the rewrites swapped in before it, if any), and that the
/// next pass compacts it fully. Returns the abandoned pass's report.
fn abandon_case(stage: CleanStage, action: Action) -> CleanReport {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, model) = build(dir.path());
    let hw = log.log_end_offset();
    let cleaned_below = active_base(&log);
    let log = Mutex::new(log);
    let mut acted = false;
    let mut hook = |at: CleanStage| {
        if at == stage && !acted {
            acted = true;
            action(&mut log.lock().expect("lock"));
        }
    };
    let report = clean_with_hook(&log, &mut hook).expect("the pass gives up quietly");
    assert!(acted, "the pass reached {stage:?}");
    assert!(report.abandoned, "{report:?}");
    assert_no_leftovers(dir.path());
    let mut log = log.into_inner().expect("lock");
    assert!(
        log.delete_horizons().is_empty(),
        "no horizon from an abandoned pass"
    );

    // The log holds what the action left, compacted by the segments swapped before it.
    let left = remaining(&log, &model);
    let got = contents(&log);
    if report.segments_cleaned == 0 {
        assert_eq!(got, left, "nothing swapped");
    } else {
        assert!(got.iter().all(|r| left.contains(r)), "nothing invented");
        let full = compacted(&left, cleaned_below, hw);
        assert!(full.iter().all(|r| got.contains(r)), "nothing needed lost");
    }

    // The next pass runs (the abandoned one is over) and does the whole job.
    let hw = log.log_end_offset();
    let active = active_base(&log);
    let next = log.clean(NOW, OPTS, hw).expect("next pass");
    assert!(!next.abandoned, "{next:?}");
    assert_eq!(contents(&log), compacted(&left, active, hw));
    assert_no_leftovers(dir.path());
    drop(log);
    let (log, _) = PartitionLog::open(dir.path(), config(), 0).expect("reopen");
    assert_eq!(contents(&log), compacted(&left, active, hw));
    report
}

/// The base offset of the `n`th segment.
fn base(log: &PartitionLog, n: usize) -> i64 {
    log.segment_base_offsets()[n]
}

/// DeleteRecords past the first segment while the pass is about to copy it: the segment's
/// file goes under the pass's reads (or the pass reads the unlinked file); either way no
/// rewrite is swapped in.
#[test]
fn delete_records_during_the_copy_abandons_the_pass() {
    let report = abandon_case(CleanStage::KeysMapped, |log| {
        let to = base(log, 1) + 1;
        log.delete_records_before(to).expect("delete records");
    });
    assert_eq!(report.segments_cleaned, 0);
}

/// Retention deleting old segments while the pass copies them.
#[test]
fn retention_during_the_copy_abandons_the_pass() {
    let report = abandon_case(CleanStage::KeysMapped, |log| {
        let hw = log.log_end_offset();
        let deleted = log
            .apply_retention(NOW, -1, (log.size_bytes() / 2) as i64, hw)
            .expect("retention");
        assert!(deleted.is_some(), "retention deleted segments");
    });
    assert_eq!(report.segments_cleaned, 0);
}

/// A replica's truncation into the first segment the pass copies: the file is cut under the
/// pass's reads, which fail; the pass gives up quietly rather than reporting the error.
#[test]
fn a_truncation_under_the_reads_abandons_the_pass() {
    let report = abandon_case(CleanStage::KeysMapped, |log| {
        // The cut is at the start of the first segment's second batch.
        let to = base(log, 0) + 2;
        log.truncate_to(to, NOW).expect("truncate");
        assert_eq!(log.log_end_offset(), to);
    });
    assert_eq!(report.segments_cleaned, 0);
}

/// A truncation after the first rewrite is written: its swap is refused and the file
/// discarded.
#[test]
fn a_truncation_before_the_swap_discards_the_rewrite() {
    let report = abandon_case(CleanStage::Copied(0), |log| {
        let to = base(log, 3);
        log.truncate_to(to, NOW).expect("truncate");
    });
    assert_eq!(report.segments_cleaned, 0);
}

/// Retention after the first rewrite was swapped in, before the second one's swap: the first
/// stays cleaned (as a crash there would leave it), the second is discarded.
#[test]
fn retention_between_two_swaps_keeps_the_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let second = {
        let (log, _) = build(dir.path());
        base(&log, 1)
    };
    drop(dir);
    let report = abandon_case(CleanStage::Copied(second), |log| {
        let to = base(log, 1);
        log.delete_records_before(to).expect("delete records");
    });
    assert_eq!(report.segments_cleaned, 1, "{report:?}");
}

/// A second pass on the same log while one copies finds it busy and does nothing; the first
/// one completes.
#[test]
fn one_pass_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, model) = build(dir.path());
    let hw = log.log_end_offset();
    let cleaned_below = active_base(&log);
    let log = Mutex::new(log);
    let mut second = None;
    let mut hook = |stage: CleanStage| {
        if stage == CleanStage::KeysMapped {
            second = Some(
                PartitionLog::clean_concurrently(
                    || Some(log.lock().expect("lock")),
                    NOW,
                    OPTS,
                    hw,
                    usize::MAX,
                )
                .expect("second pass"),
            );
        }
    };
    let report = clean_with_hook(&log, &mut hook).expect("clean");
    let second = second.expect("ran");
    assert!(
        second.abandoned && second.segments_cleaned == 0,
        "{second:?}"
    );
    assert!(
        !report.abandoned && report.segments_cleaned > 0,
        "{report:?}"
    );
    let log = log.into_inner().expect("lock");
    assert_eq!(contents(&log), compacted(&model, cleaned_below, hw));
}

/// A pass whose `lock` says the log is gone (the partition was deleted) stops and removes its
/// rewrite.
#[test]
fn a_log_going_away_stops_the_pass() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, model) = build(dir.path());
    let hw = log.log_end_offset();
    let log = Mutex::new(log);
    let gone = std::sync::atomic::AtomicBool::new(false);
    let report = PartitionLog::clean_concurrently_with_hook(
        || (!gone.load(std::sync::atomic::Ordering::SeqCst)).then(|| log.lock().expect("lock")),
        NOW,
        OPTS,
        hw,
        usize::MAX,
        &mut |stage| {
            if matches!(stage, CleanStage::Copied(_)) {
                gone.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        },
    )
    .expect("clean");
    assert!(
        report.abandoned && report.segments_cleaned == 0,
        "{report:?}"
    );
    assert_no_leftovers(dir.path());
    assert_eq!(contents(&log.into_inner().expect("lock")), model);
}

/// The index files a swap writes (from the index built while copying, without reading the
/// new file again) are byte for byte those a rebuild from the file makes.
#[test]
fn swapped_indexes_are_those_a_rebuild_makes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = PartitionLog::open(dir.path(), config(), 0).expect("open");
    // Each batch keeps one record (a unique key) and loses one (a key written again later),
    // so the rewritten segments keep several batches, each smaller (and half of them with a
    // smaller maxTimestamp).
    for i in 0..30 {
        let (unique, shared) = (format!("u{i}"), format!("k{}", i % 3));
        let (shared, unique) = ((shared.as_str(), Some("x")), (unique.as_str(), Some("y")));
        // The removed record is the later one (the largest timestamp) of every other batch.
        if i % 2 == 0 {
            append(&mut log, &[shared, unique]);
        } else {
            append(&mut log, &[unique, shared]);
        }
    }
    let hw = log.log_end_offset();
    let report = log.clean(NOW, OPTS, hw).expect("clean");
    assert!(report.segments_cleaned > 2);
    let bases = log.segment_base_offsets();
    let closed = &bases[..bases.len() - 1];
    let read_indexes = || -> Vec<(Vec<u8>, Vec<u8>)> {
        closed
            .iter()
            .map(|b| {
                let read = |ext: &str| {
                    std::fs::read(dir.path().join(format!("{b:020}.{ext}"))).expect("index")
                };
                (read("index"), read("timeindex"))
            })
            .collect()
    };
    let written = read_indexes();
    assert!(written.iter().any(|(o, t)| !o.is_empty() && !t.is_empty()));
    let before = contents(&log);
    drop(log);
    for b in closed {
        for ext in ["index", "timeindex"] {
            std::fs::remove_file(dir.path().join(format!("{b:020}.{ext}"))).expect("remove");
        }
    }
    let (log, report) = PartitionLog::open(dir.path(), config(), 0).expect("reopen");
    assert_eq!(report.rebuilt_indexes, closed.len());
    assert_eq!(read_indexes(), written);
    assert_eq!(contents(&log), before);
}
