//! Metadata records: the only way cluster metadata changes.
//!
//! Records are serialized as JSON objects tagged by `type` (see `docs/metadata-records.md`).
//! Adding a field must keep old records readable: new fields get `#[serde(default)]`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::acl::AclBinding;
use crate::quota::{QuotaEntity, QuotaValue};

/// What a config record applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name")]
pub enum ConfigResource {
    /// A topic, by name.
    Topic(String),
    /// A broker by node id, or the cluster-wide default when `None`.
    Broker(Option<i32>),
}

/// Where a broker serves clients: one of its advertised listeners.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerEndpoint {
    /// The listener's name (`PLAINTEXT`, `CLIENT`, ...): a client is given the endpoint of
    /// the listener it connected to.
    pub name: String,
    pub host: String,
    pub port: u16,
    pub security_protocol: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum MetadataRecord {
    /// The cluster was formatted with this id.
    Cluster { cluster_id: String },
    /// A topic was created.
    Topic { name: String, topic_id: Uuid },
    /// A partition's assignment and leadership. A later record for the same partition replaces
    /// the earlier one; `leader_epoch` grows with every leader change, `partition_epoch` with
    /// every change at all. During a reassignment (KIP-455) `replicas` holds the target and the
    /// replicas being removed, `adding_replicas` those of the target not yet in sync and
    /// `removing_replicas` those leaving once it completes (both absent otherwise).
    Partition {
        topic_id: Uuid,
        partition: i32,
        replicas: Vec<i32>,
        isr: Vec<i32>,
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        adding_replicas: Vec<i32>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        removing_replicas: Vec<i32>,
    },
    /// A config was set (`value` is `Some`) or removed (`None`).
    Config {
        resource: ConfigResource,
        name: String,
        value: Option<String>,
    },
    /// A topic and all its partitions were deleted.
    RemoveTopic { topic_id: Uuid },
    /// A block of producer ids was handed out: ids below `next_producer_id` are taken.
    ProducerIds { next_producer_id: i64 },
    /// A user's SCRAM credential for one mechanism (Kafka's wire number: 1 SCRAM-SHA-256,
    /// 2 SCRAM-SHA-512), set or replaced. Never the password: the salt and the two keys
    /// derived from the salted password, base64.
    UserScramCredential {
        name: String,
        mechanism: i8,
        salt: String,
        stored_key: String,
        server_key: String,
        iterations: i32,
    },
    /// A user's SCRAM credential for one mechanism was deleted.
    RemoveUserScramCredential { name: String, mechanism: i8 },
    /// An ACL was created; `id` names it for its removal.
    Acl { id: Uuid, acl: AclBinding },
    /// The ACL created with this id was removed.
    RemoveAcl { id: Uuid },
    /// A broker registered (at each start): its client endpoints and rack. A new
    /// registration replaces the broker's previous one.
    RegisterBroker {
        node_id: i32,
        endpoints: Vec<BrokerEndpoint>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rack: Option<String>,
        /// Which start of the broker process registered (a new one at every start).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        incarnation: Option<String>,
    },
    /// A registered broker was fenced (it stopped heartbeating: it leads nothing and is
    /// not given to clients) or unfenced (it heartbeats again).
    BrokerChange { node_id: i32, fenced: bool },
    /// A client quota of `entity` was set (`value` is `Some`) or removed (`None`).
    ClientQuota {
        entity: QuotaEntity,
        key: String,
        value: Option<QuotaValue>,
    },
}

impl MetadataRecord {
    /// A `Partition` record led by its first replica (-1, offline, when it has none), every
    /// replica in sync, both epochs `epoch`: how the controller creates a partition.
    pub fn partition_led_by_first(
        topic_id: Uuid,
        partition: i32,
        replicas: Vec<i32>,
        epoch: i32,
    ) -> MetadataRecord {
        MetadataRecord::Partition {
            topic_id,
            partition,
            leader: replicas.first().copied().unwrap_or(-1),
            isr: replicas.clone(),
            replicas,
            leader_epoch: epoch,
            partition_epoch: epoch,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        }
    }
}
