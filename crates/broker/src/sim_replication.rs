//! A seeded simulation of one partition replicated on three brokers, under crashes, network
//! cuts and message loss (`docs/design/cluster.md`, the replication invariants).
//!
//! The parts are the real ones, driven in one thread in an order a seed decides: each broker's
//! [`Partition`] (its log on disk, its leader state, its truncation), the controller's
//! partition change rules (`strata_quorum::controller::partition_change`: fencing, unfencing,
//! AlterPartition), and one fetch round as the replica fetcher and the fetch handler perform it
//! (a divergence check and truncation, the leader counting the fetch offset, records appended
//! with the leader's offsets and epochs, fsynced before the next fetch, the leader's HW
//! followed). The network loses requests and answers, links are cut and healed, brokers crash
//! (losing what they had not fsynced) and restart, metadata reaches only the brokers that can
//! reach the controller, and a broker that cannot is fenced after a session timeout.
//!
//! After every step it checks:
//! - at most one broker leads each leader epoch;
//! - a leader's high watermark never moves back while it leads an epoch;
//! - an acks=all record (acknowledged once the HW passed it, with `min.insync.replicas` = 2
//!   checked at append) is in the log of every later leader (no unclean election, and no disk
//!   is lost, so one ISR member always survives);
//! - no follower's high watermark is above what a leader published, and a leader serves
//!   consumers nothing at or above its HW (followers serve no client: the broker's lookup is
//!   leader-only);
//! - every replica in the ISR holds the leader's bytes below the leader's high watermark.
//!
//! A broker that crashes and starts again before its session runs out is fenced when it
//! registers (a new leader epoch), and leads nothing before it has registered: otherwise it
//! would lead again in the epoch its followers hold, with the unsynced tail they copied
//! gone from its own log, and write other records at those offsets under the same epoch.
//!
//! A failure prints its seed; `STRATA_REPLICATION_SEEDS=n` runs seeds 0..n (default 12),
//! `STRATA_REPLICATION_SEED=s` one seed.

use std::collections::{BTreeMap, BTreeSet};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strata_quorum::controller::partition_change::{
    self, BrokerState, Brokers, IsrChangeOutcome, IsrChangeRequest, LeaderRecoveryState,
    PartitionState,
};

use crate::partition::{test_replica, IsrProposal, Partition};

const NODES: [i32; 3] = [1, 2, 3];
/// The controller, as an endpoint of network links.
const CONTROLLER: i32 = 0;
/// Milliseconds one step stands for.
const STEP_MS: u64 = 100;
/// Steps without a heartbeat before the controller fences a broker.
const SESSION_STEPS: u64 = 10;
/// `replica.lag.time.max.ms`.
const MAX_LAG: std::time::Duration = std::time::Duration::from_millis(3000);
const MIN_INSYNC: usize = 2;

struct Node {
    dir: tempfile::TempDir,
    partition: Option<Partition>,
    /// The partition epoch of the metadata it applied.
    applied_epoch: i32,
    last_heartbeat: u64,
    /// Whether this start of it registered with the controller.
    registered: bool,
}

struct Sim {
    rng: StdRng,
    step: u64,
    start: std::time::Instant,
    nodes: BTreeMap<i32, Node>,
    /// The controller's view.
    state: PartitionState,
    brokers: Brokers,
    /// Cut links (both directions), including with the controller.
    cut: BTreeSet<(i32, i32)>,
    /// Records written with acks=all, waiting for the HW: (node, leader epoch, offset).
    pending: Vec<(i32, i32, i64)>,
    /// Acknowledged acks=all records: offset → the batch's bytes.
    acked: BTreeMap<i64, Vec<u8>>,
    /// Who led each epoch.
    leaders: BTreeMap<i32, i32>,
    /// The highest HW seen per (node, epoch it led).
    hws: BTreeMap<(i32, i32), i64>,
    /// The highest HW any leader published.
    max_hw: i64,
    written: u64,
    log: Vec<String>,
}

fn batch(value: &[u8]) -> bytes::Bytes {
    strata_protocol::records::encode_batch_as(
        &[strata_protocol::records::PlainRecord::new(
            Some(b"k"),
            Some(value),
            1,
        )],
        kafka_protocol::records::Compression::None,
        strata_protocol::records::BatchProducer::NONE,
    )
    .expect("encode")
}

/// The batches of `p`'s log from its start, by base offset, with their bytes.
fn batches(p: &Partition) -> BTreeMap<i64, (i64, Vec<u8>)> {
    let read = p
        .read_for_replica(p.log_start_offset(), 1 << 30)
        .expect("read");
    strata_protocol::batch::iter_batches(&read.records)
        .map(|item| {
            let (header, range) = item.expect("a whole batch");
            (
                header.base_offset,
                (header.next_offset(), read.records[range].to_vec()),
            )
        })
        .collect()
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let brokers: Brokers = NODES.iter().map(|n| (*n, BrokerState::active(1))).collect();
        let state = PartitionState::new_partition(NODES.to_vec(), &brokers).expect("partition");
        let mut nodes = BTreeMap::new();
        for id in NODES {
            let dir = tempfile::tempdir().expect("tempdir");
            let partition =
                test_replica(dir.path(), id, state.leader, state.leader_epoch, &state.isr);
            nodes.insert(
                id,
                Node {
                    dir,
                    partition: Some(partition),
                    applied_epoch: state.partition_epoch,
                    last_heartbeat: 0,
                    registered: true,
                },
            );
        }
        Sim {
            rng: StdRng::seed_from_u64(seed),
            step: 0,
            start: std::time::Instant::now(),
            nodes,
            leaders: BTreeMap::from([(state.leader_epoch, state.leader)]),
            state,
            brokers,
            cut: BTreeSet::new(),
            pending: Vec::new(),
            acked: BTreeMap::new(),
            hws: BTreeMap::new(),
            max_hw: 0,
            written: 0,
            log: Vec::new(),
        }
    }

    fn now(&self) -> std::time::Instant {
        self.start + std::time::Duration::from_millis(self.step * STEP_MS)
    }

    fn linked(&self, a: i32, b: i32) -> bool {
        !self.cut.contains(&(a.min(b), a.max(b)))
    }

    /// The replica of broker `id` while it runs (none for -1, no leader).
    fn up(&self, id: i32) -> Option<&Partition> {
        self.nodes.get(&id)?.partition.as_ref()
    }

    /// Whether a message gets through (10% are lost).
    fn delivered(&mut self) -> bool {
        self.rng.gen_bool(0.9)
    }

    fn run(&mut self, steps: u64) {
        for _ in 0..steps {
            self.step += 1;
            let choice = self.rng.gen_range(0..100);
            match choice {
                0..=34 => self.produce(),
                35..=79 => self.fetch(),
                80..=84 => self.shrink(),
                85..=87 => self.crash(),
                88..=92 => self.restart(),
                93..=95 => self.cut_link(),
                _ => self.heal(),
            }
            self.observe_leader_hws();
            self.heartbeats();
            self.fence_silent();
            self.publish();
            self.acknowledge();
            self.check();
        }
        // Everything heals: the cluster converges and every replica holds the same log.
        self.cut.clear();
        for id in NODES {
            if self.up(id).is_none() {
                self.restart_node(id);
            }
        }
        for _ in 0..400 {
            self.step += 1;
            self.heartbeats();
            self.fence_silent();
            self.publish();
            for id in NODES {
                self.fetch_by(id, false);
            }
            self.observe_leader_hws();
            self.acknowledge();
            self.check();
        }
        let leader = self.state.leader;
        let p = self.up(leader).expect("the leader is up");
        assert_eq!(
            self.state.isr.len(),
            NODES.len(),
            "the ISR is whole again: {:?}",
            self.state
        );
        let expected = batches(p);
        for id in NODES {
            assert_eq!(
                batches(self.up(id).expect("up")),
                expected,
                "node {id} holds the leader's log"
            );
        }
        self.check_acked(leader);
    }

    fn note(&mut self, what: String) {
        self.log.push(format!("step {}: {what}", self.step));
    }

    /// The broker that believes it leads (the controller's leader, or a deposed one that has
    /// not heard) appends a batch: acks=all (refused below `min.insync.replicas`) or acks=1.
    fn produce(&mut self) {
        let candidates: Vec<i32> = NODES
            .iter()
            .copied()
            .filter(|id| self.up(*id).is_some_and(|p| p.is_leader()))
            .collect();
        if candidates.is_empty() {
            return;
        }
        let id = candidates[self.rng.gen_range(0..candidates.len())];
        let acks_all = self.rng.gen_bool(0.8);
        self.written += 1;
        let value = format!("v{}", self.written);
        let p = self.up(id).expect("up");
        if acks_all && p.in_sync_replica_count().unwrap_or(0) < MIN_INSYNC {
            return;
        }
        let appended = match p.append_internal(&batch(value.as_bytes()), 0) {
            Ok(appended) => appended,
            Err(_) => return,
        };
        assert!(crate::flusher::flush_now(p), "fsync");
        let epoch = p.leader_epoch();
        if acks_all {
            if let crate::partition::Appended::New { info, .. } = appended {
                self.pending.push((id, epoch, info.last_offset));
            }
        }
        self.note(format!(
            "node {id} appends {value} (acks={})",
            if acks_all { "all" } else { "1" }
        ));
    }

    /// A random broker runs one fetch round.
    fn fetch(&mut self) {
        let id = NODES[self.rng.gen_range(0..NODES.len())];
        self.fetch_by(id, true);
    }

    /// One fetch round of `id` from the leader it follows, as the fetcher and the fetch
    /// handler do it; with `lossy`, the request or the answer may be lost.
    fn fetch_by(&mut self, id: i32, lossy: bool) {
        let Some((leader, epoch)) = self.up(id).and_then(|p| p.followed_leader()) else {
            return;
        };
        if leader == id || !self.linked(id, leader) {
            return;
        }
        // What the network does to this round: the request lost, or the answer.
        let request_lost = lossy && !self.delivered();
        let answer_lost = lossy && !self.delivered();
        if request_lost {
            return;
        }
        let follower = self.up(id).expect("up");
        // What was appended is fsynced before the next fetch.
        assert!(crate::flusher::flush_now(follower));
        let Some(leading) = self.up(leader) else {
            return;
        };
        // The fetch handler refuses another epoch (FENCED / UNKNOWN_LEADER_EPOCH).
        if !leading.is_leader() || leading.leader_epoch() != epoch {
            return;
        }
        let offset = follower.log_end_offset();
        if let Some((diverging_epoch, end)) = leading.divergence(follower.latest_epoch(), offset) {
            if answer_lost {
                return;
            }
            let to = crate::replica_fetcher::truncation_point(follower, diverging_epoch, end);
            follower.truncate_to(to).expect("truncate");
            self.note(format!(
                "node {id} truncates to {to} (diverged from {leader})"
            ));
            return;
        }
        let proposal = leading.on_follower_fetch(id, offset);
        let read = leading.read_for_replica(offset, 1 << 16).expect("read");
        if !answer_lost {
            let follower = self.up(id).expect("up");
            if !read.records.is_empty() {
                follower
                    .append_replicated(&read.records, 0)
                    .expect("append replicated");
            }
            follower.follow_leader(read.high_watermark, read.log_start_offset);
        }
        if let Some(proposal) = proposal {
            self.alter_partition(leader, proposal);
        }
    }

    /// The leader's ISR shrink for replicas that lag.
    fn shrink(&mut self) {
        let now = self.now();
        for id in NODES {
            let proposal = self.up(id).and_then(|p| p.propose_isr_shrink(now, MAX_LAG));
            if let Some(proposal) = proposal {
                self.alter_partition(id, proposal);
            }
        }
    }

    /// AlterPartition from `leader`, if it reaches the controller; settled either way.
    fn alter_partition(&mut self, leader: i32, proposal: IsrProposal) {
        if self.linked(leader, CONTROLLER) && self.delivered() {
            let request = IsrChangeRequest {
                broker_id: leader,
                leader_epoch: proposal.leader_epoch,
                partition_epoch: proposal.partition_epoch,
                new_isr: proposal.isr.iter().map(|r| (*r, -1)).collect(),
                leader_recovery_state: LeaderRecoveryState::Recovered,
            };
            let outcome =
                partition_change::alter_partition(&self.state, &self.brokers, false, &request);
            if let Ok(IsrChangeOutcome::Changed(next) | IsrChangeOutcome::LeaderMoved(next)) =
                outcome
            {
                self.note(format!("ISR {:?} → {:?}", self.state.isr, next.isr));
                self.state = next;
                self.publish();
            }
        }
        if let Some(p) = self.up(leader) {
            p.isr_proposal_settled(proposal.leader_epoch);
        }
    }

    /// A broker stops at once, losing what it had not fsynced.
    fn crash(&mut self) {
        let up: Vec<i32> = NODES
            .iter()
            .copied()
            .filter(|id| self.up(*id).is_some())
            .collect();
        if up.len() <= 1 {
            return;
        }
        let id = up[self.rng.gen_range(0..up.len())];
        let node = self.nodes.get_mut(&id).expect("node");
        let p = node.partition.take().expect("up");
        p.truncate_to(p.recovery_point())
            .expect("lose the unsynced tail");
        drop(p);
        self.note(format!("node {id} crashes"));
    }

    /// A crashed broker starts again, maybe before the controller fenced it.
    fn restart(&mut self) {
        let down: Vec<i32> = NODES
            .iter()
            .copied()
            .filter(|id| self.up(*id).is_none())
            .collect();
        if let Some(&id) = down.get(self.rng.gen_range(0..down.len().max(1))) {
            self.restart_node(id);
        }
    }

    /// Reopens `id`'s log; it learns its role from the controller's metadata.
    fn restart_node(&mut self, id: i32) {
        let node = self.nodes.get_mut(&id).expect("node");
        // As it starts: a follower of no one until the metadata says otherwise.
        node.partition = Some(test_replica(node.dir.path(), id, -1, 0, &[]));
        node.applied_epoch = -1;
        node.registered = false;
        self.note(format!("node {id} restarts"));
    }

    fn cut_link(&mut self) {
        let a = NODES[self.rng.gen_range(0..NODES.len())];
        let others: Vec<i32> = [CONTROLLER]
            .into_iter()
            .chain(NODES)
            .filter(|b| *b != a)
            .collect();
        let b = others[self.rng.gen_range(0..others.len())];
        self.cut.insert((a.min(b), a.max(b)));
        self.note(format!("link {a}-{b} cut"));
    }

    fn heal(&mut self) {
        if self.cut.is_empty() {
            return;
        }
        let links: Vec<(i32, i32)> = self.cut.iter().copied().collect();
        let link = links[self.rng.gen_range(0..links.len())];
        self.cut.remove(&link);
        self.note(format!("link {}-{} healed", link.0, link.1));
    }

    /// Brokers that reach the controller register (a new start of a broker that is not
    /// fenced yet is fenced then, as `RegisterBroker` plans it) or heartbeat; a fenced one that
    /// heartbeats is unfenced.
    fn heartbeats(&mut self) {
        for id in NODES {
            if self.up(id).is_none() || !self.linked(id, CONTROLLER) {
                continue;
            }
            let node = self.nodes.get_mut(&id).expect("node");
            node.last_heartbeat = self.step;
            if !node.registered {
                node.registered = true;
                node.applied_epoch = -1;
                if !self.brokers[&id].fenced {
                    self.fence(id, "registers again before its session ran out");
                }
                continue;
            }
            if self.brokers[&id].fenced {
                self.brokers.insert(id, BrokerState::active(1));
                if let Some(next) =
                    partition_change::broker_unfenced(&self.state, &self.brokers, id, false)
                {
                    self.state = next;
                }
                self.note(format!("node {id} unfenced"));
            }
        }
    }

    /// The controller fences brokers silent for a session.
    fn fence_silent(&mut self) {
        for id in NODES {
            let silent = self.step - self.nodes[&id].last_heartbeat > SESSION_STEPS;
            if silent && !self.brokers[&id].fenced {
                self.fence(id, "silent for a session");
            }
        }
    }

    fn fence(&mut self, id: i32, why: &str) {
        let mut fenced = BrokerState::active(1);
        fenced.fenced = true;
        self.brokers.insert(id, fenced);
        self.note(format!("node {id} fenced ({why})"));
        if let Some(next) = partition_change::broker_fenced(&self.state, &self.brokers, id, false) {
            self.note(format!(
                "leader {} epoch {} ISR {:?}",
                next.leader, next.leader_epoch, next.isr
            ));
            self.state = next;
        }
    }

    /// The current metadata reaches every broker that reaches the controller.
    fn publish(&mut self) {
        let state = self.state.clone();
        if state.leader >= 0 {
            let previous = self.leaders.insert(state.leader_epoch, state.leader);
            assert!(
                previous.is_none_or(|p| p == state.leader),
                "epoch {} led by {previous:?} and {}",
                state.leader_epoch,
                state.leader
            );
        }
        for id in NODES {
            if !self.linked(id, CONTROLLER) {
                continue;
            }
            let node = self.nodes.get_mut(&id).expect("node");
            let Some(p) = node.partition.as_ref() else {
                continue;
            };
            if node.applied_epoch != state.partition_epoch {
                // Not before this start is registered (`PartitionManager::leader_to_follow`).
                let leader = match node.registered || state.leader != id {
                    true => state.leader,
                    false => -1,
                };
                p.assign(id, leader, state.leader_epoch, &state.isr);
                p.set_partition_epoch(state.partition_epoch);
                node.applied_epoch = state.partition_epoch;
            }
        }
    }

    /// acks=all records whose leader's HW passed them, in the epoch they were written in.
    fn acknowledge(&mut self) {
        let mut acked = Vec::new();
        self.pending.retain(|(id, epoch, offset)| {
            let Some(p) = self.nodes[id].partition.as_ref() else {
                return false;
            };
            if !p.is_leader() || p.leader_epoch() != *epoch {
                return false;
            }
            if p.high_watermark() > *offset {
                acked.push((*id, *offset));
                return false;
            }
            true
        });
        for (id, offset) in acked {
            let bytes = batches(self.up(id).expect("up"))
                .remove(&offset)
                .expect("the acknowledged batch")
                .1;
            self.acked.insert(offset, bytes);
        }
    }

    /// Records the highest HW a leader published (before metadata may demote it).
    fn observe_leader_hws(&mut self) {
        for id in NODES {
            if let Some(p) = self.up(id).filter(|p| p.is_leader()) {
                self.max_hw = self.max_hw.max(p.high_watermark());
            }
        }
    }

    fn check(&mut self) {
        let mut claimed: BTreeMap<i32, i32> = BTreeMap::new();
        self.observe_leader_hws();
        for id in NODES {
            if let Some(p) = self.up(id).filter(|p| !p.is_leader()) {
                assert!(
                    p.high_watermark() <= self.max_hw,
                    "follower {id}'s HW {} is above every HW a leader published ({})",
                    p.high_watermark(),
                    self.max_hw
                );
            }
        }
        for id in NODES {
            let Some(p) = self.nodes[&id].partition.as_ref() else {
                continue;
            };
            if p.is_leader() {
                let epoch = p.leader_epoch();
                if let Some(other) = claimed.insert(epoch, id) {
                    panic!("nodes {other} and {id} both lead epoch {epoch}");
                }
                assert_eq!(
                    self.leaders.get(&epoch),
                    Some(&id),
                    "node {id} leads epoch {epoch} the controller gave to another"
                );
                let hw = p.high_watermark();
                let seen = self.hws.entry((id, epoch)).or_insert(hw);
                assert!(
                    hw >= *seen,
                    "node {id}'s HW in epoch {epoch} went from {seen} back to {hw}"
                );
                *seen = hw;
                let above = p.read(hw, 1 << 20).expect("read");
                assert!(
                    above.records.is_empty(),
                    "node {id} serves consumers above its HW {hw}"
                );
            }
        }
        let leader = self.state.leader;
        let Some(leading) = self.up(leader).filter(|p| p.is_leader()) else {
            return;
        };
        let hw = leading.high_watermark();
        let reference = batches(leading);
        for id in NODES {
            let Some(p) = self.up(id) else { continue };
            if id == leader {
                continue;
            }
            if !self.state.isr.contains(&id) {
                // Out of the ISR it may still hold a deposed leader's tail below the HW.
                continue;
            }
            for (base, (next, bytes)) in batches(p) {
                if next > hw {
                    break;
                }
                assert_eq!(
                    reference.get(&base).map(|(_, b)| b),
                    Some(&bytes),
                    "node {id} differs from leader {leader} at offset {base}, below the HW {hw}"
                );
            }
        }
        if self.step % 25 == 0 {
            self.check_acked(leader);
        }
    }

    /// Every acknowledged record is in `leader`'s log, byte for byte.
    fn check_acked(&self, leader: i32) {
        let Some(p) = self.up(leader) else { return };
        let log = batches(p);
        for (offset, bytes) in &self.acked {
            assert_eq!(
                log.get(offset).map(|(_, b)| b),
                Some(bytes),
                "the acknowledged record at offset {offset} is not in leader {leader}'s log"
            );
        }
    }
}

fn run_seed(seed: u64, steps: u64) {
    let mut sim = Sim::new(seed);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sim.run(steps)));
    if let Err(panic) = outcome {
        let tail: Vec<&String> = sim.log.iter().rev().take(30).rev().collect();
        eprintln!("replication simulation failed with seed {seed}; its last steps:");
        for line in tail {
            eprintln!("  {line}");
        }
        std::panic::resume_unwind(panic);
    }
    assert!(
        sim.acked.len() > 10,
        "seed {seed}: only {} records acknowledged: the simulation exercised too little",
        sim.acked.len()
    );
}

#[test]
fn replicas_keep_the_invariants_under_crashes_cuts_and_loss() {
    if let Some(seed) = std::env::var("STRATA_REPLICATION_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        run_seed(seed, 1500);
        return;
    }
    let seeds = std::env::var("STRATA_REPLICATION_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12u64);
    for seed in 0..seeds {
        run_seed(seed, 1500);
    }
}
