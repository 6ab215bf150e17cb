//! Partitioning. Keyed records: compatible with the Java client's and librdkafka's
//! `murmur2_random`, partition = (murmur2(key) & 0x7fffffff) % partitions, so the same key lands
//! in the same partition whichever of these clients produced it. Keyless records:
//! [`StickyPartitioner`], KIP-794's uniform sticky partitioning.

/// Murmur2 (32-bit) as Kafka's clients compute it, seed 0x9747b28c.
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition of `key` among `partitions` partitions.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    debug_assert!(partitions > 0);
    ((murmur2(key) & 0x7fff_ffff) % partitions.max(1) as u32) as i32
}

/// Where keyless records without an explicit partition go: KIP-794's built-in partitioner,
/// as the Java client (2.x+ "uniform sticky") does it.
///
/// Records stick to one partition, so that they batch well, until `batch_size` bytes have gone
/// to it; then the next record picks a new partition. The switch waits for a batch boundary
/// (the partition's batch closed: full, or sent after `linger`), so that batches stay whole,
/// but never past twice `batch_size`. A producer held to a low rate sends linger-sized batches
/// that never fill; its records move on after `batch_size` bytes all the same, at the first
/// record after a batch was sent.
#[derive(Debug, Default, Clone)]
pub struct StickyPartitioner {
    current: Option<i32>,
    produced_bytes: usize,
}

impl StickyPartitioner {
    /// The sticky partition among `partitions`, if one is chosen (else call [`Self::choose`]).
    pub fn current(&self, partitions: usize) -> Option<i32> {
        self.current.filter(|p| (*p as usize) < partitions)
    }

    /// Chooses the sticky partition among `queue_sizes.len()` partitions (the batches waiting
    /// in each) with [`next_partition`].
    pub fn choose(&mut self, queue_sizes: &[usize], random: u32) -> i32 {
        let p = next_partition(queue_sizes, random);
        self.current = Some(p);
        self.produced_bytes = 0;
        p
    }

    /// The partition for the next keyless record: the current one, or a new choice.
    pub fn partition(&mut self, queue_sizes: &[usize], random: u32) -> i32 {
        match self.current(queue_sizes.len()) {
            Some(p) => p,
            None => self.choose(queue_sizes, random),
        }
    }

    /// Counts `bytes` appended to the current partition. Once `batch_size` bytes went to it,
    /// the next record goes elsewhere if `batch_closed` (the partition has no open batch: the
    /// record filled it, or a batch was sent since), and in any case once twice `batch_size`
    /// went. Returns whether it moved on. Call it with 0 bytes before a record to complete a
    /// switch that waited for a batch boundary.
    pub fn appended(&mut self, bytes: usize, batch_size: usize, batch_closed: bool) -> bool {
        self.produced_bytes = self.produced_bytes.saturating_add(bytes);
        let limit = batch_size.max(1);
        let switch = (self.produced_bytes >= limit && batch_closed)
            || self.produced_bytes >= limit.saturating_mul(2);
        if switch {
            self.current = None;
            self.produced_bytes = 0;
        }
        switch
    }
}

/// KIP-794's choice of the next sticky partition: random, weighted against partitions with
/// more batches waiting (weight = largest queue + 1 - own queue), uniform when all queues are
/// equal. `queue_sizes` must not be empty.
pub fn next_partition(queue_sizes: &[usize], random: u32) -> i32 {
    assert!(
        !queue_sizes.is_empty(),
        "a topic has at least one partition"
    );
    let random = random & 0x7fff_ffff;
    let max = queue_sizes.iter().copied().max().unwrap_or(0);
    let min = queue_sizes.iter().copied().min().unwrap_or(0);
    if max == min {
        return (random as usize % queue_sizes.len()) as i32;
    }
    let total: u64 = queue_sizes.iter().map(|q| (max + 1 - q) as u64).sum();
    let mut pick = u64::from(random) % total;
    for (p, q) in queue_sizes.iter().enumerate() {
        let weight = (max + 1 - q) as u64;
        if pick < weight {
            return p as i32;
        }
        pick -= weight;
    }
    unreachable!("pick < total, the sum of the weights")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sticky_partition_moves_on_after_batch_size_bytes_even_if_no_batch_fills() {
        let queues = [0usize; 8];
        let mut s = StickyPartitioner::default();
        let first = s.partition(&queues, 3);
        assert_eq!(first, 3);
        // 100-byte records into a batch that stays open (no batch boundary comes): the
        // partition stays for 2 * 1000 bytes, then moves on.
        for i in 0..19 {
            assert!(!s.appended(100, 1000, false), "record {i}");
            assert_eq!(s.partition(&queues, 5), first);
        }
        assert!(s.appended(100, 1000, false));
        assert_eq!(s.partition(&queues, 5), 5);
        // A switch that waited for a batch boundary happens once the batch is sent.
        for _ in 0..10 {
            assert!(!s.appended(100, 1000, false));
        }
        assert!(!s.appended(0, 1000, false));
        assert!(s.appended(0, 1000, true));
        assert_eq!(s.partition(&queues, 12), 4);
        // A record that closes a full batch switches as soon as batch_size bytes went.
        for _ in 0..9 {
            assert!(!s.appended(100, 1000, false));
        }
        assert!(s.appended(100, 1000, true));
        assert_eq!(s.partition(&queues, 14), 6);
        // Closing a batch before batch_size bytes went is not enough.
        assert!(!s.appended(100, 1000, true));
        // A partition that no longer exists (fewer partitions seen) is chosen again.
        assert_eq!(s.partition(&queues[..4], 7), 3);
    }

    #[test]
    fn next_partition_is_uniform_on_equal_queues_and_favours_short_ones() {
        assert_eq!(next_partition(&[2, 2, 2], 7), 1);
        assert_eq!(next_partition(&[0], u32::MAX), 0);
        // Weights 3, 1, 2 (largest queue 2, so 3 - queue): picks 0..3 → 0, 3 → 1, 4..6 → 2.
        let queues = [0, 2, 1];
        let picks: Vec<i32> = (0..6).map(|r| next_partition(&queues, r)).collect();
        assert_eq!(picks, vec![0, 0, 0, 1, 2, 2]);
        // Every partition is reachable and the spread follows the weights.
        let mut counts = [0u32; 3];
        for r in 0..6000 {
            counts[next_partition(&queues, r) as usize] += 1;
        }
        assert_eq!(counts, [3000, 1000, 2000]);
    }

    /// Expected values computed with kafka-python's `murmur2` (which follows the Java client).
    #[test]
    fn murmur2_matches_the_java_client() {
        let vectors: &[(&[u8], u32, i32, i32)] = &[
            (b"", 275_646_681, 2, 81),
            (b"a", 2_731_586_172, 5, 24),
            (b"key", 3_215_029_929, 4, 81),
            (b"key-0", 29_210_041, 0, 41),
            (b"hello world", 1_221_641_059, 2, 59),
            (b"21", 3_321_034_988, 3, 40),
            (b"foobar", 3_504_634_814, 0, 66),
            (
                &[
                    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19,
                ],
                424_957_063,
                6,
                63,
            ),
        ];
        for (key, hash, p7, p100) in vectors {
            assert_eq!(murmur2(key), *hash, "{key:?}");
            assert_eq!(partition_for_key(key, 7), *p7, "{key:?}");
            assert_eq!(partition_for_key(key, 100), *p100, "{key:?}");
        }
    }
}
