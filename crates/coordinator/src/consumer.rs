//! Consumer groups under the KIP-848 protocol: the broker computes assignments.
//!
//! Each ConsumerGroupHeartbeat carries the member's epoch and, when it changed, what it owns.
//! A change of membership or subscriptions bumps the group epoch and recomputes the target
//! assignment with the group's server assignor (`uniform` or `range`). Members then reconcile
//! one heartbeat at a time:
//!
//! ```text
//!   member owns partitions not in its target ──▶ answer target ∩ owned (revoke the rest),
//!                                                 member epoch unchanged
//!   member owns only target partitions       ──▶ member epoch := group epoch; answer target
//!                                                 minus partitions another member still owns
//!                                                 (added by a later heartbeat once released)
//! ```
//!
//! So no partition is ever assigned to two members at once: a partition reaches its new
//! owner only after the previous owner has reported it released (or left, or expired).

use std::collections::{BTreeMap, BTreeSet};

use strata_protocol::ErrorCode;

use crate::event::{GroupEvent, GroupProtocol, RebalanceReason};

/// A partition named by topic id.
pub type TopicPartition = (uuid::Uuid, i32);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatRequest {
    pub group_id: String,
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub rebalance_timeout_ms: i32,
    /// `None`: unchanged since the last heartbeat.
    pub subscribed_topic_names: Option<Vec<String>>,
    pub server_assignor: Option<String>,
    /// What the member owns; `None`: unchanged.
    pub owned: Option<Vec<TopicPartition>>,
    pub client_id: String,
    pub client_host: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatResponse {
    pub error: Option<ErrorCode>,
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// Present when the member must change what it owns.
    pub assignment: Option<Vec<TopicPartition>>,
}

#[derive(Debug, Clone)]
pub struct ConsumerMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub member_epoch: i32,
    pub subscribed: Vec<String>,
    /// What the member last reported owning.
    pub owned: BTreeSet<TopicPartition>,
    /// What the broker last told it to own.
    pub assigned: BTreeSet<TopicPartition>,
    pub last_heartbeat_ms: i64,
}

#[derive(Debug, Default)]
pub struct ConsumerGroup {
    pub id: String,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    pub members: BTreeMap<String, ConsumerMember>,
    pub target: BTreeMap<String, BTreeSet<TopicPartition>>,
}

impl ConsumerGroup {
    pub fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.members.values().any(|m| {
            m.member_epoch != self.group_epoch || self.target.get(&m.member_id) != Some(&m.assigned)
        }) {
            "Reconciling"
        } else {
            "Stable"
        }
    }
}

/// Topic metadata the assignors need: name → (id, partition count).
pub type Topics = BTreeMap<String, (uuid::Uuid, i32)>;

#[derive(Debug, Clone, Copy)]
pub struct ConsumerConfig {
    pub session_timeout_ms: i64,
    pub heartbeat_interval_ms: i32,
    pub max_size: usize,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 5_000,
            max_size: usize::MAX,
        }
    }
}

pub const ASSIGNORS: &[&str] = &["uniform", "range"];

/// Rebalance events kept for the edge to take; older ones are dropped beyond this, so a caller
/// that never takes them cannot grow memory without bound.
const MAX_EVENTS: usize = 1024;

#[derive(Default)]
pub struct ConsumerGroups {
    pub groups: BTreeMap<String, ConsumerGroup>,
    pub config: Option<ConsumerConfig>,
    events: Vec<GroupEvent>,
}

impl ConsumerGroups {
    fn cfg(&self) -> ConsumerConfig {
        self.config.unwrap_or_default()
    }

    pub fn new(config: ConsumerConfig) -> Self {
        ConsumerGroups {
            config: Some(config),
            ..Default::default()
        }
    }

    /// The rebalance events since the last call, oldest first (for the log).
    pub fn take_events(&mut self) -> Vec<GroupEvent> {
        std::mem::take(&mut self.events)
    }

    fn report(events: &mut Vec<GroupEvent>, event: GroupEvent) {
        if events.len() >= MAX_EVENTS {
            events.remove(0);
        }
        events.push(event);
    }

    /// A bumped group epoch: the rebalance starts (or the group empties).
    fn report_epoch(events: &mut Vec<GroupEvent>, group: &ConsumerGroup, reason: RebalanceReason) {
        Self::report(
            events,
            GroupEvent::RebalanceStarted {
                group: group.id.clone(),
                protocol: GroupProtocol::Consumer,
                reason,
                generation: group.group_epoch,
                members: group.members.len(),
            },
        );
        if group.members.is_empty() {
            Self::report(
                events,
                GroupEvent::Emptied {
                    group: group.id.clone(),
                    protocol: GroupProtocol::Consumer,
                    generation: group.group_epoch,
                },
            );
        }
    }

    pub fn heartbeat(
        &mut self,
        now: i64,
        req: HeartbeatRequest,
        topics: &Topics,
    ) -> HeartbeatResponse {
        let cfg = self.cfg();
        let fail = |e: ErrorCode, req: &HeartbeatRequest| HeartbeatResponse {
            error: Some(e),
            member_id: req.member_id.clone(),
            member_epoch: -1,
            heartbeat_interval_ms: cfg.heartbeat_interval_ms,
            assignment: None,
        };
        if req.group_id.is_empty() {
            return fail(ErrorCode::InvalidGroupId, &req);
        }
        if let Some(a) = &req.server_assignor {
            if !ASSIGNORS.contains(&a.as_str()) {
                return fail(ErrorCode::UnsupportedAssignor, &req);
            }
        }
        let group = self
            .groups
            .entry(req.group_id.clone())
            .or_insert_with(|| ConsumerGroup {
                id: req.group_id.clone(),
                assignor: "uniform".into(),
                ..Default::default()
            });
        // Leaving: -1 (and -2, a static member's temporary leave, treated alike).
        if req.member_epoch < 0 {
            if group.members.remove(&req.member_id).is_some() {
                group.target.remove(&req.member_id);
                group.group_epoch += 1;
                Self::compute_target(group, topics);
                let reason = RebalanceReason::MemberLeft(vec![req.member_id.clone()]);
                Self::report_epoch(&mut self.events, group, reason);
            }
            return HeartbeatResponse {
                error: None,
                member_id: req.member_id.clone(),
                member_epoch: req.member_epoch,
                heartbeat_interval_ms: 0,
                assignment: None,
            };
        }
        if req.member_epoch == 0 {
            // Joining (or rejoining after a fence): the member brings its own id (v1) or gets one.
            // A rejoin may leave the subscription out when it is unchanged; a new member
            // must name it.
            let known = group
                .members
                .get(&req.member_id)
                .map(|m| m.subscribed.clone());
            let subscribed = match (&req.subscribed_topic_names, known) {
                (Some(s), _) => s.clone(),
                (None, Some(k)) => k,
                (None, None) => return fail(ErrorCode::InvalidRequest, &req),
            };
            if group.members.len() >= cfg.max_size && !group.members.contains_key(&req.member_id) {
                return fail(ErrorCode::GroupMaxSizeReached, &req);
            }
            let member_id = if req.member_id.is_empty() {
                uuid::Uuid::new_v4().to_string()
            } else {
                req.member_id.clone()
            };
            if let Some(old) = group.members.remove(&member_id) {
                // A rejoin with epoch 0 starts over; what it owned goes back to the pool.
                let _ = old;
            }
            if let Some(a) = &req.server_assignor {
                group.assignor = a.clone();
            }
            group.members.insert(
                member_id.clone(),
                ConsumerMember {
                    member_id: member_id.clone(),
                    instance_id: req.instance_id.clone(),
                    rack_id: req.rack_id.clone(),
                    client_id: req.client_id.clone(),
                    client_host: req.client_host.clone(),
                    member_epoch: 0,
                    subscribed,
                    owned: BTreeSet::new(),
                    assigned: BTreeSet::new(),
                    last_heartbeat_ms: now,
                },
            );
            let reason = Some(RebalanceReason::MemberJoined(member_id.clone()));
            let mut req = req;
            req.member_id = member_id;
            return Self::finish(group, &mut self.events, now, req, topics, reason, cfg);
        }
        let Some(member) = group.members.get_mut(&req.member_id) else {
            return fail(ErrorCode::UnknownMemberId, &req);
        };
        if req.member_epoch != member.member_epoch {
            // Kafka also accepts the previous epoch while an assignment is in flight; a member
            // ahead of us, or behind by more, is fenced and must rejoin.
            return fail(ErrorCode::FencedMemberEpoch, &req);
        }
        member.last_heartbeat_ms = now;
        member.client_id = req.client_id.clone();
        let mut changed = false;
        if let Some(s) = &req.subscribed_topic_names {
            if *s != member.subscribed {
                member.subscribed = s.clone();
                changed = true;
            }
        }
        if let Some(a) = &req.server_assignor {
            if *a != group.assignor {
                group.assignor = a.clone();
                changed = true;
            }
        }
        let reason = changed.then(|| RebalanceReason::MetadataChanged(req.member_id.clone()));
        Self::finish(group, &mut self.events, now, req, topics, reason, cfg)
    }

    /// Answers a member's heartbeat; `reason` says why the group epoch moves, if it does.
    fn finish(
        group: &mut ConsumerGroup,
        events: &mut Vec<GroupEvent>,
        now: i64,
        req: HeartbeatRequest,
        topics: &Topics,
        reason: Option<RebalanceReason>,
        cfg: ConsumerConfig,
    ) -> HeartbeatResponse {
        let _ = now;
        // Subscribed partitions may have changed (a topic created, partitions added).
        let before = group.target.clone();
        if reason.is_some() {
            group.group_epoch += 1;
        }
        Self::compute_target(group, topics);
        match reason {
            Some(reason) => Self::report_epoch(events, group, reason),
            None if group.target != before => {
                group.group_epoch += 1;
                Self::report_epoch(events, group, RebalanceReason::TopicsChanged);
            }
            None => {}
        }
        let member_id = req.member_id.clone();
        if let Some(owned) = &req.owned {
            let m = group.members.get_mut(&member_id).expect("member present");
            m.owned = owned.iter().copied().collect();
        }
        let target = group.target.get(&member_id).cloned().unwrap_or_default();
        let held_by_others: BTreeSet<TopicPartition> = group
            .members
            .values()
            .filter(|m| m.member_id != member_id)
            .flat_map(|m| m.owned.union(&m.assigned).copied().collect::<Vec<_>>())
            .collect();
        let group_epoch = group.group_epoch;
        let m = group.members.get_mut(&member_id).expect("member present");
        let to_revoke: BTreeSet<TopicPartition> = m
            .owned
            .union(&m.assigned)
            .filter(|p| !target.contains(p))
            .copied()
            .collect();
        let next: BTreeSet<TopicPartition> = if to_revoke.iter().any(|p| m.owned.contains(p)) {
            // Revoke first; the epoch moves once the member reports the partitions released.
            m.assigned
                .intersection(&target)
                .copied()
                .chain(m.owned.intersection(&target).copied())
                .collect()
        } else {
            m.member_epoch = group_epoch;
            target
                .iter()
                .filter(|p| !held_by_others.contains(p))
                .copied()
                .collect()
        };
        let assignment = if next != m.assigned
            || req.member_epoch == 0
            || req
                .owned
                .as_ref()
                .is_some_and(|o| o.iter().copied().collect::<BTreeSet<_>>() != next)
        {
            m.assigned = next.clone();
            Some(next.into_iter().collect())
        } else {
            None
        };
        if m.member_epoch == group_epoch
            && group
                .members
                .values()
                .all(|x| x.member_epoch == group_epoch)
            && group.assignment_epoch != group_epoch
        {
            group.assignment_epoch = group_epoch;
            Self::report(
                events,
                GroupEvent::Stable {
                    group: group.id.clone(),
                    protocol: GroupProtocol::Consumer,
                    generation: group_epoch,
                    members: group.members.len(),
                },
            );
        }
        HeartbeatResponse {
            error: None,
            member_id,
            member_epoch: group.members[&req.member_id].member_epoch,
            heartbeat_interval_ms: cfg.heartbeat_interval_ms,
            assignment,
        }
    }

    /// The target assignment for the group's current members and subscriptions.
    fn compute_target(group: &mut ConsumerGroup, topics: &Topics) {
        let mut target: BTreeMap<String, BTreeSet<TopicPartition>> = group
            .members
            .keys()
            .map(|m| (m.clone(), BTreeSet::new()))
            .collect();
        let members: Vec<&ConsumerMember> = group.members.values().collect();
        if group.assignor == "range" {
            for (name, (id, count)) in topics {
                let subs: Vec<&&ConsumerMember> = members
                    .iter()
                    .filter(|m| m.subscribed.contains(name))
                    .collect();
                if subs.is_empty() {
                    continue;
                }
                let n = subs.len() as i32;
                let per = count / n;
                let extra = count % n;
                let mut p = 0;
                for (i, m) in subs.iter().enumerate() {
                    let take = per + i32::from((i as i32) < extra);
                    for q in p..p + take {
                        target
                            .get_mut(&m.member_id)
                            .expect("listed")
                            .insert((*id, q));
                    }
                    p += take;
                }
            }
        } else {
            // Uniform: keep each partition with its current owner when that keeps the spread
            // even (sticky), then hand the rest to the least-loaded subscribed member.
            let mut all: Vec<(String, TopicPartition)> = Vec::new();
            for (name, (id, count)) in topics {
                if members.iter().any(|m| m.subscribed.contains(name)) {
                    all.extend((0..*count).map(|p| (name.clone(), (*id, p))));
                }
            }
            let quota = if members.is_empty() {
                0
            } else {
                all.len().div_ceil(members.len())
            };
            let mut unassigned = Vec::new();
            for (name, tp) in &all {
                let sticky = group
                    .target
                    .iter()
                    .find(|(_, set)| set.contains(tp))
                    .map(|(m, _)| m.clone());
                match sticky {
                    Some(m)
                        if group
                            .members
                            .get(&m)
                            .is_some_and(|x| x.subscribed.contains(name))
                            && target[&m].len() < quota =>
                    {
                        target.get_mut(&m).expect("member").insert(*tp);
                    }
                    _ => unassigned.push((name.clone(), *tp)),
                }
            }
            for (name, tp) in unassigned {
                if let Some(m) = members
                    .iter()
                    .filter(|m| m.subscribed.contains(&name))
                    .min_by_key(|m| (target[&m.member_id].len(), m.member_id.clone()))
                {
                    target.get_mut(&m.member_id).expect("member").insert(tp);
                }
            }
        }
        group.target = target;
    }

    /// Removes members whose session expired. Returns whether anything changed.
    pub fn tick(&mut self, now: i64, topics: &Topics) {
        let timeout = self.cfg().session_timeout_ms;
        for group in self.groups.values_mut() {
            let expired: Vec<String> = group
                .members
                .values()
                .filter(|m| now - m.last_heartbeat_ms > timeout)
                .map(|m| m.member_id.clone())
                .collect();
            if expired.is_empty() {
                continue;
            }
            for id in &expired {
                group.members.remove(id);
                group.target.remove(id);
            }
            group.group_epoch += 1;
            Self::compute_target(group, topics);
            Self::report_epoch(
                &mut self.events,
                group,
                RebalanceReason::SessionExpired(expired),
            );
        }
        self.groups
            .retain(|_, g| !g.members.is_empty() || g.group_epoch == 0);
    }

    /// Whether a member may commit offsets for `epoch` (OffsetCommit v9+ on consumer groups).
    pub fn check_commit(
        &self,
        group_id: &str,
        member_id: &str,
        epoch: i32,
    ) -> Option<Result<(), ErrorCode>> {
        let group = self.groups.get(group_id)?;
        if member_id.is_empty() && epoch < 0 {
            return Some(if group.members.is_empty() {
                Ok(())
            } else {
                Err(ErrorCode::UnknownMemberId)
            });
        }
        let Some(m) = group.members.get(member_id) else {
            return Some(Err(ErrorCode::UnknownMemberId));
        };
        Some(if epoch > m.member_epoch {
            Err(ErrorCode::StaleMemberEpoch)
        } else {
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics() -> Topics {
        let mut t = Topics::new();
        t.insert("t".into(), (uuid::Uuid::from_u128(1), 6));
        t
    }

    fn hb(member: &str, epoch: i32, owned: Option<Vec<TopicPartition>>) -> HeartbeatRequest {
        HeartbeatRequest {
            group_id: "g".into(),
            member_id: member.into(),
            member_epoch: epoch,
            instance_id: None,
            rack_id: None,
            rebalance_timeout_ms: 10_000,
            subscribed_topic_names: (epoch == 0).then(|| vec!["t".to_string()]),
            server_assignor: None,
            owned,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
        }
    }

    #[test]
    fn two_members_never_share_a_partition() {
        let mut g = ConsumerGroups::default();
        let t = topics();
        let a = g.heartbeat(0, hb("a", 0, Some(vec![])), &t);
        assert_eq!(a.error, None);
        let a_parts = a.assignment.clone().expect("assignment");
        assert_eq!(a_parts.len(), 6);
        // a confirms ownership.
        let r = g.heartbeat(1, hb("a", a.member_epoch, Some(a_parts.clone())), &t);
        assert_eq!(r.error, None);
        // b joins: it gets nothing a still owns.
        let b = g.heartbeat(2, hb("b", 0, Some(vec![])), &t);
        let b_first = b.assignment.clone().unwrap_or_default();
        assert!(b_first.is_empty(), "a still owns everything: {b_first:?}");
        // a is told to revoke half.
        let r = g.heartbeat(3, hb("a", a.member_epoch, None), &t);
        let a_keep = r.assignment.clone().expect("revocation");
        assert_eq!(a_keep.len(), 3);
        // a reports the release; b then receives the rest.
        let r = g.heartbeat(4, hb("a", r.member_epoch, Some(a_keep.clone())), &t);
        assert_eq!(r.error, None);
        let r = g.heartbeat(5, hb("b", b.member_epoch, Some(vec![])), &t);
        let b_parts = r.assignment.expect("assignment for b");
        assert_eq!(b_parts.len(), 3);
        assert!(b_parts.iter().all(|p| !a_keep.contains(p)));
        // b leaves; a eventually owns all six again.
        g.heartbeat(6, hb("b", -1, None), &t);
        let group = &g.groups["g"];
        assert_eq!(group.target["a"].len(), 6);
    }

    #[test]
    fn rebalances_are_reported_with_reason_epoch_and_members() {
        let mut g = ConsumerGroups::default();
        let t = topics();
        let started = |reason, generation, members| GroupEvent::RebalanceStarted {
            group: "g".into(),
            protocol: GroupProtocol::Consumer,
            reason,
            generation,
            members,
        };
        let stable = |generation, members| GroupEvent::Stable {
            group: "g".into(),
            protocol: GroupProtocol::Consumer,
            generation,
            members,
        };
        let a = g.heartbeat(0, hb("a", 0, Some(vec![])), &t);
        assert_eq!(
            g.take_events(),
            vec![
                started(RebalanceReason::MemberJoined("a".into()), 1, 1),
                stable(1, 1)
            ]
        );
        g.heartbeat(1, hb("b", 0, Some(vec![])), &t);
        assert_eq!(
            g.take_events(),
            vec![started(RebalanceReason::MemberJoined("b".into()), 2, 2)]
        );
        // a releases what moved to b; then epoch 2 is stable.
        let kept: Vec<TopicPartition> = g.groups["g"].target["a"].iter().copied().collect();
        g.heartbeat(2, hb("a", 1, a.assignment.clone()), &t);
        assert!(g.take_events().is_empty(), "a still owns b's partitions");
        g.heartbeat(3, hb("a", 1, Some(kept)), &t);
        assert_eq!(g.take_events(), vec![stable(2, 2)]);
        // Subscription change, leave, expiry.
        let mut change = hb("a", 2, None);
        change.subscribed_topic_names = Some(vec!["t".into(), "u".into()]);
        g.heartbeat(4, change, &t);
        let events = g.take_events();
        assert_eq!(
            events[0],
            started(RebalanceReason::MetadataChanged("a".into()), 3, 2)
        );
        g.heartbeat(5, hb("a", -1, None), &t);
        assert_eq!(
            g.take_events(),
            vec![started(RebalanceReason::MemberLeft(vec!["a".into()]), 4, 1)]
        );
        g.tick(1_000_000, &t);
        assert_eq!(
            g.take_events(),
            vec![
                started(RebalanceReason::SessionExpired(vec!["b".into()]), 5, 0),
                GroupEvent::Emptied {
                    group: "g".into(),
                    protocol: GroupProtocol::Consumer,
                    generation: 5,
                }
            ]
        );
    }

    #[test]
    fn errors() {
        let mut g = ConsumerGroups::default();
        let t = topics();
        assert_eq!(
            g.heartbeat(0, hb("ghost", 3, None), &t).error,
            Some(ErrorCode::UnknownMemberId)
        );
        let a = g.heartbeat(0, hb("a", 0, Some(vec![])), &t);
        assert_eq!(
            g.heartbeat(0, hb("a", a.member_epoch + 5, None), &t).error,
            Some(ErrorCode::FencedMemberEpoch)
        );
        let mut bad = hb("z", 0, None);
        bad.server_assignor = Some("fancy".into());
        assert_eq!(
            g.heartbeat(0, bad, &t).error,
            Some(ErrorCode::UnsupportedAssignor)
        );
        let mut no_subs = hb("y", 0, None);
        no_subs.subscribed_topic_names = None;
        assert_eq!(
            g.heartbeat(0, no_subs, &t).error,
            Some(ErrorCode::InvalidRequest)
        );
    }

    #[test]
    fn range_assignor_and_expiry() {
        let mut g = ConsumerGroups {
            config: Some(ConsumerConfig {
                session_timeout_ms: 100,
                ..Default::default()
            }),
            ..Default::default()
        };
        let t = topics();
        let mut a = hb("a", 0, Some(vec![]));
        a.server_assignor = Some("range".into());
        g.heartbeat(0, a, &t);
        g.heartbeat(0, hb("b", 0, Some(vec![])), &t);
        let group = &g.groups["g"];
        assert_eq!(
            group.target["a"],
            (0..3).map(|p| (uuid::Uuid::from_u128(1), p)).collect()
        );
        assert_eq!(
            group.target["b"],
            (3..6).map(|p| (uuid::Uuid::from_u128(1), p)).collect()
        );
        g.heartbeat(
            50,
            hb("a", g.groups["g"].members["a"].member_epoch, None),
            &t,
        );
        g.tick(150, &t);
        assert_eq!(g.groups["g"].members.len(), 1, "b expired");
        assert_eq!(g.groups["g"].target["a"].len(), 6);
    }
}
