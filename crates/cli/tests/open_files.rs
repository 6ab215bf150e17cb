//! Partitions past the open-file limit: a broker whose hard RLIMIT_NOFILE is 512 hosts 600
//! partitions (four descriptors each, as before, would have needed 2,400), produces to and
//! fetches from all of them, and starts again after a clean stop and after `kill -9` with
//! every partition served. Segment files live in the descriptor cache
//! (`strata_log::file_cache`), within a budget derived from the limit.

mod support;

use std::collections::HashMap;

use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use support::{batch, Client, TestBroker};

const NOFILE: u64 = 512;
const TOPICS: usize = 6;
const PARTITIONS: i32 = 100;

fn t(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn topic(i: usize) -> String {
    format!("fd-{i}")
}

/// Every 7th partition gets more batches (and, with small segments, closed segments).
fn sampled(p: i32) -> bool {
    p % 7 == 0
}

fn create(c: &mut Client, name: &str) {
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(t(name))
            .with_num_partitions(PARTITIONS)
            .with_replication_factor(1)
            .with_configs(vec![CreatableTopicConfig::default()
                .with_name(StrBytes::from_static_str("segment.bytes"))
                .with_value(Some(StrBytes::from_static_str("300")))])]);
    let r: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &req).expect("answer");
    assert_eq!(
        r.topics[0].error_code, 0,
        "{name}: {:?}",
        r.topics[0].error_message
    );
}

/// One acks=all Produce of one batch to each of `partitions` of every topic; all must succeed.
fn produce(c: &mut Client, partitions: &[i32], value: &str) {
    let data = (0..TOPICS)
        .map(|i| {
            TopicProduceData::default()
                .with_name(t(&topic(i)))
                .with_partition_data(
                    partitions
                        .iter()
                        .map(|p| {
                            let v = format!("{value} {i}/{p}");
                            PartitionProduceData::default()
                                .with_index(*p)
                                .with_records(Some(batch(&[v.as_bytes()], Compression::None)))
                        })
                        .collect(),
                )
        })
        .collect();
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(data);
    let r: ProduceResponse = c.call(ApiKey::Produce, 9, &req).expect("answer");
    for tr in &r.responses {
        for pr in &tr.partition_responses {
            assert_eq!(pr.error_code, 0, "produce {:?}-{}", tr.name, pr.index);
        }
    }
}

/// The number of batches in every partition of every topic (each read from offset 0).
fn batch_counts(c: &mut Client) -> HashMap<(String, i32), usize> {
    let req = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(64 << 20)
        .with_session_epoch(-1)
        .with_topics(
            (0..TOPICS)
                .map(|i| {
                    FetchTopic::default()
                        .with_topic(t(&topic(i)))
                        .with_partitions(
                            (0..PARTITIONS)
                                .map(|p| {
                                    FetchPartition::default()
                                        .with_partition(p)
                                        .with_fetch_offset(0)
                                        .with_partition_max_bytes(1 << 20)
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
    let r: FetchResponse = c.call(ApiKey::Fetch, 12, &req).expect("fetch");
    assert_eq!(r.error_code, 0);
    let mut counts = HashMap::new();
    for tr in &r.responses {
        for pr in &tr.partitions {
            assert_eq!(
                pr.error_code, 0,
                "fetch {:?}-{}",
                tr.topic, pr.partition_index
            );
            let bytes = pr.records.clone().unwrap_or_default();
            let mut n = 0;
            for b in strata_protocol::batch::iter_batches(&bytes) {
                b.expect("whole batches");
                n += 1;
            }
            counts.insert((tr.topic.0.to_string(), pr.partition_index), n);
        }
    }
    assert_eq!(counts.len(), TOPICS * PARTITIONS as usize);
    counts
}

/// A fetch returns one segment at most: read each partition to its end, batch by batch.
fn total_batches(c: &mut Client) -> HashMap<(String, i32), usize> {
    let mut totals: HashMap<(String, i32), usize> = HashMap::new();
    let mut offsets: HashMap<(String, i32), i64> = HashMap::new();
    // Bounded: every round reads at least one batch of some partition or ends.
    for _ in 0..100 {
        let req = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(64 << 20)
            .with_session_epoch(-1)
            .with_topics(
                (0..TOPICS)
                    .map(|i| {
                        FetchTopic::default()
                            .with_topic(t(&topic(i)))
                            .with_partitions(
                                (0..PARTITIONS)
                                    .map(|p| {
                                        let at = offsets.get(&(topic(i), p)).copied().unwrap_or(0);
                                        FetchPartition::default()
                                            .with_partition(p)
                                            .with_fetch_offset(at)
                                            .with_partition_max_bytes(1 << 20)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
        let r: FetchResponse = c.call(ApiKey::Fetch, 12, &req).expect("fetch");
        let mut progressed = false;
        for tr in &r.responses {
            for pr in &tr.partitions {
                assert_eq!(
                    pr.error_code, 0,
                    "fetch {:?}-{}",
                    tr.topic, pr.partition_index
                );
                let key = (tr.topic.0.to_string(), pr.partition_index);
                let bytes = pr.records.clone().unwrap_or_default();
                for b in strata_protocol::batch::iter_batches(&bytes) {
                    let (header, _) = b.expect("whole batches");
                    *totals.entry(key.clone()).or_default() += 1;
                    offsets.insert(key.clone(), header.next_offset());
                    progressed = true;
                }
            }
        }
        if !progressed {
            return totals;
        }
    }
    panic!("reading every partition to its end did not finish");
}

fn check(c: &mut Client, rounds: usize) {
    let counts = batch_counts(c);
    assert!(counts.values().all(|n| *n >= 1), "every partition has data");
    let totals = total_batches(c);
    for i in 0..TOPICS {
        for p in 0..PARTITIONS {
            let want = if sampled(p) { rounds } else { 1 };
            assert_eq!(
                totals.get(&(topic(i), p)).copied(),
                Some(want),
                "{}-{p}",
                topic(i)
            );
        }
    }
}

#[test]
fn partitions_scale_past_the_open_file_limit_and_survive_restarts() {
    let mut broker = TestBroker::start_with_nofile(NOFILE, &[]);
    assert!(
        broker.log().contains("open_file_limit=512"),
        "the limit is logged: {}",
        broker.log()
    );
    let mut c = broker.client();
    for i in 0..TOPICS {
        create(&mut c, &topic(i));
    }
    // One batch to every partition at once (600 active segments, a budget of 256), then
    // more to a sample, so those roll segments.
    let all: Vec<i32> = (0..PARTITIONS).collect();
    let sample: Vec<i32> = (0..PARTITIONS).filter(|p| sampled(*p)).collect();
    produce(&mut c, &all, "first");
    let rounds = 6;
    for round in 1..rounds {
        produce(&mut c, &sample, &format!("round {round}"));
    }
    check(&mut c, rounds);

    // A clean stop and start: every partition opens and serves.
    drop(c);
    broker.stop();
    broker.start_again();
    let mut c = broker.client();
    check(&mut c, rounds);
    produce(&mut c, &sample, "after restart");
    check(&mut c, rounds + 1);

    // After kill -9 every partition is recovered (and fsynced) within the limit too.
    drop(c);
    broker.kill9();
    broker.start_again();
    let mut c = broker.client();
    check(&mut c, rounds + 1);
    assert!(
        !broker.log().contains("Too many open files"),
        "{}",
        broker.log()
    );
}

/// A CreateTopics that cannot be served because the process is out of descriptors (here:
/// held by connections, which the segment cache cannot give back) is refused per topic with
/// POLICY_VIOLATION naming the limit, and leaves nothing behind; it succeeds once
/// descriptors are free again.
#[test]
fn create_topics_is_refused_whole_when_descriptors_run_out() {
    const LIMIT: u64 = 256;
    let broker = TestBroker::start_with_nofile(LIMIT, &[]);
    let attempt = |c: &mut Client| -> (i16, String) {
        let req = CreateTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(t("starved"))
                .with_num_partitions(20)
                .with_replication_factor(1)]);
        let r: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &req).expect("answer");
        let topic = &r.topics[0];
        let message = topic
            .error_message
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default();
        (topic.error_code, message)
    };
    let mut c = broker.client();
    // Hold connections (one descriptor each in the broker), each answered once so the broker
    // surely accepted it, until fewer than 64 descriptors are free.
    let mut held = Vec::new();
    for _ in 0..(LIMIT as usize - 40) {
        let mut extra = broker.client();
        let _: ApiVersionsResponse = extra
            .call(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default())
            .expect("answer");
        held.push(extra);
    }
    let (code, message) = attempt(&mut c);
    assert_eq!(code, 44, "POLICY_VIOLATION: {message}");
    assert!(message.contains("open-file limit of 256"), "{message}");
    // Nothing of the topic exists: not in the metadata, no partition directory.
    let md: MetadataResponse = c
        .call(
            ApiKey::Metadata,
            9,
            &MetadataRequest::default().with_topics(Some(vec![
                metadata_request::MetadataRequestTopic::default().with_name(Some(t("starved"))),
            ])),
        )
        .expect("metadata");
    assert_eq!(md.topics[0].error_code, 3, "UNKNOWN_TOPIC_OR_PARTITION");
    let dirs: Vec<_> = std::fs::read_dir(broker.data_dir())
        .expect("data dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("starved"))
        .collect();
    assert!(dirs.is_empty(), "{dirs:?}");

    // With the connections closed the same request succeeds (the broker notices the closes
    // asynchronously: retry until a deadline).
    drop(held);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (code, message) = attempt(&mut c);
        if code == 0 {
            break;
        }
        assert_eq!(code, 44, "{message}");
        assert!(
            std::time::Instant::now() < deadline,
            "still refused: {message}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for p in 0..20 {
        assert!(broker.data_dir().join(format!("starved-{p}")).is_dir());
    }
}
