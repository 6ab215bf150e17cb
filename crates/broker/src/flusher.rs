//! Group commit: fsyncs off the request path.
//!
//! A partition with new data queues itself here (at most once: `flush_queued`). The flusher
//! takes everything queued, asks each log for a [`strata_log::SyncJob`] (duplicated file
//! handles, so the fsync runs without the log lock), runs the jobs on the blocking pool, and
//! then tells each partition how far it is durable. While one round of fsyncs runs, new
//! appends queue up and are covered by the next round: one fsync covers every batch appended
//! meanwhile.
//!
//! An fsync error takes the data directory offline (`log_dir.rs`): the partition's high
//! watermark never passes data written before the error, and every partition the flusher
//! sees afterwards is woken without an fsync, so that its waiting producers get
//! KAFKA_STORAGE_ERROR at once.
//!
//! With `strata.fsync.before.ack=false` partitions queue themselves only when `flush.messages`
//! or `flush.ms` say so (a periodic tick checks `flush.ms`), which is Kafka's behaviour.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::metrics::BrokerMetrics;
use crate::partition::{now_ms, Partition};

#[derive(Clone)]
pub struct Flusher {
    tx: mpsc::UnboundedSender<Arc<Partition>>,
}

impl Flusher {
    /// Starts the flusher task, running up to `parallelism` partitions' fsyncs at once; it
    /// ends when every `Flusher` handle is dropped.
    pub fn start(parallelism: usize, metrics: Arc<BrokerMetrics>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx, parallelism.max(1), metrics));
        Flusher { tx }
    }

    /// Queues `partition` for an fsync if it is not queued already. The channel holds each
    /// partition at most once, so it is bounded by the number of partitions.
    pub fn request(&self, partition: &Arc<Partition>) {
        if !partition
            .flush_queued
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            // Fails only when the flusher is gone (shutdown); then the final flush covers it.
            let _ = self.tx.send(partition.clone());
        }
    }

    /// Queues the partition if its flush policy says so.
    pub fn after_append(&self, partition: &Arc<Partition>) {
        if partition.needs_flush(now_ms()) {
            self.request(partition);
        }
    }

    /// Every `interval`, queue partitions whose `flush.ms` has passed.
    pub fn start_ticker(&self, partitions: Weak<crate::manager::PartitionManager>) {
        let flusher = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1000));
            loop {
                tick.tick().await;
                let Some(manager) = partitions.upgrade() else {
                    return;
                };
                let now = now_ms();
                for p in manager.all() {
                    if p.needs_flush(now) && p.log_end_offset() > 0 {
                        flusher.request(&p);
                    }
                }
            }
        });
    }
}

/// Fsyncs one partition now, on the calling thread (used at shutdown and before snapshots).
/// Returns whether everything written so far is durable.
pub fn flush_now(partition: &Partition) -> bool {
    if partition.is_offline() {
        return false;
    }
    match partition.sync_job() {
        None => true,
        Some(job) => run_job(partition, job, None),
    }
}

/// Runs one partition's fsync job and publishes the result; a failure takes the directory
/// offline. Blocking.
fn run_job(
    partition: &Partition,
    job: strata_log::SyncJob,
    metrics: Option<&BrokerMetrics>,
) -> bool {
    let started = std::time::Instant::now();
    let result = job.run();
    if let Some(m) = metrics {
        m.storage.fsync.observe_duration(started.elapsed());
    }
    match result {
        Ok(durable) => {
            partition.on_flushed(durable);
            true
        }
        Err(error) => {
            partition.fail_storage("fsync", &error);
            false
        }
    }
}

async fn run(
    mut rx: mpsc::UnboundedReceiver<Arc<Partition>>,
    parallelism: usize,
    metrics: Arc<BrokerMetrics>,
) {
    while let Some(first) = rx.recv().await {
        let mut round = vec![first];
        while let Ok(p) = rx.try_recv() {
            round.push(p);
        }
        let round_started = std::time::Instant::now();
        metrics
            .storage
            .flush_round_partitions
            .observe_count(round.len() as u64);
        let jobs: Vec<_> = round
            .into_iter()
            .map(|p| {
                // Clear the flag before taking the job: an append after this point queues the
                // partition again and is covered by a later round.
                p.flush_queued
                    .store(false, std::sync::atomic::Ordering::Release);
                let job = p.sync_job();
                (p, job)
            })
            .collect();
        // The partitions' fsyncs run side by side (at most `parallelism` at once,
        // `strata.fsync.parallelism`), so a round takes about as long as its slowest fsync,
        // not the sum of them: acks=all latency does not grow with the number of partitions
        // written at once.
        let lanes = jobs.len().clamp(1, parallelism);
        let mut groups: Vec<Vec<_>> = (0..lanes).map(|_| Vec::new()).collect();
        for (i, item) in jobs.into_iter().enumerate() {
            groups[i % lanes].push(item);
        }
        let tasks = groups.into_iter().map(|group| {
            let metrics = metrics.clone();
            tokio::task::spawn_blocking(move || run_group(group, &metrics))
        });
        for done in futures::future::join_all(tasks).await {
            if let Err(error) = done {
                tracing::error!(%error, "flusher task failed");
            }
        }
        metrics
            .storage
            .flush_round
            .observe_duration(round_started.elapsed());
    }
}

fn run_group(jobs: Vec<(Arc<Partition>, Option<strata_log::SyncJob>)>, metrics: &BrokerMetrics) {
    for (p, job) in jobs {
        if p.is_offline() {
            // Never fsync again after an error (a later success would hide lost pages); wake
            // the waiters so they answer KAFKA_STORAGE_ERROR.
            p.wake();
            continue;
        }
        if let Some(job) = job {
            run_job(&p, job, Some(metrics));
        }
    }
}
