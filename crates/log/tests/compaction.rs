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
    let appended = append_random(&mut log, &mut rng, 0..batches);
    (log, appended)
}

/// Appends the random batches numbered `numbers` (a batch's number sets its timestamps).
fn append_random(
    log: &mut PartitionLog,
    rng: &mut StdRng,
    numbers: std::ops::Range<usize>,
) -> Vec<Appended> {
    let mut appended = Vec::new();
    for b in numbers {
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
        let bytes = encode(&records, codec, -1);
        let info = log.append(&bytes, 0, None).expect("append");
        for (i, r) in records.iter_mut().enumerate() {
            r.offset = info.base_offset + i as i64;
        }
        appended.push(Appended { records });
    }
    appended
}

/// A record of the model with the last offset of the batch it was appended in.
type ModelRec = (Rec, i64);

/// The model's log: its records and the delete horizons of its segments (by index).
#[derive(Debug, Clone)]
struct Model {
    records: Vec<ModelRec>,
    horizons: BTreeMap<usize, i64>,
}

impl Model {
    fn new(appended: &[Appended]) -> Self {
        let mut model = Model {
            records: Vec::new(),
            horizons: BTreeMap::new(),
        };
        model.append(appended);
        model
    }

    fn append(&mut self, appended: &[Appended]) {
        self.records.extend(appended.iter().flat_map(|a| {
            let last = a.records.last().expect("non-empty").offset;
            a.records.iter().map(move |r| (r.clone(), last))
        }));
    }

    fn records(&self) -> Vec<Rec> {
        self.records.iter().map(|(r, _)| r.clone()).collect()
    }

    /// The horizons as `PartitionLog::delete_horizons` reports them.
    fn horizons_by_base(&self, bases: &[i64]) -> Vec<(i64, i64)> {
        self.horizons.iter().map(|(i, h)| (bases[*i], *h)).collect()
    }

    /// What `clean(now, opts, hw)` does, from the segment boundaries: keep the latest record
    /// per key; a latest tombstone goes only once its segment's delete horizon has passed;
    /// the first pass over a segment that keeps a tombstone records `now + retention`.
    fn clean(&mut self, bases: &[i64], end: i64, now: i64, opts: CleanOptions, hw: i64) {
        let hw = hw.min(end);
        let seg_of = |offset: i64| {
            bases
                .iter()
                .rposition(|b| *b <= offset)
                .expect("in a segment")
        };
        let seg_end = |i: usize| bases.get(i + 1).copied().unwrap_or(end);
        // A segment's largest timestamp is that of the records it still holds.
        let mut max_ts: HashMap<usize, i64> = HashMap::new();
        for (r, _) in &self.records {
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
                drop_ok[i] = earlier && self.horizons.get(&i).is_some_and(|h| *h <= now);
            } else {
                earlier = false;
            }
        }
        let mut latest: HashMap<Bytes, i64> = HashMap::new();
        for (r, last) in &self.records {
            if *last < hw {
                if let Some(k) = &r.key {
                    latest.insert(k.clone(), r.offset);
                }
            }
        }
        self.records.retain(|(r, _)| {
            let seg = seg_of(r.offset);
            if !candidate[seg] {
                return true;
            }
            let Some(k) = &r.key else { return true };
            latest[k] == r.offset && !(r.value.is_none() && drop_ok[seg])
        });
        for (seg, _) in candidate.iter().enumerate().filter(|(_, c)| **c) {
            let keeps_tombstone = self
                .records
                .iter()
                .any(|(r, _)| seg_of(r.offset) == seg && r.key.is_some() && r.value.is_none());
            if keeps_tombstone {
                self.horizons
                    .entry(seg)
                    .or_insert(now.saturating_add(opts.delete_retention_ms));
            } else {
                self.horizons.remove(&seg);
            }
        }
    }
}

fn all_records(appended: &[Appended]) -> Vec<Rec> {
    appended.iter().flat_map(|a| a.records.clone()).collect()
}

/// Runs one seeded case: build; clean at `now`, again at `now`, just before and at
/// `now + delete_retention_ms` (when the tombstones the first pass kept may go), comparing
/// each with the model; reopen.
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
    let mut model = Model::new(&appended);

    let report = log.clean(now, opts, hw).expect("clean");
    assert!(
        report.segments_cleaned > 0 && report.records_removed > 0,
        "seed {seed}: {report:?}"
    );
    model.clean(&bases, end, now, opts, hw);
    let (batches_after, after) = read_all(&log);
    assert_eq!(
        after,
        model.records(),
        "seed {seed}: contents after cleaning"
    );
    assert_eq!(log.delete_horizons(), model.horizons_by_base(&bases));
    let retention = opts.delete_retention_ms;
    let has_horizons = !model.horizons.is_empty();
    assert_eq!(log.delete_horizon_due(now), retention == 0 && has_horizons);
    assert_eq!(report.horizons_recorded, model.horizons.len());
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

    // Later passes: the same time, just before the horizons, at the horizons.
    let mut later = vec![now];
    if retention > 0 {
        later.push(now.saturating_add(retention - 1));
    }
    later.push(now.saturating_add(retention));
    for t in later {
        let previous = model.records();
        if retention > 0 && t == now + retention - 1 {
            assert!(
                !log.delete_horizon_due(t),
                "seed {seed}: before the horizon"
            );
        } else if retention > 0 && t == now + retention {
            assert_eq!(log.delete_horizon_due(t), has_horizons, "seed {seed}");
        }
        let again = log.clean(t, opts, hw).expect("clean again");
        model.clean(&bases, end, t, opts, hw);
        let got = read_all(&log).1;
        assert_eq!(got, model.records(), "seed {seed}: pass at {t}");
        assert_eq!(log.delete_horizons(), model.horizons_by_base(&bases));
        if got == previous {
            assert_eq!(again.segments_cleaned, 0, "seed {seed}: {again:?}");
        }
        assert!(!log.delete_horizon_due(t), "seed {seed}: a pass at {t} ran");
    }

    // Reopen: the records and the horizons stay.
    drop(log);
    let (log, report) = PartitionLog::open(dir.path(), config(700), 0).expect("reopen");
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(
        read_all(&log).1,
        model.records(),
        "seed {seed}: after reopen"
    );
    assert_eq!(log.delete_horizons(), model.horizons_by_base(&bases));
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
    // Every record timestamp (1_000 to about 2_200) is older than now - retention at the
    // later passes, yet tombstones stay through the first pass (2_000) and the pass just
    // before its horizon (2_399), and go at it (2_400).
    let opts = CleanOptions {
        delete_retention_ms: 400,
        min_compaction_lag_ms: 0,
    };
    for seed in 10..16 {
        check_case(seed, 2_000, opts, None);
    }
    // Retention 0: the first pass's horizons have passed at once; the next pass removes the
    // tombstones (check_case runs it at the same time).
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
        let first = encode(
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
        log.append(&first, 0, None).expect("append");
        // Supersede b and e (the last record) in a second batch, then roll.
        let second = encode(
            &[rec("b", Some("2"), 60), rec("e", Some("2"), 70)],
            codec,
            -1,
        );
        log.append(&second, 0, None).expect("append");
        let third = encode(&[rec("z", Some("z"), 80)], codec, -1);
        // Force a roll so that the first two batches are in a closed segment.
        log.set_config(config(1));
        log.append(&third, 0, None).expect("append");
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
        &encode(&[rec("a", "1", 1), rec("b", "1", 2)], Compression::None, 7),
        0,
        None,
    )
    .expect("append");
    // Segment 2: a plain batch, entirely superseded.
    log.append(
        &encode(&[rec("a", "2", 3), rec("b", "2", 4)], Compression::Gzip, -1),
        0,
        None,
    )
    .expect("append");
    // Segment 4: the latest values (active after the next append).
    log.append(
        &encode(&[rec("a", "3", 5), rec("b", "3", 6)], Compression::Zstd, -1),
        0,
        None,
    )
    .expect("append");
    log.append(&encode(&[rec("c", "1", 7)], Compression::None, -1), 0, None)
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
/// cleaned (earlier segments are cleaned first) and the delete horizons either all recorded
/// or none; reopening then cleaning again gives the fully cleaned log, and a pass after the
/// horizons removes the same tombstones as without the crash.
#[test]
fn crash_at_every_step_leaves_old_or_new_segments() {
    let seeds: Vec<u64> = match std::env::var("STRATA_COMPACTION_SEED") {
        Ok(s) => vec![s.parse().expect("a u64 seed")],
        // Seeds whose cleaned segments keep tombstones (so horizons are written).
        Err(_) => vec![101, 102, 112],
    };
    let now = 1_000_000;
    let opts = CleanOptions {
        delete_retention_ms: 1_000,
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
    let mut model = Model::new(&appended);
    model.clean(&bases, end, now, opts, end);
    assert!(full.horizons_recorded > 0, "seed {seed}: {full:?}");
    assert_eq!(new, model.records());
    let horizons = clean_log.delete_horizons();
    let after_horizon = now + opts.delete_retention_ms;
    clean_log
        .clean(after_horizon, opts, end)
        .expect("clean after the horizon");
    let newer = read_all(&clean_log).1;
    model.clean(&bases, end, after_horizon, opts, end);
    assert_eq!(newer, model.records());
    assert!(newer.len() < new.len(), "seed {seed}: tombstones went");
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
                // 8 steps a rewritten segment, 4 for the horizon checkpoint.
                assert!(
                    steps >= 8 * full.segments_cleaned as u32 + 4,
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
        // A power loss may also lose unsynced bytes of a `.cleaned` or temporary file.
        for entry in std::fs::read_dir(dir.path()).expect("list") {
            let path = entry.expect("entry").path();
            let name = path.to_string_lossy();
            if name.ends_with(".cleaned") || name.ends_with(".tmp") {
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
        // The horizons are written after every segment: all of them, or none.
        let recorded = log.delete_horizons();
        assert!(
            recorded.is_empty() || recorded == horizons,
            "seed {seed}, crash after {steps} steps: horizons {recorded:?}"
        );
        if !recorded.is_empty() {
            assert_eq!(
                got, new,
                "seed {seed}: horizons only after the last segment"
            );
        }
        assert_eq!(log.log_end_offset(), end);
        for entry in std::fs::read_dir(dir.path()).expect("list") {
            let name = entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned();
            assert!(
                !name.ends_with(".cleaned") && !name.ends_with(".swap") && !name.ends_with(".tmp"),
                "{name} left"
            );
        }
        log.clean(now, opts, end).expect("clean after the crash");
        assert_eq!(
            read_all(&log).1,
            new,
            "seed {seed}, crash after {steps} steps: converges"
        );
        assert_eq!(
            log.delete_horizons(),
            horizons,
            "seed {seed}: {steps} steps"
        );
        // The pass after the horizons, for the crashes around the checkpoint write and a
        // sample of the others (each pass costs many fsyncs).
        let checkpoint_steps = 8 * full.segments_cleaned as u32;
        if steps + 8 < checkpoint_steps && steps % 8 != 0 {
            continue;
        }
        log.clean(after_horizon, opts, end)
            .expect("clean after the horizon");
        assert_eq!(
            read_all(&log).1,
            newer,
            "seed {seed}, crash after {steps} steps: tombstones go after the horizon"
        );
    }
    assert!(completed);
}

/// A log of three segments (every append rolls): `a=1` at offset 0; a tombstone for `a` with
/// an ancient timestamp and `b=1` at offsets 1-2; the active segment with `z=1` at 3.
fn tombstone_log(dir: &Path) -> PartitionLog {
    let (mut log, _) = PartitionLog::open(dir, config(1), 0).expect("open");
    let rec = |k: &str, v: Option<&str>, ts: i64| Rec {
        offset: 0,
        key: Some(Bytes::from(k.to_string())),
        value: v.map(|v| Bytes::from(v.to_string())),
        ts,
        headers: Vec::new(),
    };
    for batch in [
        vec![rec("a", Some("1"), 1)],
        vec![rec("a", None, 2), rec("b", Some("1"), 3)],
        vec![rec("z", Some("1"), 4)],
    ] {
        log.append(&encode(&batch, Compression::None, -1), 0, None)
            .expect("append");
    }
    assert_eq!(log.segment_base_offsets(), vec![0, 1, 3]);
    log
}

/// (offset, key, value) of every record.
fn contents(log: &PartitionLog) -> Vec<(i64, String, Option<String>)> {
    read_all(log)
        .1
        .into_iter()
        .map(|r| {
            let text = |b: Bytes| String::from_utf8(b.to_vec()).expect("utf-8");
            (r.offset, text(r.key.expect("keyed")), r.value.map(text))
        })
        .collect()
}

fn with_tombstone() -> Vec<(i64, String, Option<String>)> {
    vec![
        (1, "a".to_string(), None),
        (2, "b".to_string(), Some("1".to_string())),
        (3, "z".to_string(), Some("1".to_string())),
    ]
}

const NOW: i64 = 1_700_000_000_000;
const RETENTION: CleanOptions = CleanOptions {
    delete_retention_ms: 60_000,
    min_compaction_lag_ms: 0,
};
const R: i64 = RETENTION.delete_retention_ms;
const HORIZON_FILE: &str = "cleaner-delete-horizons";

#[test]
fn an_ancient_tombstone_survives_the_first_pass_and_goes_after_its_horizon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = tombstone_log(dir.path());
    // Its timestamp (2) is far older than NOW - delete.retention.ms: under a timestamp rule
    // it would go now.
    let report = log.clean(NOW, RETENTION, 4).expect("clean");
    assert_eq!((report.records_removed, report.horizons_recorded), (1, 1));
    assert_eq!(contents(&log), with_tombstone());
    assert_eq!(log.delete_horizons(), vec![(1, NOW + R)]);
    assert!(!log.delete_horizon_due(NOW + R - 1));
    assert!(log.delete_horizon_due(NOW + R));

    // Just before the horizon nothing changes.
    let report = log.clean(NOW + R - 1, RETENTION, 4).expect("clean");
    assert_eq!(report.segments_cleaned, 0);
    assert_eq!(contents(&log), with_tombstone());

    // The horizon survives a reopen, and is due at once.
    drop(log);
    let (mut log, _) = PartitionLog::open(dir.path(), config(1), 0).expect("reopen");
    assert_eq!(log.delete_horizons(), vec![(1, NOW + R)]);
    assert!(log.delete_horizon_due(NOW + R));

    let report = log.clean(NOW + R, RETENTION, 4).expect("clean");
    assert_eq!(report.records_removed, 1);
    assert_eq!(contents(&log), with_tombstone()[1..].to_vec());
    assert!(log.delete_horizons().is_empty(), "no tombstone, no horizon");
    assert!(!log.delete_horizon_due(i64::MAX));
    drop(log);
    let (log, _) = PartitionLog::open(dir.path(), config(1), 0).expect("reopen");
    assert!(log.delete_horizons().is_empty());
    assert_eq!(contents(&log), with_tombstone()[1..].to_vec());
}

#[test]
fn a_lost_or_corrupt_horizon_checkpoint_only_keeps_tombstones_longer() {
    type Damage = fn(&Path);
    let damages: [(&str, Damage); 4] = [
        ("deleted", |p| std::fs::remove_file(p).expect("remove")),
        ("garbage", |p| {
            std::fs::write(p, b"\x00\xffnot a checkpoint").expect("write")
        }),
        ("truncated", |p| {
            let bytes = std::fs::read(p).expect("read");
            std::fs::write(p, &bytes[..bytes.len() - 3]).expect("write");
        }),
        // An earlier horizon without a matching checksum must not be believed.
        ("edited", |p| {
            let text = std::fs::read_to_string(p).expect("read");
            let edited = text.replace(&format!(" {}\n", NOW + R), &format!(" {NOW}\n"));
            assert_ne!(edited, text);
            std::fs::write(p, edited).expect("write");
        }),
    ];
    for (what, damage) in damages {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = tombstone_log(dir.path());
        log.clean(NOW, RETENTION, 4).expect("clean");
        drop(log);
        damage(&dir.path().join(HORIZON_FILE));
        let (mut log, _) = PartitionLog::open(dir.path(), config(1), 0).expect("reopen");
        assert!(log.delete_horizons().is_empty(), "{what}");
        // The horizon is recorded again by the next pass, later than the lost one.
        log.clean(NOW + R, RETENTION, 4).expect("clean");
        assert_eq!(contents(&log), with_tombstone(), "{what}");
        assert_eq!(log.delete_horizons(), vec![(1, NOW + 2 * R)], "{what}");
        log.clean(NOW + 2 * R - 1, RETENTION, 4).expect("clean");
        assert_eq!(contents(&log), with_tombstone(), "{what}");
        log.clean(NOW + 2 * R, RETENTION, 4).expect("clean");
        assert_eq!(contents(&log), with_tombstone()[1..].to_vec(), "{what}");
    }
}

#[test]
fn deleting_a_segment_forgets_its_horizon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = tombstone_log(dir.path());
    log.clean(NOW, RETENTION, 4).expect("clean");
    assert_eq!(log.delete_horizons(), vec![(1, NOW + R)]);
    log.delete_records_before(3).expect("delete records");
    assert_eq!(log.segment_base_offsets(), vec![3]);
    assert!(log.delete_horizons().is_empty());
    let text = std::fs::read_to_string(dir.path().join(HORIZON_FILE)).expect("read");
    assert_eq!(
        text.lines().count(),
        2,
        "only the header and checksum: {text}"
    );
    drop(log);
    let (log, _) = PartitionLog::open(dir.path(), config(1), 0).expect("reopen");
    assert!(log.delete_horizons().is_empty());
}

#[test]
fn a_horizon_of_a_missing_or_active_segment_is_dropped_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = tombstone_log(dir.path());
    drop(log);
    // Written by hand, as docs/on-disk-format.md describes the file: entries for a closed
    // segment (1), an offset that is no segment (2) and the active segment (3).
    let body = "strata-delete-horizons 1\n1 5\n2 5\n3 5\n";
    let file = format!("{body}crc32c {:08x}\n", crc32c::crc32c(body.as_bytes()));
    std::fs::write(dir.path().join(HORIZON_FILE), file).expect("write");
    std::fs::write(dir.path().join(format!("{HORIZON_FILE}.tmp")), "torn").expect("write");
    let (mut log, _) = PartitionLog::open(dir.path(), config(1), 0).expect("reopen");
    assert_eq!(log.delete_horizons(), vec![(1, 5)]);
    assert!(!dir.path().join(format!("{HORIZON_FILE}.tmp")).exists());
    // Horizon 5 has long passed: the first pass after the reopen removes the tombstone.
    assert!(log.delete_horizon_due(NOW));
    log.clean(NOW, RETENTION, 4).expect("clean");
    assert_eq!(contents(&log), with_tombstone()[1..].to_vec());
}

/// Passes at random times between rounds of appends (new values for tombstoned keys, new
/// tombstones, new segments), with reopens: every pass matches the model, horizons included.
#[test]
fn passes_between_appends_follow_the_model() {
    let opts = CleanOptions {
        delete_retention_ms: 500,
        ..RETENTION
    };
    for seed in 200..206 {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, appended) = build(dir.path(), seed, 40, 600);
        let mut rng = StdRng::seed_from_u64(seed ^ 0xabc);
        let mut model = Model::new(&appended);
        let mut now = 1_000_000;
        let mut next_batch = 40;
        let mut dropped_by_horizon = 0;
        for round in 0..12 {
            let bases = log.segment_base_offsets();
            let end = log.log_end_offset();
            let before = model.records.len();
            let horizons_before = model.horizons.clone();
            log.clean(now, opts, end).expect("clean");
            model.clean(&bases, end, now, opts, end);
            let what = format!("seed {seed}, round {round}, now {now}");
            assert_eq!(read_all(&log).1, model.records(), "{what}");
            assert_eq!(
                log.delete_horizons(),
                model.horizons_by_base(&bases),
                "{what}"
            );
            if horizons_before.values().any(|h| *h <= now) && model.records.len() < before {
                dropped_by_horizon += 1;
            }
            if rng.gen_ratio(1, 3) {
                drop(log);
                log = PartitionLog::open(dir.path(), config(600), 0)
                    .expect("reopen")
                    .0;
                assert_eq!(
                    log.delete_horizons(),
                    model.horizons_by_base(&bases),
                    "{what}"
                );
            }
            let n = rng.gen_range(0..12);
            model.append(&append_random(
                &mut log,
                &mut rng,
                next_batch..next_batch + n,
            ));
            next_batch += n;
            now += [0, 1, 250, 499, 500, 700][rng.gen_range(0..6)];
        }
        assert!(
            dropped_by_horizon > 0,
            "seed {seed}: some pass removed tombstones"
        );
    }
}
