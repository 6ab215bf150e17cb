//! What the group state machines report about rebalances, for the edge to log.
//!
//! The machines do no I/O; they say when a group starts to rebalance and why, when a
//! generation is stable and when a group empties, and the broker logs each at INFO as Kafka's
//! group coordinator does. Classic groups report through [`crate::Output::Event`], KIP-848
//! groups through [`crate::consumer::ConsumerGroups::take_events`].

use std::fmt;

/// Which group protocol a group speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupProtocol {
    /// JoinGroup/SyncGroup (generation = the group's generation id).
    Classic,
    /// KIP-848 ConsumerGroupHeartbeat (generation = the group epoch).
    Consumer,
}

impl fmt::Display for GroupProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GroupProtocol::Classic => "classic",
            GroupProtocol::Consumer => "consumer",
        })
    }
}

/// Why a group rebalances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebalanceReason {
    MemberJoined(String),
    /// Members that left (LeaveGroup, or a heartbeat with epoch -1).
    MemberLeft(Vec<String>),
    /// Members whose session timed out without a heartbeat.
    SessionExpired(Vec<String>),
    /// A member rejoined with new subscription metadata or protocols (the classic leader's
    /// rejoin counts too: its client rejoins when the topics it watches change).
    MetadataChanged(String),
    /// Members that did not send SyncGroup before the rebalance timeout (classic).
    SyncExpired(Vec<String>),
    /// The subscribed topics' partitions changed (KIP-848).
    TopicsChanged,
}

impl fmt::Display for RebalanceReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RebalanceReason::MemberJoined(m) => write!(f, "member {m} joined"),
            RebalanceReason::MemberLeft(ms) => write!(f, "member {} left", ms.join(", ")),
            RebalanceReason::SessionExpired(ms) => {
                write!(f, "session of member {} expired", ms.join(", "))
            }
            RebalanceReason::MetadataChanged(m) => write!(f, "metadata of member {m} changed"),
            RebalanceReason::SyncExpired(ms) => {
                write!(f, "member {} did not sync in time", ms.join(", "))
            }
            RebalanceReason::TopicsChanged => f.write_str("subscribed topics changed"),
        }
    }
}

/// A rebalance milestone of one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupEvent {
    /// The group began to rebalance. `generation` is, for classic groups, the generation
    /// being replaced (as Kafka logs it), for KIP-848 groups the new group epoch; `members`
    /// counts the members after the change.
    RebalanceStarted {
        group: String,
        protocol: GroupProtocol,
        reason: RebalanceReason,
        generation: i32,
        members: usize,
    },
    /// Every member of `generation` has its assignment.
    Stable {
        group: String,
        protocol: GroupProtocol,
        generation: i32,
        members: usize,
    },
    /// The last member left; the group is empty at `generation`.
    Emptied {
        group: String,
        protocol: GroupProtocol,
        generation: i32,
    },
}
