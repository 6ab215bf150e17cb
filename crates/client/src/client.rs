//! The cluster handle: bootstrap, metadata, one connection per broker, retries.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::{Request, StrBytes};
use kafka_protocol::ResponseError;
use tokio::sync::Mutex;

use crate::conn::Connection;
use crate::error::{Error, Result};

/// How a [`Client`] reaches the cluster.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port` addresses to bootstrap from (comma-separated lists are split).
    pub bootstrap_servers: Vec<String>,
    pub client_id: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// How many times a retriable failure is tried again.
    pub retries: u32,
    pub retry_backoff: Duration,
    /// TLS and SASL (`security.protocol` and friends); plaintext by default.
    pub security: crate::security::Security,
}

impl ClientConfig {
    pub fn new(bootstrap: &str) -> Self {
        ClientConfig {
            bootstrap_servers: bootstrap
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            client_id: "strata-client".into(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            retries: 5,
            retry_backoff: Duration::from_millis(100),
            security: Default::default(),
        }
    }
}

/// A broker as metadata lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

impl BrokerInfo {
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// One partition as metadata lists it.
#[derive(Debug, Clone)]
pub struct PartitionInfo {
    pub id: i32,
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline: Vec<i32>,
    pub error: i16,
}

/// One topic as metadata lists it.
#[derive(Debug, Clone)]
pub struct TopicInfo {
    pub name: String,
    pub id: uuid::Uuid,
    pub internal: bool,
    pub error: i16,
    pub partitions: Vec<PartitionInfo>,
}

/// A metadata answer.
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    pub cluster_id: Option<String>,
    pub controller_id: i32,
    pub brokers: BTreeMap<i32, BrokerInfo>,
    pub topics: BTreeMap<String, TopicInfo>,
}

impl Metadata {
    fn from_response(r: MetadataResponse) -> Self {
        let brokers = r
            .brokers
            .into_iter()
            .map(|b| {
                let info = BrokerInfo {
                    id: b.node_id.0,
                    host: b.host.to_string(),
                    port: b.port,
                    rack: b.rack.map(|r| r.to_string()),
                };
                (info.id, info)
            })
            .collect();
        let topics = r
            .topics
            .into_iter()
            .filter_map(|t| {
                let name = t.name?.0.to_string();
                let mut partitions: Vec<PartitionInfo> = t
                    .partitions
                    .into_iter()
                    .map(|p| PartitionInfo {
                        id: p.partition_index,
                        leader: p.leader_id.0,
                        leader_epoch: p.leader_epoch,
                        replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                        isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                        offline: p.offline_replicas.iter().map(|b| b.0).collect(),
                        error: p.error_code,
                    })
                    .collect();
                partitions.sort_by_key(|p| p.id);
                Some((
                    name.clone(),
                    TopicInfo {
                        name,
                        id: t.topic_id,
                        internal: t.is_internal,
                        error: t.error_code,
                        partitions,
                    },
                ))
            })
            .collect();
        Metadata {
            cluster_id: r.cluster_id.map(|c| c.to_string()),
            controller_id: r.controller_id.0,
            brokers,
            topics,
        }
    }

    /// The topic, or an UNKNOWN_TOPIC_OR_PARTITION error naming it.
    pub fn topic(&self, name: &str) -> Result<&TopicInfo> {
        match self.topics.get(name) {
            Some(t) if t.error == 0 => Ok(t),
            Some(t) => Err(Error::kafka(format!("topic {name:?}"), t.error, None)),
            None => Err(Error::kafka(
                format!("topic {name:?}"),
                ResponseError::UnknownTopicOrPartition.code(),
                None,
            )),
        }
    }
}

struct Inner {
    config: ClientConfig,
    bootstrap: Mutex<Option<Arc<Connection>>>,
    brokers: Mutex<HashMap<i32, Arc<Connection>>>,
    metadata: std::sync::RwLock<Metadata>,
}

/// A handle on a cluster; cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

pub(crate) fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

pub(crate) fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

impl Client {
    /// Connects to the first bootstrap server that answers and reads the broker list.
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        if config.bootstrap_servers.is_empty() {
            return Err(Error::Invalid(
                "no bootstrap server given; name one as host:port".into(),
            ));
        }
        for s in &config.bootstrap_servers {
            let port = s.rsplit_once(':').map(|(_, p)| p.parse::<u16>());
            if !matches!(port, Some(Ok(_))) {
                return Err(Error::Invalid(format!(
                    "bootstrap server {s:?} is not host:port (e.g. localhost:9092)"
                )));
            }
        }
        let client = Client {
            inner: Arc::new(Inner {
                config,
                bootstrap: Mutex::new(None),
                brokers: Mutex::new(HashMap::new()),
                metadata: Default::default(),
            }),
        };
        client.refresh_metadata(Some(&[])).await?;
        Ok(client)
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Reads the cached metadata in place, without copying it (the producer's per-record
    /// and per-request lookups).
    pub(crate) fn with_metadata<T>(&self, f: impl FnOnce(&Metadata) -> T) -> T {
        f(&self.inner.metadata.read().expect("metadata lock"))
    }

    /// The last metadata read.
    pub fn cached_metadata(&self) -> Metadata {
        self.inner.metadata.read().expect("metadata lock").clone()
    }

    async fn open(&self, addr: &str) -> Result<Arc<Connection>> {
        let c = &self.inner.config;
        Ok(Arc::new(
            Connection::open(
                addr,
                &c.client_id,
                c.connect_timeout,
                c.request_timeout,
                &c.security,
            )
            .await?,
        ))
    }

    /// A connection to any broker: the bootstrap connection, reopened if needed.
    pub async fn any_connection(&self) -> Result<Arc<Connection>> {
        let mut slot = self.inner.bootstrap.lock().await;
        if let Some(conn) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(conn.clone());
        }
        let mut candidates: Vec<String> = self.inner.config.bootstrap_servers.clone();
        let known: Vec<String> = self
            .cached_metadata()
            .brokers
            .values()
            .map(BrokerInfo::addr)
            .collect();
        candidates.extend(known);
        let mut last = String::new();
        for addr in &candidates {
            match self.open(addr).await {
                Ok(conn) => {
                    *slot = Some(conn.clone());
                    return Ok(conn);
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(Error::NoBroker {
            servers: self.inner.config.bootstrap_servers.join(","),
            reason: last,
        })
    }

    /// A connection to broker `id` (as metadata names it).
    pub async fn broker_connection(&self, id: i32) -> Result<Arc<Connection>> {
        let mut brokers = self.inner.brokers.lock().await;
        if let Some(conn) = brokers.get(&id).filter(|c| !c.is_closed()) {
            return Ok(conn.clone());
        }
        let mut info = self.cached_metadata().brokers.get(&id).cloned();
        if info.is_none() {
            drop(brokers);
            self.refresh_metadata(Some(&[])).await?;
            info = self.cached_metadata().brokers.get(&id).cloned();
            brokers = self.inner.brokers.lock().await;
        }
        let info = info.ok_or_else(|| Error::Connection {
            addr: format!("broker {id}"),
            reason: "the broker is not in the cluster metadata".into(),
        })?;
        let conn = self.open(&info.addr()).await?;
        brokers.insert(id, conn.clone());
        Ok(conn)
    }

    /// Drops a broker connection (after it failed) so the next call reconnects.
    pub async fn forget_broker(&self, id: i32) {
        self.inner.brokers.lock().await.remove(&id);
    }

    /// Runs `call` with retries on retriable errors (connection failures, retriable codes).
    pub async fn retry<T, F, Fut>(&self, mut call: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut attempt = 0;
        loop {
            match call().await {
                Err(e) if e.is_retriable() && attempt < self.inner.config.retries => {
                    attempt += 1;
                    tracing::debug!(attempt, error = %e, "retrying");
                    tokio::time::sleep(self.inner.config.retry_backoff * attempt).await;
                }
                other => return other,
            }
        }
    }

    /// Sends a request to any broker, with retries on connection failures.
    pub async fn send_any<R: Request>(
        &self,
        cap: i16,
        build: impl Fn(i16) -> R,
    ) -> Result<R::Response> {
        self.retry(|| async {
            let conn = self.any_connection().await?;
            let (_, response) = conn.send(cap, &build).await?;
            Ok(response)
        })
        .await
    }

    /// Sends a request to broker `id`, with retries on connection failures.
    pub async fn send_to<R: Request>(
        &self,
        id: i32,
        cap: i16,
        build: impl Fn(i16) -> R,
    ) -> Result<R::Response> {
        self.retry(|| async {
            let conn = self.broker_connection(id).await?;
            match conn.send(cap, &build).await {
                Ok((_, response)) => Ok(response),
                Err(e) => {
                    if matches!(e, Error::Connection { .. }) {
                        self.forget_broker(id).await;
                    }
                    Err(e)
                }
            }
        })
        .await
    }

    /// Reads metadata for `topics` (all topics with `None`, brokers only with an empty list)
    /// and caches it.
    pub async fn refresh_metadata(&self, topics: Option<&[String]>) -> Result<Metadata> {
        self.metadata_request(topics, false).await
    }

    /// A Metadata request; with `auto_create` the broker creates missing topics when its
    /// `auto.create.topics.enable` allows (Metadata v4+; older versions always ask).
    async fn metadata_request(
        &self,
        topics: Option<&[String]>,
        auto_create: bool,
    ) -> Result<Metadata> {
        let response = self
            .send_any(12, |version| {
                let mut r = MetadataRequest::default().with_topics(topics.map(|ts| {
                    ts.iter()
                        .map(|t| MetadataRequestTopic::default().with_name(Some(name(t))))
                        .collect()
                }));
                if version >= 4 {
                    r.allow_auto_topic_creation = auto_create;
                }
                if topics.is_none() && version < 1 {
                    r.topics = Some(vec![]);
                }
                r
            })
            .await?;
        let fresh = Metadata::from_response(response);
        {
            let mut cached = self.inner.metadata.write().expect("metadata lock");
            cached.cluster_id = fresh.cluster_id.clone();
            cached.controller_id = fresh.controller_id;
            cached.brokers = fresh.brokers.clone();
            if topics.is_none() {
                cached.topics = fresh.topics.clone();
            } else {
                for (k, v) in &fresh.topics {
                    cached.topics.insert(k.clone(), v.clone());
                }
            }
        }
        Ok(fresh)
    }

    /// Metadata of one topic, from the cache if it has it, else from the cluster.
    pub async fn topic(&self, topic: &str) -> Result<TopicInfo> {
        let cached = self
            .inner
            .metadata
            .read()
            .expect("metadata lock")
            .topics
            .get(topic)
            .filter(|t| t.error == 0 && !t.partitions.is_empty())
            .cloned();
        match cached {
            Some(t) => Ok(t),
            None => self.fresh_topic(topic).await,
        }
    }

    /// Metadata of one topic, read from the cluster, retrying while its leaders are elected.
    pub async fn fresh_topic(&self, topic: &str) -> Result<TopicInfo> {
        self.retry(|| async {
            let m = self.refresh_metadata(Some(&[topic.to_string()])).await?;
            let t = m.topic(topic)?;
            if t.partitions.iter().any(|p| p.leader < 0) {
                return Err(Error::kafka(
                    format!("topic {topic:?}"),
                    ResponseError::LeaderNotAvailable.code(),
                    None,
                ));
            }
            Ok(t.clone())
        })
        .await
    }

    /// Metadata of one topic, created with the broker's defaults if it does not exist and the
    /// broker allows auto-creation (as Kafka's console producer asks: a Metadata request with
    /// allow_auto_topic_creation). Says whether the topic had to be created. A broker with
    /// `auto.create.topics.enable=false` leaves the answer UNKNOWN_TOPIC_OR_PARTITION.
    pub async fn topic_or_auto_create(&self, topic: &str) -> Result<(TopicInfo, bool)> {
        match self.fresh_topic(topic).await {
            Err(e) if e.code() == Some(ResponseError::UnknownTopicOrPartition) => {}
            other => return other.map(|t| (t, false)),
        }
        let names = [topic.to_string()];
        let info = self
            .retry(|| async {
                // Retries (while leaders are elected) ask again, as Kafka's producer does.
                let m = self.metadata_request(Some(&names), true).await?;
                let t = m.topic(topic)?;
                if t.partitions.is_empty() || t.partitions.iter().any(|p| p.leader < 0) {
                    return Err(Error::kafka(
                        format!("topic {topic:?}"),
                        ResponseError::LeaderNotAvailable.code(),
                        None,
                    ));
                }
                Ok(t.clone())
            })
            .await?;
        Ok((info, true))
    }

    /// The leader of one partition.
    pub async fn leader(&self, topic: &str, partition: i32) -> Result<i32> {
        let t = self.topic(topic).await?;
        t.partitions
            .iter()
            .find(|p| p.id == partition)
            .map(|p| p.leader)
            .filter(|l| *l >= 0)
            .ok_or_else(|| {
                Error::kafka(
                    format!("partition {topic}-{partition}"),
                    ResponseError::UnknownTopicOrPartition.code(),
                    Some(format!("the topic has {} partitions", t.partitions.len())),
                )
            })
    }

    /// The broker that coordinates `group`.
    pub async fn coordinator(&self, group: &str) -> Result<i32> {
        self.retry(|| async {
            let r = self
                .send_any(3, |version| {
                    let mut r = FindCoordinatorRequest::default().with_key(sb(group));
                    if version >= 1 {
                        r.key_type = 0;
                    }
                    r
                })
                .await?;
            crate::error::check(
                || format!("finding the coordinator of group {group:?}"),
                r.error_code,
                r.error_message.map(|m| m.to_string()),
            )?;
            let id = r.node_id.0;
            let known = self.cached_metadata().brokers.contains_key(&id);
            if !known {
                let mut m = self.inner.metadata.write().expect("metadata lock");
                m.brokers.insert(
                    id,
                    BrokerInfo {
                        id,
                        host: r.host.to_string(),
                        port: r.port,
                        rack: None,
                    },
                );
            }
            Ok(id)
        })
        .await
    }

    /// The ids of every known broker.
    pub fn broker_ids(&self) -> Vec<i32> {
        self.cached_metadata().brokers.keys().copied().collect()
    }
}

pub(crate) fn broker(id: i32) -> BrokerId {
    BrokerId(id)
}
