//! The data directory's format and checkpoints against a real broker: `meta.properties` with
//! the format version (newer versions and other node ids refused), the recovery-point and
//! high-watermark checkpoints, and the clean-shutdown marker that decides whether a start
//! validates closed segments.

mod support;

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use strata_quorum::log::{LocalMetadataLog, MetadataLog};
use strata_quorum::{ConfigResource, MetadataRecord};
use support::{batch, Client, TestBroker};

fn t(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn create(c: &mut Client, name: &str, partitions: i32) {
    let req = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(t(name))
        .with_num_partitions(partitions)
        .with_replication_factor(1)]);
    let r: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &req).expect("answer");
    assert_eq!(r.topics[0].error_code, 0);
}

fn produce(c: &mut Client, topic: &str, partition: i32, values: &[&[u8]]) -> i64 {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(t(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(batch(values, Compression::None)))])]);
    let r: ProduceResponse = c.call(ApiKey::Produce, 9, &req).expect("answer");
    let p = &r.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 0);
    p.base_offset
}

/// Removes what a format-1 or format-2 directory may lack: the checkpoints and the
/// clean-shutdown marker.
fn remove_checkpoints(data: &std::path::Path) {
    for name in [
        ".clean-shutdown",
        "recovery-point-offset-checkpoint",
        "replication-offset-checkpoint",
    ] {
        let _ = std::fs::remove_file(data.join(name));
    }
}

/// The config overrides of `topic` (DescribeConfigs).
fn topic_configs(c: &mut Client, topic: &str) -> HashMap<String, String> {
    let req = DescribeConfigsRequest::default().with_resources(vec![
        describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_string(topic.to_string())),
    ]);
    let r: DescribeConfigsResponse = c.call(ApiKey::DescribeConfigs, 4, &req).expect("answer");
    assert_eq!(r.results[0].error_code, 0);
    r.results[0]
        .configs
        .iter()
        .filter_map(|e| Some((e.name.to_string(), e.value.as_ref()?.to_string())))
        .collect()
}

/// Parses a Kafka offset checkpoint file.
fn checkpoint(path: &std::path::Path) -> HashMap<(String, i32), i64> {
    let text = std::fs::read_to_string(path).expect("checkpoint file");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("0"), "version line");
    let count: usize = lines.next().expect("count").parse().expect("count");
    let entries: HashMap<(String, i32), i64> = lines
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (
                (f[0].to_string(), f[1].parse().expect("p")),
                f[2].parse().expect("o"),
            )
        })
        .collect();
    assert_eq!(entries.len(), count);
    entries
}

fn properties(path: &std::path::Path) -> HashMap<String, String> {
    std::fs::read_to_string(path)
        .expect("meta.properties")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn wait_for_log(broker: &TestBroker, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !broker.log().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "log never said {needle:?}:\n{}",
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn clean_shutdown_writes_checkpoints_and_marker_and_crash_is_seen_as_unclean() {
    let mut broker = TestBroker::start(&[]);
    let data = broker.data_dir();
    let mut c = broker.client();
    create(&mut c, "cp", 2);
    produce(&mut c, "cp", 0, &[b"a", b"b", b"c"]);
    produce(&mut c, "cp", 1, &[b"d"]);
    drop(c);

    let meta = properties(&data.join("meta.properties"));
    assert_eq!(meta["strata.format.version"], "3");
    assert_eq!(meta["version"], "1");
    assert_eq!(meta["node.id"], "1");
    assert_eq!(meta["cluster.id"].len(), 22, "{meta:?}");

    broker.stop();
    assert!(
        data.join(".clean-shutdown").exists(),
        "clean shutdown marker"
    );
    let rp = checkpoint(&data.join("recovery-point-offset-checkpoint"));
    let hw = checkpoint(&data.join("replication-offset-checkpoint"));
    assert_eq!(rp[&("cp".to_string(), 0)], 3);
    assert_eq!(rp[&("cp".to_string(), 1)], 1);
    assert_eq!(hw[&("cp".to_string(), 0)], 3);
    assert_eq!(hw[&("cp".to_string(), 1)], 1);

    // A clean start consumes the marker, so a crash from then on is seen as unclean.
    broker.start_again();
    assert!(
        !data.join(".clean-shutdown").exists(),
        "marker consumed at start"
    );
    assert!(!broker.log().contains("did not shut down cleanly"));
    let mut c = broker.client();
    assert_eq!(produce(&mut c, "cp", 0, &[b"e"]), 3);
    drop(c);
    broker.kill9();
    broker.start_again();
    wait_for_log(&broker, "did not shut down cleanly");
    let mut c = broker.client();
    assert_eq!(
        produce(&mut c, "cp", 0, &[b"f"]),
        4,
        "acknowledged records kept"
    );
}

fn refused(data: &std::path::Path, node_id: i32) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("serve")
        .arg("--set")
        .arg(format!("log.dirs={}", data.display()))
        .arg("--set")
        .arg("listeners=PLAINTEXT://127.0.0.1:0")
        .arg("--set")
        .arg(format!("node.id={node_id}"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(!status.success(), "start-up must fail");
            let out = child.wait_with_output().expect("output");
            return String::from_utf8_lossy(&out.stderr).to_string();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("broker started on a directory it must refuse");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn newer_formats_and_other_nodes_are_refused_and_old_directories_upgraded() {
    let mut broker = TestBroker::start(&[]);
    let data = broker.data_dir();
    let mut c = broker.client();
    create(&mut c, "up", 1);
    produce(&mut c, "up", 0, &[b"kept"]);
    drop(c);
    broker.stop();

    let err = refused(&data, 7);
    assert!(
        err.contains("node.id 1") && err.contains("node.id=1"),
        "{err}"
    );

    let path = data.join("meta.properties");
    let original = std::fs::read_to_string(&path).expect("read");
    std::fs::write(
        &path,
        original.replace("strata.format.version=3", "strata.format.version=9"),
    )
    .expect("write");
    let err = refused(&data, 1);
    assert!(
        err.contains("format version 9") && err.contains("newer Strata"),
        "{err}"
    );

    // A directory of format version 2 (the metadata in one `meta/metadata.log`, no Raft
    // log) is upgraded in place: its records are imported and its data kept. It is made here
    // from the directory above: the same partition data, the metadata written as records.
    let cluster_id = properties(&path)["cluster.id"].clone();
    let topic_id: uuid::Uuid = std::fs::read_to_string(data.join("up-0/partition.metadata"))
        .expect("partition.metadata")
        .lines()
        .find_map(|l| l.strip_prefix("topic_id:"))
        .expect("topic id")
        .trim()
        .parse()
        .expect("uuid");
    let gone = uuid::Uuid::new_v4();
    let records = vec![
        MetadataRecord::Cluster { cluster_id },
        MetadataRecord::Topic {
            name: "up".into(),
            topic_id,
        },
        MetadataRecord::partition_led_by_first(topic_id, 0, vec![1], 0),
        MetadataRecord::Config {
            resource: ConfigResource::Topic("up".into()),
            name: "retention.ms".into(),
            value: Some("86400000".into()),
        },
        MetadataRecord::Topic {
            name: "gone".into(),
            topic_id: gone,
        },
        MetadataRecord::RemoveTopic { topic_id: gone },
        MetadataRecord::ProducerIds {
            next_producer_id: 5000,
        },
    ];
    std::fs::remove_dir_all(data.join("meta")).expect("remove the Raft metadata");
    let (mut legacy, _) = LocalMetadataLog::open(&data.join("meta")).expect("legacy log");
    legacy.append(&records).expect("append");
    drop(legacy);
    std::fs::write(
        &path,
        original.replace("strata.format.version=3", "strata.format.version=2"),
    )
    .expect("write");
    remove_checkpoints(&data);
    broker.start_again();
    wait_for_log(&broker, "upgraded the data directory format");
    assert!(broker.log().contains("imported the metadata log"));
    assert_eq!(properties(&path)["strata.format.version"], "3");
    assert!(data.join("meta/metadata.log.imported").exists());
    assert!(!data.join("meta/metadata.log").exists());
    let mut c = broker.client();
    assert_eq!(
        produce(&mut c, "up", 0, &[b"next"]),
        1,
        "the old record is kept"
    );
    let configs = topic_configs(&mut c, "up");
    assert_eq!(
        configs.get("retention.ms").map(String::as_str),
        Some("86400000"),
        "{configs:?}"
    );
    drop(c);

    // A directory from before format versions (no meta.properties, no checkpoints, no
    // marker) is upgraded in place and keeps its data.
    broker.stop();
    let _ = std::fs::remove_file(data.join("meta.properties"));
    remove_checkpoints(&data);
    broker.start_again();
    wait_for_log(&broker, "upgraded the data directory format");
    assert_eq!(properties(&path)["strata.format.version"], "3");
    let mut c = broker.client();
    assert_eq!(
        produce(&mut c, "up", 0, &[b"last"]),
        2,
        "the records are kept"
    );
}

/// Every appended batch carries the partition's leader epoch (whatever the producer wrote in
/// `partitionLeaderEpoch`), `leader-epoch-checkpoint` records it, and OffsetForLeaderEpoch
/// answers from it as Kafka does.
#[test]
fn batches_carry_the_leader_epoch_and_offset_for_leader_epoch_answers() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };

    let broker = TestBroker::start(&[]);
    let mut c = broker.client();
    create(&mut c, "ep", 1);
    let mut records = batch(&[b"a", b"b", b"c"], Compression::None).to_vec();
    records[12..16].copy_from_slice(&0x1234_5678i32.to_be_bytes());
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(t("ep"))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records.into()))])]);
    let r: ProduceResponse = c.call(ApiKey::Produce, 9, &req).expect("answer");
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);

    let fetch = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(t("ep"))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let f: FetchResponse = c.call(ApiKey::Fetch, 12, &fetch).expect("fetch");
    let bytes = f.responses[0].partitions[0]
        .records
        .clone()
        .expect("records");
    assert_eq!(
        i32::from_be_bytes(bytes[12..16].try_into().expect("4 bytes")),
        0,
        "the leader's epoch replaced the producer's"
    );
    let checkpoint =
        std::fs::read_to_string(broker.data_dir().join("ep-0/leader-epoch-checkpoint"))
            .expect("leader-epoch-checkpoint");
    assert_eq!(checkpoint, "0\n1\n0 0\n");

    let ask = |c: &mut Client, version: i16, topic: &str, epoch: i32, current: i32| {
        let req = OffsetForLeaderEpochRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_topics(vec![OffsetForLeaderTopic::default()
                .with_topic(t(topic))
                .with_partitions(vec![OffsetForLeaderPartition::default()
                    .with_partition(0)
                    .with_leader_epoch(epoch)
                    .with_current_leader_epoch(current)])]);
        let r: OffsetForLeaderEpochResponse = c
            .call(ApiKey::OffsetForLeaderEpoch, version, &req)
            .expect("answer");
        let p = &r.topics[0].partitions[0];
        (p.error_code, p.leader_epoch, p.end_offset)
    };
    for version in [2, 3, 4] {
        assert_eq!(ask(&mut c, version, "ep", 0, -1), (0, 0, 3), "v{version}");
        assert_eq!(ask(&mut c, version, "ep", 0, 0), (0, 0, 3), "v{version}");
        assert_eq!(
            ask(&mut c, version, "ep", 4, 0),
            (0, -1, -1),
            "above the latest epoch"
        );
        assert_eq!(
            ask(&mut c, version, "ep", 0, 2),
            (75, -1, -1),
            "UNKNOWN_LEADER_EPOCH"
        );
        assert_eq!(
            ask(&mut c, version, "nope", 0, -1),
            (3, -1, -1),
            "UNKNOWN_TOPIC_OR_PARTITION"
        );
    }
}
