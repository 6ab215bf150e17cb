//! Key partitioning compatible with the Java client's and librdkafka's `murmur2_random`:
//! partition = (murmur2(key) & 0x7fffffff) % partitions, so the same key lands in the same
//! partition whichever of these clients produced it.

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

#[cfg(test)]
mod tests {
    use super::*;

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
