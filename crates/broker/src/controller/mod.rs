//! The controller: the one place cluster metadata changes (`docs/design/cluster.md` §3.1).
//!
//! Handlers turn a request into a typed operation (`strata_quorum::controller::ops`) and call
//! [`crate::Broker::submit`], which hands it to the [`ControllerService`]. The service owns
//! this node's part in the metadata quorum (`strata_quorum::raft`: a Raft log whose state
//! machine is the metadata image; on a single node the quorum is this node alone) and an
//! operation queue drained by one task: each drain takes every operation waiting, plans them
//! in turn with [`plan::plan_batch`] (each against the image with the previous ones' records
//! applied; planning runs on the blocking pool), commits all their records as one Raft entry
//! (one fsync: metadata's group commit), and answers each operation with its reply and the
//! metadata offset that holds its outcome (the entry's index). The state machine applies the
//! entry and hands the new image to the broker's
//! [`crate::metadata_publisher::MetadataPublisher`] (the one door through which metadata
//! reaches the broker) before the commit returns, and [`crate::Broker::submit`] waits until
//! the publisher has applied the answer's offset, so an operation is answered once this
//! broker serves its outcome.

pub mod acls;
pub mod plan;
pub mod quotas;
pub mod scram;

use std::path::Path;
use std::sync::Arc;

use std::collections::BTreeMap;
use strata_quorum::controller::ops::{ControllerOp, ControllerReply, Op, OpError};
use strata_quorum::raft::node::{MetadataQuorum, QuorumError, QuorumSettings};
use strata_quorum::raft::rpc::{
    ForwardError, InternalRequest, InternalResponse, OpFuture, OpService, PeerConnection,
};
use strata_quorum::raft::ControllerNode;
use strata_quorum::MetadataRecord;
use tokio::sync::{mpsc, oneshot};

use crate::config::BrokerConfig;

/// Operations one drain plans and commits at most; the rest wait for the next drain.
const MAX_DRAIN: usize = 1024;

/// Why an operation was not performed.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The records could not be committed (a metadata log error, or this node no longer
    /// leads the quorum); nothing was applied.
    #[error("metadata commit failed: {0}")]
    Commit(String),
    /// The operation as a whole was refused (per-item refusals are in the reply).
    #[error("{0}")]
    Refused(OpError),
    /// The controller stopped or failed before answering.
    #[error("the controller did not answer: {0}")]
    Unavailable(String),
    /// This node is not the active controller (and the operation could not be forwarded to
    /// it in time).
    #[error("this node is not the active controller (the leader is {leader:?})")]
    NotController { leader: Option<u64> },
}

/// How long an operation is retried while the controller quorum has no reachable leader.
const FORWARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A reply and the metadata offset (the image's `offset`) at which its outcome holds.
type Answer = Result<(ControllerReply, u64), ControllerError>;

/// Where this node's metadata comes from.
enum Source {
    /// A voter: this node's part in the quorum, which it may lead.
    Voter(Arc<MetadataQuorum>),
    /// A broker that is not a voter: it fetches the applied entries from the voters.
    Observer(Arc<crate::metadata_follower::MetadataFollower>),
}

/// The controller: an operation queue in front of the metadata quorum, used while this
/// node leads it; otherwise (and always on a broker that is not a voter) operations are
/// forwarded to the node that does.
pub struct ControllerService {
    queue: mpsc::UnboundedSender<(ControllerOp, oneshot::Sender<Answer>)>,
    source: Source,
    node_id: u64,
    /// Connections to other controllers, for forwarding.
    peers: tokio::sync::Mutex<std::collections::HashMap<u64, PeerConnection>>,
    /// When each broker's last heartbeat reached this node's controller.
    liveness: Arc<std::sync::Mutex<std::collections::HashMap<i32, std::time::Instant>>>,
}

/// The quorum settings of `config`.
pub fn quorum_settings(config: &BrokerConfig) -> QuorumSettings {
    let mut settings = QuorumSettings::default();
    if let Some(ms) = config
        .parsed::<u64>("controller.quorum.election.timeout.ms")
        .filter(|ms| *ms > 0)
    {
        settings.election_timeout_ms = ms;
    }
    settings
}

/// The voters of the metadata quorum with their controller endpoints, from
/// `controller.quorum.voters`; without it, this node alone when it is a controller (a single
/// node needs no endpoint).
pub fn quorum_voters(config: &BrokerConfig) -> BTreeMap<u64, ControllerNode> {
    let mut voters: BTreeMap<u64, ControllerNode> = config
        .set
        .get("controller.quorum.voters")
        .map(|voters| {
            voters
                .split(',')
                .filter_map(|voter| {
                    let (id, address) = voter.trim().split_once('@')?;
                    let (host, port) = address.rsplit_once(':')?;
                    Some((
                        id.trim().parse().ok()?,
                        ControllerNode {
                            host: host.trim_matches(['[', ']']).to_string(),
                            port: port.parse().unwrap_or(0),
                        },
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    if config.roles.controller {
        let me = u64::try_from(config.node_id).unwrap_or_default();
        voters.entry(me).or_default();
    }
    voters
}

impl ControllerService {
    /// Opens the metadata quorum kept in `dir` (`<log.dirs>/meta`) with this node as its only
    /// voter, and waits until it leads with everything applied. At the first start (no
    /// cluster id yet) commits the `Cluster` record (`cluster.id` if set, else a new id) and
    /// the `--add-scram` users, as one entry.
    pub async fn open_quorum(
        dir: &Path,
        config: &BrokerConfig,
    ) -> Result<MetadataQuorum, QuorumError> {
        let quorum = Self::open_quorum_unsettled(dir, config).await?;
        Self::settle(&quorum, config).await?;
        Ok(quorum)
    }

    /// Opens this node's part in the metadata quorum kept in `dir`: the only voter leads at
    /// once; a voter of several returns without waiting for a leader, so that its caller
    /// can serve the other voters first, then [`ControllerService::settle`].
    pub async fn open_quorum_unsettled(
        dir: &Path,
        config: &BrokerConfig,
    ) -> Result<MetadataQuorum, QuorumError> {
        let node_id = u64::try_from(config.node_id).unwrap_or_default();
        let voters = quorum_voters(config);
        let settings = quorum_settings(config);
        if voters.len() == 1 {
            let node = voters.into_values().next().unwrap_or_default();
            MetadataQuorum::open_single(dir, node_id, node, &settings).await
        } else {
            MetadataQuorum::open(dir, node_id, voters, &settings).await
        }
    }

    /// Waits until the quorum has a leader and a cluster id. At the first start the leader
    /// commits the `Cluster` record (`cluster.id` if set, else a new id) and this node's
    /// `--add-scram` users, as one entry; the other voters wait to apply it.
    pub async fn settle(quorum: &MetadataQuorum, config: &BrokerConfig) -> Result<(), QuorumError> {
        let mut waited = 0u64;
        loop {
            match quorum
                .wait_for_leader(std::time::Duration::from_secs(10))
                .await
            {
                Ok(_) => break,
                Err(_) => {
                    waited += 10;
                    tracing::info!(waited_s = waited, voters = ?quorum_voters(config).keys().collect::<Vec<_>>(), "waiting for the controller quorum to elect a leader (the other voters must be reachable on their controller listeners)");
                }
            }
        }
        quorum
            .catch_up_with_leader(std::time::Duration::from_secs(30))
            .await;
        loop {
            if quorum.image().cluster_id.is_some() {
                break;
            }
            if quorum.leader().map(|(id, _)| id) == Some(quorum.node_id) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        if quorum.image().cluster_id.is_none() {
            let cluster_id = config
                .set
                .get("cluster.id")
                .cloned()
                .unwrap_or_else(crate::format::random_uuid);
            // The first records: the cluster id, then the SCRAM users given to format it
            // (--add-scram), in one commit.
            let mut records = vec![MetadataRecord::Cluster { cluster_id }];
            records.extend(config.add_scram.iter().map(|a| a.record()));
            match quorum.write(records).await {
                Ok(_) => {}
                // Leadership moved on: the new leader writes it; wait to apply it.
                Err(QuorumError::NotLeader { .. }) => {
                    return Box::pin(Self::settle(quorum, config)).await;
                }
                Err(e) => return Err(e),
            }
            for a in &config.add_scram {
                tracing::info!(credential = ?a, "SCRAM credential added while formatting (--add-scram)");
            }
        } else if !config.add_scram.is_empty() {
            tracing::warn!(
                credentials = ?config.add_scram,
                "--add-scram ignored: the metadata was formatted before; change users with AlterUserScramCredentials (strata users)"
            );
        }
        Ok(())
    }

    /// Starts the draining task on the current tokio runtime. The task ends when the service
    /// is dropped.
    pub fn start(quorum: Arc<MetadataQuorum>, config: BrokerConfig) -> Self {
        let (queue, pending) = mpsc::unbounded_channel();
        let node_id = u64::try_from(config.node_id).unwrap_or_default();
        let liveness = Arc::new(std::sync::Mutex::new(Default::default()));
        let session = std::time::Duration::from_millis(
            config
                .parsed::<u64>("broker.session.timeout.ms")
                .unwrap_or(9000),
        );
        tokio::spawn(fence_silent_brokers(
            queue.clone(),
            quorum.clone(),
            liveness.clone(),
            session,
        ));
        if config.value("auto.leader.rebalance.enable").as_deref() != Some("false") {
            let interval = std::time::Duration::from_secs(
                config
                    .parsed::<u64>("leader.imbalance.check.interval.seconds")
                    .unwrap_or(300)
                    .max(1),
            );
            let percentage = config
                .parsed::<u32>("leader.imbalance.per.broker.percentage")
                .unwrap_or(10);
            tokio::spawn(rebalance_leaders(
                queue.clone(),
                quorum.clone(),
                interval,
                percentage,
            ));
        }
        tokio::spawn(run(pending, quorum.clone(), Arc::new(config)));
        ControllerService {
            queue,
            source: Source::Voter(quorum),
            node_id,
            peers: Default::default(),
            liveness,
        }
    }

    /// [`ControllerService::start`] on a voter's quorum, and the operations other brokers
    /// forward to it served through `internal` (its controller listeners).
    pub fn start_voter(
        quorum: MetadataQuorum,
        internal: &strata_quorum::raft::rpc::InternalServices,
        config: BrokerConfig,
    ) -> Arc<Self> {
        let controller = Arc::new(ControllerService::start(Arc::new(quorum), config));
        let forwarded: Arc<dyn OpService> = Arc::new(ForwardedOps(Arc::downgrade(&controller)));
        let _ = internal.ops.set(forwarded);
        controller
    }

    /// The controller side of a broker that is not a voter: every operation is forwarded to
    /// the active controller that `follower` last heard of.
    pub fn observer(
        follower: Arc<crate::metadata_follower::MetadataFollower>,
        config: &BrokerConfig,
    ) -> Self {
        // Nothing is ever queued here: this node never leads.
        let (queue, _) = mpsc::unbounded_channel();
        ControllerService {
            queue,
            source: Source::Observer(follower),
            node_id: u64::try_from(config.node_id).unwrap_or_default(),
            peers: Default::default(),
            liveness: Default::default(),
        }
    }

    /// The image this node applies metadata to.
    pub fn machine(&self) -> &strata_quorum::raft::state_machine::MachineHandle {
        match &self.source {
            Source::Voter(quorum) => &quorum.machine,
            Source::Observer(follower) => &follower.machine,
        }
    }

    /// The quorum's leader (the active controller) as this node knows it.
    pub fn leader(&self) -> Option<(u64, ControllerNode)> {
        match &self.source {
            Source::Voter(quorum) => quorum.leader(),
            Source::Observer(follower) => follower.leader(),
        }
    }

    /// The quorum as this node sees it (a broker that is not a voter: as the voter it fetched
    /// from last saw it).
    pub fn describe(&self) -> strata_quorum::raft::node::QuorumState {
        match &self.source {
            Source::Voter(quorum) => quorum.describe(),
            Source::Observer(follower) => follower.describe(),
        }
    }

    /// Stops this node's part in the quorum, or its fetching.
    pub async fn shutdown(&self) {
        match &self.source {
            Source::Voter(quorum) => quorum.shutdown().await,
            Source::Observer(follower) => follower.shutdown(),
        }
    }

    /// Performs `op` and returns its reply once its records are committed and applied to
    /// the quorum's image, with the metadata offset at which its outcome holds (also for an
    /// operation that wrote nothing: it was planned against the image at that offset, which
    /// the broker may not have applied yet).
    pub async fn submit<O: Op>(&self, op: O) -> Result<(O::Reply, u64), ControllerError> {
        let (reply, offset) = self.submit_op(op.into()).await?;
        let reply = O::take_reply(reply).ok_or_else(|| {
            ControllerError::Unavailable("the reply is of another operation's kind".into())
        })?;
        Ok((reply, offset))
    }

    /// Performs `op` with this node's controller while it leads the metadata quorum, else
    /// forwards it to the leader (`docs/design/cluster.md` §3.6); retried while leadership
    /// moves or the leader cannot be reached, for up to 30 s. Authorization stays with the
    /// broker that received the request.
    pub async fn submit_op(
        &self,
        op: ControllerOp,
    ) -> Result<(ControllerReply, u64), ControllerError> {
        let deadline = std::time::Instant::now() + FORWARD_TIMEOUT;
        loop {
            let outcome = match self.leader() {
                Some((id, _)) if id == self.node_id => self.perform_local(op.clone()).await,
                Some((id, node)) => self.forward(id, node, op.clone()).await,
                None => Err(ControllerError::NotController { leader: None }),
            };
            match outcome {
                Err(ControllerError::NotController { .. })
                    if std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
    }

    /// Performs `op` here if this node leads the quorum (an operation forwarded by another
    /// broker, or one of this broker's own).
    pub async fn perform_local(
        &self,
        op: ControllerOp,
    ) -> Result<(ControllerReply, u64), ControllerError> {
        let leader = self.leader().map(|(id, _)| id);
        if leader != Some(self.node_id) {
            return Err(ControllerError::NotController { leader });
        }
        if let ControllerOp::BrokerHeartbeat(h) = &op {
            self.liveness
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(h.node_id, std::time::Instant::now());
        }
        let (answer, answered) = oneshot::channel();
        self.queue
            .send((op, answer))
            .map_err(|_| ControllerError::Unavailable("the controller has stopped".into()))?;
        answered.await.map_err(|_| {
            ControllerError::Unavailable("the operation was dropped unanswered".into())
        })?
    }

    /// Sends `op` to the active controller `to` at `node`.
    async fn forward(
        &self,
        to: u64,
        node: ControllerNode,
        op: ControllerOp,
    ) -> Result<(ControllerReply, u64), ControllerError> {
        let mut peers = self.peers.lock().await;
        let peer = peers
            .entry(to)
            .or_insert_with(|| PeerConnection::new(format!("{}:{}", node.host, node.port)));
        match peer
            .call(&InternalRequest::ControllerOp(op), FORWARD_TIMEOUT)
            .await
        {
            Ok(InternalResponse::ControllerOp(Ok(answer))) => Ok(answer),
            Ok(InternalResponse::ControllerOp(Err(ForwardError::NotController { leader }))) => {
                Err(ControllerError::NotController { leader })
            }
            Ok(InternalResponse::ControllerOp(Err(ForwardError::Refused(e)))) => {
                Err(ControllerError::Refused(e))
            }
            Ok(InternalResponse::ControllerOp(Err(ForwardError::Failed(m)))) => {
                Err(ControllerError::Commit(m))
            }
            Ok(_) => Err(ControllerError::Unavailable(format!(
                "node {to} answered a forwarded operation with another kind"
            ))),
            Err(error) => {
                tracing::debug!(node = to, %error, "forwarding to the active controller failed; retrying");
                Err(ControllerError::NotController { leader: Some(to) })
            }
        }
    }
}

/// While this node leads the quorum, fences every registered broker whose last heartbeat is
/// older than `session` (`broker.session.timeout.ms`). A term this node starts leading gives
/// every broker a full session from its start, so a new controller fences no one it has not
/// had the time to hear from. Ends when the controller is dropped.
async fn fence_silent_brokers(
    queue: mpsc::UnboundedSender<(ControllerOp, oneshot::Sender<Answer>)>,
    quorum: Arc<MetadataQuorum>,
    liveness: Arc<std::sync::Mutex<std::collections::HashMap<i32, std::time::Instant>>>,
    session: std::time::Duration,
) {
    let mut led_since: Option<(u64, std::time::Instant)> = None;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        tick.tick().await;
        if queue.is_closed() {
            return;
        }
        let term = quorum.raft.metrics().borrow().current_term;
        if quorum.leader().map(|(id, _)| id) != Some(quorum.node_id) {
            led_since = None;
            continue;
        }
        let now = std::time::Instant::now();
        let since = match led_since {
            Some((t, since)) if t == term => since,
            _ => {
                led_since = Some((term, now));
                now
            }
        };
        let silent: Vec<i32> = {
            let seen = liveness.lock().unwrap_or_else(|p| p.into_inner());
            quorum.machine.with_image(|image| {
                image
                    .brokers()
                    // Not this node's own broker: it lives as long as this controller.
                    .filter(|b| !b.fenced && u64::try_from(b.node_id).ok() != Some(quorum.node_id))
                    .filter(|b| {
                        let last = seen.get(&b.node_id).copied().unwrap_or(since).max(since);
                        now.duration_since(last) > session
                    })
                    .map(|b| b.node_id)
                    .collect()
            })
        };
        for node_id in silent {
            tracing::warn!(
                node_id,
                session_ms = session.as_millis() as u64,
                "fencing a broker that sent no heartbeat for broker.session.timeout.ms: its partitions' leaderships move or go offline"
            );
            let (answer, answered) = oneshot::channel();
            let op =
                ControllerOp::FenceBroker(strata_quorum::controller::ops::FenceBroker { node_id });
            if queue.send((op, answer)).is_err() {
                return;
            }
            if let Ok(Err(error)) = answered.await {
                tracing::warn!(node_id, %error, "fencing failed; trying again");
            }
        }
    }
}

/// While this node leads the quorum, every `interval` (`leader.imbalance.check.interval.seconds`):
/// for each broker, the share of the partitions whose preferred replica (the first) it is but
/// that another replica leads; above `percentage` (`leader.imbalance.per.broker.percentage`),
/// a preferred election moves those whose preferred replica is unfenced and in the ISR back
/// to it (Kafka's `auto.leader.rebalance.enable`). After a rolling restart this gives the
/// returning brokers their leaderships back. Ends when the controller is dropped.
async fn rebalance_leaders(
    queue: mpsc::UnboundedSender<(ControllerOp, oneshot::Sender<Answer>)>,
    quorum: Arc<MetadataQuorum>,
    interval: std::time::Duration,
    percentage: u32,
) {
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    loop {
        tick.tick().await;
        if queue.is_closed() {
            return;
        }
        if quorum.leader().map(|(id, _)| id) != Some(quorum.node_id) {
            continue;
        }
        let movable = quorum
            .machine
            .with_image(|image| plan::imbalanced_partitions(image, percentage));
        if movable.is_empty() {
            continue;
        }
        let count: usize = movable.iter().map(|(_, p)| p.len()).sum();
        tracing::info!(
            partitions = count,
            "leaders away from their preferred replicas; electing the preferred ones"
        );
        let (answer, answered) = oneshot::channel();
        let op = ControllerOp::ElectLeaders(strata_quorum::controller::ops::ElectLeaders {
            election_type: strata_quorum::controller::ops::ElectLeaders::PREFERRED,
            partitions: Some(movable),
        });
        if queue.send((op, answer)).is_err() {
            return;
        }
        match answered.await {
            Ok(Ok((ControllerReply::ElectLeaders(reply), _))) => {
                for (topic, results) in reply.topics {
                    for (partition, result) in results {
                        match result {
                            Ok(()) => {
                                tracing::info!(%topic, partition, "leadership moved back to the preferred replica")
                            }
                            Err(e) => {
                                tracing::info!(%topic, partition, code = e.code, message = %e.message, "preferred replica not elected")
                            }
                        }
                    }
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "preferred leader election failed; trying at the next check")
            }
            Err(_) => return,
        }
    }
}

/// Serves operations forwarded by other brokers with this node's controller.
pub struct ForwardedOps(pub std::sync::Weak<ControllerService>);

impl OpService for ForwardedOps {
    fn perform(&self, op: ControllerOp) -> OpFuture {
        let service = self.0.upgrade();
        Box::pin(async move {
            let Some(service) = service else {
                return Err(ForwardError::Failed("the broker is stopping".into()));
            };
            match service.perform_local(op).await {
                Ok(answer) => Ok(answer),
                Err(ControllerError::NotController { leader }) => {
                    Err(ForwardError::NotController { leader })
                }
                Err(ControllerError::Refused(e)) => Err(ForwardError::Refused(e)),
                Err(e) => Err(ForwardError::Failed(e.to_string())),
            }
        })
    }
}

/// Drains the queue until every sender is gone.
async fn run(
    mut pending: mpsc::UnboundedReceiver<(ControllerOp, oneshot::Sender<Answer>)>,
    quorum: Arc<MetadataQuorum>,
    config: Arc<BrokerConfig>,
) {
    while let Some(first) = pending.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_DRAIN {
            match pending.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let (ops, waiters): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        for (waiter, answer) in waiters.into_iter().zip(drain(&quorum, &config, ops).await) {
            // A requester that went away no longer wants its answer.
            let _ = waiter.send(answer);
        }
    }
}

/// Plans `ops` against the quorum's image, commits their records as one entry, and
/// returns each answer.
async fn drain(
    quorum: &Arc<MetadataQuorum>,
    config: &Arc<BrokerConfig>,
    ops: Vec<ControllerOp>,
) -> Vec<Answer> {
    let count = ops.len();
    let planned = {
        let (quorum, config) = (quorum.clone(), config.clone());
        tokio::task::spawn_blocking(move || {
            quorum
                .machine
                .with_image(|image| (plan::plan_batch(image, &config, &ops), image.offset))
        })
        .await
    };
    let (plan, planned_at) = match planned {
        Ok(planned) => planned,
        Err(error) => {
            tracing::error!(%error, "the controller failed while planning metadata operations");
            return (0..count)
                .map(|_| Err(ControllerError::Unavailable(error.to_string())))
                .collect();
        }
    };
    let committed = if plan.records.is_empty() {
        Ok(planned_at)
    } else {
        quorum.write(plan.records).await
    };
    plan.answers
        .into_iter()
        .map(|(answer, needs_commit)| match &committed {
            // This node no longer leads: the submitter retries with the leader.
            Err(QuorumError::NotLeader { leader }) if needs_commit => {
                Err(ControllerError::NotController { leader: *leader })
            }
            // Planned against records that were not committed: its answer does not hold.
            Err(error) if needs_commit => Err(ControllerError::Commit(error.to_string())),
            Err(_) => answer
                .map(|reply| (reply, planned_at))
                .map_err(ControllerError::Refused),
            Ok(offset) => answer
                .map(|reply| (reply, *offset))
                .map_err(ControllerError::Refused),
        })
        .collect()
}

/// A node whose only role is controller (`process.roles=controller`): its part in the
/// metadata quorum and, while it leads, the controller, both served on its controller
/// listeners. It holds no partitions and serves no client.
pub struct ControllerOnlyNode {
    controller: Arc<ControllerService>,
    _internal: Arc<strata_quorum::raft::rpc::InternalServices>,
    _dir_lock: std::fs::File,
}

impl ControllerOnlyNode {
    /// Locks and checks the data directory, opens the quorum and serves it; returns once the
    /// quorum has a leader and a cluster id.
    pub async fn open(config: BrokerConfig) -> Result<Self, crate::broker::StartError> {
        let dir = config.data_dir.clone();
        let lock = crate::format::lock(&dir)?;
        let previous = crate::data_dir::check(&dir, config.node_id)?;
        let (quorum, internal) = crate::broker::open_voter(&dir, &config, previous).await?;
        let controller = ControllerService::start_voter(quorum, &internal, config);
        Ok(ControllerOnlyNode {
            controller,
            _internal: internal,
            _dir_lock: lock,
        })
    }

    /// Serves until `shutdown` resolves, then stops the quorum.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()>) {
        shutdown.await;
        tracing::info!("shutting down the controller");
        self.controller.shutdown().await;
        tracing::info!("shutdown complete");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use strata_quorum::controller::ops::{AllocateProducerIds, CreateTopics, NewTopic};
    use strata_quorum::raft::state_machine::Published;
    use strata_quorum::MetadataImage;

    fn config(dir: &Path) -> BrokerConfig {
        let set = [
            ("log.dirs".to_string(), dir.display().to_string()),
            // A single voter elects itself at once; this only bounds a stray wait.
            (
                "controller.quorum.election.timeout.ms".to_string(),
                "200".to_string(),
            ),
        ]
        .into();
        BrokerConfig::from_map(set).expect("config").0
    }

    fn topic(name: &str) -> NewTopic {
        NewTopic {
            name: name.into(),
            num_partitions: 2,
            replication_factor: -1,
            assignments: Vec::new(),
            configs: Default::default(),
        }
    }

    /// Opens the quorum and starts the service; every image the state machine hands over
    /// lands in the returned list, in order.
    async fn start(dir: &Path) -> (ControllerService, Arc<Mutex<Vec<Published>>>) {
        let config = config(dir);
        let quorum = ControllerService::open_quorum(&dir.join("meta"), &config)
            .await
            .expect("quorum");
        assert!(quorum.image().cluster_id.is_some());
        let service = ControllerService::start(Arc::new(quorum), config);
        let published = Arc::new(Mutex::new(Vec::new()));
        let (tx, mut rx) = mpsc::channel(16);
        let sink = published.clone();
        tokio::spawn(async move {
            while let Some(update) = rx.recv().await {
                sink.lock().expect("lock").push(update);
            }
        });
        let offset = service.machine().image().offset;
        service.machine().attach(tx, offset);
        (service, published)
    }

    /// The newest image handed over, once one at `offset` or later has been.
    async fn published_at(published: &Mutex<Vec<Published>>, offset: u64) -> Arc<MetadataImage> {
        tokio::time::timeout(std::time::Duration::from_secs(30), async {
            loop {
                if let Some(p) = published.lock().expect("lock").last() {
                    if p.offset >= offset {
                        assert_eq!(p.offset, p.image.offset);
                        return p.image.clone();
                    }
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the change is handed over")
    }

    /// Concurrent operations are all answered; every one sees the ones before it; the image
    /// at each answer's offset holds its change; everything survives a restart.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_operations_see_each_other_and_are_published() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (service, published) = start(dir.path()).await;
        let service = Arc::new(service);
        let mut tasks = Vec::new();
        for i in 0..20 {
            let service = service.clone();
            let published = published.clone();
            tasks.push(tokio::spawn(async move {
                let (block, offset) = service
                    .submit(AllocateProducerIds { broker_id: 1 })
                    .await
                    .expect("allocated");
                let seen = published_at(&published, offset).await;
                assert!(seen.next_producer_id >= block.first + block.size);
                let (created, offset) = service
                    .submit(CreateTopics {
                        topics: vec![topic("shared"), topic(&format!("own-{i}"))],
                        validate_only: false,
                    })
                    .await
                    .expect("answered");
                assert!(created.topics[1].is_ok(), "{:?}", created.topics[1]);
                assert!(published_at(&published, offset)
                    .await
                    .topic_by_name(&format!("own-{i}"))
                    .is_some());
                (block.first, created.topics[0].is_ok())
            }));
        }
        let mut firsts = Vec::new();
        let mut shared_created = 0;
        for t in tasks {
            let (first, created) = t.await.expect("task");
            firsts.push(first);
            shared_created += usize::from(created);
        }
        firsts.sort_unstable();
        firsts.dedup();
        assert_eq!(firsts.len(), 20, "every block is distinct");
        assert_eq!(shared_created, 1, "one creation of the shared topic wins");
        service.shutdown().await;
        drop(service);
        // Everything committed is in the log: a reopened quorum has it.
        let quorum = ControllerService::open_quorum(&dir.path().join("meta"), &config(dir.path()))
            .await
            .expect("reopen");
        assert_eq!(quorum.image().topic_count(), 21);
        assert_eq!(
            quorum.image().next_producer_id,
            20 * plan::PRODUCER_ID_BLOCK
        );
        quorum.shutdown().await;
    }

    /// Operations waiting together are planned in one drain and committed as one entry:
    /// one image handed over for all of them, each answered as if alone.
    #[tokio::test]
    async fn waiting_operations_are_committed_together() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (service, published) = start(dir.path()).await;
        // On this single-threaded runtime the draining task runs only once every submission
        // below has queued its operation.
        let submissions = (0..10).map(|i| {
            service.submit(CreateTopics {
                topics: vec![topic(&format!("t{i}"))],
                validate_only: false,
            })
        });
        let replies = futures::future::join_all(submissions).await;
        assert!(replies
            .iter()
            .all(|r| r.as_ref().is_ok_and(|(r, _)| r.topics[0].is_ok())));
        let offset = replies[0].as_ref().map(|(_, o)| *o).expect("answered");
        assert!(replies
            .iter()
            .all(|r| matches!(r, Ok((_, o)) if *o == offset)));
        let image = published_at(&published, offset).await;
        assert_eq!(image.topic_count(), 10);
        assert_eq!(published.lock().expect("lock").len(), 1);
        // Nothing to commit: answered without a new entry.
        let (again, again_offset) = service
            .submit(CreateTopics {
                topics: vec![topic("t0")],
                validate_only: false,
            })
            .await
            .expect("answered");
        assert_eq!(again.topics[0].as_ref().err().map(|e| e.code), Some(36));
        assert_eq!(
            again_offset, offset,
            "refused at the offset it was planned against"
        );
        assert_eq!(published.lock().expect("lock").len(), 1);
        service.shutdown().await;
    }
}
