//! Raw-protocol helpers for transaction tests: create a topic, InitProducerId,
//! AddPartitionsToTxn v3, EndTxn, and a transactional produce.

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use strata_protocol::records::{encode_batch_as, BatchProducer, PlainRecord};

use super::Client;

pub fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

pub fn topic(c: &mut Client, name: &str) {
    let req = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(TopicName(s(name)))
        .with_num_partitions(1)
        .with_replication_factor(1)]);
    let r: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &req).expect("answer");
    assert_eq!(r.topics[0].error_code, 0);
}

pub fn init(c: &mut Client, tid: &str, timeout_ms: i32) -> Result<(i64, i16), i16> {
    let req = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(s(tid))))
        .with_transaction_timeout_ms(timeout_ms)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let r: InitProducerIdResponse = c.call(ApiKey::InitProducerId, 4, &req).expect("answer");
    if r.error_code != 0 {
        return Err(r.error_code);
    }
    Ok((r.producer_id.0, r.producer_epoch))
}

/// AddPartitionsToTxn v3: the error code of every partition, in request order.
pub fn add(c: &mut Client, tid: &str, pid: i64, epoch: i16, parts: &[(&str, i32)]) -> Vec<i16> {
    let topics = parts
        .iter()
        .map(|(t, p)| {
            AddPartitionsToTxnTopic::default()
                .with_name(TopicName(s(t)))
                .with_partitions(vec![*p])
        })
        .collect();
    let req = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(s(tid)))
        .with_v3_and_below_producer_id(ProducerId(pid))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(topics);
    let r: AddPartitionsToTxnResponse =
        c.call(ApiKey::AddPartitionsToTxn, 3, &req).expect("answer");
    r.results_by_topic_v3_and_below
        .iter()
        .flat_map(|t| {
            t.results_by_partition
                .iter()
                .map(|p| p.partition_error_code)
        })
        .collect()
}

pub fn end(c: &mut Client, tid: &str, pid: i64, epoch: i16, commit: bool) -> i16 {
    let req = EndTxnRequest::default()
        .with_transactional_id(TransactionalId(s(tid)))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_committed(commit);
    let r: EndTxnResponse = c.call(ApiKey::EndTxn, 3, &req).expect("answer");
    r.error_code
}

pub fn produce(
    c: &mut Client,
    tid: &str,
    name: &str,
    pid: i64,
    epoch: i16,
    seq: i32,
) -> (i16, i64) {
    let records = encode_batch_as(
        &[PlainRecord::new(Some(b"k"), Some(b"v"), 1_700_000_000_000)],
        Compression::None,
        BatchProducer {
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            transactional: true,
            control: false,
        },
    )
    .expect("batch");
    let req = ProduceRequest::default()
        .with_transactional_id(Some(TransactionalId(s(tid))))
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(s(name)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])]);
    let r: ProduceResponse = c.call(ApiKey::Produce, 9, &req).expect("answer");
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}
