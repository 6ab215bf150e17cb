//! Simulation of the metadata quorum (`docs/design/cluster.md` §7.1): the real Raft nodes
//! (openraft over Strata's log store and state machine, on disk in temporary directories)
//! talk through an in-process network that a seeded schedule partitions, and on which it
//! drops requests and answers and delays messages, while it crashes nodes (their Raft node
//! stops; what they fsynced stays) and restarts them from their directories. A writer keeps
//! committing through whichever node leads. Checked throughout and at the end:
//!
//! - at most one leader per term;
//! - a node's applied offset (its high watermark) never moves back while it runs;
//! - every node's image at a given offset is the same (replicas agree on every committed
//!   entry);
//! - no acknowledged write is lost: once the faults stop and every node is back, every node
//!   holds every acknowledged write.
//!
//! The fault schedule comes from the seed, printed at the start of each run and in every
//! failure; thread scheduling is not under its control, so a failure may need a few runs of
//! its seed to come back. `STRATA_SIM_SEEDS=a..b` runs other seeds (default `0..4`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::ServerState;
use strata_quorum::raft::node::{MetadataQuorum, QuorumSettings};
use strata_quorum::raft::state_machine::Published;
use strata_quorum::raft::{ControllerNode, MetadataRaft, TypeConfig};
use strata_quorum::{MetadataImage, MetadataRecord};
use tokio::sync::mpsc;
use uuid::Uuid;

/// xorshift64*: the schedule's only source of randomness.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

/// What the network does to messages now.
struct NetState {
    live: HashMap<u64, MetadataRaft>,
    /// Pairs that cannot talk (both ways).
    cut: BTreeSet<(u64, u64)>,
    /// Of every 1,000 messages, how many are lost.
    loss: u64,
    rng: Rng,
}

#[derive(Clone)]
struct SimNet(Arc<Mutex<NetState>>);

impl SimNet {
    fn lock(&self) -> std::sync::MutexGuard<'_, NetState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a message from `from` to `to` gets through now, and after what delay.
    fn pass(&self, from: u64, to: u64) -> Result<Duration, io::Error> {
        let mut net = self.lock();
        let pair = (from.min(to), from.max(to));
        if net.cut.contains(&pair) || !net.live.contains_key(&to) || !net.live.contains_key(&from) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "unreachable",
            ));
        }
        let loss = net.loss;
        if net.rng.below(1000) < loss {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "message lost"));
        }
        Ok(Duration::from_millis(net.rng.below(4)))
    }

    fn raft(&self, id: u64) -> Option<MetadataRaft> {
        self.lock().live.get(&id).cloned()
    }
}

struct SimFactory {
    net: SimNet,
    from: u64,
}

struct SimPeer {
    net: SimNet,
    from: u64,
    to: u64,
}

type Failed<E> = RPCError<u64, ControllerNode, E>;

impl SimPeer {
    /// The target's Raft node, once the request got through.
    async fn deliver<E: std::error::Error>(&self) -> Result<MetadataRaft, Failed<E>> {
        let delay = self
            .net
            .pass(self.from, self.to)
            .map_err(|e| match e.kind() {
                io::ErrorKind::ConnectionRefused => RPCError::Unreachable(Unreachable::new(&e)),
                _ => RPCError::Network(NetworkError::new(&e)),
            })?;
        tokio::time::sleep(delay).await;
        self.net.raft(self.to).ok_or_else(|| {
            let e = io::Error::new(io::ErrorKind::ConnectionRefused, "crashed");
            RPCError::Unreachable(Unreachable::new(&e))
        })
    }

    /// Whether the answer gets back. (openraft's network trait returns its RPCError.)
    #[allow(clippy::result_large_err)]
    fn answer<T, E: std::error::Error>(&self, answer: Result<T, E>) -> Result<T, Failed<E>> {
        if let Err(e) = self.net.pass(self.to, self.from) {
            return Err(RPCError::Network(NetworkError::new(&e)));
        }
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.to, e)))
    }
}

impl RaftNetworkFactory<TypeConfig> for SimFactory {
    type Network = SimPeer;

    async fn new_client(&mut self, target: u64, _node: &ControllerNode) -> SimPeer {
        SimPeer {
            net: self.net.clone(),
            from: self.from,
            to: target,
        }
    }
}

impl RaftNetwork<TypeConfig> for SimPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, Failed<RaftError<u64>>> {
        let raft = self.deliver().await?;
        self.answer(raft.append_entries(rpc).await)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, Failed<RaftError<u64, InstallSnapshotError>>> {
        let raft = self.deliver().await?;
        self.answer(raft.install_snapshot(rpc).await)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, Failed<RaftError<u64>>> {
        let raft = self.deliver().await?;
        self.answer(raft.vote(rpc).await)
    }
}

/// What the observers saw, checked as it arrives.
#[derive(Default)]
struct Seen {
    /// Term -> the nodes seen leading in it.
    leaders: BTreeMap<u64, BTreeSet<u64>>,
    /// Offset -> the digest of the image at it, and the node that first applied it.
    images: HashMap<u64, (u64, u64)>,
    violations: Vec<String>,
}

fn digest(image: &MetadataImage) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&image.to_records())
        .expect("records encode")
        .hash(&mut hasher);
    hasher.finish()
}

/// A node that runs, with the tasks watching it.
struct Node {
    quorum: MetadataQuorum,
    watchers: Vec<tokio::task::JoinHandle<()>>,
}

struct Sim {
    seed: u64,
    net: SimNet,
    dirs: BTreeMap<u64, PathBuf>,
    voters: BTreeMap<u64, ControllerNode>,
    nodes: BTreeMap<u64, Node>,
    seen: Arc<Mutex<Seen>>,
    settings: QuorumSettings,
}

impl Sim {
    async fn start(&mut self, id: u64) {
        let network = SimFactory {
            net: self.net.clone(),
            from: id,
        };
        let quorum = MetadataQuorum::open_with_network(
            &self.dirs[&id],
            id,
            self.voters.clone(),
            &self.settings,
            network,
        )
        .await
        .unwrap_or_else(|e| panic!("seed {}: node {id} does not open: {e}", self.seed));
        self.net.lock().live.insert(id, quorum.raft.clone());
        let mut watchers = Vec::new();
        // Leaders per term.
        let mut metrics = quorum.raft.metrics();
        let seen = self.seen.clone();
        watchers.push(tokio::spawn(async move {
            loop {
                let (state, term) = {
                    let m = metrics.borrow_and_update();
                    (m.state, m.current_term)
                };
                if state == ServerState::Leader {
                    let mut seen = seen.lock().expect("lock");
                    let leaders = seen.leaders.entry(term).or_default();
                    leaders.insert(id);
                    if leaders.len() > 1 {
                        let v = format!("term {term} has leaders {leaders:?}");
                        seen.violations.push(v);
                    }
                }
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        }));
        // Every applied image: offsets never back on this run, one image per offset.
        let (tx, mut rx) = mpsc::channel::<Published>(64);
        quorum.machine.attach(tx, u64::MAX);
        let seen = self.seen.clone();
        watchers.push(tokio::spawn(async move {
            let mut last = None;
            while let Some(p) = rx.recv().await {
                let d = digest(&p.image);
                let mut seen = seen.lock().expect("lock");
                if let Some(previous) = last.filter(|l| *l > p.offset) {
                    let v = format!("node {id} applied offset {} after {previous}", p.offset);
                    seen.violations.push(v);
                }
                last = Some(p.offset);
                match seen.images.get(&p.offset) {
                    Some((other, by)) if *other != d => {
                        let v = format!(
                            "offset {}: node {id}'s image differs from node {by}'s",
                            p.offset
                        );
                        seen.violations.push(v);
                    }
                    Some(_) => {}
                    None => {
                        seen.images.insert(p.offset, (d, id));
                    }
                }
            }
        }));
        self.nodes.insert(id, Node { quorum, watchers });
    }

    async fn crash(&mut self, id: u64) {
        let Some(node) = self.nodes.remove(&id) else {
            return;
        };
        self.net.lock().live.remove(&id);
        node.quorum.shutdown().await;
        for w in node.watchers {
            w.abort();
        }
    }

    /// The node that believes it leads, if one does.
    fn leader(&self) -> Option<&Node> {
        self.nodes
            .values()
            .find(|n| n.quorum.raft.metrics().borrow().state == ServerState::Leader)
    }
}

/// One seeded run: three voters, 60 steps of faults and writes, then recovery and checks.
async fn run(seed: u64) {
    eprintln!("sim seed {seed}");
    let here = tempfile::tempdir().expect("tempdir");
    let voters: BTreeMap<u64, ControllerNode> =
        (1..=3).map(|id| (id, ControllerNode::default())).collect();
    let mut sim = Sim {
        seed,
        net: SimNet(Arc::new(Mutex::new(NetState {
            live: HashMap::new(),
            cut: BTreeSet::new(),
            loss: 0,
            rng: Rng::new(seed ^ 0xA5A5),
        }))),
        dirs: voters
            .keys()
            .map(|id| (*id, here.path().join(format!("n{id}"))))
            .collect(),
        voters,
        nodes: BTreeMap::new(),
        seen: Arc::new(Mutex::new(Seen::default())),
        settings: QuorumSettings {
            election_timeout_ms: 150,
            // Snapshots and purges often, so that lagging nodes are caught up by one.
            snapshot_every_entries: 8,
            segment_bytes: 2048,
            ..QuorumSettings::default()
        },
    };
    for id in 1..=3 {
        sim.start(id).await;
    }
    let mut rng = Rng::new(seed);
    let mut acked: Vec<String> = Vec::new();
    let mut written = 0u64;
    for step in 0..60 {
        match rng.below(10) {
            0 | 1 => {
                let id = 1 + rng.below(3);
                sim.crash(id).await;
            }
            2 | 3 => {
                let down: Vec<u64> = (1..=3).filter(|id| !sim.nodes.contains_key(id)).collect();
                if let Some(&id) = down.get(rng.below(down.len() as u64) as usize) {
                    sim.start(id).await;
                }
            }
            4 => {
                let (a, b) = (1 + rng.below(3), 1 + rng.below(3));
                if a != b {
                    sim.net.lock().cut.insert((a.min(b), a.max(b)));
                }
            }
            5 => {
                // One node cut off from both others.
                let a = 1 + rng.below(3);
                let mut net = sim.net.lock();
                for b in (1..=3).filter(|b| *b != a) {
                    net.cut.insert((a.min(b), a.max(b)));
                }
            }
            6 => sim.net.lock().cut.clear(),
            7 => sim.net.lock().loss = [0, 50, 200][rng.below(3) as usize],
            _ => {}
        }
        // A few writes through whoever leads; one whose answer does not come in time may or
        // may not be committed, and is not counted.
        for _ in 0..3 {
            let Some(leader) = sim.leader() else { break };
            written += 1;
            let name = format!("s{seed}-w{written}");
            let records = vec![MetadataRecord::Topic {
                name: name.clone(),
                topic_id: Uuid::from_u128(u128::from(written)),
            }];
            let write = leader.quorum.write(records);
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(300), write).await {
                acked.push(name);
            }
        }
        tokio::time::sleep(Duration::from_millis(20 + rng.below(60))).await;
        let violations = sim.seen.lock().expect("lock").violations.clone();
        assert!(
            violations.is_empty(),
            "seed {seed} step {step}: {violations:?}"
        );
    }

    // The faults stop; every node comes back; one more write must commit everywhere.
    {
        let mut net = sim.net.lock();
        net.cut.clear();
        net.loss = 0;
    }
    for id in 1..=3 {
        if !sim.nodes.contains_key(&id) {
            sim.start(id).await;
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let offset = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "seed {seed}: no write committed after the faults stopped"
        );
        if let Some(leader) = sim.leader() {
            let records = vec![MetadataRecord::Topic {
                name: format!("s{seed}-final"),
                topic_id: Uuid::from_u128(u128::MAX),
            }];
            let write = leader.quorum.write(records);
            if let Ok(Ok(offset)) = tokio::time::timeout(Duration::from_secs(2), write).await {
                break offset;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut images = Vec::new();
    for (id, node) in &sim.nodes {
        node.quorum
            .raft
            .wait(Some(Duration::from_secs(60)))
            .metrics(
                |m| m.last_applied.is_some_and(|l| l.index >= offset),
                format!("seed {seed}: node {id} applies {offset}"),
            )
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: node {id} does not catch up: {e}"));
        images.push((*id, node.quorum.image()));
    }
    for (id, image) in &images {
        for name in &acked {
            assert!(
                image.topic_by_name(name).is_some(),
                "seed {seed}: node {id} lost the acknowledged write {name}"
            );
        }
    }
    let violations = sim.seen.lock().expect("lock").violations.clone();
    assert!(violations.is_empty(), "seed {seed}: {violations:?}");
    let terms = sim.seen.lock().expect("lock").leaders.len();
    eprintln!(
        "sim seed {seed}: {} acknowledged of {written} writes, {terms} terms with a leader, final offset {offset}",
        acked.len()
    );
    for id in 1..=3 {
        sim.crash(id).await;
    }
}

fn seeds() -> std::ops::Range<u64> {
    std::env::var("STRATA_SIM_SEEDS")
        .ok()
        .and_then(|s| {
            let (a, b) = s.split_once("..")?;
            Some(a.parse().ok()?..b.parse().ok()?)
        })
        .unwrap_or(0..4)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quorum_keeps_its_invariants_under_partitions_loss_and_crashes() {
    for seed in seeds() {
        run(seed).await;
    }
}
