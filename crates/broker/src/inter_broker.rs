//! Requests a broker sends to other brokers over the Kafka protocol, to the endpoint of the
//! inter-broker listener (`inter.broker.listener.name`) in their registration:
//! WriteTxnMarkers from a transaction coordinator to the leaders of a transaction's
//! partitions, and the verify-only AddPartitionsToTxn (KIP-890) a partition's leader sends to
//! the transaction's coordinator before appending a transactional batch, as Kafka's brokers
//! do. One connection per call (markers are written once
//! per transaction and partition leader); plaintext listeners only so far.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    ApiKey, ProducerId, RequestHeader, ResponseHeader, TopicName, WriteTxnMarkersRequest,
    WriteTxnMarkersResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use strata_coordinator::txn::MarkerPlan;
use strata_protocol::ErrorCode;
use strata_quorum::MetadataImage;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::broker::Broker;

/// The longest a call to another broker may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The WriteTxnMarkers version sent (flexible, served by Kafka 4 and Strata).
const WRITE_TXN_MARKERS_VERSION: i16 = 1;

/// Has broker `leader` write `plan`'s markers to `partitions` (which it leads) and waits for
/// its answer. Any partition it could not mark fails the whole, so the coordinator tries the
/// transaction's markers again later.
pub async fn write_txn_markers(
    broker: &Broker,
    image: &MetadataImage,
    leader: i32,
    plan: &MarkerPlan,
    partitions: &[(String, i32)],
) -> Result<(), ErrorCode> {
    let address = endpoint_of(broker, image, leader).ok_or(ErrorCode::NotLeaderOrFollower)?;
    let topics = by_topic(partitions);
    let request =
        WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
            .with_producer_id(ProducerId(plan.producer_id))
            .with_producer_epoch(plan.epoch)
            .with_transaction_result(plan.commit)
            .with_coordinator_epoch(0)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(name, indexes)| {
                        WritableTxnMarkerTopic::default()
                            .with_name(TopicName(StrBytes::from_string(name.to_string())))
                            .with_partition_indexes(indexes)
                    })
                    .collect(),
            )]);
    let client_id = format!("strata-broker-{}", broker.node_id());
    let response: WriteTxnMarkersResponse = call(
        &address,
        &client_id,
        ApiKey::WriteTxnMarkers,
        WRITE_TXN_MARKERS_VERSION,
        &request,
    )
    .await
    .map_err(|error| {
        tracing::warn!(leader, %address, %error, producer_id = plan.producer_id, "could not send transaction markers to the partitions' leader; retrying later");
        ErrorCode::NetworkException
    })?;
    for marker in &response.markers {
        for topic in &marker.topics {
            for p in &topic.partitions {
                if p.error_code != 0 {
                    tracing::info!(leader, topic = %topic.name.0, partition = p.partition_index, error_code = p.error_code, "a partition's leader refused a transaction marker; retrying later");
                    return Err(ErrorCode::try_from_code(p.error_code)
                        .unwrap_or(ErrorCode::UnknownServerError));
                }
            }
        }
    }
    Ok(())
}

/// `partitions` grouped by topic, in name order, as the requests carry them.
fn by_topic(partitions: &[(String, i32)]) -> BTreeMap<&str, Vec<i32>> {
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, index) in partitions {
        topics.entry(topic).or_default().push(*index);
    }
    topics
}

/// The endpoint of broker `node` on the inter-broker listener.
pub(crate) fn endpoint_of(broker: &Broker, image: &MetadataImage, node: i32) -> Option<String> {
    let listener = broker
        .config
        .set
        .get("inter.broker.listener.name")
        .cloned()
        .or_else(|| {
            broker
                .config
                .advertised_listeners
                .first()
                .map(|l| l.name.clone())
        })
        .unwrap_or_default();
    image
        .broker(node)
        .filter(|b| !b.fenced)
        .and_then(|b| b.endpoint(&listener))
        .map(|e| format!("{}:{}", e.host, e.port))
}

/// The broker coordinating `transactional_id`: the leader of its `__transaction_state`
/// partition, if it has one.
pub fn txn_coordinator(
    broker: &Broker,
    image: &MetadataImage,
    transactional_id: &str,
) -> Option<i32> {
    let partition = broker.txns.partition_for(transactional_id);
    image
        .topic_by_name(crate::txn::TXN_TOPIC)
        .and_then(|t| t.partitions.get(&partition))
        .map(|p| p.leader)
}

/// A transactional batch's partitions, verified with the transaction's coordinator on
/// broker `coordinator` (AddPartitionsToTxn v4, verify only): each partition's outcome, by
/// (topic, partition). An unreachable coordinator fails them all with a retriable error.
pub async fn verify_txn_partitions(
    broker: &Broker,
    image: &MetadataImage,
    coordinator: i32,
    transactional_id: &str,
    producer_id: i64,
    epoch: i16,
    partitions: &[(String, i32)],
) -> BTreeMap<(String, i32), Result<(), ErrorCode>> {
    use kafka_protocol::messages::add_partitions_to_txn_request::{
        AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
    };
    use kafka_protocol::messages::{
        AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, TransactionalId,
    };
    let fail_all = |code: ErrorCode| {
        partitions
            .iter()
            .map(|p| (p.clone(), Err(code)))
            .collect::<BTreeMap<_, _>>()
    };
    let Some(address) = endpoint_of(broker, image, coordinator) else {
        return fail_all(ErrorCode::NotCoordinator);
    };
    let topics = by_topic(partitions);
    let request = AddPartitionsToTxnRequest::default().with_transactions(vec![
        AddPartitionsToTxnTransaction::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(
                transactional_id.to_string(),
            )))
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(epoch)
            .with_verify_only(true)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(name, indexes)| {
                        AddPartitionsToTxnTopic::default()
                            .with_name(TopicName(StrBytes::from_string(name.to_string())))
                            .with_partitions(indexes)
                    })
                    .collect(),
            ),
    ]);
    let client_id = format!("strata-broker-{}", broker.node_id());
    let response: AddPartitionsToTxnResponse = match call(
        &address,
        &client_id,
        ApiKey::AddPartitionsToTxn,
        4,
        &request,
    )
    .await
    {
        Ok(r) => r,
        Err(error) => {
            tracing::info!(coordinator, %address, %error, "could not verify a transactional batch with its coordinator");
            return fail_all(ErrorCode::NotEnoughReplicas);
        }
    };
    if response.error_code != 0 {
        return fail_all(
            ErrorCode::try_from_code(response.error_code).unwrap_or(ErrorCode::UnknownServerError),
        );
    }
    let mut out = fail_all(ErrorCode::InvalidTxnState);
    for result in &response.results_by_transaction {
        for topic in &result.topic_results {
            for p in &topic.results_by_partition {
                let outcome = match p.partition_error_code {
                    0 => Ok(()),
                    code => {
                        Err(ErrorCode::try_from_code(code).unwrap_or(ErrorCode::UnknownServerError))
                    }
                };
                out.insert((topic.name.0.to_string(), p.partition_index), outcome);
            }
        }
    }
    out
}

/// Whether `partitions` are in the open transaction of `transactional_id` (KIP-890): from
/// this broker's coordinator state when it coordinates the id, else asked of the coordinator.
pub async fn verify_txn(
    broker: &Broker,
    image: &MetadataImage,
    transactional_id: &str,
    producer_id: i64,
    epoch: i16,
    partitions: &[(String, i32)],
) -> BTreeMap<(String, i32), Result<(), ErrorCode>> {
    match txn_coordinator(broker, image, transactional_id) {
        Some(coordinator) if coordinator != broker.node_id() => {
            verify_txn_partitions(
                broker,
                image,
                coordinator,
                transactional_id,
                producer_id,
                epoch,
                partitions,
            )
            .await
        }
        _ => partitions
            .iter()
            .map(|p| {
                let verified = broker.txns.verify(transactional_id, producer_id, epoch, p);
                (p.clone(), verified)
            })
            .collect(),
    }
}

/// One request to `address` on a new connection, bounded by [`CALL_TIMEOUT`].
async fn call<Req: Encodable, Resp: Decodable>(
    address: &str,
    client_id: &str,
    key: ApiKey,
    version: i16,
    request: &Req,
) -> std::io::Result<Resp> {
    let work = async {
        let mut stream = TcpStream::connect(address).await?;
        let _ = stream.set_nodelay(true);
        let mut body = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(1)
            .with_client_id(Some(StrBytes::from_string(client_id.to_string())))
            .encode(&mut body, key.request_header_version(version))
            .map_err(std::io::Error::other)?;
        request
            .encode(&mut body, version)
            .map_err(std::io::Error::other)?;
        let mut frame = BytesMut::with_capacity(4 + body.len());
        frame.put_i32(body.len() as i32);
        frame.extend_from_slice(&body);
        stream.write_all(&frame).await?;
        let size = stream.read_i32().await?;
        let size = usize::try_from(size)
            .ok()
            .filter(|s| *s <= 64 << 20)
            .ok_or_else(|| std::io::Error::other(format!("response size {size}")))?;
        let mut buf = vec![0u8; size];
        stream.read_exact(&mut buf).await?;
        let mut buf = bytes::Bytes::from(buf);
        let header = ResponseHeader::decode(&mut buf, key.response_header_version(version))
            .map_err(std::io::Error::other)?;
        if header.correlation_id != 1 {
            return Err(std::io::Error::other("a response to another request"));
        }
        let response = Resp::decode(&mut buf, version).map_err(std::io::Error::other)?;
        let _ = buf.remaining();
        Ok(response)
    };
    tokio::time::timeout(CALL_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no answer",
            ))
        })
}
