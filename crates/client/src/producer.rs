//! A batching producer.
//!
//! `send` picks the partition (explicit, by key with murmur2, or sticky for keyless records)
//! and hands the record to a background task. That task collects records per partition into
//! batches, seals a batch when it reaches `batch_size` bytes or has waited `linger`, and sends
//! the sealed batches of each leader in one Produce request, with up to `max_in_flight`
//! requests outstanding. Retriable errors refresh metadata and resend to the new leader.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinSet;

use crate::client::{name, Client};
use crate::error::{check, Error, Result};
use crate::partitioner::partition_for_key;

/// Producer settings; the defaults follow the Java client's.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// 0 (no answer), 1 (leader) or -1 (all in-sync replicas).
    pub acks: i16,
    pub linger: Duration,
    /// Bytes of records per partition batch before it is sent.
    pub batch_size: usize,
    pub compression: Compression,
    pub retries: u32,
    /// Produce requests outstanding at once.
    pub max_in_flight: usize,
    /// The broker's wait for replication (Produce `timeout_ms`).
    pub ack_timeout_ms: i32,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: -1,
            linger: Duration::from_millis(5),
            batch_size: 16 * 1024,
            compression: Compression::None,
            retries: 5,
            max_in_flight: 5,
            ack_timeout_ms: 30_000,
        }
    }
}

/// Parses a codec name: none, gzip, snappy, lz4 or zstd.
pub fn parse_compression(s: &str) -> Result<Compression> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        other => {
            return Err(Error::Invalid(format!(
                "unknown compression {other:?}; use none, gzip, snappy, lz4 or zstd"
            )))
        }
    })
}

/// A record to send.
#[derive(Debug, Clone, Default)]
pub struct ProducerRecord {
    pub topic: String,
    /// `None`: by key (murmur2), or sticky for keyless records.
    pub partition: Option<i32>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Milliseconds since the epoch; `None` is now.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    pub fn new(topic: &str, key: Option<&[u8]>, value: Option<&[u8]>) -> Self {
        ProducerRecord {
            topic: topic.to_string(),
            key: key.map(Bytes::copy_from_slice),
            value: value.map(Bytes::copy_from_slice),
            ..Default::default()
        }
    }

    fn size(&self) -> usize {
        let h: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, |v| v.len()) + 4)
            .sum();
        self.key.as_ref().map_or(0, |k| k.len())
            + self.value.as_ref().map_or(0, |v| v.len())
            + h
            + 16
    }
}

/// Where a record was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    pub topic: String,
    pub partition: i32,
    /// -1 with acks=0.
    pub offset: i64,
    pub timestamp: i64,
}

/// Resolves when the record is acknowledged (or has failed).
pub struct DeliveryFuture(oneshot::Receiver<Result<RecordMetadata>>);

impl std::future::Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or_else(|_| Err(Error::Invalid("the producer was closed".into()))))
    }
}

struct Pending {
    record: ProducerRecord,
    partition: i32,
    timestamp: i64,
    done: oneshot::Sender<Result<RecordMetadata>>,
}

enum Command {
    Record(Pending),
    Flush(oneshot::Sender<()>),
}

/// A batching producer; cheap to clone.
#[derive(Clone)]
pub struct Producer {
    client: Client,
    tx: mpsc::Sender<Command>,
}

/// A batch with its topic-partition.
type Keyed = ((String, i32), Batch);

struct Batch {
    records: Vec<Pending>,
    bytes: usize,
    created: Instant,
}

impl Producer {
    pub fn new(client: Client, config: ProducerConfig) -> Producer {
        let (tx, rx) = mpsc::channel(8192);
        tokio::spawn(run(client.clone(), config, rx));
        Producer { client, tx }
    }

    /// Queues a record; the returned future resolves when it is acknowledged.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        let topic = self.client.topic(&record.topic).await?;
        let count = topic.partitions.len() as i32;
        let partition = match (record.partition, &record.key) {
            (Some(p), _) => {
                if p < 0 || p >= count {
                    return Err(Error::Invalid(format!(
                        "partition {p} does not exist: topic {:?} has partitions 0 to {}",
                        record.topic,
                        count - 1
                    )));
                }
                p
            }
            (None, Some(key)) => partition_for_key(key, count),
            (None, None) => -1,
        };
        let timestamp = record.timestamp.unwrap_or_else(now_ms);
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Command::Record(Pending {
                record,
                partition,
                timestamp,
                done,
            }))
            .await
            .map_err(|_| Error::Invalid("the producer was closed".into()))?;
        Ok(DeliveryFuture(rx))
    }

    /// Sends every queued record and waits for all answers.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

struct State {
    client: Client,
    config: Arc<ProducerConfig>,
    batches: HashMap<(String, i32), Batch>,
    /// Full batches waiting to be sent.
    sealed: Vec<Keyed>,
    sticky: HashMap<String, i32>,
    in_flight: JoinSet<()>,
    permits: Arc<Semaphore>,
}

async fn run(client: Client, config: ProducerConfig, mut rx: mpsc::Receiver<Command>) {
    let permits = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
    let mut state = State {
        client,
        config: Arc::new(config),
        batches: HashMap::new(),
        sealed: Vec::new(),
        sticky: HashMap::new(),
        in_flight: JoinSet::new(),
        permits,
    };
    loop {
        let deadline = state
            .batches
            .values()
            .map(|b| b.created + state.config.linger)
            .min();
        let command = match deadline {
            Some(d) => tokio::select! {
                c = rx.recv() => Some(c),
                _ = tokio::time::sleep_until(d.into()) => None,
            },
            None => Some(rx.recv().await),
        };
        match command {
            Some(Some(c)) => {
                let mut next = Some(c);
                // Take everything already queued before deciding what to send.
                while let Some(c) = next.take() {
                    match c {
                        Command::Record(p) => state.add(p).await,
                        Command::Flush(done) => {
                            state.send_ready(true).await;
                            while state.in_flight.join_next().await.is_some() {}
                            let _ = done.send(());
                        }
                    }
                    // Send as soon as a batch is full, even while more records wait.
                    if state.sealed.is_empty() {
                        next = rx.try_recv().ok();
                    }
                }
                state.send_ready(false).await;
            }
            Some(None) => {
                state.send_ready(true).await;
                while state.in_flight.join_next().await.is_some() {}
                return;
            }
            None => state.send_ready(false).await,
        }
        while state.in_flight.try_join_next().is_some() {}
    }
}

impl State {
    async fn add(&mut self, mut p: Pending) {
        if p.partition < 0 {
            let count = match self.client.topic(&p.record.topic).await {
                Ok(t) => t.partitions.len() as i32,
                Err(e) => {
                    let _ = p.done.send(Err(e));
                    return;
                }
            };
            let sticky = *self
                .sticky
                .entry(p.record.topic.clone())
                .or_insert_with(|| rand::random::<u32>() as i32 & 0x7fff_ffff)
                % count.max(1);
            p.partition = sticky;
        }
        let key = (p.record.topic.clone(), p.partition);
        let size = p.record.size();
        // A batch never grows past batch_size (a single larger record is a batch of its own).
        if let Some(full) = self
            .batches
            .get(&key)
            .is_some_and(|b| b.bytes + size > self.config.batch_size)
            .then(|| self.batches.remove(&key))
            .flatten()
        {
            self.sealed.push((key.clone(), full));
        }
        let batch = self.batches.entry(key.clone()).or_insert_with(|| Batch {
            records: Vec::new(),
            bytes: 0,
            created: Instant::now(),
        });
        batch.bytes += size;
        batch.records.push(p);
        if batch.bytes >= self.config.batch_size {
            // A full batch moves keyless records of this topic to another partition.
            if let Some(s) = self.sticky.get_mut(&key.0) {
                *s = s.wrapping_add(1) & 0x7fff_ffff;
            }
        }
    }

    /// Sends full or lingered batches (all with `all`).
    async fn send_ready(&mut self, all: bool) {
        let now = Instant::now();
        let ready: Vec<(String, i32)> = self
            .batches
            .iter()
            .filter(|(_, b)| {
                all || b.bytes >= self.config.batch_size || b.created + self.config.linger <= now
            })
            .map(|(k, _)| k.clone())
            .collect();
        let mut batches: Vec<Keyed> = std::mem::take(&mut self.sealed);
        for key in ready {
            let batch = self.batches.remove(&key).expect("ready batch");
            batches.push((key, batch));
        }
        // One request per leader and round; a round holds at most one batch per partition,
        // and rounds go out in order on the leader's connection.
        let mut requests: BTreeMap<(usize, i32), Vec<Keyed>> = BTreeMap::new();
        let mut rounds: HashMap<(String, i32), usize> = HashMap::new();
        for (key, batch) in batches {
            match self.client.leader(&key.0, key.1).await {
                Ok(leader) => {
                    let round = rounds.entry(key.clone()).or_insert(0);
                    requests
                        .entry((*round, leader))
                        .or_default()
                        .push((key, batch));
                    *round += 1;
                }
                Err(e) => fail(batch, &e),
            }
        }
        for ((_, leader), batches) in requests {
            let permit = self
                .permits
                .clone()
                .acquire_owned()
                .await
                .expect("semaphore open");
            let client = self.client.clone();
            let config = self.config.clone();
            self.in_flight.spawn(async move {
                deliver(client, config, leader, batches).await;
                drop(permit);
            });
        }
    }
}

fn fail(batch: Batch, e: &Error) {
    for p in batch.records {
        let _ = p.done.send(Err(e.clone()));
    }
}

fn encode(batch: &Batch, compression: Compression) -> Result<Bytes> {
    strata_protocol::records::encode_records(
        batch.records.iter().map(|p| {
            let headers = p
                .record
                .headers
                .iter()
                .map(|(k, v)| (StrBytes::from_string(k.clone()), v.clone()))
                .collect();
            (
                p.record.key.clone(),
                p.record.value.clone(),
                p.timestamp,
                headers,
            )
        }),
        compression,
    )
    .map_err(|e| Error::Protocol(e.to_string()))
}

/// Sends batches to `leader`, retrying retriable failures against the current leader.
async fn deliver(client: Client, config: Arc<ProducerConfig>, leader: i32, batches: Vec<Keyed>) {
    let mut todo: Vec<(i32, (String, i32), Batch)> =
        batches.into_iter().map(|(k, b)| (leader, k, b)).collect();
    let mut attempt = 0;
    while !todo.is_empty() {
        let mut groups: BTreeMap<i32, Vec<Keyed>> = BTreeMap::new();
        for (l, k, b) in todo.drain(..) {
            groups.entry(l).or_default().push((k, b));
        }
        let mut retry = Vec::new();
        for (leader, batches) in groups {
            for (key, batch, error) in send_once(&client, &config, leader, batches).await {
                if error.is_retriable() && attempt < config.retries {
                    retry.push((key, batch, error));
                } else {
                    fail(batch, &error);
                }
            }
        }
        if retry.is_empty() {
            break;
        }
        attempt += 1;
        tokio::time::sleep(client.config().retry_backoff * attempt).await;
        for (key, batch, error) in retry {
            tracing::debug!(topic = key.0, partition = key.1, %error, "retrying produce");
            match client.fresh_topic(&key.0).await {
                Ok(t) => match t.partitions.iter().find(|p| p.id == key.1) {
                    Some(p) if p.leader >= 0 => todo.push((p.leader, key, batch)),
                    _ => fail(batch, &error),
                },
                Err(e) => fail(batch, &e),
            }
        }
    }
}

/// One Produce request; returns the batches that failed, with their error.
async fn send_once(
    client: &Client,
    config: &ProducerConfig,
    leader: i32,
    batches: Vec<Keyed>,
) -> Vec<((String, i32), Batch, Error)> {
    let mut failed = Vec::new();
    let mut encoded: BTreeMap<String, Vec<(i32, Bytes)>> = BTreeMap::new();
    let mut by_key: HashMap<(String, i32), Batch> = HashMap::new();
    for (key, batch) in batches {
        match encode(&batch, config.compression) {
            Ok(bytes) => {
                encoded
                    .entry(key.0.clone())
                    .or_default()
                    .push((key.1, bytes));
                by_key.insert(key, batch);
            }
            Err(e) => fail(batch, &e),
        }
    }
    let request = ProduceRequest::default()
        .with_acks(config.acks)
        .with_timeout_ms(config.ack_timeout_ms)
        .with_topic_data(
            encoded
                .iter()
                .map(|(t, parts)| {
                    TopicProduceData::default()
                        .with_name(name(t))
                        .with_partition_data(
                            parts
                                .iter()
                                .map(|(p, b)| {
                                    PartitionProduceData::default()
                                        .with_index(*p)
                                        .with_records(Some(b.clone()))
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
    let conn = match client.broker_connection(leader).await {
        Ok(c) => c,
        Err(e) => return by_key.into_iter().map(|(k, b)| (k, b, e.clone())).collect(),
    };
    let version = match conn.version::<ProduceRequest>(9) {
        Ok(v) => v,
        Err(e) => {
            for (_, b) in by_key {
                fail(b, &e);
            }
            return failed;
        }
    };
    if config.acks == 0 {
        let result = conn.send_no_response(version, &request).await;
        for ((topic, partition), batch) in by_key {
            match &result {
                Ok(()) => {
                    for p in batch.records {
                        let _ = p.done.send(Ok(RecordMetadata {
                            topic: topic.clone(),
                            partition,
                            offset: -1,
                            timestamp: p.timestamp,
                        }));
                    }
                }
                Err(e) => failed.push(((topic, partition), batch, e.clone())),
            }
        }
        return failed;
    }
    let response = match conn.send_at(version, &request).await {
        Ok(r) => r,
        Err(e) => {
            if matches!(e, Error::Connection { .. }) {
                client.forget_broker(leader).await;
            }
            return by_key.into_iter().map(|(k, b)| (k, b, e.clone())).collect();
        }
    };
    for t in response.responses {
        let topic = t.name.0.to_string();
        for p in t.partition_responses {
            let key = (topic.clone(), p.index);
            let Some(batch) = by_key.remove(&key) else {
                continue;
            };
            let message = p.error_message.map(|m| m.to_string());
            match check(
                || format!("producing to {}-{}", key.0, key.1),
                p.error_code,
                message,
            ) {
                Ok(()) => {
                    for (i, r) in batch.records.into_iter().enumerate() {
                        let timestamp = if p.log_append_time_ms >= 0 {
                            p.log_append_time_ms
                        } else {
                            r.timestamp
                        };
                        let _ = r.done.send(Ok(RecordMetadata {
                            topic: topic.clone(),
                            partition: p.index,
                            offset: p.base_offset + i as i64,
                            timestamp,
                        }));
                    }
                }
                Err(e) => failed.push((key, batch, e)),
            }
        }
    }
    for (key, batch) in by_key {
        failed.push((
            key,
            batch,
            Error::Protocol("the Produce response left out a partition".into()),
        ));
    }
    failed
}
