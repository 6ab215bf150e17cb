//! Log compaction (`PartitionLog::clean`) against a simple model: the latest record per key.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use bytes::{Bytes, BytesMut};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strata_log::{CleanOptions, LogConfig, PartitionLog};
use strata_protocol::batch;

const CODECS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

/// A record as the test writes it and reads it back.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    offset: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
    ts: i64,
    headers: Vec<(String, Option<Bytes>)>,
}

/// One appended batch: its records (offsets assigned) and codec.
#[derive(Debug, Clone)]
struct Appended {
    records: Vec<Rec>,
}

fn encode(records: &[Rec], codec: Compression, producer_id: i64) -> Vec<u8> {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut headers = kafka_protocol::indexmap::IndexMap::new();
            for (k, v) in &r.headers {
                headers.insert(StrBytes::from_string(k.clone()), v.clone());
            }
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id,
                producer_epoch: if producer_id >= 0 { 0 } else { -1 },
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: if producer_id >= 0 {
                    i as i32
                } else {
                    i as i32 - 1
                },
                timestamp: r.ts,
                key: r.key.clone(),
                value: r.value.clone(),
                headers,
            }
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: codec,
        },
    )
    .expect("encode");
    assert_eq!(batch::iter_batches(&buf).count(), 1, "one batch");
    buf.to_vec()
}

fn config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        segment_ms: i64::MAX,
        index_interval_bytes: 100,
    }
}

/// Every batch of the log, read with `PartitionLog::read`, as (base, last, count, codec
/// bits, producer id) and decoded records.
/// (base offset, last offset, records count, codec bits, producer id) of a batch.
type BatchSummary = (i64, i64, i32, i16, i64);

fn read_all(log: &PartitionLog) -> (Vec<BatchSummary>, Vec<Rec>) {
    let mut batches = Vec::new();
    let mut records = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let bytes = log.read(offset, 1 << 20, i64::MAX).expect("read");
        if bytes.is_empty() {
            break;
        }
        for item in batch::iter_batches(&bytes) {
            let (h, range) = item.expect("whole batches");
            batch::check_batch(&bytes[range.clone()], 0).expect("valid batch");
            assert!(h.base_offset >= offset, "batches increase");
            batches.push((
                h.base_offset,
                h.last_offset(),
                h.records_count,
                h.attributes & 7,
                h.producer_id,
            ));
            let mut buf = Bytes::copy_from_slice(&bytes[range]);
            let set = RecordBatchDecoder::decode(&mut buf).expect("decode");
            for r in set.records {
                assert_eq!(r.timestamp_type, TimestampType::Creation);
                records.push(Rec {
                    offset: r.offset,
                    key: r.key,
                    value: r.value,
                    ts: r.timestamp,
                    headers: r
                        .headers
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                });
            }
            offset = h.last_offset() + 1;
        }
    }
    (batches, records)
}

/// Builds a log of `batches` random batches (keys overwritten many times, tombstones,
/// keyless records, headers, every codec) in `dir`; returns what was appended.
fn build(
    dir: &Path,
    seed: u64,
    batches: usize,
    segment_bytes: u64,
) -> (PartitionLog, Vec<Appended>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut log, _) = PartitionLog::open(dir, config(segment_bytes), 0).expect("open");
    let mut appended = Vec::new();
    for b in 0..batches {
        let n = rng.gen_range(1..=6);
        let mut records: Vec<Rec> = (0..n)
            .map(|i| {
                let key = if rng.gen_ratio(1, 20) {
                    None
                } else {
                    Some(Bytes::from(format!("key-{}", rng.gen_range(0..12))))
                };
                let value = if key.is_some() && rng.gen_ratio(1, 6) {
                    None
                } else {
                    let len = rng.gen_range(0..40);
                    Some(Bytes::from(
                        (0..len).map(|_| rng.gen::<u8>()).collect::<Vec<u8>>(),
                    ))
                };
                let headers = if rng.gen_ratio(1, 3) {
                    vec![
                        ("h1".to_string(), Some(Bytes::from(format!("{b}/{i}")))),
                        ("h2".to_string(), None),
                    ]
                } else {
                    Vec::new()
                };
                Rec {
                    offset: 0,
                    key,
                    value,
                    ts: 1_000 + (b as i64) * 10 + i as i64,
                    headers,
                }
            })
            .collect();
        let codec = CODECS[rng.gen_range(0..CODECS.len())];
        let mut bytes = encode(&records, codec, -1);
        let info = log.append(&mut bytes, 0, None).expect("append");
        for (i, r) in records.iter_mut().enumerate() {
            r.offset = info.base_offset + i as i64;
        }
        appended.push(Appended { records });
    }
    (log, appended)
}

/// What `clean(now, opts, hw)` must leave, computed from the appended records and the
/// segment boundaries.
fn model(
    appended: &[Appended],
    bases: &[i64],
    end: i64,
    now: i64,
    opts: CleanOptions,
    hw: i64,
) -> Vec<Rec> {
    let hw = hw.min(end);
    let all: Vec<(&Rec, i64)> = appended
        .iter()
        .flat_map(|a| {
            let last = a.records.last().expect("non-empty").offset;
            a.records.iter().map(move |r| (r, last))
        })
        .collect();
    let seg_of = |offset: i64| {
        bases
            .iter()
            .rposition(|b| *b <= offset)
            .expect("in a segment")
    };
    let seg_end = |i: usize| bases.get(i + 1).copied().unwrap_or(end);
    let mut max_ts: HashMap<usize, i64> = HashMap::new();
    for (r, _) in &all {
        let e = max_ts.entry(seg_of(r.offset)).or_insert(i64::MIN);
        *e = (*e).max(r.ts);
    }
    let mut candidate = vec![false; bases.len()];
    let mut drop_ok = vec![false; bases.len()];
    let mut earlier = true;
    for i in 0..bases.len() {
        if i + 1 == bases.len() || seg_end(i) > hw {
            break;
        }
        let Some(ts) = max_ts.get(&i) else { continue };
        if *ts <= now - opts.min_compaction_lag_ms {
            candidate[i] = true;
            drop_ok[i] = earlier;
        } else {
            earlier = false;
        }
    }
    let mut latest: HashMap<Bytes, i64> = HashMap::new();
    for (r, last) in &all {
        if *last < hw {
            if let Some(k) = &r.key {
                latest.insert(k.clone(), r.offset);
            }
        }
    }
    all.iter()
        .filter(|(r, _)| {
            let seg = seg_of(r.offset);
            if !candidate[seg] {
                return true;
            }
            let Some(k) = &r.key else { return true };
            latest[k] == r.offset
                && !(r.value.is_none() && drop_ok[seg] && r.ts < now - opts.delete_retention_ms)
        })
        .map(|(r, _)| (*r).clone())
        .collect()
}

fn all_records(appended: &[Appended]) -> Vec<Rec> {
    appended.iter().flat_map(|a| a.records.clone()).collect()
}

/// Runs one seeded case: build, clean, compare with the model, clean again, reopen.
fn check_case(seed: u64, now: i64, opts: CleanOptions, hw_fraction: Option<f64>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, appended) = build(dir.path(), seed, 120, 700);
    let bases = log.segment_base_offsets();
    assert!(bases.len() > 5, "seed {seed}: several segments");
    let end = log.log_end_offset();
    let hw = hw_fraction.map_or(end, |f| (end as f64 * f) as i64);
    let (batches_before, before) = read_all(&log);
    assert_eq!(
        before,
        all_records(&appended),
        "seed {seed}: read back before cleaning"
    );
    let active_base = *bases.last().expect("some");

    let report = log.clean(now, opts, hw).expect("clean");
    assert!(
        report.segments_cleaned > 0 && report.records_removed > 0,
        "seed {seed}: {report:?}"
    );
    let expected = model(&appended, &bases, end, now, opts, hw);
    let (batches_after, after) = read_all(&log);
    assert_eq!(after, expected, "seed {seed}: contents after cleaning");
    assert_eq!(
        report.records_removed as usize,
        before.len() - after.len(),
        "seed {seed}: {report:?}"
    );
    assert!(report.bytes_after <= report.bytes_before || report.segments_cleaned == 0);
    // Every batch keeps its offset range and codec; the active segment is untouched.
    let ranges: BTreeMap<i64, (i64, i16)> = batches_before
        .iter()
        .map(|(b, l, _, c, _)| (*b, (*l, *c)))
        .collect();
    for (b, l, _, c, _) in &batches_after {
        assert_eq!(ranges.get(b), Some(&(*l, *c)), "seed {seed}: batch {b}");
    }
    let active_before: Vec<_> = batches_before
        .iter()
        .filter(|b| b.0 >= active_base)
        .collect();
    let active_after: Vec<_> = batches_after
        .iter()
        .filter(|b| b.0 >= active_base)
        .collect();
    assert_eq!(active_before, active_after, "seed {seed}: active segment");
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(log.segment_base_offsets(), bases);

    // Idempotent.
    let again = log.clean(now, opts, hw).expect("clean again");
    assert_eq!(again.segments_cleaned, 0, "seed {seed}: {again:?}");
    assert_eq!(read_all(&log).1, expected, "seed {seed}: second clean");

    // Reopen.
    drop(log);
    let (log, report) = PartitionLog::open(dir.path(), config(700), 0).expect("reopen");
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(read_all(&log).1, expected, "seed {seed}: after reopen");
    assert_eq!(log.log_end_offset(), end);
}

const KEEP_TOMBSTONES: CleanOptions = CleanOptions {
    delete_retention_ms: i64::MAX / 4,
    min_compaction_lag_ms: 0,
};

#[test]
fn latest_value_per_key_with_tombstones_kept() {
    for seed in 0..6 {
        check_case(seed, 10_000, KEEP_TOMBSTONES, None);
    }
}

#[test]
fn tombstones_go_after_delete_retention() {
    // Tombstones with timestamps before 1_600 go (now 2_000, retention 400); later stay.
    let opts = CleanOptions {
        delete_retention_ms: 400,
        min_compaction_lag_ms: 0,
    };
    for seed in 10..16 {
        check_case(seed, 2_000, opts, None);
    }
    // All tombstones are old enough.
    for seed in 20..23 {
        check_case(
            seed,
            1_000_000,
            CleanOptions {
                delete_retention_ms: 0,
                ..opts
            },
            None,
        );
    }
}

#[test]
fn nothing_at_or_above_the_high_watermark() {
    for seed in 30..36 {
        check_case(
            seed,
            1_000_000,
            CleanOptions {
                delete_retention_ms: 0,
                min_compaction_lag_ms: 0,
            },
            Some(0.5),
        );
    }
}

#[test]
fn min_compaction_lag_is_respected() {
    // Timestamps run from 1_000 to about 2_200: with now 2_000 and lag 500, only segments
    // whose largest timestamp is at most 1_500 are cleaned.
    let opts = CleanOptions {
        delete_retention_ms: 0,
        min_compaction_lag_ms: 500,
    };
    for seed in 40..46 {
        check_case(seed, 2_000, opts, None);
    }
}

#[test]
fn one_batch_stays_one_batch_with_its_codec() {
    for (i, codec) in CODECS.into_iter().enumerate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = PartitionLog::open(dir.path(), config(1 << 20), 0).expect("open");
        let rec = |k: &str, v: Option<&str>, ts: i64| Rec {
            offset: 0,
            key: Some(Bytes::from(k.to_string())),
            value: v.map(|v| Bytes::from(v.to_string())),
            ts,
            headers: vec![("h".to_string(), Some(Bytes::from_static(b"x")))],
        };
        let mut first = encode(
            &[
                rec("a", Some("1"), 10),
                rec("b", Some("1"), 20),
                rec("c", Some("1"), 30),
                rec("d", None, 40),
                rec("e", Some("1"), 50),
            ],
            codec,
            -1,
        );
        log.append(&mut first, 0, None).expect("append");
        // Supersede b and e (the last record) in a second batch, then roll.
        let mut second = encode(
            &[rec("b", Some("2"), 60), rec("e", Some("2"), 70)],
            codec,
            -1,
        );
        log.append(&mut second, 0, None).expect("append");
        let mut third = encode(&[rec("z", Some("z"), 80)], codec, -1);
        // Force a roll so that the first two batches are in a closed segment.
        log.set_config(config(1));
        log.append(&mut third, 0, None).expect("append");
        assert_eq!(log.segment_count(), 2);

        let report = log
            .clean(
                1_000,
                CleanOptions {
                    delete_retention_ms: 10_000,
                    min_compaction_lag_ms: 0,
                },
                8,
            )
            .expect("clean");
        assert_eq!(report.segments_cleaned, 1, "codec {i}");
        assert_eq!(report.records_removed, 2);
        let (batches, records) = read_all(&log);
        assert_eq!(
            batches
                .iter()
                .map(|b| (b.0, b.1, b.2, b.3))
                .collect::<Vec<_>>(),
            vec![
                (0, 4, 3, i as i16),
                (5, 6, 2, i as i16),
                (7, 7, 1, i as i16)
            ],
            "codec {i}"
        );
        let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![0, 2, 3, 5, 6, 7]);
        assert_eq!(
            records[1].headers,
            vec![("h".to_string(), Some(Bytes::from_static(b"x")))]
        );
        assert_eq!(
            records[2].value, None,
            "the tombstone is within delete.retention.ms"
        );
        assert_eq!(records[1].ts, 30);
    }
}

#[test]
fn producer_batches_stay_unchanged_and_emptied_segments_remain_readable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = PartitionLog::open(dir.path(), config(1), 0).expect("open");
    let rec = |k: &str, v: &str, ts: i64| Rec {
        offset: 0,
        key: Some(Bytes::from(k.to_string())),
        value: Some(Bytes::from(v.to_string())),
        ts,
        headers: Vec::new(),
    };
    // Segment 0: an idempotent batch (kept whole although superseded).
    log.append(
        &mut encode(&[rec("a", "1", 1), rec("b", "1", 2)], Compression::None, 7),
        0,
        None,
    )
    .expect("append");
    // Segment 2: a plain batch, entirely superseded.
    log.append(
        &mut encode(&[rec("a", "2", 3), rec("b", "2", 4)], Compression::Gzip, -1),
        0,
        None,
    )
    .expect("append");
    // Segment 4: the latest values (active after the next append).
    log.append(
        &mut encode(&[rec("a", "3", 5), rec("b", "3", 6)], Compression::Zstd, -1),
        0,
        None,
    )
    .expect("append");
    log.append(
        &mut encode(&[rec("c", "1", 7)], Compression::None, -1),
        0,
        None,
    )
    .expect("append");
    assert_eq!(log.segment_base_offsets(), vec![0, 2, 4, 6]);
    let report = log.clean(100, KEEP_TOMBSTONES, 7).expect("clean");
    assert_eq!((report.segments_cleaned, report.records_removed), (1, 2));
    let (batches, records) = read_all(&log);
    assert_eq!(
        batches.iter().map(|b| (b.0, b.4)).collect::<Vec<_>>(),
        vec![(0, 7), (4, -1), (6, -1)]
    );
    assert_eq!(
        records.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![0, 1, 4, 5, 6]
    );
    // Reading at an offset of an emptied segment moves on to the next batch.
    let bytes = log.read(2, 1 << 20, i64::MAX).expect("read");
    let first = batch::iter_batches(&bytes)
        .next()
        .expect("a batch")
        .expect("valid")
        .0;
    assert_eq!(first.base_offset, 4);
    drop(log);
    let (log, _) = PartitionLog::open(dir.path(), config(1), 0).expect("reopen");
    assert_eq!(
        read_all(&log)
            .1
            .iter()
            .map(|r| r.offset)
            .collect::<Vec<_>>(),
        vec![0, 1, 4, 5, 6]
    );
    assert_eq!(log.segment_base_offsets(), vec![0, 2, 4, 6]);
}

/// A crash after every step of a cleaning pass leaves each segment either as it was or
/// cleaned (earlier segments are cleaned first), and reopening then cleaning again gives
/// the fully cleaned log.
#[test]
fn crash_at_every_step_leaves_old_or_new_segments() {
    let seeds: Vec<u64> = match std::env::var("STRATA_COMPACTION_SEED") {
        Ok(s) => vec![s.parse().expect("a u64 seed")],
        Err(_) => (100..103).collect(),
    };
    let now = 1_000_000;
    let opts = CleanOptions {
        delete_retention_ms: 0,
        min_compaction_lag_ms: 0,
    };
    for seed in seeds {
        let result = std::panic::catch_unwind(|| crash_case(seed, now, opts));
        if let Err(panic) = result {
            eprintln!(
                "crash test failed with seed {seed} (rerun with STRATA_COMPACTION_SEED={seed})"
            );
            std::panic::resume_unwind(panic);
        }
    }
}

fn crash_case(seed: u64, now: i64, opts: CleanOptions) {
    let reference = tempfile::tempdir().expect("tempdir");
    let (mut clean_log, appended) = build(reference.path(), seed, 60, 600);
    let bases = clean_log.segment_base_offsets();
    let end = clean_log.log_end_offset();
    let old = all_records(&appended);
    let full = clean_log.clean(now, opts, end).expect("clean");
    assert!(full.segments_cleaned >= 3, "seed {seed}: {full:?}");
    let new = read_all(&clean_log).1;
    assert_eq!(new, model(&appended, &bases, end, now, opts, end));
    let seg_of = |offset: i64| {
        bases
            .iter()
            .rposition(|b| *b <= offset)
            .expect("in a segment")
    };
    // The states a crash may leave: segments below j cleaned, the others not.
    let allowed: Vec<Vec<Rec>> = (0..=bases.len())
        .map(|j| {
            new.iter()
                .filter(|r| seg_of(r.offset) < j)
                .chain(old.iter().filter(|r| seg_of(r.offset) >= j))
                .cloned()
                .collect::<Vec<_>>()
        })
        .map(|mut v| {
            v.sort_by_key(|r| r.offset);
            v
        })
        .collect();
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut completed = false;
    for steps in 0..10_000u32 {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = build(dir.path(), seed, 60, 600);
        match log.clean_with_simulated_crash(now, opts, end, steps) {
            Ok(_) => {
                assert!(
                    steps >= 8 * full.segments_cleaned as u32,
                    "seed {seed}: {steps} steps"
                );
                completed = true;
                assert_eq!(read_all(&log).1, new, "seed {seed}: no crash");
                break;
            }
            Err(e) => assert!(
                e.to_string().contains("simulated crash"),
                "seed {seed}: {e}"
            ),
        }
        drop(log);
        // A power loss may also lose unsynced bytes of a `.cleaned` file.
        for entry in std::fs::read_dir(dir.path()).expect("list") {
            let path = entry.expect("entry").path();
            if path.to_string_lossy().ends_with(".cleaned") {
                let len = std::fs::metadata(&path).expect("stat").len();
                let cut = rng.gen_range(0..=len);
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(cut))
                    .expect("truncate");
            }
        }
        let (mut log, _) = PartitionLog::open(dir.path(), config(600), 0).expect("reopen");
        let got = read_all(&log).1;
        assert!(
            allowed.contains(&got),
            "seed {seed}, crash after {steps} steps: a mix of segment versions or a loss"
        );
        assert_eq!(log.log_end_offset(), end);
        for entry in std::fs::read_dir(dir.path()).expect("list") {
            let name = entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned();
            assert!(
                !name.ends_with(".cleaned") && !name.ends_with(".swap"),
                "{name} left"
            );
        }
        log.clean(now, opts, end).expect("clean after the crash");
        assert_eq!(
            read_all(&log).1,
            new,
            "seed {seed}, crash after {steps} steps: converges"
        );
    }
    assert!(completed);
}
