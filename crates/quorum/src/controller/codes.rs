//! Kafka's error codes the controller's pure rules answer with, as wire numbers and under
//! Kafka's names. This crate has no protocol dependency (replies travel between nodes as plain
//! data); the test below holds every number to `strata_protocol::ErrorCode`, the project's one
//! table.

pub const NONE: i16 = 0;
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const INVALID_PARTITIONS: i16 = 37;
pub const INVALID_REPLICATION_FACTOR: i16 = 38;
pub const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
pub const NOT_CONTROLLER: i16 = 41;
pub const INVALID_REQUEST: i16 = 42;
pub const FENCED_LEADER_EPOCH: i16 = 74;
pub const PREFERRED_LEADER_NOT_AVAILABLE: i16 = 80;
pub const ELIGIBLE_LEADERS_NOT_AVAILABLE: i16 = 83;
pub const ELECTION_NOT_NEEDED: i16 = 84;
pub const NO_REASSIGNMENT_IN_PROGRESS: i16 = 85;
pub const INVALID_UPDATE_VERSION: i16 = 95;
pub const INELIGIBLE_REPLICA: i16 = 107;
pub const NEW_LEADER_ELECTED: i16 = 108;

#[cfg(test)]
mod tests {
    use strata_protocol::ErrorCode;

    #[test]
    fn codes_match_the_protocol_table() {
        let table = [
            (
                super::UNKNOWN_TOPIC_OR_PARTITION,
                ErrorCode::UnknownTopicOrPartition,
            ),
            (super::INVALID_PARTITIONS, ErrorCode::InvalidPartitions),
            (
                super::INVALID_REPLICATION_FACTOR,
                ErrorCode::InvalidReplicationFactor,
            ),
            (
                super::INVALID_REPLICA_ASSIGNMENT,
                ErrorCode::InvalidReplicaAssignment,
            ),
            (super::NOT_CONTROLLER, ErrorCode::NotController),
            (super::INVALID_REQUEST, ErrorCode::InvalidRequest),
            (super::FENCED_LEADER_EPOCH, ErrorCode::FencedLeaderEpoch),
            (
                super::PREFERRED_LEADER_NOT_AVAILABLE,
                ErrorCode::PreferredLeaderNotAvailable,
            ),
            (
                super::ELIGIBLE_LEADERS_NOT_AVAILABLE,
                ErrorCode::EligibleLeadersNotAvailable,
            ),
            (super::ELECTION_NOT_NEEDED, ErrorCode::ElectionNotNeeded),
            (
                super::NO_REASSIGNMENT_IN_PROGRESS,
                ErrorCode::NoReassignmentInProgress,
            ),
            (
                super::INVALID_UPDATE_VERSION,
                ErrorCode::InvalidUpdateVersion,
            ),
            (super::INELIGIBLE_REPLICA, ErrorCode::IneligibleReplica),
            (super::NEW_LEADER_ELECTED, ErrorCode::NewLeaderElected),
        ];
        for (ours, theirs) in table {
            assert_eq!(ours, theirs.code(), "{theirs:?}");
        }
        assert_eq!(super::NONE, 0);
    }
}
