//! Answers depend on the request version, as Kafka's do (`strata_protocol::versioned` has the
//! per-API tables): a fenced producer sees PRODUCER_FENCED only at versions that know it,
//! nullable error messages are null on success, DescribeConfigs carries synonyms and
//! documentation only when asked. Raw requests against a real broker.

mod support;

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use support::{Client, TestBroker};

const PRODUCER_FENCED: i16 = 90;
const INVALID_PRODUCER_EPOCH: i16 = 47;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn create_topic(c: &mut Client, name: &str) -> CreateTopicsResponse {
    let req = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(TopicName(s(name)))
        .with_num_partitions(1)
        .with_replication_factor(1)]);
    c.call(ApiKey::CreateTopics, 5, &req).expect("answer")
}

fn init(c: &mut Client, version: i16, producer: Option<(i64, i16)>) -> InitProducerIdResponse {
    let (id, epoch) = producer.unwrap_or((-1, -1));
    let req = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(s("txn"))))
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(id))
        .with_producer_epoch(epoch);
    c.call(ApiKey::InitProducerId, version, &req)
        .expect("answer")
}

#[test]
fn a_fenced_producer_gets_the_code_its_request_version_knows() {
    let b = TestBroker::start(&["group.initial.rebalance.delay.ms=0"]);
    let mut c = b.client();
    assert_eq!(create_topic(&mut c, "t").topics[0].error_code, 0);
    // Three InitProducerIds: epochs 0, 1, 2. Epoch 0 is fenced from then on (KIP-360 lets
    // only the current and the previous epoch back in).
    let first = init(&mut c, 4, None);
    assert_eq!(first.error_code, 0);
    let id = first.producer_id.0;
    for _ in 0..2 {
        assert_eq!(init(&mut c, 4, None).error_code, 0);
    }
    let stale = 0i16;

    // InitProducerId: PRODUCER_FENCED from v4.
    for (version, want) in [(3, INVALID_PRODUCER_EPOCH), (4, PRODUCER_FENCED)] {
        let r = init(&mut c, version, Some((id, stale)));
        assert_eq!(r.error_code, want, "InitProducerId v{version}");
    }
    // AddPartitionsToTxn, AddOffsetsToTxn, EndTxn: from v2.
    for (version, want) in [(1, INVALID_PRODUCER_EPOCH), (2, PRODUCER_FENCED)] {
        let req = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(s("txn")))
            .with_v3_and_below_producer_id(ProducerId(id))
            .with_v3_and_below_producer_epoch(stale)
            .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                .with_name(TopicName(s("t")))
                .with_partitions(vec![0])]);
        let r: AddPartitionsToTxnResponse = c
            .call(ApiKey::AddPartitionsToTxn, version, &req)
            .expect("answer");
        let code = r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code;
        assert_eq!(code, want, "AddPartitionsToTxn v{version}");

        let req = AddOffsetsToTxnRequest::default()
            .with_transactional_id(TransactionalId(s("txn")))
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(stale)
            .with_group_id(GroupId(s("g")));
        let r: AddOffsetsToTxnResponse = c
            .call(ApiKey::AddOffsetsToTxn, version, &req)
            .expect("answer");
        assert_eq!(r.error_code, want, "AddOffsetsToTxn v{version}");

        let req = EndTxnRequest::default()
            .with_transactional_id(TransactionalId(s("txn")))
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(stale)
            .with_committed(true);
        let r: EndTxnResponse = c.call(ApiKey::EndTxn, version, &req).expect("answer");
        assert_eq!(r.error_code, want, "EndTxn v{version}");
    }
    // TxnOffsetCommit: Kafka answers INVALID_PRODUCER_EPOCH at every version.
    for version in [0, 3] {
        let req = TxnOffsetCommitRequest::default()
            .with_transactional_id(TransactionalId(s("txn")))
            .with_group_id(GroupId(s("g")))
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(stale)
            .with_topics(vec![TxnOffsetCommitRequestTopic::default()
                .with_name(TopicName(s("t")))
                .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(1)])]);
        let r: TxnOffsetCommitResponse = c
            .call(ApiKey::TxnOffsetCommit, version, &req)
            .expect("answer");
        assert_eq!(
            r.topics[0].partitions[0].error_code, INVALID_PRODUCER_EPOCH,
            "TxnOffsetCommit v{version}"
        );
    }
}

#[test]
fn error_messages_are_null_on_success_and_synonyms_come_when_asked() {
    let b = TestBroker::start(&[]);
    let mut c = b.client();
    // CreateTopics: null on success, the reason on failure.
    let r = create_topic(&mut c, "t");
    assert_eq!(
        (r.topics[0].error_code, &r.topics[0].error_message),
        (0, &None)
    );
    let r = create_topic(&mut c, "t");
    assert_eq!(r.topics[0].error_code, 36, "TOPIC_ALREADY_EXISTS");
    assert!(r.topics[0]
        .error_message
        .as_ref()
        .is_some_and(|m| !m.is_empty()));

    let req = AlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
        .with_resource_type(2)
        .with_resource_name(s("t"))
        .with_configs(vec![AlterableConfig::default()
            .with_name(s("retention.ms"))
            .with_value(Some(s("60000")))])]);
    for version in 0..=2 {
        let r: AlterConfigsResponse = c.call(ApiKey::AlterConfigs, version, &req).expect("answer");
        assert_eq!(r.responses[0].error_code, 0);
        assert_eq!(
            r.responses[0].error_message, None,
            "AlterConfigs v{version}"
        );
    }

    let req = CreatePartitionsRequest::default()
        .with_topics(vec![CreatePartitionsTopic::default()
            .with_name(TopicName(s("t")))
            .with_count(2)
            .with_assignments(None)])
        .with_timeout_ms(5000);
    let r: CreatePartitionsResponse = c.call(ApiKey::CreatePartitions, 1, &req).expect("answer");
    assert_eq!(
        (r.results[0].error_code, &r.results[0].error_message),
        (0, &None)
    );

    // DescribeConfigs: synonyms only with include_synonyms, documentation only with
    // include_documentation.
    let describe = |c: &mut Client, synonyms: bool, docs: bool| -> DescribeConfigsResponse {
        let req = DescribeConfigsRequest::default()
            .with_resources(vec![DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("t"))
                .with_configuration_keys(None)])
            .with_include_synonyms(synonyms)
            .with_include_documentation(docs);
        c.call(ApiKey::DescribeConfigs, 4, &req).expect("answer")
    };
    let plain = describe(&mut c, false, false);
    let result = &plain.results[0];
    assert_eq!((result.error_code, &result.error_message), (0, &None));
    assert!(!result.configs.is_empty());
    assert!(result.configs.iter().all(|c| c.synonyms.is_empty()));
    assert!(result.configs.iter().all(|c| c.documentation.is_none()));
    let full = describe(&mut c, true, true);
    let configs = &full.results[0].configs;
    assert!(configs.iter().any(|c| !c.synonyms.is_empty()));
    let retention = configs
        .iter()
        .find(|c| c.name.as_str() == "retention.ms")
        .expect("retention.ms");
    assert_eq!(retention.value.as_deref(), Some("60000"));
    assert!(
        retention.synonyms.len() >= 2,
        "the topic's value and the default"
    );
    assert!(configs.iter().all(|c| c.documentation.is_some()));
}
