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
    let broker = TestBroker::start(&["group.initial.rebalance.delay.ms=0"]);
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
    // APPEND started from the default ("delete"), not from nothing.
    let r: DescribeConfigsResponse = c
        .call(
            ApiKey::DescribeConfigs,
            4,
            &DescribeConfigsRequest::default().with_resources(vec![
                DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("vt"))
                    .with_configuration_keys(Some(vec![s("cleanup.policy")])),
            ]),
        )
        .expect("describe");
    assert_eq!(
        r.results[0].configs[0].value.as_deref(),
        Some("delete,compact")
    );
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
    // Groups: a one-member group at every version of JoinGroup; the other group APIs at
    // every version against it.
    for v in versions(ApiKey::JoinGroup) {
        let group = format!("vg{v}");
        let mut join = JoinGroupRequest::default()
            .with_group_id(GroupId(s(&group)))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(if v >= 1 { 10_000 } else { -1 })
            .with_member_id(s(""))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![
                kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol::default()
                    .with_name(s("range"))
                    .with_metadata(Bytes::from_static(b"\x00\x00")),
            ]);
        if v < 5 {
            join = join.with_group_instance_id(None);
        }
        let mut r: JoinGroupResponse = c
            .call(ApiKey::JoinGroup, v, &join)
            .unwrap_or_else(|| panic!("JoinGroup v{v}"));
        if v >= 4 {
            assert_eq!(r.error_code, 79, "JoinGroup v{v}: MEMBER_ID_REQUIRED");
            let again = join.clone().with_member_id(r.member_id.clone());
            r = c
                .call(ApiKey::JoinGroup, v, &again)
                .unwrap_or_else(|| panic!("JoinGroup v{v} rejoin"));
        }
        assert_eq!(r.error_code, 0, "JoinGroup v{v}");
        assert_eq!(r.generation_id, 1);
        assert_eq!(r.leader, r.member_id);
        let member = r.member_id.clone();
        let sv = v.min(strata_versions(ApiKey::SyncGroup).1);
        let mut sync = SyncGroupRequest::default()
            .with_group_id(GroupId(s(&group)))
            .with_generation_id(1)
            .with_member_id(member.clone())
            .with_assignments(vec![
                kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment::default()
                    .with_member_id(member.clone())
                    .with_assignment(Bytes::from_static(b"assigned")),
            ]);
        if sv < 3 {
            sync = sync.with_group_instance_id(None);
        }
        if sv < 5 {
            sync = sync.with_protocol_type(None).with_protocol_name(None);
        }
        let r: SyncGroupResponse = c
            .call(ApiKey::SyncGroup, sv, &sync)
            .unwrap_or_else(|| panic!("SyncGroup v{sv}"));
        assert_eq!(
            (r.error_code, &r.assignment[..]),
            (0, &b"assigned"[..]),
            "SyncGroup v{sv}"
        );
    }
    for v in versions(ApiKey::Heartbeat) {
        let mut j = JoinGroupRequest::default()
            .with_group_id(GroupId(s("hb")))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_member_id(s(""))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![
                kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol::default()
                    .with_name(s("range")),
            ]);
        let r: JoinGroupResponse = c.call(ApiKey::JoinGroup, 9, &j).expect("join");
        j = j.with_member_id(r.member_id.clone());
        let r: JoinGroupResponse = c.call(ApiKey::JoinGroup, 9, &j).expect("join");
        let mut hb = HeartbeatRequest::default()
            .with_group_id(GroupId(s("hb")))
            .with_generation_id(r.generation_id)
            .with_member_id(r.member_id.clone());
        if v < 3 {
            hb = hb.with_group_instance_id(None);
        }
        let h: HeartbeatResponse = c
            .call(ApiKey::Heartbeat, v, &hb)
            .unwrap_or_else(|| panic!("Heartbeat v{v}"));
        assert!(
            h.error_code == 0 || h.error_code == 27,
            "Heartbeat v{v}: {}",
            h.error_code
        );
        let leave = if v >= 3 {
            LeaveGroupRequest::default()
                .with_group_id(GroupId(s("hb")))
                .with_members(vec![
                    kafka_protocol::messages::leave_group_request::MemberIdentity::default()
                        .with_member_id(r.member_id.clone())
                        .with_group_instance_id(None),
                ])
        } else {
            LeaveGroupRequest::default()
                .with_group_id(GroupId(s("hb")))
                .with_member_id(r.member_id.clone())
        };
        let lv = v
            .min(strata_versions(ApiKey::LeaveGroup).1)
            .max(if v >= 3 { 3 } else { 0 });
        let l: LeaveGroupResponse = c
            .call(ApiKey::LeaveGroup, lv, &leave)
            .unwrap_or_else(|| panic!("LeaveGroup v{lv}"));
        assert_eq!(l.error_code, 0, "LeaveGroup v{lv}");
    }
    for v in versions(ApiKey::OffsetCommit) {
        use kafka_protocol::messages::offset_commit_request::{
            OffsetCommitRequestPartition, OffsetCommitRequestTopic,
        };
        let mut req = OffsetCommitRequest::default()
            .with_group_id(GroupId(s("oc")))
            .with_generation_id_or_member_epoch(-1)
            .with_member_id(s(""))
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(t("vt"))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(i64::from(v))
                    .with_committed_leader_epoch(if v >= 6 { 0 } else { -1 })
                    .with_committed_metadata(Some(s("meta")))])]);
        if v < 7 {
            req = req.with_group_instance_id(None);
        }
        let r: OffsetCommitResponse = c
            .call(ApiKey::OffsetCommit, v, &req)
            .unwrap_or_else(|| panic!("OffsetCommit v{v}"));
        assert_eq!(r.topics[0].partitions[0].error_code, 0, "OffsetCommit v{v}");
    }
    for v in versions(ApiKey::OffsetFetch) {
        use kafka_protocol::messages::offset_fetch_request::{
            OffsetFetchRequestGroup, OffsetFetchRequestTopic,
        };
        let req = if v >= 8 {
            OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(s("oc")))
                .with_topics(None)])
        } else {
            OffsetFetchRequest::default()
                .with_group_id(GroupId(s("oc")))
                .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                    .with_name(t("vt"))
                    .with_partition_indexes(vec![0, 1])]))
        };
        let r: OffsetFetchResponse = c
            .call(ApiKey::OffsetFetch, v, &req)
            .unwrap_or_else(|| panic!("OffsetFetch v{v}"));
        let (offset, metadata) = if v >= 8 {
            let p = &r.groups[0].topics[0].partitions[0];
            (p.committed_offset, p.metadata.clone())
        } else {
            let p = &r.topics[0].partitions[0];
            assert_eq!(
                r.topics[0].partitions[1].committed_offset, -1,
                "nothing committed for p1"
            );
            (p.committed_offset, p.metadata.clone())
        };
        assert_eq!(
            offset,
            i64::from(strata_versions(ApiKey::OffsetCommit).1),
            "OffsetFetch v{v}"
        );
        assert_eq!(metadata.as_deref(), Some("meta"));
    }
    for v in versions(ApiKey::ListGroups) {
        let r: ListGroupsResponse = c
            .call(ApiKey::ListGroups, v, &ListGroupsRequest::default())
            .unwrap_or_else(|| panic!("ListGroups v{v}"));
        assert!(
            r.groups.iter().any(|g| g.group_id.0.as_str() == "vg9"),
            "ListGroups v{v}"
        );
    }
    for v in versions(ApiKey::DescribeGroups) {
        let r: DescribeGroupsResponse = c
            .call(
                ApiKey::DescribeGroups,
                v,
                &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("vg9"))]),
            )
            .unwrap_or_else(|| panic!("DescribeGroups v{v}"));
        assert_eq!(
            r.groups[0].group_state.as_str(),
            "Stable",
            "DescribeGroups v{v}"
        );
        assert_eq!(r.groups[0].members.len(), 1);
        assert_eq!(&r.groups[0].members[0].member_assignment[..], b"assigned");
    }
    for v in versions(ApiKey::OffsetDelete) {
        use kafka_protocol::messages::offset_delete_request::{
            OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
        };
        let req = OffsetDeleteRequest::default()
            .with_group_id(GroupId(s("oc")))
            .with_topics(vec![OffsetDeleteRequestTopic::default()
                .with_name(t("vt"))
                .with_partitions(vec![
                    OffsetDeleteRequestPartition::default().with_partition_index(0)
                ])]);
        let r: OffsetDeleteResponse = c
            .call(ApiKey::OffsetDelete, v, &req)
            .unwrap_or_else(|| panic!("OffsetDelete v{v}"));
        assert_eq!(
            (r.error_code, r.topics[0].partitions[0].error_code),
            (0, 0),
            "OffsetDelete v{v}"
        );
    }
    for v in versions(ApiKey::DeleteGroups) {
        let r: DeleteGroupsResponse = c
            .call(
                ApiKey::DeleteGroups,
                v,
                &DeleteGroupsRequest::default().with_groups_names(vec![
                    GroupId(s("oc")),
                    GroupId(s("vg9")),
                    GroupId(s("nope")),
                ]),
            )
            .unwrap_or_else(|| panic!("DeleteGroups v{v}"));
        let codes: Vec<i16> = r.results.iter().map(|x| x.error_code).collect();
        if v == strata_versions(ApiKey::DeleteGroups).0 {
            assert_eq!(
                codes,
                vec![0, 68, 69],
                "DeleteGroups v{v}: deleted, NON_EMPTY_GROUP, GROUP_ID_NOT_FOUND"
            );
        } else {
            assert_eq!(codes[0], 69, "DeleteGroups v{v}: already deleted");
        }
    }
    for v in versions(ApiKey::ConsumerGroupHeartbeat) {
        let group = format!("cg{v}");
        let req = ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(s(&group)))
            .with_member_id(s(&format!("member-{v}")))
            .with_member_epoch(0)
            .with_rebalance_timeout_ms(10_000)
            .with_subscribed_topic_names(Some(vec![t("vt")]))
            .with_topic_partitions(Some(vec![]));
        let r: ConsumerGroupHeartbeatResponse = c
            .call(ApiKey::ConsumerGroupHeartbeat, v, &req)
            .unwrap_or_else(|| panic!("ConsumerGroupHeartbeat v{v}"));
        assert_eq!(
            r.error_code, 0,
            "ConsumerGroupHeartbeat v{v}: {:?}",
            r.error_message
        );
        assert_eq!(r.member_epoch, 1);
        let parts: usize = r
            .assignment
            .as_ref()
            .expect("assignment")
            .topic_partitions
            .iter()
            .map(|tp| tp.partitions.len())
            .sum();
        assert_eq!(parts, 2, "both partitions of vt");
        for dv in versions(ApiKey::ConsumerGroupDescribe) {
            let d: ConsumerGroupDescribeResponse = c
                .call(
                    ApiKey::ConsumerGroupDescribe,
                    dv,
                    &ConsumerGroupDescribeRequest::default()
                        .with_group_ids(vec![GroupId(s(&group))]),
                )
                .unwrap_or_else(|| panic!("ConsumerGroupDescribe v{dv}"));
            assert_eq!(d.groups[0].error_code, 0);
            assert_eq!(d.groups[0].members.len(), 1);
            assert_eq!(d.groups[0].assignor_name.as_str(), "uniform");
        }
    }
    for v in versions(ApiKey::DescribeLogDirs) {
        let r: DescribeLogDirsResponse = c
            .call(
                ApiKey::DescribeLogDirs,
                v,
                &DescribeLogDirsRequest::default().with_topics(None),
            )
            .unwrap_or_else(|| panic!("DescribeLogDirs v{v}"));
        let dir = &r.results[0];
        assert_eq!(dir.error_code, 0, "DescribeLogDirs v{v}");
        let vt = dir
            .topics
            .iter()
            .find(|t| t.name.0.as_str() == "vt")
            .expect("vt listed");
        assert_eq!(vt.partitions.len(), 2);
        assert!(
            vt.partitions.iter().any(|p| p.partition_size > 0),
            "sizes on disk"
        );
    }
    for v in versions(ApiKey::DescribeQuorum) {
        use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
        let req = DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
            .with_topic_name(t("__cluster_metadata"))
            .with_partitions(vec![PartitionData::default().with_partition_index(0)])]);
        let r: DescribeQuorumResponse = c
            .call(ApiKey::DescribeQuorum, v, &req)
            .unwrap_or_else(|| panic!("DescribeQuorum v{v}"));
        let p = &r.topics[0].partitions[0];
        assert_eq!((p.error_code, p.leader_id.0), (0, 1), "DescribeQuorum v{v}");
        assert_eq!(p.current_voters.len(), 1);
        assert!(p.high_watermark > 0);
    }
    for v in versions(ApiKey::AlterReplicaLogDirs) {
        use kafka_protocol::messages::alter_replica_log_dirs_request::{
            AlterReplicaLogDir, AlterReplicaLogDirTopic,
        };
        let dir = |path: String| {
            AlterReplicaLogDir::default()
                .with_path(s(&path))
                .with_topics(vec![AlterReplicaLogDirTopic::default()
                    .with_name(t("vt"))
                    .with_partitions(vec![0])])
        };
        let req = AlterReplicaLogDirsRequest::default().with_dirs(vec![
            dir(broker.data_dir().display().to_string()),
            dir("/nonexistent".to_string()),
        ]);
        let r: AlterReplicaLogDirsResponse = c
            .call(ApiKey::AlterReplicaLogDirs, v, &req)
            .unwrap_or_else(|| panic!("AlterReplicaLogDirs v{v}"));
        let codes: Vec<i16> = r
            .results
            .iter()
            .map(|x| x.partitions[0].error_code)
            .collect();
        assert_eq!(codes, vec![0, 57], "AlterReplicaLogDirs v{v}");
    }
    for v in versions(ApiKey::ElectLeaders) {
        use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
        let req = ElectLeadersRequest::default().with_topic_partitions(Some(vec![
            TopicPartitions::default()
                .with_topic(t("vt"))
                .with_partitions(vec![0, 1]),
        ]));
        let r: ElectLeadersResponse = c
            .call(ApiKey::ElectLeaders, v, &req)
            .unwrap_or_else(|| panic!("ElectLeaders v{v}"));
        let codes: Vec<i16> = r.replica_election_results[0]
            .partition_result
            .iter()
            .map(|p| p.error_code)
            .collect();
        assert_eq!(
            codes,
            if v >= 1 { vec![84, 84] } else { vec![0, 0] },
            "ElectLeaders v{v}"
        );
    }
    for v in versions(ApiKey::ListPartitionReassignments) {
        let r: ListPartitionReassignmentsResponse = c
            .call(
                ApiKey::ListPartitionReassignments,
                v,
                &ListPartitionReassignmentsRequest::default().with_topics(None),
            )
            .unwrap_or_else(|| panic!("ListPartitionReassignments v{v}"));
        assert!(r.topics.is_empty() && r.error_code == 0);
    }
    for v in versions(ApiKey::AlterPartitionReassignments) {
        use kafka_protocol::messages::alter_partition_reassignments_request::{
            ReassignablePartition, ReassignableTopic,
        };
        let req = AlterPartitionReassignmentsRequest::default().with_topics(vec![
            ReassignableTopic::default()
                .with_name(t("vt"))
                .with_partitions(vec![
                    ReassignablePartition::default()
                        .with_partition_index(0)
                        .with_replicas(Some(vec![BrokerId(1)])),
                    ReassignablePartition::default()
                        .with_partition_index(1)
                        .with_replicas(Some(vec![BrokerId(7)])),
                ]),
        ]);
        let r: AlterPartitionReassignmentsResponse = c
            .call(ApiKey::AlterPartitionReassignments, v, &req)
            .unwrap_or_else(|| panic!("AlterPartitionReassignments v{v}"));
        let codes: Vec<i16> = r.responses[0]
            .partitions
            .iter()
            .map(|p| p.error_code)
            .collect();
        assert_eq!(codes, vec![0, 39], "AlterPartitionReassignments v{v}");
    }
    for v in versions(ApiKey::ListConfigResources) {
        let r: ListConfigResourcesResponse = c
            .call(
                ApiKey::ListConfigResources,
                v,
                &ListConfigResourcesRequest::default(),
            )
            .unwrap_or_else(|| panic!("ListConfigResources v{v}"));
        if v == 0 {
            assert!(
                r.config_resources.is_empty(),
                "v0 lists client-metrics resources only"
            );
            continue;
        }
        assert!(
            r.config_resources.iter().any(|x| x.resource_type == 4),
            "ListConfigResources v{v}"
        );
        assert!(r
            .config_resources
            .iter()
            .any(|x| x.resource_name.as_str() == "vt"));
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
