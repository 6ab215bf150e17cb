//! Typed controller operations and their replies.
//!
//! Every change of cluster metadata is one [`ControllerOp`]. The controller plans it against
//! its current image (no I/O), commits the records the plan yields, and answers with the
//! matching [`ControllerReply`]: per item (topic, resource) a result, so that one request can
//! succeed for some items and fail for others, as Kafka's admin APIs do. Checks that need the
//! client's connection (authorization, duplicates within one request) happen at the broker
//! that received the request, before it submits the operation; what is submitted has passed
//! them.
//!
//! Errors carry Kafka's error code as the wire number ([`OpError::code`]), so this crate needs
//! no protocol dependency and the reply can travel between nodes as it is.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::acl::{AclBinding, AclBindingFilter};
use crate::quota::{QuotaEntity, QuotaValue};

/// An item the controller refused: Kafka's error code and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpError {
    /// Kafka's error code (e.g. 36 for TOPIC_ALREADY_EXISTS).
    pub code: i16,
    pub message: String,
}

impl OpError {
    pub fn new(code: i16, message: impl Into<String>) -> Self {
        OpError {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "error code {}: {}", self.code, self.message)
    }
}

impl std::error::Error for OpError {}

/// The result of one item of an operation.
pub type ItemResult<T> = Result<T, OpError>;

/// One topic to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTopic {
    pub name: String,
    /// -1: the broker default (`num.partitions`).
    pub num_partitions: i32,
    /// -1: the broker default (`default.replication.factor`).
    pub replication_factor: i16,
    /// Explicit replicas per partition; when non-empty, both counts above must be -1.
    #[serde(default)]
    pub assignments: Vec<ReplicaAssignment>,
    /// Topic config overrides.
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
}

impl NewTopic {
    /// A topic with the broker defaults and no overrides.
    pub fn named(name: impl Into<String>) -> Self {
        NewTopic {
            name: name.into(),
            num_partitions: -1,
            replication_factor: -1,
            assignments: Vec::new(),
            configs: BTreeMap::new(),
        }
    }
}

/// The replicas of one partition, first the preferred leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaAssignment {
    pub partition: i32,
    pub replicas: Vec<i32>,
}

/// CreateTopics (also auto-creation and the internal topics). Topics are planned in order,
/// each against the image with the previous ones created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTopics {
    pub topics: Vec<NewTopic>,
    /// Plan and answer, commit nothing.
    #[serde(default)]
    pub validate_only: bool,
}

/// A topic as created (or as it would be, when only validating).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedTopic {
    pub topic_id: Uuid,
    pub num_partitions: i32,
    pub replication_factor: i16,
    /// The topic's config overrides.
    pub configs: BTreeMap<String, String>,
}

/// One result per requested topic, in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTopicsReply {
    pub topics: Vec<ItemResult<CreatedTopic>>,
}

/// A topic named by name or by id (DeleteTopics v6+ allows either).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TopicRef {
    Name(String),
    Id(Uuid),
}

/// DeleteTopics. A topic named twice is deleted once and reported deleted twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteTopics {
    pub topics: Vec<TopicRef>,
}

/// A deleted topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedTopic {
    pub name: String,
    pub topic_id: Uuid,
}

/// One result per requested topic, in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteTopicsReply {
    pub topics: Vec<ItemResult<DeletedTopic>>,
}

/// Growing one topic to `count` partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewPartitions {
    pub name: String,
    pub count: i32,
    /// Replicas of each added partition, in partition order; `None`: placed by the controller.
    #[serde(default)]
    pub assignments: Option<Vec<Vec<i32>>>,
}

/// CreatePartitions. Each topic is planned against the image as it was before the operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatePartitions {
    pub topics: Vec<NewPartitions>,
    #[serde(default)]
    pub validate_only: bool,
}

/// One result per requested topic, in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatePartitionsReply {
    pub topics: Vec<ItemResult<()>>,
}

/// ElectLeaders (KIP-460): each partition's leader chosen again, the preferred replica
/// (`election_type` 0) or any active replica of an offline partition (1, unclean);
/// `partitions` `None` means every partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectLeaders {
    pub election_type: i8,
    pub partitions: Option<Vec<(String, Vec<i32>)>>,
}

impl ElectLeaders {
    pub const PREFERRED: i8 = 0;
    pub const UNCLEAN: i8 = 1;
}

/// Per topic (in request order, or name order for every partition), per partition: elected,
/// or why not (ELECTION_NOT_NEEDED, PREFERRED_LEADER_NOT_AVAILABLE, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectLeadersReply {
    pub topics: Vec<(String, Vec<ElectionResult>)>,
}

/// A partition's index, and `Ok` when its change was made.
pub type PartitionResult = (i32, ItemResult<()>);

/// One partition's election: its index, and `Ok` when its leader was chosen again.
pub type ElectionResult = PartitionResult;

/// A config resource as Kafka's admin APIs name it: resource type 2 is a topic (by name), 4
/// a broker (`""` for the cluster-wide default, else a node id). Other types are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigTarget {
    pub resource_type: i8,
    pub name: String,
}

impl ConfigTarget {
    /// Kafka's resource type of a topic.
    pub const TOPIC: i8 = 2;
    /// Kafka's resource type of a broker.
    pub const BROKER: i8 = 4;
}

/// AlterConfigs (legacy): each resource's whole set of overrides is replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterConfigs {
    pub resources: Vec<(ConfigTarget, BTreeMap<String, String>)>,
    #[serde(default)]
    pub validate_only: bool,
}

/// One IncrementalAlterConfigs operation on one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigOperation {
    pub name: String,
    /// Kafka's operation code: 0 SET, 1 DELETE, 2 APPEND, 3 SUBTRACT (the last two on list
    /// configs only).
    pub op: i8,
    pub value: Option<String>,
}

impl ConfigOperation {
    pub const SET: i8 = 0;
    pub const DELETE: i8 = 1;
    pub const APPEND: i8 = 2;
    pub const SUBTRACT: i8 = 3;
}

/// IncrementalAlterConfigs: each resource's overrides are changed key by key, starting from
/// the overrides in the image the operation is planned against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncrementalAlterConfigs {
    pub resources: Vec<(ConfigTarget, Vec<ConfigOperation>)>,
    #[serde(default)]
    pub validate_only: bool,
}

/// One result per resource, in request order (AlterConfigs and IncrementalAlterConfigs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterConfigsReply {
    pub resources: Vec<ItemResult<()>>,
}

/// A block of producer ids for one broker to hand out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocateProducerIds {
    pub broker_id: i32,
}

/// Producer ids `[first, first + size)`, never handed out before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerIdBlock {
    pub first: i64,
    pub size: i64,
}

/// A SCRAM credential to set, as AlterUserScramCredentials carries it: the client salted the
/// password; the plan derives StoredKey and ServerKey from it and records only those.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramUpsertion {
    pub name: String,
    /// Kafka's wire number: 1 SCRAM-SHA-256, 2 SCRAM-SHA-512.
    pub mechanism: i8,
    pub iterations: i32,
    pub salt: Vec<u8>,
    pub salted_password: Vec<u8>,
}

impl std::fmt::Debug for ScramUpsertion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramUpsertion")
            .field("name", &self.name)
            .field("mechanism", &self.mechanism)
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// A SCRAM credential to delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramDeletion {
    pub name: String,
    pub mechanism: i8,
}

/// AlterUserScramCredentials: credentials set and deleted, all-or-nothing per user (a user
/// named twice in one request is refused with DUPLICATE_RESOURCE).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterUserScramCredentials {
    pub deletions: Vec<ScramDeletion>,
    pub upsertions: Vec<ScramUpsertion>,
}

/// One result per user of the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterUserScramCredentialsReply {
    pub results: Vec<(String, ItemResult<()>)>,
}

/// CreateAcls: each binding is validated and created unless an equal one exists (then it is
/// answered as created, as Kafka does, and no record is written).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateAcls {
    pub acls: Vec<AclBinding>,
}

/// One result per binding, in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateAclsReply {
    pub results: Vec<ItemResult<()>>,
}

/// DeleteAcls: every binding some filter selects is removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteAcls {
    pub filters: Vec<AclBindingFilter>,
}

/// Per filter, in request order: the bindings it selected (all removed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteAclsReply {
    pub results: Vec<ItemResult<Vec<AclBinding>>>,
}

/// One entity's quota changes: per key, the new value or `None` to remove it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaAlteration {
    pub entity: QuotaEntity,
    pub ops: Vec<(String, Option<QuotaValue>)>,
}

/// AlterClientQuotas: each entity's changes are validated and applied all-or-nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterClientQuotas {
    pub entries: Vec<QuotaAlteration>,
    pub validate_only: bool,
}

/// One result per entity, in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterClientQuotasReply {
    pub results: Vec<ItemResult<()>>,
}

/// A broker announces itself at start-up: its client endpoints and rack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterBroker {
    pub node_id: i32,
    pub endpoints: Vec<crate::record::BrokerEndpoint>,
    pub rack: Option<String>,
    /// A new id at every start of the broker process.
    #[serde(default)]
    pub incarnation: Option<String>,
}

/// A registration was recorded (or was already the current one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterBrokerReply {}

/// A broker's heartbeat, every `broker.heartbeat.interval.ms`: the controller counts it
/// alive, and unfences it if it was fenced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerHeartbeat {
    pub node_id: i32,
}

/// Whether the broker is fenced after its heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerHeartbeatReply {
    pub fenced: bool,
}

/// The controller fences a broker that missed its heartbeats for
/// `broker.session.timeout.ms`: its leaderships move to another in-sync replica, or the
/// partition goes offline when none is left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceBroker {
    pub node_id: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceBrokerReply {
    /// Whether the broker was unfenced before (false: nothing changed).
    pub fenced_now: bool,
}

/// A partition's leader asks for a new ISR (KIP-497): a follower caught up and joins, or
/// one lagging for `replica.lag.time.max.ms` leaves. Checked against the leader and
/// partition epochs the leader holds (`partition_change::alter_partition`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterPartition {
    pub broker_id: i32,
    pub topic_id: uuid::Uuid,
    pub partition: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub new_isr: Vec<i32>,
}

/// The partition's ISR as the controller left it, or why it refused (FENCED_LEADER_EPOCH,
/// INVALID_UPDATE_VERSION, INELIGIBLE_REPLICA, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterPartitionReply {
    pub result: ItemResult<Vec<i32>>,
}

/// A partition and its target replicas (`None`: cancel the move in progress).
pub type ReassignmentTarget = (i32, Option<Vec<i32>>);

/// AlterPartitionReassignments (KIP-455): per topic (by name), per partition, the target
/// replica list, or `None` to cancel the reassignment in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterPartitionReassignments {
    pub topics: Vec<(String, Vec<ReassignmentTarget>)>,
    /// KIP-860: whether a target may have another number of replicas than the partition.
    #[serde(default = "yes")]
    pub allow_replication_factor_change: bool,
}

fn yes() -> bool {
    true
}

/// Per topic, per partition (in request order): accepted, or why not
/// (UNKNOWN_TOPIC_OR_PARTITION, INVALID_REPLICA_ASSIGNMENT, NO_REASSIGNMENT_IN_PROGRESS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterPartitionReassignmentsReply {
    pub topics: Vec<(String, Vec<PartitionResult>)>,
}

/// An operation whose reply is a known type, so that a submitter gets that type back.
pub trait Op: Into<ControllerOp> {
    type Reply;
    /// The reply of this kind of operation, `None` for another kind's.
    fn take_reply(reply: ControllerReply) -> Option<Self::Reply>;
}

/// Declares [`ControllerOp`] and [`ControllerReply`] with one variant each per operation
/// type (same name), and the conversions between them.
macro_rules! controller_ops {
    ($($(#[$doc:meta])* $op:ident => $reply:ident,)*) => {
        /// A change of cluster metadata, as submitted to the controller.
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(tag = "op")]
        pub enum ControllerOp {
            $($(#[$doc])* $op($op),)*
        }

        /// The controller's answer to a [`ControllerOp`], the variant of the same name.
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(tag = "op")]
        pub enum ControllerReply {
            $($op($reply),)*
        }

        $(
            impl From<$op> for ControllerOp {
                fn from(op: $op) -> Self {
                    ControllerOp::$op(op)
                }
            }

            impl Op for $op {
                type Reply = $reply;
                fn take_reply(reply: ControllerReply) -> Option<$reply> {
                    match reply {
                        ControllerReply::$op(r) => Some(r),
                        #[allow(unreachable_patterns)]
                        _ => None,
                    }
                }
            }
        )*
    };
}

controller_ops! {
    /// Create topics with their partitions and configs.
    CreateTopics => CreateTopicsReply,
    /// Delete topics and their partitions.
    DeleteTopics => DeleteTopicsReply,
    /// Add partitions to existing topics.
    CreatePartitions => CreatePartitionsReply,
    /// Replace the config overrides of topics or brokers.
    AlterConfigs => AlterConfigsReply,
    /// Change config overrides key by key.
    IncrementalAlterConfigs => AlterConfigsReply,
    /// Reserve a block of producer ids.
    AllocateProducerIds => ProducerIdBlock,
    /// Set and delete users' SCRAM credentials.
    AlterUserScramCredentials => AlterUserScramCredentialsReply,
    /// Create ACL bindings.
    CreateAcls => CreateAclsReply,
    /// Remove the ACL bindings that filters select.
    DeleteAcls => DeleteAclsReply,
    /// Set and remove client quotas.
    AlterClientQuotas => AlterClientQuotasReply,
    /// Choose partition leaders again (preferred or unclean).
    ElectLeaders => ElectLeadersReply,
    /// Record a broker's endpoints and rack.
    RegisterBroker => RegisterBrokerReply,
    /// A broker is alive (and unfenced if it was fenced).
    BrokerHeartbeat => BrokerHeartbeatReply,
    /// Fence a broker that missed its heartbeats.
    FenceBroker => FenceBrokerReply,
    /// Change a partition's ISR, asked by its leader.
    AlterPartition => AlterPartitionReply,
    /// Move partitions to other replicas, or cancel such moves.
    AlterPartitionReassignments => AlterPartitionReassignmentsReply,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_and_replies_round_trip_through_json() {
        let ops: Vec<ControllerOp> = vec![
            CreateTopics {
                topics: vec![NewTopic {
                    name: "orders".into(),
                    num_partitions: 3,
                    replication_factor: -1,
                    assignments: vec![ReplicaAssignment {
                        partition: 0,
                        replicas: vec![1],
                    }],
                    configs: [("retention.ms".to_string(), "1000".to_string())].into(),
                }],
                validate_only: true,
            }
            .into(),
            DeleteTopics {
                topics: vec![TopicRef::Name("a".into()), TopicRef::Id(Uuid::new_v4())],
            }
            .into(),
            CreatePartitions {
                topics: vec![NewPartitions {
                    name: "a".into(),
                    count: 4,
                    assignments: Some(vec![vec![1]]),
                }],
                validate_only: false,
            }
            .into(),
            AlterConfigs {
                resources: vec![(
                    ConfigTarget {
                        resource_type: 4,
                        name: String::new(),
                    },
                    BTreeMap::new(),
                )],
                validate_only: false,
            }
            .into(),
            IncrementalAlterConfigs {
                resources: vec![(
                    ConfigTarget {
                        resource_type: 2,
                        name: "a".into(),
                    },
                    vec![ConfigOperation {
                        name: "cleanup.policy".into(),
                        op: 2,
                        value: Some("compact".into()),
                    }],
                )],
                validate_only: false,
            }
            .into(),
            AllocateProducerIds { broker_id: 1 }.into(),
            AlterUserScramCredentials {
                deletions: vec![ScramDeletion {
                    name: "bob".into(),
                    mechanism: 2,
                }],
                upsertions: vec![ScramUpsertion {
                    name: "alice".into(),
                    mechanism: 1,
                    iterations: 4096,
                    salt: vec![1, 2],
                    salted_password: vec![3, 4],
                }],
            }
            .into(),
            CreateAcls {
                acls: vec![AclBinding {
                    resource_type: crate::acl::ResourceType::Group,
                    resource_name: "g".into(),
                    pattern_type: crate::acl::PatternType::Prefixed,
                    principal: "User:*".into(),
                    host: "*".into(),
                    operation: crate::acl::AclOperation::Read,
                    permission: crate::acl::AclPermission::Deny,
                }],
            }
            .into(),
            DeleteAcls {
                filters: vec![AclBindingFilter::any()],
            }
            .into(),
            AlterClientQuotas {
                entries: vec![QuotaAlteration {
                    entity: QuotaEntity {
                        user: Some(crate::quota::QuotaName::Default),
                        client_id: None,
                    },
                    ops: vec![
                        ("producer_byte_rate".into(), Some(QuotaValue(1024.0))),
                        ("consumer_byte_rate".into(), None),
                    ],
                }],
                validate_only: false,
            }
            .into(),
        ];
        for op in ops {
            let json = serde_json::to_string(&op).expect("encode");
            let back: ControllerOp = serde_json::from_str(&json).expect("decode");
            assert_eq!(back, op, "{json}");
        }
        let reply = ControllerReply::CreateTopics(CreateTopicsReply {
            topics: vec![
                Ok(CreatedTopic {
                    topic_id: Uuid::new_v4(),
                    num_partitions: 1,
                    replication_factor: 1,
                    configs: BTreeMap::new(),
                }),
                Err(OpError::new(36, "Topic 'a' already exists.")),
            ],
        });
        let json = serde_json::to_string(&reply).expect("encode");
        assert_eq!(
            serde_json::from_str::<ControllerReply>(&json).expect("decode"),
            reply
        );
    }

    #[test]
    fn a_reply_is_taken_only_by_its_own_kind() {
        let reply = ControllerReply::AllocateProducerIds(ProducerIdBlock {
            first: 1000,
            size: 1000,
        });
        assert_eq!(
            DeleteTopics::take_reply(reply.clone()),
            None::<DeleteTopicsReply>
        );
        assert_eq!(
            AllocateProducerIds::take_reply(reply),
            Some(ProducerIdBlock {
                first: 1000,
                size: 1000
            })
        );
    }
}
