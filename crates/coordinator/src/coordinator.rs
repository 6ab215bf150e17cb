//! All groups of this coordinator: routing events to groups, committed offsets, admin views.

use std::collections::{BTreeMap, VecDeque};

use strata_protocol::ErrorCode;

use crate::event::GroupEvent;
use crate::group::{
    Answer, Group, GroupState, JoinRequest, JoinResponse, SyncRequest, SyncResponse, Timing,
};
use crate::lag::{CommitEntry, CommitWindow, LagConfig};
use crate::record::{CommittedOffset, GroupRecord};
use crate::Token;

#[derive(Debug, Clone, Copy)]
pub struct GroupConfig {
    pub initial_rebalance_delay_ms: i64,
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    /// Offsets of a group that has been empty this long expire.
    pub offsets_retention_ms: i64,
    /// Longest committed-offset metadata string.
    pub max_metadata_bytes: usize,
    /// How commit windows for lag evaluation are kept.
    pub lag: LagConfig,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            initial_rebalance_delay_ms: 3000,
            min_session_timeout_ms: 6000,
            max_session_timeout_ms: 1_800_000,
            offsets_retention_ms: 7 * 24 * 3600 * 1000,
            max_metadata_bytes: 4096,
            lag: LagConfig::default(),
        }
    }
}

/// What the caller must do after an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Join(Token, JoinResponse),
    Sync(Token, SyncResponse),
    /// Append this record to the group's `__consumer_offsets` partition.
    Persist(GroupRecord),
    /// A rebalance milestone, for the log.
    Event(GroupEvent),
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol: String,
    /// (member id, instance id, client id, client host, metadata, assignment)
    pub members: Vec<(
        String,
        Option<String>,
        String,
        String,
        bytes::Bytes,
        bytes::Bytes,
    )>,
}

pub struct GroupCoordinator {
    config: GroupConfig,
    groups: BTreeMap<String, Group>,
    /// Committed offsets appended to `__consumer_offsets` but not durable yet, per partition
    /// of that topic, in log order: `(end offset of their batch, records)`. OffsetFetch does
    /// not see them until the partition's high watermark passes them (as Kafka keeps pending
    /// commits aside until their append completes).
    staged: BTreeMap<i32, VecDeque<(i64, Vec<GroupRecord>)>>,
}

impl GroupCoordinator {
    pub fn new(config: GroupConfig) -> Self {
        GroupCoordinator {
            config,
            groups: BTreeMap::new(),
            staged: BTreeMap::new(),
        }
    }

    fn timing(&self) -> Timing {
        Timing {
            initial_rebalance_delay_ms: self.config.initial_rebalance_delay_ms,
            min_session_timeout_ms: self.config.min_session_timeout_ms,
            max_session_timeout_ms: self.config.max_session_timeout_ms,
        }
    }

    fn outputs(group: &mut Group, answers: Vec<Answer>) -> Vec<Output> {
        let mut out: Vec<Output> = answers
            .into_iter()
            .map(|a| match a {
                Answer::Join(t, r) => Output::Join(t, r),
                Answer::Sync(t, r) => Output::Sync(t, r),
                Answer::Event(e) => Output::Event(e),
            })
            .collect();
        if group.dirty && matches!(group.state, GroupState::Stable | GroupState::Empty) {
            group.dirty = false;
            out.push(Output::Persist(GroupRecord::Group {
                group: group.id.clone(),
                value: Some(group.persisted()),
            }));
        }
        out
    }

    pub fn join(&mut self, now: i64, token: Token, req: JoinRequest) -> Vec<Output> {
        if req.group_id.is_empty() {
            return vec![Output::Join(
                token,
                JoinResponse::error(ErrorCode::InvalidGroupId, req.member_id),
            )];
        }
        let t = self.timing();
        let group = self
            .groups
            .entry(req.group_id.clone())
            .or_insert_with(|| Group::new(req.group_id.clone(), now));
        let answers = group.join(now, token, req, &t);
        Self::outputs(group, answers)
    }

    pub fn sync(&mut self, now: i64, token: Token, req: SyncRequest) -> Vec<Output> {
        let Some(group) = self.groups.get_mut(&req.group_id) else {
            return vec![Output::Sync(
                token,
                SyncResponse::error(ErrorCode::UnknownMemberId),
            )];
        };
        let answers = group.sync(now, token, req);
        Self::outputs(group, answers)
    }

    pub fn heartbeat(
        &mut self,
        now: i64,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance: Option<&str>,
    ) -> Option<ErrorCode> {
        match self.groups.get_mut(group_id) {
            Some(g) => g.heartbeat(now, generation, member_id, instance),
            None => Some(ErrorCode::UnknownMemberId),
        }
    }

    pub fn leave(
        &mut self,
        now: i64,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> (Vec<Option<ErrorCode>>, Vec<Output>) {
        let t = self.timing();
        let Some(group) = self.groups.get_mut(group_id) else {
            return (
                vec![Some(ErrorCode::UnknownMemberId); members.len()],
                Vec::new(),
            );
        };
        let mut answers = Vec::new();
        let results = group.leave(now, members, &t, &mut answers);
        (results, Self::outputs(group, answers))
    }

    /// Session expiry, rebalance and sync deadlines, offset expiry of empty groups.
    pub fn tick(&mut self, now: i64) -> Vec<Output> {
        let t = self.timing();
        let retention = self.config.offsets_retention_ms;
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for group in self.groups.values_mut() {
            let mut answers = Vec::new();
            group.tick(now, &t, &mut answers);
            out.extend(Self::outputs(group, answers));
            if group.state == GroupState::Empty && now - group.empty_since_ms > retention {
                group.commit_windows.clear();
                for ((topic, partition), _) in std::mem::take(&mut group.offsets) {
                    out.push(Output::Persist(GroupRecord::Offset {
                        group: group.id.clone(),
                        topic,
                        partition,
                        value: None,
                    }));
                }
                out.push(Output::Persist(GroupRecord::Group {
                    group: group.id.clone(),
                    value: None,
                }));
                gone.push(group.id.clone());
            }
        }
        for id in gone {
            tracing::info!(group = %id, "offsets of an empty group expired (offsets.retention.minutes)");
            self.groups.remove(&id);
        }
        out
    }

    /// Whether `member_id` of `generation` may commit offsets to `group_id`.
    pub fn check_commit(
        &mut self,
        now: i64,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance: Option<&str>,
    ) -> Result<(), ErrorCode> {
        if group_id.is_empty() {
            return Err(ErrorCode::InvalidGroupId);
        }
        match self.groups.get_mut(group_id) {
            Some(g) => {
                g.check_commit(generation, member_id, instance)?;
                g.touch(now, member_id);
                Ok(())
            }
            None if generation < 0 => Ok(()),
            None => Err(ErrorCode::IllegalGeneration),
        }
    }

    /// Applies a persisted record (commits after their append, and start-up replay).
    pub fn apply(&mut self, now: i64, record: GroupRecord) {
        match record {
            GroupRecord::Offset {
                group,
                topic,
                partition,
                value,
            } => match value {
                Some(v) => {
                    let g = self
                        .groups
                        .entry(group.clone())
                        .or_insert_with(|| Group::new(group, now));
                    let key = (topic, partition);
                    // Every durable commit passes here (replay, settled commits, committed
                    // transactions): the one place windows are fed.
                    g.commit_windows.entry(key.clone()).or_default().push(
                        CommitEntry::new(v.offset, v.commit_ms, v.end_offset),
                        &self.config.lag,
                    );
                    g.offsets.insert(key, v);
                }
                None => {
                    if let Some(g) = self.groups.get_mut(&group) {
                        let key = (topic, partition);
                        g.commit_windows.remove(&key);
                        g.offsets.remove(&key);
                    }
                }
            },
            GroupRecord::Group { group, value } => match value {
                Some(p) => {
                    let g = self
                        .groups
                        .entry(group.clone())
                        .or_insert_with(|| Group::new(group, now));
                    // Only restore into a group that is not live (start-up replay).
                    if g.members.is_empty() && g.state == GroupState::Empty {
                        g.restore(now, p);
                    }
                }
                None => {
                    if let Some(g) = self.groups.get(&group) {
                        if g.members.is_empty() && g.offsets.is_empty() {
                            self.groups.remove(&group);
                        }
                    }
                }
            },
        }
    }

    /// Offsets `records` were appended to `__consumer_offsets` partition `partition` in a
    /// batch ending before `end_offset`; they apply once [`Self::durable`] reports the
    /// partition durable that far. Call in log order (append under the same lock).
    pub fn stage(&mut self, partition: i32, end_offset: i64, records: Vec<GroupRecord>) {
        if !records.is_empty() {
            self.staged
                .entry(partition)
                .or_default()
                .push_back((end_offset, records));
        }
    }

    /// `__consumer_offsets` partition `partition` is durable below `high_watermark`: applies
    /// the staged records it covers, in log order (so a later commit of the same partition
    /// always wins, whichever waiter notices durability first).
    pub fn durable(&mut self, now: i64, partition: i32, high_watermark: i64) {
        let Some(queue) = self.staged.get_mut(&partition) else {
            return;
        };
        let mut ready = Vec::new();
        while queue.front().is_some_and(|(end, _)| *end <= high_watermark) {
            if let Some((_, records)) = queue.pop_front() {
                ready.extend(records);
            }
        }
        if queue.is_empty() {
            self.staged.remove(&partition);
        }
        for r in ready {
            self.apply(now, r);
        }
    }

    /// The `__consumer_offsets` partitions with staged records.
    pub fn staged_partitions(&self) -> Vec<i32> {
        self.staged.keys().copied().collect()
    }

    /// Whether a commit of this group's offset for the partition is staged (not durable).
    pub fn has_staged_offset(&self, group_id: &str, topic: &str, partition: i32) -> bool {
        self.staged
            .values()
            .flatten()
            .flat_map(|(_, r)| r)
            .any(|r| r.is_offset_of(group_id, topic, partition))
    }

    /// Committed offsets of a group: all of them, or those of `topics` (partitions listed, or
    /// all of a topic when its list is empty is not special: absent offsets answer -1).
    pub fn offsets(&self, group_id: &str) -> Option<&BTreeMap<(String, i32), CommittedOffset>> {
        self.groups.get(group_id).map(|g| &g.offsets)
    }

    /// A group's commit windows (one per committed partition), for lag evaluation; `None`
    /// for an unknown group.
    pub fn commit_windows(&self, group_id: &str) -> Option<&BTreeMap<(String, i32), CommitWindow>> {
        self.groups.get(group_id).map(|g| &g.commit_windows)
    }

    pub fn lag_config(&self) -> &LagConfig {
        &self.config.lag
    }

    pub fn max_metadata_bytes(&self) -> usize {
        self.config.max_metadata_bytes
    }

    /// Every group this coordinator holds (dead ones included until they are dropped).
    pub fn groups(&self) -> impl Iterator<Item = &Group> + '_ {
        self.groups.values().filter(|g| g.state != GroupState::Dead)
    }

    pub fn list(&self) -> Vec<(String, String, GroupState)> {
        self.groups
            .values()
            .filter(|g| g.state != GroupState::Dead)
            .map(|g| {
                (
                    g.id.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state,
                )
            })
            .collect()
    }

    pub fn describe(&self, group_id: &str) -> GroupDescription {
        match self.groups.get(group_id) {
            None => GroupDescription {
                group_id: group_id.to_string(),
                state: GroupState::Dead,
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            },
            Some(g) => GroupDescription {
                group_id: g.id.clone(),
                state: g.state,
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                protocol: if g.state == GroupState::Stable
                    || g.state == GroupState::CompletingRebalance
                {
                    g.protocol.clone().unwrap_or_default()
                } else {
                    String::new()
                },
                members: g
                    .members
                    .values()
                    .map(|m| {
                        (
                            m.member_id.clone(),
                            m.group_instance_id.clone(),
                            m.client_id.clone(),
                            m.client_host.clone(),
                            m.metadata(g.protocol.as_deref()),
                            m.assignment.clone(),
                        )
                    })
                    .collect(),
            },
        }
    }

    /// Deletes an empty group and its offsets; returns the tombstones to persist.
    pub fn delete_group(&mut self, group_id: &str) -> Result<Vec<GroupRecord>, ErrorCode> {
        let Some(g) = self.groups.get(group_id) else {
            return Err(ErrorCode::GroupIdNotFound);
        };
        if !g.members.is_empty() || !matches!(g.state, GroupState::Empty | GroupState::Dead) {
            return Err(ErrorCode::NonEmptyGroup);
        }
        let g = self.groups.remove(group_id).expect("checked");
        let mut records: Vec<GroupRecord> = g
            .offsets
            .into_keys()
            .map(|(topic, partition)| GroupRecord::Offset {
                group: group_id.to_string(),
                topic,
                partition,
                value: None,
            })
            .collect();
        records.push(GroupRecord::Group {
            group: group_id.to_string(),
            value: None,
        });
        Ok(records)
    }

    /// Topics the members of a group are subscribed to are not deletable by OffsetDelete;
    /// the caller decodes subscriptions. Returns whether the group has live members.
    pub fn has_members(&self, group_id: &str) -> bool {
        self.groups
            .get(group_id)
            .is_some_and(|g| !g.members.is_empty())
    }

    pub fn exists(&self, group_id: &str) -> bool {
        self.groups.contains_key(group_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{GroupProtocol, RebalanceReason};
    use bytes::Bytes;

    /// `group`'s commit of `offset` on partition 0 of `t`.
    fn commit_of_t0(
        group: &str,
        offset: i64,
        commit_ms: i64,
        end_offset: Option<i64>,
    ) -> GroupRecord {
        GroupRecord::Offset {
            group: group.into(),
            topic: "t".into(),
            partition: 0,
            value: Some(CommittedOffset {
                offset,
                leader_epoch: -1,
                metadata: String::new(),
                commit_ms,
                end_offset,
            }),
        }
    }

    fn cfg() -> GroupConfig {
        GroupConfig {
            initial_rebalance_delay_ms: 0,
            min_session_timeout_ms: 1000,
            ..GroupConfig::default()
        }
    }

    fn join_req(member: &str) -> JoinRequest {
        JoinRequest {
            group_id: "g".into(),
            member_id: member.into(),
            group_instance_id: None,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"m"))],
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 5_000,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            require_known_member_id: true,
        }
    }

    fn join_answer(out: &[Output], token: Token) -> JoinResponse {
        out.iter()
            .find_map(|o| match o {
                Output::Join(t, r) if *t == token => Some(r.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no answer for token {token}: {out:?}"))
    }

    fn sync_answer(out: &[Output], token: Token) -> SyncResponse {
        out.iter()
            .find_map(|o| match o {
                Output::Sync(t, r) if *t == token => Some(r.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no sync answer for token {token}: {out:?}"))
    }

    /// Two-step join (KIP-394), returns the member id and the join response.
    fn join(c: &mut GroupCoordinator, now: i64, token: Token) -> String {
        let out = c.join(now, token, join_req(""));
        let r = join_answer(&out, token);
        assert_eq!(r.error, Some(ErrorCode::MemberIdRequired));
        r.member_id
    }

    fn sync(
        group: &str,
        generation: i32,
        member: &str,
        assignments: Vec<(String, Bytes)>,
    ) -> SyncRequest {
        SyncRequest {
            group_id: group.into(),
            generation_id: generation,
            member_id: member.into(),
            group_instance_id: None,
            protocol_type: Some("consumer".into()),
            protocol_name: Some("range".into()),
            assignments,
        }
    }

    fn events(out: &[Output]) -> Vec<GroupEvent> {
        out.iter()
            .filter_map(|o| match o {
                Output::Event(e) => Some(e.clone()),
                _ => None,
            })
            .collect()
    }

    fn started(reason: RebalanceReason, generation: i32, members: usize) -> GroupEvent {
        GroupEvent::RebalanceStarted {
            group: "g".into(),
            protocol: GroupProtocol::Classic,
            reason,
            generation,
            members,
        }
    }

    fn stable(generation: i32, members: usize) -> GroupEvent {
        GroupEvent::Stable {
            group: "g".into(),
            protocol: GroupProtocol::Classic,
            generation,
            members,
        }
    }

    /// Joins `member` (already given its id) and syncs it as leader; returns the events.
    fn join_and_sync(
        c: &mut GroupCoordinator,
        now: i64,
        member: &str,
        token: Token,
    ) -> Vec<GroupEvent> {
        let out = c.join(
            now,
            token,
            JoinRequest {
                member_id: member.into(),
                ..join_req("")
            },
        );
        let generation = join_answer(&out, token).generation_id;
        let mut all = events(&out);
        let out = c.sync(now, token + 1, sync("g", generation, member, vec![]));
        assert_eq!(sync_answer(&out, token + 1).error, None);
        all.extend(events(&out));
        all
    }

    #[test]
    fn rebalances_are_reported_with_reason_generation_and_members() {
        let mut c = GroupCoordinator::new(cfg());
        let a = join(&mut c, 0, 1);
        // The first join: generation 0 is replaced; generation 1 is stable once synced.
        assert_eq!(
            join_and_sync(&mut c, 0, &a, 2),
            vec![
                started(RebalanceReason::MemberJoined(a.clone()), 0, 1),
                stable(1, 1)
            ]
        );
        // The leader rejoins with new metadata.
        let out = c.join(
            1,
            4,
            JoinRequest {
                member_id: a.clone(),
                protocols: vec![("range".into(), Bytes::from_static(b"new"))],
                ..join_req("")
            },
        );
        assert_eq!(
            events(&out),
            vec![started(RebalanceReason::MetadataChanged(a.clone()), 1, 1)]
        );
        let out = c.sync(1, 5, sync("g", 2, &a, vec![]));
        assert_eq!(events(&out), vec![stable(2, 1)]);
        // A second member; then the first one's session expires.
        let b = join(&mut c, 2, 6);
        let out = c.join(
            2,
            7,
            JoinRequest {
                member_id: b.clone(),
                ..join_req("")
            },
        );
        assert_eq!(
            events(&out),
            vec![started(RebalanceReason::MemberJoined(b.clone()), 2, 2)]
        );
        let out = c.join(
            2,
            8,
            JoinRequest {
                member_id: a.clone(),
                protocols: vec![("range".into(), Bytes::from_static(b"new"))],
                ..join_req("")
            },
        );
        assert!(events(&out).is_empty(), "already rebalancing");
        let out = c.sync(2, 9, sync("g", 3, &a, vec![]));
        assert_eq!(events(&out), vec![stable(3, 2)]);
        // b keeps heartbeating; a does not.
        assert_eq!(c.heartbeat(9_000, "g", 3, &b, None), None);
        let out = c.tick(12_500);
        assert_eq!(
            events(&out),
            vec![started(
                RebalanceReason::SessionExpired(vec![a.clone()]),
                3,
                1
            )]
        );
        // b leaves while the group rebalances: generation 4 ends with nobody.
        let (_, out) = c.leave(12_501, "g", &[(b.clone(), None)]);
        assert_eq!(
            events(&out),
            vec![GroupEvent::Emptied {
                group: "g".into(),
                protocol: GroupProtocol::Classic,
                generation: 4,
            }]
        );
    }

    #[test]
    fn two_members_join_sync_and_heartbeat() {
        let mut c = GroupCoordinator::new(cfg());
        let a = join(&mut c, 0, 1);
        let b = join(&mut c, 0, 2);
        // a rejoins with its id: b is still pending, so a waits.
        let out = c.join(
            1,
            3,
            JoinRequest {
                member_id: a.clone(),
                ..join_req("")
            },
        );
        assert!(
            out.iter().all(|o| !matches!(o, Output::Join(3, _))),
            "a waits for b"
        );
        let out = c.join(
            2,
            4,
            JoinRequest {
                member_id: b.clone(),
                ..join_req("")
            },
        );
        let ra = join_answer(&out, 3);
        let rb = join_answer(&out, 4);
        assert_eq!(ra.generation_id, 1);
        assert_eq!(ra.leader, a);
        assert_eq!(ra.members.len(), 2, "the leader gets every member");
        assert!(rb.members.is_empty());
        assert_eq!(ra.protocol_name.as_deref(), Some("range"));
        // Follower syncs first and waits for the leader's assignment.
        let out = c.sync(3, 5, sync("g", 1, &b, vec![]));
        assert!(out.is_empty());
        assert_eq!(c.heartbeat(3, "g", 1, &b, None), None);
        let out = c.sync(
            4,
            6,
            sync(
                "g",
                1,
                &a,
                vec![
                    (a.clone(), Bytes::from_static(b"A")),
                    (b.clone(), Bytes::from_static(b"B")),
                ],
            ),
        );
        assert_eq!(sync_answer(&out, 6).assignment, Bytes::from_static(b"A"));
        assert_eq!(sync_answer(&out, 5).assignment, Bytes::from_static(b"B"));
        assert!(out
            .iter()
            .any(|o| matches!(o, Output::Persist(GroupRecord::Group { .. }))));
        assert_eq!(c.describe("g").state, GroupState::Stable);
        assert_eq!(c.heartbeat(5, "g", 1, &a, None), None);
        assert_eq!(
            c.heartbeat(5, "g", 0, &a, None),
            Some(ErrorCode::IllegalGeneration)
        );
        assert_eq!(
            c.heartbeat(5, "g", 1, "nobody", None),
            Some(ErrorCode::UnknownMemberId)
        );
    }

    #[test]
    fn leave_and_session_expiry_rebalance() {
        let mut c = GroupCoordinator::new(cfg());
        let a = join(&mut c, 0, 1);
        let out = c.join(
            0,
            2,
            JoinRequest {
                member_id: a.clone(),
                ..join_req("")
            },
        );
        assert_eq!(join_answer(&out, 2).generation_id, 1);
        c.sync(
            0,
            3,
            sync("g", 1, &a, vec![(a.clone(), Bytes::from_static(b"A"))]),
        );
        let b = join(&mut c, 10, 4);
        let out = c.join(
            10,
            5,
            JoinRequest {
                member_id: b.clone(),
                ..join_req("")
            },
        );
        assert!(
            out.iter().all(|o| matches!(o, Output::Event(_))),
            "b waits for a to rejoin"
        );
        assert_eq!(
            c.heartbeat(11, "g", 1, &a, None),
            Some(ErrorCode::RebalanceInProgress)
        );
        let out = c.join(
            12,
            6,
            JoinRequest {
                member_id: a.clone(),
                ..join_req("")
            },
        );
        assert_eq!(join_answer(&out, 6).generation_id, 2);
        c.sync(12, 7, sync("g", 2, &a, vec![]));
        // b leaves: a must rejoin.
        let (results, _) = c.leave(20, "g", &[(b.clone(), None)]);
        assert_eq!(results, vec![None]);
        assert_eq!(
            c.heartbeat(21, "g", 2, &a, None),
            Some(ErrorCode::RebalanceInProgress)
        );
        let out = c.join(
            22,
            8,
            JoinRequest {
                member_id: a.clone(),
                ..join_req("")
            },
        );
        assert_eq!(join_answer(&out, 8).generation_id, 3);
        c.sync(22, 9, sync("g", 3, &a, vec![]));
        // a stops heartbeating: after its session timeout the group is empty.
        let out = c.tick(22 + 10_001);
        assert!(out.iter().any(|o| matches!(o, Output::Persist(_))));
        assert_eq!(c.describe("g").state, GroupState::Empty);
        // An empty group keeps its protocol type, as Kafka's ListGroups shows it.
        let listed = c.list();
        let (_, protocol_type, _) = listed.iter().find(|(id, _, _)| id == "g").expect("listed");
        assert_eq!(protocol_type, &join_req("").protocol_type);
    }

    #[test]
    fn laggards_are_dropped_at_the_rebalance_deadline() {
        let mut c = GroupCoordinator::new(cfg());
        let a = join(&mut c, 0, 1);
        let b = join(&mut c, 0, 2);
        c.join(
            0,
            3,
            JoinRequest {
                member_id: a.clone(),
                ..join_req("")
            },
        );
        let out = c.join(
            0,
            4,
            JoinRequest {
                member_id: b.clone(),
                ..join_req("")
            },
        );
        assert_eq!(join_answer(&out, 3).generation_id, 1);
        c.sync(0, 5, sync("g", 1, &a, vec![]));
        // A new member triggers a rebalance; b never rejoins.
        let d = join(&mut c, 100, 6);
        c.join(
            100,
            7,
            JoinRequest {
                member_id: d.clone(),
                ..join_req("")
            },
        );
        c.join(
            101,
            8,
            JoinRequest {
                member_id: a.clone(),
                ..join_req("")
            },
        );
        let out = c.tick(100 + 5_000);
        let r = join_answer(&out, 8);
        assert_eq!(r.generation_id, 2);
        assert_eq!(r.members.len(), 2, "b was removed");
    }

    #[test]
    fn static_member_restart_keeps_the_generation() {
        let mut c = GroupCoordinator::new(cfg());
        let req = JoinRequest {
            group_instance_id: Some("i1".into()),
            ..join_req("")
        };
        let out = c.join(0, 1, req.clone());
        let r = join_answer(&out, 1);
        assert_eq!(r.generation_id, 1);
        c.sync(
            0,
            2,
            SyncRequest {
                group_instance_id: Some("i1".into()),
                ..sync(
                    "g",
                    1,
                    &r.member_id,
                    vec![(r.member_id.clone(), Bytes::from_static(b"A"))],
                )
            },
        );
        // Restart: a new process with the same instance id and no member id.
        let out = c.join(50, 3, req.clone());
        let r2 = join_answer(&out, 3);
        assert_eq!(r2.generation_id, 1, "no rebalance");
        assert_ne!(r2.member_id, r.member_id);
        // The old process is fenced.
        assert_eq!(
            c.heartbeat(51, "g", 1, &r.member_id, Some("i1")),
            Some(ErrorCode::FencedInstanceId)
        );
        let out = c.sync(
            52,
            4,
            SyncRequest {
                group_instance_id: Some("i1".into()),
                ..sync("g", 1, &r2.member_id, vec![])
            },
        );
        assert_eq!(sync_answer(&out, 4).assignment, Bytes::from_static(b"A"));
    }

    #[test]
    fn errors() {
        let mut c = GroupCoordinator::new(cfg());
        let out = c.join(
            0,
            1,
            JoinRequest {
                session_timeout_ms: 10,
                ..join_req("")
            },
        );
        assert_eq!(
            join_answer(&out, 1).error,
            Some(ErrorCode::InvalidSessionTimeout)
        );
        let out = c.join(0, 2, join_req("not-a-member"));
        assert_eq!(join_answer(&out, 2).error, Some(ErrorCode::UnknownMemberId));
        let a = join(&mut c, 0, 3);
        c.join(
            0,
            4,
            JoinRequest {
                member_id: a.clone(),
                ..join_req("")
            },
        );
        let out = c.join(
            0,
            5,
            JoinRequest {
                protocol_type: "connect".into(),
                ..join_req("")
            },
        );
        assert_eq!(
            join_answer(&out, 5).error,
            Some(ErrorCode::InconsistentGroupProtocol)
        );
        let out = c.sync(0, 6, sync("g", 7, &a, vec![]));
        assert_eq!(
            sync_answer(&out, 6).error,
            Some(ErrorCode::IllegalGeneration)
        );
        assert_eq!(c.delete_group("g").err(), Some(ErrorCode::NonEmptyGroup));
        assert_eq!(
            c.delete_group("none").err(),
            Some(ErrorCode::GroupIdNotFound)
        );
        // Commits: a member of the generation may; a stranger may not.
        c.sync(0, 7, sync("g", 1, &a, vec![]));
        assert_eq!(c.check_commit(0, "g", 1, &a, None), Ok(()));
        assert_eq!(
            c.check_commit(0, "g", 1, "x", None),
            Err(ErrorCode::UnknownMemberId)
        );
        assert_eq!(
            c.check_commit(0, "g", -1, "", None),
            Err(ErrorCode::UnknownMemberId)
        );
        assert_eq!(
            c.check_commit(0, "solo", -1, "", None),
            Ok(()),
            "manual assignment"
        );
    }

    #[test]
    fn staged_offsets_appear_only_once_durable_and_in_log_order() {
        let mut c = GroupCoordinator::new(cfg());
        let commit = |offset: i64| vec![commit_of_t0("g", offset, 0, None)];
        // Two commits appended to partition 7 (batches ending at 11 and 12).
        c.stage(7, 11, commit(5));
        c.stage(7, 12, commit(6));
        assert!(c.offsets("g").is_none());
        assert!(c.has_staged_offset("g", "t", 0));
        assert_eq!(c.staged_partitions(), vec![7]);
        // Durability of another partition changes nothing; of this one below 11 neither.
        c.durable(1, 3, 100);
        c.durable(1, 7, 10);
        assert!(c.offsets("g").is_none());
        c.durable(1, 7, 11);
        assert_eq!(
            c.offsets("g").expect("group")[&("t".to_string(), 0)].offset,
            5
        );
        // Both durable at once (the second waiter saw it first): the later commit wins.
        c.stage(7, 13, commit(7));
        c.durable(1, 7, 13);
        assert_eq!(
            c.offsets("g").expect("group")[&("t".to_string(), 0)].offset,
            7
        );
        assert!(!c.has_staged_offset("g", "t", 0));
        assert!(c.staged_partitions().is_empty());
    }

    #[test]
    fn commit_windows_follow_durable_commits_only() {
        let mut c = GroupCoordinator::new(cfg());
        let commit = |offset, at, end| commit_of_t0("g", offset, at, end);
        let window = |c: &GroupCoordinator| -> Vec<(i64, i64, Option<i64>)> {
            c.commit_windows("g")
                .and_then(|w| w.get(&("t".to_string(), 0)))
                .map(|w| {
                    w.entries()
                        .map(|e| (e.offset, e.commit_ms, e.lag))
                        .collect()
                })
                .unwrap_or_default()
        };
        // Replayed commits (one written before end offsets were recorded), then a staged one.
        c.apply(0, commit(5, 1_000, None));
        c.apply(0, commit(8, 5_000, Some(10)));
        c.stage(7, 11, vec![commit(9, 9_000, Some(12))]);
        assert_eq!(window(&c), vec![(5, 1_000, None), (8, 5_000, Some(2))]);
        c.durable(9_500, 7, 11);
        assert_eq!(window(&c).last(), Some(&(9, 9_000, Some(3))));
        assert!(c.commit_windows("nobody").is_none());
        // A tombstone drops the window with the offset.
        c.apply(
            10_000,
            GroupRecord::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 0,
                value: None,
            },
        );
        assert!(window(&c).is_empty());
    }

    #[test]
    fn offsets_apply_delete_and_expire() {
        let mut c = GroupCoordinator::new(GroupConfig {
            offsets_retention_ms: 1000,
            ..cfg()
        });
        c.apply(
            0,
            GroupRecord::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 0,
                value: Some(CommittedOffset {
                    offset: 5,
                    leader_epoch: 0,
                    metadata: "m".into(),
                    commit_ms: 0,
                    end_offset: None,
                }),
            },
        );
        assert_eq!(
            c.offsets("g").expect("group")[&("t".to_string(), 0)].offset,
            5
        );
        let out = c.tick(2000);
        assert!(out
            .iter()
            .any(|o| matches!(o, Output::Persist(GroupRecord::Offset { value: None, .. }))));
        assert!(c.offsets("g").is_none());
    }
}
