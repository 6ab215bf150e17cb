//! Three `strata` processes on loopback ports, each configured as a Kafka KRaft node in
//! combined mode (`process.roles=broker,controller`, `controller.quorum.voters` naming all
//! three): they form the metadata quorum, register, and serve a topic whose partitions are
//! spread over them (replication factor 1). Metadata changes sent to any node are forwarded
//! to the active controller; a partition is served by its leader only; when the active
//! controller is killed, the others elect a new one and topics can still be created.

mod support;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use support::{batch, Client};

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

struct Node {
    id: i32,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

fn spawn(dir: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("broker.log"))
        .expect("log");
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("serve")
        .arg("--config")
        .arg(dir.join("server.properties"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start strata")
}

impl Node {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("broker.log")).unwrap_or_default()
    }

    fn client(&self) -> Client {
        Client::connect(self.port)
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Starts three combined nodes and waits until each serves clients.
fn start_cluster(here: &std::path::Path) -> Vec<Node> {
    let ids = [1, 2, 3];
    let ports: Vec<u16> = ids.iter().map(|_| free_port()).collect();
    let controller_ports: Vec<u16> = ids.iter().map(|_| free_port()).collect();
    let voters = ids
        .iter()
        .zip(&controller_ports)
        .map(|(id, p)| format!("{id}@127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let dir = here.join(format!("node{id}"));
        std::fs::create_dir_all(&dir).expect("dir");
        let properties = format!(
            "process.roles=broker,controller\n\
             node.id={id}\n\
             controller.quorum.voters={voters}\n\
             listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n\
             controller.listener.names=CONTROLLER\n\
             inter.broker.listener.name=PLAINTEXT\n\
             listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n\
             log.dirs={data}\n\
             offsets.topic.replication.factor=1\n\
             controller.quorum.election.timeout.ms=500\n\
             broker.session.timeout.ms=3000\n\
             broker.heartbeat.interval.ms=500\n\
             console.enable=false\n",
            port = ports[i],
            controller = controller_ports[i],
            data = dir.join("data").display(),
        );
        std::fs::write(dir.join("server.properties"), properties).expect("properties");
        let child = spawn(&dir);
        nodes.push(Node {
            id: *id,
            port: ports[i],
            dir,
            child: Some(child),
        });
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for node in &mut nodes {
        let ours = format!("127.0.0.1:{}", node.port);
        loop {
            let log = node.log();
            if log
                .lines()
                .any(|l| l.contains("listening") && l.contains(&ours))
            {
                break;
            }
            let exited = node
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            assert!(!exited, "node {} exited: {log}", node.id);
            assert!(
                Instant::now() < deadline,
                "node {} did not start: {log}",
                node.id
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    nodes
}

fn t(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn try_metadata(c: &mut Client, topics: &[&str]) -> Option<MetadataResponse> {
    let req = MetadataRequest::default().with_topics(Some(
        topics
            .iter()
            .map(|n| metadata_request::MetadataRequestTopic::default().with_name(Some(t(n))))
            .collect(),
    ));
    c.call(ApiKey::Metadata, 12, &req)
}

fn create(c: &mut Client, name: &str, partitions: i32) -> i16 {
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(t(name))
            .with_num_partitions(partitions)
            .with_replication_factor(1)]);
    let r: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &req).expect("answer");
    r.topics[0].error_code
}

/// Produces one record; the error code and base offset.
fn produce(c: &mut Client, topic: &str, partition: i32, value: &[u8]) -> (i16, i64) {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(t(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(batch(&[value], Compression::None)))])]);
    let r: ProduceResponse = c.call(ApiKey::Produce, 9, &req).expect("answer");
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// Waits until `check` holds for `node`'s Metadata answer about `topics`.
fn wait_metadata(
    node: &Node,
    topics: &[&str],
    what: &str,
    check: impl Fn(&MetadataResponse) -> bool,
) -> MetadataResponse {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // A node just restarted may not listen yet.
        if std::net::TcpStream::connect(("127.0.0.1", node.port)).is_ok() {
            let Some(m) = try_metadata(&mut node.client(), topics) else {
                panic!("node {} closed a Metadata request: {}", node.id, node.log());
            };
            if check(&m) {
                return m;
            }
            assert!(Instant::now() < deadline, "node {}: {what}: {m:?}", node.id);
        } else {
            assert!(
                Instant::now() < deadline,
                "node {} does not listen",
                node.id
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn three_nodes_share_the_metadata_and_serve_their_partitions() {
    let here = tempfile::tempdir().expect("tempdir");
    let mut nodes = start_cluster(here.path());

    // Every node registered, and each knows the others' endpoints.
    for node in &nodes {
        let m = wait_metadata(node, &[], "three brokers", |m| m.brokers.len() == 3);
        for other in &nodes {
            let b = m
                .brokers
                .iter()
                .find(|b| b.node_id.0 == other.id)
                .expect("listed");
            assert_eq!(b.port, i32::from(other.port));
        }
        assert!((1..=3).contains(&m.controller_id.0), "{m:?}");
    }

    // A topic created through node 2 is spread over the three (forwarded to the active
    // controller unless node 2 is it), and every node serves the same metadata.
    assert_eq!(create(&mut nodes[1].client(), "spread", 6), 0);
    // Each node serves the topic once it has applied the creation (as in Kafka, the others
    // may answer UNKNOWN_TOPIC_OR_PARTITION a moment longer).
    let mut m = None;
    for node in &nodes {
        m = Some(wait_metadata(node, &["spread"], "the topic", |m| {
            m.topics.first().is_some_and(|t| t.partitions.len() == 6)
        }));
    }
    let m = m.expect("three nodes");
    let leaders: Vec<(i32, i32)> = m.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.leader_id.0))
        .collect();
    for id in 1..=3 {
        assert_eq!(
            leaders.iter().filter(|(_, l)| *l == id).count(),
            2,
            "two partitions per broker: {leaders:?}"
        );
    }
    let controller = m.controller_id.0;

    // Each partition is served by its leader, and refused by the others.
    for (partition, leader) in &leaders {
        for node in &nodes {
            let (code, offset) = produce(&mut node.client(), "spread", *partition, b"v");
            if node.id == *leader {
                assert_eq!(
                    (code, offset),
                    (0, 0),
                    "partition {partition} at its leader"
                );
            } else {
                assert_eq!(code, 6, "NOT_LEADER_OR_FOLLOWER from node {}", node.id);
            }
        }
    }

    // A group's coordinator is the leader of its partition of __consumer_offsets, the same
    // answer from every node.
    let find = |node: &Node| -> (i16, i32) {
        let req = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_static_str("billing"))
            .with_key_type(0);
        let r: FindCoordinatorResponse = node
            .client()
            .call(ApiKey::FindCoordinator, 3, &req)
            .expect("answer");
        (r.error_code, r.node_id.0)
    };
    let (code, coordinator) = find(&nodes[0]);
    assert_eq!(code, 0);
    for node in &nodes[1..] {
        assert_eq!(find(node), (0, coordinator));
    }
    let offsets = wait_metadata(&nodes[0], &["__consumer_offsets"], "offsets topic", |m| {
        m.topics.first().is_some_and(|t| !t.partitions.is_empty())
    });
    let mut offsets_leaders: Vec<i32> = offsets.topics[0]
        .partitions
        .iter()
        .map(|p| p.leader_id.0)
        .collect();
    offsets_leaders.sort_unstable();
    offsets_leaders.dedup();
    assert_eq!(
        offsets_leaders,
        vec![1, 2, 3],
        "internal partitions spread too"
    );

    // The active controller dies; the two others elect a new one and create topics.
    let index = nodes
        .iter()
        .position(|n| n.id == controller)
        .expect("a node");
    nodes[index].kill9();
    let survivors: Vec<&Node> = nodes.iter().filter(|n| n.id != controller).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let code = create(&mut survivors[0].client(), "after", 2);
        if code == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no creation after the controller died: {code}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let m = wait_metadata(survivors[1], &["after"], "the new topic", |m| {
        m.topics.first().is_some_and(|t| t.partitions.len() == 2)
    });
    assert_ne!(m.controller_id.0, controller, "a new active controller");

    // Without its heartbeats the dead broker is fenced: clients no longer see it, and its
    // partitions (replication factor 1) are offline.
    let orphaned: Vec<i32> = leaders
        .iter()
        .filter(|(_, l)| *l == controller)
        .map(|(p, _)| *p)
        .collect();
    wait_metadata(survivors[0], &["spread"], "the dead broker fenced", |m| {
        m.brokers.len() == 2
            && m.topics[0]
                .partitions
                .iter()
                .filter(|p| orphaned.contains(&p.partition_index))
                .all(|p| p.leader_id.0 == -1)
    });

    // It comes back: it heartbeats, is unfenced, and leads its partitions again with the
    // records they held.
    nodes[index].child = Some(spawn(&nodes[index].dir));
    for node in &nodes {
        wait_metadata(node, &["spread"], "the broker back", |m| {
            m.brokers.len() == 3
                && m.topics.first().is_some_and(|t| {
                    t.partitions
                        .iter()
                        .filter(|p| orphaned.contains(&p.partition_index))
                        .all(|p| p.leader_id.0 == controller)
                })
        });
    }
    let (code, offset) = produce(&mut nodes[index].client(), "spread", orphaned[0], b"w");
    assert_eq!((code, offset), (0, 1), "the old record is kept");
}
