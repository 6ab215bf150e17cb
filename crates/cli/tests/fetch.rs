//! Fetch semantics against a real broker: long poll, byte limits, offsets inside batches,
//! out-of-range offsets, and incremental fetch sessions (KIP-227).

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use support::{batch, Client, TestBroker};

const VERSION: i16 = 12;

fn t(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn setup(partitions: i32) -> (TestBroker, Client) {
    let broker = TestBroker::start(&[]);
    let mut c = broker.client();
    let req = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(t("f"))
        .with_num_partitions(partitions)
        .with_replication_factor(1)]);
    let r: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &req).expect("answer");
    assert_eq!(r.topics[0].error_code, 0);
    (broker, c)
}

fn produce(c: &mut Client, partition: i32, records: Bytes) -> i64 {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(t("f"))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])]);
    let r: ProduceResponse = c.call(ApiKey::Produce, 9, &req).expect("answer");
    let p = &r.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 0);
    p.base_offset
}

fn part(p: i32, offset: i64, max: i32) -> FetchPartition {
    FetchPartition::default()
        .with_partition(p)
        .with_fetch_offset(offset)
        .with_partition_max_bytes(max)
}

fn fetch(c: &mut Client, req: FetchRequest) -> FetchResponse {
    c.call(ApiKey::Fetch, VERSION, &req)
        .expect("fetch answered")
}

fn request(parts: Vec<FetchPartition>) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(t("f"))
            .with_partitions(parts)])
}

#[test]
fn long_poll_waits_for_data_and_returns_when_it_arrives() {
    let (broker, mut c) = setup(1);
    // Nothing there: waits about max_wait_ms, then answers empty.
    let start = Instant::now();
    let r = fetch(
        &mut c,
        request(vec![part(0, 0, 1 << 20)]).with_max_wait_ms(300),
    );
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "waited {:?}",
        start.elapsed()
    );
    assert!(r.responses[0].partitions[0]
        .records
        .as_ref()
        .is_none_or(|b| b.is_empty()));
    // A producer on another connection wakes a long poll well before its 10 s limit.
    let port = broker.port;
    let producer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let mut p = Client::connect(port);
        produce(&mut p, 0, batch(&[b"wake"], Compression::None));
    });
    let start = Instant::now();
    let r = fetch(
        &mut c,
        request(vec![part(0, 0, 1 << 20)]).with_max_wait_ms(10_000),
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "woken by the produce"
    );
    let p = &r.responses[0].partitions[0];
    assert!(!p.records.as_ref().expect("records").is_empty());
    assert_eq!(p.high_watermark, 1);
    producer.join().expect("producer");
}

#[test]
fn limits_offsets_and_errors() {
    let (_broker, mut c) = setup(2);
    let big = vec![b'x'; 100_000];
    produce(&mut c, 0, batch(&[&big], Compression::None));
    produce(&mut c, 0, batch(&[b"a", b"b", b"c"], Compression::Snappy));
    // A batch larger than every limit still comes back whole.
    let r = fetch(&mut c, request(vec![part(0, 0, 10)]).with_max_bytes(10));
    let records = r.responses[0].partitions[0]
        .records
        .clone()
        .expect("records");
    assert!(
        records.len() > 100_000,
        "one whole batch: {} bytes",
        records.len()
    );
    // An offset inside a batch returns the whole batch from its base offset.
    let r = fetch(&mut c, request(vec![part(0, 2, 1 << 20)]));
    let records = r.responses[0].partitions[0]
        .records
        .clone()
        .expect("records");
    let base = i64::from_be_bytes(records[..8].try_into().expect("8 bytes"));
    assert_eq!(base, 1, "batch containing offset 2 starts at 1");
    // Past the end: OFFSET_OUT_OF_RANGE, with the offsets to reset to.
    let r = fetch(
        &mut c,
        request(vec![part(0, 99, 1 << 20), part(1, 0, 1 << 20)]),
    );
    let ps = &r.responses[0].partitions;
    assert_eq!(ps[0].error_code, 1);
    assert_eq!(ps[0].high_watermark, 4);
    assert_eq!(ps[0].log_start_offset, 0);
    assert_eq!(ps[1].error_code, 0, "the other partition is unaffected");
    // Only the first partition with data may go past the response limit.
    produce(&mut c, 1, batch(&[&big], Compression::None));
    let r = fetch(
        &mut c,
        request(vec![part(0, 0, 1 << 20), part(1, 0, 1 << 20)]).with_max_bytes(150_000),
    );
    let ps = &r.responses[0].partitions;
    let sizes: Vec<usize> = ps
        .iter()
        .map(|p| p.records.as_ref().map_or(0, |b| b.len()))
        .collect();
    assert!(sizes[0] > 100_000, "{sizes:?}");
    assert_eq!(
        sizes[1], 0,
        "the second partition's batch would exceed max_bytes: {sizes:?}"
    );
    assert_eq!(ps[1].high_watermark, 1, "but its offsets are reported");
    // Unknown partition and unknown topic.
    let r = fetch(&mut c, request(vec![part(9, 0, 100)]));
    assert_eq!(r.responses[0].partitions[0].error_code, 3);
}

#[test]
fn incremental_fetch_sessions() {
    let (_broker, mut c) = setup(2);
    produce(&mut c, 0, batch(&[b"p0"], Compression::None));
    produce(&mut c, 1, batch(&[b"p1"], Compression::None));
    // Open a session with both partitions: a full response.
    let r = fetch(
        &mut c,
        request(vec![part(0, 0, 1 << 20), part(1, 0, 1 << 20)]).with_session_epoch(0),
    );
    assert_eq!(r.error_code, 0);
    let session = r.session_id;
    assert!(session > 0, "a session was opened");
    assert_eq!(r.responses[0].partitions.len(), 2);
    // Incremental, positions advanced: nothing new, so no partitions in the answer.
    let r = fetch(
        &mut c,
        request(vec![part(0, 1, 1 << 20), part(1, 1, 1 << 20)])
            .with_session_id(session)
            .with_session_epoch(1),
    );
    assert_eq!(r.error_code, 0);
    assert_eq!(r.session_id, session);
    assert!(r.responses.iter().all(|t| t.partitions.is_empty()), "{r:?}");
    // New data in partition 1 only: only partition 1 is answered, with no partitions sent.
    produce(&mut c, 1, batch(&[b"more"], Compression::None));
    let r = fetch(
        &mut c,
        FetchRequest::default()
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_session_id(session)
            .with_session_epoch(2),
    );
    let parts: Vec<i32> = r
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.partition_index))
        .collect();
    assert_eq!(parts, vec![1]);
    // Forget partition 1; more data there is no longer reported.
    produce(&mut c, 1, batch(&[b"ignored"], Compression::None));
    let r = fetch(
        &mut c,
        FetchRequest::default()
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_session_id(session)
            .with_session_epoch(3)
            .with_forgotten_topics_data(vec![ForgottenTopic::default()
                .with_topic(t("f"))
                .with_partitions(vec![1])]),
    );
    assert!(r.responses.iter().all(|t| t.partitions.is_empty()), "{r:?}");
    // A wrong epoch and an unknown session are refused.
    let r = fetch(
        &mut c,
        request(vec![])
            .with_session_id(session)
            .with_session_epoch(9),
    );
    assert_eq!(r.error_code, 71, "INVALID_FETCH_SESSION_EPOCH");
    let r = fetch(
        &mut c,
        request(vec![])
            .with_session_id(123_456)
            .with_session_epoch(1),
    );
    assert_eq!(r.error_code, 70, "FETCH_SESSION_ID_NOT_FOUND");
    // Closing the session: a sessionless full fetch.
    let r = fetch(
        &mut c,
        request(vec![part(0, 0, 1 << 20)])
            .with_session_id(session)
            .with_session_epoch(-1),
    );
    assert_eq!(r.session_id, 0);
    assert_eq!(r.responses[0].partitions.len(), 1);
}
