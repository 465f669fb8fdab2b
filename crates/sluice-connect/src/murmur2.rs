//! Kafka's default partitioner hash (`org.apache.kafka.common.utils.Utils.murmur2`),
//! used to spread a sink connector's records over its tasks by key, so a key
//! lands where Kafka's partitioner would have put it and its order is kept.

/// Kafka's 32-bit murmur2 of `data` (seed `0x9747b28c`), as Java's signed int.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // Java's length is an int: the cast matches its arithmetic for any real key.
    let mut h: u32 = SEED ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for c in chunks.by_ref() {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// `Utils.toPositive`: masks the sign bit (not `abs`, which overflows).
pub fn to_positive(n: i32) -> i32 {
    n & 0x7fff_ffff
}

/// The task (of `n`) a record with `key` goes to: Kafka's
/// `toPositive(murmur2(key)) % n`; a null key goes to task 0.
pub fn task_for_key(key: Option<&[u8]>, n: usize) -> usize {
    match key {
        None => 0,
        Some(_) if n <= 1 => 0,
        Some(k) => (to_positive(murmur2(k)) as usize) % n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors of Kafka's `UtilsTest.testMurmur2`.
    #[test]
    fn matches_kafka_utils_test_vectors() {
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (data, want) in cases {
            assert_eq!(murmur2(data), *want, "{}", String::from_utf8_lossy(data));
        }
    }

    #[test]
    fn positive_mask_and_null_key() {
        assert_eq!(to_positive(-1), 0x7fff_ffff);
        assert_eq!(to_positive(i32::MIN), 0);
        assert_eq!(task_for_key(None, 5), 0);
        let foobar = (to_positive(-790_332_482) as usize) % 7;
        assert_eq!(task_for_key(Some(b"foobar"), 7), foobar);
        for n in 1..10 {
            assert!(task_for_key(Some(b"abc"), n) < n);
        }
    }
}
