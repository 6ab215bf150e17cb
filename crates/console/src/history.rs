//! A short memory of how topics and groups move, for the console's sparklines and lag trend:
//! every `console.history.interval.ms` (default 10 s) the produce rate of each topic and the
//! total lag of each group are sampled; the last [`POINTS`] samples of each are kept.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_broker::broker::Broker;
use strata_broker::partition::Partition;

/// Samples kept per series (10 minutes at the default interval).
pub const POINTS: usize = 60;

#[derive(Default)]
pub struct History {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Per topic: the records-in counter at the last sample, when, and the rates.
    topics: HashMap<String, (u64, Instant, VecDeque<f64>)>,
    groups: HashMap<String, VecDeque<f64>>,
    /// Time lag per (group, topic, partition) at the last sample: seconds, and when (ms).
    time_lags: HashMap<(String, String, i32), (f64, i64)>,
}

/// How far behind the newest record a consumer at `committed` is, in seconds: the newest
/// record's timestamp (the max timestamp of the batch holding the last offset below the high
/// watermark) minus the first unconsumed one's (the base timestamp of the batch holding the
/// committed offset, which overstates by at most one batch's span). Read from batch headers
/// only; `None` when a timestamp is unknown (-1) or the batches cannot be read.
pub fn time_lag(partition: &Partition, committed: i64) -> Option<f64> {
    let hw = partition.high_watermark();
    if committed >= hw {
        return Some(0.0);
    }
    let next = batch_timestamps(partition, committed.max(partition.log_start_offset()))?.0;
    let newest = batch_timestamps(partition, hw - 1)?.1;
    if next < 0 || newest < 0 {
        return None;
    }
    Some((newest - next).max(0) as f64 / 1000.0)
}

/// The base and max timestamps of the batch holding `offset`.
fn batch_timestamps(partition: &Partition, offset: i64) -> Option<(i64, i64)> {
    let read = partition.read(offset, 1).ok()?;
    let (header, _) = strata_protocol::batch::iter_batches(&read.records)
        .next()?
        .ok()?;
    Some((header.base_timestamp, header.max_timestamp))
}

fn push(series: &mut VecDeque<f64>, v: f64) {
    series.push_back(v);
    while series.len() > POINTS {
        series.pop_front();
    }
}

impl History {
    /// Records per second into each topic over the recent samples, oldest first.
    pub fn topic_rates(&self, topic: &str) -> Vec<f64> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .topics
            .get(topic)
            .map(|(_, _, r)| r.iter().copied().collect())
            .unwrap_or_default()
    }

    /// A group's total lag at each recent sample, oldest first.
    pub fn group_lag(&self, group: &str) -> Vec<f64> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .groups
            .get(group)
            .map(|r| r.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The time lag of a group's partition at the last sample.
    pub fn time_lag(&self, group: &str, topic: &str, partition: i32) -> Option<(f64, i64)> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .time_lags
            .get(&(group.to_string(), topic.to_string(), partition))
            .copied()
    }

    /// Every sampled time lag: (group, topic, partition) → seconds.
    pub fn time_lags(&self) -> Vec<((String, String, i32), f64)> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = inner
            .time_lags
            .iter()
            .map(|(k, (v, _))| (k.clone(), *v))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Takes one sample (blocking: walks the partitions and group shards).
    pub fn sample(&self, broker: &Broker) {
        let now = Instant::now();
        let now_ms = strata_broker::partition::now_ms();
        let counts = broker.metrics.topic_records_in();
        let groups = strata_broker::groupview::all_groups(broker);
        let image = broker.image();
        let mut time_lags = HashMap::new();
        for g in &groups {
            for o in &g.offsets {
                let (Some(committed), Some(t)) = (o.committed, image.topic_by_name(&o.topic))
                else {
                    continue;
                };
                let Some(p) = broker.partitions.get(&t.topic_id, o.partition) else {
                    continue;
                };
                if let Some(lag) = time_lag(&p, committed) {
                    time_lags.insert(
                        (g.group.clone(), o.topic.clone(), o.partition),
                        (lag, now_ms),
                    );
                }
            }
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.time_lags = time_lags;
        let live: std::collections::HashSet<&String> = counts.iter().map(|(t, _)| t).collect();
        inner.topics.retain(|t, _| live.contains(t));
        for (topic, count) in &counts {
            match inner.topics.get_mut(topic) {
                Some((last, at, rates)) => {
                    let secs = now.duration_since(*at).as_secs_f64().max(1e-3);
                    push(rates, count.saturating_sub(*last) as f64 / secs);
                    *last = *count;
                    *at = now;
                }
                None => {
                    inner
                        .topics
                        .insert(topic.clone(), (*count, now, VecDeque::new()));
                }
            }
        }
        let names: std::collections::HashSet<&String> = groups.iter().map(|g| &g.group).collect();
        inner.groups.retain(|g, _| names.contains(g));
        for g in &groups {
            let total: i64 = g.offsets.iter().filter_map(|o| o.lag).sum();
            push(
                inner.groups.entry(g.group.clone()).or_default(),
                total as f64,
            );
        }
    }

    /// Samples every `interval` until the task is dropped.
    pub async fn run(self: Arc<Self>, broker: Arc<Broker>, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let history = self.clone();
            let b = broker.clone();
            let _ = tokio::task::spawn_blocking(move || history.sample(&b)).await;
        }
    }
}
