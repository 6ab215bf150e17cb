//! The APIs Strata serves and the versions it advertises in ApiVersions.
//!
//! Only what is implemented is listed: a client that finds an API advertised will call it.
//! Versions are the range the pinned `kafka-protocol` crate can both decode (request) and
//! encode (response) for the message, since every handler serves every version of its
//! message. (The crate's `ApiKey::valid_versions` can be wider than its message structs.)

use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Message, VersionRange};

/// APIs with a handler in the broker, in key order.
pub const SUPPORTED_APIS: &[ApiKey] = &[
    ApiKey::Produce,
    ApiKey::Fetch,
    ApiKey::ListOffsets,
    ApiKey::Metadata,
    ApiKey::OffsetCommit,
    ApiKey::OffsetFetch,
    ApiKey::FindCoordinator,
    ApiKey::JoinGroup,
    ApiKey::Heartbeat,
    ApiKey::LeaveGroup,
    ApiKey::SyncGroup,
    ApiKey::DescribeGroups,
    ApiKey::ListGroups,
    ApiKey::SaslHandshake,
    ApiKey::ApiVersions,
    ApiKey::CreateTopics,
    ApiKey::DeleteTopics,
    ApiKey::DeleteRecords,
    ApiKey::InitProducerId,
    ApiKey::OffsetForLeaderEpoch,
    ApiKey::AddPartitionsToTxn,
    ApiKey::AddOffsetsToTxn,
    ApiKey::EndTxn,
    ApiKey::WriteTxnMarkers,
    ApiKey::TxnOffsetCommit,
    ApiKey::DescribeAcls,
    ApiKey::CreateAcls,
    ApiKey::DeleteAcls,
    ApiKey::DescribeConfigs,
    ApiKey::AlterConfigs,
    ApiKey::AlterReplicaLogDirs,
    ApiKey::DescribeLogDirs,
    ApiKey::SaslAuthenticate,
    ApiKey::CreatePartitions,
    ApiKey::DeleteGroups,
    ApiKey::ElectLeaders,
    ApiKey::IncrementalAlterConfigs,
    ApiKey::AlterPartitionReassignments,
    ApiKey::ListPartitionReassignments,
    ApiKey::OffsetDelete,
    ApiKey::DescribeClientQuotas,
    ApiKey::AlterClientQuotas,
    ApiKey::DescribeUserScramCredentials,
    ApiKey::AlterUserScramCredentials,
    ApiKey::DescribeQuorum,
    ApiKey::DescribeCluster,
    ApiKey::DescribeProducers,
    ApiKey::DescribeTransactions,
    ApiKey::ListTransactions,
    ApiKey::ConsumerGroupHeartbeat,
    ApiKey::ConsumerGroupDescribe,
    ApiKey::ListConfigResources,
    ApiKey::DescribeTopicPartitions,
];

fn both<Req: Message, Resp: Message>() -> VersionRange {
    Req::VERSIONS.intersect(&Resp::VERSIONS)
}

/// The versions of `key`'s request and response messages, for served APIs.
fn capped(range: VersionRange, max: i16) -> VersionRange {
    VersionRange {
        min: range.min,
        max: range.max.min(max),
    }
}

fn message_versions(key: ApiKey) -> Option<VersionRange> {
    let range = match key {
        ApiKey::Produce => both::<ProduceRequest, ProduceResponse>(),
        ApiKey::Fetch => both::<FetchRequest, FetchResponse>(),
        ApiKey::ListOffsets => both::<ListOffsetsRequest, ListOffsetsResponse>(),
        ApiKey::Metadata => both::<MetadataRequest, MetadataResponse>(),
        ApiKey::FindCoordinator => both::<FindCoordinatorRequest, FindCoordinatorResponse>(),
        ApiKey::OffsetCommit => both::<OffsetCommitRequest, OffsetCommitResponse>(),
        ApiKey::OffsetFetch => both::<OffsetFetchRequest, OffsetFetchResponse>(),
        ApiKey::JoinGroup => both::<JoinGroupRequest, JoinGroupResponse>(),
        ApiKey::Heartbeat => both::<HeartbeatRequest, HeartbeatResponse>(),
        ApiKey::LeaveGroup => both::<LeaveGroupRequest, LeaveGroupResponse>(),
        ApiKey::SyncGroup => both::<SyncGroupRequest, SyncGroupResponse>(),
        ApiKey::DescribeGroups => both::<DescribeGroupsRequest, DescribeGroupsResponse>(),
        ApiKey::ListGroups => both::<ListGroupsRequest, ListGroupsResponse>(),
        ApiKey::DeleteGroups => both::<DeleteGroupsRequest, DeleteGroupsResponse>(),
        ApiKey::OffsetDelete => both::<OffsetDeleteRequest, OffsetDeleteResponse>(),
        ApiKey::DescribeLogDirs => both::<DescribeLogDirsRequest, DescribeLogDirsResponse>(),
        ApiKey::ElectLeaders => both::<ElectLeadersRequest, ElectLeadersResponse>(),
        ApiKey::DescribeQuorum => both::<DescribeQuorumRequest, DescribeQuorumResponse>(),
        ApiKey::AlterReplicaLogDirs => {
            both::<AlterReplicaLogDirsRequest, AlterReplicaLogDirsResponse>()
        }
        ApiKey::AlterPartitionReassignments => {
            both::<AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse>()
        }
        ApiKey::ListPartitionReassignments => {
            both::<ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse>()
        }
        ApiKey::ListConfigResources => {
            both::<ListConfigResourcesRequest, ListConfigResourcesResponse>()
        }
        ApiKey::ApiVersions => both::<ApiVersionsRequest, ApiVersionsResponse>(),
        ApiKey::SaslHandshake => both::<SaslHandshakeRequest, SaslHandshakeResponse>(),
        ApiKey::SaslAuthenticate => both::<SaslAuthenticateRequest, SaslAuthenticateResponse>(),
        ApiKey::DescribeUserScramCredentials => {
            both::<DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse>()
        }
        ApiKey::AlterUserScramCredentials => {
            both::<AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse>()
        }
        ApiKey::CreateTopics => both::<CreateTopicsRequest, CreateTopicsResponse>(),
        ApiKey::DeleteTopics => both::<DeleteTopicsRequest, DeleteTopicsResponse>(),
        ApiKey::DeleteRecords => both::<DeleteRecordsRequest, DeleteRecordsResponse>(),
        ApiKey::InitProducerId => both::<InitProducerIdRequest, InitProducerIdResponse>(),
        ApiKey::OffsetForLeaderEpoch => {
            both::<OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse>()
        }
        ApiKey::DescribeConfigs => both::<DescribeConfigsRequest, DescribeConfigsResponse>(),
        ApiKey::DescribeAcls => both::<DescribeAclsRequest, DescribeAclsResponse>(),
        ApiKey::CreateAcls => both::<CreateAclsRequest, CreateAclsResponse>(),
        ApiKey::DeleteAcls => both::<DeleteAclsRequest, DeleteAclsResponse>(),
        ApiKey::AlterConfigs => both::<AlterConfigsRequest, AlterConfigsResponse>(),
        ApiKey::CreatePartitions => both::<CreatePartitionsRequest, CreatePartitionsResponse>(),
        ApiKey::IncrementalAlterConfigs => {
            both::<IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse>()
        }
        ApiKey::DescribeClientQuotas => {
            both::<DescribeClientQuotasRequest, DescribeClientQuotasResponse>()
        }
        ApiKey::AlterClientQuotas => both::<AlterClientQuotasRequest, AlterClientQuotasResponse>(),
        ApiKey::DescribeCluster => both::<DescribeClusterRequest, DescribeClusterResponse>(),
        ApiKey::ConsumerGroupHeartbeat => {
            both::<ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse>()
        }
        ApiKey::ConsumerGroupDescribe => {
            both::<ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse>()
        }
        ApiKey::DescribeTopicPartitions => {
            both::<DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse>()
        }
        // Versions 5 of these belong to transactions version 2 (KIP-890 part 2), which
        // needs the `transaction.version` feature this broker does not finalize.
        ApiKey::AddPartitionsToTxn => capped(
            both::<AddPartitionsToTxnRequest, AddPartitionsToTxnResponse>(),
            4,
        ),
        ApiKey::AddOffsetsToTxn => both::<AddOffsetsToTxnRequest, AddOffsetsToTxnResponse>(),
        ApiKey::TxnOffsetCommit => {
            capped(both::<TxnOffsetCommitRequest, TxnOffsetCommitResponse>(), 4)
        }
        ApiKey::EndTxn => capped(both::<EndTxnRequest, EndTxnResponse>(), 4),
        ApiKey::WriteTxnMarkers => both::<WriteTxnMarkersRequest, WriteTxnMarkersResponse>(),
        ApiKey::DescribeTransactions => {
            both::<DescribeTransactionsRequest, DescribeTransactionsResponse>()
        }
        ApiKey::ListTransactions => both::<ListTransactionsRequest, ListTransactionsResponse>(),
        ApiKey::DescribeProducers => both::<DescribeProducersRequest, DescribeProducersResponse>(),
        _ => return None,
    };
    Some(range.intersect(&key.valid_versions()))
}

/// The version range served for `key`, or `None` if the API is not served at all.
pub fn supported_versions(key: ApiKey) -> Option<VersionRange> {
    if !SUPPORTED_APIS.contains(&key) {
        return None;
    }
    message_versions(key).filter(|r| !r.is_empty())
}

/// Whether `version` of API `key` is served.
pub fn is_supported(key: ApiKey, version: i16) -> bool {
    supported_versions(key).is_some_and(|r| r.min <= version && version <= r.max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        let keys: Vec<i16> = SUPPORTED_APIS.iter().map(|k| *k as i16).collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn every_served_api_has_a_version_range() {
        for key in SUPPORTED_APIS {
            assert!(supported_versions(*key).is_some(), "{key:?}");
        }
        assert_eq!(
            supported_versions(ApiKey::InitProducerId).map(|r| r.max),
            Some(5)
        );
    }

    #[test]
    fn api_versions_serves_flexible_versions() {
        assert!(is_supported(ApiKey::ApiVersions, 3));
        assert!(is_supported(ApiKey::ApiVersions, 0));
        assert!(!is_supported(ApiKey::ApiVersions, 127));
        assert!(!is_supported(ApiKey::ShareFetch, 1));
    }
}
