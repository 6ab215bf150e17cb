//! The metadata state machine: the current picture of topics, partitions and configs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use uuid::Uuid;

use crate::acl::AclBinding;
use crate::quota::QuotaEntity;
use crate::record::{ConfigResource, MetadataRecord};

#[derive(Debug, Clone, PartialEq)]
pub struct PartitionImage {
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
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

#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetadataImage {
    pub cluster_id: Option<String>,
    topics: BTreeMap<Uuid, TopicImage>,
    topic_ids_by_name: BTreeMap<String, Uuid>,
    /// Dynamic broker configs, keyed by node id (`None`: cluster-wide default).
    pub broker_configs: BTreeMap<Option<i32>, BTreeMap<String, String>>,
    /// How many records have been applied; the image's version.
    pub applied_records: u64,
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
}

impl MetadataImage {
    /// Applies one record. Records that refer to something unknown are ignored with a warning,
    /// so that a replayed log never fails to load.
    pub fn apply(&mut self, record: &MetadataRecord) {
        self.applied_records += 1;
        match record {
            MetadataRecord::Cluster { cluster_id } => self.cluster_id = Some(cluster_id.clone()),
            MetadataRecord::Topic { name, topic_id } => {
                self.topic_ids_by_name.insert(name.clone(), *topic_id);
                self.topics.insert(
                    *topic_id,
                    TopicImage {
                        name: name.clone(),
                        topic_id: *topic_id,
                        partitions: BTreeMap::new(),
                        configs: BTreeMap::new(),
                    },
                );
            }
            MetadataRecord::Partition {
                topic_id,
                partition,
                replicas,
                isr,
                leader,
                leader_epoch,
                partition_epoch,
            } => match self.topics.get_mut(topic_id) {
                Some(topic) => {
                    topic.partitions.insert(
                        *partition,
                        PartitionImage {
                            partition: *partition,
                            replicas: replicas.clone(),
                            isr: isr.clone(),
                            leader: *leader,
                            leader_epoch: *leader_epoch,
                            partition_epoch: *partition_epoch,
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
                        &mut self
                            .topics
                            .get_mut(id)
                            .expect("name index and topics agree")
                            .configs
                    }
                    ConfigResource::Broker(node) => self.broker_configs.entry(*node).or_default(),
                };
                match value {
                    Some(v) => configs.insert(name.clone(), v.clone()),
                    None => configs.remove(name),
                };
            }
            MetadataRecord::ProducerIds { next_producer_id } => {
                self.next_producer_id = self.next_producer_id.max(*next_producer_id);
            }
            MetadataRecord::RemoveTopic { topic_id } => {
                if let Some(topic) = self.topics.remove(topic_id) {
                    self.topic_ids_by_name.remove(&topic.name);
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
                if let Some(user) = self.scram.get_mut(name) {
                    user.remove(mechanism);
                    if user.is_empty() {
                        self.scram.remove(name);
                    }
                }
            }
            MetadataRecord::Acl { id, acl } => {
                Arc::make_mut(&mut self.acls).insert(*id, acl.clone());
            }
            MetadataRecord::RemoveAcl { id } => {
                if Arc::make_mut(&mut self.acls).remove(id).is_none() {
                    tracing::warn!(%id, "removal of an unknown ACL");
                }
            }
            MetadataRecord::ClientQuota { entity, key, value } => {
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
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<&TopicImage> {
        self.topics.get(id)
    }

    /// Topics in name order.
    pub fn topics(&self) -> impl Iterator<Item = &TopicImage> {
        self.topic_ids_by_name
            .values()
            .filter_map(|id| self.topics.get(id))
    }

    /// Whether a topic with this id existed and was deleted.
    pub fn was_removed(&self, id: &Uuid) -> bool {
        self.removed_topic_ids.contains(id)
    }

    pub fn topic_count(&self) -> usize {
        self.topics.len()
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
