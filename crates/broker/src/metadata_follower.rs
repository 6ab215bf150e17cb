//! How a broker that is not a voter (`process.roles=broker`) follows the metadata
//! (`docs/design/cluster.md` §2.7): it pulls, as a KRaft observer does. One task sends
//! `MetadataFetch` to the quorum's leader (any voter while no leader is known), long-polling
//! for the entries after the last one it applied, and applies what comes back to its own
//! copy of the image, which feeds the metadata publisher exactly as a voter's state machine
//! does. Voters send only applied, hence committed, entries, so the copy never has anything
//! to take back; one that fell behind what a voter keeps is sent the whole image.
//!
//! The copy lives in memory: at every start the broker first fetches the whole image from the
//! leader itself (not from a voter that may lag), so that what it opens and removes on disk
//! follows the current metadata.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata_quorum::raft::node::QuorumState;
use strata_quorum::raft::rpc::{InternalRequest, InternalResponse, MetadataFetch, PeerConnection};
use strata_quorum::raft::state_machine::{Fetched, MachineHandle};
use strata_quorum::raft::ControllerNode;
use tokio::sync::oneshot;

use crate::config::BrokerConfig;

/// How long a fetch waits at the voter for a newer entry.
const FETCH_WAIT_MS: u64 = 500;
/// How long a voter has to answer beyond that.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long answers may bring nothing new before another voter is asked once.
const PROBE_AFTER: Duration = Duration::from_secs(5);

/// What the last answer said about the quorum.
#[derive(Default)]
struct Seen {
    leader: Option<(u64, ControllerNode)>,
    quorum: QuorumState,
}

/// A broker's copy of the metadata, fetched from the voters.
pub struct MetadataFollower {
    pub machine: MachineHandle,
    seen: Mutex<Seen>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The controller listeners to fetch from: `controller.quorum.voters`, else
/// `controller.quorum.bootstrap.servers`.
fn controller_addresses(config: &BrokerConfig) -> Vec<String> {
    let voters = crate::controller::quorum_voters(config);
    if !voters.is_empty() {
        return voters
            .values()
            .map(|n| crate::server::socket_address(&n.host, n.port))
            .collect();
    }
    config
        .set
        .get("controller.quorum.bootstrap.servers")
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

impl MetadataFollower {
    /// Starts following the controllers of `config`, and returns once this broker holds the
    /// image as the quorum's leader has it (with a cluster id), logging every 10 s while it
    /// waits. Fails when there is no controller to follow.
    pub async fn start(config: &BrokerConfig) -> Result<Arc<MetadataFollower>, String> {
        let follower = Arc::new(MetadataFollower {
            machine: MachineHandle::detached(),
            seen: Mutex::new(Seen::default()),
            task: Mutex::new(None),
        });
        let addresses = controller_addresses(config);
        if addresses.is_empty() {
            return Err("no controller to follow: controller.quorum.voters (or controller.quorum.bootstrap.servers) names none".into());
        }
        let node_id = u64::try_from(config.node_id).unwrap_or_default();
        let (ready_tx, mut ready) = oneshot::channel();
        let task = tokio::spawn(run(
            Arc::downgrade(&follower),
            node_id,
            addresses.clone(),
            ready_tx,
        ));
        *follower.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        let mut waited = 0;
        loop {
            match tokio::time::timeout(Duration::from_secs(10), &mut ready).await {
                Ok(Ok(())) => return Ok(follower),
                Ok(Err(_)) => {
                    return Err("the metadata fetcher stopped before the first image".into())
                }
                Err(_) => {
                    waited += 10;
                    tracing::info!(
                        waited_s = waited,
                        controllers = addresses.join(","),
                        "waiting for the metadata from the controller quorum's leader (the controllers must be reachable on their controller listeners)"
                    );
                }
            }
        }
    }

    /// The quorum's leader as the last answer named it, with its controller endpoint.
    pub fn leader(&self) -> Option<(u64, ControllerNode)> {
        self.seen().leader.clone()
    }

    /// The quorum as the voter that answered last sees it.
    pub fn describe(&self) -> QuorumState {
        self.seen().quorum.clone()
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops fetching.
    pub fn shutdown(&self) {
        if let Some(task) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

impl Drop for MetadataFollower {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Fetches until the follower is dropped. `ready` is answered once the whole image came from
/// the leader itself.
async fn run(
    follower: std::sync::Weak<MetadataFollower>,
    node_id: u64,
    addresses: Vec<String>,
    ready: oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut peers: HashMap<String, PeerConnection> = HashMap::new();
    let mut rotation = 0usize;
    let mut pause = Duration::from_millis(100);
    let mut progressed = tokio::time::Instant::now();
    loop {
        let Some(me) = follower.upgrade() else { return };
        let leader = me.leader();
        // A leader that answers but applies nothing for a while may be one the others
        // deposed (cut off, it still believes it leads): ask another voter once, whose answer
        // names a newer leader if there is one.
        let probe = progressed.elapsed() > PROBE_AFTER;
        let address = match &leader {
            Some((_, node)) if node.port != 0 && !probe => {
                crate::server::socket_address(&node.host, node.port)
            }
            _ => {
                rotation += usize::from(probe);
                addresses[rotation % addresses.len()].clone()
            }
        };
        if probe {
            progressed = tokio::time::Instant::now();
        }
        // Until the first image is in, ask for the whole of it.
        let next = match ready {
            Some(_) => 0,
            None => me.machine.with_image(|i| i.offset) + 1,
        };
        let request = InternalRequest::MetadataFetch(MetadataFetch {
            node_id,
            next,
            max_wait_ms: if next == 0 { 0 } else { FETCH_WAIT_MS },
        });
        let peer = peers
            .entry(address.clone())
            .or_insert_with(|| PeerConnection::new(address.clone()));
        drop(me);
        let answer = peer
            .call(
                &request,
                Duration::from_millis(FETCH_WAIT_MS) + ANSWER_TIMEOUT,
            )
            .await;
        let Some(me) = follower.upgrade() else { return };
        let fetched = match answer {
            Ok(InternalResponse::MetadataFetch(fetched)) => fetched,
            other => {
                let error = match other {
                    Err(e) => e.to_string(),
                    Ok(_) => "answered with another kind".into(),
                };
                tracing::debug!(%address, %error, "metadata fetch failed; trying another controller");
                me.seen().leader = None;
                rotation += 1;
                drop(me);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        pause = Duration::from_millis(100);
        let from_leader = fetched.leader.as_ref().map(|(id, _)| *id) == Some(fetched.node_id);
        {
            // A voter that lags may name a leader of an older term: the newest term wins.
            let mut seen = me.seen();
            if fetched.quorum.term >= seen.quorum.term {
                seen.leader = fetched.leader.clone();
                seen.quorum = fetched.quorum.clone();
            }
        }
        if ready.is_some() {
            // The first image comes from the leader: a voter that lags could hand over one
            // older than what this broker's disk already holds.
            if !from_leader || !matches!(fetched.fetched, Fetched::Image { .. }) {
                if fetched.leader.is_none() {
                    rotation += 1;
                }
                drop(me);
                tokio::time::sleep(pause).await;
                continue;
            }
        }
        let before = me.machine.with_image(|i| i.offset);
        me.machine.apply_fetched(fetched.fetched).await;
        if me.machine.with_image(|i| i.offset) > before {
            progressed = tokio::time::Instant::now();
        }
        if ready.is_some() {
            if me.machine.with_image(|i| i.cluster_id.is_some()) {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
            } else {
                // The quorum is still forming the cluster.
                drop(me);
                tokio::time::sleep(pause).await;
            }
        }
    }
}
