//! A throwaway tansu broker (a Kafka-protocol broker with in-memory
//! storage), started per test and killed on drop.

#![allow(dead_code)]

use std::time::Duration;

use sluice_kafka::{ClientRole, KafkaConfig};

pub use sluice_testkit::tansu::Tansu;

pub fn free_port() -> u16 {
    sluice_testkit::free_port().unwrap()
}

/// Client settings for a test broker, with group timings short enough for
/// tests.
pub fn config(broker: &Tansu) -> KafkaConfig {
    let mut cfg = KafkaConfig::new(broker.bootstrap());
    cfg.connect_timeout = Duration::from_secs(20);
    for (k, v) in [
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "500"),
        ("max.poll.interval.ms", "10000"),
        ("topic.metadata.refresh.interval.ms", "1000"),
    ] {
        cfg.set_override(ClientRole::Consumer, k, v).unwrap();
    }
    cfg
}

/// Kafka's murmur2 (the Java client's default partitioner hash).
pub fn murmur2(data: &[u8]) -> i32 {
    let seed: u32 = 0x9747_b28c;
    let m: u32 = 0x5bd1_e995;
    let r = 24;
    let len = data.len();
    let mut h: u32 = seed ^ (len as u32);
    let chunks = data.chunks_exact(4);
    let rest = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(m);
        k ^= k >> r;
        k = k.wrapping_mul(m);
        h = h.wrapping_mul(m);
        h ^= k;
    }
    match rest.len() {
        3 => {
            h ^= (rest[2] as u32) << 16;
            h ^= (rest[1] as u32) << 8;
            h ^= rest[0] as u32;
            h = h.wrapping_mul(m);
        }
        2 => {
            h ^= (rest[1] as u32) << 8;
            h ^= rest[0] as u32;
            h = h.wrapping_mul(m);
        }
        1 => {
            h ^= rest[0] as u32;
            h = h.wrapping_mul(m);
        }
        _ => {}
    }
    h ^= h >> 13;
    h = h.wrapping_mul(m);
    h ^= h >> 15;
    h as i32
}

/// The partition the Java client's default partitioner picks for `key`.
pub fn java_partition(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions
}
