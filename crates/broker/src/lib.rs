//! The Strata broker: a tokio server speaking the Kafka protocol over local partition logs.
//!
//! Principal types and how data flows between them:
//!
//! - [`server`] binds the listeners and accepts connections; [`connection`] reads frames,
//!   decodes them (`strata_protocol`), and hands each request to [`handlers`], keeping
//!   responses in request order with a bounded number in flight.
//! - [`broker::Broker`] is the shared state: the [`config::BrokerConfig`], the published
//!   metadata image (`strata_quorum`: records applied to an image), the
//!   [`manager::PartitionManager`] that keeps one [`partition::Partition`] (a
//!   `strata_log::PartitionLog` plus leader epoch and high watermark) per hosted partition,
//!   and the fetch-session cache.
//! - [`controller`] is where metadata changes: handlers submit typed operations
//!   (`strata_quorum::controller::ops`) with [`broker::Broker::submit`]; the controller plans
//!   them against the image ([`controller::plan`]), commits their records in groups to the
//!   metadata log, and hands each new image with its delta to the
//!   [`metadata_publisher::MetadataPublisher`], the one door through which metadata reaches
//!   the broker: it opens or deletes the partitions the delta names
//!   ([`manager::PartitionManager::apply`]), loads or unloads coordinator shards, publishes
//!   the image and advances the applied offset, which `submit` waits for before answering.
//! - [`flusher`] performs group-commit fsyncs off the request path and advances high
//!   watermarks, which wake acks=all producers and long-polling fetches.
//! - [`groups`] and [`txn`] are the group and transaction coordinators, each sharded per
//!   partition of its internal topic ([`shards`]), loaded and unloaded a partition at a time.
//! - [`tls`] secures SSL listeners: Kafka's `ssl.*` settings, the rustls handshake (run by
//!   [`connection`] before its first request), the principal from a client certificate, and
//!   certificate reloading.
//! - [`auth`] holds the connection's principal and the single authorization check, which asks
//!   [`acl::Authorizer`] (Kafka's StandardAuthorizer over the image's ACLs, indexed).
//!
//! This crate must never trust the network: every decode error and bad batch is answered with
//! Kafka's error code or a closed connection, never a panic.

pub mod acl;
pub mod auth;
pub mod broker;
pub mod cleaner;
pub mod config;
pub mod connection;
pub mod connection_limits;
pub mod controller;
pub mod data_dir;
pub mod fd_limit;
pub mod fetch_session;
pub mod flusher;
pub mod format;
pub mod groups;
pub mod groupview;
pub mod handlers;
pub mod inter_broker;
pub mod isr;
pub mod log_dir;
pub mod log_throttle;
pub mod manager;
pub mod metadata_follower;
pub mod metadata_publisher;
pub mod metrics;
pub mod partition;
pub mod quota;
pub mod replica_fetcher;
pub mod sasl;
pub mod server;
pub mod shards;
#[cfg(test)]
mod sim_replication;
pub mod tls;
pub mod txn;

pub use broker::{Broker, StartError};
pub use config::BrokerConfig;
