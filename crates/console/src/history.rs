//! A short memory of how topics and groups move, for the console's sparklines and lag trend:
//! every `console.history.interval.ms` (default 10 s) the produce rate of each topic and the
//! total lag of each group are sampled; the last [`POINTS`] samples of each are kept.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_broker::broker::Broker;

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

    /// Takes one sample (blocking: walks the partitions and group shards).
    pub fn sample(&self, broker: &Broker) {
        let now = Instant::now();
        let counts = broker.metrics.topic_records_in();
        let groups = strata_broker::groupview::all_groups(broker);
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
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
