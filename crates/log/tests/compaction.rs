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
use strata_log::{CleanOptions, LogConfig, PartitionLog, ProducerStateManager};
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

/// One appended batch: its records (offsets assigned) and producer id (-1: none).
#[derive(Debug, Clone)]
struct Appended {
    records: Vec<Rec>,
    producer_id: i64,
}

/// A batch as a producer sends it: without a producer id (`producer_id` -1), or from an
/// idempotent producer with sequence numbers from 0.
fn encode(records: &[Rec], codec: Compression, producer_id: i64) -> Vec<u8> {
    encode_seq(records, codec, producer_id, 0)
}

/// [`encode`] with the first sequence number `base_sequence` (for `producer_id >= 0`).
fn encode_seq(
    records: &[Rec],
    codec: Compression,
    producer_id: i64,
    base_sequence: i32,
) -> Vec<u8> {
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
                    base_sequence + i as i32
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

/// (base offset, last offset, records count, codec bits, producer id) of a batch.
type BatchSummary = (i64, i64, i32, i16, i64);

/// Every batch of the log, read with `PartitionLog::read`, and the decoded records.
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
/// keyless records, headers, every codec, with and without a producer id) in `dir`; returns
/// what was appended.
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
        // Half the batches come from two idempotent producers. Batch numbers only grow, so
        // `6 * b` gives increasing sequence numbers (the log does not check them).
        let producer_id = [-1, -1, 7, 8][rng.gen_range(0..4)];
        let bytes = encode_seq(&records, codec, producer_id, 6 * b as i32);
        let info = log.append(&bytes, 0, None).expect("append");
        for (i, r) in records.iter_mut().enumerate() {
            r.offset = info.base_offset + i as i64;
        }
        appended.push(Appended {
            records,
            producer_id,
        });
    }
    appended
}

/// A record of the model with the last offset of the batch it was appended in.
type ModelRec = (Rec, i64);

/// An appended batch as the model sees it: base and last offset, producer id, largest
/// timestamp.
#[derive(Debug, Clone, Copy)]
struct ModelBatch {
    base: i64,
    last: i64,
    producer_id: i64,
    max_ts: i64,
}

/// The model's log: its records, the delete horizons of its segments (by index), every
/// appended batch and the base offsets of the batches kept with no record.
#[derive(Debug, Clone)]
struct Model {
    records: Vec<ModelRec>,
    horizons: BTreeMap<usize, i64>,
    batches: Vec<ModelBatch>,
    empty: std::collections::BTreeSet<i64>,
}

impl Model {
    fn new(appended: &[Appended]) -> Self {
        let mut model = Model {
            records: Vec::new(),
            horizons: BTreeMap::new(),
            batches: Vec::new(),
            empty: Default::default(),
        };
        model.append(appended);
        model
    }

    fn append(&mut self, appended: &[Appended]) {
        self.records.extend(appended.iter().flat_map(|a| {
            let last = a.records.last().expect("non-empty").offset;
            a.records.iter().map(move |r| (r.clone(), last))
        }));
        self.batches.extend(appended.iter().map(|a| ModelBatch {
            base: a.records[0].offset,
            last: a.records.last().expect("non-empty").offset,
            producer_id: a.producer_id,
            max_ts: a.records.iter().map(|r| r.ts).max().expect("non-empty"),
        }));
    }

    fn records(&self) -> Vec<Rec> {
        self.records.iter().map(|(r, _)| r.clone()).collect()
    }

    /// (base, last offset, producer id) of the batches kept with no record.
    fn empty_batches(&self) -> Vec<(i64, i64, i64)> {
        self.batches
            .iter()
            .filter(|b| self.empty.contains(&b.base))
            .map(|b| (b.base, b.last, b.producer_id))
            .collect()
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
        // A segment's largest timestamp is that of the records it still holds and of its
        // empty batches (which keep their batch's largest timestamp).
        let mut max_ts: HashMap<usize, i64> = HashMap::new();
        let empties = self.batches.iter().filter(|b| self.empty.contains(&b.base));
        for (offset, ts) in self
            .records
            .iter()
            .map(|(r, _)| (r.offset, r.ts))
            .chain(empties.map(|b| (b.base, b.max_ts)))
        {
            let e = max_ts.entry(seg_of(offset)).or_insert(i64::MIN);
            *e = (*e).max(ts);
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
        // A producer's batch left with no record stays, empty, while it is the last batch of
        // its producer below the high watermark; otherwise it goes.
        let mut last_of_producer: HashMap<i64, i64> = HashMap::new();
        for b in self.batches.iter().filter(|b| b.last < hw) {
            last_of_producer.insert(b.producer_id, b.base);
        }
        for b in &self.batches {
            let holds_records = self
                .records
                .iter()
                .any(|(r, _)| (b.base..=b.last).contains(&r.offset));
            if b.producer_id < 0 || !candidate[seg_of(b.base)] || holds_records {
                continue;
            }
            if last_of_producer.get(&b.producer_id) == Some(&b.base) {
                self.empty.insert(b.base);
            } else {
                self.empty.remove(&b.base);
            }
        }
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

/// (base, last offset, producer id) of the batches with no record.
fn empty_batches(batches: &[BatchSummary]) -> Vec<(i64, i64, i64)> {
    batches
        .iter()
        .filter(|b| b.2 == 0)
        .map(|b| (b.0, b.1, b.4))
        .collect()
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
    assert_eq!(
        empty_batches(&batches_after),
        model.empty_batches(),
        "seed {seed}: empty batches after cleaning"
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
    // Every batch keeps its offset range, producer and codec (an empty batch has none); the
    // active segment is untouched.
    let ranges: BTreeMap<i64, (i64, i16, i64)> = batches_before
        .iter()
        .map(|(b, l, _, c, p)| (*b, (*l, *c, *p)))
        .collect();
    for (b, l, n, c, p) in &batches_after {
        let (last, codec, producer) = ranges[b];
        let codec = if *n == 0 { 0 } else { codec };
        assert_eq!(
            (*l, *c, *p),
            (last, codec, producer),
            "seed {seed}: batch {b}"
        );
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
        let previous = (model.records(), model.empty_batches());
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
        let (batches, records) = read_all(&log);
        let got = (records, empty_batches(&batches));
        assert_eq!(got.0, model.records(), "seed {seed}: pass at {t}");
        assert_eq!(got.1, model.empty_batches(), "seed {seed}: pass at {t}");
        assert_eq!(log.delete_horizons(), model.horizons_by_base(&bases));
        if got == previous {
            assert_eq!(again.segments_cleaned, 0, "seed {seed}: {again:?}");
        }
        assert!(!log.delete_horizon_due(t), "seed {seed}: a pass at {t} ran");
    }

    // Reopen: the records, the empty batches and the horizons stay.
    drop(log);
    let (log, report) = PartitionLog::open(dir.path(), config(700), 0).expect("reopen");
    assert_eq!(report.truncated_bytes, 0);
    let (batches, records) = read_all(&log);
    assert_eq!(records, model.records(), "seed {seed}: after reopen");
    assert_eq!(empty_batches(&batches), model.empty_batches());
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
    let cases = CODECS
        .into_iter()
        .enumerate()
        .flat_map(|c| [(c, -1), (c, 7)]);
    for ((i, codec), producer_id) in cases {
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
            producer_id,
        );
        log.append(&first, 0, None).expect("append");
        // Supersede b and e (the last record) in a second batch, then roll.
        let second = encode_seq(
            &[rec("b", Some("2"), 60), rec("e", Some("2"), 70)],
            codec,
            producer_id,
            5,
        );
        log.append(&second, 0, None).expect("append");
        let third = encode_seq(&[rec("z", Some("z"), 80)], codec, producer_id, 7);
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
        assert_eq!(
            report.segments_cleaned, 1,
            "codec {i}, producer {producer_id}"
        );
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
            "codec {i}, producer {producer_id}"
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

/// Idempotent batches of every codec are compacted like others. A batch left with no record
/// stays as an empty batch (no codec, the same offsets, producer fields and sequence range)
/// while it is its producer's last batch below the high watermark, and goes once the producer
/// has written a later one. Empty batches are read, reopened, indexed and replayed into the
/// producer state.
#[test]
fn idempotent_batches_are_compacted_and_the_last_one_stays_empty() {
    for (i, codec) in CODECS.into_iter().enumerate() {
        let what = format!("codec {i}");
        let dir = tempfile::tempdir().expect("tempdir");
        // Every append rolls: one batch per segment.
        let (mut log, _) = PartitionLog::open(dir.path(), config(1), 0).expect("open");
        let rec = |k: &str, v: &str, ts: i64| Rec {
            offset: 0,
            key: Some(Bytes::from(k.to_string())),
            value: Some(Bytes::from(v.to_string())),
            ts,
            headers: vec![("h".to_string(), Some(Bytes::from_static(b"x")))],
        };
        let mut append = |records: &[Rec], producer_id: i64, base_sequence: i32| {
            let bytes = encode_seq(records, codec, producer_id, base_sequence);
            log.append(&bytes, 0, None).expect("append").base_offset
        };
        // 0-1: producer 7, sequences 0-1, both superseded and not its last batch: goes.
        append(&[rec("a", "1", 10), rec("b", "1", 20)], 7, 0);
        // 2-3: producer 7, sequences 2-3, both superseded, its last batch: stays empty.
        append(&[rec("a", "2", 30), rec("b", "2", 40)], 7, 2);
        // 4-5: producer 8, c superseded, d the latest: rewritten with d only.
        append(&[rec("c", "1", 50), rec("d", "1", 60)], 8, 0);
        // 6-8: no producer id, the latest a, b, c.
        append(
            &[rec("a", "3", 70), rec("b", "3", 80), rec("c", "2", 90)],
            -1,
            0,
        );
        // 9: the active segment after the next append.
        append(&[rec("z", "1", 100)], -1, 0);
        assert_eq!(log.segment_base_offsets(), vec![0, 2, 4, 6, 9], "{what}");

        let report = log.clean(1_000, KEEP_TOMBSTONES, 10).expect("clean");
        assert_eq!(
            (report.segments_cleaned, report.records_removed),
            (3, 5),
            "{what}"
        );
        let summary = |log: &PartitionLog| {
            let (batches, records) = read_all(log);
            let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
            (batches, offsets)
        };
        let cleaned = (
            vec![
                (2, 3, 0, 0, 7),
                (4, 5, 1, i as i16, 8),
                (6, 8, 3, 0, -1),
                (9, 9, 1, i as i16, -1),
            ],
            vec![5, 6, 7, 8, 9],
        );
        let (batches, offsets) = summary(&log);
        assert_eq!(
            (batches[..1].to_vec(), &offsets),
            (cleaned.0[..1].to_vec(), &cleaned.1),
            "{what}"
        );
        assert_eq!(
            batches[1..].iter().map(|b| b.0).collect::<Vec<_>>(),
            vec![4, 6, 9]
        );

        // The empty batch is what a fetch at 0 to 3 starts with: its header is the
        // original one but for the count, codec, length and CRC.
        for at in [0, 2, 3] {
            let bytes = log.read(at, 1 << 20, i64::MAX).expect("read");
            let (first, range) = batch::iter_batches(&bytes)
                .next()
                .expect("a batch")
                .expect("valid");
            assert_eq!(range.len(), batch::BATCH_HEADER_LEN, "{what}");
            assert_eq!(
                (
                    first.base_offset,
                    first.last_offset(),
                    first.records_count,
                    first.producer_id,
                    first.producer_epoch,
                    first.base_sequence,
                    first.base_timestamp,
                    first.max_timestamp,
                    first.compression(),
                    first.is_transactional(),
                ),
                (2, 3, 0, 7, 0, 2, 30, 40, batch::Compression::None, false),
                "{what}"
            );
            batch::validate_batches(&bytes[range], 1 << 20).expect("a valid produce batch");
        }
        // The time index skips the empty batch to the first record at or after the time.
        assert_eq!(log.offset_for_timestamp(25).expect("lookup"), Some((5, 60)));

        // Reopen (indexes rebuilt from the rewritten segments), then replay the producer
        // state as the broker does at start-up.
        drop(log);
        for ext in ["index", "timeindex"] {
            std::fs::remove_file(dir.path().join(format!("{:020}.{ext}", 2))).expect("remove");
        }
        let (mut log, report) = PartitionLog::open(dir.path(), config(1), 0).expect("reopen");
        assert_eq!(report.truncated_bytes, 0);
        assert_eq!(summary(&log).1, cleaned.1, "{what}");
        assert_eq!(summary(&log).0.len(), 4, "{what}");
        let mut state = ProducerStateManager::new();
        log.scan_batches(0, |h, _| state.on_batch(h, 0))
            .expect("scan");
        let entry = state.entry(7).expect("producer 7 is known");
        let last = entry.batches.back().expect("a batch");
        assert_eq!(
            (
                entry.epoch,
                last.first_seq,
                last.last_seq,
                last.first_offset,
                last.last_offset
            ),
            (0, 2, 3, 2, 3),
            "{what}"
        );
        // The next batch of producer 7 continues its sequence; a retry of the empty batch is
        // recognized as a duplicate of offsets 2-3.
        let next =
            batch::parse_header(&encode_seq(&[rec("q", "1", 110)], codec, 7, 4)).expect("header");
        assert_eq!(state.check(&next), Ok(strata_log::Check::Append), "{what}");
        let retry = batch::parse_header(&encode_seq(
            &[rec("a", "2", 30), rec("b", "2", 40)],
            codec,
            7,
            2,
        ))
        .expect("header");
        assert!(
            matches!(state.check(&retry), Ok(strata_log::Check::Duplicate(b)) if b.first_offset == 2),
            "{what}"
        );

        // Producer 7 writes again: its empty batch is no longer its last, and the next pass
        // drops it although no record goes.
        log.append(&encode_seq(&[rec("q", "1", 110)], codec, 7, 4), 0, None)
            .expect("append");
        log.append(&encode_seq(&[rec("r", "1", 120)], codec, -1, 0), 0, None)
            .expect("append");
        let report = log.clean(1_000, KEEP_TOMBSTONES, 12).expect("clean");
        assert_eq!(
            (report.segments_cleaned, report.records_removed),
            (1, 0),
            "{what}"
        );
        let (batches, offsets) = summary(&log);
        assert_eq!(batches[0].0, 4, "{what}: the empty batch went");
        assert!(batches.iter().all(|b| b.2 > 0), "{what}");
        assert_eq!(offsets, vec![5, 6, 7, 8, 9, 10, 11], "{what}");
        assert_eq!(log.segment_base_offsets(), vec![0, 2, 4, 6, 9, 10, 11]);
        // A pass with nothing to do changes nothing.
        let report = log.clean(1_000, KEEP_TOMBSTONES, 12).expect("clean");
        assert_eq!(report.segments_cleaned, 0, "{what}");
    }
}

/// A crash after every step of a cleaning pass leaves each segment either as it was or
/// cleaned (earlier segments are cleaned first) and the delete horizons either all recorded
/// or none; reopening then cleaning again gives the fully cleaned log, and a pass after the
/// horizons removes the same tombstones as without the crash.
///
/// Every run crashes after each step of the pass (every step of a segment rewrite and of the
/// horizon checkpoint). By default it runs two small logs (fast); `STRATA_CLEANER_SEEDS=<n>`
/// runs `n` seeds of larger logs (about 25 segments each), `STRATA_COMPACTION_SEED=<seed>`
/// one larger log.
#[test]
fn crash_at_every_step_leaves_old_or_new_segments() {
    let env_number = |name: &str| {
        std::env::var(name).ok().map(|s| {
            s.parse::<u64>()
                .unwrap_or_else(|_| panic!("{name}: a number"))
        })
    };
    // (first seed, how many seeds, batches per log)
    let explicit = env_number("STRATA_COMPACTION_SEED");
    let (first, count, batches) = match (explicit, env_number("STRATA_CLEANER_SEEDS")) {
        (Some(seed), _) => (seed, 1, 60),
        (None, Some(n)) => (100, n, 60),
        (None, None) => (100, 2, 20),
    };
    let now = 1_000_000;
    let opts = CleanOptions {
        delete_retention_ms: 1_000,
        min_compaction_lag_ms: 0,
    };
    let mut ran = 0;
    // Seeds whose log does not exercise every step (fewer than three segments cleaned, no
    // tombstone kept, so no horizon checkpoint) are skipped.
    for seed in first.. {
        if ran == count || seed >= first + 50 * count {
            break;
        }
        let result = std::panic::catch_unwind(|| crash_case(seed, batches, now, opts));
        match result {
            Ok(true) => ran += 1,
            Ok(false) => assert!(
                explicit.is_none(),
                "seed {seed} does not exercise every step"
            ),
            Err(panic) => {
                eprintln!(
                    "crash test failed with seed {seed} (rerun with STRATA_COMPACTION_SEED={seed})"
                );
                std::panic::resume_unwind(panic);
            }
        }
    }
    assert_eq!(ran, count, "usable seeds");
}

/// The crash test on the log of `seed`; false (nothing checked) if that log does not exercise
/// every step.
fn crash_case(seed: u64, batches: usize, now: i64, opts: CleanOptions) -> bool {
    let reference = tempfile::tempdir().expect("tempdir");
    let (mut clean_log, appended) = build(reference.path(), seed, batches, 600);
    let bases = clean_log.segment_base_offsets();
    let end = clean_log.log_end_offset();
    let old = all_records(&appended);
    let full = clean_log.clean(now, opts, end).expect("clean");
    if full.segments_cleaned < 3 || full.horizons_recorded == 0 {
        return false;
    }
    let new = read_all(&clean_log).1;
    let mut model = Model::new(&appended);
    model.clean(&bases, end, now, opts, end);
    assert_eq!(new, model.records());
    let horizons = clean_log.delete_horizons();
    let after_horizon = now + opts.delete_retention_ms;
    clean_log
        .clean(after_horizon, opts, end)
        .expect("clean after the horizon");
    let newer = read_all(&clean_log).1;
    model.clean(&bases, end, after_horizon, opts, end);
    assert_eq!(newer, model.records());
    if newer.len() == new.len() {
        return false; // no tombstone went
    }
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
        let (mut log, _) = build(dir.path(), seed, batches, 600);
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
    true
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
            let (batches, records) = read_all(&log);
            assert_eq!(records, model.records(), "{what}");
            assert_eq!(empty_batches(&batches), model.empty_batches(), "{what}");
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
