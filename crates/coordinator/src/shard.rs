//! One shard of group coordination: every group whose `__consumer_offsets` partition is
//! `partition` (chosen from the group id's Java hash, as Kafka does), with its classic and
//! consumer-protocol (KIP-848) state, its staged commits and the offsets committed inside
//! open transactions.
//!
//! A shard is what a node loads when it becomes the leader of the partition (built from that
//! partition's records only, see [`GroupShard::replay`]) and drops when it stops leading it,
//! so coordination moves between nodes a partition at a time, as in Kafka.

use std::collections::HashMap;

use strata_protocol::ErrorCode;

use crate::consumer::{ConsumerConfig, ConsumerGroups};
use crate::coordinator::{GroupConfig, GroupCoordinator};
use crate::record::GroupRecord;

/// One record of a `__consumer_offsets` partition, as loading replays it.
#[derive(Debug, Clone, PartialEq)]
pub enum Replayed {
    /// A record written outside any transaction.
    Record(GroupRecord),
    /// An offset committed inside a transaction of `producer_id` (TxnOffsetCommit): it
    /// applies only if a commit marker of that producer follows.
    Transactional {
        producer_id: i64,
        record: GroupRecord,
    },
    /// A transaction marker of `producer_id`.
    Marker { producer_id: i64, commit: bool },
}

pub struct GroupShard {
    /// The `__consumer_offsets` partition this shard is built from.
    pub partition: i32,
    /// Classic-protocol groups, and the committed offsets of every group of the shard.
    pub classic: GroupCoordinator,
    /// Consumer-protocol (KIP-848) groups; their offsets live in `classic`.
    pub consumer: ConsumerGroups,
    /// Offsets committed inside open transactions, by producer id: they apply when the
    /// transaction's commit marker is durable, and vanish on abort.
    pending_txn: HashMap<i64, Vec<GroupRecord>>,
}

impl GroupShard {
    /// An empty shard (a partition with no records yet).
    pub fn new(partition: i32, config: GroupConfig, consumer: ConsumerConfig) -> Self {
        GroupShard {
            partition,
            classic: GroupCoordinator::new(config),
            consumer: ConsumerGroups::new(consumer),
            pending_txn: HashMap::new(),
        }
    }

    /// Applies one record of the shard's partition, in log order (loading). Returns whether
    /// it was a record outside a transaction (for the load statistics).
    pub fn replay(&mut self, now: i64, entry: Replayed) -> bool {
        match entry {
            Replayed::Record(record) => {
                self.classic.apply(now, record);
                true
            }
            Replayed::Transactional {
                producer_id,
                record,
            } => {
                self.pending_txn
                    .entry(producer_id)
                    .or_default()
                    .push(record);
                false
            }
            Replayed::Marker {
                producer_id,
                commit,
            } => {
                let records = self.pending_txn.remove(&producer_id).unwrap_or_default();
                if commit {
                    for record in records {
                        self.classic.apply(now, record);
                    }
                }
                false
            }
        }
    }

    /// Offsets appended inside a transaction of `producer_id` (TxnOffsetCommit); call under
    /// the same lock as the append, so that a marker cannot come between them.
    pub fn add_txn_offsets(&mut self, producer_id: i64, records: Vec<GroupRecord>) {
        self.pending_txn
            .entry(producer_id)
            .or_default()
            .extend(records);
    }

    /// A marker of `producer_id` was appended to this shard's partition in a batch ending
    /// before `end_offset`: on commit, its pending offsets apply once the marker is durable
    /// (they are staged); on abort they vanish.
    pub fn complete_txn(&mut self, producer_id: i64, commit: bool, end_offset: i64) {
        let records = self.pending_txn.remove(&producer_id);
        if let (Some(records), true) = (records, commit) {
            self.classic.stage(self.partition, end_offset, records);
        }
    }

    /// Whether an offset of `group` for the partition is not settled: it waits for a
    /// transaction to end, or for its commit to be durable (OffsetFetch with require_stable
    /// answers UNSTABLE_OFFSET_COMMIT then, as Kafka does for pending commits).
    pub fn has_unsettled_offset(&self, group: &str, topic: &str, partition: i32) -> bool {
        self.pending_txn
            .values()
            .flatten()
            .any(|r| r.is_offset_of(group, topic, partition))
            || self.classic.has_staged_offset(group, topic, partition)
    }

    /// Whether `member_id` may commit offsets to `group_id`: consumer-protocol groups check
    /// the member epoch, classic groups the generation (`generation_or_epoch` carries either).
    pub fn check_commit(
        &mut self,
        now: i64,
        group_id: &str,
        generation_or_epoch: i32,
        member_id: &str,
        instance: Option<&str>,
    ) -> Result<(), ErrorCode> {
        match self
            .consumer
            .check_commit(group_id, member_id, generation_or_epoch)
        {
            Some(result) => result,
            None => {
                self.classic
                    .check_commit(now, group_id, generation_or_epoch, member_id, instance)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::CommittedOffset;

    fn offset(group: &str, value: i64) -> GroupRecord {
        GroupRecord::Offset {
            group: group.to_string(),
            topic: "t".to_string(),
            partition: 0,
            value: Some(CommittedOffset {
                offset: value,
                leader_epoch: -1,
                metadata: String::new(),
                commit_ms: 0,
                end_offset: None,
            }),
        }
    }

    fn committed(shard: &GroupShard, group: &str) -> Option<i64> {
        shard
            .classic
            .offsets(group)
            .and_then(|o| o.get(&("t".to_string(), 0)))
            .map(|o| o.offset)
    }

    #[test]
    fn replay_applies_committed_transactions_only() {
        let mut shard = GroupShard::new(3, GroupConfig::default(), ConsumerConfig::default());
        assert!(shard.replay(0, Replayed::Record(offset("g", 1))));
        let txn = |producer_id, value| Replayed::Transactional {
            producer_id,
            record: offset("g", value),
        };
        assert!(!shard.replay(0, txn(7, 5)));
        assert!(!shard.replay(0, txn(8, 9)));
        assert!(shard.has_unsettled_offset("g", "t", 0));
        assert!(!shard.replay(
            0,
            Replayed::Marker {
                producer_id: 8,
                commit: false
            }
        ));
        assert_eq!(
            committed(&shard, "g"),
            Some(1),
            "an aborted offset never applies"
        );
        shard.replay(
            0,
            Replayed::Marker {
                producer_id: 7,
                commit: true,
            },
        );
        assert_eq!(committed(&shard, "g"), Some(5));
        assert!(!shard.has_unsettled_offset("g", "t", 0));
    }

    #[test]
    fn a_committed_transaction_applies_once_its_marker_is_durable() {
        let mut shard = GroupShard::new(3, GroupConfig::default(), ConsumerConfig::default());
        shard.add_txn_offsets(7, vec![offset("g", 5)]);
        shard.complete_txn(7, true, 10);
        assert_eq!(committed(&shard, "g"), None);
        assert!(shard.has_unsettled_offset("g", "t", 0));
        shard.classic.durable(0, 3, 9);
        assert_eq!(
            committed(&shard, "g"),
            None,
            "the marker is not durable yet"
        );
        shard.classic.durable(0, 3, 10);
        assert_eq!(committed(&shard, "g"), Some(5));
        shard.add_txn_offsets(8, vec![offset("g", 6)]);
        shard.complete_txn(8, false, 12);
        shard.classic.durable(0, 3, 12);
        assert_eq!(
            committed(&shard, "g"),
            Some(5),
            "an abort drops its offsets"
        );
        assert!(!shard.has_unsettled_offset("g", "t", 0));
    }
}
