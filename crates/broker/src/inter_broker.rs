//! Requests a broker sends to other brokers over the Kafka protocol, to the endpoint of the
//! inter-broker listener (`inter.broker.listener.name`) in their registration:
//! WriteTxnMarkers from a transaction coordinator to the leaders of a transaction's
//! partitions, and the verify-only AddPartitionsToTxn (KIP-890) a partition's leader sends to
//! the transaction's coordinator before appending a transactional batch, as Kafka's brokers
//! do. One connection per call (markers are written once per transaction and partition
//! leader), secured as the inter-broker listener is ([`security`]; the replica fetcher uses
//! the same).

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    ProducerId, TopicName, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};
use kafka_protocol::protocol::{Request, StrBytes};
use strata_client::conn::Connection;
use strata_client::{SaslConfig, SaslMechanism, Security, SecurityProtocol};
use strata_coordinator::txn::MarkerPlan;
use strata_protocol::ErrorCode;
use strata_quorum::MetadataImage;

use crate::broker::Broker;
use crate::config::{BrokerConfig, Listener};

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
    let answer = call(broker, &address, WRITE_TXN_MARKERS_VERSION, &request).await;
    let response: WriteTxnMarkersResponse = answer.map_err(|error| {
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

/// The listener brokers use among themselves: `inter.broker.listener.name`, else the one
/// named after `security.inter.broker.protocol` when that is set, else this broker's first
/// client listener.
pub(crate) fn listener(config: &BrokerConfig) -> Option<&Listener> {
    let named = |name: &str| {
        config
            .advertised_listeners
            .iter()
            .find(|l| l.name == name.trim())
    };
    match (
        config.set.get("inter.broker.listener.name"),
        config.set.get("security.inter.broker.protocol"),
    ) {
        (Some(name), _) => named(name),
        // Kafka's rule: the listener named after the protocol.
        (None, Some(protocol)) => named(protocol).or_else(|| config.advertised_listeners.first()),
        (None, None) => config.advertised_listeners.first(),
    }
}

/// The endpoint of broker `node` on the inter-broker listener.
pub(crate) fn endpoint_of(broker: &Broker, image: &MetadataImage, node: i32) -> Option<String> {
    let listener = listener(&broker.config)?;
    image
        .broker(node)
        .filter(|b| !b.fenced)
        .and_then(|b| b.endpoint(&listener.name))
        .map(|e| format!("{}:{}", e.host, e.port))
}

/// How this broker secures its connections to the other brokers (the replica fetcher,
/// transaction markers, transaction verification), as a Kafka broker does: the inter-broker
/// listener's security protocol; with TLS that listener's truststore (and its keystore when
/// the listener asks for client certificates, [`crate::tls::keystore::client_config`]); with
/// SASL `sasl.mechanism.inter.broker.protocol` and the `username` and `password` of the
/// listener's JAAS entry for that mechanism (`listener.name.<l>.<mechanism>.sasl.jaas.config`,
/// else `sasl.jaas.config`). Files are read here, once.
pub fn security(config: &BrokerConfig) -> Result<Security, String> {
    let Some(listener) = listener(config) else {
        return Ok(Security::default());
    };
    let protocol = SecurityProtocol::from_name(&listener.security_protocol)
        .unwrap_or(SecurityProtocol::Plaintext);
    let tls = match config.tls.get(&listener.name) {
        Some(settings) if protocol.tls() => {
            let check_names = crate::config::listener_setting(
                &config.set,
                &listener.name,
                "ssl.endpoint.identification.algorithm",
            )
            .is_none_or(|(_, algorithm)| !algorithm.trim().is_empty());
            Some(
                crate::tls::keystore::client_config(settings, check_names)
                    .map_err(|e| format!("inter-broker listener {}: {e}", listener.name))?,
            )
        }
        _ => None,
    };
    let sasl = if protocol.sasl() {
        let name = config.sasl_inter_broker_mechanism.to_ascii_uppercase();
        let mechanism = SaslMechanism::from_name(&name).ok_or_else(|| {
            format!(
                "sasl.mechanism.inter.broker.protocol={name}: brokers authenticate to each other \
                 with PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (listener {} is {}); set it to one of \
                 the listener's sasl.enabled.mechanisms",
                listener.name, listener.security_protocol
            )
        })?;
        let scoped = format!(
            "listener.name.{}.{}.sasl.jaas.config",
            listener.name.to_ascii_lowercase(),
            mechanism.name().to_ascii_lowercase()
        );
        let (key, entry) =
            crate::sasl::settings::jaas_for(&config.set, &listener.name, mechanism.name())
                .map_err(|e| e.to_string())?
                .ok_or_else(|| {
                    format!(
                        "brokers authenticate to each other with {} on listener {}: set {scoped} \
                         (or sasl.jaas.config) with this broker's username and password",
                        mechanism.name(),
                        listener.name
                    )
                })?;
        let option = |name: &str| {
            entry.option(name).map(str::to_string).ok_or_else(|| {
                format!(
                    "{key}: brokers authenticate to each other with {}, and need the login \
                     module's {name}=\"...\" option (this broker's own credentials)",
                    mechanism.name()
                )
            })
        };
        Some(SaslConfig {
            mechanism,
            username: option("username")?,
            password: option("password")?,
        })
    } else {
        None
    };
    Ok(Security {
        protocol,
        sasl,
        ca_location: None,
        tls,
    })
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
    let response: AddPartitionsToTxnResponse = match call(broker, &address, 4, &request).await {
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

/// One request to `address` on a new connection (secured as [`security`] says), bounded by
/// [`CALL_TIMEOUT`].
async fn call<R: Request>(
    broker: &Broker,
    address: &str,
    version: i16,
    request: &R,
) -> strata_client::Result<R::Response> {
    let client_id = format!("strata-broker-{}", broker.node_id());
    let connection = Connection::open(
        address,
        &client_id,
        CALL_TIMEOUT,
        CALL_TIMEOUT,
        &broker.inter_broker_security,
    )
    .await?;
    connection.send_at(version, request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::test_config as config;

    const PLAIN_JAAS: &str = "org.apache.kafka.common.security.plain.PlainLoginModule required \
        username=\"admin\" password=\"admin-secret\" user_admin=\"admin-secret\";";

    fn sasl_listener(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut settings = vec![
            ("listeners", "INTERNAL://127.0.0.1:9092"),
            ("listener.security.protocol.map", "INTERNAL:SASL_PLAINTEXT"),
            ("inter.broker.listener.name", "INTERNAL"),
            ("sasl.enabled.mechanisms", "PLAIN"),
        ];
        settings.extend_from_slice(extra);
        settings
    }

    #[test]
    fn brokers_log_in_to_each_other_as_the_listener_says() {
        let plaintext = security(&config(&[])).expect("plaintext");
        assert_eq!(plaintext.protocol, SecurityProtocol::Plaintext);
        assert!(plaintext.sasl.is_none() && plaintext.tls.is_none());

        let sasl = security(&config(&sasl_listener(&[
            ("sasl.mechanism.inter.broker.protocol", "PLAIN"),
            ("listener.name.internal.plain.sasl.jaas.config", PLAIN_JAAS),
        ])))
        .expect("SASL_PLAINTEXT with PLAIN");
        assert_eq!(sasl.protocol, SecurityProtocol::SaslPlaintext);
        let login = sasl.sasl.expect("a login");
        assert_eq!(login.mechanism, SaslMechanism::Plain);
        assert_eq!(
            (login.username.as_str(), login.password.as_str()),
            ("admin", "admin-secret")
        );
    }

    #[test]
    fn what_brokers_cannot_log_in_with_is_named() {
        // Kafka's default mechanism, GSSAPI, is not one Strata speaks.
        let gssapi = security(&config(&sasl_listener(&[(
            "listener.name.internal.plain.sasl.jaas.config",
            PLAIN_JAAS,
        )])))
        .expect_err("GSSAPI");
        assert!(
            gssapi.contains("sasl.mechanism.inter.broker.protocol=GSSAPI"),
            "{gssapi}"
        );

        // A JAAS entry with the users the listener accepts but no identity of its own.
        let no_identity = security(&config(&sasl_listener(&[
            ("sasl.mechanism.inter.broker.protocol", "PLAIN"),
            (
                "listener.name.internal.plain.sasl.jaas.config",
                "org.apache.kafka.common.security.plain.PlainLoginModule required user_admin=\"admin-secret\";",
            ),
        ])))
        .expect_err("no username");
        assert!(no_identity.contains("username"), "{no_identity}");

        // TLS between brokers checks their certificates: a truststore is needed.
        let no_truststore = security(&config(&[
            ("listeners", "INTERNAL://127.0.0.1:9093"),
            ("listener.security.protocol.map", "INTERNAL:SSL"),
            ("ssl.keystore.type", "PEM"),
            ("ssl.keystore.location", "/nonexistent/keystore.pem"),
        ]))
        .expect_err("no truststore");
        assert!(
            no_truststore.contains("ssl.truststore.location"),
            "{no_truststore}"
        );
    }
}
