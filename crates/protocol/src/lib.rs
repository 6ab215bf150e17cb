//! Strata's view of the Kafka wire protocol.
//!
//! The message structs themselves come from the pinned `kafka-protocol` crate; this crate adds
//! what a broker needs around them:
//!
//! - [`request`]: turns one frame (the bytes after the 4-byte length prefix) into a
//!   [`request::Request`] (header + decoded body), and encodes a response frame.
//! - [`api`]: the table of APIs and versions Strata serves, which ApiVersions advertises.
//! - [`batch`]: record-batch (magic 2) header parsing and validation without decoding records.
//! - [`topic`]: Kafka's topic-name rules.
//! - [`versioned`]: fits a response to the request's version (error codes the version knows,
//!   null error messages on success), as Kafka answers.
//! - [`ErrorCode`]: Kafka's error codes, one table named after Kafka's names.
//!
//! - [`alloc`]: the global allocator the binary uses, so that a hostile element count makes
//!   a reservation instead of aborting the process.
//!
//! Nothing here does I/O.

pub mod alloc;
pub mod api;
pub mod batch;
pub mod records;
pub mod request;
pub mod topic;
pub mod versioned;

/// Kafka's error codes (the wire contract), re-exported under the name the broker uses.
pub use kafka_protocol::ResponseError as ErrorCode;

/// Code 0 on the wire.
pub const NONE: i16 = 0;

/// The wire code of an optional error (`None` is 0).
pub fn code(error: Option<ErrorCode>) -> i16 {
    error.map_or(NONE, |e| e.code())
}
