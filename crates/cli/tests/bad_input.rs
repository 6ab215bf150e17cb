//! Bad input against a real broker: each kind gets Kafka's error code or a closed connection,
//! and a well-behaved client keeps producing through a storm of random and mutated frames.

mod support;

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use rand::{Rng, SeedableRng};
use support::{batch, Client, TestBroker};

fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn create_topic(client: &mut Client, name: &str, partitions: i32, configs: &[(&str, &str)]) -> i16 {
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(5000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name(name))
            .with_num_partitions(partitions)
            .with_replication_factor(1)
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string(k.to_string()))
                            .with_value(Some(StrBytes::from_string(v.to_string())))
                    })
                    .collect(),
            )]);
    let resp: CreateTopicsResponse = client
        .call(ApiKey::CreateTopics, 7, &req)
        .expect("CreateTopics answered");
    resp.topics[0].error_code
}

fn produce_request(topic: &str, records: Bytes, acks: i16) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])])
}

/// Produces one batch; returns (error code, base offset).
fn produce(client: &mut Client, topic: &str, records: Bytes) -> Option<(i16, i64)> {
    let resp: ProduceResponse =
        client.call(ApiKey::Produce, 9, &produce_request(topic, records, -1))?;
    let p = &resp.responses[0].partition_responses[0];
    Some((p.error_code, p.base_offset))
}

fn fetch_values(client: &mut Client, topic: &str) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut offset = 0;
    for _ in 0..1000 {
        let req = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(1 << 20)])]);
        let resp: FetchResponse = client
            .call(ApiKey::Fetch, 12, &req)
            .expect("fetch answered");
        let p = &resp.responses[0].partitions[0];
        assert_eq!(p.error_code, 0, "fetch error");
        let mut records = p.records.clone().unwrap_or_default();
        if records.is_empty() {
            break;
        }
        for set in RecordBatchDecoder::decode_all(&mut records).expect("batches decode") {
            for r in set.records {
                if r.offset >= offset {
                    out.push(r.value.clone().unwrap_or_default());
                    offset = r.offset + 1;
                }
            }
        }
    }
    out
}

#[test]
fn each_kind_of_bad_input_gets_kafkas_answer() {
    let broker = TestBroker::start(&[
        "auto.create.topics.enable=false",
        "socket.request.max.bytes=1048576",
    ]);
    let mut c = broker.client();
    assert_eq!(
        create_topic(&mut c, "small", 1, &[("max.message.bytes", "2000")]),
        0
    );

    // A batch with a flipped byte after the CRC field: CORRUPT_MESSAGE.
    let mut bad_crc = BytesMut::from(&batch(&[b"hello"], Compression::None)[..]);
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0xff;
    assert_eq!(
        produce(&mut c, "small", bad_crc.freeze()).map(|r| r.0),
        Some(2)
    );

    // Magic 1 on produce v3+: INVALID_RECORD.
    let mut magic = BytesMut::from(&batch(&[b"hello"], Compression::None)[..]);
    magic[16] = 1;
    assert_eq!(
        produce(&mut c, "small", magic.freeze()).map(|r| r.0),
        Some(87)
    );

    // A length that runs past the data: CORRUPT_MESSAGE.
    let truncated = batch(&[b"hello"], Compression::None).slice(..40);
    assert_eq!(produce(&mut c, "small", truncated).map(|r| r.0), Some(2));

    // Bigger than the topic's max.message.bytes: MESSAGE_TOO_LARGE.
    let big = vec![7u8; 5000];
    assert_eq!(
        produce(&mut c, "small", batch(&[&big], Compression::None)).map(|r| r.0),
        Some(10)
    );

    // Invalid topic names: INVALID_TOPIC_EXCEPTION.
    for name in ["bad name!", ".", "..", &"x".repeat(250)] {
        assert_eq!(create_topic(&mut c, name, 1, &[]), 17, "name {name:?}");
    }
    // '.' and '_' collide.
    assert_eq!(create_topic(&mut c, "a.b", 1, &[]), 0);
    assert_eq!(create_topic(&mut c, "a_b", 1, &[]), 17);
    // Already exists; bad replication factor; bad config.
    assert_eq!(create_topic(&mut c, "a.b", 1, &[]), 36);
    let rf = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(topic_name("rf"))
        .with_num_partitions(1)
        .with_replication_factor(3)]);
    let resp: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &rf).expect("answered");
    assert_eq!(resp.topics[0].error_code, 38);
    assert_eq!(
        create_topic(&mut c, "cfg", 1, &[("retention.ms", "soon")]),
        40
    );
    assert_eq!(
        create_topic(&mut c, "cfg", 1, &[("no.such.config", "1")]),
        40
    );

    // A record without a key on a compacted topic: INVALID_RECORD, naming the record.
    assert_eq!(
        create_topic(&mut c, "compacted", 1, &[("cleanup.policy", "compact")]),
        0
    );
    let keyless = strata_protocol::records::encode_batch(
        &[
            strata_protocol::records::PlainRecord::new(Some(b"k"), Some(b"v"), 1),
            strata_protocol::records::PlainRecord::new(None, Some(b"v"), 2),
        ],
        Compression::Gzip,
    )
    .expect("encodes");
    let resp: ProduceResponse = c
        .call(
            ApiKey::Produce,
            9,
            &produce_request("compacted", keyless, 1),
        )
        .expect("answered");
    let p = &resp.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 87);
    assert_eq!(
        p.record_errors
            .iter()
            .map(|e| e.batch_index)
            .collect::<Vec<_>>(),
        vec![1]
    );
    assert_eq!(
        produce(&mut c, "compacted", batch(&[b"keyed"], Compression::None)),
        Some((0, 0))
    );

    // Missing topic with auto-creation off: UNKNOWN_TOPIC_OR_PARTITION.
    assert_eq!(
        produce(&mut c, "missing", batch(&[b"x"], Compression::None)).map(|r| r.0),
        Some(3)
    );

    // The connection survived all of that.
    assert_eq!(
        produce(&mut c, "small", batch(&[b"ok"], Compression::None)),
        Some((0, 0))
    );

    // ApiVersions at an unknown version: UNSUPPORTED_VERSION in the v0 format.
    let mut v = broker.client();
    let mut frame = BytesMut::new();
    frame.put_i16(18);
    frame.put_i16(127);
    frame.put_i32(42);
    frame.put_i16(-1);
    v.send_frame(&frame).expect("send");
    let mut body = v.read_frame().expect("answered");
    use bytes::Buf;
    assert_eq!(body.get_i32(), 42);
    assert_eq!(body.get_i16(), 35);

    // Unknown API key: connection closed.
    let mut u = broker.client();
    let mut frame = BytesMut::new();
    frame.put_i16(9999);
    frame.put_i16(0);
    frame.put_i32(1);
    frame.put_i16(-1);
    u.send_frame(&frame).expect("send");
    assert!(u.is_closed(), "unknown API key closes the connection");

    // Unsupported version of a known API: connection closed.
    let mut u = broker.client();
    let mut frame = BytesMut::new();
    frame.put_i16(ApiKey::Metadata as i16);
    frame.put_i16(500);
    frame.put_i32(1);
    frame.put_i16(-1);
    u.send_frame(&frame).expect("send");
    assert!(u.is_closed());

    // A frame larger than socket.request.max.bytes: connection closed without reading it.
    let mut f = broker.client();
    f.send_raw(&(64 * 1024 * 1024i32).to_be_bytes())
        .expect("send");
    assert!(f.is_closed());

    // A negative length: closed.
    let mut f = broker.client();
    f.send_raw(&(-5i32).to_be_bytes()).expect("send");
    assert!(f.is_closed());

    // Still serving.
    let mut again = broker.client();
    assert_eq!(
        produce(&mut again, "small", batch(&[b"ok2"], Compression::None)),
        Some((0, 1))
    );
}

fn valid_frames() -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut push = |key: ApiKey, version: i16, body: &dyn Fn(&mut BytesMut)| {
        let mut buf = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(1)
            .with_client_id(Some(StrBytes::from_static_str("fuzz")))
            .encode(&mut buf, key.request_header_version(version))
            .expect("header");
        body(&mut buf);
        frames.push(buf.to_vec());
    };
    push(ApiKey::Produce, 9, &|b| {
        produce_request("good", batch(&[b"m1", b"m2"], Compression::Gzip), 1)
            .encode(b, 9)
            .expect("encodes")
    });
    push(ApiKey::Metadata, 12, &|b| {
        MetadataRequest::default().encode(b, 12).expect("encodes")
    });
    push(ApiKey::ApiVersions, 3, &|b| {
        ApiVersionsRequest::default().encode(b, 3).expect("encodes")
    });
    push(ApiKey::CreateTopics, 7, &|b| {
        CreateTopicsRequest::default()
            .with_topics(vec![CreatableTopic::default()
                .with_name(topic_name("fuzzed"))
                .with_num_partitions(1)
                .with_replication_factor(1)])
            .encode(b, 7)
            .expect("encodes")
    });
    frames
}

#[test]
fn random_and_mutated_frames_do_not_disturb_a_good_client() {
    let broker = TestBroker::start(&["socket.request.max.bytes=1048576"]);
    let mut c = broker.client();
    assert_eq!(create_topic(&mut c, "good", 1, &[]), 0);
    let port = broker.port;
    let seed: u64 = std::env::var("STRATA_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!("bad-frame storm seed: {seed} (rerun with STRATA_FUZZ_SEED={seed})");
    let attacker = std::thread::spawn(move || {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let valid = valid_frames();
        for _ in 0..400 {
            let Ok(stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                continue;
            };
            let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
            let mut a = Client::from_stream(stream);
            let payload: Vec<u8> = match rng.gen_range(0..4) {
                0 => (0..rng.gen_range(0..300)).map(|_| rng.gen()).collect(),
                1 | 2 => {
                    let mut f = valid[rng.gen_range(0..valid.len())].clone();
                    for _ in 0..rng.gen_range(1..6) {
                        let i = rng.gen_range(0..f.len());
                        f[i] = rng.gen();
                    }
                    if rng.gen_bool(0.3) {
                        let cut = rng.gen_range(0..f.len());
                        f.truncate(cut);
                    }
                    f
                }
                _ => {
                    // A length prefix promising more than is sent, then hang up.
                    let _ = a.send_raw(&(rng.gen_range(1..100_000i32)).to_be_bytes());
                    let _ = a.send_raw(&[1, 2, 3]);
                    continue;
                }
            };
            let _ = a.send_frame(&payload);
            let _ = a.read_frame();
        }
    });
    let mut acked = Vec::new();
    for i in 0..300 {
        let value = format!("value-{i}");
        let (code, offset) = produce(&mut c, "good", batch(&[value.as_bytes()], Compression::Lz4))
            .expect("answered");
        assert_eq!(code, 0, "good produce {i} failed");
        acked.push((offset, value));
    }
    attacker.join().expect("attacker thread");
    let mut reader = broker.client();
    let values = fetch_values(&mut reader, "good");
    let mine: Vec<String> = values
        .iter()
        .map(|v| String::from_utf8_lossy(v).to_string())
        .filter(|v| v.starts_with("value-"))
        .collect();
    let expected: Vec<String> = acked.iter().map(|(_, v)| v.clone()).collect();
    assert_eq!(
        mine, expected,
        "every acknowledged record, once, in order (seed {seed})"
    );
    for w in acked.windows(2) {
        assert!(w[1].0 > w[0].0, "offsets increase");
    }
    let mut b = broker;
    assert!(
        b.is_running(),
        "broker survived (seed {seed}):\n{}",
        b.log()
    );
}

fn uvarint(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

#[test]
fn declared_huge_arrays_do_not_abort_the_broker() {
    // The decoder sizes vectors from the declared element count; a few bytes claiming
    // billions of elements once made the allocator abort the whole process.
    let mut broker = TestBroker::start(&[]);
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let mut metadata_v1 = BytesMut::new();
    metadata_v1.put_i16(ApiKey::Metadata as i16);
    metadata_v1.put_i16(1);
    metadata_v1.put_i32(1);
    metadata_v1.put_i16(-1);
    metadata_v1.put_i32(i32::MAX);
    metadata_v1.extend_from_slice(&[0, 1, b'a']);
    frames.push(metadata_v1.to_vec());
    let mut metadata_v12 = BytesMut::new();
    metadata_v12.put_i16(ApiKey::Metadata as i16);
    metadata_v12.put_i16(12);
    metadata_v12.put_i32(2);
    metadata_v12.put_i16(-1);
    metadata_v12.put_u8(0);
    metadata_v12.extend_from_slice(&uvarint(u64::from(u32::MAX)));
    metadata_v12.extend_from_slice(&[0; 20]);
    frames.push(metadata_v12.to_vec());
    let mut produce_v9 = BytesMut::new();
    produce_v9.put_i16(ApiKey::Produce as i16);
    produce_v9.put_i16(9);
    produce_v9.put_i32(3);
    produce_v9.put_i16(-1);
    produce_v9.put_u8(0);
    produce_v9.put_u8(0);
    produce_v9.put_i16(1);
    produce_v9.put_i32(1000);
    produce_v9.extend_from_slice(&uvarint(0xffff_fff0));
    produce_v9.extend_from_slice(&[0; 20]);
    frames.push(produce_v9.to_vec());
    for frame in &frames {
        let mut c = broker.client();
        c.send_frame(frame).expect("send");
        assert!(c.is_closed(), "a malformed request closes its connection");
    }
    assert!(broker.is_running(), "broker survived:\n{}", broker.log());
    let mut c = broker.client();
    let r: ApiVersionsResponse = c
        .call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default())
        .expect("still serving");
    assert_eq!(r.error_code, 0);
}
