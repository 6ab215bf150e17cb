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

use std::collections::BTreeMap;

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
    ) -> Role {
        if leader == node {
            Role::Leader(LeaderState::new(
                node,
                leader_epoch,
                isr,
                high_watermark,
                own_end,
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
    /// Each other ISR member's durable end as its last fetch in this epoch claimed; `None`
    /// until it fetches.
    followers: BTreeMap<i32, Option<i64>>,
    /// This node's durable log end.
    own_end: i64,
    high_watermark: i64,
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
    ) -> LeaderState {
        let mut state = LeaderState {
            node,
            leader_epoch,
            isr: isr.to_vec(),
            followers: isr
                .iter()
                .filter(|id| **id != node)
                .map(|id| (*id, None))
                .collect(),
            own_end,
            high_watermark,
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

    /// The ISR changed within the epoch (the leader stays). Positions of members that stay
    /// are kept; a new member's is unknown until it fetches. Returns the new HW if it moved
    /// (a member leaving can let it advance).
    pub fn set_isr(&mut self, isr: &[i32]) -> Option<i64> {
        let mut followers = BTreeMap::new();
        for id in isr.iter().filter(|id| **id != self.node) {
            followers.insert(*id, self.followers.get(id).copied().flatten());
        }
        self.followers = followers;
        self.isr = isr.to_vec();
        self.recompute()
    }

    /// This node's durable end moved to `end`. Returns the new HW if it moved.
    pub fn on_leader_end(&mut self, end: i64) -> Option<i64> {
        self.own_end = self.own_end.max(end);
        self.recompute()
    }

    /// ISR member `follower` fetched from `fetch_offset`: everything below is durable on it.
    /// A fetch from a replica outside the ISR changes nothing here (ISR expansion is the
    /// controller's). Returns the new HW if it moved.
    pub fn on_follower_fetch(&mut self, follower: i32, fetch_offset: i64) -> Option<i64> {
        let position = self.followers.get_mut(&follower)?;
        *position = Some(position.map_or(fetch_offset, |p| p.max(fetch_offset)));
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

    #[test]
    fn a_sole_replica_follows_its_own_durable_end() {
        let mut s = LeaderState::new(1, 0, &[1], 5, 10);
        assert!(s.is_sole_replica());
        assert_eq!(s.high_watermark(), 10, "jumps to the durable end at once");
        assert_eq!(s.on_leader_end(15), Some(15));
        assert_eq!(s.on_leader_end(12), None, "never back");
        assert_eq!(s.high_watermark(), 15);
    }

    #[test]
    fn unknown_followers_hold_the_high_watermark() {
        let mut s = LeaderState::new(1, 3, &[1, 2, 3], 5, 10);
        assert_eq!(s.high_watermark(), 5, "followers unknown in this epoch");
        assert_eq!(s.on_leader_end(20), None);
        assert_eq!(s.on_follower_fetch(2, 12), None, "3 still unknown");
        assert_eq!(s.on_follower_fetch(3, 8), Some(8));
        assert_eq!(
            s.on_follower_fetch(3, 18),
            Some(12),
            "the slowest member bounds it"
        );
        assert_eq!(s.on_follower_fetch(2, 25), Some(18));
        assert_eq!(
            s.on_follower_fetch(2, 30),
            None,
            "the leader's own end bounds it"
        );
        assert_eq!(s.on_leader_end(30), None, "3 is at 18");
        assert_eq!(s.on_follower_fetch(3, 30), Some(30));
        assert_eq!(
            s.on_follower_fetch(9, 100),
            None,
            "a replica outside the ISR does not count"
        );
    }

    #[test]
    fn isr_changes_keep_known_positions_and_never_lower_the_high_watermark() {
        let mut s = LeaderState::new(1, 0, &[1, 2], 0, 10);
        assert_eq!(s.on_follower_fetch(2, 4), Some(4));
        // 3 joins: unknown until it fetches, so the HW holds.
        assert_eq!(s.set_isr(&[1, 2, 3]), None);
        assert_eq!(s.on_follower_fetch(2, 10), None);
        assert_eq!(
            s.on_follower_fetch(3, 2),
            None,
            "not below the HW already reached"
        );
        assert_eq!(s.high_watermark(), 4);
        assert_eq!(s.on_follower_fetch(3, 9), Some(9));
        // 3 leaves: 2 is at 10, the leader at 10.
        assert_eq!(s.set_isr(&[1, 2]), Some(10));
        // Back to the leader alone.
        assert_eq!(s.on_leader_end(14), None, "2 is at 10");
        assert_eq!(s.set_isr(&[1]), Some(14));
        assert!(s.is_sole_replica());
    }

    #[test]
    fn roles_follow_the_leader() {
        assert!(Role::assign(1, 1, 4, &[1], 0, 0).is_leader());
        assert_eq!(
            Role::assign(1, 2, 4, &[2, 1], 0, 0),
            Role::Follower {
                leader: 2,
                leader_epoch: 4
            }
        );
        assert_eq!(
            Role::assign(1, -1, 5, &[], 0, 0),
            Role::Offline { leader_epoch: 5 }
        );
        assert_eq!(Role::assign(1, 1, 4, &[1], 0, 0).leader_epoch(), 4);
    }
}
