//! A consumer: manual assignment or group subscription (classic protocol, range assignor),
//! with one fetch in flight per leader, the next one sent as soon as the last one returns.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;
use tokio::sync::mpsc;

use crate::admin::{OffsetSpec, Tp};
use crate::client::{broker, name, sb, Client};
use crate::error::{Error, Result};
use crate::group;

/// Where a partition without a committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    Earliest,
    Latest,
    /// Fail instead.
    None,
}

/// Consumer settings; the defaults follow the Java client's.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub group_id: Option<String>,
    pub auto_offset_reset: OffsetReset,
    pub enable_auto_commit: bool,
    pub auto_commit_interval: Duration,
    /// Whether records handed out by `poll` count as consumed (for commits). Off, the
    /// application says what it has processed with [`Consumer::store_offset`].
    pub auto_offset_store: bool,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub fetch_max_wait: Duration,
    pub fetch_min_bytes: i32,
    pub fetch_max_bytes: i32,
    pub max_partition_fetch_bytes: i32,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            group_id: None,
            auto_offset_reset: OffsetReset::Latest,
            enable_auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            auto_offset_store: true,
            session_timeout: Duration::from_secs(45),
            rebalance_timeout: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(3),
            fetch_max_wait: Duration::from_millis(500),
            fetch_min_bytes: 1,
            fetch_max_bytes: 50 * 1024 * 1024,
            max_partition_fetch_bytes: 1024 * 1024,
        }
    }
}

/// A record read from a partition.
#[derive(Debug, Clone)]
pub struct ConsumerRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
    pub log_append_time: bool,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Where to move a partition's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seek {
    Earliest,
    Latest,
    Offset(i64),
    Timestamp(i64),
}

struct Membership {
    coordinator: i32,
    generation: i32,
    member_id: String,
    rejoin: Arc<AtomicBool>,
    heartbeat: tokio::task::JoinHandle<()>,
}

type FetchResult = (i32, Vec<(Tp, i64)>, Result<FetchResponse>);

/// A partition's fetched records and the offset they were asked from.
type Fetched = (Tp, Bytes, i64);

/// A consumer. Not shared between tasks: call it from one place.
pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    /// Next offset to fetch per assigned partition (`None`: to be looked up).
    positions: BTreeMap<Tp, Option<i64>>,
    seeks: BTreeMap<Tp, Seek>,
    /// Offset after the last record handed out per partition.
    consumed: BTreeMap<Tp, i64>,
    subscription: Option<Vec<String>>,
    member: Option<Membership>,
    member_id: String,
    in_flight: HashSet<i32>,
    results_tx: mpsc::UnboundedSender<FetchResult>,
    results: mpsc::UnboundedReceiver<FetchResult>,
    buffered: VecDeque<ConsumerRecord>,
    last_commit: Instant,
}

impl Consumer {
    pub fn new(client: Client, config: ConsumerConfig) -> Consumer {
        let (results_tx, results) = mpsc::unbounded_channel();
        Consumer {
            client,
            config,
            positions: BTreeMap::new(),
            seeks: BTreeMap::new(),
            consumed: BTreeMap::new(),
            subscription: None,
            member: None,
            member_id: String::new(),
            in_flight: HashSet::new(),
            results_tx,
            results,
            buffered: VecDeque::new(),
            last_commit: Instant::now(),
        }
    }

    /// Reads exactly these partitions (no group membership).
    pub fn assign(&mut self, partitions: &[Tp]) {
        self.subscription = None;
        self.set_assignment(partitions);
    }

    /// Joins the configured group for these topics; partitions arrive with the first poll.
    pub fn subscribe(&mut self, topics: &[String]) -> Result<()> {
        if self.config.group_id.is_none() {
            return Err(Error::Invalid("subscribing needs a group id".into()));
        }
        self.subscription = Some(topics.to_vec());
        if let Some(m) = &self.member {
            m.rejoin.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    /// The partitions currently assigned.
    pub fn assignment(&self) -> Vec<Tp> {
        self.positions.keys().cloned().collect()
    }

    /// Moves a partition's position; takes effect at the next poll.
    pub fn seek(&mut self, tp: Tp, seek: Seek) {
        self.seeks.insert(tp.clone(), seek);
        if self.positions.contains_key(&tp) {
            self.positions.insert(tp.clone(), None);
        }
        self.buffered
            .retain(|r| r.topic != tp.0 || r.partition != tp.1);
    }

    fn set_assignment(&mut self, partitions: &[Tp]) {
        self.positions = partitions.iter().map(|tp| (tp.clone(), None)).collect();
        self.consumed.retain(|tp, _| partitions.contains(tp));
        self.buffered.clear();
    }

    /// The offsets a commit would write: after the last records handed out (or stored).
    pub fn positions(&self) -> &BTreeMap<Tp, i64> {
        &self.consumed
    }

    /// Marks a partition consumed up to `next_offset` (the offset after the last processed
    /// record), for the next commit; ignored for partitions not assigned (any more).
    pub fn store_offset(&mut self, tp: Tp, next_offset: i64) {
        if self.positions.contains_key(&tp) {
            self.consumed.insert(tp, next_offset);
        }
    }

    /// Returns records, waiting up to `timeout` for some.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.subscription.is_some() && self.needs_join() {
                self.join().await?;
            }
            if self.config.enable_auto_commit
                && self.config.group_id.is_some()
                && self.last_commit.elapsed() >= self.config.auto_commit_interval
            {
                // A failed auto-commit (say, mid-rebalance) is retried at the next interval.
                if let Err(e) = self.commit().await {
                    tracing::debug!(error = %e, "auto-commit failed");
                }
            }
            if !self.buffered.is_empty() {
                let records: Vec<ConsumerRecord> = self.buffered.drain(..).collect();
                if self.config.auto_offset_store {
                    // One store per partition, after its last record.
                    let mut ends: Vec<(&str, i32, i64)> = Vec::new();
                    for r in &records {
                        match ends
                            .iter_mut()
                            .rev()
                            .find(|(t, p, _)| *p == r.partition && *t == r.topic)
                        {
                            Some(end) => end.2 = r.offset + 1,
                            None => ends.push((&r.topic, r.partition, r.offset + 1)),
                        }
                    }
                    for (topic, partition, next) in ends {
                        self.consumed.insert((topic.to_string(), partition), next);
                    }
                }
                return Ok(records);
            }
            self.resolve_positions().await?;
            self.send_fetches().await?;
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            if self.in_flight.is_empty() {
                tokio::time::sleep((deadline - now).min(Duration::from_millis(100))).await;
                continue;
            }
            // While the group is rebalancing, wake up to rejoin.
            let wait = (deadline - now).min(Duration::from_millis(500));
            if let Ok(Some((leader, asked, result))) =
                tokio::time::timeout(wait, self.results.recv()).await
            {
                self.in_flight.remove(&leader);
                let fetched = self.handle_fetch(leader, asked, result).await?;
                // Pipelining: the next fetch leaves before the records are decoded.
                self.send_fetches().await?;
                self.decode(fetched)?;
            }
        }
    }

    fn needs_join(&self) -> bool {
        match &self.member {
            None => true,
            Some(m) => m.rejoin.load(Ordering::SeqCst),
        }
    }

    async fn resolve_positions(&mut self) -> Result<()> {
        let unresolved: Vec<Tp> = self
            .positions
            .iter()
            .filter(|(_, p)| p.is_none())
            .map(|(tp, _)| tp.clone())
            .collect();
        if unresolved.is_empty() {
            return Ok(());
        }
        let mut committed = BTreeMap::new();
        if let Some(g) = &self.config.group_id {
            let need: Vec<Tp> = unresolved
                .iter()
                .filter(|tp| !self.seeks.contains_key(*tp))
                .cloned()
                .collect();
            if !need.is_empty() {
                committed = self.client.committed_offsets(g, Some(&need)).await?;
            }
        }
        let mut by_spec: BTreeMap<(u8, i64), Vec<Tp>> = BTreeMap::new();
        for tp in unresolved {
            let seek = match self.seeks.remove(&tp) {
                Some(s) => s,
                None => match committed.get(&tp) {
                    Some(o) => Seek::Offset(*o),
                    None => match self.config.auto_offset_reset {
                        OffsetReset::Earliest => Seek::Earliest,
                        OffsetReset::Latest => Seek::Latest,
                        OffsetReset::None => {
                            return Err(Error::Invalid(format!(
                                "no committed offset for {}-{} and no reset policy",
                                tp.0, tp.1
                            )))
                        }
                    },
                },
            };
            match seek {
                Seek::Offset(o) if o >= 0 => {
                    self.positions.insert(tp, Some(o));
                }
                Seek::Offset(_) | Seek::Earliest => by_spec.entry((0, 0)).or_default().push(tp),
                Seek::Latest => by_spec.entry((1, 0)).or_default().push(tp),
                Seek::Timestamp(t) => by_spec.entry((2, t)).or_default().push(tp),
            }
        }
        for ((kind, t), tps) in by_spec {
            let spec = match kind {
                0 => OffsetSpec::Earliest,
                1 => OffsetSpec::Latest,
                _ => OffsetSpec::Timestamp(t),
            };
            let offsets = self.client.list_offsets(&tps, spec).await?;
            let latest = if kind == 2 {
                self.client.list_offsets(&tps, OffsetSpec::Latest).await?
            } else {
                BTreeMap::new()
            };
            for tp in tps {
                // A timestamp after the last record reads from the end.
                let o = offsets
                    .get(&tp)
                    .copied()
                    .filter(|o| *o >= 0)
                    .or_else(|| latest.get(&tp).copied())
                    .unwrap_or(0);
                self.positions.insert(tp, Some(o));
            }
        }
        Ok(())
    }

    async fn send_fetches(&mut self) -> Result<()> {
        let mut by_leader: BTreeMap<i32, Vec<(Tp, i64)>> = BTreeMap::new();
        for (tp, pos) in &self.positions {
            let Some(pos) = pos else { continue };
            let leader = self.client.leader(&tp.0, tp.1).await?;
            if !self.in_flight.contains(&leader) {
                by_leader
                    .entry(leader)
                    .or_default()
                    .push((tp.clone(), *pos));
            }
        }
        for (leader, asked) in by_leader {
            self.in_flight.insert(leader);
            let client = self.client.clone();
            let config = self.config.clone();
            let tx = self.results_tx.clone();
            tokio::spawn(async move {
                let result = fetch(&client, &config, leader, &asked).await;
                let _ = tx.send((leader, asked, result));
            });
        }
        Ok(())
    }

    async fn handle_fetch(
        &mut self,
        leader: i32,
        asked: Vec<(Tp, i64)>,
        result: Result<FetchResponse>,
    ) -> Result<Vec<Fetched>> {
        let mut fetched = Vec::new();
        let response = match result {
            Ok(r) => r,
            Err(e) if e.is_retriable() => {
                tracing::debug!(leader, error = %e, "fetch failed; retrying");
                self.client.forget_broker(leader).await;
                tokio::time::sleep(self.client.config().retry_backoff).await;
                return Ok(fetched);
            }
            Err(e) => return Err(e),
        };
        if response.error_code != 0 {
            return Err(Error::kafka("fetching", response.error_code, None));
        }
        for t in response.responses {
            let topic = t.topic.0.to_string();
            for p in t.partitions {
                let tp = (topic.clone(), p.partition_index);
                let Some(&(_, fetched_at)) = asked.iter().find(|(a, _)| *a == tp) else {
                    continue;
                };
                // Skip answers for partitions moved (seek, rebalance) since the request left.
                if self.positions.get(&tp) != Some(&Some(fetched_at)) {
                    continue;
                }
                match ResponseError::try_from_code(p.error_code) {
                    None => {}
                    Some(ResponseError::OffsetOutOfRange) => {
                        let seek = match self.config.auto_offset_reset {
                            OffsetReset::Latest => Seek::Latest,
                            _ => Seek::Earliest,
                        };
                        self.seek(tp, seek);
                        continue;
                    }
                    Some(e) if e.is_retriable() => {
                        let _ = self.client.fresh_topic(&tp.0).await;
                        continue;
                    }
                    Some(_) => {
                        return Err(Error::kafka(
                            format!("fetching {}-{}", tp.0, tp.1),
                            p.error_code,
                            None,
                        ))
                    }
                }
                let records = p.records.unwrap_or_default();
                // The next fetch starts after the last whole batch (records skipped, control
                // batches and compacted-away offsets included); decoding comes after it left.
                if let Some(end) = last_batch_end(&records) {
                    self.positions.insert(tp.clone(), Some(end.max(fetched_at)));
                    fetched.push((tp, records, fetched_at));
                }
            }
        }
        Ok(fetched)
    }

    /// Decodes fetched batches into the buffer of records to hand out.
    fn decode(&mut self, fetched: Vec<Fetched>) -> Result<()> {
        for (tp, records, from) in fetched {
            decode_records(&tp, &records, from, &mut self.buffered)?;
        }
        Ok(())
    }

    /// Commits the positions of handed-out records.
    pub async fn commit(&mut self) -> Result<()> {
        let offsets = self.consumed.clone();
        self.commit_offsets(&offsets).await
    }

    /// Commits the given offsets (the next offset to read, per partition).
    pub async fn commit_offsets(&mut self, offsets: &BTreeMap<Tp, i64>) -> Result<()> {
        self.last_commit = Instant::now();
        let Some(group) = self.config.group_id.clone() else {
            return Ok(());
        };
        let (generation, member) = match &self.member {
            Some(m) => (m.generation, m.member_id.clone()),
            None => (-1, String::new()),
        };
        match self
            .client
            .commit_offsets(&group, generation, &member, offsets)
            .await
        {
            Err(e)
                if matches!(
                    e.code(),
                    Some(ResponseError::RebalanceInProgress)
                        | Some(ResponseError::IllegalGeneration)
                        | Some(ResponseError::UnknownMemberId)
                ) =>
            {
                if let Some(m) = &self.member {
                    m.rejoin.store(true, Ordering::SeqCst);
                }
                Err(e)
            }
            other => other,
        }
    }

    async fn join(&mut self) -> Result<()> {
        let group = self
            .config
            .group_id
            .clone()
            .expect("subscribed with a group");
        let topics = self.subscription.clone().unwrap_or_default();
        if let Some(old) = self.member.take() {
            old.heartbeat.abort();
            if self.config.enable_auto_commit && !self.consumed.is_empty() {
                let offsets = self.consumed.clone();
                let _ = self
                    .client
                    .commit_offsets(&group, old.generation, &old.member_id, &offsets)
                    .await;
            }
        }
        self.set_assignment(&[]);
        let mut attempts = 0;
        loop {
            attempts += 1;
            if attempts > 20 {
                return Err(Error::Invalid(format!(
                    "could not join group {group:?} after {} attempts",
                    attempts - 1
                )));
            }
            let coordinator = self.client.coordinator(&group).await?;
            let conn = self.client.broker_connection(coordinator).await?;
            let metadata = group::encode_subscription(&topics);
            // The broker answers JoinGroup when the rebalance completes.
            let wait = self.config.rebalance_timeout + Duration::from_secs(5);
            let joined = match conn
                .send_within(7, wait, |v| {
                    let mut r = JoinGroupRequest::default()
                        .with_group_id(GroupId(sb(&group)))
                        .with_session_timeout_ms(self.config.session_timeout.as_millis() as i32)
                        .with_member_id(sb(&self.member_id))
                        .with_protocol_type(sb("consumer"))
                        .with_protocols(vec![JoinGroupRequestProtocol::default()
                            .with_name(sb(group::RANGE))
                            .with_metadata(metadata.clone())]);
                    if v >= 1 {
                        r.rebalance_timeout_ms = self.config.rebalance_timeout.as_millis() as i32;
                    }
                    r
                })
                .await
            {
                Ok(joined) => joined,
                Err(e) if e.is_retriable() => {
                    tracing::debug!(group, error = %e, "JoinGroup failed; joining again");
                    if matches!(e, Error::Connection { .. }) {
                        self.client.forget_broker(coordinator).await;
                    }
                    tokio::time::sleep(self.client.config().retry_backoff).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            match ResponseError::try_from_code(joined.error_code) {
                None => {}
                Some(ResponseError::MemberIdRequired) => {
                    self.member_id = joined.member_id.to_string();
                    continue;
                }
                Some(ResponseError::UnknownMemberId) => {
                    self.member_id.clear();
                    continue;
                }
                Some(
                    ResponseError::RebalanceInProgress
                    | ResponseError::CoordinatorNotAvailable
                    | ResponseError::NotCoordinator
                    | ResponseError::CoordinatorLoadInProgress,
                ) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Some(_) => {
                    return Err(Error::kafka(
                        format!("joining group {group:?}"),
                        joined.error_code,
                        None,
                    ))
                }
            }
            self.member_id = joined.member_id.to_string();
            let generation = joined.generation_id;
            let assignments = if joined.leader == joined.member_id {
                self.assign_as_leader(&joined).await?
            } else {
                Vec::new()
            };
            let protocol_name = joined.protocol_name.clone();
            let (_, synced) = conn
                .send(5, |v| {
                    let mut r = SyncGroupRequest::default()
                        .with_group_id(GroupId(sb(&group)))
                        .with_generation_id(generation)
                        .with_member_id(sb(&self.member_id))
                        .with_assignments(
                            assignments
                                .iter()
                                .map(|(m, a)| {
                                    SyncGroupRequestAssignment::default()
                                        .with_member_id(sb(m))
                                        .with_assignment(a.clone())
                                })
                                .collect(),
                        );
                    if v >= 5 {
                        r.protocol_type = Some(sb("consumer"));
                        r.protocol_name = protocol_name.clone();
                    }
                    r
                })
                .await?;
            match ResponseError::try_from_code(synced.error_code) {
                None => {}
                Some(
                    ResponseError::RebalanceInProgress
                    | ResponseError::IllegalGeneration
                    | ResponseError::NotCoordinator
                    | ResponseError::CoordinatorNotAvailable,
                ) => continue,
                Some(ResponseError::UnknownMemberId) => {
                    self.member_id.clear();
                    continue;
                }
                Some(_) => {
                    return Err(Error::kafka(
                        format!("syncing group {group:?}"),
                        synced.error_code,
                        None,
                    ))
                }
            }
            let assigned = group::decode_assignment(&synced.assignment)?;
            tracing::debug!(group, generation, ?assigned, "joined group");
            self.set_assignment(&assigned);
            let rejoin = Arc::new(AtomicBool::new(false));
            let heartbeat = tokio::spawn(heartbeat(
                self.client.clone(),
                coordinator,
                group.clone(),
                generation,
                self.member_id.clone(),
                self.config.heartbeat_interval,
                rejoin.clone(),
            ));
            self.member = Some(Membership {
                coordinator,
                generation,
                member_id: self.member_id.clone(),
                rejoin,
                heartbeat,
            });
            return Ok(());
        }
    }

    async fn assign_as_leader(&self, joined: &JoinGroupResponse) -> Result<Vec<(String, Bytes)>> {
        let mut subscriptions = BTreeMap::new();
        for m in &joined.members {
            let topics = group::decode_subscription(&m.metadata).unwrap_or_default();
            subscriptions.insert(m.member_id.to_string(), topics);
        }
        let all: Vec<String> = subscriptions
            .values()
            .flatten()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let metadata = self.client.refresh_metadata(Some(&all)).await?;
        let counts = metadata
            .topics
            .values()
            .filter(|t| t.error == 0)
            .map(|t| (t.name.clone(), t.partitions.len() as i32))
            .collect();
        Ok(group::range_assign(&subscriptions, &counts)
            .into_iter()
            .map(|(m, tps)| (m, group::encode_assignment(&tps)))
            .collect())
    }

    /// Commits (with auto-commit on) and leaves the group.
    pub async fn close(mut self) -> Result<()> {
        let Some(m) = self.member.take() else {
            return Ok(());
        };
        m.heartbeat.abort();
        let group = self.config.group_id.clone().unwrap_or_default();
        let mut result = Ok(());
        if self.config.enable_auto_commit && !self.consumed.is_empty() {
            result = self
                .client
                .commit_offsets(&group, m.generation, &m.member_id, &self.consumed)
                .await;
        }
        let left = self
            .client
            .send_to(m.coordinator, 4, |v| {
                let r = LeaveGroupRequest::default().with_group_id(GroupId(sb(&group)));
                if v >= 3 {
                    r.with_members(vec![
                        MemberIdentity::default().with_member_id(sb(&m.member_id))
                    ])
                } else {
                    r.with_member_id(sb(&m.member_id))
                }
            })
            .await;
        result.and(left.map(|_| ()))
    }
}

async fn heartbeat(
    client: Client,
    coordinator: i32,
    group: String,
    generation: i32,
    member_id: String,
    interval: Duration,
    rejoin: Arc<AtomicBool>,
) {
    loop {
        tokio::time::sleep(interval).await;
        let r = client
            .send_to(coordinator, 4, |_| {
                HeartbeatRequest::default()
                    .with_group_id(GroupId(sb(&group)))
                    .with_generation_id(generation)
                    .with_member_id(sb(&member_id))
            })
            .await;
        match r {
            Ok(r) if r.error_code == 0 => {}
            Ok(r) => {
                tracing::debug!(group, code = r.error_code, "heartbeat asks to rejoin");
                rejoin.store(true, Ordering::SeqCst);
                return;
            }
            Err(e) => {
                tracing::debug!(group, error = %e, "heartbeat failed");
                rejoin.store(true, Ordering::SeqCst);
                return;
            }
        }
    }
}

async fn fetch(
    client: &Client,
    config: &ConsumerConfig,
    leader: i32,
    asked: &[(Tp, i64)],
) -> Result<FetchResponse> {
    let mut by_topic: BTreeMap<&str, Vec<(i32, i64)>> = BTreeMap::new();
    for ((t, p), o) in asked {
        by_topic.entry(t).or_default().push((*p, *o));
    }
    let conn = client.broker_connection(leader).await?;
    let (_, response) = conn
        .send(12, |_| {
            FetchRequest::default()
                .with_replica_id(broker(-1))
                .with_max_wait_ms(config.fetch_max_wait.as_millis() as i32)
                .with_min_bytes(config.fetch_min_bytes)
                .with_max_bytes(config.fetch_max_bytes)
                .with_session_epoch(-1)
                .with_topics(
                    by_topic
                        .iter()
                        .map(|(t, ps)| {
                            FetchTopic::default().with_topic(name(t)).with_partitions(
                                ps.iter()
                                    .map(|(p, o)| {
                                        FetchPartition::default()
                                            .with_partition(*p)
                                            .with_fetch_offset(*o)
                                            .with_partition_max_bytes(
                                                config.max_partition_fetch_bytes,
                                            )
                                    })
                                    .collect(),
                            )
                        })
                        .collect(),
                )
        })
        .await?;
    Ok(response)
}

/// Offset after the last whole batch of a fetch answer.
fn last_batch_end(records: &[u8]) -> Option<i64> {
    strata_protocol::batch::iter_batches(records)
        .map_while(|b| b.ok())
        .map(|(h, _)| h.next_offset())
        .last()
}

/// Appends the records at or after `from` in whole batches to `out` (a trailing partial
/// batch is ignored).
fn decode_records(
    tp: &Tp,
    records: &Bytes,
    from: i64,
    out: &mut VecDeque<ConsumerRecord>,
) -> Result<()> {
    for (header, range) in strata_protocol::batch::iter_batches(records).map_while(|b| b.ok()) {
        let log_append_time = header.timestamp_type_log_append();
        let batch = records.slice(range);
        crate::records::read_batch(&batch, from, |r| {
            out.push_back(ConsumerRecord {
                topic: tp.0.clone(),
                partition: tp.1,
                offset: r.offset,
                timestamp: r.timestamp,
                log_append_time,
                key: r.key,
                value: r.value,
                headers: r.headers,
            })
        })
        .map_err(|e| Error::Protocol(format!("cannot decode a batch of {}-{}: {e}", tp.0, tp.1)))?;
    }
    Ok(())
}
