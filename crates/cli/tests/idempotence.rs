//! Idempotent producers against a real broker: duplicates answered with their original
//! offsets and not stored twice, sequence gaps and stale epochs refused, and the producer
//! state rebuilt after `kill -9` (by replay alone, and from a snapshot plus replay).

mod support;

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use strata_protocol::records::{encode_batch_as, BatchProducer, PlainRecord};
use support::{Client, TestBroker};

const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const INVALID_PRODUCER_EPOCH: i16 = 47;

fn t(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn create_topic(c: &mut Client) {
    let req = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(t("idem"))
        .with_num_partitions(1)
        .with_replication_factor(1)]);
    let r: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 7, &req).expect("answer");
    assert_eq!(r.topics[0].error_code, 0);
}

fn init_producer_id(c: &mut Client, current: Option<(i64, i16)>) -> (i64, i16) {
    let (id, epoch) = current.unwrap_or((-1, -1));
    let req = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(id))
        .with_producer_epoch(epoch);
    let r: InitProducerIdResponse = c.call(ApiKey::InitProducerId, 4, &req).expect("answer");
    assert_eq!(r.error_code, 0);
    (r.producer_id.0, r.producer_epoch)
}

/// A batch of `count` records from producer `(id, epoch)` starting at sequence `seq`.
fn batch(id: i64, epoch: i16, seq: i32, count: usize) -> Bytes {
    let records: Vec<PlainRecord> = (0..count)
        .map(|i| {
            let value = format!("seq-{}", seq as usize + i);
            PlainRecord::new(Some(b"k"), Some(value.as_bytes()), 1_700_000_000_000)
        })
        .collect();
    encode_batch_as(
        &records,
        Compression::None,
        BatchProducer {
            producer_id: id,
            producer_epoch: epoch,
            base_sequence: seq,
            transactional: false,
            control: false,
        },
    )
    .expect("batch encodes")
}

/// Produces one batch; returns (error code, base offset, log start offset).
fn produce(c: &mut Client, records: Bytes) -> (i16, i64) {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(t("idem"))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])]);
    let r: ProduceResponse = c.call(ApiKey::Produce, 9, &req).expect("answer");
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

fn log_end(c: &mut Client) -> i64 {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(t("idem"))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-1)])]);
    let r: ListOffsetsResponse = c.call(ApiKey::ListOffsets, 7, &req).expect("answer");
    r.topics[0].partitions[0].offset
}

#[test]
fn retries_are_deduplicated_and_gaps_and_stale_epochs_refused() {
    let broker = TestBroker::start(&[]);
    let mut c = broker.client();
    create_topic(&mut c);
    let (id, epoch) = init_producer_id(&mut c, None);
    assert_eq!(produce(&mut c, batch(id, epoch, 0, 3)), (0, 0));
    // The same batch again (a retry): its original offset, nothing appended.
    assert_eq!(produce(&mut c, batch(id, epoch, 0, 3)), (0, 0));
    assert_eq!(log_end(&mut c), 3);
    // A gap: sequence 5 where 3 is expected.
    assert_eq!(
        produce(&mut c, batch(id, epoch, 5, 1)).0,
        OUT_OF_ORDER_SEQUENCE_NUMBER
    );
    assert_eq!(produce(&mut c, batch(id, epoch, 3, 2)), (0, 3));
    // An older retry still inside the last five batches is a duplicate too.
    assert_eq!(produce(&mut c, batch(id, epoch, 0, 3)), (0, 0));
    assert_eq!(log_end(&mut c), 5);
    // InitProducerId presenting the id and epoch without a transactional id gets a new id
    // (as Kafka answers): the presented producer is left alone, whoever asks.
    let (other_id, other_epoch) = init_producer_id(&mut c, Some((id, epoch)));
    assert_ne!(other_id, id);
    assert_eq!(other_epoch, 0);
    // KIP-360: the producer bumps its epoch itself and starts again at sequence 0; the old
    // epoch is then refused.
    let new_epoch = epoch + 1;
    assert_eq!(produce(&mut c, batch(id, new_epoch, 0, 1)), (0, 5));
    assert_eq!(
        produce(&mut c, batch(id, epoch, 5, 1)).0,
        INVALID_PRODUCER_EPOCH
    );
    // A non-idempotent producer is not affected.
    let plain = strata_protocol::records::encode_batch(
        &[PlainRecord::new(None, Some(b"plain"), 1_700_000_000_000)],
        Compression::None,
    )
    .expect("batch");
    assert_eq!(produce(&mut c, plain.clone()), (0, 6));
    assert_eq!(produce(&mut c, plain), (0, 7));
}

#[test]
fn producer_state_survives_kill_9() {
    // Maintenance (and with it the producer-state snapshot) every 100 ms.
    let mut broker = TestBroker::start(&["log.retention.check.interval.ms=100"]);
    let mut c = broker.client();
    create_topic(&mut c);
    let (id, epoch) = init_producer_id(&mut c, None);
    assert_eq!(produce(&mut c, batch(id, epoch, 0, 2)), (0, 0));
    assert_eq!(produce(&mut c, batch(id, epoch, 2, 2)), (0, 2));

    // Crash before any snapshot could matter: the state comes back from the log alone.
    std::fs::remove_file(broker.data_dir().join("idem-0/producer-state.snapshot")).ok();
    broker.restart();
    let mut c = broker.client();
    assert_eq!(produce(&mut c, batch(id, epoch, 2, 2)), (0, 2));
    assert_eq!(produce(&mut c, batch(id, epoch, 0, 2)), (0, 0));
    assert_eq!(
        produce(&mut c, batch(id, epoch, 7, 1)).0,
        OUT_OF_ORDER_SEQUENCE_NUMBER
    );

    // Let a snapshot be written, append past it, crash: snapshot plus replay.
    assert_eq!(produce(&mut c, batch(id, epoch, 4, 1)), (0, 4));
    let snapshot = broker.data_dir().join("idem-0/producer-state.snapshot");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !snapshot.exists() {
        assert!(std::time::Instant::now() < deadline, "no snapshot written");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(produce(&mut c, batch(id, epoch, 5, 1)), (0, 5));
    broker.restart();
    let mut c = broker.client();
    let r = produce(&mut c, batch(id, epoch, 5, 1));
    assert_eq!(r, (0, 5), "{}", broker.log());
    let r = produce(&mut c, batch(id, epoch, 4, 1));
    assert_eq!(r, (0, 4), "{:?}", std::fs::read_to_string(&snapshot));
    assert_eq!(log_end(&mut c), 6);
    assert_eq!(produce(&mut c, batch(id, epoch, 6, 1)), (0, 6));
}
