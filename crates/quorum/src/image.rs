//! The metadata state machine: the current picture of topics, partitions and configs.
//!
//! [`MetadataImage::apply`] is the only way the image changes, and it reports what it touched
//! as a [`MetadataDelta`]: the broker acts on the delta (opens the partitions it names,
//! re-reads the configs it names) instead of comparing the whole image with what it holds, so
//! a change to one partition of a cluster with 10,000 costs one partition's work. Deltas of
//! consecutive records add up ([`MetadataDelta::merge`]), so a consumer that falls behind can
//! act once on everything it missed.
//!
//! Cloning an image must stay cheap, because every published change is a new image: each
//! topic sits behind an `Arc` (a change copies that topic alone, `Arc::make_mut`), as do the
//! ACLs and the client quotas.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use uuid::Uuid;

use crate::acl::AclBinding;
use crate::quota::QuotaEntity;
use crate::record::{BrokerEndpoint, ConfigResource, MetadataRecord};

#[derive(Debug, Clone, PartialEq)]
pub struct PartitionImage {
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// During a reassignment: the target's replicas not yet in sync.
    pub adding_replicas: Vec<i32>,
    /// During a reassignment: the replicas that leave once it completes.
    pub removing_replicas: Vec<i32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TopicImage {
    pub name: String,
    pub topic_id: Uuid,
    pub partitions: BTreeMap<i32, PartitionImage>,
    /// Topic-level overrides only; defaults come from the broker config.
    pub configs: BTreeMap<String, String>,
}

/// A user's SCRAM credential for one mechanism: what verifies a login, not the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredentialImage {
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
    pub iterations: i32,
}

impl std::fmt::Debug for ScramCredentialImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredentialImage")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// What applying records touched: the keys whose state may differ from the image before.
/// It may name more than changed (a record that rewrote a value with the same value), never
/// less. Partitions are named whatever happened to them (created, changed, or removed with
/// their topic); whether one exists is read from the image the delta leads to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataDelta {
    /// Everything may have changed (the first image, or one installed whole): whoever acts on
    /// the delta must reconcile with the image as a whole.
    pub reset: bool,
    /// Partitions created, changed, or removed with their topic.
    pub partitions: BTreeSet<(Uuid, i32)>,
    /// Topics created.
    pub topics_created: BTreeSet<Uuid>,
    /// Topics removed, with the name they had (the image after no longer knows it).
    pub topics_removed: BTreeMap<Uuid, String>,
    /// Topics whose config overrides changed.
    pub topic_configs: BTreeSet<Uuid>,
    /// Dynamic broker configs changed: of a node, or the cluster-wide default (`None`).
    pub broker_configs: BTreeSet<Option<i32>>,
    /// The cluster id was set.
    pub cluster: bool,
    /// The next producer id moved.
    pub producer_ids: bool,
    /// SCRAM credentials changed.
    pub scram: bool,
    /// ACL bindings changed.
    pub acls: bool,
    /// Client quotas changed.
    pub client_quotas: bool,
    /// Broker registrations changed.
    pub brokers: bool,
}

impl MetadataDelta {
    /// A delta that asks for a full reconcile.
    pub fn reset() -> Self {
        MetadataDelta {
            reset: true,
            ..MetadataDelta::default()
        }
    }

    /// Adds what `later` touched (records applied after this delta's).
    pub fn merge(&mut self, mut later: MetadataDelta) {
        self.reset |= later.reset;
        self.partitions.append(&mut later.partitions);
        self.topics_created.append(&mut later.topics_created);
        self.topics_removed.append(&mut later.topics_removed);
        self.topic_configs.append(&mut later.topic_configs);
        self.broker_configs.append(&mut later.broker_configs);
        self.cluster |= later.cluster;
        self.producer_ids |= later.producer_ids;
        self.scram |= later.scram;
        self.acls |= later.acls;
        self.client_quotas |= later.client_quotas;
        self.brokers |= later.brokers;
    }

    /// Whether nothing was touched.
    pub fn is_empty(&self) -> bool {
        *self == MetadataDelta::default()
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetadataImage {
    pub cluster_id: Option<String>,
    /// Each topic behind an `Arc`: cloning the image copies pointers, not partitions.
    topics: BTreeMap<Uuid, Arc<TopicImage>>,
    topic_ids_by_name: BTreeMap<String, Uuid>,
    /// Dynamic broker configs, keyed by node id (`None`: cluster-wide default).
    pub broker_configs: BTreeMap<Option<i32>, BTreeMap<String, String>>,
    /// How many records have been applied; the image's version.
    pub applied_records: u64,
    /// The metadata offset: the index of the last metadata-log entry applied (0 before
    /// any). Set by whoever applies entries (the Raft state machine), not by `apply`.
    pub offset: u64,
    /// Producer ids below this have been handed out.
    pub next_producer_id: i64,
    /// Ids of deleted topics: a partition directory of one of them may be removed, while a
    /// directory of an id the metadata never saw is kept aside (see the partition manager).
    removed_topic_ids: BTreeSet<Uuid>,
    /// SCRAM credentials by user, then mechanism (Kafka's wire number).
    scram: BTreeMap<String, BTreeMap<i8, ScramCredentialImage>>,
    /// The ACLs by id. Behind an `Arc` so that cloning the image (every publish) does not
    /// copy them, and so that the authorizer can tell by pointer whether they changed.
    acls: Arc<BTreeMap<Uuid, AclBinding>>,
    /// Client quotas by entity, then key; an entity without keys is not kept. Behind an `Arc`
    /// for the same reasons as the ACLs: the quota manager tells by pointer whether they
    /// changed.
    client_quotas: Arc<BTreeMap<QuotaEntity, BTreeMap<String, f64>>>,
    /// Registered brokers by node id.
    brokers: BTreeMap<i32, BrokerRegistration>,
}

/// A registered broker: where it serves clients, and its rack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRegistration {
    pub node_id: i32,
    pub endpoints: Vec<BrokerEndpoint>,
    pub rack: Option<String>,
    /// Fenced: it missed its heartbeats; it leads nothing until it heartbeats again.
    pub fenced: bool,
    /// Which start of the broker process registered.
    pub incarnation: Option<String>,
}

impl BrokerRegistration {
    /// The endpoint of `listener`, else the first one.
    pub fn endpoint(&self, listener: &str) -> Option<&BrokerEndpoint> {
        self.endpoints
            .iter()
            .find(|e| e.name == listener)
            .or_else(|| self.endpoints.first())
    }
}

impl MetadataImage {
    /// Applies one record and returns what it touched. Records that refer to something
    /// unknown are ignored with a warning (and touch nothing), so that a replayed log never
    /// fails to load.
    pub fn apply(&mut self, record: &MetadataRecord) -> MetadataDelta {
        let mut delta = MetadataDelta::default();
        self.apply_into(record, &mut delta);
        delta
    }

    /// Applies one record and adds what it touched to `delta`.
    pub fn apply_into(&mut self, record: &MetadataRecord, delta: &mut MetadataDelta) {
        self.applied_records += 1;
        match record {
            // The first id wins: a second Cluster record (two nodes that each proposed one
            // while forming a quorum) changes nothing.
            MetadataRecord::Cluster { cluster_id } => match &self.cluster_id {
                Some(id) if id != cluster_id => {
                    tracing::warn!(cluster_id = %id, ignored = %cluster_id, "a second cluster id record is ignored");
                }
                Some(_) => {}
                None => {
                    self.cluster_id = Some(cluster_id.clone());
                    delta.cluster = true;
                }
            },
            MetadataRecord::Topic { name, topic_id } => {
                self.topic_ids_by_name.insert(name.clone(), *topic_id);
                self.topics.insert(
                    *topic_id,
                    Arc::new(TopicImage {
                        name: name.clone(),
                        topic_id: *topic_id,
                        partitions: BTreeMap::new(),
                        configs: BTreeMap::new(),
                    }),
                );
                delta.topics_created.insert(*topic_id);
            }
            MetadataRecord::Partition {
                topic_id,
                partition,
                replicas,
                isr,
                leader,
                leader_epoch,
                partition_epoch,
                adding_replicas,
                removing_replicas,
            } => match self.topics.get_mut(topic_id) {
                Some(topic) => {
                    delta.partitions.insert((*topic_id, *partition));
                    Arc::make_mut(topic).partitions.insert(
                        *partition,
                        PartitionImage {
                            partition: *partition,
                            replicas: replicas.clone(),
                            isr: isr.clone(),
                            leader: *leader,
                            leader_epoch: *leader_epoch,
                            partition_epoch: *partition_epoch,
                            adding_replicas: adding_replicas.clone(),
                            removing_replicas: removing_replicas.clone(),
                        },
                    );
                }
                None => tracing::warn!(%topic_id, partition, "partition record for unknown topic"),
            },
            MetadataRecord::Config {
                resource,
                name,
                value,
            } => {
                let configs = match resource {
                    ConfigResource::Topic(topic) => {
                        let Some(id) = self.topic_ids_by_name.get(topic) else {
                            tracing::warn!(topic, "config record for unknown topic");
                            return;
                        };
                        delta.topic_configs.insert(*id);
                        &mut Arc::make_mut(
                            self.topics
                                .get_mut(id)
                                .expect("name index and topics agree"),
                        )
                        .configs
                    }
                    ConfigResource::Broker(node) => {
                        delta.broker_configs.insert(*node);
                        self.broker_configs.entry(*node).or_default()
                    }
                };
                match value {
                    Some(v) => configs.insert(name.clone(), v.clone()),
                    None => configs.remove(name),
                };
                // A node left without dynamic configs is not kept (as a snapshot would not
                // write it).
                if let ConfigResource::Broker(node) = resource {
                    if self.broker_configs.get(node).is_some_and(|c| c.is_empty()) {
                        self.broker_configs.remove(node);
                    }
                }
            }
            MetadataRecord::ProducerIds { next_producer_id } => {
                self.next_producer_id = self.next_producer_id.max(*next_producer_id);
                delta.producer_ids = true;
            }
            MetadataRecord::RemoveTopic { topic_id } => {
                if let Some(topic) = self.topics.remove(topic_id) {
                    self.topic_ids_by_name.remove(&topic.name);
                    delta
                        .partitions
                        .extend(topic.partitions.keys().map(|p| (*topic_id, *p)));
                    delta.topics_removed.insert(*topic_id, topic.name.clone());
                }
                self.removed_topic_ids.insert(*topic_id);
            }
            MetadataRecord::UserScramCredential {
                name,
                mechanism,
                salt,
                stored_key,
                server_key,
                iterations,
            } => {
                let decoded = (
                    B64.decode(salt),
                    B64.decode(stored_key),
                    B64.decode(server_key),
                );
                let (Ok(salt), Ok(stored_key), Ok(server_key)) = decoded else {
                    tracing::warn!(user = %name, mechanism, "SCRAM credential record with keys that are not base64; ignored");
                    return;
                };
                delta.scram = true;
                self.scram.entry(name.clone()).or_default().insert(
                    *mechanism,
                    ScramCredentialImage {
                        salt,
                        stored_key,
                        server_key,
                        iterations: *iterations,
                    },
                );
            }
            MetadataRecord::RemoveUserScramCredential { name, mechanism } => {
                delta.scram = true;
                if let Some(user) = self.scram.get_mut(name) {
                    user.remove(mechanism);
                    if user.is_empty() {
                        self.scram.remove(name);
                    }
                }
            }
            MetadataRecord::Acl { id, acl } => {
                delta.acls = true;
                Arc::make_mut(&mut self.acls).insert(*id, acl.clone());
            }
            MetadataRecord::RemoveAcl { id } => {
                delta.acls = true;
                if Arc::make_mut(&mut self.acls).remove(id).is_none() {
                    tracing::warn!(%id, "removal of an unknown ACL");
                }
            }
            MetadataRecord::RegisterBroker {
                node_id,
                endpoints,
                rack,
                incarnation,
            } => {
                delta.brokers = true;
                // A broker registering again stays fenced until it heartbeats.
                let fenced = self.brokers.get(node_id).is_some_and(|b| b.fenced);
                self.brokers.insert(
                    *node_id,
                    BrokerRegistration {
                        node_id: *node_id,
                        endpoints: endpoints.clone(),
                        rack: rack.clone(),
                        fenced,
                        incarnation: incarnation.clone(),
                    },
                );
            }
            MetadataRecord::BrokerChange { node_id, fenced } => {
                match self.brokers.get_mut(node_id) {
                    Some(b) => {
                        delta.brokers = true;
                        b.fenced = *fenced;
                    }
                    None => tracing::warn!(node_id, "change of an unregistered broker"),
                }
            }
            MetadataRecord::ClientQuota { entity, key, value } => {
                delta.client_quotas = true;
                let quotas = Arc::make_mut(&mut self.client_quotas);
                match value {
                    Some(v) => {
                        quotas
                            .entry(entity.clone())
                            .or_default()
                            .insert(key.clone(), v.0);
                    }
                    None => {
                        if let Some(keys) = quotas.get_mut(entity) {
                            keys.remove(key);
                            if keys.is_empty() {
                                quotas.remove(entity);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Registered brokers in node id order.
    pub fn brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers.values()
    }

    /// The registration of broker `node_id`.
    pub fn broker(&self, node_id: i32) -> Option<&BrokerRegistration> {
        self.brokers.get(&node_id)
    }

    /// `user`'s SCRAM credential for `mechanism` (Kafka's wire number).
    pub fn scram_credential(&self, user: &str, mechanism: i8) -> Option<&ScramCredentialImage> {
        self.scram.get(user).and_then(|m| m.get(&mechanism))
    }

    /// Users with at least one SCRAM credential, in name order, with their credentials by
    /// mechanism.
    pub fn scram_users(
        &self,
    ) -> impl Iterator<Item = (&String, &BTreeMap<i8, ScramCredentialImage>)> {
        self.scram.iter()
    }

    /// The ACLs by id; the same `Arc` until an ACL record is applied.
    pub fn acls(&self) -> &Arc<BTreeMap<Uuid, AclBinding>> {
        &self.acls
    }

    /// The client quotas by entity, then key; the same `Arc` until a quota record is applied.
    pub fn client_quotas(&self) -> &Arc<BTreeMap<QuotaEntity, BTreeMap<String, f64>>> {
        &self.client_quotas
    }

    pub fn topic_by_name(&self, name: &str) -> Option<&TopicImage> {
        self.topic_ids_by_name
            .get(name)
            .and_then(|id| self.topics.get(id))
            .map(|t| &**t)
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<&TopicImage> {
        self.topics.get(id).map(|t| &**t)
    }

    /// The partition `partition` of topic `id`.
    pub fn partition(&self, id: &Uuid, partition: i32) -> Option<&PartitionImage> {
        self.topics.get(id)?.partitions.get(&partition)
    }

    /// Topics in name order.
    pub fn topics(&self) -> impl Iterator<Item = &TopicImage> {
        self.topic_ids_by_name
            .values()
            .filter_map(|id| self.topics.get(id))
            .map(|t| &**t)
    }

    /// Whether a topic with this id existed and was deleted.
    pub fn was_removed(&self, id: &Uuid) -> bool {
        self.removed_topic_ids.contains(id)
    }

    pub fn topic_count(&self) -> usize {
        self.topics.len()
    }

    /// The image written as records (a snapshot, as KRaft writes one): applying them in order
    /// to an empty image gives an image equal to this one but for the counters of how it was
    /// built (`applied_records`, `offset`). The cluster id first, then broker configs, topics
    /// with their partitions and configs, removed topic ids, the producer id block, SCRAM
    /// credentials, ACLs and client quotas.
    pub fn to_records(&self) -> Vec<MetadataRecord> {
        let mut records = Vec::new();
        if let Some(cluster_id) = &self.cluster_id {
            records.push(MetadataRecord::Cluster {
                cluster_id: cluster_id.clone(),
            });
        }
        for b in self.brokers.values() {
            records.push(MetadataRecord::RegisterBroker {
                node_id: b.node_id,
                endpoints: b.endpoints.clone(),
                rack: b.rack.clone(),
                incarnation: b.incarnation.clone(),
            });
            if b.fenced {
                records.push(MetadataRecord::BrokerChange {
                    node_id: b.node_id,
                    fenced: true,
                });
            }
        }
        for (node, configs) in &self.broker_configs {
            records.extend(configs.iter().map(|(name, value)| MetadataRecord::Config {
                resource: ConfigResource::Broker(*node),
                name: name.clone(),
                value: Some(value.clone()),
            }));
        }
        for topic in self.topics.values() {
            records.push(MetadataRecord::Topic {
                name: topic.name.clone(),
                topic_id: topic.topic_id,
            });
            records.extend(
                topic
                    .partitions
                    .values()
                    .map(|p| MetadataRecord::Partition {
                        topic_id: topic.topic_id,
                        partition: p.partition,
                        replicas: p.replicas.clone(),
                        isr: p.isr.clone(),
                        leader: p.leader,
                        leader_epoch: p.leader_epoch,
                        partition_epoch: p.partition_epoch,
                        adding_replicas: p.adding_replicas.clone(),
                        removing_replicas: p.removing_replicas.clone(),
                    }),
            );
            records.extend(
                topic
                    .configs
                    .iter()
                    .map(|(name, value)| MetadataRecord::Config {
                        resource: ConfigResource::Topic(topic.name.clone()),
                        name: name.clone(),
                        value: Some(value.clone()),
                    }),
            );
        }
        records.extend(
            self.removed_topic_ids
                .iter()
                .map(|id| MetadataRecord::RemoveTopic { topic_id: *id }),
        );
        if self.next_producer_id != 0 {
            records.push(MetadataRecord::ProducerIds {
                next_producer_id: self.next_producer_id,
            });
        }
        for (name, mechanisms) in &self.scram {
            records.extend(mechanisms.iter().map(|(mechanism, c)| {
                MetadataRecord::UserScramCredential {
                    name: name.clone(),
                    mechanism: *mechanism,
                    salt: B64.encode(&c.salt),
                    stored_key: B64.encode(&c.stored_key),
                    server_key: B64.encode(&c.server_key),
                    iterations: c.iterations,
                }
            }));
        }
        records.extend(self.acls.iter().map(|(id, acl)| MetadataRecord::Acl {
            id: *id,
            acl: acl.clone(),
        }));
        for (entity, keys) in self.client_quotas.iter() {
            records.extend(keys.iter().map(|(key, value)| MetadataRecord::ClientQuota {
                entity: entity.clone(),
                key: key.clone(),
                value: Some(crate::quota::QuotaValue(*value)),
            }));
        }
        records
    }

    /// An image built from `records` (a snapshot's), applied in order to an empty image.
    pub fn from_records<'a>(records: impl IntoIterator<Item = &'a MetadataRecord>) -> Self {
        let mut image = MetadataImage::default();
        for record in records {
            image.apply(record);
        }
        image
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str, id: Uuid) -> MetadataRecord {
        MetadataRecord::Topic {
            name: name.into(),
            topic_id: id,
        }
    }

    fn partition(id: Uuid, p: i32, epoch: i32) -> MetadataRecord {
        MetadataRecord::Partition {
            topic_id: id,
            partition: p,
            replicas: vec![1],
            isr: vec![1],
            leader: 1,
            leader_epoch: epoch,
            partition_epoch: epoch,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        }
    }

    #[test]
    fn records_build_and_remove_topics() {
        let id = Uuid::new_v4();
        let mut image = MetadataImage::default();
        image.apply(&topic("orders", id));
        image.apply(&partition(id, 0, 0));
        image.apply(&partition(id, 1, 0));
        image.apply(&partition(id, 0, 1));
        image.apply(&MetadataRecord::Config {
            resource: ConfigResource::Topic("orders".into()),
            name: "retention.ms".into(),
            value: Some("1000".into()),
        });
        let t = image.topic_by_name("orders").expect("created");
        assert_eq!(t.partitions.len(), 2);
        assert_eq!(t.partitions[&0].leader_epoch, 1);
        assert_eq!(t.configs["retention.ms"], "1000");
        image.apply(&MetadataRecord::RemoveTopic { topic_id: id });
        assert!(image.topic_by_name("orders").is_none());
        assert_eq!(image.topic_count(), 0);
        assert!(image.was_removed(&id));
        assert!(!image.was_removed(&Uuid::new_v4()));
    }

    #[test]
    fn scram_credentials_are_set_replaced_and_removed() {
        let mut image = MetadataImage::default();
        let set = |mechanism: i8, iterations: i32| MetadataRecord::UserScramCredential {
            name: "alice".into(),
            mechanism,
            salt: "c2FsdA==".into(),
            stored_key: "AQID".into(),
            server_key: "BAUG".into(),
            iterations,
        };
        image.apply(&set(1, 4096));
        image.apply(&set(2, 8192));
        image.apply(&set(1, 5000));
        let c = image.scram_credential("alice", 1).expect("set");
        assert_eq!((c.iterations, c.salt.as_slice()), (5000, &b"salt"[..]));
        assert_eq!(c.stored_key, vec![1, 2, 3]);
        assert_eq!(image.scram_users().count(), 1);
        image.apply(&MetadataRecord::RemoveUserScramCredential {
            name: "alice".into(),
            mechanism: 1,
        });
        assert!(image.scram_credential("alice", 1).is_none());
        assert!(image.scram_credential("alice", 2).is_some());
        image.apply(&MetadataRecord::RemoveUserScramCredential {
            name: "alice".into(),
            mechanism: 2,
        });
        assert_eq!(image.scram_users().count(), 0);
        // A record that is not base64 is skipped, not fatal.
        image.apply(&MetadataRecord::UserScramCredential {
            name: "bob".into(),
            mechanism: 1,
            salt: "!!".into(),
            stored_key: String::new(),
            server_key: String::new(),
            iterations: 4096,
        });
        assert!(image.scram_credential("bob", 1).is_none());
        assert!(!format!("{:?}", image).contains("[1, 2, 3]"));
    }

    #[test]
    fn acl_records_add_and_remove_bindings() {
        use crate::acl::{AclOperation, AclPermission, PatternType, ResourceType};
        let mut image = MetadataImage::default();
        let before = image.acls().clone();
        let id = Uuid::new_v4();
        let acl = AclBinding {
            resource_type: ResourceType::Topic,
            resource_name: "orders".into(),
            pattern_type: PatternType::Literal,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: AclOperation::Write,
            permission: AclPermission::Allow,
        };
        let record = MetadataRecord::Acl {
            id,
            acl: acl.clone(),
        };
        let json = serde_json::to_string(&record).expect("encode");
        assert_eq!(
            serde_json::from_str::<MetadataRecord>(&json).expect("decode"),
            record
        );
        image.apply(&record);
        assert_eq!(image.acls().get(&id), Some(&acl));
        assert!(!Arc::ptr_eq(&before, image.acls()), "a change is a new map");
        let cloned = image.clone();
        assert!(
            Arc::ptr_eq(cloned.acls(), image.acls()),
            "cloning shares the map"
        );
        image.apply(&MetadataRecord::RemoveAcl { id });
        image.apply(&MetadataRecord::RemoveAcl { id });
        assert!(image.acls().is_empty());
    }

    #[test]
    fn client_quota_records_set_replace_and_remove() {
        use crate::quota::{QuotaName, QuotaValue};
        let mut image = MetadataImage::default();
        let entity = QuotaEntity {
            user: Some(QuotaName::Default),
            client_id: Some(QuotaName::Name("app".into())),
        };
        let set = |key: &str, value: Option<f64>| MetadataRecord::ClientQuota {
            entity: entity.clone(),
            key: key.into(),
            value: value.map(QuotaValue),
        };
        let record = set("producer_byte_rate", Some(1024.0));
        let json = serde_json::to_string(&record).expect("encode");
        assert_eq!(
            serde_json::from_str::<MetadataRecord>(&json).expect("decode"),
            record
        );
        image.apply(&record);
        image.apply(&set("consumer_byte_rate", Some(2048.0)));
        image.apply(&set("producer_byte_rate", Some(4096.0)));
        assert_eq!(image.client_quotas()[&entity]["producer_byte_rate"], 4096.0);
        image.apply(&set("producer_byte_rate", None));
        image.apply(&set("consumer_byte_rate", None));
        image.apply(&set("consumer_byte_rate", None));
        assert!(
            image.client_quotas().is_empty(),
            "an entity without keys is gone"
        );
    }

    /// A small deterministic generator, so a failing case can be replayed from its seed.
    pub(crate) struct Rng(u64);

    impl Rng {
        pub(crate) fn new(seed: u64) -> Self {
            Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }

        pub(crate) fn below(&mut self, n: u64) -> u64 {
            // xorshift64*
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
        }
    }

    /// A record chosen among those that exercise every kind of change: topics created and
    /// removed (names reused), partitions created and moved, configs set and removed, and
    /// references to what does not exist.
    pub(crate) fn random_record(rng: &mut Rng, image: &MetadataImage) -> MetadataRecord {
        const NAMES: [&str; 3] = ["a", "b", "c"];
        let existing: Vec<&TopicImage> = image.topics().collect();
        let some_topic = |rng: &mut Rng| -> Option<&TopicImage> {
            (!existing.is_empty()).then(|| existing[rng.below(existing.len() as u64) as usize])
        };
        let unknown = Uuid::from_u128(u128::from(rng.below(1 << 40)) << 64);
        // A name is created only while free, as the controller does (a name is deleted and
        // created again under a new id).
        let free = NAMES[rng.below(3) as usize];
        match rng.below(10) {
            0 | 1 if image.topic_by_name(free).is_none() => MetadataRecord::Topic {
                name: free.into(),
                topic_id: Uuid::from_u128(u128::from(rng.below(u64::MAX)) + 1),
            },
            0..=4 => {
                let topic_id = some_topic(rng).map_or(unknown, |t| t.topic_id);
                let replicas: Vec<i32> = (1..=3).filter(|_| rng.below(2) == 0).collect();
                let (partition, epoch) = (rng.below(4) as i32, rng.below(5) as i32);
                MetadataRecord::partition_led_by_first(topic_id, partition, replicas, epoch)
            }
            5 | 6 => {
                let resource = match rng.below(3) {
                    0 => ConfigResource::Broker([None, Some(1), Some(2)][rng.below(3) as usize]),
                    _ => ConfigResource::Topic(NAMES[rng.below(3) as usize].into()),
                };
                let name =
                    ["retention.ms", "segment.bytes", "cleanup.policy"][rng.below(3) as usize];
                let value = match name {
                    "retention.ms" => ["1000", "60000"][rng.below(2) as usize],
                    "segment.bytes" => ["1048576", "2097152"][rng.below(2) as usize],
                    _ => ["delete", "compact"][rng.below(2) as usize],
                };
                MetadataRecord::Config {
                    resource,
                    name: name.into(),
                    value: (rng.below(3) != 0).then(|| value.into()),
                }
            }
            7 => MetadataRecord::RemoveTopic {
                topic_id: some_topic(rng).map_or(unknown, |t| t.topic_id),
            },
            8 => MetadataRecord::ProducerIds {
                next_producer_id: rng.below(10_000) as i64,
            },
            _ => MetadataRecord::Cluster {
                cluster_id: format!("c{}", rng.below(2)),
            },
        }
    }

    /// Checks that `delta` names everything that differs between `before` and `after`.
    fn assert_delta_covers(before: &MetadataImage, after: &MetadataImage, delta: &MetadataDelta) {
        let ids: BTreeSet<Uuid> = before
            .topics
            .keys()
            .chain(after.topics.keys())
            .copied()
            .collect();
        for id in ids {
            let (old, new) = (before.topic_by_id(&id), after.topic_by_id(&id));
            if old == new {
                continue;
            }
            match (old, new) {
                (None, Some(_)) => assert!(delta.topics_created.contains(&id), "created {id}"),
                (Some(t), None) => {
                    assert_eq!(delta.topics_removed.get(&id), Some(&t.name), "removed {id}")
                }
                (Some(o), Some(n)) if o.configs != n.configs => {
                    assert!(delta.topic_configs.contains(&id), "configs of {id}")
                }
                _ => {}
            }
            let empty = BTreeMap::new();
            let old_p = old.map_or(&empty, |t| &t.partitions);
            let new_p = new.map_or(&empty, |t| &t.partitions);
            for p in old_p.keys().chain(new_p.keys()) {
                if old_p.get(p) != new_p.get(p) {
                    assert!(delta.partitions.contains(&(id, *p)), "partition {id}/{p}");
                }
            }
        }
        let nodes: BTreeSet<Option<i32>> = before
            .broker_configs
            .keys()
            .chain(after.broker_configs.keys())
            .copied()
            .collect();
        for node in nodes {
            if before.broker_configs.get(&node) != after.broker_configs.get(&node) {
                assert!(delta.broker_configs.contains(&node), "broker {node:?}");
            }
        }
        assert!(before.cluster_id == after.cluster_id || delta.cluster);
        assert!(before.next_producer_id == after.next_producer_id || delta.producer_ids);
        assert!(before.scram == after.scram || delta.scram);
        assert!(before.acls == after.acls || delta.acls);
        assert!(before.client_quotas == after.client_quotas || delta.client_quotas);
        assert!(before.brokers == after.brokers || delta.brokers);
    }

    /// Over random record sequences, each record's delta and the merged delta of a run of
    /// records name every change; topics a record did not touch stay shared with the
    /// previous image.
    #[test]
    fn deltas_name_every_change() {
        for seed in 0..200 {
            let mut rng = Rng::new(seed);
            let mut image = MetadataImage::default();
            let mut start = image.clone();
            let mut merged = MetadataDelta::default();
            for step in 0..60 {
                let record = random_record(&mut rng, &image);
                let before = image.clone();
                let delta = image.apply(&record);
                assert_delta_covers(&before, &image, &delta);
                for (id, topic) in &before.topics {
                    let touched = delta.partitions.iter().any(|(t, _)| t == id)
                        || delta.topic_configs.contains(id)
                        || delta.topics_created.contains(id)
                        || delta.topics_removed.contains_key(id);
                    if let (false, Some(now)) = (touched, image.topics.get(id)) {
                        assert!(
                            Arc::ptr_eq(topic, now),
                            "seed {seed}: untouched topic copied"
                        );
                    }
                }
                merged.merge(delta);
                if step % 7 == 6 {
                    assert_delta_covers(&start, &image, &merged);
                    start = image.clone();
                    merged = MetadataDelta::default();
                }
            }
        }
    }

    /// A record of the kinds `random_record` leaves out: SCRAM credentials, ACLs and client
    /// quotas, set and removed.
    fn random_security_record(rng: &mut Rng) -> MetadataRecord {
        use crate::acl::{AclOperation, AclPermission, PatternType, ResourceType};
        use crate::quota::{QuotaName, QuotaValue};
        let user = ["alice", "bob"][rng.below(2) as usize].to_string();
        match rng.below(6) {
            0 => MetadataRecord::UserScramCredential {
                name: user,
                mechanism: 1 + rng.below(2) as i8,
                salt: B64.encode(rng.below(1000).to_be_bytes()),
                stored_key: B64.encode(rng.below(1000).to_be_bytes()),
                server_key: B64.encode(rng.below(1000).to_be_bytes()),
                iterations: 4096 + rng.below(3) as i32,
            },
            1 => MetadataRecord::RemoveUserScramCredential {
                name: user,
                mechanism: 1 + rng.below(2) as i8,
            },
            2 => MetadataRecord::Acl {
                id: Uuid::from_u128(u128::from(rng.below(4))),
                acl: AclBinding {
                    resource_type: ResourceType::Topic,
                    resource_name: ["a", "b"][rng.below(2) as usize].into(),
                    pattern_type: PatternType::Literal,
                    principal: format!("User:{user}"),
                    host: "*".into(),
                    operation: AclOperation::Write,
                    permission: AclPermission::Allow,
                },
            },
            3 => MetadataRecord::RemoveAcl {
                id: Uuid::from_u128(u128::from(rng.below(4))),
            },
            4 if rng.below(2) == 0 => MetadataRecord::RegisterBroker {
                node_id: rng.below(3) as i32,
                endpoints: vec![BrokerEndpoint {
                    name: "PLAINTEXT".into(),
                    host: "127.0.0.1".into(),
                    port: 9092 + rng.below(3) as u16,
                    security_protocol: "PLAINTEXT".into(),
                }],
                rack: (rng.below(2) == 0).then(|| "r1".to_string()),
                incarnation: None,
            },
            4 => MetadataRecord::BrokerChange {
                node_id: rng.below(3) as i32,
                fenced: rng.below(2) == 0,
            },
            _ => MetadataRecord::ClientQuota {
                entity: QuotaEntity {
                    user: Some(QuotaName::Name(user)),
                    client_id: (rng.below(2) == 0).then_some(QuotaName::Default),
                },
                key: ["producer_byte_rate", "consumer_byte_rate"][rng.below(2) as usize].into(),
                value: (rng.below(3) != 0).then(|| QuotaValue(rng.below(10_000) as f64)),
            },
        }
    }

    /// A snapshot's records rebuild the image: over random histories of every record kind,
    /// `from_records(to_records(image))` equals the image but for how it was counted, and
    /// the records survive a JSON round trip.
    #[test]
    fn snapshot_records_rebuild_the_image() {
        for seed in 0..200 {
            let mut rng = Rng::new(seed);
            let mut image = MetadataImage::default();
            for step in 0..80 {
                let record = if rng.below(3) == 0 {
                    random_security_record(&mut rng)
                } else {
                    random_record(&mut rng, &image)
                };
                image.apply(&record);
                if step % 20 != 19 {
                    continue;
                }
                let records = image.to_records();
                let json = serde_json::to_string(&records).expect("encode");
                let decoded: Vec<MetadataRecord> = serde_json::from_str(&json).expect("decode");
                assert_eq!(decoded, records, "seed {seed}");
                let mut rebuilt = MetadataImage::from_records(&decoded);
                assert_eq!(rebuilt.applied_records, records.len() as u64);
                rebuilt.applied_records = image.applied_records;
                assert_eq!(rebuilt, image, "seed {seed} step {step}");
                assert_eq!(rebuilt.to_records(), records, "seed {seed}: stable");
            }
        }
    }

    #[test]
    fn unknown_references_are_ignored() {
        let mut image = MetadataImage::default();
        image.apply(&partition(Uuid::new_v4(), 0, 0));
        image.apply(&MetadataRecord::Config {
            resource: ConfigResource::Topic("nope".into()),
            name: "x".into(),
            value: None,
        });
        assert_eq!(image.topic_count(), 0);
    }
}
