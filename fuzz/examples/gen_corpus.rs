//! Writes the seed corpus: valid request frames of every served API at every served version
//! (plus a few near-misses) for `decode_request`, valid record batches of every codec for
//! `batches`, and config byte + batches for `log_append_read`.
//!
//! Usage: `cargo run --example gen_corpus -- <corpus dir>` (writes `<dir>/<target>/seed-*`).

use std::path::Path;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_topic_partitions_request::TopicRequest;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use strata_protocol::api::{supported_versions, SUPPORTED_APIS};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn t(v: &str) -> TopicName {
    TopicName(s(v))
}

const CODECS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

fn record(i: i64, ts_type: TimestampType, transactional: bool, headers: bool) -> Record {
    let mut h = IndexMap::new();
    if headers {
        h.insert(s("h"), Some(Bytes::from_static(b"v")));
        h.insert(s("n"), None);
    }
    Record {
        transactional,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: if transactional { 7 } else { -1 },
        producer_epoch: if transactional { 0 } else { -1 },
        timestamp_type: ts_type,
        offset: i,
        sequence: if transactional { i as i32 } else { -1 },
        timestamp: 1_700_000_000_000 + i,
        key: (i % 2 == 0).then(|| Bytes::from(format!("key-{i}"))),
        value: Some(Bytes::from(format!(
            "value-{i}-{}",
            "x".repeat(i as usize * 3)
        ))),
        headers: h,
    }
}

/// One magic-2 batch of `n` records.
fn batch(n: i64, codec: Compression, ts_type: TimestampType, transactional: bool) -> Vec<u8> {
    let records: Vec<Record> = (0..n)
        .map(|i| record(i, ts_type, transactional, n > 1))
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: codec,
        },
    )
    .expect("batch encodes");
    buf.to_vec()
}

fn all_batches() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for codec in CODECS {
        out.push(batch(1, codec, TimestampType::Creation, false));
        out.push(batch(3, codec, TimestampType::Creation, false));
        out.push(batch(5, codec, TimestampType::LogAppend, true));
    }
    out
}

fn frame(key: ApiKey, version: i16, body: &RequestKind) -> Option<Vec<u8>> {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(0x0102_0304)
        .with_client_id(Some(s("fuzz")))
        .encode(&mut buf, key.request_header_version(version))
        .ok()?;
    body.encode(&mut buf, version).ok()?;
    Some(buf.to_vec())
}

/// Bodies for `key`; some only encode at some versions (names vs topic ids), the rest are
/// skipped by the caller.
fn bodies(key: ApiKey, records: &Bytes) -> Vec<RequestKind> {
    let id = uuid_of(7);
    match key {
        ApiKey::Produce => {
            let parts = vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records.clone()))];
            vec![
                RequestKind::Produce(
                    ProduceRequest::default()
                        .with_acks(-1)
                        .with_timeout_ms(5000)
                        .with_topic_data(vec![TopicProduceData::default()
                            .with_name(t("topic"))
                            .with_partition_data(parts.clone())]),
                ),
                RequestKind::Produce(
                    ProduceRequest::default()
                        .with_acks(1)
                        .with_timeout_ms(5000)
                        .with_topic_data(vec![TopicProduceData::default()
                            .with_topic_id(id)
                            .with_partition_data(parts)]),
                ),
            ]
        }
        ApiKey::Fetch => {
            let parts = vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(3)
                .with_partition_max_bytes(1 << 20)];
            vec![
                RequestKind::Fetch(
                    FetchRequest::default()
                        .with_max_wait_ms(500)
                        .with_min_bytes(1)
                        .with_max_bytes(1 << 20)
                        .with_session_epoch(-1)
                        .with_topics(vec![FetchTopic::default()
                            .with_topic(t("topic"))
                            .with_partitions(parts.clone())]),
                ),
                RequestKind::Fetch(
                    FetchRequest::default()
                        .with_max_wait_ms(500)
                        .with_min_bytes(1)
                        .with_max_bytes(1 << 20)
                        .with_topics(vec![FetchTopic::default()
                            .with_topic_id(id)
                            .with_partitions(parts)]),
                ),
            ]
        }
        ApiKey::ListOffsets => vec![RequestKind::ListOffsets(
            ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![ListOffsetsTopic::default()
                    .with_name(t("topic"))
                    .with_partitions(vec![
                        ListOffsetsPartition::default()
                            .with_partition_index(0)
                            .with_timestamp(-1),
                        ListOffsetsPartition::default()
                            .with_partition_index(1)
                            .with_timestamp(1_700_000_000_000),
                    ])]),
        )],
        ApiKey::Metadata => vec![
            RequestKind::Metadata(MetadataRequest::default().with_topics(None)),
            RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(t("topic"))),
            ]))),
        ],
        ApiKey::FindCoordinator => vec![
            RequestKind::FindCoordinator(FindCoordinatorRequest::default().with_key(s("group"))),
            RequestKind::FindCoordinator(
                FindCoordinatorRequest::default().with_coordinator_keys(vec![s("group")]),
            ),
        ],
        ApiKey::ApiVersions => vec![RequestKind::ApiVersions(
            ApiVersionsRequest::default()
                .with_client_software_name(s("strata-fuzz"))
                .with_client_software_version(s("1.0")),
        )],
        ApiKey::CreateTopics => vec![RequestKind::CreateTopics(
            CreateTopicsRequest::default()
                .with_timeout_ms(5000)
                .with_topics(vec![CreatableTopic::default()
                    .with_name(t("topic"))
                    .with_num_partitions(3)
                    .with_replication_factor(1)
                    .with_configs(vec![CreatableTopicConfig::default()
                        .with_name(s("cleanup.policy"))
                        .with_value(Some(s("delete")))])]),
        )],
        ApiKey::DeleteTopics => vec![
            RequestKind::DeleteTopics(
                DeleteTopicsRequest::default().with_topic_names(vec![t("topic")]),
            ),
            RequestKind::DeleteTopics(DeleteTopicsRequest::default().with_topics(vec![
                DeleteTopicState::default().with_name(Some(t("topic"))),
            ])),
        ],
        ApiKey::DeleteRecords => vec![RequestKind::DeleteRecords(
            DeleteRecordsRequest::default().with_topics(vec![DeleteRecordsTopic::default()
                .with_name(t("topic"))
                .with_partitions(vec![DeleteRecordsPartition::default()
                    .with_partition_index(0)
                    .with_offset(2)])]),
        )],
        ApiKey::InitProducerId => vec![RequestKind::InitProducerId(
            InitProducerIdRequest::default().with_transaction_timeout_ms(60_000),
        )],
        ApiKey::DescribeConfigs => vec![RequestKind::DescribeConfigs(
            DescribeConfigsRequest::default().with_resources(vec![
                DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("topic"))
                    .with_configuration_keys(None),
            ]),
        )],
        ApiKey::AlterConfigs => {
            use kafka_protocol::messages::alter_configs_request::{
                AlterConfigsResource, AlterableConfig,
            };
            vec![RequestKind::AlterConfigs(
                AlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default(
                )
                .with_resource_type(2)
                .with_resource_name(s("topic"))
                .with_configs(vec![AlterableConfig::default()
                    .with_name(s("retention.ms"))
                    .with_value(Some(s("1000")))])]),
            )]
        }
        ApiKey::CreatePartitions => vec![RequestKind::CreatePartitions(
            CreatePartitionsRequest::default()
                .with_timeout_ms(5000)
                .with_topics(vec![CreatePartitionsTopic::default()
                    .with_name(t("topic"))
                    .with_count(4)
                    .with_assignments(None)]),
        )],
        ApiKey::IncrementalAlterConfigs => {
            use kafka_protocol::messages::incremental_alter_configs_request::{
                AlterConfigsResource, AlterableConfig,
            };
            vec![RequestKind::IncrementalAlterConfigs(
                IncrementalAlterConfigsRequest::default().with_resources(vec![
                    AlterConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(s("topic"))
                        .with_configs(vec![AlterableConfig::default()
                            .with_name(s("retention.ms"))
                            .with_config_operation(0)
                            .with_value(Some(s("1000")))]),
                ]),
            )]
        }
        ApiKey::DescribeCluster => vec![RequestKind::DescribeCluster(
            DescribeClusterRequest::default(),
        )],
        ApiKey::DescribeTopicPartitions => vec![RequestKind::DescribeTopicPartitions(
            DescribeTopicPartitionsRequest::default()
                .with_response_partition_limit(100)
                .with_topics(vec![TopicRequest::default().with_name(t("topic"))]),
        )],
        _ => Vec::new(),
    }
}

fn uuid_of(n: u8) -> uuid::Uuid {
    uuid::Uuid::from_bytes([n; 16])
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).expect("write a seed");
}

fn main() {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "corpus".to_string());
    let out = Path::new(&out);
    let requests = out.join("decode_request");
    let batches_dir = out.join("batches");
    let log_dir = out.join("log_append_read");
    let internal_dir = out.join("internal_records");
    let sasl_dir = out.join("sasl_messages");
    for d in [&requests, &batches_dir, &log_dir, &internal_dir, &sasl_dir] {
        std::fs::create_dir_all(d).expect("create a corpus directory");
    }
    // SASL: a selector byte (the parser) and a message of each kind (sasl_messages.rs).
    let sasl_seeds: [(u8, &[u8]); 9] = [
        (0, b"\0alice\0alice-secret"),
        (1, b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"),
        (0x81, b"y,a=u,n=u,r=abc,ext=1"),
        (2, b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="),
        (3, br#"org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="a\"b" user_alice="x";"#),
        (4, b"r=abcdef,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
        (5, b"n,,n=user,r=abcc=biws,r=abc,p=AAAA"),
        (6, b"n,a=alice,\x01auth=Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.\x01k=v\x01\x01"),
        (7, br#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k","x":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","y":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}]}eyJhbGciOiJFUzI1NiIsImtpZCI6ImsifQ.eyJzdWIiOiJhIiwiZXhwIjo5OTk5OTk5OTk5LCJpYXQiOjF9.AAAA"#),
    ];
    for (i, (selector, message)) in sasl_seeds.iter().enumerate() {
        let mut seed = vec![*selector];
        seed.extend_from_slice(message);
        write(&sasl_dir, &format!("seed-{i}"), &seed);
    }

    // Requests.
    let records = Bytes::from(batch(2, Compression::None, TimestampType::Creation, false));
    let mut n_req = 0;
    for key in SUPPORTED_APIS {
        let Some(range) = supported_versions(*key) else {
            continue;
        };
        for version in range.min..=range.max {
            let mut kept = Vec::new();
            for body in std::iter::once(default_body(*key))
                .flatten()
                .chain(bodies(*key, &records))
            {
                if let Some(f) = frame(*key, version, &body) {
                    if !kept.contains(&f) {
                        kept.push(f);
                    }
                }
            }
            for (i, f) in kept.iter().enumerate() {
                write(&requests, &format!("seed-{key:?}-v{version}-{i}"), f);
                n_req += 1;
            }
        }
    }
    // Near-misses: ApiVersions at an unknown version (the fallback answer), an unknown key,
    // a frame shorter than a header.
    let mut raw = BytesMut::new();
    raw.put_i16(ApiKey::ApiVersions as i16);
    raw.put_i16(127);
    raw.put_i32(99);
    raw.put_i16(-1);
    write(&requests, "seed-ApiVersions-v127", &raw);
    let mut raw = BytesMut::new();
    raw.put_i16(999);
    raw.put_i16(0);
    raw.put_i32(1);
    write(&requests, "seed-unknown-key", &raw);
    write(&requests, "seed-short", &[0, 18, 0]);

    // Batches: every codec alone, and mixed-codec sequences.
    let all = all_batches();
    for (i, b) in all.iter().enumerate() {
        write(&batches_dir, &format!("seed-batch-{i}"), b);
    }
    let mut seq = Vec::new();
    for (i, b) in all.iter().enumerate().step_by(3) {
        seq.extend_from_slice(b);
        write(&batches_dir, &format!("seed-seq-{i}"), &seq);
    }

    // Internal records: batches, transaction markers, a group record as <split><key><value>.
    for (i, b) in all.iter().enumerate() {
        write(&internal_dir, &format!("seed-batch-{i}"), b);
    }
    for (i, commit) in [false, true].into_iter().enumerate() {
        let marker = strata_protocol::records::ControlMarker {
            commit,
            coordinator_epoch: 3,
        };
        let m = strata_protocol::records::encode_marker(7, 1, marker, 1_700_000_000_000)
            .expect("marker encodes");
        write(&internal_dir, &format!("seed-marker-{i}"), &m);
    }
    let (key, value) = strata_coordinator::GroupRecord::Offset {
        group: "g".into(),
        topic: "t".into(),
        partition: 0,
        value: Some(strata_coordinator::CommittedOffset {
            offset: 42,
            leader_epoch: -1,
            metadata: String::new(),
            commit_ms: 1_700_000_000_000,
            end_offset: Some(50),
        }),
    }
    .encode();
    let mut input = vec![u8::try_from(key.len()).unwrap_or(u8::MAX)];
    input.extend_from_slice(&key);
    input.extend_from_slice(value.as_deref().unwrap_or_default());
    write(&internal_dir, "seed-group-offset", &input);

    // Log: config byte + batches.
    for (i, cfg) in [0x03u8, 0x00, 0x15, 0x26, 0x7f, 0x80, 0xe1]
        .iter()
        .enumerate()
    {
        let mut input = vec![*cfg];
        for b in all.iter().skip(i % 3).step_by(2).take(6) {
            input.extend_from_slice(b);
        }
        write(&log_dir, &format!("seed-log-{i}"), &input);
    }
    println!(
        "wrote {n_req} request seeds, {} batch seeds and 7 log seeds under {}",
        all.len() * 2,
        out.display()
    );
}

/// The default body of `key`'s request, which encodes at most versions.
fn default_body(key: ApiKey) -> Option<RequestKind> {
    Some(match key {
        ApiKey::Produce => RequestKind::Produce(Default::default()),
        ApiKey::Fetch => RequestKind::Fetch(Default::default()),
        ApiKey::ListOffsets => RequestKind::ListOffsets(Default::default()),
        ApiKey::Metadata => RequestKind::Metadata(Default::default()),
        ApiKey::FindCoordinator => RequestKind::FindCoordinator(Default::default()),
        ApiKey::ApiVersions => RequestKind::ApiVersions(Default::default()),
        ApiKey::CreateTopics => RequestKind::CreateTopics(Default::default()),
        ApiKey::DeleteTopics => RequestKind::DeleteTopics(Default::default()),
        ApiKey::DeleteRecords => RequestKind::DeleteRecords(Default::default()),
        ApiKey::InitProducerId => RequestKind::InitProducerId(Default::default()),
        ApiKey::DescribeConfigs => RequestKind::DescribeConfigs(Default::default()),
        ApiKey::AlterConfigs => RequestKind::AlterConfigs(Default::default()),
        ApiKey::CreatePartitions => RequestKind::CreatePartitions(Default::default()),
        ApiKey::IncrementalAlterConfigs => RequestKind::IncrementalAlterConfigs(Default::default()),
        ApiKey::DescribeCluster => RequestKind::DescribeCluster(Default::default()),
        ApiKey::DescribeTopicPartitions => RequestKind::DescribeTopicPartitions(Default::default()),
        ApiKey::SaslHandshake => RequestKind::SaslHandshake(Default::default()),
        ApiKey::SaslAuthenticate => RequestKind::SaslAuthenticate(Default::default()),
        ApiKey::DescribeUserScramCredentials => {
            RequestKind::DescribeUserScramCredentials(Default::default())
        }
        ApiKey::AlterUserScramCredentials => {
            RequestKind::AlterUserScramCredentials(Default::default())
        }
        _ => return None,
    })
}
