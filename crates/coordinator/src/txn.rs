//! The transaction coordinator as a state machine: one [`TxnMetadata`] per transactional id.
//!
//! ```text
//!            add_partitions            end_txn(commit)            complete
//!   Empty ─────────────────▶ Ongoing ─────────────────▶ PrepareCommit ─────▶ CompleteCommit
//!     ▲                        │ end_txn(abort), timeout,                      │
//!     │                        │ init_producer_id (fencing)                    │
//!     │                        └──────────────────────▶ PrepareAbort ──▶ CompleteAbort
//!     └──────────── add_partitions starts the next transaction from Complete* ──┘
//! ```
//!
//! Every change returns the [`TxnMetadata`] to persist (the broker appends it to
//! `__transaction_state`, keyed by transactional id, and waits until it is durable before
//! acting on it). Ending a transaction returns a [`MarkerPlan`]: the commit or abort markers
//! the broker writes to every partition of the transaction before it calls
//! [`TxnCoordinator::complete`]. After a restart, [`TxnCoordinator::apply`] replays the
//! persisted records and [`TxnCoordinator::pending_markers`] lists the transactions whose
//! markers may not all be written yet (they are written again; a repeated marker is harmless).
//!
//! Epochs fence zombies: InitProducerId bumps the epoch (aborting an open transaction first,
//! with the bumped epoch on its markers), and so does a timeout abort, so the old producer's
//! requests fail with PRODUCER_FENCED (or INVALID_PRODUCER_EPOCH on produce).
//!
//! The broker keeps one [`TxnShard`] per `__transaction_state` partition (Kafka's unit of
//! transaction coordination), each built from its partition's records alone
//! ([`TxnShard::load`]), so a shard can be loaded and unloaded as leadership of its partition
//! moves. A shard also records which Prepare* transactions some task is completing
//! ([`TxnShard::claim`]), so that no two tasks write the same transaction's markers and the
//! rest are finished by the broker's ticker.
//!
//! Time is passed in; no I/O here.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use strata_protocol::ErrorCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

impl TxnState {
    /// Kafka's name (DescribeTransactions, ListTransactions).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }

    fn is_prepare(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

/// What is persisted per transactional id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnMetadata {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The epoch before the last bump (KIP-360: a producer may recover with it).
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// (topic, partition) in the transaction.
    pub partitions: BTreeSet<(String, i32)>,
    /// When the current transaction started (first partition added), ms; -1 if none.
    pub start_ms: i64,
    pub last_update_ms: i64,
}

/// Markers to write: to every partition, a control batch from `producer_id` at `epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerPlan {
    pub transactional_id: String,
    pub producer_id: i64,
    pub epoch: i16,
    pub commit: bool,
    pub partitions: Vec<(String, i32)>,
}

#[derive(Debug, Clone, Copy)]
pub struct TxnConfig {
    /// `transaction.max.timeout.ms`.
    pub max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`.
    pub id_expiration_ms: i64,
}

/// The answer to InitProducerId.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitPlan {
    /// Persist `record`, then answer with its producer id and epoch.
    Ready(TxnMetadata),
    /// An open transaction must be aborted first: persist `record` (PrepareAbort with the
    /// bumped epoch), write the markers, `complete`, then ask again.
    AbortFirst(TxnMetadata, MarkerPlan),
}

/// The answer to EndTxn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndPlan {
    /// A retry of an end that already completed: nothing to do.
    AlreadyDone,
    /// Persist `record` (Prepare*), write the markers, then `complete`.
    Markers(TxnMetadata, MarkerPlan),
}

#[derive(Debug)]
pub struct TxnCoordinator {
    config: TxnConfig,
    txns: HashMap<String, TxnMetadata>,
}

impl TxnCoordinator {
    pub fn new(config: TxnConfig) -> Self {
        TxnCoordinator {
            config,
            txns: HashMap::new(),
        }
    }

    pub fn get(&self, transactional_id: &str) -> Option<&TxnMetadata> {
        self.txns.get(transactional_id)
    }

    pub fn all(&self) -> impl Iterator<Item = &TxnMetadata> {
        self.txns.values()
    }

    /// Replays a persisted record (`None` value: the id expired).
    pub fn apply(&mut self, transactional_id: &str, value: Option<TxnMetadata>) {
        match value {
            Some(m) => {
                self.txns.insert(transactional_id.to_string(), m);
            }
            None => {
                self.txns.remove(transactional_id);
            }
        }
    }

    fn store(&mut self, m: TxnMetadata) -> TxnMetadata {
        self.txns.insert(m.transactional_id.clone(), m.clone());
        m
    }

    fn markers(m: &TxnMetadata, commit: bool) -> MarkerPlan {
        MarkerPlan {
            transactional_id: m.transactional_id.clone(),
            producer_id: m.producer_id,
            epoch: m.producer_epoch,
            commit,
            partitions: m.partitions.iter().cloned().collect(),
        }
    }

    /// InitProducerId with a transactional id. `fresh_producer_id` is used for a new id or
    /// when the epoch is exhausted; `expected` is the (id, epoch) a recovering producer
    /// presents (KIP-360).
    pub fn init_producer_id(
        &mut self,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
        fresh_producer_id: i64,
        now: i64,
    ) -> Result<InitPlan, ErrorCode> {
        if timeout_ms <= 0 || timeout_ms > self.config.max_timeout_ms {
            return Err(ErrorCode::InvalidTransactionTimeout);
        }
        let Some(current) = self.txns.get(transactional_id).cloned() else {
            return Ok(InitPlan::Ready(self.store(TxnMetadata {
                transactional_id: transactional_id.to_string(),
                producer_id: fresh_producer_id,
                producer_epoch: 0,
                last_producer_epoch: -1,
                timeout_ms,
                state: TxnState::Empty,
                partitions: BTreeSet::new(),
                start_ms: -1,
                last_update_ms: now,
            })));
        };
        if current.state.is_prepare() {
            return Err(ErrorCode::ConcurrentTransactions);
        }
        // A producer that presents an id and epoch (KIP-360 recovery) must be the one that holds
        // the transactional id: its current epoch, or the one just before the last bump that
        // it caused itself (a retry whose answer was lost, or recovery after a timeout abort).
        // Anything else would let one client fence another's producer: PRODUCER_FENCED.
        if let Some((id, epoch)) = expected {
            let known = id == current.producer_id
                && (epoch == current.producer_epoch
                    || (current.last_producer_epoch >= 0 && epoch == current.last_producer_epoch));
            if !known {
                return Err(ErrorCode::ProducerFenced);
            }
        }
        let mut next = current.clone();
        next.timeout_ms = timeout_ms;
        next.last_update_ms = now;
        // A new instance (no id and epoch presented) fences every earlier one, so no earlier
        // epoch may recover afterwards: as Kafka, the previous epoch is forgotten then.
        next.last_producer_epoch = if expected.is_some() {
            current.producer_epoch
        } else {
            -1
        };
        if current.producer_epoch >= i16::MAX - 1 {
            next.producer_id = fresh_producer_id;
            next.producer_epoch = 0;
            next.last_producer_epoch = -1;
        } else {
            next.producer_epoch = current.producer_epoch + 1;
        }
        if current.state == TxnState::Ongoing {
            // Fence the old producer and abort its transaction with the new epoch.
            next.producer_id = current.producer_id;
            next.producer_epoch = current.producer_epoch.saturating_add(1);
            next.state = TxnState::PrepareAbort;
            let plan = Self::markers(&next, false);
            return Ok(InitPlan::AbortFirst(self.store(next), plan));
        }
        next.state = TxnState::Empty;
        next.partitions.clear();
        next.start_ms = -1;
        Ok(InitPlan::Ready(self.store(next)))
    }

    fn check_producer(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
    ) -> Result<&TxnMetadata, ErrorCode> {
        let m = self
            .txns
            .get(transactional_id)
            .ok_or(ErrorCode::InvalidProducerIdMapping)?;
        if m.producer_id != producer_id {
            return Err(ErrorCode::InvalidProducerIdMapping);
        }
        if epoch != m.producer_epoch {
            return Err(ErrorCode::ProducerFenced);
        }
        Ok(m)
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn, with the group's offsets partition).
    /// Returns the record to persist, if anything changed.
    pub fn add_partitions(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
        now: i64,
    ) -> Result<Option<TxnMetadata>, ErrorCode> {
        let m = self.check_producer(transactional_id, producer_id, epoch)?;
        if m.state.is_prepare() {
            return Err(ErrorCode::ConcurrentTransactions);
        }
        let mut next = m.clone();
        if next.state != TxnState::Ongoing {
            next.state = TxnState::Ongoing;
            next.partitions.clear();
            next.start_ms = now;
        }
        let before = next.partitions.len();
        next.partitions.extend(partitions.iter().cloned());
        if next.partitions.len() == before && m.state == TxnState::Ongoing {
            return Ok(None);
        }
        next.last_update_ms = now;
        Ok(Some(self.store(next)))
    }

    /// KIP-890 verification of a transactional produce: the partition must be in the
    /// producer's open transaction.
    pub fn verify(
        &self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partition: &(String, i32),
    ) -> Result<(), ErrorCode> {
        let m = self
            .check_producer(transactional_id, producer_id, epoch)
            .map_err(|e| match e {
                ErrorCode::ProducerFenced => ErrorCode::InvalidProducerEpoch,
                other => other,
            })?;
        if m.state == TxnState::Ongoing && m.partitions.contains(partition) {
            Ok(())
        } else {
            Err(ErrorCode::InvalidTxnState)
        }
    }

    /// EndTxn.
    pub fn end_txn(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        now: i64,
    ) -> Result<EndPlan, ErrorCode> {
        let m = self.check_producer(transactional_id, producer_id, epoch)?;
        match (m.state, commit) {
            (TxnState::Ongoing, _) => {
                let mut next = m.clone();
                next.state = if commit {
                    TxnState::PrepareCommit
                } else {
                    TxnState::PrepareAbort
                };
                next.last_update_ms = now;
                let plan = Self::markers(&next, commit);
                Ok(EndPlan::Markers(self.store(next), plan))
            }
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
                Ok(EndPlan::AlreadyDone)
            }
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                Err(ErrorCode::ConcurrentTransactions)
            }
            _ => Err(ErrorCode::InvalidTxnState),
        }
    }

    /// The markers of a Prepare* transaction are all written: move it to Complete*.
    pub fn complete(&mut self, transactional_id: &str, now: i64) -> Option<TxnMetadata> {
        let m = self.txns.get(transactional_id)?;
        let state = match m.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            TxnState::PrepareAbort => TxnState::CompleteAbort,
            _ => return None,
        };
        let mut next = m.clone();
        next.state = state;
        next.partitions.clear();
        next.start_ms = -1;
        next.last_update_ms = now;
        Some(self.store(next))
    }

    /// Transactions past their timeout, moved to PrepareAbort with a bumped epoch (so the
    /// producer is fenced): persist each record, write its markers, then `complete`.
    pub fn abort_timed_out(&mut self, now: i64) -> Vec<(TxnMetadata, MarkerPlan)> {
        let due: Vec<String> = self
            .txns
            .values()
            .filter(|m| {
                m.state == TxnState::Ongoing
                    && m.start_ms >= 0
                    && now.saturating_sub(m.start_ms) > i64::from(m.timeout_ms)
            })
            .map(|m| m.transactional_id.clone())
            .collect();
        due.into_iter()
            .filter_map(|id| {
                let mut next = self.txns.get(&id)?.clone();
                if next.producer_epoch < i16::MAX - 1 {
                    next.last_producer_epoch = next.producer_epoch;
                    next.producer_epoch += 1;
                }
                next.state = TxnState::PrepareAbort;
                next.last_update_ms = now;
                let plan = Self::markers(&next, false);
                Some((self.store(next), plan))
            })
            .collect()
    }

    /// Transactional ids without a transaction in progress, idle longer than
    /// `transactional.id.expiration.ms`: removed; persist a tombstone for each.
    pub fn expire_ids(&mut self, now: i64) -> Vec<String> {
        let expired: Vec<String> = self
            .txns
            .values()
            .filter(|m| {
                matches!(
                    m.state,
                    TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
                ) && now.saturating_sub(m.last_update_ms) > self.config.id_expiration_ms
            })
            .map(|m| m.transactional_id.clone())
            .collect();
        for id in &expired {
            self.txns.remove(id);
        }
        expired
    }

    /// Transactions whose markers may be unwritten (Prepare* after a restart).
    pub fn pending_markers(&self) -> Vec<MarkerPlan> {
        self.txns
            .values()
            .filter(|m| m.state.is_prepare())
            .map(|m| Self::markers(m, m.state == TxnState::PrepareCommit))
            .collect()
    }
}

/// The coordinator of one `__transaction_state` partition: the transactional ids that hash
/// to it (Kafka's partitioning, [`crate::offsets_partition_for`]), built from that partition's
/// records only, so that it can be loaded and unloaded as a unit when leadership of the
/// partition moves. The broker keeps one per partition, each behind its own lock.
#[derive(Debug)]
pub struct TxnShard {
    /// The `__transaction_state` partition this shard is built from.
    pub partition: i32,
    pub coordinator: TxnCoordinator,
    /// Ids in Prepare* whose markers some task is writing now. A Prepare* id not claimed
    /// here (after a load, or after a failed attempt) is finished by the broker's ticker.
    completing: HashSet<String>,
}

/// What loading a shard found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoadStats {
    pub records: usize,
    /// Records of ids that belong to another partition, or unreadable: ignored.
    pub skipped: usize,
}

impl TxnShard {
    pub fn empty(config: TxnConfig, partition: i32) -> Self {
        TxnShard {
            partition,
            coordinator: TxnCoordinator::new(config),
            completing: HashSet::new(),
        }
    }

    /// Rebuilds the shard of `partition` (of `partitions`) from that partition's records,
    /// `(key, value)` in log order (`None` value: a tombstone).
    pub fn load(
        config: TxnConfig,
        partition: i32,
        partitions: i32,
        records: impl IntoIterator<Item = (Vec<u8>, Option<Vec<u8>>)>,
    ) -> (Self, LoadStats) {
        let mut shard = TxnShard::empty(config, partition);
        let mut stats = LoadStats::default();
        for (key, value) in records {
            match decode_record(&key, value.as_deref()) {
                // A record of an id that does not hash here cannot be this shard's: the
                // shard that owns the id would never see it, so acting on it would split
                // one id's state between two coordinators.
                Some((id, value)) if crate::offsets_partition_for(&id, partitions) == partition => {
                    shard.coordinator.apply(&id, value);
                    stats.records += 1;
                }
                _ => stats.skipped += 1,
            }
        }
        (shard, stats)
    }

    /// Marks `transactional_id` as being completed by the caller (it moved to Prepare*).
    pub fn claim(&mut self, transactional_id: &str) {
        self.completing.insert(transactional_id.to_string());
    }

    /// The caller no longer completes `transactional_id` (done, or given up for a retry).
    pub fn release(&mut self, transactional_id: &str) {
        self.completing.remove(transactional_id);
    }

    /// Prepare* transactions nobody is completing: claimed for the caller, who writes their
    /// markers (again: a repeated marker is harmless) and completes them.
    pub fn claim_unfinished(&mut self) -> Vec<MarkerPlan> {
        let plans: Vec<MarkerPlan> = self
            .coordinator
            .pending_markers()
            .into_iter()
            .filter(|p| !self.completing.contains(&p.transactional_id))
            .collect();
        for p in &plans {
            self.completing.insert(p.transactional_id.clone());
        }
        plans
    }
}

/// The key and value of a `__transaction_state` record.
pub fn encode_record(m: &TxnMetadata) -> (Vec<u8>, Vec<u8>) {
    (
        m.transactional_id.as_bytes().to_vec(),
        serde_json::to_vec(m).expect("metadata serializes"),
    )
}

/// Reads a `__transaction_state` record: the id and its metadata (`None`: a tombstone).
pub fn decode_record(key: &[u8], value: Option<&[u8]>) -> Option<(String, Option<TxnMetadata>)> {
    let id = String::from_utf8(key.to_vec()).ok()?;
    match value {
        None => Some((id, None)),
        Some(v) => serde_json::from_slice(v).ok().map(|m| (id, Some(m))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coordinator() -> TxnCoordinator {
        TxnCoordinator::new(TxnConfig {
            max_timeout_ms: 60_000,
            id_expiration_ms: 1_000_000,
        })
    }

    fn tp(t: &str, p: i32) -> (String, i32) {
        (t.to_string(), p)
    }

    fn ready(plan: InitPlan) -> TxnMetadata {
        match plan {
            InitPlan::Ready(m) => m,
            other => panic!("expected Ready, got {other:?}"),
        }
    }

    #[test]
    fn commit_cycle() {
        let mut c = coordinator();
        let m = ready(c.init_producer_id("t", 10_000, None, 100, 0).unwrap());
        assert_eq!(
            (m.producer_id, m.producer_epoch, m.state),
            (100, 0, TxnState::Empty)
        );
        // Partitions before a transaction starts it; adding the same again changes nothing.
        let r = c
            .add_partitions("t", 100, 0, &[tp("a", 0), tp("a", 1)], 5)
            .unwrap();
        assert_eq!(r.unwrap().state, TxnState::Ongoing);
        assert_eq!(
            c.add_partitions("t", 100, 0, &[tp("a", 0)], 6).unwrap(),
            None
        );
        assert!(c.verify("t", 100, 0, &tp("a", 1)).is_ok());
        assert_eq!(
            c.verify("t", 100, 0, &tp("b", 0)),
            Err(ErrorCode::InvalidTxnState)
        );
        let EndPlan::Markers(prepare, plan) = c.end_txn("t", 100, 0, true, 7).unwrap() else {
            panic!("markers expected");
        };
        assert_eq!(prepare.state, TxnState::PrepareCommit);
        assert_eq!(plan.partitions, vec![tp("a", 0), tp("a", 1)]);
        assert!(plan.commit);
        // While markers are written: retries wait, other ends are refused.
        assert_eq!(
            c.end_txn("t", 100, 0, true, 8),
            Err(ErrorCode::ConcurrentTransactions)
        );
        assert_eq!(
            c.add_partitions("t", 100, 0, &[tp("a", 0)], 8),
            Err(ErrorCode::ConcurrentTransactions)
        );
        assert_eq!(c.pending_markers(), vec![plan]);
        let done = c.complete("t", 9).unwrap();
        assert_eq!(done.state, TxnState::CompleteCommit);
        assert!(done.partitions.is_empty());
        assert_eq!(c.end_txn("t", 100, 0, true, 10), Ok(EndPlan::AlreadyDone));
        assert_eq!(
            c.end_txn("t", 100, 0, false, 10),
            Err(ErrorCode::InvalidTxnState)
        );
        // The next transaction starts from CompleteCommit.
        let r = c
            .add_partitions("t", 100, 0, &[tp("b", 0)], 11)
            .unwrap()
            .unwrap();
        assert_eq!(r.partitions.len(), 1);
    }

    #[test]
    fn a_new_instance_fences_the_old_one_and_aborts_its_transaction() {
        let mut c = coordinator();
        ready(c.init_producer_id("t", 10_000, None, 100, 0).unwrap());
        c.add_partitions("t", 100, 0, &[tp("a", 0)], 1).unwrap();
        let InitPlan::AbortFirst(prepare, plan) =
            c.init_producer_id("t", 10_000, None, 101, 2).unwrap()
        else {
            panic!("abort first");
        };
        assert_eq!(
            (prepare.state, prepare.producer_epoch),
            (TxnState::PrepareAbort, 1)
        );
        assert_eq!((plan.epoch, plan.commit), (1, false));
        assert_eq!(
            c.init_producer_id("t", 10_000, None, 101, 3),
            Err(ErrorCode::ConcurrentTransactions)
        );
        c.complete("t", 4).unwrap();
        let m = ready(c.init_producer_id("t", 10_000, None, 102, 5).unwrap());
        assert_eq!((m.producer_id, m.producer_epoch), (100, 2));
        // The zombie (epoch 0) is fenced everywhere.
        assert_eq!(
            c.add_partitions("t", 100, 0, &[tp("a", 0)], 6),
            Err(ErrorCode::ProducerFenced)
        );
        assert_eq!(
            c.end_txn("t", 100, 0, true, 6),
            Err(ErrorCode::ProducerFenced)
        );
        assert_eq!(
            c.verify("t", 100, 0, &tp("a", 0)),
            Err(ErrorCode::InvalidProducerEpoch)
        );
        assert_eq!(
            c.add_partitions("t", 99, 2, &[tp("a", 0)], 6),
            Err(ErrorCode::InvalidProducerIdMapping)
        );
        assert_eq!(
            c.add_partitions("x", 100, 2, &[tp("a", 0)], 6),
            Err(ErrorCode::InvalidProducerIdMapping)
        );
    }

    #[test]
    fn timeouts_abort_with_a_bumped_epoch_and_kip_360_recovery_works() {
        let mut c = coordinator();
        ready(c.init_producer_id("t", 1_000, None, 100, 0).unwrap());
        c.add_partitions("t", 100, 0, &[tp("a", 0)], 10).unwrap();
        assert!(c.abort_timed_out(1_010).is_empty());
        let aborted = c.abort_timed_out(1_011);
        assert_eq!(aborted.len(), 1);
        assert_eq!((aborted[0].1.epoch, aborted[0].1.commit), (1, false));
        c.complete("t", 1_012).unwrap();
        // The timed-out producer is fenced, but may recover with its last epoch (KIP-360).
        assert_eq!(
            c.end_txn("t", 100, 0, false, 1_013),
            Err(ErrorCode::ProducerFenced)
        );
        let m = ready(
            c.init_producer_id("t", 1_000, Some((100, 0)), 101, 1_014)
                .unwrap(),
        );
        assert_eq!((m.producer_id, m.producer_epoch), (100, 2));
        assert_eq!(
            c.init_producer_id("t", 1_000, Some((100, 0)), 101, 1_015),
            Err(ErrorCode::ProducerFenced)
        );
    }

    #[test]
    fn no_client_can_fence_another_producer_with_an_old_or_guessed_epoch() {
        let mut c = coordinator();
        // Instance A gets epoch 0; instance B (a new instance, no id presented) fences it.
        ready(c.init_producer_id("t", 10_000, None, 100, 0).unwrap());
        let b = ready(c.init_producer_id("t", 10_000, None, 101, 1).unwrap());
        assert_eq!((b.producer_id, b.producer_epoch), (100, 1));
        // A (a zombie) presenting its old epoch must not bump B's epoch.
        assert_eq!(
            c.init_producer_id("t", 10_000, Some((100, 0)), 102, 2),
            Err(ErrorCode::ProducerFenced)
        );
        // Nor may anyone with a guessed epoch or another producer's id.
        for guess in [(100, 2), (100, 7), (99, 1), (101, 1)] {
            assert_eq!(
                c.init_producer_id("t", 10_000, Some(guess), 102, 3),
                Err(ErrorCode::ProducerFenced),
                "{guess:?}"
            );
        }
        // Also not while B has a transaction open (no abort happens for the intruder).
        c.add_partitions("t", 100, 1, &[tp("a", 0)], 4).unwrap();
        assert_eq!(
            c.init_producer_id("t", 10_000, Some((100, 0)), 102, 5),
            Err(ErrorCode::ProducerFenced)
        );
        assert_eq!(c.get("t").map(|m| m.state), Some(TxnState::Ongoing));
        // B itself is still in business, and may recover with its own epoch.
        c.verify("t", 100, 1, &tp("a", 0)).unwrap();
        let InitPlan::AbortFirst(m, _) = c
            .init_producer_id("t", 10_000, Some((100, 1)), 102, 6)
            .unwrap()
        else {
            panic!("B's own open transaction is aborted first");
        };
        assert_eq!(m.producer_epoch, 2);
    }

    #[test]
    fn a_shard_loads_from_its_own_partition_only() {
        let config = TxnConfig {
            max_timeout_ms: 60_000,
            id_expiration_ms: 1_000_000,
        };
        // Two ids in different partitions of 50, and one record of each in partition `pa`'s
        // log (the foreign one must be ignored), then a tombstone and a later state.
        let (a, b) = ("txn-a", "txn-b");
        let pa = crate::offsets_partition_for(a, 50);
        assert_ne!(pa, crate::offsets_partition_for(b, 50));
        let mut c = coordinator();
        let ma = ready(c.init_producer_id(a, 1_000, None, 1, 0).unwrap());
        let mb = ready(c.init_producer_id(b, 1_000, None, 2, 0).unwrap());
        c.add_partitions(a, 1, 0, &[tp("t", 0)], 1).unwrap();
        let EndPlan::Markers(prepared, plan) = c.end_txn(a, 1, 0, true, 2).unwrap() else {
            panic!("markers expected");
        };
        let rec = |m: &TxnMetadata| {
            let (k, v) = encode_record(m);
            (k, Some(v))
        };
        let log = vec![rec(&ma), rec(&mb), rec(&prepared)];
        let (mut shard, stats) = TxnShard::load(config, pa, 50, log.clone());
        assert_eq!(
            stats,
            LoadStats {
                records: 2,
                skipped: 1
            }
        );
        assert_eq!(shard.coordinator.get(a), Some(&prepared));
        assert!(shard.coordinator.get(b).is_none());
        // The prepared transaction is unfinished: claimed once, then not again until
        // released.
        assert_eq!(shard.claim_unfinished(), vec![plan.clone()]);
        assert!(shard.claim_unfinished().is_empty());
        shard.release(a);
        assert_eq!(shard.claim_unfinished(), vec![plan]);
        // A tombstone removes the id; the other partition's shard never saw it.
        let mut with_tombstone = log;
        with_tombstone.push((a.as_bytes().to_vec(), None));
        let (shard, _) = TxnShard::load(config, pa, 50, with_tombstone.clone());
        assert!(shard.coordinator.get(a).is_none());
        let pb = crate::offsets_partition_for(b, 50);
        let (other, stats) = TxnShard::load(config, pb, 50, with_tombstone);
        assert_eq!(other.coordinator.get(b), Some(&mb));
        assert_eq!(stats.records, 1);
    }

    #[test]
    fn limits_expiry_and_replay() {
        let mut c = coordinator();
        assert_eq!(
            c.init_producer_id("t", 60_001, None, 1, 0),
            Err(ErrorCode::InvalidTransactionTimeout)
        );
        let m = ready(c.init_producer_id("t", 1_000, None, 1, 0).unwrap());
        let (key, value) = encode_record(&m);
        let (id, decoded) = decode_record(&key, Some(&value)).unwrap();
        let mut replayed = coordinator();
        replayed.apply(&id, decoded);
        assert_eq!(replayed.get("t"), Some(&m));
        assert_eq!(c.expire_ids(1_000_000), Vec::<String>::new());
        assert_eq!(c.expire_ids(1_000_001), vec!["t".to_string()]);
        assert!(c.get("t").is_none());
        replayed.apply("t", None);
        assert!(replayed.get("t").is_none());
        // An exhausted epoch moves to a fresh producer id.
        let mut m = ready(c.init_producer_id("u", 1_000, None, 5, 0).unwrap());
        m.producer_epoch = i16::MAX - 1;
        c.apply("u", Some(m));
        let next = ready(c.init_producer_id("u", 1_000, None, 6, 1).unwrap());
        assert_eq!((next.producer_id, next.producer_epoch), (6, 0));
    }
}
