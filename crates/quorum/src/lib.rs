//! Cluster metadata as a sequence of records applied to a state machine.
//!
//! - [`record::MetadataRecord`]: the facts (a topic exists, a partition has these replicas and
//!   this leader epoch, a config was set, a topic was removed, an ACL was created).
//! - [`acl`]: ACL bindings and filters (Kafka's model), held by the image.
//! - [`quota`]: client quota entities and values (Kafka's model), held by the image.
//! - [`image::MetadataImage`]: the state machine; `apply` is the only way it changes.
//! - [`log::MetadataLog`]: where records are made durable before they are applied. On one node
//!   it is [`log::LocalMetadataLog`], a checksummed file; in a cluster the same records will go
//!   through a Raft log, and swapping the log is meant to be the only change.
//! - [`store::MetadataStore`]: log + image; `commit` appends, fsyncs, then applies.
//! - [`controller::ops`]: the typed operations a controller is asked to perform
//!   ([`controller::ops::ControllerOp`]) and its replies.
//! - [`controller::placement`] and [`controller::partition_change`]: the controller's pure
//!   rules for a cluster: which brokers get a new partition's replicas, and a partition's next
//!   replicas, ISR, leader and epochs after a broker event, an ISR change, an election or a
//!   reassignment. Not yet called by the single node, whose plans place everything on itself.
//!
//! Data flow: a request handler turns a request into a `ControllerOp` and submits it to the
//! controller (`strata_broker::controller`), which plans it against the image into records,
//! commits them through the store and answers; the broker then reacts to the new image (opens
//! or deletes partition logs).

pub mod acl;
pub mod controller;
pub mod image;
pub mod log;
pub mod quota;
pub mod raft;
pub mod record;
pub mod store;

pub use image::{
    BrokerRegistration, MetadataDelta, MetadataImage, PartitionImage, ScramCredentialImage,
    TopicImage,
};
pub use record::{BrokerEndpoint, ConfigResource, MetadataRecord};
pub use store::MetadataStore;
