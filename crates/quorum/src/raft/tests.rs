//! The Raft stores against openraft's own storage suite, and a single-voter quorum through
//! restarts, torn tails, snapshots with purged segments, and the import of a format-2 log.

use std::path::Path;
use std::time::Duration;

use openraft::testing::{StoreBuilder, Suite};
use uuid::Uuid;

use super::log_store::RaftLog;
use super::node::{MetadataQuorum, QuorumSettings};
use super::state_machine::ImageMachine;
use super::{ControllerNode, StorageError, TypeConfig};
use crate::image::MetadataImage;
use crate::log::{LocalMetadataLog, MetadataLog};
use crate::record::{ConfigResource, MetadataRecord};

struct Stores;

impl StoreBuilder<TypeConfig, RaftLog, ImageMachine, tempfile::TempDir> for Stores {
    async fn build(&self) -> Result<(tempfile::TempDir, RaftLog, ImageMachine), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        // Small segments, so that the suite's appends, truncations and purges cross them.
        let log = RaftLog::open(&dir.path().join("raft"), 512).expect("log");
        let machine = ImageMachine::open(&dir.path().join("raft/snapshots")).expect("machine");
        Ok((dir, log, machine))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Stores).expect("openraft's storage suite");
}

fn node() -> ControllerNode {
    ControllerNode {
        host: "127.0.0.1".into(),
        port: 9093,
    }
}

fn settings() -> QuorumSettings {
    QuorumSettings {
        election_timeout_ms: 150,
        open_timeout: Duration::from_secs(30),
        ..QuorumSettings::default()
    }
}

async fn open(dir: &Path, settings: &QuorumSettings) -> MetadataQuorum {
    MetadataQuorum::open_single(dir, 1, node(), settings)
        .await
        .expect("open the quorum")
}

/// Equal but for the counters of how each image was built.
fn assert_same(a: &MetadataImage, b: &MetadataImage) {
    let (mut a, mut b) = (a.clone(), b.clone());
    a.applied_records = 0;
    b.applied_records = 0;
    a.offset = 0;
    b.offset = 0;
    assert_eq!(a, b);
}

fn topic_records(name: &str, id: Uuid, partitions: i32) -> Vec<MetadataRecord> {
    let mut records = vec![MetadataRecord::Topic {
        name: name.into(),
        topic_id: id,
    }];
    records
        .extend((0..partitions).map(|p| MetadataRecord::partition_led_by_first(id, p, vec![1], 0)));
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_voter_leads_at_once_and_keeps_what_it_committed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = open(dir.path(), &settings()).await;
    assert_eq!(q.raft.current_leader().await, Some(1));
    let id = Uuid::from_u128(7);
    let at = q
        .write(vec![MetadataRecord::Cluster {
            cluster_id: "c1".into(),
        }])
        .await
        .expect("write");
    let at2 = q
        .write(topic_records("orders", id, 3))
        .await
        .expect("write");
    assert!(at2 > at, "offsets grow: {at} then {at2}");
    let image = q.image();
    assert_eq!(image.offset, at2);
    assert_eq!(image.cluster_id.as_deref(), Some("c1"));
    assert_eq!(
        image
            .topic_by_name("orders")
            .expect("topic")
            .partitions
            .len(),
        3
    );
    q.shutdown().await;
    drop(q);

    let q = open(dir.path(), &settings()).await;
    assert_same(&q.image(), &image);
    // The only voter leads again (in a new term, or in its old one when its vote was
    // committed), with everything it had applied.
    assert!(q.image().offset >= at2);
    // A second Cluster record does not replace the first.
    q.write(vec![MetadataRecord::Cluster {
        cluster_id: "c2".into(),
    }])
    .await
    .expect("write");
    assert_eq!(q.image().cluster_id.as_deref(), Some("c1"));
    q.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_fetches_ends_with_the_voters_image() {
    use super::state_machine::{Fetched, MachineHandle};
    let dir = tempfile::tempdir().expect("tempdir");
    let q = open(dir.path(), &settings()).await;
    q.write(vec![MetadataRecord::Cluster {
        cluster_id: "c1".into(),
    }])
    .await
    .expect("write");
    for n in 0..5u128 {
        q.write(topic_records(&format!("t{n}"), Uuid::from_u128(n + 1), 3))
            .await
            .expect("write");
    }
    let observer = MachineHandle::detached();
    let (tx, mut published) = tokio::sync::mpsc::channel(64);
    observer.attach(tx, 0);
    // Starting from nothing, it is sent the whole image.
    let first = q.machine.fetch(0, 100);
    assert!(matches!(first, Fetched::Image { .. }), "{first:?}");
    observer.apply_fetched(first).await;
    assert_same(&observer.image(), &q.image());
    assert_eq!(
        published.recv().await.expect("published").offset,
        q.image().offset
    );

    // Then entry by entry (a topic is four records, more than the two asked for: one entry
    // per answer), each published.
    for n in 5..10u128 {
        q.write(topic_records(&format!("t{n}"), Uuid::from_u128(n + 1), 3))
            .await
            .expect("write");
    }
    loop {
        let next = observer.image().offset + 1;
        match q.machine.fetch(next, 2) {
            Fetched::Entries(entries) if entries.is_empty() => break,
            Fetched::Entries(entries) => {
                assert_eq!(entries.len(), 1);
                assert_eq!(entries[0].0, next);
                observer.apply_fetched(Fetched::Entries(entries)).await;
                assert_eq!(published.recv().await.expect("published").offset, next);
            }
            other => panic!("the voter keeps the recent entries: {other:?}"),
        }
    }
    assert_same(&observer.image(), &q.image());
    assert_eq!(observer.image().topic_count(), 10);

    // What does not follow its image is ignored: entries past a gap, an older image.
    let at = observer.image().offset;
    observer
        .apply_fetched(Fetched::Entries(vec![(
            at + 5,
            topic_records("gap", Uuid::from_u128(99), 1),
        )]))
        .await;
    observer
        .apply_fetched(Fetched::Image {
            offset: at - 3,
            records: vec![MetadataRecord::Cluster {
                cluster_id: "c1".into(),
            }],
        })
        .await;
    assert_same(&observer.image(), &q.image());

    // A fetch for the next entry waits for it.
    let mut applied = q.machine.applied_offsets();
    let waiting = tokio::spawn(async move { applied.wait_for(|o| *o > at).await.map(|o| *o) });
    q.write(topic_records("late", Uuid::from_u128(100), 1))
        .await
        .expect("write");
    assert!(waiting.await.expect("task").expect("offset") > at);
    q.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_cut_and_the_log_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = open(dir.path(), &settings()).await;
    q.write(topic_records("a", Uuid::from_u128(1), 1))
        .await
        .expect("write");
    let image = q.image();
    q.shutdown().await;
    drop(q);
    let segments: Vec<_> = std::fs::read_dir(dir.path().join("raft/log"))
        .expect("log dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(segments.len(), 1);
    let good = std::fs::metadata(&segments[0]).expect("stat").len();
    let mut bytes = std::fs::read(&segments[0]).expect("read");
    bytes.extend_from_slice(&[0, 0, 0, 40, 1, 2, 3, 4, b'{']);
    std::fs::write(&segments[0], &bytes).expect("tear");

    let q = open(dir.path(), &settings()).await;
    assert_same(&q.image(), &image);
    q.write(topic_records("b", Uuid::from_u128(2), 1))
        .await
        .expect("write after the cut");
    let image = q.image();
    q.shutdown().await;
    drop(q);
    assert!(std::fs::metadata(&segments[0]).expect("stat").len() > good);
    let q = open(dir.path(), &settings()).await;
    assert_same(&q.image(), &image);
    assert!(q.image().topic_by_name("b").is_some());
    q.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_rebuild_the_image_once_segments_are_purged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = QuorumSettings {
        snapshot_every_entries: 20,
        segment_bytes: 2048,
        ..settings()
    };
    let q = open(dir.path(), &settings).await;
    let mut last = 0;
    for n in 0..120u128 {
        let mut records = topic_records(&format!("t{n}"), Uuid::from_u128(n + 1), 2);
        if n % 3 == 0 {
            records.push(MetadataRecord::Config {
                resource: ConfigResource::Topic(format!("t{n}")),
                name: "retention.ms".into(),
                value: Some(n.to_string()),
            });
        }
        if n % 10 == 9 {
            records.push(MetadataRecord::RemoveTopic {
                topic_id: Uuid::from_u128(n),
            });
        }
        last = q.write(records).await.expect("write");
    }
    // A snapshot near the end, and the log before it purged.
    q.raft
        .wait(Some(Duration::from_secs(30)))
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index + 20 >= last) && m.purged.is_some(),
            "a recent snapshot and a purge",
        )
        .await
        .expect("snapshot");
    let image = q.image();
    q.shutdown().await;
    drop(q);
    let snapshots = std::fs::read_dir(dir.path().join("raft/snapshots"))
        .expect("snapshots")
        .count();
    assert_eq!(snapshots, 1, "only the newest snapshot is kept");
    let first_segment: u64 = std::fs::read_dir(dir.path().join("raft/log"))
        .expect("log")
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .split('.')
                .next()?
                .parse()
                .ok()
        })
        .min()
        .expect("a segment");
    assert!(first_segment > 1, "segments below the purge were deleted");

    let q = open(dir.path(), &settings).await;
    assert_same(&q.image(), &image);
    assert_eq!(q.image().topic_count(), 120 - 12);
    assert!(q.image().was_removed(&Uuid::from_u128(9)));
    q.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format2_metadata_log_is_imported_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gone = Uuid::from_u128(99);
    let mut records = vec![MetadataRecord::Cluster {
        cluster_id: "old".into(),
    }];
    records.extend(topic_records("kept", Uuid::from_u128(1), 4));
    records.extend(topic_records("gone", gone, 1));
    records.push(MetadataRecord::RemoveTopic { topic_id: gone });
    records.push(MetadataRecord::Config {
        resource: ConfigResource::Broker(None),
        name: "log.retention.ms".into(),
        value: Some("1000".into()),
    });
    records.push(MetadataRecord::ProducerIds {
        next_producer_id: 2000,
    });
    {
        let (mut log, _) = LocalMetadataLog::open(dir.path()).expect("legacy log");
        log.append(&records).expect("append");
    }
    let expected = MetadataImage::from_records(&records);

    let q = open(dir.path(), &settings()).await;
    assert_same(&q.image(), &expected);
    assert!(q.image().was_removed(&gone));
    assert!(!dir.path().join("metadata.log").exists());
    assert!(dir.path().join("metadata.log.imported").exists());
    q.write(topic_records("new", Uuid::from_u128(2), 1))
        .await
        .expect("write");
    let image = q.image();
    q.shutdown().await;
    drop(q);

    let q = open(dir.path(), &settings()).await;
    assert_same(&q.image(), &image);
    q.shutdown().await;
}

/// A voter on a loopback port: its quorum, and the task serving the other voters.
struct Voter {
    id: u64,
    dir: std::path::PathBuf,
    quorum: MetadataQuorum,
    server: tokio::task::JoinHandle<()>,
}

/// Serves the other voters' requests on `listener` until aborted (its connections with it).
fn serve(
    listener: tokio::net::TcpListener,
    raft: super::MetadataRaft,
    machine: super::state_machine::MachineHandle,
    id: u64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            let services = std::sync::Arc::new(super::rpc::InternalServices {
                raft: raft.clone(),
                node_id: id,
                machine: machine.clone(),
                observers: Default::default(),
                ops: Default::default(),
            });
            connections.spawn(super::rpc::serve_connection(stream, services));
        }
    })
}

async fn start_voter(
    id: u64,
    dir: &Path,
    voters: &std::collections::BTreeMap<u64, ControllerNode>,
    listener: tokio::net::TcpListener,
    settings: &QuorumSettings,
) -> Voter {
    let quorum = MetadataQuorum::open(dir, id, voters.clone(), settings)
        .await
        .expect("open a voter");
    let server = serve(listener, quorum.raft.clone(), quorum.machine.clone(), id);
    Voter {
        id,
        dir: dir.to_path_buf(),
        quorum,
        server,
    }
}

impl Voter {
    async fn stop(self) -> std::path::PathBuf {
        self.server.abort();
        let _ = self.server.await;
        self.quorum.shutdown().await;
        self.dir
    }
}

/// Waits until every voter has applied `offset`; returns their images.
async fn converged(voters: &[&Voter], offset: u64) -> Vec<MetadataImage> {
    for v in voters {
        v.quorum
            .raft
            .wait(Some(Duration::from_secs(30)))
            .metrics(
                |m| m.last_applied.is_some_and(|l| l.index >= offset),
                format!("node {} applies {offset}", v.id),
            )
            .await
            .expect("caught up");
    }
    voters.iter().map(|v| v.quorum.image()).collect()
}

/// Writes through whichever voter leads, retrying while leadership settles.
async fn write_to_leader(voters: &[&Voter], records: Vec<MetadataRecord>) -> (u64, u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        for v in voters {
            if v.quorum.raft.current_leader().await == Some(v.id) {
                match v.quorum.write(records.clone()).await {
                    Ok(offset) => return (v.id, offset),
                    Err(error) => tracing::info!(%error, "write refused; retrying"),
                }
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no leader took the write"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Three voters on loopback ports form a quorum, elect a leader and replicate to every
/// voter; when the leader stops, the two others elect a new one and go on committing; the
/// old leader comes back on its port, catches up, and all three images agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_voters_elect_replicate_and_survive_the_loss_of_the_leader() {
    let here = tempfile::tempdir().expect("tempdir");
    let settings = QuorumSettings {
        election_timeout_ms: 300,
        ..settings()
    };
    let mut listeners = Vec::new();
    let mut voters = std::collections::BTreeMap::new();
    for id in 1..=3u64 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        voters.insert(
            id,
            ControllerNode {
                host: "127.0.0.1".into(),
                port: listener.local_addr().expect("addr").port(),
            },
        );
        listeners.push((id, listener));
    }
    let mut nodes = Vec::new();
    for (id, listener) in listeners {
        let dir = here.path().join(format!("n{id}"));
        nodes.push(start_voter(id, &dir, &voters, listener, &settings).await);
    }
    let leader = nodes[0]
        .quorum
        .wait_for_leader(Duration::from_secs(30))
        .await
        .expect("a leader");
    assert!(voters.contains_key(&leader));

    let all: Vec<&Voter> = nodes.iter().collect();
    let mut records = vec![MetadataRecord::Cluster {
        cluster_id: "three".into(),
    }];
    records.extend(topic_records("first", Uuid::from_u128(1), 3));
    let (leader, offset) = write_to_leader(&all, records).await;
    let images = converged(&all, offset).await;
    assert!(images
        .iter()
        .all(|i| i.cluster_id.as_deref() == Some("three")));
    assert_same(&images[0], &images[1]);
    assert_same(&images[0], &images[2]);
    let state = nodes[(leader - 1) as usize].quorum.describe();
    assert_eq!(state.leader, Some(leader));
    assert_eq!(state.voters.len(), 3);
    assert!(
        state.voters.iter().all(|(_, end)| end.is_some()),
        "{state:?}"
    );

    // The leader stops; the two others elect a new one and commit without it.
    let old = nodes.remove((leader - 1) as usize);
    let old_port = voters[&old.id].port;
    let old_id = old.id;
    let old_dir = old.stop().await;
    let rest: Vec<&Voter> = nodes.iter().collect();
    let (new_leader, offset) =
        write_to_leader(&rest, topic_records("second", Uuid::from_u128(2), 1)).await;
    assert_ne!(new_leader, old_id);
    let images = converged(&rest, offset).await;
    assert!(images[0].topic_by_name("second").is_some());
    assert_same(&images[0], &images[1]);

    // The old leader returns on its port, catches up and agrees.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", old_port))
        .await
        .expect("rebind the old port");
    nodes.push(start_voter(old_id, &old_dir, &voters, listener, &settings).await);
    let all: Vec<&Voter> = nodes.iter().collect();
    let (_, offset) = write_to_leader(&all, topic_records("third", Uuid::from_u128(3), 1)).await;
    let images = converged(&all, offset).await;
    for image in &images[1..] {
        assert_same(&images[0], image);
    }
    assert_eq!(images[0].topic_count(), 3);
    for node in nodes {
        node.stop().await;
    }
}
