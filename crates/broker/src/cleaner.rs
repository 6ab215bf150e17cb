//! The log cleaner: compacts partitions of topics whose `cleanup.policy` includes `compact`.
//!
//! Every `log.cleaner.backoff.ms` one pass runs on the blocking pool and asks each compacted
//! partition's log to clean its closed segments below the high watermark
//! (`PartitionLog::clean`): the latest record per key stays, tombstones go after
//! `delete.retention.ms`, nothing younger than `min.compaction.lag.ms` is touched. One pass
//! cleans one partition at a time; its key map is bounded by `log.cleaner.dedupe.buffer.size`
//! (keys beyond it are left for a later pass); `log.cleaner.io.max.bytes.per.second` paces
//! passes by the bytes they rewrote.

use std::sync::Arc;
use std::time::Duration;

use crate::broker::Broker;

pub fn start(broker: &Arc<Broker>) {
    let enabled = broker
        .config
        .value("log.cleaner.enable")
        .is_none_or(|v| v.trim().eq_ignore_ascii_case("true"));
    if !enabled {
        return;
    }
    let backoff_ms = broker
        .config
        .value("log.cleaner.backoff.ms")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(15_000)
        .max(10);
    // The key map's memory: log.cleaner.dedupe.buffer.size, at about 32 bytes per key
    // (passes run one partition at a time).
    let max_keys = broker
        .config
        .value("log.cleaner.dedupe.buffer.size")
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(134_217_728)
        .max(32)
        / 32;
    // log.cleaner.io.max.bytes.per.second: after a pass, wait until the bytes it read fit
    // the rate (passes are throttled as a whole).
    let max_bytes_per_sec = broker
        .config
        .value("log.cleaner.io.max.bytes.per.second")
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|r| r.is_finite() && *r > 0.0);
    let weak = Arc::downgrade(broker);
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
            drop(broker);
            if partitions.is_empty() {
                continue;
            }
            let _ = tokio::task::spawn_blocking(move || {
                let now = crate::partition::now_ms();
                for p in partitions {
                    let started = std::time::Instant::now();
                    let bytes = p.clean(now, max_keys);
                    if let Some(rate) = max_bytes_per_sec {
                        let budget = Duration::from_secs_f64(bytes as f64 / rate);
                        if let Some(rest) = budget.checked_sub(started.elapsed()) {
                            std::thread::sleep(rest.min(Duration::from_secs(60)));
                        }
                    }
                }
            })
            .await;
        }
    });
}
