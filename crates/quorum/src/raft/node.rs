//! Opening a node's metadata quorum (`docs/design/cluster.md` §2.6, §2.9).
//!
//! A quorum of one voter, this node: at the first start it initializes the membership with
//! itself; at every start it calls an election at once instead of waiting for a timeout, and
//! [`MetadataQuorum::open_single`] returns once it leads and has applied its whole log, so
//! the image it serves holds every change that was ever acknowledged.
//!
//! A data directory of format version 2 (the records in `<meta>/metadata.log`, no
//! `<meta>/raft/`) is imported at its first start: its records become a snapshot at log id
//! (term 1, index 1) with this node as the only voter, in `<meta>/raft.tmp/`, fsynced and
//! renamed to `<meta>/raft/` (the commit point; a crash before it redoes the import), then
//! `metadata.log` is renamed `metadata.log.imported` and never read again.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openraft::{Config, Membership, SnapshotPolicy};

use super::log_store::{replace_durably, sync_dir, AppendSpace, RaftLog};
use super::network::Peers;
use super::state_machine::{ImageMachine, MachineHandle};
use super::{log_id, ControllerNode, MetadataBatch, MetadataRaft, StoredMembership, Vote};
use crate::image::MetadataImage;
use crate::log::LocalMetadataLog;
use crate::record::MetadataRecord;

/// How the quorum runs.
#[derive(Debug, Clone)]
pub struct QuorumSettings {
    /// The shortest election timeout (`controller.quorum.election.timeout.ms`); the longest
    /// is twice it, the heartbeat a fifth of it.
    pub election_timeout_ms: u64,
    /// A snapshot is written after this many entries since the last one.
    pub snapshot_every_entries: u64,
    /// How long opening waits for the node to lead and catch up.
    pub open_timeout: Duration,
    /// Log segments roll at this size.
    pub segment_bytes: u64,
}

impl Default for QuorumSettings {
    fn default() -> Self {
        QuorumSettings {
            election_timeout_ms: 1000,
            snapshot_every_entries: 5000,
            open_timeout: Duration::from_secs(120),
            segment_bytes: super::log_store::SEGMENT_BYTES,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    #[error("metadata quorum {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("importing the metadata log {path}: {reason}")]
    Import { path: PathBuf, reason: String },
    #[error("metadata quorum: {0}")]
    Raft(String),
    /// Only the leader commits; this node is not it.
    #[error("this node does not lead the metadata quorum (the leader is {leader:?})")]
    NotLeader { leader: Option<u64> },
}

/// What DescribeQuorum reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QuorumState {
    pub leader: Option<u64>,
    /// The Raft term: Kafka's leader epoch of the metadata partition.
    pub term: u64,
    /// The next index after the last applied (hence committed) entry.
    pub high_watermark: u64,
    /// Each voter with its log end as far as this node knows (the leader knows them all).
    pub voters: Vec<(u64, Option<u64>)>,
    /// The brokers that are not voters and fetched from this node lately: node id, the log
    /// end they fetched from (the next index), when (Unix ms).
    #[serde(default)]
    pub observers: Vec<(u64, u64, i64)>,
}

/// How long an observer that stopped fetching stays in [`QuorumState::observers`].
const OBSERVER_EXPIRY_MS: i64 = 60_000;

/// The brokers that fetch the metadata from this voter (`MetadataFetch`), as DescribeQuorum
/// lists them.
#[derive(Debug, Default)]
pub struct Observers(std::sync::Mutex<BTreeMap<u64, (u64, i64)>>);

impl Observers {
    /// `node_id` fetched from log end `next` now.
    pub fn fetched(&self, node_id: u64, next: u64) {
        let now = now_ms();
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node_id, (next, now));
    }

    /// Those that fetched in the last minute.
    pub fn recent(&self) -> Vec<(u64, u64, i64)> {
        let now = now_ms();
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, (_, at)| now - *at < OBSERVER_EXPIRY_MS);
        seen.iter()
            .map(|(id, (end, at))| (*id, *end, *at))
            .collect()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A node's part in the metadata quorum: its Raft node and the image it applies.
pub struct MetadataQuorum {
    pub raft: MetadataRaft,
    pub machine: MachineHandle,
    pub node_id: u64,
    /// The brokers that fetch the metadata from this voter.
    pub observers: Arc<Observers>,
    /// Where room for this node's next log appends is reserved.
    space: Arc<AppendSpace>,
    dir: PathBuf,
    _elections: ElectionPacer,
}

/// The task of [`pace_elections`], stopped with the quorum it paces.
struct ElectionPacer(tokio::task::JoinHandle<()>);

impl Drop for ElectionPacer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Draws a fresh election timeout for every round of an election this voter stands in.
///
/// Raft breaks split votes by drawing each round's timeout anew; openraft draws one per node
/// when it starts and checks it on a tick of one and a half heartbeats, so two voters whose
/// draws round up to the same tick, and whose ticks line up (nodes started together), stand
/// against each other round after round for as long as that lasts (seen: 25 s between the two
/// survivors of three voters). Kafka's controllers wait a random time after a failed election
/// for the same reason. Here openraft's own timer is off while this voter is a candidate, and
/// each next round starts after a random wait in `[timeout_ms, 2 × timeout_ms)` unless the
/// voter learned of a leader or voted for another meanwhile (then openraft's timer resumes).
async fn pace_elections(raft: MetadataRaft, timeout_ms: u64) {
    use openraft::ServerState::{Candidate, Shutdown};
    use rand::Rng;
    let mut metrics = raft.metrics();
    loop {
        let standing = metrics
            .wait_for(|m| matches!(m.state, Candidate | Shutdown))
            .await
            .map(|m| m.state == Candidate);
        if !matches!(standing, Ok(true)) {
            return;
        }
        raft.runtime_config().elect(false);
        loop {
            let term = metrics.borrow().current_term;
            let wait = rand::thread_rng()
                .gen_range(timeout_ms..timeout_ms.saturating_mul(2).max(timeout_ms + 1));
            let moved = tokio::time::timeout(
                Duration::from_millis(wait),
                metrics.wait_for(|m| m.state != Candidate || m.current_term != term),
            )
            .await
            .map(|seen| seen.map(|m| m.state));
            match moved {
                // Another round of its own.
                Ok(Ok(Candidate)) => continue,
                // A leader (maybe itself), a vote for another, or the node stopped.
                Ok(Ok(_)) => break,
                Ok(Err(_)) => return,
                // The round found no leader in time: the next one.
                Err(_) => {
                    if raft.trigger().elect().await.is_err() {
                        return;
                    }
                    // Its new term shows in the metrics before the next wait starts.
                    let _ = tokio::time::timeout(
                        Duration::from_millis(timeout_ms),
                        metrics.wait_for(|m| m.current_term != term || m.state != Candidate),
                    )
                    .await;
                }
            }
        }
        raft.runtime_config().elect(true);
    }
}

impl MetadataQuorum {
    /// Opens the quorum kept in `meta_dir` as its only voter, `node_id` at `node`, and waits
    /// until this node leads it with every entry applied. Imports a format-2 metadata log
    /// first if that is what the directory holds.
    pub async fn open_single(
        meta_dir: &Path,
        node_id: u64,
        node: ControllerNode,
        settings: &QuorumSettings,
    ) -> Result<MetadataQuorum, QuorumError> {
        let voters = BTreeMap::from([(node_id, node)]);
        let quorum = MetadataQuorum::open(meta_dir, node_id, voters, settings).await?;
        quorum
            .raft
            .wait(Some(settings.open_timeout))
            .metrics(
                // Leading, with an entry of its own term applied (every earlier one is then
                // committed) and nothing left to apply.
                |m| {
                    m.state == openraft::ServerState::Leader
                        && m.current_leader == Some(node_id)
                        && m.last_applied.map(|l| l.leader_id.term) == Some(m.current_term)
                        && m.last_applied.map(|l| l.index) == m.last_log_index
                },
                "leading the metadata quorum with every entry applied",
            )
            .await
            .map_err(|e| QuorumError::Raft(e.to_string()))?;
        Ok(quorum)
    }

    /// Opens this node's part in the quorum of `voters` (static membership, as
    /// `controller.quorum.voters` names it) kept in `meta_dir`, and forms the quorum if it
    /// never was: a pristine node first asks the other voters (`Hello`) and initializes the
    /// membership only if none of them holds a formed quorum, so a voter whose disk was
    /// wiped waits to be caught up instead of starting a second history. Several voters
    /// initializing the same membership at once is safe (openraft). Returns without waiting
    /// for a leader ([`MetadataQuorum::wait_for_leader`]); a voter that is the only one
    /// elects itself at once. Serving the other voters' requests to this node
    /// ([`super::rpc::serve_connection`] with [`MetadataQuorum::raft`]) is the caller's.
    pub async fn open(
        meta_dir: &Path,
        node_id: u64,
        voters: BTreeMap<u64, ControllerNode>,
        settings: &QuorumSettings,
    ) -> Result<MetadataQuorum, QuorumError> {
        MetadataQuorum::open_with_network(meta_dir, node_id, voters, settings, Peers).await
    }

    /// [`MetadataQuorum::open`] with another network between the voters (the simulation's).
    pub async fn open_with_network<N>(
        meta_dir: &Path,
        node_id: u64,
        voters: BTreeMap<u64, ControllerNode>,
        settings: &QuorumSettings,
        network: N,
    ) -> Result<MetadataQuorum, QuorumError>
    where
        N: openraft::network::RaftNetworkFactory<super::TypeConfig>,
    {
        let raft_dir = meta_dir.join("raft");
        let io_err = |source| QuorumError::Io {
            path: raft_dir.clone(),
            source,
        };
        let alone = voters.len() == 1 && voters.contains_key(&node_id);
        if !raft_dir.exists() && meta_dir.join("metadata.log").exists() {
            if !alone {
                return Err(QuorumError::Import {
                    path: meta_dir.join("metadata.log"),
                    reason: "a metadata log of format 2 is imported only by a node that is the only voter: start it once with controller.quorum.voters naming itself alone, then add the other voters".into(),
                });
            }
            import_format2(meta_dir, node_id, &voters[&node_id])?;
        }
        let log = RaftLog::open(&raft_dir, settings.segment_bytes).map_err(io_err)?;
        let space = log.space();
        let machine = ImageMachine::open(&raft_dir.join("snapshots")).map_err(io_err)?;
        let handle = machine.handle();
        let config = Config {
            cluster_name: "strata-metadata".into(),
            election_timeout_min: settings.election_timeout_ms,
            election_timeout_max: settings.election_timeout_ms * 2,
            heartbeat_interval: (settings.election_timeout_ms / 5).max(1),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(settings.snapshot_every_entries),
            max_in_snapshot_log_to_keep: 1000.min(settings.snapshot_every_entries),
            ..Config::default()
        }
        .validate()
        .map_err(|e| QuorumError::Raft(e.to_string()))?;
        let raft = MetadataRaft::new(node_id, Arc::new(config), network, log, machine)
            .await
            .map_err(|e| QuorumError::Raft(e.to_string()))?;
        let raft_err = |e: &dyn std::fmt::Display| QuorumError::Raft(e.to_string());
        if !raft.is_initialized().await.map_err(|e| raft_err(&e))? {
            let formed_elsewhere = match alone {
                true => None,
                false => first_formed_voter(node_id, &voters).await,
            };
            match formed_elsewhere {
                Some(other) => tracing::info!(
                    node = other,
                    "another voter holds a formed metadata quorum; waiting to be caught up"
                ),
                None => raft
                    .initialize(voters.clone())
                    .await
                    .map_err(|e| raft_err(&e))?,
            }
        }
        // The only voter need not wait for an election timeout (a first start elects at
        // once after initializing; a restart with its own committed vote leads again).
        let waiting = raft.metrics().borrow().state == openraft::ServerState::Follower;
        if alone && waiting {
            if let Err(error) = raft.trigger().elect().await {
                return Err(raft_err(&error));
            }
        }
        let elections = ElectionPacer(tokio::spawn(pace_elections(
            raft.clone(),
            settings.election_timeout_ms,
        )));
        Ok(MetadataQuorum {
            _elections: elections,
            raft,
            machine: handle,
            node_id,
            observers: Arc::default(),
            space,
            dir: raft_dir,
        })
    }

    /// Waits (at most `timeout`) until this node serves the current metadata, not the one
    /// it stopped with: as the leader, once a quorum confirms its leadership and it has
    /// applied what that covers (a node restarting with its own old vote may believe it
    /// leads a term the others have left); as a follower, once it has applied what the leader
    /// had applied when asked (`Hello`).
    pub async fn catch_up_with_leader(&self, timeout: Duration) {
        use super::rpc::{Hello, InternalRequest, InternalResponse, PeerConnection};
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                tracing::warn!("did not catch up with the metadata quorum's leader in time; serving what is applied");
                return;
            }
            match self.leader() {
                Some((leader, _)) if leader == self.node_id => {
                    if let Ok(Ok(_)) =
                        tokio::time::timeout(left, self.raft.ensure_linearizable()).await
                    {
                        return;
                    }
                }
                Some((_, node)) if node.port != 0 => {
                    let mut peer = PeerConnection::new(format!("{}:{}", node.host, node.port));
                    let hello = InternalRequest::Hello(Hello {
                        node_id: self.node_id,
                        initialized: true,
                        applied: 0,
                    });
                    if let Ok(InternalResponse::Hello(answer)) = peer.call(&hello, left).await {
                        let target = answer.applied;
                        let caught_up = self
                            .raft
                            .wait(Some(left))
                            .metrics(
                                |m| m.last_applied.is_some_and(|l| l.index >= target),
                                "catching up with the leader",
                            )
                            .await;
                        if caught_up.is_ok() {
                            return;
                        }
                    }
                }
                Some(_) => return,
                None => {}
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the quorum has a leader (at most `timeout`) and returns its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<u64, QuorumError> {
        self.raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a metadata quorum leader")
            .await
            .map(|m| m.current_leader.expect("waited for"))
            .map_err(|e| QuorumError::Raft(e.to_string()))
    }

    /// Commits `records` as one entry; returns the metadata offset at which they are
    /// applied (the machine has applied them when this returns).
    pub async fn write(&self, records: Vec<MetadataRecord>) -> Result<u64, QuorumError> {
        use openraft::error::{ClientWriteError, RaftError};
        // Room for the entry first (its records as JSON plus the envelope and framing), so
        // that a full disk refuses the change at once instead of stalling the log.
        let bytes = serde_json::to_vec(&records).map_or(0, |j| j.len() as u64) + 512;
        let space = self.space.clone();
        let reserved = tokio::task::spawn_blocking(move || space.reserve(bytes))
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e.to_string())));
        if let Err(source) = reserved {
            return Err(QuorumError::Io {
                path: self.dir.clone(),
                source,
            });
        }
        match self.raft.client_write(MetadataBatch { records }).await {
            Ok(written) => Ok(written.log_id.index),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(QuorumError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Err(e) => Err(QuorumError::Raft(e.to_string())),
        }
    }

    /// The quorum as this node sees it, in Kafka's terms (DescribeQuorum).
    pub fn describe(&self) -> QuorumState {
        QuorumState {
            observers: self.observers.recent(),
            ..describe(&self.raft, self.node_id)
        }
    }

    /// The leader as this node knows it, with its controller endpoint.
    pub fn leader(&self) -> Option<(u64, ControllerNode)> {
        leader_of(&self.raft)
    }

    /// A copy of the current image.
    pub fn image(&self) -> MetadataImage {
        self.machine.image()
    }

    /// Stops the Raft node.
    pub async fn shutdown(&self) {
        if let Err(error) = self.raft.shutdown().await {
            tracing::warn!(%error, "metadata quorum did not stop cleanly");
        }
    }
}

/// The first other voter that answers `Hello` with a formed quorum, if any answers so
/// within a few seconds (a voter that does not answer is taken as not formed: all voters
/// starting together for the first time cannot answer before they form the quorum).
async fn first_formed_voter(node_id: u64, voters: &BTreeMap<u64, ControllerNode>) -> Option<u64> {
    use super::rpc::{Hello, InternalRequest, InternalResponse, PeerConnection};
    // A voter without an endpoint (port 0) cannot be asked.
    for (&id, node) in voters
        .iter()
        .filter(|(id, node)| **id != node_id && node.port != 0)
    {
        let mut peer = PeerConnection::new(format!("{}:{}", node.host, node.port));
        let hello = InternalRequest::Hello(Hello {
            node_id,
            initialized: false,
            applied: 0,
        });
        if let Ok(InternalResponse::Hello(Hello {
            initialized: true, ..
        })) = peer.call(&hello, Duration::from_secs(2)).await
        {
            return Some(id);
        }
    }
    None
}

/// Turns a format-2 metadata log into a one-voter Raft directory (see the module docs).
fn import_format2(meta_dir: &Path, node_id: u64, node: &ControllerNode) -> Result<(), QuorumError> {
    let legacy = meta_dir.join("metadata.log");
    let import_err = |reason: String| QuorumError::Import {
        path: legacy.clone(),
        reason,
    };
    let (_, records) = LocalMetadataLog::open(meta_dir).map_err(|e| import_err(e.to_string()))?;
    let image = MetadataImage::from_records(&records);
    let tmp = meta_dir.join("raft.tmp");
    let at = log_id(1, 1);
    let membership = StoredMembership::new(
        Some(at),
        Membership::new(
            vec![BTreeSet::from([node_id])],
            BTreeMap::from([(node_id, node.clone())]),
        ),
    );
    let write = || -> io::Result<()> {
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(tmp.join("snapshots"))?;
        std::fs::create_dir_all(tmp.join("log"))?;
        super::state_machine::write_import_snapshot(
            &tmp.join("snapshots"),
            &image,
            at,
            membership,
        )?;
        let vote = Vote::new_committed(1, node_id);
        replace_durably(&tmp.join("vote"), &serde_json::to_vec(&vote)?)?;
        replace_durably(&tmp.join("purged"), &serde_json::to_vec(&at)?)?;
        replace_durably(&tmp.join("committed"), &serde_json::to_vec(&Some(at))?)?;
        sync_dir(&tmp.join("log"))?;
        sync_dir(&tmp)?;
        std::fs::rename(&tmp, meta_dir.join("raft"))?;
        std::fs::rename(&legacy, meta_dir.join("metadata.log.imported"))?;
        sync_dir(meta_dir)
    };
    write().map_err(|e| import_err(e.to_string()))?;
    tracing::info!(
        path = %legacy.display(),
        records = records.len(),
        topics = image.topic_count(),
        "imported the metadata log into the Raft metadata quorum (data directory format 3)"
    );
    Ok(())
}

/// The quorum as `raft`, the Raft node of voter `node_id`, sees it, in Kafka's terms
/// (DescribeQuorum): offsets are the next index, as a Kafka log end offset is.
pub fn describe(raft: &MetadataRaft, node_id: u64) -> QuorumState {
    let m = raft.metrics().borrow().clone();
    let log_end = m.last_log_index.map_or(0, |i| i + 1);
    let voters = m
        .membership_config
        .voter_ids()
        .map(|id| {
            let end = if id == node_id {
                Some(log_end)
            } else {
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(&id))
                    .map(|matched| matched.map_or(0, |l| l.index + 1))
            };
            (id, end)
        })
        .collect();
    QuorumState {
        leader: m.current_leader,
        term: m.current_term,
        high_watermark: m.last_applied.map_or(0, |l| l.index + 1),
        voters,
        observers: Vec::new(),
    }
}

/// The leader as `raft` knows it, with its controller endpoint.
pub fn leader_of(raft: &MetadataRaft) -> Option<(u64, ControllerNode)> {
    let metrics = raft.metrics();
    let m = metrics.borrow();
    let id = m.current_leader?;
    let node = m
        .membership_config
        .membership()
        .get_node(&id)
        .cloned()
        .unwrap_or_default();
    Some((id, node))
}
