//! Partition replication as state machines without I/O (`docs/design/cluster.md` §4).
//!
//! - [`LeaderState`]: what the leader of a partition knows about its replicas in one leader
//!   epoch: the ISR it was given, each follower's position (unknown until the follower
//!   fetches in this epoch), its own durable end, and the high watermark computed from them
//!   (§4.4). It is the only place a leader's high watermark is computed.
//! - [`Role`]: what this node is for a partition: leader (with its `LeaderState`), follower of
//!   another node, or offline (no leader).
//!
//! Data flow: the broker's partition feeds `LeaderState` its own durable end after each
//! fsync (`on_leader_end`) and, later, each follower fetch (`on_follower_fetch`); either may
//! return a new high watermark, which the partition publishes to its waiters. A metadata
//! change that gives the partition a new leader epoch replaces the whole state, so no position
//! learnt in one epoch counts in the next.
//!
//! This crate never does I/O and never reads a clock: everything arrives as events, so it is
//! tested by unit tests and, later, by the simulation.

pub mod leader;

pub use leader::{LeaderState, Role};
