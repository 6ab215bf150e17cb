//! Answers fitted to the version of the request they answer.
//!
//! Kafka answers each request in the terms its version knows, and clients depend on it: a
//! client that meets an error code newer than its request version reports "unknown error" and
//! cannot recover, and some clients compare a nullable error message with null. Handlers build
//! one response for all versions; [`fit_response`] is the last step before encoding and makes
//! it what Kafka would send at the request's version:
//!
//! - error codes newer than the version become the code Kafka's handlers send instead
//!   ([`ERROR_CODE_FLOORS`]);
//! - nullable error messages are null when there is no error (Kafka's handlers set them to
//!   null; the message structs default them to "");
//! - fields that are nullable only from some version are never null below it (the encoder
//!   would write a null that the older format cannot carry).
//!
//! The facts come from Kafka's message specs (`clients/src/main/resources/common/message`,
//! their "versions", "nullableVersions" and version comments) and from the handlers that
//! translate codes for old versions (KIP-588 for PRODUCER_FENCED). The tests below hold one
//! table per API of the version-dependent fields and codes.

use kafka_protocol::messages::{ApiKey, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use crate::ErrorCode;

/// An error code that only request versions from `since` know, and what Kafka sends older
/// versions instead.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCodeFloor {
    pub api: ApiKey,
    pub code: ErrorCode,
    /// The first version that may receive `code`; `None` if no version does.
    pub since: Option<i16>,
    pub older: ErrorCode,
}

/// PRODUCER_FENCED (90, KIP-588) reaches only the transaction API versions that added it;
/// older ones get INVALID_PRODUCER_EPOCH (47), which their clients treat the same way.
/// TxnOffsetCommit never carries it: Kafka answers a fenced TxnOffsetCommit with
/// INVALID_PRODUCER_EPOCH at every version (its spec lists no PRODUCER_FENCED).
///
/// KAFKA_STORAGE_ERROR (56, KIP-112) reaches Produce from v4 and Fetch from v6; older versions
/// get NOT_LEADER_OR_FOLLOWER, so that the client refreshes its metadata and retries instead of
/// failing on an unknown code.
pub const ERROR_CODE_FLOORS: &[ErrorCodeFloor] = &[
    ErrorCodeFloor {
        api: ApiKey::Produce,
        code: ErrorCode::KafkaStorageError,
        since: Some(4),
        older: ErrorCode::NotLeaderOrFollower,
    },
    ErrorCodeFloor {
        api: ApiKey::Fetch,
        code: ErrorCode::KafkaStorageError,
        since: Some(6),
        older: ErrorCode::NotLeaderOrFollower,
    },
    ErrorCodeFloor {
        api: ApiKey::InitProducerId,
        code: ErrorCode::ProducerFenced,
        since: Some(4),
        older: ErrorCode::InvalidProducerEpoch,
    },
    ErrorCodeFloor {
        api: ApiKey::AddPartitionsToTxn,
        code: ErrorCode::ProducerFenced,
        since: Some(2),
        older: ErrorCode::InvalidProducerEpoch,
    },
    ErrorCodeFloor {
        api: ApiKey::AddOffsetsToTxn,
        code: ErrorCode::ProducerFenced,
        since: Some(2),
        older: ErrorCode::InvalidProducerEpoch,
    },
    ErrorCodeFloor {
        api: ApiKey::EndTxn,
        code: ErrorCode::ProducerFenced,
        since: Some(2),
        older: ErrorCode::InvalidProducerEpoch,
    },
    ErrorCodeFloor {
        api: ApiKey::TxnOffsetCommit,
        code: ErrorCode::ProducerFenced,
        since: None,
        older: ErrorCode::InvalidProducerEpoch,
    },
];

/// The code version `version` of `api` may carry in place of `code`.
pub fn fit_error_code(api: ApiKey, version: i16, code: i16) -> i16 {
    if code == 0 {
        // No error: nothing to fit (the common case on every partition of every response).
        return 0;
    }
    ERROR_CODE_FLOORS
        .iter()
        .find(|f| {
            f.api == api && f.code.code() == code && f.since.is_none_or(|since| version < since)
        })
        .map_or(code, |f| f.older.code())
}

/// A nullable error message: null when there is no error.
fn null_if_ok(error_code: i16, message: &mut Option<StrBytes>) {
    if error_code == 0 {
        *message = None;
    }
}

/// A string nullable only from version `nullable_since`: never null below it.
fn not_null_below(version: i16, nullable_since: i16, value: &mut Option<StrBytes>) {
    if version < nullable_since && value.is_none() {
        *value = Some(StrBytes::default());
    }
}

/// Makes `body`, an answer to a request of version `version`, what Kafka sends at that
/// version (see the module doc).
pub fn fit_response(body: &mut ResponseKind, version: i16) {
    match body {
        ResponseKind::InitProducerId(r) => {
            r.error_code = fit_error_code(ApiKey::InitProducerId, version, r.error_code);
        }
        ResponseKind::AddPartitionsToTxn(r) => {
            let api = ApiKey::AddPartitionsToTxn;
            r.error_code = fit_error_code(api, version, r.error_code);
            let topics = r.results_by_topic_v3_and_below.iter_mut().chain(
                r.results_by_transaction
                    .iter_mut()
                    .flat_map(|t| t.topic_results.iter_mut()),
            );
            for p in topics.flat_map(|t| t.results_by_partition.iter_mut()) {
                p.partition_error_code = fit_error_code(api, version, p.partition_error_code);
            }
        }
        ResponseKind::AddOffsetsToTxn(r) => {
            r.error_code = fit_error_code(ApiKey::AddOffsetsToTxn, version, r.error_code);
        }
        ResponseKind::EndTxn(r) => {
            r.error_code = fit_error_code(ApiKey::EndTxn, version, r.error_code);
        }
        ResponseKind::TxnOffsetCommit(r) => {
            for p in r.topics.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
                p.error_code = fit_error_code(ApiKey::TxnOffsetCommit, version, p.error_code);
            }
        }
        ResponseKind::Produce(r) => {
            for p in r
                .responses
                .iter_mut()
                .flat_map(|t| t.partition_responses.iter_mut())
            {
                p.error_code = fit_error_code(ApiKey::Produce, version, p.error_code);
                null_if_ok(p.error_code, &mut p.error_message);
            }
        }
        ResponseKind::Fetch(r) => {
            r.error_code = fit_error_code(ApiKey::Fetch, version, r.error_code);
            for p in r.responses.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
                p.error_code = fit_error_code(ApiKey::Fetch, version, p.error_code);
            }
        }
        ResponseKind::FindCoordinator(r) => {
            null_if_ok(r.error_code, &mut r.error_message);
            for c in &mut r.coordinators {
                null_if_ok(c.error_code, &mut c.error_message);
            }
        }
        ResponseKind::JoinGroup(r) => {
            // ProtocolName is nullable from v7 only.
            not_null_below(version, 7, &mut r.protocol_name);
        }
        ResponseKind::CreateTopics(r) => {
            for t in &mut r.topics {
                null_if_ok(t.error_code, &mut t.error_message);
            }
        }
        ResponseKind::DeleteTopics(r) => {
            for t in &mut r.responses {
                null_if_ok(t.error_code, &mut t.error_message);
                // Name is nullable from v6 only (older versions name every topic).
                if version < 6 && t.name.is_none() {
                    t.name = Some(Default::default());
                }
            }
        }
        ResponseKind::Metadata(r) => {
            for t in &mut r.topics {
                // Name is nullable from v12 only.
                if version < 12 && t.name.is_none() {
                    t.name = Some(Default::default());
                }
            }
        }
        ResponseKind::DescribeConfigs(r) => {
            for res in &mut r.results {
                null_if_ok(res.error_code, &mut res.error_message);
            }
        }
        ResponseKind::AlterConfigs(r) => {
            for res in &mut r.responses {
                null_if_ok(res.error_code, &mut res.error_message);
            }
        }
        ResponseKind::IncrementalAlterConfigs(r) => {
            for res in &mut r.responses {
                null_if_ok(res.error_code, &mut res.error_message);
            }
        }
        ResponseKind::CreatePartitions(r) => {
            for res in &mut r.results {
                null_if_ok(res.error_code, &mut res.error_message);
            }
        }
        ResponseKind::ElectLeaders(r) => {
            for p in r
                .replica_election_results
                .iter_mut()
                .flat_map(|t| t.partition_result.iter_mut())
            {
                null_if_ok(p.error_code, &mut p.error_message);
            }
        }
        ResponseKind::AlterPartitionReassignments(r) => {
            null_if_ok(r.error_code, &mut r.error_message);
            for p in r.responses.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
                null_if_ok(p.error_code, &mut p.error_message);
            }
        }
        ResponseKind::ListPartitionReassignments(r) => {
            null_if_ok(r.error_code, &mut r.error_message);
        }
        ResponseKind::DescribeCluster(r) => {
            null_if_ok(r.error_code, &mut r.error_message);
        }
        ResponseKind::DescribeQuorum(r) => {
            null_if_ok(r.error_code, &mut r.error_message);
            for p in r.topics.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
                null_if_ok(p.error_code, &mut p.error_message);
            }
        }
        ResponseKind::DescribeProducers(r) => {
            for p in r.topics.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
                null_if_ok(p.error_code, &mut p.error_message);
            }
        }
        ResponseKind::ConsumerGroupHeartbeat(r) => {
            null_if_ok(r.error_code, &mut r.error_message);
        }
        ResponseKind::ConsumerGroupDescribe(r) => {
            for g in &mut r.groups {
                null_if_ok(g.error_code, &mut g.error_message);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    //! One table per API of its version-dependent answers, from Kafka's message specs. Each
    //! case is fitted, encoded at every served version and decoded again, so the checks are
    //! on what goes over the wire.

    use bytes::BytesMut;
    use kafka_protocol::messages::*;

    use super::*;
    use crate::api::supported_versions;

    fn s(v: &str) -> StrBytes {
        StrBytes::from_string(v.to_string())
    }

    /// Fits `body` for `version`, then encodes and decodes it at that version.
    fn over_the_wire(api: ApiKey, mut body: ResponseKind, version: i16) -> ResponseKind {
        fit_response(&mut body, version);
        let mut buf = BytesMut::new();
        body.encode(&mut buf, version)
            .unwrap_or_else(|e| panic!("{api:?} v{version} encodes: {e}"));
        ResponseKind::decode(api, &mut buf.freeze(), version)
            .unwrap_or_else(|e| panic!("{api:?} v{version} decodes: {e}"))
    }

    fn served(api: ApiKey) -> std::ops::RangeInclusive<i16> {
        let r = supported_versions(api).expect("served");
        r.min..=r.max
    }

    /// A nullable error message of one API: a response whose every message field is `message`
    /// with code `code`, the messages read back, and the versions the field exists in (its
    /// "versions" in the spec; "nullableVersions" is the same for all of these).
    struct MessageCase {
        api: ApiKey,
        field: &'static str,
        since: i16,
        until: i16,
        build: fn(code: i16, message: Option<StrBytes>) -> ResponseKind,
        read: fn(&ResponseKind) -> Vec<Option<StrBytes>>,
    }

    fn message_cases() -> Vec<MessageCase> {
        use alter_configs_response::AlterConfigsResourceResponse;
        use alter_partition_reassignments_response::*;
        use create_partitions_response::CreatePartitionsTopicResult;
        use create_topics_response::CreatableTopicResult;
        use delete_topics_response::DeletableTopicResult;
        use describe_configs_response::DescribeConfigsResult;
        use describe_producers_response as dp;
        use describe_quorum_response as dq;
        use elect_leaders_response::{PartitionResult, ReplicaElectionResult};
        use find_coordinator_response::Coordinator;
        use incremental_alter_configs_response::AlterConfigsResourceResponse as IncResult;
        use produce_response::{PartitionProduceResponse, TopicProduceResponse};
        vec![
            MessageCase {
                api: ApiKey::CreateTopics,
                field: "Topics.ErrorMessage",
                since: 1,
                until: i16::MAX,
                build: |c, m| {
                    ResponseKind::CreateTopics(CreateTopicsResponse::default().with_topics(vec![
                        CreatableTopicResult::default()
                            .with_error_code(c)
                            .with_error_message(m),
                    ]))
                },
                read: |r| match r {
                    ResponseKind::CreateTopics(r) => {
                        r.topics.iter().map(|t| t.error_message.clone()).collect()
                    }
                    _ => unreachable!(),
                },
            },
            MessageCase {
                api: ApiKey::DeleteTopics,
                field: "Responses.ErrorMessage",
                since: 5,
                until: i16::MAX,
                build: |c, m| {
                    ResponseKind::DeleteTopics(DeleteTopicsResponse::default().with_responses(
                        vec![DeletableTopicResult::default()
                            .with_name(Some(TopicName(s("t"))))
                            .with_error_code(c)
                            .with_error_message(m)],
                    ))
                },
                read: |r| match r {
                    ResponseKind::DeleteTopics(r) => r
                        .responses
                        .iter()
                        .map(|t| t.error_message.clone())
                        .collect(),
                    _ => unreachable!(),
                },
            },
            MessageCase {
                api: ApiKey::CreatePartitions,
                field: "Results.ErrorMessage",
                since: 0,
                until: i16::MAX,
                build: |c, m| {
                    ResponseKind::CreatePartitions(
                        CreatePartitionsResponse::default().with_results(vec![
                            CreatePartitionsTopicResult::default()
                                .with_error_code(c)
                                .with_error_message(m),
                        ]),
                    )
                },
                read: |r| match r {
                    ResponseKind::CreatePartitions(r) => {
                        r.results.iter().map(|t| t.error_message.clone()).collect()
                    }
                    _ => unreachable!(),
                },
            },
            MessageCase {
                api: ApiKey::AlterConfigs,
                field: "Responses.ErrorMessage",
                since: 0,
                until: i16::MAX,
                build: |c, m| {
                    ResponseKind::AlterConfigs(AlterConfigsResponse::default().with_responses(
                        vec![AlterConfigsResourceResponse::default()
                            .with_error_code(c)
                            .with_error_message(m)],
                    ))
                },
                read: |r| match r {
                    ResponseKind::AlterConfigs(r) => r
                        .responses
                        .iter()
                        .map(|t| t.error_message.clone())
                        .collect(),
                    _ => unreachable!(),
                },
            },
            MessageCase {
                api: ApiKey::IncrementalAlterConfigs,
                field: "Responses.ErrorMessage",
                since: 0,
                until: i16::MAX,
                build: |c, m| {
                    ResponseKind::IncrementalAlterConfigs(
                        IncrementalAlterConfigsResponse::default().with_responses(vec![
                            IncResult::default()
                                .with_error_code(c)
                                .with_error_message(m),
                        ]),
                    )
                },
                read: |r| match r {
                    ResponseKind::IncrementalAlterConfigs(r) => r
                        .responses
                        .iter()
                        .map(|t| t.error_message.clone())
                        .collect(),
                    _ => unreachable!(),
                },
            },
            MessageCase {
                api: ApiKey::DescribeConfigs,
                field: "Results.ErrorMessage",
                since: 0,
                until: i16::MAX,
                build: |c, m| {
                    ResponseKind::DescribeConfigs(DescribeConfigsResponse::default().with_results(
                        vec![DescribeConfigsResult::default()
                            .with_error_code(c)
                            .with_error_message(m)],
                    ))
                },
                read: |r| match r {
                    ResponseKind::DescribeConfigs(r) => {
                        r.results.iter().map(|t| t.error_message.clone()).collect()
                    }
                    _ => unreachable!(),
                },
            },
            MessageCase {
                api: ApiKey::FindCoordinator,
                field: "ErrorMessage",
                since: 1,
                until: 3,
                build: |c, m| {
                    ResponseKind::FindCoordinator(
                        FindCoordinatorResponse::default()
                            .with_error_code(c)
                            .with_error_message(m),
                    )
                },
                read: |r| match r {
                    ResponseKind::FindCoordinator(r) => vec![r.error_message.clone()],
                    _ => unreachable!(),
                },
            },
            MessageCase {
                api: ApiKey::FindCoordinator,
                field: "Coordinators.ErrorMessage",
                since: 4,
                until: i16::MAX,
                build: |c, m| {
                    ResponseKind::FindCoordinator(
                        FindCoordinatorResponse::default().with_coordinators(vec![
                            Coordinator::default()
                                .with_error_code(c)
                                .with_error_message(m),
                        ]),
                    )
                },
                read: |r| match r {
                    ResponseKind::FindCoordinator(r) => r
                        .coordinators
                        .iter()
                        .map(|c| c.error_message.clone())
                        .collect(),
                    _ => unreachable!(),
                },
            },
            MessageCase {
                api: ApiKey::Produce,
                field: "Responses.PartitionResponses.ErrorMessage",
                since: 8,
                until: i16::MAX,
                build: |c, m| {
                    ResponseKind::Produce(ProduceResponse::default().with_responses(vec![
                        TopicProduceResponse::default().with_partition_responses(vec![
                            PartitionProduceResponse::default()
                                .with_error_code(c)
                                .with_error_message(m),
                        ]),
                    ]))
                },
                read: |r| match r {
                    ResponseKind::Produce(r) => r
                        .responses
                        .iter()
                        .flat_map(|t| t.partition_responses.iter())
                        .map(|p| p.error_message.clone())
                        .collect(),
                    _ => unreachable!(),
                },
            },
            MessageCase {
                api: ApiKey::ElectLeaders,
                field: "ReplicaElectionResults.PartitionResult.ErrorMessage",
                since: 0,
                until: i16::MAX,
                build: |c, m| {
                    ResponseKind::ElectLeaders(
                        ElectLeadersResponse::default().with_replica_election_results(vec![
                            ReplicaElectionResult::default().with_partition_result(vec![
                                PartitionResult::default()
                                    .with_error_code(c)
                                    .with_error_message(m),
                            ]),
                        ]),
                    )
                },
                read: |r| match r {
                    ResponseKind::ElectLeaders(r) => r
                        .replica_election_results
                        .iter()
                        .flat_map(|t| t.partition_result.iter())
                        .map(|p| p.error_message.clone())
                        .collect(),
                    _ => unreachable!(),
                },
            },
            MessageCase {
                api: ApiKey::AlterPartitionReassignments,
                field: "ErrorMessage, Responses.Partitions.ErrorMessage",
                since: 0,
                until: i16::MAX,
                build: |c, m| {
                    ResponseKind::AlterPartitionReassignments(
                        AlterPartitionReassignmentsResponse::default()
                            .with_error_code(c)
                            .with_error_message(m.clone())
                            .with_responses(vec![ReassignableTopicResponse::default()
                                .with_partitions(vec![ReassignablePartitionResponse::default()
                                    .with_error_code(c)
                                    .with_error_message(m)])]),
                    )
                },
                read: |r| match r {
                    ResponseKind::AlterPartitionReassignments(r) => {
                        std::iter::once(r.error_message.clone())
                            .chain(
                                r.responses
                                    .iter()
                                    .flat_map(|t| t.partitions.iter())
                                    .map(|p| p.error_message.clone()),
                            )
                            .collect()
                    }
                    _ => unreachable!(),
                },
            },
            MessageCase {
                api: ApiKey::ListPartitionReassignments,
                field: "ErrorMessage",
                since: 0,
                until: i16::MAX,
                build: |c, m| {
                    ResponseKind::ListPartitionReassignments(
                        ListPartitionReassignmentsResponse::default()
                            .with_error_code(c)
                            .with_error_message(m),
                    )
                },
                read: |r| match r {
                    ResponseKind::ListPartitionReassignments(r) => vec![r.error_message.clone()],
                    _ => unreachable!(),
                },
            },
            MessageCase {
                api: ApiKey::DescribeCluster,
                field: "ErrorMessage",
                since: 0,
                until: i16::MAX,
                build: |c, m| {
                    ResponseKind::DescribeCluster(
                        DescribeClusterResponse::default()
                            .with_error_code(c)
                            .with_error_message(m),
                    )
                },
                read: |r| match r {
                    ResponseKind::DescribeCluster(r) => vec![r.error_message.clone()],
                    _ => unreachable!(),
                },
            },
            MessageCase {
                api: ApiKey::DescribeQuorum,
                field: "ErrorMessage, Topics.Partitions.ErrorMessage",
                since: 2,
                until: i16::MAX,
                build: |c, m| {
                    ResponseKind::DescribeQuorum(
                        DescribeQuorumResponse::default()
                            .with_error_code(c)
                            .with_error_message(m.clone())
                            .with_topics(vec![dq::TopicData::default().with_partitions(vec![
                                dq::PartitionData::default()
                                    .with_error_code(c)
                                    .with_error_message(m),
                            ])]),
                    )
                },
                read: |r| match r {
                    ResponseKind::DescribeQuorum(r) => std::iter::once(r.error_message.clone())
                        .chain(
                            r.topics
                                .iter()
                                .flat_map(|t| t.partitions.iter())
                                .map(|p| p.error_message.clone()),
                        )
                        .collect(),
                    _ => unreachable!(),
                },
            },
            MessageCase {
                api: ApiKey::DescribeProducers,
                field: "Topics.Partitions.ErrorMessage",
                since: 0,
                until: i16::MAX,
                build: |c, m| {
                    ResponseKind::DescribeProducers(
                        DescribeProducersResponse::default().with_topics(vec![
                            dp::TopicResponse::default().with_partitions(vec![
                                dp::PartitionResponse::default()
                                    .with_error_code(c)
                                    .with_error_message(m),
                            ]),
                        ]),
                    )
                },
                read: |r| match r {
                    ResponseKind::DescribeProducers(r) => r
                        .topics
                        .iter()
                        .flat_map(|t| t.partitions.iter())
                        .map(|p| p.error_message.clone())
                        .collect(),
                    _ => unreachable!(),
                },
            },
            MessageCase {
                api: ApiKey::ConsumerGroupHeartbeat,
                field: "ErrorMessage",
                since: 0,
                until: i16::MAX,
                build: |c, m| {
                    ResponseKind::ConsumerGroupHeartbeat(
                        ConsumerGroupHeartbeatResponse::default()
                            .with_error_code(c)
                            .with_error_message(m),
                    )
                },
                read: |r| match r {
                    ResponseKind::ConsumerGroupHeartbeat(r) => vec![r.error_message.clone()],
                    _ => unreachable!(),
                },
            },
            MessageCase {
                api: ApiKey::ConsumerGroupDescribe,
                field: "Groups.ErrorMessage",
                since: 0,
                until: i16::MAX,
                build: |c, m| {
                    ResponseKind::ConsumerGroupDescribe(
                        ConsumerGroupDescribeResponse::default().with_groups(vec![
                            consumer_group_describe_response::DescribedGroup::default()
                                .with_error_code(c)
                                .with_error_message(m),
                        ]),
                    )
                },
                read: |r| match r {
                    ResponseKind::ConsumerGroupDescribe(r) => {
                        r.groups.iter().map(|g| g.error_message.clone()).collect()
                    }
                    _ => unreachable!(),
                },
            },
        ]
    }

    #[test]
    fn nullable_error_messages_are_null_without_an_error() {
        for case in message_cases() {
            for version in served(case.api) {
                if version < case.since || version > case.until {
                    // The field does not exist here (and the encoder refuses values in it).
                    continue;
                }
                // The message structs default these fields to "", as handlers leave them.
                let ok = over_the_wire(case.api, (case.build)(0, Some(s(""))), version);
                let failed = over_the_wire(
                    case.api,
                    (case.build)(ErrorCode::InvalidRequest.code(), Some(s("why"))),
                    version,
                );
                for (answer, kept) in [(ok, None), (failed, Some(s("why")))] {
                    for message in (case.read)(&answer) {
                        assert_eq!(message, kept, "{:?} v{version} {}", case.api, case.field);
                    }
                }
            }
        }
    }

    /// A response of `api` at `version` carrying `code` in every error-code field it has (a
    /// sample of each API whose codes `fit_response` changes).
    fn with_code(api: ApiKey, code: i16, version: i16) -> ResponseKind {
        use add_partitions_to_txn_response::*;
        use txn_offset_commit_response::*;
        let partitions = vec![AddPartitionsToTxnPartitionResult::default()
            .with_partition_index(0)
            .with_partition_error_code(code)];
        let topics = vec![AddPartitionsToTxnTopicResult::default()
            .with_name(TopicName(s("t")))
            .with_results_by_partition(partitions)];
        match api {
            ApiKey::InitProducerId => ResponseKind::InitProducerId(
                InitProducerIdResponse::default().with_error_code(code),
            ),
            ApiKey::AddOffsetsToTxn => ResponseKind::AddOffsetsToTxn(
                AddOffsetsToTxnResponse::default().with_error_code(code),
            ),
            ApiKey::EndTxn => ResponseKind::EndTxn(EndTxnResponse::default().with_error_code(code)),
            // v4 batches transactions and adds a top-level code.
            ApiKey::AddPartitionsToTxn if version >= 4 => ResponseKind::AddPartitionsToTxn(
                AddPartitionsToTxnResponse::default()
                    .with_error_code(code)
                    .with_results_by_transaction(vec![AddPartitionsToTxnResult::default()
                        .with_transactional_id(TransactionalId(s("x")))
                        .with_topic_results(topics)]),
            ),
            ApiKey::AddPartitionsToTxn => ResponseKind::AddPartitionsToTxn(
                AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(topics),
            ),
            ApiKey::TxnOffsetCommit => {
                ResponseKind::TxnOffsetCommit(TxnOffsetCommitResponse::default().with_topics(vec![
                    TxnOffsetCommitResponseTopic::default()
                        .with_name(TopicName(s("t")))
                        .with_partitions(vec![TxnOffsetCommitResponsePartition::default()
                            .with_error_code(code)]),
                ]))
            }
            ApiKey::Produce => {
                ResponseKind::Produce(ProduceResponse::default().with_responses(vec![
                produce_response::TopicProduceResponse::default()
                    .with_name(TopicName(s("t")))
                    .with_partition_responses(vec![
                        produce_response::PartitionProduceResponse::default().with_error_code(code),
                    ]),
            ]))
            }
            ApiKey::Fetch => ResponseKind::Fetch(FetchResponse::default().with_responses(vec![
                fetch_response::FetchableTopicResponse::default()
                    .with_topic(TopicName(s("t")))
                    .with_partitions(vec![
                        fetch_response::PartitionData::default().with_error_code(code),
                    ]),
            ])),
            other => panic!("no sample for {other:?}"),
        }
    }

    /// A response of `api` at `version` whose error codes are all `code` reaches the client
    /// with all of them `want` (and nothing else changed).
    fn assert_sent_as(api: ApiKey, version: i16, code: i16, want: i16) {
        let sent = over_the_wire(api, with_code(api, code, version), version);
        let expected = over_the_wire(api, with_code(api, want, version), version);
        assert_eq!(
            sent, expected,
            "{api:?} v{version}: {code} should reach as {want}"
        );
    }

    #[test]
    fn producer_fenced_reaches_only_the_versions_that_know_it() {
        // (API, first version that gets PRODUCER_FENCED), from Kafka's specs ("Version N adds
        // the support for new error code PRODUCER_FENCED") and handlers.
        let table: &[(ApiKey, Option<i16>)] = &[
            (ApiKey::InitProducerId, Some(4)),
            (ApiKey::AddPartitionsToTxn, Some(2)),
            (ApiKey::AddOffsetsToTxn, Some(2)),
            (ApiKey::EndTxn, Some(2)),
            (ApiKey::TxnOffsetCommit, None),
        ];
        let fenced = ErrorCode::ProducerFenced.code();
        let old = ErrorCode::InvalidProducerEpoch.code();
        for (api, since) in table {
            for version in served(*api) {
                let want = match since {
                    Some(since) if version >= *since => fenced,
                    _ => old,
                };
                assert_sent_as(*api, version, fenced, want);
                // Other codes pass unchanged.
                let other = ErrorCode::ConcurrentTransactions.code();
                assert_sent_as(*api, version, other, other);
            }
        }
    }

    #[test]
    fn kafka_storage_error_reaches_only_the_versions_that_know_it() {
        // (API, first version that gets KAFKA_STORAGE_ERROR): ProduceResponse spec ("Version 4
        // added KAFKA_STORAGE_ERROR"), Kafka's fetch handler (NOT_LEADER_OR_FOLLOWER up to v5).
        let table: &[(ApiKey, i16)] = &[(ApiKey::Produce, 4), (ApiKey::Fetch, 6)];
        let storage = ErrorCode::KafkaStorageError.code();
        for (api, since) in table {
            for version in served(*api) {
                let want = if version >= *since {
                    storage
                } else {
                    ErrorCode::NotLeaderOrFollower.code()
                };
                assert_sent_as(*api, version, storage, want);
            }
        }
    }

    #[test]
    fn fields_nullable_only_in_newer_versions_are_never_null_in_older_ones() {
        use delete_topics_response::DeletableTopicResult;
        use metadata_response::MetadataResponseTopic;
        // JoinGroup ProtocolName: versions 0+, nullableVersions 7+.
        for version in served(ApiKey::JoinGroup) {
            let body = ResponseKind::JoinGroup(
                JoinGroupResponse::default()
                    .with_error_code(ErrorCode::UnknownMemberId.code())
                    .with_protocol_name(None),
            );
            let ResponseKind::JoinGroup(r) = over_the_wire(ApiKey::JoinGroup, body, version) else {
                unreachable!()
            };
            let want = if version >= 7 { None } else { Some(s("")) };
            assert_eq!(r.protocol_name, want, "JoinGroup v{version}");
        }
        // DeleteTopics Responses.Name: versions 0+, nullableVersions 6+.
        for version in served(ApiKey::DeleteTopics) {
            let body = ResponseKind::DeleteTopics(
                DeleteTopicsResponse::default()
                    .with_responses(vec![DeletableTopicResult::default().with_name(None)]),
            );
            let ResponseKind::DeleteTopics(r) = over_the_wire(ApiKey::DeleteTopics, body, version)
            else {
                unreachable!()
            };
            let want = if version >= 6 {
                None
            } else {
                Some(TopicName(s("")))
            };
            assert_eq!(r.responses[0].name, want, "DeleteTopics v{version}");
        }
        // Metadata Topics.Name: versions 0+, nullableVersions 12+.
        for version in served(ApiKey::Metadata) {
            let body = ResponseKind::Metadata(
                MetadataResponse::default()
                    .with_topics(vec![MetadataResponseTopic::default().with_name(None)]),
            );
            let ResponseKind::Metadata(r) = over_the_wire(ApiKey::Metadata, body, version) else {
                unreachable!()
            };
            let want = if version >= 12 {
                None
            } else {
                Some(TopicName(s("")))
            };
            assert_eq!(r.topics[0].name, want, "Metadata v{version}");
        }
    }
}
