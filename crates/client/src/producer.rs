//! A batching, pipelining producer.
//!
//! `send` picks the partition (explicit, by key with murmur2, or for keyless records sticky
//! until `batch_size` bytes went to one partition, KIP-794: [`StickyPartitioner`])
//! and writes the record straight into its partition's open batch (see [`crate::records`]),
//! on the caller's task: no per-record message to another task and no intermediate record
//! structs. A batch closes when the next record would take it past `batch_size` bytes.
//!
//! A background sender takes the batches that are ready — full, or open for `linger`, or
//! all of them during a flush — and sends one Produce request per leader holding one batch
//! of every ready partition of that leader (up to `max_request_size` bytes). It keeps up to
//! `max_in_flight` requests outstanding per leader connection, written in order from this
//! one task; the broker answers them in order. While every slot is taken the open batches
//! keep filling, so a slow acknowledgement (acks=all with an fsync) makes the next requests
//! bigger instead of the producer slower.
//!
//! Ordering: records of one partition are written, and so appended, in the order `send`
//! was called. A retried batch (after a retriable error) is sent again at the front of its
//! partition's queue, but with more than one request in flight the batches sent after it
//! may already have been appended: with `max_in_flight > 1` and `retries > 0` a retry can
//! reorder a partition's records (this producer is not idempotent). Set `max_in_flight` to
//! 1 where that matters.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::records::Compression;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use crate::client::{name, Client};
use crate::error::{check, Error, Result};
use crate::partitioner::{partition_for_key, StickyPartitioner};
use crate::records::{BatchBuilder, RecordRef, HEADER_LEN};

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
    /// Produce requests outstanding at once per broker connection.
    pub max_in_flight: usize,
    /// The broker's wait for replication (Produce `timeout_ms`).
    pub ack_timeout_ms: i32,
    /// Bytes of records buffered (queued or in flight) before `send` waits.
    pub buffer_memory: usize,
    /// Bytes of batches per Produce request (a single larger batch still goes alone).
    pub max_request_size: usize,
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
            buffer_memory: 32 * 1024 * 1024,
            max_request_size: 1024 * 1024,
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

/// How a batch ended: (base offset, log append time or -1), or the error.
type Outcome = Result<(i64, i64)>;

/// The completion of one batch, shared by the delivery futures of its records.
struct BatchDone {
    topic: String,
    partition: i32,
    state: Mutex<DoneState>,
}

#[derive(Default)]
struct DoneState {
    outcome: Option<Outcome>,
    wakers: Vec<Waker>,
}

impl BatchDone {
    fn complete(&self, outcome: Outcome) {
        let wakers = {
            let mut s = self.state.lock().expect("batch state lock");
            if s.outcome.is_some() {
                return;
            }
            s.outcome = Some(outcome);
            std::mem::take(&mut s.wakers)
        };
        for w in wakers {
            w.wake();
        }
    }
}

/// Resolves when the record is acknowledged (or has failed).
pub struct DeliveryFuture {
    done: Arc<BatchDone>,
    index: i32,
    timestamp: i64,
    /// This future's slot in the batch's waker list, once it has waited.
    slot: Option<usize>,
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut s = this.done.state.lock().expect("batch state lock");
        match &s.outcome {
            Some(Ok((base, append_time))) => Poll::Ready(Ok(RecordMetadata {
                topic: this.done.topic.clone(),
                partition: this.done.partition,
                offset: if *base < 0 {
                    -1
                } else {
                    base + i64::from(this.index)
                },
                timestamp: if *append_time >= 0 {
                    *append_time
                } else {
                    this.timestamp
                },
            })),
            Some(Err(e)) => Poll::Ready(Err(e.clone())),
            None => {
                match this.slot {
                    Some(i) if !s.wakers[i].will_wake(cx.waker()) => {
                        s.wakers[i] = cx.waker().clone();
                    }
                    Some(_) => {}
                    None => {
                        this.slot = Some(s.wakers.len());
                        s.wakers.push(cx.waker().clone());
                    }
                }
                Poll::Pending
            }
        }
    }
}

/// A batch closed for new records, waiting to be sent (or sent again).
struct Sealed {
    builder: Option<BatchBuilder>,
    /// The finished bytes, once encoded (kept for retries).
    bytes: Option<Bytes>,
    done: Arc<BatchDone>,
    /// Bytes of `buffer_memory` this batch holds.
    reserved: usize,
    attempts: u32,
    not_before: Option<Instant>,
}

struct Open {
    builder: BatchBuilder,
    done: Arc<BatchDone>,
    reserved: usize,
    created: Instant,
}

impl Open {
    fn seal(self) -> Sealed {
        Sealed {
            builder: Some(self.builder),
            bytes: None,
            done: self.done,
            reserved: self.reserved,
            attempts: 0,
            not_before: None,
        }
    }
}

#[derive(Default)]
struct PartitionQueue {
    open: Option<Open>,
    sealed: VecDeque<Sealed>,
}

struct TopicQueues {
    partitions: Vec<PartitionQueue>,
    /// Where keyless records go (KIP-794).
    sticky: StickyPartitioner,
}

#[derive(Default)]
struct Accumulator {
    topics: HashMap<String, TopicQueues>,
    /// Flushes under way: open batches are ready at once.
    flushing: usize,
}

struct Shared {
    client: Client,
    config: ProducerConfig,
    acc: Mutex<Accumulator>,
    /// Wakes the sender: a batch was opened or sealed, a flush began, the producer closed.
    wake: Notify,
    /// `buffer_memory`, in bytes.
    memory: Semaphore,
    /// Batches opened and not yet completed.
    pending: AtomicUsize,
    idle: Notify,
    closed: AtomicBool,
}

impl Shared {
    fn finish(&self, batch: &Arc<BatchDone>, reserved: usize, outcome: Outcome) {
        batch.complete(outcome);
        self.memory.add_permits(reserved);
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }
}

/// Tells the sender to finish up when the last handle on the producer goes.
struct CloseOnDrop(Arc<Shared>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Release);
        self.0.wake.notify_one();
    }
}

/// A batching producer; cheap to clone. Dropping the last clone sends what is queued (the
/// delivery futures still resolve) and stops the background sender.
#[derive(Clone)]
pub struct Producer {
    shared: Arc<Shared>,
    _close: Arc<CloseOnDrop>,
}

impl Producer {
    pub fn new(client: Client, config: ProducerConfig) -> Producer {
        let memory = config.buffer_memory.clamp(1, Semaphore::MAX_PERMITS);
        let shared = Arc::new(Shared {
            client,
            config,
            acc: Mutex::new(Accumulator::default()),
            wake: Notify::new(),
            memory: Semaphore::new(memory),
            pending: AtomicUsize::new(0),
            idle: Notify::new(),
            closed: AtomicBool::new(false),
        });
        tokio::spawn(Sender::new(shared.clone()).run());
        Producer {
            _close: Arc::new(CloseOnDrop(shared.clone())),
            shared,
        }
    }

    /// Adds a record to its partition's batch; the returned future resolves when it is
    /// acknowledged. Waits while `buffer_memory` bytes are queued or in flight.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        let shared = &*self.shared;
        let known = shared.client.with_metadata(|m| {
            m.topics
                .get(&record.topic)
                .filter(|t| t.error == 0 && !t.partitions.is_empty())
                .map(|t| t.partitions.len() as i32)
        });
        let count = match known {
            Some(c) => c,
            None => shared.client.topic(&record.topic).await?.partitions.len() as i32,
        };
        let partition = match (record.partition, &record.key) {
            (Some(p), _) => {
                if p < 0 || p >= count {
                    return Err(Error::Invalid(format!(
                        "partition {p} does not exist: topic {:?} has partitions 0 to {}",
                        record.topic,
                        count - 1
                    )));
                }
                Some(p)
            }
            (None, Some(key)) => Some(partition_for_key(key, count)),
            (None, None) => None,
        };
        let timestamp = record.timestamp.unwrap_or_else(now_ms);
        let r = RecordRef {
            key: record.key.as_deref(),
            value: record.value.as_deref(),
            timestamp,
            headers: &record.headers,
        };
        // An upper bound of the record's bytes in any batch (varints at their longest).
        let estimate = BatchBuilder::new(0).size_of(&r) + 16;
        let reserve = estimate.min(shared.config.buffer_memory.max(1));
        match shared.memory.try_acquire_many(reserve as u32) {
            Ok(p) => p.forget(),
            Err(_) => shared
                .memory
                .acquire_many(reserve as u32)
                .await
                .map_err(|_| Error::Invalid("the producer was closed".into()))?
                .forget(),
        }
        let (future, wake) = self.append(&record.topic, count, partition, &r, reserve);
        if wake {
            shared.wake.notify_one();
        }
        Ok(future)
    }

    /// Writes the record into its partition's open batch, sealing the batch before it if
    /// the record does not fit. Returns whether the sender should look again.
    fn append(
        &self,
        topic: &str,
        count: i32,
        partition: Option<i32>,
        r: &RecordRef<'_>,
        reserve: usize,
    ) -> (DeliveryFuture, bool) {
        let shared = &*self.shared;
        let batch_size = shared.config.batch_size;
        let mut acc = shared.acc.lock().expect("accumulator lock");
        if !acc.topics.contains_key(topic) {
            acc.topics.insert(
                topic.to_string(),
                TopicQueues {
                    partitions: Vec::new(),
                    sticky: StickyPartitioner::default(),
                },
            );
        }
        let t = acc.topics.get_mut(topic).expect("topic queues");
        if t.partitions.len() < count as usize {
            t.partitions.resize_with(count as usize, Default::default);
        }
        if partition.is_none() {
            // KIP-794: a switch that waited for a batch boundary happens once the sticky
            // partition's batch is closed (full, or sent after linger).
            if let Some(current) = t.sticky.current(count as usize) {
                if t.partitions[current as usize].open.is_none() {
                    t.sticky.appended(0, batch_size, true);
                }
            }
        }
        let p = match (partition, t.sticky.current(count as usize)) {
            (Some(p), _) | (None, Some(p)) => p,
            (None, None) => {
                // Batches waiting per partition weigh the choice of a new sticky partition.
                let waiting: Vec<usize> = t.partitions[..count.max(1) as usize]
                    .iter()
                    .map(|q| q.sealed.len() + usize::from(q.open.is_some()))
                    .collect();
                t.sticky.choose(&waiting, rand::random())
            }
        };
        let q = &mut t.partitions[p as usize];
        let mut wake = false;
        if let Some(open) = &q.open {
            if !open.builder.is_empty() && open.builder.len() + open.builder.size_of(r) > batch_size
            {
                let full = q.open.take().expect("open batch");
                q.sealed.push_back(full.seal());
                wake = true;
            }
        }
        let q = &mut t.partitions[p as usize];
        let open = q.open.get_or_insert_with(|| {
            wake = true;
            shared.pending.fetch_add(1, Ordering::AcqRel);
            let size = HEADER_LEN + BatchBuilder::new(0).size_of(r);
            Open {
                builder: BatchBuilder::new(batch_size.max(size)),
                done: Arc::new(BatchDone {
                    topic: topic.to_string(),
                    partition: p,
                    state: Mutex::default(),
                }),
                reserved: 0,
                created: Instant::now(),
            }
        });
        let before = open.builder.len();
        let index = open.builder.push(r);
        let appended = open.builder.len() - before;
        open.reserved += reserve;
        let future = DeliveryFuture {
            done: open.done.clone(),
            index,
            timestamp: r.timestamp,
            slot: None,
        };
        if open.builder.len() >= batch_size {
            let full = q.open.take().expect("open batch");
            q.sealed.push_back(full.seal());
            wake = true;
        }
        if partition.is_none() {
            // KIP-794: after batch_size bytes the next keyless record goes elsewhere, at a
            // batch boundary if one comes soon enough (the partition's batch was just closed).
            let batch_closed = t.partitions[p as usize].open.is_none();
            t.sticky.appended(appended, batch_size, batch_closed);
        }
        (future, wake)
    }

    /// Sends every queued record and waits until every batch is answered (records sent
    /// meanwhile by other tasks are waited for too).
    pub async fn flush(&self) {
        /// Ends this flush's claim on the open batches, also when the flush is dropped.
        struct Flushing<'a>(&'a Shared);
        impl Drop for Flushing<'_> {
            fn drop(&mut self) {
                self.0.acc.lock().expect("accumulator lock").flushing -= 1;
            }
        }
        let shared = &*self.shared;
        shared.acc.lock().expect("accumulator lock").flushing += 1;
        let _flushing = Flushing(shared);
        shared.wake.notify_one();
        loop {
            let idle = shared.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if shared.pending.load(Ordering::Acquire) == 0 {
                break;
            }
            idle.await;
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

/// A batch in a request, with where it goes.
struct InFlight {
    topic: String,
    partition: i32,
    batch: Sealed,
}

type Answer = (i32, Vec<InFlight>, Result<ProduceResponse>);

/// The background task that sends ready batches and handles the answers.
struct Sender {
    shared: Arc<Shared>,
    /// Requests outstanding per leader.
    in_flight: HashMap<i32, usize>,
    answers: JoinSet<Answer>,
}

impl Sender {
    fn new(shared: Arc<Shared>) -> Self {
        Sender {
            shared,
            in_flight: HashMap::new(),
            answers: JoinSet::new(),
        }
    }

    async fn run(mut self) {
        loop {
            let closing = self.shared.closed.load(Ordering::Acquire);
            let next = self.send_ready(closing).await;
            if closing && self.answers.is_empty() && self.is_drained() {
                return;
            }
            tokio::select! {
                _ = self.shared.wake.notified() => {}
                Some(joined) = self.answers.join_next(), if !self.answers.is_empty() => {
                    match joined {
                        Ok(answer) => self.handle(answer).await,
                        Err(e) => tracing::error!(error = %e, "a produce task failed"),
                    }
                }
                _ = sleep_until(next), if next.is_some() => {}
            }
        }
    }

    fn is_drained(&self) -> bool {
        let acc = self.shared.acc.lock().expect("accumulator lock");
        acc.topics.values().all(|t| {
            t.partitions
                .iter()
                .all(|q| q.open.is_none() && q.sealed.is_empty())
        })
    }

    /// Sends the ready batches of every leader with a free slot; returns when to look
    /// again for batches that are not ready yet (linger, retry backoff).
    async fn send_ready(&mut self, closing: bool) -> Option<Instant> {
        let shared = self.shared.clone();
        let config = &shared.config;
        let max_in_flight = config.max_in_flight.max(1);
        loop {
            let now = Instant::now();
            let mut next: Option<Instant> = None;
            let mut requests: HashMap<i32, (usize, Vec<InFlight>)> = HashMap::new();
            let mut unknown: Vec<String> = Vec::new();
            {
                let mut acc = self.shared.acc.lock().expect("accumulator lock");
                let all = closing || acc.flushing > 0;
                let client = &self.shared.client;
                for (topic, t) in acc.topics.iter_mut() {
                    let leaders: Option<Vec<i32>> = client.with_metadata(|m| {
                        m.topics
                            .get(topic)
                            .map(|ti| ti.partitions.iter().map(|p| p.leader).collect())
                    });
                    for (p, q) in t.partitions.iter_mut().enumerate() {
                        if q.open.is_none() && q.sealed.is_empty() {
                            continue;
                        }
                        let leader = leaders.as_ref().and_then(|l| l.get(p)).copied();
                        let Some(leader) = leader.filter(|l| *l >= 0) else {
                            if !unknown.contains(topic) {
                                unknown.push(topic.clone());
                            }
                            continue;
                        };
                        let busy = self.in_flight.get(&leader).copied().unwrap_or(0);
                        let slots = max_in_flight.saturating_sub(busy);
                        let request = requests.entry(leader).or_insert((0, Vec::new()));
                        if slots == 0 {
                            // Every slot taken: the open batch keeps filling.
                            continue;
                        }
                        let ready = match q.sealed.front() {
                            Some(s) => match s.not_before {
                                Some(t) if t > now => {
                                    next = Some(next.map_or(t, |n| n.min(t)));
                                    false
                                }
                                _ => true,
                            },
                            None => {
                                let open = q.open.as_ref().expect("open batch");
                                let due = open.created + config.linger;
                                if all || due <= now {
                                    q.sealed.push_back(q.open.take().expect("open").seal());
                                    true
                                } else {
                                    next = Some(next.map_or(due, |n| n.min(due)));
                                    false
                                }
                            }
                        };
                        if !ready {
                            continue;
                        }
                        let size = q.sealed.front().map_or(0, |s| {
                            s.bytes.as_ref().map_or_else(
                                || s.builder.as_ref().map_or(0, |b| b.len()),
                                |b| b.len(),
                            )
                        });
                        if !request.1.is_empty() && request.0 + size > config.max_request_size {
                            // Goes in the next request.
                            next = Some(now);
                            continue;
                        }
                        request.0 += size;
                        request.1.push(InFlight {
                            topic: topic.clone(),
                            partition: p as i32,
                            batch: q.sealed.pop_front().expect("ready batch"),
                        });
                    }
                }
            }
            for topic in unknown {
                if let Err(e) = self.shared.client.fresh_topic(&topic).await {
                    self.fail_topic(&topic, &e);
                }
                next = Some(Instant::now());
            }
            let mut sent = false;
            for (leader, (_, batches)) in requests {
                if !batches.is_empty() {
                    self.send(leader, batches).await;
                    sent = true;
                }
            }
            // A request left: there may be more ready batches for a free slot.
            if !sent {
                return next;
            }
        }
    }

    /// Fails every queued batch of `topic` (its metadata cannot be had).
    fn fail_topic(&self, topic: &str, e: &Error) {
        let batches: Vec<Sealed> = {
            let mut acc = self.shared.acc.lock().expect("accumulator lock");
            let Some(t) = acc.topics.get_mut(topic) else {
                return;
            };
            t.partitions
                .iter_mut()
                .flat_map(|q| {
                    let open = q.open.take().map(Open::seal);
                    q.sealed.drain(..).chain(open).collect::<Vec<_>>()
                })
                .collect()
        };
        for b in batches {
            self.shared.finish(&b.done, b.reserved, Err(e.clone()));
        }
    }

    /// Encodes and writes one Produce request; its answer arrives in `answers`.
    async fn send(&mut self, leader: i32, mut batches: Vec<InFlight>) {
        let shared = self.shared.clone();
        let config = &shared.config;
        let mut topics: Vec<TopicProduceData> = Vec::new();
        let mut i = 0;
        while i < batches.len() {
            let b = &mut batches[i].batch;
            if b.bytes.is_none() {
                let builder = b.builder.take().expect("unencoded batch");
                match builder.finish(config.compression) {
                    Ok(bytes) => b.bytes = Some(bytes),
                    Err(e) => {
                        let failed = batches.remove(i);
                        self.shared
                            .finish(&failed.batch.done, failed.batch.reserved, Err(e));
                        continue;
                    }
                }
            }
            let f = &batches[i];
            let data = PartitionProduceData::default()
                .with_index(f.partition)
                .with_records(f.batch.bytes.clone());
            match topics.last_mut() {
                Some(t) if t.name.0.as_str() == f.topic => t.partition_data.push(data),
                _ => topics.push(
                    TopicProduceData::default()
                        .with_name(name(&f.topic))
                        .with_partition_data(vec![data]),
                ),
            }
            i += 1;
        }
        if batches.is_empty() {
            return;
        }
        let request = ProduceRequest::default()
            .with_acks(config.acks)
            .with_timeout_ms(config.ack_timeout_ms)
            .with_topic_data(topics);
        let client = &self.shared.client;
        let conn = match client.broker_connection(leader).await {
            Ok(c) => c,
            Err(e) => {
                self.answers.spawn(async move { (leader, batches, Err(e)) });
                *self.in_flight.entry(leader).or_default() += 1;
                return;
            }
        };
        let version = match conn.version::<ProduceRequest>(9) {
            Ok(v) => v,
            Err(e) => {
                for f in batches {
                    self.shared
                        .finish(&f.batch.done, f.batch.reserved, Err(e.clone()));
                }
                return;
            }
        };
        if config.acks == 0 {
            let result = conn.send_no_response(version, &request).await;
            self.answers.spawn(async move {
                (leader, batches, result.map(|()| ProduceResponse::default()))
            });
            *self.in_flight.entry(leader).or_default() += 1;
            return;
        }
        let reply = conn.start(version, &request).await;
        *self.in_flight.entry(leader).or_default() += 1;
        self.answers.spawn(async move {
            let response = match reply {
                Ok(r) => r.wait().await,
                Err(e) => Err(e),
            };
            (leader, batches, response)
        });
    }

    /// Completes the batches of one answer, or queues them again for a retry.
    async fn handle(&mut self, (leader, batches, response): Answer) {
        if let Some(n) = self.in_flight.get_mut(&leader) {
            *n = n.saturating_sub(1);
        }
        let shared = self.shared.clone();
        let config = &shared.config;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                if matches!(e, Error::Connection { .. }) {
                    shared.client.forget_broker(leader).await;
                }
                for f in batches {
                    self.retry_or_fail(f, e.clone()).await;
                }
                return;
            }
        };
        let mut batches: Vec<Option<InFlight>> = batches.into_iter().map(Some).collect();
        if config.acks == 0 {
            for f in batches.into_iter().flatten() {
                shared.finish(&f.batch.done, f.batch.reserved, Ok((-1, -1)));
            }
            return;
        }
        for t in response.responses {
            for p in t.partition_responses {
                let Some(f) = batches
                    .iter_mut()
                    .find(|f| {
                        f.as_ref().is_some_and(|f| {
                            f.partition == p.index && f.topic.as_str() == t.name.0.as_str()
                        })
                    })
                    .and_then(Option::take)
                else {
                    continue;
                };
                let message = p.error_message.map(|m| m.to_string());
                match check(
                    || format!("producing to {}-{}", f.topic, f.partition),
                    p.error_code,
                    message,
                ) {
                    Ok(()) => shared.finish(
                        &f.batch.done,
                        f.batch.reserved,
                        Ok((p.base_offset, p.log_append_time_ms)),
                    ),
                    Err(e) => self.retry_or_fail(f, e).await,
                }
            }
        }
        for f in batches.into_iter().flatten() {
            let e = Error::Protocol("the Produce response left out a partition".into());
            shared.finish(&f.batch.done, f.batch.reserved, Err(e));
        }
    }

    async fn retry_or_fail(&mut self, mut f: InFlight, error: Error) {
        let shared = self.shared.clone();
        if !error.is_retriable() || f.batch.attempts >= shared.config.retries {
            shared.finish(&f.batch.done, f.batch.reserved, Err(error));
            return;
        }
        tracing::debug!(topic = f.topic, partition = f.partition, %error, "retrying produce");
        f.batch.attempts += 1;
        f.batch.not_before =
            Some(Instant::now() + shared.client.config().retry_backoff * f.batch.attempts);
        // New leaders, if they moved; a failed refresh is tried again at the next attempt.
        let _ = shared.client.fresh_topic(&f.topic).await;
        let mut acc = shared.acc.lock().expect("accumulator lock");
        let q = acc
            .topics
            .get_mut(&f.topic)
            .and_then(|t| t.partitions.get_mut(f.partition as usize));
        match q {
            Some(q) => q.sealed.push_front(f.batch),
            None => {
                drop(acc);
                shared.finish(&f.batch.done, f.batch.reserved, Err(error));
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
