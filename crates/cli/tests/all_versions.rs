//! Every advertised API at every advertised version gets a response that decodes, for
//! requests that make the handler fill in real data (existing topics, stored records). The
//! message crate refuses to encode a field a version lacks, so this catches a handler that
//! sets one.

mod support;

use bytes::Bytes;
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
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use support::{batch, Client, TestBroker};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn t(v: &str) -> TopicName {
    TopicName(s(v))
}

fn versions(key: ApiKey) -> std::ops::RangeInclusive<i16> {
    let r = strata_versions(key);
    r.0..=r.1
}

/// The range the broker advertises, read from its ApiVersions answer.
fn strata_versions(key: ApiKey) -> (i16, i16) {
    ADVERTISED.with(|a| {
        a.borrow()
            .iter()
            .find(|(k, _, _)| *k == key as i16)
            .map(|(_, lo, hi)| (*lo, *hi))
            .unwrap_or_else(|| panic!("{key:?} is not advertised"))
    })
}

thread_local! {
    static ADVERTISED: std::cell::RefCell<Vec<(i16, i16, i16)>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn create(c: &mut Client, name: &str, partitions: i32) {
    let req = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(t(name))
        .with_num_partitions(partitions)
        .with_replication_factor(1)]);
    let resp: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &req).expect("answer");
    assert_eq!(resp.topics[0].error_code, 0);
}

fn topic_id(c: &mut Client, name: &str) -> uuid::Uuid {
    let req = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(t(name)))
    ]));
    let resp: MetadataResponse = c.call(ApiKey::Metadata, 12, &req).expect("answer");
    resp.topics[0].topic_id
}

#[test]
fn every_version_of_every_api_answers() {
    let broker = TestBroker::start(&[]);
    let mut c = broker.client();
    let api: ApiVersionsResponse = c
        .call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default())
        .expect("ApiVersions answers");
    ADVERTISED.with(|a| {
        *a.borrow_mut() = api
            .api_keys
            .iter()
            .map(|k| (k.api_key, k.min_version, k.max_version))
            .collect()
    });
    for v in versions(ApiKey::ApiVersions) {
        let r: Option<ApiVersionsResponse> =
            c.call(ApiKey::ApiVersions, v, &ApiVersionsRequest::default());
        assert_eq!(r.expect("answer").error_code, 0, "ApiVersions v{v}");
    }
    create(&mut c, "vt", 2);
    let id = topic_id(&mut c, "vt");
    let records: Bytes = batch(&[b"a", b"b"], Compression::Gzip);

    for v in versions(ApiKey::Produce) {
        let td = if v >= 13 {
            TopicProduceData::default().with_topic_id(id)
        } else {
            TopicProduceData::default().with_name(t("vt"))
        };
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(5000)
            .with_topic_data(vec![td.with_partition_data(vec![
                PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(records.clone())),
                PartitionProduceData::default()
                    .with_index(7)
                    .with_records(Some(records.clone())),
            ])]);
        let r: ProduceResponse = c
            .call(ApiKey::Produce, v, &req)
            .unwrap_or_else(|| panic!("Produce v{v}"));
        let parts = &r.responses[0].partition_responses;
        assert_eq!(parts[0].error_code, 0, "Produce v{v}");
        assert_eq!(parts[1].error_code, 3, "Produce v{v} unknown partition");
    }
    for v in versions(ApiKey::Fetch) {
        let ft = if v >= 13 {
            FetchTopic::default().with_topic_id(id)
        } else {
            FetchTopic::default().with_topic(t("vt"))
        };
        let req = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_isolation_level(if v >= 4 { 1 } else { 0 })
            .with_session_epoch(if v >= 7 { 0 } else { -1 })
            .with_topics(vec![ft.with_partitions(vec![
                FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(1)
                    .with_partition_max_bytes(1 << 20),
                FetchPartition::default()
                    .with_partition(1)
                    .with_fetch_offset(99)
                    .with_partition_max_bytes(1 << 20),
            ])]);
        let r: FetchResponse = c
            .call(ApiKey::Fetch, v, &req)
            .unwrap_or_else(|| panic!("Fetch v{v}"));
        let parts = &r.responses[0].partitions;
        assert_eq!(parts[0].error_code, 0, "Fetch v{v}");
        assert!(
            !parts[0].records.as_ref().expect("records").is_empty(),
            "Fetch v{v}"
        );
        assert_eq!(parts[1].error_code, 1, "Fetch v{v} out of range");
    }
    for v in versions(ApiKey::ListOffsets) {
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(t("vt"))
                .with_partitions(
                    [-1i64, -2, -3, 0]
                        .iter()
                        .map(|ts| {
                            ListOffsetsPartition::default()
                                .with_partition_index(0)
                                .with_timestamp(*ts)
                        })
                        .collect(),
                )]);
        let r: ListOffsetsResponse = c
            .call(ApiKey::ListOffsets, v, &req)
            .unwrap_or_else(|| panic!("ListOffsets v{v}"));
        for p in &r.topics[0].partitions {
            assert_eq!(p.error_code, 0, "ListOffsets v{v}");
        }
    }
    for v in versions(ApiKey::Metadata) {
        let topics = if v == 0 {
            Some(vec![])
        } else {
            Some(vec![
                MetadataRequestTopic::default().with_name(Some(t("vt"))),
                MetadataRequestTopic::default().with_name(Some(t("auto-created"))),
            ])
        };
        let req = MetadataRequest::default()
            .with_topics(topics)
            .with_allow_auto_topic_creation(true)
            .with_include_topic_authorized_operations(v >= 8);
        let r: MetadataResponse = c
            .call(ApiKey::Metadata, v, &req)
            .unwrap_or_else(|| panic!("Metadata v{v}"));
        assert!(!r.topics.is_empty(), "Metadata v{v}");
        assert!(
            r.topics.iter().all(|t| t.error_code == 0),
            "Metadata v{v}: {:?}",
            r.topics
        );
    }
    for v in versions(ApiKey::FindCoordinator) {
        let req = FindCoordinatorRequest::default()
            .with_key(if v < 4 { s("g") } else { s("") })
            .with_coordinator_keys(if v >= 4 { vec![s("g")] } else { vec![] });
        let r: Option<FindCoordinatorResponse> = c.call(ApiKey::FindCoordinator, v, &req);
        assert!(r.is_some(), "FindCoordinator v{v}");
    }
    for v in versions(ApiKey::InitProducerId) {
        let r: InitProducerIdResponse = c
            .call(
                ApiKey::InitProducerId,
                v,
                &InitProducerIdRequest::default()
                    .with_transactional_id(None)
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1),
            )
            .unwrap_or_else(|| panic!("InitProducerId v{v}"));
        assert_eq!(r.error_code, 0);
        assert!(r.producer_id.0 >= 0);
    }
    for v in versions(ApiKey::CreateTopics) {
        let name = format!("ct{v}");
        let req = CreateTopicsRequest::default()
            .with_validate_only(v >= 1 && v % 2 == 0)
            .with_topics(vec![
                CreatableTopic::default()
                    .with_name(t(&name))
                    .with_num_partitions(1)
                    .with_replication_factor(1)
                    .with_configs(vec![CreatableTopicConfig::default()
                        .with_name(s("retention.ms"))
                        .with_value(Some(s("1000")))]),
                CreatableTopic::default()
                    .with_name(t("bad name"))
                    .with_num_partitions(1)
                    .with_replication_factor(1),
            ]);
        let r: CreateTopicsResponse = c
            .call(ApiKey::CreateTopics, v, &req)
            .unwrap_or_else(|| panic!("CreateTopics v{v}"));
        assert_eq!(r.topics[0].error_code, 0, "CreateTopics v{v}");
        assert_eq!(r.topics[1].error_code, 17, "CreateTopics v{v}");
    }
    for v in versions(ApiKey::CreatePartitions) {
        let name = format!("cp{v}");
        create(&mut c, &name, 1);
        let req =
            CreatePartitionsRequest::default().with_topics(vec![CreatePartitionsTopic::default()
                .with_name(t(&name))
                .with_count(3)
                .with_assignments(None)]);
        let r: CreatePartitionsResponse = c
            .call(ApiKey::CreatePartitions, v, &req)
            .unwrap_or_else(|| panic!("CreatePartitions v{v}"));
        assert_eq!(r.results[0].error_code, 0, "CreatePartitions v{v}");
    }
    for v in versions(ApiKey::DescribeConfigs) {
        let req = DescribeConfigsRequest::default()
            .with_include_synonyms(true)
            .with_include_documentation(v >= 3)
            .with_resources(vec![
                DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("vt")),
                DescribeConfigsResource::default()
                    .with_resource_type(4)
                    .with_resource_name(s("1")),
            ]);
        let r: DescribeConfigsResponse = c
            .call(ApiKey::DescribeConfigs, v, &req)
            .unwrap_or_else(|| panic!("DescribeConfigs v{v}"));
        assert!(
            r.results
                .iter()
                .all(|x| x.error_code == 0 && !x.configs.is_empty()),
            "DescribeConfigs v{v}"
        );
    }
    for v in versions(ApiKey::AlterConfigs) {
        use kafka_protocol::messages::alter_configs_request::{
            AlterConfigsResource, AlterableConfig,
        };
        let req =
            AlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("vt"))
                .with_configs(vec![AlterableConfig::default()
                    .with_name(s("retention.ms"))
                    .with_value(Some(s("5000")))])]);
        let r: AlterConfigsResponse = c
            .call(ApiKey::AlterConfigs, v, &req)
            .unwrap_or_else(|| panic!("AlterConfigs v{v}"));
        assert_eq!(r.responses[0].error_code, 0, "AlterConfigs v{v}");
    }
    for v in versions(ApiKey::IncrementalAlterConfigs) {
        use kafka_protocol::messages::incremental_alter_configs_request::{
            AlterConfigsResource, AlterableConfig,
        };
        let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("vt"))
                .with_configs(vec![AlterableConfig::default()
                    .with_name(s("cleanup.policy"))
                    .with_config_operation(2)
                    .with_value(Some(s("compact")))]),
        ]);
        let r: IncrementalAlterConfigsResponse = c
            .call(ApiKey::IncrementalAlterConfigs, v, &req)
            .unwrap_or_else(|| panic!("IncrementalAlterConfigs v{v}"));
        assert_eq!(r.responses[0].error_code, 0, "IncrementalAlterConfigs v{v}");
    }
    for v in versions(ApiKey::DescribeCluster) {
        let r: DescribeClusterResponse = c
            .call(
                ApiKey::DescribeCluster,
                v,
                &DescribeClusterRequest::default().with_endpoint_type(1),
            )
            .unwrap_or_else(|| panic!("DescribeCluster v{v}"));
        assert_eq!(r.brokers.len(), 1, "DescribeCluster v{v}");
    }
    for v in versions(ApiKey::DescribeTopicPartitions) {
        let req = DescribeTopicPartitionsRequest::default()
            .with_response_partition_limit(1)
            .with_topics(vec![TopicRequest::default().with_name(t("vt"))]);
        let r: DescribeTopicPartitionsResponse = c
            .call(ApiKey::DescribeTopicPartitions, v, &req)
            .unwrap_or_else(|| panic!("DescribeTopicPartitions v{v}"));
        assert_eq!(r.topics[0].partitions.len(), 1, "limit honoured");
        assert!(r.next_cursor.is_some(), "a cursor to the second partition");
    }
    for v in versions(ApiKey::DeleteRecords) {
        let req = DeleteRecordsRequest::default().with_topics(vec![DeleteRecordsTopic::default()
            .with_name(t("vt"))
            .with_partitions(vec![DeleteRecordsPartition::default()
                .with_partition_index(0)
                .with_offset(i64::from(v) + 1)])]);
        let r: DeleteRecordsResponse = c
            .call(ApiKey::DeleteRecords, v, &req)
            .unwrap_or_else(|| panic!("DeleteRecords v{v}"));
        let p = &r.topics[0].partitions[0];
        assert_eq!(
            (p.error_code, p.low_watermark),
            (0, i64::from(v) + 1),
            "DeleteRecords v{v}"
        );
    }
    for v in versions(ApiKey::DeleteTopics) {
        let doomed = format!("del{v}");
        create(&mut c, &doomed, 1);
        let req = if v >= 6 {
            DeleteTopicsRequest::default()
                .with_topics(vec![DeleteTopicState::default().with_name(Some(t(&doomed)))])
        } else {
            DeleteTopicsRequest::default().with_topic_names(vec![t(&doomed)])
        };
        let r: DeleteTopicsResponse = c
            .call(ApiKey::DeleteTopics, v, &req)
            .unwrap_or_else(|| panic!("DeleteTopics v{v}"));
        assert_eq!(r.responses[0].error_code, 0, "DeleteTopics v{v}");
    }
}
