//! Partition change rules: the next state of one partition, or `None` when nothing changes.
//!
//! Every controller operation that touches a partition goes through
//! [`PartitionChangeBuilder`]: a broker fenced, unfenced or entering controlled shutdown, an
//! AlterPartition ISR change, ElectLeaders (preferred or unclean), a reassignment and its
//! completion or cancellation. The builder starts from the partition's current state with the
//! targets equal to it, the caller sets what the event changes, and [`PartitionChangeBuilder::build`]
//! applies Kafka's KRaft rules (its `PartitionChangeBuilder`, without eligible leader replicas):
//!
//! ```text
//!  targets ──► 1. reassignment done? (adding ⊆ ISR)  replicas = target, ISR ∩ target
//!          ──► 2. election over the target ISR:
//!                  keep the leader if it is in the ISR and active, else the first replica
//!                  (in replica order) in the ISR and active; preferred election tries the
//!                  first replica first; unclean: the first active replica, ISR = [it],
//!                  leader_recovery_state = recovering; else leader = -1
//!          ──► 3. an empty target ISR keeps the current one (the last member stays)
//!          ──► 4. nothing differs → None; else partition_epoch + 1, and leader_epoch + 1
//!                  if the leader changed (to or from -1 too) or a replica was removed
//! ```
//!
//! "Active" means registered, unfenced and not in controlled shutdown. The callers keep the ISR
//! free of brokers that are not active (KIP-841): fencing and controlled shutdown remove the
//! broker ([`broker_fenced`], [`broker_in_controlled_shutdown`]), AlterPartition refuses them
//! ([`alter_partition`]), except the last member, which stays so that the partition remembers
//! who has its data (the partition then has no leader until that broker returns or an unclean
//! election is allowed).
//!
//! The leader epoch also grows when a replica leaves the replica set with the leader
//! unchanged (Kafka does the same), so that a removed replica's fetches are fenced.
//!
//! Input types are this module's own: [`PartitionState`] is the `Partition` record and
//! `PartitionImage` (with the reassignment's `adding_replicas` and `removing_replicas`) plus
//! `leader_recovery_state` (absent from the record, read as recovered by
//! [`PartitionState::from_image`]); [`BrokerState`] is what the image will
//! hold per broker from `RegisterBroker` / `BrokerChange` (`fenced`, `in_controlled_shutdown`,
//! `broker_epoch`). No I/O, no clock.

use std::collections::{BTreeMap, BTreeSet};

use super::codes;
use super::ops::OpError;
use crate::image::PartitionImage;

/// The leader of a partition that has none (offline).
pub const NO_LEADER: i32 = -1;

/// KIP-704: whether the leader was elected uncleanly and has not yet told the controller
/// (through AlterPartition) that it is done recovering.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LeaderRecoveryState {
    #[default]
    Recovered,
    Recovering,
}

impl LeaderRecoveryState {
    /// Kafka's wire value: 0 recovered, 1 recovering.
    pub fn value(self) -> i8 {
        match self {
            LeaderRecoveryState::Recovered => 0,
            LeaderRecoveryState::Recovering => 1,
        }
    }

    pub fn from_value(value: i8) -> Option<Self> {
        match value {
            0 => Some(LeaderRecoveryState::Recovered),
            1 => Some(LeaderRecoveryState::Recovering),
            _ => None,
        }
    }
}

/// One partition's replication state: the `Partition` record's fields (with the design's
/// additions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    /// All replicas, the preferred leader first; during a reassignment the target followed
    /// by the replicas being removed.
    pub replicas: Vec<i32>,
    /// In-sync replicas, a subset of `replicas`, never empty.
    pub isr: Vec<i32>,
    /// A member of `isr`, or [`NO_LEADER`].
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub leader_recovery_state: LeaderRecoveryState,
    /// Replicas a reassignment adds (in `replicas`, not yet caught up).
    pub adding_replicas: Vec<i32>,
    /// Replicas a reassignment removes (in `replicas` until it completes).
    pub removing_replicas: Vec<i32>,
}

impl PartitionState {
    /// A new partition on `replicas`: the ISR is the active ones, led by the first of them.
    ///
    /// Errors: no active replica → INVALID_REPLICATION_FACTOR (Kafka's answer for a topic
    /// whose brokers are all fenced or shutting down).
    pub fn new_partition(replicas: Vec<i32>, brokers: &Brokers) -> Result<Self, OpError> {
        let isr: Vec<i32> = replicas
            .iter()
            .copied()
            .filter(|r| is_active(brokers, *r))
            .collect();
        let Some(&leader) = isr.first() else {
            return Err(OpError::new(
                codes::INVALID_REPLICATION_FACTOR,
                format!(
                    "Unable to replicate the partition {} time(s): All brokers are currently fenced or in controlled shutdown.",
                    replicas.len()
                ),
            ));
        };
        Ok(PartitionState {
            replicas,
            isr,
            leader,
            leader_epoch: 0,
            partition_epoch: 0,
            leader_recovery_state: LeaderRecoveryState::Recovered,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        })
    }

    /// The state of a partition in the image, whose records carry no recovery state.
    pub fn from_image(p: &PartitionImage) -> Self {
        PartitionState {
            replicas: p.replicas.clone(),
            isr: p.isr.clone(),
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            leader_recovery_state: LeaderRecoveryState::Recovered,
            adding_replicas: p.adding_replicas.clone(),
            removing_replicas: p.removing_replicas.clone(),
        }
    }

    pub fn is_reassigning(&self) -> bool {
        !self.adding_replicas.is_empty() || !self.removing_replicas.is_empty()
    }

    /// The replicas before the reassignment in progress (all of them when none is).
    pub fn original_replicas(&self) -> Vec<i32> {
        without(&self.replicas, &self.adding_replicas)
    }
}

/// What the rules need to know about one registered broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerState {
    pub fenced: bool,
    pub in_controlled_shutdown: bool,
    /// The epoch of its current registration (AlterPartition's ISR entries name it).
    pub broker_epoch: i64,
}

impl BrokerState {
    /// An unfenced broker registered at `broker_epoch`.
    pub fn active(broker_epoch: i64) -> Self {
        BrokerState {
            fenced: false,
            in_controlled_shutdown: false,
            broker_epoch,
        }
    }

    /// May lead and be in an ISR.
    pub fn is_active(&self) -> bool {
        !self.fenced && !self.in_controlled_shutdown
    }
}

/// The registered brokers by id; a broker absent here is not registered.
pub type Brokers = BTreeMap<i32, BrokerState>;

fn is_active(brokers: &Brokers, id: i32) -> bool {
    brokers.get(&id).is_some_and(BrokerState::is_active)
}

fn without(list: &[i32], removed: &[i32]) -> Vec<i32> {
    list.iter()
        .copied()
        .filter(|r| !removed.contains(r))
        .collect()
}

/// How a leader is chosen when one is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Election {
    /// Keep the partition online from the ISR: the current leader if it still qualifies.
    Online,
    /// The first replica if it qualifies, else as `Online` (ElectLeaders PREFERRED).
    Preferred,
    /// As `Online`, and if the ISR has no candidate, the first active replica outside it
    /// (`unclean.leader.election.enable`, ElectLeaders UNCLEAN). May lose acknowledged data.
    Unclean,
}

/// The next state of one partition, from its current state and what an event changes.
#[derive(Debug, Clone)]
pub struct PartitionChangeBuilder<'a> {
    current: &'a PartitionState,
    brokers: &'a Brokers,
    election: Election,
    /// A broker that may not lead whatever `brokers` says (being fenced or shut down now).
    excluded: Option<i32>,
    /// A broker that may lead whatever `brokers` says (being unfenced now).
    included: Option<i32>,
    target_isr: Vec<i32>,
    target_replicas: Vec<i32>,
    target_adding: Vec<i32>,
    target_removing: Vec<i32>,
    target_recovery: LeaderRecoveryState,
}

impl<'a> PartitionChangeBuilder<'a> {
    /// Targets equal to `current`. `unclean_leader_election` is the topic's
    /// `unclean.leader.election.enable` (else the broker's): when set, a partition that would
    /// go offline is led by an out-of-sync replica instead.
    pub fn new(
        current: &'a PartitionState,
        brokers: &'a Brokers,
        unclean_leader_election: bool,
    ) -> Self {
        PartitionChangeBuilder {
            current,
            brokers,
            election: if unclean_leader_election {
                Election::Unclean
            } else {
                Election::Online
            },
            excluded: None,
            included: None,
            target_isr: current.isr.clone(),
            target_replicas: current.replicas.clone(),
            target_adding: current.adding_replicas.clone(),
            target_removing: current.removing_replicas.clone(),
            target_recovery: current.leader_recovery_state,
        }
    }

    pub fn election(mut self, election: Election) -> Self {
        self.election = election;
        self
    }

    /// `broker` leaves the ISR and may not lead (it is being fenced or shut down); as the
    /// ISR's last member it stays in the ISR, and the partition loses its leader.
    pub fn remove_broker(mut self, broker: i32) -> Self {
        self.target_isr.retain(|r| *r != broker);
        self.excluded = Some(broker);
        self
    }

    /// Every ISR member that `brokers` shows fenced, shutting down or unregistered leaves the
    /// ISR (the last one excepted, as in [`Self::remove_broker`]).
    pub fn remove_inactive_from_isr(mut self) -> Self {
        let brokers = self.brokers;
        self.target_isr.retain(|r| is_active(brokers, *r));
        self
    }

    /// `broker` counts as active even if `brokers` does not say so yet (it is being unfenced).
    pub fn include_broker(mut self, broker: i32) -> Self {
        self.included = Some(broker);
        self
    }

    /// The ISR the event asks for: members of the target replicas, in the order to keep.
    pub fn target_isr(mut self, isr: Vec<i32>) -> Self {
        self.target_isr = isr;
        self
    }

    pub fn target_leader_recovery_state(mut self, state: LeaderRecoveryState) -> Self {
        self.target_recovery = state;
        self
    }

    /// A new replica set, with the replicas a reassignment adds and removes.
    pub fn target_assignment(
        mut self,
        replicas: Vec<i32>,
        adding: Vec<i32>,
        removing: Vec<i32>,
    ) -> Self {
        self.target_replicas = replicas;
        self.target_adding = adding;
        self.target_removing = removing;
        self
    }

    fn acceptable_leader(&self, broker: i32) -> bool {
        if self.excluded == Some(broker) {
            return false;
        }
        self.included == Some(broker) || is_active(self.brokers, broker)
    }

    /// A reassignment completes once every adding replica is in the (target) ISR: the
    /// replicas being removed leave the replica set and the ISR. It waits if that would leave
    /// no replica or no ISR member. (Kafka waits for every target replica; §3.8 of the design
    /// waits only for the new ones: a kept replica that lags lagged before.)
    fn complete_reassignment_if_ready(&mut self) {
        if self.target_adding.is_empty() && self.target_removing.is_empty() {
            return;
        }
        if !self
            .target_adding
            .iter()
            .all(|a| self.target_isr.contains(a))
        {
            return;
        }
        let isr = without(&self.target_isr, &self.target_removing);
        let replicas = without(&self.target_replicas, &self.target_removing);
        if isr.is_empty() || replicas.is_empty() {
            return;
        }
        self.target_isr = isr;
        self.target_replicas = replicas;
        self.target_adding.clear();
        self.target_removing.clear();
    }

    /// The elected leader and whether the election was unclean.
    fn elect(&self) -> (i32, bool) {
        let valid = |r: i32| self.target_isr.contains(&r) && self.acceptable_leader(r);
        let first_valid = |skip: usize| {
            self.target_replicas
                .iter()
                .skip(skip)
                .copied()
                .find(|r| valid(*r))
        };
        if self.election == Election::Preferred {
            if let Some(&preferred) = self.target_replicas.first() {
                if valid(preferred) {
                    return (preferred, false);
                }
            }
        }
        if self.current.leader != NO_LEADER && valid(self.current.leader) {
            return (self.current.leader, false);
        }
        if let Some(leader) = first_valid(0) {
            return (leader, false);
        }
        if self.election == Election::Unclean {
            if let Some(leader) = self
                .target_replicas
                .iter()
                .copied()
                .find(|r| self.acceptable_leader(*r))
            {
                return (leader, true);
            }
        }
        (NO_LEADER, false)
    }

    /// The next state, or `None` if it equals the current one.
    pub fn build(mut self) -> Option<PartitionState> {
        self.complete_reassignment_if_ready();
        let (leader, unclean) = self.elect();
        let current = self.current;
        let mut recovery = self.target_recovery;
        let isr = if unclean {
            recovery = LeaderRecoveryState::Recovering;
            vec![leader]
        } else if self.target_isr.is_empty() {
            // The last member stays (KRaft's rule without eligible leader replicas).
            current.isr.clone()
        } else {
            self.target_isr
        };
        let next = PartitionState {
            replicas: self.target_replicas,
            isr,
            leader,
            leader_epoch: current.leader_epoch,
            partition_epoch: current.partition_epoch,
            leader_recovery_state: recovery,
            adding_replicas: self.target_adding,
            removing_replicas: self.target_removing,
        };
        if next == *current {
            return None;
        }
        let replica_removed = current.replicas.iter().any(|r| !next.replicas.contains(r));
        let leader_epoch = if leader != current.leader || replica_removed {
            current.leader_epoch + 1
        } else {
            current.leader_epoch
        };
        Some(PartitionState {
            leader_epoch,
            partition_epoch: current.partition_epoch + 1,
            ..next
        })
    }
}

/// `broker` was fenced (missed heartbeats, or a new registration replaced it uncleanly): out of
/// the ISR (unless last) and not leader.
pub fn broker_fenced(
    current: &PartitionState,
    brokers: &Brokers,
    broker: i32,
    unclean_leader_election: bool,
) -> Option<PartitionState> {
    PartitionChangeBuilder::new(current, brokers, unclean_leader_election)
        .remove_broker(broker)
        .build()
}

/// `broker` entered controlled shutdown: the same as fencing for the partition (KIP-841 keeps
/// a shutting-down broker out of the ISR), so its leaderships move before it stops.
pub fn broker_in_controlled_shutdown(
    current: &PartitionState,
    brokers: &Brokers,
    broker: i32,
    unclean_leader_election: bool,
) -> Option<PartitionState> {
    broker_fenced(current, brokers, broker, unclean_leader_election)
}

/// `broker` was unfenced: an offline partition whose ISR holds it gets it as leader. It does
/// not rejoin other ISRs here; its leaders add it back through AlterPartition once it has
/// caught up.
pub fn broker_unfenced(
    current: &PartitionState,
    brokers: &Brokers,
    broker: i32,
    unclean_leader_election: bool,
) -> Option<PartitionState> {
    PartitionChangeBuilder::new(current, brokers, unclean_leader_election)
        .include_broker(broker)
        .build()
}

/// The rules applied again under the current broker states: inactive brokers leave the ISR
/// (the last one excepted) and the leadership if they hold it, a reassignment whose adding
/// replicas are in sync completes (the controller's timer), an offline partition that now has
/// a candidate gets a leader (e.g. after `unclean.leader.election.enable` was turned on). A
/// new controller can run it over every partition to repair what a missed event left.
pub fn refresh(
    current: &PartitionState,
    brokers: &Brokers,
    unclean_leader_election: bool,
) -> Option<PartitionState> {
    PartitionChangeBuilder::new(current, brokers, unclean_leader_election)
        .remove_inactive_from_isr()
        .build()
}

/// One partition of an AlterPartition request (KIP-497, KIP-903), from its leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChangeRequest {
    /// The requesting broker.
    pub broker_id: i32,
    /// The leader epoch and partition epoch the leader holds.
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// The new ISR, each member with the broker epoch the leader saw it fetch with (-1: not
    /// checked, older request versions).
    pub new_isr: Vec<(i32, i64)>,
    pub leader_recovery_state: LeaderRecoveryState,
}

/// An accepted AlterPartition partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IsrChangeOutcome {
    /// The ISR already was that: nothing to write; answer with the current state.
    Unchanged,
    /// Write this state and answer with it.
    Changed(PartitionState),
    /// Write this state, but the change completed a reassignment that moved the leadership:
    /// answer NEW_LEADER_ELECTED so that the old leader waits for the metadata.
    LeaderMoved(PartitionState),
}

/// An ISR change asked by the partition's leader, checked as Kafka's controller checks it.
///
/// Errors, per partition: a leader epoch or partition epoch newer than the controller's →
/// NOT_CONTROLLER (this controller is behind); an older leader epoch, or a request from a
/// broker that is not the leader → FENCED_LEADER_EPOCH; an older partition epoch →
/// INVALID_UPDATE_VERSION; an ISR that is empty, repeats a broker, names a non-replica, lacks
/// the leader, has more than the leader while recovering, or goes from recovered back to
/// recovering → INVALID_REQUEST; a member not registered, fenced, shutting down or with
/// another broker epoch → INELIGIBLE_REPLICA. A shrink below `min.insync.replicas` is
/// accepted; produce enforces the minimum.
pub fn alter_partition(
    current: &PartitionState,
    brokers: &Brokers,
    unclean_leader_election: bool,
    request: &IsrChangeRequest,
) -> Result<IsrChangeOutcome, OpError> {
    check_isr_change(current, brokers, request)?;
    let new_isr: Vec<i32> = request.new_isr.iter().map(|(id, _)| *id).collect();
    let next = PartitionChangeBuilder::new(current, brokers, unclean_leader_election)
        .target_isr(new_isr)
        .target_leader_recovery_state(request.leader_recovery_state)
        .build();
    Ok(match next {
        None => IsrChangeOutcome::Unchanged,
        Some(next) if next.leader != request.broker_id => IsrChangeOutcome::LeaderMoved(next),
        Some(next) => IsrChangeOutcome::Changed(next),
    })
}

fn check_isr_change(
    current: &PartitionState,
    brokers: &Brokers,
    request: &IsrChangeRequest,
) -> Result<(), OpError> {
    let refuse = |code: i16, message: String| Err(OpError::new(code, message));
    if request.leader_epoch > current.leader_epoch
        || request.partition_epoch > current.partition_epoch
    {
        return refuse(
            codes::NOT_CONTROLLER,
            format!(
                "The request's leader epoch {} / partition epoch {} are newer than this controller's {} / {}.",
                request.leader_epoch, request.partition_epoch, current.leader_epoch, current.partition_epoch
            ),
        );
    }
    if request.leader_epoch < current.leader_epoch
        || current.leader == NO_LEADER
        || request.broker_id != current.leader
    {
        return refuse(
            codes::FENCED_LEADER_EPOCH,
            format!(
                "Broker {} at leader epoch {} is not the leader; the leader is {} at epoch {}.",
                request.broker_id, request.leader_epoch, current.leader, current.leader_epoch
            ),
        );
    }
    if request.partition_epoch < current.partition_epoch {
        return refuse(
            codes::INVALID_UPDATE_VERSION,
            format!(
                "The partition epoch is {}, not {}.",
                current.partition_epoch, request.partition_epoch
            ),
        );
    }
    let ids: Vec<i32> = request.new_isr.iter().map(|(id, _)| *id).collect();
    let distinct: BTreeSet<i32> = ids.iter().copied().collect();
    if ids.is_empty()
        || distinct.len() != ids.len()
        || !ids.iter().all(|id| current.replicas.contains(id))
    {
        return refuse(
            codes::INVALID_REQUEST,
            format!("Invalid ISR {ids:?} for replicas {:?}.", current.replicas),
        );
    }
    if !ids.contains(&current.leader) {
        return refuse(
            codes::INVALID_REQUEST,
            format!(
                "The new ISR {ids:?} does not include the leader {}.",
                current.leader
            ),
        );
    }
    if request.leader_recovery_state == LeaderRecoveryState::Recovering && ids.len() > 1 {
        return refuse(
            codes::INVALID_REQUEST,
            format!("The ISR {ids:?} has more than the leader while the leader is recovering."),
        );
    }
    if current.leader_recovery_state == LeaderRecoveryState::Recovered
        && request.leader_recovery_state == LeaderRecoveryState::Recovering
    {
        return refuse(
            codes::INVALID_REQUEST,
            "The leader recovery state cannot change from recovered to recovering.".to_string(),
        );
    }
    for (id, epoch) in &request.new_isr {
        let why = match brokers.get(id) {
            None => "not registered",
            Some(b) if b.in_controlled_shutdown => "shutting down",
            Some(b) if b.fenced => "fenced",
            Some(b) if *epoch != -1 && *epoch != b.broker_epoch => "stale broker epoch",
            Some(_) => continue,
        };
        return refuse(
            codes::INELIGIBLE_REPLICA,
            format!("The new ISR {ids:?} contains an ineligible replica: broker {id} ({why})."),
        );
    }
    Ok(())
}

/// ElectLeaders PREFERRED: the first replica becomes leader if it is in the ISR and active.
///
/// Errors: already led by it → ELECTION_NOT_NEEDED; no change possible →
/// PREFERRED_LEADER_NOT_AVAILABLE.
pub fn elect_preferred(
    current: &PartitionState,
    brokers: &Brokers,
) -> Result<PartitionState, OpError> {
    if current.replicas.first() == Some(&current.leader) {
        return Err(OpError::new(
            codes::ELECTION_NOT_NEEDED,
            "Leader election not needed for topic partition.",
        ));
    }
    PartitionChangeBuilder::new(current, brokers, false)
        .election(Election::Preferred)
        .build()
        .ok_or_else(|| {
            OpError::new(
                codes::PREFERRED_LEADER_NOT_AVAILABLE,
                "The preferred leader was not available.",
            )
        })
}

/// ElectLeaders UNCLEAN: an offline partition is led by an in-sync replica if one is active,
/// else by the first active replica (ISR = [it], recovering), whatever the topic's
/// `unclean.leader.election.enable`.
///
/// Errors: the partition has a leader → ELECTION_NOT_NEEDED; no replica is active →
/// ELIGIBLE_LEADERS_NOT_AVAILABLE.
pub fn elect_unclean(
    current: &PartitionState,
    brokers: &Brokers,
) -> Result<PartitionState, OpError> {
    if current.leader != NO_LEADER {
        return Err(OpError::new(
            codes::ELECTION_NOT_NEEDED,
            "Leader election not needed for topic partition.",
        ));
    }
    PartitionChangeBuilder::new(current, brokers, true)
        .build()
        .ok_or_else(|| {
            OpError::new(
                codes::ELIGIBLE_LEADERS_NOT_AVAILABLE,
                "Eligible topic partition leaders are not available.",
            )
        })
}

/// AlterPartitionReassignments with a target (KIP-455): replicas = target followed by the
/// current replicas not in it (being removed), the target's new ones being added. Completes
/// at once when nothing is to be added (a reordering, or only removals with an in-sync replica
/// left); otherwise when the adding replicas join the ISR (AlterPartition, [`refresh`]).
///
/// Errors: an empty target, a broker twice, an unregistered broker →
/// INVALID_REPLICA_ASSIGNMENT with Kafka's messages.
pub fn reassign(
    current: &PartitionState,
    brokers: &Brokers,
    target: &[i32],
) -> Result<Option<PartitionState>, OpError> {
    let invalid = |message: String| Err(OpError::new(codes::INVALID_REPLICA_ASSIGNMENT, message));
    if target.is_empty() {
        return invalid("The manual partition assignment includes an empty replica list.".into());
    }
    let mut seen = BTreeSet::new();
    for id in target {
        if !brokers.contains_key(id) {
            return invalid(format!(
                "The manual partition assignment includes broker {id}, but no such broker is registered."
            ));
        }
        if !seen.insert(*id) {
            return invalid(format!(
                "The manual partition assignment includes the broker {id} more than once."
            ));
        }
    }
    let removing: Vec<i32> = current
        .replicas
        .iter()
        .copied()
        .filter(|r| !target.contains(r))
        .collect::<BTreeSet<i32>>()
        .into_iter()
        .collect();
    let adding: Vec<i32> = target
        .iter()
        .copied()
        .filter(|r| !current.replicas.contains(r))
        .collect::<BTreeSet<i32>>()
        .into_iter()
        .collect();
    let replicas: Vec<i32> = target.iter().chain(removing.iter()).copied().collect();
    Ok(PartitionChangeBuilder::new(current, brokers, false)
        .target_assignment(replicas, adding, removing)
        .build())
}

/// AlterPartitionReassignments cancelling (a null target): back to the replicas before the
/// reassignment, the adding ones leaving the ISR. If only adding replicas were in sync, the
/// first original replica becomes the ISR, which is an unclean election: allowed only with
/// `unclean.leader.election.enable`.
///
/// Errors: no reassignment in progress → NO_REASSIGNMENT_IN_PROGRESS; a revert that needs an
/// unclean election that is not enabled → INVALID_REPLICA_ASSIGNMENT.
pub fn cancel_reassignment(
    current: &PartitionState,
    brokers: &Brokers,
    unclean_leader_election: bool,
) -> Result<Option<PartitionState>, OpError> {
    if !current.is_reassigning() {
        return Err(OpError::new(
            codes::NO_REASSIGNMENT_IN_PROGRESS,
            "No partition reassignment is in progress.",
        ));
    }
    let replicas = current.original_replicas();
    let mut isr = without(&current.isr, &current.adding_replicas);
    if isr.is_empty() {
        let Some(&first) = replicas.first() else {
            return Err(OpError::new(
                codes::INVALID_REPLICA_ASSIGNMENT,
                "Invalid replica assignment: addingReplicas contains all replicas.",
            ));
        };
        if !unclean_leader_election {
            return Err(OpError::new(
                codes::INVALID_REPLICA_ASSIGNMENT,
                "Unable to revert the partition assignment because it would require an unclean leader election.",
            ));
        }
        isr.push(first);
    }
    Ok(
        PartitionChangeBuilder::new(current, brokers, unclean_leader_election)
            .target_isr(isr)
            .target_assignment(replicas, Vec::new(), Vec::new())
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::TestRng;

    /// Brokers 1..=5 active at epoch 10 + id, then the given changes.
    fn cluster(fenced: &[i32], shutting_down: &[i32]) -> Brokers {
        (1..=5)
            .map(|id| {
                let mut b = BrokerState::active(10 + id as i64);
                b.fenced = fenced.contains(&id);
                b.in_controlled_shutdown = shutting_down.contains(&id);
                (id, b)
            })
            .collect()
    }

    fn state(replicas: &[i32], isr: &[i32], leader: i32) -> PartitionState {
        PartitionState {
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            leader,
            leader_epoch: 5,
            partition_epoch: 7,
            leader_recovery_state: LeaderRecoveryState::Recovered,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        }
    }

    /// (isr, leader, leader_epoch, partition_epoch) of a result, `None` for no change.
    fn summary(next: Option<PartitionState>) -> Option<(Vec<i32>, i32, i32, i32)> {
        next.map(|n| (n.isr, n.leader, n.leader_epoch, n.partition_epoch))
    }

    #[test]
    fn broker_events_follow_the_rules() {
        struct Case {
            name: &'static str,
            before: PartitionState,
            fenced: &'static [i32],
            event: fn(&PartitionState, &Brokers, bool) -> Option<PartitionState>,
            unclean: bool,
            after: Option<(Vec<i32>, i32, i32, i32)>,
        }
        let fence_1 = |s: &PartitionState, b: &Brokers, u| broker_fenced(s, b, 1, u);
        let fence_2 = |s: &PartitionState, b: &Brokers, u| broker_fenced(s, b, 2, u);
        let fence_4 = |s: &PartitionState, b: &Brokers, u| broker_fenced(s, b, 4, u);
        let shut_1 = |s: &PartitionState, b: &Brokers, u| broker_in_controlled_shutdown(s, b, 1, u);
        let unfence_1 = |s: &PartitionState, b: &Brokers, u| broker_unfenced(s, b, 1, u);
        let unfence_2 = |s: &PartitionState, b: &Brokers, u| broker_unfenced(s, b, 2, u);
        let cases = [
            Case {
                name: "leader fenced: next in replica order that is in the ISR leads",
                before: state(&[1, 2, 3], &[1, 2, 3], 1),
                fenced: &[1],
                event: fence_1,
                unclean: false,
                after: Some((vec![2, 3], 2, 6, 8)),
            },
            Case {
                name: "replica order decides, not ISR order",
                before: state(&[1, 3, 2], &[2, 1, 3], 1),
                fenced: &[1],
                event: fence_1,
                unclean: false,
                after: Some((vec![2, 3], 3, 6, 8)),
            },
            Case {
                name: "follower fenced: ISR shrinks, leader epoch kept",
                before: state(&[1, 2, 3], &[1, 2, 3], 1),
                fenced: &[2],
                event: fence_2,
                unclean: false,
                after: Some((vec![1, 3], 1, 5, 8)),
            },
            Case {
                name: "fenced broker outside the ISR: no change",
                before: state(&[1, 2, 3], &[1, 3], 1),
                fenced: &[2],
                event: fence_2,
                unclean: false,
                after: None,
            },
            Case {
                name: "broker that is not a replica: no change",
                before: state(&[1, 2, 3], &[1, 2, 3], 1),
                fenced: &[4],
                event: fence_4,
                unclean: false,
                after: None,
            },
            Case {
                name: "last ISR member fenced: it stays, the partition goes offline",
                before: state(&[1, 2], &[1], 1),
                fenced: &[1],
                event: fence_1,
                unclean: false,
                after: Some((vec![1], NO_LEADER, 6, 8)),
            },
            Case {
                name: "last ISR member fenced, unclean allowed: an out-of-sync replica leads",
                before: state(&[1, 2], &[1], 1),
                fenced: &[1],
                event: fence_1,
                unclean: true,
                after: Some((vec![2], 2, 6, 8)),
            },
            Case {
                name: "unclean allowed but an in-sync replica exists: clean election",
                before: state(&[1, 2, 3], &[1, 3], 1),
                fenced: &[1],
                event: fence_1,
                unclean: true,
                after: Some((vec![3], 3, 6, 8)),
            },
            Case {
                name: "the fenced broker is excluded even if the states still show it active",
                before: state(&[1, 2], &[1, 2], 1),
                fenced: &[],
                event: fence_1,
                unclean: false,
                after: Some((vec![2], 2, 6, 8)),
            },
            Case {
                name: "controlled shutdown moves leadership like fencing",
                before: state(&[1, 2, 3], &[1, 2, 3], 1),
                fenced: &[],
                event: shut_1,
                unclean: false,
                after: Some((vec![2, 3], 2, 6, 8)),
            },
            Case {
                name: "offline partition: its last ISR member unfenced leads again",
                before: state(&[1, 2], &[1], NO_LEADER),
                fenced: &[1],
                event: unfence_1,
                unclean: false,
                after: Some((vec![1], 1, 6, 8)),
            },
            Case {
                name: "unfenced broker outside the ISR: no change (it rejoins via AlterPartition)",
                before: state(&[1, 2], &[1], 1),
                fenced: &[2],
                event: unfence_2,
                unclean: false,
                after: None,
            },
            Case {
                name: "unfencing does not take leadership back from a valid leader",
                before: state(&[1, 2], &[1, 2], 2),
                fenced: &[],
                event: unfence_1,
                unclean: false,
                after: None,
            },
        ];
        let refreshed = |s: &PartitionState, b: &Brokers, u| refresh(s, b, u);
        let more = [
            Case {
                name: "refresh: a leader the states show fenced loses ISR and leadership",
                before: state(&[1, 2, 3], &[1, 2, 3], 1),
                fenced: &[1, 3],
                event: refreshed,
                unclean: false,
                after: Some((vec![2], 2, 6, 8)),
            },
            Case {
                name: "refresh: nothing to repair",
                before: state(&[1, 2, 3], &[1, 2], 1),
                fenced: &[3],
                event: refreshed,
                unclean: false,
                after: None,
            },
        ];
        for case in cases.into_iter().chain(more) {
            let brokers = cluster(case.fenced, &[]);
            let next = (case.event)(&case.before, &brokers, case.unclean);
            let unclean = next
                .as_ref()
                .is_some_and(|n| n.leader_recovery_state == LeaderRecoveryState::Recovering);
            assert_eq!(summary(next), case.after, "{}", case.name);
            assert_eq!(
                unclean,
                case.name.starts_with("last ISR member fenced, unclean"),
                "{}: only an unclean election marks the leader recovering",
                case.name
            );
        }
    }

    fn isr_request(broker: i32, isr: &[i32]) -> IsrChangeRequest {
        IsrChangeRequest {
            broker_id: broker,
            leader_epoch: 5,
            partition_epoch: 7,
            new_isr: isr.iter().map(|id| (*id, 10 + *id as i64)).collect(),
            leader_recovery_state: LeaderRecoveryState::Recovered,
        }
    }

    #[test]
    fn alter_partition_checks_as_kafka_does() {
        let current = state(&[1, 2, 3], &[1, 2], 1);
        let brokers = cluster(&[4], &[5]);
        let with = |f: fn(&mut IsrChangeRequest)| {
            let mut r = isr_request(1, &[1, 2, 3]);
            f(&mut r);
            alter_partition(&current, &brokers, false, &r).map_err(|e| e.code)
        };
        type Edit = fn(&mut IsrChangeRequest);
        let cases: [(&str, Edit, i16); 12] = [
            (
                "older leader epoch",
                |r| r.leader_epoch = 4,
                codes::FENCED_LEADER_EPOCH,
            ),
            (
                "not the leader",
                |r| r.broker_id = 2,
                codes::FENCED_LEADER_EPOCH,
            ),
            (
                "newer leader epoch",
                |r| r.leader_epoch = 6,
                codes::NOT_CONTROLLER,
            ),
            (
                "newer partition epoch",
                |r| r.partition_epoch = 8,
                codes::NOT_CONTROLLER,
            ),
            (
                "older partition epoch",
                |r| r.partition_epoch = 6,
                codes::INVALID_UPDATE_VERSION,
            ),
            ("empty ISR", |r| r.new_isr.clear(), codes::INVALID_REQUEST),
            (
                "not a replica",
                |r| r.new_isr.push((4, 14)),
                codes::INVALID_REQUEST,
            ),
            ("twice", |r| r.new_isr.push((2, 12)), codes::INVALID_REQUEST),
            (
                "without the leader",
                |r| {
                    r.new_isr.remove(0);
                },
                codes::INVALID_REQUEST,
            ),
            (
                "stale broker epoch",
                |r| r.new_isr[2].1 = 99,
                codes::INELIGIBLE_REPLICA,
            ),
            (
                "recovering with followers",
                |r| r.leader_recovery_state = LeaderRecoveryState::Recovering,
                codes::INVALID_REQUEST,
            ),
            (
                "unchecked broker epoch",
                |r| r.new_isr[2].1 = -1,
                codes::NONE,
            ),
        ];
        for (name, change, code) in cases {
            let got = with(change).map_or_else(|c| c, |_| codes::NONE);
            assert_eq!(got, code, "{name}");
        }
        // Members that are fenced, shutting down or not registered are ineligible.
        for (replicas, member) in [([1, 2, 4], 4), ([1, 2, 5], 5), ([1, 2, 9], 9)] {
            let current = state(&replicas, &[1, 2], 1);
            let r = isr_request(1, &[1, 2, member]);
            let err = alter_partition(&current, &brokers, false, &r).expect_err("ineligible");
            assert_eq!(err.code, codes::INELIGIBLE_REPLICA, "member {member}");
        }
    }

    #[test]
    fn alter_partition_changes_only_the_isr() {
        let current = state(&[1, 2, 3], &[1, 2], 1);
        let brokers = cluster(&[], &[]);
        let expand = alter_partition(&current, &brokers, false, &isr_request(1, &[1, 2, 3]));
        let IsrChangeOutcome::Changed(next) = expand.expect("accepted") else {
            panic!("an expansion is a change");
        };
        assert_eq!((next.isr, next.leader), (vec![1, 2, 3], 1));
        assert_eq!((next.leader_epoch, next.partition_epoch), (5, 8));
        // A shrink to the leader alone is accepted (min ISR is produce's business).
        let shrink = alter_partition(&current, &brokers, false, &isr_request(1, &[1]));
        assert!(matches!(shrink, Ok(IsrChangeOutcome::Changed(ref n)) if n.isr == [1]));
        let same = alter_partition(&current, &brokers, false, &isr_request(1, &[1, 2]));
        assert_eq!(same, Ok(IsrChangeOutcome::Unchanged));
        // The recovering leader reports it has recovered: only the state changes.
        let mut recovering = state(&[1, 2], &[1], 1);
        recovering.leader_recovery_state = LeaderRecoveryState::Recovering;
        let mut r = isr_request(1, &[1]);
        r.leader_recovery_state = LeaderRecoveryState::Recovering;
        assert_eq!(
            alter_partition(&recovering, &brokers, false, &r),
            Ok(IsrChangeOutcome::Unchanged)
        );
        r.leader_recovery_state = LeaderRecoveryState::Recovered;
        let Ok(IsrChangeOutcome::Changed(next)) = alter_partition(&recovering, &brokers, false, &r)
        else {
            panic!("recovered is a change");
        };
        assert_eq!(next.leader_recovery_state, LeaderRecoveryState::Recovered);
        assert_eq!((next.leader_epoch, next.partition_epoch), (5, 8));
    }

    #[test]
    fn the_builder_never_keeps_an_inactive_leader() {
        // Targets left as they are, but the states show the leader fenced: it cannot stay.
        let current = state(&[1, 2], &[1, 2], 1);
        let next = PartitionChangeBuilder::new(&current, &cluster(&[1], &[]), false).build();
        assert_eq!(summary(next), Some((vec![1, 2], 2, 6, 8)));
        let next = PartitionChangeBuilder::new(&current, &cluster(&[], &[1]), false).build();
        assert_eq!(summary(next), Some((vec![1, 2], 2, 6, 8)));
    }

    #[test]
    fn elections_answer_with_kafkas_codes() {
        let brokers = cluster(&[3], &[]);
        let code =
            |r: Result<PartitionState, OpError>| r.map(|s| (s.leader, s.isr)).map_err(|e| e.code);
        // Preferred leader already leads.
        assert_eq!(
            code(elect_preferred(&state(&[1, 2], &[1, 2], 1), &brokers)),
            Err(codes::ELECTION_NOT_NEEDED)
        );
        // Preferred in the ISR and active: it takes over.
        assert_eq!(
            code(elect_preferred(&state(&[1, 2], &[1, 2], 2), &brokers)),
            Ok((1, vec![1, 2]))
        );
        // Preferred out of the ISR, or fenced: not available.
        assert_eq!(
            code(elect_preferred(&state(&[1, 2], &[2], 2), &brokers)),
            Err(codes::PREFERRED_LEADER_NOT_AVAILABLE)
        );
        assert_eq!(
            code(elect_preferred(&state(&[3, 2], &[3, 2], 2), &brokers)),
            Err(codes::PREFERRED_LEADER_NOT_AVAILABLE)
        );
        // Unclean: only for an offline partition.
        assert_eq!(
            code(elect_unclean(&state(&[1, 2], &[1, 2], 1), &brokers)),
            Err(codes::ELECTION_NOT_NEEDED)
        );
        let offline = state(&[3, 2, 1], &[3], NO_LEADER);
        let elected = elect_unclean(&offline, &brokers).expect("2 is active");
        assert_eq!((elected.leader, elected.isr.clone()), (2, vec![2]));
        assert_eq!(
            elected.leader_recovery_state,
            LeaderRecoveryState::Recovering
        );
        assert_eq!((elected.leader_epoch, elected.partition_epoch), (6, 8));
        let all_down = cluster(&[1, 2, 3], &[]);
        assert_eq!(
            code(elect_unclean(&offline, &all_down)),
            Err(codes::ELIGIBLE_LEADERS_NOT_AVAILABLE)
        );
        // Its in-sync replica came back: the unclean election picks it, cleanly.
        let back = cluster(&[], &[]);
        let elected = elect_unclean(&offline, &back).expect("3 is back");
        assert_eq!((elected.leader, elected.isr.clone()), (3, vec![3]));
        assert_eq!(
            elected.leader_recovery_state,
            LeaderRecoveryState::Recovered
        );
    }

    #[test]
    fn reassignment_adds_then_completes_or_cancels() {
        let brokers = cluster(&[], &[]);
        let current = state(&[1, 2, 3], &[1, 2, 3], 1);
        // Move 3 to 4: replicas = target + removing.
        let moving = reassign(&current, &brokers, &[1, 2, 4])
            .expect("valid")
            .expect("a change");
        assert_eq!(moving.replicas, [1, 2, 4, 3]);
        assert_eq!(
            (
                moving.adding_replicas.clone(),
                moving.removing_replicas.clone()
            ),
            (vec![4], vec![3])
        );
        assert_eq!((moving.isr.clone(), moving.leader), (vec![1, 2, 3], 1));
        assert_eq!((moving.leader_epoch, moving.partition_epoch), (5, 8));
        assert!(
            refresh(&moving, &brokers, false).is_none(),
            "4 not in sync yet"
        );
        // 4 joins the ISR: the same AlterPartition completes the reassignment.
        let mut r = isr_request(1, &[1, 2, 3, 4]);
        r.partition_epoch = 8;
        let Ok(IsrChangeOutcome::Changed(done)) = alter_partition(&moving, &brokers, false, &r)
        else {
            panic!("completion keeps the leader");
        };
        assert_eq!(
            (done.replicas.clone(), done.isr.clone()),
            (vec![1, 2, 4], vec![1, 2, 4])
        );
        assert!(!done.is_reassigning());
        assert_eq!(
            (done.leader, done.leader_epoch, done.partition_epoch),
            (1, 6, 9)
        );
        // Cancelling instead: back to 1, 2, 3.
        let reverted = cancel_reassignment(&moving, &brokers, false)
            .expect("in progress")
            .expect("a change");
        assert_eq!(reverted.replicas, [1, 2, 3]);
        assert!(!reverted.is_reassigning());
        assert_eq!(reverted.isr, [1, 2, 3]);
        assert_eq!(
            cancel_reassignment(&current, &brokers, false).map_err(|e| e.code),
            Err(codes::NO_REASSIGNMENT_IN_PROGRESS)
        );
    }

    #[test]
    fn reassignment_that_removes_the_leader_moves_it() {
        let brokers = cluster(&[], &[]);
        let current = state(&[1, 2, 3], &[1, 2, 3], 1);
        // Only removals, with in-sync replicas left: completes at once.
        let done = reassign(&current, &brokers, &[2, 3])
            .expect("valid")
            .expect("a change");
        assert_eq!(
            (done.replicas.clone(), done.isr.clone(), done.leader),
            (vec![2, 3], vec![2, 3], 2)
        );
        assert_eq!((done.leader_epoch, done.partition_epoch), (6, 8));
        // Replacing the leader: completion on AlterPartition moves leadership, and the
        // old leader is told NEW_LEADER_ELECTED.
        let moving = reassign(&current, &brokers, &[4, 2, 3])
            .expect("valid")
            .expect("a change");
        assert_eq!(moving.replicas, [4, 2, 3, 1]);
        let mut r = isr_request(1, &[1, 2, 3, 4]);
        r.partition_epoch = 8;
        let Ok(IsrChangeOutcome::LeaderMoved(next)) = alter_partition(&moving, &brokers, false, &r)
        else {
            panic!("the leader was removed");
        };
        assert_eq!(
            (next.replicas, next.isr, next.leader),
            (vec![4, 2, 3], vec![2, 3, 4], 4)
        );
        // A reordering completes at once without a leader change.
        let reordered = reassign(&current, &brokers, &[3, 2, 1])
            .expect("valid")
            .expect("a change");
        assert_eq!(
            (reordered.replicas, reordered.leader, reordered.leader_epoch),
            (vec![3, 2, 1], 1, 5)
        );
        assert_eq!(reassign(&current, &brokers, &[1, 2, 3]), Ok(None));
    }

    #[test]
    fn reassignment_targets_are_validated() {
        let brokers = cluster(&[], &[]);
        let current = state(&[1, 2], &[1, 2], 1);
        for (target, message) in [
            (&[][..], "The manual partition assignment includes an empty replica list."),
            (&[1, 9][..], "The manual partition assignment includes broker 9, but no such broker is registered."),
            (&[1, 2, 1][..], "The manual partition assignment includes the broker 1 more than once."),
        ] {
            let err = reassign(&current, &brokers, target).expect_err("invalid");
            assert_eq!((err.code, err.message.as_str()), (codes::INVALID_REPLICA_ASSIGNMENT, message));
        }
    }

    #[test]
    fn cancelling_when_only_adding_replicas_are_in_sync_needs_unclean() {
        let brokers = cluster(&[], &[]);
        let mut current = state(&[4, 1], &[4], 4);
        current.adding_replicas = vec![4];
        current.removing_replicas = vec![1];
        let err = cancel_reassignment(&current, &brokers, false).expect_err("unclean needed");
        assert_eq!(err.code, codes::INVALID_REPLICA_ASSIGNMENT);
        let reverted = cancel_reassignment(&current, &brokers, true)
            .expect("allowed")
            .expect("a change");
        assert_eq!(
            (reverted.replicas, reverted.isr, reverted.leader),
            (vec![1], vec![1], 1)
        );
    }

    #[test]
    fn new_partitions_start_in_sync_on_active_replicas() {
        let brokers = cluster(&[2], &[]);
        let p = PartitionState::new_partition(vec![2, 1, 3], &brokers).expect("1 and 3 active");
        assert_eq!(
            (p.isr, p.leader, p.leader_epoch, p.partition_epoch),
            (vec![1, 3], 1, 0, 0)
        );
        let err = PartitionState::new_partition(vec![2], &brokers).expect_err("none active");
        assert_eq!(err.code, codes::INVALID_REPLICATION_FACTOR);
        // The single node: replicas [n], ISR [n], leader n, epochs 0, as today.
        let one: Brokers = [(1, BrokerState::active(0))].into();
        let p = PartitionState::new_partition(vec![1], &one).expect("ok");
        let image = PartitionImage {
            partition: 0,
            replicas: vec![1],
            isr: vec![1],
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 0,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        };
        assert_eq!(p, PartitionState::from_image(&image));
        assert_eq!(
            LeaderRecoveryState::from_value(1),
            Some(LeaderRecoveryState::Recovering)
        );
        assert_eq!(LeaderRecoveryState::Recovering.value(), 1);
        assert_eq!(LeaderRecoveryState::from_value(2), None);
    }

    /// Checks the invariants of one state against the broker states it was computed under.
    fn check_invariants(seed: u64, step: usize, s: &PartitionState, brokers: &Brokers) {
        let at = format!("seed {seed} step {step}: {s:?}");
        assert!(!s.isr.is_empty(), "{at}: empty ISR");
        let isr: BTreeSet<i32> = s.isr.iter().copied().collect();
        let replicas: BTreeSet<i32> = s.replicas.iter().copied().collect();
        assert_eq!(isr.len(), s.isr.len(), "{at}: ISR repeats a broker");
        assert_eq!(
            replicas.len(),
            s.replicas.len(),
            "{at}: replicas repeat a broker"
        );
        assert!(isr.is_subset(&replicas), "{at}: ISR ⊄ replicas");
        if s.leader != NO_LEADER {
            assert!(isr.contains(&s.leader), "{at}: leader not in the ISR");
            assert!(is_active(brokers, s.leader), "{at}: inactive leader");
        }
        if s.isr.len() > 1 {
            assert!(
                s.isr.iter().all(|r| is_active(brokers, *r)),
                "{at}: an inactive broker in an ISR of several"
            );
        }
        if s.leader_recovery_state == LeaderRecoveryState::Recovering {
            assert_eq!(s.isr.len(), 1, "{at}: recovering with followers");
        }
        for r in s.adding_replicas.iter().chain(&s.removing_replicas) {
            assert!(replicas.contains(r), "{at}: reassigning a non-replica");
        }
    }

    #[test]
    fn property_random_event_sequences_keep_the_invariants() {
        const BROKERS: i32 = 5;
        // How often the interesting transitions happened, so that the test is known to reach
        // them.
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for seed in 0..3000u64 {
            let mut rng = TestRng::new(seed);
            let mut brokers: Brokers = (1..=BROKERS)
                .map(|id| (id, BrokerState::active(100 + id as i64)))
                .collect();
            let rf = 1 + rng.below(3);
            let mut replicas: Vec<i32> = (1..=BROKERS).collect();
            let rotate = rng.below(replicas.len());
            replicas.rotate_left(rotate);
            replicas.truncate(rf);
            let mut s = PartitionState::new_partition(replicas, &brokers).expect("all active");
            let unclean_topic = rng.chance(30);
            // Leader per leader epoch, to check that an epoch never has two leaders.
            let mut leaders: BTreeMap<i32, i32> = BTreeMap::from([(s.leader_epoch, s.leader)]);
            check_invariants(seed, 0, &s, &brokers);
            for step in 1..=60 {
                let broker = 1 + rng.below(BROKERS as usize) as i32;
                let next: Option<PartitionState> = match rng.below(9) {
                    0 => {
                        let b = brokers.get_mut(&broker).expect("registered");
                        b.fenced = true;
                        broker_fenced(&s, &brokers, broker, unclean_topic)
                    }
                    1 => {
                        let b = brokers.get_mut(&broker).expect("registered");
                        b.in_controlled_shutdown = true;
                        broker_in_controlled_shutdown(&s, &brokers, broker, unclean_topic)
                    }
                    2 | 3 => {
                        // Back: a restart re-registers with a new epoch, unfenced.
                        let b = brokers.get_mut(&broker).expect("registered");
                        if b.is_active() {
                            None
                        } else {
                            *b = BrokerState::active(b.broker_epoch + 1);
                            broker_unfenced(&s, &brokers, broker, unclean_topic)
                        }
                    }
                    4 => {
                        // The leader (or an impostor, with stale epochs sometimes) asks for
                        // a random ISR among the replicas.
                        let from = if rng.chance(80) { s.leader } else { broker };
                        let mut isr: Vec<(i32, i64)> = s
                            .replicas
                            .iter()
                            .filter(|_| rng.chance(60))
                            .map(|r| (*r, brokers[r].broker_epoch))
                            .collect();
                        if rng.chance(80) && !isr.iter().any(|(r, _)| *r == from) && from > 0 {
                            isr.insert(0, (from, brokers[&from].broker_epoch));
                        }
                        let request = IsrChangeRequest {
                            broker_id: from,
                            leader_epoch: s.leader_epoch - rng.below(2) as i32,
                            partition_epoch: s.partition_epoch - rng.below(2) as i32,
                            new_isr: isr,
                            leader_recovery_state: if rng.chance(70) {
                                LeaderRecoveryState::Recovered
                            } else {
                                s.leader_recovery_state
                            },
                        };
                        match alter_partition(&s, &brokers, unclean_topic, &request) {
                            Ok(IsrChangeOutcome::Changed(n)) => {
                                *seen.entry("isr changed").or_default() += 1;
                                Some(n)
                            }
                            Ok(IsrChangeOutcome::LeaderMoved(n)) => {
                                *seen.entry("leader moved by alter partition").or_default() += 1;
                                Some(n)
                            }
                            Ok(IsrChangeOutcome::Unchanged) => None,
                            Err(e) => {
                                *seen
                                    .entry(match e.code {
                                        codes::FENCED_LEADER_EPOCH => "fenced leader epoch",
                                        codes::INVALID_UPDATE_VERSION => "invalid update version",
                                        codes::INELIGIBLE_REPLICA => "ineligible replica",
                                        _ => "other refusal",
                                    })
                                    .or_default() += 1;
                                None
                            }
                        }
                    }
                    5 => elect_preferred(&s, &brokers).ok(),
                    6 => elect_unclean(&s, &brokers).ok(),
                    7 => {
                        let mut target: Vec<i32> = (1..=BROKERS).collect();
                        let rotate = rng.below(target.len());
                        target.rotate_left(rotate);
                        target.truncate(1 + rng.below(3));
                        if rng.chance(25) {
                            cancel_reassignment(&s, &brokers, unclean_topic)
                                .ok()
                                .flatten()
                        } else {
                            reassign(&s, &brokers, &target).expect("valid target")
                        }
                    }
                    _ => refresh(&s, &brokers, unclean_topic),
                };
                if let Some(next) = next {
                    let at = format!("seed {seed} step {step}");
                    assert_ne!(next, s, "{at}: a change that changes nothing");
                    assert_eq!(next.partition_epoch, s.partition_epoch + 1, "{at}");
                    assert!(
                        next.leader_epoch >= s.leader_epoch,
                        "{at}: leader epoch went back"
                    );
                    if next.leader != s.leader {
                        assert_eq!(next.leader_epoch, s.leader_epoch + 1, "{at}: leader change");
                    }
                    if let Some(previous) = leaders.insert(next.leader_epoch, next.leader) {
                        assert_eq!(
                            previous, next.leader,
                            "{at}: two leaders in epoch {}",
                            next.leader_epoch
                        );
                    }
                    if next.leader_recovery_state == LeaderRecoveryState::Recovering
                        && s.leader_recovery_state == LeaderRecoveryState::Recovered
                    {
                        *seen.entry("unclean election").or_default() += 1;
                    }
                    if s.is_reassigning() && !next.is_reassigning() {
                        *seen.entry("reassignment ended").or_default() += 1;
                    }
                    if next.leader == NO_LEADER && s.leader != NO_LEADER {
                        *seen.entry("went offline").or_default() += 1;
                    }
                    if next.leader != NO_LEADER && s.leader == NO_LEADER {
                        *seen.entry("came back online").or_default() += 1;
                    }
                    if next.isr.len() == 1 && !is_active(&brokers, next.isr[0]) {
                        *seen.entry("inactive last member").or_default() += 1;
                    }
                    s = next;
                }
                check_invariants(seed, step, &s, &brokers);
            }
        }
        for kind in [
            "isr changed",
            "leader moved by alter partition",
            "fenced leader epoch",
            "invalid update version",
            "ineligible replica",
            "unclean election",
            "reassignment ended",
            "went offline",
            "came back online",
            "inactive last member",
        ] {
            assert!(
                seen.get(kind).copied().unwrap_or(0) >= 20,
                "{kind} too rare: {seen:?}"
            );
        }
    }
}
