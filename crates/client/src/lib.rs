//! A small async client for Kafka-protocol clusters (Strata or any Kafka-compatible broker).
//!
//! - [`Client`]: bootstrap, metadata, one connection per broker, retries; admin calls
//!   (topics, offsets, configs, log dirs, cluster, groups, ACLs, SCRAM users, client quotas) are methods on it.
//! - [`Producer`]: records written straight into per-partition batches (linger, batch size),
//!   up to `max_in_flight` pipelined Produce requests per broker, acks, compression, and
//!   the murmur2 partitioner the Java client and librdkafka (`murmur2_random`) use.
//! - [`Consumer`]: manual assignment or group subscription (classic protocol, range
//!   assignor), with fetches pipelined per leader.
//!
//! - [`Security`]: TLS (rustls) and SASL (PLAIN, SCRAM-SHA-256/512) from Kafka's client keys.
//!
//! Every request is sent at the highest version both this client and the broker speak, as
//! ApiVersions reports when a connection opens.

pub mod acls;
pub mod admin;
pub mod client;
pub mod conn;
pub mod consumer;
pub mod error;
pub mod group;
pub mod partitioner;
pub mod producer;
pub mod quotas;
pub mod records;
pub mod security;
pub mod users;

pub use acls::{Acl, AclFilter};
pub use admin::{ConfigOp, NewTopic, OffsetSpec, ResourceType, Tp};
pub use client::{Client, ClientConfig, Metadata};
pub use consumer::{Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, Seek};
pub use error::{Error, Result};
pub use kafka_protocol::records::Compression;
/// Kafka's error codes.
pub use kafka_protocol::ResponseError as ErrorCode;
pub use producer::{Producer, ProducerConfig, ProducerRecord, RecordMetadata};
pub use quotas::{QuotaAlteration, QuotaEntity, QuotaMatch};
pub use security::{SaslConfig, SaslMechanism, Security, SecurityProtocol};
pub use strata_sasl::scram::ScramMechanism;
pub use users::{ScramAlteration, ScramCredentialInfo};
