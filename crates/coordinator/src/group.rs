//! One consumer group under the classic protocol (JoinGroup/SyncGroup/Heartbeat/LeaveGroup).
//!
//! ```text
//!            join                 all joined / deadline        leader's SyncGroup
//!   Empty ─────────▶ PreparingRebalance ───────────▶ CompletingRebalance ──────────▶ Stable
//!     ▲                  ▲  (members not rejoined        │  (sync deadline: rebalance)  │
//!     │                  │   are removed)                ▼                              │
//!     └── last member ───┴──── join with changes, leave, session expiry ◀───────────────┘
//! ```
//!
//! Invariants: the generation grows by one per completed join phase; a member is answered at
//! most once per JoinGroup or SyncGroup token; only members of the current generation get
//! NONE from a heartbeat.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use strata_protocol::ErrorCode;

use crate::event::{GroupEvent, GroupProtocol, RebalanceReason};
use crate::lag::CommitWindow;
use crate::record::{CommittedOffset, PersistedGroup, PersistedMember};
use crate::Token;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// Kafka's name for the state (DescribeGroups, ListGroups).
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub client_id: String,
    pub client_host: String,
    /// JoinGroup v4+: a member without an id first gets MEMBER_ID_REQUIRED (KIP-394).
    pub require_known_member_id: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JoinResponse {
    pub error: Option<ErrorCode>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub skip_assignment: bool,
    pub member_id: String,
    /// (member id, group instance id, metadata) — only for the leader.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinResponse {
    pub fn error(error: ErrorCode, member_id: String) -> Self {
        JoinResponse {
            error: Some(error),
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            skip_assignment: false,
            member_id,
            members: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SyncResponse {
    pub error: Option<ErrorCode>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResponse {
    pub fn error(error: ErrorCode) -> Self {
        SyncResponse {
            error: Some(error),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    pub last_heartbeat_ms: i64,
    awaiting_join: Option<Token>,
    awaiting_sync: Option<Token>,
    join_order: u64,
}

impl Member {
    /// The subscription metadata for `protocol`.
    pub fn metadata(&self, protocol: Option<&str>) -> Bytes {
        protocol
            .and_then(|p| self.protocols.iter().find(|(n, _)| n == p))
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

/// Answers produced while handling an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Join(Token, JoinResponse),
    Sync(Token, SyncResponse),
    /// A rebalance milestone, for the log.
    Event(GroupEvent),
}

/// Timing settings the group needs.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub initial_rebalance_delay_ms: i64,
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
}

#[derive(Debug)]
pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    static_members: HashMap<String, String>,
    /// Member ids handed out by MEMBER_ID_REQUIRED, with their expiry.
    pending_members: HashMap<String, i64>,
    rebalance_deadline_ms: i64,
    initial_delay_until_ms: Option<i64>,
    sync_deadline_ms: i64,
    next_join_order: u64,
    pub offsets: BTreeMap<(String, i32), CommittedOffset>,
    /// The latest commits of each partition in `offsets`, for lag evaluation
    /// ([`crate::lag`]); kept and dropped with the offset.
    pub commit_windows: BTreeMap<(String, i32), CommitWindow>,
    pub empty_since_ms: i64,
    /// Set when the group's metadata changed and should be persisted.
    pub dirty: bool,
}

impl Group {
    pub fn new(id: String, now_ms: i64) -> Self {
        Group {
            id,
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending_members: HashMap::new(),
            rebalance_deadline_ms: 0,
            initial_delay_until_ms: None,
            sync_deadline_ms: 0,
            next_join_order: 0,
            offsets: BTreeMap::new(),
            commit_windows: BTreeMap::new(),
            empty_since_ms: now_ms,
            dirty: false,
        }
    }

    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        protocols.iter().any(|(name, _)| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        })
    }

    fn new_member_id(prefix: &str) -> String {
        format!("{prefix}-{}", uuid::Uuid::new_v4())
    }

    pub fn join(&mut self, now: i64, token: Token, req: JoinRequest, t: &Timing) -> Vec<Answer> {
        let reply = |e: ErrorCode, id: &str| {
            vec![Answer::Join(token, JoinResponse::error(e, id.to_string()))]
        };
        if self.state == GroupState::Dead {
            return reply(ErrorCode::CoordinatorNotAvailable, &req.member_id);
        }
        if req.session_timeout_ms < t.min_session_timeout_ms
            || req.session_timeout_ms > t.max_session_timeout_ms
        {
            return reply(ErrorCode::InvalidSessionTimeout, &req.member_id);
        }
        if !self.supports(&req.protocol_type, &req.protocols) {
            return reply(ErrorCode::InconsistentGroupProtocol, &req.member_id);
        }
        let mut answers = Vec::new();
        if req.member_id.is_empty() {
            let prefix = req.group_instance_id.as_deref().unwrap_or(&req.client_id);
            let new_id = Self::new_member_id(prefix);
            if let Some(instance) = req.group_instance_id.clone() {
                if let Some(old_id) = self.static_members.get(&instance).cloned() {
                    return self.replace_static_member(now, token, old_id, new_id, req, t);
                }
                self.static_members.insert(instance, new_id.clone());
            } else if req.require_known_member_id {
                let expiry = now + i64::from(req.session_timeout_ms);
                self.pending_members.insert(new_id.clone(), expiry);
                return reply(ErrorCode::MemberIdRequired, &new_id);
            }
            self.add_member(now, token, new_id.clone(), req);
            self.prepare_rebalance(now, t, &mut answers, RebalanceReason::MemberJoined(new_id));
        } else if self.pending_members.remove(&req.member_id).is_some() {
            let id = req.member_id.clone();
            self.add_member(now, token, id.clone(), req);
            self.prepare_rebalance(now, t, &mut answers, RebalanceReason::MemberJoined(id));
        } else if let Some(member) = self.members.get(&req.member_id) {
            if let Some(instance) = &req.group_instance_id {
                if self.static_members.get(instance) != Some(&req.member_id) {
                    return reply(ErrorCode::FencedInstanceId, &req.member_id);
                }
            }
            let changed = member.protocols != req.protocols;
            let member_id = req.member_id.clone();
            let is_leader = self.leader.as_deref() == Some(member_id.as_str());
            let m = self.members.get_mut(&member_id).expect("checked above");
            if let Some(old) = m.awaiting_join.take() {
                // A newer JoinGroup from the same member supersedes the waiting one.
                answers.push(Answer::Join(
                    old,
                    JoinResponse::error(ErrorCode::RebalanceInProgress, member_id.clone()),
                ));
            }
            m.protocols = req.protocols;
            m.session_timeout_ms = req.session_timeout_ms;
            m.rebalance_timeout_ms = req.rebalance_timeout_ms;
            m.client_id = req.client_id;
            m.client_host = req.client_host;
            m.last_heartbeat_ms = now;
            m.awaiting_join = Some(token);
            match self.state {
                GroupState::PreparingRebalance => {}
                GroupState::CompletingRebalance | GroupState::Stable if !changed && !is_leader => {
                    // A follower rejoining with nothing new gets the current generation.
                    let m = self.members.get_mut(&member_id).expect("present");
                    let t = m.awaiting_join.take().expect("just set");
                    answers.push(Answer::Join(t, self.join_response(&member_id, false)));
                    return answers;
                }
                _ => self.prepare_rebalance(
                    now,
                    t,
                    &mut answers,
                    RebalanceReason::MetadataChanged(member_id),
                ),
            }
        } else if req
            .group_instance_id
            .as_ref()
            .is_some_and(|i| self.static_members.contains_key(i))
        {
            return reply(ErrorCode::FencedInstanceId, &req.member_id);
        } else {
            return reply(ErrorCode::UnknownMemberId, &req.member_id);
        }
        self.maybe_complete_join(now, false, &mut answers);
        answers
    }

    /// A static member rejoined with a new process (empty member id): it takes over the old
    /// member's place. A Stable group with unchanged protocols does not rebalance (KIP-345).
    fn replace_static_member(
        &mut self,
        now: i64,
        token: Token,
        old_id: String,
        new_id: String,
        req: JoinRequest,
        t: &Timing,
    ) -> Vec<Answer> {
        let mut answers = Vec::new();
        let instance = req.group_instance_id.clone().expect("static member");
        let Some(mut member) = self.members.remove(&old_id) else {
            self.static_members.insert(instance, new_id.clone());
            self.add_member(now, token, new_id.clone(), req);
            self.prepare_rebalance(now, t, &mut answers, RebalanceReason::MemberJoined(new_id));
            self.maybe_complete_join(now, false, &mut answers);
            return answers;
        };
        // The old process is fenced: its waiting requests end.
        if let Some(old) = member.awaiting_join.take() {
            answers.push(Answer::Join(
                old,
                JoinResponse::error(ErrorCode::FencedInstanceId, old_id.clone()),
            ));
        }
        if let Some(old) = member.awaiting_sync.take() {
            answers.push(Answer::Sync(
                old,
                SyncResponse::error(ErrorCode::FencedInstanceId),
            ));
        }
        let changed = member.protocols != req.protocols;
        member.member_id = new_id.clone();
        member.protocols = req.protocols;
        member.session_timeout_ms = req.session_timeout_ms;
        member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        member.client_id = req.client_id;
        member.client_host = req.client_host;
        member.last_heartbeat_ms = now;
        self.members.insert(new_id.clone(), member);
        self.static_members.insert(instance, new_id.clone());
        if self.leader.as_deref() == Some(old_id.as_str()) {
            self.leader = Some(new_id.clone());
        }
        self.dirty = true;
        if self.state == GroupState::Stable && !changed {
            let is_leader = self.leader.as_deref() == Some(new_id.as_str());
            let mut resp = self.join_response(&new_id, is_leader);
            resp.skip_assignment = is_leader;
            answers.push(Answer::Join(token, resp));
            return answers;
        }
        self.members
            .get_mut(&new_id)
            .expect("inserted")
            .awaiting_join = Some(token);
        if self.state != GroupState::PreparingRebalance {
            let reason = if changed {
                RebalanceReason::MetadataChanged(new_id)
            } else {
                RebalanceReason::MemberJoined(new_id)
            };
            self.prepare_rebalance(now, t, &mut answers, reason);
        }
        self.maybe_complete_join(now, false, &mut answers);
        answers
    }

    fn add_member(&mut self, now: i64, token: Token, member_id: String, req: JoinRequest) {
        self.next_join_order += 1;
        // The first member of an empty group sets its protocol type (an empty group keeps the
        // last one, as Kafka's ListGroups shows it).
        let first = self.members.is_empty();
        self.members.insert(
            member_id.clone(),
            Member {
                member_id,
                group_instance_id: req.group_instance_id,
                client_id: req.client_id,
                client_host: req.client_host,
                session_timeout_ms: req.session_timeout_ms,
                rebalance_timeout_ms: req.rebalance_timeout_ms,
                protocol_type: req.protocol_type.clone(),
                protocols: req.protocols,
                assignment: Bytes::new(),
                last_heartbeat_ms: now,
                awaiting_join: Some(token),
                awaiting_sync: None,
                join_order: self.next_join_order,
            },
        );
        if first || self.protocol_type.is_none() {
            self.protocol_type = Some(req.protocol_type);
        }
    }

    fn max_rebalance_timeout(&self) -> i64 {
        self.members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0)
    }

    fn prepare_rebalance(
        &mut self,
        now: i64,
        t: &Timing,
        answers: &mut Vec<Answer>,
        reason: RebalanceReason,
    ) {
        if self.state == GroupState::CompletingRebalance {
            for m in self.members.values_mut() {
                m.assignment = Bytes::new();
                if let Some(token) = m.awaiting_sync.take() {
                    answers.push(Answer::Sync(
                        token,
                        SyncResponse::error(ErrorCode::RebalanceInProgress),
                    ));
                }
            }
        }
        if self.state == GroupState::PreparingRebalance {
            // A new member during the initial delay extends it, up to the rebalance timeout.
            if let Some(until) = self.initial_delay_until_ms {
                let cap = self.rebalance_deadline_ms;
                self.initial_delay_until_ms =
                    Some((until.max(now + t.initial_rebalance_delay_ms)).min(cap));
            }
            return;
        }
        let was_empty = self.state == GroupState::Empty;
        answers.push(Answer::Event(GroupEvent::RebalanceStarted {
            group: self.id.clone(),
            protocol: GroupProtocol::Classic,
            reason,
            generation: self.generation,
            members: self.members.len(),
        }));
        self.state = GroupState::PreparingRebalance;
        self.rebalance_deadline_ms = now + self.max_rebalance_timeout();
        self.initial_delay_until_ms = (was_empty && t.initial_rebalance_delay_ms > 0)
            .then(|| (now + t.initial_rebalance_delay_ms).min(self.rebalance_deadline_ms));
    }

    fn maybe_complete_join(&mut self, now: i64, force: bool, answers: &mut Vec<Answer>) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        if let Some(until) = self.initial_delay_until_ms {
            if now < until && now < self.rebalance_deadline_ms {
                return;
            }
            self.initial_delay_until_ms = None;
        }
        let all_joined = self.members.values().all(|m| m.awaiting_join.is_some())
            && self.pending_members.is_empty();
        if all_joined || force || now >= self.rebalance_deadline_ms {
            self.complete_join(now, answers);
        }
    }

    fn remove_member(&mut self, member_id: &str) -> Option<Member> {
        let m = self.members.remove(member_id)?;
        if let Some(instance) = &m.group_instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(member_id) {
                self.static_members.remove(instance);
            }
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = None;
        }
        self.dirty = true;
        Some(m)
    }

    fn complete_join(&mut self, now: i64, answers: &mut Vec<Answer>) {
        let laggards: Vec<String> = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for id in laggards {
            if let Some(m) = self.remove_member(&id) {
                if let Some(token) = m.awaiting_sync {
                    answers.push(Answer::Sync(
                        token,
                        SyncResponse::error(ErrorCode::UnknownMemberId),
                    ));
                }
            }
        }
        self.pending_members.clear();
        self.generation += 1;
        self.dirty = true;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.empty_since_ms = now;
            self.protocol = None;
            self.leader = None;
            answers.push(Answer::Event(GroupEvent::Emptied {
                group: self.id.clone(),
                protocol: GroupProtocol::Classic,
                generation: self.generation,
            }));
            return;
        }
        self.protocol = self.select_protocol();
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self
                .members
                .values()
                .min_by_key(|m| m.join_order)
                .map(|m| m.member_id.clone());
        }
        self.state = GroupState::CompletingRebalance;
        self.sync_deadline_ms = now + self.max_rebalance_timeout();
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let is_leader = self.leader.as_deref() == Some(id.as_str());
            let resp = self.join_response(&id, is_leader);
            let m = self.members.get_mut(&id).expect("listed above");
            m.last_heartbeat_ms = now;
            let token = m.awaiting_join.take().expect("only joined members remain");
            answers.push(Answer::Join(token, resp));
        }
    }

    fn join_response(&self, member_id: &str, with_members: bool) -> JoinResponse {
        let members = if with_members {
            let mut ms: Vec<&Member> = self.members.values().collect();
            ms.sort_by_key(|m| m.join_order);
            ms.iter()
                .map(|m| {
                    (
                        m.member_id.clone(),
                        m.group_instance_id.clone(),
                        m.metadata(self.protocol.as_deref()),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResponse {
            error: None,
            generation_id: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            skip_assignment: false,
            member_id: member_id.to_string(),
            members,
        }
    }

    /// The protocol every member supports that most members prefer (each votes for the
    /// first of its protocols that all support).
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(x, _)| x == *n))
            })
            .collect();
        let mut votes: BTreeMap<&String, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((name, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(&n)) {
                *votes.entry(name).or_default() += 1;
            }
        }
        candidates
            .iter()
            .max_by_key(|c| {
                (
                    votes.get(*c).copied().unwrap_or(0),
                    std::cmp::Reverse(candidates.iter().position(|x| x == *c)),
                )
            })
            .map(|c| (*c).clone())
    }

    pub fn sync(&mut self, now: i64, token: Token, req: SyncRequest) -> Vec<Answer> {
        let reply = |e: ErrorCode| vec![Answer::Sync(token, SyncResponse::error(e))];
        let Some(member) = self.members.get(&req.member_id) else {
            return reply(ErrorCode::UnknownMemberId);
        };
        if let Some(instance) = &req.group_instance_id {
            if self.static_members.get(instance) != Some(&req.member_id) {
                return reply(ErrorCode::FencedInstanceId);
            }
        }
        if req.generation_id != self.generation {
            return reply(ErrorCode::IllegalGeneration);
        }
        if req
            .protocol_type
            .as_ref()
            .is_some_and(|p| Some(p) != self.protocol_type.as_ref())
            || req
                .protocol_name
                .as_ref()
                .is_some_and(|p| Some(p) != self.protocol.as_ref())
        {
            return reply(ErrorCode::InconsistentGroupProtocol);
        }
        let _ = member;
        match self.state {
            GroupState::Empty | GroupState::Dead => reply(ErrorCode::UnknownMemberId),
            GroupState::PreparingRebalance => reply(ErrorCode::RebalanceInProgress),
            GroupState::Stable => {
                let m = self.members.get_mut(&req.member_id).expect("checked");
                m.last_heartbeat_ms = now;
                vec![Answer::Sync(token, self.sync_response(&req.member_id))]
            }
            GroupState::CompletingRebalance => {
                let mut answers = Vec::new();
                let m = self.members.get_mut(&req.member_id).expect("checked");
                m.last_heartbeat_ms = now;
                if let Some(old) = m.awaiting_sync.replace(token) {
                    answers.push(Answer::Sync(
                        old,
                        SyncResponse::error(ErrorCode::RebalanceInProgress),
                    ));
                }
                if self.leader.as_deref() == Some(req.member_id.as_str()) {
                    let given: HashMap<String, Bytes> = req.assignments.into_iter().collect();
                    for m in self.members.values_mut() {
                        m.assignment = given.get(&m.member_id).cloned().unwrap_or_default();
                    }
                    self.state = GroupState::Stable;
                    self.dirty = true;
                    answers.push(Answer::Event(GroupEvent::Stable {
                        group: self.id.clone(),
                        protocol: GroupProtocol::Classic,
                        generation: self.generation,
                        members: self.members.len(),
                    }));
                    let ids: Vec<String> = self.members.keys().cloned().collect();
                    for id in ids {
                        let resp = self.sync_response(&id);
                        if let Some(t) = self
                            .members
                            .get_mut(&id)
                            .and_then(|m| m.awaiting_sync.take())
                        {
                            answers.push(Answer::Sync(t, resp));
                        }
                    }
                }
                answers
            }
        }
    }

    fn sync_response(&self, member_id: &str) -> SyncResponse {
        SyncResponse {
            error: None,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            assignment: self
                .members
                .get(member_id)
                .map(|m| m.assignment.clone())
                .unwrap_or_default(),
        }
    }

    /// Checks a member is who it says it is in the current generation.
    fn check_member(
        &self,
        generation: i32,
        member_id: &str,
        instance: Option<&str>,
    ) -> Result<(), ErrorCode> {
        if let Some(instance) = instance {
            match self.static_members.get(instance) {
                Some(id) if id != member_id => return Err(ErrorCode::FencedInstanceId),
                _ => {}
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(ErrorCode::UnknownMemberId);
        }
        if generation != self.generation {
            return Err(ErrorCode::IllegalGeneration);
        }
        Ok(())
    }

    pub fn heartbeat(
        &mut self,
        now: i64,
        generation: i32,
        member_id: &str,
        instance: Option<&str>,
    ) -> Option<ErrorCode> {
        if matches!(self.state, GroupState::Empty | GroupState::Dead) {
            return Some(ErrorCode::UnknownMemberId);
        }
        if let Err(e) = self.check_member(generation, member_id, instance) {
            return Some(e);
        }
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_heartbeat_ms = now;
        }
        match self.state {
            GroupState::PreparingRebalance => Some(ErrorCode::RebalanceInProgress),
            _ => None,
        }
    }

    /// Removes members; returns each one's error (if any).
    pub fn leave(
        &mut self,
        now: i64,
        leaving: &[(String, Option<String>)],
        t: &Timing,
        answers: &mut Vec<Answer>,
    ) -> Vec<Option<ErrorCode>> {
        let mut results = Vec::with_capacity(leaving.len());
        let mut removed = Vec::new();
        for (member_id, instance) in leaving {
            let target = match instance {
                Some(i) => match self.static_members.get(i) {
                    Some(id) if member_id.is_empty() || id == member_id => Some(id.clone()),
                    Some(_) => {
                        results.push(Some(ErrorCode::FencedInstanceId));
                        continue;
                    }
                    None => None,
                },
                None => Some(member_id.clone()),
            };
            let Some(target) = target else {
                results.push(Some(ErrorCode::UnknownMemberId));
                continue;
            };
            if self.pending_members.remove(&target).is_some() {
                results.push(None);
                continue;
            }
            match self.remove_member(&target) {
                Some(m) => {
                    if let Some(token) = m.awaiting_join {
                        answers.push(Answer::Join(
                            token,
                            JoinResponse::error(ErrorCode::UnknownMemberId, target.clone()),
                        ));
                    }
                    if let Some(token) = m.awaiting_sync {
                        answers.push(Answer::Sync(
                            token,
                            SyncResponse::error(ErrorCode::UnknownMemberId),
                        ));
                    }
                    removed.push(target);
                    results.push(None);
                }
                None => results.push(Some(ErrorCode::UnknownMemberId)),
            }
        }
        if !removed.is_empty() {
            self.after_removal(now, t, answers, RebalanceReason::MemberLeft(removed));
        }
        results
    }

    fn after_removal(
        &mut self,
        now: i64,
        t: &Timing,
        answers: &mut Vec<Answer>,
        reason: RebalanceReason,
    ) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now, t, answers, reason);
                self.maybe_complete_join(now, false, answers);
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(now, false, answers),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// Expires sessions and deadlines.
    pub fn tick(&mut self, now: i64, t: &Timing, answers: &mut Vec<Answer>) {
        self.pending_members.retain(|_, expiry| *expiry > now);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none() && m.awaiting_sync.is_none())
            .filter(|m| now - m.last_heartbeat_ms > i64::from(m.session_timeout_ms))
            .map(|m| m.member_id.clone())
            .collect();
        for id in &expired {
            self.remove_member(id);
        }
        if !expired.is_empty() {
            self.after_removal(now, t, answers, RebalanceReason::SessionExpired(expired));
        }
        match self.state {
            GroupState::PreparingRebalance => self.maybe_complete_join(now, false, answers),
            GroupState::CompletingRebalance if now >= self.sync_deadline_ms => {
                // The leader never sent the assignment: members that did not sync are removed.
                let silent: Vec<String> = self
                    .members
                    .values()
                    .filter(|m| m.awaiting_sync.is_none())
                    .map(|m| m.member_id.clone())
                    .collect();
                for id in &silent {
                    self.remove_member(id);
                }
                self.prepare_rebalance(now, t, answers, RebalanceReason::SyncExpired(silent));
                self.maybe_complete_join(now, false, answers);
            }
            _ => {}
        }
    }

    /// Whether offsets may be committed by this member (see OffsetCommit).
    pub fn check_commit(
        &self,
        generation: i32,
        member_id: &str,
        instance: Option<&str>,
    ) -> Result<(), ErrorCode> {
        if generation < 0 && self.state == GroupState::Empty {
            return Ok(());
        }
        if self.state == GroupState::CompletingRebalance
            && self.members.contains_key(member_id)
            && generation == self.generation
        {
            return Err(ErrorCode::RebalanceInProgress);
        }
        if generation < 0 && member_id.is_empty() {
            // A manual-assignment commit into a group that has members.
            return Err(ErrorCode::UnknownMemberId);
        }
        self.check_member(generation, member_id, instance)
    }

    pub fn touch(&mut self, now: i64, member_id: &str) {
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_heartbeat_ms = now;
        }
    }

    /// The metadata to persist.
    pub fn persisted(&self) -> PersistedGroup {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        PersistedGroup {
            protocol_type: self.protocol_type.clone(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            members: if self.state == GroupState::Stable {
                self.members
                    .values()
                    .map(|m| PersistedMember {
                        member_id: m.member_id.clone(),
                        group_instance_id: m.group_instance_id.clone(),
                        client_id: m.client_id.clone(),
                        client_host: m.client_host.clone(),
                        session_timeout_ms: m.session_timeout_ms,
                        rebalance_timeout_ms: m.rebalance_timeout_ms,
                        subscription: b64.encode(m.metadata(self.protocol.as_deref())),
                        assignment: b64.encode(&m.assignment),
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    /// Restores persisted metadata (start-up): a group with members comes back Stable, and
    /// its members have one session timeout from `now` to heartbeat.
    pub fn restore(&mut self, now: i64, p: PersistedGroup) {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        self.generation = p.generation;
        self.protocol_type = p.protocol_type;
        self.protocol = p.protocol;
        self.leader = p.leader;
        self.members.clear();
        self.static_members.clear();
        for (i, m) in p.members.into_iter().enumerate() {
            let protocol = self.protocol.clone().unwrap_or_default();
            let subscription = Bytes::from(b64.decode(&m.subscription).unwrap_or_default());
            if let Some(instance) = &m.group_instance_id {
                self.static_members
                    .insert(instance.clone(), m.member_id.clone());
            }
            self.members.insert(
                m.member_id.clone(),
                Member {
                    member_id: m.member_id,
                    group_instance_id: m.group_instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocol_type: self.protocol_type.clone().unwrap_or_default(),
                    protocols: vec![(protocol, subscription)],
                    assignment: Bytes::from(b64.decode(&m.assignment).unwrap_or_default()),
                    last_heartbeat_ms: now,
                    awaiting_join: None,
                    awaiting_sync: None,
                    join_order: i as u64,
                },
            );
        }
        self.next_join_order = self.members.len() as u64;
        self.state = if self.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        self.empty_since_ms = now;
    }
}
