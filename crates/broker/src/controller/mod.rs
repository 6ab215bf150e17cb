//! The controller: the one place cluster metadata changes (`docs/design/cluster.md` §3.1).
//!
//! Handlers turn a request into a typed operation (`strata_quorum::controller::ops`) and call
//! [`crate::Broker::submit`], which hands it to the [`ControllerService`]. The service owns the
//! metadata store (still the local metadata log) and an operation queue drained by one task:
//! each drain takes every operation waiting, plans them in turn with [`plan::plan_batch`] (each
//! against the image with the previous ones' records applied), commits all their records as
//! one metadata-log append (one fsync: metadata's group commit), hands the new image and what
//! the records touched to the `publish` callback, and answers each operation with its reply
//! and the metadata offset that holds its outcome. Planning and the append with its fsync run
//! on the blocking pool.
//!
//! The service needs no `Broker`: on a broker the `publish` callback given to
//! [`ControllerService::start`] queues the change on the broker's
//! [`crate::metadata_publisher::MetadataPublisher`] (the one door through which metadata
//! reaches the broker), and [`crate::Broker::submit`] waits until the publisher has applied
//! the answer's offset, so an operation is answered once this broker serves its outcome.

pub mod acls;
pub mod plan;
pub mod quotas;
pub mod scram;

use std::path::Path;
use std::sync::{Arc, Mutex};

use strata_quorum::controller::ops::{ControllerOp, ControllerReply, Op, OpError};
use strata_quorum::log::MetadataLogError;
use strata_quorum::{MetadataDelta, MetadataImage, MetadataRecord, MetadataStore};
use tokio::sync::{mpsc, oneshot};

use crate::config::BrokerConfig;

/// Operations one drain plans and commits at most; the rest wait for the next drain.
const MAX_DRAIN: usize = 1024;

/// Why an operation was not performed.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The records could not be made durable (a metadata log error); nothing was applied.
    #[error("metadata commit failed: {0}")]
    Commit(String),
    /// The operation as a whole was refused (per-item refusals are in the reply).
    #[error("{0}")]
    Refused(OpError),
    /// The controller stopped or failed before answering.
    #[error("the controller did not answer: {0}")]
    Unavailable(String),
}

/// A reply and the metadata offset (the image's `applied_records`) at which its outcome holds.
type Answer = Result<(ControllerReply, u64), ControllerError>;

/// What runs after each commit with the new offset, image and delta, before the operations
/// are answered.
type Publish = Box<dyn Fn(u64, Arc<MetadataImage>, MetadataDelta) + Send + Sync>;

/// The local controller: an operation queue in front of the metadata store.
pub struct ControllerService {
    queue: mpsc::UnboundedSender<(ControllerOp, oneshot::Sender<Answer>)>,
}

/// The state the draining task works on.
struct Drainer {
    store: Mutex<MetadataStore>,
    config: BrokerConfig,
    publish: Publish,
}

impl ControllerService {
    /// Opens the metadata log in `dir` and replays it into the image. At the first start (no
    /// cluster id yet) commits the `Cluster` record: `cluster.id` if set, else a new id.
    /// Blocking; call before [`ControllerService::start`].
    pub fn open_store(
        dir: &Path,
        config: &BrokerConfig,
    ) -> Result<MetadataStore, MetadataLogError> {
        let mut store = MetadataStore::open_local(dir)?;
        if store.image().cluster_id.is_none() {
            let cluster_id = config
                .set
                .get("cluster.id")
                .cloned()
                .unwrap_or_else(crate::format::random_uuid);
            // The first records: the cluster id, then the SCRAM users given to format it
            // (--add-scram), in one commit.
            let mut records = vec![MetadataRecord::Cluster { cluster_id }];
            records.extend(config.add_scram.iter().map(|a| a.record()));
            store.commit(records)?;
            for a in &config.add_scram {
                tracing::info!(credential = ?a, "SCRAM credential added while formatting (--add-scram)");
            }
        } else if !config.add_scram.is_empty() {
            tracing::warn!(
                credentials = ?config.add_scram,
                "--add-scram ignored: the metadata was formatted before; change users with AlterUserScramCredentials (strata users)"
            );
        }
        Ok(store)
    }

    /// Starts the draining task on the current tokio runtime. `publish` gets the new offset,
    /// image and what the commit touched after each commit, on a blocking thread (it may
    /// block to push back); the committed operations are answered once it returns. The task
    /// ends when the service is dropped.
    pub fn start(
        store: MetadataStore,
        config: BrokerConfig,
        publish: impl Fn(u64, Arc<MetadataImage>, MetadataDelta) + Send + Sync + 'static,
    ) -> Self {
        let (queue, pending) = mpsc::unbounded_channel();
        let drainer = Arc::new(Drainer {
            store: Mutex::new(store),
            config,
            publish: Box::new(publish),
        });
        tokio::spawn(run(pending, drainer));
        ControllerService { queue }
    }

    /// Performs `op` and returns its reply once its records are committed and handed to the
    /// publish callback, with the metadata offset at which its outcome holds (also for an
    /// operation that wrote nothing: it was planned against the image at that offset, which
    /// the broker may not have applied yet).
    pub async fn submit<O: Op>(&self, op: O) -> Result<(O::Reply, u64), ControllerError> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .send((op.into(), answer))
            .map_err(|_| ControllerError::Unavailable("the controller has stopped".into()))?;
        let (reply, offset) = answered.await.map_err(|_| {
            ControllerError::Unavailable("the operation was dropped unanswered".into())
        })??;
        let reply = O::take_reply(reply).ok_or_else(|| {
            ControllerError::Unavailable("the reply is of another operation's kind".into())
        })?;
        Ok((reply, offset))
    }
}

/// Drains the queue until every sender is gone.
async fn run(
    mut pending: mpsc::UnboundedReceiver<(ControllerOp, oneshot::Sender<Answer>)>,
    drainer: Arc<Drainer>,
) {
    while let Some(first) = pending.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_DRAIN {
            match pending.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let (ops, waiters): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let drainer = drainer.clone();
        match tokio::task::spawn_blocking(move || drainer.drain(&ops)).await {
            Ok(answers) => {
                for (waiter, answer) in waiters.into_iter().zip(answers) {
                    // A requester that went away no longer wants its answer.
                    let _ = waiter.send(answer);
                }
            }
            Err(error) => {
                tracing::error!(%error, "the controller failed while performing metadata operations");
                for waiter in waiters {
                    let _ = waiter.send(Err(ControllerError::Unavailable(error.to_string())));
                }
            }
        }
    }
}

impl Drainer {
    /// Plans `ops`, commits their records as one append, publishes, and returns each answer.
    /// Blocking.
    fn drain(&self, ops: &[ControllerOp]) -> Vec<Answer> {
        let mut store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        let plan = plan::plan_batch(store.image(), &self.config, ops);
        let committed = if plan.records.is_empty() {
            Ok(())
        } else {
            store.commit(plan.records).map(|delta| {
                // The change is durable and applied; the broker now acts on it. Cloning the
                // image copies one pointer per topic.
                let image = Arc::new(store.image().clone());
                (self.publish)(image.applied_records, image, delta);
            })
        };
        let offset = store.image().applied_records;
        plan.answers
            .into_iter()
            .map(|(answer, needs_commit)| match &committed {
                // Planned against records that were not committed: its answer does not hold.
                Err(error) if needs_commit => Err(ControllerError::Commit(error.to_string())),
                _ => answer
                    .map(|reply| (reply, offset))
                    .map_err(ControllerError::Refused),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_quorum::controller::ops::{AllocateProducerIds, CreateTopics, NewTopic};

    fn config(dir: &Path) -> BrokerConfig {
        let set = [("log.dirs".to_string(), dir.display().to_string())].into();
        BrokerConfig::from_map(set).expect("config").0
    }

    fn topic(name: &str) -> NewTopic {
        NewTopic {
            name: name.into(),
            num_partitions: 2,
            replication_factor: -1,
            assignments: Vec::new(),
            configs: Default::default(),
        }
    }

    /// Concurrent operations are all answered; every one sees the ones before it; each answer
    /// comes after the image holding its change was published.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_operations_see_each_other_and_are_published_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config(dir.path());
        let store =
            ControllerService::open_store(&dir.path().join("meta"), &config).expect("store");
        assert!(store.image().cluster_id.is_some());
        let published = Arc::new(Mutex::new(Arc::new(store.image().clone())));
        let sink = published.clone();
        let service = Arc::new(ControllerService::start(
            store,
            config.clone(),
            move |offset, image: Arc<MetadataImage>, _| {
                assert_eq!(offset, image.applied_records);
                *sink.lock().expect("lock") = image;
            },
        ));
        let mut tasks = Vec::new();
        for i in 0..20 {
            let service = service.clone();
            let published = published.clone();
            tasks.push(tokio::spawn(async move {
                let (block, offset) = service
                    .submit(AllocateProducerIds { broker_id: 1 })
                    .await
                    .expect("allocated");
                let seen = published.lock().expect("lock").clone();
                assert!(seen.next_producer_id >= block.first + block.size);
                assert!(seen.applied_records >= offset);
                let (created, _) = service
                    .submit(CreateTopics {
                        topics: vec![topic("shared"), topic(&format!("own-{i}"))],
                        validate_only: false,
                    })
                    .await
                    .expect("answered");
                assert!(created.topics[1].is_ok(), "{:?}", created.topics[1]);
                assert!(published
                    .lock()
                    .expect("lock")
                    .topic_by_name(&format!("own-{i}"))
                    .is_some());
                (block.first, created.topics[0].is_ok())
            }));
        }
        let mut firsts = Vec::new();
        let mut shared_created = 0;
        for t in tasks {
            let (first, created) = t.await.expect("task");
            firsts.push(first);
            shared_created += usize::from(created);
        }
        firsts.sort_unstable();
        firsts.dedup();
        assert_eq!(firsts.len(), 20, "every block is distinct");
        assert_eq!(shared_created, 1, "one creation of the shared topic wins");
        drop(service);
        // Everything committed is in the log: a reopened store has it.
        let store =
            ControllerService::open_store(&dir.path().join("meta"), &config).expect("reopen");
        assert_eq!(store.image().topic_count(), 21);
        assert_eq!(store.image().next_producer_id, 20 * plan::PRODUCER_ID_BLOCK);
    }

    /// Operations waiting together are planned in one drain and committed as one append:
    /// one publish for all of them, each answered as if alone.
    #[tokio::test]
    async fn waiting_operations_are_committed_together() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config(dir.path());
        let store =
            ControllerService::open_store(&dir.path().join("meta"), &config).expect("store");
        let publishes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = publishes.clone();
        let service = ControllerService::start(store, config, move |_, _, _| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        // On this single-threaded runtime the draining task runs only once every submission
        // below has queued its operation.
        let submissions = (0..10).map(|i| {
            service.submit(CreateTopics {
                topics: vec![topic(&format!("t{i}"))],
                validate_only: false,
            })
        });
        let replies = futures::future::join_all(submissions).await;
        assert!(replies
            .iter()
            .all(|r| r.as_ref().is_ok_and(|(r, _)| r.topics[0].is_ok())));
        let offset = replies[0].as_ref().map(|(_, o)| *o).expect("answered");
        assert!(replies
            .iter()
            .all(|r| matches!(r, Ok((_, o)) if *o == offset)));
        assert_eq!(publishes.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Nothing to commit: answered without a publish.
        let (again, again_offset) = service
            .submit(CreateTopics {
                topics: vec![topic("t0")],
                validate_only: false,
            })
            .await
            .expect("answered");
        assert_eq!(again.topics[0].as_ref().err().map(|e| e.code), Some(36));
        assert_eq!(
            again_offset, offset,
            "refused at the offset it was planned against"
        );
        assert_eq!(publishes.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
