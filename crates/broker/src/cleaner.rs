//! The log cleaner: compacts partitions of topics whose `cleanup.policy` includes `compact`.
//!
//! `log.cleaner.threads` workers (read at start-up; 0 runs none) each wake every
//! `log.cleaner.backoff.ms` and run a round on the blocking pool: repeatedly pick the
//! partition with the highest cleaning priority (`Partition::cleaning_priority`: due by
//! `min.cleanable.dirty.ratio`, `max.compaction.lag.ms`, or a passed delete horizon) that no
//! other worker is cleaning, claim it, and clean its closed segments below the high watermark
//! (`Partition::clean`, `PartitionLog::clean_concurrently`): the latest record per key stays,
//! tombstones go once `delete.retention.ms` has passed since their segment was first cleaned,
//! nothing younger than `min.compaction.lag.ms` is touched. A round ends when nothing
//! unclaimed is due (each worker cleans a partition at most once a round). Two workers never
//! clean the same partition at once (the claims; the log also refuses a second pass). Each
//! worker's key map gets `log.cleaner.dedupe.buffer.size / threads` (keys beyond it are left
//! for a later pass); `log.cleaner.io.max.bytes.per.second` is one budget shared by all
//! workers, charged with the bytes each pass rewrote.
//!
//! A pass holds the partition's log lock only briefly: to take a snapshot of the segments it
//! reads, and to swap each rewritten segment in (renames, directory fsyncs, index files) and
//! finally write the delete horizons. The expensive part, reading the log to build the key
//! map and writing and fsyncing the rewritten segments, runs without it, so produce requests
//! and fetches on a compacted partition go on meanwhile. If the log changed under the pass
//! (retention, DeleteRecords or a truncation deleted or cut a segment it read), or the
//! partition was deleted or its directory went offline, the pass discards what it has not
//! swapped yet and gives up; the partition stays due and a later round cleans it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::broker::Broker;
use crate::partition::Partition;

pub fn start(broker: &Arc<Broker>) {
    let enabled = broker
        .config
        .value("log.cleaner.enable")
        .is_none_or(|v| v.trim().eq_ignore_ascii_case("true"));
    if !enabled {
        return;
    }
    let config = &broker.config;
    let backoff_ms = config
        .parsed::<u64>("log.cleaner.backoff.ms")
        .unwrap_or(15_000)
        .max(10);
    let threads = config
        .parsed::<usize>("log.cleaner.threads")
        .unwrap_or(1)
        .min(64);
    if threads == 0 {
        tracing::warn!("log.cleaner.threads is 0: no partition will be compacted");
        return;
    }
    // The key map's memory: log.cleaner.dedupe.buffer.size shared by the workers, at about
    // 32 bytes per key.
    let dedupe_bytes = config
        .parsed::<usize>("log.cleaner.dedupe.buffer.size")
        .unwrap_or(134_217_728);
    let max_keys = (dedupe_bytes / threads).max(32) / 32;
    let max_bytes_per_sec = config
        .parsed::<f64>("log.cleaner.io.max.bytes.per.second")
        .filter(|r| r.is_finite() && *r > 0.0);
    let shared = Arc::new((Claims::default(), Throttle::new(max_bytes_per_sec)));
    for _ in 0..threads {
        let weak = Arc::downgrade(broker);
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(backoff_ms));
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(broker) = weak.upgrade() else { return };
                let partitions: Vec<_> = broker
                    .partitions
                    .all()
                    .into_iter()
                    .filter(|p| p.settings().compact)
                    .collect();
                if partitions.is_empty() {
                    continue;
                }
                let shared = shared.clone();
                let metrics = broker.metrics.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    let (claims, throttle) = &*shared;
                    run_round(
                        &partitions,
                        claims,
                        throttle,
                        max_keys,
                        crate::partition::now_ms,
                        &metrics.cleaner,
                    );
                })
                .await;
            }
        });
    }
}

/// What a cleaner worker needs of a partition (a trait so the scheduling can be tested).
pub(crate) trait Cleanable: Send + Sync {
    /// `None` if no pass is due; otherwise higher is cleaned first.
    fn priority(&self, now_ms: i64) -> Option<f64>;
    /// Runs a pass if one is due; returns the bytes rewritten.
    fn clean(&self, now_ms: i64, max_keys: usize) -> u64;
}

impl Cleanable for Partition {
    fn priority(&self, now_ms: i64) -> Option<f64> {
        self.cleaning_priority(now_ms)
    }

    fn clean(&self, now_ms: i64, max_keys: usize) -> u64 {
        Partition::clean(self, now_ms, max_keys)
    }
}

/// The partitions being cleaned, by the address of their shared `Arc` (stable while a worker
/// holds it, which it does for as long as its claim lasts).
#[derive(Default)]
pub(crate) struct Claims(Mutex<HashSet<usize>>);

impl Claims {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<usize>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn claim_key<P>(p: &Arc<P>) -> usize {
    Arc::as_ptr(p) as *const () as usize
}

/// `log.cleaner.io.max.bytes.per.second` across all workers: each pass's rewritten bytes push
/// a shared "free again at" instant forward by `bytes / rate`; workers wait for it before
/// and after a pass.
pub(crate) struct Throttle {
    rate: Option<f64>,
    free_at: Mutex<Instant>,
}

impl Throttle {
    pub(crate) fn new(bytes_per_sec: Option<f64>) -> Self {
        Throttle {
            rate: bytes_per_sec,
            free_at: Mutex::new(Instant::now()),
        }
    }

    fn free_at(&self) -> std::sync::MutexGuard<'_, Instant> {
        self.free_at.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait(&self) {
        if self.rate.is_some() {
            let until = *self.free_at();
            if let Some(rest) = until.checked_duration_since(Instant::now()) {
                std::thread::sleep(rest.min(Duration::from_secs(60)));
            }
        }
    }

    /// Charges a pass that started at `started` and rewrote `bytes`, then waits.
    fn charge(&self, started: Instant, bytes: u64) {
        let Some(rate) = self.rate else { return };
        {
            let mut free_at = self.free_at();
            let from = (*free_at).max(started);
            let cost = Duration::from_secs_f64(bytes as f64 / rate).min(Duration::from_secs(60));
            *free_at = from + cost;
        }
        self.wait();
    }
}

/// One worker's round over `partitions`: cleans the most wanted partition that is neither
/// claimed by another worker nor cleaned by this one in this round, until none is left.
/// Returns how many passes it ran.
pub(crate) fn run_round<P: Cleanable>(
    partitions: &[Arc<P>],
    claims: &Claims,
    throttle: &Throttle,
    max_keys: usize,
    now_ms: impl Fn() -> i64,
    metrics: &crate::metrics::CleanerMetrics,
) -> usize {
    let mut done = vec![false; partitions.len()];
    let mut passes = 0;
    loop {
        throttle.wait();
        let now = now_ms();
        let claimed = claims.lock().clone();
        let mut wanted: Vec<(usize, f64)> = partitions
            .iter()
            .enumerate()
            .filter(|(i, p)| !done[*i] && !claimed.contains(&claim_key(p)))
            .filter_map(|(i, p)| p.priority(now).map(|priority| (i, priority)))
            .collect();
        wanted.sort_by(|a, b| b.1.total_cmp(&a.1));
        // Another worker may have claimed some since the snapshot: take the first still free.
        let picked = {
            let mut claims = claims.lock();
            wanted
                .iter()
                .map(|(i, _)| *i)
                .find(|i| claims.insert(claim_key(&partitions[*i])))
        };
        let Some(i) = picked else {
            if wanted.is_empty() {
                return passes;
            }
            // Everything wanted was claimed meanwhile: look again without those.
            for (i, _) in wanted {
                done[i] = true;
            }
            continue;
        };
        done[i] = true;
        let started = Instant::now();
        let bytes = partitions[i].clean(now, max_keys);
        claims.lock().remove(&claim_key(&partitions[i]));
        passes += 1;
        metrics.passes.inc();
        metrics.bytes_written.add(bytes);
        metrics.pass_duration.observe_duration(started.elapsed());
        throttle.charge(started, bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

    /// A partition that wants one pass, takes a little time, and checks it is never cleaned
    /// by two workers at once.
    struct Fake {
        cleaning: AtomicBool,
        passes: AtomicU32,
        priority: f64,
        overlaps: Arc<AtomicUsize>,
    }

    impl Cleanable for Fake {
        fn priority(&self, _now_ms: i64) -> Option<f64> {
            (self.passes.load(Ordering::SeqCst) == 0).then_some(self.priority)
        }

        fn clean(&self, _now_ms: i64, _max_keys: usize) -> u64 {
            if self.cleaning.swap(true, Ordering::SeqCst) {
                self.overlaps.fetch_add(1, Ordering::SeqCst);
            }
            std::thread::sleep(Duration::from_millis(3));
            self.passes.fetch_add(1, Ordering::SeqCst);
            self.cleaning.store(false, Ordering::SeqCst);
            1_000
        }
    }

    fn fakes(n: usize, overlaps: &Arc<AtomicUsize>) -> Vec<Arc<Fake>> {
        (0..n)
            .map(|i| {
                Arc::new(Fake {
                    cleaning: AtomicBool::new(false),
                    passes: AtomicU32::new(0),
                    priority: (i % 7) as f64 / 7.0,
                    overlaps: overlaps.clone(),
                })
            })
            .collect()
    }

    /// Runs `workers` threads, each doing rounds over the same partitions.
    fn run_workers(partitions: &[Arc<Fake>], workers: usize, throttle: &Throttle, rounds: usize) {
        let claims = Claims::default();
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    for _ in 0..rounds {
                        run_round(
                            partitions,
                            &claims,
                            throttle,
                            100,
                            || 0,
                            &Default::default(),
                        );
                    }
                });
            }
        });
        assert!(claims.lock().is_empty(), "every claim is released");
    }

    #[test]
    fn workers_never_share_a_partition_and_clean_them_all() {
        for workers in [1, 2, 4] {
            let overlaps = Arc::new(AtomicUsize::new(0));
            let partitions = fakes(40, &overlaps);
            // Every partition is also handed to each worker several times over: only the
            // claims keep two workers apart.
            let mut repeated = partitions.clone();
            repeated.extend(partitions.iter().cloned());
            let unthrottled = Throttle::new(None);
            let started = Instant::now();
            run_workers(&repeated, workers, &unthrottled, 3);
            assert_eq!(overlaps.load(Ordering::SeqCst), 0, "{workers} workers");
            for (i, p) in partitions.iter().enumerate() {
                assert!(
                    p.passes.load(Ordering::SeqCst) >= 1,
                    "partition {i} cleaned with {workers} workers"
                );
            }
            eprintln!("{workers} workers: {:?}", started.elapsed());
        }
    }

    #[test]
    fn a_partition_that_stays_due_is_cleaned_once_a_round() {
        struct AlwaysDue(AtomicU32);
        impl Cleanable for AlwaysDue {
            fn priority(&self, _: i64) -> Option<f64> {
                Some(1.0)
            }
            fn clean(&self, _: i64, _: usize) -> u64 {
                self.0.fetch_add(1, Ordering::SeqCst);
                0
            }
        }
        let p = vec![Arc::new(AlwaysDue(AtomicU32::new(0)))];
        let metrics = crate::metrics::CleanerMetrics::default();
        let passes = run_round(
            &p,
            &Claims::default(),
            &Throttle::new(None),
            1,
            || 0,
            &metrics,
        );
        assert_eq!(metrics.passes.get(), passes as u64);
        assert_eq!(metrics.pass_duration.count(), passes as u64);
        assert_eq!((passes, p[0].0.load(Ordering::SeqCst)), (1, 1));
    }

    #[test]
    fn the_io_limit_is_shared_by_the_workers() {
        // 12 passes of 1000 bytes at 20_000 bytes/s take at least 0.6 s however many workers
        // there are (the first pass is free of waiting before it).
        let overlaps = Arc::new(AtomicUsize::new(0));
        let partitions = fakes(12, &overlaps);
        let throttle = Throttle::new(Some(20_000.0));
        let started = Instant::now();
        run_workers(&partitions, 3, &throttle, 1);
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(550), "{elapsed:?}");
        assert!(partitions
            .iter()
            .all(|p| p.passes.load(Ordering::SeqCst) >= 1));
    }
}
