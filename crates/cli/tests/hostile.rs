//! Bad or hostile clients against a real broker: fencing another client's producer, guessing
//! or borrowing fetch sessions, connection limits and idle connections, and acks=all with
//! fewer in-sync replicas than min.insync.replicas.

mod support;

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use support::{batch, Client, TestBroker};

const INVALID_REQUEST: i16 = 42;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const PRODUCER_FENCED: i16 = 90;
const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
const NOT_ENOUGH_REPLICAS: i16 = 19;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

/// How long a test waits for a condition before failing.
const DEADLINE: Duration = Duration::from_secs(20);

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn create_topic(c: &mut Client, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let req = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(TopicName(s(name)))
        .with_num_partitions(partitions)
        .with_replication_factor(1)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(s(k))
                        .with_value(Some(s(v)))
                })
                .collect(),
        )]);
    let r: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &req).expect("answer");
    assert_eq!(r.topics[0].error_code, 0, "{r:?}");
}

fn api_versions(c: &mut Client) -> Option<i16> {
    let r: Option<ApiVersionsResponse> =
        c.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    r.map(|r| r.error_code)
}

// ---- InitProducerId ------------------------------------------------------------------------

fn init(
    c: &mut Client,
    tid: Option<&str>,
    current: (i64, i16),
    version: i16,
) -> Result<(i64, i16), i16> {
    let req = InitProducerIdRequest::default()
        .with_transactional_id(tid.map(|t| TransactionalId(s(t))))
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(current.0))
        .with_producer_epoch(current.1);
    let r: InitProducerIdResponse = c
        .call(ApiKey::InitProducerId, version, &req)
        .expect("answer");
    if r.error_code != 0 {
        return Err(r.error_code);
    }
    Ok((r.producer_id.0, r.producer_epoch))
}

fn add_partition(c: &mut Client, tid: &str, pid: i64, epoch: i16, topic: &str) -> i16 {
    let req = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(s(tid)))
        .with_v3_and_below_producer_id(ProducerId(pid))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partitions(vec![0])]);
    let r: AddPartitionsToTxnResponse =
        c.call(ApiKey::AddPartitionsToTxn, 3, &req).expect("answer");
    r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
}

#[test]
fn init_producer_id_cannot_fence_another_clients_producer() {
    let broker = TestBroker::start(&[]);
    let mut owner = broker.client();
    let mut intruder = broker.client();
    create_topic(&mut owner, "fence", 1, &[]);
    // The owner's first instance, then its second one (the legitimate way to fence: a new
    // instance of the same transactional id, presenting no producer id).
    let (pid, first) = init(&mut owner, Some("app"), (-1, -1), 4).expect("init");
    let (same, epoch) = init(&mut owner, Some("app"), (-1, -1), 4).expect("re-init");
    assert_eq!((same, epoch), (pid, first + 1));
    // The intruder presents the old epoch, guessed epochs and other producer ids: refused
    // with PRODUCER_FENCED (INVALID_PRODUCER_EPOCH before v4), and nothing changes.
    for guess in [
        (pid, first),
        (pid, epoch + 1),
        (pid, 1000),
        (pid + 1, epoch),
        (0, 0),
    ] {
        assert_eq!(
            init(&mut intruder, Some("app"), guess, 4),
            Err(PRODUCER_FENCED),
            "{guess:?}"
        );
        assert_eq!(
            init(&mut intruder, Some("app"), guess, 3),
            Err(INVALID_PRODUCER_EPOCH),
            "{guess:?} at v3"
        );
    }
    // Half a producer identity is malformed.
    assert_eq!(
        init(&mut intruder, Some("app"), (pid, -1), 4),
        Err(INVALID_REQUEST)
    );
    assert_eq!(init(&mut intruder, None, (-1, 0), 4), Err(INVALID_REQUEST));
    // The owner is still in business with its epoch.
    assert_eq!(add_partition(&mut owner, "app", pid, epoch, "fence"), 0);
    // Without a transactional id, presenting someone's id yields a new id (as Kafka does),
    // so an idempotent producer cannot be fenced through InitProducerId either.
    let (idem, idem_epoch) = init(&mut owner, None, (-1, -1), 4).expect("idempotent");
    let (other, other_epoch) = init(&mut intruder, None, (idem, idem_epoch), 4).expect("new id");
    assert_ne!(other, idem);
    assert_eq!(other_epoch, 0);
    // The owner itself may recover with its own current epoch (KIP-360).
    let r = init(&mut owner, Some("app"), (pid, epoch), 4);
    assert!(
        matches!(r, Ok((p, e)) if p == pid && e > epoch),
        "the holder's own recovery works: {r:?}"
    );
}

// ---- Fetch sessions ------------------------------------------------------------------------

fn fetch_request(topic: &str, partitions: &[i32]) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(s(topic)))
            .with_partitions(
                partitions
                    .iter()
                    .map(|p| {
                        FetchPartition::default()
                            .with_partition(*p)
                            .with_fetch_offset(0)
                            .with_partition_max_bytes(1 << 20)
                    })
                    .collect(),
            )])
}

fn fetch(c: &mut Client, req: FetchRequest) -> FetchResponse {
    c.call(ApiKey::Fetch, 12, &req).expect("fetch answered")
}

fn partitions_in(r: &FetchResponse) -> Vec<(i32, i16)> {
    r.responses
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (p.partition_index, p.error_code))
        })
        .collect()
}

#[test]
fn fetch_sessions_cannot_be_guessed_or_borrowed() {
    let broker = TestBroker::start(&[]);
    let mut owner = broker.client();
    let mut other = broker.client();
    create_topic(&mut owner, "sess", 1, &[]);
    // Open sessions: the ids are not sequential.
    let mut ids = Vec::new();
    for _ in 0..5 {
        let r = fetch(
            &mut owner,
            fetch_request("sess", &[0]).with_session_epoch(0),
        );
        assert_eq!(r.error_code, 0);
        ids.push(r.session_id);
    }
    assert!(ids.iter().all(|id| *id > 0), "{ids:?}");
    assert!(
        ids.windows(2).filter(|w| w[1] == w[0] + 1).count() < 2,
        "session ids look sequential: {ids:?}"
    );
    // The last one, with a partition that does not exist next to one that does.
    let r = fetch(
        &mut owner,
        fetch_request("sess", &[0, 7]).with_session_epoch(0),
    );
    let session = r.session_id;
    assert_eq!(
        partitions_in(&r),
        vec![(0, 0), (7, UNKNOWN_TOPIC_OR_PARTITION)]
    );
    // Another connection presenting the id: not found (and it cannot close it either).
    let borrowed = fetch(
        &mut other,
        fetch_request("sess", &[])
            .with_session_id(session)
            .with_session_epoch(1),
    );
    assert_eq!(borrowed.error_code, FETCH_SESSION_ID_NOT_FOUND);
    fetch(
        &mut other,
        fetch_request("sess", &[])
            .with_session_id(session)
            .with_session_epoch(-1),
    );
    // Guessed ids near a real one: not found.
    for guess in [session.wrapping_add(1), session.wrapping_sub(1), 1, 2] {
        if ids.contains(&guess) || guess == session || guess <= 0 {
            continue;
        }
        let r = fetch(
            &mut other,
            fetch_request("sess", &[])
                .with_session_id(guess)
                .with_session_epoch(1),
        );
        assert_eq!(r.error_code, FETCH_SESSION_ID_NOT_FOUND, "guess {guess}");
    }
    // The owner's session still works, and it did not keep the partition that does not
    // exist: an incremental fetch naming nothing reports only real partitions.
    let r = fetch(
        &mut owner,
        fetch_request("sess", &[])
            .with_session_id(session)
            .with_session_epoch(1),
    );
    assert_eq!(r.error_code, 0);
    assert_eq!(r.session_id, session);
    assert!(
        partitions_in(&r).iter().all(|(p, _)| *p == 0),
        "the unknown partition was not stored: {r:?}"
    );
}

// ---- Connection limits and idle connections --------------------------------------------------

/// A connection from `source` (an address on the loopback network) to the broker.
fn connect_from(source: &str, port: u16) -> Client {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(
                format!("{source}:0")
                    .parse::<SocketAddr>()
                    .expect("address"),
            )
            .expect("bind the source address");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        socket.connect(addr).await.expect("connect")
    });
    let stream: TcpStream = stream.into_std().expect("std stream");
    stream.set_nonblocking(false).expect("blocking");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    Client::from_stream(stream)
}

/// Whether a fresh connection from `source` is served (an ApiVersions round trip).
fn served(source: &str, port: u16) -> bool {
    api_versions(&mut connect_from(source, port)) == Some(0)
}

/// Polls until a fresh connection from `source` is served, or the deadline passes.
fn eventually_served(source: &str, port: u16) -> bool {
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline {
        if served(source, port) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A connection from `source` that the broker serves, polling until it does: connections
/// closed just before (the start-up probe, an earlier test step) give their slot back only
/// once the broker has seen them close.
fn served_connection(source: &str, port: u16) -> Client {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut c = connect_from(source, port);
        if api_versions(&mut c) == Some(0) {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "no connection from {source} was served"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn max_connections_per_ip_holds_and_slots_come_back() {
    let broker = TestBroker::start(&["max.connections.per.ip=2"]);
    let first = served_connection("127.0.0.1", broker.port);
    let mut second = served_connection("127.0.0.1", broker.port);
    // A third from the same address is closed at once; another address is still welcome.
    let mut third = connect_from("127.0.0.1", broker.port);
    assert_eq!(
        api_versions(&mut third),
        None,
        "over max.connections.per.ip"
    );
    assert!(served("127.0.0.2", broker.port));
    // When one closes, its slot comes back.
    drop(first);
    assert!(eventually_served("127.0.0.1", broker.port));
    assert_eq!(
        api_versions(&mut second),
        Some(0),
        "the survivor is untouched"
    );
}

#[test]
fn max_connections_holds_for_every_address() {
    let broker = TestBroker::start(&["max.connections=2"]);
    let mut first = served_connection("127.0.0.1", broker.port);
    let second = served_connection("127.0.0.2", broker.port);
    assert!(!served("127.0.0.3", broker.port), "over max.connections");
    assert!(!served("127.0.0.1", broker.port), "over max.connections");
    drop(second);
    assert!(eventually_served("127.0.0.3", broker.port));
    assert_eq!(api_versions(&mut first), Some(0));
}

#[test]
fn idle_connections_are_closed_but_long_polls_are_not_idleness() {
    let broker = TestBroker::start(&["connections.max.idle.ms=300"]);
    let mut c = broker.client();
    create_topic(&mut c, "idle", 1, &[]);
    // A long poll (1.5 s, five times the idle time) on an empty partition is answered: a
    // connection that is owed a response is not idle.
    let started = Instant::now();
    let r = fetch(&mut c, fetch_request("idle", &[0]).with_max_wait_ms(1500));
    assert_eq!(r.error_code, 0);
    assert!(started.elapsed() >= Duration::from_millis(1400));
    // Then it says nothing: the broker closes it (waits for EOF, bounded by the read timeout).
    let started = Instant::now();
    assert!(c.is_closed(), "the idle connection was closed");
    assert!(started.elapsed() < Duration::from_secs(5));
    // A connection that never sends anything is closed too.
    let mut silent = broker.client();
    assert!(silent.is_closed());
}

// ---- min.insync.replicas ---------------------------------------------------------------------

fn produce(c: &mut Client, topic: &str, acks: i16) -> Option<i16> {
    let req = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(s(topic)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch(&[b"v"], Compression::None)))])]);
    if acks == 0 {
        c.send_only(ApiKey::Produce, 9, &req);
        return None;
    }
    let r: ProduceResponse = c.call(ApiKey::Produce, 9, &req).expect("answer");
    Some(r.responses[0].partition_responses[0].error_code)
}

fn log_end(c: &mut Client, topic: &str) -> i64 {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-1)])]);
    let r: ListOffsetsResponse = c.call(ApiKey::ListOffsets, 7, &req).expect("answer");
    r.topics[0].partitions[0].offset
}

#[test]
fn min_insync_replicas_above_the_replica_count_refuses_acks_all() {
    let broker = TestBroker::start(&[]);
    let mut c = broker.client();
    // A topic override of 2 with replication factor 1.
    create_topic(&mut c, "strict", 1, &[("min.insync.replicas", "2")]);
    assert_eq!(produce(&mut c, "strict", -1), Some(NOT_ENOUGH_REPLICAS));
    assert_eq!(log_end(&mut c, "strict"), 0, "nothing was appended");
    assert_eq!(produce(&mut c, "strict", 1), Some(0));
    assert_eq!(produce(&mut c, "strict", 0), None);
    let deadline = Instant::now() + DEADLINE;
    while log_end(&mut c, "strict") < 2 {
        assert!(
            Instant::now() < deadline,
            "the acks=0 record was not appended"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The default topic of 1 is fine.
    create_topic(&mut c, "relaxed", 1, &[]);
    assert_eq!(produce(&mut c, "relaxed", -1), Some(0));
    drop(broker);
    // The broker's min.insync.replicas is every topic's default.
    let broker = TestBroker::start(&["min.insync.replicas=2"]);
    let mut c = broker.client();
    create_topic(&mut c, "inherited", 1, &[]);
    assert_eq!(produce(&mut c, "inherited", -1), Some(NOT_ENOUGH_REPLICAS));
    assert_eq!(produce(&mut c, "inherited", 1), Some(0));
}

#[test]
fn queued_max_requests_of_one_still_serves_pipelined_requests_in_order() {
    // One request handled at a time broker-wide, one pending response per connection: a
    // client that pipelines long polls and quick requests is slowed, never stuck.
    let broker = TestBroker::start(&["queued.max.requests=1"]);
    let mut c = broker.client();
    create_topic(&mut c, "queued", 1, &[]);
    let mut other = broker.client();
    let started = Instant::now();
    // Three long polls (300 ms each) sent back to back, then answered in order.
    for _ in 0..3 {
        c.send_only(
            ApiKey::Fetch,
            12,
            &fetch_request("queued", &[0]).with_max_wait_ms(300),
        );
    }
    // Meanwhile another connection is served.
    assert_eq!(api_versions(&mut other), Some(0));
    for _ in 0..3 {
        assert!(c.read_frame().is_some(), "a pipelined fetch was answered");
    }
    assert!(started.elapsed() < DEADLINE);
}
