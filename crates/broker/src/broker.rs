//! The broker's shared state: config, metadata, partitions, fetch sessions.

use std::fs::File;
use std::sync::{Arc, Mutex, RwLock};

use strata_quorum::controller::ops::{AllocateProducerIds, Op};
use strata_quorum::MetadataImage;

use crate::config::BrokerConfig;
use crate::controller::{ControllerError, ControllerService};
use crate::fetch_session::FetchSessionCache;
use crate::flusher::Flusher;
use crate::manager::PartitionManager;

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot use data directory {dir}: {source}")]
    DataDir { dir: String, source: std::io::Error },
    #[error("data directory {dir} is in use by another broker (lock on {lock} is held); stop that broker or choose another log.dirs")]
    Locked { dir: String, lock: String },
    #[error("{0}")]
    Format(#[from] crate::data_dir::FormatError),
    #[error("{0}")]
    Config(String),
    #[error("cannot load metadata: {0}")]
    Metadata(String),
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsLoadError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

/// This node's metadata once open: its part in the quorum (a voter, serving the other
/// voters on its controller listeners), or its copy fetched from the voters.
enum OpenedMetadata {
    Voter(
        strata_quorum::raft::node::MetadataQuorum,
        Arc<strata_quorum::raft::rpc::InternalServices>,
    ),
    Observer(Arc<crate::metadata_follower::MetadataFollower>),
}

/// Opens this voter's part in the metadata quorum kept in the locked `dir`: binds the
/// controller listeners and serves the other voters on them as soon as the quorum is open,
/// then waits for a leader (this node, when it is the only voter) and the cluster id.
pub(crate) async fn open_voter(
    dir: &std::path::Path,
    config: &BrokerConfig,
    previous: Option<crate::data_dir::MetaProperties>,
) -> Result<
    (
        strata_quorum::raft::node::MetadataQuorum,
        Arc<strata_quorum::raft::rpc::InternalServices>,
    ),
    StartError,
> {
    let controller_listeners: Vec<crate::config::Listener> = config
        .listeners
        .iter()
        .filter(|l| config.is_controller_listener(&l.name))
        .cloned()
        .collect();
    let bound =
        crate::server::BoundListeners::bind(&controller_listeners, Default::default()).await?;
    crate::format::open_and_stamp(dir, config, previous, |quorum| {
        crate::server::serve_controller_listeners(bound, quorum)
    })
    .await
}

pub struct Broker {
    pub config: BrokerConfig,
    /// Where every metadata change is submitted ([`Broker::submit`]).
    controller: Arc<ControllerService>,
    /// The image this broker serves: set by the metadata publisher after each change, once
    /// the partitions and coordinator shards are in line with it.
    image: RwLock<Arc<MetadataImage>>,
    /// The one door through which metadata changes reach this broker.
    pub(crate) publisher: crate::metadata_publisher::MetadataPublisher,
    /// Held while partitions are brought in line with an image, so two never overlap.
    pub(crate) partition_sync: Mutex<()>,
    pub partitions: Arc<PartitionManager>,
    /// Fetches the partitions this broker follows from their leaders.
    pub replica_fetchers: crate::replica_fetcher::ReplicaFetchers,
    /// What `/metrics` exposes; the hot paths add to handles resolved from it.
    pub metrics: Arc<crate::metrics::BrokerMetrics>,
    pub fetch_sessions: Mutex<FetchSessionCache>,
    /// `max.connections` and `max.connections.per.ip`, counted by the accept loop.
    pub connection_limits: Arc<crate::connection_limits::ConnectionLimits>,
    /// `queued.max.requests`: requests read from sockets and not yet handled, broker-wide.
    pub request_slots: Arc<tokio::sync::Semaphore>,
    /// Failed SASL authentications per user and per address
    /// (`strata.sasl.max.failed.attempts`).
    pub sasl_failures: crate::sasl::FailureLimiter,
    /// Source of `ConnectionContext::connection_id`.
    next_connection_id: std::sync::atomic::AtomicU64,
    pub groups: crate::groups::GroupService,
    pub txns: crate::txn::TxnService,
    /// ACL checks: the settings and an index of the image's ACLs, rebuilt on publish.
    pub authorizer: Arc<crate::acl::Authorizer>,
    /// Client quotas and the byte-rate windows they are measured in.
    pub quotas: crate::quota::QuotaManager,
    /// Held by the heartbeat task while a heartbeat is out; set once a controlled shutdown
    /// began, after which no heartbeat is sent (it would unfence this broker again).
    heartbeats_stopped: tokio::sync::Mutex<bool>,
    /// The block of producer ids this broker hands out: `[next, end)`.
    producer_ids: tokio::sync::Mutex<(i64, i64)>,
    /// How connections to the other brokers are secured (`crate::inter_broker::security`).
    pub(crate) inter_broker_security: strata_client::Security,
    /// Held for the broker's lifetime: the exclusive lock on `<log.dirs>/.lock`.
    _dir_lock: File,
}

impl Broker {
    /// Locks the data directory, loads metadata, recovers every partition log. Blocking; call
    /// before serving. Needs a tokio runtime (the flusher task).
    pub fn open(config: BrokerConfig) -> Result<Arc<Broker>, StartError> {
        let authorizer_settings =
            crate::acl::AuthorizerSettings::from_config(&config).map_err(StartError::Config)?;
        // A node with no other broker never connects to one: what the inter-broker listener
        // would need is not asked of it.
        let has_peers =
            !config.roles.controller || crate::controller::quorum_voters(&config).len() > 1;
        let inter_broker_security = match crate::inter_broker::security(&config) {
            Ok(security) => {
                if has_peers {
                    tracing::info!(
                        protocol = ?security.protocol,
                        login = security.sasl.as_ref().map_or("-", |s| s.username.as_str()),
                        "connections to the other brokers are secured as the inter-broker listener"
                    );
                }
                security
            }
            Err(reason) if has_peers => return Err(StartError::Config(reason)),
            Err(_) => strata_client::Security::default(),
        };
        apply_open_file_limit();
        let dir = config.data_dir.clone();
        let dir_err = |source| StartError::DataDir {
            dir: dir.display().to_string(),
            source,
        };
        let lock = crate::format::lock(&dir)?;
        let previous = crate::data_dir::check(&dir, config.node_id)?;
        let metadata = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                if config.roles.controller {
                    let (quorum, internal) = open_voter(&dir, &config, previous).await?;
                    Ok::<_, StartError>(OpenedMetadata::Voter(quorum, internal))
                } else {
                    let had_data = previous.is_some();
                    let follower = crate::metadata_follower::MetadataFollower::start(&config)
                        .await
                        .map_err(StartError::Metadata)?;
                    let cluster_id = follower.machine.with_image(|i| i.cluster_id.clone());
                    crate::format::stamp(&dir, &config, previous, had_data, cluster_id)?;
                    Ok(OpenedMetadata::Observer(follower))
                }
            })
        })?;
        let image = Arc::new(match &metadata {
            OpenedMetadata::Voter(quorum, _) => quorum.image(),
            OpenedMetadata::Observer(follower) => follower.machine.image(),
        });
        if authorizer_settings.is_some() {
            tracing::info!(acls = image.acls().len(), "authorizer on");
        }
        let authorizer = Arc::new(crate::acl::Authorizer::new(authorizer_settings, &image));
        let quotas = crate::quota::QuotaManager::new(&image, config.quota_windows);
        let fsync_parallelism = config
            .parsed::<usize>("strata.fsync.parallelism")
            .unwrap_or(16)
            .clamp(1, 256);
        let metrics = Arc::new(crate::metrics::BrokerMetrics::new());
        let flusher = Flusher::start(fsync_parallelism, metrics.clone());
        let partitions = Arc::new(
            PartitionManager::new(
                dir.clone(),
                config.fsync_before_ack,
                flusher.clone(),
                metrics.clone(),
            )
            .map_err(dir_err)?,
        );
        partitions.remove_orphans(&image);
        if let Err(error) = partitions.sync(&image, &config) {
            // Each failed partition was logged and answers KAFKA_STORAGE_ERROR; the others
            // serve, and the maintenance task tries again.
            tracing::error!(%error, "some partitions could not be opened");
        }
        if !config.fsync_before_ack {
            flusher.start_ticker(Arc::downgrade(&partitions));
        }
        start_test_fsync_gate(&config, &partitions);
        tracing::info!(
            cluster_id = image.cluster_id.as_deref().unwrap_or(""),
            topics = image.topic_count(),
            partitions = partitions.all().len(),
            "metadata loaded"
        );
        let connection_limits = Arc::new(
            crate::connection_limits::ConnectionLimits::from_config(&config)
                .map_err(|e| StartError::Config(e.to_string()))?,
        );
        let request_slots = Arc::new(tokio::sync::Semaphore::new(config.queued_max_requests));
        let topics_with_ignored: Vec<String> = image
            .topics()
            .filter_map(|t| {
                let ignored = crate::config::topic_configs_not_in_effect(t.configs.keys());
                (!ignored.is_empty()).then(|| format!("{}({})", t.name, ignored.join(",")))
            })
            .collect();
        if !topics_with_ignored.is_empty() {
            tracing::warn!(
                topics = topics_with_ignored.join(" "),
                "topic configuration keys accepted but not in effect yet"
            );
        }
        let sasl_failures = crate::sasl::announce(&config);
        let groups = crate::groups::GroupService::new(&config);
        let txns = crate::txn::TxnService::new(&config);
        let broker = Arc::new_cyclic(|weak: &std::sync::Weak<Broker>| {
            let publisher =
                crate::metadata_publisher::MetadataPublisher::start(weak.clone(), image.offset);
            let controller = match metadata {
                OpenedMetadata::Voter(quorum, internal) => {
                    ControllerService::start_voter(quorum, &internal, config.clone())
                }
                OpenedMetadata::Observer(follower) => {
                    Arc::new(ControllerService::observer(follower, &config))
                }
            };
            Broker {
                publisher,
                groups,
                txns,
                config,
                controller,
                image: RwLock::new(image),
                partition_sync: Mutex::new(()),
                partitions,
                replica_fetchers: crate::replica_fetcher::ReplicaFetchers::new(weak.clone()),
                metrics,
                fetch_sessions: Mutex::new(FetchSessionCache::new(1000)),
                connection_limits,
                request_slots,
                sasl_failures,
                next_connection_id: std::sync::atomic::AtomicU64::new(1),
                producer_ids: tokio::sync::Mutex::new((0, 0)),
                inter_broker_security,
                heartbeats_stopped: tokio::sync::Mutex::new(false),
                authorizer,
                quotas,
                _dir_lock: lock,
            }
        });
        // Only now: an image handed over before the broker exists would find no broker.
        broker.publisher.attach(broker.controller.machine());
        crate::metadata_publisher::load_coordinators_at_start(&broker, &broker.image());
        broker.replica_fetchers.update(broker.partitions.all());
        start_registration(&broker);
        crate::groups::GroupService::start_ticker(&broker);
        crate::txn::TxnService::start_ticker(&broker);
        start_log_maintenance(&broker);
        start_checkpoints(&broker);
        crate::isr::start_expiry(&broker);
        crate::cleaner::start(&broker);
        Ok(broker)
    }

    /// Kafka's controlled shutdown, before the listeners close: when other brokers are
    /// registered, this broker stops heartbeating and asks the controller to fence it now, so
    /// its leaderships move to other in-sync replicas and it leaves every ISR in one change;
    /// clients then get NOT_LEADER_OR_FOLLOWER here and find the new leaders at once, rather
    /// than after `broker.session.timeout.ms`. Bounded by `controlled.shutdown.timeout.ms`
    /// (default 30 s); off with `controlled.shutdown.enable=false`. A single node has no one
    /// to hand over to and skips it.
    pub async fn controlled_shutdown(&self) {
        if self.config.value("controlled.shutdown.enable").as_deref() == Some("false") {
            return;
        }
        let node = self.node_id();
        let others = self
            .image()
            .brokers()
            .any(|b| b.node_id != node && !b.fenced);
        if !others {
            return;
        }
        *self.heartbeats_stopped.lock().await = true;
        tracing::info!(
            "controlled shutdown: moving this broker's leaderships to other in-sync replicas"
        );
        let timeout = std::time::Duration::from_millis(
            self.config
                .parsed::<u64>("controlled.shutdown.timeout.ms")
                .unwrap_or(30_000),
        );
        let fence = strata_quorum::controller::ops::FenceBroker { node_id: node };
        match tokio::time::timeout(timeout, self.submit(fence)).await {
            Ok(Ok(_)) => {
                let leading = self
                    .partitions
                    .all()
                    .iter()
                    .filter(|p| p.is_leader())
                    .count();
                tracing::info!(
                    still_leading = leading,
                    "controlled shutdown: leaderships moved"
                );
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "controlled shutdown failed; shutting down anyway")
            }
            Err(_) => tracing::warn!(
                ?timeout,
                "controlled shutdown timed out; shutting down anyway"
            ),
        }
    }

    /// A new connection's id, never reused while the broker runs.
    pub fn new_connection_id(&self) -> u64 {
        self.next_connection_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    /// The current metadata image (a cheap snapshot).
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The high watermark of `topic`'s `partition` when this broker holds it (what a commit
    /// records as its end offset, for lag evaluation).
    pub fn end_offset_of(&self, image: &MetadataImage, topic: &str, partition: i32) -> Option<i64> {
        let topic = image.topic_by_name(topic)?;
        self.partitions
            .get(&topic.topic_id, partition)
            .map(|p| p.high_watermark())
    }

    pub fn cluster_id(&self) -> String {
        self.image().cluster_id.clone().unwrap_or_default()
    }

    /// Submits a metadata change to the controller and returns its reply, once the change is
    /// committed and this broker serves it (the metadata publisher has applied the offset the
    /// controller answered with: partitions opened, shards loaded, image published).
    pub async fn submit<O: Op>(&self, op: O) -> Result<O::Reply, ControllerError> {
        let (reply, offset) = self.controller.submit(op).await?;
        self.publisher.wait_applied(offset).await?;
        Ok(reply)
    }

    /// Replaces the image this broker serves. Only the metadata publisher calls it, once
    /// everything else is in line with `image`.
    pub(crate) fn set_image(&self, image: Arc<MetadataImage>) {
        *self.image.write().unwrap_or_else(|p| p.into_inner()) = image;
    }

    /// A producer id never handed out before, on this broker or before a restart: ids are
    /// reserved in blocks from the controller.
    pub async fn allocate_producer_id(&self) -> Result<i64, ControllerError> {
        let mut block = self.producer_ids.lock().await;
        if block.0 >= block.1 {
            let reserved = self
                .submit(AllocateProducerIds {
                    broker_id: self.node_id(),
                })
                .await?;
            *block = (reserved.first, reserved.first + reserved.size);
        }
        let id = block.0;
        block.0 += 1;
        Ok(id)
    }

    /// Stops this node's part in the metadata quorum, or its fetching of the metadata (at
    /// shutdown, after the last request).
    pub async fn stop_metadata_quorum(&self) {
        self.controller.shutdown().await;
    }

    /// Where this node's metadata comes from, and where its changes go.
    pub fn controller(&self) -> &ControllerService {
        &self.controller
    }

    /// Fsyncs every partition, writes the checkpoints and marks the shutdown clean (unless
    /// the directory went offline). Called once, at shutdown.
    pub fn flush_all(&self) {
        for p in self.partitions.all() {
            crate::flusher::flush_now(&p);
            p.snapshot_producer_state(true);
        }
        self.partitions.mark_clean_shutdown();
    }
}

/// Brings every partition in line with the current image (a full sync, under the partition
/// lock so that two never overlap) and the replica fetchers with them; returns the image.
/// Blocking.
fn resync_partitions(broker: &Arc<Broker>) -> Arc<MetadataImage> {
    let _sync = broker
        .partition_sync
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let image = broker.image();
    if let Err(error) = broker.partitions.sync(&image, &broker.config) {
        tracing::error!(%error, "some partitions could not be opened");
    }
    broker.replica_fetchers.update(broker.partitions.all());
    image
}

/// Registers this broker with the controller (its advertised endpoints and rack), retrying
/// until it is recorded: other brokers give clients these endpoints for the partitions this
/// one leads. A registration that is already current writes nothing.
fn start_registration(broker: &Arc<Broker>) {
    let op = strata_quorum::controller::ops::RegisterBroker {
        node_id: broker.node_id(),
        endpoints: broker
            .config
            .advertised_listeners
            .iter()
            .map(|l| strata_quorum::BrokerEndpoint {
                name: l.name.clone(),
                host: l.host.clone(),
                port: l.port,
                security_protocol: l.security_protocol.clone(),
            })
            .collect(),
        rack: broker.config.set.get("broker.rack").cloned(),
        incarnation: Some(crate::format::random_uuid()),
    };
    let weak = Arc::downgrade(broker);
    tokio::spawn(async move {
        let mut pause = std::time::Duration::from_millis(100);
        loop {
            let Some(broker) = weak.upgrade() else { return };
            match broker.submit(op.clone()).await {
                Ok(_) => {
                    tracing::info!(
                        node_id = op.node_id,
                        "broker registered with the controller"
                    );
                    // Now it leads what the metadata gives it.
                    broker.partitions.set_registered();
                    let registered = broker.clone();
                    let resynced = tokio::task::spawn_blocking(move || {
                        let image = resync_partitions(&registered);
                        crate::metadata_publisher::load_coordinators_once_registered(
                            &registered,
                            &image,
                        );
                    })
                    .await;
                    if let Err(error) = resynced {
                        tracing::error!(%error, "bringing partitions in line after registration failed");
                    }
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?pause, "broker registration failed; retrying");
                }
            }
            drop(broker);
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_secs(5));
        }
        // Then a heartbeat every broker.heartbeat.interval.ms, for as long as it runs.
        let heartbeat = strata_quorum::controller::ops::BrokerHeartbeat {
            node_id: op.node_id,
        };
        loop {
            let Some(broker) = weak.upgrade() else { return };
            let interval = std::time::Duration::from_millis(
                broker
                    .config
                    .parsed::<u64>("broker.heartbeat.interval.ms")
                    .unwrap_or(2000),
            );
            {
                let stopped = broker.heartbeats_stopped.lock().await;
                if *stopped {
                    return;
                }
                if let Err(error) = broker.submit(heartbeat.clone()).await {
                    tracing::debug!(%error, "heartbeat not delivered");
                }
            }
            drop(broker);
            tokio::time::sleep(interval).await;
        }
    });
}

/// Raises the open-file limit to the hard limit and gives the segment-file cache its share
/// of it; logs the figures. Never fails start-up: at worst the limit stays as it was.
fn apply_open_file_limit() {
    let raised = crate::fd_limit::raise_to_hard_limit();
    if let Err(error) = &raised {
        tracing::warn!(%error, "could not raise the open-file limit to the hard limit");
    }
    let soft = crate::fd_limit::soft_limit().unwrap_or(1024);
    let budget = crate::fd_limit::cache_budget(soft);
    strata_log::file_cache::set_budget(budget);
    tracing::info!(
        open_file_limit = soft,
        hard_limit = raised.as_ref().map(|l| l.hard).ok(),
        raised_from = raised.as_ref().ok().and_then(|l| l.raised_from),
        segment_file_budget = strata_log::file_cache::budget(),
        "open-file limit"
    );
}

/// Runs `work` on the blocking pool every `key` milliseconds (config, at least 10; the
/// first run one period after start), until the broker is dropped. `work` gets the broker
/// only long enough to build the blocking job, so the task never keeps it alive.
fn spawn_periodic<F, J>(broker: &Arc<Broker>, key: &str, default_ms: u64, work: F)
where
    F: Fn(&Arc<Broker>) -> J + Send + 'static,
    J: FnOnce() + Send + 'static,
{
    let interval_ms = broker
        .config
        .parsed::<u64>(key)
        .unwrap_or(default_ms)
        .max(10);
    let weak = Arc::downgrade(broker);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(interval_ms));
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(broker) = weak.upgrade() else { return };
            let job = work(&broker);
            drop(broker);
            let _ = tokio::task::spawn_blocking(job).await;
        }
    });
}

/// Every `log.flush.offset.checkpoint.interval.ms` (Kafka's default: a minute): write the
/// recovery-point and high-watermark checkpoints, on the blocking pool.
fn start_checkpoints(broker: &Arc<Broker>) {
    spawn_periodic(
        broker,
        "log.flush.offset.checkpoint.interval.ms",
        60_000,
        |broker| {
            let partitions = broker.partitions.clone();
            move || partitions.write_checkpoints()
        },
    );
}

/// Every `log.retention.check.interval.ms`: roll segments older than `segment.ms` and apply
/// retention, on the blocking pool (it deletes files).
fn start_log_maintenance(broker: &Arc<Broker>) {
    let producer_expiration_ms = broker
        .config
        .parsed::<i64>("producer.id.expiration.ms")
        .unwrap_or(86_400_000);
    spawn_periodic(
        broker,
        "log.retention.check.interval.ms",
        300_000,
        move |broker| {
            let partitions = broker.partitions.all();
            let retry = broker.partitions.has_unopened().then(|| broker.clone());
            move || {
                if let Some(broker) = retry {
                    resync_partitions(&broker);
                    if !broker.partitions.has_unopened() {
                        tracing::info!("every partition is open again");
                    }
                }
                let now = crate::partition::now_ms();
                for p in partitions {
                    p.maybe_roll(now);
                    p.apply_retention(now);
                    p.expire_producers(now, producer_expiration_ms);
                    p.snapshot_producer_state(false);
                }
            }
        },
    );
}

/// Hidden test knob (`strata.test.fsync.gate.topic` and `.file`, see
/// [`crate::partition::test_fsync_gate`]): while the file exists, that topic's fsyncs do not
/// complete; a task polls the file and completes the held-back fsyncs once it is gone.
fn start_test_fsync_gate(config: &BrokerConfig, partitions: &Arc<PartitionManager>) {
    let (Some(topic), Some(file)) = (
        config.value("strata.test.fsync.gate.topic"),
        config.value("strata.test.fsync.gate.file"),
    ) else {
        return;
    };
    tracing::warn!(
        topic,
        file,
        "test knob on: fsyncs of the topic wait while the file exists"
    );
    crate::partition::test_fsync_gate::configure(topic.clone(), file.into());
    let weak = Arc::downgrade(partitions);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(10));
        loop {
            tick.tick().await;
            let Some(partitions) = weak.upgrade() else {
                return;
            };
            if !crate::partition::test_fsync_gate::holds(&topic) {
                for p in partitions.all() {
                    if p.topic == topic {
                        p.release_gated_fsync();
                    }
                }
            }
        }
    });
}

/// A broker on a data directory in `dir` with `settings` on top of the defaults (tests).
#[cfg(test)]
pub(crate) fn open_for_test(dir: &std::path::Path, settings: &[(&str, &str)]) -> Arc<Broker> {
    let set = [("log.dirs", dir.display().to_string().as_str())]
        .iter()
        .chain(settings)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let (config, _) = crate::config::BrokerConfig::from_map(set).expect("config");
    Broker::open(config).expect("broker")
}
