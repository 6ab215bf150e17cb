//! Replica placement: which brokers hold the replicas of new partitions.
//!
//! Kafka's striped, rack-aware assignment (its `AdminUtils` scheme, which KRaft's striped placer
//! keeps the shape of), over the *usable* brokers: registered, unfenced and not in controlled
//! shutdown.
//!
//! ```text
//!  racks        a: 1 4     b: 2 5     c: 3          (brokers without a rack: one rack)
//!  alternated   [1, 2, 3, 4, 5]       (one broker per rack in turn, racks and ids sorted)
//!  partition p  leader = list[(start + p) % n]     (the stripe; first replica = preferred leader)
//!  followers    list[(leader_index + 1 + (shift + k) % (n - 1)) % n], k = 0, 1, ...
//!               skipping a broker whose rack already has a replica while some rack has none,
//!               and (always) a broker that already has one; shift += 1 every n partitions
//! ```
//!
//! So leaders go round the list (each broker leads ⌊P/n⌋ or ⌈P/n⌉ of P partitions), a broker's
//! followers are spread over the others, and while racks remain no two replicas of a partition
//! share one. `start` and `shift` are the topic's random start ([`Stripe`]): the caller draws it
//! (seeded in tests and in the simulation); this module draws nothing.
//!
//! Adding partitions (CreatePartitions) continues the stripe: the start is recovered from the
//! existing partitions' preferred leaders, so partition `p` gets the leader it would have had if
//! the topic had been created with that many partitions on the same brokers.
//!
//! Input is [`BrokerInfo`], a broker's placement-relevant facts. It will be read from the
//! image's broker registrations (`RegisterBroker`: `node_id`, `rack`, `fenced`; `BrokerChange`:
//! `fenced`, `in_controlled_shutdown`; docs/design/cluster.md §3.2) once those records exist.
//! Never does I/O or reads a clock.

use std::collections::{BTreeMap, BTreeSet};

use super::codes;
use super::ops::OpError;
use super::splitmix64;

/// What placement needs to know about one registered broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub id: i32,
    /// `broker.rack`; brokers without one form one rack together.
    pub rack: Option<String>,
    pub fenced: bool,
    pub in_controlled_shutdown: bool,
}

impl BrokerInfo {
    /// An unfenced broker without a rack.
    pub fn new(id: i32) -> Self {
        BrokerInfo {
            id,
            rack: None,
            fenced: false,
            in_controlled_shutdown: false,
        }
    }

    /// An unfenced broker in `rack`.
    pub fn in_rack(id: i32, rack: &str) -> Self {
        BrokerInfo {
            rack: Some(rack.to_string()),
            ..BrokerInfo::new(id)
        }
    }

    /// Whether new replicas may be placed on it.
    pub fn usable(&self) -> bool {
        !self.fenced && !self.in_controlled_shutdown
    }
}

/// A topic's random start: where in the alternated broker list its first partition's leader
/// is, and how far its followers are shifted. Both are reduced modulo the list's length when
/// used, so any values will do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stripe {
    pub start_index: u64,
    pub replica_shift: u64,
}

impl Stripe {
    /// Both values drawn from one seed (a random `u64` from the controller, a seeded one in
    /// tests): the same seed, the same placement.
    pub fn from_seed(seed: u64) -> Self {
        let start_index = splitmix64(seed);
        Stripe {
            start_index,
            replica_shift: splitmix64(start_index),
        }
    }

    /// Start and shift both `i`, as Kafka's fixed start index does (its documented examples).
    pub fn fixed(i: u64) -> Self {
        Stripe {
            start_index: i,
            replica_shift: i,
        }
    }
}

/// Replicas for each partition of a new topic, partition 0 first; in each, the first replica
/// is the preferred leader.
///
/// Errors: `partitions < 1` INVALID_PARTITIONS; `replication_factor < 1` or above the number of
/// usable brokers INVALID_REPLICATION_FACTOR, with Kafka's messages. The caller bounds
/// `partitions` (the per-topic maximum it accepts): the answer holds one list per partition.
pub fn place_topic(
    brokers: &[BrokerInfo],
    partitions: i32,
    replication_factor: i16,
    stripe: Stripe,
) -> Result<Vec<Vec<i32>>, OpError> {
    let list = RackAlternated::new(brokers);
    check_counts(&list, partitions, replication_factor)?;
    let start = (stripe.start_index % list.len() as u64) as usize;
    Ok(list.place(
        0..partitions as usize,
        replication_factor as usize,
        start,
        stripe.replica_shift,
    ))
}

/// Replicas for `added` new partitions of a topic whose partitions so far have the replicas
/// `existing` (partition 0 first). The stripe continues from the existing preferred leaders;
/// `stripe` supplies the follower shift, and the start only when no existing partition's
/// preferred leader is usable any more.
///
/// Errors as [`place_topic`], with `added` as the partition count.
pub fn place_added_partitions(
    brokers: &[BrokerInfo],
    existing: &[Vec<i32>],
    added: i32,
    replication_factor: i16,
    stripe: Stripe,
) -> Result<Vec<Vec<i32>>, OpError> {
    let list = RackAlternated::new(brokers);
    check_counts(&list, added, replication_factor)?;
    let n = list.len();
    // The latest partition whose preferred leader is still in the list fixes where partition
    // 0 would have started: leader index = (start + p) % n.
    let start = existing
        .iter()
        .enumerate()
        .rev()
        .find_map(|(p, replicas)| {
            let index = list.index_of(*replicas.first()?)?;
            Some((index + n - p % n) % n)
        })
        .unwrap_or((stripe.start_index % n as u64) as usize);
    let first = existing.len();
    Ok(list.place(
        first..first + added as usize,
        replication_factor as usize,
        start,
        stripe.replica_shift,
    ))
}

fn check_counts(
    list: &RackAlternated,
    partitions: i32,
    replication_factor: i16,
) -> Result<(), OpError> {
    if partitions < 1 {
        return Err(OpError::new(
            codes::INVALID_PARTITIONS,
            "Number of partitions must be larger than 0.",
        ));
    }
    if replication_factor < 1 {
        return Err(OpError::new(
            codes::INVALID_REPLICATION_FACTOR,
            "Replication factor must be larger than 0.",
        ));
    }
    if replication_factor as usize > list.len() {
        return Err(OpError::new(
            codes::INVALID_REPLICATION_FACTOR,
            format!(
                "Unable to replicate the partition {replication_factor} time(s): The target replication factor of {replication_factor} cannot be reached because only {} broker(s) are registered.",
                list.len()
            ),
        ));
    }
    Ok(())
}

/// The usable brokers listed one rack at a time: racks in name order (the rackless first),
/// brokers in id order within each.
struct RackAlternated {
    brokers: Vec<i32>,
    /// Per entry of `brokers`, the index of its rack.
    racks: Vec<usize>,
    rack_count: usize,
}

impl RackAlternated {
    fn new(brokers: &[BrokerInfo]) -> Self {
        let mut by_rack: BTreeMap<Option<&str>, BTreeSet<i32>> = BTreeMap::new();
        for b in brokers.iter().filter(|b| b.usable()) {
            by_rack.entry(b.rack.as_deref()).or_default().insert(b.id);
        }
        // A broker id listed twice (under two racks) counts once, in its first rack.
        let mut seen = BTreeSet::new();
        let mut columns: Vec<Vec<i32>> = by_rack
            .into_values()
            .map(|ids| ids.into_iter().filter(|id| seen.insert(*id)).collect())
            .collect();
        columns.retain(|c: &Vec<i32>| !c.is_empty());
        let rack_count = columns.len();
        let deepest = columns.iter().map(Vec::len).max().unwrap_or(0);
        let mut list = RackAlternated {
            brokers: Vec::with_capacity(seen.len()),
            racks: Vec::with_capacity(seen.len()),
            rack_count,
        };
        for row in 0..deepest {
            for (rack, column) in columns.iter().enumerate() {
                if let Some(id) = column.get(row) {
                    list.brokers.push(*id);
                    list.racks.push(rack);
                }
            }
        }
        list
    }

    fn len(&self) -> usize {
        self.brokers.len()
    }

    fn index_of(&self, broker: i32) -> Option<usize> {
        self.brokers.iter().position(|b| *b == broker)
    }

    /// Replicas of partitions `ids` (their partition numbers), `rf` each. The caller checked
    /// `1 <= rf <= len`.
    fn place(
        &self,
        ids: std::ops::Range<usize>,
        rf: usize,
        start: usize,
        shift: u64,
    ) -> Vec<Vec<i32>> {
        let n = self.len();
        assert!(
            rf >= 1 && rf <= n,
            "replication factor checked by the caller"
        );
        let base_shift = (shift % n as u64) as usize;
        ids.map(|p| {
            // Kafka's shift grows by one after every full round of leaders, so that the
            // second round does not repeat the first round's follower sets.
            let round_shift = base_shift + p / n;
            self.place_one((start + p) % n, rf, round_shift * self.rack_count)
        })
        .collect()
    }

    fn place_one(&self, leader_index: usize, rf: usize, shift: usize) -> Vec<i32> {
        let n = self.len();
        let mut replicas = vec![self.brokers[leader_index]];
        let mut used_racks = BTreeSet::from([self.racks[leader_index]]);
        let mut used = vec![false; n];
        used[leader_index] = true;
        let mut k = 0usize;
        while replicas.len() < rf {
            // Candidates cycle through every index but the leader's, so an acceptable one
            // is met within n - 1 steps per replica: a rack without a replica has all its
            // brokers free, and rf <= n leaves a free broker.
            assert!(k < rf * n, "placement loop bounded by rf * n");
            let index = (leader_index + 1 + (shift + k) % (n - 1)) % n;
            k += 1;
            let rack = self.racks[index];
            let rack_ok = !used_racks.contains(&rack) || used_racks.len() == self.rack_count;
            if rack_ok && !used[index] {
                replicas.push(self.brokers[index]);
                used_racks.insert(rack);
                used[index] = true;
            }
        }
        replicas
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::TestRng;

    fn plain(ids: &[i32]) -> Vec<BrokerInfo> {
        ids.iter().map(|id| BrokerInfo::new(*id)).collect()
    }

    fn racked(pairs: &[(i32, &str)]) -> Vec<BrokerInfo> {
        pairs
            .iter()
            .map(|(id, rack)| BrokerInfo::in_rack(*id, rack))
            .collect()
    }

    /// Kafka's documented example: 0 -> rack1, 1 -> rack3, 2 -> rack3, 3 -> rack2,
    /// 4 -> rack2, 5 -> rack1.
    fn kafka_example_brokers() -> Vec<BrokerInfo> {
        racked(&[
            (0, "rack1"),
            (1, "rack3"),
            (2, "rack3"),
            (3, "rack2"),
            (4, "rack2"),
            (5, "rack1"),
        ])
    }

    #[test]
    fn rack_alternated_list_as_kafka_documents_it() {
        // Kafka's example gives 0, 3, 1, 5, 4, 2.
        let brokers = kafka_example_brokers();
        assert_eq!(RackAlternated::new(&brokers).brokers, [0, 3, 1, 5, 4, 2]);
        // Uneven racks: the short one runs out first.
        let brokers = racked(&[(1, "a"), (2, "a"), (3, "a"), (4, "b")]);
        assert_eq!(RackAlternated::new(&brokers).brokers, [1, 4, 2, 3]);
        // Rackless brokers are one rack, listed before the named ones.
        let mut brokers = racked(&[(5, "a"), (6, "b")]);
        brokers.extend(plain(&[9, 7]));
        assert_eq!(RackAlternated::new(&brokers).brokers, [7, 5, 6, 9]);
    }

    #[test]
    fn rack_aware_assignment_matches_kafkas_example() {
        let brokers = kafka_example_brokers();
        let placed = place_topic(&brokers, 7, 3, Stripe::fixed(0)).expect("placed");
        assert_eq!(
            placed,
            [
                vec![0, 3, 1],
                vec![3, 1, 5],
                vec![1, 5, 4],
                vec![5, 4, 2],
                vec![4, 2, 0],
                vec![2, 0, 3],
                // The second round shifts the followers rather than repeating 0, 3, 1.
                vec![0, 4, 2],
            ]
        );
    }

    #[test]
    fn rack_unaware_assignment_matches_kafkas_table() {
        // Kafka's table for 5 brokers, 10 partitions, 3 replicas, start 0.
        let placed = place_topic(&plain(&[0, 1, 2, 3, 4]), 10, 3, Stripe::fixed(0)).expect("ok");
        let expected: [[i32; 3]; 10] = [
            [0, 1, 2],
            [1, 2, 3],
            [2, 3, 4],
            [3, 4, 0],
            [4, 0, 1],
            [0, 2, 3],
            [1, 3, 4],
            [2, 4, 0],
            [3, 0, 1],
            [4, 1, 2],
        ];
        for (p, want) in expected.iter().enumerate() {
            assert_eq!(placed[p], want, "partition {p}");
        }
    }

    #[test]
    fn only_usable_brokers_get_replicas() {
        let mut brokers = plain(&[1, 2, 3, 4]);
        brokers[1].fenced = true;
        brokers[3].in_controlled_shutdown = true;
        let placed = place_topic(&brokers, 6, 2, Stripe::from_seed(7)).expect("placed");
        for replicas in &placed {
            assert!(replicas.iter().all(|b| *b == 1 || *b == 3), "{replicas:?}");
        }
        let err = place_topic(&brokers, 1, 3, Stripe::from_seed(7)).expect_err("too few");
        assert_eq!(err.code, codes::INVALID_REPLICATION_FACTOR);
        assert_eq!(
            err.message,
            "Unable to replicate the partition 3 time(s): The target replication factor of 3 cannot be reached because only 2 broker(s) are registered."
        );
    }

    #[test]
    fn counts_are_checked_with_kafkas_codes() {
        let brokers = plain(&[1]);
        let cases: [(i32, i16, i16); 5] = [
            (0, 1, codes::INVALID_PARTITIONS),
            (-1, 1, codes::INVALID_PARTITIONS),
            (1, 0, codes::INVALID_REPLICATION_FACTOR),
            (1, -1, codes::INVALID_REPLICATION_FACTOR),
            (1, 2, codes::INVALID_REPLICATION_FACTOR),
        ];
        for (partitions, rf, code) in cases {
            let err = place_topic(&brokers, partitions, rf, Stripe::fixed(0)).expect_err("refused");
            assert_eq!(err.code, code, "{partitions} partitions, rf {rf}");
        }
        let err = place_topic(&[], 1, 1, Stripe::fixed(0)).expect_err("no brokers");
        assert!(err.message.ends_with("only 0 broker(s) are registered."));
    }

    #[test]
    fn one_broker_leads_everything() {
        // The single node: every partition on node 1, whatever the seed.
        for seed in 0..20 {
            let placed = place_topic(&plain(&[1]), 5, 1, Stripe::from_seed(seed)).expect("ok");
            assert_eq!(placed, vec![vec![1]; 5]);
            let added =
                place_added_partitions(&plain(&[1]), &placed, 3, 1, Stripe::from_seed(seed))
                    .expect("ok");
            assert_eq!(added, vec![vec![1]; 3]);
        }
    }

    #[test]
    fn added_partitions_continue_the_stripe() {
        let brokers = plain(&[1, 2, 3, 4]);
        let stripe = Stripe::from_seed(42);
        let all = place_topic(&brokers, 11, 3, stripe).expect("ok");
        let first = place_topic(&brokers, 5, 3, stripe).expect("ok");
        let added = place_added_partitions(&brokers, &first, 6, 3, stripe).expect("ok");
        assert_eq!([first, added].concat(), all);
        // With a different seed for the addition, leaders still continue the stripe.
        let added =
            place_added_partitions(&brokers, &all[..5], 6, 3, Stripe::from_seed(1)).expect("ok");
        let leaders: Vec<i32> = added.iter().map(|r| r[0]).collect();
        let expected: Vec<i32> = all[5..].iter().map(|r| r[0]).collect();
        assert_eq!(leaders, expected);
    }

    #[test]
    fn added_partitions_skip_leaders_that_left() {
        // Broker 3, partition 2's leader, is gone: partition 1's leader fixes the stripe.
        let existing = vec![vec![1], vec![2], vec![3]];
        let added = place_added_partitions(&plain(&[1, 2, 4]), &existing, 3, 1, Stripe::fixed(0))
            .expect("ok");
        // The list is [1, 2, 4]; partition 1 led by index 1 means start 0: 3 -> 1, 4 -> 2,
        // 5 -> 4.
        assert_eq!(added, [vec![1], vec![2], vec![4]]);
        // No existing leader usable: the stripe's own start.
        let added =
            place_added_partitions(&plain(&[5, 6]), &existing, 2, 1, Stripe::fixed(1)).expect("ok");
        assert_eq!(added, [vec![5], vec![6]]);
        let err = place_added_partitions(&plain(&[5]), &existing, 1, 2, Stripe::fixed(0))
            .expect_err("rf 2 on one broker");
        assert_eq!(err.code, codes::INVALID_REPLICATION_FACTOR);
    }

    /// A random cluster: 1..=9 brokers, up to 4 racks (or none), some not usable.
    fn random_brokers(rng: &mut TestRng) -> Vec<BrokerInfo> {
        let count = 1 + rng.below(9);
        let racks = rng.below(5);
        (0..count)
            .map(|i| {
                let mut b = BrokerInfo::new(100 + i as i32 * 3);
                if racks > 0 && !rng.chance(10) {
                    b.rack = Some(format!("r{}", rng.below(racks)));
                }
                b.fenced = rng.chance(10);
                b.in_controlled_shutdown = rng.chance(5);
                b
            })
            .collect()
    }

    fn rack_of(brokers: &[BrokerInfo], id: i32) -> Option<&str> {
        brokers
            .iter()
            .find(|b| b.id == id)
            .expect("placed on a known broker")
            .rack
            .as_deref()
    }

    #[test]
    fn property_placement_spreads_replicas_racks_and_leaders() {
        for seed in 0..2000u64 {
            let mut rng = TestRng::new(seed);
            let brokers = random_brokers(&mut rng);
            let usable: Vec<&BrokerInfo> = brokers.iter().filter(|b| b.usable()).collect();
            let partitions = 1 + rng.below(60) as i32;
            let rf = 1 + rng.below(5) as i16;
            let stripe = Stripe::from_seed(rng.next_u64());
            let result = place_topic(&brokers, partitions, rf, stripe);
            if rf as usize > usable.len() {
                let err = result.expect_err("too few brokers");
                assert_eq!(err.code, codes::INVALID_REPLICATION_FACTOR, "seed {seed}");
                continue;
            }
            let placed = result.unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            assert_eq!(placed.len(), partitions as usize, "seed {seed}");
            assert_eq!(
                place_topic(&brokers, partitions, rf, stripe).expect("ok"),
                placed,
                "seed {seed}: same input, same placement"
            );
            let racks: BTreeSet<Option<&str>> = usable.iter().map(|b| b.rack.as_deref()).collect();
            let mut leads: BTreeMap<i32, usize> = usable.iter().map(|b| (b.id, 0)).collect();
            for replicas in &placed {
                assert_eq!(replicas.len(), rf as usize, "seed {seed}");
                let distinct: BTreeSet<i32> = replicas.iter().copied().collect();
                assert_eq!(distinct.len(), replicas.len(), "seed {seed}: {replicas:?}");
                assert!(
                    replicas.iter().all(|r| usable.iter().any(|b| b.id == *r)),
                    "seed {seed}: {replicas:?} on an unusable broker"
                );
                let spread: BTreeSet<Option<&str>> =
                    replicas.iter().map(|r| rack_of(&brokers, *r)).collect();
                assert_eq!(
                    spread.len(),
                    replicas.len().min(racks.len()),
                    "seed {seed}: {replicas:?} share a rack while racks remain"
                );
                *leads.get_mut(&replicas[0]).expect("usable") += 1;
            }
            let most = leads.values().max().expect("some broker");
            let least = leads.values().min().expect("some broker");
            assert!(most - least <= 1, "seed {seed}: leaders {leads:?}");
            // Adding partitions keeps every property, and the leaders of the whole topic stay
            // balanced.
            let added_count = 1 + rng.below(20) as i32;
            let added = place_added_partitions(
                &brokers,
                &placed,
                added_count,
                rf,
                Stripe::from_seed(rng.next_u64()),
            )
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            for replicas in &added {
                let distinct: BTreeSet<i32> = replicas.iter().copied().collect();
                assert_eq!(distinct.len(), rf as usize, "seed {seed}");
                *leads.get_mut(&replicas[0]).expect("usable") += 1;
            }
            let most = leads.values().max().expect("some broker");
            let least = leads.values().min().expect("some broker");
            assert!(
                most - least <= 1,
                "seed {seed}: leaders after adding {leads:?}"
            );
        }
    }
}
