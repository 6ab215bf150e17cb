//! What the broker counts, and its `/metrics` exposition.
//!
//! The hot paths only add to atomics they already hold: a request's latency goes into a
//! histogram picked by index from a table laid out once from the served API versions
//! ([`BrokerMetrics::request_timer`]); produce and fetch add to their partition's
//! [`TopicMetrics`] (resolved when the partition is opened); a connection's gauge is resolved
//! once per listener. Everything else (offsets, sizes, groups, lag) is read at scrape time
//! from state the broker keeps anyway, in [`render`].
//!
//! Names: Strata's own series start with `strata_`; partition offsets and consumer-group
//! offsets and lag are also exported under the names and labels `kafka_exporter` uses
//! (`kafka_topic_partition_current_offset`, `kafka_consumergroup_lag`, ...), so existing
//! dashboards work unchanged. `docs/metrics.md` lists every family.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kafka_protocol::messages::ApiKey;
use strata_metrics::{
    Counter, Exposition, Gauge, Histogram, Kind, COUNTS, LONG_SECONDS, REQUEST_SECONDS,
    STORAGE_SECONDS,
};

use crate::broker::Broker;
use crate::groupview::OffsetView;

/// The broker's metrics. One per broker, shared by `Arc`.
pub struct BrokerMetrics {
    /// By API key: the first served version and one histogram per served version.
    requests: Vec<Option<ApiRequests>>,
    listeners: Mutex<BTreeMap<String, Arc<ListenerMetrics>>>,
    topics: Mutex<HashMap<String, Arc<TopicMetrics>>>,
    started: SystemTime,
    pub storage: StorageMetrics,
    pub cleaner: CleanerMetrics,
}

/// Durability: fsyncs, the flusher's rounds (group commit), and how long acks=all waits.
pub struct StorageMetrics {
    /// One partition's fsync.
    pub fsync: Histogram,
    /// One flusher round: the fsyncs of every partition queued at its start, side by side.
    pub flush_round: Histogram,
    /// Partitions per flusher round.
    pub flush_round_partitions: Histogram,
    /// From a produce request's append to the high watermark passing its batches (acks=all).
    pub durable_wait: Histogram,
}

/// The log cleaner's passes.
pub struct CleanerMetrics {
    pub passes: Counter,
    pub bytes_written: Counter,
    pub pass_duration: Histogram,
}

impl Default for CleanerMetrics {
    fn default() -> Self {
        CleanerMetrics {
            passes: Counter::new(),
            bytes_written: Counter::new(),
            pass_duration: Histogram::seconds(LONG_SECONDS),
        }
    }
}

struct ApiRequests {
    name: String,
    min_version: i16,
    by_version: Box<[Histogram]>,
}

/// Connections of one listener.
#[derive(Debug, Default)]
pub struct ListenerMetrics {
    pub connections: Gauge,
    pub accepted: Counter,
}

/// Client traffic of one topic, added to by produce and fetch.
#[derive(Debug, Default)]
pub struct TopicMetrics {
    pub bytes_in: Counter,
    pub records_in: Counter,
    pub bytes_out: Counter,
    pub records_out: Counter,
}

impl Default for BrokerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl BrokerMetrics {
    pub fn new() -> Self {
        let mut requests: Vec<Option<ApiRequests>> = Vec::new();
        for key in strata_protocol::api::SUPPORTED_APIS {
            let Some(range) = strata_protocol::api::supported_versions(*key) else {
                continue;
            };
            let index = *key as i16 as usize;
            if requests.len() <= index {
                requests.resize_with(index + 1, || None);
            }
            requests[index] = Some(ApiRequests {
                name: format!("{key:?}"),
                min_version: range.min,
                by_version: (range.min..=range.max)
                    .map(|_| Histogram::seconds(REQUEST_SECONDS))
                    .collect(),
            });
        }
        BrokerMetrics {
            requests,
            listeners: Mutex::new(BTreeMap::new()),
            topics: Mutex::new(HashMap::new()),
            started: SystemTime::now(),
            storage: StorageMetrics {
                fsync: Histogram::seconds(STORAGE_SECONDS),
                flush_round: Histogram::seconds(STORAGE_SECONDS),
                flush_round_partitions: Histogram::counts(COUNTS),
                durable_wait: Histogram::seconds(STORAGE_SECONDS),
            },
            cleaner: CleanerMetrics::default(),
        }
    }

    fn request_histogram(&self, api_key: ApiKey, version: i16) -> Option<&Histogram> {
        let api = self.requests.get(api_key as i16 as usize)?.as_ref()?;
        let i = usize::try_from(version - api.min_version).ok()?;
        api.by_version.get(i)
    }

    /// Starts timing a request read at `started`; [`RequestTimer::finish`] records it.
    pub fn request_timer(
        self: &Arc<Self>,
        api_key: ApiKey,
        version: i16,
        started: Instant,
    ) -> RequestTimer {
        RequestTimer {
            metrics: self.clone(),
            api_key,
            version,
            started,
        }
    }

    /// The connection counters of `listener`, resolved once per listener.
    pub fn listener(&self, listener: &str) -> Arc<ListenerMetrics> {
        let mut map = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(listener.to_string()).or_default().clone()
    }

    /// Records produced so far into each topic with open partitions.
    pub fn topic_records_in(&self) -> Vec<(String, u64)> {
        let map = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .map(|(k, v)| (k.clone(), v.records_in.get()))
            .collect()
    }

    /// The traffic counters of `topic`, resolved when a partition of it is opened.
    pub fn topic(&self, topic: &str) -> Arc<TopicMetrics> {
        let mut map = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(topic.to_string()).or_default().clone()
    }
}

/// A request being timed, from its frame being read to its response being ready.
pub struct RequestTimer {
    metrics: Arc<BrokerMetrics>,
    api_key: ApiKey,
    version: i16,
    started: Instant,
}

impl RequestTimer {
    pub fn finish(self) {
        if let Some(h) = self.metrics.request_histogram(self.api_key, self.version) {
            h.observe_duration(self.started.elapsed());
        }
    }
}

/// Holds a listener's connection gauge up while the connection lives.
pub struct ConnectionGauge(Arc<ListenerMetrics>);

impl ConnectionGauge {
    pub fn open(listener: Arc<ListenerMetrics>) -> Self {
        listener.accepted.inc();
        listener.connections.add(1);
        ConnectionGauge(listener)
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.0.connections.add(-1);
    }
}

/// Records (not batches) in a run of record batches: the count field of each whole batch
/// header (a partial batch at the end of a fetch response is not counted).
pub fn records_in_batches(mut bytes: &[u8]) -> u64 {
    const HEADER: usize = 61;
    let mut records = 0u64;
    while bytes.len() >= HEADER {
        let length = i32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        let Ok(total) = usize::try_from(length).map(|l| l + 12) else {
            break;
        };
        if total < HEADER || bytes.len() < total {
            break;
        }
        let count = i32::from_be_bytes([bytes[57], bytes[58], bytes[59], bytes[60]]);
        records += u64::try_from(count).unwrap_or(0);
        bytes = &bytes[total..];
    }
    records
}

/// The broker's whole exposition: requests, connections, topics, partitions, groups and
/// lag, and the process. Call it off the async workers (it takes each partition's log lock
/// briefly for its size, and each group shard's lock).
pub fn render(broker: &Broker) -> String {
    let mut e = Exposition::new();
    let m = &broker.metrics;
    let image = broker.image();

    e.family(
        "strata_build_info",
        Kind::Gauge,
        "The running Strata version (always 1).",
    );
    e.sample_int(&[("version", env!("CARGO_PKG_VERSION"))], 1);

    e.family(
        "strata_request_duration_seconds",
        Kind::Histogram,
        "Time from a request's frame being read to its response being ready, by API and version (_count counts requests).",
    );
    for api in m.requests.iter().flatten() {
        for (i, h) in api.by_version.iter().enumerate() {
            if h.count() > 0 {
                let version = (api.min_version + i as i16).to_string();
                e.histogram(&[("api", &api.name), ("version", &version)], h);
            }
        }
    }

    let listeners: Vec<(String, Arc<ListenerMetrics>)> = m
        .listeners
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    e.family(
        "strata_connections",
        Kind::Gauge,
        "Open client connections, by listener.",
    );
    for (name, l) in &listeners {
        e.sample_int(&[("listener", name)], l.connections.get());
    }
    e.family(
        "strata_connections_accepted_total",
        Kind::Counter,
        "Connections accepted, by listener (refused ones not included).",
    );
    for (name, l) in &listeners {
        e.sample_int(&[("listener", name)], l.accepted.get() as i64);
    }

    // Topic counters of topics that still exist (a deleted topic's series go away; a
    // re-created one starts again at 0, which Prometheus reads as a counter reset).
    let topics: Vec<(String, Arc<TopicMetrics>)> = {
        let mut map = m.topics.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|name, _| image.topic_by_name(name).is_some());
        let mut v: Vec<_> = map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    type Field = fn(&TopicMetrics) -> &Counter;
    let traffic: [(&str, &str, Field); 4] = [
        (
            "strata_topic_bytes_in_total",
            "Record-batch bytes produced by clients, by topic (as written).",
            |t| &t.bytes_in,
        ),
        (
            "strata_topic_records_in_total",
            "Records produced by clients, by topic.",
            |t| &t.records_in,
        ),
        (
            "strata_topic_bytes_out_total",
            "Record-batch bytes sent to fetching clients, by topic.",
            |t| &t.bytes_out,
        ),
        (
            "strata_topic_records_out_total",
            "Records sent to fetching clients, by topic (whole batches counted).",
            |t| &t.records_out,
        ),
    ];
    for (name, help, field) in traffic {
        e.family(name, Kind::Counter, help);
        for (topic, t) in &topics {
            e.sample_int(&[("topic", topic)], field(t).get() as i64);
        }
    }

    render_storage(&mut e, broker);
    render_partitions(&mut e, broker, &image);
    render_groups(&mut e, broker);
    render_process(&mut e, m.started);
    e.finish()
}

fn render_storage(e: &mut Exposition, broker: &Broker) {
    let s = &broker.metrics.storage;
    let histograms: [(&str, &str, &Histogram); 4] = [
        ("strata_log_fsync_duration_seconds", "One partition's fsync.", &s.fsync),
        ("strata_log_flush_round_duration_seconds", "One flusher round (group commit): the fsyncs of every partition queued at its start, run side by side.", &s.flush_round),
        ("strata_log_flush_round_partitions", "Partitions fsynced per flusher round.", &s.flush_round_partitions),
        ("strata_produce_durable_wait_seconds", "acks=all produce requests: from the append to the high watermark passing the batches (the group-commit latency a producer sees).", &s.durable_wait),
    ];
    for (name, help, h) in histograms {
        e.family(name, Kind::Histogram, help);
        e.histogram(&[], h);
    }
    let dir = &broker.partitions.log_dir;
    e.family(
        "strata_log_dir_online",
        Kind::Gauge,
        "1 while the log directory serves, 0 after a storage error took it offline.",
    );
    e.sample_int(
        &[("dir", &dir.path().display().to_string())],
        i64::from(!dir.is_offline()),
    );
    let c = &broker.metrics.cleaner;
    e.family(
        "strata_cleaner_passes_total",
        Kind::Counter,
        "Log cleaner passes over compacted partitions.",
    );
    e.sample_int(&[], c.passes.get() as i64);
    e.family(
        "strata_cleaner_bytes_written_total",
        Kind::Counter,
        "Bytes the log cleaner rewrote.",
    );
    e.sample_int(&[], c.bytes_written.get() as i64);
    e.family(
        "strata_cleaner_pass_duration_seconds",
        Kind::Histogram,
        "One log cleaner pass.",
    );
    e.histogram(&[], &c.pass_duration);
}

/// What a scrape needs of one partition this broker holds.
struct PartitionRow {
    topic: String,
    partition: i32,
    size: u64,
    start: i64,
    end: i64,
    hw: i64,
}

fn render_partitions(e: &mut Exposition, broker: &Broker, image: &strata_quorum::MetadataImage) {
    let mut rows: Vec<PartitionRow> = broker
        .partitions
        .all()
        .iter()
        .filter(|p| !p.is_deleted())
        .map(|p| PartitionRow {
            topic: p.topic.clone(),
            partition: p.index,
            size: p.size_bytes(),
            start: p.log_start_offset(),
            end: p.log_end_offset(),
            hw: p.high_watermark(),
        })
        .collect();
    rows.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    type Value = fn(&PartitionRow) -> i64;
    let strata: [(&str, &str, Value); 4] = [
        (
            "strata_partition_log_size_bytes",
            "Bytes of a partition's log segments.",
            |r| r.size as i64,
        ),
        (
            "strata_partition_log_start_offset",
            "A partition's log start offset.",
            |r| r.start,
        ),
        (
            "strata_partition_log_end_offset",
            "A partition's log end offset (next offset to be written).",
            |r| r.end,
        ),
        (
            "strata_partition_high_watermark",
            "A partition's high watermark (what consumers may read up to).",
            |r| r.hw,
        ),
    ];
    let exporter: [(&str, &str, Value); 2] = [
        (
            "kafka_topic_partition_current_offset",
            "Current offset of a partition (its high watermark).",
            |r| r.hw,
        ),
        (
            "kafka_topic_partition_oldest_offset",
            "Oldest offset of a partition (its log start offset).",
            |r| r.start,
        ),
    ];
    for (name, help, value) in strata.into_iter().chain(exporter) {
        e.family(name, Kind::Gauge, help);
        for r in &rows {
            let partition = r.partition.to_string();
            e.sample_int(&[("topic", &r.topic), ("partition", &partition)], value(r));
        }
    }

    let offline = broker
        .partitions
        .all()
        .iter()
        .filter(|p| !p.is_deleted() && p.is_offline())
        .count();
    let (mut under_replicated, mut under_min_isr) = (0i64, 0i64);
    for t in image.topics() {
        let min_isr = t
            .configs
            .get("min.insync.replicas")
            .and_then(|v| v.parse::<usize>().ok())
            .or_else(|| broker.config.parsed::<usize>("min.insync.replicas"))
            .unwrap_or(1);
        for p in t.partitions.values() {
            under_replicated += i64::from(p.isr.len() < p.replicas.len());
            under_min_isr += i64::from(p.isr.len() < min_isr);
        }
    }
    let health: [(&str, &str, i64); 3] = [
        (
            "strata_partitions_offline",
            "Partitions this broker holds that cannot serve (their log directory failed).",
            offline as i64,
        ),
        (
            "strata_partitions_under_replicated",
            "Partitions whose ISR is smaller than their replica set.",
            under_replicated,
        ),
        (
            "strata_partitions_under_min_isr",
            "Partitions whose ISR is smaller than min.insync.replicas (acks=all is refused).",
            under_min_isr,
        ),
    ];
    for (name, help, v) in health {
        e.family(name, Kind::Gauge, help);
        e.sample_int(&[], v);
    }
    e.family("kafka_brokers", Kind::Gauge, "Brokers in the cluster.");
    e.sample_int(&[], 1);
    let topics: Vec<_> = image.topics().collect();
    e.family(
        "kafka_topic_partitions",
        Kind::Gauge,
        "Partitions of a topic.",
    );
    for t in &topics {
        e.sample_int(&[("topic", &t.name)], t.partitions.len() as i64);
    }
    type Assignment = fn(&strata_quorum::PartitionImage) -> i64;
    let assignment: [(&str, &str, Assignment); 5] = [
        (
            "kafka_topic_partition_replicas",
            "Replicas of a partition.",
            |p| p.replicas.len() as i64,
        ),
        (
            "kafka_topic_partition_in_sync_replica",
            "In-sync replicas of a partition.",
            |p| p.isr.len() as i64,
        ),
        (
            "kafka_topic_partition_leader",
            "Leader broker id of a partition.",
            |p| i64::from(p.leader),
        ),
        (
            "kafka_topic_partition_leader_is_preferred",
            "1 if a partition's leader is its preferred replica.",
            |p| i64::from(p.replicas.first() == Some(&p.leader)),
        ),
        (
            "kafka_topic_partition_under_replicated_partition",
            "1 if a partition has fewer in-sync replicas than replicas.",
            |p| i64::from(p.isr.len() < p.replicas.len()),
        ),
    ];
    for (name, help, value) in assignment {
        e.family(name, Kind::Gauge, help);
        for t in &topics {
            for p in t.partitions.values() {
                let partition = p.partition.to_string();
                e.sample_int(&[("topic", &t.name), ("partition", &partition)], value(p));
            }
        }
    }
}

fn render_groups(e: &mut Exposition, broker: &Broker) {
    let groups = crate::groupview::all_groups(broker);
    let mut states: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for g in &groups {
        *states.entry((g.protocol, &g.state)).or_default() += 1;
    }
    e.family(
        "strata_groups",
        Kind::Gauge,
        "Consumer groups, by protocol (classic or consumer) and state.",
    );
    for ((protocol, state), n) in &states {
        e.sample_int(&[("protocol", protocol), ("state", state)], *n);
    }
    e.family(
        "kafka_consumergroup_members",
        Kind::Gauge,
        "Members of a consumer group.",
    );
    for g in &groups {
        e.sample_int(&[("consumergroup", &g.group)], g.members.len() as i64);
    }
    // kafka_exporter's conventions: a partition of a consumed topic without a commit reports
    // offset -1 and lag -1, and stays out of the sums.
    type Pick = fn(&OffsetView) -> i64;
    let per_partition: [(&str, &str, Pick); 2] = [
        (
            "kafka_consumergroup_current_offset",
            "Committed offset of a consumer group in a partition (-1: none).",
            |o| o.committed.unwrap_or(-1),
        ),
        (
            "kafka_consumergroup_lag",
            "High watermark minus the committed offset (-1: no committed offset).",
            |o| o.lag.unwrap_or(-1),
        ),
    ];
    for (name, help, pick) in per_partition {
        e.family(name, Kind::Gauge, help);
        for g in &groups {
            for o in &g.offsets {
                let partition = o.partition.to_string();
                e.sample_int(
                    &[
                        ("consumergroup", &g.group),
                        ("topic", &o.topic),
                        ("partition", &partition),
                    ],
                    pick(o),
                );
            }
        }
        e.family(
            &format!("{name}_sum"),
            Kind::Gauge,
            &format!("{help} Summed over the topic's partitions that have one."),
        );
        for g in &groups {
            let mut sums: BTreeMap<&str, i64> = BTreeMap::new();
            for o in &g.offsets {
                let sum = sums.entry(&o.topic).or_default();
                if o.committed.is_some() {
                    *sum += pick(o).max(0);
                }
            }
            for (topic, sum) in sums {
                e.sample_int(&[("consumergroup", &g.group), ("topic", topic)], sum);
            }
        }
    }
    e.family(
        "strata_consumergroup_status",
        Kind::Gauge,
        "Lag status of a group, evaluated over its recent commits: 1 OK, 2 WARN, 3 ERR.",
    );
    for g in &groups {
        e.sample_int(&[("consumergroup", &g.group)], g.lag.status.code());
    }
    e.family(
        "strata_consumergroup_partition_status",
        Kind::Gauge,
        "Lag status of a group's partition: 1 OK, 2 WARN, 4 STOP, 5 STALL, 6 REWIND.",
    );
    for g in &groups {
        for ((topic, p), lag) in &g.lag.partitions {
            let partition = p.to_string();
            e.sample_int(
                &[
                    ("consumergroup", &g.group),
                    ("topic", topic),
                    ("partition", &partition),
                ],
                lag.status.code(),
            );
        }
    }
}

fn render_process(e: &mut Exposition, started: SystemTime) {
    let start = started
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64();
    e.family(
        "process_start_time_seconds",
        Kind::Gauge,
        "Start time of the process since the Unix epoch, in seconds.",
    );
    e.sample(&[], start.floor());
    // SAFETY: sysconf has no preconditions.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name (which may hold spaces) start after the last ')'.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the state.
        let ticks_at = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
        if let (Some(user), Some(system)) = (ticks_at(11), ticks_at(12)) {
            if ticks > 0 {
                e.family(
                    "process_cpu_seconds_total",
                    Kind::Counter,
                    "User and system CPU time spent, in seconds.",
                );
                e.sample(&[], (user + system) / ticks as f64);
            }
        }
    }
    if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
        if let Some(resident) = statm
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<i64>().ok())
        {
            e.family(
                "process_resident_memory_bytes",
                Kind::Gauge,
                "Resident memory size, in bytes.",
            );
            e.sample_int(&[], resident * page.max(1));
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        e.family("process_open_fds", Kind::Gauge, "Open file descriptors.");
        e.sample_int(&[], fds.count() as i64);
    }
    if let Ok(max) = crate::fd_limit::soft_limit() {
        e.family(
            "process_max_fds",
            Kind::Gauge,
            "Largest number of open file descriptors allowed.",
        );
        e.sample_int(&[], i64::try_from(max).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(records: i32, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        b[8..12].copy_from_slice(&((len - 12) as i32).to_be_bytes());
        b[57..61].copy_from_slice(&records.to_be_bytes());
        b
    }

    #[test]
    fn records_are_counted_from_whole_batch_headers() {
        let mut bytes = batch(3, 80);
        bytes.extend(batch(5, 100));
        assert_eq!(records_in_batches(&bytes), 8);
        // A partial batch at the end of a fetch response is not counted.
        let partial = batch(7, 90);
        bytes.extend_from_slice(&partial[..70]);
        assert_eq!(records_in_batches(&bytes), 8);
        assert_eq!(records_in_batches(&[]), 0);
        // A nonsense length stops the walk instead of panicking.
        let mut bad = batch(1, 70);
        bad[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert_eq!(records_in_batches(&bad), 0);
    }

    #[test]
    fn request_histograms_are_found_by_key_and_version() {
        let m = Arc::new(BrokerMetrics::new());
        let range = strata_protocol::api::supported_versions(ApiKey::Produce).expect("served");
        m.request_timer(ApiKey::Produce, range.max, Instant::now())
            .finish();
        assert_eq!(
            m.request_histogram(ApiKey::Produce, range.max)
                .map(Histogram::count),
            Some(1)
        );
        assert!(m
            .request_histogram(ApiKey::Produce, range.max + 1)
            .is_none());
        assert!(m
            .request_histogram(ApiKey::Produce, range.min - 1)
            .is_none());
    }

    #[test]
    fn connection_gauges_follow_connections() {
        let m = BrokerMetrics::new();
        let l = m.listener("PLAINTEXT");
        let a = ConnectionGauge::open(l.clone());
        let b = ConnectionGauge::open(m.listener("PLAINTEXT"));
        assert_eq!((l.connections.get(), l.accepted.get()), (2, 2));
        drop(a);
        drop(b);
        assert_eq!((l.connections.get(), l.accepted.get()), (0, 2));
    }
}
