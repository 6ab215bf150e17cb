//! The checks ordinary clients never reach, as raw requests against a broker with the
//! authorizer on: a replica's Fetch needs CLUSTER_ACTION, an idempotent InitProducerId needs
//! IDEMPOTENT_WRITE on the cluster or WRITE on some topic, the brokers' batched
//! AddPartitionsToTxn (v4+) needs CLUSTER_ACTION, CreateAcls needs ALTER on the cluster.
//!
//! The client is `User:ANONYMOUS` (PLAINTEXT). With `allow.everyone.if.no.acl.found=true` it
//! may do anything to a resource no ACL names, so it creates its topic and ACLs itself; then
//! ALLOW DESCRIBE on the cluster (the cluster now has ACLs: every other cluster operation is
//! denied), DENY WRITE on every topic, ALLOW READ on `t` and ALLOW CREATE on `u`.

mod support;

use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::*;
use support::txn::{s, topic};
use support::{Client, TestBroker};

const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;

fn create_acls(c: &mut Client, acls: &[(i8, &str, i8, i8)]) -> Vec<i16> {
    let req = CreateAclsRequest::default().with_creations(
        acls.iter()
            .map(|(kind, name, op, permission)| {
                AclCreation::default()
                    .with_resource_type(*kind)
                    .with_resource_name(s(name))
                    .with_resource_pattern_type(3)
                    .with_principal(s("User:ANONYMOUS"))
                    .with_host(s("*"))
                    .with_operation(*op)
                    .with_permission_type(*permission)
            })
            .collect(),
    );
    let r: CreateAclsResponse = c.call(ApiKey::CreateAcls, 3, &req).expect("answer");
    r.results.iter().map(|r| r.error_code).collect()
}

fn fetch(c: &mut Client, replica_id: i32) -> i16 {
    let req = FetchRequest::default()
        // Version 12: the replica is named by `replica_id` (`replica_state` from 15).
        .with_replica_id(BrokerId(replica_id))
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(s("t")))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let r: FetchResponse = c.call(ApiKey::Fetch, 12, &req).expect("answer");
    assert_eq!(r.error_code, 0);
    r.responses[0].partitions[0].error_code
}

#[test]
fn requests_only_brokers_and_idempotent_producers_send_are_checked() {
    let b = TestBroker::start(&[
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found=true",
    ]);
    let mut c = b.client();
    topic(&mut c, "t");
    // (resource type, name, operation, permission): CLUSTER 4, TOPIC 2; DESCRIBE 8, WRITE 4;
    // ALLOW 3, DENY 2.
    assert_eq!(
        create_acls(
            &mut c,
            &[
                (4, "kafka-cluster", 8, 3),
                (2, "*", 4, 2),
                (2, "t", 3, 3),
                (2, "u", 5, 3)
            ]
        ),
        vec![0, 0, 0, 0]
    );

    // CREATE on `u` creates it; without DESCRIBE_CONFIGS on it the answer carries no configs
    // or sizes and says why (CREATE 5).
    let create = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(TopicName(s("u")))
        .with_num_partitions(2)
        .with_replication_factor(1)]);
    let r: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &create).expect("answer");
    let created = &r.topics[0];
    assert_eq!(created.error_code, 0);
    assert_eq!(created.topic_config_error_code, TOPIC_AUTHORIZATION_FAILED);
    assert_eq!(created.num_partitions, -1);
    assert!(created.configs.as_ref().is_none_or(Vec::is_empty));

    // A consumer may read `t`, a replica may not fetch it.
    assert_eq!(fetch(&mut c, -1), 0);
    assert_eq!(fetch(&mut c, 1), TOPIC_AUTHORIZATION_FAILED);

    // No IDEMPOTENT_WRITE on the cluster, WRITE denied on every topic.
    let init = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let r: InitProducerIdResponse = c.call(ApiKey::InitProducerId, 4, &init).expect("answer");
    assert_eq!(r.error_code, CLUSTER_AUTHORIZATION_FAILED);

    // The batched AddPartitionsToTxn is a broker's request.
    let add = AddPartitionsToTxnRequest::default().with_transactions(vec![
        AddPartitionsToTxnTransaction::default()
            .with_transactional_id(TransactionalId(s("tx")))
            .with_producer_id(ProducerId(1))
            .with_producer_epoch(0)
            .with_topics(vec![AddPartitionsToTxnTopic::default()
                .with_name(TopicName(s("t")))
                .with_partitions(vec![0])]),
    ]);
    let r: AddPartitionsToTxnResponse =
        c.call(ApiKey::AddPartitionsToTxn, 4, &add).expect("answer");
    assert_eq!(r.error_code, CLUSTER_AUTHORIZATION_FAILED);

    // DESCRIBE on the cluster lists the ACLs; creating one needs ALTER.
    let describe = DescribeAclsRequest::default()
        .with_resource_type_filter(1)
        .with_resource_name_filter(None)
        .with_principal_filter(None)
        .with_host_filter(None)
        .with_pattern_type_filter(1)
        .with_operation(1)
        .with_permission_type(1);
    let r: DescribeAclsResponse = c.call(ApiKey::DescribeAcls, 3, &describe).expect("answer");
    assert_eq!(r.error_code, 0);
    assert_eq!(r.resources.len(), 4);
    assert_eq!(
        create_acls(&mut c, &[(3, "g", 3, 3)]),
        vec![CLUSTER_AUTHORIZATION_FAILED]
    );
}
