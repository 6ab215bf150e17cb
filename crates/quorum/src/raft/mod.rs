//! The metadata log replicated by Raft (openraft 0.9; `docs/design/cluster.md` §2).
//!
//! Every metadata change is one Raft entry holding the records of one controller commit
//! ([`MetadataBatch`]); the state machine ([`state_machine::ImageMachine`]) applies them to the
//! [`MetadataImage`](crate::MetadataImage) and hands each new image to whoever serves it. The
//! metadata offset is the index of the last applied entry (`MetadataImage::offset`).
//!
//! - [`log_store::RaftLog`]: entries as checksummed frames in segment files, the vote, the
//!   committed and purged log ids (`<meta>/raft/`).
//! - [`state_machine::ImageMachine`]: the image, and snapshots that are the image written as
//!   records (`MetadataImage::to_records`).
//! - [`network`] and [`rpc`]: how voters reach each other (Kafka framing with a private API
//!   key); a quorum of one voter sends nothing.
//! - [`node`]: opening a node's quorum: importing a format-2 metadata log, forming a
//!   single-voter quorum and electing itself at once.
//!
//! All use of openraft sits in this module, so that a move to openraft 0.10 touches it alone.

pub mod log_store;
pub mod network;
pub mod node;
pub mod rpc;
pub mod state_machine;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::record::MetadataRecord;

/// The advertised controller endpoint of a voter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerNode {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for ControllerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// One Raft entry's application data: the records of one controller commit, applied
/// together.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetadataBatch {
    pub records: Vec<MetadataRecord>,
}

impl fmt::Display for MetadataBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} metadata records", self.records.len())
    }
}

/// What applying an entry answers: its index, the metadata offset at which it holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub index: u64,
}

openraft::declare_raft_types!(
    /// Strata's openraft types: node ids are Kafka node ids, entries carry metadata batches.
    pub TypeConfig:
        D = MetadataBatch,
        R = Applied,
        NodeId = u64,
        Node = ControllerNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft node of the metadata quorum.
pub type MetadataRaft = openraft::Raft<TypeConfig>;
/// A Raft log id: the term (with the leader that proposed it) and the index.
pub type LogId = openraft::LogId<u64>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StorageError = openraft::StorageError<u64>;
pub type StoredMembership = openraft::StoredMembership<u64, ControllerNode>;
pub type Vote = openraft::Vote<u64>;

/// A log id from its parts. Standard Raft: one leader per term (openraft's
/// `single-term-leader`), so that the term is a Kafka leader epoch.
pub fn log_id(term: u64, index: u64) -> LogId {
    openraft::LogId::new(openraft::CommittedLeaderId::new(term, 0), index)
}

/// An I/O error as openraft's storage error for `verb`ing `subject`.
fn io_error(
    subject: openraft::ErrorSubject<u64>,
    verb: openraft::ErrorVerb,
    error: &std::io::Error,
) -> StorageError {
    openraft::StorageIOError::new(subject, verb, openraft::AnyError::new(error)).into()
}

/// A message as an openraft storage error for `verb`ing `subject`.
fn storage_error(
    subject: openraft::ErrorSubject<u64>,
    verb: openraft::ErrorVerb,
    message: impl fmt::Display,
) -> StorageError {
    let error = std::io::Error::other(message.to_string());
    io_error(subject, verb, &error)
}
