//! The leader's view of a partition's replicas in one leader epoch, and the high watermark.
//!
//! ```text
//!   HW = min over the ISR of each member's durable end
//!          leader:   its durable log end (on_leader_end)
//!          follower: its last fetch offset in this epoch (on_follower_fetch); unknown holds
//!                    the HW where it is
//!   and the HW never moves back.
//! ```
//!
//! A follower's fetch offset counts as durable because a follower asks for the next records
//! only once it has fsynced what it has (with `strata.fsync.before.ack=true`). An ISR of the
//! leader alone (a single node) is the fast path: the HW is the leader's durable end.
//!
//! ISR changes (KIP-497) are proposed here and decided by the controller:
//!
//! ```text
//!   expand: a replica outside the ISR fetches from at least the HW and the start of this
//!           leader epoch                                  -> propose ISR + it
//!   shrink: an ISR member not caught up for replica.lag.time.max.ms
//!           (caught up = fetched the leader's log end as it was at that fetch or the one
//!           before, Kafka's rule)                         -> propose ISR - it
//! ```
//!
//! One proposal is in flight at a time. While it is, the HW is computed over the *maximal*
//! ISR (the committed one plus members being added; members being removed still count), so a
//! change in flight can only slow the HW, never let it pass a record a future ISR member lacks.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What this node is for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// This node leads the partition: produce is accepted and the HW is computed here.
    Leader(LeaderState),
    /// Another node leads the partition in `leader_epoch`; produce is refused.
    Follower { leader: i32, leader_epoch: i32 },
    /// The partition has no leader in `leader_epoch`; produce is refused.
    Offline { leader_epoch: i32 },
}

impl Role {
    /// The role of `node` for a partition led by `leader` in `leader_epoch` with `isr`, its
    /// high watermark `high_watermark` and this node's durable end `own_end`. `leader` is -1
    /// when the partition has none.
    pub fn assign(
        node: i32,
        leader: i32,
        leader_epoch: i32,
        isr: &[i32],
        high_watermark: i64,
        own_end: i64,
        now: Instant,
    ) -> Role {
        if leader == node {
            Role::Leader(LeaderState::new(
                node,
                leader_epoch,
                isr,
                high_watermark,
                own_end,
                now,
            ))
        } else if leader < 0 {
            Role::Offline { leader_epoch }
        } else {
            Role::Follower {
                leader,
                leader_epoch,
            }
        }
    }

    /// The leader epoch this role belongs to.
    pub fn leader_epoch(&self) -> i32 {
        match self {
            Role::Leader(state) => state.leader_epoch(),
            Role::Follower { leader_epoch, .. } | Role::Offline { leader_epoch } => *leader_epoch,
        }
    }

    pub fn is_leader(&self) -> bool {
        matches!(self, Role::Leader(_))
    }
}

/// The leader's state of a partition for one leader epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderState {
    node: i32,
    leader_epoch: i32,
    /// The ISR as the metadata records it, this node included.
    isr: Vec<i32>,
    /// The ISR proposed to the controller and not answered yet.
    pending: Option<Vec<i32>>,
    /// Each other member of the maximal ISR: its durable end as its last fetch in this epoch
    /// claimed; `None` until it fetches.
    followers: BTreeMap<i32, Option<i64>>,
    /// Every replica that fetched in this epoch, in the ISR or not.
    progress: BTreeMap<i32, Progress>,
    /// This node's durable log end.
    own_end: i64,
    high_watermark: i64,
    /// Where this leader epoch starts in the log: a replica joins the ISR only from there.
    epoch_start_offset: i64,
    /// When this node became leader: ISR members that have not fetched yet count as caught
    /// up then.
    since: Instant,
}

/// What the leader knows of one replica's fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Progress {
    position: i64,
    /// The leader's log end when the replica last fetched, and when that was.
    leader_end_at_last_fetch: i64,
    last_fetch: Instant,
    /// The last time the replica had everything the leader had.
    caught_up: Option<Instant>,
}

impl LeaderState {
    /// The state of `node` as it becomes leader in `leader_epoch` with `isr`, its high
    /// watermark so far `high_watermark` and its durable end `own_end`. Every follower's
    /// position starts unknown. With `isr` = {node} the HW moves to `own_end` at once
    /// (everything this node holds durably is on the whole ISR).
    pub fn new(
        node: i32,
        leader_epoch: i32,
        isr: &[i32],
        high_watermark: i64,
        own_end: i64,
        now: Instant,
    ) -> LeaderState {
        let mut state = LeaderState {
            node,
            leader_epoch,
            isr: isr.to_vec(),
            pending: None,
            followers: isr
                .iter()
                .filter(|id| **id != node)
                .map(|id| (*id, None))
                .collect(),
            progress: BTreeMap::new(),
            own_end,
            high_watermark,
            epoch_start_offset: own_end,
            since: now,
        };
        state.recompute();
        state
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }

    pub fn isr(&self) -> &[i32] {
        &self.isr
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    /// Whether the ISR is this node alone: its durable end is the HW.
    pub fn is_sole_replica(&self) -> bool {
        self.followers.is_empty()
    }

    /// The ISR changed within the epoch (the leader stays): the metadata recorded it, so a
    /// proposal in flight is settled. Positions of members that stay are kept; a new
    /// member's is its last fetch, or unknown until it fetches. Returns the new HW if it
    /// moved (a member leaving can let it advance).
    pub fn set_isr(&mut self, isr: &[i32]) -> Option<i64> {
        self.isr = isr.to_vec();
        self.pending = None;
        self.rebuild_followers();
        self.recompute()
    }

    /// The ISR proposal in flight, if any.
    pub fn pending_isr(&self) -> Option<&[i32]> {
        self.pending.as_deref()
    }

    /// The controller refused or did not answer the proposal: the next check may propose
    /// again. Returns the new HW if it moved (a member that was being added no longer
    /// holds it).
    pub fn clear_pending(&mut self) -> Option<i64> {
        self.pending.take()?;
        self.rebuild_followers();
        self.recompute()
    }

    /// The members of the maximal ISR other than this node, with their known positions.
    fn rebuild_followers(&mut self) {
        let mut followers = BTreeMap::new();
        let pending = self.pending.as_deref().unwrap_or(&[]);
        for id in self
            .isr
            .iter()
            .chain(pending)
            .filter(|id| **id != self.node)
        {
            let known = self.progress.get(id).map(|p| p.position);
            followers.insert(*id, known);
        }
        self.followers = followers;
    }

    /// Proposes `isr` (one proposal at a time): it counts toward the HW at once.
    fn propose(&mut self, isr: Vec<i32>) -> Vec<i32> {
        self.pending = Some(isr.clone());
        self.rebuild_followers();
        isr
    }

    /// After replica `follower` fetched at `fetch_offset`: the ISR with it added, if it is
    /// outside the ISR, nothing is in flight, and it holds everything up to the HW and this
    /// epoch's start. The caller sends the proposal to the controller.
    pub fn expansion(&mut self, follower: i32, fetch_offset: i64) -> Option<Vec<i32>> {
        if self.pending.is_some()
            || follower == self.node
            || self.isr.contains(&follower)
            || fetch_offset < self.high_watermark
            || fetch_offset < self.epoch_start_offset
        {
            return None;
        }
        let mut isr = self.isr.clone();
        isr.push(follower);
        Some(self.propose(isr))
    }

    /// At `now`: the ISR without the members that have not caught up for `max_lag`, if any
    /// and nothing is in flight (the leader always stays). The caller sends the proposal.
    pub fn shrink(&mut self, now: Instant, max_lag: Duration) -> Option<Vec<i32>> {
        if self.pending.is_some() {
            return None;
        }
        let lagging = |id: &i32| {
            let caught_up = self
                .progress
                .get(id)
                .and_then(|p| p.caught_up)
                .unwrap_or(self.since)
                .max(self.since);
            now.saturating_duration_since(caught_up) > max_lag
        };
        let kept: Vec<i32> = self
            .isr
            .iter()
            .copied()
            .filter(|id| *id == self.node || !lagging(id))
            .collect();
        (kept.len() < self.isr.len()).then(|| self.propose(kept))
    }

    /// The ISR members other than this node that are behind the log end `leader_end`:
    /// under-replication as it shows now.
    pub fn out_of_sync(&self, leader_end: i64) -> Vec<i32> {
        self.isr
            .iter()
            .copied()
            .filter(|id| {
                *id != self.node
                    && self
                        .progress
                        .get(id)
                        .is_none_or(|p| p.position < leader_end)
            })
            .collect()
    }

    /// This node's durable end moved to `end`. Returns the new HW if it moved.
    pub fn on_leader_end(&mut self, end: i64) -> Option<i64> {
        self.own_end = self.own_end.max(end);
        self.recompute()
    }

    /// Replica `follower` fetched from `fetch_offset` at `now`, when this node's log ended at
    /// `leader_end`: everything below the offset is on it (durably, with fsync before ack).
    /// It is caught up if it asked for the log end as it is now or as it was at its previous
    /// fetch (Kafka's rule: a follower fetching continuously is caught up even while records
    /// keep arriving). Only members of the maximal ISR count toward the HW. Returns the new
    /// HW if it moved.
    pub fn on_follower_fetch(
        &mut self,
        follower: i32,
        fetch_offset: i64,
        leader_end: i64,
        now: Instant,
    ) -> Option<i64> {
        if follower == self.node {
            return None;
        }
        let entry = self.progress.entry(follower).or_insert(Progress {
            position: fetch_offset,
            leader_end_at_last_fetch: -1,
            last_fetch: now,
            caught_up: None,
        });
        entry.position = entry.position.max(fetch_offset);
        if fetch_offset >= leader_end {
            entry.caught_up = Some(now);
        } else if entry.leader_end_at_last_fetch >= 0
            && fetch_offset >= entry.leader_end_at_last_fetch
        {
            entry.caught_up = Some(entry.last_fetch);
        }
        entry.leader_end_at_last_fetch = leader_end;
        entry.last_fetch = now;
        let position = entry.position;
        let member = self.followers.get_mut(&follower)?;
        *member = Some(position);
        self.recompute()
    }

    /// The HW from the positions: the minimum over the ISR, held where it is while a member's
    /// position is unknown, never moved back.
    fn recompute(&mut self) -> Option<i64> {
        let mut candidate = self.own_end;
        for position in self.followers.values() {
            match position {
                Some(p) => candidate = candidate.min(*p),
                None => return None,
            }
        }
        if candidate > self.high_watermark {
            self.high_watermark = candidate;
            Some(candidate)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        Instant::now()
    }

    /// A fetch at `offset` while the leader's log ends far ahead, at one instant.
    fn fetch(s: &mut LeaderState, id: i32, offset: i64) -> Option<i64> {
        s.on_follower_fetch(id, offset, 1_000, T.with(|t| *t))
    }

    thread_local! {
        static T: Instant = Instant::now();
    }

    #[test]
    fn a_sole_replica_follows_its_own_durable_end() {
        let mut s = LeaderState::new(1, 0, &[1], 5, 10, t0());
        assert!(s.is_sole_replica());
        assert_eq!(s.high_watermark(), 10, "jumps to the durable end at once");
        assert_eq!(s.on_leader_end(15), Some(15));
        assert_eq!(s.on_leader_end(12), None, "never back");
        assert_eq!(s.high_watermark(), 15);
    }

    #[test]
    fn unknown_followers_hold_the_high_watermark() {
        let mut s = LeaderState::new(1, 3, &[1, 2, 3], 5, 10, t0());
        assert_eq!(s.high_watermark(), 5, "followers unknown in this epoch");
        assert_eq!(s.on_leader_end(20), None);
        assert_eq!(fetch(&mut s, 2, 12), None, "3 still unknown");
        assert_eq!(fetch(&mut s, 3, 8), Some(8));
        assert_eq!(
            fetch(&mut s, 3, 18),
            Some(12),
            "the slowest member bounds it"
        );
        assert_eq!(fetch(&mut s, 2, 25), Some(18));
        assert_eq!(fetch(&mut s, 2, 30), None, "the leader's own end bounds it");
        assert_eq!(s.on_leader_end(30), None, "3 is at 18");
        assert_eq!(fetch(&mut s, 3, 30), Some(30));
        assert_eq!(
            fetch(&mut s, 9, 100),
            None,
            "a replica outside the ISR does not count"
        );
    }

    #[test]
    fn isr_changes_keep_known_positions_and_never_lower_the_high_watermark() {
        let mut s = LeaderState::new(1, 0, &[1, 2], 0, 10, t0());
        assert_eq!(fetch(&mut s, 2, 4), Some(4));
        // 3 joins: unknown until it fetches, so the HW holds.
        assert_eq!(s.set_isr(&[1, 2, 3]), None);
        assert_eq!(fetch(&mut s, 2, 10), None);
        assert_eq!(
            fetch(&mut s, 3, 2),
            None,
            "not below the HW already reached"
        );
        assert_eq!(s.high_watermark(), 4);
        assert_eq!(fetch(&mut s, 3, 9), Some(9));
        // 3 leaves: 2 is at 10, the leader at 10.
        assert_eq!(s.set_isr(&[1, 2]), Some(10));
        // Back to the leader alone.
        assert_eq!(s.on_leader_end(14), None, "2 is at 10");
        assert_eq!(s.set_isr(&[1]), Some(14));
        assert!(s.is_sole_replica());
    }

    #[test]
    fn roles_follow_the_leader() {
        assert!(Role::assign(1, 1, 4, &[1], 0, 0, t0()).is_leader());
        assert_eq!(
            Role::assign(1, 2, 4, &[2, 1], 0, 0, t0()),
            Role::Follower {
                leader: 2,
                leader_epoch: 4
            }
        );
        assert_eq!(
            Role::assign(1, -1, 5, &[], 0, 0, t0()),
            Role::Offline { leader_epoch: 5 }
        );
        assert_eq!(Role::assign(1, 1, 4, &[1], 0, 0, t0()).leader_epoch(), 4);
    }

    #[test]
    fn a_caught_up_replica_is_proposed_into_the_isr_and_counts_while_in_flight() {
        let now = t0();
        let mut s = LeaderState::new(1, 2, &[1, 2], 0, 10, now);
        assert_eq!(s.on_follower_fetch(2, 10, 10, now), Some(10));
        // 3 is behind the HW: not yet.
        s.on_follower_fetch(3, 4, 10, now);
        assert_eq!(s.expansion(3, 4), None);
        assert_eq!(s.on_leader_end(20), None, "2 is at 10");
        s.on_follower_fetch(3, 10, 20, now);
        assert_eq!(s.expansion(3, 10), Some(vec![1, 2, 3]));
        assert_eq!(s.pending_isr(), Some(&[1, 2, 3][..]));
        assert_eq!(s.expansion(3, 10), None, "one proposal at a time");
        // While the change is in flight 3 holds the HW with the committed members.
        assert_eq!(s.on_follower_fetch(2, 20, 20, now), None, "3 is at 10");
        assert_eq!(s.on_follower_fetch(3, 20, 20, now), Some(20));
        // The metadata records the new ISR.
        assert_eq!(s.set_isr(&[1, 2, 3]), None);
        assert_eq!(s.pending_isr(), None);
        assert_eq!(s.isr(), &[1, 2, 3]);
    }

    #[test]
    fn a_refused_proposal_stops_holding_the_high_watermark() {
        let now = t0();
        let mut s = LeaderState::new(1, 2, &[1], 0, 10, now);
        assert_eq!(s.high_watermark(), 10);
        s.on_follower_fetch(2, 10, 10, now);
        assert_eq!(s.expansion(2, 10), Some(vec![1, 2]));
        assert_eq!(s.on_leader_end(15), None, "2 is being added, at 10");
        assert_eq!(s.clear_pending(), Some(15));
        assert_eq!(s.pending_isr(), None);
    }

    #[test]
    fn a_member_not_caught_up_for_the_lag_time_is_proposed_out() {
        let start = t0();
        let lag = Duration::from_secs(30);
        let mut s = LeaderState::new(1, 0, &[1, 2, 3], 0, 100, start);
        assert_eq!(s.shrink(start + Duration::from_secs(29), lag), None);
        // 2 keeps fetching the log end; 3 never fetches.
        let t = start + Duration::from_secs(20);
        s.on_follower_fetch(2, 100, 100, t);
        let later = start + Duration::from_secs(31);
        assert_eq!(s.shrink(later, lag), Some(vec![1, 2]));
        assert_eq!(s.shrink(later, lag), None, "in flight");
        s.set_isr(&[1, 2]);
        // 2 fetches continuously but the leader keeps writing: it asked for the end as it was
        // at its previous fetch, so it stays caught up.
        let mut t = later;
        let mut end = 100;
        for _ in 0..10 {
            t += Duration::from_secs(5);
            let offset = end;
            end += 50;
            s.on_follower_fetch(2, offset, end, t);
        }
        assert_eq!(s.shrink(t, lag), None);
        // Stuck behind for longer than the lag time: out.
        let stuck = t + Duration::from_secs(31);
        s.on_follower_fetch(2, 10, end + 500, stuck);
        assert_eq!(s.shrink(stuck, lag), Some(vec![1]));
        assert_eq!(s.out_of_sync(end + 500), vec![2]);
    }
}
