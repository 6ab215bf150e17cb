//! Transactions at the protocol level against a real broker: the coordinator's error paths,
//! KIP-890 produce verification, DescribeTransactions / ListTransactions, offsets committed
//! in a transaction (require_stable), and the aborted-transaction list of a read_committed
//! fetch before and after kill -9.

mod support;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use support::txn::{add, end, init, produce, s, topic};
use support::{Client, TestBroker};

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const INVALID_TXN_STATE: i16 = 48;
const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
const INVALID_TRANSACTION_TIMEOUT: i16 = 50;
const OPERATION_NOT_ATTEMPTED: i16 = 55;
const UNSTABLE_OFFSET_COMMIT: i16 = 88;
const PRODUCER_FENCED: i16 = 90;
const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;

fn describe(c: &mut Client, tid: &str) -> (i16, String, Vec<(String, Vec<i32>)>) {
    let req = DescribeTransactionsRequest::default()
        .with_transactional_ids(vec![TransactionalId(s(tid))]);
    let r: DescribeTransactionsResponse = c
        .call(ApiKey::DescribeTransactions, 0, &req)
        .expect("answer");
    let t = &r.transaction_states[0];
    (
        t.error_code,
        t.transaction_state.to_string(),
        t.topics
            .iter()
            .map(|d| (d.topic.0.to_string(), d.partitions.clone()))
            .collect(),
    )
}

/// A read_committed fetch from offset 0: (last stable offset, records bytes, aborted list).
fn fetch_committed(c: &mut Client, name: &str) -> (i64, Bytes, Vec<(i64, i64)>) {
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_isolation_level(1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(s(name)))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let r: FetchResponse = c.call(ApiKey::Fetch, 12, &req).expect("answer");
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    (
        p.last_stable_offset,
        p.records.clone().unwrap_or_default(),
        p.aborted_transactions
            .iter()
            .flatten()
            .map(|a| (a.producer_id.0, a.first_offset))
            .collect(),
    )
}

#[test]
fn coordinator_errors_and_produce_verification() {
    let broker = TestBroker::start(&["transaction.max.timeout.ms=60000"]);
    let mut c = broker.client();
    topic(&mut c, "t1");
    assert_eq!(init(&mut c, "tx", 60_001), Err(INVALID_TRANSACTION_TIMEOUT));
    let (pid, epoch) = init(&mut c, "tx", 10_000).expect("init");
    // A transactional batch for a partition not in the transaction: refused (KIP-890).
    assert_eq!(
        produce(&mut c, "tx", "t1", pid, epoch, 0).0,
        INVALID_TXN_STATE
    );
    // All or nothing: an unknown partition fails the request, the others are not attempted.
    assert_eq!(
        add(&mut c, "tx", pid, epoch, &[("t1", 0), ("nope", 0)]),
        vec![OPERATION_NOT_ATTEMPTED, UNKNOWN_TOPIC_OR_PARTITION]
    );
    assert_eq!(
        add(&mut c, "tx", pid + 1, epoch, &[("t1", 0)]),
        vec![INVALID_PRODUCER_ID_MAPPING]
    );
    assert_eq!(
        add(&mut c, "tx", pid, epoch + 1, &[("t1", 0)]),
        vec![PRODUCER_FENCED]
    );
    assert_eq!(add(&mut c, "tx", pid, epoch, &[("t1", 0)]), vec![0]);
    assert_eq!(produce(&mut c, "tx", "t1", pid, epoch, 0), (0, 0));
    // DescribeProducers shows the producer with its open transaction.
    let producers: DescribeProducersResponse = c
        .call(
            ApiKey::DescribeProducers,
            0,
            &DescribeProducersRequest::default().with_topics(vec![
                describe_producers_request::TopicRequest::default()
                    .with_name(TopicName(s("t1")))
                    .with_partition_indexes(vec![0]),
            ]),
        )
        .expect("answer");
    let active = &producers.topics[0].partitions[0].active_producers;
    assert_eq!(active.len(), 1);
    assert_eq!(
        (
            active[0].producer_id.0,
            active[0].last_sequence,
            active[0].current_txn_start_offset
        ),
        (pid, 0, 0)
    );
    let (code, state, topics) = describe(&mut c, "tx");
    assert_eq!((code, state.as_str()), (0, "Ongoing"));
    assert_eq!(topics, vec![("t1".to_string(), vec![0])]);
    assert_eq!(describe(&mut c, "nobody").0, TRANSACTIONAL_ID_NOT_FOUND);
    let list: ListTransactionsResponse = c
        .call(
            ApiKey::ListTransactions,
            1,
            &ListTransactionsRequest::default()
                .with_state_filters(vec![s("Ongoing")])
                .with_duration_filter(-1),
        )
        .expect("answer");
    assert_eq!(list.transaction_states.len(), 1);
    assert_eq!(list.transaction_states[0].producer_id.0, pid);
    // A new instance fences the old one (its open transaction is aborted first).
    let (pid2, epoch2) = init(&mut c, "tx", 10_000).expect("re-init");
    assert_eq!((pid2, epoch2), (pid, epoch + 2));
    assert_eq!(end(&mut c, "tx", pid, epoch, true), PRODUCER_FENCED);
    // The zombie's produce is refused by the partition's producer state too.
    assert_eq!(
        produce(&mut c, "tx", "t1", pid, epoch, 1).0,
        INVALID_PRODUCER_EPOCH
    );
    // Ending a transaction that never started is an invalid state.
    assert_eq!(end(&mut c, "tx", pid2, epoch2, true), INVALID_TXN_STATE);
    // A client may not write transaction markers itself: INVALID_RECORD.
    let marker = strata_protocol::records::encode_marker(
        pid2,
        epoch2,
        strata_protocol::records::ControlMarker {
            commit: true,
            coordinator_epoch: 0,
        },
        1_700_000_000_000,
    )
    .expect("marker");
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(s("t1")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(marker))])]);
    let r: ProduceResponse = c.call(ApiKey::Produce, 9, &req).expect("answer");
    assert_eq!(r.responses[0].partition_responses[0].error_code, 87);
    // The fenced transaction was aborted, then the id re-initialised for the new instance.
    assert_eq!(describe(&mut c, "tx").1, "Empty");
}

#[test]
fn aborted_ranges_and_transactional_offsets_survive_kill_9() {
    let mut broker = TestBroker::start(&[]);
    let mut c = broker.client();
    topic(&mut c, "t2");
    let (pid, epoch) = init(&mut c, "tx2", 10_000).expect("init");
    assert_eq!(add(&mut c, "tx2", pid, epoch, &[("t2", 0)]), vec![0]);
    assert_eq!(produce(&mut c, "tx2", "t2", pid, epoch, 0), (0, 0));
    assert_eq!(produce(&mut c, "tx2", "t2", pid, epoch, 1), (0, 1));
    // Open: read_committed sees nothing (LSO 0).
    assert_eq!(fetch_committed(&mut c, "t2").0, 0);
    assert_eq!(end(&mut c, "tx2", pid, epoch, false), 0);
    let (lso, records, aborted) = fetch_committed(&mut c, "t2");
    assert_eq!(lso, 3, "two records and the abort marker");
    assert!(!records.is_empty());
    assert_eq!(aborted, vec![(pid, 0)]);

    // Offsets committed in a transaction: pending until the commit marker.
    let add_offsets = AddOffsetsToTxnRequest::default()
        .with_transactional_id(TransactionalId(s("tx2")))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_group_id(GroupId(s("g")));
    let r: AddOffsetsToTxnResponse = c
        .call(ApiKey::AddOffsetsToTxn, 3, &add_offsets)
        .expect("answer");
    assert_eq!(r.error_code, 0);
    let commit = TxnOffsetCommitRequest::default()
        .with_transactional_id(TransactionalId(s("tx2")))
        .with_group_id(GroupId(s("g")))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_generation_id(-1)
        .with_topics(vec![TxnOffsetCommitRequestTopic::default()
            .with_name(TopicName(s("t2")))
            .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(42)
                .with_committed_leader_epoch(-1)])]);
    let r: TxnOffsetCommitResponse = c.call(ApiKey::TxnOffsetCommit, 3, &commit).expect("answer");
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    let fetch_offset = |c: &mut Client| -> (i64, i16) {
        let req = OffsetFetchRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_require_stable(true)
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(TopicName(s("t2")))
                .with_partition_indexes(vec![0])]));
        let r: OffsetFetchResponse = c.call(ApiKey::OffsetFetch, 7, &req).expect("answer");
        let p = &r.topics[0].partitions[0];
        (p.committed_offset, p.error_code)
    };
    assert_eq!(fetch_offset(&mut c), (-1, UNSTABLE_OFFSET_COMMIT));
    assert_eq!(end(&mut c, "tx2", pid, epoch, true), 0);
    assert_eq!(fetch_offset(&mut c), (42, 0));

    // After kill -9: the abort is still listed (the .txnindex, or the replay if it is
    // gone), and the committed offset is still there.
    broker.restart();
    let mut c = broker.client();
    assert_eq!(fetch_committed(&mut c, "t2").2, vec![(pid, 0)]);
    assert_eq!(fetch_offset(&mut c), (42, 0));
    for entry in std::fs::read_dir(broker.data_dir().join("t2-0")).expect("dir") {
        let path = entry.expect("entry").path();
        if path
            .extension()
            .is_some_and(|e| e == "txnindex" || e == "snapshot")
        {
            std::fs::remove_file(path).expect("remove");
        }
    }
    broker.restart();
    let mut c = broker.client();
    assert_eq!(fetch_committed(&mut c, "t2").2, vec![(pid, 0)]);
    assert_eq!(describe(&mut c, "tx2").1, "CompleteCommit");
}
