//! Consumer-group coordination as a state machine fed by events, with I/O at the edges.
//!
//! ```text
//!   JoinGroup ─┐                          ┌─▶ Output::Join(token, response)   (maybe later)
//!   SyncGroup ─┤   GroupCoordinator       ├─▶ Output::Sync(token, response)   (maybe later)
//!   Heartbeat ─┼─▶ (groups, members,  ────┼─▶ Output::Persist(record)        (to __consumer_offsets)
//!   Leave ─────┤    offsets; no I/O)      ├─▶ Output::Event(rebalance started/stable) (to the log)
//!   tick(now) ─┘                          └─ immediate results for heartbeats, commits, admin
//! ```
//!
//! The caller (the broker) gives every JoinGroup/SyncGroup a [`Token`] and keeps the waiting
//! request under it; the machine answers a token when the rebalance allows, possibly during a
//! later event or `tick`. Time is always passed in (`now_ms`), so tests drive it directly.
//!
//! Principal types: [`GroupShard`] (the groups of one `__consumer_offsets` partition, loaded
//! and unloaded as a unit), [`GroupCoordinator`] (a shard's classic groups and offsets),
//! [`group::Group`] (one group's classic protocol state: Empty → PreparingRebalance →
//! CompletingRebalance → Stable), and [`record::GroupRecord`] (what is persisted: committed
//! offsets and group metadata).
//!
//! This crate never touches sockets, files or clocks.

pub mod consumer;
pub mod coordinator;
pub mod event;
pub mod group;
pub mod lag;
pub mod record;
pub mod shard;
pub mod txn;

pub use coordinator::{GroupConfig, GroupCoordinator, Output};
pub use event::{GroupEvent, GroupProtocol, RebalanceReason};
pub use group::{GroupState, JoinRequest, JoinResponse, SyncRequest, SyncResponse};
pub use record::{CommittedOffset, GroupRecord};
pub use shard::{GroupShard, Replayed};

/// Identifies a request waiting for an answer.
pub type Token = u64;

/// Kafka's String.hashCode-based partition of `__consumer_offsets` for a group id, so that
/// groups land where Kafka would put them.
pub fn offsets_partition_for(group_id: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for unit in group_id.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    // Kafka's Utils.abs: i32::MIN maps to 0.
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn java_hash_partitioning() {
        // Java: "my-group".hashCode() == -1906497762; abs % 50 == 12.
        assert_eq!(super::offsets_partition_for("my-group", 50), 12);
        assert_eq!(super::offsets_partition_for("", 50), 0);
    }
}
